//! Mount helpers a container runtime needs.
//!
//! All of these act on the calling process's mount namespace: call them in a
//! [`NsCommand::setup`](crate::NsCommand::setup) closure of a child with a new
//! mount namespace, after making the tree private or slave with
//! [`set_propagation`].

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Mount propagation type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Propagation {
    /// No events in or out (`MS_PRIVATE`).
    Private,
    /// Events come in from the master, none go out (`MS_SLAVE`).
    Slave,
    /// Events go both ways within the peer group (`MS_SHARED`).
    Shared,
    /// Private and cannot be bind-mounted (`MS_UNBINDABLE`).
    Unbindable,
}

impl Propagation {
    fn flag(self) -> libc::c_ulong {
        match self {
            Propagation::Private => libc::MS_PRIVATE,
            Propagation::Slave => libc::MS_SLAVE,
            Propagation::Shared => libc::MS_SHARED,
            Propagation::Unbindable => libc::MS_UNBINDABLE,
        }
    }
}

/// Per-mount flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MountFlags {
    /// `MS_RDONLY`.
    pub readonly: bool,
    /// `MS_NOSUID`.
    pub nosuid: bool,
    /// `MS_NODEV`.
    pub nodev: bool,
    /// `MS_NOEXEC`.
    pub noexec: bool,
}

impl MountFlags {
    /// No flags.
    pub const NONE: MountFlags = MountFlags {
        readonly: false,
        nosuid: false,
        nodev: false,
        noexec: false,
    };
    /// nosuid, nodev, noexec (what /proc, /sys and /dev/shm get).
    pub const SECURE: MountFlags = MountFlags {
        readonly: false,
        nosuid: true,
        nodev: true,
        noexec: true,
    };

    /// These flags plus read-only.
    #[must_use]
    pub const fn read_only(mut self) -> Self {
        self.readonly = true;
        self
    }

    fn bits(self) -> libc::c_ulong {
        let mut f = 0;
        if self.readonly {
            f |= libc::MS_RDONLY;
        }
        if self.nosuid {
            f |= libc::MS_NOSUID;
        }
        if self.nodev {
            f |= libc::MS_NODEV;
        }
        if self.noexec {
            f |= libc::MS_NOEXEC;
        }
        f
    }
}

fn c(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Nul {
        what: "path",
        value: path.display().to_string(),
    })
}

fn c_str(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Nul {
        what: "mount option",
        value: s.to_string(),
    })
}

