//! `kcored agent` (and the agent inside `kcored up` / `kcored server --agent`): the node
//! agent of [`kcore_node`] set up for this machine.
//!
//! The node's pod subnet comes from the control plane's node IPAM unless given: the
//! agent registers its Node without one and waits until the control plane assigns it.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kcore_node::{ErrorChain, NodeConfig, ServerTls};
use kube::api::{Api, PostParams};

/// The cluster's pod network unless told otherwise (flannel's default).
pub const DEFAULT_CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The Service ClusterIP range (the API server's default).
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";

/// How this machine joins the cluster as a node.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The Node's name (default: the host name).
    pub node_name: Option<String>,
    /// The node's address (default: the source address of the default route, else
    /// 127.0.0.1).
    pub node_ip: Option<Ipv4Addr>,
    /// The node's pod subnet (default: assigned by the control plane).
    pub pod_cidr: Option<Ipv4Net>,
    /// The whole cluster's pod network.
    pub cluster_cidr: Ipv4Net,
    /// The Service ClusterIP range.
    pub service_cidr: Ipv4Net,
    /// State directory (images, layers, containers, pods, logs).
    pub data_dir: PathBuf,
    /// Where the Ingress proxy listens; `None` turns it off.
    pub ingress: Option<SocketAddr>,
    /// Where the Ingress proxy serves TLS; `None` turns TLS off.
    pub ingress_tls: Option<SocketAddr>,
    /// Join the VXLAN overlay.
    pub vxlan: bool,
    /// Parent cgroup of the pod cgroups.
    pub cgroup_parent: String,
    /// Node status and Lease renewal interval.
    pub heartbeat: Duration,
    /// Create containers in a small launcher process, a fresh copy of this program
    /// (which must call [`kcore_runtime::launcher::serve_if_asked`] first thing in
    /// `main`, as `kcored` does), instead of forking the agent for each. Off by
    /// default, for programs that do not serve as one (tests).
    pub container_launcher: bool,
}

impl AgentOptions {
    /// Defaults for a node keeping its state in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        AgentOptions {
            node_name: None,
            node_ip: None,
            pod_cidr: None,
            cluster_cidr: DEFAULT_CLUSTER_CIDR.parse().expect("valid default CIDR"),
            service_cidr: DEFAULT_SERVICE_CIDR.parse().expect("valid default CIDR"),
            data_dir: data_dir.into(),
            ingress: Some(SocketAddr::from(([0, 0, 0, 0], 80))),
            ingress_tls: Some(SocketAddr::from(([0, 0, 0, 0], 443))),
            vxlan: true,
            cgroup_parent: "kcore".into(),
            heartbeat: Duration::from_secs(5),
            container_launcher: false,
        }
    }
}

/// The host name, lower-cased (Node names are DNS subdomains).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kcore-node".into())
}

/// The source address the kernel would use for the default route (no packet is sent),
/// or 127.0.0.1 on a machine without one.
pub fn default_node_ip() -> Ipv4Addr {
    let probe = || -> std::io::Result<Ipv4Addr> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect("192.0.2.1:9")?;
        match s.local_addr()? {
            SocketAddr::V4(a) => Ok(*a.ip()),
            SocketAddr::V6(_) => Err(std::io::Error::other("not IPv4")),
        }
    };
    probe()
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(Ipv4Addr::LOCALHOST)
}

/// The agent's configuration, the client it runs with (its own identity,
/// `system:node:<name>` in `system:nodes`) and the task that renews that identity's
/// certificate ([`crate::credentials::ClientRotation::run`]; run it beside the agent).
pub struct JoinedNode {
    /// The node agent's configuration.
    pub config: NodeConfig,
    /// A client presenting the node's current client certificate.
    pub client: kube::Client,
    /// Renews the client and serving certificates before they expire.
    pub rotation: crate::credentials::NodeRotation,
}

