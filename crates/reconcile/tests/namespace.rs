//! The namespace controller against an in-process kcore-apiserver: deleting a namespace
//! leaves it Terminating behind its `kubernetes` finalizer until the controller has
//! deleted what is in it, then the namespace goes.

mod common;

use common::{eventually, start, workload, Kubelet};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod};
use kcore_reconcile::KUBERNETES_FINALIZER;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_deletes_its_content_then_the_namespace() {
    let c = start(Kubelet::None, &["namespace", "pvc-protection"]).await;
    let name = format!("{}-doomed", c.namespace);
    let nss: Api<Namespace> = Api::all(c.client.clone());
    let ns = nss
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        ns.spec.and_then(|s| s.finalizers),
        Some(vec![KUBERNETES_FINALIZER.to_string()])
    );
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &name);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &name);
    let deps: Api<Deployment> = Api::namespaced(c.client.clone(), &name);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), &name);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "b"}})).unwrap(),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}))
        .unwrap(),
    )
    .await
    .unwrap();
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(workload("Deployment", "web", 1, "x")).unwrap(),
    )
    .await
    .unwrap();
    pvcs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}}}))
        .unwrap(),
    )
    .await
    .unwrap();

    nss.delete(&name, &DeleteParams::default()).await.unwrap();
    eventually(30, "namespace gone", || async {
        nss.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    let lp = ListParams::default();
    assert!(cms.list(&lp).await.unwrap().items.is_empty());
    assert!(pods.list(&lp).await.unwrap().items.is_empty());
    assert!(deps.list(&lp).await.unwrap().items.is_empty());
    assert!(pvcs.list(&lp).await.unwrap().items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_controller_a_namespace_stays_terminating() {
    let c = start(Kubelet::None, &[]).await;
    let name = format!("{}-held", c.namespace);
    let nss: Api<Namespace> = Api::all(c.client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &name);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "cfg"}})).unwrap(),
    )
    .await
    .unwrap();
    nss.delete(&name, &DeleteParams::default()).await.unwrap();
    let ns = nss.get(&name).await.unwrap();
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    assert!(ns.metadata.deletion_timestamp.is_some());
    assert!(cms.get_opt("cfg").await.unwrap().is_some(), "content kept");
}
