//! The built-in controllers.

pub(crate) mod deployment;
pub(crate) mod replicaset;
