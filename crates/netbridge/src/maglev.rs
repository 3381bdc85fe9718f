//! Maglev consistent hashing (Eisenbud et al., NSDI 2016).
//!
//! Each backend fills a lookup table following its own permutation, so when a
//! backend comes or goes only about `1/n` of the slots change owner: flows keep
//! their backend unless theirs is the one that left.

/// Table sizes (primes) used for a given backend count: at least 100 slots per backend.
const PRIMES: [usize; 11] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131_071, 262_139,
];

/// A Maglev lookup table over `n` backends, mapping a flow hash to a backend index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maglev {
    table: Box<[u16]>,
    backends: usize,
}

impl Maglev {
    /// Builds the table for backends identified by stable names (e.g. `"10.244.1.5:8080"`).
    ///
    /// Returns `None` for an empty backend list. At most 65,535 backends are supported.
    pub fn new<B: AsRef<[u8]>>(backends: &[B]) -> Option<Self> {
        let n = backends.len();
        if n == 0 || n > usize::from(u16::MAX) {
            return None;
        }
        let m = PRIMES
            .iter()
            .copied()
            .find(|&p| p >= n * 100)
            .unwrap_or(PRIMES[PRIMES.len() - 1]);
        Some(Self::with_size(backends, m))
    }

    fn with_size<B: AsRef<[u8]>>(backends: &[B], m: usize) -> Self {
        let n = backends.len();
        let m64 = m as u64;
        let params: Vec<(u64, u64)> = backends
            .iter()
            .map(|b| {
                let b = b.as_ref();
                let offset = hash_bytes(b, 0x6d61_676c_6576_3031) % m64;
                let skip = hash_bytes(b, 0x6d61_676c_6576_3032) % (m64 - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; n];
        let mut table = vec![u16::MAX; m];
        let mut filled = 0;
        'outer: loop {
            for (i, &(offset, skip)) in params.iter().enumerate() {
                let mut c = (offset + next[i] * skip) % m64;
                while table[c as usize] != u16::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m64;
                }
                // n <= u16::MAX - 1 so the index fits and never equals the empty marker
                table[c as usize] = i as u16;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'outer;
                }
            }
        }
        Self {
            table: table.into_boxed_slice(),
            backends: n,
        }
    }

    /// The backend index for a flow hash.
    #[inline]
    pub fn lookup(&self, hash: u64) -> usize {
        // multiply-shift range reduction: uniform and cheaper than `%`
        let slot = ((u128::from(hash) * self.table.len() as u128) >> 64) as usize;
        usize::from(self.table[slot])
    }

    /// The lookup table: slot → backend index.
    pub fn table(&self) -> &[u16] {
        &self.table
    }

    /// Number of backends.
    pub fn backends(&self) -> usize {
        self.backends
    }

    /// Number of slots in the table (a prime).
    pub fn size(&self) -> usize {
        self.table.len()
    }
}

/// A 64-bit byte-string hash (FNV-1a followed by a murmur finaliser).
pub(crate) fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// The murmur3 64-bit finaliser: a fast, well-spread integer hash.
#[inline]
pub(crate) fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.244.{}.{}:8080", i / 200, i % 200))
            .collect()
    }

    #[test]
    fn spreads_evenly() {
        let b = names(10);
        let m = Maglev::new(&b).unwrap();
        assert_eq!(m.size(), 1021);
        let mut counts = [0usize; 10];
        for h in 0..100_000u64 {
            counts[m.lookup(mix64(h))] += 1;
        }
        for c in counts {
            assert!((8_000..12_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn removing_one_backend_moves_few_flows() {
        let b = names(20);
        let before = Maglev::new(&b).unwrap();
        let mut fewer = b.clone();
        let removed = fewer.remove(7);
        let after = Maglev::new(&fewer).unwrap();
        let mut moved = 0;
        let flows = 50_000u64;
        for h in 0..flows {
            let h = mix64(h);
            let was = &b[before.lookup(h)];
            let now = &fewer[after.lookup(h)];
            if *was != removed && was != now {
                moved += 1;
            }
            assert_ne!(now, &removed);
        }
        // flows of surviving backends stay put, bar a small disruption
        assert!(moved < flows / 20, "moved {moved}");
    }

    #[test]
    fn empty_is_none_and_single_takes_all() {
        assert!(Maglev::new::<&str>(&[]).is_none());
        let m = Maglev::new(&["only"]).unwrap();
        assert!((0..1000u64).all(|h| m.lookup(mix64(h)) == 0));
    }
}
