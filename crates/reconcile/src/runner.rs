//! Running a reconciler: workers that take keys from a [`WorkQueue`], reconcile them, and
//! requeue with backoff on failure; plus [`Expectations`] that stop a controller from acting
//! twice on a cache that has not yet seen its own writes.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument as _;

use crate::error::Error;
use crate::meta::ObjectKey;
use crate::queue::WorkQueue;

/// What to do with a key after a successful reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the next change.
    Done,
    /// Reconcile again after this long (e.g. when minReadySeconds will have passed).
    RequeueAfter(Duration),
}

/// A level-triggered reconciler: given a key, make the world match the object's spec.
pub trait Reconciler: Send + Sync + 'static {
    /// A short name for logs (`replicaset`, `deployment`, ...).
    fn name(&self) -> &'static str;

    /// Reconciles the object with this key (which may no longer exist).
    fn reconcile(&self, key: &ObjectKey) -> impl Future<Output = Result<Action, Error>> + Send;
}

/// Runs `workers` concurrent workers over `queue` until it is shut down. A failed key is
/// re-queued with per-key exponential backoff; a successful one has its failures forgotten.
pub async fn run_workers<R: Reconciler>(
    reconciler: Arc<R>,
    queue: WorkQueue<ObjectKey>,
    workers: usize,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..workers.max(1) {
        let r = Arc::clone(&reconciler);
        let q = queue.clone();
        tasks.spawn(async move {
            while let Some(key) = q.get().await {
                let span = tracing::debug_span!("reconcile", controller = r.name(), worker = id, key = %key);
                let res = r.reconcile(&key).instrument(span).await;
                match res {
                    Ok(Action::Done) => q.forget(&key),
                    Ok(Action::RequeueAfter(d)) => {
                        q.forget(&key);
                        q.add_after(key.clone(), d);
                    }
                    Err(err) => {
                        let n = q.num_requeues(&key);
                        if err.is_conflict() || err.is_not_found() {
                            tracing::debug!(controller = r.name(), key = %key, error = %err, requeues = n, "reconcile raced; retrying");
                        } else {
                            tracing::warn!(controller = r.name(), key = %key, error = %display_chain(&err), requeues = n, "reconcile failed; retrying");
                        }
                        q.add_rate_limited(key.clone());
                    }
                }
                q.done(&key);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// An error with its sources, joined by `: `.
pub(crate) fn display_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

#[derive(Debug, Clone)]
struct Expectation {
    adds: i64,
    dels: i64,
    /// UIDs of the objects whose deletion is expected, when tracked by UID.
    deleting: HashSet<String>,
    at: Instant,
}

/// Creations and deletions a controller has asked for and not yet seen in its cache,
/// per controller key (client-go's `ControllerExpectations`). While some are outstanding
/// the controller must not count pods from the cache and act again. Deletions can be
/// tracked by UID (client-go's `UIDTrackingControllerExpectations`): then only the
/// deletion of an object the controller deleted counts, and [`Expectations::pending_deletion`]
/// tells which cached objects are already on their way out, so a status computed from
/// the cache does not count them. Expectations expire after a timeout (5 minutes by
/// default) so a lost watch event cannot wedge a controller.
#[derive(Debug, Clone)]
pub struct Expectations {
    inner: Arc<Mutex<HashMap<ObjectKey, Expectation>>>,
    ttl: Duration,
}

impl Default for Expectations {
    fn default() -> Self {
        Self::new(Duration::from_secs(300))
    }
}

impl Expectations {
    /// Expectations that expire after `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(HashMap::new())),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Expectation>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that `adds` creations and `dels` deletions are about to be issued for `key`.
    pub fn expect(&self, key: &ObjectKey, adds: usize, dels: usize) {
        self.lock().insert(
            key.clone(),
            Expectation {
                adds: i64::try_from(adds).unwrap_or(i64::MAX),
                dels: i64::try_from(dels).unwrap_or(i64::MAX),
                deleting: HashSet::new(),
                at: Instant::now(),
            },
        );
    }

    /// Records that the objects with these UIDs are about to be deleted for `key`; each
    /// counts as observed once [`Expectations::deletion_observed_uid`] names it.
    pub fn expect_deletions(&self, key: &ObjectKey, uids: impl IntoIterator<Item = String>) {
        let deleting: HashSet<String> = uids.into_iter().collect();
        self.lock().insert(
            key.clone(),
            Expectation {
                adds: 0,
                dels: i64::try_from(deleting.len()).unwrap_or(i64::MAX),
                deleting,
                at: Instant::now(),
            },
        );
    }

    /// One expected creation was observed (or will never happen because it failed).
    pub fn creation_observed(&self, key: &ObjectKey) {
        if let Some(e) = self.lock().get_mut(key) {
            e.adds -= 1;
        }
    }

    /// One expected deletion was observed (or will never happen because it failed).
    pub fn deletion_observed(&self, key: &ObjectKey) {
        if let Some(e) = self.lock().get_mut(key) {
            e.dels -= 1;
        }
    }

    /// The deletion of the object with `uid` was observed (or failed). With UID tracking
    /// it counts only if that object was expected to go, and only once.
    pub fn deletion_observed_uid(&self, key: &ObjectKey, uid: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            // Untracked (counting) expectations count every deletion.
            if e.deleting.is_empty() || e.deleting.remove(uid) {
                e.dels -= 1;
            }
        }
    }

    /// True when the controller of `key` deleted the object with `uid` and its cache has
    /// not seen that yet (and the expectation has not expired).
    pub fn pending_deletion(&self, key: &ObjectKey, uid: &str) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|e| e.at.elapsed() <= self.ttl && e.deleting.contains(uid))
    }

    /// Creations asked for `key` and not yet observed (0 once the expectation expired):
    /// pods a controller has just created count as active before its cache has them.
    pub fn pending_adds(&self, key: &ObjectKey) -> usize {
        self.lock()
            .get(key)
            .filter(|e| e.at.elapsed() <= self.ttl)
            .map_or(0, |e| usize::try_from(e.adds.max(0)).unwrap_or(0))
    }

    /// True when nothing is outstanding for `key` (or the expectation expired).
    pub fn satisfied(&self, key: &ObjectKey) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => (e.adds <= 0 && e.dels <= 0) || e.at.elapsed() > self.ttl,
        }
    }

    /// Forgets `key` (its object was deleted).
    pub fn delete(&self, key: &ObjectKey) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Flaky {
        calls: AtomicU32,
        fail_first: u32,
        done: tokio::sync::mpsc::UnboundedSender<u32>,
    }

    impl Reconciler for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }

        async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= self.fail_first {
                return Err(Error::Invalid {
                    object: key.to_string(),
                    field: "spec",
                    reason: "not yet".into(),
                });
            }
            let _ = self.done.send(n);
            Ok(Action::Done)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_with_backoff_then_forgotten() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let r = Arc::new(Flaky {
            calls: AtomicU32::new(0),
            fail_first: 3,
            done: tx,
        });
        let q = WorkQueue::new(crate::RateLimitConfig {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            qps: 0.0,
            burst: 0,
        });
        let key = ObjectKey::namespaced("ns", "a");
        q.add(key.clone());
        let start = Instant::now();
        let runner = tokio::spawn(run_workers(Arc::clone(&r), q.clone(), 2));
        let n = rx.recv().await.unwrap();
        assert_eq!(n, 4, "three failures then success");
        // Backoffs of 1 s, 2 s and 4 s were waited.
        assert!(Instant::now() - start >= Duration::from_secs(7));
        while !q.is_idle() {
            tokio::task::yield_now().await;
        }
        assert_eq!(q.num_requeues(&key), 0, "success forgets the failures");
        q.shutdown();
        runner.await.unwrap();
    }

    #[test]
    fn expectations_gate_until_observed() {
        let e = Expectations::default();
        let k = ObjectKey::namespaced("ns", "rs");
        assert!(e.satisfied(&k));
        e.expect(&k, 2, 0);
        assert!(!e.satisfied(&k));
        assert_eq!(e.pending_adds(&k), 2);
        e.creation_observed(&k);
        assert!(!e.satisfied(&k));
        assert_eq!(e.pending_adds(&k), 1);
        e.creation_observed(&k);
        assert!(e.satisfied(&k));
        assert_eq!(e.pending_adds(&k), 0);
        // A creation seen twice (a relist) does not make the count negative.
        e.creation_observed(&k);
        assert_eq!(e.pending_adds(&k), 0);
        e.expect(&k, 0, 1);
        assert!(!e.satisfied(&k));
        e.delete(&k);
        assert!(e.satisfied(&k));
    }

    #[test]
    fn deletions_tracked_by_uid() {
        let e = Expectations::default();
        let k = ObjectKey::namespaced("ns", "rs");
        e.expect_deletions(&k, ["a".to_string(), "b".to_string()]);
        assert!(!e.satisfied(&k));
        assert!(e.pending_deletion(&k, "a") && e.pending_deletion(&k, "b"));
        assert!(!e.pending_deletion(&k, "c"));
        // Someone else's pod going away does not count; nor does one seen twice.
        e.deletion_observed_uid(&k, "c");
        e.deletion_observed_uid(&k, "a");
        e.deletion_observed_uid(&k, "a");
        assert!(!e.satisfied(&k));
        assert!(!e.pending_deletion(&k, "a"));
        e.deletion_observed_uid(&k, "b");
        assert!(e.satisfied(&k));
        assert!(!e.pending_deletion(&k, "b"));
    }

    #[tokio::test(start_paused = true)]
    async fn expectations_expire() {
        let e = Expectations::new(Duration::from_secs(10));
        let k = ObjectKey::cluster("x");
        e.expect(&k, 1, 0);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(e.satisfied(&k));
    }
}
