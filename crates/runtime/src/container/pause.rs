//! `pause` and `resume` through the cgroup freezer.

use super::Container;
use crate::error::{Error, Result};
use crate::state::Status;

impl Container {
    /// Freezes every process of the container.
    pub fn pause(&mut self) -> Result<()> {
        self.guard("pause", Status::can_pause)?;
        let cg = self.cgroup()?.ok_or_else(|| Error::InvalidState {
            id: self.saved.id.clone(),
            op: "pause",
            status: "without a cgroup".into(),
        })?;
        cg.freeze()?;
        self.saved.status = Status::Paused;
        self.saved.save(&self.dir)
    }

    /// Thaws a paused container.
    pub fn resume(&mut self) -> Result<()> {
        self.guard("resume", Status::can_resume)?;
        if let Some(cg) = self.cgroup()? {
            cg.thaw()?;
        }
        self.saved.status = Status::Running;
        self.saved.save(&self.dir)
    }
}
