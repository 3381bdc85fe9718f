//! Root tests of NsCommand: new/joined namespaces, two-phase spawn, errors, id maps.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use kcore_ns::mount::{self, MountFlags, Propagation};
use kcore_ns::{ChildStage, Error, ExitStatus, IdMap, Namespace, NsCommand};

#[test]
#[ignore = "needs root"]
fn child_is_pid1_with_own_hostname_network_and_mounts() {
    let serial = serial();
    let dir = TestDir::new("pid1");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let (out_r, out_w) = pipe();
    let (in_r, in_w) = pipe();
    let script = format!(
        "echo $$; cat /proc/sys/kernel/hostname /proc/sys/kernel/domainname; \
         grep -c ' {} ' /proc/self/mountinfo; echo ---; cat /proc/net/dev; read x || true",
        mnt.display()
    );
    let set = Namespace::Pid
        | Namespace::Uts
        | Namespace::Net
        | Namespace::Mount
        | Namespace::Ipc
        | Namespace::Cgroup;
    let mut cmd = NsCommand::new("/bin/sh");
    cmd.args(["-c", &script])
        .new_namespaces(set)
        .hostname("kcore-box")
        .domainname("kcore-domain")
        .stdout(out_w)
        .stdin(in_r);
    let mnt2 = mnt.clone();
    cmd.setup(move || {
        mount::set_propagation(Path::new("/"), Propagation::Private, true)?;
        mount::mount_tmpfs(&mnt2, MountFlags::NONE, Some("size=1m"))?;
        Ok(())
    });
    let pending = cmd.spawn().unwrap();
    let pid = pending.pid();
    assert!(pid > 1);
    let mut child = pending.release().unwrap();
    // While the shell waits on stdin, its namespaces differ from ours.
    for ns in set.iter() {
        assert_ne!(ns_inode(pid, ns), self_inode(ns), "{ns} namespace not new");
    }
    drop(in_w);
    let out = read_all(out_r);
    assert!(child.wait().unwrap().success());
    let (head, net) = out.split_once("---\n").expect(&out);
    let lines: Vec<&str> = head.lines().collect();
    assert_eq!(lines, vec!["1", "kcore-box", "kcore-domain", "1"], "{out}");
    assert_eq!(interfaces(net), vec!["lo".to_string()], "{net}");
    // The host never saw the child's tmpfs, and our hostname is unchanged.
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host.contains(&format!(" {} ", mnt.display())));
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "kcore-box"
    );
    drop(dir);
    serial.assert_mounts_unchanged();
}

#[test]
#[ignore = "needs root"]
fn pid_is_known_before_setup_runs() {
    let serial = serial();
    let dir = TestDir::new("twophase");
    let marker = dir.path().join("released");
    let marker2 = marker.clone();
    let mut cmd = NsCommand::from_fn(|| {
        // SAFETY: getpid has no preconditions.
        if unsafe { libc::getpid() } == 1 {
            0
        } else {
            3
        }
    });
    cmd.new_namespaces(Namespace::Pid).setup(move || {
        // The parent writes the marker between spawn and release.
        let pid = std::fs::read_to_string(&marker2)?;
        if pid.is_empty() {
            return Err("marker empty".into());
        }
        Ok(())
    });
    let pending = cmd.spawn().unwrap();
    let pid = pending.pid();
    // The child exists (in its own pid namespace) but has not run its setup yet.
    assert_ne!(
        ns_inode(pid, Namespace::Pid),
        self_inode(Namespace::Pid),
        "child not in a new pid namespace"
    );
    assert!(pending.pidfd().is_some());
    std::fs::write(&marker, pid.to_string()).unwrap();
    let mut child = pending.release().unwrap();
    assert_eq!(child.wait().unwrap(), ExitStatus::Exited(0));
    // A second wait returns the same status without a syscall on a reaped pid.
    assert_eq!(child.wait().unwrap(), ExitStatus::Exited(0));
    assert!(matches!(
        child.kill(libc::SIGKILL),
        Err(Error::Reaped { .. })
    ));
    drop(dir);
    serial.assert_mounts_unchanged();
}

