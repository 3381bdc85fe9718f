//! Resource usage of the node and its pods, served as the kubelet's Summary API
//! (`GET /stats/summary`), which the API server turns into `metrics.k8s.io` NodeMetrics
//! and PodMetrics (as metrics-server does).
//!
//! A sampler reads, every [`SAMPLE_EVERY`], the cumulative CPU time (`usage_usec`) and
//! the memory working set (usage less inactive file pages, as cAdvisor counts it) of
//! each running container's cgroup, of each pod's cgroup, and of the node (from
//! `/proc/stat` and `/proc/meminfo`, the machine as a whole, as the kubelet reports its
//! root cgroup). A CPU rate (`usageNanoCores`) is the difference of the last two samples
//! over their interval; until a cgroup has two samples it has no rate. The summary is
//! rebuilt on each tick, so requests only read it.
//!
//! Beyond upstream's `CPUStats` fields, each CPU entry carries `windowSeconds`: the
//! interval its rate was measured over, which the API server reports as the metrics'
//! `window`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

/// How often the sampler reads the cgroups.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(3);

/// `/proc/stat` counts in USER_HZ, which Linux exports as 100 per second.
const USER_HZ: u64 = 100;

/// One reading of a cgroup (or of the node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reading {
    /// Cumulative CPU time, µs.
    cpu_usec: Option<u64>,
    /// Memory usage, bytes.
    usage_bytes: Option<u64>,
    /// Working set, bytes.
    working_set: Option<u64>,
}

/// The last two readings of one source, with their times.
#[derive(Debug, Clone, Copy)]
struct Track {
    prev: Option<(Timestamp, Reading)>,
    last: (Timestamp, Reading),
    /// When the source was first seen (its `startTime`).
    first: Timestamp,
}

impl Track {
    /// The CPU rate in nanocores between the last two readings and the interval it
    /// spans; `None` before a second reading or when a counter went backwards.
    fn rate(&self) -> Option<(u64, Duration)> {
        let (t0, r0) = self.prev?;
        let (t1, r1) = self.last;
        let span = t1.duration_since(t0).unsigned_abs();
        let delta = r1.cpu_usec?.checked_sub(r0.cpu_usec?)?;
        nano_cores(delta, span).map(|n| (n, span))
    }

    fn cpu(&self) -> Value {
        let (t, r) = self.last;
        let mut v = json!({"time": rfc3339(t)});
        if let Some((n, span)) = self.rate() {
            v["usageNanoCores"] = json!(n);
            v["windowSeconds"] = json!(span.as_secs_f64());
        }
        if let Some(u) = r.cpu_usec {
            v["usageCoreNanoSeconds"] = json!(u.saturating_mul(1000));
        }
        v
    }

    fn memory(&self) -> Value {
        let (t, r) = self.last;
        let mut v = json!({"time": rfc3339(t)});
        if let Some(u) = r.usage_bytes {
            v["usageBytes"] = json!(u);
        }
        if let Some(w) = r.working_set {
            v["workingSetBytes"] = json!(w);
        }
        v
    }
}

/// `delta_usec` µs of CPU time over `span` as nanocores (10⁻⁹ CPU).
fn nano_cores(delta_usec: u64, span: Duration) -> Option<u64> {
    let ns = span.as_nanos();
    if ns == 0 {
        return None;
    }
    u64::try_from(u128::from(delta_usec) * 1_000_000_000_000 / ns).ok()
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A pod the node runs: namespace, name, uid and its running containers' names.
pub(crate) type RunningPod = (String, String, String, Vec<String>);

/// Lists the pods the node runs (the streams registry knows them).
pub(crate) type PodLister = Box<dyn Fn() -> Vec<RunningPod> + Send + Sync>;

/// The node's and its pods' resource usage, sampled in the background.
pub(crate) struct ResourceStats {
    node_name: String,
    cgroup_parent: String,
    host: Option<kcore_cgroup::Host>,
    proc_root: PathBuf,
    pods: PodLister,
    state: Mutex<State>,
}

impl std::fmt::Debug for ResourceStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceStats")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    tracks: HashMap<String, Track>,
    summary: Value,
}

