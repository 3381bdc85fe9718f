//! A streaming tar reader for layer unpacking.
//!
//! The `tar` crate reads old-GNU sparse members by expanding their holes
//! into a stream of zeros and does not know the PAX sparse formats at all,
//! so a 1 KiB member could ask for a terabyte of zeros, and a real sparse
//! file came out dense (or as its literal map). This reader hands the
//! extractor every member with its sparse map instead, so holes stay holes
//! and every byte that will be allocated is known before anything is
//! written.
//!
//! Formats read: v7, ustar (prefix + name), GNU (`L` long names, `K` long
//! link names, base-256 numbers, `S` sparse members with any number of
//! extended sparse headers) and PAX (`x` local headers: `path`, `linkpath`,
//! `size`, `uid`, `gid`, `mtime`, `SCHILY.xattr.*`, and the GNU sparse
//! formats 0.0, 0.1 and 1.0; `g` global headers are read and ignored, as
//! the `tar` crate did).
//!
//! Everything a header announces is bounded before it is read: extension
//! headers (PAX, long names) to [`MAX_EXTENSION`] bytes, sparse maps to
//! [`MAX_SEGMENTS`] segments. A sparse map must be sorted, must not
//! overlap, must stay within the file's size, and its data lengths must add
//! up to the member's data.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;

const BLOCK: usize = 512;
/// The largest PAX header or GNU long name accepted.
pub(crate) const MAX_EXTENSION: u64 = 1 << 20;
/// The most segments a sparse map may have.
pub(crate) const MAX_SEGMENTS: usize = 1 << 20;

/// The sparse layout of a member: data segments `(offset, length)` of a
/// file of `real_size` bytes; everything else is a hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SparseMap {
    pub real_size: u64,
    pub segments: Vec<(u64, u64)>,
}

impl SparseMap {
    /// Check the map against the member's data bytes in the archive.
    fn validate(&self, data: u64) -> io::Result<()> {
        let mut end = 0u64;
        let mut sum = 0u64;
        for &(off, len) in &self.segments {
            if off < end {
                return Err(bad("sparse map segments overlap or are out of order"));
            }
            end = off
                .checked_add(len)
                .ok_or_else(|| bad("sparse map segment overflows"))?;
            if end > self.real_size {
                return Err(bad("sparse map segment ends beyond the file size"));
            }
            sum = sum
                .checked_add(len)
                .ok_or_else(|| bad("sparse map overflows"))?;
        }
        if sum != data {
            return Err(bad(format!(
                "sparse map lists {sum} data bytes but the member holds {data}"
            )));
        }
        Ok(())
    }

    /// The bytes the file will take on disk at most: every `block`-sized
    /// block a data segment touches, once.
    pub(crate) fn allocated(&self, block: u64) -> u64 {
        let mut total = 0u64;
        let mut last_block: Option<u64> = None;
        for &(off, len) in &self.segments {
            if len == 0 {
                continue;
            }
            let first = off / block;
            let last = (off + len - 1) / block;
            let mut n = last - first + 1;
            if last_block == Some(first) {
                n -= 1;
            }
            total = total.saturating_add(n.saturating_mul(block));
            last_block = Some(last);
        }
        total
    }
}

