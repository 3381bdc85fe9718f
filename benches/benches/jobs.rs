//! kcore-reconcile's Job controller: 2,000 one-pod Jobs created at once against the
//! embedded kcore-apiserver (plain HTTP on loopback, kube-rs clients), their pods ended
//! `Succeeded` by a test node, measured to the last `Complete` condition: Jobs completed
//! per second (the goal is 500/s) and the controller manager's CPU per Job (it runs alone
//! on one runtime thread, so its thread CPU clock is the Job machinery's own cost).
//! In the same run, 2,000 bare pods go through the same test node, and the ratio of the
//! two rates shows what the Job machinery costs on top of a pod's own round trips.
//! It runs with kcored's allocator (jemalloc), as the other API benches do.
//!
//! `cargo bench -p kcore-benches --bench jobs`
//! Environment: `KCORE_BENCH_JOBS` (default 2000) sets both counts;
//! `KCORE_BENCH_JOB_WORKERS` the Job controller's concurrent syncs (default: the
//! manager's, 5, upstream's `--concurrent-job-syncs`), to show how far the rate is bound
//! by each sync's sequential API round trips rather than by CPU; `RUST_LOG` (e.g.
//! `kcore_reconcile=debug`) logs to stderr. The API server's data directory is under
//! `TMPDIR`.

mod common;
use common::{env_num, process_cpu, thread_cpu};

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::jiff::Timestamp;
use kcore_apiserver::ApiServer;
use kcore_reconcile::{ControllerManager, ControllerManagerConfig};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// The allocator kcored uses, so that the figures are what the daemon does (under glibc's
/// malloc, allocation and free took about 18 % of the process's CPU samples).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn client_for(url: &str) -> Client {
    Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client")
}

/// The test node: every pod that is not finished is ended `Succeeded` (exit code 0)
/// through the status subresource, at most 64 writes in flight.
async fn test_node(client: Client) {
    let all: Api<Pod> = Api::all(client.clone());
    let stream = watcher::watcher(all, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let limit = Arc::new(Semaphore::new(64));
    let mut done: HashSet<String> = HashSet::new();
    while let Some(ev) = stream.next().await {
        let p = match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            Ok(_) => continue,
            Err(e) => {
                eprintln!("test node: pod watch: {e}");
                continue;
            }
        };
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed"))
            || p.metadata.deletion_timestamp.is_some()
            || !done.insert(uid)
        {
            continue;
        }
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let permit = Arc::clone(&limit).acquire_owned().await.expect("semaphore");
        tokio::spawn(async move {
            let now = Timestamp::now().to_string();
            let patch = json!({"status": {"phase": "Succeeded", "containerStatuses": [{
                "name": "main", "image": "busybox:1.36", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 0,
                "reason": "Completed", "startedAt": now, "finishedAt": now}}}]}});
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            drop(permit);
        });
    }
}

/// Creates `n` objects from `make(i)` with 16 concurrent creators.
async fn create_all<K>(api: &Api<K>, n: usize, make: fn(usize) -> K)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    K: Send + Sync + 'static,
{
    let mut tasks = Vec::new();
    for chunk in 0..16usize {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in (chunk..n).step_by(16) {
                api.create(&PostParams::default(), &make(i))
                    .await
                    .expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("creator");
    }
}

/// Waits until `n` objects of `api` satisfy `finished`, following a watch.
async fn until_finished<K>(api: &Api<K>, n: usize, what: &str, finished: fn(&K) -> bool)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let stream = watcher::watcher(api.clone(), watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut seen: HashSet<String> = HashSet::new();
    let start = Instant::now();
    let mut last_report = Instant::now();
    while seen.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(120), stream.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: stalled at {}/{n}", seen.len()));
        if let Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) = ev {
            if finished(&o) {
                seen.insert(o.meta().name.clone().unwrap_or_default());
            }
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  … {}/{n} {what} after {:.1}s",
                seen.len(),
                start.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
}

fn job(i: usize) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": format!("j{i}")},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox:1.36"}]}}},
    }))
    .expect("job")
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("p{i}")},
        "spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox:1.36"}]},
    }))
    .expect("pod")
}

fn job_complete(j: &Job) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
}

fn pod_succeeded(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
}

/// One phase's figures.
struct Phase {
    wall: Duration,
    process_cpu: Duration,
    controller_cpu: Duration,
    requests: BTreeMap<String, u64>,
}

/// The API server's request counters (`apiserver_request_total` of `/metrics`), by
/// `verb resource code`.
async fn request_counts(client: &Client) -> BTreeMap<String, u64> {
    let req = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(req).await.expect("metrics");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, n)) = rest.split_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let key = format!("{} {} {}", label("verb"), label("resource"), label("code"));
        out.insert(key, n.trim().parse().unwrap_or(0));
    }
    out
}

