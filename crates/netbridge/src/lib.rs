//! Node-local pod networking for kcore.
//!
//! * [`Ipam`] — CNI `host-local`-style address allocation from the node's pod
//!   CIDR, persisted on disk and serialised with `flock(2)`.
//! * [`ServiceProxy`] — kube-proxy's job in nftables: one table owned by kcore, a
//!   verdict map keyed by VIP . protocol . port, `numgen` to pick an endpoint,
//!   DNAT, `ClientIP` affinity, and incremental updates, applied over nf_tables
//!   netlink ([`NftNetlink`]; an endpoint change costs the same whatever the
//!   number of Services) or by the `nft` binary ([`NftCommand`]).
//! * [`PolicyFirewall`] — NetworkPolicy enforcement: a [`PolicySet`] resolved to
//!   addresses becomes a table of sets and per-policy chains on the `forward` hook.
//! * [`L2Announcer`] — load-balancer pool addresses announced on a node's uplink
//!   (`/32` on the interface, gratuitous ARP on takeover), MetalLB's L2 mode.
//! * [`Bridge`] — the node's pod bridge (default `kcore0`) and per-pod veth pairs
//!   over rtnetlink, with one connection per network namespace opened inside it.
//! * [`ServiceTable`] and [`Maglev`] — an in-memory Service table with Maglev
//!   consistent hashing for a userspace proxy.
//!
//! # Example
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use kcore_netbridge::{Endpoint, Ipam, Protocol, Service, ServiceTable};
//!
//! let dir = std::env::temp_dir().join(format!("kcore-ipam-doc-{}", std::process::id()));
//! let ipam = Ipam::open(&dir, "10.244.1.0/24".parse()?)?;
//! let ip = ipam.allocate("pod-a")?;
//! assert_eq!(ip, Ipv4Addr::new(10, 244, 1, 2));
//! ipam.release("pod-a")?;
//! std::fs::remove_dir_all(&dir)?;
//!
//! let mut svc = Service::cluster_ip("default/web", Protocol::Tcp, Ipv4Addr::new(10, 96, 0, 10), 80);
//! svc.endpoints = vec![Endpoint::ready(ip, 8080)];
//! let mut table = ServiceTable::new();
//! table.upsert(&svc)?;
//! let client = SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 7), 41000);
//! assert_eq!(table.pick(svc.cluster_ip, 80, Protocol::Tcp, client), Some(SocketAddrV4::new(ip, 8080)));
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod announce;
mod bridge;
mod error;
mod ipam;
mod maglev;
mod nfnl;
mod nft;
mod policy;
mod service;

pub use announce::L2Announcer;
pub use bridge::{enable_ip_forwarding, pod_mac, Bridge, BridgeConfig, PodInterface};
pub use error::Error;
pub use ipam::Ipam;
/// IPv4 prefixes are [`ipnet::Ipv4Net`], the same type as `kcore_vxlan::Ipv4Net`.
pub use ipnet::Ipv4Net;
pub use maglev::Maglev;
pub use nfnl::NftNetlink;
pub use nft::{
    list_table, masquerade_batch, NftBatch, NftCommand, NftConfig, NftRunner, ServiceProxy,
    SyncStats, MASQUERADE_MARK,
};
pub use policy::{
    cidr_except, merge_ranges, AddrRange, CompiledPolicy, PolicyFirewall, PolicyRule, PolicySet,
    PolicyStats, PortMatch,
};
pub use service::{Endpoint, Protocol, Service, ServiceTable, SessionAffinity};
