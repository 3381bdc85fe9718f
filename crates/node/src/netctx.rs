//! Sockets in the node's network namespace (the agent's own when none is configured).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the node's sockets are made.
#[derive(Debug, Clone, Default)]
pub(crate) struct NetCtx {
    netns: Option<PathBuf>,
}

fn in_ns<R: Send>(netns: Option<&Path>, f: impl FnOnce() -> io::Result<R> + Send) -> io::Result<R> {
    match netns {
        None => f(),
        Some(p) => kcore_ns::netns::run_in(p, f).map_err(io::Error::other)?,
    }
}

impl NetCtx {
    pub fn new(netns: Option<PathBuf>) -> Self {
        NetCtx { netns }
    }

    /// A TCP connection to `addr` made from the node's namespace.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let sock = in_ns(self.netns.as_deref(), || {
            if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
        })?;
        sock.connect(addr).await
    }

    /// A TCP listener on `addr` in the node's namespace (call inside a tokio runtime).
    pub fn listen(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
        let l = in_ns(self.netns.as_deref(), || {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        tokio::net::TcpListener::from_std(l)
    }

    /// A UDP socket bound to `addr` in the node's namespace (call inside a tokio runtime).
    pub fn udp(&self, addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
        let s = in_ns(self.netns.as_deref(), || {
            let s = std::net::UdpSocket::bind(addr)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })?;
        tokio::net::UdpSocket::from_std(s)
    }
}
