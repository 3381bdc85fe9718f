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

    /// Writes `state.json` atomically (see [`replace`]), mode 0600: the spec in it
    /// carries the process's environment, Secret values included.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let data = serde_json::to_vec(self).map_err(|e| Error::Sys {
            op: "serialize state".into(),
            source: std::io::Error::other(e),
        })?;
        let path = dir.join(STATE_FILE);
        replace(&path, &data).map_err(|e| Error::io("write", &path, e))
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

/// Replaces `path` with `data` (mode 0600) atomically, without the forced writeback a
/// rename over an existing file costs: `data` goes to a new temporary file beside
/// `path`, which is then *exchanged* with `path` (`renameat2(RENAME_EXCHANGE)`) and
/// removed, now holding the old content. Readers see the old state or the new, never a
/// part, as with a rename.
///
/// Why not a plain rename: ext4 (`auto_da_alloc`, its default) allocates and starts
/// writing back the new file's blocks when a rename replaces a file, so each state
/// change of a container wrote to disk, and removing the state then freed those blocks
/// (a synchronous discard on a `discard` mount). A container's state changes three
/// times in a `run`; on this project's hosts, where the state root is on such a disk,
/// that was a few milliseconds of every cycle (crun writes its status once). The state
/// is not meant to survive a crash of the host (runc and crun keep it on `/run`), so
/// giving up that heuristic loses nothing. Where the file system cannot exchange, or
/// `path` does not exist yet, it is a plain rename.
pub(crate) fn replace(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::{AtomicU64, Ordering};

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    let result = kcore_statedir::open(&tmp, &options, kcore_statedir::PRIVATE_FILE)
        .and_then(|mut f| f.write_all(data))
        .and_then(|()| {
            let c = |p: &Path| {
                std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)
            };
            let (from, to) = (c(&tmp)?, c(path)?);
            // SAFETY: two NUL-terminated paths, resolved against the working directory.
            let rc = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    libc::RENAME_EXCHANGE,
                )
            };
            if rc == 0 {
                // `tmp` holds the old state now.
                return std::fs::remove_file(&tmp);
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                // Nothing to exchange with yet, or a file system (or kernel) that
                // cannot exchange: a rename that replaces nothing forces no writeback.
                Some(libc::ENOENT | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                    std::fs::rename(&tmp, path)
                }
                _ => Err(err),
            }
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
    fn replace_writes_then_exchanges_leaving_one_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(STATE_FILE);
        let listing = || {
            let mut v: Vec<String> = std::fs::read_dir(d.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        // First write: nothing to exchange with.
        replace(&p, b"one").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        // Later writes exchange; the old content goes away with the temporary file.
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let first = ino(&p);
        replace(&p, b"two, longer").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two, longer");
        assert_ne!(ino(&p), first, "a new file took the name");
        replace(&p, b"3").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"3");
        assert_eq!(listing(), [STATE_FILE]);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A directory that is gone: the error, and no temporary file left anywhere.
        let e = replace(&d.path().join("gone/state.json"), b"x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        assert_eq!(listing(), [STATE_FILE]);
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id() as i32;
        let (start, _) = proc_stat(me).unwrap();
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
    }
}
