//! `kcore-runc`: a runc-compatible command line over kcore-runtime.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use kcore_runtime::{
    load_spec, parse_process, write_pid_file, CheckpointOptions, Container, CreateOptions,
    CriuOptions, ExecOptions, ExitStatus, RestoreOptions, Runtime, Status, DEFAULT_ROOT,
};

#[derive(Parser, Debug)]
#[command(
    name = "kcore-runc",
    version,
    about = "Run OCI containers (runc-compatible command line)",
    // A flag given twice is accepted, the last one winning, as by runc's flag parser
    // (podman passes `--leave-running` twice).
    args_override_self = true
)]
struct Cli {
    /// Root directory for container state.
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Write logs to this file instead of stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Debug logging.
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for compatibility; cgroups are always managed through cgroupfs.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// The CRIU binary for checkpoint and restore.
    #[arg(long, global = true, default_value = "criu")]
    criu: PathBuf,
    /// `true` for `spec` to write a rootless spec; otherwise accepted for compatibility.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
struct CreateArgs {
    /// Bundle directory (holds config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// File to write the container process's pid to.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is true.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Do not use pivot_root (MS_MOVE + chroot instead).
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Pass this many extra descriptors (from 3 on) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Accepted for compatibility.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
}

/// The limits of `update`: runc's flags, or a `linux.resources` JSON object.
#[derive(clap::Args, Debug, Default)]
struct UpdateArgs {
    /// JSON file with the resources to update (`-` for stdin); the other options are
    /// then ignored.
    #[arg(short, long)]
    resources: Option<PathBuf>,
    /// Block IO weight (10-1000).
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
    /// CPU CFS period (microseconds).
    #[arg(long = "cpu-period")]
    cpu_period: Option<u64>,
    /// CPU CFS quota (microseconds per period).
    #[arg(long = "cpu-quota")]
    cpu_quota: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-share")]
    cpu_share: Option<u64>,
    /// CPU realtime period (microseconds).
    #[arg(long = "cpu-rt-period")]
    cpu_rt_period: Option<u64>,
    /// CPU realtime runtime (microseconds per period).
    #[arg(long = "cpu-rt-runtime")]
    cpu_rt_runtime: Option<i64>,
    /// CPUs to use (e.g. 0-3,5).
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    /// Memory nodes to use.
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    /// Memory limit (bytes, or with a k/m/g suffix).
    #[arg(long)]
    memory: Option<String>,
    /// Memory soft limit (bytes, or with a k/m/g suffix).
    #[arg(long = "memory-reservation")]
    memory_reservation: Option<String>,
    /// Memory plus swap limit; -1 for unlimited swap.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Maximum number of processes.
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Kernel memory limit (obsolete: accepted and ignored, as by runc).
    #[arg(long = "kernel-memory")]
    kernel_memory: Option<String>,
    /// Kernel TCP buffer limit (cgroup v1).
    #[arg(long = "kernel-memory-tcp")]
    kernel_memory_tcp: Option<String>,
    /// Intel RDT L3 cache schema (e.g. `L3:0=ff;1=ff`); applied with or without -r.
    #[arg(long = "l3-cache-schema")]
    l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema (e.g. `MB:0=50`); applied with or without -r.
    #[arg(long = "mem-bw-schema")]
    mem_bw_schema: Option<String>,
}

/// The flags `checkpoint` and `restore` share (runc's names).
#[derive(clap::Args, Debug, Default, Clone)]
struct CriuArgs {
    /// Directory of the CRIU image files (default: `checkpoint` in the current directory).
    #[arg(long = "image-path")]
    image_path: Option<PathBuf>,
    /// Directory for CRIU's work files and logs.
    #[arg(long = "work-path")]
    work_path: Option<PathBuf>,
    /// Allow open TCP connections.
    #[arg(long = "tcp-established")]
    tcp_established: bool,
    /// Allow external unix sockets.
    #[arg(long = "ext-unix-sk")]
    ext_unix_sk: bool,
    /// Allow shell jobs.
    #[arg(long = "shell-job")]
    shell_job: bool,
    /// Handle file locks, for safety.
    #[arg(long = "file-locks")]
    file_locks: bool,
    /// cgroups mode: soft|full|strict|ignore (default: soft).
    #[arg(long = "manage-cgroups-mode", default_value = "")]
    manage_cgroups_mode: String,
    /// Create a namespace, but do not restore its properties (`network`).
    #[arg(long = "empty-ns")]
    empty_ns: Vec<String>,
    /// Enable auto deduplication of memory images.
    #[arg(long = "auto-dedup")]
    auto_dedup: bool,
    /// Use userfaultfd to lazily restore memory pages.
    #[arg(long = "lazy-pages")]
    lazy_pages: bool,
}

/// The flags only `checkpoint` takes.
#[derive(clap::Args, Debug, Default, Clone)]
struct CheckpointArgs {
    #[command(flatten)]
    criu: CriuArgs,
    /// Path of the previous (pre-dump) images, relative to --image-path.
    #[arg(long = "parent-path")]
    parent_path: Option<PathBuf>,
    /// Leave the process running after checkpointing.
    #[arg(long = "leave-running")]
    leave_running: bool,
    /// Skip in-flight TCP connections.
    #[arg(long = "tcp-skip-in-flight")]
    tcp_skip_in_flight: bool,
    /// Allow linking unlinked files back when possible.
    #[arg(long = "link-remap")]
    link_remap: bool,
    /// Dump the memory only, leaving the container running.
    #[arg(long = "pre-dump")]
    pre_dump: bool,
    /// ADDRESS:PORT of the page server.
    #[arg(long = "page-server")]
    page_server: Option<String>,
    /// CRIU writes \0 to this descriptor once lazy pages are ready.
    #[arg(long = "status-fd", default_value_t = -1, allow_hyphen_values = true)]
    status_fd: i32,
}

/// The flags only `restore` takes.
#[derive(clap::Args, Debug, Default, Clone)]
struct RestoreArgs {
    #[command(flatten)]
    criu: CriuArgs,
    /// Bundle directory (holds config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Socket that receives the pty master of a terminal container.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Detach from the container's process.
    #[arg(short, long)]
    detach: bool,
    /// File to write the restored process's pid to.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Do not become a subreaper for reparented processes.
    #[arg(long = "no-subreaper")]
    no_subreaper: bool,
    /// Accepted as runc does: CRIU restores the mount namespace itself.
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// LSM profile for the restored process, TYPE:NAME.
    #[arg(long = "lsm-profile")]
    lsm_profile: Option<String>,
    /// LSM mount context for the restore.
    #[arg(long = "lsm-mount-context")]
    lsm_mount_context: Option<String>,
}

/// The library's CRIU options from the shared flags (runc's `criuOptions`): the image
/// path made when missing, `--empty-ns` names turned into namespace bits (the
/// network namespace always among them).
fn criu_options(criu: &std::path::Path, a: &CriuArgs) -> anyhow::Result<CriuOptions> {
    let image = match &a.image_path {
        Some(p) => p.clone(),
        None => std::env::current_dir()?.join("checkpoint"),
    };
    std::fs::create_dir_all(&image).with_context(|| format!("create {}", image.display()))?;
    let mut o = CriuOptions::new(image);
    o.criu = criu.to_path_buf();
    o.work_path = a.work_path.clone();
    o.tcp_established = a.tcp_established;
    o.ext_unix_sk = a.ext_unix_sk;
    o.shell_job = a.shell_job;
    o.file_locks = a.file_locks;
    o.manage_cgroups_mode = a.manage_cgroups_mode.parse()?;
    o.auto_dedup = a.auto_dedup;
    o.lazy_pages = a.lazy_pages;
    let mut mask = libc::CLONE_NEWNET as u32;
    for ns in &a.empty_ns {
        match ns.as_str() {
            "network" => mask |= libc::CLONE_NEWNET as u32,
            other => bail!("namespace {other:?} is not supported"),
        }
    }
    o.empty_ns = mask;
    Ok(o)
}

/// `checkpoint`'s options: runc's `--parent-path` and `--page-server` rules.
fn checkpoint_options(
    criu: &std::path::Path,
    a: &CheckpointArgs,
) -> anyhow::Result<CheckpointOptions> {
    let c = criu_options(criu, &a.criu)?;
    if let Some(parent) = &a.parent_path {
        if parent.is_absolute() {
            bail!("--parent-path must be relative");
        }
        let real = c.image_path.join(parent);
        match std::fs::metadata(&real) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("invalid --parent-path: {}: not a directory", real.display()),
            Err(e) => bail!("invalid --parent-path: {}: {e}", real.display()),
        }
    }
    let page_server = match a.page_server.as_deref() {
        None | Some("") => None,
        Some(ps) => {
            let (addr, port) = ps
                .rsplit_once(':')
                .filter(|(a, p)| !a.is_empty() && !p.is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!("Use --page-server ADDRESS:PORT to specify page server")
                })?;
            let port: i32 = port
                .parse()
                .map_err(|_| anyhow::anyhow!("Invalid port number"))?;
            Some((
                addr.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port,
            ))
        }
    };
    Ok(CheckpointOptions {
        criu: c,
        parent_path: a.parent_path.clone(),
        leave_running: a.leave_running,
        tcp_skip_in_flight: a.tcp_skip_in_flight,
        link_remap: a.link_remap,
        pre_dump: a.pre_dump,
        page_server,
        status_fd: (a.status_fd >= 0).then_some(a.status_fd),
    })
}

