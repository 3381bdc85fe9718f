//! The generic object machinery over [`Storage`]: create, get, list, update, patch, delete
//! and watch for every served resource, as JSON objects. [`Api`] is the in-process handle;
//! the HTTP layer is a thin translation onto it.
//!
//! This file holds the handle, its configuration, the public typed and untyped entry
//! points and the JSON helpers. The machinery is split by seam: `options` (request
//! options), `write` (create, update, patch), `read` (get, list, pagination),
//! `delete`, `watch`, `alloc` (ClusterIPs and NodePorts) and `subresources` (scale,
//! binding, eviction). What differs per kind is in the kind's strategy
//! (`crate::registry`); nothing here tests a kind by name.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::jiff;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::admission;
use crate::error::{from_storage, ApiError, Cause};
use crate::patch::{self, PatchType};
use crate::registry;
use crate::resources::{self, Registry, Resource, ResourceInfo, Sub};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::storage::{EventKind, KeyValue, Storage, StorageError};

mod alloc;
mod delete;
mod fanout;
mod options;
mod read;
mod subresources;
mod watch;
mod write;

pub use options::{DeleteOptions, ListOptions, WatchEvent, WatchEvents, WriteOptions};
use read::Filter;
pub(crate) use subresources::scale_of;

/// Settings of the object machinery.
#[derive(Debug, Clone)]
pub(crate) struct ApiConfig {
    pub service_cidr: (Ipv4Addr, u8),
    pub node_ports: (u16, u16),
    pub bookmark_interval: Duration,
    pub default_watch_timeout: Duration,
    /// Pod Security admission's defaults and exemptions.
    pub pod_security: Arc<crate::admission::PodSecurityConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 12),
            node_ports: (30000, 32767),
            bookmark_interval: Duration::from_secs(30),
            default_watch_timeout: Duration::from_secs(1800),
            pod_security: Arc::default(),
        }
    }
}

struct Inner {
    storage: Arc<dyn Storage>,
    config: ApiConfig,
    alloc: tokio::sync::Mutex<()>,
    evictions: tokio::sync::Mutex<()>,
    cache: crate::cache::WatchCache,
    fanout: fanout::Fanout,
    webhooks: crate::admission::Webhooks,
    registry: Registry,
}

/// The in-process API: every operation the REST server offers, on JSON or typed objects.
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

fn timestamp_now() -> jiff::Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

pub(crate) fn now() -> String {
    timestamp_now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn rv_of(obj: &Value) -> Option<u64> {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
}

fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    v["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(v)
}

fn encode(obj: &Value) -> Vec<u8> {
    let stored_only = obj["metadata"]
        .as_object()
        .is_none_or(|m| !m.contains_key("resourceVersion") && !m.contains_key("selfLink"));
    if stored_only {
        // Most writes (every create) carry neither: no copy of the object needed.
        return serde_json::to_vec(obj).unwrap_or_default();
    }
    let mut o = obj.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    serde_json::to_vec(&o).unwrap_or_default()
}

/// The stored bytes of an object of `info` (in its storage version).
fn encode_for(info: &ResourceInfo, obj: &Value) -> Vec<u8> {
    match info.strategy.stored_form(obj) {
        Some(stored) => encode(&stored),
        None => encode(obj),
    }
}

/// A stored object of `info` as served (in its version).
fn decode_for(info: &ResourceInfo, kv: &KeyValue) -> Result<Value, ApiError> {
    let mut v = decode(kv)?;
    info.strategy.serve_stored(&mut v);
    Ok(v)
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn to_typed<T: DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::internal(format!("decoding response: {e}")))
}

fn to_value<T: Serialize>(t: &T) -> Result<Value, ApiError> {
    serde_json::to_value(t).map_err(|e| ApiError::bad_request(format!("encoding object: {e}")))
}

