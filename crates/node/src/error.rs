//! The crate's error type.

use std::path::PathBuf;

/// Errors of the node agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A loop-mounted volume could not be made, mounted, grown or deleted.
    #[error("volume {}", path.display())]
    LoopVolume {
        /// The volume's directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: crate::loopfs::LoopFsError,
    },
    /// A request to the API server failed.
    #[error("api request {what}")]
    Kube {
        /// The object or request involved.
        what: String,
        /// The underlying error.
        #[source]
        source: Box<kube::Error>,
    },
    /// An image operation failed.
    #[error("image {image}")]
    Image {
        /// The image reference.
        image: String,
        /// The underlying error.
        #[source]
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
    /// Pulling an image from its registry failed.
    #[error("pulling image {image}")]
    Pull {
        /// The image reference.
        image: String,
        /// The underlying error.
        #[source]
        source: Box<kcore_image::Error>,
    },
    /// An overlay layer operation failed.
    #[error("layer {layer}")]
    Layer {
        /// The layer id.
        layer: String,
        /// The underlying error.
        #[source]
        source: Box<kcore_overlay::Error>,
    },
    /// A container runtime operation failed.
    #[error("container {id}")]
    Runtime {
        /// The runtime container id.
        id: String,
        /// The underlying error.
        #[source]
        source: Box<kcore_runtime::Error>,
    },
    /// A namespace or mount operation failed.
    #[error("{what}")]
    Ns {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: Box<kcore_ns::Error>,
    },
    /// A cgroup operation failed.
    #[error("cgroup {path}")]
    Cgroup {
        /// The cgroup path.
        path: String,
        /// The underlying error.
        #[source]
        source: Box<kcore_cgroup::Error>,
    },
    /// A pod network operation failed.
    #[error("pod network {what}")]
    Net {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: Box<kcore_netbridge::Error>,
    },
    /// The overlay network failed.
    #[error("vxlan {what}")]
    Vxlan {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
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
    /// The TLS configuration of the agent's server could not be built.
    #[error("tls of the node's server")]
    ServerTls {
        /// The underlying error.
        #[source]
        source: kcore_tls::Error,
    },
    /// The TLS configuration of the Ingress proxy could not be built.
    #[error("tls of the ingress proxy")]
    IngressTls {
        /// The underlying error.
        #[source]
        source: kcore_tls::Error,
    },
    /// The API server URL bearer tokens are checked with is not a URL.
    #[error("api server url {url}")]
    ApiServerUrl {
        /// The URL as given.
        url: String,
        /// The underlying error.
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
    /// A server socket could not be bound.
    #[error("listen on {addr}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Displays an error with its whole source chain, `outer: inner: cause`.
///
/// Error messages in kcore do not repeat their cause (GUIDE rule 13), so whatever
/// shows an error to a person (a log line, a pod status message, an Event) shows the
/// chain: `tracing::warn!(error = %ErrorChain(&e), ...)`, `ErrorChain(&e).to_string()`.
/// A source whose text its parent's message already ends with (dependencies such as
/// kube write `"...: {source}"`) is not printed a second time.
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut prev = self.0.to_string();
        f.write_str(&prev)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            let msg = e.to_string();
            if !prev.ends_with(&msg) {
                write!(f, ": {msg}")?;
            }
            prev = msg;
            cur = e.source();
        }
        Ok(())
    }
}

impl std::fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_leaves_the_cause_to_the_chain() {
        let inner = kcore_cgroup::Error::Remove {
            path: "/sys/fs/cgroup/kcore/pod-a".into(),
            source: std::io::ErrorKind::ResourceBusy.into(),
        };
        let busy = std::io::Error::from(std::io::ErrorKind::ResourceBusy).to_string();
        let err = Error::Cgroup {
            path: "kcore/pod-a".into(),
            source: Box::new(inner),
        };
        let msg = err.to_string();
        assert_eq!(msg, "cgroup kcore/pod-a");
        assert!(!msg.contains("removing"), "{msg}");
        assert!(!msg.contains(&busy), "{msg}");
        // the chain names each level once
        assert_eq!(
            ErrorChain(&err).to_string(),
            format!(
                "cgroup kcore/pod-a: removing cgroup directory /sys/fs/cgroup/kcore/pod-a: {busy}"
            )
        );
    }

    /// A dependency's error that repeats its cause in its message.
    #[derive(Debug, thiserror::Error)]
    #[error("transport: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn chain_prints_a_repeated_cause_once() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let text = refused.to_string();
        let outer = Error::Listen {
            addr: "127.0.0.1:10250".parse().unwrap(),
            source: std::io::Error::other(Repeats(refused)),
        };
        assert_eq!(
            ErrorChain(&outer).to_string(),
            format!("listen on 127.0.0.1:10250: transport: {text}")
        );
    }
}
