//! The kubelet's streaming side: `exec`, `attach` and `port-forward` sessions.
//!
//! The protocols (WebSocket `v4`/`v5.channel.k8s.io`, SPDY/3.1, port-forward framings)
//! live in this crate; what runs behind a session is a [`Backend`]: the node agent's
//! implementation runs processes in pod containers and dials into pod network namespaces,
//! a test's may run host processes.
//!
//! A node's server mounts [`routes`] (axum), or hands each `/exec`, `/attach` and
//! `/portforward` request to [`serve`],
//! which negotiates the protocol, answers `101 Switching Protocols` and runs the session;
//! [`Sessions`] records which protocol each session used.
//!
//! # Example
//!
//! ```
//! use kcore_stream::{Backend, BackendError, BoxFuture, Duplex, Process, Streams, Target};
//!
//! /// A backend that has no pods.
//! struct Empty;
//!
//! impl Backend for Empty {
//!     fn exec(&self, t: Target, _: Vec<String>, _: Streams) -> BoxFuture<'_, Result<Process, BackendError>> {
//!         Box::pin(async move { Err(BackendError::NotFound(format!("pod {} does not exist", t.pod))) })
//!     }
//!     fn attach(&self, t: Target, _: Streams) -> BoxFuture<'_, Result<Process, BackendError>> {
//!         Box::pin(async move { Err(BackendError::NotFound(format!("pod {} does not exist", t.pod))) })
//!     }
//!     fn port_forward(&self, t: Target, _: u16) -> BoxFuture<'_, Result<Box<dyn Duplex>, BackendError>> {
//!         Box::pin(async move { Err(BackendError::NotFound(format!("pod {} does not exist", t.pod))) })
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! let target = Target { namespace: "default".into(), pod: "p".into(), uid: None, container: "c".into() };
//! let req = hyper::Request::get("/exec/default/p/c?command=true&stdout=1")
//!     .header("connection", "Upgrade")
//!     .header("upgrade", "websocket")
//!     .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
//!     .header("sec-websocket-protocol", "v5.channel.k8s.io")
//!     .body(())?;
//! let sessions = kcore_stream::Sessions::default();
//! let resp = kcore_stream::serve(std::sync::Arc::new(Empty), &sessions, kcore_stream::Kind::Exec, target, req).await;
//! assert_eq!(resp.status(), 404);
//! assert_eq!(resp.body(), "pod p does not exist");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod portforward;
mod record;
mod routes;
mod serve;
mod session;
mod spdy;
mod ws;

pub use record::{SessionRecord, Sessions, Transport};
pub use routes::routes;
pub use serve::{serve, InProcess, Kind, PROTOCOL_HEADER, TUNNEL_PROTOCOL};
pub use spdy::FrameError;

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// A boxed future, as [`Backend`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A boxed byte source.
pub type Reader = Pin<Box<dyn AsyncRead + Send>>;
/// A boxed byte sink; shutting it down closes the process's stdin.
pub type Writer = Pin<Box<dyn AsyncWrite + Send>>;
/// A boxed bidirectional byte stream (a port-forward connection).
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// Which container of which pod a session is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's uid when the request named one (the kubelet's optional path segment).
    pub uid: Option<String>,
    /// The container's name (empty for port-forward, which is per pod).
    pub container: String,
}

/// Which standard streams a client asked for, and whether it wants a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Streams {
    /// The client sends stdin.
    pub stdin: bool,
    /// The client reads stdout.
    pub stdout: bool,
    /// The client reads stderr (never with `tty`: a terminal merges it into stdout).
    pub stderr: bool,
    /// The process runs on a pseudo-terminal; resize messages arrive on the resize channel.
    pub tty: bool,
}

/// A terminal size, as the resize channel carries it (`{"Width":80,"Height":24}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// How a process ended, reported to the client as upstream does (a `Status` with an
/// `ExitCode` cause for a non-zero exit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The process exited with this code.
    Code(i32),
    /// The process was killed by this signal (reported as exit code 128 + signal).
    Signal(i32),
}

