//! In-memory fan-out of committed events: a ring of recent history (the watch cache) plus
//! a broadcast channel for live delivery.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::broadcast;

use super::{Event, StorageError, WatchStream};

/// Fan-out point shared by the writer and all watchers.
pub(crate) struct WatchHub {
    inner: Mutex<Ring>,
    tx: broadcast::Sender<Arc<Event>>,
}

struct Ring {
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    last: u64,
}

/// What a new watcher starts from.
pub(crate) struct Subscription {
    /// Live events; those at or below `last` must be skipped.
    pub rx: broadcast::Receiver<Arc<Event>>,
    /// The history after the requested revision, if the ring still holds all of it.
    pub backlog: Option<Vec<Arc<Event>>>,
    /// The last revision published when the subscription was taken.
    pub last: u64,
}

impl WatchHub {
    /// A hub whose history starts after `revision`.
    pub(crate) fn new(revision: u64, ring_capacity: usize, channel_capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(channel_capacity.max(16));
        Self {
            inner: Mutex::new(Ring {
                events: VecDeque::with_capacity(ring_capacity.min(4096)),
                capacity: ring_capacity,
                last: revision,
            }),
            tx,
        }
    }

    /// Publishes committed events, in revision order.
    pub(crate) fn publish(&self, events: impl IntoIterator<Item = Arc<Event>>) {
        let mut ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for ev in events {
            ring.last = ev.revision();
            if ring.capacity > 0 {
                if ring.events.len() == ring.capacity {
                    ring.events.pop_front();
                }
                ring.events.push_back(ev.clone());
            }
            // No receivers is fine.
            let _ = self.tx.send(ev);
        }
    }

    /// The last published revision.
    pub(crate) fn last(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).last
    }

    /// Subscribes for events after `after`.
    pub(crate) fn subscribe(&self, after: u64) -> Subscription {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let rx = self.tx.subscribe();
        let covered = after >= ring.last
            || ring
                .events
                .front()
                .is_some_and(|first| first.revision() <= after + 1);
        let backlog = covered.then(|| {
            ring.events
                .iter()
                .filter(|e| e.revision() > after)
                .cloned()
                .collect()
        });
        Subscription {
            rx,
            backlog,
            last: ring.last,
        }
    }
}

/// Builds the watcher's stream: `backlog` first, then live events newer than `last`, all
/// restricted to keys under `prefix`.
pub(crate) fn watch_stream(
    prefix: String,
    backlog: Vec<Arc<Event>>,
    rx: broadcast::Receiver<Arc<Event>>,
    last: u64,
) -> WatchStream {
    let p = prefix.clone();
    let history = futures::stream::iter(
        backlog
            .into_iter()
            .filter(move |e| e.kv.key.starts_with(&p))
            .map(|e| Ok((*e).clone())),
    );
    let live = futures::stream::unfold(Some((rx, prefix)), move |state| async move {
        let (mut rx, prefix) = state?;
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if ev.revision() <= last || !ev.kv.key.starts_with(&prefix) {
                        continue;
                    }
                    return Some((Ok((*ev).clone()), Some((rx, prefix))));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let err = StorageError::WatchLagged {
                        prefix: prefix.clone(),
                    };
                    return Some((Err(err), None));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    history.chain(live).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{EventKind, KeyValue};

    fn ev(rev: u64, key: &str) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.into(),
                value: vec![],
                create_revision: rev,
                mod_revision: rev,
            },
            prev: None,
        }
    }

    #[test]
    fn ring_covers_only_recent_history() {
        let hub = WatchHub::new(0, 3, 16);
        hub.publish((1..=5).map(|r| Arc::new(ev(r, "/a"))));
        assert!(hub.subscribe(1).backlog.is_none());
        let s = hub.subscribe(2);
        let revs: Vec<u64> = s.backlog.unwrap().iter().map(|e| e.revision()).collect();
        assert_eq!(revs, vec![3, 4, 5]);
        assert_eq!(hub.subscribe(5).backlog.unwrap().len(), 0);
        assert_eq!(hub.last(), 5);
    }

    #[tokio::test]
    async fn stream_filters_prefix_and_skips_replayed() {
        let hub = WatchHub::new(0, 10, 16);
        hub.publish([ev(1, "/a/x"), ev(2, "/b/x")].map(Arc::new));
        let s = hub.subscribe(0);
        let mut stream = watch_stream("/a/".into(), s.backlog.unwrap(), s.rx, s.last);
        hub.publish([ev(3, "/b/y"), ev(4, "/a/y")].map(Arc::new));
        let first = stream.next().await.unwrap().unwrap();
        let second = stream.next().await.unwrap().unwrap();
        assert_eq!((first.revision(), second.revision()), (1, 4));
    }
}
