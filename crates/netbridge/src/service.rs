//! Service model (ClusterIP, NodePort, LoadBalancer) and the in-memory service table.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

use crate::maglev::{mix64, Maglev};
use crate::{Error, Ipv4Net};

/// Transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The name nftables uses (`tcp`, `udp`, `sctp`).
    pub fn nft_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.nft_name())
    }
}

/// Session affinity of a Service (Kubernetes `sessionAffinity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SessionAffinity {
    /// Every new connection picks an endpoint independently.
    #[default]
    None,
    /// Connections from one client IP stick to one endpoint for `timeout_secs`.
    ClientIp {
        /// Stickiness timeout in seconds (Kubernetes default: 10800).
        timeout_secs: u32,
    },
}

/// One endpoint (a pod IP and target port) of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    /// Endpoint address.
    pub addr: SocketAddrV4,
    /// Whether the endpoint is ready; only ready endpoints receive traffic.
    pub ready: bool,
    /// Whether the endpoint runs on this node: under `externalTrafficPolicy: Local`
    /// only these receive external traffic. Absent in serialized form means local (a
    /// table written before the field existed, or by a single-node caller).
    #[serde(default = "yes")]
    pub local: bool,
}

fn yes() -> bool {
    true
}

impl Endpoint {
    /// A ready endpoint on this node.
    pub fn ready(ip: Ipv4Addr, port: u16) -> Self {
        Self {
            addr: SocketAddrV4::new(ip, port),
            ready: true,
            local: true,
        }
    }

    /// A ready endpoint on another node.
    pub fn remote(ip: Ipv4Addr, port: u16) -> Self {
        Self {
            local: false,
            ..Self::ready(ip, port)
        }
    }
}

/// One Service port, as kube-proxy sees it: a frontend (cluster IP, optional node
/// port and load-balancer IPs) and the endpoints behind it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Service {
    /// Unique name, e.g. `default/web:http`.
    pub name: String,
    /// Transport protocol.
    pub protocol: Protocol,
    /// The virtual IP (ClusterIP).
    pub cluster_ip: Ipv4Addr,
    /// The Service port on the cluster IP and on load-balancer IPs.
    pub port: u16,
    /// NodePort, served on every local address of the node.
    pub node_port: Option<u16>,
    /// LoadBalancer ingress IPs (for example a node IP), served on `port`.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// Session affinity.
    pub affinity: SessionAffinity,
    /// `externalTrafficPolicy: Local`: NodePort and load-balancer traffic goes only to
    /// this node's endpoints (dropped when there are none) and keeps its client source
    /// address (no masquerade).
    #[serde(default)]
    pub external_local: bool,
    /// `loadBalancerSourceRanges`: when not empty, load-balancer traffic from other
    /// sources is dropped (NodePort and cluster-IP traffic is not filtered).
    #[serde(default)]
    pub source_ranges: Vec<Ipv4Net>,
    /// Endpoints; only ready ones receive traffic.
    pub endpoints: Vec<Endpoint>,
}

impl Service {
    /// A ClusterIP Service with no endpoints yet.
    pub fn cluster_ip(
        name: impl Into<String>,
        protocol: Protocol,
        ip: Ipv4Addr,
        port: u16,
    ) -> Self {
        Self {
            name: name.into(),
            protocol,
            cluster_ip: ip,
            port,
            node_port: None,
            load_balancer_ips: Vec::new(),
            affinity: SessionAffinity::None,
            external_local: false,
            source_ranges: Vec::new(),
            endpoints: Vec::new(),
        }
    }

    /// The ready endpoints on this node, sorted and de-duplicated.
    pub fn ready_local_endpoints(&self) -> Vec<SocketAddrV4> {
        let mut v: Vec<_> = self
            .endpoints
            .iter()
            .filter(|e| e.ready && e.local)
            .map(|e| e.addr)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The ready endpoints, sorted and de-duplicated (the order rules are built in).
    pub fn ready_endpoints(&self) -> Vec<SocketAddrV4> {
        let mut v: Vec<_> = self
            .endpoints
            .iter()
            .filter(|e| e.ready)
            .map(|e| e.addr)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |reason: &'static str| Error::InvalidService {
            name: self.name.clone(),
            reason,
        };
        if self.name.is_empty() {
            return Err(bad("empty name"));
        }
        if self.port == 0 {
            return Err(bad("port 0"));
        }
        if self.node_port == Some(0) {
            return Err(bad("node port 0"));
        }
        if self.endpoints.iter().any(|e| e.addr.port() == 0) {
            return Err(bad("endpoint with port 0"));
        }
        if let SessionAffinity::ClientIp { timeout_secs: 0 } = self.affinity {
            return Err(bad("client-ip affinity with a zero timeout"));
        }
        Ok(())
    }
}

