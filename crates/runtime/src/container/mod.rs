//! Containers: the types and the state every operation shares; one file per operation
//! (create/run, start/wait, kill, delete, pause/resume, exec, ps/stats, update,
//! checkpoint/restore).

mod checkpoint;
mod create;
mod delete;
mod exec;
mod kill;
mod pause;
mod ps;
mod start;
mod update;

pub use checkpoint::{
    CgroupsMode, CheckpointOptions, CriuOptions, RestoreOptions, DESCRIPTORS_FILE,
};
pub use exec::ExecProcess;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use kcore_cgroup::{Cgroup, Host};
use kcore_ns::{Child, Namespace};
use oci_spec::runtime::{Hook, LinuxNamespaceType, Spec};

use crate::error::{Error, Result};
use crate::launcher::Launcher;
use crate::state::{self, Saved, State, Status, FIFO};

/// Default state root of `kcore-runc`.
pub const DEFAULT_ROOT: &str = "/run/kcore-runc";

/// Options for [`Runtime::create`].
#[derive(Debug, Default)]
pub struct CreateOptions {
    /// Unix socket that receives the pty master (SCM_RIGHTS) when `process.terminal` is true.
    pub console_socket: Option<PathBuf>,
    /// stdin for the container process (default: inherited).
    pub stdin: Option<OwnedFd>,
    /// stdout for the container process (default: inherited).
    pub stdout: Option<OwnedFd>,
    /// stderr for the container process (default: inherited).
    pub stderr: Option<OwnedFd>,
    /// Pass descriptors 3..3+N on to the container process.
    pub preserve_fds: u32,
    /// Use MS_MOVE + chroot instead of pivot_root (for rootfs on ramfs).
    pub no_pivot: bool,
    /// Keep a reaper as the container process's parent, which records its exit status
    /// in the state directory ([`kcore_ns::NsCommand::exit_record`]), so that
    /// [`Container::wait`] returns it in a process that did not create the container
    /// (an agent restarted while the container ran). Without it the process is the
    /// caller's child, as a shim that reaps it itself (containerd's) expects.
    pub reaper: bool,
}

/// Options for [`Container::exec`].
#[derive(Debug, Default)]
pub struct ExecOptions {
    /// Unix socket that receives the pty master when the process asks for a terminal.
    pub console_socket: Option<PathBuf>,
    /// stdin for the process (default: inherited).
    pub stdin: Option<OwnedFd>,
    /// stdout for the process (default: inherited).
    pub stdout: Option<OwnedFd>,
    /// stderr for the process (default: inherited).
    pub stderr: Option<OwnedFd>,
    /// Pass descriptors 3..3+N on to the process.
    pub preserve_fds: u32,
}

/// A state root directory holding one directory per container.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
    launcher: Option<Launcher>,
}

/// A container, loaded from (and persisted to) its state directory.
///
/// A container created by this process also holds its init process as a child, so
/// [`Container::wait`] can return the exit status.
#[derive(Debug)]
pub struct Container {
    dir: PathBuf,
    saved: Saved,
    init: Option<Init>,
}

#[derive(Debug)]
struct Init {
    release: Option<JoinHandle<kcore_ns::Result<Child>>>,
    child: Option<Child>,
}

impl Init {
    /// Waits for the release thread (it ends when the process execs or dies).
    fn join(&mut self) -> Result<()> {
        if let Some(h) = self.release.take() {
            match h.join() {
                Ok(Ok(child)) => self.child = Some(child),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    return Err(Error::Sys {
                        op: "join release thread".into(),
                        source: std::io::Error::other("panicked"),
                    })
                }
            }
        }
        Ok(())
    }
}

fn ns_kind(t: LinuxNamespaceType) -> Namespace {
    match t {
        LinuxNamespaceType::Mount => Namespace::Mount,
        LinuxNamespaceType::Cgroup => Namespace::Cgroup,
        LinuxNamespaceType::Uts => Namespace::Uts,
        LinuxNamespaceType::Ipc => Namespace::Ipc,
        LinuxNamespaceType::User => Namespace::User,
        LinuxNamespaceType::Pid => Namespace::Pid,
        LinuxNamespaceType::Network => Namespace::Net,
        LinuxNamespaceType::Time => Namespace::Time,
    }
}

