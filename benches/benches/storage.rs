//! Persistent storage start-up on `kcored up`: 10 StatefulSet pods
//! (`podManagementPolicy: Parallel`), each with a new claim on the default `local-path`
//! class (WaitForFirstConsumer: scheduled, provisioned, bound, mounted), from applying
//! the set to every pod Running; p50 / p99 over 5 rounds, against the same pods with an
//! `emptyDir` in the same run (rounds interleaved, so both see the same machine).
//!
//! It also prints where the time goes: the median time from the apply to each hop a pod
//! passes (its creation, the scheduler's `selected-node` on its claim, the provisioner's
//! volume, the claim Bound, the pod bound to the node, Running), each taken from the
//! first watch event that showed it.
//!
//! Run it with `benches/storage.sh`, which builds the binaries and images and runs this
//! inside a network namespace of its own (see `cluster/mod.rs`).

mod cluster;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cluster::{ms, percentile, Daemon};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};

const PODS: usize = 10;
const ROUNDS: usize = 5;
const TIMEOUT: Duration = Duration::from_secs(180);

/// The moments one pod passes on its way from apply to Running, each the first watch
/// event that showed it (the steps of `WaitForFirstConsumer` only with claims): the
/// trace of where the time goes, one watch event per hop.
#[derive(Debug, Default, Clone, Copy)]
struct Trace {
    /// The pod exists (the StatefulSet controller made it).
    created: Option<Instant>,
    /// The scheduler chose the claim's node (`volume.kubernetes.io/selected-node`).
    selected: Option<Instant>,
    /// The provisioner made the claim's volume.
    provisioned: Option<Instant>,
    /// The PV controller bound the claim (phase Bound).
    claim_bound: Option<Instant>,
    /// The scheduler bound the pod (`spec.nodeName`).
    scheduled: Option<Instant>,
    /// The node reports the pod Running.
    running: Option<Instant>,
}

/// Reads one hop's time from a [`Trace`].
type Hop = fn(&Trace) -> Option<Instant>;

/// The hops of [`Trace`], with their names, in order.
const HOPS: [(&str, Hop); 6] = [
    ("pod created", |t| t.created),
    ("claim selected-node", |t| t.selected),
    ("volume provisioned", |t| t.provisioned),
    ("claim Bound", |t| t.claim_bound),
    ("pod bound to node", |t| t.scheduled),
    ("Running", |t| t.running),
];

/// A watch event of one of the kinds a round follows (one at a time, so the size of
/// the largest variant costs nothing worth a box).
#[allow(clippy::large_enum_variant)]
enum Seen {
    Pod(WatchEvent<Pod>),
    Claim(WatchEvent<PersistentVolumeClaim>),
    Volume(WatchEvent<PersistentVolume>),
}

/// The ordinal-suffixed pod a claim `data-<pod>` or a volume's claim belongs to.
fn pod_of_claim(claim: &str) -> Option<&str> {
    claim.strip_prefix("data-")
}

