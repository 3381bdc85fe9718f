//! The Ingress proxy against a direct connection to the backend, in the same run (issue
//! 24's benchmark): requests per second and p99 latency of small GETs.
//!
//! The proxy is the one every kcored agent runs (`kcore_node::serve_ingress`, here fed
//! the objects by hand instead of from an API server): an IngressClass, an Ingress for
//! host `bench.test` (path `/`, Prefix, and TLS from a Secret) and a Service whose
//! EndpointSlice points at the backend. The backend is an axum server on loopback
//! answering `ok`. The load is `KCORE_BENCH_CONNS` keep-alive HTTP/1.1 connections
//! (default 16), each sending GETs one after another for `KCORE_BENCH_SECS` seconds
//! (default 3) per round; rounds alternate direct, through the proxy over HTTP and
//! through the proxy over HTTPS (SNI), `KCORE_BENCH_ROUNDS` times (default 3), and the
//! medians are printed with the ratio to direct (goal: at least 0.7).
//!
//! Client, proxy and backend share this process and the machine's cores, so the proxy's
//! own work (a second parse, a second connection per request) costs the others CPU too;
//! the CPU time per request of each path is printed next to the rates.
//!
//! `cargo bench -p kcore-benches --bench ingress`

mod common;
use common::{env_num, process_cpu};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const HOST: &str = "bench.test";

/// The backend: `ok` to every request, keep-alive.
async fn backend() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// The proxy serving `bench.test` to `backend`: (HTTP address, HTTPS address, the CA
/// that signed the host's certificate).
async fn proxy(backend: SocketAddr) -> (SocketAddr, SocketAddr, String) {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let ca = kcore_tls::Ca::load_or_create(dir.path()).unwrap();
    let ck = ca
        .issue(HOST, &[HOST.to_owned()], kcore_tls::Usage::Server)
        .unwrap();
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let objects = kcore_node::IngressObjects {
        classes: vec![obj(serde_json::json!({"metadata": {"name": "kcore"},
            "spec": {"controller": kcore_node::INGRESS_CONTROLLER}}))],
        ingresses: vec![obj(serde_json::json!({
            "metadata": {"name": "bench", "namespace": "b",
                "annotations": {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}},
            "spec": {"ingressClassName": "kcore",
                "tls": [{"hosts": [HOST], "secretName": "bench-tls"}],
                "rules": [{"host": HOST, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}))],
        services: vec![obj(
            serde_json::json!({"metadata": {"name": "web", "namespace": "b"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}}),
        )],
        endpoint_slices: vec![obj(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "b",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"port": backend.port(), "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]}))],
        tls_secrets: vec![obj(serde_json::json!({
            "metadata": {"name": "bench-tls", "namespace": "b", "resourceVersion": "1"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(&ck.cert_pem), "tls.key": b64(&ck.key_pem)}}))],
    };
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = (http.local_addr().unwrap(), https.local_addr().unwrap());
    // the proxy task lives as long as the runtime; plain HTTP is served too (the
    // Ingress turns the redirect to HTTPS off, as upstream's annotation does)
    let _task = kcore_node::serve_ingress(objects, http, Some(https)).unwrap();
    (at.0, at.1, ca.cert_pem().to_owned())
}

/// Sends `GET /` and reads the answer (Content-Length framed); the status code.
async fn get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    line: &mut String,
) -> u16 {
    s.get_mut()
        .write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    line.clear();
    s.read_line(line).await.unwrap();
    let code: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line {line:?}"));
    let mut len = 0usize;
    loop {
        line.clear();
        s.read_line(line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    code
}

/// Where a round's load goes.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Direct,
    ProxyHttp,
    ProxyHttps,
}

/// One round: requests per second, p99 latency, CPU time per request.
async fn round(path: Path, target: SocketAddr, tls: &tokio_rustls::TlsConnector) -> Stats {
    let conns = env_num("KCORE_BENCH_CONNS", 16) as usize;
    let secs = env_num("KCORE_BENCH_SECS", 3);
    let cpu = process_cpu();
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let tls = tls.clone();
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(target).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut lat = Vec::new();
            let mut line = String::new();
            let mut run = |code: u16, t: Instant| {
                assert_eq!(code, 200);
                lat.push(t.elapsed());
            };
            if path == Path::ProxyHttps {
                let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
                let mut s = BufReader::new(tls.connect(name, tcp).await.unwrap());
                while Instant::now() < until {
                    let t = Instant::now();
                    run(get(&mut s, &mut line).await, t);
                }
            } else {
                let mut s = BufReader::new(tcp);
                while Instant::now() < until {
                    let t = Instant::now();
                    run(get(&mut s, &mut line).await, t);
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let wall = start.elapsed();
    let cpu = process_cpu().saturating_sub(cpu);
    lat.sort();
    let n = lat.len();
    Stats {
        rps: n as f64 / wall.as_secs_f64(),
        p99: lat[(n * 99 / 100).min(n - 1)],
        cpu_per_req: cpu / u32::try_from(n.max(1)).unwrap_or(u32::MAX),
    }
}

#[derive(Clone, Copy)]
struct Stats {
    rps: f64,
    p99: Duration,
    cpu_per_req: Duration,
}

fn median_by<T: Copy + PartialOrd>(v: &[Stats], f: impl Fn(&Stats) -> T) -> T {
    let mut x: Vec<T> = v.iter().map(f).collect();
    x.sort_by(|a, b| a.partial_cmp(b).unwrap());
    x[x.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rounds = env_num("KCORE_BENCH_ROUNDS", 3).max(1);
    let conns = env_num("KCORE_BENCH_CONNS", 16);
    let (be, http, https, ca) = rt.block_on(async {
        let be = backend().await;
        let (http, https, ca) = proxy(be).await;
        (be, http, https, ca)
    });
    let mut cfg = kcore_tls::client_config(&ca, None).unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let paths = [
        (Path::Direct, be, "direct to the backend"),
        (Path::ProxyHttp, http, "through the Ingress proxy, HTTP"),
        (
            Path::ProxyHttps,
            https,
            "through the Ingress proxy, HTTPS (SNI)",
        ),
    ];
    let mut stats: Vec<Vec<Stats>> = vec![Vec::new(); paths.len()];
    rt.block_on(async {
        // warm up each path once
        for (p, at, _) in paths {
            let _ = round(p, at, &tls).await;
        }
        for _ in 0..rounds {
            for (i, (p, at, _)) in paths.iter().enumerate() {
                stats[i].push(round(*p, *at, &tls).await);
            }
        }
    });
    let direct_rps = median_by(&stats[0], |s| s.rps);
    for ((_, _, what), s) in paths.iter().zip(&stats) {
        let rps = median_by(s, |s| s.rps);
        println!(
            "ingress bench, {conns} keep-alive connections, GET of 2 bytes, median of {rounds} rounds: {what}: {rps:.0} requests/s ({:.2}x direct; goal >= 0.70), p99 {:.0} us, {:.1} us CPU per request",
            rps / direct_rps,
            us(median_by(s, |s| s.p99)),
            us(median_by(s, |s| s.cpu_per_req)),
        );
    }

    // criterion's figure: one request on a warm connection through the proxy
    let mut g = c.benchmark_group("ingress");
    g.sample_size(20);
    let mut conn = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
        BufReader::new(tls.connect(name, tcp).await.unwrap())
    });
    let mut line = String::new();
    g.bench_function("get_via_proxy_https_keepalive", |b| {
        b.iter(|| rt.block_on(get(&mut conn, &mut line)))
    });
    g.finish();
}

criterion::criterion_group!(benches, bench);
criterion::criterion_main!(benches);
