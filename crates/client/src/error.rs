//! The crate's error type.

use std::path::PathBuf;

/// Errors from [`Client`](crate::Client) operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {}: {message}", path.as_ref().map_or_else(|| "(default)".to_string(), |p| p.display().to_string()))]
    Kubeconfig {
        /// The file, or `None` for the default (`KUBECONFIG`, `~/.kube/config`).
        path: Option<PathBuf>,
        /// What went wrong.
        message: String,
    },
    /// The client's async runtime could not be started.
    #[error("cannot start the client runtime")]
    Runtime {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A manifest document is malformed or lacks a required field.
    #[error("manifest document {document}: {message}")]
    Manifest {
        /// Zero-based index of the document in the multi-document input.
        document: usize,
        /// The field or syntax at fault.
        message: String,
    },
    /// An argument (api version, label selector, …) is malformed.
    #[error("invalid argument {what}: {message}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The server does not serve the kind.
    #[error("discovery of {api_version} {kind} failed: {message}")]
    Discovery {
        /// The requested apiVersion.
        api_version: String,
        /// The requested kind.
        kind: String,
        /// The server's answer.
        message: String,
    },
    /// The object does not exist (HTTP 404).
    #[error("{kind} {name} not found: {message}")]
    NotFound {
        /// The kind.
        kind: String,
        /// `namespace/name`, or `name` for cluster-scoped objects.
        name: String,
        /// The server's message.
        message: String,
    },
    /// The object already exists, changed concurrently, or a server-side apply
    /// conflicts with another field manager (HTTP 409).
    #[error("{kind} {name} conflict: {message}")]
    Conflict {
        /// The kind.
        kind: String,
        /// `namespace/name`, or `name` for cluster-scoped objects.
        name: String,
        /// The server's message.
        message: String,
    },
    /// Any other API error status.
    #[error("api error {code} {reason}: {message}")]
    Api {
        /// HTTP status code.
        code: u16,
        /// The Status reason (`Invalid`, `Forbidden`, …).
        reason: String,
        /// The server's message.
        message: String,
    },
    /// The request did not reach the server or its answer could not be read.
    #[error("request to the api server failed: {message}")]
    Transport {
        /// What happened.
        message: String,
    },
}

impl Error {
    /// Maps a kube error for `kind` `name`.
    pub(crate) fn from_kube(err: kube::Error, kind: &str, name: &str) -> Error {
        match err {
            kube::Error::Api(status) => Error::from_status(*status, kind, name),
            other => Error::Transport {
                message: other.to_string(),
            },
        }
    }

    pub(crate) fn from_status(status: kube::core::Status, kind: &str, name: &str) -> Error {
        match status.code {
            404 => Error::NotFound {
                kind: kind.to_string(),
                name: name.to_string(),
                message: status.message,
            },
            409 => Error::Conflict {
                kind: kind.to_string(),
                name: name.to_string(),
                message: status.message,
            },
            code => Error::Api {
                code,
                reason: status.reason,
                message: status.message,
            },
        }
    }
}
