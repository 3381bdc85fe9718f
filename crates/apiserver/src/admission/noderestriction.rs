//! NodeRestriction admission (upstream's `plugin/pkg/admission/noderestriction`): what
//! the Node authorizer lets every node do, limited to the node's own objects.
//!
//! - Pods: a node creates only mirror pods bound to itself, owned by its Node and
//!   referring to no service account, Secret, ConfigMap or claim; deletes only pods
//!   bound to itself; updates only the status of pods bound to itself, without changing
//!   their labels.
//! - Nodes: a node creates and updates only its own Node, never its taints nor labels
//!   under `kubernetes.io`/`k8s.io` other than the kubelet's own (`kubernetes.io/hostname`,
//!   `node.kubernetes.io/*`, ...), nor `node-restriction.kubernetes.io/*`.
//! - PersistentVolumeClaims: only their status' capacity and conditions (and allocated
//!   resources).
//! - Leases and CSINodes: only the node's own.
//! - TokenRequests: only bound to a pod on the node, with its uid.
//!
//! The 403s carry upstream's messages.

use serde_json::Value;

use crate::api::Api;
use crate::auth::node::{identity, mirror_pod_references};
use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::resources::{self, Sub};

use super::{Operation, Request};

const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The labels a kubelet may set on its Node (upstream's `kubeletapis.IsKubeletLabel`).
fn is_kubelet_label(key: &str) -> bool {
    const LABELS: &[&str] = &[
        "kubernetes.io/hostname",
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
    ];
    if LABELS.contains(&key) {
        return true;
    }
    let ns = label_namespace(key);
    ["kubelet.kubernetes.io", "node.kubernetes.io"]
        .iter()
        .any(|allowed| ns == *allowed || ns.ends_with(&format!(".{allowed}")))
}

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or_default()
}

fn is_kubernetes_label(key: &str) -> bool {
    let ns = label_namespace(key);
    ["kubernetes.io", "k8s.io"]
        .iter()
        .any(|d| ns == *d || ns.ends_with(&format!(".{d}")))
}

/// The labels a node may not add, remove or change, sorted.
fn forbidden_labels(new: &Value, old: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (a, b) = (
        new.as_object().unwrap_or(&empty),
        old.as_object().unwrap_or(&empty),
    );
    let mut modified: Vec<&String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .chain(b.iter().filter(|(k, v)| a.get(*k) != Some(v)))
        .map(|(k, _)| k)
        .collect();
    modified.sort();
    modified.dedup();
    modified
        .into_iter()
        .filter(|k| {
            let ns = label_namespace(k);
            ns == "node-restriction.kubernetes.io"
                || ns.ends_with(".node-restriction.kubernetes.io")
                || (is_kubernetes_label(k) && !is_kubelet_label(k))
        })
        .cloned()
        .collect()
}

fn user() -> UserInfo {
    serde_json::from_value(super::user_info()).unwrap_or_default()
}

/// The 403 of a refused request (upstream's `admission.NewForbidden`).
fn forbidden(req: &Request<'_>, name: &str, why: String) -> ApiError {
    ApiError::forbidden(&req.info.group, &req.info.plural, name, &why)
}

fn name_of<'a>(req: &Request<'a>, obj: Option<&'a Value>) -> &'a str {
    if !req.name.is_empty() {
        return req.name;
    }
    obj.and_then(|o| o["metadata"]["name"].as_str())
        .unwrap_or_default()
}

