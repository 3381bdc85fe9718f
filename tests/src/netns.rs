//! Network-namespace fixtures for root tests: namespaces with unique names removed on
//! drop, and tiny TCP servers/clients living inside a namespace.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kcore_ns::{NetNs, NetnsDir};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique short name: prefix + pid + counter.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory of named network namespaces in a temp dir; removes every namespace
/// it made, and the directory, on drop.
pub struct Namespaces {
    dir: tempfile::TempDir,
    store: NetnsDir,
    names: Vec<String>,
}

impl Default for Namespaces {
    fn default() -> Self {
        Self::new()
    }
}

impl Namespaces {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kcore-netns-")
            .tempdir()
            .unwrap();
        let store = NetnsDir::new(dir.path());
        Self {
            dir,
            store,
            names: Vec::new(),
        }
    }

    pub fn create(&mut self, prefix: &str) -> NetNs {
        let name = unique(prefix);
        let ns = self.store.create(&name).expect("create netns");
        self.names.push(name);
        ns
    }

    pub fn path(&self, ns: &NetNs) -> PathBuf {
        ns.path().to_path_buf()
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.store.remove(n);
        }
        let left = self.store.list().unwrap_or_default();
        assert!(
            left.is_empty() || std::thread::panicking(),
            "namespaces left behind: {left:?}"
        );
    }
}

/// A TCP server inside a namespace that answers every connection with `reply`.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub hits: Arc<AtomicUsize>,
}

impl Server {
    pub fn start(ns: &NetNs, addr: SocketAddr, reply: &str) -> Self {
        let listener = ns
            .run(move || TcpListener::bind(addr))
            .unwrap()
            .expect("bind in namespace");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let reply = reply.to_owned();
        let (s, h) = (stop.clone(), hits.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false).ok();
                        h.fetch_add(1, Ordering::Relaxed);
                        let _ = conn.write_all(reply.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
            hits,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from inside `ns` to `addr` and returns what the server sent.
pub fn fetch(ns: &NetNs, addr: SocketAddr) -> std::io::Result<String> {
    ns.run(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .map_err(std::io::Error::other)?
}

/// Interface names inside a namespace, read from the entering thread's
/// `/proc/thread-self/net/dev`.
pub fn links(ns: &NetNs) -> Vec<String> {
    ns.run(|| {
        let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default();
        let mut v: Vec<String> = dev
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next().map(|s| s.trim().to_owned()))
            .collect();
        v.sort();
        v
    })
    .unwrap()
}

/// Interface names (with flags and addresses) of the caller's own network
/// namespace, to prove a test left it alone.
pub fn current_links() -> String {
    let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default();
    let mut names: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .collect();
    names.sort_unstable();
    let addrs = std::fs::read_to_string("/proc/thread-self/net/fib_trie").unwrap_or_default();
    format!("{names:?}\n{addrs}")
}