/// Raw mount(2) with error context.
fn raw_mount(
    what: &'static str,
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let src = source.map(c).transpose()?;
    let tgt = c(target)?;
    let fs = fstype.map(c_str).transpose()?;
    let dat = data.map(c_str).transpose()?;
    // SAFETY: all pointers are null or valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            tgt.as_ptr(),
            fs.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            dat.as_ref().map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    if rc != 0 {
        return Err(Error::Mount {
            what,
            fstype: fstype.unwrap_or("none").to_string(),
            source_path: source.map_or_else(|| "none".to_string(), |s| s.display().to_string()),
            target: target.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Sets the propagation type of the mount at `path` (and every mount below it when `recursive`).
pub fn set_propagation(path: &Path, propagation: Propagation, recursive: bool) -> Result<()> {
    let mut flags = propagation.flag();
    if recursive {
        flags |= libc::MS_REC;
    }
    raw_mount("set propagation", None, path, None, flags, None)
}

fn ensure_dir(path: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|e| Error::path("create directory", path, e))
}

fn ensure_file(path: &Path) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map(drop)
        .map_err(|e| Error::path("create mount point", path, e))
}

/// Mounts a file system of type `fstype` at `target` (created as a directory if missing).
pub fn mount_fs(
    fstype: &str,
    source: &str,
    target: &Path,
    flags: MountFlags,
    data: Option<&str>,
) -> Result<()> {
    ensure_dir(target)?;
    raw_mount(
        "mount",
        Some(Path::new(source)),
        target,
        Some(fstype),
        flags.bits(),
        data,
    )
}

/// Bind-mounts `source` on `target` (recursively with `recursive`), then remounts
/// with `flags` when any are set (the kernel ignores them on the bind itself).
///
/// The target is created (directory or empty file, like the source) if missing.
/// With `recursive` and `readonly`, submounts are made read-only too (mount_setattr,
/// Linux 5.12+; on older kernels only the top mount).
pub fn bind(source: &Path, target: &Path, recursive: bool, flags: MountFlags) -> Result<()> {
    if source.is_dir() {
        ensure_dir(target)?;
    } else {
        ensure_file(target)?;
    }
    let mut f = libc::MS_BIND;
    if recursive {
        f |= libc::MS_REC;
    }
    raw_mount("bind", Some(source), target, None, f, None)?;
    if flags != MountFlags::NONE {
        remount(target, flags, true)?;
        if recursive {
            set_attr_recursive(target, flags);
        }
    }
    Ok(())
}

fn set_attr_recursive(target: &Path, flags: MountFlags) {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const MOUNT_ATTR_NOEXEC: u64 = 0x8;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let mut set = 0;
    for (on, bit) in [
        (flags.readonly, MOUNT_ATTR_RDONLY),
        (flags.nosuid, MOUNT_ATTR_NOSUID),
        (flags.nodev, MOUNT_ATTR_NODEV),
        (flags.noexec, MOUNT_ATTR_NOEXEC),
    ] {
        if on {
            set |= bit;
        }
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let Ok(t) = c(target) else { return };
    // SAFETY: valid path and attribute struct of the given size; failure (old kernel) is
    // tolerated because the top mount was already remounted.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            t.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
}

/// Remounts the mount at `target` with `flags`, keeping the flags that are already set
/// (nosuid/nodev/noexec/rdonly/atime flags), which a user namespace may not clear.
pub fn remount(target: &Path, flags: MountFlags, bind: bool) -> Result<()> {
    let mut f = libc::MS_REMOUNT | flags.bits() | locked_flags(target)?;
    if bind {
        f |= libc::MS_BIND;
    }
    raw_mount("remount", None, target, None, f, None)
}

fn locked_flags(target: &Path) -> Result<libc::c_ulong> {
    let t = c(target)?;
    // SAFETY: zeroed statvfs is a valid out buffer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    if unsafe { libc::statvfs(t.as_ptr(), &mut st) } != 0 {
        return Err(Error::path(
            "statvfs",
            target,
            std::io::Error::last_os_error(),
        ));
    }
    let mut f = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            f |= ms_flag;
        }
    }
    Ok(f)
}

