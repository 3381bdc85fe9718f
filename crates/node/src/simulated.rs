//! Simulated nodes: KWOK's idea inside kcore.
//!
//! [`SimulatedNodes`] registers N Nodes built from one [`NodeTemplate`] (capacity,
//! labels, taints), renews their Leases in `kube-node-lease` as the kubelet does, and
//! takes every pod bound to them through its lifecycle without running anything:
//! `Pending → Running` with a pod IP from the node's podCIDR after a start delay,
//! readiness after each readiness probe's `initialDelaySeconds`, an exit on demand
//! (the [`ANN_EXIT_CODE`] and [`ANN_EXIT_AFTER`] annotations, e.g. for Jobs), restarts
//! per `restartPolicy`, and deletion that honours the grace period. A node fails on
//! demand ([`Simulation::fail`]): it stops heartbeating and writing status, and the
//! node lifecycle controller sees what it would see of a dead kubelet.
//!
//! All nodes share one pod watch, one Node registration pass and one heartbeat timer, so
//! thousands of them cost a few tasks, not thousands.
//!
//! # Example
//!
//! ```no_run
//! use kcore_node::{NodeTemplate, SimulatedNodes};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let sim = SimulatedNodes::new(client, 3)
//!     .template(NodeTemplate::default().label("tier", "sim"))
//!     .start()
//!     .await?;
//! assert_eq!(sim.node_names().len(), 3);
//! sim.fail("sim-node-0"); // its Lease stops being renewed
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use ipnet::Ipv4Net;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kcore_k8s::{pod_qos_class, status_code, QosClass};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::node::LEASE_NAMESPACE;

/// Annotation on a pod: its containers exit with this code (after [`ANN_EXIT_AFTER`]);
/// without it they run until the pod is deleted.
pub const ANN_EXIT_CODE: &str = "sim.kcore.dev/exit-code";
/// Annotation on a pod: how long its containers run before they exit with
/// [`ANN_EXIT_CODE`], as `500ms`, `2s` or `1m` (default: at once).
pub const ANN_EXIT_AFTER: &str = "sim.kcore.dev/exit-after";
/// Label every simulated Node carries (value `true`).
pub const LABEL_SIMULATED: &str = "kcore.dev/simulated";

/// What every simulated Node looks like.
#[derive(Debug, Clone)]
pub struct NodeTemplate {
    /// CPU capacity in millicores.
    pub cpu_millis: u64,
    /// Memory capacity in bytes.
    pub memory_bytes: u64,
    /// The most pods the node takes (`status.capacity.pods`).
    pub max_pods: u32,
    /// Labels besides `kubernetes.io/hostname`, `kubernetes.io/os`, `kubernetes.io/arch`
    /// and [`LABEL_SIMULATED`].
    pub labels: BTreeMap<String, String>,
    /// Taints (`spec.taints`, as JSON objects with key, value and effect).
    pub taints: Vec<Value>,
}

impl Default for NodeTemplate {
    /// 4 CPUs, 16 GiB, 110 pods: a common cloud node.
    fn default() -> Self {
        NodeTemplate {
            cpu_millis: 4000,
            memory_bytes: 16 << 30,
            max_pods: 110,
            labels: BTreeMap::new(),
            taints: Vec::new(),
        }
    }
}

impl NodeTemplate {
    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds a taint (`effect` is `NoSchedule`, `PreferNoSchedule` or `NoExecute`).
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.taints
            .push(json!({"key": key, "value": value, "effect": effect}));
        self
    }
}

/// A builder of simulated nodes; [`SimulatedNodes::start`] brings them up.
#[derive(Clone)]
pub struct SimulatedNodes {
    client: kube::Client,
    count: usize,
    prefix: String,
    template: NodeTemplate,
    pod_cidr: Ipv4Net,
    node_ips: Ipv4Net,
    heartbeat: Duration,
    lease_duration: Duration,
    start_delay: Duration,
    stop_delay: Duration,
    concurrency: usize,
}

impl std::fmt::Debug for SimulatedNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedNodes")
            .field("count", &self.count)
            .field("prefix", &self.prefix)
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

