//! The HorizontalPodAutoscaler controller (upstream's `pkg/controller/podautoscaler`,
//! `horizontal-pod-autoscaler` in kube-controller-manager's `--controllers`).
//!
//! Every sync period (15 s by default) each HPA is evaluated:
//!
//! 1. its target's `scale` subresource is read (any kind that has one, found by
//!    discovery: Deployments, ReplicaSets, StatefulSets, custom resources); failing that,
//!    `AbleToScale` turns False with `FailedGetScale`;
//! 2. the pods the scale's `status.selector` selects are listed, and their usage read from
//!    `metrics.k8s.io` PodMetrics (`Resource` and `ContainerResource` metrics, by
//!    `Utilization` or `AverageValue`); the replica count each metric proposes comes from
//!    the pure rules in [`super::hpa`] (tolerance, missing metrics, unready pods and the
//!    CPU initialization period), and the highest proposal wins;
//! 3. the proposal is stabilized and rate-limited by `behavior` (or upstream's defaults
//!    without it), and clamped to `minReplicas`/`maxReplicas`;
//! 4. a changed count is written to the scale subresource (event `SuccessfulRescale`),
//!    and the status (`currentReplicas`, `desiredReplicas`, `currentMetrics`,
//!    `lastScaleTime`) and the conditions `AbleToScale`, `ScalingActive` and
//!    `ScalingLimited` are updated with upstream's reasons and messages.
//!
//! Custom and external metrics (`Pods`, `Object`, `External`) are read from
//! `custom.metrics.k8s.io/v1beta2` and `external.metrics.k8s.io/v1beta1`
//! ([`super::custommetrics`]), which metrics adapters serve through APIService
//! registrations: `Pods` by the pods' average against `averageValue`; `Object` and
//! `External` by `value` (the usage ratio scales the ready pods) or `averageValue` (per
//! replica), as upstream's replica calculator. Without an adapter such a metric is
//! invalid with upstream's reasons (`FailedGetPodsMetric`, ...), and the others still
//! count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event, EventSource, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kcore_k8s::Quantity;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Client;
use serde_json::{json, Value};

use crate::cache::{Change, Store};
use crate::controllers::custommetrics;
use crate::controllers::hpa::{
    milli_quantity, per_pod_replicas, resource_replicas, stabilized_message, usage_ratio_replicas,
    Normalizer, PodInfo, Target,
};
use crate::controllers::job::object_ref;
use crate::error::Error;
use crate::meta::{pod_is_ready, ObjectKey};
use crate::queue::WorkQueue;
use crate::runner::{Action, Reconciler};

const COMPONENT: &str = "horizontal-pod-autoscaler";

/// Settings of the HorizontalPodAutoscaler controller (kube-controller-manager's
/// `--horizontal-pod-autoscaler-*` flags).
#[derive(Debug, Clone, Copy)]
pub struct HpaConfig {
    /// How often each HPA is evaluated (`--horizontal-pod-autoscaler-sync-period`, 15 s).
    pub sync_period: Duration,
    /// The scale-down stabilization window of HPAs that set none
    /// (`--horizontal-pod-autoscaler-downscale-stabilization`, 5 min).
    pub downscale_stabilization: Duration,
    /// How long after a pod starts its CPU samples are checked against its readiness
    /// (`--horizontal-pod-autoscaler-cpu-initialization-period`, 5 min).
    pub cpu_initialization_period: Duration,
    /// How long after a pod starts a NotReady pod is taken as not yet ready
    /// (`--horizontal-pod-autoscaler-initial-readiness-delay`, 30 s).
    pub initial_readiness_delay: Duration,
}

impl Default for HpaConfig {
    fn default() -> Self {
        Self {
            sync_period: Duration::from_secs(15),
            downscale_stabilization: Duration::from_secs(300),
            cpu_initialization_period: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
        }
    }
}

/// A Quantity (a JSON string) in milli-units.
fn quantity_milli(v: &Value) -> Option<i64> {
    Quantity::parse(v.as_str()?).ok().map(|q| q.milli_value())
}

/// One pod's usage of a resource, as the metrics API reports it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    milli: i64,
    timestamp: Option<Timestamp>,
    window: SignedDuration,
}

/// The HPA status being built: conditions keep their transition times unless their
/// status changes.
struct StatusBuilder {
    conditions: Vec<Value>,
    now: String,
}

