//! The ReplicaSet controller on kcore's test fixture (real API server, scheduler,
//! simulated nodes).

mod common;

use std::time::Duration;

use common::{eventually, simulated, workload};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn owned_pods(api: &Api<Pod>, rs_uid: &str) -> Vec<Pod> {
    api.list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && kcore_reconcile::controller_of(&p.metadata).is_some_and(|r| r.uid == rs_uid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_up_and_down_and_reports_status() {
    let c = simulated(1, Duration::ZERO, &["replicaset"]).await;
    let rss: Api<ReplicaSet> = Api::namespaced(c.client.clone(), &c.namespace);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    let rs: ReplicaSet =
        serde_json::from_value(workload("ReplicaSet", "web", 3, "nginx:1")).unwrap();
    let rs = rss
        .create(&PostParams::default(), &rs)
        .await
        .expect("create rs");
    let uid = rs.metadata.uid.clone().unwrap();

    eventually(30, "3 ready replicas", || async {
        let r = rss.get("web").await.ok()?;
        let s = r.status?;
        (s.replicas == 3 && s.ready_replicas == Some(3) && s.available_replicas == Some(3))
            .then_some(())
    })
    .await;
    let ps = owned_pods(&pods, &uid).await;
    assert_eq!(ps.len(), 3);
    for p in &ps {
        assert!(p.metadata.name.as_deref().unwrap().starts_with("web-"));
        assert_eq!(p.metadata.labels.as_ref().unwrap()["app"], "web");
        let r = kcore_reconcile::controller_of(&p.metadata).unwrap();
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.block_owner_deletion),
            ("ReplicaSet", "web", Some(true))
        );
    }

    rss.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .expect("scale down");
    eventually(30, "1 replica", || async {
        let r = rss.get("web").await.ok()?;
        let n = owned_pods(&pods, &uid).await.len();
        (n == 1 && r.status?.replicas == 1).then_some(())
    })
    .await;

    // A deleted pod is replaced.
    let victim = owned_pods(&pods, &uid).await.remove(0);
    pods.delete(
        victim.metadata.name.as_deref().unwrap(),
        &Default::default(),
    )
    .await
    .expect("delete pod");
    eventually(30, "replacement pod", || async {
        let ps = owned_pods(&pods, &uid).await;
        (ps.len() == 1 && ps[0].metadata.uid != victim.metadata.uid).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_orphans_and_releases_relabelled_pods() {
    let c = simulated(0, Duration::ZERO, &["replicaset"]).await;
    let rss: Api<ReplicaSet> = Api::namespaced(c.client.clone(), &c.namespace);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "db"}},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &orphan)
        .await
        .expect("orphan");
    // Barrier: a ReplicaSet of another app whose status counts its new pod has a pod
    // cache that also holds the orphan (the pod watch delivers in revision order), so
    // the ReplicaSet below finds the orphan on its first sync instead of racing it with
    // pods of its own (one of three would then go, maybe the orphan).
    let probe: ReplicaSet =
        serde_json::from_value(workload("ReplicaSet", "probe", 1, "x")).unwrap();
    rss.create(&PostParams::default(), &probe)
        .await
        .expect("probe");
    eventually(30, "probe pod in the controller's cache", || async {
        (rss.get("probe").await.ok()?.status?.replicas == 1).then_some(())
    })
    .await;
    let rs: ReplicaSet = serde_json::from_value(workload("ReplicaSet", "db", 2, "x")).unwrap();
    let rs = rss
        .create(&PostParams::default(), &rs)
        .await
        .expect("create rs");
    let uid = rs.metadata.uid.clone().unwrap();
    let ps = eventually(30, "2 pods including the adopted orphan", || async {
        let ps = owned_pods(&pods, &uid).await;
        (ps.len() == 2).then_some(ps)
    })
    .await;
    assert!(
        ps.iter()
            .any(|p| p.metadata.name.as_deref() == Some("orphan")),
        "orphan adopted"
    );

    // Relabel the orphan: it is released and replaced.
    pods.patch(
        "orphan",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .expect("relabel");
    eventually(30, "release and replacement", || async {
        let o = pods.get("orphan").await.ok()?;
        let released = kcore_reconcile::controller_of(&o.metadata).is_none();
        let ps = owned_pods(&pods, &uid).await;
        (released
            && ps.len() == 2
            && ps
                .iter()
                .all(|p| p.metadata.name.as_deref() != Some("orphan")))
        .then_some(())
    })
    .await;
}
