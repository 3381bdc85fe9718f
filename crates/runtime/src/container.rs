//! Containers: create, start, wait, kill, delete, exec, pause/resume, ps, stats.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kcore_cgroup::{Cgroup, Host};
use kcore_ns::{Child, ExitStatus, IdMap, Namespace, NamespaceSet, NsCommand};
use oci_spec::runtime::{Hook, LinuxDeviceType, LinuxNamespaceType, Process, Spec};

use crate::cgroups;
use crate::error::{Error, Result};
use crate::hooks::run_hooks;
use crate::lsm::{LsmHost, LsmPlan};
use crate::mounts::{self, DevMode, DevicePlan, RootfsPlan};
use crate::process::{self, ProcessPlan};
use crate::seccomp;
use crate::state::{self, Saved, State, Status, FIFO};

/// Default state root of `kcore-runc`.
pub const DEFAULT_ROOT: &str = "/run/kcore-runc";

const MSG_HOOKS: u8 = b'H';
const MSG_READY: u8 = b'R';

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
}

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

fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    let mut sv = [0; 2];
    // SAFETY: valid out array.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(Error::sys("socketpair"));
    }
    // SAFETY: fresh descriptors from the kernel.
    Ok(unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) })
}

fn connect_console(path: &Path) -> Result<OwnedFd> {
    let s = std::os::unix::net::UnixStream::connect(path).map_err(|e| Error::Console {
        path: path.into(),
        message: format!("connect: {e}"),
    })?;
    Ok(OwnedFd::from(s))
}

// Child-side helpers: raw syscalls only, no allocation-heavy work.
fn child_send(fd: RawFd, msg: &[u8]) -> std::result::Result<(), kcore_ns::SetupError> {
    // SAFETY: msg is a valid buffer.
    if unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) } < 0 {
        return Err(format!("sync with runtime: {}", std::io::Error::last_os_error()).into());
    }
    Ok(())
}

fn child_recv(fd: RawFd) -> std::result::Result<Vec<u8>, kcore_ns::SetupError> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // SAFETY: buf is a valid buffer.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 && process::errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return Err("runtime went away during setup".into());
        }
        buf.truncate(n as usize);
        return Ok(buf);
    }
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

/// What a failed create leaves for cleanup.
#[derive(Default)]
struct Partial {
    pid: Option<i32>,
    cgroup: Option<Cgroup>,
    release: Option<JoinHandle<kcore_ns::Result<Child>>>,
    /// Once the container exists (its state was saved): the `poststop` hooks and the
    /// `stopped` state they read, run after the teardown (runtime.md lifecycle steps
    /// 12-13, as runc's destroy does).
    poststop: Option<(Vec<Hook>, Vec<u8>)>,
}

impl Partial {
    fn cleanup(mut self, dir: &Path) {
        if let Some(pid) = self.pid {
            // SAFETY: pid is our unreaped child (CLONE_PARENT), so it cannot be reused yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            if let Some(h) = self.release.take() {
                if let Ok(Ok(mut child)) = h.join() {
                    let _ = child.wait();
                }
            }
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill();
            let _ = cg.delete();
        }
        let _ = std::fs::remove_dir_all(dir);
        if let Some((hooks, json)) = &self.poststop {
            let _ = run_hooks("poststop", hooks, json);
        }
    }
}

impl Runtime {
    /// A runtime keeping state under `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Runtime { root: root.into() }
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

