//! The kcore node agent: the kubelet's job, plus kube-proxy's, cluster DNS and Ingress.
//!
//! [`NodeAgent`] watches the Pods bound to its node and, for each, builds a sandbox
//! (a network namespace with an address from [`kcore_netbridge`] on the node bridge,
//! shared IPC and UTS namespaces, a pod cgroup sized from the pod's limits, and the
//! pod's `/etc/hosts` and `/etc/resolv.conf`), prepares its volumes (emptyDir, also
//! memory-backed; configMap, secret, downwardAPI and projected files kept up to date;
//! hostPath), then runs init containers in order and app containers through
//! [`kcore_runtime`] in-process, with images from [`kcore_image`] per
//! `imagePullPolicy` on [`kcore_overlay`] layers. Container specs carry command/args
//! with `$(VAR)` expansion, env (values, configMap/secret keys, fieldRef,
//! resourceFieldRef, envFrom), workingDir, resources as cgroup limits and the security
//! context (user/group, capabilities, privileged, read-only root, no-new-privileges).
//!
//! Container exits arrive as events from waiter threads (no polling); restartPolicy is
//! applied with CrashLoopBackOff's doubling delay; liveness, readiness and startup
//! probes (httpGet, tcpSocket, exec) drive restarts and readiness; deletion stops
//! containers with SIGTERM, the grace period, then SIGKILL. Pod status (phase,
//! conditions, IPs, start time, container states, restart counts, images) is written
//! back whenever it changes. Container output goes to CRI-format log files with
//! rotation, served at `GET /containerLogs/{namespace}/{pod}/{container}` on
//! [`NodeConfig::server_addr`] (port 10250 by default), over HTTPS to clients with a
//! certificate from the cluster CA or a token the API server accepts when
//! [`NodeConfig::server_tls`] is set ([`ServerTls`]). [`PodStreams`] (from
//! [`NodeAgent::streams`]) runs exec, attach and port-forward sessions in the pods, and
//! ephemeral containers join their target's PID namespace. A restarted agent adopts the
//! containers it finds running; each container's parent is a small reaper rather than
//! the agent ([`kcore_runtime::CreateOptions::reaper`]), so its exit code is known to
//! an agent that did not start it.
//!
//! The Node is registered with capacity, allocatable, addresses, conditions and its
//! podCIDR, its status refreshed and its Lease in `kube-node-lease` renewed every
//! [`NodeConfig::heartbeat`]. Services and EndpointSlices become nftables rules
//! ([`kcore_netbridge::ServiceProxy`]); other Nodes become VXLAN peers
//! ([`kcore_vxlan`], from their podCIDR and the [`ANN_VTEP_MAC`] / [`ANN_PUBLIC_IP`]
//! annotations); cluster DNS is served on the bridge gateway; Ingress rules are
//! served by a reverse proxy on [`NodeConfig::ingress_addr`].
//!
//! [`image_from_dir`] builds a one-layer OCI image layout from a directory, for demos
//! and tests on machines without a registry.
//!
//! # Example
//!
//! ```no_run
//! use std::net::Ipv4Addr;
//! use kcore_node::{NodeAgent, NodeConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let mut cfg = NodeConfig::new(
//!     "node-1",
//!     "/var/lib/kcore/node",
//!     "10.244.1.0/24".parse()?,
//!     Ipv4Addr::new(192, 0, 2, 10),
//! );
//! cfg.cluster_cidr = Some("10.244.0.0/16".parse()?);
//! NodeAgent::new(client, cfg)
//!     .run(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg(target_os = "linux")]

mod agent;
mod announce;
mod auth;
mod cache;
mod claims;
mod config;
mod dns;
mod error;
mod events;
mod healthcheck;
mod images;
mod ingress;
mod keeper;
mod logs;
mod loopfs;
mod netctx;
mod netpol;
mod node;
mod overlay;
mod pods;
mod probes;
mod provisioner;
mod proxy;
mod refs;
mod sandbox;
mod server;
mod simulated;
mod spec;
mod stats;
mod streams;
mod volumes;

pub use agent::NodeAgent;
pub use config::{NodeConfig, ServerTls};
pub use error::{Error, ErrorChain, Result};
pub use images::{image_from_dir, reference_candidates, ImageSpec};
pub use ingress::{
    serve_ingress, IngressObjects, CONTROLLER as INGRESS_CONTROLLER,
    DEFAULT_CERT_SUBJECT as INGRESS_DEFAULT_CERT_SUBJECT,
};
pub use ipnet::Ipv4Net;
pub use logs::LogQuery;
pub use loopfs::LoopFsError;
pub use netpol::{compile_policies, POLICY_TABLE};
pub use node::{ANN_PUBLIC_IP, ANN_VTEP_MAC, LEASE_NAMESPACE};
pub use provisioner::{LOCAL_PATH_DRIVER, LOCAL_PATH_PROVISIONER};
pub use simulated::{
    NodeTemplate, SimulatedNodes, Simulation, ANN_EXIT_AFTER, ANN_EXIT_CODE, LABEL_SIMULATED,
};
pub use streams::PodStreams;
