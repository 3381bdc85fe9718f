//! Custom resource creates against ConfigMap creates, in the same run: 64 concurrent
//! clients through the in-process API of a running server (whose CRD controller serves
//! the custom resource), in alternating slices (paired rounds); prints each round's rates,
//! p50/p99 and the median ratio (goal: custom resources ≥ 0.8× ConfigMaps). The custom
//! resource carries a structural schema (defaulting, pruning, validation on every write).
//!
//! `cargo bench -p kcore-benches --bench crd`
//! Environment: `KCORE_BENCH_SECS` (per slice, default 2), `KCORE_BENCH_ROUNDS` (default 5),
//! `KCORE_BENCH_CLIENTS` (default 64).

mod common;
use common::env_num;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use kcore_apiserver::{Api, ApiServer, WriteOptions};
use serde_json::{json, Value};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const GROUP: &str = "bench.kcore.test";

fn crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{GROUP}")},
        "spec": {"group": GROUP, "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["color"], "properties": {
                        "color": {"type": "string", "enum": ["red", "blue"]},
                        "size": {"type": "integer", "default": 1},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}}}]}})
}

fn widget(name: &str) -> Value {
    json!({"apiVersion": format!("{GROUP}/v1"), "kind": "Widget",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"color": "red", "labels": {"a": "b", "c": "d"}}})
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "data": {"color": "red", "a": "b", "c": "d"}})
}

struct Cell {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// Creates from `clients` tasks for `secs` seconds; `what(i)` is (apiVersion, plural, object).
async fn creates(
    api: &Api,
    clients: usize,
    secs: u64,
    what: fn(u64) -> (String, &'static str, Value),
) -> Cell {
    // Names stay unique across slices and rounds.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let (av, plural, obj) = what(NEXT.fetch_add(1, Ordering::Relaxed));
                let t = Instant::now();
                api.create_value(&av, plural, Some("default"), obj, &WriteOptions::default())
                    .await
                    .expect("create");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("bench task"));
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Cell {
        rate: all.len() as f64 / secs,
        p50: pct(0.5),
        p99: pct(0.99),
    }
}

fn cr(i: u64) -> (String, &'static str, Value) {
    (format!("{GROUP}/v1"), "widgets", widget(&format!("w-{i}")))
}

fn cm(i: u64) -> (String, &'static str, Value) {
    ("v1".into(), "configmaps", configmap(&format!("cm-{i}")))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (api, _running) = rt.block_on(async {
        let server = ApiServer::builder()
            .data_dir(dir.path().join("data"))
            .listen("127.0.0.1:0".parse().expect("addr"))
            .insecure_http(true)
            .build()
            .await
            .expect("server");
        let running = server.spawn();
        let api = running.api().clone();
        api.create_value(
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            None,
            crd(),
            &WriteOptions::default(),
        )
        .await
        .expect("create CRD");
        let deadline = Instant::now() + Duration::from_secs(30);
        while api
            .list_value(&format!("{GROUP}/v1"), "widgets", None, &Default::default())
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the CRD was not established");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (api, running)
    });

    let secs = env_num("KCORE_BENCH_SECS", 2);
    let rounds = env_num("KCORE_BENCH_ROUNDS", 5);
    let clients = env_num("KCORE_BENCH_CLIENTS", 64) as usize;
    println!(
        "| round | ConfigMap/s | p50 ms | p99 ms | custom resource/s | p50 ms | p99 ms | ratio |"
    );
    println!(
        "|------:|------------:|-------:|-------:|------------------:|-------:|-------:|------:|"
    );
    let mut ratios = Vec::new();
    for r in 0..rounds {
        let (a, b) = rt.block_on(async {
            let a = creates(&api, clients, secs, cm).await;
            let b = creates(&api, clients, secs, cr).await;
            (a, b)
        });
        let ratio = b.rate / a.rate;
        ratios.push(ratio);
        println!(
            "| {r:>5} | {:>11.0} | {:>6.2} | {:>6.2} | {:>17.0} | {:>6.2} | {:>6.2} | {ratio:>5.2} |",
            a.rate,
            a.p50.as_secs_f64() * 1e3,
            a.p99.as_secs_f64() * 1e3,
            b.rate,
            b.p50.as_secs_f64() * 1e3,
            b.p99.as_secs_f64() * 1e3,
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "custom resource / ConfigMap create throughput at {clients} clients: median ratio {:.2} (goal >= 0.80)",
        ratios[ratios.len() / 2]
    );

    // Single-client latency of a custom resource create, with criterion.
    let mut c = Criterion::default().configure_from_args().sample_size(20);
    let n = AtomicU64::new(0);
    c.bench_function("apiserver/custom_resource_create", |b| {
        b.iter(|| {
            let (av, plural, obj) = cr(1_000_000_000 + n.fetch_add(1, Ordering::Relaxed));
            rt.block_on(api.create_value(
                &av,
                plural,
                Some("default"),
                obj,
                &WriteOptions::default(),
            ))
            .expect("create")
        })
    });
    c.final_summary();
}
