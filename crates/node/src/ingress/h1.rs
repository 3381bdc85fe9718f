//! The HTTP/1.1 fast path of the Ingress proxy: one task per client connection parses
//! each request head itself, writes it (rewritten, with its body) to a pooled backend
//! connection and copies the answer back byte for byte, reading only as much of it as
//! its framing says. Nothing crosses a task, and a small GET costs four socket calls.
//!
//! Anything out of the ordinary goes to hyper (the general path in the parent module)
//! for the rest of the connection, with the bytes read so far handed over unread:
//! requests that are not plain HTTP/1.1 (HTTP/1.0, HTTP/2 prior knowledge, absolute or
//! `*` targets, `CONNECT`), `Upgrade` and `Expect`, transfer codings other than
//! `chunked`, more than one Host or Content-Length, a request without a route or
//! without endpoints (404, 503), the redirect to HTTPS, and request bodies larger than
//! [`MAX_BODY`] (hyper streams them). Requests are handled one after another, so
//! pipelined requests are answered in order.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::{Shared, Table, POOL_IDLE_PER_ENDPOINT};
use crate::error::ErrorChain;

/// The largest request or response head read.
const MAX_HEAD: usize = 64 * 1024;
/// The most headers a request or response may have here (more go to hyper).
const MAX_HEADERS: usize = 100;
/// The largest request body forwarded in one piece; larger ones go to hyper.
pub(super) const MAX_BODY: usize = 64 * 1024;
/// Space kept free in a buffer before each read.
const READ_SPACE: usize = 16 * 1024;

/// Idle backend connections of the fast path, by endpoint.
#[derive(Default)]
pub(super) struct Pool(std::sync::Mutex<HashMap<SocketAddrV4, Vec<TcpStream>>>);

impl Pool {
    /// An idle connection to `ep` that the backend has not closed, as far as the
    /// runtime has seen (no read is tried unless the socket became readable).
    fn take(&self, ep: SocketAddrV4) -> Option<TcpStream> {
        loop {
            let s = {
                let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
                m.get_mut(&ep)?.pop()?
            };
            let mut b = [0u8; 1];
            match s.try_read(&mut b) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(s),
                // closed, failed, or bytes nobody asked for: not reusable
                _ => continue,
            }
        }
    }

    fn give_back(&self, ep: SocketAddrV4, s: TcpStream) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let idle = m.entry(ep).or_default();
        if idle.len() < POOL_IDLE_PER_ENDPOINT {
            idle.push(s);
        }
    }
}

/// Reads more into `buf`, keeping [`READ_SPACE`] free first: the bytes read (0 at the
/// end of the stream).
async fn read_more<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_SPACE {
        buf.reserve(READ_SPACE);
    }
    r.read_buf(buf).await
}

