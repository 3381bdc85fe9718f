//! A Kubernetes-compatible API server.
#![deny(missing_docs)]

pub mod conformance;
mod storage;

pub use storage::{
    Event, EventKind, KeyValue, RangeResult, RedbStorage, Revisions, Storage, StorageError,
    WatchStream,
};
