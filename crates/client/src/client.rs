//! The blocking client and its watch iterator.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, WatchEvent as KubeEvent,
    WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::manifest;
use crate::Error;

/// A blocking, dynamic Kubernetes client: any kind, objects as JSON values.
///
/// It owns a small tokio runtime (shared by its clones and by the [`Watch`]es it
/// starts); every method blocks the calling thread. Do not call it from inside
/// an async runtime: use kube-rs directly there.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    rt: Arc<Runtime>,
    kube: kube::Client,
    default_namespace: String,
    discovery: Mutex<HashMap<(String, String), Resolved>>,
}

#[derive(Clone)]
struct Resolved {
    ar: ApiResource,
    namespaced: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("default_namespace", &self.inner.default_namespace)
            .finish_non_exhaustive()
    }
}

fn runtime() -> Result<Arc<Runtime>, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kcore-client")
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|source| Error::Runtime { source })
}

fn split_api_version(api_version: &str) -> Result<(&str, &str), Error> {
    let bad = || Error::InvalidArgument {
        what: "api_version",
        message: format!("{api_version:?} is not <version> or <group>/<version>"),
    };
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    if version.is_empty()
        || version.contains('/')
        || (api_version.contains('/') && group.is_empty())
    {
        return Err(bad());
    }
    Ok((group, version))
}

