//! The scheduling algorithm: one pod at a time against a snapshot.

use std::collections::BTreeMap;
use std::fmt;

use crate::framework::{Code, CycleState, Diagnosis, PermitDecision, PreemptionResult, Status};
use crate::model::{NodeId, PodId, PodInfo};
use crate::profile::Framework;
use crate::snapshot::Snapshot;

/// Where a pod goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleResult {
    /// The chosen node.
    pub node: NodeId,
    /// Its name.
    pub node_name: String,
    /// Nodes run through the filters.
    pub evaluated_nodes: usize,
    /// Nodes that passed.
    pub feasible_nodes: usize,
}

/// No node fits: per-node reasons, and what preemption decided.
#[derive(Clone, Debug)]
pub struct FitError {
    /// Nodes in the snapshot.
    pub num_all_nodes: usize,
    /// Why each node failed.
    pub diagnosis: Diagnosis,
    /// Set when preemption nominated a node.
    pub preemption: Option<PreemptionResult>,
    post_filter_msg: Option<String>,
}

impl FitError {
    /// Reason → number of nodes, as counted in the event message.
    pub fn reason_histogram(&self) -> BTreeMap<String, usize> {
        let mut h = BTreeMap::new();
        if let Some(st) = &self.diagnosis.pre_filter {
            for r in st.reasons() {
                *h.entry(r.to_string()).or_default() += self.num_all_nodes;
            }
        }
        for (_, st) in &self.diagnosis.node_statuses {
            for r in st.reasons() {
                *h.entry(r.to_string()).or_default() += 1;
            }
        }
        h
    }
}

