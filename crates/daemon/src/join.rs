//! Join tokens: how `kcored agent --server URL --token T` trusts the server it joins.
//!
//! A token reads `K10<sha256 of the cluster CA certificate, hex>::<bearer token>`. The
//! agent first completes a TLS handshake without sending anything, takes the CA
//! certificate the server presents in its chain, checks it against the hash in the
//! token, and only then talks to the API with the bearer token, over a connection that
//! verifies the server with that CA. A man in the middle can neither learn the bearer
//! token nor pass as the server.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

const PREFIX: &str = "K10";

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the cluster CA certificate (DER).
    pub ca_hash: [u8; 32],
    /// The bearer token the agent authenticates with.
    pub secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_hash", &hex::encode(self.ca_hash))
            .finish_non_exhaustive()
    }
}

impl JoinToken {
    /// The token for a server whose CA certificate is `ca_pem`.
    ///
    /// ```
    /// use kcored::join::JoinToken;
    /// let t: JoinToken = format!("K10{}::s3cret", "ab".repeat(32)).parse()?;
    /// assert_eq!(t.secret, "s3cret");
    /// assert_eq!(t.to_string().parse::<JoinToken>()?, t);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_ca(ca_pem: &str, secret: &str) -> Result<JoinToken> {
        let der = ca_der(ca_pem)?;
        Ok(JoinToken {
            ca_hash: Sha256::digest(&der).into(),
            secret: secret.to_owned(),
        })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}::{}", hex::encode(self.ca_hash), self.secret)
    }
}

impl std::str::FromStr for JoinToken {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let rest = s
            .trim()
            .strip_prefix(PREFIX)
            .context("a join token starts with K10 (print it with `kcored token`)")?;
        let (hash, secret) = rest
            .split_once("::")
            .context("a join token reads K10<ca hash>::<secret>")?;
        let mut ca_hash = [0u8; 32];
        hex::decode_to_slice(hash, &mut ca_hash)
            .context("the CA hash of a join token is 64 hex digits")?;
        if secret.is_empty() {
            bail!("the join token has an empty secret");
        }
        Ok(JoinToken {
            ca_hash,
            secret: secret.to_owned(),
        })
    }
}

fn ca_der(pem: &str) -> Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    let cert = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .context("no certificate in the CA file")?
        .context("parsing the CA certificate")?;
    Ok(cert.to_vec())
}

/// Accepts any chain and remembers it: used once, for a handshake that sends nothing.
#[derive(Debug)]
struct Capture {
    chain: Mutex<Vec<Vec<u8>>>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        chain.push(end_entity.to_vec());
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// Fetches the CA certificate (DER) from the server at `url` and checks it against the
/// token. Nothing is sent to the server but a TLS handshake.
#[tracing::instrument(skip(token))]
pub async fn discover_ca(url: &str, token: &JoinToken) -> Result<Vec<u8>> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("server URL {url}"))?;
    if uri.scheme_str() != Some("https") {
        bail!("the server URL must be https://, not {url}");
    }
    let host = uri.host().context("the server URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let capture = Arc::new(Capture {
        chain: Mutex::new(Vec::new()),
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    });
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)),
    )
    .await
    .with_context(|| format!("connecting to {host}:{port}: timed out"))?
    .with_context(|| format!("connecting to {host}:{port}"))?;
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .with_context(|| format!("server name {host}"))?;
    connector
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {host}:{port}"))?;
    let chain = capture
        .chain
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    chain
        .into_iter()
        .find(|der| <[u8; 32]>::from(Sha256::digest(der)) == token.ca_hash)
        .with_context(|| {
            format!("the server at {url} does not present the CA certificate the join token names")
        })
}

/// A kube client for `url` that trusts only the CA `ca_der` and authenticates with
/// `bearer`.
pub fn client(url: &str, ca_der: Vec<u8>, bearer: &str) -> Result<kube::Client> {
    let mut cfg = kube::Config::new(url.parse().with_context(|| format!("server URL {url}"))?);
    cfg.root_cert = Some(vec![ca_der]);
    cfg.auth_info.token = Some(bearer.to_owned().into());
    kube::Client::try_from(cfg).context("building the API client")
}

/// A kube client for `url` that trusts only the CA `ca_pem` and authenticates with the
/// client certificate `cert_pem` and its key `key_pem` (a node's own credential).
pub fn client_with_certificate(
    url: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<kube::Client> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut cfg = kube::Config::new(url.parse().with_context(|| format!("server URL {url}"))?);
    cfg.root_cert = Some(vec![ca_der(ca_pem)?]);
    cfg.auth_info.client_certificate_data = Some(b64(cert_pem));
    cfg.auth_info.client_key_data = Some(b64(key_pem).into());
    kube::Client::try_from(cfg).context("building the API client")
}

/// A kubeconfig for node `node` at `url` with its client certificate (what
/// [`client_with_certificate`] connects with), for `kubectl --kubeconfig`.
pub fn kubeconfig_with_certificate(
    url: &str,
    node: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kcore\n  cluster:\n    certificate-authority-data: {}\n    server: {url}\ncontexts:\n- name: kcore\n  context:\n    cluster: kcore\n    user: \"system:node:{node}\"\ncurrent-context: kcore\nusers:\n- name: \"system:node:{node}\"\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(ca_pem),
        b64(cert_pem),
        b64(key_pem)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = JoinToken {
            ca_hash: [7; 32],
            secret: "abc".into(),
        };
        assert_eq!(t.to_string().parse::<JoinToken>().unwrap(), t);
        assert!("abc".parse::<JoinToken>().is_err());
        assert!("K10zz::abc".parse::<JoinToken>().is_err());
        assert!(format!("K10{}::", "00".repeat(32))
            .parse::<JoinToken>()
            .is_err());
        assert!(!format!("{t:?}").contains("abc"));
    }
}
