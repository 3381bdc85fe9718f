//! Leases (coordination.k8s.io/v1): durations and transitions are validated; the
//! columns `kubectl get leases` prints.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::{age, col};
use crate::validate;

/// The served `Lease` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::coordination::v1::Lease,
    "leases",
    true,
    &[],
    NONE,
    &[],
    true,
    &LeaseStrategy
);

/// The `Lease` strategy.
pub(crate) struct LeaseStrategy;

impl Strategy for LeaseStrategy {
    fn kind(&self) -> &'static str {
        "Lease"
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        if spec["leaseDurationSeconds"]
            .as_i64()
            .is_some_and(|d| d <= 0)
        {
            causes.push(Cause::invalid(
                "spec.leaseDurationSeconds",
                &spec["leaseDurationSeconds"],
                "must be greater than 0",
            ));
        }
        validate::non_negative(&spec["leaseTransitions"], "spec.leaseTransitions", causes);
        validate::one_of(
            &spec["strategy"],
            "spec.strategy",
            &["OldestEmulationVersion"],
            causes,
        );
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![col("Name", s, 0), col("Holder", s, 0), col("Age", s, 0)]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let name = json!(o["metadata"]["name"]);
        let a = json!(age(&o["metadata"]["creationTimestamp"]));
        let spec = &o["spec"];
        vec![
            name,
            json!(spec["holderIdentity"].as_str().unwrap_or("")),
            a,
        ]
    }
}
