//! Root tests of the library API with real containers from a busybox-static rootfs.

mod common;

use std::os::fd::OwnedFd;

use common::*;
use kcore_runtime::{CreateOptions, Error, ExecOptions, ExitStatus, Status};
use serde_json::json;

/// Output files for a container's stdout/stderr.
fn out_files(b: &Bundle, tag: &str) -> (std::path::PathBuf, CreateOptions) {
    let p = b.file(&format!("{tag}.out"));
    let f = std::fs::File::create(&p).unwrap();
    let e = f.try_clone().unwrap();
    let opts = CreateOptions {
        stdout: Some(OwnedFd::from(f)),
        stderr: Some(OwnedFd::from(e)),
        ..CreateOptions::default()
    };
    (p, opts)
}

fn run_to_end(b: &Bundle, v: &serde_json::Value, tag: &str) -> (ExitStatus, String) {
    let rt = b.runtime();
    let id = unique_id(tag);
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let (out, opts) = out_files(b, tag);
    let mut c = rt.create(&id, b.path(), &parse(v), opts).unwrap();
    let pid = c.pid();
    c.start().unwrap();
    let st = c.wait().unwrap();
    c.delete(false).unwrap();
    assert_no_trace(b, &id, pid);
    (st, std::fs::read_to_string(out).unwrap())
}

#[test]
#[ignore = "needs root"]
fn isolation_pid1_hostname_netns_mounts() {
    let b = Bundle::new();
    let v = spec(&[
        "/bin/sh",
        "-c",
        "echo pid=$$; hostname; readlink /proc/self/ns/net; cat /proc/self/mounts; ls /",
    ]);
    let (st, out) = run_to_end(&b, &v, "iso");
    assert!(st.success(), "{st}: {out}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("pid=1"));
    assert_eq!(lines.next(), Some("kcore-test"));
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        lines.next().unwrap(),
        host_net.to_str().unwrap(),
        "same netns as host"
    );
    // Only the container's mounts: nothing of the host's other mount points.
    let host_mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    for m in host_mounts.lines() {
        let mp = m.split(' ').nth(1).unwrap();
        if mp == "/" || mp.starts_with("/proc") || mp.starts_with("/sys") || mp.starts_with("/dev")
        {
            continue;
        }
        assert!(
            !out.lines().any(|l| l.split(' ').nth(1) == Some(mp)),
            "host mount {mp} visible in the container:\n{out}"
        );
    }
    assert!(
        out.lines().any(|l| l.starts_with("proc /proc proc")),
        "{out}"
    );
    assert!(
        !out.contains("state\n"),
        "state dir visible at container root"
    );
}

