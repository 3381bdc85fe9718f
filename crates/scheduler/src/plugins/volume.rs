//! VolumeBinding: a pod's PersistentVolumeClaims must exist, claims that bind at once
//! must be bound before the pod is placed, and a bound volume's node affinity (a local
//! volume's node) pins the pod. Claims of `WaitForFirstConsumer` classes are left
//! unbound: the node chosen here is where they will be provisioned (the caller marks
//! them with `volume.kubernetes.io/selected-node`), if it has room for them: where the
//! class's driver publishes CSIStorageCapacities, a node none of them with room for a
//! claim applies to "did not have enough free storage".

use crate::framework::{Code, CycleState, FilterPlugin, Plugin, PreFilterPlugin, Status};
use crate::model::{NodeInfo, PodInfo};
use crate::snapshot::Snapshot;

use super::{
    CAPACITY_ADD, CAPACITY_UPDATE, CLASS_ADD, CLASS_UPDATE, DRIVER_ADD, DRIVER_UPDATE, NODE_ADD,
    NODE_UPDATE, PVC_ADD, PVC_UPDATE, PV_ADD, PV_UPDATE, SELF_UPDATE,
};
use crate::framework::ClusterEvent;

/// The reason a pod with unbound immediate claims is not placed, as upstream.
pub const UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
/// The reason a node is filtered out by a bound volume's node affinity, as upstream.
pub const VOLUME_NODE_AFFINITY_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// The reason a node without room for a claim to be provisioned is filtered out, as
/// upstream (its CSIStorageCapacities, when the driver publishes them).
pub const NOT_ENOUGH_SPACE: &str = "node(s) did not have enough free storage";

/// The VolumeBinding plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct VolumeBinding;

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        "VolumeBinding"
    }
    fn events(&self) -> &'static [ClusterEvent] {
        // upstream's: the pod's volumes are resolved again on every attempt (from the
        // loop's watch caches), so a claim, volume, class, driver or capacity that
        // appears or changes retries the pods this plugin rejected, as do node changes
        // and the pod's own updates
        &[
            NODE_ADD,
            NODE_UPDATE,
            SELF_UPDATE,
            PVC_ADD,
            PVC_UPDATE,
            PV_ADD,
            PV_UPDATE,
            CLASS_ADD,
            CLASS_UPDATE,
            DRIVER_ADD,
            DRIVER_UPDATE,
            CAPACITY_ADD,
            CAPACITY_UPDATE,
        ]
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(&self, _: &mut CycleState, pod: &PodInfo, _: &Snapshot) -> Status {
        let Some(v) = &pod.volumes else {
            return Status::skip();
        };
        if let Some(c) = v.missing.first() {
            return Status::new(
                Code::UnschedulableAndUnresolvable,
                format!("persistentvolumeclaim \"{c}\" not found"),
            );
        }
        if !v.unbound_immediate.is_empty() {
            return Status::new(Code::UnschedulableAndUnresolvable, UNBOUND_IMMEDIATE);
        }
        if v.node_affinity.is_empty() && v.capacity.is_empty() {
            return Status::skip();
        }
        Status::success()
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> Status {
        let Some(v) = &pod.volumes else {
            return Status::success();
        };
        let fits = v.node_affinity.iter().all(|terms| {
            terms
                .iter()
                .any(|t| t.matches(&node.labels, node.name_sym, snap.interner()))
        });
        if !fits {
            return Status::new(
                Code::UnschedulableAndUnresolvable,
                VOLUME_NODE_AFFINITY_CONFLICT,
            );
        }
        let room = v
            .capacity
            .iter()
            .all(|topologies| topologies.iter().any(|t| t.matches(&node.labels)));
        if room {
            Status::success()
        } else {
            Status::new(Code::UnschedulableAndUnresolvable, NOT_ENOUGH_SPACE)
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::json;

    use super::*;
    use crate::model::PodVolumes;
    use crate::profile::Framework;
    use crate::scheduler::{Outcome, Scheduler};

    fn snapshot() -> Snapshot {
        let mut snap = Snapshot::new();
        for n in ["n1", "n2", "n3"] {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
            }))
            .expect("node");
            snap.upsert_node(&node).expect("upsert");
        }
        snap
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "postgres"}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
        }))
        .expect("pod")
    }

    fn place(v: &PodVolumes) -> Result<String, String> {
        let mut snap = snapshot();
        let info = snap.compile_pod_with_volumes(&pod(), v).expect("compile");
        let mut sched = Scheduler::new(Framework::with_defaults());
        match sched.schedule_one(&mut snap, info) {
            Outcome::Assumed { result, .. } => Ok(result.node_name),
            Outcome::Unschedulable(fit) => Err(fit.to_string()),
            Outcome::Rejected(st) => Err(st.reasons().join(", ")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_bound_local_volume_pins_the_pod_to_its_node() {
        let v = PodVolumes {
            node_affinity: vec![serde_json::from_value(json!({"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}
            ]}))
            .expect("selector")],
            ..PodVolumes::default()
        };
        for _ in 0..5 {
            assert_eq!(place(&v).as_deref(), Ok("n2"));
        }
        let v = PodVolumes {
            node_affinity: vec![serde_json::from_value(json!({"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["gone"]}]}
            ]}))
            .expect("selector")],
            ..PodVolumes::default()
        };
        let err = place(&v).expect_err("no node");
        assert!(
            err.contains("3 node(s) had volume node affinity conflict"),
            "{err}"
        );
    }

    #[test]
    fn unbound_immediate_and_missing_claims_keep_the_pod_pending() {
        let v = PodVolumes {
            unbound_immediate: vec!["data".into()],
            ..PodVolumes::default()
        };
        let err = place(&v).expect_err("pending");
        assert!(err.contains(UNBOUND_IMMEDIATE), "{err}");
        let v = PodVolumes {
            missing: vec!["data".into()],
            ..PodVolumes::default()
        };
        let err = place(&v).expect_err("pending");
        assert!(
            err.contains("persistentvolumeclaim \"data\" not found"),
            "{err}"
        );
        // A WaitForFirstConsumer claim goes where the pod goes.
        let v = PodVolumes {
            unbound_delayed: vec!["data".into()],
            ..PodVolumes::default()
        };
        assert!(place(&v).is_ok());
    }

    #[test]
    fn a_claim_goes_only_where_published_capacity_holds_it() {
        let on = |nodes: &[&str]| -> Vec<_> {
            nodes
                .iter()
                .map(|n| {
                    serde_json::from_value(json!({"matchLabels": {"kubernetes.io/hostname": n}}))
                        .expect("selector")
                })
                .collect()
        };
        let v = PodVolumes {
            unbound_delayed: vec!["data".into()],
            capacity: vec![crate::ClaimCapacity {
                claim: "data".into(),
                topologies: on(&["n3"]),
            }],
            ..PodVolumes::default()
        };
        for _ in 0..5 {
            assert_eq!(place(&v).as_deref(), Ok("n3"));
        }
        // no capacity holds the claim: pending with upstream's reason
        let v = PodVolumes {
            capacity: vec![crate::ClaimCapacity {
                claim: "data".into(),
                topologies: vec![],
            }],
            ..v
        };
        let err = place(&v).expect_err("no room");
        assert!(
            err.contains("3 node(s) did not have enough free storage"),
            "{err}"
        );
        // an empty topology selects every node
        let v = PodVolumes {
            capacity: vec![crate::ClaimCapacity {
                claim: "data".into(),
                topologies: vec![Default::default()],
            }],
            ..v
        };
        assert!(place(&v).is_ok());
    }
}
