//! The scheduling queue: active (by priority), backoff (exponential per pod)
//! and unschedulable (moved back by the cluster events that could help).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::framework::ClusterEvent;
use crate::profile::Framework;

/// A source of time, so tests can drive backoff without sleeping.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<Instant>);

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock(Mutex::new(Instant::now()))
    }
}

impl ManualClock {
    /// Moves time forward.
    pub fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a queued pod currently is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueState {
    /// Waiting in the active queue.
    Active,
    /// Backing off after a failed attempt.
    Backoff,
    /// Parked until a cluster event may help.
    Unschedulable,
    /// Has scheduling gates.
    Gated,
    /// Popped and being scheduled.
    InFlight,
}

struct Entry<T> {
    item: T,
    priority: i32,
    /// When the pod (re)entered the queue; orders equal priorities and
    /// anchors the backoff.
    timestamp: Instant,
    attempts: u32,
    plugins: Vec<&'static str>,
    state: QueueState,
    seq: u64,
    popped_cycle: u64,
}

#[derive(PartialEq, Eq)]
struct ActiveKey {
    priority: i32,
    timestamp: Instant,
    seq: u64,
    key: Arc<str>,
}

impl Ord for ActiveKey {
    fn cmp(&self, o: &Self) -> Ordering {
        // PrioritySort: higher priority first, then earlier timestamp.
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.timestamp.cmp(&self.timestamp))
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveKey {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// A popped pod.
#[derive(Debug)]
pub struct Popped<T> {
    /// The key it was added with (`namespace/name`).
    pub key: String,
    /// The item.
    pub item: T,
    /// Scheduling attempts so far, including this one.
    pub attempts: u32,
}

/// Upstream's PriorityQueue. `T` is whatever the caller schedules (a Pod,
/// a compiled pod…); pods are keyed by `namespace/name`.
pub struct SchedulingQueue<T> {
    clock: Arc<dyn Clock>,
    entries: HashMap<Arc<str>, Entry<T>>,
    active: BinaryHeap<ActiveKey>,
    backoff: BinaryHeap<Reverse<(Instant, u64, Arc<str>)>>,
    plugin_events: HashMap<&'static str, &'static [ClusterEvent]>,
    seq: u64,
    scheduling_cycle: u64,
    move_request_cycle: u64,
    initial_backoff: Duration,
    max_backoff: Duration,
    max_unschedulable: Duration,
}

impl<T> std::fmt::Debug for SchedulingQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulingQueue")
            .field("pods", &self.entries.len())
            .field("active", &self.len(QueueState::Active))
            .field("backoff", &self.len(QueueState::Backoff))
            .field("unschedulable", &self.len(QueueState::Unschedulable))
            .finish()
    }
}

impl<T> SchedulingQueue<T> {
    /// A queue using `fw`'s plugins' events for re-queueing, with upstream's
    /// defaults: backoff 1s doubling to 10s, unschedulable pods retried after
    /// 5 minutes regardless.
    pub fn new(fw: &Framework, clock: Arc<dyn Clock>) -> Self {
        SchedulingQueue {
            clock,
            entries: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            plugin_events: fw.plugins().map(|p| (p.name(), p.events())).collect(),
            seq: 0,
            scheduling_cycle: 0,
            move_request_cycle: 0,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_unschedulable: Duration::from_secs(300),
        }
    }

    /// Sets the initial and maximum backoff.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Number of pods in `state`.
    pub fn len(&self, state: QueueState) -> usize {
        self.entries.values().filter(|e| e.state == state).count()
    }

    /// Total pods known to the queue.
    pub fn total(&self) -> usize {
        self.entries.len()
    }

    /// True when no pods are known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where `key` is.
    pub fn state(&self, key: &str) -> Option<QueueState> {
        self.entries.get(key).map(|e| e.state)
    }

    fn push_active(&mut self, key: Arc<str>) {
        self.seq += 1;
        let e = self.entries.get_mut(&key).expect("entry exists");
        e.state = QueueState::Active;
        e.seq = self.seq;
        self.active.push(ActiveKey {
            priority: e.priority,
            timestamp: e.timestamp,
            seq: self.seq,
            key,
        });
    }

    fn backoff_duration(&self, attempts: u32) -> Duration {
        let mut d = self.initial_backoff;
        for _ in 1..attempts {
            d = d.saturating_mul(2);
            if d >= self.max_backoff {
                return self.max_backoff;
            }
        }
        d.min(self.max_backoff)
    }

    fn backoff_expiry(&self, e: &Entry<T>) -> Instant {
        e.timestamp + self.backoff_duration(e.attempts)
    }

    fn push_backoff(&mut self, key: Arc<str>) {
        self.seq += 1;
        let seq = self.seq;
        let e = self.entries.get(&key).expect("entry exists");
        let at = self.backoff_expiry(e);
        let e = self.entries.get_mut(&key).expect("entry exists");
        e.state = QueueState::Backoff;
        e.seq = seq;
        self.backoff.push(Reverse((at, seq, key)));
    }

    /// Adds a new pending pod (gated pods wait for [`update`](Self::update)).
    pub fn add(&mut self, key: &str, priority: i32, item: T, gated: bool) {
        if self.entries.contains_key(key) {
            self.update(key, priority, item, gated);
            return;
        }
        let key: Arc<str> = key.into();
        self.entries.insert(
            key.clone(),
            Entry {
                item,
                priority,
                timestamp: self.clock.now(),
                attempts: 0,
                plugins: Vec::new(),
                state: QueueState::Gated,
                seq: 0,
                popped_cycle: 0,
            },
        );
        if !gated {
            self.push_active(key);
        }
    }

