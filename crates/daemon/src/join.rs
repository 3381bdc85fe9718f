//! Join tokens: how `kcored agent --server URL --token T` trusts the server it joins.
//!
//! A token reads `K10<sha256 of the cluster CA certificate, hex>::<bearer token>`. The
//! agent first completes a TLS handshake without sending anything, takes the CA
//! certificate the server presents in its chain, checks it against the hash in the
//! token, and only then talks to the API with the bearer token, over a connection that
//! verifies the server with that CA. A man in the middle can neither learn the bearer
//! token nor pass as the server.
//!
//! The bearer token is a bootstrap token (`<id>.<secret>`, [`BootstrapToken`]), as
//! kubeadm's: a Secret `bootstrap-token-<id>` in `kube-system` that the API server
//! authenticates as `system:bootstrap:<id>` in `system:bootstrappers`, which may only
//! ask for node client certificates (see [`crate::credentials`]). The control plane
//! keeps a default one without expiry (`<data-dir>/apiserver/join-token`, printed by
//! `kcored token`); `kcored token create [--ttl]` makes more, which expire.

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

/// The PEM of a DER certificate (the cluster CA [`discover_ca`] returns).
pub fn ca_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
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

/// A kubeconfig for node `node` at `url` with its client certificate, for
/// `kubectl --kubeconfig`.
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

/// A bootstrap token, `<id>.<secret>` (`[a-z0-9]{6}.[a-z0-9]{16}`).
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public part, naming its Secret `bootstrap-token-<id>`.
    pub id: String,
    /// The secret part.
    pub secret: String,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

/// The Secret type of bootstrap tokens.
pub const BOOTSTRAP_TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The group a default join token's nodes are in (besides `system:bootstrappers`).
pub const DEFAULT_NODE_TOKEN_GROUP: &str = "system:bootstrappers:kcore:default-node-token";
const TOKEN_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_part(len: usize) -> String {
    use ring::rand::SecureRandom as _;
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut b = [0u8; 1];
        let _ = rng.fill(&mut b);
        // 252 = 7 * 36: no modulo bias
        if b[0] < 252 {
            out.push(char::from(
                TOKEN_CHARS[usize::from(b[0]) % TOKEN_CHARS.len()],
            ));
        }
    }
    out
}

impl BootstrapToken {
    /// A new random token.
    pub fn generate() -> Self {
        BootstrapToken {
            id: random_part(6),
            secret: random_part(16),
        }
    }

    /// The Secret that makes this token valid, for `ttl` (`None`: no expiry), as
    /// `kubeadm token create` writes it.
    pub fn secret_object(
        &self,
        ttl: Option<std::time::Duration>,
        description: &str,
    ) -> serde_json::Value {
        let mut data = serde_json::json!({
            "token-id": self.id,
            "token-secret": self.secret,
            "description": description,
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": DEFAULT_NODE_TOKEN_GROUP,
        });
        if let Some(ttl) = ttl {
            let at = k8s_openapi::jiff::Timestamp::now()
                + k8s_openapi::jiff::SignedDuration::from_secs(ttl.as_secs() as i64);
            data["expiration"] = serde_json::json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": format!("bootstrap-token-{}", self.id), "namespace": "kube-system"},
            "type": BOOTSTRAP_TOKEN_TYPE,
            "stringData": data,
        })
    }

    /// The token kept at `path`, made (mode 0600) on first use.
    pub fn load_or_create(path: &std::path::Path) -> Result<Self> {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text.trim().parse();
        }
        let t = BootstrapToken::generate();
        kcore_statedir::write(
            path,
            format!("{t}\n").as_bytes(),
            kcore_statedir::PRIVATE_FILE,
        )
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(t)
    }

    /// Creates this token's Secret with `client` (an administrator's); an existing one
    /// is left as it is.
    pub async fn store(
        &self,
        client: &kube::Client,
        ttl: Option<std::time::Duration>,
        description: &str,
    ) -> Result<()> {
        use k8s_openapi::api::core::v1::Secret;
        let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), "kube-system");
        let obj: Secret = serde_json::from_value(self.secret_object(ttl, description))?;
        match secrets
            .create(&kube::api::PostParams::default(), &obj)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if kcore_k8s::status_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(e).context("creating the bootstrap token's Secret"),
        }
    }
}

impl std::str::FromStr for BootstrapToken {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let ok = |p: &str, n: usize| {
            p.len() == n
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        match s.trim().split_once('.') {
            Some((id, secret)) if ok(id, 6) && ok(secret, 16) => Ok(BootstrapToken {
                id: id.to_owned(),
                secret: secret.to_owned(),
            }),
            _ => bail!("a bootstrap token reads [a-z0-9]{{6}}.[a-z0-9]{{16}}"),
        }
    }
}

