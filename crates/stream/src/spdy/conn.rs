//! The server side of a SPDY/3.1 connection: streams the client opens arrive with their
//! headers; each gets a reply, an inbox of its data and a writer.
//!
//! Flow control (SPDY/3.1 section 2.6.8): data this side receives is credited back with
//! WINDOW_UPDATE frames, per stream and for the session, as the consumer takes it from the
//! inbox, so a peer that keeps to its windows never sends more than the consumer can take.
//! On send, the peer's windows (its SETTINGS_INITIAL_WINDOW_SIZE, the 64 KiB session window,
//! its WINDOW_UPDATE credit) are kept to once the peer shows it does flow control, by a
//! SETTINGS initial window or a WINDOW_UPDATE. A peer that never does, such as moby's
//! spdystream under kubectl and client-go, which neither sends nor reads WINDOW_UPDATE,
//! is sent to without limit (waiting for its credit would stall every transfer past
//! 64 KiB); TCP's own flow control then bounds what is in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use super::frame::{Codec, Frame, Headers, FLAG_FIN};

/// The largest data frame this side writes.
const CHUNK: usize = 32 * 1024;
/// How long a finished connection waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(5);
/// The initial stream and session window of SPDY/3.1, both ways.
const DEFAULT_WINDOW: i64 = 64 * 1024;
/// The SETTINGS id of the initial stream window.
const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// Credit is given back once this much of a window has been consumed.
const CREDIT_AT: u32 = 32 * 1024;

/// What the writer task is told.
enum Cmd {
    Frame(Frame),
    /// The consumer took `n` bytes of stream `stream_id`'s data: credit them back.
    Consumed {
        stream_id: u32,
        n: u32,
    },
    /// Flush, say GOAWAY and shut the write side.
    Close,
}

/// What this side may still send: the peer's windows, as its SETTINGS and WINDOW_UPDATE
/// frames say.
struct SendWindows {
    /// The peer has shown it does flow control; until then windows are counted, not kept.
    enforced: bool,
    /// The peer's initial stream window.
    initial: i64,
    /// The session's window.
    session: i64,
    /// Each open stream's window (a stream reset or finished is absent).
    streams: HashMap<u32, i64>,
    /// The connection has ended.
    closed: bool,
}

/// The send windows shared by a connection's reader (which applies the peer's credit)
/// and its stream writers (which spend it).
struct Flow {
    state: Mutex<SendWindows>,
    changed: Notify,
}

impl Flow {
    fn new() -> Flow {
        Flow {
            state: Mutex::new(SendWindows {
                enforced: false,
                initial: DEFAULT_WINDOW,
                session: DEFAULT_WINDOW,
                streams: HashMap::new(),
                closed: false,
            }),
            changed: Notify::new(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut SendWindows)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_waiters();
    }

    /// Applies a frame of the peer's that bears on the send windows.
    fn apply(&self, frame: &Frame) {
        match frame {
            Frame::SynStream { stream_id, .. } => self.update(|w| {
                let initial = w.initial;
                w.streams.insert(*stream_id, initial);
            }),
            Frame::Settings { entries, .. } => {
                for (_, id, value) in entries {
                    if *id == SETTINGS_INITIAL_WINDOW_SIZE {
                        self.update(|w| {
                            // a new initial window moves every open stream's by the change
                            let delta = i64::from(*value) - w.initial;
                            w.initial = i64::from(*value);
                            w.streams.values_mut().for_each(|s| *s += delta);
                            w.enforced = true;
                        });
                    }
                }
            }
            Frame::WindowUpdate { stream_id, delta } => self.update(|w| {
                let delta = i64::from(*delta);
                if *stream_id == 0 {
                    w.session += delta;
                } else if let Some(s) = w.streams.get_mut(stream_id) {
                    *s += delta;
                }
                w.enforced = true;
            }),
            Frame::RstStream { stream_id, .. } => self.update(|w| {
                w.streams.remove(stream_id);
            }),
            _ => {}
        }
    }

    /// Takes up to `want` bytes of send credit for `stream_id`, waiting for the peer's
    /// credit when its windows are kept to and spent; `None` once the stream is reset or
    /// finished, or the connection has ended.
    async fn take(&self, stream_id: u32, want: usize) -> Option<usize> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if w.closed {
                    return None;
                }
                let stream = *w.streams.get(&stream_id)?;
                let want = want as i64;
                let n = if w.enforced {
                    want.min(stream).min(w.session)
                } else {
                    want
                };
                if n > 0 {
                    w.session -= n;
                    if let Some(s) = w.streams.get_mut(&stream_id) {
                        *s -= n;
                    }
                    return Some(n as usize);
                }
            }
            changed.await;
        }
    }
}

