//! Requests from the API server to a node's agent (kubelet port): over HTTPS that verifies
//! the node's serving certificate against the cluster CA and presents the API server's
//! client certificate, or plain HTTP when the API server itself runs without a PKI.

use std::net::IpAddr;
use std::sync::Arc;
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
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let node_name = pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    let nodes = resources::lookup("", "v1", "nodes").expect("served");
    let node = api.get_in(nodes, None, node_name).await?;
    endpoint_of(&node)
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