/// A byte size as runc's update takes it: a number with an optional binary suffix
/// (`k`, `m`, `g`, `t`, `p`, optionally followed by `b` or `ib`), or `-1`.
fn parse_bytes(s: &str) -> anyhow::Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0f64.powi(4),
        "p" => 1024.0f64.powi(5),
        _ => anyhow::bail!("invalid size {s:?}"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size {s:?}"))?;
    Ok((n * mult) as i64)
}

/// `ps` with `args` (default `-ef`), keeping the header and the lines of `pids`, as
/// `runc ps` prints them.
fn ps_table(pids: &[i32], args: &[String]) -> anyhow::Result<String> {
    let args: Vec<String> = if args.is_empty() {
        vec!["-ef".into()]
    } else {
        args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| anyhow::anyhow!("run ps: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    filter_ps(&String::from_utf8_lossy(&out.stdout), pids)
}

/// The header of `ps` output and the lines whose PID column holds one of `pids`.
fn filter_ps(text: &str, pids: &[i32]) -> anyhow::Result<String> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| anyhow::anyhow!("ps output has no PID column"))?;
    let mut out = format!("{header}\n");
    for l in lines {
        let pid = l
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            out.push_str(l);
            out.push('\n');
        }
    }
    Ok(out)
}

/// The `linux.resources` object `update` asks for.
fn update_resources(a: &UpdateArgs) -> anyhow::Result<oci_spec::runtime::LinuxResources> {
    if let Some(path) = &a.resources {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?
        };
        return Ok(serde_json::from_str(&text)?);
    }
    let mut r = serde_json::json!({});
    let mut set = |path: &[&str], v: serde_json::Value| {
        let mut cur = &mut r;
        for k in &path[..path.len() - 1] {
            cur = cur
                .as_object_mut()
                .expect("objects only")
                .entry(*k)
                .or_insert_with(|| serde_json::json!({}));
        }
        cur[path[path.len() - 1]] = v;
    };
    if let Some(v) = a.blkio_weight {
        set(&["blockIO", "weight"], v.into());
    }
    if let Some(v) = a.cpu_period {
        set(&["cpu", "period"], v.into());
    }
    if let Some(v) = a.cpu_quota {
        set(&["cpu", "quota"], v.into());
    }
    if let Some(v) = a.cpu_share {
        set(&["cpu", "shares"], v.into());
    }
    if let Some(v) = a.cpu_rt_period {
        set(&["cpu", "realtimePeriod"], v.into());
    }
    if let Some(v) = a.cpu_rt_runtime {
        set(&["cpu", "realtimeRuntime"], v.into());
    }
    if let Some(v) = &a.cpuset_cpus {
        set(&["cpu", "cpus"], v.as_str().into());
    }
    if let Some(v) = &a.cpuset_mems {
        set(&["cpu", "mems"], v.as_str().into());
    }
    if let Some(v) = &a.memory {
        set(&["memory", "limit"], parse_bytes(v)?.into());
    }
    if let Some(v) = &a.memory_reservation {
        set(&["memory", "reservation"], parse_bytes(v)?.into());
    }
    if let Some(v) = &a.memory_swap {
        set(&["memory", "swap"], parse_bytes(v)?.into());
    }
    if let Some(v) = a.pids_limit {
        set(&["pids", "limit"], v.into());
    }
    if let Some(v) = &a.kernel_memory {
        set(&["memory", "kernel"], parse_bytes(v)?.into());
    }
    if let Some(v) = &a.kernel_memory_tcp {
        set(&["memory", "kernelTCP"], parse_bytes(v)?.into());
    }
    Ok(serde_json::from_value(r)?)
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a container (the user program waits for `start`).
    Create {
        #[command(flatten)]
        args: CreateArgs,
        id: String,
    },
    /// Start a created container.
    Start { id: String },
    /// Create and start a container; without -d, wait for it and delete it.
    Run {
        #[command(flatten)]
        args: CreateArgs,
        /// Detach: return once started.
        #[arg(short, long)]
        detach: bool,
        id: String,
    },
    /// Print the state JSON of a container.
    State { id: String },
    /// Send a signal (default SIGTERM) to a container.
    Kill {
        /// Signal every process of the container.
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a container.
    Delete {
        /// Kill the container first if it runs.
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Run a process in a running container.
    Exec {
        /// JSON file with the process (runtime-spec `process` object).
        #[arg(short, long)]
        process: Option<PathBuf>,
        /// Detach from the process.
        #[arg(short, long)]
        detach: bool,
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        /// Allocate a pseudo-terminal.
        #[arg(short, long)]
        tty: bool,
        /// Working directory.
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// Extra environment variables (KEY=VALUE).
        #[arg(short, long)]
        env: Vec<String>,
        /// uid[:gid] to run as.
        #[arg(short, long)]
        user: Option<String>,
        /// Set no_new_privs.
        #[arg(long = "no-new-privs")]
        no_new_privs: bool,
        #[arg(long = "preserve-fds", default_value_t = 0)]
        preserve_fds: u32,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List the processes of a container: `ps` output (with the given ps options,
    /// default `-ef`) filtered to the container's processes, or a JSON list of pids.
    Ps {
        /// table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        /// Options for ps(1), as runc passes them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Change the resource limits of a live container (as `runc update`).
    Update {
        #[command(flatten)]
        args: UpdateArgs,
        id: String,
    },
    /// Checkpoint a running container with CRIU (as `runc checkpoint`).
    Checkpoint {
        #[command(flatten)]
        args: CheckpointArgs,
        id: String,
    },
    /// Restore a container from a CRIU checkpoint (as `runc restore`).
    Restore {
        #[command(flatten)]
        args: RestoreArgs,
        id: String,
    },
    /// Freeze a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Print cgroup statistics as JSON events.
    Events {
        /// Print one stats event and exit.
        #[arg(long)]
        stats: bool,
        /// Interval between events (seconds, or e.g. 5s / 500ms).
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// List the containers under the root.
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
    },
    /// Print what this runtime supports (runtime-spec features JSON).
    Features,
    /// Write a default config.json into the bundle.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
}

fn parse_signal(s: &str) -> anyhow::Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    Ok(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => bail!("unknown signal {s:?}"),
    })
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        return Ok(Duration::from_millis(ms.parse()?));
    }
    let secs = s.strip_suffix('s').unwrap_or(s);
    Ok(Duration::from_secs_f64(secs.parse()?))
}

/// Blocks the signals a foreground `run`/`exec` forwards, in this thread (threads and
/// processes started later inherit the mask; the container resets it before exec).
fn block_forwarded_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGWINCH,
        ] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Forwards the blocked signals to `pid` from a background thread, as runc does.
