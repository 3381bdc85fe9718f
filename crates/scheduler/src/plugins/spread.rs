//! PodTopologySpread.

use super::basic::node_matches_pod;
use super::{NODE_ADD, NODE_UPDATE, POD_ADD, POD_DELETE, POD_UPDATE, SELF_UPDATE};
use crate::framework::{
    ClusterEvent, Code, CycleState, FilterPlugin, Plugin, PreFilterPlugin, PreScorePlugin,
    ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::intern::{FastMap, Sym};
use crate::model::{tolerated, NodeId, NodeInfo, PodInfo, SpreadConstraint, TaintEffect};
use crate::snapshot::Snapshot;

/// Reason when a node would violate maxSkew.
pub const ERR_SPREAD: &str = "node(s) didn't match pod topology spread constraints";
/// Reason when a node lacks a constraint's topology label.
pub const ERR_SPREAD_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// Spreads pods matching a selector across topology domains:
/// `DoNotSchedule` constraints filter, `ScheduleAnyway` constraints score.
#[derive(Debug, Default, Clone, Copy)]
pub struct PodTopologySpread;

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[
            POD_ADD,
            POD_UPDATE,
            POD_DELETE,
            NODE_ADD,
            NODE_UPDATE,
            SELF_UPDATE,
        ]
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

/// Does the node count toward constraint `c` (nodeAffinityPolicy /
/// nodeTaintsPolicy)?
#[inline]
fn node_included(c: &SpreadConstraint, pod: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> bool {
    if c.honor_affinity && !node_matches_pod(pod, node, snap) {
        return false;
    }
    if c.honor_taints
        && node
            .taints
            .iter()
            .any(|t| t.effect != TaintEffect::PreferNoSchedule && !tolerated(&pod.tolerations, t))
    {
        return false;
    }
    true
}

#[inline]
fn count_matching(c: &SpreadConstraint, pod: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> i64 {
    node.pods
        .iter()
        .map(|&p| snap.pod(p))
        .filter(|p| p.namespace == pod.namespace && !p.terminating && c.selects(p))
        .count() as i64
}

#[derive(Clone)]
struct Hard {
    /// Index into `pod.spread`.
    idx: usize,
    counts: FastMap<Sym, i64>,
    min: i64,
}

impl Hard {
    fn recompute_min(&mut self, min_domains: i64) {
        self.min = if (self.counts.len() as i64) < min_domains {
            0
        } else {
            self.counts.values().copied().min().unwrap_or(0)
        };
    }
}

#[derive(Clone)]
struct FilterState {
    hard: Vec<Hard>,
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snap: &Snapshot) -> Status {
        let hard_idx: Vec<usize> = (0..pod.spread.len())
            .filter(|&i| pod.spread[i].hard)
            .collect();
        if hard_idx.is_empty() {
            return Status::skip();
        }
        let mut hard: Vec<Hard> = hard_idx
            .iter()
            .map(|&idx| Hard {
                idx,
                counts: FastMap::default(),
                min: 0,
            })
            .collect();
        // Pass 1: the domain of every eligible node (a node must carry every
        // hard constraint's key to count), per constraint.
        let slots = snap.node_slots();
        let mut domains: Vec<Vec<Option<Sym>>> = vec![vec![None; slots]; hard.len()];
        for &nid in snap.node_ids() {
            let node = snap.node(nid);
            if !hard
                .iter()
                .all(|h| node.labels.get(pod.spread[h.idx].topology_key).is_some())
            {
                continue;
            }
            for (k, h) in hard.iter_mut().enumerate() {
                let c = &pod.spread[h.idx];
                if !node_included(c, pod, node, snap) {
                    continue;
                }
                let v = node.labels.get(c.topology_key).expect("checked above");
                h.counts.entry(v).or_insert(0);
                domains[k][nid.0 as usize] = Some(v);
            }
        }
        // Pass 2: count matching pods in one sweep over the pod slab.
        for (p, nid) in snap.assigned_pods() {
            if p.namespace != pod.namespace || p.terminating {
                continue;
            }
            for (k, h) in hard.iter_mut().enumerate() {
                if let Some(v) = domains[k][nid.0 as usize] {
                    if pod.spread[h.idx].selects(p) {
                        *h.counts.entry(v).or_default() += 1;
                    }
                }
            }
        }
        for h in hard.iter_mut() {
            h.recompute_min(pod.spread[h.idx].min_domains);
        }
        state.insert(FilterState { hard });
        Status::success()
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        added: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot,
    ) {
        update_counts(state, pod, added, node, 1);
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot,
    ) {
        update_counts(state, pod, removed, node, -1);
    }
}

fn update_counts(state: &mut CycleState, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, d: i64) {
    let Some(s) = state.get_mut::<FilterState>() else {
        return;
    };
    if other.namespace != pod.namespace {
        return;
    }
    for h in s.hard.iter_mut() {
        let c = &pod.spread[h.idx];
        if !c.selects(other) {
            continue;
        }
        if let Some(v) = node.labels.get(c.topology_key) {
            if let Some(n) = h.counts.get_mut(&v) {
                *n += d;
                h.recompute_min(c.min_domains);
            }
        }
    }
}

impl FilterPlugin for PodTopologySpread {
    #[inline]
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        let Some(s) = state.get::<FilterState>() else {
            return Status::success();
        };
        for h in &s.hard {
            let c = &pod.spread[h.idx];
            let Some(v) = node.labels.get(c.topology_key) else {
                return Status::new(Code::UnschedulableAndUnresolvable, ERR_SPREAD_LABEL);
            };
            let self_match = i64::from(c.selects(pod));
            let matched = h.counts.get(&v).copied().unwrap_or(0);
            if matched + self_match - h.min > c.max_skew {
                return Status::new(Code::Unschedulable, ERR_SPREAD);
            }
        }
        Status::success()
    }
}

#[derive(Clone)]
struct ScoreState {
    /// Index into `pod.spread` of each soft constraint.
    soft: Vec<usize>,
    /// Per soft constraint: pod counts per domain (empty for hostname keys,
    /// which are counted on the node itself).
    counts: Vec<FastMap<Sym, i64>>,
    weights: Vec<f64>,
    hostname: Option<Sym>,
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        nodes: &[NodeId],
    ) -> Status {
        let soft: Vec<usize> = (0..pod.spread.len())
            .filter(|&i| !pod.spread[i].hard)
            .collect();
        if soft.is_empty() {
            return Status::skip();
        }
        let hostname = snap.interner().get("kubernetes.io/hostname");
        let has_all = |n: &NodeInfo| {
            soft.iter()
                .all(|&i| n.labels.get(pod.spread[i].topology_key).is_some())
        };
        let mut counts: Vec<FastMap<Sym, i64>> = vec![FastMap::default(); soft.len()];
        let mut sizes = vec![0usize; soft.len()];
        let mut considered = 0usize;
        for &nid in nodes {
            let n = snap.node(nid);
            if !has_all(n) {
                continue;
            }
            considered += 1;
            for (k, &i) in soft.iter().enumerate() {
                let key = pod.spread[i].topology_key;
                if Some(key) == hostname {
                    continue;
                }
                let v = n.labels.get(key).expect("has_all");
                counts[k].entry(v).or_insert(0);
            }
        }
        for (k, &i) in soft.iter().enumerate() {
            sizes[k] = if Some(pod.spread[i].topology_key) == hostname {
                considered
            } else {
                counts[k].len()
            };
        }
        // Count matching pods on every eligible node of the cluster, for the
        // domains present among the feasible nodes.
        if counts.iter().any(|c| !c.is_empty()) {
            for &nid in snap.node_ids() {
                let n = snap.node(nid);
                if !has_all(n) {
                    continue;
                }
                for (k, &i) in soft.iter().enumerate() {
                    let c = &pod.spread[i];
                    if Some(c.topology_key) == hostname || !node_included(c, pod, n, snap) {
                        continue;
                    }
                    let v = n.labels.get(c.topology_key).expect("has_all");
                    if let Some(slot) = counts[k].get_mut(&v) {
                        *slot += count_matching(c, pod, n, snap);
                    }
                }
            }
        }
        let weights = sizes.iter().map(|&s| ((s + 2) as f64).ln()).collect();
        state.insert(ScoreState {
            soft,
            counts,
            weights,
            hostname,
        });
        Status::success()
    }
}

/// Score of nodes lacking a soft constraint's key; normalized to 0.
const IGNORED: i64 = i64::MIN;

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> i64 {
        let Some(s) = state.get::<ScoreState>() else {
            return 0;
        };
        let mut score = 0f64;
        for (k, &i) in s.soft.iter().enumerate() {
            let c = &pod.spread[i];
            let Some(v) = node.labels.get(c.topology_key) else {
                return IGNORED;
            };
            let cnt = if Some(c.topology_key) == s.hostname {
                count_matching(c, pod, node, snap)
            } else {
                s.counts[k].get(&v).copied().unwrap_or(0)
            };
            score += cnt as f64 * s.weights[k] + (c.max_skew - 1) as f64;
        }
        score.round() as i64
    }

    fn normalize(&self, state: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        if state.get::<ScoreState>().is_none() {
            return;
        }
        let mut min = i64::MAX;
        let mut max = 0i64;
        for &s in scores.iter().filter(|&&s| s != IGNORED) {
            min = min.min(s);
            max = max.max(s);
        }
        for s in scores.iter_mut() {
            *s = if *s == IGNORED {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
    }
}
