//! `checkpoint` and `restore` with CRIU, following runc's `criu_linux.go`:
//!
//! - dump: the container's rootfs as CRIU's root; bind mounts, masked files (bound
//!   from `/dev/null`), device nodes and, on cgroup v1 without a cgroup namespace, the
//!   per-controller cgroup binds as external mounts; joined network and PID
//!   namespaces as external namespaces (`net[<inode>]:extRootNetNS`); the cgroup
//!   freezer to stop the tasks; `descriptors.json` in the image directory (what the
//!   process's stdio pointed at, so a restore can hand pipes back); a `pre-dump` with
//!   memory tracking (checked with a feature request first) and `--parent-path`;
//! - restore: the rootfs bind-mounted on `<state>/criu-root` (CRIU's root must be a
//!   mount point), mount points made inside it through the rootfs fd and bind mounts
//!   applied for the time of the restore, external mounts mapped to their sources,
//!   the container's new cgroup (with its limits) as CRIU's cgroup root, joined
//!   namespaces passed by path or descriptor, pipes of `descriptors.json` inherited
//!   from the caller's stdio, the restored task a sibling of criu (so this process's
//!   child), `prestart`/`createRuntime` hooks on `setup-namespaces`, and the pty
//!   master of a terminal container (`orphan-pts-master`) sent to the console socket.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use kcore_cgroup::{Cgroup, CgroupMode, Controller, Host};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::{hooks_of, state_json, Container, Runtime};
use crate::cgroups;
use crate::criu::{rpc, Criu, CriuVersion};
use crate::error::{Error, Result};
use crate::hooks::run_hooks;
use crate::state::{self, Saved, Status};

/// The file in the image directory listing what descriptors 0-2 of the container
/// process pointed at (runc's name and format: a JSON array of `readlink` strings).
pub const DESCRIPTORS_FILE: &str = "descriptors.json";

/// The annotation naming a CRIU configuration file (empty: none); without it CRIU
/// reads `/etc/criu/runc.conf`, as with runc.
const CRIU_CONFIG_ANNOTATION: &str = "org.criu.config";

/// How CRIU treats the container's cgroups (`--manage-cgroups-mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CgroupsMode {
    /// CRIU's default (`soft`).
    #[default]
    Default,
    /// Restore the cgroup properties where the cgroup did not exist.
    Soft,
    /// Restore every property, creating the cgroups.
    Full,
    /// Like `full`, and fail when a cgroup exists already.
    Strict,
    /// Leave cgroups alone.
    Ignore,
}

impl std::str::FromStr for CgroupsMode {
    type Err = Error;

    /// runc's names: `soft`, `full`, `strict`, `ignore` (empty: the default).
    fn from_str(s: &str) -> Result<CgroupsMode> {
        Ok(match s {
            "" => CgroupsMode::Default,
            "soft" => CgroupsMode::Soft,
            "full" => CgroupsMode::Full,
            "strict" => CgroupsMode::Strict,
            "ignore" => CgroupsMode::Ignore,
            _ => {
                return Err(Error::CheckpointOption {
                    option: "--manage-cgroups-mode",
                    message: "invalid manage-cgroups-mode value".into(),
                })
            }
        })
    }
}

impl CgroupsMode {
    fn rpc(self) -> i32 {
        (match self {
            CgroupsMode::Default => rpc::CgMode::Default,
            CgroupsMode::Soft => rpc::CgMode::Soft,
            CgroupsMode::Full => rpc::CgMode::Full,
            CgroupsMode::Strict => rpc::CgMode::Strict,
            CgroupsMode::Ignore => rpc::CgMode::Ignore,
        }) as i32
    }
}

/// The options both `checkpoint` and `restore` take (runc's flag names).
#[derive(Debug, Clone)]
pub struct CriuOptions {
    /// The CRIU binary (`criu` on `PATH` by default).
    pub criu: PathBuf,
    /// Directory of the image files (`--image-path`).
    pub image_path: PathBuf,
    /// Directory for CRIU's work files and log (`--work-path`; default: the images).
    pub work_path: Option<PathBuf>,
    /// Allow open TCP connections (`--tcp-established`).
    pub tcp_established: bool,
    /// Allow external unix sockets (`--ext-unix-sk`).
    pub ext_unix_sk: bool,
    /// Allow shell jobs (`--shell-job`).
    pub shell_job: bool,
    /// Handle file locks (`--file-locks`).
    pub file_locks: bool,
    /// cgroups mode (`--manage-cgroups-mode`).
    pub manage_cgroups_mode: CgroupsMode,
    /// Namespaces (`CLONE_NEW*` bits) made empty instead of restored (`--empty-ns`);
    /// runc always includes the network namespace.
    pub empty_ns: u32,
    /// Deduplicate memory images (`--auto-dedup`).
    pub auto_dedup: bool,
    /// Restore memory lazily through userfaultfd (`--lazy-pages`).
    pub lazy_pages: bool,
}

impl CriuOptions {
    /// runc's defaults for images at `image_path`: `criu` from `PATH`, the network
    /// namespace left empty, nothing else enabled.
    pub fn new(image_path: impl Into<PathBuf>) -> CriuOptions {
        CriuOptions {
            criu: PathBuf::from("criu"),
            image_path: image_path.into(),
            work_path: None,
            tcp_established: false,
            ext_unix_sk: false,
            shell_job: false,
            file_locks: false,
            manage_cgroups_mode: CgroupsMode::Default,
            empty_ns: libc::CLONE_NEWNET as u32,
            auto_dedup: false,
            lazy_pages: false,
        }
    }
}

