//! Informer caches: a [`Store`] of the objects of one resource, kept current by an
//! [`Informer`] that lists and watches through kube-rs's watcher (which resumes from the
//! last resourceVersion and relists after `410 Gone`), and tells handlers what changed.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::meta::ObjectKey;

/// What happened to one object, as seen by the cache.
#[derive(Debug)]
pub enum Change<K> {
    /// A new object.
    Added(Arc<K>),
    /// An object that changed; `old` is the cached copy it replaced.
    Updated {
        /// The previous copy.
        old: Arc<K>,
        /// The current copy.
        new: Arc<K>,
    },
    /// An object that is gone (its last known state).
    Deleted(Arc<K>),
}

impl<K> Change<K> {
    /// The current object, or the deleted one's last state.
    pub fn object(&self) -> &Arc<K> {
        match self {
            Change::Added(o) | Change::Deleted(o) => o,
            Change::Updated { new, .. } => new,
        }
    }

    /// The replaced copy of an update.
    pub fn old(&self) -> Option<&Arc<K>> {
        match self {
            Change::Updated { old, .. } => Some(old),
            _ => None,
        }
    }
}

/// Names the index values of an object (client-go's `IndexFunc`); an object may have
/// several or none.
pub type IndexFn<K> = Arc<dyn Fn(&K) -> Vec<String> + Send + Sync>;

/// One secondary index: index value → keys of the objects that have it.
struct Index<K> {
    name: &'static str,
    values: IndexFn<K>,
    entries: HashMap<String, HashSet<ObjectKey>>,
}

impl<K> Index<K> {
    fn insert(&mut self, key: &ObjectKey, obj: &K) {
        for v in (self.values)(obj) {
            self.entries.entry(v).or_default().insert(key.clone());
        }
    }

    fn remove(&mut self, key: &ObjectKey, obj: &K) {
        for v in (self.values)(obj) {
            if let Some(set) = self.entries.get_mut(&v) {
                set.remove(key);
                if set.is_empty() {
                    self.entries.remove(&v);
                }
            }
        }
    }
}

/// The cached objects and the indexes over them, changed together under one lock.
struct Objects<K> {
    map: HashMap<ObjectKey, Arc<K>>,
    indexes: Vec<Index<K>>,
}

impl<K> Objects<K> {
    /// Stores `new` under `key` and returns the copy it replaced, keeping the indexes.
    fn insert(&mut self, key: ObjectKey, new: Arc<K>) -> Option<Arc<K>> {
        let old = self.map.insert(key.clone(), Arc::clone(&new));
        for ix in &mut self.indexes {
            if let Some(o) = &old {
                ix.remove(&key, o);
            }
            ix.insert(&key, &new);
        }
        old
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Arc<K>> {
        let old = self.map.remove(key)?;
        for ix in &mut self.indexes {
            ix.remove(key, &old);
        }
        Some(old)
    }

    /// Replaces every object (a relist), rebuilding the indexes.
    fn replace(&mut self, fresh: HashMap<ObjectKey, Arc<K>>) {
        for ix in &mut self.indexes {
            ix.entries.clear();
            for (k, o) in &fresh {
                ix.insert(k, o);
            }
        }
        self.map = fresh;
    }
}

struct StoreInner<K> {
    objects: RwLock<Objects<K>>,
    buffer: std::sync::Mutex<Option<HashMap<ObjectKey, Arc<K>>>>,
    synced: watch::Sender<bool>,
}

/// A thread-safe, cheaply cloned cache of the objects of one resource.
pub struct Store<K> {
    inner: Arc<StoreInner<K>>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> Debug for Store<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("len", &self.read().map.len())
            .finish()
    }
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Self {
            inner: Arc::new(StoreInner {
                objects: RwLock::new(Objects {
                    map: HashMap::new(),
                    indexes: Vec::new(),
                }),
                buffer: std::sync::Mutex::new(None),
                synced: watch::channel(false).0,
            }),
        }
    }
}

impl<K> Store<K> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects<K>> {
        self.inner
            .objects
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects<K>> {
        self.inner
            .objects
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached object with this key.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<K>> {
        self.read().map.get(key).cloned()
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().map.values().cloned().collect()
    }

    /// The cached objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.read()
            .map
            .iter()
            .filter(|(k, _)| k.namespace.as_deref() == Some(namespace))
            .map(|(_, v)| Arc::clone(v))
            .collect()
    }

    /// The cached objects for which `f` holds.
    pub fn filter(&self, mut f: impl FnMut(&K) -> bool) -> Vec<Arc<K>> {
        self.read().map.values().filter(|o| f(o)).cloned().collect()
    }

    /// Number of cached objects.
    pub fn len(&self) -> usize {
        self.read().map.len()
    }

    /// Adds the secondary index `name` (client-go's `AddIndexers`), built from the objects
    /// already cached and kept current with every change; a second index of the same name
    /// is ignored, so controllers sharing a store can each ask for the one they use.
    pub fn add_index(&self, name: &'static str, values: IndexFn<K>) {
        let mut objects = self.write();
        if objects.indexes.iter().any(|ix| ix.name == name) {
            return;
        }
        let mut ix = Index {
            name,
            values,
            entries: HashMap::new(),
        };
        for (k, o) in &objects.map {
            ix.insert(k, o);
        }
        objects.indexes.push(ix);
    }

