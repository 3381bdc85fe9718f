//! LoadBalancer pool mode on the node (MetalLB's L2 speaker): the Services whose
//! pool address the control plane gave this node to announce
//! ([`kcore_k8s::LB_ANNOUNCE_NODE_ANNOTATION`]) have that address put on the node's
//! uplink by a [`kcore_netbridge::L2Announcer`], which answers ARP for it and sends
//! gratuitous ARP when it arrives. The Service rules already DNAT traffic to a
//! load-balancer address, so holding the address is all the node has to do. When the
//! annotation moves to another node (this one was declared lost, or left), this node
//! drops the address and the new one announces it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use kcore_netbridge::L2Announcer;
use tracing::Instrument;

use crate::cache::ClusterCache;
use crate::error::{Error, ErrorChain, Result};

/// The pool addresses `node` announces: the IPv4 ingress addresses of the
/// LoadBalancer Services whose announce annotation names it. Pure.
pub(crate) fn announced_by<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    node: &str,
) -> BTreeSet<Ipv4Addr> {
    services
        .into_iter()
        .filter(|s| {
            s.spec.as_ref().and_then(|p| p.type_.as_deref()) == Some("LoadBalancer")
                && s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(kcore_k8s::LB_ANNOUNCE_NODE_ANNOTATION))
                    .is_some_and(|n| n == node)
        })
        .flat_map(|s| {
            s.status
                .as_ref()
                .and_then(|st| st.load_balancer.as_ref())
                .and_then(|l| l.ingress.clone())
                .unwrap_or_default()
        })
        .filter_map(|i| i.ip?.parse().ok())
        .collect()
}

/// The running announcer: [`Announcing::release`] stops it and gives the addresses up.
pub(crate) struct Announcing {
    task: tokio::task::JoinHandle<()>,
    announcer: Arc<tokio::sync::Mutex<L2Announcer>>,
}

impl Announcing {
    /// Stops announcing and removes the addresses from the uplink, so that a stopped
    /// agent leaves no address behind to answer ARP beside the next owner.
    pub(crate) async fn release(self) {
        self.task.abort();
        let _ = self.task.await;
        let mut a = self.announcer.lock().await;
        if let Err(e) = a.sync(&BTreeSet::new()).await {
            tracing::warn!(error = %ErrorChain(&e), "giving up load-balancer addresses");
        }
    }
}

/// Starts announcing, on the interface that holds `node_ip` in the node's namespace,
/// the pool addresses the cache says this node owns.
pub(crate) async fn start(
    node_ns: Option<&kcore_ns::NetNs>,
    node_ip: Ipv4Addr,
    node_name: String,
    cache: Arc<ClusterCache>,
) -> Result<Announcing> {
    let announcer = L2Announcer::for_address(node_ns, node_ip)
        .await
        .map_err(|e| Error::net("find the node's uplink for load-balancer addresses", e))?;
    let span = tracing::info_span!("lb-announce", iface = announcer.interface());
    let announcer = Arc::new(tokio::sync::Mutex::new(announcer));
    let mut rx = cache.version.subscribe();
    let shared = announcer.clone();
    let task = tokio::spawn(
        async move {
            loop {
                let want = {
                    let svcs = cache.services.read().unwrap_or_else(|p| p.into_inner());
                    announced_by(svcs.values(), &node_name)
                };
                let mut a = shared.lock().await;
                if want != *a.announced() {
                    match a.sync(&want).await {
                        Ok(()) => tracing::info!(addresses = ?want, "load-balancer addresses announced"),
                        Err(e) => tracing::warn!(error = %ErrorChain(&e), "announcing load-balancer addresses"),
                    }
                }
                drop(a);
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
        .instrument(span),
    );
    Ok(Announcing { task, announcer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_this_nodes_load_balancer_addresses() {
        let svc = |name: &str, ty: &str, node: &str, ips: &[&str]| -> Service {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "d",
                    "annotations": {kcore_k8s::LB_ANNOUNCE_NODE_ANNOTATION: node}},
                "spec": {"type": ty},
                "status": {"loadBalancer": {"ingress":
                    ips.iter().map(|i| json!({"ip": i})).collect::<Vec<_>>()}}
            }))
            .unwrap()
        };
        let all = [
            svc("a", "LoadBalancer", "n1", &["192.0.2.100"]),
            svc("b", "LoadBalancer", "n2", &["192.0.2.101"]),
            svc("c", "LoadBalancer", "n1", &["192.0.2.102", "2001:db8::1"]),
            // no longer a LoadBalancer: its stale status is not announced
            svc("d", "ClusterIP", "n1", &["192.0.2.103"]),
        ];
        let got: Vec<String> = announced_by(&all, "n1")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["192.0.2.100", "192.0.2.102"]);
        assert!(announced_by(&all, "n3").is_empty());
    }
}