#[test]
#[ignore = "needs root"]
fn cgroup_limits_are_applied() {
    use kcore_cgroup::{CgroupMode, Controller};
    let b = Bundle::new();
    let mut v = spec(&["/bin/sleep", "1000"]);
    // The pids controller and CFS bandwidth (cpu.cfs_quota_us, also at the hierarchy's
    // root) can each be compiled out: limit only what the host offers.
    let detected = kcore_cgroup::Host::detect().expect("detect cgroups");
    let v1 = detected.mode() != CgroupMode::V2;
    let pids = !v1 || detected.v1_mount(Controller::Pids).is_some();
    let quota = !v1
        || detected
            .v1_mount(Controller::Cpu)
            .is_some_and(|m| m.join("cpu.cfs_quota_us").exists());
    if !pids {
        eprintln!("skipping the pids limit: no pids controller on this host");
    }
    if !quota {
        eprintln!("skipping the cpu quota: the cpu controller has no cpu.cfs_quota_us");
    }
    let mut resources = json!({
        "memory": {"limit": 67108864},
        "cpu": {"shares": 512}
    });
    if pids {
        resources["pids"] = json!({"limit": 32});
    }
    if quota {
        resources["cpu"]["quota"] = json!(50000);
        resources["cpu"]["period"] = json!(100000);
    }
    v["linux"]["resources"] = resources;
    let rt = b.runtime();
    let id = unique_id("cg");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let mut c = rt
        .create(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap();
    c.start().unwrap();
    let cg = c.cgroup().unwrap().unwrap();
    let host = cg.host().clone();
    let read = |ctrl, file: &str| {
        let root = host.v1_mount(ctrl).expect("v1 controller");
        std::fs::read_to_string(root.join(cg.path()).join(file))
            .unwrap()
            .trim()
            .to_string()
    };
    if host.mode() != CgroupMode::V2 {
        assert_eq!(
            read(Controller::Memory, "memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(read(Controller::Cpu, "cpu.shares"), "512");
        if pids {
            assert_eq!(read(Controller::Pids, "pids.max"), "32");
        }
        if quota {
            assert_eq!(read(Controller::Cpu, "cpu.cfs_quota_us"), "50000");
        }
        let procs = read(Controller::Memory, "cgroup.procs");
        assert_eq!(procs, c.pid().to_string());
    }
    let pid = c.pid();
    c.kill(libc::SIGKILL, false).unwrap();
    assert_eq!(c.wait().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
    c.delete(false).unwrap();
    assert_no_trace(&b, &id, pid);
}

/// `memory.swappiness` and `disableOOMKiller` reach the container's v1 memory cgroup
/// where the host offers the files (probed in a fresh cgroup of our own), and fail
/// create with a clear error where it does not.
#[test]
#[ignore = "needs root"]
fn memory_swappiness_and_oom_killer_are_applied() {
    use kcore_cgroup::{Cgroup, CgroupMode, Controller};
    let host = kcore_cgroup::Host::detect().expect("detect cgroups");
    if host.mode() == CgroupMode::V2 {
        eprintln!("skipping: v2 hosts have neither control (runc ignores them there)");
        return;
    }
    let Some(mem_root) = host.v1_mount(Controller::Memory).map(|p| p.to_path_buf()) else {
        eprintln!("skipping: no v1 memory controller on this host");
        return;
    };
    let probe = Cgroup::create(&host, unique_id("probe")).unwrap();
    let offers = |f: &str| mem_root.join(probe.path()).join(f).exists();
    let (swappiness, oom) = (offers("memory.swappiness"), offers("memory.oom_control"));
    probe.delete().unwrap();
    let b = Bundle::new();
    let mut v = spec(&["/bin/sleep", "1000"]);
    v["linux"]["resources"] =
        json!({"memory": {"limit": 67108864, "swappiness": 7, "disableOOMKiller": true}});
    let rt = b.runtime();
    let id = unique_id("swappiness");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let created = rt.create(&id, b.path(), &parse(&v), CreateOptions::default());
    if !(swappiness && oom) {
        eprintln!("this host lacks memory.swappiness or memory.oom_control: expecting a refusal");
        let e = created.unwrap_err().to_string();
        assert!(
            e.contains("memory (swappiness)") || e.contains("memory (oom_control)"),
            "{e}"
        );
        assert_no_trace(&b, &id, 0);
        return;
    }
    let c = created.unwrap();
    let dir = mem_root.join(c.cgroup().unwrap().unwrap().path());
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    assert_eq!(read("memory.swappiness").trim(), "7");
    assert!(read("memory.oom_control").contains("oom_kill_disable 1"));
    let pid = c.pid();
    c.delete(true).unwrap();
    assert_no_trace(&b, &id, pid);

    // Out of range: refused before anything runs.
    v["linux"]["resources"]["memory"]["swappiness"] = json!(101);
    let id = unique_id("swappiness");
    let e = rt
        .create(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Cgroup(kcore_cgroup::Error::InvalidValue {
                field: "memory.swappiness",
                ..
            })
        ),
        "{e}"
    );
    assert_no_trace(&b, &id, 0);
}

/// On a host without AppArmor or SELinux, a config asking for a profile or a label is
/// refused at create (and a process asking for one at exec) and nothing is left behind.
#[test]
#[ignore = "needs root"]
fn lsm_settings_the_host_cannot_apply_are_refused() {
    let apparmor = std::path::Path::new("/sys/kernel/security/apparmor").exists()
        && std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim_end() == "Y");
    let selinux = std::path::Path::new("/sys/fs/selinux/enforce").exists();
    let b = Bundle::new();
    let rt = b.runtime();
    let cases = [
        ("process.apparmorProfile", apparmor, "AppArmor"),
        ("process.selinuxLabel", selinux, "SELinux"),
        ("linux.mountLabel", selinux, "SELinux"),
    ];
    for (field, host_has_it, lsm) in cases {
        if host_has_it {
            eprintln!("skipping {field}: this host has {lsm} enabled");
            continue;
        }
        let mut v = spec(&["/bin/true"]);
        let (section, key) = field.split_once('.').unwrap();
        v[section][key] = json!("kcore_test_t");
        let id = unique_id("lsm");
        let _g = Cleanup {
            runtime: rt.clone(),
            id: id.clone(),
        };
        let e = rt
            .create(&id, b.path(), &parse(&v), CreateOptions::default())
            .unwrap_err();
        assert!(
            matches!(&e, Error::LsmUnavailable { field: f, lsm: l, .. } if *f == field && *l == lsm),
            "{field}: {e:?}"
        );
        assert!(
            e.to_string().starts_with(&format!("{field} needs {lsm}")),
            "{e}"
        );
        assert_no_trace(&b, &id, 0);
    }

    // exec: the process's own profile or label is checked the same way.
    let v = spec(&["/bin/sleep", "1000"]);
    let id = unique_id("lsm");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let mut c = rt
        .create(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap();
    c.start().unwrap();
    for (key, host_has_it) in [("apparmorProfile", apparmor), ("selinuxLabel", selinux)] {
        if host_has_it {
            continue;
        }
        let mut p = v["process"].clone();
        p["args"] = json!(["/bin/true"]);
        p[key] = json!("kcore_test_t");
        let p = kcore_runtime::parse_process(&p.to_string()).unwrap();
        let e = c.exec(&p, ExecOptions::default()).unwrap_err();
        assert!(matches!(e, Error::LsmUnavailable { .. }), "{key}: {e:?}");
    }
    let pid = c.pid();
    c.delete(true).unwrap();
    assert_no_trace(&b, &id, pid);
}

/// Without a mount namespace the container shares ours and is chrooted into its
/// rootfs (create and exec); mounts are refused with the field named.
#[test]
#[ignore = "needs root"]
fn shares_the_mount_namespace_when_none_is_asked_for() {
    let b = Bundle::new();
    let rt = b.runtime();
    std::fs::write(b.rootfs().join("marker"), "inside the rootfs\n").unwrap();
    let mut v = spec(&["/bin/sleep", "1000"]);
    v["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "mount");
    // Refused while it still asks for mounts.
    let id = unique_id("nomnt");
    let e = rt
        .create(
            &id,
            b.path(),
            &serde_json::from_value(v.clone()).unwrap(),
            CreateOptions::default(),
        )
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidSpec { field, .. } if field == "mounts[0]"),
        "{e:?}"
    );
    assert_no_trace(&b, &id, 0);

    v["mounts"] = json!([]);
    v["linux"]["maskedPaths"] = json!([]);
    v["linux"]["readonlyPaths"] = json!([]);
    v["root"]["readonly"] = json!(false);
    let id = unique_id("nomnt");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let mut c = rt
        .create(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap();
    c.start().unwrap();
    let pid = c.pid();
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
    assert_eq!(
        ns(&pid.to_string()),
        ns("self"),
        "not in our mount namespace"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        b.rootfs().canonicalize().unwrap()
    );
    // exec enters it the same way.
    let out = b.file("exec.out");
    let f = std::fs::File::create(&out).unwrap();
    let mut p = v["process"].clone();
    p["args"] = json!(["/bin/cat", "/marker"]);
    let p = kcore_runtime::parse_process(&p.to_string()).unwrap();
    let mut e = c
        .exec(
            &p,
            ExecOptions {
                stdout: Some(OwnedFd::from(f)),
                ..ExecOptions::default()
            },
        )
        .unwrap();
    assert!(e.wait().unwrap().success());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "inside the rootfs\n"
    );
    c.kill(libc::SIGKILL, false).unwrap();
    c.wait().unwrap();
    c.delete(false).unwrap();
    assert_no_trace(&b, &id, pid);
}

#[test]
#[ignore = "needs root"]
fn capabilities_are_dropped() {
    let b = Bundle::new();
    let mut v = spec(&["/bin/grep", "^Cap", "/proc/self/status"]);
    v["process"]["capabilities"] = json!({
        "bounding": ["CAP_KILL", "CAP_CHOWN"],
        "effective": ["CAP_KILL"],
        "permitted": ["CAP_KILL"],
        "inheritable": [],
        "ambient": []
    });
    let (st, out) = run_to_end(&b, &v, "caps");
    assert!(st.success(), "{out}");
    // CAP_CHOWN=0 stays in the bounding set; with no_new_privs (the default spec's)
    // root's exec cannot gain it back, so only CAP_KILL=5 is effective.
    assert!(out.contains("CapBnd:\t0000000000000021"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000020"), "{out}");

    // A non-root user keeps only what the spec grants through the ambient set.
    v["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [2000]});
    v["process"]["capabilities"]["inheritable"] = json!(["CAP_KILL"]);
    v["process"]["capabilities"]["ambient"] = json!(["CAP_KILL"]);
    v["process"]["args"] = json!(["/bin/sh", "-c", "grep ^Cap /proc/self/status; id"]);
    let (st, out) = run_to_end(&b, &v, "caps2");
    assert!(st.success(), "{out}");
    assert!(out.contains("CapEff:\t0000000000000020"), "{out}");
    assert!(out.contains("CapPrm:\t0000000000000020"), "{out}");
    assert!(out.contains("uid=1000 gid=1000 groups=2000"), "{out}");
}

#[test]
#[ignore = "needs root"]
fn seccomp_errno_and_kill() {
    let b = Bundle::new();
    let mut v = spec(&[
        "/bin/sh",
        "-c",
        "mkdir /tmp/x; echo mkdir=$?; hostname other; echo sethostname=$?",
    ]);
    v["root"]["readonly"] = json!(false);
    v["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42},
            {"names": ["sethostname"], "action": "SCMP_ACT_KILL_PROCESS"}
        ]
    });
    let (st, out) = run_to_end(&b, &v, "seccomp");
    assert!(st.success(), "{out}");
    // errno 42 is ENOMSG.
    assert!(out.contains("No message of desired type"), "{out}");
    assert!(out.contains("mkdir=1"), "{out}");
    // SIGSYS = 31: the shell reports 128 + 31.
    assert!(out.contains("sethostname=159"), "{out}");
    assert!(!b.rootfs().join("tmp/x").exists());
}

#[test]
#[ignore = "needs root"]
fn hooks_run_in_order_with_state_on_stdin() {
    let b = Bundle::new();
    let log = b.file("hooks.log");
    std::fs::create_dir_all(b.file("hookdir")).unwrap();
    let inner_log = b.file("hookdir/inner.log");
    let hook = |kind: &str, file: &std::path::Path| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {kind} $(cat) >> {}", file.display())], "timeout": 10});
    let mut v = spec(&["/bin/true"]);
    v["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/hooks", "type": "bind", "source": b.file("hookdir"), "options": ["rbind", "rw"]}));
    v["hooks"] = json!({
        "createRuntime": [hook("createRuntime", &log)],
        "createContainer": [hook("createContainer", &log)],
        "startContainer": [hook("startContainer", std::path::Path::new("/hooks/inner.log"))],
        "poststart": [hook("poststart", &log)],
        "poststop": [hook("poststop", &log)]
    });
    let (st, _) = run_to_end(&b, &v, "hooks");
    assert!(st.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let kinds: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        kinds,
        ["createRuntime", "createContainer", "poststart", "poststop"],
        "{text}"
    );
    for (line, status) in text
        .lines()
        .zip(["creating", "creating", "running", "stopped"])
    {
        let state: serde_json::Value =
            serde_json::from_str(line.split_once(' ').unwrap().1).unwrap();
        assert_eq!(state["status"], status, "{line}");
        assert!(state["id"].as_str().unwrap().starts_with("kt-hooks-"));
        assert_eq!(
            state["bundle"],
            b.path().canonicalize().unwrap().to_str().unwrap()
        );
    }
    let inner = std::fs::read_to_string(inner_log).unwrap();
    assert!(inner.starts_with("startContainer {"), "{inner}");
    let state: serde_json::Value =
        serde_json::from_str(inner.trim_end().split_once(' ').unwrap().1).unwrap();
    assert_eq!(state["status"], "created", "{inner}");
}

/// Every hook kind × (ok, fail, timeout) through the whole lifecycle: a failing
/// prestart/createRuntime/createContainer hook fails `create`, a failing startContainer
/// hook fails `start`; then the container is torn down and the poststop hooks run. A
/// failing poststart/poststop hook is only logged: the hooks after it run and the
/// operation succeeds.
#[test]
#[ignore = "needs root"]
fn hook_failure_semantics_per_kind() {
    let kinds = [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ];
    let outcomes: [(&str, serde_json::Value); 3] = [
        ("ok", json!({"args": ["sh", "-c", "exit 0"]})),
        ("fail", json!({"args": ["sh", "-c", "exit 7"]})),
        (
            "timeout",
            json!({"args": ["sh", "-c", "exec sleep 30"], "timeout": 1}),
        ),
    ];
    for kind in kinds {
        for (outcome, first) in &outcomes {
            let case = format!("{kind}/{outcome}");
            let b = Bundle::new();
            let rt = b.runtime();
            std::fs::create_dir_all(b.file("hookdir")).unwrap();
            let log = b.file("hookdir/log");
            // startContainer hooks resolve in the container: they see the log at /hooks.
            let log_seen = if kind == "startContainer" {
                std::path::PathBuf::from("/hooks/log")
            } else {
                log.clone()
            };
            let mut first = first.clone();
            first["path"] = json!("/bin/sh");
            let marker = |tag: &str, file: &std::path::Path| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {tag} >> {}", file.display())]});
            let mut v = spec(&["/bin/true"]);
            v["mounts"].as_array_mut().unwrap().push(json!({"destination": "/hooks", "type": "bind", "source": b.file("hookdir"), "options": ["rbind", "rw"]}));
            v["hooks"] = json!({ kind: [first, marker("after", &log_seen)] });
            if kind != "poststop" {
                v["hooks"]["poststop"] = json!([marker("poststop", &log)]);
            }
            let id = unique_id("hookcase");
            let _g = Cleanup {
                runtime: rt.clone(),
                id: id.clone(),
            };
            let fails = *outcome != "ok" && !matches!(kind, "poststart" | "poststop");
            let lines = || -> Vec<String> {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .lines()
                    .map(String::from)
                    .collect()
            };
            let created = rt.create(&id, b.path(), &parse(&v), CreateOptions::default());
            if fails && kind != "startContainer" {
                let e = created.expect_err(&case);
                let text = format!("{e}");
                assert!(text.contains(kind), "{case}: {text}");
                assert_no_trace(&b, &id, 0);
                assert_eq!(lines(), ["poststop"], "{case}");
                continue;
            }
            let mut c = created.unwrap_or_else(|e| panic!("{case}: {e}"));
            let pid = c.pid();
            let started = c.start();
            if fails {
                let e = started.expect_err(&case);
                assert!(e.to_string().contains(kind), "{case}: {e}");
                assert_eq!(c.status(), Status::Stopped, "{case}");
            } else {
                started.unwrap_or_else(|e| panic!("{case}: {e}"));
                c.wait().unwrap();
            }
            c.delete(false).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_no_trace(&b, &id, pid);
            let want: &[&str] = match (fails, kind) {
                (true, _) => &["poststop"],
                (false, "poststop") => &["after"],
                (false, _) => &["after", "poststop"],
            };
            assert_eq!(lines(), want, "{case}");
        }
    }
}

#[test]
#[ignore = "needs root"]
fn exec_joins_the_container_namespaces() {
    let b = Bundle::new();
    let v = spec(&["/bin/sleep", "1000"]);
    let rt = b.runtime();
    let id = unique_id("exec");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let mut c = rt
        .create(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap();
    c.start().unwrap();
    let out = b.file("exec.out");
    let f = std::fs::File::create(&out).unwrap();
    let (stdin_r, stdin_w) = std::io::pipe().unwrap();
    let mut p = c.spec().process().clone().unwrap();
    p.set_args(Some(
        ["/bin/sh", "-c", "for n in pid net uts ipc mnt; do readlink /proc/self/ns/$n; done; echo pid=$$; hostname; read x || true"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    ));
    let mut ep = c
        .exec(
            &p,
            ExecOptions {
                stdout: Some(OwnedFd::from(f)),
                stdin: Some(OwnedFd::from(stdin_r)),
                ..ExecOptions::default()
            },
        )
        .unwrap();
    // The process waits on stdin until we close the pipe: check its cgroup meanwhile.
    let in_cgroup = c.processes().unwrap().contains(&ep.pid());
    drop(stdin_w);
    assert!(ep.wait().unwrap().success());
    assert!(
        in_cgroup,
        "exec process {} not in the cgroup: {:?} {}",
        ep.pid(),
        c.processes(),
        std::fs::read_to_string(format!("/proc/{}/cgroup", ep.pid())).unwrap_or_default()
    );
    let text = std::fs::read_to_string(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (i, n) in ["pid", "net", "uts", "ipc", "mnt"].iter().enumerate() {
        let want = std::fs::read_link(format!("/proc/{}/ns/{n}", c.pid())).unwrap();
        assert_eq!(lines[i], want.to_str().unwrap(), "{n} namespace differs");
    }
    assert_ne!(lines[5], "pid=1");
    assert_eq!(lines[6], "kcore-test");
    c.kill(libc::SIGKILL, true).unwrap();
    c.wait().unwrap();
    let pid = c.pid();
    c.delete(false).unwrap();
    assert_no_trace(&b, &id, pid);
}

#[test]
#[ignore = "needs root"]
fn pause_freezes_and_resume_thaws() {
    let b = Bundle::new();
    let v = spec(&["/bin/sh", "-c", "while :; do :; done"]);
    let rt = b.runtime();
    let id = unique_id("pause");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let mut c = rt
        .create(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap();
    assert_eq!(c.status(), Status::Created);
    assert!(matches!(c.pause(), Err(Error::InvalidState { .. })));
    c.start().unwrap();
    assert_eq!(c.status(), Status::Running);
    c.pause().unwrap();
    assert_eq!(status_of(&rt, &id), Status::Paused);
    let cg = c.cgroup().unwrap().unwrap();
    assert_eq!(
        cg.freezer_state().unwrap(),
        kcore_cgroup::FreezerState::Frozen
    );
    let st = std::fs::read_to_string(format!("/proc/{}/stat", c.pid())).unwrap();
    let state = st
        .rsplit(')')
        .next()
        .unwrap()
        .trim_start()
        .chars()
        .next()
        .unwrap();
    assert_ne!(state, 'R', "frozen process is running");
    c.resume().unwrap();
    assert_eq!(status_of(&rt, &id), Status::Running);
    assert_eq!(
        cg.freezer_state().unwrap(),
        kcore_cgroup::FreezerState::Thawed
    );
    // Guards: a running container cannot be deleted without force.
    let again = rt.load(&id).unwrap();
    assert!(matches!(
        again.delete(false),
        Err(Error::InvalidState { .. })
    ));
    let pid = c.pid();
    c.delete(true).unwrap();
    assert_no_trace(&b, &id, pid);
}

#[test]
#[ignore = "needs root"]
fn kill_and_delete_leave_no_trace() {
    let b = Bundle::new();
    let mut v = spec(&["/bin/sleep", "1000"]);
    v["process"]["oomScoreAdj"] = json!(500);
    v["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 77, "hard": 88}]);
    let rt = b.runtime();
    let id = unique_id("kill");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let mut c = rt
        .create(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap();
    c.start().unwrap();
    let pid = c.pid();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .unwrap()
            .trim(),
        "500"
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains("77") && l.contains("88")),
        "{limits}"
    );
    let state = c.state();
    assert_eq!(state.status, Status::Running);
    assert_eq!(state.pid, pid);
    // PID 1 of a pid namespace ignores signals it has no handler for; SIGKILL always works.
    c.kill(libc::SIGKILL, false).unwrap();
    assert_eq!(c.wait().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
    assert_eq!(c.status(), Status::Stopped);
    assert!(matches!(
        c.kill(libc::SIGKILL, false),
        Err(Error::InvalidState { .. })
    ));
    c.delete(false).unwrap();
    assert_no_trace(&b, &id, pid);
    assert!(matches!(rt.load(&id), Err(Error::NotFound { .. })));
}

#[test]
#[ignore = "needs root"]
fn created_container_can_be_deleted_and_ids_are_unique() {
    let b = Bundle::new();
    let v = spec(&["/bin/true"]);
    let rt = b.runtime();
    let id = unique_id("created");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let c = rt
        .create(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap();
    let pid = c.pid();
    let dup = rt.create(&id, b.path(), &parse(&v), CreateOptions::default());
    assert!(matches!(dup, Err(Error::Exists { .. })));
    assert_eq!(rt.list().unwrap(), vec![id.clone()]);
    c.delete(false).unwrap();
    assert_no_trace(&b, &id, pid);
}

#[test]
#[ignore = "needs root"]
fn bad_input_leaves_nothing_behind() {
    let b = Bundle::new();
    let rt = b.runtime();

    // Missing rootfs.
    let mut v = spec(&["/bin/true"]);
    v["root"]["path"] = json!("nope");
    let id = unique_id("bad");
    let e = rt
        .create(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap_err();
    assert!(matches!(e, Error::RootfsMissing { .. }), "{e}");
    assert_no_trace(&b, &id, 0);

    // Unknown namespace: the field is named.
    let mut v = spec(&["/bin/true"]);
    v["linux"]["namespaces"][0]["type"] = json!("bogus");
    let e = kcore_runtime::parse_spec(&v.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("linux.namespaces[0].type"), "{e}");

    // A failing createRuntime hook.
    let mut v = spec(&["/bin/true"]);
    v["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 9"]}]});
    let id = unique_id("badhook");
    let e = rt
        .create(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Hook {
                kind: "createRuntime",
                ..
            }
        ),
        "{e}"
    );
    assert_no_trace(&b, &id, 0);

    // A failing mount names the source.
    let mut v = spec(&["/bin/true"]);
    v["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/data", "type": "bind", "source": "/nonexistent-kcore-src", "options": ["rbind"]}),
    );
    let id = unique_id("badmount");
    let e = rt
        .create(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("/nonexistent-kcore-src"), "{e}");
    assert_no_trace(&b, &id, 0);

    // A missing program fails at create.
    let v = spec(&["/bin/not-there"]);
    let id = unique_id("noprog");
    let e = rt
        .create(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("/bin/not-there"), "{e}");
    assert_no_trace(&b, &id, 0);

    // Joining a namespace path that does not exist.
    let mut v = spec(&["/bin/true"]);
    v["linux"]["namespaces"][1] = json!({"type": "network", "path": "/run/netns/kcore-no-such-ns"});
    let id = unique_id("badns");
    let e = rt
        .create(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("kcore-no-such-ns"), "{e}");
    assert_no_trace(&b, &id, 0);
    assert!(rt.list().unwrap().is_empty());
}

#[test]
#[ignore = "needs root"]
fn user_namespace_with_id_maps() {
    let b = Bundle::new();
    let mut v = spec(&["/bin/sh", "-c", "cat /proc/self/uid_map; id -u"]);
    v["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    v["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    // The rootfs must be reachable by the mapped root.
    let (st, out) = run_to_end(&b, &v, "userns");
    assert!(st.success(), "{out}");
    let first: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(first, ["0", "100000", "65536"]);
    assert_eq!(out.lines().nth(1), Some("0"));
}

#[test]
#[ignore = "needs root"]
fn run_creates_and_starts_in_one_step() {
    let b = Bundle::new();
    let rt = b.runtime();
    // Without hooks the process is released from the caller's thread.
    let v = spec(&["/bin/sh", "-c", "echo ran; exit 4"]);
    let id = unique_id("run");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let (out, opts) = out_files(&b, "run");
    let mut c = rt.run(&id, b.path(), &parse(&v), opts).unwrap();
    assert!(!b.root.join(&id).join("exec.fifo").exists());
    assert_eq!(c.wait().unwrap(), ExitStatus::Exited(4));
    assert_eq!(std::fs::read_to_string(out).unwrap(), "ran\n");
    let pid = c.pid();
    c.delete(false).unwrap();
    assert_no_trace(&b, &id, pid);

    // With hooks: createRuntime and poststart still run, in order.
    let log = b.file("run-hooks.log");
    let hook = |kind: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {kind} >> {}", log.display())]});
    let mut v = spec(&["/bin/sleep", "1000"]);
    v["hooks"] =
        json!({"createRuntime": [hook("createRuntime")], "poststart": [hook("poststart")]});
    let id = unique_id("run");
    let _g2 = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let mut c = rt
        .run(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap();
    assert_eq!(c.status(), Status::Running);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "createRuntime\npoststart\n"
    );
    // A failure after setup (here a startContainer hook) is reported by run itself.
    let mut bad = spec(&["/bin/true"]);
    bad["hooks"] = json!({"startContainer": [{"path": "/bin/false"}]});
    let bad_id = unique_id("runbad");
    let _g3 = Cleanup {
        runtime: rt.clone(),
        id: bad_id.clone(),
    };
    let e = rt
        .run(&bad_id, b.path(), &parse(&bad), CreateOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("startContainer"), "{e}");
    assert_no_trace(&b, &bad_id, 0);
    c.kill(libc::SIGKILL, false).unwrap();
    c.wait().unwrap();
    let pid = c.pid();
    c.delete(false).unwrap();
    assert_no_trace(&b, &id, pid);
}

#[test]
#[ignore = "needs root"]
fn spec_settings_are_applied() {
    let b = Bundle::new();
    let mut v = spec(&[
        "/bin/sh",
        "-c",
        "cat /proc/sys/net/ipv4/ip_forward; cat /proc/sys/kernel/domainname; \
         echo masked=$(cat /proc/timer_list | wc -c); echo 1 > /proc/sys/kernel/hostname && echo rw-sys; \
         ls -l /dev/mynull; touch f; ls -l f; pwd; echo $FOO; touch /etc/x || echo ro-root",
    ]);
    v["domainname"] = json!("kcore.example");
    v["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    v["linux"]["devices"] =
        json!([{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 438}]);
    v["process"]["user"]["umask"] = json!(63);
    v["process"]["cwd"] = json!("/tmp");
    v["process"]["env"] = json!(["PATH=/bin", "FOO=bar"]);
    v["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=1777"]}));
    let (st, out) = run_to_end(&b, &v, "settings");
    assert!(st.success(), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "{out}");
    assert_eq!(lines[1], "kcore.example", "{out}");
    assert_eq!(lines[2], "masked=0", "{out}");
    assert!(!out.contains("rw-sys"), "{out}");
    let dev = out
        .lines()
        .find(|l| l.ends_with("/dev/mynull"))
        .expect("device listed");
    assert!(dev.starts_with("crw-rw-rw-") && dev.contains("1,"), "{dev}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("-rw-------") && l.ends_with(" f")),
        "{out}"
    );
    assert!(out.contains("\n/tmp\nbar\n"), "{out}");
    assert!(out.contains("ro-root"), "{out}");
}

