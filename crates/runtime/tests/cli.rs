//! Root tests of the `kcore-runc` command line, driven like a container engine would.

mod common;

use std::os::fd::AsRawFd;
use std::process::{Command, Output};

use common::*;
use serde_json::{json, Value};

/// Runs kcore-runc with stdout/stderr in files: a created container inherits them, so
/// pipes would stay open as long as it lives (as with runc).
fn runc(b: &Bundle, args: &[&str]) -> Output {
    let n = unique_id("io");
    let (op, ep) = (b.file(&format!("{n}.out")), b.file(&format!("{n}.err")));
    let status = Command::new(env!("CARGO_BIN_EXE_kcore-runc"))
        .arg("--root")
        .arg(&b.root)
        .args(args)
        .current_dir(b.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&op).unwrap())
        .stderr(std::fs::File::create(&ep).unwrap())
        .status()
        .unwrap();
    Output {
        status,
        stdout: std::fs::read(&op).unwrap(),
        stderr: std::fs::read(&ep).unwrap(),
    }
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kcore-runc failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn state(b: &Bundle, id: &str) -> Value {
    serde_json::from_str(&ok(&runc(b, &["state", id]))).unwrap()
}

#[test]
#[ignore = "needs root"]
fn lifecycle_create_start_exec_kill_delete() {
    let b = Bundle::new();
    b.write_config(&spec(&["/bin/sleep", "1000"]));
    let id = unique_id("cli");
    let _g = Cleanup {
        runtime: b.runtime(),
        id: id.clone(),
    };
    let pid_file = b.file("pid");
    ok(&runc(
        &b,
        &[
            "create",
            "--bundle",
            ".",
            "--pid-file",
            pid_file.to_str().unwrap(),
            &id,
        ],
    ));
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let s = state(&b, &id);
    assert_eq!(s["status"], "created");
    assert_eq!(s["pid"], pid);
    assert_eq!(s["id"], id.as_str());
    assert!(s["created"].as_str().unwrap().ends_with('Z'));
    // Guards: cannot pause or resume a created container.
    assert!(!runc(&b, &["resume", &id]).status.success());
    ok(&runc(&b, &["start", &id]));
    assert_eq!(state(&b, &id)["status"], "running");
    assert!(
        !runc(&b, &["start", &id]).status.success(),
        "second start accepted"
    );
    let out = ok(&runc(
        &b,
        &[
            "exec",
            &id,
            "/bin/sh",
            "-c",
            "echo in=$(hostname) pid1=$(cat /proc/1/cmdline | head -c 10)",
        ],
    ));
    assert_eq!(out.trim(), "in=kcore-test pid1=/bin/sleep");
    let code = runc(&b, &["exec", &id, "/bin/sh", "-c", "exit 3"])
        .status
        .code();
    assert_eq!(code, Some(3));
    let proc_file = b.file("process.json");
    std::fs::write(
        &proc_file,
        json!({"args": ["/bin/sh", "-c", "echo $WHO $(id -u)"], "cwd": "/", "env": ["WHO=proc"],
               "user": {"uid": 123, "gid": 123}})
        .to_string(),
    )
    .unwrap();
    let out = ok(&runc(
        &b,
        &["exec", "--process", proc_file.to_str().unwrap(), &id],
    ));
    assert_eq!(out.trim(), "proc 123");
    let ps: Vec<i32> =
        serde_json::from_str(&ok(&runc(&b, &["ps", "--format", "json", &id]))).unwrap();
    assert_eq!(ps, vec![pid]);
    // The table is ps(1)'s, filtered to the container (with ps options, as runc).
    let table = ok(&runc(&b, &["ps", &id]));
    let mut rows = table.lines();
    assert!(rows.next().unwrap().contains("PID"), "{table}");
    let rows: Vec<&str> = rows.collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(rows[0].contains("sleep 1000"), "{table}");
    let table = ok(&runc(&b, &["ps", &id, "-o", "pid,comm"]));
    assert_eq!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        [pid.to_string().as_str(), "sleep"]
    );
    ok(&runc(&b, &["pause", &id]));
    assert_eq!(state(&b, &id)["status"], "paused");
    let ev: Value = serde_json::from_str(&ok(&runc(&b, &["events", "--stats", &id]))).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["data"]["pids"]["current"], 1);
    ok(&runc(&b, &["resume", &id]));
    assert!(
        !runc(&b, &["delete", &id]).status.success(),
        "deleted a running container"
    );
    ok(&runc(&b, &["kill", &id, "KILL"]));
    // The killed process is reaped by whoever adopted it; wait until state says stopped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while state(&b, &id)["status"] != "stopped" {
        assert!(
            std::time::Instant::now() < deadline,
            "container did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ok(&runc(&b, &["delete", &id]));
    assert_no_trace(&b, &id, pid);
    assert!(!runc(&b, &["state", &id]).status.success());
}

#[test]
#[ignore = "needs root"]
fn run_foreground_returns_the_exit_code() {
    let b = Bundle::new();
    b.write_config(&spec(&["/bin/sh", "-c", "echo out; exit 7"]));
    let id = unique_id("run");
    let _g = Cleanup {
        runtime: b.runtime(),
        id: id.clone(),
    };
    let o = runc(&b, &["run", &id]);
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_no_trace(&b, &id, 0);
}

#[test]
#[ignore = "needs root"]
fn invalid_config_names_the_field() {
    let b = Bundle::new();
    let mut v = spec(&["/bin/true"]);
    v["linux"]["namespaces"][2]["type"] = json!("nosuchns");
    b.write_config(&v);
    let id = unique_id("inval");
    let o = runc(&b, &["create", &id]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("linux.namespaces[2].type") && err.contains("nosuchns"),
        "{err}"
    );
    assert_no_trace(&b, &id, 0);
    let log = b.file("log.json");
    let o = runc(
        &b,
        &[
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "create",
            &id,
        ],
    );
    assert!(!o.status.success());
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"]
        .as_str()
        .unwrap()
        .contains("linux.namespaces[2].type"));
}

#[test]
#[ignore = "needs root"]
fn terminal_over_console_socket() {
    let b = Bundle::new();
    let mut v = spec(&["/bin/sh", "-c", "tty; echo hello-pty"]);
    v["process"]["terminal"] = json!(true);
    b.write_config(&v);
    let id = unique_id("tty");
    let _g = Cleanup {
        runtime: b.runtime(),
        id: id.clone(),
    };
    let sock = b.file("console.sock");
    let receiver = console_receiver(&sock);
    ok(&runc(
        &b,
        &["create", "--console-socket", sock.to_str().unwrap(), &id],
    ));
    let (master, name) = receiver.join().unwrap();
    assert!(String::from_utf8_lossy(&name).starts_with("/dev/pts/"));
    ok(&runc(&b, &["start", &id]));
    let mut f = std::fs::File::from(master);
    let mut out = Vec::new();
    // Read until the slave side closes (EIO) once the process exits.
    let mut buf = [0u8; 256];
    loop {
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if String::from_utf8_lossy(&out).contains("hello-pty") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("/dev/console") || text.contains("/dev/pts/"),
        "{text}"
    );
    assert!(text.contains("hello-pty\r\n"), "{text:?}");
    ok(&runc(&b, &["delete", "--force", &id]));
    assert_no_trace(&b, &id, 0);
}

#[test]
#[ignore = "needs root"]
fn spec_and_features() {
    let b = Bundle::new();
    ok(&runc(&b, &["spec"]));
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(b.file("config.json")).unwrap()).unwrap();
    assert_eq!(v["root"]["path"], "rootfs");
    kcore_runtime::parse_spec(&v.to_string()).unwrap();
    let f: Value = serde_json::from_str(&ok(&runc(&b, &["features"]))).unwrap();
    assert!(f["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!("user")));
    assert_eq!(f["linux"]["seccomp"]["enabled"], true);
    // The same questions to runc (a Debian package on every machine that runs these).
    let r = Command::new("runc")
        .arg("features")
        .output()
        .expect("runc is installed");
    let r: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(f["ociVersionMin"], r["ociVersionMin"]);
    assert_eq!(f["hooks"], r["hooks"]);
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    // Every mount option and seccomp operator kcore lists is one runc knows too, and
    // kcore knows every namespace runc does.
    for o in names(&f["mountOptions"]) {
        assert!(names(&r["mountOptions"]).contains(&o), "{o}");
    }
    assert_eq!(
        f["linux"]["seccomp"]["operators"],
        r["linux"]["seccomp"]["operators"]
    );
    for ns in names(&r["linux"]["namespaces"]) {
        assert!(names(&f["linux"]["namespaces"]).contains(&ns), "{ns}");
    }
}

#[test]
#[ignore = "needs root"]
fn foreground_run_forwards_signals() {
    let b = Bundle::new();
    b.write_config(&spec(&[
        "/bin/sh",
        "-c",
        "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 1; done",
    ]));
    let id = unique_id("sig");
    let _g = Cleanup {
        runtime: b.runtime(),
        id: id.clone(),
    };
    let out = b.file("sig.out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcore-runc"))
        .arg("--root")
        .arg(&b.root)
        .args(["run", &id])
        .current_dir(b.path())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    // Wait until the container's shell installed its trap.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&out).unwrap().contains("ready") {
        assert!(
            std::time::Instant::now() < deadline,
            "container did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: plain kill(2) of our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(42));
    assert!(std::fs::read_to_string(&out).unwrap().contains("got-term"));
    assert_no_trace(&b, &id, 0);
}

/// `<bin> --root <root> args...` in the bundle, output in files.
fn run_bin(bin: &str, root: &std::path::Path, b: &Bundle, args: &[&str]) -> Output {
    let n = unique_id("io");
    let (op, ep) = (b.file(&format!("{n}.out")), b.file(&format!("{n}.err")));
    let status = Command::new(bin)
        .arg("--root")
        .arg(root)
        .args(args)
        .current_dir(b.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&op).unwrap())
        .stderr(std::fs::File::create(&ep).unwrap())
        .status()
        .unwrap();
    Output {
        status,
        stdout: std::fs::read(&op).unwrap(),
        stderr: std::fs::read(&ep).unwrap(),
    }
}

