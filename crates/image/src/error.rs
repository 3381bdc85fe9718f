//! The crate's error type.

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;

/// Everything that can go wrong in kcore-image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a file of the store, a layout or an archive.
    #[error("i/o error on {path}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A string is not a valid `sha256:<64 hex>` digest.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The offending text.
        digest: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Content did not hash to the digest it was announced with.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was being verified (a blob, a layer's DiffID, ...).
        what: String,
        /// The digest the content was announced with.
        expected: Digest,
        /// The digest the content actually has.
        actual: Digest,
    },
    /// Content did not have the announced size.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was being verified.
        what: String,
        /// Announced size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// A blob is not in the content store.
    #[error("blob {0} not found in the content store")]
    BlobNotFound(Digest),
    /// No image of that name (or digest) is known to the store.
    #[error("image {0:?} not found")]
    ImageNotFound(String),
    /// A layer entry was refused because it could escape the layer root or
    /// is not allowed.
    #[error("refused layer entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry's path as written in the archive.
        entry: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Creating a layer entry failed.
    #[error("layer entry {entry:?}")]
    Entry {
        /// The entry's path inside the layer.
        entry: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A layer exceeded the configured byte or entry limit.
    #[error("layer limit exceeded at entry {entry:?}: {limit}")]
    LimitExceeded {
        /// The entry at which the limit was reached.
        entry: PathBuf,
        /// Which limit (`"max_bytes 1000"`, ...).
        limit: String,
    },
    /// Unpacking a layer would allocate more bytes on disk than its budget
    /// ([`crate::UnpackOptions::max_bytes`]): a decompression or sparse bomb,
    /// or a layer too big for the limit set.
    #[error("unpack budget exceeded at entry {entry:?}: it needs {needed} bytes on disk, {allocated} of the budget of {budget} are used")]
    BudgetExceeded {
        /// The entry that would go over the budget.
        entry: PathBuf,
        /// Bytes the entry would allocate.
        needed: u64,
        /// Bytes allocated before it.
        allocated: u64,
        /// The budget.
        budget: u64,
    },
    /// The layer stream is not a readable (possibly compressed) tar archive.
    #[error("unreadable layer archive {layer}")]
    Archive {
        /// The layer (its digest or file name).
        layer: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A manifest, index, config or archive is malformed or unsupported.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The document involved.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An index has no manifest for the requested platform.
    #[error("no manifest for platform {platform} in {what}")]
    NoMatchingPlatform {
        /// The platform asked for (`linux/amd64`).
        platform: String,
        /// The index involved.
        what: String,
    },
    /// An image reference could not be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The text given.
        reference: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A registry request failed.
    #[error("registry request {url}: {reason}")]
    Registry {
        /// The URL requested.
        url: String,
        /// What went wrong (status, transport error, auth).
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_leaves_the_cause_to_the_chain() {
        let cause = io::Error::from(io::ErrorKind::NotFound).to_string();
        let err = Err::<(), _>(io::Error::from(io::ErrorKind::NotFound))
            .at("/nonexistent/kcore-image/index.json")
            .unwrap_err();
        let msg = err.to_string();
        assert_eq!(msg, "i/o error on /nonexistent/kcore-image/index.json");
        assert!(!msg.contains(&cause), "{msg}");
        let source = std::error::Error::source(&err).expect("a source");
        assert_eq!(source.to_string(), cause);
    }
}
