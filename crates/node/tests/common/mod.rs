//! Shared pieces of the root tests: an in-process API server, a node network namespace,
//! a busybox image built with `image_from_dir`, an agent, and a guard that removes
//! every container, mount, cgroup and namespace the test made.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kcore_apiserver::{ApiServer, RunningServer};
use kcore_node::{image_from_dir, ImageSpec, NodeAgent, NodeConfig, PodStreams};
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;
use tokio::sync::oneshot;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const IMAGE: &str = "kcore.test/busybox:v1";

pub fn unique(tag: &str) -> String {
    format!(
        "{tag}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

const APPLETS: &[&str] = &[
    "sh", "true", "false", "cat", "ls", "hostname", "sleep", "echo", "id", "grep", "env", "httpd",
    "wget", "nc", "test", "mkdir", "touch", "printf", "nslookup", "kill", "[", "tty", "stty", "ps",
    "head", "ln", "rm", "readlink",
];

/// Builds the busybox image layout under `dir` and returns its path.
pub fn busybox_layout(dir: &Path) -> PathBuf {
    let root = dir.join("bb-root");
    for d in ["bin", "etc", "tmp", "proc", "dev", "sys"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("needs busybox-static at /bin/busybox");
    for a in APPLETS {
        symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    let layout = dir.join("bb-layout");
    image_from_dir(
        &root,
        &layout,
        IMAGE,
        &ImageSpec {
            cmd: vec!["sh".into()],
            env: vec!["FROM_IMAGE=yes".into()],
            ..Default::default()
        },
    )
    .unwrap();
    layout
}

/// Everything one test needs; tears it all down on drop.
pub struct Env {
    pub client: Client,
    pub namespace: String,
    pub node: String,
    pub cfg: NodeConfig,
    pub node_netns: PathBuf,
    pub server: Option<RunningServer>,
    /// The running agent's exec/attach/port-forward backend.
    pub streams: Option<PodStreams>,
    agent: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    dir: tempfile::TempDir,
    netns_dir: kcore_ns::NetnsDir,
    netns_name: String,
}

impl Env {
    pub async fn new(pod_cidr: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kcore-node-test-{}-", std::process::id()))
            .tempdir()
            .unwrap();
        let server = ApiServer::builder()
            .data_dir(dir.path().join("api"))
            .listen("127.0.0.1:0".parse().unwrap())
            .insecure_http(true)
            .bookmark_interval(Duration::from_secs(1))
            .build()
            .await
            .unwrap()
            .spawn();
        let client = Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
        let namespace = unique("t");
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
            )
            .await
            .unwrap();
        Env::node(dir, client, namespace, Some(server), pod_cidr)
    }

    /// Another node of the same cluster (same API server and test namespace).
    pub fn another_node(&self, pod_cidr: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kcore-node-test-{}-", std::process::id()))
            .tempdir()
            .unwrap();
        Env::node(
            dir,
            self.client.clone(),
            self.namespace.clone(),
            None,
            pod_cidr,
        )
    }

    fn node(
        dir: tempfile::TempDir,
        client: Client,
        namespace: String,
        server: Option<RunningServer>,
        pod_cidr: &str,
    ) -> Env {
        let netns_dir = kcore_ns::NetnsDir::new(dir.path().join("node-netns"));
        let netns_name = unique("kn");
        let ns = netns_dir.create(&netns_name).unwrap();
        ns.run(kcore_ns::netns::loopback_up).unwrap().unwrap();
        let node = unique("node-");
        let data = dir.path().join("data");
        let mut cfg = NodeConfig::new(
            &node,
            &data,
            pod_cidr.parse().unwrap(),
            Ipv4Addr::new(192, 0, 2, 1),
        );
        cfg.node_netns = Some(ns.path().to_owned());
        cfg.server_addr = "127.0.0.1:0".parse().unwrap();
        cfg.cgroup_parent = unique("kcore-node-test-");
        cfg.vxlan = false;
        cfg.backoff_base = Duration::from_millis(300);
        cfg.backoff_max = Duration::from_secs(2);
        cfg.volume_refresh = Duration::from_millis(500);
        cfg.heartbeat = Duration::from_secs(1);
        cfg.upstream_dns = vec![];
        // the image, imported into the node's store
        let store = kcore_image::ImageStore::open(data.join("images")).unwrap();
        store
            .import_oci_layout(
                &busybox_layout(dir.path()),
                &kcore_image::ImportOptions::default(),
            )
            .unwrap();
        Env {
            client,
            namespace,
            node,
            cfg,
            node_netns: ns.path().to_owned(),
            server,
            streams: None,
            agent: None,
            dir,
            netns_dir,
            netns_name,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts (or restarts) the agent.
    pub fn start_agent(&mut self) {
        let (tx, rx) = oneshot::channel();
        let agent = NodeAgent::new(self.client.clone(), self.cfg.clone());
        self.streams = Some(agent.streams());
        let task = tokio::spawn(async move {
            if let Err(e) = agent
                .run(async {
                    let _ = rx.await;
                })
                .await
            {
                panic!("agent failed: {}", kcore_node::ErrorChain(&e));
            }
        });
        self.agent = Some((tx, task));
    }

    /// Stops the agent (containers keep running).
    pub async fn stop_agent(&mut self) {
        if let Some((tx, task)) = self.agent.take() {
            let _ = tx.send(());
            let _ = task.await;
        }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates a pod bound to the node from a JSON spec.
    pub async fn create_pod(&self, mut v: serde_json::Value) -> Pod {
        v["spec"]["nodeName"] = json!(self.node);
        v["metadata"]["namespace"] = json!(self.namespace);
        self.pods()
            .create(&PostParams::default(), &serde_json::from_value(v).unwrap())
            .await
            .unwrap()
    }

    /// Polls until `f` accepts the pod (or panics after `secs`).
    pub async fn wait_pod(&self, name: &str, secs: u64, f: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let p = self.pods().get_opt(name).await.unwrap();
            if let Some(p) = &p {
                if f(p) {
                    return p.clone();
                }
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "pod {name} did not reach the expected state; last: {}",
                    serde_json::to_string_pretty(&p.map(|p| p.status)).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_gone(&self, name: &str, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while self.pods().get_opt(name).await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pod {name} was not removed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The agent's HTTP address (from the Node's daemon endpoint).
    pub async fn agent_addr(&self) -> SocketAddr {
        let n: Node = Api::<Node>::all(self.client.clone())
            .get(&self.node)
            .await
            .unwrap();
        let port = n
            .status
            .unwrap()
            .daemon_endpoints
            .unwrap()
            .kubelet_endpoint
            .unwrap()
            .port;
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port as u16)
    }

    /// `GET path` on the agent's HTTP server; returns status and body.
    pub async fn agent_get(&self, path: &str) -> (u16, String) {
        http_get(None, self.agent_addr().await, "localhost", path).await
    }

    /// The runtime container ids on the node.
    pub fn container_ids(&self) -> Vec<String> {
        kcore_runtime::Runtime::new(self.cfg.data_dir.join("containers"))
            .list()
            .unwrap_or_default()
    }
}

/// A plain HTTP/1.1 GET, from inside `netns` when given.
pub async fn http_get(
    netns: Option<&Path>,
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = match netns {
        Some(p) => kcore_ns::netns::run_in(p, tokio::net::TcpSocket::new_v4)
            .unwrap()
            .unwrap(),
        None => tokio::net::TcpSocket::new_v4().unwrap(),
    };
    let mut s = tokio::time::timeout(Duration::from_secs(5), sock.connect(addr))
        .await
        .expect("connect timeout")
        .expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("read timeout")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (code, body)
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.agent.take() {
            let _ = tx.send(());
            task.abort();
        }
        let data = self.cfg.data_dir.clone();
        // containers
        let rt = kcore_runtime::Runtime::new(data.join("containers"));
        for id in rt.list().unwrap_or_default() {
            if let Ok(c) = rt.load(&id) {
                let _ = c.delete(true);
            }
        }
        // mounts under the temp dir, deepest first
        kcore_tests::mounts::unmount_under(self.dir.path());
        // cgroups
        if let Ok(h) = kcore_cgroup::Host::detect() {
            if let Ok(cg) = kcore_cgroup::Cgroup::open(&h, &self.cfg.cgroup_parent) {
                let _ = cg.kill();
                let _ = cg.delete();
            }
        }
        let _ = self.netns_dir.remove(&self.netns_name);
    }
}
