//! ReplicaSets (apps/v1): upstream's defaults; the status is the controller's.

use serde_json::{json, Value};

use super::Strategy;
use crate::defaults::{obj_mut, set_default, template};
use crate::error::Cause;
use crate::validate;

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
        validate::workload(obj, causes);
    }
}