fn display_name(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Serialises `obj`, filling `apiVersion` and `kind` from `ar` where the server
/// left them out (items of a list).
fn to_value(obj: DynamicObject, ar: &ApiResource) -> Result<Value, Error> {
    let mut v = serde_json::to_value(obj).map_err(|e| Error::Transport {
        message: format!("cannot encode object: {e}"),
    })?;
    if let Value::Object(map) = &mut v {
        map.entry("apiVersion")
            .or_insert_with(|| Value::String(ar.api_version.clone()));
        map.entry("kind")
            .or_insert_with(|| Value::String(ar.kind.clone()));
    }
    Ok(v)
}

impl Client {
    /// Connects with a kubeconfig file; `None` reads `KUBECONFIG` or `~/.kube/config`.
    /// The current context picks the cluster, user and default namespace.
    pub fn from_kubeconfig(path: Option<&Path>) -> Result<Client, Error> {
        let rt = runtime()?;
        let kerr = |message: String| Error::Kubeconfig {
            path: path.map(Path::to_path_buf),
            message,
        };
        let config = rt.block_on(async {
            let opts = KubeConfigOptions::default();
            match path {
                Some(p) => {
                    let kc = Kubeconfig::read_from(p).map_err(|e| kerr(e.to_string()))?;
                    kube::Config::from_custom_kubeconfig(kc, &opts)
                        .await
                        .map_err(|e| kerr(e.to_string()))
                }
                None => kube::Config::from_kubeconfig(&opts)
                    .await
                    .map_err(|e| kerr(e.to_string())),
            }
        })?;
        Client::with_runtime(rt, config)
    }

    /// Connects with an explicit kube-rs configuration.
    pub fn from_config(config: kube::Config) -> Result<Client, Error> {
        Client::with_runtime(runtime()?, config)
    }

    fn with_runtime(rt: Arc<Runtime>, config: kube::Config) -> Result<Client, Error> {
        let default_namespace = config.default_namespace.clone();
        let kube = {
            let _guard = rt.enter();
            kube::Client::try_from(config).map_err(|e| Error::Kubeconfig {
                path: None,
                message: e.to_string(),
            })?
        };
        Ok(Client {
            inner: Arc::new(Inner {
                rt,
                kube,
                default_namespace,
                discovery: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The namespace used for namespaced objects that name none.
    pub fn default_namespace(&self) -> &str {
        &self.inner.default_namespace
    }

    /// Resolves `api_version` + `kind` to a resource with API discovery (cached).
    fn resolve(&self, api_version: &str, kind: &str) -> Result<Resolved, Error> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(r) = self
            .inner
            .discovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(r.clone());
        }
        let (group, version) = split_api_version(api_version)?;
        if kind.is_empty() {
            return Err(Error::InvalidArgument {
                what: "kind",
                message: "empty".into(),
            });
        }
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let _span = tracing::debug_span!("discover", api_version, kind).entered();
        let (ar, caps): (ApiResource, ApiCapabilities) = self
            .inner
            .rt
            .block_on(kube::discovery::pinned_kind(&self.inner.kube, &gvk))
            .map_err(|e| Error::Discovery {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
                message: e.to_string(),
            })?;
        let resolved = Resolved {
            ar,
            namespaced: matches!(caps.scope, Scope::Namespaced),
        };
        self.inner
            .discovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, resolved.clone());
        Ok(resolved)
    }

    /// The Api for one object (namespaced kinds default to the default namespace).
    fn object_api(
        &self,
        r: &Resolved,
        namespace: Option<&str>,
    ) -> (Api<DynamicObject>, Option<String>) {
        if r.namespaced {
            let ns = namespace
                .unwrap_or(&self.inner.default_namespace)
                .to_string();
            (
                Api::namespaced_with(self.inner.kube.clone(), &ns, &r.ar),
                Some(ns),
            )
        } else {
            (Api::all_with(self.inner.kube.clone(), &r.ar), None)
        }
    }

    /// The Api for a collection (namespaced kinds without a namespace: all namespaces).
    fn collection_api(&self, r: &Resolved, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) if r.namespaced => Api::namespaced_with(self.inner.kube.clone(), ns, &r.ar),
            _ => Api::all_with(self.inner.kube.clone(), &r.ar),
        }
    }

    /// Applies every object of `manifest` (multi-document YAML, JSON, a JSON
    /// array or a `*List`) with server-side apply as `field_manager`, creating
    /// objects that are absent, and returns the objects as stored, in order.
    /// Objects are applied one by one; the first failure stops the rest.
    /// Conflicts with other field managers are errors ([`Error::Conflict`]);
    /// see [`Client::apply_with`] to force.
    pub fn apply(&self, manifest: &str, field_manager: &str) -> Result<Vec<Value>, Error> {
        self.apply_with(manifest, field_manager, false)
    }

    /// Like [`Client::apply`]; `force` takes ownership of conflicting fields
    /// (`kubectl apply --server-side --force-conflicts`).
    pub fn apply_with(
        &self,
        manifest: &str,
        field_manager: &str,
        force: bool,
    ) -> Result<Vec<Value>, Error> {
        if field_manager.is_empty() {
            return Err(Error::InvalidArgument {
                what: "field_manager",
                message: "empty".into(),
            });
        }
        let docs = manifest::parse(manifest)?;
        let _span = tracing::debug_span!("apply", objects = docs.len()).entered();
        let mut params = PatchParams::apply(field_manager);
        if force {
            params = params.force();
        }
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            let obj = &doc.object;
            let api_version = obj["apiVersion"].as_str().unwrap_or_default();
            let kind = obj["kind"].as_str().unwrap_or_default();
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let r = self.resolve(api_version, kind).map_err(|e| match e {
                Error::InvalidArgument { message, .. } => Error::Manifest {
                    document: doc.document,
                    message: format!("apiVersion: {message}"),
                },
                other => other,
            })?;
            let (api, ns) = self.object_api(&r, obj["metadata"]["namespace"].as_str());
            let stored = self
                .inner
                .rt
                .block_on(api.patch(name, &params, &Patch::Apply(obj)))
                .map_err(|e| Error::from_kube(e, kind, &display_name(ns.as_deref(), name)))?;
            out.push(to_value(stored, &r.ar)?);
        }
        Ok(out)
    }

    /// Reads one object. For namespaced kinds `None` means the default namespace.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, Error> {
        let r = self.resolve(api_version, kind)?;
        let (api, ns) = self.object_api(&r, namespace);
        let obj = self
            .inner
            .rt
            .block_on(api.get(name))
            .map_err(|e| Error::from_kube(e, kind, &display_name(ns.as_deref(), name)))?;
        to_value(obj, &r.ar)
    }

    /// Lists objects, optionally filtered by a label selector (`app=web,tier!=db`).
    /// For namespaced kinds `None` lists all namespaces.
    pub fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Vec<Value>, Error> {
        let r = self.resolve(api_version, kind)?;
        let api = self.collection_api(&r, namespace);
        let mut lp = ListParams::default();
        if let Some(sel) = label_selector {
            lp = lp.labels(sel);
        }
        let _span = tracing::debug_span!("list", api_version, kind).entered();
        let list = self
            .inner
            .rt
            .block_on(api.list(&lp))
            .map_err(|e| Error::from_kube(e, kind, namespace.unwrap_or("")))?;
        list.items.into_iter().map(|o| to_value(o, &r.ar)).collect()
    }

    /// Deletes one object. For namespaced kinds `None` means the default namespace.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), Error> {
        let r = self.resolve(api_version, kind)?;
        let (api, ns) = self.object_api(&r, namespace);
        self.inner
            .rt
            .block_on(api.delete(name, &DeleteParams::default()))
            .map_err(|e| Error::from_kube(e, kind, &display_name(ns.as_deref(), name)))?;
        Ok(())
    }

    /// Watches a collection. The stream starts with an `Added` event for each
    /// existing object, then follows changes (re-watching from the last
    /// resource version when the server closes a watch) until `timeout` passes
    /// (`None`: until dropped) or an error, which is the last item.
    /// For namespaced kinds `None` watches all namespaces.
    pub fn watch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        label_selector: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<Watch, Error> {
        let r = self.resolve(api_version, kind)?;
        let api = self.collection_api(&r, namespace);
        let (tx, rx) = mpsc::channel(64);
        let selector = label_selector.map(str::to_string);
        let kind = kind.to_string();
        let ar = r.ar.clone();
        let task = self.inner.rt.spawn(async move {
            let run = run_watch(api, ar, kind, selector, tx);
            match timeout {
                Some(t) => {
                    let _ = tokio::time::timeout(t, run).await;
                }
                None => run.await,
            }
        });
        Ok(Watch {
            rx,
            task,
            _rt: self.inner.rt.clone(),
        })
    }
}

