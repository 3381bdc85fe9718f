//! Cluster start-up figures for `kcored up`: time to a Ready node, idle RSS of kcored,
//! and pod start-up latency (create → Running, image present) for 1, 10 and 100 pods.
//!
//! Run it with `benches/startup.sh`, which builds the binaries and images and runs this
//! inside a network namespace of its own (the process must already be in it: kcored
//! and every API connection live there). Environment: `KCORED` (the binary), `KCORE_DATA`
//! (a state directory holding the image `kcore.local/demo:v1`), `KCORE_NODE_IP`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set; run benches/startup.sh"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM: kcored up removes the node's pods and networking on the way out
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

async fn client(kubeconfig: &std::path::Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Creates `n` pods at once and returns each one's create → Running latency.
async fn start_pods(pods: &Api<Pod>, round: usize, n: usize) -> Vec<Duration> {
    let label = format!("round={round}");
    let lp = WatchParams::default().labels(&label);
    let mut events = pods.watch(&lp, "0").await.unwrap().boxed();
    let t0 = Instant::now();
    let creates = (0..n).map(|i| {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("p{round}-{i}"), "labels": {"round": round.to_string()}},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [{
                    "name": "c",
                    "image": "kcore.local/demo:v1",
                    "imagePullPolicy": "Never",
                    "args": ["web", "0.0.0.0:8080"],
                }],
            },
        }))
        .unwrap();
        let pods = pods.clone();
        async move {
            pods.create(&PostParams::default(), &pod).await.unwrap();
            format!("p{round}-{i}")
        }
    });
    let created = futures::future::join_all(creates).await;
    let mut running = std::collections::HashMap::new();
    while running.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(120), events.next())
            .await
            .expect("pods did not start within 120 s")
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
    let mut lat: Vec<Duration> = created.iter().map(|name| running[name] - t0).collect();
    lat.sort();
    // clean up and wait until they are gone
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default().labels(&label),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods
        .list(&ListParams::default().labels(&label))
        .await
        .unwrap()
        .items
        .is_empty()
    {
        assert!(Instant::now() < deadline, "pods were not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lat
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // nothing for `cargo bench -- --list`
    }
    let kcored = env("KCORED");
    let data = std::path::PathBuf::from(env("KCORE_DATA"));
    let node_ip = env("KCORE_NODE_IP");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t0 = Instant::now();
    let child = Command::new(&kcored)
        .args([
            "up",
            "--listen",
            "127.0.0.1:6443",
            "--no-ingress",
            "--node-name",
            "bench",
        ])
        .args(["--node-ip", &node_ip])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(data.join("kcored.log")).unwrap(),
        ))
        .spawn()
        .expect("spawn kcored");
    let daemon = Daemon(child);
    let pid = daemon.0.id();
    rt.block_on(async {
        let kubeconfig = data.join("apiserver/admin.kubeconfig");
        while !kubeconfig.exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let c = client(&kubeconfig).await;
        let nodes: Api<Node> = Api::all(c.clone());
        loop {
            if let Ok(Some(n)) = nodes.get_opt("bench").await {
                if ready(&n) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let up = t0.elapsed();
        println!("kcored up → node Ready: {:.0} ms", up.as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_secs(5)).await;
        println!("kcored idle RSS: {:.1} MiB", rss_kib(pid) as f64 / 1024.0);

        let pods: Api<Pod> = Api::namespaced(c, "default");
        let mut round = 0;
        for (n, rounds) in [(1usize, 10usize), (10, 5), (100, 2)] {
            let mut all = Vec::new();
            for _ in 0..rounds {
                round += 1;
                all.extend(start_pods(&pods, round, n).await);
            }
            all.sort();
            println!(
                "pod start-up, {n:>3} pods at once ({rounds} rounds): p50 {:.0} ms, p99 {:.0} ms",
                percentile(&all, 0.5).as_secs_f64() * 1e3,
                percentile(&all, 0.99).as_secs_f64() * 1e3,
            );
        }
        println!(
            "kcored RSS after the runs: {:.1} MiB",
            rss_kib(pid) as f64 / 1024.0
        );
    });
    drop(daemon);
}
