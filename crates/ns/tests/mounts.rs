//! Root tests of the mount helpers, each run inside a child with a new mount namespace.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::*;
use kcore_ns::mount::{self, DevNodes, MountFlags, Propagation};
use kcore_ns::{ExitStatus, Namespace, NsCommand};

/// Runs `check` as PID 1 of new mount+pid namespaces after `setup`; returns its exit status.
fn in_child(
    setup: impl FnMut() -> Result<(), kcore_ns::SetupError> + 'static,
    check: impl FnOnce() -> i32 + 'static,
) -> ExitStatus {
    let mut cmd = NsCommand::from_fn(check);
    cmd.new_namespaces(Namespace::Mount | Namespace::Pid)
        .setup(setup);
    let mut child = cmd.run().unwrap();
    child.wait().unwrap()
}

/// Builds a root file system on a tmpfs at `root`, with /dev, /proc and /etc/hostname.
fn build_root(root: &Path, nodes: &DevNodes) -> Result<(), kcore_ns::SetupError> {
    mount::set_propagation(Path::new("/"), Propagation::Private, true)?;
    mount::mount_tmpfs(root, MountFlags::NONE, Some("mode=755,size=8m"))?;
    std::fs::create_dir(root.join("etc"))?;
    std::fs::write(root.join("etc/hostname"), "inside\n")?;
    mount::setup_dev(&root.join("dev"), nodes)?;
    mount::mount_proc(&root.join("proc"))?;
    mount::mount_mqueue(&root.join("dev/mqueue"))?;
    Ok(())
}

fn pivot_check(host_marker: PathBuf) -> i32 {
    // Only the new root is visible.
    let mut top: Vec<String> = std::fs::read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    if top != ["dev", "etc", "proc"] {
        return 10;
    }
    if host_marker.exists() {
        return 11;
    }
    if std::fs::read_to_string("/etc/hostname").ok().as_deref() != Some("inside\n") {
        return 12;
    }
    // Every mount left is the new root or below it: the old root is detached.
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in info.lines() {
        let mp = line.split(' ').nth(4).unwrap();
        if !(mp == "/" || mp.starts_with("/dev") || mp.starts_with("/proc")) {
            return 13;
        }
    }
    if info.lines().count() != 6 {
        // / + dev + dev/pts + dev/shm + dev/mqueue + proc
        return 14;
    }
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        return 15;
    }
    0
}

