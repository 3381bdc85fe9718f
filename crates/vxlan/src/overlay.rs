//! flannel-style VXLAN backend: one VXLAN device per node, and for each remote
//! node a permanent neighbour entry, an FDB entry and an onlink route.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use kcore_ns::NetNs;
use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use tracing::Instrument;

use crate::{Error, Ipv4Net};
use kcore_ns::netlink::{
    is_errno, link_by_name, link_mac, link_mtu, link_with_address, route_connection as connect,
};

/// VXLAN encapsulation overhead subtracted from the underlay MTU.
pub const VXLAN_OVERHEAD: u32 = 50;

/// The VXLAN device of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// Device name. Default `kcore.1`.
    pub name: String,
    /// VXLAN network identifier. Default 1.
    pub vni: u32,
    /// UDP destination port. Default 8472 (the Linux and flannel default).
    pub port: u16,
    /// This node's underlay address, used as the tunnel source.
    pub local: Ipv4Addr,
    /// Underlay device; default: the device holding `local`.
    pub underlay: Option<String>,
    /// Device MTU; default: underlay MTU − 50.
    pub mtu: Option<u32>,
    /// Device MAC (the VTEP MAC peers program); default: [`vtep_mac_for`]`(local)`.
    pub mac: Option<[u8; 6]>,
    /// Address put on the device as a /32 (flannel uses the node subnet's network
    /// address), so traffic the node itself sends over the overlay has a source
    /// that remote nodes route back.
    pub vtep_addr: Option<Ipv4Addr>,
}

impl VxlanConfig {
    /// Defaults for a node whose underlay address is `local`.
    pub fn new(local: Ipv4Addr) -> Self {
        Self {
            name: "kcore.1".into(),
            vni: 1,
            port: 8472,
            local,
            underlay: None,
            mtu: None,
            mac: None,
            vtep_addr: None,
        }
    }
}

/// A deterministic, locally administered unicast MAC for a node's VTEP.
pub fn vtep_mac_for(underlay: Ipv4Addr) -> [u8; 6] {
    let o = underlay.octets();
    [0x0e, 0x6b, o[0], o[1], o[2], o[3]]
}

/// A remote node as the overlay sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// The remote node's pod subnet.
    pub subnet: Ipv4Net,
    /// Next hop for the subnet on the VXLAN device: the remote VTEP's overlay address.
    pub vtep_ip: Ipv4Addr,
    /// The remote VTEP's MAC.
    pub vtep_mac: [u8; 6],
    /// The remote node's underlay address (where encapsulated packets go).
    pub underlay: Ipv4Addr,
}

impl Peer {
    /// A peer with flannel's conventions: the VTEP address is the subnet's network
    /// address and the MAC is [`vtep_mac_for`] its underlay address. Host bits of
    /// `subnet` are cleared.
    pub fn new(subnet: Ipv4Net, underlay: Ipv4Addr) -> Self {
        let subnet = subnet.trunc();
        Self {
            subnet,
            vtep_ip: subnet.network(),
            vtep_mac: vtep_mac_for(underlay),
            underlay,
        }
    }
}

/// What [`Overlay::reconcile`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileStats {
    /// Entries (neighbour, FDB or route) added or replaced.
    pub written: usize,
    /// Stale entries removed.
    pub removed: usize,
}

/// A node's VXLAN device plus the connection to program it.
#[derive(Debug, Clone)]
pub struct Overlay {
    handle: Handle,
    cfg: VxlanConfig,
    index: u32,
    mac: [u8; 6],
    mtu: u32,
}

fn nl(op: &'static str, target: impl ToString) -> impl FnOnce(rtnetlink::Error) -> Error {
    let target = target.to_string();
    move |source| Error::Netlink { op, target, source }
}

fn vxlan_params(m: &LinkMessage) -> Option<(u32, u16, Option<Ipv4Addr>)> {
    let infos = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(i) => Some(i),
        _ => None,
    })?;
    let data = infos.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(d)) => Some(d),
        _ => None,
    })?;
    let mut id = None;
    let mut port = 8472;
    let mut local = None;
    for d in data {
        match d {
            InfoVxlan::Id(v) => id = Some(*v),
            InfoVxlan::Port(p) => port = *p,
            InfoVxlan::Local(a) => local = Some(*a),
            _ => {}
        }
    }
    Some((id?, port, local))
}

