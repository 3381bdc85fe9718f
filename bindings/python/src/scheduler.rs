//! `kcore.scheduler.schedule`: place a batch of Pods onto Nodes.

use k8s_openapi::api::core::v1::{Node, Pod};
use kcore_scheduler::Decision;
use pyo3::prelude::*;
use pyo3::types::PyList;
use serde_json::json;

use crate::convert::{from_py, to_py};
use crate::errors::{chain, SchedulerError};

fn objects<T: serde::de::DeserializeOwned>(
    items: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<Vec<T>> {
    let mut out = Vec::new();
    for (i, item) in items.try_iter()?.enumerate() {
        let value = from_py(&item?)?;
        let obj = serde_json::from_value(value)
            .map_err(|e| SchedulerError::new_err(format!("{what}[{i}]: {e}")))?;
        out.push(obj);
    }
    Ok(out)
}

/// Schedules `pods` onto `nodes` (Kubernetes Node and Pod objects as dicts)
/// with the default plugins and weights, and returns one dict per pod, in
/// order: `namespace`, `name`, `node` (None when unschedulable) and `reason`
/// (the FailedScheduling message, or None). Pods that name a node already
/// (`spec.nodeName`) count as running there. The GIL is released while it runs.
#[pyfunction]
pub(crate) fn schedule(
    py: Python<'_>,
    nodes: &Bound<'_, PyAny>,
    pods: &Bound<'_, PyAny>,
) -> PyResult<Py<PyList>> {
    let nodes: Vec<Node> = objects(nodes, "nodes")?;
    let pods: Vec<Pod> = objects(pods, "pods")?;
    let placements = py
        .detach(|| kcore_scheduler::schedule_batch(&nodes, &pods))
        .map_err(|e| SchedulerError::new_err(chain(&e)))?;
    let out = PyList::empty(py);
    for p in placements {
        let (node, reason) = match &p.decision {
            Decision::Node(n) => (Some(n.clone()), None),
            Decision::Unschedulable(why) => (None, Some(why.clone())),
            other => (None, Some(format!("{other:?}"))),
        };
        let v = json!({
            "namespace": p.namespace,
            "name": p.name,
            "node": node,
            "reason": reason,
        });
        out.append(to_py(py, &v)?)?;
    }
    Ok(out.unbind())
}

/// Adds the scheduler function to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(schedule, m)?)
}
