//! The syscall seam of the root filesystem setup.
//!
//! [`RootfsPlan`](crate::mounts::RootfsPlan) decides what to mount and create; every
//! call that changes the mount table or makes a device node goes through [`Syscall`].
//! [`Real`] makes the calls; tests give the plan a recording implementation (the plan
//! and its path resolution then run without root) or one that attacks the rootfs at the
//! moment between resolution and mount.
//!
//! Mount targets are never paths: a target is a [`Dest`], an `O_PATH` fd that
//! [`kcore_rootfd`] resolved inside the rootfs, and the mount goes onto that fd with the
//! new mount API (`open_tree` / `fsopen` + `fsmount`, then `move_mount` with
//! `MOVE_MOUNT_T_EMPTY_PATH`). On kernels without it (`ENOSYS`, before 5.2), or under a
//! seccomp profile that refuses it (`EPERM`), mount(2) is given `/proc/self/fd/N` of
//! the same fd, which the kernel resolves to exactly that
//! object. Either way a symlink swapped in after resolution changes nothing: the fd
//! stays on the object it was opened on, inside the rootfs.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags};

/// A mount target resolved inside a root: the object's fd, and the path it was
/// resolved from (relative to `root`), for messages and for the legacy fallback.
#[derive(Debug)]
pub(crate) struct Dest<'r> {
    /// The directory fd the path was resolved in (the rootfs, or a mount made by us).
    pub root: BorrowedFd<'r>,
    /// The path inside `root`, as the config named it.
    pub path: PathBuf,
    /// `O_PATH` fd of the target.
    pub fd: OwnedFd,
}

impl Dest<'_> {
    /// The target again, looked up inside the root (after a legacy mount(2) on the fd,
    /// to reach the new mount on top of it).
    fn reresolve(&self) -> io::Result<OwnedFd> {
        Ok(kcore_rootfd::open_in(self.root, &self.path, OFlags::PATH)?)
    }
}

