//! The resource vector the scheduler works with (quantities are read with
//! kcore-k8s's exact [`kcore_k8s::Quantity`]).

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

/// The value of quantity `q` of `resource`, rounded up: millicores for `cpu`
/// (`milli`), base units otherwise.
pub(crate) fn quantity(resource: &str, q: &Quantity, milli: bool) -> Result<i64, Error> {
    let q = kcore_k8s::Quantity::try_from(q).map_err(|source| Error::Quantity {
        resource: resource.to_owned(),
        source,
    })?;
    Ok(if milli { q.milli_value() } else { q.value() })
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
                "cpu" => r.milli_cpu = quantity(name, q, true)?,
                "memory" => r.memory = quantity(name, q, false)?,
                "ephemeral-storage" => r.ephemeral_storage = quantity(name, q, false)?,
                "pods" => r.pods = quantity(name, q, false)?,
                other => {
                    let v = quantity(other, q, false)?;
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
    fn resource_maps_read_exact_quantities() {
        let mut i = Interner::default();
        let map = |kv: &[(&str, &str)]| -> BTreeMap<String, Quantity> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect()
        };
        let r = Resources::from_map(
            &map(&[
                ("cpu", "1.5"),
                ("memory", "123456789123456789"),
                ("pods", "110"),
                ("nvidia.com/gpu", "2"),
            ]),
            &mut i,
        )
        .unwrap();
        assert_eq!(r.milli_cpu, 1500);
        assert_eq!(r.memory, 123_456_789_123_456_789);
        assert_eq!(r.pods, 110);
        assert_eq!(r.scalar(i.intern("nvidia.com/gpu")), 2);
        let err = Resources::from_map(&map(&[("memory", "12Xi")]), &mut i).unwrap_err();
        assert!(
            matches!(&err, Error::Quantity { resource, .. } if resource == "memory"),
            "{err}"
        );
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