#[test]
#[ignore = "needs root"]
fn setup_and_exec_failures_are_typed_errors() {
    let serial = serial();
    let dir = TestDir::new("errors");
    let target = dir.path().join("t");
    let mut cmd = NsCommand::new("/bin/true");
    cmd.new_namespaces(Namespace::Mount).setup(move || {
        mount::set_propagation(Path::new("/"), Propagation::Private, true)?;
        mount::bind(
            Path::new("/nonexistent/kcore-ns"),
            &target,
            false,
            MountFlags::NONE,
        )?;
        Ok(())
    });
    match cmd.run() {
        Err(Error::Child {
            stage,
            errno,
            message,
            ..
        }) => {
            assert_eq!(stage, ChildStage::Setup);
            assert_eq!(errno, Some(libc::ENOENT), "{message}");
            assert!(message.contains("/nonexistent/kcore-ns"), "{message}");
        }
        other => panic!("expected a setup error, got {other:?}"),
    }

    let mut cmd = NsCommand::new("/nonexistent/kcore-ns-prog");
    cmd.new_namespaces(Namespace::Pid);
    match cmd.run() {
        Err(e @ Error::Child { .. }) => {
            assert!(
                matches!(
                    e,
                    Error::Child {
                        stage: ChildStage::Exec,
                        ..
                    }
                ),
                "{e}"
            );
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("expected an exec error, got {other:?}"),
    }

    let mut cmd = NsCommand::new("/bin/true");
    cmd.join(Namespace::Net, dir.path().join("no-such-netns"));
    assert!(matches!(cmd.spawn(), Err(Error::Path { .. })));

    // Joining a file of the wrong kind fails in the helper, with the stage named.
    let mut cmd = NsCommand::new("/bin/true");
    cmd.join(Namespace::Net, "/proc/self/ns/uts");
    match cmd.spawn() {
        Err(Error::Child { stage, errno, .. }) => {
            assert_eq!(stage, ChildStage::Join);
            assert_eq!(errno, Some(libc::EINVAL));
        }
        other => panic!("expected a join error, got {other:?}"),
    }
    drop(dir);
    serial.assert_mounts_unchanged();
}

#[test]
#[ignore = "needs root"]
fn kill_and_drop_end_the_child() {
    let _serial = serial();
    let mut cmd = NsCommand::new("sleep");
    cmd.arg("100")
        .new_namespaces(Namespace::Pid | Namespace::Uts);
    let mut child = cmd.run().unwrap();
    assert_eq!(child.try_wait().unwrap(), None);
    child.kill(libc::SIGKILL).unwrap();
    assert_eq!(child.wait().unwrap(), ExitStatus::Signaled(libc::SIGKILL));

    let mut cmd = NsCommand::new("sleep");
    cmd.arg("100").new_namespaces(Namespace::Pid);
    let pending = cmd.spawn().unwrap();
    let pid = pending.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(pending);
    // Killed and reaped: the pid no longer names our child.
    // SAFETY: waitpid on a specific pid with a valid out pointer.
    let rc = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ECHILD)
    );

    let mut cmd = NsCommand::new("sh");
    cmd.args(["-c", "exit 7"]).new_namespaces(Namespace::Pid);
    let mut child = cmd.run().unwrap();
    assert_eq!(child.wait().unwrap(), ExitStatus::Exited(7));
}