/// The requests of `after` not yet in `before`, per object of the phase (`n`), biggest
/// first, as `verb resource code ×count`.
fn requests_per(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, n: usize) -> String {
    let mut rows: Vec<(u64, &String)> = after
        .iter()
        .map(|(k, v)| (v - before.get(k).copied().unwrap_or(0), k))
        .filter(|(d, k)| *d > 0 && !k.starts_with("watch") && !k.starts_with("get metrics"))
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    rows.iter()
        .map(|(d, k)| format!("{k} ×{:.2}", *d as f64 / n as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    // `RUST_LOG=kcore_reconcile=debug` shows each reconcile and its retries.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let n = usize::try_from(env_num("KCORE_BENCH_JOBS", 2000)).unwrap_or(2000);
    let default_workers = ControllerManagerConfig::default().workers;
    let workers = usize::try_from(env_num(
        "KCORE_BENCH_JOB_WORKERS",
        u64::try_from(default_workers).unwrap_or(5),
    ))
    .unwrap_or(default_workers);
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-bench-jobs-{}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let server = server_rt.block_on(async {
        ApiServer::builder()
            .data_dir(dir.path().join("data"))
            .listen("127.0.0.1:0".parse().expect("addr"))
            .insecure_http(true)
            .build()
            .await
            .expect("server")
            .spawn()
    });
    let url = server.url().to_owned();

    // The controller manager (the Job controller only) alone on one thread; it answers
    // requests for its thread's CPU clock.
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (cpu_req_tx, mut cpu_req_rx) = mpsc::unbounded_channel::<oneshot::Sender<Duration>>();
    let murl = url.clone();
    let manager = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            tokio::spawn(async move {
                while let Some(reply) = cpu_req_rx.recv().await {
                    let _ = reply.send(thread_cpu());
                }
            });
            let cfg = ControllerManagerConfig {
                controllers: std::iter::once("job".to_owned()).collect(),
                workers,
                ..ControllerManagerConfig::default()
            };
            ControllerManager::new(client_for(&murl))
                .with_config(cfg)
                .run(async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("controller manager");
        });
    });
    let controller_cpu = || async {
        let (tx, rx) = oneshot::channel();
        cpu_req_tx.send(tx).expect("manager alive");
        rx.await.expect("manager cpu")
    };

    let (jobs, pods, jobs_req0, pods_req0) = server_rt.block_on(async {
        let client = client_for(&url);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for ns in ["bench-jobs", "bench-pods"] {
            namespaces
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns"),
                )
                .await
                .expect("namespace");
        }
        let node = tokio::spawn(test_node(client_for(&url)));
        // Let the controller's and the node's informers sync before the clock starts.
        tokio::time::sleep(Duration::from_secs(1)).await;

        let job_api: Api<Job> = Api::namespaced(client.clone(), "bench-jobs");
        let req0 = request_counts(&client).await;
        let (cpu0, pcpu0, start) = (controller_cpu().await, process_cpu(), Instant::now());
        let waiter = {
            let api = job_api.clone();
            tokio::spawn(
                async move { until_finished(&api, n, "jobs complete", job_complete).await },
            )
        };
        create_all(&job_api, n, job).await;
        waiter.await.expect("jobs");
        let jobs = Phase {
            wall: start.elapsed(),
            process_cpu: process_cpu() - pcpu0,
            controller_cpu: controller_cpu().await - cpu0,
            requests: request_counts(&client).await,
        };
        let jobs_req0 = req0;

        let pod_api: Api<Pod> = Api::namespaced(client.clone(), "bench-pods");
        let req0 = request_counts(&client).await;
        let (cpu0, pcpu0, start) = (controller_cpu().await, process_cpu(), Instant::now());
        let waiter = {
            let api = pod_api.clone();
            tokio::spawn(
                async move { until_finished(&api, n, "pods succeeded", pod_succeeded).await },
            )
        };
        create_all(&pod_api, n, pod).await;
        waiter.await.expect("pods");
        let pods = Phase {
            wall: start.elapsed(),
            process_cpu: process_cpu() - pcpu0,
            controller_cpu: controller_cpu().await - cpu0,
            requests: request_counts(&client).await,
        };
        node.abort();
        (jobs, pods, jobs_req0, req0)
    });
    let _ = stop_tx.send(());
    manager.join().expect("manager thread");

    let per = |d: Duration| d.as_secs_f64() * 1e3 / n as f64;
    let rate = |p: &Phase| n as f64 / p.wall.as_secs_f64();
    println!(
        "jobs/complete {n} one-pod jobs ({workers} workers): wall {:.2} s, {:.0} jobs/s (goal 500), Job controller CPU {:.2} s = {:.3} ms/job, process CPU {:.3} ms/job",
        jobs.wall.as_secs_f64(),
        rate(&jobs),
        jobs.controller_cpu.as_secs_f64(),
        per(jobs.controller_cpu),
        per(jobs.process_cpu),
    );
    println!(
        "jobs/bare-pods {n} pods through the same test node: wall {:.2} s, {:.0} pods/s, process CPU {:.3} ms/pod (controller CPU meanwhile {:.2} s)",
        pods.wall.as_secs_f64(),
        rate(&pods),
        per(pods.process_cpu),
        pods.controller_cpu.as_secs_f64(),
    );
    println!(
        "jobs/ratio bare pods per second / jobs per second = {:.2}x; process CPU per job / per pod = {:.2}x",
        rate(&pods) / rate(&jobs),
        jobs.process_cpu.as_secs_f64() / pods.process_cpu.as_secs_f64().max(1e-9),
    );
    println!(
        "jobs/requests per job: {}",
        requests_per(&jobs_req0, &jobs.requests, n)
    );
    println!(
        "jobs/requests per bare pod: {}",
        requests_per(&pods_req0, &pods.requests, n)
    );
    server_rt.block_on(async {
        let _ = server.shutdown().await;
    });
}