    /// The cached objects that have `value` in the index `name` (none if there is no such
    /// index).
    pub fn by_index(&self, name: &str, value: &str) -> Vec<Arc<K>> {
        let objects = self.read();
        let Some(ix) = objects.indexes.iter().find(|ix| ix.name == name) else {
            return Vec::new();
        };
        ix.entries
            .get(value)
            .into_iter()
            .flatten()
            .filter_map(|k| objects.map.get(k).cloned())
            .collect()
    }

    /// True when the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once the first complete list has been loaded.
    pub fn is_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// Waits until the first complete list has been loaded.
    pub async fn wait_synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        // The sender lives as long as the store, so this only ends when synced.
        let _ = rx.wait_for(|s| *s).await;
    }
}

impl<K: Resource> Store<K> {
    /// Applies one watcher event and returns the changes it makes to the cache. A relist
    /// (`Init` .. `InitDone`) replaces the contents atomically at `InitDone` and reports the
    /// objects that vanished meanwhile as deleted.
    pub fn apply(&self, event: Event<K>) -> Vec<Change<K>> {
        let mut buffer = self
            .inner
            .buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            Event::Init => {
                *buffer = Some(HashMap::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                buffer
                    .get_or_insert_with(HashMap::new)
                    .insert(ObjectKey::of(&obj), Arc::new(obj));
                Vec::new()
            }
            Event::InitDone => {
                let fresh = buffer.take().unwrap_or_default();
                let mut objects = self.write();
                let mut changes = Vec::new();
                for (key, new) in &fresh {
                    match objects.map.get(key) {
                        None => changes.push(Change::Added(Arc::clone(new))),
                        Some(old) if !same_version(old.as_ref(), new.as_ref()) => {
                            changes.push(Change::Updated {
                                old: Arc::clone(old),
                                new: Arc::clone(new),
                            })
                        }
                        Some(_) => {}
                    }
                }
                for (key, old) in &objects.map {
                    if !fresh.contains_key(key) {
                        changes.push(Change::Deleted(Arc::clone(old)));
                    }
                }
                objects.replace(fresh);
                drop(objects);
                self.inner.synced.send_replace(true);
                changes
            }
            Event::Apply(obj) => {
                let key = ObjectKey::of(&obj);
                let new = Arc::new(obj);
                match self.write().insert(key, Arc::clone(&new)) {
                    None => vec![Change::Added(new)],
                    Some(old) if same_version(old.as_ref(), new.as_ref()) => Vec::new(),
                    Some(old) => vec![Change::Updated { old, new }],
                }
            }
            Event::Delete(obj) => {
                let key = ObjectKey::of(&obj);
                let last = self.write().remove(&key).unwrap_or_else(|| Arc::new(obj));
                vec![Change::Deleted(last)]
            }
        }
    }
}

fn same_version<K: Resource>(a: &K, b: &K) -> bool {
    let (ra, rb) = (&a.meta().resource_version, &b.meta().resource_version);
    ra.is_some() && ra == rb && a.meta().uid == b.meta().uid
}

/// A handler told about every change to an informer's cache.
pub type Handler<K> = Box<dyn Fn(&Change<K>) + Send + Sync>;

/// Keeps a [`Store`] in sync with the API server and calls handlers on each change.
pub struct Informer<K> {
    api: Api<K>,
    config: watcher::Config,
    store: Store<K>,
    handlers: Vec<Handler<K>>,
}

