//! Statistics read from a cgroup. Counters the host does not offer are `None`.

/// A snapshot of a cgroup's accounting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stats {
    /// Memory accounting.
    pub memory: MemoryStats,
    /// CPU accounting.
    pub cpu: CpuStats,
    /// Task accounting.
    pub pids: PidsStats,
}

/// Memory accounting, in bytes and event counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MemoryStats {
    /// Current usage (`memory.usage_in_bytes` / `memory.current`).
    pub usage: Option<u64>,
    /// Highest usage seen (`memory.max_usage_in_bytes` / `memory.peak`).
    pub peak: Option<u64>,
    /// Times the cgroup hit its limit and ran out of memory (v2 `memory.events` `oom`;
    /// v1 has no such counter, so `None` there).
    pub oom: Option<u64>,
    /// Processes killed by the OOM killer (v2 `memory.events` `oom_kill`, v1
    /// `memory.oom_control` `oom_kill`).
    pub oom_kill: Option<u64>,
    /// Inactive file-backed pages, which the kernel reclaims first (`memory.stat`
    /// `inactive_file` on v2, `total_inactive_file` on v1).
    pub inactive_file: Option<u64>,
}

impl MemoryStats {
    /// The working set as the kubelet and cAdvisor count it: usage less inactive file
    /// pages (never below zero); `None` when usage is unknown.
    ///
    /// ```
    /// let m = kcore_cgroup::MemoryStats { usage: Some(100), inactive_file: Some(30), ..Default::default() };
    /// assert_eq!(m.working_set(), Some(70));
    /// ```
    pub fn working_set(&self) -> Option<u64> {
        self.usage
            .map(|u| u.saturating_sub(self.inactive_file.unwrap_or(0)))
    }
}

/// CPU accounting, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CpuStats {
    /// Total CPU time used (`cpuacct.usage` / `cpu.stat` `usage_usec`).
    pub usage_usec: Option<u64>,
    /// CPU time in user mode.
    pub user_usec: Option<u64>,
    /// CPU time in kernel mode.
    pub system_usec: Option<u64>,
    /// Enforcement periods that have elapsed.
    pub nr_periods: Option<u64>,
    /// Periods in which the cgroup was throttled.
    pub nr_throttled: Option<u64>,
    /// Total time throttled.
    pub throttled_usec: Option<u64>,
}

/// Task accounting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PidsStats {
    /// Tasks currently in the cgroup and its descendants (`pids.current`).
    pub current: Option<u64>,
    /// The limit; `None` when unlimited or unknown.
    pub max: Option<u64>,
}

/// Freezer state of a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum FreezerState {
    /// Running normally.
    Thawed,
    /// Freeze requested, not complete yet.
    Freezing,
    /// Every task is frozen.
    Frozen,
}