impl Overlay {
    /// Creates the VXLAN device in `netns` (the caller's namespace if `None`), or
    /// adopts a matching one, and brings it up. Must run inside a tokio runtime.
    pub async fn ensure(netns: Option<&NetNs>, cfg: VxlanConfig) -> Result<Self, Error> {
        let span = tracing::debug_span!("vxlan_ensure", name = %cfg.name, local = %cfg.local);
        Self::ensure_inner(netns, cfg).instrument(span).await
    }

    async fn ensure_inner(netns: Option<&NetNs>, cfg: VxlanConfig) -> Result<Self, Error> {
        let handle = connect(netns)?;
        let underlay = match &cfg.underlay {
            Some(name) => link_by_name(&handle, name)
                .await
                .map_err(nl("get link", name))?
                .ok_or_else(|| Error::LinkNotFound { name: name.clone() })?,
            None => underlay_for(&handle, cfg.local).await?,
        };
        let under_idx = underlay.header.index;
        let mtu = match cfg.mtu {
            Some(m) => m,
            None => link_mtu(&underlay).unwrap_or(1500) - VXLAN_OVERHEAD,
        };
        let mac = cfg.mac.unwrap_or_else(|| vtep_mac_for(cfg.local));
        if let Some(existing) = link_by_name(&handle, &cfg.name)
            .await
            .map_err(nl("get link", &cfg.name))?
        {
            let matches = vxlan_params(&existing).is_some_and(|(id, port, local)| {
                id == cfg.vni && port == cfg.port && local == Some(cfg.local)
            });
            if !matches {
                tracing::info!(name = %cfg.name, "replacing vxlan device with different parameters");
                handle
                    .link()
                    .del(existing.header.index)
                    .execute()
                    .await
                    .map_err(nl("delete link", &cfg.name))?;
            }
        }
        let index = match link_by_name(&handle, &cfg.name)
            .await
            .map_err(nl("get link", &cfg.name))?
        {
            Some(l) => {
                handle
                    .link()
                    .set(
                        LinkUnspec::new_with_index(l.header.index)
                            .mtu(mtu)
                            .address(mac.to_vec())
                            .up()
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(nl("set link", &cfg.name))?;
                l.header.index
            }
            None => {
                let msg = LinkVxlan::new(&cfg.name, cfg.vni)
                    .port(cfg.port)
                    .local(cfg.local)
                    .dev(under_idx)
                    .learning(false)
                    .mtu(mtu)
                    .address(mac.to_vec())
                    .up()
                    .build();
                handle
                    .link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(nl("add vxlan link", &cfg.name))?;
                link_by_name(&handle, &cfg.name)
                    .await
                    .map_err(nl("get link", &cfg.name))?
                    .ok_or_else(|| Error::LinkNotFound {
                        name: cfg.name.clone(),
                    })?
                    .header
                    .index
            }
        };
        if let Some(addr) = cfg.vtep_addr {
            handle
                .address()
                .add(index, IpAddr::V4(addr), 32)
                .replace()
                .execute()
                .await
                .map_err(nl("add address", addr))?;
        }
        let mac = match link_by_name(&handle, &cfg.name)
            .await
            .map_err(nl("get link", &cfg.name))?
        {
            Some(l) => link_mac(&l).unwrap_or(mac),
            None => mac,
        };
        Ok(Self {
            handle,
            cfg,
            index,
            mac,
            mtu,
        })
    }

    /// The device's interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The device's MAC (what peers must program as this node's VTEP MAC).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The device's MTU.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// The configuration.
    pub fn config(&self) -> &VxlanConfig {
        &self.cfg
    }

    /// Makes the kernel's peer entries exactly `desired`: adds or replaces
    /// neighbour, FDB and route entries that are missing or differ, and removes
    /// those of peers no longer listed. Idempotent.
    pub async fn reconcile(&self, desired: &[Peer]) -> Result<ReconcileStats, Error> {
        let span =
            tracing::debug_span!("vxlan_reconcile", device = %self.cfg.name, peers = desired.len());
        self.reconcile_inner(desired).instrument(span).await
    }

    async fn reconcile_inner(&self, desired: &[Peer]) -> Result<ReconcileStats, Error> {
        let mut stats = ReconcileStats::default();
        let cur = self.read_state().await?;

        let want_neigh: HashMap<Ipv4Addr, [u8; 6]> =
            desired.iter().map(|p| (p.vtep_ip, p.vtep_mac)).collect();
        let want_fdb: HashMap<[u8; 6], Ipv4Addr> =
            desired.iter().map(|p| (p.vtep_mac, p.underlay)).collect();
        let want_route: HashMap<Ipv4Net, Ipv4Addr> = desired
            .iter()
            .map(|p| (p.subnet.trunc(), p.vtep_ip))
            .collect();

        // add or replace first, so traffic to kept peers never drops
        for (ip, mac) in &want_neigh {
            if cur.neigh.get(ip).map(|(m, _)| m) != Some(mac) {
                self.handle
                    .neighbours()
                    .add(self.index, IpAddr::V4(*ip))
                    .link_layer_address(mac)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl("add neighbour", ip))?;
                stats.written += 1;
            }
        }
        for (mac, dst) in &want_fdb {
            if cur.fdb.get(mac).map(|(d, _)| d) != Some(dst) {
                if let Some((_, old)) = cur.fdb.get(mac) {
                    self.delete_neigh(old.clone(), "delete fdb", fmt_mac(mac))
                        .await?;
                }
                self.handle
                    .neighbours()
                    .add_bridge(self.index, mac)
                    .destination(IpAddr::V4(*dst))
                    .flags(NeighbourFlags::Own)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl("add fdb", fmt_mac(mac)))?;
                stats.written += 1;
            }
        }
        for (net, via) in &want_route {
            if cur.routes.get(net).map(|(v, _)| v) != Some(via) {
                let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(net.network(), net.prefix_len())
                    .gateway(*via)
                    .output_interface(self.index)
                    .onlink()
                    .build();
                self.handle
                    .route()
                    .add(msg)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl("add route", net))?;
                stats.written += 1;
            }
        }
        // then remove what is no longer wanted: routes before the entries they use
        for (net, (_, msg)) in &cur.routes {
            if !want_route.contains_key(net) {
                match self.handle.route().del(msg.clone()).execute().await {
                    Ok(()) => stats.removed += 1,
                    Err(e) if is_errno(&e, libc::ESRCH) => {}
                    Err(e) => return Err(nl("delete route", net)(e)),
                }
            }
        }
        for (ip, (_, msg)) in &cur.neigh {
            if !want_neigh.contains_key(ip) {
                stats.removed += self
                    .delete_neigh(msg.clone(), "delete neighbour", ip)
                    .await?;
            }
        }
        for (mac, (_, msg)) in &cur.fdb {
            if !want_fdb.contains_key(mac) {
                stats.removed += self
                    .delete_neigh(msg.clone(), "delete fdb", fmt_mac(mac))
                    .await?;
            }
        }
        Ok(stats)
    }

    /// The peers currently programmed in the kernel (entries of all three kinds
    /// that agree with each other), sorted.
    pub async fn peers(&self) -> Result<Vec<Peer>, Error> {
        let s = self.read_state().await?;
        let mut out = Vec::new();
        for (subnet, (via, _)) in &s.routes {
            let Some((mac, _)) = s.neigh.get(via) else {
                continue;
            };
            let Some((underlay, _)) = s.fdb.get(mac) else {
                continue;
            };
            out.push(Peer {
                subnet: *subnet,
                vtep_ip: *via,
                vtep_mac: *mac,
                underlay: *underlay,
            });
        }
        out.sort();
        Ok(out)
    }

    /// Counts of (neighbour, FDB, route) entries on the device, for leak checks.
    pub async fn entry_counts(&self) -> Result<(usize, usize, usize), Error> {
        let s = self.read_state().await?;
        Ok((s.neigh.len(), s.fdb.len(), s.routes.len()))
    }

    /// Deletes the device (and with it every entry on it). Idempotent.
    pub async fn delete(self) -> Result<(), Error> {
        match self.handle.link().del(self.index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
            Err(e) => Err(nl("delete link", &self.cfg.name)(e)),
        }
    }

    async fn delete_neigh(
        &self,
        msg: NeighbourMessage,
        op: &'static str,
        target: impl ToString,
    ) -> Result<usize, Error> {
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(1),
            Err(e) if is_errno(&e, libc::ENOENT) => Ok(0),
            Err(e) => Err(nl(op, target.to_string())(e)),
        }
    }

    async fn read_state(&self) -> Result<State, Error> {
        let mut state = State::default();
        let mut neigh = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        while let Some(m) = neigh
            .try_next()
            .await
            .map_err(nl("list neighbours", &self.cfg.name))?
        {
            if m.header.ifindex != self.index || m.header.state != NeighbourState::Permanent {
                continue;
            }
            if let (Some(IpAddr::V4(ip)), Some(mac)) = (neigh_dst(&m), neigh_mac(&m)) {
                state.neigh.insert(ip, (mac, m));
            }
        }
        let mut fdb = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        while let Some(m) = fdb
            .try_next()
            .await
            .map_err(nl("list fdb", &self.cfg.name))?
        {
            if m.header.ifindex != self.index {
                continue;
            }
            if let (Some(IpAddr::V4(dst)), Some(mac)) = (neigh_dst(&m), neigh_mac(&m)) {
                if mac != [0; 6] {
                    state.fdb.insert(mac, (dst, m));
                }
            }
        }
        let mut routes = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(m) = routes
            .try_next()
            .await
            .map_err(nl("list routes", &self.cfg.name))?
        {
            if route_oif(&m) != Some(self.index) {
                continue;
            }
            let Some(gw) = route_gateway(&m) else {
                continue;
            };
            let dst = route_dst(&m).unwrap_or(Ipv4Addr::UNSPECIFIED);
            if let Ok(net) = Ipv4Net::new(dst, m.header.destination_prefix_length) {
                state.routes.insert(net.trunc(), (gw, m));
            }
        }
        Ok(state)
    }
}