/// Key of the in-memory table: destination IP, port and protocol.
#[inline]
fn key(ip: Ipv4Addr, port: u16, proto: Protocol) -> u64 {
    // +1 keeps 0 free as the empty-slot marker
    ((u64::from(u32::from(ip)) << 24) | (u64::from(port) << 8) | u64::from(proto.number())) + 1
}

const CLIENT_IP: u32 = 1;
const WIDE: u32 = 2;

/// Where a Service's lookup data lives in the arenas. Copied into every hash slot
/// of its frontends, so a lookup is: hash slot → Maglev table byte → backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Meta {
    table_off: u32,
    table_len: u32,
    backends_off: u32,
    flags: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u64,
    meta: Meta,
}

#[derive(Debug, Clone)]
struct Record {
    keys: Vec<u64>,
    meta: Option<Meta>,
    backends: usize,
}

/// An in-memory Service table for a userspace proxy: (VIP, port, protocol) → a
/// backend picked by Maglev consistent hashing over the flow (or the client IP
/// under `ClientIP` affinity), so a flow's backend stays stable while other
/// endpoints come and go.
///
/// NodePorts are registered under the wildcard address `0.0.0.0` and matched
/// when no exact frontend matches. Lookups touch three cache lines: an
/// open-addressing hash slot holding the Service's layout, one byte of its Maglev
/// table, and the backend address.
#[derive(Debug, Clone, Default)]
pub struct ServiceTable {
    slots: Vec<Slot>,
    len: usize,
    tables8: Vec<u8>,
    tables16: Vec<u16>,
    backends: Vec<u64>,
    garbage: usize,
    names: std::collections::HashMap<String, Record>,
}

#[inline]
fn pack(a: SocketAddrV4) -> u64 {
    (u64::from(u32::from(*a.ip())) << 16) | u64::from(a.port())
}

#[inline]
fn unpack(v: u64) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from((v >> 16) as u32), v as u16)
}

