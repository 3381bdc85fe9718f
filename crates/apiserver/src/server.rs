//! The server: builder, listener and lifecycle.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{Api, ApiConfig};
use crate::error::Error;
use crate::http::{handle, AppState, Metrics};
use crate::storage::{RedbStorage, Storage};
use kcore_tls::TlsListener;

/// Configures an [`ApiServer`].
#[must_use]
pub struct ApiServerBuilder {
    data_dir: Option<PathBuf>,
    storage: Option<Arc<dyn Storage>>,
    listen: Option<SocketAddr>,
    insecure_http: bool,
    token_file: Option<PathBuf>,
    tokens: Vec<String>,
    hosts: Vec<String>,
    advertise: Option<IpAddr>,
    compaction: Duration,
    config: ApiConfig,
    encryption: Option<crate::storage::EncryptionConfig>,
    audit_policy: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    audit_rotation: crate::audit::AuditLogRotation,
    endpoint_reconcile_interval: Duration,
    local_nodes: crate::node_client::LocalNodes,
}

impl std::fmt::Debug for ApiServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServerBuilder")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("insecure_http", &self.insecure_http)
            .finish_non_exhaustive()
    }
}

impl Default for ApiServerBuilder {
    fn default() -> Self {
        Self {
            data_dir: None,
            storage: None,
            listen: None,
            insecure_http: false,
            token_file: None,
            tokens: Vec::new(),
            hosts: Vec::new(),
            advertise: None,
            compaction: Duration::from_secs(300),
            config: ApiConfig::default(),
            encryption: None,
            audit_policy: None,
            audit_log: None,
            audit_rotation: crate::audit::AuditLogRotation::default(),
            endpoint_reconcile_interval: Duration::from_secs(10),
            local_nodes: crate::node_client::LocalNodes::default(),
        }
    }
}

impl ApiServerBuilder {
    /// Directory for the embedded store (and, with TLS, the generated certificates).
    ///
    /// It holds every object (Secrets too), keys and tokens: it is kept 0700 (an
    /// existing one is tightened), its files 0600 (certificates 0644), whatever the umask.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Uses this storage backend instead of the embedded one.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// The address to listen on (default `127.0.0.1:6443`; port 0 picks a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Serves plain HTTP instead of HTTPS (authentication only if tokens are given: without
    /// any, a request that brings no credential is an administrator's). Only
    /// loopback addresses are accepted: this mode is for tests and local tools. Without it
    /// the server speaks HTTPS with a CA and certificate kept in `<data_dir>/pki`, requires
    /// a bearer token (from `<data_dir>/tokens.csv`, made on first start, unless
    /// [`token_file`](Self::token_file) is given) and writes `<data_dir>/admin.kubeconfig`.
    pub fn insecure_http(mut self, yes: bool) -> Self {
        self.insecure_http = yes;
        self
    }