fn forward_signals(set: libc::sigset_t, pid: i32) {
    std::thread::spawn(move || loop {
        let mut sig = 0;
        // SAFETY: valid set and out pointer; the signals are blocked in every thread.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            // SAFETY: plain kill(2) of the container process.
            unsafe { libc::kill(pid, sig) };
        }
    });
}

fn exit_code(st: ExitStatus) -> i32 {
    match st {
        ExitStatus::Exited(c) => c,
        ExitStatus::Signaled(s) => 128 + s,
    }
}

/// runc's terminal rules: a detached terminal process needs a console socket to send
/// the pty to, and a console socket is only used by a detached terminal process
/// (`create` always detaches).
fn check_terminal(detach: bool, terminal: bool, console_socket: bool) -> anyhow::Result<()> {
    if detach && terminal && !console_socket {
        bail!("cannot allocate tty if kcore-runc will detach without setting console socket");
    }
    if (!detach || !terminal) && console_socket {
        bail!("cannot use console socket if kcore-runc will not detach or allocate tty");
    }
    Ok(())
}

fn spec_terminal(spec: &oci_spec::runtime::Spec) -> bool {
    spec.process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
}

fn create(rt: &Runtime, id: &str, a: &CreateArgs) -> anyhow::Result<Container> {
    let spec = load_spec(&a.bundle)?;
    check_terminal(true, spec_terminal(&spec), a.console_socket.is_some())?;
    let c = rt.create(
        id,
        &a.bundle,
        &spec,
        CreateOptions {
            console_socket: a.console_socket.clone(),
            preserve_fds: a.preserve_fds,
            no_pivot: a.no_pivot,
            ..CreateOptions::default()
        },
    )?;
    if let Some(p) = &a.pid_file {
        write_pid_file(p, c.pid())?;
    }
    Ok(c)
}

