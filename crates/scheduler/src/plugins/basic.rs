//! NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts.

use std::borrow::Cow;

use super::{NODE_ADD, NODE_UPDATE, POD_DELETE, SELF_UPDATE};
use crate::framework::{
    default_normalize, ClusterEvent, Code, CycleState, FilterPlugin, Plugin, PreFilterPlugin,
    PreScorePlugin, ScorePlugin, Status,
};
use crate::model::{tolerated, NodeId, NodeInfo, PodInfo, Taint, TaintEffect};
use crate::snapshot::Snapshot;

/// Filters out nodes marked `spec.unschedulable` unless the pod tolerates the
/// `node.kubernetes.io/unschedulable:NoSchedule` taint.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeUnschedulable;

/// Reason reported by [`NodeUnschedulable`].
pub const ERR_UNSCHEDULABLE: &str = "node(s) were unschedulable";

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[NODE_ADD, NODE_UPDATE, SELF_UPDATE]
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeUnschedulable {
    #[inline]
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> Status {
        if !node.unschedulable {
            return Status::success();
        }
        let i = snap.interner();
        let taint = i.get("node.kubernetes.io/unschedulable").map(|key| Taint {
            key,
            value: i.get("").unwrap_or(key),
            effect: TaintEffect::NoSchedule,
        });
        if taint.is_some_and(|t| tolerated(&pod.tolerations, &t)) {
            return Status::success();
        }
        Status::new(Code::UnschedulableAndUnresolvable, ERR_UNSCHEDULABLE)
    }
}

/// Filters out every node but `spec.nodeName` when the pod sets it.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeName;

/// Reason reported by [`NodeName`].
pub const ERR_NODE_NAME: &str = "node(s) didn't match the requested node name";

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[NODE_ADD, NODE_UPDATE]
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for NodeName {
    fn pre_filter(&self, _: &mut CycleState, pod: &PodInfo, _: &Snapshot) -> Status {
        // Nothing to check on any node when the pod names none.
        if pod.node_name.is_none() {
            Status::skip()
        } else {
            Status::success()
        }
    }
}

impl FilterPlugin for NodeName {
    #[inline]
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        match &pod.node_name {
            Some(n) if **n != *node.name => {
                Status::new(Code::UnschedulableAndUnresolvable, ERR_NODE_NAME)
            }
            _ => Status::success(),
        }
    }
}

/// Filters out nodes with NoSchedule/NoExecute taints the pod does not
/// tolerate; scores by the number of untolerated PreferNoSchedule taints
/// (fewer is better).
#[derive(Debug, Default, Clone, Copy)]
pub struct TaintToleration;

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[NODE_ADD, NODE_UPDATE, SELF_UPDATE]
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for TaintToleration {
    fn pre_score(&self, _: &mut CycleState, _: &PodInfo, snap: &Snapshot, _: &[NodeId]) -> Status {
        // Without PreferNoSchedule taints every node normalizes to the same
        // score: skipping leaves the choice unchanged and saves a pass.
        if snap.soft_tainted_nodes == 0 {
            Status::skip()
        } else {
            Status::success()
        }
    }
}

impl FilterPlugin for TaintToleration {
    #[inline]
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> Status {
        for t in &node.taints {
            if t.effect == TaintEffect::PreferNoSchedule || tolerated(&pod.tolerations, t) {
                continue;
            }
            let i = snap.interner();
            return Status::new(
                Code::UnschedulableAndUnresolvable,
                format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    i.resolve(t.key),
                    i.resolve(t.value)
                ),
            );
        }
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    #[inline]
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> i64 {
        node.taints
            .iter()
            .filter(|t| t.effect == TaintEffect::PreferNoSchedule)
            .filter(|t| {
                !pod.tolerations.iter().any(|tol| {
                    (tol.effect.is_none() || tol.effect == Some(TaintEffect::PreferNoSchedule))
                        && tol.tolerates(t)
                })
            })
            .count() as i64
    }
    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        default_normalize(scores, true);
    }
}

/// Filters by `spec.nodeSelector` and required node affinity; scores by the
/// summed weights of matching preferred terms.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeAffinity;

/// Reason reported by [`NodeAffinity`].
pub const ERR_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";

/// True when `node` satisfies the pod's nodeSelector and required node
/// affinity (also used by PodTopologySpread's nodeAffinityPolicy).
#[inline]
pub(crate) fn node_matches_pod(pod: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> bool {
    if !pod
        .node_selector
        .iter()
        .all(|&(k, v)| node.labels.get(k) == Some(v))
    {
        return false;
    }
    match &pod.required_node_affinity {
        None => true,
        Some(terms) => terms
            .iter()
            .any(|t| t.matches(&node.labels, node.name_sym, snap.interner())),
    }
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[NODE_ADD, NODE_UPDATE, SELF_UPDATE]
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snap: &Snapshot) -> Status {
        let Some(terms) = &pod.required_node_affinity else {
            return if pod.node_selector.is_empty() {
                Status::skip()
            } else {
                Status::success()
            };
        };
        // Terms that all pin metadata.name with In narrow the node set.
        let mut names = Vec::new();
        for t in terms {
            match t.pinned_names() {
                Some(v) => names.extend(v.iter().copied()),
                None => return Status::success(),
            }
        }
        let i = snap.interner();
        let ids: Vec<NodeId> = names
            .iter()
            .filter_map(|&n| snap.node_id(i.resolve(n)))
            .collect();
        if ids.is_empty() {
            return Status::new(Code::UnschedulableAndUnresolvable, ERR_NODE_AFFINITY);
        }
        state.restrict_nodes(ids);
        Status::success()
    }
}

impl FilterPlugin for NodeAffinity {
    #[inline]
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> Status {
        if node_matches_pod(pod, node, snap) {
            Status::success()
        } else {
            Status::new(Code::UnschedulableAndUnresolvable, ERR_NODE_AFFINITY)
        }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(&self, _: &mut CycleState, pod: &PodInfo, _: &Snapshot, _: &[NodeId]) -> Status {
        if pod.preferred_node_affinity.is_empty() {
            Status::skip()
        } else {
            Status::success()
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> i64 {
        pod.preferred_node_affinity
            .iter()
            .filter(|(_, t)| t.matches(&node.labels, node.name_sym, snap.interner()))
            .map(|(w, _)| *w)
            .sum()
    }
    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        default_normalize(scores, false);
    }
}

/// Filters out nodes where a requested host port is already in use.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodePorts;

/// Reason reported by [`NodePorts`].
pub const ERR_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[POD_DELETE, NODE_ADD]
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(&self, _: &mut CycleState, pod: &PodInfo, _: &Snapshot) -> Status {
        if pod.host_ports.is_empty() {
            Status::skip()
        } else {
            Status::success()
        }
    }
}

impl FilterPlugin for NodePorts {
    #[inline]
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        let conflict = pod
            .host_ports
            .iter()
            .any(|w| node.used_ports.iter().any(|u| u.conflicts(w)));
        if conflict {
            Status::with_reasons(Code::Unschedulable, vec![Cow::Borrowed(ERR_NODE_PORTS)])
        } else {
            Status::success()
        }
    }
}