    /// A file of bearer tokens, one per line as upstream's token auth file:
    /// `token,user,uid,"group1,group2"` (a line with the token alone is an administrator,
    /// in `system:masters`). What each user may do is up to RBAC.
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_file = Some(path.into());
        self
    }

    /// An extra name or IP address for the serving certificate.
    pub fn tls_host(mut self, host: impl Into<String>) -> Self {
        self.hosts.push(host.into());
        self
    }

    /// The address pods reach this server at: the endpoint of the `default/kubernetes`
    /// Service (upstream's `--advertise-address`; default: the listen address, or
    /// 127.0.0.1 when that is unspecified).
    pub fn advertise_address(mut self, ip: IpAddr) -> Self {
        self.advertise = Some(ip);
        self
    }

    /// How often this server renews its identity Lease and reconciles the `kubernetes`
    /// Service's endpoints (10 s, upstream's); a server that stops renewing leaves the
    /// endpoints after one and a half of these.
    pub fn endpoint_reconcile_interval(mut self, interval: Duration) -> Self {
        self.endpoint_reconcile_interval = interval;
        self
    }

    /// Adds an accepted bearer token: an administrator's (group `system:masters`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.tokens.push(token.into());
        self
    }

    /// The Service cluster-IP range (default `10.96.0.0/12`).
    pub fn service_cidr(mut self, base: std::net::Ipv4Addr, prefix: u8) -> Self {
        self.config.service_cidr = (base, prefix.clamp(8, 30));
        self
    }

    /// How often the store's history is compacted (default 5 min): each time, everything
    /// up to the revision seen at the previous tick is discarded, so watchers can resume
    /// from any revision less than one interval old.
    pub fn compaction_interval(mut self, every: Duration) -> Self {
        self.compaction = every;
        self
    }

    /// How often idle watches with `allowWatchBookmarks` get a BOOKMARK (default 30 s).
    pub fn bookmark_interval(mut self, every: Duration) -> Self {
        self.config.bookmark_interval = every;
        self
    }

    /// Reads upstream's `AdmissionConfiguration` file (`--admission-control-config-file`):
    /// the `PodSecurity` plugin's defaults and exemptions.
    pub fn admission_config_file(mut self, path: impl AsRef<Path>) -> Result<Self, Error> {
        self.config.pod_security = Arc::new(
            crate::admission::PodSecurityConfig::from_admission_config(path.as_ref())?,
        );
        Ok(self)
    }

    /// Reads upstream's `EncryptionConfiguration` file (`--encryption-provider-config`):
    /// the resources whose values are encrypted at rest and the providers (`aesgcm`,
    /// `identity`); the first provider writes, all of them read.
    pub fn encryption_provider_config(mut self, path: impl AsRef<Path>) -> Result<Self, Error> {
        self.encryption = Some(crate::storage::EncryptionConfig::from_file(path.as_ref())?);
        Ok(self)
    }

    /// The audit policy (`--audit-policy-file`, `audit.k8s.io/v1` Policy); with
    /// [`audit_log_path`](Self::audit_log_path) it turns the audit log on.
    pub fn audit_policy_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.audit_policy = Some(path.into());
        self
    }

    /// Where audit events are appended as JSON lines (`--audit-log-path`; created 0600).
    pub fn audit_log_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.audit_log = Some(path.into());
        self
    }

    /// How the audit log is rotated (`--audit-log-maxsize`, `--audit-log-maxbackup`,
    /// `--audit-log-maxage`); by default at 100 MB, keeping every old file, as upstream.
    pub fn audit_log_rotation(mut self, rotation: crate::audit::AuditLogRotation) -> Self {
        self.audit_rotation = rotation;
        self
    }

    /// The registry of node agents running in this process (default: a new, empty one;
    /// [`ApiServer::local_nodes`] returns it either way). Their pods' `exec`, `attach`
    /// and `portforward` requests go straight to the agent's handler, on the client's
    /// connection, instead of over a TLS connection to the agent's port.
    pub fn local_nodes(mut self, nodes: crate::node_client::LocalNodes) -> Self {
        self.local_nodes = nodes;
        self
    }

    /// Opens storage, creates the built-in namespaces and binds the listener.
    pub async fn build(self) -> Result<ApiServer, Error> {
        let listen = self
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 6443)));
        if self.insecure_http && !listen.ip().is_loopback() {
            return Err(Error::Config(format!(
                "plain HTTP is only allowed on loopback, not {listen}"
            )));
        }
        if let Some(dir) = &self.data_dir {
            let tightened =
                kcore_statedir::ensure_dir(dir, kcore_statedir::PRIVATE_DIR).map_err(|source| {
                    Error::Io {
                        path: dir.clone(),
                        source,
                    }
                })?;
            if let Some(t) = tightened {
                tracing::info!(%t, "tightened the mode of the API server's data directory");
            }
        }
        let storage: Arc<dyn Storage> = match (self.storage, &self.data_dir) {
            (Some(s), _) => s,
            (None, Some(dir)) => Arc::new(RedbStorage::open(dir)?),
            (None, None) => {
                return Err(Error::Config(
                    "a data directory or a storage backend is required".into(),
                ))
            }
        };
        let audit = match (&self.audit_policy, &self.audit_log) {
            (Some(policy), Some(log)) => Some(Arc::new(crate::audit::Auditor::open(
                policy,
                log,
                self.audit_rotation,
            )?)),
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "the audit log needs both a policy file and a log path".into(),
                ))
            }
        };
        let storage: Arc<dyn Storage> = match self.encryption {
            Some(cfg) => Arc::new(crate::storage::EncryptedStorage::new(storage, cfg)),
            None => storage,
        };
        let admin_tokens = self.tokens.clone();
        let mut tokens = self.tokens;
        let mut token_file = self.token_file.clone();
        let mut tls = None;
        if !self.insecure_http {
            let dir = self.data_dir.clone().ok_or_else(|| {
                Error::Config("HTTPS needs a data directory for its certificates".into())
            })?;
            let mut hosts = self.hosts.clone();
            if !listen.ip().is_unspecified() {
                hosts.push(listen.ip().to_string());
            }
            if let Some(ip) = self.advertise {
                hosts.push(ip.to_string());
            }
            // in-cluster clients reach the server at the kubernetes Service's address
            let (base, bits) = self.config.service_cidr;
            hosts.push(crate::kubernetes_service::first_service_ip(base, bits).to_string());
            let pki = crate::tls::ensure_pki(&dir.join("pki"), &hosts)?;
            if token_file.is_none() {
                token_file = Some(crate::tls::ensure_token_file(&dir.join("tokens.csv"))?);
            }
            tls = Some(pki);
        }
        let mut token_lines = Vec::new();
        if let Some(path) = &token_file {
            token_lines = crate::auth::read_token_file(path)?;
            tokens.extend(read_tokens(path)?);
        }
        let issuer = match &self.data_dir {
            Some(dir) => crate::auth::Issuer::load_or_create(&dir.join("sa.key"))?,
            None => crate::auth::Issuer::ephemeral()?,
        };
        let client_ca = tls
            .as_ref()
            .map(|pki| kcore_tls::ClientVerifier::new(&pki.ca_pem))
            .transpose()?;
        let auth = crate::auth::Auth::new(&token_lines, &admin_tokens, client_ca, issuer);
        let (base, bits) = self.config.service_cidr;
        let api = Api::with_config(storage, self.config);
        api.bootstrap().await?;
        crate::auth::reconcile_bootstrap_policy(&api).await?;
        if let Some(pki) = &tls {
            // API aggregation: the front proxy's identity and whom extension servers trust
            api.webhooks()
                .set_front_proxy(pki.front_proxy_client.clone());
            crate::aggregator::publish_authentication(&api, &pki.ca_pem, &pki.front_proxy_ca_pem)
                .await?;
        }
        // Serve the custom resources of stored CRDs from the first request on.
        if let Err(e) = crate::crd::reconcile(&api).await {
            tracing::warn!(error = %e.message, "loading CustomResourceDefinitions");
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
        tracing::info!(%addr, "apiserver listening");
        let master_service = crate::kubernetes_service::MasterService {
            cluster_ip: crate::kubernetes_service::first_service_ip(base, bits),
            endpoint_ip: self.advertise.unwrap_or(if addr.ip().is_unspecified() {
                IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            } else {
                addr.ip()
            }),
            port: addr.port(),
            interval: self.endpoint_reconcile_interval,
        };
        master_service.reconcile(&api).await?;
        let state = Arc::new(AppState {
            api: api.clone(),
            tokens: (!tokens.is_empty()).then_some(tokens),
            auth,
            metrics: Metrics::default(),
            node_tls: tls
                .as_ref()
                .map(crate::tls::node_client_config)
                .transpose()?,
            local_nodes: self.local_nodes,
            node_identity: match &tls {
                Some(pki) => kcore_tls::PeerCertificates(
                    kcore_tls::pem_certificates(&pki.kubelet_client.cert_pem)?,
                    None,
                ),
                None => kcore_tls::PeerCertificates::default(),
            },
            pki: tls.clone(),
            audit,
        });
        let (listener, ca_pem) = match tls {
            Some(pki) => {
                let l = TlsListener::new(listener, crate::tls::server_config(&pki)?).map_err(
                    |source| Error::Bind {
                        addr: listen,
                        source,
                    },
                )?;
                (Listener::Tls(l), Some(pki.ca_pem))
            }
            None => (Listener::Plain(listener), None),
        };
        let server = ApiServer {
            api,
            listener,
            addr,
            state,
            ca_pem,
            compaction: self.compaction,
            master_service,
        };
        if let (Some(dir), true) = (&self.data_dir, server.ca_pem.is_some()) {
            server.write_kubeconfig(dir.join("admin.kubeconfig"))?;
        }
        Ok(server)
    }
}

