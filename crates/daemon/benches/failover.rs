//! Failover times of a highly available control plane (issue 27), median of 10 each.
//!
//! Runs the `ha` test's cluster (three etcd members over mutual TLS and three
//! `kcored server`s in network namespaces, plus an agent) and measures:
//!
//! - `leader-kill-default`: the holder of the `kube-controller-manager` Lease is killed
//!   with SIGKILL, upstream's default timings (15 s lease, 10 s renew deadline, 2 s
//!   retry). Goal: the new leader acts within lease duration + retry period (17 s).
//! - `leader-kill-fast`: the same with the tests' fast settings (2 s / 1.5 s / 250 ms).
//! - `leader-handover`: the holder is stopped with SIGTERM and releases its Lease (fast
//!   settings). Goal: ≤ 1 s.
//! - `agent`: the server the agent's load balancer uses is killed with SIGKILL: the
//!   time until the balancer switched server, and until the agent's next heartbeat
//!   (its node Lease renewal, every 5 s) is written through another server.
//!
//! "Acting" is the first write only the controller leader makes: a ReplicaSet is created
//! right after the signal, and the time is when its Pod appears in a watch through a
//! surviving server. "Elected" is when the Lease names another holder.
//!
//! Run as root: `sudo benches/failover.sh` (it builds this with `--features etcd`).
//! `KCORE_FAILOVER_SAMPLES` (10) and `KCORE_FAILOVER_CASES` (`default,fast,handover,agent`)
//! select less.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/hacluster/mod.rs"]
mod hacluster;

use std::time::{Duration, Instant};

use common::*;
use hacluster::*;

const CONTROLLER_LEASE: &str = "kube-controller-manager";
const NAMESPACE: &str = "failover";

/// Samples of one figure.
struct Figure {
    name: String,
    samples: Vec<Duration>,
    goal: Option<Duration>,
}

impl Figure {
    fn new(name: &str, goal: Option<Duration>) -> Figure {
        Figure {
            name: name.to_owned(),
            samples: Vec::new(),
            goal,
        }
    }

    fn sorted(&self) -> Vec<Duration> {
        let mut s = self.samples.clone();
        s.sort();
        s
    }

    /// The median (the mean of the two middle samples of an even count).
    fn median(&self) -> Duration {
        let s = self.sorted();
        let n = s.len();
        if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2
        }
    }

    /// The 90th percentile, nearest rank.
    fn p90(&self) -> Duration {
        let s = self.sorted();
        let rank = (s.len() * 9).div_ceil(10).max(1);
        s[rank - 1]
    }

    fn report(&self) -> String {
        if self.samples.is_empty() {
            return format!("{:<34} no samples", self.name);
        }
        let all: Vec<String> = self
            .samples
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect();
        let goal = match self.goal {
            Some(g) => format!(
                "  goal ≤ {:.1} s: {}",
                g.as_secs_f64(),
                if self.median() <= g { "met" } else { "MISSED" }
            ),
            None => String::new(),
        };
        format!(
            "{:<34} median {:>6.2} s  p90 {:>6.2} s  (n={}; s: {}){goal}",
            self.name,
            self.median().as_secs_f64(),
            self.p90().as_secs_f64(),
            self.samples.len(),
            all.join(" ")
        )
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A ReplicaSet of one Pod that no node can take (so nothing runs), as JSON.
fn replica_set(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"kcore.io/failover-bench": "nowhere"},
                    "containers": [{"name": "c", "image": "kcore.local/none:v1"}]
                }
            }
        }
    })
    .to_string()
}

