//! Lifecycle hooks: each gets the state JSON on stdin and may have a timeout.
//!
//! Failure semantics follow the runtime spec (runtime.md "Lifecycle", config.md
//! "POSIX-platform Hooks"):
//!
//! - `prestart`, `createRuntime`, `createContainer`, `startContainer`: the first failing
//!   hook (non-zero exit, signal, timeout, or a binary that cannot be run) stops the
//!   sequence and fails the operation; the caller tears the container down and runs
//!   the `poststop` hooks (lifecycle steps 12-13).
//! - `poststart`, `poststop`: a failure is logged as a warning, the hooks listed after
//!   it still run, and the operation goes on as if the hook had succeeded.
//!
//! The `status` in the state on stdin follows runc where runtimes differ: `creating`
//! for `prestart`, `createRuntime` and `createContainer`, `created` for
//! `startContainer`, `running` for `poststart`, `stopped` for `poststop` (crun passes
//! `created` to the first three).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{Error, HookFailure, Result};

/// The hook kinds of the runtime spec, in lifecycle order.
pub(crate) const KINDS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Whether a failing hook of `kind` fails the operation (else it is only logged).
pub(crate) fn is_fatal(kind: &str) -> bool {
    !matches!(kind, "poststart" | "poststop")
}

/// Runs `hooks` in order with the failure semantics of `kind` (see the module doc).
pub(crate) fn run_hooks(kind: &'static str, hooks: &[Hook], state_json: &[u8]) -> Result<()> {
    for h in hooks {
        let _span = tracing::debug_span!("hook", kind, path = %h.path().display()).entered();
        match run_hook(kind, h, state_json) {
            Ok(()) => {}
            Err(e) if is_fatal(kind) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %chain(&e), "{kind} hook failed; continuing as the runtime spec asks")
            }
        }
    }
    Ok(())
}

/// `e` and its sources joined with `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn hook_err(kind: &'static str, h: &Hook, source: HookFailure) -> Error {
    Error::Hook {
        kind,
        path: h.path().clone(),
        source,
    }
}

pub(crate) fn run_hook(kind: &'static str, h: &Hook, state_json: &[u8]) -> Result<()> {
    let mut cmd = Command::new(h.path());
    if let Some(args) = h.args() {
        if let Some((first, rest)) = args.split_first() {
            cmd.arg0(first).args(rest);
        }
    }
    cmd.env_clear();
    for kv in h.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| hook_err(kind, h, HookFailure::Spawn(e)))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook may exit without reading its stdin: EPIPE is not a failure.
        let _ = stdin.write_all(state_json);
    }
    let status = match h.timeout() {
        Some(t) if t > 0 => {
            let deadline = Instant::now() + Duration::from_secs(t as u64);
            match wait_until(&mut child, deadline) {
                Some(s) => s,
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(hook_err(kind, h, HookFailure::Timeout(t)));
                }
            }
        }
        _ => child
            .wait()
            .map_err(|e| hook_err(kind, h, HookFailure::Wait(e)))?,
    };
    if !status.success() {
        return Err(hook_err(kind, h, HookFailure::Exit(status)));
    }
    Ok(())
}

/// Waits for the child until `deadline` using a pidfd and poll(2).
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> Option<std::process::ExitStatus> {
    let pidfd = kcore_ns::pidfd_open(child.id() as i32).ok();
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        match &pidfd {
            Some(fd) => {
                let mut p = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, ms) };
            }
            None => std::thread::sleep(Duration::from_millis(10).min(left)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: &str) -> Hook {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn hook_gets_state_on_stdin_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let h = hook(&format!(
            r#"{{"path": "/bin/sh", "args": ["sh", "-c", "cat > {0}; echo \"$FOO\" >> {0}"], "env": ["FOO=bar"]}}"#,
            out.display()
        ));
        run_hooks("poststart", &[h], br#"{"id":"x"}"#).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"x\"}bar\n"
        );
    }

    #[test]
    fn failures_name_kind_and_cause() {
        let h = hook(r#"{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}"#);
        let e = run_hooks("createRuntime", &[h], b"{}").unwrap_err();
        assert_eq!(e.to_string(), "createRuntime hook /bin/sh failed");
        assert!(
            matches!(&e, Error::Hook { source: HookFailure::Exit(s), .. } if s.code() == Some(3)),
            "{e:?}"
        );
        assert_eq!(
            chain(&e),
            "createRuntime hook /bin/sh failed: exited with exit status: 3"
        );
        let h = hook(r#"{"path": "/nonexistent/hook"}"#);
        let e = run_hooks("prestart", &[h], b"{}").unwrap_err();
        assert!(
            matches!(
                e,
                Error::Hook {
                    source: HookFailure::Spawn(_),
                    ..
                }
            ),
            "{e:?}"
        );
    }

    /// Every hook kind × (ok, fail, timeout): a fatal kind stops at the failing hook and
    /// fails; poststart/poststop log it, run the hooks after it and succeed.
    #[test]
    fn failure_semantics_per_kind() {
        let kinds = [
            ("prestart", true),
            ("createRuntime", true),
            ("createContainer", true),
            ("startContainer", true),
            ("poststart", false),
            ("poststop", false),
        ];
        let outcomes = [
            (
                "ok",
                r#"{"path": "/bin/sh", "args": ["sh", "-c", "exit 0"]}"#,
                None,
            ),
            (
                "fail",
                r#"{"path": "/bin/sh", "args": ["sh", "-c", "exit 7"]}"#,
                Some("exited"),
            ),
            (
                "timeout",
                r#"{"path": "/bin/sh", "args": ["sh", "-c", "exec sleep 30"], "timeout": 1}"#,
                Some("timed out"),
            ),
        ];
        for (kind, fatal) in kinds {
            assert_eq!(is_fatal(kind), fatal, "{kind}");
            for (name, first, failure) in outcomes {
                let dir = tempfile::tempdir().unwrap();
                let marker = dir.path().join("after");
                let first = hook(first);
                let after = hook(&format!(
                    r#"{{"path": "/bin/sh", "args": ["sh", "-c", "cat > {}"]}}"#,
                    marker.display()
                ));
                let started = Instant::now();
                let res = run_hooks(kind, &[first, after], br#"{"status":"x"}"#);
                assert!(started.elapsed() < Duration::from_secs(20), "{kind}/{name}");
                let after_ran = marker.exists();
                match (failure, fatal) {
                    (None, _) | (Some(_), false) => {
                        assert!(res.is_ok(), "{kind}/{name}: {res:?}");
                        assert!(after_ran, "{kind}/{name}: the next hook did not run");
                        assert_eq!(std::fs::read(&marker).unwrap(), br#"{"status":"x"}"#);
                    }
                    (Some(why), true) => {
                        let e = res.expect_err(&format!("{kind}/{name} succeeded"));
                        assert!(chain(&e).contains(why), "{kind}/{name}: {}", chain(&e));
                        assert!(!after_ran, "{kind}/{name}: a hook after the failure ran");
                    }
                }
            }
        }
    }
}