fn read_tokens(path: &Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(',').next().unwrap_or(l).trim().to_owned())
        .collect())
}

enum Listener {
    Plain(TcpListener),
    Tls(TlsListener),
}

/// Compacts the history up to the revision seen one interval ago, forever.
async fn compact_periodically(storage: Arc<dyn Storage>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.tick().await;
    let mut previous: Option<u64> = None;
    loop {
        tick.tick().await;
        let Ok(rev) = storage.revision().await else {
            continue;
        };
        if let Some(p) = previous.filter(|p| *p > rev.compacted) {
            match storage.compact(p).await {
                Ok(()) => tracing::debug!(revision = p, "compacted history"),
                Err(e) => tracing::warn!(error = %e, "compaction failed"),
            }
        }
        previous = Some(rev.current);
    }
}

/// A bound, ready-to-serve API server.
pub struct ApiServer {
    api: Api,
    listener: Listener,
    addr: SocketAddr,
    state: Arc<AppState>,
    ca_pem: Option<String>,
    compaction: Duration,
    master_service: crate::kubernetes_service::MasterService,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Starts configuring a server.
    pub fn builder() -> ApiServerBuilder {
        ApiServerBuilder::default()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The in-process API over the same storage.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// The base URL clients use (a wildcard listen address is reached via loopback).
    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("{scheme}://{addr}")
    }