/// Creates `name` through server `via` with one POST (`kubectl create --raw`: no
/// discovery, so the create adds as little as it can to the measured time).
fn create_replica_set(ha: &Ha, via: usize, name: &str) {
    let m = &ha.servers[via];
    let mut c = in_netns(&m.netns, "kubectl");
    c.arg("--kubeconfig")
        .arg(m.kubeconfig())
        .args([
            "create",
            "--raw",
            &format!("/apis/apps/v1/namespaces/{NAMESPACE}/replicasets"),
            "-f",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("kubectl create --raw");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(replica_set(name).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "creating ReplicaSet {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace of the bench's objects, with a sentinel Pod that tells a new watch
/// of Pods is established (it lists it first).
fn prepare(ha: &Ha) {
    ha.apply(
        0,
        &format!(
            r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {NAMESPACE}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: sentinel, namespace: {NAMESPACE}}}
spec:
  nodeSelector: {{kcore.io/failover-bench: nowhere}}
  containers: [{{name: c, image: kcore.local/none:v1}}]
"#
        ),
    );
}

/// The current controller leader, once all three servers serve.
fn leader(ha: &Ha) -> usize {
    wait_for(60, "a controller leader", || {
        ha.holder(&[0, 1, 2], CONTROLLER_LEASE)
    })
}

/// One leader failover: `sig` to the controller leader; returns (elected, acting).
fn leader_failover(ha: &mut Ha, tag: &str, k: usize, sig: &str) -> (Duration, Duration) {
    // the holder as a watch through another server sees it (it may move meanwhile)
    let (old, old_id, via, leases) = loop {
        let old = leader(ha);
        let via = (old + 1) % 3;
        let leases = ha.watch(
            via,
            &[
                "lease",
                "-n",
                "kube-system",
                CONTROLLER_LEASE,
                "-o",
                "jsonpath={.spec.holderIdentity}{\"\\n\"}",
            ],
        );
        leases.wait(30, "the Lease watch", |_| true);
        let id = leases.lines().last().cloned().unwrap_or_default();
        if ha.server_of(&id) == Some(old) {
            break (old, id, via, leases);
        }
    };
    let pods = ha.watch(
        via,
        &[
            "pods",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.metadata.name}{\"\\n\"}",
        ],
    );
    pods.wait(30, "the Pod watch", |l| l == "sentinel");
    let rs = format!("{tag}-{k}");
    let t0 = Instant::now();
    signal(ha.servers[old].kcored.as_ref().unwrap(), sig);
    create_replica_set(ha, via, &rs);
    let created = t0.elapsed();
    let timeout = 90;
    let elected = leases.wait(timeout, "a new controller leader", |l| {
        !l.is_empty() && l != old_id
    }) - t0;
    let prefix = format!("{rs}-");
    let acting = pods.wait(timeout, "the new leader's Pod", |l| l.starts_with(&prefix)) - t0;
    eprintln!(
        "  {tag} #{k}: s{old} {sig}; ReplicaSet created after {:.2} s, elected {:.2} s, acting {:.2} s",
        created.as_secs_f64(),
        elected.as_secs_f64(),
        acting.as_secs_f64()
    );
    drop((leases, pods));
    // back to three servers for the next sample
    ha.servers[old].stop_kcored(sig != "-KILL");
    restart_warm(ha, old);
    (elected, acting)
}

/// Restarts server `i` and waits until its standby controllers' caches are full, as a
/// server's are that did not just start (a cold one would add its first lists to the
/// next sample if it won).
fn restart_warm(ha: &mut Ha, i: usize) {
    let synced = |ha: &Ha| {
        ha.servers[i]
            .logs()
            .matches("controller caches synced")
            .count()
    };
    let before = synced(ha);
    ha.start_server(i);
    ha.wait_api(i);
    wait_for(120, &format!("s{i}'s controller caches"), || {
        (synced(ha) > before).then_some(())
    });
}

/// The server the agent's load balancer uses, from its log.
fn agent_server(ha: &Ha) -> usize {
    let logs = ha.agent.logs();
    let line = logs
        .lines()
        .rev()
        .find(|l| l.contains("switched server") || l.contains("server load balancer started"))
        .expect("the agent's load balancer logs its server");
    let at = line.rfind("server=").expect("server= in the line") + "server=".len();
    let addr = line[at..].split_whitespace().next().unwrap();
    let host = addr.rsplit_once(':').map(|x| x.0).unwrap_or(addr);
    (0..3)
        .find(|&i| ip(i) == host)
        .unwrap_or_else(|| panic!("the agent's server {addr} is none of the servers"))
}

fn switches(ha: &Ha) -> usize {
    ha.agent.logs().matches("switched server").count()
}

/// One agent failover: SIGKILL to the agent's server; returns (switched, heartbeat).
fn agent_failover(ha: &mut Ha, k: usize) -> (Duration, Duration) {
    let cur = agent_server(ha);
    let via = (cur + 1) % 3;
    let renewals = ha.watch(
        via,
        &[
            "lease",
            "-n",
            "kube-node-lease",
            "a0",
            "-o",
            "jsonpath={.spec.renewTime}{\"\\n\"}",
        ],
    );
    renewals.wait(30, "the node Lease watch", |_| true);
    let before = switches(ha);
    let wall = k8s_openapi::jiff::Timestamp::now();
    let t0 = Instant::now();
    signal(ha.servers[cur].kcored.as_ref().unwrap(), "-KILL");
    let switched = wait_for(60, "the agent to switch servers", || {
        (switches(ha) > before).then(Instant::now)
    }) - t0;
    let heartbeat = renewals.wait(60, "the agent's next heartbeat", |l| {
        l.trim()
            .parse::<k8s_openapi::jiff::Timestamp>()
            .is_ok_and(|t| t > wall)
    }) - t0;
    let now = agent_server(ha);
    eprintln!(
        "  agent #{k}: s{cur} killed; switched to s{now} after {:.2} s, heartbeat after {:.2} s",
        switched.as_secs_f64(),
        heartbeat.as_secs_f64()
    );
    drop(renewals);
    ha.servers[cur].stop_kcored(false);
    restart_warm(ha, cur);
    // the balancer's probes (every second) see it back
    std::thread::sleep(Duration::from_secs(3));
    (switched, heartbeat)
}

fn main() {
    let uid = std::process::Command::new("id").arg("-u").output();
    if !uid.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0") {
        eprintln!(
            "failover bench: needs root (network namespaces, an agent): sudo benches/failover.sh"
        );
        std::process::exit(1);
    }
    need_etcd();
    let samples: usize = std::env::var("KCORE_FAILOVER_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let cases = std::env::var("KCORE_FAILOVER_CASES")
        .unwrap_or_else(|_| "default,fast,handover,agent".into());
    let on = |c: &str| cases.split(',').any(|x| x.trim() == c);
    eprintln!(
        "failover bench: {samples} samples of {cases}; load {}",
        load()
    );
    let defaults = kcored::leadership::LeaderTimings::default();
    let mut figures = Vec::new();

    let mut ha = if on("default") {
        Ha::start_with(&[])
    } else {
        Ha::start()
    };
    prepare(&ha);
    if on("default") {
        let mut elected = Figure::new("leader-kill-default elected", None);
        let mut acting = Figure::new(
            "leader-kill-default acting",
            Some(defaults.lease_duration + defaults.retry_period),
        );
        for k in 0..samples {
            let (e, a) = leader_failover(&mut ha, "default", k, "-KILL");
            elected.samples.push(e);
            acting.samples.push(a);
        }
        figures.extend([elected, acting]);
        ha.restart_servers_with(LEADER_FLAGS);
    }
    if on("fast") {
        let mut elected = Figure::new("leader-kill-fast elected", None);
        // the fast settings: 2 s lease + 250 ms retry period
        let mut acting = Figure::new("leader-kill-fast acting", Some(Duration::from_millis(2250)));
        for k in 0..samples {
            let (e, a) = leader_failover(&mut ha, "fast", k, "-KILL");
            elected.samples.push(e);
            acting.samples.push(a);
        }
        figures.extend([elected, acting]);
    }
    if on("handover") {
        let mut elected = Figure::new("leader-handover elected", None);
        let mut acting = Figure::new("leader-handover acting", Some(Duration::from_secs(1)));
        for k in 0..samples {
            let (e, a) = leader_failover(&mut ha, "handover", k, "-TERM");
            elected.samples.push(e);
            acting.samples.push(a);
        }
        figures.extend([elected, acting]);
    }
    if on("agent") {
        ha.start_agent(0);
        let mut switched = Figure::new("agent switched server", None);
        let mut heartbeat = Figure::new("agent next heartbeat", Some(Duration::from_secs(10)));
        for k in 0..samples {
            let (s, h) = agent_failover(&mut ha, k);
            switched.samples.push(s);
            heartbeat.samples.push(h);
        }
        figures.extend([switched, heartbeat]);
    }
    println!("failover bench ({} build), load {}:", profile(), load());
    for f in &figures {
        println!("{}", f.report());
    }
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}
