//! kcore: a small Kubernetes built from independent crates.
//!
//! This umbrella crate re-exports the kcore crates behind cargo features, so one
//! dependency gives the whole family. The container and network crates are on by
//! default; `full` adds the cluster crates.
//!
//! | module | crate | job |
//! |---|---|---|
//! | `ns` | `kcore-ns` | namespaces, mounts, pivot_root, id maps, hostname |
//! | `cgroup` | `kcore-cgroup` | one cgroup API over v1, v2 and hybrid hosts |
//! | `overlay` | `kcore-overlay` | overlay2-style layer store |
//! | `image` | `kcore-image` | OCI content store, import, registry pull, safe unpack |
//! | `runtime` | `kcore-runtime` | OCI runtime-spec containers |
//! | `build` | `kcore-build` | Dockerfile builds (BuildKit semantics) into the image store |
//! | `netbridge` | `kcore-netbridge` | bridge, veth, IPAM, Service rules |
//! | `vxlan` | `kcore-vxlan` | flannel-style VXLAN overlay, pod-subnet routes |
//! | `k8s` | `kcore-k8s` | Kubernetes rules: quantities, QoS, selectors, leader election, version |
//! | `apiserver` | `kcore-apiserver` | Kubernetes-compatible API server and storage |
//! | `scheduler` | `kcore-scheduler` | scheduling framework and default plugins |
//! | `reconcile` | `kcore-reconcile` | controller runtime and built-in controllers |
//! | `node` | `kcore-node` | the node agent |
//! | `testing` | `kcored::testing` | a real control plane with simulated nodes inside a test |
//!
//! Each module is the crate itself; see its documentation for examples.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "overlay")] {
//! kcore::overlay::validate_id("layer-1")?;
//! # }
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

#[cfg(feature = "apiserver")]
#[doc(inline)]
pub use kcore_apiserver as apiserver;
#[cfg(feature = "build")]
#[doc(inline)]
pub use kcore_build as build;
#[cfg(feature = "cgroup")]
#[doc(inline)]
pub use kcore_cgroup as cgroup;
#[cfg(feature = "client")]
#[doc(inline)]
pub use kcore_client as client;
#[cfg(feature = "image")]
#[doc(inline)]
pub use kcore_image as image;
#[cfg(feature = "k8s")]
#[doc(inline)]
pub use kcore_k8s as k8s;
#[cfg(feature = "netbridge")]
#[doc(inline)]
pub use kcore_netbridge as netbridge;
#[cfg(feature = "node")]
#[doc(inline)]
pub use kcore_node as node;
#[cfg(feature = "ns")]
#[doc(inline)]
pub use kcore_ns as ns;
#[cfg(feature = "overlay")]
#[doc(inline)]
pub use kcore_overlay as overlay;
#[cfg(feature = "reconcile")]
#[doc(inline)]
pub use kcore_reconcile as reconcile;
#[cfg(feature = "runtime")]
#[doc(inline)]
pub use kcore_runtime as runtime;
#[cfg(feature = "scheduler")]
#[doc(inline)]
pub use kcore_scheduler as scheduler;
#[cfg(feature = "vxlan")]
#[doc(inline)]
pub use kcore_vxlan as vxlan;
#[cfg(feature = "testing")]
#[doc(inline)]
pub use kcored::testing;