/// One line of `kcored token list`, as `kubeadm token list` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// `<id>.<secret>`.
    pub token: String,
    /// Seconds left (`None`: never expires).
    pub ttl: Option<i64>,
    /// The expiration (RFC 3339) or `<forever>`.
    pub expires: String,
    /// The `usage-bootstrap-*` keys set to `true`.
    pub usages: Vec<String>,
    /// `description`.
    pub description: String,
    /// `auth-extra-groups`.
    pub extra_groups: String,
}

/// The bootstrap tokens stored in `kube-system`.
pub async fn list_bootstrap_tokens(client: &kube::Client) -> Result<Vec<TokenInfo>> {
    use k8s_openapi::api::core::v1::Secret;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), "kube-system");
    let list = secrets
        .list(&kube::api::ListParams::default())
        .await
        .context("listing the bootstrap tokens")?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut out = Vec::new();
    for s in list
        .items
        .iter()
        .filter(|s| s.type_.as_deref() == Some(BOOTSTRAP_TOKEN_TYPE))
    {
        let data = s.data.clone().unwrap_or_default();
        let get = |k: &str| {
            data.get(k)
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                .unwrap_or_default()
        };
        let (id, secret) = (get("token-id"), get("token-secret"));
        if id.is_empty() {
            continue;
        }
        let expiration = get("expiration");
        let ttl = expiration
            .parse::<k8s_openapi::jiff::Timestamp>()
            .ok()
            .map(|at| at.as_second() - now.as_second());
        let mut usages: Vec<String> = data
            .iter()
            .filter(|(k, v)| k.starts_with("usage-bootstrap-") && v.0 == b"true")
            .map(|(k, _)| k.trim_start_matches("usage-bootstrap-").to_owned())
            .collect();
        usages.sort();
        out.push(TokenInfo {
            token: format!("{id}.{secret}"),
            ttl,
            expires: if expiration.is_empty() {
                "<forever>".into()
            } else {
                expiration
            },
            usages,
            description: get("description"),
            extra_groups: get("auth-extra-groups"),
        });
    }
    Ok(out)
}

/// A duration as kubeadm prints a TTL (`23h`, `59m`, `<forever>`).
pub fn human_ttl(ttl: Option<i64>) -> String {
    match ttl {
        None => "<forever>".into(),
        Some(s) if s <= 0 => "<invalid>".into(),
        Some(s) if s >= 86_400 => format!("{}d", s / 86_400),
        Some(s) if s >= 3600 => format!("{}h", s / 3600),
        Some(s) if s >= 60 => format!("{}m", s / 60),
        Some(s) => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_tokens_are_kubeadms() {
        let t = BootstrapToken::generate();
        assert_eq!(t.to_string().parse::<BootstrapToken>().unwrap(), t);
        assert_eq!(t.id.len(), 6);
        assert_eq!(t.secret.len(), 16);
        assert_ne!(BootstrapToken::generate(), t);
        assert!("abcdef.0123456789ABCDEF".parse::<BootstrapToken>().is_err());
        assert!("abcdef".parse::<BootstrapToken>().is_err());
        let s = t.secret_object(Some(std::time::Duration::from_secs(3600)), "d");
        assert_eq!(s["metadata"]["name"], format!("bootstrap-token-{}", t.id));
        assert_eq!(s["type"], BOOTSTRAP_TOKEN_TYPE);
        assert_eq!(s["stringData"]["usage-bootstrap-authentication"], "true");
        let exp: k8s_openapi::jiff::Timestamp = s["stringData"]["expiration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let left = exp.as_second() - k8s_openapi::jiff::Timestamp::now().as_second();
        assert!((3590..=3600).contains(&left), "{left}");
        assert!(t.secret_object(None, "d")["stringData"]["expiration"].is_null());
        // the join token carries it as its secret part
        let join = JoinToken {
            ca_hash: [1; 32],
            secret: t.to_string(),
        };
        let back: JoinToken = join.to_string().parse().unwrap();
        assert_eq!(back.secret.parse::<BootstrapToken>().unwrap(), t);
        assert_eq!(human_ttl(None), "<forever>");
        assert_eq!(human_ttl(Some(23 * 3600 + 59 * 60)), "23h");
        assert_eq!(human_ttl(Some(90)), "1m");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("join-token");
        let a = BootstrapToken::load_or_create(&path).unwrap();
        assert_eq!(BootstrapToken::load_or_create(&path).unwrap(), a);
    }

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
