//! The binding loop against an in-process kcore-apiserver over HTTP with a
//! kube-rs client: binds pods, records FailedScheduling with reasons,
//! and re-queues on node events.
#![cfg(feature = "client")]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kcore_apiserver::{ApiServer, RunningServer};
use kcore_scheduler::{Framework, SchedulerLoop};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::oneshot;

static COUNTER: AtomicU32 = AtomicU32::new(0);

struct Cluster {
    client: Client,
    ns: String,
    _server: RunningServer,
    _dir: tempfile::TempDir,
}

async fn start() -> Cluster {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-scheduler-{}-{n}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let server = ApiServer::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0".parse().expect("addr"))
        .insecure_http(true)
        .build()
        .await
        .expect("build server")
        .spawn();
    let client =
        Client::try_from(kube::Config::new(server.url().parse().expect("url"))).expect("client");
    let ns = format!("sched-{}-{n}", std::process::id());
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .expect("namespace");
    Cluster {
        client,
        ns,
        _server: server,
        _dir: dir,
    }
}

async fn add_node(c: &Cluster, name: &str, cpu: &str, taints: Value) {
    let status = json!({"allocatable": {"cpu": cpu, "memory": "64Gi", "pods": "110"},
        "capacity": {"cpu": cpu, "memory": "64Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True"}]});
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"taints": taints},
        "status": status
    }))
    .unwrap();
    let api = Api::<Node>::all(c.client.clone());
    let created = api
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    if created
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .is_none()
    {
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .expect("node status");
    }
}

async fn add_pod(c: &Cluster, name: &str, cpu: &str, scheduler: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"schedulerName": scheduler, "containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(c.client.clone(), &c.ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
}

/// Polls `f` every 50ms for up to 30s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..600 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn node_of(c: &Cluster, pod: &str) -> Option<String> {
    Api::<Pod>::namespaced(c.client.clone(), &c.ns)
        .get(pod)
        .await
        .ok()
        .and_then(|p| p.spec.and_then(|s| s.node_name))
}

