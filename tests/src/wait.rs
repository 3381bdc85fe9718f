//! Waiting in async tests for what the system under test does eventually.

use std::future::Future;
use std::time::Duration;

/// Polls `f` every 50 ms until it returns `Some`, for at most `secs` seconds; panics
/// naming `what` when time runs out.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mut n = 0;
/// let v = kcore_tests::wait::eventually(5, "the third try", || {
///     n += 1;
///     let v = (n == 3).then_some(n);
///     async move { v }
/// })
/// .await;
/// assert_eq!(v, 3);
/// # });
/// ```
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