/// Options for [`Container::checkpoint`].
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    /// What `checkpoint` and `restore` share.
    pub criu: CriuOptions,
    /// Previous images for an incremental dump, relative to the image path
    /// (`--parent-path`); turns on memory tracking.
    pub parent_path: Option<PathBuf>,
    /// Keep the container running after the dump (`--leave-running`).
    pub leave_running: bool,
    /// Skip in-flight TCP connections (`--tcp-skip-in-flight`).
    pub tcp_skip_in_flight: bool,
    /// Link unlinked files back (`--link-remap`).
    pub link_remap: bool,
    /// Dump memory only and leave the container running (`--pre-dump`).
    pub pre_dump: bool,
    /// `ADDRESS:PORT` of a page server (`--page-server`).
    pub page_server: Option<(String, i32)>,
    /// Descriptor criu writes `\0` to once lazy pages are served (`--status-fd`).
    pub status_fd: Option<i32>,
}

/// Options for [`Runtime::restore`].
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// What `checkpoint` and `restore` share.
    pub criu: CriuOptions,
    /// Socket that receives the pty master of a terminal container (`--console-socket`).
    pub console_socket: Option<PathBuf>,
    /// LSM profile for the restored process, `TYPE:NAME` (`--lsm-profile`).
    pub lsm_profile: Option<String>,
    /// LSM mount context (`--lsm-mount-context`).
    pub lsm_mount_context: Option<String>,
}

/// What a dump request is made of besides the options: read from the container and
/// the host by [`Container::checkpoint`], given directly by the unit tests.
#[derive(Debug, Clone, Default)]
pub(crate) struct DumpInput {
    pub pid: i32,
    pub rootfs: PathBuf,
    pub images_fd: i32,
    pub work_fd: Option<i32>,
    /// The cgroup freezer directory of the container.
    pub freeze_cgroup: Option<String>,
    /// `net[<inode>]:extRootNetNS`-style entries of joined namespaces.
    pub external: Vec<String>,
    /// Masked paths that are files (bound from `/dev/null`).
    pub masked_files: Vec<String>,
    /// cgroup v1 per-controller binds (name, host directory) under a `cgroup` mount;
    /// empty on v2 or with a cgroup namespace.
    pub cgroup_binds: Vec<(String, PathBuf)>,
}

/// The devices runc treats as external mounts: the config's and the default ones.
fn device_paths(spec: &Spec) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = [
        "/dev/null",
        "/dev/random",
        "/dev/full",
        "/dev/tty",
        "/dev/zero",
        "/dev/urandom",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for d in spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default()
    {
        if !out.contains(d.path()) {
            out.push(d.path().clone());
        }
    }
    out
}

fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// `dest` as CRIU sees it inside `rootfs`: symlinks in the rootfs resolved within it
/// (runc's `SecureJoin`), the destination as given when it cannot be resolved.
fn in_rootfs(rootfs: &Path, dest: &Path) -> String {
    let resolved = (|| {
        let root = kcore_rootfd::open_root(rootfs).ok()?;
        let fd = kcore_rootfd::open_in(
            &root,
            dest,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        )
        .ok()?;
        let full = std::fs::read_link(kcore_rootfd::proc_fd_path(&fd)).ok()?;
        let real_root = std::fs::canonicalize(rootfs).ok()?;
        let rel = full.strip_prefix(&real_root).ok()?;
        Some(Path::new("/").join(rel))
    })();
    resolved
        .unwrap_or_else(|| Path::new("/").join(dest.strip_prefix("/").unwrap_or(dest)))
        .display()
        .to_string()
}

fn ext_mnt(key: String, val: String) -> rpc::ExtMountMap {
    rpc::ExtMountMap { key, val }
}

fn config_file(spec: &Spec) -> Option<String> {
    match spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(CRIU_CONFIG_ANNOTATION))
    {
        Some(f) if f.is_empty() => None,
        Some(f) => Some(f.clone()),
        None => Some("/etc/criu/runc.conf".into()),
    }
}

/// The options both requests set, as runc sets them.
fn common_opts(o: &CriuOptions, spec: &Spec, images_fd: i32, work_fd: Option<i32>) -> rpc::Opts {
    rpc::Opts {
        images_dir_fd: images_fd,
        work_dir_fd: work_fd,
        log_level: Some(4),
        manage_cgroups: Some(true),
        manage_cgroups_mode: Some(o.manage_cgroups_mode.rpc()),
        notify_scripts: Some(true),
        shell_job: Some(o.shell_job),
        tcp_established: Some(o.tcp_established),
        ext_unix_sk: Some(o.ext_unix_sk),
        file_locks: Some(o.file_locks),
        empty_ns: Some(o.empty_ns),
        orphan_pts_master: Some(true),
        auto_dedup: Some(o.auto_dedup),
        lazy_pages: Some(o.lazy_pages),
        config_file: config_file(spec),
        ..Default::default()
    }
}

/// The `criu_opts` of a dump (or pre-dump) of a container with `spec`.
pub(crate) fn dump_opts(spec: &Spec, input: &DumpInput, o: &CheckpointOptions) -> rpc::Opts {
    let mut r = common_opts(&o.criu, spec, input.images_fd, input.work_fd);
    r.log_file = Some("dump.log".into());
    r.root = Some(input.rootfs.display().to_string());
    r.pid = Some(input.pid);
    r.leave_running = Some(o.leave_running);
    r.tcp_skip_in_flight = Some(o.tcp_skip_in_flight);
    r.link_remap = Some(o.link_remap);
    r.external = input.external.clone();
    r.freeze_cgroup = input.freeze_cgroup.clone();
    if let Some((addr, port)) = &o.page_server {
        r.ps = Some(rpc::PageServerInfo {
            address: Some(addr.clone()),
            port: Some(*port),
            pid: None,
            fd: None,
        });
    }
    if let Some(p) = &o.parent_path {
        r.parent_img = Some(p.display().to_string());
        r.track_mem = Some(true);
    }
    if o.criu.lazy_pages {
        r.status_fd = o.status_fd;
    }
    if o.pre_dump {
        // No need for mounts and descriptors in a pre-dump.
        return r;
    }
    let rootfs = &input.rootfs;
    for m in spec.mounts().iter().flatten() {
        if is_bind(m) {
            let d = in_rootfs(rootfs, m.destination());
            r.ext_mnt.push(ext_mnt(d.clone(), d));
        } else if m.typ().as_deref() == Some("cgroup") {
            for (name, _) in &input.cgroup_binds {
                let d = in_rootfs(rootfs, &m.destination().join(name));
                r.ext_mnt.push(ext_mnt(d.clone(), d));
            }
        }
    }
    for p in &input.masked_files {
        r.ext_mnt.push(ext_mnt(p.clone(), "/dev/null".into()));
    }
    for d in device_paths(spec) {
        let d = in_rootfs(rootfs, &d);
        r.ext_mnt.push(ext_mnt(d.clone(), d));
    }
    r
}

