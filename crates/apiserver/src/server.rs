//! The server: builder, listener and lifecycle.

use std::future::Future;
use std::net::SocketAddr;
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

/// Configures an [`ApiServer`].
#[derive(Default)]
#[must_use]
pub struct ApiServerBuilder {
    data_dir: Option<PathBuf>,
    storage: Option<Arc<dyn Storage>>,
    listen: Option<SocketAddr>,
    insecure_http: bool,
    token_file: Option<PathBuf>,
    tokens: Vec<String>,
    config: ApiConfig,
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

impl ApiServerBuilder {
    /// Directory for the embedded store (and, with TLS, the generated certificates).
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

    /// Serves plain HTTP without authentication. Only loopback addresses are accepted:
    /// this mode is for tests and local tools.
    pub fn insecure_http(mut self, yes: bool) -> Self {
        self.insecure_http = yes;
        self
    }

    /// A file of bearer tokens, one per line (`token` or `token,user,uid` as upstream's
    /// token auth file); requests without one of them get 401.
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_file = Some(path.into());
        self
    }

    /// Adds an accepted bearer token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.tokens.push(token.into());
        self
    }

    /// The Service cluster-IP range (default `10.96.0.0/12`).
    pub fn service_cidr(mut self, base: std::net::Ipv4Addr, prefix: u8) -> Self {
        self.config.service_cidr = (base, prefix.clamp(8, 30));
        self
    }

    /// How often idle watches with `allowWatchBookmarks` get a BOOKMARK (default 30 s).
    pub fn bookmark_interval(mut self, every: Duration) -> Self {
        self.config.bookmark_interval = every;
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
        if !self.insecure_http {
            return Err(Error::Config(
                "HTTPS is not available in this build; call insecure_http(true) for a loopback plain-HTTP server".into(),
            ));
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
        let mut tokens = self.tokens;
        if let Some(path) = &self.token_file {
            tokens.extend(read_tokens(path)?);
        }
        let api = Api::with_config(storage, self.config);
        api.bootstrap().await?;
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
        let state = Arc::new(AppState {
            api: api.clone(),
            tokens: (!tokens.is_empty()).then_some(tokens),
            metrics: Metrics::default(),
        });
        Ok(ApiServer {
            api,
            listener,
            addr,
            state,
        })
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

/// A bound, ready-to-serve API server.
pub struct ApiServer {
    api: Api,
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
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

    /// The base URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this server to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let token = self.state.tokens.as_ref().and_then(|t| t.first().cloned());
        let user = match token {
            Some(t) => format!("    token: {t}\n"),
            None => "    {}\n".to_owned(),
        };
        let user = if user.trim() == "{}" {
            "  user: {}\n".to_owned()
        } else {
            format!("  user:\n{user}")
        };
        let cfg = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kcore\n  cluster:\n    server: {}\ncontexts:\n- name: kcore\n  context:\n    cluster: kcore\n    user: admin\n    namespace: default\ncurrent-context: kcore\nusers:\n- name: admin\n{user}",
            self.url()
        );
        let path = path.as_ref();
        std::fs::write(path, cfg).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
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
        let app = axum::Router::new().fallback(handle).with_state(self.state);
        let addr = self.addr;
        axum::serve(self.listener, app)
            .with_graceful_shutdown(signal)
            .await
            .map_err(|source| Error::Bind { addr, source })
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
