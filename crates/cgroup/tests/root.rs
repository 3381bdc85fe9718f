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

/// Whether `cg` offers the interface `file` of controller `c` on this host: the
/// controller is mounted (v1) or enabled (v2) *and* the file exists in the cgroup itself
/// (some files exist only below a hierarchy's root; swap accounting, CFS bandwidth and
/// others can be compiled out). Prints why when it does not, for the skipped case.
fn offers(host: &Host, cg: &Cgroup, c: Controller, file: &str) -> bool {
    let root = match host.mode() {
        CgroupMode::V2 => host.unified(),
        _ => host.v1_mount(c),
    };
    let found = root.is_some_and(|r| r.join(cg.path()).join(file).exists());
    if !found {
        eprintln!("skipping {file}: the host's {c} controller does not offer it here");
    }
    found
}

/// Whether busybox, which the tests run inside cgroups, is installed.
fn have_busybox() -> bool {
    let found = std::path::Path::new(BUSYBOX).is_file();
    if !found {
        eprintln!("skipping: {BUSYBOX} is missing (Debian package busybox-static)");
    }
    found
}

/// Whether any swap device or file is active (/proc/swaps lists more than its header).
fn swap_active() -> bool {
    std::fs::read_to_string("/proc/swaps").is_ok_and(|s| s.lines().count() > 1)
}

