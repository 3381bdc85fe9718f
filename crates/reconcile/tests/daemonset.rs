//! The DaemonSet controller against an in-process kcore-apiserver.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{eventually, start, Cluster, Kubelet};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kcore_reconcile::CONTROLLER_REVISION_HASH;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

struct Nodes {
    api: Api<Node>,
    names: Vec<String>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        // Nodes are cluster-scoped; the server is per test, but be tidy anyway.
        let api = self.api.clone();
        let names = std::mem::take(&mut self.names);
        tokio::spawn(async move {
            for n in names {
                let _ = api.delete(&n, &Default::default()).await;
            }
        });
    }
}

async fn add_node(c: &Cluster, nodes: &mut Nodes, name: &str, role: &str) -> String {
    let full = format!("{}-{name}", c.namespace);
    nodes
        .api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": full, "labels": {"role": role}}}))
                .unwrap(),
        )
        .await
        .expect("node");
    nodes.names.push(full.clone());
    full
}

/// node -> images of the live pods placed there.
async fn placement(pods: &Api<Pod>) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let node = kcore_reconcile::daemon_pod_node(&p).unwrap_or_default();
        let img = p
            .spec
            .as_ref()
            .and_then(|s| s.containers[0].image.clone())
            .unwrap_or_default();
        m.entry(node).or_default().push(img);
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_per_eligible_node_and_rolling_update() {
    let c = start(
        Kubelet::ReadyAfter(Duration::from_millis(20)),
        &["daemonset"],
    )
    .await;
    let mut nodes = Nodes {
        api: Api::all(c.client.clone()),
        names: Vec::new(),
    };
    let w1 = add_node(&c, &mut nodes, "w1", "worker").await;
    let w2 = add_node(&c, &mut nodes, "w2", "worker").await;
    let _m1 = add_node(&c, &mut nodes, "m1", "master").await;
    let dss: Api<DaemonSet> = Api::namespaced(c.client.clone(), &c.namespace);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"nodeSelector": {"role": "worker"}, "containers": [{"name": "c", "image": "agent:1"}]},
            },
        },
    }))
    .unwrap();
    dss.create(&PostParams::default(), &ds).await.expect("ds");
    let want = |nodes: &[&String], img: &str| -> BTreeMap<String, Vec<String>> {
        nodes
            .iter()
            .map(|n| ((*n).clone(), vec![img.to_owned()]))
            .collect()
    };
    eventually(30, "one pod on each worker", || async {
        (placement(&pods).await == want(&[&w1, &w2], "agent:1")).then_some(())
    })
    .await;

    // A new worker gets a pod; a worker relabelled away loses its pod.
    let w3 = add_node(&c, &mut nodes, "w3", "worker").await;
    eventually(30, "pod on the new worker", || async {
        (placement(&pods).await == want(&[&w1, &w2, &w3], "agent:1")).then_some(())
    })
    .await;
    nodes
        .api
        .patch(
            &w1,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": "gone"}}})),
        )
        .await
        .unwrap();
    eventually(30, "pod removed from the relabelled node", || async {
        (placement(&pods).await == want(&[&w2, &w3], "agent:1")).then_some(())
    })
    .await;
    let s = eventually(30, "status", || async {
        let s = dss.get("agent").await.ok()?.status?;
        (s.number_available == Some(2)
            && s.number_misscheduled == 0
            && s.current_number_scheduled == 2)
            .then_some(s)
    })
    .await;
    assert_eq!(
        (
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_misscheduled
        ),
        (2, 2, 0)
    );

    // Rolling update: every pod replaced, never more than one node without an available pod.
    dss.patch("agent", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}})))
        .await
        .unwrap();
    let min_available = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(i32::MAX));
    let w = want(&[&w2, &w3], "agent:2");
    eventually(60, "all pods updated", || {
        let (dss, pods, w, min) = (
            dss.clone(),
            pods.clone(),
            w.clone(),
            std::sync::Arc::clone(&min_available),
        );
        async move {
            let s = dss.get("agent").await.ok()?.status?;
            min.fetch_min(
                s.number_available.unwrap_or(0),
                std::sync::atomic::Ordering::SeqCst,
            );
            (placement(&pods).await == w
                && s.updated_number_scheduled == Some(2)
                && s.number_available == Some(2))
            .then_some(())
        }
    })
    .await;
    let min_available = min_available.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        min_available >= 1,
        "more than maxUnavailable nodes lost their daemon: {min_available}"
    );
    // One ControllerRevision per template, numbered in order; the pods' hash label names
    // the newest.
    let crs: Api<k8s_openapi::api::apps::v1::ControllerRevision> =
        Api::namespaced(c.client.clone(), &c.namespace);
    let mut revs: Vec<(i64, String, String)> = crs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|cr| {
            (
                cr.revision.unwrap_or(0),
                cr.metadata.name.unwrap_or_default(),
                cr.data.0["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    revs.sort();
    assert_eq!(revs.len(), 2, "{revs:?}");
    assert_eq!((revs[0].0, revs[0].2.as_str()), (1, "agent:1"));
    assert_eq!((revs[1].0, revs[1].2.as_str()), (2, "agent:2"));
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let hash = &p.metadata.labels.as_ref().unwrap()[CONTROLLER_REVISION_HASH];
        assert_eq!(format!("agent-{hash}"), revs[1].1);
    }
}