    /// The cluster CA certificate (PEM), when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The registry of node agents running in this process (see
    /// [`ApiServerBuilder::local_nodes`]): register an agent there and its pods' streams
    /// skip the network.
    pub fn local_nodes(&self) -> crate::node_client::LocalNodes {
        self.state.local_nodes.clone()
    }

    /// The first accepted bearer token, if authentication is on.
    pub fn admin_token(&self) -> Option<&str> {
        self.state
            .tokens
            .as_ref()
            .and_then(|t| t.first())
            .map(String::as_str)
    }

    /// Writes a kubeconfig for this server to `path`, mode 0600 (it holds the admin
    /// token); an existing file keeps its owner.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let token = self.state.tokens.as_ref().and_then(|t| t.first().cloned());
        let user = match token {
            Some(t) => format!("  user:\n    token: {t}\n"),
            None => "  user: {}\n".to_owned(),
        };
        self.write_kubeconfig_for(path.as_ref(), "admin", &user)
    }

    /// Writes a kubeconfig for `user` in `groups` to `path` (mode 0600), holding a new
    /// client certificate the cluster CA signs for them: how the scheduler
    /// (`system:kube-scheduler`) and the controller manager
    /// (`system:kube-controller-manager`) run as their own identities, with the roles
    /// upstream binds to those users. A server without a cluster CA (plain HTTP) has
    /// no certificates to give.
    ///
    /// ```no_run
    /// # async fn f(server: kcore_apiserver::ApiServer) -> Result<(), kcore_apiserver::Error> {
    /// server.write_client_kubeconfig("/tmp/scheduler.kubeconfig", "system:kube-scheduler", &[])?;
    /// # Ok(()) }
    /// ```
    pub fn write_client_kubeconfig(
        &self,
        path: impl AsRef<Path>,
        user: &str,
        groups: &[String],
    ) -> Result<(), Error> {
        use base64::Engine as _;
        let path = path.as_ref();
        let pki = self.state.pki.as_ref().ok_or_else(|| {
            Error::Config("this API server has no cluster CA to sign a client certificate".into())
        })?;
        let cert = pki.ca.issue_client(user, groups)?;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let entry = format!(
            "  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&cert.cert_pem),
            b64(&cert.key_pem)
        );
        self.write_kubeconfig_for(path, user, &entry)
    }

    fn write_kubeconfig_for(&self, path: &Path, user_name: &str, user: &str) -> Result<(), Error> {
        let ca = match &self.ca_pem {
            Some(pem) => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
                format!("    certificate-authority-data: {b64}\n")
            }
            None => String::new(),
        };
        let cfg = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kcore\n  cluster:\n{ca}    server: {}\ncontexts:\n- name: kcore\n  context:\n    cluster: kcore\n    user: {user_name:?}\n    namespace: default\ncurrent-context: kcore\nusers:\n- name: {user_name:?}\n{user}",
            self.url()
        );
        let io = |source| Error::Io {
            path: path.into(),
            source,
        };
        use std::io::Write;
        let mut f = kcore_statedir::open(
            path,
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
            kcore_statedir::PRIVATE_FILE,
        )
        .map_err(io)?;
        f.write_all(cfg.as_bytes()).map_err(io)
    }

    /// Serves until the process ends.
    pub async fn serve(self) -> Result<(), Error> {
        self.serve_with_shutdown(std::future::pending()).await
    }

    /// Serves until `signal` completes, then stops accepting and closes open streams.
    pub async fn serve_with_shutdown(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let compactor = tokio::spawn(compact_periodically(
            self.api.storage().clone(),
            self.compaction,
        ));
        let crds = tokio::spawn(crate::crd::run(self.api.clone()));
        let auth = tokio::spawn(futures::future::join(
            crate::auth::run(self.api.clone(), self.ca_pem.clone()),
            self.state.auth.run_node_graph(self.api.clone()),
        ));
        let quota = tokio::spawn(crate::admission::quota::run(self.api.clone()));
        let apiservices = tokio::spawn(crate::aggregator::run_availability(
            self.api.clone(),
            crate::aggregator::AVAILABILITY_PERIOD,
        ));
        let master_service = tokio::spawn(self.master_service.run(self.api.clone()));
        let csr_signer = self.state.pki.as_ref().map(|pki| {
            tokio::spawn(crate::auth::run_csr_signer(
                self.api.clone(),
                pki.ca.clone(),
            ))
        });
        let app = axum::Router::new().fallback(handle).with_state(self.state);
        let addr = self.addr;
        let served = match self.listener {
            Listener::Plain(l) => axum::serve(l, app).with_graceful_shutdown(signal).await,
            Listener::Tls(l) => {
                // the client certificate's subject is the user (`crate::auth`)
                let app = app.into_make_service_with_connect_info::<kcore_tls::PeerCertificates>();
                axum::serve(l, app).with_graceful_shutdown(signal).await
            }
        };
        compactor.abort();
        crds.abort();
        auth.abort();
        quota.abort();
        apiservices.abort();
        master_service.abort();
        let _ = master_service.await;
        // the other servers of the control plane take this one out of the endpoints
        if let Err(e) = self.master_service.remove(&self.api).await {
            tracing::warn!(error = %e.message, "removing this server from the kubernetes endpoints");
        }
        if let Some(s) = csr_signer {
            s.abort();
            let _ = s.await;
        }
        let _ = auth.await;
        let _ = quota.await;
        // Wait for both to let go of the storage (a restart on the same data opens it).
        let _ = compactor.await;
        let _ = crds.await;
        served.map_err(|source| Error::Bind { addr, source })
    }

    /// Serves on a background task; the handle stops it.
    pub fn spawn(self) -> RunningServer {
        let (tx, rx) = oneshot::channel::<()>();
        let addr = self.addr;
        let url = self.url();
        let api = self.api.clone();
        let task = tokio::spawn(self.serve_with_shutdown(async move {
            let _ = rx.await;
        }));
        RunningServer {
            addr,
            url,
            api,
            stop: Some(tx),
            task,
        }
    }
}

/// A server running on a background task.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    url: String,
    api: Api,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), Error>>,
}

impl RunningServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The in-process API.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(Error::Config(format!("server task failed: {e}"))),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
