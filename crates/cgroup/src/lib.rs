//! One cgroup API over cgroup v1, v2 and hybrid hosts.
//!
//! [`Host`] finds the mounted hierarchies (from `/proc/self/mountinfo`, or by probing a
//! cgroupfs root, which may be a fake one in a temp dir). [`Cgroup`] is a cgroup path
//! present in every hierarchy the host manages: create it (nested paths included), add
//! processes, apply [`Resources`] (memory limit/swap/reservation/swappiness/OOM killer/
//! kernel TCP, cpu shares + quota/period + realtime, cpuset cpus/mems, pids max, block
//! I/O weights and per-device throttles, hugetlb, net_cls/net_prio, rdma, and raw v2
//! `unified` files), read [`Stats`], list processes,
//! freeze/thaw, kill every process, and delete it recursively.
//!
//! [`Resources`] uses the OCI runtime-spec's (v1) units; on v2 hosts the spec's
//! conversions are applied: [`cpu_shares_to_weight`], [`blkio_weight_to_io_weight`],
//! [`memory_swap_to_v2`].
//!
//! On hybrid hosts (v1 controllers plus a v2 mount) limits, stats and the freezer go
//! through v1, and the cgroup is mirrored in the unified hierarchy for membership.
//!
//! # Example
//!
//! ```no_run
//! use kcore_cgroup::{Cgroup, Host, Resources};
//!
//! let host = Host::detect()?;
//! let cg = Cgroup::create(&host, "kcore/example")?;
//! let mut res = Resources::default();
//! res.memory.limit = Some(64 << 20);
//! res.pids.max = Some(32);
//! cg.set_resources(&res)?;
//! let child = std::process::Command::new("sleep").arg("60").spawn()?;
//! cg.add_process(child.id())?;
//! println!("usage: {:?} bytes", cg.stats()?.memory.usage);
//! cg.kill()?;
//! cg.delete()?;
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod cgroup;
mod error;
mod host;
mod resources;
mod stats;

pub use cgroup::{Cgroup, DEFAULT_TIMEOUT};
pub use error::{Error, Result};
pub use host::{CgroupMode, Controller, Host};
pub use resources::{
    blkio_weight_to_io_weight, cpu_shares_to_weight, cpu_shares_to_weight_linear,
    memory_swap_to_v2, CpuResources, HugetlbLimit, IoResources, MemoryResources, NetworkResources,
    PidsResources, RdmaLimit, Resources, ThrottleDevice, WeightDevice, CPU_SHARES_MAX,
    CPU_WEIGHT_MAX,
};
pub use stats::{CpuStats, FreezerState, MemoryStats, PidsStats, Stats};