/// Resolves the options against the cluster at `server_url` into the agent's
/// configuration and the client it runs with: with the bootstrap credential
/// (`bootstrap`, the join token's bootstrap token) it gets the node's client certificate
/// through a CertificateSigningRequest, then, as the node's own identity (the only
/// credential the agent uses from here on), its serving certificate the same way, and
/// makes sure the Node exists and has a pod subnet (waiting for the control plane to
/// assign one). `ca_pem` is the cluster CA.
#[tracing::instrument(skip_all, fields(data_dir = %opts.data_dir.display()))]
pub async fn node_config(
    bootstrap: &kube::Client,
    server_url: &str,
    ca_pem: &str,
    opts: &AgentOptions,
) -> Result<JoinedNode> {
    use crate::credentials::{self, ClientIdentity};
    // pods need a cgroup file system: say so now rather than failing every pod later
    kcore_cgroup::Host::detect()
        .context("this node has no usable cgroup file system (is /sys/fs/cgroup mounted?)")?;
    let name = opts.node_name.clone().unwrap_or_else(host_name);
    let node_ip = opts.node_ip.unwrap_or_else(default_node_ip);
    let user = format!("system:node:{name}");
    let groups = ["system:nodes".to_owned()];
    kcore_statedir::ensure_dir(&opts.data_dir, kcore_statedir::PRIVATE_DIR)
        .with_context(|| format!("creating {}", opts.data_dir.display()))?;
    let cert =
        credentials::request_certificate(bootstrap, &credentials::client_csr(&user, &groups))
            .await
            .with_context(|| format!("getting the client certificate of node {name}"))?;
    // kept as the kubelet keeps its client certificate, for the operator's tools
    let kubeconfig = opts.data_dir.join(NODE_KUBECONFIG);
    credentials::write_kubeconfig(&kubeconfig, server_url, &name, ca_pem, &cert)?;
    let identity = ClientIdentity::new(cert)?;
    let client = identity.client(server_url, ca_pem)?;
    // the approver checks a serving certificate's names against the Node's addresses,
    // so the Node reports them first (as the kubelet registers before it asks)
    report_addresses(&client, &name, node_ip).await?;
    let names = vec![node_ip.to_string(), name.clone()];
    let serving = credentials::request_certificate(
        &client,
        &credentials::serving_csr(&user, &groups, &names),
    )
    .await
    .with_context(|| format!("getting the serving certificate of node {name}"))?;
    let serving = kcore_tls::LiveCert::new(serving).context("loading the serving certificate")?;
    let pod_cidr = match opts.pod_cidr {
        Some(c) => c,
        None => assigned_pod_cidr(&client, &name).await?,
    };
    let mut cfg = NodeConfig::new(&name, &opts.data_dir, pod_cidr, node_ip);
    cfg.cluster_cidr = Some(opts.cluster_cidr);
    cfg.service_cidr = Some(opts.service_cidr);
    cfg.ingress_addr = opts.ingress;
    cfg.ingress_tls_addr = opts.ingress.and(opts.ingress_tls);
    cfg.vxlan = opts.vxlan;
    cfg.cgroup_parent = opts.cgroup_parent.clone();
    cfg.heartbeat = opts.heartbeat;
    cfg.server_tls = Some(ServerTls {
        ca_pem: ca_pem.to_owned(),
        cert: serving.clone(),
        token_review_url: Some(server_url.to_owned()),
    });
    if opts.container_launcher {
        let exe = std::env::current_exe().context("finding this program's path")?;
        let launcher = tokio::task::spawn_blocking(move || kcore_runtime::Launcher::start(&exe))
            .await
            .context("starting the container launcher")?
            .context("starting the container launcher")?;
        cfg.launcher = Some(launcher);
    }
    cfg.validate().context("node configuration")?;
    Ok(JoinedNode {
        config: cfg,
        client: client.clone(),
        rotation: credentials::NodeRotation {
            client: credentials::ClientRotation {
                identity,
                client: client.clone(),
                kubeconfig,
                server_url: server_url.to_owned(),
                node: name.clone(),
                ca_pem: ca_pem.to_owned(),
            },
            serving: credentials::ServingRotation {
                cert: serving,
                client,
                node: name,
                names,
            },
        },
    })
}

impl std::fmt::Debug for JoinedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinedNode")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Makes sure Node `name` exists and its status lists `node_ip` and its host name, as
/// the node's serving certificate will (registering it without a subnet when it does
/// not exist; the agent's heartbeat later writes the whole status).
async fn report_addresses(client: &kube::Client, name: &str, node_ip: Ipv4Addr) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let addresses = serde_json::json!([
        {"type": "InternalIP", "address": node_ip.to_string()},
        {"type": "Hostname", "address": name},
    ]);
    let existing = nodes
        .get_opt(name)
        .await
        .with_context(|| format!("reading node {name}"))?;
    match existing {
        None => {
            let node: Node = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "status": {"addresses": addresses},
            }))?;
            match nodes.create(&PostParams::default(), &node).await {
                Ok(_) => return Ok(()),
                Err(e) if kcore_k8s::status_code(&e) == Some(409) => {}
                Err(e) => return Err(e).with_context(|| format!("registering node {name}")),
            }
        }
        Some(n) => {
            let has = |t: &str, a: &str| {
                n.status
                    .as_ref()
                    .and_then(|s| s.addresses.as_ref())
                    .is_some_and(|l| l.iter().any(|x| x.type_ == t && x.address == a))
            };
            if has("InternalIP", &node_ip.to_string()) && has("Hostname", name) {
                return Ok(());
            }
        }
    }
    let patch = serde_json::json!({"status": {"addresses": addresses}});
    nodes
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .with_context(|| format!("reporting the addresses of node {name}"))?;
    Ok(())
}

