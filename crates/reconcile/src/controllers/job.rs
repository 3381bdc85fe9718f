//! The Job controller (upstream's `pkg/controller/job`): runs a Job's pods to completion.
//!
//! - **Pods.** `parallelism` pods at a time until `completions` succeed (NonIndexed), or
//!   one pod per index `0..completions` (Indexed: the index in the
//!   `batch.kubernetes.io/job-completion-index` annotation and label, `JOB_COMPLETION_INDEX`
//!   in every container's environment, hostname `<job>-<index>`). A work-queue Job (no
//!   `completions`) completes once one pod succeeded and none is left running.
//! - **Tracking.** Every pod carries the `batch.kubernetes.io/job-tracking` finalizer. A
//!   finished pod's UID is first recorded in `status.uncountedTerminatedPods`, then its
//!   finalizer is removed, then it moves into `succeeded`/`failed` (and
//!   `completedIndexes`): each write is guarded by the Job's resourceVersion, so a pod is
//!   counted exactly once even across controller restarts, and a deleted pod is not lost.
//! - **Failures.** Failed pods are replaced after an exponential backoff (10 s doubling, at
//!   most 10 minutes, as upstream); `backoffLimit` failures fail the Job
//!   (`BackoffLimitExceeded`), as does `activeDeadlineSeconds` (`DeadlineExceeded`);
//!   `backoffLimitPerIndex` fails single indexes (`failedIndexes`) and `maxFailedIndexes`
//!   the Job; `podFailurePolicy` rules (FailJob, FailIndex, Ignore, Count) on exit codes and
//!   pod conditions decide first.
//! - **Finishing.** A Job first gets `FailureTarget` or `SuccessCriteriaMet`, its remaining
//!   pods are deleted, and once none is left it gets `Failed` or `Complete` (with
//!   `completionTime`), as upstream since 1.31. `successPolicy` rules can complete an
//!   Indexed Job early.
//! - **Suspend.** A suspended Job's active pods are deleted and it gets `Suspended`;
//!   resuming resets `startTime`.
//!
//! Events as upstream: `SuccessfulCreate`, `SuccessfulDelete`, `FailedCreate`,
//! `Completed`, `Suspended`, `Resumed`, and the failure reason as a warning.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kcore_k8s::{label_selector_matches, status_code};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use crate::cache::{Change, Store};
use crate::controllers::cronjob::Clock;
use crate::controllers::replicaset::{apply_claim, claim};
use crate::error::Error;
use crate::meta::{
    claimable, controller_index, controller_of, controller_ref, pod_is_ready, ObjectKey,
    CONTROLLER_INDEX,
};
use crate::queue::WorkQueue;
use crate::runner::{Action, Expectations, Reconciler};

/// The finalizer by which the Job controller keeps a finished pod until it has counted it.
pub const JOB_TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation (and label) holding an Indexed Job pod's completion index.
pub const JOB_COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The annotation counting the failures of an index before this pod
/// (`backoffLimitPerIndex`).
pub const JOB_INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
/// The environment variable carrying the completion index into containers.
pub const JOB_COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Upstream's `DefaultJobPodFailureBackOff`.
pub const DEFAULT_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// Upstream's `MaxJobPodFailureBackOff`.
const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(600);
/// Most pods created or deleted for one Job in one sync.
const BURST: usize = 500;
/// How long a sync waits for the Job cache to show the controller's own last status
/// write before it goes ahead anyway (the watch delivers that write, or a relist a newer
/// copy, long before; this only bounds a lost event).
const OWN_WRITE_WAIT: Duration = Duration::from_secs(30);

/// Index lists as the API writes them (`1,3-5,7`).
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// Parses an index list (`1,3-5,7`), ignoring malformed parts and indexes at or above
/// `completions`, as upstream does with a stored status.
pub fn parse_indexes(s: Option<&str>, completions: i32) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in s.unwrap_or_default().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<i32>(), b.trim().parse::<i32>()) {
            for i in a.max(0)..=b.min(completions - 1) {
                set.insert(i);
            }
        }
    }
    set
}

/// What a pod failure policy says about one failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureAction {
    /// Fail the whole Job, with this message.
    FailJob(String),
    /// Fail the pod's index.
    FailIndex,
    /// Do not count the failure.
    Ignore,
    /// Count it as usual (a `Count` rule, or no rule matched).
    Count,
}

/// Upstream's `matchPodFailurePolicy`: the first rule that matches a failed pod decides.
/// Exit codes are those of terminated containers (init containers too) that exited
/// non-zero; pod conditions match on type and status.
pub fn match_pod_failure_policy(job: &Job, pod: &Pod) -> FailureAction {
    let Some(pfp) = job
        .spec
        .as_ref()
        .and_then(|s| s.pod_failure_policy.as_ref())
    else {
        return FailureAction::Count;
    };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let status = pod.status.as_ref();
    let containers = status
        .into_iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .collect::<Vec<_>>();
    for (i, rule) in pfp.rules.iter().enumerate() {
        let mut matched: Option<String> = None;
        if let Some(req) = &rule.on_exit_codes {
            for c in &containers {
                if req.container_name.as_ref().is_some_and(|n| *n != c.name) {
                    continue;
                }
                let Some(code) = c
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                else {
                    continue;
                };
                if code == 0 {
                    continue;
                }
                let listed = req.values.contains(&code);
                if (req.operator == "In") == listed {
                    matched = Some(format!(
                        "Container {} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}",
                        c.name, rule.action
                    ));
                    break;
                }
            }
        }
        for pat in rule.on_pod_conditions.iter().flatten() {
            let has = status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| {
                    c.type_ == pat.type_ && c.status == pat.status.as_deref().unwrap_or("True")
                });
            if has {
                matched = Some(format!(
                    "Pod {ns}/{name} has condition {} matching {} rule at index {i}",
                    pat.type_, rule.action
                ));
                break;
            }
        }
        if let Some(msg) = matched {
            return match rule.action.as_str() {
                "FailJob" => FailureAction::FailJob(msg),
                "FailIndex" => FailureAction::FailIndex,
                "Ignore" => FailureAction::Ignore,
                _ => FailureAction::Count,
            };
        }
    }
    FailureAction::Count
}

/// The backoff before the next pod after `failures` consecutive failures (10 s doubling
/// per failure, at most 10 minutes, scaled by `base`).
pub fn pod_failure_backoff(base: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (failures - 1).min(20);
    base.saturating_mul(factor)
        .min(MAX_POD_FAILURE_BACKOFF.max(base))
}

/// Upstream's `pastBackoffLimitOnFailure`: with `restartPolicy: OnFailure` failures show
/// as container restarts of pending and running pods, and their sum counts against
/// `backoffLimit` (any restart at all when the limit is 0).
pub fn past_backoff_limit_on_failure(job: &Job, pods: &[Arc<Pod>]) -> bool {
    let Some(spec) = job.spec.as_ref() else {
        return false;
    };
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    if !on_failure {
        return false;
    }
    let restarts: i64 = pods
        .iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| i64::from(c.restart_count))
        .sum();
    match i64::from(spec.backoff_limit.unwrap_or(6)) {
        0 => restarts > 0,
        limit => restarts >= limit,
    }
}

