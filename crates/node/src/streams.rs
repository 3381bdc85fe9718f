//! What `exec`, `attach` and `port-forward` sessions run on: [`PodStreams`], the node's
//! [`kcore_stream::Backend`].
//!
//! - exec runs a process in a running container's namespaces and cgroup with the
//!   container's user, env, working directory and seccomp profile (the runtime's
//!   `exec`), on pipes or, with a terminal, on a pty made inside the container (its
//!   master arrives over a console socket, as runc's `--console-socket` does it);
//! - attach joins the stdio the agent holds for a container's life: its output is
//!   copied to the container log and to every attached client, its stdin (kept open
//!   when the container has `stdin: true`) is written by one client at a time;
//! - port-forward connects to `localhost:<port>` from a socket made inside the pod's
//!   network namespace.
//!
//! Pod workers keep a [`Registry`] of the pods and running containers up to date; the
//! backend looks sessions' targets up there.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use kcore_stream::{
    Backend, BackendError, BoxFuture, Duplex, Exit, Process, Reader, Streams, Target, TerminalSize,
    Writer,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::error::ErrorChain;
use crate::keeper::Keeper;

/// Output chunks of a container, as attached clients receive them.
pub(crate) type Chunk = Arc<[u8]>;

/// How many output chunks an attached client may fall behind before it misses some.
const ATTACH_BACKLOG: usize = 1024;

// ---------------------------------------------------------------------------------
// descriptors as tokio I/O

/// Non-blocking async reads and writes on a pipe end or a pty master. A pty master
/// reads `EIO` once every slave descriptor is closed: that reads as end of file.
/// Shutting a writer down drops its reference to the descriptor (closing a pipe's
/// write end once no other reference is left).
pub(crate) struct FdIo {
    fd: Option<Arc<AsyncFd<OwnedFd>>>,
}

impl FdIo {
    /// Wraps `fd` (made non-blocking); call inside a tokio runtime.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<FdIo> {
        set_nonblocking(&fd)?;
        // SAFETY: an OwnedFd is open until the AsyncFd that owns it drops it, and its
        // as_raw_fd is always that descriptor.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(FdIo {
            fd: Some(Arc::new(fd)),
        })
    }

    /// Another handle on the same descriptor.
    pub(crate) fn share(&self) -> FdIo {
        FdIo {
            fd: self.fd.clone(),
        }
    }

    /// The descriptor, unless this handle was shut down.
    pub(crate) fn owned(&self) -> Option<&OwnedFd> {
        self.fd.as_ref().map(|f| f.get_ref())
    }

    fn raw(&self) -> Option<i32> {
        self.fd.as_ref().map(|f| f.get_ref().as_raw_fd())
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "stream closed")
}