impl ServiceTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of frontends (VIP/port/protocol keys) in the table.
    pub fn frontends(&self) -> usize {
        self.len
    }

    /// Number of Services in the table.
    pub fn services(&self) -> usize {
        self.names.len()
    }

    /// Inserts or replaces a Service (all its frontends).
    pub fn upsert(&mut self, svc: &Service) -> Result<(), Error> {
        svc.validate()?;
        self.remove(&svc.name);
        let backends = svc.ready_endpoints();
        let names: Vec<String> = backends.iter().map(|b| b.to_string()).collect();
        let Some(maglev) = Maglev::new(&names) else {
            // no ready endpoint: nothing to route to, keep the name known
            self.names.insert(
                svc.name.clone(),
                Record {
                    keys: Vec::new(),
                    meta: None,
                    backends: 0,
                },
            );
            return Ok(());
        };
        let mut meta = Meta {
            table_len: maglev.size() as u32,
            backends_off: self.backends.len() as u32,
            ..Meta::default()
        };
        if matches!(svc.affinity, SessionAffinity::ClientIp { .. }) {
            meta.flags |= CLIENT_IP;
        }
        if backends.len() <= usize::from(u8::MAX) {
            meta.table_off = self.tables8.len() as u32;
            self.tables8.extend(maglev.table().iter().map(|&b| b as u8));
        } else {
            meta.flags |= WIDE;
            meta.table_off = self.tables16.len() as u32;
            self.tables16.extend_from_slice(maglev.table());
        }
        self.backends.extend(backends.iter().map(|b| pack(*b)));
        let mut keys = vec![key(svc.cluster_ip, svc.port, svc.protocol)];
        keys.extend(
            svc.load_balancer_ips
                .iter()
                .map(|ip| key(*ip, svc.port, svc.protocol)),
        );
        if let Some(np) = svc.node_port {
            keys.push(key(Ipv4Addr::UNSPECIFIED, np, svc.protocol));
        }
        keys.sort_unstable();
        keys.dedup();
        for &k in &keys {
            self.insert_key(k, meta);
        }
        self.names.insert(
            svc.name.clone(),
            Record {
                keys,
                meta: Some(meta),
                backends: backends.len(),
            },
        );
        Ok(())
    }

    /// Removes a Service by name; returns whether it was present.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(rec) = self.names.remove(name) else {
            return false;
        };
        for k in &rec.keys {
            self.remove_key(*k);
        }
        if let Some(meta) = rec.meta {
            let width = if meta.flags & WIDE == 0 { 1 } else { 2 };
            self.garbage += meta.table_len as usize * width + rec.backends * 8;
            let total = self.tables8.len() + self.tables16.len() * 2 + self.backends.len() * 8;
            if self.garbage > 1 << 20 && self.garbage * 2 > total {
                self.compact();
            }
        }
        true
    }

    /// Picks the backend for a new flow from `client` to `vip:port`.
    #[inline]
    pub fn pick(
        &self,
        vip: Ipv4Addr,
        port: u16,
        proto: Protocol,
        client: SocketAddrV4,
    ) -> Option<SocketAddrV4> {
        let m = match self.get(key(vip, port, proto)) {
            Some(m) => m,
            None => self.get(key(Ipv4Addr::UNSPECIFIED, port, proto))?,
        };
        let ip = u64::from(u32::from(*client.ip()));
        let flow = if m.flags & CLIENT_IP != 0 {
            mix64(ip)
        } else {
            mix64((ip << 16) | u64::from(client.port()))
        };
        // multiply-shift range reduction onto the Maglev table
        let slot = ((u128::from(flow) * u128::from(m.table_len)) >> 64) as usize;
        let b = if m.flags & WIDE == 0 {
            usize::from(self.tables8[m.table_off as usize + slot])
        } else {
            usize::from(self.tables16[m.table_off as usize + slot])
        };
        Some(unpack(self.backends[m.backends_off as usize + b]))
    }

    /// Rebuilds the arenas without the space of removed Services.
    fn compact(&mut self) {
        let mut t8 = Vec::with_capacity(self.tables8.len());
        let mut t16 = Vec::new();
        let mut be = Vec::with_capacity(self.backends.len());
        let mut moved = Vec::new();
        for rec in self.names.values_mut() {
            let Some(old) = rec.meta else { continue };
            let mut new = old;
            let (off, len) = (old.table_off as usize, old.table_len as usize);
            if old.flags & WIDE == 0 {
                new.table_off = t8.len() as u32;
                t8.extend_from_slice(&self.tables8[off..off + len]);
            } else {
                new.table_off = t16.len() as u32;
                t16.extend_from_slice(&self.tables16[off..off + len]);
            }
            new.backends_off = be.len() as u32;
            let boff = old.backends_off as usize;
            be.extend_from_slice(&self.backends[boff..boff + rec.backends]);
            rec.meta = Some(new);
            moved.extend(rec.keys.iter().map(|k| (*k, new)));
        }
        self.tables8 = t8;
        self.tables16 = t16;
        self.backends = be;
        self.garbage = 0;
        for (k, meta) in moved {
            self.insert_key(k, meta);
        }
    }

    #[inline]
    fn get(&self, k: u64) -> Option<Meta> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = slot_of(k, mask);
        loop {
            let s = self.slots[i];
            if s.key == k {
                return Some(s.meta);
            }
            if s.key == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    fn insert_key(&mut self, k: u64, meta: Meta) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = slot_of(k, mask);
        loop {
            let s = self.slots[i];
            if s.key == 0 {
                self.slots[i] = Slot { key: k, meta };
                self.len += 1;
                return;
            }
            if s.key == k {
                self.slots[i].meta = meta;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn remove_key(&mut self, k: u64) {
        if self.slots.is_empty() {
            return;
        }
        let mask = self.slots.len() - 1;
        let mut i = slot_of(k, mask);
        loop {
            let s = self.slots[i];
            if s.key == 0 {
                return;
            }
            if s.key == k {
                break;
            }
            i = (i + 1) & mask;
        }
        // backward-shift deletion keeps probe chains intact without tombstones
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let s = self.slots[j];
            if s.key == 0 {
                break;
            }
            let home = slot_of(s.key, mask);
            let dist_j = j.wrapping_sub(home) & mask;
            let dist_hole = hole.wrapping_sub(home) & mask;
            if dist_hole <= dist_j {
                self.slots[hole] = s;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
    }

    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); cap]);
        self.len = 0;
        for s in old {
            if s.key != 0 {
                self.insert_key(s.key, s.meta);
            }
        }
    }
}

