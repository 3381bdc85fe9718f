//! `kcored up` and `kcored server`: the control plane in one process.
//!
//! The API server (embedded store by default) is started first; the scheduler and
//! the controller manager then talk to it over its own HTTPS endpoint as their own
//! users (`system:kube-scheduler`, `system:kube-controller-manager`, with client
//! certificates the cluster CA signs, kubeconfigs under `<data-dir>/apiserver`), and the
//! in-process node agent as its node (`system:node:<name>`), exactly as they would talk
//! to any Kubernetes API server. The admin
//! kubeconfig is written to `<data-dir>/admin.kubeconfig` (and copied to a path the
//! user chooses), so `kubectl` works against the cluster at once.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use kcore_apiserver::ApiServer;
use kcore_node::{NodeAgent, NodeConfig, NodeTemplate, SimulatedNodes, Simulation};
use kcore_reconcile::{ControllerManager, ControllerManagerConfig, LeaseFence};
use kcore_scheduler::{Framework, SchedulerLoop};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::agent::{AgentOptions, DEFAULT_CLUSTER_CIDR};
use crate::join::JoinToken;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Where `kcored` keeps its state unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/kcore";

/// Where the API server keeps objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datastore {
    /// The embedded store (redb) under `<data_dir>/apiserver`.
    Embedded,
    /// An etcd cluster at these endpoints (`http://host:port`).
    Etcd(Vec<String>),
}

impl std::str::FromStr for Datastore {
    type Err = anyhow::Error;

    /// `embedded`, or `etcd://host:port[,host:port...]`.
    fn from_str(s: &str) -> Result<Self> {
        if s == "embedded" {
            return Ok(Datastore::Embedded);
        }
        let Some(rest) = s.strip_prefix("etcd://") else {
            anyhow::bail!("a datastore is `embedded` or `etcd://host:port[,host:port...]`");
        };
        let endpoints: Vec<String> = rest
            .split(',')
            .filter(|e| !e.is_empty())
            .map(|e| format!("http://{e}"))
            .collect();
        anyhow::ensure!(!endpoints.is_empty(), "no etcd endpoint in {s}");
        Ok(Datastore::Etcd(endpoints))
    }
}

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// State directory; the API server's store lives in `<data_dir>/apiserver`.
    pub data_dir: PathBuf,
    /// Address the API server listens on.
    pub listen: SocketAddr,
    /// Where objects are stored.
    pub datastore: Datastore,
    /// Extra names and addresses for the API server's certificate (the listen address,
    /// loopback and `kubernetes.default.svc` are always in it).
    pub tls_sans: Vec<String>,
    /// Also write the admin kubeconfig here (e.g. `~/.kube/config`).
    pub kubeconfig_out: Option<PathBuf>,
    /// Run the scheduler.
    pub scheduler: bool,
    /// Run the built-in controllers.
    pub controllers: bool,
    /// Which controllers run and their settings (all, upstream's defaults unless
    /// changed); the node grace period and the LoadBalancer pool below override the
    /// fields of the same name.
    pub controller_manager: ControllerManagerConfig,
    /// How long a node may miss heartbeats before it is NotReady and its pods are
    /// evicted (per their tolerations).
    pub node_monitor_grace_period: Duration,
    /// Hand each Node a pod subnet out of this range (node IPAM); `None` turns it off.
    pub cluster_cidr: Option<Ipv4Net>,
    /// Also run a node agent in this process (`kcored up`, `kcored server --agent`).
    pub agent: Option<AgentOptions>,
    /// On shutdown, also remove the in-process agent's pods, bridge and rules (`kcored
    /// up`); otherwise containers keep running and the next start adopts them.
    pub reset_node_on_exit: bool,
    /// Admission, encryption and audit configuration files of the API server.
    pub security: SecurityFiles,
    /// LoadBalancer pool mode: the addresses Services get (inclusive ranges), each
    /// announced by one node over ARP; empty is node mode (the nodes' own addresses).
    pub service_lb_pool: Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    /// Also run this many simulated nodes in this process (`--simulated-nodes`).
    pub simulation: Option<SimulationOptions>,
    /// Join the control plane already on this etcd with its join token (`--token`): the
    /// CA, keys and token file come from the cluster's bootstrap data
    /// ([`crate::bootstrap`]).
    pub join_token: Option<JoinToken>,
    /// Mutual TLS towards etcd (`--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`).
    pub etcd_tls: EtcdTlsFiles,
    /// Timings of the scheduler's and the controllers' leader elections (on etcd, where
    /// several servers share the store).
    pub leader_election: crate::leadership::LeaderTimings,
    /// How often this server renews its identity Lease and the `kubernetes` endpoints.
    pub endpoint_reconcile_interval: Duration,
}