impl SimulatedNodes {
    /// `count` nodes named `sim-node-<i>`, 10 s heartbeats, pods Running at once.
    pub fn new(client: kube::Client, count: usize) -> Self {
        SimulatedNodes {
            client,
            count,
            prefix: "sim-node-".into(),
            template: NodeTemplate::default(),
            pod_cidr: "10.128.0.0/9".parse().expect("cidr"),
            node_ips: "100.64.0.0/10".parse().expect("cidr"),
            heartbeat: Duration::from_secs(10),
            lease_duration: Duration::from_secs(40),
            start_delay: Duration::ZERO,
            stop_delay: Duration::ZERO,
            concurrency: 64,
        }
    }

    /// Node names are this prefix and an index.
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// What each node looks like.
    pub fn template(mut self, template: NodeTemplate) -> Self {
        self.template = template;
        self
    }

    /// Node `i` gets the `i`-th /24 of this range as its podCIDR (default 10.128.0.0/9).
    pub fn pod_cidr(mut self, cidr: Ipv4Net) -> Self {
        self.pod_cidr = cidr;
        self
    }

    /// Node `i` gets the `i`-th address of this range as its InternalIP (default
    /// 100.64.0.0/10, the shared address space, so it never names a real host).
    pub fn node_ips(mut self, cidr: Ipv4Net) -> Self {
        self.node_ips = cidr;
        self
    }

    /// How often each Lease is renewed (the kubelet's 10 s by default); the Lease's
    /// duration is four times this, in whole seconds (at least one: the API's unit).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self.lease_duration = Duration::from_secs((every * 4).as_secs_f64().ceil().max(1.0) as u64);
        self
    }

    /// How long a bound pod stays Pending before it runs.
    pub fn start_delay(mut self, delay: Duration) -> Self {
        self.start_delay = delay;
        self
    }

    /// How long a deleted pod's containers take to stop (capped by its grace period).
    pub fn stop_delay(mut self, delay: Duration) -> Self {
        self.stop_delay = delay;
        self
    }

    /// At most this many API requests in flight (default 64).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Registers the nodes, takes their first heartbeat and starts serving their pods.
    #[tracing::instrument(name = "simulated_nodes.start", skip(self), fields(count = self.count))]
    pub async fn start(self) -> Result<Simulation> {
        let subnets = self
            .pod_cidr
            .subnets(24.max(self.pod_cidr.prefix_len()))
            .map_err(|e| Error::Config(format!("pod CIDR {}: {e}", self.pod_cidr)))?;
        let mut nodes = BTreeMap::new();
        let mut hosts = self.node_ips.hosts();
        for (i, cidr) in (0..self.count).zip(subnets) {
            let ip = hosts
                .next()
                .ok_or_else(|| Error::Config(format!("node IPs {} are too few", self.node_ips)))?;
            let name = format!("{}{i}", self.prefix);
            nodes.insert(name, SimNode::new(cidr, ip));
        }
        if nodes.len() < self.count {
            return Err(Error::Config(format!(
                "pod CIDR {} has room for {} nodes, not {}",
                self.pod_cidr,
                nodes.len(),
                self.count
            )));
        }
        let shared = Arc::new(Shared {
            client: self.client.clone(),
            cfg: self.clone(),
            nodes: Mutex::new(nodes),
            pods: Mutex::new(HashMap::new()),
            limit: Semaphore::new(self.concurrency),
            heartbeat_limit: Semaphore::new(self.concurrency),
        });
        ensure_namespace(&self.client, LEASE_NAMESPACE).await?;
        let names = shared.names();
        futures::stream::iter(names.iter().cloned())
            .map(|n| {
                let s = shared.clone();
                async move { s.register(&n).await }
            })
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        let mut tasks = JoinSet::new();
        tasks.spawn(heartbeats(shared.clone()));
        tasks.spawn(node_conditions(shared.clone()));
        tasks.spawn(pods(shared.clone()));
        Ok(Simulation { shared, tasks })
    }
}

/// Running simulated nodes; dropping this stops them (their Nodes stay, as a dead
/// kubelet's would).
pub struct Simulation {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("nodes", &self.shared.names().len())
            .finish()
    }
}

impl Simulation {
    /// The simulated nodes' names.
    pub fn node_names(&self) -> Vec<String> {
        self.shared.names()
    }

    /// The node stops heartbeating and serving its pods, as if its kubelet died; returns
    /// false for a name that is not a simulated node.
    pub fn fail(&self, node: &str) -> bool {
        self.shared.set_failed(node, true)
    }

