//! DaemonSets (apps/v1): upstream's defaults and validation (the template's pod spec,
//! the update strategy, a selector that never changes); the status is the controller's.

use serde_json::{json, Value};

use super::Strategy;
use crate::defaults::{obj_mut, set_default, template};
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, ALL};
use crate::table::{age, col, containers_images, num, selector_str};
use crate::validate;

/// The served `DaemonSet` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::apps::v1::DaemonSet,
    "daemonsets",
    true,
    &["ds"],
    ALL,
    &[Sub::Status],
    false,
    &DaemonSetStrategy
);

/// The `DaemonSet` strategy.
pub(crate) struct DaemonSetStrategy;

impl Strategy for DaemonSetStrategy {
    fn kind(&self) -> &'static str {
        "DaemonSet"
    }

    fn defaults(&self, obj: &mut Value) {
        template(obj);
        let spec = obj_mut(obj, "spec");
        set_default(spec, "revisionHistoryLimit", json!(10));
        let us = obj_mut(spec, "updateStrategy");
        set_default(us, "type", json!("RollingUpdate"));
        if us["type"] == "RollingUpdate" {
            let ru = obj_mut(us, "rollingUpdate");
            set_default(ru, "maxUnavailable", json!(1));
            set_default(ru, "maxSurge", json!(0));
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj.as_object_mut().map(|o| o.remove("status"));
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate::workload(obj, "DaemonSet", validate::Template::PodSpec, causes);
        let us = &obj["spec"]["updateStrategy"];
        validate::one_of(
            &us["type"],
            "spec.updateStrategy.type",
            &["OnDelete", "RollingUpdate"],
            causes,
        );
        let ru = &us["rollingUpdate"];
        let p = "spec.updateStrategy.rollingUpdate";
        validate::int_or_percent(
            &ru["maxUnavailable"],
            &format!("{p}.maxUnavailable"),
            causes,
        );
        validate::int_or_percent(&ru["maxSurge"], &format!("{p}.maxSurge"), causes);
        if !ru.is_null()
            && validate::is_zero_or_percent(&ru["maxUnavailable"])
            && (ru["maxSurge"].is_null() || validate::is_zero_or_percent(&ru["maxSurge"]))
        {
            causes.push(Cause::invalid(
                format!("{p}.maxUnavailable"),
                &ru["maxUnavailable"],
                "may not be 0 when `maxSurge` is 0",
            ));
        }
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
            col("Up-to-date", i, 0),
            col("Available", i, 0),
            col("Node Selector", s, 0),
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
            json!(num(&st["desiredNumberScheduled"])),
            json!(num(&st["currentNumberScheduled"])),
            json!(num(&st["numberReady"])),
            json!(num(&st["updatedNumberScheduled"])),
            json!(num(&st["numberAvailable"])),
            json!(selector_str(&spec["template"]["spec"]["nodeSelector"])),
            a,
            json!(c),
            json!(i),
            json!(selector_str(&spec["selector"])),
        ]
    }
}
