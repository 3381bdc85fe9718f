//! The node agent: wires the node's pieces together and runs them until shutdown.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kcore_netbridge::{Bridge, BridgeConfig, Ipam};
use kcore_ns::NetnsDir;
use kube::runtime::watcher;
use kube::Api;

use crate::cache::ClusterCache;
use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::images::Images;
use crate::netctx::NetCtx;
use crate::pods::{self, PodEvent, WorkerHandle};

/// What every part of the agent shares.
pub(crate) struct Shared {
    pub cfg: NodeConfig,
    pub client: kube::Client,
    pub runtime: kcore_runtime::Runtime,
    pub images: Arc<Images>,
    pub netns_dir: NetnsDir,
    pub ipam: Ipam,
    pub bridge: Option<Bridge>,
    pub pods_root: PathBuf,
    pub logs_root: PathBuf,
    pub net: NetCtx,
}

/// The node agent (the kubelet's job, plus kube-proxy's, cluster DNS and Ingress).
///
/// [`NodeAgent::run`] registers the Node, keeps its status and Lease fresh, runs the
/// pods bound to it, serves container logs over HTTP and, as configured, programs
/// Services, the VXLAN overlay, cluster DNS and the Ingress proxy.
pub struct NodeAgent {
    client: kube::Client,
    cfg: NodeConfig,
}

impl std::fmt::Debug for NodeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAgent").field("cfg", &self.cfg).finish()
    }
}

impl NodeAgent {
    /// An agent for the node described by `cfg`, talking to the API server through
    /// `client`.
    pub fn new(client: kube::Client, cfg: NodeConfig) -> Self {
        NodeAgent { client, cfg }
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// Removes everything the agent made on this node: it stops and deletes every pod's
    /// containers, sandboxes and volumes, the pod cgroups, the Service rules, the VXLAN
    /// device and the bridge. The API objects are left alone (a later agent recreates
    /// the pods still bound to the node). `kcored up` calls this on shutdown; `kcored
    /// reset` calls it on demand.
    pub async fn reset(self) -> Result<()> {
        let cfg = self.cfg;
        cfg.validate()?;
        let _span = tracing::info_span!("node_reset", node = %cfg.node_name);
        let (shared, node_ns) = open(self.client, cfg).await?;
        let s = shared.clone();
        tokio::task::spawn_blocking(move || cleanup_orphans(&s, &[]))
            .await
            .map_err(|e| Error::Config(format!("pod cleanup panicked: {e}")))?;
        if let Ok(h) = kcore_cgroup::Host::detect() {
            if let Ok(cg) = kcore_cgroup::Cgroup::open(&h, &shared.cfg.cgroup_parent) {
                let _ = cg.kill();
                if let Err(e) = cg.delete() {
                    tracing::warn!(error = %e, "removing the pod cgroup parent");
                }
            }
        }
        if shared.cfg.service_proxy {
            crate::proxy::teardown(&shared.cfg)?;
        }
        if shared.cfg.vxlan {
            crate::overlay::teardown(&shared.cfg, node_ns.as_ref()).await?;
        }
        let shared = Arc::into_inner(shared)
            .ok_or_else(|| Error::Config("node state still shared after cleanup".into()))?;
        if let Some(bridge) = shared.bridge {
            bridge
                .delete()
                .await
                .map_err(|e| Error::net(format!("delete bridge {}", shared.cfg.bridge_name), e))?;
        }
        Ok(())
    }

    /// Runs until `shutdown` completes. Containers keep running when the agent stops;
    /// the next agent on the same data directory adopts them.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let cfg = self.cfg;
        cfg.validate()?;
        let client = self.client;
        let _span = tracing::info_span!("node_agent", node = %cfg.node_name);
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| Error::io("create", &cfg.data_dir, e))?;
        // the HTTP server listens in the agent's own namespace, where the API server
        // reaches it; a port of 0 picks a free one, reported in the Node status
        let mut cfg = cfg;
        let listener = tokio::net::TcpListener::bind(cfg.server_addr)
            .await
            .map_err(|e| Error::Listen {
                addr: cfg.server_addr,
                source: e,
            })?;
        if let Ok(a) = listener.local_addr() {
            cfg.server_addr = a;
        }
        let (shared, node_ns) = open(client, cfg).await?;
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();

