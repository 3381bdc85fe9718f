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
//!    the new certificate, and those opened with the old one are closed, as the
//!    kubelet does.
//! 4. [`ServingRotation`] renews the serving certificate on the same schedule, through a
//!    `kubelet-serving` CSR, and swaps it into the node's running TLS server
//!    ([`kcore_tls::LiveCert`]). [`NodeRotation`] runs both; [`keep_renewed`] is the
//!    schedule, tested with a fake [`Clock`].

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use hyper_util::client::legacy::connect::{Connected, Connection};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcore_tls::{CertKey, LiveCert};
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

/// The state of one connection a [`ClientIdentity`]'s clients opened.
#[derive(Default)]
struct ConnState {
    closed: AtomicBool,
    waker: futures::task::AtomicWaker,
}

/// The open connections of a client identity, so that they can be closed when its
/// certificate is replaced: as the kubelet closes its connections on rotation, so
/// that nothing is sent as the old certificate once the new one is in use.
#[derive(Clone, Default)]
struct Connections(Arc<Mutex<Vec<Weak<ConnState>>>>);

impl Connections {
    fn track<S>(&self, inner: S) -> Tracked<S> {
        let state = Arc::new(ConnState::default());
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&state));
        Tracked { inner, state }
    }

    /// Closes every open connection: its next read or write (an idle one is woken for
    /// it) fails, and its client drops it. Waits (at most `within`) until they are
    /// gone; how many there were.
    async fn close_all(&self, within: Duration) -> usize {
        let open: Vec<Arc<ConnState>> =
            std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
        for c in &open {
            c.closed.store(true, Ordering::Release);
            c.waker.wake();
        }
        let n = open.len();
        let weak: Vec<Weak<ConnState>> = open.iter().map(Arc::downgrade).collect();
        drop(open);
        let deadline = tokio::time::Instant::now() + within;
        while weak.iter().any(|w| w.strong_count() > 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        n
    }
}

/// A connection of a [`ClientIdentity`]'s client, which fails once closed.
struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S> Tracked<S> {
    fn check(&self, cx: &std::task::Context<'_>) -> Result<(), std::io::Error> {
        self.state.waker.register(cx.waker());
        if self.state.closed.load(Ordering::Acquire) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "closed: the client certificate was renewed",
            ));
        }
        Ok(())
    }
}

impl<S: hyper::rt::Read + Unpin> hyper::rt::Read for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: hyper::rt::Write + Unpin> hyper::rt::Write for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

impl<S: Connection> Connection for Tracked<S> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

/// A connector whose connections are [`Connections`]' to close.
#[derive(Clone)]
struct TrackingConnector<C> {
    inner: C,
    conns: Connections,
}

impl<C> tower::Service<hyper::Uri> for TrackingConnector<C>
where
    C: tower::Service<hyper::Uri>,
    C::Future: Send + 'static,
    C::Response: Send + 'static,
{
    type Response = Tracked<C::Response>;
    type Error = C::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), C::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let conns = self.conns.clone();
        Box::pin(async move { connecting.await.map(|s| conns.track(s)) })
    }
}

/// A client certificate that can be replaced while clients use it (a rustls client
/// certificate resolver over the current one, [`kcore_tls::LiveCert`]); the
/// connections its clients opened with the old one are closed on replacement.
#[derive(Clone)]
pub struct ClientIdentity {
    cert: LiveCert,
    conns: Connections,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// The identity of `cert`.
    pub fn new(cert: CertKey) -> Result<Self> {
        let cert = LiveCert::new(cert).context("loading the client certificate")?;
        Ok(ClientIdentity {
            cert,
            conns: Connections::default(),
        })
    }

    /// The current certificate and key.
    pub fn current(&self) -> CertKey {
        self.cert.current()
    }

    /// Replaces the certificate: connections made from now on present `cert`, and
    /// those open are closed (a request in flight on one fails; a watch ends, and is
    /// made again on a new connection). Returns once they are gone (at most 5 s).
    pub async fn replace(&self, cert: CertKey) -> Result<()> {
        self.cert
            .replace(cert)
            .context("loading the client certificate")?;
        let closed = self.conns.close_all(Duration::from_secs(5)).await;
        tracing::debug!(
            closed,
            "closed the connections of the old client certificate"
        );
        Ok(())
    }