/// Unmounts `target`; `detach` uses `MNT_DETACH` (lazy unmount).
pub fn unmount(target: &Path, detach: bool) -> Result<()> {
    let t = c(target)?;
    let flags = if detach { libc::MNT_DETACH } else { 0 };
    // SAFETY: valid path.
    if unsafe { libc::umount2(t.as_ptr(), flags) } != 0 {
        return Err(Error::Unmount {
            path: target.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Mounts procfs at `target` (nosuid, nodev, noexec). Needs a pid namespace of its own
/// to show only the container's processes.
pub fn mount_proc(target: &Path) -> Result<()> {
    mount_fs("proc", "proc", target, MountFlags::SECURE, None)
}

/// Mounts sysfs at `target` (nosuid, nodev, noexec; read-only when asked).
///
/// The kernel only allows it in a network namespace the caller owns.
pub fn mount_sysfs(target: &Path, readonly: bool) -> Result<()> {
    let mut f = MountFlags::SECURE;
    f.readonly = readonly;
    mount_fs("sysfs", "sysfs", target, f, None)
}

/// Mounts a tmpfs at `target` with `data` options such as `"mode=755,size=65536k"`.
pub fn mount_tmpfs(target: &Path, flags: MountFlags, data: Option<&str>) -> Result<()> {
    mount_fs("tmpfs", "tmpfs", target, flags, data)
}

/// Mounts a new devpts instance at `target` (`newinstance,ptmxmode=0666,mode=0620`).
pub fn mount_devpts(target: &Path) -> Result<()> {
    let flags = MountFlags {
        nosuid: true,
        noexec: true,
        ..MountFlags::NONE
    };
    mount_fs(
        "devpts",
        "devpts",
        target,
        flags,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
}

/// Mounts the POSIX message queue file system at `target` (needs an ipc namespace
/// owned by the caller's user namespace).
pub fn mount_mqueue(target: &Path) -> Result<()> {
    mount_fs("mqueue", "mqueue", target, MountFlags::SECURE, None)
}

/// How [`setup_dev`] provides the device nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevNodes {
    /// `mknod` (needs CAP_MKNOD in the initial user namespace).
    Mknod,
    /// Bind-mount each node from this directory (usually the host's `/dev`); works in
    /// user namespaces.
    BindFrom(PathBuf),
}

/// The default device nodes: name, major, minor.
pub const DEFAULT_DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Builds a minimal `/dev` at `dev`: a tmpfs, the [`DEFAULT_DEVICES`], a devpts
/// instance at `pts`, a tmpfs at `shm`, and the `fd`, `stdin`, `stdout`, `stderr`
/// and `ptmx` symlinks.
pub fn setup_dev(dev: &Path, nodes: &DevNodes) -> Result<()> {
    let _span = tracing::debug_span!("setup_dev", dev = %dev.display()).entered();
    mount_tmpfs(
        dev,
        MountFlags {
            nosuid: true,
            ..MountFlags::NONE
        },
        Some("mode=755,size=65536k"),
    )?;
    for (name, major, minor) in DEFAULT_DEVICES {
        let path = dev.join(name);
        match nodes {
            DevNodes::Mknod => {
                let p = c(&path)?;
                // SAFETY: valid path; makedev is a pure computation.
                let rc = unsafe {
                    libc::mknod(
                        p.as_ptr(),
                        libc::S_IFCHR | 0o666,
                        libc::makedev(major, minor),
                    )
                };
                if rc != 0 {
                    return Err(Error::path("mknod", path, std::io::Error::last_os_error()));
                }
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
                    .map_err(|e| Error::path("chmod", &path, e))?;
            }
            DevNodes::BindFrom(host) => bind(&host.join(name), &path, false, MountFlags::NONE)?,
        }
    }
    mount_devpts(&dev.join("pts"))?;
    mount_tmpfs(
        &dev.join("shm"),
        MountFlags::SECURE,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let path = dev.join(link);
        std::os::unix::fs::symlink(to, &path).map_err(|e| Error::path("symlink", path, e))?;
    }
    Ok(())
}

/// Whether `path` (already canonical) is the root of a mount. `statx` answers from the
/// path's own attributes (`STATX_ATTR_MOUNT_ROOT`, Linux 5.8+) without the cost of the
/// whole mount table, which grows with every container on the host; older kernels fall
/// back to reading `/proc/self/mountinfo`.
fn is_mount_point(path: &Path) -> Result<bool> {
    let p = c(path)?;
    // SAFETY: an all-zero statx is a valid value to be filled in.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statx buffer we own.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            p.as_ptr(),
            libc::AT_NO_AUTOMOUNT,
            libc::STATX_BASIC_STATS,
            &mut stx,
        )
    };
    let mount_root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if rc == 0 && stx.stx_attributes_mask & mount_root != 0 {
        return Ok(stx.stx_attributes & mount_root != 0);
    }
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
        return Ok(false);
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::path("read", "/proc/self/mountinfo", e))?;
    let want = unescape_octal(path.as_os_str().as_bytes());
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_octal(mp.as_bytes()) == want))
}

/// Undoes the `\040`-style escaping of /proc/self/mountinfo.
pub(crate) fn unescape_octal(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Makes `new_root` the root file system of the calling process's mount namespace and
/// detaches the old root, so nothing of it stays visible.
///
/// `new_root` is bind-mounted onto itself first if it is not a mount point. The old
/// root is made a recursive slave before the lazy unmount, so the unmount never
/// propagates back to the host. Afterwards the working directory is `/`.
pub fn pivot_root(new_root: &Path) -> Result<()> {
    let _span = tracing::debug_span!("pivot_root", new_root = %new_root.display()).entered();
    let err = |step: &'static str| Error::PivotRoot {
        new_root: new_root.to_path_buf(),
        step,
        source: std::io::Error::last_os_error(),
    };
    let new_root =
        std::fs::canonicalize(new_root).map_err(|e| Error::path("resolve", new_root, e))?;
    if !is_mount_point(&new_root)? {
        bind(&new_root, &new_root, true, MountFlags::NONE)?;
    }
    let root = c(&new_root)?;
    // SAFETY: valid path and flags.
    let fd = unsafe {
        libc::open(
            root.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(err("open new root"));
    }
    // SAFETY: fd is the descriptor we just opened.
    let rc = unsafe { libc::fchdir(fd) };
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(err("chdir into new root"));
    }
    let dot = c".";
    // SAFETY: pivot_root(".", ".") stacks the old root on top of the new one at ".".
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } != 0 {
        return Err(err("pivot_root"));
    }
    // SAFETY: valid strings; makes the old root (now on top at ".") a recursive slave.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            dot.as_ptr(),
            std::ptr::null(),
            libc::MS_SLAVE | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(err("make old root slave"));
    }
    // SAFETY: valid path.
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(err("detach old root"));
    }
    let slash = c"/";
    // SAFETY: valid path.
    if unsafe { libc::chdir(slash.as_ptr()) } != 0 {
        return Err(err("chdir /"));
    }
    Ok(())
}

