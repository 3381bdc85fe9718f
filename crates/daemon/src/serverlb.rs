//! The agent's client-side load balancer over the control plane's servers, as k3s's
//! agent keeps one: a TCP proxy on loopback that every API connection of the agent goes
//! through, forwarding to one live server.
//!
//! - It starts with the `--server` the agent was given and learns the others from the
//!   `default/kubernetes` Endpoints (the live API servers, [`follow_endpoints`]); the
//!   given server stays in the list as a fallback.
//! - New connections go to the current server; if it does not accept within
//!   [`CONNECT_TIMEOUT`] the next one is tried, and it becomes the current one.
//! - A health check connects to every server every [`HEALTH_INTERVAL`]; when the current
//!   server fails it, the proxied connections to it are closed, so the agent's clients
//!   reconnect (to a live server) at once instead of waiting for TCP to time out — a
//!   frozen server keeps connections open but accepts nothing. Watches then resume from
//!   their last resourceVersion (kube-rs's watcher does).
//!
//! TLS passes through untouched: the servers' certificates name `127.0.0.1`, which is
//! where the agent connects.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Endpoints;
use kube::Api;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a server may take to accept a connection before the next one is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often every server's port is checked.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// How often the `kubernetes` Endpoints are read.
pub const ENDPOINTS_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct State {
    /// The servers, the `--server` first.
    servers: Vec<SocketAddr>,
    /// Index of the server new connections go to.
    current: usize,
    /// Servers that failed their last health check.
    down: Vec<SocketAddr>,
}

/// A running load balancer. Dropping it stops nothing: it lives as long as the process.
#[derive(Debug, Clone)]
pub struct ServerLb {
    local: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Bumped to close the connections to a server that went down.
    generation: watch::Sender<(SocketAddr, u64)>,
}

/// The `host:port` of an `https://host:port[/]` URL.
fn server_addr(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("https://")
        .with_context(|| format!("the server URL {url} is not https://host:port"))?;
    let hostport = rest.trim_end_matches('/');
    use std::net::ToSocketAddrs as _;
    hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} resolves to no address"))
}

impl ServerLb {
    /// Starts the proxy on `127.0.0.1` (a free port) towards the server at `url`.
    pub async fn start(url: &str) -> Result<ServerLb> {
        let first = server_addr(url)?;
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the server load balancer on 127.0.0.1")?;
        let local = listener
            .local_addr()
            .context("the load balancer's address")?;
        let lb = ServerLb {
            local,
            state: Arc::new(Mutex::new(State {
                servers: vec![first],
                current: 0,
                down: Vec::new(),
            })),
            generation: watch::channel((first, 0)).0,
        };
        tokio::spawn(lb.clone().accept_loop(listener));
        tokio::spawn(lb.clone().health_loop());
        tracing::info!(%local, server = %first, "server load balancer started");
        Ok(lb)
    }

    /// The URL the agent's clients use: `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.local)
    }

    /// The servers known now, the current one first.
    pub fn servers(&self) -> Vec<SocketAddr> {
        let st = self.lock();
        let n = st.servers.len();
        (0..n).map(|i| st.servers[(st.current + i) % n]).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the learned servers (the `--server` given at start stays first).
    pub fn set_servers(&self, learned: &[SocketAddr]) {
        let mut st = self.lock();
        let current = st.servers.get(st.current).copied();
        let mut servers = vec![st.servers[0]];
        for s in learned {
            if !servers.contains(s) {
                servers.push(*s);
            }
        }
        if servers != st.servers {
            tracing::info!(?servers, "control-plane servers");
            st.current = current
                .and_then(|c| servers.iter().position(|s| *s == c))
                .unwrap_or(0);
            st.servers = servers;
        }
    }

    /// The order to try servers in: the current one, then the others, the ones that are
    /// down last.
    fn candidates(&self) -> Vec<SocketAddr> {
        let st = self.lock();
        let n = st.servers.len();
        let mut order: Vec<SocketAddr> = (0..n).map(|i| st.servers[(st.current + i) % n]).collect();
        order.sort_by_key(|s| st.down.contains(s));
        order
    }

    fn make_current(&self, server: SocketAddr) {
        let mut st = self.lock();
        if let Some(i) = st.servers.iter().position(|s| *s == server) {
            if i != st.current {
                tracing::info!(%server, "server load balancer: switched server");
                st.current = i;
            }
        }
    }

    async fn accept_loop(self, listener: TcpListener) {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let lb = self.clone();
            tokio::spawn(async move {
                if let Err(e) = lb.proxy(inbound).await {
                    tracing::debug!(error = %format!("{e:#}"), "load-balanced connection");
                }
            });
        }
    }

    async fn proxy(&self, mut inbound: TcpStream) -> Result<()> {
        let mut last = None;
        for server in self.candidates() {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(server)).await {
                Ok(Ok(mut outbound)) => {
                    self.make_current(server);
                    let mut closed = self.generation.subscribe();
                    closed.borrow_and_update();
                    // ends when this server is next found down (not on an older verdict)
                    let went_down = async {
                        while closed.changed().await.is_ok() {
                            if closed.borrow_and_update().0 == server {
                                return;
                            }
                        }
                        std::future::pending::<()>().await;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    tokio::select! {
                        _ = copy => {}
                        () = went_down => {}
                    }
                    return Ok(());
                }
                Ok(Err(e)) => last = Some(anyhow::Error::new(e)),
                Err(_) => last = Some(anyhow::anyhow!("connect timed out")),
            }
            self.mark(server, false);
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no server")))
    }

    /// Records a health result; a server going down closes its connections.
    fn mark(&self, server: SocketAddr, up: bool) {
        let went_down = {
            let mut st = self.lock();
            let was_down = st.down.contains(&server);
            if up {
                st.down.retain(|s| *s != server);
            } else if !was_down {
                st.down.push(server);
            }
            !up && !was_down
        };
        if went_down {
            tracing::warn!(%server, "server load balancer: server down; closing its connections");
            self.generation.send_modify(|(s, g)| {
                *s = server;
                *g += 1;
            });
        }
    }

    async fn health_loop(self) {
        loop {
            tokio::time::sleep(HEALTH_INTERVAL).await;
            for server in self.servers() {
                let up = matches!(
                    tokio::time::timeout(CONNECT_TIMEOUT, healthy(server)).await,
                    Ok(true)
                );
                self.mark(server, up);
            }
        }
    }
}