/// kube-apiserver's `--etcd-cafile`, `--etcd-certfile` and `--etcd-keyfile`.
#[derive(Debug, Clone, Default)]
pub struct EtcdTlsFiles {
    /// The CA that signed the etcd members' serving certificates.
    pub ca_file: Option<PathBuf>,
    /// This server's client certificate.
    pub cert_file: Option<PathBuf>,
    /// Its key.
    pub key_file: Option<PathBuf>,
}

/// Simulated nodes the control plane runs in its own process ([`SimulatedNodes`]).
#[derive(Debug, Clone, Default)]
pub struct SimulationOptions {
    /// How many nodes.
    pub nodes: usize,
    /// What each node looks like.
    pub template: NodeTemplate,
    /// How long a bound pod stays Pending before it runs.
    pub start_delay: Duration,
    /// How often each node renews its Lease (the kubelet's 10 s when zero).
    pub heartbeat: Duration,
}

/// One `--service-lb-pool` entry, as MetalLB's address pools write them: a CIDR
/// (`192.0.2.64/27`, every address of it) or an inclusive range
/// (`192.0.2.100-192.0.2.120`).
///
/// ```
/// let (a, b) = kcored::cluster::parse_lb_pool("192.0.2.64/30").unwrap();
/// assert_eq!((a.to_string(), b.to_string()), ("192.0.2.64".into(), "192.0.2.67".into()));
/// assert!(kcored::cluster::parse_lb_pool("192.0.2.9-192.0.2.1").is_err());
/// ```
pub fn parse_lb_pool(s: &str) -> Result<(std::net::Ipv4Addr, std::net::Ipv4Addr)> {
    let s = s.trim();
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (
            a.trim()
                .parse()
                .with_context(|| format!("{a:?} is not an IPv4 address"))?,
            b.trim()
                .parse()
                .with_context(|| format!("{b:?} is not an IPv4 address"))?,
        ),
        None => {
            let net: Ipv4Net = s
                .parse()
                .with_context(|| format!("{s:?} is neither an IPv4 CIDR nor a range"))?;
            (net.network(), net.broadcast())
        }
    };
    anyhow::ensure!(a <= b, "the range {s} ends before it starts");
    Ok((a, b))
}

/// The API server's security configuration files, upstream's flags of the same names.
#[derive(Debug, Clone, Default)]
pub struct SecurityFiles {
    /// `--admission-control-config-file`: an `AdmissionConfiguration` (Pod Security's
    /// defaults and exemptions).
    pub admission_config: Option<PathBuf>,
    /// `--encryption-provider-config`: an `EncryptionConfiguration` (encryption at rest).
    pub encryption_provider_config: Option<PathBuf>,
    /// `--audit-policy-file`: an `audit.k8s.io/v1` Policy.
    pub audit_policy: Option<PathBuf>,
    /// `--audit-log-path`: where audit events are appended.
    pub audit_log: Option<PathBuf>,
    /// `--audit-log-maxsize`, `--audit-log-maxbackup`, `--audit-log-maxage`: how the
    /// audit log is rotated.
    pub audit_log_rotation: kcore_apiserver::AuditLogRotation,
}

