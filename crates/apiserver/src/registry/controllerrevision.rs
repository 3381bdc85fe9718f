//! ControllerRevisions (apps/v1): a revision number that is not negative and data that
//! never changes.

use serde_json::Value;

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::validate;

/// The served `ControllerRevision` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::apps::v1::ControllerRevision,
    "controllerrevisions",
    true,
    &[],
    NONE,
    &[],
    false,
    &ControllerRevisionStrategy
);

/// The `ControllerRevision` strategy.
pub(crate) struct ControllerRevisionStrategy;

impl Strategy for ControllerRevisionStrategy {
    fn kind(&self) -> &'static str {
        "ControllerRevision"
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate::non_negative(&obj["revision"], "revision", causes);
        if obj["data"].is_null() {
            causes.push(Cause::required_because("data", "data is mandatory"));
        }
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        validate::immutable(&new["data"], &old["data"], "data", causes);
    }
}
