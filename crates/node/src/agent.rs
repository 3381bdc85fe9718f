//! The node agent: wires the node's pieces together and runs them until shutdown.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kcore_netbridge::{Bridge, BridgeConfig, Ipam};
use kcore_ns::NetnsDir;
use kube::runtime::watcher;
use kube::Api;

use crate::auth::Authn;
use crate::cache::ClusterCache;
use crate::claims::ClaimCache;
use crate::config::NodeConfig;
use crate::dns::DnsEnv;
use crate::error::{Error, ErrorChain, Result};
use crate::images::Images;
use crate::ingress::IngressEnv;
use crate::netctx::NetCtx;
use crate::pods::{self, PodEnv, PodEvent, WorkerHandle};
use crate::probes::ProbeEnv;
use crate::sandbox::SandboxEnv;
use crate::streams::PodStreams;

/// The node agent (the kubelet's job, plus kube-proxy's, cluster DNS and Ingress).
///
/// [`NodeAgent::run`] registers the Node, keeps its status and Lease fresh, runs the
/// pods bound to it, serves container logs over HTTP and, as configured, programs
/// Services, the VXLAN overlay, cluster DNS and the Ingress proxy.
pub struct NodeAgent {
    client: kube::Client,
    cfg: NodeConfig,
    streams: PodStreams,
    /// Who may use the agent's server (with [`NodeConfig::server_tls`]): shared by its
    /// network listener and [`NodeAgent::local_server`], and so are their caches.
    authn: Option<Arc<Authn>>,
    /// The protocols of the sessions either of them ran (`/debug/streams`).
    sessions: kcore_stream::Sessions,
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
        let streams = PodStreams::new(cfg.runtime(), cfg.dir("console"), cfg.node_netns.clone());
        let authn = cfg.server_tls.as_ref().map(|t| {
            Arc::new(Authn::new(
                &cfg.node_name,
                t.token_review_url.is_some().then(|| client.clone()),
            ))
        });
        NodeAgent {
            client,
            cfg,
            streams,
            authn,
            sessions: kcore_stream::Sessions::default(),
        }
    }

    /// The agent's `exec`, `attach` and `portforward` endpoints (and `/debug/streams`) as
    /// a router, for an API server running in this same process to call without the
    /// network: register it in the server's `kcore_apiserver::LocalNodes` under the
    /// node's name, and the server hands each of this node's pod streams to it with the
    /// client's connection, on which the node then answers `101` and runs the session.
    ///
    /// It runs the sessions the agent's port runs (the same backend, pods and session
    /// record, which marks these [`kcore_stream::InProcess`]) and, with
    /// [`NodeConfig::server_tls`], authenticates and authorizes each request as the
    /// port does, from the client certificate chain the caller brings as its
    /// `ConnectInfo<kcore_tls::PeerCertificates>` (the API server's own). Sessions
    /// start once [`NodeAgent::run`] runs the pods.
    pub fn local_server(&self) -> axum::Router {
        crate::server::local_router(
            self.authn.clone(),
            Arc::new(self.streams.clone()),
            self.sessions.clone(),
        )
    }

    /// The backend of exec, attach and port-forward sessions into this agent's pods
    /// (it sees the pods once [`NodeAgent::run`] runs them).
    pub fn streams(&self) -> PodStreams {
        self.streams.clone()
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
        let net = NetCtx::new(cfg.node_netns.clone());
        let (pods, node_ns) = open(self.client, &cfg, net, self.streams).await?;
        let p = pods.clone();
        tokio::task::spawn_blocking(move || cleanup_orphans(&p, &HashSet::new()))
            .await
            .map_err(|e| Error::Config(format!("pod cleanup panicked: {e}")))?;
        if let Ok(h) = kcore_cgroup::Host::detect() {
            if let Ok(cg) = kcore_cgroup::Cgroup::open(&h, &cfg.cgroup_parent) {
                let _ = cg.kill();
                if let Err(e) = cg.delete() {
                    tracing::warn!(error = %ErrorChain(&e), "removing the pod cgroup parent");
                }
            }
        }
        if cfg.service_proxy {
            crate::proxy::teardown(&cfg)?;
            crate::netpol::teardown(&cfg)?;
        }
        if cfg.vxlan {
            crate::overlay::teardown(&cfg, node_ns.as_ref()).await?;
        }
        // loop-mounted volumes are unmounted (freeing their loop devices); their
        // images, like every volume's data, stay
        let volumes = cfg.dir("volumes");
        crate::loopfs::unmount_all(&volumes).map_err(|source| Error::LoopVolume {
            path: volumes,
            source,
        })?;
        let pods = Arc::into_inner(pods)
            .ok_or_else(|| Error::Config("node state still shared after cleanup".into()))?;
        if let Some(bridge) = pods.sandbox.bridge {
            bridge
                .delete()
                .await
                .map_err(|e| Error::net(format!("delete bridge {}", cfg.bridge_name), e))?;
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
        // root's only: pod state, Secret volumes, container logs and states are below it
        let tightened = kcore_statedir::ensure_dir(&cfg.data_dir, kcore_statedir::PRIVATE_DIR)
            .map_err(|e| Error::io("create", &cfg.data_dir, e))?;
        if let Some(t) = tightened {
            tracing::info!(%t, "tightened the mode of the node's data directory");
        }
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
        // one NetCtx for the node: probes, DNS and Ingress make their sockets through it
        let net = NetCtx::new(cfg.node_netns.clone());
        // exec, attach and port-forward sessions: the pod workers keep its registry
        // of pods and running containers
        let streams = self.streams;
        let (authn, sessions) = (self.authn, self.sessions);
        let (pods, node_ns) = open(client.clone(), &cfg, net.clone(), streams.clone()).await?;
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        // one watch of claims and volumes for the provisioner and the pods
        tasks.extend(pods.claims.start());
        let local = crate::provisioner::LocalProvisioner::new(
            client.clone(),
            cfg.node_name.clone(),
            cfg.dir("volumes"),
        );
        tasks.push(tokio::spawn(local.run(pods.claims.clone())));

        // networking extras: overlay first (its MAC goes into the Node annotations)
        let mut annotations = BTreeMap::new();
        let mut lb_announcer = None;
        let cache = if cfg.vxlan || cfg.service_proxy || cfg.dns || cfg.ingress_addr.is_some() {
            let (cache, watchers) = ClusterCache::start(&client);
            tasks.extend(watchers);
            Some(cache)
        } else {
            None
        };
        if let Some(cache) = &cache {
            if cfg.vxlan {
                match crate::overlay::start(&cfg, cache.clone(), node_ns.as_ref()).await {
                    Ok((ann, task)) => {
                        annotations.extend(ann);
                        tasks.push(task);
                    }
                    Err(e) => tracing::warn!(error = %ErrorChain(&e), "vxlan overlay disabled"),
                }
            }
            if cfg.service_proxy {
                match crate::proxy::start(&cfg, cache.clone()) {
                    Ok(t) => tasks.push(t),
                    Err(e) => tracing::warn!(error = %ErrorChain(&e), "service proxy disabled"),
                }
                // the health-check node ports of externalTrafficPolicy: Local
                tasks.push(crate::healthcheck::start(
                    crate::healthcheck::HealthEnv {
                        net: net.clone(),
                        bind: std::net::Ipv4Addr::UNSPECIFIED.into(),
                        node_name: cfg.node_name.clone(),
                    },
                    cache.clone(),
                ));
                // LoadBalancer pool addresses this node announces (MetalLB's L2)
                match crate::announce::start(
                    node_ns.as_ref(),
                    cfg.node_ip,
                    cfg.node_name.clone(),
                    cache.clone(),
                )
                .await
                {
                    Ok(a) => lb_announcer = Some(a),
                    Err(e) => {
                        tracing::warn!(error = %ErrorChain(&e), "load-balancer announcements disabled")
                    }
                }
                // NetworkPolicy goes with the nftables Service rules
                crate::netpol::start(&cfg, &client).map_or_else(
                    |e| tracing::warn!(error = %ErrorChain(&e), "network policy disabled"),
                    |t| tasks.extend(t),
                );
            }
            if cfg.dns {
                let env = DnsEnv {
                    net: net.clone(),
                    dns_ip: cfg.dns_ip(),
                    domain: cfg.cluster_domain.clone(),
                    upstream_dns: cfg.upstream_dns.clone(),
                };
                match crate::dns::start(env, cache.clone()) {
                    Ok(t) => tasks.push(t),
                    Err(e) => tracing::warn!(error = %ErrorChain(&e), "cluster dns disabled"),
                }
            }
            if let Some(addr) = cfg.ingress_addr {
                // the Secrets the served Ingresses name, one watch each
                tasks.push(tokio::spawn(crate::cache::follow_tls_secrets(
                    client.clone(),
                    cache.clone(),
                )));
                let env = IngressEnv {
                    net: net.clone(),
                    client: Some(client.clone()),
                    node_ip: cfg.node_ip,
                    tls_port: None,
                    state_dir: Some(cfg.dir("ingress")),
                };
                tasks.push(crate::ingress::start(
                    env,
                    cache.clone(),
                    addr,
                    cfg.ingress_tls_addr,
                )?);
            }
        }

        // the node's server: HTTPS with client authentication, or plain HTTP when
        // configured without TLS; its exec/attach/portforward routes run on `streams`
        // (this node's pods as a kcore_stream::Backend)
        let backend: Arc<dyn kcore_stream::Backend> = Arc::new(streams.clone());
        // resource usage for `kubectl top` (the Summary API), sampled from the cgroups
        let registry = streams.registry.clone();
        let stats = Arc::new(crate::stats::ResourceStats::new(
            cfg.node_name.clone(),
            cfg.cgroup_parent.clone(),
            kcore_cgroup::Host::system().ok().cloned(),
            "/proc".into(),
            Box::new(move || registry.running()),
        ));
        tasks.push(stats.clone().spawn());
        match (&cfg.server_tls, authn) {
            (Some(t), Some(authn)) => {
                let tls = kcore_tls::server_config_live(&t.cert, Some(&t.ca_pem))
                    .map_err(|source| Error::ServerTls { source })?;
                let addr = cfg.server_addr;
                let listener = kcore_tls::TlsListener::new(listener, tls)
                    .map_err(|source| Error::Listen { addr, source })?;
                let app = crate::server::router(
                    pods.logs_root.clone(),
                    Some(authn),
                    Some(backend),
                    Some(stats.clone()),
                    sessions,
                )
                .into_make_service_with_connect_info::<kcore_tls::PeerCertificates>();
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).await {
                        tracing::warn!(error = %ErrorChain(&e), "https server stopped");
                    }
                }));
            }
            _ => {
                tracing::warn!(addr = %cfg.server_addr, "the node's server speaks plain HTTP without authentication");
                let app = crate::server::router(
                    pods.logs_root.clone(),
                    None,
                    Some(backend),
                    Some(stats.clone()),
                    sessions,
                );
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).await {
                        tracing::warn!(error = %ErrorChain(&e), "http server stopped");
                    }
                }));
            }
        }

        // node registration and heartbeat
        if cfg.register_node {
            let mut tries = 0;
            loop {
                match crate::node::register(&client, &cfg, &annotations).await {
                    Ok(()) => break,
                    Err(e) if tries < 30 => {
                        tries += 1;
                        tracing::warn!(error = %ErrorChain(&e), "node registration failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            // the Lease exists before the Node reports Ready, so nothing sees a Ready
            // node without a heartbeat
            if let Err(e) = crate::node::renew_lease(&client, &cfg).await {
                tracing::warn!(error = %ErrorChain(&e), "lease");
            }
            crate::node::update_status(&client, &cfg).await?;
            let (client, cfg) = (client.clone(), cfg.clone());
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(cfg.heartbeat);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = crate::node::renew_lease(&client, &cfg).await {
                        tracing::warn!(error = %ErrorChain(&e), "lease renewal failed");
                    }
                    if let Err(e) = crate::node::update_status(&client, &cfg).await {
                        tracing::warn!(error = %ErrorChain(&e), "node status update failed");
                    }
                }
            }));
        }

        let result = tokio::select! {
            r = pod_manager(pods) => r,
            () = shutdown => Ok(()),
        };
        if let Some(a) = lb_announcer {
            a.release().await;
        }
        for t in &tasks {
            t.abort();
        }
        result
    }
}

