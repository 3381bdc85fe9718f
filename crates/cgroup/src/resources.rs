//! Resource limits (the OCI runtime-spec's `linux.resources` subset) and the spec's
//! v1 → v2 value conversions.

use crate::error::{Error, Result};

/// Limits to apply to a cgroup. Every field is optional: `None` leaves the current
/// value alone. Values use the OCI runtime-spec's (cgroup v1) units and meanings, so
/// `kcore-runtime` can copy them straight from a spec; the v2 driver converts them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, rename_all = "camelCase"))]
pub struct Resources {
    /// Memory limits.
    pub memory: MemoryResources,
    /// CPU bandwidth, weight and placement.
    pub cpu: CpuResources,
    /// Process-number limit.
    pub pids: PidsResources,
    /// Block I/O weights and throttles.
    pub io: IoResources,
    /// Huge page limits, one per page size.
    pub hugetlb: Vec<HugetlbLimit>,
    /// v1 `net_cls` class id and `net_prio` interface priorities (no v2 controller).
    pub network: NetworkResources,
    /// RDMA limits per device name (`mlx5_0`).
    pub rdma: std::collections::BTreeMap<String, RdmaLimit>,
    /// cgroup v2 interface files written as given (`"memory.high": "1G"`), after every
    /// other limit; refused on v1 and hybrid hosts, as runc refuses them.
    pub unified: std::collections::BTreeMap<String, String>,
}

/// A huge page limit (`hugetlb.<size>.limit_in_bytes` / `hugetlb.<size>.max`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, rename_all = "camelCase"))]
pub struct HugetlbLimit {
    /// The page size as the kernel names it in the file names: `2MB`, `1GB`, `64KB`.
    pub page_size: String,
    /// Bytes of huge pages allowed.
    pub limit: u64,
}

/// Network classification and priorities (v1 only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, rename_all = "camelCase"))]
pub struct NetworkResources {
    /// `net_cls.classid` of the cgroup's packets.
    pub class_id: Option<u32>,
    /// `net_prio.ifpriomap` entries: interface name and priority.
    pub priorities: Vec<(String, u32)>,
}

/// The RDMA limits of one device (`rdma.max`); `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, rename_all = "camelCase"))]
pub struct RdmaLimit {
    /// HCA handles.
    pub hca_handles: Option<u32>,
    /// HCA objects.
    pub hca_objects: Option<u32>,
}

/// A per-device block I/O weight (v1 `blkio.weight_device`, v2 `io.weight`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, rename_all = "camelCase"))]
pub struct WeightDevice {
    /// Device major number.
    pub major: i64,
    /// Device minor number.
    pub minor: i64,
    /// Weight in `blkio.weight` units (10..=1000).
    pub weight: Option<u16>,
    /// Leaf weight (v1 CFQ only; ignored on v2, as runc does).
    pub leaf_weight: Option<u16>,
}

/// A per-device rate limit (bytes or operations per second).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, rename_all = "camelCase"))]
pub struct ThrottleDevice {
    /// Device major number.
    pub major: i64,
    /// Device minor number.
    pub minor: i64,
    /// The rate; `0` removes the limit.
    pub rate: u64,
}

/// Memory limits, in bytes. `-1` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, rename_all = "camelCase"))]
pub struct MemoryResources {
    /// Hard limit (`memory.limit_in_bytes` / `memory.max`).
    pub limit: Option<i64>,
    /// Memory **plus** swap limit, as in the OCI spec and v1's
    /// `memory.memsw.limit_in_bytes`; v2 gets `swap - limit` in `memory.swap.max`.
    pub swap: Option<i64>,
    /// Soft limit / protection (`memory.soft_limit_in_bytes` / `memory.low`).
    pub reservation: Option<i64>,
    /// v1 `memory.swappiness`, 0..=100. cgroup v2 has no per-cgroup swappiness: the
    /// v2 driver leaves it alone, as runc does.
    pub swappiness: Option<u64>,
    /// `Some(true)` disables the OOM killer (v1 `memory.oom_control` = 1): a cgroup at
    /// its limit waits for memory instead. v2 has no such control; the v2 driver
    /// leaves it alone, as runc does.
    pub oom_kill_disable: Option<bool>,
    /// v1 kernel TCP buffer limit (`memory.kmem.tcp.limit_in_bytes`); v2 accounts TCP
    /// memory in `memory.max` and the v2 driver leaves it alone, as runc does.
    pub kernel_tcp: Option<i64>,
}