/// What a restore request is made of besides the options.
#[derive(Debug, Clone, Default)]
pub(crate) struct RestoreInput {
    /// The rootfs (mount points are resolved in it).
    pub rootfs: PathBuf,
    /// Where the rootfs is bind-mounted for CRIU.
    pub criu_root: PathBuf,
    /// The bundle (relative bind sources are taken from it).
    pub bundle: PathBuf,
    pub images_fd: i32,
    pub work_fd: Option<i32>,
    /// `descriptors.json` of the images.
    pub descriptors: Vec<String>,
    /// cgroup v1 binds as in [`DumpInput::cgroup_binds`].
    pub cgroup_binds: Vec<(String, PathBuf)>,
    /// The descriptor number (in criu) of each joined network or PID namespace.
    pub ns_fds: Vec<(LinuxNamespaceType, i32)>,
}

fn ns_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// `extRoot<Type>NS`, the key runc gives an external namespace.
fn ns_key(t: LinuxNamespaceType) -> String {
    let n = ns_name(t);
    format!("extRoot{}{}NS", n[..1].to_ascii_uppercase(), &n[1..])
}

fn joined(spec: &Spec) -> Vec<(LinuxNamespaceType, PathBuf)> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.path().clone().map(|p| (n.typ(), p)))
        .collect()
}

/// The `criu_opts` of a restore of a container with `spec`.
pub(crate) fn restore_opts(
    spec: &Spec,
    input: &RestoreInput,
    o: &RestoreOptions,
) -> Result<rpc::Opts> {
    let mut r = common_opts(&o.criu, spec, input.images_fd, input.work_fd);
    r.log_file = Some("restore.log".into());
    r.evasive_devices = Some(true);
    r.rst_sibling = Some(true);
    r.root = Some(input.criu_root.display().to_string());
    r.lsm_profile = o.lsm_profile.clone();
    r.lsm_mount_context = o.lsm_mount_context.clone();
    for (t, path) in joined(spec) {
        match t {
            LinuxNamespaceType::Network | LinuxNamespaceType::Pid => {
                let fd = input
                    .ns_fds
                    .iter()
                    .find(|(k, _)| *k == t)
                    .map(|(_, fd)| *fd)
                    .expect("an fd for each joined network or PID namespace");
                r.inherit_fd.push(rpc::InheritFd { key: ns_key(t), fd });
            }
            LinuxNamespaceType::Cgroup => {
                return Err(Error::CheckpointOption {
                    option: "linux.namespaces",
                    message: "CRIU cannot restore into a joined cgroup namespace".into(),
                })
            }
            _ => r.join_ns.push(rpc::JoinNamespace {
                ns: ns_name(t).into(),
                ns_file: path.display().to_string(),
                extra_opt: None,
            }),
        }
    }
    let rootfs = &input.rootfs;
    for m in spec.mounts().iter().flatten() {
        if is_bind(m) {
            let src = m.source().clone().unwrap_or_default();
            let src = if src.is_relative() {
                input.bundle.join(src)
            } else {
                src
            };
            r.ext_mnt.push(ext_mnt(
                in_rootfs(rootfs, m.destination()),
                src.display().to_string(),
            ));
        } else if m.typ().as_deref() == Some("cgroup") {
            for (name, host_dir) in &input.cgroup_binds {
                r.ext_mnt.push(ext_mnt(
                    in_rootfs(rootfs, &m.destination().join(name)),
                    host_dir.display().to_string(),
                ));
            }
        }
    }
    let masked = spec
        .linux()
        .as_ref()
        .and_then(|l| l.masked_paths().clone())
        .is_some_and(|m| !m.is_empty());
    if masked {
        r.ext_mnt
            .push(ext_mnt("/dev/null".into(), "/dev/null".into()));
    }
    for d in device_paths(spec) {
        r.ext_mnt
            .push(ext_mnt(in_rootfs(rootfs, &d), d.display().to_string()));
    }
    for (i, d) in input.descriptors.iter().enumerate() {
        if d.contains("pipe:") {
            r.inherit_fd.push(rpc::InheritFd {
                key: d.clone(),
                fd: i as i32,
            });
        }
    }
    Ok(r)
}

/// The cgroup v1 binds under a `cgroup` mount of a container in `cg_path`, as runc's
/// `getCgroupMounts`: none on v2 or with a cgroup namespace.
fn cgroup_binds(host: &Host, cg_path: &Path, spec: &Spec) -> Vec<(String, PathBuf)> {
    let cgroupns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Cgroup);
    if host.mode() == CgroupMode::V2 || cgroupns {
        Vec::new()
    } else {
        cgroups::mount_dirs(host, cg_path)
    }
}

fn open_dir(p: &Path) -> Result<OwnedFd> {
    std::fs::File::open(p)
        .map(OwnedFd::from)
        .map_err(|e| Error::io("open", p, e))
}

fn mkdir_private(p: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("create", p, e)),
    }
}

