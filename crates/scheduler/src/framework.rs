//! The scheduling framework: statuses, cycle state and the extension points.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::time::Duration;

use crate::model::{NodeId, NodeInfo, PodInfo};
use crate::snapshot::Snapshot;

/// The highest score a Score plugin may give after normalization.
pub const MAX_NODE_SCORE: i64 = 100;

/// Outcome class of a plugin call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// The pod may proceed.
    Success,
    /// The pod does not fit; preemption may help.
    Unschedulable,
    /// The pod does not fit and preemption cannot help.
    UnschedulableAndUnresolvable,
    /// The plugin has nothing to do for this pod (PreFilter / PreScore).
    Skip,
    /// Permit: wait for approval.
    Wait,
    /// An internal error.
    Error,
}

/// Failure reasons without a heap allocation in the common single-reason case
/// (nodes failing a filter are counted by the thousand).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reasons {
    None,
    One(Cow<'static, str>),
    Many(Vec<Cow<'static, str>>),
}

/// The result of a plugin call: a code, reasons, and the plugin that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    reasons: Reasons,
    plugin: &'static str,
}

impl Status {
    /// Success.
    #[inline]
    pub const fn success() -> Self {
        Status {
            code: Code::Success,
            reasons: Reasons::None,
            plugin: "",
        }
    }
    /// Skip.
    pub const fn skip() -> Self {
        Status {
            code: Code::Skip,
            reasons: Reasons::None,
            plugin: "",
        }
    }
    /// A status with one reason.
    pub fn new(code: Code, reason: impl Into<Cow<'static, str>>) -> Self {
        Status {
            code,
            reasons: Reasons::One(reason.into()),
            plugin: "",
        }
    }
    /// A status with several reasons.
    pub fn with_reasons(code: Code, mut reasons: Vec<Cow<'static, str>>) -> Self {
        let reasons = match reasons.len() {
            0 => Reasons::None,
            1 => Reasons::One(reasons.pop().expect("one reason")),
            _ => Reasons::Many(reasons),
        };
        Status {
            code,
            reasons,
            plugin: "",
        }
    }
    /// The code.
    #[inline]
    pub fn code(&self) -> Code {
        self.code
    }
    /// True for [`Code::Success`].
    #[inline]
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
    /// The reasons, as shown in FailedScheduling events.
    pub fn reasons(&self) -> &[Cow<'static, str>] {
        match &self.reasons {
            Reasons::None => &[],
            Reasons::One(r) => std::slice::from_ref(r),
            Reasons::Many(v) => v,
        }
    }
    /// The plugin that produced this status (set by the framework).
    pub fn plugin(&self) -> &'static str {
        self.plugin
    }
    pub(crate) fn set_plugin(mut self, p: &'static str) -> Self {
        self.plugin = p;
        self
    }
}

/// Plugin data carried through one scheduling cycle.
pub trait StateData: Any + Send + Sync {
    /// Clones the data (preemption evaluates nodes on copies of the state).
    fn clone_data(&self) -> Box<dyn StateData>;
    /// Upcast for downcasting.
    fn as_any(&self) -> &dyn Any;
    /// Upcast for downcasting.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone + Send + Sync> StateData for T {
    fn clone_data(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Per-cycle state: data written by PreFilter/PreScore and read by
/// Filter/Score, keyed by type.
#[derive(Default)]
pub struct CycleState {
    data: Vec<(TypeId, Box<dyn StateData>)>,
    pub(crate) skip_filter: u64,
    pub(crate) skip_score: u64,
    pub(crate) node_subset: Option<Vec<NodeId>>,
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        CycleState {
            data: self
                .data
                .iter()
                .map(|(t, d)| (*t, (**d).clone_data()))
                .collect(),
            skip_filter: self.skip_filter,
            skip_score: self.skip_score,
            node_subset: self.node_subset.clone(),
        }
    }
}

impl CycleState {
    /// Stores `v`, replacing a previous value of the same type.
    pub fn insert<T: StateData>(&mut self, v: T) {
        let t = TypeId::of::<T>();
        if let Some(e) = self.data.iter_mut().find(|e| e.0 == t) {
            e.1 = Box::new(v);
        } else {
            self.data.push((t, Box::new(v)));
        }
    }
    /// Reads the value of type `T`.
    #[inline]
    pub fn get<T: StateData>(&self) -> Option<&T> {
        let t = TypeId::of::<T>();
        self.data
            .iter()
            .find(|e| e.0 == t)
            .and_then(|e| e.1.as_any().downcast_ref())
    }
    /// Mutable access to the value of type `T`.
    pub fn get_mut<T: StateData>(&mut self) -> Option<&mut T> {
        let t = TypeId::of::<T>();
        self.data
            .iter_mut()
            .find(|e| e.0 == t)
            .and_then(|e| e.1.as_any_mut().downcast_mut())
    }
    /// Restricts this cycle to `nodes` (intersected with earlier restrictions),
    /// like upstream's `PreFilterResult.NodeNames`.
    pub fn restrict_nodes(&mut self, mut nodes: Vec<NodeId>) {
        nodes.sort_unstable();
        nodes.dedup();
        self.node_subset = Some(match self.node_subset.take() {
            Some(prev) => nodes
                .into_iter()
                .filter(|n| prev.binary_search(n).is_ok())
                .collect(),
            None => nodes,
        });
    }
}

/// A kind of object a cluster event concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventResource {
    /// A Node.
    Node,
    /// A Pod assigned to a node.
    AssignedPod,
    /// A Pod waiting to be scheduled (its own spec changed).
    UnscheduledPod,
    /// A Namespace.
    Namespace,
    /// A PodDisruptionBudget.
    PodDisruptionBudget,
    /// A PersistentVolumeClaim.
    PersistentVolumeClaim,
    /// A PersistentVolume.
    PersistentVolume,
    /// A StorageClass.
    StorageClass,
    /// A CSIDriver.
    CsiDriver,
    /// A CSIStorageCapacity.
    CsiStorageCapacity,
}