fn stats_json(c: &Container) -> anyhow::Result<serde_json::Value> {
    let s = c.stats()?;
    Ok(serde_json::json!({
        "type": "stats",
        "id": c.id(),
        "data": {
            "cpu": {"usage": {
                "total": s.cpu.usage_usec.map(|v| v * 1000),
                "user": s.cpu.user_usec.map(|v| v * 1000),
                "kernel": s.cpu.system_usec.map(|v| v * 1000)},
                "throttling": {"periods": s.cpu.nr_periods, "throttledPeriods": s.cpu.nr_throttled,
                    "throttledTime": s.cpu.throttled_usec.map(|v| v * 1000)}},
            "memory": {"usage": {"usage": s.memory.usage, "max": s.memory.peak},
                "oom": s.memory.oom, "oomKill": s.memory.oom_kill},
            "pids": {"current": s.pids.current, "limit": s.pids.max},
            "intel_rdt": c.intel_rdt_stats()?.map(serde_json::to_value).transpose()?
                .unwrap_or_else(|| serde_json::json!({})),
        }
    }))
}

/// How often `events` looks at the OOM counter between stats events.
const OOM_POLL: Duration = Duration::from_millis(100);

/// The container's OOM-kill count (v1 `memory.oom_control`, v2 `memory.events`);
/// `None` once its cgroup is gone.
fn oom_count(c: &Container) -> Option<u64> {
    let s = c.stats().ok()?;
    Some(s.memory.oom_kill.or(s.memory.oom).unwrap_or(0))
}

/// runc's `events` stream: a stats event every `every`, an `oom` event as soon as the
/// container's OOM-kill count grows, until the container stops.
fn events(c: &mut Container, every: Duration, out: &mut impl Write) -> anyhow::Result<()> {
    let mut ooms = oom_count(c).unwrap_or(0);
    let mut next = std::time::Instant::now();
    loop {
        if std::time::Instant::now() >= next {
            match stats_json(c) {
                Ok(v) => writeln!(out, "{}", serde_json::to_string(&v)?)?,
                Err(_) if c.status() == Status::Stopped => break,
                Err(e) => return Err(e),
            }
            next += every;
        }
        if let Some(n) = oom_count(c) {
            if n > ooms {
                let ev = serde_json::json!({"type": "oom", "id": c.id()});
                writeln!(out, "{ev}")?;
            }
            ooms = n;
        }
        out.flush()?;
        if c.status() == Status::Stopped {
            break;
        }
        std::thread::sleep(OOM_POLL.min(every));
    }
    Ok(())
}

fn default_spec(rootless: bool) -> anyhow::Result<serde_json::Value> {
    let mut spec = oci_spec::runtime::Spec::default();
    if let Some(p) = spec.process_mut() {
        p.set_terminal(Some(true));
    }
    spec.set_hostname(Some("kcore".into()));
    if rootless {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        spec.set_linux(Some(oci_spec::runtime::Linux::rootless(uid, gid)));
    }
    Ok(serde_json::to_value(&spec)?)
}

