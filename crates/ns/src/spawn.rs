//! Spawning a process in new and/or joined namespaces, in two phases.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::error::{ChildStage, Error, Result};
use crate::namespace::{open_ns, pidfd_open, IdMap, Namespace, NamespaceSet, CLONE_NEWTIME};

/// The error type a [`NsCommand::setup`] closure returns.
pub type SetupError = Box<dyn std::error::Error + Send + Sync>;

type SetupFn = Box<dyn FnMut() -> std::result::Result<(), SetupError>>;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const MSG_PID: u8 = 1;
const MSG_ERR: u8 = 2;
const MSG_READY: u8 = 3;

/// Held from pipe creation until the parent closed its copy of the child-side ends, so a
/// concurrent spawn on another thread never forks with our pipe ends open.
static SPAWN_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What to do with `/proc/<pid>/setgroups` before writing the gid map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetGroups {
    /// Write `deny` only when the writer lacks privilege (euid != 0), as the kernel requires then.
    #[default]
    Auto,
    /// Leave `setgroups(2)` allowed inside the namespace.
    Allow,
    /// Always write `deny`.
    Deny,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It called `exit` with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

impl ExitStatus {
    /// Exited with code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    /// The exit code, if it exited.
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Exited(c) => Some(c),
            ExitStatus::Signaled(_) => None,
        }
    }

    /// The signal, if it was killed.
    pub fn signal(self) -> Option<i32> {
        match self {
            ExitStatus::Signaled(s) => Some(s),
            ExitStatus::Exited(_) => None,
        }
    }

    fn from_raw(status: libc::c_int) -> Self {
        if libc::WIFSIGNALED(status) {
            ExitStatus::Signaled(libc::WTERMSIG(status))
        } else {
            ExitStatus::Exited(libc::WEXITSTATUS(status))
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exit code {c}"),
            ExitStatus::Signaled(s) => write!(f, "signal {s}"),
        }
    }
}

enum Program {
    Exec {
        program: OsString,
        args: Vec<OsString>,
    },
    Func(Box<dyn FnOnce() -> i32>),
}

enum Join {
    Path(Namespace, PathBuf),
    Fd(Namespace, OwnedFd),
    Pidfd(OwnedFd, NamespaceSet),
}

/// A builder for a process in new and/or joined namespaces.
///
/// [`spawn`](NsCommand::spawn) creates the process and returns a [`Pending`]
/// holding its host pid while the process is still blocked, *before* it
/// touches its namespaces' contents. The caller can then place it into a
/// cgroup; [`Pending::release`] writes the id maps, lets it run its setup
/// and `exec`, and reports any failure as [`Error::Child`].
///
/// How the process is made: the caller forks a short-lived helper that joins
/// the requested existing namespaces (user namespace last), creates the time
/// namespace if asked (so offsets can be written), then `clone3`s the final
/// process with `CLONE_PARENT` and every other new namespace, and exits. The
/// final process is therefore the caller's own child (so [`Child::wait`]
/// works) and, with a new pid namespace, it is PID 1 there. The cgroup
/// namespace is unshared by the final process only after release, so its
/// cgroup root is the cgroup the caller put it in.
///
/// Order in the final process after release: unshare cgroup namespace,
/// become root in a new user namespace (when 0 is mapped), set hostname and
/// domainname, run the setup closures in order, redirect stdio, chdir,
/// switch to the final uid/gid, then exec (or run the function).
pub struct NsCommand {
    program: Program,
    env_clear: bool,
    env: BTreeMap<OsString, Option<OsString>>,
    new: NamespaceSet,
    joins: Vec<Join>,
    uid_maps: Vec<IdMap>,
    gid_maps: Vec<IdMap>,
    setgroups: SetGroups,
    hostname: Option<String>,
    domainname: Option<String>,
    time_offsets: Option<(i64, i64)>,
    setup: Vec<SetupFn>,
    cwd: Option<PathBuf>,
    user: Option<(u32, u32)>,
    groups: Option<Vec<u32>>,
    stdio: [Option<OwnedFd>; 3],
    pdeathsig: Option<i32>,
    exec_gate: Option<SetupFn>,
    exit_record: Option<OwnedFd>,
}

impl std::fmt::Debug for NsCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let program = match &self.program {
            Program::Exec { program, args } => format!("{program:?} {args:?}"),
            Program::Func(_) => "<function>".to_string(),
        };
        f.debug_struct("NsCommand")
            .field("program", &program)
            .field("new", &self.new)
            .field("joins", &self.joins.len())
            .field("uid_maps", &self.uid_maps)
            .field("gid_maps", &self.gid_maps)
            .field("hostname", &self.hostname)
            .field("setup", &self.setup.len())
            .finish_non_exhaustive()
    }
}

impl NsCommand {
    fn with_program(program: Program) -> Self {
        NsCommand {
            program,
            env_clear: false,
            env: BTreeMap::new(),
            new: NamespaceSet::new(),
            joins: Vec::new(),
            uid_maps: Vec::new(),
            gid_maps: Vec::new(),
            setgroups: SetGroups::Auto,
            hostname: None,
            domainname: None,
            time_offsets: None,
            setup: Vec::new(),
            cwd: None,
            user: None,
            groups: None,
            stdio: [None, None, None],
            pdeathsig: None,
            exec_gate: None,
            exit_record: None,
        }
    }

