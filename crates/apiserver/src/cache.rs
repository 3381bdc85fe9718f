//! The watch cache that serves lists: every stored object, decoded, kept current by one
//! storage watch over the whole key space, plus a window of recent changes so a list can
//! be answered as of an earlier revision (`resourceVersionMatch=Exact`, continue tokens).
//!
//! It is primed lazily by the first list (a range read and a watch from its revision)
//! and dropped when its watch fails (lagging, compaction); the next list primes it again,
//! and lists fall back to the store meanwhile.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use crate::storage::{Event, EventKind, KeyValue, Storage, StorageError};

/// A cached object: decoded, with `metadata.resourceVersion` set.
pub(crate) type Obj = Arc<Value>;

/// A stored value, decoded on first use (most writes are never listed before they are
/// overwritten, so the watch task does not pay for decoding them).
struct Entry {
    kv: KeyValue,
    decoded: OnceLock<Option<Obj>>,
}

impl Entry {
    fn new(kv: KeyValue) -> Arc<Self> {
        Arc::new(Self {
            kv,
            decoded: OnceLock::new(),
        })
    }

    fn get(&self, decode: Decode) -> Option<Obj> {
        self.decoded
            .get_or_init(|| decode(&self.kv).map(Arc::new))
            .clone()
    }

    /// The decoded object, kept only if it already was: a client's list of many
    /// objects (all pods) decodes them for the answer without keeping a decoded copy of
    /// each beside its bytes (several times their size) for as long as it is current.
    fn peek(&self, decode: Decode) -> Option<Obj> {
        match self.decoded.get() {
            Some(d) => d.clone(),
            None => decode(&self.kv).map(Arc::new),
        }
    }
}

/// One applied change: the key's state before it (`None`: absent).
struct Change {
    rev: u64,
    key: String,
    prev: Option<Arc<Entry>>,
}

struct State {
    objects: BTreeMap<String, Arc<Entry>>,
    /// The revision the cache reflects.
    rev: u64,
    /// States at revisions `oldest..=rev` can be rebuilt from `history`.
    oldest: u64,
    history: VecDeque<Change>,
    /// The revision of the last change under each `/registry/<group>/` seen since the
    /// cache was primed (a group absent here has not changed since `primed`).
    group_changes: HashMap<String, u64>,
    /// The revision the cache was primed at.
    primed: u64,
}

type Decode = fn(&KeyValue) -> Option<Value>;

/// Keys read per range request while priming.
const PRIME_PAGE: usize = 1000;

/// The list cache of one [`Api`](crate::Api).
pub(crate) struct WatchCache {
    storage: Arc<dyn Storage>,
    state: Arc<RwLock<Option<State>>>,
    rev: Arc<watch::Sender<u64>>,
    priming: tokio::sync::Mutex<()>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    capacity: usize,
    decode: Decode,
    prime_page: usize,
}

