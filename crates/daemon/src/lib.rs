//! The kcore reference daemon (`kcored`) and command-line tool (`kcore`).
//!
//! The binaries are thin: each subcommand lives in a module here so that it can be
//! tested and reused.
//!
//! - [`cluster`]: `kcored up` / `kcored server` — API server, scheduler,
//!   controllers, node IPAM and (for `up`) a node agent in one process.
//! - [`datadir`]: who may read what in the data directory, and tightening one that an
//!   older version left readable by other users.
//! - [`agent`]: `kcored agent` — a node joining a cluster; [`join`] is how it trusts
//!   the server from a join token; [`ipam`] hands nodes their pod subnets.
//! - [`leadership`]: servers on etcd run the scheduler and the controllers active/standby
//!   behind Leases, with writes fenced by the lease's monotonic deadline;
//!   [`bootstrap`] shares the cluster's keys between servers through etcd, sealed with
//!   the join token; [`serverlb`] is the agent's client-side load balancer over the
//!   servers.
//! - [`image_cmd`]: `kcore image import | pull | ls | inspect | unpack | rm | prune`.
//! - [`storage`]: the default `local-path` StorageClass.
//! - [`testing`]: a real cluster inside a test ([`testing::Cluster`]), with simulated
//!   nodes.
//! - [`run`]: `kcore run` — one program in new namespaces, inside a cgroup with
//!   limits, on an overlay root file system (a static busybox base layer plus a
//!   writable layer per run).
#![deny(missing_docs)]

pub mod agent;
pub mod bootstrap;
pub mod cluster;
pub mod credentials;
pub mod datadir;
pub mod image_cmd;
pub mod ipam;
pub mod join;
pub mod leadership;
pub mod run;
pub mod serverlb;
pub mod storage;
pub mod testing;
pub mod units;