#[derive(Default)]
struct State {
    neigh: BTreeMap<Ipv4Addr, ([u8; 6], NeighbourMessage)>,
    fdb: BTreeMap<[u8; 6], (Ipv4Addr, NeighbourMessage)>,
    routes: BTreeMap<Ipv4Net, (Ipv4Addr, RouteMessage)>,
}

fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

fn neigh_dst(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => Some(IpAddr::V4(*v)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => Some(IpAddr::V6(*v)),
        // FDB (AF_BRIDGE) entries carry the remote address as raw bytes
        NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
            <[u8; 4]>::try_from(raw.as_slice())
                .ok()
                .map(|o| IpAddr::V4(Ipv4Addr::from(o)))
        }
        _ => None,
    })
}

fn neigh_mac(m: &NeighbourMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(v) => v.as_slice().try_into().ok(),
        _ => None,
    })
}

fn route_oif(m: &RouteMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

fn route_gateway(m: &RouteMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(v)) => Some(*v),
        _ => None,
    })
}

fn route_dst(m: &RouteMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v)) => Some(*v),
        _ => None,
    })
}

/// The link holding address `local`.
async fn underlay_for(handle: &Handle, local: Ipv4Addr) -> Result<LinkMessage, Error> {
    link_with_address(handle, IpAddr::V4(local))
        .await
        .map_err(nl("find the link of", local))?
        .ok_or(Error::NoUnderlay { local })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn futures_are_send() {
        // building a future runs nothing; this only checks it can be spawned
        let f = Overlay::ensure(None, VxlanConfig::new(Ipv4Addr::LOCALHOST));
        assert_send(&f);
    }

    #[test]
    fn flannel_defaults() {
        let c = VxlanConfig::new(Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!((c.name.as_str(), c.vni, c.port), ("kcore.1", 1, 8472));
        let p = Peer::new(
            "10.244.7.9/24".parse().unwrap(),
            Ipv4Addr::new(192, 0, 2, 11),
        );
        assert_eq!(p.subnet.to_string(), "10.244.7.0/24");
        assert_eq!(p.vtep_ip, Ipv4Addr::new(10, 244, 7, 0));
        assert_eq!(p.vtep_mac, [0x0e, 0x6b, 192, 0, 2, 11]);
        // locally administered, unicast
        assert_eq!(p.vtep_mac[0] & 0x03, 0x02);
        assert_eq!(fmt_mac(&p.vtep_mac), "0e:6b:c0:00:02:0b");
    }
}