/// Admits a create or update (`obj`, and `old` for updates) by a node.
pub(super) async fn admit(
    api: &Api,
    req: &Request<'_>,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let user = user();
    let Some(node) = identity(&user) else {
        return Ok(());
    };
    let name = name_of(req, Some(obj));
    if node.is_empty() {
        return Err(forbidden(
            req,
            name,
            format!("could not determine node from user {:?}", user.username),
        ));
    }
    let null = Value::Null;
    let old = old.unwrap_or(&null);
    let deny = |why: String| Err(forbidden(req, name, why));
    match (&*req.info.group, &*req.info.plural) {
        ("", "pods") => match (req.sub, req.op) {
            (None, Operation::Create) => admit_mirror_pod(api, req, node, obj).await,
            (None, op) => deny(format!(
                "unexpected operation {:?}, node {node:?} can only create and delete mirror pods",
                op.as_str()
            )),
            (Some(Sub::Status), Operation::Update) => {
                if old["spec"]["nodeName"] != node {
                    return deny(format!("node {node:?} can only update pod status for pods with spec.nodeName set to itself"));
                }
                if obj["metadata"]["labels"] != old["metadata"]["labels"] {
                    return deny(format!(
                        "node {node:?} cannot update labels through pod status"
                    ));
                }
                Ok(())
            }
            (Some(Sub::Status), op) => deny(format!("unexpected operation {:?}", op.as_str())),
            (Some(Sub::Eviction), _) => Ok(()),
            (Some(s), _) => deny(format!(
                "unexpected pod subresource {:?}, only 'status' and 'eviction' are allowed",
                s.name()
            )),
        },
        ("", "nodes") => {
            if name != node {
                return deny(format!(
                    "node {node:?} is not allowed to modify node {name:?}"
                ));
            }
            match req.op {
                Operation::Create => {
                    if !obj["spec"]["configSource"].is_null() {
                        return deny(format!("node {node:?} is not allowed to create pods with a non-nil configSource"));
                    }
                    let bad = forbidden_labels(&obj["metadata"]["labels"], &Value::Null);
                    if !bad.is_empty() {
                        return deny(format!(
                            "node {node:?} is not allowed to set the following labels: {}",
                            bad.join(", ")
                        ));
                    }
                }
                Operation::Update => {
                    let cs = &obj["spec"]["configSource"];
                    if !cs.is_null() && *cs != old["spec"]["configSource"] {
                        return deny(format!("node {node:?} is not allowed to update configSource to a new non-nil configSource"));
                    }
                    let taints = |v: &Value| {
                        v["spec"]["taints"]
                            .as_array()
                            .filter(|t| !t.is_empty())
                            .cloned()
                    };
                    if taints(obj) != taints(old) {
                        return deny(format!("node {node:?} is not allowed to modify taints"));
                    }
                    let bad =
                        forbidden_labels(&obj["metadata"]["labels"], &old["metadata"]["labels"]);
                    if !bad.is_empty() {
                        return deny(format!(
                            "is not allowed to modify labels: {}",
                            bad.join(", ")
                        ));
                    }
                }
                _ => {}
            }
            Ok(())
        }
        ("", "persistentvolumeclaims") => {
            if req.sub != Some(Sub::Status) {
                return deny("may only update PVC status".into());
            }
            if req.op != Operation::Update {
                return deny(format!("unexpected operation {:?}", req.op.as_str()));
            }
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                    m.remove("managedFields");
                }
                if let Some(s) = v["status"].as_object_mut() {
                    for k in [
                        "capacity",
                        "conditions",
                        "allocatedResources",
                        "allocatedResourceStatuses",
                    ] {
                        s.remove(k);
                    }
                }
                v
            };
            if strip(obj) != strip(old) {
                return deny(format!("node {node:?} is not allowed to update fields other than status.capacity and status.conditions"));
            }
            Ok(())
        }
        ("coordination.k8s.io", "leases") => {
            if req.namespace != Some("kube-node-lease") {
                return deny(
                    "can only access leases in the \"kube-node-lease\" system namespace".into(),
                );
            }
            if name != node {
                return deny(
                    "can only access node lease with the same name as the requesting node".into(),
                );
            }
            Ok(())
        }
        ("storage.k8s.io", "csinodes") if name != node => {
            deny("can only access CSINode with the same name as the requesting node".into())
        }
        _ => Ok(()),
    }
}

