//! kcore-stream: port-forward throughput and exec round-trip latency through the node's
//! streaming server, each next to its anchor in the same run.
//!
//! - **port-forward**: a Rust WebSocket client speaking `v4.channel.k8s.io` port-forward
//!   framing (the Python client's) to a loopback node server, which dials a loopback echo
//!   server standing in for the pod; `KCORE_BENCH_MIB` MiB (default 64) go up and come back
//!   down. The anchor is a direct loopback TCP connection to the same echo server carrying
//!   the same bytes. Prints both medians and the ratio.
//! - **exec**: `true` over `v5.channel.k8s.io`, from the request to the exit Status on the
//!   error channel, with the node's backend running host processes. The anchor is spawning
//!   `true` directly and waiting for it.
//!
//! `cargo bench -p kcore-benches --bench streams`
//! Environment: `KCORE_BENCH_MIB` (per port-forward round, default 64),
//! `KCORE_BENCH_ROUNDS` (port-forward rounds, default 5), `KCORE_BENCH_EXECS` (default 200).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use futures::{SinkExt, StreamExt};
use kcore_stream::{
    Backend, BackendError, BoxFuture, Duplex, Exit, Process, Sessions, Streams, Target,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs exec'd commands as host processes; the pod's every port is the echo server.
struct HostPod {
    echo: u16,
}

impl Backend for HostPod {
    fn exec(
        &self,
        _: Target,
        command: Vec<String>,
        streams: Streams,
    ) -> BoxFuture<'_, Result<Process, BackendError>> {
        Box::pin(async move {
            let pipe = |on: bool| {
                if on {
                    std::process::Stdio::piped()
                } else {
                    std::process::Stdio::null()
                }
            };
            let mut child = tokio::process::Command::new(&command[0])
                .args(&command[1..])
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
                kill: None,
                exit: Box::pin(async move {
                    let st = child
                        .wait()
                        .await
                        .map_err(|e| BackendError::Internal(e.to_string()))?;
                    Ok(Exit::Code(st.code().unwrap_or(-1)))
                }),
            })
        })
    }

    fn attach(&self, t: Target, _: Streams) -> BoxFuture<'_, Result<Process, BackendError>> {
        Box::pin(async move { Err(BackendError::NotFound(format!("pod {}", t.pod))) })
    }

    fn port_forward(
        &self,
        _: Target,
        _: u16,
    ) -> BoxFuture<'_, Result<Box<dyn Duplex>, BackendError>> {
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(("127.0.0.1", self.echo))
                .await
                .map_err(|e| BackendError::Internal(e.to_string()))?;
            let _ = s.set_nodelay(true);
            Ok(Box::new(s) as Box<dyn Duplex>)
        })
    }
}

/// A loopback echo server (the "pod").
async fn echo_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = s.into_split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                let _ = wr.shutdown().await;
            });
        }
    });
    port
}

/// A plain-HTTP node server on loopback.
async fn node(echo: u16) -> u16 {
    let app = kcore_stream::routes(Some(Arc::new(HostPod { echo })), Sessions::default());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await });
    port
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(port: u16, path: &str, protocol: &str) -> Ws {
    let mut req = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let _ = tcp.set_nodelay(true);
    let mut cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    cfg.max_message_size = Some(64 << 20);
    tokio_tungstenite::client_async_with_config(req, tcp, Some(cfg))
        .await
        .unwrap()
        .0
}