fn spawn_loop(c: &Cluster, fw: Framework) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let l = SchedulerLoop::new(c.client.clone(), fw)
        .backoff(Duration::from_millis(100), Duration::from_millis(500));
    let h = tokio::spawn(async move {
        l.run(async {
            let _ = rx.await;
        })
        .await
        .expect("scheduler loop");
    });
    (tx, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_pods_and_reports_failed_scheduling() {
    let c = start().await;
    add_node(&c, &format!("{}-small", c.ns), "2", json!([])).await;
    add_node(
        &c,
        &format!("{}-infra", c.ns),
        "64",
        json!([{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]),
    )
    .await;
    let (stop, handle) = spawn_loop(&c, Framework::with_defaults());

    add_pod(&c, "fits", "1", "default-scheduler").await;
    let node = eventually("pod bound", || node_of(&c, "fits")).await;
    assert_eq!(node, format!("{}-small", c.ns));

    // A pod for another scheduler is left alone.
    add_pod(&c, "other", "1", "someone-else").await;

    add_pod(&c, "big", "16", "default-scheduler").await;
    let events = Api::<Event>::namespaced(c.client.clone(), &c.ns);
    let ev = eventually("FailedScheduling event", || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.involved_object.name.as_deref() == Some("big"))
    })
    .await;
    assert_eq!(ev.reason.as_deref(), Some("FailedScheduling"));
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(
        ev.message.as_deref(),
        Some(
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: infra}. \
             preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, \
             1 Preemption is not helpful for scheduling."
        )
    );
    assert_eq!(node_of(&c, "big").await, None);
    let pods = Api::<Pod>::namespaced(c.client.clone(), &c.ns);
    let cond = eventually("PodScheduled=False", || async {
        pods.get("big")
            .await
            .ok()?
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    })
    .await;
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert!(cond
        .message
        .unwrap_or_default()
        .contains("1 Insufficient cpu"));

    // A new node that fits moves the pod back from unschedulable.
    add_node(&c, &format!("{}-large", c.ns), "32", json!([])).await;
    let node = eventually("big pod bound after node added", || node_of(&c, "big")).await;
    assert_eq!(node, format!("{}-large", c.ns));
    assert_eq!(node_of(&c, "other").await, None);

    stop.send(()).unwrap();
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_evicts_a_lower_priority_pod_and_binds_the_preemptor() {
    let c = start().await;
    let node = format!("{}-only", c.ns);
    add_node(&c, &node, "2", json!([])).await;
    let (stop, handle) = spawn_loop(&c, Framework::with_defaults());
    let pods = Api::<Pod>::namespaced(c.client.clone(), &c.ns);
    // Priorities come from PriorityClasses through the Priority admission.
    let classes = Api::<PriorityClass>::all(c.client.clone());
    for (suffix, value) in [("low", 1), ("high", 100)] {
        let pc: PriorityClass = serde_json::from_value(
            json!({"metadata": {"name": format!("{}-{suffix}", c.ns)}, "value": value}),
        )
        .unwrap();
        classes
            .create(&PostParams::default(), &pc)
            .await
            .expect("create class");
    }
    let create = |name: &'static str| {
        let pods = pods.clone();
        let class = format!("{}-{name}", c.ns);
        async move {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"priorityClassName": class, "containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": "2"}}}]}
            }))
            .unwrap();
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("create pod")
        }
    };
    let low = create("low").await;
    assert_eq!(low.spec.as_ref().unwrap().priority, Some(1));
    assert_eq!(eventually("low bound", || node_of(&c, "low")).await, node);
    let high = create("high").await;
    assert_eq!(high.spec.as_ref().unwrap().priority, Some(100));
    // The victim is marked and deleted (gracefully); act as the kubelet and finish it.
    let victim = eventually("victim evicted", || async {
        pods.get_opt("low")
            .await
            .ok()?
            .filter(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;
    let cond = victim
        .status
        .and_then(|s| s.conditions)
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget")
        .expect("DisruptionTarget condition");
    assert_eq!(cond.reason.as_deref(), Some("PreemptionByScheduler"));
    assert_eq!(
        cond.message.as_deref(),
        Some("default-scheduler: preempting to accommodate a higher priority pod")
    );
    let nominated = eventually("nominatedNodeName", || async {
        pods.get("high").await.ok()?.status?.nominated_node_name
    })
    .await;
    assert_eq!(nominated, node);
    let events = Api::<Event>::namespaced(c.client.clone(), &c.ns);
    let ev = eventually("Preempted event", || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Preempted"))
    })
    .await;
    assert_eq!(ev.involved_object.name.as_deref(), Some("low"));
    assert_eq!(ev.type_.as_deref(), Some("Normal"));
    assert_eq!(
        ev.message.unwrap(),
        format!(
            "Preempted by pod {} on node {node}",
            high.metadata.uid.unwrap()
        )
    );
    pods.delete("low", &kube::api::DeleteParams::default().grace_period(0))
        .await
        .expect("finish the victim");
    assert_eq!(
        eventually("preemptor bound", || node_of(&c, "high")).await,
        node
    );
    for suffix in ["low", "high"] {
        let _ = classes
            .delete(&format!("{}-{suffix}", c.ns), &Default::default())
            .await;
    }
    stop.send(()).unwrap();
    handle.await.unwrap();
}

/// VolumeBinding hop by hop, each a watch event: a pod whose claim does not exist yet
/// is retried when the claim appears (a PersistentVolumeClaim event; the unschedulable
/// pod is otherwise parked for five minutes), its `WaitForFirstConsumer` claim is marked
/// with the chosen node, and the pod is bound only once the claim is bound (here by the
/// test, in the PV controller's place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_is_retried_when_its_claim_appears_and_bound_once_the_claim_is() {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    use k8s_openapi::api::storage::v1::StorageClass;
    let c = start().await;
    let node = format!("{}-n", c.ns);
    add_node(&c, &node, "4", json!([])).await;
    let class = format!("{}-wffc", c.ns);
    let classes = Api::<StorageClass>::all(c.client.clone());
    classes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": class},
                "provisioner": "example.com/test", "volumeBindingMode": "WaitForFirstConsumer"}))
            .unwrap(),
        )
        .await
        .expect("class");
    let (stop, handle) = spawn_loop(&c, Framework::with_defaults());

    let pods = Api::<Pod>::namespaced(c.client.clone(), &c.ns);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "db"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
        }))
        .unwrap(),
    )
    .await
    .expect("pod");
    let events = Api::<Event>::namespaced(c.client.clone(), &c.ns);
    let ev = eventually("FailedScheduling for the missing claim", || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedScheduling"))
    })
    .await;
    assert!(
        ev.message
            .as_deref()
            .is_some_and(|m| m.contains("persistentvolumeclaim \"data\" not found")),
        "{:?}",
        ev.message
    );

    let claims = Api::<PersistentVolumeClaim>::namespaced(c.client.clone(), &c.ns);
    claims
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                    "resources": {"requests": {"storage": "1Mi"}}}}))
            .unwrap(),
        )
        .await
        .expect("claim");
    let selected = eventually("the claim marked with the chosen node", || async {
        claims
            .get("data")
            .await
            .ok()?
            .metadata
            .annotations?
            .get("volume.kubernetes.io/selected-node")
            .cloned()
    })
    .await;
    assert_eq!(selected, node);
    // the claim is not bound: neither is the pod
    assert_eq!(node_of(&c, "db").await, None);

    let volume = format!("{}-pv", c.ns);
    Api::<PersistentVolume>::all(c.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": volume},
                "spec": {"capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"],
                    "storageClassName": class, "hostPath": {"path": "/tmp"},
                    "claimRef": {"namespace": c.ns, "name": "data"}}}))
            .unwrap(),
        )
        .await
        .expect("volume");
    claims
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"volumeName": volume}})),
        )
        .await
        .expect("bind the claim");
    // a volume name without the Bound phase is not bound yet either
    assert_eq!(node_of(&c, "db").await, None);
    claims
        .patch_status(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await
        .expect("claim phase");
    assert_eq!(eventually("pod bound", || node_of(&c, "db")).await, node);
    let _ = Api::<PersistentVolume>::all(c.client.clone())
        .delete(&volume, &Default::default())
        .await;
    let _ = classes.delete(&class, &Default::default()).await;
    stop.send(()).unwrap();
    handle.await.unwrap();
}
