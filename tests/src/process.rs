//! Running a command to completion with optional stdin, its output kept apart.

use std::io::Write;
use std::process::{Command, Stdio};

/// What a finished command printed, and whether it succeeded.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command exited with status 0.
    pub ok: bool,
    /// Its standard output, lossily decoded.
    pub stdout: String,
    /// Its standard error, lossily decoded.
    pub stderr: String,
}

/// Runs `cmd` with `stdin` written to its standard input (or with `/dev/null` as input),
/// waiting for it to end. Blocking: from async code, call it in `spawn_blocking`.
///
/// Panics when the program cannot be started: tests call tools the test command installs.
///
/// ```
/// let out = kcore_tests::process::output(std::process::Command::new("cat"), Some("hi"));
/// assert!(out.ok);
/// assert_eq!(out.stdout, "hi");
/// ```
pub fn output(mut cmd: Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (the test command installs it): {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("writing the stdin of {program}: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {program}: {e}"));
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
