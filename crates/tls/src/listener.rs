//! A TLS listener for `axum::serve`, and what a handler learns of the client's proof.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Accepts TCP connections and completes TLS handshakes concurrently, so a slow client
/// never holds up the others. Each connection reads ahead (see [`read_ahead`](crate::read_ahead)).
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<BufReader<TcpStream>>, SocketAddr)>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Serves TLS with `config` on `listener` (inside a tokio runtime).
    pub fn new(listener: TcpListener, config: rustls::ServerConfig) -> std::io::Result<Self> {
        let acceptor = TlsAcceptor::from(std::sync::Arc::new(config));
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(128);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(crate::read_ahead(tcp)),
                    )
                    .await;
                    match hs {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { rx, addr, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<BufReader<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// Connection info for `into_make_service_with_connect_info::<PeerCertified>()`: whether
/// the client presented a certificate the server's verifier accepted (signed by the
/// client CA for `clientAuth`; see [`server_config`](crate::server_config)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCertified(pub bool);

impl Connected<IncomingStream<'_, TlsListener>> for PeerCertified {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, conn) = stream.io().get_ref();
        PeerCertified(conn.peer_certificates().is_some_and(|c| !c.is_empty()))
    }
}

/// Connection info for `into_make_service_with_connect_info::<PeerCertificates>()`: the
/// certificate chain the client presented (leaf first, empty when none). With
/// [`server_config_requesting_client_certs`](crate::server_config_requesting_client_certs)
/// nothing but the client's possession of the key is checked yet: verify the chain with a
/// [`ClientVerifier`](crate::ClientVerifier) before trusting it. The second field is the
/// client's address (an audit log's `sourceIPs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertificates(
    pub Vec<rustls::pki_types::CertificateDer<'static>>,
    pub Option<SocketAddr>,
);

impl Connected<IncomingStream<'_, TlsListener>> for PeerCertificates {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, conn) = stream.io().get_ref();
        PeerCertificates(
            conn.peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                .unwrap_or_default(),
            Some(*stream.remote_addr()),
        )
    }
}
