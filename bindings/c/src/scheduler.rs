//! The scheduler: pods onto nodes, JSON in and out.

use std::ffi::c_char;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};

use crate::ffi::{boundary, chain, clear_out, non_null, put_json, req_str, Failure};
use crate::KcoreResult;

/// A JSON array of objects, or a `*List` object with `items`.
fn items<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<Vec<T>, Failure> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Failure::invalid(format!("parameter {what}: {e}")))?;
    let list = match v {
        Value::Array(a) => a,
        Value::Object(mut m) => match m.remove("items") {
            Some(Value::Array(a)) => a,
            Some(Value::Null) => Vec::new(),
            _ => {
                return Err(Failure::invalid(format!(
                    "parameter {what}: expected an array or an object with items"
                )))
            }
        },
        _ => {
            return Err(Failure::invalid(format!(
                "parameter {what}: expected an array or an object with items"
            )))
        }
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v)
                .map_err(|e| Failure::invalid(format!("parameter {what}[{i}]: {e}")))
        })
        .collect()
}

/// Schedules pods onto nodes with Kubernetes' default plugins and weights.
///
/// `nodes_json` and `pods_json` are JSON arrays of Node and Pod objects (or
/// List objects with `items`). Pods that already have `spec.nodeName` count
/// against that node and are reported there; the others are placed in order.
/// `*out_json` receives an array with one entry per pod, in order:
/// `{"namespace": "default", "name": "web", "node": "n1", "reason": null}` or,
/// when nothing fits, `"node": null` and the FailedScheduling text in `reason`.
/// Free it with `kcore_string_free`.
///
/// # Safety
/// The strings are NUL-terminated; `out_json` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_scheduler_schedule(
    nodes_json: *const c_char,
    pods_json: *const c_char,
    out_json: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out_json) };
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (nodes, pods) = unsafe {
            (
                req_str(nodes_json, "nodes_json")?,
                req_str(pods_json, "pods_json")?,
            )
        };
        non_null(out_json, "out_json")?;
        let nodes: Vec<Node> = items(nodes, "nodes_json")?;
        let pods: Vec<Pod> = items(pods, "pods_json")?;
        let placements = kcore_scheduler::schedule_batch(&nodes, &pods)
            .map_err(|e| Failure::new(KcoreResult::KCORE_SCHEDULER_ERROR, chain(&e)))?;
        let out: Vec<Value> = placements
            .iter()
            .map(|p| {
                let reason = match &p.decision {
                    kcore_scheduler::Decision::Unschedulable(r) => Some(r.as_str()),
                    _ => None,
                };
                json!({"namespace": p.namespace, "name": p.name, "node": p.node(), "reason": reason})
            })
            .collect();
        // SAFETY: out_json is non-NULL and valid for writes.
        unsafe { put_json(out_json, &out) }
    })
}
