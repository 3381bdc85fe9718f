//! A Kubernetes-compatible API server.
#![deny(missing_docs)]

mod api;
pub mod conformance;
mod defaults;
mod error;
mod http;
mod openapi;
mod patch;
mod resources;
mod selectors;
mod server;
mod storage;
mod table;
mod validate;

pub use api::{Api, DeleteOptions, ListOptions, WatchEvent, WatchEvents, WriteOptions};
pub use error::{ApiError, Cause, Error};
pub use patch::{strategic_merge, PatchType};
pub use selectors::{FieldSelector, LabelSelector};
pub use server::{ApiServer, ApiServerBuilder, RunningServer};
pub use storage::{
    Event, EventKind, KeyValue, RangeResult, RedbStorage, Revisions, Storage, StorageError,
    WatchStream,
};