fn dev_check() -> i32 {
    for (name, major, minor) in mount::DEFAULT_DEVICES {
        let Ok(meta) = std::fs::metadata(format!("/dev/{name}")) else {
            return 20;
        };
        if !meta.file_type().is_char_device() {
            return 21;
        }
        if (libc::major(meta.rdev()), libc::minor(meta.rdev())) != (major, minor) {
            return 22;
        }
    }
    if std::fs::write("/dev/null", "discard").is_err() {
        return 23;
    }
    let mut buf = [1u8; 16];
    {
        use std::io::Read;
        let mut f = std::fs::File::open("/dev/zero").unwrap();
        f.read_exact(&mut buf).unwrap();
    }
    if buf != [0u8; 16] {
        return 24;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        if std::fs::read_link(format!("/dev/{link}")).ok() != Some(PathBuf::from(to)) {
            return 25;
        }
    }
    if !Path::new("/dev/fd/0").exists() || !Path::new("/dev/ptmx").exists() {
        return 26;
    }
    // A fresh devpts instance: opening ptmx gives a new pty in our instance.
    let ptmx = std::ffi::CString::new("/dev/ptmx").unwrap();
    // SAFETY: valid path.
    let fd = unsafe { libc::open(ptmx.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    if fd < 0 {
        return 27;
    }
    // SAFETY: closing the descriptor we opened.
    unsafe { libc::close(fd) };
    let shm = std::fs::metadata("/dev/shm").unwrap();
    if shm.mode() & 0o7777 != 0o1777 {
        return 28;
    }
    0
}

#[test]
#[ignore = "needs root"]
fn pivot_root_leaves_only_the_new_root() {
    let serial = serial();
    let dir = TestDir::new("pivot");
    let root = dir.path().join("root");
    let marker = dir.path().join("host-only");
    std::fs::write(&marker, "host").unwrap();
    let host_marker = marker.clone();
    let r = root.clone();
    let status = in_child(
        move || {
            build_root(&r, &DevNodes::Mknod)?;
            mount::pivot_root(&r)?;
            Ok(())
        },
        move || match pivot_check(marker) {
            0 => dev_check(),
            n => n,
        },
    );
    assert_eq!(status, ExitStatus::Exited(0));
    // The host still sees its own root, and no mount under the test dir.
    assert_eq!(std::fs::read_to_string(&host_marker).unwrap(), "host");
    assert!(std::fs::read_dir(&root).unwrap().next().is_none());
    drop(dir);
    serial.assert_mounts_unchanged();
}

#[test]
#[ignore = "needs root"]
fn dev_with_bind_mounted_nodes() {
    let serial = serial();
    let dir = TestDir::new("devbind");
    let root = dir.path().join("root");
    let r = root.clone();
    let status = in_child(
        move || {
            build_root(&r, &DevNodes::BindFrom(PathBuf::from("/dev")))?;
            mount::pivot_root(&r)?;
            Ok(())
        },
        dev_check,
    );
    assert_eq!(status, ExitStatus::Exited(0));
    drop(dir);
    serial.assert_mounts_unchanged();
}

#[test]
#[ignore = "needs root"]
fn masked_and_readonly_paths() {
    let serial = serial();
    let dir = TestDir::new("mask");
    let secret_file = dir.path().join("secret");
    let secret_dir = dir.path().join("secrets");
    let ro_dir = dir.path().join("ro");
    let missing = dir.path().join("missing");
    std::fs::write(&secret_file, "password").unwrap();
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("key"), "k").unwrap();
    std::fs::create_dir(&ro_dir).unwrap();
    std::fs::write(ro_dir.join("f"), "data").unwrap();
    let (host_secret, host_ro) = (secret_file.clone(), ro_dir.clone());
    let (f, d, ro, m) = (
        secret_file.clone(),
        secret_dir.clone(),
        ro_dir.clone(),
        missing.clone(),
    );
    let status = in_child(
        move || {
            mount::set_propagation(Path::new("/"), Propagation::Private, true)?;
            mount::mask_path(&f)?;
            mount::mask_path(&d)?;
            mount::mask_path(&m)?;
            mount::readonly_path(&ro)?;
            mount::readonly_path(&m)?;
            Ok(())
        },
        move || {
            if std::fs::read_to_string(&secret_file).unwrap_or_default() != "" {
                return 30;
            }
            if std::fs::read_dir(&secret_dir).unwrap().next().is_some() {
                return 31;
            }
            let erofs = |r: std::io::Result<()>| {
                r.err().and_then(|e| e.raw_os_error()) == Some(libc::EROFS)
            };
            if !erofs(std::fs::write(secret_dir.join("new"), "x")) {
                return 32;
            }
            if !erofs(std::fs::write(ro_dir.join("f"), "changed")) {
                return 33;
            }
            if std::fs::read_to_string(ro_dir.join("f")).unwrap() != "data" {
                return 34;
            }
            0
        },
    );
    assert_eq!(status, ExitStatus::Exited(0));
    // Outside the child nothing is masked.
    assert_eq!(std::fs::read_to_string(&host_secret).unwrap(), "password");
    std::fs::write(host_ro.join("f"), "host can write").unwrap();
    drop(dir);
    serial.assert_mounts_unchanged();
}

#[test]
#[ignore = "needs root"]
fn bind_flags_and_propagation() {
    let serial = serial();
    let dir = TestDir::new("bind");
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    let sub = src.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    let (s, d, sb) = (src.clone(), dst.clone(), sub.clone());
    let (host_dst, host_sub) = (dst.clone(), sub.clone());
    let status = in_child(
        move || {
            mount::set_propagation(Path::new("/"), Propagation::Private, true)?;
            // A submount so rbind has something to carry along.
            mount::mount_tmpfs(&sb, MountFlags::NONE, Some("size=1m"))?;
            std::fs::write(sb.join("inner"), "i")?;
            mount::bind(&s, &d, true, MountFlags::SECURE.read_only())?;
            Ok(())
        },
        move || {
            let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            let opts = |mp: &Path| -> Option<String> {
                info.lines()
                    .find(|l| l.split(' ').nth(4) == Some(mp.to_str().unwrap()))
                    .map(|l| l.split(' ').nth(5).unwrap().to_string())
            };
            let Some(top) = opts(&dst) else { return 40 };
            for want in ["ro", "nosuid", "nodev", "noexec"] {
                if !top.split(',').any(|o| o == want) {
                    return 41;
                }
            }
            // rbind brought the submount along, read-only too.
            let Some(inner) = opts(&dst.join("sub")) else {
                return 42;
            };
            if !inner.split(',').any(|o| o == "ro") {
                return 43;
            }
            if std::fs::read_to_string(dst.join("sub/inner"))
                .ok()
                .as_deref()
                != Some("i")
            {
                return 44;
            }
            // The source itself stays writable.
            if std::fs::write(src.join("g"), "y").is_err() {
                return 45;
            }
            0
        },
    );
    assert_eq!(status, ExitStatus::Exited(0));
    // The child's private mounts never reached the host.
    assert!(!host_dst.join("f").exists());
    assert!(!host_sub.join("inner").exists());
    drop(dir);
    serial.assert_mounts_unchanged();
}

#[test]
#[ignore = "needs root"]
fn move_root_changes_root_without_pivot() {
    let serial = serial();
    let dir = TestDir::new("moveroot");
    let root = dir.path().join("root");
    let marker = dir.path().join("host-only");
    std::fs::write(&marker, "host").unwrap();
    let r = root.clone();
    let status = in_child(
        move || {
            build_root(&r, &DevNodes::Mknod)?;
            mount::move_root(&r)?;
            Ok(())
        },
        move || {
            let mut top: Vec<String> = std::fs::read_dir("/")
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            top.sort();
            if top != ["dev", "etc", "proc"] {
                return 50;
            }
            if marker.exists() {
                return 51;
            }
            if std::env::current_dir().ok() != Some(PathBuf::from("/")) {
                return 52;
            }
            dev_check()
        },
    );
    assert_eq!(status, ExitStatus::Exited(0));
    drop(dir);
    serial.assert_mounts_unchanged();
}

#[test]
#[ignore = "needs root"]
fn user_namespace_container_root_keeps_locked_mount_flags() {
    let serial = serial();
    let dir = TestDir::new("userroot");
    let root = dir.path().join("root");
    // Container root (host uid 200000) cannot create it in a root-owned directory.
    std::fs::create_dir(&root).unwrap();
    // A host mount with nosuid/nodev/noexec: inherited by the child, its flags are
    // locked there, so a read-only remount only works if it keeps them.
    let locked = dir.path().join("locked");
    mount::mount_tmpfs(&locked, MountFlags::SECURE, Some("size=1m")).unwrap();
    let l = locked.clone();
    let r = root.clone();
    let mut cmd = NsCommand::from_fn(|| {
        // proc's nosuid/nodev/noexec are locked in a user namespace: the read-only
        // remount must have kept them, and /proc/sys must now refuse writes.
        let erofs = std::fs::write("/proc/sys/kernel/hostname", "x")
            .err()
            .and_then(|e| e.raw_os_error());
        if erofs != Some(libc::EROFS) {
            return 60;
        }
        if !Path::new("/sys/class/net/lo").exists() {
            return 61;
        }
        // SAFETY: plain id getter.
        if unsafe { libc::getuid() } != 0 {
            return 62;
        }
        match pivot_check_user() {
            0 => dev_check(),
            n => n,
        }
    });
    cmd.new_namespaces(
        Namespace::User | Namespace::Mount | Namespace::Pid | Namespace::Net | Namespace::Ipc,
    )
    .uid_map([kcore_ns::IdMap::new(0, 200_000, 65536)])
    .gid_map([kcore_ns::IdMap::new(0, 200_000, 65536)])
    .setup(move || {
        mount::set_propagation(Path::new("/"), Propagation::Private, true)?;
        mount::readonly_path(&l)?;
        let ro = std::fs::write(l.join("f"), "x")
            .err()
            .and_then(|e| e.raw_os_error());
        if ro != Some(libc::EROFS) {
            return Err(format!("{} still writable: {ro:?}", l.display()).into());
        }
        build_root(&r, &DevNodes::BindFrom(PathBuf::from("/dev")))?;
        mount::mount_sysfs(&r.join("sys"), true)?;
        mount::pivot_root(&r)?;
        mount::readonly_path(Path::new("/proc/sys"))?;
        mount::mask_path(Path::new("/proc/kcore"))?;
        Ok(())
    });
    let mut child = cmd.run().unwrap();
    assert_eq!(child.wait().unwrap(), ExitStatus::Exited(0));
    drop(dir);
    serial.assert_mounts_unchanged();
}

/// Like `pivot_check`, for a root that also has /sys and a read-only /proc/sys.
fn pivot_check_user() -> i32 {
    let mut top: Vec<String> = std::fs::read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    if top != ["dev", "etc", "proc", "sys"] {
        return 63;
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in info.lines() {
        let mp = line.split(' ').nth(4).unwrap();
        if !(mp == "/" || ["/dev", "/proc", "/sys"].iter().any(|p| mp.starts_with(p))) {
            return 64;
        }
    }
    0
}
