//! `create` and `run`: a container from a spec and a bundle, up to `created` (or
//! straight to `running`).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use kcore_cgroup::{Cgroup, Host};
use kcore_ns::{Child, IdMap, Namespace, NamespaceSet, NsCommand};
use oci_spec::runtime::{Hook, LinuxDeviceType, LinuxNamespaceType, Spec};

use super::{
    connect_console, hooks_of, ns_kind, state_json, Container, CreateOptions, Init, Runtime,
};
use crate::cgroups;
use crate::error::{Error, Result};
use crate::hooks::run_hooks;
use crate::lsm::{LsmHost, LsmPlan};
use crate::mounts::{self, DevMode, DevicePlan, RootfsPlan};
use crate::process::{self, ProcessPlan};
use crate::seccomp;
use crate::state::{self, Saved, Status, FIFO};

const MSG_HOOKS: u8 = b'H';
const MSG_READY: u8 = b'R';

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

/// What a failed create leaves for cleanup.
#[derive(Default)]
struct Partial {
    pid: Option<i32>,
    cgroup: Option<Cgroup>,
    /// A resctrl group made for the container.
    rdt_group: Option<PathBuf>,
    /// The container's resctrl monitoring group.
    rdt_mon_group: Option<PathBuf>,
    release: Option<JoinHandle<kcore_ns::Result<Child>>>,
    /// Once the container exists (its state was saved): the `poststop` hooks and the
    /// `stopped` state they read, run after the teardown (runtime.md lifecycle steps
    /// 12-13, as runc's destroy does).
    poststop: Option<(Vec<Hook>, Vec<u8>)>,
}

impl Partial {
    fn cleanup(mut self, dir: &Path) {
        if let Some(pid) = self.pid {
            // SAFETY: pid is an unreaped child of ours (CLONE_PARENT) or of our reaper
            // (which waits in the release thread joined below), so it is not reused yet.
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
        if let Some(g) = &self.rdt_mon_group {
            let _ = crate::intelrdt::remove_group(g);
        }
        if let Some(g) = &self.rdt_group {
            let _ = crate::intelrdt::remove_group(g);
        }
        let _ = std::fs::remove_dir_all(dir);
        if let Some((hooks, json)) = &self.poststop {
            let _ = run_hooks("poststop", hooks, json);
        }
    }
}

impl Runtime {
    /// Creates a container from `spec` with its rootfs resolved against `bundle`.
    ///
    /// On return the container is [`Status::Created`]: its namespaces, mounts and
    /// cgroup exist and the `createRuntime`/`createContainer` hooks ran; the user
    /// program runs on [`Container::start`]. On failure nothing is left behind; a
    /// failure once the container exists (a `prestart`, `createRuntime` or
    /// `createContainer` hook, a mount) also runs the `poststop` hooks after the
    /// teardown, as the runtime spec's lifecycle asks.
    ///
    /// With a [`Launcher`](crate::Launcher) ([`Runtime::with_launcher`]) and [`CreateOptions::reaper`]
    /// set, the container is made by the launcher's small server process rather than
    /// by forking this one; it behaves the same.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        opts: CreateOptions,
    ) -> Result<Container> {
        let opts = match self.launch(id, bundle, spec, opts, false) {
            Ok(launched) => return launched,
            Err(opts) => opts,
        };
        self.create_or_run(id, bundle, spec, opts, false)
    }

    /// Creates the container in this runtime's [`Launcher`](crate::Launcher) when it has one and the
    /// options allow it (a reaper, no preserved descriptors), and loads it; gives the
    /// options back when it is to be created here.
    fn launch(
        &self,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        opts: CreateOptions,
        start_now: bool,
    ) -> std::result::Result<Result<Container>, CreateOptions> {
        match &self.launcher {
            Some(l) if opts.reaper && opts.preserve_fds == 0 => Ok(l
                .create(&self.root, id, bundle, spec, opts, start_now)
                .and_then(|()| self.load(id))),
            _ => Err(opts),
        }
    }

