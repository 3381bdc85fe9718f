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
    /// A cron schedule could not be parsed.
    #[error("unparseable schedule {schedule:?}: {reason}")]
    Cron {
        /// The schedule text.
        schedule: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A time zone name is not in the host's tz database.
    #[error("unknown time zone {name}")]
    TimeZone {
        /// The name asked for.
        name: String,
    },
}
