//! DefaultPreemption.

use crate::framework::{
    Code, CycleState, Diagnosis, Framework, Plugin, PostFilterPlugin, PreemptionResult,
};
use crate::model::{NodeId, PodId, PodInfo};
use crate::snapshot::Snapshot;

/// When no node fits, evicts the fewest, least important lower-priority pods
/// from one node so the pod fits there, preferring victims whose eviction
/// does not violate a PodDisruptionBudget, and nominates that node.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultPreemption;

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        "DefaultPreemption"
    }
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        Some(self)
    }
}

struct Candidate {
    node: NodeId,
    /// Sorted most important first.
    victims: Vec<PodId>,
    pdb_violations: usize,
}

/// Upstream `MoreImportantPod`: higher priority, then earlier start.
fn more_important(a: &PodInfo, b: &PodInfo) -> std::cmp::Ordering {
    b.priority
        .cmp(&a.priority)
        .then(a.start_time.cmp(&b.start_time))
}

impl DefaultPreemption {
    fn eligible(pod: &PodInfo, snap: &Snapshot) -> bool {
        if pod.preempt_never {
            return false;
        }
        // A previous preemption for this pod is still in progress: victims of
        // lower priority are terminating on its nominated node.
        if let Some(nid) = pod.nominated_node.as_deref().and_then(|n| snap.node_id(n)) {
            let node = snap.node(nid);
            if node.pods.iter().any(|&p| {
                let p = snap.pod(p);
                p.terminating && p.priority < pod.priority
            }) {
                return false;
            }
        }
        true
    }

    fn select_victims(
        fw: &Framework,
        state: &CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        nid: NodeId,
    ) -> Option<Candidate> {
        let orig = snap.node(nid);
        let mut potential: Vec<PodId> = orig
            .pods
            .iter()
            .copied()
            .filter(|&p| snap.pod(p).priority < pod.priority)
            .collect();
        if potential.is_empty() {
            return None;
        }
        let mut node = orig.clone();
        let mut st = state.clone();
        for &v in &potential {
            let p = snap.pod(v);
            node.remove_pod(v, p);
            fw.run_remove_pod(&mut st, pod, p, &node, snap);
        }
        if !fw.run_filters(&st, pod, &node, snap).is_success() {
            return None;
        }
        potential.sort_by(|&a, &b| more_important(snap.pod(a), snap.pod(b)));
        // Split by PDB violation, consuming each budget's allowance in order.
        let mut allowed: Vec<(i64, &crate::snapshot::Pdb)> =
            snap.pdbs().map(|p| (p.disruptions_allowed, p)).collect();
        let mut violating = Vec::new();
        let mut non_violating = Vec::new();
        for &v in &potential {
            let p = snap.pod(v);
            let mut violates = false;
            for (left, pdb) in allowed.iter_mut() {
                if pdb.covers(p) {
                    *left -= 1;
                    if *left < 0 {
                        violates = true;
                    }
                }
            }
            if violates {
                violating.push(v);
            } else {
                non_violating.push(v);
            }
        }
        let mut victims = Vec::new();
        let mut pdb_violations = 0;
        for (list, is_violating) in [(violating, true), (non_violating, false)] {
            for v in list {
                let p = snap.pod(v);
                node.add_pod(v, p);
                fw.run_add_pod(&mut st, pod, p, &node, snap);
                if !fw.run_filters(&st, pod, &node, snap).is_success() {
                    node.remove_pod(v, p);
                    fw.run_remove_pod(&mut st, pod, p, &node, snap);
                    victims.push(v);
                    if is_violating {
                        pdb_violations += 1;
                    }
                }
            }
        }
        victims.sort_by(|&a, &b| more_important(snap.pod(a), snap.pod(b)));
        Some(Candidate {
            node: nid,
            victims,
            pdb_violations,
        })
    }

    /// Upstream `pickOneNodeForPreemption`.
    fn pick<'a>(cands: &'a [Candidate], snap: &Snapshot) -> Option<&'a Candidate> {
        let highest = |c: &Candidate| {
            c.victims
                .first()
                .map_or(i64::MIN, |&v| i64::from(snap.pod(v).priority))
        };
        let sum = |c: &Candidate| {
            c.victims
                .iter()
                .map(|&v| i64::from(snap.pod(v).priority) + i64::from(i32::MAX) + 1)
                .sum::<i64>()
        };
        let earliest_of_highest = |c: &Candidate| {
            let h = highest(c);
            c.victims
                .iter()
                .map(|&v| snap.pod(v))
                .filter(|p| i64::from(p.priority) == h)
                .map(|p| p.start_time)
                .min()
                .unwrap_or(i64::MAX)
        };
        let mut best: Vec<&Candidate> = cands.iter().collect();
        let keep_min = |best: &mut Vec<&Candidate>, f: &dyn Fn(&Candidate) -> i64| {
            if let Some(m) = best.iter().map(|c| f(c)).min() {
                best.retain(|c| f(c) == m);
            }
        };
        keep_min(&mut best, &|c| c.pdb_violations as i64);
        keep_min(&mut best, &highest);
        keep_min(&mut best, &sum);
        keep_min(&mut best, &|c| c.victims.len() as i64);
        keep_min(&mut best, &|c| -earliest_of_highest(c));
        best.first().copied()
    }
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(
        &self,
        fw: &Framework,
        state: &CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        diagnosis: &Diagnosis,
    ) -> Option<PreemptionResult> {
        let _span = tracing::debug_span!("preemption", pod = %pod.name).entered();
        if diagnosis.pre_filter.is_some() || !Self::eligible(pod, snap) {
            return None;
        }
        let cands: Vec<Candidate> = diagnosis
            .node_statuses
            .iter()
            .filter(|(_, st)| st.code() == Code::Unschedulable)
            .filter_map(|&(nid, _)| Self::select_victims(fw, state, pod, snap, nid))
            .collect();
        let best = Self::pick(&cands, snap)?;
        let i = snap.interner();
        let cleared = snap
            .nominated
            .get(&best.node)
            .into_iter()
            .flatten()
            .filter(|p| p.priority < pod.priority)
            .map(|p| p.key(i))
            .collect();
        Some(PreemptionResult {
            node: best.node,
            node_name: snap.node(best.node).name.to_string(),
            victims: best.victims.iter().map(|&v| snap.pod(v).key(i)).collect(),
            cleared_nominations: cleared,
        })
    }
}
