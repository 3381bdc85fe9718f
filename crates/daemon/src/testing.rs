//! A real cluster inside a test, in well under a second.
//!
//! [`Cluster`] starts kcored's own control plane in the test's process: the API server
//! on a temporary embedded store and a free loopback port, the scheduler and the
//! controllers, plus [simulated nodes](kcore_node::SimulatedNodes) that take bound pods
//! through their lifecycle without running containers. It hands out a `kube::Client`
//! and an admin kubeconfig (for `kubectl`, Helm or any client), and everything (tasks,
//! store, certificates) goes when the value is dropped. Clusters share nothing, so a
//! test may start several side by side.
//!
//! # Example
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::Node;
//! use kcored::testing::Cluster;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = Cluster::builder().nodes(3).start().await?;
//! let nodes: kube::Api<Node> = kube::Api::all(cluster.client());
//! assert_eq!(nodes.list(&Default::default()).await?.items.len(), 3);
//! println!("KUBECONFIG={}", cluster.kubeconfig().display());
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use kcore_node::{NodeTemplate, Simulation};
use kcore_reconcile::ControllerManagerConfig;

use crate::agent::AgentOptions;
use crate::cluster::{ControlPlane, ControlPlaneConfig, SimulationOptions};

/// How to start a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    simulation: SimulationOptions,
    scheduler: bool,
    controllers: bool,
    controller_manager: ControllerManagerConfig,
    node_monitor_grace_period: Duration,
    agent: Option<AgentOptions>,
}

impl ClusterBuilder {
    /// This many simulated nodes (`sim-node-0`, `sim-node-1`, …); none by default.
    pub fn nodes(mut self, n: usize) -> Self {
        self.simulation.nodes = n;
        self
    }

    /// What each simulated node looks like (capacity, labels, taints).
    pub fn node_template(mut self, template: NodeTemplate) -> Self {
        self.simulation.template = template;
        self
    }

    /// How long a pod bound to a simulated node stays Pending before it runs.
    pub fn pod_start_delay(mut self, delay: Duration) -> Self {
        self.simulation.start_delay = delay;
        self
    }

    /// How often simulated nodes renew their Leases (10 s by default).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.simulation.heartbeat = every;
        self
    }

    /// How long a node may miss heartbeats before it is NotReady (40 s by default).
    pub fn node_monitor_grace_period(mut self, grace: Duration) -> Self {
        self.node_monitor_grace_period = grace;
        self
    }

    /// Run the scheduler (on by default).
    pub fn scheduler(mut self, on: bool) -> Self {
        self.scheduler = on;
        self
    }

    /// Run the built-in controllers (on by default).
    pub fn controllers(mut self, on: bool) -> Self {
        self.controllers = on;
        self
    }

    /// Which controllers run, with what settings (all, with upstream's defaults,
    /// unless set); [`node_monitor_grace_period`](Self::node_monitor_grace_period)
    /// overrides the field of the same name.
    ///
    /// ```no_run
    /// # async fn run() -> anyhow::Result<()> {
    /// use kcore_reconcile::ControllerManagerConfig;
    /// let only_deployments = ControllerManagerConfig {
    ///     controllers: ["deployment", "replicaset"].map(String::from).into(),
    ///     ..Default::default()
    /// };
    /// let cluster = kcored::testing::Cluster::builder()
    ///     .nodes(1)
    ///     .controller_manager(only_deployments)
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn controller_manager(mut self, config: ControllerManagerConfig) -> Self {
        self.controller_manager = config;
        self
    }

    /// Also run a real node agent in this process: real containers, so root and a
    /// network namespace the test owns are needed (its bridge and rules go there).
    pub fn real_node(mut self, agent: AgentOptions) -> Self {
        self.agent = Some(agent);
        self
    }

    /// Starts the cluster and returns once its API server answers and its simulated
    /// nodes are registered.
    #[tracing::instrument(name = "testing.cluster.start", skip_all, fields(nodes = self.simulation.nodes))]
    pub async fn start(self) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("kcore-cluster-")
            .tempdir()
            .context("creating the cluster's temporary directory")?;
        let mut cfg = ControlPlaneConfig::new();
        cfg.data_dir = dir.path().to_owned();
        cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        cfg.scheduler = self.scheduler;
        cfg.controllers = self.controllers;
        cfg.controller_manager = self.controller_manager;
        cfg.node_monitor_grace_period = self.node_monitor_grace_period;
        // simulated nodes bring their own pod subnets; a real node gets one from IPAM
        if self.agent.is_none() {
            cfg.cluster_cidr = None;
        }
        cfg.agent = self.agent;
        cfg.reset_node_on_exit = true;
        cfg.simulation = Some(self.simulation);
        let plane = ControlPlane::start(&cfg).await?;
        Ok(Cluster { plane, dir })
    }
}

/// A running cluster; dropping it stops every component and deletes its state.
pub struct Cluster {
    plane: ControlPlane,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &self.plane.url())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A builder: no nodes, scheduler and controllers on.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            simulation: SimulationOptions::default(),
            scheduler: true,
            controllers: true,
            controller_manager: ControllerManagerConfig::default(),
            node_monitor_grace_period: Duration::from_secs(40),
            agent: None,
        }
    }

    /// An admin client.
    pub fn client(&self) -> kube::Client {
        self.plane.client().clone()
    }

    /// The admin kubeconfig (for `kubectl --kubeconfig`, Helm, other clients).
    pub fn kubeconfig(&self) -> &Path {
        self.plane.kubeconfig()
    }

    /// The API server's URL (`https://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        self.plane.url()
    }

    /// The cluster's state directory (removed on drop).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The simulated nodes: fail one, recover it, list their names.
    pub fn simulation(&self) -> Option<&Simulation> {
        self.plane.simulation()
    }

    /// Stops every component, waiting for them (dropping stops them too, without waiting).
    pub async fn stop(mut self) {
        self.plane.stop().await;
    }
}