/// Serves one client connection (plain TCP, or TLS that chose HTTP/1.1), falling back
/// to hyper as the module describes.
pub(super) async fn serve<S>(mut client: S, peer: SocketAddr, secure: bool, shared: Shared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf: Vec<u8> = Vec::with_capacity(READ_SPACE);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut rbuf: Vec<u8> = Vec::new();
    loop {
        let table = shared.routes.table();
        let step = loop {
            if !buf.is_empty() {
                match prepare(&buf, peer, secure, shared.env.tls_port, &table, &mut out) {
                    Step::More => {}
                    step => break step,
                }
                if buf.len() >= MAX_HEAD + MAX_BODY {
                    break Step::Fallback;
                }
            }
            match read_more(&mut client, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let Step::Forward {
            head_len,
            len,
            target,
            close,
            head,
            idempotent,
        } = step
        else {
            drop(table);
            let client = Rewind {
                pre: buf,
                pos: 0,
                inner: client,
            };
            return super::serve_connection(client, peer, secure, shared).await;
        };
        out.extend_from_slice(&buf[head_len..len]);
        buf.drain(..len);
        let req = Req {
            bytes: &out,
            head,
            close,
            idempotent,
        };
        let keep = exchange(&shared, &table, target, &req, &mut rbuf, &mut client).await;
        if !keep || client.flush().await.is_err() {
            let _ = client.shutdown().await;
            return;
        }
    }
}

/// What [`prepare`] made of the bytes read so far.
#[derive(Debug, PartialEq)]
enum Step {
    /// Not a whole request yet.
    More,
    /// For hyper.
    Fallback,
    /// A request for the fast path, rewritten for the backend into `out` (its head).
    Forward {
        /// The length of the client's request head.
        head_len: usize,
        /// The length of the client's request, head and body.
        len: usize,
        /// Index into [`Table::targets`].
        target: usize,
        /// `Connection: close`.
        close: bool,
        /// A HEAD request (the answer has no body).
        head: bool,
        /// Safe to send again when a reused connection failed before answering.
        idempotent: bool,
    },
}

/// A request as sent to the backend.
struct Req<'a> {
    bytes: &'a [u8],
    head: bool,
    close: bool,
    idempotent: bool,
}

fn visible_ascii(v: &[u8]) -> bool {
    v.iter().all(|&b| (32..127).contains(&b) || b == b'\t')
}

/// Parses the request at the start of `buf` and, when the fast path takes it, writes
/// its head as the backend gets it into `out`: the target in origin form, HTTP/1.1,
/// the client's headers but for `X-Forwarded-For/Host/Proto`, which are set anew (as
/// the general path does).
fn prepare(
    buf: &[u8],
    peer: SocketAddr,
    secure: bool,
    tls_port: Option<u16>,
    table: &Table,
    out: &mut Vec<u8>,
) -> Step {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Step::More,
        _ => return Step::Fallback,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Step::Fallback;
    };
    if method == "CONNECT" || !target.starts_with('/') {
        return Step::Fallback;
    }
    let (mut host, mut length, mut chunked, mut close) = (None, None, false, false);
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() || !visible_ascii(h.value) {
                return Step::Fallback;
            }
            host = std::str::from_utf8(h.value).ok().map(str::trim);
        } else if name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).unwrap_or("").trim();
            match v.parse::<usize>() {
                Ok(n) if length.is_none() && v.bytes().all(|b| b.is_ascii_digit()) => {
                    length = Some(n)
                }
                _ => return Step::Fallback,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Step::Fallback;
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Step::Fallback;
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") || name.eq_ignore_ascii_case("expect") {
            return Step::Fallback;
        }
    }
    let Some(host) = host else {
        return Step::Fallback;
    };
    if chunked && length.is_some() {
        return Step::Fallback;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let Some(t) = table.lookup_index(host, path) else {
        return Step::Fallback;
    };
    if table.targets[t].endpoints.is_empty() {
        return Step::Fallback;
    }
    let bare_host = host.split(':').next().unwrap_or(host);
    if !secure && tls_port.is_some() && super::redirects(&table.ingresses, bare_host) {
        return Step::Fallback;
    }
    let body = &buf[head_len..];
    let body_len = if chunked {
        let mut c = Chunked::default();
        match c.advance(body) {
            Ok(n) if c.done() => n,
            Ok(_) if body.len() < MAX_BODY => return Step::More,
            _ => return Step::Fallback,
        }
    } else {
        match length.unwrap_or(0) {
            n if n > MAX_BODY => return Step::Fallback,
            n if body.len() < n => return Step::More,
            n => n,
        }
    };

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("x-forwarded-for")
            || name.eq_ignore_ascii_case("x-forwarded-host")
            || name.eq_ignore_ascii_case("x-forwarded-proto")
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    let proto = if secure { "https" } else { "http" };
    let _ = write!(
        out,
        "x-forwarded-for: {}\r\nx-forwarded-host: {host}\r\nx-forwarded-proto: {proto}\r\n\r\n",
        peer.ip()
    );
    Step::Forward {
        head_len,
        len: head_len + body_len,
        target: t,
        close,
        head: method == "HEAD",
        idempotent: !matches!(method, "POST" | "PATCH"),
    }
}

