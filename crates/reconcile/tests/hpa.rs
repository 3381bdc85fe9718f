//! The HorizontalPodAutoscaler controller against the in-process API server, whose
//! `metrics.k8s.io` reads a stand-in node agent's Summary API (`/stats/summary`) that
//! reports a usage the test sets for every running pod on the node. A small kubelet loop
//! marks pods Running and Ready with a start time, as the node agent does; the real
//! `kubectl` (which must be on PATH) creates the HPA and reads its TARGETS.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::kubectl::{kubectl, must};
use common::{eventually, eventually_or, start_with, Cluster, Kubelet};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kcore_reconcile::{ControllerManagerConfig, HpaConfig};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};

const NODE: &str = "n1";

/// The CPU each running pod on the stand-in node uses (nanocores); `None` reports no pods.
type Usage = Arc<Mutex<Option<u64>>>;

/// Serves `/stats/summary` for the node `NODE` with `usage` for every running pod of the
/// namespace on it, and registers the Node; the server stops when the handle is aborted.
async fn stand_in_node(c: &Cluster, usage: Usage) -> tokio::task::JoinHandle<()> {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    let app = axum::Router::new().route(
        "/stats/summary",
        axum::routing::get(move || {
            let (pods, usage) = (pods.clone(), usage.clone());
            async move {
                let u = *usage.lock().unwrap();
                axum::Json(summary(&pods, u).await)
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(tcp, app).await;
    });
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}}});
    let nodes: Api<Node> = Api::all(c.client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(node).unwrap(),
        )
        .await
        .expect("register the node");
    task
}

/// The Summary API answer: each running pod at `usage` (a sample taken now over 1 s).
async fn summary(pods: &Api<Pod>, usage: Option<u64>) -> Value {
    let now = Timestamp::now().to_string();
    let cpu = |n: u64| json!({"time": now, "usageNanoCores": n, "windowSeconds": 1.0});
    let mem = json!({"time": now, "workingSetBytes": 8u64 << 20});
    let mut items = Vec::new();
    if let (Some(n), Ok(list)) = (usage, pods.list(&ListParams::default()).await) {
        for p in list.items {
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let here = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE);
            if !running || !here || p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            items.push(json!({
                "podRef": {"name": p.metadata.name, "namespace": p.metadata.namespace,
                    "uid": p.metadata.uid},
                "containers": [{"name": "app", "cpu": cpu(n), "memory": mem}],
                "cpu": cpu(n), "memory": mem,
            }));
        }
    }
    json!({"node": {"nodeName": NODE, "cpu": cpu(0), "memory": mem}, "pods": items})
}

/// Marks every new pod of the namespace Running and Ready, with its start time.
async fn kubelet(client: Client, ns: String) {
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let stream = common::watch_events(api.clone());
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let (watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev else {
            continue;
        };
        let started = p
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .is_some();
        if started || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let now = Timestamp::now().to_string();
        let patch = json!({"status": {"phase": "Running", "podIP": "10.0.0.1", "startTime": now,
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
        let name = p.metadata.name.clone().unwrap_or_default();
        let _ = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
    }
}

/// A cluster with the Deployment, ReplicaSet and HPA controllers (1 s sync period, 1 s
/// CPU initialization period), the kubelet loop and a stand-in node at `usage`.
async fn cluster(usage: Usage) -> (Cluster, Vec<tokio::task::JoinHandle<()>>) {
    let cfg = ControllerManagerConfig {
        workers: 2,
        controllers: ["deployment", "replicaset", "horizontal-pod-autoscaler"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        hpa: HpaConfig {
            sync_period: Duration::from_secs(1),
            cpu_initialization_period: Duration::from_secs(1),
            ..HpaConfig::default()
        },
        ..ControllerManagerConfig::default()
    };
    let c = start_with(Kubelet::None, cfg).await;
    let node = stand_in_node(&c, usage).await;
    let kubelet = tokio::spawn(kubelet(c.client.clone(), c.namespace.clone()));
    (c, vec![node, kubelet])
}

/// A Deployment of `replicas` pods on the stand-in node, each requesting 100m CPU.
async fn deployment(c: &Cluster, name: &str, replicas: i32) {
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "busybox",
                    "resources": {"requests": {"cpu": "100m"}}}]}}}});
    Api::<Deployment>::namespaced(c.client.clone(), &c.namespace)
        .create(&PostParams::default(), &serde_json::from_value(d).unwrap())
        .await
        .expect("create deployment");
}