/// CPU limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, rename_all = "camelCase"))]
pub struct CpuResources {
    /// Relative weight in v1 units (2..=262144, default 1024); v2 gets
    /// [`cpu_shares_to_weight`] of it.
    pub shares: Option<u64>,
    /// Microseconds of CPU time allowed per period; `-1` (any negative) means no limit.
    pub quota: Option<i64>,
    /// Length of a period in microseconds.
    pub period: Option<u64>,
    /// CPUs to run on, in list format (`"0-1,3"`).
    pub cpus: Option<String>,
    /// Memory nodes to allocate from, in list format.
    pub mems: Option<String>,
    /// v1 `cpu.rt_runtime_us`: realtime microseconds per realtime period (`-1`
    /// unlimited). No v2 equivalent: refused there.
    pub realtime_runtime: Option<i64>,
    /// v1 `cpu.rt_period_us`.
    pub realtime_period: Option<u64>,
}

/// Process-number limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, rename_all = "camelCase"))]
pub struct PidsResources {
    /// Most tasks (processes and threads) allowed; any negative value means no limit.
    pub max: Option<i64>,
}

/// Block I/O limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, rename_all = "camelCase"))]
pub struct IoResources {
    /// Relative weight in v1 `blkio.weight` units (10..=1000); v2 gets
    /// [`blkio_weight_to_io_weight`] of it in `io.weight` (or the value itself in
    /// `io.bfq.weight` when the BFQ scheduler offers it).
    pub weight: Option<u16>,
    /// v1 `blkio.leaf_weight` (CFQ); v2 has none and leaves it alone, as runc does.
    pub leaf_weight: Option<u16>,
    /// Per-device weights.
    pub weight_device: Vec<WeightDevice>,
    /// Read bytes/s per device (`blkio.throttle.read_bps_device`, v2 `io.max rbps`).
    pub throttle_read_bps: Vec<ThrottleDevice>,
    /// Write bytes/s per device (`wbps`).
    pub throttle_write_bps: Vec<ThrottleDevice>,
    /// Read operations/s per device (`riops`).
    pub throttle_read_iops: Vec<ThrottleDevice>,
    /// Write operations/s per device (`wiops`).
    pub throttle_write_iops: Vec<ThrottleDevice>,
}

