//! Host detection: which cgroup hierarchies are mounted, and where.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A cgroup controller (v1 subsystem / v2 controller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Controller {
    /// CPU scheduling: shares/weight, quota and period.
    Cpu,
    /// CPU accounting (v1 only; part of `cpu` on v2).
    Cpuacct,
    /// CPU and memory-node placement.
    Cpuset,
    /// Memory limits and accounting.
    Memory,
    /// Device access rules (v1 only; eBPF on v2).
    Devices,
    /// Freezing (v1 only; `cgroup.freeze` on v2).
    Freezer,
    /// Block I/O (v1 name of `io`).
    Blkio,
    /// Block I/O (v2).
    Io,
    /// Process-number limit.
    Pids,
    /// Huge page limits.
    Hugetlb,
    /// Network class id (v1 only).
    NetCls,
    /// Network priority (v1 only).
    NetPrio,
    /// perf_event grouping.
    PerfEvent,
    /// RDMA resources.
    Rdma,
    /// Miscellaneous scalar resources.
    Misc,
}

impl Controller {
    /// Every controller this crate knows.
    pub const ALL: [Controller; 15] = [
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Cpuset,
        Controller::Memory,
        Controller::Devices,
        Controller::Freezer,
        Controller::Blkio,
        Controller::Io,
        Controller::Pids,
        Controller::Hugetlb,
        Controller::NetCls,
        Controller::NetPrio,
        Controller::PerfEvent,
        Controller::Rdma,
        Controller::Misc,
    ];

    /// The kernel's name for the controller, e.g. `"memory"`.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Memory => "memory",
            Controller::Devices => "devices",
            Controller::Freezer => "freezer",
            Controller::Blkio => "blkio",
            Controller::Io => "io",
            Controller::Pids => "pids",
            Controller::Hugetlb => "hugetlb",
            Controller::NetCls => "net_cls",
            Controller::NetPrio => "net_prio",
            Controller::PerfEvent => "perf_event",
            Controller::Rdma => "rdma",
            Controller::Misc => "misc",
        }
    }

    /// Parses a kernel controller name; `None` for unknown names.
    pub fn from_name(name: &str) -> Option<Controller> {
        Controller::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The cgroup layout of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CgroupMode {
    /// Only v1 (legacy) hierarchies.
    V1,
    /// Only the v2 unified hierarchy.
    V2,
    /// v1 controller hierarchies plus a v2 mount (which carries membership, not resources).
    Hybrid,
}

/// The cgroup hierarchies of a host: where each v1 controller is mounted and where the
/// v2 unified hierarchy is, if anywhere.
///
/// Build one with [`Host::detect`] (the running system), [`Host::from_mountinfo`] (a
/// mount table's text), [`Host::probe`] (a cgroupfs root directory, real or fake), or the
/// explicit constructors [`Host::v2`] and [`Host::v1`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Host {
    v1: BTreeMap<Controller, PathBuf>,
    named: BTreeMap<String, PathBuf>,
    unified: Option<PathBuf>,
}

impl Host {
    /// Detects the running host's hierarchies from `/proc/self/mountinfo`.
    ///
    /// This reads the whole mount table, which costs more the more mounts there are
    /// (a node with many containers has hundreds): code that needs the hierarchies
    /// often should use [`Host::system`].
    pub fn detect() -> Result<Host> {
        Host::from_mountinfo_file("/proc/self/mountinfo")
    }