/// The storage key of a stored object of `info`.
fn key_of(info: &ResourceInfo, obj: &Value) -> String {
    info.key(
        obj["metadata"]["namespace"].as_str(),
        obj["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

impl Api {
    /// Wraps a storage backend.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self::with_config(storage, ApiConfig::default())
    }

    pub(crate) fn with_config(storage: Arc<dyn Storage>, config: ApiConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                cache: crate::cache::WatchCache::new(Arc::clone(&storage), 10_000, |kv| {
                    decode(kv).ok()
                }),
                fanout: fanout::Fanout::default(),
                storage,
                config,
                alloc: tokio::sync::Mutex::new(()),
                evictions: tokio::sync::Mutex::new(()),
                webhooks: Default::default(),
                registry: Registry::new(),
            }),
        }
    }

    /// Pod Security admission's configuration.
    pub(crate) fn pod_security(&self) -> &crate::admission::PodSecurityConfig {
        &self.inner.config.pod_security
    }

    /// The admission webhooks state (`crate::admission`).
    pub(crate) fn webhooks(&self) -> &crate::admission::Webhooks {
        &self.inner.webhooks
    }

    /// The current objects of a cluster-wide resource, from the watch cache (primed on
    /// first use), else from the store.
    pub(crate) async fn current_objects(
        &self,
        info: &'static ResourceInfo,
    ) -> Result<Vec<Arc<Value>>, ApiError> {
        self.cached_objects(info, None).await
    }

    /// The objects of a resource in `namespace` (`None`: everywhere) as the watch cache
    /// holds them now, which may lag the store by the latest writes; from the store when
    /// the cache cannot answer.
    pub(crate) async fn cached_objects(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
    ) -> Result<Vec<Arc<Value>>, ApiError> {
        let cache = &self.inner.cache;
        if cache.ensure().await.is_ok() {
            if let Some((objs, _, _)) =
                cache.page(&info.prefix(namespace), None, None, &|_| true, 0)
            {
                return Ok(objs);
            }
        }
        let list = self
            .list_in(info, namespace, &ListOptions::default())
            .await?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .cloned()
            .map(Arc::new)
            .collect())
    }

    /// Waits until the watch cache reflects the store's revision `rev`, priming it if
    /// needed; false when it did not within `timeout` (then [`Api::cached_objects`] may
    /// still lag behind `rev`).
    pub(crate) async fn cache_reached(&self, rev: u64, timeout: Duration) -> bool {
        let cache = &self.inner.cache;
        cache.ensure().await.is_ok() && cache.wait_for(rev, timeout).await
    }

    /// The revision of the last change to an object of API `group` the watch cache
    /// knows of (unchanged: the group's objects are unchanged); `None` when the cache is
    /// not primed.
    pub(crate) fn group_revision(&self, group: &str) -> Option<u64> {
        self.inner.cache.group_revision(group)
    }

    /// The storage backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// Creates the built-in namespaces (`default`, `kube-system`, `kube-public`,
    /// `kube-node-lease`) and PriorityClasses (`system-node-critical`,
    /// `system-cluster-critical`) if they are missing.
    pub async fn bootstrap(&self) -> Result<(), ApiError> {
        let ns = resources::lookup("", "v1", "namespaces").expect("namespaces are served");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            match self
                .create_in(ns, None, obj, &WriteOptions::default())
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        // The built-in PriorityClasses (upstream's bootstrap-system-priority-classes).
        let pc = resources::lookup("scheduling.k8s.io", "v1", "priorityclasses").expect("served");
        for class in registry::priorityclass::SYSTEM_CLASSES {
            match self
                .create_in(pc, None, class.object(), &WriteOptions::default())
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The served resources (built-in and custom).
    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    fn resource_for<K: k8s_openapi::Resource>(&self) -> Result<Resource, ApiError> {
        self.inner
            .registry
            .lookup(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT)
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "NotFound",
                    format!("the server does not serve {}", K::URL_PATH_SEGMENT),
                )
            })
    }

    pub(crate) fn resource(&self, api_version: &str, plural: &str) -> Result<Resource, ApiError> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.inner
            .registry
            .lookup(group, version, plural)
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "NotFound",
                    format!(
                        "the server could not find the requested resource ({plural}.{api_version})"
                    ),
                )
            })
    }

    // ----- typed convenience -----

    /// Creates an object of an upstream type.
    pub async fn create<K>(&self, namespace: Option<&str>, obj: &K) -> Result<K, ApiError>
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        let info = &self.resource_for::<K>()?;
        let v = self
            .create_in(info, namespace, to_value(obj)?, &WriteOptions::default())
            .await?;
        to_typed(v)
    }

    /// Reads an object of an upstream type.
    pub async fn get<K>(&self, namespace: Option<&str>, name: &str) -> Result<K, ApiError>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        to_typed(
            self.get_in(&*self.resource_for::<K>()?, namespace, name)
                .await?,
        )
    }

    /// Lists objects of an upstream type; returns the items and the list's resourceVersion.
    pub async fn list<K>(
        &self,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<(Vec<K>, String), ApiError>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        let list = self
            .list_in(&*self.resource_for::<K>()?, namespace, opts)
            .await?;
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let items = list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(to_typed)
            .collect::<Result<_, _>>()?;
        Ok((items, rv))
    }

    /// Replaces an object (its metadata.resourceVersion, if set, must be current).
    pub async fn replace<K>(&self, namespace: Option<&str>, obj: &K) -> Result<K, ApiError>
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        let v = to_value(obj)?;
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let info = &self.resource_for::<K>()?;
        to_typed(
            self.update_in(info, namespace, &name, v, None, &WriteOptions::default())
                .await?,
        )
    }

    /// Replaces only the status of an object.
    pub async fn replace_status<K>(&self, namespace: Option<&str>, obj: &K) -> Result<K, ApiError>
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        let v = to_value(obj)?;
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let info = &self.resource_for::<K>()?;
        to_typed(
            self.update_in(
                info,
                namespace,
                &name,
                v,
                Some(Sub::Status),
                &WriteOptions::default(),
            )
            .await?,
        )
    }

    /// Deletes an object; returns it (with deletionTimestamp if finalizers hold it).
    pub async fn delete<K>(&self, namespace: Option<&str>, name: &str) -> Result<K, ApiError>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        let info = &self.resource_for::<K>()?;
        to_typed(
            self.delete_in(info, namespace, name, &DeleteOptions::default())
                .await?,
        )
    }

    /// Patches an object of an upstream type (`body` is the patch document).
    pub async fn patch<K>(
        &self,
        namespace: Option<&str>,
        name: &str,
        patch_type: PatchType,
        body: &Value,
        opts: &WriteOptions,
    ) -> Result<K, ApiError>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        let info = &self.resource_for::<K>()?;
        let raw = serde_json::to_vec(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        to_typed(
            self.patch_in(info, namespace, name, None, patch_type, &raw, opts)
                .await?,
        )
    }

    /// Deletes an object with options (grace period, propagation, preconditions).
    pub async fn delete_with<K>(
        &self,
        namespace: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<K, ApiError>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        to_typed(
            self.delete_in(&*self.resource_for::<K>()?, namespace, name, opts)
                .await?,
        )
    }

    /// Binds a pod to a node (what the scheduler does through `pods/binding`); 409 if the
    /// pod is already bound.
    pub async fn bind_pod(&self, namespace: &str, pod: &str, node: &str) -> Result<(), ApiError> {
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
        self.bind(Some(namespace), pod, binding).await.map(|_| ())
    }

    /// `namespaces/{name}/finalize`: replaces the namespace's `spec.finalizers`; once
    /// they and `metadata.finalizers` are empty, a terminating namespace is removed.
    pub async fn finalize_namespace(
        &self,
        name: &str,
        finalizers: &[&str],
    ) -> Result<Value, ApiError> {
        let info = resources::lookup("", "v1", "namespaces").expect("served");
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
            "spec": {"finalizers": finalizers}});
        self.update_in(
            info,
            None,
            name,
            body,
            Some(Sub::Finalize),
            &WriteOptions::default(),
        )
        .await
    }

    /// Watches objects of an upstream type.
    pub async fn watch<K>(
        &self,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<WatchEvents, ApiError>
    where
        K: k8s_openapi::Resource,
    {
        self.watch_in(&*self.resource_for::<K>()?, namespace, opts)
            .await
    }

    // ----- untyped, by apiVersion and plural -----

    /// Creates an object given as JSON.
    pub async fn create_value(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        self.create_in(&*self.resource(api_version, plural)?, namespace, obj, opts)
            .await
    }

    /// Reads an object as JSON.
    pub async fn get_value(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.get_in(&*self.resource(api_version, plural)?, namespace, name)
            .await
    }

    /// Lists objects as a JSON `<Kind>List`.
    pub async fn list_value(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Value, ApiError> {
        self.list_in(&*self.resource(api_version, plural)?, namespace, opts)
            .await
    }

    /// Patches an object (`patch_type` as its content type names it).
    #[allow(clippy::too_many_arguments)]
    pub async fn patch_value(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
        patch_type: PatchType,
        body: &[u8],
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let info = &self.resource(api_version, plural)?;
        self.patch_in(info, namespace, name, None, patch_type, body, opts)
            .await
    }
}
