//! The node's pod bridge and per-pod veth pairs, programmed over rtnetlink.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use kcore_ns::NetNs;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use tracing::Instrument;

use crate::{Error, Ipv4Net};
use kcore_ns::netlink::{is_errno, link_by_name, route_connection as connect};

fn nl(op: &'static str, target: impl ToString) -> impl FnOnce(rtnetlink::Error) -> Error {
    let target = target.to_string();
    move |source| Error::Netlink { op, target, source }
}

/// The loopback device's index, the same in every network namespace.
const LOOPBACK_INDEX: u32 = 1;

/// The node's pod bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Bridge name. Default `kcore0`.
    pub name: String,
    /// The node's pod subnet; the bridge carries its `.1` as the pods' gateway.
    pub subnet: Ipv4Net,
    /// MTU of the bridge and of pod interfaces (use the overlay MTU with VXLAN).
    pub mtu: u32,
}

impl BridgeConfig {
    /// `kcore0` carrying `subnet`'s gateway, MTU 1500. Host bits of `subnet` are
    /// cleared.
    pub fn new(subnet: Ipv4Net) -> Self {
        Self {
            name: "kcore0".into(),
            subnet: subnet.trunc(),
            mtu: 1500,
        }
    }
}

/// What a pod gets on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    /// Host end of the veth pair (a bridge port).
    pub host_ifname: String,
    /// Interface name inside the pod (`eth0`).
    pub ifname: String,
    /// Pod address.
    pub ip: Ipv4Addr,
    /// Pod interface MAC.
    pub mac: [u8; 6],
    /// Default gateway.
    pub gateway: Ipv4Addr,
    /// MTU.
    pub mtu: u32,
}

/// The conventional MAC for a pod address (`0a:58:` followed by the IPv4 octets).
pub fn pod_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

/// A pod bridge in a node's network namespace, with its netlink connection.
#[derive(Debug, Clone)]
pub struct Bridge {
    handle: Handle,
    cfg: BridgeConfig,
    index: u32,
}

impl Bridge {
    /// Creates or adopts the bridge in `node` (the caller's namespace if `None`),
    /// gives it the gateway address and MTU, and brings it and `lo` up.
    /// Must run inside a tokio runtime.
    pub async fn ensure(node: Option<&NetNs>, cfg: BridgeConfig) -> Result<Self, Error> {
        let span = tracing::debug_span!("bridge_ensure", name = %cfg.name, subnet = %cfg.subnet);
        Self::ensure_inner(node, cfg).instrument(span).await
    }

