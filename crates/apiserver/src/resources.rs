//! The served resources: names, scope, verbs, short names and the upstream type that
//! checks each object's shape.
//!
//! Built-in resources are constants ([`RESOURCES`], one line per kind); the resources
//! of CustomResourceDefinitions are built at run time. Both are reached through a
//! [`Registry`] (held by the `Api`), whose [`Resource`] handles name either kind.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::registry::{self, Strategy};

/// A name that is either known at compile time (built-in kinds) or owned (custom
/// resources).
pub(crate) type Str = Cow<'static, str>;

/// A list of names (short names, categories): static for built-in kinds, owned for
/// custom resources.
#[derive(Clone, Debug)]
pub(crate) enum Names {
    /// Known at compile time.
    Static(&'static [&'static str]),
    /// Built at run time.
    Owned(Vec<String>),
}

impl Names {
    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Names::Static(s) => Box::new(s.iter().copied()),
            Names::Owned(v) => Box::new(v.iter().map(String::as_str)),
        }
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl serde::Serialize for Names {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// A kind's strategy: a static one (built-in kinds) or one built at run time (the
/// strategy of a custom resource, which carries its CRD's rules).
#[derive(Clone)]
pub(crate) enum StrategyRef {
    /// A built-in kind's strategy.
    Static(&'static dyn Strategy),
    /// A strategy built at run time.
    Shared(Arc<dyn Strategy>),
}

impl std::ops::Deref for StrategyRef {
    type Target = dyn Strategy;
    fn deref(&self) -> &Self::Target {
        match self {
            StrategyRef::Static(s) => *s,
            StrategyRef::Shared(s) => &**s,
        }
    }
}

/// Subresources a resource may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sub {
    Status,
    Scale,
    Binding,
    Eviction,
    Log,
    Finalize,
    /// `pods/exec`, `pods/attach`, `pods/portforward`: upgraded connections proxied to the
    /// pod's node (served by `stream_proxy`).
    Exec,
    Attach,
    PortForward,
    /// `pods/ephemeralcontainers`: the pod, of which only the ephemeral containers change.
    EphemeralContainers,
    /// `certificatesigningrequests/approval`: the CSR, of which only the conditions change.
    Approval,
}

impl Sub {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Sub::Status => "status",
            Sub::Scale => "scale",
            Sub::Binding => "binding",
            Sub::Eviction => "eviction",
            Sub::Log => "log",
            Sub::Finalize => "finalize",
            Sub::Exec => "exec",
            Sub::Attach => "attach",
            Sub::PortForward => "portforward",
            Sub::EphemeralContainers => "ephemeralcontainers",
            Sub::Approval => "approval",
        }
    }
}

/// One served resource.
#[derive(Clone)]
pub(crate) struct ResourceInfo {
    pub group: Str,
    pub version: Str,
    pub kind: Str,
    pub list_kind: Str,
    pub plural: Str,
    /// The singular name; `None` for the lower-cased kind.
    pub singular: Option<Str>,
    pub namespaced: bool,
    pub short_names: Names,
    pub categories: Names,
    pub subresources: Cow<'static, [Sub]>,
    /// PUT of a missing object creates it.
    pub create_on_update: bool,
    /// Parses into the upstream type and serializes back, rejecting wrong shapes.
    pub normalize: fn(Value) -> Result<Value, serde_json::Error>,
    /// What the store does differently for this kind (`registry/`).
    pub strategy: StrategyRef,
}

impl std::fmt::Debug for ResourceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceInfo")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .field("plural", &self.plural)
            .field("strategy", &self.strategy.kind())
            .finish_non_exhaustive()
    }
}

impl ResourceInfo {
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether objects of this resource have a protobuf form: every built-in kind (the
    /// generated tables know it); custom resources are JSON only, as upstream.
    pub(crate) fn supports_protobuf(&self) -> bool {
        crate::protobuf::supports(&self.api_version(), &self.kind)
    }

    pub(crate) fn singular(&self) -> String {
        match &self.singular {
            Some(s) => s.to_string(),
            None => self.kind.to_ascii_lowercase(),
        }
    }

    pub(crate) fn has(&self, sub: Sub) -> bool {
        self.subresources.contains(&sub)
    }

    /// The storage key prefix for all objects of this resource, or of one namespace.
    pub(crate) fn prefix(&self, namespace: Option<&str>) -> String {
        let (group, plural) = self
            .strategy
            .stored_as()
            .unwrap_or((&self.group, &self.plural));
        let g = if group.is_empty() { "core" } else { group };
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{g}/{plural}/{ns}/"),
            _ => format!("/registry/{g}/{plural}/"),
        }
    }

