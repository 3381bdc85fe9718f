//! The node agent's configuration.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

/// Everything the node agent needs to know about its node.
///
/// [`NodeConfig::new`] fills in the defaults; change the public fields afterwards.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Node object's name.
    pub node_name: String,
    /// State directory: images, layers, containers, pods, logs.
    pub data_dir: PathBuf,
    /// This node's pod subnet (the bridge carries its `.1`).
    pub pod_cidr: Ipv4Net,
    /// The whole cluster's pod network (traffic leaving it is masqueraded).
    pub cluster_cidr: Option<Ipv4Net>,
    /// The Service ClusterIP range.
    pub service_cidr: Option<Ipv4Net>,
    /// The node's address (Node `InternalIP`, VXLAN underlay, `hostIP`).
    pub node_ip: Ipv4Addr,
    /// Name of the pod bridge.
    pub bridge_name: String,
    /// Network namespace the node's networking lives in (bridge, nftables, listeners,
    /// probes); `None` is the agent's own. Tests use it to stay out of the host's.
    pub node_netns: Option<PathBuf>,
    /// Parent cgroup path of the pod cgroups.
    pub cgroup_parent: String,
    /// Where the agent's server (container logs, health) listens.
    pub server_addr: SocketAddr,
    /// HTTPS and client authentication for that server. `None` serves plain HTTP to
    /// anyone who can reach the port: only for tests and embedding behind loopback, as
    /// the API server's `insecure_http`.
    pub server_tls: Option<ServerTls>,
    /// Cluster DNS domain.
    pub cluster_domain: String,
    /// Serve cluster DNS on the bridge gateway (port 53) and point pods at it.
    pub dns: bool,
    /// Resolvers for names outside the cluster domain (default: the node's resolv.conf).
    pub upstream_dns: Vec<SocketAddr>,
    /// Program Services with nftables (kube-proxy's job).
    pub service_proxy: bool,
    /// Join the VXLAN overlay and program peers from the other Nodes.
    pub vxlan: bool,
    /// Serve Ingress on this address (host port 80 in a cluster); `None` disables it.
    pub ingress_addr: Option<SocketAddr>,
    /// Serve Ingress TLS (the certificates of the Ingresses' `spec.tls` Secrets, by
    /// SNI) on this address (host port 443 in a cluster); needs `ingress_addr`.
    pub ingress_tls_addr: Option<SocketAddr>,
    /// Register the Node object (and keep its status and Lease fresh).
    pub register_node: bool,
    /// Labels added to the Node on registration.
    pub node_labels: BTreeMap<String, String>,
    /// Capacity override: CPU in millicores (default: the host's CPUs).
    pub cpu_millis: Option<u64>,
    /// Capacity override: memory in bytes (default: the host's memory).
    pub memory_bytes: Option<u64>,
    /// Maximum pods on the node.
    pub max_pods: u32,
    /// Node status and Lease renewal interval.
    pub heartbeat: Duration,
    /// Lease duration written to the node Lease.
    pub lease_duration: Duration,
    /// First CrashLoopBackOff delay; doubles up to `backoff_max`.
    pub backoff_base: Duration,
    /// Longest CrashLoopBackOff delay.
    pub backoff_max: Duration,
    /// A container log file is rotated when it grows past this many bytes.
    pub log_max_bytes: u64,
    /// Rotated files kept per container (besides the live one).
    pub log_max_files: usize,
    /// How often ConfigMap, Secret and downward API volumes are refreshed.
    pub volume_refresh: Duration,
    /// With `imagePullPolicy: Always` and a local copy, how long a pull may take before
    /// the local copy is used (no registry is reachable from some nodes).
    pub pull_timeout: Duration,
    /// Creates containers in this small server process instead of forking the agent
    /// (see [`kcore_runtime::launcher`]); `None` forks the agent.
    pub launcher: Option<kcore_runtime::Launcher>,
}

/// How the agent's server proves itself and who it lets in (the kubelet's
/// `--tls-cert-file`, `--client-ca-file` and webhook authentication).
///
/// A client proves who it is with a certificate signed by the cluster CA for
/// `clientAuth` (the API server's own, when it proxies `kubectl logs`), or with a bearer
/// token the API server accepts (a TokenReview). Everything else, `/healthz` included,
/// gets 401. Each request is then authorized with a SubjectAccessReview, as the
/// kubelet's (`nodes/proxy`, `nodes/stats`, ...).
#[derive(Clone)]
pub struct ServerTls {
    /// The cluster CA (PEM): client certificates must chain to it, and so must the API
    /// server's that tokens are checked with.
    pub ca_pem: String,
    /// This node's serving certificate and key, signed by the cluster CA for the node's
    /// IP and host name; replacing it ([`kcore_tls::LiveCert::replace`], a renewal) takes
    /// effect at the server's next handshake.
    pub cert: kcore_tls::LiveCert,
    /// The API server requests are authenticated and authorized with
    /// (`https://host:port`), through the agent's own API client; `None` accepts client
    /// certificates only, without authorization.
    pub token_review_url: Option<String>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("token_review_url", &self.token_review_url)
            .finish_non_exhaustive()
    }
}

