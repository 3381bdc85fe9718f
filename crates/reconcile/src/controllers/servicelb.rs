//! The node-mode LoadBalancer controller (k3s's ServiceLB): a `type: LoadBalancer`
//! Service without a `loadBalancerClass` gets `status.loadBalancer.ingress` set to the
//! addresses of the cluster's Ready nodes (each node's ExternalIP, else its InternalIP),
//! and every node serves the Service port on its own addresses (the node's Service
//! rules already answer on a Service's load-balancer addresses). Services of another
//! class are left to their controller; a Service that stops being a LoadBalancer has
//! its ingress cleared.
//!
//! Every node serves a node-mode Service's ports on its own addresses, so two such
//! Services cannot share a port and protocol. As with k3s's ServiceLB (whose per-port
//! host-port pods stay Pending), the Service that came second stays `<pending>`, with
//! no ingress, and a Warning event says which Service holds the port; it gets its
//! addresses when that Service goes away or frees the port.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;

use crate::cache::{Change, Store};
use crate::error::Error;
use crate::meta::ObjectKey;
use crate::queue::WorkQueue;
use crate::runner::{Action, Reconciler};

/// The node-mode LoadBalancer controller.
pub(crate) struct ServiceLbController {
    client: Client,
    services: Store<Service>,
    nodes: Store<Node>,
    /// (Service, holder of its port) pairs already reported by an event.
    warned: std::sync::Mutex<BTreeSet<(String, String)>>,
    /// Pool mode: load-balancer addresses (inclusive ranges); empty for node mode.
    pool: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Pool mode: the address each Service was given, by `namespace/name`. Workers
    /// reconcile Services in parallel from a cache that lags their own writes, so
    /// allocation goes through this map (as MetalLB's allocator does), not the cache.
    allocated: std::sync::Mutex<std::collections::BTreeMap<String, Ipv4Addr>>,
}

/// A reference to a Service for an event.
fn object_ref(svc: &Service) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: svc.metadata.name.clone(),
        namespace: svc.metadata.namespace.clone(),
        uid: svc.metadata.uid.clone(),
        resource_version: svc.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// Whether the node's `Ready` condition is `True`.
fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The address a node serves load-balanced traffic on: its ExternalIP, else its
/// InternalIP.
fn node_address(node: &Node) -> Option<IpAddr> {
    let addrs = node.status.as_ref()?.addresses.as_ref()?;
    ["ExternalIP", "InternalIP"].iter().find_map(|ty| {
        addrs
            .iter()
            .filter(|a| a.type_ == *ty)
            .find_map(|a| a.address.parse().ok())
    })
}

/// The annotation naming the node that announces a pool address (pool mode).
pub const ANNOUNCE_NODE_ANNOTATION: &str = kcore_k8s::LB_ANNOUNCE_NODE_ANNOTATION;

/// Why a Service gets no pool address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PoolMiss {
    /// `spec.loadBalancerIP` is outside the pool.
    NotInPool(Ipv4Addr),
    /// `spec.loadBalancerIP` is held by another Service.
    InUse(Ipv4Addr),
    /// Every address of the pool is held.
    Exhausted,
}

/// The pool address a Service holds (MetalLB-style allocation, pure): the address it
/// already has when still in the pool and not held by another; else the requested
/// `spec.loadBalancerIP` when in the pool and free; else the first free address.
/// `pool` is inclusive ranges; `taken` the addresses other Services hold.
pub(crate) fn pool_address(
    svc: &Service,
    pool: &[(Ipv4Addr, Ipv4Addr)],
    taken: &BTreeSet<Ipv4Addr>,
) -> Result<Ipv4Addr, PoolMiss> {
    let in_pool = |ip: Ipv4Addr| pool.iter().any(|(a, b)| *a <= ip && ip <= *b);
    let requested: Option<Ipv4Addr> = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    let current = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok())
        .find(|ip| in_pool(*ip) && !taken.contains(ip) && requested.is_none_or(|r| r == *ip));
    if let Some(ip) = current {
        return Ok(ip);
    }
    if let Some(r) = requested {
        return if !in_pool(r) {
            Err(PoolMiss::NotInPool(r))
        } else if taken.contains(&r) {
            Err(PoolMiss::InUse(r))
        } else {
            Ok(r)
        };
    }
    pool.iter()
        .flat_map(|(a, b)| u32::from(*a)..=u32::from(*b))
        .map(Ipv4Addr::from)
        .find(|ip| !taken.contains(ip))
        .ok_or(PoolMiss::Exhausted)
}

