//! The crate's error type.

/// Errors from building the snapshot or running the scheduler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A resource quantity could not be parsed.
    #[error("resource {resource}")]
    Quantity {
        /// The resource (`cpu`, `memory`, …) whose quantity is malformed.
        resource: String,
        /// What is wrong with the quantity.
        #[source]
        source: kcore_k8s::Error,
    },
    /// A label or node selector is malformed.
    #[error("invalid selector")]
    Selector {
        /// What is wrong.
        #[source]
        source: kcore_k8s::Error,
    },
    /// An object lacks a field the scheduler needs.
    #[error("{kind} {name:?} is missing {field}")]
    Missing {
        /// Object kind (Node, Pod…).
        kind: &'static str,
        /// Object name.
        name: String,
        /// The missing field.
        field: &'static str,
    },
    /// A pod refers to a node the snapshot does not hold.
    #[error("pod {pod} is bound to unknown node {node:?}")]
    UnknownNode {
        /// `namespace/name` of the pod.
        pod: String,
        /// The node name.
        node: String,
    },
    /// A pod is not in the snapshot.
    #[error("pod {pod} is not in the snapshot")]
    UnknownPod {
        /// `namespace/name` of the pod.
        pod: String,
    },
    /// The scheduler configuration is invalid.
    #[error("invalid scheduler configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A Kubernetes API call failed.
    #[cfg(feature = "client")]
    #[error("kubernetes api {action} failed")]
    Kube {
        /// What the scheduler was doing (`bind pod ns/name`…).
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}
