//! Shared helpers for the root integration tests.
#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

static LOCK: Mutex<()> = Mutex::new(());
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Marker every resource made by these tests carries in its name.
pub const MARK: &str = "kcore-ns-test";

/// A unique name: marker, pid, counter.
pub fn unique(what: &str) -> String {
    format!(
        "{MARK}-{what}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Serialises root tests and checks on drop that none left a mount behind.
pub struct Serial {
    _lock: MutexGuard<'static, ()>,
    before: Vec<String>,
}

/// Mount lines of this process that mention our marker or /run/netns.
pub fn our_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(MARK))
        .map(|l| l.split(' ').nth(4).unwrap().to_string())
        .collect()
}

pub fn serial() -> Serial {
    let lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    Serial {
        _lock: lock,
        before: our_mounts(),
    }
}

impl Serial {
    /// Asserts that the host mount table has no mount of ours that was not there before.
    pub fn assert_mounts_unchanged(&self) {
        assert_eq!(our_mounts(), self.before, "a test left a mount behind");
    }
}

/// A temp directory with a unique name; unmounts anything below it on drop, before
/// the inner `TempDir` removes it.
pub struct TestDir(tempfile::TempDir);

impl TestDir {
    pub fn new(what: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", unique(what)))
            .tempdir()
            .unwrap();
        // Readable by the unprivileged host ids user-namespace tests map root to.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        TestDir(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let prefix = self.0.path().as_os_str().as_bytes().to_vec();
        let mut mps: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|mp| mp.as_bytes().starts_with(&prefix))
            .collect();
        mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mp in mps {
            let c = std::ffi::CString::new(mp).unwrap();
            // SAFETY: valid path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// A CLOEXEC pipe: (read, write).
pub fn pipe() -> (File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: valid array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors we own.
    unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

pub fn read_all(mut f: File) -> String {
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

/// Interface names listed in a /proc/net/dev text.
pub fn interfaces(net_dev: &str) -> Vec<String> {
    net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_string())
        .collect()
}

pub fn ns_inode(pid: i32, ns: kcore_ns::Namespace) -> u64 {
    ns.inode(Some(pid)).unwrap()
}

pub fn self_inode(ns: kcore_ns::Namespace) -> u64 {
    ns.inode(None).unwrap()
}
