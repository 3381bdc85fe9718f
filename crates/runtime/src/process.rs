//! The user process's credentials, capabilities, limits and terminal, applied by the
//! container process (or an exec'd process) just before it executes the program.

use std::collections::HashSet;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability as Cap, CapsHashSet};
use oci_spec::runtime::{Capabilities, PosixRlimitType, Process};

use crate::error::{Error, Result};
use crate::seccomp::SeccompProgram;

type R<T = ()> = std::result::Result<T, kcore_ns::SetupError>;

/// The five capability sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CapsPlan {
    pub bounding: CapsHashSet,
    /// Capabilities the kernel knows that are not in `bounding` (computed by the runtime).
    pub bounding_drop: Vec<Cap>,
    pub effective: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub permitted: CapsHashSet,
    pub ambient: CapsHashSet,
}

fn convert(set: &Option<Capabilities>) -> CapsHashSet {
    let mut out = HashSet::new();
    for c in set.iter().flatten() {
        // oci-spec prints `SYS_ADMIN`; caps parses `CAP_SYS_ADMIN`. Capabilities this
        // kernel/library does not know are skipped, as runc does.
        if let Ok(cap) = format!("CAP_{c}").parse::<Cap>() {
            out.insert(cap);
        }
    }
    out
}

/// What the process needs applied before exec.
#[derive(Debug, Clone)]
pub(crate) struct ProcessPlan {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub cwd: PathBuf,
    pub caps: Option<CapsPlan>,
    pub no_new_privs: bool,
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    pub seccomp: Option<SeccompProgram>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub terminal: bool,
    pub console_size: Option<(u16, u16)>,
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType as T;
    match t {
        T::RlimitCpu => libc::RLIMIT_CPU,
        T::RlimitFsize => libc::RLIMIT_FSIZE,
        T::RlimitData => libc::RLIMIT_DATA,
        T::RlimitStack => libc::RLIMIT_STACK,
        T::RlimitCore => libc::RLIMIT_CORE,
        T::RlimitRss => libc::RLIMIT_RSS,
        T::RlimitNproc => libc::RLIMIT_NPROC,
        T::RlimitNofile => libc::RLIMIT_NOFILE,
        T::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        T::RlimitAs => libc::RLIMIT_AS,
        T::RlimitLocks => libc::RLIMIT_LOCKS,
        T::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        T::RlimitNice => libc::RLIMIT_NICE,
        T::RlimitRtprio => libc::RLIMIT_RTPRIO,
        T::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

impl ProcessPlan {
    /// Builds the plan from a spec `process` (seccomp comes from `linux.seccomp`).
    pub fn from_spec(p: &Process, seccomp: Option<SeccompProgram>) -> Result<ProcessPlan> {
        let user = p.user();
        let known = caps::runtime::procfs_all_supported(None).unwrap_or_else(|_| caps::all());
        let caps = p.capabilities().as_ref().map(|c| CapsPlan {
            bounding_drop: {
                let b = convert(c.bounding());
                let mut d: Vec<Cap> = known.difference(&b).copied().collect();
                d.sort_by_key(|c| c.index());
                d
            },
            bounding: convert(c.bounding()),
            effective: convert(c.effective()),
            inheritable: convert(c.inheritable()),
            permitted: convert(c.permitted()),
            ambient: convert(c.ambient()),
        });
        let env = p
            .env()
            .iter()
            .flatten()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        Ok(ProcessPlan {
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask(),
            cwd: p.cwd().clone(),
            caps,
            no_new_privs: p.no_new_privileges().unwrap_or(false),
            rlimits: p
                .rlimits()
                .iter()
                .flatten()
                .map(|r| (rlimit_resource(r.typ()), r.soft(), r.hard()))
                .collect(),
            seccomp,
            args: p
                .args()
                .clone()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| Error::spec("process.args", "must name a program"))?,
            env,
            terminal: p.terminal().unwrap_or(false),
            console_size: p
                .console_size()
                .map(|b| (b.height().min(65535) as u16, b.width().min(65535) as u16)),
        })
    }

    /// The program's `PATH` (the spec's env, else the usual default).
    fn path_var(&self) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    }

