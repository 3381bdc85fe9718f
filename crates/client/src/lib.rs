//! A blocking, dynamic Kubernetes client over kube-rs, for callers that do not
//! run an async runtime (the C and Python bindings, scripts, tests): apply
//! multi-document YAML/JSON manifests with server-side apply, and get, list,
//! delete and watch objects of any kind as [`serde_json::Value`]s.
//!
//! Kinds are resolved from `apiVersion` + `kind` with API discovery and the
//! answer is cached per client.
//!
//! # Example
//!
//! ```no_run
//! use kcore_client::{Client, WatchEventKind};
//! use std::time::Duration;
//!
//! let client = Client::from_kubeconfig(None)?; // KUBECONFIG or ~/.kube/config
//! let stored = client.apply(
//!     "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: demo}\ndata: {k: v}\n",
//!     "example",
//! )?;
//! assert_eq!(stored[0]["data"]["k"], "v");
//! let cm = client.get("v1", "ConfigMap", None, "demo")?;
//! assert_eq!(cm["metadata"]["name"], "demo");
//! let mut watch = client.watch("v1", "ConfigMap", None, None, Some(Duration::from_secs(5)))?;
//! client.delete("v1", "ConfigMap", None, "demo")?;
//! while let Some(ev) = watch.next() {
//!     if ev?.kind == WatchEventKind::Deleted {
//!         break;
//!     }
//! }
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod client;
mod error;
mod manifest;

pub use client::{Client, Watch, WatchEvent, WatchEventKind};
pub use error::Error;
pub use serde_json::Value;