impl StatusBuilder {
    fn set(&mut self, type_: &str, status: bool, reason: &str, message: impl Into<String>) {
        let status = if status { "True" } else { "False" };
        let message = message.into();
        let existing = self.conditions.iter_mut().find(|c| c["type"] == type_);
        let transition = match &existing {
            Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
            _ => json!(self.now),
        };
        let c = json!({"type": type_, "status": status, "reason": reason,
            "message": message, "lastTransitionTime": transition});
        match existing {
            Some(e) => *e = c,
            None => self.conditions.push(c),
        }
    }
}

/// What evaluating the metrics gave: the highest proposal and its metric's name, the
/// statuses (an empty one per metric that failed), and the first failure.
struct MetricsOutcome {
    replicas: Option<(i32, String)>,
    statuses: Vec<Value>,
    invalid: usize,
    first_error: Option<(String, String)>,
}

/// The HorizontalPodAutoscaler controller.
pub(crate) struct HpaController {
    client: Client,
    hpas: Store<HorizontalPodAutoscaler>,
    config: HpaConfig,
    /// Per HPA: the recommendations and scale events its behavior looks back on.
    history: Mutex<HashMap<ObjectKey, Normalizer>>,
    /// Scale target kinds found by discovery, by `apiVersion` and kind.
    kinds: Mutex<HashMap<(String, String), ApiResource>>,
    /// Events already recorded, by HPA, type, reason and message: a repeat raises the
    /// count of the same Event (client-go's correlator), so an HPA that fails every sync
    /// period does not add an Event each time.
    recorded: Mutex<HashMap<EventKey, (String, i32)>>,
}

/// An HPA, event type, reason and message.
type EventKey = (ObjectKey, String, String, String);

impl HpaController {
    pub(crate) fn new(
        client: Client,
        hpas: Store<HorizontalPodAutoscaler>,
        config: HpaConfig,
    ) -> Self {
        Self {
            client,
            hpas,
            config,
            history: Mutex::new(HashMap::new()),
            kinds: Mutex::new(HashMap::new()),
            recorded: Mutex::new(HashMap::new()),
        }
    }

    /// Handler for HPA changes: a new HPA, or a changed spec, is evaluated at once; after
    /// that each one comes back every sync period (its own status writes do not requeue
    /// it).
    pub(crate) fn on_hpa(
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<HorizontalPodAutoscaler>) + Send + Sync {
        move |c| {
            let h = c.object();
            let changed = c
                .old()
                .is_none_or(|o| o.metadata.generation != h.metadata.generation);
            if changed {
                queue.add(ObjectKey::of(h.as_ref()));
            }
        }
    }