impl ResourceStats {
    /// Stats of node `node_name`, whose pods' cgroups are below `cgroup_parent` on `host`
    /// (none: pods report no usage), reading the node's counters under `proc_root`.
    pub(crate) fn new(
        node_name: String,
        cgroup_parent: String,
        host: Option<kcore_cgroup::Host>,
        proc_root: PathBuf,
        pods: PodLister,
    ) -> Self {
        ResourceStats {
            node_name,
            cgroup_parent,
            host,
            proc_root,
            pods,
            state: Mutex::new(State::default()),
        }
    }

    /// The Summary as of the last sample.
    pub(crate) fn summary(&self) -> Value {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.summary.is_null() {
            return json!({"node": {"nodeName": self.node_name}, "pods": []});
        }
        st.summary.clone()
    }

    /// Samples every [`SAMPLE_EVERY`] until dropped.
    pub(crate) fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let me = self.clone();
                let _ = tokio::task::spawn_blocking(move || me.sample(Timestamp::now())).await;
            }
        })
    }

    /// Reads every source once at `now` and rebuilds the summary.
    pub(crate) fn sample(&self, now: Timestamp) {
        let _span = tracing::debug_span!("resource_stats_sample").entered();
        let mut readings: Vec<(String, Reading)> = Vec::new();
        readings.push(("".into(), node_reading(&self.proc_root)));
        let pods = (self.pods)();
        if let Some(host) = &self.host {
            for (_, _, uid, containers) in &pods {
                let pod_cg = crate::sandbox::pod_cgroup(&self.cgroup_parent, uid);
                if let Some(r) = cgroup_reading(host, &pod_cg) {
                    readings.push((pod_cg.clone(), r));
                }
                for c in containers {
                    let path = format!("{pod_cg}/{c}");
                    if let Some(r) = cgroup_reading(host, &path) {
                        readings.push((path, r));
                    }
                }
            }
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut tracks = HashMap::with_capacity(readings.len());
        for (k, r) in readings {
            let t = match st.tracks.remove(&k) {
                Some(old) => Track {
                    prev: Some(old.last),
                    last: (now, r),
                    first: old.first,
                },
                None => Track {
                    prev: None,
                    last: (now, r),
                    first: now,
                },
            };
            tracks.insert(k, t);
        }
        st.tracks = tracks;
        st.summary = self.build(&st.tracks, &pods);
    }

    fn build(&self, tracks: &HashMap<String, Track>, pods: &[RunningPod]) -> Value {
        let mut node = json!({"nodeName": self.node_name});
        if let Some(t) = tracks.get("") {
            node["startTime"] = json!(rfc3339(t.first));
            node["cpu"] = t.cpu();
            node["memory"] = t.memory();
        }
        let mut out = Vec::new();
        for (ns, name, uid, containers) in pods {
            let pod_cg = crate::sandbox::pod_cgroup(&self.cgroup_parent, uid);
            let Some(pt) = tracks.get(&pod_cg) else {
                continue;
            };
            let cs: Vec<Value> = containers
                .iter()
                .filter_map(|c| {
                    let t = tracks.get(&format!("{pod_cg}/{c}"))?;
                    Some(json!({"name": c, "startTime": rfc3339(t.first),
                        "cpu": t.cpu(), "memory": t.memory()}))
                })
                .collect();
            out.push(json!({
                "podRef": {"name": name, "namespace": ns, "uid": uid},
                "startTime": rfc3339(pt.first),
                "containers": cs,
                "cpu": pt.cpu(),
                "memory": pt.memory(),
            }));
        }
        json!({"node": node, "pods": out})
    }
}

/// A cgroup's reading, `None` when it does not exist (any more).
fn cgroup_reading(host: &kcore_cgroup::Host, path: &str) -> Option<Reading> {
    let cg = kcore_cgroup::Cgroup::open(host, path).ok()?;
    let s = cg.stats().ok()?;
    Some(Reading {
        cpu_usec: s.cpu.usage_usec,
        usage_bytes: s.memory.usage,
        working_set: s.memory.working_set(),
    })
}

/// The machine's reading: busy CPU time from `/proc/stat` and, from `/proc/meminfo`,
/// memory in use (total less free) and the working set (that less inactive file pages).
fn node_reading(proc_root: &Path) -> Reading {
    let stat = std::fs::read_to_string(proc_root.join("stat")).unwrap_or_default();
    let meminfo = std::fs::read_to_string(proc_root.join("meminfo")).unwrap_or_default();
    let (usage_bytes, working_set) = match parse_meminfo(&meminfo) {
        Some((u, w)) => (Some(u), Some(w)),
        None => (None, None),
    };
    Reading {
        cpu_usec: parse_proc_stat(&stat),
        usage_bytes,
        working_set,
    }
}

