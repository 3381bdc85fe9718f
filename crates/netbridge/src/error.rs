use std::io;
use std::path::PathBuf;

use crate::Ipv4Net;

/// Errors from kcore-netbridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A subnet or address cannot be used for what it was given for.
    #[error("invalid cidr {input:?}: {reason}")]
    InvalidCidr {
        /// What was given.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Every address of the IPAM range is allocated.
    #[error("ip range {range} is exhausted (store {dir})")]
    RangeExhausted {
        /// The exhausted range.
        range: Ipv4Net,
        /// The IPAM store directory.
        dir: PathBuf,
    },
    /// An IPAM owner id is empty or contains a newline or NUL.
    #[error("invalid ipam owner id {owner:?}")]
    InvalidOwner {
        /// The rejected id.
        owner: String,
    },
    /// Reading or writing the IPAM store failed.
    #[error("ipam store {path}")]
    Ipam {
        /// File or directory involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// A Service definition cannot be programmed.
    #[error("service {name}: {reason}")]
    InvalidService {
        /// Service name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The `nft` binary could not be run.
    #[error("running {program}")]
    NftSpawn {
        /// The program.
        program: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// `nft` rejected a transaction.
    #[error("nft failed with status {status}: {stderr}")]
    NftFailed {
        /// Exit status.
        status: i32,
        /// What nft printed on stderr.
        stderr: String,
    },
    /// An nftables command cannot be encoded as nf_tables netlink (outside the
    /// subset [`NftNetlink`](crate::NftNetlink) speaks).
    #[error("cannot encode nft command {command} as netlink: {reason}")]
    NftEncode {
        /// The command, as nftables JSON.
        command: String,
        /// What is not supported.
        reason: String,
    },
    /// The kernel refused an nf_tables netlink transaction, or talking to it failed.
    #[error("nf_tables netlink {op} (netns {target})")]
    NftNetlink {
        /// The message that failed (`add chain ip kcore svc-...`) or the step.
        op: String,
        /// The network namespace of the socket.
        target: String,
        /// Underlying error (the kernel's errno).
        #[source]
        source: io::Error,
    },
    /// A network namespace could not be opened or entered.
    #[error("network namespace {path}")]
    Netns {
        /// The namespace path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// A netlink request failed.
    #[error("netlink {op} {target}")]
    Netlink {
        /// The operation (`add link`, `set address`, ...).
        op: &'static str,
        /// The object (link name, address).
        target: String,
        /// Underlying error.
        #[source]
        source: rtnetlink::Error,
    },
    /// A link that must exist was not found.
    #[error("link {name} not found")]
    LinkNotFound {
        /// Link name.
        name: String,
    },
    /// Writing a sysctl failed.
    #[error("sysctl {path}")]
    Sysctl {
        /// The /proc/sys path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// Sending a neighbour advertisement failed.
    #[error("send neighbour advertisement on {iface}")]
    Ndp {
        /// The interface.
        iface: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// Sending gratuitous ARP failed.
    #[error("send gratuitous arp on {iface}")]
    Arp {
        /// The interface.
        iface: String,
        /// Underlying error.
        #[source]
        source: io::Error,
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
        let cause = io::Error::from(io::ErrorKind::PermissionDenied).to_string();
        let err = Error::Sysctl {
            path: "/proc/sys/net/ipv4/ip_forward".into(),
            source: io::ErrorKind::PermissionDenied.into(),
        };
        let msg = err.to_string();
        assert_eq!(msg, "sysctl /proc/sys/net/ipv4/ip_forward");
        assert!(!msg.contains(&cause), "{msg}");
        let source = std::error::Error::source(&err).expect("a source");
        assert_eq!(source.to_string(), cause);
    }
}