    async fn ensure_inner(node: Option<&NetNs>, cfg: BridgeConfig) -> Result<Self, Error> {
        let handle = connect(node)?;
        set_up(&handle, "lo").await?;
        let index = match link_by_name(&handle, &cfg.name)
            .await
            .map_err(nl("get link", &cfg.name))?
        {
            Some(l) => l.header.index,
            None => {
                handle
                    .link()
                    .add(LinkBridge::new(&cfg.name).mtu(cfg.mtu).build())
                    .execute()
                    .await
                    .or_else(|e| {
                        if is_errno(&e, libc::EEXIST) {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(nl("add bridge", &cfg.name))?;
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
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(cfg.mtu).up().build())
            .execute()
            .await
            .map_err(nl("set link up", &cfg.name))?;
        let gw = gateway_of(cfg.subnet)?;
        handle
            .address()
            .add(index, IpAddr::V4(gw), cfg.subnet.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(nl("add address", gw))?;
        Ok(Self { handle, cfg, index })
    }

    /// The gateway address on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        gateway_of(self.cfg.subnet).unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// The bridge's interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The configuration.
    pub fn config(&self) -> &BridgeConfig {
        &self.cfg
    }

    /// Connects a pod: a veth pair whose host end `host_ifname` is a hairpin
    /// bridge port and whose other end becomes `eth0` in `pod` with `ip`, its MAC,
    /// the MTU, a default route via the gateway, and `lo` up.
    ///
    /// Idempotent: an existing `host_ifname` (from an earlier attempt) is replaced.
    pub async fn attach(
        &self,
        pod: &NetNs,
        host_ifname: &str,
        ip: Ipv4Addr,
    ) -> Result<PodInterface, Error> {
        let span = tracing::debug_span!("pod_attach", host_ifname, %ip);
        self.attach_inner(pod, host_ifname, ip)
            .instrument(span)
            .await
    }

    async fn attach_inner(
        &self,
        pod: &NetNs,
        host_ifname: &str,
        ip: Ipv4Addr,
    ) -> Result<PodInterface, Error> {
        if !self.cfg.subnet.contains(&ip) {
            return Err(Error::InvalidCidr {
                input: format!("{ip} in {}", self.cfg.subnet),
                reason: "pod address outside the bridge subnet",
            });
        }
        self.detach(host_ifname).await?;
        let pod_handle = connect(Some(pod))?;
        // a leftover eth0 from an earlier attempt would block the new one
        if let Some(old) = link_by_name(&pod_handle, "eth0")
            .await
            .map_err(nl("get link", "eth0"))?
        {
            pod_handle
                .link()
                .del(old.header.index)
                .execute()
                .await
                .map_err(nl("delete link", "eth0"))?;
        }
        let mtu = self.cfg.mtu;
        let mac = pod_mac(ip);
        // One request makes both ends: the pod end is born inside the pod's namespace
        // as `eth0` with its MAC and MTU; the host end is born a bridge port, up. (The
        // kernel refuses to bring the pod end up in the same request: ENOTCONN.)
        // (Creating it on the host and moving and renaming it costs four more
        // round trips, each taking the rtnl lock.)
        let fd = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(pod));
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name("eth0".to_owned())
            .address(mac.to_vec())
            .mtu(mtu)
            .setns_by_fd(fd)
            .build();
        self.handle
            .link()
            .add(
                LinkVeth::new(host_ifname, "eth0")
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                    .mtu(mtu)
                    .controller(self.index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl("add veth", host_ifname))?;
        let host_idx = link_by_name(&self.handle, host_ifname)
            .await
            .map_err(nl("get link", host_ifname))?
            .ok_or_else(|| Error::LinkNotFound {
                name: host_ifname.to_owned(),
            })?
            .header
            .index;
        self.handle
            .link()
            .set_port(LinkBridgePort::new(host_idx).hairpin(true).build())
            .execute()
            .await
            .map_err(nl("set hairpin", host_ifname))?;
        // pod end: up, address, default route via the gateway; lo up
        let idx = link_by_name(&pod_handle, "eth0")
            .await
            .map_err(nl("get link", "eth0"))?
            .ok_or_else(|| Error::LinkNotFound {
                name: "eth0".into(),
            })?
            .header
            .index;
        let gateway = self.gateway();
        // sent back to back on one socket: the kernel handles them in order, so the
        // link is up and has its address when the route through the gateway is added
        let (up, addr, route, lo) = futures::join!(
            pod_handle
                .link()
                .set(LinkUnspec::new_with_index(idx).up().build())
                .execute(),
            pod_handle
                .address()
                .add(idx, IpAddr::V4(ip), self.cfg.subnet.prefix_len())
                .replace()
                .execute(),
            pod_handle
                .route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .output_interface(idx)
                        .gateway(gateway)
                        .build(),
                )
                .replace()
                .execute(),
            pod_handle
                .link()
                .set(LinkUnspec::new_with_index(LOOPBACK_INDEX).up().build())
                .execute(),
        );
        up.map_err(nl("set link up", "eth0"))?;
        addr.map_err(nl("add address", ip))?;
        route.map_err(nl("add default route", gateway))?;
        lo.map_err(nl("set link up", "lo"))?;
        Ok(PodInterface {
            host_ifname: host_ifname.to_owned(),
            ifname: "eth0".into(),
            ip,
            mac,
            gateway,
            mtu,
        })
    }

    /// Removes a pod's veth pair (both ends go together). Returns whether it existed.
    pub async fn detach(&self, host_ifname: &str) -> Result<bool, Error> {
        let Some(l) = link_by_name(&self.handle, host_ifname)
            .await
            .map_err(nl("get link", host_ifname))?
        else {
            return Ok(false);
        };
        match self.handle.link().del(l.header.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(false),
            Err(e) => Err(nl("delete link", host_ifname)(e)),
        }
    }

    /// Names of the bridge's ports.
    pub async fn ports(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(l) = links
            .try_next()
            .await
            .map_err(nl("list links", &self.cfg.name))?
        {
            let is_port = l
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Controller(c) if *c == self.index));
            if is_port {
                if let Some(name) = l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                }) {
                    out.push(name);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Deletes the bridge (idempotent).
    pub async fn delete(self) -> Result<(), Error> {
        match self.handle.link().del(self.index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
            Err(e) => Err(nl("delete link", &self.cfg.name)(e)),
        }
    }
}

/// The subnet's `.1` (network address + 1); a /32 has no room for it.
fn gateway_of(subnet: Ipv4Net) -> Result<Ipv4Addr, Error> {
    if subnet.prefix_len() == 32 {
        return Err(Error::InvalidCidr {
            input: subnet.trunc().to_string(),
            reason: "subnet has no room for a gateway",
        });
    }
    Ok(Ipv4Addr::from(u32::from(subnet.network()) + 1))
}

async fn set_up(handle: &Handle, name: &str) -> Result<(), Error> {
    let l = link_by_name(handle, name)
        .await
        .map_err(nl("get link", name))?
        .ok_or_else(|| Error::LinkNotFound {
            name: name.to_owned(),
        })?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(l.header.index).up().build())
        .execute()
        .await
        .map_err(nl("set link up", name))
}

/// Node setup: turns on IPv4 forwarding inside `node` (the caller's namespace if
/// `None`). Masquerading is part of the nftables table ([`crate::NftConfig`]).
pub fn enable_ip_forwarding(node: Option<&NetNs>) -> Result<(), Error> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let write = || std::fs::write(PATH, "1");
    let res = match node {
        Some(ns) => ns.run(write).map_err(|e| Error::Netns {
            path: ns.path().to_path_buf(),
            source: std::io::Error::other(e),
        })?,
        None => write(),
    };
    res.map_err(|source| Error::Sysctl {
        path: PATH.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn futures_are_send() {
        // building a future runs nothing; this only checks it can be spawned
        let f = Bridge::ensure(None, BridgeConfig::new("10.1.0.0/24".parse().unwrap()));
        assert_send(&f);
    }

    #[test]
    fn pod_mac_is_local_unicast_and_encodes_ip() {
        let m = pod_mac(Ipv4Addr::new(10, 244, 1, 9));
        assert_eq!(m, [0x0a, 0x58, 10, 244, 1, 9]);
        assert_eq!(m[0] & 0x03, 0x02);
        let c = BridgeConfig::new("10.244.1.9/24".parse().unwrap());
        assert_eq!(c.name, "kcore0");
        assert_eq!(c.subnet.to_string(), "10.244.1.0/24");
        assert_eq!(gateway_of(c.subnet).unwrap(), Ipv4Addr::new(10, 244, 1, 1));
        let p2p: Ipv4Net = "10.0.0.6/31".parse().unwrap();
        assert_eq!(gateway_of(p2p).unwrap(), Ipv4Addr::new(10, 0, 0, 7));
        let host: Ipv4Net = "10.0.0.6/32".parse().unwrap();
        assert!(matches!(gateway_of(host), Err(Error::InvalidCidr { .. })));
    }
}
