//! NetworkPolicy on the node: [`compile_policies`] resolves the cluster's
//! NetworkPolicies, Pods and Namespaces to addresses (a pure function), and [`start`]
//! keeps a [`PolicyFirewall`] in the node's namespace converged to it.
//!
//! Resolution follows upstream: a policy selects the running pods of its namespace that
//! match `podSelector` (host-network pods are never selected); its `policyTypes` default
//! to `Ingress`, plus `Egress` when it has egress rules; a peer's `podSelector` looks in
//! the policy's namespace unless a `namespaceSelector` is given (both given: pods
//! matching the pod selector in the namespaces matching the namespace selector); an
//! `ipBlock` is its CIDR minus its `except` prefixes; a named port is resolved on each
//! destination pod (the selected pod for ingress, the peer for egress) from its
//! containers' ports of that name and protocol.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kcore_k8s::Selector;
use kcore_netbridge::{
    cidr_except, merge_ranges, AddrRange, CompiledPolicy, Ipv4Net, NftNetlink, PolicyFirewall,
    PolicyRule, PolicySet, PortMatch, Protocol,
};

use crate::cache::{watch_into, Store};
use crate::config::NodeConfig;
use crate::error::{Error, ErrorChain, Result};

/// The nftables table the policies live in (family `ip`).
pub const POLICY_TABLE: &str = "kcore-policy";

/// A pod as the compiler sees it.
struct PodView<'a> {
    ns: &'a str,
    ip: Ipv4Addr,
    labels: &'a BTreeMap<String, String>,
    pod: &'a Pod,
}

fn protocol(p: Option<&str>) -> Protocol {
    match p {
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        _ => Protocol::Tcp,
    }
}

/// A selector that matches nothing when it does not compile (validation keeps such
/// selectors out of the API, so this only guards against a bad stored object).
fn compile(sel: &LabelSelector) -> Option<Selector> {
    Selector::compile(sel).ok()
}

fn matches(sel: &Option<Selector>, labels: &BTreeMap<String, String>) -> bool {
    sel.as_ref().is_some_and(|s| s.matches(labels))
}

/// The pods that take part in policy: an IPv4 address, not host network, not finished.
fn pod_views(pods: &[Pod]) -> Vec<PodView<'_>> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    pods.iter()
        .filter_map(|p| {
            let spec = p.spec.as_ref()?;
            if spec.host_network == Some(true) {
                return None;
            }
            let st = p.status.as_ref()?;
            if matches!(st.phase.as_deref(), Some("Succeeded" | "Failed")) {
                return None;
            }
            let ip = st.pod_ip.as_deref()?.parse().ok()?;
            Some(PodView {
                ns: p.metadata.namespace.as_deref().unwrap_or("default"),
                ip,
                labels: p.metadata.labels.as_ref().unwrap_or(&EMPTY),
                pod: p,
            })
        })
        .collect()
}

/// Namespace labels by name, with the `kubernetes.io/metadata.name` label upstream
/// sets on every namespace.
fn namespace_labels(namespaces: &[Namespace]) -> BTreeMap<String, BTreeMap<String, String>> {
    namespaces
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let mut l = n.metadata.labels.clone().unwrap_or_default();
            l.entry("kubernetes.io/metadata.name".into())
                .or_insert_with(|| name.clone());
            Some((name, l))
        })
        .collect()
}

/// The `(address, protocol, port)` of every container port named `name` with
/// `proto` on `pods`.
fn resolve_named<'a>(
    pods: impl Iterator<Item = &'a PodView<'a>>,
    name: &str,
    proto: Protocol,
) -> BTreeSet<(Ipv4Addr, Protocol, u16)> {
    let mut out = BTreeSet::new();
    for p in pods {
        let Some(spec) = p.pod.spec.as_ref() else {
            continue;
        };
        for c in &spec.containers {
            for cp in c.ports.iter().flatten() {
                if cp.name.as_deref() == Some(name) && protocol(cp.protocol.as_deref()) == proto {
                    if let Ok(port) = u16::try_from(cp.container_port) {
                        out.insert((p.ip, proto, port));
                    }
                }
            }
        }
    }
    out
}