    /// Fails early (during `create`) when the program cannot be found in the container.
    pub fn check_program(&self) -> R {
        let prog = &self.args[0];
        let found = if prog.contains('/') {
            let p = if Path::new(prog).is_absolute() {
                PathBuf::from(prog)
            } else {
                self.cwd.join(prog)
            };
            p.is_file()
        } else {
            self.path_var()
                .split(':')
                .filter(|d| !d.is_empty())
                .any(|d| Path::new(d).join(prog).is_file())
        };
        if found {
            Ok(())
        } else {
            Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("exec {prog}: no such file or directory in the container"),
            )))
        }
    }

    /// rlimits, bounding set, user and groups, capabilities, cwd, umask, no_new_privs,
    /// and (when no_new_privs is off) seccomp, which then needs the privileges still held.
    pub fn finalize(&self) -> R {
        for (res, soft, hard) in &self.rlimits {
            let lim = libc::rlimit {
                rlim_cur: *soft,
                rlim_max: *hard,
            };
            // SAFETY: valid rlimit struct.
            if unsafe { libc::setrlimit(*res, &lim) } != 0 {
                return Err(os_err(&format!("setrlimit {res}")));
            }
        }
        if let Some(c) = &self.caps {
            for cap in &c.bounding_drop {
                caps::drop(None, CapSet::Bounding, *cap)
                    .map_err(|e| format!("drop {cap} from the bounding set: {e}"))?;
            }
        }
        let cwd = crate::mounts::cstr(&self.cwd)?;
        // SAFETY: valid C string; retried after the user switch if it fails now.
        let cwd_ok = unsafe { libc::chdir(cwd.as_ptr()) } == 0;
        if !self.no_new_privs {
            if let Some(s) = &self.seccomp {
                s.install()
                    .map_err(|e| format!("install seccomp filter: {e}"))?;
            }
        }
        // SAFETY: prctl with integer arguments; syscalls with valid buffers.
        unsafe {
            if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
                return Err(os_err("prctl(PR_SET_KEEPCAPS)"));
            }
            let g = &self.additional_gids;
            if libc::setgroups(g.len(), g.as_ptr()) != 0
                && !(g.is_empty() && errno() == libc::EPERM)
            {
                return Err(os_err("setgroups"));
            }
            if libc::setresgid(self.gid, self.gid, self.gid) != 0 {
                return Err(os_err(&format!("setresgid {}", self.gid)));
            }
            if libc::setresuid(self.uid, self.uid, self.uid) != 0 {
                return Err(os_err(&format!("setresuid {}", self.uid)));
            }
            if libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0 {
                return Err(os_err("prctl(PR_SET_KEEPCAPS)"));
            }
            if !cwd_ok && libc::chdir(cwd.as_ptr()) != 0 {
                return Err(os_err(&format!("chdir {}", self.cwd.display())));
            }
        }
        if let Some(c) = &self.caps {
            let step = |what: &str, r: std::result::Result<(), caps::errors::CapsError>| {
                r.map_err(|e| -> kcore_ns::SetupError {
                    format!("set {what} capabilities: {e}").into()
                })
            };
            step(
                "inheritable",
                caps::set(None, CapSet::Inheritable, &c.inheritable),
            )?;
            let eff: CapsHashSet = c.effective.intersection(&c.permitted).copied().collect();
            step("effective", caps::set(None, CapSet::Effective, &eff))?;
            step(
                "permitted",
                caps::set(None, CapSet::Permitted, &c.permitted),
            )?;
            step("effective", caps::set(None, CapSet::Effective, &eff))?;
            step("ambient", caps::clear(None, CapSet::Ambient))?;
            for cap in &c.ambient {
                if c.permitted.contains(cap) && c.inheritable.contains(cap) {
                    step("ambient", caps::raise(None, CapSet::Ambient, *cap))?;
                }
            }
        }
        if let Some(m) = self.umask {
            // SAFETY: umask cannot fail.
            unsafe { libc::umask(m as libc::mode_t) };
        }
        if self.no_new_privs {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(os_err("prctl(PR_SET_NO_NEW_PRIVS)"));
            }
        }
        Ok(())
    }

    /// The last step before exec: seccomp (when no_new_privs is on) and marking every
    /// descriptor above the preserved ones close-on-exec.
    pub fn last_step(&self, preserve_fds: u32) -> R {
        if self.no_new_privs {
            if let Some(s) = &self.seccomp {
                s.install()
                    .map_err(|e| format!("install seccomp filter: {e}"))?;
            }
        }
        // SAFETY: plain syscall with integer arguments.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3 + preserve_fds,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        Ok(())
    }
}

