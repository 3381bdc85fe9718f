//! The cluster's PKI: one CA, the certificates it signs, and the TLS plumbing around them.
//!
//! - [`Ca::load_or_create`] keeps the cluster CA in a directory (`ca.key` 0600, `ca.crt`),
//!   making it on first start.
//! - [`Ca::issue`] signs a fresh key for a subject and its names: a serving certificate
//!   ([`Usage::Server`], for the API server and each node's agent) or a client certificate
//!   ([`Usage::Client`], the API server's identity towards the nodes).
//! - [`server_config`] and [`client_config`] build rustls configurations from PEM; a
//!   server may ask clients for a certificate signed by the CA without requiring one
//!   (bearer tokens are the other way to prove who one is). [`LiveCert`] is a
//!   certificate renewed in place: [`server_config_live`] serves whichever is current.
//! - [`TlsListener`] is an `axum::serve` listener completing handshakes concurrently;
//!   [`read_ahead`] gives a client's socket the read buffer its connections have;
//!   [`PeerCertified`] tells a handler whether the client proved itself with a certificate
//!   and [`PeerCertificates`] which chain it presented.
//! - [`server_config_requesting_client_certs`] asks for a client certificate without
//!   trusting it, and [`ClientVerifier`] checks the chain afterwards and reads who it names
//!   ([`subject`]: CN and O, a Kubernetes user and groups, issued by [`Ca::issue_client`]),
//!   so a request with a certificate from another CA can be answered 401, as upstream.
//!
//! # Example
//!
//! ```
//! use kcore_tls::{Ca, Usage};
//!
//! let dir = tempfile::tempdir()?;
//! let ca = Ca::load_or_create(dir.path())?;
//! let node = ca.issue("node-a", &["10.0.0.7".into(), "node-a".into()], Usage::Server)?;
//! let server = kcore_tls::server_config(&node, Some(ca.cert_pem()))?;
//! let client = kcore_tls::client_config(ca.cert_pem(), None)?;
//! assert_eq!(server.alpn_protocols, vec![b"http/1.1".to_vec()]);
//! assert!(!client.client_auth_cert_resolver.has_certs());
//! // the CA is kept: a second start reads the same one
//! assert_eq!(Ca::load_or_create(dir.path())?.cert_pem(), ca.cert_pem());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod csr;
mod listener;
mod live;
mod subject;
mod verify;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use csr::CertRequest;
pub use listener::{PeerCertificates, PeerCertified, TlsListener};
pub use live::LiveCert;
pub use subject::{subject, validity, Subject};
pub use verify::ClientVerifier;

