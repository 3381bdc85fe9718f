//! Events (core/v1): the involved object's namespace and the type are validated; the
//! columns `kubectl get events` prints.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::{age, col};

/// The served `Event` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::core::v1::Event,
    "events",
    true,
    &["ev"],
    NONE,
    &[],
    true,
    &EventStrategy
);

/// The `Event` strategy.
pub(crate) struct EventStrategy;

impl Strategy for EventStrategy {
    fn kind(&self) -> &'static str {
        "Event"
    }

    /// Upstream's `ValidateEventCreate` for core/v1 Events: the involved object of a
    /// namespaced event lives in the event's namespace, and the type is known.
    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
        let io = &obj["involvedObject"]["namespace"];
        if io.as_str().is_some_and(|i| !i.is_empty() && i != ns) {
            causes.push(Cause::invalid(
                "involvedObject.namespace",
                io,
                "does not match event.namespace",
            ));
        }
        let ty = &obj["type"];
        if ty
            .as_str()
            .is_some_and(|t| !t.is_empty() && t != "Normal" && t != "Warning")
        {
            causes.push(Cause::not_supported("type", ty, &["Normal", "Warning"]));
        }
    }

    /// Upstream's `ValidateEventUpdate`: a new-style event (one with `eventTime`) keeps
    /// what it is about; a legacy event may be updated freely (count, timestamps).
    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        if old["eventTime"].is_null() {
            return;
        }
        for f in [
            "involvedObject",
            "reason",
            "type",
            "action",
            "related",
            "reportingComponent",
            "reportingInstance",
        ] {
            crate::validate::immutable(&new[f], &old[f], f, causes);
        }
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Last Seen", s, 0),
            col("Type", s, 0),
            col("Reason", s, 0),
            col("Object", s, 0),
            col("Message", s, 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let last = if o["lastTimestamp"].is_string() {
            &o["lastTimestamp"]
        } else if o["eventTime"].is_string() {
            &o["eventTime"]
        } else {
            &o["metadata"]["creationTimestamp"]
        };
        let io = &o["involvedObject"];
        vec![
            json!(age(last)),
            json!(o["type"]),
            json!(o["reason"]),
            json!(format!(
                "{}/{}",
                io["kind"].as_str().unwrap_or_default().to_lowercase(),
                io["name"].as_str().unwrap_or_default()
            )),
            json!(o["message"]),
        ]
    }
}
