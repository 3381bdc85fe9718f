//! Netlink sockets opened inside a network namespace.
//!
//! A netlink socket belongs to the network namespace of the thread that opened it,
//! for its whole life. [`socket_in`] enters the namespace on a short-lived thread
//! (see [`NetNs::run`]), opens the socket there and hands it back, so the caller's
//! own threads never change namespace.
//!
//! With the `rtnetlink` feature, [`route_connection`] wraps such a socket into an
//! [`rtnetlink::Handle`] and a few helpers cover what every rtnetlink user here
//! needs: [`link_by_name`], [`link_with_address`], [`link_mac`], [`link_mtu`] and
//! [`is_errno`].

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use crate::error::{Error, Result};
use crate::NetNs;

/// `NETLINK_ROUTE`: links, addresses, routes, neighbours.
pub const NETLINK_ROUTE: i32 = libc::NETLINK_ROUTE;
/// `NETLINK_NETFILTER`: nf_tables, conntrack.
pub const NETLINK_NETFILTER: i32 = libc::NETLINK_NETFILTER;

fn open_socket(protocol: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly opened descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens an unbound `AF_NETLINK` socket of `protocol` (e.g. [`NETLINK_ROUTE`],
/// [`NETLINK_NETFILTER`]) inside `netns`, or in the calling thread's namespace when
/// `netns` is `None`. The socket keeps working in that namespace from any thread.
pub fn socket_in(netns: Option<&NetNs>, protocol: i32) -> Result<OwnedFd> {
    match netns {
        Some(ns) => ns
            .run(|| open_socket(protocol))?
            .map_err(|e| Error::path("open a netlink socket in", ns.path(), e)),
        None => open_socket(protocol).map_err(|e| {
            Error::path(
                "open a netlink socket in",
                Path::new("/proc/thread-self/ns/net"),
                e,
            )
        }),
    }
}

#[cfg(feature = "rtnetlink")]
pub use route::{is_errno, link_by_name, link_mac, link_mtu, link_with_address, route_connection};

#[cfg(feature = "rtnetlink")]
mod route {
    use std::os::fd::{FromRawFd, IntoRawFd};

    use futures::TryStreamExt;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use rtnetlink::sys::TokioSocket;
    use rtnetlink::Handle;

    use super::{socket_in, NETLINK_ROUTE};
    use crate::error::Result;
    use crate::NetNs;

    /// Opens a route-netlink connection inside `netns` (or the caller's namespace)
    /// and spawns its driver on the current tokio runtime: one connection per
    /// namespace, reused for every request made there.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the driver is `tokio::spawn`ed).
    pub fn route_connection(netns: Option<&NetNs>) -> Result<Handle> {
        let fd = socket_in(netns, NETLINK_ROUTE)?;
        // SAFETY: `fd` is an open netlink socket whose ownership moves to the socket.
        let socket = unsafe { TokioSocket::from_raw_fd(fd.into_raw_fd()) };
        let (conn, handle, _) = rtnetlink::from_socket(socket);
        tokio::spawn(conn);
        Ok(handle)
    }

    /// Whether a netlink error carries `errno` (e.g. `libc::EEXIST`).
    pub fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
        matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == errno)
    }

    /// The link called `name`, or `None` when there is none.
    pub async fn link_by_name(
        handle: &Handle,
        name: &str,
    ) -> std::result::Result<Option<LinkMessage>, rtnetlink::Error> {
        match handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_next()
            .await
        {
            Ok(m) => Ok(m),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link holding address `ip` (e.g. a node's uplink, found by the node's
    /// address), or `None` when no link has it.
    pub async fn link_with_address(
        handle: &Handle,
        ip: std::net::IpAddr,
    ) -> std::result::Result<Option<LinkMessage>, rtnetlink::Error> {
        use netlink_packet_route::address::AddressAttribute;
        let mut addrs = handle.address().get().execute();
        while let Some(a) = addrs.try_next().await? {
            let has = a.attributes.iter().any(|x| {
                matches!(x, AddressAttribute::Local(v) | AddressAttribute::Address(v) if *v == ip)
            });
            if has {
                let link = handle
                    .link()
                    .get()
                    .match_index(a.header.index)
                    .execute()
                    .try_next()
                    .await?;
                if link.is_some() {
                    return Ok(link);
                }
            }
        }
        Ok(None)
    }

    /// The link's hardware address, when it has a 6-byte one.
    pub fn link_mac(m: &LinkMessage) -> Option<[u8; 6]> {
        m.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(v) => v.as_slice().try_into().ok(),
            _ => None,
        })
    }

    /// The link's MTU.
    pub fn link_mtu(m: &LinkMessage) -> Option<u32> {
        m.attributes.iter().find_map(|a| match a {
            LinkAttribute::Mtu(v) => Some(*v),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_a_netlink_socket_here() {
        let fd = socket_in(None, NETLINK_ROUTE).unwrap();
        let mut ty: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `ty`.
        let rc = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::SOL_SOCKET,
                libc::SO_PROTOCOL,
                (&mut ty as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(ty, NETLINK_ROUTE);
    }

    #[test]
    fn bad_protocol_is_a_typed_error() {
        let err = socket_in(None, 9999).unwrap_err();
        assert!(matches!(err, Error::Path { .. }), "{err}");
    }

    /// The inode of the network namespace a socket belongs to (`SIOCGSKNS`).
    fn socket_netns_inode(fd: &OwnedFd) -> u64 {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        const SIOCGSKNS: libc::c_ulong = 0x894C;
        // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor or -1.
        let ns_fd = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCGSKNS as _) };
        assert!(ns_fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: the kernel just handed us this descriptor.
        let ns = unsafe { OwnedFd::from_raw_fd(ns_fd) };
        std::fs::File::from(ns).metadata().unwrap().ino()
    }

    #[test]
    #[ignore = "needs root"]
    fn socket_lands_in_the_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::NetnsDir::new(dir.path());
        let name = format!("kns-nl-{}", std::process::id());
        let ns = store.create(&name).unwrap();
        struct Remove<'a>(&'a crate::NetnsDir, &'a str);
        impl Drop for Remove<'_> {
            fn drop(&mut self) {
                let _ = self.0.remove(self.1);
            }
        }
        let _guard = Remove(&store, &name);
        let inside = socket_in(Some(&ns), NETLINK_NETFILTER).unwrap();
        let here = socket_in(None, NETLINK_NETFILTER).unwrap();
        assert_eq!(socket_netns_inode(&inside), ns.inode().unwrap());
        assert_eq!(
            socket_netns_inode(&here),
            NetNs::current().unwrap().inode().unwrap()
        );
        assert_ne!(
            ns.inode().unwrap(),
            NetNs::current().unwrap().inode().unwrap()
        );
    }
}