    /// Records an Event about `hpa`, or counts a repeat of one already recorded.
    async fn event(&self, hpa: &HorizontalPodAutoscaler, type_: &str, reason: &str, msg: &str) {
        let key = (
            ObjectKey::of(hpa),
            type_.to_owned(),
            reason.to_owned(),
            msg.to_owned(),
        );
        let ns = key.0.ns().to_owned();
        let seen = self.recorded.lock().expect("recorded").get(&key).cloned();
        if let Some((name, count)) = seen {
            let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
            let patch = json!({"count": count + 1, "lastTimestamp": Timestamp::now().to_string()});
            if api
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .is_ok()
            {
                self.recorded
                    .lock()
                    .expect("recorded")
                    .insert(key, (name, count + 1));
                return;
            }
            // gone (expired or deleted): record it anew
        }
        let now = Timestamp::now();
        let name = format!("{}.{:x}", key.0.name, now.as_nanosecond());
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            involved_object: object_ref(hpa),
            reason: Some(reason.to_owned()),
            message: Some(msg.to_owned()),
            type_: Some(type_.to_owned()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            reporting_component: Some(COMPONENT.into()),
            ..Event::default()
        };
        match Api::<Event>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &ev)
            .await
        {
            Ok(_) => {
                let mut recorded = self.recorded.lock().expect("recorded");
                recorded.retain(|k, _| k.0 != key.0 || k.1 != key.1 || k.2 != key.2);
                recorded.insert(key, (name, 1));
            }
            Err(e) => tracing::debug!(reason, error = %e, "recording an event failed"),
        }
    }

    /// The API resource of the target `kind` in `api_version`, by discovery (cached).
    async fn target_resource(&self, api_version: &str, kind: &str) -> Result<ApiResource, String> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(ar) = self.kinds.lock().expect("kinds").get(&key) {
            return Ok(ar.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, _) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| match e {
                kube::Error::Api(_) | kube::Error::Discovery(_) => {
                    format!("no matches for kind {kind:?} in group {group:?}")
                }
                other => other.to_string(),
            })?;
        self.kinds.lock().expect("kinds").insert(key, ar.clone());
        Ok(ar)
    }

    /// The usage of `resource` (in `container`, or the whole pod) of the pods `selector`
    /// selects, by pod name (upstream's `GetResourceMetric`).
    async fn pod_usage(
        &self,
        ns: &str,
        selector: &str,
        resource: &str,
        container: Option<&str>,
    ) -> Result<HashMap<String, Sample>, String> {
        let ar = ApiResource {
            group: "metrics.k8s.io".into(),
            version: "v1beta1".into(),
            api_version: "metrics.k8s.io/v1beta1".into(),
            kind: "PodMetrics".into(),
            plural: "pods".into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| {
                format!(
                    "unable to fetch metrics from resource metrics API: {}",
                    kube_message(&e)
                )
            })?;
        if list.items.is_empty() {
            return Err("no metrics returned from resource metrics API".into());
        }
        let mut out = HashMap::new();
        for m in &list.items {
            let Some(name) = m.metadata.name.clone() else {
                continue;
            };
            let mut sum = 0i64;
            let mut found = container.is_none();
            let mut complete = true;
            for c in m.data["containers"].as_array().into_iter().flatten() {
                if container.is_some_and(|n| c["name"] != n) {
                    continue;
                }
                found = true;
                match c["usage"][resource]
                    .as_str()
                    .and_then(|q| Quantity::parse(q).ok())
                {
                    Some(q) => sum += q.milli_value(),
                    None => complete = false,
                }
            }
            if !found || !complete {
                continue;
            }
            let timestamp = m.data["timestamp"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok());
            let window = go_duration(m.data["window"].as_str().unwrap_or(""));
            out.insert(
                name,
                Sample {
                    milli: sum,
                    timestamp,
                    window,
                },
            );
        }
        Ok(out)
    }

    /// What the rules need of each pod (upstream's `groupPods` and `calculatePodRequests`).
    fn pod_info(
        &self,
        pod: &Pod,
        resource: &str,
        container: Option<&str>,
        sample: Option<&Sample>,
        now: Timestamp,
    ) -> PodInfo {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let phase = status.phase.as_deref().unwrap_or("Pending");
        let ignored = pod.metadata.deletion_timestamp.is_some() || phase == "Failed";
        let mut unready = phase == "Pending";
        if !unready && resource == "cpu" {
            if let Some(s) = sample {
                let ready = status
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_ == "Ready");
                unready = match (ready, status.start_time.as_ref()) {
                    (Some(c), Some(start)) => {
                        let init = SignedDuration::try_from(self.config.cpu_initialization_period)
                            .unwrap_or(SignedDuration::ZERO);
                        let delay = SignedDuration::try_from(self.config.initial_readiness_delay)
                            .unwrap_or(SignedDuration::ZERO);
                        let transition = c.last_transition_time.as_ref().map(|t| t.0);
                        if start.0 + init > now {
                            // a sample taken before one window had passed since readiness
                            // may include the start-up burst
                            c.status == "False"
                                || match (s.timestamp, transition) {
                                    (Some(ts), Some(tr)) => ts < tr + s.window,
                                    _ => false,
                                }
                        } else {
                            // not ready, and never was
                            c.status == "False" && transition.is_some_and(|tr| start.0 + delay > tr)
                        }
                    }
                    _ => true,
                };
            }
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let restartable_init = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let mut request = Ok(0i64);
        for c in spec.containers.iter().chain(restartable_init) {
            if container.is_some_and(|n| n != c.name) {
                continue;
            }
            let q = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(|q| Quantity::try_from(q).ok());
            match q {
                Some(q) => {
                    if let Ok(sum) = &mut request {
                        *sum += q.milli_value();
                    }
                }
                None => {
                    request = Err(c.name.clone());
                    break;
                }
            }
        }
        PodInfo {
            name,
            ignored,
            unready,
            request,
        }
    }

    /// One Resource or ContainerResource metric: the replicas it proposes, its metric
    /// name and status; or the condition reason and error (upstream's
    /// `computeStatusForResourceMetric`).
    #[allow(clippy::too_many_arguments)]
    async fn resource_metric(
        &self,
        ns: &str,
        selector: &str,
        current: i32,
        spec: &Value,
        container: Option<&str>,
        now: Timestamp,
    ) -> Result<(i32, String, Value), String> {
        let resource = spec["name"].as_str().unwrap_or_default();
        let t = &spec["target"];
        let target = if let Some(av) = t["averageValue"].as_str() {
            let q = Quantity::parse(av).map_err(|e| format!("invalid averageValue {av:?}: {e}"))?;
            Target::AverageValue(q.milli_value())
        } else if let Some(u) = t["averageUtilization"].as_i64() {
            Target::Utilization(u)
        } else {
            return Err("invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into());
        };
        let what = match target {
            Target::Utilization(_) => "utilization",
            Target::AverageValue(_) => "usage",
        };
        let fail = |e: String| format!("failed to get {resource} {what}: {e}");
        let samples = self
            .pod_usage(ns, selector, resource, container)
            .await
            .map_err(|e| {
                fail(format!(
                    "unable to get metrics for resource {resource}: {e}"
                ))
            })?;
        let pods = self.pods(ns, selector).await.map_err(fail)?;
        let infos: Vec<PodInfo> = pods
            .iter()
            .map(|p| {
                let name = p.metadata.name.as_deref().unwrap_or_default();
                self.pod_info(p, resource, container, samples.get(name), now)
            })
            .collect();
        let usage: HashMap<String, i64> =
            samples.iter().map(|(k, s)| (k.clone(), s.milli)).collect();
        let calc = resource_replicas(current, resource, target, &infos, &usage)
            .map_err(|e| fail(e.to_string()))?;
        let (ty, key) = match container {
            Some(_) => ("ContainerResource", "containerResource"),
            None => ("Resource", "resource"),
        };
        let mut source = json!({"name": resource});
        if let Some(c) = container {
            source["container"] = json!(c);
        }
        let name = match (target, container) {
            (Target::Utilization(_), None) => {
                format!("{resource} resource utilization (percentage of request)")
            }
            (Target::Utilization(_), Some(_)) => {
                format!("{resource} container resource utilization (percentage of request)")
            }
            (Target::AverageValue(_), _) => format!("{resource} resource"),
        };
        let mut cur = json!({"averageValue": milli_quantity(calc.average_milli)});
        if let Some(u) = calc.utilization {
            cur["averageUtilization"] = json!(u);
        }
        source["current"] = cur;
        Ok((calc.replicas, name, json!({"type": ty, key: source})))
    }

    /// A `Pods` metric: the average of the pods' values against `target.averageValue`,
    /// with upstream's rules for pods without a value (`GetMetricReplicas`).
    async fn pods_metric(
        &self,
        ns: &str,
        selector: &str,
        current: i32,
        spec: &Value,
        now: Timestamp,
    ) -> Result<(i32, String, Value), String> {
        let metric = spec["metric"]["name"].as_str().unwrap_or_default();
        let fail = |e: String| {
            format!("failed to get pods metric value: unable to get metric {metric}: {e}")
        };
        let target = quantity_milli(&spec["target"]["averageValue"]).ok_or_else(|| {
            fail("invalid pods metric source: averageValue target is required".into())
        })?;
        let metric_selector = kcore_k8s::label_selector_string(&spec["metric"]["selector"]);
        let values =
            custommetrics::pods_metric(&self.client, ns, metric, selector, &metric_selector)
                .await
                .map_err(fail)?;
        let pods = self.pods(ns, selector).await.map_err(fail)?;
        let infos: Vec<PodInfo> = pods
            .iter()
            .map(|p| self.pod_info(p, "", None, None, now))
            .collect();
        let calc = resource_replicas(current, "", Target::AverageValue(target), &infos, &values)
            .map_err(|e| fail(e.to_string()))?;
        let status = json!({"type": "Pods", "pods": {"metric": spec["metric"],
            "current": {"averageValue": milli_quantity(calc.average_milli)}}});
        Ok((calc.replicas, format!("pods metric {metric}"), status))
    }

    /// An `Object` metric: the described object's value against `target.value` (scaling
    /// the ready pods) or `target.averageValue` (per replica).
    async fn object_metric(
        &self,
        ns: &str,
        selector: &str,
        current: i32,
        status_replicas: i32,
        spec: &Value,
    ) -> Result<(i32, String, Value), String> {
        let metric = spec["metric"]["name"].as_str().unwrap_or_default();
        let obj = &spec["describedObject"];
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj["name"].as_str().unwrap_or_default();
        let fail = |e: String| {
            format!("failed to get object metric value: unable to get metric {metric}: {kind} on {ns} {name}/{e}")
        };
        let ar = self
            .target_resource(obj["apiVersion"].as_str().unwrap_or("v1"), kind)
            .await
            .map_err(fail)?;
        let metric_selector = kcore_k8s::label_selector_string(&spec["metric"]["selector"]);
        let usage = custommetrics::object_metric(
            &self.client,
            ns,
            &ar.plural,
            name,
            metric,
            &metric_selector,
        )
        .await
        .map_err(fail)?;
        let (replicas, current_value) = self
            .value_or_average(
                ns,
                selector,
                current,
                status_replicas,
                &spec["target"],
                usage,
            )
            .await
            .map_err(fail)?;
        let status = json!({"type": "Object", "object": {"metric": spec["metric"],
            "describedObject": obj, "current": current_value}});
        Ok((replicas, format!("{kind} metric {metric}"), status))
    }

    /// An `External` metric: the sum of its values against `target.value` (scaling the
    /// ready pods) or `target.averageValue` (per replica).
    async fn external_metric(
        &self,
        ns: &str,
        selector: &str,
        current: i32,
        status_replicas: i32,
        spec: &Value,
    ) -> Result<(i32, String, Value), String> {
        let metric = spec["metric"]["name"].as_str().unwrap_or_default();
        let metric_selector = kcore_k8s::label_selector_string(&spec["metric"]["selector"]);
        let fail = |e: String| {
            format!("failed to get external metric value: unable to get external metric {ns}/{metric}/{metric_selector}: {e}")
        };
        let usage: i64 = custommetrics::external_metric(&self.client, ns, metric, &metric_selector)
            .await
            .map_err(fail)?
            .iter()
            .sum();
        let (replicas, current_value) = self
            .value_or_average(
                ns,
                selector,
                current,
                status_replicas,
                &spec["target"],
                usage,
            )
            .await
            .map_err(fail)?;
        let status = json!({"type": "External", "external": {"metric": spec["metric"],
            "current": current_value}});
        Ok((
            replicas,
            format!("external metric {metric}({metric_selector})"),
            status,
        ))
    }

    /// The replicas an Object or External metric's `usage` (milli-units) proposes, and
    /// its `current` status: by `target.value` over the ready pods, or by
    /// `target.averageValue` per replica.
    async fn value_or_average(
        &self,
        ns: &str,
        selector: &str,
        current: i32,
        status_replicas: i32,
        target: &Value,
        usage: i64,
    ) -> Result<(i32, Value), String> {
        if let Some(avg) = quantity_milli(&target["averageValue"]) {
            let (replicas, per_pod) = per_pod_replicas(status_replicas, usage, avg);
            return Ok((replicas, json!({"averageValue": milli_quantity(per_pod)})));
        }
        let value = quantity_milli(&target["value"]).ok_or(
            "invalid metric source: neither a value target nor an average value target was set",
        )?;
        let ratio = usage as f64 / value.max(1) as f64;
        let ready = if current != 0 && (1.0 - ratio).abs() > crate::controllers::hpa::TOLERANCE {
            let pods = self.pods(ns, selector).await?;
            pods.iter()
                .filter(|p| {
                    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        && pod_is_ready(p)
                })
                .count() as i64
        } else {
            0
        };
        let replicas = usage_ratio_replicas(current, ratio, || ready);
        Ok((replicas, json!({"value": milli_quantity(usage)})))
    }

    /// The pods `selector` picks, as upstream's replica calculator lists them.
    async fn pods(&self, ns: &str, selector: &str) -> Result<Vec<Pod>, String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| {
                format!(
                    "unable to get pods while calculating replica count: {}",
                    kube_message(&e)
                )
            })?;
        if list.items.is_empty() {
            return Err("no pods returned by selector while calculating replica count".into());
        }
        Ok(list.items)
    }

    /// Every metric of the HPA (upstream's `computeReplicasForMetrics`); the conditions
    /// of a failing metric are set by the caller.
    async fn metrics(
        &self,
        ns: &str,
        selector: &str,
        (current, status_replicas): (i32, i32),
        specs: &[Value],
        now: Timestamp,
    ) -> MetricsOutcome {
        let mut out = MetricsOutcome {
            replicas: None,
            statuses: vec![json!({"type": ""}); specs.len()],
            invalid: 0,
            first_error: None,
        };
        for (i, m) in specs.iter().enumerate() {
            let ty = m["type"].as_str().unwrap_or_default();
            let r = match ty {
                "Resource" => self
                    .resource_metric(ns, selector, current, &m["resource"], None, now)
                    .await
                    .map_err(|e| ("FailedGetResourceMetric", e)),
                "ContainerResource" => {
                    let c = m["containerResource"]["container"]
                        .as_str()
                        .unwrap_or_default();
                    self.resource_metric(
                        ns,
                        selector,
                        current,
                        &m["containerResource"],
                        Some(c),
                        now,
                    )
                    .await
                    .map_err(|e| ("FailedGetContainerResourceMetric", e))
                }
                "Pods" => self
                    .pods_metric(ns, selector, current, &m["pods"], now)
                    .await
                    .map_err(|e| ("FailedGetPodsMetric", e)),
                "Object" => self
                    .object_metric(ns, selector, current, status_replicas, &m["object"])
                    .await
                    .map_err(|e| ("FailedGetObjectMetric", e)),
                "External" => self
                    .external_metric(ns, selector, current, status_replicas, &m["external"])
                    .await
                    .map_err(|e| ("FailedGetExternalMetric", e)),
                other => Err((
                    "InvalidMetricSourceType",
                    format!("unknown metric source type {other:?}"),
                )),
            };
            match r {
                Ok((n, name, status)) => {
                    out.statuses[i] = status;
                    if out.replicas.as_ref().is_none_or(|(best, _)| n > *best) {
                        out.replicas = Some((n, name));
                    }
                }
                Err((reason, e)) => {
                    out.invalid += 1;
                    out.first_error.get_or_insert((reason.to_owned(), e));
                }
            }
        }
        out
    }

    async fn write_status(
        &self,
        hpa: &HorizontalPodAutoscaler,
        key: &ObjectKey,
        status: Value,
    ) -> Result<(), Error> {
        let old = serde_json::to_value(&hpa.status).unwrap_or(Value::Null);
        if semantically_equal(&old, &status) {
            return Ok(());
        }
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), key.ns());
        api.patch_status(
            &key.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .map_err(Error::api(
            "patch status of",
            format!("horizontalpodautoscaler {key}"),
        ))?;
        Ok(())
    }

    async fn sync(&self, hpa: &HorizontalPodAutoscaler, key: &ObjectKey) -> Result<(), Error> {
        let now = Timestamp::now();
        let spec = serde_json::to_value(&hpa.spec).unwrap_or(Value::Null);
        let old = serde_json::to_value(&hpa.status).unwrap_or(Value::Null);
        let mut b = StatusBuilder {
            conditions: old["conditions"].as_array().cloned().unwrap_or_default(),
            now: now.to_string(),
        };
        let status =
            |b: &StatusBuilder, current: i32, desired: i32, metrics: &[Value], scaled: bool| {
                let last = if scaled {
                    json!(b.now)
                } else {
                    old["lastScaleTime"].clone()
                };
                json!({
                    "lastScaleTime": last,
                    "currentReplicas": current,
                    "desiredReplicas": desired,
                    "currentMetrics": if metrics.is_empty() { Value::Null } else { json!(metrics) },
                    "conditions": b.conditions,
                })
            };
        let target = &spec["scaleTargetRef"];
        let kind = target["kind"].as_str().unwrap_or_default();
        let name = target["name"].as_str().unwrap_or_default();
        let api_version = target["apiVersion"].as_str().unwrap_or_default();
        let ns = key.ns();
        let reference = format!("{kind}/{ns}/{name}");

        // the target's scale
        let scale = match self.target_resource(api_version, kind).await {
            Ok(ar) => {
                let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
                api.get_scale(name)
                    .await
                    .map(|s| (api, s))
                    .map_err(|e| kube_message(&e))
            }
            Err(e) => Err(e),
        };
        let (scale_api, mut scale) = match scale {
            Ok(s) => s,
            Err(e) => {
                self.event(hpa, "Warning", "FailedGetScale", &e).await;
                b.set(
                    "AbleToScale",
                    false,
                    "FailedGetScale",
                    format!("the HPA controller was unable to get the target's current scale: {e}"),
                );
                let cur = old["currentReplicas"].as_i64().unwrap_or(0) as i32;
                let desired = old["desiredReplicas"].as_i64().unwrap_or(0) as i32;
                let metrics = old["currentMetrics"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let st = status(&b, cur, desired, &metrics, false);
                tracing::debug!(hpa = %key, target = reference, error = e, "no scale");
                return self.write_status(hpa, key, st).await;
            }
        };
        b.set(
            "AbleToScale",
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
        );
        let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let selector = scale
            .status
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        let min = spec["minReplicas"].as_i64().unwrap_or(1) as i32;
        let max = spec["maxReplicas"].as_i64().unwrap_or(0) as i32;
        let down_window =
            i64::try_from(self.config.downscale_stabilization.as_secs()).unwrap_or(i64::MAX);
        self.history
            .lock()
            .expect("history")
            .entry(key.clone())
            .or_insert_with(|| Normalizer::new(down_window))
            .record_initial(now, current);

        let mut statuses = Vec::new();
        let (desired, reason) = if current == 0 && min != 0 {
            b.set(
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
            );
            (current, None)
        } else if current > max {
            (
                max,
                Some("Current number of replicas above Spec.MaxReplicas".to_owned()),
            )
        } else if current < min {
            (
                min,
                Some("Current number of replicas below Spec.MinReplicas".to_owned()),
            )
        } else {
            let specs = spec["metrics"].as_array().cloned().unwrap_or_default();
            let status_replicas = scale.status.as_ref().map_or(current, |s| s.replicas);
            let outcome = self
                .metrics(ns, &selector, (current, status_replicas), &specs, now)
                .await;
            statuses = outcome.statuses;
            let first_error = outcome.first_error.map(|(reason, e)| {
                let full = format!(
                    "invalid metrics ({} invalid out of {}), first error is: {e}",
                    outcome.invalid,
                    specs.len()
                );
                (reason, e, full)
            });
            let proposal = outcome.replicas.filter(|(n, _)| {
                // all invalid, or some invalid while scaling down: no decision
                outcome.invalid == 0 || *n >= current
            });
            let Some((metric_replicas, metric)) = proposal else {
                let (reason, e, full) = first_error.unwrap_or_else(|| {
                    let e = "no metrics to compute a replica count from".to_owned();
                    ("FailedComputeMetricsReplicas".to_owned(), e.clone(), e)
                });
                // upstream's getUnableComputeReplicaCountCondition: an event of the
                // metric's reason, then the condition
                self.event(hpa, "Warning", &reason, &e).await;
                b.set(
                    "ScalingActive",
                    false,
                    &reason,
                    format!("the HPA was unable to compute the replica count: {e}"),
                );
                let st = status(
                    &b,
                    current,
                    old["desiredReplicas"].as_i64().unwrap_or(0) as i32,
                    &statuses,
                    false,
                );
                self.write_status(hpa, key, st).await?;
                self.event(hpa, "Warning", "FailedComputeMetricsReplicas", &full)
                    .await;
                tracing::debug!(hpa = %key, target = reference, error = full, "no replica count");
                return Ok(());
            };
            if let Some((reason, e, _)) = &first_error {
                // some metrics still work: scale on them, and tell about the others
                self.event(hpa, "Warning", reason, e).await;
            }
            b.set(
                "ScalingActive",
                true,
                "ValidMetricFound",
                format!("the HPA was able to successfully calculate a replica count from {metric}"),
            );
            let desired = metric_replicas.max(0);
            let why = if desired > current {
                Some(format!("{metric} above target"))
            } else if desired < current {
                Some("All metrics below target".to_owned())
            } else {
                None
            };
            let behavior = spec["behavior"].clone();
            let (n, stabilized, limit) = self
                .history
                .lock()
                .expect("history")
                .entry(key.clone())
                .or_insert_with(|| Normalizer::new(down_window))
                .normalize(now, current, desired, min, max, &behavior);
            // the stabilized count, to tell whether the limits changed it
            match stabilized {
                Some(r) => b.set("AbleToScale", true, r, stabilized_message(r)),
                None => b.set(
                    "AbleToScale",
                    true,
                    "ReadyForNewScale",
                    "recommended size matches current size",
                ),
            }
            let limited = limit.0 != "DesiredWithinRange";
            b.set("ScalingLimited", limited, limit.0, limit.1);
            (n, why)
        };

        let rescale = desired != current;
        let reason = reason.unwrap_or_default();
        if rescale {
            if let Some(s) = scale.spec.as_mut() {
                s.replicas = Some(desired);
            } else {
                scale.spec = Some(k8s_openapi::api::autoscaling::v1::ScaleSpec {
                    replicas: Some(desired),
                });
            }
            if let Err(e) = scale_api
                .replace_scale(name, &PostParams::default(), &scale)
                .await
            {
                let e = kube_message(&e);
                self.event(
                    hpa,
                    "Warning",
                    "FailedRescale",
                    &format!("New size: {desired}; reason: {reason}; error: {e}"),
                )
                .await;
                b.set(
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {e}"),
                );
                let st = status(
                    &b,
                    current,
                    old["desiredReplicas"].as_i64().unwrap_or(0) as i32,
                    &statuses,
                    false,
                );
                return self.write_status(hpa, key, st).await;
            }
            b.set(
                "AbleToScale",
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
            );
            self.event(
                hpa,
                "Normal",
                "SuccessfulRescale",
                &format!("New size: {desired}; reason: {reason}"),
            )
            .await;
            if !spec["behavior"].is_null() {
                if let Some(h) = self.history.lock().expect("history").get_mut(key) {
                    h.record_scale(now, current, desired);
                }
            }
            tracing::info!(hpa = %key, target = reference, from = current, to = desired, reason, "rescaled");
        }
        let desired = if rescale { desired } else { current };
        let st = status(&b, current, desired, &statuses, rescale);
        self.write_status(hpa, key, st).await
    }
}

