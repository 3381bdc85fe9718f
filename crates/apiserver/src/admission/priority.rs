//! The Priority admission plugin (upstream's `plugin/pkg/admission/priority`):
//!
//! - a new pod's `spec.priorityClassName` is resolved to `spec.priority` and
//!   `spec.preemptionPolicy`; a pod without one gets the global default class (the one
//!   of lowest value if several claim it), or priority 0 when there is none; an unknown
//!   class, or a priority or policy in the pod that differs from the class's, is refused
//!   with upstream's 403 messages;
//! - a PriorityClass may be marked `globalDefault` only while no other class is.

use serde_json::{json, Value};

use super::{Operation, Request};
use crate::api::{Api, ListOptions};
use crate::error::ApiError;

/// The priority of pods when no class is the global default (upstream's
/// `DefaultPriorityWhenNoDefaultClassExists`).
const DEFAULT_PRIORITY: i64 = 0;

/// Applies the plugin to a write, reading the PriorityClasses when it concerns a new pod
/// or a class marked as the default.
pub(super) async fn admit(api: &Api, req: &Request<'_>, mut obj: Value) -> Result<Value, ApiError> {
    let info = req.info;
    let pod_create = req.op == Operation::Create
        && req.sub.is_none()
        && info.group.is_empty()
        && info.plural == "pods";
    let new_default = req.op != Operation::Delete
        && info.group == "scheduling.k8s.io"
        && info.plural == "priorityclasses"
        && obj["globalDefault"].as_bool() == Some(true);
    if !pod_create && !new_default {
        return Ok(obj);
    }
    let list = api
        .list_value(
            "scheduling.k8s.io/v1",
            "priorityclasses",
            None,
            &ListOptions::default(),
        )
        .await?;
    let classes = list["items"].as_array().map_or(&[][..], Vec::as_slice);
    let forbidden = |why: String| ApiError::forbidden(&info.group, &info.plural, req.name, &why);
    if pod_create {
        resolve_pod(&mut obj, classes).map_err(forbidden)?;
    } else if let Some(d) = default_class(classes) {
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        if req.op == Operation::Create || name != req.name {
            return Err(forbidden(format!(
                "PriorityClass {name} is already marked as default. Only one default can exist"
            )));
        }
    }
    Ok(obj)
}

/// The global default class: of those marked, the one with the lowest value.
fn default_class(classes: &[Value]) -> Option<&Value> {
    classes
        .iter()
        .filter(|c| c["globalDefault"].as_bool() == Some(true))
        .min_by_key(|c| c["value"].as_i64().unwrap_or(0))
}

/// Fills `spec.priority`, `spec.preemptionPolicy` (and, from the default class,
/// `spec.priorityClassName`) of a new pod; the error is upstream's reason for refusing.
fn resolve_pod(pod: &mut Value, classes: &[Value]) -> Result<(), String> {
    let spec = &pod["spec"];
    let (class_name, priority, policy) = match spec["priorityClassName"].as_str() {
        None | Some("") => match default_class(classes) {
            Some(d) => (
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                d["value"].as_i64().unwrap_or(0),
                d["preemptionPolicy"].clone(),
            ),
            None => (
                String::new(),
                DEFAULT_PRIORITY,
                json!("PreemptLowerPriority"),
            ),
        },
        Some(name) => {
            let c = classes
                .iter()
                .find(|c| c["metadata"]["name"] == name)
                .ok_or_else(|| format!("no PriorityClass with name {name} was found"))?;
            (
                name.to_owned(),
                c["value"].as_i64().unwrap_or(0),
                c["preemptionPolicy"].clone(),
            )
        }
    };
    if let Some(given) = spec["priority"].as_i64().filter(|p| *p != priority) {
        return Err(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
        ));
    }
    if let (Some(given), Some(computed)) = (spec["preemptionPolicy"].as_str(), policy.as_str()) {
        if given != computed {
            return Err(format!(
                "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {computed} from the given PriorityClass name"
            ));
        }
    }
    let spec = &mut pod["spec"];
    if !class_name.is_empty() {
        spec["priorityClassName"] = json!(class_name);
    }
    spec["priority"] = json!(priority);
    if !policy.is_null() {
        spec["preemptionPolicy"] = policy;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, value: i64, default: bool, policy: &str) -> Value {
        json!({"metadata": {"name": name}, "value": value, "globalDefault": default,
            "preemptionPolicy": policy})
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn resolves_classes_as_upstream() {
        let classes = [
            class("high", 1000, false, "PreemptLowerPriority"),
            class("batch", 10, false, "Never"),
        ];
        let mut p = pod(json!({"priorityClassName": "high"}));
        resolve_pod(&mut p, &classes).unwrap();
        assert_eq!(p["spec"]["priority"], 1000);
        assert_eq!(p["spec"]["preemptionPolicy"], "PreemptLowerPriority");

        let mut p = pod(json!({"priorityClassName": "batch"}));
        resolve_pod(&mut p, &classes).unwrap();
        assert_eq!(p["spec"]["preemptionPolicy"], "Never");

        let mut p = pod(json!({}));
        resolve_pod(&mut p, &classes).unwrap();
        assert_eq!(p["spec"]["priority"], 0);
        assert!(p["spec"]["priorityClassName"].is_null());

        let mut p = pod(json!({"priorityClassName": "nope"}));
        assert_eq!(
            resolve_pod(&mut p, &classes).unwrap_err(),
            "no PriorityClass with name nope was found"
        );

        let mut p = pod(json!({"priorityClassName": "high", "priority": 5}));
        assert_eq!(
            resolve_pod(&mut p, &classes).unwrap_err(),
            "the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"
        );
        let mut p =
            pod(json!({"priorityClassName": "batch", "preemptionPolicy": "PreemptLowerPriority"}));
        assert!(resolve_pod(&mut p, &classes).unwrap_err().starts_with(
            "the string value of PreemptionPolicy (PreemptLowerPriority) must not be provided"
        ));
    }

    #[test]
    fn the_lowest_global_default_applies() {
        let classes = [
            class("a", 500, true, "PreemptLowerPriority"),
            class("b", 300, true, "Never"),
            class("c", 100, false, "PreemptLowerPriority"),
        ];
        let mut p = pod(json!({}));
        resolve_pod(&mut p, &classes).unwrap();
        assert_eq!(p["spec"]["priorityClassName"], "b");
        assert_eq!(p["spec"]["priority"], 300);
        assert_eq!(p["spec"]["preemptionPolicy"], "Never");
    }
}
