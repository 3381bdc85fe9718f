//! WebSocket channel framing (`channel.k8s.io` and its `base64.` and `v4.`/`v5.` forms):
//! each message starts with its channel number; `v5` adds the close signal on channel
//! 255. Also the byte tunnel that carries SPDY in binary messages.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The `v5` signal channel: a message `[255, n]` closes the client's side of channel `n`.
const CLOSE_CHANNEL: u8 = 255;
/// How long a finished session waits for the client's close.
const LINGER: Duration = Duration::from_secs(5);

/// A message for the connection's writer.
pub(crate) enum WsOut {
    /// Data on a channel.
    Data(u8, Vec<u8>),
    /// A normal close.
    Close,
}

/// How channel messages are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framing {
    /// Text messages, the channel as an ASCII digit and the data base64-encoded.
    pub base64: bool,
    /// The client may send the `v5` close signal.
    pub close_signal: bool,
}

/// Opens the server side of a WebSocket on an upgraded connection.
pub(crate) async fn open<T>(io: T) -> WebSocketStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut cfg = WebSocketConfig::default();
    cfg.max_message_size = Some(64 << 20);
    cfg.max_frame_size = Some(16 << 20);
    WebSocketStream::from_raw_socket(io, Role::Server, Some(cfg)).await
}

/// A channel-multiplexed WebSocket: inbound channels are delivered to their inboxes, and
/// [`WsOut`] messages are written.
pub(crate) struct Channels {
    /// The writer's queue.
    pub out: mpsc::Sender<WsOut>,
    /// Resolves (with an error) when the client's side of the connection ends: a close
    /// frame, the connection's end, or a broken connection.
    pub gone: Option<oneshot::Receiver<()>>,
    writer: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
}

impl Channels {
    /// Starts reading and writing `ws`; data on a channel in `inboxes` goes there, and the
    /// inbox ends at the channel's close signal or the connection's end.
    pub(crate) fn start<T>(
        ws: WebSocketStream<T>,
        framing: Framing,
        inboxes: HashMap<u8, mpsc::Sender<Vec<u8>>>,
    ) -> Channels
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sink, stream) = ws.split();
        let (tx, rx) = mpsc::channel(64);
        let (alive, gone) = oneshot::channel();
        Channels {
            out: tx,
            gone: Some(gone),
            writer: tokio::spawn(write_loop(sink, rx, framing)),
            reader: tokio::spawn(read_loop(stream, framing, inboxes, alive)),
        }
    }

    /// Sends a normal close, flushes, and waits a little for the client's close.
    pub(crate) async fn close(self) {
        let _ = self.out.send(WsOut::Close).await;
        drop(self.out);
        let _ = self.writer.await;
        let mut reader = self.reader;
        if tokio::time::timeout(LINGER, &mut reader).await.is_err() {
            reader.abort();
        }
    }
}

/// One channel message's bytes as framed.
pub(crate) fn encode(framing: Framing, ch: u8, data: &[u8]) -> Message {
    if framing.base64 {
        let mut s = String::with_capacity(1 + data.len().div_ceil(3) * 4);
        s.push(char::from(b'0' + ch));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
        Message::Text(s.into())
    } else {
        let mut v = Vec::with_capacity(1 + data.len());
        v.push(ch);
        v.extend_from_slice(data);
        Message::Binary(v.into())
    }
}

/// A message's channel and data (`None`: not a channel message). Like upstream, a text
/// message is as good as a binary one on a raw connection (the Python client writes
/// strings as text messages), and a binary close signal is read on a base64 one.
pub(crate) fn decode(framing: Framing, msg: &Message) -> Option<(u8, Vec<u8>)> {
    let b: &[u8] = match msg {
        Message::Binary(b) => b,
        Message::Text(t) => t.as_bytes(),
        _ => return None,
    };
    let (&first, rest) = b.split_first()?;
    if !framing.base64 || (msg.is_binary() && first == CLOSE_CHANNEL) {
        return Some((first, rest.to_vec()));
    }
    let data = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    Some((first.wrapping_sub(b'0'), data))
}

async fn write_loop<T>(
    mut sink: SplitSink<WebSocketStream<T>, Message>,
    mut rx: mpsc::Receiver<WsOut>,
    framing: Framing,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(m) = rx.recv().await {
        let msg = match m {
            WsOut::Data(ch, data) => encode(framing, ch, &data),
            WsOut::Close => {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    })))
                    .await;
                break;
            }
        };
        // flush only when nothing else is queued
        let r = if rx.is_empty() {
            sink.send(msg).await
        } else {
            sink.feed(msg).await
        };
        if r.is_err() {
            break;
        }
    }
    let _ = sink.flush().await;
}

async fn read_loop<T>(
    mut stream: SplitStream<WebSocketStream<T>>,
    framing: Framing,
    mut inboxes: HashMap<u8, mpsc::Sender<Vec<u8>>>,
    alive: oneshot::Sender<()>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    // dropped when the client's side ends, which tells the session
    let _alive = alive;
    while let Some(Ok(msg)) = stream.next().await {
        if msg.is_close() {
            break;
        }
        let Some((ch, data)) = decode(framing, &msg) else {
            continue;
        };
        if ch == CLOSE_CHANNEL && framing.close_signal {
            if let Some(c) = data.first() {
                inboxes.remove(c);
            }
            continue;
        }
        if data.is_empty() {
            continue;
        }
        if let Some(tx) = inboxes.get(&ch) {
            if tx.send(data).await.is_err() {
                inboxes.remove(&ch);
            }
        }
    }
}

/// Carries the bytes of `other` (a SPDY connection's) in binary messages of `ws`, both
/// ways, until either side ends.
pub(crate) async fn tunnel<T, U>(ws: WebSocketStream<T>, other: U)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(other);
    let inbound = async move {
        while let Some(Ok(msg)) = stream.next().await {
            let written = match msg {
                Message::Binary(b) => wr.write_all(&b).await,
                Message::Close(_) => break,
                _ => Ok(()),
            };
            if written.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    };
    let inbound = tokio::spawn(inbound);
    outbound.await;
    if tokio::time::timeout(LINGER, inbound).await.is_err() {
        tracing::debug!("tunnel client did not close");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_messages_frame_as_upstream() {
        let raw = Framing {
            base64: false,
            close_signal: false,
        };
        let b64 = Framing {
            base64: true,
            close_signal: false,
        };
        assert_eq!(encode(raw, 1, b"\n"), Message::Binary(vec![1u8, 10].into()));
        // upstream's example: "foo\n" on stdin is "0Zm9vCg=="
        assert_eq!(encode(b64, 0, b"foo\n"), Message::Text("0Zm9vCg==".into()));
        assert_eq!(
            decode(b64, &Message::Text("0Zm9vCg==".into())),
            Some((0, b"foo\n".to_vec()))
        );
        assert_eq!(
            decode(raw, &Message::Binary(vec![255u8, 0].into())),
            Some((255, vec![0]))
        );
        assert_eq!(
            decode(raw, &Message::Text("\u{0}hi".into())),
            Some((0, b"hi".to_vec()))
        );
        assert_eq!(decode(b64, &Message::Text("1!!".into())), None);
    }
}