/// Opens the node's pieces (its namespace, forwarding, the bridge, IPAM and the image
/// store) and builds the pod workers' environment from them and `cfg`.
async fn open(
    client: kube::Client,
    cfg: &NodeConfig,
    net: NetCtx,
    streams: PodStreams,
) -> Result<(Arc<PodEnv>, Option<kcore_ns::NetNs>)> {
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
    // as the kubelet's pods and logs directories: root and its group only (the pods'
    // volumes and logs are below them); the pods' namespace handles root's only
    for (d, mode) in [
        (cfg.dir("pods"), kcore_statedir::GROUP_DIR),
        (cfg.dir("logs"), kcore_statedir::GROUP_DIR),
        (cfg.dir("netns"), kcore_statedir::PRIVATE_DIR),
        (cfg.dir("console"), kcore_statedir::PRIVATE_DIR),
    ] {
        kcore_statedir::ensure_dir(&d, mode).map_err(|e| Error::io("create", &d, e))?;
    }
    let ipam = Ipam::open(cfg.dir("ipam"), cfg.pod_cidr).map_err(|e| Error::net("open ipam", e))?;
    let images = Images::open(&cfg.dir("images"), &cfg.dir("overlay"))?;
    let runtime = cfg.runtime();
    let sandbox = SandboxEnv {
        netns_dir: NetnsDir::new(cfg.dir("netns")),
        node_netns: cfg.node_netns.clone(),
        ipam,
        bridge: Some(bridge),
        cgroup_parent: cfg.cgroup_parent.clone(),
        node_ip: cfg.node_ip,
        cluster_dns: cfg.dns.then(|| cfg.dns_ip()),
        domain: cfg.cluster_domain.clone(),
    };
    let probe = Arc::new(ProbeEnv {
        runtime: runtime.clone(),
        net,
    });
    let pods = Arc::new(PodEnv {
        claims: ClaimCache::new(client.clone()),
        client,
        node_name: cfg.node_name.clone(),
        node_ip: cfg.node_ip,
        runtime,
        images: Arc::new(images),
        pods_root: cfg.dir("pods"),
        logs_root: cfg.dir("logs"),
        sandbox,
        probe,
        backoff_base: cfg.backoff_base,
        backoff_max: cfg.backoff_max,
        log_max_bytes: cfg.log_max_bytes,
        log_max_files: cfg.log_max_files,
        volume_refresh: cfg.volume_refresh,
        pull_timeout: cfg.pull_timeout,
        streams: streams.registry.clone(),
        console_dir: cfg.dir("console"),
    });
    Ok((pods, node_ns))
}

