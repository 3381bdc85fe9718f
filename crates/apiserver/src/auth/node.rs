//! The Node authorizer (upstream's `plugin/pkg/auth/authorizer/node`): what a node agent,
//! authenticated as `system:node:<name>` in group `system:nodes`, may do.
//!
//! - Secrets and ConfigMaps: `get`, and `list`/`watch` of one object by a
//!   `metadata.name` field selector, only when a pod bound to the node refers to it (a
//!   volume, a projected source, an environment reference, an image pull secret, or a
//!   secret of a persistent volume the pod's claims are bound to).
//! - **kcore's extension:** Secrets named by `spec.tls[].secretName` of an Ingress that
//!   kcore's Ingress controller serves (its class names [`kcore_k8s::INGRESS_CONTROLLER`],
//!   or it has no class), in the Ingress' namespace: `get`, and `list`/`watch` by
//!   `metadata.name`, for every node. Upstream has no such rule because there the Ingress
//!   controller is a pod with its own service account and RBAC; in kcore the node agent
//!   *is* the Ingress controller (each node serves Ingress on its own address), so it
//!   must hold the keys of the Ingresses it serves, and no other Secrets: not those of
//!   other controllers' Ingresses, nor any Secret by listing. Whoever may create an
//!   Ingress in a namespace can thereby show that namespace's named Secret to the nodes
//!   (upstream: to the Ingress controller), as with any Ingress controller.
//! - PersistentVolumeClaims (`get`; `update`/`patch` of `status`), PersistentVolumes,
//!   VolumeAttachments and ResourceClaims (`get`): only those of pods bound to the node.
//! - `serviceaccounts/token` (`create`): only for the service accounts of pods bound to
//!   the node.
//! - Leases: only `kube-node-lease/<node>`; CSINodes: only the node's own.
//! - Nodes: `get`/`list`/`watch` only of the node's own object (kubelets read theirs
//!   before creating it), `create`/`update`/`patch` and `status` writes (NodeRestriction
//!   admission limits them to the node's own object).
//! - Pods: `get` of a pod bound to the node, `list`/`watch` with the field selector
//!   `spec.nodeName=<node>`, `create`/`delete` (mirror pods) and `status` and `eviction`
//!   writes (NodeRestriction again limits them to pods bound to the node).
//! - Anything else: the rules of the `system:node` ClusterRole ([`node_rules`]), which
//!   this authorizer applies itself, as upstream does (no binding grants that role).
//!
//! Where the authorizer does not allow a request it has no opinion: RBAC decides next
//! (the authorization order is `Node,RBAC`), and the node authorizer's reason ends
//! the 403's message (`no relationship found between node 'n1' and this object`).
//!
//! As upstream, the relations come from a graph of pods, claims, volumes and attachments
//! (and here Ingresses and IngressClasses) kept from watches ([`super::node_graph`]); a
//! request the graph finds no path for is checked against the stored objects before it
//! is refused (the graph trails the store by a moment).

use std::sync::{Arc, OnceLock};

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::Value;

use super::node_graph::Graph;
use super::{rbac, Attributes, UserInfo};
use crate::api::Api;
use crate::resources;

/// The group every node credential carries.
pub(crate) const NODES_GROUP: &str = "system:nodes";
/// The user-name prefix of node credentials.
pub(crate) const NODE_USER_PREFIX: &str = "system:node:";
/// The namespace of node Leases.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node `user` is, as upstream's node identifier: `Some(name)` for a user named
/// `system:node:<name>` in group `system:nodes` (`Some("")` when the name is empty),
/// `None` for anyone else.
pub(crate) fn identity(user: &UserInfo) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES_GROUP) {
        return None;
    }
    user.username.strip_prefix(NODE_USER_PREFIX)
}

/// A decision of the node authorizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    /// No opinion, with the reason (possibly empty) that ends a 403's message.
    NoOpinion(String),
}

fn no(reason: impl Into<String>) -> Decision {
    Decision::NoOpinion(reason.into())
}