    /// Runs `program` (looked up in the child's `PATH` when it has no `/`), with `argv[0] = program`.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self::with_program(Program::Exec {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
        })
    }

    /// Runs `f` in the child instead of executing a program; its return value is the exit code.
    ///
    /// The function runs in a forked copy of the caller: it must not rely on other threads
    /// (their locks may be held forever). Useful for tests and for small helpers.
    /// Whatever it captures (e.g. a pipe's write end) stays alive in the caller until
    /// the `NsCommand` is dropped.
    pub fn from_fn(f: impl FnOnce() -> i32 + 'static) -> Self {
        Self::with_program(Program::Func(Box::new(f)))
    }

    /// Appends an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        if let Program::Exec { args, .. } = &mut self.program {
            args.push(arg.as_ref().to_owned());
        }
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .insert(key.as_ref().to_owned(), Some(value.as_ref().to_owned()));
        self
    }

    /// Removes an environment variable for the child.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.env.insert(key.as_ref().to_owned(), None);
        self
    }

    /// Starts the child with an empty environment (plus later [`env`](Self::env) calls).
    pub fn env_clear(&mut self) -> &mut Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// Creates these new namespaces for the child.
    pub fn new_namespaces(&mut self, set: impl Into<NamespaceSet>) -> &mut Self {
        self.new = self.new | set.into();
        self
    }

    /// Joins the namespace file at `path` (e.g. `/proc/1234/ns/net`, `/run/netns/a`).
    ///
    /// The file is opened by [`spawn`](Self::spawn) in the caller.
    pub fn join(&mut self, ns: Namespace, path: impl Into<PathBuf>) -> &mut Self {
        self.joins.push(Join::Path(ns, path.into()));
        self
    }

    /// Joins the namespace behind an already open namespace file.
    pub fn join_fd(&mut self, ns: Namespace, fd: OwnedFd) -> &mut Self {
        self.joins.push(Join::Fd(ns, fd));
        self
    }

    /// Joins the `set` namespaces of the process behind `pidfd` (Linux 5.8+).
    pub fn join_pidfd(&mut self, pidfd: OwnedFd, set: impl Into<NamespaceSet>) -> &mut Self {
        self.joins.push(Join::Pidfd(pidfd, set.into()));
        self
    }

    /// uid map written by [`Pending::release`] when a user namespace is created.
    ///
    /// Leave empty to write the maps yourself between spawn and release.
    pub fn uid_map(&mut self, maps: impl Into<Vec<IdMap>>) -> &mut Self {
        self.uid_maps = maps.into();
        self
    }

    /// gid map written by [`Pending::release`] when a user namespace is created.
    pub fn gid_map(&mut self, maps: impl Into<Vec<IdMap>>) -> &mut Self {
        self.gid_maps = maps.into();
        self
    }

    /// Policy for `/proc/<pid>/setgroups` (default [`SetGroups::Auto`]).
    pub fn setgroups(&mut self, policy: SetGroups) -> &mut Self {
        self.setgroups = policy;
        self
    }

    /// Hostname to set (needs a new or joined uts namespace to not affect the host).
    pub fn hostname(&mut self, name: impl Into<String>) -> &mut Self {
        self.hostname = Some(name.into());
        self
    }

    /// NIS domain name to set.
    pub fn domainname(&mut self, name: impl Into<String>) -> &mut Self {
        self.domainname = Some(name.into());
        self
    }

    /// Offsets (seconds) of the monotonic and boottime clocks in a new time namespace.
    pub fn time_offsets(&mut self, monotonic: i64, boottime: i64) -> &mut Self {
        self.time_offsets = Some((monotonic, boottime));
        self
    }

    /// Adds a closure run in the child after its namespaces exist and before exec.
    ///
    /// Use it for mounts and [`pivot_root`](crate::mount::pivot_root). Its error is
    /// sent to the parent and returned from [`Pending::release`] as [`Error::Child`]
    /// with stage [`ChildStage::Setup`] and the errno found in the error's chain.
    /// The closure runs in a forked copy of the caller: don't rely on other threads.
    pub fn setup<F>(&mut self, f: F) -> &mut Self
    where
        F: FnMut() -> std::result::Result<(), SetupError> + 'static,
    {
        self.setup.push(Box::new(f));
        self
    }

    /// Working directory for the program (applied after setup, so after pivot_root).
    pub fn current_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.cwd = Some(dir.into());
        self
    }

    /// uid and gid (as seen inside the namespaces) to run the program as.
    pub fn user(&mut self, uid: u32, gid: u32) -> &mut Self {
        self.user = Some((uid, gid));
        self
    }

    /// Supplementary groups for the program (default: cleared when [`user`](Self::user) is set).
    pub fn groups(&mut self, groups: impl Into<Vec<u32>>) -> &mut Self {
        self.groups = Some(groups.into());
        self
    }

    /// Descriptor to use as the child's stdin.
    pub fn stdin(&mut self, fd: impl Into<OwnedFd>) -> &mut Self {
        self.stdio[0] = Some(fd.into());
        self
    }

    /// Descriptor to use as the child's stdout.
    pub fn stdout(&mut self, fd: impl Into<OwnedFd>) -> &mut Self {
        self.stdio[1] = Some(fd.into());
        self
    }

    /// Descriptor to use as the child's stderr.
    pub fn stderr(&mut self, fd: impl Into<OwnedFd>) -> &mut Self {
        self.stdio[2] = Some(fd.into());
        self
    }

    /// Signal the child gets when the thread that spawned it exits (`PR_SET_PDEATHSIG`).
    pub fn parent_death_signal(&mut self, signal: i32) -> &mut Self {
        self.pdeathsig = Some(signal);
        self
    }

    /// Sets a closure run as the very last step before exec (after the credentials switch),
    /// which may block, e.g. opening an OCI-style exec fifo until `start`.
    ///
    /// With a gate, [`Pending::release`] returns as soon as the child reaches the gate;
    /// call [`Child::wait_exec`] to learn whether the gate and the exec succeeded.
    pub fn exec_gate<F>(&mut self, f: F) -> &mut Self
    where
        F: FnMut() -> std::result::Result<(), SetupError> + 'static,
    {
        self.exec_gate = Some(Box::new(f));
        self
    }

    /// Keeps a small **reaper** as the process's parent, so that its exit status outlives
    /// the caller: when the process ends, the reaper collects it, writes its raw wait
    /// status (4 bytes, native byte order) at the start of `record` and exits.
    ///
    /// Without it the process is the caller's own child, and once the caller is gone its
    /// new parent (init, or the nearest subreaper) collects the status where nobody reads
    /// it. This is what conmon and containerd's shim are for; here the reaper is the
    /// spawn helper itself, which stays instead of exiting: it runs raw system calls only
    /// (`setsid`, `close_range`, `waitpid`, `pwrite`), holds nothing but `record`, and is
    /// a copy-on-write fork of the caller. It stays in the namespaces the helper joined.
    ///
    /// [`Child::wait`] waits for the reaper (the caller's child) and reads the record;
    /// another process reads it with [`read_exit_record`] once the reaper has ended
    /// ([`Child::reaper_pid`] names it).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let record = std::fs::File::create("/run/example.exit")?;
    /// let mut child = kcore_ns::NsCommand::new("sh")
    ///     .args(["-c", "exit 7"])
    ///     .exit_record(record)
    ///     .run()?;
    /// assert_eq!(child.wait()?.code(), Some(7));
    /// let again = kcore_ns::read_exit_record(&std::fs::File::open("/run/example.exit")?)?;
    /// assert_eq!(again.and_then(|s| s.code()), Some(7));
    /// # Ok(())
    /// # }
    /// ```
    pub fn exit_record(&mut self, record: impl Into<OwnedFd>) -> &mut Self {
        self.exit_record = Some(record.into());
        self
    }

    /// Spawns and releases at once: for callers with nothing to do in between.
    pub fn run(&mut self) -> Result<Child> {
        self.spawn()?.release()
    }

    /// Creates the process and returns it blocked, with its host pid known.
    ///
    /// The command can be spawned again; descriptors given to `stdin`/`stdout`/`stderr`
    /// are used by the first spawn only (later ones inherit the caller's stdio).
    pub fn spawn(&mut self) -> Result<Pending> {
        let span = tracing::debug_span!("ns_spawn", new = %self.new, joins = self.joins.len());
        let _enter = span.enter();
        let prep = self.prepare()?;
        let lock = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let (status_r, status_w) = pipe()?;
        let (go_r, go_w) = go_channel()?;

        // SAFETY: fork is called with everything the child needs already allocated;
        // the child only runs our own code and ends in _exit or exec.
        let helper = unsafe { libc::fork() };
        if helper < 0 {
            return Err(Error::sys("fork"));
        }
        if helper == 0 {
            drop(status_r);
            drop(go_w);
            let status_fd = status_w.as_raw_fd();
            let go_fd = go_r.as_raw_fd();
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                helper_main(self, &prep, status_fd, go_fd)
            }));
            if res.is_err() {
                report(status_fd, ChildStage::Clone, None, "spawn helper panicked");
            }
            // SAFETY: _exit never returns and runs no atexit handlers of the parent.
            unsafe { libc::_exit(1) }
        }
        drop(status_w);
        drop(go_r);
        drop(lock);
        // The child's copies of the stdio descriptors are the ones that matter now.
        self.stdio = [None, None, None];
        let mut status = File::from(status_r);
        let msg = read_message(&mut status);
        // a helper that reported a pid stays as the reaper when asked to; any other ends
        let reaper = match (&msg, &self.exit_record) {
            (Ok(Some(Message::Pid(_))), Some(record)) => Some(Reaper {
                pid: helper,
                record: File::from(record.try_clone().map_err(|e| Error::Sys {
                    op: "dup",
                    source: e,
                })?),
            }),
            _ => None,
        };
        let helper_status = match reaper {
            Some(_) => None,
            None => Some(waitpid(helper)?),
        };
        let pid = match msg {
            Ok(Some(Message::Pid(pid))) => pid,
            Ok(Some(Message::Err {
                stage,
                errno,
                message,
            })) => {
                return Err(Error::Child {
                    pid: helper,
                    stage,
                    errno,
                    message,
                })
            }
            Ok(None) | Ok(Some(Message::Ready)) | Err(_) => {
                return Err(Error::HelperDied {
                    pid: helper,
                    status: helper_status.map_or_else(String::new, |s| s.to_string()),
                })
            }
        };
        tracing::debug!(pid, "spawned namespaced child, waiting for release");
        let pidfd = pidfd_open(pid).ok();
        Ok(Pending {
            pid,
            pidfd,
            reaper,
            go: Some(go_w),
            status: Some(status),
            user_ns: self.new.contains(Namespace::User),
            uid_maps: self.uid_maps.clone(),
            gid_maps: self.gid_maps.clone(),
            setgroups: self.setgroups,
        })
    }

    fn prepare(&mut self) -> Result<Prepared> {
        IdMap::format(&self.uid_maps)?;
        IdMap::format(&self.gid_maps)?;
        let mut env: BTreeMap<OsString, OsString> = if self.env_clear {
            BTreeMap::new()
        } else {
            std::env::vars_os().collect()
        };
        for (k, v) in &self.env {
            match v {
                Some(v) => env.insert(k.clone(), v.clone()),
                None => env.remove(k),
            };
        }
        let mut envp = Vec::new();
        for (k, v) in &env {
            let mut kv = k.clone().into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envp.push(cstring("environment variable", kv)?);
        }
        let (candidates, argv) = match &self.program {
            Program::Exec { program, args } => {
                let mut argv = vec![cstring("argument", program.as_bytes().to_vec())?];
                for a in args {
                    argv.push(cstring("argument", a.as_bytes().to_vec())?);
                }
                let candidates = if program.as_bytes().contains(&b'/') {
                    vec![cstring("program", program.as_bytes().to_vec())?]
                } else {
                    let path = env
                        .get(OsStr::new("PATH"))
                        .map(|p| p.as_bytes().to_vec())
                        .unwrap_or_else(|| DEFAULT_PATH.as_bytes().to_vec());
                    let mut c = Vec::new();
                    for dir in path.split(|b| *b == b':').filter(|d| !d.is_empty()) {
                        let mut full = dir.to_vec();
                        full.push(b'/');
                        full.extend_from_slice(program.as_bytes());
                        c.push(cstring("program", full)?);
                    }
                    c
                };
                (candidates, argv)
            }
            Program::Func(_) => (Vec::new(), Vec::new()),
        };
        let mut joins = Vec::new();
        for j in &self.joins {
            match j {
                Join::Path(ns, path) => {
                    let f = open_ns(path)?;
                    joins.push((
                        OwnedFd::from(f),
                        ns.clone_flag(),
                        path.display().to_string(),
                    ));
                }
                Join::Fd(ns, fd) => {
                    let dup = fd.try_clone().map_err(|e| Error::Sys {
                        op: "dup",
                        source: e,
                    })?;
                    joins.push((dup, ns.clone_flag(), format!("{ns} fd")));
                }
                Join::Pidfd(fd, set) => {
                    let dup = fd.try_clone().map_err(|e| Error::Sys {
                        op: "dup",
                        source: e,
                    })?;
                    joins.push((dup, set.clone_flags(), format!("pidfd ({set})")));
                }
            }
        }
        // Join the user namespace last so the other joins still use our privileges.
        joins.sort_by_key(|(_, flags, _)| *flags & libc::CLONE_NEWUSER != 0);
        let cwd = match &self.cwd {
            Some(p) => Some(cstring(
                "working directory",
                p.as_os_str().as_bytes().to_vec(),
            )?),
            None => None,
        };
        let time_offsets = self.time_offsets.map(|(mono, boot)| {
            format!(
                "{} {mono} 0\n{} {boot} 0\n",
                libc::CLOCK_MONOTONIC,
                libc::CLOCK_BOOTTIME
            )
        });
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        let exit_record = self.exit_record.as_ref().map(|f| f.as_raw_fd());
        Ok(Prepared {
            exit_record,
            candidates,
            _argv: argv,
            _envp: envp,
            argv_ptrs,
            envp_ptrs,
            joins,
            cwd,
            time_offsets,
        })
    }
}