    /// The validity period of the current certificate.
    pub fn validity(&self) -> Result<(SystemTime, SystemTime)> {
        self.cert
            .validity()
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
        .with_client_cert_resolver(Arc::new(self.cert.clone())))
    }

    /// A kube client for `url` presenting this identity, whichever certificate is
    /// current when it connects.
    pub fn client(&self, url: &str, ca_pem: &str) -> Result<kube::Client> {
        use kube::client::ConfigExt as _;
        let cfg = kube::Config::new(url.parse().with_context(|| format!("server URL {url}"))?);
        let tls = self.rustls_config(ca_pem)?;
        let https = TrackingConnector {
            inner: hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_only()
                .enable_http1()
                .build(),
            conns: self.conns.clone(),
        };
        let http: hyper_util::client::legacy::Client<_, kube::client::Body> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        let service = tower::ServiceBuilder::new()
            .layer(cfg.base_uri_layer())
            .service(http);
        Ok(kube::Client::new(service, cfg.default_namespace))
    }
}

/// Where renewal reads the time and waits: the system clock, or a test's fake one.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> SystemTime;
    /// Waits `d`.
    fn sleep(
        &self,
        d: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(
        &self,
        d: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// Keeps `cert` renewed: at each rotation deadline of the current certificate (70 to
/// 90 % of its lifetime, [`rotation_deadline`]) it calls `renew`, which gets a new
/// certificate and puts it in `cert`; a failed renewal is retried with backoff (1 s,
/// doubling, at most every 5 minutes). `what` names the certificate in logs. Returns
/// only when the current certificate's validity cannot be read.
pub async fn keep_renewed<F, Fut>(
    what: &'static str,
    cert: &LiveCert,
    clock: &dyn Clock,
    mut renew: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut retry = Duration::from_secs(1);
    loop {
        let (from, until) = cert
            .validity()
            .with_context(|| format!("the {what} certificate has no readable validity"))?;
        let at = rotation_deadline(from, until, random_unit());
        let wait = at.duration_since(clock.now()).unwrap_or(Duration::ZERO);
        tracing::debug!(certificate = what, ?wait, "next certificate rotation");
        clock.sleep(wait).await;
        loop {
            match renew().await {
                Ok(()) => {
                    retry = Duration::from_secs(1);
                    tracing::info!(certificate = what, "rotated the node's certificate");
                    break;
                }
                Err(e) => {
                    tracing::warn!(
                        certificate = what,
                        error = format!("{e:#}"),
                        "rotating the node's certificate"
                    );
                    clock.sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(300));
                }
            }
        }
    }
}

/// Runs `renewals` until `shutdown` completes (or one of them fails).
async fn until_shutdown(
    renewals: impl std::future::Future<Output = Result<()>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    tokio::select! {
        _ = shutdown => Ok(()),
        r = renewals => r,
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
        self.identity.replace(cert).await?;
        Ok(())
    }

    /// Renews at each deadline, for ever ([`keep_renewed`]).
    pub async fn keep_renewed(&self, clock: &dyn Clock) -> Result<()> {
        keep_renewed("client", &self.identity.cert, clock, || self.renew()).await
    }

    /// Renews at each deadline until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        until_shutdown(self.keep_renewed(&SystemClock), shutdown).await
    }
}

/// The CSR of node `node_user`'s serving certificate for `names` (its host name and
/// addresses).
pub fn serving_csr<'a>(
    node_user: &'a str,
    groups: &'a [String],
    names: &'a [String],
) -> CsrSpec<'a> {
    CsrSpec {
        signer: KUBELET_SERVING_SIGNER,
        common_name: node_user,
        organizations: groups,
        names,
        usages: &["digital signature", "server auth"],
        expiration: Some(CLIENT_CERT_LIFETIME),
    }
}

/// Renews a node's serving certificate before it expires, as the kubelet's server
/// certificate manager: a new key, a `kubelet-serving` CSR the node sends as itself,
/// and the certificate swapped into the node's running TLS server
/// ([`kcore_tls::server_config_live`]), whose next handshakes present it.
pub struct ServingRotation {
    /// The serving certificate the node's server presents.
    pub cert: LiveCert,
    /// A client presenting the node's own (client) identity.
    pub client: kube::Client,
    /// The node's name.
    pub node: String,
    /// The names the certificate is for: the node's addresses and host name.
    pub names: Vec<String>,
}

impl std::fmt::Debug for ServingRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingRotation")
            .field("node", &self.node)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl ServingRotation {
    /// Renews the serving certificate now.
    #[tracing::instrument(skip(self), fields(node = %self.node))]
    pub async fn renew(&self) -> Result<()> {
        let user = format!("system:node:{}", self.node);
        let groups = ["system:nodes".to_owned()];
        let cert =
            request_certificate(&self.client, &serving_csr(&user, &groups, &self.names)).await?;
        self.cert
            .replace(cert)
            .context("loading the serving certificate")
    }

    /// Renews at each deadline, for ever ([`keep_renewed`]).
    pub async fn keep_renewed(&self, clock: &dyn Clock) -> Result<()> {
        keep_renewed("serving", &self.cert, clock, || self.renew()).await
    }
}

