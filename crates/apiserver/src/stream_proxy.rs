//! `pods/exec`, `pods/attach` and `pods/portforward`: the pod and container are checked as
//! upstream does, then the upgrade request goes to the agent of the pod's node (its
//! `/exec`, `/attach` or `/portforward` endpoint, over verified TLS with the API server's
//! client certificate), the node's `101` goes back to the client, and the two upgraded
//! connections are spliced both ways. Whatever protocol the client and the node agree on
//! (WebSocket channels, SPDY, SPDY tunnelled in WebSocket) passes through unchanged.
//!
//! When the pod's node agent runs in this process ([`LocalNodes`](crate::LocalNodes)),
//! the same request goes to the agent's handler with the client connection's upgrade:
//! the node answers `101` on the client's own connection and speaks the protocol there,
//! one TLS connection and one TCP hop fewer each way.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderName, Method, Request, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::error::ApiError;
use crate::http::AppState;
use crate::resources::{self, Sub};

/// The largest error body a node's refusal may carry back.
const MAX_ERROR_BODY: usize = 1 << 20;
/// The copy buffer of a spliced session, each way: the most one write carries.
const SPLICE_BUFFER: usize = 64 * 1024;

/// The request headers an upgrade carries to the node.
const FORWARDED: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];
/// The node's answer headers the client gets with the `101`.
const ANSWERED: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
    "x-accepted-stream-protocol-versions",
];

/// A streaming subresource request: `/api/v1/namespaces/{ns}/pods/{name}/{exec|attach|portforward}`.
pub(crate) struct StreamRequest {
    namespace: String,
    pod: String,
    sub: Sub,
}

/// Whether `path` names a streaming subresource of a pod.
pub(crate) fn streaming_subresource(path: &str) -> Option<StreamRequest> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", pod, sub] => {
            let sub = match *sub {
                "exec" => Sub::Exec,
                "attach" => Sub::Attach,
                "portforward" => Sub::PortForward,
                _ => return None,
            };
            Some(StreamRequest {
                namespace: (*ns).to_owned(),
                pod: (*pod).to_owned(),
                sub,
            })
        }
        _ => None,
    }
}

/// Serves a streaming subresource request (its errors as a `Status`).
pub(crate) async fn serve(
    state: &Arc<AppState>,
    r: StreamRequest,
    mut parts: Parts,
) -> Result<Response, ApiError> {
    if parts.method != Method::GET && parts.method != Method::POST {
        return Err(ApiError::method_not_allowed("pods"));
    }
    let pods = resources::lookup("", "v1", "pods").expect("served");
    let pod = state.api.get_in(pods, Some(&r.namespace), &r.pod).await?;
    let query = parts.uri.query().unwrap_or("").to_owned();
    let path = match r.sub {
        Sub::PortForward => format!("/portforward/{}/{}", r.namespace, r.pod),
        sub => {
            let asked = query_value(&query, "container");
            let container = container_of(&pod, &r.pod, asked.as_deref())?;
            let what = if sub == Sub::Exec { "exec" } else { "attach" };
            format!("/{what}/{}/{}/{container}", r.namespace, r.pod)
        }
    };
    let on_client_upgrade = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .filter(|_| parts.headers.contains_key(header::UPGRADE))
        .ok_or_else(|| ApiError::bad_request("Upgrade request required"))?;
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    let mut req = Request::builder().method(parts.method.clone()).uri(uri);
    for name in FORWARDED {
        for v in parts.headers.get_all(*name) {
            req = req.header(*name, v);
        }
    }
    let mut req = req
        .body(Body::empty())
        .map_err(|e| ApiError::internal(format!("building the node request: {e}")))?;
    let node_name = crate::node_client::node_of(&pod)?;
    if let Some(local) = state.local_nodes.get(node_name) {
        // the agent runs in this process: it answers on the client's connection and
        // runs the session there, authorizing the API server's identity as it would
        // from a TLS handshake
        let span = tracing::info_span!("stream_proxy", pod = %r.pod, namespace = %r.namespace, sub = r.sub.name(), node = %node_name, in_process = true);
        req.extensions_mut().insert(on_client_upgrade);
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(state.node_identity.clone()));
        let answer =
            tracing::Instrument::instrument(crate::node_client::call_local(local, req), span).await;
        let (head, body) = answer.into_parts();
        return Ok(relay(head.status, &head.headers, body).await);
    }
    let node = crate::node_client::endpoint(&state.api, &pod).await?;
    let mut answer = crate::node_client::upgrade(state.node_tls.as_ref(), &node.ip, node.port, req)
        .await
        .map_err(|e| {
            ApiError::internal(format!(
                "error dialing backend: node {} at {}:{}: {}",
                node.name,
                node.ip,
                node.port,
                e.chain()
            ))
        })?;
    let status = answer.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let headers = answer.headers().clone();
        return Ok(relay(status, &headers, Body::new(answer.into_body())).await);
    }
    let out = relay(status, answer.headers(), Body::empty()).await;
    let on_node_upgrade = hyper::upgrade::on(&mut answer);
    let span = tracing::info_span!("stream_proxy", pod = %r.pod, namespace = %r.namespace, sub = r.sub.name(), node = %node.name);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let (client, node) = match tokio::join!(on_client_upgrade, on_node_upgrade) {
                (Ok(c), Ok(n)) => (c, n),
                (c, n) => {
                    tracing::warn!(client = c.is_ok(), node = n.is_ok(), "an upgrade failed");
                    return;
                }
            };
            match splice(TokioIo::new(client), TokioIo::new(node)).await {
                Ok((up, down)) => tracing::debug!(up, down, "streaming session closed"),
                Err(e) => tracing::debug!(error = %e, "streaming session ended"),
            }
        },
        span,
    ));
    Ok(out)
}

