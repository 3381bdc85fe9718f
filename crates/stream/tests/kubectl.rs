//! End to end with the real `kubectl` (the one first on PATH; CI puts 1.35 there): an
//! in-process API server over TLS proxies `pods/exec` and `pods/portforward` to a loopback
//! node server (verified TLS) whose backend runs host processes in a temp dir and forwards
//! to loopback listeners. Each case runs with kubectl's defaults (WebSocket) and with SPDY
//! forced, and asserts the protocol the node recorded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kcore_apiserver::{ApiServer, RunningServer};
use kcore_stream::{
    Backend, BackendError, BoxFuture, Duplex, Exit, Process, Sessions, Streams, Target, Transport,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs commands on the host in a temp dir; "pod ports" map to loopback listeners.
struct HostBackend {
    dir: PathBuf,
    ports: HashMap<u16, u16>,
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
                return Err(BackendError::BadRequest(
                    "the test backend has no terminals".into(),
                ));
            }
            let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
            let mut child = Command::new(&command[0])
                .args(&command[1..])
                .current_dir(&self.dir)
                .stdin(pipe(streams.stdin))
                .stdout(pipe(streams.stdout))
                .stderr(pipe(streams.stderr))
                .spawn()
                .map_err(|e| BackendError::Internal(format!("{}: {e}", command[0])))?;
            Ok(Process {
                stdin: child
                    .stdin
                    .take()
                    .map(|s| Box::pin(s) as kcore_stream::Writer),
                stdout: child
                    .stdout
                    .take()
                    .map(|s| Box::pin(s) as kcore_stream::Reader),
                stderr: child
                    .stderr
                    .take()
                    .map(|s| Box::pin(s) as kcore_stream::Reader),
                resize: None,
                exit: Box::pin(async move {
                    use std::os::unix::process::ExitStatusExt;
                    let st = child
                        .wait()
                        .await
                        .map_err(|e| BackendError::Internal(e.to_string()))?;
                    Ok(match (st.code(), st.signal()) {
                        (Some(c), _) => Exit::Code(c),
                        (None, Some(s)) => Exit::Signal(s),
                        (None, None) => Exit::Code(-1),
                    })
                }),
            })
        })
    }

    fn attach(&self, t: Target, _: Streams) -> BoxFuture<'_, Result<Process, BackendError>> {
        Box::pin(async move {
            Err(BackendError::BadRequest(format!(
                "container {} has no attachable stdio in the test backend",
                t.container
            )))
        })
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

struct Cluster {
    server: RunningServer,
    sessions: Sessions,
    kubeconfig: PathBuf,
    cache: PathBuf,
    node: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// A pod's "port 8080": reads everything, then answers its length and FNV-1a hash and
/// the bytes back, each xor 0x5a.
async fn pod_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut data = Vec::new();
                if s.read_to_end(&mut data).await.is_err() {
                    return;
                }
                let mut head = (data.len() as u64).to_be_bytes().to_vec();
                head.extend_from_slice(&fnv(&data).to_be_bytes());
                for b in &mut data {
                    *b ^= 0x5a;
                }
                let _ = s.write_all(&head).await;
                let _ = s.write_all(&data).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

async fn start() -> Cluster {
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
    let workdir = dir.path().join("pod");
    std::fs::create_dir_all(&workdir).unwrap();
    let backend = HostBackend {
        dir: workdir,
        ports: HashMap::from([(8080, pod_port().await)]),
    };
    let sessions = Sessions::default();
    let app = kcore_stream::routes(Some(Arc::new(backend)), sessions.clone());
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
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [
            {"name": "c", "image": "busybox"}, {"name": "sidecar", "image": "busybox"}]}}))
    .unwrap();
    let mut pod = api.create(Some("default"), &pod).await.unwrap();
    pod.status = Some(
        serde_json::from_value(serde_json::json!({"phase": "Running", "podIP": "127.0.0.1"}))
            .unwrap(),
    );
    api.replace_status(Some("default"), &pod).await.unwrap();

    Cluster {
        server,
        sessions,
        kubeconfig,
        cache: dir.path().join("cache"),
        node,
        _dir: dir,
    }
}

/// The transport kubectl is asked to use.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Defaults,
    Spdy,
}