fn exec(rt: &Runtime, id: &str, cmd: &Cmd) -> anyhow::Result<i32> {
    let Cmd::Exec {
        process,
        detach,
        pid_file,
        console_socket,
        tty,
        cwd,
        env,
        user,
        no_new_privs,
        preserve_fds,
        command,
        ..
    } = cmd
    else {
        unreachable!()
    };
    let mut c = rt.load(id)?;
    let proc_ = match process {
        Some(f) => parse_process(
            &std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?,
        )?,
        None => {
            if command.is_empty() {
                bail!("exec needs a command or --process");
            }
            let mut p = c.spec().process().clone().unwrap_or_default();
            p.set_args(Some(command.clone()));
            p.set_terminal(Some(*tty));
            if let Some(d) = cwd {
                p.set_cwd(d.clone());
            }
            if !env.is_empty() {
                let mut e = p.env().clone().unwrap_or_default();
                e.extend(env.iter().cloned());
                p.set_env(Some(e));
            }
            if let Some(u) = user {
                let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
                let mut usr = p.user().clone();
                usr.set_uid(uid.parse().context("--user uid")?);
                usr.set_gid(gid.parse().context("--user gid")?);
                p.set_user(usr);
            }
            if *no_new_privs {
                p.set_no_new_privileges(Some(true));
            }
            p
        }
    };
    check_terminal(
        *detach,
        proc_.terminal().unwrap_or(false),
        console_socket.is_some(),
    )?;
    let sigs = (!*detach).then(block_forwarded_signals);
    let mut child = c.exec(
        &proc_,
        ExecOptions {
            console_socket: console_socket.clone(),
            preserve_fds: *preserve_fds,
            ..ExecOptions::default()
        },
    )?;
    if let Some(p) = pid_file {
        write_pid_file(p, child.pid())?;
    }
    if *detach {
        return Ok(0);
    }
    if let Some(set) = sigs {
        forward_signals(set, child.pid());
    }
    Ok(exit_code(child.wait()?))
}

fn restore(rt: &Runtime, criu: &std::path::Path, id: &str, a: &RestoreArgs) -> anyhow::Result<i32> {
    let spec = load_spec(&a.bundle)?;
    let _ = a.no_pivot;
    let opts = RestoreOptions {
        criu: criu_options(criu, &a.criu)?,
        console_socket: a.console_socket.clone(),
        lsm_profile: a.lsm_profile.clone(),
        lsm_mount_context: a.lsm_mount_context.clone(),
    };
    if !a.detach && !a.no_subreaper {
        // SAFETY: prctl on this process.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let sigs = (!a.detach).then(block_forwarded_signals);
    let mut c = rt.restore(id, &a.bundle, &spec, &opts)?;
    if let Some(p) = &a.pid_file {
        write_pid_file(p, c.pid())?;
    }
    if a.detach {
        return Ok(0);
    }
    if let Some(set) = sigs {
        forward_signals(set, c.pid());
    }
    let st = c.wait()?;
    c.delete(true)?;
    Ok(exit_code(st))
}

fn run(cli: &Cli) -> anyhow::Result<i32> {
    let rt = Runtime::new(&cli.root);
    match &cli.cmd {
        Cmd::Create { args, id } => {
            create(&rt, id, args)?;
        }
        Cmd::Start { id } => rt.load(id)?.start()?,
        Cmd::Run { args, detach, id } => {
            let spec = load_spec(&args.bundle)?;
            // A foreground terminal `run` without a socket runs on the caller's stdio.
            if *detach || args.console_socket.is_some() {
                check_terminal(*detach, spec_terminal(&spec), args.console_socket.is_some())?;
            }
            let sigs = (!*detach).then(block_forwarded_signals);
            let mut c = rt.run(
                id,
                &args.bundle,
                &spec,
                CreateOptions {
                    console_socket: args.console_socket.clone(),
                    preserve_fds: args.preserve_fds,
                    no_pivot: args.no_pivot,
                    ..CreateOptions::default()
                },
            )?;
            if let Some(p) = &args.pid_file {
                write_pid_file(p, c.pid())?;
            }
            if let Some(set) = sigs {
                forward_signals(set, c.pid());
            }
            if *detach {
                return Ok(0);
            }
            let st = c.wait()?;
            c.delete(true)?;
            return Ok(exit_code(st));
        }
        Cmd::State { id } => {
            let st = rt.load(id)?.state();
            println!("{}", serde_json::to_string_pretty(&st)?);
        }
        Cmd::Kill { all, id, signal } => {
            let sig = parse_signal(signal.as_deref().unwrap_or("TERM"))?;
            rt.load(id)?.kill(sig, *all)?;
        }
        Cmd::Delete { force, id } => match rt.load(id) {
            Ok(c) => c.delete(*force)?,
            // runc: deleting a missing container with --force is not an error.
            Err(kcore_runtime::Error::NotFound { .. }) if *force => {}
            Err(e) => return Err(e.into()),
        },
        cmd @ Cmd::Exec { id, .. } => return exec(&rt, id, cmd),
        Cmd::Ps {
            format,
            id,
            ps_args,
        } => {
            let pids = rt.load(id)?.processes()?;
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string(&pids)?),
                "table" => print!("{}", ps_table(&pids, ps_args)?),
                other => anyhow::bail!("invalid format {other:?}: table or json"),
            }
        }
        Cmd::Update { args, id } => {
            let res = update_resources(args)?;
            let mut c = rt.load(id)?;
            // runc checks the RDT schemas against the host before changing anything.
            let (l3, mb) = (
                args.l3_cache_schema.as_deref().filter(|s| !s.is_empty()),
                args.mem_bw_schema.as_deref().filter(|s| !s.is_empty()),
            );
            if l3.is_some() || mb.is_some() {
                c.update_intel_rdt(l3, mb)?;
            }
            let ignored = c.update(&res)?;
            if !ignored.is_empty() {
                eprintln!("warning: not supported on this host, not applied: {ignored:?}");
            }
        }
        Cmd::Checkpoint { args, id } => {
            let mut c = rt.load(id)?;
            let st = c.status();
            if matches!(st, Status::Created | Status::Stopped) {
                bail!("Container cannot be checkpointed in {st} state");
            }
            let opts = checkpoint_options(&cli.criu, args)?;
            c.checkpoint(&opts)?;
            if !opts.leave_running && !opts.pre_dump {
                // CRIU stopped the processes: the container goes, as with runc.
                if let Err(e) = c.delete(true) {
                    eprintln!("warning: delete after checkpoint: {e}");
                }
            }
        }
        Cmd::Restore { args, id } => return restore(&rt, &cli.criu, id, args),
        Cmd::Pause { id } => rt.load(id)?.pause()?,
        Cmd::Resume { id } => rt.load(id)?.resume()?,
        Cmd::Events {
            stats,
            interval,
            id,
        } => {
            let mut c = rt.load(id)?;
            let every = parse_duration(interval)?;
            let mut out = std::io::stdout().lock();
            if *stats {
                writeln!(out, "{}", serde_json::to_string(&stats_json(&c)?)?)?;
                return Ok(0);
            }
            events(&mut c, every, &mut out)?;
        }
        Cmd::List { format } => {
            let mut states = Vec::new();
            for id in rt.list()? {
                if let Ok(mut c) = rt.load(&id) {
                    states.push(c.state());
                }
            }
            if format == "json" {
                println!("{}", serde_json::to_string(&states)?);
            } else {
                println!(
                    "{:<24} {:>8} {:<10} {:<40} CREATED",
                    "ID", "PID", "STATUS", "BUNDLE"
                );
                for s in states {
                    println!(
                        "{:<24} {:>8} {:<10} {:<40} {}",
                        s.id,
                        s.pid,
                        s.status,
                        s.bundle.display(),
                        s.created
                    );
                }
            }
        }
        Cmd::Features => println!(
            "{}",
            serde_json::to_string_pretty(&kcore_runtime::features())?
        ),
        Cmd::Spec { bundle } => {
            let rootless = &(cli.rootless.as_deref() == Some("true"));
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} exists already", path.display());
            }
            std::fs::write(
                &path,
                serde_json::to_string_pretty(&default_spec(*rootless)?)?,
            )
            .with_context(|| format!("write {}", path.display()))?;
        }
    }
    Ok(0)
}

