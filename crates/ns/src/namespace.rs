//! Namespace kinds, sets of them, and joining/unsharing for the calling thread.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `CLONE_NEWTIME`, not exported by every libc version.
pub(crate) const CLONE_NEWTIME: libc::c_int = 0x80;

/// A Linux namespace kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Namespace {
    /// Mount points (`CLONE_NEWNS`, `mnt`).
    Mount,
    /// Hostname and NIS domain name (`CLONE_NEWUTS`, `uts`).
    Uts,
    /// System V IPC and POSIX message queues (`CLONE_NEWIPC`, `ipc`).
    Ipc,
    /// Network devices, stacks, ports (`CLONE_NEWNET`, `net`).
    Net,
    /// Process ids (`CLONE_NEWPID`, `pid`).
    Pid,
    /// User and group ids, capabilities (`CLONE_NEWUSER`, `user`).
    User,
    /// Cgroup root directory (`CLONE_NEWCGROUP`, `cgroup`).
    Cgroup,
    /// Boot and monotonic clocks (`CLONE_NEWTIME`, `time`).
    Time,
}

impl Namespace {
    /// Every kind, in the order the kernel documents them.
    pub const ALL: [Namespace; 8] = [
        Namespace::Mount,
        Namespace::Uts,
        Namespace::Ipc,
        Namespace::Net,
        Namespace::Pid,
        Namespace::User,
        Namespace::Cgroup,
        Namespace::Time,
    ];

    /// The `CLONE_NEW*` flag for this kind (`CLONE_NEWTIME` is only valid for
    /// `unshare`/`setns`/`clone3`, not the classic `clone`).
    pub const fn clone_flag(self) -> libc::c_int {
        match self {
            Namespace::Mount => libc::CLONE_NEWNS,
            Namespace::Uts => libc::CLONE_NEWUTS,
            Namespace::Ipc => libc::CLONE_NEWIPC,
            Namespace::Net => libc::CLONE_NEWNET,
            Namespace::Pid => libc::CLONE_NEWPID,
            Namespace::User => libc::CLONE_NEWUSER,
            Namespace::Cgroup => libc::CLONE_NEWCGROUP,
            Namespace::Time => CLONE_NEWTIME,
        }
    }

    /// The file name under `/proc/<pid>/ns/` (`mnt`, `uts`, `ipc`, `net`, `pid`, `user`, `cgroup`, `time`).
    pub const fn proc_name(self) -> &'static str {
        match self {
            Namespace::Mount => "mnt",
            Namespace::Uts => "uts",
            Namespace::Ipc => "ipc",
            Namespace::Net => "net",
            Namespace::Pid => "pid",
            Namespace::User => "user",
            Namespace::Cgroup => "cgroup",
            Namespace::Time => "time",
        }
    }

    /// Parses a `/proc/<pid>/ns/` file name; also accepts the OCI runtime-spec names
    /// (`mount`, `network`).
    pub fn from_proc_name(name: &str) -> Option<Namespace> {
        match name {
            "mount" => Some(Namespace::Mount),
            "network" => Some(Namespace::Net),
            _ => Namespace::ALL.into_iter().find(|ns| ns.proc_name() == name),
        }
    }

    /// `/proc/<pid>/ns/<name>`, or `/proc/self/ns/<name>` when `pid` is `None`.
    pub fn proc_path(self, pid: Option<i32>) -> PathBuf {
        match pid {
            Some(pid) => PathBuf::from(format!("/proc/{pid}/ns/{}", self.proc_name())),
            None => PathBuf::from(format!("/proc/self/ns/{}", self.proc_name())),
        }
    }

    /// The inode identifying the namespace of this kind that `pid` (or the caller) is in.
    pub fn inode(self, pid: Option<i32>) -> Result<u64> {
        let path = self.proc_path(pid);
        std::fs::metadata(&path)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .map_err(|e| Error::path("stat namespace file", path, e))
    }
}

impl std::str::FromStr for Namespace {
    type Err = Error;

