//! kcore-apiserver: pod create / get / list throughput and latency (p50, p99) at 1, 16
//! and 64 concurrent clients on the embedded backend (and on etcd with `--features etcd`,
//! with raw etcd puts in the same run as the anchor), plus watch fan-out. It runs with
//! kcored's allocator (jemalloc).
//!
//! With etcd it also runs the two in alternating one-second slices (paired rounds) and
//! prints the median ratio, which holds up when other work makes the disk's fsync latency
//! swing during the run.
//!
//! `cargo bench -p kcore-benches --bench apiserver [--features etcd]`
//! Environment: `KCORE_BENCH_SECS` (per cell, default 2), `KCORE_BENCH_ROUNDS` (paired
//! rounds, default 5), `KCORE_BENCH_WATCHERS` (default 1000) and `KCORE_BENCH_EVENTS`
//! (default 10000) for the fan-out. `KCORE_BENCH_ONLY=create` runs just the embedded pod
//! creates at 64 clients (for profiling with `perf`).

mod common;
use common::env_num;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kcore_apiserver::{Api, ListOptions, RedbStorage, Storage, WriteOptions};
use serde_json::{json, Value};

/// The allocator kcored uses, so that the figures are what the daemon does.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "ports": [{"containerPort": 80}]}]}})
}

