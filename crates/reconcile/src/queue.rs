//! A de-duplicating work queue with per-key exponential backoff and an overall rate limit,
//! after client-go's `workqueue.RateLimitingInterface`.
//!
//! Guarantees:
//! - a key waiting in the queue is held once, however often it is added;
//! - a key handed to a worker is never handed to another worker until [`WorkQueue::done`]
//!   is called for it; adds while it is processed are remembered and it is queued again
//!   after `done`;
//! - [`WorkQueue::add_rate_limited`] delays a key by `base × 2ⁿ` (n = its failures so far,
//!   capped at `max`) and by an overall token bucket, whichever is longer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Settings of the [`RateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Delay after the first failure of a key.
    pub base_delay: Duration,
    /// Largest per-key delay.
    pub max_delay: Duration,
    /// Sustained rate of the overall token bucket, in keys per second.
    pub qps: f64,
    /// Size of the overall token bucket.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    /// client-go's defaults: 5 ms × 2ⁿ capped at 1000 s, and 10 qps with a burst of 100.
    fn default() -> Self {
        Self {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(1000),
            qps: 10.0,
            burst: 100,
        }
    }
}

/// Per-key exponential backoff combined with an overall token bucket.
#[derive(Debug)]
pub struct RateLimiter<K> {
    config: RateLimitConfig,
    failures: HashMap<K, u32>,
    tokens: f64,
    last: Option<Instant>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter with a full bucket.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            failures: HashMap::new(),
            tokens: f64::from(config.burst),
            last: None,
        }
    }

    /// Records one more failure of `key` at `now` and returns how long it must wait.
    pub fn when(&mut self, key: &K, now: Instant) -> Duration {
        let n = self.failures.entry(key.clone()).or_insert(0);
        let exp = *n;
        *n = n.saturating_add(1);
        let backoff = backoff(self.config.base_delay, self.config.max_delay, exp);
        backoff.max(self.reserve(now))
    }

    /// Takes one token from the overall bucket; the wait until that token exists.
    fn reserve(&mut self, now: Instant) -> Duration {
        let qps = self.config.qps;
        if qps <= 0.0 {
            return Duration::ZERO;
        }
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * qps).min(f64::from(self.config.burst));
        }
        if self.last.is_none_or(|l| now > l) {
            self.last = Some(now);
        }
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / qps)
        }
    }

    /// Forgets the failures of `key` (after it succeeded).
    pub fn forget(&mut self, key: &K) {
        self.failures.remove(key);
    }

    /// How many times `key` failed since it was last forgotten.
    pub fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }
}

