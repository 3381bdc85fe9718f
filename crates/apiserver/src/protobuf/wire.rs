//! The protobuf wire format: varints, tags and length-delimited fields.

use super::Error;

/// Wire type of a varint field.
pub(super) const VARINT: u8 = 0;
/// Wire type of a fixed 64-bit field.
pub(super) const FIXED64: u8 = 1;
/// Wire type of a length-delimited field.
pub(super) const LEN: u8 = 2;
/// Wire type of a fixed 32-bit field.
pub(super) const FIXED32: u8 = 5;

/// A field's payload as read from the wire.
#[derive(Clone, Copy, Debug)]
pub(super) enum Payload<'a> {
    Varint(u64),
    Fixed64(u64),
    /// A fixed 32-bit value (no Kubernetes field has one; skipped).
    Fixed32,
    Bytes(&'a [u8]),
}

/// Reads fields from an encoded message.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(super) fn varint(&mut self) -> Result<u64, Error> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or(Error::Malformed("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Error::Malformed("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.buf.len() {
            return Err(Error::Malformed("field runs past the end of its message"));
        }
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(b)
    }

    /// The next field: its number and payload, or `None` at the end.
    pub(super) fn field(&mut self) -> Result<Option<(u32, Payload<'a>)>, Error> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let num = u32::try_from(tag >> 3).map_err(|_| Error::Malformed("field number"))?;
        let p = match (tag & 7) as u8 {
            VARINT => Payload::Varint(self.varint()?),
            FIXED64 => {
                let b = self.take(8)?;
                Payload::Fixed64(u64::from_le_bytes(b.try_into().unwrap_or_default()))
            }
            LEN => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| Error::Malformed("field length"))?;
                Payload::Bytes(self.take(len)?)
            }
            FIXED32 => {
                self.take(4)?;
                Payload::Fixed32
            }
            _ => return Err(Error::Malformed("unsupported wire type")),
        };
        Ok(Some((num, p)))
    }
}

/// Appends `v` as a varint.
pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a field tag.
pub(super) fn put_tag(out: &mut Vec<u8>, num: u32, wire_type: u8) {
    put_varint(out, (u64::from(num) << 3) | u64::from(wire_type));
}

/// Appends a length-delimited field.
pub(super) fn put_bytes(out: &mut Vec<u8>, num: u32, b: &[u8]) {
    put_tag(out, num, LEN);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends a length-delimited field whose payload `body` writes in place: one byte is
/// reserved for the length, and the payload moves only when its length needs more.
pub(super) fn put_nested<E>(
    out: &mut Vec<u8>,
    num: u32,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    put_tag(out, num, LEN);
    let at = out.len();
    out.push(0);
    body(out)?;
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        let mut head = Vec::with_capacity(5);
        put_varint(&mut head, len as u64);
        out.splice(at..=at, head);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_nested_lengths_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(Reader::new(&b).varint().unwrap(), v);
        }
        for n in [0usize, 5, 127, 128, 20_000] {
            let mut out = Vec::new();
            put_nested::<()>(&mut out, 7, |o| {
                o.extend(std::iter::repeat_n(9u8, n));
                Ok(())
            })
            .unwrap();
            let mut r = Reader::new(&out);
            match r.field().unwrap() {
                Some((7, Payload::Bytes(b))) => assert_eq!(b.len(), n),
                other => panic!("unexpected {other:?}"),
            }
            assert!(r.field().unwrap().is_none());
        }
        assert!(Reader::new(&[0x0a, 0x05, 1]).field().is_err());
    }
}
