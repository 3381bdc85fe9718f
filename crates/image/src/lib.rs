//! kcore-image: an OCI content store, image import, registry pull and safe,
//! fast layer unpacking.
//!
//! - [`ContentStore`]: sha256 blobs, verified while written, renamed into
//!   place atomically.
//! - [`ImageStore`]: named images over the content store. Import an OCI image
//!   layout (directory or tar) or a `docker save` archive, [pull](ImageStore::pull)
//!   from a registry (anonymous, basic or bearer-token auth), list, inspect,
//!   remove and [prune](ImageStore::prune) (garbage collection of blobs and
//!   unpacked layers no image references).
//! - Out of the store: [push](ImageStore::push) to a registry (blob `HEAD`
//!   checks, cross-repository mounts, monolithic or chunked uploads, basic
//!   or bearer auth), [save](ImageStore::save) as an OCI layout or a
//!   docker-archive, [`ImageStore::tag_image`].
//! - Unpacking: [`ImageStore::unpack`] puts each layer into its own
//!   [`kcore_overlay::LayerStore`] diff directory (named by chain ID, several
//!   layers at once, OCI whiteouts turned into overlayfs whiteouts);
//!   [`ImageStore::flatten`] applies the whole chain onto one plain rootfs.
//!   [`unpack_layer`] / [`apply_layer`] work on a single tar, tar+gzip or
//!   tar+zstd stream.
//!
//! Unpacking decompresses and hashes (DiffID) on one thread while another
//! creates the files. Every path is resolved under a directory fd of the
//! layer root with `openat2(RESOLVE_IN_ROOT)`, and the last component is
//! created with `*at` calls that never follow symlinks: `..`, absolute
//! paths, symlink and hardlink tricks, and symlinks swapped in during the
//! extraction cannot reach outside the root. A refused or broken layer gets
//! an error naming the entry, and leaves no partial layer behind.
//!
//! # Example
//!
//! ```no_run
//! use kcore_image::{ImageStore, ImportOptions, PullOptions, UnpackOptions};
//! use kcore_overlay::LayerStore;
//! use std::sync::Arc;
//!
//! let images = ImageStore::open("/var/lib/kcore/images")?;
//! let layers = LayerStore::open("/var/lib/kcore/overlay")?;
//! let rec = images.pull("docker.io/library/alpine:3.20", &PullOptions::default())?;
//! let progress = Arc::new(|p: kcore_image::Progress| eprintln!("{} bytes, {} entries", p.bytes, p.entries));
//! let unpacked = images.unpack(&rec.name, &layers, &UnpackOptions::new().progress(progress), 2)?;
//! println!("top layer for a container: {:?}", unpacked.top());
//! images.import_oci_layout("./image-layout".as_ref(), &ImportOptions::default())?;
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod digest;
mod error;
mod images;
mod oci;
mod push;
mod registry;
mod save;
mod store;
mod tarstream;
mod unpack;

pub use digest::{chain_ids, Digest};
pub use error::{Error, Result};
pub use images::{
    Image, ImageRecord, ImageStore, ImportOptions, LayerInfo, PruneReport, UnpackedImage,
};
pub use oci::{Platform, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
pub use push::{PushOptions, PushReport};
pub use registry::{PullOptions, Reference, RegistryClient};
pub use save::SaveFormat;
pub use store::{BlobWriter, ContentStore};
pub use unpack::{
    apply_layer, apply_layer_at, unpack_layer, Compression, DevicePolicy, LayerStats, Progress,
    ProgressFn, UnpackOptions, Whiteouts, DEFAULT_MAX_BYTES,
};