    pub(crate) fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.prefix(namespace))
    }

    pub(crate) fn verbs(&self) -> &'static [&'static str] {
        if let Some(v) = self.strategy.verbs() {
            return v;
        }
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

/// Parses `v` into `T` and serializes it back.
pub(crate) fn normalize<T>(v: Value) -> Result<Value, serde_json::Error>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    serde_json::to_value(serde_json::from_value::<T>(v)?)
}

/// A [`ResourceInfo`] for upstream type `$ty`: plural, namespaced, short names,
/// categories, subresources, create-on-update and (optionally) the kind's strategy.
macro_rules! res {
    ($ty:ty, $plural:expr, $ns:expr, $short:expr, $cats:expr, $subs:expr, $cou:expr) => {
        $crate::resources::res!(
            $ty,
            $plural,
            $ns,
            $short,
            $cats,
            $subs,
            $cou,
            &$crate::registry::DefaultStrategy
        )
    };
    ($ty:ty, $plural:expr, $ns:expr, $short:expr, $cats:expr, $subs:expr, $cou:expr, $strategy:expr) => {
        $crate::resources::ResourceInfo {
            group: std::borrow::Cow::Borrowed(<$ty as k8s_openapi::Resource>::GROUP),
            version: std::borrow::Cow::Borrowed(<$ty as k8s_openapi::Resource>::VERSION),
            kind: std::borrow::Cow::Borrowed(<$ty as k8s_openapi::Resource>::KIND),
            list_kind: std::borrow::Cow::Borrowed(
                <$ty as k8s_openapi::ListableResource>::LIST_KIND,
            ),
            plural: std::borrow::Cow::Borrowed($plural),
            singular: None,
            namespaced: $ns,
            short_names: $crate::resources::Names::Static($short),
            categories: $crate::resources::Names::Static($cats),
            subresources: std::borrow::Cow::Borrowed($subs),
            create_on_update: $cou,
            normalize: $crate::resources::normalize::<$ty>,
            strategy: $crate::resources::StrategyRef::Static($strategy),
        }
    };
}
pub(crate) use res;

use k8s_openapi::api::core::v1 as core;

/// The `all` category.
pub(crate) const ALL: &[&str] = &["all"];
/// No short names or categories.
pub(crate) const NONE: &[&str] = &[];

/// Every served resource.
pub(crate) static RESOURCES: &[ResourceInfo] = &[
    registry::namespace::RESOURCE,
    registry::pod::RESOURCE,
    registry::service::RESOURCE,
    registry::endpoints::RESOURCE,
    registry::configmap::RESOURCE,
    registry::secret::RESOURCE,
    registry::node::RESOURCE,
    registry::event::RESOURCE,
    registry::events_v1::RESOURCE,
    res!(
        core::ServiceAccount,
        "serviceaccounts",
        true,
        &["sa"],
        NONE,
        &[],
        false
    ),
    registry::deployment::RESOURCE,
    registry::replicaset::RESOURCE,
    registry::statefulset::RESOURCE,
    registry::daemonset::RESOURCE,
    registry::endpointslice::RESOURCE,
    registry::ingress::RESOURCE,
    registry::networkpolicy::RESOURCE,
    registry::ingressclass::RESOURCE,
    registry::certificatesigningrequest::RESOURCE,
    registry::lease::RESOURCE,
    registry::persistentvolumeclaim::RESOURCE,
    registry::persistentvolume::RESOURCE,
    registry::storageclass::RESOURCE,
    registry::csidriver::RESOURCE,
    registry::csistoragecapacity::RESOURCE,
    registry::controllerrevision::RESOURCE,
    registry::poddisruptionbudget::RESOURCE,
    registry::mutatingwebhookconfiguration::RESOURCE,
    registry::validatingwebhookconfiguration::RESOURCE,
    registry::validatingadmissionpolicy::RESOURCE,
    registry::validatingadmissionpolicybinding::RESOURCE,
    registry::customresourcedefinition::RESOURCE,
    registry::role::RESOURCE,
    registry::clusterrole::RESOURCE,
    registry::rolebinding::RESOURCE,
    registry::clusterrolebinding::RESOURCE,
    registry::reviews::SELF_SUBJECT_REVIEW,
    registry::reviews::TOKEN_REVIEW,
    registry::reviews::SELF_SUBJECT_ACCESS_REVIEW,
    registry::reviews::SUBJECT_ACCESS_REVIEW,
    registry::reviews::LOCAL_SUBJECT_ACCESS_REVIEW,
    registry::reviews::SELF_SUBJECT_RULES_REVIEW,
    registry::job::RESOURCE,
    registry::cronjob::RESOURCE,
    registry::priorityclass::RESOURCE,
    registry::resourcequota::RESOURCE,
    registry::limitrange::RESOURCE,
    registry::horizontalpodautoscaler::RESOURCE,
    registry::horizontalpodautoscaler::RESOURCE_V1,
    registry::metrics::NODE_METRICS,
    registry::metrics::POD_METRICS,
    registry::apiservice::RESOURCE,
];