impl WatchCache {
    /// A cache over `storage` keeping `capacity` changes of history.
    pub(crate) fn new(storage: Arc<dyn Storage>, capacity: usize, decode: Decode) -> Self {
        Self {
            storage,
            state: Arc::new(RwLock::new(None)),
            rev: Arc::new(watch::channel(0).0),
            priming: tokio::sync::Mutex::new(()),
            stop: Mutex::new(None),
            capacity,
            decode,
            prime_page: PRIME_PAGE,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<State>> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The revision the cache reflects, if it is primed.
    pub(crate) fn revision(&self) -> Option<u64> {
        self.read().as_ref().map(|s| s.rev)
    }

    /// Primes the cache if needed: a range read of everything, then a watch from there.
    pub(crate) async fn ensure(&self) -> Result<(), StorageError> {
        if self.read().is_some() {
            return Ok(());
        }
        let _guard = self.priming.lock().await;
        if self.read().is_some() {
            return Ok(());
        }
        // Read in pages (a single answer could pass a gRPC message limit on etcd). Pages
        // come from successive revisions, so the watch starts after the first page's and
        // the cache counts as primed once it has applied events up to the last page's:
        // from then on its state is exact.
        let mut objects: BTreeMap<String, Arc<Entry>> = BTreeMap::new();
        let mut first_rev = None;
        let mut last_rev = 0;
        let mut start: Option<String> = None;
        loop {
            let page = tracing::Instrument::instrument(
                self.storage.range("", start.as_deref(), self.prime_page),
                tracing::debug_span!("watch_cache_prime"),
            )
            .await?;
            first_rev.get_or_insert(page.revision);
            last_rev = last_rev.max(page.revision);
            start = page.kvs.last().map(|kv| kv.key.clone());
            for kv in page.kvs {
                objects.insert(kv.key.clone(), Entry::new(kv));
            }
            if !page.more || start.is_none() {
                break;
            }
        }
        let first_rev = first_rev.unwrap_or(0);
        let mut stream = self.storage.watch("", first_rev).await?;
        tracing::debug!(
            objects = objects.len(),
            revision = last_rev,
            "watch cache primed"
        );
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Some(State {
            objects,
            rev: first_rev,
            oldest: last_rev,
            history: VecDeque::new(),
            group_changes: HashMap::new(),
            primed: first_rev,
        });
        self.rev.send_modify(|r| *r = (*r).max(first_rev));
        let (stop_tx, mut stop_rx) = oneshot::channel();
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop_tx);
        let state = Arc::clone(&self.state);
        let rev = Arc::clone(&self.rev);
        let capacity = self.capacity;
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = &mut stop_rx => return,
                    ev = stream.next() => ev,
                };
                let mut guard = state.write().unwrap_or_else(|e| e.into_inner());
                let Some(st) = guard.as_mut() else { return };
                match ev {
                    Some(Ok(ev)) => {
                        let r = ev.revision();
                        apply(st, ev, capacity);
                        drop(guard);
                        rev.send_modify(|v| *v = (*v).max(r));
                    }
                    other => {
                        // Lagged, compacted or closed: drop the cache; the next list
                        // primes it again.
                        if let Some(Err(e)) = other {
                            tracing::warn!(error = %e, "watch cache lost its watch");
                        }
                        *guard = None;
                        return;
                    }
                }
            }
        });
        if last_rev > first_rev && !self.wait_for(last_rev, Duration::from_secs(10)).await {
            return Err(StorageError::Backend {
                op: "prime watch cache",
                message: format!("the watch did not reach revision {last_rev}"),
            });
        }
        Ok(())
    }

    /// The revision of the last change of any object of API `group` (`""`: core) the
    /// cache knows of: when it is unchanged, so are that group's objects. `None` when the
    /// cache is not primed.
    pub(crate) fn group_revision(&self, group: &str) -> Option<u64> {
        let guard = self.read();
        let st = guard.as_ref()?;
        let g = if group.is_empty() { "core" } else { group };
        Some(st.group_changes.get(g).copied().unwrap_or(st.primed))
    }

    /// Waits until the cache reflects revision `rev` (or `timeout` passes).
    pub(crate) async fn wait_for(&self, rev: u64, timeout: Duration) -> bool {
        let mut rx = self.rev.subscribe();
        let reached = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|r| *r >= rev)).await,
            Ok(Ok(_))
        );
        reached
    }

    /// The current object under `key`: `Some(None)` if the cache knows it is absent,
    /// `None` if the cache cannot tell (not primed).
    pub(crate) fn get(&self, key: &str) -> Option<Option<Obj>> {
        let guard = self.read();
        let st = guard.as_ref().filter(|st| st.rev >= st.oldest)?;
        Some(st.objects.get(key).and_then(|e| e.get(self.decode)))
    }

    /// One page of the objects under `prefix` as of revision `at` (the current state if
    /// `None`), in key order after `start_after`, those `keep` accepts, at most `limit` (0:
    /// all); with whether more follow and the revision they reflect. `None` when the cache
    /// is not primed or no longer holds the history back to `at`.
    ///
    /// Objects decoded for it stay decoded in the cache (for the server's own frequent
    /// reads of small kinds: RBAC, webhook configurations); see [`WatchCache::list_page`].
    pub(crate) fn page(
        &self,
        prefix: &str,
        at: Option<u64>,
        start_after: Option<&str>,
        keep: &dyn Fn(&Value) -> bool,
        limit: usize,
    ) -> Option<(Vec<Obj>, bool, u64)> {
        self.page_with(prefix, at, start_after, keep, limit, Entry::get)
    }

    /// [`WatchCache::page`] for a client's list: what it decodes is not kept.
    pub(crate) fn list_page(
        &self,
        prefix: &str,
        at: Option<u64>,
        start_after: Option<&str>,
        keep: &dyn Fn(&Value) -> bool,
        limit: usize,
    ) -> Option<(Vec<Obj>, bool, u64)> {
        self.page_with(prefix, at, start_after, keep, limit, Entry::peek)
    }

    fn page_with(
        &self,
        prefix: &str,
        at: Option<u64>,
        start_after: Option<&str>,
        keep: &dyn Fn(&Value) -> bool,
        limit: usize,
        read: fn(&Entry, Decode) -> Option<Obj>,
    ) -> Option<(Vec<Obj>, bool, u64)> {
        use std::ops::Bound;
        let guard = self.read();
        let st = guard.as_ref().filter(|st| st.rev >= st.oldest)?;
        let rev = match at {
            None => st.rev,
            Some(at) if at < st.oldest || at > st.rev => return None,
            Some(at) => at,
        };
        let after = |k: &str| start_after.is_none_or(|s| k > s);
        // Undo the changes after `rev`, newest first: what remains per key is its state
        // before the oldest of them, i.e. at `rev`.
        let mut undo: BTreeMap<&str, Option<&Arc<Entry>>> = BTreeMap::new();
        for c in st.history.iter().rev().take_while(|c| c.rev > rev) {
            if c.key.starts_with(prefix) && after(&c.key) {
                undo.insert(c.key.as_str(), c.prev.as_ref());
            }
        }
        let lower = match start_after {
            Some(s) if s >= prefix => Bound::Excluded(s),
            _ => Bound::Included(prefix),
        };
        let mut cur = st
            .objects
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut old = undo.into_iter().peekable();
        let mut out = Vec::new();
        let mut more = false;
        loop {
            // Merge the current objects with the undone ones, in key order.
            let entry: Option<&Arc<Entry>> = match (cur.peek(), old.peek()) {
                (None, None) => break,
                (Some((ck, _)), Some((ok, _))) if ck.as_str() == *ok => {
                    cur.next();
                    old.next().and_then(|(_, v)| v)
                }
                (Some((ck, _)), Some((ok, _))) if ck.as_str() > *ok => {
                    old.next().and_then(|(_, v)| v)
                }
                (Some(_), _) => cur.next().map(|(_, v)| v),
                (None, Some(_)) => old.next().and_then(|(_, v)| v),
            };
            let Some(obj) = entry.and_then(|e| read(e, self.decode)) else {
                continue;
            };
            if !keep(&obj) {
                continue;
            }
            if limit > 0 && out.len() == limit {
                more = true;
                break;
            }
            out.push(obj);
        }
        Some((out, more, rev))
    }
}

