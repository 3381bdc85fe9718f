//! Node registration, node status and the Lease heartbeat.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kcore_k8s::status_code;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

use crate::config::NodeConfig;
use crate::error::{Error, Result};

/// Annotation with the node's VTEP MAC address.
pub const ANN_VTEP_MAC: &str = "kcore.dev/vtep-mac";
/// Annotation with the node's underlay (VXLAN endpoint) address.
pub const ANN_PUBLIC_IP: &str = "kcore.dev/public-ip";
/// Namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node's capacity: CPU millicores, memory bytes.
pub(crate) fn host_capacity(cfg: &NodeConfig) -> (u64, u64) {
    let cpus = cfg.cpu_millis.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u64 * 1000)
            .unwrap_or(1000)
    });
    let mem = cfg.memory_bytes.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map(|kb| kb * 1024)
            .unwrap_or(1 << 30)
    });
    (cpus, mem)
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "Linux".into())
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

/// The Node's status, with fresh heartbeat times.
pub(crate) fn node_status(cfg: &NodeConfig, old: Option<&Node>) -> Value {
    let (cpu, mem) = host_capacity(cfg);
    let now = Time(Timestamp::now());
    let now_v = serde_json::to_value(&now).expect("time");
    let old_conds: Vec<Value> = old
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .map(|c| {
            c.iter()
                .map(|x| serde_json::to_value(x).expect("json"))
                .collect()
        })
        .unwrap_or_default();
    let cond = |t: &str, status: &str, reason: &str, message: &str| {
        let since = old_conds
            .iter()
            .find(|c| c["type"] == t && c["status"] == status)
            .map(|c| c["lastTransitionTime"].clone())
            .unwrap_or_else(|| now_v.clone());
        json!({"type": t, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now_v, "lastTransitionTime": since})
    };
    let kernel = read_trim("/proc/sys/kernel/osrelease");
    let machine = read_trim("/etc/machine-id");
    let boot = read_trim("/proc/sys/kernel/random/boot_id");
    let reserved_mem = (mem / 20).min(512 << 20);
    json!({
        "capacity": {"cpu": format!("{}m", cpu), "memory": format!("{}Ki", mem / 1024), "pods": cfg.max_pods.to_string(), "ephemeral-storage": "10Gi"},
        "allocatable": {"cpu": format!("{}m", cpu), "memory": format!("{}Ki", (mem - reserved_mem) / 1024), "pods": cfg.max_pods.to_string(), "ephemeral-storage": "10Gi"},
        "addresses": [
            {"type": "InternalIP", "address": cfg.node_ip.to_string()},
            {"type": "Hostname", "address": cfg.node_name},
        ],
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kcore node agent is posting ready status"),
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.server_addr.port()}},
        "nodeInfo": {
            "architecture": arch(),
            "bootID": boot,
            "containerRuntimeVersion": format!("kcore://{}", env!("CARGO_PKG_VERSION")),
            "kernelVersion": kernel,
            "kubeProxyVersion": kcore_k8s::GIT_VERSION,
            "kubeletVersion": kcore_k8s::GIT_VERSION,
            "machineID": machine,
            "operatingSystem": "linux",
            "osImage": os_image(),
            "systemUUID": machine,
        },
    })
}

/// Creates or updates the Node object (labels, annotations, podCIDR) and its status.
pub(crate) async fn register(
    client: &kube::Client,
    cfg: &NodeConfig,
    annotations: &BTreeMap<String, String>,
) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let mut labels = cfg.node_labels.clone();
    labels.insert("kubernetes.io/hostname".into(), cfg.node_name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), arch().into());
    let name = &cfg.node_name;
    let existing = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("get node {name}"), e))?;
    match &existing {
        None => {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels, "annotations": annotations},
                "spec": {"podCIDR": cfg.pod_cidr.to_string(), "podCIDRs": [cfg.pod_cidr.to_string()]},
            }))
            .expect("node");
            match api.create(&PostParams::default(), &node).await {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(409) => {}
                Err(e) => return Err(Error::kube(format!("create node {name}"), e)),
            }
        }
        Some(n) => {
            let mut patch = json!({"metadata": {"labels": labels, "annotations": annotations}});
            if n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_none() {
                patch["spec"] = json!({"podCIDR": cfg.pod_cidr.to_string(), "podCIDRs": [cfg.pod_cidr.to_string()]});
            }
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| Error::kube(format!("update node {name}"), e))?;
        }
    }
    Ok(())
}

/// Refreshes the node status (heartbeat times, capacity, conditions).
pub(crate) async fn update_status(client: &kube::Client, cfg: &NodeConfig) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let old = api.get_opt(&cfg.node_name).await.ok().flatten();
    let status = node_status(cfg, old.as_ref());
    api.patch_status(
        &cfg.node_name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
    .map_err(|e| Error::kube(format!("update status of node {}", cfg.node_name), e))?;
    Ok(())
}

/// Creates or renews the node's Lease in `kube-node-lease`.
pub(crate) async fn renew_lease(client: &kube::Client, cfg: &NodeConfig) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = serde_json::to_value(MicroTime(Timestamp::now())).expect("time");
    let name = &cfg.node_name;
    let patch = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": cfg.lease_duration.as_secs(), "renewTime": now}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => return Ok(()),
        Err(e) if status_code(&e) == Some(404) => {}
        Err(e) => return Err(Error::kube(format!("renew lease {name}"), e)),
    }
    let nsapi: Api<Namespace> = Api::all(client.clone());
    if nsapi
        .get_opt(LEASE_NAMESPACE)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": LEASE_NAMESPACE}})).expect("ns");
        let _ = nsapi.create(&PostParams::default(), &ns).await;
    }
    // owned by the Node, as the kubelet does, so deleting the Node removes its Lease
    let owner = Api::<Node>::all(client.clone())
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|n| n.metadata.uid)
        .map(|uid| json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]))
        .unwrap_or_else(|| json!([]));
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": LEASE_NAMESPACE,
            "ownerReferences": owner},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": cfg.lease_duration.as_secs(), "renewTime": now, "acquireTime": now},
    }))
    .expect("lease");
    match api.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(409) => Ok(()),
        Err(e) => Err(Error::kube(format!("create lease {name}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn status_is_a_valid_node_status() {
        let mut cfg = NodeConfig::new(
            "n1",
            "/tmp/x",
            "10.244.1.0/24".parse().unwrap(),
            Ipv4Addr::new(192, 0, 2, 1),
        );
        cfg.cpu_millis = Some(2000);
        cfg.memory_bytes = Some(4 << 30);
        let v = node_status(&cfg, None);
        let st: k8s_openapi::api::core::v1::NodeStatus = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(st.capacity.unwrap()["cpu"].0, "2000m");
        assert_eq!(v["addresses"][0]["address"], "192.0.2.1");
        let ready = st
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(
            st.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
            10250
        );
    }
}
