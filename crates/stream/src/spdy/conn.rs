//! The server side of a SPDY/3.1 connection: streams the client opens arrive with their
//! headers; each gets a reply, an inbox of its data and a writer.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::frame::{Codec, Frame, Headers, FLAG_FIN};

/// The largest data frame this side writes.
const CHUNK: usize = 32 * 1024;
/// How long a finished connection waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(5);

/// What the writer task is told.
enum Cmd {
    Frame(Frame),
    /// Flush, say GOAWAY and shut the write side.
    Close,
}

/// A stream the client opened.
pub(crate) struct Stream {
    /// The stream's headers (`streamtype`, `port`, `requestid`, ...).
    pub headers: Headers,
    /// Data from the client; ends at its FIN or a reset.
    pub inbox: mpsc::Receiver<Vec<u8>>,
    /// Writes to the client on this stream.
    pub writer: StreamWriter,
}

impl Stream {
    /// The first value of header `name`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        super::frame::header(&self.headers, name)
    }
}

/// Writes data frames on one stream.
#[derive(Clone)]
pub(crate) struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Cmd>,
}

impl StreamWriter {
    /// Sends `data` (in frames of at most 32 KiB); false when the connection is gone.
    pub(crate) async fn write(&self, data: &[u8]) -> bool {
        for chunk in data.chunks(CHUNK) {
            let f = Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: chunk.to_vec(),
            };
            if self.out.send(Cmd::Frame(f)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Ends this side of the stream (an empty data frame with FIN).
    pub(crate) async fn finish(&self) {
        let f = Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Vec::new(),
        };
        let _ = self.out.send(Cmd::Frame(f)).await;
    }
}

/// A server-side SPDY/3.1 connection.
pub(crate) struct Conn {
    /// Streams as the client opens them; ends when the connection does.
    pub streams: mpsc::Receiver<Stream>,
    out: mpsc::Sender<Cmd>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Conn {
    /// Runs the connection over `io` (an upgraded HTTP connection or a tunnel).
    pub(crate) fn start<T>(io: T) -> Conn
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel::<Cmd>(64);
        let (streams_tx, streams_rx) = mpsc::channel(16);
        let writer = tokio::spawn(write_loop(wr, out_rx));
        let reader = tokio::spawn(read_loop(rd, out_tx.clone(), streams_tx));
        Conn {
            streams: streams_rx,
            out: out_tx,
            reader,
            writer,
        }
    }

    /// Says GOAWAY, flushes what the streams wrote, and waits a little for the client to
    /// close its side (closing first would reset the connection under unread data).
    pub(crate) async fn close(self) {
        let _ = self.out.send(Cmd::Close).await;
        let _ = self.writer.await;
        let mut reader = self.reader;
        if tokio::time::timeout(LINGER, &mut reader).await.is_err() {
            reader.abort();
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Cmd>) {
    let mut codec = Codec::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut last_good = 0u32;
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut closing = false;
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Frame(f) => {
                    if let Frame::SynReply { stream_id, .. } = &f {
                        last_good = last_good.max(*stream_id);
                    }
                    if let Err(e) = codec.encode(&f, &mut buf) {
                        tracing::warn!(error = %e, "spdy frame not written");
                    }
                }
                Cmd::Close => {
                    let _ = codec.encode(
                        &Frame::GoAway {
                            last_good,
                            status: 0,
                        },
                        &mut buf,
                    );
                    closing = true;
                    break;
                }
            }
            if buf.len() >= 256 * 1024 {
                break;
            }
            next = rx.try_recv().ok();
        }
        if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
            break 'outer;
        }
        buf.clear();
        if closing {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    out: mpsc::Sender<Cmd>,
    streams: mpsc::Sender<Stream>,
) {
    let mut codec = Codec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut start = 0usize;
    let mut inboxes: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    loop {
        // decode every whole frame buffered
        loop {
            let frame = match codec.decode(&buf[start..]) {
                Ok(Some((f, n))) => {
                    start += n;
                    f
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "bad spdy frame; closing the connection");
                    return;
                }
            };
            match frame {
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers,
                    ..
                } => {
                    let (tx, rx) = mpsc::channel(64);
                    if flags & FLAG_FIN == 0 {
                        inboxes.insert(stream_id, tx);
                    }
                    let reply = Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: Vec::new(),
                    };
                    if out.send(Cmd::Frame(reply)).await.is_err() {
                        return;
                    }
                    let s = Stream {
                        headers,
                        inbox: rx,
                        writer: StreamWriter {
                            id: stream_id,
                            out: out.clone(),
                        },
                    };
                    if streams.send(s).await.is_err() {
                        tracing::debug!(stream_id, "spdy stream opened after the session ended");
                    }
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    if let Some(tx) = inboxes.get(&stream_id) {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            inboxes.remove(&stream_id);
                        }
                    }
                    if flags & FLAG_FIN != 0 {
                        inboxes.remove(&stream_id);
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    inboxes.remove(&stream_id);
                }
                Frame::Headers {
                    stream_id, flags, ..
                } if flags & FLAG_FIN != 0 => {
                    inboxes.remove(&stream_id);
                }
                Frame::Ping(id) => {
                    let answered = out.send(Cmd::Frame(Frame::Ping(id))).await;
                    if answered.is_err() {
                        return;
                    }
                }
                Frame::GoAway { .. } => return,
                _ => {}
            }
        }
        if start > 0 {
            buf.drain(..start);
            start = 0;
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_open_reply_carry_data_and_answer_pings() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut conn = Conn::start(server);
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut tx = Codec::new();
        let mut wire = Vec::new();
        tx.encode(
            &Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "stdin".into())],
            },
            &mut wire,
        )
        .unwrap();
        tx.encode(&Frame::Ping(1), &mut wire).unwrap();
        tx.encode(
            &Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: b"abc".to_vec(),
            },
            &mut wire,
        )
        .unwrap();
        cwr.write_all(&wire).await.unwrap();
        let mut s = conn.streams.recv().await.unwrap();
        assert_eq!(s.header("streamType"), Some("stdin"));
        assert_eq!(s.inbox.recv().await.unwrap(), b"abc");
        assert!(s.inbox.recv().await.is_none(), "FIN ends the inbox");
        s.writer.write(b"xyz").await;
        s.writer.finish().await;
        conn.out.send(Cmd::Close).await.unwrap();
        let mut rx = Codec::new();
        let mut got = Vec::new();
        let mut buf = Vec::new();
        while !matches!(got.last(), Some(Frame::GoAway { .. })) {
            let mut chunk = [0u8; 4096];
            let n = crd.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
            while let Some((f, n)) = rx.decode(&buf).unwrap() {
                buf.drain(..n);
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                Frame::SynReply {
                    stream_id: 1,
                    flags: 0,
                    headers: vec![]
                },
                Frame::Ping(1),
                Frame::Data {
                    stream_id: 1,
                    flags: 0,
                    data: b"xyz".to_vec()
                },
                Frame::Data {
                    stream_id: 1,
                    flags: FLAG_FIN,
                    data: vec![]
                },
                Frame::GoAway {
                    last_good: 1,
                    status: 0
                },
            ]
        );
    }
}