impl Drop for WatchCache {
    fn drop(&mut self) {
        // Ends the watch task.
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

fn apply(st: &mut State, ev: Event, capacity: usize) {
    let rev = ev.revision();
    let key = ev.kv.key.clone();
    let prev = match ev.kind {
        EventKind::Put => st.objects.insert(key.clone(), Entry::new(ev.kv)),
        EventKind::Delete => st.objects.remove(&key),
    };
    // `/registry/<group>/...`
    if let Some(group) = key
        .strip_prefix("/registry/")
        .and_then(|k| k.split('/').next())
    {
        match st.group_changes.get_mut(group) {
            Some(r) => *r = rev,
            None => {
                st.group_changes.insert(group.to_owned(), rev);
            }
        }
    }
    st.history.push_back(Change { rev, key, prev });
    while st.history.len() > capacity {
        if let Some(c) = st.history.pop_front() {
            st.oldest = c.rev;
        }
    }
    st.rev = rev;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::RedbStorage;

    fn decode(kv: &KeyValue) -> Option<Value> {
        let mut v: Value = serde_json::from_slice(&kv.value).ok()?;
        v["rv"] = serde_json::json!(kv.mod_revision);
        Some(v)
    }

    fn snap(cache: &WatchCache, prefix: &str, at: Option<u64>) -> Option<(Vec<Obj>, u64)> {
        cache
            .page(prefix, at, None, &|_| true, 0)
            .map(|(v, _, r)| (v, r))
    }

    fn names(objs: &[Obj]) -> Vec<String> {
        objs.iter()
            .map(|o| format!("{}@{}", o["n"].as_str().unwrap_or(""), o["rv"]))
            .collect()
    }

    #[tokio::test]
    async fn snapshots_now_and_as_of_earlier_revisions() {
        let dir = tempfile::tempdir().expect("dir");
        let s: Arc<dyn Storage> = Arc::new(RedbStorage::open(dir.path()).expect("open"));
        let put = |n: &str| serde_json::to_vec(&serde_json::json!({"n": n})).unwrap();
        let a = s.create("/p/a", put("a")).await.unwrap().mod_revision; // 1
        let cache = WatchCache::new(Arc::clone(&s), 3, decode);
        cache.ensure().await.unwrap();
        assert_eq!(cache.revision(), Some(a));
        s.create("/p/b", put("b")).await.unwrap(); // 2
        s.update("/p/a", put("a2"), None).await.unwrap(); // 3
        s.create("/q/x", put("x")).await.unwrap(); // 4
        let last = s.delete("/p/b", None).await.unwrap().mod_revision; // 5
        assert!(cache.wait_for(last, Duration::from_secs(5)).await);
        let (now, rev) = snap(&cache, "/p/", None).unwrap();
        assert_eq!((names(&now), rev), (vec!["a2@3".to_string()], 5));
        let (at2, rev) = snap(&cache, "/p/", Some(2)).unwrap();
        assert_eq!((names(&at2), rev), (vec!["a@1".into(), "b@2".into()], 2));
        let (at4, _) = snap(&cache, "/p/", Some(4)).unwrap();
        assert_eq!(names(&at4), vec!["a2@3".to_string(), "b@2".to_string()]);
        // Three changes of history: revision 1 is out of reach, 6 is in the future.
        assert!(snap(&cache, "/p/", Some(1)).is_none());
        assert!(snap(&cache, "/p/", Some(6)).is_none());
        assert!(!cache.wait_for(6, Duration::from_millis(50)).await);
        // Pages: after a key, filtered, limited, also as of an earlier revision.
        let (p, more, _) = cache
            .page("/p/", Some(2), Some("/p/a"), &|_| true, 1)
            .unwrap();
        assert_eq!((names(&p), more), (vec!["b@2".to_string()], false));
        let (p, more, _) = cache.page("/p/", Some(4), None, &|_| true, 1).unwrap();
        assert_eq!((names(&p), more), (vec!["a2@3".to_string()], true));
        let (p, _, _) = cache
            .page("/p/", Some(4), None, &|o| o["n"] == "b", 0)
            .unwrap();
        assert_eq!(names(&p), vec!["b@2".to_string()]);
        assert_eq!(cache.get("/p/b").unwrap(), None);
        assert_eq!(cache.get("/p/a").unwrap().unwrap()["n"], "a2");
    }

    #[tokio::test]
    async fn client_lists_keep_no_decoded_copies() {
        let dir = tempfile::tempdir().expect("dir");
        let s: Arc<dyn Storage> = Arc::new(RedbStorage::open(dir.path()).expect("open"));
        for n in ["a", "b"] {
            let v = serde_json::to_vec(&serde_json::json!({"n": n})).unwrap();
            s.create(&format!("/p/{n}"), v).await.unwrap();
        }
        let cache = WatchCache::new(Arc::clone(&s), 10, decode);
        cache.ensure().await.unwrap();
        let decoded = |cache: &WatchCache| {
            let guard = cache.read();
            let st = guard.as_ref().expect("primed");
            st.objects
                .values()
                .filter(|e| e.decoded.get().is_some())
                .count()
        };
        let (all, _, _) = cache.list_page("/p/", None, None, &|_| true, 0).unwrap();
        assert_eq!((all.len(), decoded(&cache)), (2, 0));
        let (all, _, _) = cache.page("/p/", None, None, &|_| true, 0).unwrap();
        assert_eq!((all.len(), decoded(&cache)), (2, 2));
        // a list reuses what is kept
        let (again, _, _) = cache.list_page("/p/", None, None, &|_| true, 0).unwrap();
        assert!(Arc::ptr_eq(&again[0], &all[0]));
    }

    #[tokio::test]
    async fn primes_in_pages() {
        let dir = tempfile::tempdir().expect("dir");
        let s: Arc<dyn Storage> = Arc::new(RedbStorage::open(dir.path()).expect("open"));
        for n in ["a", "b", "c", "d", "e"] {
            let v = serde_json::to_vec(&serde_json::json!({"n": n})).unwrap();
            s.create(&format!("/p/{n}"), v).await.unwrap();
        }
        let mut cache = WatchCache::new(Arc::clone(&s), 10, decode);
        cache.prime_page = 2;
        cache.ensure().await.unwrap();
        let (all, rev) = snap(&cache, "/p/", None).expect("primed");
        assert_eq!(all.len(), 5);
        assert_eq!(rev, 5);
    }
}
