//! `kubectl rollout status`, `kubectl rollout undo` and `kubectl scale` end to end: the
//! machine's kubectl against an in-process kcore-apiserver running the controllers.

mod common;

use std::time::Duration;

use common::kubectl::{kubectl, must};
use common::{eventually, start, Kubelet};
use k8s_openapi::api::apps::v1::Deployment;
use kcore_reconcile::REVISION;
use kube::api::Api;

fn image(d: &Deployment) -> String {
    d.spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].image.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_status_undo_and_scale() {
    let c = start(
        Kubelet::ReadyAfter(Duration::from_millis(20)),
        &["deployment", "replicaset"],
    )
    .await;
    let deps: Api<Deployment> = Api::namespaced(c.client.clone(), &c.namespace);
    let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: nginx:1
"#;
    must(
        kubectl(&c, &["apply", "-f", "-"], Some(manifest)).await,
        "apply",
    );
    let out = must(
        kubectl(
            &c,
            &["rollout", "status", "deployment/web", "--timeout=60s"],
            None,
        )
        .await,
        "rollout status",
    );
    assert!(out.contains("successfully rolled out"), "{out}");

    must(
        kubectl(&c, &["set", "image", "deployment/web", "c=nginx:2"], None).await,
        "set image",
    );
    let out = must(
        kubectl(
            &c,
            &["rollout", "status", "deployment/web", "--timeout=60s"],
            None,
        )
        .await,
        "rollout status after set image",
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = deps.get("web").await.unwrap();
    assert_eq!(image(&d), "nginx:2");
    assert_eq!(d.metadata.annotations.as_ref().unwrap()[REVISION], "2");

    let hist = must(
        kubectl(&c, &["rollout", "history", "deployment/web"], None).await,
        "rollout history",
    );
    assert!(hist.contains('1') && hist.contains('2'), "{hist}");

    must(
        kubectl(&c, &["rollout", "undo", "deployment/web"], None).await,
        "rollout undo",
    );
    let out = must(
        kubectl(
            &c,
            &["rollout", "status", "deployment/web", "--timeout=60s"],
            None,
        )
        .await,
        "rollout status after undo",
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = deps.get("web").await.unwrap();
    assert_eq!(image(&d), "nginx:1", "undo restored the first template");
    assert_eq!(d.metadata.annotations.as_ref().unwrap()[REVISION], "3");

    must(
        kubectl(&c, &["scale", "deployment/web", "--replicas=5"], None).await,
        "scale",
    );
    eventually(60, "5 available replicas", || async {
        let s = deps.get("web").await.ok()?.status?;
        (s.available_replicas == Some(5) && s.updated_replicas == Some(5)).then_some(())
    })
    .await;
    let out = must(
        kubectl(&c, &["get", "rs", "-l", "app=web"], None).await,
        "get rs",
    );
    assert_eq!(
        out.lines().count(),
        3,
        "header plus two ReplicaSets:\n{out}"
    );
}