async fn admit_mirror_pod(
    api: &Api,
    req: &Request<'_>,
    node: &str,
    pod: &Value,
) -> Result<(), ApiError> {
    let name = name_of(req, Some(pod));
    let deny = |why: String| Err(forbidden(req, name, why));
    if pod["metadata"]["annotations"][MIRROR_ANNOTATION].is_null() {
        return deny(format!("pod does not have {MIRROR_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"));
    }
    if pod["spec"]["nodeName"] != node {
        return deny(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        ));
    }
    let owners = pod["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match owners.as_slice() {
        [] => {
            return deny(format!(
                "node {node:?} can only create pods with an owner reference set to itself"
            ))
        }
        [o] => {
            if o["apiVersion"] != "v1" || o["kind"] != "Node" || o["name"] != node {
                return deny(format!(
                    "node {node:?} can only create pods with an owner reference set to itself"
                ));
            }
            if o["controller"] != true {
                return deny(format!("node {node:?} can only create pods with a controller owner reference set to itself"));
            }
            if o["blockOwnerDeletion"] == true {
                return deny(format!(
                    "node {node:?} must not set blockOwnerDeletion on an owner reference"
                ));
            }
            let nodes = resources::lookup("", "v1", "nodes").expect("served");
            let n = api.get_in(nodes, None, node).await?;
            let (want, got) = (
                o["uid"].as_str().unwrap_or_default(),
                n["metadata"]["uid"].as_str().unwrap_or_default(),
            );
            if want != got {
                return deny(format!(
                    "node {node} UID mismatch: expected {want} got {got}"
                ));
            }
        }
        _ => {
            return deny(format!(
                "node {node:?} can only create pods with a single owner reference set to itself"
            ))
        }
    }
    if pod["spec"]["serviceAccountName"]
        .as_str()
        .is_some_and(|s| !s.is_empty())
    {
        return deny(format!(
            "node {node:?} can not create pods that reference a service account"
        ));
    }
    if let Some(kind) = mirror_pod_references(pod) {
        return deny(format!(
            "node {node:?} can not create pods that reference {kind}"
        ));
    }
    Ok(())
}

/// Admits a delete by a node: only pods bound to itself, its own Node, Lease and CSINode.
pub(super) fn admit_delete(req: &Request<'_>, old: &Value) -> Result<(), ApiError> {
    let user = user();
    let Some(node) = identity(&user) else {
        return Ok(());
    };
    let name = req.name;
    let deny = |why: String| Err(forbidden(req, name, why));
    match (&*req.info.group, &*req.info.plural) {
        ("", "pods") if old["spec"]["nodeName"] != node => deny(format!(
            "node {node:?} can only delete pods with spec.nodeName set to itself"
        )),
        ("", "nodes") if name != node => deny(format!(
            "node {node:?} is not allowed to modify node {name:?}"
        )),
        ("coordination.k8s.io", "leases") if name != node => {
            deny("can only access node lease with the same name as the requesting node".into())
        }
        _ => Ok(()),
    }
}

/// Admits a TokenRequest (`body`) for a service account of namespace `ns` by `user`: a
/// node gets tokens only bound to a pod scheduled on itself.
pub(crate) async fn admit_token_request(
    api: &Api,
    user: &UserInfo,
    ns: &str,
    sa: &str,
    body: &Value,
) -> Result<(), ApiError> {
    let Some(node) = identity(user) else {
        return Ok(());
    };
    let deny = |why: &str| Err(ApiError::forbidden("", "serviceaccounts", sa, why));
    let r = &body["spec"]["boundObjectRef"];
    if r["apiVersion"] != "v1" || r["kind"] != "Pod" || r["name"].as_str().unwrap_or("").is_empty()
    {
        return deny("node requested token not bound to a pod");
    }
    let uid = r["uid"].as_str().unwrap_or_default();
    if uid.is_empty() {
        return deny("node requested token with a pod binding without a uid");
    }
    let pods = resources::lookup("", "v1", "pods").expect("served");
    let pod = api
        .get_in(pods, Some(ns), r["name"].as_str().unwrap_or_default())
        .await?;
    if pod["metadata"]["uid"] != uid {
        return deny(&format!("the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"));
    }
    if pod["spec"]["nodeName"] != node {
        return deny("node requested token bound to a pod scheduled on a different node");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_labels_follow_upstreams_rules() {
        let old = json!({"kubernetes.io/hostname": "n1", "team": "a"});
        let new = json!({"kubernetes.io/hostname": "n1", "team": "b",
            "node-role.kubernetes.io/control-plane": "", "node.kubernetes.io/pool": "x",
            "node-restriction.kubernetes.io/trusted": "y", "topology.kubernetes.io/zone": "z"});
        assert_eq!(
            forbidden_labels(&new, &old),
            [
                "node-restriction.kubernetes.io/trusted",
                "node-role.kubernetes.io/control-plane"
            ]
        );
        assert!(forbidden_labels(&old, &old).is_empty());
        assert_eq!(
            forbidden_labels(&json!({}), &json!({"example.k8s.io/x": "1"})),
            ["example.k8s.io/x"],
            "removing counts as modifying"
        );
    }
}
