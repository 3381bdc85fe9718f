//! `kcore run`: one program in new namespaces, inside a cgroup with limits, on an
//! overlay root file system.
//!
//! The root file system is a stack in a [`LayerStore`]: a read-only base layer made
//! once from the host's static busybox (`/bin/busybox`, Debian's `busybox-static`),
//! plus a fresh writable layer for each run, removed afterwards. The program runs as
//! PID 1 of new pid, mount, uts, ipc, cgroup and (by default) network namespaces, in
//! its own cgroup with the requested limits; on exit the cgroup, the mount and the
//! writable layer are removed again, also when something fails half-way.

use std::ffi::OsString;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};
use kcore_cgroup::{Cgroup, Host, Resources};
use kcore_node::ErrorChain;
use kcore_ns::mount::{self, DevNodes, MountFlags, Propagation};
use kcore_ns::{ExitStatus, Namespace, NamespaceSet, NsCommand};
use kcore_overlay::{LayerStore, MountOptions};

/// Where `kcore run` keeps its layer store unless told otherwise.
pub const DEFAULT_STORE: &str = "/var/lib/kcore/overlay";

/// The static busybox used for the base layer unless told otherwise.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// What to run and how to confine it.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Layer store directory.
    pub store: PathBuf,
    /// Static busybox binary the base layer is made from.
    pub busybox: PathBuf,
    /// Program and arguments; the program is looked up in the container's `PATH`.
    pub command: Vec<OsString>,
    /// Hostname inside the container.
    pub hostname: String,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Most processes (and threads) the container may have.
    pub pids: Option<i64>,
    /// CPU bandwidth in CPUs (e.g. 0.5 = half of one CPU).
    pub cpus: Option<f64>,
    /// Give the container its own network namespace (only `lo`, brought up).
    pub new_network: bool,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl RunOptions {
    /// Options with the defaults: own network namespace, hostname `kcore`, no limits.
    pub fn new(command: Vec<OsString>) -> RunOptions {
        RunOptions {
            store: PathBuf::from(DEFAULT_STORE),
            busybox: PathBuf::from(DEFAULT_BUSYBOX),
            command,
            hostname: "kcore".to_string(),
            memory: None,
            pids: None,
            cpus: None,
            new_network: true,
            env: Vec::new(),
        }
    }

    fn resources(&self) -> Result<Resources> {
        let mut res = Resources::default();
        if let Some(bytes) = self.memory {
            res.memory.limit = Some(i64::try_from(bytes).context("memory limit is too large")?);
        }
        res.pids.max = self.pids;
        if let Some(cpus) = self.cpus {
            if !(cpus > 0.0 && cpus.is_finite()) {
                bail!("--cpus must be a positive number, got {cpus}");
            }
            const PERIOD: u64 = 100_000;
            res.cpu.period = Some(PERIOD);
            res.cpu.quota = Some(((cpus * PERIOD as f64).round() as i64).max(1000));
        }
        Ok(res)
    }
}

/// Makes (once) the read-only base layer holding a busybox root file system and
/// returns its layer id.
///
/// The layer id is derived from the busybox binary's inode, size and mtime, so a
/// new busybox gets a new base layer. A layer left half-made by a crash is remade.
#[tracing::instrument(skip(store))]
pub fn ensure_busybox_layer(store: &LayerStore, busybox: &Path) -> Result<String> {
    let meta = std::fs::metadata(busybox).with_context(|| {
        format!(
            "cannot use {} for the root file system (install Debian's busybox-static)",
            busybox.display()
        )
    })?;
    let id = format!(
        "busybox-{:x}-{:x}-{:x}",
        meta.ino(),
        meta.size(),
        meta.mtime()
    );
    if store.exists(&id)? {
        let diff = store.diff_path(&id)?;
        // `bin/sh` is the last thing written: without it the layer is incomplete.
        if diff.join("bin/sh").symlink_metadata().is_ok() {
            return Ok(id);
        }
        store.remove(&id)?;
    }
    let layer = store.create(&id, None)?;
    let diff = layer.diff_path();
    if let Err(e) = populate_busybox_rootfs(&diff, busybox) {
        let _ = store.remove(&id);
        return Err(e.context(format!("building base layer {id}")));
    }
    Ok(id)
}

