//! `exec`: another process in a running container.

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use kcore_ns::{Child, ExitStatus, Namespace, NamespaceSet, NsCommand};
use oci_spec::runtime::Process;

use super::{connect_console, ns_kind, Container, ExecOptions};
use crate::error::{Error, Result};
use crate::lsm::{LsmHost, LsmPlan};
use crate::mounts::{self};
use crate::process::{self, ProcessPlan};
use crate::seccomp;
use crate::state::{self, Status};

/// A process started by [`Container::exec`]: the caller's child.
#[derive(Debug)]
pub struct ExecProcess {
    child: Child,
}

impl ExecProcess {
    /// Host pid of the process.
    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        Ok(self.child.wait()?)
    }

    /// Sends a signal to the process.
    pub fn kill(&self, signal: i32) -> Result<()> {
        Ok(self.child.kill(signal)?)
    }
}

impl Container {
    /// Runs an extra process in the running container's namespaces and cgroup, with
    /// the container's seccomp profile. The process is the caller's child.
    pub fn exec(&mut self, process: &Process, mut opts: ExecOptions) -> Result<ExecProcess> {
        let _span = tracing::info_span!("exec", id = %self.saved.id).entered();
        self.guard("exec in", Status::can_exec)?;
        let linux = self.saved.spec.linux().clone().unwrap_or_default();
        let seccomp = linux.seccomp().as_ref().map(seccomp::compile).transpose()?;
        let plan = ProcessPlan::from_spec(process, seccomp)?;
        let lsm = LsmPlan::new(process, None, &LsmHost::system())?;
        let console = if plan.terminal {
            let path = opts
                .console_socket
                .as_deref()
                .ok_or_else(|| Error::Console {
                    path: PathBuf::new(),
                    message: "the process asks for a terminal but no console socket was given"
                        .into(),
                })?;
            Some(connect_console(path)?)
        } else {
            None
        };
        let pidfd = kcore_ns::pidfd_open(self.saved.pid)?;
        if !state::alive(self.saved.pid, self.saved.pid_start) {
            return Err(Error::InvalidState {
                id: self.saved.id.clone(),
                op: "exec in",
                status: Status::Stopped.to_string(),
            });
        }
        let mut set = NamespaceSet::new();
        for ns in linux.namespaces().iter().flatten() {
            set.insert(ns_kind(ns.typ()));
        }
        // A container sharing our mount namespace is entered by chroot, as it was made.
        let chroot_into = (!set.contains(Namespace::Mount)).then(|| self.saved.rootfs.clone());
        let mut cmd = NsCommand::new(&plan.args[0]);
        cmd.args(&plan.args[1..]).env_clear();
        for (k, v) in &plan.env {
            cmd.env(k, v);
        }
        cmd.join_pidfd(pidfd, set);
        if let Some(fd) = opts.stdin.take() {
            cmd.stdin(fd);
        }
        if let Some(fd) = opts.stdout.take() {
            cmd.stdout(fd);
        }
        if let Some(fd) = opts.stderr.take() {
            cmd.stderr(fd);
        }
        let console_raw = console.as_ref().map(|c| c.as_raw_fd());
        let preserve = opts.preserve_fds;
        cmd.setup(move || {
            if let Some(root) = &chroot_into {
                mounts::chroot(root)?;
            }
            if let Some(c) = console_raw {
                process::setup_console(c, plan.console_size, false)?;
                // SAFETY: closing our copy of the console socket.
                unsafe { libc::close(c) };
            } else {
                // a session (and process group) of its own, as runc's exec makes, so
                // that the caller can signal the process with what it started, and
                // never the caller's group
                // SAFETY: setsid takes no arguments; a fresh child is no group leader.
                if unsafe { libc::setsid() } < 0 {
                    return Err(process::os_err("setsid"));
                }
            }
            plan.check_program()?;
            lsm.apply(&crate::sys::Real)?;
            plan.finalize()?;
            plan.last_step(preserve)?;
            Ok(())
        });
        let pending = cmd.spawn()?;
        drop(console);
        if let Some(cg) = self.cgroup()? {
            cg.add_process(pending.pid() as u32)?;
        }
        if let Some(g) = &self.saved.rdt_group {
            crate::intelrdt::add_process(g, self.saved.rdt_mon_group.as_deref(), pending.pid())?;
        }
        let child = pending.release().map_err(|e| match e {
            kcore_ns::Error::Child { message, errno, .. } => Error::Init {
                id: self.saved.id.clone(),
                message,
                errno,
            },
            e => e.into(),
        })?;
        Ok(ExecProcess { child })
    }
}