/// Deletes a runc (or kcore-runc) container on drop.
struct RuncCleanup(std::path::PathBuf, String, String);

impl Drop for RuncCleanup {
    fn drop(&mut self) {
        let _ = Command::new(&self.2)
            .arg("--root")
            .arg(&self.0)
            .args(["delete", "--force", &self.1])
            .output();
    }
}

/// Hook semantics through `run`, one row per hook kind × outcome (ok, exit 7, timeout),
/// each run with kcore-runc and, where installed, runc in the same test:
///
/// - ok: every hook reads the state on stdin; the status each kind sees follows runc
///   (`creating` for prestart, createRuntime and createContainer, `created` for
///   startContainer, `running` for poststart, `stopped` for poststop); runc 1.1 passes
///   `created` to poststart, printed as a difference;
/// - a failing or timed-out prestart/createRuntime/createContainer/startContainer hook
///   fails `run`, the hooks after it do not run, the container is torn down (no state
///   left) and the poststop hooks run: shared with runc, asserted for both;
/// - a failing poststart/poststop hook is logged, the hooks after it run and `run`
///   succeeds (the runtime spec); runc 1.1 stops at the failing hook instead, which the
///   test prints rather than asserts.
#[test]
#[ignore = "needs root"]
fn hook_semantics_per_kind_against_runc() {
    let runc_bin = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if runc_bin.is_none() {
        eprintln!("runc not installed (apt-get install runc): checking kcore-runc only");
    }
    let kinds = [
        ("prestart", "creating"),
        ("createRuntime", "creating"),
        ("createContainer", "creating"),
        ("startContainer", "created"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ];
    // The status field of the state JSON on stdin, with shell expansions only (the
    // startContainer hook runs in the busybox rootfs).
    let status_of = r#"s=$(cat); s=${s#*\"status\":\"}; s=${s%%\"*}"#;
    for (kind, status) in kinds {
        for outcome in ["ok", "fail", "timeout"] {
            let fatal = !matches!(kind, "poststart" | "poststop");
            let fails = fatal && outcome != "ok";
            let case = format!("{kind}/{outcome}");
            let mut runtimes = vec![(env!("CARGO_BIN_EXE_kcore-runc"), true)];
            if let Some(r) = runc_bin {
                runtimes.push((r, false));
            }
            for (bin, ours) in runtimes {
                let b = Bundle::new();
                std::fs::create_dir_all(b.file("hookdir")).unwrap();
                let log = b.file("hookdir/log");
                // startContainer hooks resolve in the container: the log is at /hooks.
                let seen = if kind == "startContainer" {
                    std::path::PathBuf::from("/hooks/log")
                } else {
                    log.clone()
                };
                let sh = |script: String| json!({"path": "/bin/sh", "args": ["sh", "-c", script]});
                let first = match outcome {
                    "ok" => sh(format!("{status_of}; echo {kind}:$s >> {}", seen.display())),
                    "fail" => sh("exit 7".into()),
                    _ => {
                        json!({"path": "/bin/sh", "args": ["sh", "-c", "exec sleep 30"], "timeout": 1})
                    }
                };
                let after = sh(format!("echo after >> {}", seen.display()));
                let mut v = spec(&["/bin/true"]);
                v["mounts"].as_array_mut().unwrap().push(json!({"destination": "/hooks", "type": "bind", "source": b.file("hookdir"), "options": ["rbind", "rw"]}));
                v["hooks"] = json!({ kind: [first, after] });
                if kind != "poststop" {
                    v["hooks"]["poststop"] =
                        json!([sh(format!("echo poststop >> {}", log.display()))]);
                }
                b.write_config(&v);
                let id = unique_id("hookrun");
                let root = if ours {
                    b.root.clone()
                } else {
                    b.file("runc-state")
                };
                let _g = Cleanup {
                    runtime: b.runtime(),
                    id: id.clone(),
                };
                let _r = RuncCleanup(root.clone(), id.clone(), bin.to_string());
                let o = run_bin(bin, &root, &b, &["run", &id]);
                let lines: Vec<String> = std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .lines()
                    .map(String::from)
                    .collect();
                let mut want: Vec<String> = Vec::new();
                if outcome == "ok" {
                    want.push(format!("{kind}:{status}"));
                }
                if !fails {
                    want.push("after".into());
                }
                if kind != "poststop" {
                    want.push("poststop".into());
                }
                let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
                let left = run_bin(bin, &root, &b, &["state", &id]).status.success();
                let matches = o.status.success() != fails && lines == want && !left;
                // runc 1.1 passes `created` to poststart hooks, after the program started.
                let shared = fatal || (outcome == "ok" && kind != "poststart");
                if ours || shared {
                    assert!(
                        matches,
                        "{bin} {case}: status {}, hooks ran {lines:?} (want {want:?}), state left: {left}\n{stderr}",
                        o.status
                    );
                } else if !matches {
                    eprintln!(
                        "runc differs from the runtime spec on {case}: status {}, hooks ran {lines:?} (the spec: {want:?})",
                        o.status
                    );
                }
                if ours {
                    if fails {
                        assert!(stderr.contains(&format!("{kind} hook")), "{case}: {stderr}");
                        assert_no_trace(&b, &id, 0);
                    } else if outcome != "ok" {
                        assert!(
                            stderr.contains(&format!("{kind} hook failed; continuing")),
                            "{case}: {stderr}"
                        );
                    }
                }
            }
        }
    }
}

/// `update` with runc's flags and with `-r resources.json`, done the same way with
/// kcore-runc and with runc in the same test: both leave the same limits in the
/// container's cgroup (a changed limit is changed, an omitted one kept).
#[test]
#[ignore = "needs root"]
fn update_flags_and_resources_file_like_runc() {
    use kcore_cgroup::{CgroupMode, Controller};
    let host = kcore_cgroup::Host::detect().expect("detect cgroups");
    if host.mode() == CgroupMode::V2 {
        eprintln!("skipping: this comparison reads v1 files; the library test covers v2");
        return;
    }
    let pids = host.v1_mount(Controller::Pids).is_some();
    if !pids {
        eprintln!("skipping the pids limit: no pids controller on this host");
    }
    let rt = host
        .v1_mount(Controller::Cpu)
        .is_some_and(|m| m.join("cpu.rt_runtime_us").exists());
    if !rt {
        eprintln!("skipping the realtime flags: no RT group scheduling on this host");
    }
    let b = Bundle::new();
    let read = |ctrl, cg: &str, file: &str| {
        let p = host
            .v1_mount(ctrl)
            .unwrap()
            .join(cg.trim_start_matches('/'))
            .join(file);
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    };
    let res = b.file("resources.json");
    std::fs::write(&res, r#"{"cpu": {"shares": 256}}"#).unwrap();
    let kcore = env!("CARGO_BIN_EXE_kcore-runc");
    let mut seen = Vec::new();
    for bin in [kcore, "runc"] {
        let root = b.path().join(format!("state-{}", seen.len()));
        let id = unique_id("upd");
        let cg = format!("/{id}");
        let mut v = spec(&["/bin/sleep", "1000"]);
        v["linux"]["cgroupsPath"] = json!(cg);
        v["linux"]["resources"] = json!({"memory": {"limit": 67108864}, "cpu": {"shares": 512}});
        b.write_config(&v);
        let _g = RuncCleanup(root.clone(), id.clone(), bin.to_string());
        let run = |args: &[&str]| {
            let o = run_bin(bin, &root, &b, args);
            assert!(
                o.status.success(),
                "{bin} {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run(&["create", "--bundle", ".", &id]);
        run(&["start", &id]);
        let mut args = vec!["update", "--memory", "128M"];
        if rt {
            args.extend(["--cpu-rt-period", "1000000", "--cpu-rt-runtime", "20000"]);
        }
        if pids {
            args.extend(["--pids-limit", "40"]);
        }
        args.push(&id);
        run(&args);
        let after_flags = (
            read(Controller::Memory, &cg, "memory.limit_in_bytes"),
            read(Controller::Cpu, &cg, "cpu.shares"),
            pids.then(|| read(Controller::Pids, &cg, "pids.max")),
            rt.then(|| read(Controller::Cpu, &cg, "cpu.rt_runtime_us")),
        );
        run(&["update", "-r", res.to_str().unwrap(), &id]);
        let after_file = (
            read(Controller::Memory, &cg, "memory.limit_in_bytes"),
            read(Controller::Cpu, &cg, "cpu.shares"),
        );
        run(&["delete", "--force", &id]);
        seen.push((after_flags, after_file));
    }
    let expected = (
        (
            "134217728".to_string(),
            "512".to_string(),
            pids.then(|| "40".to_string()),
            rt.then(|| "20000".to_string()),
        ),
        ("134217728".to_string(), "256".to_string()),
    );
    assert_eq!(seen[0], expected, "kcore-runc");
    assert_eq!(seen[1], expected, "runc");
}

/// A process holding namespaces for a test to join by path; killed on drop.
struct Holder(std::process::Child, i32);

impl Holder {
    /// `unshare <flags> sleep 1000`; with `fork`, the sleeping child (the one inside a
    /// new pid or time namespace) is the process whose namespaces are joined.
    fn new(flags: &[&str], fork: bool) -> Holder {
        let mut cmd = Command::new("unshare");
        cmd.args(flags);
        if fork {
            cmd.arg("--fork");
        }
        let child = cmd
            .args(["sleep", "1000"])
            .spawn()
            .expect("unshare (util-linux)");
        let top = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let pid = loop {
            let inner = if fork {
                std::fs::read_to_string(format!("/proc/{top}/task/{top}/children"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
            } else {
                Some(top)
            };
            // Ready once the sleeping process runs sleep (unshare has set everything up).
            if let Some(p) = inner {
                let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                if comm.trim() == "sleep" {
                    break p;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "unshare did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        Holder(child, pid)
    }

    fn ns_path(&self, proc_name: &str) -> String {
        format!("/proc/{}/ns/{proc_name}", self.1)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child and its sleeping child.
        unsafe {
            libc::kill(self.1, libc::SIGKILL);
            libc::kill(self.0.id() as i32, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// Namespaces as a table, each row created with kcore-runc and, where runc 1.1 offers
/// the same, with runc in the same test; the container's `/proc/PID/ns/*` is then read
/// from outside. Per type: a new namespace differs from the runtime's and the holder's,
/// an absent type is the runtime's own (config-linux.md: "If a namespace type is not
/// specified in the namespaces array, the container MUST inherit the runtime namespace
/// of that type"), a type with a `path` is the namespace at that path (joined, for every
/// type: mount, network, ipc, uts, pid, cgroup, time, user). Rows: all new, none at all,
/// each type left out, each type joined. A row without a mount namespace has no mounts
/// (they are refused, as `shares_the_mount_namespace_when_none_is_asked_for` shows).
/// runc 1.1 has no time namespace, cannot join a user namespace without id maps, and
/// without a mount namespace fails in its chroot (it reads `/proc/self/fd` there before
/// executing): those rows run with kcore-runc only.
#[test]
#[ignore = "needs root"]
fn namespaces_any_subset_and_joined_by_path() {
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum How {
        New,
        Absent,
        Join,
    }
    // (spec type, /proc/PID/ns name, unshare flag)
    const TYPES: [(&str, &str, &str); 8] = [
        ("mount", "mnt", "--mount"),
        ("network", "net", "--net"),
        ("ipc", "ipc", "--ipc"),
        ("uts", "uts", "--uts"),
        ("pid", "pid", "--pid"),
        ("cgroup", "cgroup", "--cgroup"),
        ("time", "time", "--time"),
        ("user", "user", "--user"),
    ];
    // The base row: every type new except time and user (those are rows of their own).
    let base = |t: &str| {
        if matches!(t, "time" | "user") {
            How::Absent
        } else {
            How::New
        }
    };
    let mut rows: Vec<(String, Vec<How>, bool)> = Vec::new();
    let row = |f: &dyn Fn(&str) -> How| TYPES.iter().map(|(t, _, _)| f(t)).collect::<Vec<How>>();
    rows.push(("all new".into(), row(&base), true));
    rows.push(("none".into(), row(&|_| How::Absent), false));
    rows.push((
        "new time".into(),
        row(&|t| if t == "time" { How::New } else { base(t) }),
        false,
    ));
    for (ty, _, _) in TYPES {
        if !matches!(ty, "time" | "user") {
            rows.push((
                format!("no {ty}"),
                row(&|t| if t == ty { How::Absent } else { base(t) }),
                ty != "mount",
            ));
        }
        rows.push((
            format!("join {ty}"),
            row(&|t| if t == ty { How::Join } else { base(t) }),
            !matches!(ty, "time" | "user"),
        ));
    }
    let runc_bin = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if runc_bin.is_none() {
        eprintln!("runc not installed (apt-get install runc): checking kcore-runc only");
    }
    let host_ns = |name: &str| std::fs::read_link(format!("/proc/self/ns/{name}")).unwrap();
    for (name, hows, shared) in &rows {
        let mut runtimes = vec![(env!("CARGO_BIN_EXE_kcore-runc"), true)];
        if let (Some(r), true) = (runc_bin, shared) {
            runtimes.push((r, false));
        }
        for (bin, ours) in runtimes {
            let b = Bundle::new();
            // A fresh holder per run: a container joining a mount namespace pivots it.
            let joined: Vec<&str> = TYPES
                .iter()
                .zip(hows)
                .filter(|(_, h)| **h == How::Join)
                .map(|((_, _, flag), _)| *flag)
                .collect();
            let holder = (!joined.is_empty()).then(|| {
                let h = Holder::new(
                    &joined,
                    joined.iter().any(|f| matches!(*f, "--pid" | "--time")),
                );
                if joined == ["--user"] {
                    // Ids 0-65535 map to themselves, so the spec's devpts gid=5 is valid.
                    for f in ["uid_map", "gid_map"] {
                        std::fs::write(format!("/proc/{}/{f}", h.1), "0 0 65536\n").unwrap();
                    }
                }
                h
            });
            let mut v = spec(&["/bin/sleep", "1000"]);
            v["root"]["readonly"] = json!(false);
            let mut list = Vec::new();
            for ((ty, proc_name, _), how) in TYPES.iter().zip(hows) {
                match how {
                    How::New => list.push(json!({"type": ty})),
                    How::Join => list.push(
                        json!({"type": ty, "path": holder.as_ref().unwrap().ns_path(proc_name)}),
                    ),
                    How::Absent => {}
                }
            }
            v["linux"]["namespaces"] = json!(list);
            if hows[3] == How::Absent {
                v.as_object_mut().unwrap().remove("hostname");
            }
            if hows[0] == How::Absent {
                v["mounts"] = json!([]);
                v["linux"]["maskedPaths"] = json!([]);
                v["linux"]["readonlyPaths"] = json!([]);
            }
            b.write_config(&v);
            let id = unique_id("ns");
            let root = if ours {
                b.root.clone()
            } else {
                b.file("runc-state")
            };
            let _g = Cleanup {
                runtime: b.runtime(),
                id: id.clone(),
            };
            let _r = RuncCleanup(root.clone(), id.clone(), bin.to_string());
            let pid_file = b.file("pid");
            let o = run_bin(
                bin,
                &root,
                &b,
                &[
                    "create",
                    "--bundle",
                    ".",
                    "--pid-file",
                    pid_file.to_str().unwrap(),
                    &id,
                ],
            );
            assert!(
                o.status.success(),
                "{bin} {name}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let pid: i32 = std::fs::read_to_string(&pid_file)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            for ((ty, proc_name, _), how) in TYPES.iter().zip(hows) {
                let got = std::fs::read_link(format!("/proc/{pid}/ns/{proc_name}")).unwrap();
                let host = host_ns(proc_name);
                let held = holder
                    .as_ref()
                    .map(|h| std::fs::read_link(h.ns_path(proc_name)).unwrap());
                match how {
                    How::New => {
                        assert_ne!(got, host, "{bin} {name}: {ty} is the runtime's");
                        assert_ne!(
                            Some(&got),
                            held.as_ref(),
                            "{bin} {name}: {ty} is the holder's"
                        );
                    }
                    How::Absent => assert_eq!(got, host, "{bin} {name}: {ty} not inherited"),
                    How::Join => {
                        assert_eq!(Some(&got), held.as_ref(), "{bin} {name}: {ty} not joined")
                    }
                }
            }
            let o = run_bin(bin, &root, &b, &["delete", "--force", &id]);
            assert!(
                o.status.success(),
                "{bin} {name}: delete: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            if ours {
                assert_no_trace(&b, &id, pid);
            }
        }
    }
}

/// The rest of `linux.resources` (kernel TCP, realtime CPU, blkio device weights and
/// throttles, hugetlb, net_cls, net_prio, rdma, unified) as a table on the real host,
/// each row created with kcore-runc and, where installed, runc in the same test: a
/// field whose controller (or file) the host has is written and read back from
/// cgroupfs; one it lacks fails `create` with an error naming it, and nothing is left
/// (both runtimes refuse alike). v1 and hybrid hosts (the files read are v1's); the
/// fake-cgroupfs unit tests of kcore-cgroup cover v2 and the controllers a host lacks.
#[test]
#[ignore = "needs root"]
fn every_resource_applied_or_refused_like_runc() {
    use kcore_cgroup::{CgroupMode, Controller};
    let host = kcore_cgroup::Host::detect().expect("detect cgroups");
    if host.mode() == CgroupMode::V2 {
        eprintln!("skipping: this comparison reads v1 files; kcore-cgroup's unit tests cover v2");
        return;
    }
    let runc_bin = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if runc_bin.is_none() {
        eprintln!("runc not installed (apt-get install runc): checking kcore-runc only");
    }
    // A block device for the per-device rows: the first in /sys/block.
    let dev = std::fs::read_dir("/sys/block")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("dev")).ok())
        .map(|s| s.trim().to_string())
        .next()
        .expect("a block device");
    let (major, minor) = dev.split_once(':').unwrap();
    let (major, minor): (i64, i64) = (major.parse().unwrap(), minor.parse().unwrap());
    let file_of = |ctrl: Controller, file: &str| -> Option<std::path::PathBuf> {
        host.v1_mount(ctrl).map(|m| m.join(file))
    };
    // (row, resources, controller, file in the container's cgroup, expected content
    // (a substring), the word the refusal names)
    let rows: Vec<(&str, Value, Controller, &str, String, &str)> = vec![
        (
            "kernelTCP",
            json!({"memory": {"kernelTCP": 16777216}}),
            Controller::Memory,
            "memory.kmem.tcp.limit_in_bytes",
            "16777216".into(),
            "kernel TCP",
        ),
        (
            "realtime",
            json!({"cpu": {"realtimePeriod": 1000000, "realtimeRuntime": 10000}}),
            Controller::Cpu,
            "cpu.rt_runtime_us",
            "10000".into(),
            "realtime",
        ),
        (
            "throttleReadBpsDevice",
            json!({"blockIO": {"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}]}}),
            Controller::Blkio,
            "blkio.throttle.read_bps_device",
            format!("{dev} 1048576"),
            "blkio",
        ),
        (
            "throttleWriteIOPSDevice",
            json!({"blockIO": {"throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 50}]}}),
            Controller::Blkio,
            "blkio.throttle.write_iops_device",
            format!("{dev} 50"),
            "blkio",
        ),
        (
            "weightDevice",
            json!({"blockIO": {"weightDevice": [{"major": major, "minor": minor, "weight": 500}]}}),
            Controller::Blkio,
            "blkio.weight_device",
            format!("{dev} 500"),
            "blkio weight",
        ),
        (
            "hugepageLimits",
            json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]}),
            Controller::Hugetlb,
            "hugetlb.2MB.limit_in_bytes",
            "4194304".into(),
            "hugetlb",
        ),
        (
            "network.classID",
            json!({"network": {"classID": 1048577}}),
            Controller::NetCls,
            "net_cls.classid",
            "1048577".into(),
            "net_cls",
        ),
        (
            "network.priorities",
            json!({"network": {"priorities": [{"name": "lo", "priority": 5}]}}),
            Controller::NetPrio,
            "net_prio.ifpriomap",
            "lo 5".into(),
            "net_prio",
        ),
        (
            "rdma",
            json!({"rdma": {"mlx5_0": {"hcaHandles": 3}}}),
            Controller::Rdma,
            "rdma.max",
            "mlx5_0".into(),
            "rdma",
        ),
    ];
    let mut rows: Vec<(&str, Value, Option<std::path::PathBuf>, String, &str)> = rows
        .into_iter()
        .map(|(n, r, c, f, want, word)| (n, r, file_of(c, "").map(|d| d.join(f)), want, word))
        .collect();
    // unified: refused on v1 and hybrid hosts by both runtimes.
    rows.push((
        "unified",
        json!({"unified": {"memory.high": "1G"}}),
        None,
        String::new(),
        "unified",
    ));
    for (row, res, file, want, word) in &rows {
        // The file exists in the root cgroup when the host has what the row needs (a
        // weight file needs CFQ or BFQ, an rdma device needs the hardware).
        let applies = file.as_ref().is_some_and(|f| f.exists()) && *row != "rdma";
        let mut runtimes = vec![(env!("CARGO_BIN_EXE_kcore-runc"), true)];
        if let Some(r) = runc_bin {
            runtimes.push((r, false));
        }
        for (bin, ours) in runtimes {
            let b = Bundle::new();
            let id = unique_id("res");
            let mut v = spec(&["/bin/sleep", "1000"]);
            v["linux"]["cgroupsPath"] = json!(format!("/{id}"));
            v["linux"]["resources"] = res.clone();
            b.write_config(&v);
            let root = if ours {
                b.root.clone()
            } else {
                b.file("runc-state")
            };
            let _g = Cleanup {
                runtime: b.runtime(),
                id: id.clone(),
            };
            let _r = RuncCleanup(root.clone(), id.clone(), bin.to_string());
            let o = run_bin(bin, &root, &b, &["create", "--bundle", ".", &id]);
            let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
            if applies {
                assert!(o.status.success(), "{bin} {row}: {stderr}");
                let f = file.as_ref().unwrap();
                let in_cg = f.parent().unwrap().join(&id).join(f.file_name().unwrap());
                let got = std::fs::read_to_string(&in_cg).unwrap();
                if !ours && *row == "kernelTCP" && !got.contains(want.as_str()) {
                    // runc 1.1 drops kernelTCP along with the obsolete kernel memory limit.
                    eprintln!("runc differs on {row}: {} holds {got:?}", in_cg.display());
                    run_bin(bin, &root, &b, &["delete", "--force", &id]);
                    continue;
                }
                assert!(
                    got.contains(want.as_str()),
                    "{bin} {row}: {} holds {got:?}, want {want:?}",
                    in_cg.display()
                );
                let o = run_bin(bin, &root, &b, &["delete", "--force", &id]);
                assert!(o.status.success(), "{bin} {row}: delete");
            } else {
                assert!(
                    !o.status.success(),
                    "{bin} {row}: accepted on a host without it"
                );
                if ours {
                    assert!(
                        stderr.contains(word),
                        "{row}: the error does not name {word}: {stderr}"
                    );
                    assert_no_trace(&b, &id, 0);
                    for d in host.all_roots() {
                        assert!(
                            !d.join(&id).exists(),
                            "{row}: cgroup {} left",
                            d.join(&id).display()
                        );
                    }
                }
                let left = run_bin(bin, &root, &b, &["state", &id]).status.success();
                assert!(!left, "{bin} {row}: state left after a refused create");
            }
        }
    }
}

/// AppArmor and SELinux settings on a host without the LSM, as a table: kcore-runc
/// refuses `create` with an error naming the field and the LSM and leaves nothing;
/// runc, in the same test where installed, refuses the same configs.
#[test]
#[ignore = "needs root"]
fn lsm_settings_refused_like_runc() {
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim_end() == "Y");
    let selinux = std::path::Path::new("/sys/fs/selinux/enforce").exists();
    let runc_bin = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if runc_bin.is_none() {
        eprintln!("runc not installed (apt-get install runc): checking kcore-runc only");
    }
    // (field, host has it, LSM name); runc 1.1 refuses each as well.
    let rows = [
        ("process.apparmorProfile", apparmor, "AppArmor"),
        ("process.selinuxLabel", selinux, "SELinux"),
        ("linux.mountLabel", selinux, "SELinux"),
    ];
    for (field, host_has_it, lsm) in rows {
        if host_has_it {
            eprintln!("skipping {field}: this host has {lsm} enabled");
            continue;
        }
        let mut runtimes = vec![(env!("CARGO_BIN_EXE_kcore-runc"), true)];
        if let Some(r) = runc_bin {
            runtimes.push((r, false));
        }
        for (bin, ours) in runtimes {
            let b = Bundle::new();
            let mut v = spec(&["/bin/true"]);
            let (section, key) = field.split_once('.').unwrap();
            v[section][key] = json!("kcore_test_t");
            b.write_config(&v);
            let id = unique_id("lsm");
            let root = if ours {
                b.root.clone()
            } else {
                b.file("runc-state")
            };
            let _g = Cleanup {
                runtime: b.runtime(),
                id: id.clone(),
            };
            let _r = RuncCleanup(root.clone(), id.clone(), bin.to_string());
            let o = run_bin(bin, &root, &b, &["run", &id]);
            let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
            if ours {
                assert!(!o.status.success(), "{field}: accepted");
                assert!(
                    stderr.contains(&format!(
                        "{field} needs {lsm}, which this host does not offer"
                    )),
                    "{field}: {stderr}"
                );
                assert_no_trace(&b, &id, 0);
            } else {
                assert!(!o.status.success(), "runc {field}: accepted");
            }
        }
    }
}

/// `exec` as the engines drive it, as a table run with kcore-runc and, where installed,
/// runc in the same test, on a running container: `-d --pid-file` returns at once with
/// the pid of a process inside the container's pid namespace; `--pid-file` in the
/// foreground; `--preserve-fds 1` hands the caller's fd 3 to the process; `-d -t
/// --console-socket` sends the pty master, on which the process's output arrives (a
/// console socket without `-d` is refused, as runc refuses it).
#[test]
#[ignore = "needs root"]
fn exec_options_like_runc() {
    let runc_bin = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if runc_bin.is_none() {
        eprintln!("runc not installed (apt-get install runc): checking kcore-runc only");
    }
    let mut runtimes = vec![(env!("CARGO_BIN_EXE_kcore-runc"), true)];
    if let Some(r) = runc_bin {
        runtimes.push((r, false));
    }
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    for (bin, ours) in runtimes {
        let b = Bundle::new();
        b.write_config(&spec(&["/bin/sleep", "1000"]));
        let id = unique_id("execopt");
        let root = if ours {
            b.root.clone()
        } else {
            b.file("runc-state")
        };
        let _g = Cleanup {
            runtime: b.runtime(),
            id: id.clone(),
        };
        let _r = RuncCleanup(root.clone(), id.clone(), bin.to_string());
        let init_pid = b.file("init.pid");
        let must = |args: &[&str]| {
            let o = run_bin(bin, &root, &b, args);
            assert!(
                o.status.success(),
                "{bin} {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        must(&["run", "-d", "--pid-file", init_pid.to_str().unwrap(), &id]);
        let init: i32 = std::fs::read_to_string(&init_pid)
            .unwrap()
            .trim()
            .parse()
            .unwrap();

        // exec -d --pid-file
        let pf = b.file("exec-d.pid");
        must(&[
            "exec",
            "-d",
            "--pid-file",
            pf.to_str().unwrap(),
            &id,
            "/bin/sleep",
            "77",
        ]);
        let pid: i32 = std::fs::read_to_string(&pf)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(
            ns(pid),
            ns(init),
            "{bin}: detached exec not in the container"
        );
        // The pid file is written once the process exists, which can be just before its
        // execve(2) completes (runc alike): wait for the command line to become the exec'd one.
        let want = b"/bin/sleep\x0077\x00";
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let cmdline = loop {
            let got = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if got == want || std::time::Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(cmdline, want, "{bin}");
        // SAFETY: kill(2) of the detached process.
        unsafe { libc::kill(pid, libc::SIGKILL) };

        // foreground exec --pid-file
        let pf = b.file("exec-fg.pid");
        let out = must(&[
            "exec",
            "--pid-file",
            pf.to_str().unwrap(),
            &id,
            "/bin/sh",
            "-c",
            "echo $$",
        ]);
        let written: i32 = std::fs::read_to_string(&pf)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            written > 0 && out.trim().parse::<i32>().is_ok(),
            "{bin}: {out}"
        );

        // --preserve-fds 1: the caller's fd 3 reaches the process.
        let got = b.file("fd3.out");
        let st = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"exec 3>"$OUT"; exec "$BIN" --root "$ROOT" exec --preserve-fds 1 "$ID" /bin/sh -c 'echo preserved >&3'"#)
            .env("OUT", &got)
            .env("BIN", bin)
            .env("ROOT", &root)
            .env("ID", &id)
            .status()
            .unwrap();
        assert!(st.success(), "{bin}: exec --preserve-fds");
        assert_eq!(
            std::fs::read_to_string(&got).unwrap(),
            "preserved\n",
            "{bin}"
        );

        // -t --console-socket
        let sock = b.file("exec-console.sock");
        let master = console_receiver(&sock);
        let reader = std::thread::spawn(move || {
            let (master, _) = master.join().unwrap();
            let mut f = std::fs::File::from(master);
            let mut out = Vec::new();
            let mut buf = [0u8; 256];
            while !String::from_utf8_lossy(&out).contains("hello-exec") {
                match std::io::Read::read(&mut f, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        });
        // In the foreground a console socket is refused (runc's rule).
        let o = run_bin(
            bin,
            &root,
            &b,
            &[
                "exec",
                "-t",
                "--console-socket",
                sock.to_str().unwrap(),
                &id,
                "/bin/true",
            ],
        );
        assert!(
            !o.status.success(),
            "{bin}: foreground exec took a console socket"
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("cannot use console socket"),
            "{bin}"
        );
        let pf = b.file("exec-tty.pid");
        must(&[
            "exec",
            "-d",
            "-t",
            "--console-socket",
            sock.to_str().unwrap(),
            "--pid-file",
            pf.to_str().unwrap(),
            &id,
            "/bin/sh",
            "-c",
            "tty; echo hello-exec; sleep 5",
        ]);
        let text = reader.join().unwrap();
        assert!(
            text.contains("/dev/pts/") && text.contains("hello-exec\r\n"),
            "{bin}: {text:?}"
        );

        must(&["delete", "--force", &id]);
        if ours {
            assert_no_trace(&b, &id, init);
        }
    }
}

/// `events` reports an OOM kill in the container as `{"type":"oom"}` while it streams
/// stats, with kcore-runc and, where installed, runc in the same test.
#[test]
#[ignore = "needs root"]
fn events_report_oom_like_runc() {
    let runc_bin = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if runc_bin.is_none() {
        eprintln!("runc not installed (apt-get install runc): checking kcore-runc only");
    }
    let mut runtimes = vec![(env!("CARGO_BIN_EXE_kcore-runc"), true)];
    if let Some(r) = runc_bin {
        runtimes.push((r, false));
    }
    for (bin, ours) in runtimes {
        let b = Bundle::new();
        let id = unique_id("oom");
        let mut v = spec(&["/bin/sleep", "1000"]);
        let limit = 16 << 20;
        v["linux"]["resources"] =
            json!({"memory": {"limit": limit, "swap": limit, "swappiness": 0}});
        b.write_config(&v);
        let root = if ours {
            b.root.clone()
        } else {
            b.file("runc-state")
        };
        let _g = Cleanup {
            runtime: b.runtime(),
            id: id.clone(),
        };
        let _r = RuncCleanup(root.clone(), id.clone(), bin.to_string());
        let o = run_bin(bin, &root, &b, &["run", "-d", &id]);
        assert!(
            o.status.success(),
            "{bin}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let log = b.file("events.out");
        let mut events = Command::new(bin)
            .arg("--root")
            .arg(&root)
            .args(["events", "--interval", "1s", &id])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // A shell that reads 64 MB into a variable, in a 16 MiB cgroup without swap.
        let o = run_bin(
            bin,
            &root,
            &b,
            &[
                "exec",
                &id,
                "/bin/sh",
                "-c",
                "a=$(head -c 64000000 /dev/urandom); echo survived",
            ],
        );
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("survived"),
            "{bin}: no OOM kill"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut text = String::new();
        while std::time::Instant::now() < deadline {
            text = std::fs::read_to_string(&log).unwrap_or_default();
            // the OOM event can come before the first stats interval has passed
            if text.lines().any(|l| l.contains(r#""type":"oom""#))
                && text.contains(r#""type":"stats""#)
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = events.kill();
        let _ = events.wait();
        let oom: Value = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["type"] == "oom")
            .unwrap_or_else(|| panic!("{bin}: no oom event in {text}"));
        assert_eq!(oom["id"], id.as_str(), "{bin}");
        assert!(
            text.contains(r#""type":"stats""#),
            "{bin}: no stats event in {text}"
        );
        let o = run_bin(bin, &root, &b, &["delete", "--force", &id]);
        assert!(o.status.success(), "{bin}: delete");
    }
}

/// `linux.intelRdt` on a host without a resctrl mount is refused before anything is
/// made, by kcore-runc and, in the same test where installed, by runc.
#[test]
#[ignore = "needs root"]
fn intel_rdt_refused_without_resctrl_like_runc() {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    if mi.lines().any(|l| l.contains(" - resctrl ")) {
        eprintln!("skipped: this host has resctrl mounted (the refusal path needs a host without)");
        return;
    }
    let runc_bin = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let mut runtimes = vec![(env!("CARGO_BIN_EXE_kcore-runc"), true)];
    if let Some(r) = runc_bin {
        runtimes.push((r, false));
    } else {
        eprintln!("runc not installed (apt-get install runc): checking kcore-runc only");
    }
    for (bin, ours) in runtimes {
        let b = Bundle::new();
        let mut v = spec(&["/bin/true"]);
        v["linux"]["intelRdt"] = json!({"closID": "kcore-test", "l3CacheSchema": "L3:0=f"});
        b.write_config(&v);
        let id = unique_id("rdt");
        let root = if ours {
            b.root.clone()
        } else {
            b.file("runc-state")
        };
        let _g = Cleanup {
            runtime: b.runtime(),
            id: id.clone(),
        };
        let _r = RuncCleanup(root.clone(), id.clone(), bin.to_string());
        let o = run_bin(bin, &root, &b, &["run", &id]);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "{bin}: intelRdt accepted");
        if ours {
            assert!(
                stderr.contains("linux.intelRdt is set, but this host cannot apply Intel RDT")
                    && stderr.contains("no resctrl filesystem is mounted"),
                "{stderr}"
            );
            assert_no_trace(&b, &id, 0);
        } else {
            eprintln!("runc: {}", stderr.trim());
        }
    }
}

/// `update --l3-cache-schema/--mem-bw-schema` and the `intel_rdt` part of
/// `events --stats`, with kcore-runc and runc in the same test. On a host with resctrl
/// mounted: the update makes the container's group with its process in it and writes
/// the root group's own (always valid) L3 line, and the stats report it. Without
/// resctrl (this machine): both runtimes refuse the update, and the stats carry an
/// empty `intel_rdt`, as runc's do.
#[test]
#[ignore = "needs root"]
fn intel_rdt_update_and_stats_like_runc() {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let resctrl = mi.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let target = pre.split_whitespace().nth(4)?;
        (post.split_whitespace().next()? == "resctrl").then(|| std::path::PathBuf::from(target))
    });
    let l3_root = resctrl.as_ref().and_then(|r| {
        std::fs::read_to_string(r.join("schemata"))
            .ok()?
            .lines()
            .find(|l| l.trim_start().starts_with("L3:"))
            .map(|l| l.trim().to_string())
    });
    match (&resctrl, &l3_root) {
        (None, _) => eprintln!(
            "this host has no resctrl mounted (/sys/fs/resctrl): checking the refusal path \
             and the empty intel_rdt stats; the writing is unit-tested on a fake resctrl"
        ),
        (Some(r), None) => eprintln!(
            "resctrl at {} has no L3 allocation: checking the refusal path",
            r.display()
        ),
        (Some(r), Some(_)) => eprintln!("resctrl at {}: checking the real path", r.display()),
    }
    let runc_bin = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let mut runtimes = vec![(env!("CARGO_BIN_EXE_kcore-runc"), true)];
    match runc_bin {
        Some(r) => runtimes.push((r, false)),
        None => eprintln!("runc not installed (apt-get install runc): checking kcore-runc only"),
    }
    for (bin, ours) in runtimes {
        let b = Bundle::new();
        let id = unique_id("rdtu");
        b.write_config(&spec(&["/bin/sleep", "1000"]));
        let root = if ours {
            b.root.clone()
        } else {
            b.file("runc-state")
        };
        let _g = Cleanup {
            runtime: b.runtime(),
            id: id.clone(),
        };
        let _r = RuncCleanup(root.clone(), id.clone(), bin.to_string());
        let o = run_bin(bin, &root, &b, &["run", "-d", &id]);
        assert!(o.status.success(), "{bin}: run -d");
        let schema = l3_root.clone().unwrap_or_else(|| "L3:0=f".into());
        let o = run_bin(
            bin,
            &root,
            &b,
            &["update", "--l3-cache-schema", &schema, &id],
        );
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let stats = |b: &Bundle| -> Value {
            let o = run_bin(bin, &root, b, &["events", "--stats", &id]);
            assert!(o.status.success(), "{bin}: events --stats");
            serde_json::from_slice(&o.stdout).unwrap()
        };
        if l3_root.is_some() {
            assert!(o.status.success(), "{bin}: update: {stderr}");
            let group = resctrl.as_ref().unwrap().join(&id);
            let pid = state_of(bin, &root, &b, &id)["pid"].as_i64().unwrap();
            let tasks = std::fs::read_to_string(group.join("tasks")).unwrap();
            assert!(
                tasks.lines().any(|t| t == pid.to_string()),
                "{bin}: {tasks}"
            );
            let s = stats(&b);
            assert_eq!(
                s["data"]["intel_rdt"]["l3_cache_schema"], schema,
                "{bin}: {s}"
            );
            assert!(s["data"]["intel_rdt"]["l3_cache_info"]["cbm_mask"].is_string());
        } else {
            assert!(
                !o.status.success(),
                "{bin}: update accepted without L3 allocation"
            );
            assert!(
                stderr.contains("Intel RDT/CAT: l3 cache schema is not enabled")
                    || (ours && stderr.contains("no resctrl filesystem is mounted")),
                "{bin}: {stderr}"
            );
            let s = stats(&b);
            assert_eq!(s["data"]["intel_rdt"], json!({}), "{bin}: {s}");
        }
        let o = run_bin(bin, &root, &b, &["delete", "--force", &id]);
        assert!(o.status.success(), "{bin}: delete");
        if let Some(r) = &resctrl {
            assert!(!r.join(&id).exists(), "{bin}: resctrl group left behind");
        }
    }
}

fn state_of(bin: &str, root: &std::path::Path, b: &Bundle, id: &str) -> Value {
    let o = run_bin(bin, root, b, &["state", id]);
    assert!(o.status.success(), "{bin}: state");
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The CRIU the checkpoint tests use (`$KCORE_CRIU`, else `criu`), when `criu check`
/// passes on this host; otherwise prints why the test skips.
fn working_criu() -> Option<String> {
    let criu = std::env::var("KCORE_CRIU").unwrap_or_else(|_| "criu".into());
    match Command::new(&criu).arg("check").output() {
        Ok(o) if o.status.success() => Some(criu),
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr)
                .lines()
                .filter(|l| l.contains("Error"))
                .map(str::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            eprintln!(
                "skipped: `{criu} check` fails on this host ({why}); set KCORE_CRIU to a CRIU \
                 that works here (e.g. Debian trixie's criu 4.1 on kernel 6.x)"
            );
            None
        }
        Err(e) => {
            eprintln!("skipped: {criu} cannot run ({e}); apt-get install criu");
            None
        }
    }
}

/// Pipes a container got as its stdio (kept open for as long as it should live).
struct Stdio3 {
    _pipes: (
        std::process::ChildStdin,
        std::process::ChildStdout,
        std::process::ChildStderr,
    ),
}

/// `<bin> --root <root> args...` with pipes as stdio, as runc's checkpoint tests run
/// containers (CRIU hands pipes over through `descriptors.json`; a host file as stdio
/// lies outside the container's mounts). Returns the output of the command itself
/// (what was on stderr once it exited) and the pipes.
fn run_piped(
    bin: &str,
    root: &std::path::Path,
    b: &Bundle,
    args: &[&str],
) -> (bool, String, Stdio3) {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut child = Command::new(bin)
        .arg("--root")
        .arg(root)
        .args(args)
        .current_dir(b.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Taken before waiting: wait() closes a child's stdin.
    let stdin = child.stdin.take().unwrap();
    let ok = child.wait().unwrap().success();
    let mut err = child.stderr.take().unwrap();
    // The container holds the write end: read what is there without waiting for EOF.
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fd = err.as_raw_fd();
        libc::fcntl(
            fd,
            libc::F_SETFL,
            libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
        );
    }
    let mut buf = Vec::new();
    let _ = err.read_to_end(&mut buf);
    let pipes = Stdio3 {
        _pipes: (stdin, child.stdout.take().unwrap(), err),
    };
    (ok, String::from_utf8_lossy(&buf).into_owned(), pipes)
}

/// The counter a checkpointed container writes, or `None` while the file is being
/// rewritten.
fn counter(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn wait_counter(path: &std::path::Path, at_least: u64) -> u64 {
    for _ in 0..300 {
        if let Some(n) = counter(path).filter(|n| *n >= at_least) {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("counter in {} never reached {at_least}", path.display());
}

/// Checkpoint a container running a counter, restore it under a new id from a new
/// bundle, and the counter continues from where it stopped; then `--leave-running`
/// keeps the restored one running; and a `--pre-dump` either works or is refused
/// naming the missing memory tracking. Run with kcore-runc and, in the same test,
/// runc (given the same `--criu`). Skipped with the reason where `criu check` fails.
#[test]
#[ignore = "needs root"]
fn checkpoint_restore_counter_continues_like_runc() {
    let Some(criu) = working_criu() else {
        return;
    };
    let runc_bin = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let mut runtimes = vec![(env!("CARGO_BIN_EXE_kcore-runc"), true)];
    match runc_bin {
        Some(r) => runtimes.push((r, false)),
        None => eprintln!("runc not installed (apt-get install runc): checking kcore-runc only"),
    }
    for (bin, ours) in runtimes {
        let b = Bundle::new();
        let out = b.file("out");
        std::fs::create_dir_all(&out).unwrap();
        let count = out.join("count");
        let mut v = spec(&[
            "/bin/sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /out/count; sleep 0.05; done",
        ]);
        v["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/out", "type": "bind", "source": out, "options": ["rbind", "rw"]
        }));
        b.write_config(&v);
        let root = if ours {
            b.root.clone()
        } else {
            b.file("runc-state")
        };
        let (id1, id2) = (unique_id("cr1"), unique_id("cr2"));
        let _g1 = RuncCleanup(root.clone(), id1.clone(), bin.to_string());
        let _g2 = RuncCleanup(root.clone(), id2.clone(), bin.to_string());
        let with_criu = |args: &[&str]| -> Output {
            let mut a = vec!["--criu", criu.as_str()];
            a.extend(args);
            run_bin(bin, &root, &b, &a)
        };
        let crit = |args: &[&str]| {
            let mut a = vec!["--criu", criu.as_str()];
            a.extend(args);
            run_piped(bin, &root, &b, &a)
        };
        let (ok, err, _io1) = crit(&["run", "-d", &id1]);
        assert!(ok, "{bin}: run: {err}");
        let before = wait_counter(&count, 20);
        let img = b.file("img");
        let o = with_criu(&["checkpoint", "--image-path", img.to_str().unwrap(), &id1]);
        assert!(
            o.status.success(),
            "{bin}: checkpoint: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Frozen between the truncation and the write, the file is empty: the value
        // being written is past the last one read.
        let raw = std::fs::read_to_string(&count).unwrap();
        let stopped_at = raw.trim().parse().unwrap_or(before);
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert_eq!(
            std::fs::read_to_string(&count).unwrap(),
            raw,
            "{bin}: still counting after checkpoint"
        );
        assert!(
            !run_bin(bin, &root, &b, &["state", &id1]).status.success(),
            "{bin}: container kept"
        );
        let fds: Vec<String> =
            serde_json::from_slice(&std::fs::read(img.join("descriptors.json")).unwrap()).unwrap();
        assert!(
            fds.len() == 3 && fds.iter().all(|f| f.starts_with("pipe:[")),
            "{bin}: {fds:?}"
        );

        // A new bundle: same files, another directory.
        let b2 = Bundle::new();
        b2.write_config(&v);
        let pid_file = b.file(&format!("{id2}.pid"));
        let (ok, err, _io2) = crit(&[
            "restore",
            "-d",
            "--bundle",
            b2.path().to_str().unwrap(),
            "--image-path",
            img.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            &id2,
        ]);
        assert!(ok, "{bin}: restore: {err}");
        let first = wait_counter(&count, stopped_at + 1);
        assert!(first > stopped_at, "{bin}");
        // Continued, not restarted: every value seen from now on is past the stop.
        for _ in 0..10 {
            if let Some(n) = counter(&count) {
                assert!(
                    n > stopped_at,
                    "{bin}: counter restarted ({n} <= {stopped_at})"
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        let st = state_of(bin, &root, &b, &id2);
        assert_eq!(st["status"], "running", "{bin}: {st}");
        let pid: i64 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(st["pid"].as_i64(), Some(pid), "{bin}: --pid-file");

        // --leave-running: the images are written and the container keeps counting.
        let img2 = b.file("img2");
        let o = with_criu(&[
            "checkpoint",
            "--leave-running",
            "--image-path",
            img2.to_str().unwrap(),
            &id2,
        ]);
        assert!(
            o.status.success(),
            "{bin}: checkpoint --leave-running: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(img2.join("inventory.img").exists(), "{bin}: no images");
        let now = counter(&count).unwrap_or(0);
        wait_counter(&count, now + 5);
        assert_eq!(state_of(bin, &root, &b, &id2)["status"], "running", "{bin}");

        // --pre-dump needs the kernel's soft-dirty tracking.
        let pre = b.file("pre");
        let o = with_criu(&[
            "checkpoint",
            "--pre-dump",
            "--image-path",
            pre.to_str().unwrap(),
            &id2,
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        if o.status.success() {
            assert_eq!(
                state_of(bin, &root, &b, &id2)["status"],
                "running",
                "{bin}: pre-dump"
            );
        } else {
            eprintln!("{bin}: --pre-dump refused here: {}", stderr.trim());
            if ours {
                assert!(stderr.contains("--memory-track"), "{stderr}");
            }
        }
        let o = run_bin(bin, &root, &b, &["delete", "--force", &id2]);
        assert!(o.status.success(), "{bin}: delete");
    }
}

/// A loopback TCP port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for `child` (a CRIU daemon or a background checkpoint) for up to 60 s,
/// killing it and failing the test when it does not end.
fn wait_child(what: &str, child: &mut std::process::Child, log: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(
                st.success(),
                "{what}: {st}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            return;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not end in 60 s\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Starts `criu args...` in the background with its output in `log`, after the
/// listening socket it opens is up (CRIU's page server and lazy-pages daemon).
fn criu_daemon(criu: &str, args: &[&str], log: &std::path::Path) -> std::process::Child {
    Command::new(criu)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{criu}: {e}"))
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
fn wait_listening(port: u16, what: &str) {
    for _ in 0..500 {
        if std::fs::read_to_string("/proc/net/tcp")
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // local address 0100007F:PORT or 00000000:PORT, state 0A (LISTEN)
                f.len() > 3 && f[3] == "0A" && f[1].ends_with(&format!(":{port:04X}"))
            })
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("{what} never listened on port {port}");
}

/// Memory over the network, as a live migration moves it: a counter checkpointed
/// through CRIU's page server (`checkpoint --page-server`, the pages landing in the
/// server's directory, the other images in `--image-path`) is restored from the two
/// put together and continues; then, where the kernel offers userfaultfd to CRIU
/// (`criu check --feature uffd-noncoop`), `checkpoint --lazy-pages --page-server
/// --status-fd` keeps the pages on the source, `criu lazy-pages` serves them to a
/// `restore --lazy-pages`, and the counter goes on again. Run with kcore-runc and, in
/// the same test, runc (given the same `--criu`). Skipped with the reason where
/// `criu check` fails.
#[test]
#[ignore = "needs root"]
fn checkpoint_over_a_page_server_and_lazy_pages_like_runc() {
    let Some(criu) = working_criu() else {
        return;
    };
    // Lazy migration needs userfaultfd, and CRIU lifting RLIMIT_NOFILE for itself
    // (CAP_SYS_RESOURCE): without it the source's lazy page server fails its transfer
    // ("page-pipe: splice: Bad file descriptor"), with runc as with kcore-runc.
    let uffd = Command::new(&criu)
        .args(["check", "--feature", "uffd-noncoop"])
        .output()
        .is_ok_and(|o| o.status.success());
    let sys_resource = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        // bit 24: CAP_SYS_RESOURCE
        .is_some_and(|caps| caps & (1 << 24) != 0);
    let lazy = match (uffd, sys_resource) {
        (false, _) => {
            eprintln!("lazy pages not exercised: `{criu} check --feature uffd-noncoop` fails here");
            false
        }
        (true, false) => {
            eprintln!(
                "lazy pages not exercised: this process lacks CAP_SYS_RESOURCE, so CRIU \
                 cannot lift RLIMIT_NOFILE and its lazy page server fails (runc too)"
            );
            false
        }
        (true, true) => true,
    };
    let runc_bin = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let mut runtimes = vec![env!("CARGO_BIN_EXE_kcore-runc")];
    match runc_bin {
        Some(r) => runtimes.push(r),
        None => eprintln!("runc not installed (apt-get install runc): checking kcore-runc only"),
    }
    for bin in runtimes {
        let b = Bundle::new();
        let out = b.file("out");
        std::fs::create_dir_all(&out).unwrap();
        let count = out.join("count");
        let mut v = spec(&[
            "/bin/sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /out/count; sleep 0.05; done",
        ]);
        v["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/out", "type": "bind", "source": out, "options": ["rbind", "rw"]
        }));
        b.write_config(&v);
        let root = b.file("state");
        let ids = [unique_id("ps1"), unique_id("ps2"), unique_id("ps3")];
        let _guards: Vec<_> = ids
            .iter()
            .map(|id| RuncCleanup(root.clone(), id.clone(), bin.to_string()))
            .collect();
        let with_criu = |args: &[&str]| {
            let mut a = vec!["--criu", criu.as_str()];
            a.extend(args);
            run_piped(bin, &root, &b, &a)
        };
        let (ok, err, _io1) = with_criu(&["run", "-d", &ids[0]]);
        assert!(ok, "{bin}: run: {err}");
        wait_counter(&count, 10);

        // Dump through a page server into another directory.
        let (img, pages) = (b.file("img"), b.file("pages"));
        std::fs::create_dir_all(&pages).unwrap();
        let port = free_port();
        let ps_log = b.file("page-server.log");
        let mut ps = criu_daemon(
            &criu,
            &[
                "page-server",
                "--images-dir",
                pages.to_str().unwrap(),
                "--address",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "-o",
                ps_log.to_str().unwrap(),
                "-v4",
            ],
            &b.file("page-server.out"),
        );
        wait_listening(port, "criu page-server");
        let o = run_bin(
            bin,
            &root,
            &b,
            &[
                "--criu",
                &criu,
                "checkpoint",
                "--page-server",
                &format!("127.0.0.1:{port}"),
                "--image-path",
                img.to_str().unwrap(),
                &ids[0],
            ],
        );
        assert!(
            o.status.success(),
            "{bin}: checkpoint --page-server: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        wait_child("criu page-server", &mut ps, &ps_log);
        let names = |d: &std::path::Path| -> Vec<String> {
            std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        let is_pages = |n: &String| n.starts_with("pages-") || n.starts_with("pagemap-");
        assert!(
            names(&pages).iter().any(|n| n.starts_with("pages-")),
            "{bin}: the page server received no pages: {:?}",
            names(&pages)
        );
        assert!(
            !names(&img).iter().any(is_pages),
            "{bin}: pages written locally too: {:?}",
            names(&img)
        );
        let stopped_at = counter(&count).unwrap_or(0);
        // The rest of the images join the pages, as on a migration's destination.
        for n in names(&img) {
            if !n.ends_with(".log") {
                std::fs::copy(img.join(&n), pages.join(&n)).unwrap();
            }
        }
        let (ok, err, _io2) = with_criu(&[
            "restore",
            "-d",
            "--image-path",
            pages.to_str().unwrap(),
            &ids[1],
        ]);
        assert!(ok, "{bin}: restore from the page server's images: {err}");
        let first = wait_counter(&count, stopped_at + 1);
        assert!(first > stopped_at, "{bin}");
        assert_eq!(
            state_of(bin, &root, &b, &ids[1])["status"],
            "running",
            "{bin}"
        );
        if !lazy {
            continue;
        }

        // Lazy migration: the source keeps the pages and serves them on demand.
        let lazy = b.file("lazy");
        let port = free_port();
        let mut fds = [0; 2];
        // SAFETY: valid out array; without O_CLOEXEC so the checkpoint inherits it.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: fresh descriptors from pipe(2), owned here.
        let (status_r, status_w) = unsafe {
            use std::os::fd::FromRawFd;
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::os::fd::OwnedFd::from_raw_fd(fds[1]),
            )
        };
        let cpt_log = b.file("lazy-checkpoint.err");
        let mut cpt = Command::new(bin)
            .arg("--root")
            .arg(&root)
            .args([
                "--criu",
                criu.as_str(),
                "checkpoint",
                "--lazy-pages",
                "--page-server",
                &format!("127.0.0.1:{port}"),
                "--status-fd",
                &status_w.as_raw_fd().to_string(),
                "--image-path",
                lazy.to_str().unwrap(),
                &ids[1],
            ])
            .current_dir(b.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&cpt_log).unwrap())
            .spawn()
            .unwrap();
        drop(status_w);
        // CRIU writes one byte once the dump is done and the pages are being served;
        // EOF means the checkpoint failed first.
        let mut byte = [1u8; 1];
        let n = std::io::Read::read(&mut &status_r, &mut byte).unwrap();
        assert_eq!(
            (n, byte[0]),
            (1, 0),
            "{bin}: no lazy-pages status\n{}",
            std::fs::read_to_string(&cpt_log).unwrap_or_default()
        );
        let stopped_at = counter(&count).unwrap_or(0);
        let lp_log = b.file("lazy-pages.log");
        let mut lp = criu_daemon(
            &criu,
            &[
                "lazy-pages",
                "--page-server",
                "--address",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "-D",
                lazy.to_str().unwrap(),
                "-o",
                lp_log.to_str().unwrap(),
                "-v4",
            ],
            &b.file("lazy-pages.out"),
        );
        // The daemon's socket in the images directory is what restore connects to.
        for _ in 0..500 {
            if lazy.join("lazy-pages.socket").exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (ok, err, _io3) = with_criu(&[
            "restore",
            "-d",
            "--lazy-pages",
            "--image-path",
            lazy.to_str().unwrap(),
            &ids[2],
        ]);
        assert!(ok, "{bin}: restore --lazy-pages: {err}");
        let first = wait_counter(&count, stopped_at + 1);
        assert!(first > stopped_at, "{bin}");
        // Every page moved: the source's checkpoint and the daemon end.
        wait_child("lazy checkpoint", &mut cpt, &cpt_log);
        wait_child("criu lazy-pages", &mut lp, &lp_log);
        assert!(
            !run_bin(bin, &root, &b, &["state", &ids[1]])
                .status
                .success(),
            "{bin}: the source container outlived its migration"
        );
        let now = wait_counter(&count, first + 3);
        assert!(now > first, "{bin}");
        assert_eq!(
            state_of(bin, &root, &b, &ids[2])["status"],
            "running",
            "{bin}"
        );
    }
}

/// The operations' MUSTs of the runtime spec (runtime.md "Operations" and
/// "Lifecycle"), one row each, run with kcore-runc and, in the same test, runc: every
/// row is shared behaviour, so both are asserted.
#[test]
#[ignore = "needs root"]
fn lifecycle_musts_table_against_runc() {
    let runc_bin = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let mut runtimes = vec![env!("CARGO_BIN_EXE_kcore-runc")];
    match runc_bin {
        Some(r) => runtimes.push(r),
        None => eprintln!("runc not installed (apt-get install runc): checking kcore-runc only"),
    }
    for bin in runtimes {
        let b = Bundle::new();
        let out = b.file("out");
        std::fs::create_dir_all(&out).unwrap();
        let mut v = spec(&["/bin/sh", "-c", "touch /out/ran; exec sleep 1000"]);
        v["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/out", "type": "bind", "source": out, "options": ["rbind", "rw"]
        }));
        v["annotations"] = json!({"org.kcore.test": "lifecycle"});
        b.write_config(&v);
        let root = b.file(&format!("state-{}", bin.len()));
        let id = unique_id("must");
        let _g = RuncCleanup(root.clone(), id.clone(), bin.to_string());
        let run = |args: &[&str]| run_bin(bin, &root, &b, args);
        let status = || -> Option<Value> {
            let o = run(&["state", &id]);
            o.status
                .success()
                .then(|| serde_json::from_slice(&o.stdout).unwrap())
        };
        let wait_status = |want: &str| {
            for _ in 0..200 {
                if status().is_some_and(|s| s["status"] == want) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            panic!("{bin}: never {want}");
        };
        type Row<'a> = (&'a str, Vec<&'a str>, bool);
        // (the MUST, the command, whether it succeeds); checks after some rows below.
        let rows: Vec<Row<'_>> = vec![
            (
                "state of an unknown container is an error",
                vec!["state", "nope-x"],
                false,
            ),
            ("create makes the container", vec!["create", &id], true),
            (
                "create with an id in use is an error",
                vec!["create", &id],
                false,
            ),
            ("start runs the program", vec!["start", &id], true),
            (
                "start of a container not created is an error",
                vec!["start", &id],
                false,
            ),
            (
                "delete of a container not stopped is an error",
                vec!["delete", &id],
                false,
            ),
            ("kill signals the process", vec!["kill", &id, "KILL"], true),
            (
                "kill of a stopped container is an error",
                vec!["kill", &id, "TERM"],
                false,
            ),
            (
                "start of a stopped container is an error",
                vec!["start", &id],
                false,
            ),
            (
                "delete of a stopped container removes it",
                vec!["delete", &id],
                true,
            ),
            ("state after delete is an error", vec!["state", &id], false),
        ];
        for (must, args, succeeds) in rows {
            let o = run(&args);
            assert_eq!(
                o.status.success(),
                succeeds,
                "{bin}: {must}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            match (args[0], succeeds) {
                ("create", true) => {
                    let s = status().expect("state after create");
                    assert_eq!(s["status"], "created", "{bin}: {s}");
                    assert!(s["pid"].as_i64().unwrap() > 0, "{bin}: {s}");
                    assert_eq!(s["id"], id.as_str());
                    assert!(s["ociVersion"].is_string(), "{bin}: {s}");
                    assert_eq!(
                        s["bundle"].as_str(),
                        Some(std::fs::canonicalize(b.path()).unwrap().to_str().unwrap()),
                        "{bin}: the bundle's absolute path"
                    );
                    assert_eq!(s["annotations"]["org.kcore.test"], "lifecycle", "{bin}");
                    assert!(
                        !out.join("ran").exists(),
                        "{bin}: the user program ran before start"
                    );
                }
                ("create", false) => {
                    assert_eq!(status().unwrap()["status"], "created", "{bin}: changed");
                }
                ("start", true) => {
                    wait_status("running");
                    for _ in 0..200 {
                        if out.join("ran").exists() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(25));
                    }
                    assert!(out.join("ran").exists(), "{bin}: program did not run");
                }
                ("kill", true) => wait_status("stopped"),
                ("delete", false) => {
                    assert_eq!(
                        status().unwrap()["status"],
                        "running",
                        "{bin}: delete changed it"
                    );
                }
                _ => {}
            }
        }
    }
}

/// A container in a joined (external) network namespace, with a prestart hook:
/// checkpointed, it is restored into the same namespace (CRIU's `extRootNetNS`,
/// handed over as a descriptor), and the hook runs again on restore with the restored
/// process's pid, as runc runs it on CRIU's `setup-namespaces`. kcore-runc and runc in
/// the same test; skipped with the reason where `criu check` fails.
#[test]
#[ignore = "needs root"]
fn checkpoint_restore_into_a_joined_netns_runs_the_hooks_like_runc() {
    let Some(criu) = working_criu() else {
        return;
    };
    // The namespace's holder: a process of its own in a new network namespace.
    let mut holder = Command::new("unshare")
        .args(["--net", "sleep", "1000"])
        .spawn()
        .expect("unshare (util-linux)");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let holder_pid = holder.id();
    let _k = Kill(&mut holder);
    let netns = format!("/proc/{holder_pid}/ns/net");
    for _ in 0..100 {
        if std::fs::read_link(&netns).ok() != std::fs::read_link("/proc/self/ns/net").ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let ns_link = std::fs::read_link(&netns).unwrap();
    let runc_bin = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let mut runtimes = vec![env!("CARGO_BIN_EXE_kcore-runc")];
    if let Some(r) = runc_bin {
        runtimes.push(r);
    }
    for bin in runtimes {
        let b = Bundle::new();
        let hook_out = b.file("hook-states");
        let mut v = spec(&["/bin/sh", "-c", "while :; do sleep 0.1; done"]);
        for ns in v["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "network" {
                ns["path"] = json!(netns);
            }
        }
        v["hooks"] = json!({"prestart": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat >> {}; echo >> {}", hook_out.display(), hook_out.display())]
        }]});
        b.write_config(&v);
        let root = b.file("state");
        let (id1, id2) = (unique_id("nsr1"), unique_id("nsr2"));
        let _g1 = RuncCleanup(root.clone(), id1.clone(), bin.to_string());
        let _g2 = RuncCleanup(root.clone(), id2.clone(), bin.to_string());
        let crit = |args: &[&str]| {
            let mut a = vec!["--criu", criu.as_str()];
            a.extend(args);
            run_piped(bin, &root, &b, &a)
        };
        let (ok, err, _io1) = crit(&["run", "-d", &id1]);
        assert!(ok, "{bin}: run: {err}");
        let img = b.file("img");
        let (ok, err, _) = crit(&["checkpoint", "--image-path", img.to_str().unwrap(), &id1]);
        assert!(ok, "{bin}: checkpoint: {err}");
        let (ok, err, _io2) = crit(&["restore", "-d", "--image-path", img.to_str().unwrap(), &id2]);
        assert!(ok, "{bin}: restore: {err}");
        let st = state_of(bin, &root, &b, &id2);
        assert_eq!(st["status"], "running", "{bin}: {st}");
        let pid = st["pid"].as_i64().unwrap();
        assert_eq!(
            std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
            ns_link,
            "{bin}: restored outside the joined network namespace"
        );
        let states: Vec<Value> = std::fs::read_to_string(&hook_out)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            states.len(),
            2,
            "{bin}: prestart on run and on restore: {states:?}"
        );
        assert_eq!(states[1]["id"], id2.as_str(), "{bin}");
        assert_eq!(
            states[1]["pid"].as_i64(),
            Some(pid),
            "{bin}: the restored pid"
        );
        let o = run_bin(bin, &root, &b, &["delete", "--force", &id2]);
        assert!(o.status.success(), "{bin}: delete");
    }
}

/// A terminal container (its pty master held by the caller through the console
/// socket): checkpointed and restored with `--console-socket`, CRIU hands the new pty
/// master over (`orphan-pts-master`), which reaches the socket, and the restored shell
/// answers on it. kcore-runc and runc in the same test; skipped with the reason where
/// `criu check` fails.
#[test]
#[ignore = "needs root"]
fn checkpoint_restore_a_terminal_container_like_runc() {
    let Some(criu) = working_criu() else {
        return;
    };
    let runc_bin = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let mut runtimes = vec![env!("CARGO_BIN_EXE_kcore-runc")];
    if let Some(r) = runc_bin {
        runtimes.push(r);
    }
    // Writes `line` to the pty and reads until `want` comes back.
    let talk = |master: &std::os::fd::OwnedFd, line: &str, want: &str| -> String {
        use std::io::{Read, Write};
        let mut f = std::fs::File::from(master.try_clone().unwrap());
        f.write_all(line.as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&out).contains(want) {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    for bin in runtimes {
        let b = Bundle::new();
        let mut v = spec(&["/bin/sh"]);
        v["process"]["terminal"] = json!(true);
        b.write_config(&v);
        let root = b.file("state");
        let (id1, id2) = (unique_id("tty1"), unique_id("tty2"));
        let _g1 = RuncCleanup(root.clone(), id1.clone(), bin.to_string());
        let _g2 = RuncCleanup(root.clone(), id2.clone(), bin.to_string());
        let run = |args: &[&str]| {
            let mut a = vec!["--criu", criu.as_str()];
            a.extend(args);
            run_bin(bin, &root, &b, &a)
        };
        let sock = b.file("console1.sock");
        let rx = console_receiver(&sock);
        let o = run(&[
            "run",
            "-d",
            "--console-socket",
            sock.to_str().unwrap(),
            &id1,
        ]);
        assert!(
            o.status.success(),
            "{bin}: run: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let master = rx.join().unwrap().0;
        let text = talk(&master, "echo before-$((20+1))\n", "before-21");
        assert!(text.contains("before-21"), "{bin}: {text:?}");
        let img = b.file("img");
        let o = run(&["checkpoint", "--image-path", img.to_str().unwrap(), &id1]);
        assert!(
            o.status.success(),
            "{bin}: checkpoint: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        drop(master);
        let sock2 = b.file("console2.sock");
        let rx = console_receiver(&sock2);
        let o = run(&[
            "restore",
            "-d",
            "--console-socket",
            sock2.to_str().unwrap(),
            "--image-path",
            img.to_str().unwrap(),
            &id2,
        ]);
        assert!(
            o.status.success(),
            "{bin}: restore: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let master = rx.join().unwrap().0;
        let text = talk(&master, "echo after-$((40+2))\n", "after-42");
        assert!(
            text.contains("after-42"),
            "{bin}: the restored shell: {text:?}"
        );
        let o = run_bin(bin, &root, &b, &["delete", "--force", &id2]);
        assert!(o.status.success(), "{bin}: delete");
    }
}
