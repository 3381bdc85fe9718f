//! The crate's error type.

use std::path::PathBuf;

/// Errors of the node agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A request to the API server failed.
    #[error("api request {what}: {source}")]
    Kube {
        /// The object or request involved.
        what: String,
        /// The underlying error.
        source: Box<kube::Error>,
    },
    /// An image operation failed.
    #[error("image {image}: {source}")]
    Image {
        /// The image reference.
        image: String,
        /// The underlying error.
        source: Box<kcore_image::Error>,
    },
    /// The image is not present and the pull policy or the network forbids pulling it.
    #[error("image {image} is not present: {reason}")]
    ImageNotPresent {
        /// The image reference.
        image: String,
        /// Why it could not be obtained.
        reason: String,
    },
    /// An overlay layer operation failed.
    #[error("layer {layer}: {source}")]
    Layer {
        /// The layer id.
        layer: String,
        /// The underlying error.
        source: Box<kcore_overlay::Error>,
    },
    /// A container runtime operation failed.
    #[error("container {id}: {source}")]
    Runtime {
        /// The runtime container id.
        id: String,
        /// The underlying error.
        source: Box<kcore_runtime::Error>,
    },
    /// A namespace or mount operation failed.
    #[error("{what}: {source}")]
    Ns {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: Box<kcore_ns::Error>,
    },
    /// A cgroup operation failed.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        /// The cgroup path.
        path: String,
        /// The underlying error.
        source: Box<kcore_cgroup::Error>,
    },
    /// A pod network operation failed.
    #[error("pod network {what}: {source}")]
    Net {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: Box<kcore_netbridge::Error>,
    },
    /// The overlay network failed.
    #[error("vxlan {what}: {source}")]
    Vxlan {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: Box<kcore_vxlan::Error>,
    },
    /// A pod or container spec cannot be run as written.
    #[error("invalid spec for {object}: {reason}")]
    InvalidSpec {
        /// The pod or container.
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// A referenced ConfigMap, Secret or key does not exist.
    #[error("{kind} {namespace}/{name} not found{}", key.as_ref().map(|k| format!(" (key {k})")).unwrap_or_default())]
    RefNotFound {
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Object name.
        name: String,
        /// The missing key, if the object exists.
        key: Option<String>,
    },
    /// The configuration is inconsistent.
    #[error("invalid node configuration: {0}")]
    Config(String),
    /// A server socket could not be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            what: what.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn ns(what: impl Into<String>, source: kcore_ns::Error) -> Self {
        Error::Ns {
            what: what.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn net(what: impl Into<String>, source: kcore_netbridge::Error) -> Self {
        Error::Net {
            what: what.into(),
            source: Box::new(source),
        }
    }
}