struct Ctx<'a> {
    pods: Vec<PodView<'a>>,
    ns_labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl Ctx<'_> {
    /// The addresses a list of peers stands for (`None`: any peer).
    fn peers(&self, ns: &str, peers: Option<&Vec<NetworkPolicyPeer>>) -> Option<Vec<AddrRange>> {
        let peers = peers.filter(|p| !p.is_empty())?;
        let mut out = Vec::new();
        for peer in peers {
            if let Some(b) = &peer.ip_block {
                let Ok(cidr) = b.cidr.parse::<Ipv4Net>() else {
                    continue; // IPv6 blocks: the node programs IPv4 only
                };
                let except: Vec<Ipv4Net> = b
                    .except
                    .iter()
                    .flatten()
                    .filter_map(|e| e.parse().ok())
                    .collect();
                out.extend(cidr_except(cidr.trunc(), &except));
                continue;
            }
            let pod_sel = peer.pod_selector.as_ref().map(compile);
            let ns_sel = peer.namespace_selector.as_ref().map(compile);
            for p in &self.pods {
                let ns_ok = match &ns_sel {
                    None => p.ns == ns,
                    Some(sel) => self.ns_labels.get(p.ns).is_some_and(|l| matches(sel, l)),
                };
                let pod_ok = match &pod_sel {
                    None => true,
                    Some(sel) => matches(sel, p.labels),
                };
                if ns_ok && pod_ok {
                    out.push(AddrRange::single(p.ip));
                }
            }
        }
        Some(merge_ranges(out))
    }

    /// A rule's ports (`None`: any port); named ports are resolved on `targets`.
    fn ports(
        &self,
        ports: Option<&Vec<NetworkPolicyPort>>,
        targets: &[&PodView<'_>],
    ) -> Option<Vec<PortMatch>> {
        let ports = ports.filter(|p| !p.is_empty())?;
        Some(
            ports
                .iter()
                .map(|p| {
                    let proto = protocol(p.protocol.as_deref());
                    match &p.port {
                        None => PortMatch::Protocol(proto),
                        Some(IntOrString::Int(n)) => {
                            let first = u16::try_from(*n).unwrap_or(0);
                            let last = p
                                .end_port
                                .and_then(|e| u16::try_from(e).ok())
                                .unwrap_or(first)
                                .max(first);
                            PortMatch::Ports {
                                protocol: proto,
                                first,
                                last,
                            }
                        }
                        Some(IntOrString::String(name)) => {
                            PortMatch::Named(resolve_named(targets.iter().copied(), name, proto))
                        }
                    }
                })
                .collect(),
        )
    }

    fn policy(&self, np: &NetworkPolicy) -> CompiledPolicy {
        let ns = np.metadata.namespace.as_deref().unwrap_or("default");
        let name = format!("{ns}/{}", np.metadata.name.as_deref().unwrap_or_default());
        let default_spec = NetworkPolicySpec::default();
        let spec = np.spec.as_ref().unwrap_or(&default_spec);
        let sel = spec
            .pod_selector
            .as_ref()
            .map_or_else(|| compile(&LabelSelector::default()), compile);
        let selected: Vec<&PodView<'_>> = self
            .pods
            .iter()
            .filter(|p| p.ns == ns && matches(&sel, p.labels))
            .collect();
        let egress_rules = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        let (ingress_on, egress_on) = match spec.policy_types.as_ref().filter(|t| !t.is_empty()) {
            Some(t) => (
                t.iter().any(|x| x == "Ingress"),
                t.iter().any(|x| x == "Egress"),
            ),
            None => (true, egress_rules),
        };
        let all: Vec<&PodView<'_>> = self.pods.iter().collect();
        let ingress = ingress_on.then(|| {
            spec.ingress
                .iter()
                .flatten()
                .map(|r| PolicyRule {
                    peers: self.peers(ns, r.from.as_ref()),
                    ports: self.ports(r.ports.as_ref(), &selected),
                })
                .collect()
        });
        let egress = egress_on.then(|| {
            spec.egress
                .iter()
                .flatten()
                .map(|r| PolicyRule {
                    peers: self.peers(ns, r.to.as_ref()),
                    ports: self.ports(r.ports.as_ref(), &all),
                })
                .collect()
        });
        CompiledPolicy {
            name,
            pods: selected.iter().map(|p| p.ip).collect(),
            ingress,
            egress,
        }
    }
}

