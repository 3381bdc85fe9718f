//! OCI mounts, `/dev`, and the root filesystem, set up inside the container's
//! mount namespace (these functions run in the container process before exec).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use kcore_ns::SetupError;

type R<T = ()> = std::result::Result<T, SetupError>;

/// Maps `rootfsPropagation` / mount propagation option names to mount flags.
pub(crate) fn propagation_flag(name: &str) -> Option<libc::c_ulong> {
    Some(match name {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// A mount from `config.json`, with its options decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountPlan {
    pub source: Option<PathBuf>,
    pub destination: PathBuf,
    pub fstype: Option<String>,
    pub flags: libc::c_ulong,
    pub data: String,
    pub propagation: Vec<libc::c_ulong>,
}

impl MountPlan {
    pub fn is_bind(&self) -> bool {
        self.flags & libc::MS_BIND != 0
    }
}

/// Decodes mount options the way runc does: flags, propagation, and the rest as data.
pub(crate) fn parse_options(opts: &[String]) -> (libc::c_ulong, Vec<libc::c_ulong>, String) {
    let mut flags: libc::c_ulong = 0;
    let mut prop = Vec::new();
    let mut data = Vec::new();
    for o in opts {
        let (set, clear) = match o.as_str() {
            "defaults" => (0, 0),
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "suid" => (0, libc::MS_NOSUID),
            "nosuid" => (libc::MS_NOSUID, 0),
            "dev" => (0, libc::MS_NODEV),
            "nodev" => (libc::MS_NODEV, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "noexec" => (libc::MS_NOEXEC, 0),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "atime" => (0, libc::MS_NOATIME),
            "noatime" => (libc::MS_NOATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            other => {
                if let Some(p) = propagation_flag(other) {
                    prop.push(p);
                } else {
                    data.push(other.to_string());
                }
                (0, 0)
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, prop, data.join(","))
}

/// Builds the mount plans of a spec; relative bind sources are taken from the bundle.
pub(crate) fn plan(mounts: &[oci_spec::runtime::Mount], bundle: &Path) -> Vec<MountPlan> {
    mounts
        .iter()
        .map(|m| {
            let (mut flags, propagation, data) =
                parse_options(m.options().as_deref().unwrap_or_default());
            if m.typ().as_deref() == Some("bind") {
                flags |= libc::MS_BIND;
            }
            let source = m.source().as_ref().map(|s| {
                if flags & libc::MS_BIND != 0 && s.is_relative() {
                    bundle.join(s)
                } else {
                    s.clone()
                }
            });
            MountPlan {
                source,
                destination: m.destination().clone(),
                fstype: m.typ().clone(),
                flags,
                data,
                propagation,
            }
        })
        .collect()
}

/// Resolves `path` inside `root` following symlinks as if `root` were `/`: the result
/// never leaves `root`. Missing components are kept as they are.
pub(crate) fn secure_join(root: &Path, path: &Path) -> PathBuf {
    let mut todo: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut cur = PathBuf::new(); // relative to root
    let mut links = 0;
    while let Some(p) = todo.pop() {
        let mut comps: Vec<Component<'_>> = p.components().collect();
        comps.reverse();
        while let Some(c) = comps.pop() {
            match c {
                Component::RootDir | Component::Prefix(_) => cur = PathBuf::new(),
                Component::CurDir => {}
                Component::ParentDir => {
                    cur.pop();
                }
                Component::Normal(n) => {
                    let next = cur.join(n);
                    let full = root.join(&next);
                    match std::fs::read_link(&full) {
                        Ok(target) if links < 255 => {
                            links += 1;
                            // Resolve the link target, then the components after it.
                            let rest: PathBuf = comps.iter().rev().collect();
                            if target.is_absolute() {
                                cur = PathBuf::new();
                            }
                            todo.push(rest);
                            todo.push(target);
                            comps.clear();
                            break;
                        }
                        _ => cur = next,
                    }
                }
            }
        }
    }
    root.join(cur)
}

pub(crate) fn cstr(p: &Path) -> R<CString> {
    Ok(CString::new(p.as_os_str().as_bytes())
        .map_err(|_| format!("path {} contains a NUL byte", p.display()))?)
}

fn err(what: &str, p: &Path) -> SetupError {
    let e = std::io::Error::last_os_error();
    Box::new(std::io::Error::new(
        e.kind(),
        format!("{what} {}: {e}", p.display()),
    ))
}

/// mount(2) with an error naming the target.
pub(crate) fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> R {
    let s = source.map(cstr).transpose()?;
    let t = cstr(target)?;
    let f = fstype.map(|f| CString::new(f).unwrap_or_default());
    let d = data
        .filter(|d| !d.is_empty())
        .map(|d| CString::new(d).unwrap_or_default());
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
        let what = format!(
            "mount {} ({}) on",
            source.map_or_else(|| "none".into(), |s| s.display().to_string()),
            fstype.unwrap_or("none")
        );
        return Err(err(&what, target));
    }
    Ok(())
}

fn mkdir_all(p: &Path) -> R {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(p)
        .map_err(|e| format!("mkdir {}: {e}", p.display()).into())
}

fn touch(p: &Path) -> R {
    if let Some(parent) = p.parent() {
        mkdir_all(parent)?;
    }
    match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
    {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => Ok(()),
        Err(e) => Err(format!("create {}: {e}", p.display()).into()),
    }
}

/// Flags a remount inside a user namespace must keep (the kernel locks them).
fn locked_flags(target: &Path) -> libc::c_ulong {
    let Ok(t) = cstr(target) else { return 0 };
    // SAFETY: zeroed statvfs is a valid out buffer; t is a valid path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(t.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let mut f = 0;
    for (sv, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_RDONLY, libc::MS_RDONLY),
    ] {
        if st.f_flag & sv != 0 {
            f |= ms;
        }
    }
    f
}

/// How `/dev` nodes are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DevMode {
    Mknod,
    /// In a user namespace: bind the host's node.
    Bind,
}

/// A device node to create in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DevicePlan {
    pub path: PathBuf,
    pub kind: libc::mode_t,
    pub major: u32,
    pub minor: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The devices runc always creates when `/dev` is not bind-mounted.
pub(crate) fn default_devices() -> Vec<DevicePlan> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(p, major, minor)| DevicePlan {
        path: p.into(),
        kind: libc::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// Everything the container process does to its mount namespace.
#[derive(Debug, Clone)]
pub(crate) struct RootfsPlan {
    pub rootfs: PathBuf,
    pub readonly: bool,
    pub propagation: Option<libc::c_ulong>,
    pub mounts: Vec<MountPlan>,
    pub devices: Vec<DevicePlan>,
    pub dev_mode: DevMode,
    pub masked: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    pub no_pivot: bool,
    /// False when the container shares the runtime's mount namespace: then nothing is
    /// mounted or created (validation refused what would need it) and the process only
    /// chroots into the rootfs, as runc does.
    pub mount_ns: bool,
    /// `(name, host directory)` of the container's cgroup in each hierarchy, for
    /// mounts of type `cgroup`.
    pub cgroup_dirs: Vec<(String, PathBuf)>,
    pub sysctl: Vec<(String, String)>,
}

impl RootfsPlan {
    /// Before pivot_root: propagation, the rootfs bind, the spec's mounts, `/dev`.
    pub fn prepare(&self) -> R {
        if !self.mount_ns {
            return Ok(());
        }
        mount(
            None,
            Path::new("/"),
            None,
            libc::MS_SLAVE | libc::MS_REC,
            None,
        )?;
        let root = &self.rootfs;
        mount(Some(root), root, None, libc::MS_BIND | libc::MS_REC, None)?;
        let mut dev_bound = false;
        for m in &self.mounts {
            self.mount_one(m)?;
            if m.destination == Path::new("/dev") && m.is_bind() {
                dev_bound = true;
            }
        }
        if !dev_bound {
            self.make_devices()?;
        }
        Ok(())
    }

    fn mount_one(&self, m: &MountPlan) -> R {
        let dest = secure_join(&self.rootfs, &m.destination);
        let fstype = m.fstype.as_deref();
        if m.is_bind() {
            let src = m.source.as_deref().ok_or_else(|| {
                format!("bind mount on {} has no source", m.destination.display())
            })?;
            let meta = std::fs::metadata(src)
                .map_err(|e| format!("bind source {}: {e}", src.display()))?;
            if meta.is_dir() {
                mkdir_all(&dest)?;
            } else {
                touch(&dest)?;
            }
            mount(
                Some(src),
                &dest,
                None,
                libc::MS_BIND | (m.flags & libc::MS_REC),
                None,
            )?;
            let extra = m.flags & !(libc::MS_BIND | libc::MS_REC | libc::MS_REMOUNT);
            if extra != 0 {
                mount(
                    None,
                    &dest,
                    None,
                    libc::MS_BIND | libc::MS_REMOUNT | extra | locked_flags(&dest),
                    None,
                )?;
            }
        } else if fstype == Some("cgroup") {
            self.mount_cgroup(m, &dest)?;
        } else {
            mkdir_all(&dest)?;
            let src = m
                .source
                .clone()
                .unwrap_or_else(|| PathBuf::from(fstype.unwrap_or("none")));
            let res = mount(Some(&src), &dest, fstype, m.flags, Some(&m.data));
            if let Err(e) = res {
                // sysfs needs a network namespace of our own; fall back to binding the host's, read-only.
                if fstype == Some("sysfs") {
                    mount(
                        Some(Path::new("/sys")),
                        &dest,
                        None,
                        libc::MS_BIND | libc::MS_REC,
                        None,
                    )?;
                    mount(
                        None,
                        &dest,
                        None,
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | locked_flags(&dest),
                        None,
                    )?;
                } else {
                    return Err(e);
                }
            }
        }
        for p in &m.propagation {
            mount(None, &dest, None, *p, None)?;
        }
        Ok(())
    }

    fn mount_cgroup(&self, m: &MountPlan, dest: &Path) -> R {
        mkdir_all(dest)?;
        let ro = m.flags & libc::MS_RDONLY;
        let base = m.flags & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
        if self.cgroup_dirs.len() == 1 && self.cgroup_dirs[0].0.is_empty() {
            // A pure v2 host: mount the cgroup2 file system (rooted at our cgroup namespace).
            return mount(
                Some(Path::new("cgroup2")),
                dest,
                Some("cgroup2"),
                m.flags,
                None,
            );
        }
        mount(
            Some(Path::new("tmpfs")),
            dest,
            Some("tmpfs"),
            base,
            Some("mode=755"),
        )?;
        for (name, host_dir) in &self.cgroup_dirs {
            if !host_dir.is_dir() {
                continue;
            }
            let target = dest.join(name);
            mkdir_all(&target)?;
            mount(Some(host_dir), &target, None, libc::MS_BIND, None)?;
            mount(
                None,
                &target,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | base | ro | locked_flags(&target),
                None,
            )?;
        }
        if ro != 0 {
            mount(None, dest, None, libc::MS_REMOUNT | base | ro, None)?;
        }
        Ok(())
    }

    fn make_devices(&self) -> R {
        for d in &self.devices {
            let path = secure_join(&self.rootfs, &d.path);
            if let Some(parent) = path.parent() {
                mkdir_all(parent)?;
            }
            let _ = std::fs::remove_file(&path);
            match self.dev_mode {
                DevMode::Mknod => {
                    let c = cstr(&path)?;
                    // SAFETY: valid path; makedev is pure arithmetic.
                    let rc = unsafe {
                        libc::mknod(
                            c.as_ptr(),
                            d.kind | (d.mode & 0o7777),
                            libc::makedev(d.major, d.minor),
                        )
                    };
                    if rc != 0 {
                        return Err(err("mknod", &path));
                    }
                    // SAFETY: valid path; mknod applied the umask, so set the mode explicitly.
                    unsafe {
                        libc::chmod(c.as_ptr(), d.mode & 0o7777);
                        libc::chown(c.as_ptr(), d.uid, d.gid);
                    }
                }
                DevMode::Bind => {
                    touch(&path)?;
                    mount(Some(&d.path), &path, None, libc::MS_BIND, None)?;
                }
            }
        }
        let dev = secure_join(&self.rootfs, Path::new("/dev"));
        for (link, to) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("core", "/proc/kcore"),
        ] {
            let p = dev.join(link);
            if std::fs::symlink_metadata(&p).is_err() {
                std::os::unix::fs::symlink(to, &p)
                    .map_err(|e| format!("symlink {}: {e}", p.display()))?;
            }
        }
        let ptmx = dev.join("ptmx");
        if dev.join("pts").is_dir() {
            let _ = std::fs::remove_file(&ptmx);
            std::os::unix::fs::symlink("pts/ptmx", &ptmx)
                .map_err(|e| format!("symlink {}: {e}", ptmx.display()))?;
        }
        Ok(())
    }

    /// Switches the root: pivot_root, or MS_MOVE + chroot in no-pivot mode.
    pub fn switch_root(&self) -> R {
        if !self.mount_ns {
            // Namespaced sysctls (net.*, kernel ipc) follow the writer's namespaces, so
            // the host's /proc/sys reaches the container's; after the chroot the rootfs
            // may have no /proc.
            self.write_sysctls()?;
            return chroot(&self.rootfs);
        }
        if self.no_pivot {
            let root = cstr(&self.rootfs)?;
            // SAFETY: valid C strings; plain syscalls.
            unsafe {
                if libc::chdir(root.as_ptr()) != 0 {
                    return Err(err("chdir", &self.rootfs));
                }
            }
            mount(
                Some(Path::new(".")),
                Path::new("/"),
                None,
                libc::MS_MOVE,
                None,
            )?;
            // SAFETY: valid C string.
            unsafe {
                if libc::chroot(c".".as_ptr()) != 0 {
                    return Err(err("chroot", &self.rootfs));
                }
                if libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(err("chdir", Path::new("/")));
                }
            }
        } else {
            kcore_ns::mount::pivot_root(&self.rootfs)?;
        }
        if let Some(p) = self.propagation {
            mount(None, Path::new("/"), None, p, None)?;
        }
        Ok(())
    }

    /// After the root switch: sysctls, read-only and masked paths, read-only root.
    pub fn finish(&self) -> R {
        if !self.mount_ns {
            return Ok(());
        }
        self.write_sysctls()?;
        for p in &self.readonly_paths {
            kcore_ns::mount::readonly_path(p)?;
        }
        for p in &self.masked {
            kcore_ns::mount::mask_path(p)?;
        }
        if self.readonly {
            let root = Path::new("/");
            mount(
                None,
                root,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | locked_flags(root),
                None,
            )?;
        }
        Ok(())
    }
}

impl RootfsPlan {
    fn write_sysctls(&self) -> R {
        for (k, v) in &self.sysctl {
            let p = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
            std::fs::write(&p, v).map_err(|e| format!("sysctl {k}={v}: {e}"))?;
        }
        Ok(())
    }
}

/// chroot into `root` and make it the working directory (the root switch without a
/// mount namespace of our own; also how `exec` enters such a container).
pub(crate) fn chroot(root: &Path) -> R {
    let c = cstr(root)?;
    // SAFETY: valid C strings; plain syscalls.
    unsafe {
        if libc::chdir(c.as_ptr()) != 0 {
            return Err(err("chdir", root));
        }
        if libc::chroot(c".".as_ptr()) != 0 {
            return Err(err("chroot", root));
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(err("chdir", Path::new("/")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_decode_like_runc() {
        let (f, p, d) = parse_options(&s(&["nosuid", "strictatime", "mode=755", "size=65536k"]));
        assert_eq!(f, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert!(p.is_empty());
        assert_eq!(d, "mode=755,size=65536k");
        let (f, p, _) = parse_options(&s(&["rbind", "ro", "rprivate"]));
        assert_eq!(f, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        assert_eq!(p, vec![libc::MS_PRIVATE | libc::MS_REC]);
        let (f, _, _) = parse_options(&s(&["ro", "rw"]));
        assert_eq!(f, 0);
    }

    #[test]
    fn plan_resolves_bind_sources_in_bundle() {
        let m: oci_spec::runtime::Mount = serde_json::from_str(
            r#"{"destination": "/data", "type": "bind", "source": "vol", "options": ["ro"]}"#,
        )
        .unwrap();
        let p = plan(&[m], Path::new("/b"));
        assert_eq!(p[0].source.as_deref(), Some(Path::new("/b/vol")));
        assert!(p[0].is_bind());
        assert_eq!(p[0].flags & libc::MS_RDONLY, libc::MS_RDONLY);
    }

    /// Without a mount namespace of its own the container process mounts and creates
    /// nothing (it would be on the host's mount table and rootfs): even a plan holding
    /// mounts and devices leaves the rootfs untouched before the chroot.
    #[test]
    fn without_a_mount_namespace_nothing_is_mounted_or_made() {
        let dir = tempfile::tempdir().unwrap();
        let m: oci_spec::runtime::Mount =
            serde_json::from_str(r#"{"destination": "/proc", "type": "proc", "source": "proc"}"#)
                .unwrap();
        let plan = RootfsPlan {
            rootfs: dir.path().to_path_buf(),
            readonly: true,
            propagation: Some(libc::MS_PRIVATE),
            mounts: plan(&[m], dir.path()),
            devices: default_devices(),
            dev_mode: DevMode::Mknod,
            masked: vec![PathBuf::from("/proc/kcore")],
            readonly_paths: vec![PathBuf::from("/proc/sys")],
            no_pivot: false,
            mount_ns: false,
            cgroup_dirs: Vec::new(),
            sysctl: Vec::new(),
        };
        plan.prepare().unwrap();
        plan.finish().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!after.contains(dir.path().to_str().unwrap()));
    }

    #[test]
    fn secure_join_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("a/abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("a/b/up")).unwrap();
        std::os::unix::fs::symlink("b", root.join("a/rel")).unwrap();
        assert_eq!(secure_join(root, Path::new("/a/abs/x")), root.join("etc/x"));
        assert_eq!(
            secure_join(root, Path::new("/a/b/up/etc")),
            root.join("etc")
        );
        assert_eq!(secure_join(root, Path::new("/a/rel/c")), root.join("a/b/c"));
        assert_eq!(secure_join(root, Path::new("/../../x")), root.join("x"));
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let _ = secure_join(root, Path::new("/loop/x")); // terminates
    }
}