fn populate_busybox_rootfs(diff: &Path, busybox: &Path) -> Result<()> {
    let mkdir = |rel: &str| {
        let p = diff.join(rel);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))
    };
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "var",
        "run",
    ] {
        mkdir(dir)?;
    }
    std::fs::copy(busybox, diff.join("bin/busybox"))
        .with_context(|| format!("copying {}", busybox.display()))?;
    let write = |rel: &str, text: &str| {
        let p = diff.join(rel);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    write("etc/group", "root:x:0:\nnogroup:x:65534:\n")?;
    write("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n")?;
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .with_context(|| format!("running {} --list-full", busybox.display()))?;
    if !out.status.success() {
        bail!("{} --list-full failed: {}", busybox.display(), out.status);
    }
    let applets = String::from_utf8_lossy(&out.stdout);
    for rel in applets.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if rel.contains("..") || rel.starts_with('/') || rel == "bin/busybox" || rel == "bin/sh" {
            continue;
        }
        let link = diff.join(rel);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if link.symlink_metadata().is_err() {
            symlink("/bin/busybox", &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    symlink("/bin/busybox", diff.join("bin/sh")).context("linking bin/sh")?;
    Ok(())
}

/// Removes what a run made, in reverse order, even on failure.
struct RunGuard<'a> {
    store: &'a LayerStore,
    layer: String,
    cgroup: Option<Cgroup>,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.kill().and_then(|()| cg.delete()) {
                tracing::warn!(error = %ErrorChain(&e), "removing cgroup");
            }
        }
        if let Err(e) = self.store.unmount(&self.layer) {
            tracing::warn!(error = %ErrorChain(&e), layer = %self.layer, "unmounting container layer");
        }
        if let Err(e) = self.store.remove(&self.layer) {
            tracing::warn!(error = %ErrorChain(&e), layer = %self.layer, "removing container layer");
        }
    }
}

/// Runs the program and returns how it ended; everything the run made is removed.
#[tracing::instrument(skip_all, fields(command = ?opts.command))]
pub fn run(opts: &RunOptions) -> Result<ExitStatus> {
    let Some(program) = opts.command.first() else {
        bail!("no command given");
    };
    let resources = opts.resources()?;
    // in kcored's data directory by default: what this creates is root's only
    kcore_statedir::ensure_dir(&opts.store, kcore_statedir::PRIVATE_DIR)
        .with_context(|| format!("creating layer store {}", opts.store.display()))?;
    let store = LayerStore::open(&opts.store)?;
    let base = ensure_busybox_layer(&store, &opts.busybox)?;

    static RUNS: AtomicU32 = AtomicU32::new(0);
    let id = format!(
        "run-{}-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    store.create(&id, Some(&base))?;
    let mut guard = RunGuard {
        store: &store,
        layer: id.clone(),
        cgroup: None,
    };
    let rootfs = store.mount(&id, &MountOptions::new())?;

    let host = Host::detect().context("detecting cgroup hierarchies")?;
    let cgroup = Cgroup::create(&host, format!("kcore-{id}"))?;
    guard.cgroup = Some(cgroup.clone());
    cgroup.set_resources(&resources)?;

    let mut namespaces = NamespaceSet::new();
    for ns in [
        Namespace::Pid,
        Namespace::Mount,
        Namespace::Uts,
        Namespace::Ipc,
        Namespace::Cgroup,
    ] {
        namespaces = namespaces | ns;
    }
    if opts.new_network {
        namespaces = namespaces | Namespace::Net;
    }

    let mut cmd = NsCommand::new(program);
    cmd.args(&opts.command[1..])
        .new_namespaces(namespaces)
        .hostname(opts.hostname.clone())
        .env_clear()
        .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
        .env("HOME", "/root")
        .env("HOSTNAME", &opts.hostname)
        .current_dir("/");
    if let Some(term) = std::env::var_os("TERM") {
        cmd.env("TERM", term);
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    let new_network = opts.new_network;
    let root = rootfs.clone();
    cmd.setup(move || {
        enter_rootfs(&root, new_network)?;
        Ok(())
    });

    let pending = cmd.spawn().context("creating the container process")?;
    let pid = u32::try_from(pending.pid()).context("child pid")?;
    cgroup.add_process(pid)?;
    tracing::info!(pid, rootfs = %rootfs.display(), cgroup = %cgroup.path().display(), "container started");
    let mut child = pending.release().context("starting the container")?;
    let status = child.wait().context("waiting for the container")?;
    tracing::info!(?status, "container exited");
    drop(guard);
    Ok(status)
}

/// In the container's new mount namespace: keep mounts from leaking back to the host,
/// give the new root its /proc, /sys, /dev and /tmp, and pivot into it.
fn enter_rootfs(root: &Path, new_network: bool) -> Result<(), kcore_ns::Error> {
    mount::set_propagation(Path::new("/"), Propagation::Private, true)?;
    mount::mount_proc(&root.join("proc"))?;
    if new_network {
        // sysfs shows the network namespace of whoever mounts it; only ours is safe.
        mount::mount_sysfs(&root.join("sys"), true)?;
    }
    mount::setup_dev(&root.join("dev"), &DevNodes::Mknod)?;
    mount::mount_tmpfs(
        &root.join("tmp"),
        MountFlags {
            nosuid: true,
            nodev: true,
            ..MountFlags::NONE
        },
        Some("mode=1777"),
    )?;
    mount::pivot_root(root)?;
    if new_network {
        kcore_ns::netns::loopback_up()?;
    }
    Ok(())
}
