//! Layer-2 announcement of load-balancer addresses (MetalLB's L2 mode): the node that
//! owns a pool address puts it on its uplink interface as a `/32`, so its kernel
//! answers ARP for it and accepts the traffic (which the Service rules then DNAT), and
//! sends gratuitous ARP so neighbours that cached the previous owner's MAC move over at
//! once. Giving the address up removes it. Addresses are programmed over rtnetlink in
//! the node's namespace; the ARP frames go out of a packet socket opened there.
//!
//! IPv6 pool addresses ([`L2Announcer::sync_v6`]) go the NDP way: a `/128` added without
//! duplicate address detection (so the kernel answers neighbour solicitations for it at
//! once), then an unsolicited neighbour advertisement with the override flag to the
//! all-nodes group, which makes neighbours that cached the previous owner switch.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use futures::TryStreamExt;
use kcore_ns::netlink::{link_by_name, link_mac, link_with_address, route_connection as connect};
use kcore_ns::NetNs;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
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
    announced_v6: BTreeSet<Ipv6Addr>,
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
            announced_v6: BTreeSet::new(),
        })
    }

    /// The interface the addresses go on.
    pub fn interface(&self) -> &str {
        &self.iface
    }

    /// The IPv4 addresses this announcer holds.
    pub fn announced(&self) -> &BTreeSet<Ipv4Addr> {
        &self.announced
    }

    /// The IPv6 addresses this announcer holds.
    pub fn announced_v6(&self) -> &BTreeSet<Ipv6Addr> {
        &self.announced_v6
    }

    /// Holds exactly `want` of the IPv4 addresses: new addresses are added (and
    /// announced with gratuitous ARP), the others removed. Idempotent.
    pub async fn sync(&mut self, want: &BTreeSet<Ipv4Addr>) -> Result<(), Error> {
        let mut have = std::mem::take(&mut self.announced);
        let r = self.converge(&mut have, want).await;
        self.announced = have;
        r
    }

    /// Holds exactly `want` of the IPv6 addresses: new addresses are added (and
    /// announced with an unsolicited neighbour advertisement), the others removed.
    /// Idempotent.
    pub async fn sync_v6(&mut self, want: &BTreeSet<Ipv6Addr>) -> Result<(), Error> {
        let mut have = std::mem::take(&mut self.announced_v6);
        let r = self.converge(&mut have, want).await;
        self.announced_v6 = have;
        r
    }

    async fn converge<T: Copy + Ord + Into<IpAddr>>(
        &self,
        have: &mut BTreeSet<T>,
        want: &BTreeSet<T>,
    ) -> Result<(), Error> {
        let gone: Vec<T> = have.difference(want).copied().collect();
        for ip in gone {
            self.remove(ip.into()).await?;
            have.remove(&ip);
        }
        for ip in want {
            if have.contains(ip) {
                continue;
            }
            self.add((*ip).into()).await?;
            have.insert(*ip);
            match (*ip).into() {
                IpAddr::V4(v4) => self.gratuitous_arp(v4)?,
                IpAddr::V6(v6) => self.neighbour_advertisement(v6)?,
            }
        }
        Ok(())
    }

    /// A host prefix (`/32`, `/128`).
    fn host_prefix(ip: IpAddr) -> u8 {
        if ip.is_ipv4() {
            32
        } else {
            128
        }
    }

    async fn add(&self, ip: IpAddr) -> Result<(), Error> {
        let mut req = self
            .handle
            .address()
            .add(self.index, ip, Self::host_prefix(ip))
            .replace();
        if ip.is_ipv6() {
            // no duplicate address detection: the address answers at once (it moves
            // between nodes, where DAD would hold it tentative for a second or more)
            let m = req.message_mut();
            m.header.flags |= AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute().await.map_err(nl("add address", ip))
    }

    async fn remove(&self, ip: IpAddr) -> Result<(), Error> {
        let mut msgs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .set_address_filter(ip)
            .execute();
        while let Some(m) = msgs.try_next().await.map_err(nl("list addresses", ip))? {
            let ours = m.header.prefix_len == Self::host_prefix(ip)
                && m.attributes.iter().any(|a| {
                    matches!(a, AddressAttribute::Local(a) | AddressAttribute::Address(a) if *a == ip)
                });
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

    /// Sends frames out of the interface from the node's namespace.
    fn send(&self, proto: u16, dest: [u8; 6], frames: Vec<Vec<u8>>) -> std::io::Result<()> {
        let index = self.index;
        let send = move || send_frames(index, proto, dest, &frames);
        match &self.netns {
            Some(p) => kcore_ns::netns::run_in(p, send).map_err(std::io::Error::other)?,
            None => send(),
        }
    }

    /// Sends a gratuitous ARP request and reply for `ip` out of the interface.
    pub fn gratuitous_arp(&self, ip: Ipv4Addr) -> Result<(), Error> {
        let frames = vec![
            arp_frame(self.mac, ip, 1).to_vec(),
            arp_frame(self.mac, ip, 2).to_vec(),
        ];
        self.send(ETH_P_ARP, BROADCAST, frames)
            .map_err(|source| Error::Arp {
                iface: self.iface.clone(),
                source,
            })
    }

    /// Sends an unsolicited neighbour advertisement for `ip` (override flag set) to the
    /// all-nodes group out of the interface.
    pub fn neighbour_advertisement(&self, ip: Ipv6Addr) -> Result<(), Error> {
        let frame = na_frame(self.mac, ip).to_vec();
        self.send(ETH_P_IPV6, ALL_NODES_MAC, vec![frame])
            .map_err(|source| Error::Ndp {
                iface: self.iface.clone(),
                source,
            })
    }
}

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const BROADCAST: [u8; 6] = [0xff; 6];
/// The Ethernet address of the IPv6 all-nodes group `ff02::1`.
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// An Ethernet frame with an unsolicited neighbour advertisement (RFC 4861 4.4) for
/// `ip` at `mac`: from `ip` to `ff02::1`, hop limit 255, flags override only, with the
/// target link-layer address option.
pub(crate) fn na_frame(mac: [u8; 6], ip: Ipv6Addr) -> [u8; 86] {
    let mut f = [0u8; 86];
    f[0..6].copy_from_slice(&ALL_NODES_MAC);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    // IPv6 header
    let ip6 = &mut f[14..54];
    ip6[0] = 0x60;
    ip6[4..6].copy_from_slice(&32u16.to_be_bytes()); // payload length
    ip6[6] = 58; // ICMPv6
    ip6[7] = 255; // hop limit, as NDP requires
    ip6[8..24].copy_from_slice(&ip.octets());
    ip6[24..40].copy_from_slice(&ALL_NODES.octets());
    // ICMPv6 neighbour advertisement
    let icmp = &mut f[54..86];
    icmp[0] = 136;
    icmp[4] = 0x20; // override; neither router nor solicited
    icmp[8..24].copy_from_slice(&ip.octets());
    icmp[24] = 2; // target link-layer address option
    icmp[25] = 1; // in units of 8 bytes
    icmp[26..32].copy_from_slice(&mac);
    let sum = icmpv6_checksum(ip, ALL_NODES, icmp);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The ICMPv6 checksum of `msg` (its checksum field zero) from `src` to `dst`.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
    let mut pseudo = Vec::with_capacity(40 + msg.len() + 1);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&len.to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(msg);
    if pseudo.len() % 2 == 1 {
        pseudo.push(0);
    }
    let mut sum: u32 = pseudo
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // the fold leaves at most 16 bits
    !(u16::try_from(sum).unwrap_or(u16::MAX))
}

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

/// Sends raw Ethernet frames of protocol `proto` to `dest` out of interface `index` of
/// the calling thread's network namespace.
fn send_frames(index: u32, proto: u16, dest: [u8; 6], frames: &[Vec<u8>]) -> std::io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: socket(2) takes no pointers; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(proto.to_be()),
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
    sa.sll_protocol = proto.to_be();
    sa.sll_ifindex = i32::try_from(index).map_err(std::io::Error::other)?;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&dest);
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

    #[test]
    fn neighbour_advertisement_frame_layout_and_checksum() {
        let mac = [0x02, 0, 0, 0, 0, 7];
        let ip: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let f = na_frame(mac, ip);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14] >> 4, 6);
        assert_eq!((f[20], f[21]), (58, 255), "ICMPv6, hop limit 255");
        assert_eq!(&f[22..38], &ip.octets(), "from the address itself");
        assert_eq!(&f[38..54], &ALL_NODES.octets());
        assert_eq!(f[54], 136, "neighbour advertisement");
        assert_eq!(f[58], 0x20, "override, unsolicited");
        assert_eq!(&f[62..78], &ip.octets(), "target");
        assert_eq!((f[78], f[79]), (2, 1));
        assert_eq!(&f[80..86], &mac);
        // the checksum over the pseudo-header and the message sums to all ones
        let mut msg = f[54..86].to_vec();
        let stored = u16::from_be_bytes([msg[2], msg[3]]);
        msg[2] = 0;
        msg[3] = 0;
        assert_eq!(icmpv6_checksum(ip, ALL_NODES, &msg), stored);
        assert_eq!(icmpv6_checksum(ip, ALL_NODES, &f[54..86]), 0);
    }
}