    /// The pod changed. Unschedulable or gated pods whose spec changed are
    /// retried; queued pods get the new item.
    pub fn update(&mut self, key: &str, priority: i32, item: T, gated: bool) {
        let Some((k, e)) = self.entries.get_key_value(key) else {
            self.add(key, priority, item, gated);
            return;
        };
        let k = k.clone();
        let state = e.state;
        let e = self.entries.get_mut(&k).expect("present");
        e.item = item;
        let prio_changed = e.priority != priority;
        e.priority = priority;
        match state {
            QueueState::Gated if !gated => self.push_active(k),
            QueueState::Unschedulable if !gated => {
                let now = self.clock.now();
                let e = self.entries.get(&k).expect("present");
                if self.backoff_expiry(e) > now {
                    self.push_backoff(k);
                } else {
                    self.push_active(k);
                }
            }
            QueueState::Active if prio_changed => self.push_active(k),
            _ => {}
        }
    }

    /// Keys of every pod the queue knows.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|k| &**k)
    }

    /// The item queued under `key`.
    pub fn item(&self, key: &str) -> Option<&T> {
        self.entries.get(key).map(|e| &e.item)
    }

    /// Replaces the item under `key` without moving the pod (for changes that
    /// cannot affect scheduling, like status updates). False if unknown.
    pub fn set_item(&mut self, key: &str, item: T) -> bool {
        match self.entries.get_mut(key) {
            Some(e) => {
                e.item = item;
                true
            }
            None => false,
        }
    }

    /// Forgets a pod (deleted, or bound by someone else).
    pub fn delete(&mut self, key: &str) -> Option<T> {
        self.entries.remove(key).map(|e| e.item)
    }

    /// Moves due backoff pods to active, and pods parked in unschedulable for
    /// longer than the maximum back to active or backoff.
    pub fn flush(&mut self) {
        let now = self.clock.now();
        while self.backoff.peek().is_some_and(|r| r.0 .0 <= now) {
            let (_, seq2, key) = self.backoff.pop().expect("peeked").0;
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.state == QueueState::Backoff && e.seq == seq2)
            {
                self.push_active(key);
            }
        }
        let stale: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.state == QueueState::Unschedulable
                    && now.duration_since(e.timestamp) >= self.max_unschedulable
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.push_active(k);
        }
    }

    /// Pops the highest-priority active pod (after [`flush`](Self::flush)).
    pub fn pop(&mut self) -> Option<Popped<T>>
    where
        T: Clone,
    {
        self.flush();
        while let Some(top) = self.active.pop() {
            let Some(e) = self.entries.get_mut(&top.key) else {
                continue;
            };
            if e.state != QueueState::Active || e.seq != top.seq {
                continue;
            }
            self.scheduling_cycle += 1;
            e.state = QueueState::InFlight;
            e.attempts += 1;
            e.popped_cycle = self.scheduling_cycle;
            return Some(Popped {
                key: top.key.to_string(),
                item: e.item.clone(),
                attempts: e.attempts,
            });
        }
        None
    }

    /// When the next backoff expires (for a loop to sleep until).
    pub fn next_backoff_expiry(&self) -> Option<Instant> {
        self.backoff.peek().map(|r| r.0 .0)
    }

    /// The popped pod was scheduled: forget it.
    pub fn done(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// The popped pod did not fit; `plugins` rejected it. It is parked as
    /// unschedulable, or backs off if a cluster event arrived while it was
    /// being scheduled (that event may already have made it fit).
    pub fn requeue_unschedulable(&mut self, key: &str, plugins: Vec<&'static str>) {
        let Some((k, _)) = self.entries.get_key_value(key) else {
            return;
        };
        let k = k.clone();
        let now = self.clock.now();
        let move_cycle = self.move_request_cycle;
        let e = self.entries.get_mut(&k).expect("present");
        e.timestamp = now;
        e.plugins = plugins;
        if e.plugins.is_empty() || move_cycle >= e.popped_cycle {
            self.push_backoff(k);
        } else {
            e.state = QueueState::Unschedulable;
        }
    }

    /// The popped pod hit an error (binding failed…): back off and retry.
    pub fn requeue_error(&mut self, key: &str) {
        let Some((k, _)) = self.entries.get_key_value(key) else {
            return;
        };
        let k = k.clone();
        let now = self.clock.now();
        self.entries.get_mut(&k).expect("present").timestamp = now;
        self.push_backoff(k);
    }

    /// A cluster event happened: unschedulable pods rejected by a plugin that
    /// registered for it move to backoff (if still backing off) or active.
    /// Returns how many moved.
    pub fn on_event(&mut self, event: ClusterEvent) -> usize {
        self.move_request_cycle = self.scheduling_cycle;
        let now = self.clock.now();
        let movable: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state == QueueState::Unschedulable)
            .filter(|(_, e)| {
                e.plugins.iter().any(|p| {
                    self.plugin_events.get(p).is_none_or(|evs| {
                        evs.iter()
                            .any(|ev| ev.resource == event.resource && ev.action == event.action)
                    })
                })
            })
            .map(|(k, _)| k.clone())
            .collect();
        let n = movable.len();
        for k in movable {
            let e = self.entries.get(&k).expect("present");
            if self.backoff_expiry(e) > now {
                self.push_backoff(k);
            } else {
                self.push_active(k);
            }
        }
        n
    }
}