    /// Same names as [`Namespace::from_proc_name`].
    fn from_str(s: &str) -> Result<Namespace> {
        Namespace::from_proc_name(s)
            .ok_or_else(|| Error::Invalid(format!("unknown namespace kind {s:?}")))
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.proc_name())
    }
}

/// A set of [`Namespace`] kinds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NamespaceSet(u8);

impl NamespaceSet {
    /// The empty set.
    pub const fn new() -> Self {
        NamespaceSet(0)
    }

    /// Every kind.
    pub const fn all() -> Self {
        NamespaceSet(0xff)
    }

    const fn bit(ns: Namespace) -> u8 {
        1 << (ns as u8)
    }

    /// This set plus `ns` (for building constants).
    #[must_use]
    pub const fn with(self, ns: Namespace) -> Self {
        NamespaceSet(self.0 | Self::bit(ns))
    }

    /// Adds `ns`; returns whether it was absent.
    pub fn insert(&mut self, ns: Namespace) -> bool {
        let had = self.contains(ns);
        self.0 |= Self::bit(ns);
        !had
    }

    /// Removes `ns`; returns whether it was present.
    pub fn remove(&mut self, ns: Namespace) -> bool {
        let had = self.contains(ns);
        self.0 &= !Self::bit(ns);
        had
    }

