//! The generic object machinery over [`Storage`]: create, get, list, update, patch, delete
//! and watch for every served resource, as JSON objects. [`Api`] is the in-process handle;
//! the HTTP layer is a thin translation onto it.

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

use crate::error::{from_storage, ApiError, Cause};
use crate::patch::{self, PatchType};
use crate::registry;
use crate::resources::{self, ResourceInfo, Sub};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::storage::{EventKind, KeyValue, Storage, StorageError};

/// Options of a list or watch request (the `?` parameters of the same names).
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub label_selector: Option<String>,
    /// `fieldSelector`.
    pub field_selector: Option<String>,
    /// `limit`: at most this many items per page.
    pub limit: Option<usize>,
    /// `continue`: the token from the previous page.
    pub continue_token: Option<String>,
    /// `resourceVersion`: for a watch, the revision to start after.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
    /// `allowWatchBookmarks`.
    pub allow_watch_bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<u64>,
}

/// Options of a write (`?dryRun=All&fieldManager=..&force=true`).
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Validate and default but store nothing.
    pub dry_run: bool,
    /// The actor, recorded in managedFields by server-side apply.
    pub field_manager: Option<String>,
    /// Server-side apply: take ownership of conflicting fields.
    pub force: bool,
}

/// Options of a delete (query parameters or a `DeleteOptions` body).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`: `Orphan`, `Background` or `Foreground`.
    pub propagation_policy: Option<String>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// One watch event: `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// The event type.
    pub kind: &'static str,
    /// The object (a `Status` for `ERROR`).
    pub object: Value,
}

impl WatchEvent {
    /// The event as a JSON line body: `{"type":..,"object":..}`.
    pub fn to_json(&self) -> Value {
        json!({"type": self.kind, "object": self.object})
    }
}

/// A stream of watch events; it ends at the timeout or after an `ERROR`.
pub type WatchEvents = BoxStream<'static, WatchEvent>;

/// Settings of the object machinery.
#[derive(Debug, Clone)]
pub(crate) struct ApiConfig {
    pub service_cidr: (Ipv4Addr, u8),
    pub node_ports: (u16, u16),
    pub bookmark_interval: Duration,
    pub default_watch_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 12),
            node_ports: (30000, 32767),
            bookmark_interval: Duration::from_secs(30),
            default_watch_timeout: Duration::from_secs(1800),
        }
    }
}

struct Inner {
    storage: Arc<dyn Storage>,
    config: ApiConfig,
    alloc: tokio::sync::Mutex<()>,
    evictions: tokio::sync::Mutex<()>,
    cache: crate::cache::WatchCache,
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

fn resource_for<K: k8s_openapi::Resource>() -> Result<&'static ResourceInfo, ApiError> {
    resources::lookup(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT).ok_or_else(|| {
        ApiError::new(
            404,
            "NotFound",
            format!("the server does not serve {}", K::URL_PATH_SEGMENT),
        )
    })
}

fn to_typed<T: DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::internal(format!("decoding response: {e}")))
}

fn to_value<T: Serialize>(t: &T) -> Result<Value, ApiError> {
    serde_json::to_value(t).map_err(|e| ApiError::bad_request(format!("encoding object: {e}")))
}

/// The continuation token: the last key returned and the list's revision.
fn encode_continue(key: &str, rv: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"k": key, "rv": rv}).to_string())
}

fn decode_continue(tok: &str) -> Result<(String, Option<u64>), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {tok:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let key = v["k"].as_str().map(str::to_owned).ok_or_else(bad)?;
    Ok((key, v["rv"].as_u64().filter(|r| *r > 0)))
}

/// Which state of the store a list reads (`resourceVersion` + `resourceVersionMatch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadAt {
    /// Unset resourceVersion: the latest state (a consistent read).
    Latest,
    /// `resourceVersion=0`: any state, the cache's as it is.
    Any,
    /// `resourceVersion=N` (NotOlderThan): a state at least as new as N.
    NotOlderThan(u64),
    /// `resourceVersionMatch=Exact` or a continue token: exactly revision N.
    Exact(u64),
}

