//! A container's stdin and terminal, held past the agent's life.
//!
//! A container with `stdin: true` reads from a pipe whose write end the agent holds; one
//! with `tty: true` runs on a pty whose master the agent holds. Were the agent the only
//! holder, its restart would end both: the pipe's reader sees end of file, the terminal
//! hangs up (`SIGHUP` to the shell on it). Upstream's containerd shim holds them; kcore
//! has no shim, so for each such container the agent forks a **keeper**: a process that
//! holds one descriptor (the stdin pipe's write end, or the pty master) and waits for
//! the container's process to end, then exits.
//!
//! - The keeper runs no Rust after the fork: only raw system calls (`setsid`, `prctl`,
//!   `dup2`, `close_range`, `poll`, `_exit`), as a child of a threaded process must. It
//!   keeps the descriptor as its fd 3 and a pidfd of the container's process as fd 4,
//!   and closes everything else. It is forked twice, so that it is nobody's zombie.
//! - Its pid is recorded in the pod's state dir (`<id>.keeper`). A restarted agent
//!   opens a pidfd on it, checks that it is a keeper (`comm` is `kcore-stdio`) watching
//!   this container (its fd 4 is a pidfd of the container's pid), and takes a copy of
//!   fd 3 with `pidfd_getfd(2)`.
//! - With `stdinOnce`, the first attached client's detach must close the container's
//!   stdin: the agent kills the keeper then (through its pidfd), so its copy closes too.
//! - Cost: a keeper is a fork of the agent that stops running Rust, so its pages are
//!   shared with the agent copy-on-write; pages the agent writes later are copied.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The keeper's process name (`/proc/<pid>/comm`).
const NAME: &[u8] = b"kcore-stdio\0";
/// The keeper's fd numbers: the held descriptor and the container's pidfd.
const HELD: i32 = 3;
const WATCHED: i32 = 4;

/// The agent's handle on a container's keeper.
#[derive(Debug)]
pub(crate) struct Keeper {
    pidfd: OwnedFd,
    record: PathBuf,
}

/// Where a container's keeper is recorded in its pod's state dir.
pub(crate) fn record_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.keeper"))
}

