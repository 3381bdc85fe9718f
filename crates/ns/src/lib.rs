//! Linux namespaces, mounts, `pivot_root` and id maps for containers.
//!
//! - [`Namespace`] / [`NamespaceSet`]: the eight namespace kinds with their clone
//!   flags and `/proc/<pid>/ns` names; [`unshare`], [`enter`], [`enter_path`],
//!   [`enter_pidfd`] act on the calling thread.
//! - [`NsCommand`]: spawn a process in new and/or joined namespaces in two phases:
//!   [`NsCommand::spawn`] returns a [`Pending`] with the host pid while the child is
//!   blocked (put it in a cgroup now), [`Pending::release`] writes the id maps, lets
//!   it run its setup closures and exec, and turns any failure before exec into a
//!   typed [`Error::Child`]. With a new pid namespace the child is PID 1 there and
//!   still the caller's own child ([`Child::wait`], [`Child::kill`]). An
//!   [exec gate](NsCommand::exec_gate) lets `release` return before a blocking last
//!   step (an OCI-style `start`), with [`Child::wait_exec`] reporting the outcome.
//! - [`persist`] / [`remove_persisted`]: keep any namespace alive by bind-mounting its
//!   `/proc/<pid>/ns` file, and undo that.
//! - [`netns`]: named persistent network namespaces under `/run/netns` (or any
//!   directory) and [`NetNs::run`] to run a closure inside one on its own thread.
//! - [`netlink`]: netlink sockets opened inside a network namespace; with the
//!   `rtnetlink` feature, an rtnetlink connection per namespace and link helpers
//!   shared by kcore-netbridge and kcore-vxlan.
//! - [`mount`]: propagation, bind mounts with flags, proc/sysfs/tmpfs/devpts/mqueue,
//!   a minimal `/dev`, `pivot_root`, masked and read-only paths.
//!
//! # Example
//!
//! Run `hostname` as PID 1 of new pid, uts, mount and network namespaces:
//!
//! ```no_run
//! use kcore_ns::{mount, Namespace, NsCommand};
//! use std::path::Path;
//!
//! let mut cmd = NsCommand::new("/bin/hostname");
//! cmd.new_namespaces(Namespace::Pid | Namespace::Uts | Namespace::Mount | Namespace::Net)
//!     .hostname("box")
//!     .setup(|| {
//!         mount::set_propagation(Path::new("/"), mount::Propagation::Private, true)?;
//!         Ok(())
//!     });
//! let pending = cmd.spawn()?;
//! println!("child is {} on the host", pending.pid()); // e.g. add it to a cgroup here
//! let mut child = pending.release()?;
//! assert!(child.wait()?.success());
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg(target_os = "linux")]

mod error;
mod namespace;
mod spawn;

pub mod mount;
pub mod netlink;
pub mod netns;

pub use error::{ChildStage, Error, Result};
pub use namespace::{
    enter, enter_path, enter_pidfd, open_ns, persist, pidfd_open, remove_persisted, set_domainname,
    set_hostname, unshare, IdMap, Namespace, NamespaceSet,
};
pub use netns::{NetNs, NetnsDir};
pub use spawn::{
    read_exit_record, write_id_maps, Child, ExitStatus, NsCommand, Pending, SetGroups, SetupError,
};
