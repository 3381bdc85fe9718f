//! `kcored`: the kcore reference daemon.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ipnet::Ipv4Net;
use kcored::agent::{AgentOptions, DEFAULT_CLUSTER_CIDR, DEFAULT_SERVICE_CIDR};
use kcored::cluster::{ControlPlane, ControlPlaneConfig, DEFAULT_DATA_DIR};
use kcored::join::JoinToken;

#[derive(Parser)]
#[command(name = "kcored", version, about = "kcored: the kcore reference daemon")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a one-node cluster on this machine: API server on the embedded store,
    /// scheduler, controllers and a node agent. Writes a kubeconfig for kubectl; on
    /// exit the node's pods and networking are removed (the objects stay stored).
    Up {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        node: NodeArgs,
        /// Leave the pods running on exit (the next start adopts them).
        #[arg(long)]
        keep_pods: bool,
    },
    /// Run the control plane (API server, scheduler, controllers, node IPAM), and with
    /// --agent a node agent too. Prints the token other nodes join with.
    Server {
        #[command(flatten)]
        server: ServerArgs,
        /// Also run a node agent in this process.
        #[arg(long)]
        agent: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Join a cluster as a node.
    Agent {
        /// The API server, e.g. https://192.0.2.10:6443.
        #[arg(long)]
        server: String,
        /// The join token `kcored server` printed (also `kcored token`).
        #[arg(long, env = "KCORE_TOKEN")]
        token: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Print the join token of the control plane whose state is in --data-dir; with a
    /// subcommand, manage bootstrap tokens as `kubeadm token` does.
    #[command(args_conflicts_with_subcommands = true)]
    Token {
        /// State directory of the control plane.
        #[arg(long, default_value = DEFAULT_DATA_DIR, global = true)]
        data_dir: PathBuf,
        #[command(subcommand)]
        action: Option<TokenCmd>,
    },
    /// Remove this node's pods, cgroups, Service rules, overlay and bridge (kept state
    /// on disk and API objects are left alone).
    Reset {
        /// State directory of the node.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a bootstrap token and print the join token that carries it.
    Create {
        /// How long the token is valid (`24h`, `30m`, `90s`; `0` never expires).
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: Duration,
        /// A description of the token.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the bootstrap tokens.
    List,
}

/// A TTL as kubeadm takes it: a number with `s`, `m`, `h` or `d` (`0`: forever).
fn parse_ttl(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("invalid duration {s:?}: use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Address for the API server (HTTPS).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Also write the admin kubeconfig here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Where objects are stored: `embedded` (redb under --data-dir) or
    /// `etcd://host:port[,host:port...]` (needs the `etcd` feature).
    #[arg(long, default_value = "embedded")]
    datastore: String,
    /// Do not run the scheduler.
    #[arg(long)]
    no_scheduler: bool,
    /// Do not run the controllers.
    #[arg(long)]
    no_controllers: bool,
    /// Another name or address clients reach the API server by (repeatable); the node
    /// IP and host name are always added.
    #[arg(long)]
    tls_san: Vec<String>,
    /// Also run this many simulated nodes (KWOK-style: Nodes with Leases whose bound
    /// pods go Running without containers); for scale and scheduler tests.
    #[arg(long, default_value_t = 0)]
    simulated_nodes: usize,
    /// Keep all state in a new temporary directory (instead of --data-dir) and remove it
    /// on exit: a throw-away cluster for CI.
    #[arg(long)]
    ephemeral: bool,
    /// Seconds a node may miss heartbeats before it is NotReady and tainted.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: u64,
    /// An AdmissionConfiguration file (Pod Security's defaults and exemptions).
    #[arg(long)]
    admission_control_config_file: Option<PathBuf>,
    /// An EncryptionConfiguration file: which resources are encrypted at rest, and how.
    #[arg(long)]
    encryption_provider_config: Option<PathBuf>,
    /// An audit policy file (audit.k8s.io/v1 Policy); needs --audit-log-path.
    #[arg(long)]
    audit_policy_file: Option<PathBuf>,
    /// Where audit events are written as JSON lines; needs --audit-policy-file.
    #[arg(long)]
    audit_log_path: Option<PathBuf>,
    /// The size in megabytes at which the audit log is rotated (0: 100, as upstream).
    #[arg(long, default_value_t = 0)]
    audit_log_maxsize: u64,
    /// How many rotated audit logs are kept (0: all).
    #[arg(long, default_value_t = 0)]
    audit_log_maxbackup: usize,
    /// How many days rotated audit logs are kept, by the time in their names (0: forever).
    #[arg(long, default_value_t = 0)]
    audit_log_maxage: u64,
    /// LoadBalancer pool mode (as MetalLB's L2): Services get addresses from this CIDR
    /// or range (`a.b.c.d-e.f.g.h`; repeatable, or comma-separated), each announced by
    /// one node with ARP. Without it, LoadBalancers get the nodes' addresses.
    #[arg(long, value_delimiter = ',', value_parser = kcored::cluster::parse_lb_pool)]
    service_lb_pool: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Join the control plane already on the --datastore etcd: its join token (printed
    /// by the first server, or `kcored token` there). The CA, keys and tokens come from
    /// the cluster's bootstrap data in etcd, checked against the token's CA hash.
    #[arg(long, env = "KCORE_TOKEN")]
    token: Option<String>,
    /// The CA certificate that signed the etcd members' certificates (HTTPS to etcd).
    #[arg(long)]
    etcd_cafile: Option<PathBuf>,
    /// The client certificate this server shows to etcd (mutual TLS).
    #[arg(long)]
    etcd_certfile: Option<PathBuf>,
    /// The key of --etcd-certfile.
    #[arg(long)]
    etcd_keyfile: Option<PathBuf>,
    /// How long the scheduler's and the controllers' leader Lease lasts without renewal
    /// (servers on etcd elect one leader each).
    #[arg(long, default_value = "15s", value_parser = kcored::leadership::parse_duration)]
    leader_elect_lease_duration: std::time::Duration,
    /// How long a leader keeps trying to renew before it stops acting.
    #[arg(long, default_value = "10s", value_parser = kcored::leadership::parse_duration)]
    leader_elect_renew_deadline: std::time::Duration,
    /// How often candidates try to acquire, and leaders renew, the Lease.
    #[arg(long, default_value = "2s", value_parser = kcored::leadership::parse_duration)]
    leader_elect_retry_period: std::time::Duration,
    /// How often this server renews its identity Lease and the `kubernetes` Service's
    /// endpoints; a server that stops leaves them after 1.5 of these.
    #[arg(long, default_value = "10s", value_parser = kcored::leadership::parse_duration)]
    endpoint_reconcile_interval: std::time::Duration,
}

#[derive(clap::Args)]
struct NodeArgs {
    /// State directory.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The Node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's address (default: the source address of the default route).
    #[arg(long)]
    node_ip: Option<Ipv4Addr>,
    /// This node's pod subnet (default: assigned by the control plane).
    #[arg(long)]
    pod_cidr: Option<Ipv4Net>,
    /// The cluster's pod network.
    #[arg(long, default_value = DEFAULT_CLUSTER_CIDR)]
    cluster_cidr: Ipv4Net,
    /// The Service ClusterIP range.
    #[arg(long, default_value = DEFAULT_SERVICE_CIDR)]
    service_cidr: Ipv4Net,
    /// Where the Ingress proxy listens.
    #[arg(long, default_value = "0.0.0.0:80")]
    ingress_listen: SocketAddr,
    /// Where the Ingress proxy serves TLS (certificates from the Ingresses' Secrets).
    #[arg(long, default_value = "0.0.0.0:443")]
    ingress_tls_listen: SocketAddr,
    /// Do not serve Ingress TLS.
    #[arg(long)]
    no_ingress_tls: bool,
    /// Do not serve Ingress.
    #[arg(long)]
    no_ingress: bool,
    /// Do not join the VXLAN overlay (one-node clusters need none).
    #[arg(long)]
    no_vxlan: bool,
    /// Parent cgroup of the pod cgroups.
    #[arg(long, default_value = "kcore")]
    cgroup_parent: String,
    /// Fork the agent itself to set up each container, instead of a small launcher
    /// process (a fresh copy of kcored) forking a worker of a few MiB.
    #[arg(long)]
    no_container_launcher: bool,
}

impl NodeArgs {
    fn options(&self, vxlan_default: bool) -> AgentOptions {
        let mut o = AgentOptions::new(&self.data_dir);
        o.node_name = self.node_name.clone();
        o.node_ip = self.node_ip;
        o.pod_cidr = self.pod_cidr;
        o.cluster_cidr = self.cluster_cidr;
        o.service_cidr = self.service_cidr;
        o.ingress = (!self.no_ingress).then_some(self.ingress_listen);
        o.ingress_tls = (!self.no_ingress_tls).then_some(self.ingress_tls_listen);
        o.vxlan = vxlan_default && !self.no_vxlan;
        o.cgroup_parent = self.cgroup_parent.clone();
        o.container_launcher = !self.no_container_launcher;
        o
    }
}

/// jemalloc: the API server's JSON work allocates a lot, and jemalloc spends about a
/// quarter less CPU per write on it than glibc malloc (`cargo bench --bench apiserver`).
/// It stays usable in the forked children that set up containers: it takes its locks
/// around `fork` (pthread_atfork), which mimalloc, for one, does not.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // KCORE_LOG_SPANS=1 also logs each span as it closes, with its busy and idle time
    // (where a slow pod start or request spends its time)
    let span_events = if std::env::var_os("KCORE_LOG_SPANS").is_some_and(|v| v == "1") {
        tracing_subscriber::fmt::format::FmtSpan::CLOSE
    } else {
        tracing_subscriber::fmt::format::FmtSpan::NONE
    };
    tracing_subscriber::fmt()
        .with_span_events(span_events)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // the node's container launcher (see kcore_runtime::launcher): a fresh copy of
    // this program that forks small workers instead of the agent forking itself
    if let Some(code) = kcore_runtime::launcher::serve_if_asked() {
        return ExitCode::from(code as u8);
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kcored: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kcored: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Up {
            server,
            mut node,
            keep_pods,
        } => {
            let scratch = ephemeral_state(&server, &mut node)?;
            let mut cfg = control_plane(&server, &node)?;
            cfg.agent = Some(node.options(false));
            cfg.reset_node_on_exit = !keep_pods || scratch.is_some();
            finish(serve(cfg).await, scratch)
        }
        Cmd::Server {
            server,
            agent,
            mut node,
        } => {
            let scratch = ephemeral_state(&server, &mut node)?;
            let mut cfg = control_plane(&server, &node)?;
            cfg.agent = agent.then(|| node.options(true));
            cfg.reset_node_on_exit |= scratch.is_some();
            finish(serve(cfg).await, scratch)
        }
        Cmd::Agent {
            server,
            token,
            node,
        } => {
            let token: JoinToken = token.parse()?;
            kcored::datadir::secure(&node.data_dir)?;
            let ca = kcored::join::discover_ca(&server, &token).await?;
            // every API connection goes through the client-side load balancer, which
            // learns the other servers from the kubernetes Endpoints
            let lb = kcored::serverlb::ServerLb::start(&server).await?;
            let server = lb.url();
            let ca_pem = kcored::join::ca_pem(&ca);
            let client = kcored::join::client(&server, ca, &token.secret)?;
            let joined =
                kcored::agent::node_config(&client, &server, &ca_pem, &node.options(true)).await?;
            let cfg = joined.config;
            tokio::spawn(kcored::serverlb::follow_endpoints(
                lb,
                joined.client.clone(),
                std::future::pending(),
            ));
            kcored::agent::save_node_record(&cfg)?;
            println!(
                "kcored: node {} joined {server} with pod subnet {}",
                cfg.node_name, cfg.pod_cidr
            );
            let shutdown = shutdown_signal()?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let rotation = tokio::spawn(joined.rotation.run(async move {
                let mut stopped = stopped;
                let _ = stopped.wait_for(|s| *s).await;
            }));
            let r = kcore_node::NodeAgent::new(joined.client, cfg)
                .run(shutdown)
                .await
                .context("node agent");
            let _ = stop.send(true);
            let _ = rotation.await;
            r
        }
        Cmd::Token { data_dir, action } => {
            let api = data_dir.join("apiserver");
            let ca_path = api.join("pki").join("ca.crt");
            let ca = std::fs::read_to_string(&ca_path)
                .with_context(|| format!("reading {}", ca_path.display()))?;
            match action {
                None => {
                    let path = api.join(kcored::cluster::JOIN_TOKEN);
                    let t: kcored::join::BootstrapToken = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?
                        .parse()?;
                    println!("{}", JoinToken::for_ca(&ca, &t.to_string())?);
                }
                Some(TokenCmd::Create { ttl, description }) => {
                    let client =
                        kcored::cluster::client_from_kubeconfig(&api.join("admin.kubeconfig"))
                            .await?;
                    let t = kcored::join::BootstrapToken::generate();
                    t.store(&client, (!ttl.is_zero()).then_some(ttl), &description)
                        .await?;
                    println!("{}", JoinToken::for_ca(&ca, &t.to_string())?);
                }
                Some(TokenCmd::List) => {
                    let client =
                        kcored::cluster::client_from_kubeconfig(&api.join("admin.kubeconfig"))
                            .await?;
                    let tokens = kcored::join::list_bootstrap_tokens(&client).await?;
                    println!(
                        "{:<24}{:<11}{:<22}{:<27}{:<35}EXTRA GROUPS",
                        "TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION"
                    );
                    for t in tokens {
                        let desc = if t.description.is_empty() {
                            "<none>".to_owned()
                        } else {
                            t.description
                        };
                        println!(
                            "{:<24}{:<11}{:<22}{:<27}{:<35}{}",
                            t.token,
                            kcored::join::human_ttl(t.ttl),
                            t.expires,
                            t.usages.join(","),
                            desc,
                            t.extra_groups
                        );
                    }
                }
            }
            Ok(())
        }
        Cmd::Reset { data_dir } => {
            let cfg = kcored::agent::load_node_record(&data_dir)?;
            let name = cfg.node_name.clone();
            // the reset needs no API server: the client is never used
            let client = kube::Client::try_from(kube::Config::new(
                "http://127.0.0.1:1".parse().expect("valid URI"),
            ))?;
            kcore_node::NodeAgent::new(client, cfg).reset().await?;
            println!("kcored: node {name} reset");
            Ok(())
        }
    }
}

/// With `--ephemeral`, a new temporary state directory in place of `--data-dir`.
fn ephemeral_state(server: &ServerArgs, node: &mut NodeArgs) -> Result<Option<tempfile::TempDir>> {
    if !server.ephemeral {
        return Ok(None);
    }
    let dir = tempfile::Builder::new()
        .prefix("kcored-ephemeral-")
        .tempdir()
        .context("creating the ephemeral state directory")?;
    println!(
        "kcored: ephemeral state in {} (removed on exit)",
        dir.path().display()
    );
    node.data_dir = dir.path().to_owned();
    Ok(Some(dir))
}

/// Removes the ephemeral state once everything has stopped.
fn finish(result: Result<()>, scratch: Option<tempfile::TempDir>) -> Result<()> {
    if let Some(dir) = scratch {
        let path = dir.path().to_owned();
        dir.close()
            .with_context(|| format!("removing the ephemeral state {}", path.display()))?;
    }
    result
}

fn control_plane(server: &ServerArgs, node: &NodeArgs) -> Result<ControlPlaneConfig> {
    let mut cfg = ControlPlaneConfig::new();
    cfg.data_dir = node.data_dir.clone();
    cfg.simulation = (server.simulated_nodes > 0).then(|| kcored::cluster::SimulationOptions {
        nodes: server.simulated_nodes,
        ..Default::default()
    });
    cfg.listen = server.listen;
    cfg.kubeconfig_out = server.kubeconfig.clone();
    cfg.scheduler = !server.no_scheduler;
    cfg.controllers = !server.no_controllers;
    cfg.node_monitor_grace_period =
        std::time::Duration::from_secs(server.node_monitor_grace_period);
    cfg.cluster_cidr = Some(node.cluster_cidr);
    cfg.tls_sans = server.tls_san.clone();
    cfg.service_lb_pool = server.service_lb_pool.clone();
    cfg.security = kcored::cluster::SecurityFiles {
        admission_config: server.admission_control_config_file.clone(),
        encryption_provider_config: server.encryption_provider_config.clone(),
        audit_policy: server.audit_policy_file.clone(),
        audit_log: server.audit_log_path.clone(),
        audit_log_rotation: kcore_apiserver::AuditLogRotation {
            max_size_mb: server.audit_log_maxsize,
            max_backups: server.audit_log_maxbackup,
            max_age_days: server.audit_log_maxage,
        },
    };
    cfg.tls_sans.push(
        node.node_ip
            .unwrap_or_else(kcored::agent::default_node_ip)
            .to_string(),
    );
    cfg.tls_sans.push(
        node.node_name
            .clone()
            .unwrap_or_else(kcored::agent::host_name),
    );
    cfg.datastore = server
        .datastore
        .parse()
        .with_context(|| format!("--datastore {}", server.datastore))?;
    cfg.join_token = server
        .token
        .as_deref()
        .map(str::parse::<JoinToken>)
        .transpose()
        .context("--token")?;
    cfg.etcd_tls = kcored::cluster::EtcdTlsFiles {
        ca_file: server.etcd_cafile.clone(),
        cert_file: server.etcd_certfile.clone(),
        key_file: server.etcd_keyfile.clone(),
    };
    cfg.leader_election = kcored::leadership::LeaderTimings {
        lease_duration: server.leader_elect_lease_duration,
        renew_deadline: server.leader_elect_renew_deadline,
        retry_period: server.leader_elect_retry_period,
    };
    cfg.leader_election.validate()?;
    cfg.endpoint_reconcile_interval = server.endpoint_reconcile_interval;
    Ok(cfg)
}

async fn serve(cfg: ControlPlaneConfig) -> Result<()> {
    let plane = ControlPlane::start(&cfg).await?;
    println!("kcored: API server at {}", plane.url());
    if let Some(node) = plane.node() {
        println!(
            "kcored: node {} ({}) with pod subnet {}",
            node.node_name, node.node_ip, node.pod_cidr
        );
    }
    if let Some(token) = plane.join_token() {
        println!(
            "kcored: join more nodes with: kcored agent --server {} --token {token}",
            plane.url()
        );
    }
    println!(
        "kcored: export KUBECONFIG={} && kubectl get nodes",
        plane.kubeconfig().display()
    );
    plane.run_until(shutdown_signal()?).await
}

/// Resolves on SIGTERM or SIGINT.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