/// Data the client sent on one stream (or WebSocket channel), in order; ends at the
/// client's end of it. A SPDY stream's data is credited back to the peer as it is taken.
pub(crate) struct Inbox {
    rx: mpsc::Receiver<Bytes>,
    credit: Option<(u32, mpsc::Sender<Cmd>)>,
}

impl From<mpsc::Receiver<Bytes>> for Inbox {
    fn from(rx: mpsc::Receiver<Bytes>) -> Inbox {
        Inbox { rx, credit: None }
    }
}

impl Inbox {
    /// The next piece of data; `None` at the stream's end.
    pub(crate) async fn recv(&mut self) -> Option<Bytes> {
        let data = self.rx.recv().await?;
        if let Some((stream_id, out)) = &self.credit {
            let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
            let _ = out
                .send(Cmd::Consumed {
                    stream_id: *stream_id,
                    n,
                })
                .await;
        }
        Some(data)
    }
}

/// A stream the client opened.
pub(crate) struct Stream {
    /// The stream's headers (`streamtype`, `port`, `requestid`, ...).
    pub headers: Headers,
    /// Data from the client; ends at its FIN or a reset.
    pub inbox: Inbox,
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
    flow: Arc<Flow>,
}

impl StreamWriter {
    /// Sends `data` (in frames of at most 32 KiB, within the peer's windows); false when
    /// the stream was reset or finished, or the connection is gone.
    pub(crate) async fn write(&self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let Some(n) = self.flow.take(self.id, data.len().min(CHUNK)).await else {
                return false;
            };
            let f = Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: data[..n].to_vec(),
            };
            if self.out.send(Cmd::Frame(f)).await.is_err() {
                return false;
            }
            data = &data[n..];
        }
        true
    }

    /// Ends this side of the stream (an empty data frame with FIN).
    pub(crate) async fn finish(&self) {
        self.flow.update(|w| {
            w.streams.remove(&self.id);
        });
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
    /// Resolves (with an error) when the client's side of the connection ends (its end,
    /// a GOAWAY, or a broken connection).
    pub gone: Option<oneshot::Receiver<()>>,
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
        let (alive, gone) = oneshot::channel();
        let flow = Arc::new(Flow::new());
        let writer = tokio::spawn(write_loop(wr, out_rx));
        let reader = tokio::spawn(read_loop(rd, out_tx.clone(), streams_tx, alive, flow));
        Conn {
            streams: streams_rx,
            gone: Some(gone),
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
    // data taken by consumers and not yet credited back, per stream (0: the session)
    let mut unacked: HashMap<u32, u32> = HashMap::new();
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
                Cmd::Consumed { stream_id, n } => {
                    for id in [stream_id, 0] {
                        let u = unacked.entry(id).or_default();
                        *u = u.saturating_add(n);
                        if *u >= CREDIT_AT {
                            let f = Frame::WindowUpdate {
                                stream_id: id,
                                delta: *u,
                            };
                            unacked.remove(&id);
                            if let Err(e) = codec.encode(&f, &mut buf) {
                                tracing::warn!(error = %e, "spdy frame not written");
                            }
                        }
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
    alive: oneshot::Sender<()>,
    flow: Arc<Flow>,
) {
    // dropped when the client's side ends, which tells the session
    let _alive = alive;
    // and blocked writers learn it from the windows
    struct Ended(Arc<Flow>);
    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.update(|w| w.closed = true);
        }
    }
    let ended = Ended(flow);
    let flow = &ended.0;
    let mut codec = Codec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut start = 0usize;
    let mut inboxes: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
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
            flow.apply(&frame);
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
                        inbox: Inbox {
                            rx,
                            credit: Some((stream_id, out.clone())),
                        },
                        writer: StreamWriter {
                            id: stream_id,
                            out: out.clone(),
                            flow: flow.clone(),
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
                        if !data.is_empty() && tx.send(data.into()).await.is_err() {
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
        assert_eq!(s.inbox.recv().await.unwrap(), &b"abc"[..]);
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

    /// A test's client end of a connection: writes frames, reads frames.
    struct Peer {
        rd: tokio::io::ReadHalf<tokio::io::DuplexStream>,
        wr: tokio::io::WriteHalf<tokio::io::DuplexStream>,
        tx: Codec,
        rx: Codec,
        buf: Vec<u8>,
    }

    impl Peer {
        fn new() -> (Peer, Conn) {
            let (client, server) = tokio::io::duplex(1 << 20);
            let (rd, wr) = tokio::io::split(client);
            let peer = Peer {
                rd,
                wr,
                tx: Codec::new(),
                rx: Codec::new(),
                buf: Vec::new(),
            };
            (peer, Conn::start(server))
        }

        async fn send(&mut self, frames: &[Frame]) {
            let mut wire = Vec::new();
            for f in frames {
                self.tx.encode(f, &mut wire).unwrap();
            }
            self.wr.write_all(&wire).await.unwrap();
        }

        /// The next frame, or `None` if none comes within a short wait.
        async fn next(&mut self) -> Option<Frame> {
            loop {
                if let Some((f, n)) = self.rx.decode(&self.buf).unwrap() {
                    self.buf.drain(..n);
                    return Some(f);
                }
                let mut chunk = [0u8; 64 * 1024];
                let read = self.rd.read(&mut chunk);
                match tokio::time::timeout(Duration::from_millis(300), read).await {
                    Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                    _ => return None,
                }
            }
        }

        /// Data bytes of `stream_id` received until nothing more comes (other frames are
        /// kept in `others`).
        async fn data_until_quiet(&mut self, stream_id: u32, others: &mut Vec<Frame>) -> usize {
            let mut n = 0;
            while let Some(f) = self.next().await {
                match f {
                    Frame::Data {
                        stream_id: id,
                        data,
                        ..
                    } if id == stream_id => n += data.len(),
                    f => others.push(f),
                }
            }
            n
        }
    }

    fn syn(stream_id: u32) -> Frame {
        Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: vec![("streamtype".into(), "data".into())],
        }
    }

    #[tokio::test]
    async fn a_peer_that_sets_windows_gets_no_more_than_its_credit() {
        let (mut peer, mut conn) = Peer::new();
        peer.send(&[
            Frame::Settings {
                flags: 0,
                entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 1000)],
            },
            syn(1),
        ])
        .await;
        let s = conn.streams.recv().await.unwrap();
        let w = s.writer.clone();
        let writer = tokio::spawn(async move { w.write(&vec![7u8; 100_000]).await });
        let mut others = Vec::new();
        assert_eq!(
            peer.data_until_quiet(1, &mut others).await,
            1000,
            "the initial window"
        );
        peer.send(&[Frame::WindowUpdate {
            stream_id: 1,
            delta: 1500,
        }])
        .await;
        assert_eq!(
            peer.data_until_quiet(1, &mut others).await,
            1500,
            "the stream's credit"
        );
        // a larger initial window moves the open stream's window by the change; then the
        // session's 64 KiB window is what limits
        peer.send(&[Frame::Settings {
            flags: 0,
            entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)],
        }])
        .await;
        assert_eq!(
            peer.data_until_quiet(1, &mut others).await,
            65536 - 2500,
            "the session window"
        );
        assert!(!writer.is_finished());
        peer.send(&[Frame::WindowUpdate {
            stream_id: 0,
            delta: 1 << 20,
        }])
        .await;
        assert_eq!(peer.data_until_quiet(1, &mut others).await, 100_000 - 65536);
        assert!(writer.await.unwrap(), "all written");
        assert!(
            others.iter().all(|f| matches!(f, Frame::SynReply { .. })),
            "{others:?}"
        );
    }

    #[tokio::test]
    async fn a_reset_ends_a_writer_waiting_for_credit() {
        let (mut peer, mut conn) = Peer::new();
        peer.send(&[
            Frame::Settings {
                flags: 0,
                entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 10)],
            },
            syn(1),
        ])
        .await;
        let s = conn.streams.recv().await.unwrap();
        let w = s.writer.clone();
        let writer = tokio::spawn(async move { w.write(&[1u8; 100]).await });
        let mut others = Vec::new();
        assert_eq!(peer.data_until_quiet(1, &mut others).await, 10);
        peer.send(&[Frame::RstStream {
            stream_id: 1,
            status: 5,
        }])
        .await;
        let done = tokio::time::timeout(Duration::from_secs(5), writer).await;
        assert!(
            !done.expect("the writer returns").unwrap(),
            "a reset stream is not written"
        );
    }

    #[tokio::test]
    async fn a_peer_without_flow_control_is_sent_to_without_limit() {
        // as moby/spdystream (kubectl, client-go): no SETTINGS, no WINDOW_UPDATE
        let (mut peer, mut conn) = Peer::new();
        peer.send(&[syn(1)]).await;
        let s = conn.streams.recv().await.unwrap();
        let w = s.writer.clone();
        let writer = tokio::spawn(async move { w.write(&vec![7u8; 1 << 20]).await });
        let mut others = Vec::new();
        assert_eq!(peer.data_until_quiet(1, &mut others).await, 1 << 20);
        assert!(writer.await.unwrap());
    }

    #[tokio::test]
    async fn received_data_is_credited_back_as_it_is_consumed() {
        let (mut peer, mut conn) = Peer::new();
        peer.send(&[syn(1), syn(3)]).await;
        let mut a = conn.streams.recv().await.unwrap();
        let _b = conn.streams.recv().await.unwrap();
        // the default window's worth, in 16 KiB frames
        for _ in 0..4 {
            peer.send(&[Frame::Data {
                stream_id: 1,
                flags: 0,
                data: vec![1u8; 16 * 1024],
            }])
            .await;
        }
        let mut others = Vec::new();
        peer.data_until_quiet(1, &mut others).await;
        assert!(
            !others
                .iter()
                .any(|f| matches!(f, Frame::WindowUpdate { .. })),
            "no credit before the consumer takes the data: {others:?}"
        );
        for _ in 0..4 {
            assert_eq!(a.inbox.recv().await.unwrap().len(), 16 * 1024);
        }
        others.clear();
        peer.data_until_quiet(1, &mut others).await;
        let credit = |id: u32| -> u32 {
            others
                .iter()
                .filter_map(|f| match f {
                    Frame::WindowUpdate { stream_id, delta } if *stream_id == id => Some(*delta),
                    _ => None,
                })
                .sum()
        };
        assert_eq!(
            credit(1),
            64 * 1024,
            "the stream's window given back: {others:?}"
        );
        assert_eq!(
            credit(0),
            64 * 1024,
            "the session's window given back: {others:?}"
        );
        assert_eq!(credit(3), 0);
    }
}