struct Prepared {
    /// The reaper's record (see [`NsCommand::exit_record`]).
    exit_record: Option<RawFd>,
    candidates: Vec<CString>,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    joins: Vec<(OwnedFd, libc::c_int, String)>,
    cwd: Option<CString>,
    time_offsets: Option<String>,
}

/// A spawned process, blocked before its setup, waiting for [`release`](Pending::release).
///
/// Dropping it without releasing kills and reaps the process.
#[derive(Debug)]
pub struct Pending {
    pid: i32,
    pidfd: Option<OwnedFd>,
    reaper: Option<Reaper>,
    go: Option<OwnedFd>,
    status: Option<File>,
    user_ns: bool,
    uid_maps: Vec<IdMap>,
    gid_maps: Vec<IdMap>,
    setgroups: SetGroups,
}

impl Pending {
    /// The process's pid in the caller's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A pidfd for the process, when the kernel supports `pidfd_open`.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|f| f.as_fd())
    }

    /// The pid of the process's [reaper](NsCommand::exit_record), when it has one.
    pub fn reaper_pid(&self) -> Option<i32> {
        self.reaper.as_ref().map(|r| r.pid)
    }

    /// Writes the id maps (if a user namespace was created), lets the process run
    /// its setup and exec, and waits until the exec happened or the child failed.
    pub fn release(mut self) -> Result<Child> {
        let span = tracing::debug_span!("ns_release", pid = self.pid);
        let _enter = span.enter();
        if self.user_ns && (!self.uid_maps.is_empty() || !self.gid_maps.is_empty()) {
            write_id_maps(self.pid, &self.uid_maps, &self.gid_maps, self.setgroups)?;
        }
        let go = self.go.as_ref().expect("release called once");
        // MSG_NOSIGNAL: a child that died early gives EPIPE, never SIGPIPE in the caller.
        // SAFETY: one valid byte from a live buffer on an open socket.
        let sent =
            unsafe { libc::send(go.as_raw_fd(), [1u8].as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
        if sent != 1 {
            // Dropping self (go still set) kills and reaps the child.
            return Err(Error::sys("release child"));
        }
        drop(self.go.take());
        let mut status = self.status.take().expect("release called once");
        let msg = read_message(&mut status);
        let mut child = Child {
            pid: self.pid,
            pidfd: self.pidfd.take(),
            reaper: self.reaper.take(),
            status: None,
            exec_status: None,
        };
        match msg {
            Ok(None) => Ok(child),
            Ok(Some(Message::Ready)) => {
                child.exec_status = Some(status);
                Ok(child)
            }
            Ok(Some(Message::Err {
                stage,
                errno,
                message,
            })) => {
                let _ = child.wait();
                Err(Error::Child {
                    pid: child.pid,
                    stage,
                    errno,
                    message,
                })
            }
            Ok(Some(Message::Pid(_))) | Err(_) => {
                let status = child.wait()?;
                Err(Error::HelperDied {
                    pid: child.pid,
                    status: status.to_string(),
                })
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.go.is_some() {
            match &self.reaper {
                // the reaper collects the process and then ends
                Some(r) => {
                    let _ = send_signal(self.pidfd.as_ref(), self.pid, libc::SIGKILL);
                    let _ = waitpid(r.pid);
                }
                None => {
                    // SAFETY: pid is our unreaped child, so it cannot have been reused.
                    unsafe { libc::kill(self.pid, libc::SIGKILL) };
                    let _ = waitpid(self.pid);
                }
            }
        }
    }
}

/// Writes `/proc/<pid>/{setgroups,uid_map,gid_map}` for a process in a new user namespace.
pub fn write_id_maps(
    pid: i32,
    uid_maps: &[IdMap],
    gid_maps: &[IdMap],
    setgroups: SetGroups,
) -> Result<()> {
    let uid = IdMap::format(uid_maps)?;
    let gid = IdMap::format(gid_maps)?;
    // SAFETY: geteuid has no preconditions.
    let privileged = unsafe { libc::geteuid() } == 0;
    let deny = match setgroups {
        SetGroups::Deny => true,
        SetGroups::Allow => false,
        SetGroups::Auto => !privileged,
    };
    let base = PathBuf::from(format!("/proc/{pid}"));
    if !gid.is_empty() && deny {
        let p = base.join("setgroups");
        std::fs::write(&p, "deny").map_err(|e| Error::path("write", p, e))?;
    }
    if !uid.is_empty() {
        let p = base.join("uid_map");
        std::fs::write(&p, uid).map_err(|e| Error::path("write", p, e))?;
    }
    if !gid.is_empty() {
        let p = base.join("gid_map");
        std::fs::write(&p, gid).map_err(|e| Error::path("write", p, e))?;
    }
    Ok(())
}

/// A released process: the caller's child.
///
/// Dropping it neither kills nor reaps the process.
#[derive(Debug)]
pub struct Child {
    pid: i32,
    pidfd: Option<OwnedFd>,
    reaper: Option<Reaper>,
    status: Option<ExitStatus>,
    exec_status: Option<File>,
}

impl Child {
    /// The process's pid in the caller's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A pidfd for the process, when the kernel supports `pidfd_open`.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|f| f.as_fd())
    }

    /// The pid of the process's [reaper](NsCommand::exit_record), when it has one.
    pub fn reaper_pid(&self) -> Option<i32> {
        self.reaper.as_ref().map(|r| r.pid)
    }

    /// With an [exec gate](NsCommand::exec_gate): waits until the child passed the gate
    /// and executed its program (`Ok`), or failed there ([`Error::Child`]; the child then
    /// exits with code 127). Without a gate the exec already happened: returns `Ok` at once.
    pub fn wait_exec(&mut self) -> Result<()> {
        let Some(mut status) = self.exec_status.take() else {
            return Ok(());
        };
        match read_message(&mut status) {
            Ok(None) => Ok(()),
            Ok(Some(Message::Err {
                stage,
                errno,
                message,
            })) => Err(Error::Child {
                pid: self.pid,
                stage,
                errno,
                message,
            }),
            Ok(Some(other)) => Err(Error::Invalid(format!(
                "unexpected message {other:?} from child {}",
                self.pid
            ))),
            Err(e) => Err(Error::Sys {
                op: "read child status",
                source: e,
            }),
        }
    }

    /// Sends `signal` (through the pidfd when there is one, so never to a reused pid).
    pub fn kill(&self, signal: i32) -> Result<()> {
        if self.status.is_some() {
            return Err(Error::Reaped { pid: self.pid });
        }
        send_signal(self.pidfd.as_ref(), self.pid, signal)
    }

    /// Waits for the process to end and reaps it (returns the same status if called again).
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let s = match &self.reaper {
            Some(r) => {
                let reaper = waitpid(r.pid)?;
                r.status(self.pid, reaper)?
            }
            None => waitpid(self.pid)?,
        };
        self.status = Some(s);
        Ok(s)
    }

    /// Reaps the process if it has ended.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let waited = self.reaper.as_ref().map_or(self.pid, |r| r.pid);
        let mut raw = 0;
        // SAFETY: valid out pointer.
        let rc = unsafe { libc::waitpid(waited, &mut raw, libc::WNOHANG) };
        match rc {
            0 => Ok(None),
            r if r < 0 => Err(Error::sys("waitpid")),
            _ => {
                let s = match &self.reaper {
                    Some(r) => r.status(self.pid, ExitStatus::from_raw(raw))?,
                    None => ExitStatus::from_raw(raw),
                };
                self.status = Some(s);
                Ok(Some(s))
            }
        }
    }
}

