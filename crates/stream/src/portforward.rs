//! Port-forward sessions: over SPDY (plain or tunnelled in WebSocket), a pair of streams
//! per connection (`error` and `data`, matched by `requestID`); over WebSocket channels
//! (`v4.channel.k8s.io`), a pair of channels per requested port, each opened with the
//! port as two little-endian bytes.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::session::Out;
use crate::spdy::{Conn, Inbox, Stream};
use crate::ws::{Channels, Framing};
use crate::{Backend, Target};

/// The kubelet's message for a connection that could not be made.
fn forward_error(target: &Target, port: u16, e: &crate::BackendError) -> String {
    format!(
        "error forwarding port {port} to pod {}, uid {}: {e}",
        target.pod,
        target.uid.as_deref().unwrap_or("")
    )
}

/// Serves port-forward streams of a SPDY connection over `io` until the client closes it.
pub(crate) async fn spdy<T>(io: T, backend: Arc<dyn Backend>, target: Target)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut conn = Conn::start(io);
    let mut pending: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
    let mut tasks = JoinSet::new();
    while let Some(s) = conn.streams.recv().await {
        let id = s.header("requestID").unwrap_or_default().to_owned();
        let kind = s.header("streamType").unwrap_or_default().to_owned();
        let slot = pending.entry(id.clone()).or_default();
        match kind.as_str() {
            "data" => slot.0 = Some(s),
            "error" => slot.1 = Some(s),
            other => {
                tracing::debug!(stream_type = other, "unexpected port-forward stream type");
                continue;
            }
        }
        if !matches!(pending.get(&id), Some((Some(_), Some(_)))) {
            continue;
        }
        if let Some((Some(data), Some(error))) = pending.remove(&id) {
            let port = data
                .header("port")
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p > 0);
            let (backend, target) = (backend.clone(), target.clone());
            tasks.spawn(async move {
                match port {
                    Some(port) => forward_pair(backend, target, port, data, error).await,
                    None => {
                        let msg = format!(
                            "invalid port header {:?}",
                            data.header("port").unwrap_or_default()
                        );
                        error.writer.write(msg.as_bytes()).await;
                        error.writer.finish().await;
                        data.writer.finish().await;
                    }
                }
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    tasks.abort_all();
    conn.close().await;
}

/// One forwarded connection over a SPDY stream pair.
async fn forward_pair(
    backend: Arc<dyn Backend>,
    target: Target,
    port: u16,
    data: Stream,
    error: Stream,
) {
    let conn = match backend.port_forward(target.clone(), port).await {
        Ok(c) => c,
        Err(e) => {
            let msg = forward_error(&target, port, &e);
            tracing::debug!(%msg, "port-forward dial failed");
            error.writer.write(msg.as_bytes()).await;
            error.writer.finish().await;
            data.writer.finish().await;
            return;
        }
    };
    let Stream { inbox, writer, .. } = data;
    splice(conn, inbox, &Out::Spdy(writer)).await;
    // the pod's side ended: the client reads the error stream to its end next
    error.writer.finish().await;
}

/// Copies between a pod connection and a client channel: client data into the pod (its
/// end half-closes the pod connection), pod data out; returns when the pod's side ends,
/// leaving the client's direction to drain on its own.
async fn splice(conn: Box<dyn crate::Duplex>, mut inbox: Inbox, out: &Out) {
    let (mut rd, mut wr) = tokio::io::split(conn);
    let up = tokio::spawn(async move {
        while let Some(buf) = inbox.recv().await {
            if wr.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    out.copy_from(&mut rd, crate::ws::CHUNK).await;
    out.finish().await;
    // let the client's direction finish in the background (it ends with the connection)
    drop(up);
}

/// Serves the `v4.channel.k8s.io` port-forward framing for `ports` on a WebSocket.
pub(crate) async fn channels<T>(
    ws: tokio_tungstenite::WebSocketStream<T>,
    framing: Framing,
    backend: Arc<dyn Backend>,
    target: Target,
    ports: Vec<u16>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut inboxes = HashMap::new();
    let mut rxs = Vec::new();
    for i in 0..ports.len() {
        let (tx, rx) = mpsc::channel(16);
        inboxes.insert((2 * i) as u8, tx);
        rxs.push(rx);
    }
    let chans = Channels::start(ws, framing, inboxes);
    let mut tasks = JoinSet::new();
    for (i, (port, rx)) in ports.into_iter().zip(rxs).enumerate() {
        let data = Out::Ws {
            ch: (2 * i) as u8,
            framing,
            tx: chans.out.clone(),
        };
        let error = Out::Ws {
            ch: (2 * i + 1) as u8,
            framing,
            tx: chans.out.clone(),
        };
        data.write(&port.to_le_bytes()).await;
        error.write(&port.to_le_bytes()).await;
        let (backend, target) = (backend.clone(), target.clone());
        tasks.spawn(async move {
            match backend.port_forward(target.clone(), port).await {
                Ok(conn) => splice(conn, rx.into(), &data).await,
                Err(e) => {
                    error
                        .write(forward_error(&target, port, &e).as_bytes())
                        .await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    chans.close().await;
}