impl Resources {
    /// True if no limit is set at all.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

/// Largest v1 `cpu.shares` value the kernel accepts.
pub const CPU_SHARES_MAX: u64 = 262_144;
/// Largest v2 `cpu.weight` value.
pub const CPU_WEIGHT_MAX: u64 = 10_000;

/// Converts v1 `cpu.shares` to v2 `cpu.weight` the way current runc (1.3.2+) and crun
/// (1.23+) do: a curve through log space that maps the v1 minimum, default and maximum
/// (2, 1024, 262144) onto the v2 ones (1, 100, 10000). `0` (unset) stays `0`.
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    if shares <= 2 {
        return 1;
    }
    if shares >= CPU_SHARES_MAX {
        return CPU_WEIGHT_MAX;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    // Clamp guards against rounding at the edges of the range.
    (10f64.powf(exponent).ceil() as u64).clamp(1, CPU_WEIGHT_MAX)
}

/// The linear `cpu.shares` → `cpu.weight` conversion of the OCI cgroup-v2 mapping
/// document and older runc/crun: `1 + (shares - 2) * 9999 / 262142`. It maps the
/// default 1024 to 39, not 100, which is why runtimes moved to [`cpu_shares_to_weight`].
pub fn cpu_shares_to_weight_linear(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let shares = shares.clamp(2, CPU_SHARES_MAX);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Converts v1 `blkio.weight` (10..=1000) to v2 `io.weight` (1..=10000) as runc and
/// crun do: `1 + (weight - 10) * 9999 / 990`. `0` (unset) stays `0`.
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    let w = u64::from(weight.clamp(10, 1000));
    1 + ((w - 10) * 9999) / 990
}

/// Converts the OCI memory+swap limit to v2's swap-only `memory.swap.max`.
///
/// Returns `Ok(None)` for "unlimited" (`max`), `Ok(Some(bytes))` otherwise.
/// `swap == -1` is unlimited; `swap == 0` with an unlimited memory limit is unlimited
/// too. A swap limit needs a finite memory limit no larger than itself.
pub fn memory_swap_to_v2(swap: i64, limit: Option<i64>) -> Result<Option<i64>> {
    let limit = limit.unwrap_or(0);
    if swap == -1 || (swap == 0 && limit == -1) {
        return Ok(None);
    }
    if swap == 0 {
        return Ok(Some(0));
    }
    if swap < -1 {
        return Err(Error::InvalidValue {
            field: "memory.swap",
            reason: format!("{swap} is negative"),
        });
    }
    if limit <= 0 {
        return Err(Error::InvalidValue {
            field: "memory.swap",
            reason: "a swap limit needs a finite memory limit".into(),
        });
    }
    if swap < limit {
        return Err(Error::InvalidValue {
            field: "memory.swap",
            reason: format!("memory+swap {swap} is below the memory limit {limit}"),
        });
    }
    Ok(Some(swap - limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_to_weight_table() {
        for (shares, weight) in [
            (0, 0),
            (1, 1),
            (2, 1),
            (1024, 100),
            (CPU_SHARES_MAX, CPU_WEIGHT_MAX),
            (CPU_SHARES_MAX * 4, CPU_WEIGHT_MAX),
        ] {
            assert_eq!(cpu_shares_to_weight(shares), weight, "shares {shares}");
        }
        // Monotonic over the whole range.
        let mut last = 0;
        for s in (2..=CPU_SHARES_MAX).step_by(97) {
            let w = cpu_shares_to_weight(s);
            assert!(w >= last && (1..=CPU_WEIGHT_MAX).contains(&w), "shares {s}");
            last = w;
        }
        assert!(cpu_shares_to_weight(512) < 100 && cpu_shares_to_weight(2048) > 100);
    }

    #[test]
    fn shares_to_weight_linear_table() {
        for (shares, weight) in [
            (0, 0),
            (2, 1),
            (1024, 39),
            (262_144, 10_000),
            (500_000, 10_000),
        ] {
            assert_eq!(
                cpu_shares_to_weight_linear(shares),
                weight,
                "shares {shares}"
            );
        }
    }

    #[test]
    fn blkio_to_io_weight_table() {
        for (blkio, io) in [(0, 0), (10, 1), (500, 4950), (1000, 10_000), (5, 1)] {
            assert_eq!(blkio_weight_to_io_weight(blkio), io, "blkio {blkio}");
        }
    }

    #[test]
    fn swap_conversion_table() {
        let mib = 1 << 20;
        assert_eq!(memory_swap_to_v2(-1, Some(64 * mib)).unwrap(), None);
        assert_eq!(memory_swap_to_v2(0, Some(-1)).unwrap(), None);
        assert_eq!(memory_swap_to_v2(0, Some(64 * mib)).unwrap(), Some(0));
        assert_eq!(
            memory_swap_to_v2(96 * mib, Some(64 * mib)).unwrap(),
            Some(32 * mib)
        );
        assert_eq!(
            memory_swap_to_v2(64 * mib, Some(64 * mib)).unwrap(),
            Some(0)
        );
        for (swap, limit) in [
            (32 * mib, Some(64 * mib)),
            (mib, None),
            (mib, Some(-1)),
            (-5, None),
        ] {
            assert!(
                matches!(
                    memory_swap_to_v2(swap, limit),
                    Err(Error::InvalidValue {
                        field: "memory.swap",
                        ..
                    })
                ),
                "swap {swap} limit {limit:?}"
            );
        }
    }
}