/// A process's reaper: the spawn helper, kept as its parent (see [`NsCommand::exit_record`]).
#[derive(Debug)]
struct Reaper {
    pid: i32,
    record: File,
}

impl Reaper {
    /// The status the reaper (which ended with `reaper`) recorded for process `child`.
    fn status(&self, child: i32, reaper: ExitStatus) -> Result<ExitStatus> {
        read_exit_record(&self.record)
            .map_err(|e| Error::Sys {
                op: "read the exit record",
                source: e,
            })?
            .ok_or(Error::ReaperDied {
                pid: self.pid,
                child,
                status: reaper.to_string(),
            })
    }
}

/// The exit status a [reaper](NsCommand::exit_record) wrote to `record`: `None` when it
/// wrote none (the process still runs, or the reaper was killed first).
pub fn read_exit_record(record: &File) -> std::io::Result<Option<ExitStatus>> {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 4];
    let mut got = 0;
    while got < b.len() {
        match record.read_at(&mut b[got..], got as u64) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(ExitStatus::from_raw(i32::from_ne_bytes(b))))
}

/// Sends `signal` to `pid` through its pidfd when there is one (never to a reused pid).
fn send_signal(pidfd: Option<&OwnedFd>, pid: i32, signal: i32) -> Result<()> {
    let rc = match pidfd {
        // SAFETY: the pidfd is valid; a null siginfo is allowed.
        Some(fd) => unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            ) as i32
        },
        // SAFETY: pid is an unreaped child of ours or of our reaper.
        None => unsafe { libc::kill(pid, signal) },
    };
    if rc != 0 {
        return Err(Error::sys("kill"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// child side

fn helper_main(cmd: &mut NsCommand, prep: &Prepared, status: RawFd, go: RawFd) -> ! {
    for (fd, flags, what) in &prep.joins {
        // SAFETY: fd is open (inherited across fork).
        if unsafe { libc::setns(fd.as_raw_fd(), *flags) } != 0 {
            let e = std::io::Error::last_os_error();
            fail(
                status,
                ChildStage::Join,
                e.raw_os_error(),
                &format!("setns {what}: {e}"),
            );
        }
    }
    if cmd.new.contains(Namespace::Time) {
        // SAFETY: plain syscall; this helper is single-threaded.
        if unsafe { libc::unshare(CLONE_NEWTIME) } != 0 {
            let e = std::io::Error::last_os_error();
            fail(
                status,
                ChildStage::TimeNamespace,
                e.raw_os_error(),
                &format!("unshare time: {e}"),
            );
        }
        if let Some(offsets) = &prep.time_offsets {
            if let Err(e) = std::fs::write("/proc/self/timens_offsets", offsets) {
                fail(
                    status,
                    ChildStage::TimeNamespace,
                    e.raw_os_error(),
                    &format!("write /proc/self/timens_offsets: {e}"),
                );
            }
        }
    }
    let mut new = cmd.new;
    new.remove(Namespace::Time);
    new.remove(Namespace::Cgroup);
    // the new process is the caller's child, or the reaper's (this helper's)
    let parent = if prep.exit_record.is_some() {
        0
    } else {
        libc::CLONE_PARENT as u64
    };
    let flags = new.clone_flags() as u64 | parent;
    let pid = clone_fork(flags);
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        fail(
            status,
            ChildStage::Clone,
            e.raw_os_error(),
            &format!("clone ({new}): {e}"),
        );
    }
    if pid == 0 {
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            container_main(cmd, prep, status, go)
        }));
        let _ = res;
        fail(status, ChildStage::Setup, None, "child panicked");
    }
    let mut msg = vec![MSG_PID];
    msg.extend_from_slice(&(pid as i32).to_le_bytes());
    write_all(status, &msg);
    if let Some(record) = prep.exit_record {
        // SAFETY: this is the forked helper; reaper_main never returns.
        unsafe { reaper_main(pid as i32, record) }
    }
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(0) }
}

