//! OCI runtime-spec containers built on [`kcore_ns`] and [`kcore_cgroup`], and the
//! runc-compatible `kcore-runc` CLI.
//!
//! - [`Runtime`] keeps one state directory per container under a root (default
//!   [`DEFAULT_ROOT`]), written atomically. [`Runtime::create`] turns an in-memory
//!   [`Spec`](oci_spec::runtime::Spec) plus a bundle directory into a
//!   [`Container`] in the `created` state; [`Runtime::load`] opens an existing one.
//! - [`Container`] moves through [`Status`]: `creating → created → running ⇄ paused →
//!   stopped`, with a guard on every operation ([`Status::can_start`], ...).
//!   [`Container::start`], [`Container::wait`], [`Container::kill`],
//!   [`Container::delete`], [`Container::exec`], [`Container::pause`],
//!   [`Container::resume`], [`Container::processes`], [`Container::stats`],
//!   [`Container::update`] (live resource limits), [`Container::checkpoint`] and
//!   [`Runtime::restore`] (CRIU, as runc drives it), and [`Container::state`] (the
//!   runtime-spec state JSON). [`features`] is the runtime-spec Features structure.
//! - What `config.json` asks for on Linux: new and joined namespaces (an absent type is
//!   shared with the runtime; without a mount namespace the process is chrooted into the
//!   rootfs and settings that need mounts are refused), id maps,
//!   mounts (with runc's option names), pivot_root or MS_MOVE+chroot, devices,
//!   masked and read-only paths, hostname/domainname, sysctl, rlimits, the five
//!   capability sets, no_new_privs, user/groups/umask, cwd, env, oomScoreAdj,
//!   cgroupsPath and resources, seccomp (compiled to BPF by [`compile_seccomp`]), the
//!   six hook kinds with the state on stdin and timeouts, and a terminal sent over a
//!   console socket ([`recv_fd`] is the receiving side).
//! - AppArmor profiles and SELinux process and mount labels where the host has the
//!   LSM enabled; a config asking for one the host lacks is refused
//!   ([`Error::LsmUnavailable`]), as runc and crun refuse it.
//!
//! # Example
//!
//! ```no_run
//! use kcore_runtime::{parse_spec, CreateOptions, Runtime};
//! use std::path::Path;
//!
//! let bundle = Path::new("/tmp/bundle"); // holds rootfs/
//! let spec = parse_spec(&std::fs::read_to_string(bundle.join("config.json"))?)?;
//! let rt = Runtime::new("/run/kcore-example");
//! let mut c = rt.create("demo", bundle, &spec, CreateOptions::default())?;
//! c.start()?;
//! let status = c.wait()?;
//! println!("{} exited with {status}", c.id());
//! c.delete(false)?;
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg(target_os = "linux")]

mod cgroups;
mod container;
mod criu;
mod error;
mod features;
mod hooks;
mod intelrdt;
pub mod launcher;
mod lsm;
mod mounts;
mod process;
mod seccomp;
mod spec;
mod state;
mod sys;
mod syscalls;

pub use container::{
    write_pid_file, CgroupsMode, CheckpointOptions, Container, CreateOptions, CriuOptions,
    ExecOptions, ExecProcess, RestoreOptions, Runtime, DEFAULT_ROOT, DESCRIPTORS_FILE,
};
pub use error::{Error, HookFailure, Result};
pub use features::{features, OCI_VERSION_MAX};
pub use intelrdt::{CmtStats, IntelRdtStats, L3CacheInfo, MbmStats, MemBwInfo};
pub use kcore_ns::ExitStatus;
pub use launcher::Launcher;
pub use process::recv_fd;
pub use seccomp::{compile as compile_seccomp, SeccompProgram};
pub use spec::{load_spec, parse_process, parse_spec, validate, DEFAULT_CAPABILITIES};
pub use state::{State, Status};
