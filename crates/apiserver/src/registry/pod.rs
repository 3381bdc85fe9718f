//! Pods: a new pod starts Pending with its QoS class; a pod bound to a node is deleted
//! gracefully (marked, then removed by its node agent); the spec is validated as
//! upstream's `ValidatePodSpec`, and an update may change only what upstream allows
//! (`validate::pod`).

use serde_json::{json, Value};

use super::Strategy;
use crate::defaults::{obj_mut, pod_spec, set_default};
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, ALL};
use crate::table::{age, col, num};
use crate::validate;

/// The served `Pod` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::core::v1::Pod,
    "pods",
    true,
    &["po"],
    ALL,
    &[
        Sub::Status,
        Sub::Binding,
        Sub::Eviction,
        Sub::Log,
        Sub::Exec,
        Sub::Attach,
        Sub::PortForward,
        Sub::EphemeralContainers
    ],
    false,
    &PodStrategy
);

/// The `Pod` strategy.
pub(crate) struct PodStrategy;

impl Strategy for PodStrategy {
    fn kind(&self) -> &'static str {
        "Pod"
    }

    fn watch_index(&self) -> Option<&'static str> {
        // every kubelet watches its own pods
        Some("spec.nodeName")
    }

    fn defaults(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        pod_spec(spec);
        set_default(spec, "serviceAccountName", json!("default"));
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending", "qosClass": qos_class(&obj["spec"])});
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate::pod::spec(&obj["spec"], "spec", causes);
        validate::pod::status(&obj["status"], causes);
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        validate::pod::update(new, old, causes);
    }

    fn graceful_deletion(&self, old: &Value, requested: Option<i64>) -> Option<i64> {
        let grace = requested
            .or_else(|| old["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30);
        let graceful = old["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
            && grace > 0
            && !matches!(
                old["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            );
        graceful.then_some(grace)
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("Ready", s, 0),
            col("Status", s, 0),
            col("Restarts", s, 0),
            col("Age", s, 0),
            col("IP", s, 1),
            col("Node", s, 1),
            col("Nominated Node", s, 1),
            col("Readiness Gates", s, 1),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let name = json!(o["metadata"]["name"]);
        let a = json!(age(&o["metadata"]["creationTimestamp"]));
        let st = &o["status"];
        let spec = &o["spec"];
        let cs = st["containerStatuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let total = spec["containers"].as_array().map_or(0, Vec::len);
        let ready = cs.iter().filter(|c| c["ready"] == true).count();
        let restarts: i64 = cs.iter().map(|c| num(&c["restartCount"])).sum();
        vec![
            name,
            json!(format!("{ready}/{total}")),
            json!(pod_status(o)),
            json!(restarts.to_string()),
            a,
            json!(st["podIP"].as_str().unwrap_or("<none>")),
            json!(spec["nodeName"].as_str().unwrap_or("<none>")),
            json!("<none>"),
            json!("<none>"),
        ]
    }
}

fn pod_status(o: &Value) -> String {
    if o["metadata"]["deletionTimestamp"].is_string() {
        return "Terminating".into();
    }
    for cs in o["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(r) = cs["state"]["waiting"]["reason"].as_str() {
            return r.to_owned();
        }
        if let Some(r) = cs["state"]["terminated"]["reason"].as_str() {
            return r.to_owned();
        }
    }
    o["status"]["reason"]
        .as_str()
        .or(o["status"]["phase"].as_str())
        .unwrap_or("Pending")
        .to_owned()
}

/// A new pod's `status.qosClass`: kcore-k8s's rule (app and init containers,
/// pod-level resources, requests defaulted from limits), read from only the
/// resources of the spec. A spec too malformed to read is rejected by
/// validation right after; it gets BestEffort meanwhile.
fn qos_class(spec: &Value) -> &'static str {
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use serde::Deserialize;
    #[derive(Deserialize)]
    struct Container {
        resources: Option<ResourceRequirements>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Spec {
        containers: Option<Vec<Container>>,
        init_containers: Option<Vec<Container>>,
        resources: Option<ResourceRequirements>,
    }
    let Ok(spec) = Spec::deserialize(spec) else {
        return kcore_k8s::QosClass::BestEffort.as_str();
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter())
        .flatten()
        .map(|c| c.resources.as_ref());
    kcore_k8s::qos_class(spec.resources.as_ref(), containers).as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_values_are_kept() {
        let mut p = json!({"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "x:latest", "imagePullPolicy": "Never"}]}});
        PodStrategy.defaults(&mut p);
        assert_eq!(p["spec"]["restartPolicy"], "Never");
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Never");
    }

    #[test]
    fn only_bound_running_pods_delete_gracefully() {
        let bound = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert_eq!(PodStrategy.graceful_deletion(&bound, None), Some(30));
        assert_eq!(PodStrategy.graceful_deletion(&bound, Some(0)), None);
        let done = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}});
        assert_eq!(PodStrategy.graceful_deletion(&done, None), None);
        let unbound = json!({"spec": {}, "status": {"phase": "Pending"}});
        assert_eq!(PodStrategy.graceful_deletion(&unbound, None), None);
    }
}