/// The node that announces `address` among the Ready `nodes` (rendezvous hashing: when
/// a node goes, only its addresses move, each to the next node in its own order). The
/// hash is SipHash with fixed keys: every instance of one build picks the same node.
pub(crate) fn announcer<'a>(
    address: Ipv4Addr,
    nodes: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    use std::hash::{Hash, Hasher};
    nodes.into_iter().max_by_key(|n| {
        // a fixed-key hasher: every controller instance picks the same node
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (n, address).hash(&mut h);
        (h.finish(), *n)
    })
}

/// The `spec.loadBalancerClass` that asks for node mode (every node's addresses) even
/// when a pool is configured, so pool and node-mode Services can live side by side, as
/// KEP-1959's classes let two implementations do.
pub const NODE_LB_CLASS: &str = "kcore.dev/node";

/// How this controller serves a LoadBalancer Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// An address of the pool, announced by one node.
    Pool,
    /// The nodes' own addresses.
    Nodes,
}

/// How `svc` is served, or `None` when it is not a LoadBalancer of ours: without a
/// class it takes the pool when there is one (`has_pool`), else the nodes' addresses;
/// with [`NODE_LB_CLASS`], the nodes' addresses. Pure.
pub(crate) fn mode(svc: &Service, has_pool: bool) -> Option<Mode> {
    let s = svc.spec.as_ref()?;
    if s.type_.as_deref() != Some("LoadBalancer") {
        return None;
    }
    match s.load_balancer_class.as_deref() {
        None if has_pool => Some(Mode::Pool),
        None => Some(Mode::Nodes),
        Some(NODE_LB_CLASS) => Some(Mode::Nodes),
        Some(_) => None,
    }
}

/// Whether this controller serves `svc` in either mode.
fn node_mode(svc: &Service) -> bool {
    mode(svc, false).is_some()
}

/// The `(protocol, port)` pairs a Service's ports take on every node.
fn taken_ports(svc: &Service) -> BTreeSet<(String, i32)> {
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.port))
        .collect()
}

/// Which Service came first: creation time, then namespace and name.
fn age_key(svc: &Service) -> (Option<k8s_openapi::jiff::Timestamp>, String, String) {
    (
        svc.metadata.creation_timestamp.as_ref().map(|t| t.0),
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// The first port of `svc` an older node-mode LoadBalancer already holds, with that
/// Service: `(protocol, port, namespace/name)`; `has_pool` says whether Services
/// without a class take pool addresses instead. Pure.
pub(crate) fn port_conflict<'a>(
    svc: &Service,
    others: impl IntoIterator<Item = &'a Service>,
    has_pool: bool,
) -> Option<(String, i32, String)> {
    let on_nodes = |s: &Service| mode(s, has_pool) == Some(Mode::Nodes);
    if !on_nodes(svc) {
        return None;
    }
    let mine = taken_ports(svc);
    let me = age_key(svc);
    let mut holders: Vec<&Service> = others
        .into_iter()
        .filter(|o| on_nodes(o) && age_key(o) < me)
        .collect();
    holders.sort_by_key(|o| age_key(o));
    holders.iter().find_map(|o| {
        let (_, ns, name) = age_key(o);
        taken_ports(o)
            .intersection(&mine)
            .next()
            .map(|(proto, port)| (proto.clone(), *port, format!("{ns}/{name}")))
    })
}

/// The ingress a Service should have, or `None` when this controller leaves the
/// Service alone (another `loadBalancerClass`, or not a LoadBalancer and nothing to
/// clear). Pure.
pub(crate) fn desired_ingress<'a>(
    svc: &Service,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> Option<Vec<LoadBalancerIngress>> {
    let spec = svc.spec.as_ref()?;
    if spec
        .load_balancer_class
        .as_deref()
        .is_some_and(|c| c != NODE_LB_CLASS)
    {
        return None;
    }
    if spec.type_.as_deref() != Some("LoadBalancer") {
        let has = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .is_some_and(|i| !i.is_empty());
        return has.then(Vec::new);
    }
    let ips: BTreeSet<IpAddr> = nodes
        .into_iter()
        .filter(|n| ready(n))
        .filter_map(node_address)
        .collect();
    Some(
        ips.into_iter()
            .map(|ip| LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ip_mode: Some("VIP".into()),
                ..LoadBalancerIngress::default()
            })
            .collect(),
    )
}

