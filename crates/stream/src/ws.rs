//! WebSocket channel framing (`channel.k8s.io` and its `base64.` and `v4.`/`v5.` forms):
//! each message starts with its channel number; `v5` adds the close signal on channel
//! 255. Also the byte tunnel that carries SPDY in binary messages.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
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

/// How much a copy into a WebSocket reads at once: a message (and frame) per read.
pub(crate) const CHUNK: usize = 64 * 1024;
/// The most a WebSocket read asks of the connection at once. A TLS connection yields a
/// record (at most 16 KiB) per read, and tungstenite zeroes what it asks for before each
/// read, so asking for its default 128 KiB would clear eight times the bytes it gets.
const READ_BUFFER: usize = 32 * 1024;

/// A message for the connection's writer.
pub(crate) enum WsOut {
    /// A framed channel message (see [`encode`]).
    Message(Message),
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
    cfg.read_buffer_size = READ_BUFFER;
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
        inboxes: HashMap<u8, mpsc::Sender<Bytes>>,
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
            writer: tokio::spawn(write_loop(sink, rx)),
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

/// One channel message's bytes as framed (see [`copy_to_channel`] for data read from a
/// source, which this copies once less).
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

/// Copies `src` to channel `ch` until `src` ends or fails (true) or the connection's
/// writer is gone (false): a message per read of at most `buf_len` bytes, read (raw
/// framing) straight into the message after its channel byte.
pub(crate) async fn copy_to_channel<R>(
    src: &mut R,
    framing: Framing,
    ch: u8,
    tx: &mpsc::Sender<WsOut>,
    buf_len: usize,
) -> bool
where
    R: AsyncRead + Unpin + ?Sized,
{
    if framing.base64 {
        let mut buf = vec![0u8; buf_len];
        loop {
            match src.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    let m = encode(framing, ch, &buf[..n]);
                    if tx.send(WsOut::Message(m)).await.is_err() {
                        return false;
                    }
                }
            }
        }
    }
    loop {
        let mut b = BytesMut::with_capacity(1 + buf_len);
        b.put_u8(ch);
        match src.read_buf(&mut b).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => {
                let m = Message::Binary(b.freeze());
                if tx.send(WsOut::Message(m)).await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// A message's channel and data (`None`: not a channel message); raw data is the
/// message's own bytes, not a copy. Like upstream, a text message is as good as a
/// binary one on a raw connection (the Python client writes strings as text messages),
/// and a binary close signal is read on a base64 one.
pub(crate) fn decode(framing: Framing, msg: Message) -> Option<(u8, Bytes)> {
    let binary = msg.is_binary();
    let b: Bytes = match msg {
        Message::Binary(b) => b,
        Message::Text(t) => t.into(),
        _ => return None,
    };
    let first = *b.first()?;
    if !framing.base64 || (binary && first == CLOSE_CHANNEL) {
        return Some((first, b.slice(1..)));
    }
    let data = base64::engine::general_purpose::STANDARD
        .decode(&b[1..])
        .ok()?;
    Some((first.wrapping_sub(b'0'), data.into()))
}

async fn write_loop<T>(
    mut sink: SplitSink<WebSocketStream<T>, Message>,
    mut rx: mpsc::Receiver<WsOut>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(m) = rx.recv().await {
        let msg = match m {
            WsOut::Message(m) => m,
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
    mut inboxes: HashMap<u8, mpsc::Sender<Bytes>>,
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
        let Some((ch, data)) = decode(framing, msg) else {
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
        loop {
            let mut b = BytesMut::with_capacity(CHUNK);
            match rd.read_buf(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if sink.send(Message::Binary(b.freeze())).await.is_err() {
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
            decode(b64, Message::Text("0Zm9vCg==".into())),
            Some((0, Bytes::from_static(b"foo\n")))
        );
        assert_eq!(
            decode(raw, Message::Binary(vec![255u8, 0].into())),
            Some((255, Bytes::from_static(&[0])))
        );
        assert_eq!(
            decode(raw, Message::Text("\u{0}hi".into())),
            Some((0, Bytes::from_static(b"hi")))
        );
        assert_eq!(decode(b64, Message::Text("1!!".into())), None);
    }

    #[tokio::test]
    async fn a_copy_sends_a_message_per_read() {
        let raw = Framing {
            base64: false,
            close_signal: false,
        };
        let b64 = Framing {
            base64: true,
            close_signal: false,
        };
        let (tx, mut rx) = mpsc::channel(8);
        let mut src: &[u8] = b"hello world";
        assert!(copy_to_channel(&mut src, raw, 2, &tx, 4).await);
        let mut src: &[u8] = b"foo\n";
        assert!(copy_to_channel(&mut src, b64, 0, &tx, 4).await);
        drop(tx);
        let mut got = Vec::new();
        while let Some(WsOut::Message(m)) = rx.recv().await {
            got.push(m);
        }
        assert_eq!(
            got,
            vec![
                Message::Binary(Bytes::from_static(b"\x02hell")),
                Message::Binary(Bytes::from_static(b"\x02o wo")),
                Message::Binary(Bytes::from_static(b"\x02rld")),
                Message::Text("0Zm9vCg==".into()),
            ]
        );
        // a writer that is gone ends the copy
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut src: &[u8] = b"x";
        assert!(!copy_to_channel(&mut src, raw, 1, &tx, 4).await);
    }
}
