//! The scheduling loop against a Kubernetes API server (kube-rs): watch,
//! queue, schedule, assume, bind, report. Leader election is not this loop's business:
//! run it only while holding a Lease (kcore-reconcile's `LeaderElector`, as kcored does).

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Binding, Event, Namespace, Node, ObjectReference, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::json;
use tokio::sync::Notify;

use kcore_k8s::status_code;

use crate::error::Error;
use crate::framework::{ClusterEvent, EventAction, EventResource};
use crate::profile::Framework;
use crate::queue::{SchedulingQueue, SystemClock};
use crate::scheduler::{Outcome, Scheduler};
use crate::snapshot::Snapshot;
use crate::volumes::VolumeCache;

struct Shared {
    snap: Snapshot,
    queue: SchedulingQueue<Arc<Pod>>,
    sched: Scheduler,
}

struct Loop {
    client: Client,
    name: String,
    shared: Mutex<Shared>,
    wake: Notify,
    /// What VolumeBinding reads, from watch caches.
    volumes: Arc<VolumeCache>,
}

impl Loop {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, moved: bool) {
        if moved {
            self.wake.notify_one();
        }
    }

    fn on_node(&self, node: Node, deleted: bool) {
        let mut s = self.lock();
        let name = node.metadata.name.clone().unwrap_or_default();
        if deleted {
            s.snap.remove_node(&name);
            s.queue
                .on_event(ClusterEvent::new(EventResource::Node, EventAction::Delete));
            return;
        }
        let existed = s.snap.node_id(&name).is_some();
        if let Err(e) = s.snap.upsert_node(&node) {
            tracing::warn!(node = %name, error = %e, "ignoring node");
            return;
        }
        let action = if existed {
            EventAction::Update
        } else {
            EventAction::Add
        };
        let moved = s
            .queue
            .on_event(ClusterEvent::new(EventResource::Node, action));
        drop(s);
        self.notify(moved > 0);
    }

    fn on_pod(&self, pod: Pod, deleted: bool) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let key = format!("{ns}/{}", pod.metadata.name.as_deref().unwrap_or(""));
        let mut s = self.lock();
        let assigned_ev = |a| ClusterEvent::new(EventResource::AssignedPod, a);
        if deleted {
            let moved = if s.snap.remove_pod(&key).is_some() {
                s.queue.on_event(assigned_ev(EventAction::Delete))
            } else {
                0
            };
            s.queue.delete(&key);
            s.snap.clear_nomination(&key);
            drop(s);
            self.notify(moved > 0);
            return;
        }
        let spec = pod.spec.as_ref();
        let assigned = spec
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if assigned {
            let existed = s.snap.pod_id(&key).is_some();
            s.queue.delete(&key);
            s.snap.clear_nomination(&key);
            let moved = match s.snap.upsert_pod(&pod) {
                Ok(Some(_)) => s.queue.on_event(assigned_ev(if existed {
                    EventAction::Update
                } else {
                    EventAction::Add
                })),
                Ok(None) => s.queue.on_event(assigned_ev(EventAction::Delete)),
                Err(e) => {
                    tracing::warn!(pod = %key, error = %e, "ignoring pod");
                    0
                }
            };
            drop(s);
            self.notify(moved > 0);
            return;
        }
        let ours = spec
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(crate::model::DEFAULT_SCHEDULER_NAME)
            == self.name;
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let schedulable = ours
            && pod.metadata.deletion_timestamp.is_none()
            && !matches!(phase, Some("Succeeded" | "Failed"));
        if !schedulable {
            s.queue.delete(&key);
            return;
        }
        // Assumed and binding: the watch has not caught up yet.
        if s.snap.pod_id(&key).is_some() {
            return;
        }
        let gated = spec
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty());
        let priority = spec.and_then(|s| s.priority).unwrap_or(0);
        // Status-only changes (our own condition updates) must not retry.
        if let Some(old) = s.queue.item(&key) {
            if old.spec == pod.spec
                && old.metadata.labels == pod.metadata.labels
                && old.metadata.annotations == pod.metadata.annotations
            {
                s.queue.set_item(&key, Arc::new(pod));
                return;
            }
        }
        s.queue.add(&key, priority, Arc::new(pod), gated);
        drop(s);
        self.wake.notify_one();
    }

    /// Drops nodes that vanished while the watch was down.
    fn resync_nodes(&self, seen: &HashSet<String>) {
        let mut s = self.lock();
        let gone: Vec<String> = s
            .snap
            .node_ids()
            .iter()
            .map(|&id| s.snap.node(id).name().to_string())
            .filter(|n| !seen.contains(n))
            .collect();
        for n in gone {
            tracing::debug!(node = %n, "node gone after relist");
            s.snap.remove_node(&n);
        }
    }

    /// Drops pods (assigned or queued) that vanished while the watch was down.
    fn resync_pods(&self, seen: &HashSet<String>) {
        let mut s = self.lock();
        let gone: Vec<String> = s
            .snap
            .pod_keys()
            .chain(s.queue.keys())
            .filter(|k| !seen.contains(*k))
            .map(str::to_string)
            .collect();
        let mut freed = false;
        for k in gone {
            freed |= s.snap.remove_pod(&k).is_some();
            s.queue.delete(&k);
            s.snap.clear_nomination(&k);
        }
        if freed {
            let moved = s.queue.on_event(ClusterEvent::new(
                EventResource::AssignedPod,
                EventAction::Delete,
            ));
            drop(s);
            self.notify(moved > 0);
        }
    }

    fn on_namespace(&self, ns: Namespace) {
        let mut s = self.lock();
        s.snap.upsert_namespace(&ns);
        let moved = s.queue.on_event(ClusterEvent::new(
            EventResource::Namespace,
            EventAction::Update,
        ));
        drop(s);
        self.notify(moved > 0);
    }

    fn on_pdb(&self, pdb: PodDisruptionBudget, deleted: bool) {
        let mut s = self.lock();
        let key = format!(
            "{}/{}",
            pdb.metadata.namespace.as_deref().unwrap_or("default"),
            pdb.metadata.name.as_deref().unwrap_or("")
        );
        if deleted {
            s.snap.remove_pdb(&key);
        } else if let Err(e) = s.snap.upsert_pdb(&pdb) {
            tracing::warn!(pdb = %key, error = %e, "ignoring PodDisruptionBudget");
        }
    }

    async fn bind(&self, pod: &Pod, node: &str) -> Result<(), kube::Error> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(ns.to_string()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..Default::default()
            },
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        api.create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
        .map(|_| ())
    }

    /// Records a core/v1 Event about `pod` of `type_` (`Normal`, `Warning`), as the
    /// scheduler's event recorder does; `related` names a second pod (the preemptor).
    async fn record_event(
        &self,
        pod: &Pod,
        type_: &str,
        reason: &str,
        message: &str,
        related: Option<&Pod>,
    ) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let now = Timestamp::now();
        let pod_ref = |p: &Pod| ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: p.metadata.name.clone(),
            namespace: p.metadata.namespace.clone(),
            uid: p.metadata.uid.clone(),
            resource_version: p.metadata.resource_version.clone(),
            ..Default::default()
        };
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(ns.to_string()),
                ..Default::default()
            },
            involved_object: pod_ref(pod),
            related: related.map(pod_ref),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_.into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            reporting_component: Some(self.name.clone()),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some(self.name.clone()),
                host: None,
            }),
            ..Default::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), ns);
        if let Err(e) = events.create(&PostParams::default(), &event).await {
            tracing::warn!(pod = %name, %reason, error = %e, "recording an event");
        }
    }

    async fn record_failure(&self, pod: &Pod, reason: &str, message: &str) {
        self.record_event(pod, "Warning", reason, message, None)
            .await;
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let now = Timestamp::now();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastTransitionTime": Time(now),
        }]}});
        if let Err(e) = pods
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            tracing::debug!(pod = %name, error = %e, "updating PodScheduled condition");
        }
    }

    async fn set_nominated(&self, key: &str, node: Option<&str>) {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let patch = json!({"status": {"nominatedNodeName": node}});
        if let Err(e) = pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            tracing::debug!(pod = %key, error = %e, "updating nominatedNodeName");
        }
    }

    /// Preempts `key` for `preemptor` nominated to `node`, as upstream's
    /// DefaultPreemption does: the victim gets the `DisruptionTarget` condition
    /// (reason `PreemptionByScheduler`), is deleted, and gets a `Preempted` event.
    async fn preempt(&self, key: &str, preemptor: &Pod, node: &str) {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let victim = match pods.get(name).await {
            Ok(v) => v,
            Err(e) if status_code(&e) == Some(404) => return,
            Err(e) => {
                tracing::warn!(pod = %key, error = %e, "reading preemption victim");
                return;
            }
        };
        let scheduler = preemptor
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(crate::model::DEFAULT_SCHEDULER_NAME);
        let patch = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
            "message": format!("{scheduler}: preempting to accommodate a higher priority pod"),
            "lastTransitionTime": Time(Timestamp::now()),
        }]}});
        if let Err(e) = pods
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            tracing::debug!(pod = %key, error = %e, "setting the DisruptionTarget condition");
        }
        match pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => return,
            Err(e) => {
                tracing::warn!(pod = %key, error = %e, "evicting preemption victim");
                return;
            }
        }
        let uid = preemptor.metadata.uid.as_deref().unwrap_or_default();
        let message = format!("Preempted by pod {uid} on node {node}");
        self.record_event(&victim, "Normal", "Preempted", &message, Some(preemptor))
            .await;
    }

    /// Pops and schedules pods until cancelled.
    async fn schedule_forever(self: Arc<Self>) {
        loop {
            let popped = {
                let mut s = self.lock();
                s.queue.pop().ok_or_else(|| s.queue.next_backoff_expiry())
            };
            let popped = match popped {
                Ok(p) => p,
                Err(next) => {
                    let wait = next
                        .map(|t| t.saturating_duration_since(std::time::Instant::now()))
                        .unwrap_or(Duration::from_secs(1))
                        .min(Duration::from_secs(1));
                    let _ = tokio::time::timeout(wait, self.wake.notified()).await;
                    continue;
                }
            };
            let key = popped.key;
            let pod = popped.item;
            let vols = self.volumes.resolve(&pod).await;
            let outcome = {
                let mut guard = self.lock();
                let s = &mut *guard;
                let compiled = match &vols {
                    Some(v) => s.snap.compile_pod_with_volumes(&pod, v),
                    None => s.snap.compile_pod(&pod),
                };
                match compiled {
                    Ok(info) => s.sched.schedule_one(&mut s.snap, info),
                    Err(e) => {
                        tracing::warn!(pod = %key, error = %e, "cannot schedule pod");
                        s.queue.requeue_unschedulable(&key, vec![]);
                        continue;
                    }
                }
            };
            match outcome {
                Outcome::Assumed { result, .. } => {
                    let this = self.clone();
                    tokio::spawn(async move {
                        let _span =
                            tracing::debug_span!("bind", pod = %key, node = %result.node_name);
                        if let Some(v) = &vols {
                            this.volumes
                                .select_node(&pod, &v.unbound_delayed, &result.node_name)
                                .await;
                        }
                        match this.bind(&pod, &result.node_name).await {
                            Ok(()) => this.lock().queue.done(&key),
                            Err(e) => {
                                let code = status_code(&e);
                                {
                                    let mut s = this.lock();
                                    if code == Some(404) {
                                        s.snap.remove_pod(&key);
                                        s.queue.delete(&key);
                                    } else if code == Some(409) {
                                        // Bound elsewhere meanwhile: drop our assumption
                                        // and take the server's placement (below).
                                        s.snap.remove_pod(&key);
                                        s.queue.delete(&key);
                                    } else {
                                        tracing::warn!(pod = %key, error = %e, "binding failed");
                                        s.snap.remove_pod(&key);
                                        s.queue.requeue_error(&key);
                                        s.queue.on_event(ClusterEvent::new(
                                            EventResource::AssignedPod,
                                            EventAction::Delete,
                                        ));
                                    }
                                }
                                if code == Some(409) {
                                    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                                    let api: Api<Pod> = Api::namespaced(this.client.clone(), ns);
                                    let name = pod.metadata.name.as_deref().unwrap_or("");
                                    if let Ok(Some(current)) = api.get_opt(name).await {
                                        this.on_pod(current, false);
                                    }
                                }
                                this.wake.notify_one();
                            }
                        }
                    });
                }
                Outcome::Waiting { timeout, .. } => {
                    // No plugin here approves waiting pods: the wait times out
                    // and the pod is rejected, as upstream does on timeout.
                    let this = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(timeout).await;
                        {
                            let mut s = this.lock();
                            s.snap.remove_pod(&key);
                            s.queue.requeue_error(&key);
                        }
                        this.record_failure(
                            &pod,
                            "FailedScheduling",
                            "rejected due to timeout after waiting at permit",
                        )
                        .await;
                    });
                }
                Outcome::Unschedulable(fit) => {
                    let message = fit.to_string();
                    tracing::debug!(pod = %key, %message, "unschedulable");
                    self.lock()
                        .queue
                        .requeue_unschedulable(&key, fit.diagnosis.unschedulable_plugins.clone());
                    let this = self.clone();
                    tokio::spawn(async move {
                        if let Some(p) = &fit.preemption {
                            for v in &p.victims {
                                this.preempt(v, &pod, &p.node_name).await;
                            }
                            for other in &p.cleared_nominations {
                                this.set_nominated(other, None).await;
                            }
                            this.set_nominated(&key, Some(&p.node_name)).await;
                        }
                        this.record_failure(&pod, "FailedScheduling", &message)
                            .await;
                    });
                }
                Outcome::Rejected(st) => {
                    let message = st.reasons().join(", ");
                    self.lock()
                        .queue
                        .requeue_unschedulable(&key, vec![st.plugin()]);
                    let this = self.clone();
                    tokio::spawn(async move {
                        this.record_failure(&pod, "FailedScheduling", &message)
                            .await;
                    });
                }
            }
        }
    }
}