/// Resolves NetworkPolicies over the cluster's pods and namespaces to addresses: what
/// [`PolicyFirewall::apply`] programs. Pure; policies come out ordered by
/// `namespace/name` whatever the input order.
///
/// ```
/// use k8s_openapi::api::networking::v1::NetworkPolicy;
/// let deny: NetworkPolicy = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "deny", "namespace": "d"}, "spec": {"podSelector": {}}}))?;
/// let set = kcore_node::compile_policies(&[deny], &[], &[]);
/// assert_eq!(set.policies[0].ingress, Some(vec![]));
/// assert_eq!(set.policies[0].egress, None);
/// Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn compile_policies(
    policies: &[NetworkPolicy],
    pods: &[Pod],
    namespaces: &[Namespace],
) -> PolicySet {
    let ctx = Ctx {
        pods: pod_views(pods),
        ns_labels: namespace_labels(namespaces),
    };
    let mut out: Vec<CompiledPolicy> = policies.iter().map(|p| ctx.policy(p)).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    PolicySet { policies: out }
}

fn firewall(node: &NodeConfig) -> Result<PolicyFirewall<NftNetlink>> {
    let runner = match &node.node_netns {
        Some(p) => NftNetlink::in_netns(p),
        None => NftNetlink::new(),
    }
    .map_err(|e| Error::net("open an nf_tables netlink socket", e))?;
    Ok(PolicyFirewall::new(POLICY_TABLE, runner))
}

/// Removes the node's policy table.
pub(crate) fn teardown(node: &NodeConfig) -> Result<()> {
    firewall(node)?
        .teardown()
        .map_err(|e| Error::net("remove the network policy rules", e))
}

/// Pods on one bridge only cross the `forward` hook when the bridge hands them to
/// netfilter: turn `bridge-nf-call-iptables` on in the node's namespace.
fn bridge_netfilter(node: &NodeConfig) {
    const KNOB: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    let set = || -> std::io::Result<()> {
        if std::fs::read_to_string(KNOB)?.trim() != "1" {
            std::fs::write(KNOB, "1")?;
        }
        Ok(())
    };
    let res = match &node.node_netns {
        Some(p) => kcore_ns::netns::run_in(p, set)
            .map_err(std::io::Error::other)
            .and_then(|r| r),
        None => set(),
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, "bridge-nf-call-iptables is off: policies do not filter traffic between pods on one bridge");
    }
}

