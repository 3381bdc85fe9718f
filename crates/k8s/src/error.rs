//! The crate's error type.

/// A value that does not follow a Kubernetes rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A resource quantity could not be parsed.
    #[error("invalid quantity {value:?}: {reason}")]
    Quantity {
        /// The offending text.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A label or node selector requirement is malformed.
    #[error("invalid selector requirement on {key:?}: {reason}")]
    Selector {
        /// The requirement's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}
