//! What the cluster benches (`startup`, `storage`) share: starting `kcored up` from the
//! environment `benches/cluster-bench.sh` sets, a client, and percentiles.
//!
//! Environment: `KCORED` (the binary), `KCORE_DATA` (a state directory holding the image
//! `kcore.local/demo:v1`), `KCORE_NODE_IP`. The process must already be in the network
//! namespace the script made: kcored and every API connection live there.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;

/// A required environment variable.
pub fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set; run the bench through benches/*.sh"))
}

/// The `p` quantile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The resident set size of a process, KiB.
#[allow(dead_code)] // not every bench prints it
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A running `kcored up`, stopped with SIGTERM on drop (it removes the node's pods and
/// networking on the way out).
pub struct Daemon {
    child: Child,
    /// The admin client.
    pub client: kube::Client,
    /// From spawn to the node Ready.
    pub up: Duration,
}

impl Daemon {
    /// Starts `kcored up` with node `node` and waits for the node to be Ready.
    pub async fn start(node: &str) -> Daemon {
        Self::start_with(node, &[]).await
    }

    /// [`Daemon::start`] with extra arguments for `kcored up`, after any in
    /// `KCORED_ARGS` (space-separated, to compare settings by hand).
    pub async fn start_with(node: &str, extra: &[&str]) -> Daemon {
        let kcored = env("KCORED");
        let data = std::path::PathBuf::from(env("KCORE_DATA"));
        let node_ip = env("KCORE_NODE_IP");
        let t0 = Instant::now();
        let child = Command::new(&kcored)
            .args(["up", "--listen", "127.0.0.1:6443", "--no-ingress"])
            .args(["--node-name", node, "--node-ip", &node_ip])
            .arg("--data-dir")
            .arg(&data)
            .args(
                std::env::var("KCORED_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(data.join("kcored.log")).unwrap(),
            ))
            .spawn()
            .expect("spawn kcored");
        let kubeconfig = data.join("apiserver/admin.kubeconfig");
        while !kubeconfig.exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(cfg).unwrap();
        let nodes: Api<Node> = Api::all(client.clone());
        loop {
            if let Ok(Some(n)) = nodes.get_opt(node).await {
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if ready {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Daemon {
            child,
            client,
            up: t0.elapsed(),
        }
    }

    /// kcored's process id.
    #[allow(dead_code)] // not every bench prints it
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
