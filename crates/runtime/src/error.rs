//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout kcore-runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while managing a container.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read, written or created.
    #[error("failed to {op} {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A system call failed.
    #[error("{op} failed")]
    Sys {
        /// The call or action.
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `config.json` (or a process JSON) is not a valid runtime spec.
    #[error("invalid {file}: field `{field}`: {message}")]
    InvalidSpec {
        /// The file (or "spec" for an in-memory spec).
        file: String,
        /// The JSON path of the field at fault, e.g. `linux.namespaces[0].type`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The container id is empty or contains characters other than `[A-Za-z0-9_.+-]`.
    #[error("invalid container id {id:?}")]
    InvalidId {
        /// The id.
        id: String,
    },
    /// A container with this id exists already.
    #[error("container {id} already exists")]
    Exists {
        /// The id.
        id: String,
    },
    /// No container with this id.
    #[error("container {id} does not exist")]
    NotFound {
        /// The id.
        id: String,
    },
    /// The operation is not allowed in the container's current state.
    #[error("cannot {op} container {id} in state {status}")]
    InvalidState {
        /// The id.
        id: String,
        /// The operation.
        op: &'static str,
        /// The current status.
        status: String,
    },
    /// The root filesystem does not exist or is not a directory.
    #[error("rootfs {path} does not exist or is not a directory")]
    RootfsMissing {
        /// The resolved rootfs path.
        path: PathBuf,
    },
    /// A lifecycle hook failed or timed out.
    #[error("{kind} hook {path} failed")]
    Hook {
        /// The hook kind (`createRuntime`, `poststart`, ...).
        kind: &'static str,
        /// The hook binary.
        path: PathBuf,
        /// Exit status, timeout, or spawn error.
        #[source]
        source: HookFailure,
    },
    /// The container process failed before or while executing the user program.
    #[error("container {id}: {message}")]
    Init {
        /// The container id.
        id: String,
        /// The failure reported by the container process.
        message: String,
        /// errno of the failing call, when known.
        errno: Option<i32>,
    },
    /// A [`Launcher`](crate::Launcher) worker failed to create a container; the message
    /// is its error with the causes.
    #[error("{message}")]
    Launcher {
        /// The worker's error.
        message: String,
    },
    /// The config asks for a Linux security module the host has not enabled.
    #[error("{field} needs {lsm}, which this host does not offer ({missing})")]
    LsmUnavailable {
        /// The config field, e.g. `process.apparmorProfile`.
        field: &'static str,
        /// `AppArmor` or `SELinux`.
        lsm: &'static str,
        /// What the probe found missing.
        missing: String,
    },
    /// A container another process created exited, and its parent collected the exit
    /// status before [`Container::wait`](crate::Container::wait) could read it.
    #[error("container {id} exited, but its parent collected the exit status first")]
    ExitStatusUnavailable {
        /// Container id.
        id: String,
    },
    /// The config asks for Intel RDT the host cannot apply (no resctrl, or no
    /// allocation of the kind a schema needs).
    #[error("{field} is set, but this host cannot apply Intel RDT ({missing})")]
    IntelRdtUnavailable {
        /// The config field, e.g. `linux.intelRdt.l3CacheSchema`.
        field: &'static str,
        /// What the host lacks.
        missing: String,
    },
    /// CRIU refused or failed a request (its log is quoted in the runtime's log).
    #[error("criu {op} failed: {message}")]
    Criu {
        /// `dump`, `pre-dump`, `restore`, `version`, ...
        op: &'static str,
        /// CRIU's errno and message, or what went wrong on the connection.
        message: String,
    },
    /// The installed CRIU or the kernel lacks features a checkpoint option needs.
    #[error("criu is missing features: {missing:?}")]
    CriuMissingFeatures {
        /// CRIU's option names of the missing features (`--memory-track`, ...).
        missing: Vec<&'static str>,
    },
    /// A checkpoint or restore option is invalid.
    #[error("{option}: {message}")]
    CheckpointOption {
        /// The option, e.g. `--parent-path`.
        option: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The seccomp profile cannot be compiled.
    #[error("seccomp: {0}")]
    Seccomp(String),

    /// New resource limits could not be merged into the recorded ones.
    #[error("merge the resources of container {id}")]
    Resources {
        /// Container id.
        id: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// Namespace or spawn error from kcore-ns.
    #[error(transparent)]
    Ns(#[from] kcore_ns::Error),
    /// cgroup error from kcore-cgroup.
    #[error(transparent)]
    Cgroup(#[from] kcore_cgroup::Error),
    /// The console socket protocol failed.
    #[error("console socket {path}: {message}")]
    Console {
        /// The socket path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Why a lifecycle hook failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HookFailure {
    /// The hook binary could not be started.
    #[error("cannot run it")]
    Spawn(#[source] io::Error),
    /// Waiting for the hook failed.
    #[error("wait for it")]
    Wait(#[source] io::Error),
    /// The hook exited unsuccessfully.
    #[error("exited with {0}")]
    Exit(std::process::ExitStatus),
    /// The hook ran longer than its `timeout` (seconds) and was killed.
    #[error("timed out after {0}s")]
    Timeout(i64),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(op: impl Into<String>) -> Self {
        Error::Sys {
            op: op.into(),
            source: io::Error::last_os_error(),
        }
    }

    pub(crate) fn spec(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidSpec {
            file: "config.json".into(),
            field: field.into(),
            message: message.into(),
        }
    }
}
