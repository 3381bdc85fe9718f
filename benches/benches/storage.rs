//! Persistent storage start-up on `kcored up`: 10 StatefulSet pods
//! (`podManagementPolicy: Parallel`), each with a new claim on the default `local-path`
//! class (WaitForFirstConsumer: scheduled, provisioned, bound, mounted), from applying
//! the set to every pod Running; p50 / p99 over 5 rounds, against the same pods with an
//! `emptyDir` in the same run (rounds interleaved, so both see the same machine).
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

/// Applies a StatefulSet of [`PODS`] pods, with new claims or with an emptyDir, and
/// returns each pod's apply → Running latency; then deletes the set, its pods and (with
/// `whenDeleted: Delete`) its claims and their volumes, and waits until all are gone.
async fn round(client: &kube::Client, name: &str, claims: bool) -> Vec<Duration> {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let label = format!("app={name}");
    let mut events = pods
        .watch(&WatchParams::default().labels(&label), "0")
        .await
        .unwrap()
        .boxed();
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
    let mut running: HashMap<String, Instant> = HashMap::new();
    while running.len() < PODS {
        let ev = tokio::time::timeout(TIMEOUT, events.next())
            .await
            .unwrap_or_else(|_| panic!("{name}: pods did not start within {TIMEOUT:?}"))
            .expect("watch ended")
            .unwrap();
        if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev {
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                running
                    .entry(p.metadata.name.clone().unwrap())
                    .or_insert_with(Instant::now);
            }
        }
    }
    let mut lat: Vec<Duration> = running.values().map(|t| *t - t0).collect();
    lat.sort();

    sets.delete(name, &DeleteParams::background())
        .await
        .unwrap();
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
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
    lat
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
        let (mut with_claims, mut with_empty_dir) = (Vec::new(), Vec::new());
        for r in 0..ROUNDS {
            with_claims.extend(round(c, &format!("claims-{r}"), true).await);
            with_empty_dir.extend(round(c, &format!("empty-{r}"), false).await);
        }
        let claims = report("each with a new local-path claim", &mut with_claims);
        let empty = report("each with an emptyDir (anchor)", &mut with_empty_dir);
        println!(
            "p99 with claims / p99 with emptyDir: {:.2} (goal: p99 with claims <= 500 ms)",
            claims.as_secs_f64() / empty.as_secs_f64()
        );
    });
}
