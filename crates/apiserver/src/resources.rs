//! The served resources: names, scope, verbs, short names and the upstream type that
//! checks each object's shape.

use serde_json::Value;

use crate::registry::{self, Strategy};

/// Subresources a resource may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sub {
    Status,
    Scale,
    Binding,
    Eviction,
    Log,
    Finalize,
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
        }
    }
}

/// One served resource.
pub(crate) struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Sub],
    /// PUT of a missing object creates it.
    pub create_on_update: bool,
    /// Parses into the upstream type and serializes back, rejecting wrong shapes.
    pub normalize: fn(Value) -> Result<Value, serde_json::Error>,
    /// What the store does differently for this kind (`registry/`).
    pub strategy: &'static dyn Strategy,
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
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether objects of this resource have a protobuf form: every built-in kind (the
    /// generated tables know it); custom resources are JSON only, as upstream.
    pub(crate) fn supports_protobuf(&self) -> bool {
        crate::protobuf::supports(&self.api_version(), self.kind)
    }

    pub(crate) fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    pub(crate) fn has(&self, sub: Sub) -> bool {
        self.subresources.contains(&sub)
    }

    /// The storage key prefix for all objects of this resource, or of one namespace.
    pub(crate) fn prefix(&self, namespace: Option<&str>) -> String {
        let g = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{g}/{}/{ns}/", self.plural),
            _ => format!("/registry/{g}/{}/", self.plural),
        }
    }

    pub(crate) fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.prefix(namespace))
    }

    pub(crate) fn verbs(&self) -> &'static [&'static str] {
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
            group: <$ty as k8s_openapi::Resource>::GROUP,
            version: <$ty as k8s_openapi::Resource>::VERSION,
            kind: <$ty as k8s_openapi::Resource>::KIND,
            list_kind: <$ty as k8s_openapi::ListableResource>::LIST_KIND,
            plural: $plural,
            namespaced: $ns,
            short_names: $short,
            categories: $cats,
            subresources: $subs,
            create_on_update: $cou,
            normalize: $crate::resources::normalize::<$ty>,
            strategy: $strategy,
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
    registry::lease::RESOURCE,
    registry::persistentvolumeclaim::RESOURCE,
    registry::persistentvolume::RESOURCE,
    registry::controllerrevision::RESOURCE,
    registry::poddisruptionbudget::RESOURCE,
    registry::mutatingwebhookconfiguration::RESOURCE,
    registry::validatingwebhookconfiguration::RESOURCE,
];

/// Finds a resource by group, version and plural name.
pub(crate) fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The served group-versions, core first.
pub(crate) fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_consistent() {
        let pods = lookup("", "v1", "pods").unwrap();
        assert_eq!((pods.kind, pods.list_kind), ("Pod", "PodList"));
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
        assert!(group_versions().contains(&("networking.k8s.io", "v1")));
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
