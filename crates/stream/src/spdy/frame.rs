//! SPDY/3.1 framing: the frames Kubernetes clients exchange, and the zlib-compressed
//! header blocks (one compression context per direction for the whole connection, primed
//! with the SPDY/3 dictionary).

use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The protocol version in every control frame.
pub(crate) const VERSION: u16 = 3;
/// The flag that ends a stream's direction (data, SYN_STREAM, SYN_REPLY, HEADERS).
pub(crate) const FLAG_FIN: u8 = 0x01;
/// The largest frame payload (24 bits).
const MAX_LENGTH: usize = 0x00ff_ffff;
/// The most a decompressed header block may hold.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Header name/value pairs; names lower-case, several values of a name joined by NUL.
pub(crate) type Headers = Vec<(String, String)>;

/// A SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A peer opens a stream.
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    /// The answer to a SYN_STREAM.
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    /// A stream ends abnormally.
    RstStream { stream_id: u32, status: u32 },
    /// Connection settings (the initial stream window is what this side reads).
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    /// A liveness probe, echoed by the other side.
    Ping(u32),
    /// The connection ends; no stream above `last_good` was processed.
    GoAway { last_good: u32, status: u32 },
    /// More headers for a stream.
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    /// Flow control credit for a stream (`stream_id` 0: the session).
    WindowUpdate { stream_id: u32, delta: u32 },
    /// Stream data.
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame type this implementation does not know (ignored, as the spec says).
    Unknown { kind: u16 },
}

/// Why bytes are not a valid SPDY/3.1 frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A control frame of a version other than 3.
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    /// A frame shorter than its type requires.
    #[error("SPDY frame of type {kind} is too short ({len} bytes)")]
    Short {
        /// The control frame type.
        kind: u16,
        /// Its length.
        len: usize,
    },
    /// A header block that does not decompress or parse.
    #[error("invalid SPDY header block: {0}")]
    HeaderBlock(String),
    /// A frame larger than 24 bits of length can say.
    #[error("SPDY frame too large ({0} bytes)")]
    TooLarge(usize),
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1):
/// length-prefixed common header names and values, then common value fragments.
pub(crate) fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
            "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
            "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
            "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8",
            "charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// Encodes and decodes frames of one connection: it holds the two zlib contexts that
/// header blocks share across the connection's life.
pub(crate) struct Codec {
    deflate: Compress,
    inflate: Decompress,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    /// A codec for a new connection.
    pub(crate) fn new() -> Codec {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(dictionary())
            .expect("a fresh deflate stream takes a dictionary");
        Codec {
            deflate,
            inflate: Decompress::new(true),
        }
    }

