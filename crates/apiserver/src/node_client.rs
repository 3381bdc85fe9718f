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

/// `GET path` on the agent at `ip:port`.
pub(crate) async fn get(
    tls: Option<&Arc<rustls::ClientConfig>>,
    ip: &str,
    port: u16,
    path: &str,
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
    let req = Request::get(path)
        .header(header::HOST, host.as_str())
        .body(Body::empty())
        .map_err(NodeError::Request)?;
    match tls {
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.into());
            let stream = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await
                .map_err(NodeError::Tls)?;
            send(TokioIo::new(stream), req).await
        }
        None => send(TokioIo::new(tcp), req).await,
    }
}

async fn send<I>(io: I, req: Request<Body>) -> Result<hyper::Response<Incoming>, NodeError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(NodeError::Http)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(NodeError::Http)
}
