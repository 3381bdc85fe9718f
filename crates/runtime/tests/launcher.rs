//! Root tests of the container launcher: containers made by its small server process,
//! waited for and deleted by the caller as if it had made them itself.

mod common;

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use common::*;
use kcore_runtime::{CreateOptions, Error, ExitStatus, Launcher};

fn launcher() -> Launcher {
    Launcher::start(std::path::Path::new(env!("CARGO_BIN_EXE_kcore-runc"))).unwrap()
}

/// Options with a reaper and stdout/stderr in one file.
fn opts(b: &Bundle, tag: &str) -> (std::path::PathBuf, CreateOptions) {
    let p = b.file(&format!("{tag}.out"));
    let f = std::fs::File::create(&p).unwrap();
    let e = f.try_clone().unwrap();
    let opts = CreateOptions {
        stdout: Some(OwnedFd::from(f)),
        stderr: Some(OwnedFd::from(e)),
        reaper: true,
        ..CreateOptions::default()
    };
    (p, opts)
}

fn parent_of(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
#[ignore = "needs root"]
fn launched_containers_run_report_their_exit_and_leave_nothing() {
    let b = Bundle::new();
    let l = launcher();
    let rt = b.runtime().with_launcher(l.clone());
    let id = unique_id("launch");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let (out, o) = opts(&b, "launch");
    let v = spec(&["/bin/sh", "-c", "echo out; echo err >&2; read x; exit 7"]);
    // stdin is a pipe the test holds, so the container runs until the test lets it end
    let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
    let o = CreateOptions {
        stdin: Some(OwnedFd::from(r)),
        ..o
    };
    let mut c = rt.run(&id, b.path(), &parse(&v), o).unwrap();
    let pid = c.pid();
    // the container's parent is its reaper, a child of the launcher (the worker that
    // forked it has gone by now, or soon)
    let reaper = parent_of(pid).unwrap();
    assert_ne!(reaper, std::process::id() as i32, "made by this process");
    let deadline = Instant::now() + Duration::from_secs(5);
    while parent_of(reaper) != Some(l.pid() as i32) {
        assert!(
            Instant::now() < deadline,
            "reaper {reaper} is not the launcher's child"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(c.status(), kcore_runtime::Status::Running);
    drop(w);
    assert_eq!(c.wait().unwrap(), ExitStatus::Exited(7));
    let text = std::fs::read_to_string(out).unwrap();
    assert_eq!(text, "out\nerr\n");
    c.delete(false).unwrap();
    assert_no_trace(&b, &id, pid);
}

#[test]
#[ignore = "needs root"]
fn created_then_started_and_failures_come_back_typed() {
    let b = Bundle::new();
    let rt = b.runtime().with_launcher(launcher());
    // create, then start from this process through the exec FIFO
    let id = unique_id("launch-create");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let (out, o) = opts(&b, "create");
    let mut c = rt
        .create(&id, b.path(), &parse(&spec(&["/bin/echo", "started"])), o)
        .unwrap();
    assert_eq!(c.status(), kcore_runtime::Status::Created);
    c.start().unwrap();
    assert_eq!(c.wait().unwrap(), ExitStatus::Exited(0));
    assert_eq!(std::fs::read_to_string(out).unwrap(), "started\n");
    let pid = c.pid();
    c.delete(false).unwrap();
    assert_no_trace(&b, &id, pid);

    // a program that is not there fails as the container process reports it
    let id = unique_id("launch-missing");
    let (_, o) = opts(&b, "missing");
    let e = rt
        .run(&id, b.path(), &parse(&spec(&["/no/such/program"])), o)
        .unwrap_err();
    assert!(matches!(e, Error::Init { .. }), "{e:?}");
    assert!(e.to_string().contains("/no/such/program"), "{e}");
    assert!(!b.root.join(&id).exists(), "state left behind");
    // an id in use is Exists, as in this process
    let id = unique_id("launch-twice");
    let _g2 = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let (_, o) = opts(&b, "twice1");
    let mut c = rt
        .run(&id, b.path(), &parse(&spec(&["/bin/sleep", "30"])), o)
        .unwrap();
    let (_, o) = opts(&b, "twice2");
    let e = rt
        .run(&id, b.path(), &parse(&spec(&["/bin/true"])), o)
        .unwrap_err();
    assert!(matches!(e, Error::Exists { .. }), "{e:?}");
    c.kill(libc::SIGKILL, false).unwrap();
    assert_eq!(c.wait().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
    c.delete(false).unwrap();
}

#[test]
#[ignore = "needs root"]
fn a_killed_launcher_is_started_again_and_a_dropped_one_ends() {
    let b = Bundle::new();
    let l = launcher();
    let rt = b.runtime().with_launcher(l.clone());
    let first = l.pid();
    // SAFETY: a plain kill of the server this test started.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let id = unique_id("launch-again");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let (_, o) = opts(&b, "again");
    let mut c = rt
        .run(&id, b.path(), &parse(&spec(&["/bin/true"])), o)
        .unwrap();
    assert_eq!(c.wait().unwrap(), ExitStatus::Exited(0));
    c.delete(false).unwrap();
    let second = l.pid();
    assert_ne!(first, second, "not started again");
    // every clone gone (the runtimes hold one each): the server ends with the last
    drop((_g, rt, l));
    assert!(
        !std::path::Path::new(&format!("/proc/{second}")).exists(),
        "the server outlived its launcher"
    );
}

#[test]
#[ignore = "needs root"]
fn a_terminal_container_stays_with_its_pty() {
    use std::io::{Read, Write};
    let b = Bundle::new();
    let rt = b.runtime().with_launcher(launcher());
    let mut v = spec(&["/bin/sh"]);
    v["process"]["terminal"] = serde_json::json!(true);
    let id = unique_id("launch-tty");
    let _g = Cleanup {
        runtime: rt.clone(),
        id: id.clone(),
    };
    let sock = b.file("console.sock");
    let receiver = console_receiver(&sock);
    let o = CreateOptions {
        console_socket: Some(sock.clone()),
        reaper: true,
        ..CreateOptions::default()
    };
    let mut c = rt.run(&id, b.path(), &parse(&v), o).unwrap();
    let (master, _) = receiver.join().unwrap();
    // the shell waits on its terminal, however long the worker that made it is gone
    std::thread::sleep(Duration::from_millis(300));
    if c.status() != kcore_runtime::Status::Running {
        panic!("ended: {:?}", c.wait());
    }
    let mut f = std::fs::File::from(master);
    f.write_all(b"echo sum=$((6*7)); exit 3\n").unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&out).contains("sum=42") {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    assert!(String::from_utf8_lossy(&out).contains("sum=42"), "{out:?}");
    assert_eq!(c.wait().unwrap(), ExitStatus::Exited(3));
    c.delete(false).unwrap();
}