/// Both of a node's certificates, each renewed on its own schedule.
#[derive(Debug)]
pub struct NodeRotation {
    /// The client certificate.
    pub client: ClientRotation,
    /// The serving certificate.
    pub serving: ServingRotation,
}

impl NodeRotation {
    /// Renews both certificates at their deadlines until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let both = async {
            tokio::try_join!(
                self.client.keep_renewed(&SystemClock),
                self.serving.keep_renewed(&SystemClock)
            )
            .map(|_| ())
        };
        until_shutdown(both, shutdown).await
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
    use std::sync::Mutex;

    /// A clock whose sleeps return at once, moving its time on, and are recorded; the
    /// sleep after `stop_after` sleeps never returns.
    struct FakeClock {
        now: Mutex<SystemTime>,
        sleeps: Mutex<Vec<Duration>>,
        stop_after: usize,
    }

    impl Clock for FakeClock {
        fn now(&self) -> SystemTime {
            *self.now.lock().unwrap()
        }

        fn sleep(
            &self,
            d: Duration,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
            let mut sleeps = self.sleeps.lock().unwrap();
            sleeps.push(d);
            if sleeps.len() > self.stop_after {
                return Box::pin(std::future::pending());
            }
            *self.now.lock().unwrap() += d;
            Box::pin(tokio::task::yield_now())
        }
    }

    #[tokio::test]
    async fn certificates_are_renewed_between_70_and_90_percent_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let ca = kcore_tls::Ca::load_or_create(dir.path()).unwrap();
        let issue = || {
            ca.issue("system:node:n1", &["n1".into()], kcore_tls::Usage::Server)
                .unwrap()
        };
        let first = issue();
        let live = LiveCert::new(first.clone()).unwrap();
        let (from, until) = live.validity().unwrap();
        let life = until.duration_since(from).unwrap();
        // the clock starts at the certificate's notBefore
        let clock = FakeClock {
            now: Mutex::new(from),
            sleeps: Mutex::new(Vec::new()),
            stop_after: 3,
        };
        let calls = Mutex::new(Vec::new());
        let renewed = Mutex::new(Vec::new());
        let renew = || {
            let n = {
                let mut c = calls.lock().unwrap();
                c.push(clock.now());
                c.len()
            };
            let next = issue();
            let (live, renewed) = (&live, &renewed);
            async move {
                if n == 1 {
                    anyhow::bail!("the API server is away");
                }
                renewed.lock().unwrap().push(next.cert_pem.clone());
                live.replace(next)?;
                Ok::<(), anyhow::Error>(())
            }
        };
        // sleeps: until the deadline, 1 s after the failure, until the new deadline, and
        // the fourth never ends
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            keep_renewed("serving", &live, &clock, renew),
        )
        .await;
        assert!(r.is_err(), "keeps renewing: {r:?}");
        let sleeps = clock.sleeps.lock().unwrap().clone();
        assert_eq!(sleeps.len(), 4, "{sleeps:?}");
        let share = sleeps[0].as_secs_f64() / life.as_secs_f64();
        assert!(
            (0.7..=0.9).contains(&share),
            "renewed at {share} of the lifetime"
        );
        assert_eq!(
            sleeps[1],
            Duration::from_secs(1),
            "a failure is retried after 1 s"
        );
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 3, "renewed twice after one failure: {calls:?}");
        assert_eq!(calls[0], from + sleeps[0]);
        assert_eq!(calls[1], calls[0] + Duration::from_secs(1));
        // the renewed certificate is what the live one presents
        let renewed = renewed.lock().unwrap().clone();
        assert_eq!(renewed.len(), 2);
        assert_eq!(live.current().cert_pem, renewed[1]);
        assert_ne!(live.current().cert_pem, first.cert_pem);
        // the next deadline is computed from the new certificate: 70 to 90 % of its
        // lifetime after its own notBefore
        let (from2, until2) = (live.validity().unwrap().0, live.validity().unwrap().1);
        let slept_to = calls[2] + sleeps[3];
        let share = slept_to
            .duration_since(from2)
            .unwrap_or_default()
            .as_secs_f64()
            / until2.duration_since(from2).unwrap().as_secs_f64();
        assert!(
            sleeps[3] == Duration::ZERO || (0.7..=0.9).contains(&share),
            "{share}"
        );
    }

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