/// Busy CPU time in µs from the `cpu` line of `/proc/stat` (every field but idle and
/// iowait; guest time is already inside user and nice).
fn parse_proc_stat(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let busy: u64 = f
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy * (1_000_000 / USER_HZ))
}

/// Memory in use and the working set, in bytes, from `/proc/meminfo`.
fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let get = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.split(':').next() == Some(key))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    let used = get("MemTotal")?.saturating_sub(get("MemFree")?);
    let ws = used.saturating_sub(get("Inactive(file)").unwrap_or(0));
    Some((used, ws))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    #[test]
    fn rates_are_deltas_over_the_interval() {
        assert_eq!(
            nano_cores(500_000, Duration::from_secs(1)),
            Some(500_000_000)
        );
        assert_eq!(
            nano_cores(1_500_000, Duration::from_secs(3)),
            Some(500_000_000)
        );
        assert_eq!(nano_cores(1, Duration::ZERO), None);
    }

    #[test]
    fn proc_parsers() {
        let stat = "cpu  100 20 30 1000 50 5 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        // 160 busy ticks of 10 ms
        assert_eq!(parse_proc_stat(stat), Some(1_600_000));
        let mem = "MemTotal:       1000 kB\nMemFree:         200 kB\nInactive(file):  300 kB\n";
        assert_eq!(parse_meminfo(mem), Some((800 * 1024, 500 * 1024)));
        assert_eq!(parse_meminfo("nonsense"), None);
    }

    #[test]
    fn summary_reports_pods_and_containers_after_two_samples() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = tmp.path().join("cg");
        let proc_root = tmp.path().join("proc");
        put(&proc_root.join("stat"), "cpu  100 0 0 0 0 0 0 0\n");
        put(
            &proc_root.join("meminfo"),
            "MemTotal: 1000 kB\nMemFree: 200 kB\n",
        );
        let pod = cg.join("kcore/poda_b");
        let write = |usec: u64| {
            for (d, factor) in [(pod.clone(), 2), (pod.join("app"), 1)] {
                put(&d.join("cgroup.procs"), "");
                put(
                    &d.join("cpu.stat"),
                    &format!("usage_usec {}\n", usec * factor),
                );
                put(&d.join("memory.current"), "10000\n");
                put(&d.join("memory.stat"), "inactive_file 4000\n");
            }
        };
        let stats = ResourceStats::new(
            "n1".into(),
            "kcore".into(),
            Some(kcore_cgroup::Host::v2(&cg)),
            proc_root.clone(),
            Box::new(|| vec![("ns1".into(), "web".into(), "a-b".into(), vec!["app".into()])]),
        );
        assert_eq!(stats.summary()["node"]["nodeName"], "n1");
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        write(1_000_000);
        stats.sample(t0);
        let s = stats.summary();
        assert_eq!(
            s["pods"][0]["containers"][0]["memory"]["workingSetBytes"],
            6000
        );
        assert!(s["pods"][0]["cpu"]["usageNanoCores"].is_null(), "{s}");
        write(1_400_000);
        put(&proc_root.join("stat"), "cpu  300 0 0 0 0 0 0 0\n");
        stats.sample(t0 + Duration::from_secs(2));
        let s = stats.summary();
        let pod0 = &s["pods"][0];
        assert_eq!(
            pod0["podRef"],
            json!({"name": "web", "namespace": "ns1", "uid": "a-b"})
        );
        assert_eq!(pod0["startTime"], "2026-01-01T00:00:00Z");
        let c = &pod0["containers"][0];
        assert_eq!(c["name"], "app");
        // 0.4 s of CPU over 2 s: 200m
        assert_eq!(c["cpu"]["usageNanoCores"], 200_000_000);
        assert_eq!(c["cpu"]["windowSeconds"], 2.0);
        assert_eq!(c["cpu"]["usageCoreNanoSeconds"], 1_400_000_000u64);
        assert_eq!(c["cpu"]["time"], "2026-01-01T00:00:02Z");
        assert_eq!(pod0["cpu"]["usageNanoCores"], 400_000_000);
        // 2 s of node CPU over 2 s
        assert_eq!(s["node"]["cpu"]["usageNanoCores"], 1_000_000_000);
        assert_eq!(s["node"]["memory"]["workingSetBytes"], 800 * 1024);
    }
}