        // networking extras: overlay first (its MAC goes into the Node annotations)
        let mut annotations = BTreeMap::new();
        let c = &shared.cfg;
        let cache = if c.vxlan || c.service_proxy || c.dns || c.ingress_addr.is_some() {
            let (cache, watchers) = ClusterCache::start(&shared.client);
            tasks.extend(watchers);
            Some(cache)
        } else {
            None
        };
        if let Some(cache) = &cache {
            if shared.cfg.vxlan {
                match crate::overlay::start(shared.clone(), cache.clone(), node_ns.as_ref()).await {
                    Ok((ann, task)) => {
                        annotations.extend(ann);
                        tasks.push(task);
                    }
                    Err(e) => tracing::warn!(error = %e, "vxlan overlay disabled"),
                }
            }
            if shared.cfg.service_proxy {
                match crate::proxy::start(shared.clone(), cache.clone()) {
                    Ok(t) => tasks.push(t),
                    Err(e) => tracing::warn!(error = %e, "service proxy disabled"),
                }
            }
            if shared.cfg.dns {
                match crate::dns::start(shared.clone(), cache.clone()) {
                    Ok(t) => tasks.push(t),
                    Err(e) => tracing::warn!(error = %e, "cluster dns disabled"),
                }
            }
            if let Some(addr) = shared.cfg.ingress_addr {
                tasks.push(crate::ingress::start(shared.clone(), cache.clone(), addr)?);
            }
        }

        // HTTP server
        let app = crate::server::router(shared.logs_root.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "http server stopped");
            }
        }));

        // node registration and heartbeat
        if shared.cfg.register_node {
            let mut tries = 0;
            loop {
                match crate::node::register(&shared.client, &shared.cfg, &annotations).await {
                    Ok(()) => break,
                    Err(e) if tries < 30 => {
                        tries += 1;
                        tracing::warn!(error = %e, "node registration failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            // the Lease exists before the Node reports Ready, so nothing sees a Ready
            // node without a heartbeat
            if let Err(e) = crate::node::renew_lease(&shared.client, &shared.cfg).await {
                tracing::warn!(error = %e, "lease");
            }
            crate::node::update_status(&shared.client, &shared.cfg).await?;
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(s.cfg.heartbeat);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = crate::node::renew_lease(&s.client, &s.cfg).await {
                        tracing::warn!(error = %e, "lease renewal failed");
                    }
                    if let Err(e) = crate::node::update_status(&s.client, &s.cfg).await {
                        tracing::warn!(error = %e, "node status update failed");
                    }
                }
            }));
        }

        let result = tokio::select! {
            r = pod_manager(shared.clone()) => r,
            () = shutdown => Ok(()),
        };
        for t in &tasks {
            t.abort();
        }
        result
    }
}