impl fmt::Display for FitError {
    /// Upstream's FailedScheduling text: `0/N nodes are available: 2 Insufficient cpu, 1 ….`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        if self.num_all_nodes == 0 {
            return write!(f, " no nodes available to schedule pods.");
        }
        let mut parts: Vec<String> = self
            .reason_histogram()
            .into_iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        if !parts.is_empty() {
            write!(f, " {}.", parts.join(", "))?;
        }
        if let Some(m) = &self.post_filter_msg {
            write!(f, " {m}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FitError {}

/// The outcome of [`Scheduler::schedule_one`].
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Assumed onto a node; bind it next.
    Assumed {
        /// The pod's slot in the snapshot.
        pod: PodId,
        /// The decision.
        result: ScheduleResult,
    },
    /// Permit asked to wait; the pod is assumed and must be bound or
    /// forgotten by the caller once the wait resolves.
    Waiting {
        /// The pod's slot in the snapshot.
        pod: PodId,
        /// The decision.
        result: ScheduleResult,
        /// The longest wait any Permit plugin asked for.
        timeout: std::time::Duration,
    },
    /// Nothing fits (possibly with a preemption nomination).
    Unschedulable(Box<FitError>),
    /// Reserve or Permit rejected the pod.
    Rejected(Status),
}

/// Runs a [`Framework`] over a [`Snapshot`]: filter (on a rotating window of
/// `percentageOfNodesToScore` nodes), score, select, and assume.
#[derive(Debug)]
pub struct Scheduler {
    fw: Framework,
    next_start: usize,
    rng: u64,
    feasible: Vec<NodeId>,
    totals: Vec<i64>,
    scratch: Vec<i64>,
}

impl Scheduler {
    /// A scheduler for `fw`.
    pub fn new(fw: Framework) -> Self {
        Scheduler {
            fw,
            next_start: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            feasible: Vec::new(),
            totals: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The profile in use.
    pub fn framework(&self) -> &Framework {
        &self.fw
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: tie-breaking only, determinism is a feature in tests.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Picks a node for `pod`, or explains why none fits (running preemption).
    pub fn schedule(
        &mut self,
        snap: &Snapshot,
        pod: &PodInfo,
    ) -> Result<ScheduleResult, Box<FitError>> {
        self.schedule_with_state(snap, pod).map(|(r, _)| r)
    }

    fn fit_error(
        &self,
        snap: &Snapshot,
        diagnosis: Diagnosis,
        state: &CycleState,
        pod: &PodInfo,
    ) -> FitError {
        let mut diagnosis = diagnosis;
        let mut plugins: Vec<&'static str> = diagnosis
            .node_statuses
            .iter()
            .map(|(_, s)| s.plugin())
            .chain(diagnosis.pre_filter.iter().map(|s| s.plugin()))
            .collect();
        plugins.sort_unstable();
        plugins.dedup();
        diagnosis.unschedulable_plugins = plugins;
        let preemption = self.fw.run_post_filter(state, pod, snap, &diagnosis);
        let post_filter_msg = if preemption.is_none() && snap.num_nodes() > 0 {
            let unresolvable = diagnosis
                .node_statuses
                .iter()
                .filter(|(_, s)| s.code() == Code::UnschedulableAndUnresolvable)
                .count();
            let n = snap.num_nodes();
            let others = n.saturating_sub(unresolvable);
            let mut parts = Vec::new();
            if others > 0 {
                parts.push(format!(
                    "{others} No preemption victims found for incoming pod"
                ));
            }
            if unresolvable > 0 {
                parts.push(format!(
                    "{unresolvable} Preemption is not helpful for scheduling"
                ));
            }
            if !self.fw.plugin_names().contains(&"DefaultPreemption") || pod.preempt_never {
                None
            } else {
                Some(format!(
                    "preemption: 0/{n} nodes are available: {}.",
                    parts.join(", ")
                ))
            }
        } else {
            None
        };
        FitError {
            num_all_nodes: snap.num_nodes(),
            diagnosis,
            preemption,
            post_filter_msg,
        }
    }

    fn schedule_with_state(
        &mut self,
        snap: &Snapshot,
        pod: &PodInfo,
    ) -> Result<(ScheduleResult, CycleState), Box<FitError>> {
        let mut state = CycleState::default();
        let n = snap.num_nodes();
        if n == 0 {
            return Err(Box::new(FitError {
                num_all_nodes: 0,
                diagnosis: Diagnosis::default(),
                preemption: None,
                post_filter_msg: None,
            }));
        }
        let st = self.fw.run_pre_filter(&mut state, pod, snap);
        if !st.is_success() {
            let d = Diagnosis {
                pre_filter: Some(st),
                ..Default::default()
            };
            return Err(Box::new(self.fit_error(snap, d, &state, pod)));
        }
        let with_nominated = !snap.nominated.is_empty();
        let fw = &self.fw;
        let filter = |set: &crate::profile::FilterSet<'_>, state: &CycleState, nid: NodeId| {
            if with_nominated {
                fw.run_filters_with_nominated(state, pod, nid, snap)
            } else {
                set.run(state, pod, snap.node(nid), snap)
            }
        };
        let set = fw.filter_set(&state);
        // A nominated node (from an earlier preemption) is tried first.
        if let Some(nid) = pod.nominated_node.as_deref().and_then(|n| snap.node_id(n)) {
            if state
                .node_subset
                .as_ref()
                .is_none_or(|s| s.binary_search(&nid).is_ok())
                && filter(&set, &state, nid).is_success()
            {
                return Ok((
                    ScheduleResult {
                        node: nid,
                        node_name: snap.node(nid).name.to_string(),
                        evaluated_nodes: 1,
                        feasible_nodes: 1,
                    },
                    state,
                ));
            }
        }
        let subset = state.node_subset.take();
        let (nodes, rotate): (&[NodeId], bool) = match &subset {
            Some(s) => (s.as_slice(), false),
            None => (snap.node_ids(), true),
        };
        let len = nodes.len();
        let want = self.fw.num_feasible_nodes_to_find(len);
        let start = if rotate {
            self.next_start % len.max(1)
        } else {
            0
        };
        let mut feasible = std::mem::take(&mut self.feasible);
        feasible.clear();
        let mut diagnosis = Diagnosis::default();
        let mut processed = 0;
        for k in 0..len {
            let nid = nodes[(start + k) % len];
            processed += 1;
            let st = filter(&set, &state, nid);
            if st.is_success() {
                feasible.push(nid);
                if feasible.len() >= want {
                    break;
                }
            } else {
                diagnosis.node_statuses.push((nid, st));
            }
        }
        if rotate && len > 0 {
            self.next_start = (start + processed) % len;
        }
        if feasible.is_empty() {
            self.feasible = feasible;
            state.node_subset = subset;
            return Err(Box::new(self.fit_error(snap, diagnosis, &state, pod)));
        }
        let chosen = if feasible.len() == 1 {
            feasible[0]
        } else {
            let st = self.fw.run_pre_score(&mut state, pod, snap, &feasible);
            if st.is_success() {
                let mut totals = std::mem::take(&mut self.totals);
                let mut scratch = std::mem::take(&mut self.scratch);
                self.fw
                    .run_score(&state, pod, snap, &feasible, &mut totals, &mut scratch);
                // Highest total wins; ties broken uniformly (reservoir sampling).
                let mut best = 0;
                let mut ties = 1u64;
                for k in 1..totals.len() {
                    if totals[k] > totals[best] {
                        best = k;
                        ties = 1;
                    } else if totals[k] == totals[best] {
                        ties += 1;
                        if self.next_rand() % ties == 0 {
                            best = k;
                        }
                    }
                }
                self.totals = totals;
                self.scratch = scratch;
                feasible[best]
            } else {
                feasible[0]
            }
        };
        let result = ScheduleResult {
            node: chosen,
            node_name: snap.node(chosen).name.to_string(),
            evaluated_nodes: processed,
            feasible_nodes: feasible.len(),
        };
        self.feasible = feasible;
        Ok((result, state))
    }

    /// A whole scheduling cycle: schedule, Reserve, Permit, and assume the pod
    /// onto the chosen node in `snap`. On [`Outcome::Unschedulable`] with a
    /// preemption result, the pod is recorded as nominated in `snap`; evicting
    /// the victims is the caller's job.
    pub fn schedule_one(&mut self, snap: &mut Snapshot, pod: PodInfo) -> Outcome {
        let _span = tracing::trace_span!("schedule_one", pod = %pod.name).entered();
        let (result, mut state) = match self.schedule_with_state(snap, &pod) {
            Ok(r) => r,
            Err(e) => {
                if let Some(p) = &e.preemption {
                    snap.nominate(pod, p.node);
                    for key in &p.cleared_nominations {
                        snap.clear_nomination(key);
                    }
                }
                return Outcome::Unschedulable(e);
            }
        };
        let st = self.fw.run_reserve(&mut state, &pod, &result.node_name);
        if !st.is_success() {
            return Outcome::Rejected(st);
        }
        let decision = self.fw.run_permit(&mut state, &pod, &result.node_name);
        if let PermitDecision::Reject(st) = decision {
            self.fw.run_unreserve(&mut state, &pod, &result.node_name);
            return Outcome::Rejected(st);
        }
        if pod.nominated_node.is_some() {
            snap.clear_nomination(&pod.key(snap.interner()));
        }
        let id = snap.assume(pod, result.node);
        match decision {
            PermitDecision::Wait(timeout) => Outcome::Waiting {
                pod: id,
                result,
                timeout,
            },
            _ => Outcome::Assumed { pod: id, result },
        }
    }
}