fn kubectl(c: &Cluster, mode: Mode, args: &[&str]) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .arg("--cache-dir")
        .arg(&c.cache)
        .args(args)
        .env("HOME", c.cache.parent().unwrap_or(Path::new("/tmp")))
        .env_remove("KUBECONFIG")
        .env_remove("KUBECTL_REMOTE_COMMAND_WEBSOCKETS")
        .env_remove("KUBECTL_PORT_FORWARD_WEBSOCKETS")
        .kill_on_drop(true);
    if mode == Mode::Spdy {
        cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");
    }
    cmd
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(c: &Cluster, mode: Mode, args: &[&str], stdin: Option<&[u8]>) -> Out {
    let mut cmd = kubectl(c, mode, args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("kubectl must be on PATH (CI installs it)");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().unwrap();
        s.write_all(input).await.unwrap();
        drop(s);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl finishes")
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The transport and protocol the node recorded for the newest session of `kind`.
fn last(c: &Cluster, kind: &str) -> (Transport, String) {
    let r = c
        .sessions
        .recent()
        .into_iter()
        .rev()
        .find(|s| s.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} session recorded"));
    (r.transport, r.protocol)
}

async fn exec_cases(mode: Mode) {
    let c = start().await;
    let (want_transport, want_protocol) = match mode {
        Mode::Defaults => (Transport::WebSocket, "v5.channel.k8s.io"),
        Mode::Spdy => (Transport::Spdy, "v4.channel.k8s.io"),
    };

    // output split and exit code
    let out = run(
        &c,
        mode,
        &[
            "exec",
            "p",
            "-c",
            "c",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        None,
    )
    .await;
    assert_eq!(out.code, Some(3), "exit code 3: {}", out.stderr);
    assert_eq!(out.stdout, "out\n");
    assert!(out.stderr.starts_with("err\n"), "stderr: {:?}", out.stderr);
    assert_eq!(last(&c, "exec"), (want_transport, want_protocol.into()));

    // a zero exit
    let out = run(
        &c,
        mode,
        &["exec", "p", "-c", "sidecar", "--", "true"],
        None,
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    // stdin piped through, ended by the client's close
    let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let out = run(
        &c,
        mode,
        &[
            "exec",
            "-i",
            "p",
            "-c",
            "c",
            "--",
            "sh",
            "-c",
            "cat | wc -c",
        ],
        Some(&input),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "200000");
    let out = run(
        &c,
        mode,
        &["exec", "-i", "p", "-c", "c", "--", "cat"],
        Some(b"hi\n"),
    )
    .await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "hi\n"),
        "{}",
        out.stderr
    );
    assert_eq!(last(&c, "exec"), (want_transport, want_protocol.into()));

    // upstream's refusals
    let out = run(&c, mode, &["exec", "p", "-c", "nope", "--", "true"], None).await;
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("container nope is not valid for pod p"),
        "{}",
        out.stderr
    );
    // kubectl picks the first container itself, and says so
    let out = run(&c, mode, &["exec", "p", "--", "true"], None).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("Defaulted container \"c\""),
        "{}",
        out.stderr
    );
    c.node.abort();
    c.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_exec_over_websocket() {
    exec_cases(Mode::Defaults).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_exec_over_spdy() {
    exec_cases(Mode::Spdy).await;
}

/// One connection through the forwarded local port: `len` bytes up, checked answer down.
async fn one_connection(local: u16, seed: u64, len: usize) {
    let mut x = seed | 1;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let s = tokio::net::TcpStream::connect(("127.0.0.1", local))
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let up = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&up).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    rd.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), 16 + len, "answer length");
    assert_eq!(&back[..8], &(len as u64).to_be_bytes());
    assert_eq!(
        &back[8..16],
        &fnv(&data).to_be_bytes(),
        "checksum of the upload"
    );
    assert!(
        back[16..].iter().zip(&data).all(|(b, d)| *b == d ^ 0x5a),
        "the download matches"
    );
}

async fn port_forward_cases(mode: Mode) {
    let c = start().await;
    let mut child = kubectl(&c, mode, &["port-forward", "pod/p", ":8080", ":9"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl must be on PATH (CI installs it)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut local = HashMap::new();
    while local.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("kubectl reports its ports")
            .unwrap()
            .expect("kubectl keeps running");
        // "Forwarding from 127.0.0.1:43567 -> 8080"
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            let (l, r) = rest.split_once(" -> ").unwrap();
            local.insert(r.trim().parse::<u16>().unwrap(), l.parse::<u16>().unwrap());
        }
    }
    let fwd = local[&8080];
    // two concurrent connections with 16 MiB each way
    let a = tokio::spawn(one_connection(fwd, 1, 16 << 20));
    let b = tokio::spawn(one_connection(fwd, 2, 16 << 20));
    a.await.unwrap();
    b.await.unwrap();
    // and a small one after them
    one_connection(fwd, 3, 10).await;
    let want = match mode {
        Mode::Defaults => (
            Transport::WebSocketSpdyTunnel,
            kcore_stream::TUNNEL_PROTOCOL.to_owned(),
        ),
        Mode::Spdy => (Transport::Spdy, "portforward.k8s.io".to_owned()),
    };
    assert_eq!(last(&c, "portforward"), want);

    // nothing listens on the pod's port 9: the error stream says so
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", local[&9]))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    assert!(buf.is_empty());
    let mut err = String::new();
    let mut stderr = child.stderr.take().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        let mut chunk = [0u8; 4096];
        while !err.contains("error forwarding port 9 to pod p") {
            match stderr.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => err.push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    })
    .await;
    assert!(
        err.contains("error forwarding port 9 to pod p")
            && err.contains("failed to connect to localhost:9 inside the pod"),
        "kubectl's stderr: {err}"
    );
    let _ = child.kill().await;
    c.node.abort();
    c.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_port_forward_over_websocket() {
    port_forward_cases(Mode::Defaults).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_port_forward_over_spdy() {
    port_forward_cases(Mode::Spdy).await;
}