/// What went wrong with a key, a certificate or a TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of the PKI could not be read or written.
    #[error("{op} {path}")]
    Io {
        /// What was done (`read`, `write`, `create`).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key or certificate could not be made, signed or read.
    #[error("{what}")]
    Certificate {
        /// Which one, and what was done.
        what: String,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// PEM text could not be parsed.
    #[error("parsing {what}")]
    Pem {
        /// What the text should hold.
        what: &'static str,
        /// The cause.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// PEM text held no certificate.
    #[error("no certificate in the {what}")]
    NoCertificate {
        /// What the text should hold.
        what: &'static str,
    },
    /// rustls refused the configuration.
    #[error("tls configuration: {what}")]
    Config {
        /// What was being configured.
        what: &'static str,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// A client certificate may name at most two organizations (groups).
    #[error("the certificate of {subject} names more than two organizations")]
    TooManyOrganizations {
        /// The certificate's common name.
        subject: String,
    },
    /// A client's certificate chain does not lead to the trusted CA (or is expired, or
    /// not for `clientAuth`).
    #[error("verifying the client certificate")]
    Untrusted {
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// A certificate request could not be read, or its signature is wrong.
    #[error("reading the certificate request")]
    Request {
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// A verified certificate's subject could not be read.
    #[error("the client certificate's subject cannot be read")]
    Subject,
    /// The client certificate verifier could not be built.
    #[error("client certificate verifier")]
    Verifier {
        /// The cause.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn cert_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> Error {
    let what = what.into();
    move |source| Error::Certificate { what, source }
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Usage {
    /// A TLS server (extended key usage `serverAuth`).
    Server,
    /// A TLS client (extended key usage `clientAuth`).
    Client,
    /// A cluster member that both serves its peers and dials them with the same
    /// certificate (`serverAuth` and `clientAuth`), as etcd's `--peer-cert-file` is.
    Peer,
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct CertKey {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PEM).
    pub key_pem: String,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKey").finish_non_exhaustive()
    }
}

impl CertKey {
    /// Writes `<dir>/<name>.crt` (0644) and `<dir>/<name>.key` (0600), each atomically.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(), Error> {
        let (crt, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        write_private(&key, &self.key_pem)?;
        write_public(&crt, &self.cert_pem)
    }
}

/// Keys and tokens: only the owner (root) may read them.
pub fn write_private(path: &Path, data: &str) -> Result<(), Error> {
    kcore_statedir::write(path, data.as_bytes(), kcore_statedir::PRIVATE_FILE)
        .map_err(io("write", path))
}

/// Certificates are public; they are written whole all the same.
fn write_public(path: &Path, data: &str) -> Result<(), Error> {
    kcore_statedir::write(path, data.as_bytes(), 0o644).map_err(io("write", path))
}

fn ca_params(common_name: &str) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err("ca parameters"))?;
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// The cluster CA: its certificate and the key that signs.
///
/// Besides [`Ca::issue`], it signs certificate requests ([`Ca::sign_request`]), as
/// upstream's CSR signers do.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA kept in `dir` (`ca.key`, `ca.crt`), making it on first start; the
    /// directory is created (or tightened) to 0700.
    pub fn load_or_create(dir: &Path) -> Result<Ca, Error> {
        Self::load_or_create_named(dir, "ca", "kcore-ca")
    }

    /// Loads the CA kept in `dir` as `<stem>.key` and `<stem>.crt`, making it (subject
    /// `CN=<common_name>`) on first start: a second CA beside the cluster's, such as the
    /// front proxy's (`front-proxy-ca`).
    pub fn load_or_create_named(dir: &Path, stem: &str, common_name: &str) -> Result<Ca, Error> {
        let _span = tracing::info_span!("pki", dir = %dir.display(), ca = stem).entered();
        kcore_statedir::ensure_dir(dir, kcore_statedir::PRIVATE_DIR).map_err(io("create", dir))?;
        let (key_path, crt_path) = (
            dir.join(format!("{stem}.key")),
            dir.join(format!("{stem}.crt")),
        );
        let key = if key_path.exists() && crt_path.exists() {
            let pem = std::fs::read_to_string(&key_path).map_err(io("read", &key_path))?;
            KeyPair::from_pem(&pem).map_err(cert_err(format!("reading {}", key_path.display())))?
        } else {
            let key = KeyPair::generate().map_err(cert_err("generating the CA key"))?;
            let cert = ca_params(common_name)?
                .self_signed(&key)
                .map_err(cert_err("signing the CA"))?;
            write_private(&key_path, &key.serialize_pem())?;
            write_public(&crt_path, &cert.pem())?;
            tracing::info!(path = %crt_path.display(), "generated cluster CA");
            key
        };
        let cert_pem = std::fs::read_to_string(&crt_path).map_err(io("read", &crt_path))?;
        Ok(Ca {
            cert_pem,
            issuer: Issuer::new(ca_params(common_name)?, key),
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A new key and a certificate for it, signed by the CA, for subject `common_name`
    /// with `names` (DNS names or IP addresses) as subject alternative names.
    pub fn issue(
        &self,
        common_name: &str,
        names: &[String],
        usage: Usage,
    ) -> Result<CertKey, Error> {
        self.sign(common_name, &[], names, usage)
    }

    /// A client certificate for user `user` in `groups` (subject `CN=user`, one `O` per
    /// group), as the API server reads it: upstream's x509 client authentication.
    pub fn issue_client(&self, user: &str, groups: &[String]) -> Result<CertKey, Error> {
        self.sign(user, groups, &[], Usage::Client)
    }

    fn sign(
        &self,
        common_name: &str,
        organizations: &[String],
        names: &[String],
        usage: Usage,
    ) -> Result<CertKey, Error> {
        let key = KeyPair::generate().map_err(cert_err("generating a key"))?;
        let params = leaf_params(common_name, organizations, names, usage)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(cert_err(format!(
                "signing the certificate of {common_name}"
            )))?;
        Ok(CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A new key and a self-signed certificate for it (subject `common_name` in
/// `organizations`, at most two; `names` as subject alternative names): what a server
/// presents when it has no certificate for the name a client asked for, as
/// ingress-nginx's "Fake Certificate" default.
///
/// ```
/// let ck = kcore_tls::self_signed("fallback", &[], &["ingress.local".into()], kcore_tls::Usage::Server)?;
/// assert!(kcore_tls::certified_key(&ck).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn self_signed(
    common_name: &str,
    organizations: &[String],
    names: &[String],
    usage: Usage,
) -> Result<CertKey, Error> {
    let key = KeyPair::generate().map_err(cert_err("generating a key"))?;
    let cert = leaf_params(common_name, organizations, names, usage)?
        .self_signed(&key)
        .map_err(cert_err(format!(
            "self-signing the certificate of {common_name}"
        )))?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The parameters of a certificate for `common_name` in `organizations` (at most two),
/// for `names` (DNS names or IP addresses) and `usage`.
pub(crate) fn leaf_params(
    common_name: &str,
    organizations: &[String],
    names: &[String],
    usage: Usage,
) -> Result<CertificateParams, Error> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(cert_err("certificate parameters"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    // rcgen keeps one value per attribute type: the second organization goes in under
    // the same OID (2.5.4.10) named as a custom type
    match organizations {
        [] => {}
        [o] => params
            .distinguished_name
            .push(DnType::OrganizationName, o.as_str()),
        [o1, o2] => {
            params
                .distinguished_name
                .push(DnType::OrganizationName, o1.as_str());
            params
                .distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 10]), o2.as_str());
        }
        _ => {
            return Err(Error::TooManyOrganizations {
                subject: common_name.to_owned(),
            })
        }
    }
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    for n in names {
        let san = match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                n.as_str()
                    .try_into()
                    .map_err(cert_err(format!("subject alternative name {n}")))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::Peer => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    Ok(params)
}

/// The certificates (DER) in PEM text, in order.
pub fn pem_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    certs(pem, "certificate")
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|source| Error::Pem { what, source })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate { what });
    }
    Ok(certs)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|source| Error::Pem {
        what: "private key",
        source,
    })
}

fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_pem, "CA certificate")? {
        roots.add(c).map_err(|source| Error::Config {
            what: "trusted CA",
            source,
        })?;
    }
    Ok(roots)
}

/// ring's algorithms with AES-128-GCM first among the cipher suites, as Go orders them on
/// hardware with AES instructions (so the API server, its clients and the nodes' agents
/// agree on the suite upstream's components negotiate). The server follows the client's
/// order, and rustls's own puts AES-256-GCM first, whose four more rounds cost a quarter
/// more on every byte of an exec or port-forward stream, relayed through two connections.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

/// How much a TLS connection made by [`read_ahead`] reads from its socket at once.
pub const READ_AHEAD: usize = 64 * 1024;

/// `io` (a TCP connection) with a read-ahead buffer of [`READ_AHEAD`] bytes, to carry
/// TLS: rustls reads at most 4 KiB from its transport at a time, so a full 16 KiB
/// record costs four system calls, where this makes one for several records. Writes pass
/// straight through. [`TlsListener`] accepts its connections this way; wrap a client's
/// socket before the handshake (`TlsConnector::connect(name, read_ahead(tcp))`).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let tcp = tokio::net::TcpStream::connect(l.local_addr()?).await?;
/// let io = kcore_tls::read_ahead(tcp);
/// assert_eq!(io.buffer().len(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_ahead<T: tokio::io::AsyncRead>(io: T) -> tokio::io::BufReader<T> {
    tokio::io::BufReader::with_capacity(READ_AHEAD, io)
}

/// A server configuration presenting `cert` (its chain ends with the CA, so a joining
/// node can pin the CA by its hash, when `cert.cert_pem` holds it). With `client_ca`,
/// clients may present a certificate, which must then be signed by that CA for
/// `clientAuth`; a client without one still connects (see [`PeerCertified`]).
pub fn server_config(
    cert: &CertKey,
    client_ca: Option<&str>,
) -> Result<rustls::ServerConfig, Error> {
    let mut cfg = server_builder(client_ca)?
        .with_single_cert(certs(&cert.cert_pem, "certificate")?, key(&cert.key_pem)?)
        .map_err(|source| Error::Config {
            what: "certificate",
            source,
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// [`server_config`] presenting whatever certificate `cert` holds at each handshake, so
/// that a renewed certificate ([`LiveCert::replace`]) is served without a restart.
pub fn server_config_live(
    cert: &LiveCert,
    client_ca: Option<&str>,
) -> Result<rustls::ServerConfig, Error> {
    let mut cfg = server_builder(client_ca)?.with_cert_resolver(Arc::new(cert.clone()));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A server configuration up to its certificate: clients may present one signed by
/// `client_ca`, when given.
fn server_builder(
    client_ca: Option<&str>,
) -> Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::server::WantsServerCert>, Error> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Config {
            what: "protocol versions",
            source,
        })?;
    Ok(match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|source| Error::Verifier { source })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    })
}

/// A certificate chain and its key (PEM, as a `kubernetes.io/tls` Secret holds them) made
/// ready to present, for a [`rustls::server::ResolvesServerCert`] that picks one per
/// connection (by SNI).
pub fn certified_key(cert: &CertKey) -> Result<Arc<rustls::sign::CertifiedKey>, Error> {
    let chain = certs(&cert.cert_pem, "certificate")?;
    let key = provider()
        .key_provider
        .load_private_key(key(&cert.key_pem)?)
        .map_err(|source| Error::Config {
            what: "private key",
            source,
        })?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(chain, key)))
}