#[test]
#[ignore = "needs root"]
fn memory_limit_oom_kills_and_counts() {
    let host = host();
    if !have_busybox() {
        return;
    }
    let cg = new_cgroup(&host);
    let v2 = host.mode() == CgroupMode::V2;
    let limit_file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    if !offers(&host, &cg.0, Controller::Memory, limit_file) {
        return;
    }
    let mut res = Resources::default();
    res.memory.limit = Some(32 << 20);
    // memory+swap equal to the limit: no swap to escape into. Without a swap limit the
    // buffer could be swapped out rather than OOM-killed, unless no swap is active.
    let swap_file = if v2 {
        "memory.swap.max"
    } else {
        "memory.memsw.limit_in_bytes"
    };
    if offers(&host, &cg.0, Controller::Memory, swap_file) {
        res.memory.swap = Some(32 << 20);
    } else if swap_active() {
        eprintln!("skipping: swap is active and {swap_file} is missing, so no OOM kill is certain");
        return;
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
    let peak_file = if v2 {
        "memory.peak"
    } else {
        "memory.max_usage_in_bytes"
    };
    if offers(&host, &cg.0, Controller::Memory, peak_file) {
        let peak = stats.memory.peak.expect("peak");
        assert!(peak > (16 << 20) && peak <= (32 << 20), "peak {peak}");
    }
}

/// v1 `memory.swappiness` and `memory.oom_control` on the real kernel, where the host's
/// memory controller offers them in the created cgroup.
#[test]
#[ignore = "needs root"]
fn memory_swappiness_and_oom_killer() {
    let host = host();
    if host.mode() == CgroupMode::V2 {
        eprintln!("skipping: v2 has no memory.swappiness or memory.oom_control");
        return;
    }
    let cg = new_cgroup(&host);
    let dir = host
        .v1_mount(Controller::Memory)
        .map(|m| m.join(cg.0.path()));
    let read = |file: &str| std::fs::read_to_string(dir.as_ref().unwrap().join(file)).unwrap();
    if offers(&host, &cg.0, Controller::Memory, "memory.swappiness") {
        for value in [0, 37, 100] {
            let mut res = Resources::default();
            res.memory.swappiness = Some(value);
            cg.0.set_resources(&res).unwrap();
            assert_eq!(read("memory.swappiness").trim(), value.to_string());
        }
        let mut res = Resources::default();
        res.memory.swappiness = Some(101);
        let e = cg.0.set_resources(&res).unwrap_err();
        assert!(e.to_string().contains("memory.swappiness"), "{e}");
    }
    if offers(&host, &cg.0, Controller::Memory, "memory.oom_control") {
        assert!(read("memory.oom_control").contains("oom_kill_disable 0"));
        let mut res = Resources::default();
        res.memory.oom_kill_disable = Some(true);
        cg.0.set_resources(&res).unwrap();
        assert!(
            read("memory.oom_control").contains("oom_kill_disable 1"),
            "{}",
            read("memory.oom_control")
        );
    }
}

#[test]
#[ignore = "needs root"]
fn pids_limit_makes_fork_fail() {
    let host = host();
    if !have_busybox() {
        return;
    }
    let script = format!(
        "i=0; while [ $i -lt 8 ]; do {BUSYBOX} sleep 60 >/dev/null 2>&1 & i=$((i+1)); done; echo spawned-all"
    );

    // Control: without a tight limit all eight forks succeed.
    let free = new_cgroup(&host);
    if !offers(&host, &free.0, Controller::Pids, "pids.max") {
        return;
    }
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
    if !have_busybox() {
        return;
    }
    let cg = new_cgroup(&host);
    let frozen_ok = match host.mode() {
        CgroupMode::V2 => offers(&host, &cg.0, Controller::Freezer, "cgroup.freeze"),
        _ => {
            offers(&host, &cg.0, Controller::Freezer, "freezer.state")
                || host
                    .unified()
                    .is_some_and(|u| u.join(cg.0.path()).join("cgroup.freeze").exists())
        }
    };
    if !frozen_ok {
        return;
    }
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
    if !have_busybox() {
        return;
    }
    let name = unique_name();
    let top = Guard(Cgroup::create(&host, &name).unwrap());
    let leaf = top.0.child("pod/ctr").unwrap();
    // Each limit is set only where the host offers it in the new cgroup (see `offers`).
    let v1 = host.mode() != CgroupMode::V2;
    let has = |c: Controller, file: &str| offers(&host, &leaf, c, file);
    let swap = v1 && has(Controller::Memory, "memory.memsw.limit_in_bytes");
    let quota = has(
        Controller::Cpu,
        if v1 { "cpu.cfs_quota_us" } else { "cpu.max" },
    );
    let cpuset = has(Controller::Cpuset, "cpuset.cpus") && has(Controller::Cpuset, "cpuset.mems");
    let pids = has(Controller::Pids, "pids.max");
    // The first CPU and memory node this cgroup may use (CPU 0 may be offline, node 0
    // memoryless, or the test itself pinned elsewhere).
    let first_of = |file: &str| -> String {
        let root = if v1 {
            host.v1_mount(Controller::Cpuset)
        } else {
            host.unified()
        };
        let text =
            std::fs::read_to_string(root.unwrap().join(leaf.path()).join(file)).unwrap_or_default();
        text.trim()
            .split([',', '-'])
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("0")
            .to_owned()
    };
    let mut res = Resources::default();
    res.memory.limit = Some(256 << 20);
    res.memory.reservation = Some(64 << 20);
    res.cpu.shares = Some(512);
    if quota {
        res.cpu.quota = Some(50_000);
        res.cpu.period = Some(100_000);
    }
    let first_cpu = if cpuset {
        first_of("cpuset.effective_cpus")
    } else {
        String::new()
    };
    if cpuset {
        res.cpu.cpus = Some(first_cpu.clone());
        res.cpu.mems = Some(first_of("cpuset.effective_mems"));
    }
    if pids {
        res.pids.max = Some(100);
    }
    if swap {
        res.memory.swap = Some(512 << 20);
    }
    leaf.set_resources(&res).unwrap();

    if v1 {
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
        assert_eq!(read(Controller::Cpu, "cpu.shares"), "512");
        if quota {
            assert_eq!(read(Controller::Cpu, "cpu.cfs_quota_us"), "50000");
        }
        if cpuset {
            assert_eq!(read(Controller::Cpuset, "cpuset.cpus"), first_cpu);
        }
        if pids {
            assert_eq!(read(Controller::Pids, "pids.max"), "100");
        }
        if swap {
            assert_eq!(
                read(Controller::Memory, "memory.memsw.limit_in_bytes"),
                "536870912"
            );
            // Lowering memory+swap below the current limit in one call works too.
            res.memory.limit = Some(64 << 20);
            res.memory.swap = Some(64 << 20);
            leaf.set_resources(&res).unwrap();
            assert_eq!(
                read(Controller::Memory, "memory.memsw.limit_in_bytes"),
                "67108864"
            );
        }
        // The blkio weight needs the controller *and* one of its weight files: hosts
        // without CFQ/BFQ mount blkio with only the throttle files. Where neither file
        // exists the library must refuse with a clear error, as runc does.
        if let Some(blkio) = host.v1_mount(Controller::Blkio) {
            let mut io = Resources::default();
            io.io.weight = Some(300);
            let files = ["blkio.weight", "blkio.bfq.weight"];
            let dir = blkio.join(leaf.path());
            match files.iter().find(|f| dir.join(f).exists()) {
                Some(file) => {
                    leaf.set_resources(&io).unwrap();
                    let got = std::fs::read_to_string(dir.join(file)).unwrap();
                    assert_eq!(got.trim(), "300", "{file}");
                }
                None => {
                    eprintln!(
                        "skipping the blkio weight: {} has neither of {files:?}",
                        dir.display()
                    );
                    match leaf.set_resources(&io) {
                        Err(kcore_cgroup::Error::ControllerMissing { controller, .. }) => {
                            assert_eq!(controller, "blkio weight");
                        }
                        other => panic!("expected ControllerMissing, got {other:?}"),
                    }
                }
            }
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
    if !have_busybox() {
        return;
    }
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
    if !have_busybox() {
        return;
    }
    let cg = Guard(Cgroup::create(&host, format!("{name}/inner")).unwrap());
    let top = Cgroup::open(&host, &name).unwrap();
    // cgroup.freeze and cgroup.kill came with Linux 5.2 and 5.14.
    for file in ["cgroup.freeze", "cgroup.kill"] {
        if !unified.join(cg.0.path()).join(file).exists() {
            eprintln!("skipping: the unified hierarchy has no {file} (kernel too old)");
            return;
        }
    }
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
