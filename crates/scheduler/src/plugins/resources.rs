//! NodeResourcesFit and NodeResourcesBalancedAllocation.

use std::borrow::Cow;

use super::{NODE_ADD, NODE_UPDATE, POD_DELETE, SELF_UPDATE};
use crate::framework::{
    ClusterEvent, Code, CycleState, FilterPlugin, Plugin, PreScorePlugin, ScorePlugin, Status,
    MAX_NODE_SCORE,
};
use crate::model::{NodeId, NodeInfo, PodInfo};
use crate::profile::ScoringStrategy;
use crate::snapshot::Snapshot;

/// Checks that the node has room for the pod's requests (and pod count), and
/// scores CPU and memory with LeastAllocated (default) or MostAllocated, each
/// resource weighted 1.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeResourcesFit {
    strategy: ScoringStrategy,
}

impl NodeResourcesFit {
    /// With the given scoring strategy.
    pub fn new(strategy: ScoringStrategy) -> Self {
        NodeResourcesFit { strategy }
    }
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[POD_DELETE, NODE_ADD, NODE_UPDATE, SELF_UPDATE]
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeResourcesFit {
    #[inline]
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> Status {
        let a = &node.allocatable;
        let r = &node.requested;
        let q = &pod.requests;
        let mut reasons: Vec<Cow<'static, str>> = Vec::new();
        if node.pods.len() as i64 + 1 > a.pods {
            reasons.push("Too many pods".into());
        }
        if !q.is_zero() {
            if q.milli_cpu > 0 && q.milli_cpu > a.milli_cpu - r.milli_cpu {
                reasons.push("Insufficient cpu".into());
            }
            if q.memory > 0 && q.memory > a.memory - r.memory {
                reasons.push("Insufficient memory".into());
            }
            if q.ephemeral_storage > 0
                && q.ephemeral_storage > a.ephemeral_storage - r.ephemeral_storage
            {
                reasons.push("Insufficient ephemeral-storage".into());
            }
            for &(name, v) in &q.scalars {
                if v > 0 && v > a.scalar(name) - r.scalar(name) {
                    reasons.push(format!("Insufficient {}", snap.interner().resolve(name)).into());
                }
            }
        }
        if reasons.is_empty() {
            Status::success()
        } else {
            Status::with_reasons(Code::Unschedulable, reasons)
        }
    }
}

#[inline]
fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

#[inline]
fn most_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    requested.min(capacity) * MAX_NODE_SCORE / capacity
}

impl ScorePlugin for NodeResourcesFit {
    #[inline]
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> i64 {
        let cpu = node.non_zero_cpu + pod.non_zero_cpu;
        let mem = node.non_zero_mem + pod.non_zero_mem;
        let a = &node.allocatable;
        let f = match self.strategy {
            ScoringStrategy::LeastAllocated => least_requested,
            ScoringStrategy::MostAllocated => most_requested,
        };
        (f(cpu, a.milli_cpu) + f(mem, a.memory)) / 2
    }
}

/// Favours nodes whose CPU and memory would be used in equal fractions.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeResourcesBalancedAllocation;

impl Plugin for NodeResourcesBalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for NodeResourcesBalancedAllocation {
    fn pre_score(&self, _: &mut CycleState, pod: &PodInfo, _: &Snapshot, _: &[NodeId]) -> Status {
        // Best-effort pods (no CPU or memory request) are skipped upstream.
        if pod.requests.milli_cpu == 0 && pod.requests.memory == 0 {
            Status::skip()
        } else {
            Status::success()
        }
    }
}

impl ScorePlugin for NodeResourcesBalancedAllocation {
    #[inline]
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> i64 {
        let a = &node.allocatable;
        let mut fr = [0f64; 2];
        let mut n = 0;
        for (req, cap) in [
            (
                node.requested.milli_cpu + pod.requests.milli_cpu,
                a.milli_cpu,
            ),
            (node.requested.memory + pod.requests.memory, a.memory),
        ] {
            if cap == 0 {
                continue;
            }
            fr[n] = (req as f64 / cap as f64).min(1.0);
            n += 1;
        }
        let std = if n == 2 {
            ((fr[0] - fr[1]) / 2.0).abs()
        } else {
            0.0
        };
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_and_most_requested_match_upstream_formulas() {
        // Upstream examples: capacity 4000m, requested 3000m → least 25, most 75.
        assert_eq!(least_requested(3000, 4000), 25);
        assert_eq!(most_requested(3000, 4000), 75);
        assert_eq!(least_requested(5000, 4000), 0);
        assert_eq!(most_requested(5000, 4000), 100);
        assert_eq!(least_requested(1, 0), 0);
    }
}
