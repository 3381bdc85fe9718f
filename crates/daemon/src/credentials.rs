//! A node's credentials through CertificateSigningRequests, as the kubelet's TLS
//! bootstrap and certificate manager:
//!
//! 1. With the bootstrap credential (the join token's bootstrap token), the agent makes
//!    a key and asks for its client certificate: a CSR for
//!    `kubernetes.io/kube-apiserver-client-kubelet`, `CN=system:node:<name>`,
//!    `O=system:nodes`. The control plane's approver approves it (`nodeclient`), its
//!    signer signs it, and the agent keeps it in `<data-dir>/node.kubeconfig`.
//! 2. As itself, it asks for its serving certificate (`kubernetes.io/kubelet-serving`)
//!    for its name and address, which the control plane approves for the node it names.
//! 3. [`ClientRotation`] renews the client certificate once 70 to 90 % of its lifetime
//!    has passed (upstream's jittered deadline), through a CSR the node itself sends
//!    (`selfnodeclient`), and swaps it into the running client: new connections present
//!    the new certificate (open ones keep the old, still valid, one until they close).

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcore_tls::CertKey;
use kube::api::{Api, PostParams};

/// The signer of nodes' client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of nodes' serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// How long a node asks its client certificate to last (the signer may shorten it).
pub const CLIENT_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
const WAIT_FOR_CERTIFICATE: Duration = Duration::from_secs(300);

/// What to ask a signer for.
#[derive(Debug, Clone)]
pub struct CsrSpec<'a> {
    /// `spec.signerName`.
    pub signer: &'a str,
    /// The subject's common name.
    pub common_name: &'a str,
    /// The subject's organizations.
    pub organizations: &'a [String],
    /// DNS names and IP addresses.
    pub names: &'a [String],
    /// `spec.usages`.
    pub usages: &'a [&'a str],
    /// `spec.expirationSeconds`.
    pub expiration: Option<Duration>,
}

/// Makes a key, sends a CSR for it with `client`, and waits until it is signed: the
/// certificate (PEM) and the key. A denied or failed request is an error with the
/// condition's reason and message.
#[tracing::instrument(skip_all, fields(signer = spec.signer, cn = spec.common_name))]
pub async fn request_certificate(client: &kube::Client, spec: &CsrSpec<'_>) -> Result<CertKey> {
    let req = kcore_tls::CertRequest::generate(spec.common_name, spec.organizations, spec.names)
        .context("making the certificate request")?;
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut body = serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "node-csr-"},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(&req.cert_pem),
            "signerName": spec.signer,
            "usages": spec.usages,
        },
    });
    if let Some(e) = spec.expiration {
        body["spec"]["expirationSeconds"] = serde_json::json!(e.as_secs());
    }
    let csr: CertificateSigningRequest = serde_json::from_value(body)?;
    let created = csrs
        .create(&PostParams::default(), &csr)
        .await
        .context("creating the certificate signing request")?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, "sent a certificate signing request");
    let deadline = tokio::time::Instant::now() + WAIT_FOR_CERTIFICATE;
    let mut pause = Duration::from_millis(50);
    loop {
        let csr = csrs
            .get(&name)
            .await
            .with_context(|| format!("reading certificate signing request {name}"))?;
        let status = csr.status.unwrap_or_default();
        for c in status.conditions.unwrap_or_default() {
            if matches!(c.type_.as_str(), "Denied" | "Failed") && c.status != "False" {
                bail!(
                    "certificate signing request {name} is {}: {}: {}",
                    c.type_.to_lowercase(),
                    c.reason.unwrap_or_default(),
                    c.message.unwrap_or_default()
                );
            }
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            let cert_pem = String::from_utf8(cert.0)
                .with_context(|| format!("the certificate of {name} is not PEM"))?;
            return Ok(CertKey {
                cert_pem,
                key_pem: req.key_pem,
            });
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "certificate signing request {name} was not signed within {} s (approve it with `kubectl certificate approve {name}`)",
                WAIT_FOR_CERTIFICATE.as_secs()
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The CSR of node `node`'s client certificate.
pub fn client_csr<'a>(node_user: &'a str, groups: &'a [String]) -> CsrSpec<'a> {
    CsrSpec {
        signer: KUBELET_CLIENT_SIGNER,
        common_name: node_user,
        organizations: groups,
        names: &[],
        usages: &["digital signature", "client auth"],
        expiration: Some(CLIENT_CERT_LIFETIME),
    }
}

/// Upstream's rotation deadline: at a uniformly random point between 70 % and 90 % of
/// the certificate's lifetime (`jitter` in `[0, 1)` picks it).
pub fn rotation_deadline(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let total = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    not_before + total.mul_f64(0.7 + 0.2 * jitter.clamp(0.0, 1.0))
}

fn random_unit() -> f64 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// A client certificate that can be replaced while clients use it (a rustls client
/// certificate resolver over the current one).
#[derive(Clone)]
pub struct ClientIdentity {
    current: Arc<RwLock<(CertKey, Arc<rustls::sign::CertifiedKey>)>>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// The identity of `cert`.
    pub fn new(cert: CertKey) -> Result<Self> {
        let key = kcore_tls::certified_key(&cert).context("loading the client certificate")?;
        Ok(ClientIdentity {
            current: Arc::new(RwLock::new((cert, key))),
        })
    }

    /// The current certificate and key.
    pub fn current(&self) -> CertKey {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Replaces the certificate: connections made from now on present `cert`.
    pub fn replace(&self, cert: CertKey) -> Result<()> {
        let key = kcore_tls::certified_key(&cert).context("loading the client certificate")?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (cert, key);
        Ok(())
    }

    /// The validity period of the current certificate.
    pub fn validity(&self) -> Result<(SystemTime, SystemTime)> {
        let pem = self.current().cert_pem;
        let der = kcore_tls::pem_certificates(&pem).context("reading the client certificate")?;
        der.first()
            .and_then(|d| kcore_tls::validity(d))
            .context("the client certificate has no readable validity")
    }

    /// A rustls client configuration that trusts only `ca_pem` and presents this
    /// identity's current certificate.
    pub fn rustls_config(&self, ca_pem: &str) -> Result<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for der in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(der.context("reading the cluster CA")?)
                .context("trusting the cluster CA")?;
        }
        Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(self.clone())))
    }

    /// A kube client for `url` presenting this identity, whichever certificate is
    /// current when it connects.
    pub fn client(&self, url: &str, ca_pem: &str) -> Result<kube::Client> {
        use kube::client::ConfigExt as _;
        let cfg = kube::Config::new(url.parse().with_context(|| format!("server URL {url}"))?);
        let tls = self.rustls_config(ca_pem)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let http: hyper_util::client::legacy::Client<_, kube::client::Body> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        let service = tower::ServiceBuilder::new()
            .layer(cfg.base_uri_layer())
            .service(http);
        Ok(kube::Client::new(service, cfg.default_namespace))
    }
}

