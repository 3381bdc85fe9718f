//! `ps` and `stats`: the container's processes and cgroup statistics.

use super::Container;
use crate::error::Result;

impl Container {
    /// Host pids of every process in the container's cgroup.
    pub fn processes(&self) -> Result<Vec<i32>> {
        match self.cgroup()? {
            Some(cg) => Ok(cg
                .procs_recursive()?
                .into_iter()
                .map(|p| p as i32)
                .collect()),
            None => Ok(vec![self.saved.pid]),
        }
    }

    /// cgroup statistics.
    pub fn stats(&self) -> Result<kcore_cgroup::Stats> {
        match self.cgroup()? {
            Some(cg) => Ok(cg.stats()?),
            None => Ok(kcore_cgroup::Stats::default()),
        }
    }

    /// Intel RDT statistics of the container's resctrl group (runc's `intel_rdt` in
    /// `events --stats`); `None` when the container has no group or the host no resctrl.
    pub fn intel_rdt_stats(&self) -> Result<Option<crate::IntelRdtStats>> {
        let (Some(group), Some(host)) = (
            self.saved.rdt_group.as_deref(),
            crate::intelrdt::Resctrl::find(),
        ) else {
            return Ok(None);
        };
        crate::intelrdt::stats(&host, group, self.saved.rdt_mon_group.as_deref()).map(Some)
    }
}
