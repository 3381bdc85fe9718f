//! Lifecycle hooks: each gets the state JSON on stdin and may have a timeout.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};

/// Runs `hooks` in order; the first failure stops the sequence.
pub(crate) fn run_hooks(kind: &'static str, hooks: &[Hook], state_json: &[u8]) -> Result<()> {
    for h in hooks {
        let _span = tracing::debug_span!("hook", kind, path = %h.path().display()).entered();
        run_hook(kind, h, state_json)?;
    }
    Ok(())
}

fn hook_err(kind: &'static str, h: &Hook, message: impl Into<String>) -> Error {
    Error::Hook {
        kind,
        path: h.path().clone(),
        message: message.into(),
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
        .map_err(|e| hook_err(kind, h, format!("cannot run: {e}")))?;
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
                    return Err(hook_err(kind, h, format!("timed out after {t}s")));
                }
            }
        }
        _ => child
            .wait()
            .map_err(|e| hook_err(kind, h, format!("wait: {e}")))?,
    };
    if !status.success() {
        return Err(hook_err(kind, h, format!("exited with {status}")));
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
    fn failing_and_slow_hooks() {
        let h = hook(r#"{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}"#);
        let e = run_hooks("createRuntime", &[h], b"{}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("createRuntime") && e.contains("exit status: 3"),
            "{e}"
        );
        let h = hook(r#"{"path": "/bin/sh", "args": ["sh", "-c", "exec sleep 30"], "timeout": 1}"#);
        let start = Instant::now();
        let e = run_hooks("prestart", &[h], b"{}").unwrap_err().to_string();
        assert!(e.contains("timed out"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(20));
        let h = hook(r#"{"path": "/nonexistent/hook"}"#);
        assert!(run_hooks("poststop", &[h], b"{}")
            .unwrap_err()
            .to_string()
            .contains("cannot run"));
    }
}