#[test]
#[ignore = "needs root"]
fn user_namespace_maps_root_to_unprivileged_host_id() {
    let serial = serial();
    let dir = TestDir::new("userns");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = dir.path().join("made-by-container-root");
    let file2 = file.clone();
    let mut cmd = NsCommand::from_fn(move || {
        // SAFETY: plain id getters.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        if uid != 0 || gid != 0 {
            return 2;
        }
        let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        if map.split_whitespace().collect::<Vec<_>>() != ["0", "100000", "65536"] {
            return 3;
        }
        if std::fs::write(&file2, "x").is_err() {
            return 4;
        }
        // Host root's files are not ours: we may not chown them.
        let c = std::ffi::CString::new("/proc/1/root").unwrap();
        // SAFETY: valid path.
        if unsafe { libc::chown(c.as_ptr(), 0, 0) } == 0 {
            return 5;
        }
        0
    });
    cmd.new_namespaces(Namespace::User | Namespace::Mount | Namespace::Pid)
        .uid_map([IdMap::new(0, 100_000, 65536)])
        .gid_map([IdMap::new(0, 100_000, 65536)]);
    let pending = cmd.spawn().unwrap();
    let pid = pending.pid();
    let mut child = pending.release().unwrap();
    assert_eq!(child.wait().unwrap(), ExitStatus::Exited(0));
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (100_000, 100_000));
    assert!(pid > 0);
    drop(dir);
    serial.assert_mounts_unchanged();
}

#[test]
#[ignore = "needs root"]
fn join_uts_by_pidfd_and_net_by_path() {
    let _serial = serial();
    let (in_r, in_w) = pipe();
    let mut first = NsCommand::new("sh");
    first
        .args(["-c", "read x || true"])
        .new_namespaces(Namespace::Uts | Namespace::Net)
        .hostname("kcore-first")
        .stdin(in_r);
    let mut first = first.run().unwrap();
    let pidfd = kcore_ns::pidfd_open(first.pid()).unwrap();

    let (out_r, out_w) = pipe();
    let mut second = NsCommand::new("sh");
    second
        .args(["-c", "cat /proc/sys/kernel/hostname; read x || true"])
        .join_pidfd(pidfd, Namespace::Uts)
        .join(Namespace::Net, Namespace::Net.proc_path(Some(first.pid())))
        .stdout(out_w);
    let (in2_r, in2_w) = pipe();
    second.stdin(in2_r);
    let mut second = second.run().unwrap();
    assert_eq!(
        ns_inode(second.pid(), Namespace::Net),
        ns_inode(first.pid(), Namespace::Net)
    );
    assert_eq!(
        ns_inode(second.pid(), Namespace::Uts),
        ns_inode(first.pid(), Namespace::Uts)
    );
    assert_eq!(
        ns_inode(second.pid(), Namespace::Pid),
        self_inode(Namespace::Pid)
    );
    drop(in2_w);
    assert_eq!(read_all(out_r).trim(), "kcore-first");
    assert!(second.wait().unwrap().success());
    drop(in_w);
    assert!(first.wait().unwrap().success());
}

#[test]
#[ignore = "needs root"]
fn time_namespace_offsets_shift_the_monotonic_clock() {
    let _serial = serial();
    const OFFSET: i64 = 10_000_000;
    let now = monotonic();
    let (out_r, out_w) = pipe();
    let out_w = std::cell::RefCell::new(Some(std::fs::File::from(out_w)));
    let mut cmd = NsCommand::from_fn(move || {
        use std::io::Write;
        let mut f = out_w.borrow_mut().take().unwrap();
        let _ = write!(f, "{}", monotonic());
        0
    });
    cmd.new_namespaces(Namespace::Time).time_offsets(OFFSET, 0);
    let mut child = cmd.run().unwrap();
    // The closure (and so our copy of the pipe's write end) lives in `cmd`.
    drop(cmd);
    assert!(child.wait().unwrap().success());
    let seen: i64 = read_all(out_r).parse().unwrap();
    assert!(
        seen >= now + OFFSET,
        "child clock {seen} not shifted from {now}"
    );
}

fn monotonic() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec
}

