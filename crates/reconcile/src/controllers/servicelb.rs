//! The node-mode LoadBalancer controller (k3s's ServiceLB): a `type: LoadBalancer`
//! Service without a `loadBalancerClass` gets `status.loadBalancer.ingress` set to the
//! addresses of the cluster's Ready nodes (each node's ExternalIP, else its InternalIP),
//! and every node serves the Service port on its own addresses (the node's Service
//! rules already answer on a Service's load-balancer addresses). Services of another
//! class are left to their controller; a Service that stops being a LoadBalancer has
//! its ingress cleared.

use std::collections::BTreeSet;
use std::net::IpAddr;

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

/// The ingress a Service should have, or `None` when this controller leaves the
/// Service alone (another `loadBalancerClass`, or not a LoadBalancer and nothing to
/// clear). Pure.
pub(crate) fn desired_ingress<'a>(
    svc: &Service,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> Option<Vec<LoadBalancerIngress>> {
    let spec = svc.spec.as_ref()?;
    if spec.load_balancer_class.is_some() {
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
    pub(crate) fn new(client: Client, services: Store<Service>, nodes: Store<Node>) -> Self {
        Self {
            client,
            services,
            nodes,
        }
    }

    pub(crate) fn on_service(
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<Service>) + Send + Sync {
        move |c| queue.add(ObjectKey::of(c.object().as_ref()))
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
            return Ok(Action::Done);
        };
        let nodes = self.nodes.list();
        let Some(want) = desired_ingress(&svc, nodes.iter().map(AsRef::as_ref)) else {
            return Ok(Action::Done);
        };
        let have = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.clone())
            .unwrap_or_default();
        if have == want {
            return Ok(Action::Done);
        }
        let ns = key.namespace.as_deref().unwrap_or("default");
        let patch = json!({"status": {"loadBalancer": {"ingress": want}}});
        Api::<Service>::namespaced(self.client.clone(), ns)
            .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::api("update status of", format!("service {key}")))?;
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
