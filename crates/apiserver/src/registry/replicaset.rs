//! ReplicaSets (apps/v1): upstream's defaults and validation (the template's pod spec,
//! a selector that never changes); the status is the controller's.

use serde_json::{json, Value};

use super::Strategy;
use crate::defaults::{obj_mut, set_default, template};
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, ALL};
use crate::table::{age, col, containers_images, num, selector_str};
use crate::validate;

/// The served `ReplicaSet` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::apps::v1::ReplicaSet,
    "replicasets",
    true,
    &["rs"],
    ALL,
    &[Sub::Status, Sub::Scale],
    false,
    &ReplicaSetStrategy
);

/// The `ReplicaSet` strategy.
pub(crate) struct ReplicaSetStrategy;

impl Strategy for ReplicaSetStrategy {
    fn kind(&self) -> &'static str {
        "ReplicaSet"
    }

    fn defaults(&self, obj: &mut Value) {
        template(obj);
        set_default(obj_mut(obj, "spec"), "replicas", json!(1));
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj.as_object_mut().map(|o| o.remove("status"));
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate::workload(obj, "ReplicaSet", validate::Template::PodSpec, causes);
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        validate::immutable(
            &new["spec"]["selector"],
            &old["spec"]["selector"],
            "spec.selector",
            causes,
        );
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        let i = "integer";
        vec![
            col("Name", s, 0),
            col("Desired", i, 0),
            col("Current", i, 0),
            col("Ready", i, 0),
            col("Age", s, 0),
            col("Containers", s, 1),
            col("Images", s, 1),
            col("Selector", s, 1),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let name = json!(o["metadata"]["name"]);
        let a = json!(age(&o["metadata"]["creationTimestamp"]));
        let st = &o["status"];
        let spec = &o["spec"];
        let (c, i) = containers_images(&spec["template"]["spec"]);
        vec![
            name,
            json!(num(&spec["replicas"])),
            json!(num(&st["replicas"])),
            json!(num(&st["readyReplicas"])),
            a,
            json!(c),
            json!(i),
            json!(selector_str(&spec["selector"])),
        ]
    }
}
