//! Root tests on the real kernel. On the hybrid hosts kcore runs on these exercise the
//! v1 controllers for limits, stats and the freezer, and the unified mount through the
//! v2 driver. Run with `cargo test -p kcore-cgroup -- --include-ignored` as root.

use std::io::{Read as _, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use kcore_cgroup::{Cgroup, CgroupMode, Controller, FreezerState, Host, Resources};

const BUSYBOX: &str = "/bin/busybox";
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name() -> String {
    format!(
        "kcore-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Kills and deletes the cgroup even when the test fails.
struct Guard(Cgroup);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        if let Err(e) = self.0.delete() {
            eprintln!("cleanup of {} failed: {e}", self.0.path().display());
        }
    }
}

/// Kills and reaps a child even when the test fails.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn host() -> Host {
    Host::detect().expect("detect cgroup hierarchies")
}

fn new_cgroup(host: &Host) -> Guard {
    Guard(Cgroup::create(host, unique_name()).expect("create cgroup"))
}

/// Starts `busybox sh -c script` blocked on reading stdin, moves it into `cg`, then lets
/// it run: nothing in the script runs outside the cgroup.
fn spawn_in(cg: &Cgroup, script: &str) -> ChildGuard {
    let mut child = ChildGuard(
        Command::new(BUSYBOX)
            .args(["sh", "-c", &format!("read _go; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn busybox sh"),
    );
    cg.add_process(child.0.id()).expect("add process");
    assert!(cg.procs().unwrap().contains(&child.0.id()));
    child
        .0
        .stdin
        .take()
        .unwrap()
        .write_all(b"go\n")
        .expect("release child");
    child
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn output(child: &mut ChildGuard) -> (std::process::ExitStatus, String, String) {
    let status = child.0.wait().expect("wait child");
    let mut out = String::new();
    let mut err = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, out, err)
}

fn leftovers(host: &Host, name: &str) -> Vec<PathBuf> {
    host.all_roots()
        .into_iter()
        .map(|r| r.join(name))
        .filter(|p| p.exists())
        .collect()
}

#[test]
#[ignore = "needs root"]
fn memory_limit_oom_kills_and_counts() {
    let host = host();
    let cg = new_cgroup(&host);
    let mut res = Resources::default();
    res.memory.limit = Some(32 << 20);
    // memory+swap equal to the limit: no swap to escape into.
    if host.mode() != CgroupMode::V2 {
        res.memory.swap = Some(32 << 20);
    }
    cg.0.set_resources(&res).unwrap();
    let before =
        cg.0.stats()
            .unwrap()
            .memory
            .oom_kill
            .expect("oom_kill counter");
    assert_eq!(before, 0);

    // busybox dd allocates and fills a 128 MiB buffer.
    let mut child = spawn_in(
        &cg.0,
        &format!("exec {BUSYBOX} dd if=/dev/zero of=/dev/null bs=128M count=1"),
    );
    let (status, _, _) = output(&mut child);
    assert_eq!(status.signal(), Some(9), "expected SIGKILL, got {status:?}");

    let stats = cg.0.stats().unwrap();
    assert!(stats.memory.oom_kill.unwrap() > before, "{stats:?}");
    let peak = stats.memory.peak.expect("peak");
    assert!(peak > (16 << 20) && peak <= (32 << 20), "peak {peak}");
}

#[test]
#[ignore = "needs root"]
fn pids_limit_makes_fork_fail() {
    let host = host();
    let script = format!(
        "i=0; while [ $i -lt 8 ]; do {BUSYBOX} sleep 60 >/dev/null 2>&1 & i=$((i+1)); done; echo spawned-all"
    );

    // Control: without a tight limit all eight forks succeed.
    let free = new_cgroup(&host);
    let mut res = Resources::default();
    res.pids.max = Some(64);
    free.0.set_resources(&res).unwrap();
    let mut child = spawn_in(&free.0, &script);
    let (status, out, _) = output(&mut child);
    assert!(status.success() && out.contains("spawned-all"), "{out}");
    assert_eq!(free.0.procs_recursive().unwrap().len(), 8);

    let limited = new_cgroup(&host);
    res.pids.max = Some(4);
    limited.0.set_resources(&res).unwrap();
    let mut child = spawn_in(&limited.0, &script);
    let (status, out, err) = output(&mut child);
    assert!(!status.success(), "shell should fail: {status:?}");
    assert!(!out.contains("spawned-all"), "{out}");
    assert!(err.contains("fork"), "stderr: {err}");
    let stats = limited.0.stats().unwrap();
    assert_eq!(stats.pids.max, Some(4));
    // The shell got three sleeps out before hitting the limit of four tasks.
    assert_eq!(limited.0.procs_recursive().unwrap().len(), 3);
    assert_eq!(stats.pids.current, Some(3));

    // Kill reaches every process; delete then succeeds.
    for g in [&free, &limited] {
        g.0.kill().unwrap();
        g.0.delete().unwrap();
        assert!(!g.0.exists());
    }
}

#[test]
#[ignore = "needs root"]
fn freezing_stops_cpu_usage() {
    let host = host();
    let cg = new_cgroup(&host);
    let _child = spawn_in(&cg.0, "while :; do :; done");
    let usage = || cg.0.stats().unwrap().cpu.usage_usec.expect("cpu usage");
    wait_until("the loop uses cpu", Duration::from_secs(10), || {
        usage() > 20_000
    });

    cg.0.freeze().unwrap();
    assert_eq!(cg.0.freezer_state().unwrap(), FreezerState::Frozen);
    let frozen_at = usage();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(usage(), frozen_at, "a frozen cgroup must not use cpu");

    cg.0.thaw().unwrap();
    assert_eq!(cg.0.freezer_state().unwrap(), FreezerState::Thawed);
    wait_until("the loop runs again", Duration::from_secs(10), || {
        usage() > frozen_at
    });
}

#[test]
#[ignore = "needs root"]
fn nested_limits_then_delete_leaves_nothing() {
    let host = host();
    let name = unique_name();
    let top = Guard(Cgroup::create(&host, &name).unwrap());
    let leaf = top.0.child("pod/ctr").unwrap();
    let mut res = Resources::default();
    res.memory.limit = Some(256 << 20);
    res.memory.reservation = Some(64 << 20);
    res.cpu.shares = Some(512);
    res.cpu.quota = Some(50_000);
    res.cpu.period = Some(100_000);
    res.cpu.cpus = Some("0".into());
    res.cpu.mems = Some("0".into());
    res.pids.max = Some(100);
    if host.mode() != CgroupMode::V2 {
        res.memory.swap = Some(512 << 20);
    }
    leaf.set_resources(&res).unwrap();

    if host.mode() != CgroupMode::V2 {
        let read = |c: Controller, f: &str| {
            let dir = host.v1_mount(c).unwrap().join(leaf.path());
            std::fs::read_to_string(dir.join(f))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(
            read(Controller::Memory, "memory.limit_in_bytes"),
            "268435456"
        );
        assert_eq!(
            read(Controller::Memory, "memory.memsw.limit_in_bytes"),
            "536870912"
        );
        assert_eq!(read(Controller::Cpu, "cpu.shares"), "512");
        assert_eq!(read(Controller::Cpu, "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(Controller::Cpuset, "cpuset.cpus"), "0");
        assert_eq!(read(Controller::Pids, "pids.max"), "100");
        // Lowering memory+swap below the current limit in one call works too.
        res.memory.limit = Some(64 << 20);
        res.memory.swap = Some(64 << 20);
        leaf.set_resources(&res).unwrap();
        assert_eq!(
            read(Controller::Memory, "memory.memsw.limit_in_bytes"),
            "67108864"
        );
        if host.v1_mount(Controller::Blkio).is_some() {
            let mut io = Resources::default();
            io.io.weight = Some(300);
            leaf.set_resources(&io).unwrap();
        }
    }

    // Processes at two levels (the cpuset copy lets them join the nested cpuset).
    let mut a = spawn_in(&leaf, &format!("exec {BUSYBOX} sleep 60"));
    let mut b = spawn_in(&top.0, &format!("exec {BUSYBOX} sleep 60"));
    let pids = top.0.procs_recursive().unwrap();
    assert!(
        pids.contains(&a.0.id()) && pids.contains(&b.0.id()),
        "{pids:?}"
    );
    assert_eq!(top.0.procs().unwrap(), vec![b.0.id()]);

    top.0.kill().unwrap();
    assert_eq!(a.0.wait().unwrap().signal(), Some(9));
    assert_eq!(b.0.wait().unwrap().signal(), Some(9));
    top.0.delete().unwrap();
    assert!(!top.0.exists() && !leaf.exists());
    assert_eq!(leftovers(&host, &name), Vec::<PathBuf>::new());
    // Deleting again is fine.
    top.0.delete().unwrap();
}

#[test]
#[ignore = "needs root"]
fn delete_waits_for_exiting_processes() {
    let host = host();
    let name = unique_name();
    let cg = Guard(Cgroup::create(&host, &name).unwrap());
    let mut children: Vec<ChildGuard> = (0..5)
        .map(|_| spawn_in(&cg.0, &format!("exec {BUSYBOX} sleep 60")))
        .collect();
    cg.0.kill().unwrap();
    // Delete right away: it must retry until the killed processes have left.
    cg.0.delete().unwrap();
    assert_eq!(leftovers(&host, &name), Vec::<PathBuf>::new());
    for c in &mut children {
        assert_eq!(c.0.wait().unwrap().signal(), Some(9));
    }
}

/// The v2 driver against the kernel's real unified hierarchy (empty of controllers on
/// hybrid hosts, but membership, cgroup.freeze, cgroup.kill and cpu.stat are real).
#[test]
#[ignore = "needs root"]
fn v2_driver_on_real_unified_mount() {
    let detected = host();
    let Some(unified) = detected.unified() else {
        eprintln!("no cgroup2 mount on this host; nothing to test");
        return;
    };
    let host = Host::v2(unified);
    let name = unique_name();
    let cg = Guard(Cgroup::create(&host, format!("{name}/inner")).unwrap());
    let top = Cgroup::open(&host, &name).unwrap();
    let _busy = spawn_in(&cg.0, "while :; do :; done");
    let usage = || {
        cg.0.stats()
            .unwrap()
            .cpu
            .usage_usec
            .expect("cpu.stat usage_usec")
    };
    wait_until("the loop uses cpu", Duration::from_secs(10), || {
        usage() > 20_000
    });

    top.freeze().unwrap();
    assert_eq!(cg.0.freezer_state().unwrap(), FreezerState::Frozen);
    let frozen_at = usage();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(usage(), frozen_at);
    top.thaw().unwrap();
    wait_until("the loop runs again", Duration::from_secs(10), || {
        usage() > frozen_at
    });

    let mut sleeper = spawn_in(&cg.0, &format!("exec {BUSYBOX} sleep 60"));
    top.kill().unwrap();
    assert_eq!(sleeper.0.wait().unwrap().signal(), Some(9));
    top.delete().unwrap();
    assert!(!unified.join(&name).exists());
}

/// Detection from the mount table and probing the cgroupfs directory agree on the
/// running host (no root needed).
#[test]
fn probe_agrees_with_mountinfo() {
    let detected = host();
    let Some(root) = detected.managed_roots().first().and_then(|p| {
        if detected.mode() == CgroupMode::V2 {
            Some(p.clone())
        } else {
            p.parent().map(PathBuf::from)
        }
    }) else {
        panic!("no hierarchy detected");
    };
    let probed = Host::probe(&root).unwrap();
    assert_eq!(probed.mode(), detected.mode());
    assert_eq!(probed.unified(), detected.unified());
    for (c, path) in detected.v1_controllers() {
        assert_eq!(probed.v1_mount(c), Some(path), "{c}");
    }
}