/// Where a bind mount comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Src<'a> {
    /// A path of the runtime's own view (a bundle, a host directory, `/dev/null`).
    Path(&'a Path),
    /// An object already opened (a path inside the container's root).
    Fd(BorrowedFd<'a>),
}

/// The mount and device-node calls of the rootfs setup.
pub(crate) trait Syscall {
    /// mount(2) on a path of the runtime's own view that no container can change
    /// (`/` for propagation and read-only root, the rootfs onto itself).
    fn mount_path(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()>;

    /// Mounts a new `fstype` file system onto `target`; returns an fd of the new mount.
    fn mount_fs(
        &self,
        source: &str,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
        target: &Dest<'_>,
    ) -> io::Result<OwnedFd>;

    /// Bind-mounts `source` (and its submounts with `recursive`) onto `target`;
    /// returns an fd of the new mount.
    fn bind(&self, source: Src<'_>, recursive: bool, target: &Dest<'_>) -> io::Result<OwnedFd>;

    /// mount(2) without a source on the mount `mnt` holds: a remount or a propagation
    /// change.
    fn change(&self, mnt: BorrowedFd<'_>, flags: libc::c_ulong) -> io::Result<()>;

    /// `mount_setattr(AT_RECURSIVE)` on the mount `mnt` holds and every mount below it:
    /// `set` and `clr` are `MOUNT_ATTR_*` bits. `ENOSYS` before Linux 5.12.
    fn set_attr(&self, mnt: BorrowedFd<'_>, set: u64, clr: u64) -> io::Result<()>;

    /// Makes the device node `name` in `dir` with exactly `mode` and owner `uid:gid`.
    #[allow(clippy::too_many_arguments)]
    fn mknod(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        kind: libc::mode_t,
        mode: u32,
        dev: libc::dev_t,
        uid: u32,
        gid: u32,
    ) -> io::Result<()>;

    /// Writes `value` to the first of the LSM attribute files `attrs` that opens
    /// (`/proc/thread-self/attr/...`): the AppArmor profile or SELinux label the next
    /// execve takes on. Runs in the container process after fork: raw calls only.
    fn set_exec_label(&self, attrs: &[&CStr], value: &CStr) -> io::Result<()>;
}

/// The real system calls.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Real;

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn legacy_mount(
    source: Option<&[u8]>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let s = source.map(cstr).transpose()?;
    let t = cstr(target.as_os_str().as_bytes())?;
    let f = fstype.map(|f| cstr(f.as_bytes())).transpose()?;
    let d = data
        .filter(|d| !d.is_empty())
        .map(|d| cstr(d.as_bytes()))
        .transpose()?;
    // SAFETY: every pointer is null or a valid NUL-terminated string alive for the call.
    let rc = unsafe {
        libc::mount(
            s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            t.as_ptr(),
            f.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            d.as_ref().map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The mount attributes of `MS_*` flags (for `fsmount`).
pub(crate) fn mount_attrs(flags: libc::c_ulong) -> MountAttrFlags {
    let mut a = MountAttrFlags::empty();
    for (ms, attr) in [
        (libc::MS_RDONLY, MountAttrFlags::MOUNT_ATTR_RDONLY),
        (libc::MS_NOSUID, MountAttrFlags::MOUNT_ATTR_NOSUID),
        (libc::MS_NODEV, MountAttrFlags::MOUNT_ATTR_NODEV),
        (libc::MS_NOEXEC, MountAttrFlags::MOUNT_ATTR_NOEXEC),
        (libc::MS_NOATIME, MountAttrFlags::MOUNT_ATTR_NOATIME),
        (libc::MS_STRICTATIME, MountAttrFlags::MOUNT_ATTR_STRICTATIME),
        (libc::MS_NODIRATIME, MountAttrFlags::MOUNT_ATTR_NODIRATIME),
        (
            crate::mounts::MS_NOSYMFOLLOW,
            MountAttrFlags::MOUNT_ATTR_NOSYMFOLLOW,
        ),
    ] {
        if flags & ms != 0 {
            a |= attr;
        }
    }
    a
}

/// Splits mount data at commas outside double quotes (an SELinux `context="a,b"`
/// keeps its comma).
pub(crate) fn split_data(data: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in data.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&data[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&data[start..]);
    out.retain(|s| !s.is_empty());
    out
}

fn new_api_fs(
    source: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
    target: &Dest<'_>,
) -> rustix::io::Result<OwnedFd> {
    use rustix::mount::{fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen};
    let fs = fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_set_string(&fs, "source", source)?;
    for opt in split_data(data) {
        match opt.split_once('=') {
            // mount(2) strips the quotes of an LSM option (`context="..."`); fsconfig
            // takes the value as it is.
            Some((k, v)) => {
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                fsconfig_set_string(&fs, k, v)?
            }
            None => fsconfig_set_flag(&fs, opt)?,
        }
    }
    for (ms, key) in [
        (libc::MS_RDONLY, "ro"),
        (libc::MS_SYNCHRONOUS, "sync"),
        (libc::MS_DIRSYNC, "dirsync"),
        (libc::MS_MANDLOCK, "mand"),
    ] {
        if flags & ms != 0 {
            fsconfig_set_flag(&fs, key)?;
        }
    }
    fsconfig_create(&fs)?;
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, mount_attrs(flags))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        &target.fd,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?;
    Ok(mnt)
}

impl Syscall for Real {
    fn mount_path(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        legacy_mount(
            source.map(|s| s.as_os_str().as_bytes()),
            target,
            fstype,
            flags,
            data,
        )
    }

    fn mount_fs(
        &self,
        source: &str,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
        target: &Dest<'_>,
    ) -> io::Result<OwnedFd> {
        match new_api_fs(source, fstype, flags, data, target) {
            // No new mount API, or a seccomp profile around the runtime that refuses
            // it (container engines' default profiles answer EPERM to calls they do
            // not know): the legacy calls, which fail the same way where the
            // permission is really missing.
            Err(Errno::NOSYS | Errno::PERM) => Legacy.mount_fs(source, fstype, flags, data, target),
            r => Ok(r?),
        }
    }

    fn bind(&self, source: Src<'_>, recursive: bool, target: &Dest<'_>) -> io::Result<OwnedFd> {
        let mut fl = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
        if recursive {
            fl |= OpenTreeFlags::AT_RECURSIVE;
        }
        let tree = match source {
            Src::Path(p) => rustix::mount::open_tree(rfs::CWD, p, fl),
            Src::Fd(fd) => rustix::mount::open_tree(fd, "", fl | OpenTreeFlags::AT_EMPTY_PATH),
        };
        match tree {
            Ok(tree) => {
                rustix::mount::move_mount(
                    &tree,
                    "",
                    &target.fd,
                    "",
                    MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH
                        | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
                )?;
                Ok(tree)
            }
            Err(Errno::NOSYS | Errno::PERM) => Legacy.bind(source, recursive, target),
            Err(e) => Err(e.into()),
        }
    }

    fn change(&self, mnt: BorrowedFd<'_>, flags: libc::c_ulong) -> io::Result<()> {
        Legacy.change(mnt, flags)
    }

    fn set_attr(&self, mnt: BorrowedFd<'_>, set: u64, clr: u64) -> io::Result<()> {
        mount_setattr_recursive(mnt, set, clr)
    }

    #[allow(clippy::too_many_arguments)]
    fn mknod(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        kind: libc::mode_t,
        mode: u32,
        dev: libc::dev_t,
        uid: u32,
        gid: u32,
    ) -> io::Result<()> {
        Legacy.mknod(dir, name, kind, mode, dev, uid, gid)
    }

    fn set_exec_label(&self, attrs: &[&CStr], value: &CStr) -> io::Result<()> {
        write_attr(attrs, value)
    }
}

/// Writes `value` to the first of `paths` that opens. Raw syscalls: runs after fork.
fn write_attr(paths: &[&CStr], value: &CStr) -> io::Result<()> {
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for p in paths {
        // SAFETY: valid C string; the descriptor is closed below.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            last = io::Error::last_os_error();
            continue;
        }
        let bytes = value.to_bytes();
        // SAFETY: valid buffer of bytes.len() bytes.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        let err = io::Error::last_os_error();
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        return if n == bytes.len() as isize {
            Ok(())
        } else {
            Err(err)
        };
    }
    Err(last)
}

/// The calls of kernels without the new mount API (before Linux 5.2): mount(2) onto
/// `/proc/self/fd/N` of the resolved target, then the new mount reached by resolving
/// the target again inside the same root (a lookup that cannot leave the root, so a
/// swap in between can at worst make a later remount or propagation change act on
/// another mount inside the container). [`Real`] falls back to it on `ENOSYS`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Legacy;

impl Syscall for Legacy {
    fn mount_path(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        Real.mount_path(source, target, fstype, flags, data)
    }

    fn mount_fs(
        &self,
        source: &str,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
        target: &Dest<'_>,
    ) -> io::Result<OwnedFd> {
        legacy_mount(
            Some(source.as_bytes()),
            &kcore_rootfd::proc_fd_path(&target.fd),
            Some(fstype),
            flags,
            Some(data),
        )?;
        target.reresolve()
    }

    fn bind(&self, source: Src<'_>, recursive: bool, target: &Dest<'_>) -> io::Result<OwnedFd> {
        let src = match source {
            Src::Path(p) => p.to_path_buf(),
            Src::Fd(fd) => kcore_rootfd::proc_fd_path(fd),
        };
        let mut flags = libc::MS_BIND;
        if recursive {
            flags |= libc::MS_REC;
        }
        legacy_mount(
            Some(src.as_os_str().as_bytes()),
            &kcore_rootfd::proc_fd_path(&target.fd),
            None,
            flags,
            None,
        )?;
        target.reresolve()
    }

    fn change(&self, mnt: BorrowedFd<'_>, flags: libc::c_ulong) -> io::Result<()> {
        legacy_mount(None, &kcore_rootfd::proc_fd_path(mnt), None, flags, None)
    }

    /// mount_setattr is newer than the mount API (5.12 against 5.2): nothing older to
    /// fall back to.
    fn set_attr(&self, mnt: BorrowedFd<'_>, set: u64, clr: u64) -> io::Result<()> {
        mount_setattr_recursive(mnt, set, clr)
    }

    fn mknod(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        kind: libc::mode_t,
        mode: u32,
        dev: libc::dev_t,
        uid: u32,
        gid: u32,
    ) -> io::Result<()> {
        let c = cstr(name.as_bytes())?;
        // SAFETY: a valid directory fd and NUL-terminated name.
        let rc = unsafe {
            libc::mknodat(
                std::os::fd::AsRawFd::as_raw_fd(&dir),
                c.as_ptr(),
                kind | (mode & 0o7777),
                dev,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // The umask applied to mknod: set the mode and owner on the node just made,
        // through an fd of it (never a name that could be swapped for a symlink).
        let fd = rfs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rfs::chmodat(
            rfs::CWD,
            kcore_rootfd::proc_fd_path(&fd),
            Mode::from_raw_mode(mode & 0o7777),
            AtFlags::empty(),
        )?;
        rfs::chownat(
            &fd,
            "",
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::EMPTY_PATH,
        )?;
        Ok(())
    }

    fn set_exec_label(&self, attrs: &[&CStr], value: &CStr) -> io::Result<()> {
        Real.set_exec_label(attrs, value)
    }
}

/// Flags a remount must keep (a user namespace may not clear them): those the mount
/// under `mnt` has now.
pub(crate) fn locked_flags(mnt: BorrowedFd<'_>) -> libc::c_ulong {
    let Ok(st) = rfs::fstatvfs(mnt) else {
        return 0;
    };
    let mut f = 0;
    for (sv, ms) in [
        (rfs::StatVfsMountFlags::NOSUID, libc::MS_NOSUID),
        (rfs::StatVfsMountFlags::NODEV, libc::MS_NODEV),
        (rfs::StatVfsMountFlags::NOEXEC, libc::MS_NOEXEC),
        (rfs::StatVfsMountFlags::RDONLY, libc::MS_RDONLY),
    ] {
        if st.f_flag.contains(sv) {
            f |= ms;
        }
    }
    f
}

/// `mount_setattr(mnt, "", AT_EMPTY_PATH | AT_RECURSIVE, {set, clr})`.
fn mount_setattr_recursive(mnt: BorrowedFd<'_>, set: u64, clr: u64) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: 0,
    };
    const AT_RECURSIVE: libc::c_int = 0x8000;
    // SAFETY: a valid fd, an empty path with AT_EMPTY_PATH, and an attribute struct of
    // the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            std::os::fd::AsRawFd::as_raw_fd(&mnt),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testing {
    //! A recording [`Syscall`]: mounts nothing, remembers every call with its target
    //! as a path (read back from the fd), makes device nodes as plain files.

    use super::*;
    use std::cell::RefCell;
    use std::os::fd::AsFd;

    /// One recorded call; targets are real paths read back from the fds.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Call {
        Path {
            target: PathBuf,
            flags: libc::c_ulong,
        },
        Fs {
            fstype: String,
            target: PathBuf,
            flags: libc::c_ulong,
            data: String,
        },
        Bind {
            source: PathBuf,
            recursive: bool,
            target: PathBuf,
        },
        Change {
            target: PathBuf,
            flags: libc::c_ulong,
        },
        Mknod {
            path: PathBuf,
            mode: u32,
        },
        SetAttr {
            target: PathBuf,
            set: u64,
            clr: u64,
        },
        Label {
            attrs: Vec<String>,
            value: String,
        },
    }

    #[derive(Debug, Default)]
    pub(crate) struct Recorder {
        pub calls: RefCell<Vec<Call>>,
    }

    pub(crate) fn fd_path(fd: impl AsFd) -> PathBuf {
        std::fs::read_link(kcore_rootfd::proc_fd_path(fd)).unwrap()
    }

    impl Syscall for Recorder {
        fn mount_path(
            &self,
            _source: Option<&Path>,
            target: &Path,
            _fstype: Option<&str>,
            flags: libc::c_ulong,
            _data: Option<&str>,
        ) -> io::Result<()> {
            self.calls.borrow_mut().push(Call::Path {
                target: target.to_path_buf(),
                flags,
            });
            Ok(())
        }

        fn mount_fs(
            &self,
            _source: &str,
            fstype: &str,
            flags: libc::c_ulong,
            data: &str,
            target: &Dest<'_>,
        ) -> io::Result<OwnedFd> {
            self.calls.borrow_mut().push(Call::Fs {
                fstype: fstype.to_string(),
                target: fd_path(&target.fd),
                flags,
                data: data.to_string(),
            });
            target.fd.try_clone()
        }

        fn bind(&self, source: Src<'_>, recursive: bool, target: &Dest<'_>) -> io::Result<OwnedFd> {
            let source = match source {
                Src::Path(p) => p.to_path_buf(),
                Src::Fd(fd) => fd_path(fd),
            };
            self.calls.borrow_mut().push(Call::Bind {
                source,
                recursive,
                target: fd_path(&target.fd),
            });
            target.fd.try_clone()
        }

        fn change(&self, mnt: BorrowedFd<'_>, flags: libc::c_ulong) -> io::Result<()> {
            self.calls.borrow_mut().push(Call::Change {
                target: fd_path(mnt),
                flags,
            });
            Ok(())
        }

        fn set_attr(&self, mnt: BorrowedFd<'_>, set: u64, clr: u64) -> io::Result<()> {
            self.calls.borrow_mut().push(Call::SetAttr {
                target: fd_path(mnt),
                set,
                clr,
            });
            Ok(())
        }

        fn mknod(
            &self,
            dir: BorrowedFd<'_>,
            name: &OsStr,
            _kind: libc::mode_t,
            mode: u32,
            _dev: libc::dev_t,
            _uid: u32,
            _gid: u32,
        ) -> io::Result<()> {
            rfs::openat(
                dir,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY,
                Mode::from_raw_mode(0o600),
            )?;
            self.calls.borrow_mut().push(Call::Mknod {
                path: fd_path(dir).join(name),
                mode,
            });
            Ok(())
        }

        fn set_exec_label(&self, attrs: &[&CStr], value: &CStr) -> io::Result<()> {
            self.calls.borrow_mut().push(Call::Label {
                attrs: attrs
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect(),
                value: value.to_string_lossy().into_owned(),
            });
            Ok(())
        }
    }

    #[test]
    fn data_splits_outside_quotes() {
        assert_eq!(
            split_data(r#"mode=755,context="a,b",size=1k"#),
            vec!["mode=755", r#"context="a,b""#, "size=1k"]
        );
        assert!(split_data("").is_empty());
        assert_eq!(
            mount_attrs(libc::MS_RDONLY | libc::MS_NOSUID),
            MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NOSUID
        );
    }
}