async fn replicas(c: &Cluster, name: &str) -> i32 {
    Api::<Deployment>::namespaced(c.client.clone(), &c.namespace)
        .get(name)
        .await
        .ok()
        .and_then(|d| d.spec.replicas)
        .unwrap_or(-1)
}

async fn hpa(c: &Cluster, name: &str) -> Value {
    let h = Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), &c.namespace)
        .get(name)
        .await
        .expect("hpa");
    serde_json::to_value(h).unwrap()
}

/// The HPA's condition `type_` as (status, reason, message).
async fn condition(c: &Cluster, name: &str, type_: &str) -> Option<(String, String, String)> {
    let h = hpa(c, name).await;
    let cond = h["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|x| x["type"] == type_)?
        .clone();
    let s = |k: &str| cond[k].as_str().unwrap_or_default().to_owned();
    Some((s("status"), s("reason"), s("message")))
}

/// The (reason, message) of the events about the HPA `name`.
async fn events(c: &Cluster, name: &str) -> Vec<(String, String)> {
    Api::<Event>::namespaced(c.client.clone(), &c.namespace)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("HorizontalPodAutoscaler")
                && e.involved_object.name.as_deref() == Some(name)
        })
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

async fn has_event(c: &Cluster, name: &str, reason: &str, message: &str) -> Option<()> {
    events(c, name)
        .await
        .iter()
        .any(|(r, m)| r == reason && m == message)
        .then_some(())
}

