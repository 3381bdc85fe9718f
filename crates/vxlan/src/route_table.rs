//! Longest-prefix-match table: pod IP → node, in a 16-8-8 multibit trie.
//!
//! The first 16 bits of an address index a 65,536-entry array; entries either
//! hold a leaf (value and prefix length) or point to a 256-entry chunk for the
//! next 8 bits, and so on. Prefixes are expanded into every slot they cover
//! ("leaf pushing"), so a lookup is one to three dependent array reads, with no
//! branches on prefix lengths. Updates rewrite only the slots the prefix covers.
//!
//! Prefixes are keyed by their network address: `10.244.7.9/24` and
//! `10.244.7.0/24` name the same entry (host bits are cleared on the way in).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::Ipv4Net;

const CHUNK: u32 = 1 << 31;
const LEN_SHIFT: u32 = 24;
const VALUE_MASK: u32 = (1 << LEN_SHIFT) - 1;
const MAX_VALUES: usize = VALUE_MASK as usize - 1;

#[inline]
fn leaf(value_idx: u32, len: u8) -> u32 {
    (u32::from(len) << LEN_SHIFT) | (value_idx + 1)
}

#[inline]
fn leaf_len(e: u32) -> u8 {
    ((e >> LEN_SHIFT) & 0x3f) as u8
}

/// A longest-prefix-match IPv4 route table mapping prefixes to values.
///
/// Holds up to 16 million distinct prefixes; lookups cost one to three array reads.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    root: Box<[u32]>,
    chunks: Vec<u32>,
    values: Vec<Option<(Ipv4Net, T)>>,
    free_values: Vec<u32>,
    prefixes: HashMap<Ipv4Net, u32>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> RouteTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            root: vec![0u32; 1 << 16].into_boxed_slice(),
            chunks: Vec::new(),
            values: Vec::new(),
            free_values: Vec::new(),
            prefixes: HashMap::new(),
        }
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The value of the longest prefix containing `ip`.
    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<&T> {
        self.lookup_entry(ip).map(|(_, v)| v)
    }

    /// The longest prefix containing `ip`, and its value.
    #[inline]
    pub fn lookup_entry(&self, ip: Ipv4Addr) -> Option<(Ipv4Net, &T)> {
        let ip = u32::from(ip);
        let mut e = self.root[(ip >> 16) as usize];
        if e & CHUNK != 0 {
            e = self.chunks[(((e & !CHUNK) as usize) << 8) | ((ip >> 8) & 0xff) as usize];
            if e & CHUNK != 0 {
                e = self.chunks[(((e & !CHUNK) as usize) << 8) | (ip & 0xff) as usize];
            }
        }
        let idx = e & VALUE_MASK;
        if idx == 0 {
            return None;
        }
        self.values[(idx - 1) as usize]
            .as_ref()
            .map(|(net, v)| (*net, v))
    }

    /// The value stored for exactly `net` (host bits ignored).
    pub fn get(&self, net: Ipv4Net) -> Option<&T> {
        let idx = *self.prefixes.get(&net.trunc())?;
        self.values[idx as usize].as_ref().map(|(_, v)| v)
    }

    /// All prefixes and values, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Net, &T)> {
        self.values
            .iter()
            .filter_map(|e| e.as_ref().map(|(n, v)| (*n, v)))
    }

    /// Inserts or replaces the value for `net` (host bits cleared); returns the
    /// previous value.
    ///
    /// # Panics
    ///
    /// Panics if the table already holds 16,777,214 prefixes.
    pub fn insert(&mut self, net: Ipv4Net, value: T) -> Option<T> {
        let net = net.trunc();
        if let Some(&idx) = self.prefixes.get(&net) {
            let slot = &mut self.values[idx as usize];
            return slot.replace((net, value)).map(|(_, v)| v);
        }
        let idx = match self.free_values.pop() {
            Some(i) => {
                self.values[i as usize] = Some((net, value));
                i
            }
            None => {
                assert!(self.values.len() < MAX_VALUES, "route table is full");
                self.values.push(Some((net, value)));
                (self.values.len() - 1) as u32
            }
        };
        self.prefixes.insert(net, idx);
        let new = leaf(idx, net.prefix_len());
        self.paint(net, &mut |e: u32| {
            if e == 0 || leaf_len(e) <= net.prefix_len() {
                new
            } else {
                e
            }
        });
        None
    }

    /// Removes `net` (host bits ignored); returns its value. Addresses it covered
    /// fall back to the next shorter prefix containing them.
    pub fn remove(&mut self, net: Ipv4Net) -> Option<T> {
        let net = net.trunc();
        let idx = self.prefixes.remove(&net)?;
        let (_, value) = self.values[idx as usize].take()?;
        self.free_values.push(idx);
        let len = net.prefix_len();
        let mut replacement = 0;
        for l in (0..len).rev() {
            let parent = Ipv4Net::new(net.network(), l)
                .expect("shorter prefix is valid")
                .trunc();
            if let Some(&p) = self.prefixes.get(&parent) {
                replacement = leaf(p, l);
                break;
            }
        }
        let old = leaf(idx, len);
        self.paint(net, &mut |e: u32| if e == old { replacement } else { e });
        Some(value)
    }

    /// Applies `f` to every leaf slot covered by `net`, splitting slots into chunks
    /// where the prefix is longer than the slot's stride.
    fn paint(&mut self, net: Ipv4Net, f: &mut dyn FnMut(u32) -> u32) {
        let p = u32::from(net.network());
        let len = net.prefix_len();
        if len <= 16 {
            let start = (p >> 16) as usize;
            let count = 1usize << (16 - len);
            for i in start..start + count {
                let e = self.root[i];
                if e & CHUNK != 0 {
                    self.paint_chunk(e & !CHUNK, f, true);
                } else {
                    self.root[i] = f(e);
                }
            }
            return;
        }
        let top = (p >> 16) as usize;
        let c2 = self.ensure_chunk_root(top);
        let i2 = ((p >> 8) & 0xff) as usize;
        if len <= 24 {
            let count = 1usize << (24 - len);
            for i in i2..i2 + count {
                let slot = ((c2 as usize) << 8) | i;
                let e = self.chunks[slot];
                if e & CHUNK != 0 {
                    self.paint_chunk(e & !CHUNK, f, false);
                } else {
                    self.chunks[slot] = f(e);
                }
            }
            return;
        }
        let slot2 = ((c2 as usize) << 8) | i2;
        let c3 = self.ensure_chunk_at(slot2);
        let i3 = (p & 0xff) as usize;
        let count = 1usize << (32 - len);
        for i in i3..i3 + count {
            let slot = ((c3 as usize) << 8) | i;
            self.chunks[slot] = f(self.chunks[slot]);
        }
    }

    fn paint_chunk(&mut self, chunk: u32, f: &mut dyn FnMut(u32) -> u32, may_nest: bool) {
        let base = (chunk as usize) << 8;
        for slot in base..base + 256 {
            let e = self.chunks[slot];
            if e & CHUNK != 0 && may_nest {
                self.paint_chunk(e & !CHUNK, f, false);
            } else {
                self.chunks[slot] = f(e);
            }
        }
    }

    fn new_chunk(&mut self, fill: u32) -> u32 {
        let idx = (self.chunks.len() >> 8) as u32;
        assert!(idx < CHUNK, "route table has too many chunks");
        self.chunks.extend(std::iter::repeat_n(fill, 256));
        idx
    }

    fn ensure_chunk_root(&mut self, top: usize) -> u32 {
        let e = self.root[top];
        if e & CHUNK != 0 {
            return e & !CHUNK;
        }
        let c = self.new_chunk(e);
        self.root[top] = CHUNK | c;
        c
    }

    fn ensure_chunk_at(&mut self, slot: usize) -> u32 {
        let e = self.chunks[slot];
        if e & CHUNK != 0 {
            return e & !CHUNK;
        }
        let c = self.new_chunk(e);
        self.chunks[slot] = CHUNK | c;
        c
    }
}