/// Sends `req` to the target's endpoints (round-robin, each tried once; on each, an
/// idle connection first) and copies the answer to `client`: whether the client
/// connection stays open.
async fn exchange<S: AsyncWrite + Unpin>(
    shared: &Shared,
    table: &Table,
    target: usize,
    req: &Req<'_>,
    rbuf: &mut Vec<u8>,
    client: &mut S,
) -> bool {
    let eps = &table.targets[target].endpoints;
    let first = shared.rr.fetch_add(1, Ordering::Relaxed);
    let mut last_err = String::new();
    for i in 0..eps.len() {
        let ep = eps[(first + i) % eps.len()];
        let mut pooled = shared.raw.take(ep);
        loop {
            let reused = pooled.is_some();
            let mut backend = match pooled.take() {
                Some(s) => s,
                None => match shared.env.net.connect(SocketAddr::V4(ep)).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        s
                    }
                    Err(e) => {
                        last_err = ErrorChain(&e).to_string();
                        break;
                    }
                },
            };
            match forward(&mut backend, req, rbuf, client).await {
                Forwarded::Done { reuse, keep } => {
                    if reuse {
                        shared.raw.give_back(ep, backend);
                    }
                    return keep;
                }
                // an idle connection the backend closed meanwhile: a new one
                Forwarded::Unanswered(_) if reused => continue,
                Forwarded::Unanswered(e) => {
                    last_err = e;
                    break;
                }
                Forwarded::Bad(e) => return bad_gateway(client, req.head, &e).await,
                Forwarded::Broken => return false,
            }
        }
    }
    bad_gateway(client, req.head, &last_err).await
}

/// Answers `502 Bad Gateway` (`upstream: <why>`): whether the connection stays open.
async fn bad_gateway<S: AsyncWrite + Unpin>(client: &mut S, head: bool, why: &str) -> bool {
    let body = format!("upstream: {why}\n");
    let mut r = format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    if !head {
        r.push_str(&body);
    }
    client.write_all(r.as_bytes()).await.is_ok()
}

/// How one try of a request on one backend connection ended.
enum Forwarded {
    /// The answer went to the client: whether the backend connection is reusable and
    /// the client connection stays open.
    Done { reuse: bool, keep: bool },
    /// The connection failed before any byte of an answer (and, for a request that is
    /// not idempotent, before the request was written).
    Unanswered(String),
    /// The backend's answer is not HTTP/1.1 as it should be; the client got nothing.
    Bad(String),
    /// Failed with part of the answer sent to the client, which is closed.
    Broken,
}

/// How a response's body ends.
#[derive(Debug, PartialEq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What the fast path needs of a response head.
#[derive(Debug)]
struct ResponseHead {
    len: usize,
    status: u16,
    framing: Framing,
    /// The backend connection ends after this answer.
    close: bool,
}

