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
}