/// Watches NetworkPolicies, Pods and Namespaces and keeps the node's policy table
/// converged; returns the watchers and the sync task.
pub(crate) fn start(
    node: &NodeConfig,
    client: &kube::Client,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    bridge_netfilter(node);
    let mut fw = firewall(node)?;
    // start from an empty table: nothing is isolated until the policies are known
    fw.apply(&PolicySet::default())
        .map_err(|e| Error::net("initialise the network policy table", e))?;
    let (tx, mut rx) = tokio::sync::watch::channel(0u64);
    let tx = Arc::new(tx);
    let pols: Store<NetworkPolicy> = Arc::default();
    let pods: Store<Pod> = Arc::default();
    let nss: Store<Namespace> = Arc::default();
    let bump = |tx: &Arc<tokio::sync::watch::Sender<u64>>| {
        let tx = tx.clone();
        move || tx.send_modify(|v| *v += 1)
    };
    let mut tasks = vec![
        tokio::spawn(watch_into(
            kube::Api::<NetworkPolicy>::all(client.clone()),
            pols.clone(),
            bump(&tx),
        )),
        tokio::spawn(watch_into(
            kube::Api::<Pod>::all(client.clone()),
            pods.clone(),
            bump(&tx),
        )),
        tokio::spawn(watch_into(
            kube::Api::<Namespace>::all(client.clone()),
            nss.clone(),
            bump(&tx),
        )),
    ];
    let fw = Arc::new(std::sync::Mutex::new(fw));
    tasks.push(tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            // coalesce bursts of changes
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let set = compile_policies(&values(&pols), &values(&pods), &values(&nss));
            let fw = fw.clone();
            let res = tokio::task::spawn_blocking(move || {
                fw.lock().unwrap_or_else(|p| p.into_inner()).apply(&set)
            })
            .await;
            if let Ok(Err(e)) = res {
                tracing::warn!(error = %ErrorChain(&e), "network policy sync failed");
            }
        }
    }));
    Ok(tasks)
}

