//! Layer id validation and short-id generation.

use crate::error::{Error, Result};

/// The longest layer id accepted, in bytes.
///
/// Bounded so that the overlay mount options of a [`MAX_DEPTH`](crate::MAX_DEPTH)-deep
/// stack always fit in one page.
pub const MAX_ID_LEN: usize = 128;

/// Length of the generated short ids that name the `l/` symlinks (as in Docker's overlay2).
pub(crate) const SHORT_ID_LEN: usize = 26;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Checks that `id` can name a layer directory.
///
/// Allowed: 1 to [`MAX_ID_LEN`] bytes of ASCII letters, digits, `_`, `-`, `.`, `:`, `+`,
/// `@`, not starting with `.` (reserved for the store's own files) and not `l`
/// (the short-link directory). `/`, `..`, NUL, `,` and whitespace are rejected.
pub fn validate_id(id: &str) -> Result<()> {
    let reject = |reason| {
        Err(Error::InvalidId {
            id: id.to_owned(),
            reason,
        })
    };
    if id.is_empty() {
        return reject("empty");
    }
    if id.len() > MAX_ID_LEN {
        return reject("longer than 128 bytes");
    }
    if id.starts_with('.') {
        return reject("starts with '.'");
    }
    if id == "l" {
        return reject("'l' is reserved for the short-link directory");
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '+' | '@')))
    {
        return match c {
            '/' => reject("contains '/'"),
            ',' => reject("contains ',' (the overlay option separator)"),
            _ => reject("contains a character other than ASCII letters, digits and _-.:+@"),
        };
    }
    Ok(())
}

/// Checks that a name read back from `link` or `lower` looks like a short id we made.
pub(crate) fn is_short_id(s: &str) -> bool {
    s.len() == SHORT_ID_LEN && s.bytes().all(|b| BASE32.contains(&b))
}

/// Generates a random short id: 26 base32 characters (130 bits).
pub(crate) fn new_short_id() -> std::io::Result<String> {
    let mut buf = [0u8; SHORT_ID_LEN];
    let mut filled = 0;
    while filled < buf.len() {
        filled +=
            rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(buf
        .iter()
        .map(|b| BASE32[usize::from(b % 32)] as char)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_ids() {
        for id in [
            "abc",
            "sha256:0123abcd",
            "layer-1_x.y",
            &"a".repeat(MAX_ID_LEN),
        ] {
            validate_id(id).unwrap();
        }
    }

    #[test]
    fn rejects_bad_ids() {
        for id in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../x",
            "l",
            "a,b",
            "a b",
            "a\0b",
            "é",
            &"a".repeat(MAX_ID_LEN + 1),
        ] {
            assert!(
                matches!(validate_id(id), Err(Error::InvalidId { .. })),
                "{id:?} accepted"
            );
        }
    }

    #[test]
    fn short_ids_are_random_base32() {
        let a = new_short_id().unwrap();
        let b = new_short_id().unwrap();
        assert!(is_short_id(&a) && is_short_id(&b));
        assert_ne!(a, b);
        assert!(!is_short_id("abc"));
        assert!(!is_short_id(&"a".repeat(SHORT_ID_LEN)));
    }
}
