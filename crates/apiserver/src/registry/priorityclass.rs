//! PriorityClasses (scheduling.k8s.io/v1, cluster-scoped), as upstream's
//! `pkg/registry/scheduling/priorityclass` and `pkg/apis/scheduling/validation`:
//!
//! - names starting `system-` are reserved for the built-in classes
//!   ([`SYSTEM_CLASSES`]: `system-node-critical` and `system-cluster-critical`, with their
//!   fixed values), which the server creates at start;
//! - other classes may not go above [`HIGHEST_USER_DEFINABLE`] (one billion);
//! - `preemptionPolicy` defaults to `PreemptLowerPriority`; `value` and
//!   `preemptionPolicy` are immutable;
//! - the columns of `kubectl get priorityclass`: NAME, VALUE, GLOBAL-DEFAULT, AGE,
//!   PREEMPTIONPOLICY.
//!
//! The Priority admission of pods, and the one-global-default rule on new classes, live
//! in `admission::priority`.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::{age, col};
use crate::validate;

/// The served `PriorityClass` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::scheduling::v1::PriorityClass,
    "priorityclasses",
    false,
    &["pc"],
    NONE,
    &[],
    false,
    &PriorityClassStrategy
);

/// Upstream's `HighestUserDefinablePriority`.
pub(crate) const HIGHEST_USER_DEFINABLE: i64 = 1_000_000_000;

/// The prefix reserved for the built-in classes.
const SYSTEM_PREFIX: &str = "system-";

/// A built-in priority class: name, value and description.
pub(crate) struct SystemClass {
    pub name: &'static str,
    pub value: i64,
    pub description: &'static str,
}

/// The built-in classes, as upstream's `SystemPriorityClasses`.
pub(crate) const SYSTEM_CLASSES: &[SystemClass] = &[
    SystemClass {
        name: "system-node-critical",
        value: 2 * HIGHEST_USER_DEFINABLE + 1000,
        description: "Used for system critical pods that must not be moved from their current node.",
    },
    SystemClass {
        name: "system-cluster-critical",
        value: 2 * HIGHEST_USER_DEFINABLE,
        description: "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    },
];

impl SystemClass {
    /// The object the server creates at start.
    pub(crate) fn object(&self) -> Value {
        json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": self.name},
            "value": self.value,
            "description": self.description,
            "preemptionPolicy": "PreemptLowerPriority",
        })
    }
}

/// Upstream's `IsKnownSystemPriorityClass`: why a `system-` class is refused, if it is.
fn unknown_system_class(name: &str, value: i64, global_default: bool) -> Option<String> {
    let Some(c) = SYSTEM_CLASSES.iter().find(|c| c.name == name) else {
        return Some(format!("{name} is not a known system priority class"));
    };
    if c.value != value {
        return Some(format!("value of {name} PriorityClass must be {}", c.value));
    }
    if global_default {
        return Some(format!(
            "globalDefault of {name} PriorityClass must be false"
        ));
    }
    None
}

/// The `PriorityClass` strategy.
pub(crate) struct PriorityClassStrategy;

impl Strategy for PriorityClassStrategy {
    fn kind(&self) -> &'static str {
        "PriorityClass"
    }

    fn settle_in_cache(&self) -> bool {
        true
    }

    fn defaults(&self, obj: &mut Value) {
        if obj["preemptionPolicy"].is_null() {
            obj["preemptionPolicy"] = json!("PreemptLowerPriority");
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let value = obj["value"].as_i64().unwrap_or(0);
        if name.starts_with(SYSTEM_PREFIX) {
            let gd = obj["globalDefault"].as_bool().unwrap_or(false);
            if let Some(why) = unknown_system_class(name, value, gd) {
                causes.push(Cause::forbidden(
                    "metadata.name",
                    &format!(
                        "priority class names with '{SYSTEM_PREFIX}' prefix are reserved for system use only. error: {why}"
                    ),
                ));
            }
        } else if value > HIGHEST_USER_DEFINABLE {
            causes.push(Cause::forbidden(
                "value",
                &format!(
                    "maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE}"
                ),
            ));
        }
        let p = &obj["preemptionPolicy"];
        if !p.is_null() {
            validate::one_of(
                p,
                "preemptionPolicy",
                &["Never", "PreemptLowerPriority"],
                causes,
            );
        }
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        if new["value"] != old["value"] {
            causes.push(Cause::forbidden(
                "value",
                "may not be changed in an update.",
            ));
        }
        validate::immutable(
            &new["preemptionPolicy"],
            &old["preemptionPolicy"],
            "preemptionPolicy",
            causes,
        );
    }

    fn table_columns(&self) -> Vec<Value> {
        vec![
            col("Name", "string", 0),
            col("Value", "integer", 0),
            col("Global-Default", "boolean", 0),
            col("Age", "string", 0),
            col("PreemptionPolicy", "string", 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        vec![
            json!(o["metadata"]["name"]),
            json!(o["value"].as_i64().unwrap_or(0)),
            json!(o["globalDefault"].as_bool().unwrap_or(false)),
            json!(age(&o["metadata"]["creationTimestamp"])),
            json!(o["preemptionPolicy"]
                .as_str()
                .unwrap_or("PreemptLowerPriority")),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(obj: Value) -> Vec<(String, String)> {
        let mut o = obj;
        PriorityClassStrategy.defaults(&mut o);
        let mut c = Vec::new();
        PriorityClassStrategy.validate(&o, &mut c);
        c.into_iter().map(|c| (c.field, c.message)).collect()
    }

    #[test]
    fn validation_as_upstream() {
        assert!(causes(json!({"metadata": {"name": "high"}, "value": 1000})).is_empty());
        for c in SYSTEM_CLASSES {
            assert!(causes(c.object()).is_empty(), "{}", c.name);
        }
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                json!({"metadata": {"name": "huge"}, "value": 1_000_000_001}),
                "value",
                "maximum allowed value of a user defined priority is 1000000000",
            ),
            (
                json!({"metadata": {"name": "system-mine"}, "value": 5}),
                "metadata.name",
                "reserved for system use only. error: system-mine is not a known system priority class",
            ),
            (
                json!({"metadata": {"name": "system-node-critical"}, "value": 5}),
                "metadata.name",
                "value of system-node-critical PriorityClass must be 2000001000",
            ),
            (
                json!({"metadata": {"name": "p"}, "value": 5, "preemptionPolicy": "Sometimes"}),
                "preemptionPolicy",
                "Unsupported value",
            ),
        ];
        for (obj, field, msg) in cases {
            let c = causes(obj.clone());
            assert!(
                c.iter().any(|(f, m)| f == field && m.contains(msg)),
                "{obj}: want {field}: {msg}, got {c:?}"
            );
        }
        let mut c = Vec::new();
        let old = json!({"value": 1, "preemptionPolicy": "Never"});
        let new = json!({"value": 2, "preemptionPolicy": "PreemptLowerPriority"});
        PriorityClassStrategy.validate_update(&new, &old, &mut c);
        let fields: Vec<_> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["value", "preemptionPolicy"]);
        assert_eq!(c[0].message, "Forbidden: may not be changed in an update.");
    }

    #[test]
    fn columns() {
        let o = json!({"metadata": {"name": "high"}, "value": 1000, "globalDefault": true});
        let cells = PriorityClassStrategy.table_cells(&o);
        assert_eq!(cells[1], 1000);
        assert_eq!(cells[2], true);
        assert_eq!(cells[4], "PreemptLowerPriority");
        assert_eq!(PriorityClassStrategy.table_columns().len(), cells.len());
    }
}