fn connect_console(path: &Path) -> Result<OwnedFd> {
    let s = std::os::unix::net::UnixStream::connect(path).map_err(|e| Error::Console {
        path: path.into(),
        message: format!("connect: {e}"),
    })?;
    Ok(OwnedFd::from(s))
}

fn hooks_of(spec: &Spec) -> HashMap<&'static str, Vec<Hook>> {
    let mut m = HashMap::new();
    if let Some(h) = spec.hooks() {
        #[allow(deprecated)]
        let prestart = h.prestart().clone();
        for (k, v) in [
            ("prestart", prestart),
            ("createRuntime", h.create_runtime().clone()),
            ("createContainer", h.create_container().clone()),
            ("startContainer", h.start_container().clone()),
            ("poststart", h.poststart().clone()),
            ("poststop", h.poststop().clone()),
        ] {
            m.insert(k, v.unwrap_or_default());
        }
    }
    m
}

impl Runtime {
    /// A runtime keeping state under `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Runtime {
            root: root.into(),
            launcher: None,
        }
    }

    /// Creates containers that have a reaper in `launcher`'s small server process
    /// instead of forking this one (see [`crate::launcher`]).
    pub fn with_launcher(mut self, launcher: Launcher) -> Self {
        self.launcher = Some(launcher);
        self
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Ids of the containers under the root.
    pub fn list(&self) -> Result<Vec<String>> {
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", &self.root, e)),
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(state::STATE_FILE).exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Loads an existing container.
    pub fn load(&self, id: &str) -> Result<Container> {
        state::validate_id(id)?;
        let dir = self.root.join(id);
        if !dir.join(state::STATE_FILE).exists() {
            return Err(Error::NotFound { id: id.into() });
        }
        let saved = Saved::load(&dir)?;
        Ok(Container {
            dir,
            saved,
            init: None,
        })
    }
}

fn state_json(saved: &Saved, status: Status) -> Vec<u8> {
    serde_json::to_vec(&saved.public(status)).unwrap_or_default()
}

impl Container {
    /// The container id.
    pub fn id(&self) -> &str {
        &self.saved.id
    }

    /// Host pid of the container process.
    pub fn pid(&self) -> i32 {
        self.saved.pid
    }

    /// The container's spec.
    pub fn spec(&self) -> &Spec {
        &self.saved.spec
    }

    /// The container's state directory.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// The cgroup, if the container has one.
    pub fn cgroup(&self) -> Result<Option<Cgroup>> {
        match &self.saved.cgroup {
            Some(p) => Ok(Some(Cgroup::new(Host::system()?, p)?)),
            None => Ok(None),
        }
    }

    /// Refreshes and returns the current status.
    pub fn status(&mut self) -> Status {
        let s = &self.saved;
        let now = if !state::alive(s.pid, s.pid_start) {
            Status::Stopped
        } else if s.status == Status::Creating {
            Status::Creating
        } else if self.dir.join(FIFO).exists() {
            Status::Created
        } else if s.status == Status::Paused {
            Status::Paused
        } else {
            Status::Running
        };
        if now != self.saved.status && now == Status::Stopped {
            self.saved.status = now;
            let _ = self.saved.save(&self.dir);
        }
        now
    }

    /// The runtime-spec state (status refreshed).
    pub fn state(&mut self) -> State {
        let st = self.status();
        self.saved.public(st)
    }

    fn guard(&mut self, op: &'static str, ok: fn(Status) -> bool) -> Result<Status> {
        let st = self.status();
        if ok(st) {
            Ok(st)
        } else {
            Err(Error::InvalidState {
                id: self.saved.id.clone(),
                op,
                status: st.to_string(),
            })
        }
    }
}

/// Writes `pid` to `path` atomically (as runc's `--pid-file`).
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("resolve", path, e))?
            .join(path)
    };
    kcore_statedir::write(&abs, pid.to_string().as_bytes(), 0o644)
        .map_err(|e| Error::io("write", &abs, e))
}
