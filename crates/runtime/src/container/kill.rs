//! `kill`: a signal to the init process or to every process of the container.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::Container;
use crate::error::{Error, Result};
use crate::state::{self, Status};

impl Container {
    /// Sends `signal` to the container process, or with `all` to every process in its cgroup.
    pub fn kill(&mut self, signal: i32, all: bool) -> Result<()> {
        let _span = tracing::debug_span!("kill", id = %self.saved.id, signal, all).entered();
        let st = self.guard("kill", Status::can_kill)?;
        if all {
            if let Some(cg) = self.cgroup()? {
                for pid in cg.procs_recursive()? {
                    // SAFETY: plain kill(2); the pid is in our cgroup.
                    unsafe { libc::kill(pid as i32, signal) };
                }
                if st == Status::Paused && signal == libc::SIGKILL {
                    cg.thaw()?;
                }
                return Ok(());
            }
        }
        let pidfd = kcore_ns::pidfd_open(self.saved.pid)?;
        // Re-check after taking the pidfd: the pid may have been reused before.
        if !state::alive(self.saved.pid, self.saved.pid_start) {
            return Err(Error::InvalidState {
                id: self.saved.id.clone(),
                op: "kill",
                status: Status::Stopped.to_string(),
            });
        }
        // SAFETY: valid pidfd; a null siginfo is allowed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc != 0 {
            return Err(Error::sys(format!("signal {signal} to {}", self.saved.pid)));
        }
        if st == Status::Paused && signal == libc::SIGKILL {
            if let Some(cg) = self.cgroup()? {
                cg.thaw()?;
            }
        }
        Ok(())
    }

    /// Waits (up to `timeout`) until the container process is gone.
    pub(super) fn wait_gone(&mut self, timeout: Duration) -> Result<()> {
        if let Some(init) = &mut self.init {
            init.join()?;
            if let Some(c) = &mut init.child {
                c.wait()?;
            }
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let pidfd = kcore_ns::pidfd_open(self.saved.pid).ok();
        while state::alive(self.saved.pid, self.saved.pid_start) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Sys {
                    op: format!("wait for container process {}", self.saved.pid),
                    source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                });
            }
            match &pidfd {
                Some(fd) => {
                    let mut p = libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, left.as_millis().min(100) as i32) };
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        Ok(())
    }
}
