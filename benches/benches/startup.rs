//! Cluster start-up figures for `kcored up`: time to a Ready node, idle RSS of kcored,
//! and pod start-up latency (create → Running, image present) for 1, 10 and 100 pods, then
//! 110 pods (the kubelet's default `maxPods`) at once over 5 rounds with kcored's RSS after
//! each, with the node's container launcher (the default) and then, in the same run, with
//! kcored forking itself for each container (`--no-container-launcher`).
//!
//! Run it with `benches/startup.sh`, which builds the binaries and images and runs this
//! inside a network namespace of its own (see `cluster/mod.rs`).

mod cluster;

use std::time::{Duration, Instant};

use cluster::{ms, percentile, rss_kib, Daemon};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};

/// Pods per node in the density rounds: the kubelet's default `maxPods`.
const DENSITY_PODS: usize = 110;
/// Density rounds: RSS growth shows over several.
const DENSITY_ROUNDS: usize = 5;

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

/// The container launcher server kcored `pid` started, if any.
fn launcher_pid(pid: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let child: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: u32 = stat
            .rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let serves = cmdline
            .split(|&b| b == 0)
            .any(|a| a == kcore_runtime::launcher::SERVE_ARG.as_bytes());
        (ppid == pid && serves).then_some(child)
    })
}

/// DENSITY_ROUNDS rounds of DENSITY_PODS pods at once, numbered after `round`: p50/p99
/// per round and overall, and kcored's RSS after each round.
async fn density(daemon: &Daemon, pods: &Api<Pod>, mut round: usize, how: &str) {
    let mut all = Vec::new();
    let mut rss = Vec::new();
    for r in 0..DENSITY_ROUNDS {
        round += 1;
        let lat = start_pods(pods, round, DENSITY_PODS).await;
        // the launcher's server belongs to kcored's memory too
        rss.push(rss_kib(daemon.pid()) + launcher_pid(daemon.pid()).map_or(0, rss_kib));
        println!(
            "  {DENSITY_PODS} pods, {how}, round {}: p50 {:.0} ms, p99 {:.0} ms, kcored RSS \
             (with its launcher) {:.1} MiB",
            r + 1,
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            rss[r] as f64 / 1024.0,
        );
        all.extend(lat);
    }
    all.sort();
    println!(
        "pod start-up, {DENSITY_PODS} pods at once, {how} ({DENSITY_ROUNDS} rounds): p50 {:.0} ms, \
         p99 {:.0} ms; kcored RSS after round 1 {:.1} MiB, after round {DENSITY_ROUNDS} {:.1} MiB \
         ({:+.1} %)",
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        rss[0] as f64 / 1024.0,
        rss[DENSITY_ROUNDS - 1] as f64 / 1024.0,
        (rss[DENSITY_ROUNDS - 1] as f64 / rss[0].max(1) as f64 - 1.0) * 100.0,
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // nothing for `cargo bench -- --list`
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let daemon = Daemon::start("bench").await;
        println!("kcored up → node Ready: {:.0} ms", ms(daemon.up));
        tokio::time::sleep(Duration::from_secs(5)).await;
        println!(
            "kcored idle RSS: {:.1} MiB",
            rss_kib(daemon.pid()) as f64 / 1024.0
        );

        let pods: Api<Pod> = Api::namespaced(daemon.client.clone(), "default");
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
                ms(percentile(&all, 0.5)),
                ms(percentile(&all, 0.99)),
            );
        }
        // Real-node density: the kubelet's default maximum of 110 pods per node, started
        // at once, DENSITY_ROUNDS times, with kcored's RSS after each round (the goal of
        // issue 28: flat, within 10 % of the first round's after the last)
        density(&daemon, &pods, round, "container launcher").await;
        println!(
            "kcored RSS after the runs: {:.1} MiB",
            rss_kib(daemon.pid()) as f64 / 1024.0
        );
        drop(daemon);
        // the same rounds with kcored forking itself for each container, as before the
        // launcher, in the same run
        let daemon = Daemon::start_with("bench", &["--no-container-launcher"]).await;
        let pods: Api<Pod> = Api::namespaced(daemon.client.clone(), "default");
        density(
            &daemon,
            &pods,
            round + DENSITY_ROUNDS,
            "kcored forking itself",
        )
        .await;
    });
}
