//! The storage model: revisioned keys as in etcd.
//!
//! Every successful write gets the next revision of the whole store (a single, strictly
//! increasing counter). A key remembers the revision that created it and the revision that
//! last modified it. Watchers receive every change after a given revision, in order, until
//! the history before some revision is compacted away.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

mod encryption;
#[cfg(feature = "etcd")]
mod etcd_backend;
mod hub;
mod redb_backend;
mod wal;

pub(crate) use encryption::{EncryptedStorage, EncryptionConfig};
#[cfg(feature = "etcd")]
pub use etcd_backend::{EtcdOptions, EtcdStorage};
pub use redb_backend::{Checkpoints, RedbStorage};

/// One stored key with its revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The revision of the write that created the key.
    pub create_revision: u64,
    /// The revision of the latest write to the key (for a deletion event: the deletion's).
    pub mod_revision: u64,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change, as delivered to watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// For a put, the new value; for a delete, the last value, with `mod_revision` set to
    /// the revision of the deletion.
    pub kv: KeyValue,
    /// The value before this change, if the key existed.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision at which this change happened.
    pub fn revision(&self) -> u64 {
        self.kv.mod_revision
    }
}

/// The answer to a range read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    /// Keys in ascending order.
    pub kvs: Vec<KeyValue>,
    /// Whether more keys follow after the last one returned.
    pub more: bool,
    /// The store's revision at the time of the read.
    pub revision: u64,
}

/// A stream of changes; it ends with an error if the watcher falls too far behind.
pub type WatchStream = BoxStream<'static, Result<Event, StorageError>>;

/// Errors from a [`Storage`] backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// `create` of a key that exists.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The key does not exist.
    #[error("key {key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A conditional write whose expected revision is not the key's current one.
    #[error("key {key} is at revision {current}, not {expected}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: u64,
        /// The key's actual modification revision.
        current: u64,
    },
    /// The requested history was compacted.
    #[error("revision {requested} is compacted (history starts after {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The latest compacted revision.
        compacted: u64,
    },
    /// A revision in the future was asked for.
    #[error("revision {requested} is newer than the store's revision {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: u64,
        /// The store's revision.
        current: u64,
    },
    /// A watcher did not keep up with the event rate and was dropped.
    #[error("watch on {prefix} fell behind and was closed")]
    WatchLagged {
        /// The watched prefix.
        prefix: String,
    },
    /// The backend failed.
    #[error("storage backend failed during {op}: {message}")]
    Backend {
        /// The operation.
        op: &'static str,
        /// The backend's message.
        message: String,
    },
    /// The backend cannot serve the request now: etcd lost its quorum or cannot be
    /// reached. The API answers 503 and the request may be retried.
    #[error("storage backend unavailable during {op}: {message}")]
    Unavailable {
        /// The operation.
        op: &'static str,
        /// The backend's message (etcd's own, e.g. `etcdserver: no leader`).
        message: String,
    },
    /// The store was closed.
    #[error("storage is closed")]
    Closed,
}

/// A revisioned key-value store with etcd's semantics.
///
/// Implementations must pass [`conformance`](crate::conformance) (see `tests/storage.rs`).
/// All methods are object-safe so the server holds an `Arc<dyn Storage>`.
pub trait Storage: Send + Sync + 'static {
    /// Reads one key.
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, StorageError>>;

    /// Reads keys starting with `prefix`, in order, strictly after `start_after` if given,
    /// at most `limit` of them (0 means no limit).
    fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RangeResult, StorageError>>;

    /// Creates a key; fails with [`StorageError::AlreadyExists`] if it exists.
    fn create(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<KeyValue, StorageError>>;

    /// Replaces an existing key's value. If `expected_revision` is given, the write happens
    /// only if it equals the key's `mod_revision` (else [`StorageError::Conflict`]).
    fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: Option<u64>,
    ) -> BoxFuture<'_, Result<KeyValue, StorageError>>;

    /// Deletes a key, conditionally like [`Storage::update`]. Returns the last value with
    /// `mod_revision` set to the deletion's revision.
    fn delete(
        &self,
        key: &str,
        expected_revision: Option<u64>,
    ) -> BoxFuture<'_, Result<KeyValue, StorageError>>;

    /// Streams every change to keys under `prefix` with a revision greater than
    /// `after_revision`, first the stored history, then live changes.
    fn watch(
        &self,
        prefix: &str,
        after_revision: u64,
    ) -> BoxFuture<'_, Result<WatchStream, StorageError>>;

    /// Discards the history up to and including `revision`.
    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StorageError>>;

    /// The store's current revision and its latest compacted revision.
    fn revision(&self) -> BoxFuture<'_, Result<Revisions, StorageError>>;

    /// Whether the stored value of `key` should be re-written even when unchanged (it is
    /// encrypted with a key that no longer writes, see `EncryptedStorage`). Plain
    /// backends: never.
    fn stale(&self, key: &str) -> BoxFuture<'_, Result<bool, StorageError>> {
        let _ = key;
        Box::pin(async { Ok(false) })
    }
}

/// The store's revision counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Revisions {
    /// The revision of the latest write.
    pub current: u64,
    /// Every revision up to this one is compacted.
    pub compacted: u64,
}

impl<S: Storage + ?Sized> Storage for Arc<S> {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, StorageError>> {
        (**self).get(key)
    }
    fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RangeResult, StorageError>> {
        (**self).range(prefix, start_after, limit)
    }
    fn create(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<KeyValue, StorageError>> {
        (**self).create(key, value)
    }
    fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: Option<u64>,
    ) -> BoxFuture<'_, Result<KeyValue, StorageError>> {
        (**self).update(key, value, expected_revision)
    }
    fn delete(
        &self,
        key: &str,
        expected_revision: Option<u64>,
    ) -> BoxFuture<'_, Result<KeyValue, StorageError>> {
        (**self).delete(key, expected_revision)
    }
    fn watch(
        &self,
        prefix: &str,
        after_revision: u64,
    ) -> BoxFuture<'_, Result<WatchStream, StorageError>> {
        (**self).watch(prefix, after_revision)
    }
    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StorageError>> {
        (**self).compact(revision)
    }
    fn revision(&self) -> BoxFuture<'_, Result<Revisions, StorageError>> {
        (**self).revision()
    }
    fn stale(&self, key: &str) -> BoxFuture<'_, Result<bool, StorageError>> {
        (**self).stale(key)
    }
}