/// Reference implementation for tests and benches: a linear scan keeping the
/// longest match (how an iptables-style rule list matches).
#[doc(hidden)]
pub fn linear_lookup<T>(routes: &[(Ipv4Net, T)], ip: Ipv4Addr) -> Option<&T> {
    let ip = u32::from(ip);
    let mut best: Option<(u8, &T)> = None;
    for (net, v) in routes {
        if ip & u32::from(net.netmask()) == u32::from(net.network())
            && best.is_none_or(|(l, _)| net.prefix_len() >= l)
        {
            best = Some((net.prefix_len(), v));
        }
    }
    best.map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_at_every_stride() {
        let mut t = RouteTable::new();
        t.insert(net("0.0.0.0/0"), "default");
        t.insert(net("10.0.0.0/8"), "a");
        t.insert(net("10.244.0.0/16"), "b");
        t.insert(net("10.244.3.0/24"), "c");
        t.insert(net("10.244.3.128/25"), "d");
        t.insert(net("10.244.3.200/32"), "e");
        t.insert(net("10.244.0.0/20"), "f");
        assert_eq!(t.lookup(ip("8.8.8.8")), Some(&"default"));
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&"a"));
        assert_eq!(t.lookup(ip("10.244.200.1")), Some(&"b"));
        assert_eq!(t.lookup(ip("10.244.1.1")), Some(&"f"));
        assert_eq!(t.lookup(ip("10.244.3.1")), Some(&"c"));
        assert_eq!(t.lookup(ip("10.244.3.129")), Some(&"d"));
        assert_eq!(t.lookup(ip("10.244.3.200")), Some(&"e"));
        assert_eq!(
            t.lookup_entry(ip("10.244.3.201")).map(|(n, _)| n),
            Some(net("10.244.3.128/25"))
        );
        // inserting a shorter prefix later must not shadow longer ones
        t.insert(net("10.244.0.0/14"), "g");
        assert_eq!(t.lookup(ip("10.244.3.129")), Some(&"d"));
        assert_eq!(t.lookup(ip("10.245.0.1")), Some(&"g"));
    }

    #[test]
    fn remove_falls_back_to_the_covering_prefix() {
        let mut t = RouteTable::new();
        t.insert(net("10.0.0.0/8"), 1);
        t.insert(net("10.244.3.0/24"), 2);
        t.insert(net("10.244.3.7/32"), 3);
        assert_eq!(t.remove(net("10.244.3.0/24")), Some(2));
        assert_eq!(t.lookup(ip("10.244.3.1")), Some(&1));
        assert_eq!(t.lookup(ip("10.244.3.7")), Some(&3));
        assert_eq!(t.remove(net("10.0.0.0/8")), Some(1));
        assert_eq!(t.lookup(ip("10.244.3.1")), None);
        assert_eq!(t.lookup(ip("10.244.3.7")), Some(&3));
        assert_eq!(t.remove(net("10.0.0.0/8")), None);
        assert_eq!(t.len(), 1);
        // replacing keeps one entry
        assert_eq!(t.insert(net("10.244.3.7/32"), 4), Some(3));
        assert_eq!(t.lookup(ip("10.244.3.7")), Some(&4));
    }

    #[test]
    fn host_bits_name_the_same_prefix() {
        let mut t = RouteTable::new();
        assert_eq!(t.insert(net("10.244.7.9/24"), 1), None);
        assert_eq!(t.insert(net("10.244.7.0/24"), 2), Some(1));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(net("10.244.7.200/24")), Some(&2));
        assert_eq!(
            t.lookup_entry(ip("10.244.7.1")).map(|(n, _)| n.to_string()),
            Some("10.244.7.0/24".to_owned())
        );
        assert_eq!(
            t.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            [net("10.244.7.0/24")]
        );
        t.insert(net("10.0.0.0/8"), 3);
        assert_eq!(t.remove(net("10.244.7.1/24")), Some(2));
        assert_eq!(t.lookup(ip("10.244.7.1")), Some(&3));
        // the linear reference agrees on unnormalised prefixes too
        let list = [(net("10.244.7.9/24"), 4), (net("10.9.9.9/8"), 5)];
        assert_eq!(linear_lookup(&list, ip("10.244.7.1")), Some(&4));
        assert_eq!(linear_lookup(&list, ip("10.1.1.1")), Some(&5));
        assert_eq!(linear_lookup(&list, ip("11.0.0.1")), None);
    }

    #[test]
    fn same_prefix_type_as_netbridge() {
        // one type across the networking crates: no conversions at the seams
        let n: kcore_netbridge::Ipv4Net = net("10.244.1.0/24");
        assert_eq!(
            std::any::TypeId::of::<Ipv4Net>(),
            std::any::TypeId::of::<kcore_netbridge::Ipv4Net>()
        );
        assert!(n.contains(&ip("10.244.1.77")));
    }

    #[test]
    fn matches_linear_scan_on_random_prefixes() {
        // deterministic xorshift
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut t = RouteTable::new();
        let mut list: Vec<(Ipv4Net, u32)> = Vec::new();
        for i in 0..3000u32 {
            let len = (rnd() % 33) as u8;
            let n = Ipv4Net::new(Ipv4Addr::from(rnd() as u32), len)
                .unwrap()
                .trunc();
            t.insert(n, i);
            list.retain(|(m, _)| *m != n);
            list.push((n, i));
        }
        for k in 0..500 {
            let victim = list.remove((rnd() as usize) % list.len()).0;
            assert!(t.remove(victim).is_some(), "removal {k}");
        }
        assert_eq!(t.len(), list.len());
        for _ in 0..50_000 {
            let probe = Ipv4Addr::from(rnd() as u32);
            assert_eq!(t.lookup(probe), linear_lookup(&list, probe), "{probe}");
        }
        // probes inside stored prefixes
        for (n, _) in list.iter().take(1000) {
            let probe =
                Ipv4Addr::from(u32::from(n.network()) | (rnd() as u32 & u32::from(n.hostmask())));
            assert_eq!(t.lookup(probe), linear_lookup(&list, probe), "{probe}");
        }
    }
}
