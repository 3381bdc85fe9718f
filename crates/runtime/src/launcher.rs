//! A small process that creates containers on behalf of a big one: a fork server.
//!
//! Creating a container forks the caller three times over: a helper that joins
//! namespaces, the container process, and its reaper, which lives as long as the
//! container. Forking a process with a large heap copies its page tables, and both
//! sides then pay copy-on-write faults; a reaper keeps its copy for the container's
//! whole life. A node agent with hundreds of MiB of caches spends much of a pod start
//! that way.
//!
//! A [`Launcher`] runs a fresh copy of a program (`kcored` or `kcore-runc`, which call
//! [`serve_if_asked`] first thing in `main`) that only waits for requests. For each it
//! forks a worker, a copy of a few MiB, which creates the container with the same
//! [`Runtime`] code, answers, and exits. The container's helper, process and reaper are
//! then copies of that small worker. The server is each reaper's parent once its worker
//! has gone (a child subreaper), and lets the kernel collect them.
//!
//! ```no_run
//! # fn main() -> kcore_runtime::Result<()> {
//! // first thing in main:
//! if let Some(code) = kcore_runtime::launcher::serve_if_asked() {
//!     std::process::exit(code);
//! }
//! // later, in a process that has grown big:
//! let exe = std::env::current_exe().expect("own path");
//! let launcher = kcore_runtime::Launcher::start(&exe)?;
//! let runtime = kcore_runtime::Runtime::new("/run/example").with_launcher(launcher);
//! # let _ = runtime;
//! # Ok(())
//! # }
//! ```

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::container::{CreateOptions, Runtime};
use crate::error::{Error, Result};
use crate::process::{recv_fds, send_fds, seqpacket_pair};

/// The argument that makes a program serve as a launcher (see [`serve_if_asked`]).
pub const SERVE_ARG: &str = "__kcore-container-launcher";

/// The server's greeting, sent once it is ready for requests.
const READY: &[u8] = b"kcore-launcher ready";
/// A worker's first byte on its connection: it has the request's connection.
const ACK: &[u8; 1] = b"A";
/// How long [`Launcher::start`] waits for the greeting.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests and answers are a 4-byte big-endian length and that much JSON; a spec is
/// a few KiB, so this bound only stops garbage.
const MAX_MESSAGE: usize = 64 << 20;

/// Creates containers in a small server process instead of forking the caller (see the
/// [module docs](self)). Cheap to clone; the server ends when the last clone is dropped.
#[derive(Clone)]
pub struct Launcher {
    inner: Arc<Inner>,
}

struct Inner {
    program: PathBuf,
    server: Mutex<Server>,
}

/// One running server: the control socket (a datagram per request, each carrying the
/// request's own connection) and the process.
struct Server {
    control: OwnedFd,
    process: std::process::Child,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // try_lock: a request holds the lock while a worker takes its connection
        let pid = self.inner.server.try_lock().map(|s| s.process.id()).ok();
        f.debug_struct("Launcher")
            .field("program", &self.inner.program)
            .field("pid", &pid)
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(s) = self.server.get_mut() {
            s.stop();
        }
    }
}

