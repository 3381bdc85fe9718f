//! The builder's errors: each names the Dockerfile line it is about where there is one.

use std::path::PathBuf;

/// A result with the builder's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in a build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Dockerfile does not parse, or an instruction's arguments are wrong.
    #[error("Dockerfile:{line}: {message}")]
    Syntax {
        /// 1-based line of the instruction (its first line).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A RUN step exited unsuccessfully.
    #[error("Dockerfile:{line}: RUN {command}: {status}{}", tail_text(.output))]
    RunFailed {
        /// Line of the RUN instruction.
        line: usize,
        /// The command as written.
        command: String,
        /// How the process ended (`exit status 3`, `signal 9`).
        status: String,
        /// The last lines the step printed (stdout and stderr).
        output: Vec<String>,
    },
    /// A COPY or ADD source matched nothing in the context (or the stage / image).
    #[error("Dockerfile:{line}: {instruction} source {source_path:?} not found{}", from_text(.from))]
    SourceNotFound {
        /// Line of the instruction.
        line: usize,
        /// `COPY` or `ADD`.
        instruction: String,
        /// The source as written.
        source_path: String,
        /// `--from` value, if any.
        from: Option<String>,
    },
    /// `--target`, `FROM` or `--from` names a stage that does not exist.
    #[error("stage {0:?} not found in the Dockerfile")]
    StageNotFound(String),
    /// An image operation (pull, unpack, store) failed.
    #[error("Dockerfile:{line}: {what}")]
    Image {
        /// Line of the instruction (0: not tied to one).
        line: usize,
        /// What was being done.
        what: String,
        /// The image store's error.
        #[source]
        source: kcore_image::Error,
    },
    /// A layer store operation failed.
    #[error("{what}")]
    Layer {
        /// What was being done.
        what: String,
        /// The layer store's error.
        #[source]
        source: kcore_overlay::Error,
    },
    /// Creating or running a RUN container failed (not the command's own failure).
    #[error("Dockerfile:{line}: running a container for RUN")]
    Runtime {
        /// Line of the RUN instruction.
        line: usize,
        /// The runtime's error.
        #[source]
        source: kcore_runtime::Error,
    },
    /// Creating the RUN step's network namespace failed.
    #[error("Dockerfile:{line}: network namespace for RUN")]
    Netns {
        /// Line of the RUN instruction.
        line: usize,
        /// The namespace error.
        #[source]
        source: kcore_ns::Error,
    },
    /// `RUN --network=default` needs a NAT'd bridge that this host does not allow
    /// (no `CAP_NET_ADMIN`, no bridge, veth or nf_tables NAT support in the kernel).
    #[error("Dockerfile:{line}: RUN --network=default is not available here: {reason} (use --network=none or host)")]
    NetworkUnavailable {
        /// Line of the RUN instruction.
        line: usize,
        /// What could not be done.
        reason: String,
        /// The networking error, when one was returned.
        #[source]
        source: Option<Box<kcore_netbridge::Error>>,
    },
    /// Putting a RUN step on the build bridge failed.
    #[error("Dockerfile:{line}: RUN --network=default: {what}")]
    Network {
        /// Line of the RUN instruction.
        line: usize,
        /// What was being done.
        what: String,
        /// The networking error.
        #[source]
        source: Box<kcore_netbridge::Error>,
    },
    /// A filesystem operation failed.
    #[error("{op} {}", .path.display())]
    Io {
        /// The operation (`read`, `copy`, `create`, ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The build asks for something this builder does not do.
    #[error("Dockerfile:{line}: {what} is not supported")]
    Unsupported {
        /// Line of the instruction (0: an option of the build).
        line: usize,
        /// What.
        what: String,
    },
}

fn tail_text(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; last output:\n{}", lines.join("\n"))
    }
}

fn from_text(from: &Option<String>) -> String {
    match from {
        Some(f) => format!(" in {f}"),
        None => " in the build context".to_owned(),
    }
}

/// Attaches a path and an operation to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path.into(),
            source,
        })
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::Io {
            op,
            path: path.into(),
            source: e.into(),
        })
    }
}

/// A syntax error at `line`.
pub(crate) fn syntax(line: usize, message: impl Into<String>) -> Error {
    Error::Syntax {
        line,
        message: message.into(),
    }
}
