//! Errors: [`Error`] for the server's life cycle, [`ApiError`] for one request.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::storage::StorageError;

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage backend failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A file could not be read or written.
    #[error("file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The builder was given conflicting or missing settings.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A request to the API failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A key, certificate or TLS configuration of the cluster's PKI.
    #[error("cluster pki")]
    Tls(#[from] kcore_tls::Error),
}

/// A failed API request: becomes a `Status` object with this HTTP code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `Conflict`, `Invalid`, ...).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// `details` of the Status (name, group, kind, causes).
    pub details: Option<Value>,
}

/// One field at fault in an `Invalid` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, ...
    pub reason: &'static str,
    /// The field path, e.g. `spec.containers[0].image`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Cause {
    pub(crate) fn required(field: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }
    pub(crate) fn invalid(field: impl Into<String>, value: &Value, why: &str) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {}: {why}", shown(value)),
        }
    }
    /// `Invalid value: <why>`, upstream's `field.Invalid` with an omitted value
    /// (`field.OmitValueType{}`).
    pub(crate) fn invalid_omitted(field: impl Into<String>, why: &str) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {why}"),
        }
    }
    /// `Forbidden: <why>`, upstream's `field.Forbidden`.
    pub(crate) fn forbidden(field: impl Into<String>, why: &str) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {why}"),
        }
    }
    /// `Required value: <why>`, upstream's `field.Required` with a detail.
    pub(crate) fn required_because(field: impl Into<String>, why: &str) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message: format!("Required value: {why}"),
        }
    }
    /// `Not found: <value>`, upstream's `field.NotFound`.
    pub(crate) fn not_found(field: impl Into<String>, value: &Value) -> Self {
        Self {
            reason: "FieldValueNotFound",
            field: field.into(),
            message: format!("Not found: {}", shown(value)),
        }
    }
    /// `Duplicate value: <value>`, upstream's `field.Duplicate`.
    pub(crate) fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Self {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {}", shown(value)),
        }
    }
    /// `Too long: may not be more than <max> bytes`, upstream's `field.TooLong`.
    pub(crate) fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self {
            reason: "FieldValueTooLong",
            field: field.into(),
            message: format!("Too long: may not be more than {max} bytes"),
        }
    }
    pub(crate) fn not_supported(field: impl Into<String>, value: &Value, allowed: &[&str]) -> Self {
        let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                shown(value),
                list.join(", ")
            ),
        }
    }
}

/// A bad value as upstream prints it in a field error: strings quoted, the rest as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        v => v.to_string(),
    }
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        let mut d = json!({ "name": name, "kind": kind });
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        self.details = Some(d);
        self
    }

    fn what(group: &str, plural: &str) -> String {
        if group.is_empty() {
            plural.to_owned()
        } else {
            format!("{plural}.{group}")
        }
    }

    /// Upstream's `NewForbidden`: `<resource>[.<group>] ["<name>"] is forbidden: <why>`
    /// (`forbidden: <why>` without a resource).
    pub(crate) fn forbidden(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let message = match (plural.is_empty(), name.is_empty()) {
            (true, _) => format!("forbidden: {why}"),
            (false, true) => format!("{} is forbidden: {why}", Self::what(group, plural)),
            (false, false) => format!("{} {name:?} is forbidden: {why}", Self::what(group, plural)),
        };
        let mut e = Self::new(403, "Forbidden", message);
        let mut d = json!({});
        for (k, v) in [("name", name), ("group", group), ("kind", plural)] {
            if !v.is_empty() {
                d[k] = json!(v);
            }
        }
        e.details = Some(d);
        e
    }

    pub(crate) fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let w = Self::what(group, plural);
        Self::new(404, "NotFound", format!("{w} {name:?} not found"))
            .with_details(group, plural, name)
    }

    pub(crate) fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let w = Self::what(group, plural);
        Self::new(409, "AlreadyExists", format!("{w} {name:?} already exists"))
            .with_details(group, plural, name)
    }

    pub(crate) fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let w = Self::what(group, plural);
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {w} {name:?}: {why}"),
        )
        .with_details(group, plural, name)
    }

    pub(crate) fn modified(group: &str, plural: &str, name: &str) -> Self {
        Self::conflict(
            group,
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub(crate) fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let w = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let mut e = Self::new(
            422,
            "Invalid",
            // Upstream's aggregate: one error as it is, several in brackets.
            if summary.len() == 1 {
                format!("{w} {name:?} is invalid: {}", summary[0])
            } else {
                format!("{w} {name:?} is invalid: [{}]", summary.join(", "))
            },
        )
        .with_details(group, kind, name);
        if let Some(d) = e.details.as_mut() {
            d["causes"] = causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
        }
        e
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub(crate) fn method_not_allowed(what: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource {what}"),
        )
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// Maps a storage failure for one object to an API error.
pub(crate) fn from_storage(e: StorageError, group: &str, plural: &str, name: &str) -> ApiError {
    match e {
        StorageError::AlreadyExists { .. } => ApiError::already_exists(group, plural, name),
        StorageError::NotFound { .. } => ApiError::not_found(group, plural, name),
        StorageError::Conflict { .. } => ApiError::modified(group, plural, name),
        other => from_store(other),
    }
}

/// Maps a storage failure that concerns no one object (a list, a watch, the store's
/// revision) to an API error: 410 for compacted history, 503 when the store is
/// unavailable (etcd without quorum), 500 otherwise.
pub(crate) fn from_store(e: StorageError) -> ApiError {
    match e {
        StorageError::Compacted {
            requested,
            compacted,
        } => ApiError::gone(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        // etcd without quorum: upstream answers with etcd's message; 503 tells clients
        // to retry (another server, or this one once quorum is back)
        StorageError::Unavailable { message, .. } => ApiError::new(
            503,
            "ServiceUnavailable",
            format!("the storage is unavailable: {message}"),
        ),
        other => ApiError::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_leaves_the_cause_to_the_chain() {
        let cause = std::io::Error::from(std::io::ErrorKind::AddrInUse).to_string();
        let err = Error::Bind {
            addr: "127.0.0.1:6443".parse().expect("addr"),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(err.to_string(), "cannot listen on 127.0.0.1:6443");
        let source = std::error::Error::source(&err).expect("a source");
        assert_eq!(source.to_string(), cause);
    }
}