/// Sends `total` bytes up through a forwarded port and reads them back; returns the time.
async fn forwarded_round(node: u16, block: &[u8], total: usize) -> Duration {
    let ws = connect(
        node,
        "/portforward/default/p?ports=8080",
        "v4.channel.k8s.io",
    )
    .await;
    let (mut sink, mut stream) = ws.split();
    let t = Instant::now();
    let msg = {
        let mut m = Vec::with_capacity(block.len() + 1);
        m.push(0u8);
        m.extend_from_slice(block);
        Message::Binary(m.into())
    };
    let up = tokio::spawn(async move {
        let mut sent = 0;
        while sent < total {
            sink.feed(msg.clone()).await.unwrap();
            sent += msg.len() - 1;
        }
        sink.flush().await.unwrap();
        sink
    });
    // each channel's first message is its port; data follows on channel 0
    let mut got = 0usize;
    let mut first = [true, true];
    while got < total {
        match stream.next().await {
            Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                let ch = usize::from(b[0]);
                if ch < 2 && first[ch] {
                    first[ch] = false;
                    continue;
                }
                if ch == 0 {
                    got += b.len() - 1;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("forwarded connection ended after {got} bytes: {other:?}"),
        }
    }
    let elapsed = t.elapsed();
    let _ = up.await.unwrap().close().await;
    elapsed
}

/// The same bytes over a direct loopback TCP connection to the echo server.
async fn direct_round(echo: u16, block: &[u8], total: usize) -> Duration {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", echo))
        .await
        .unwrap();
    let _ = s.set_nodelay(true);
    let (mut rd, mut wr) = s.into_split();
    let t = Instant::now();
    let data = block.to_vec();
    let up = tokio::spawn(async move {
        let mut sent = 0;
        while sent < total {
            wr.write_all(&data).await.unwrap();
            sent += data.len();
        }
        wr
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    while got < total {
        let n = rd.read(&mut buf).await.unwrap();
        assert!(n > 0, "echo ended early");
        got += n;
    }
    let elapsed = t.elapsed();
    drop(up.await.unwrap());
    elapsed
}

/// One exec of `true` over v5: from the request to the exit Status.
async fn exec_true(node: u16) -> Duration {
    let t = Instant::now();
    let mut ws = connect(
        node,
        "/exec/default/p/c?command=true&stdout=1&stderr=1",
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
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (echo, node) = rt.block_on(async {
        let echo = echo_server().await;
        (echo, node(echo).await)
    });
    let mib = env_num("KCORE_BENCH_MIB", 64) as usize;
    let rounds = env_num("KCORE_BENCH_ROUNDS", 5).max(1);
    let execs = env_num("KCORE_BENCH_EXECS", 200).max(1);
    let total = mib << 20;
    let block: Vec<u8> = (0..32 * 1024u32).map(|i| (i % 251) as u8).collect();

    // port-forward vs direct, in alternating rounds
    let (mut fwd, mut direct) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for _ in 0..rounds {
            fwd.push(forwarded_round(node, &block, total).await);
            direct.push(direct_round(echo, &block, total).await);
        }
    });
    let rate = |d: Duration| 2.0 * mib as f64 / d.as_secs_f64();
    let (f, d) = (median(fwd), median(direct));
    println!(
        "port-forward {mib} MiB up and back: {:.0} MiB/s through kcore-stream (median of {rounds}), {:.0} MiB/s direct loopback; ratio {:.2}",
        rate(f),
        rate(d),
        rate(f) / rate(d)
    );

    // exec `true` vs spawning `true`
    let (mut through, mut spawn) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for _ in 0..execs {
            through.push(exec_true(node).await);
            let t = Instant::now();
            let st = tokio::process::Command::new("true").status().await.unwrap();
            assert!(st.success());
            spawn.push(t.elapsed());
        }
    });
    let (e, s) = (median(through), median(spawn));
    println!(
        "exec true: median {:.2} ms over v5 (request to exit status, {execs} runs), {:.2} ms spawning it directly; ratio {:.1}",
        e.as_secs_f64() * 1000.0,
        s.as_secs_f64() * 1000.0,
        e.as_secs_f64() / s.as_secs_f64()
    );

    // criterion's own figures for the two kcore paths
    let mut g = c.benchmark_group("streams");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("exec_true_v5", |b| b.iter(|| rt.block_on(exec_true(node))));
    g.bench_function("port_forward_8mib_up_and_back", |b| {
        b.iter(|| rt.block_on(forwarded_round(node, &block, 8 << 20)))
    });
    g.finish();
}

criterion::criterion_group!(benches, bench);
criterion::criterion_main!(benches);
