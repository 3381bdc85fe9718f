//! The per-container state directory and the runtime-spec state JSON.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub(crate) const STATE_FILE: &str = "state.json";
pub(crate) const FIFO: &str = "exec.fifo";

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `create` is running: namespaces, mounts and hooks are being set up.
    Creating,
    /// Set up and waiting for `start`; the user program has not run yet.
    Created,
    /// The user program runs.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// The container process has exited.
    Stopped,
}

impl Status {
    /// The lower-case name used in state JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }

    /// `start` is allowed.
    pub fn can_start(self) -> bool {
        self == Status::Created
    }

    /// `kill` is allowed.
    pub fn can_kill(self) -> bool {
        matches!(self, Status::Created | Status::Running | Status::Paused)
    }

    /// `delete` without force is allowed.
    pub fn can_delete(self) -> bool {
        matches!(self, Status::Stopped | Status::Created)
    }

    /// `exec` is allowed.
    pub fn can_exec(self) -> bool {
        matches!(self, Status::Created | Status::Running)
    }

    /// `pause` is allowed.
    pub fn can_pause(self) -> bool {
        self == Status::Running
    }

    /// `resume` is allowed.
    pub fn can_resume(self) -> bool {
        self == Status::Paused
    }

    /// `update` (new resource limits) is allowed: the container's cgroup exists and
    /// holds its processes.
    pub fn can_update(self) -> bool {
        matches!(self, Status::Created | Status::Running | Status::Paused)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The runtime-spec state of a container, as `kcore-runc state` prints it (runc's
/// fields `rootfs`, `created` and `owner` included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Version of the runtime spec the state complies with.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Current status.
    pub status: Status,
    /// Host pid of the container process (0 once stopped).
    pub pid: i32,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 in UTC.
    pub created: String,
    /// Owner of the container (empty: the runtime's user).
    pub owner: String,
    /// The spec's annotations.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// What the state directory stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Saved {
    pub id: String,
    pub status: Status,
    pub pid: i32,
    /// Start time of `pid` in clock ticks since boot (guards against pid reuse).
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    /// cgroup path relative to the hierarchy roots.
    pub cgroup: Option<PathBuf>,
    pub spec: Spec,
    /// The resctrl group of `linux.intelRdt` (exec'd processes join it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdt_group: Option<PathBuf>,
    /// The container's own resctrl monitoring group (`enableMonitoring`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdt_mon_group: Option<PathBuf>,
    /// The runtime created `rdt_group` (and removes it on delete).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rdt_created: bool,
    /// The reaper that is `pid`'s parent and its start time, when the container has
    /// one ([`crate::CreateOptions::reaper`]); it writes [`EXIT_FILE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaper: Option<(i32, u64)>,
}

/// The file in a container's state directory where its reaper records the exit status.
pub(crate) const EXIT_FILE: &str = "exit";

impl Saved {
    pub fn load(dir: &Path) -> Result<Saved> {
        let path = dir.join(STATE_FILE);
        let data = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        serde_json::from_slice(&data).map_err(|e| Error::InvalidSpec {
            file: path.display().to_string(),
            field: "(state)".into(),
            message: e.to_string(),
        })
    }

    /// Writes `state.json` atomically, mode 0600: the spec in it carries the process's
    /// environment, Secret values included. The state is not meant to survive a crash
    /// of the host (runc and crun keep it on `/run`), so it is exchanged into place
    /// ([`kcore_statedir::write_volatile`]) rather than renamed over: a container's state
    /// changes three times in a `run`, and on ext4 each rename over it forced a write to
    /// disk.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let data = serde_json::to_vec(self).map_err(|e| Error::Sys {
            op: "serialize state".into(),
            source: std::io::Error::other(e),
        })?;
        let path = dir.join(STATE_FILE);
        kcore_statedir::write_volatile(&path, &data, kcore_statedir::PRIVATE_FILE)
            .map_err(|e| Error::io("write", &path, e))
    }

    pub fn public(&self, status: Status) -> State {
        State {
            oci_version: "1.2.0".into(),
            id: self.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: String::new(),
            annotations: self.spec.annotations().clone().unwrap_or_default(),
        }
    }
}

/// What `/proc/<pid>/stat` says about a process: its start time and whether it is a zombie.
pub(crate) fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); starttime is field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// The exit status of `pid` (started at `start`) while it is a zombie not yet collected
/// by its parent (`exit_code`, field 52 of `/proc/<pid>/stat`, Linux 3.5+).
pub(crate) fn exit_status(pid: i32, start: u64) -> Option<kcore_ns::ExitStatus> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = s[s.rfind(')')? + 2..].split_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    let state = fields.first()?.chars().next()?;
    let started: u64 = fields.get(19)?.parse().ok()?;
    if state != 'Z' || started != start {
        return None;
    }
    let raw: i32 = fields.get(49)?.parse().ok()?;
    Some(if libc::WIFSIGNALED(raw) {
        kcore_ns::ExitStatus::Signaled(libc::WTERMSIG(raw))
    } else {
        kcore_ns::ExitStatus::Exited(libc::WEXITSTATUS(raw))
    })
}

/// True if `pid` is still the process that was started at `start` and has not exited.
pub(crate) fn alive(pid: i32, start: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    match proc_stat(pid) {
        Some((s, state)) => s == start && state != 'Z' && state != 'X',
        None => false,
    }
}

/// Seconds since the epoch rendered as RFC 3339 (UTC, nanoseconds).
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Container ids: non-empty, `[A-Za-z0-9_.+-]`, not `.`/`..`, at most 1024 bytes.
pub(crate) fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId { id: id.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_251_199, 5);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.000000005Z");
    }

    #[test]
    fn ids() {
        assert!(validate_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ü"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn guards() {
        assert!(Status::Created.can_start());
        assert!(!Status::Running.can_start());
        assert!(!Status::Running.can_delete());
        assert!(Status::Stopped.can_delete());
        assert!(!Status::Stopped.can_kill());
        assert!(Status::Paused.can_resume());
        assert!(!Status::Paused.can_exec());
        assert!(Status::Paused.can_update());
        assert!(!Status::Stopped.can_update());
        assert!(!Status::Creating.can_update());
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id() as i32;
        let (start, _) = proc_stat(me).unwrap();
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
    }
}
