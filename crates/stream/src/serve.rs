//! The HTTP side: a kubelet-style `/exec`, `/attach` or `/portforward` request is checked,
//! its protocol negotiated, answered with `101 Switching Protocols`, and the session run
//! on the upgraded connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::record::{now, SessionRecord, Sessions, Transport};
use crate::session::{self, Out, StatusStyle, Wiring};
use crate::spdy::Conn;
use crate::ws::{self, Channels, Framing};
use crate::{Backend, BackendError, Process, Streams, Target};

/// The header naming SPDY stream subprotocols (offered by the client, chosen by the server).
pub const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// The WebSocket subprotocol that tunnels SPDY port-forwarding.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// How long a SPDY client has to open the streams it asked for.
const STREAM_CREATION: Duration = Duration::from_secs(30);

/// A request extension: the request was handed to [`serve`] (or [`routes`](crate::routes))
/// by an API server running in the node's own process, with the client's connection
/// (its `hyper::upgrade::OnUpgrade`) in place of a connection of the API server's own.
/// Only code in the process can set it; the session's [`SessionRecord`] says so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InProcess;

/// Which kind of session a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Run a command (`?command=..&command=..`).
    Exec,
    /// Attach to the container's main process.
    Attach,
    /// Forward connections to the pod's ports.
    PortForward,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Attach => "attach",
            Kind::PortForward => "portforward",
        }
    }
}

/// The exec/attach subprotocols this side speaks over WebSocket.
const WS_EXEC: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
/// The port-forward subprotocols this side speaks over WebSocket.
const WS_PORTFORWARD: &[&str] = &[
    TUNNEL_PROTOCOL,
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
];
/// The exec/attach subprotocols over SPDY.
const SPDY_EXEC: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// The port-forward subprotocol over SPDY.
const SPDY_PORTFORWARD: &[&str] = &["portforward.k8s.io"];

