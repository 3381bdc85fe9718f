//! StatefulSets (apps/v1): upstream's defaults and validation; `serviceName` must be a
//! DNS label, and an update may change only replicas, ordinals, template, update
//! strategy, revision history limit, claim retention policy and minReadySeconds; the
//! status is the controller's.

use serde_json::{json, Value};

use super::Strategy;
use crate::defaults::{obj_mut, set_default, template};
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, ALL};
use crate::table::{age, col, containers_images, num};
use crate::validate;

/// The served `StatefulSet` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::apps::v1::StatefulSet,
    "statefulsets",
    true,
    &["sts"],
    ALL,
    &[Sub::Status, Sub::Scale],
    false,
    &StatefulSetStrategy
);

/// The spec fields an update may change.
const UPDATABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

/// The `StatefulSet` strategy.
pub(crate) struct StatefulSetStrategy;

impl Strategy for StatefulSetStrategy {
    fn kind(&self) -> &'static str {
        "StatefulSet"
    }

    fn defaults(&self, obj: &mut Value) {
        template(obj);
        let spec = obj_mut(obj, "spec");
        set_default(spec, "replicas", json!(1));
        set_default(spec, "podManagementPolicy", json!("OrderedReady"));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(
            spec,
            "persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
        let us = obj_mut(spec, "updateStrategy");
        set_default(us, "type", json!("RollingUpdate"));
        if us["type"] == "RollingUpdate" {
            set_default(obj_mut(us, "rollingUpdate"), "partition", json!(0));
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj.as_object_mut().map(|o| o.remove("status"));
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate::workload(obj, "StatefulSet", validate::Template::PoliciesOnly, causes);
        let spec = &obj["spec"];
        validate::one_of(
            &spec["podManagementPolicy"],
            "spec.podManagementPolicy",
            &["OrderedReady", "Parallel"],
            causes,
        );
        let us = &spec["updateStrategy"];
        validate::one_of(
            &us["type"],
            "spec.updateStrategy.type",
            &["OnDelete", "RollingUpdate"],
            causes,
        );
        if us["type"] == "OnDelete" && !us["rollingUpdate"].is_null() {
            causes.push(Cause::invalid(
                "spec.updateStrategy.rollingUpdate",
                &us["rollingUpdate"],
                "only allowed for updateStrategy 'RollingUpdate'",
            ));
        }
        validate::non_negative(
            &us["rollingUpdate"]["partition"],
            "spec.updateStrategy.rollingUpdate.partition",
            causes,
        );
        validate::non_negative(&spec["ordinals"]["start"], "spec.ordinals.start", causes);
        for (k, v) in [
            (
                "whenDeleted",
                &spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
            ),
            (
                "whenScaled",
                &spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"],
            ),
        ] {
            validate::one_of(
                v,
                &format!("spec.persistentVolumeClaimRetentionPolicy.{k}"),
                &["Retain", "Delete"],
                causes,
            );
        }
        if spec["serviceName"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && !validate::is_dns1123_label(s))
        {
            causes.push(Cause::invalid(
                "spec.serviceName",
                &spec["serviceName"],
                validate::MSG_LABEL,
            ));
        }
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        // Upstream's ValidateStatefulSetUpdate: everything in the spec but these is fixed.
        let mut rest = new["spec"].clone();
        let mut old_rest = old["spec"].clone();
        for v in [&mut rest, &mut old_rest] {
            if let Some(o) = v.as_object_mut() {
                for k in UPDATABLE {
                    o.remove(*k);
                }
            }
        }
        if rest != old_rest {
            causes.push(Cause::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("Ready", s, 0),
            col("Age", s, 0),
            col("Containers", s, 1),
            col("Images", s, 1),
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
            json!(format!(
                "{}/{}",
                num(&st["readyReplicas"]),
                num(&spec["replicas"])
            )),
            a,
            json!(c),
            json!(i),
        ]
    }
}
