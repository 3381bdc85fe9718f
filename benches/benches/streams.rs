//! kcore-stream through the API server: port-forward throughput and exec latency, each
//! next to its anchor in the same run (issue 20's benchmark).
//!
//! The cluster is kcore-stream's end-to-end harness (`crates/stream/tests/support`): an
//! in-process API server over TLS and a node whose backend runs host processes and
//! forwards the pod's port 8080 to a loopback listener. That "pod port" reads a length
//! and that many bytes, then answers their SHA-256 and the bytes back. The node's
//! streaming routes are registered in the API server's `LocalNodes`, as `kcored up`
//! registers its own agent: the API server hands `pods/exec` and `pods/portforward` to
//! them on the client's connection. The node also serves them on its port (verified
//! TLS), which the API server dials for a node running elsewhere.
//!
//! - **port-forward**: a Rust WebSocket client speaking `v4.channel.k8s.io` port-forward
//!   framing (the Python client's) to `pods/p/portforward` on the API server carries
//!   `KCORE_BENCH_MIB` MiB (default 64) to the pod's port and back, checking the digest.
//!   The anchor is a direct loopback connection into the pod's port carrying the same
//!   bytes. Prints both medians and the ratio (goal: at least 0.5), and the same rounds
//!   with the API server dialing the node's port (a node running elsewhere), alternated
//!   with the others.
//! - **kubectl port-forward**: the same rounds through `kubectl port-forward pod/p
//!   :8080` with kubectl's defaults (from 1.31 on, `SPDY/3.1+portforward.k8s.io` tunnelled
//!   in WebSocket: what kubectl users get), next to direct rounds; prints the throughput,
//!   the ratio, and the CPU time of this process and of kubectl per round. Skipped, saying
//!   so, without kubectl.
//! - **exec**: `true` over `v5.channel.k8s.io` to `pods/p/exec` on the API server, timed
//!   by the client from the request (TCP connect, TLS, upgrade) to the exit Status on
//!   the error channel, next to the node's span of the same session (from the request's
//!   arrival at the node to the session's end, as [`kcore_stream::Sessions`] records it),
//!   spawning `true` directly, and the whole `kubectl exec p -- true` for reference
//!   (kubectl from PATH or the workspace's `target/tools/bin`; skipped, saying so, when
//!   there is none). Goal: a client median of at most 20 ms.
//!
//! `cargo bench -p kcore-benches --bench streams`
//! Environment: `KCORE_BENCH_MIB` (per port-forward round, default 64),
//! `KCORE_BENCH_ROUNDS` (port-forward rounds, default 5), `KCORE_BENCH_EXECS` (default
//! 200), `KCORE_BENCH_KUBECTL` (kubectl runs, default 10).

mod common;
use common::{env_num, process_cpu};

#[path = "../../crates/stream/tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use futures::{SinkExt, StreamExt};
use support::{Cluster, NodePath};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Bytes, Message};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;
type Ws = tokio_tungstenite::WebSocketStream<Tls>;

/// The API server's address, a TLS client trusting the cluster CA, and the admin's
/// bearer token from the cluster's kubeconfig (when it has one).
struct Api {
    port: u16,
    tls: tokio_rustls::TlsConnector,
    token: Option<String>,
}

impl Api {
    fn new(c: &Cluster) -> Api {
        let port = c
            .server
            .url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the API server's port");
        let cfg = kcore_tls::client_config(&c.ca_pem, None).expect("a TLS client configuration");
        let kubeconfig = std::fs::read_to_string(&c.kubeconfig).expect("the kubeconfig");
        let token = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .map(str::to_owned);
        Api {
            port,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            token,
        }
    }

    /// A WebSocket on `path` of the API server with subprotocol `protocol`.
    async fn connect(&self, path: &str, protocol: &str) -> Ws {
        let mut req = format!("wss://127.0.0.1:{}{path}", self.port)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().unwrap());
        if let Some(t) = &self.token {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .expect("TLS to the API server");
        let mut cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        cfg.max_message_size = Some(64 << 20);
        // a TLS read yields a record (16 KiB at most), and tungstenite zeroes what it asks
        // for before each read: ask for little more than a record, as the node does
        cfg.read_buffer_size = 32 * 1024;
        let (ws, resp) = tokio_tungstenite::client_async_with_config(req, tls, Some(cfg))
            .await
            .expect("the upgrade");
        assert_eq!(
            resp.headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(protocol)
        );
        ws
    }
}