/// Serves a streaming request for `target`: checks it, starts the exec or attach on
/// `backend` (its errors answer before any upgrade: 404, 400 or 500), negotiates
/// WebSocket or SPDY, records the session in `sessions`, answers `101` and runs the
/// session on the upgraded connection in a task of its own.
///
/// The request must carry hyper's upgrade handle (any hyper 1 server with upgrades, such
/// as `axum::serve`, puts it in the request's extensions).
pub async fn serve<B>(
    backend: Arc<dyn Backend>,
    sessions: &Sessions,
    kind: Kind,
    target: Target,
    mut req: Request<B>,
) -> Response<String> {
    let begun = std::time::Instant::now();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let headers = req.headers();
    let websocket = header_is(headers, header::UPGRADE, "websocket")
        && header_has(headers, header::CONNECTION, "upgrade");
    let spdy = header_is(headers, header::UPGRADE, "SPDY/3.1");
    if !websocket && !spdy {
        return text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request".into(),
        );
    }
    // the options
    let flag = |k: &str| {
        query
            .iter()
            .any(|(n, v)| n == k && matches!(v.as_str(), "1" | "true" | "True"))
    };
    let mut streams = Streams {
        stdin: flag("stdin"),
        stdout: flag("stdout"),
        stderr: flag("stderr"),
        tty: flag("tty"),
    };
    if streams.tty {
        streams.stderr = false;
    }
    let command: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if kind != Kind::PortForward && !(streams.stdin || streams.stdout || streams.stderr) {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 of stdin, stdout, stderr".into(),
        );
    }
    if kind == Kind::Exec && command.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container".into(),
        );
    }
    // the protocol
    let offered = offered_protocols(headers, websocket);
    let supported = match (kind, websocket) {
        (Kind::PortForward, true) => WS_PORTFORWARD,
        (Kind::PortForward, false) => SPDY_PORTFORWARD,
        (_, true) => WS_EXEC,
        (_, false) => SPDY_EXEC,
    };
    let protocol = if offered.is_empty() {
        String::new()
    } else {
        match offered.iter().find(|p| supported.contains(&p.as_str())) {
            Some(p) => p.clone(),
            None => {
                let msg = format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"
                );
                let mut r = text(StatusCode::FORBIDDEN, msg);
                if let Ok(v) = HeaderValue::from_str(&supported.join(", ")) {
                    r.headers_mut()
                        .insert("X-Accepted-Stream-Protocol-Versions", v);
                }
                return r;
            }
        }
    };
    let ports: Vec<u16> = if kind == Kind::PortForward && websocket && protocol != TUNNEL_PROTOCOL {
        match parse_ports(&query) {
            Ok(p) => p,
            Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
        }
    } else {
        Vec::new()
    };
    // the process, before the upgrade so that a missing container is a plain HTTP error
    let process = match kind {
        Kind::Exec => backend
            .exec(target.clone(), command.clone(), streams)
            .await
            .map(Some),
        Kind::Attach => backend.attach(target.clone(), streams).await.map(Some),
        Kind::PortForward => Ok(None),
    };
    let process = match process {
        Ok(p) => p,
        Err(e) => {
            let code = match e {
                BackendError::NotFound(_) => StatusCode::NOT_FOUND,
                BackendError::BadRequest(_) => StatusCode::BAD_REQUEST,
                BackendError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return text(code, e.to_string());
        }
    };
    // the answer
    let mut resp = Response::new(String::new());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let transport = if websocket {
        let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
            return text(
                StatusCode::BAD_REQUEST,
                "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header is missing"
                    .into(),
            );
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if !protocol.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&protocol) {
                h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
            }
        }
        if protocol == TUNNEL_PROTOCOL {
            Transport::WebSocketSpdyTunnel
        } else {
            Transport::WebSocket
        }
    } else {
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        if !protocol.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&protocol) {
                h.insert(PROTOCOL_HEADER, v);
            }
        }
        Transport::Spdy
    };
    let id = sessions.record(SessionRecord {
        kind: kind.name(),
        transport,
        protocol: protocol.clone(),
        namespace: target.namespace.clone(),
        pod: target.pod.clone(),
        container: target.container.clone(),
        started: now(),
        id: 0,
        duration_micros: None,
        in_process: req.extensions().get::<InProcess>().is_some(),
    });
    let sessions = sessions.clone();
    let upgrade = hyper::upgrade::on(&mut req);
    let span = tracing::info_span!(
        "stream_session",
        kind = kind.name(),
        transport = transport.as_str(),
        protocol = %protocol,
        namespace = %target.namespace,
        pod = %target.pod,
        container = %target.container,
    );
    let command = (kind == Kind::Exec).then_some(command);
    tokio::spawn(
        async move {
            let io = match upgrade.await {
                Ok(u) => TokioIo::new(u),
                Err(e) => {
                    tracing::warn!(error = %e, "the connection was not upgraded");
                    return;
                }
            };
            match (process, transport) {
                (Some(p), Transport::WebSocket) => {
                    ws_exec(io, &protocol, p, streams, command).await
                }
                (Some(p), _) => spdy_exec(io, &protocol, p, streams, command).await,
                (None, Transport::Spdy) => crate::portforward::spdy(io, backend, target).await,
                (None, Transport::WebSocketSpdyTunnel) => {
                    let ws = ws::open(io).await;
                    let (a, b) = tokio::io::duplex(256 * 1024);
                    let pf = tokio::spawn(crate::portforward::spdy(b, backend, target));
                    ws::tunnel(ws, a).await;
                    let _ = pf.await;
                }
                (None, Transport::WebSocket) => {
                    let ws = ws::open(io).await;
                    let framing = Framing {
                        base64: protocol.contains("base64"),
                        close_signal: false,
                    };
                    crate::portforward::channels(ws, framing, backend, target, ports).await
                }
            }
            let span = begun.elapsed();
            sessions.finish(id, span);
            tracing::debug!(
                elapsed_ms = span.as_secs_f64() * 1000.0,
                "streaming session ended"
            );
        }
        .instrument(span),
    );
    resp
}

/// An exec or attach over WebSocket channels.
async fn ws_exec<T>(
    io: T,
    protocol: &str,
    p: Process,
    streams: Streams,
    command: Option<Vec<String>>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ws = ws::open(io).await;
    let framing = Framing {
        base64: protocol.contains("base64"),
        close_signal: protocol.starts_with("v5."),
    };
    let style = if protocol.starts_with("v4.") || protocol.starts_with("v5.") {
        StatusStyle::Json
    } else {
        StatusStyle::Text
    };
    let mut inboxes = HashMap::new();
    let stdin = streams.stdin.then(|| {
        let (tx, rx) = mpsc::channel(16);
        inboxes.insert(0u8, tx);
        rx.into()
    });
    let resize = streams.tty.then(|| {
        let (tx, rx) = mpsc::channel(16);
        inboxes.insert(4u8, tx);
        rx.into()
    });
    let mut chans = Channels::start(ws, framing, inboxes);
    let gone = chans.gone.take();
    let out = |ch: u8| Out::Ws {
        ch,
        framing,
        tx: chans.out.clone(),
    };
    // an empty message on the lowest writable channel tells the client the session is up
    let first = if streams.stdout {
        1
    } else if streams.stderr {
        2
    } else {
        3
    };
    out(first).write(&[]).await;
    let wiring = Wiring {
        stdin,
        resize,
        stdout: streams.stdout.then(|| out(1)),
        stderr: streams.stderr.then(|| out(2)),
        error: Some(out(3)),
        style,
        gone,
    };
    session::run(p, wiring, command).await;
    chans.close().await;
}