/// Finds a built-in resource by group, version and plural name (the served resources,
/// custom ones included, are in the `Api`'s [`Registry`]).
pub(crate) fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// A handle on a served resource: a built-in one or the resource of a
/// CustomResourceDefinition (which a change of the CRD replaces; the handle keeps the
/// description it was taken with).
#[derive(Clone, Debug)]
pub(crate) enum Resource {
    /// A built-in resource.
    Builtin(&'static ResourceInfo),
    /// A custom resource.
    Custom(Arc<ResourceInfo>),
}

impl std::ops::Deref for Resource {
    type Target = ResourceInfo;
    fn deref(&self) -> &ResourceInfo {
        match self {
            Resource::Builtin(r) => r,
            Resource::Custom(r) => r,
        }
    }
}

/// Where a custom group's versions rank: Kubernetes version priority (GA over beta over
/// alpha, higher numbers first, then other names alphabetically).
pub(crate) fn version_priority(
    v: &str,
) -> (u8, std::cmp::Reverse<u64>, std::cmp::Reverse<u64>, String) {
    use std::cmp::Reverse;
    let parse = |s: &str| -> Option<(u64, u8, u64)> {
        let rest = s.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: u64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((major, 0, 0));
        }
        for (i, pre) in [(1u8, "beta"), (2, "alpha")] {
            if let Some(n) = tail.strip_prefix(pre) {
                return Some((major, i, n.parse().ok()?));
            }
        }
        None
    };
    match parse(v) {
        Some((major, rank, minor)) => (rank, Reverse(major), Reverse(minor), String::new()),
        None => (3, Reverse(0), Reverse(0), v.to_owned()),
    }
}