/// What a round sends to the pod's port: an 8-byte length and the bytes.
struct Payload {
    data: Vec<u8>,
    digest: Vec<u8>,
    /// The same bytes as port-forward messages on channel 0 (made before the clock runs:
    /// the client's work is not what is measured).
    messages: Vec<Bytes>,
}

impl Payload {
    fn new(len: usize) -> Payload {
        const BLOCK: usize = 256 * 1024;
        let mut data = (len as u64).to_be_bytes().to_vec();
        let body = support::noise(20, len);
        let digest = support::sha256(&body);
        data.extend_from_slice(&body);
        let messages = data
            .chunks(BLOCK)
            .map(|chunk| {
                let mut m = Vec::with_capacity(chunk.len() + 1);
                m.push(0u8);
                m.extend_from_slice(chunk);
                Bytes::from(m)
            })
            .collect();
        Payload {
            data,
            digest,
            messages,
        }
    }

    /// The bytes the pod answers with: the digest, then the body.
    fn answer_len(&self) -> usize {
        self.digest.len() + self.data.len() - 8
    }
}

/// One round through `pods/p/portforward` on the API server; returns its time.
async fn forwarded_round(api: &Api, p: &Arc<Payload>) -> Duration {
    let ws = api
        .connect(
            "/api/v1/namespaces/default/pods/p/portforward?ports=8080",
            "v4.channel.k8s.io",
        )
        .await;
    let (mut sink, mut stream) = ws.split();
    let t = Instant::now();
    let up = {
        let p = p.clone();
        tokio::spawn(async move {
            for m in &p.messages {
                sink.feed(Message::Binary(m.clone())).await.unwrap();
            }
            sink.flush().await.unwrap();
            sink
        })
    };
    // each channel's first message is its port; the answer follows on channel 0
    let want = p.answer_len();
    let mut head = Vec::with_capacity(p.digest.len());
    let mut got = 0usize;
    let mut first = [true, true];
    while got < want {
        match stream.next().await {
            Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                let ch = usize::from(b[0]);
                if ch < 2 && first[ch] {
                    first[ch] = false;
                    continue;
                }
                assert_eq!(ch, 0, "error channel: {}", String::from_utf8_lossy(&b[1..]));
                let body = &b[1..];
                let need = p.digest.len().saturating_sub(head.len()).min(body.len());
                head.extend_from_slice(&body[..need]);
                got += body.len();
            }
            Some(Ok(_)) => {}
            other => panic!("forwarded connection ended after {got} bytes: {other:?}"),
        }
    }
    let elapsed = t.elapsed();
    assert_eq!(head, p.digest, "the pod's digest of what it received");
    assert_eq!(got, want);
    let _ = up.await.unwrap().close().await;
    elapsed
}

/// The same round over a direct loopback connection into the pod's port.
async fn direct_round(pod_port: u16, p: &Arc<Payload>) -> Duration {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", pod_port))
        .await
        .unwrap();
    let _ = s.set_nodelay(true);
    let (mut rd, mut wr) = s.into_split();
    let t = Instant::now();
    let up = {
        let p = p.clone();
        tokio::spawn(async move {
            wr.write_all(&p.data).await.unwrap();
            wr
        })
    };
    let want = p.answer_len();
    let mut head = vec![0u8; p.digest.len()];
    rd.read_exact(&mut head).await.unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = head.len();
    while got < want {
        let n = rd.read(&mut buf).await.unwrap();
        assert!(n > 0, "the pod's port closed early");
        got += n;
    }
    let elapsed = t.elapsed();
    assert_eq!(head, p.digest);
    drop(up.await.unwrap());
    elapsed
}

