//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Errors returned by [`LayerStore`](crate::LayerStore) operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A layer id is empty, too long, or contains characters that are not allowed.
    #[error("invalid layer id {id:?}: {reason}")]
    InvalidId {
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A layer with this id already exists.
    #[error("layer {id} already exists")]
    AlreadyExists {
        /// The layer id.
        id: String,
    },
    /// No layer with this id exists.
    #[error("layer {id} not found")]
    NotFound {
        /// The layer id.
        id: String,
    },
    /// The layer is mounted, so it cannot be removed (unmount it first).
    #[error("layer {id} is mounted at {}; unmount it before removing it", merged.display())]
    Mounted {
        /// The layer id.
        id: String,
        /// Where it is mounted.
        merged: PathBuf,
    },
    /// The layer is already mounted.
    #[error("layer {id} is already mounted at {}", merged.display())]
    AlreadyMounted {
        /// The layer id.
        id: String,
        /// Where it is mounted.
        merged: PathBuf,
    },
    /// Other layers are built on this one, so it cannot be removed.
    #[error("layer {id} has child layers {children:?}; remove them first")]
    HasChildren {
        /// The layer id.
        id: String,
        /// The ids of its direct children.
        children: Vec<String>,
    },
    /// Creating the layer would make its parent chain deeper than the store allows.
    #[error("layer {id} would have {depth} lower layers, more than the limit of {max}")]
    TooDeep {
        /// The layer id.
        id: String,
        /// The number of lower layers it would have.
        depth: usize,
        /// The limit, [`MAX_DEPTH`](crate::MAX_DEPTH).
        max: usize,
    },
    /// The overlay mount options do not fit in the kernel's mount-option page.
    #[error("mount options for layer {id} are {len} bytes, more than the kernel limit of {max}")]
    MountDataTooLong {
        /// The layer id.
        id: String,
        /// Length of the option string.
        len: usize,
        /// The largest length the kernel accepts.
        max: usize,
    },
    /// An extra mount option is not acceptable.
    #[error("invalid mount option {option:?}: {reason}")]
    InvalidMountOption {
        /// The rejected option.
        option: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The on-disk state of the store is not what this crate writes.
    #[error("corrupt layer store entry {}: {reason}", path.display())]
    Corrupt {
        /// The offending file or directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A filesystem operation on the store failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// The operation, e.g. "create directory".
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The mount system call failed.
    #[error("cannot mount layer {id} at {}", target.display())]
    Mount {
        /// The layer id.
        id: String,
        /// The mount point.
        target: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The unmount system call failed.
    #[error("cannot unmount layer {id} from {}", target.display())]
    Unmount {
        /// The layer id.
        id: String,
        /// The mount point.
        target: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds a closure mapping an `io::Error` into [`Error::Io`].
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_leaves_the_cause_to_the_chain() {
        let cause = io::Error::from(io::ErrorKind::PermissionDenied).to_string();
        let err = Error::Mount {
            id: "abc".into(),
            target: "/merged".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        let msg = err.to_string();
        assert_eq!(msg, "cannot mount layer abc at /merged");
        let source = std::error::Error::source(&err).expect("a source");
        assert_eq!(source.to_string(), cause);
    }
}