async fn run_watch(
    api: Api<DynamicObject>,
    ar: ApiResource,
    kind: String,
    selector: Option<String>,
    tx: mpsc::Sender<Result<WatchEvent, Error>>,
) {
    let _span = tracing::debug_span!("watch", kind = %kind);
    let mut lp = ListParams::default();
    if let Some(s) = &selector {
        lp = lp.labels(s);
    }
    let list = match api.list(&lp).await {
        Ok(l) => l,
        Err(e) => {
            let _ = tx.send(Err(Error::from_kube(e, &kind, ""))).await;
            return;
        }
    };
    let mut rv = list.metadata.resource_version.clone().unwrap_or_default();
    for obj in list.items {
        let ev = to_value(obj, &ar).map(|object| WatchEvent {
            kind: WatchEventKind::Added,
            object,
        });
        if tx.send(ev).await.is_err() {
            return;
        }
    }
    loop {
        let mut wp = WatchParams::default().timeout(290);
        if let Some(s) = &selector {
            wp = wp.labels(s);
        }
        let stream = match api.watch(&wp, &rv).await {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(Error::from_kube(e, &kind, ""))).await;
                return;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let (ek, obj) = match item {
                Ok(KubeEvent::Added(o)) => (WatchEventKind::Added, o),
                Ok(KubeEvent::Modified(o)) => (WatchEventKind::Modified, o),
                Ok(KubeEvent::Deleted(o)) => (WatchEventKind::Deleted, o),
                Ok(KubeEvent::Bookmark(b)) => {
                    rv = b.metadata.resource_version;
                    continue;
                }
                Ok(KubeEvent::Error(status)) => {
                    let _ = tx.send(Err(Error::from_status(*status, &kind, ""))).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(Error::from_kube(e, &kind, ""))).await;
                    return;
                }
            };
            if let Some(v) = &obj.metadata.resource_version {
                rv.clone_from(v);
            }
            let ev = to_value(obj, &ar).map(|object| WatchEvent { kind: ek, object });
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    }
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WatchEventKind {
    /// The object was created (or existed when the watch started).
    Added,
    /// The object changed.
    Modified,
    /// The object was deleted; the event carries its last state.
    Deleted,
}

impl WatchEventKind {
    /// The Kubernetes wire name: `ADDED`, `MODIFIED` or `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchEventKind::Added => "ADDED",
            WatchEventKind::Modified => "MODIFIED",
            WatchEventKind::Deleted => "DELETED",
        }
    }
}

impl std::fmt::Display for WatchEventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change seen by a [`Watch`].
#[derive(Clone, Debug, PartialEq)]
pub struct WatchEvent {
    /// What happened.
    pub kind: WatchEventKind,
    /// The object (after the change; its last state for `Deleted`).
    pub object: Value,
}

/// A running watch: a blocking iterator of events. It ends when the timeout
/// passes or after an error item; dropping it stops the watch.
pub struct Watch {
    rx: mpsc::Receiver<Result<WatchEvent, Error>>,
    task: JoinHandle<()>,
    _rt: Arc<Runtime>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Iterator for Watch {
    type Item = Result<WatchEvent, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.blocking_recv()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_split() {
        assert_eq!(split_api_version("v1").unwrap(), ("", "v1"));
        assert_eq!(split_api_version("apps/v1").unwrap(), ("apps", "v1"));
        for bad in ["", "/v1", "apps/", "a/b/c"] {
            assert!(
                matches!(split_api_version(bad), Err(Error::InvalidArgument { .. })),
                "{bad:?}"
            );
        }
    }
}
