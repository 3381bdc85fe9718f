//! `events.k8s.io/v1` Events: a second view of the core Events, served from the same
//! storage as upstream does. An object is stored in its core/v1 form and converted
//! field by field on the way in and out (`regarding` is `involvedObject`, `note` is
//! `message`, `reportingController` is `reportingComponent`, and the legacy counters
//! are `deprecated*`), so an Event written through either API reads back through both.
//!
//! Writes through this API are held to upstream's strict rules for new-style events
//! (`eventTime`, `reportingController`, `reportingInstance`, `action` and `reason`
//! required; the legacy fields unset), with the field paths of the core type, as
//! upstream reports them.

use serde_json::{json, Map, Value};

use super::event::EventStrategy;
use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::validate;

/// The served `events.k8s.io/v1` `Event` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::events::v1::Event,
    "events",
    true,
    &["ev"],
    NONE,
    &[],
    true,
    &EventsV1Strategy
);

/// Fields renamed between core/v1 (left) and events.k8s.io/v1 (right).
const RENAMED: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// Upstream's length limits for new-style events.
const REPORTING_INSTANCE_MAX: usize = 128;
const ACTION_MAX: usize = 128;
const REASON_MAX: usize = 128;
const NOTE_MAX: usize = 1024;

/// Renames the fields of `obj` (`from` → `to`) and sets its apiVersion.
fn convert(obj: &Value, api_version: &str, to_core: bool) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::with_capacity(m.len());
    for (k, v) in m {
        let renamed = RENAMED
            .iter()
            .find_map(|(core, v1)| match to_core {
                true if k == v1 => Some(*core),
                false if k == core => Some(*v1),
                _ => None,
            })
            .unwrap_or(k);
        out.insert(renamed.to_owned(), v.clone());
    }
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

/// An `events.k8s.io/v1` Event in its core/v1 form.
pub(crate) fn to_core(obj: &Value) -> Value {
    convert(obj, "v1", true)
}

/// A core/v1 Event in its `events.k8s.io/v1` form.
pub(crate) fn from_core(obj: &Value) -> Value {
    convert(obj, "events.k8s.io/v1", false)
}

fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_i64() != Some(0),
        Value::Object(m) => m.values().any(is_set),
        _ => true,
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn required_within(obj: &Value, field: &str, max: usize, causes: &mut Vec<Cause>) {
    let v = text(&obj[field]);
    if v.is_empty() {
        causes.push(Cause::required(field));
    } else if v.len() > max {
        causes.push(Cause::invalid(
            field,
            &json!(""),
            &format!("can have at most {max} characters"),
        ));
    }
}

/// The `events.k8s.io/v1` Event strategy.
pub(crate) struct EventsV1Strategy;

impl Strategy for EventsV1Strategy {
    fn kind(&self) -> &'static str {
        "Event"
    }

    fn stored_as(&self) -> Option<(&'static str, &'static str)> {
        Some(("", "events"))
    }

    fn stored_form(&self, obj: &Value) -> Option<Value> {
        Some(to_core(obj))
    }

    fn serve_stored(&self, obj: &mut Value) {
        if obj["apiVersion"] != "events.k8s.io/v1" {
            *obj = from_core(obj);
        }
    }

    /// Upstream's `ValidateEventCreate` for a request through events.k8s.io/v1: the
    /// new-style rules of `legacyValidateEvent`, then the strict ones.
    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let core = to_core(obj);
        let ns = text(&core["metadata"]["namespace"]);
        let io_ns = &core["involvedObject"]["namespace"];
        if text(io_ns).is_empty() && ns != "default" && ns != "kube-system" {
            causes.push(Cause::invalid(
                "involvedObject.namespace",
                io_ns,
                "does not match event.namespace",
            ));
        }
        if text(&core["reportingComponent"]).is_empty() {
            causes.push(Cause::required("reportingController"));
        } else {
            validate::label_name(&core["reportingComponent"], "reportingController", causes);
        }
        required_within(&core, "reportingInstance", REPORTING_INSTANCE_MAX, causes);
        required_within(&core, "action", ACTION_MAX, causes);
        required_within(&core, "reason", REASON_MAX, causes);
        if text(&core["message"]).len() > NOTE_MAX {
            causes.push(Cause::invalid(
                "message",
                &json!(""),
                &format!("can have at most {NOTE_MAX} characters"),
            ));
        }
        validate_series(&core, causes);
        if !is_set(&core["eventTime"]) {
            causes.push(Cause::required("eventTime"));
        }
        let ty = text(&core["type"]);
        if ty != "Normal" && ty != "Warning" {
            causes.push(Cause::invalid(
                "type",
                &json!(""),
                &format!("has invalid value: {ty}"),
            ));
        }
        for f in ["firstTimestamp", "lastTimestamp", "count", "source"] {
            if is_set(&core[f]) {
                causes.push(Cause::invalid(f, &json!(""), "needs to be unset"));
            }
        }
    }

    /// Upstream's `ValidateEventUpdate` through events.k8s.io/v1: what the event is
    /// about and when it happened do not change; a changed series is checked again.
    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        let (new, old) = (to_core(new), to_core(old));
        if new["series"] != old["series"] {
            validate_series(&new, causes);
        }
        for f in [
            "involvedObject",
            "reason",
            "message",
            "source",
            "firstTimestamp",
            "lastTimestamp",
            "count",
            "type",
            "eventTime",
            "action",
            "related",
            "reportingComponent",
            "reportingInstance",
        ] {
            let path = if f == "reportingComponent" {
                "reportingController"
            } else {
                f
            };
            validate::immutable(&new[f], &old[f], path, causes);
        }
    }

    fn spec_of(&self, obj: &Value) -> Value {
        EventStrategy.spec_of(&to_core(obj))
    }

    fn table_columns(&self) -> Vec<Value> {
        EventStrategy.table_columns()
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        EventStrategy.table_cells(&to_core(o))
    }
}

/// Upstream's `validateV1EventSeries`.
fn validate_series(core: &Value, causes: &mut Vec<Cause>) {
    let series = &core["series"];
    if series.is_null() {
        return;
    }
    if series["count"].as_i64().unwrap_or(0) < 2 {
        causes.push(Cause::invalid(
            "series.count",
            &json!(""),
            "should be at least 2",
        ));
    }
    if !is_set(&series["lastObservedTime"]) {
        causes.push(Cause::required("series.lastObservedTime"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_round_trips_and_renames() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
            "note": "pulled", "reportingController": "kcore.dev/node",
            "deprecatedCount": 3, "reason": "Pulled"});
        let core = to_core(&v1);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "pulled");
        assert_eq!(core["reportingComponent"], "kcore.dev/node");
        assert_eq!(core["count"], 3);
        assert!(core.get("note").is_none());
        assert_eq!(from_core(&core), v1);
    }

    #[test]
    fn strict_rules_name_core_fields_as_upstream() {
        let mut causes = Vec::new();
        let bad = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"}, "type": "Odd",
            "deprecatedCount": 2});
        EventsV1Strategy.validate(&bad, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        for f in [
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
            "eventTime",
            "type",
            "count",
        ] {
            assert!(fields.contains(&f), "{f} missing in {fields:?}");
        }
    }
}