/// A server is healthy when it accepts a connection and completes a TLS handshake's
/// first step: it answers the ClientHello (a frozen process's kernel still accepts
/// connections into the backlog, so a bare connect is not enough).
async fn healthy(server: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = TcpStream::connect(server).await else {
        return false;
    };
    if s.write_all(&client_hello()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 5];
    // a TLS record header (handshake 0x16 or alert 0x15) proves a live process
    s.read_exact(&mut buf).await.is_ok() && (buf[0] == 0x16 || buf[0] == 0x15)
}

/// A minimal TLS 1.2/1.3 ClientHello: enough for a server to answer with a ServerHello
/// or an alert.
fn client_hello() -> Vec<u8> {
    let suites: &[u8] = &[0x13, 0x01, 0x13, 0x02, 0xc0, 0x2b, 0xc0, 0x2f];
    let mut body = vec![0x03, 0x03];
    body.extend([0u8; 32]); // random
    body.push(0); // session id
    body.extend((suites.len() as u16).to_be_bytes());
    body.extend(suites);
    body.extend([1, 0]); // compression: null
                         // extensions: supported_groups (x25519, P-256), signature_algorithms,
                         // supported_versions (1.3, 1.2), key_share (empty: the server asks again)
    let mut ext = Vec::new();
    let mut push = |ty: u16, data: &[u8]| {
        ext.extend(ty.to_be_bytes());
        ext.extend((data.len() as u16).to_be_bytes());
        ext.extend(data);
    };
    push(0x000a, &[0, 4, 0, 0x1d, 0, 0x17]);
    push(0x000d, &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]);
    push(0x002b, &[4, 0x03, 0x04, 0x03, 0x03]);
    push(0x0033, &[0, 0]);
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![0x01];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

/// The API servers the `kubernetes` Endpoints list (`address:port`).
pub fn endpoint_servers(ep: &Endpoints) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for subset in ep.subsets.iter().flatten() {
        let ports: Vec<u16> = subset
            .ports
            .iter()
            .flatten()
            .filter(|p| p.name.as_deref().is_none_or(|n| n == "https"))
            .filter_map(|p| u16::try_from(p.port).ok())
            .collect();
        for a in subset.addresses.iter().flatten() {
            if let Ok(ip) = a.ip.parse::<std::net::IpAddr>() {
                out.extend(ports.iter().map(|p| SocketAddr::new(ip, *p)));
            }
        }
    }
    out
}

/// Reads the `kubernetes` Endpoints every [`ENDPOINTS_INTERVAL`] and hands the servers to
/// `lb`, until `stop` resolves.
pub async fn follow_endpoints(
    lb: ServerLb,
    client: kube::Client,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let api: Api<Endpoints> = Api::namespaced(client, "default");
    loop {
        match api.get("kubernetes").await {
            Ok(ep) => {
                let servers = endpoint_servers(&ep);
                if !servers.is_empty() {
                    lb.set_servers(&servers);
                }
            }
            Err(e) => tracing::debug!(error = %e, "reading the kubernetes endpoints"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(ENDPOINTS_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoints_name_the_servers() {
        let ep: Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes"},
            "subsets": [{"addresses": [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2"}],
                "ports": [{"name": "https", "port": 6443}]}]
        }))
        .unwrap();
        let s = endpoint_servers(&ep);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].to_string(), "192.0.2.2:6443");
    }

    #[tokio::test]
    async fn connections_fail_over_to_a_live_server() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // a live "server" that answers every connection with its name
        let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = live.accept().await {
                let _ = s.write_all(b"live").await;
            }
        });
        // a dead one: a port nobody listens on
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let lb = ServerLb::start(&format!("https://{dead_addr}"))
            .await
            .unwrap();
        lb.set_servers(&[live_addr]);
        let mut c = TcpStream::connect(lb.local).await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"live");
        assert_eq!(lb.servers()[0], live_addr);
    }

    #[test]
    fn the_hello_is_one_tls_record() {
        let h = client_hello();
        assert_eq!(h[0], 0x16);
        assert_eq!(usize::from(u16::from_be_bytes([h[3], h[4]])), h.len() - 5);
    }
}
