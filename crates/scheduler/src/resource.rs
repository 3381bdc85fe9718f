//! Kubernetes quantities and the resource vector the scheduler works with.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::error::Error;
use crate::intern::{Interner, Sym};

/// CPU request assumed for scoring a container that requests none (millicores),
/// as upstream's `DefaultMilliCPURequest`.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory request assumed for scoring a container that requests none (bytes),
/// as upstream's `DefaultMemoryRequest`.
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Parses a Kubernetes quantity ("100m", "1.5Gi", "2e3", "4") and returns its
/// value multiplied by 1000, rounded up (milli-units).
pub fn parse_quantity_milli(q: &str) -> Result<i64, Error> {
    let bad = || Error::Quantity {
        value: q.to_string(),
    };
    let s = q.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let (neg, s) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    if num.is_empty() || num == "." {
        return Err(bad());
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if frac_part.contains('.') {
        return Err(bad());
    }
    // value = digits * 10^exp10 * 2^exp2
    let digits: String = format!("{int_part}{frac_part}");
    let mut exp10: i32 = -(frac_part.len() as i32);
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        other if other.starts_with(['e', 'E']) => {
            let e: i32 = other[1..].parse().map_err(|_| bad())?;
            exp10 += e;
        }
        _ => return Err(bad()),
    }
    exp10 += 3; // milli
    let digits = digits.trim_start_matches('0');
    let mut v: i128 = 0;
    for d in digits.bytes() {
        v = v.checked_mul(10).ok_or_else(bad)?;
        v += i128::from(d - b'0');
        if v > i128::from(i64::MAX) << 64 {
            return Err(bad());
        }
    }
    v = v.checked_mul(1i128 << exp2).ok_or_else(bad)?;
    if exp10 >= 0 {
        for _ in 0..exp10 {
            v = v.saturating_mul(10);
        }
    } else {
        let div = 10i128
            .checked_pow(exp10.unsigned_abs())
            .unwrap_or(i128::MAX);
        v = (v + div - 1) / div; // round up like resource.Quantity.MilliValue
    }
    let v = v.min(i128::from(i64::MAX)) as i64;
    Ok(if neg { -v } else { v })
}

/// Value of a quantity rounded up to an integer (bytes, counts).
pub fn parse_quantity(q: &str) -> Result<i64, Error> {
    let m = parse_quantity_milli(q)?;
    Ok(if m >= 0 { (m + 999) / 1000 } else { m / 1000 })
}

/// A vector of resource amounts: CPU in millicores, memory and ephemeral storage
/// in bytes, a pod count, and extended ("scalar") resources by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Number of pods (meaningful in allocatable).
    pub pods: i64,
    /// Extended resources (`nvidia.com/gpu`, hugepages…), sorted by name id.
    pub scalars: Vec<(Sym, i64)>,
}

impl Resources {
    /// Reads a k8s resource map (`requests`, `allocatable`, `overhead`).
    pub(crate) fn from_map(
        map: &BTreeMap<String, Quantity>,
        interner: &mut Interner,
    ) -> Result<Self, Error> {
        let mut r = Resources::default();
        for (name, q) in map {
            match name.as_str() {
                "cpu" => r.milli_cpu = parse_quantity_milli(&q.0)?,
                "memory" => r.memory = parse_quantity(&q.0)?,
                "ephemeral-storage" => r.ephemeral_storage = parse_quantity(&q.0)?,
                "pods" => r.pods = parse_quantity(&q.0)?,
                other => {
                    let v = parse_quantity(&q.0)?;
                    r.set_scalar(interner.intern(other), v);
                }
            }
        }
        Ok(r)
    }

    /// The amount of extended resource `name`.
    pub fn scalar(&self, name: Sym) -> i64 {
        self.scalars
            .binary_search_by_key(&name, |e| e.0)
            .map(|i| self.scalars[i].1)
            .unwrap_or(0)
    }

    fn set_scalar(&mut self, name: Sym, v: i64) {
        match self.scalars.binary_search_by_key(&name, |e| e.0) {
            Ok(i) => self.scalars[i].1 = v,
            Err(i) => self.scalars.insert(i, (name, v)),
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
        for &(k, v) in &other.scalars {
            let cur = self.scalar(k);
            self.set_scalar(k, cur + v);
        }
    }

    /// Subtracts `other` from `self`.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
        for &(k, v) in &other.scalars {
            let cur = self.scalar(k);
            self.set_scalar(k, cur - v);
        }
        self.scalars.retain(|e| e.1 != 0);
    }

    /// Element-wise maximum.
    pub fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
        for &(k, v) in &other.scalars {
            let cur = self.scalar(k);
            if v > cur {
                self.set_scalar(k, v);
            }
        }
    }

    /// True when nothing is requested.
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalars.iter().all(|e| e.1 == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        let cases: &[(&str, i64)] = &[
            ("100m", 100),
            ("1", 1000),
            ("1.5", 1500),
            ("0.1", 100),
            ("2k", 2_000_000),
            ("1Ki", 1_024_000),
            ("500Mi", 500 * 1024 * 1024 * 1000),
            ("1e3", 1_000_000),
            ("1n", 1), // rounds up
            ("250u", 1),
            ("0", 0),
        ];
        for (q, want) in cases {
            assert_eq!(parse_quantity_milli(q).unwrap(), *want, "{q}");
        }
        assert_eq!(parse_quantity("32Gi").unwrap(), 32 << 30);
        assert_eq!(parse_quantity("110").unwrap(), 110);
        assert_eq!(parse_quantity("1.5k").unwrap(), 1500);
        for bad in ["", "abc", "1.2.3", "12Xi", "."] {
            assert!(parse_quantity_milli(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resource_arithmetic_keeps_scalars_sorted() {
        let mut i = Interner::default();
        let gpu = i.intern("nvidia.com/gpu");
        let mut a = Resources {
            milli_cpu: 100,
            ..Default::default()
        };
        let b = Resources {
            milli_cpu: 50,
            memory: 10,
            scalars: vec![(gpu, 2)],
            ..Default::default()
        };
        a.add(&b);
        assert_eq!(a.milli_cpu, 150);
        assert_eq!(a.scalar(gpu), 2);
        a.sub(&b);
        assert_eq!(a.scalar(gpu), 0);
        assert!(a.scalars.is_empty());
        a.max_with(&b);
        assert_eq!(a.milli_cpu, 100);
        assert_eq!(a.memory, 10);
    }
}
