//! The roles and bindings upstream creates at start (its `bootstrappolicy`), reconciled
//! on every start as upstream's `rbac/bootstrap-roles` post-start hook does: missing ones
//! are created, and ones marked `rbac.authorization.kubernetes.io/autoupdate: "true"`
//! (the default) regain the permissions and subjects they are missing; and the
//! aggregation of ClusterRoles (`aggregationRule`), which upstream's
//! `clusterrole-aggregation` controller keeps.

use std::sync::Arc;

use serde_json::{json, Value};

use super::rbac::GROUP;
use crate::api::{Api, ListOptions, WriteOptions};
use crate::error::ApiError;
use crate::resources::{self, ResourceInfo};
use crate::selectors::LabelSelector;

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

fn meta(name: &str, labels: Value) -> Value {
    let mut l = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    if let (Some(l), Some(extra)) = (l.as_object_mut(), labels.as_object()) {
        l.extend(extra.clone());
    }
    json!({"name": name, "labels": l, "annotations": {AUTOUPDATE: "true"}})
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn urls(paths: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": paths, "verbs": verbs})
}

fn cluster_role(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    json!({"apiVersion": format!("{GROUP}/v1"), "kind": "ClusterRole", "metadata": meta(name, labels), "rules": rules})
}

fn aggregated(name: &str, labels: Value, to: &str) -> Value {
    let mut r = cluster_role(name, labels, Vec::new());
    r["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"}}]});
    r
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, n)| json!({"kind": kind, "apiGroup": GROUP, "name": n}))
        .collect();
    json!({"apiVersion": format!("{GROUP}/v1"), "kind": "ClusterRoleBinding", "metadata": meta(name, json!({})),
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role}, "subjects": subjects})
}

/// Upstream's `system:certificates.k8s.io:<signer>-approver`: `approve` on the signer
/// `kubernetes.io/<signer>`.
fn signer_approver(signer: &str) -> Value {
    let mut r = rule(&["certificates.k8s.io"], &["signers"], &["approve"]);
    r["resourceNames"] = json!([format!("kubernetes.io/{signer}")]);
    cluster_role(
        &format!("system:certificates.k8s.io:{signer}-approver"),
        json!({}),
        vec![r],
    )
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

/// Upstream's `system:node` rules (its `NodeRules`), which the Node authorizer applies
/// to every node.
fn node_rules() -> Vec<Value> {
    vec![
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        rule(
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews", "subjectaccessreviews"],
            &["create"],
        ),
        rule(&[""], &["services"], READ),
        rule(&[""], &["nodes"], &["create", "get", "list", "watch"]),
        rule(&[""], &["nodes/status"], &["patch", "update"]),
        rule(&[""], &["nodes"], &["patch", "update"]),
        rule(&[""], &["events"], &["create", "patch", "update"]),
        rule(&[""], &["pods"], READ),
        rule(&[""], &["pods"], &["create", "delete"]),
        rule(&[""], &["pods/status"], &["patch", "update"]),
        rule(&[""], &["pods/eviction"], &["create"]),
        rule(&[""], &["configmaps", "secrets"], READ),
        rule(
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
            &["get"],
        ),
        rule(&[""], &["endpoints"], &["get"]),
        rule(
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
            &["create", "get", "list", "watch"],
        ),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["create", "delete", "get", "patch", "update"],
        ),
        rule(&["storage.k8s.io"], &["volumeattachments"], &["get"]),
        rule(
            &[""],
            &["persistentvolumeclaims/status"],
            &["patch", "update"],
        ),
        rule(&[""], &["serviceaccounts/token"], &["create"]),
        rule(
            &["storage.k8s.io"],
            &["csinodes"],
            &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ],
        ),
        rule(&["storage.k8s.io"], &["csidrivers"], READ),
        rule(&["node.k8s.io"], &["runtimeclasses"], READ),
        rule(&["resource.k8s.io"], &["resourceclaims"], &["get"]),
        rule(
            &["resource.k8s.io"],
            &["resourceslices"],
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        ),
    ]
}