/// An exec or attach over SPDY: the client opens a stream per requested channel (and the
/// error stream, and a resize stream with a terminal from `v3` on).
async fn spdy_exec<T>(
    io: T,
    protocol: &str,
    p: Process,
    streams: Streams,
    command: Option<Vec<String>>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let mut conn = Conn::start(io);
    let resizing = matches!(protocol, "v4.channel.k8s.io" | "v3.channel.k8s.io");
    let expected = 1
        + usize::from(streams.stdin)
        + usize::from(streams.stdout)
        + usize::from(streams.stderr)
        + usize::from(streams.tty && resizing);
    let mut wiring = Wiring {
        stdin: None,
        resize: None,
        stdout: None,
        stderr: None,
        error: None,
        style: if protocol == "v4.channel.k8s.io" {
            StatusStyle::Json
        } else {
            StatusStyle::Text
        },
        gone: conn.gone.take(),
    };
    let mut got = 0;
    let deadline = tokio::time::sleep(STREAM_CREATION);
    tokio::pin!(deadline);
    while got < expected {
        let s = tokio::select! {
            s = conn.streams.recv() => s,
            _ = &mut deadline => {
                tracing::warn!("timed out waiting for client to create streams");
                None
            }
        };
        let Some(s) = s else {
            conn.close().await;
            return;
        };
        let kind = s.header("streamType").unwrap_or_default().to_owned();
        match kind.as_str() {
            "error" => wiring.error = Some(Out::Spdy(s.writer)),
            "stdin" => wiring.stdin = Some(s.inbox),
            "stdout" => wiring.stdout = Some(Out::Spdy(s.writer)),
            "stderr" => wiring.stderr = Some(Out::Spdy(s.writer)),
            "resize" => wiring.resize = Some(s.inbox),
            other => {
                tracing::debug!(stream_type = other, "unexpected stream type");
                continue;
            }
        }
        got += 1;
    }
    session::run(p, wiring, command).await;
    conn.close().await;
}

fn header_is(h: &HeaderMap, name: header::HeaderName, want: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.trim().eq_ignore_ascii_case(want))
}

fn header_has(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The subprotocols a client offers, in its order of preference.
fn offered_protocols(h: &HeaderMap, websocket: bool) -> Vec<String> {
    let name = if websocket {
        header::SEC_WEBSOCKET_PROTOCOL.as_str()
    } else {
        PROTOCOL_HEADER
    };
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

/// `ports=80,443&ports=8080` as the kubelet reads it.
fn parse_ports(query: &[(String, String)]) -> Result<Vec<u16>, String> {
    let values: Vec<&String> = query
        .iter()
        .filter(|(k, _)| k == "ports")
        .map(|(_, v)| v)
        .collect();
    if values.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    let mut out = Vec::new();
    for v in values {
        if v.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in v.split(',') {
            match p.trim().parse::<u16>() {
                Ok(0) => return Err(format!("port {v:?} must be > 0")),
                Ok(n) => out.push(n),
                Err(e) => return Err(format!("unable to parse {v:?} as a port: {e}")),
            }
        }
    }
    Ok(out)
}

/// Splits and percent-decodes a query string (`+` is a space).
pub(crate) fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(x) => {
                        out.push(x);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(code: StatusCode, msg: String) -> Response<String> {
    let mut r = Response::new(msg);
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_as_go_does() {
        let q = parse_query("command=sh&command=-c&command=echo+out%3B+exit%203&stdin=1&x=%zz");
        assert_eq!(q[0], ("command".into(), "sh".into()));
        assert_eq!(q[2], ("command".into(), "echo out; exit 3".into()));
        assert_eq!(q[3], ("stdin".into(), "1".into()));
        assert_eq!(q[4], ("x".into(), "%zz".into()));
        assert_eq!(
            parse_ports(&parse_query("ports=80,443&ports=8080")).unwrap(),
            vec![80, 443, 8080]
        );
        assert!(parse_ports(&parse_query("ports=0")).is_err());
        assert!(parse_ports(&[]).is_err());
    }
}