/// Logs the error lines of CRIU's log and names the log in `e`.
fn with_log(e: Error, log: PathBuf) -> Error {
    let lines = crate::criu::log_errors(&log);
    if !lines.is_empty() {
        tracing::warn!(log = %log.display(), "--- quoting the criu log");
        for l in &lines {
            tracing::warn!("{l}");
        }
    }
    match e {
        Error::Criu { op, message } => Error::Criu {
            op,
            message: format!("{message} (log: {})", log.display()),
        },
        e => e,
    }
}

/// The version CRIU must have for `what` (runc's checks).
fn need_version(have: CriuVersion, min: CriuVersion, what: &str) -> Result<()> {
    if have < min {
        return Err(Error::CheckpointOption {
            option: "criu",
            message: format!(
                "{what} needs CRIU {}.{}.{} or newer (this one is {}.{}.{})",
                min / 10000,
                min / 100 % 100,
                min % 100,
                have / 10000,
                have / 100 % 100,
                have % 100
            ),
        });
    }
    Ok(())
}

impl Container {
    /// Checkpoints the container with CRIU into `opts.criu.image_path` (made when
    /// missing). The container must be running or paused. Without `leave_running`
    /// or `pre_dump` CRIU stops its processes; the caller then deletes it (as
    /// `runc checkpoint` does).
    pub fn checkpoint(&mut self, opts: &CheckpointOptions) -> Result<()> {
        let _span = tracing::info_span!("checkpoint", id = %self.saved.id).entered();
        let st = self.status();
        if !matches!(st, Status::Running | Status::Paused) {
            return Err(Error::InvalidState {
                id: self.saved.id.clone(),
                op: "checkpoint",
                status: st.to_string(),
            });
        }
        let o = &opts.criu;
        let criu = Criu::new(&o.criu);
        let version = criu.version()?;
        need_version(version, 30000, "checkpoint")?;
        mkdir_private(&o.image_path)?;
        let images = open_dir(&o.image_path)?;
        let mut log_dir = o.image_path.clone();
        let work = match &o.work_path {
            Some(w) => {
                mkdir_private(w)?;
                log_dir = w.clone();
                Some(open_dir(w)?)
            }
            None => None,
        };
        let spec = self.saved.spec.clone();
        let pid = self.saved.pid;
        let mut external = Vec::new();
        for (t, path) in joined(&spec) {
            let min = match t {
                LinuxNamespaceType::Network => 31100,
                LinuxNamespaceType::Pid => 31500,
                _ => continue,
            };
            need_version(
                version,
                min,
                &format!("an external {} namespace", ns_name(t)),
            )?;
            let ino = std::fs::metadata(&path)
                .map_err(|e| Error::io("stat", &path, e))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
            external.push(format!("{}[{ino}]:{}", ns_name(t), ns_key(t)));
        }
        let host = Host::system()?;
        let cg_path = self.saved.cgroup.clone();
        let freeze_cgroup = cg_path.as_ref().and_then(|p| {
            let p = p.strip_prefix("/").unwrap_or(p);
            match host.mode() {
                CgroupMode::V2 if version >= 31400 => host.unified().map(|u| u.join(p)),
                CgroupMode::V2 => None,
                _ => host.v1_mount(Controller::Freezer).map(|m| m.join(p)),
            }
            .map(|d| d.display().to_string())
        });
        let mut masked_files = Vec::new();
        for p in spec
            .linux()
            .as_ref()
            .and_then(|l| l.masked_paths().clone())
            .unwrap_or_default()
        {
            let in_proc = format!("/proc/{pid}/root/{}", p.trim_start_matches('/'));
            match std::fs::metadata(&in_proc) {
                Ok(m) if !m.is_dir() => masked_files.push(p),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("stat", in_proc, e)),
            }
        }
        let input = DumpInput {
            pid,
            rootfs: self.saved.rootfs.clone(),
            images_fd: images.as_raw_fd(),
            work_fd: work.as_ref().map(AsRawFd::as_raw_fd),
            freeze_cgroup,
            external,
            masked_files,
            cgroup_binds: cg_path
                .as_deref()
                .map(|p| cgroup_binds(host, p, &spec))
                .unwrap_or_default(),
        };
        let rpc_opts = dump_opts(&spec, &input, opts);
        if opts.pre_dump {
            criu.check_features(&rpc::Features {
                mem_track: Some(true),
                lazy_pages: None,
            })?;
        }
        if o.lazy_pages {
            criu.check_features(&rpc::Features {
                mem_track: None,
                lazy_pages: Some(true),
            })?;
        }
        if !opts.pre_dump {
            let fds: Vec<String> = (0..3)
                .map(|i| {
                    std::fs::read_link(format!("/proc/{pid}/fd/{i}"))
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                })
                .collect();
            let path = o.image_path.join(DESCRIPTORS_FILE);
            let json = serde_json::to_vec(&fds).expect("strings serialize");
            kcore_statedir::write(&path, &json, kcore_statedir::PRIVATE_FILE)
                .map_err(|e| Error::io("write", &path, e))?;
        }
        let t = if opts.pre_dump {
            rpc::ReqType::PreDump
        } else {
            rpc::ReqType::Dump
        };
        let dir = self.dir.clone();
        let status_fd = opts.status_fd;
        let res = criu.run(
            rpc::Req::new(t, Some(rpc_opts)),
            &[],
            &mut |_, _| Ok(()),
            &mut |n| {
                match n.script.as_str() {
                    "post-dump" => {
                        let p = dir.join("checkpoint");
                        std::fs::write(&p, b"").map_err(|e| Error::io("create", p, e))?;
                    }
                    "status-ready" => {
                        if let Some(fd) = status_fd {
                            // SAFETY: writing one byte to the descriptor the caller named.
                            unsafe { libc::write(fd, [0u8].as_ptr().cast(), 1) };
                        }
                    }
                    // Network locking acts on runc's configured networks; an OCI
                    // config has none, so there is nothing to lock (as with runc).
                    _ => {}
                }
                Ok(())
            },
        );
        let log = log_dir.join("dump.log");
        res.map(drop).map_err(|e| with_log(e, log))
    }
}

