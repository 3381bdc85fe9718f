//! String interning and a small fast hasher for interned ids.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// An interned string: an index into the snapshot's [`Interner`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(pub(crate) u32);

/// A multiplicative hasher for small integer keys (interned ids, node ids).
///
/// Keys come from our own interner, never from an attacker choosing strings, so
/// a DoS-resistant hasher buys nothing on the hot path.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(SEED);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

/// A `HashMap` keyed by small integers with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Interns label keys, values, namespaces and image names so that the
/// scheduler compares 4-byte ids instead of strings.
#[derive(Default, Debug, Clone)]
pub struct Interner {
    map: HashMap<Box<str>, Sym>,
    strings: Vec<Box<str>>,
}

impl Interner {
    /// Returns the id of `s`, adding it if new.
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(&sym) = self.map.get(s) {
            return sym;
        }
        let sym = Sym(u32::try_from(self.strings.len()).expect("fewer than 2^32 strings"));
        self.strings.push(s.into());
        self.map.insert(s.into(), sym);
        sym
    }

    /// Returns the id of `s` if it was interned before.
    pub fn get(&self, s: &str) -> Option<Sym> {
        self.map.get(s).copied()
    }

    /// Returns the string behind `sym`.
    pub fn resolve(&self, sym: Sym) -> &str {
        &self.strings[sym.0 as usize]
    }

    /// Number of distinct strings held.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// True when nothing has been interned.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.strings.iter().map(|s| 2 * s.len() + 32).sum::<usize>()
            + self.map.capacity() * (std::mem::size_of::<(Box<str>, Sym)>() + 1)
            + self.strings.capacity() * std::mem::size_of::<Box<str>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_reversible() {
        let mut i = Interner::default();
        let a = i.intern("zone");
        let b = i.intern("region");
        assert_ne!(a, b);
        assert_eq!(i.intern("zone"), a);
        assert_eq!(i.resolve(b), "region");
        assert_eq!(i.get("missing"), None);
        assert_eq!(i.len(), 2);
    }
}
