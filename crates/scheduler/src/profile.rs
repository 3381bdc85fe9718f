//! A scheduling profile: the plugins enabled at each extension point, their
//! score weights, and the knobs of the scheduling algorithm.

use std::sync::Arc;

use crate::error::Error;
use crate::framework::{
    Code, CycleState, Diagnosis, FilterPlugin, PermitDecision, Plugin, PreemptionResult, Status,
};
use crate::model::{NodeId, NodeInfo, PodId, PodInfo, DEFAULT_SCHEDULER_NAME};
use crate::plugins;
use crate::snapshot::Snapshot;

/// How NodeResourcesFit scores nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ScoringStrategy {
    /// Prefer nodes with the most free CPU and memory (the default; spreads).
    #[default]
    LeastAllocated,
    /// Prefer nodes with the least free CPU and memory (bin packing).
    MostAllocated,
}

/// Options of the default plugin set.
#[derive(Clone, Debug)]
pub struct DefaultPluginsConfig {
    /// NodeResourcesFit scoring strategy.
    pub scoring_strategy: ScoringStrategy,
    /// InterPodAffinity `hardPodAffinityWeight` (default 1).
    pub hard_pod_affinity_weight: i64,
    /// Enable DefaultPreemption.
    pub preemption: bool,
}

impl Default for DefaultPluginsConfig {
    fn default() -> Self {
        DefaultPluginsConfig {
            scoring_strategy: ScoringStrategy::LeastAllocated,
            hard_pod_affinity_weight: 1,
            preemption: true,
        }
    }
}

struct Entry {
    plugin: Arc<dyn Plugin>,
    weight: i64,
}

/// A scheduling profile (upstream's framework instance): plugins in order,
/// score weights, `percentageOfNodesToScore`.
pub struct Framework {
    scheduler_name: String,
    plugins: Vec<Entry>,
    pre_filter: Vec<usize>,
    filter: Vec<usize>,
    post_filter: Vec<usize>,
    pre_score: Vec<usize>,
    score: Vec<usize>,
    reserve: Vec<usize>,
    permit: Vec<usize>,
    bind: Vec<usize>,
    percentage_of_nodes_to_score: u32,
}

impl std::fmt::Debug for Framework {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framework")
            .field("scheduler_name", &self.scheduler_name)
            .field(
                "plugins",
                &self
                    .plugins
                    .iter()
                    .map(|e| (e.plugin.name(), e.weight))
                    .collect::<Vec<_>>(),
            )
            .field(
                "percentage_of_nodes_to_score",
                &self.percentage_of_nodes_to_score,
            )
            .finish()
    }
}

/// The active Filter plugins of one cycle.
pub(crate) struct FilterSet<'a>(Vec<(&'static str, &'a dyn FilterPlugin)>);

impl FilterSet<'_> {
    #[inline]
    pub(crate) fn run(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Status {
        for &(name, f) in &self.0 {
            let st = f.filter(state, pod, node, snap);
            if !st.is_success() {
                return st.set_plugin(name);
            }
        }
        Status::success()
    }
}

/// Builds a [`Framework`].
pub struct FrameworkBuilder {
    scheduler_name: String,
    plugins: Vec<Entry>,
    percentage: u32,
}

impl FrameworkBuilder {
    /// Adds a plugin; `weight` applies if it scores (upstream rejects 0, so a
    /// zero weight becomes 1).
    pub fn plugin(mut self, plugin: Arc<dyn Plugin>, weight: i64) -> Self {
        self.plugins.push(Entry {
            plugin,
            weight: if weight == 0 { 1 } else { weight },
        });
        self
    }

    /// Removes a plugin by name.
    pub fn without(mut self, name: &str) -> Self {
        self.plugins.retain(|e| e.plugin.name() != name);
        self
    }

    /// `percentageOfNodesToScore`: 0 is adaptive (50% − nodes/125, at least
    /// 5%), 100 evaluates every node.
    pub fn percentage_of_nodes_to_score(mut self, p: u32) -> Self {
        self.percentage = p;
        self
    }

    /// Finishes the profile.
    pub fn build(self) -> Result<Framework, Error> {
        if self.percentage > 100 {
            return Err(Error::Config {
                reason: format!("percentageOfNodesToScore {} is above 100", self.percentage),
            });
        }
        if self.plugins.len() > 64 {
            return Err(Error::Config {
                reason: "at most 64 plugins per profile".into(),
            });
        }
        let mut fw = Framework {
            scheduler_name: self.scheduler_name,
            plugins: self.plugins,
            pre_filter: vec![],
            filter: vec![],
            post_filter: vec![],
            pre_score: vec![],
            score: vec![],
            reserve: vec![],
            permit: vec![],
            bind: vec![],
            percentage_of_nodes_to_score: self.percentage,
        };
        for (i, e) in fw.plugins.iter().enumerate() {
            let p = &e.plugin;
            if p.as_pre_filter().is_some() {
                fw.pre_filter.push(i);
            }
            if p.as_filter().is_some() {
                fw.filter.push(i);
            }
            if p.as_post_filter().is_some() {
                fw.post_filter.push(i);
            }
            if p.as_pre_score().is_some() {
                fw.pre_score.push(i);
            }
            if p.as_score().is_some() {
                fw.score.push(i);
            }
            if p.as_reserve().is_some() {
                fw.reserve.push(i);
            }
            if p.as_permit().is_some() {
                fw.permit.push(i);
            }
            if p.as_bind().is_some() {
                fw.bind.push(i);
            }
        }
        Ok(fw)
    }
}