impl Runtime {
    /// Restores container `id` from the images in `opts.criu.image_path`, with the
    /// config `spec` and rootfs of `bundle` (which may differ from the checkpointed
    /// container's, holding the same files). The restored process is a child of this
    /// process; the container is [`Status::Running`] on return.
    pub fn restore(
        &self,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        opts: &RestoreOptions,
    ) -> Result<Container> {
        let _span = tracing::info_span!("restore", id).entered();
        let criu = Criu::new(&opts.criu.criu);
        let version = criu.version()?;
        need_version(version, 30000, "restore")?;
        if opts.lsm_profile.is_some() || opts.lsm_mount_context.is_some() {
            need_version(version, 31600, "--lsm-profile/--lsm-mount-context")?;
        }
        for (t, _) in joined(spec) {
            match t {
                LinuxNamespaceType::Network => {
                    need_version(version, 31100, "an external net namespace")?
                }
                LinuxNamespaceType::Pid => {
                    need_version(version, 31500, "an external pid namespace")?
                }
                _ => {}
            }
        }
        let images = open_dir(&opts.criu.image_path)?;
        let desc_path = opts.criu.image_path.join(DESCRIPTORS_FILE);
        let descriptors: Vec<String> = serde_json::from_slice(
            &std::fs::read(&desc_path).map_err(|e| Error::io("read", &desc_path, e))?,
        )
        .map_err(|e| Error::InvalidSpec {
            file: desc_path.display().to_string(),
            field: "(descriptors)".into(),
            message: e.to_string(),
        })?;
        let (bundle, rootfs, dir) = self.new_state_dir(id, bundle, spec)?;
        let mut cleanup = RestoreCleanup {
            dir: Some(dir.clone()),
            ..Default::default()
        };
        let res = self.restore_inner(
            id,
            &bundle,
            &rootfs,
            &dir,
            spec,
            opts,
            &criu,
            images.as_fd(),
            descriptors,
            &mut cleanup,
        );
        cleanup.run(res.is_ok());
        res
    }

    #[allow(clippy::too_many_arguments)]
    fn restore_inner(
        &self,
        id: &str,
        bundle: &Path,
        rootfs: &Path,
        dir: &Path,
        spec: &Spec,
        opts: &RestoreOptions,
        criu: &Criu,
        images: BorrowedFd<'_>,
        descriptors: Vec<String>,
        cleanup: &mut RestoreCleanup,
    ) -> Result<Container> {
        let o = &opts.criu;
        let mut log_dir = o.image_path.clone();
        let work = match &o.work_path {
            Some(w) => {
                mkdir_private(w)?;
                log_dir = w.clone();
                Some(open_dir(w)?)
            }
            None => None,
        };
        let linux = spec.linux().as_ref().expect("validated");
        // The cgroup, with its limits, before criu puts the tasks in it.
        let host = Host::system()?;
        let cg_path = cgroups::cgroup_path(linux.cgroups_path().as_deref(), id);
        let cg = Cgroup::create(host, &cg_path)?;
        cleanup.cgroup = Some(cg.clone());
        if let Some(r) = linux.resources() {
            let (res, ignored) = cgroups::resources(r, host.mode());
            if !ignored.is_empty() {
                tracing::warn!(?ignored, "resources not supported, ignored");
            }
            if !res.is_empty() {
                cg.set_resources(&res)?;
            }
        }
        // CRIU's root must be a mount point whose parent is not overmounted.
        let criu_root = dir.join("criu-root");
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&criu_root)
            .map_err(|e| Error::io("create", &criu_root, e))?;
        crate::mounts::mount(
            Some(rootfs),
            &criu_root,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .map_err(|e| Error::Sys {
            op: "bind the rootfs for criu".into(),
            source: std::io::Error::other(e),
        })?;
        cleanup.unmount.push(criu_root.clone());
        prepare_mounts(spec, bundle, rootfs, cleanup)?;
        // Joined network and PID namespaces go to criu as descriptors 4, 5, ...
        let mut ns_files = Vec::new();
        let mut ns_fds = Vec::new();
        for (t, path) in joined(spec) {
            if matches!(t, LinuxNamespaceType::Network | LinuxNamespaceType::Pid) {
                let f = open_dir(&path).map_err(|_| Error::CheckpointOption {
                    option: "linux.namespaces",
                    message: format!(
                        "the {} namespace {} to restore into does not exist",
                        ns_name(t),
                        path.display()
                    ),
                })?;
                ns_fds.push((t, 4 + ns_files.len() as i32));
                ns_files.push(f);
            }
        }
        let input = RestoreInput {
            rootfs: rootfs.to_path_buf(),
            criu_root: criu_root.clone(),
            bundle: bundle.to_path_buf(),
            images_fd: images.as_raw_fd(),
            work_fd: work.as_ref().map(AsRawFd::as_raw_fd),
            descriptors,
            cgroup_binds: cgroup_binds(host, &cg_path, spec),
            ns_fds,
        };
        let rpc_opts = restore_opts(spec, &input, opts)?;
        let mut saved = Saved {
            id: id.into(),
            status: Status::Creating,
            pid: 0,
            pid_start: 0,
            bundle: bundle.to_path_buf(),
            rootfs: rootfs.to_path_buf(),
            created: state::rfc3339(std::time::SystemTime::now()),
            cgroup: Some(cg_path.clone()),
            spec: spec.clone(),
            rdt_group: None,
            rdt_mon_group: None,
            rdt_created: false,
            reaper: None,
        };
        saved.save(dir)?;
        let hooks = hooks_of(spec);
        let extra: Vec<BorrowedFd<'_>> = ns_files.iter().map(AsFd::as_fd).collect();
        let console = opts.console_socket.clone();
        let mut restored_pid = 0;
        let res = criu.run(
            rpc::Req::new(rpc::ReqType::Restore, Some(rpc_opts)),
            &extra,
            &mut |criu_pid, req| {
                // criu joins the container's cgroup, and its tasks are restored
                // under the cgroup's paths (runc's criuApplyCgroups).
                cg.add_process(criu_pid as u32)?;
                let roots = cgroup_roots(criu_pid)?;
                if let Some(o) = req.opts.as_mut() {
                    o.cg_root = roots;
                }
                Ok(())
            },
            &mut |n| {
                match n.script.as_str() {
                    "setup-namespaces" => {
                        let mut s = saved.clone();
                        s.pid = n.pid;
                        let json = state_json(&s, Status::Creating);
                        for kind in ["prestart", "createRuntime"] {
                            if let Some(h) = hooks.get(kind) {
                                run_hooks(kind, h, &json)?;
                            }
                        }
                    }
                    "post-restore" => restored_pid = n.pid,
                    "orphan-pts-master" => {
                        let fd = n.fd.ok_or_else(|| Error::Console {
                            path: PathBuf::new(),
                            message: "criu sent orphan-pts-master without a descriptor".into(),
                        })?;
                        let path = console.as_deref().ok_or_else(|| Error::Console {
                            path: PathBuf::new(),
                            message: "the container has a terminal but no console socket was given"
                                .into(),
                        })?;
                        let sock = super::connect_console(path)?;
                        crate::process::send_fd(sock.as_raw_fd(), fd.as_raw_fd(), b"/dev/ptmx")
                            .map_err(|e| Error::Console {
                                path: path.into(),
                                message: format!("send the pty master: {e}"),
                            })?;
                    }
                    _ => {}
                }
                Ok(())
            },
        );
        let resp = res.map_err(|e| with_log(e, log_dir.join("restore.log")))?;
        let pid = resp.restore.map(|r| r.pid).unwrap_or(restored_pid);
        if pid <= 0 {
            return Err(Error::Criu {
                op: "restore",
                message: "criu did not name the restored process".into(),
            });
        }
        saved.pid = pid;
        saved.pid_start = state::proc_stat(pid).map(|s| s.0).unwrap_or(0);
        saved.status = Status::Running;
        saved.save(dir)?;
        cleanup.cgroup = None;
        cleanup.dir = None;
        Ok(Container {
            dir: dir.to_path_buf(),
            saved,
            init: None,
        })
    }
}