impl Reconciler for HpaController {
    fn name(&self) -> &'static str {
        COMPONENT
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(hpa) = self.hpas.get(key) else {
            self.history.lock().expect("history").remove(key);
            self.recorded
                .lock()
                .expect("recorded")
                .retain(|k, _| &k.0 != key);
            return Ok(Action::Done);
        };
        if hpa.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        self.sync(&hpa, key).await?;
        Ok(Action::RequeueAfter(self.config.sync_period))
    }
}

/// The message of an API error (`deployments.apps "web" not found`), else the error.
fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

/// Two statuses equal but for nulls (a merge patch drops null fields).
fn semantically_equal(a: &Value, b: &Value) -> bool {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    strip(a) == strip(b)
}

/// A Go duration (`15s`, `1m30s`, `250ms`, `3.001s`) as a [`SignedDuration`]; zero when
/// it does not parse.
fn go_duration(s: &str) -> SignedDuration {
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let Ok(n) = rest[..num_end].parse::<f64>() else {
            return SignedDuration::ZERO;
        };
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return SignedDuration::ZERO,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    SignedDuration::try_from_secs_f64(total).unwrap_or(SignedDuration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("15s"), SignedDuration::from_secs(15));
        assert_eq!(go_duration("1m30s"), SignedDuration::from_secs(90));
        assert_eq!(go_duration("250ms"), SignedDuration::from_millis(250));
        assert_eq!(go_duration("3.001s"), SignedDuration::from_millis(3001));
        assert_eq!(go_duration("x"), SignedDuration::ZERO);
        assert_eq!(go_duration(""), SignedDuration::ZERO);
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let mut b = StatusBuilder {
            conditions: vec![json!({"type": "AbleToScale", "status": "True",
                "reason": "SucceededGetScale", "message": "m",
                "lastTransitionTime": "2026-01-01T00:00:00Z"})],
            now: "2026-01-01T00:10:00Z".into(),
        };
        b.set("AbleToScale", true, "SucceededRescale", "n");
        assert_eq!(
            b.conditions[0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(b.conditions[0]["reason"], "SucceededRescale");
        b.set("AbleToScale", false, "FailedGetScale", "x");
        assert_eq!(
            b.conditions[0]["lastTransitionTime"],
            "2026-01-01T00:10:00Z"
        );
        b.set("ScalingActive", true, "ValidMetricFound", "y");
        assert_eq!(b.conditions.len(), 2);
        assert!(semantically_equal(
            &json!({"a": null, "b": [{"c": 1, "d": null}]}),
            &json!({"b": [{"c": 1}]})
        ));
    }
}