/// One member of the archive (extension headers already folded in).
#[derive(Debug)]
pub(crate) struct Member {
    /// The path as written (PAX `path`, GNU long name, ustar prefix/name).
    pub path: Vec<u8>,
    /// The link target of a symlink or hardlink.
    pub link: Option<Vec<u8>>,
    /// The type flag (`b'0'`, `b'5'`, ...); sparse members report `b'0'`.
    pub kind: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: (i64, i64),
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Data bytes that follow in the archive (after a PAX 1.0 map).
    pub size: u64,
    /// PAX `SCHILY.xattr.*` records, name without the prefix.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
    /// The sparse map of a sparse member.
    pub sparse: Option<SparseMap>,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads members one after the other from an uncompressed tar stream.
pub(crate) struct TarReader<R> {
    inner: R,
    /// Data bytes of the current member not read yet.
    remaining: u64,
    /// Padding after the current member's data.
    pad: u64,
    done: bool,
}

/// PAX records of one member that matter here.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, i64)>,
    xattrs: Vec<(OsString, Vec<u8>)>,
    sparse_major: Option<u64>,
    sparse_minor: Option<u64>,
    sparse_name: Option<Vec<u8>>,
    sparse_size: Option<u64>,
    sparse_map: Option<Vec<u8>>,
    /// GNU 0.0: `GNU.sparse.offset` / `GNU.sparse.numbytes`, in order.
    sparse_pairs: Vec<(u64, Option<u64>)>,
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        TarReader {
            inner,
            remaining: 0,
            pad: 0,
            done: false,
        }
    }

    /// Read the current member's data.
    pub(crate) fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 && want > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive ends inside a member's data",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        if copied != n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive ends inside a member",
            ));
        }
        Ok(())
    }

    /// Read one 512-byte block; `false` at a clean end of the stream.
    fn block(&mut self, b: &mut [u8; BLOCK]) -> io::Result<bool> {
        let mut got = 0;
        while got < BLOCK {
            match self.inner.read(&mut b[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "archive ends inside a header",
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The data of an extension header (bounded).
    fn ext_data(&mut self, size: u64, what: &str) -> io::Result<Vec<u8>> {
        if size > MAX_EXTENSION {
            return Err(bad(format!(
                "{what} of {size} bytes (at most {MAX_EXTENSION} accepted)"
            )));
        }
        let mut v = vec![0u8; size as usize];
        self.inner.read_exact(&mut v).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(e.kind(), format!("archive ends inside a {what}"))
            } else {
                e
            }
        })?;
        self.skip(padding(size))?;
        Ok(v)
    }

    /// The next member, or `None` at the end of the archive.
    pub(crate) fn next_member(&mut self) -> io::Result<Option<Member>> {
        if self.done {
            return Ok(None);
        }
        let rest = self.remaining + self.pad;
        self.skip(rest)?;
        self.remaining = 0;
        self.pad = 0;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Pax> = None;
        let mut h = [0u8; BLOCK];
        loop {
            if !self.block(&mut h)? {
                // No end-of-archive blocks: accepted, as GNU tar does.
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(bad("extension headers without a member"));
                }
                self.done = true;
                return Ok(None);
            }
            if h.iter().all(|b| *b == 0) {
                self.done = true;
                return Ok(None);
            }
            check_sum(&h)?;
            let kind = h[156];
            let size = number(&h[124..136]).map_err(|e| ctx(e, "size"))?;
            match kind {
                b'x' | b'X' => {
                    if pax.is_some() {
                        return Err(bad("two PAX headers for one member"));
                    }
                    let data = self.ext_data(size, "PAX header")?;
                    pax = Some(parse_pax(&data)?);
                }
                b'g' => {
                    // Global records: read, checked for size, not applied.
                    self.ext_data(size, "PAX global header")?;
                }
                b'L' => {
                    if long_name.is_some() {
                        return Err(bad("two long names for one member"));
                    }
                    long_name = Some(trim_nul(self.ext_data(size, "GNU long name")?));
                }
                b'K' => {
                    if long_link.is_some() {
                        return Err(bad("two long link names for one member"));
                    }
                    long_link = Some(trim_nul(self.ext_data(size, "GNU long link name")?));
                }
                _ => return self.member(&h, long_name, long_link, pax.unwrap_or_default()),
            }
        }
    }

    fn member(
        &mut self,
        h: &[u8; BLOCK],
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: Pax,
    ) -> io::Result<Option<Member>> {
        let ustar = &h[257..263] == b"ustar\0";
        let mut path = cstr(&h[0..100]).to_vec();
        if ustar && h[345] != 0 {
            let mut p = cstr(&h[345..500]).to_vec();
            p.push(b'/');
            p.extend_from_slice(&path);
            path = p;
        }
        if let Some(n) = long_name {
            path = n;
        }
        if let Some(p) = pax.path.clone() {
            path = p;
        }
        let mut kind = h[156];
        let link = if matches!(kind, b'1' | b'2') {
            Some(
                pax.linkpath
                    .clone()
                    .or(long_link)
                    .unwrap_or_else(|| cstr(&h[157..257]).to_vec()),
            )
        } else {
            None
        };
        let mut size = match pax.size {
            Some(s) => s,
            None => number(&h[124..136]).map_err(|e| ctx(e, "size"))?,
        };
        let mode = number(&h[100..108]).map_err(|e| ctx(e, "mode"))?;
        let uid = match pax.uid {
            Some(u) => u,
            None => number(&h[108..116]).map_err(|e| ctx(e, "uid"))?,
        };
        let gid = match pax.gid {
            Some(g) => g,
            None => number(&h[116..124]).map_err(|e| ctx(e, "gid"))?,
        };
        let mtime = match pax.mtime {
            Some(t) => t,
            None => (number(&h[136..148]).unwrap_or(0) as i64, 0),
        };
        let (dev_major, dev_minor) = if matches!(kind, b'3' | b'4') {
            (
                number(&h[329..337]).unwrap_or(0) as u32,
                number(&h[337..345]).unwrap_or(0) as u32,
            )
        } else {
            (0, 0)
        };
        self.remaining = size;
        self.pad = padding(size);
        let mut sparse = None;
        if kind == b'S' {
            // Old GNU: four map entries in the header, more in extended
            // sparse headers that follow it; data segments back to back.
            let mut map = SparseMap {
                real_size: number(&h[483..495]).map_err(|e| ctx(e, "sparse real size"))?,
                segments: Vec::new(),
            };
            let mut ended = push_old_gnu(&mut map, &h[386..482])?;
            let mut extended = h[482] != 0;
            let mut ext = [0u8; BLOCK];
            while extended {
                if !self.block(&mut ext)? {
                    return Err(bad("archive ends inside a sparse header"));
                }
                if !ended {
                    ended = push_old_gnu(&mut map, &ext[..504])?;
                }
                extended = ext[504] != 0;
            }
            map.validate(size)?;
            sparse = Some(map);
            kind = b'0';
        } else if matches!(kind, b'0' | b'\0' | b'7') {
            sparse = self.pax_sparse(&pax, &mut size)?;
            if let Some(n) = &pax.sparse_name {
                path = n.clone();
            }
            if kind != b'0' {
                kind = b'0';
            }
        }
        Ok(Some(Member {
            path,
            link,
            kind,
            mode: (mode & 0o7777) as u32,
            uid,
            gid,
            mtime,
            dev_major,
            dev_minor,
            size,
            xattrs: pax.xattrs,
            sparse,
        }))
    }

    /// The PAX sparse formats (GNU 0.0, 0.1, 1.0); `size` becomes the data
    /// bytes after a 1.0 map.
    fn pax_sparse(&mut self, pax: &Pax, size: &mut u64) -> io::Result<Option<SparseMap>> {
        let one = pax.sparse_major == Some(1);
        if !one && pax.sparse_map.is_none() && pax.sparse_pairs.is_empty() {
            return Ok(None);
        }
        if pax.sparse_major.is_some_and(|m| m > 1) || (one && pax.sparse_minor != Some(0)) {
            return Err(bad(format!(
                "unsupported GNU sparse format {}.{}",
                pax.sparse_major.unwrap_or(0),
                pax.sparse_minor.unwrap_or(0)
            )));
        }
        let real_size = pax
            .sparse_size
            .ok_or_else(|| bad("GNU sparse member without a real size"))?;
        let mut segments = Vec::new();
        if one {
            // 1.0: the map opens the member's data, as decimal lines,
            // padded to a block.
            let (segs, used) = self.map_1_0()?;
            segments = segs;
            *size = size
                .checked_sub(used)
                .ok_or_else(|| bad("GNU sparse 1.0 map larger than the member"))?;
            self.remaining = *size;
        } else if let Some(text) = &pax.sparse_map {
            // 0.1: "offset,size,offset,size,...".
            let nums = text
                .split(|b| *b == b',')
                .filter(|s| !s.is_empty())
                .map(dec)
                .collect::<io::Result<Vec<u64>>>()?;
            if nums.len() % 2 != 0 {
                return Err(bad("GNU sparse 0.1 map with an odd number of values"));
            }
            if nums.len() / 2 > MAX_SEGMENTS {
                return Err(bad("GNU sparse map with too many segments"));
            }
            segments = nums.chunks(2).map(|c| (c[0], c[1])).collect();
        } else {
            for (off, len) in &pax.sparse_pairs {
                let len =
                    len.ok_or_else(|| bad("GNU sparse 0.0 offset without a numbytes record"))?;
                segments.push((*off, len));
            }
        }
        let map = SparseMap {
            real_size,
            segments,
        };
        map.validate(*size)?;
        Ok(Some(map))
    }

    /// Read a GNU sparse 1.0 map from the data; returns it and the bytes
    /// it took (a multiple of the block size).
    fn map_1_0(&mut self) -> io::Result<(Vec<(u64, u64)>, u64)> {
        let mut blocks = 0u64;
        let mut buf: Vec<u8> = Vec::new();
        let mut pos = 0usize;
        let mut next_number = |this: &mut Self, buf: &mut Vec<u8>, pos: &mut usize| loop {
            if let Some(nl) = buf[*pos..].iter().position(|b| *b == b'\n') {
                let v = dec(&buf[*pos..*pos + nl])?;
                *pos += nl + 1;
                return Ok::<u64, io::Error>(v);
            }
            if this.remaining < BLOCK as u64 {
                return Err(bad("GNU sparse 1.0 map runs past the member's data"));
            }
            if buf.len() - *pos > 64 {
                return Err(bad("GNU sparse 1.0 map with an overlong number"));
            }
            let mut b = [0u8; BLOCK];
            if !this.block(&mut b)? {
                return Err(bad("archive ends inside a GNU sparse 1.0 map"));
            }
            this.remaining -= BLOCK as u64;
            blocks += 1;
            buf.drain(..*pos);
            *pos = 0;
            buf.extend_from_slice(&b);
        };
        let count = next_number(self, &mut buf, &mut pos)?;
        if count > MAX_SEGMENTS as u64 {
            return Err(bad(format!(
                "GNU sparse map with {count} segments (at most {MAX_SEGMENTS} accepted)"
            )));
        }
        let mut segs = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let off = next_number(self, &mut buf, &mut pos)?;
            let len = next_number(self, &mut buf, &mut pos)?;
            segs.push((off, len));
        }
        Ok((segs, blocks * BLOCK as u64))
    }
}