/// The `system:node` ClusterRole's rules, which the authorizer grants every node.
fn node_rules() -> &'static [PolicyRule] {
    static RULES: OnceLock<Vec<PolicyRule>> = OnceLock::new();
    RULES.get_or_init(|| {
        super::bootstrap::cluster_roles()
            .into_iter()
            .find(|r| r["metadata"]["name"] == "system:node")
            .and_then(|r| serde_json::from_value(r["rules"].clone()).ok())
            .unwrap_or_default()
    })
}

/// What a decision reads: the store and the graph.
struct Ctx<'a> {
    api: &'a Api,
    graph: &'a Graph,
}

/// The kinds of objects a node may reach through its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Secret,
    ConfigMap,
    Claim,
    Volume,
    ServiceAccount,
    Pod,
    ResourceClaim,
    VolumeAttachment,
}

impl Kind {
    fn vertex(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::ConfigMap => "configmap",
            Kind::Claim => "pvc",
            Kind::Volume => "pv",
            Kind::ServiceAccount => "serviceAccount",
            Kind::Pod => "pod",
            Kind::ResourceClaim => "resourceclaim",
            Kind::VolumeAttachment => "volumeattachment",
        }
    }
}

/// Decides `a` for node `node`, with the relations of `graph`.
pub(crate) async fn authorize(
    api: &Api,
    graph: &Graph,
    user: &UserInfo,
    node: &str,
    a: &Attributes,
) -> Decision {
    let g = Ctx { api, graph };
    let api = &g;
    if node.is_empty() {
        return no(format!("unknown node for user {:?}", user.username));
    }
    if a.resource_request {
        let decision = match (a.group.as_str(), a.resource.as_str()) {
            ("", "secrets") => Some(read_namespaced(api, node, Kind::Secret, a).await),
            ("", "configmaps") => Some(read_namespaced(api, node, Kind::ConfigMap, a).await),
            ("", "persistentvolumeclaims") if a.subresource == "status" => {
                Some(status_update(api, node, Kind::Claim, a).await)
            }
            ("", "persistentvolumeclaims") => Some(get(api, node, Kind::Claim, a).await),
            ("", "persistentvolumes") => Some(get(api, node, Kind::Volume, a).await),
            ("resource.k8s.io", "resourceclaims") => {
                Some(get(api, node, Kind::ResourceClaim, a).await)
            }
            ("storage.k8s.io", "volumeattachments") => {
                Some(get(api, node, Kind::VolumeAttachment, a).await)
            }
            ("", "serviceaccounts") => Some(create_token(api, node, a).await),
            ("coordination.k8s.io", "leases") => Some(lease(node, a)),
            ("storage.k8s.io", "csinodes") => Some(csi_node(node, a)),
            ("", "nodes") => Some(node_object(node, a)),
            ("", "pods") => Some(pod(api, node, a).await),
            _ => None,
        };
        if let Some(d) = decision {
            return d;
        }
    }
    if node_rules().iter().any(|r| rbac::rule_allows(a, r)) {
        Decision::Allow
    } else {
        no("")
    }
}

async fn status_update(api: &Ctx<'_>, node: &str, kind: Kind, a: &Attributes) -> Decision {
    if !matches!(a.verb.as_str(), "update" | "patch") {
        return no("can only get/update/patch this type");
    }
    if a.subresource != "status" {
        return no("can only update status subresource");
    }
    related(api, node, kind, a).await
}

async fn get(api: &Ctx<'_>, node: &str, kind: Kind, a: &Attributes) -> Decision {
    if a.verb != "get" {
        return no("can only get individual resources of this type");
    }
    if !a.subresource.is_empty() {
        return no("cannot get subresource");
    }
    related(api, node, kind, a).await
}

async fn read_namespaced(api: &Ctx<'_>, node: &str, kind: Kind, a: &Attributes) -> Decision {
    if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
        return no("can only read resources of this type");
    }
    if !a.subresource.is_empty() {
        return no("cannot read subresource");
    }
    if a.namespace.is_empty() {
        return no("can only read namespaced object of this type");
    }
    related(api, node, kind, a).await
}

