//! Shared watch fan-out with a field index, for resources whose strategy names one
//! (pods: `spec.nodeName`, as upstream's cacher indexes them).
//!
//! Without it every watch of pods reads every pod event from the store and decodes it,
//! so 5,000 kubelets (each watching `spec.nodeName=<its node>`) cost 5,000 decodes per
//! pod write: quadratic in the cluster's size. A [`Dispatcher`] instead holds one store
//! watch per resource, decodes each event once and hands it only to the watchers it can
//! concern: those without an index value, and those whose value is the object's (or its
//! previous state's) field value.
//!
//! A new watcher from revision `R` gets the dispatcher's recent events after `R` (a
//! ring of [`RING`] decoded events) and then live ones. When the ring no longer reaches
//! back to `R`, [`Fanout::subscribe`] answers `None` and the watcher reads the store
//! itself, as every watch did before. A watcher whose queue of [`QUEUE`] events is full is
//! dropped: its stream ends without a gap, and a client watches again from the last
//! revision it saw, as after a timeout.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::decode;
use crate::resources::ResourceInfo;
use crate::storage::{Event, EventKind, Storage};

/// Decoded events a dispatcher keeps for watchers that start a little behind it.
const RING: usize = 1024;

/// Events queued per watcher before it counts as too slow and is dropped.
const QUEUE: usize = 4096;

/// One change, decoded once for every watcher.
#[derive(Debug)]
pub(crate) struct Shared {
    pub rev: u64,
    pub kind: EventKind,
    pub key: String,
    /// The object as served, `resourceVersion` set.
    pub obj: Value,
    /// The state before the change, as stored.
    pub prev: Option<Value>,
}

struct Sub {
    prefix: String,
    tx: mpsc::Sender<Arc<Shared>>,
}

#[derive(Default)]
struct State {
    /// The revision of the last event dispatched (or the start).
    last: u64,
    /// The ring holds every event after this revision (the start, or the last event
    /// it let go).
    floor: u64,
    ring: VecDeque<Arc<Shared>>,
    /// Watchers of every object.
    all: Vec<Sub>,
    /// Watchers of the objects whose indexed field has a value.
    by_value: HashMap<String, Vec<Sub>>,
    closed: bool,
}

/// One resource's shared watch.
struct Dispatcher {
    field: &'static str,
    state: Mutex<State>,
}

/// The dispatchers of an [`Api`](super::Api), one per indexed resource, started by the
/// first watch of each.
#[derive(Default)]
pub(crate) struct Fanout {
    dispatchers: Mutex<HashMap<String, Arc<Dispatcher>>>,
}

