//! `start` (and `wait` for a container this process created).

use std::io::Write;
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
    /// Only for containers created by this process (their init is our child).
    pub fn wait(&mut self) -> Result<ExitStatus> {
        let Some(init) = &mut self.init else {
            return Err(Error::InvalidState {
                id: self.saved.id.clone(),
                op: "wait for",
                status: "not a child of this process".into(),
            });
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
}
