//! Requests from the API server to a node's agent (kubelet port): over HTTPS that verifies
//! the node's serving certificate against the cluster CA and presents the API server's
//! client certificate, or plain HTTP when the API server itself runs without a PKI; or,
//! for an agent running in this process ([`LocalNodes`]), straight to its handler.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::api::Api;
use crate::error::ApiError;
use crate::resources;

/// Why a node could not be reached (a 503 for the client).
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeError {
    #[error("connect timed out")]
    Timeout,
    #[error("connect")]
    Connect(#[source] std::io::Error),
    #[error("the node's address {0} is not an IP address")]
    Address(String),
    #[error("tls handshake (the node's certificate must be signed by the cluster CA for its IP)")]
    Tls(#[source] std::io::Error),
    #[error("http")]
    Http(#[source] hyper::Error),
    #[error("request")]
    Request(#[source] axum::http::Error),
}

impl NodeError {
    /// The message and its causes, `: `-joined (the client sees it in a Status).
    pub(crate) fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }
}

/// Where a node's agent listens, as the node's status says.
pub(crate) struct NodeEndpoint {
    /// The node's name.
    pub name: String,
    /// Its InternalIP (else its first address).
    pub ip: String,
    /// `status.daemonEndpoints.kubeletEndpoint.Port` (10250 when unset).
    pub port: u16,
}

/// The agent endpoint of the node `pod` is bound to: a 400 for a pod without a node, a 503
/// for a node without an address.
pub(crate) async fn endpoint(api: &Api, pod: &Value) -> Result<NodeEndpoint, ApiError> {
    let node_name = node_of(pod)?;
    let nodes = resources::lookup("", "v1", "nodes").expect("served");
    let node = api.get_in(nodes, None, node_name).await?;
    endpoint_of(&node)
}

/// The name of the node `pod` is bound to: a 400 for a pod without a node.
pub(crate) fn node_of(pod: &Value) -> Result<&str, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))
}

/// The agent endpoint of `node` (a Node object): a 503 for a node without an address.
pub(crate) fn endpoint_of(node: &Value) -> Result<NodeEndpoint, ApiError> {
    let node_name = node["metadata"]["name"].as_str().unwrap_or_default();
    let addrs = node["status"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ip = addrs
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| addrs.first())
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("node {node_name} has no address"),
            )
        })?
        .to_owned();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(10250);
    Ok(NodeEndpoint {
        name: node_name.to_owned(),
        ip,
        port,
    })
}

/// `GET path` on the agent at `ip:port`.
pub(crate) async fn get(
    tls: Option<&Arc<rustls::ClientConfig>>,
    ip: &str,
    port: u16,
    path: &str,
) -> Result<hyper::Response<Incoming>, NodeError> {
    let req = |host: &str| {
        Request::get(path)
            .header(header::HOST, host)
            .body(Body::empty())
            .map_err(NodeError::Request)
    };
    send(tls, ip, port, req, false).await
}

/// Sends `req` (its path and headers as given) to the agent at `ip:port` on a connection of
/// its own that may be upgraded: on a `101` answer, `hyper::upgrade::on(response)` yields
/// the node's side of the upgraded connection.
pub(crate) async fn upgrade(
    tls: Option<&Arc<rustls::ClientConfig>>,
    ip: &str,
    port: u16,
    req: Request<Body>,
) -> Result<hyper::Response<Incoming>, NodeError> {
    let with_host = move |host: &str| {
        let mut r = req;
        if let Ok(v) = header::HeaderValue::from_str(host) {
            r.headers_mut().insert(header::HOST, v);
        }
        Ok(r)
    };
    send(tls, ip, port, with_host, true).await
}

/// Connects to `ip:port` (TLS when `tls` is set) and sends the request `make` builds for
/// the `Host` it is given.
async fn send(
    tls: Option<&Arc<rustls::ClientConfig>>,
    ip: &str,
    port: u16,
    make: impl FnOnce(&str) -> Result<Request<Body>, NodeError>,
    upgrades: bool,
) -> Result<hyper::Response<Incoming>, NodeError> {
    let addr: IpAddr = ip.parse().map_err(|_| NodeError::Address(ip.to_owned()))?;
    let host = std::net::SocketAddr::new(addr, port).to_string();
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((addr, port)),
    )
    .await
    .map_err(|_| NodeError::Timeout)?
    .map_err(NodeError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let req = make(&host)?;
    match tls {
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.into());
            let stream = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, kcore_tls::read_ahead(tcp))
                .await
                .map_err(NodeError::Tls)?;
            exchange(TokioIo::new(stream), req, upgrades).await
        }
        None => exchange(TokioIo::new(tcp), req, upgrades).await,
    }
}