impl NodeConfig {
    /// A configuration with the defaults: bridge `kcore0`, cgroup parent `kcore`, server
    /// on port 10250 of the node IP, domain `cluster.local`, DNS, Service proxy and VXLAN
    /// on, 110 pods, 10 s heartbeat and 40 s lease, back-off 10 s up to 5 min, logs
    /// rotated at 10 MiB keeping 4 files.
    pub fn new(
        node_name: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        pod_cidr: Ipv4Net,
        node_ip: Ipv4Addr,
    ) -> Self {
        NodeConfig {
            node_name: node_name.into(),
            data_dir: data_dir.into(),
            pod_cidr,
            cluster_cidr: None,
            service_cidr: None,
            node_ip,
            bridge_name: "kcore0".into(),
            node_netns: None,
            cgroup_parent: "kcore".into(),
            server_addr: SocketAddr::new(node_ip.into(), 10250),
            server_tls: None,
            cluster_domain: "cluster.local".into(),
            dns: true,
            upstream_dns: Vec::new(),
            service_proxy: true,
            vxlan: true,
            ingress_addr: None,
            ingress_tls_addr: None,
            register_node: true,
            node_labels: BTreeMap::new(),
            cpu_millis: None,
            memory_bytes: None,
            max_pods: 110,
            heartbeat: Duration::from_secs(10),
            lease_duration: Duration::from_secs(40),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            log_max_bytes: 10 << 20,
            log_max_files: 4,
            volume_refresh: Duration::from_secs(10),
            pull_timeout: Duration::from_secs(2),
            launcher: None,
        }
    }

    /// The pods' gateway: the first address of the pod subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        let net = self.pod_cidr.network();
        if self.pod_cidr.prefix_len() >= 31 {
            net
        } else {
            std::net::Ipv4Addr::from(u32::from(net) + 1)
        }
    }

    /// The nameserver written into pods' resolv.conf when [`NodeConfig::dns`] is on.
    pub fn dns_ip(&self) -> Ipv4Addr {
        self.gateway()
    }

    /// Checks that the configuration can work: a node name, a pod subnet with room for
    /// pods, inside the cluster CIDR when one is given.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::Config(m));
        if self.node_name.is_empty() || self.node_name.len() > 253 {
            return bad(format!(
                "node name {:?} is not a valid object name",
                self.node_name
            ));
        }
        if self.pod_cidr.prefix_len() > 30 {
            return bad(format!("pod CIDR {} has no room for pods", self.pod_cidr));
        }
        if let Some(c) = self.cluster_cidr {
            if !c.contains(&self.pod_cidr) {
                return bad(format!(
                    "pod CIDR {} is outside the cluster CIDR {c}",
                    self.pod_cidr
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn dir(&self, sub: &str) -> PathBuf {
        self.data_dir.join(sub)
    }

    /// The container runtime on this node's state directory, with the launcher.
    pub(crate) fn runtime(&self) -> kcore_runtime::Runtime {
        let rt = kcore_runtime::Runtime::new(self.dir("containers"));
        match &self.launcher {
            Some(l) => rt.with_launcher(l.clone()),
            None => rt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_derive_from_the_pod_cidr() {
        let c = NodeConfig::new(
            "n1",
            "/tmp/x",
            "10.244.3.0/24".parse().unwrap(),
            Ipv4Addr::new(192, 0, 2, 3),
        );
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 244, 3, 1));
        assert_eq!(c.server_addr.port(), 10250);
        assert_eq!(c.dir("pods"), PathBuf::from("/tmp/x/pods"));
        c.validate().unwrap();
        let mut bad = c.clone();
        bad.cluster_cidr = Some("10.0.0.0/16".parse().unwrap());
        assert!(matches!(bad.validate(), Err(crate::Error::Config(_))));
        bad.cluster_cidr = None;
        bad.pod_cidr = "10.244.3.0/31".parse().unwrap();
        assert!(bad.validate().is_err());
    }
}
