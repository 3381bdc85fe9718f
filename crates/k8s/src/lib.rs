//! Kubernetes rules over the object model (k8s-openapi types), each in one place for every
//! kcore crate: the API server, scheduler, controllers and node agent all use these, so
//! they cannot drift apart.
//!
//! | rule | upstream | here |
//! |---|---|---|
//! | resource quantities, exact | `resource.Quantity` | [`Quantity`] |
//! | a pod's QoS class | `ComputePodQOS` | [`pod_qos_class`], [`qos_class`] |
//! | label and node selectors | `labels`, `nodeaffinity` | [`Selector`], [`NodeSelectorTerm`] |
//! | Lease leader election | client-go `leaderelection` | [`decide`], [`LeaseObserver`] |
//! | status code of an API error | `apierrors.ReasonForError` | `status_code` (feature `kube`) |
//! | the Ingresses kcore's controller serves, and their TLS Secrets | `IngressClass` `spec.controller`, the default class | [`ingress_served`], [`ingress_tls_secrets`] |
//! | cron schedules and missed start times | robfig/cron `ParseStandard`, `mostRecentScheduleTime` | [`CronSchedule`], [`missed_schedules`] |
//! | the Kubernetes version kcore implements | `version.Get` | [`VERSION`], [`GIT_VERSION`] |
//!
//! Each is table-tested against upstream's own cases. The crate depends on k8s-openapi
//! and thiserror only; the optional `kube` feature adds `status_code` for
//! `kube::Error`.
//!
//! # Example
//!
//! ```
//! use k8s_openapi::api::core::v1::PodSpec;
//! use kcore_k8s::{pod_qos_class, QosClass, Quantity};
//!
//! // Quantities are exact: no floating point.
//! assert_eq!(Quantity::parse("0.1")?.milli_value(), 100);
//! assert_eq!(Quantity::parse("1.5Gi")?.value(), 1_610_612_736);
//! assert_eq!(Quantity::parse("1")?, Quantity::parse("1000m")?);
//!
//! // A limit implies an equal request; init containers count.
//! let spec: PodSpec = serde_json::from_value(serde_json::json!({
//!     "containers": [{"name": "app", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
//! }))?;
//! assert_eq!(pod_qos_class(&spec), QosClass::Guaranteed);
//! assert_eq!(kcore_k8s::VERSION, "v1.37.0");
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod cron;
mod ephemeral;
mod error;
mod ingress;
mod leader;
mod qos;
mod quantity;
mod selector;
#[cfg(feature = "kube")]
mod status;
mod version;

pub use cron::{missed_schedules, time_zone, CronSchedule, Missed};
pub use ephemeral::{claim_is_for_pod, ephemeral_claim_name};
pub use error::Error;
pub use ingress::{
    class_served, ingress_class, ingress_served, ingress_tls_secrets, INGRESS_CLASS_ANNOTATION,
    INGRESS_CONTROLLER,
};
pub use leader::{decide, LeaseDecision, LeaseObserver};
pub use qos::{pod_qos_class, qos_class, QosClass};
pub use quantity::{Quantity, QuantityFormat};
pub use selector::{
    label_selector_is_empty, label_selector_matches, label_selector_string, set_matches,
    NodeSelectorTerm, Op, Requirement, Selector, NODE_NAME_FIELD,
};
#[cfg(feature = "kube")]
pub use status::status_code;
pub use version::{GIT_VERSION, MAJOR, MINOR, PROBE_USER_AGENT, VERSION};

/// The Service annotation naming the node that announces a LoadBalancer pool address
/// (pool mode, MetalLB's L2): the controller that allocates the address writes it,
/// and that node's agent answers ARP for the address.
pub const LB_ANNOUNCE_NODE_ANNOTATION: &str = "kcore.io/lb-announce-node";
