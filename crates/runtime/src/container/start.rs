//! `start` (and `wait` for a container this process created).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use kcore_ns::ExitStatus;

use super::{hooks_of, state_json, Container};
use crate::error::{Error, Result};
use crate::hooks::run_hooks;
use crate::state::{Status, FIFO};

impl Container {
    /// Lets the user program run; then runs the `poststart` hooks.
    ///
    /// For a container created by this process, waits until the program was executed
    /// and reports a failure to do so (a `startContainer` hook, seccomp, exec). The
    /// container is then stopped; [`delete`](Self::delete) destroys it and runs the
    /// `poststop` hooks, as after `runc start` fails. A failing `poststart` hook is only
    /// logged.
    pub fn start(&mut self) -> Result<()> {
        let _span = tracing::info_span!("start", id = %self.saved.id).entered();
        self.guard("start", Status::can_start)?;
        let fifo = self.dir.join(FIFO);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&fifo)
            .map_err(|e| Error::io("open", &fifo, e))?;
        f.write_all(&[0])
            .map_err(|e| Error::io("write", &fifo, e))?;
        drop(f);
        let _ = std::fs::remove_file(&fifo);
        self.saved.status = Status::Running;
        self.saved.save(&self.dir)?;
        if let Some(init) = &mut self.init {
            if let Err(e) = init.join() {
                return Err(match e {
                    Error::Ns(kcore_ns::Error::Child { message, errno, .. }) => Error::Init {
                        id: self.saved.id.clone(),
                        message,
                        errno,
                    },
                    e => e,
                });
            }
        }
        self.run_poststart();
        Ok(())
    }

    /// Runs the poststart hooks; a failure is logged and the hooks after it still run,
    /// as the runtime spec asks.
    pub(super) fn run_poststart(&mut self) {
        let hooks = hooks_of(&self.saved.spec);
        if let Some(h) = hooks.get("poststart").filter(|h| !h.is_empty()) {
            let json = state_json(&self.saved, Status::Running);
            let _ = run_hooks("poststart", h, &json);
        }
    }

    /// Waits for the container process to exit and returns its status.
    ///
    /// A container created by this process is reaped here. For one another process
    /// created (loaded with [`Runtime::load`](crate::Runtime::load)), the wait is on a
    /// pidfd of the recorded pid, checked against the recorded start time (so a reused
    /// pid is never waited for); the status is read from the exited process before its
    /// parent collects it, and [`Error::ExitStatusUnavailable`] says when the parent
    /// collected it first. Either way the state is `stopped` afterwards.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        let Some(init) = &mut self.init else {
            return self.wait_foreign();
        };
        init.join()?;
        let child = init.child.as_mut().ok_or_else(|| Error::InvalidState {
            id: self.saved.id.clone(),
            op: "wait for",
            status: "already reaped".into(),
        })?;
        let st = child.wait()?;
        self.saved.status = Status::Stopped;
        self.saved.save(&self.dir)?;
        Ok(st)
    }

    fn wait_foreign(&mut self) -> Result<ExitStatus> {
        let _span =
            tracing::debug_span!("wait", id = %self.saved.id, pid = self.saved.pid).entered();
        if let Some((reaper, start)) = self.saved.reaper {
            // the reaper outlives the process and records its status before it ends
            wait_for_exit(reaper, start)?;
            let path = self.dir.join(crate::state::EXIT_FILE);
            let st = std::fs::File::open(&path)
                .and_then(|f| kcore_ns::read_exit_record(&f))
                .map_err(|e| Error::io("read", &path, e))?;
            self.saved.status = Status::Stopped;
            self.saved.save(&self.dir)?;
            return st.ok_or_else(|| Error::ExitStatusUnavailable {
                id: self.saved.id.clone(),
            });
        }
        let (pid, start) = (self.saved.pid, self.saved.pid_start);
        wait_for_exit(pid, start)?;
        let st = crate::state::exit_status(pid, start);
        self.saved.status = Status::Stopped;
        self.saved.save(&self.dir)?;
        st.ok_or_else(|| Error::ExitStatusUnavailable {
            id: self.saved.id.clone(),
        })
    }
}

/// Waits until the process `pid` that started at `start` has exited (at once when that
/// process is gone already).
fn wait_for_exit(pid: i32, start: u64) -> Result<()> {
    // The pidfd pins the pid: if the start time still matches once it is open, it refers
    // to the process that started then (a zombie included).
    let fd = (pid > 0).then(|| kcore_ns::pidfd_open(pid).ok()).flatten();
    let same = crate::state::proc_stat(pid).is_some_and(|(s, _)| s == start);
    let (Some(fd), true) = (&fd, same) else {
        return Ok(());
    };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, -1) } >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::io("poll the pidfd of", format!("/proc/{pid}"), e));
        }
    }
}