/// How many pods a NonIndexed Job wants running (upstream's `wantActive`).
pub fn want_active(parallelism: i32, completions: Option<i32>, succeeded: i32, active: i32) -> i32 {
    match completions {
        Some(c) => (c - succeeded).clamp(0, parallelism.max(0)),
        None if succeeded > 0 => active.min(parallelism.max(0)),
        None => parallelism.max(0),
    }
}

/// The index of `pod`, from its annotation (or label).
pub fn pod_index(pod: &Pod) -> Option<i32> {
    let m = &pod.metadata;
    m.annotations
        .as_ref()
        .and_then(|a| a.get(JOB_COMPLETION_INDEX))
        .or_else(|| m.labels.as_ref().and_then(|l| l.get(JOB_COMPLETION_INDEX)))
        .and_then(|s| s.parse().ok())
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn has_finalizer(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == JOB_TRACKING_FINALIZER)
}

fn only_replace_failed(job: &Job) -> bool {
    job.spec
        .as_ref()
        .and_then(|s| s.pod_replacement_policy.as_deref())
        == Some("Failed")
}

/// Upstream's `isPodFailed`: Failed, or (unless only failed pods are replaced) deleted
/// before it succeeded.
fn pod_failed(job: &Job, p: &Pod) -> bool {
    if phase(p) == "Failed" {
        return true;
    }
    !only_replace_failed(job) && p.metadata.deletion_timestamp.is_some() && phase(p) != "Succeeded"
}

fn pod_finished(job: &Job, p: &Pod) -> bool {
    phase(p) == "Succeeded" || pod_failed(job, p)
}

fn condition_true(job: &Job, t: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == t && c.status == "True")
}

/// Whether the Job has finished (a `Complete` or `Failed` condition).
pub fn job_finished(job: &Job) -> bool {
    condition_true(job, "Complete") || condition_true(job, "Failed")
}

fn set_condition(
    conds: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status == status && c.reason.as_deref() == Some(reason) {
            return false;
        }
        if c.status != status {
            c.last_transition_time = Some(Time(now));
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(Time(now));
        return true;
    }
    conds.push(JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
    true
}

/// Records a core/v1 Event about `obj` (best effort, as client-go's recorder).
pub(crate) async fn record_event(
    client: &Client,
    component: &str,
    involved: k8s_openapi::api::core::v1::ObjectReference,
    type_: &str,
    reason: &str,
    message: &str,
) {
    post_event(
        client,
        event_for(component, involved, type_, reason, message),
    )
    .await;
}

/// The core/v1 Event `component` reports about `involved`, stamped now.
fn event_for(
    component: &str,
    involved: k8s_openapi::api::core::v1::ObjectReference,
    type_: &str,
    reason: &str,
    message: &str,
) -> k8s_openapi::api::core::v1::Event {
    use k8s_openapi::api::core::v1::{Event, EventSource};
    let ns = involved
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let now = Timestamp::now();
    Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                involved.name.as_deref().unwrap_or("object"),
                now.as_nanosecond()
            )),
            namespace: Some(ns),
            ..ObjectMeta::default()
        },
        involved_object: involved,
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        reporting_component: Some(component.into()),
        ..Event::default()
    }
}

/// Creates `ev` (best effort: a failure is logged).
async fn post_event(client: &Client, ev: k8s_openapi::api::core::v1::Event) {
    let ns = ev.metadata.namespace.clone().unwrap_or_default();
    if let Err(e) = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &ev)
        .await
    {
        tracing::debug!(reason = ?ev.reason, error = %e, "recording an event failed");
    }
}

/// Events queued for the API server before new ones are dropped (client-go's
/// `maxQueuedEvents`).
const EVENT_QUEUE: usize = 1000;

/// Events being created at once by an [`EventRecorder`].
const EVENT_POSTS: usize = 16;

/// Records Events without making the caller wait for the API server, as client-go's
/// recorder does (a bounded queue drained by a broadcaster; when the queue is full the
/// event is dropped and logged): a Job sync's sequential round trips are then only its
/// pod and status writes. Each event is stamped when it is recorded.
struct EventRecorder {
    client: Client,
    component: &'static str,
    tx: std::sync::OnceLock<tokio::sync::mpsc::Sender<k8s_openapi::api::core::v1::Event>>,
}

impl EventRecorder {
    fn new(client: Client, component: &'static str) -> Self {
        Self {
            client,
            component,
            tx: std::sync::OnceLock::new(),
        }
    }

    /// Queues the event; the first call (inside the controller's runtime) starts the task
    /// that creates them, at most [`EVENT_POSTS`] at a time.
    fn record(
        &self,
        involved: k8s_openapi::api::core::v1::ObjectReference,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        let tx =
            self.tx.get_or_init(|| {
                let (tx, rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
                let client = self.client.clone();
                let queued = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|ev| (ev, rx))
                });
                tokio::spawn(queued.for_each_concurrent(EVENT_POSTS, move |ev| {
                    let client = client.clone();
                    async move { post_event(&client, ev).await }
                }));
                tx
            });
        let ev = event_for(self.component, involved, type_, reason, message);
        if let Err(e) = tx.try_send(ev) {
            tracing::warn!(reason, error = %e, "event queue full or closed; event dropped");
        }
    }
}