    /// A failed node comes back: heartbeats resume at once and its pods are served again.
    pub fn recover(&self, node: &str) -> bool {
        self.shared.set_failed(node, false)
    }

    /// Stops the simulation (as dropping it does).
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

struct SimNode {
    pod_cidr: Ipv4Net,
    ip: Ipv4Addr,
    failed: bool,
    /// Its status must be posted again (it was marked NotReady, or it recovered).
    needs_status: bool,
    /// Pod IPs in use, by pod uid.
    ips: BTreeMap<String, Ipv4Addr>,
}

impl SimNode {
    fn new(pod_cidr: Ipv4Net, ip: Ipv4Addr) -> Self {
        SimNode {
            pod_cidr,
            ip,
            failed: false,
            needs_status: false,
            ips: BTreeMap::new(),
        }
    }

    /// The lowest free pod address of the node's subnet (the first is the gateway).
    fn allocate(&mut self, uid: &str) -> Option<Ipv4Addr> {
        if let Some(ip) = self.ips.get(uid) {
            return Some(*ip);
        }
        let used: BTreeSet<Ipv4Addr> = self.ips.values().copied().collect();
        let ip = self
            .pod_cidr
            .hosts()
            .skip(1)
            .find(|ip| !used.contains(ip))?;
        self.ips.insert(uid.to_owned(), ip);
        Some(ip)
    }
}

/// What the simulation knows of one pod.
struct PodState {
    /// Bumped on every change of plan, so a stale timer does nothing.
    generation: u64,
    restarts: i32,
    started: Option<Timestamp>,
    terminal: bool,
    deleting: bool,
}

struct Shared {
    client: kube::Client,
    cfg: SimulatedNodes,
    nodes: Mutex<BTreeMap<String, SimNode>>,
    pods: Mutex<HashMap<String, PodState>>,
    /// Bounds pod and node writes.
    limit: Semaphore,
    /// Bounds Lease renewals apart from `limit`, so a burst of pod status writes never
    /// delays a heartbeat into a NotReady node.
    heartbeat_limit: Semaphore,
}

impl Shared {
    fn names(&self) -> Vec<String> {
        self.nodes.lock().expect("nodes").keys().cloned().collect()
    }

    fn set_failed(&self, node: &str, failed: bool) -> bool {
        match self.nodes.lock().expect("nodes").get_mut(node) {
            Some(n) => {
                n.failed = failed;
                n.needs_status |= !failed;
                true
            }
            None => false,
        }
    }

    fn is_live(&self, node: &str) -> bool {
        self.nodes
            .lock()
            .expect("nodes")
            .get(node)
            .is_some_and(|n| !n.failed)
    }