/// Opens what the agent's parts share: the node namespace, forwarding, the bridge,
/// IPAM and the image store.
async fn open(
    client: kube::Client,
    cfg: NodeConfig,
) -> Result<(Arc<Shared>, Option<kcore_ns::NetNs>)> {
    let node_ns = match &cfg.node_netns {
        Some(p) => Some(
            kcore_ns::NetNs::open(p).map_err(|e| Error::ns("open node network namespace", e))?,
        ),
        None => None,
    };
    kcore_netbridge::enable_ip_forwarding(node_ns.as_ref())
        .map_err(|e| Error::net("enable forwarding", e))?;
    let mtu = if cfg.vxlan { 1450 } else { 1500 };
    let bridge = Bridge::ensure(
        node_ns.as_ref(),
        BridgeConfig {
            name: cfg.bridge_name.clone(),
            subnet: cfg.pod_cidr,
            mtu,
        },
    )
    .await
    .map_err(|e| Error::net(format!("bridge {}", cfg.bridge_name), e))?;
    let ipam = Ipam::open(cfg.dir("ipam"), cfg.pod_cidr).map_err(|e| Error::net("open ipam", e))?;
    let images = Images::open(&cfg.dir("images"), &cfg.dir("overlay"))?;
    let net = NetCtx::new(cfg.node_netns.clone());
    let shared = Arc::new(Shared {
        runtime: kcore_runtime::Runtime::new(cfg.dir("containers")),
        images: Arc::new(images),
        netns_dir: NetnsDir::new(cfg.dir("netns")),
        ipam,
        bridge: Some(bridge),
        pods_root: cfg.dir("pods"),
        logs_root: cfg.dir("logs"),
        net,
        client,
        cfg,
    });
    Ok((shared, node_ns))
}

/// Watches the pods bound to the node and feeds one worker per pod.
async fn pod_manager(shared: Arc<Shared>) -> Result<()> {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.cfg.node_name));
    let mut stream = watcher(api, cfg).boxed();
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut seen_in_init: Vec<String> = Vec::new();
    let mut first_init = true;
    loop {
        let ev = match stream.next().await {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "pod watch error");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
            None => return Ok(()),
        };
        workers.retain(|_, w| !w.task.is_finished());
        match ev {
            watcher::Event::Init => seen_in_init.clear(),
            watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                let Some(uid) = p.metadata.uid.clone() else {
                    continue;
                };
                seen_in_init.push(uid.clone());
                match workers.get(&uid) {
                    Some(w) => {
                        let _ = w.tx.send(PodEvent::Update(Box::new(p)));
                    }
                    None => {
                        // a finished pod whose worker is gone needs no new one
                        let terminal = matches!(
                            p.status.as_ref().and_then(|s| s.phase.as_deref()),
                            Some("Succeeded" | "Failed")
                        ) && p.metadata.deletion_timestamp.is_none()
                            && !shared.pods_root.join(&uid).exists();
                        if !terminal {
                            workers.insert(uid, pods::spawn_worker(shared.clone(), p));
                        }
                    }
                }
            }
            watcher::Event::Delete(p) => {
                if let Some(w) = p.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                    let _ = w.tx.send(PodEvent::Removed);
                }
            }
            watcher::Event::InitDone => {
                for (uid, w) in &workers {
                    if !seen_in_init.contains(uid) {
                        let _ = w.tx.send(PodEvent::Removed);
                    }
                }
                if first_init {
                    first_init = false;
                    let known = seen_in_init.clone();
                    let s = shared.clone();
                    tokio::task::spawn_blocking(move || cleanup_orphans(&s, &known));
                }
            }
        }
    }
}

/// Removes containers and pod directories left by pods that no longer exist.
fn cleanup_orphans(shared: &Shared, known: &[String]) {
    if let Ok(ids) = shared.runtime.list() {
        for id in ids {
            if let Some((uid, _, _)) = pods::parse_container_id(&id) {
                if !known.iter().any(|k| k == uid) {
                    tracing::info!(id, "removing orphaned container");
                    pods::remove_container(&shared.runtime, &shared.images, &id);
                }
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(&shared.pods_root) {
        for e in rd.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            if known.contains(&uid) {
                continue;
            }
            let dir = e.path();
            if let Some(sb) = crate::sandbox::Sandbox::load(&dir) {
                let env = crate::sandbox::SandboxEnv::new(shared);
                let rt = tokio::runtime::Handle::current();
                rt.block_on(sb.teardown(&dir, &env));
            }
            crate::volumes::teardown(&dir.join("volumes"));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
