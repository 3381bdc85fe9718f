//! Shared helpers for the root tests: a busybox bundle in a temp dir, unique ids,
//! and guards that delete containers and check nothing was left behind.
#![allow(dead_code)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use kcore_runtime::{Runtime, Status};
use serde_json::{json, Value};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique container id (pid + counter).
pub fn unique_id(tag: &str) -> String {
    format!(
        "kt-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

const APPLETS: &[&str] = &[
    "sh", "true", "false", "cat", "ls", "hostname", "ps", "sleep", "echo", "id", "grep", "mount",
    "mkdir", "readlink", "uname", "wc", "tty", "touch", "head",
];

/// A bundle directory with a busybox-static rootfs and a state root, removed on drop.
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Bundle {
    pub fn new() -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("kcore-rt-test")
            .tempdir()
            .unwrap();
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        // Copy in another process: a container process forked by a parallel test would
        // otherwise inherit our write descriptor until it executes, and exec of the
        // binary would fail with ETXTBSY.
        let st = std::process::Command::new("cp")
            .arg("/bin/busybox")
            .arg(rootfs.join("bin/busybox"))
            .status()
            .expect("cp");
        assert!(st.success(), "needs busybox-static at /bin/busybox");
        for a in APPLETS {
            symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
        let root = dir.path().join("state");
        Bundle { dir, root }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn runtime(&self) -> Runtime {
        Runtime::new(&self.root)
    }

    /// Writes `spec` as the bundle's config.json.
    pub fn write_config(&self, spec: &Value) {
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_string_pretty(spec).unwrap(),
        )
        .unwrap();
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A runc-like default spec running `args`.
pub fn spec(args: &[&str]) -> Value {
    let mut v = serde_json::to_value(oci_spec::runtime::Spec::default()).unwrap();
    v["process"]["args"] = json!(args);
    v["process"]["terminal"] = json!(false);
    v["hostname"] = json!("kcore-test");
    v["root"] = json!({"path": "rootfs", "readonly": true});
    v
}

pub fn parse(v: &Value) -> oci_spec::runtime::Spec {
    kcore_runtime::parse_spec(&v.to_string()).unwrap()
}

/// Deletes the container on drop (even when the test fails) and checks, when asked,
/// that no state directory, cgroup or process is left.
pub struct Cleanup {
    pub runtime: Runtime,
    pub id: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(c) = self.runtime.load(&self.id) {
            let _ = c.delete(true);
        }
    }
}

/// cgroup directories that would belong to container `id` with the default path.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let host = kcore_cgroup::Host::detect().unwrap();
    host.all_roots()
        .into_iter()
        .map(|r| r.join(format!("kcore-runc-{id}")))
        .collect()
}

/// Asserts that nothing of container `id` remains: state dir, cgroups, host mounts of
/// the bundle, and the process.
pub fn assert_no_trace(b: &Bundle, id: &str, pid: i32) {
    assert!(!b.root.join(id).exists(), "state dir left behind");
    for d in cgroup_dirs(id) {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let bundle = b.path().to_string_lossy().to_string();
    assert!(
        !mi.contains(&bundle),
        "mount of the bundle left on the host"
    );
    if pid > 0 {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = st
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next();
        assert!(
            st.is_empty() || state == Some('Z'),
            "process {pid} still alive: {st}"
        );
    }
}

pub fn status_of(rt: &Runtime, id: &str) -> Status {
    rt.load(id).unwrap().status()
}

/// Listens on the console socket `sock` and, in a thread, takes the one pty master a
/// terminal process sends there, with its payload (the pty's name).
#[allow(dead_code)] // not every test binary has terminals
pub fn console_receiver(sock: &Path) -> std::thread::JoinHandle<(std::os::fd::OwnedFd, Vec<u8>)> {
    use std::os::fd::AsRawFd;
    let listener = std::os::unix::net::UnixListener::bind(sock).unwrap();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        kcore_runtime::recv_fd(conn.as_raw_fd()).unwrap()
    })
}
