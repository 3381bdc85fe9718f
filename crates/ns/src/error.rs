//! The crate's error type.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::Namespace;

/// Result alias used throughout kcore-ns.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in the child's life a spawn failed.
///
/// Stages up to [`ChildStage::Clone`] run in the short-lived intermediate
/// process (before the caller learns the pid); the others run in the
/// container process itself after [`Pending::release`](crate::Pending::release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChildStage {
    /// Joining an existing namespace with `setns`.
    Join,
    /// Creating the time namespace or writing its offsets.
    TimeNamespace,
    /// The `clone3`/`clone` call that creates the new namespaces.
    Clone,
    /// Waiting for the parent to release the child.
    Release,
    /// Unsharing the cgroup namespace (done after the caller placed the child in its cgroup).
    CgroupNamespace,
    /// Becoming root inside the new user namespace.
    UserNamespaceRoot,
    /// Setting the hostname or domainname.
    Hostname,
    /// The caller's setup closures (mounts, pivot_root, ...).
    Setup,
    /// Redirecting stdin/stdout/stderr.
    Stdio,
    /// Changing to the working directory.
    Chdir,
    /// Switching to the final uid/gid/supplementary groups.
    Credentials,
    /// The exec gate closure (see [`NsCommand::exec_gate`](crate::NsCommand::exec_gate)).
    ExecGate,
    /// Executing the program.
    Exec,
}

impl ChildStage {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            ChildStage::Join => 1,
            ChildStage::TimeNamespace => 2,
            ChildStage::Clone => 3,
            ChildStage::Release => 4,
            ChildStage::CgroupNamespace => 5,
            ChildStage::UserNamespaceRoot => 6,
            ChildStage::Hostname => 7,
            ChildStage::Setup => 8,
            ChildStage::Stdio => 9,
            ChildStage::Chdir => 10,
            ChildStage::Credentials => 11,
            ChildStage::Exec => 12,
            ChildStage::ExecGate => 13,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => ChildStage::Join,
            2 => ChildStage::TimeNamespace,
            3 => ChildStage::Clone,
            4 => ChildStage::Release,
            5 => ChildStage::CgroupNamespace,
            6 => ChildStage::UserNamespaceRoot,
            7 => ChildStage::Hostname,
            8 => ChildStage::Setup,
            9 => ChildStage::Stdio,
            10 => ChildStage::Chdir,
            11 => ChildStage::Credentials,
            12 => ChildStage::Exec,
            13 => ChildStage::ExecGate,
            _ => return None,
        })
    }
}

impl fmt::Display for ChildStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ChildStage::Join => "joining namespaces",
            ChildStage::TimeNamespace => "creating the time namespace",
            ChildStage::Clone => "cloning into new namespaces",
            ChildStage::Release => "waiting for release",
            ChildStage::CgroupNamespace => "unsharing the cgroup namespace",
            ChildStage::UserNamespaceRoot => "becoming root in the user namespace",
            ChildStage::Hostname => "setting the hostname",
            ChildStage::Setup => "running setup",
            ChildStage::Stdio => "redirecting stdio",
            ChildStage::Chdir => "changing directory",
            ChildStage::Credentials => "switching credentials",
            ChildStage::Exec => "executing the program",
            ChildStage::ExecGate => "waiting at the exec gate",
        };
        f.write_str(s)
    }
}

/// Errors returned by kcore-ns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system operation on a path failed.
    #[error("failed to {op} {path}")]
    Path {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A mount(2)-family call failed.
    #[error("failed to mount {fstype} {source_path} on {target} ({what})")]
    Mount {
        /// Short description of the mount (e.g. "bind", "remount read-only").
        what: &'static str,
        /// File system type, or "none".
        fstype: String,
        /// Mount source, or "none".
        source_path: String,
        /// Mount target.
        target: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Unmounting failed.
    #[error("failed to unmount {path}")]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `pivot_root` (or its surrounding steps) failed.
    #[error("failed to pivot_root into {new_root} ({step})")]
    PivotRoot {
        /// The new root directory.
        new_root: PathBuf,
        /// The step that failed.
        step: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Joining a namespace failed.
    #[error("failed to enter {ns} namespace {target}")]
    Setns {
        /// The namespace kind(s).
        ns: String,
        /// The file or pidfd that was joined.
        target: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Creating namespaces for the calling thread failed.
    #[error("failed to unshare {ns} namespaces")]
    Unshare {
        /// The namespace kinds.
        ns: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A plain system call failed.
    #[error("{op} failed")]
    Sys {
        /// The call.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The spawned child failed before running its program.
    #[error("child {pid} failed while {stage}: {message}")]
    Child {
        /// Host pid of the failing process (the intermediate process for early stages).
        pid: i32,
        /// What the child was doing.
        stage: ChildStage,
        /// errno of the failure, when it came from a system call.
        errno: Option<i32>,
        /// The error as the child rendered it (including its source chain).
        message: String,
    },
    /// The intermediate spawn process died without reporting.
    #[error("spawn helper {pid} died unexpectedly ({status})")]
    HelperDied {
        /// Host pid of the helper.
        pid: i32,
        /// How it ended.
        status: String,
    },
    /// A process's reaper ended without recording its exit status (it was killed).
    #[error("reaper {pid} of process {child} ended without recording its exit status ({status})")]
    ReaperDied {
        /// Host pid of the reaper.
        pid: i32,
        /// Host pid of the process it reaped.
        child: i32,
        /// How the reaper ended.
        status: String,
    },
    /// A process was already reaped.
    #[error("process {pid} was already reaped")]
    Reaped {
        /// The pid.
        pid: i32,
    },
    /// A network namespace name is not a valid file name.
    #[error("invalid network namespace name {name:?}")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// A network namespace with that name already exists.
    #[error("network namespace {path} already exists")]
    NetnsExists {
        /// Its path.
        path: PathBuf,
    },
    /// A path or string contained a NUL byte.
    #[error("{what} contains a nul byte: {value:?}")]
    Nul {
        /// Which argument.
        what: &'static str,
        /// The offending value.
        value: String,
    },
    /// The helper thread running a closure in a namespace panicked.
    #[error("thread running inside {ns} namespace panicked")]
    ThreadPanicked {
        /// The namespace it ran in.
        ns: Namespace,
    },
    /// Malformed namespace set, map or option.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Error {
    /// The OS error code at the bottom of this error, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        if let Error::Child { errno, .. } = self {
            return *errno;
        }
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                if let Some(code) = io.raw_os_error() {
                    return Some(code);
                }
            }
            cur = e.source();
        }
        None
    }

    pub(crate) fn sys(op: &'static str) -> Error {
        Error::Sys {
            op,
            source: io::Error::last_os_error(),
        }
    }

    pub(crate) fn path(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Path {
            op,
            path: path.into(),
            source,
        }
    }
}