/// The TARGETS cell of `kubectl get hpa <name>`.
async fn targets(c: &Cluster, name: &str) -> String {
    let out = must(
        kubectl(c, &["get", "hpa", name, "--no-headers"], None).await,
        "get hpa",
    );
    // NAME REFERENCE TARGETS... MINPODS MAXPODS REPLICAS AGE
    let cols: Vec<&str> = out.split_whitespace().collect();
    cols[2..cols.len() - 4].join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_scales_a_deployment_up_to_max_and_down_after_the_window() {
    let usage: Usage = Arc::new(Mutex::new(Some(200_000_000)));
    let (c, tasks) = cluster(usage.clone()).await;
    deployment(&c, "web", 1).await;
    must(
        kubectl(
            &c,
            &[
                "autoscale",
                "deployment",
                "web",
                "--cpu-percent=50",
                "--min=1",
                "--max=4",
            ],
            None,
        )
        .await,
        "autoscale",
    );
    // a short scale-down window
    Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), &c.namespace)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 3}}}}),
            ),
        )
        .await
        .expect("patch behavior");

    // 200 % of the request against 50 %: 4 replicas
    eventually(60, "a scale-up to 4", || async {
        (replicas(&c, "web").await == 4).then_some(())
    })
    .await;
    eventually(10, "the SuccessfulRescale event", || {
        has_event(
            &c,
            "web",
            "SuccessfulRescale",
            "New size: 4; reason: cpu resource utilization (percentage of request) above target",
        )
    })
    .await;
    // still 200 %: 16 wanted, held at the maximum
    let limited = eventually_or(
        30,
        "ScalingLimited at the maximum",
        || async {
            condition(&c, "web", "ScalingLimited")
                .await
                .filter(|(s, _, _)| s == "True")
        },
        String::new,
    )
    .await;
    assert_eq!(
        limited,
        (
            "True".to_owned(),
            "TooManyReplicas".to_owned(),
            "the desired replica count is more than the maximum replica count".to_owned()
        )
    );
    let h = hpa(&c, "web").await;
    assert_eq!(h["status"]["currentReplicas"], 4, "{h:#}");
    assert_eq!(h["status"]["desiredReplicas"], 4, "{h:#}");
    assert!(h["status"]["lastScaleTime"].is_string(), "{h:#}");
    assert_eq!(
        h["status"]["currentMetrics"][0],
        json!({"type": "Resource", "resource": {"name": "cpu",
            "current": {"averageUtilization": 200, "averageValue": "200m"}}}),
        "{h:#}"
    );
    let active = condition(&c, "web", "ScalingActive").await.unwrap();
    assert_eq!(
        active,
        (
            "True".to_owned(),
            "ValidMetricFound".to_owned(),
            "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)".to_owned()
        )
    );
    assert_eq!(targets(&c, "web").await, "cpu: 200%/50%");
    assert_eq!(replicas(&c, "web").await, 4);

    // 10 %: one replica is enough, but only once the 3 s window has passed
    *usage.lock().unwrap() = Some(10_000_000);
    let lowered = Instant::now();
    let held = eventually(30, "the scale-down held by the window", || async {
        condition(&c, "web", "AbleToScale")
            .await
            .filter(|(_, r, _)| r == "ScaleDownStabilized")
    })
    .await;
    assert_eq!(
        held.2,
        "recent recommendations were higher than current one, applying the highest recent recommendation"
    );
    eventually(60, "a scale-down to 1", || async {
        (replicas(&c, "web").await == 1).then_some(())
    })
    .await;
    // the window counted from the last high recommendation, at most a sync period before
    assert!(
        lowered.elapsed() >= Duration::from_secs(2),
        "scaled down after {:?}, inside the window",
        lowered.elapsed()
    );
    eventually(10, "the scale-down event", || {
        has_event(
            &c,
            "web",
            "SuccessfulRescale",
            "New size: 1; reason: All metrics below target",
        )
    })
    .await;
    eventually(30, "TARGETS at 10 %", || async {
        (targets(&c, "web").await == "cpu: 10%/50%").then_some(())
    })
    .await;
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_raises_to_min_and_reports_missing_metrics_and_targets() {
    // the node reports no pods: no metrics at all
    let usage: Usage = Arc::new(Mutex::new(None));
    let (c, tasks) = cluster(usage.clone()).await;
    deployment(&c, "low", 1).await;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c.client.clone(), &c.namespace);
    let body = |name: &str, target: Value, min: i32, max: i32| {
        serde_json::from_value::<HorizontalPodAutoscaler>(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name},
            "spec": {"scaleTargetRef": target, "minReplicas": min, "maxReplicas": max,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50}}}]}}))
        .unwrap()
    };
    let dep = |n: &str| json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": n});
    hpas.create(&PostParams::default(), &body("low", dep("low"), 2, 3))
        .await
        .expect("create hpa");

    // below minReplicas: raised without metrics
    eventually(60, "a scale-up to the minimum", || async {
        (replicas(&c, "low").await == 2).then_some(())
    })
    .await;
    eventually(10, "the min event", || {
        has_event(
            &c,
            "low",
            "SuccessfulRescale",
            "New size: 2; reason: Current number of replicas below Spec.MinReplicas",
        )
    })
    .await;

    // then no metrics: ScalingActive False, the events, <unknown> in TARGETS
    let err = "failed to get cpu utilization: unable to get metrics for resource cpu: no metrics returned from resource metrics API";
    let active = eventually(30, "ScalingActive False", || async {
        condition(&c, "low", "ScalingActive")
            .await
            .filter(|(s, _, _)| s == "False")
    })
    .await;
    assert_eq!(active.1, "FailedGetResourceMetric");
    assert_eq!(
        active.2,
        format!("the HPA was unable to compute the replica count: {err}")
    );
    eventually(10, "FailedGetResourceMetric", || {
        has_event(&c, "low", "FailedGetResourceMetric", err)
    })
    .await;
    let full = format!("invalid metrics (1 invalid out of 1), first error is: {err}");
    eventually(10, "FailedComputeMetricsReplicas", || {
        has_event(&c, "low", "FailedComputeMetricsReplicas", &full)
    })
    .await;
    assert_eq!(targets(&c, "low").await, "cpu: <unknown>/50%");
    assert_eq!(replicas(&c, "low").await, 2);

    // metrics appear at 90 %: ceil(1.8 × 2) = 4, held at the maximum of 3
    *usage.lock().unwrap() = Some(90_000_000);
    eventually(60, "a scale-up to the maximum", || async {
        (replicas(&c, "low").await == 3).then_some(())
    })
    .await;
    let limited = eventually(30, "ScalingLimited", || async {
        condition(&c, "low", "ScalingLimited")
            .await
            .filter(|(s, _, _)| s == "True")
    })
    .await;
    assert_eq!(limited.1, "TooManyReplicas");
    assert_eq!(replicas(&c, "low").await, 3);

    // a target that does not exist
    hpas.create(&PostParams::default(), &body("ghost", dep("nope"), 1, 3))
        .await
        .expect("create hpa");
    let able = eventually(30, "FailedGetScale", || async {
        condition(&c, "ghost", "AbleToScale").await
    })
    .await;
    assert_eq!(
        able,
        (
            "False".to_owned(),
            "FailedGetScale".to_owned(),
            "the HPA controller was unable to get the target's current scale: deployments.apps \"nope\" not found".to_owned()
        )
    );
    eventually(10, "the FailedGetScale event", || {
        has_event(
            &c,
            "ghost",
            "FailedGetScale",
            "deployments.apps \"nope\" not found",
        )
    })
    .await;
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_scales_a_custom_resource_through_its_scale_subresource() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
    let (c, tasks) = cluster(Arc::new(Mutex::new(None))).await;
    let group = format!("hpa{}.kcore.test", std::process::id());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": format!("pools.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": "pools", "singular": "pool", "kind": "Pool"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    Api::<CustomResourceDefinition>::all(c.client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Pool"), "pools");
    let pools: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), &c.namespace, &ar);
    eventually(30, "the CRD served", || async {
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": format!("{group}/v1"), "kind": "Pool", "metadata": {"name": "p"},
            "spec": {"replicas": 1}
        }))
        .unwrap();
        pools.create(&PostParams::default(), &o).await.ok()
    })
    .await;
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "pool"},
        "spec": {"scaleTargetRef": {"apiVersion": format!("{group}/v1"), "kind": "Pool", "name": "p"},
            "minReplicas": 3, "maxReplicas": 5}}))
    .unwrap();
    Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), &c.namespace)
        .create(&PostParams::default(), &hpa)
        .await
        .expect("create hpa");
    eventually(60, "the pool raised to 3", || async {
        let p = pools.get("p").await.ok()?;
        (p.data["spec"]["replicas"] == 3).then_some(())
    })
    .await;
    eventually(10, "the rescale event", || {
        has_event(
            &c,
            "pool",
            "SuccessfulRescale",
            "New size: 3; reason: Current number of replicas below Spec.MinReplicas",
        )
    })
    .await;
    for t in tasks {
        t.abort();
    }
}