struct Cell {
    ops: u64,
    secs: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `op(client, i)` from `clients` tasks for `secs` seconds.
async fn load<F, Fut>(clients: usize, secs: u64, op: F) -> Cell
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (op, counter) = (op.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                op(c, i).await;
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
        ops: all.len() as u64,
        secs,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

/// Pod creates through `api` from `clients` tasks for `secs` seconds, named `{tag}-{i}`.
async fn pod_creates(api: &Api, clients: usize, secs: u64, tag: String) -> Cell {
    let api = api.clone();
    load(clients, secs, move |_, i| {
        let (a, name) = (api.clone(), format!("{tag}-{i}"));
        async move {
            a.create_value(
                "v1",
                "pods",
                Some("default"),
                pod(&name),
                &WriteOptions::default(),
            )
            .await
            .expect("create pod");
        }
    })
    .await
}

fn row(what: &str, clients: usize, c: &Cell) -> f64 {
    let rate = c.ops as f64 / c.secs;
    println!(
        "| {what:<34} | {clients:>7} | {rate:>10.0} | {:>9.2} | {:>9.2} |",
        c.p50.as_secs_f64() * 1e3,
        c.p99.as_secs_f64() * 1e3
    );
    rate
}

async fn api_rows(label: &str, api: Api, secs: u64) -> Vec<(usize, f64)> {
    let mut creates = Vec::new();
    for clients in [1usize, 16, 64] {
        let c = pod_creates(&api, clients, secs, format!("{label}-{clients}")).await;
        creates.push((clients, row(&format!("{label}: pod create"), clients, &c)));
    }
    let names: Vec<String> = api
        .list_value(
            "v1",
            "pods",
            Some("default"),
            &ListOptions {
                limit: Some(1000),
                ..Default::default()
            },
        )
        .await
        .expect("list")["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let names = Arc::new(names);
    for clients in [1usize, 16, 64] {
        let (a, n) = (api.clone(), names.clone());
        let c = load(clients, secs, move |_, i| {
            let (a, name) = (a.clone(), n[i as usize % n.len()].clone());
            async move {
                a.get_value("v1", "pods", Some("default"), &name)
                    .await
                    .expect("get pod");
            }
        })
        .await;
        row(&format!("{label}: pod get"), clients, &c);
    }
    for clients in [1usize, 16] {
        let a = api.clone();
        let c = load(clients, secs, move |_, _| {
            let a = a.clone();
            async move {
                let opts = ListOptions {
                    limit: Some(100),
                    ..Default::default()
                };
                a.list_value("v1", "pods", Some("default"), &opts)
                    .await
                    .expect("list pods");
            }
        })
        .await;
        row(&format!("{label}: pod list (100/page)"), clients, &c);
    }
    creates
}

async fn raw_rows(label: &str, store: Arc<dyn Storage>, secs: u64) -> Vec<(usize, f64)> {
    let mut out = Vec::new();
    let value = serde_json::to_vec(&pod("raw")).expect("json");
    for clients in [1usize, 16, 64] {
        let (s, v) = (store.clone(), value.clone());
        let tag = format!("{label}-{clients}");
        let c = load(clients, secs, move |_, i| {
            let (s, v, key) = (s.clone(), v.clone(), format!("/raw/{tag}/{i}"));
            async move {
                s.create(&key, v).await.expect("raw create");
            }
        })
        .await;
        out.push((clients, row(&format!("{label}: raw create"), clients, &c)));
    }
    out
}

async fn watch_fanout(watchers: usize, events: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = Api::new(Arc::new(RedbStorage::open(dir.path()).expect("open")));
    api.bootstrap().await.expect("bootstrap");
    let rv = api
        .list_value("v1", "configmaps", Some("default"), &ListOptions::default())
        .await
        .expect("list")["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_owned();
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let opts = ListOptions {
            resource_version: Some(rv.clone()),
            ..Default::default()
        };
        let mut w = api
            .watch::<ConfigMap>(Some("default"), &opts)
            .await
            .expect("watch");
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while n < events {
                match tokio::time::timeout(Duration::from_secs(120), w.next()).await {
                    Ok(Some(ev)) if ev.kind == "ADDED" => n += 1,
                    Ok(Some(ev)) if ev.kind == "ERROR" => break,
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            n
        }));
    }
    let start = Instant::now();
    let writers = 16;
    let mut ws = Vec::new();
    for w in 0..writers {
        let api = api.clone();
        ws.push(tokio::spawn(async move {
            for i in (w..events).step_by(writers) {
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}")}});
                api.create_value("v1", "configmaps", Some("default"), cm, &WriteOptions::default()).await.expect("create");
            }
        }));
    }
    for w in ws {
        w.await.expect("writer");
    }
    let mut complete = 0;
    for t in tasks {
        if t.await.expect("watcher") == events {
            complete += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "\nwatch fan-out: {complete}/{watchers} watchers received all {events} events in {secs:.1} s ({:.0} deliveries/s)",
        (watchers * events) as f64 / secs
    );
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use std::process::{Child, Command, Stdio};

    pub struct Etcd {
        child: Child,
        pub endpoint: String,
        _dir: tempfile::TempDir,
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port")
    }

    pub async fn start() -> Option<Etcd> {
        let dir = tempfile::tempdir().ok()?;
        let (c, p) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{c}");
        let peer = format!("http://127.0.0.1:{p}");
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("bench={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let e = Etcd {
            child,
            endpoint,
            _dir: dir,
        };
        for _ in 0..200 {
            if let Ok(s) =
                kcore_apiserver::EtcdStorage::connect(&[e.endpoint.as_str()], "/probe").await
            {
                if s.revision().await.is_ok() {
                    return Some(e);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// The same comparison in alternating one-second slices (embedded pod creates through
    /// the Api, then raw etcd puts, and again), so that both sides see the same disk: on
    /// a shared machine fsync latency swings by 100x within seconds.
    pub async fn paired(endpoint: &str) {
        let rounds = env_num("KCORE_BENCH_ROUNDS", 5) as usize;
        let client = etcd_client::Client::connect([endpoint], None)
            .await
            .expect("connect");
        let dir = tempfile::tempdir().expect("tempdir");
        let api = Api::new(Arc::new(RedbStorage::open(dir.path()).expect("open")));
        api.bootstrap().await.expect("bootstrap");
        let value = serde_json::to_vec(&pod("raw")).expect("json");
        println!("\npaired slices (embedded pod create / raw etcd put, ops/s):");
        for clients in [16usize, 64] {
            let mut ratios = Vec::new();
            let mut worst_p99 = Duration::ZERO;
            for round in 0..rounds {
                let ours = pod_creates(&api, clients, 1, format!("paired-{clients}-{round}")).await;
                let theirs = puts(
                    &client,
                    &value,
                    clients,
                    1,
                    format!("/paired/{clients}/{round}"),
                )
                .await;
                let (o, t) = (ours.ops as f64 / ours.secs, theirs.ops as f64 / theirs.secs);
                worst_p99 = worst_p99.max(ours.p99);
                println!(
                    "  {clients:>2} clients, round {round}: {o:>7.0} / {t:>7.0} = {:.2}x (embedded p99 {:.1} ms)",
                    o / t,
                    ours.p99.as_secs_f64() * 1e3
                );
                ratios.push(o / t);
            }
            ratios.sort_by(f64::total_cmp);
            println!(
                "embedded pod create vs raw etcd put at {clients} clients, paired: median {:.2}x over {rounds} rounds (worst embedded p99 {:.1} ms)",
                ratios[ratios.len() / 2],
                worst_p99.as_secs_f64() * 1e3
            );
        }
    }

    /// Raw etcd puts of `value` from `clients` tasks for `secs` seconds, under `prefix`.
    async fn puts(
        client: &etcd_client::Client,
        value: &[u8],
        clients: usize,
        secs: u64,
        prefix: String,
    ) -> Cell {
        let (client, value) = (client.clone(), value.to_vec());
        load(clients, secs, move |_, i| {
            let (mut cl, v) = (client.clone(), value.clone());
            let key = format!("{prefix}/{i}");
            async move {
                cl.put(key, v, None).await.expect("put");
            }
        })
        .await
    }

    pub async fn raw_puts(endpoint: &str, secs: u64) -> Vec<(usize, f64)> {
        let client = etcd_client::Client::connect([endpoint], None)
            .await
            .expect("connect");
        let value = serde_json::to_vec(&pod("raw")).expect("json");
        let mut out = Vec::new();
        for clients in [1usize, 16, 64] {
            let c = puts(&client, &value, clients, secs, format!("/anchor/{clients}")).await;
            out.push((clients, row("etcd: raw put (anchor)", clients, &c)));
        }
        out
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var("KCORE_BENCH_ONLY").as_deref() == Ok("create") {
        let secs = env_num("KCORE_BENCH_SECS", 10);
        rt.block_on(async {
            let d = tempfile::tempdir().expect("tempdir");
            let api = Api::new(Arc::new(RedbStorage::open(d.path()).expect("open")));
            api.bootstrap().await.expect("bootstrap");
            let cpu0 = cpu_time();
            let c = pod_creates(&api, 64, secs, "p".into()).await;
            row("embedded: pod create", 64, &c);
            println!(
                "process CPU per create: {:.1} µs",
                (cpu_time() - cpu0).as_secs_f64() * 1e6 / c.ops as f64
            );
        });
        return;
    }
    // Single-client latency with criterion.
    let dir = tempfile::tempdir().expect("tempdir");
    let api = rt.block_on(async {
        let api = Api::new(Arc::new(RedbStorage::open(dir.path()).expect("open")));
        api.bootstrap().await.expect("bootstrap");
        api
    });
    let mut c = Criterion::default().configure_from_args().sample_size(20);
    let counter = AtomicU64::new(0);
    c.bench_function("apiserver/embedded/pod_create", |b| {
        b.iter(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            rt.block_on(api.create_value(
                "v1",
                "pods",
                Some("default"),
                pod(&format!("c-{n}")),
                &WriteOptions::default(),
            ))
            .expect("create")
        })
    });
    c.bench_function("apiserver/embedded/pod_get", |b| {
        b.iter(|| {
            rt.block_on(api.get::<Pod>(Some("default"), "c-0"))
                .expect("get")
        })
    });
    c.final_summary();

    let secs = env_num("KCORE_BENCH_SECS", 2);
    println!(
        "\n| operation                          | clients |    ops/s   |  p50 ms   |  p99 ms   |"
    );
    println!(
        "|------------------------------------|---------|------------|-----------|-----------|"
    );
    let embedded = rt.block_on(async {
        let d = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(RedbStorage::open(d.path()).expect("open"));
        let api = Api::new(store.clone());
        api.bootstrap().await.expect("bootstrap");
        raw_rows("embedded", store, secs).await;
        api_rows("embedded", api, secs).await
    });
    #[cfg(feature = "etcd")]
    rt.block_on(async {
        match etcd::start().await {
            Some(e) => {
                let anchor = etcd::raw_puts(&e.endpoint, secs).await;
                let store = Arc::new(
                    kcore_apiserver::EtcdStorage::connect(&[e.endpoint.as_str()], "/kcore")
                        .await
                        .expect("connect"),
                );
                let api = Api::new(store);
                api.bootstrap().await.expect("bootstrap");
                api_rows("etcd", api, secs).await;
                for ((clients, ours), (_, theirs)) in embedded.iter().zip(anchor.iter()) {
                    println!(
                        "embedded pod create vs raw etcd put at {clients} clients: {:.2}x",
                        ours / theirs
                    );
                }
                etcd::paired(&e.endpoint).await;
            }
            None => println!("etcd: could not start `etcd` (Debian: etcd-server); skipped"),
        }
    });
    #[cfg(not(feature = "etcd"))]
    {
        let _ = &embedded;
        println!(
            "etcd: skipped (run with --features etcd for the etcd backend and the raw-put anchor)"
        );
    }
    let watchers = env_num("KCORE_BENCH_WATCHERS", 1000) as usize;
    let events = env_num("KCORE_BENCH_EVENTS", 10_000) as usize;
    rt.block_on(watch_fanout(watchers, events));
}