impl Framework {
    /// An empty builder for `scheduler_name`.
    pub fn builder(scheduler_name: impl Into<String>) -> FrameworkBuilder {
        FrameworkBuilder {
            scheduler_name: scheduler_name.into(),
            plugins: Vec::new(),
            percentage: 0,
        }
    }

    /// A builder preloaded with Kubernetes' default plugins and weights.
    pub fn default_builder(
        scheduler_name: impl Into<String>,
        cfg: &DefaultPluginsConfig,
    ) -> FrameworkBuilder {
        let mut b = Self::builder(scheduler_name)
            .plugin(Arc::new(plugins::NodeUnschedulable), 1)
            .plugin(Arc::new(plugins::NodeName), 1)
            .plugin(Arc::new(plugins::TaintToleration), 3)
            .plugin(Arc::new(plugins::NodeAffinity), 2)
            .plugin(Arc::new(plugins::NodePorts), 1)
            .plugin(
                Arc::new(plugins::NodeResourcesFit::new(cfg.scoring_strategy)),
                1,
            )
            .plugin(Arc::new(plugins::VolumeBinding), 1)
            .plugin(Arc::new(plugins::PodTopologySpread), 2)
            .plugin(
                Arc::new(plugins::InterPodAffinity::new(cfg.hard_pod_affinity_weight)),
                2,
            )
            .plugin(Arc::new(plugins::NodeResourcesBalancedAllocation), 1)
            .plugin(Arc::new(plugins::ImageLocality), 1);
        if cfg.preemption {
            b = b.plugin(Arc::new(plugins::DefaultPreemption), 1);
        }
        b
    }

    /// Kubernetes' default profile for `default-scheduler`.
    pub fn with_defaults() -> Framework {
        Self::default_builder(DEFAULT_SCHEDULER_NAME, &DefaultPluginsConfig::default())
            .build()
            .expect("the default profile is valid")
    }

    /// The scheduler name pods select this profile with.
    pub fn scheduler_name(&self) -> &str {
        &self.scheduler_name
    }