/// The reaper's name (`/proc/<pid>/comm`).
const REAPER_NAME: &[u8] = b"kcore-reaper\0";
/// The reaper's record, after it closed everything else.
const RECORD_FD: i32 = 3;

/// The helper as the reaper of `pid` (see [`NsCommand::exit_record`]): holds only
/// `record`, collects `pid` and writes its raw wait status there, then exits.
///
/// # Safety
///
/// Call only in the forked helper, whose child `pid` is; it never returns.
unsafe fn reaper_main(pid: i32, record: RawFd) -> ! {
    // SAFETY: async-signal-safe system calls on integers, locals and a static string.
    unsafe {
        // out of the caller's session and process group (a signal to them is not ours)
        libc::setsid();
        libc::prctl(libc::PR_SET_NAME, REAPER_NAME.as_ptr());
        // keep the record as fd 3 and nothing else: the status pipe's write end must
        // close, or the caller's release would wait for it forever
        let r = libc::fcntl(record, libc::F_DUPFD_CLOEXEC, 64);
        if r < 0 || libc::dup2(r, RECORD_FD) < 0 {
            libc::_exit(1);
        }
        libc::syscall(libc::SYS_close_range, 0u32, RECORD_FD as u32 - 1, 0u32);
        libc::syscall(libc::SYS_close_range, RECORD_FD as u32 + 1, u32::MAX, 0u32);
        // the caller's handlers are no use here; a terminal's signals never come (no tty)
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        let mut raw = 0;
        loop {
            let rc = libc::waitpid(pid, &mut raw, 0);
            if rc == pid {
                break;
            }
            if rc < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(1);
            }
        }
        let b = raw.to_ne_bytes();
        let mut off = 0usize;
        while off < b.len() {
            let n = libc::pwrite(
                RECORD_FD,
                b[off..].as_ptr().cast(),
                b.len() - off,
                off as libc::off_t,
            );
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                libc::_exit(1);
            }
            off += n as usize;
        }
        libc::_exit(0)
    }
}