/// Registers the Node (without a subnet) if it does not exist and waits for the control
/// plane's node IPAM to give it one.
async fn assigned_pod_cidr(client: &kube::Client, name: &str) -> Result<Ipv4Net> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut created = false;
    loop {
        match nodes.get_opt(name).await {
            Ok(Some(n)) => {
                if let Some(c) = n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) {
                    return c
                        .parse()
                        .with_context(|| format!("node {name} has an invalid podCIDR {c:?}"));
                }
            }
            Ok(None) if !created => {
                let node: Node = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                }))?;
                match nodes.create(&PostParams::default(), &node).await {
                    Ok(_) => created = true,
                    Err(e) if kcore_k8s::status_code(&e) == Some(409) => {}
                    Err(e) => tracing::warn!(error = %ErrorChain(&e), "registering the node"),
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %ErrorChain(&e), "reading the node"),
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "node {name} got no pod subnet within 60 s; is the control plane's node IPAM running? (or pass --pod-cidr)"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const NODE_RECORD: &str = "node.json";
/// The node's own credential (`system:node:<name>`) as a kubeconfig, mode 0600, under
/// its data directory.
pub const NODE_KUBECONFIG: &str = "node.kubeconfig";

/// Records the node's identity and networking under its data directory, so that
/// `kcored reset` can undo it without the API server.
pub fn save_node_record(cfg: &NodeConfig) -> Result<()> {
    let v = serde_json::json!({
        "nodeName": cfg.node_name,
        "podCIDR": cfg.pod_cidr.to_string(),
        "nodeIP": cfg.node_ip.to_string(),
        "clusterCIDR": cfg.cluster_cidr.map(|c| c.to_string()),
        "cgroupParent": cfg.cgroup_parent,
        "bridge": cfg.bridge_name,
        "vxlan": cfg.vxlan,
    });
    let path = cfg.data_dir.join(NODE_RECORD);
    kcore_statedir::ensure_dir(&cfg.data_dir, kcore_statedir::PRIVATE_DIR)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let data = serde_json::to_vec_pretty(&v)?;
    kcore_statedir::write(&path, &data, kcore_statedir::PRIVATE_FILE)
        .with_context(|| format!("writing {}", path.display()))
}

/// The node configuration [`save_node_record`] recorded under `data_dir`.
pub fn load_node_record(data_dir: &std::path::Path) -> Result<NodeConfig> {
    let path = data_dir.join(NODE_RECORD);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (did a node run here?)", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let field = |k: &str| {
        v[k].as_str()
            .map(str::to_owned)
            .with_context(|| format!("{} has no {k}", path.display()))
    };
    let mut cfg = NodeConfig::new(
        field("nodeName")?,
        data_dir,
        field("podCIDR")?.parse()?,
        field("nodeIP")?.parse()?,
    );
    cfg.cluster_cidr = v["clusterCIDR"].as_str().map(str::parse).transpose()?;
    cfg.cgroup_parent = field("cgroupParent")?;
    cfg.bridge_name = field("bridge")?;
    cfg.vxlan = v["vxlan"].as_bool().unwrap_or(true);
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sane() {
        let o = AgentOptions::new("/tmp/x");
        assert!(o
            .cluster_cidr
            .contains(&"10.244.7.0/24".parse::<Ipv4Net>().unwrap()));
        assert!(!o.cluster_cidr.contains(&o.service_cidr));
        assert!(!host_name().is_empty());
    }

    #[test]
    fn node_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig::new(
            "n1",
            dir.path(),
            "10.244.3.0/24".parse().unwrap(),
            Ipv4Addr::new(192, 0, 2, 7),
        );
        cfg.cluster_cidr = Some("10.244.0.0/16".parse().unwrap());
        cfg.cgroup_parent = "kcore-x".into();
        cfg.vxlan = false;
        save_node_record(&cfg).unwrap();
        let back = load_node_record(dir.path()).unwrap();
        assert_eq!(back.node_name, "n1");
        assert_eq!(back.pod_cidr, cfg.pod_cidr);
        assert_eq!(back.node_ip, cfg.node_ip);
        assert_eq!(back.cluster_cidr, cfg.cluster_cidr);
        assert_eq!(back.cgroup_parent, "kcore-x");
        assert!(!back.vxlan);
        assert!(load_node_record(&dir.path().join("nope")).is_err());
    }
}
