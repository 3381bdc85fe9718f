//! The kcore overlay network between nodes, in the style of flannel's `vxlan` backend.
//!
//! * [`Overlay`] — the node's VXLAN device (`kcore.1`, VNI 1, UDP 8472, MTU =
//!   underlay − 50) and, per remote node, a permanent neighbour entry (its VTEP
//!   address → its VTEP MAC), an FDB entry (VTEP MAC → its underlay IP) and an
//!   onlink route to its pod subnet. [`Overlay::reconcile`] converges the kernel
//!   to a desired peer set; it is idempotent and removes stale entries.
//! * [`RouteTable`] — a longest-prefix-match table (pod IP → node) for the daemon.
//!
//! Netlink sockets are opened inside the target network namespace
//! ([`kcore_ns::NetNs`]), one connection per namespace.
//!
//! # Example
//!
//! ```
//! use std::net::Ipv4Addr;
//! use kcore_vxlan::{Ipv4Net, RouteTable};
//!
//! let mut routes = RouteTable::new();
//! routes.insert("10.244.0.0/16".parse::<Ipv4Net>()?, "cluster");
//! routes.insert("10.244.7.0/24".parse::<Ipv4Net>()?, "node-7");
//! assert_eq!(routes.lookup(Ipv4Addr::new(10, 244, 7, 12)), Some(&"node-7"));
//! assert_eq!(routes.lookup(Ipv4Addr::new(10, 244, 9, 1)), Some(&"cluster"));
//! assert_eq!(routes.lookup(Ipv4Addr::new(192, 0, 2, 1)), None);
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Programming a node (needs root and a tokio runtime):
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::Ipv4Addr;
//! use kcore_vxlan::{Overlay, Peer, VxlanConfig};
//!
//! let overlay = Overlay::ensure(None, VxlanConfig::new(Ipv4Addr::new(192, 0, 2, 1))).await?;
//! let peer = Peer::new("10.244.2.0/24".parse()?, Ipv4Addr::new(192, 0, 2, 2));
//! overlay.reconcile(&[peer]).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod error;
mod overlay;
mod route_table;

pub use error::Error;
/// IPv4 prefixes are [`ipnet::Ipv4Net`], the same type as `kcore_netbridge::Ipv4Net`.
pub use ipnet::Ipv4Net;
pub use overlay::{vtep_mac_for, Overlay, Peer, ReconcileStats, VxlanConfig, VXLAN_OVERHEAD};
#[doc(hidden)]
pub use route_table::linear_lookup;
pub use route_table::RouteTable;
