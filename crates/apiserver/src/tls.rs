//! HTTPS: a CA and serving certificate made on first start, and the TLS listener.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::error::Error;

/// PEM files of the cluster's PKI.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("{what}: {e}"))
}

/// Keys and tokens: only root may read them.
fn write_private(path: &Path, data: &str) -> Result<(), Error> {
    kcore_statedir::write(path, data.as_bytes(), kcore_statedir::PRIVATE_FILE).map_err(io_err(path))
}

/// Certificates are public; they are written whole all the same.
fn write_public(path: &Path, data: &str) -> Result<(), Error> {
    kcore_statedir::write(path, data.as_bytes(), 0o644).map_err(io_err(path))
}

fn ca_params() -> Result<CertificateParams, Error> {
    let mut p =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("ca params", e))?;
    p.distinguished_name.push(DnType::CommonName, "kcore-ca");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// Loads the CA from `dir` (making it on first start) and issues a serving certificate for
/// `hosts` (DNS names or IP addresses), signed by it.
pub(crate) fn ensure_pki(dir: &Path, hosts: &[String]) -> Result<Pki, Error> {
    let _span = tracing::info_span!("pki", dir = %dir.display()).entered();
    kcore_statedir::ensure_dir(dir, kcore_statedir::PRIVATE_DIR).map_err(io_err(dir))?;
    let (ca_key_path, ca_crt_path) = (dir.join("ca.key"), dir.join("ca.crt"));
    let ca_key = if ca_key_path.exists() && ca_crt_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
        KeyPair::from_pem(&pem).map_err(|e| tls_err("reading ca.key", e))?
    } else {
        let key = KeyPair::generate().map_err(|e| tls_err("generating CA key", e))?;
        let cert = ca_params()?
            .self_signed(&key)
            .map_err(|e| tls_err("signing CA", e))?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        write_public(&ca_crt_path, &cert.pem())?;
        tracing::info!(path = %ca_crt_path.display(), "generated cluster CA");
        key
    };
    let ca_pem = std::fs::read_to_string(&ca_crt_path).map_err(io_err(&ca_crt_path))?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("server params", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kcore-apiserver");
    let mut names: Vec<String> = vec![
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "127.0.0.1".into(),
        "::1".into(),
    ];
    names.extend(hosts.iter().cloned());
    names.sort();
    names.dedup();
    for n in names {
        let san = match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                n.as_str()
                    .try_into()
                    .map_err(|e| tls_err("server name", e))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(|e| tls_err("generating server key", e))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| tls_err("signing server certificate", e))?;
    let (crt_path, key_path) = (dir.join("apiserver.crt"), dir.join("apiserver.key"));
    write_private(&key_path, &key.serialize_pem())?;
    write_public(&crt_path, &cert.pem())?;
    Ok(Pki {
        ca_pem,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The rustls acceptor for a PKI.
pub(crate) fn acceptor(pki: &Pki) -> Result<TlsAcceptor, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    // the chain ends with the CA, so that a joining node can pin it by its hash
    let chain = format!("{}{}", pki.cert_pem, pki.ca_pem);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err("parsing certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes())
        .map_err(|e| tls_err("parsing key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("tls versions", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err("tls certificate", e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Accepts TCP connections and completes TLS handshakes concurrently, so a slow client
/// never holds up the others.
pub(crate) struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(128);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
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
    type Io = TlsStream<tokio::net::TcpStream>;
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

/// Reads the token file, creating it with one random admin token if it does not exist.
pub(crate) fn ensure_token_file(path: &Path) -> Result<PathBuf, Error> {
    if !path.exists() {
        let token =
            uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
        write_private(path, &format!("{token},admin,admin,system:masters\n"))?;
    }
    Ok(path.to_owned())
}
