use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Errors from kcore-vxlan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A network namespace could not be entered, or a socket opened in it.
    #[error("network namespace {path}")]
    Netns {
        /// The namespace path.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// A netlink request failed.
    #[error("netlink {op} {target}")]
    Netlink {
        /// The operation.
        op: &'static str,
        /// The object (link, address, prefix).
        target: String,
        /// Underlying error.
        source: rtnetlink::Error,
    },
    /// A link that must exist was not found.
    #[error("link {name} not found")]
    LinkNotFound {
        /// Link name.
        name: String,
    },
    /// No interface holds the configured underlay address.
    #[error("no interface holds the underlay address {local}")]
    NoUnderlay {
        /// The configured local address.
        local: Ipv4Addr,
    },
    /// Opening a netlink socket inside a network namespace failed.
    #[error(transparent)]
    Ns(#[from] kcore_ns::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_leaves_the_cause_to_the_chain() {
        let cause = io::Error::from(io::ErrorKind::NotFound).to_string();
        let err = Error::Netns {
            path: "/run/netns/x".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        let msg = err.to_string();
        assert_eq!(msg, "network namespace /run/netns/x");
        let source = std::error::Error::source(&err).expect("a source");
        assert_eq!(source.to_string(), cause);
    }
}
