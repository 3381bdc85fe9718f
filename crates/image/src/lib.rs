//! kcore-image: an OCI content store, image import, registry pull and safe,
//! fast layer unpacking.
#![deny(missing_docs)]

mod digest;
mod error;
mod images;
mod oci;
mod registry;
mod store;
mod unpack;

pub use digest::{chain_ids, Digest};
pub use error::{Error, Result};
pub use images::{
    Image, ImageRecord, ImageStore, ImportOptions, LayerInfo, PruneReport, UnpackedImage,
};
pub use oci::{Platform, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
pub use registry::{PullOptions, Reference, RegistryClient};
pub use store::{BlobWriter, ContentStore};
pub use unpack::{
    apply_layer, apply_layer_at, unpack_layer, Compression, DevicePolicy, LayerStats, Progress,
    ProgressFn, UnpackOptions, Whiteouts,
};