fn container_main(cmd: &mut NsCommand, prep: &Prepared, status: RawFd, go: RawFd) -> ! {
    if let Some(sig) = cmd.pdeathsig {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
        // If the spawner died before this took effect, the release pipe below reads EOF.
    }
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reading one byte into a valid buffer.
        let n = unsafe { libc::read(go, b.as_mut_ptr().cast(), 1) };
        if n == 1 {
            break;
        }
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // The parent dropped the Pending without releasing: quietly go away.
        // SAFETY: _exit never returns.
        unsafe { libc::_exit(1) }
    }
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(go) };

    let check = |stage: ChildStage, rc: libc::c_int, what: &str| {
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            fail(status, stage, e.raw_os_error(), &format!("{what}: {e}"));
        }
    };
    if cmd.new.contains(Namespace::Cgroup) {
        // SAFETY: plain syscall.
        check(
            ChildStage::CgroupNamespace,
            unsafe { libc::unshare(libc::CLONE_NEWCGROUP) },
            "unshare cgroup",
        );
    }
    if cmd.new.contains(Namespace::User) {
        // Become root of the new namespace when 0 is mapped (EINVAL: not mapped).
        // SAFETY: plain syscalls.
        unsafe {
            if libc::setresgid(0, 0, 0) != 0 && errno() != libc::EINVAL {
                check(ChildStage::UserNamespaceRoot, -1, "setresgid 0");
            }
            if libc::setresuid(0, 0, 0) != 0 && errno() != libc::EINVAL {
                check(ChildStage::UserNamespaceRoot, -1, "setresuid 0");
            }
        }
    }
    if let Some(h) = &cmd.hostname {
        // SAFETY: pointer and length describe a valid buffer.
        check(
            ChildStage::Hostname,
            unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) },
            "sethostname",
        );
    }
    if let Some(d) = &cmd.domainname {
        // SAFETY: pointer and length describe a valid buffer.
        check(
            ChildStage::Hostname,
            unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) },
            "setdomainname",
        );
    }
    for f in &mut cmd.setup {
        if let Err(e) = f() {
            let (errno, message) = describe(&*e);
            fail(status, ChildStage::Setup, errno, &message);
        }
    }
    for (target, fd) in cmd.stdio.iter().enumerate() {
        if let Some(fd) = fd {
            let raw = fd.as_raw_fd();
            let target = target as RawFd;
            if raw == target {
                // SAFETY: clearing FD_CLOEXEC on an open descriptor.
                check(
                    ChildStage::Stdio,
                    unsafe { libc::fcntl(raw, libc::F_SETFD, 0) },
                    "fcntl",
                );
            } else {
                // SAFETY: dup2 on open descriptors.
                let rc = unsafe { libc::dup2(raw, target) };
                check(ChildStage::Stdio, if rc < 0 { -1 } else { 0 }, "dup2");
            }
        }
    }
    if let Some(cwd) = &prep.cwd {
        // SAFETY: valid C string.
        check(
            ChildStage::Chdir,
            unsafe { libc::chdir(cwd.as_ptr()) },
            "chdir",
        );
    }
    if cmd.user.is_some() || cmd.groups.is_some() {
        let groups = cmd.groups.clone().unwrap_or_default();
        // SAFETY: pointer and length describe a valid slice of gid_t.
        let rc = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
        // setgroups is refused when /proc/<pid>/setgroups says deny; an empty list is then moot.
        if rc != 0 && !(groups.is_empty() && errno() == libc::EPERM) {
            check(ChildStage::Credentials, -1, "setgroups");
        }
    }
    if let Some((uid, gid)) = cmd.user {
        // SAFETY: plain syscalls.
        check(
            ChildStage::Credentials,
            unsafe { libc::setresgid(gid, gid, gid) },
            "setresgid",
        );
        // SAFETY: plain syscalls.
        check(
            ChildStage::Credentials,
            unsafe { libc::setresuid(uid, uid, uid) },
            "setresuid",
        );
    }
    reset_signals();
    if let Some(gate) = &mut cmd.exec_gate {
        write_all(status, &[MSG_READY]);
        if let Err(e) = gate() {
            let (errno, message) = describe(&*e);
            fail(status, ChildStage::ExecGate, errno, &message);
        }
    }
    match std::mem::replace(&mut cmd.program, Program::Func(Box::new(|| 0))) {
        Program::Func(f) => {
            // SAFETY: closing our own descriptor, so the parent sees EOF (success).
            unsafe { libc::close(status) };
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: _exit never returns.
            unsafe { libc::_exit(code) }
        }
        Program::Exec { program, .. } => {
            let mut last = libc::ENOENT;
            for c in &prep.candidates {
                // SAFETY: argv and envp are null-terminated arrays of valid C strings.
                unsafe {
                    libc::execve(c.as_ptr(), prep.argv_ptrs.as_ptr(), prep.envp_ptrs.as_ptr())
                };
                let e = errno();
                if e != libc::ENOENT && e != libc::ENOTDIR {
                    last = e;
                    break;
                }
            }
            let e = std::io::Error::from_raw_os_error(last);
            fail(
                status,
                ChildStage::Exec,
                Some(last),
                &format!("exec {}: {e}", Path::new(&program).display()),
            );
        }
    }
}