async fn create_token(api: &Ctx<'_>, node: &str, a: &Attributes) -> Decision {
    if a.verb != "create" || a.name.is_empty() {
        return no("can only create tokens for individual service accounts");
    }
    if a.subresource != "token" {
        return no("can only create token subresource of serviceaccount");
    }
    related(api, node, Kind::ServiceAccount, a).await
}

fn lease(node: &str, a: &Attributes) -> Decision {
    if !matches!(
        a.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    ) {
        return no("can only get, create, update, patch, or delete a node lease");
    }
    if a.namespace != NODE_LEASE_NAMESPACE {
        return no(format!(
            "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
        ));
    }
    // the name of a create is in the body: NodeRestriction admission checks it
    if a.verb != "create" && a.name != node {
        return no("can only access node lease with the same name as the requesting node");
    }
    Decision::Allow
}

fn csi_node(node: &str, a: &Attributes) -> Decision {
    if !matches!(
        a.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    ) {
        return no("can only get, create, update, patch, or delete a CSINode");
    }
    if !a.subresource.is_empty() {
        return no("cannot authorize CSINode subresources");
    }
    if a.verb != "create" && a.name != node {
        return no("can only access CSINode with the same name as the requesting node");
    }
    Decision::Allow
}

fn node_object(node: &str, a: &Attributes) -> Decision {
    match (a.subresource.as_str(), a.verb.as_str()) {
        // NodeRestriction admission limits these to the node's own object
        ("", "create" | "update" | "patch") | ("status", "update" | "patch") => Decision::Allow,
        ("", "get" | "list" | "watch") => match a.name.as_str() {
            n if n == node => Decision::Allow,
            "" => no(format!(
                "node '{node}' cannot read all nodes, only its own Node object"
            )),
            other => no(format!(
                "node '{node}' cannot read '{other}', only its own Node object"
            )),
        },
        _ => no(""),
    }
}

async fn pod(api: &Ctx<'_>, node: &str, a: &Attributes) -> Decision {
    match (a.subresource.as_str(), a.verb.as_str()) {
        ("", "get") => get(api, node, Kind::Pod, a).await,
        ("", "list" | "watch") => {
            if a.field_selector_equals("spec.nodeName") == Some(node) {
                Decision::Allow
            } else if !a.name.is_empty() {
                related(api, node, Kind::Pod, a).await
            } else {
                no("can only list/watch pods with spec.nodeName field selector")
            }
        }
        // mirror pods, status and evictions: NodeRestriction admission limits them to
        // pods bound to the node
        ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => {
            Decision::Allow
        }
        _ => no(""),
    }
}

/// Allows `a` when its object is related to `node`.
async fn related(api: &Ctx<'_>, node: &str, kind: Kind, a: &Attributes) -> Decision {
    if a.name.is_empty() {
        return no("No Object name found");
    }
    // the graph answers at once; where it finds no path (it may trail the store by a
    // moment, or not have synced yet) the store decides
    if api.graph.synced() && api.graph.has_path(node, kind, &a.namespace, &a.name) {
        return Decision::Allow;
    }
    match has_path(api.api, node, kind, &a.namespace, &a.name).await {
        Ok(true) => Decision::Allow,
        Ok(false) => no(format!(
            "no relationship found between node '{node}' and this object"
        )),
        Err(e) => {
            tracing::debug!(%node, kind = kind.vertex(), error = %e.message, "node authorizer: reading pods");
            no(format!(
                "no relationship found between node '{node}' and this object"
            ))
        }
    }
}

async fn objects(api: &Api, plural: &str) -> Result<Vec<Arc<Value>>, crate::error::ApiError> {
    let group = match plural {
        "volumeattachments" => "storage.k8s.io",
        "ingressclasses" => "networking.k8s.io",
        _ => "",
    };
    match resources::lookup(group, "v1", plural) {
        Some(info) => api.current_objects(info).await,
        None => Ok(Vec::new()),
    }
}