    /// Appends `frame`'s bytes to `out`.
    pub(crate) fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_LENGTH {
                    return Err(FrameError::TooLarge(data.len()));
                }
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.push(*flags);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                Ok(())
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let mut body = Vec::new();
                body.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                body.extend_from_slice(&(associated_to & 0x7fff_ffff).to_be_bytes());
                body.push((priority & 0x7) << 5);
                body.push(0);
                self.header_block(headers, &mut body)?;
                control(out, SYN_STREAM, *flags, &body)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                self.header_block(headers, &mut body)?;
                control(out, SYN_REPLY, *flags, &body)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                self.header_block(headers, &mut body)?;
                control(out, HEADERS, *flags, &body)
            }
            Frame::RstStream { stream_id, status } => {
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(out, RST_STREAM, 0, &body)
            }
            Frame::Settings { flags, entries } => {
                let mut body = (entries.len() as u32).to_be_bytes().to_vec();
                for (f, id, value) in entries {
                    body.extend_from_slice(
                        &((u32::from(*f) << 24) | (id & 0x00ff_ffff)).to_be_bytes(),
                    );
                    body.extend_from_slice(&value.to_be_bytes());
                }
                control(out, SETTINGS, *flags, &body)
            }
            Frame::Ping(id) => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                let mut body = (last_good & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(out, GOAWAY, 0, &body)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                control(out, WINDOW_UPDATE, 0, &body)
            }
            Frame::Unknown { kind } => control(out, *kind, 0, &[]),
        }
    }

    /// Decodes the first frame of `buf`: `Ok(None)` when `buf` does not hold a whole frame
    /// yet, else the frame and how many bytes it took.
    pub(crate) fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let flags = buf[4];
        let body = &buf[8..8 + len];
        let be32 =
            |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        if buf[0] & 0x80 == 0 {
            let frame = Frame::Data {
                stream_id: be32(buf, 0) & 0x7fff_ffff,
                flags,
                data: body.to_vec(),
            };
            return Ok(Some((frame, 8 + len)));
        }
        let version = u16::from_be_bytes([buf[0] & 0x7f, buf[1]]);
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = u16::from_be_bytes([buf[2], buf[3]]);
        let need = match kind {
            SYN_STREAM => 10,
            SYN_REPLY | HEADERS | PING => 4,
            RST_STREAM | GOAWAY | WINDOW_UPDATE | SETTINGS => {
                if kind == SETTINGS {
                    4
                } else {
                    8
                }
            }
            _ => 0,
        };
        if len < need {
            return Err(FrameError::Short { kind, len });
        }
        let frame = match kind {
            SYN_STREAM => Frame::SynStream {
                stream_id: be32(body, 0) & 0x7fff_ffff,
                associated_to: be32(body, 4) & 0x7fff_ffff,
                priority: body[8] >> 5,
                flags,
                headers: self.parse_headers(&body[10..])?,
            },
            SYN_REPLY => Frame::SynReply {
                stream_id: be32(body, 0) & 0x7fff_ffff,
                flags,
                headers: self.parse_headers(&body[4..])?,
            },
            HEADERS => Frame::Headers {
                stream_id: be32(body, 0) & 0x7fff_ffff,
                flags,
                headers: self.parse_headers(&body[4..])?,
            },
            RST_STREAM => Frame::RstStream {
                stream_id: be32(body, 0) & 0x7fff_ffff,
                status: be32(body, 4),
            },
            SETTINGS => {
                let n = be32(body, 0) as usize;
                if len < 4 + n.saturating_mul(8) {
                    return Err(FrameError::Short { kind, len });
                }
                let entries = (0..n)
                    .map(|i| {
                        let at = 4 + i * 8;
                        let fid = be32(body, at);
                        ((fid >> 24) as u8, fid & 0x00ff_ffff, be32(body, at + 4))
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => Frame::Ping(be32(body, 0)),
            GOAWAY => Frame::GoAway {
                last_good: be32(body, 0) & 0x7fff_ffff,
                status: be32(body, 4),
            },
            WINDOW_UPDATE => Frame::WindowUpdate {
                stream_id: be32(body, 0) & 0x7fff_ffff,
                delta: be32(body, 4) & 0x7fff_ffff,
            },
            other => Frame::Unknown { kind: other },
        };
        Ok(Some((frame, 8 + len)))
    }

    /// Compresses a header block onto `out` (a sync flush ends each block).
    fn header_block(&mut self, headers: &Headers, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            let k = k.to_ascii_lowercase();
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut input = &raw[..];
        loop {
            out.reserve(input.len() + 64);
            let before_in = self.deflate.total_in();
            self.deflate
                .compress_vec(input, out, FlushCompress::Sync)
                .map_err(|e| FrameError::HeaderBlock(e.to_string()))?;
            let used = (self.deflate.total_in() - before_in) as usize;
            input = &input[used..];
            // done when all input is taken and the flush had room to finish
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }

    /// Decompresses and parses a header block.
    fn parse_headers(&mut self, block: &[u8]) -> Result<Headers, FrameError> {
        let bad = |m: &str| FrameError::HeaderBlock(m.to_owned());
        let mut raw = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if raw.len() == raw.capacity() {
                if raw.len() >= MAX_HEADER_BLOCK {
                    return Err(bad("header block too large"));
                }
                raw.reserve(raw.len().max(256));
            }
            let before_in = self.inflate.total_in();
            let before_out = raw.len();
            match self
                .inflate
                .decompress_vec(input, &mut raw, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| FrameError::HeaderBlock(e.to_string()))?;
                }
                Err(e) => return Err(FrameError::HeaderBlock(e.to_string())),
            }
            input = &input[(self.inflate.total_in() - before_in) as usize..];
            let progressed = raw.len() > before_out;
            if input.is_empty() && raw.len() < raw.capacity() {
                break;
            }
            if !progressed && input.is_empty() {
                break;
            }
        }
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], FrameError> {
            let s = raw
                .get(at..at + n)
                .ok_or_else(|| bad("truncated header block"))?;
            at += n;
            Ok(s)
        };
        let n32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let count = n32(take(4)?);
        let mut headers = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let kl = n32(take(4)?);
            let k = String::from_utf8_lossy(take(kl)?).into_owned();
            let vl = n32(take(4)?);
            let v = String::from_utf8_lossy(take(vl)?).into_owned();
            headers.push((k, v));
        }
        Ok(headers)
    }
}