impl rustls::client::ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .1
                .clone(),
        )
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Renews a node's client certificate before it expires (see the module doc).
pub struct ClientRotation {
    /// The node's identity, swapped in place on renewal.
    pub identity: ClientIdentity,
    /// A client presenting `identity`.
    pub client: kube::Client,
    /// Rewritten with each new certificate.
    pub kubeconfig: std::path::PathBuf,
    /// The API server's URL.
    pub server_url: String,
    /// The node's name.
    pub node: String,
    /// The cluster CA (PEM).
    pub ca_pem: String,
}

impl std::fmt::Debug for ClientRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRotation")
            .field("node", &self.node)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl ClientRotation {
    /// Renews the certificate now: a new key, a CSR as the node, the kubeconfig
    /// rewritten, and the identity swapped.
    #[tracing::instrument(skip(self), fields(node = %self.node))]
    pub async fn renew(&self) -> Result<()> {
        let user = format!("system:node:{}", self.node);
        let groups = ["system:nodes".to_owned()];
        let cert = request_certificate(&self.client, &client_csr(&user, &groups)).await?;
        write_kubeconfig(
            &self.kubeconfig,
            &self.server_url,
            &self.node,
            &self.ca_pem,
            &cert,
        )?;
        self.identity.replace(cert)?;
        tracing::info!("rotated the node's client certificate");
        Ok(())
    }

    /// Renews at each deadline until `shutdown` completes; a failed renewal is retried
    /// with backoff (at most every 5 minutes).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let mut retry = Duration::from_secs(1);
        loop {
            let (from, until) = self.identity.validity()?;
            let at = rotation_deadline(from, until, random_unit());
            let wait = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tracing::debug!(?wait, "next client certificate rotation");
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
            let renewed = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = self.renew() => r,
            };
            match renewed {
                Ok(()) => retry = Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "rotating the node's client certificate"
                    );
                    tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(Duration::from_secs(300));
                }
            }
        }
    }
}

/// Writes node `node`'s kubeconfig (its client certificate `cert`) to `path`, mode 0600.
pub fn write_kubeconfig(
    path: &std::path::Path,
    url: &str,
    node: &str,
    ca_pem: &str,
    cert: &CertKey,
) -> Result<()> {
    kcore_statedir::write(
        path,
        crate::join::kubeconfig_with_certificate(url, node, ca_pem, &cert.cert_pem, &cert.key_pem)
            .as_bytes(),
        kcore_statedir::PRIVATE_FILE,
    )
    .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_falls_between_70_and_90_percent_of_the_lifetime() {
        let from = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let until = from + Duration::from_secs(1000);
        let at = |j| {
            rotation_deadline(from, until, j)
                .duration_since(from)
                .unwrap()
                .as_secs()
        };
        assert_eq!(at(0.0), 700);
        assert_eq!(at(0.5), 800);
        assert_eq!(at(0.999_999), 899);
        for _ in 0..100 {
            let j = random_unit();
            assert!((0.0..1.0).contains(&j), "{j}");
            assert!((700..=900).contains(&at(j)));
        }
    }
}
