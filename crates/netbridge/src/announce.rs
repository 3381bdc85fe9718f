//! Layer-2 announcement of load-balancer addresses (MetalLB's L2 mode): the node that
//! owns a pool address puts it on its uplink interface as a `/32`, so its kernel
//! answers ARP for it and accepts the traffic (which the Service rules then DNAT), and
//! sends gratuitous ARP so neighbours that cached the previous owner's MAC move over at
//! once. Giving the address up removes it. Addresses are programmed over rtnetlink in
//! the node's namespace; the ARP frames go out of a packet socket opened there.
//!
//! IPv6 (NDP) is not handled: the node's pod network is IPv4 only.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use futures::TryStreamExt;
use kcore_ns::netlink::{link_by_name, link_mac, link_with_address, route_connection as connect};
use kcore_ns::NetNs;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::Handle;

use crate::Error;

fn nl(op: &'static str, target: impl ToString) -> impl FnOnce(rtnetlink::Error) -> Error {
    let target = target.to_string();
    move |source| Error::Netlink { op, target, source }
}

/// Announces load-balancer addresses on one interface of a node.
#[derive(Debug)]
pub struct L2Announcer {
    handle: Handle,
    netns: Option<PathBuf>,
    iface: String,
    index: u32,
    mac: [u8; 6],
    announced: BTreeSet<Ipv4Addr>,
}

impl L2Announcer {
    /// An announcer on `iface` inside `node` (the caller's namespace if `None`).
    /// Addresses already on the interface as `/32`s are not touched until
    /// [`L2Announcer::sync`] is told about them. Must run inside a tokio runtime.
    pub async fn new(node: Option<&NetNs>, iface: &str) -> Result<Self, Error> {
        let handle = connect(node)?;
        let link = link_by_name(&handle, iface)
            .await
            .map_err(nl("get link", iface))?
            .ok_or_else(|| Error::LinkNotFound {
                name: iface.to_owned(),
            })?;
        Self::on_link(handle, node, link)
    }

    /// An announcer on the interface inside `node` that holds `address` (a node's
    /// uplink, found by the node's own address). Must run inside a tokio runtime.
    pub async fn for_address(node: Option<&NetNs>, address: Ipv4Addr) -> Result<Self, Error> {
        let handle = connect(node)?;
        let link = link_with_address(&handle, IpAddr::V4(address))
            .await
            .map_err(nl("find the link of", address))?
            .ok_or_else(|| Error::LinkNotFound {
                name: format!("(the interface holding {address})"),
            })?;
        Self::on_link(handle, node, link)
    }

    fn on_link(handle: Handle, node: Option<&NetNs>, link: LinkMessage) -> Result<Self, Error> {
        let iface = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
            .unwrap_or_else(|| format!("#{}", link.header.index));
        let mac = link_mac(&link).ok_or_else(|| Error::LinkNotFound {
            name: format!("{iface} (no Ethernet address)"),
        })?;
        Ok(Self {
            handle,
            netns: node.map(|n| n.path().to_path_buf()),
            iface,
            index: link.header.index,
            mac,
            announced: BTreeSet::new(),
        })
    }

    /// The interface the addresses go on.
    pub fn interface(&self) -> &str {
        &self.iface
    }

    /// The addresses this announcer holds.
    pub fn announced(&self) -> &BTreeSet<Ipv4Addr> {
        &self.announced
    }

    /// Holds exactly `want`: new addresses are added (and announced with gratuitous
    /// ARP), the others removed. Idempotent.
    pub async fn sync(&mut self, want: &BTreeSet<Ipv4Addr>) -> Result<(), Error> {
        let gone: Vec<Ipv4Addr> = self.announced.difference(want).copied().collect();
        for ip in gone {
            self.remove(ip).await?;
            self.announced.remove(&ip);
        }
        for ip in want {
            if self.announced.contains(ip) {
                continue;
            }
            self.handle
                .address()
                .add(self.index, IpAddr::V4(*ip), 32)
                .replace()
                .execute()
                .await
                .map_err(nl("add address", ip))?;
            self.announced.insert(*ip);
            self.gratuitous_arp(*ip)?;
        }
        Ok(())
    }

    async fn remove(&self, ip: Ipv4Addr) -> Result<(), Error> {
        let mut msgs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .set_address_filter(IpAddr::V4(ip))
            .execute();
        while let Some(m) = msgs.try_next().await.map_err(nl("list addresses", ip))? {
            let ours = m.header.prefix_len == 32
                && m.attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Local(IpAddr::V4(a)) | AddressAttribute::Address(IpAddr::V4(a)) if *a == ip));
            if ours {
                self.handle
                    .address()
                    .del(m)
                    .execute()
                    .await
                    .map_err(nl("delete address", ip))?;
            }
        }
        Ok(())
    }

    /// Sends a gratuitous ARP request and reply for `ip` out of the interface.
    pub fn gratuitous_arp(&self, ip: Ipv4Addr) -> Result<(), Error> {
        let frames = [arp_frame(self.mac, ip, 1), arp_frame(self.mac, ip, 2)];
        let (index, iface) = (self.index, self.iface.clone());
        let send = move || send_frames(index, &frames);
        let res = match &self.netns {
            Some(p) => kcore_ns::netns::run_in(p, send).map_err(|e| Error::Netns {
                path: p.clone(),
                source: std::io::Error::other(e),
            })?,
            None => send(),
        };
        res.map_err(|source| Error::Arp { iface, source })
    }
}

const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];

/// An Ethernet frame with a gratuitous ARP (`op` 1: request, 2: reply) for `ip`: the
/// sender and target address are both `ip`, sent to the broadcast address.
pub(crate) fn arp_frame(mac: [u8; 6], ip: Ipv4Addr, op: u16) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&op.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    let target_mac = if op == 2 { BROADCAST } else { [0; 6] };
    f[32..38].copy_from_slice(&target_mac);
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Sends raw Ethernet frames out of interface `index` of the calling thread's network
/// namespace.
fn send_frames(index: u32, frames: &[[u8; 42]]) -> std::io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: socket(2) takes no pointers; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor socket(2) just returned and nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_ll is a valid value of the plain C struct.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = ETH_P_ARP.to_be();
    sa.sll_ifindex = i32::try_from(index).map_err(std::io::Error::other)?;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&BROADCAST);
    for f in frames {
        use std::os::fd::AsRawFd;
        // SAFETY: the buffer and address point to live values of the lengths given.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                f.as_ptr().cast(),
                f.len(),
                0,
                std::ptr::addr_of!(sa).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_frame_layout() {
        let mac = [0x02, 0, 0, 0, 0, 7];
        let ip = Ipv4Addr::new(192, 0, 2, 100);
        let req = arp_frame(mac, ip, 1);
        assert_eq!(&req[0..6], &[0xff; 6]);
        assert_eq!(&req[6..12], &mac);
        assert_eq!(&req[12..14], &[0x08, 0x06]);
        assert_eq!(&req[20..22], &[0, 1]);
        assert_eq!(&req[28..32], &ip.octets(), "sender address");
        assert_eq!(&req[32..38], &[0; 6]);
        assert_eq!(&req[38..42], &ip.octets(), "target address is the same");
        let rep = arp_frame(mac, ip, 2);
        assert_eq!(&rep[20..22], &[0, 2]);
        assert_eq!(&rep[32..38], &[0xff; 6]);
    }
}
