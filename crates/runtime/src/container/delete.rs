//! `delete`: processes, cgroup and state gone; then the `poststop` hooks.

use std::time::Duration;

use super::{hooks_of, state_json, Container};
use crate::error::{Error, Result};
use crate::hooks::run_hooks;
use crate::state::Status;

impl Container {
    /// Deletes the container: its processes (with `force`, or when it never started),
    /// cgroup and state directory; then runs the `poststop` hooks.
    pub fn delete(mut self, force: bool) -> Result<()> {
        let _span = tracing::info_span!("delete", id = %self.saved.id, force).entered();
        let st = self.status();
        if !st.can_delete() && !force {
            return Err(Error::InvalidState {
                id: self.saved.id.clone(),
                op: "delete",
                status: st.to_string(),
            });
        }
        let cg = self.cgroup()?;
        if st != Status::Stopped {
            match &cg {
                Some(cg) if cg.exists() => cg.kill()?,
                _ => {
                    // SAFETY: plain kill(2) of the live container process.
                    unsafe { libc::kill(self.saved.pid, libc::SIGKILL) };
                }
            }
        }
        self.wait_gone(Duration::from_secs(10))?;
        if let Some(cg) = &cg {
            if cg.exists() {
                if !cg.procs_recursive()?.is_empty() {
                    cg.kill()?;
                }
                cg.delete()?;
            }
        }
        if let Some(g) = self
            .saved
            .rdt_group
            .as_ref()
            .filter(|_| self.saved.rdt_created)
        {
            // The monitoring group below goes with it.
            crate::intelrdt::remove_group(g)?;
        } else if let Some(m) = &self.saved.rdt_mon_group {
            crate::intelrdt::remove_group(m)?;
        }
        let hooks = hooks_of(&self.saved.spec);
        let json = state_json(&self.saved, Status::Stopped);
        std::fs::remove_dir_all(&self.dir).map_err(|e| Error::io("remove", &self.dir, e))?;
        if let Some(h) = hooks.get("poststop") {
            // Failures are logged; the delete succeeded.
            let _ = run_hooks("poststop", h, &json);
        }
        Ok(())
    }
}