/// The served resources: the built-in ones and those of established
/// CustomResourceDefinitions, which change at run time.
pub(crate) struct Registry {
    custom: RwLock<Vec<Arc<ResourceInfo>>>,
    /// What each CRD's resources were built from, by (group, plural).
    fingerprints: std::sync::Mutex<std::collections::HashMap<(String, String), String>>,
    /// Bumped on every change of the custom resources (discovery ETags).
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// The built-in resources only.
    pub(crate) fn new() -> Self {
        Self {
            custom: RwLock::new(Vec::new()),
            fingerprints: Default::default(),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn custom(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<ResourceInfo>>> {
        self.custom.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Every served resource, built-in first.
    pub(crate) fn all(&self) -> Vec<Resource> {
        RESOURCES
            .iter()
            .map(Resource::Builtin)
            .chain(self.custom().iter().cloned().map(Resource::Custom))
            .collect()
    }

    /// Finds a served resource by group, version and plural name.
    pub(crate) fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Resource> {
        if let Some(r) = lookup(group, version, plural) {
            return Some(Resource::Builtin(r));
        }
        self.custom()
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
            .map(Resource::Custom)
    }

    /// Replaces the custom resources of one CRD (its group and plural) with
    /// `resources`, unless they were built from the same `fingerprint` already.
    pub(crate) fn set_custom(
        &self,
        group: &str,
        plural: &str,
        fingerprint: &str,
        resources: Vec<ResourceInfo>,
    ) {
        let mut fps = self.fingerprints.lock().unwrap_or_else(|e| e.into_inner());
        let key = (group.to_owned(), plural.to_owned());
        if fps.get(&key).is_some_and(|f| f == fingerprint) {
            return;
        }
        fps.insert(key, fingerprint.to_owned());
        let mut custom = self.custom.write().unwrap_or_else(|e| e.into_inner());
        custom.retain(|r| !(r.group == group && r.plural == plural));
        custom.extend(resources.into_iter().map(Arc::new));
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(group, plural, "serving custom resources");
    }

    /// Stops serving the custom resources of CRDs other than `keep` (group, plural).
    pub(crate) fn retain_custom(&self, keep: &[(String, String)]) {
        let mut fps = self.fingerprints.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<(String, String)> =
            fps.keys().filter(|k| !keep.contains(k)).cloned().collect();
        if gone.is_empty() {
            return;
        }
        let mut custom = self.custom.write().unwrap_or_else(|e| e.into_inner());
        for (g, p) in gone {
            custom.retain(|r| !(r.group == g && r.plural == p));
            fps.remove(&(g.clone(), p.clone()));
            tracing::info!(group = g, plural = p, "no longer serving custom resources");
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A number that changes whenever the served custom resources change.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The served group-versions: core first, built-in groups in their order, then
    /// custom groups with their versions by priority.
    pub(crate) fn group_versions(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut push = |g: &str, v: &str| {
            if !out.iter().any(|(x, y)| x == g && y == v) {
                out.push((g.to_owned(), v.to_owned()));
            }
        };
        for r in RESOURCES {
            push(&r.group, &r.version);
        }
        let mut custom: Vec<(String, String)> = self
            .custom()
            .iter()
            .map(|r| (r.group.to_string(), r.version.to_string()))
            .collect();
        let order: Vec<String> = {
            let mut gs: Vec<String> = Vec::new();
            for (g, _) in &custom {
                if !gs.contains(g) {
                    gs.push(g.clone());
                }
            }
            gs
        };
        custom.sort_by(|a, b| {
            let ga = order.iter().position(|g| *g == a.0);
            let gb = order.iter().position(|g| *g == b.0);
            ga.cmp(&gb)
                .then_with(|| version_priority(&a.1).cmp(&version_priority(&b.1)))
        });
        for (g, v) in custom {
            push(&g, &v);
        }
        out
    }

    /// Whether `group` is served.
    pub(crate) fn serves_group(&self, group: &str) -> bool {
        self.group_versions().iter().any(|(g, _)| g == group)
    }

    /// Whether `group`/`version` is served.
    pub(crate) fn serves(&self, group: &str, version: &str) -> bool {
        self.group_versions()
            .iter()
            .any(|(g, v)| g == group && v == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_consistent() {
        let pods = lookup("", "v1", "pods").unwrap();
        assert_eq!((&*pods.kind, &*pods.list_kind), ("Pod", "PodList"));
        assert_eq!(
            pods.key(Some("default"), "a"),
            "/registry/core/pods/default/a"
        );
        let d = lookup("apps", "v1", "deployments").unwrap();
        assert_eq!(d.api_version(), "apps/v1");
        assert!(d.has(Sub::Scale));
        assert_eq!(
            lookup("", "v1", "nodes").unwrap().key(Some("x"), "n"),
            "/registry/core/nodes/n"
        );
        assert!(Registry::new().serves("networking.k8s.io", "v1"));
    }

    #[test]
    fn normalize_rejects_wrong_shapes() {
        let pods = lookup("", "v1", "pods").unwrap();
        let ok = serde_json::json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},
            "spec":{"containers":[{"name":"c","image":"busybox"}]}});
        assert!((pods.normalize)(ok).is_ok());
        let bad = serde_json::json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},
            "spec":{"containers":"nope"}});
        assert!((pods.normalize)(bad).is_err());
    }
}