    /// Whether `ns` is in the set.
    pub const fn contains(self, ns: Namespace) -> bool {
        self.0 & Self::bit(ns) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of kinds in the set.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The kinds in the set, in [`Namespace::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Namespace> {
        Namespace::ALL
            .into_iter()
            .filter(move |ns| self.contains(*ns))
    }

    /// The OR of the kinds' `CLONE_NEW*` flags.
    pub fn clone_flags(self) -> libc::c_int {
        self.iter().fold(0, |acc, ns| acc | ns.clone_flag())
    }

    /// The set described by `CLONE_NEW*` bits (other bits are ignored).
    pub fn from_clone_flags(flags: libc::c_int) -> Self {
        Namespace::ALL
            .into_iter()
            .filter(|ns| flags & ns.clone_flag() != 0)
            .collect()
    }
}

impl fmt::Debug for NamespaceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for NamespaceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Namespace::proc_name).collect();
        f.write_str(&names.join(","))
    }
}

impl From<Namespace> for NamespaceSet {
    fn from(ns: Namespace) -> Self {
        NamespaceSet::new().with(ns)
    }
}

impl FromIterator<Namespace> for NamespaceSet {
    fn from_iter<I: IntoIterator<Item = Namespace>>(iter: I) -> Self {
        let mut set = NamespaceSet::new();
        for ns in iter {
            set.insert(ns);
        }
        set
    }
}

impl<const N: usize> From<[Namespace; N]> for NamespaceSet {
    fn from(list: [Namespace; N]) -> Self {
        list.into_iter().collect()
    }
}

impl std::ops::BitOr for NamespaceSet {
    type Output = NamespaceSet;
    fn bitor(self, rhs: NamespaceSet) -> NamespaceSet {
        NamespaceSet(self.0 | rhs.0)
    }
}

impl std::ops::BitOr<Namespace> for NamespaceSet {
    type Output = NamespaceSet;
    fn bitor(self, rhs: Namespace) -> NamespaceSet {
        self.with(rhs)
    }
}

impl std::ops::BitOr for Namespace {
    type Output = NamespaceSet;
    fn bitor(self, rhs: Namespace) -> NamespaceSet {
        NamespaceSet::from(self).with(rhs)
    }
}

/// One line of a `uid_map`/`gid_map`: ids `inside..inside+count` in the
/// namespace are `outside..outside+count` in the parent namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdMap {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id in the parent namespace.
    pub outside: u32,
    /// Number of ids.
    pub count: u32,
}

impl IdMap {
    /// A map line.
    pub const fn new(inside: u32, outside: u32, count: u32) -> Self {
        IdMap {
            inside,
            outside,
            count,
        }
    }

    /// Renders maps in the kernel's `uid_map` format, validating them.
    pub fn format(maps: &[IdMap]) -> Result<String> {
        if maps.len() > 340 {
            return Err(Error::Invalid(format!(
                "{} id map lines (max 340)",
                maps.len()
            )));
        }
        let mut out = String::new();
        for (i, m) in maps.iter().enumerate() {
            if m.count == 0 {
                return Err(Error::Invalid(format!("id map line {i} has count 0")));
            }
            for (a, b) in [(m.inside, m.count), (m.outside, m.count)] {
                if u64::from(a) + u64::from(b) > u64::from(u32::MAX) {
                    return Err(Error::Invalid(format!("id map line {i} overflows")));
                }
            }
            for other in &maps[..i] {
                let overlap = |a: u32, b: u32| {
                    u64::from(a) < u64::from(b) + u64::from(other.count)
                        && u64::from(b) < u64::from(a) + u64::from(m.count)
                };
                if overlap(m.inside, other.inside) || overlap(m.outside, other.outside) {
                    return Err(Error::Invalid(format!(
                        "id map line {i} overlaps an earlier line"
                    )));
                }
            }
            out.push_str(&format!("{} {} {}\n", m.inside, m.outside, m.count));
        }
        Ok(out)
    }

    /// Whether `id` inside the namespace is covered by `maps`.
    pub fn maps_inside(maps: &[IdMap], id: u32) -> bool {
        maps.iter()
            .any(|m| id >= m.inside && u64::from(id) < u64::from(m.inside) + u64::from(m.count))
    }
}

/// Moves the calling *thread* into new namespaces (`unshare(2)`).
///
/// A new pid or time namespace only applies to children created afterwards.
/// A user namespace can only be unshared by a single-threaded process.
pub fn unshare(set: NamespaceSet) -> Result<()> {
    // SAFETY: unshare only takes flags.
    let rc = unsafe { libc::unshare(set.clone_flags()) };
    if rc != 0 {
        return Err(Error::Unshare {
            ns: set.to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Opens a namespace file such as `/proc/1234/ns/net` or `/run/netns/foo`.
pub fn open_ns(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::path("open namespace file", path, e))
}

/// Moves the calling *thread* into the namespace behind `fd` (`setns(2)`).
///
/// `ns` makes the kernel check the file's kind; `None` accepts any kind.
pub fn enter(fd: BorrowedFd<'_>, ns: Option<Namespace>) -> Result<()> {
    let flag = ns.map_or(0, Namespace::clone_flag);
    // SAFETY: fd is a valid borrowed descriptor for the duration of the call.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), flag) };
    if rc != 0 {
        return Err(Error::Setns {
            ns: ns.map_or_else(|| "any".to_string(), |n| n.to_string()),
            target: format!("fd {}", fd.as_raw_fd()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Moves the calling *thread* into the namespace file at `path`.
pub fn enter_path(path: &Path, ns: Option<Namespace>) -> Result<()> {
    let file = open_ns(path)?;
    enter(file.as_fd(), ns).map_err(|e| match e {
        Error::Setns { ns, source, .. } => Error::Setns {
            ns,
            target: path.display().to_string(),
            source,
        },
        other => other,
    })
}

/// Moves the calling *thread* into several namespaces of the process behind
/// `pidfd` at once (`setns(pidfd, flags)`, Linux 5.8+).
pub fn enter_pidfd(pidfd: BorrowedFd<'_>, set: NamespaceSet) -> Result<()> {
    if set.is_empty() {
        return Err(Error::Invalid("empty namespace set for pidfd join".into()));
    }
    // SAFETY: pidfd is a valid borrowed descriptor for the duration of the call.
    let rc = unsafe { libc::setns(pidfd.as_raw_fd(), set.clone_flags()) };
    if rc != 0 {
        return Err(Error::Setns {
            ns: set.to_string(),
            target: format!("pidfd {}", pidfd.as_raw_fd()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Keeps the namespace behind the file `ns_file` (e.g. `/proc/1234/ns/uts`) alive after
/// its last process exits by bind-mounting it on `target`, as `ip netns add` does for
/// network namespaces. `target` is created as an empty file; it must not exist yet.
///
/// Join it later with [`enter_path`] or [`NsCommand::join`](crate::NsCommand::join);
/// undo it with [`remove_persisted`].
pub fn persist(ns_file: &Path, target: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(|e| Error::path("create", target, e))?;
    if let Err(e) = crate::mount::bind(ns_file, target, false, crate::mount::MountFlags::NONE) {
        let _ = std::fs::remove_file(target);
        return Err(e);
    }
    Ok(())
}

/// Unmounts (lazily) and removes a file made by [`persist`]. Returns `false` if
/// `target` did not exist.
pub fn remove_persisted(target: &Path) -> Result<bool> {
    if std::fs::symlink_metadata(target).is_err() {
        return Ok(false);
    }
    match crate::mount::unmount(target, true) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(e),
    }
    std::fs::remove_file(target).map_err(|e| Error::path("remove", target, e))?;
    Ok(true)
}

/// Sets the hostname of the caller's uts namespace.
pub fn set_hostname(name: &str) -> Result<()> {
    // SAFETY: pointer and length describe a valid buffer.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
        return Err(Error::sys("sethostname"));
    }
    Ok(())
}

/// Sets the NIS domain name of the caller's uts namespace.
pub fn set_domainname(name: &str) -> Result<()> {
    // SAFETY: pointer and length describe a valid buffer.
    if unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) } != 0 {
        return Err(Error::sys("setdomainname"));
    }
    Ok(())
}

/// Opens a pidfd for `pid` (`pidfd_open(2)`, Linux 5.3+).
pub fn pidfd_open(pid: i32) -> Result<std::os::fd::OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Error::sys("pidfd_open"));
    }
    // SAFETY: the kernel returned a fresh descriptor that we now own.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_flags_round_trip() {
        for ns in Namespace::ALL {
            assert_eq!(Namespace::from_proc_name(ns.proc_name()), Some(ns));
            assert_eq!(NamespaceSet::from_clone_flags(ns.clone_flag()), ns.into());
        }
        assert_eq!(Namespace::Mount.proc_name(), "mnt");
        assert_eq!(Namespace::Net.clone_flag(), libc::CLONE_NEWNET);
        assert_eq!(
            Namespace::Pid.proc_path(Some(42)),
            PathBuf::from("/proc/42/ns/pid")
        );
        assert_eq!(Namespace::from_proc_name("bogus"), None);
        assert_eq!("network".parse::<Namespace>().unwrap(), Namespace::Net);
        assert_eq!("mount".parse::<Namespace>().unwrap(), Namespace::Mount);
        assert!("nope".parse::<Namespace>().is_err());
    }

    #[test]
    fn set_operations() {
        let mut set = Namespace::Net | Namespace::Pid;
        assert!(set.contains(Namespace::Net) && set.contains(Namespace::Pid));
        assert!(!set.contains(Namespace::User));
        assert_eq!(set.len(), 2);
        assert!(set.insert(Namespace::User));
        assert!(!set.insert(Namespace::User));
        assert!(set.remove(Namespace::Net));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            vec![Namespace::Pid, Namespace::User]
        );
        assert_eq!(set.clone_flags(), libc::CLONE_NEWPID | libc::CLONE_NEWUSER);
        assert_eq!(set.to_string(), "pid,user");
        assert_eq!(NamespaceSet::all().len(), 8);
        assert!(NamespaceSet::new().is_empty());
    }

    #[test]
    fn id_map_format_and_validation() {
        let maps = [IdMap::new(0, 100_000, 65536), IdMap::new(65536, 1000, 1)];
        assert_eq!(
            IdMap::format(&maps).unwrap(),
            "0 100000 65536\n65536 1000 1\n"
        );
        assert!(IdMap::maps_inside(&maps, 0));
        assert!(IdMap::maps_inside(&maps, 65536));
        assert!(!IdMap::maps_inside(&maps, 65537));
        assert!(IdMap::format(&[IdMap::new(0, 0, 0)]).is_err());
        assert!(IdMap::format(&[IdMap::new(0, 10, 10), IdMap::new(5, 100, 1)]).is_err());
        assert!(IdMap::format(&[IdMap::new(u32::MAX, 0, 2)]).is_err());
    }
}
