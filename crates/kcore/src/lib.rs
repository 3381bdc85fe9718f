//! kcore: a small Kubernetes built from independent crates.
//!
//! This umbrella crate re-exports the kcore crates behind cargo features, so one
//! dependency gives the whole family:
//!
//! | module | crate | job |
//! |---|---|---|
//! | [`ns`] | `kcore-ns` | namespaces, mounts, pivot_root, id maps, hostname |
//! | [`cgroup`] | `kcore-cgroup` | one cgroup API over v1, v2 and hybrid hosts |
//! | [`overlay`] | `kcore-overlay` | overlay2-style layer store |
//!
//! Each module is the crate itself; see its documentation for examples.
#![deny(missing_docs)]

#[cfg(feature = "cgroup")]
#[doc(inline)]
pub use kcore_cgroup as cgroup;
#[cfg(feature = "ns")]
#[doc(inline)]
pub use kcore_ns as ns;
#[cfg(feature = "overlay")]
#[doc(inline)]
pub use kcore_overlay as overlay;