/// Old-GNU map entries (24 bytes each) from `area`; `true` once an empty
/// entry ended the list.
fn push_old_gnu(map: &mut SparseMap, area: &[u8]) -> io::Result<bool> {
    for e in area.chunks_exact(24) {
        if e[0] == 0 {
            return Ok(true);
        }
        if map.segments.len() >= MAX_SEGMENTS {
            return Err(bad("GNU sparse map with too many segments"));
        }
        let off = number(&e[..12]).map_err(|e| ctx(e, "sparse offset"))?;
        let len = number(&e[12..24]).map_err(|e| ctx(e, "sparse length"))?;
        map.segments.push((off, len));
    }
    Ok(false)
}

fn ctx(e: io::Error, field: &str) -> io::Error {
    bad(format!("header field {field}: {e}"))
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|c| *c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

fn check_sum(h: &[u8; BLOCK]) -> io::Result<()> {
    let want = number(&h[148..156]).map_err(|e| ctx(e, "checksum"))?;
    let unsigned: u64 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    let signed: i64 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(*b as i8)
            }
        })
        .sum();
    if want == unsigned || want as i64 == signed {
        Ok(())
    } else {
        Err(bad("archive header checksum mismatch"))
    }
}

/// A numeric header field: octal (spaces and NULs around it) or GNU
/// base-256 (high bit of the first byte set).
fn number(f: &[u8]) -> io::Result<u64> {
    if f.first().is_some_and(|b| b & 0x80 != 0) {
        if f[0] & 0x40 != 0 {
            return Err(bad("negative number"));
        }
        let mut v: u64 = u64::from(f[0] & 0x3f);
        for b in &f[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(*b)))
                .ok_or_else(|| bad("number out of range"))?;
        }
        return Ok(v);
    }
    let s: &[u8] = {
        let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
        let t = &f[..end];
        let start = t.iter().position(|b| *b != b' ').unwrap_or(t.len());
        let t = &t[start..];
        let stop = t.iter().rposition(|b| *b != b' ').map_or(0, |p| p + 1);
        &t[..stop]
    };
    if s.is_empty() {
        return Ok(0);
    }
    let mut v: u64 = 0;
    for b in s {
        if !(b'0'..=b'7').contains(b) {
            return Err(bad("invalid octal number"));
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| bad("number out of range"))?;
    }
    Ok(v)
}