impl ServiceLbController {
    pub(crate) fn new(
        client: Client,
        services: Store<Service>,
        nodes: Store<Node>,
        pool: Vec<(Ipv4Addr, Ipv4Addr)>,
    ) -> Self {
        Self {
            client,
            services,
            nodes,
            warned: std::sync::Mutex::default(),
            pool,
            allocated: std::sync::Mutex::default(),
        }
    }

    /// A Service change queues it and every node-mode LoadBalancer sharing one of its
    /// ports (a Service that frees a port lets the one waiting for it in).
    pub(crate) fn on_service(
        &self,
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<Service>) + Send + Sync {
        let services = self.services.clone();
        move |c| {
            let svc = c.object();
            queue.add(ObjectKey::of(svc.as_ref()));
            let ports = taken_ports(svc);
            if ports.is_empty() {
                return;
            }
            for s in services
                .filter(|s| node_mode(s) && taken_ports(s).intersection(&ports).next().is_some())
            {
                queue.add(ObjectKey::of(s.as_ref()));
            }
        }
    }

    /// A node change (joined, left, Ready flipped, address changed) re-queues every
    /// LoadBalancer Service.
    pub(crate) fn on_node(
        &self,
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<Node>) + Send + Sync {
        let services = self.services.clone();
        move |_| {
            for s in services.filter(|s| {
                s.spec.as_ref().and_then(|p| p.type_.as_deref()) == Some("LoadBalancer")
            }) {
                queue.add(ObjectKey::of(s.as_ref()));
            }
        }
    }
}

impl Reconciler for ServiceLbController {
    fn name(&self) -> &'static str {
        "servicelb"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(svc) = self.services.get(key) else {
            self.release(key);
            return Ok(Action::Done);
        };
        let has_pool = !self.pool.is_empty();
        let how = mode(&svc, has_pool);
        if how != Some(Mode::Pool) {
            self.release(key);
        }
        let nodes = self.nodes.list();
        let Some(mut want) = desired_ingress(&svc, nodes.iter().map(AsRef::as_ref)) else {
            return Ok(Action::Done);
        };
        let others = self.services.list();
        if how == Some(Mode::Pool) {
            return self.reconcile_pool(key, &svc, &nodes, &others).await;
        }
        let conflict = port_conflict(&svc, others.iter().map(AsRef::as_ref), has_pool);
        if conflict.is_some() {
            want.clear();
        }
        let have = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.clone())
            .unwrap_or_default();
        let ns = key.namespace.as_deref().unwrap_or("default");
        if let Some((proto, port, holder)) = &conflict {
            // one event per Service and holder, as long as the conflict lasts
            let first = self
                .warned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((key.to_string(), holder.clone()));
            if first {
                let message = format!(
                    "Error syncing load balancer: port {port}/{proto} is already served on the nodes by LoadBalancer Service {holder}"
                );
                super::job::record_event(
                    &self.client,
                    "service-lb-controller",
                    object_ref(&svc),
                    "Warning",
                    "SyncLoadBalancerFailed",
                    &message,
                )
                .await;
            }
        } else {
            self.warned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(k, _)| *k != key.to_string());
        }
        if have == want {
            return Ok(Action::Done);
        }
        let patch = json!({"status": {"loadBalancer": {"ingress": want}}});
        Api::<Service>::namespaced(self.client.clone(), ns)
            .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::api("update status of", format!("service {key}")))?;
        Ok(Action::Done)
    }
}