    /// Names of the plugins, in order.
    pub fn plugin_names(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|e| e.plugin.name()).collect()
    }

    /// The configured plugins (for queueing hints).
    pub fn plugins(&self) -> impl Iterator<Item = &dyn Plugin> {
        self.plugins.iter().map(|e| &*e.plugin)
    }

    /// Upstream `numFeasibleNodesToFind`.
    pub fn num_feasible_nodes_to_find(&self, num_all_nodes: usize) -> usize {
        const MIN_FEASIBLE: usize = 100;
        const MIN_PERCENT: i64 = 5;
        if num_all_nodes < MIN_FEASIBLE {
            return num_all_nodes;
        }
        let mut pct = i64::from(self.percentage_of_nodes_to_score);
        if pct == 0 {
            pct = (50 - num_all_nodes as i64 / 125).max(MIN_PERCENT);
        }
        let n = (num_all_nodes as i64 * pct / 100) as usize;
        n.max(MIN_FEASIBLE)
    }

    /// Runs PreFilter plugins. A non-success, non-skip status rejects the pod
    /// on every node.
    pub fn run_pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snap: &Snapshot) -> Status {
        for &i in &self.pre_filter {
            let p = &self.plugins[i].plugin;
            let st = p
                .as_pre_filter()
                .expect("registered")
                .pre_filter(state, pod, snap);
            match st.code() {
                Code::Success => {}
                Code::Skip => state.skip_filter |= 1 << i,
                _ => return st.set_plugin(p.name()),
            }
        }
        Status::success()
    }

    /// Runs the Filter plugins on one node, stopping at the first failure.
    pub fn run_filters(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Status {
        self.filter_set(state).run(state, pod, node, snap)
    }

    /// The Filter plugins not skipped by PreFilter in this cycle, resolved
    /// once so the per-node loop makes one virtual call per plugin.
    pub(crate) fn filter_set(&self, state: &CycleState) -> FilterSet<'_> {
        FilterSet(
            self.filter
                .iter()
                .filter(|&&i| state.skip_filter & (1 << i) == 0)
                .map(|&i| {
                    let p = &self.plugins[i].plugin;
                    (p.name(), p.as_filter().expect("registered"))
                })
                .collect(),
        )
    }

    /// Filters with the pods nominated to `node` of priority ≥ the pod's
    /// counted in, as upstream's `RunFilterPluginsWithNominatedPods`: the pod
    /// must fit both with and without them.
    pub fn run_filters_with_nominated(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node_id: NodeId,
        snap: &Snapshot,
    ) -> Status {
        let node = snap.node(node_id);
        let nominated: Vec<&PodInfo> = snap
            .nominated
            .get(&node_id)
            .into_iter()
            .flatten()
            .filter(|p| {
                p.priority >= pod.priority && (p.namespace, &p.name) != (pod.namespace, &pod.name)
            })
            .collect();
        if nominated.is_empty() {
            return self.run_filters(state, pod, node, snap);
        }
        let mut state2 = state.clone();
        let mut node2 = node.clone();
        for (k, p) in nominated.iter().enumerate() {
            node2.add_pod(PodId(u32::MAX - k as u32), p);
            self.run_add_pod(&mut state2, pod, p, &node2, snap);
        }
        let st = self.run_filters(&state2, pod, &node2, snap);
        if !st.is_success() {
            return st;
        }
        self.run_filters(state, pod, node, snap)
    }

    pub(crate) fn run_add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        added: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) {
        for &i in &self.pre_filter {
            if state.skip_filter & (1 << i) == 0 {
                self.plugins[i]
                    .plugin
                    .as_pre_filter()
                    .expect("registered")
                    .add_pod(state, pod, added, node, snap);
            }
        }
    }

    pub(crate) fn run_remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) {
        for &i in &self.pre_filter {
            if state.skip_filter & (1 << i) == 0 {
                self.plugins[i]
                    .plugin
                    .as_pre_filter()
                    .expect("registered")
                    .remove_pod(state, pod, removed, node, snap);
            }
        }
    }

    /// Runs PostFilter plugins until one nominates a node.
    pub fn run_post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        diagnosis: &Diagnosis,
    ) -> Option<PreemptionResult> {
        self.post_filter.iter().find_map(|&i| {
            self.plugins[i]
                .plugin
                .as_post_filter()
                .expect("registered")
                .post_filter(self, state, pod, snap, diagnosis)
        })
    }

    /// Runs PreScore plugins.
    pub fn run_pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        nodes: &[NodeId],
    ) -> Status {
        for &i in &self.pre_score {
            let p = &self.plugins[i].plugin;
            let st = p
                .as_pre_score()
                .expect("registered")
                .pre_score(state, pod, snap, nodes);
            match st.code() {
                Code::Success => {}
                Code::Skip => state.skip_score |= 1 << i,
                _ => return st.set_plugin(p.name()),
            }
        }
        Status::success()
    }

    /// Runs Score, NormalizeScore and weighting; returns the total per node
    /// (same order as `nodes`). `scratch` is reused between calls.
    pub fn run_score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        nodes: &[NodeId],
        totals: &mut Vec<i64>,
        scratch: &mut Vec<i64>,
    ) {
        totals.clear();
        totals.resize(nodes.len(), 0);
        for &i in &self.score {
            if state.skip_score & (1 << i) != 0 {
                continue;
            }
            let e = &self.plugins[i];
            let sp = e.plugin.as_score().expect("registered");
            scratch.clear();
            scratch.extend(
                nodes
                    .iter()
                    .map(|&n| sp.score(state, pod, snap.node(n), snap)),
            );
            sp.normalize(state, pod, scratch);
            for (t, s) in totals.iter_mut().zip(scratch.iter()) {
                *t += s * e.weight;
            }
        }
    }

    /// Runs Reserve; on failure, Unreserve in reverse and return the status.
    pub fn run_reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status {
        for (k, &i) in self.reserve.iter().enumerate() {
            let p = &self.plugins[i].plugin;
            let st = p
                .as_reserve()
                .expect("registered")
                .reserve(state, pod, node);
            if !st.is_success() {
                for &j in self.reserve[..=k].iter().rev() {
                    self.plugins[j]
                        .plugin
                        .as_reserve()
                        .expect("registered")
                        .unreserve(state, pod, node);
                }
                return st.set_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Runs Unreserve in reverse order.
    pub fn run_unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) {
        for &j in self.reserve.iter().rev() {
            self.plugins[j]
                .plugin
                .as_reserve()
                .expect("registered")
                .unreserve(state, pod, node);
        }
    }

    /// Runs Permit; the first rejection wins, else the longest wait.
    pub fn run_permit(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> PermitDecision {
        let mut wait = None;
        for &i in &self.permit {
            let p = &self.plugins[i].plugin;
            match p.as_permit().expect("registered").permit(state, pod, node) {
                PermitDecision::Allow => {}
                PermitDecision::Reject(st) => {
                    return PermitDecision::Reject(st.set_plugin(p.name()))
                }
                PermitDecision::Wait(d) => {
                    wait = Some(wait.map_or(d, |w: std::time::Duration| w.max(d)))
                }
            }
        }
        wait.map_or(PermitDecision::Allow, PermitDecision::Wait)
    }

    /// Runs Bind plugins; returns [`Code::Skip`] if none bound the pod.
    pub fn run_bind(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status {
        for &i in &self.bind {
            let p = &self.plugins[i].plugin;
            let st = p.as_bind().expect("registered").bind(state, pod, node);
            if st.code() != Code::Skip {
                return st.set_plugin(p.name());
            }
        }
        Status::skip()
    }
}
