//! One-shot scheduling of a batch of pods onto a fixed set of nodes, for
//! callers that hold plain k8s-openapi objects (the C and Python bindings, tools).

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::{Error, Framework, Outcome, Scheduler, Snapshot};

/// Where one pod of a [`schedule_batch`] call went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The pod's namespace (`default` when the object names none).
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The decision.
    pub decision: Decision,
}

/// The decision for one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Placed on the named node.
    Node(String),
    /// No node fits; the text is the upstream FailedScheduling message
    /// (`0/3 nodes are available: 3 Insufficient cpu.`).
    Unschedulable(String),
}

impl Placement {
    /// The node the pod went to, if any.
    pub fn node(&self) -> Option<&str> {
        match &self.decision {
            Decision::Node(n) => Some(n),
            Decision::Unschedulable(_) => None,
        }
    }
}

/// Schedules `pods` onto `nodes` with the default [`Framework`] (Kubernetes'
/// default plugins and weights) and returns one [`Placement`] per pod, in order.
///
/// Pods that already name a node (`spec.nodeName`) are taken as running there:
/// they are loaded first, count against that node's capacity, and are reported
/// on it. The others are scheduled one after another, each placement counting
/// against the pods that follow. Preemption may be considered but never evicts
/// anything: a pod that would need it is reported unschedulable.
pub fn schedule_batch(nodes: &[Node], pods: &[Pod]) -> Result<Vec<Placement>, Error> {
    let _span =
        tracing::debug_span!("schedule_batch", nodes = nodes.len(), pods = pods.len()).entered();
    let mut snap = Snapshot::new();
    for node in nodes {
        snap.upsert_node(node)?;
    }
    for pod in pods {
        snap.upsert_pod(pod)?;
    }
    let mut sched = Scheduler::new(Framework::with_defaults());
    let mut out = Vec::with_capacity(pods.len());
    for pod in pods {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let decision = match bound {
            Some(node) => Decision::Node(node),
            None => {
                let info = snap.compile_pod(pod)?;
                match sched.schedule_one(&mut snap, info) {
                    Outcome::Assumed { result, .. } | Outcome::Waiting { result, .. } => {
                        Decision::Node(result.node_name)
                    }
                    Outcome::Unschedulable(fit) => {
                        let key = format!("{namespace}/{name}");
                        snap.clear_nomination(&key);
                        Decision::Unschedulable(fit.to_string())
                    }
                    Outcome::Rejected(status) => Decision::Unschedulable(format!(
                        "rejected by {}: {}",
                        status.plugin(),
                        status.reasons().join(", ")
                    )),
                }
            }
        };
        out.push(Placement {
            namespace,
            name,
            decision,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}
        }))
        .expect("node")
    }

    fn pod(name: &str, cpu: &str, node_name: Option<&str>) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": cpu}}}]}
        });
        if let Some(n) = node_name {
            v["spec"]["nodeName"] = json!(n);
        }
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn fills_capacity_then_reports_unschedulable() {
        let nodes = [node("a", "1"), node("b", "1")];
        let pods = [
            pod("p1", "600m", None),
            pod("p2", "600m", None),
            pod("p3", "600m", None),
        ];
        let got = schedule_batch(&nodes, &pods).expect("schedule");
        assert_eq!(got.len(), 3);
        let n1 = got[0].node().expect("p1 placed").to_string();
        let n2 = got[1].node().expect("p2 placed").to_string();
        assert_ne!(n1, n2, "600m + 600m does not fit one 1-cpu node");
        assert_eq!(got[2].namespace, "ns");
        assert_eq!(got[2].name, "p3");
        match &got[2].decision {
            Decision::Unschedulable(msg) => {
                assert!(msg.contains("0/2 nodes are available"), "{msg}");
                assert!(msg.contains("Insufficient cpu"), "{msg}");
            }
            other => panic!("p3 should not fit: {other:?}"),
        }
    }

    #[test]
    fn bound_pods_take_capacity_first() {
        let nodes = [node("a", "1"), node("b", "1")];
        let pods = [pod("new", "600m", None), pod("old", "600m", Some("a"))];
        let got = schedule_batch(&nodes, &pods).expect("schedule");
        assert_eq!(got[0].node(), Some("b"));
        assert_eq!(got[1].node(), Some("a"));
    }

    #[test]
    fn no_nodes() {
        let got = schedule_batch(&[], &[pod("p", "1", None)]).expect("schedule");
        assert!(matches!(&got[0].decision, Decision::Unschedulable(m) if m.contains("0/0")));
    }

    #[test]
    fn bad_quantity_is_an_error() {
        let err = schedule_batch(&[node("a", "lots")], &[]).expect_err("bad cpu");
        assert!(matches!(err, Error::Quantity { .. }), "{err}");
    }
}