impl ReadAt {
    fn of(opts: &ListOptions, token_rv: Option<u64>) -> Result<Self, ApiError> {
        let rv = opts.resource_version.as_deref().filter(|s| !s.is_empty());
        let m = opts
            .resource_version_match
            .as_deref()
            .filter(|s| !s.is_empty());
        let parse = |s: &str| {
            s.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {s:?}: not a number"))
            })
        };
        if let Some(m) = m {
            if !matches!(m, "Exact" | "NotOlderThan") {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch {m:?} is not supported: supported values: \"Exact\", \"NotOlderThan\""
                )));
            }
            if rv.is_none() {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if token_rv.is_some() {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if m == "Exact" && rv == Some("0") {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if let Some(t) = token_rv {
            return Ok(Self::Exact(t));
        }
        Ok(match (rv, m) {
            (None, _) => Self::Latest,
            (Some("0"), _) => Self::Any,
            (Some(v), Some("Exact")) => Self::Exact(parse(v)?),
            (Some(v), _) => Self::NotOlderThan(parse(v)?),
        })
    }
}

fn too_large(rv: u64, current: u64) -> ApiError {
    let mut e = ApiError::new(
        504,
        "Timeout",
        format!("Too large resource version: {rv}, current: {current}"),
    );
    e.details = Some(
        json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
    );
    e
}

#[derive(Clone)]
struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn new(opts: &ListOptions) -> Result<Self, ApiError> {
        Ok(Self {
            labels: LabelSelector::parse(opts.label_selector.as_deref().unwrap_or(""))?,
            fields: FieldSelector::parse(opts.field_selector.as_deref().unwrap_or(""))?,
        })
    }
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

/// The storage key of a stored object of `info`.
fn key_of(info: &ResourceInfo, obj: &Value) -> String {
    info.key(
        obj["metadata"]["namespace"].as_str(),
        obj["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// An int-or-percent of `total`, percentages rounded up (upstream's
/// `GetScaledValueFromIntOrPercent(.., true)`).
fn scaled_up(v: &Value, total: usize) -> Option<usize> {
    if let Some(n) = v.as_u64() {
        return usize::try_from(n).ok();
    }
    let pct: usize = v.as_str()?.strip_suffix('%')?.parse().ok()?;
    Some((pct * total).div_ceil(100))
}

/// The healthy pods a PodDisruptionBudget spec requires when `expected` pods match it.
fn budget(spec: &Value, expected: usize) -> usize {
    if let Some(max) = scaled_up(&spec["maxUnavailable"], expected) {
        expected.saturating_sub(max)
    } else {
        scaled_up(&spec["minAvailable"], expected).unwrap_or(0)
    }
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
                storage,
                config,
                alloc: tokio::sync::Mutex::new(()),
                evictions: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The storage backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// Creates the built-in namespaces (`default`, `kube-system`, `kube-public`,
    /// `kube-node-lease`) if they are missing.
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
        Ok(())
    }

    pub(crate) fn resource(
        api_version: &str,
        plural: &str,
    ) -> Result<&'static ResourceInfo, ApiError> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        resources::lookup(group, version, plural).ok_or_else(|| {
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
        let info = resource_for::<K>()?;
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
        to_typed(self.get_in(resource_for::<K>()?, namespace, name).await?)
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
        let list = self.list_in(resource_for::<K>()?, namespace, opts).await?;
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
        let info = resource_for::<K>()?;
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
        let info = resource_for::<K>()?;
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
        let info = resource_for::<K>()?;
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
        let info = resource_for::<K>()?;
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
            self.delete_in(resource_for::<K>()?, namespace, name, opts)
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
        self.watch_in(resource_for::<K>()?, namespace, opts).await
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
        self.create_in(Self::resource(api_version, plural)?, namespace, obj, opts)
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
        self.get_in(Self::resource(api_version, plural)?, namespace, name)
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
        self.list_in(Self::resource(api_version, plural)?, namespace, opts)
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
        let info = Self::resource(api_version, plural)?;
        self.patch_in(info, namespace, name, None, patch_type, body, opts)
            .await
    }

    // ----- the machinery -----

    /// After a namespace write: waits until the watch cache (if primed) shows it, so that
    /// [`Self::namespace_exists`], which trusts the cache, never misses a deletion or a
    /// deletion mark this server acknowledged (the kinds whose strategy asks for it).
    /// Other kinds return at once.
    async fn settle(&self, info: &ResourceInfo, rev: u64) {
        let cache = &self.inner.cache;
        if registry::strategy(info.kind).settle_in_cache()
            && cache.revision().is_some()
            && !cache.wait_for(rev, Duration::from_secs(3)).await
        {
            tracing::warn!(
                rev,
                "the watch cache did not catch up with a namespace write"
            );
        }
    }

    async fn namespace_exists(&self, ns: &str) -> Result<(), ApiError> {
        let info = resources::lookup("", "v1", "namespaces").expect("served");
        let key = info.key(None, ns);
        let terminating = |obj: &Value| obj["metadata"]["deletionTimestamp"].is_string();
        // Like upstream's NamespaceLifecycle admission, which reads an informer: a
        // namespace the watch cache holds and that is not being deleted is taken as it
        // is, without a storage read (under many writers the cache is always a batch
        // behind the store, so waiting for it to be fresh would mean a read and a decode
        // per create). Deleting a namespace first marks it, and the cache sees the mark
        // within a batch. A namespace the cache lacks or saw marked is looked up. The
        // first check primes the cache (a server taking writes has watchers anyway).
        let cache = &self.inner.cache;
        if let Err(e) = cache.ensure().await {
            tracing::debug!(error = %e, "watch cache unavailable; reading the namespace");
        }
        let obj = match cache.get(&key) {
            Some(Some(obj)) if !terminating(&obj) => return Ok(()),
            _ => self
                .inner
                .storage
                .get(&key)
                .await
                .map_err(|e| from_storage(e, "", "namespaces", ns))?
                .map(|kv| decode(&kv))
                .transpose()?,
        };
        match obj {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(obj) if terminating(&obj) => Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    fn check_type(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let api_version = info.api_version();
        match obj["apiVersion"].as_str() {
            None | Some("") => obj["apiVersion"] = json!(api_version),
            Some(v) if v == api_version => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )))
            }
        }
        match obj["kind"].as_str() {
            None | Some("") => obj["kind"] = json!(info.kind),
            Some(k) if k == info.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    info.kind
                )))
            }
        }
        Ok(())
    }

    fn normalize_and_validate(
        info: &ResourceInfo,
        obj: Value,
        old: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let norm = (info.normalize)(obj).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: {e}",
                info.kind, info.version, info.kind
            ))
        })?;
        let causes = registry::validate(info.kind, &norm, old);
        if !causes.is_empty() {
            return Err(ApiError::invalid(info.group, info.kind, &name, causes));
        }
        Ok(norm)
    }

    fn resolve_namespace(
        info: &ResourceInfo,
        namespace: Option<&str>,
        obj: &mut Value,
    ) -> Result<Option<String>, ApiError> {
        if !info.namespaced {
            meta_mut(obj).remove("namespace");
            return Ok(None);
        }
        let in_obj = obj["metadata"]["namespace"]
            .as_str()
            .filter(|s| !s.is_empty());
        let ns = match (namespace, in_obj) {
            (Some(url), Some(body)) if url != body => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            (Some(url), _) => url.to_owned(),
            (None, Some(body)) => body.to_owned(),
            (None, None) => "default".to_owned(),
        };
        meta_mut(obj).insert("namespace".into(), json!(ns));
        Ok(Some(ns))
    }

    async fn allocate_service(&self, obj: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
        let spec = &mut obj["spec"];
        if !spec.is_object() {
            return Ok(());
        }
        let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_owned();
        if let Some(old) = old {
            let os = &old["spec"];
            if spec["clusterIP"].as_str().is_none_or(str::is_empty) && os["clusterIP"].is_string() {
                spec["clusterIP"] = os["clusterIP"].clone();
                spec["clusterIPs"] = os["clusterIPs"].clone();
            }
            if let (Some(ports), Some(old_ports)) =
                (spec["ports"].as_array_mut(), os["ports"].as_array())
            {
                for p in ports.iter_mut().filter(|p| p["nodePort"].is_null()) {
                    if let Some(op) = old_ports
                        .iter()
                        .find(|op| op["port"] == p["port"] && op["nodePort"].is_number())
                    {
                        p["nodePort"] = op["nodePort"].clone();
                    }
                }
            }
        }
        if ty == "ExternalName" {
            return Ok(());
        }
        let need_ip = spec["clusterIP"].as_str().is_none_or(str::is_empty);
        let need_ports = matches!(ty.as_str(), "NodePort" | "LoadBalancer")
            && spec["ports"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["nodePort"].is_null()));
        if need_ip || need_ports {
            let _guard = self.inner.alloc.lock().await;
            let info = resources::lookup("", "v1", "services").expect("served");
            let all = self
                .inner
                .storage
                .range(&info.prefix(None), None, 0)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let mut ips = std::collections::HashSet::new();
            let mut node_ports = std::collections::HashSet::new();
            for kv in &all.kvs {
                let s: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                for ip in s["spec"]["clusterIPs"].as_array().into_iter().flatten() {
                    ips.insert(ip.as_str().unwrap_or_default().to_owned());
                }
                if let Some(ip) = s["spec"]["clusterIP"].as_str() {
                    ips.insert(ip.to_owned());
                }
                for p in s["spec"]["ports"].as_array().into_iter().flatten() {
                    if let Some(n) = p["nodePort"].as_u64() {
                        node_ports.insert(n);
                    }
                }
            }
            if need_ip {
                let (base, bits) = self.inner.config.service_cidr;
                let size = 1u32 << (32 - u32::from(bits));
                let base = u32::from(base);
                // .0 is the network, .1 is kept for the `kubernetes` service.
                let ip = (2..size - 1)
                    .map(|i| Ipv4Addr::from(base + i).to_string())
                    .find(|ip| !ips.contains(ip))
                    .ok_or_else(|| ApiError::internal("the service IP range is full"))?;
                spec["clusterIP"] = json!(ip);
                spec["clusterIPs"] = json!([ip]);
            }
            if need_ports {
                let (lo, hi) = self.inner.config.node_ports;
                for p in spec["ports"].as_array_mut().into_iter().flatten() {
                    if p["nodePort"].is_null() {
                        let n = (u64::from(lo)..=u64::from(hi))
                            .find(|n| !node_ports.contains(n))
                            .ok_or_else(|| ApiError::internal("the node port range is full"))?;
                        node_ports.insert(n);
                        p["nodePort"] = json!(n);
                    }
                }
            }
        }
        if spec["clusterIPs"].is_null() && spec["clusterIP"].is_string() {
            spec["clusterIPs"] = json!([spec["clusterIP"].clone()]);
        }
        Ok(())
    }

    pub(crate) async fn create_in(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        Self::check_type(info, &mut obj)?;
        let ns = Self::resolve_namespace(info, namespace, &mut obj)?;
        let meta = meta_mut(&mut obj);
        if meta
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => {
                    let name = format!("{g}{}", random_suffix());
                    meta.insert("name".into(), json!(name));
                }
                _ => {
                    return Err(ApiError::invalid(
                        info.group,
                        info.kind,
                        "",
                        vec![Cause::required("metadata.name")],
                    ))
                }
            }
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.insert("generation".into(), json!(1));
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(k);
        }
        let strategy = registry::strategy(info.kind);
        strategy.prepare_for_create(&mut obj);
        strategy.defaults(&mut obj);
        if strategy.allocates_service_addresses() {
            self.allocate_service(&mut obj, None).await?;
        }
        let obj = Self::normalize_and_validate(info, obj, None)?;
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some(ns) = &ns {
            self.namespace_exists(ns).await?;
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let key = info.key(ns.as_deref(), &name);
        let kv = tracing::Instrument::instrument(
            self.inner.storage.create(&key, encode(&obj)),
            tracing::debug_span!("create", %key),
        )
        .await
        .map_err(|e| from_storage(e, info.group, info.plural, &name))?;
        let mut out = obj;
        out["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
        Ok(out)
    }

    pub(crate) async fn get_in(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        Ok(self.get_kv(info, namespace, name).await?.0)
    }

    async fn get_kv(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(Value, u64), ApiError> {
        let ns = if info.namespaced {
            Some(namespace.unwrap_or("default"))
        } else {
            None
        };
        let kv = self
            .inner
            .storage
            .get(&info.key(ns, name))
            .await
            .map_err(|e| from_storage(e, info.group, info.plural, name))?
            .ok_or_else(|| ApiError::not_found(info.group, info.plural, name))?;
        Ok((decode(&kv)?, kv.mod_revision))
    }

    pub(crate) async fn list_in(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Value, ApiError> {
        let filter = Filter::new(opts)?;
        let prefix = info.prefix(namespace.filter(|_| info.namespaced));
        let limit = opts.limit.unwrap_or(0);
        let (start, token_rv) = match &opts.continue_token {
            Some(t) if !t.is_empty() => {
                let (k, rv) = decode_continue(t)?;
                (Some(k), rv)
            }
            _ => (None, None),
        };
        let at = ReadAt::of(opts, token_rv)?;
        let keep = |o: &Value| filter.matches(o);
        let (objs, more, rev) = match self
            .cached_page(&prefix, at, start.as_deref(), &keep, limit)
            .await?
        {
            Some(found) => found,
            None => {
                let (all, rev) = self.snapshot_from_storage(&prefix, at).await?;
                // Objects are in key order: page after the continue key.
                let mut rest = all
                    .into_iter()
                    .filter(|o| {
                        start
                            .as_deref()
                            .is_none_or(|s| key_of(info, o).as_str() > s)
                    })
                    .filter(|o| filter.matches(o));
                let mut page = Vec::new();
                for o in rest.by_ref() {
                    page.push(o);
                    if limit > 0 && page.len() == limit {
                        break;
                    }
                }
                let more = limit > 0 && page.len() == limit && rest.next().is_some();
                (page, more, rev)
            }
        };
        let items: Vec<Value> = objs.iter().map(|o| (**o).clone()).collect();
        let next = more.then(|| {
            let last = items.last().map(|o| key_of(info, o)).unwrap_or_default();
            encode_continue(&last, rev)
        });
        Ok(self.list_object(info, items, rev, next))
    }

    /// The objects under `prefix` from the watch cache, per `at`; `None` when the cache
    /// cannot answer (not primed, or the history back to `at` is gone).
    async fn cached_page(
        &self,
        prefix: &str,
        at: ReadAt,
        start_after: Option<&str>,
        keep: &(dyn Fn(&Value) -> bool + Sync),
        limit: usize,
    ) -> Result<Option<(Vec<crate::cache::Obj>, bool, u64)>, ApiError> {
        let cache = &self.inner.cache;
        if let Err(e) = cache.ensure().await {
            tracing::debug!(error = %e, "watch cache unavailable; listing from storage");
            return Ok(None);
        }
        let wait = |rev: u64| async move {
            if cache.wait_for(rev, Duration::from_secs(3)).await {
                Ok(())
            } else {
                Err(too_large(rev, cache.revision().unwrap_or(0)))
            }
        };
        match at {
            // "Any" may be served from any state, but a cache behind an acknowledged
            // write makes clients such as kubectl's `rollout status` (whose first list
            // is resourceVersion=0) see a finished rollout that has not started: serve
            // it, like an unset resourceVersion, once the cache has caught up.
            ReadAt::Any | ReadAt::Latest => {
                // A consistent read: the cache must have caught up with the store.
                let current = self
                    .inner
                    .storage
                    .revision()
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?
                    .current;
                if !cache.wait_for(current, Duration::from_secs(3)).await {
                    return Ok(None);
                }
            }
            ReadAt::NotOlderThan(rev) | ReadAt::Exact(rev) => wait(rev).await?,
        }
        let exact = match at {
            ReadAt::Exact(rev) => Some(rev),
            _ => None,
        };
        Ok(cache.page(prefix, exact, start_after, keep, limit))
    }

    /// The objects under `prefix` read from the store; for an exact revision, the
    /// current state with the changes after it undone (from the store's history).
    async fn snapshot_from_storage(
        &self,
        prefix: &str,
        at: ReadAt,
    ) -> Result<(Vec<crate::cache::Obj>, u64), ApiError> {
        let storage = &self.inner.storage;
        let internal = |e: StorageError| ApiError::internal(e.to_string());
        let page = storage.range(prefix, None, 0).await.map_err(internal)?;
        let mut objs: std::collections::BTreeMap<String, Value> = page
            .kvs
            .iter()
            .map(|kv| Ok((kv.key.clone(), decode(kv)?)))
            .collect::<Result<_, ApiError>>()?;
        let target = match at {
            ReadAt::NotOlderThan(rev) if rev > page.revision => {
                return Err(too_large(rev, page.revision))
            }
            ReadAt::Exact(rev) if rev > page.revision => return Err(too_large(rev, page.revision)),
            ReadAt::Exact(rev) if rev < page.revision => rev,
            _ => return Ok((objs.into_values().map(Arc::new).collect(), page.revision)),
        };
        // Every revision is one write, so the history after `target` up to the range's
        // revision is complete; the first change to each key holds its state at `target`.
        let mut history = storage.watch("", target).await.map_err(|e| match e {
            StorageError::Compacted {
                requested,
                compacted,
            } => ApiError::gone(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            e => ApiError::internal(e.to_string()),
        })?;
        let mut seen = std::collections::HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ev = tokio::time::timeout_at(deadline, history.next())
                .await
                .map_err(|_| ApiError::internal("reading the store's history timed out"))?;
            let Some(ev) = ev else { break };
            let ev = ev.map_err(internal)?;
            if ev.revision() > page.revision {
                break;
            }
            let key = ev.kv.key.clone();
            if key.starts_with(prefix) && seen.insert(key.clone()) {
                match &ev.prev {
                    Some(p) => {
                        objs.insert(key, decode(p)?);
                    }
                    None => {
                        objs.remove(&key);
                    }
                }
            }
            if ev.revision() == page.revision {
                break;
            }
        }
        Ok((objs.into_values().map(Arc::new).collect(), target))
    }

    fn list_object(
        &self,
        info: &ResourceInfo,
        items: Vec<Value>,
        rv: u64,
        cont: Option<String>,
    ) -> Value {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if let Some(c) = cont {
            meta["continue"] = json!(c);
        }
        json!({
            "kind": info.list_kind,
            "apiVersion": info.api_version(),
            "metadata": meta,
            "items": items,
        })
    }

    /// Computes and stores the new state of an existing object. `incoming` is the full new
    /// object; for `sub == Some(Status)` only its status is taken.
    #[allow(clippy::too_many_arguments)]
    async fn write_update(
        &self,
        info: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
        old: &Value,
        old_rev: u64,
        mut incoming: Value,
        sub: Option<Sub>,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        Self::check_type(info, &mut incoming)?;
        if let Some(n) = incoming["metadata"]["name"].as_str() {
            if n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        let strategy = registry::strategy(info.kind);
        let mut new = match sub {
            Some(Sub::Status) => {
                let mut n = old.clone();
                n["status"] = incoming["status"].clone();
                n
            }
            Some(Sub::Finalize) => {
                // namespaces/finalize: only spec.finalizers changes.
                let mut n = old.clone();
                let f = &incoming["spec"]["finalizers"];
                n["spec"]["finalizers"] = if f.is_null() { json!([]) } else { f.clone() };
                n
            }
            _ => {
                let mut n = incoming;
                if info.has(Sub::Status) && strategy.update_resets_status() {
                    n["status"] = old["status"].clone();
                }
                strategy.prepare_for_update(&mut n, old);
                n
            }
        };
        {
            let om = &old["metadata"];
            let m = meta_mut(&mut new);
            for k in [
                "uid",
                "creationTimestamp",
                "namespace",
                "name",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match om.get(k) {
                    Some(v) => m.insert(k.into(), v.clone()),
                    None => m.remove(k),
                };
            }
            m.insert("generation".into(), om["generation"].clone());
            if m.get("managedFields").is_none_or(Value::is_null) {
                if let Some(mf) = om.get("managedFields") {
                    m.insert("managedFields".into(), mf.clone());
                }
            }
            m.remove("resourceVersion");
        }
        if new["status"].is_null() {
            new.as_object_mut().map(|o| o.remove("status"));
        }
        strategy.defaults(&mut new);
        if strategy.allocates_service_addresses() {
            self.allocate_service(&mut new, Some(old)).await?;
        }
        let mut new = Self::normalize_and_validate(info, new, Some(old))?;
        if strategy.spec_of(&new) != strategy.spec_of(old) {
            tracing::trace!(old = %strategy.spec_of(old), new = %strategy.spec_of(&new), "spec changed");
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = json!(g);
        }
        let mut old_cmp = old.clone();
        meta_mut(&mut old_cmp).remove("resourceVersion");
        if new == old_cmp {
            return Ok(old.clone());
        }
        if opts.dry_run {
            return Ok(new);
        }
        let key = info.key(ns, name);
        let finalized = new["metadata"]["deletionTimestamp"].is_string()
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty())
            && !strategy.has_kind_finalizers(&new);
        if finalized {
            let kv = self
                .inner
                .storage
                .delete(&key, Some(old_rev))
                .await
                .map_err(|e| from_storage(e, info.group, info.plural, name))?;
            self.settle(info, kv.mod_revision).await;
            let mut out = new;
            out["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
            return Ok(out);
        }
        let kv = self
            .inner
            .storage
            .update(&key, encode(&new), Some(old_rev))
            .await
            .map_err(|e| from_storage(e, info.group, info.plural, name))?;
        self.settle(info, kv.mod_revision).await;
        let mut out = new;
        out["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
        Ok(out)
    }

    /// PUT: replace an object, or its status.
    pub(crate) async fn update_in(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        obj: Value,
        sub: Option<Sub>,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let ns = if info.namespaced {
            Some(namespace.unwrap_or("default"))
        } else {
            None
        };
        let given_rv = rv_of(&obj);
        if obj["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
            && given_rv.is_none()
        {
            return Err(ApiError::bad_request("invalid resourceVersion"));
        }
        loop {
            let (old, old_rev) = match self.get_kv(info, ns, name).await {
                Ok(x) => x,
                Err(e) if e.code == 404 && info.create_on_update && sub.is_none() => {
                    let mut obj = obj;
                    meta_mut(&mut obj).remove("resourceVersion");
                    return self.create_in(info, ns, obj, opts).await;
                }
                Err(e) => return Err(e),
            };
            if given_rv.is_some_and(|rv| rv != old_rev) {
                return Err(ApiError::modified(info.group, info.plural, name));
            }
            match self
                .write_update(info, ns, name, &old, old_rev, obj.clone(), sub, opts)
                .await
            {
                Err(e) if e.reason == "Conflict" && given_rv.is_none() => continue,
                r => return r,
            }
        }
    }

    /// PATCH an object or one of its subresources.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn patch_in(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        sub: Option<Sub>,
        patch_type: PatchType,
        body: &[u8],
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let ns = if info.namespaced {
            Some(namespace.unwrap_or("default"))
        } else {
            None
        };
        let manager = opts.field_manager.clone();
        if patch_type == PatchType::Apply && manager.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "PATCH with apply patch type requires fieldManager to be set",
            ));
        }
        loop {
            let (old, old_rev) = match self.get_kv(info, ns, name).await {
                Ok(x) => x,
                Err(e) if e.code == 404 && patch_type == PatchType::Apply && sub.is_none() => {
                    let applied = patch::parse_apply(body)?;
                    let obj =
                        patch::apply_create(applied, manager.as_deref().unwrap_or_default(), info)?;
                    if obj["metadata"]["name"].as_str().is_some_and(|n| n != name) {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({}) does not match the name on the URL ({name})",
                            obj["metadata"]["name"].as_str().unwrap_or_default()
                        )));
                    }
                    match self.create_in(info, ns, obj, opts).await {
                        Err(e) if e.reason == "AlreadyExists" => continue,
                        r => return r,
                    }
                }
                Err(e) => return Err(e),
            };
            let base = match sub {
                Some(Sub::Scale) => scale_of(info, &old),
                _ => old.clone(),
            };
            let patched = patch::apply_patch(patch_type, &base, body, info, opts)?;
            let given_rv = rv_of(&patched).filter(|rv| *rv != old_rev);
            if given_rv.is_some() {
                return Err(ApiError::modified(info.group, info.plural, name));
            }
            let result = match sub {
                Some(Sub::Scale) => {
                    let mut new = old.clone();
                    new["spec"]["replicas"] = patched["spec"]["replicas"].clone();
                    self.write_update(info, ns, name, &old, old_rev, new, None, opts)
                        .await
                        .map(|o| scale_of(info, &o))
                }
                _ => {
                    self.write_update(info, ns, name, &old, old_rev, patched, sub, opts)
                        .await
                }
            };
            match result {
                Err(e) if e.reason == "Conflict" && e.message.contains("has been modified") => {
                    continue
                }
                r => return r,
            }
        }
    }

    /// Reads the autoscaling/v1 Scale of an object.
    pub(crate) async fn get_scale(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        Ok(scale_of(info, &self.get_in(info, namespace, name).await?))
    }

    /// PUT of a Scale.
    pub(crate) async fn update_scale(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        scale: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let ns = if info.namespaced {
            Some(namespace.unwrap_or("default"))
        } else {
            None
        };
        let replicas = scale["spec"]["replicas"].clone();
        if replicas.as_i64().is_none_or(|r| r < 0) {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![Cause::invalid(
                    "spec.replicas",
                    &replicas,
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let given_rv = rv_of(&scale);
        loop {
            let (old, old_rev) = self.get_kv(info, ns, name).await?;
            if given_rv.is_some_and(|rv| rv != old_rev) {
                return Err(ApiError::modified(info.group, info.plural, name));
            }
            let mut new = old.clone();
            new["spec"]["replicas"] = replicas.clone();
            match self
                .write_update(info, ns, name, &old, old_rev, new, None, opts)
                .await
            {
                Err(e) if e.reason == "Conflict" && given_rv.is_none() => continue,
                r => return r.map(|o| scale_of(info, &o)),
            }
        }
    }

    /// POST pods/<name>/binding (or a Binding to pods/binding): sets spec.nodeName.
    pub(crate) async fn bind(
        &self,
        namespace: Option<&str>,
        name: &str,
        binding: Value,
    ) -> Result<Value, ApiError> {
        let info = resources::lookup("", "v1", "pods").expect("served");
        let ns = namespace.unwrap_or("default");
        let target = binding["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if target.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                name,
                vec![Cause::required("target.name")],
            ));
        }
        loop {
            let (old, old_rev) = self.get_kv(info, Some(ns), name).await?;
            if let Some(cur) = old["spec"]["nodeName"].as_str().filter(|s| !s.is_empty()) {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    &format!("pod {name} is already assigned to node {cur:?}"),
                ));
            }
            if old["metadata"]["deletionTimestamp"].is_string() {
                return Err(ApiError::conflict("", "pods", name, "pod is being deleted"));
            }
            let mut new = old.clone();
            new["spec"]["nodeName"] = json!(target);
            let conds = new["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conds: Vec<Value> = conds
                .into_iter()
                .filter(|c| c["type"] != "PodScheduled")
                .collect();
            conds.push(
                json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}),
            );
            new["status"]["conditions"] = json!(conds);
            // Binding writes spec and status at once, bypassing the status reset.
            let key = info.key(Some(ns), name);
            meta_mut(&mut new).remove("resourceVersion");
            match self
                .inner
                .storage
                .update(&key, encode(&new), Some(old_rev))
                .await
            {
                Ok(_) => {
                    return Ok(
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                    )
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(from_storage(e, "", "pods", name)),
            }
        }
    }

    /// DELETE one object.
    pub(crate) async fn delete_in(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let ns = if info.namespaced {
            Some(namespace.unwrap_or("default"))
        } else {
            None
        };
        loop {
            let (old, old_rev) = self.get_kv(info, ns, name).await?;
            if let Some(uid) = &opts.precondition_uid {
                if old["metadata"]["uid"].as_str() != Some(uid) {
                    return Err(ApiError::conflict(
                        info.group,
                        info.plural,
                        name,
                        &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old["metadata"]["uid"].as_str().unwrap_or_default()
                    ),
                    ));
                }
            }
            if let Some(rv) = &opts.precondition_resource_version {
                if rv != &old_rev.to_string() {
                    return Err(ApiError::conflict(info.group, info.plural, name, &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {old_rev}"
                    )));
                }
            }
            let mut finalizers: Vec<Value> = old["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut add = |f: &str| {
                if !finalizers.iter().any(|x| x == f) {
                    finalizers.push(json!(f));
                }
            };
            match opts.propagation_policy.as_deref() {
                Some("Foreground") => add("foregroundDeletion"),
                Some("Orphan") => add("orphan"),
                _ => {}
            }
            let strategy = registry::strategy(info.kind);
            // A pod bound to a node is marked and left to its node agent.
            let graceful = strategy.graceful_deletion(&old, opts.grace_period_seconds);
            let graceful_pod = graceful.is_some();
            // A namespace with spec.finalizers (`kubernetes` by default) goes Terminating;
            // the namespace controller deletes its content, then finalizes it.
            let kind_finalizers = strategy.has_kind_finalizers(&old);
            if !finalizers.is_empty() || graceful_pod || kind_finalizers {
                if old["metadata"]["deletionTimestamp"].is_string()
                    && finalizers
                        == old["metadata"]["finalizers"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                    && !graceful_pod
                {
                    return Ok(old);
                }
                let mut new = old.clone();
                let m = meta_mut(&mut new);
                if !m.contains_key("deletionTimestamp") {
                    let grace = graceful.unwrap_or(0);
                    let at = timestamp_now()
                        .checked_add(jiff::SignedDuration::from_secs(grace))
                        .unwrap_or_else(|_| timestamp_now());
                    m.insert(
                        "deletionTimestamp".into(),
                        json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    );
                    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                } else if graceful_pod && finalizers.is_empty() {
                    // A second delete of a terminating pod: nothing more to do.
                    return Ok(old);
                }
                if !finalizers.is_empty() {
                    m.insert("finalizers".into(), json!(finalizers));
                }
                m.remove("resourceVersion");
                strategy.mark_terminating(&mut new);
                if opts.dry_run {
                    return Ok(new);
                }
                let key = info.key(ns, name);
                match self
                    .inner
                    .storage
                    .update(&key, encode(&new), Some(old_rev))
                    .await
                {
                    Ok(kv) => {
                        self.settle(info, kv.mod_revision).await;
                        new["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
                        return Ok(new);
                    }
                    Err(StorageError::Conflict { .. }) => continue,
                    Err(e) => return Err(from_storage(e, info.group, info.plural, name)),
                }
            }
            if opts.dry_run {
                return Ok(old);
            }
            match self
                .inner
                .storage
                .delete(&info.key(ns, name), Some(old_rev))
                .await
            {
                Ok(kv) => {
                    self.settle(info, kv.mod_revision).await;
                    let mut out = old;
                    out["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
                    return Ok(out);
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(from_storage(e, info.group, info.plural, name)),
            }
        }
    }

    /// `pods/eviction`: deletes the pod unless that would violate its
    /// PodDisruptionBudget, in which case the answer is 429 TooManyRequests with a
    /// `DisruptionBudget` cause. Pods that are terminating, Pending, Succeeded or Failed
    /// are deleted without looking at budgets, as upstream. Evictions are serialized
    /// (within this API server) so two of them never spend the same allowed disruption.
    pub async fn evict(
        &self,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let pods = resources::lookup("", "v1", "pods").expect("served");
        let pdbs = resources::lookup("policy", "v1", "poddisruptionbudgets").expect("served");
        let _guard = self.inner.evictions.lock().await;
        let pod = self.get_in(pods, Some(namespace), name).await?;
        let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
        let ignores_budget = pod["metadata"]["deletionTimestamp"].is_string()
            || matches!(phase, "Pending" | "Succeeded" | "Failed");
        if !ignores_budget {
            let all = self
                .list_in(pdbs, Some(namespace), &ListOptions::default())
                .await?;
            // A budget without a selector, or with one that does not compile, selects
            // nothing (upstream skips it).
            let matching: Vec<(&Value, LabelSelector)> = all["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| !b["spec"]["selector"].is_null())
                .filter_map(|b| Some((b, LabelSelector::from_object(&b["spec"]["selector"]).ok()?)))
                .filter(|(_, sel)| sel.matches(&pod))
                .collect();
            if matching.len() > 1 {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
            if let Some((pdb, sel)) = matching.first() {
                let peers = self
                    .list_in(pods, Some(namespace), &ListOptions::default())
                    .await?;
                let live: Vec<&Value> = peers["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| {
                        sel.matches(p)
                            && p["metadata"]["deletionTimestamp"].is_null()
                            && !matches!(
                                p["status"]["phase"].as_str(),
                                Some("Succeeded" | "Failed")
                            )
                    })
                    .collect();
                let healthy = live.iter().filter(|p| pod_ready(p)).count();
                let b = budget(&pdb["spec"], live.len());
                let pod_healthy = pod_ready(&pod);
                let always = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
                let allowed = if pod_healthy {
                    healthy > b
                } else {
                    always || healthy >= b
                };
                if !allowed {
                    let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or_default();
                    let mut e = ApiError::new(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                    );
                    e.details = Some(json!({"causes": [{
                        "reason": "DisruptionBudget",
                        "message": format!(
                            "The disruption budget {pdb_name} needs {b} healthy pods and has {healthy} currently"
                        ),
                    }]}));
                    return Err(e);
                }
            }
        }
        self.delete_in(pods, Some(namespace), name, opts).await?;
        Ok(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )
    }

    /// DELETE a collection: every object matching the selectors.
    pub(crate) async fn delete_collection(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        list_opts: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let mut list = self.list_in(info, namespace, list_opts).await?;
        let mut deleted = Vec::new();
        for item in list["items"].as_array().cloned().unwrap_or_default() {
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            let ns = item["metadata"]["namespace"].as_str();
            match self.delete_in(info, ns, name, opts).await {
                Ok(o) => deleted.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        list["items"] = json!(deleted);
        Ok(list)
    }

    /// Starts a watch.
    pub(crate) async fn watch_in(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<WatchEvents, ApiError> {
        let filter = Filter::new(opts)?;
        let prefix = info.prefix(namespace.filter(|_| info.namespaced));
        let rv = opts.resource_version.as_deref().filter(|s| !s.is_empty());
        let send_initial = opts
            .send_initial_events
            .unwrap_or(matches!(rv, None | Some("0")));
        if opts.send_initial_events == Some(true) && !matches!(rv, None | Some("0")) {
            // Upstream allows sendInitialEvents only with an unset or "0" resourceVersion
            // and resourceVersionMatch=NotOlderThan; be lenient on the latter.
        }
        let mut initial = Vec::new();
        let start = if send_initial || rv.is_none() || rv == Some("0") {
            let list_opts = ListOptions {
                label_selector: opts.label_selector.clone(),
                field_selector: opts.field_selector.clone(),
                ..Default::default()
            };
            let list = self.list_in(info, namespace, &list_opts).await?;
            let rev: u64 = list["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            if send_initial {
                initial = list["items"].as_array().cloned().unwrap_or_default();
            }
            rev
        } else {
            rv.and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?
        };
        let init_end_bookmark =
            opts.send_initial_events == Some(true) && opts.allow_watch_bookmarks;
        let timeout = opts
            .timeout_seconds
            .map(Duration::from_secs)
            .unwrap_or(self.inner.config.default_watch_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let bookmarks = opts.allow_watch_bookmarks;
        let bookmark_every = self.inner.config.bookmark_interval;
        let api_version = info.api_version();
        let kind = info.kind;
        let bookmark = move |rv: u64, end: bool| {
            let mut m = json!({"resourceVersion": rv.to_string()});
            if end {
                m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            WatchEvent {
                kind: "BOOKMARK",
                object: json!({"kind": kind, "apiVersion": api_version, "metadata": m}),
            }
        };
        let head: Vec<WatchEvent> = initial
            .into_iter()
            .map(|o| WatchEvent {
                kind: "ADDED",
                object: o,
            })
            .chain(init_end_bookmark.then(|| bookmark(start, true)))
            .collect();
        let storage_stream = match self.inner.storage.watch(&prefix, start).await {
            Ok(s) => Some(s),
            Err(StorageError::Compacted {
                requested,
                compacted,
            }) => {
                let err = ApiError::gone(format!(
                    "too old resource version: {requested} ({compacted})"
                ));
                let ev = WatchEvent {
                    kind: "ERROR",
                    object: err.to_status(),
                };
                return Ok(futures::stream::iter(head.into_iter().chain([ev])).boxed());
            }
            Err(e) => return Err(ApiError::internal(e.to_string())),
        };
        let convert = move |ev: crate::storage::Event| -> Option<WatchEvent> {
            let obj = decode(&ev.kv).ok()?;
            let prev_match = ev
                .prev
                .as_ref()
                .and_then(|p| decode(p).ok())
                .is_some_and(|p| filter.matches(&p));
            let now_match = filter.matches(&obj);
            let kind = match ev.kind {
                EventKind::Delete if prev_match || now_match => "DELETED",
                EventKind::Delete => return None,
                EventKind::Put if now_match && ev.prev.is_some() && prev_match => "MODIFIED",
                EventKind::Put if now_match => "ADDED",
                EventKind::Put if prev_match => "DELETED",
                EventKind::Put => return None,
            };
            Some(WatchEvent { kind, object: obj })
        };
        struct St {
            inner: Option<crate::storage::WatchStream>,
            last: u64,
            ticker: tokio::time::Interval,
        }
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + bookmark_every, bookmark_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let st = St {
            inner: storage_stream,
            last: start,
            ticker,
        };
        let live = futures::stream::unfold(st, move |mut st| {
            let convert = convert.clone();
            let bookmark = bookmark.clone();
            async move {
                loop {
                    let inner = st.inner.as_mut()?;
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => return None,
                        _ = st.ticker.tick(), if bookmarks => {
                            let ev = bookmark(st.last, false);
                            return Some((ev, st));
                        }
                        next = inner.next() => match next {
                            None => return None,
                            Some(Err(e)) => {
                                st.inner = None;
                                let err = match e {
                                    StorageError::Compacted { requested, compacted } => ApiError::gone(format!("too old resource version: {requested} ({compacted})")),
                                    other => ApiError::new(500, "InternalError", other.to_string()),
                                };
                                return Some((WatchEvent { kind: "ERROR", object: err.to_status() }, st));
                            }
                            Some(Ok(ev)) => {
                                st.last = ev.revision();
                                if let Some(w) = convert(ev) {
                                    return Some((w, st));
                                }
                            }
                        }
                    }
                }
            }
        });
        Ok(futures::stream::iter(head).chain(live).boxed())
    }
}

/// The autoscaling/v1 Scale view of a scalable object.
pub(crate) fn scale_of(info: &ResourceInfo, obj: &Value) -> Value {
    let m = &obj["metadata"];
    let selector = &obj["spec"]["selector"];
    let sel_str = selector["matchLabels"]
        .as_object()
        .map(|ml| {
            ml.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let _ = info;
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": sel_str},
    })
}