/// The metric values a test's adapter serves (Quantities as strings), and the query
/// strings of the requests it answered.
#[derive(Default)]
struct AdapterState {
    /// `rps` of every pod the selector picks.
    rps: String,
    /// `hits` of the Service `adapter`.
    hits: String,
    /// The values of the external metric `queue`.
    queue: Vec<String>,
    queries: Vec<String>,
}

/// A custom and external metrics adapter: HTTPS with its own CA (the APIServices'
/// `caBundle`), serving `custom.metrics.k8s.io/v1beta2` (`pods/*/rps`,
/// `services/adapter/hits`) and `external.metrics.k8s.io/v1beta1` (`queue`) from
/// `state`. Returns the server task, its port and its CA's PEM.
async fn metrics_adapter(
    c: &Cluster,
    state: Arc<Mutex<AdapterState>>,
    dir: &std::path::Path,
) -> (tokio::task::JoinHandle<()>, u16, String) {
    let ca = kcore_tls::Ca::load_or_create(&dir.join("pki")).expect("CA");
    let host = format!("adapter.{}.svc", c.namespace);
    let cert = ca
        .issue("adapter", &[host], kcore_tls::Usage::Server)
        .expect("serving certificate");
    let cfg = kcore_tls::server_config(&cert, None).expect("tls config");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = kcore_tls::TlsListener::new(tcp, cfg).expect("tls listener");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    let ns = c.namespace.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (pods, state, ns) = (pods.clone(), state.clone(), ns.clone());
        async move {
            let query = uri.query().unwrap_or_default().to_owned();
            let selector: String = query
                .split('&')
                .filter_map(|kv| kv.strip_prefix("labelSelector="))
                .map(|v| v.replace("%3D", "=").replace("%2C", ","))
                .collect();
            let now = Timestamp::now().to_string();
            let custom = format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/");
            let external = format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/");
            let path = uri.path().to_owned();
            let (rps, hits, queue) = {
                let mut s = state.lock().unwrap();
                s.queries.push(format!("{path}?{query}"));
                (s.rps.clone(), s.hits.clone(), s.queue.clone())
            };
            let body = if path == format!("{custom}pods/*/rps") {
                let list = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default();
                let items: Vec<Value> = list
                    .iter()
                    .map(|p| json!({"describedObject": {"kind": "Pod", "namespace": ns,
                        "name": p.metadata.name, "apiVersion": "/v1"},
                        "metric": {"name": "rps"}, "timestamp": now, "windowSeconds": 60,
                        "value": rps}))
                    .collect();
                json!({"kind": "MetricValueList", "apiVersion": "custom.metrics.k8s.io/v1beta2",
                    "metadata": {}, "items": items})
            } else if path == format!("{custom}services/adapter/hits") {
                json!({"kind": "MetricValueList", "apiVersion": "custom.metrics.k8s.io/v1beta2",
                    "metadata": {}, "items": [{"describedObject": {"kind": "Service",
                        "namespace": ns, "name": "adapter", "apiVersion": "/v1"},
                        "metric": {"name": "hits"}, "timestamp": now, "windowSeconds": 60,
                        "value": hits}]})
            } else if path == format!("{external}queue") {
                let items: Vec<Value> = queue
                    .iter()
                    .map(|v| json!({"metricName": "queue", "metricLabels": {"queue": "jobs"},
                        "timestamp": now, "value": v}))
                    .collect();
                json!({"kind": "ExternalMetricValueList",
                    "apiVersion": "external.metrics.k8s.io/v1beta1", "metadata": {}, "items": items})
            } else {
                return (
                    axum::http::StatusCode::NOT_FOUND,
                    axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": format!("no metric at {path}"), "reason": "NotFound", "code": 404})),
                );
            };
            (axum::http::StatusCode::OK, axum::Json(body))
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (task, port, ca.cert_pem().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_scales_on_pods_object_and_external_metrics_of_an_aggregated_adapter() {
    use base64::Engine as _;
    let (c, mut tasks) = cluster(Arc::new(Mutex::new(None))).await;
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(Mutex::new(AdapterState {
        rps: "5".into(),
        hits: "100".into(),
        queue: vec!["20".into(), "40".into()],
        queries: Vec::new(),
    }));
    let (adapter, port, ca_pem) = metrics_adapter(&c, state.clone(), dir.path()).await;
    tasks.push(adapter);
    // The adapter's Service, its endpoint (the test's server on loopback, as the endpoints
    // controller would list a ready pod), and the two APIServices handing it the groups.
    let apply = |doc: Value| {
        let c = &c;
        async move {
            must(
                kubectl(c, &["apply", "-f", "-"], Some(&doc.to_string())).await,
                "apply",
            )
        }
    };
    apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "adapter", "namespace": c.namespace},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 6443}]}}))
    .await;
    apply(json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "adapter", "namespace": c.namespace},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": port}]}]}))
    .await;
    let ca = base64::engine::general_purpose::STANDARD.encode(&ca_pem);
    for (group, version) in [
        ("custom.metrics.k8s.io", "v1beta2"),
        ("external.metrics.k8s.io", "v1beta1"),
    ] {
        apply(
            json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": format!("{version}.{group}")},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": 100,
                "versionPriority": 100, "caBundle": ca,
                "service": {"namespace": c.namespace, "name": "adapter"}}}),
        )
        .await;
    }
    let listed = must(
        kubectl(
            &c,
            &["get", "apiservice", "v1beta1.external.metrics.k8s.io"],
            None,
        )
        .await,
        "get apiservice",
    );
    assert!(
        listed.contains(&format!("{}/adapter", c.namespace)),
        "{listed}"
    );
    // A client reads the external metric through the API server.
    let raw = eventually(20, "the external metrics API through the proxy", || async {
        let o = kubectl(
            &c,
            &[
                "get",
                "--raw",
                &format!(
                    "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/queue?labelSelector=queue%3Djobs",
                    c.namespace
                ),
            ],
            None,
        )
        .await;
        o.ok.then_some(o.stdout)
    })
    .await;
    let list: Value = serde_json::from_str(&raw).expect("json");
    assert_eq!(list["kind"], "ExternalMetricValueList");
    assert_eq!(list["items"][1]["value"], "40");

    deployment(&c, "web", 2).await;
    let h: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 10,
            "metrics": [
                {"type": "External", "external": {"metric": {"name": "queue",
                    "selector": {"matchLabels": {"queue": "jobs"}}},
                    "target": {"type": "AverageValue", "averageValue": "30"}}},
                {"type": "Object", "object": {"metric": {"name": "hits"},
                    "describedObject": {"apiVersion": "v1", "kind": "Service", "name": "adapter"},
                    "target": {"type": "Value", "value": "100"}}},
                {"type": "Pods", "pods": {"metric": {"name": "rps"},
                    "target": {"type": "AverageValue", "averageValue": "10"}}}],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Percent", "value": 1000, "periodSeconds": 1}]},
                "scaleDown": {"stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 1}]}}}}))
    .unwrap();
    Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), &c.namespace)
        .create(&PostParams::default(), &h)
        .await
        .expect("create hpa");
    // queue 60 over 2 pods at 30 each, hits at 100, rps 5 of 10: two replicas hold.
    let shown = eventually_or(
        60,
        "the targets of the three metrics",
        || async {
            let t = targets(&c, "web").await;
            (t == "30/30 (avg), 100/100 + 1 more...").then_some(t)
        },
        String::new,
    )
    .await;
    assert_eq!(shown, "30/30 (avg), 100/100 + 1 more...");
    let h = hpa(&c, "web").await;
    assert_eq!(
        h["status"]["currentMetrics"][2]["pods"]["current"]["averageValue"],
        "5"
    );
    assert_eq!(replicas(&c, "web").await, 2);

    // External: 240 in the queue at 30 per pod asks for 8.
    state.lock().unwrap().queue = vec!["200".into(), "40".into()];
    eventually(60, "8 replicas for the queue", || async {
        (replicas(&c, "web").await == 8).then_some(())
    })
    .await;
    eventually(30, "the queue's average over 8 pods", || async {
        (targets(&c, "web").await == "30/30 (avg), 100/100 + 1 more...").then_some(())
    })
    .await;
    // Object: 300 hits against 100 scales the 8 ready pods threefold, up to the max.
    state.lock().unwrap().hits = "300".into();
    eventually(60, "10 replicas for the hits", || async {
        (replicas(&c, "web").await == 10).then_some(())
    })
    .await;
    // Everything low: down to 1; then Pods: 30 rps against 10 per pod asks for 3.
    {
        let mut s = state.lock().unwrap();
        s.hits = "10".into();
        s.queue = vec!["0".into()];
        s.rps = "1".into();
    }
    eventually(60, "1 replica when idle", || async {
        (replicas(&c, "web").await == 1).then_some(())
    })
    .await;
    state.lock().unwrap().rps = "30".into();
    eventually(60, "3 replicas for the pods' rps", || async {
        (replicas(&c, "web").await == 3).then_some(())
    })
    .await;
    // The selectors went to the adapter: the scale target's for the pods, the metric's
    // own for the external metric.
    let queries = state.lock().unwrap().queries.clone();
    assert!(
        queries
            .iter()
            .any(|q| q.ends_with("/pods/*/rps?labelSelector=app%3Dweb")),
        "{queries:?}"
    );
    assert!(
        queries
            .iter()
            .any(|q| q.ends_with("/queue?labelSelector=queue%3Djobs")),
        "{queries:?}"
    );
    for t in tasks {
        t.abort();
    }
}