#[test]
#[ignore = "needs root"]
fn exec_gate_releases_early_and_reports_later_failures() {
    let _serial = serial();
    // The gate blocks until the parent writes a byte, like an OCI exec fifo.
    let (gate_r, gate_w) = pipe();
    let gate_r = std::cell::RefCell::new(Some(gate_r));
    let mut cmd = NsCommand::new("sh");
    cmd.args(["-c", "exit 5"])
        .new_namespaces(Namespace::Pid)
        .exec_gate(move || {
            use std::io::Read;
            let mut f = gate_r.borrow_mut().take().ok_or("gate ran twice")?;
            let mut b = [0u8; 1];
            f.read_exact(&mut b)?;
            Ok(())
        });
    let mut child = cmd.run().unwrap();
    // Released while the child still waits at the gate.
    assert_eq!(child.try_wait().unwrap(), None);
    {
        use std::io::Write;
        std::fs::File::from(gate_w).write_all(b"x").unwrap();
    }
    child.wait_exec().unwrap();
    assert_eq!(child.wait().unwrap(), ExitStatus::Exited(5));

    // A failing gate is reported by wait_exec with its stage and errno.
    let mut cmd = NsCommand::new("/bin/true");
    cmd.exec_gate(|| Err(Box::new(std::io::Error::from_raw_os_error(libc::EPIPE))));
    let mut child = cmd.run().unwrap();
    match child.wait_exec() {
        Err(Error::Child { stage, errno, .. }) => {
            assert_eq!(stage, ChildStage::ExecGate);
            assert_eq!(errno, Some(libc::EPIPE));
        }
        other => panic!("expected a gate error, got {other:?}"),
    }
    assert_eq!(child.wait().unwrap(), ExitStatus::Exited(127));

    // So is an exec failure after the gate.
    let mut cmd = NsCommand::new("/nonexistent/kcore-ns-gated");
    cmd.exec_gate(|| Ok(()));
    let mut child = cmd.run().unwrap();
    let err = child.wait_exec().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Child {
                stage: ChildStage::Exec,
                ..
            }
        ),
        "{err}"
    );
    child.wait().unwrap();
}

#[test]
#[ignore = "needs root"]
fn parent_death_signal_kills_child_when_spawning_thread_exits() {
    let _serial = serial();
    let child = std::thread::spawn(|| {
        let mut cmd = NsCommand::new("sleep");
        cmd.arg("30")
            .new_namespaces(Namespace::Pid)
            .parent_death_signal(libc::SIGKILL);
        cmd.run().unwrap()
    })
    .join()
    .unwrap();
    let mut child = child;
    assert_eq!(child.wait().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
}

#[test]
#[ignore = "needs root"]
fn concurrent_spawns_do_not_hold_each_others_pipes() {
    let _serial = serial();
    // One thread keeps a child pending (blocked before release) while this one
    // spawns and releases others: neither waits for the other's child.
    let (tx, rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let mut cmd = NsCommand::new("/bin/true");
        cmd.new_namespaces(Namespace::Pid);
        let pending = cmd.spawn().unwrap();
        rx.recv().unwrap();
        let mut child = pending.release().unwrap();
        child.wait().unwrap()
    });
    for _ in 0..5 {
        let mut cmd = NsCommand::new("/bin/true");
        cmd.new_namespaces(Namespace::Pid);
        assert!(cmd.run().unwrap().wait().unwrap().success());
    }
    tx.send(()).unwrap();
    assert!(holder.join().unwrap().success());
}

#[test]
#[ignore = "needs root"]
fn builder_chains_and_spawns_twice() {
    let _serial = serial();
    let mut cmd = NsCommand::new("sh");
    let a = cmd
        .args(["-c", "exit 3"])
        .new_namespaces(Namespace::Pid)
        .run()
        .unwrap()
        .wait()
        .unwrap();
    let b = cmd.run().unwrap().wait().unwrap();
    assert_eq!((a, b), (ExitStatus::Exited(3), ExitStatus::Exited(3)));
    // A function command is reusable too: each child runs its own copy.
    let mut f = NsCommand::from_fn(|| 4);
    assert_eq!(f.run().unwrap().wait().unwrap(), ExitStatus::Exited(4));
    assert_eq!(f.run().unwrap().wait().unwrap(), ExitStatus::Exited(4));
}