    /// Creates a container from `spec` with its rootfs resolved against `bundle`.
    ///
    /// On return the container is [`Status::Created`]: its namespaces, mounts and
    /// cgroup exist and the `createRuntime`/`createContainer` hooks ran; the user
    /// program runs on [`Container::start`]. On failure nothing is left behind; a
    /// failure once the container exists (a `prestart`, `createRuntime` or
    /// `createContainer` hook, a mount) also runs the `poststop` hooks after the
    /// teardown, as the runtime spec's lifecycle asks.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        opts: CreateOptions,
    ) -> Result<Container> {
        self.create_or_run(id, bundle, spec, opts, false)
    }

    /// Creates and starts a container in one step: the user program runs as soon as
    /// the container is set up, without the `exec.fifo` round trip of
    /// [`create`](Self::create) + [`Container::start`]. Hooks run in the same order
    /// (`poststart` once the program runs). Returns a [`Status::Running`] container
    /// whose process is this process's child.
    pub fn run(
        &self,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        opts: CreateOptions,
    ) -> Result<Container> {
        let mut c = self.create_or_run(id, bundle, spec, opts, true)?;
        c.run_poststart();
        Ok(c)
    }

    fn create_or_run(
        &self,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        opts: CreateOptions,
        start_now: bool,
    ) -> Result<Container> {
        state::validate_id(id)?;
        crate::spec::validate(spec)?;
        let _span = tracing::info_span!("create", id).entered();
        let bundle =
            std::fs::canonicalize(bundle).map_err(|e| Error::io("open bundle", bundle, e))?;
        let root_cfg = spec.root().as_ref().expect("validated");
        let rootfs = bundle.join(root_cfg.path());
        let rootfs = match std::fs::canonicalize(&rootfs) {
            Ok(p) if p.is_dir() => p,
            _ => return Err(Error::RootfsMissing { path: rootfs }),
        };
        // the states hold each process's environment (Secret values too): root's only
        kcore_statedir::ensure_dir(&self.root, kcore_statedir::PRIVATE_DIR)
            .map_err(|e| Error::io("create", &self.root, e))?;
        let dir = self.root.join(id);
        match std::fs::DirBuilder::new()
            .mode(kcore_statedir::PRIVATE_DIR)
            .create(&dir)
        {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists { id: id.into() })
            }
            Err(e) => return Err(Error::io("create", &dir, e)),
        }
        let mut partial = Partial::default();
        match self.create_inner(
            id,
            &bundle,
            &rootfs,
            spec,
            opts,
            &dir,
            &mut partial,
            start_now,
        ) {
            Ok(c) => Ok(c),
            Err(e) => {
                partial.cleanup(&dir);
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create_inner(
        &self,
        id: &str,
        bundle: &Path,
        rootfs: &Path,
        spec: &Spec,
        mut opts: CreateOptions,
        dir: &Path,
        partial: &mut Partial,
        start_now: bool,
    ) -> Result<Container> {
        let linux = spec.linux().as_ref().expect("validated");
        let proc_spec = spec.process().as_ref().expect("validated");
        let hooks = hooks_of(spec);

        // exec.fifo: the container process blocks reading it until `start`.
        let fifo_fd: Option<OwnedFd> = if start_now {
            None
        } else {
            let fifo = dir.join(FIFO);
            let cfifo = mounts::cstr(&fifo).map_err(|e| Error::Sys {
                op: e.to_string(),
                source: std::io::Error::other("nul"),
            })?;
            // SAFETY: valid C string.
            if unsafe { libc::mkfifo(cfifo.as_ptr(), 0o600) } != 0 {
                return Err(Error::io("mkfifo", &fifo, std::io::Error::last_os_error()));
            }
            Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&fifo)
                    .map_err(|e| Error::io("open", &fifo, e))?
                    .into(),
            )
        };
        let (sync_parent, sync_child) = socketpair()?;

        // The process and its plan.
        let seccomp = linux.seccomp().as_ref().map(seccomp::compile).transpose()?;
        let plan = ProcessPlan::from_spec(proc_spec, seccomp)?;
        let lsm = LsmPlan::new(proc_spec, Some(linux), &LsmHost::system())?;
        let console = if plan.terminal {
            let path = opts
                .console_socket
                .as_deref()
                .ok_or_else(|| Error::Console {
                    path: PathBuf::new(),
                    message: "process.terminal is true but no console socket was given".into(),
                })?;
            Some(connect_console(path)?)
        } else {
            None
        };

        // Namespaces.
        let mut new = NamespaceSet::new();
        let mut joins = Vec::new();
        let mut userns = false;
        // New or joined; without one the container shares ours (see RootfsPlan::mount_ns).
        let mount_ns = linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::Mount);
        for ns in linux.namespaces().iter().flatten() {
            let kind = ns_kind(ns.typ());
            userns |= kind == Namespace::User;
            match ns.path() {
                Some(p) => joins.push((kind, p.clone())),
                None => {
                    new.insert(kind);
                }
            }
        }

        // cgroup.
        let host = Host::system()?;
        let cg_path = cgroups::cgroup_path(linux.cgroups_path().as_deref(), id);

        // Root filesystem plan.
        let mut devices = mounts::default_devices();
        let mut created_devs = Vec::new();
        for d in linux.devices().iter().flatten() {
            let kind = match d.typ() {
                LinuxDeviceType::B => libc::S_IFBLK,
                LinuxDeviceType::P => libc::S_IFIFO,
                _ => libc::S_IFCHR,
            };
            devices.retain(|x| x.path != *d.path());
            created_devs.push((
                if kind == libc::S_IFBLK { 'b' } else { 'c' },
                d.major(),
                d.minor(),
            ));
            devices.push(DevicePlan {
                path: d.path().clone(),
                kind,
                major: d.major() as u32,
                minor: d.minor() as u32,
                mode: d.file_mode().unwrap_or(0o666),
                uid: d.uid().unwrap_or(0),
                gid: d.gid().unwrap_or(0),
            });
        }
        let rootfs_plan = RootfsPlan {
            rootfs: rootfs.to_path_buf(),
            readonly: root_readonly(spec),
            propagation: linux
                .rootfs_propagation()
                .as_deref()
                .and_then(mounts::propagation_flag),
            mounts: {
                let mut m = mounts::plan(spec.mounts().as_deref().unwrap_or_default(), bundle);
                crate::lsm::label_mounts(&mut m, lsm.mount_label.as_deref());
                m
            },
            devices,
            dev_mode: if userns {
                DevMode::Bind
            } else {
                DevMode::Mknod
            },
            masked: linux
                .masked_paths()
                .iter()
                .flatten()
                .map(PathBuf::from)
                .collect(),
            readonly_paths: linux
                .readonly_paths()
                .iter()
                .flatten()
                .map(PathBuf::from)
                .collect(),
            no_pivot: opts.no_pivot,
            mount_ns,
            cgroup_dirs: cgroups::mount_dirs(host, &cg_path),
            sysctl: linux
                .sysctl()
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };

        let hook_sync = [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
        ]
        .iter()
        .any(|k| hooks.get(k).is_some_and(|v| !v.is_empty()));
        let create_container_hooks = hooks.get("createContainer").cloned().unwrap_or_default();
        let start_container_hooks = hooks.get("startContainer").cloned().unwrap_or_default();

        let mut cmd = NsCommand::new(&plan.args[0]);
        cmd.args(&plan.args[1..]).env_clear();
        for (k, v) in &plan.env {
            cmd.env(k, v);
        }
        // The cgroup namespace is unshared by the closure once the runtime has moved the
        // process into its cgroup, which happens while the process sets up its mounts.
        let new_cgroupns = new.contains(Namespace::Cgroup);
        let mut clone_set = new;
        clone_set.remove(Namespace::Cgroup);
        cmd.new_namespaces(clone_set);
        for (kind, path) in &joins {
            cmd.join(*kind, path);
        }
        let map = |v: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> Vec<IdMap> {
            v.iter()
                .flatten()
                .map(|m| IdMap::new(m.container_id(), m.host_id(), m.size()))
                .collect()
        };
        if new.contains(Namespace::User) {
            cmd.uid_map(map(linux.uid_mappings()));
            cmd.gid_map(map(linux.gid_mappings()));
        }
        if let Some(h) = spec.hostname().as_ref().filter(|h| !h.is_empty()) {
            cmd.hostname(h);
        }
        if let Some(d) = spec.domainname().as_ref().filter(|d| !d.is_empty()) {
            cmd.domainname(d);
        }
        if let Some(fd) = opts.stdin.take() {
            cmd.stdin(fd);
        }
        if let Some(fd) = opts.stdout.take() {
            cmd.stdout(fd);
        }
        if let Some(fd) = opts.stderr.take() {
            cmd.stderr(fd);
        }
        let sync_fd = sync_child.as_raw_fd();
        let fifo_raw = fifo_fd.as_ref().map_or(-1, |f| f.as_raw_fd());
        let console_raw = console.as_ref().map(|c| c.as_raw_fd());
        let preserve = opts.preserve_fds;
        // The cgroup exists (with its limits) before the process does; the process joins
        // it itself, first thing after release: writing 0 to a v1 `tasks` file moves only
        // the caller and skips the global lock (and RCU grace period) a `cgroup.procs`
        // write by another process takes.
        let cg_span = tracing::debug_span!("cgroup", path = %cg_path.display()).entered();
        let cg = Cgroup::create(host, &cg_path)?;
        partial.cgroup = Some(cg.clone());
        if let Some(r) = linux.resources() {
            let (res, ignored) = cgroups::resources(r, host.mode());
            if !ignored.is_empty() {
                tracing::warn!(?ignored, "resources not supported, ignored");
            }
            if !res.is_empty() {
                cg.set_resources(&res)?;
            }
            cgroups::apply_devices(
                host,
                &cg_path,
                r.devices().as_deref().unwrap_or_default(),
                &created_devs,
            )?;
        }
        drop(cg_span);
        // In a new user namespace the process is no longer privileged over the host's
        // cgroupfs: the runtime moves it instead, between spawn and release.
        let parent_attach = new.contains(Namespace::User);
        let attach = if parent_attach {
            Vec::new()
        } else {
            cgroups::self_attach_files(host, &cg_path)
        };
        cmd.setup(move || {
            for f in &attach {
                std::fs::write(f, "0").map_err(|e| format!("join cgroup {}: {e}", f.display()))?;
            }
            // SAFETY: plain syscall.
            if new_cgroupns && unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
                return Err(format!(
                    "unshare cgroup namespace: {}",
                    std::io::Error::last_os_error()
                )
                .into());
            }
            rootfs_plan.prepare()?;
            // The runtime answers MSG_HOOKS with the `creating` state (for
            // createContainer) and the `created` state (for startContainer), NUL-separated.
            let mut created_json = Vec::new();
            if hook_sync {
                child_send(sync_fd, &[MSG_HOOKS])?;
                let both = child_recv(sync_fd)?;
                let cut = both.iter().position(|&b| b == 0).unwrap_or(both.len());
                run_hooks("createContainer", &create_container_hooks, &both[..cut])?;
                created_json = both.get(cut + 1..).unwrap_or_default().to_vec();
            }
            rootfs_plan.switch_root()?;
            if let Some(c) = console_raw {
                // /dev/console is bound only in a mount namespace of our own.
                process::setup_console(c, plan.console_size, mount_ns)?;
                // SAFETY: closing our copy of the console socket.
                unsafe { libc::close(c) };
            }
            rootfs_plan.finish()?;
            plan.check_program()?;
            lsm.apply()?;
            plan.finalize()?;
            child_send(sync_fd, &[MSG_READY])?;
            let mut b = [0u8; 1];
            if fifo_raw >= 0 {
                loop {
                    // SAFETY: one-byte read into a valid buffer.
                    let n = unsafe { libc::read(fifo_raw, b.as_mut_ptr().cast(), 1) };
                    if n == 1 {
                        break;
                    }
                    if n < 0 && process::errno() == libc::EINTR {
                        continue;
                    }
                    return Err("exec fifo closed".into());
                }
                // SAFETY: closing our own descriptor.
                unsafe { libc::close(fifo_raw) };
            }
            // SAFETY: closing our own descriptor before exec.
            unsafe { libc::close(sync_fd) };
            run_hooks("startContainer", &start_container_hooks, &created_json)?;
            plan.last_step(preserve)?;
            Ok(())
        });

        // Until it is released, dropping `pending` (on any error below) kills and reaps
        // the process.
        let pending = cmd.spawn()?;
        let pid = pending.pid();
        if parent_attach {
            cg.add_process(pid as u32)?;
        }
        drop(sync_child);
        drop(fifo_fd);
        drop(console);
        if let Some(adj) = proc_spec.oom_score_adj() {
            let p = format!("/proc/{pid}/oom_score_adj");
            std::fs::write(&p, adj.to_string()).map_err(|e| Error::io("write", p, e))?;
        }
        let pid_start = state::proc_stat(pid).map(|s| s.0).unwrap_or(0);
        let mut saved = Saved {
            id: id.into(),
            status: Status::Creating,
            pid,
            pid_start,
            bundle: bundle.to_path_buf(),
            rootfs: rootfs.to_path_buf(),
            created: state::rfc3339(std::time::SystemTime::now()),
            cgroup: Some(cg_path.clone()),
            spec: spec.clone(),
        };
        saved.save(dir)?;
        if let Some(h) = hooks.get("poststop").filter(|h| !h.is_empty()) {
            partial.poststop = Some((h.clone(), state_json(&saved, Status::Stopped)));
        }
        let init_error = |e: kcore_ns::Error| match e {
            kcore_ns::Error::Child { message, errno, .. } => Error::Init {
                id: id.into(),
                message,
                errno,
            },
            e => e.into(),
        };
        if start_now && !hook_sync {
            // Nothing to do while the process sets up: release it from this thread; this
            // returns once it executed the program (or failed and was reaped).
            let res = pending.release();
            partial.pid = None;
            let child = res.map_err(init_error)?;
            saved.status = Status::Running;
            saved.save(dir)?;
            partial.cgroup = None;
            return Ok(Container {
                dir: dir.to_path_buf(),
                saved,
                init: Some(Init {
                    release: None,
                    child: Some(child),
                }),
            });
        }
        partial.pid = Some(pid);
        partial.release = Some(
            std::thread::Builder::new()
                .name(format!("kcore-release-{pid}"))
                .spawn(move || pending.release())
                .map_err(|e| Error::Sys {
                    op: "spawn release thread".into(),
                    source: e,
                })?,
        );
        let mut sock = std::fs::File::from(sync_parent);
        loop {
            let mut msg = [0u8; 16];
            let n = match sock.read(&mut msg) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Sys {
                        op: "read from container process".into(),
                        source: e,
                    })
                }
            };
            if n == 0 {
                // The process died or failed: the release thread has the error.
                let h = partial.release.take().expect("set above");
                partial.pid = None; // reaped by release on failure
                return Err(match h.join() {
                    Ok(Err(e)) => init_error(e),
                    Ok(Ok(mut child)) => {
                        let st = child.wait().ok();
                        Error::Init {
                            id: id.into(),
                            message: format!(
                                "container process exited during setup ({})",
                                st.map_or("unknown status".into(), |s| s.to_string())
                            ),
                            errno: None,
                        }
                    }
                    Err(_) => Error::Sys {
                        op: "join release thread".into(),
                        source: std::io::Error::other("panicked"),
                    },
                });
            }
            match msg[0] {
                MSG_HOOKS => {
                    // runc's choice where the spec leaves room: `creating` for
                    // prestart, createRuntime and createContainer (crun: `created`).
                    let mut json = state_json(&saved, Status::Creating);
                    run_hooks("prestart", &hooks["prestart"], &json)?;
                    run_hooks("createRuntime", &hooks["createRuntime"], &json)?;
                    json.push(0);
                    json.extend(state_json(&saved, Status::Created));
                    sock.write_all(&json).map_err(|e| Error::Sys {
                        op: "write to container process".into(),
                        source: e,
                    })?;
                }
                MSG_READY => break,
                other => {
                    return Err(Error::Init {
                        id: id.into(),
                        message: format!("unexpected sync message {other}"),
                        errno: None,
                    })
                }
            }
        }
        let mut init = Init {
            release: partial.release.take(),
            child: None,
        };
        if start_now {
            // The process runs its startContainer hooks and executes without waiting.
            let res = init.join();
            partial.pid = None;
            res.map_err(|e| match e {
                Error::Ns(e) => init_error(e),
                e => e,
            })?;
            saved.status = Status::Running;
        } else {
            saved.status = Status::Created;
        }
        saved.save(dir)?;
        partial.pid = None;
        partial.cgroup = None;
        Ok(Container {
            dir: dir.to_path_buf(),
            saved,
            init: Some(init),
        })
    }
}

