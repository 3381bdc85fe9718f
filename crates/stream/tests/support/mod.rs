//! The harness of the end-to-end tests: an in-process API server over TLS, a loopback
//! node server (verified TLS, the cluster CA's certificate for 127.0.0.1) serving
//! [`kcore_stream::routes`] on a backend that runs host processes in a temp dir and
//! forwards the pod's port 8080 to a loopback listener, a node `n1` and a running pod `p`
//! (containers `c` and `sidecar`) bound to it. The API server dials the node's port, or
//! ([`NodePath::InProcess`]) hands the streams to the node's routes registered in its
//! `LocalNodes`, as `kcored up` does with its own agent.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kcore_apiserver::{ApiServer, RunningServer};
use kcore_stream::{
    Backend, BackendError, BoxFuture, Duplex, Process, Sessions, Streams, Target, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs commands on the host in a temp dir; "pod ports" map to loopback listeners.
pub struct HostBackend {
    dir: PathBuf,
    ports: HashMap<u16, u16>,
}

impl HostBackend {
    /// Runs commands in `dir`; the pod's port `k` is the loopback port `ports[k]`.
    pub fn new(dir: PathBuf, ports: HashMap<u16, u16>) -> HostBackend {
        HostBackend { dir, ports }
    }
}

impl Backend for HostBackend {
    fn exec(
        &self,
        t: Target,
        command: Vec<String>,
        streams: Streams,
    ) -> BoxFuture<'_, Result<Process, BackendError>> {
        Box::pin(async move {
            if t.container != "c" && t.container != "sidecar" {
                return Err(BackendError::NotFound(format!(
                    "container not found (\"{}\")",
                    t.container
                )));
            }
            if streams.tty {
                return tty_exec(&self.dir, &command);
            }
            let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
            let child = Command::new(&command[0])
                .args(&command[1..])
                .current_dir(&self.dir)
                .stdin(pipe(streams.stdin))
                .stdout(pipe(streams.stdout))
                .stderr(pipe(streams.stderr))
                .process_group(0)
                .spawn()
                .map_err(|e| BackendError::Internal(format!("{}: {e}", command[0])))?;
            Ok(Process::from_child(child))
        })
    }

    /// Attaches to a fresh `cat` (a stand-in for a container's main process).
    fn attach(&self, t: Target, streams: Streams) -> BoxFuture<'_, Result<Process, BackendError>> {
        self.exec(t, vec!["cat".into()], streams)
    }

    fn port_forward(
        &self,
        _: Target,
        port: u16,
    ) -> BoxFuture<'_, Result<Box<dyn Duplex>, BackendError>> {
        Box::pin(async move {
            let refused = || {
                BackendError::Internal(format!(
                    "failed to connect to localhost:{port} inside the pod: connection refused"
                ))
            };
            let real = self.ports.get(&port).ok_or_else(refused)?;
            let s = tokio::net::TcpStream::connect(("127.0.0.1", *real))
                .await
                .map_err(|_| refused())?;
            Ok(Box::new(s) as Box<dyn Duplex>)
        })
    }
}

/// How the API server reaches the node's streaming endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePath {
    /// Over verified TLS to the node's port, spliced.
    Dial,
    /// To the node's routes in this process, on the client's connection.
    InProcess,
}

pub struct Cluster {
    /// The loopback port behind the pod's port 8080 (for direct comparisons).
    pub pod_8080: u16,
    pub server: RunningServer,
    /// The cluster CA's certificate (PEM): it signs the API server's and the node's.
    pub ca_pem: String,
    pub sessions: Sessions,
    pub kubeconfig: PathBuf,
    pub cache: PathBuf,
    pub node: tokio::task::JoinHandle<()>,
    pub path: NodePath,
    local_nodes: kcore_apiserver::LocalNodes,
    /// The node's routes as registered in process.
    local_routes: axum::Router,
    local: Option<kcore_apiserver::LocalNodeRegistration>,
    pub _dir: tempfile::TempDir,
}

impl Cluster {
    /// The transport and protocol the node recorded for the newest session of `kind`,
    /// which must have come the cluster's [`NodePath`].
    pub fn last(&self, kind: &str) -> (Transport, String) {
        let r = self
            .sessions
            .recent()
            .into_iter()
            .rev()
            .find(|s| s.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} session recorded"));
        assert_eq!(
            r.in_process,
            self.path == NodePath::InProcess,
            "the {kind} session came the other way: {r:?}"
        );
        (r.transport, r.protocol)
    }

    /// From now on the API server reaches the node by `path`.
    pub fn set_path(&mut self, path: NodePath) {
        self.local = (path == NodePath::InProcess)
            .then(|| self.local_nodes.register("n1", self.local_routes.clone()));
        self.path = path;
    }

    /// Stops the node and the API server.
    pub async fn stop(self) {
        self.node.abort();
        self.server.shutdown().await.unwrap();
    }
}

/// A pod's "port 8080": reads a length (8 bytes, big-endian) and that many bytes, then
/// answers their SHA-256 and the bytes back, and closes.
pub async fn pod_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut len = [0u8; 8];
                if s.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut data = vec![0u8; u64::from_be_bytes(len) as usize];
                if s.read_exact(&mut data).await.is_err() {
                    return;
                }
                let _ = s.write_all(&sha256(&data)).await;
                let _ = s.write_all(&data).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// The SHA-256 of `data` (ring's, fast even in a debug build).
