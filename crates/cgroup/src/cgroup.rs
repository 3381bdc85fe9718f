//! The [`Cgroup`] handle: one API over v1, v2 and hybrid hosts.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::host::{CgroupMode, Controller, Host};
use crate::resources::{
    blkio_weight_to_io_weight, cpu_shares_to_weight, memory_swap_to_v2, Resources,
};
use crate::stats::{FreezerState, Stats};

/// How long [`Cgroup::freeze`] and [`Cgroup::delete`] wait by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A cgroup, identified by its path relative to the hierarchy roots (`kcore/pod-1/ctr`),
/// present in every hierarchy the [`Host`] manages: each v1 controller hierarchy, plus
/// the unified one on v2 and hybrid hosts.
///
/// On v1 and hybrid hosts limits and stats go through the v1 controllers, and the
/// unified hierarchy (if mounted) tracks membership only, as runc and systemd do.
/// Dropping a handle does not remove the cgroup: call [`Cgroup::delete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    host: Host,
    path: PathBuf,
}

enum Freezer {
    V1(PathBuf),
    V2(PathBuf),
}

impl Cgroup {
    /// A handle for the cgroup at `path` without touching the file system. A leading
    /// `/` is ignored (OCI `cgroupsPath` style); `..` and the empty (root) path are
    /// refused.
    pub fn new(host: &Host, path: impl AsRef<Path>) -> Result<Cgroup> {
        let raw = path.as_ref();
        let mut clean = PathBuf::new();
        for c in raw.components() {
            match c {
                Component::Normal(s) => clean.push(s),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(Error::InvalidPath {
                        path: raw.to_path_buf(),
                    })
                }
            }
        }
        if clean.as_os_str().is_empty() {
            return Err(Error::InvalidPath {
                path: raw.to_path_buf(),
            });
        }
        Ok(Cgroup {
            host: host.clone(),
            path: clean,
        })
    }

    /// Creates the cgroup (and any missing ancestors) in every managed hierarchy; an
    /// existing cgroup is adopted. On v1, new `cpuset` levels get `cpuset.cpus` and
    /// `cpuset.mems` copied from their parent so tasks can join; on v2, every controller
    /// the parent offers is enabled in the ancestors' `cgroup.subtree_control`.
    pub fn create(host: &Host, path: impl AsRef<Path>) -> Result<Cgroup> {
        let cg = Cgroup::new(host, path)?;
        cg.create_dirs()?;
        Ok(cg)
    }

    /// Opens an existing cgroup; fails with [`Error::NotFound`] if it is in no hierarchy.
    pub fn open(host: &Host, path: impl AsRef<Path>) -> Result<Cgroup> {
        let cg = Cgroup::new(host, path)?;
        if !cg.exists() {
            return Err(Error::NotFound {
                path: cg.dirs().into_iter().next().unwrap_or(cg.path.clone()),
            });
        }
        Ok(cg)
    }

    /// Creates (or adopts) the child cgroup `name` below this one.
    pub fn child(&self, name: impl AsRef<Path>) -> Result<Cgroup> {
        let name = name.as_ref();
        if name.has_root() {
            return Err(Error::InvalidPath {
                path: name.to_path_buf(),
            });
        }
        Cgroup::create(&self.host, self.path.join(name))
    }

    /// The path relative to the hierarchy roots.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host this cgroup lives on.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The cgroup's directory in every managed hierarchy.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.host
            .managed_roots()
            .into_iter()
            .map(|r| r.join(&self.path))
            .collect()
    }

    /// True if the cgroup's directory exists in at least one hierarchy.
    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.is_dir())
    }

    fn is_v2(&self) -> bool {
        self.host.mode() == CgroupMode::V2
    }

    fn v1_dir(&self, c: Controller) -> Option<PathBuf> {
        self.host.v1_mount(c).map(|m| m.join(&self.path))
    }

    fn v2_dir(&self) -> Option<PathBuf> {
        self.host.unified().map(|m| m.join(&self.path))
    }

    fn missing(&self, controller: &'static str) -> Error {
        Error::ControllerMissing {
            controller,
            path: self.path.clone(),
        }
    }

    fn create_dirs(&self) -> Result<()> {
        let _span = tracing::debug_span!("cgroup_create", path = %self.path.display()).entered();
        let cpuset_root = self.host.v1_mount(Controller::Cpuset);
        for root in self.host.managed_roots() {
            let is_cpuset = cpuset_root == Some(root.as_path());
            let delegate = self.is_v2() && self.host.unified() == Some(root.as_path());
            let mut cur = root.clone();
            for comp in self.path.components() {
                if delegate {
                    enable_controllers(&cur)?;
                }
                let parent = cur.clone();
                cur.push(comp);
                match fs::create_dir(&cur) {
                    Ok(()) => tracing::debug!(dir = %cur.display(), "created cgroup"),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(source) => return Err(Error::Create { path: cur, source }),
                }
                if is_cpuset {
                    copy_if_empty(&parent, &cur, "cpuset.cpus")?;
                    copy_if_empty(&parent, &cur, "cpuset.mems")?;
                }
            }
        }
        Ok(())
    }

    /// Moves process `pid` (with all its threads) into the cgroup in every managed
    /// hierarchy.
    pub fn add_process(&self, pid: u32) -> Result<()> {
        for dir in self.dirs() {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes directly in this cgroup (not its descendants), sorted, across all
    /// managed hierarchies.
    pub fn procs(&self) -> Result<Vec<u32>> {
        let mut pids = Vec::new();
        for dir in self.dirs() {
            read_pids(&dir, &mut pids)?;
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// The processes in this cgroup and all its descendants, sorted.
    pub fn procs_recursive(&self) -> Result<Vec<u32>> {
        let mut pids = Vec::new();
        for dir in self.dirs() {
            for d in subtree(&dir)? {
                read_pids(&d, &mut pids)?;
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Applies the limits that are set in `resources`; unset (`None`) ones are left
    /// alone. Fails with [`Error::ControllerMissing`] if a limit needs a controller
    /// (or, as for v1 `memory.swappiness` and `memory.oom_control`, an interface file)
    /// this host (or this cgroup, on v2) lacks.
    pub fn set_resources(&self, resources: &Resources) -> Result<()> {
        let _span =
            tracing::debug_span!("cgroup_set_resources", path = %self.path.display()).entered();
        if self.is_v2() {
            self.set_v2(resources)
        } else {
            self.set_v1(resources)
        }
    }

    fn set_v1(&self, r: &Resources) -> Result<()> {
        let m = &r.memory;
        let limit = nonzero(m.limit);
        let mut swap = nonzero(m.swap);
        let reservation = nonzero(m.reservation);
        if limit.is_some() || swap.is_some() || reservation.is_some() {
            let dir = self
                .v1_dir(Controller::Memory)
                .ok_or_else(|| self.missing("memory"))?;
            let limit_file = dir.join("memory.limit_in_bytes");
            let swap_file = dir.join("memory.memsw.limit_in_bytes");
            if let (Some(l), Some(s)) = (limit, swap) {
                if l != -1 && s != -1 && s < l {
                    return Err(Error::InvalidValue {
                        field: "memory.swap",
                        reason: format!("memory+swap {s} is below the memory limit {l}"),
                    });
                }
            }
            if limit == Some(-1) && swap.is_none() {
                swap = Some(-1);
            }
            if swap.is_some() && !swap_file.exists() {
                if swap != Some(-1) {
                    return Err(self.missing("memory (swap accounting)"));
                }
                swap = None;
            }
            match (limit, swap) {
                (Some(l), Some(s)) => {
                    let current = read_i128(&limit_file)?;
                    // memsw may never drop below the memory limit: raise it first when
                    // growing, lower it last when shrinking.
                    if s == -1 || current < i128::from(s) {
                        write_file(&swap_file, &s.to_string())?;
                        write_file(&limit_file, &l.to_string())?;
                    } else {
                        write_file(&limit_file, &l.to_string())?;
                        write_file(&swap_file, &s.to_string())?;
                    }
                }
                (Some(l), None) => write_file(&limit_file, &l.to_string())?,
                (None, Some(s)) => write_file(&swap_file, &s.to_string())?,
                (None, None) => {}
            }
            if let Some(res) = reservation {
                write_file(&dir.join("memory.soft_limit_in_bytes"), &res.to_string())?;
            }
        }
        if let Some(sw) = m.swappiness {
            if sw > 100 {
                return Err(Error::InvalidValue {
                    field: "memory.swappiness",
                    reason: format!("{sw} is out of range 0-100"),
                });
            }
            let dir = self
                .v1_dir(Controller::Memory)
                .ok_or_else(|| self.missing("memory"))?;
            write_ctl(
                &dir,
                "memory.swappiness",
                &sw.to_string(),
                self,
                "memory (swappiness)",
            )?;
        }
        if m.oom_kill_disable == Some(true) {
            let dir = self
                .v1_dir(Controller::Memory)
                .ok_or_else(|| self.missing("memory"))?;
            write_ctl(
                &dir,
                "memory.oom_control",
                "1",
                self,
                "memory (oom_control)",
            )?;
        }

        let c = &r.cpu;
        if c.shares.is_some() || c.quota.is_some() || c.period.is_some() {
            let dir = self
                .v1_dir(Controller::Cpu)
                .ok_or_else(|| self.missing("cpu"))?;
            if let Some(shares) = c.shares.filter(|s| *s != 0) {
                write_ctl(&dir, "cpu.shares", &shares.to_string(), self, "cpu")?;
            }
            if let Some(period) = c.period {
                write_ctl(&dir, "cpu.cfs_period_us", &period.to_string(), self, "cpu")?;
            }
            if let Some(quota) = c.quota {
                let q = if quota < 0 { -1 } else { quota };
                write_ctl(&dir, "cpu.cfs_quota_us", &q.to_string(), self, "cpu")?;
            }
        }
        if c.cpus.is_some() || c.mems.is_some() {
            let dir = self
                .v1_dir(Controller::Cpuset)
                .ok_or_else(|| self.missing("cpuset"))?;
            if let Some(cpus) = &c.cpus {
                write_ctl(&dir, "cpuset.cpus", cpus, self, "cpuset")?;
            }
            if let Some(mems) = &c.mems {
                write_ctl(&dir, "cpuset.mems", mems, self, "cpuset")?;
            }
        }

        if let Some(max) = r.pids.max {
            let dir = self
                .v1_dir(Controller::Pids)
                .ok_or_else(|| self.missing("pids"))?;
            write_ctl(&dir, "pids.max", &pids_value(max), self, "pids")?;
        }

        if let Some(weight) = r.io.weight.filter(|w| *w != 0) {
            let dir = self
                .v1_dir(Controller::Blkio)
                .ok_or_else(|| self.missing("blkio"))?;
            let file = ["blkio.weight", "blkio.bfq.weight"]
                .into_iter()
                .map(|f| dir.join(f))
                .find(|f| f.exists())
                .ok_or_else(|| self.missing("blkio weight"))?;
            write_file(&file, &weight.to_string())?;
        }
        self.set_v1_more(r)
    }

    /// The v1 limits beyond the everyday ones: kernel TCP, realtime CPU, per-device
    /// block I/O, hugetlb, net_cls/net_prio, rdma; `unified` is refused.
    fn set_v1_more(&self, r: &Resources) -> Result<()> {
        if let Some(tcp) = nonzero(r.memory.kernel_tcp) {
            let dir = self
                .v1_dir(Controller::Memory)
                .ok_or_else(|| self.missing("memory"))?;
            let what = "memory (kernel TCP)";
            write_ctl(
                &dir,
                "memory.kmem.tcp.limit_in_bytes",
                &tcp.to_string(),
                self,
                what,
            )?;
        }
        let c = &r.cpu;
        if c.realtime_period.is_some() || c.realtime_runtime.is_some() {
            let dir = self
                .v1_dir(Controller::Cpu)
                .ok_or_else(|| self.missing("cpu"))?;
            // The period first: a runtime is checked against it (as runc orders them).
            if let Some(p) = c.realtime_period.filter(|p| *p != 0) {
                write_ctl(
                    &dir,
                    "cpu.rt_period_us",
                    &p.to_string(),
                    self,
                    "cpu (realtime)",
                )?;
            }
            if let Some(rt) = c.realtime_runtime.filter(|r| *r != 0) {
                write_ctl(
                    &dir,
                    "cpu.rt_runtime_us",
                    &rt.to_string(),
                    self,
                    "cpu (realtime)",
                )?;
            }
        }
        let io = &r.io;
        let io_devices = io.leaf_weight.is_some_and(|w| w != 0)
            || !io.weight_device.is_empty()
            || !io.throttle_read_bps.is_empty()
            || !io.throttle_write_bps.is_empty()
            || !io.throttle_read_iops.is_empty()
            || !io.throttle_write_iops.is_empty();
        if io_devices {
            let dir = self
                .v1_dir(Controller::Blkio)
                .ok_or_else(|| self.missing("blkio"))?;
            if let Some(w) = io.leaf_weight.filter(|w| *w != 0) {
                write_ctl(
                    &dir,
                    "blkio.leaf_weight",
                    &w.to_string(),
                    self,
                    "blkio (leaf weight)",
                )?;
            }
            for d in &io.weight_device {
                if let Some(w) = d.weight.filter(|w| *w != 0) {
                    let file = ["blkio.weight_device", "blkio.bfq.weight_device"]
                        .into_iter()
                        .find(|f| dir.join(f).exists())
                        .ok_or_else(|| self.missing("blkio weight"))?;
                    write_file(&dir.join(file), &format!("{}:{} {w}", d.major, d.minor))?;
                }
                if let Some(w) = d.leaf_weight.filter(|w| *w != 0) {
                    let line = format!("{}:{} {w}", d.major, d.minor);
                    write_ctl(
                        &dir,
                        "blkio.leaf_weight_device",
                        &line,
                        self,
                        "blkio (leaf weight)",
                    )?;
                }
            }
            for (file, list) in [
                ("blkio.throttle.read_bps_device", &io.throttle_read_bps),
                ("blkio.throttle.write_bps_device", &io.throttle_write_bps),
                ("blkio.throttle.read_iops_device", &io.throttle_read_iops),
                ("blkio.throttle.write_iops_device", &io.throttle_write_iops),
            ] {
                for d in list {
                    let line = format!("{}:{} {}", d.major, d.minor, d.rate);
                    write_ctl(&dir, file, &line, self, "blkio (throttle)")?;
                }
            }
        }
        if !r.hugetlb.is_empty() {
            let dir = self
                .v1_dir(Controller::Hugetlb)
                .ok_or_else(|| self.missing("hugetlb"))?;
            self.set_hugetlb(&dir, &r.hugetlb, "limit_in_bytes")?;
        }
        let net = &r.network;
        if let Some(id) = net.class_id {
            let dir = self
                .v1_dir(Controller::NetCls)
                .ok_or_else(|| self.missing("net_cls"))?;
            write_ctl(&dir, "net_cls.classid", &id.to_string(), self, "net_cls")?;
        }
        if !net.priorities.is_empty() {
            let dir = self
                .v1_dir(Controller::NetPrio)
                .ok_or_else(|| self.missing("net_prio"))?;
            // One interface per write, as the kernel parses the file.
            for (iface, prio) in &net.priorities {
                write_ctl(
                    &dir,
                    "net_prio.ifpriomap",
                    &format!("{iface} {prio}"),
                    self,
                    "net_prio",
                )?;
            }
        }
        if !r.rdma.is_empty() {
            let dir = self
                .v1_dir(Controller::Rdma)
                .ok_or_else(|| self.missing("rdma"))?;
            self.set_rdma(&dir, r)?;
        }
        if !r.unified.is_empty() {
            return Err(Error::NotSupported {
                field: "unified",
                mode: if self.host.mode() == CgroupMode::Hybrid {
                    "hybrid"
                } else {
                    "v1"
                },
            });
        }
        Ok(())
    }

    /// `hugetlb.<size>.<suffix>` per limit, and the reservation file (`.rsvd.`) where
    /// the kernel has one, as runc writes both. A page size the host does not offer is
    /// an invalid value.
    fn set_hugetlb(&self, dir: &Path, limits: &[crate::HugetlbLimit], suffix: &str) -> Result<()> {
        if !dir.is_dir() {
            return Err(self.missing("hugetlb"));
        }
        for h in limits {
            let file = dir.join(format!("hugetlb.{}.{suffix}", h.page_size));
            if !file.exists() {
                return Err(Error::InvalidValue {
                    field: "hugepageLimits",
                    reason: format!("page size {} is not offered by this host", h.page_size),
                });
            }
            write_file(&file, &h.limit.to_string())?;
            let rsvd = dir.join(format!("hugetlb.{}.rsvd.{suffix}", h.page_size));
            if rsvd.exists() {
                write_file(&rsvd, &h.limit.to_string())?;
            }
        }
        Ok(())
    }

    /// One `rdma.max` line per device (same format on v1 and v2).
    fn set_rdma(&self, dir: &Path, r: &Resources) -> Result<()> {
        let n = |v: Option<u32>| v.map_or("max".to_string(), |v| v.to_string());
        for (dev, l) in &r.rdma {
            let line = format!(
                "{dev} hca_handle={} hca_object={}",
                n(l.hca_handles),
                n(l.hca_objects)
            );
            write_ctl(dir, "rdma.max", &line, self, "rdma")?;
        }
        Ok(())
    }

    fn set_v2(&self, r: &Resources) -> Result<()> {
        let dir = self.v2_dir().ok_or_else(|| self.missing("unified"))?;
        let m = &r.memory;
        let limit = nonzero(m.limit);
        let swap = nonzero(m.swap);
        if let Some(l) = limit {
            write_ctl(&dir, "memory.max", &max_or(l), self, "memory")?;
        }
        if swap.is_some() || limit == Some(-1) {
            let value = memory_swap_to_v2(swap.unwrap_or(0), limit)?;
            let file = dir.join("memory.swap.max");
            match value {
                None if !file.exists() => {}
                None => write_file(&file, "max")?,
                Some(v) => write_ctl(&dir, "memory.swap.max", &v.to_string(), self, "memory")?,
            }
        }
        if let Some(res) = nonzero(m.reservation) {
            write_ctl(&dir, "memory.low", &max_or(res), self, "memory")?;
        }

        let c = &r.cpu;
        if let Some(shares) = c.shares.filter(|s| *s != 0) {
            let weight = cpu_shares_to_weight(shares);
            write_ctl(&dir, "cpu.weight", &weight.to_string(), self, "cpu")?;
        }
        if c.quota.is_some() || c.period.is_some() {
            let quota = match c.quota {
                Some(q) if q > 0 => q.to_string(),
                Some(_) => "max".to_string(),
                None => {
                    let current = read_ctl(&dir, "cpu.max", self, "cpu")?;
                    current
                        .split_whitespace()
                        .next()
                        .unwrap_or("max")
                        .to_string()
                }
            };
            let value = match c.period {
                Some(p) => format!("{quota} {p}"),
                None => quota,
            };
            write_ctl(&dir, "cpu.max", &value, self, "cpu")?;
        }
        if let Some(cpus) = &c.cpus {
            write_ctl(&dir, "cpuset.cpus", cpus, self, "cpuset")?;
        }
        if let Some(mems) = &c.mems {
            write_ctl(&dir, "cpuset.mems", mems, self, "cpuset")?;
        }

        if let Some(max) = r.pids.max {
            write_ctl(&dir, "pids.max", &pids_value(max), self, "pids")?;
        }

        if let Some(weight) = r.io.weight.filter(|w| *w != 0) {
            let bfq = dir.join("io.bfq.weight");
            if bfq.exists() {
                write_file(&bfq, &weight.to_string())?;
            } else {
                let w = blkio_weight_to_io_weight(weight);
                write_ctl(&dir, "io.weight", &format!("default {w}"), self, "io")?;
            }
        }
        self.set_v2_more(&dir, r)
    }

    /// The v2 limits beyond the everyday ones: per-device I/O, hugetlb, rdma, then the
    /// raw `unified` files. Kernel TCP and the leaf weights have no v2 file and are
    /// left alone (as runc does); realtime CPU time and net_cls/net_prio are refused.
    fn set_v2_more(&self, dir: &Path, r: &Resources) -> Result<()> {
        let c = &r.cpu;
        if c.realtime_period.is_some_and(|p| p != 0) || c.realtime_runtime.is_some_and(|r| r != 0) {
            return Err(Error::NotSupported {
                field: "cpu.realtimeRuntime/realtimePeriod",
                mode: "v2",
            });
        }
        let io = &r.io;
        for d in &io.weight_device {
            if let Some(w) = d.weight.filter(|w| *w != 0) {
                if dir.join("io.bfq.weight").exists() {
                    write_file(
                        &dir.join("io.bfq.weight"),
                        &format!("{}:{} {w}", d.major, d.minor),
                    )?;
                } else {
                    let line = format!("{}:{} {}", d.major, d.minor, blkio_weight_to_io_weight(w));
                    write_ctl(dir, "io.weight", &line, self, "io")?;
                }
            }
        }
        for (key, list) in [
            ("rbps", &io.throttle_read_bps),
            ("wbps", &io.throttle_write_bps),
            ("riops", &io.throttle_read_iops),
            ("wiops", &io.throttle_write_iops),
        ] {
            for d in list {
                let rate = if d.rate == 0 {
                    "max".to_string()
                } else {
                    d.rate.to_string()
                };
                let line = format!("{}:{} {key}={rate}", d.major, d.minor);
                write_ctl(dir, "io.max", &line, self, "io")?;
            }
        }
        if !r.hugetlb.is_empty() {
            if !self.v2_offers(dir, "hugetlb") {
                return Err(self.missing("hugetlb"));
            }
            self.set_hugetlb(dir, &r.hugetlb, "max")?;
        }
        if r.network.class_id.is_some() {
            return Err(self.missing("net_cls"));
        }
        if !r.network.priorities.is_empty() {
            return Err(self.missing("net_prio"));
        }
        if !r.rdma.is_empty() {
            if !self.v2_offers(dir, "rdma") {
                return Err(self.missing("rdma"));
            }
            self.set_rdma(dir, r)?;
        }
        for (key, value) in &r.unified {
            let (controller, _) = key.split_once('.').ok_or_else(|| Error::InvalidValue {
                field: "unified",
                reason: format!("{key:?} is not a cgroup interface file name"),
            })?;
            if key.contains('/') || key.starts_with('.') || controller.is_empty() {
                return Err(Error::InvalidValue {
                    field: "unified",
                    reason: format!("{key:?} is not a cgroup interface file name"),
                });
            }
            let name = Controller::from_name(controller).map_or("unified", Controller::name);
            write_ctl(dir, key, value, self, name)?;
        }
        Ok(())
    }

    /// Whether the v2 cgroup at `dir` has `controller` enabled (its
    /// `cgroup.controllers` lists it).
    fn v2_offers(&self, dir: &Path, controller: &str) -> bool {
        fs::read_to_string(dir.join("cgroup.controllers"))
            .is_ok_and(|s| s.split_whitespace().any(|c| c == controller))
    }

    /// Reads the cgroup's accounting. Counters the host lacks are `None`.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        if self.is_v2() {
            let dir = self.v2_dir().ok_or_else(|| self.missing("unified"))?;
            s.memory.usage = read_u64_opt(&dir.join("memory.current"))?;
            s.memory.peak = read_u64_opt(&dir.join("memory.peak"))?;
            if let Some(ev) = read_opt(&dir.join("memory.events"))? {
                let p = dir.join("memory.events");
                s.memory.oom = keyed(&p, &ev, "oom")?;
                s.memory.oom_kill = keyed(&p, &ev, "oom_kill")?;
            }
            let p = dir.join("memory.stat");
            if let Some(st) = read_opt(&p)? {
                s.memory.inactive_file = keyed(&p, &st, "inactive_file")?;
            }
            let stat_file = dir.join("cpu.stat");
            if let Some(st) = read_opt(&stat_file)? {
                s.cpu.usage_usec = keyed(&stat_file, &st, "usage_usec")?;
                s.cpu.user_usec = keyed(&stat_file, &st, "user_usec")?;
                s.cpu.system_usec = keyed(&stat_file, &st, "system_usec")?;
                s.cpu.nr_periods = keyed(&stat_file, &st, "nr_periods")?;
                s.cpu.nr_throttled = keyed(&stat_file, &st, "nr_throttled")?;
                s.cpu.throttled_usec = keyed(&stat_file, &st, "throttled_usec")?;
            }
            s.pids.current = read_u64_opt(&dir.join("pids.current"))?;
            s.pids.max = read_u64_opt(&dir.join("pids.max"))?;
            return Ok(s);
        }

        if let Some(dir) = self.v1_dir(Controller::Memory) {
            s.memory.usage = read_u64_opt(&dir.join("memory.usage_in_bytes"))?;
            s.memory.peak = read_u64_opt(&dir.join("memory.max_usage_in_bytes"))?;
            let p = dir.join("memory.oom_control");
            if let Some(text) = read_opt(&p)? {
                s.memory.oom_kill = keyed(&p, &text, "oom_kill")?;
            }
            let p = dir.join("memory.stat");
            if let Some(text) = read_opt(&p)? {
                s.memory.inactive_file = keyed(&p, &text, "total_inactive_file")?;
            }
        }
        if let Some(dir) = self.v1_dir(Controller::Cpuacct) {
            let ns = |f: &str| -> Result<Option<u64>> {
                Ok(read_u64_opt(&dir.join(f))?.map(|v| v / 1000))
            };
            s.cpu.usage_usec = ns("cpuacct.usage")?;
            s.cpu.user_usec = ns("cpuacct.usage_user")?;
            s.cpu.system_usec = ns("cpuacct.usage_sys")?;
        } else if let Some(dir) = self.v2_dir() {
            let p = dir.join("cpu.stat");
            if let Some(st) = read_opt(&p)? {
                s.cpu.usage_usec = keyed(&p, &st, "usage_usec")?;
                s.cpu.user_usec = keyed(&p, &st, "user_usec")?;
                s.cpu.system_usec = keyed(&p, &st, "system_usec")?;
            }
        }
        if let Some(dir) = self.v1_dir(Controller::Cpu) {
            let p = dir.join("cpu.stat");
            if let Some(st) = read_opt(&p)? {
                s.cpu.nr_periods = keyed(&p, &st, "nr_periods")?;
                s.cpu.nr_throttled = keyed(&p, &st, "nr_throttled")?;
                s.cpu.throttled_usec = keyed(&p, &st, "throttled_time")?.map(|v| v / 1000);
            }
        }
        if let Some(dir) = self.v1_dir(Controller::Pids) {
            s.pids.current = read_u64_opt(&dir.join("pids.current"))?;
            s.pids.max = read_u64_opt(&dir.join("pids.max"))?;
        }
        Ok(s)
    }

    fn freezer(&self) -> Option<Freezer> {
        if !self.is_v2() {
            if let Some(dir) = self.v1_dir(Controller::Freezer) {
                return Some(Freezer::V1(dir));
            }
        }
        self.v2_dir().map(Freezer::V2)
    }

    /// Freezes every task in the cgroup and its descendants and waits (up to
    /// [`DEFAULT_TIMEOUT`]) until the kernel reports the cgroup frozen.
    pub fn freeze(&self) -> Result<()> {
        self.freeze_timeout(DEFAULT_TIMEOUT)
    }

    /// [`Cgroup::freeze`] with an explicit timeout; on timeout the cgroup is thawed again
    /// and [`Error::FreezeTimeout`] returned.
    pub fn freeze_timeout(&self, timeout: Duration) -> Result<()> {
        let _span = tracing::debug_span!("cgroup_freeze", path = %self.path.display()).entered();
        let freezer = self.freezer().ok_or_else(|| self.missing("freezer"))?;
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(1);
        loop {
            let (frozen, dir) = match &freezer {
                Freezer::V1(dir) => {
                    // Re-requesting FROZEN is how a stuck FREEZING is retried.
                    write_ctl(dir, "freezer.state", "FROZEN", self, "freezer")?;
                    let state = read_file(&dir.join("freezer.state"))?;
                    (state.trim() == "FROZEN", dir)
                }
                Freezer::V2(dir) => {
                    write_ctl(dir, "cgroup.freeze", "1", self, "freezer")?;
                    let p = dir.join("cgroup.events");
                    let events = read_file(&p)?;
                    (keyed(&p, &events, "frozen")? == Some(1), dir)
                }
            };
            if frozen {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.thaw();
                return Err(Error::FreezeTimeout {
                    path: dir.clone(),
                    timeout,
                });
            }
            thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    /// Thaws the cgroup.
    pub fn thaw(&self) -> Result<()> {
        match self.freezer().ok_or_else(|| self.missing("freezer"))? {
            Freezer::V1(dir) => write_ctl(&dir, "freezer.state", "THAWED", self, "freezer"),
            Freezer::V2(dir) => write_ctl(&dir, "cgroup.freeze", "0", self, "freezer"),
        }
    }

    /// The cgroup's freezer state.
    pub fn freezer_state(&self) -> Result<FreezerState> {
        match self.freezer().ok_or_else(|| self.missing("freezer"))? {
            Freezer::V1(dir) => {
                let p = dir.join("freezer.state");
                let text = read_file(&p)?;
                match text.trim() {
                    "THAWED" => Ok(FreezerState::Thawed),
                    "FREEZING" => Ok(FreezerState::Freezing),
                    "FROZEN" => Ok(FreezerState::Frozen),
                    other => Err(Error::Parse {
                        path: p,
                        content: other.to_string(),
                    }),
                }
            }
            Freezer::V2(dir) => {
                let requested = read_file(&dir.join("cgroup.freeze"))?.trim() == "1";
                let p = dir.join("cgroup.events");
                let events = read_file(&p)?;
                let frozen = keyed(&p, &events, "frozen")? == Some(1);
                Ok(match (requested, frozen) {
                    (_, true) => FreezerState::Frozen,
                    (true, false) => FreezerState::Freezing,
                    (false, false) => FreezerState::Thawed,
                })
            }
        }
    }

    /// Sends SIGKILL to every process in the cgroup and its descendants. On v2 this is
    /// one write to `cgroup.kill` where the kernel has it (5.14+); otherwise the cgroup
    /// is frozen (so nothing can fork away), every process is signalled, and the cgroup
    /// is thawed so the signals are delivered. Processes exit asynchronously: follow
    /// with [`Cgroup::delete`], which waits for them.
    pub fn kill(&self) -> Result<()> {
        let _span = tracing::debug_span!("cgroup_kill", path = %self.path.display()).entered();
        if self.is_v2() {
            if let Some(dir) = self.v2_dir() {
                let file = dir.join("cgroup.kill");
                if file.exists() {
                    return write_file(&file, "1");
                }
            }
        }
        let frozen = self.freezer().is_some() && self.freeze().is_ok();
        let mut result = Ok(());
        // Frozen tasks cannot fork, so one pass suffices; without a freezer, repeat
        // while new processes keep appearing.
        for _ in 0..if frozen { 1 } else { 10 } {
            let pids = match self.procs_recursive() {
                Ok(p) => p,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                match kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(source) => {
                        result = Err(Error::Kill { pid, source });
                    }
                }
            }
        }
        if frozen {
            self.thaw()?;
        }
        result
    }

    /// Removes the cgroup and all its descendants from every hierarchy, waiting up to
    /// [`DEFAULT_TIMEOUT`] for processes that are still exiting. Succeeds if the cgroup
    /// does not exist. Live processes are not killed: call [`Cgroup::kill`] first.
    pub fn delete(&self) -> Result<()> {
        self.delete_timeout(DEFAULT_TIMEOUT)
    }

    /// [`Cgroup::delete`] with an explicit timeout.
    pub fn delete_timeout(&self, timeout: Duration) -> Result<()> {
        let _span = tracing::debug_span!("cgroup_delete", path = %self.path.display()).entered();
        let deadline = Instant::now() + timeout;
        for dir in self.dirs() {
            // Children first: subtree() lists parents before children.
            for d in subtree(&dir)?.into_iter().rev() {
                remove_dir_retry(&d, deadline)?;
            }
        }
        Ok(())
    }
}

/// Treats 0 as "unset", as OCI runtimes do for memory values.
fn nonzero(v: Option<i64>) -> Option<i64> {
    v.filter(|x| *x != 0)
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

fn pids_value(max: i64) -> String {
    max_or(max)
}

fn enable_controllers(dir: &Path) -> Result<()> {
    let Some(available) = read_opt(&dir.join("cgroup.controllers"))? else {
        return Ok(());
    };
    let control = dir.join("cgroup.subtree_control");
    let enabled = read_opt(&control)?.unwrap_or_default();
    for c in available.split_whitespace() {
        if enabled.split_whitespace().any(|e| e == c) {
            continue;
        }
        // One at a time: some controllers cannot be enabled everywhere, and a failure
        // only matters if a limit needs that controller (reported then).
        if let Err(e) = write_file(&control, &format!("+{c}")) {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                controller = c,
                "cannot enable controller"
            );
        }
    }
    Ok(())
}

fn copy_if_empty(parent: &Path, dir: &Path, file: &str) -> Result<()> {
    let target = dir.join(file);
    // A real cgroupfs always has the file; a fake one may not, and then has nothing
    // to fill in.
    let Some(current) = read_opt(&target)? else {
        return Ok(());
    };
    if current.trim().is_empty() {
        let value = read_file(&parent.join(file))?;
        write_file(&target, value.trim())?;
    }
    Ok(())
}

/// `dir` and every directory below it, parents before children; empty if `dir` is
/// missing.
fn subtree(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    out.push(dir.to_path_buf());
    let mut i = 0;
    while i < out.len() {
        let entries = match fs::read_dir(&out[i]) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                i += 1;
                continue;
            }
            Err(source) => {
                return Err(Error::Read {
                    path: out[i].clone(),
                    source,
                })
            }
        };
        let mut children: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.path())
            .collect();
        children.sort();
        out.extend(children);
        i += 1;
    }
    Ok(out)
}

fn remove_dir_retry(dir: &Path, deadline: Instant) -> Result<()> {
    let mut delay = Duration::from_millis(1);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => {
                tracing::debug!(dir = %dir.display(), "removed cgroup");
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy && Instant::now() < deadline => {
                thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(50));
            }
            Err(source) => {
                return Err(Error::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

fn read_pids(dir: &Path, out: &mut Vec<u32>) -> Result<()> {
    let p = dir.join("cgroup.procs");
    if let Some(text) = read_opt(&p)? {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            out.push(line.parse().map_err(|_| Error::Parse {
                path: p.clone(),
                content: line.to_string(),
            })?);
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a file, `None` if it (or its directory) does not exist.
fn read_opt(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_ctl(dir: &Path, file: &str, cg: &Cgroup, controller: &'static str) -> Result<String> {
    read_opt(&dir.join(file))?.ok_or_else(|| cg.missing(controller))
}

/// Reads a single number; `"max"` and a missing file give `None`.
fn read_u64_opt(path: &Path) -> Result<Option<u64>> {
    let Some(text) = read_opt(path)? else {
        return Ok(None);
    };
    let t = text.trim();
    if t == "max" {
        return Ok(None);
    }
    t.parse().map(Some).map_err(|_| Error::Parse {
        path: path.to_path_buf(),
        content: t.to_string(),
    })
}

fn read_i128(path: &Path) -> Result<i128> {
    let text = read_file(path)?;
    text.trim().parse().map_err(|_| Error::Parse {
        path: path.to_path_buf(),
        content: text.trim().to_string(),
    })
}

/// Looks `key` up in a flat-keyed file (`key value` per line).
fn keyed(path: &Path, text: &str, key: &str) -> Result<Option<u64>> {
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if it.next() == Some(key) {
            let v = it.next().unwrap_or("");
            return v.parse().map(Some).map_err(|_| Error::Parse {
                path: path.to_path_buf(),
                content: line.to_string(),
            });
        }
    }
    Ok(None)
}

/// Writes an interface file. The file must already exist, as in a real cgroupfs.
fn write_file(path: &Path, value: &str) -> Result<()> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

/// Writes a controller's interface file, reporting a missing file as a missing
/// controller.
fn write_ctl(
    dir: &Path,
    file: &str,
    value: &str,
    cg: &Cgroup,
    controller: &'static str,
) -> Result<()> {
    let path = dir.join(file);
    match write_file(&path, value) {
        Err(Error::Write { source, .. })
            if source.kind() == io::ErrorKind::NotFound && dir.is_dir() =>
        {
            Err(cg.missing(controller))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{CpuResources, IoResources, MemoryResources, PidsResources};

    const MIB: i64 = 1 << 20;

    fn put(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn get(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    /// A fake v2 cgroupfs with `a/b` already present, its interface files in place.
    fn fake_v2() -> (tempfile::TempDir, Host) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        put(&root.join("cgroup.controllers"), "memory\n");
        put(&root.join("cgroup.subtree_control"), "");
        put(&root.join("a/cgroup.controllers"), "memory\n");
        put(&root.join("a/cgroup.subtree_control"), "");
        let b = root.join("a/b");
        for (f, v) in [
            ("cgroup.procs", "12\n7\n"),
            ("cgroup.freeze", "0\n"),
            ("cgroup.events", "populated 1\nfrozen 0\n"),
            ("cgroup.kill", ""),
            ("memory.max", "max\n"),
            ("memory.swap.max", "max\n"),
            ("memory.low", "0\n"),
            ("memory.current", "4096\n"),
            ("memory.peak", "8192\n"),
            ("memory.stat", "anon 1024\nfile 3072\nactive_file 2048\ninactive_file 1024\n"),
            ("memory.events", "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\noom_group_kill 0\n"),
            ("cpu.weight", "100\n"),
            ("cpu.max", "20000 100000\n"),
            (
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 3\nnr_throttled 2\nthrottled_usec 77\n",
            ),
            ("cpuset.cpus", ""),
            ("cpuset.mems", ""),
            ("pids.max", "max\n"),
            ("pids.current", "2\n"),
            ("io.weight", "default 100\n"),
        ] {
            put(&b.join(f), v);
        }
        put(&b.join("c/cgroup.procs"), "3\n");
        let host = Host::v2(root);
        (tmp, host)
    }

    #[test]
    fn paths_are_validated() {
        let host = Host::v2("/nonexistent");
        assert_eq!(
            Cgroup::new(&host, "/kcore/x").unwrap().path(),
            Path::new("kcore/x")
        );
        for bad in ["", "/", "../x", "a/../../b"] {
            assert!(
                matches!(Cgroup::new(&host, bad), Err(Error::InvalidPath { .. })),
                "{bad:?}"
            );
        }
        let cg = Cgroup::new(&host, "k").unwrap();
        assert!(matches!(cg.child("/abs"), Err(Error::InvalidPath { .. })));
        assert!(matches!(
            Cgroup::open(&host, "k"),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn v2_create_enables_controllers_in_ancestors() {
        let (tmp, host) = fake_v2();
        let cg = Cgroup::create(&host, "a/b/new").unwrap();
        assert!(tmp.path().join("a/b/new").is_dir());
        assert_eq!(get(&tmp.path().join("cgroup.subtree_control")), "+memory");
        assert_eq!(get(&tmp.path().join("a/cgroup.subtree_control")), "+memory");
        assert_eq!(cg.dirs(), vec![tmp.path().join("a/b/new")]);
        assert!(Cgroup::open(&host, "a/b/new").is_ok());
    }

    #[test]
    fn v2_set_resources_converts_oci_values() {
        let (tmp, host) = fake_v2();
        let b = tmp.path().join("a/b");
        let cg = Cgroup::new(&host, "a/b").unwrap();
        let res = Resources {
            memory: MemoryResources {
                limit: Some(64 * MIB),
                swap: Some(96 * MIB),
                reservation: Some(16 * MIB),
                // v2 has no per-cgroup swappiness or OOM-killer switch: left alone.
                swappiness: Some(10),
                oom_kill_disable: Some(true),
                ..MemoryResources::default()
            },
            cpu: CpuResources {
                shares: Some(1024),
                quota: Some(50_000),
                period: Some(100_000),
                cpus: Some("0-1".into()),
                mems: Some("0".into()),
                ..CpuResources::default()
            },
            pids: PidsResources { max: Some(32) },
            io: IoResources {
                weight: Some(500),
                ..IoResources::default()
            },
            ..Resources::default()
        };
        cg.set_resources(&res).unwrap();
        assert_eq!(get(&b.join("memory.max")), (64 * MIB).to_string());
        assert_eq!(get(&b.join("memory.swap.max")), (32 * MIB).to_string());
        assert_eq!(get(&b.join("memory.low")), (16 * MIB).to_string());
        assert_eq!(get(&b.join("cpu.weight")), "100");
        assert_eq!(get(&b.join("cpu.max")), "50000 100000");
        assert_eq!(get(&b.join("cpuset.cpus")), "0-1");
        assert_eq!(get(&b.join("cpuset.mems")), "0");
        assert_eq!(get(&b.join("pids.max")), "32");
        assert_eq!(get(&b.join("io.weight")), "default 4950");
        assert!(!b.join("memory.swappiness").exists());
        assert!(!b.join("memory.oom_control").exists());

        // Unlimited values become "max"; a lone period keeps the current quota.
        let mut res = Resources::default();
        res.memory.limit = Some(-1);
        res.pids.max = Some(-1);
        res.cpu.quota = Some(-1);
        cg.set_resources(&res).unwrap();
        assert_eq!(get(&b.join("memory.max")), "max");
        assert_eq!(get(&b.join("memory.swap.max")), "max");
        assert_eq!(get(&b.join("pids.max")), "max");
        assert_eq!(get(&b.join("cpu.max")), "max");
        put(&b.join("cpu.max"), "20000 100000\n");
        let mut res = Resources::default();
        res.cpu.period = Some(50_000);
        cg.set_resources(&res).unwrap();
        assert_eq!(get(&b.join("cpu.max")), "20000 50000");

        // With BFQ the blkio weight is written unconverted.
        put(&b.join("io.bfq.weight"), "100\n");
        let mut res = Resources::default();
        res.io.weight = Some(500);
        cg.set_resources(&res).unwrap();
        assert_eq!(get(&b.join("io.bfq.weight")), "500");
    }

    #[test]
    fn v2_refuses_bad_or_unsupported_limits() {
        let (tmp, host) = fake_v2();
        let cg = Cgroup::new(&host, "a/b").unwrap();
        let mut res = Resources::default();
        res.memory.limit = Some(64 * MIB);
        res.memory.swap = Some(32 * MIB);
        assert!(matches!(
            cg.set_resources(&res),
            Err(Error::InvalidValue {
                field: "memory.swap",
                ..
            })
        ));
        fs::remove_file(tmp.path().join("a/b/pids.max")).unwrap();
        let mut res = Resources::default();
        res.pids.max = Some(10);
        match cg.set_resources(&res) {
            Err(Error::ControllerMissing { controller, path }) => {
                assert_eq!(controller, "pids");
                assert_eq!(path, Path::new("a/b"));
            }
            other => panic!("expected ControllerMissing, got {other:?}"),
        }
    }

    #[test]
    fn v2_stats_and_procs() {
        let (_tmp, host) = fake_v2();
        let cg = Cgroup::new(&host, "a/b").unwrap();
        let s = cg.stats().unwrap();
        assert_eq!(s.memory.usage, Some(4096));
        assert_eq!(s.memory.peak, Some(8192));
        assert_eq!(s.memory.oom, Some(2));
        assert_eq!(s.memory.oom_kill, Some(1));
        assert_eq!(s.memory.inactive_file, Some(1024));
        assert_eq!(s.memory.working_set(), Some(3072));
        assert_eq!(s.cpu.usage_usec, Some(1500));
        assert_eq!(s.cpu.user_usec, Some(1000));
        assert_eq!(s.cpu.system_usec, Some(500));
        assert_eq!(s.cpu.nr_periods, Some(3));
        assert_eq!(s.cpu.nr_throttled, Some(2));
        assert_eq!(s.cpu.throttled_usec, Some(77));
        assert_eq!(s.pids.current, Some(2));
        assert_eq!(s.pids.max, None);
        assert_eq!(cg.procs().unwrap(), vec![7, 12]);
        assert_eq!(cg.procs_recursive().unwrap(), vec![3, 7, 12]);
    }

    #[test]
    fn v2_freeze_waits_for_frozen_and_thaws() {
        let (tmp, host) = fake_v2();
        let b = tmp.path().join("a/b");
        let cg = Cgroup::new(&host, "a/b").unwrap();
        assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
        // The kernel never reports frozen: time out, and leave it thawed.
        let err = cg.freeze_timeout(Duration::from_millis(30)).unwrap_err();
        assert!(matches!(err, Error::FreezeTimeout { .. }), "{err}");
        assert_eq!(get(&b.join("cgroup.freeze")), "0");
        // The kernel reports frozen.
        put(&b.join("cgroup.events"), "populated 1\nfrozen 1\n");
        cg.freeze().unwrap();
        assert_eq!(get(&b.join("cgroup.freeze")), "1");
        assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
        cg.thaw().unwrap();
        assert_eq!(get(&b.join("cgroup.freeze")), "0");
    }

    #[test]
    fn v2_kill_uses_cgroup_kill() {
        let (tmp, host) = fake_v2();
        let cg = Cgroup::new(&host, "a/b").unwrap();
        cg.kill().unwrap();
        assert_eq!(get(&tmp.path().join("a/b/cgroup.kill")), "1");
        // Nothing was frozen on the way.
        assert_eq!(get(&tmp.path().join("a/b/cgroup.freeze")), "0\n");
    }

    #[test]
    fn v1_create_copies_cpuset_and_orders_memory_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        put(&r.join("cpuset/cpuset.cpus"), "0-3\n");
        put(&r.join("cpuset/cpuset.mems"), "0\n");
        for d in ["cpuset/k", "cpuset/k/c"] {
            put(&r.join(d).join("cpuset.cpus"), "\n");
            put(&r.join(d).join("cpuset.mems"), "\n");
        }
        let unlimited = "9223372036854771712\n";
        put(&r.join("memory/k/c/memory.limit_in_bytes"), unlimited);
        put(&r.join("memory/k/c/memory.memsw.limit_in_bytes"), unlimited);
        put(&r.join("memory/k/c/memory.soft_limit_in_bytes"), unlimited);
        let host = Host::v1([
            (Controller::Cpuset, r.join("cpuset")),
            (Controller::Memory, r.join("memory")),
        ]);
        assert_eq!(host.mode(), CgroupMode::V1);
        let cg = Cgroup::create(&host, "k/c").unwrap();
        assert_eq!(get(&r.join("cpuset/k/cpuset.cpus")), "0-3");
        assert_eq!(get(&r.join("cpuset/k/c/cpuset.cpus")), "0-3");
        assert_eq!(get(&r.join("cpuset/k/c/cpuset.mems")), "0");

        let mut res = Resources::default();
        res.memory.limit = Some(64 * MIB);
        res.memory.swap = Some(64 * MIB);
        res.memory.reservation = Some(MIB);
        cg.set_resources(&res).unwrap();
        let mem = r.join("memory/k/c");
        assert_eq!(
            get(&mem.join("memory.limit_in_bytes")),
            (64 * MIB).to_string()
        );
        assert_eq!(
            get(&mem.join("memory.memsw.limit_in_bytes")),
            (64 * MIB).to_string()
        );
        assert_eq!(
            get(&mem.join("memory.soft_limit_in_bytes")),
            MIB.to_string()
        );
        // Unlimited memory also lifts memsw.
        let mut res = Resources::default();
        res.memory.limit = Some(-1);
        cg.set_resources(&res).unwrap();
        assert_eq!(get(&mem.join("memory.limit_in_bytes")), "-1");
        assert_eq!(get(&mem.join("memory.memsw.limit_in_bytes")), "-1");
        // No pids hierarchy on this host.
        let mut res = Resources::default();
        res.pids.max = Some(1);
        assert!(matches!(
            cg.set_resources(&res),
            Err(Error::ControllerMissing {
                controller: "pids",
                ..
            })
        ));
    }

    /// v1 `memory.swappiness` and `memory.oom_control`: (request, files present) →
    /// what is written, or the error.
    #[test]
    fn v1_stats_working_set_and_cpu_in_usec() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        put(&r.join("memory/k/memory.usage_in_bytes"), "10000\n");
        put(
            &r.join("memory/k/memory.stat"),
            "cache 6000\ninactive_file 1\ntotal_cache 6000\ntotal_inactive_file 4000\n",
        );
        put(&r.join("cpuacct/k/cpuacct.usage"), "2500000\n");
        let host = Host::v1([
            (Controller::Memory, r.join("memory")),
            (Controller::Cpuacct, r.join("cpuacct")),
        ]);
        let s = Cgroup::open(&host, "k").unwrap().stats().unwrap();
        // v1 counts the hierarchy in the total_ keys, as cAdvisor reads them
        assert_eq!(s.memory.inactive_file, Some(4000));
        assert_eq!(s.memory.working_set(), Some(6000));
        assert_eq!(s.cpu.usage_usec, Some(2500));
    }

    #[test]
    fn v1_swappiness_and_oom_killer() {
        #[derive(Debug)]
        enum Want {
            Wrote(&'static str, &'static str),
            Untouched,
            Missing(&'static str),
            Invalid(&'static str),
        }
        let cases: [(Option<u64>, Option<bool>, bool, Want); 8] = [
            (Some(0), None, true, Want::Wrote("memory.swappiness", "0")),
            (Some(60), None, true, Want::Wrote("memory.swappiness", "60")),
            (
                Some(100),
                None,
                true,
                Want::Wrote("memory.swappiness", "100"),
            ),
            (Some(101), None, true, Want::Invalid("memory.swappiness")),
            (Some(10), None, false, Want::Missing("memory (swappiness)")),
            (
                None,
                Some(true),
                true,
                Want::Wrote("memory.oom_control", "1"),
            ),
            (None, Some(false), true, Want::Untouched),
            (
                None,
                Some(true),
                false,
                Want::Missing("memory (oom_control)"),
            ),
        ];
        for (i, (swappiness, oom_kill_disable, files, want)) in cases.into_iter().enumerate() {
            let tmp = tempfile::tempdir().unwrap();
            let mem = tmp.path().join("memory/k");
            put(&mem.join("memory.limit_in_bytes"), "9223372036854771712\n");
            if files {
                put(&mem.join("memory.swappiness"), "60\n");
                put(
                    &mem.join("memory.oom_control"),
                    "oom_kill_disable 0\nunder_oom 0\n",
                );
            }
            let host = Host::v1([(Controller::Memory, tmp.path().join("memory"))]);
            let cg = Cgroup::new(&host, "k").unwrap();
            let mut res = Resources::default();
            res.memory.swappiness = swappiness;
            res.memory.oom_kill_disable = oom_kill_disable;
            let got = cg.set_resources(&res);
            let case = format!("case {i}: {want:?} got {got:?}");
            match want {
                Want::Wrote(file, value) => {
                    assert!(got.is_ok(), "{case}");
                    assert_eq!(get(&mem.join(file)), value, "{case}");
                }
                Want::Untouched => {
                    assert!(got.is_ok(), "{case}");
                    assert_eq!(get(&mem.join("memory.swappiness")), "60\n", "{case}");
                    assert!(get(&mem.join("memory.oom_control")).starts_with("oom_kill_disable 0"));
                }
                Want::Missing(what) => {
                    assert!(
                        matches!(&got, Err(Error::ControllerMissing { controller, .. }) if *controller == what),
                        "{case}"
                    );
                    let msg = got.unwrap_err().to_string();
                    assert_eq!(
                        msg,
                        format!("controller {what} is not available for cgroup k")
                    );
                }
                Want::Invalid(field) => {
                    assert!(
                        matches!(&got, Err(Error::InvalidValue { field: f, .. }) if *f == field),
                        "{case}"
                    );
                    assert_eq!(get(&mem.join("memory.swappiness")), "60\n", "{case}");
                }
            }
        }
    }

    /// The rest of `linux.resources` on fake v1, hybrid and v2 cgroupfs: (case, host
    /// mode, interface files present (v1: `<controller>/<file>`), v2 controllers,
    /// limits) → the files written, or the error. Controllers this host lacks (hugetlb,
    /// net_cls, net_prio, rdma on v1) are proven here.
    #[test]
    fn every_other_resource_per_mode() {
        use crate::resources::{
            HugetlbLimit, NetworkResources, RdmaLimit, ThrottleDevice, WeightDevice,
        };
        #[derive(Debug)]
        enum Want {
            Wrote(Vec<(&'static str, &'static str)>),
            Missing(&'static str),
            NotSupported(&'static str, &'static str),
            Invalid(&'static str),
        }
        use Want::*;
        let dev = |rate| ThrottleDevice {
            major: 8,
            minor: 0,
            rate,
        };
        type Case = (
            &'static str,
            CgroupMode,
            &'static [&'static str],
            &'static str,
            Box<dyn Fn(&mut Resources)>,
            Want,
        );
        let cases: Vec<Case> = vec![
            (
                "v1 kernel TCP",
                CgroupMode::V1,
                &["memory/memory.kmem.tcp.limit_in_bytes"],
                "",
                Box::new(|r| r.memory.kernel_tcp = Some(MIB)),
                Wrote(vec![("memory/memory.kmem.tcp.limit_in_bytes", "1048576")]),
            ),
            (
                "v1 kernel TCP, no kmem files",
                CgroupMode::V1,
                &["memory/memory.limit_in_bytes"],
                "",
                Box::new(|r| r.memory.kernel_tcp = Some(MIB)),
                Missing("memory (kernel TCP)"),
            ),
            (
                "v1 realtime",
                CgroupMode::V1,
                &["cpu/cpu.rt_period_us", "cpu/cpu.rt_runtime_us"],
                "",
                Box::new(|r| {
                    r.cpu.realtime_period = Some(1_000_000);
                    r.cpu.realtime_runtime = Some(950_000);
                }),
                Wrote(vec![
                    ("cpu/cpu.rt_period_us", "1000000"),
                    ("cpu/cpu.rt_runtime_us", "950000"),
                ]),
            ),
            (
                "v1 realtime without RT group scheduling",
                CgroupMode::V1,
                &["cpu/cpu.shares"],
                "",
                Box::new(|r| r.cpu.realtime_runtime = Some(1000)),
                Missing("cpu (realtime)"),
            ),
            (
                "v1 blkio weights",
                CgroupMode::V1,
                &[
                    "blkio/blkio.leaf_weight",
                    "blkio/blkio.weight_device",
                    "blkio/blkio.leaf_weight_device",
                ],
                "",
                Box::new(|r| {
                    r.io.leaf_weight = Some(700);
                    r.io.weight_device = vec![WeightDevice {
                        major: 8,
                        minor: 0,
                        weight: Some(500),
                        leaf_weight: Some(300),
                    }];
                }),
                Wrote(vec![
                    ("blkio/blkio.leaf_weight", "700"),
                    ("blkio/blkio.weight_device", "8:0 500"),
                    ("blkio/blkio.leaf_weight_device", "8:0 300"),
                ]),
            ),
            (
                "v1 blkio device weight without CFQ/BFQ",
                CgroupMode::V1,
                &["blkio/blkio.throttle.read_bps_device"],
                "",
                Box::new(|r| {
                    r.io.weight_device = vec![WeightDevice {
                        major: 8,
                        minor: 0,
                        weight: Some(500),
                        leaf_weight: None,
                    }]
                }),
                Missing("blkio weight"),
            ),
            (
                "v1 blkio throttles",
                CgroupMode::V1,
                &[
                    "blkio/blkio.throttle.read_bps_device",
                    "blkio/blkio.throttle.write_bps_device",
                    "blkio/blkio.throttle.read_iops_device",
                    "blkio/blkio.throttle.write_iops_device",
                ],
                "",
                Box::new(move |r| {
                    r.io.throttle_read_bps = vec![dev(1 << 20)];
                    r.io.throttle_write_bps = vec![dev(2 << 20)];
                    r.io.throttle_read_iops = vec![dev(100)];
                    r.io.throttle_write_iops = vec![dev(0)];
                }),
                Wrote(vec![
                    ("blkio/blkio.throttle.read_bps_device", "8:0 1048576"),
                    ("blkio/blkio.throttle.write_bps_device", "8:0 2097152"),
                    ("blkio/blkio.throttle.read_iops_device", "8:0 100"),
                    ("blkio/blkio.throttle.write_iops_device", "8:0 0"),
                ]),
            ),
            (
                "v1 blkio throttle, no blkio hierarchy",
                CgroupMode::V1,
                &["memory/memory.limit_in_bytes"],
                "",
                Box::new(move |r| r.io.throttle_read_bps = vec![dev(1)]),
                Missing("blkio"),
            ),
            (
                "v1 hugetlb",
                CgroupMode::V1,
                &[
                    "hugetlb/hugetlb.2MB.limit_in_bytes",
                    "hugetlb/hugetlb.2MB.rsvd.limit_in_bytes",
                    "hugetlb/hugetlb.1GB.limit_in_bytes",
                ],
                "",
                Box::new(|r| {
                    r.hugetlb = vec![HugetlbLimit {
                        page_size: "2MB".into(),
                        limit: 4 << 20,
                    }]
                }),
                Wrote(vec![
                    ("hugetlb/hugetlb.2MB.limit_in_bytes", "4194304"),
                    ("hugetlb/hugetlb.2MB.rsvd.limit_in_bytes", "4194304"),
                    ("hugetlb/hugetlb.1GB.limit_in_bytes", ""),
                ]),
            ),
            (
                "v1 hugetlb, page size not offered",
                CgroupMode::V1,
                &["hugetlb/hugetlb.2MB.limit_in_bytes"],
                "",
                Box::new(|r| {
                    r.hugetlb = vec![HugetlbLimit {
                        page_size: "1GB".into(),
                        limit: 1 << 30,
                    }]
                }),
                Invalid("hugepageLimits"),
            ),
            (
                "v1 hugetlb, no hugetlb hierarchy",
                CgroupMode::V1,
                &["memory/memory.limit_in_bytes"],
                "",
                Box::new(|r| {
                    r.hugetlb = vec![HugetlbLimit {
                        page_size: "2MB".into(),
                        limit: 1,
                    }]
                }),
                Missing("hugetlb"),
            ),
            (
                "v1 net_cls",
                CgroupMode::V1,
                &["net_cls/net_cls.classid"],
                "",
                Box::new(|r| r.network.class_id = Some(0x10_0001)),
                Wrote(vec![("net_cls/net_cls.classid", "1048577")]),
            ),
            (
                "v1 net_prio (one write per interface)",
                CgroupMode::V1,
                &["net_prio/net_prio.ifpriomap"],
                "",
                Box::new(|r| r.network.priorities = vec![("lo".into(), 1), ("eth0".into(), 5)]),
                Wrote(vec![("net_prio/net_prio.ifpriomap", "eth0 5")]),
            ),
            (
                "v1 net_cls, no hierarchy",
                CgroupMode::V1,
                &["memory/memory.limit_in_bytes"],
                "",
                Box::new(|r| {
                    r.network = NetworkResources {
                        class_id: Some(1),
                        priorities: vec![],
                    }
                }),
                Missing("net_cls"),
            ),
            (
                "v1 net_prio, no hierarchy",
                CgroupMode::V1,
                &["net_cls/net_cls.classid"],
                "",
                Box::new(|r| r.network.priorities = vec![("eth0".into(), 1)]),
                Missing("net_prio"),
            ),
            (
                "v1 rdma",
                CgroupMode::V1,
                &["rdma/rdma.max"],
                "",
                Box::new(|r| {
                    r.rdma.insert(
                        "mlx5_0".into(),
                        RdmaLimit {
                            hca_handles: Some(3),
                            hca_objects: None,
                        },
                    );
                }),
                Wrote(vec![(
                    "rdma/rdma.max",
                    "mlx5_0 hca_handle=3 hca_object=max",
                )]),
            ),
            (
                "v1 rdma, no hierarchy",
                CgroupMode::V1,
                &["memory/memory.limit_in_bytes"],
                "",
                Box::new(|r| {
                    r.rdma.insert("mlx5_0".into(), RdmaLimit::default());
                }),
                Missing("rdma"),
            ),
            (
                "v1 unified",
                CgroupMode::V1,
                &["memory/memory.limit_in_bytes"],
                "",
                Box::new(|r| {
                    r.unified.insert("memory.high".into(), "1G".into());
                }),
                NotSupported("unified", "v1"),
            ),
            (
                "hybrid unified",
                CgroupMode::Hybrid,
                &["memory/memory.limit_in_bytes"],
                "",
                Box::new(|r| {
                    r.unified.insert("memory.high".into(), "1G".into());
                }),
                NotSupported("unified", "hybrid"),
            ),
            (
                "v2 kernel TCP and leaf weights have no file: left alone",
                CgroupMode::V2,
                &["io.weight"],
                "io",
                Box::new(|r| {
                    r.memory.kernel_tcp = Some(MIB);
                    r.io.leaf_weight = Some(500);
                    r.io.weight_device = vec![WeightDevice {
                        major: 8,
                        minor: 0,
                        weight: None,
                        leaf_weight: Some(300),
                    }];
                }),
                Wrote(vec![("io.weight", "")]),
            ),
            (
                "v2 realtime",
                CgroupMode::V2,
                &["cpu.max"],
                "cpu",
                Box::new(|r| r.cpu.realtime_runtime = Some(1000)),
                NotSupported("cpu.realtimeRuntime/realtimePeriod", "v2"),
            ),
            (
                "v2 device weight",
                CgroupMode::V2,
                &["io.weight"],
                "io",
                Box::new(|r| {
                    r.io.weight_device = vec![WeightDevice {
                        major: 8,
                        minor: 16,
                        weight: Some(500),
                        leaf_weight: None,
                    }]
                }),
                Wrote(vec![("io.weight", "8:16 4950")]),
            ),
            (
                "v2 device weight with BFQ",
                CgroupMode::V2,
                &["io.weight", "io.bfq.weight"],
                "io",
                Box::new(|r| {
                    r.io.weight_device = vec![WeightDevice {
                        major: 8,
                        minor: 16,
                        weight: Some(500),
                        leaf_weight: None,
                    }]
                }),
                Wrote(vec![("io.bfq.weight", "8:16 500"), ("io.weight", "")]),
            ),
            (
                "v2 read bps",
                CgroupMode::V2,
                &["io.max"],
                "io",
                Box::new(move |r| r.io.throttle_read_bps = vec![dev(1 << 20)]),
                Wrote(vec![("io.max", "8:0 rbps=1048576")]),
            ),
            (
                "v2 write iops 0 lifts the limit",
                CgroupMode::V2,
                &["io.max"],
                "io",
                Box::new(move |r| r.io.throttle_write_iops = vec![dev(0)]),
                Wrote(vec![("io.max", "8:0 wiops=max")]),
            ),
            (
                "v2 throttle, no io controller",
                CgroupMode::V2,
                &["memory.max"],
                "memory",
                Box::new(move |r| r.io.throttle_read_iops = vec![dev(5)]),
                Missing("io"),
            ),
            (
                "v2 hugetlb",
                CgroupMode::V2,
                &["hugetlb.2MB.max", "hugetlb.2MB.rsvd.max"],
                "hugetlb",
                Box::new(|r| {
                    r.hugetlb = vec![HugetlbLimit {
                        page_size: "2MB".into(),
                        limit: 8 << 20,
                    }]
                }),
                Wrote(vec![
                    ("hugetlb.2MB.max", "8388608"),
                    ("hugetlb.2MB.rsvd.max", "8388608"),
                ]),
            ),
            (
                "v2 hugetlb, controller not enabled",
                CgroupMode::V2,
                &["hugetlb.2MB.max"],
                "memory",
                Box::new(|r| {
                    r.hugetlb = vec![HugetlbLimit {
                        page_size: "2MB".into(),
                        limit: 1,
                    }]
                }),
                Missing("hugetlb"),
            ),
            (
                "v2 net_cls",
                CgroupMode::V2,
                &["memory.max"],
                "memory",
                Box::new(|r| r.network.class_id = Some(1)),
                Missing("net_cls"),
            ),
            (
                "v2 net_prio",
                CgroupMode::V2,
                &["memory.max"],
                "memory",
                Box::new(|r| r.network.priorities = vec![("eth0".into(), 1)]),
                Missing("net_prio"),
            ),
            (
                "v2 rdma",
                CgroupMode::V2,
                &["rdma.max"],
                "rdma",
                Box::new(|r| {
                    r.rdma.insert(
                        "mlx4_0".into(),
                        RdmaLimit {
                            hca_handles: Some(2),
                            hca_objects: Some(2000),
                        },
                    );
                }),
                Wrote(vec![("rdma.max", "mlx4_0 hca_handle=2 hca_object=2000")]),
            ),
            (
                "v2 rdma, controller not enabled",
                CgroupMode::V2,
                &["rdma.max"],
                "memory",
                Box::new(|r| {
                    r.rdma.insert("mlx4_0".into(), RdmaLimit::default());
                }),
                Missing("rdma"),
            ),
            (
                "v2 unified wins over the field it overlaps",
                CgroupMode::V2,
                &["memory.max", "memory.high"],
                "memory",
                Box::new(|r| {
                    r.memory.limit = Some(64 * MIB);
                    r.unified.insert("memory.max".into(), "max".into());
                    r.unified.insert("memory.high".into(), "1G".into());
                }),
                Wrote(vec![("memory.max", "max"), ("memory.high", "1G")]),
            ),
            (
                "v2 unified file missing",
                CgroupMode::V2,
                &["memory.max"],
                "memory",
                Box::new(|r| {
                    r.unified.insert("hugetlb.2MB.max".into(), "0".into());
                }),
                Missing("hugetlb"),
            ),
            (
                "v2 unified key outside the cgroup",
                CgroupMode::V2,
                &["memory.max"],
                "memory",
                Box::new(|r| {
                    r.unified.insert("../memory.max".into(), "0".into());
                }),
                Invalid("unified"),
            ),
            (
                "v2 unified key without a controller",
                CgroupMode::V2,
                &["memory.max"],
                "memory",
                Box::new(|r| {
                    r.unified.insert("release_agent".into(), "/x".into());
                }),
                Invalid("unified"),
            ),
        ];
        for (name, mode, files, controllers, set, want) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path();
            let (host, base) = if mode == CgroupMode::V2 {
                put(
                    &root.join("k/cgroup.controllers"),
                    &format!("{controllers}\n"),
                );
                (Host::v2(root), root.join("k"))
            } else {
                let mut mounts = Vec::new();
                for f in files {
                    let c = f.split('/').next().unwrap();
                    let ctl = Controller::from_name(c).unwrap();
                    if !mounts.iter().any(|(x, _)| *x == ctl) {
                        mounts.push((ctl, root.join(c)));
                    }
                }
                let host = Host::v1(mounts);
                let host = if mode == CgroupMode::Hybrid {
                    fs::create_dir_all(root.join("unified/k")).unwrap();
                    host.with_unified(root.join("unified"))
                } else {
                    host
                };
                (host, root.to_path_buf())
            };
            for f in files {
                let p = if mode == CgroupMode::V2 {
                    base.join(f)
                } else {
                    let (c, file) = f.split_once('/').unwrap();
                    root.join(c).join("k").join(file)
                };
                put(&p, "");
            }
            assert_eq!(host.mode(), mode, "{name}");
            let cg = Cgroup::new(&host, "k").unwrap();
            let mut r = Resources::default();
            set(&mut r);
            let got = cg.set_resources(&r);
            let case = format!("{name}: want {want:?}, got {got:?}");
            match want {
                Wrote(expect) => {
                    assert!(got.is_ok(), "{case}");
                    for (f, v) in expect {
                        let p = if mode == CgroupMode::V2 {
                            base.join(f)
                        } else {
                            let (c, file) = f.split_once('/').unwrap();
                            root.join(c).join("k").join(file)
                        };
                        assert_eq!(get(&p), v, "{case}: {f}");
                    }
                }
                Missing(what) => {
                    assert!(
                        matches!(&got, Err(Error::ControllerMissing { controller, .. }) if *controller == what),
                        "{case}"
                    );
                    assert_eq!(
                        got.unwrap_err().to_string(),
                        format!("controller {what} is not available for cgroup k")
                    );
                }
                NotSupported(field, m) => {
                    let e = got.expect_err(&case);
                    assert!(
                        matches!(&e, Error::NotSupported { field: f, mode } if *f == field && *mode == m),
                        "{case}"
                    );
                    assert_eq!(
                        e.to_string(),
                        format!("{field} cannot be set on a cgroup {m} host")
                    );
                }
                Invalid(field) => {
                    assert!(
                        matches!(&got, Err(Error::InvalidValue { field: f, .. }) if *f == field),
                        "{case}"
                    );
                }
            }
        }
    }
}
