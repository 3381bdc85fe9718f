//! kcore-reconcile: a Kubernetes controller runtime and the built-in controllers.
//!
//! The runtime:
//! - [`Informer`] and [`Store`]: caches kept by list + watch (kube-rs's watcher: resume from
//!   the last resourceVersion, relist after `410 Gone`), telling handlers what changed;
//! - [`WorkQueue`]: de-duplicates keys, never hands one key to two workers at once, and
//!   requeues failures with per-key exponential backoff under an overall token bucket;
//! - [`run_workers`] drives a level-triggered [`Reconciler`]; [`Expectations`] keep a
//!   controller from acting twice before its cache has seen its own writes;
//! - [`LeaderElector`]: leader election with a `coordination.k8s.io` Lease.
//!
//! The controllers (ReplicaSet, Deployment, DaemonSet, StatefulSet, Job, CronJob,
//! TTL-after-finished, Endpoints and
//! EndpointSlices, garbage collector, namespace, node lifecycle, HorizontalPodAutoscaler)
//! run in a
//! [`ControllerManager`]: `ControllerManager::new(client).run(shutdown)` starts shared
//! informers, waits for them to sync, and runs each controller's workers (behind leader
//! election when configured). Their decisions are pure functions exported here for reuse
//! and testing ([`old_rs_scale_down`], [`proportional_scale`], [`daemon_plan`],
//! [`sts_plan`], ...).
//!
//! # Example
//!
//! ```
//! use kcore_reconcile::{ObjectKey, WorkQueue};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let queue = WorkQueue::default();
//! queue.add(ObjectKey::namespaced("default", "web"));
//! queue.add(ObjectKey::namespaced("default", "web")); // de-duplicated
//! assert_eq!(queue.len(), 1);
//! let key = queue.get().await.expect("a key");
//! assert_eq!(key.to_string(), "default/web");
//! queue.done(&key);
//! # });
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod cache;
mod controllers;
mod error;
mod leader;
mod manager;
mod meta;
mod queue;
mod runner;

pub use cache::{Change, Handler, IndexFn, Informer, Store};
pub use controllers::cronjob::{
    cronjob_job_name, job_for_schedule, schedule_decision, Clock, ScheduleDecision,
    CRONJOB_SCHEDULED_TIMESTAMP,
};
pub use controllers::daemonset::{
    node_should_run, plan as daemon_plan, pod_node as daemon_pod_node, DaemonPlan, NodePods,
    CONTROLLER_REVISION_HASH,
};
pub use controllers::deployment::{
    equal_ignore_hash, history_to_delete, new_rs_replicas, old_rs_scale_down, proportional_scale,
    resolve_fenceposts, template_hash, RsCounts, ScaleInput, DESIRED_REPLICAS, MAX_REPLICAS,
    POD_TEMPLATE_HASH, REVISION, REVISION_HISTORY,
};
pub use controllers::endpoints::{
    MANAGED_BY, MANAGED_BY_LABEL, MAX_ENDPOINTS_PER_SLICE, SERVICE_NAME_LABEL,
};
pub use controllers::gc::{FOREGROUND, ORPHAN};
pub use controllers::history::{revision_data, revision_name, revisions_to_prune};
pub use controllers::job::{
    format_indexes, job_finished, match_pod_failure_policy, parse_indexes,
    past_backoff_limit_on_failure, pod_failure_backoff, pod_for_job, pod_index, want_active,
    FailureAction, DEFAULT_POD_FAILURE_BACKOFF, JOB_COMPLETION_INDEX, JOB_COMPLETION_INDEX_ENV,
    JOB_INDEX_FAILURE_COUNT, JOB_TRACKING_FINALIZER,
};
pub use controllers::namespace::KUBERNETES_FINALIZER;
pub use controllers::nodelifecycle::{NODE_LEASE_NAMESPACE, UNREACHABLE_TAINT};
pub use controllers::persistentvolume::{
    best_volume, volume_mismatch, ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER, ANN_PROVISIONED_BY,
    ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER,
};
pub use controllers::podautoscaler::HpaConfig;
pub use controllers::replicaset::POD_DELETION_COST;
pub use controllers::servicelb::NODE_LB_CLASS;
pub use controllers::statefulset::{
    claim_name, sts_plan, OrdinalPod, StsAction, POD_INDEX_LABEL, POD_NAME_LABEL,
};
pub use controllers::ttlafterfinished::ttl_expiry;
pub use controllers::volumeprotection::{
    pod_uses_claim, PVC_PROTECTION_FINALIZER, PV_PROTECTION_FINALIZER,
};
pub use error::Error;
pub use leader::{LeaderElectionConfig, LeaderElector, LeaseFence};
pub use manager::{BatchConfig, ControllerManager, ControllerManagerConfig, CONTROLLERS};
pub use meta::{
    controller_of, controller_ref, pod_is_active, pod_is_available, pod_is_ready, toleration_for,
    ObjectKey,
};
pub use queue::{RateLimitConfig, RateLimiter, WorkQueue};
pub use runner::{run_workers, Action, Expectations, Reconciler};

/// The unit tests' API server: in process, plain HTTP on loopback, on a temporary store
/// (kept until the directory is dropped), and a client of it.
#[cfg(test)]
pub(crate) async fn test_server() -> (
    tempfile::TempDir,
    kcore_apiserver::RunningServer,
    kube::Client,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = kcore_apiserver::ApiServer::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0".parse().expect("addr"))
        .insecure_http(true)
        .build()
        .await
        .expect("server")
        .spawn();
    let client = kube::Client::try_from(kube::Config::new(server.url().parse().expect("url")))
        .expect("client");
    (dir, server, client)
}