/// What happened to the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventAction {
    /// Created.
    Add,
    /// Modified.
    Update,
    /// Deleted.
    Delete,
}

/// A change in the cluster that may make unschedulable pods schedulable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClusterEvent {
    /// The kind of object.
    pub resource: EventResource,
    /// The change.
    pub action: EventAction,
}

impl ClusterEvent {
    /// Shorthand constructor.
    pub const fn new(resource: EventResource, action: EventAction) -> Self {
        ClusterEvent { resource, action }
    }
}

/// A node with its failure, as collected by the Filter phase.
#[derive(Clone, Debug, Default)]
pub struct Diagnosis {
    /// Failing nodes and the first failing plugin's status for each.
    pub node_statuses: Vec<(NodeId, Status)>,
    /// A PreFilter rejection that applied to every node.
    pub pre_filter: Option<Status>,
    /// Names of the plugins that rejected the pod.
    pub unschedulable_plugins: Vec<&'static str>,
}

/// What PostFilter (preemption) decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreemptionResult {
    /// The node the preemptor is nominated to.
    pub node: NodeId,
    /// The node's name.
    pub node_name: String,
    /// `namespace/name` of the pods to evict.
    pub victims: Vec<String>,
    /// `namespace/name` of lower-priority pods whose nomination to this node
    /// must be cleared.
    pub cleared_nominations: Vec<String>,
}

/// A decision from a Permit plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PermitDecision {
    /// Proceed to binding.
    Allow,
    /// Reject the pod (it goes back to the queue).
    Reject(Status),
    /// Wait up to the given time before binding (the loop rejects the pod
    /// when the wait runs out, as upstream does on timeout).
    Wait(Duration),
}

/// Every plugin: a name, the events that may make pods it rejected
/// schedulable, and the extension points it implements.
pub trait Plugin: Send + Sync {
    /// The plugin's name (as in KubeSchedulerConfiguration).
    fn name(&self) -> &'static str;
    /// Cluster events after which pods this plugin rejected are retried.
    fn events(&self) -> &'static [ClusterEvent] {
        &[]
    }
    /// The PreFilter extension, if implemented.
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        None
    }
    /// The Filter extension, if implemented.
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        None
    }
    /// The PostFilter extension, if implemented.
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        None
    }
    /// The PreScore extension, if implemented.
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        None
    }
    /// The Score (and NormalizeScore) extension, if implemented.
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        None
    }
    /// The Reserve extension, if implemented.
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        None
    }
    /// The Permit extension, if implemented.
    fn as_permit(&self) -> Option<&dyn PermitPlugin> {
        None
    }
    /// The Bind extension, if implemented.
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        None
    }
}

/// PreFilter: compute per-pod state once, or reject the pod outright.
pub trait PreFilterPlugin {
    /// Returns [`Code::Skip`] to skip this plugin's Filter for the pod.
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snap: &Snapshot) -> Status;
    /// Updates the state as if `added` were on `node` (nominated pods,
    /// preemption's reprieve).
    fn add_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _added: &PodInfo,
        _node: &NodeInfo,
        _snap: &Snapshot,
    ) {
    }
    /// Updates the state as if `removed` were gone from `node` (preemption).
    fn remove_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _removed: &PodInfo,
        _node: &NodeInfo,
        _snap: &Snapshot,
    ) {
    }
}

/// Filter: can the pod run on this node? Must read the node's pods only
/// through `node` (which may be a what-if copy), never through `snap`.
pub trait FilterPlugin {
    /// Returns success when the pod fits the node.
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo, snap: &Snapshot)
        -> Status;
}

/// PostFilter: runs when no node fits (preemption).
pub trait PostFilterPlugin {
    /// Tries to make room; `None` when it cannot.
    fn post_filter(
        &self,
        fw: &Framework,
        state: &CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        diagnosis: &Diagnosis,
    ) -> Option<PreemptionResult>;
}

/// PreScore: compute per-pod scoring state over the feasible nodes.
pub trait PreScorePlugin {
    /// Returns [`Code::Skip`] to skip this plugin's Score for the pod.
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        nodes: &[NodeId],
    ) -> Status;
}

/// Score and NormalizeScore.
pub trait ScorePlugin {
    /// The raw score of `node`.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> i64;
    /// Maps raw scores into `0..=MAX_NODE_SCORE` (default: unchanged).
    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, _scores: &mut [i64]) {}
}

/// Reserve / Unreserve.
pub trait ReservePlugin {
    /// Reserves resources for the pod on `node`.
    fn reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status;
    /// Undoes [`reserve`](Self::reserve) when a later phase fails.
    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str);
}

/// Permit: approve, reject or delay binding.
pub trait PermitPlugin {
    /// Decides for the pod on `node`.
    fn permit(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> PermitDecision;
}

/// Bind: performs the binding. Returns [`Code::Skip`] to let the next binder
/// act. When no bind plugin binds, the caller binds (the loop uses the API's
/// `pods/binding` subresource, upstream's DefaultBinder).
pub trait BindPlugin {
    /// Binds `pod` to `node`.
    fn bind(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status;
}

/// Upstream's `DefaultNormalizeScore`: scale to `0..=MAX_NODE_SCORE` by the
/// maximum, optionally reversed (lower raw scores are better).
pub(crate) fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

pub use crate::profile::Framework;
