//! kcore-apiserver: what admission webhooks add to a write. ConfigMap creates through
//! one mutating and one validating webhook (the test webhook server of
//! `crates/apiserver/tests/support/webhook.rs`: Rust, HTTPS with keep-alive on loopback)
//! against the same creates on a server without webhooks, in the same run. The two are
//! measured interleaved (one create each, in turn) so that disk and scheduler noise hits
//! both alike; it prints p50/p99 of each and the p50 added latency (goal: ≤ 2 ms).
//!
//! `cargo bench -p kcore-benches --bench webhooks`
//! Environment: `KCORE_BENCH_CREATES` (per side, default 2000).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use kcore_apiserver::{Api, RedbStorage, WriteOptions};
use serde_json::{json, Value};

#[path = "../../crates/apiserver/tests/support/webhook.rs"]
mod webhook;

/// The allocator kcored uses, so that the figures are what the daemon does.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ADMISSION: &str = "admissionregistration.k8s.io/v1";

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
        "data": {"key": "value"}})
}

async fn api_in(dir: &std::path::Path) -> Api {
    let api = Api::new(Arc::new(RedbStorage::open(dir).expect("open")));
    api.bootstrap().await.expect("bootstrap");
    api
}

async fn with_webhooks(api: &Api, s: &webhook::WebhookServer) {
    for (plural, kind, path) in [
        (
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            "/mutate",
        ),
        (
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            "/validate",
        ),
    ] {
        let hook = webhook::hook(
            &format!("{}.bench.kcore.dev", &path[1..]),
            json!({"url": s.url(path), "caBundle": s.ca_bundle()}),
            &["CREATE"],
            &["configmaps"],
        );
        let obj = json!({"apiVersion": ADMISSION, "kind": kind, "metadata": {"name": "bench"},
            "webhooks": [hook]});
        api.create_value(ADMISSION, plural, None, obj, &WriteOptions::default())
            .await
            .expect("webhook configuration");
    }
}

async fn create(api: &Api, name: &str) -> Duration {
    let t = Instant::now();
    let out = api
        .create_value(
            "v1",
            "configmaps",
            Some("default"),
            configmap(name),
            &WriteOptions::default(),
        )
        .await
        .expect("create");
    let took = t.elapsed();
    assert!(out["metadata"]["name"] == name);
    took
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (d1, d2) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (plain, hooked, server) = rt.block_on(async {
        let server = webhook::start(&[]).await;
        let plain = api_in(d1.path()).await;
        let hooked = api_in(d2.path()).await;
        with_webhooks(&hooked, &server).await;
        // The first call pays the TCP and TLS handshakes; the rest reuse the connection.
        create(&hooked, "warm").await;
        assert!(server.count("CREATE") >= 2, "the webhooks are called");
        (plain, hooked, server)
    });

    let mut c = Criterion::default().configure_from_args().sample_size(20);
    let counter = AtomicU64::new(0);
    for (name, api) in [("without_webhooks", &plain), ("with_webhooks", &hooked)] {
        c.bench_function(&format!("apiserver/configmap_create/{name}"), |b| {
            b.iter(|| {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                rt.block_on(create(api, &format!("c-{n}")))
            })
        });
    }
    c.final_summary();

    let n = std::env::var("KCORE_BENCH_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000u64);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for i in 0..n {
            a.push(create(&plain, &format!("p-{i}")).await);
            b.push(create(&hooked, &format!("p-{i}")).await);
        }
    });
    a.sort();
    b.sort();
    println!("\n| ConfigMap create ({n} each, interleaved) | p50 ms | p99 ms |");
    println!("|------------------------------------------|--------|--------|");
    println!(
        "| without webhooks                         | {:6.3} | {:6.3} |",
        pct(&a, 0.5),
        pct(&a, 0.99)
    );
    println!(
        "| 1 mutating + 1 validating webhook        | {:6.3} | {:6.3} |",
        pct(&b, 0.5),
        pct(&b, 0.99)
    );
    println!(
        "\nadded at p50: {:.3} ms (goal ≤ 2 ms); webhook calls: {}",
        pct(&b, 0.5) - pct(&a, 0.5),
        server.reviews.lock().expect("lock").len()
    );
}
