//! A kube-rs client against the server: typed CRUD, list with selectors, strategic, merge
//! and apply patches, a runtime watcher (classic list+watch and streaming lists), and errors.

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;

async fn client() -> (Client, kcore_apiserver::RunningServer, tempfile::TempDir) {
    support::kube_client("kube-rs").await
}

fn pod(name: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}
    }))
    .expect("pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_crud_patch_and_errors() {
    let (client, server, _dir) = client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let created = pods
        .create(&PostParams::default(), &pod("a", "x"))
        .await
        .expect("create");
    assert!(created.metadata.uid.is_some());
    pods.create(&PostParams::default(), &pod("b", "y"))
        .await
        .expect("create b");
    let listed = pods
        .list(&ListParams::default().labels("app=x"))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].metadata.name.as_deref(), Some("a"));

    let strategic =
        Patch::Strategic(json!({"spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}}));
    let p = pods
        .patch("a", &PatchParams::default(), &strategic)
        .await
        .expect("strategic");
    assert_eq!(
        p.spec.expect("spec").containers[0].image.as_deref(),
        Some("busybox:1.37")
    );
    let merge = Patch::Merge(json!({"metadata": {"labels": {"merged": "yes"}}}));
    let p = pods
        .patch("a", &PatchParams::default(), &merge)
        .await
        .expect("merge");
    assert_eq!(p.metadata.labels.expect("labels")["merged"], "yes");
    // Server-side apply creates, then conflicts with another manager unless forced.
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "1"}});
    let cm = cms
        .patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(&applied))
        .await
        .expect("apply create");
    assert_eq!(cm.data.expect("data")["k"], "1");
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "2"}});
    let err = cms
        .patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(&other))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err:?}"
    );
    let cm = cms
        .patch(
            "ssa",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(&other),
        )
        .await
        .expect("forced");
    assert_eq!(cm.data.expect("data")["k"], "2");

    // Errors carry Status codes.
    let err = pods.get("missing").await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"),
        "{err:?}"
    );
    let err = pods
        .create(&PostParams::default(), &pod("a", "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );

    // Deployments and the scale subresource.
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}))
        .expect("deployment");
    deps.create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    let sc = deps
        .patch_scale(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scale");
    assert_eq!(sc.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(deps.get("d").await.expect("get").spec.replicas, Some(3));

    pods.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(pods.get_opt("a").await.expect("get_opt").is_none());
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_watchers_see_changes() {
    let (client, server, _dir) = client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &pod("before", "w"))
        .await
        .expect("create");
    for cfg in [
        watcher::Config::default(),
        watcher::Config::default().streaming_lists(),
    ] {
        let mut stream = watcher(pods.clone(), cfg.labels("app=w")).boxed();
        // The initial state arrives as Init .. InitApply(before) .. InitDone.
        let mut seen_init = false;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(15), stream.try_next())
                .await
                .expect("event in time")
                .expect("watch ok")
                .expect("stream open");
            match ev {
                watcher::Event::InitApply(p) => {
                    seen_init |= p.metadata.name.as_deref() == Some("before")
                }
                watcher::Event::InitDone => break,
                _ => {}
            }
        }
        assert!(seen_init, "initial object listed");
        let name = format!("after-{}", u8::from(seen_init));
        let created = pods
            .create(&PostParams::default(), &pod(&name, "w"))
            .await
            .expect("create");
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(15), stream.try_next())
                .await
                .expect("event in time")
                .expect("watch ok")
                .expect("stream open");
            if let watcher::Event::Apply(p) = ev {
                if p.metadata.uid == created.metadata.uid {
                    break;
                }
            }
        }
        pods.delete(&name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    server.shutdown().await.expect("shutdown");
}