/// One exec of `true` over v5 through the API server: from the request to the exit
/// Status; returns that time and the node's span of the same session.
async fn exec_true(api: &Api, c: &Cluster) -> (Duration, Duration) {
    let t = Instant::now();
    let mut ws = api
        .connect(
            "/api/v1/namespaces/default/pods/p/exec?container=c&command=true&stdout=true&stderr=true",
            "v5.channel.k8s.io",
        )
        .await;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) if b.first() == Some(&3) => {
                assert!(
                    String::from_utf8_lossy(&b[1..]).contains("Success"),
                    "exit status: {:?}",
                    String::from_utf8_lossy(&b[1..])
                );
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("exec ended without a status: {other:?}"),
        }
    }
    let elapsed = t.elapsed();
    let _ = ws.close(None).await;
    // the node's record of this session (the newest exec), once it has ended
    let deadline = Instant::now() + Duration::from_secs(5);
    let server = loop {
        let last = c
            .sessions
            .recent()
            .into_iter()
            .rev()
            .find(|s| s.kind == "exec");
        if let Some(us) = last.and_then(|s| s.duration_micros) {
            break Duration::from_micros(us);
        }
        assert!(
            Instant::now() < deadline,
            "the node never ended the session"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    (elapsed, server)
}

/// kubectl from PATH, else the workspace's `target/tools/bin` (where `tests/run.sh`
/// installs 1.35).
fn find_kubectl() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("kubectl"))
            .find(|k| k.is_file())
    });
    on_path.or_else(|| {
        let k = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/bin/kubectl");
        k.is_file().then_some(k)
    })
}

