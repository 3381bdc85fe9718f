//! The built-in controllers.

pub(crate) mod replicaset;
