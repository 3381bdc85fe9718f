//! A Kubernetes-compatible API server: the upstream object types (k8s-openapi) served as
//! JSON over REST to real clients (`kubectl`, client-go, the Python client, kube-rs), on a
//! revisioned storage trait with etcd's model.
//!
//! - [`Storage`] is the store (create, update-if-revision, delete, range, watch from a
//!   revision, compaction); [`RedbStorage`] is the embedded durable backend, and
//!   [`conformance`] is the suite every backend passes.
//! - [`Api`] is the object machinery in-process: CRUD with namespaces, generateName, uid,
//!   generation, resourceVersion conflicts, finalizers, defaulting, validation, selectors,
//!   pagination, watch, subresources and the four PATCH flavours, for the built-in kinds
//!   and the custom resources of CustomResourceDefinitions (served as soon as a CRD is
//!   established).
//! - [`protobuf`] transcodes between the stored JSON and Kubernetes protobuf
//!   (`application/vnd.kubernetes.protobuf`) for every built-in kind; the server
//!   negotiates it per request, as upstream.
//! - [`ApiServer`] puts it on HTTPS (generated CA, admin kubeconfig) or, opt-in, plain
//!   HTTP on loopback, with authentication (client certificates of the cluster CA, the
//!   token file's users, service-account JWTs from TokenRequest), RBAC
//!   (`rbac.authorization.k8s.io/v1`, upstream's bootstrap roles, escalation checks) and
//!   the review APIs (`kubectl auth whoami`, `kubectl auth can-i`).
//! - `pods/exec`, `pods/attach` and `pods/portforward` go to the pod's node agent: over
//!   verified TLS to its port, or, for an agent registered in [`LocalNodes`] (one running
//!   in this process), to its handler on the client's own connection.
//!
//! # Example
//!
//! ```no_run
//! use kcore_apiserver::ApiServer;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let server = ApiServer::builder()
//!     .data_dir("/var/lib/kcore/apiserver")
//!     .listen("127.0.0.1:6443".parse()?)
//!     .build()
//!     .await?;
//! println!("kubeconfig: /var/lib/kcore/apiserver/admin.kubeconfig, url {}", server.url());
//! let api = server.api(); // in-process handle for controllers
//! let running = server.spawn();
//! let ns: k8s_openapi::api::core::v1::Namespace = api.get(None, "default").await?;
//! assert_eq!(ns.metadata.name.as_deref(), Some("default"));
//! running.shutdown().await?;
//! # Ok(())
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod admission;
mod aggregator;
mod api;
mod audit;
mod auth;
mod cache;
pub mod conformance;
mod crd;
mod defaults;
mod discovery;
mod error;
mod http;
mod kubernetes_service;
mod negotiate;
mod node_certs;
mod node_client;
mod openapi;
mod patch;
pub mod protobuf;
mod rbac_authorizer;
mod registry;
mod resources;
mod selectors;
mod server;
mod storage;
mod stream_proxy;
mod table;
mod tls;
mod validate;

pub use api::{Api, DeleteOptions, ListOptions, WatchEvent, WatchEvents, WriteOptions};
pub use audit::AuditLogRotation;
pub use error::{ApiError, Cause, Error};
pub use http::WRITE_DEADLINE_HEADER;
pub use node_client::{LocalNodeRegistration, LocalNodes};
pub use patch::{strategic_merge, PatchType};
pub use rbac_authorizer::{RbacAuthorizer, RbacRequest};
pub use selectors::{FieldSelector, LabelSelector};
pub use server::{ApiServer, ApiServerBuilder, RunningServer};
pub use storage::{
    Checkpoints, Event, EventKind, KeyValue, RangeResult, RedbStorage, Revisions, Storage,
    StorageError, WatchStream,
};
#[cfg(feature = "etcd")]
pub use storage::{EtcdOptions, EtcdStorage};
