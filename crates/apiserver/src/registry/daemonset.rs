//! DaemonSets (apps/v1): upstream's defaults; the status is the controller's.

use serde_json::{json, Value};

use super::Strategy;
use crate::defaults::{obj_mut, set_default, template};
use crate::error::Cause;
use crate::validate;

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
        validate::workload(obj, causes);
    }
}