/// Runs a watch stream, handing each object to `f(obj, deleted)`; errors
/// are logged and the watcher backs off and resumes. After each (re)list,
/// `resync` gets the keys (`namespace/name` or name) of every listed object,
/// so objects deleted while the watch was down can be dropped.
async fn watch<K, F, R>(api: Api<K>, what: &'static str, f: F, resync: R)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(K, bool),
    R: Fn(&HashSet<String>),
{
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut seen = HashSet::new();
    loop {
        match stream.try_next().await {
            Ok(Some(watcher::Event::Apply(o))) => f(o, false),
            Ok(Some(watcher::Event::InitApply(o))) => {
                let m = o.meta();
                seen.insert(match &m.namespace {
                    Some(ns) => format!("{ns}/{}", m.name.as_deref().unwrap_or("")),
                    None => m.name.clone().unwrap_or_default(),
                });
                f(o, false)
            }
            Ok(Some(watcher::Event::Delete(o))) => f(o, true),
            Ok(Some(watcher::Event::Init)) => seen.clear(),
            Ok(Some(watcher::Event::InitDone)) => resync(&seen),
            Ok(None) => return,
            Err(e) => tracing::debug!(resource = what, error = %e, "watch error; retrying"),
        }
    }
}

/// The scheduler process: watches, the scheduling loop and binding. It schedules from
/// the moment it runs; to run one active replica among several, start it only while
/// holding a Lease (kcore-reconcile's `LeaderElector`) and drop it when the Lease is
/// lost. Build with [`SchedulerLoop::new`], then [`run`](Self::run).
pub struct SchedulerLoop {
    client: Client,
    fw: Framework,
    watch_pdbs: bool,
    backoff: (Duration, Duration),
}

impl std::fmt::Debug for SchedulerLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerLoop")
            .field("scheduler_name", &self.fw.scheduler_name())
            .finish()
    }
}

