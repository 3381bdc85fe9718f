//! A fast Kubernetes scheduler: the scheduling framework (PreFilter, Filter,
//! PostFilter, PreScore, Score, NormalizeScore, Reserve, Permit, Bind), the
//! default plugins with Kubernetes' semantics and weights, DefaultPreemption
//! with PodDisruptionBudgets, the scheduling queue, and (feature `client`) a
//! binding loop against any Kubernetes API server.
//!
//! The core works on a [`Snapshot`]: nodes and assigned pods compiled once from
//! k8s-openapi objects into interned, compact form and updated incrementally.
//! A [`Scheduler`] evaluates a rotating window of nodes sized by
//! `percentageOfNodesToScore`, like kube-scheduler.
//!
//! # Example
//!
//! ```
//! use k8s_openapi::api::core::v1::{Node, Pod};
//! use kcore_scheduler::{Framework, Outcome, Scheduler, Snapshot};
//!
//! let node: Node = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
//!     "status": {"allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"}}
//! }))?;
//! let pod: Pod = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "web", "namespace": "default"},
//!     "spec": {"containers": [{"name": "c", "image": "nginx",
//!         "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}
//! }))?;
//!
//! let mut snap = Snapshot::new();
//! snap.upsert_node(&node)?;
//! let mut sched = Scheduler::new(Framework::with_defaults());
//! let info = snap.compile_pod(&pod)?;
//! match sched.schedule_one(&mut snap, info) {
//!     Outcome::Assumed { result, .. } => assert_eq!(result.node_name, "n1"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! assert_eq!(snap.node(snap.node_id("n1").unwrap()).requested().milli_cpu, 100);
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod batch;
mod error;
mod framework;
mod intern;
mod labels;
mod model;
mod plugins;
mod profile;
mod queue;
mod resource;
mod scheduler;
mod snapshot;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
mod volumes;

pub use batch::{schedule_batch, Decision, Placement};
#[cfg(feature = "client")]
pub use client::SchedulerLoop;
pub use error::Error;
pub use framework::{
    BindPlugin, ClusterEvent, Code, CycleState, Diagnosis, EventAction, EventResource,
    FilterPlugin, PermitDecision, PermitPlugin, Plugin, PostFilterPlugin, PreFilterPlugin,
    PreScorePlugin, PreemptionResult, ReservePlugin, ScorePlugin, StateData, Status,
    MAX_NODE_SCORE,
};
pub use intern::{Interner, Sym};
pub use labels::{LabelSelector, Labels};
pub use model::{
    normalize_image, ClaimCapacity, NodeId, NodeInfo, PodId, PodInfo, PodVolumes, TaintEffect,
    DEFAULT_SCHEDULER_NAME,
};
pub use plugins::{
    DefaultPreemption, ImageLocality, InterPodAffinity, NodeAffinity, NodeName, NodePorts,
    NodeResourcesBalancedAllocation, NodeResourcesFit, NodeUnschedulable, PodTopologySpread,
    TaintToleration, VolumeBinding, NOT_ENOUGH_SPACE, UNBOUND_IMMEDIATE,
    VOLUME_NODE_AFFINITY_CONFLICT,
};
pub use profile::{DefaultPluginsConfig, Framework, FrameworkBuilder, ScoringStrategy};
pub use queue::{Clock, ManualClock, Popped, QueueState, SchedulingQueue, SystemClock};
pub use resource::Resources;
pub use scheduler::{FitError, Outcome, ScheduleResult, Scheduler};
pub use snapshot::Snapshot;