/// The client's answer from the node's: its `101` with the upgrade's headers, or its
/// refusal as it said it (clients show "unable to upgrade connection: <body>"), with
/// the body's content type.
async fn relay(status: StatusCode, headers: &axum::http::HeaderMap, body: Body) -> Response {
    let mut out = Response::new(Body::empty());
    *out.status_mut() = status;
    let refused = status != StatusCode::SWITCHING_PROTOCOLS;
    let names = ANSWERED
        .iter()
        .map(|n| HeaderName::from_static(n))
        .chain(refused.then_some(header::CONTENT_TYPE));
    for name in names {
        for v in headers.get_all(&name) {
            out.headers_mut().append(name.clone(), v.clone());
        }
    }
    if refused {
        let body = axum::body::to_bytes(body, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        *out.body_mut() = Body::from(body);
    }
    out
}

/// Copies both ways between the client's and the node's connections until both ways
/// have ended (the end of one side's data shuts the other side's writing down) or either
/// fails; returns the bytes carried up (client to node) and down.
async fn splice<A, B>(client: A, node: B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut node_rd, mut node_wr) = tokio::io::split(node);
    tokio::try_join!(
        pump(&mut client_rd, &mut node_wr),
        pump(&mut node_rd, &mut client_wr)
    )
}

/// Copies `from` to `to` until `from` ends, then shuts `to` down; returns the bytes copied.
/// A TLS connection yields one record (16 KiB at most) per read: what is ready at once is
/// gathered (up to [`SPLICE_BUFFER`]) before a write, so that the other connection
/// encrypts it and sends its records with one system call.
///
/// When `from` fails (a peer that closes its TLS connection without `close_notify`
/// ends it with an error), `to` is still flushed and shut down before the error is
/// returned: the bytes read before the error may wait in `to`'s TLS buffer, and the
/// splice drops both connections on the first error.
async fn pump<R, W>(from: &mut R, to: &mut W) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; SPLICE_BUFFER];
    let mut copied = 0u64;
    loop {
        let (n, failed) = gather(from, &mut buf).await;
        if n > 0 {
            to.write_all(&buf[..n]).await?;
            copied += n as u64;
        }
        match failed {
            Some(e) => {
                let _ = to.shutdown().await;
                return Err(e);
            }
            None if n == 0 => break,
            None => {}
        }
    }
    to.shutdown().await?;
    Ok(copied)
}

/// Reads into `buf`: waits for the first bytes, then takes what else is ready without
/// waiting, until `buf` is full. Returns the bytes read (0 at the end of `from`) and the
/// error that stopped the reading, if one did (after the bytes read before it).
async fn gather<R>(from: &mut R, buf: &mut [u8]) -> (usize, Option<std::io::Error>)
where
    R: AsyncRead + Unpin,
{
    std::future::poll_fn(|cx| {
        let mut rb = ReadBuf::new(buf);
        loop {
            let before = rb.filled().len();
            match Pin::new(&mut *from).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().len() > before && rb.remaining() > 0 => {}
                Poll::Ready(Ok(())) => return Poll::Ready((rb.filled().len(), None)),
                Poll::Ready(Err(e)) => return Poll::Ready((before, Some(e))),
                Poll::Pending if before == 0 => return Poll::Pending,
                Poll::Pending => return Poll::Ready((before, None)),
            }
        }
    })
    .await
}