/// A server configuration (no client authentication) whose certificate `resolver`
/// picks per connection, offering `alpn` (e.g. `h2` and `http/1.1`).
pub fn server_config_with_resolver(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Config {
            what: "protocol versions",
            source,
        })?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// A server configuration presenting `cert` that asks clients for a certificate, naming
/// `client_ca` as acceptable, but neither requires nor trusts one: the client proves it
/// holds the key, and the chain is left to a [`ClientVerifier`] after the handshake (read
/// it with [`PeerCertificates`]), as upstream's API server answers a certificate from
/// another CA with a 401 rather than a failed handshake.
pub fn server_config_requesting_client_certs(
    cert: &CertKey,
    client_ca: &str,
) -> Result<rustls::ServerConfig, Error> {
    let verifier = Arc::new(verify::RequestClientCert::new(client_ca)?);
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Config {
            what: "protocol versions",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&cert.cert_pem, "certificate")?, key(&cert.key_pem)?)
        .map_err(|source| Error::Config {
            what: "certificate",
            source,
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A client configuration trusting only `ca_pem`, presenting `identity` when given.
pub fn client_config(
    ca_pem: &str,
    identity: Option<&CertKey>,
) -> Result<rustls::ClientConfig, Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Config {
            what: "protocol versions",
            source,
        })?
        .with_root_certificates(roots(ca_pem)?);
    with_identity(builder, identity)
}

/// A client configuration that does not check who the server is (upstream's
/// `insecureSkipTLSVerify` of an APIService): any certificate is accepted, though the
/// handshake's signatures are still verified, so the traffic is encrypted to whoever
/// answered. Presents `identity` when given.
pub fn client_config_unverified(identity: Option<&CertKey>) -> Result<rustls::ClientConfig, Error> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Config {
            what: "protocol versions",
            source,
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    with_identity(builder, identity)
}

fn with_identity(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    identity: Option<&CertKey>,
) -> Result<rustls::ClientConfig, Error> {
    let mut cfg = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                certs(&id.cert_pem, "client certificate")?,
                key(&id.key_pem)?,
            )
            .map_err(|source| Error::Config {
                what: "client certificate",
                source,
            })?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Accepts any server certificate; checks the handshake signatures with the provider's
/// algorithms.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