/// Points descriptors 0-2 that are `/dev/null` (any char device 1:3, such as the
/// host's an engine passed) at the container's own `/dev/null`, as runc's
/// `reOpenDevNull`: a descriptor into a mount outside the container cannot be
/// checkpointed. Runs after the root switch.
pub(crate) fn reopen_dev_null() -> R {
    // SAFETY: open/fstat/dup3/close on descriptors this process owns.
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(os_err("open /dev/null in the container"));
        }
        let is_null = |fd: i32| {
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstat(fd, &mut st) == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFCHR
                && st.st_rdev == libc::makedev(1, 3)
        };
        if !is_null(fd) {
            libc::close(fd);
            return Err("the container's /dev/null is not the null device".into());
        }
        for i in 0..3 {
            if is_null(i) && libc::dup3(fd, i, 0) < 0 {
                let e = os_err("reopen /dev/null");
                libc::close(fd);
                return Err(e);
            }
        }
        libc::close(fd);
    }
    Ok(())
}

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub(crate) fn os_err(what: &str) -> kcore_ns::SetupError {
    let e = std::io::Error::last_os_error();
    Box::new(std::io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// Creates a pty in the container's devpts, sends the master over `socket`
/// (SCM_RIGHTS), and makes the slave the controlling terminal and stdio.
pub(crate) fn setup_console(socket: RawFd, size: Option<(u16, u16)>, bind_console: bool) -> R {
    // SAFETY: valid C string; checked result.
    let master = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if master < 0 {
        return Err(os_err("open /dev/ptmx"));
    }
    let mut unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    // SAFETY: ioctls on our pty master with valid out pointers.
    unsafe {
        if libc::ioctl(master, libc::TIOCSPTLCK, &mut unlock) != 0 {
            return Err(os_err("unlock pty"));
        }
        if libc::ioctl(master, libc::TIOCGPTN, &mut n) != 0 {
            return Err(os_err("get pty number"));
        }
    }
    let slave_path = format!("/dev/pts/{n}");
    let c_slave = std::ffi::CString::new(slave_path.clone()).unwrap_or_default();
    // SAFETY: valid C string.
    let slave = unsafe {
        libc::open(
            c_slave.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(os_err(&format!("open {slave_path}")));
    }
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: valid winsize pointer.
        unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) };
    }
    if bind_console {
        // SAFETY: `slave` is open for the rest of this function.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(slave) };
        crate::mounts::bind_console(fd)?;
    }
    send_fd(socket, master, slave_path.as_bytes()).map_err(|e| format!("send pty master: {e}"))?;
    // SAFETY: closing our copy; syscalls on valid descriptors.
    unsafe {
        libc::close(master);
        if libc::setsid() < 0 {
            return Err(os_err("setsid"));
        }
        if libc::ioctl(slave, libc::TIOCSCTTY, 0) != 0 {
            return Err(os_err("set controlling terminal"));
        }
        for t in 0..3 {
            if libc::dup2(slave, t) < 0 {
                return Err(os_err("dup2 pty"));
            }
        }
        libc::close(slave);
    }
    Ok(())
}

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`: message boundaries kept, and
/// the other end's close seen as the end of the stream.
pub(crate) fn seqpacket_pair() -> crate::Result<(OwnedFd, OwnedFd)> {
    let mut sv = [0; 2];
    // SAFETY: valid out array of two descriptors.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(crate::Error::sys("socketpair"));
    }
    // SAFETY: fresh descriptors from the kernel, ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) })
}

/// Sends `fd` with `data` as payload over a unix socket.
pub(crate) fn send_fd(socket: RawFd, fd: RawFd, data: &[u8]) -> std::io::Result<()> {
    send_fds(socket, &[fd], data).map(|_| ())
}

/// Sends the descriptors `fds` (SCM_RIGHTS) with `data` in one `sendmsg`; returns how
/// many bytes of `data` went (all of it on a datagram socket, maybe fewer on a stream).
pub(crate) fn send_fds(socket: RawFd, fds: &[RawFd], data: &[u8]) -> std::io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let fd_bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: zeroed msghdr is valid; we fill in pointers to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg has a control buffer large enough for `fds`.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(fd_bytes) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(c),
                fd_bytes as usize,
            );
        }
    }
    loop {
        // SAFETY: msg refers to live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one descriptor sent with [`send_fd`]-style SCM_RIGHTS; returns it with the payload.
pub fn recv_fd(socket: RawFd) -> std::io::Result<(std::os::fd::OwnedFd, Vec<u8>)> {
    let mut data = vec![0u8; 4096];
    let (n, fds) = recv_fds(socket, &mut data, 1)?;
    let fd = fds.into_iter().next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "no descriptor in message")
    })?;
    data.truncate(n);
    Ok((fd, data))
}

/// Receives into `buf` with up to `max_fds` descriptors (close-on-exec); returns the
/// bytes read (0 at the end of the stream) and the descriptors. A message that carried
/// more descriptors than `max_fds` is an error (the kernel closed the rest).
pub(crate) fn recv_fds(
    socket: RawFd,
    buf: &mut [u8],
    max_fds: usize,
) -> std::io::Result<(usize, Vec<std::os::fd::OwnedFd>)> {
    use std::os::fd::FromRawFd;
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let fd_size = std::mem::size_of::<RawFd>();
    // SAFETY: pure computation.
    let space = unsafe { libc::CMSG_SPACE((max_fds.max(1) * fd_size) as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: zeroed msghdr is valid; pointers refer to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: valid socket and msghdr.
        let n = unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled the control buffer; each header is checked for its
    // level and type before its descriptors are read, and each is taken once.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(c);
                for i in 0..len / fd_size {
                    let fd = std::ptr::read_unaligned(data.add(i * fd_size).cast::<RawFd>());
                    fds.push(std::os::fd::OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("more than {max_fds} descriptors in one message"),
        ));
    }
    Ok((n, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_from_spec() {
        let p: Process = serde_json::from_str(
            r#"{"args": ["sh"], "cwd": "/tmp", "env": ["PATH=/x:/y", "A=b=c"],
                "user": {"uid": 5, "gid": 6, "additionalGids": [7], "umask": 18},
                "capabilities": {"bounding": ["CAP_KILL", "CAP_NET_RAW"], "effective": ["CAP_KILL"]},
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}], "noNewPrivileges": true}"#,
        )
        .unwrap();
        let plan = ProcessPlan::from_spec(&p, None).unwrap();
        assert_eq!(
            (plan.uid, plan.gid, plan.additional_gids.clone()),
            (5, 6, vec![7])
        );
        assert_eq!(plan.umask, Some(18));
        let c = plan.caps.as_ref().unwrap();
        assert!(c.bounding.contains(&Cap::CAP_NET_RAW) && c.bounding.len() == 2);
        assert!(c.permitted.is_empty());
        assert_eq!(plan.rlimits, vec![(libc::RLIMIT_NOFILE, 10, 20)]);
        assert!(plan.no_new_privs);
        assert_eq!(plan.path_var(), "/x:/y");
        assert_eq!(plan.env[1], ("A".into(), "b=c".into()));
    }

    #[test]
    fn fd_passing_round_trip() {
        let mut sv = [0; 2];
        // SAFETY: valid out array.
        let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) };
        assert_eq!(rc, 0);
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        use std::os::fd::AsRawFd;
        send_fd(sv[0], f.as_raw_fd(), b"name").unwrap();
        let (fd, data) = recv_fd(sv[1]).unwrap();
        assert_eq!(data, b"name");
        let got = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert!(got.to_string_lossy().ends_with("/stat"), "{got:?}");
        // SAFETY: closing our descriptors.
        unsafe {
            libc::close(sv[0]);
            libc::close(sv[1]);
        }
    }
}
