//! Persistent, named network namespaces (`ip netns` compatible) and running code inside one.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::mount::{self, MountFlags, Propagation};
use crate::namespace::{enter, unshare, Namespace};

/// The directory `ip netns` uses.
pub const DEFAULT_NETNS_DIR: &str = "/run/netns";

/// A directory of named network namespaces, each a bind mount of a `/proc/.../ns/net` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsDir {
    dir: PathBuf,
    shared: bool,
}

impl Default for NetnsDir {
    fn default() -> Self {
        NetnsDir {
            dir: PathBuf::from(DEFAULT_NETNS_DIR),
            shared: true,
        }
    }
}

impl NetnsDir {
    /// A store in `dir`. Unlike [`NetnsDir::default`] it does not turn the directory
    /// into a shared mount point (see [`shared_mount`](Self::shared_mount)).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        NetnsDir {
            dir: dir.into(),
            shared: false,
        }
    }

    /// Whether [`create`](Self::create) first makes the directory a shared mount point
    /// (binding it onto itself if needed), as `ip netns add` does, so namespaces created
    /// later also appear in mount namespaces cloned earlier. On for `/run/netns`.
    pub fn shared_mount(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the namespace called `name`.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        Ok(self.dir.join(name))
    }

    /// Creates a new network namespace and keeps it alive at `<dir>/<name>`.
    ///
    /// The namespace is made on a short-lived thread, so the caller's namespace never
    /// changes. Fails with [`Error::NetnsExists`] if the name is taken.
    pub fn create(&self, name: &str) -> Result<NetNs> {
        let path = self.path(name)?;
        let _span = tracing::debug_span!("netns_create", path = %path.display()).entered();
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::path("create directory", &self.dir, e))?;
        if self.shared {
            self.make_shared()?;
        }
        if path.exists() {
            return Err(Error::NetnsExists { path });
        }
        let target = path.clone();
        std::thread::spawn(move || -> Result<()> {
            unshare(Namespace::Net.into())?;
            crate::namespace::persist(Path::new("/proc/thread-self/ns/net"), &target)
        })
        .join()
        .unwrap_or(Err(Error::ThreadPanicked { ns: Namespace::Net }))
        .map_err(|e| match e {
            Error::Path { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
                Error::NetnsExists { path: path.clone() }
            }
            other => other,
        })?;
        NetNs::open(&path)
    }

    /// Opens the namespace called `name`.
    pub fn open(&self, name: &str) -> Result<NetNs> {
        NetNs::open(&self.path(name)?)
    }

    /// Opens `name`, creating it if it does not exist yet.
    pub fn open_or_create(&self, name: &str) -> Result<NetNs> {
        match self.create(name) {
            Err(Error::NetnsExists { .. }) => self.open(name),
            other => other,
        }
    }

    /// Whether a namespace called `name` exists.
    pub fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.path(name)?.exists())
    }

    /// Removes `name` (lazy unmount, then unlink). Returns `false` if it did not exist.
    ///
    /// The namespace itself lives on while a process or open descriptor uses it.
    pub fn remove(&self, name: &str) -> Result<bool> {
        let path = self.path(name)?;
        let _span = tracing::debug_span!("netns_remove", path = %path.display()).entered();
        crate::namespace::remove_persisted(&path)
    }

    /// Names of the namespaces in the directory (empty if it does not exist).
    pub fn list(&self) -> Result<Vec<String>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::path("read directory", &self.dir, e)),
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::path("read directory", &self.dir, e))?;
            if let Some(n) = entry.file_name().to_str() {
                names.push(n.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn make_shared(&self) -> Result<()> {
        match mount::set_propagation(&self.dir, Propagation::Shared, true) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // Not a mount point yet: bind it onto itself, then share.
                mount::bind(&self.dir, &self.dir, true, MountFlags::NONE)?;
                mount::set_propagation(&self.dir, Propagation::Shared, true)
            }
            Err(e) => Err(e),
        }
    }
}

/// Checks that `name` is usable as a single file name.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 255
        || name.contains('/')
        || name.contains('\0')
    {
        return Err(Error::InvalidName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the namespace file at `path` (a netns dir entry or `/proc/<pid>/ns/net`).
    pub fn open(path: &Path) -> Result<NetNs> {
        let file = File::open(path).map_err(|e| Error::path("open network namespace", path, e))?;
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The network namespace of process `pid`.
    pub fn of_pid(pid: i32) -> Result<NetNs> {
        NetNs::open(&Namespace::Net.proc_path(Some(pid)))
    }

    /// The calling thread's network namespace.
    pub fn current() -> Result<NetNs> {
        NetNs::open(Path::new("/proc/thread-self/ns/net"))
    }

    /// Another handle to the same namespace.
    pub fn try_clone(&self) -> Result<NetNs> {
        Ok(NetNs {
            file: self
                .file
                .try_clone()
                .map_err(|e| Error::path("duplicate handle of", &self.path, e))?,
            path: self.path.clone(),
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's inode number (equal inodes mean the same namespace).
    pub fn inode(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.ino())
            .map_err(|e| Error::path("stat", &self.path, e))
    }

    /// Runs `f` on a new thread that has entered this namespace and returns its result.
    ///
    /// Sockets opened by `f` (e.g. netlink) stay bound to this namespace after it returns.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let fd = self.file.as_fd();
        let path = &self.path;
        std::thread::scope(|s| {
            s.spawn(move || -> Result<R> {
                enter(fd, Some(Namespace::Net)).map_err(|e| match e {
                    Error::Setns { ns, source, .. } => Error::Setns {
                        ns,
                        target: path.display().to_string(),
                        source,
                    },
                    other => other,
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or(Err(Error::ThreadPanicked { ns: Namespace::Net }))
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Sets the loopback interface `lo` up in the calling thread's network namespace
/// (a new network namespace starts with it down). Use it inside [`NetNs::run`] or a
/// spawn setup closure.
pub fn loopback_up() -> Result<()> {
    // SAFETY: plain socket(2) call.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(Error::sys("socket"));
    }
    // SAFETY: the descriptor is fresh and now owned here.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: an all-zero ifreq is valid; the name is NUL-terminated within IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags member of a valid ifreq.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req) } != 0 {
        return Err(Error::sys("ioctl SIOCGIFFLAGS lo"));
    }
    // SAFETY: the kernel just initialised ifru_flags.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req) } != 0 {
        return Err(Error::sys("ioctl SIOCSIFFLAGS lo"));
    }
    Ok(())
}

/// Runs `f` inside the network namespace file at `path` on a dedicated thread.
pub fn run_in<F, R>(path: &Path, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    NetNs::open(path)?.run(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for bad in ["", ".", "..", "a/b", "x\0y"] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
        validate_name("kcore-test-1").unwrap();
        let store = NetnsDir::new("/tmp/somewhere");
        assert_eq!(store.path("a").unwrap(), PathBuf::from("/tmp/somewhere/a"));
        assert!(NetnsDir::default().shared);
        assert!(!store.shared);
        assert_eq!(NetnsDir::default().dir(), Path::new(DEFAULT_NETNS_DIR));
    }

    #[test]
    fn list_of_missing_dir_is_empty() {
        let store = NetnsDir::new("/nonexistent/kcore-ns-test");
        assert!(store.list().unwrap().is_empty());
        assert!(!store.remove("x").unwrap());
    }

    #[test]
    #[ignore = "needs root"]
    fn run_in_current_namespace_returns_value() {
        let ns = NetNs::current().unwrap();
        let ino = ns.inode().unwrap();
        let seen = ns
            .run(|| std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino())
            .unwrap();
        assert_eq!(seen, ino);
    }
}