fn root_readonly(spec: &Spec) -> bool {
    spec.root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
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

    /// Lets the user program run; then runs the `poststart` hooks.
    ///
    /// For a container created by this process, waits until the program was executed
    /// and reports a failure to do so (a `startContainer` hook, seccomp, exec). The
    /// container is then stopped; [`delete`](Self::delete) destroys it and runs the
    /// `poststop` hooks, as after `runc start` fails. A failing `poststart` hook is only
    /// logged.
    pub fn start(&mut self) -> Result<()> {
        let _span = tracing::info_span!("start", id = %self.saved.id).entered();
        self.guard("start", Status::can_start)?;
        let fifo = self.dir.join(FIFO);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&fifo)
            .map_err(|e| Error::io("open", &fifo, e))?;
        f.write_all(&[0])
            .map_err(|e| Error::io("write", &fifo, e))?;
        drop(f);
        let _ = std::fs::remove_file(&fifo);
        self.saved.status = Status::Running;
        self.saved.save(&self.dir)?;
        if let Some(init) = &mut self.init {
            if let Err(e) = init.join() {
                return Err(match e {
                    Error::Ns(kcore_ns::Error::Child { message, errno, .. }) => Error::Init {
                        id: self.saved.id.clone(),
                        message,
                        errno,
                    },
                    e => e,
                });
            }
        }
        self.run_poststart();
        Ok(())
    }

    /// Runs the poststart hooks; a failure is logged and the hooks after it still run,
    /// as the runtime spec asks.
    fn run_poststart(&mut self) {
        let hooks = hooks_of(&self.saved.spec);
        if let Some(h) = hooks.get("poststart").filter(|h| !h.is_empty()) {
            let json = state_json(&self.saved, Status::Running);
            let _ = run_hooks("poststart", h, &json);
        }
    }

    /// Waits for the container process to exit and returns its status.
    ///
    /// Only for containers created by this process (their init is our child).
    pub fn wait(&mut self) -> Result<ExitStatus> {
        let Some(init) = &mut self.init else {
            return Err(Error::InvalidState {
                id: self.saved.id.clone(),
                op: "wait for",
                status: "not a child of this process".into(),
            });
        };
        init.join()?;
        let child = init.child.as_mut().ok_or_else(|| Error::InvalidState {
            id: self.saved.id.clone(),
            op: "wait for",
            status: "already reaped".into(),
        })?;
        let st = child.wait()?;
        self.saved.status = Status::Stopped;
        self.saved.save(&self.dir)?;
        Ok(st)
    }

    /// Sends `signal` to the container process, or with `all` to every process in its cgroup.
    pub fn kill(&mut self, signal: i32, all: bool) -> Result<()> {
        let _span = tracing::debug_span!("kill", id = %self.saved.id, signal, all).entered();
        let st = self.guard("kill", Status::can_kill)?;
        if all {
            if let Some(cg) = self.cgroup()? {
                for pid in cg.procs_recursive()? {
                    // SAFETY: plain kill(2); the pid is in our cgroup.
                    unsafe { libc::kill(pid as i32, signal) };
                }
                if st == Status::Paused && signal == libc::SIGKILL {
                    cg.thaw()?;
                }
                return Ok(());
            }
        }
        let pidfd = kcore_ns::pidfd_open(self.saved.pid)?;
        // Re-check after taking the pidfd: the pid may have been reused before.
        if !state::alive(self.saved.pid, self.saved.pid_start) {
            return Err(Error::InvalidState {
                id: self.saved.id.clone(),
                op: "kill",
                status: Status::Stopped.to_string(),
            });
        }
        // SAFETY: valid pidfd; a null siginfo is allowed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc != 0 {
            return Err(Error::sys(format!("signal {signal} to {}", self.saved.pid)));
        }
        if st == Status::Paused && signal == libc::SIGKILL {
            if let Some(cg) = self.cgroup()? {
                cg.thaw()?;
            }
        }
        Ok(())
    }

    /// Waits (up to `timeout`) until the container process is gone.
    fn wait_gone(&mut self, timeout: Duration) -> Result<()> {
        if let Some(init) = &mut self.init {
            init.join()?;
            if let Some(c) = &mut init.child {
                c.wait()?;
            }
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let pidfd = kcore_ns::pidfd_open(self.saved.pid).ok();
        while state::alive(self.saved.pid, self.saved.pid_start) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Sys {
                    op: format!("wait for container process {}", self.saved.pid),
                    source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                });
            }
            match &pidfd {
                Some(fd) => {
                    let mut p = libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, left.as_millis().min(100) as i32) };
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        Ok(())
    }

    /// Deletes the container: its processes (with `force`, or when it never started),
    /// cgroup and state directory; then runs the `poststop` hooks.
    pub fn delete(mut self, force: bool) -> Result<()> {
        let _span = tracing::info_span!("delete", id = %self.saved.id, force).entered();
        let st = self.status();
        if !st.can_delete() && !force {
            return Err(Error::InvalidState {
                id: self.saved.id.clone(),
                op: "delete",
                status: st.to_string(),
            });
        }
        let cg = self.cgroup()?;
        if st != Status::Stopped {
            match &cg {
                Some(cg) if cg.exists() => cg.kill()?,
                _ => {
                    // SAFETY: plain kill(2) of the live container process.
                    unsafe { libc::kill(self.saved.pid, libc::SIGKILL) };
                }
            }
        }
        self.wait_gone(Duration::from_secs(10))?;
        if let Some(cg) = &cg {
            if cg.exists() {
                if !cg.procs_recursive()?.is_empty() {
                    cg.kill()?;
                }
                cg.delete()?;
            }
        }
        let hooks = hooks_of(&self.saved.spec);
        let json = state_json(&self.saved, Status::Stopped);
        std::fs::remove_dir_all(&self.dir).map_err(|e| Error::io("remove", &self.dir, e))?;
        if let Some(h) = hooks.get("poststop") {
            // Failures are logged; the delete succeeded.
            let _ = run_hooks("poststop", h, &json);
        }
        Ok(())
    }

    /// Freezes every process of the container.
    pub fn pause(&mut self) -> Result<()> {
        self.guard("pause", Status::can_pause)?;
        let cg = self.cgroup()?.ok_or_else(|| Error::InvalidState {
            id: self.saved.id.clone(),
            op: "pause",
            status: "without a cgroup".into(),
        })?;
        cg.freeze()?;
        self.saved.status = Status::Paused;
        self.saved.save(&self.dir)
    }

    /// Thaws a paused container.
    pub fn resume(&mut self) -> Result<()> {
        self.guard("resume", Status::can_resume)?;
        if let Some(cg) = self.cgroup()? {
            cg.thaw()?;
        }
        self.saved.status = Status::Running;
        self.saved.save(&self.dir)
    }

    /// Host pids of every process in the container's cgroup.
    pub fn processes(&self) -> Result<Vec<i32>> {
        match self.cgroup()? {
            Some(cg) => Ok(cg
                .procs_recursive()?
                .into_iter()
                .map(|p| p as i32)
                .collect()),
            None => Ok(vec![self.saved.pid]),
        }
    }

    /// cgroup statistics.
    pub fn stats(&self) -> Result<kcore_cgroup::Stats> {
        match self.cgroup()? {
            Some(cg) => Ok(cg.stats()?),
            None => Ok(kcore_cgroup::Stats::default()),
        }
    }

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
            }
            plan.check_program()?;
            lsm.apply()?;
            plan.finalize()?;
            plan.last_step(preserve)?;
            Ok(())
        });
        let pending = cmd.spawn()?;
        drop(console);
        if let Some(cg) = self.cgroup()? {
            cg.add_process(pending.pid() as u32)?;
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