fn reset_signals() {
    // SAFETY: sigset is initialised by sigemptyset before use; signal() with SIG_DFL is sound.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Renders an error with its sources and finds the errno at the bottom.
fn describe(e: &(dyn std::error::Error + 'static)) -> (Option<i32>, String) {
    let mut message = e.to_string();
    let mut errno = e.downcast_ref::<Error>().and_then(Error::raw_os_error);
    let mut cur = e.source();
    while let Some(s) = cur {
        message.push_str(": ");
        message.push_str(&s.to_string());
        if errno.is_none() {
            errno = s
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error);
        }
        cur = s.source();
    }
    if errno.is_none() {
        errno = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error);
    }
    (errno, message)
}

fn fail(status: RawFd, stage: ChildStage, errno: Option<i32>, message: &str) -> ! {
    report(status, stage, errno, message);
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(127) }
}

fn report(status: RawFd, stage: ChildStage, errno: Option<i32>, message: &str) {
    write_all(status, &encode_error(stage, errno, message));
}

fn encode_error(stage: ChildStage, errno: Option<i32>, message: &str) -> Vec<u8> {
    let bytes = &message.as_bytes()[..message.len().min(4096)];
    let mut msg = vec![MSG_ERR, stage.to_u8()];
    msg.extend_from_slice(&errno.unwrap_or(-1).to_le_bytes());
    msg.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    msg.extend_from_slice(bytes);
    msg
}