impl Server {
    /// Runs `program SERVE_ARG` and waits for its greeting. The program is started with
    /// `posix_spawn` (a `vfork`), so the caller's memory is never copied.
    fn start(program: &Path) -> Result<Server> {
        let (ours, theirs) = seqpacket_pair()?;
        let process = std::process::Command::new(program)
            .arg(SERVE_ARG)
            .stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| Error::io("start the container launcher", program, e))?;
        let mut server = Server {
            control: ours,
            process,
        };
        match server.greeting() {
            Ok(()) => Ok(server),
            Err(e) => {
                server.stop();
                Err(Error::io("start the container launcher", program, e))
            }
        }
    }

    fn greeting(&self) -> std::io::Result<()> {
        set_recv_timeout(self.control.as_raw_fd(), Some(START_TIMEOUT))?;
        let mut buf = [0u8; 64];
        let (n, _) = recv_fds(self.control.as_raw_fd(), &mut buf, 0)?;
        set_recv_timeout(self.control.as_raw_fd(), None)?;
        if &buf[..n] != READY {
            return Err(std::io::Error::other(format!(
                "the program does not serve as a container launcher (it answered {:?})",
                String::from_utf8_lossy(&buf[..n])
            )));
        }
        Ok(())
    }

    /// Hands the server one end of a new connection and waits for the worker it forks
    /// to take it: a server that died before that (killed, or the request queued as it
    /// ended) fails here, before anything was asked of it.
    fn connect(&self) -> std::io::Result<UnixStream> {
        let (ours, theirs) = UnixStream::pair()?;
        send_fds(self.control.as_raw_fd(), &[theirs.as_raw_fd()], b"R")?;
        drop(theirs);
        let mut ack = [0u8; 1];
        match (&ours).read(&mut ack)? {
            1 if ack == *ACK => Ok(ours),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the launcher closed the connection before a worker took it",
            )),
        }
    }

    fn stop(&mut self) {
        // the server keeps no state of its own (workers and reapers are processes of
        // their own, and the reapers go to init): killing it loses nothing
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Launcher {
    /// Starts a server running `program`, which must call [`serve_if_asked`] first
    /// thing in its `main` (`kcored` and `kcore-runc` do).
    pub fn start(program: &Path) -> Result<Launcher> {
        let _span = tracing::info_span!("launcher_start", program = %program.display()).entered();
        let server = Server::start(program)?;
        Ok(Launcher {
            inner: Arc::new(Inner {
                program: program.to_owned(),
                server: Mutex::new(server),
            }),
        })
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.lock().process.id()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Server> {
        self.inner
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A connection to a worker, starting the server again if it has gone away.
    fn connect(&self) -> Result<UnixStream> {
        let mut server = self.lock();
        if matches!(server.process.try_wait(), Ok(None)) {
            match server.connect() {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!(error = %e, "the container launcher has gone"),
            }
        } else {
            tracing::warn!("the container launcher has ended");
        }
        server.stop();
        *server = Server::start(&self.inner.program)?;
        server
            .connect()
            .map_err(|e| Error::io("reach the container launcher", &self.inner.program, e))
    }

    /// Creates (and with `start_now` starts) container `id` in a worker, as
    /// [`Runtime::create`] and [`Runtime::run`] do in this process. Stdio the options
    /// leave unset is this process's own, as it would be in this process.
    pub(crate) fn create(
        &self,
        root: &Path,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        opts: CreateOptions,
        start_now: bool,
    ) -> Result<()> {
        let _span = tracing::debug_span!("launch", id).entered();
        // Stdio the options leave unset is this process's own (its 0, 1 and 2, /dev/null
        // where one is closed), as it would be for a container made here; a terminal's
        // process gets none, as the pty takes their place.
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let null = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| Error::io("open", "/dev/null", e))?;
        let given = [&opts.stdin, &opts.stdout, &opts.stderr];
        let mut fds: Vec<RawFd> = Vec::with_capacity(3);
        let mut stdio = [false; 3];
        for (i, fd) in given.iter().enumerate() {
            let fd = match fd {
                Some(f) => f.as_raw_fd(),
                None if terminal => continue,
                // SAFETY: F_GETFD only asks whether the descriptor is open.
                None if unsafe { libc::fcntl(i as RawFd, libc::F_GETFD) } >= 0 => i as RawFd,
                None => null.as_raw_fd(),
            };
            fds.push(fd);
            stdio[i] = true;
        }
        let request = Request {
            stdio,
            root: root.to_owned(),
            id: id.to_owned(),
            bundle: bundle.to_owned(),
            spec: spec.clone(),
            console_socket: opts.console_socket.clone(),
            no_pivot: opts.no_pivot,
            reaper: opts.reaper,
            start_now,
        };
        let body = serde_json::to_vec(&request).map_err(|e| Error::Sys {
            op: "encode a launcher request".into(),
            source: e.into(),
        })?;
        let conn = self.connect()?;
        let io =
            |e: std::io::Error| Error::io("talk to the container launcher", &self.inner.program, e);
        send_message(&conn, &fds, &body).map_err(io)?;
        // the worker holds its own copies now
        drop(opts);
        let answer = recv_message(&conn, 0).map_err(io)?.0;
        let answer: Answer = serde_json::from_slice(&answer)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        match answer {
            Answer::Created => Ok(()),
            Answer::Failed(e) => Err(e.into_error()),
        }
    }
}

/// What a worker is asked to do.
#[derive(Serialize, Deserialize)]
struct Request {
    /// Which of stdin, stdout and stderr come with the request, in that order.
    stdio: [bool; 3],
    root: PathBuf,
    id: String,
    bundle: PathBuf,
    spec: Spec,
    console_socket: Option<PathBuf>,
    no_pivot: bool,
    reaper: bool,
    start_now: bool,
}

/// A worker's answer.
#[derive(Serialize, Deserialize)]
enum Answer {
    Created,
    Failed(RemoteError),
}

/// An error crossing from a worker: the container process's own failures keep their
/// variant (callers tell a program that cannot run from other failures); the rest keep
/// their text, causes included.
#[derive(Serialize, Deserialize)]
enum RemoteError {
    Init {
        id: String,
        message: String,
        errno: Option<i32>,
    },
    Exists {
        id: String,
    },
    Other {
        message: String,
    },
}

impl RemoteError {
    fn from_error(e: &Error) -> Self {
        match e {
            Error::Init { id, message, errno } => RemoteError::Init {
                id: id.clone(),
                message: message.clone(),
                errno: *errno,
            },
            Error::Exists { id } => RemoteError::Exists { id: id.clone() },
            e => {
                let mut message = e.to_string();
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    message.push_str(": ");
                    message.push_str(&s.to_string());
                    source = s.source();
                }
                RemoteError::Other { message }
            }
        }
    }

    fn into_error(self) -> Error {
        match self {
            RemoteError::Init { id, message, errno } => Error::Init { id, message, errno },
            RemoteError::Exists { id } => Error::Exists { id },
            RemoteError::Other { message } => Error::Launcher { message },
        }
    }
}

/// Serves as a launcher when this process was started as one (`argv[1]` is
/// [`SERVE_ARG`], stdin the control socket): returns the exit code to end with once the
/// [`Launcher`] that started it is gone. Returns `None` otherwise, at once.
///
/// Call it first thing in `main`, before any thread is started: the server forks a
/// worker per request.
pub fn serve_if_asked() -> Option<i32> {
    if std::env::args_os().nth(1).as_deref() != Some(std::ffi::OsStr::new(SERVE_ARG)) {
        return None;
    }
    Some(match serve(0) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("container launcher: {e}");
            1
        }
    })
}