fn init_logging(cli: &Cli) -> anyhow::Result<Option<std::fs::File>> {
    use tracing_subscriber::filter::LevelFilter;
    let level = if cli.debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::WARN
    };
    // KCORE_LOG takes EnvFilter directives; without it a plain level avoids compiling any.
    let env = std::env::var("KCORE_LOG").ok();
    let file = match &cli.log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("open log {}", p.display()))?,
        ),
        None => None,
    };
    let writer = match &file {
        Some(f) => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(
            f.try_clone()?,
        )),
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let b = tracing_subscriber::fmt()
        .with_ansi(file.is_none())
        .with_writer(writer);
    match env {
        Some(v) => b
            .with_env_filter(tracing_subscriber::EnvFilter::new(v))
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .init(),
        None => b.with_max_level(level).init(),
    }
    Ok(file)
}

/// Long options given with one dash, as Go's flag parsing (runc's) accepts them and
/// containerd's go-runc passes `-no-subreaper` to `restore`, rewritten to two. Flags
/// are read up to the container id, as Go's parser stops at the first argument that
/// is not a flag: what follows (an exec'd command, ps options) is left as it is.
fn go_style_flags(argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let mut longs: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    let mut shorts: std::collections::HashMap<char, bool> = std::collections::HashMap::new();
    let mut collect = |c: &clap::Command| {
        for a in c.get_arguments() {
            let takes = a.get_action().takes_values();
            if let Some(l) = a.get_long() {
                longs.insert(l.to_string(), takes);
            }
            if let Some(s) = a.get_short() {
                shorts.insert(s, takes);
            }
        }
    };
    collect(&cmd);
    for sub in cmd.get_subcommands() {
        collect(sub);
    }
    let mut out = Vec::with_capacity(argv.len());
    let mut it = argv.into_iter();
    out.extend(it.next());
    let mut positionals = 0;
    let mut skip_value = false;
    for a in it.by_ref() {
        let Some(s) = a.to_str().map(str::to_string) else {
            out.push(a);
            continue;
        };
        if skip_value {
            skip_value = false;
            out.push(a);
            continue;
        }
        if s == "--" {
            out.push(a);
            break;
        }
        if let Some(rest) = s.strip_prefix("--") {
            let (name, inline) = rest
                .split_once('=')
                .map_or((rest, false), |(n, _)| (n, true));
            skip_value = !inline && longs.get(name).copied().unwrap_or(false);
            out.push(a);
        } else if let Some(rest) = s.strip_prefix('-').filter(|r| !r.is_empty()) {
            let (name, inline) = rest
                .split_once('=')
                .map_or((rest, false), |(n, _)| (n, true));
            if name.chars().count() > 1 && longs.contains_key(name) {
                skip_value = !inline && longs[name];
                out.push(format!("-{s}").into());
            } else {
                let mut chars = rest.chars();
                skip_value = rest.chars().count() == 1
                    && shorts
                        .get(&chars.next().unwrap_or(' '))
                        .copied()
                        .unwrap_or(false);
                out.push(a);
            }
        } else {
            out.push(a);
            positionals += 1;
            // The subcommand, then the container id: flags end there.
            if positionals == 2 {
                break;
            }
        }
    }
    out.extend(it);
    out
}