    /// Creates (or adopts) the Node, then writes its status and first Lease.
    async fn register(&self, name: &str) -> Result<()> {
        let cidr = self.nodes.lock().expect("nodes")[name].pod_cidr;
        let t = &self.cfg.template;
        let mut labels = t.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), name.into());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert("kubernetes.io/arch".into(), "amd64".into());
        labels.insert(LABEL_SIMULATED.into(), "true".into());
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()], "taints": t.taints},
        }))
        .map_err(|e| Error::Config(format!("node template: {e}")))?;
        let api: Api<Node> = Api::all(self.client.clone());
        let _permit = self.limit.acquire().await.expect("semaphore");
        let uid = match api.create(&PostParams::default(), &node).await {
            Ok(n) => n.metadata.uid,
            Err(e) if status_code(&e) == Some(409) => {
                api.get(name)
                    .await
                    .map_err(|e| Error::kube(format!("get node {name}"), e))?
                    .metadata
                    .uid
            }
            Err(e) => return Err(Error::kube(format!("create node {name}"), e)),
        };
        self.post_status(name).await?;
        self.create_lease(name, uid).await
    }

    /// Writes the node's status: capacity, addresses, Ready.
    async fn post_status(&self, name: &str) -> Result<()> {
        let Some(ip) = self.nodes.lock().expect("nodes").get(name).map(|n| n.ip) else {
            return Ok(());
        };
        let api: Api<Node> = Api::all(self.client.clone());
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": self.node_status(name, ip)})),
        )
        .await
        .map_err(|e| Error::kube(format!("update status of node {name}"), e))?;
        Ok(())
    }

    fn take_needs_status(&self, name: &str) -> bool {
        self.nodes
            .lock()
            .expect("nodes")
            .get_mut(name)
            .is_some_and(|n| std::mem::take(&mut n.needs_status))
    }

    fn set_needs_status(&self, name: &str) {
        if let Some(n) = self.nodes.lock().expect("nodes").get_mut(name) {
            n.needs_status = true;
        }
    }

    fn node_status(&self, name: &str, ip: Ipv4Addr) -> Value {
        let t = &self.cfg.template;
        let now = serde_json::to_value(Time(Timestamp::now())).expect("time");
        let cond = |ty: &str, status: &str, reason: &str, message: &str| {
            json!({"type": ty, "status": status, "reason": reason, "message": message,
                   "lastHeartbeatTime": now, "lastTransitionTime": now})
        };
        let resources = json!({
            "cpu": format!("{}m", t.cpu_millis),
            "memory": format!("{}Ki", t.memory_bytes / 1024),
            "pods": t.max_pods.to_string(),
            "ephemeral-storage": "100Gi",
        });
        json!({
            "capacity": resources,
            "allocatable": resources,
            "addresses": [
                {"type": "InternalIP", "address": ip.to_string()},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kcore simulated node is posting ready status"),
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": "",
                "containerRuntimeVersion": "kcore-simulated://0",
                "kernelVersion": "",
                "kubeProxyVersion": kcore_k8s::GIT_VERSION,
                "kubeletVersion": kcore_k8s::GIT_VERSION,
                "machineID": "",
                "operatingSystem": "linux",
                "osImage": "kcore simulated node",
                "systemUUID": "",
            },
        })
    }

    fn lease_spec(&self, name: &str) -> Value {
        let now = serde_json::to_value(MicroTime(Timestamp::now())).expect("time");
        json!({"holderIdentity": name, "leaseDurationSeconds": self.cfg.lease_duration.as_secs(),
               "renewTime": now})
    }

    async fn create_lease(&self, name: &str, node_uid: Option<String>) -> Result<()> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let mut spec = self.lease_spec(name);
        spec["acquireTime"] = spec["renewTime"].clone();
        // owned by the Node, as the kubelet's, so deleting the Node removes its Lease
        let owners = node_uid
            .map(|uid| json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]))
            .unwrap_or_else(|| json!([]));
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": owners},
            "spec": spec,
        }))
        .expect("lease");
        match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(409) => self.renew_lease(name).await,
            Err(e) => Err(Error::kube(format!("create lease {name}"), e)),
        }
    }

    async fn renew_lease(&self, name: &str) -> Result<()> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": self.lease_spec(name)})),
        )
        .await
        .map_err(|e| Error::kube(format!("renew lease {name}"), e))?;
        Ok(())
    }
}

async fn ensure_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(409) => Ok(()),
        Err(e) => Err(Error::kube(format!("create namespace {name}"), e)),
    }
}

/// Renews every live node's Lease once per heartbeat, spread evenly over the period so
/// thousands of nodes make a steady trickle of writes, not a burst.
async fn heartbeats(shared: Arc<Shared>) {
    let period = shared.cfg.heartbeat;
    loop {
        let names = shared.names();
        let step = period / (names.len().max(1) as u32);
        let round = tokio::time::Instant::now();
        let mut inflight = JoinSet::new();
        for (i, name) in names.into_iter().enumerate() {
            tokio::time::sleep_until(round + step * i as u32).await;
            if !shared.is_live(&name) {
                continue;
            }
            let s = shared.clone();
            inflight.spawn(async move {
                let _permit = s.heartbeat_limit.acquire().await.expect("semaphore");
                if let Err(e) = s.renew_lease(&name).await {
                    tracing::warn!(node = %name, error = %crate::ErrorChain(&e), "lease");
                }
                if s.take_needs_status(&name) {
                    if let Err(e) = s.post_status(&name).await {
                        s.set_needs_status(&name);
                        tracing::warn!(node = %name, error = %crate::ErrorChain(&e), "node status");
                    }
                }
            });
            while inflight.try_join_next().is_some() {}
        }
        tokio::time::sleep_until(round + period).await;
        while inflight.try_join_next().is_some() {}
    }
}

