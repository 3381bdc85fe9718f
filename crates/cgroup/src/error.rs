//! The crate's error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while detecting or driving cgroups.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the mount table failed.
    #[error("reading mount table {path}")]
    Mountinfo {
        /// The mountinfo file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No cgroup v1 or v2 file system was found.
    #[error("no cgroup file system found in {path}")]
    NoCgroupFs {
        /// Where we looked (a mountinfo file or a cgroupfs root).
        path: PathBuf,
    },
    /// A cgroup path was absolute or contained `..`.
    #[error("invalid cgroup path {path}: must be relative and must not contain '..'")]
    InvalidPath {
        /// The offending path.
        path: PathBuf,
    },
    /// The cgroup does not exist.
    #[error("cgroup {path} does not exist")]
    NotFound {
        /// The directory that is missing.
        path: PathBuf,
    },
    /// Creating a cgroup directory failed.
    #[error("creating cgroup directory {path}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading a cgroup interface file failed.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing a cgroup interface file failed.
    #[error("writing {value:?} to {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What we tried to write.
        value: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An interface file held something we could not parse.
    #[error("unexpected content in {path}: {content:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The text we could not parse.
        content: String,
    },
    /// A limit was requested for a controller this host does not offer.
    #[error("controller {controller} is not available for cgroup {path}")]
    ControllerMissing {
        /// The controller, e.g. `memory`.
        controller: &'static str,
        /// The cgroup (relative path).
        path: PathBuf,
    },
    /// A limit this kind of host cannot express (`unified` files on a v1 or hybrid
    /// host, realtime CPU time on v2).
    #[error("{field} cannot be set on a cgroup {mode} host")]
    NotSupported {
        /// The resource field, e.g. `unified`.
        field: &'static str,
        /// `v1`, `hybrid` or `v2`.
        mode: &'static str,
    },
    /// A resource value is out of range.
    #[error("invalid value for {field}: {reason}")]
    InvalidValue {
        /// The resource field, e.g. `memory.swap`.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// Freezing did not complete in time.
    #[error("cgroup {path} did not reach state FROZEN within {timeout:?}")]
    FreezeTimeout {
        /// The cgroup directory.
        path: PathBuf,
        /// How long we waited.
        timeout: Duration,
    },
    /// Sending a signal failed.
    #[error("sending SIGKILL to pid {pid}")]
    Kill {
        /// The process.
        pid: u32,
        /// The underlying error.
        #[source]
        source: nix::Error,
    },
    /// Removing a cgroup directory failed (for example still busy after the timeout).
    #[error("removing cgroup directory {path}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_leaves_the_cause_to_the_chain() {
        let einval = nix::errno::Errno::EINVAL as i32;
        let cause = io::Error::from_raw_os_error(einval).to_string();
        let err = Error::Write {
            path: "/sys/fs/cgroup/kcore/memory.max".into(),
            value: "64M".into(),
            source: io::Error::from_raw_os_error(einval),
        };
        let msg = err.to_string();
        assert_eq!(msg, "writing \"64M\" to /sys/fs/cgroup/kcore/memory.max");
        assert!(!msg.contains(&cause), "{msg}");
        let source = std::error::Error::source(&err).expect("a source");
        assert_eq!(source.to_string(), cause);
    }
}