#[test]
#[ignore = "needs root"]
fn no_pivot_mode_and_rootfs_propagation() {
    let b = Bundle::new();
    let mut v = spec(&["/bin/sh", "-c", "ls / | wc -l; cat /proc/self/mountinfo"]);
    v["linux"]["rootfsPropagation"] = json!("rprivate");
    let rt = b.runtime();
    let id = unique_id("nopivot");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let (out, mut opts) = out_files(&b, "nopivot");
    opts.no_pivot = true;
    let mut c = rt.run(&id, b.path(), &parse(&v), opts).unwrap();
    assert!(c.wait().unwrap().success());
    let text = std::fs::read_to_string(out).unwrap();
    // The rootfs has bin dev etc proc sys tmp (and nothing of the host).
    assert_eq!(text.lines().next(), Some("6"), "{text}");
    let root = text
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .expect("a root mount");
    assert!(!root.contains("shared:"), "root is still shared: {root}");
    let pid = c.pid();
    c.delete(false).unwrap();
    assert_no_trace(&b, &id, pid);
}

/// Removes a test's persistent network namespace even when the test fails.
struct NetnsGuard(kcore_ns::NetnsDir, String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = self.0.remove(&self.1);
    }
}

#[test]
#[ignore = "needs root"]
fn joins_a_namespace_by_path_and_uses_cgroups_path() {
    let b = Bundle::new();
    let ns_tmp = tempfile::tempdir().unwrap();
    let dir = kcore_ns::NetnsDir::new(ns_tmp.path().join("netns"));
    let name = unique_id("ns");
    let ns = dir.create(&name).unwrap();
    let _ng = NetnsGuard(
        kcore_ns::NetnsDir::new(ns_tmp.path().join("netns")),
        name.clone(),
    );
    let want = format!("net:[{}]", ns.inode().unwrap());
    let mut v = spec(&["/bin/readlink", "/proc/self/ns/net"]);
    v["linux"]["namespaces"][1] = json!({"type": "network", "path": ns.path()});
    let parent_path = format!("kcore-test-{}", unique_id("cgparent"));
    let cg_path = format!("/{parent_path}/{}", unique_id("cgp"));
    let _pg = ParentCgroup(parent_path);
    v["linux"]["cgroupsPath"] = json!(cg_path);
    v["linux"]["resources"] = json!({"pids": {"limit": 7}});
    let rt = b.runtime();
    let id = unique_id("join");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let (out, opts) = out_files(&b, "join");
    let mut c = rt.create(&id, b.path(), &parse(&v), opts).unwrap();
    let cg = c.cgroup().unwrap().unwrap();
    assert_eq!(
        cg.path(),
        std::path::Path::new(cg_path.trim_start_matches('/'))
    );
    let pids_dir = cg
        .dirs()
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/pids"));
    if let Some(d) = &pids_dir {
        assert_eq!(
            std::fs::read_to_string(d.join("pids.max")).unwrap().trim(),
            "7"
        );
    }
    c.start().unwrap();
    assert!(c.wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(out).unwrap().trim(), want);
    let pid = c.pid();
    c.delete(false).unwrap();
    assert_no_trace(&b, &id, pid);
    for d in cg.dirs() {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

/// The parent cgroup a spec's `cgroupsPath` implied is the caller's to remove.
struct ParentCgroup(String);

impl Drop for ParentCgroup {
    fn drop(&mut self) {
        let host = kcore_cgroup::Host::detect().unwrap();
        let cg = kcore_cgroup::Cgroup::new(&host, &self.0).unwrap();
        let _ = cg.kill();
        cg.delete().unwrap();
        assert!(!cg.exists());
    }
}

/// Mount destinations that are symlinks out of the rootfs (absolute, and far above it)
/// are taken inside the rootfs, as if it were `/`: the mounts land there, visible to
/// the container, and the host's directory the links name stays untouched.
#[test]
#[ignore = "needs root"]
fn mount_destinations_through_symlinks_stay_inside_the_rootfs() {
    let b = Bundle::new();
    let host = tempfile::tempdir().unwrap();
    let canary = std::fs::canonicalize(host.path()).unwrap().join("canary");
    std::fs::create_dir(&canary).unwrap();
    let rootfs = b.rootfs();
    std::os::unix::fs::symlink(&canary, rootfs.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../..", rootfs.join("up")).unwrap();
    std::fs::create_dir(b.file("vol")).unwrap();
    std::fs::write(b.file("vol/hello"), "from the volume\n").unwrap();
    let mut v = spec(&[
        "/bin/sh",
        "-c",
        "cat /abs/vol/hello; ls /up/scratch && echo scratch-ok",
    ]);
    let mounts = v["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/abs/vol", "type": "bind", "source": "vol", "options": ["rbind", "ro"]}));
    mounts.push(json!({"destination": "/up/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}));
    let (st, out) = run_to_end(&b, &v, "symdest");
    assert!(st.success(), "{st}: {out}");
    assert!(out.contains("from the volume"), "{out}");
    assert!(out.contains("scratch-ok"), "{out}");
    // Made inside the rootfs, at the links' targets taken in it...
    let inside = rootfs.join(canary.strip_prefix("/").unwrap());
    assert!(inside.join("vol").is_dir());
    assert!(rootfs.join("scratch").is_dir());
    // ...and nothing in the host directory the absolute link names.
    assert_eq!(std::fs::read_dir(&canary).unwrap().count(), 0);
}

/// Reads one control of a container's cgroup: the v1 file under the controller's
/// hierarchy, or the v2 file in the unified one.
fn cg_read(
    cg: &kcore_cgroup::Cgroup,
    ctrl: kcore_cgroup::Controller,
    v1: &str,
    v2: &str,
) -> String {
    let host = cg.host();
    let path = if host.mode() == kcore_cgroup::CgroupMode::V2 {
        host.unified().expect("v2 mount").join(cg.path()).join(v2)
    } else {
        host.v1_mount(ctrl)
            .expect("v1 controller")
            .join(cg.path())
            .join(v1)
    };
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// `update` changes the limits of a running and of a paused container in its cgroup,
/// keeps the ones it leaves out, records them in the state, and is refused once the
/// container stopped.
#[test]
#[ignore = "needs root"]
fn update_changes_live_limits() {
    use kcore_cgroup::{CgroupMode, Controller};
    let detected = kcore_cgroup::Host::detect().expect("detect cgroups");
    let pids = detected.mode() == CgroupMode::V2 || detected.v1_mount(Controller::Pids).is_some();
    if !pids {
        eprintln!("skipping the pids limit: no pids controller on this host");
    }
    let b = Bundle::new();
    let mut v = spec(&["/bin/sleep", "1000"]);
    v["linux"]["resources"] = json!({"memory": {"limit": 67108864}, "cpu": {"shares": 512}});
    let rt = b.runtime();
    let id = unique_id("update");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let mut c = rt
        .create(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap();
    c.start().unwrap();
    let mut new = json!({"memory": {"limit": 134217728}});
    if pids {
        new["pids"] = json!({"limit": 40});
    }
    let ignored = c.update(&serde_json::from_value(new).unwrap()).unwrap();
    assert!(ignored.is_empty(), "{ignored:?}");
    let cg = c.cgroup().unwrap().unwrap();
    let mem = || {
        cg_read(
            &cg,
            Controller::Memory,
            "memory.limit_in_bytes",
            "memory.max",
        )
    };
    assert_eq!(mem(), "134217728");
    if pids {
        assert_eq!(cg_read(&cg, Controller::Pids, "pids.max", "pids.max"), "40");
    }
    if detected.mode() != CgroupMode::V2 {
        // Left out, so unchanged.
        assert_eq!(
            cg_read(&cg, Controller::Cpu, "cpu.shares", "cpu.weight"),
            "512"
        );
    }
    // Recorded: a later load sees the merged resources.
    let again = rt.load(&id).unwrap();
    let r = again
        .spec()
        .linux()
        .as_ref()
        .unwrap()
        .resources()
        .clone()
        .unwrap();
    assert_eq!(r.memory().as_ref().unwrap().limit(), Some(134217728));
    assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(512));
    // Paused containers take updates too.
    c.pause().unwrap();
    c.update(&serde_json::from_value(json!({"memory": {"limit": 100663296}})).unwrap())
        .unwrap();
    assert_eq!(mem(), "100663296");
    c.resume().unwrap();
    let pid = c.pid();
    c.kill(libc::SIGKILL, false).unwrap();
    c.wait().unwrap();
    let e = c
        .update(&serde_json::from_value(json!({"memory": {"limit": 67108864}})).unwrap())
        .unwrap_err();
    assert!(matches!(e, Error::InvalidState { .. }), "{e}");
    c.delete(false).unwrap();
    assert_no_trace(&b, &id, pid);
}

/// Unmounts a test's host mount on drop (lazily, so a failing test cannot leave it).
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path; plain umount2.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// `rro` makes a bind mount read-only together with everything mounted below its
/// source, where `ro` covers the top mount only (runc's recursive options, through
/// mount_setattr).
#[test]
#[ignore = "needs root"]
fn recursive_read_only_bind_covers_submounts() {
    // SAFETY: a probe with a bad fd; only the errno matters.
    let rc = unsafe { libc::syscall(libc::SYS_mount_setattr, -1, c"".as_ptr(), 0, 0, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        eprintln!("skipping: the kernel has no mount_setattr (Linux 5.12+)");
        return;
    }
    let b = Bundle::new();
    let sub = b.file("vol/sub");
    std::fs::create_dir_all(&sub).unwrap();
    let c = std::ffi::CString::new(sub.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "mount a tmpfs under the volume");
    let _u = Unmount(sub.clone());
    let mut v = spec(&[
        "/bin/sh",
        "-c",
        "touch /ro/sub/a && echo ro-sub-writable; \
         touch /rro/sub/b 2>/dev/null || echo rro-sub-readonly; \
         touch /rro/c 2>/dev/null || echo rro-top-readonly",
    ]);
    let mounts = v["mounts"].as_array_mut().unwrap();
    mounts.push(
        json!({"destination": "/ro", "type": "bind", "source": "vol", "options": ["rbind", "ro"]}),
    );
    mounts.push(json!({"destination": "/rro", "type": "bind", "source": "vol", "options": ["rbind", "rro"]}));
    let rt = b.runtime();
    let id = unique_id("rro");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let (out, opts) = out_files(&b, "rro");
    let mut c = rt.create(&id, b.path(), &parse(&v), opts).unwrap();
    let pid = c.pid();
    c.start().unwrap();
    let st = c.wait().unwrap();
    c.delete(false).unwrap();
    let out = std::fs::read_to_string(out).unwrap();
    assert!(st.success(), "{st}: {out}");
    for want in ["ro-sub-writable", "rro-sub-readonly", "rro-top-readonly"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert!(sub.join("a").exists());
    assert!(!sub.join("b").exists());
    // The test's own tmpfs goes before the check that nothing of the bundle is mounted.
    drop(_u);
    assert_no_trace(&b, &id, pid);
}

/// `wait` on a handle loaded from the state (not the process that created the
/// container): it returns when the container exits, with its exit status, and the state
/// says stopped.
#[test]
#[ignore = "needs root"]
fn wait_for_a_container_another_handle_created() {
    let b = Bundle::new();
    let rt = b.runtime();
    let id = unique_id("fwait");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let v = spec(&["/bin/sh", "-c", "sleep 0.3; exit 5"]);
    let mut creator = rt
        .create(&id, b.path(), &parse(&v), CreateOptions::default())
        .unwrap();
    // A second handle, as another process gets with `load`: no child to reap.
    let mut other = rt.load(&id).unwrap();
    creator.start().unwrap();
    let t0 = std::time::Instant::now();
    assert_eq!(other.wait().unwrap(), ExitStatus::Exited(5));
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(200),
        "returned before the exit"
    );
    assert_eq!(status_of(&rt, &id), Status::Stopped);
    // The creator still reaps its child; the status agrees.
    assert_eq!(creator.wait().unwrap(), ExitStatus::Exited(5));
    // Once the creator collected the status, a further wait says so.
    let mut again = rt.load(&id).unwrap();
    assert!(matches!(
        again.wait(),
        Err(Error::ExitStatusUnavailable { .. })
    ));
    creator.delete(false).unwrap();
}
