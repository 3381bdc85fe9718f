//! kcore-reconcile: 1,000 Deployments × 10 replicas converging against the embedded
//! kcore-apiserver (plain HTTP on loopback, kube-rs client): wall time, objects per second
//! and the controller manager's own CPU time (it runs alone on one runtime thread, so its
//! thread CPU clock is the controllers' cost, apart from the API server's). Then criterion
//! micro-benches of the work queue and the scale-down ranking.
//!
//! `cargo bench -p kcore-benches --bench reconcile`
//! Environment: `KCORE_BENCH_DEPLOYMENTS` (default 1000), `KCORE_BENCH_REPLICAS`
//! (default 10), `KCORE_BENCH_CONVERGE=0` to skip the convergence run.

mod common;
use common::{env_num, thread_cpu};

use std::time::{Duration, Instant};

use criterion::Criterion;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kcore_apiserver::ApiServer;
use kcore_reconcile::{ControllerManager, ControllerManagerConfig, ObjectKey, WorkQueue};
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use serde_json::json;

fn converge(deployments: usize, replicas: i32) {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-bench-reconcile-{}-", std::process::id()))
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
    let client_for =
        |url: &str| Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");

    // The controller manager alone on one thread.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (cpu_tx, cpu_rx) = std::sync::mpsc::channel();
    let murl = url.clone();
    let manager = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let cpu0 = thread_cpu();
        rt.block_on(async move {
            let client =
                Client::try_from(kube::Config::new(murl.parse().expect("url"))).expect("client");
            let cfg = ControllerManagerConfig {
                controllers: ["deployment", "replicaset"]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
                ..ControllerManagerConfig::default()
            };
            ControllerManager::new(client)
                .with_config(cfg)
                .run(async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("controller manager");
        });
        let _ = cpu_tx.send(thread_cpu() - cpu0);
    });

    let (wall, objects) = server_rt.block_on(async {
        let client = client_for(&url);
        let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let start = Instant::now();
        let mut tasks = Vec::new();
        for chunk in 0..16usize {
            let deps = deps.clone();
            tasks.push(tokio::spawn(async move {
                for i in (chunk..deployments).step_by(16) {
                    let name = format!("d{i}");
                    let d: Deployment = serde_json::from_value(json!({
                        "metadata": {"name": name},
                        "spec": {
                            "replicas": replicas,
                            "selector": {"matchLabels": {"app": name}},
                            "template": {"metadata": {"labels": {"app": name}},
                                         "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}},
                        },
                    }))
                    .expect("deployment");
                    deps.create(&PostParams::default(), &d).await.expect("create deployment");
                }
            }));
        }
        for t in tasks {
            t.await.expect("creator");
        }
        let created = start.elapsed();
        let want = i32::try_from(deployments).unwrap_or(i32::MAX) * replicas;
        let mut last_report = Instant::now();
        loop {
            let list = deps.list(&ListParams::default()).await.expect("list deployments");
            let settled = list
                .items
                .iter()
                .filter(|d| {
                    let s = d.status.clone().unwrap_or_default();
                    s.observed_generation >= d.metadata.generation
                        && s.replicas == Some(replicas)
                        && s.updated_replicas == Some(replicas)
                })
                .count();
            if settled == deployments {
                break;
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!("  … {settled}/{deployments} deployments settled after {:.1}s", start.elapsed().as_secs_f64());
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let wall = start.elapsed();
        let pod_count = pods.list(&ListParams::default()).await.expect("list pods").items.len();
        assert_eq!(pod_count, usize::try_from(want).unwrap_or(0), "pods created");
        eprintln!("  (deployments created in {:.2}s)", created.as_secs_f64());
        // Deployments + ReplicaSets + pods.
        (wall, deployments * 2 + pod_count)
    });
    let _ = stop_tx.send(());
    manager.join().expect("manager thread");
    let cpu = cpu_rx.recv().unwrap_or_default();
    println!(
        "reconcile/converge {deployments} deployments x {replicas} replicas: wall {:.2} s, {:.0} objects/s ({objects} objects), controller CPU {:.2} s ({:.0} % of one core)",
        wall.as_secs_f64(),
        objects as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
    );
    server_rt.block_on(async {
        let _ = server.shutdown().await;
    });
}

fn micro(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let keys: Vec<ObjectKey> = (0..1000)
        .map(|i| ObjectKey::namespaced("default", format!("d{i}")))
        .collect();
    c.bench_function("reconcile/workqueue add+get+done 1000 keys (2x dup)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let q = WorkQueue::default();
                for k in keys.iter().chain(keys.iter()) {
                    q.add(k.clone());
                }
                while !q.is_empty() {
                    let k = q.get().await.expect("key");
                    q.done(&k);
                }
            });
        });
    });
}

fn main() {
    if env_num("KCORE_BENCH_CONVERGE", 1) != 0 {
        let d = usize::try_from(env_num("KCORE_BENCH_DEPLOYMENTS", 1000)).unwrap_or(1000);
        let r = i32::try_from(env_num("KCORE_BENCH_REPLICAS", 10)).unwrap_or(10);
        converge(d, r);
    }
    let mut c = Criterion::default().configure_from_args();
    micro(&mut c);
    c.final_summary();
}