/// Appends a control frame with `body`.
fn control(out: &mut Vec<u8>, kind: u16, flags: u8, body: &[u8]) -> Result<(), FrameError> {
    if body.len() > MAX_LENGTH {
        return Err(FrameError::TooLarge(body.len()));
    }
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(body);
    Ok(())
}

/// The first value of header `name` (names compare case-insensitively).
pub(crate) fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split('\0').next().unwrap_or(v.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // the dictionary id a zlib stream primed with it announces
        let (mut a, mut b) = (1u32, 0u32);
        for &x in d {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn frames_round_trip_through_one_connections_contexts() {
        let mut tx = Codec::new();
        let mut rx = Codec::new();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: vec![
                    ("streamtype".into(), "error".into()),
                    ("port".into(), "8080".into()),
                    ("requestid".into(), "0".into()),
                ],
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 0,
                flags: FLAG_FIN,
                headers: vec![
                    ("streamtype".into(), "data".into()),
                    ("port".into(), "8080".into()),
                    ("requestid".into(), "0".into()),
                ],
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                headers: vec![],
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: b"hello".to_vec(),
            },
            Frame::RstStream {
                stream_id: 5,
                status: 5,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, 7, 65536)],
            },
            Frame::Ping(7),
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 4096,
            },
            Frame::Headers {
                stream_id: 3,
                flags: 0,
                headers: vec![("a".into(), "b\0c".into())],
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            tx.encode(f, &mut wire).unwrap();
        }
        // byte by byte: a partial frame is not a frame
        let mut got = Vec::new();
        let mut buf = Vec::new();
        for b in wire {
            buf.push(b);
            if let Some((f, n)) = rx.decode(&buf).unwrap() {
                buf.drain(..n);
                got.push(f);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(got, frames);
    }

    #[test]
    fn a_go_client_syn_stream_decodes() {
        // The first frames of `kubectl exec` over SPDY as Go's spdystream writes them
        // (zlib at best compression, dictionary primed): built here with an independent
        // zlib writer to check the wire form, not our own encoder.
        let mut raw = Vec::new();
        let hs: &[(&str, &str)] = &[("streamtype", "error")];
        raw.extend_from_slice(&(hs.len() as u32).to_be_bytes());
        for (k, v) in hs {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(dictionary()).unwrap();
        let mut block = Vec::with_capacity(512);
        z.compress_vec(&raw, &mut block, FlushCompress::Sync)
            .unwrap();
        // zlib header announces a preset dictionary (FDICT) with SPDY/3's id
        assert_eq!(block[1] & 0x20, 0x20);
        assert_eq!(&block[2..6], &0xe3c6_a7c2u32.to_be_bytes());
        let mut frame = vec![0x80, 0x03, 0x00, 0x01, 0x00];
        let len = 10 + block.len();
        frame.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        frame.extend_from_slice(&block);
        let (f, n) = Codec::new().decode(&frame).unwrap().unwrap();
        assert_eq!(n, frame.len());
        assert_eq!(
            f,
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "error".into())],
            }
        );
    }

    #[test]
    fn a_wrong_version_is_refused() {
        let frame = [0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(
            Codec::new().decode(&frame),
            Err(FrameError::Version(2))
        ));
    }
}
