//! Root tests of `kcore run`: isolation, limits, exit codes and clean-up.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// A unique layer-store directory, removed (with a check that nothing is mounted
/// under it) when dropped.
struct Store(PathBuf);

impl Store {
    fn new() -> Store {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kcore-run-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        Store(dir)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let leftover = mounts_under(&self.0);
        for m in leftover.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

/// cgroup directories a `kcore run` with this pid left in any hierarchy.
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        if let Ok(entries) = std::fs::read_dir(h.path()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("kcore-run-{pid}-")) {
                    found.push(e.path());
                }
            }
        }
    }
    found
}

/// Runs `kcore run <args> -- sh -c <script>` and checks it left nothing behind.
fn kcore_run(store: &Store, args: &[&str], script: &str) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_kcore"))
        .arg("run")
        .arg("--store")
        .arg(&store.0)
        .args(args)
        .args(["--", "/bin/sh", "-c", script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kcore");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        mounts_under(&store.0),
        Vec::<String>::new(),
        "mounts left behind"
    );
    assert_eq!(
        cgroups_of(pid),
        Vec::<PathBuf>::new(),
        "cgroups left behind"
    );
    let layers: Vec<String> = std::fs::read_dir(&store.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("run-"))
        .collect();
    assert_eq!(layers, Vec::<String>::new(), "container layers left behind");
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs root"]
fn isolated_pid_uts_net_and_mounts() {
    let store = Store::new();
    let out = kcore_run(
        &store,
        &["--hostname", "isolated"],
        "echo pid=$$; hostname; ls /sys/class/net; cat /proc/self/mountinfo",
    );
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("pid=1"));
    assert_eq!(lines.next(), Some("isolated"));
    assert_eq!(lines.next(), Some("lo"), "only lo in the new netns: {text}");
    let mountinfo: Vec<&str> = lines.collect();
    // The root is the overlay; none of the host's own mounts (e.g. the cgroup
    // hierarchies) are visible.
    assert!(
        mountinfo[0].contains(" / / ") && mountinfo[0].contains(" - overlay "),
        "{text}"
    );
    assert!(
        !text.contains("/sys/fs/cgroup"),
        "host mounts leaked in: {text}"
    );
    assert!(mountinfo.len() <= 10, "unexpected mounts: {text}");
}

#[test]
#[ignore = "needs root"]
fn exit_code_is_propagated() {
    let store = Store::new();
    let out = kcore_run(&store, &[], "exit 7");
    assert_eq!(out.status.code(), Some(7));
}

#[test]
#[ignore = "needs root"]
fn memory_limit_oom_kills() {
    // `--memory` limits memory only (no swap limit): with swap active the job may be
    // swapped out instead of killed.
    if std::fs::read_to_string("/proc/swaps").is_ok_and(|s| s.lines().count() > 1) {
        eprintln!("skipping: swap is active (/proc/swaps), so a memory limit alone kills nothing");
        return;
    }
    let store = Store::new();
    // `tail` keeps the whole newline-free stream in memory.
    let out = kcore_run(
        &store,
        &["--memory", "16M"],
        "dd if=/dev/zero bs=1M count=64 2>/dev/null | tail >/dev/null",
    );
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    let out = kcore_run(
        &store,
        &["--memory", "256M"],
        "dd if=/dev/zero bs=1M count=64 2>/dev/null | tail >/dev/null",
    );
    assert_eq!(out.status.code(), Some(0), "same job fits in 256M: {out:?}");
}

#[test]
#[ignore = "needs root"]
fn pids_limit_stops_fork() {
    let store = Store::new();
    let script = "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait";
    let out = kcore_run(&store, &["--pids", "4"], script);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("can't fork"),
        "{out:?}"
    );
    let out = kcore_run(&store, &["--pids", "64"], script);
    assert!(out.status.success(), "{out:?}");
}

#[test]
#[ignore = "needs root"]
fn writes_stay_in_the_run_layer() {
    let store = Store::new();
    let out = kcore_run(&store, &[], "echo hi > /root/note && cat /root/note");
    assert_eq!(stdout(&out), "hi\n");
    let out = kcore_run(&store, &[], "cat /root/note 2>&1 || echo gone");
    assert!(stdout(&out).ends_with("gone\n"), "{out:?}");
    // The base layer was not modified.
    let base = std::fs::read_dir(&store.0)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("busybox-"))
        .expect("base layer");
    assert!(!base.path().join("diff/root/note").exists());
}

#[test]
fn missing_busybox_is_a_clear_error() {
    let store = Store::new();
    let out = Command::new(env!("CARGO_BIN_EXE_kcore"))
        .args(["run", "--busybox", "/nonexistent/busybox", "--store"])
        .arg(&store.0)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("busybox-static"), "{err}");
}