/// An ObjectReference to a namespaced object of kind `K`.
pub(crate) fn object_ref<K: kube::Resource<DynamicType = ()>>(
    obj: &K,
) -> k8s_openapi::api::core::v1::ObjectReference {
    let m = obj.meta();
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

/// The pod of `job` for completion index `index` (Indexed Jobs) or any pod (`None`).
pub fn pod_for_job(job: &Job, index: Option<i32>, index_failures: Option<i32>) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let template: PodTemplateSpec = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tm = template.metadata.clone().unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    let mut finalizers = tm.finalizers.unwrap_or_default();
    finalizers.push(JOB_TRACKING_FINALIZER.into());
    let mut spec = template.spec.unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            annotations.insert(JOB_COMPLETION_INDEX.into(), i.to_string());
            labels.insert(JOB_COMPLETION_INDEX.into(), i.to_string());
            if let Some(f) = index_failures {
                annotations.insert(JOB_INDEX_FAILURE_COUNT.into(), f.to_string());
            }
            if spec.hostname.as_deref().is_none_or(str::is_empty) {
                spec.hostname = Some(format!("{name}-{i}"));
            }
            let env = EnvVar {
                name: JOB_COMPLETION_INDEX_ENV.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".into()),
                        field_path: format!("metadata.annotations['{JOB_COMPLETION_INDEX}']"),
                    }),
                    ..EnvVarSource::default()
                }),
            };
            for c in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                let list = c.env.get_or_insert_with(Vec::new);
                if !list.iter().any(|e| e.name == JOB_COMPLETION_INDEX_ENV) {
                    list.push(env.clone());
                }
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: Some(ns),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![controller_ref(job)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The Job controller.
pub(crate) struct JobController {
    client: Client,
    jobs: Store<Job>,
    pods: Store<Pod>,
    expectations: Expectations,
    clock: Clock,
    backoff_base: Duration,
    /// Consecutive failures since the last success, and when the last one was counted.
    backoffs: Mutex<HashMap<ObjectKey, (u32, Timestamp)>>,
    /// Pods whose tracking finalizer this controller removed and whose cached copy still
    /// has it (upstream's `finalizerExpectations`).
    finalizers: FinalizerExpectations,
    /// The controller's last status write per Job, until the Job cache shows it.
    own_writes: OwnWrites,
    /// Its Events, created in the background.
    recorder: EventRecorder,
}

/// Per Job, the UIDs of pods whose `batch.kubernetes.io/job-tracking` finalizer was
/// removed by a successful patch that the pod cache has not shown yet (upstream's
/// `uidTrackingExpectations` for finalizers). A sync reading the cache meanwhile would
/// see such a pod finished and still holding the finalizer, and count it a second time
/// once the Job's status (which already counts it) is current; so it skips them.
#[derive(Debug, Clone, Default)]
struct FinalizerExpectations {
    inner: Arc<Mutex<HashMap<ObjectKey, HashSet<String>>>>,
}

impl FinalizerExpectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, HashSet<String>>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The UIDs whose removal is in flight for `key`. Read this before the pods: then a
    /// pod missing from it has its removal already shown in the cache the sync reads.
    fn expected(&self, key: &ObjectKey) -> HashSet<String> {
        self.lock().get(key).cloned().unwrap_or_default()
    }

    fn expect(&self, key: &ObjectKey, uid: &str) {
        self.lock()
            .entry(key.clone())
            .or_default()
            .insert(uid.to_owned());
    }

    /// The cache shows the pod without the finalizer (or gone), or the removal failed.
    fn observed(&self, key: &ObjectKey, uid: &str) {
        let mut m = self.lock();
        if let Some(set) = m.get_mut(key) {
            set.remove(uid);
            if set.is_empty() {
                m.remove(key);
            }
        }
    }

    fn delete(&self, key: &ObjectKey) {
        self.lock().remove(key);
    }
}

/// The controller's last successful status write of each Job (its UID and
/// resourceVersion) until the Job cache has caught up with it. Each pod event requeues
/// the Job, and a sync that read the Job from before the controller's own last write
/// would compute its status from stale counts and end in a conflict, retried with
/// backoff; so such a sync waits for the write's watch event instead (that event
/// requeues the Job).
#[derive(Debug, Clone, Default)]
struct OwnWrites {
    inner: Arc<Mutex<HashMap<ObjectKey, OwnWrite>>>,
}

/// A Job's UID, the resourceVersion its status write returned, and when.
type OwnWrite = (String, String, std::time::Instant);

impl OwnWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, OwnWrite>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wrote(&self, key: &ObjectKey, job: &Job) {
        let m = &job.metadata;
        if let (Some(uid), Some(rv)) = (&m.uid, &m.resource_version) {
            self.lock().insert(
                key.clone(),
                (uid.clone(), rv.clone(), std::time::Instant::now()),
            );
        }
    }

    /// True when `cached` is older than the controller's own last write of it.
    fn cache_behind(&self, key: &ObjectKey, cached: &Job) -> bool {
        let mut m = self.lock();
        let Some((uid, rv, at)) = m.get(key) else {
            return false;
        };
        let behind = cached.metadata.uid.as_ref() == Some(uid)
            && at.elapsed() < OWN_WRITE_WAIT
            && cached
                .metadata
                .resource_version
                .as_deref()
                .is_some_and(|c| version_older(c, rv));
        if !behind {
            m.remove(key);
        }
        behind
    }

    fn delete(&self, key: &ObjectKey) {
        self.lock().remove(key);
    }
}

/// Whether resourceVersion `a` is older than `b`. Both kcore's stores and etcd number
/// their revisions, so they compare as integers; anything else only equals or not.
fn version_older(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a < b,
        _ => a != b,
    }
}

fn owner_key(pod: &Pod) -> Option<ObjectKey> {
    let r = controller_of(&pod.metadata)?;
    (r.kind == "Job")
        .then(|| ObjectKey::namespaced(pod.metadata.namespace.clone().unwrap_or_default(), &r.name))
}

impl JobController {
    pub(crate) fn new(
        client: Client,
        jobs: Store<Job>,
        pods: Store<Pod>,
        clock: Clock,
        backoff_base: Duration,
    ) -> Self {
        pods.add_index(CONTROLLER_INDEX, controller_index());
        Self {
            recorder: EventRecorder::new(client.clone(), "job-controller"),
            client,
            jobs,
            pods,
            expectations: Expectations::default(),
            clock,
            backoff_base,
            backoffs: Mutex::new(HashMap::new()),
            finalizers: FinalizerExpectations::default(),
            own_writes: OwnWrites::default(),
        }
    }

    /// Handler for Job changes.
    pub(crate) fn on_job(
        &self,
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<Job>) + Send + Sync {
        let exp = self.expectations.clone();
        let finalizers = self.finalizers.clone();
        let own_writes = self.own_writes.clone();
        move |c| {
            let key = ObjectKey::of(c.object().as_ref());
            if let Change::Deleted(_) = c {
                exp.delete(&key);
                finalizers.delete(&key);
                own_writes.delete(&key);
            }
            queue.add(key);
        }
    }

    /// Handler for Pod changes: requeues the owning Job.
    pub(crate) fn on_pod(
        &self,
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<Pod>) + Send + Sync {
        let exp = self.expectations.clone();
        let finalizers = self.finalizers.clone();
        let jobs = self.jobs.clone();
        move |c| {
            let p = c.object();
            let uid = p.metadata.uid.as_deref().unwrap_or("");
            if let Some(old) = c.old() {
                // A pod let go by its Job (its controller reference removed) is no longer
                // found under it: its finalizer removal counts as observed there.
                if let Some(k) = owner_key(old).filter(|k| owner_key(p).as_ref() != Some(k)) {
                    finalizers.observed(&k, uid);
                    queue.add(k);
                }
            }
            match (c, owner_key(p)) {
                (Change::Added(_), Some(k)) => {
                    exp.creation_observed(&k);
                    queue.add(k);
                }
                (Change::Updated { old, new }, Some(k)) => {
                    if old.metadata.deletion_timestamp.is_none()
                        && new.metadata.deletion_timestamp.is_some()
                    {
                        exp.deletion_observed_uid(&k, uid);
                    }
                    if !has_finalizer(new) {
                        finalizers.observed(&k, uid);
                    }
                    queue.add(k);
                }
                (Change::Deleted(_), Some(k)) => {
                    exp.deletion_observed_uid(&k, uid);
                    finalizers.observed(&k, uid);
                    queue.add(k);
                }
                (_, None) => {
                    let ns = p.metadata.namespace.as_deref().unwrap_or("");
                    for j in jobs.list_namespace(ns) {
                        let sel = j.spec.as_ref().and_then(|s| s.selector.as_ref());
                        if sel
                            .is_some_and(|s| label_selector_matches(s, p.metadata.labels.as_ref()))
                        {
                            queue.add(ObjectKey::of(j.as_ref()));
                        }
                    }
                }
            }
        }
    }