/// Whether an object of `kind` named `ns/name` is related to `node`, read from the store:
/// reachable from a pod bound to it, or (a Secret) named by a served Ingress.
async fn has_path(
    api: &Api,
    node: &str,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<bool, crate::error::ApiError> {
    Ok(pod_path(api, node, kind, ns, name).await?
        || (kind == Kind::Secret && ingress_tls_secret(api, ns, name).await?))
}

/// Whether an Ingress kcore's controller serves names the Secret `ns/name` in its
/// `spec.tls` (kcore's extension, see the module doc).
async fn ingress_tls_secret(
    api: &Api,
    ns: &str,
    name: &str,
) -> Result<bool, crate::error::ApiError> {
    let Some(info) = resources::lookup("networking.k8s.io", "v1", "ingresses") else {
        return Ok(false);
    };
    let naming: Vec<Ingress> = api
        .cached_objects(info, Some(ns))
        .await?
        .iter()
        // only those naming it are read whole
        .filter(|i| {
            i["spec"]["tls"]
                .as_array()
                .is_some_and(|t| t.iter().any(|e| e["secretName"] == name))
        })
        .filter_map(|i| serde_json::from_value::<Ingress>(Value::clone(i)).ok())
        .filter(|i| kcore_k8s::ingress_tls_secrets(i).contains(&name))
        .collect();
    if naming.is_empty() {
        return Ok(false);
    }
    let classes: Vec<IngressClass> = objects(api, "ingressclasses")
        .await?
        .iter()
        .filter_map(|c| serde_json::from_value(Value::clone(c)).ok())
        .collect();
    Ok(naming
        .iter()
        .any(|i| kcore_k8s::ingress_served(i, &classes)))
}

/// Whether an object of `kind` named `ns/name` is reachable from a pod bound to `node`
/// (upstream's graph: node ← pod ← secret/configmap/pvc/serviceaccount/resourceclaim,
/// node ← pod ← pvc ← pv ← secret, node ← volumeattachment).
async fn pod_path(
    api: &Api,
    node: &str,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<bool, crate::error::ApiError> {
    if kind == Kind::VolumeAttachment {
        return Ok(objects(api, "volumeattachments")
            .await?
            .iter()
            .any(|va| va["metadata"]["name"] == name && va["spec"]["nodeName"] == node));
    }
    let pods = objects(api, "pods").await?;
    let bound = pods.iter().filter(|p| p["spec"]["nodeName"] == node);
    let mut claims: Vec<(String, String)> = Vec::new();
    for p in bound {
        let pns = p["metadata"]["namespace"].as_str().unwrap_or_default();
        let refs = PodRefs::of(p);
        if kind != Kind::Volume && kind != Kind::Secret && pns != ns {
            continue;
        }
        let found = pns == ns
            && match kind {
                Kind::Pod => p["metadata"]["name"] == name,
                Kind::Secret => refs.secrets.iter().any(|s| s == name),
                Kind::ConfigMap => refs.config_maps.iter().any(|s| s == name),
                Kind::Claim => refs.claims.iter().any(|s| s == name),
                Kind::ServiceAccount => refs.service_account == name,
                Kind::ResourceClaim => refs.resource_claims.iter().any(|s| s == name),
                Kind::Volume | Kind::VolumeAttachment => false,
            };
        if found {
            return Ok(true);
        }
        claims.extend(refs.claims.into_iter().map(|c| (pns.to_owned(), c)));
    }
    if !matches!(kind, Kind::Volume | Kind::Secret) || claims.is_empty() {
        return Ok(false);
    }
    // node ← pod ← pvc ← pv (← secret)
    let pvcs = objects(api, "persistentvolumeclaims").await?;
    let volumes: Vec<&str> = pvcs
        .iter()
        .filter(|c| {
            claims.iter().any(|(cns, cn)| {
                c["metadata"]["namespace"] == cns.as_str() && c["metadata"]["name"] == cn.as_str()
            })
        })
        .filter_map(|c| c["spec"]["volumeName"].as_str())
        .collect();
    if kind == Kind::Volume {
        return Ok(volumes.contains(&name));
    }
    let pvs = objects(api, "persistentvolumes").await?;
    Ok(pvs
        .iter()
        .filter(|pv| {
            pv["metadata"]["name"]
                .as_str()
                .is_some_and(|n| volumes.contains(&n))
        })
        .any(|pv| {
            volume_secrets(&pv["spec"])
                .iter()
                .any(|(sns, sn)| sns.as_deref().unwrap_or(ns) == ns && sn == name)
        }))
}

/// The secrets a PersistentVolume's spec names (namespace, name).
pub(crate) fn volume_secrets(spec: &Value) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for (_, source) in spec.as_object().into_iter().flatten() {
        let Some(src) = source.as_object() else {
            continue;
        };
        for (k, v) in src {
            if k.ends_with("SecretRef") || k == "secretRef" {
                if let Some(n) = v["name"].as_str() {
                    out.push((v["namespace"].as_str().map(str::to_owned), n.to_owned()));
                }
            }
        }
    }
    out
}

/// What one pod refers to (upstream's `VisitPodSecretNames`, `VisitPodConfigmapNames`,
/// and the claims, service account and resource claims of the graph populator).
#[derive(Debug, Default)]
pub(crate) struct PodRefs {
    pub secrets: Vec<String>,
    pub config_maps: Vec<String>,
    pub claims: Vec<String>,
    pub service_account: String,
    pub resource_claims: Vec<String>,
}

impl PodRefs {
    pub(crate) fn of(pod: &Value) -> PodRefs {
        let spec = &pod["spec"];
        let mut r = PodRefs {
            service_account: spec["serviceAccountName"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_owned(),
            ..PodRefs::default()
        };
        let push = |v: &mut Vec<String>, n: &Value| {
            if let Some(n) = n.as_str().filter(|n| !n.is_empty()) {
                v.push(n.to_owned());
            }
        };
        for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
            push(&mut r.secrets, &s["name"]);
        }
        for kind in ["initContainers", "containers", "ephemeralContainers"] {
            for c in spec[kind].as_array().into_iter().flatten() {
                for e in c["envFrom"].as_array().into_iter().flatten() {
                    push(&mut r.secrets, &e["secretRef"]["name"]);
                    push(&mut r.config_maps, &e["configMapRef"]["name"]);
                }
                for e in c["env"].as_array().into_iter().flatten() {
                    push(&mut r.secrets, &e["valueFrom"]["secretKeyRef"]["name"]);
                    push(
                        &mut r.config_maps,
                        &e["valueFrom"]["configMapKeyRef"]["name"],
                    );
                }
            }
        }
        let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
        for v in spec["volumes"].as_array().into_iter().flatten() {
            push(&mut r.secrets, &v["secret"]["secretName"]);
            push(&mut r.config_maps, &v["configMap"]["name"]);
            for src in v["projected"]["sources"].as_array().into_iter().flatten() {
                push(&mut r.secrets, &src["secret"]["name"]);
                push(&mut r.config_maps, &src["configMap"]["name"]);
            }
            for (k, src) in v.as_object().into_iter().flatten() {
                if matches!(k.as_str(), "secret" | "projected") {
                    continue;
                }
                for (field, val) in src.as_object().into_iter().flatten() {
                    if field.ends_with("SecretRef") || field == "secretRef" {
                        push(&mut r.secrets, &val["name"]);
                    } else if field == "secretName" {
                        push(&mut r.secrets, val);
                    }
                }
            }
            push(&mut r.claims, &v["persistentVolumeClaim"]["claimName"]);
            if v["ephemeral"].is_object() {
                if let Some(vn) = v["name"].as_str() {
                    r.claims.push(format!("{pod_name}-{vn}"));
                }
            }
        }
        for c in spec["resourceClaims"].as_array().into_iter().flatten() {
            push(&mut r.resource_claims, &c["resourceClaimName"]);
        }
        for s in pod["status"]["resourceClaimStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            push(&mut r.resource_claims, &s["resourceClaimName"]);
        }
        r
    }

    /// Whether the pod names any Secret, ConfigMap or claim (a node may not create such
    /// a mirror pod).
    fn kinds(&self) -> [(&'static str, bool); 3] {
        [
            ("secrets", !self.secrets.is_empty()),
            ("configmaps", !self.config_maps.is_empty()),
            ("persistentvolumeclaims", !self.claims.is_empty()),
        ]
    }
}

/// Which kinds of objects a pod a node creates refers to, in upstream's check order.
pub(crate) fn mirror_pod_references(pod: &Value) -> Option<&'static str> {
    PodRefs::of(pod)
        .kinds()
        .into_iter()
        .find_map(|(k, has)| has.then_some(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identity_needs_the_group_and_prefix() {
        let n = UserInfo::new("system:node:n1", "", vec![NODES_GROUP.into()]);
        assert_eq!(identity(&n), Some("n1"));
        let no_group = UserInfo::new("system:node:n1", "", vec![]);
        assert_eq!(identity(&no_group), None);
        let other = UserInfo::new("alice", "", vec![NODES_GROUP.into()]);
        assert_eq!(identity(&other), None);
        let empty = UserInfo::new("system:node:", "", vec![NODES_GROUP.into()]);
        assert_eq!(identity(&empty), Some(""));
    }

    #[test]
    fn pod_references_cover_volumes_env_and_pull_secrets() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
        "serviceAccountName": "sa",
        "imagePullSecrets": [{"name": "pull"}],
        "containers": [{"name": "c",
            "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "envsec", "key": "k"}}},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "envcm", "key": "k"}}}],
            "envFrom": [{"secretRef": {"name": "fromsec"}}, {"configMapRef": {"name": "fromcm"}}]}],
        "volumes": [
            {"name": "s", "secret": {"secretName": "volsec"}},
            {"name": "c", "configMap": {"name": "volcm"}},
            {"name": "pr", "projected": {"sources": [{"secret": {"name": "projsec"}}, {"configMap": {"name": "projcm"}}]}},
            {"name": "csi", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csisec"}}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "eph", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}
        ]}});
        let r = PodRefs::of(&pod);
        assert_eq!(
            r.secrets,
            ["pull", "fromsec", "envsec", "volsec", "projsec", "csisec"]
        );
        assert_eq!(r.config_maps, ["fromcm", "envcm", "volcm", "projcm"]);
        assert_eq!(r.claims, ["data", "p-eph"]);
        assert_eq!(r.service_account, "sa");
        assert_eq!(mirror_pod_references(&pod), Some("secrets"));
        assert_eq!(
            mirror_pod_references(&json!({"spec": {"containers": [{"name": "c"}]}})),
            None
        );
    }

    #[test]
    fn static_decisions_are_upstreams() {
        let mut a =
            Attributes::resource("update", "coordination.k8s.io", "leases", "kube-node-lease");
        a.name = "n2".into();
        assert_eq!(
            lease("n1", &a),
            no("can only access node lease with the same name as the requesting node")
        );
        a.name = "n1".into();
        assert_eq!(lease("n1", &a), Decision::Allow);
        a.namespace = "default".into();
        assert_eq!(
            lease("n1", &a),
            no("can only access leases in the \"kube-node-lease\" system namespace")
        );
        let mut n = Attributes::resource("get", "", "nodes", "");
        n.name = "n2".into();
        assert_eq!(
            node_object("n1", &n),
            no("node 'n1' cannot read 'n2', only its own Node object")
        );
        n.verb = "list".into();
        n.name.clear();
        assert_eq!(
            node_object("n1", &n),
            no("node 'n1' cannot read all nodes, only its own Node object")
        );
        n.verb = "patch".into();
        n.name = "n2".into();
        assert_eq!(node_object("n1", &n), Decision::Allow, "admission decides");
        let svc = Attributes::resource("list", "", "services", "");
        assert!(node_rules().iter().any(|r| rbac::rule_allows(&svc, r)));
        let roles = Attributes::resource("list", "rbac.authorization.k8s.io", "roles", "");
        assert!(!node_rules().iter().any(|r| rbac::rule_allows(&roles, r)));
    }
}