/// A live node that the control plane marked not Ready (its Lease lapsed while it was
/// failed, or someone edited it) posts Ready again on its next heartbeat, as a kubelet
/// whose status differs from what it would report does.
async fn node_conditions(shared: Arc<Shared>) {
    let api: Api<Node> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().labels(&format!("{LABEL_SIMULATED}=true"));
    let stream = watcher::watcher(api, cfg);
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                    .is_some_and(|c| c.status == "True");
                let name = n.metadata.name.unwrap_or_default();
                if !ready && shared.is_live(&name) {
                    shared.set_needs_status(&name);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "simulated nodes' node watch");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// One watch over all pods serves every simulated node.
async fn pods(shared: Arc<Shared>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields("spec.nodeName!=");
    let stream = watcher::watcher(api, cfg);
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => on_pod(&shared, p),
            Ok(watcher::Event::Delete(p)) => forget(&shared, &p),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "simulated nodes' pod watch");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn uid_of(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref()?.node_name.as_deref()
}

fn forget(shared: &Shared, p: &Pod) {
    let uid = uid_of(p);
    shared.pods.lock().expect("pods").remove(&uid);
    if let Some(node) = node_of(p) {
        if let Some(n) = shared.nodes.lock().expect("nodes").get_mut(node) {
            n.ips.remove(&uid);
        }
    }
}

/// Plans what happens next to a pod on a simulated node.
fn on_pod(shared: &Arc<Shared>, p: Pod) {
    let Some(node) = node_of(&p).map(str::to_owned) else {
        return;
    };
    if !shared.nodes.lock().expect("nodes").contains_key(&node) {
        return;
    }
    let uid = uid_of(&p);
    let phase = p.status.as_ref().and_then(|s| s.phase.clone());
    let deleting = p.metadata.deletion_timestamp.is_some();
    let mut pods = shared.pods.lock().expect("pods");
    let known = pods.contains_key(&uid);
    let st = pods.entry(uid.clone()).or_insert_with(|| PodState {
        generation: 0,
        restarts: 0,
        started: None,
        // a pod finished before we saw it (e.g. after a restart of the simulation)
        terminal: matches!(phase.as_deref(), Some("Succeeded" | "Failed")),
        deleting: false,
    });
    let p = Arc::new(p);
    if deleting {
        if st.deleting {
            return;
        }
        st.deleting = true;
        st.generation += 1;
        let grace = p.metadata.deletion_grace_period_seconds.unwrap_or(0).max(0) as u64;
        let delay = shared.cfg.stop_delay.min(Duration::from_secs(grace));
        let s = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            s.finish_deletion(&node, &p).await;
        });
        return;
    }
    if known || st.terminal {
        return;
    }
    st.generation += 1;
    let generation = st.generation;
    let s = shared.clone();
    let delay = shared.cfg.start_delay;
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        s.run_pod(&node, p, generation).await;
    });
}

/// How a simulated pod's containers end, from its annotations.
fn planned_exit(p: &Pod) -> Option<(i32, Duration)> {
    let ann = p.metadata.annotations.as_ref()?;
    let code = ann.get(ANN_EXIT_CODE)?.trim().parse().ok()?;
    let after = ann
        .get(ANN_EXIT_AFTER)
        .and_then(|s| parse_duration(s))
        .unwrap_or_default();
    Some((code, after))
}

/// `250ms`, `2s`, `1m` or `1h` (a bare number is seconds).
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