impl SecurityFiles {
    /// Applies the files to an API server builder.
    fn apply(
        &self,
        mut b: kcore_apiserver::ApiServerBuilder,
    ) -> Result<kcore_apiserver::ApiServerBuilder> {
        if let Some(p) = &self.admission_config {
            b = b
                .admission_config_file(p)
                .with_context(|| format!("--admission-control-config-file {}", p.display()))?;
        }
        if let Some(p) = &self.encryption_provider_config {
            b = b
                .encryption_provider_config(p)
                .with_context(|| format!("--encryption-provider-config {}", p.display()))?;
        }
        if let Some(p) = &self.audit_policy {
            b = b.audit_policy_file(p);
        }
        if let Some(p) = &self.audit_log {
            b = b
                .audit_log_path(p)
                .audit_log_rotation(self.audit_log_rotation);
        }
        Ok(b)
    }
}

impl ControlPlaneConfig {
    /// Defaults: data under [`DEFAULT_DATA_DIR`], API on 127.0.0.1:6443, scheduler and
    /// controllers on.
    pub fn new() -> ControlPlaneConfig {
        ControlPlaneConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: SocketAddr::from(([127, 0, 0, 1], 6443)),
            datastore: Datastore::Embedded,
            tls_sans: Vec::new(),
            kubeconfig_out: None,
            scheduler: true,
            controllers: true,
            controller_manager: ControllerManagerConfig::default(),
            node_monitor_grace_period: Duration::from_secs(40),
            cluster_cidr: Some(DEFAULT_CLUSTER_CIDR.parse().expect("valid default CIDR")),
            agent: None,
            reset_node_on_exit: false,
            security: SecurityFiles::default(),
            simulation: None,
            service_lb_pool: Vec::new(),
            join_token: None,
            etcd_tls: EtcdTlsFiles::default(),
            leader_election: crate::leadership::LeaderTimings::default(),
            endpoint_reconcile_interval: Duration::from_secs(10),
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

/// The file, under the API server's state directory, of the default join token's
/// bootstrap token (`<id>.<secret>`, mode 0600).
pub const JOIN_TOKEN: &str = "join-token";
const DEFAULT_TOKEN_DESCRIPTION: &str = "The default bootstrap token of kcored (kcored token).";

/// A started control plane: its URL and kubeconfig, and the tasks running it.
pub struct ControlPlane {
    url: String,
    kubeconfig: PathBuf,
    join_token: Option<JoinToken>,
    client: kube::Client,
    node: Option<NodeConfig>,
    reset_node_on_exit: bool,
    simulation: Option<Simulation>,
    stop: watch::Sender<bool>,
    /// Stops the API server, after the other components (so they can release their
    /// Leases through it).
    stop_api: watch::Sender<bool>,
    tasks: JoinSet<(&'static str, Result<()>)>,
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("url", &self.url)
            .field("kubeconfig", &self.kubeconfig)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts the API server, then the scheduler and the controllers against it.
    #[tracing::instrument(skip_all, fields(listen = %cfg.listen, data_dir = %cfg.data_dir.display()))]
    pub async fn start(cfg: &ControlPlaneConfig) -> Result<ControlPlane> {
        crate::datadir::secure(&cfg.data_dir)?;
        let api_dir = cfg.data_dir.join("apiserver");
        kcore_statedir::ensure_dir(&api_dir, kcore_statedir::PRIVATE_DIR)
            .with_context(|| format!("creating {}", api_dir.display()))?;
        // pods reach the server through the `kubernetes` Service at this address: the
        // listen address, or this machine's node address when listening on all
        let advertise = match cfg.listen.ip() {
            ip if ip.is_unspecified() => std::net::IpAddr::V4(
                cfg.agent
                    .as_ref()
                    .and_then(|a| a.node_ip)
                    .unwrap_or_else(crate::agent::default_node_ip),
            ),
            ip => ip,
        };
        let mut builder = ApiServer::builder()
            .data_dir(&api_dir)
            .listen(cfg.listen)
            .advertise_address(advertise)
            .endpoint_reconcile_interval(cfg.endpoint_reconcile_interval);
        for san in &cfg.tls_sans {
            builder = builder.tls_host(san);
        }
        let mut security = cfg.security.clone();
        let mut etcd = None;
        if let Datastore::Etcd(endpoints) = &cfg.datastore {
            let joined = etcd::join(cfg, &api_dir, endpoints).await?;
            if security.encryption_provider_config.is_none() {
                security.encryption_provider_config = joined.encryption_config.clone();
            }
            builder = builder.storage(joined.storage.clone());
            etcd = Some(joined);
        }
        builder = security.apply(builder)?;
        let server = builder.build().await.context("starting the API server")?;
        let url = server.url();
        // the bootstrap token nodes and servers join with (kept without expiry, as k3s's
        // join token); a joining server got this cluster's from the bootstrap data
        let join_token = match server.ca_pem() {
            Some(ca) => {
                let t = crate::join::BootstrapToken::load_or_create(&api_dir.join(JOIN_TOKEN))?;
                Some((JoinToken::for_ca(ca, &t.to_string())?, t))
            }
            None => None,
        };
        if let Some(joined) = &mut etcd {
            let (token, _) = join_token
                .as_ref()
                .context("the API server on etcd serves HTTPS and has a CA")?;
            joined
                .publish(
                    &api_dir,
                    &token.secret,
                    security.encryption_provider_config.as_deref(),
                )
                .await?;
        }
        let ca_pem = server.ca_pem().map(str::to_owned);
        // the node agent of this process registers here: its pods' exec, attach and
        // port-forward streams go to it without a second connection
        let local_nodes = server.local_nodes();
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

        // the scheduler and the controllers run as their own users, with the roles
        // upstream binds to them, not as the administrator
        let component_kubeconfig = |user: &str| -> Result<PathBuf> {
            let path = api_dir.join(format!("{}.kubeconfig", user.trim_start_matches("system:")));
            if server.ca_pem().is_some() {
                server
                    .write_client_kubeconfig(&path, user, &[])
                    .with_context(|| format!("writing the kubeconfig of {user}"))?;
                Ok(path)
            } else {
                // plain HTTP (tests): no certificates to give
                Ok(kubeconfig.clone())
            }
        };
        let scheduler_kubeconfig = component_kubeconfig("system:kube-scheduler")?;
        let controllers_kubeconfig = component_kubeconfig("system:kube-controller-manager")?;
        let (stop, rx) = watch::channel(false);
        let (stop_api, api_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let shutdown = stopped(api_rx);
        tasks.spawn(async move {
            let r = server
                .serve_with_shutdown(shutdown)
                .await
                .context("API server");
            ("apiserver", r)
        });

        let client = client_from_kubeconfig(&kubeconfig).await?;
        wait_ready(&client).await?;
        if let Some((_, t)) = &join_token {
            t.store(&client, None, DEFAULT_TOKEN_DESCRIPTION).await?;
        }
        let join_token = join_token.map(|(j, _)| j);
        crate::storage::ensure_default_class(&client).await?;
        // on etcd several servers share the store: the scheduler and the controllers
        // run on the holder of their Lease only
        let elect = matches!(cfg.datastore, Datastore::Etcd(_));
        let identity = if elect {
            Some(crate::leadership::stable_identity(&api_dir)?)
        } else {
            None
        };
        if cfg.scheduler {
            let kubeconfig = scheduler_kubeconfig.clone();
            let start = move |fence: Option<LeaseFence>,
                              stop: watch::Receiver<bool>,
                              leading: watch::Receiver<bool>| {
                let kubeconfig = kubeconfig.clone();
                async move {
                    tokio::select! {
                        () = crate::leadership::leads(leading) => {}
                        () = stopped(stop.clone()) => return Ok(()),
                    }
                    let client = component_client(&kubeconfig, fence).await?;
                    SchedulerLoop::new(client, Framework::with_defaults())
                        .run(stopped(stop))
                        .await
                        .context("scheduler")
                }
            };
            let election = client_from_kubeconfig(&scheduler_kubeconfig).await?;
            let run = supervise(
                election,
                "kube-scheduler",
                identity.clone(),
                cfg.leader_election,
                rx.clone(),
                start,
            );
            tasks.spawn(async move { ("scheduler", run.await) });
        }
        let controllers_client = client_from_kubeconfig(&controllers_kubeconfig).await?;
        if cfg.controllers || cfg.cluster_cidr.is_some() {
            let allocator = cfg
                .cluster_cidr
                .map(|cidr| crate::ipam::SubnetAllocator::new(cidr, 24))
                .transpose()?;
            let run_controllers = cfg.controllers;
            let config = ControllerManagerConfig {
                node_monitor_grace_period: cfg.node_monitor_grace_period,
                service_lb_pool: cfg.service_lb_pool.clone(),
                ..cfg.controller_manager.clone()
            };
            let kubeconfig = controllers_kubeconfig.clone();
            let start = move |fence: Option<LeaseFence>,
                              stop: watch::Receiver<bool>,
                              leading: watch::Receiver<bool>| {
                let (kubeconfig, allocator, config) =
                    (kubeconfig.clone(), allocator.clone(), config.clone());
                async move {
                    let client = component_client(&kubeconfig, fence).await?;
                    let ipam = async {
                        match allocator {
                            Some(a) => {
                                tokio::select! {
                                    () = crate::leadership::leads(leading.clone()) => {}
                                    () = stopped(stop.clone()) => return Ok(()),
                                }
                                crate::ipam::run(client.clone(), a, stopped(stop.clone()))
                                    .await
                                    .context("node ipam")
                            }
                            None => Ok(()),
                        }
                    };
                    let controllers = async {
                        if run_controllers {
                            // the caches fill on standby; the controllers act once leading
                            ControllerManager::new(client.clone())
                                .with_config(config)
                                .run_when(
                                    crate::leadership::leads(leading.clone()),
                                    stopped(stop.clone()),
                                )
                                .await
                                .context("controller manager")
                        } else {
                            Ok(())
                        }
                    };
                    let (a, b) = tokio::join!(ipam, controllers);
                    a.and(b)
                }
            };
            let run = supervise(
                controllers_client.clone(),
                "kube-controller-manager",
                identity.clone(),
                cfg.leader_election,
                rx.clone(),
                start,
            );
            tasks.spawn(async move { ("controllers", run.await) });
        }
        let node = match &cfg.agent {
            Some(opts) => {
                // the in-process node joins as any other: with the bootstrap token
                let (ca, token) = match (&ca_pem, &join_token) {
                    (Some(ca), Some(t)) => (ca, t),
                    _ => anyhow::bail!("a node agent needs the API server's cluster CA (HTTPS)"),
                };
                let ca_der = kcore_tls::pem_certificates(ca)
                    .context("reading the cluster CA")?
                    .first()
                    .map(|d| d.to_vec())
                    .context("no certificate in the cluster CA")?;
                let bootstrap = crate::join::client(&url, ca_der, &token.secret)?;
                let joined = crate::agent::node_config(&bootstrap, &url, ca, opts).await?;
                let node = joined.config;
                crate::agent::save_node_record(&node)?;
                let (agent, shutdown) = (
                    NodeAgent::new(joined.client, node.clone()),
                    stopped(rx.clone()),
                );
                // registered while the agent runs
                let local = local_nodes.register(&node.node_name, agent.local_server());
                tasks.spawn(async move {
                    let r = agent.run(shutdown).await.context("node agent");
                    drop(local);
                    ("node agent", r)
                });
                let (rotation, shutdown) = (joined.rotation, stopped(rx.clone()));
                tasks.spawn(async move {
                    let r = rotation.run(shutdown).await;
                    ("node certificate rotation", r)
                });
                Some(node)
            }
            None => None,
        };
        let simulation = match &cfg.simulation {
            Some(o) if o.nodes > 0 => {
                let mut sim = SimulatedNodes::new(client.clone(), o.nodes)
                    .template(o.template.clone())
                    .start_delay(o.start_delay);
                if !o.heartbeat.is_zero() {
                    sim = sim.heartbeat(o.heartbeat);
                }
                Some(sim.start().await.context("starting the simulated nodes")?)
            }
            _ => None,
        };
        tracing::info!(%url, kubeconfig = %kubeconfig.display(), "control plane up");
        Ok(ControlPlane {
            url,
            kubeconfig,
            join_token,
            client,
            node,
            reset_node_on_exit: cfg.reset_node_on_exit,
            simulation,
            stop,
            stop_api,
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

    /// The token other nodes join with (`kcored agent --token`), when serving HTTPS.
    pub fn join_token(&self) -> Option<&JoinToken> {
        self.join_token.as_ref()
    }

    /// The in-process node's configuration, when an agent runs here.
    pub fn node(&self) -> Option<&NodeConfig> {
        self.node.as_ref()
    }

    /// The simulated nodes, when any run here (fail and recover them on demand).
    pub fn simulation(&self) -> Option<&Simulation> {
        self.simulation.as_ref()
    }

    /// An admin client of the API server.
    pub fn client(&self) -> &kube::Client {
        &self.client
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
        if let Some(sim) = self.simulation.take() {
            sim.stop().await;
        }
        let _ = self.stop.send(true);
        let stop_api = self.stop_api.clone();
        let drain = async {
            // the API server goes last: the others release their Leases through it
            if self.tasks.len() <= 1 {
                stop_api.send_replace(true);
            }
            while let Some(done) = self.tasks.join_next().await {
                if let Ok((name, Err(e))) = done {
                    tracing::warn!(component = name, error = %format!("{e:#}"), "stopped with an error");
                }
                if self.tasks.len() <= 1 {
                    stop_api.send_replace(true);
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
        if let (true, Some(node)) = (self.reset_node_on_exit, self.node.take()) {
            tracing::info!(node = %node.node_name, "removing the node's pods and networking");
            if let Err(e) = NodeAgent::new(self.client.clone(), node).reset().await {
                tracing::warn!(error = %format!("{e:#}"), "node reset");
            }
        }
    }
}

/// A client for a control-plane component: fenced by its Lease when elected.
async fn component_client(kubeconfig: &Path, fence: Option<LeaseFence>) -> Result<kube::Client> {
    match fence {
        Some(f) => crate::leadership::fenced_client(kubeconfig, f).await,
        None => client_from_kubeconfig(kubeconfig).await,
    }
}

/// Runs a component: behind the Lease `name` when `identity` is set, else at once.
async fn supervise<F, Fut>(
    election: kube::Client,
    name: &'static str,
    identity: Option<String>,
    timings: crate::leadership::LeaderTimings,
    shutdown: watch::Receiver<bool>,
    mut start: F,
) -> Result<()>
where
    F: FnMut(Option<LeaseFence>, watch::Receiver<bool>, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    match identity {
        Some(id) => {
            crate::leadership::run_while_leading(
                election,
                name,
                &id,
                timings,
                shutdown,
                move |fence, stop, leading| start(Some(fence), stop, leading),
            )
            .await
        }
        // alone: leading from the start
        None => start(None, shutdown, watch::channel(true).1).await,
    }
}

/// The control plane's etcd: storage, and the cluster's bootstrap data.
mod etcd {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    #[cfg(feature = "etcd")]
    use anyhow::Context;
    use anyhow::Result;

    use super::ControlPlaneConfig;

    /// A server on etcd: its storage and, for the first server, the bootstrap data it
    /// still has to publish.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(super) struct Joined {
        pub storage: Arc<dyn kcore_apiserver::Storage>,
        /// The cluster's encryption configuration, when it came from the bootstrap data.
        pub encryption_config: Option<PathBuf>,
        #[cfg(feature = "etcd")]
        client: etcd_client::Client,
        #[cfg(feature = "etcd")]
        first: bool,
    }

    #[cfg(feature = "etcd")]
    fn read(path: &Option<PathBuf>, flag: &str) -> Result<Option<String>> {
        path.as_ref()
            .map(|p| std::fs::read_to_string(p).with_context(|| format!("{flag} {}", p.display())))
            .transpose()
    }

    /// Connects to etcd and, when the cluster's bootstrap data is there, installs it in
    /// `api_dir` (checked against the join token) before the API server starts.
    #[cfg(feature = "etcd")]
    pub(super) async fn join(
        cfg: &ControlPlaneConfig,
        api_dir: &Path,
        endpoints: &[String],
    ) -> Result<Joined> {
        use crate::bootstrap;
        let tls = &cfg.etcd_tls;
        let opts = kcore_apiserver::EtcdOptions {
            ca_pem: read(&tls.ca_file, "--etcd-cafile")?,
            client_cert: match (
                read(&tls.cert_file, "--etcd-certfile")?,
                read(&tls.key_file, "--etcd-keyfile")?,
            ) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => anyhow::bail!("--etcd-certfile and --etcd-keyfile go together"),
            },
            ..Default::default()
        };
        let secure = opts.ca_pem.is_some() || opts.client_cert.is_some();
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| match (secure, e.strip_prefix("http://")) {
                (true, Some(rest)) => format!("https://{rest}"),
                _ => e.clone(),
            })
            .collect();
        let shown = endpoints.join(",");
        let mut client = etcd_client::Client::connect(&endpoints, Some(opts.connect_options()))
            .await
            .with_context(|| format!("connecting to etcd at {shown}"))?;
        let existing = bootstrap::fetch(&mut client)
            .await
            .with_context(|| format!("etcd at {shown}"))?;
        // a server restarting on its own data dir has the token already
        let local_secret = std::fs::read_to_string(api_dir.join(super::JOIN_TOKEN))
            .ok()
            .map(|t| t.trim().to_owned());
        let mut encryption_config = None;
        let first = match existing {
            Some(blob) => {
                let secret = cfg
                    .join_token
                    .as_ref()
                    .map(|t| t.secret.clone())
                    .or(local_secret)
                    .with_context(|| {
                        format!(
                            "etcd at {shown} already holds a kcore cluster: start this server \
                             with --token (the join token a running server prints; `kcored token`)"
                        )
                    })?;
                let files = bootstrap::open(&secret, &blob)?;
                if let Some(token) = &cfg.join_token {
                    bootstrap::check_ca(&files, &token.ca_hash)?;
                }
                bootstrap::install(api_dir, &files)?;
                if files.contains_key(bootstrap::ENCRYPTION_FILE) {
                    encryption_config = Some(api_dir.join(bootstrap::ENCRYPTION_FILE));
                }
                tracing::info!(etcd = %shown, "joined the control plane: bootstrap data installed");
                false
            }
            None => {
                anyhow::ensure!(
                    cfg.join_token.is_none(),
                    "--token was given, but etcd at {shown} holds no kcore cluster yet: \
                     start the first server without --token"
                );
                true
            }
        };
        let storage = kcore_apiserver::EtcdStorage::from_client(client.clone(), "/registry");
        Ok(Joined {
            storage: Arc::new(storage),
            encryption_config,
            client,
            first,
        })
    }

    #[cfg(not(feature = "etcd"))]
    pub(super) async fn join(
        _cfg: &ControlPlaneConfig,
        _api_dir: &Path,
        _endpoints: &[String],
    ) -> Result<Joined> {
        anyhow::bail!("this kcored was built without etcd support (cargo feature `etcd`)")
    }

    impl Joined {
        /// The first server stores the cluster's bootstrap data, sealed with its join
        /// token's secret (`secret`), once its API server has made the keys.
        #[cfg(feature = "etcd")]
        pub(super) async fn publish(
            &mut self,
            api_dir: &Path,
            secret: &str,
            encryption: Option<&Path>,
        ) -> Result<()> {
            use crate::bootstrap;
            if !self.first {
                return Ok(());
            }
            let files = bootstrap::collect(api_dir, encryption)?;
            let blob = bootstrap::seal(secret, &files)?;
            anyhow::ensure!(
                bootstrap::store_if_absent(&mut self.client, blob).await?,
                "another server initialised this etcd at the same time: \
                 restart this one with its --token"
            );
            tracing::info!(
                "stored the cluster's bootstrap data in etcd (sealed with the join token)"
            );
            Ok(())
        }

        #[cfg(not(feature = "etcd"))]
        pub(super) async fn publish(
            &mut self,
            _api_dir: &Path,
            _secret: &str,
            _encryption: Option<&Path>,
        ) -> Result<()> {
            Ok(())
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
