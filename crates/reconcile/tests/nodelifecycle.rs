//! A node that stops renewing its Lease goes NotReady, is tainted, and its pods are
//! evicted and replaced by their ReplicaSet.

mod common;

use std::time::Duration;

use common::{eventually, start_with, workload, Kubelet};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kcore_reconcile::ControllerManagerConfig;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_node_is_tainted_and_its_pods_replaced() {
    let cfg = ControllerManagerConfig {
        workers: 2,
        controllers: ["replicaset", "nodelifecycle"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        node_monitor_grace_period: Duration::from_secs(2),
        ..ControllerManagerConfig::default()
    };
    let c = start_with(Kubelet::None, cfg).await;
    let node_name = format!("{}-node", c.namespace);
    let nodes: Api<Node> = Api::all(c.client.clone());
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let now = || Timestamp::now().to_string();
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": node_name},
                "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": now()}]},
            }))
            .unwrap(),
        )
        .await
        .expect("node");
    leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": node_name},
                "spec": {"holderIdentity": node_name, "leaseDurationSeconds": 2, "renewTime": now()},
            }))
            .unwrap(),
        )
        .await
        .expect("lease");

    let rss: Api<ReplicaSet> = Api::namespaced(c.client.clone(), &c.namespace);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    rss.create(
        &PostParams::default(),
        &serde_json::from_value(workload("ReplicaSet", "app", 2, "x")).unwrap(),
    )
    .await
    .unwrap();
    let first = eventually(30, "2 pods", || async {
        let l = pods.list(&ListParams::default()).await.ok()?.items;
        (l.len() == 2).then_some(l)
    })
    .await;
    // Bind them to the node, as the scheduler would.
    for p in &first {
        let name = p.metadata.name.clone().unwrap();
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node_name}});
        pods.create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
        .expect("bind");
    }

    // The lease is never renewed: after the grace period the node is lost.
    let n = eventually(30, "node NotReady and tainted", || async {
        let n = nodes.get(&node_name).await.ok()?;
        let ready = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready")?
            .clone();
        let tainted = n
            .spec
            .as_ref()?
            .taints
            .as_ref()?
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute");
        (ready.status == "Unknown" && tainted).then_some(n)
    })
    .await;
    assert_eq!(
        n.status
            .unwrap()
            .conditions
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .reason
            .as_deref(),
        Some("NodeStatusUnknown")
    );
    let old: Vec<String> = first
        .iter()
        .map(|p| p.metadata.uid.clone().unwrap())
        .collect();
    eventually(30, "pods evicted and replaced", || async {
        let l = pods.list(&ListParams::default()).await.ok()?.items;
        let evicted = l
            .iter()
            .filter(|p| old.contains(p.metadata.uid.as_ref().unwrap()))
            .all(|p| p.metadata.deletion_timestamp.is_some());
        let fresh = l
            .iter()
            .filter(|p| {
                !old.contains(p.metadata.uid.as_ref().unwrap())
                    && p.metadata.deletion_timestamp.is_none()
            })
            .count();
        (evicted && fresh == 2).then_some(())
    })
    .await;

    // The node comes back: taints go.
    let mut lease = leases.get(&node_name).await.unwrap();
    lease.spec.as_mut().unwrap().renew_time = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(Timestamp::now()),
    );
    leases
        .replace(&node_name, &PostParams::default(), &lease)
        .await
        .unwrap();
    eventually(30, "taints removed", || async {
        let n = nodes.get(&node_name).await.ok()?;
        let t = n.spec.and_then(|s| s.taints).unwrap_or_default();
        t.iter()
            .all(|t| t.key != "node.kubernetes.io/unreachable")
            .then_some(())
    })
    .await;
    nodes.delete(&node_name, &Default::default()).await.ok();
    leases.delete(&node_name, &Default::default()).await.ok();
}