/// `base × 2^exp`, capped at `max`.
pub(crate) fn backoff(base: Duration, max: Duration, exp: u32) -> Duration {
    if exp >= 64 {
        return max;
    }
    let factor = 1u64 << exp;
    let nanos = base.as_nanos().saturating_mul(u128::from(factor));
    if nanos >= max.as_nanos() {
        max
    } else {
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

struct State<K> {
    queue: VecDeque<K>,
    dirty: HashSet<K>,
    processing: HashSet<K>,
    waiting: HashMap<K, Instant>,
    limiter: RateLimiter<K>,
    shutdown: bool,
}

struct Shared<K> {
    state: Mutex<State<K>>,
    notify: Notify,
}

/// The work queue; cheap to clone (all clones share one queue).
pub struct WorkQueue<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> std::fmt::Debug for WorkQueue<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> Default for WorkQueue<K> {
    fn default() -> Self {
        Self::new(RateLimitConfig::default())
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> WorkQueue<K> {
    /// An empty queue whose [`add_rate_limited`](Self::add_rate_limited) uses `config`.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    dirty: HashSet::new(),
                    processing: HashSet::new(),
                    waiting: HashMap::new(),
                    limiter: RateLimiter::new(config),
                    shutdown: false,
                }),
                notify: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // A poisoned lock only means a panic elsewhere while holding it; the sets stay valid.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `key` unless it is already waiting; a key being processed is queued again
    /// when its worker calls [`done`](Self::done).
    pub fn add(&self, key: K) {
        let mut s = self.lock();
        if s.shutdown || !s.dirty.insert(key.clone()) {
            return;
        }
        if s.processing.contains(&key) {
            return;
        }
        s.queue.push_back(key);
        drop(s);
        self.shared.notify.notify_one();
    }

    /// Queues `key` after `delay`; of several pending delays for one key the earliest wins.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let at = Instant::now() + delay;
        {
            let mut s = self.lock();
            if s.shutdown {
                return;
            }
            match s.waiting.get(&key) {
                Some(existing) if *existing <= at => return,
                _ => {
                    s.waiting.insert(key.clone(), at);
                }
            }
        }
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(shared) = weak.upgrade() {
                let q = WorkQueue { shared };
                let due = {
                    let mut s = q.lock();
                    if s.waiting.get(&key) == Some(&at) {
                        s.waiting.remove(&key);
                        true
                    } else {
                        false
                    }
                };
                if due {
                    q.add(key);
                }
            }
        });
    }

    /// Queues `key` after its backoff: `base × 2ⁿ` for its n-th failure, at least the wait
    /// for a token of the overall bucket.
    pub fn add_rate_limited(&self, key: K) {
        let delay = self.lock().limiter.when(&key, Instant::now());
        self.add_after(key, delay);
    }

    /// Resets the failure count of `key`.
    pub fn forget(&self, key: &K) {
        self.lock().limiter.forget(key);
    }

    /// How many times `key` was re-queued by [`add_rate_limited`](Self::add_rate_limited)
    /// since it was last forgotten.
    pub fn num_requeues(&self, key: &K) -> u32 {
        self.lock().limiter.failures(key)
    }

    /// Waits for a key and marks it as being processed; `None` once the queue is shut down
    /// and drained of nothing more to hand out.
    pub async fn get(&self) -> Option<K> {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if s.shutdown {
                    return None;
                }
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    let more = !s.queue.is_empty();
                    drop(s);
                    if more {
                        self.shared.notify.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` as processed; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &K) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) && !s.shutdown {
            s.queue.push_back(key.clone());
            drop(s);
            self.shared.notify.notify_one();
        }
    }

    /// Keys waiting to be handed out (not counting delayed or in-process ones).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when no key waits to be handed out.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when nothing is queued, delayed or being processed.
    pub fn is_idle(&self) -> bool {
        let s = self.lock();
        s.queue.is_empty() && s.processing.is_empty() && s.waiting.is_empty()
    }

    /// Stops handing out keys: every pending and future [`get`](Self::get) returns `None`.
    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.shared.notify.notify_waiters();
    }

    /// True after [`shutdown`](Self::shutdown).
    pub fn is_shutdown(&self) -> bool {
        self.lock().shutdown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_millis(5);
        let max = Duration::from_secs(1000);
        assert_eq!(backoff(base, max, 0), Duration::from_millis(5));
        assert_eq!(backoff(base, max, 1), Duration::from_millis(10));
        assert_eq!(backoff(base, max, 10), Duration::from_millis(5 * 1024));
        assert_eq!(backoff(base, max, 30), max);
        assert_eq!(backoff(base, max, 200), max);
    }

    #[test]
    fn limiter_is_per_key_and_forgets() {
        let mut l = RateLimiter::new(RateLimitConfig {
            qps: 0.0,
            ..RateLimitConfig::default()
        });
        let now = Instant::now();
        assert_eq!(l.when(&"a", now), Duration::from_millis(5));
        assert_eq!(l.when(&"a", now), Duration::from_millis(10));
        assert_eq!(l.when(&"a", now), Duration::from_millis(20));
        assert_eq!(l.when(&"b", now), Duration::from_millis(5));
        assert_eq!(l.failures(&"a"), 3);
        l.forget(&"a");
        assert_eq!(l.failures(&"a"), 0);
        assert_eq!(l.when(&"a", now), Duration::from_millis(5));
    }

    #[test]
    fn token_bucket_limits_overall_rate() {
        let mut l = RateLimiter::new(RateLimitConfig {
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            qps: 10.0,
            burst: 3,
        });
        let now = Instant::now();
        for i in 0..3 {
            assert_eq!(l.when(&i, now), Duration::ZERO, "burst token {i}");
        }
        // The bucket is empty: the 4th waits 1/qps, the 5th 2/qps.
        assert_eq!(l.when(&3, now), Duration::from_millis(100));
        assert_eq!(l.when(&4, now), Duration::from_millis(200));
        // One second later ten tokens were refilled, minus the two borrowed.
        let later = now + Duration::from_secs(1);
        assert_eq!(l.when(&5, later), Duration::ZERO);
    }

    #[tokio::test]
    async fn deduplicates_waiting_keys() {
        let q = WorkQueue::default();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.get().await, Some("a"));
        assert_eq!(q.get().await, Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn key_in_process_is_not_handed_out_twice() {
        let q = WorkQueue::default();
        q.add("a");
        let k = q.get().await.unwrap();
        // Re-added while a worker holds it: not available to a second worker...
        q.add("a");
        q.add("a");
        assert!(q.is_empty());
        let second = tokio::time::timeout(Duration::from_millis(50), q.get()).await;
        assert!(second.is_err(), "key handed to a second worker");
        // ...but queued once more after done.
        q.done(&k);
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().await, Some("a"));
        q.done(&"a");
        assert!(q.is_idle());
    }

    #[tokio::test]
    async fn concurrent_workers_never_share_a_key() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let q: WorkQueue<u32> = WorkQueue::default();
        let active: Arc<Vec<AtomicUsize>> = Arc::new((0..4).map(|_| AtomicUsize::new(0)).collect());
        let processed = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..4 {
            let q = q.clone();
            let active = Arc::clone(&active);
            let processed = Arc::clone(&processed);
            workers.push(tokio::spawn(async move {
                while let Some(k) = q.get().await {
                    let was = active[k as usize].fetch_add(1, Ordering::SeqCst);
                    assert_eq!(was, 0, "key {k} processed concurrently");
                    tokio::task::yield_now().await;
                    active[k as usize].fetch_sub(1, Ordering::SeqCst);
                    processed.fetch_add(1, Ordering::SeqCst);
                    q.done(&k);
                }
            }));
        }
        for round in 0..200u32 {
            q.add(round % 4);
            if round % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        while !q.is_idle() {
            tokio::task::yield_now().await;
        }
        q.shutdown();
        for w in workers {
            w.await.unwrap();
        }
        let n = processed.load(Ordering::SeqCst);
        assert!((4..=200).contains(&n), "processed {n}");
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_delivers_later_and_earliest_wins() {
        let q = WorkQueue::default();
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(2));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().await, Some("a"));
        q.done(&"a");
        // The superseded 10 s timer does not add it again.
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_adds_back_off() {
        let q = WorkQueue::new(RateLimitConfig {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(4),
            qps: 0.0,
            burst: 0,
        });
        let start = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..4 {
            q.add_rate_limited("k");
            let t = Instant::now();
            let k = q.get().await.unwrap();
            waits.push(Instant::now() - t);
            q.done(&k);
        }
        assert_eq!(q.num_requeues(&"k"), 4);
        let secs: Vec<u64> = waits.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 4]);
        assert!(Instant::now() - start >= Duration::from_secs(11));
        q.forget(&"k");
        assert_eq!(q.num_requeues(&"k"), 0);
    }

    #[tokio::test]
    async fn shutdown_releases_waiting_workers() {
        let q: WorkQueue<u8> = WorkQueue::default();
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.get().await });
        tokio::task::yield_now().await;
        q.shutdown();
        assert_eq!(waiter.await.unwrap(), None);
        q.add(1);
        assert!(q.is_empty());
    }
}
