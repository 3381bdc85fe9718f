//! One rtnetlink connection per network namespace, opened inside it.

use std::os::fd::{FromRawFd, IntoRawFd};

use futures::TryStreamExt;
use kcore_ns::NetNs;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};
use rtnetlink::Handle;

use crate::Error;

/// Opens a route-netlink connection inside `netns` (or the caller's namespace) and
/// spawns its driver on the current tokio runtime.
pub(crate) fn connect(netns: Option<&NetNs>) -> Result<Handle, Error> {
    let open = || Socket::new(NETLINK_ROUTE).map(IntoRawFd::into_raw_fd);
    let fd = match netns {
        Some(ns) => ns
            .run(open)
            .map_err(|e| Error::Netns {
                path: ns.path().to_path_buf(),
                source: std::io::Error::other(e),
            })?
            .map_err(|source| Error::Netns {
                path: ns.path().to_path_buf(),
                source,
            })?,
        None => open().map_err(|source| Error::Netns {
            path: "/proc/thread-self/ns/net".into(),
            source,
        })?,
    };
    // SAFETY: `fd` is a freshly opened netlink socket whose ownership moves here.
    let socket = unsafe { TokioSocket::from_raw_fd(fd) };
    let (conn, handle, _) = rtnetlink::from_socket(socket);
    tokio::spawn(conn);
    Ok(handle)
}

/// Whether a netlink error carries `errno`.
pub(crate) fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == errno)
}

/// The link called `name`, if present.
pub(crate) async fn link_by_name(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, Error> {
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
        Err(source) => Err(Error::Netlink {
            op: "get link",
            target: name.to_owned(),
            source,
        }),
    }
}

pub(crate) fn link_mac(m: &LinkMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(v) => v.as_slice().try_into().ok(),
        _ => None,
    })
}