/// `cg_root` entries from `/proc/<pid>/cgroup`: each v1 hierarchy by its
/// controllers, the unified one without a controller (every controller's root).
fn cgroup_roots(pid: i32) -> Result<Vec<rpc::CgroupRoot>> {
    let p = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io("read", &p, e))?;
    Ok(parse_cgroup_roots(&text))
}

fn parse_cgroup_roots(text: &str) -> Vec<rpc::CgroupRoot> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some(rpc::CgroupRoot {
                ctrl: (!ctrls.is_empty()).then(|| ctrls.to_string()),
                path: path.to_string(),
            })
        })
        .collect()
}

/// Mount points of the config made inside the rootfs (through its fd, so a symlink
/// cannot lead outside), and bind mounts applied for the time of the restore, as
/// runc's `prepareCriuRestoreMounts`: what sits on a tmpfs of the config is left to
/// CRIU, which restores the tmpfs contents.
fn prepare_mounts(
    spec: &Spec,
    bundle: &Path,
    rootfs: &Path,
    cleanup: &mut RestoreCleanup,
) -> Result<()> {
    let mounts = spec.mounts().clone().unwrap_or_default();
    let tmpfs: Vec<&Path> = mounts
        .iter()
        .filter(|m| m.typ().as_deref() == Some("tmpfs"))
        .map(|m| m.destination().as_path())
        .collect();
    let root = kcore_rootfd::open_root(rootfs).map_err(|e| Error::io("open", rootfs, e))?;
    for m in &mounts {
        if m.typ().as_deref() == Some("cgroup") {
            continue;
        }
        let dest = m.destination();
        if tmpfs.iter().any(|t| dest.starts_with(t) && dest != *t) {
            continue;
        }
        let src = m.source().clone().map(|s| {
            if s.is_relative() && is_bind(m) {
                bundle.join(s)
            } else {
                s
            }
        });
        let kind = match &src {
            Some(s) if is_bind(m) && !s.is_dir() => kcore_rootfd::Kind::File,
            _ => kcore_rootfd::Kind::Dir,
        };
        let fd = kcore_rootfd::create_in(&root, dest, kind, 0o755).map_err(|e| {
            Error::io(
                "create the mount point in the rootfs",
                rootfs.join(dest.strip_prefix("/").unwrap_or(dest)),
                e.into(),
            )
        })?;
        if is_bind(m) {
            let target = kcore_rootfd::proc_fd_path(&fd);
            let src = src.unwrap_or_default();
            crate::mounts::mount(
                Some(&src),
                &target,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
            .map_err(|e| Error::Sys {
                op: format!("bind {} for the restore", dest.display()),
                source: std::io::Error::other(e),
            })?;
            // Unmounted by its resolved path, which the bind now covers.
            let at = std::fs::read_link(&target).map_err(|e| Error::io("resolve", &target, e))?;
            cleanup.unmount.push(at);
        }
    }
    Ok(())
}

/// What a restore undoes: the temporary mounts always; on failure the cgroup and the
/// state directory too.
#[derive(Default)]
struct RestoreCleanup {
    unmount: Vec<PathBuf>,
    cgroup: Option<Cgroup>,
    dir: Option<PathBuf>,
}

impl RestoreCleanup {
    fn run(&mut self, ok: bool) {
        for p in self.unmount.drain(..).rev() {
            if let Ok(c) = crate::mounts::cstr(&p) {
                // SAFETY: a valid C string.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir(d.join("criu-root"));
        }
        if ok {
            return;
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.kill();
            let _ = cg.delete();
        }
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> Spec {
        let mut base = serde_json::to_value(Spec::default()).unwrap();
        for (k, val) in v.as_object().unwrap() {
            base[k] = val.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn ext(opts: &rpc::Opts) -> Vec<(String, String)> {
        opts.ext_mnt
            .iter()
            .map(|e| (e.key.clone(), e.val.clone()))
            .collect()
    }

    fn cp_opts() -> CheckpointOptions {
        CheckpointOptions {
            criu: CriuOptions::new("/img"),
            parent_path: None,
            leave_running: false,
            tcp_skip_in_flight: false,
            link_remap: false,
            pre_dump: false,
            page_server: None,
            status_fd: None,
        }
    }

    #[test]
    fn manage_cgroups_modes_are_runcs() {
        for (s, m) in [
            ("", CgroupsMode::Default),
            ("soft", CgroupsMode::Soft),
            ("full", CgroupsMode::Full),
            ("strict", CgroupsMode::Strict),
            ("ignore", CgroupsMode::Ignore),
        ] {
            assert_eq!(s.parse::<CgroupsMode>().unwrap(), m);
        }
        let e = "hard".parse::<CgroupsMode>().unwrap_err();
        assert!(
            e.to_string().contains("invalid manage-cgroups-mode value"),
            "{e}"
        );
        assert_eq!(CgroupsMode::Soft.rpc(), 3);
        assert_eq!(CgroupsMode::Default.rpc(), 6);
        assert_eq!(CgroupsMode::Ignore.rpc(), 0);
    }

    #[test]
    fn dump_maps_mounts_masks_devices_and_options_like_runc() {
        let d = tempfile::tempdir().unwrap();
        let rootfs = d.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("data")).unwrap();
        // A symlinked destination is named by where it leads inside the rootfs.
        std::fs::create_dir_all(rootfs.join("real")).unwrap();
        std::os::unix::fs::symlink("/real", rootfs.join("link")).unwrap();
        let s = spec(serde_json::json!({
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind"]},
                {"destination": "/link", "source": "/srv/x", "options": ["bind", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}
            ],
            "linux": {"devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]},
            "annotations": {"org.criu.config": "/etc/criu/mine.conf"}
        }));
        let input = DumpInput {
            pid: 42,
            rootfs: rootfs.clone(),
            images_fd: 7,
            work_fd: Some(8),
            freeze_cgroup: Some("/sys/fs/cgroup/freezer/c1".into()),
            external: vec!["net[4026532000]:extRootNetNS".into()],
            masked_files: vec!["/proc/kcore".into()],
            cgroup_binds: vec![("cpu,cpuacct".into(), "/sys/fs/cgroup/cpu,cpuacct/c1".into())],
        };
        let mut o = cp_opts();
        o.leave_running = true;
        o.criu.tcp_established = true;
        o.criu.shell_job = true;
        o.criu.manage_cgroups_mode = CgroupsMode::Full;
        let r = dump_opts(&s, &input, &o);
        assert_eq!(r.images_dir_fd, 7);
        assert_eq!(r.work_dir_fd, Some(8));
        assert_eq!(r.pid, Some(42));
        assert_eq!(r.root.as_deref(), Some(rootfs.to_str().unwrap()));
        assert_eq!(r.log_file.as_deref(), Some("dump.log"));
        assert_eq!(r.log_level, Some(4));
        assert_eq!(
            (
                r.leave_running,
                r.tcp_established,
                r.shell_job,
                r.ext_unix_sk
            ),
            (Some(true), Some(true), Some(true), Some(false))
        );
        assert_eq!(r.manage_cgroups_mode, Some(rpc::CgMode::Full as i32));
        assert_eq!(r.empty_ns, Some(libc::CLONE_NEWNET as u32));
        assert_eq!(r.orphan_pts_master, Some(true));
        assert_eq!(r.notify_scripts, Some(true));
        assert_eq!(r.config_file.as_deref(), Some("/etc/criu/mine.conf"));
        assert_eq!(r.external, ["net[4026532000]:extRootNetNS"]);
        assert_eq!(
            r.freeze_cgroup.as_deref(),
            Some("/sys/fs/cgroup/freezer/c1")
        );
        assert_eq!((r.parent_img.as_ref(), r.track_mem), (None, None));
        let e = ext(&r);
        let has = |k: &str, v: &str| e.contains(&(k.to_string(), v.to_string()));
        assert!(has("/data", "/data"), "{e:?}");
        assert!(
            has("/real", "/real"),
            "symlink resolved in the rootfs: {e:?}"
        );
        assert!(
            has("/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct"),
            "{e:?}"
        );
        assert!(has("/proc/kcore", "/dev/null"), "{e:?}");
        assert!(
            has("/dev/null", "/dev/null") && has("/dev/fuse", "/dev/fuse"),
            "{e:?}"
        );
        assert!(!e.iter().any(|(k, _)| k == "/proc"), "{e:?}");

        // A pre-dump: memory tracking against the parent, no mounts.
        let mut o = cp_opts();
        o.pre_dump = true;
        o.parent_path = Some("../pre1".into());
        let r = dump_opts(&s, &input, &o);
        assert_eq!(r.parent_img.as_deref(), Some("../pre1"));
        assert_eq!(r.track_mem, Some(true));
        assert!(r.ext_mnt.is_empty());
        // Without the annotation CRIU reads runc's file; empty: none.
        let plain = spec(serde_json::json!({}));
        assert_eq!(
            dump_opts(&plain, &input, &cp_opts()).config_file.as_deref(),
            Some("/etc/criu/runc.conf")
        );
        let none = spec(serde_json::json!({"annotations": {"org.criu.config": ""}}));
        assert_eq!(dump_opts(&none, &input, &cp_opts()).config_file, None);
    }

    #[test]
    fn restore_maps_sources_namespaces_pipes_and_cgroups_like_runc() {
        let d = tempfile::tempdir().unwrap();
        let rootfs = d.path().join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let s = spec(serde_json::json!({
            "mounts": [
                {"destination": "/data", "type": "bind", "source": "vol", "options": ["rbind"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}
            ],
            "linux": {
                "maskedPaths": ["/proc/kcore"],
                "namespaces": [
                    {"type": "mount"},
                    {"type": "network", "path": "/run/netns/x"},
                    {"type": "uts", "path": "/proc/1/ns/uts"}
                ]
            }
        }));
        let input = RestoreInput {
            rootfs: rootfs.clone(),
            criu_root: d.path().join("state/criu-root"),
            bundle: d.path().to_path_buf(),
            images_fd: 5,
            work_fd: None,
            descriptors: vec![
                "/dev/null".into(),
                "pipe:[1234]".into(),
                "/tmp/err.log".into(),
            ],
            cgroup_binds: vec![("memory".into(), "/sys/fs/cgroup/memory/c2".into())],
            ns_fds: vec![(LinuxNamespaceType::Network, 4)],
        };
        let mut o = RestoreOptions {
            criu: CriuOptions::new("/img"),
            console_socket: None,
            lsm_profile: Some("apparmor:p".into()),
            lsm_mount_context: None,
        };
        o.criu.file_locks = true;
        let r = restore_opts(&s, &input, &o).unwrap();
        assert_eq!(r.rst_sibling, Some(true));
        assert_eq!(r.evasive_devices, Some(true));
        assert_eq!(r.log_file.as_deref(), Some("restore.log"));
        assert_eq!(r.file_locks, Some(true));
        assert_eq!(r.lsm_profile.as_deref(), Some("apparmor:p"));
        assert_eq!(
            r.root.as_deref(),
            Some(d.path().join("state/criu-root").to_str().unwrap())
        );
        let inherit: Vec<(String, i32)> =
            r.inherit_fd.iter().map(|i| (i.key.clone(), i.fd)).collect();
        assert_eq!(
            inherit,
            [
                ("extRootNetNS".to_string(), 4),
                ("pipe:[1234]".to_string(), 1)
            ]
        );
        assert_eq!(r.join_ns.len(), 1);
        assert_eq!(
            (r.join_ns[0].ns.as_str(), r.join_ns[0].ns_file.as_str()),
            ("uts", "/proc/1/ns/uts")
        );
        let e = ext(&r);
        let vol = d.path().join("vol").display().to_string();
        assert!(
            e.contains(&("/data".into(), vol)),
            "relative source from the bundle: {e:?}"
        );
        assert!(e.contains(&(
            "/sys/fs/cgroup/memory".into(),
            "/sys/fs/cgroup/memory/c2".into()
        )));
        assert!(e.contains(&("/dev/null".into(), "/dev/null".into())));
        // A joined cgroup namespace cannot be restored into.
        let cg = spec(
            serde_json::json!({"linux": {"namespaces": [{"type": "cgroup", "path": "/proc/1/ns/cgroup"}]}}),
        );
        let e = restore_opts(&cg, &input, &o).unwrap_err();
        assert!(e.to_string().contains("cgroup namespace"), "{e}");
    }

    #[test]
    fn cgroup_roots_from_proc_cgroup() {
        let r = parse_cgroup_roots(
            "12:cpu,cpuacct:/kcore-runc-c1\n1:name=systemd:/x\n0::/kcore-runc-c1\n",
        );
        let got: Vec<(Option<&str>, &str)> = r
            .iter()
            .map(|c| (c.ctrl.as_deref(), c.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Some("cpu,cpuacct"), "/kcore-runc-c1"),
                (Some("name=systemd"), "/x"),
                (None, "/kcore-runc-c1")
            ]
        );
    }

    #[test]
    fn ns_keys_and_versions() {
        assert_eq!(ns_key(LinuxNamespaceType::Network), "extRootNetNS");
        assert_eq!(ns_key(LinuxNamespaceType::Pid), "extRootPidNS");
        assert!(need_version(31700, 31500, "x").is_ok());
        let e = need_version(31000, 31100, "an external net namespace").unwrap_err();
        assert!(
            e.to_string()
                .contains("3.11.0 or newer (this one is 3.10.0)"),
            "{e}"
        );
    }

    #[test]
    fn restore_mount_points_are_made_inside_the_rootfs() {
        let d = tempfile::tempdir().unwrap();
        let rootfs = d.path().join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        // A symlink pointing out of the rootfs is followed inside it.
        std::os::unix::fs::symlink(&outside, rootfs.join("escape")).unwrap();
        let s = spec(serde_json::json!({
            "mounts": [
                {"destination": "/escape/m", "type": "proc", "source": "proc"},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/tmp/on-tmpfs", "type": "proc", "source": "proc"},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}
            ]
        }));
        let mut c = RestoreCleanup::default();
        prepare_mounts(&s, d.path(), &rootfs, &mut c).unwrap();
        assert!(!outside.join("m").exists(), "created outside the rootfs");
        assert!(rootfs
            .join(outside.strip_prefix("/").unwrap())
            .join("m")
            .is_dir());
        assert!(rootfs.join("tmp").is_dir());
        assert!(
            !rootfs.join("tmp/on-tmpfs").exists(),
            "left to criu's tmpfs restore"
        );
        assert!(!rootfs.join("sys/fs/cgroup").exists());
        assert!(c.unmount.is_empty());
    }
}
