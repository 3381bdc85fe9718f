//! InterPodAffinity.

use super::{NODE_ADD, NODE_UPDATE, NS_CHANGE, POD_ADD, POD_DELETE, POD_UPDATE, SELF_UPDATE};
use crate::framework::{
    ClusterEvent, Code, CycleState, FilterPlugin, Plugin, PreFilterPlugin, PreScorePlugin,
    ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::intern::{FastMap, Sym};
use crate::model::{AffinityTerm, NodeId, NodeInfo, PodInfo};
use crate::snapshot::Snapshot;

/// Reason: an existing pod's required anti-affinity rejects the pod here.
pub const ERR_EXISTING_ANTI: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
/// Reason: the pod's required affinity is not met.
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Reason: the pod's required anti-affinity is violated.
pub const ERR_ANTI: &str = "node(s) didn't match pod anti-affinity rules";

/// Required pod affinity / anti-affinity (both the incoming pod's and the
/// existing pods' anti-affinity) as a filter; preferred terms and existing
/// pods' terms as a score.
#[derive(Debug, Clone, Copy)]
pub struct InterPodAffinity {
    hard_pod_affinity_weight: i64,
}

impl Default for InterPodAffinity {
    fn default() -> Self {
        InterPodAffinity {
            hard_pod_affinity_weight: 1,
        }
    }
}

impl InterPodAffinity {
    /// With upstream's `hardPodAffinityWeight` (default 1).
    pub fn new(hard_pod_affinity_weight: i64) -> Self {
        InterPodAffinity {
            hard_pod_affinity_weight,
        }
    }
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[
            POD_ADD,
            POD_UPDATE,
            POD_DELETE,
            NODE_ADD,
            NODE_UPDATE,
            NS_CHANGE,
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

type Pair = (Sym, Sym);

#[derive(Clone, Default)]
struct FilterState {
    existing_anti: FastMap<Pair, i64>,
    affinity: FastMap<Pair, i64>,
    anti: FastMap<Pair, i64>,
}

fn bump(m: &mut FastMap<Pair, i64>, node: &NodeInfo, key: Sym, d: i64) {
    if let Some(v) = node.labels.get(key) {
        let e = m.entry((key, v)).or_insert(0);
        *e += d;
        if *e == 0 {
            m.remove(&(key, v));
        }
    }
}

fn matches_all(terms: &[AffinityTerm], p: &PodInfo, snap: &Snapshot) -> bool {
    terms.iter().all(|t| t.matches(p, &snap.ns_labels))
}

/// Applies `other` (on `node`) to the counts with sign `d`.
fn account(
    s: &mut FilterState,
    pod: &PodInfo,
    other: &PodInfo,
    node: &NodeInfo,
    snap: &Snapshot,
    d: i64,
) {
    if other.terminating {
        return;
    }
    if let Some(oa) = &other.affinity {
        for t in &oa.required_anti {
            if t.matches(pod, &snap.ns_labels) {
                bump(&mut s.existing_anti, node, t.topology_key, d);
            }
        }
    }
    if let Some(a) = &pod.affinity {
        if !a.required_affinity.is_empty() && matches_all(&a.required_affinity, other, snap) {
            for t in &a.required_affinity {
                bump(&mut s.affinity, node, t.topology_key, d);
            }
        }
        for t in &a.required_anti {
            if t.matches(other, &snap.ns_labels) {
                bump(&mut s.anti, node, t.topology_key, d);
            }
        }
    }
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snap: &Snapshot) -> Status {
        let has_required = pod
            .affinity
            .as_ref()
            .is_some_and(|a| !a.required_affinity.is_empty() || !a.required_anti.is_empty());
        if !has_required && snap.anti_affinity_pods.is_empty() {
            return Status::skip();
        }
        let mut s = FilterState {
            existing_anti: FastMap::with_capacity_and_hasher(
                snap.anti_affinity_pods.len().min(4096),
                Default::default(),
            ),
            ..Default::default()
        };
        let ns_labels = &snap.ns_labels;
        // Existing pods' required anti-affinity against the incoming pod.
        for &pid in &snap.anti_affinity_pods {
            let p = snap.pod(pid);
            let (Some(nid), Some(a)) = (p.node, &p.affinity) else {
                continue;
            };
            if p.terminating {
                continue;
            }
            let node = snap.node(nid);
            for t in &a.required_anti {
                if t.matches(pod, ns_labels) {
                    bump(&mut s.existing_anti, node, t.topology_key, 1);
                }
            }
        }
        if let Some(a) = pod.affinity.as_ref().filter(|_| has_required) {
            let cap = snap.num_pods().min(4096);
            s.anti
                .reserve(if a.required_anti.is_empty() { 0 } else { cap });
            s.affinity.reserve(if a.required_affinity.is_empty() {
                0
            } else {
                cap
            });
            for (p, nid) in snap.assigned_pods() {
                let node = snap.node(nid);
                {
                    if p.terminating {
                        continue;
                    }
                    if !a.required_affinity.is_empty() && matches_all(&a.required_affinity, p, snap)
                    {
                        for t in &a.required_affinity {
                            bump(&mut s.affinity, node, t.topology_key, 1);
                        }
                    }
                    for t in &a.required_anti {
                        if t.matches(p, ns_labels) {
                            bump(&mut s.anti, node, t.topology_key, 1);
                        }
                    }
                }
            }
        }
        state.insert(s);
        Status::success()
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        added: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) {
        if let Some(s) = state.get_mut::<FilterState>() {
            account(s, pod, added, node, snap, 1);
        }
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) {
        if let Some(s) = state.get_mut::<FilterState>() {
            account(s, pod, removed, node, snap, -1);
        }
    }
}

impl FilterPlugin for InterPodAffinity {
    fn filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Status {
        let Some(s) = state.get::<FilterState>() else {
            return Status::success();
        };
        if !s.existing_anti.is_empty()
            && node
                .labels
                .0
                .iter()
                .any(|&(k, v)| s.existing_anti.get(&(k, v)).is_some_and(|&c| c > 0))
        {
            return Status::new(Code::Unschedulable, ERR_EXISTING_ANTI);
        }
        let Some(a) = &pod.affinity else {
            return Status::success();
        };
        // Required affinity.
        let mut pods_exist = true;
        for t in &a.required_affinity {
            match node.labels.get(t.topology_key) {
                Some(v) => {
                    if s.affinity.get(&(t.topology_key, v)).copied().unwrap_or(0) <= 0 {
                        pods_exist = false;
                    }
                }
                None => {
                    return Status::new(Code::UnschedulableAndUnresolvable, ERR_AFFINITY);
                }
            }
        }
        if !(pods_exist || s.affinity.is_empty() && matches_all(&a.required_affinity, pod, snap)) {
            return Status::new(Code::UnschedulableAndUnresolvable, ERR_AFFINITY);
        }
        if !s.anti.is_empty() {
            for t in &a.required_anti {
                if let Some(v) = node.labels.get(t.topology_key) {
                    if s.anti.get(&(t.topology_key, v)).copied().unwrap_or(0) > 0 {
                        return Status::new(Code::Unschedulable, ERR_ANTI);
                    }
                }
            }
        }
        Status::success()
    }
}

#[derive(Clone, Default)]
struct ScoreState {
    scores: FastMap<Pair, i64>,
    keys: Vec<Sym>,
}

impl ScoreState {
    fn add(&mut self, node: &NodeInfo, key: Sym, w: i64) {
        if let Some(v) = node.labels.get(key) {
            *self.scores.entry((key, v)).or_insert(0) += w;
            if !self.keys.contains(&key) {
                self.keys.push(key);
            }
        }
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        _: &[NodeId],
    ) -> Status {
        let has_preferred = pod
            .affinity
            .as_ref()
            .is_some_and(|a| !a.preferred_affinity.is_empty() || !a.preferred_anti.is_empty());
        if !has_preferred && snap.affinity_pods.is_empty() {
            return Status::skip();
        }
        let mut s = ScoreState::default();
        let ns_labels = &snap.ns_labels;
        let process = |p: &PodInfo, node: &NodeInfo, s: &mut ScoreState| {
            if node.labels.is_empty() {
                return;
            }
            if let Some(a) = &pod.affinity {
                for (w, t) in &a.preferred_affinity {
                    if t.matches(p, ns_labels) {
                        s.add(node, t.topology_key, *w);
                    }
                }
                for (w, t) in &a.preferred_anti {
                    if t.matches(p, ns_labels) {
                        s.add(node, t.topology_key, -*w);
                    }
                }
            }
            if let Some(ea) = &p.affinity {
                if self.hard_pod_affinity_weight > 0 {
                    for t in &ea.required_affinity {
                        if t.matches(pod, ns_labels) {
                            s.add(node, t.topology_key, self.hard_pod_affinity_weight);
                        }
                    }
                }
                for (w, t) in &ea.preferred_affinity {
                    if t.matches(pod, ns_labels) {
                        s.add(node, t.topology_key, *w);
                    }
                }
                for (w, t) in &ea.preferred_anti {
                    if t.matches(pod, ns_labels) {
                        s.add(node, t.topology_key, -*w);
                    }
                }
            }
        };
        if has_preferred {
            for (p, nid) in snap.assigned_pods() {
                process(p, snap.node(nid), &mut s);
            }
        } else {
            for &pid in &snap.affinity_pods {
                let p = snap.pod(pid);
                if let Some(nid) = p.node {
                    process(p, snap.node(nid), &mut s);
                }
            }
        }
        if s.scores.is_empty() {
            return Status::skip();
        }
        state.insert(s);
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo, _: &Snapshot) -> i64 {
        let Some(s) = state.get::<ScoreState>() else {
            return 0;
        };
        s.keys
            .iter()
            .filter_map(|&k| node.labels.get(k).map(|v| (k, v)))
            .map(|p| s.scores.get(&p).copied().unwrap_or(0))
            .sum()
    }

    fn normalize(&self, state: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        if state.get::<ScoreState>().is_none() {
            return;
        }
        let min = scores.iter().copied().min().unwrap_or(0);
        let max = scores.iter().copied().max().unwrap_or(0);
        let diff = max - min;
        for s in scores.iter_mut() {
            *s = if diff > 0 {
                (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / diff as f64)) as i64
            } else {
                0
            };
        }
    }
}