impl Keeper {
    /// Forks a keeper of `fd` for the container whose process is `container_pid`, and
    /// records it at `record`.
    pub(crate) fn spawn(fd: &OwnedFd, container_pid: i32, record: &Path) -> Result<Keeper> {
        let watched = kcore_ns::pidfd_open(container_pid)
            .map_err(|e| Error::ns(format!("pidfd of container process {container_pid}"), e))?;
        let (r, w) = crate::streams::pipe()
            .map_err(|e| Error::io("make a pipe for the stdio keeper", record, e))?;
        let (held, watched_raw, w_raw) = (fd.as_raw_fd(), watched.as_raw_fd(), w.as_raw_fd());
        // SAFETY: after fork the child makes only async-signal-safe system calls on
        // integers and static byte strings, then `_exit`s; it touches no Rust state.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(Error::io(
                "fork the stdio keeper",
                record,
                io::Error::last_os_error(),
            ));
        }
        if child == 0 {
            // SAFETY: see above; this is the forked child, which never returns.
            unsafe { keeper_child(held, watched_raw, w_raw) }
        }
        drop(w);
        // the first child reports the keeper's pid and exits at once
        let mut buf = [0u8; 4];
        let mut got = 0;
        while got < buf.len() {
            // SAFETY: reading into the live remainder of a local buffer.
            let n = unsafe {
                libc::read(
                    r.as_raw_fd(),
                    buf[got..].as_mut_ptr().cast(),
                    buf.len() - got,
                )
            };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                break;
            }
            got += n as usize;
        }
        let mut status = 0;
        // SAFETY: reaping our own child with a live out-pointer.
        while unsafe { libc::waitpid(child, &mut status, 0) } < 0
            && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
        {}
        if got != buf.len() {
            return Err(Error::io(
                "start the stdio keeper",
                record,
                io::Error::other("it reported no pid"),
            ));
        }
        let pid = i32::from_ne_bytes(buf);
        let pidfd = kcore_ns::pidfd_open(pid)
            .map_err(|e| Error::ns(format!("pidfd of stdio keeper {pid}"), e))?;
        std::fs::write(record, pid.to_string())
            .map_err(|e| Error::io("record the stdio keeper", record, e))?;
        Ok(Keeper {
            pidfd,
            record: record.to_owned(),
        })
    }

    /// The keeper recorded at `record` for the container whose process is
    /// `container_pid`, and a copy of the descriptor it holds; `None` when there is
    /// none (or the recorded process is not that container's keeper).
    pub(crate) fn reclaim(record: &Path, container_pid: i32) -> Result<Option<(Keeper, OwnedFd)>> {
        let pid: i32 = match std::fs::read_to_string(record) {
            Ok(s) => match s.trim().parse() {
                Ok(p) => p,
                Err(_) => return Ok(None),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read the stdio keeper's record", record, e)),
        };
        let Ok(pidfd) = kcore_ns::pidfd_open(pid) else {
            return Ok(None);
        };
        // the pid still names a keeper, and the keeper watches this container
        let comm = std::fs::read(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.strip_suffix(b"\n") != Some(&NAME[..NAME.len() - 1]) {
            return Ok(None);
        }
        let info =
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{WATCHED}")).unwrap_or_default();
        if !info
            .lines()
            .any(|l| l.strip_prefix("Pid:").map(str::trim) == Some(&container_pid.to_string()))
        {
            return Ok(None);
        }
        // SAFETY: a plain system call on integers.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), HELD, 0) };
        if fd < 0 {
            return Err(Error::io(
                "take the descriptor of the stdio keeper",
                record,
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: pidfd_getfd returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Some((
            Keeper {
                pidfd,
                record: record.to_owned(),
            },
            fd,
        )))
    }

    /// Ends the keeper, closing its copy (for `stdinOnce`), and removes its record.
    pub(crate) fn release(self) {
        // SAFETY: a plain system call on integers and a null siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        self.forget();
    }

    /// Removes the record (the container ended, so the keeper does too).
    pub(crate) fn forget(self) {
        let _ = std::fs::remove_file(&self.record);
    }
}

/// The forked child: forks the keeper, which reports its pid on `report` and holds
/// `held` until the process behind the pidfd `watched` ends.
///
/// # Safety
///
/// Call only in a freshly forked child; it never returns.
unsafe fn keeper_child(held: i32, watched: i32, report: i32) -> ! {
    // SAFETY: async-signal-safe system calls on integers and locals only (the whole body).
    unsafe {
        let keeper = libc::fork();
        if keeper != 0 {
            if keeper > 0 {
                let b = keeper.to_ne_bytes();
                libc::write(report, b.as_ptr().cast(), b.len());
            }
            libc::_exit(0);
        }
        libc::setsid();
        libc::prctl(libc::PR_SET_NAME, NAME.as_ptr());
        // out of the way of 3 and 4 first, then down to them
        let h = libc::fcntl(held, libc::F_DUPFD, 64);
        let w = libc::fcntl(watched, libc::F_DUPFD, 64);
        if h < 0 || w < 0 || libc::dup2(h, HELD) < 0 || libc::dup2(w, WATCHED) < 0 {
            libc::_exit(1);
        }
        libc::syscall(libc::SYS_close_range, WATCHED as u32 + 1, u32::MAX, 0u32);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            if null > WATCHED {
                libc::close(null);
            }
        }
        let mut p = libc::pollfd {
            fd: WATCHED,
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            let rc = libc::poll(&mut p, 1, -1);
            if rc != 0 && !(rc < 0 && *libc::__errno_location() == libc::EINTR) {
                break;
            }
        }
        libc::_exit(0)
    }
}