impl SchedulerLoop {
    /// Schedules pods whose `schedulerName` is `fw.scheduler_name()`.
    pub fn new(client: Client, fw: Framework) -> Self {
        SchedulerLoop {
            client,
            fw,
            watch_pdbs: true,
            backoff: (Duration::from_secs(1), Duration::from_secs(10)),
        }
    }

    /// Watch PodDisruptionBudgets for preemption (default on).
    pub fn watch_pdbs(mut self, yes: bool) -> Self {
        self.watch_pdbs = yes;
        self
    }

    /// Per-pod backoff bounds (default 1s → 10s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = (initial, max);
        self
    }

    /// Runs until `shutdown` resolves or every watch ends.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        tokio::pin!(shutdown);
        let queue = SchedulingQueue::new(&self.fw, Arc::new(SystemClock))
            .with_backoff(self.backoff.0, self.backoff.1);
        let name = self.fw.scheduler_name().to_string();
        let (volumes, volume_writers) = VolumeCache::new(self.client.clone());
        let lp = Arc::new(Loop {
            client: self.client.clone(),
            name,
            shared: Mutex::new(Shared {
                snap: Snapshot::new(),
                queue,
                sched: Scheduler::new(self.fw),
            }),
            wake: Notify::new(),
            volumes: volumes.clone(),
        });
        let c = &self.client;
        let (l1, r1) = (lp.clone(), lp.clone());
        let nodes = watch(
            Api::<Node>::all(c.clone()),
            "nodes",
            move |n, d| l1.on_node(n, d),
            move |seen| r1.resync_nodes(seen),
        );
        let (l2, r2) = (lp.clone(), lp.clone());
        let pods = watch(
            Api::<Pod>::all(c.clone()),
            "pods",
            move |p, d| l2.on_pod(p, d),
            move |seen| r2.resync_pods(seen),
        );
        let l3 = lp.clone();
        let nss = watch(
            Api::<Namespace>::all(c.clone()),
            "namespaces",
            move |n, d| {
                if !d {
                    l3.on_namespace(n)
                }
            },
            |_| {},
        );
        let l4 = lp.clone();
        let watch_pdbs = self.watch_pdbs;
        let pdbs = async move {
            if watch_pdbs {
                watch(
                    Api::<PodDisruptionBudget>::all(c.clone()),
                    "poddisruptionbudgets",
                    move |p, d| l4.on_pdb(p, d),
                    |_| {},
                )
                .await
            } else {
                futures::future::pending::<()>().await
            }
        };
        // claims, volumes, classes, drivers and capacities: each change retries the pods
        // VolumeBinding rejected
        let l5 = lp.clone();
        let vols = volumes.watch(volume_writers, move |ev| {
            let moved = l5.lock().queue.on_event(ev);
            l5.notify(moved > 0);
        });
        let sched_task = tokio::spawn(lp.clone().schedule_forever());
        let result = tokio::select! {
            _ = &mut shutdown => Ok(()),
            _ = async { futures::join!(nodes, pods, nss, pdbs, vols) } => Ok(()),
        };
        sched_task.abort();
        result
    }
}