/// Upstream's bootstrap ClusterRoles (the ones kcore's components and users meet).
pub(crate) fn cluster_roles() -> Vec<Value> {
    let view_core = &[
        "configmaps",
        "endpoints",
        "persistentvolumeclaims",
        "persistentvolumeclaims/status",
        "pods",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "serviceaccounts",
        "services",
        "services/status",
        "bindings",
        "events",
        "limitranges",
        "namespaces/status",
        "pods/log",
        "pods/status",
        "replicationcontrollers/status",
        "resourcequotas",
        "resourcequotas/status",
        "namespaces",
    ];
    let apps = &[
        "controllerrevisions",
        "daemonsets",
        "daemonsets/status",
        "deployments",
        "deployments/scale",
        "deployments/status",
        "replicasets",
        "replicasets/scale",
        "replicasets/status",
        "statefulsets",
        "statefulsets/scale",
        "statefulsets/status",
    ];
    let apps_write = &[
        "daemonsets",
        "deployments",
        "deployments/rollback",
        "deployments/scale",
        "replicasets",
        "replicasets/scale",
        "statefulsets",
        "statefulsets/scale",
    ];
    let view = vec![
        rule(&[""], view_core, READ),
        rule(&["apps"], apps, READ),
        rule(
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
            READ,
        ),
        rule(
            &["batch"],
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
            READ,
        ),
        rule(
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
            READ,
        ),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "ingresses/status", "networkpolicies"],
            READ,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
    ];
    let edit = vec![
        rule(
            &[""],
            &[
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "secrets",
                "services/proxy",
            ],
            READ,
        ),
        rule(&[""], &["serviceaccounts"], &["impersonate"]),
        rule(
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
            ],
            WRITE,
        ),
        rule(&[""], &["pods/eviction"], &["create"]),
        rule(
            &[""],
            &[
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
            WRITE,
        ),
        rule(&[""], &["serviceaccounts/token"], &["create"]),
        rule(&["apps"], apps_write, WRITE),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
        rule(&["batch"], &["cronjobs", "jobs"], WRITE),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
            WRITE,
        ),
        rule(&["policy"], &["poddisruptionbudgets"], WRITE),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], WRITE),
    ];
    let admin = vec![
        rule(
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
            &["create"],
        ),
        rule(
            &[GROUP],
            &["rolebindings", "roles"],
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        ),
    ];
    let agg = |to: &str| json!({format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"});
    let discovery_urls = &[
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/healthz",
        "/livez",
        "/openapi",
        "/openapi/*",
        "/readyz",
        "/version",
        "/version/",
    ];
    let public_urls = &["/healthz", "/livez", "/readyz", "/version", "/version/"];
    vec![
        cluster_role(
            "cluster-admin",
            json!({}),
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        aggregated("admin", json!({}), "admin"),
        aggregated("edit", agg("admin"), "edit"),
        aggregated("view", agg("edit"), "view"),
        cluster_role("system:aggregate-to-admin", agg("admin"), admin),
        cluster_role("system:aggregate-to-edit", agg("edit"), edit),
        cluster_role("system:aggregate-to-view", agg("view"), view),
        cluster_role(
            "system:discovery",
            json!({}),
            vec![urls(discovery_urls, &["get"])],
        ),
        cluster_role(
            "system:public-info-viewer",
            json!({}),
            vec![urls(public_urls, &["get"])],
        ),
        cluster_role(
            "system:basic-user",
            json!({}),
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
                rule(
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                    &["create"],
                ),
            ],
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            json!({}),
            vec![urls(
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
                &["get"],
            )],
        ),
        cluster_role(
            "system:auth-delegator",
            json!({}),
            vec![
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
            ],
        ),
        // exists with no subjects bound, as upstream (nodes are authorized otherwise)
        cluster_role("system:node", json!({}), node_rules()),
        cluster_role(
            "system:node-proxier",
            json!({}),
            vec![
                rule(&[""], &["endpoints", "services"], &["list", "watch"]),
                rule(&[""], &["nodes"], READ),
                rule(&[""], &["events"], &["create", "patch", "update"]),
                rule(
                    &["events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
                rule(
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                    &["list", "watch"],
                ),
            ],
        ),
        cluster_role(
            "system:volume-scheduler",
            json!({}),
            vec![
                rule(
                    &[""],
                    &["persistentvolumes"],
                    &["get", "list", "patch", "update", "watch"],
                ),
                rule(&["storage.k8s.io"], &["storageclasses"], READ),
                rule(
                    &[""],
                    &["persistentvolumeclaims"],
                    &["get", "list", "patch", "update", "watch"],
                ),
            ],
        ),
        cluster_role(
            "system:kube-controller-manager",
            json!({}),
            vec![
                rule(&[""], &["events"], &["create", "patch", "update"]),
                rule(
                    &["events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
                rule(&["coordination.k8s.io"], &["leases"], &["create"]),
                json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                    "resourceNames": ["kube-controller-manager"], "verbs": ["get", "update"]}),
                rule(&[""], &["secrets", "serviceaccounts"], &["create"]),
                rule(&[""], &["secrets"], &["delete"]),
                rule(
                    &[""],
                    &["configmaps", "namespaces", "secrets", "serviceaccounts"],
                    &["get"],
                ),
                rule(&[""], &["secrets", "serviceaccounts"], &["update"]),
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
                rule(&["*"], &["*"], &["list", "watch"]),
                rule(&[""], &["serviceaccounts/token"], &["create"]),
            ],
        ),
        // kcore's controller manager runs every controller with one credential, as
        // upstream's does without `--use-service-account-credentials`: this is the union
        // of upstream's `system:controller:*` roles (the garbage collector's and the
        // namespace controller's `*` reads, updates and deletes; creates of what the
        // controllers make), never `escalate`, `bind` or `impersonate`
        cluster_role(
            "kcore:controller-manager",
            json!({}),
            vec![
                rule(
                    &["*"],
                    &["*"],
                    &[
                        "delete",
                        "deletecollection",
                        "get",
                        "list",
                        "patch",
                        "update",
                        "watch",
                    ],
                ),
                rule(
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "events",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                        "pods",
                        "pods/eviction",
                        "secrets",
                        "serviceaccounts",
                        "serviceaccounts/token",
                    ],
                    &["create"],
                ),
                rule(
                    &["apps"],
                    &["controllerrevisions", "replicasets"],
                    &["create"],
                ),
                rule(&["batch"], &["jobs"], &["create"]),
                rule(&["discovery.k8s.io"], &["endpointslices"], &["create"]),
                rule(&["events.k8s.io"], &["events"], &["create"]),
                rule(&["coordination.k8s.io"], &["leases"], &["create"]),
                rule(&["resource.k8s.io"], &["resourceclaims"], &["create"]),
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
            ],
        ),
        // kcore's node agent also runs what upstream runs beside the kubelet with their
        // own identities: the service proxy (kube-proxy), the overlay, the network
        // policy enforcer, the ingress proxy and the local volume provisioner; their
        // rights are granted to every node here (never Secrets or ConfigMaps, which only
        // the Node authorizer grants)
        cluster_role(
            "kcore:node-agent",
            json!({}),
            vec![
                rule(
                    &[""],
                    &["nodes", "namespaces", "pods", "services", "endpoints"],
                    &["list", "watch"],
                ),
                rule(
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                    &["list", "watch"],
                ),
                rule(
                    &["networking.k8s.io"],
                    &["networkpolicies", "ingresses", "ingressclasses"],
                    READ,
                ),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses/status"],
                    &["patch", "update"],
                ),
                rule(&["storage.k8s.io"], &["storageclasses"], READ),
                rule(
                    &[""],
                    &["persistentvolumes"],
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                ),
                // the provisioner publishes its node's capacity (external-provisioner's
                // role upstream)
                rule(
                    &["storage.k8s.io"],
                    &["csistoragecapacities"],
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                ),
                rule(&[""], &["persistentvolumeclaims"], &["list", "watch"]),
                // the local provisioner resizes its volumes as upstream's external
                // resizer does, also while no pod on the node uses the claim (an offline
                // expansion), where the Node authorizer sees no relationship
                rule(
                    &[""],
                    &["persistentvolumeclaims/status"],
                    &["patch", "update"],
                ),
                rule(
                    &["events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
            ],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            json!({}),
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
                &["create"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            json!({}),
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
                &["create"],
            )],
        ),
        cluster_role(
            "system:node-bootstrapper",
            json!({}),
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
                &["create", "get", "list", "watch"],
            )],
        ),
        // what the API server's client certificate may do on the nodes' API
        cluster_role(
            "system:kubelet-api-admin",
            json!({}),
            vec![
                rule(&[""], &["nodes"], &["get", "list", "watch", "proxy"]),
                rule(
                    &[""],
                    &[
                        "nodes/proxy",
                        "nodes/metrics",
                        "nodes/stats",
                        "nodes/log",
                        "nodes/pods",
                        "nodes/healthz",
                        "nodes/configz",
                    ],
                    &["*"],
                ),
            ],
        ),
        signer_approver("kube-apiserver-client"),
        signer_approver("kube-apiserver-client-kubelet"),
        signer_approver("kubelet-serving"),
        signer_approver("legacy-unknown"),
        cluster_role(
            "system:kube-scheduler",
            json!({}),
            vec![
                rule(
                    &[""],
                    &[
                        "pods",
                        "nodes",
                        "namespaces",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                        "services",
                        "replicationcontrollers",
                    ],
                    READ,
                ),
                rule(&[""], &["pods"], &["delete"]),
                rule(
                    &["storage.k8s.io"],
                    &["csidrivers", "csinodes", "csistoragecapacities"],
                    READ,
                ),
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
                rule(&[""], &["bindings", "pods/binding"], &["create"]),
                rule(&[""], &["pods/status"], &["patch", "update"]),
                rule(&[""], &["events"], &["create", "patch", "update"]),
                rule(
                    &["events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
                rule(&["apps"], &["replicasets", "statefulsets"], READ),
                rule(&["policy"], &["poddisruptionbudgets"], READ),
                rule(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["create", "get", "update"],
                ),
            ],
        ),
    ]
}

/// Upstream's bootstrap ClusterRoleBindings.
pub(crate) fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding(
            "cluster-admin",
            "cluster-admin",
            &[("Group", "system:masters")],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                ("Group", "system:authenticated"),
                ("Group", "system:unauthenticated"),
            ],
        ),
        binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &[("Group", "system:serviceaccounts")],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        binding(
            "system:volume-scheduler",
            "system:volume-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
        binding(
            "kcore:controller-manager",
            "kcore:controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
        binding(
            "system:node-proxier",
            "system:node-proxier",
            &[("User", "system:kube-proxy")],
        ),
        // as upstream: the role exists, nothing is bound to it
        binding("system:node", "system:node", &[]),
        binding(
            "kcore:node-agent",
            "kcore:node-agent",
            &[("Group", "system:nodes")],
        ),
        // as kubeadm binds them: nodes joining with a bootstrap token may ask for their
        // client certificate, which is approved, and renew it as themselves
        binding(
            "kcore:kubelet-bootstrap",
            "system:node-bootstrapper",
            &[("Group", super::bootstrap_token::GROUP)],
        ),
        binding(
            "kcore:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[("Group", super::bootstrap_token::GROUP)],
        ),
        binding(
            "kcore:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[("Group", "system:nodes")],
        ),
        // the API server's client certificate towards the nodes' API
        binding(
            "kcore:apiserver-kubelet-client",
            "system:kubelet-api-admin",
            &[("User", crate::tls::KUBELET_CLIENT_USER)],
        ),
    ]
}

fn info(plural: &str) -> &'static ResourceInfo {
    resources::lookup(GROUP, "v1", plural).expect("RBAC is served")
}

