//! PodDisruptionBudgets (policy/v1): `minAvailable` or `maxUnavailable` (not both), each
//! a non-negative count or a percentage up to 100%, a valid selector (which may change,
//! as upstream since 1.15) and a known unhealthy-pod eviction policy.

use serde_json::Value;

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, NONE};
use crate::validate;

/// The served `PodDisruptionBudget` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::policy::v1::PodDisruptionBudget,
    "poddisruptionbudgets",
    true,
    &["pdb"],
    NONE,
    &[Sub::Status],
    false,
    &PodDisruptionBudgetStrategy
);

/// The `PodDisruptionBudget` strategy.
pub(crate) struct PodDisruptionBudgetStrategy;

impl Strategy for PodDisruptionBudgetStrategy {
    fn kind(&self) -> &'static str {
        "PodDisruptionBudget"
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        if !spec["minAvailable"].is_null() && !spec["maxUnavailable"].is_null() {
            causes.push(Cause::invalid(
                "spec",
                spec,
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        for f in ["minAvailable", "maxUnavailable"] {
            validate::int_or_percent(&spec[f], &format!("spec.{f}"), causes);
        }
        validate::label_selector(&spec["selector"], "spec.selector", causes);
        validate::one_of(
            &spec["unhealthyPodEvictionPolicy"],
            "spec.unhealthyPodEvictionPolicy",
            &["AlwaysAllow", "IfHealthyBudget"],
            causes,
        );
    }
}