    /// Creates and starts a container in one step: the user program runs as soon as
    /// the container is set up, without the `exec.fifo` round trip of
    /// [`create`](Self::create) + [`Container::start`]. Hooks run in the same order
    /// (`poststart` once the program runs). Returns a [`Status::Running`] container
    /// whose process is this process's child, or its reaper's when the runtime has a
    /// [`Launcher`](crate::Launcher) (then [`Container::wait`] reads the reaper's record).
    pub fn run(
        &self,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        opts: CreateOptions,
    ) -> Result<Container> {
        let opts = match self.launch(id, bundle, spec, opts, true) {
            Ok(launched) => return launched,
            Err(opts) => opts,
        };
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
        let _span = tracing::info_span!("create", id).entered();
        let (bundle, rootfs, dir) = self.new_state_dir(id, bundle, spec)?;
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

    /// Checks `id` and `spec`, resolves the bundle and rootfs, and makes the
    /// container's state directory (an existing one is [`Error::Exists`]). Returns the
    /// bundle, the rootfs and the directory.
    pub(super) fn new_state_dir(
        &self,
        id: &str,
        bundle: &Path,
        spec: &Spec,
    ) -> Result<(PathBuf, PathBuf, PathBuf)> {
        state::validate_id(id)?;
        crate::spec::validate(spec)?;
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
        Ok((bundle, rootfs, dir))
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
        let (sync_parent, sync_child) = process::seqpacket_pair()?;

        // The process and its plan.
        let seccomp = linux.seccomp().as_ref().map(seccomp::compile).transpose()?;
        let plan = ProcessPlan::from_spec(proc_spec, seccomp)?;
        let lsm = LsmPlan::new(proc_spec, Some(linux), &LsmHost::system())?;
        // The resctrl mount is looked up (a read of the whole mountinfo) only for a
        // config that asks for Intel RDT.
        let rdt = match linux.intel_rdt() {
            Some(r) => {
                crate::intelrdt::plan(Some(r), crate::intelrdt::Resctrl::find().as_ref(), id)?
            }
            None => None,
        };
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

        // The runtime makes /dev unless the config binds one (runc's needsSetupDev).
        let setup_dev = mount_ns
            && !spec.mounts().iter().flatten().any(|m| {
                m.destination() == Path::new("/dev")
                    && (m.typ().as_deref() == Some("bind")
                        || m.options()
                            .iter()
                            .flatten()
                            .any(|o| o == "bind" || o == "rbind"))
            });
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
        if opts.reaper {
            let path = dir.join(state::EXIT_FILE);
            let record = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| Error::io("create", &path, e))?;
            cmd.exit_record(record);
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
            } else {
                // A session of its own, as runc's nsexec makes for every container
                // process: the caller's session is no part of the container (CRIU
                // refuses to dump a session whose leader is outside the container).
                // SAFETY: setsid takes no arguments; a fresh child is no group leader.
                if unsafe { libc::setsid() } < 0 {
                    return Err(process::os_err("setsid"));
                }
            }
            rootfs_plan.finish()?;
            if setup_dev {
                process::reopen_dev_null()?;
            }
            plan.check_program()?;
            lsm.apply(&crate::sys::Real)?;
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
        let (rdt_group, rdt_created) = match &rdt {
            Some(p) => {
                let created = p.apply(pid)?;
                partial.rdt_group = created.then(|| p.group.clone());
                partial.rdt_mon_group = p.mon_group.clone();
                (Some(p.group.clone()), created)
            }
            None => (None, false),
        };
        let rdt_mon_group = rdt.as_ref().and_then(|p| p.mon_group.clone());
        let pid_start = state::proc_stat(pid).map(|s| s.0).unwrap_or(0);
        let reaper = pending.reaper_pid().map(|r| {
            let start = state::proc_stat(r).map(|s| s.0).unwrap_or(0);
            (r, start)
        });
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
            rdt_group,
            rdt_mon_group,
            rdt_created,
            reaper,
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
            partial.rdt_group = None;
            partial.rdt_mon_group = None;
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
        partial.rdt_group = None;
        partial.rdt_mon_group = None;
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