/// Whether a container that exited with `code` is started again.
fn restarts_after(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

enum Phase {
    Running { ready: bool },
    Exited(i32),
}

impl Shared {
    /// Waits while the node is failed (a dead kubelet does nothing); false once the pod
    /// is gone.
    async fn wait_live(&self, node: &str, uid: &str) -> bool {
        loop {
            if self.is_live(node) {
                return true;
            }
            if !self.pods.lock().expect("pods").contains_key(uid) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn current(&self, uid: &str, generation: u64) -> bool {
        self.pods
            .lock()
            .expect("pods")
            .get(uid)
            .is_some_and(|s| s.generation == generation && !s.deleting)
    }

    /// The pod runs: Running (and Ready when no probe delays it), then its planned exit,
    /// restarts per policy, until it ends or is deleted.
    async fn run_pod(self: Arc<Self>, node: &str, p: Arc<Pod>, generation: u64) {
        let uid = uid_of(&p);
        let ip = {
            let mut nodes = self.nodes.lock().expect("nodes");
            let Some(n) = nodes.get_mut(node) else { return };
            let host_network = p
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false);
            if host_network {
                Some(n.ip)
            } else {
                n.allocate(&uid)
            }
        };
        let Some(ip) = ip else {
            tracing::warn!(pod = ?p.metadata.name, node, "no free pod address");
            return;
        };
        let ready_after = readiness_delay(&p);
        let exit = planned_exit(&p);
        let policy = p
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        loop {
            if !self.current(&uid, generation) {
                return;
            }
            let started = Timestamp::now();
            if let Some(st) = self.pods.lock().expect("pods").get_mut(&uid) {
                st.started.get_or_insert(started);
            }
            let ready = ready_after.is_zero();
            self.write_status(node, &p, ip, Phase::Running { ready }, started)
                .await;
            let mut ran = Duration::ZERO;
            if !ready {
                let until = exit.map_or(ready_after, |(_, after)| after.min(ready_after));
                tokio::time::sleep(until).await;
                ran = until;
                if until == ready_after {
                    if !self.current(&uid, generation) {
                        return;
                    }
                    self.write_status(node, &p, ip, Phase::Running { ready: true }, started)
                        .await;
                }
            }
            let Some((code, after)) = exit else { return };
            tokio::time::sleep(after.saturating_sub(ran)).await;
            if !self.current(&uid, generation) {
                return;
            }
            self.write_status(node, &p, ip, Phase::Exited(code), started)
                .await;
            if !restarts_after(&policy, code) {
                if let Some(st) = self.pods.lock().expect("pods").get_mut(&uid) {
                    st.terminal = true;
                }
                return;
            }
            if let Some(st) = self.pods.lock().expect("pods").get_mut(&uid) {
                st.restarts += 1;
            }
        }
    }

    /// Writes the pod's status as a kubelet would for this phase of its containers.
    async fn write_status(
        &self,
        node: &str,
        p: &Pod,
        ip: Ipv4Addr,
        phase: Phase,
        started: Timestamp,
    ) {
        let uid = uid_of(p);
        if !self.wait_live(node, &uid).await {
            return;
        }
        let (restarts, first_start) = {
            let pods = self.pods.lock().expect("pods");
            let st = pods.get(&uid);
            (
                st.map_or(0, |s| s.restarts),
                st.and_then(|s| s.started).unwrap_or(started),
            )
        };
        let host_ip = self
            .nodes
            .lock()
            .expect("nodes")
            .get(node)
            .map(|n| n.ip.to_string())
            .unwrap_or_default();
        let status = pod_status(p, &host_ip, ip, &phase, restarts, started, first_start);
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            p.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = p.metadata.name.clone().unwrap_or_default();
        let _permit = self.limit.acquire().await.expect("semaphore");
        if let Err(e) = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
        {
            tracing::debug!(pod = %name, error = %e, "simulated pod status");
        }
    }

    /// The containers have stopped: the pod object goes (grace 0, this pod's uid only).
    async fn finish_deletion(&self, node: &str, p: &Pod) {
        if !self.wait_live(node, &uid_of(p)).await {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            p.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = p.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: p.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let _permit = self.limit.acquire().await.expect("semaphore");
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => {}
            Err(e) => tracing::debug!(pod = %name, error = %e, "simulated pod deletion"),
        }
    }
}

/// How long until every container with a readiness probe is ready.
fn readiness_delay(p: &Pod) -> Duration {
    p.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter_map(|c| c.readiness_probe.as_ref())
        .map(|r| Duration::from_secs(r.initial_delay_seconds.unwrap_or(0).max(0) as u64))
        .max()
        .unwrap_or_default()
}

fn pod_status(
    p: &Pod,
    host_ip: &str,
    ip: Ipv4Addr,
    phase: &Phase,
    restarts: i32,
    started: Timestamp,
    first_start: Timestamp,
) -> Value {
    let now = serde_json::to_value(Time(Timestamp::now())).expect("time");
    let since = serde_json::to_value(Time(started)).expect("time");
    let policy = p
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let (pod_phase, ready) = match phase {
        Phase::Running { ready } => ("Running", *ready),
        Phase::Exited(code) if !restarts_after(policy, *code) => {
            (if *code == 0 { "Succeeded" } else { "Failed" }, false)
        }
        Phase::Exited(_) => ("Running", false),
    };
    let old: Vec<Value> = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| {
            c.iter()
                .filter_map(|x| serde_json::to_value(x).ok())
                .collect()
        })
        .unwrap_or_default();
    let cond = |t: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        let when = old
            .iter()
            .find(|c| c["type"] == t && c["status"] == status)
            .map_or_else(|| now.clone(), |c| c["lastTransitionTime"].clone());
        let mut c =
            json!({"type": t, "status": status, "lastTransitionTime": when, "lastProbeTime": null});
        if let (false, Some(r)) = (ok, reason) {
            c["reason"] = json!(r);
        }
        c
    };
    let not_ready = if pod_phase == "Running" {
        "ContainersNotReady"
    } else {
        "PodCompleted"
    };
    let spec = p.spec.as_ref();
    let image_id = |image: &str| format!("kcore-simulated://{image}");
    let containers: Vec<Value> = spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            let id = format!("kcore-simulated://{}-{}-{restarts}", uid_of(p), c.name);
            let state = match phase {
                Phase::Running { .. } => json!({"running": {"startedAt": since}}),
                Phase::Exited(code) => json!({"terminated": {
                    "exitCode": code,
                    "reason": if *code == 0 { "Completed" } else { "Error" },
                    "startedAt": since, "finishedAt": now, "containerID": id}}),
            };
            json!({"name": c.name, "image": image, "imageID": image_id(&image),
                   "containerID": id, "ready": ready, "started": matches!(phase, Phase::Running { .. }),
                   "restartCount": restarts, "state": state})
        })
        .collect();
    let inits: Vec<Value> = spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            json!({"name": c.name, "image": image, "imageID": image_id(&image),
                   "containerID": format!("kcore-simulated://{}-{}", uid_of(p), c.name),
                   "ready": true, "started": false, "restartCount": 0,
                   "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                             "startedAt": since, "finishedAt": since}}})
        })
        .collect();
    let qos = spec.map_or(QosClass::BestEffort, pod_qos_class);
    let mut st = json!({
        "phase": pod_phase,
        "conditions": [
            cond("PodReadyToStartContainers", pod_phase == "Running", None),
            cond("Initialized", true, None),
            cond("Ready", ready, Some(not_ready)),
            cond("ContainersReady", ready, Some(not_ready)),
            cond("PodScheduled", true, None),
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "startTime": serde_json::to_value(Time(first_start)).expect("time"),
        "containerStatuses": containers,
        "qosClass": qos.as_str(),
    });
    if !inits.is_empty() {
        st["initContainerStatuses"] = json!(inits);
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_annotations_give_them() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("2x"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn restart_policy_decides_what_follows_an_exit() {
        assert!(!restarts_after("Never", 1));
        assert!(!restarts_after("OnFailure", 0));
        assert!(restarts_after("OnFailure", 2));
        assert!(restarts_after("Always", 0));
    }

    #[test]
    fn addresses_skip_the_gateway_and_are_reused_after_release() {
        let mut n = SimNode::new(
            "10.128.3.0/24".parse().unwrap(),
            Ipv4Addr::new(100, 64, 0, 4),
        );
        assert_eq!(n.allocate("a"), Some(Ipv4Addr::new(10, 128, 3, 2)));
        assert_eq!(n.allocate("b"), Some(Ipv4Addr::new(10, 128, 3, 3)));
        assert_eq!(n.allocate("a"), Some(Ipv4Addr::new(10, 128, 3, 2)));
        n.ips.remove("a");
        assert_eq!(n.allocate("c"), Some(Ipv4Addr::new(10, 128, 3, 2)));
    }

    #[test]
    fn a_finished_job_pod_has_upstreams_terminated_status() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "j", "namespace": "d", "uid": "u"},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap();
        let t = Timestamp::now();
        let st = pod_status(
            &p,
            "100.64.0.1",
            Ipv4Addr::new(10, 128, 0, 2),
            &Phase::Exited(0),
            0,
            t,
            t,
        );
        assert_eq!(st["phase"], "Succeeded");
        assert_eq!(
            st["containerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert_eq!(st["conditions"][2]["reason"], "PodCompleted");
        let st = pod_status(
            &p,
            "100.64.0.1",
            Ipv4Addr::new(10, 128, 0, 2),
            &Phase::Exited(3),
            0,
            t,
            t,
        );
        assert_eq!(st["phase"], "Failed");
        let v: k8s_openapi::api::core::v1::PodStatus = serde_json::from_value(st).unwrap();
        assert_eq!(v.qos_class.as_deref(), Some("BestEffort"));
    }
}