/// The value of the dotted `path` in `obj` as a field selector reads it.
fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for seg in path.split('.') {
        cur = cur.get(seg).unwrap_or(&Value::Null);
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

impl Fanout {
    /// The events of `info`'s objects under `prefix` after revision `after`, decoded once
    /// for all watchers; only those whose `field` (the strategy's index) is `value` when
    /// one is given. `None` when the shared watch cannot serve from `after`.
    pub(crate) async fn subscribe(
        &self,
        storage: &Arc<dyn Storage>,
        info: &ResourceInfo,
        field: &'static str,
        prefix: &str,
        after: u64,
        value: Option<&str>,
    ) -> Option<BoxStream<'static, Arc<Shared>>> {
        let id = format!("{}|{}", info.prefix(None), info.api_version());
        let d = self.dispatcher(storage, info, field, id).await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut st = d.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.closed {
            return None;
        }
        if after < st.floor {
            return None;
        }
        let concerns = |ev: &Shared| {
            ev.key.starts_with(prefix)
                && value.is_none_or(|v| {
                    field_value(&ev.obj, field) == v
                        || ev.prev.as_ref().is_some_and(|p| field_value(p, field) == v)
                })
        };
        let backlog: Vec<Arc<Shared>> = st
            .ring
            .iter()
            .filter(|e| e.rev > after && concerns(e))
            .cloned()
            .collect();
        let sub = Sub {
            prefix: prefix.to_owned(),
            tx,
        };
        match value {
            Some(v) => {
                let subs = st.by_value.entry(v.to_owned()).or_default();
                // watchers that went away since (a kubelet's watch ends every few minutes)
                subs.retain(|s| !s.tx.is_closed());
                subs.push(sub);
            }
            None => {
                st.all.retain(|s| !s.tx.is_closed());
                st.all.push(sub);
            }
        }
        drop(st);
        let live = futures::stream::unfold(rx, |mut rx| async move {
            let ev = rx.recv().await?;
            Some((ev, rx))
        })
        .filter(move |e| std::future::ready(e.rev > after));
        Some(futures::stream::iter(backlog).chain(live).boxed())
    }

    /// The running dispatcher for `id`, started if there is none.
    async fn dispatcher(
        &self,
        storage: &Arc<dyn Storage>,
        info: &ResourceInfo,
        field: &'static str,
        id: String,
    ) -> Option<Arc<Dispatcher>> {
        if let Some(d) = self
            .dispatchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .filter(|d| !d.state.lock().unwrap_or_else(|e| e.into_inner()).closed)
        {
            return Some(Arc::clone(d));
        }
        let start = storage.revision().await.ok()?.current;
        let mut stream = storage.watch(&info.prefix(None), start).await.ok()?;
        let mut map = self.dispatchers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = map
            .get(&id)
            .filter(|d| !d.state.lock().unwrap_or_else(|e| e.into_inner()).closed)
        {
            // another watch started one meanwhile
            return Some(Arc::clone(d));
        }
        let d = Arc::new(Dispatcher {
            field,
            state: Mutex::new(State {
                last: start,
                floor: start,
                ..State::default()
            }),
        });
        map.insert(id, Arc::clone(&d));
        drop(map);
        let strategy = info.strategy.clone();
        let weak = Arc::downgrade(&d);
        tokio::spawn(async move {
            while let Some(next) = stream.next().await {
                let Some(d) = weak.upgrade() else { return };
                let Ok(ev) = next else { break };
                let Some(shared) = decode_event(ev, &*strategy) else {
                    continue;
                };
                d.dispatch(Arc::new(shared));
            }
            // the store's watch ended (lagged, compacted, closed): watchers end too and
            // watch again, which starts a new dispatcher
            if let Some(d) = weak.upgrade() {
                let mut st = d.state.lock().unwrap_or_else(|e| e.into_inner());
                st.closed = true;
                st.all.clear();
                st.by_value.clear();
                st.ring.clear();
            }
        });
        Some(d)
    }
}

fn decode_event(ev: Event, strategy: &dyn crate::registry::Strategy) -> Option<Shared> {
    let mut obj = decode(&ev.kv).ok()?;
    strategy.serve_stored(&mut obj);
    let prev = ev.prev.as_ref().and_then(|p| decode(p).ok());
    Some(Shared {
        rev: ev.kv.mod_revision,
        kind: ev.kind,
        key: ev.kv.key,
        obj,
        prev,
    })
}

impl Dispatcher {
    fn dispatch(&self, ev: Arc<Shared>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.last = ev.rev;
        if st.ring.len() == RING {
            if let Some(old) = st.ring.pop_front() {
                st.floor = old.rev;
            }
        }
        st.ring.push_back(Arc::clone(&ev));
        let send = |subs: &mut Vec<Sub>| {
            // a full queue (too slow) or a closed one (gone): the watcher is dropped
            subs.retain(|s| !ev.key.starts_with(&s.prefix) || s.tx.try_send(ev.clone()).is_ok());
        };
        send(&mut st.all);
        let now = field_value(&ev.obj, self.field);
        let before = ev.prev.as_ref().map(|p| field_value(p, self.field));
        for v in std::iter::once(now.clone()).chain(before.filter(|b| *b != now)) {
            if let Some(subs) = st.by_value.get_mut(&v) {
                send(subs);
                if subs.is_empty() {
                    st.by_value.remove(&v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_values_read_as_selectors_do() {
        let pod = serde_json::json!({"spec": {"nodeName": "n1", "priority": 3}});
        assert_eq!(field_value(&pod, "spec.nodeName"), "n1");
        assert_eq!(field_value(&pod, "spec.priority"), "3");
        assert_eq!(field_value(&pod, "status.phase"), "");
    }
}