fn dec(s: &[u8]) -> io::Result<u64> {
    let s = std::str::from_utf8(s).map_err(|_| bad("invalid decimal number"))?;
    s.trim()
        .parse()
        .map_err(|_| bad(format!("invalid decimal number {s:?}")))
}

fn parse_time(v: &[u8]) -> Option<(i64, i64)> {
    let v = std::str::from_utf8(v).ok()?;
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let sec: i64 = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: i64 = digits.parse().ok()?;
    Some((sec, if sec < 0 { 0 } else { nsec }))
}

/// PAX records: `"<len> <key>=<value>\n"`, `len` counting the whole record.
fn parse_pax(data: &[u8]) -> io::Result<Pax> {
    let mut pax = Pax::default();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|b| *b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| bad("malformed PAX record"))?;
        let len = usize::try_from(dec(&rest[..sp])?).map_err(|_| bad("malformed PAX record"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("malformed PAX record"));
        }
        let rec = &rest[sp + 1..len - 1];
        rest = &rest[len..];
        let eq = rec
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| bad("PAX record without '='"))?;
        let (key, value) = (&rec[..eq], &rec[eq + 1..]);
        let num = || dec(value);
        match key {
            b"path" => pax.path = Some(value.to_vec()),
            b"linkpath" => pax.linkpath = Some(value.to_vec()),
            b"size" => pax.size = Some(num()?),
            b"uid" => pax.uid = Some(num()?),
            b"gid" => pax.gid = Some(num()?),
            b"mtime" => pax.mtime = parse_time(value),
            b"GNU.sparse.major" => pax.sparse_major = Some(num()?),
            b"GNU.sparse.minor" => pax.sparse_minor = Some(num()?),
            b"GNU.sparse.name" => pax.sparse_name = Some(value.to_vec()),
            b"GNU.sparse.size" | b"GNU.sparse.realsize" => pax.sparse_size = Some(num()?),
            b"GNU.sparse.map" => pax.sparse_map = Some(value.to_vec()),
            b"GNU.sparse.offset" => {
                if pax.sparse_pairs.len() >= MAX_SEGMENTS {
                    return Err(bad("GNU sparse map with too many segments"));
                }
                pax.sparse_pairs.push((num()?, None));
            }
            b"GNU.sparse.numbytes" => match pax.sparse_pairs.last_mut() {
                Some((_, n @ None)) => *n = Some(num()?),
                _ => return Err(bad("GNU sparse 0.0 numbytes without an offset")),
            },
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    pax.xattrs
                        .push((OsString::from_vec(name.to_vec()), value.to_vec()));
                }
            }
        }
    }
    Ok(pax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(number(b"0000644\0").unwrap(), 0o644);
        assert_eq!(number(b"  644 \0").unwrap(), 0o644);
        assert_eq!(number(b"\0\0\0").unwrap(), 0);
        assert_eq!(
            number(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap(),
            1 << 32
        );
        assert!(number(b"0009").is_err());
    }

    #[test]
    fn allocation_of_a_map() {
        let m = SparseMap {
            real_size: 1 << 40,
            segments: vec![(0, 1), (10, 1), (4096, 4097), (1 << 39, 0)],
        };
        // Blocks 0, 1 and 2: the first two segments share block 0.
        assert_eq!(m.allocated(4096), 3 * 4096);
    }

    #[test]
    fn maps_are_validated() {
        let m = |segments: Vec<(u64, u64)>| SparseMap {
            real_size: 100,
            segments,
        };
        assert!(m(vec![(0, 10), (20, 10)]).validate(20).is_ok());
        assert!(m(vec![(20, 10), (0, 10)]).validate(20).is_err());
        assert!(m(vec![(0, 10), (5, 10)]).validate(20).is_err());
        assert!(m(vec![(95, 10)]).validate(10).is_err());
        assert!(m(vec![(0, 10)]).validate(11).is_err());
        assert!(m(vec![(u64::MAX, 2)]).validate(2).is_err());
    }

    #[test]
    fn pax_records() {
        // Two-digit lengths: digits, space, '=', newline.
        let rec = |k: &str, v: &str| format!("{} {k}={v}\n", k.len() + v.len() + 5);
        let text =
            rec("path", "a/b") + &rec("GNU.sparse.offset", "0") + &rec("GNU.sparse.numbytes", "5");
        let p = parse_pax(text.as_bytes()).unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"a/b"[..]));
        assert_eq!(p.sparse_pairs, vec![(0, Some(5))]);
        assert!(parse_pax(b"99 path=a\n").is_err());
    }
}