/// Applies a StatefulSet of [`PODS`] pods, with new claims or with an emptyDir, and
/// returns each pod's [`Trace`] (relative to the apply, its `running` set); then deletes
/// the set, its pods and (with `whenDeleted: Delete`) its claims and their volumes, and
/// waits until all are gone.
async fn round(client: &kube::Client, name: &str, claims: bool) -> (Instant, Vec<Trace>) {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let label = format!("app={name}");
    let wp = WatchParams::default().labels(&label);
    let pod_events = pods
        .watch(&wp, "0")
        .await
        .unwrap()
        .map(|e| e.map(Seen::Pod));
    let claim_events = claims_api
        .watch(&wp, "0")
        .await
        .unwrap()
        .map(|e| e.map(Seen::Claim));
    let volume_events = volumes
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .map(|e| e.map(Seen::Volume));
    let mut events = futures::stream::select_all([
        pod_events.boxed(),
        claim_events.boxed(),
        volume_events.boxed(),
    ]);
    let mut spec = serde_json::json!({
        "replicas": PODS,
        "serviceName": name,
        "podManagementPolicy": "Parallel",
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"},
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [{
                    "name": "c",
                    "image": "kcore.local/demo:v1",
                    "imagePullPolicy": "Never",
                    "args": ["web", "0.0.0.0:8080"],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }],
            },
        },
    });
    if claims {
        // no class named: the default one, local-path
        spec["volumeClaimTemplates"] = serde_json::json!([{
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
        }]);
    } else {
        spec["template"]["spec"]["volumes"] = serde_json::json!([{"name": "data", "emptyDir": {}}]);
    }
    let set: StatefulSet =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": spec}))
            .unwrap();
    let t0 = Instant::now();
    sets.create(&PostParams::default(), &set).await.unwrap();
    let mut traces: HashMap<String, Trace> = HashMap::new();
    let prefix = format!("{name}-");
    let running = |t: &HashMap<String, Trace>| t.values().filter(|t| t.running.is_some()).count();
    while running(&traces) < PODS {
        let ev = tokio::time::timeout(TIMEOUT, events.next())
            .await
            .unwrap_or_else(|_| panic!("{name}: pods did not start within {TIMEOUT:?}"))
            .expect("watch ended")
            .unwrap();
        let now = Instant::now();
        let mark = |slot: &mut Option<Instant>| {
            slot.get_or_insert(now);
        };
        match ev {
            Seen::Pod(WatchEvent::Added(p) | WatchEvent::Modified(p)) => {
                let t = traces.entry(p.metadata.name.clone().unwrap()).or_default();
                mark(&mut t.created);
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    mark(&mut t.scheduled);
                }
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    mark(&mut t.running);
                }
            }
            Seen::Claim(WatchEvent::Added(c) | WatchEvent::Modified(c)) => {
                let claim = c.metadata.name.clone().unwrap();
                let Some(pod) = pod_of_claim(&claim) else {
                    continue;
                };
                let t = traces.entry(pod.to_owned()).or_default();
                let selected = c
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("volume.kubernetes.io/selected-node"));
                if selected {
                    mark(&mut t.selected);
                }
                if c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") {
                    mark(&mut t.claim_bound);
                }
            }
            Seen::Volume(WatchEvent::Added(v)) => {
                let claim = v
                    .spec
                    .and_then(|s| s.claim_ref)
                    .and_then(|r| r.name)
                    .unwrap_or_default();
                if let Some(pod) = pod_of_claim(&claim).filter(|p| p.starts_with(&prefix)) {
                    mark(&mut traces.entry(pod.to_owned()).or_default().provisioned);
                }
            }
            _ => {}
        }
    }
    drop(events);

    sets.delete(name, &DeleteParams::background())
        .await
        .unwrap();
    let lp = ListParams::default().labels(&label);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = pods.list(&lp).await.unwrap().items.len()
            + claims_api.list(&lp).await.unwrap().items.len()
            + volumes
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {left} pods, claims and volumes were not removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (
        t0,
        traces
            .into_values()
            .filter(|t| t.running.is_some())
            .collect(),
    )
}

/// Every pod's apply → Running latency, and the median time from the apply to each hop
/// of [`HOPS`] that the pods passed.
#[derive(Default)]
struct Rounds {
    latencies: Vec<Duration>,
    hops: Vec<Vec<Duration>>,
}

impl Rounds {
    fn add(&mut self, (t0, traces): (Instant, Vec<Trace>)) {
        self.hops.resize(HOPS.len(), Vec::new());
        for t in traces {
            for (i, (_, at)) in HOPS.iter().enumerate() {
                if let Some(at) = at(&t) {
                    self.hops[i].push(at - t0);
                }
            }
            self.latencies.push(t.running.expect("running") - t0);
        }
    }

    /// The medians of the hops, as `name p50` pairs.
    fn trace(&mut self) -> String {
        let mut out = Vec::new();
        for (i, (hop, _)) in HOPS.iter().enumerate() {
            let all = &mut self.hops[i];
            if all.is_empty() {
                continue;
            }
            all.sort();
            out.push(format!("{hop} {:.0}", ms(percentile(all, 0.5))));
        }
        out.join(", ")
    }
}

fn report(what: &str, all: &mut [Duration]) -> Duration {
    all.sort();
    let p99 = percentile(all, 0.99);
    println!(
        "{PODS} StatefulSet pods at once, {what} ({ROUNDS} rounds): p50 {:.0} ms, p99 {:.0} ms",
        ms(percentile(all, 0.5)),
        ms(p99),
    );
    p99
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // nothing for `cargo bench -- --list`
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let daemon = Daemon::start("bench").await;
        println!("kcored up → node Ready: {:.0} ms", ms(daemon.up));
        let c = &daemon.client;
        // a first set of each kind warms the caches and the image; not counted
        round(c, "warm-claims", true).await;
        round(c, "warm-empty", false).await;
        let (mut with_claims, mut with_empty_dir) = (Rounds::default(), Rounds::default());
        for r in 0..ROUNDS {
            with_claims.add(round(c, &format!("claims-{r}"), true).await);
            with_empty_dir.add(round(c, &format!("empty-{r}"), false).await);
        }
        let claims = report(
            "each with a new local-path claim",
            &mut with_claims.latencies,
        );
        println!("  p50 ms from apply to each hop: {}", with_claims.trace());
        let empty = report(
            "each with an emptyDir (anchor)",
            &mut with_empty_dir.latencies,
        );
        println!(
            "  p50 ms from apply to each hop: {}",
            with_empty_dir.trace()
        );
        println!(
            "p99 with claims / p99 with emptyDir: {:.2} (goal: p99 with claims <= 500 ms)",
            claims.as_secs_f64() / empty.as_secs_f64()
        );
    });
}