#[test]
#[ignore = "needs root"]
fn persisted_uts_namespace_outlives_its_process() {
    let serial = serial();
    let dir = TestDir::new("persist");
    let file = dir.path().join("uts");
    let mut first = NsCommand::new("/bin/true");
    first
        .new_namespaces(Namespace::Uts)
        .hostname("kcore-persisted");
    let pending = first.spawn().unwrap();
    kcore_ns::persist(&Namespace::Uts.proc_path(Some(pending.pid())), &file).unwrap();
    let ino = ns_inode(pending.pid(), Namespace::Uts);
    assert!(pending.release().unwrap().wait().unwrap().success());
    // The process is gone, the namespace (with its hostname) is not.
    assert_eq!(std::fs::metadata(&file).unwrap().ino(), ino);
    let (out_r, out_w) = pipe();
    let mut second = NsCommand::new("cat");
    second
        .arg("/proc/sys/kernel/hostname")
        .join(Namespace::Uts, &file)
        .stdout(out_w);
    assert!(second.run().unwrap().wait().unwrap().success());
    assert_eq!(read_all(out_r).trim(), "kcore-persisted");
    assert!(kcore_ns::persist(Path::new("/proc/self/ns/uts"), &file).is_err());
    assert!(kcore_ns::remove_persisted(&file).unwrap());
    assert!(!kcore_ns::remove_persisted(&file).unwrap());
    assert!(!file.exists());
    drop(dir);
    serial.assert_mounts_unchanged();
}

#[test]
#[ignore = "needs root"]
fn a_reaper_records_the_exit_status_for_whoever_reads_it_later() {
    let _serial = serial();
    let dir = TestDir::new("reaper");
    let path = dir.path().join("exit");
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap()
    };
    // the process's parent is the reaper, not this process; its output pipe closes at
    // its end (the reaper holds no copy)
    let (out_r, out_w) = pipe();
    let mut cmd = NsCommand::new("sh");
    cmd.args(["-c", "echo $PPID; read x; exit 7"])
        .new_namespaces(Namespace::Uts)
        .exit_record(open());
    let (in_r, in_w) = pipe();
    cmd.stdin(in_r).stdout(out_w);
    let mut child = cmd.run().unwrap();
    let reaper = child.reaper_pid().expect("a reaper");
    let comm = std::fs::read_to_string(format!("/proc/{reaper}/comm")).unwrap();
    assert_eq!(comm.trim(), "kcore-reaper");
    assert_eq!(
        kcore_ns::read_exit_record(&std::fs::File::open(&path).unwrap()).unwrap(),
        None,
        "nothing recorded while it runs"
    );
    drop(in_w);
    assert_eq!(child.wait().unwrap(), ExitStatus::Exited(7));
    assert_eq!(read_all(out_r).trim(), reaper.to_string());
    // what another process (a restarted agent) reads
    assert_eq!(
        kcore_ns::read_exit_record(&std::fs::File::open(&path).unwrap()).unwrap(),
        Some(ExitStatus::Exited(7))
    );

    // a signal is recorded as such
    std::fs::remove_file(&path).unwrap();
    let mut cmd = NsCommand::new("sleep");
    cmd.arg("100").exit_record(open());
    let mut child = cmd.run().unwrap();
    child.kill(libc::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap(), ExitStatus::Signaled(libc::SIGTERM));
    assert_eq!(
        kcore_ns::read_exit_record(&std::fs::File::open(&path).unwrap()).unwrap(),
        Some(ExitStatus::Signaled(libc::SIGTERM))
    );

    // a pending process dropped before release: killed, and its reaper gone too
    let mut cmd = NsCommand::new("sleep");
    cmd.arg("100").exit_record(open());
    let pending = cmd.spawn().unwrap();
    let pid = pending.pid();
    drop(pending);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}