    fn pods_api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Records an event about `job` without waiting for it to be created.
    fn event(&self, job: &Job, type_: &str, reason: &str, message: &str) {
        self.recorder
            .record(object_ref(job), type_, reason, message);
    }

    /// Removes the tracking finalizer of each pod of the Job `key` (a strategic merge
    /// patch, as upstream). Each removal is expected until the pod cache shows it.
    async fn release(&self, key: &ObjectKey, pods: &[&Arc<Pod>]) -> Result<(), Error> {
        let patch =
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [JOB_TRACKING_FINALIZER]}});
        let results = futures::future::join_all(pods.iter().map(|p| {
            let api = self.pods_api(p.metadata.namespace.as_deref().unwrap_or(""));
            let name = p.metadata.name.clone().unwrap_or_default();
            let uid = p.metadata.uid.clone().unwrap_or_default();
            self.finalizers.expect(key, &uid);
            let patch = patch.clone();
            async move {
                let r = api
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await;
                (r, name, uid)
            }
        }))
        .await;
        let mut failed = None;
        for (r, name, uid) in results {
            match r {
                Ok(_) => {}
                Err(e) => {
                    // Gone, or still holding the finalizer: nothing to wait for.
                    self.finalizers.observed(key, &uid);
                    if status_code(&e) != Some(404) {
                        failed.get_or_insert(Error::api(
                            "remove the job-tracking finalizer of",
                            format!("pod {name}"),
                        )(e));
                    }
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    async fn write_status(&self, job: &Job, status: &JobStatus) -> Result<Arc<Job>, Error> {
        let key = ObjectKey::of(job);
        let api: Api<Job> = Api::namespaced(self.client.clone(), key.ns());
        let mut body = job.clone();
        body.status = Some(status.clone());
        let out = api
            .replace_status(&key.name, &PostParams::default(), &body)
            .await
            .map_err(Error::api("update status of", format!("job {key}")))?;
        self.own_writes.wrote(&key, &out);
        Ok(Arc::new(out))
    }

    async fn delete_pods(
        &self,
        key: &ObjectKey,
        job: &Job,
        victims: &[Arc<Pod>],
    ) -> Result<(), Error> {
        if victims.is_empty() {
            return Ok(());
        }
        self.expectations.expect_deletions(
            key,
            victims
                .iter()
                .map(|p| p.metadata.uid.clone().unwrap_or_default()),
        );
        let api = self.pods_api(key.ns());
        for p in victims {
            let name = p.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {
                    self.event(
                        job,
                        "Normal",
                        "SuccessfulDelete",
                        &format!("Deleted pod: {name}"),
                    );
                }
                Err(e) => {
                    self.expectations
                        .deletion_observed_uid(key, p.metadata.uid.as_deref().unwrap_or(""));
                    if status_code(&e) != Some(404) {
                        return Err(Error::api("delete", format!("pod {}/{name}", key.ns()))(e));
                    }
                }
            }
        }
        Ok(())
    }

    async fn create_pods(&self, key: &ObjectKey, job: &Job, pods: Vec<Pod>) -> Result<(), Error> {
        if pods.is_empty() {
            return Ok(());
        }
        self.expectations.expect(key, pods.len(), 0);
        let api = self.pods_api(key.ns());
        let pp = PostParams::default();
        // Slow start: batches of 1, 2, 4, ... so a failing create costs one call.
        let mut rest = pods.into_iter();
        let mut batch = 1usize;
        loop {
            let chunk: Vec<Pod> = rest.by_ref().take(batch).collect();
            if chunk.is_empty() {
                return Ok(());
            }
            let results = futures::future::join_all(chunk.iter().map(|p| api.create(&pp, p))).await;
            let mut failed = None;
            for r in results {
                match r {
                    Ok(p) => {
                        let name = p.metadata.name.unwrap_or_default();
                        self.event(
                            job,
                            "Normal",
                            "SuccessfulCreate",
                            &format!("Created pod: {name}"),
                        );
                    }
                    Err(e) => {
                        self.expectations.creation_observed(key);
                        self.event(
                            job,
                            "Warning",
                            "FailedCreate",
                            &format!("Error creating: {e}"),
                        );
                        failed.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = failed {
                for _ in rest {
                    self.expectations.creation_observed(key);
                }
                return Err(Error::api("create", format!("pod for job {key}"))(e));
            }
            batch *= 2;
        }
    }

    fn note_failures(&self, key: &ObjectKey, failed: u32, succeeded: bool, now: Timestamp) {
        let mut b = self
            .backoffs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if succeeded && failed == 0 {
            b.remove(key);
        } else if failed > 0 {
            let e = b.entry(key.clone()).or_insert((0, now));
            e.0 += failed;
            e.1 = now;
        }
    }

    /// How long pod creation must still wait after the last failures.
    fn backoff_remaining(&self, key: &ObjectKey, now: Timestamp) -> Option<Duration> {
        let b = self
            .backoffs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (n, at) = *b.get(key)?;
        let wait = pod_failure_backoff(self.backoff_base, n);
        let until = at.checked_add(SignedDuration::try_from(wait).ok()?).ok()?;
        (until > now).then(|| Duration::try_from(until.duration_since(now)).unwrap_or_default())
    }
}

/// What one sync found about a Job's pods.
struct Counted {
    completed: BTreeSet<i32>,
    failed_indexes: BTreeSet<i32>,
    fail_job: Option<String>,
}

impl Reconciler for JobController {
    fn name(&self) -> &'static str {
        "job"
    }

    #[allow(clippy::too_many_lines)]
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(mut job) = self.jobs.get(key) else {
            self.expectations.delete(key);
            self.own_writes.delete(key);
            // The Job is gone (deleted in the background, or orphaning): nothing counts
            // its pods any more, so none may keep waiting for it.
            let orphans: Vec<Arc<Pod>> = self
                .pods
                .list_namespace(key.ns())
                .into_iter()
                .filter(|p| has_finalizer(p) && owner_key(p).as_ref() == Some(key))
                .collect();
            self.release(key, &orphans.iter().collect::<Vec<_>>())
                .await?;
            return Ok(Action::Done);
        };
        if self.own_writes.cache_behind(key, &job) {
            // The watch event of the controller's own last write requeues the Job; the
            // later requeue only bounds a lost event.
            return Ok(Action::RequeueAfter(OWN_WRITE_WAIT));
        }
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let Some(spec) = job.spec.clone() else {
            return Ok(Action::Done);
        };
        // Before the pods: a removal missing here is already in the pods read next; and
        // likewise a creation observed after this (upstream's `satisfiedExpectations`
        // before `getPodsForJob`), so a satisfied expectation never meets a cache that
        // lacks a pod this controller created, which it would create a second time.
        let removing = self.finalizers.expected(key);
        let manage = self.expectations.satisfied(key);
        // The pods it may own: its own and the namespace's orphans (upstream's
        // `getPodsForJob` over the controller-UID index), not every pod of the namespace.
        let candidates = claimable(&self.pods, key.ns(), &uid);
        let deleting = job.metadata.deletion_timestamp.is_some();
        let selector = spec.selector.clone().unwrap_or_default();
        let claimed = claim(&uid, deleting || job_finished(&job), &selector, &candidates);
        let pods = apply_claim(&self.client, job.as_ref(), &claimed).await?;
        // A finished pod whose finalizer this controller already removed was counted.
        let holds = |p: &Arc<Pod>| {
            has_finalizer(p) && !removing.contains(p.metadata.uid.as_deref().unwrap_or(""))
        };
        if deleting || job_finished(&job) {
            // Nothing more to count: let every pod go.
            let held: Vec<&Arc<Pod>> = pods.iter().filter(|p| holds(p)).collect();
            self.release(key, &held).await?;
            return Ok(Action::Done);
        }
        let now = self.clock.now();
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completions = spec.completions;
        let parallelism = spec.parallelism.unwrap_or(1);
        let n_idx = completions.unwrap_or(0);
        let mut status = job.status.clone().unwrap_or_default();
        let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut unc_s: Vec<String> = uncounted.succeeded.clone().unwrap_or_default();
        let mut unc_f: Vec<String> = uncounted.failed.clone().unwrap_or_default();
        let mut counted = Counted {
            completed: parse_indexes(status.completed_indexes.as_deref(), n_idx),
            failed_indexes: parse_indexes(status.failed_indexes.as_deref(), n_idx),
            fail_job: None,
        };

        // 1. Finished pods still holding the finalizer: record them as uncounted.
        let known: HashSet<String> = unc_s.iter().chain(unc_f.iter()).cloned().collect();
        let mut ignored: Vec<&Arc<Pod>> = Vec::new();
        let mut newly = 0usize;
        for p in pods.iter().filter(|p| holds(p) && pod_finished(&job, p)) {
            let puid = p.metadata.uid.clone().unwrap_or_default();
            if known.contains(&puid) {
                continue;
            }
            if phase(p) == "Succeeded" {
                if indexed && pod_index(p).is_none_or(|i| i < 0 || i >= n_idx) {
                    ignored.push(p);
                    continue;
                }
                unc_s.push(puid);
                newly += 1;
                continue;
            }
            match match_pod_failure_policy(&job, p) {
                FailureAction::Ignore => {
                    ignored.push(p);
                    continue;
                }
                FailureAction::FailJob(msg) => {
                    counted.fail_job.get_or_insert(msg);
                }
                FailureAction::FailIndex => {
                    if let Some(i) = pod_index(p) {
                        counted.failed_indexes.insert(i);
                    }
                }
                FailureAction::Count => {
                    if let (Some(limit), Some(i)) = (spec.backoff_limit_per_index, pod_index(p)) {
                        let before: i32 = p
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(JOB_INDEX_FAILURE_COUNT))
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0);
                        if before + 1 > limit {
                            counted.failed_indexes.insert(i);
                        }
                    }
                }
            }
            unc_f.push(puid);
            newly += 1;
        }
        let mut conds = status.conditions.clone().unwrap_or_default();
        if let Some(msg) = &counted.fail_job {
            if !condition_true(&job, "FailureTarget") && !condition_true(&job, "SuccessCriteriaMet")
            {
                set_condition(
                    &mut conds,
                    "FailureTarget",
                    "True",
                    "PodFailurePolicy",
                    msg,
                    now,
                );
            }
        }
        if newly > 0 {
            uncounted.succeeded = Some(unc_s.clone());
            uncounted.failed = Some(unc_f.clone());
            status.uncounted_terminated_pods = Some(uncounted.clone());
            status.failed_indexes = (!counted.failed_indexes.is_empty()
                || status.failed_indexes.is_some())
            .then(|| format_indexes(&counted.failed_indexes));
            status.conditions = Some(conds.clone());
            job = self.write_status(&job, &status).await?;
        }

        // 2. Let the uncounted pods (and ignored failures) go, then count them.
        let by_uid: HashMap<&str, &Arc<Pod>> = pods
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref().map(|u| (u, p)))
            .collect();
        let mut to_release: Vec<&Arc<Pod>> = ignored;
        for u in unc_s.iter().chain(unc_f.iter()) {
            if let Some(p) = by_uid.get(u.as_str()) {
                if holds(p) {
                    to_release.push(p);
                }
            }
        }
        self.release(key, &to_release).await?;
        let (mut new_s, mut new_f) = (0i32, 0i32);
        for u in &unc_s {
            match by_uid.get(u.as_str()).and_then(|p| pod_index(p)) {
                Some(i) if indexed => {
                    counted.completed.insert(i);
                }
                _ if indexed => {}
                _ => new_s += 1,
            }
        }
        new_f += i32::try_from(unc_f.len()).unwrap_or(i32::MAX);
        if indexed {
            status.succeeded = Some(i32::try_from(counted.completed.len()).unwrap_or(i32::MAX));
            status.completed_indexes = Some(format_indexes(&counted.completed));
        } else {
            status.succeeded = Some(status.succeeded.unwrap_or(0) + new_s);
        }
        status.failed = Some(status.failed.unwrap_or(0) + new_f);
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
        self.note_failures(
            key,
            u32::try_from(new_f).unwrap_or(0),
            !unc_s.is_empty(),
            now,
        );
        let released: HashSet<&str> = to_release
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();

        // 3. Where the pods stand.
        let live: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| {
                !pod_finished(&job, p)
                    && !released.contains(p.metadata.uid.as_deref().unwrap_or(""))
            })
            .cloned()
            .collect();
        let not_going = |p: &Arc<Pod>| {
            !self
                .expectations
                .pending_deletion(key, p.metadata.uid.as_deref().unwrap_or(""))
        };
        let mut active: Vec<Arc<Pod>> = live
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && not_going(p))
            .cloned()
            .collect();
        let terminating = pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_some()
                    && !matches!(phase(p), "Succeeded" | "Failed")
            })
            .count();
        let succeeded = status.succeeded.unwrap_or(0);
        let failed = status.failed.unwrap_or(0);

        // 4. Suspension.
        let suspended = spec.suspend == Some(true);
        let mut events: Vec<(&str, String, String)> = Vec::new();
        if suspended {
            if set_condition(
                &mut conds,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                now,
            ) {
                events.push(("Normal", "Suspended".into(), "Job suspended".into()));
            }
            // A suspended Job has no start time (the API allows removing it only while
            // suspended); resuming sets a new one, which restarts activeDeadlineSeconds.
            status.start_time = None;
        } else {
            if conds
                .iter()
                .any(|c| c.type_ == "Suspended" && c.status == "True")
            {
                set_condition(
                    &mut conds,
                    "Suspended",
                    "False",
                    "JobResumed",
                    "Job resumed",
                    now,
                );
                events.push(("Normal", "Resumed".into(), "Job resumed".into()));
                status.start_time = Some(Time(now));
            }
            if status.start_time.is_none() {
                status.start_time = Some(Time(now));
            }
        }

        // 5. Success and failure criteria.
        let has = |conds: &[JobCondition], t: &str| {
            conds.iter().any(|c| c.type_ == t && c.status == "True")
        };
        let mut requeue: Option<Duration> = None;
        if !has(&conds, "FailureTarget") && !has(&conds, "SuccessCriteriaMet") {
            let mut failure: Option<(&str, String)> = None;
            let backoff_limit = spec.backoff_limit.unwrap_or(6);
            if spec.backoff_limit_per_index.is_none()
                && (failed > backoff_limit || past_backoff_limit_on_failure(&job, &active))
            {
                failure = Some((
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit".into(),
                ));
            }
            if let Some(max) = spec.max_failed_indexes {
                if i32::try_from(counted.failed_indexes.len()).unwrap_or(i32::MAX) > max {
                    failure = Some((
                        "MaxFailedIndexesExceeded",
                        "Job has exceeded the specified maximal number of failed indexes".into(),
                    ));
                }
            }
            if let (Some(ads), Some(start), false) =
                (spec.active_deadline_seconds, &status.start_time, suspended)
            {
                let deadline = start
                    .0
                    .checked_add(SignedDuration::from_secs(ads))
                    .unwrap_or(start.0);
                if now >= deadline {
                    failure = Some((
                        "DeadlineExceeded",
                        "Job was active longer than specified deadline".into(),
                    ));
                } else {
                    requeue = Duration::try_from(deadline.duration_since(now)).ok();
                }
            }
            let mut success: Option<(&str, String)> = None;
            if indexed {
                let n = usize::try_from(n_idx).unwrap_or(0);
                if let Some(sp) = &spec.success_policy {
                    for (i, r) in sp.rules.iter().enumerate() {
                        let set = r
                            .succeeded_indexes
                            .as_deref()
                            .map(|s| parse_indexes(Some(s), n_idx));
                        let hit = match &set {
                            Some(set) => set.intersection(&counted.completed).count(),
                            None => counted.completed.len(),
                        };
                        let ok = match (r.succeeded_count, &set) {
                            (Some(c), _) => hit >= usize::try_from(c).unwrap_or(usize::MAX),
                            (None, Some(set)) => hit == set.len(),
                            (None, None) => false,
                        };
                        if ok {
                            success =
                                Some(("SuccessPolicy", format!("Matched rules at index {i}")));
                            break;
                        }
                    }
                }
                if success.is_none() && counted.completed.len() >= n {
                    success = Some((
                        "CompletionsReached",
                        "Reached expected number of succeeded pods".into(),
                    ));
                }
                if success.is_none()
                    && !counted.failed_indexes.is_empty()
                    && counted.completed.len() + counted.failed_indexes.len() >= n
                {
                    failure.get_or_insert(("FailedIndexes", "Job has failed indexes".into()));
                }
            } else {
                let done = match completions {
                    Some(c) => succeeded >= c,
                    None => succeeded > 0 && active.is_empty(),
                };
                if done {
                    success = Some((
                        "CompletionsReached",
                        "Reached expected number of succeeded pods".into(),
                    ));
                }
            }
            if let Some((reason, msg)) = failure {
                set_condition(&mut conds, "FailureTarget", "True", reason, &msg, now);
            } else if let Some((reason, msg)) = success {
                set_condition(&mut conds, "SuccessCriteriaMet", "True", reason, &msg, now);
            }
        }
        let finishing = has(&conds, "FailureTarget") || has(&conds, "SuccessCriteriaMet");

        // 6. Pods: none while finishing or suspended; otherwise as the spec wants.
        let mut manage_err = None;
        if finishing || suspended {
            if manage {
                let victims = std::mem::take(&mut active);
                if let Err(e) = self.delete_pods(key, &job, &victims).await {
                    manage_err = Some(e);
                }
            }
        } else if manage {
            let mut create: Vec<Pod> = Vec::new();
            let mut victims: Vec<Arc<Pod>> = Vec::new();
            // Under `podReplacementPolicy: Failed`, terminating pods hold their place.
            let holding = if only_replace_failed(&job) {
                terminating
            } else {
                0
            };
            if indexed {
                let mut seen: HashSet<i32> = HashSet::new();
                for p in &active {
                    match pod_index(p) {
                        Some(i)
                            if i < n_idx
                                && !counted.completed.contains(&i)
                                && !counted.failed_indexes.contains(&i)
                                && seen.insert(i) => {}
                        _ => victims.push(Arc::clone(p)),
                    }
                }
                let room = usize::try_from(parallelism)
                    .unwrap_or(0)
                    .saturating_sub(seen.len() + holding);
                let failures: HashMap<i32, i32> = pods
                    .iter()
                    .filter(|p| pod_failed(&job, p))
                    .filter_map(|p| {
                        let i = pod_index(p)?;
                        let before: i32 = p
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(JOB_INDEX_FAILURE_COUNT))
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0);
                        Some((i, before + 1))
                    })
                    .fold(HashMap::new(), |mut m, (i, n)| {
                        let e = m.entry(i).or_insert(0);
                        *e = (*e).max(n);
                        m
                    });
                let terminating_idx: HashSet<i32> = if only_replace_failed(&job) {
                    pods.iter()
                        .filter(|p| {
                            p.metadata.deletion_timestamp.is_some() && !pod_finished(&job, p)
                        })
                        .filter_map(|p| pod_index(p))
                        .collect()
                } else {
                    HashSet::new()
                };
                // A succeeded pod's index is done even before the Job's status (maybe
                // stale in the cache) lists it: never start a second pod for it.
                let succeeded_idx: HashSet<i32> = pods
                    .iter()
                    .filter(|p| phase(p) == "Succeeded")
                    .filter_map(|p| pod_index(p))
                    .collect();
                for i in (0..n_idx)
                    .filter(|i| {
                        !seen.contains(i)
                            && !succeeded_idx.contains(i)
                            && !counted.completed.contains(i)
                            && !counted.failed_indexes.contains(i)
                            && !terminating_idx.contains(i)
                    })
                    .take(room.min(BURST))
                {
                    let f = spec
                        .backoff_limit_per_index
                        .map(|_| failures.get(&i).copied().unwrap_or(0));
                    create.push(pod_for_job(&job, Some(i), f));
                }
            } else {
                let n_active = i32::try_from(active.len() + holding).unwrap_or(i32::MAX);
                let want = want_active(parallelism, completions, succeeded, n_active);
                if want > n_active {
                    let n = usize::try_from(want - n_active).unwrap_or(0).min(BURST);
                    create = (0..n).map(|_| pod_for_job(&job, None, None)).collect();
                } else if want < n_active {
                    let n = usize::try_from(n_active - want)
                        .unwrap_or(0)
                        .min(active.len());
                    let mut by_age = active.clone();
                    by_age.sort_by_key(|p| {
                        std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0))
                    });
                    victims = by_age.into_iter().take(n).collect();
                }
            }
            if !create.is_empty() {
                if let Some(wait) = self.backoff_remaining(key, now) {
                    create.clear();
                    requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
                }
            }
            let gone: HashSet<String> = victims
                .iter()
                .filter_map(|p| p.metadata.uid.clone())
                .collect();
            active.retain(|p| !gone.contains(p.metadata.uid.as_deref().unwrap_or("")));
            // Deletions or creations, not both in one sync (as upstream's manageJob): one
            // expectation at a time, and deletions first.
            let r = if victims.is_empty() {
                self.create_pods(key, &job, create).await
            } else {
                self.delete_pods(key, &job, &victims).await
            };
            if let Err(e) = r {
                manage_err = Some(e);
            }
        }
        // Pods created (now or by an earlier sync) that the cache does not show yet are
        // active too (upstream adds its creations to `active`): a status computed
        // meanwhile neither drops them nor finishes the Job under them.
        let unseen = self.expectations.pending_adds(key);

        // 7. Finished once nothing runs any more.
        let left = active.len()
            + unseen
            + pods
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_some()
                        && !matches!(phase(p), "Succeeded" | "Failed")
                })
                .count();
        if finishing && left == 0 {
            if let Some(c) = conds
                .iter()
                .find(|c| c.type_ == "FailureTarget" && c.status == "True")
                .cloned()
            {
                let reason = c.reason.clone().unwrap_or_default();
                let msg = c.message.clone().unwrap_or_default();
                set_condition(&mut conds, "Failed", "True", &reason, &msg, now);
                events.push(("Warning", reason, msg));
            } else if let Some(c) = conds
                .iter()
                .find(|c| c.type_ == "SuccessCriteriaMet" && c.status == "True")
                .cloned()
            {
                set_condition(
                    &mut conds,
                    "Complete",
                    "True",
                    c.reason.as_deref().unwrap_or(""),
                    c.message.as_deref().unwrap_or(""),
                    now,
                );
                status.completion_time = Some(Time(now));
                events.push(("Normal", "Completed".into(), "Job completed".into()));
            }
        }
        status.active = Some(i32::try_from(active.len() + unseen).unwrap_or(i32::MAX));
        status.ready = Some(
            i32::try_from(active.iter().filter(|p| pod_is_ready(p)).count()).unwrap_or(i32::MAX),
        );
        status.terminating = Some(i32::try_from(terminating).unwrap_or(i32::MAX));
        status.failed_indexes = (spec.backoff_limit_per_index.is_some()
            || status.failed_indexes.is_some())
        .then(|| format_indexes(&counted.failed_indexes));
        status.conditions = (!conds.is_empty()).then_some(conds);
        if job.status.as_ref() != Some(&status) {
            match self.write_status(&job, &status).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => return Ok(Action::Done),
                Err(e) => return Err(e),
            }
        }
        for (type_, reason, msg) in events {
            self.event(&job, type_, &reason, &msg);
        }
        if let Some(e) = manage_err {
            return Err(e);
        }
        Ok(requeue.map_or(Action::Done, |d| {
            Action::RequeueAfter(d + Duration::from_millis(100))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lists_round_trip() {
        for (s, n, want) in [
            ("", 5, ""),
            ("0", 5, "0"),
            ("0,1,2", 5, "0-2"),
            ("1,3-5,7", 10, "1,3-5,7"),
            ("3-5,1", 10, "1,3-5"),
            ("0-9", 5, "0-4"),
            ("x,2", 5, "2"),
        ] {
            assert_eq!(format_indexes(&parse_indexes(Some(s), n)), want, "{s}");
        }
    }

    #[test]
    fn want_active_as_upstream() {
        // (parallelism, completions, succeeded, active) -> want
        for (p, c, s, a, want) in [
            (3, Some(10), 0, 0, 3),
            (3, Some(10), 8, 2, 2),
            (3, Some(10), 10, 0, 0),
            (5, Some(2), 0, 0, 2),
            (2, None, 0, 0, 2),
            (2, None, 1, 1, 1),
            (0, Some(3), 0, 2, 0),
        ] {
            assert_eq!(want_active(p, c, s, a), want, "{p} {c:?} {s} {a}");
        }
    }

    #[test]
    fn restarts_count_against_the_backoff_limit_under_on_failure() {
        let job_with = |policy: &str, limit: i32| -> Job {
            serde_json::from_value(
                json!({"spec": {"backoffLimit": limit, "template": {"spec": {
                "restartPolicy": policy, "containers": [{"name": "main", "image": "x"}]}}}}),
            )
            .unwrap()
        };
        let pod = |phase: &str, restarts: i32| -> Arc<Pod> {
            Arc::new(
                serde_json::from_value(json!({"status": {"phase": phase, "containerStatuses": [
                    {"name": "main", "image": "x", "imageID": "", "ready": false, "restartCount": restarts}]}}))
                .unwrap(),
            )
        };
        let on_failure = job_with("OnFailure", 3);
        assert!(!past_backoff_limit_on_failure(
            &on_failure,
            &[pod("Running", 2)]
        ));
        assert!(past_backoff_limit_on_failure(
            &on_failure,
            &[pod("Running", 2), pod("Pending", 1)]
        ));
        assert!(
            !past_backoff_limit_on_failure(&on_failure, &[pod("Failed", 5)]),
            "only live pods"
        );
        assert!(past_backoff_limit_on_failure(
            &job_with("OnFailure", 0),
            &[pod("Running", 1)]
        ));
        assert!(!past_backoff_limit_on_failure(
            &job_with("Never", 1),
            &[pod("Running", 4)]
        ));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = DEFAULT_POD_FAILURE_BACKOFF;
        assert_eq!(pod_failure_backoff(b, 0), Duration::ZERO);
        assert_eq!(pod_failure_backoff(b, 1), Duration::from_secs(10));
        assert_eq!(pod_failure_backoff(b, 3), Duration::from_secs(40));
        assert_eq!(pod_failure_backoff(b, 12), Duration::from_secs(600));
    }

    fn job(pfp: serde_json::Value) -> Job {
        serde_json::from_value(
            json!({"metadata": {"name": "j", "namespace": "ns", "uid": "u"},
            "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "x"}]}},
                "podFailurePolicy": pfp}}),
        )
        .unwrap()
    }

    fn failed_pod(code: i32, conditions: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed", "conditions": conditions, "containerStatuses": [
                {"name": "main", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": code}}}]}}))
        .unwrap()
    }

    #[test]
    fn pod_failure_policy_table() {
        let j = job(json!({"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [2]}},
        ]}));
        assert_eq!(
            match_pod_failure_policy(&j, &failed_pod(42, json!([]))),
            FailureAction::FailJob("Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0".into())
        );
        assert_eq!(
            match_pod_failure_policy(
                &j,
                &failed_pod(1, json!([{"type": "DisruptionTarget", "status": "True"}]))
            ),
            FailureAction::Ignore
        );
        assert_eq!(
            match_pod_failure_policy(&j, &failed_pod(7, json!([]))),
            FailureAction::Count
        );
        assert_eq!(
            match_pod_failure_policy(&j, &failed_pod(2, json!([]))),
            FailureAction::Ignore
        );
        // No rule matches exit code 1: counted.
        assert_eq!(
            match_pod_failure_policy(&j, &failed_pod(1, json!([]))),
            FailureAction::Count
        );
        let cond = job(
            json!({"rules": [{"action": "FailJob", "onPodConditions": [{"type": "ConfigIssue"}]}]}),
        );
        assert_eq!(
            match_pod_failure_policy(
                &cond,
                &failed_pod(1, json!([{"type": "ConfigIssue", "status": "True"}]))
            ),
            FailureAction::FailJob(
                "Pod ns/p has condition ConfigIssue matching FailJob rule at index 0".into()
            )
        );
    }

    #[test]
    fn resource_versions_compare_as_numbers_where_they_are() {
        assert!(version_older("9", "10"));
        assert!(!version_older("10", "10"));
        assert!(!version_older("11", "10"));
        assert!(version_older("a", "b") && !version_older("b", "b"));
    }

    #[test]
    fn finalizer_removals_are_expected_until_observed() {
        let f = FinalizerExpectations::default();
        let k = ObjectKey::namespaced("ns", "j");
        f.expect(&k, "a");
        f.expect(&k, "b");
        assert_eq!(f.expected(&k).len(), 2);
        f.observed(&k, "a");
        f.observed(&ObjectKey::namespaced("ns", "other"), "b");
        assert_eq!(f.expected(&k), HashSet::from(["b".to_owned()]));
        f.observed(&k, "b");
        assert!(f.expected(&k).is_empty() && f.lock().is_empty());
        f.expect(&k, "c");
        f.delete(&k);
        assert!(f.expected(&k).is_empty());
    }

    /// The controller's caches lag behind its own writes, as informers do under load:
    /// here each cache is filled only when the test says. A sync on a Job older than the
    /// controller's last status write waits instead of conflicting, pods just created
    /// count as active before the cache has them, and a pod whose finalizer was removed
    /// (and which was counted) but still shows it in the pod cache is not counted again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lagging_caches_neither_count_a_pod_twice_nor_conflict() {
        use kube::api::ListParams;
        use kube::runtime::watcher::Event;
        let (_dir, server, client) = crate::test_server().await;
        let jobs_api: Api<Job> = Api::namespaced(client.clone(), "default");
        let pods_api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let body: Job = serde_json::from_value(json!({"metadata": {"name": "j"},
            "spec": {"completions": 2, "parallelism": 1, "template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "main", "image": "x"}]}}}}))
        .expect("job");
        jobs_api
            .create(&PostParams::default(), &body)
            .await
            .expect("create job");
        let (jobs, pods) = (Store::<Job>::default(), Store::<Pod>::default());
        let c = JobController::new(
            client.clone(),
            jobs.clone(),
            pods.clone(),
            Clock::system(),
            DEFAULT_POD_FAILURE_BACKOFF,
        );
        let q = WorkQueue::default();
        let (on_job, on_pod) = (c.on_job(q.clone()), c.on_pod(q.clone()));
        let show_job = || async {
            let j = jobs_api.get("j").await.expect("get job");
            for ch in jobs.apply(Event::Apply(j)) {
                on_job(&ch);
            }
        };
        let show_pods = || async {
            for p in pods_api
                .list(&ListParams::default())
                .await
                .expect("pods")
                .items
            {
                for ch in pods.apply(Event::Apply(p)) {
                    on_pod(&ch);
                }
            }
        };
        let status = || async {
            jobs_api
                .get("j")
                .await
                .expect("get job")
                .status
                .expect("status")
        };
        let key = ObjectKey::namespaced("default", "j");

        show_job().await;
        c.reconcile(&key).await.expect("first sync");
        assert_eq!(status().await.active, Some(1), "the new pod counts at once");
        // The Job cache does not show that status write yet.
        let r = c.reconcile(&key).await.expect("a sync on a stale Job");
        assert!(matches!(r, Action::RequeueAfter(_)), "{r:?}");
        show_job().await;
        show_pods().await;
        let first = pods_api
            .list(&ListParams::default())
            .await
            .expect("pods")
            .items;
        assert_eq!(first.len(), 1);
        let name = first[0].metadata.name.clone().expect("name");
        let done = json!({"status": {"phase": "Succeeded"}});
        pods_api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&done))
            .await
            .expect("pod succeeded");
        show_pods().await;
        c.reconcile(&key).await.expect("the counting sync");
        let st = status().await;
        assert_eq!((st.succeeded, st.active), (Some(1), Some(1)), "{st:?}");
        let p = pods_api.get(&name).await.expect("pod");
        assert!(!has_finalizer(&p), "finalizer removed");
        // The Job cache catches up; the pod cache still shows the finalizer.
        show_job().await;
        c.reconcile(&key).await.expect("a sync on stale pods");
        let st = status().await;
        assert_eq!(st.succeeded, Some(1), "counted twice: {st:?}");
        assert!(!condition_true(
            &jobs_api.get("j").await.expect("job"),
            "Complete"
        ));
        // Once the pod cache shows the removal, nothing is expected any more.
        show_pods().await;
        assert!(c.finalizers.expected(&key).is_empty());
        server.shutdown().await.expect("shutdown");
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let mut j = job(serde_json::Value::Null);
        j.spec.as_mut().unwrap().pod_failure_policy = None;
        let p = pod_for_job(&j, Some(3), Some(1));
        let m = &p.metadata;
        assert_eq!(m.generate_name.as_deref(), Some("j-3-"));
        assert_eq!(m.annotations.as_ref().unwrap()[JOB_COMPLETION_INDEX], "3");
        assert_eq!(
            m.annotations.as_ref().unwrap()[JOB_INDEX_FAILURE_COUNT],
            "1"
        );
        assert_eq!(m.labels.as_ref().unwrap()[JOB_COMPLETION_INDEX], "3");
        assert_eq!(
            m.finalizers.as_deref(),
            Some(&[JOB_TRACKING_FINALIZER.to_owned()][..])
        );
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("j-3"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, JOB_COMPLETION_INDEX_ENV);
        assert_eq!(
            env.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
        let plain = pod_for_job(&j, None, None);
        assert_eq!(plain.metadata.generate_name.as_deref(), Some("j-"));
        assert!(plain.spec.unwrap().hostname.is_none());
    }
}
