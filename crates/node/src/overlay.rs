//! The VXLAN overlay: this node's VTEP, advertised in Node annotations, and one peer
//! per other Node (its podCIDR, VTEP MAC and underlay address).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kcore_ns::NetNs;
use kcore_vxlan::{Overlay, Peer, VxlanConfig};

use crate::cache::ClusterCache;
use crate::config::NodeConfig;
use crate::error::{Error, ErrorChain, Result};
use crate::node::{ANN_PUBLIC_IP, ANN_VTEP_MAC};

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub(crate) fn format_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub(crate) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    parts.try_into().ok()
}

/// The peer a Node describes, if it carries everything needed.
pub(crate) fn peer_of(node: &Node) -> Option<Peer> {
    let cidr = node.spec.as_ref()?.pod_cidr.as_deref()?;
    let subnet: kcore_vxlan::Ipv4Net = cidr.parse().ok()?;
    let ann = node.metadata.annotations.as_ref()?;
    let underlay: Ipv4Addr = ann.get(ANN_PUBLIC_IP)?.parse().ok()?;
    let mut p = Peer::new(subnet, underlay);
    if let Some(mac) = ann.get(ANN_VTEP_MAC).and_then(|m| parse_mac(m)) {
        p.vtep_mac = mac;
    }
    Some(p)
}

fn vxlan_config(node: &NodeConfig) -> VxlanConfig {
    let mut cfg = VxlanConfig::new(node.node_ip);
    cfg.vtep_addr = Some(node.pod_cidr.network());
    cfg
}

/// Removes the node's VXLAN device (with its peers' routes and entries).
pub(crate) async fn teardown(node: &NodeConfig, node_ns: Option<&NetNs>) -> Result<()> {
    let err = |what: &str| {
        let what = what.to_owned();
        move |e| Error::Vxlan {
            what,
            source: Box::new(e),
        }
    };
    Overlay::ensure(node_ns, vxlan_config(node))
        .await
        .map_err(err("open the vxlan device"))?
        .delete()
        .await
        .map_err(err("delete the vxlan device"))
}

/// Sets up the VTEP; returns the Node annotations to publish and the peer task.
pub(crate) async fn start(
    node: &NodeConfig,
    cache: Arc<ClusterCache>,
    node_ns: Option<&NetNs>,
) -> Result<(BTreeMap<String, String>, tokio::task::JoinHandle<()>)> {
    let overlay = Overlay::ensure(node_ns, vxlan_config(node))
        .await
        .map_err(|e| Error::Vxlan {
            what: "create the vxlan device".into(),
            source: Box::new(e),
        })?;
    let mut ann = BTreeMap::new();
    ann.insert(ANN_VTEP_MAC.to_owned(), format_mac(overlay.mac()));
    ann.insert(ANN_PUBLIC_IP.to_owned(), node.node_ip.to_string());
    let mut rx = cache.version.subscribe();
    let me = node.node_name.clone();
    let task = tokio::spawn(async move {
        let mut last: Option<Vec<Peer>> = None;
        loop {
            let mut peers: Vec<Peer> = cache
                .nodes
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .filter(|n| n.metadata.name.as_deref() != Some(me.as_str()))
                .filter_map(peer_of)
                .collect();
            peers.sort();
            if last.as_ref() != Some(&peers) {
                match overlay.reconcile(&peers).await {
                    Ok(_) => last = Some(peers),
                    Err(e) => tracing::warn!(error = %ErrorChain(&e), "vxlan peers"),
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    Ok((ann, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_with_annotations_become_peers() {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "b", "annotations": {ANN_PUBLIC_IP: "192.0.2.2", ANN_VTEP_MAC: "0e:6b:01:02:03:04"}},
            "spec": {"podCIDR": "10.244.2.0/24"}
        }))
        .unwrap();
        let p = peer_of(&n).unwrap();
        assert_eq!(p.underlay, Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(p.vtep_mac, [0x0e, 0x6b, 1, 2, 3, 4]);
        assert_eq!(p.vtep_ip, Ipv4Addr::new(10, 244, 2, 0));
        assert_eq!(format_mac(p.vtep_mac), "0e:6b:01:02:03:04");
        let bare: Node = serde_json::from_value(
            json!({"metadata": {"name": "c"}, "spec": {"podCIDR": "10.244.3.0/24"}}),
        )
        .unwrap();
        assert!(peer_of(&bare).is_none());
    }
}