/// The server loop on control socket `control`.
fn serve(control: RawFd) -> std::io::Result<()> {
    // orphaned reapers come to this process, and nobody waits for them or for the
    // workers: the kernel collects them
    // SAFETY: plain prctl and signal calls in a single-threaded process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
    send_fds(control, &[], READY)?;
    loop {
        let mut buf = [0u8; 16];
        let (n, mut fds) = recv_fds(control, &mut buf, 1)?;
        if n == 0 {
            // the launcher's side closed
            return Ok(());
        }
        let Some(conn) = fds.pop() else { continue };
        // SAFETY: this process is single-threaded (see serve_if_asked).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            // the caller sees the connection close and reports it
            tracing::warn!(error = %std::io::Error::last_os_error(), "fork a launcher worker");
            continue;
        }
        if pid == 0 {
            // The worker waits for its own children again. The control socket is the
            // server's: /dev/null takes its number, so that no descriptor the worker
            // opens lands on 0, where a container's stdin goes.
            // SAFETY: plain calls on descriptors this process owns.
            unsafe {
                libc::signal(libc::SIGCHLD, libc::SIG_DFL);
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 && null != control {
                    libc::dup2(null, control);
                    libc::close(null);
                }
            }
            let code = match work(conn) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::warn!(error = %e, "launcher worker");
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

/// A worker: reads one request, creates the container, answers.
fn work(conn: OwnedFd) -> std::io::Result<()> {
    let conn = UnixStream::from(conn);
    (&conn).write_all(ACK)?;
    let (body, fds) = recv_message(&conn, 3)?;
    let request: Request = serde_json::from_slice(&body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let sent = request.stdio.iter().filter(|&&s| s).count();
    if fds.len() != sent {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "a request names {sent} stdio descriptors but carries {}",
                fds.len()
            ),
        ));
    }
    let mut fds = fds.into_iter();
    let [stdin, stdout, stderr] = request.stdio.map(|s| if s { fds.next() } else { None });
    let opts = CreateOptions {
        console_socket: request.console_socket,
        stdin,
        stdout,
        stderr,
        preserve_fds: 0,
        no_pivot: request.no_pivot,
        reaper: request.reaper,
    };
    // a runtime without a launcher: the worker creates the container itself
    let rt = Runtime::new(request.root);
    let res = if request.start_now {
        rt.run(&request.id, &request.bundle, &request.spec, opts)
    } else {
        rt.create(&request.id, &request.bundle, &request.spec, opts)
    };
    let answer = match res {
        Ok(_) => Answer::Created,
        Err(e) => Answer::Failed(RemoteError::from_error(&e)),
    };
    let body = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
    send_message(&conn, &[], &body)
}