/// The whole `kubectl exec p -c c -- true`, from start to exit.
fn kubectl_exec_true(kubectl: &std::path::Path, c: &Cluster) -> Duration {
    let t = Instant::now();
    let out = std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .arg("--cache-dir")
        .arg(&c.cache)
        .args(["exec", "p", "-c", "c", "--", "true"])
        .env_remove("KUBECONFIG")
        .env_remove("KUBECTL_REMOTE_COMMAND_WEBSOCKETS")
        .output()
        .expect("run kubectl");
    let elapsed = t.elapsed();
    assert!(
        out.status.success(),
        "kubectl exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// The CPU time (user and system, all threads) process `pid` has used so far.
fn pid_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the fields after the command name (which may hold spaces) start with the state
    // (field 3); utime and stime are fields 14 and 15, in clock ticks
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(f.iter().sum::<u64>() * 1_000_000_000 / hz)
}

/// `kubectl port-forward pod/p :8080` with kubectl's defaults (from 1.31 on: SPDY tunnelled
/// in WebSocket); returns it and the local port it listens on.
async fn kubectl_forward(kubectl: &std::path::Path, c: &Cluster) -> (tokio::process::Child, u16) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .arg("--cache-dir")
        .arg(&c.cache)
        .args(["port-forward", "pod/p", ":8080"])
        .env_remove("KUBECONFIG")
        .env_remove("KUBECTL_PORT_FORWARD_WEBSOCKETS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run kubectl port-forward");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("kubectl port-forward reports its port")
            .unwrap()
            .expect("kubectl port-forward keeps running");
        // "Forwarding from 127.0.0.1:43567 -> 8080"
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            let (local, _) = rest.split_once(" -> ").expect("a port mapping");
            break local.parse::<u16>().expect("a local port");
        }
    };
    // keep reading ("Handling connection for 8080"): a closed pipe would end kubectl
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cluster = rt.block_on(support::start_with(NodePath::InProcess));
    let api = Api::new(&cluster);
    let mib = env_num("KCORE_BENCH_MIB", 64) as usize;
    let rounds = env_num("KCORE_BENCH_ROUNDS", 5).max(1);
    let execs = env_num("KCORE_BENCH_EXECS", 200).max(1);
    let kubectls = env_num("KCORE_BENCH_KUBECTL", 10).max(1);
    let payload = Arc::new(Payload::new(mib << 20));

    // port-forward (to the node in process, and dialing the node's port) vs direct, in
    // alternating rounds; with the CPU time the whole process (client, API server, node
    // and pod alike) spent on each, which a loaded machine does not inflate as it does
    // the elapsed time
    let (mut fwd, mut dialed, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fwd_cpu, mut dialed_cpu, mut direct_cpu) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        for _ in 0..rounds {
            let c = process_cpu();
            fwd.push(forwarded_round(&api, &payload).await);
            fwd_cpu.push(process_cpu().saturating_sub(c));
            cluster.set_path(NodePath::Dial);
            let c = process_cpu();
            dialed.push(forwarded_round(&api, &payload).await);
            dialed_cpu.push(process_cpu().saturating_sub(c));
            cluster.set_path(NodePath::InProcess);
            let c = process_cpu();
            direct.push(direct_round(cluster.pod_8080, &payload).await);
            direct_cpu.push(process_cpu().saturating_sub(c));
        }
    });
    let rate = |d: Duration| 2.0 * mib as f64 / d.as_secs_f64();
    let (f, dl, d) = (median(fwd), median(dialed), median(direct));
    println!(
        "port-forward {mib} MiB up and back: {:.0} MiB/s through the API server to the node in its process (median of {rounds}), {:.0} MiB/s direct into the pod; ratio {:.2} (goal >= 0.50)",
        rate(f),
        rate(d),
        rate(f) / rate(d)
    );
    println!(
        "port-forward {mib} MiB up and back, the API server dialing the node's port: {:.0} MiB/s; ratio {:.2} to direct",
        rate(dl),
        rate(dl) / rate(d)
    );
    let (fc, dlc, dc) = (median(fwd_cpu), median(dialed_cpu), median(direct_cpu));
    println!(
        "port-forward CPU time per round: {:.0} ms to the node in process, {:.0} ms dialing the node, {:.0} ms direct (ratio {:.2}); {:.1} ms per MiB forwarded",
        ms(fc),
        ms(dlc),
        ms(dc),
        dc.as_secs_f64() / fc.as_secs_f64().max(1e-9),
        ms(fc) / (2.0 * mib as f64)
    );

    // what kubectl users get: `kubectl port-forward` (SPDY tunnelled in WebSocket) carrying
    // the same rounds, next to direct rounds; kubectl's CPU is its own process's
    match find_kubectl() {
        Some(k) => rt.block_on(async {
            let (child, local) = kubectl_forward(&k, &cluster).await;
            let pid = child.id().expect("kubectl runs");
            let (mut fwd, mut direct) = (Vec::new(), Vec::new());
            let (mut own_cpu, mut kubectl_cpu) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let (c, kc) = (process_cpu(), pid_cpu(pid));
                fwd.push(direct_round(local, &payload).await);
                own_cpu.push(process_cpu().saturating_sub(c));
                kubectl_cpu.push(pid_cpu(pid).saturating_sub(kc));
                direct.push(direct_round(cluster.pod_8080, &payload).await);
            }
            let (transport, protocol) = cluster.last("portforward");
            let (f, d) = (median(fwd), median(direct));
            println!(
                "kubectl port-forward ({} {protocol}) {mib} MiB up and back: {:.0} MiB/s through kubectl, the API server and the node (median of {rounds}), {:.0} MiB/s direct; ratio {:.2}; CPU per round {:.0} ms in the API server, node and pod, {:.0} ms in kubectl",
                transport.as_str(),
                rate(f),
                rate(d),
                rate(f) / rate(d),
                ms(median(own_cpu)),
                ms(median(kubectl_cpu)),
            );
            drop(child);
        }),
        None => println!(
            "kubectl port-forward: skipped, no kubectl on PATH or in target/tools/bin"
        ),
    }

    // exec `true`: the client's time, the node's span of it, and spawning `true`
    let (mut client, mut server, mut spawn) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        for _ in 0..execs {
            let (e, s) = exec_true(&api, &cluster).await;
            client.push(e);
            server.push(s);
            let t = Instant::now();
            let st = tokio::process::Command::new("true").status().await.unwrap();
            assert!(st.success());
            spawn.push(t.elapsed());
        }
    });
    let (e, s, sp) = (median(client), median(server), median(spawn));
    println!(
        "exec true over v5 through the API server ({execs} runs): median {:.2} ms from request to exit status (goal <= 20 ms); the node's span of the same sessions {:.2} ms; spawning `true` directly {:.2} ms",
        ms(e),
        ms(s),
        ms(sp)
    );
    match find_kubectl() {
        Some(k) => {
            let runs: Vec<Duration> = (0..kubectls)
                .map(|_| kubectl_exec_true(&k, &cluster))
                .collect();
            println!(
                "kubectl exec p -- true, the whole command ({}): median {:.0} ms of {kubectls}",
                k.display(),
                ms(median(runs))
            );
        }
        None => {
            println!("kubectl exec p -- true: skipped, no kubectl on PATH or in target/tools/bin")
        }
    }

    // criterion's own figures for the two kcore paths
    let mut g = c.benchmark_group("streams");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("exec_true_v5_via_apiserver", |b| {
        b.iter(|| rt.block_on(exec_true(&api, &cluster)))
    });
    let small = Arc::new(Payload::new(8 << 20));
    g.bench_function("port_forward_8mib_via_apiserver", |b| {
        b.iter(|| rt.block_on(forwarded_round(&api, &small)))
    });
    g.finish();
    rt.block_on(cluster.stop());
}

criterion::criterion_group!(benches, bench);
criterion::criterion_main!(benches);
