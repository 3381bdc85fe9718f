//! kube-scheduler's scheduler_perf workloads against kcore-scheduler's core:
//! SchedulingBasic (5,000 nodes, 1,000 initial pods, 10,000 measured pods),
//! plus pod anti-affinity and topology-spread variants. Reports the median
//! pods/s over several runs and the memory the snapshot holds.
//!
//! Fixtures follow upstream's templates: nodes with 4 CPUs, 32Gi, 110 pods;
//! pods requesting 100m CPU and 500Mi. Everything is generated here.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use k8s_openapi::api::core::v1::{Node, Pod};
use kcore_scheduler::{Framework, Outcome, Scheduler, Snapshot};
use serde_json::{json, Value};

const NODES: usize = 5000;
const ZONES: usize = 10;

fn node(i: usize) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i}"), "labels": {
            "kubernetes.io/hostname": format!("node-{i}"),
            "topology.kubernetes.io/zone": format!("zone-{}", i % ZONES),
        }},
        "status": {
            "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }))
    .expect("node fixture")
}

#[derive(Clone, Copy, Debug)]
enum Workload {
    Basic,
    AntiAffinity,
    TopologySpread,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Basic => "SchedulingBasic",
            Workload::AntiAffinity => "SchedulingPodAntiAffinity",
            Workload::TopologySpread => "TopologySpreading",
        }
    }
    fn sizes(self) -> (usize, usize) {
        match self {
            Workload::Basic => (1000, 10_000),
            // Hostname anti-affinity admits one pod per node.
            Workload::AntiAffinity => (1000, 2000),
            Workload::TopologySpread => (1000, 5000),
        }
    }
    fn pod(self, name: &str) -> Value {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"color": "green"}},
            "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}
        });
        match self {
            Workload::Basic => {}
            Workload::AntiAffinity => {
                p["spec"]["affinity"] = json!({"podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [{
                        "labelSelector": {"matchLabels": {"color": "green"}},
                        "topologyKey": "kubernetes.io/hostname"}]}});
            }
            Workload::TopologySpread => {
                p["spec"]["topologySpreadConstraints"] = json!([{
                    "maxSkew": 5, "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"color": "green"}}}]);
            }
        }
        p
    }
}

fn pods(w: Workload, prefix: &str, n: usize) -> Vec<Pod> {
    (0..n)
        .map(|i| serde_json::from_value(w.pod(&format!("{prefix}-{i}"))).expect("pod fixture"))
        .collect()
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Builds the cluster with its initial pods scheduled.
fn cluster(w: Workload, sched: &mut Scheduler) -> Snapshot {
    let mut snap = Snapshot::new();
    for i in 0..NODES {
        snap.upsert_node(&node(i)).expect("node");
    }
    for p in pods(w, "init", w.sizes().0) {
        let info = snap.compile_pod(&p).expect("pod");
        assert!(matches!(
            sched.schedule_one(&mut snap, info),
            Outcome::Assumed { .. }
        ));
    }
    snap
}

/// CPU time consumed by this thread. The bench machine is shared, so wall
/// time alone mixes in other tenants' load; CPU time shows what the
/// scheduler itself costs.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer to a
    // local; CLOCK_THREAD_CPUTIME_ID is supported on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Schedules `measured` pods (compiling each from its k8s object) and
/// returns the elapsed wall time.
fn run(sched: &mut Scheduler, snap: &mut Snapshot, measured: &[Pod]) -> Duration {
    let start = Instant::now();
    for p in measured {
        let info = snap.compile_pod(p).expect("pod");
        match sched.schedule_one(snap, info) {
            Outcome::Assumed { .. } => {}
            other => panic!("pod did not schedule: {other:?}"),
        }
    }
    start.elapsed()
}

fn report(w: Workload, runs: usize) {
    let (_, measure) = w.sizes();
    let measured = pods(w, "m", measure);
    let mut rates = Vec::new();
    let mut cpu_rates = Vec::new();
    let mut sched = Scheduler::new(Framework::with_defaults());
    let rss0 = rss_bytes();
    let base = cluster(w, &mut sched);
    let rss1 = rss_bytes();
    let mut after = (0, 0);
    for _ in 0..runs {
        let mut snap = base.clone();
        let cpu0 = thread_cpu_time();
        let t = run(&mut sched, &mut snap, &measured);
        let cpu = thread_cpu_time() - cpu0;
        rates.push(measure as f64 / t.as_secs_f64());
        cpu_rates.push(measure as f64 / cpu.as_secs_f64());
        after = (snap.num_pods(), snap.memory_bytes());
    }
    rates.sort_by(f64::total_cmp);
    cpu_rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let cpu_median = cpu_rates[cpu_rates.len() / 2];
    println!(
        "scheduler/{}/{NODES}Nodes/{measure}Pods: median {:.0} pods/s over {runs} runs \
         (min {:.0}, max {:.0}; {:.0} pods per CPU-second, one thread); snapshot with {} pods holds ~{:.1} MiB (estimate), \
         RSS grew {:.1} MiB building it; ~{:.1} MiB with {} pods after the run",
        w.name(),
        median,
        rates[0],
        rates[rates.len() - 1],
        cpu_median,
        base.num_pods(),
        base.memory_bytes() as f64 / (1 << 20) as f64,
        rss1.saturating_sub(rss0) as f64 / (1 << 20) as f64,
        after.1 as f64 / (1 << 20) as f64,
        after.0,
    );
    if matches!(w, Workload::Basic) {
        println!(
            "scheduler/{}: {:.0} pods/s vs target 25000 and upstream threshold 680 pods/s ({:.1}x upstream)",
            w.name(),
            median,
            median / 680.0
        );
    }
}

/// The workloads to run: all, or those named in `KCORE_SCHED_BENCH`
/// (comma-separated substrings, e.g. `Basic`).
fn workloads() -> Vec<Workload> {
    let all = [
        Workload::Basic,
        Workload::AntiAffinity,
        Workload::TopologySpread,
    ];
    match std::env::var("KCORE_SCHED_BENCH") {
        Ok(f) if !f.is_empty() => all
            .into_iter()
            .filter(|w| f.split(',').any(|p| w.name().contains(p)))
            .collect(),
        _ => all.to_vec(),
    }
}

fn bench(c: &mut Criterion) {
    for w in workloads() {
        report(w, 5);
    }
    let mut g = c.benchmark_group("scheduler");
    g.sample_size(10);
    for w in workloads() {
        let (_, measure) = w.sizes();
        let measured = pods(w, "m", measure);
        let mut sched = Scheduler::new(Framework::with_defaults());
        let base = cluster(w, &mut sched);
        g.throughput(Throughput::Elements(measure as u64));
        g.bench_function(format!("{}/{NODES}Nodes/{measure}Pods", w.name()), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut snap = base.clone();
                    total += run(&mut sched, &mut snap, &measured);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