/// Adds to `existing` the entries of `wanted` it lacks (rules, subjects).
fn union(existing: &Value, wanted: &Value) -> Option<Value> {
    let mut out = existing.as_array().cloned().unwrap_or_default();
    let before = out.len();
    for w in wanted.as_array().into_iter().flatten() {
        if !out.contains(w) {
            out.push(w.clone());
        }
    }
    (out.len() != before).then_some(Value::Array(out))
}

/// Creates the bootstrap roles and bindings, or brings auto-updated ones up to date.
pub(crate) async fn reconcile(api: &Api) -> Result<(), ApiError> {
    let opts = WriteOptions::default();
    for (plural, objs, field) in [
        ("clusterroles", cluster_roles(), "rules"),
        ("clusterrolebindings", cluster_role_bindings(), "subjects"),
    ] {
        let info = info(plural);
        for want in objs {
            let name = want["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            match api.get_in(info, None, &name).await {
                Ok(mut have) => {
                    if have["metadata"]["annotations"][AUTOUPDATE] == "false" {
                        continue;
                    }
                    // aggregated roles' rules belong to the aggregation
                    if field == "rules" && want.get("aggregationRule").is_some() {
                        continue;
                    }
                    if let Some(u) = union(&have[field], &want[field]) {
                        have[field] = u;
                        api.update_in(info, None, &name, have, None, &opts).await?;
                    }
                }
                Err(e) if e.code == 404 => match api.create_in(info, None, want, &opts).await {
                    Ok(_) => {}
                    Err(e) if e.code == 409 => {}
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
    }
    aggregate(api).await
}

/// Fills the rules of every ClusterRole with an `aggregationRule` from the ClusterRoles
/// its selectors match (in name order), as upstream's aggregation controller.
pub(crate) async fn aggregate(api: &Api) -> Result<(), ApiError> {
    let info = info("clusterroles");
    // from the store, not the watch cache: the event that started this pass may be ahead
    // of the cache
    let list = api.list_in(info, None, &ListOptions::default()).await?;
    let all: Vec<Arc<Value>> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .cloned()
        .map(Arc::new)
        .collect();
    for role in all.iter().filter(|r| r["aggregationRule"].is_object()) {
        let selectors: Vec<LabelSelector> = role["aggregationRule"]["clusterRoleSelectors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| LabelSelector::from_object(s).ok())
            .collect();
        let mut rules: Vec<Value> = Vec::new();
        for other in &all {
            if other["metadata"]["name"] == role["metadata"]["name"] {
                continue;
            }
            if selectors.iter().any(|s| !s.is_empty() && s.matches(other)) {
                for r in other["rules"].as_array().into_iter().flatten() {
                    if !rules.contains(r) {
                        rules.push(r.clone());
                    }
                }
            }
        }
        let rules = Value::Array(rules);
        let current = if role["rules"].is_null() {
            json!([])
        } else {
            role["rules"].clone()
        };
        if current != rules {
            let name = role["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let mut updated = (**role).clone();
            updated["rules"] = rules;
            match api
                .update_in(info, None, &name, updated, None, &WriteOptions::default())
                .await
            {
                Ok(_) => tracing::debug!(%name, "aggregated cluster role"),
                // a concurrent change: the next pass sees it
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