fn write_all(fd: RawFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: buf is a valid slice.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return;
        }
        buf = &buf[n as usize..];
    }
}

#[derive(Debug, PartialEq)]
enum Message {
    Pid(i32),
    Ready,
    Err {
        stage: ChildStage,
        errno: Option<i32>,
        message: String,
    },
}

/// Reads one message; `Ok(None)` on a clean EOF.
fn read_message(r: &mut impl Read) -> std::io::Result<Option<Message>> {
    let mut tag = [0u8; 1];
    loop {
        match r.read(&mut tag) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    match tag[0] {
        MSG_READY => Ok(Some(Message::Ready)),
        MSG_PID => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)?;
            Ok(Some(Message::Pid(i32::from_le_bytes(b))))
        }
        MSG_ERR => {
            let mut head = [0u8; 9];
            r.read_exact(&mut head)?;
            let stage = ChildStage::from_u8(head[0]).unwrap_or(ChildStage::Setup);
            let errno = i32::from_le_bytes([head[1], head[2], head[3], head[4]]);
            let len = u32::from_le_bytes([head[5], head[6], head[7], head[8]]) as usize;
            let mut msg = vec![0u8; len.min(4096)];
            r.read_exact(&mut msg)?;
            Ok(Some(Message::Err {
                stage,
                errno: (errno >= 0).then_some(errno),
                message: String::from_utf8_lossy(&msg).into_owned(),
            }))
        }
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unknown message tag {other}"),
        )),
    }
}

#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// fork-like clone with namespace flags: clone3, falling back to clone.
fn clone_fork(flags: u64) -> libc::c_long {
    let args = CloneArgs {
        flags,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        // clone3 rejects an exit signal with CLONE_PARENT: the child inherits ours (SIGCHLD).
        exit_signal: if flags & libc::CLONE_PARENT as u64 != 0 {
            0
        } else {
            libc::SIGCHLD as u64
        },
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: 0,
    };
    // SAFETY: args is a valid clone_args of the given size; with no stack the child
    // continues on a copy of our stack like fork, and this process is single-threaded.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 && errno() == libc::ENOSYS {
        // SAFETY: as above, the classic clone syscall with a null stack behaves like fork.
        return unsafe {
            libc::syscall(
                libc::SYS_clone,
                flags | libc::SIGCHLD as u64,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
    }
    r
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::sys("pipe2"));
    }
    // SAFETY: the kernel gave us two fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The release channel: a close-on-exec socket pair (so the parent can send with MSG_NOSIGNAL).
fn go_channel() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(Error::sys("socketpair"));
    }
    // SAFETY: the kernel gave us two fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn waitpid(pid: i32) -> Result<ExitStatus> {
    let mut raw = 0;
    loop {
        // SAFETY: valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut raw, 0) };
        if rc == pid {
            return Ok(ExitStatus::from_raw(raw));
        }
        if rc < 0 && errno() != libc::EINTR {
            return Err(Error::sys("waitpid"));
        }
    }
}

fn cstring(what: &'static str, bytes: Vec<u8>) -> Result<CString> {
    CString::new(bytes).map_err(|e| Error::Nul {
        what,
        value: String::from_utf8_lossy(&e.into_vec()).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_round_trip() {
        let bytes = encode_error(ChildStage::Setup, Some(libc::ENOENT), "mount failed");
        let msg = read_message(&mut &bytes[..]).unwrap().unwrap();
        assert_eq!(
            msg,
            Message::Err {
                stage: ChildStage::Setup,
                errno: Some(libc::ENOENT),
                message: "mount failed".into()
            }
        );
        let bytes = encode_error(ChildStage::Exec, None, "x");
        match read_message(&mut &bytes[..]).unwrap().unwrap() {
            Message::Err { errno, stage, .. } => {
                assert_eq!(errno, None);
                assert_eq!(stage, ChildStage::Exec);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(read_message(&mut &[][..]).unwrap(), None);
        let mut pid = vec![MSG_PID];
        pid.extend_from_slice(&77i32.to_le_bytes());
        assert_eq!(read_message(&mut &pid[..]).unwrap(), Some(Message::Pid(77)));
        assert!(read_message(&mut &[9u8][..]).is_err());
    }

    #[test]
    fn describe_finds_errno_in_chain() {
        let e = Error::path(
            "open",
            "/nope",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        let boxed: SetupError = Box::new(e);
        let (errno, msg) = describe(&*boxed);
        assert_eq!(errno, Some(libc::ENOENT));
        assert!(msg.starts_with("failed to open /nope: "), "{msg}");
    }

    #[test]
    fn exit_status_decoding() {
        assert_eq!(ExitStatus::from_raw(3 << 8), ExitStatus::Exited(3));
        assert_eq!(ExitStatus::from_raw(9), ExitStatus::Signaled(9));
        assert!(ExitStatus::Exited(0).success());
        assert_eq!(ExitStatus::Signaled(9).signal(), Some(9));
        assert_eq!(ExitStatus::Exited(2).code(), Some(2));
    }

    #[test]
    fn exec_path_search_uses_child_path() {
        let mut cmd = NsCommand::new("prog");
        cmd.env_clear().env("PATH", "/a:/b");
        let prep = cmd.prepare().unwrap();
        let c: Vec<_> = prep
            .candidates
            .iter()
            .map(|c| c.to_str().unwrap())
            .collect();
        assert_eq!(c, vec!["/a/prog", "/b/prog"]);
        assert_eq!(prep.envp_ptrs.len(), 2);
        assert!(NsCommand::new("a\0b").prepare().is_err());
    }
}