/// The first value of `key` in a raw query string (percent-decoded).
fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 2 < b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (_, Some(x)) => {
                out.push(x);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (c, None) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The container a session is for, checked as upstream does: a named container must be
/// one of the pod's (init and ephemeral ones included); with none named, the pod must
/// have exactly one.
fn container_of(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let names = |field: &str| -> Vec<String> {
        pod["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    };
    let (main, init, ephemeral) = (
        names("containers"),
        names("initContainers"),
        names("ephemeralContainers"),
    );
    match asked.filter(|c| !c.is_empty()) {
        Some(c) => {
            if main.iter().chain(&init).chain(&ephemeral).any(|n| n == c) {
                Ok(c.to_owned())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None if main.len() == 1 => Ok(main[0].clone()),
        None if main.is_empty() => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}"
        ))),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                main.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_are_checked_as_upstream() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "i"}], "ephemeralContainers": [{"name": "debugger"}]}});
        assert_eq!(container_of(&pod, "p", Some("b")).unwrap(), "b");
        assert_eq!(
            container_of(&pod, "p", Some("debugger")).unwrap(),
            "debugger"
        );
        assert_eq!(
            container_of(&pod, "p", Some("x")).unwrap_err().message,
            "container x is not valid for pod p"
        );
        assert_eq!(
            container_of(&pod, "p", None).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(container_of(&one, "p", None).unwrap(), "only");
    }

    #[tokio::test]
    async fn a_read_gathers_what_is_ready_and_keeps_the_end_for_next() {
        let (mut tx, mut rx) = tokio::io::duplex(1024);
        for chunk in [&b"one "[..], b"two ", b"three"] {
            tx.write_all(chunk).await.unwrap();
        }
        let mut buf = [0u8; 8];
        // a full buffer ends the read; the rest waits for the next
        assert_eq!(gather(&mut rx, &mut buf).await.0, 8);
        assert_eq!(&buf, b"one two ");
        drop(tx);
        let (n, e) = gather(&mut rx, &mut buf).await;
        assert_eq!((&buf[..n], e.is_none()), (&b"three"[..], true));
        assert_eq!(gather(&mut rx, &mut buf).await.0, 0);
    }

    #[tokio::test]
    async fn bytes_read_before_an_error_still_reach_the_other_side() {
        use tokio::io::AsyncReadExt;
        /// A peer that sends its last bytes, then closes without `close_notify`.
        struct Torn(Option<Vec<u8>>);
        impl AsyncRead for Torn {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                Poll::Ready(match self.0.take() {
                    Some(b) => {
                        buf.put_slice(&b);
                        Ok(())
                    }
                    None => Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "peer closed connection without sending TLS close_notify",
                    )),
                })
            }
        }
        let (near, mut far) = tokio::io::duplex(1 << 20);
        // like a TLS stream, it holds what it was given until it is flushed
        let mut to = tokio::io::BufWriter::with_capacity(1 << 20, near);
        let tail = vec![7u8; 50_000];
        let err = pump(&mut Torn(Some(tail.clone())), &mut to)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        drop(to);
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, tail);
    }

    #[tokio::test]
    async fn a_splice_carries_both_ways_and_passes_each_end_on() {
        use tokio::io::AsyncReadExt;
        let (client, client_peer) = tokio::io::duplex(64);
        let (node, mut node_peer) = tokio::io::duplex(64);
        let spliced = tokio::spawn(splice(client, node));
        let up: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let down = b"from the pod".to_vec();
        let (want_up, want_down) = (up.clone(), down.clone());
        let client_side = tokio::spawn(async move {
            let (mut rd, mut wr) = tokio::io::split(client_peer);
            wr.write_all(&up).await.unwrap();
            // the client's end reaches the node as an end
            wr.shutdown().await.unwrap();
            let mut got = Vec::new();
            rd.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = node_peer.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, want_up);
        node_peer.write_all(&down).await.unwrap();
        node_peer.shutdown().await.unwrap();
        assert_eq!(client_side.await.unwrap(), want_down);
        assert_eq!(
            spliced.await.unwrap().unwrap(),
            (want_up.len() as u64, want_down.len() as u64)
        );
    }

    #[test]
    fn paths_and_queries_parse() {
        let r = streaming_subresource("/api/v1/namespaces/ns/pods/p/exec").unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.pod.as_str(), r.sub),
            ("ns", "p", Sub::Exec)
        );
        assert!(streaming_subresource("/api/v1/namespaces/ns/pods/p/log").is_none());
        assert_eq!(
            query_value("command=ls&container=my%2Dc&stdin=true", "container").as_deref(),
            Some("my-c")
        );
    }
}