/// The stdio of a running exec or attach session, handed from the backend to the protocol.
pub struct Process {
    /// The process's stdin, when the client asked for it.
    pub stdin: Option<Writer>,
    /// The process's stdout (with a terminal, everything it prints).
    pub stdout: Option<Reader>,
    /// The process's stderr (none with a terminal).
    pub stderr: Option<Reader>,
    /// Terminal resizes from the client, when the session has a terminal.
    pub resize: Option<mpsc::UnboundedSender<TerminalSize>>,
    /// Resolves when the process ends (for attach: when the container ends or the
    /// client detaches, whichever the backend reports).
    pub exit: BoxFuture<'static, Result<Exit, BackendError>>,
    /// Called once when the client goes away (its connection closes or drops) before the
    /// process has ended: an exec's process and its process group are killed, as the
    /// kubelet's runtime does when the stream closes. `None` for attach, whose container
    /// outlives its clients.
    pub kill: Option<Kill>,
}

impl Process {
    /// The session of a spawned child process: its piped stdin, stdout and stderr (those
    /// not piped stay `None`), its exit status (a signal as [`Exit::Signal`]), and a kill
    /// that sends `SIGKILL` to the process group the child leads, or to the child alone
    /// when it leads none. Spawn it with `process_group(0)` (or `setsid`) so that a
    /// client going away also ends what the command started.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let child = tokio::process::Command::new("sh")
    ///     .args(["-c", "exit 3"])
    ///     .process_group(0)
    ///     .spawn()?;
    /// let p = kcore_stream::Process::from_child(child);
    /// assert!(p.stdin.is_none() && p.kill.is_some());
    /// assert_eq!(p.exit.await?, kcore_stream::Exit::Code(3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_child(mut child: tokio::process::Child) -> Process {
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        Process {
            stdin: child.stdin.take().map(|s| Box::pin(s) as Writer),
            stdout: child.stdout.take().map(|s| Box::pin(s) as Reader),
            stderr: child.stderr.take().map(|s| Box::pin(s) as Reader),
            resize: None,
            kill: Some(Box::new(move || {
                if let Some(pid) = pid {
                    // SAFETY: kill(2) takes no pointers. A session calls the kill only
                    // while the exit future has not reported (reaped) the child, so the
                    // pid and group id still name it.
                    unsafe {
                        if libc::kill(-pid, libc::SIGKILL) != 0 {
                            libc::kill(pid, libc::SIGKILL);
                        }
                    }
                }
            })),
            exit: Box::pin(async move {
                use std::os::unix::process::ExitStatusExt;
                let st = child
                    .wait()
                    .await
                    .map_err(|e| BackendError::Internal(format!("wait for the process: {e}")))?;
                Ok(match (st.code(), st.signal()) {
                    (Some(c), _) => Exit::Code(c),
                    (None, Some(s)) => Exit::Signal(s),
                    (None, None) => Exit::Code(-1),
                })
            }),
        }
    }
}

/// What ends a process whose client went away (see [`Process::kill`]).
pub type Kill = Box<dyn FnOnce() + Send>;

/// A backend's failure, shown to the client on the error channel.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The pod or container does not exist on this node (HTTP 404 before the upgrade).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be served in the target's state (HTTP 400 before the upgrade,
    /// e.g. a container that is not running).
    #[error("{0}")]
    BadRequest(String),
    /// Anything else (shown as an internal error).
    #[error("{0}")]
    Internal(String),
}

/// What runs behind exec, attach and port-forward sessions.
pub trait Backend: Send + Sync + 'static {
    /// Starts `command` in the target container with the requested streams.
    fn exec(
        &self,
        target: Target,
        command: Vec<String>,
        streams: Streams,
    ) -> BoxFuture<'_, Result<Process, BackendError>>;

    /// Attaches to the target container's main process (its stdio as the agent holds it).
    fn attach(
        &self,
        target: Target,
        streams: Streams,
    ) -> BoxFuture<'_, Result<Process, BackendError>>;

    /// Opens a connection to `localhost:port` inside the target pod's network namespace.
    fn port_forward(
        &self,
        target: Target,
        port: u16,
    ) -> BoxFuture<'_, Result<Box<dyn Duplex>, BackendError>>;
}