/// Makes `new_root` the root without `pivot_root`, for roots where it cannot work
/// (an initramfs host root): moves the mount to `/`, then `chroot`s into it.
///
/// Weaker than [`pivot_root`]: the old root stays mounted underneath, reachable by
/// a process that escapes the chroot. Afterwards the working directory is `/`.
pub fn move_root(new_root: &Path) -> Result<()> {
    let _span = tracing::debug_span!("move_root", new_root = %new_root.display()).entered();
    let err = |step: &'static str| Error::PivotRoot {
        new_root: new_root.to_path_buf(),
        step,
        source: std::io::Error::last_os_error(),
    };
    let new_root =
        std::fs::canonicalize(new_root).map_err(|e| Error::path("resolve", new_root, e))?;
    if !is_mount_point(&new_root)? {
        bind(&new_root, &new_root, true, MountFlags::NONE)?;
    }
    let root = c(&new_root)?;
    // SAFETY: valid path.
    if unsafe { libc::chdir(root.as_ptr()) } != 0 {
        return Err(err("chdir into new root"));
    }
    raw_mount(
        "move",
        Some(&new_root),
        Path::new("/"),
        None,
        libc::MS_MOVE,
        None,
    )?;
    let dot = c".";
    // SAFETY: valid path.
    if unsafe { libc::chroot(dot.as_ptr()) } != 0 {
        return Err(err("chroot"));
    }
    let slash = c"/";
    // SAFETY: valid path.
    if unsafe { libc::chdir(slash.as_ptr()) } != 0 {
        return Err(err("chdir /"));
    }
    Ok(())
}

/// Hides `path`: a directory gets an empty read-only tmpfs, anything else gets
/// `/dev/null` bound over it. A missing path is ignored.
pub fn mask_path(path: &Path) -> Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::path("stat", path, e)),
    };
    if meta.is_dir() {
        raw_mount(
            "mask",
            Some(Path::new("tmpfs")),
            path,
            Some("tmpfs"),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        )
    } else {
        raw_mount(
            "mask",
            Some(Path::new("/dev/null")),
            path,
            None,
            libc::MS_BIND,
            None,
        )
    }
}

/// Makes `path` (and everything mounted below it) read-only by binding it onto itself
/// and remounting. A missing path is ignored.
pub fn readonly_path(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::path("stat", path, e)),
    }
    bind(path, path, true, MountFlags::NONE.read_only())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_to_ms_bits() {
        assert_eq!(MountFlags::NONE.bits(), 0);
        assert_eq!(
            MountFlags::SECURE.bits(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC
        );
        assert_eq!(MountFlags::NONE.read_only().bits(), libc::MS_RDONLY);
        assert_eq!(Propagation::Slave.flag(), libc::MS_SLAVE);
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_octal(br"/a\040b"), b"/a b".to_vec());
        assert_eq!(unescape_octal(br"/plain"), b"/plain".to_vec());
        assert_eq!(unescape_octal(br"/x\\"), br"/x\\".to_vec());
    }

    #[test]
    fn root_is_a_mount_point() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(!is_mount_point(Path::new("/definitely/not/here")).unwrap());
        assert!(is_mount_point(Path::new("/proc")).unwrap());
        let d = std::env::temp_dir().join(format!("kcore-ns-mp-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let not_a_mount = is_mount_point(&d).unwrap();
        std::fs::remove_dir(&d).unwrap();
        assert!(!not_a_mount, "a fresh directory is no mount point");
    }
}
