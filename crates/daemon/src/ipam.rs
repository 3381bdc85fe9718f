//! Node IPAM: the control plane hands each Node a pod subnet (`spec.podCIDR`) carved
//! out of the cluster CIDR, the job of kube-controller-manager's node IPAM controller.
//!
//! The control plane is the only writer, so two agents joining at once never get the
//! same subnet. Subnets already on Nodes (assigned earlier, or given by an agent's
//! `--pod-cidr`) are never handed out again; a deleted Node's subnet becomes free.

use std::collections::BTreeSet;
use std::future::Future;

use anyhow::{Context, Result};
use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kcore_node::ErrorChain;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;

/// Carves per-node subnets out of a cluster CIDR.
#[derive(Debug, Clone)]
pub struct SubnetAllocator {
    cluster: Ipv4Net,
    node_prefix: u8,
    used: BTreeSet<Ipv4Net>,
}

impl SubnetAllocator {
    /// An allocator of `/node_prefix` subnets inside `cluster`.
    ///
    /// ```
    /// use kcored::ipam::SubnetAllocator;
    /// let mut a = SubnetAllocator::new("10.244.0.0/16".parse()?, 24)?;
    /// a.mark_used("10.244.0.0/24".parse()?);
    /// assert_eq!(a.allocate(), Some("10.244.1.0/24".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(cluster: Ipv4Net, node_prefix: u8) -> Result<Self> {
        anyhow::ensure!(
            node_prefix >= cluster.prefix_len() && node_prefix <= 30,
            "node subnets /{node_prefix} do not fit the cluster CIDR {cluster}"
        );
        Ok(SubnetAllocator {
            cluster,
            node_prefix,
            used: BTreeSet::new(),
        })
    }

    /// Records a subnet as taken (ignored when it lies outside the cluster CIDR).
    pub fn mark_used(&mut self, net: Ipv4Net) {
        self.used.insert(net);
    }

    /// Forgets every recorded subnet.
    pub fn clear(&mut self) {
        self.used.clear();
    }

    /// The lowest free subnet, now marked as taken; `None` when the range is full.
    pub fn allocate(&mut self) -> Option<Ipv4Net> {
        let free = self
            .cluster
            .subnets(self.node_prefix)
            .ok()?
            .find(|s| !self.used.iter().any(|u| u.contains(s) || s.contains(u)))?;
        self.used.insert(free);
        Some(free)
    }
}

fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()
}

/// Watches Nodes and gives every Node without a pod subnet the lowest free one, until
/// `shutdown` resolves.
#[tracing::instrument(skip_all, fields(cluster_cidr = %allocator.cluster))]
pub async fn run(
    client: kube::Client,
    mut allocator: SubnetAllocator,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let api: Api<Node> = Api::all(client);
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut nodes: std::collections::BTreeMap<String, Node> = Default::default();
    let mut initialising = false;
    let mut assigned: std::collections::BTreeMap<String, Ipv4Net> = Default::default();
    tokio::pin!(shutdown);
    loop {
        let ev = tokio::select! {
            () = &mut shutdown => return Ok(()),
            ev = stream.next() => ev,
        };
        let ev = match ev {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                tracing::warn!(error = %ErrorChain(&e), "node watch");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
            None => anyhow::bail!("the node watch ended"),
        };
        match ev {
            watcher::Event::Init => {
                initialising = true;
                nodes.clear();
            }
            watcher::Event::InitApply(n) | watcher::Event::Apply(n) => {
                nodes.insert(n.metadata.name.clone().unwrap_or_default(), n);
            }
            watcher::Event::Delete(n) => {
                nodes.remove(n.metadata.name.as_deref().unwrap_or_default());
            }
            watcher::Event::InitDone => initialising = false,
        }
        if initialising {
            continue;
        }
        // subnets handed out whose Node update the watch has not shown yet count as
        // taken, and their Nodes are not given another
        assigned.retain(|name, _| nodes.get(name).is_some_and(|n| pod_cidr(n).is_none()));
        allocator.clear();
        nodes
            .values()
            .filter_map(pod_cidr)
            .for_each(|c| allocator.mark_used(c));
        assigned.values().for_each(|c| allocator.mark_used(*c));
        for (name, node) in &nodes {
            if pod_cidr(node).is_some()
                || node.metadata.deletion_timestamp.is_some()
                || assigned.contains_key(name)
            {
                continue;
            }
            let Some(net) = allocator.allocate() else {
                tracing::error!(node = %name, "the cluster CIDR has no free node subnet");
                continue;
            };
            // the resourceVersion makes this a compare-and-swap: a Node that changed
            // meanwhile is retried on its next event
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"podCIDR": net.to_string(), "podCIDRs": [net.to_string()]},
            });
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("assigning {net} to node {name}"))
            {
                Ok(_) => {
                    tracing::info!(node = %name, pod_cidr = %net, "assigned pod subnet");
                    assigned.insert(name.clone(), net);
                }
                Err(e) => tracing::warn!(error = format!("{e:#}"), "node ipam"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_the_lowest_free_subnet_and_skips_overlaps() {
        let mut a = SubnetAllocator::new("10.244.0.0/22".parse().unwrap(), 24).unwrap();
        a.mark_used("10.244.1.0/24".parse().unwrap());
        a.mark_used("10.244.2.128/25".parse().unwrap());
        assert_eq!(a.allocate(), Some("10.244.0.0/24".parse().unwrap()));
        assert_eq!(a.allocate(), Some("10.244.3.0/24".parse().unwrap()));
        assert_eq!(a.allocate(), None);
        assert!(SubnetAllocator::new("10.244.0.0/16".parse().unwrap(), 8).is_err());
    }
}