impl ServiceLbController {
    /// Forgets the pool address of a Service that is gone or no longer ours.
    fn release(&self, key: &ObjectKey) {
        self.allocated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key.to_string());
    }

    /// Pool mode: one address from the pool in the ingress, and the Ready node that
    /// announces it in the [`ANNOUNCE_NODE_ANNOTATION`] annotation.
    async fn reconcile_pool(
        &self,
        key: &ObjectKey,
        svc: &Service,
        nodes: &[std::sync::Arc<Node>],
        others: &[std::sync::Arc<Service>],
    ) -> Result<Action, Error> {
        let taken: BTreeSet<Ipv4Addr> = others
            .iter()
            .filter(|o| ObjectKey::of(o.as_ref()) != *key && mode(o, true) == Some(Mode::Pool))
            .flat_map(|o| {
                o.status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|l| l.ingress.clone())
                    .unwrap_or_default()
            })
            .filter_map(|i| i.ip?.parse().ok())
            .collect();
        let ns = key.namespace.as_deref().unwrap_or("default");
        let api = Api::<Service>::namespaced(self.client.clone(), ns);
        let picked = {
            let mut allocated = self.allocated.lock().unwrap_or_else(|p| p.into_inner());
            let me = key.to_string();
            let mut taken = taken;
            taken.extend(
                allocated
                    .iter()
                    .filter(|(k, _)| **k != me)
                    .map(|(_, ip)| *ip),
            );
            let picked = pool_address(svc, &self.pool, &taken);
            match &picked {
                Ok(ip) => allocated.insert(me, *ip),
                Err(_) => allocated.remove(&me),
            };
            picked
        };
        let (ingress, node) = match picked {
            Ok(ip) => {
                let ready: Vec<&str> = nodes
                    .iter()
                    .filter(|n| ready(n))
                    .filter_map(|n| n.metadata.name.as_deref())
                    .collect();
                let ing = LoadBalancerIngress {
                    ip: Some(ip.to_string()),
                    ip_mode: Some("VIP".into()),
                    ..LoadBalancerIngress::default()
                };
                (vec![ing], announcer(ip, ready).map(str::to_owned))
            }
            Err(miss) => {
                let why = match miss {
                    PoolMiss::NotInPool(ip) => format!("requested address {ip} is not in the pool"),
                    PoolMiss::InUse(ip) => format!("requested address {ip} is in use"),
                    PoolMiss::Exhausted => "no address left in the pool".to_owned(),
                };
                if self
                    .warned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((key.to_string(), why.clone()))
                {
                    super::job::record_event(
                        &self.client,
                        "service-lb-controller",
                        object_ref(svc),
                        "Warning",
                        "AllocationFailed",
                        &format!("Failed to allocate IP for \"{key}\": {why}"),
                    )
                    .await;
                }
                (Vec::new(), None)
            }
        };
        let have_node = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOUNCE_NODE_ANNOTATION))
            .cloned();
        if have_node != node {
            let patch = json!({"metadata": {"annotations": {ANNOUNCE_NODE_ANNOTATION: node}}});
            api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api("annotate", format!("service {key}")))?;
        }
        let have = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.clone())
            .unwrap_or_default();
        if have != ingress {
            let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
            api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api("update status of", format!("service {key}")))?;
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: bool, addrs: &[(&str, &str)]) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "addresses": addrs.iter().map(|(t, a)| json!({"type": t, "address": a})).collect::<Vec<_>>()
            }
        }))
        .unwrap()
    }

    fn svc(spec: serde_json::Value, status: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "s", "namespace": "d"},
            "spec": spec, "status": status}))
        .unwrap()
    }

    fn ips(v: &Option<Vec<LoadBalancerIngress>>) -> Option<Vec<String>> {
        v.as_ref()
            .map(|v| v.iter().filter_map(|i| i.ip.clone()).collect())
    }

    #[test]
    fn pool_allocation_and_announcer() {
        let pool = [
            (Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 101)),
            (
                Ipv4Addr::new(198, 51, 100, 7),
                Ipv4Addr::new(198, 51, 100, 7),
            ),
        ];
        let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
        let none = BTreeSet::new();
        let plain = svc(json!({"type": "LoadBalancer"}), json!({}));
        assert_eq!(pool_address(&plain, &pool, &none), Ok(ip("192.0.2.100")));
        let taken: BTreeSet<_> = [ip("192.0.2.100"), ip("192.0.2.101")].into();
        assert_eq!(pool_address(&plain, &pool, &taken), Ok(ip("198.51.100.7")));
        let all: BTreeSet<_> = taken.iter().copied().chain([ip("198.51.100.7")]).collect();
        assert_eq!(pool_address(&plain, &pool, &all), Err(PoolMiss::Exhausted));
        // an address held stays
        let holding = svc(
            json!({"type": "LoadBalancer"}),
            json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.101"}]}}),
        );
        assert_eq!(pool_address(&holding, &pool, &none), Ok(ip("192.0.2.101")));
        // spec.loadBalancerIP is honoured, or the Service waits
        let asks = |a: &str| {
            svc(
                json!({"type": "LoadBalancer", "loadBalancerIP": a}),
                json!({}),
            )
        };
        assert_eq!(
            pool_address(&asks("192.0.2.101"), &pool, &none),
            Ok(ip("192.0.2.101"))
        );
        assert_eq!(
            pool_address(&asks("10.0.0.1"), &pool, &none),
            Err(PoolMiss::NotInPool(ip("10.0.0.1")))
        );
        assert_eq!(
            pool_address(&asks("192.0.2.100"), &pool, &taken),
            Err(PoolMiss::InUse(ip("192.0.2.100")))
        );
        // the announcer: stable, and only a lost node's addresses move
        let nodes = ["a", "b", "c"];
        let addrs: Vec<Ipv4Addr> = (1..=60).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
        let before: Vec<&str> = addrs
            .iter()
            .map(|a| announcer(*a, nodes).unwrap())
            .collect();
        assert!(
            nodes.iter().all(|n| before.contains(n)),
            "spread over every node"
        );
        for (a, was) in addrs.iter().zip(&before) {
            let now = announcer(*a, ["a", "c"]).unwrap();
            if *was != "b" {
                assert_eq!(now, *was, "{a} stays on {was}");
            }
        }
        assert_eq!(announcer(addrs[0], std::iter::empty()), None);
    }

    #[test]
    fn the_second_service_on_a_port_waits() {
        let at = |name: &str, t: &str, spec: serde_json::Value| -> Service {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d",
                "creationTimestamp": t}, "spec": spec}))
            .unwrap()
        };
        let lb = |ports: serde_json::Value| json!({"type": "LoadBalancer", "ports": ports});
        let first = at("first", "2026-01-01T00:00:00Z", lb(json!([{"port": 80}])));
        let second = at(
            "second",
            "2026-01-01T00:00:05Z",
            lb(json!([{"port": 443}, {"port": 80, "protocol": "TCP"}])),
        );
        let udp = at(
            "udp",
            "2026-01-01T00:00:06Z",
            lb(json!([{"port": 80, "protocol": "UDP"}])),
        );
        let classed = at(
            "classed",
            "2026-01-01T00:00:07Z",
            json!({"type": "LoadBalancer", "loadBalancerClass": "x.io/lb", "ports": [{"port": 80}]}),
        );
        let all = [first.clone(), second.clone(), udp.clone(), classed.clone()];
        assert_eq!(port_conflict(&first, all.iter(), false), None);
        assert_eq!(
            port_conflict(&second, all.iter(), false),
            Some(("TCP".into(), 80, "d/first".into()))
        );
        assert_eq!(
            port_conflict(&udp, all.iter(), false),
            None,
            "another protocol"
        );
        assert_eq!(
            port_conflict(&classed, all.iter(), false),
            None,
            "another class"
        );
        // the first goes away: the second gets the port
        assert_eq!(port_conflict(&second, all[1..].iter(), false), None);
        // with a pool, Services without a class take pool addresses, not the nodes'
        // ports; one asking for node mode by class holds them
        assert_eq!(port_conflict(&second, all.iter(), true), None);
        let node_class = |name: &str, t: &str| {
            at(
                name,
                t,
                json!({"type": "LoadBalancer", "loadBalancerClass": NODE_LB_CLASS,
                    "ports": [{"port": 80}]}),
            )
        };
        let (n1, n2) = (
            node_class("n1", "2026-01-01T00:00:08Z"),
            node_class("n2", "2026-01-01T00:00:09Z"),
        );
        let with_nodes = [first.clone(), n1.clone(), n2.clone()];
        assert_eq!(port_conflict(&n1, with_nodes.iter(), true), None);
        assert_eq!(
            port_conflict(&n2, with_nodes.iter(), true),
            Some(("TCP".into(), 80, "d/n1".into()))
        );
        assert_eq!(mode(&first, true), Some(Mode::Pool));
        assert_eq!(mode(&first, false), Some(Mode::Nodes));
        assert_eq!(mode(&n1, true), Some(Mode::Nodes));
        assert_eq!(mode(&classed, true), None);
    }

    #[test]
    fn ingress_table() {
        let nodes = [
            node("a", true, &[("InternalIP", "10.0.0.2"), ("Hostname", "a")]),
            node(
                "b",
                true,
                &[("InternalIP", "10.0.0.3"), ("ExternalIP", "192.0.2.3")],
            ),
            node("c", false, &[("InternalIP", "10.0.0.4")]),
            node("d", true, &[("Hostname", "d")]),
        ];
        let lb = json!({"type": "LoadBalancer", "ports": [{"port": 80}]});
        let cases: Vec<(&str, Service, Option<Vec<&str>>)> = vec![
            (
                "Ready nodes, ExternalIP first, sorted",
                svc(lb.clone(), json!({})),
                Some(vec!["10.0.0.2", "192.0.2.3"]),
            ),
            (
                "node mode asked for by class",
                svc(
                    json!({"type": "LoadBalancer", "loadBalancerClass": NODE_LB_CLASS}),
                    json!({}),
                ),
                Some(vec!["10.0.0.2", "192.0.2.3"]),
            ),
            (
                "another class is left alone",
                svc(
                    json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}),
                    json!({}),
                ),
                None,
            ),
            (
                "a ClusterIP Service with nothing to clear",
                svc(json!({"type": "ClusterIP"}), json!({})),
                None,
            ),
            (
                "no longer a LoadBalancer: cleared",
                svc(
                    json!({"type": "ClusterIP"}),
                    json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.2"}]}}),
                ),
                Some(vec![]),
            ),
        ];
        for (what, s, want) in cases {
            let got = desired_ingress(&s, nodes.iter());
            let want = want.map(|w| w.into_iter().map(String::from).collect());
            assert_eq!(ips(&got), want, "{what}");
        }
        let got = desired_ingress(&svc(lb, json!({})), nodes.iter()).unwrap();
        assert_eq!(got[0].ip_mode.as_deref(), Some("VIP"));
        // no Ready node: pending (empty ingress)
        let none: [Node; 0] = [];
        assert_eq!(
            desired_ingress(
                &svc(json!({"type": "LoadBalancer"}), json!({})),
                none.iter()
            ),
            Some(vec![])
        );
    }
}