fn values<K: Clone>(s: &Store<K>) -> Vec<K> {
    s.read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, ip: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "podIP": ip}
        }))
        .unwrap()
    }

    fn ns(name: &str, labels: serde_json::Value) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    fn np(ns: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
            .unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn one(s: &str) -> AddrRange {
        AddrRange::single(ip(s))
    }

    fn cluster() -> (Vec<Pod>, Vec<Namespace>) {
        let mut host = pod("a", "host", "192.0.2.1", json!({"app": "web"}));
        host.spec.as_mut().unwrap().host_network = Some(true);
        let mut done = pod("a", "done", "10.0.0.9", json!({"app": "web"}));
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        (
            vec![
                pod("a", "web", "10.0.0.1", json!({"app": "web"})),
                pod("a", "client", "10.0.0.2", json!({"role": "client"})),
                pod("a", "other", "10.0.0.3", json!({})),
                pod("b", "client", "10.0.0.4", json!({"role": "client"})),
                pod("c", "client", "10.0.0.5", json!({"role": "client"})),
                host,
                done,
            ],
            vec![
                ns("a", json!({})),
                ns("b", json!({"team": "x"})),
                ns("c", json!({})),
            ],
        )
    }

    #[test]
    fn compile_table() {
        let (pods, nss) = cluster();
        struct Case {
            what: &'static str,
            spec: serde_json::Value,
            pods: Vec<&'static str>,
            ingress: Option<Vec<PolicyRule>>,
            egress: Option<Vec<PolicyRule>>,
        }
        let tcp = |first, last| PortMatch::Ports {
            protocol: Protocol::Tcp,
            first,
            last,
        };
        let cases = vec![
            Case {
                what: "empty selector denies ingress to every running pod of the namespace",
                spec: json!({"podSelector": {}}),
                pods: vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                ingress: Some(vec![]),
                egress: None,
            },
            Case {
                what: "egress rules default the Egress type on",
                spec: json!({"podSelector": {"matchLabels": {"app": "web"}}, "egress": [{}]}),
                pods: vec!["10.0.0.1"],
                ingress: Some(vec![]),
                egress: Some(vec![PolicyRule::default()]),
            },
            Case {
                what: "explicit Egress only",
                spec: json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"]}),
                pods: vec!["10.0.0.1"],
                ingress: None,
                egress: Some(vec![]),
            },
            Case {
                what: "podSelector peers stay in the policy's namespace",
                spec: json!({"podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}),
                pods: vec!["10.0.0.1"],
                ingress: Some(vec![PolicyRule {
                    peers: Some(vec![one("10.0.0.2")]),
                    ports: None,
                }]),
                egress: None,
            },
            Case {
                what: "namespaceSelector alone: every pod of the matching namespaces",
                spec: json!({"podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "x"}}}]}]}),
                pods: vec!["10.0.0.1"],
                ingress: Some(vec![PolicyRule {
                    peers: Some(vec![one("10.0.0.4")]),
                    ports: None,
                }]),
                egress: None,
            },
            Case {
                what:
                    "both selectors: matching pods in matching namespaces, by metadata.name label",
                spec: json!({"podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["a", "c"]}]},
                        "podSelector": {"matchLabels": {"role": "client"}}}]}]}),
                pods: vec!["10.0.0.1"],
                ingress: Some(vec![PolicyRule {
                    peers: Some(vec![one("10.0.0.2"), one("10.0.0.5")]),
                    ports: None,
                }]),
                egress: None,
            },
            Case {
                what:
                    "ipBlock with except, merged with pods; ports with ranges, protocols and names",
                spec: json!({"podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/29", "except": ["10.0.0.4/30"]}},
                                          {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}],
                                 "ports": [{"port": 80, "protocol": "TCP"}, {"port": 8000, "endPort": 8100, "protocol": "TCP"},
                                           {"protocol": "UDP"}, {"port": "http", "protocol": "TCP"}, {"port": "dns", "protocol": "UDP"},
                                           {"port": "nope", "protocol": "TCP"}]}]}),
                pods: vec!["10.0.0.1"],
                ingress: Some(vec![PolicyRule {
                    // 10.0.0.0-3 from the block, 10.0.0.4 and .5 from the pods
                    peers: Some(vec![AddrRange {
                        first: ip("10.0.0.0"),
                        last: ip("10.0.0.5"),
                    }]),
                    ports: Some(vec![
                        tcp(80, 80),
                        tcp(8000, 8100),
                        PortMatch::Protocol(Protocol::Udp),
                        PortMatch::Named([(ip("10.0.0.1"), Protocol::Tcp, 8080)].into()),
                        PortMatch::Named([(ip("10.0.0.1"), Protocol::Udp, 5353)].into()),
                        PortMatch::Named(BTreeSet::new()),
                    ]),
                }]),
                egress: None,
            },
            Case {
                what: "egress named ports resolve on the destination pods",
                spec: json!({"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
                    "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http", "protocol": "TCP"}]}]}),
                pods: vec!["10.0.0.2"],
                ingress: None,
                egress: Some(vec![PolicyRule {
                    peers: Some(vec![one("10.0.0.1")]),
                    ports: Some(vec![PortMatch::Named(
                        ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
                            .iter()
                            .map(|a| (ip(a), Protocol::Tcp, 8080))
                            .collect(),
                    )]),
                }]),
            },
            Case {
                what: "a peer that selects nothing is an empty list, not any peer",
                spec: json!({"podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "ghost"}}}]}]}),
                pods: vec!["10.0.0.1"],
                ingress: Some(vec![PolicyRule {
                    peers: Some(vec![]),
                    ports: None,
                }]),
                egress: None,
            },
        ];
        for c in cases {
            let set = compile_policies(&[np("a", "p", c.spec.clone())], &pods, &nss);
            let got = &set.policies[0];
            let want_pods: BTreeSet<Ipv4Addr> = c.pods.iter().map(|p| ip(p)).collect();
            assert_eq!(got.pods, want_pods, "{}", c.what);
            assert_eq!(got.ingress, c.ingress, "{}", c.what);
            assert_eq!(got.egress, c.egress, "{}", c.what);
        }
    }

    #[test]
    fn policies_come_out_sorted_whatever_the_input_order() {
        let (pods, nss) = cluster();
        let set = compile_policies(
            &[
                np("b", "z", json!({"podSelector": {}})),
                np("a", "y", json!({"podSelector": {}})),
            ],
            &pods,
            &nss,
        );
        let names: Vec<&str> = set.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a/y", "b/z"]);
        assert_eq!(set.policies[1].pods, [ip("10.0.0.4")].into());
    }
}
