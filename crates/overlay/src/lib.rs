//! An overlay2-style layer store on overlayfs, plus whiteout helpers.
//!
//! A [`LayerStore`] keeps container image layers in the layout of Docker's overlay2
//! driver: every layer `<id>/` has its content in `diff/`, its short id in `link`, its
//! parent chain in `lower` as `l/<short>` names, and `work/` + `merged/` for mounting;
//! `l/` holds the short symlinks so that the mount options of a deep stack stay within
//! the kernel's one-page limit. State lives on disk, guarded by a file lock, so another
//! `LayerStore` on the same root (in any process) sees the same layers.
//!
//! [`LayerStore::mount`] mounts a writable container view (the layer's `diff` as the
//! upper layer over its parents) or a read-only view of an image's layer chain. Mounting
//! never changes the process's working directory: the relative `l/<short>` paths are
//! resolved on a helper thread with its own filesystem context.
//!
//! The whiteout helpers ([`whiteout_at`], [`set_opaque`], [`is_whiteout`], [`is_opaque`], …)
//! write and read deletions in the kernel's format, for layer unpackers.
//!
//! Mounting, whiteouts and opaque directories need root (`CAP_SYS_ADMIN`, `CAP_MKNOD`).
//!
//! # Example
//!
//! ```no_run
//! use kcore_overlay::{LayerStore, MountOptions};
//!
//! let store = LayerStore::open("/var/lib/kcore/overlay")?;
//! let base = store.create("base", None)?;
//! std::fs::write(base.diff_path().join("hello"), "from the image\n")?;
//! store.create("container", Some("base"))?;
//!
//! let merged = store.mount("container", &MountOptions::new())?;
//! std::fs::write(merged.join("new-file"), "lands in container/diff\n")?;
//! assert_eq!(std::fs::read_to_string(merged.join("hello"))?, "from the image\n");
//! store.unmount("container")?;
//!
//! assert!(store.diff_path("container")?.join("new-file").exists());
//! store.remove("container")?;
//! store.remove("base")?;
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod error;
mod id;
mod mount;
mod store;
mod usage;
mod whiteout;

pub use error::{Error, Result};
pub use id::{validate_id, MAX_ID_LEN};
pub use mount::MountOptions;
pub use store::{Layer, LayerStore, MAX_DEPTH};
pub use usage::DiskUsage;
pub use whiteout::{
    is_opaque, is_opaque_fd, is_whiteout, is_whiteout_at, set_opaque, set_opaque_path, whiteout,
    whiteout_at, OPAQUE_WHITEOUT, OPAQUE_XATTR, WHITEOUT_PREFIX,
};