/// The uids of the pods in the pod watch's current (re)list. `Init` empties it,
/// `InitApply` adds to it and `InitDone` hands it over, empty again: it never holds
/// more than one list, and updates after the list (`Apply`) do not touch it.
#[derive(Debug, Default)]
struct Listing(HashSet<String>);

impl Listing {
    /// Takes note of a watch event (`InitDone` is [`Listing::done`]'s).
    fn note(&mut self, ev: &watcher::Event<Pod>) {
        match ev {
            watcher::Event::Init => self.0.clear(),
            watcher::Event::InitApply(p) => {
                if let Some(uid) = &p.metadata.uid {
                    self.0.insert(uid.clone());
                }
            }
            watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone => {}
        }
    }

    /// The uids the list held, leaving the set empty.
    fn done(&mut self) -> HashSet<String> {
        std::mem::take(&mut self.0)
    }
}

/// Watches the pods bound to the node and feeds one worker per pod.
async fn pod_manager(env: Arc<PodEnv>) -> Result<()> {
    let api: Api<Pod> = Api::all(env.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", env.node_name));
    let mut stream = watcher(api, cfg).boxed();
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut listing = Listing::default();
    let mut first_init = true;
    loop {
        let ev = match stream.next().await {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                tracing::warn!(error = %ErrorChain(&e), "pod watch error");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
            None => return Ok(()),
        };
        workers.retain(|_, w| !w.task.is_finished());
        listing.note(&ev);
        match ev {
            watcher::Event::Init => {}
            watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                let Some(uid) = p.metadata.uid.clone() else {
                    continue;
                };
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
                            && !env.pods_root.join(&uid).exists();
                        if !terminal {
                            workers.insert(uid, pods::spawn_worker(env.clone(), p));
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
                let known = listing.done();
                for (uid, w) in &workers {
                    if !known.contains(uid) {
                        let _ = w.tx.send(PodEvent::Removed);
                    }
                }
                if first_init {
                    first_init = false;
                    let env = env.clone();
                    tokio::task::spawn_blocking(move || cleanup_orphans(&env, &known));
                }
            }
        }
    }
}

/// Removes containers and pod directories left by pods that no longer exist.
fn cleanup_orphans(env: &PodEnv, known: &HashSet<String>) {
    if let Ok(ids) = env.runtime.list() {
        for id in ids {
            if let Some((uid, _, _)) = pods::parse_container_id(&id) {
                if !known.contains(uid) {
                    tracing::info!(id, "removing orphaned container");
                    pods::remove_container(&env.runtime, &env.images, &id);
                }
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(&env.pods_root) {
        for e in rd.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            if known.contains(&uid) {
                continue;
            }
            let dir = e.path();
            if let Some(sb) = crate::sandbox::Sandbox::load(&dir) {
                let rt = tokio::runtime::Handle::current();
                rt.block_on(sb.teardown(&dir, &env.sandbox));
            }
            crate::volumes::teardown(&dir.join("volumes"));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": uid, "uid": uid}})).unwrap()
    }

    fn uids(v: &[&str]) -> HashSet<String> {
        v.iter().map(|u| (*u).to_owned()).collect()
    }

    #[test]
    fn listing_holds_one_list_at_most() {
        let mut l = Listing::default();
        l.note(&watcher::Event::Init);
        l.note(&watcher::Event::InitApply(pod("a")));
        l.note(&watcher::Event::InitApply(pod("a")));
        l.note(&watcher::Event::InitApply(pod("b")));
        l.note(&watcher::Event::InitApply(Pod::default()));
        l.note(&watcher::Event::InitDone);
        assert_eq!(l.done(), uids(&["a", "b"]));
        assert!(l.0.is_empty());
        // updates and deletions after the list leave it alone
        for _ in 0..1000 {
            l.note(&watcher::Event::Apply(pod("a")));
            l.note(&watcher::Event::Apply(pod("c")));
        }
        l.note(&watcher::Event::Delete(pod("a")));
        assert!(l.0.is_empty());
        // a relist that restarts before it is done starts over
        l.note(&watcher::Event::Init);
        l.note(&watcher::Event::InitApply(pod("a")));
        l.note(&watcher::Event::Init);
        l.note(&watcher::Event::InitApply(pod("c")));
        assert_eq!(l.done(), uids(&["c"]));
        assert!(l.done().is_empty());
    }
}