impl AsyncRead for FdIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(fd) = self.fd.as_ref() else {
            return Poll::Ready(Ok(()));
        };
        loop {
            let mut guard = ready!(fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let res = guard.try_io(|f| {
                // SAFETY: reading into a live, initialized buffer of this length.
                let n = unsafe {
                    libc::read(
                        f.get_ref().as_raw_fd(),
                        unfilled.as_mut_ptr().cast(),
                        unfilled.len(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // a pty master whose slave side is all closed
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(fd) = self.fd.as_ref() else {
            return Poll::Ready(Err(closed()));
        };
        loop {
            let mut guard = ready!(fd.poll_write_ready(cx))?;
            let res = guard.try_io(|f| {
                // SAFETY: writing from a live buffer of this length.
                let n = unsafe {
                    libc::write(f.get_ref().as_raw_fd(), data.as_ptr().cast(), data.len())
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.fd = None;
        Poll::Ready(Ok(()))
    }
}

/// A pipe; both ends close on exec.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 made both descriptors and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Applies a terminal size to a pty master.
pub(crate) fn set_size(master: i32, size: TerminalSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid winsize on a descriptor the caller holds open.
    if unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Applies the sizes arriving on the returned sender to the pty `master`, until the
/// sender is dropped.
fn resizer(master: &FdIo) -> mpsc::UnboundedSender<TerminalSize> {
    let (tx, mut rx) = mpsc::unbounded_channel::<TerminalSize>();
    let master = master.share();
    tokio::spawn(async move {
        while let Some(size) = rx.recv().await {
            if let Some(fd) = master.raw() {
                if let Err(e) = set_size(fd, size) {
                    tracing::debug!(error = %e, "resize terminal");
                }
            }
        }
    });
    tx
}

// ---------------------------------------------------------------------------------
// console sockets

static CONSOLE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A listening Unix socket the runtime sends a new pty's master to (the console
/// socket of the OCI runtime CLI); the socket file goes away with it.
pub(crate) struct ConsoleSocket {
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    /// A socket in `dir` (created if missing).
    pub(crate) fn new(dir: &Path) -> io::Result<ConsoleSocket> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!(
            "{}-{}.sock",
            std::process::id(),
            CONSOLE_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        Ok(ConsoleSocket { path, listener })
    }

    /// The socket's path, for the runtime's options.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Receives the pty master (blocking; the runtime has connected by the time its
    /// create or exec returned, so this waits at most for the process to send it).
    pub(crate) fn receive(&self) -> io::Result<OwnedFd> {
        let (conn, _) = self.listener.accept()?;
        let (fd, _) = kcore_runtime::recv_fd(conn.as_raw_fd())?;
        Ok(fd)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------------
// attachable stdio

/// Where a container's stdin goes: the write end of its stdin pipe or its pty master.
type StdinSink = FdIo;

/// The stdio the agent holds for a container's life, shared with attached clients.
pub(crate) struct AttachIo {
    /// Output (stdout; with a terminal, everything) and stderr, as broadcast by the log
    /// copiers; kept as receivers so new clients subscribe from the current point.
    stdout: Mutex<broadcast::Receiver<Chunk>>,
    stderr: Mutex<broadcast::Receiver<Chunk>>,
    /// The container's stdin while no client writes it; `None` while one does, or
    /// when the container has no open stdin.
    stdin: Arc<Mutex<Option<StdinSink>>>,
    /// Whether the container was made with stdin at all.
    has_stdin: bool,
    /// `stdinOnce`: the first client to detach closes the container's stdin.
    stdin_once: bool,
    /// The pty master, when the container runs on a terminal.
    tty: Option<FdIo>,
    /// The process that holds the stdin sink or pty master past the agent's life.
    keeper: Arc<Mutex<Option<Keeper>>>,
    /// How the container ended, once it has.
    exit: watch::Sender<Option<Exit>>,
}

impl std::fmt::Debug for AttachIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachIo")
            .field("has_stdin", &self.has_stdin)
            .field("stdin_once", &self.stdin_once)
            .field("tty", &self.tty.is_some())
            .finish()
    }
}

/// The log copiers' ends of an [`AttachIo`]: where they broadcast output.
#[derive(Debug, Clone)]
pub(crate) struct Tees {
    pub stdout: broadcast::Sender<Chunk>,
    pub stderr: broadcast::Sender<Chunk>,
}

impl AttachIo {
    /// A container's attachable stdio: `stdin` is its stdin sink (pipe write end or
    /// pty master) when the container keeps stdin open, `tty` its pty master.
    pub(crate) fn new(
        stdin: Option<StdinSink>,
        stdin_once: bool,
        tty: Option<FdIo>,
    ) -> (Arc<AttachIo>, Tees) {
        let (out_tx, out_rx) = broadcast::channel(ATTACH_BACKLOG);
        let (err_tx, err_rx) = broadcast::channel(ATTACH_BACKLOG);
        let io = AttachIo {
            stdout: Mutex::new(out_rx),
            stderr: Mutex::new(err_rx),
            has_stdin: stdin.is_some(),
            stdin: Arc::new(Mutex::new(stdin)),
            stdin_once,
            tty,
            keeper: Arc::default(),
            exit: watch::channel(None).0,
        };
        (
            Arc::new(io),
            Tees {
                stdout: out_tx,
                stderr: err_tx,
            },
        )
    }

    /// Hands the container's terminal (or else its open stdin) to a keeper process
    /// that holds it while the container runs, so that an agent restart keeps it (see
    /// [`crate::keeper`]); recorded at `record`. Nothing to keep is no error.
    pub(crate) fn keep(&self, container_pid: i32, record: &Path) {
        let stdin = lock(&self.stdin);
        let Some(fd) = self.tty.as_ref().or(stdin.as_ref()).and_then(FdIo::owned) else {
            return;
        };
        match Keeper::spawn(fd, container_pid, record) {
            Ok(k) => *lock(&self.keeper) = Some(k),
            Err(e) => tracing::warn!(
                error = %ErrorChain(&e),
                "no stdio keeper: an agent restart will close the container's stdin"
            ),
        }
    }

    /// Adopts the keeper a previous agent started (see [`AttachIo::keep`]).
    pub(crate) fn kept_by(&self, k: Keeper) {
        *lock(&self.keeper) = Some(k);
    }

    /// Records how the container ended: attached sessions end.
    pub(crate) fn exited(&self, exit: Exit) {
        self.exit.send_replace(Some(exit));
        if let Some(k) = lock(&self.keeper).take() {
            k.forget();
        }
        // a client still holding stdin keeps nothing alive: the pipe's reader is gone
        lock(&self.stdin).take();
    }

    fn subscribe(rx: &Mutex<broadcast::Receiver<Chunk>>) -> Reader {
        let mut rx = lock(rx).resubscribe();
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(chunk) => {
                        if w.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "attached client fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Box::pin(r)
    }

    /// A session on this stdio.
    fn attach(self: &Arc<Self>, streams: Streams) -> Result<Process, BackendError> {
        if streams.tty && self.tty.is_none() {
            // upstream attaches without a terminal then; output is the container's
            tracing::debug!("attach asked for a terminal the container does not have");
        }
        let stdin: Option<Writer> = if streams.stdin {
            if !self.has_stdin {
                return Err(BackendError::BadRequest(
                    "the container was not started with stdin: true".into(),
                ));
            }
            let sink = lock(&self.stdin).take().ok_or_else(|| {
                BackendError::BadRequest(
                    "another client is attached to the container's stdin".into(),
                )
            })?;
            Some(Box::pin(AttachStdin {
                sink: Some(sink),
                slot: self.stdin.clone(),
                once: self.stdin_once.then(|| self.keeper.clone()),
            }))
        } else {
            None
        };
        let stdout = streams.stdout.then(|| Self::subscribe(&self.stdout));
        let stderr = (streams.stderr && self.tty.is_none()).then(|| Self::subscribe(&self.stderr));
        let resize = match (&self.tty, streams.tty) {
            (Some(m), true) => Some(resizer(m)),
            _ => None,
        };
        let mut exit = self.exit.subscribe();
        Ok(Process {
            stdin,
            stdout,
            stderr,
            resize,
            exit: Box::pin(async move {
                loop {
                    if let Some(e) = *exit.borrow_and_update() {
                        return Ok(e);
                    }
                    if exit.changed().await.is_err() {
                        return Err(BackendError::Internal(
                            "the container's record went away".into(),
                        ));
                    }
                }
            }),
            // the container outlives its clients
            kill: None,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An attached client's hold on a container's stdin: given back when the client
/// detaches, or closed then when the container has `stdinOnce` (`once` holds its
/// keeper, which then ends too, so that the container reads end of file).
struct AttachStdin {
    sink: Option<StdinSink>,
    slot: Arc<Mutex<Option<StdinSink>>>,
    once: Option<Arc<Mutex<Option<Keeper>>>>,
}

impl AttachStdin {
    fn detach(&mut self) {
        if let Some(s) = self.sink.take() {
            match &self.once {
                None => *lock(&self.slot) = Some(s),
                Some(keeper) => {
                    if let Some(k) = lock(keeper).take() {
                        k.release();
                    }
                }
            }
        }
    }
}

impl Drop for AttachStdin {
    fn drop(&mut self) {
        self.detach();
    }
}

impl AsyncWrite for AttachStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.sink.as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, data),
            None => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.detach();
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------------------------
// the registry pod workers keep

#[derive(Debug)]
struct PodEntry {
    uid: String,
    /// The pod's network namespace once its sandbox is made (`Some(None)`: the
    /// node's, with hostNetwork).
    netns: Option<Option<PathBuf>>,
    containers: HashMap<String, CtrEntry>,
}

#[derive(Debug, Clone)]
struct CtrEntry {
    id: String,
    io: Arc<AttachIo>,
}

/// The pods on this node and their running containers, as sessions look them up.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pods: Mutex<HashMap<(String, String), PodEntry>>,
}

impl Registry {
    /// Records the pod `namespace/name` (with uid `uid`), before it has a sandbox.
    pub(crate) fn add_pod(&self, namespace: &str, name: &str, uid: &str) {
        self.entry(namespace, name, uid, |_| {});
    }

    /// Records the pod `namespace/name` (with uid `uid`) and its sandbox's network
    /// namespace.
    pub(crate) fn set_pod(&self, namespace: &str, name: &str, uid: &str, netns: Option<&Path>) {
        self.entry(namespace, name, uid, |e| {
            e.netns = Some(netns.map(Path::to_owned));
        });
    }

    fn entry(&self, namespace: &str, name: &str, uid: &str, f: impl FnOnce(&mut PodEntry)) {
        let mut pods = lock(&self.pods);
        let e = pods
            .entry((namespace.to_owned(), name.to_owned()))
            .or_insert_with(|| PodEntry {
                uid: uid.to_owned(),
                netns: None,
                containers: HashMap::new(),
            });
        if e.uid != uid {
            e.uid = uid.to_owned();
            e.netns = None;
            e.containers.clear();
        }
        f(e);
    }

    /// Records the running container `container` (runtime id `id`) of a recorded pod.
    pub(crate) fn set_container(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        container: &str,
        id: &str,
        io: Arc<AttachIo>,
    ) {
        let mut pods = lock(&self.pods);
        if let Some(e) = pods.get_mut(&(namespace.to_owned(), name.to_owned())) {
            if e.uid == uid {
                e.containers.insert(
                    container.to_owned(),
                    CtrEntry {
                        id: id.to_owned(),
                        io,
                    },
                );
            }
        }
    }

    /// Forgets a container attempt that ended.
    pub(crate) fn remove_container(&self, namespace: &str, name: &str, uid: &str, id: &str) {
        let mut pods = lock(&self.pods);
        if let Some(e) = pods.get_mut(&(namespace.to_owned(), name.to_owned())) {
            if e.uid == uid {
                e.containers.retain(|_, c| c.id != id);
            }
        }
    }

    /// The recorded pods (namespace, name, uid) and the names of their running
    /// containers, sorted (the resource-usage sampler walks their cgroups).
    pub(crate) fn running(&self) -> Vec<crate::stats::RunningPod> {
        let pods = lock(&self.pods);
        let mut out: Vec<_> = pods
            .iter()
            .map(|((ns, name), e)| {
                let mut cs: Vec<String> = e.containers.keys().cloned().collect();
                cs.sort();
                (ns.clone(), name.clone(), e.uid.clone(), cs)
            })
            .collect();
        out.sort();
        out
    }

    /// Forgets a pod that is gone from the node.
    pub(crate) fn remove_pod(&self, namespace: &str, name: &str, uid: &str) {
        let mut pods = lock(&self.pods);
        let key = (namespace.to_owned(), name.to_owned());
        if pods.get(&key).is_some_and(|e| e.uid == uid) {
            pods.remove(&key);
        }
    }

    fn pod(&self, t: &Target) -> Result<(String, Option<PathBuf>), BackendError> {
        let pods = lock(&self.pods);
        match pods.get(&(t.namespace.clone(), t.pod.clone())) {
            Some(e) if t.uid.as_deref().is_none_or(|u| u.is_empty() || u == e.uid) => {
                match &e.netns {
                    Some(netns) => Ok((e.uid.clone(), netns.clone())),
                    None => Err(BackendError::BadRequest(format!(
                        "pod {} has no network namespace yet",
                        t.pod
                    ))),
                }
            }
            _ => Err(BackendError::NotFound("pod does not exist".into())),
        }
    }

    fn container(&self, t: &Target) -> Result<CtrEntry, BackendError> {
        let pods = lock(&self.pods);
        match pods.get(&(t.namespace.clone(), t.pod.clone())) {
            Some(e) if t.uid.as_deref().is_none_or(|u| u.is_empty() || u == e.uid) => e
                .containers
                .get(&t.container)
                .cloned()
                .ok_or_else(|| not_running(&t.container)),
            _ => Err(BackendError::NotFound("pod does not exist".into())),
        }
    }
}

/// The kubelet's answer for a container that is not running.
fn not_running(container: &str) -> BackendError {
    BackendError::BadRequest(format!("container not found ({container:?})"))
}

// ---------------------------------------------------------------------------------
// the backend

/// The node agent's [`Backend`] for exec, attach and port-forward sessions: it runs
/// processes in the containers of the pods the agent runs and dials into their
/// network namespaces. Cheap to clone; every clone sees the same pods.
///
/// Get it from [`NodeAgent::streams`](crate::NodeAgent::streams) before running the
/// agent, and hand it to the node server's router.
#[derive(Clone)]
pub struct PodStreams {
    pub(crate) registry: Arc<Registry>,
    runtime: kcore_runtime::Runtime,
    console_dir: PathBuf,
    node_netns: Option<PathBuf>,
}

impl std::fmt::Debug for PodStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodStreams")
            .field("runtime", &self.runtime.root())
            .field("console_dir", &self.console_dir)
            .finish()
    }
}

impl PodStreams {
    /// A backend for the containers under `runtime`, making console sockets in
    /// `console_dir`; pods with hostNetwork are dialled in `node_netns` (the agent's
    /// own namespace when `None`).
    pub(crate) fn new(
        runtime: kcore_runtime::Runtime,
        console_dir: PathBuf,
        node_netns: Option<PathBuf>,
    ) -> Self {
        PodStreams {
            registry: Arc::new(Registry::default()),
            runtime,
            console_dir,
            node_netns,
        }
    }

    async fn exec_in(
        &self,
        target: Target,
        command: Vec<String>,
        streams: Streams,
    ) -> Result<Process, BackendError> {
        if command.is_empty() {
            return Err(BackendError::BadRequest(
                "you must specify at least one command for the container".into(),
            ));
        }
        let ctr = self.registry.container(&target)?;
        let runtime = self.runtime.clone();
        let console_dir = self.console_dir.clone();
        let name = target.container.clone();
        let started = tokio::task::spawn_blocking(move || {
            start_exec(&runtime, &ctr.id, &name, command, streams, &console_dir)
        })
        .await
        .map_err(|e| BackendError::Internal(format!("exec task: {e}")))??;
        let Started {
            mut child,
            stdin,
            stdout,
            stderr,
            master,
        } = started;
        let io = |fd: OwnedFd| FdIo::new(fd).map_err(|e| internal("exec stdio", &e));
        let kill = kill_group(child.pid());
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("exec-{}", child.pid()))
            .spawn(move || {
                let _ = tx.send(child.wait());
            })
            .map_err(|e| internal("spawn exec waiter", &e))?;
        let exit: BoxFuture<'static, Result<Exit, BackendError>> = Box::pin(async move {
            match rx.await {
                Ok(Ok(kcore_runtime::ExitStatus::Exited(n))) => Ok(Exit::Code(n)),
                Ok(Ok(kcore_runtime::ExitStatus::Signaled(s))) => Ok(Exit::Signal(s)),
                Ok(Err(e)) => Err(internal("wait for exec process", &e)),
                Err(_) => Err(BackendError::Internal("exec waiter went away".into())),
            }
        });
        if let Some(master) = master {
            let master = io(master)?;
            return Ok(Process {
                stdin: streams.stdin.then(|| Box::pin(master.share()) as Writer),
                stdout: Some(Box::pin(master.share())),
                stderr: None,
                resize: Some(resizer(&master)),
                exit,
                kill: Some(kill),
            });
        }
        Ok(Process {
            stdin: stdin.map(io).transpose()?.map(|w| Box::pin(w) as Writer),
            stdout: stdout.map(io).transpose()?.map(|r| Box::pin(r) as Reader),
            stderr: stderr.map(io).transpose()?.map(|r| Box::pin(r) as Reader),
            resize: None,
            exit,
            kill: Some(kill),
        })
    }

    async fn dial(&self, target: Target, port: u16) -> Result<Box<dyn Duplex>, BackendError> {
        let (uid, netns) = self.registry.pod(&target)?;
        let netns = netns.or_else(|| self.node_netns.clone());
        let make = |v6: bool| -> io::Result<tokio::net::TcpSocket> {
            let new = || {
                if v6 {
                    tokio::net::TcpSocket::new_v6()
                } else {
                    tokio::net::TcpSocket::new_v4()
                }
            };
            match &netns {
                Some(p) => kcore_ns::netns::run_in(p, new).map_err(io::Error::other)?,
                None => new(),
            }
        };
        let mut errs = Vec::new();
        for (v6, addr) in [
            (false, std::net::SocketAddr::from(([127, 0, 0, 1], port))),
            (
                true,
                std::net::SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port)),
            ),
        ] {
            let res = match make(v6) {
                Ok(s) => s.connect(addr).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(Box::new(s));
                }
                Err(e) => errs.push(format!(
                    "dial tcp{} {addr}: connect: {}",
                    if v6 { 6 } else { 4 },
                    go_errno(&e)
                )),
            }
        }
        // containerd's words, which the kubelet passes on
        Err(BackendError::Internal(format!(
            "failed to connect to localhost:{port} inside namespace {uid:?}, IPv4: {} IPv6 {} ",
            errs[0], errs[1]
        )))
    }
}

/// An I/O error as Go prints a syscall error (`connection refused`).
fn go_errno(e: &io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s.to_owned(),
    }
}

fn internal(what: &str, e: &dyn std::error::Error) -> BackendError {
    BackendError::Internal(format!("{what}: {}", ErrorChain(e)))
}

/// Kills an exec'd process and its process group (the runtime makes each exec'd process
/// a session leader), as the kubelet's runtime does when the client's stream closes.
fn kill_group(pid: i32) -> kcore_stream::Kill {
    Box::new(move || {
        // SAFETY: kill(2) takes no pointers. The group id is the exec'd process's pid,
        // which stays reserved while the process is unreaped or any of its group lives.
        if pid > 1 && unsafe { libc::kill(-pid, libc::SIGKILL) } != 0 {
            let e = io::Error::last_os_error();
            tracing::debug!(pid, error = %e, "kill the exec'd process group");
        }
    })
}

/// An exec'd process and the agent's ends of its stdio.
struct Started {
    child: kcore_runtime::ExecProcess,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    master: Option<OwnedFd>,
}

/// Starts `command` in the container `id` (blocking).
fn start_exec(
    runtime: &kcore_runtime::Runtime,
    id: &str,
    name: &str,
    command: Vec<String>,
    streams: Streams,
    console_dir: &Path,
) -> Result<Started, BackendError> {
    let _span = tracing::info_span!("stream_exec", id, tty = streams.tty).entered();
    let mut ctr = runtime.load(id).map_err(|_| not_running(name))?;
    if ctr.status() != kcore_runtime::Status::Running {
        return Err(not_running(name));
    }
    let mut process = ctr
        .spec()
        .process()
        .clone()
        .ok_or_else(|| BackendError::Internal(format!("container {id} has no process")))?;
    process.set_args(Some(command));
    process.set_terminal(Some(streams.tty));
    process.set_console_size(None);
    let null = || -> Result<OwnedFd, BackendError> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map(Into::into)
            .map_err(|e| internal("open /dev/null", &e))
    };
    let mut opts = kcore_runtime::ExecOptions::default();
    let (mut stdin, mut stdout, mut stderr) = (None, None, None);
    let console = if streams.tty {
        let sock = ConsoleSocket::new(console_dir).map_err(|e| internal("console socket", &e))?;
        opts.console_socket = Some(sock.path().to_owned());
        Some(sock)
    } else {
        let p = |e: io::Error| internal("pipe", &e);
        opts.stdin = Some(if streams.stdin {
            let (r, w) = pipe().map_err(p)?;
            stdin = Some(w);
            r
        } else {
            null()?
        });
        opts.stdout = Some(if streams.stdout {
            let (r, w) = pipe().map_err(p)?;
            stdout = Some(r);
            w
        } else {
            null()?
        });
        opts.stderr = Some(if streams.stderr {
            let (r, w) = pipe().map_err(p)?;
            stderr = Some(r);
            w
        } else {
            null()?
        });
        None
    };
    let child = ctr.exec(&process, opts).map_err(|e| match e {
        kcore_runtime::Error::InvalidState { .. } => not_running(name),
        // the program is missing or not executable: the client sees the reason
        e => BackendError::Internal(ErrorChain(&e).to_string()),
    })?;
    let master = match console {
        Some(sock) => Some(
            sock.receive()
                .map_err(|e| internal("receive the pty", &e))?,
        ),
        None => None,
    };
    Ok(Started {
        child,
        stdin,
        stdout,
        stderr,
        master,
    })
}

impl Backend for PodStreams {
    fn exec(
        &self,
        target: Target,
        command: Vec<String>,
        streams: Streams,
    ) -> BoxFuture<'_, Result<Process, BackendError>> {
        Box::pin(self.exec_in(target, command, streams))
    }

    fn attach(
        &self,
        target: Target,
        streams: Streams,
    ) -> BoxFuture<'_, Result<Process, BackendError>> {
        Box::pin(async move {
            let ctr = self.registry.container(&target)?;
            ctr.io.attach(streams)
        })
    }

    fn port_forward(
        &self,
        target: Target,
        port: u16,
    ) -> BoxFuture<'_, Result<Box<dyn Duplex>, BackendError>> {
        let span = tracing::debug_span!("port_forward", pod = %target.pod, port);
        Box::pin(tracing::Instrument::instrument(
            self.dial(target, port),
            span,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn t(pod: &str, uid: Option<&str>, container: &str) -> Target {
        Target {
            namespace: "ns".into(),
            pod: pod.into(),
            uid: uid.map(Into::into),
            container: container.into(),
        }
    }

    #[test]
    fn registry_answers_as_the_kubelet() {
        let r = Registry::default();
        // unknown pod
        assert!(
            matches!(r.container(&t("p", None, "c")), Err(BackendError::NotFound(m)) if m == "pod does not exist")
        );
        // known pod, no sandbox, no running container
        r.add_pod("ns", "p", "u1");
        assert!(
            matches!(r.container(&t("p", None, "c")), Err(BackendError::BadRequest(m)) if m == "container not found (\"c\")")
        );
        assert!(matches!(
            r.pod(&t("p", None, "")),
            Err(BackendError::BadRequest(_))
        ));
        r.set_pod("ns", "p", "u1", Some(Path::new("/run/netns/x")));
        let (uid, netns) = r.pod(&t("p", Some("u1"), "")).unwrap();
        assert_eq!(
            (uid.as_str(), netns.as_deref()),
            ("u1", Some(Path::new("/run/netns/x")))
        );
        assert!(matches!(
            r.pod(&t("p", Some("u2"), "")),
            Err(BackendError::NotFound(_))
        ));
        let (io, _tees) = AttachIo::new(None, false, None);
        r.set_container("ns", "p", "u1", "c", "u1_c_0", io.clone());
        assert_eq!(r.container(&t("p", None, "c")).unwrap().id, "u1_c_0");
        // a record of another uid does not touch the pod's
        r.set_container("ns", "p", "u9", "d", "u9_d_0", io.clone());
        r.remove_container("ns", "p", "u9", "u1_c_0");
        assert!(r.container(&t("p", None, "c")).is_ok());
        assert!(r.container(&t("p", None, "d")).is_err());
        r.remove_container("ns", "p", "u1", "u1_c_0");
        assert!(matches!(
            r.container(&t("p", None, "c")),
            Err(BackendError::BadRequest(_))
        ));
        // a new pod of the same name replaces the old one's record
        r.set_container("ns", "p", "u1", "c", "u1_c_1", io);
        r.add_pod("ns", "p", "u2");
        assert!(r.container(&t("p", None, "c")).is_err());
        assert!(
            r.pod(&t("p", None, "")).is_err(),
            "no sandbox for the new pod yet"
        );
        r.remove_pod("ns", "p", "u1");
        assert!(matches!(
            r.container(&t("p", None, "c")),
            Err(BackendError::BadRequest(_))
        ));
        r.remove_pod("ns", "p", "u2");
        assert!(matches!(
            r.container(&t("p", None, "c")),
            Err(BackendError::NotFound(_))
        ));
    }

    #[test]
    fn go_errno_reads_like_go() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(go_errno(&e), "connection refused");
    }

    #[tokio::test]
    async fn fd_io_carries_a_pipe_and_ends_at_eof() {
        let (r, w) = pipe().unwrap();
        let mut r = FdIo::new(r).unwrap();
        let mut w = FdIo::new(w).unwrap();
        w.write_all(b"hello").await.unwrap();
        w.shutdown().await.unwrap();
        let mut s = Vec::new();
        r.read_to_end(&mut s).await.unwrap();
        assert_eq!(s, b"hello");
        assert!(w.write_all(b"x").await.is_err());
    }

    #[tokio::test]
    async fn attach_hands_stdin_to_one_client_and_stdin_once_closes_it() {
        let (r, w) = pipe().unwrap();
        let mut r = FdIo::new(r).unwrap();
        let (io, tees) = AttachIo::new(Some(FdIo::new(w).unwrap()), true, None);
        let s = Streams {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: false,
        };
        let mut first = io.attach(s).unwrap();
        assert!(
            matches!(io.attach(s), Err(BackendError::BadRequest(_))),
            "a second client gets no stdin"
        );
        tees.stdout.send(Arc::from(&b"out\n"[..])).unwrap();
        let mut got = [0u8; 4];
        first
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut got)
            .await
            .unwrap();
        assert_eq!(&got, b"out\n");
        let mut stdin = first.stdin.take().unwrap();
        stdin.write_all(b"in").await.unwrap();
        drop(stdin);
        drop(first);
        // stdinOnce: the pipe is closed once the first client detached
        let mut s2 = Vec::new();
        r.read_to_end(&mut s2).await.unwrap();
        assert_eq!(s2, b"in");
        io.exited(Exit::Code(0));
        let p = io
            .attach(Streams {
                stdout: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(p.exit.await.unwrap(), Exit::Code(0));
    }
}
