//! Kubernetes' scalability limits on one machine: simulated nodes and pods through
//! kcore's real API server, scheduler and controllers, all in this process.
//!
//! Phases, each timed:
//! 1. `KCORE_SCALE_NODES` simulated nodes (default 500; upstream's limit is 5,000)
//!    registered and Ready;
//! 2. `KCORE_SCALE_DEPLOYMENTS` Deployments (default 50) × `KCORE_SCALE_REPLICAS`
//!    replicas (default 100) created and every pod Running and available (upstream's
//!    limit is 150,000 pods: 1,500 × 100).
//!
//! It prints the wall time of each phase, the process's CPU time, its peak RSS and the
//! memory per object. Goals at full size: nodes Ready ≤ 30 s, pods Running ≤ 5 min,
//! RSS ≤ 6 GiB.
//!
//! ```text
//! KCORE_SCALE_NODES=5000 KCORE_SCALE_DEPLOYMENTS=1500 \
//!     cargo bench -p kcore-benches --bench scale
//! ```

mod common;

use std::time::{Duration, Instant};

use common::{env_num, process_cpu};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kcored::testing::Cluster;
use kube::api::{Api, ListParams, PostParams};

/// kcored's allocator, so RSS is what the daemon would show (glibc's per-thread arenas
/// hold on to far more of the API server's short-lived JSON).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A value of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Polls `count` every `every` until it reaches `want`; prints progress now and then.
async fn wait_for<F, Fut>(what: &str, want: usize, every: Duration, mut count: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let t0 = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let n = count().await;
        if n >= want {
            return t0.elapsed();
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            // with RSS and CPU, so a run stopped part-way still tells its rate and cost
            println!(
                "  … {what}: {n}/{want} after {:.1} s (RSS {:.0} MiB, peak {:.0} MiB, process CPU {:.1} s)",
                t0.elapsed().as_secs_f64(),
                mib(status_kib("VmRSS")),
                mib(status_kib("VmHWM")),
                process_cpu().as_secs_f64()
            );
            last_print = Instant::now();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1800),
            "{what}: {n}/{want} after 30 min"
        );
        tokio::time::sleep(every).await;
    }
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "c",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }]},
            },
        },
    }))
    .expect("deployment")
}

async fn run() {
    let nodes = env_num("KCORE_SCALE_NODES", 500) as usize;
    let deployments = env_num("KCORE_SCALE_DEPLOYMENTS", 50) as usize;
    let replicas = env_num("KCORE_SCALE_REPLICAS", 100) as i32;
    let pods = deployments * replicas as usize;
    println!(
        "scale: {nodes} simulated nodes, {deployments} Deployments × {replicas} = {pods} pods"
    );
    let rss0 = status_kib("VmRSS");
    let cpu0 = process_cpu();

    // phase 1: nodes registered and Ready
    let t0 = Instant::now();
    let cluster = Cluster::builder()
        .nodes(nodes)
        .start()
        .await
        .expect("cluster starts");
    let client = cluster.client();
    let node_api: Api<Node> = Api::all(client.clone());
    wait_for("nodes Ready", nodes, Duration::from_millis(500), || {
        let node_api = node_api.clone();
        async move {
            let list = node_api.list(&ListParams::default()).await.expect("nodes");
            list.items
                .iter()
                .filter(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .count()
        }
    })
    .await;
    let nodes_ready = t0.elapsed();
    let cpu1 = process_cpu();
    let rss1 = status_kib("VmRSS");
    println!(
        "nodes Ready: {:.2} s (CPU {:.1} s, RSS {:.0} MiB)",
        nodes_ready.as_secs_f64(),
        (cpu1 - cpu0).as_secs_f64(),
        mib(rss1)
    );

    // between phases: one heartbeat period of an idle cluster, to price the Lease
    // renewals (every node renews every 10 s, as the kubelet does)
    let idle = Duration::from_secs(env_num("KCORE_SCALE_IDLE_SECS", 10));
    let cpu_idle0 = process_cpu();
    tokio::time::sleep(idle).await;
    let idle_cpu = process_cpu() - cpu_idle0;
    println!(
        "idle with heartbeats: {:.0} Lease writes/s cost {:.2} CPU-s/s ({:.2} ms CPU per renewal)",
        nodes as f64 / 10.0,
        idle_cpu.as_secs_f64() / idle.as_secs_f64(),
        idle_cpu.as_secs_f64() * 1000.0 / (nodes as f64 / 10.0 * idle.as_secs_f64()).max(1.0)
    );
    let cpu1 = process_cpu();

    // phase 2: Deployments created, every pod Running and available
    let ns = "scale";
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .expect("namespace");
    let deploy_api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let t1 = Instant::now();
    futures::stream::iter(0..deployments)
        .map(|i| {
            let api = deploy_api.clone();
            async move {
                api.create(
                    &PostParams::default(),
                    &deployment(&format!("d{i}"), replicas),
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .expect("deployments created");
    let created = t1.elapsed();
    wait_for("pods available", pods, Duration::from_secs(1), || {
        let api = deploy_api.clone();
        async move {
            api.list(&ListParams::default())
                .await
                .expect("deployments")
                .items
                .iter()
                .filter_map(|d| d.status.as_ref()?.available_replicas)
                .map(|n| n as usize)
                .sum()
        }
    })
    .await;
    let pods_running = t1.elapsed();
    let cpu2 = process_cpu();
    let rss2 = status_kib("VmRSS");
    let hwm = status_kib("VmHWM");
    println!(
        "pods Running: {:.1} s ({:.1} s to create the Deployments; CPU {:.1} s)",
        pods_running.as_secs_f64(),
        created.as_secs_f64(),
        (cpu2 - cpu1).as_secs_f64()
    );
    let objects = nodes * 2 + pods + deployments * 2; // nodes + leases, pods, deployments + replicasets
    println!(
        "memory: RSS {:.0} MiB now, peak {:.0} MiB; {:.1} KiB per object over {objects} objects",
        mib(rss2),
        mib(hwm),
        (rss2.saturating_sub(rss0)) as f64 / objects as f64
    );
    println!(
        "memory per pod (growth over the pod phase, with its Deployment and ReplicaSet share): {:.1} KiB",
        (rss2.saturating_sub(rss1)) as f64 / (pods + deployments * 2) as f64
    );
    println!(
        "summary: nodes={nodes} pods={pods} nodes_ready_s={:.2} pods_running_s={:.1} cpu_s={:.1} peak_rss_mib={:.0}",
        nodes_ready.as_secs_f64(),
        pods_running.as_secs_f64(),
        (cpu2 - cpu0).as_secs_f64(),
        mib(hwm)
    );
    cluster.stop().await;
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}