/// Writes a length-prefixed message, the descriptors going with its first bytes.
fn send_message(conn: &UnixStream, fds: &[RawFd], body: &[u8]) -> std::io::Result<()> {
    let mut msg = Vec::with_capacity(4 + body.len());
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes());
    msg.extend_from_slice(body);
    let sent = send_fds(conn.as_raw_fd(), fds, &msg)?;
    (&*conn).write_all(&msg[sent..])
}

/// Reads a length-prefixed message and up to `max_fds` descriptors sent with it.
fn recv_message(conn: &UnixStream, max_fds: usize) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut first = vec![0u8; 64 << 10];
    let (n, fds) = recv_fds(conn.as_raw_fd(), &mut first, max_fds)?;
    first.truncate(n);
    while first.len() < 4 {
        let mut b = [0u8; 4];
        let m = (&*conn).read(&mut b[..4 - first.len()])?;
        if m == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the other side closed the connection without an answer",
            ));
        }
        first.extend_from_slice(&b[..m]);
    }
    let len = u32::from_be_bytes(first[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a message of {len} bytes"),
        ));
    }
    let mut body = first.split_off(4);
    if body.len() < len {
        let have = body.len();
        body.resize(len, 0);
        (&*conn).read_exact(&mut body[have..])?;
    }
    body.truncate(len);
    Ok((body, fds))
}

fn set_recv_timeout(fd: RawFd, t: Option<Duration>) -> std::io::Result<()> {
    let t = t.unwrap_or_default();
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid timeval of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_with_descriptors_and_in_pieces() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        let body = vec![7u8; 200 << 10];
        let writer = std::thread::spawn(move || {
            send_message(&a, &[f.as_raw_fd(), 1, 2], &body).unwrap();
            a
        });
        let (got, fds) = recv_message(&b, 3).unwrap();
        let _a = writer.join().unwrap();
        assert_eq!(got.len(), 200 << 10);
        assert!(got.iter().all(|&x| x == 7));
        assert_eq!(fds.len(), 3);
        let p = std::fs::read_link(format!("/proc/self/fd/{}", fds[0].as_raw_fd())).unwrap();
        assert!(p.to_string_lossy().ends_with("/stat"), "{p:?}");
    }

    #[test]
    fn a_closed_connection_is_an_error_not_an_empty_answer() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        let e = recv_message(&b, 0).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn errors_keep_their_kind_or_their_causes() {
        let init = Error::Init {
            id: "c".into(),
            message: "exec: no such file".into(),
            errno: Some(libc::ENOENT),
        };
        let back = RemoteError::from_error(&init).into_error();
        assert!(
            matches!(
                back,
                Error::Init {
                    errno: Some(libc::ENOENT),
                    ..
                }
            ),
            "{back:?}"
        );
        let io = Error::io(
            "open bundle",
            "/nope",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        let back = RemoteError::from_error(&io).into_error().to_string();
        assert!(
            back.contains("open bundle /nope") && back.contains("No such file"),
            "{back}"
        );
    }

    #[test]
    fn a_program_that_does_not_serve_is_refused() {
        let e = Launcher::start(Path::new("/bin/true"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("container launcher"), "{e}");
    }
}
