//! The channel protocols kubectl no longer picks, spoken by a Rust WebSocket client straight
//! to a node server: `v4.channel.k8s.io` (the exit Status as JSON), `base64.channel.k8s.io`
//! (text frames; the error channel carries only a failure's message) and the
//! `v4.channel.k8s.io` port-forward framing with several ports.

mod support;

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use kcore_stream::{Sessions, Transport};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A plain-HTTP node server; the temp dir its commands run in lives as long as the result.
async fn node() -> (u16, Sessions, tempfile::TempDir) {
    let pod_8080 = support::pod_port().await;
    let dir = tempfile::tempdir().unwrap();
    let backend = support::HostBackend::new(dir.path().to_owned(), [(8080, pod_8080)].into());
    let sessions = Sessions::default();
    let app = kcore_stream::routes(Some(Arc::new(backend)), sessions.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await });
    (port, sessions, dir)
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
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"].to_str().unwrap(),
        protocol
    );
    ws
}

/// Every channel message until the server closes: (channel, bytes) in order.
async fn drain(ws: &mut Ws, base64: bool) -> Vec<(u8, Vec<u8>)> {
    use base64::Engine as _;
    let mut out = Vec::new();
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Binary(b) if !base64 => out.push((b[0], b[1..].to_vec())),
            Message::Text(t) if base64 => {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&t.as_bytes()[1..])
                    .unwrap();
                out.push((t.as_bytes()[0] - b'0', data));
            }
            Message::Close(_) => break,
            other => panic!("unexpected message {other:?}"),
        }
    }
    out
}

fn joined(msgs: &[(u8, Vec<u8>)], ch: u8) -> String {
    let b: Vec<u8> = msgs
        .iter()
        .filter(|(c, _)| *c == ch)
        .flat_map(|(_, d)| d.clone())
        .collect();
    String::from_utf8(b).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_and_base64_exec_report_the_end_their_way() {
    let (port, sessions, _dir) = node().await;
    let path = "/exec/default/p/c?command=sh&command=-c&command=echo+out%3B+echo+err+%3E%262%3B+exit+3&stdout=1&stderr=1";

    let mut ws = connect(port, path, "v4.channel.k8s.io").await;
    let msgs = drain(&mut ws, false).await;
    // the first message is the empty one on stdout that says the session is up
    assert_eq!(msgs[0], (1, vec![]));
    assert_eq!(joined(&msgs, 1), "out\n");
    assert_eq!(joined(&msgs, 2), "err\n");
    let status: serde_json::Value = serde_json::from_str(&joined(&msgs, 3)).unwrap();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");

    let mut ws = connect(port, path, "base64.channel.k8s.io").await;
    let msgs = drain(&mut ws, true).await;
    assert_eq!(joined(&msgs, 1), "out\n");
    assert_eq!(joined(&msgs, 2), "err\n");
    assert!(
        joined(&msgs, 3).starts_with("command terminated with non-zero exit code"),
        "{msgs:?}"
    );

    // stdin over v4 with base64: written as text frames
    let mut ws = connect(
        port,
        "/exec/default/p/c?command=head&command=-c&command=3&stdin=1&stdout=1",
        "v4.base64.channel.k8s.io",
    )
    .await;
    ws.send(Message::Text("0YWJj".into())).await.unwrap(); // "abc" on stdin
    let msgs = drain(&mut ws, true).await;
    assert_eq!(joined(&msgs, 1), "abc");
    let status: serde_json::Value = serde_json::from_str(&joined(&msgs, 3)).unwrap();
    assert_eq!(status["status"], "Success");

    let recent = sessions.recent();
    let protocols: Vec<(&str, Transport)> = recent
        .iter()
        .map(|s| (s.protocol.as_str(), s.transport))
        .collect();
    assert_eq!(
        protocols,
        vec![
            ("v4.channel.k8s.io", Transport::WebSocket),
            ("base64.channel.k8s.io", Transport::WebSocket),
            ("v4.base64.channel.k8s.io", Transport::WebSocket),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_port_forward_opens_two_channels_per_port() {
    let (port, _, _dir) = node().await;
    let mut ws = connect(
        port,
        "/portforward/default/p?ports=8080,9",
        "v4.channel.k8s.io",
    )
    .await;
    let mut up = 3u64.to_be_bytes().to_vec();
    up.extend_from_slice(b"xyz");
    let mut m = vec![0u8];
    m.extend_from_slice(&up);
    ws.send(Message::Binary(m.into())).await.unwrap();
    let msgs = drain(&mut ws, false).await;
    // each channel opens with its port, little-endian
    for (ch, port) in [(0u8, 8080u16), (1, 8080), (2, 9), (3, 9)] {
        let first = msgs.iter().find(|(c, _)| *c == ch).unwrap();
        assert_eq!(first.1, port.to_le_bytes(), "channel {ch}");
    }
    let data: Vec<u8> = msgs
        .iter()
        .filter(|(c, _)| *c == 0)
        .skip(1)
        .flat_map(|(_, d)| d.clone())
        .collect();
    let mut want = support::sha256(b"xyz");
    want.extend(b"xyz");
    assert_eq!(data, want);
    let err: Vec<u8> = msgs
        .iter()
        .filter(|(c, _)| *c == 3)
        .skip(1)
        .flat_map(|(_, d)| d.clone())
        .collect();
    let err = String::from_utf8(err).unwrap();
    assert!(err.contains("error forwarding port 9 to pod p"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_exec_of_true_round_trips() {
    let (port, sessions, _dir) = node().await;
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = std::time::Instant::now();
        let mut ws = connect(
            port,
            "/exec/default/p/c?command=true&stdout=1&stderr=1",
            "v5.channel.k8s.io",
        )
        .await;
        let msgs = drain(&mut ws, false).await;
        times.push(t.elapsed());
        let status: serde_json::Value = serde_json::from_str(&joined(&msgs, 3)).unwrap();
        assert_eq!(status["status"], "Success");
    }
    times.sort();
    // a figure for the record (request to exit status, debug build), not a check
    eprintln!(
        "exec of `true` over v5: median {:?}, best {:?}",
        times[times.len() / 2],
        times[0]
    );
    assert_eq!(sessions.recent().len(), 20);
}
