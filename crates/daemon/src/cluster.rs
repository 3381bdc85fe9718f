//! `kcored up` and `kcored server`: the control plane in one process.
//!
//! The API server (embedded store by default) is started first; the scheduler and
//! the controller manager then talk to it over its own HTTPS endpoint with the admin
//! credentials, exactly as they would talk to any Kubernetes API server. The admin
//! kubeconfig is written to `<data-dir>/admin.kubeconfig` (and copied to a path the
//! user chooses), so `kubectl` works against the cluster at once.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use kcore_apiserver::ApiServer;
use kcore_reconcile::ControllerManager;
use kcore_scheduler::{Framework, SchedulerLoop};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Where `kcored` keeps its state unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/kcore";

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// State directory; the API server's store lives in `<data_dir>/apiserver`.
    pub data_dir: PathBuf,
    /// Address the API server listens on.
    pub listen: SocketAddr,
    /// Also write the admin kubeconfig here (e.g. `~/.kube/config`).
    pub kubeconfig_out: Option<PathBuf>,
    /// Run the scheduler.
    pub scheduler: bool,
    /// Run the built-in controllers.
    pub controllers: bool,
}

impl ControlPlaneConfig {
    /// Defaults: data under [`DEFAULT_DATA_DIR`], API on 127.0.0.1:6443, scheduler and
    /// controllers on.
    pub fn new() -> ControlPlaneConfig {
        ControlPlaneConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: SocketAddr::from(([127, 0, 0, 1], 6443)),
            kubeconfig_out: None,
            scheduler: true,
            controllers: true,
        }
    }

    /// Path of the admin kubeconfig the server writes.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.data_dir.join("apiserver").join("admin.kubeconfig")
    }
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        ControlPlaneConfig::new()
    }
}

/// A kube-rs client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", path.display()))?;
    kube::Client::try_from(config).context("building the API client")
}

/// A started control plane: its URL and kubeconfig, and the tasks running it.
#[derive(Debug)]
pub struct ControlPlane {
    url: String,
    kubeconfig: PathBuf,
    stop: watch::Sender<bool>,
    tasks: JoinSet<(&'static str, Result<()>)>,
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

impl ControlPlane {
    /// Starts the API server, then the scheduler and the controllers against it.
    #[tracing::instrument(skip_all, fields(listen = %cfg.listen, data_dir = %cfg.data_dir.display()))]
    pub async fn start(cfg: &ControlPlaneConfig) -> Result<ControlPlane> {
        let api_dir = cfg.data_dir.join("apiserver");
        std::fs::create_dir_all(&api_dir)
            .with_context(|| format!("creating {}", api_dir.display()))?;
        let server = ApiServer::builder()
            .data_dir(&api_dir)
            .listen(cfg.listen)
            .build()
            .await
            .context("starting the API server")?;
        let url = server.url();
        let kubeconfig = cfg.kubeconfig_path();
        server
            .write_kubeconfig(&kubeconfig)
            .context("writing the admin kubeconfig")?;
        if let Some(out) = &cfg.kubeconfig_out {
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            server
                .write_kubeconfig(out)
                .with_context(|| format!("writing {}", out.display()))?;
        }

        let (stop, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let shutdown = stopped(rx.clone());
        tasks.spawn(async move {
            let r = server
                .serve_with_shutdown(shutdown)
                .await
                .context("API server");
            ("apiserver", r)
        });

        let client = client_from_kubeconfig(&kubeconfig).await?;
        wait_ready(&client).await?;
        if cfg.scheduler {
            let client = client.clone();
            let shutdown = stopped(rx.clone());
            tasks.spawn(async move {
                let r = SchedulerLoop::new(client, Framework::with_defaults())
                    .run(shutdown)
                    .await
                    .context("scheduler");
                ("scheduler", r)
            });
        }
        if cfg.controllers {
            let shutdown = stopped(rx.clone());
            tasks.spawn(async move {
                let r = ControllerManager::new(client)
                    .run(shutdown)
                    .await
                    .context("controller manager");
                ("controllers", r)
            });
        }
        tracing::info!(%url, kubeconfig = %kubeconfig.display(), "control plane up");
        Ok(ControlPlane {
            url,
            kubeconfig,
            stop,
            tasks,
        })
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs until `shutdown` resolves or a component fails; then stops them all.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let result = tokio::select! {
            () = &mut shutdown => Ok(()),
            Some(done) = self.tasks.join_next() => match done {
                Ok((name, Ok(()))) => Err(anyhow::anyhow!("{name} stopped unexpectedly")),
                Ok((_, Err(e))) => Err(e),
                Err(e) => Err(anyhow::anyhow!("a control-plane task panicked: {e}")),
            },
        };
        self.stop().await;
        result
    }

    /// Asks every component to stop and waits (bounded) for them.
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        let drain = async {
            while let Some(done) = self.tasks.join_next().await {
                if let Ok((name, Err(e))) = done {
                    tracing::warn!(component = name, error = %format!("{e:#}"), "stopped with an error");
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            tracing::warn!("components did not stop within 10 s; aborting them");
            self.tasks.abort_all();
        }
    }
}

/// Waits until the API server answers `/version` (it serves as soon as it binds, so
/// this is quick; it guards against a slow first TLS handshake).
async fn wait_ready(client: &kube::Client) -> Result<()> {
    let mut last = None;
    for _ in 0..50 {
        match client.apiserver_version().await {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(anyhow::anyhow!("the API server did not answer: {last:?}"))
}