#[inline]
fn slot_of(k: u64, mask: usize) -> usize {
    (mix64(k) as usize) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(i: u32, eps: u32) -> Service {
        let mut s = Service::cluster_ip(
            format!("ns/svc{i}"),
            Protocol::Tcp,
            Ipv4Addr::from(0x0a60_0000 + i),
            80,
        );
        s.endpoints = (0..eps)
            .map(|e| Endpoint::ready(Ipv4Addr::from(0x0af4_0000 + i * 16 + e), 8080))
            .collect();
        s
    }

    fn client(n: u32) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + n), 40_000 + (n % 1000) as u16)
    }

    #[test]
    fn lookup_finds_every_service_and_only_its_endpoints() {
        let mut t = ServiceTable::new();
        for i in 0..2000 {
            t.upsert(&svc(i, 3)).unwrap();
        }
        assert_eq!(t.services(), 2000);
        for i in 0..2000 {
            let s = svc(i, 3);
            let b = t.pick(s.cluster_ip, 80, Protocol::Tcp, client(i)).unwrap();
            assert!(s.ready_endpoints().contains(&b));
            assert!(t.pick(s.cluster_ip, 81, Protocol::Tcp, client(i)).is_none());
            assert!(t.pick(s.cluster_ip, 80, Protocol::Udp, client(i)).is_none());
        }
        for i in (0..2000).step_by(2) {
            assert!(t.remove(&format!("ns/svc{i}")));
        }
        for i in 0..2000 {
            let s = svc(i, 3);
            let hit = t.pick(s.cluster_ip, 80, Protocol::Tcp, client(i)).is_some();
            assert_eq!(hit, i % 2 == 1, "service {i}");
        }
    }

    #[test]
    fn node_port_and_load_balancer_frontends() {
        let mut t = ServiceTable::new();
        let mut s = svc(1, 2);
        s.node_port = Some(30080);
        s.load_balancer_ips = vec![Ipv4Addr::new(192, 0, 2, 10)];
        t.upsert(&s).unwrap();
        let node_ip = Ipv4Addr::new(198, 51, 100, 1);
        assert!(t.pick(node_ip, 30080, Protocol::Tcp, client(1)).is_some());
        assert!(t
            .pick(Ipv4Addr::new(192, 0, 2, 10), 80, Protocol::Tcp, client(1))
            .is_some());
        assert_eq!(t.frontends(), 3);
    }

    #[test]
    fn spreads_and_affinity_sticks() {
        let mut t = ServiceTable::new();
        let mut s = svc(7, 4);
        t.upsert(&s).unwrap();
        let mut seen = std::collections::HashSet::new();
        for n in 0..200 {
            seen.insert(t.pick(s.cluster_ip, 80, Protocol::Tcp, client(n)).unwrap());
        }
        assert_eq!(seen.len(), 4);
        s.affinity = SessionAffinity::ClientIp { timeout_secs: 60 };
        t.upsert(&s).unwrap();
        let ip = Ipv4Addr::new(10, 1, 2, 3);
        let first = t
            .pick(s.cluster_ip, 80, Protocol::Tcp, SocketAddrV4::new(ip, 1))
            .unwrap();
        for port in 2..200 {
            let b = t
                .pick(s.cluster_ip, 80, Protocol::Tcp, SocketAddrV4::new(ip, port))
                .unwrap();
            assert_eq!(b, first);
        }
    }

    #[test]
    fn removed_endpoint_gets_no_traffic_and_others_keep_flows() {
        let mut t = ServiceTable::new();
        let mut s = svc(3, 5);
        t.upsert(&s).unwrap();
        let before: Vec<_> = (0..500)
            .map(|n| t.pick(s.cluster_ip, 80, Protocol::Tcp, client(n)).unwrap())
            .collect();
        let gone = s.endpoints[2].addr;
        s.endpoints[2].ready = false;
        t.upsert(&s).unwrap();
        let mut kept = 0;
        for (n, was) in before.iter().enumerate() {
            let now = t
                .pick(s.cluster_ip, 80, Protocol::Tcp, client(n as u32))
                .unwrap();
            assert_ne!(now, gone);
            if *was != gone && now == *was {
                kept += 1;
            }
        }
        let survivors = before.iter().filter(|b| **b != gone).count();
        assert!(kept * 100 >= survivors * 90, "kept {kept} of {survivors}");
    }

    #[test]
    fn churn_compacts_and_keeps_lookups_right() {
        let mut t = ServiceTable::new();
        for round in 0..6u32 {
            for i in 0..3000 {
                let mut s = svc(i, 10);
                s.endpoints[0] = Endpoint::ready(Ipv4Addr::from(0x0b00_0000 + round), 9);
                t.upsert(&s).unwrap();
            }
        }
        assert!(t.tables8.len() < 3000 * 1021 * 3, "arena was compacted");
        for i in 0..3000 {
            let mut s = svc(i, 10);
            s.endpoints[0] = Endpoint::ready(Ipv4Addr::from(0x0b00_0005), 9);
            let b = t.pick(s.cluster_ip, 80, Protocol::Tcp, client(i)).unwrap();
            assert!(s.ready_endpoints().contains(&b), "service {i}: {b}");
        }
    }

    #[test]
    fn invalid_service_is_rejected() {
        let mut t = ServiceTable::new();
        let mut s = svc(1, 1);
        s.port = 0;
        assert!(matches!(t.upsert(&s), Err(Error::InvalidService { .. })));
    }
}
