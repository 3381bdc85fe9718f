//! The built-in controllers.

pub(crate) mod cronjob;
pub(crate) mod custommetrics;
pub(crate) mod daemonset;
pub(crate) mod deployment;
pub(crate) mod endpoints;
pub(crate) mod ephemeral;
pub(crate) mod gc;
pub(crate) mod history;
pub(crate) mod hpa;
pub(crate) mod job;
pub(crate) mod namespace;
pub(crate) mod nodelifecycle;
pub(crate) mod persistentvolume;
pub(crate) mod podautoscaler;
pub(crate) mod replicaset;
pub(crate) mod servicelb;
pub(crate) mod statefulset;
pub(crate) mod ttlafterfinished;
pub(crate) mod volumeprotection;