    /// The running host's hierarchies, detected on the first successful call and
    /// remembered for the life of the process (cgroup file systems are mounted at
    /// boot, not while containers come and go). A failed detection is not
    /// remembered: the next call tries again.
    ///
    /// ```no_run
    /// let host = kcore_cgroup::Host::system()?;
    /// println!("{:?}", host.mode());
    /// # Ok::<(), kcore_cgroup::Error>(())
    /// ```
    pub fn system() -> Result<&'static Host> {
        static SYSTEM: std::sync::OnceLock<Host> = std::sync::OnceLock::new();
        if let Some(h) = SYSTEM.get() {
            return Ok(h);
        }
        let h = Host::detect()?;
        Ok(SYSTEM.get_or_init(|| h))
    }

    /// Detects hierarchies from a mountinfo file.
    pub fn from_mountinfo_file(path: impl AsRef<Path>) -> Result<Host> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|source| Error::Mountinfo {
            path: path.to_path_buf(),
            source,
        })?;
        let host = Host::from_mountinfo(&text);
        if host.is_empty() {
            return Err(Error::NoCgroupFs {
                path: path.to_path_buf(),
            });
        }
        Ok(host)
    }

    /// Parses the text of a mountinfo file (`proc(5)` format). Mounts that are not
    /// `cgroup` or `cgroup2` are ignored; when a hierarchy is mounted twice the first
    /// mount wins. The result is empty (see [`Host::is_empty`]) if nothing was found.
    pub fn from_mountinfo(text: &str) -> Host {
        let mut host = Host::default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            if sep < 5 || fields.len() < sep + 4 {
                continue;
            }
            let mount_point = PathBuf::from(unescape_octal(fields[4]));
            match fields[sep + 1] {
                "cgroup2" => {
                    host.unified.get_or_insert(mount_point);
                }
                "cgroup" => {
                    for opt in fields[sep + 3].split(',') {
                        if let Some(name) = opt.strip_prefix("name=") {
                            host.named
                                .entry(name.to_string())
                                .or_insert_with(|| mount_point.clone());
                        } else if let Some(c) = Controller::from_name(opt) {
                            host.v1.entry(c).or_insert_with(|| mount_point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        host
    }

    /// Detects hierarchies by looking inside a cgroupfs root directory such as
    /// `/sys/fs/cgroup` (or a fake one in a temp dir): a root holding `cgroup.controllers`
    /// is a v2 mount; otherwise each subdirectory holding `cgroup.controllers` is the
    /// unified mount, and each holding `cgroup.procs` is a v1 hierarchy whose controllers
    /// are read from its name (`cpu,cpuacct`) and its interface files (`memory.*`).
    /// Directories that name no controller become named hierarchies (`systemd`).
    pub fn probe(root: impl AsRef<Path>) -> Result<Host> {
        let root = root.as_ref();
        if root.join("cgroup.controllers").is_file() {
            return Ok(Host::v2(root));
        }
        let no_fs = || Error::NoCgroupFs {
            path: root.to_path_buf(),
        };
        let entries = fs::read_dir(root).map_err(|_| no_fs())?;
        let mut names: Vec<_> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut host = Host::default();
        for name in names {
            let dir = root.join(&name);
            if dir.join("cgroup.controllers").is_file() {
                host.unified.get_or_insert(dir);
                continue;
            }
            if !dir.join("cgroup.procs").is_file() {
                continue;
            }
            let mut found: Vec<Controller> =
                name.split(',').filter_map(Controller::from_name).collect();
            if let Ok(files) = fs::read_dir(&dir) {
                for f in files.filter_map(|e| e.ok()) {
                    let file = f.file_name().to_string_lossy().into_owned();
                    if let Some((prefix, _)) = file.split_once('.') {
                        if let Some(c) = Controller::from_name(prefix) {
                            found.push(c);
                        }
                    }
                }
            }
            if found.is_empty() {
                host.named.entry(name).or_insert(dir);
            } else {
                for c in found {
                    host.v1.entry(c).or_insert_with(|| dir.clone());
                }
            }
        }
        if host.is_empty() {
            return Err(no_fs());
        }
        Ok(host)
    }

    /// A pure v2 host whose unified hierarchy is mounted at `root`.
    pub fn v2(root: impl Into<PathBuf>) -> Host {
        Host {
            unified: Some(root.into()),
            ..Host::default()
        }
    }

    /// A v1 host with the given controller mounts (add a unified mount with
    /// [`Host::with_unified`] to make it hybrid).
    pub fn v1(mounts: impl IntoIterator<Item = (Controller, PathBuf)>) -> Host {
        Host {
            v1: mounts.into_iter().collect(),
            ..Host::default()
        }
    }

    /// Returns the host with its unified (v2) mount set to `root`.
    pub fn with_unified(mut self, root: impl Into<PathBuf>) -> Host {
        self.unified = Some(root.into());
        self
    }

    /// True if no hierarchy at all is known.
    pub fn is_empty(&self) -> bool {
        self.v1.is_empty() && self.named.is_empty() && self.unified.is_none()
    }

    /// The host's layout. A host with no v1 controller is [`CgroupMode::V2`].
    pub fn mode(&self) -> CgroupMode {
        match (self.v1.is_empty(), self.unified.is_some()) {
            (true, _) => CgroupMode::V2,
            (false, true) => CgroupMode::Hybrid,
            (false, false) => CgroupMode::V1,
        }
    }

    /// Where the v2 unified hierarchy is mounted.
    pub fn unified(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    /// Where a v1 controller's hierarchy is mounted.
    pub fn v1_mount(&self, controller: Controller) -> Option<&Path> {
        self.v1.get(&controller).map(PathBuf::as_path)
    }

    /// Every mounted v1 controller and its mount point.
    pub fn v1_controllers(&self) -> impl Iterator<Item = (Controller, &Path)> {
        self.v1.iter().map(|(c, p)| (*c, p.as_path()))
    }

    /// Named v1 hierarchies without controllers, such as `name=systemd`.
    pub fn named_hierarchies(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.named.iter().map(|(n, p)| (n.as_str(), p.as_path()))
    }

    /// The distinct hierarchy roots a [`Cgroup`](crate::Cgroup) lives in: every v1
    /// controller mount (a co-mounted `cpu,cpuacct` counts once) plus the unified mount.
    /// Named hierarchies are not managed.
    pub fn managed_roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = Vec::new();
        for p in self.v1.values().chain(self.unified.iter()) {
            if !roots.contains(p) {
                roots.push(p.clone());
            }
        }
        roots
    }

    /// Every hierarchy root including named ones: use it to check that nothing was
    /// left behind.
    pub fn all_roots(&self) -> Vec<PathBuf> {
        let mut roots = self.managed_roots();
        for p in self.named.values() {
            if !roots.contains(p) {
                roots.push(p.clone());
            }
        }
        roots
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
23 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn mountinfo_hybrid() {
        let host = Host::from_mountinfo(HYBRID);
        assert_eq!(host.mode(), CgroupMode::Hybrid);
        assert_eq!(
            host.v1_mount(Controller::Cpu),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            host.v1_mount(Controller::Cpuacct),
            host.v1_mount(Controller::Cpu)
        );
        assert_eq!(host.v1_mount(Controller::Pids), None);
        assert_eq!(host.unified(), Some(Path::new("/sys/fs/cgroup/unified")));
        let named: Vec<_> = host.named_hierarchies().collect();
        assert_eq!(
            named,
            vec![("systemd", Path::new("/sys/fs/cgroup/systemd"))]
        );
        // cpu,cpuacct counted once; named not managed.
        assert_eq!(host.managed_roots().len(), 4);
        assert_eq!(host.all_roots().len(), 5);
    }

    #[test]
    fn mountinfo_v2_and_v1_and_empty() {
        let v2 = Host::from_mountinfo(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(v2.mode(), CgroupMode::V2);
        assert_eq!(v2.unified(), Some(Path::new("/sys/fs/cgroup")));
        let v1 =
            Host::from_mountinfo("35 31 0:32 / /cg/mem\\040ory rw - cgroup cgroup rw,memory\n");
        assert_eq!(v1.mode(), CgroupMode::V1);
        assert_eq!(
            v1.v1_mount(Controller::Memory),
            Some(Path::new("/cg/mem ory"))
        );
        let none = Host::from_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda1 rw\ngarbage\n");
        assert!(none.is_empty());
    }

    #[test]
    fn detect_running_host() {
        // Whatever the host is, detection must find some hierarchy on Linux.
        let host = Host::detect().expect("detect");
        assert!(!host.is_empty());
    }

    #[test]
    fn probe_fake_v2_and_hybrid() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        assert_eq!(Host::probe(tmp.path()).unwrap(), Host::v2(tmp.path()));

        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        for (dir, file) in [
            ("cpu,cpuacct", "cpu.shares"),
            ("memory", "memory.limit_in_bytes"),
            ("freezer", "notify_on_release"),
            ("systemd", "notify_on_release"),
        ] {
            fs::create_dir(r.join(dir)).unwrap();
            fs::write(r.join(dir).join("cgroup.procs"), "").unwrap();
            fs::write(r.join(dir).join(file), "").unwrap();
        }
        fs::create_dir(r.join("unified")).unwrap();
        fs::write(r.join("unified/cgroup.controllers"), "").unwrap();
        fs::create_dir(r.join("not-a-cgroup")).unwrap();
        let host = Host::probe(r).unwrap();
        assert_eq!(host.mode(), CgroupMode::Hybrid);
        assert_eq!(
            host.v1_mount(Controller::Cpuacct),
            Some(&*r.join("cpu,cpuacct"))
        );
        assert_eq!(host.v1_mount(Controller::Memory), Some(&*r.join("memory")));
        assert_eq!(
            host.v1_mount(Controller::Freezer),
            Some(&*r.join("freezer"))
        );
        assert_eq!(host.unified(), Some(&*r.join("unified")));
        assert_eq!(host.named_hierarchies().count(), 1);

        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            Host::probe(empty.path()),
            Err(Error::NoCgroupFs { .. })
        ));
    }
}
