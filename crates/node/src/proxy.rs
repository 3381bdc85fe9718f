//! kube-proxy's job: Services and their EndpointSlices become nftables rules through
//! kcore-netbridge's [`ServiceProxy`](kcore_netbridge::ServiceProxy).

use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service as KService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kcore_netbridge::{
    Endpoint, NftConfig, NftNetlink, Protocol, Service, ServiceProxy, SessionAffinity,
};

use crate::cache::ClusterCache;
use crate::config::NodeConfig;
use crate::error::{Error, ErrorChain, Result};

fn protocol(p: Option<&str>) -> Protocol {
    match p {
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        _ => Protocol::Tcp,
    }
}

/// The netbridge Services (one per port) of a Kubernetes Service and its slices, as
/// node `node` programs them (its own endpoints are the local ones).
pub(crate) fn services_of(svc: &KService, slices: &[EndpointSlice], node: &str) -> Vec<Service> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .and_then(|i| i.parse::<Ipv4Addr>().ok())
    else {
        return Vec::new();
    };
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let lb: Vec<Ipv4Addr> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect();
    let affinity = if spec.session_affinity.as_deref() == Some("ClientIP") {
        SessionAffinity::ClientIp {
            timeout_secs: spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(10800) as u32,
        }
    } else {
        SessionAffinity::None
    };
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local")
        && matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let source_ranges = source_ranges(svc);
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let pname = p.name.clone().unwrap_or_default();
        let proto = protocol(p.protocol.as_deref());
        let mut endpoints = Vec::new();
        for s in slices {
            if s.address_type != "IPv4" {
                continue;
            }
            let port = s
                .ports
                .iter()
                .flatten()
                .find(|sp| sp.name.clone().unwrap_or_default() == pname)
                .and_then(|sp| sp.port);
            let Some(port) = port.and_then(|x| u16::try_from(x).ok()) else {
                continue;
            };
            for e in s.endpoints.iter().flatten() {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                let local = e.node_name.as_deref() == Some(node);
                for a in &e.addresses {
                    if let Ok(ip) = a.parse::<Ipv4Addr>() {
                        endpoints.push(Endpoint {
                            addr: std::net::SocketAddrV4::new(ip, port),
                            ready,
                            local,
                        });
                    }
                }
            }
        }
        endpoints.sort();
        endpoints.dedup();
        out.push(Service {
            name: format!("{ns}/{name}:{pname}"),
            protocol: proto,
            cluster_ip: ip,
            port: p.port as u16,
            node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
            load_balancer_ips: lb.clone(),
            affinity,
            external_local,
            source_ranges: source_ranges.clone(),
            endpoints,
        });
    }
    out
}

/// The IPv4 `loadBalancerSourceRanges` of a LoadBalancer Service (the field, else
/// the `service.beta.kubernetes.io/load-balancer-source-ranges` annotation, as
/// upstream reads them); empty for other types.
fn source_ranges(svc: &KService) -> Vec<kcore_netbridge::Ipv4Net> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return Vec::new();
    }
    let annotation = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SOURCE_RANGES_ANNOTATION));
    let listed: Vec<String> = match &spec.load_balancer_source_ranges {
        Some(r) if !r.is_empty() => r.clone(),
        _ => annotation
            .map(|a| a.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
    };
    listed
        .iter()
        .filter_map(|r| r.trim().parse().ok())
        .map(|n: kcore_netbridge::Ipv4Net| n.trunc())
        .collect()
}

/// The annotation upstream reads when `spec.loadBalancerSourceRanges` is empty.
pub(crate) const SOURCE_RANGES_ANNOTATION: &str =
    "service.beta.kubernetes.io/load-balancer-source-ranges";

/// Every Service of the cluster as netbridge Services, as node `node` programs them.
pub(crate) fn desired(cache: &ClusterCache, node: &str) -> Vec<Service> {
    let svcs = cache
        .services
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut out = Vec::new();
    for ((ns, name), svc) in &svcs {
        let slices = cache.slices_of(ns, name);
        out.extend(services_of(svc, &slices, node));
    }
    out
}

/// The node's Service proxy (not yet initialised), programming nf_tables over netlink
/// inside the node's namespace: one transaction per change, no table read-back.
fn proxy(node: &NodeConfig) -> Result<ServiceProxy<NftNetlink>> {
    let runner = match &node.node_netns {
        Some(p) => NftNetlink::in_netns(p),
        None => NftNetlink::new(),
    }
    .map_err(|e| Error::net("open an nf_tables netlink socket", e))?;
    let cfg = NftConfig {
        table: "kcore".into(),
        cluster_cidr: node.cluster_cidr,
        local_pods: Some((node.pod_cidr, node.bridge_name.clone())),
    };
    Ok(ServiceProxy::new(cfg, runner))
}

/// Removes the node's Service rules (the whole kcore table).
pub(crate) fn teardown(node: &NodeConfig) -> Result<()> {
    proxy(node)?
        .teardown()
        .map_err(|e| Error::net("remove the service rules", e))
}

/// Starts syncing nftables from the cache.
pub(crate) fn start(
    node: &NodeConfig,
    cache: Arc<ClusterCache>,
) -> Result<tokio::task::JoinHandle<()>> {
    let mut proxy = proxy(node)?;
    proxy
        .init()
        .map_err(|e| Error::net("initialise nftables", e))?;
    let proxy = Arc::new(std::sync::Mutex::new(proxy));
    let mut rx = cache.version.subscribe();
    let node_name = node.node_name.clone();
    Ok(tokio::spawn(async move {
        loop {
            let want = desired(&cache, &node_name);
            let p = proxy.clone();
            let res = tokio::task::spawn_blocking(move || {
                p.lock().unwrap_or_else(|x| x.into_inner()).sync(&want)
            })
            .await;
            if let Ok(Err(e)) = res {
                tracing::warn!(error = %ErrorChain(&e), "service rules sync failed");
            }
            if rx.changed().await.is_err() {
                return;
            }
            // coalesce bursts of changes
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_ports_pick_endpoints_by_port_name() {
        let svc: KService = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "d"},
            "spec": {"clusterIP": "10.96.0.7", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"}]}
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "d", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": [
                {"addresses": ["10.244.0.5"], "conditions": {"ready": true}},
                {"addresses": ["10.244.0.6"], "conditions": {"ready": false}}]
        }))
        .unwrap();
        let out = services_of(&svc, &[slice], "n1");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].name, "d/web:http");
        assert_eq!(out[0].endpoints.len(), 2);
        assert_eq!(
            out[0].ready_endpoints(),
            vec!["10.244.0.5:8080".parse().unwrap()]
        );
        assert_eq!(out[1].protocol, Protocol::Udp);
        assert_eq!(out[1].endpoints[0].addr.port(), 5353);
        let headless: KService = serde_json::from_value(json!({
            "metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }))
        .unwrap();
        assert!(services_of(&headless, &[], "n1").is_empty());
    }
}