async fn exchange<I>(
    io: I,
    req: Request<Body>,
    upgrades: bool,
) -> Result<hyper::Response<Incoming>, NodeError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(NodeError::Http)?;
    if upgrades {
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
    } else {
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    sender.send_request(req).await.map_err(NodeError::Http)
}

/// The node agents running in this process, by node name: the API server hands their
/// pods' `exec`, `attach` and `portforward` requests to the agent's handler instead of
/// dialing the agent's port. The node then answers `101` on the client's own connection
/// and runs the session on it: no second TLS connection, no splice.
///
/// What is registered is the agent's server for the kubelet's streaming paths
/// (`/exec/{ns}/{pod}/{container}`, `/attach/...`, `/portforward/{ns}/{pod}`). Each
/// request reaches it as it would arrive over the agent's port, with two extensions a
/// network client cannot set: the client connection's `hyper::upgrade::OnUpgrade`, and
/// as its `axum::extract::ConnectInfo<kcore_tls::PeerCertificates>` the API server's
/// client certificate chain (the identity a TLS handshake with the agent would have
/// proved; no address), so the agent authenticates and authorizes it as the API server.
/// Only code in this process can register or call a handler.
///
/// ```
/// let nodes = kcore_apiserver::LocalNodes::default();
/// let registration = nodes.register("n1", axum::Router::new());
/// assert!(nodes.contains("n1"));
/// drop(registration);
/// assert!(!nodes.contains("n1"));
/// ```
#[derive(Clone, Default)]
pub struct LocalNodes {
    inner: Arc<RwLock<HashMap<String, (u64, axum::Router)>>>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for LocalNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes = self.inner.read().unwrap_or_else(|e| e.into_inner());
        f.debug_set().entries(nodes.keys()).finish()
    }
}

impl LocalNodes {
    /// Registers the agent of node `node` running in this process, serving its
    /// streaming paths with `server`; it replaces an earlier registration of the same
    /// node and lasts until the returned registration is dropped.
    #[must_use = "the node is unregistered when the registration is dropped"]
    pub fn register(&self, node: impl Into<String>, server: axum::Router) -> LocalNodeRegistration {
        let node = node.into();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.clone(), (id, server));
        tracing::info!(%node, "node agent registered in process: its streams skip the network");
        LocalNodeRegistration {
            nodes: self.clone(),
            node,
            id,
        }
    }

    /// Whether the agent of `node` runs in this process.
    pub fn contains(&self, node: &str) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(node)
    }

    /// The handler of `node`'s agent, when it runs in this process.
    pub(crate) fn get(&self, node: &str) -> Option<axum::Router> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .map(|(_, r)| r.clone())
    }
}

/// A node agent's registration in [`LocalNodes`]; dropping it unregisters the node (unless
/// a later registration of the same node replaced it).
#[derive(Debug)]
pub struct LocalNodeRegistration {
    nodes: LocalNodes,
    node: String,
    id: u64,
}

impl Drop for LocalNodeRegistration {
    fn drop(&mut self) {
        let mut nodes = self.nodes.inner.write().unwrap_or_else(|e| e.into_inner());
        if nodes.get(&self.node).is_some_and(|(id, _)| *id == self.id) {
            nodes.remove(&self.node);
            tracing::info!(node = %self.node, "node agent unregistered from the process");
        }
    }
}

/// Hands `req` to an in-process agent's `server` and returns its answer.
pub(crate) async fn call_local(
    server: axum::Router,
    req: Request<Body>,
) -> axum::response::Response {
    use tower::Service;
    let mut server = server;
    // a Router is always ready
    match std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut server, cx)).await {
        Ok(()) => {}
        Err(never) => match never {},
    }
    match server.call(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}