impl<K> Debug for Informer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informer")
            .field("handlers", &self.handlers.len())
            .finish_non_exhaustive()
    }
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// An informer over every object `api` can see.
    pub fn new(api: Api<K>) -> Self {
        Self {
            api,
            config: watcher::Config::default(),
            store: Store::default(),
            handlers: Vec::new(),
        }
    }

    /// Replaces the watcher settings (label or field selectors, page size, ...).
    pub fn with_config(mut self, config: watcher::Config) -> Self {
        self.config = config;
        self
    }

    /// The cache this informer fills.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// True when some handler was registered.
    pub fn has_handlers(&self) -> bool {
        !self.handlers.is_empty()
    }

    /// Calls `handler` for each change, after it is applied to the cache.
    pub fn on_change(&mut self, handler: impl Fn(&Change<K>) + Send + Sync + 'static) {
        self.handlers.push(Box::new(handler));
    }

    /// Lists and watches until `shutdown` resolves. Errors are retried with backoff.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        use tracing::Instrument as _;
        let kind = K::kind(&()).into_owned();
        let span = tracing::info_span!("informer", kind = %kind);
        let Informer {
            api,
            config,
            store,
            handlers,
        } = self;
        async move {
            let stream = watcher::watcher(api, config).default_backoff();
            futures::pin_mut!(stream);
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    ev = stream.next() => match ev {
                        None => break,
                        Some(Ok(event)) => {
                            for change in store.apply(event) {
                                for h in &handlers {
                                    h(&change);
                                }
                            }
                        }
                        Some(Err(err)) => {
                            tracing::warn!(error = %err, "watch failed; retrying");
                        }
                    },
                }
            }
        }
        .instrument(span)
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cm(name: &str, rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn summary(changes: &[Change<ConfigMap>]) -> Vec<String> {
        let mut v: Vec<String> = changes
            .iter()
            .map(|c| {
                let m = &c.object().metadata;
                let what = match c {
                    Change::Added(_) => "add",
                    Change::Updated { .. } => "update",
                    Change::Deleted(_) => "delete",
                };
                format!(
                    "{what} {} {}",
                    m.name.as_deref().unwrap(),
                    m.resource_version.as_deref().unwrap()
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn apply_add_update_delete() {
        let s = Store::default();
        assert!(!s.is_synced());
        assert!(summary(&s.apply(Event::Init)).is_empty());
        assert!(summary(&s.apply(Event::InitApply(cm("a", "1")))).is_empty());
        assert!(s.is_empty(), "partial list must not be visible");
        assert_eq!(summary(&s.apply(Event::InitDone)), vec!["add a 1"]);
        assert!(s.is_synced());
        assert_eq!(
            summary(&s.apply(Event::Apply(cm("b", "2")))),
            vec!["add b 2"]
        );
        assert_eq!(
            summary(&s.apply(Event::Apply(cm("a", "3")))),
            vec!["update a 3"]
        );
        // Same resourceVersion again: no change.
        assert!(s.apply(Event::Apply(cm("a", "3"))).is_empty());
        let ch = s.apply(Event::Delete(cm("b", "4")));
        assert_eq!(
            summary(&ch),
            vec!["delete b 2"],
            "the deleted object's last cached state"
        );
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.get(&ObjectKey::namespaced("ns", "a"))
                .unwrap()
                .metadata
                .resource_version
                .as_deref(),
            Some("3")
        );
        assert_eq!(s.list_namespace("ns").len(), 1);
        assert!(s.list_namespace("other").is_empty());
    }

    #[test]
    fn relist_reports_what_changed_while_disconnected() {
        let s = Store::default();
        s.apply(Event::Init);
        for (n, rv) in [("a", "1"), ("b", "1"), ("c", "1")] {
            s.apply(Event::InitApply(cm(n, rv)));
        }
        s.apply(Event::InitDone);
        // After a 410 the watcher relists: b changed, c vanished, d appeared.
        s.apply(Event::Init);
        for (n, rv) in [("a", "1"), ("b", "7"), ("d", "8")] {
            s.apply(Event::InitApply(cm(n, rv)));
        }
        assert_eq!(s.len(), 3, "old contents stay until the relist completes");
        let ch = s.apply(Event::InitDone);
        assert_eq!(summary(&ch), vec!["add d 8", "delete c 1", "update b 7"]);
        let mut names: Vec<_> = s
            .list()
            .iter()
            .map(|o| o.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["a", "b", "d"]);
    }

    #[test]
    fn index_follows_adds_updates_deletes_and_relists() {
        let s: Store<ConfigMap> = Store::default();
        s.apply(Event::Apply(cm("early", "1")));
        let by_rv: IndexFn<ConfigMap> =
            Arc::new(|c| c.metadata.resource_version.clone().into_iter().collect());
        s.add_index("rv", Arc::clone(&by_rv));
        // A second index of that name is ignored.
        s.add_index("rv", Arc::new(|_| vec!["x".into()]));
        let names = |v: &str| {
            let mut n: Vec<String> = s
                .by_index("rv", v)
                .iter()
                .map(|o| o.metadata.name.clone().unwrap())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names("1"), vec!["early"], "objects cached before the index");
        s.apply(Event::Apply(cm("a", "1")));
        s.apply(Event::Apply(cm("b", "2")));
        assert_eq!(names("1"), vec!["a", "early"]);
        s.apply(Event::Apply(cm("a", "2")));
        assert_eq!(names("1"), vec!["early"], "an update moves the object");
        assert_eq!(names("2"), vec!["a", "b"]);
        s.apply(Event::Delete(cm("b", "2")));
        assert_eq!(names("2"), vec!["a"]);
        assert!(names("x").is_empty());
        assert!(s.by_index("nope", "1").is_empty());
        s.apply(Event::Init);
        s.apply(Event::InitApply(cm("c", "3")));
        s.apply(Event::InitApply(cm("a", "3")));
        s.apply(Event::InitDone);
        assert!(names("1").is_empty() && names("2").is_empty());
        assert_eq!(names("3"), vec!["a", "c"], "a relist rebuilds the index");
    }

    #[tokio::test]
    async fn wait_synced_returns_after_first_list() {
        let s: Store<ConfigMap> = Store::default();
        let s2 = s.clone();
        let w = tokio::spawn(async move { s2.wait_synced().await });
        s.apply(Event::Init);
        s.apply(Event::InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(5), w)
            .await
            .expect("wait_synced did not return")
            .unwrap();
    }
}