pub fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// `len` bytes of test data: a MiB of xorshift noise from `seed`, repeated, each
/// repetition stamped with its index (so that lost, doubled or reordered MiBs show).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    const BLOCK: usize = 1 << 20;
    let mut x = seed | 1;
    let block: Vec<u8> = (0..BLOCK / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let mut data = Vec::with_capacity(len + BLOCK);
    let mut i = 0u64;
    while data.len() < len {
        let at = data.len();
        data.extend_from_slice(&block);
        data[at..at + 8].copy_from_slice(&i.to_le_bytes());
        i += 1;
    }
    data.truncate(len);
    data
}

pub async fn start() -> Cluster {
    start_with(NodePath::Dial).await
}

pub async fn start_with(path: NodePath) -> Cluster {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-stream-{}-{n}-", std::process::id()))
        .tempdir()
        .unwrap();
    let data = dir.path().join("data");
    let server = ApiServer::builder()
        .data_dir(&data)
        .listen("127.0.0.1:0".parse().unwrap())
        .build()
        .await
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let local_nodes = server.local_nodes();
    let server = server.spawn();

    // the node's serving certificate from the cluster CA, for its loopback address
    let ca = kcore_tls::Ca::load_or_create(&data.join("pki")).unwrap();
    let serving = ca
        .issue("n1", &["127.0.0.1".into()], kcore_tls::Usage::Server)
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_port = tcp.local_addr().unwrap().port();
    let listener = kcore_tls::TlsListener::new(
        tcp,
        kcore_tls::server_config(&serving, Some(ca.cert_pem())).unwrap(),
    )
    .unwrap();
    let pod_8080 = pod_port().await;
    let workdir = dir.path().join("pod");
    std::fs::create_dir_all(&workdir).unwrap();
    let backend: Arc<dyn Backend> = Arc::new(HostBackend {
        dir: workdir,
        ports: HashMap::from([(8080, pod_8080)]),
    });
    let sessions = Sessions::default();
    let app = kcore_stream::routes(Some(backend.clone()), sessions.clone());
    let local_routes = kcore_stream::routes(Some(backend), sessions.clone())
        .layer(axum::Extension(kcore_stream::InProcess));
    let node = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let api = server.api().clone();
    let node_obj: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": node_port}}}}))
    .unwrap();
    api.create(None, &node_obj).await.unwrap();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default", "labels": {"app": "p"}},
        "spec": {"nodeName": "n1", "containers": [
            {"name": "c", "image": "busybox"}, {"name": "sidecar", "image": "busybox"}]}}))
    .unwrap();
    let mut pod = api.create(Some("default"), &pod).await.unwrap();
    pod.status = Some(
        serde_json::from_value(serde_json::json!({"phase": "Running", "podIP": "127.0.0.1"}))
            .unwrap(),
    );
    api.replace_status(Some("default"), &pod).await.unwrap();

    // a Service in front of it (port 80 -> 8080), for `kubectl port-forward svc/s`
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "s", "namespace": "default"},
        "spec": {"selector": {"app": "p"}, "ports": [{"port": 80, "targetPort": 8080}]}}))
    .unwrap();
    api.create(Some("default"), &svc).await.unwrap();

    let mut cluster = Cluster {
        pod_8080,
        server,
        ca_pem: ca.cert_pem().to_owned(),
        sessions,
        kubeconfig,
        cache: dir.path().join("cache"),
        node,
        path: NodePath::Dial,
        local_nodes,
        local_routes,
        local: None,
        _dir: dir,
    };
    cluster.set_path(path);
    cluster
}

/// A pseudo-terminal pair (master, slave) of `rows` x `cols`.
pub fn openpty(rows: u16, cols: u16) -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut m, mut s) = (0, 0);
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: the out-pointers are live locals; a null name and termios are allowed.
    let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty returned two fresh descriptors that nothing else owns.
    unsafe { (std::fs::File::from_raw_fd(m), std::fs::File::from_raw_fd(s)) }
}

/// Makes the child a session leader with its stdin (a pty slave) as controlling terminal.
pub fn controlling_terminal(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
}

/// An exec on a fresh pty (size 0x0 until the client's first resize).
fn tty_exec(dir: &std::path::Path, command: &[String]) -> Result<Process, BackendError> {
    use std::os::fd::AsRawFd;
    let (master, slave) = openpty(0, 0);
    let io = |e: std::io::Error| BackendError::Internal(e.to_string());
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .current_dir(dir)
        .stdin(Stdio::from(slave.try_clone().map_err(io)?))
        .stdout(Stdio::from(slave.try_clone().map_err(io)?))
        .stderr(Stdio::from(slave));
    controlling_terminal(&mut cmd);
    let child = cmd.spawn().map_err(io)?;
    drop(cmd);
    let writer = master.try_clone().map_err(io)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<kcore_stream::TerminalSize>();
    let sizer = master.try_clone().map_err(io)?;
    tokio::spawn(async move {
        while let Some(sz) = rx.recv().await {
            let ws = libc::winsize {
                ws_row: sz.height,
                ws_col: sz.width,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads a winsize from a live local.
            unsafe { libc::ioctl(sizer.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        }
    });
    Ok(Process {
        stdin: Some(Box::pin(tokio::fs::File::from_std(writer))),
        stdout: Some(Box::pin(tokio::fs::File::from_std(master))),
        resize: Some(tx),
        ..Process::from_child(child)
    })
}