/// Parses a response head at the start of `buf` (`None`: not all there yet); `head`
/// says whether the request was HEAD.
fn parse_response(buf: &[u8], head: bool) -> Result<Option<ResponseHead>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err("response head too large".into()),
        Err(e) => return Err(format!("invalid response head: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    // an HTTP/1.0 backend closes unless told otherwise: not reused
    let mut close = resp.version != Some(1);
    let (mut length, mut coding) = (None, None::<bool>);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).unwrap_or("").trim();
            match v.parse::<u64>() {
                Ok(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return Err("invalid content-length".into()),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            coding = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let framing = if head || status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Empty
    } else {
        match (coding, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    // both framings at once: the answer is read by its coding, the connection not kept
    close |= coding.is_some() && length.is_some();
    Ok(Some(ResponseHead {
        len,
        status,
        framing,
        close,
    }))
}

/// Writes `req` to `backend` and copies its answer to `client`.
async fn forward<S: AsyncWrite + Unpin>(
    backend: &mut TcpStream,
    req: &Req<'_>,
    rbuf: &mut Vec<u8>,
    client: &mut S,
) -> Forwarded {
    if let Err(e) = backend.write_all(req.bytes).await {
        return Forwarded::Unanswered(ErrorChain(&e).to_string());
    }
    rbuf.clear();
    let mut sent = false;
    let resp = loop {
        let resp = loop {
            if !rbuf.is_empty() {
                match parse_response(rbuf, req.head) {
                    Ok(Some(r)) => break r,
                    Ok(None) => {}
                    Err(_) if sent => return Forwarded::Broken,
                    Err(e) => return Forwarded::Bad(e),
                }
            }
            match read_more(backend, rbuf).await {
                Ok(n) if n > 0 => {}
                r => {
                    let why = match r {
                        Err(e) => ErrorChain(&e).to_string(),
                        Ok(_) => "connection closed before the response".to_owned(),
                    };
                    return if sent {
                        Forwarded::Broken
                    } else if rbuf.is_empty() && req.idempotent {
                        Forwarded::Unanswered(why)
                    } else {
                        Forwarded::Bad(why)
                    };
                }
            }
        };
        if resp.status >= 200 {
            break resp;
        }
        // 100 Continue and other interim answers go to the client as they are; a
        // 101 was not asked for (upgrades take the general path)
        if resp.status == 101 {
            return Forwarded::Bad("101 Switching Protocols without an upgrade".into());
        }
        if client.write_all(&rbuf[..resp.len]).await.is_err() {
            return Forwarded::Broken;
        }
        sent = true;
        rbuf.drain(..resp.len);
    };
    let mut reuse = !resp.close && !req.close;
    let keep = reuse && resp.framing != Framing::UntilClose;
    // a failed write to the client ends it all
    macro_rules! send {
        ($bytes:expr) => {
            if client.write_all($bytes).await.is_err() {
                return Forwarded::Broken;
            }
        };
    }
    let after_head = rbuf.len() - resp.len;
    match resp.framing {
        Framing::Empty => {
            reuse &= after_head == 0;
            send!(&rbuf[..resp.len]);
        }
        Framing::Length(n) => {
            let have = after_head.min(usize::try_from(n).unwrap_or(usize::MAX));
            reuse &= have == after_head;
            send!(&rbuf[..resp.len + have]);
            let mut rest = n - have as u64;
            while rest > 0 {
                rbuf.clear();
                let got = match read_more(backend, rbuf).await {
                    Ok(0) | Err(_) => return Forwarded::Broken,
                    Ok(got) => got,
                };
                let take = got.min(usize::try_from(rest).unwrap_or(usize::MAX));
                reuse &= take == got;
                send!(&rbuf[..take]);
                rest -= take as u64;
            }
        }
        Framing::Chunked => {
            let mut c = Chunked::default();
            let Ok(n) = c.advance(&rbuf[resp.len..]) else {
                return Forwarded::Broken;
            };
            reuse &= n == after_head;
            send!(&rbuf[..resp.len + n]);
            while !c.done() {
                rbuf.clear();
                match read_more(backend, rbuf).await {
                    Ok(0) | Err(_) => return Forwarded::Broken,
                    Ok(_) => {}
                }
                let Ok(n) = c.advance(rbuf) else {
                    return Forwarded::Broken;
                };
                reuse &= n == rbuf.len();
                send!(&rbuf[..n]);
            }
        }
        Framing::UntilClose => {
            reuse = false;
            send!(rbuf);
            loop {
                rbuf.clear();
                match read_more(backend, rbuf).await {
                    Ok(0) => break,
                    Err(_) => return Forwarded::Broken,
                    Ok(_) => send!(rbuf),
                }
            }
        }
    }
    Forwarded::Done { reuse, keep }
}

/// Where a chunked body's parser is.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum ChunkState {
    /// In a chunk-size line's hex digits.
    #[default]
    Size,
    /// In a chunk-size line after the digits (extensions), up to its CR.
    Ext,
    /// Expecting the LF that ends a chunk-size line.
    SizeLf,
    /// In chunk data.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    Trailer,
    /// In a trailer line, up to its LF.
    TrailerLine,
    /// Expecting the final LF.
    EndLf,
    /// The body has ended.
    Done,
}

/// Finds the end of a `Transfer-Encoding: chunked` body in the bytes passed through it,
/// which are forwarded as they are.
#[derive(Debug, Default)]
pub(super) struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
}

impl Chunked {
    /// Takes in the body's next bytes: how many of them belong to the body (fewer than
    /// `b.len()` only once it has ended).
    pub(super) fn advance(&mut self, b: &[u8]) -> Result<usize, ()> {
        use ChunkState::*;
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            match self.state {
                Size => match (c as char).to_digit(16) {
                    Some(d) if self.digits < 16 => {
                        self.size = self.size * 16 + u64::from(d);
                        self.digits += 1;
                    }
                    None if c == b'\r' => self.state = SizeLf,
                    None if matches!(c, b';' | b' ' | b'\t') => self.state = Ext,
                    _ => return Err(()),
                },
                Ext => {
                    if c == b'\r' {
                        self.state = SizeLf;
                    }
                }
                SizeLf => {
                    if c != b'\n' || self.digits == 0 {
                        return Err(());
                    }
                    self.state = if self.size == 0 { Trailer } else { Data };
                }
                Data => {
                    let n = (b.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr if c == b'\r' => self.state = DataLf,
                DataLf if c == b'\n' => {
                    self.state = Size;
                    self.digits = 0;
                }
                DataCr | DataLf => return Err(()),
                Trailer if c == b'\r' => self.state = EndLf,
                Trailer | TrailerLine => {
                    self.state = if c == b'\n' { Trailer } else { TrailerLine };
                }
                EndLf if c == b'\n' => {
                    self.state = Done;
                    return Ok(i + 1);
                }
                EndLf => return Err(()),
                Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }

    /// Whether the body has ended.
    pub(super) fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// A stream with bytes already read from it put back in front, for hyper to read again.
struct Rewind<S> {
    pre: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.pre.len() {
            let n = (self.pre.len() - self.pos).min(buf.remaining());
            let pos = self.pos;
            buf.put_slice(&self.pre[pos..pos + n]);
            self.pos += n;
            if self.pos == self.pre.len() {
                self.pre = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_end_where_they_end() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let mut c = Chunked::default();
        assert_eq!(c.advance(body), Ok(body.len() - 4));
        assert!(c.done());
        // byte by byte, the same
        let mut c = Chunked::default();
        let mut n = 0;
        for b in body.chunks(1) {
            n += c.advance(b).unwrap();
        }
        assert_eq!(n, body.len() - 4);
        assert!(c.done());
        // no trailers; a body split before its end is not done
        let mut c = Chunked::default();
        assert_eq!(c.advance(b"A\r\n0123456789\r\n0\r\n"), Ok(18));
        assert!(!c.done());
        assert_eq!(c.advance(b"\r\n"), Ok(2));
        assert!(c.done());
        for bad in [&b"x\r\n"[..], b"\r\n", b"5\r\nhelloX", b"5\n"] {
            assert!(Chunked::default().advance(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn response_framing() {
        let p = |r: &str, head| parse_response(r.as_bytes(), head).unwrap().unwrap();
        let r = p("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false);
        assert_eq!((r.framing, r.close, r.len), (Framing::Length(5), false, 38));
        assert_eq!(
            p("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).framing,
            Framing::Empty
        );
        for s in ["204 No Content", "304 Not Modified", "100 Continue"] {
            let r = p(&format!("HTTP/1.1 {s}\r\nContent-Length: 5\r\n\r\n"), false);
            assert_eq!(r.framing, Framing::Empty, "{s}");
        }
        let r = p(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: keep-alive, close\r\n\r\n",
            false,
        );
        assert_eq!((r.framing, r.close), (Framing::Chunked, true));
        let r = p("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(r.framing, Framing::UntilClose);
        let r = p("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false);
        assert!(r.close, "HTTP/1.0");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-", false)
            .unwrap()
            .is_none());
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false
        )
        .is_err());
    }

    /// A backend that answers by path, raw: `/raw/cut` stops in the middle of its body,
    /// `/raw/silent` closes without answering, `/raw/eof` ends its body by closing,
    /// `/raw/once` answers keep-alive and closes anyway, `/raw/ws` switches to an echo.
    async fn raw_backend() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let Some(head) = super::super::tests::read_head(&mut s).await else {
                        return;
                    };
                    let mut b = [0u8; 4096];
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap()
                        .to_owned();
                    let path = line.split(' ').nth(1).unwrap_or("");
                    let answer: &[u8] = match path {
                        "/raw/cut" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
                        "/raw/eof" => b"HTTP/1.1 200 OK\r\n\r\nuntil close",
                        "/raw/once" => b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce",
                        "/raw/ws" => b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                        _ => b"",
                    };
                    let _ = s.write_all(answer).await;
                    if path == "/raw/ws" {
                        loop {
                            match s.read(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) if s.write_all(&b[..n]).await.is_err() => return,
                                Ok(_) => {}
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    /// An axum backend: `/echo` answers the request body, `/chunked` a streamed
    /// (chunked) body, `/len` ten bytes (and HEAD), `/204` and `/304` no body,
    /// `/headers` the forwarded headers.
    async fn web_backend() -> SocketAddr {
        use axum::routing::{get, post};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let header = |h: &axum::http::HeaderMap, n: &str| {
            h.get(n)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let app = axum::Router::new()
            .route("/echo", post(|body: axum::body::Bytes| async move { body }))
            .route(
                "/chunked",
                get(|| async {
                    let parts = ["abc", "def", "ghi"]
                        .map(|p| Ok::<_, std::io::Error>(axum::body::Bytes::from(p)));
                    axum::body::Body::from_stream(futures::stream::iter(parts))
                }),
            )
            .route("/len", get(|| async { "0123456789" }))
            .route("/204", get(|| async { axum::http::StatusCode::NO_CONTENT }))
            .route(
                "/304",
                get(|| async { (axum::http::StatusCode::NOT_MODIFIED, [("etag", "\"x\"")]) }),
            )
            .route(
                "/headers",
                get(move |h: axum::http::HeaderMap| async move {
                    [
                        "host",
                        "x-forwarded-for",
                        "x-forwarded-host",
                        "x-forwarded-proto",
                    ]
                    .map(|n| header(&h, n))
                    .join("|")
                }),
            );
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    }

    /// The proxy for host `p.test`: `/raw...` to [`raw_backend`], the rest to
    /// [`web_backend`]; its plain HTTP address.
    async fn proxy() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        use crate::cache::ClusterCache;
        use serde_json::json;
        let cache = ClusterCache::empty();
        for (name, at) in [("web", web_backend().await), ("raw", raw_backend().await)] {
            cache.services.write().unwrap().insert(
                ("d".into(), name.into()),
                serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"},
                    "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}}))
                .unwrap(),
            );
            cache.slices.write().unwrap().insert(
                ("d".into(), name.into()),
                serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d",
                    "labels": {"kubernetes.io/service-name": name}}, "addressType": "IPv4",
                    "ports": [{"port": at.port(), "protocol": "TCP"}],
                    "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]}))
                .unwrap(),
            );
        }
        let path = |p: &str, svc: &str| {
            json!({"path": p, "pathType": "Prefix",
                "backend": {"service": {"name": svc, "port": {"number": 80}}}})
        };
        let ing = json!({"metadata": {"name": "i", "namespace": "d"}, "spec": {"rules": [
            {"host": "p.test", "http": {"paths": [path("/", "web"), path("/raw", "raw")]}}]}});
        cache.ingresses.write().unwrap().insert(
            ("d".into(), "i".into()),
            serde_json::from_value(ing).unwrap(),
        );
        let env = super::super::IngressEnv {
            net: crate::netctx::NetCtx::new(None),
            client: None,
            node_ip: std::net::Ipv4Addr::LOCALHOST,
            tls_port: None,
            state_dir: None,
        };
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = l.local_addr().unwrap();
        (at, super::super::serve(env, cache, l, None).unwrap())
    }

    /// Reads from `s` until `want` has been seen or the stream ends: what was read.
    async fn read_until(s: &mut TcpStream, want: &str) -> String {
        let mut out = Vec::new();
        let mut b = [0u8; 4096];
        while !String::from_utf8_lossy(&out).contains(want) {
            match s.read(&mut b).await.unwrap() {
                0 => break,
                n => out.extend_from_slice(&b[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Bodies both ways (Content-Length and chunked, small and above [`MAX_BODY`]),
    /// HEAD, 204 and 304, forwarded headers, all on one keep-alive connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_head_and_empty_answers_on_one_connection() {
        use axum::body::{Body, Bytes};
        use hyper::{Method, Request, StatusCode};
        let (at, task) = proxy().await;
        let tcp = TcpStream::connect(at).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut call = async |method: Method, path: &str, body: Body| {
            send.ready().await.unwrap();
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", "p.test")
                .header("x-forwarded-for", "10.9.9.9")
                .body(body)
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            let (parts, body) = resp.into_parts();
            let body = axum::body::to_bytes(Body::new(body), 1 << 20)
                .await
                .unwrap();
            (parts, body)
        };
        let (_, b) = call(Method::GET, "/headers", Body::empty()).await;
        assert_eq!(&b[..], b"p.test|127.0.0.1|p.test|http");
        let (_, b) = call(Method::POST, "/echo", Body::from("abc")).await;
        assert_eq!(&b[..], b"abc");
        // a chunked request body (no length known)
        let parts = ["hello", " ", "world"].map(|p| Ok::<_, std::io::Error>(Bytes::from(p)));
        let (_, b) = call(
            Method::POST,
            "/echo",
            Body::from_stream(futures::stream::iter(parts)),
        )
        .await;
        assert_eq!(&b[..], b"hello world");
        // a chunked answer
        let (p, b) = call(Method::GET, "/chunked", Body::empty()).await;
        assert_eq!(p.headers["transfer-encoding"], "chunked");
        assert_eq!(&b[..], b"abcdefghi");
        let (p, b) = call(Method::HEAD, "/len", Body::empty()).await;
        assert_eq!(
            (p.status, p.headers["content-length"].to_str().unwrap()),
            (StatusCode::OK, "10")
        );
        assert!(b.is_empty());
        let (_, b) = call(Method::GET, "/len", Body::empty()).await;
        assert_eq!(&b[..], b"0123456789");
        let (p, b) = call(Method::GET, "/204", Body::empty()).await;
        assert_eq!((p.status, b.len()), (StatusCode::NO_CONTENT, 0));
        let (p, b) = call(Method::GET, "/304", Body::empty()).await;
        assert_eq!((p.status, b.len()), (StatusCode::NOT_MODIFIED, 0));
        // bodies too large for the fast path go to hyper, on the same connection
        let big = vec![b'x'; MAX_BODY * 2];
        let (_, b) = call(Method::POST, "/echo", Body::from(big.clone())).await;
        assert_eq!(b.len(), big.len());
        let parts =
            [&big[..], &big[..]].map(|p| Ok::<_, std::io::Error>(Bytes::copy_from_slice(p)));
        let (_, b) = call(
            Method::POST,
            "/echo",
            Body::from_stream(futures::stream::iter(parts)),
        )
        .await;
        assert_eq!(b.len(), big.len() * 2);
        let (_, b) = call(Method::GET, "/len", Body::empty()).await;
        assert_eq!(&b[..], b"0123456789");
        task.abort();
    }

    /// Pipelined requests are answered in order; `Connection: close` closes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_requests_in_order_and_close() {
        let (at, task) = proxy().await;
        let mut s = TcpStream::connect(at).await.unwrap();
        s.write_all(
            b"GET /len HTTP/1.1\r\nHost: p.test\r\n\r\n\
              POST /echo HTTP/1.1\r\nHost: p.test\r\nContent-Length: 3\r\n\r\nxyz\
              POST /echo HTTP/1.1\r\nHost: p.test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nuv\r\n0\r\n\r\n\
              GET /len?last HTTP/1.1\r\nHost: p.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let bodies: Vec<&str> = out
            .split("HTTP/1.1 200 OK\r\n")
            .skip(1)
            .map(|r| r.split("\r\n\r\n").nth(1).unwrap())
            .collect();
        assert_eq!(bodies, ["0123456789", "xyz", "uv", "0123456789"], "{out}");
        task.abort();
    }

    /// A backend that dies: before answering (502, the client connection stays), in
    /// the middle of a body (the client connection is closed), a body ended by closing,
    /// and a kept-alive connection that the backend closed anyway (sent again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backends_closing() {
        let (at, task) = proxy().await;
        let mut s = TcpStream::connect(at).await.unwrap();
        s.write_all(b"GET /raw/silent HTTP/1.1\r\nHost: p.test\r\n\r\n")
            .await
            .unwrap();
        let r = read_until(&mut s, "upstream: connection closed before the response\n").await;
        assert!(r.starts_with("HTTP/1.1 502"), "{r}");
        for _ in 0..3 {
            s.write_all(b"GET /raw/once HTTP/1.1\r\nHost: p.test\r\n\r\n")
                .await
                .unwrap();
            let r = read_until(&mut s, "once").await;
            assert!(
                r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\nonce"),
                "{r}"
            );
        }
        s.write_all(b"GET /raw/cut HTTP/1.1\r\nHost: p.test\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200") && out.ends_with("\r\n\r\npartial"),
            "{out}"
        );

        let mut s = TcpStream::connect(at).await.unwrap();
        s.write_all(b"GET /raw/eof HTTP/1.1\r\nHost: p.test\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.ends_with("\r\n\r\nuntil close"), "{out}");
        task.abort();
    }

    /// An upgrade after a fast-path request on the same connection: the rest of the
    /// connection goes to hyper, which passes the upgraded bytes through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upgrade_after_keep_alive_requests() {
        let (at, task) = proxy().await;
        let mut s = TcpStream::connect(at).await.unwrap();
        s.write_all(b"GET /len HTTP/1.1\r\nHost: p.test\r\n\r\n")
            .await
            .unwrap();
        let r = read_until(&mut s, "0123456789").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        s.write_all(b"GET /raw/ws HTTP/1.1\r\nHost: p.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .await
            .unwrap();
        let r = read_until(&mut s, "\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 101"), "{r}");
        s.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        task.abort();
    }
}