fn main() {
    // a container launcher's server (see kcore_runtime::launcher) does nothing else
    if let Some(code) = kcore_runtime::launcher::serve_if_asked() {
        std::process::exit(code);
    }
    let cli = Cli::parse_from(go_style_flags(std::env::args_os().collect()));
    let log = match init_logging(&cli) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kcore-runc: {e:#}");
            std::process::exit(1);
        }
    };
    let _ = (cli.systemd_cgroup, &cli.rootless);
    match run(&cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let msg = format!("{e:#}");
            if let Some(mut f) = log {
                let line = if cli.log_format == "json" {
                    serde_json::json!({"level": "error", "msg": msg}).to_string()
                } else {
                    format!("level=error msg={msg:?}")
                };
                let _ = writeln!(f, "{line}");
            }
            eprintln!("kcore-runc: {msg}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_output_is_filtered_by_the_pid_column() {
        let text = "UID          PID    PPID  C STIME TTY          TIME CMD\n\
                    root           1       0  0 10:00 ?        00:00:01 /sbin/init\n\
                    root          42       1  0 10:01 ?        00:00:00 sleep 1000\n\
                    root         420      42  0 10:01 ?        00:00:00 sh -c x\n";
        let out = filter_ps(text, &[42]).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("UID"));
        assert!(lines[1].ends_with("sleep 1000"));
        assert!(filter_ps("USER COMMAND\nroot x\n", &[1]).is_err());
    }

    #[test]
    fn terminal_rules_like_runc() {
        // (detach, terminal, console socket) -> allowed
        for (detach, terminal, socket, ok) in [
            (true, true, true, true),
            (true, false, false, true),
            (false, false, false, true),
            (false, true, false, true),
            (true, true, false, false),
            (false, true, true, false),
            (true, false, true, false),
            (false, false, true, false),
        ] {
            assert_eq!(
                check_terminal(detach, terminal, socket).is_ok(),
                ok,
                "detach {detach} terminal {terminal} socket {socket}"
            );
        }
    }

    #[test]
    fn sizes_parse_like_runc() {
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert_eq!(parse_bytes("64M").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512kb").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(parse_bytes("12x").is_err());
        assert!(parse_bytes("").is_err());
    }

    #[test]
    fn update_flags_become_resources() {
        let a = UpdateArgs {
            memory: Some("128m".into()),
            memory_swap: Some("-1".into()),
            cpu_share: Some(256),
            cpuset_cpus: Some("0-1".into()),
            pids_limit: Some(40),
            ..UpdateArgs::default()
        };
        let r = serde_json::to_value(update_resources(&a).unwrap()).unwrap();
        assert_eq!(r["memory"]["limit"], 128 << 20);
        assert_eq!(r["memory"]["swap"], -1);
        assert_eq!(r["cpu"]["shares"], 256);
        assert_eq!(r["cpu"]["cpus"], "0-1");
        assert_eq!(r["pids"]["limit"], 40);
        assert!(r.get("blockIO").is_none_or(|b| b.is_null()));
        // The RDT schemas are not resources: they go to update_intel_rdt, even with -r.
        let rdt = UpdateArgs {
            l3_cache_schema: Some("L3:0=ff".into()),
            ..UpdateArgs::default()
        };
        let r = serde_json::to_value(update_resources(&rdt).unwrap()).unwrap();
        assert!(r.as_object().unwrap().values().all(|v| v.is_null()), "{r}");
        let cli = Cli::try_parse_from([
            "kcore-runc",
            "update",
            "-r",
            "/dev/null",
            "--l3-cache-schema",
            "L3:0=f",
            "--mem-bw-schema",
            "MB:0=20",
            "c1",
        ])
        .unwrap();
        let Cmd::Update { args, id } = cli.cmd else {
            panic!("not update")
        };
        assert_eq!(id, "c1");
        assert_eq!(args.l3_cache_schema.as_deref(), Some("L3:0=f"));
        assert_eq!(args.mem_bw_schema.as_deref(), Some("MB:0=20"));
    }

    fn parse(args: &[&str]) -> Cmd {
        let mut all = vec!["kcore-runc"];
        all.extend(args);
        Cli::try_parse_from(all).unwrap().cmd
    }

    #[test]
    fn checkpoint_flags_map_like_runc() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::create_dir_all(img.join("pre1")).unwrap();
        let img_s = img.to_str().unwrap();
        let Cmd::Checkpoint { args, id } = parse(&[
            "checkpoint",
            "--image-path",
            img_s,
            "--work-path",
            "/w",
            "--parent-path",
            "pre1",
            "--leave-running",
            "--tcp-established",
            "--ext-unix-sk",
            "--shell-job",
            "--file-locks",
            "--manage-cgroups-mode",
            "full",
            "--empty-ns",
            "network",
            "--auto-dedup",
            "--page-server",
            "10.0.0.1:8765",
            "c1",
        ]) else {
            panic!("not checkpoint")
        };
        assert_eq!(id, "c1");
        let o = checkpoint_options(std::path::Path::new("/opt/criu"), &args).unwrap();
        assert_eq!(o.criu.criu, std::path::Path::new("/opt/criu"));
        assert_eq!(o.criu.image_path, img);
        assert_eq!(
            o.criu.work_path.as_deref(),
            Some(std::path::Path::new("/w"))
        );
        assert_eq!(o.parent_path.as_deref(), Some(std::path::Path::new("pre1")));
        assert!(o.leave_running && !o.pre_dump);
        assert!(o.criu.tcp_established && o.criu.ext_unix_sk && o.criu.shell_job);
        assert!(o.criu.file_locks && o.criu.auto_dedup && !o.criu.lazy_pages);
        assert_eq!(o.criu.manage_cgroups_mode, kcore_runtime::CgroupsMode::Full);
        assert_eq!(o.criu.empty_ns, libc::CLONE_NEWNET as u32);
        assert_eq!(o.page_server, Some(("10.0.0.1".into(), 8765)));
        assert_eq!(o.status_fd, None);
        // Defaults: the network namespace is always left empty, the mode CRIU's.
        let Cmd::Checkpoint { args, .. } =
            parse(&["checkpoint", "--image-path", img_s, "--pre-dump", "c1"])
        else {
            panic!()
        };
        let o = checkpoint_options(std::path::Path::new("criu"), &args).unwrap();
        assert!(o.pre_dump && !o.leave_running);
        assert_eq!(o.criu.empty_ns, libc::CLONE_NEWNET as u32);
        assert_eq!(
            o.criu.manage_cgroups_mode,
            kcore_runtime::CgroupsMode::Default
        );
    }

    #[test]
    fn checkpoint_flag_errors_are_runcs() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        let img_s = img.to_str().unwrap();
        let err = |extra: &[&str]| {
            let mut a = vec!["checkpoint", "--image-path", img_s];
            a.extend(extra);
            a.push("c1");
            let Cmd::Checkpoint { args, .. } = parse(&a) else {
                panic!()
            };
            checkpoint_options(std::path::Path::new("criu"), &args)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&["--parent-path", "/abs"]),
            "--parent-path must be relative"
        );
        assert!(err(&["--parent-path", "nope"]).starts_with("invalid --parent-path: "));
        assert_eq!(
            err(&["--page-server", "nohostport"]),
            "Use --page-server ADDRESS:PORT to specify page server"
        );
        assert_eq!(err(&["--page-server", "h:x"]), "Invalid port number");
        assert_eq!(
            err(&["--empty-ns", "pid"]),
            "namespace \"pid\" is not supported"
        );
        assert!(
            err(&["--manage-cgroups-mode", "hard"]).contains("invalid manage-cgroups-mode value")
        );
        assert!(img.is_dir(), "the image path is made, as runc makes it");
    }

    #[test]
    fn restore_flags_parse_like_runc() {
        let Cmd::Restore { args, id } = parse(&[
            "restore",
            "-d",
            "-b",
            "/b",
            "--pid-file",
            "/p",
            "--console-socket",
            "/s",
            "--image-path",
            "/img",
            "--work-path",
            "/w",
            "--no-subreaper",
            "--no-pivot",
            "--manage-cgroups-mode",
            "soft",
            "--lsm-profile",
            "apparmor:x",
            "--lsm-mount-context",
            "ctx",
            "--tcp-established",
            "--shell-job",
            "c2",
        ]) else {
            panic!("not restore")
        };
        assert_eq!(id, "c2");
        assert!(args.detach && args.no_subreaper && args.no_pivot);
        assert_eq!(args.bundle, std::path::Path::new("/b"));
        assert_eq!(args.pid_file.as_deref(), Some(std::path::Path::new("/p")));
        assert_eq!(
            args.console_socket.as_deref(),
            Some(std::path::Path::new("/s"))
        );
        assert_eq!(args.lsm_profile.as_deref(), Some("apparmor:x"));
        assert_eq!(args.lsm_mount_context.as_deref(), Some("ctx"));
        assert!(args.criu.tcp_established && args.criu.shell_job);
        assert_eq!(
            args.criu.image_path.as_deref(),
            Some(std::path::Path::new("/img"))
        );
        assert_eq!(args.criu.manage_cgroups_mode, "soft");
    }

    #[test]
    fn repeated_flags_are_accepted_like_runc() {
        let Cmd::Checkpoint { args, .. } =
            parse(&["checkpoint", "--leave-running", "--leave-running", "c1"])
        else {
            panic!()
        };
        assert!(args.leave_running);
        let Cmd::Exec { env, .. } = parse(&["exec", "-e", "A=1", "-e", "B=2", "c1", "true"]) else {
            panic!()
        };
        assert_eq!(
            env,
            ["A=1", "B=2"],
            "repeatable flags still collect every value"
        );
    }

    #[test]
    fn go_style_single_dash_long_flags() {
        let conv = |args: &[&str]| -> Vec<String> {
            go_style_flags(args.iter().map(|a| a.into()).collect())
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        // containerd's go-runc restore.
        assert_eq!(
            conv(&[
                "r",
                "--root",
                "/x",
                "restore",
                "--detach",
                "-no-subreaper",
                "-pid-file=/p",
                "c1"
            ]),
            [
                "r",
                "--root",
                "/x",
                "restore",
                "--detach",
                "--no-subreaper",
                "--pid-file=/p",
                "c1"
            ]
        );
        // A flag's value and what follows the container id are left alone.
        assert_eq!(
            conv(&["r", "exec", "--cwd", "-debug", "-d", "c1", "sh", "-debug", "-c", "x"]),
            ["r", "exec", "--cwd", "-debug", "-d", "c1", "sh", "-debug", "-c", "x"]
        );
        assert_eq!(
            conv(&["r", "-root", "/x", "ps", "c1", "-ef"]),
            ["r", "--root", "/x", "ps", "c1", "-ef"]
        );
        let cli =
            Cli::try_parse_from(conv(&["r", "restore", "-detach", "-no-subreaper", "c1"])).unwrap();
        let Cmd::Restore { args, .. } = cli.cmd else {
            panic!()
        };
        assert!(args.detach && args.no_subreaper);
    }
}
