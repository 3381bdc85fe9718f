//! The StatefulSet controller against an in-process kcore-apiserver.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, start, Kubelet};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kcore_reconcile::pod_is_ready;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

/// Pod events in order: ("add"|"del", name, all lower ordinals ready at that moment).
type Log = Arc<Mutex<Vec<(&'static str, String, bool)>>>;

fn record(pods: Api<Pod>) -> (Log, tokio::task::JoinHandle<()>) {
    let log: Log = Arc::default();
    let l2 = Arc::clone(&log);
    let h = tokio::spawn(async move {
        let mut ready: HashMap<String, bool> = HashMap::new();
        let stream = common::watch_events(pods);
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let (what, p) = match ev {
                watcher::Event::Apply(p) => ("apply", p),
                watcher::Event::Delete(p) => ("del", p),
                _ => continue,
            };
            let name = p.metadata.name.clone().unwrap_or_default();
            let ord: usize = name
                .rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let lower_ready =
                (0..ord).all(|i| ready.get(&format!("web-{i}")).copied().unwrap_or(false));
            if what == "del" {
                ready.remove(&name);
                l2.lock().unwrap().push(("del", name, lower_ready));
            } else if !ready.contains_key(&name) {
                ready.insert(name.clone(), pod_is_ready(&p));
                l2.lock().unwrap().push(("add", name, lower_ready));
            } else {
                ready.insert(name, pod_is_ready(&p));
            }
        }
    });
    (log, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_creation_scale_down_and_update() {
    let c = start(
        Kubelet::ReadyAfter(Duration::from_millis(30)),
        &["statefulset"],
    )
    .await;
    let sts_api: Api<StatefulSet> = Api::namespaced(c.client.clone(), &c.namespace);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    let (log, rec) = record(pods.clone());
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "serviceName": "web-headless",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}},
        },
    }))
    .unwrap();
    sts_api
        .create(&PostParams::default(), &sts)
        .await
        .expect("sts");
    eventually(30, "3 ready replicas", || async {
        let s = sts_api.get("web").await.ok()?.status?;
        (s.ready_replicas == Some(3)).then_some(())
    })
    .await;
    {
        let l = log.lock().unwrap();
        let adds: Vec<(&str, bool)> = l
            .iter()
            .filter(|e| e.0 == "add")
            .map(|e| (e.1.as_str(), e.2))
            .collect();
        assert_eq!(
            adds,
            vec![("web-0", true), ("web-1", true), ("web-2", true)],
            "created in order, each after its predecessors were ready"
        );
    }
    let p1 = pods.get("web-1").await.unwrap();
    let spec = p1.spec.unwrap();
    assert_eq!(
        (spec.hostname.as_deref(), spec.subdomain.as_deref()),
        (Some("web-1"), Some("web-headless"))
    );

    // Scale down: highest ordinal first.
    log.lock().unwrap().clear();
    sts_api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    eventually(30, "1 replica", || async {
        let n = pods.list(&ListParams::default()).await.ok()?.items.len();
        (n == 1).then_some(())
    })
    .await;
    {
        let l = log.lock().unwrap();
        let dels: Vec<&str> = l
            .iter()
            .filter(|e| e.0 == "del")
            .map(|e| e.1.as_str())
            .collect();
        assert_eq!(dels, vec!["web-2", "web-1"]);
    }

    // Update with a partition: only ordinals >= 1 move to the new template.
    sts_api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    eventually(30, "3 ready again", || async {
        (sts_api.get("web").await.ok()?.status?.ready_replicas == Some(3)).then_some(())
    })
    .await;
    log.lock().unwrap().clear();
    sts_api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
                "template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}},
            }})),
        )
        .await
        .unwrap();
    let image = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.containers[0].image.clone())
            .unwrap_or_default()
    };
    eventually(30, "ordinals 1 and 2 updated", || async {
        let s = sts_api.get("web").await.ok()?.status?;
        let mut imgs = Vec::new();
        for n in ["web-0", "web-1", "web-2"] {
            imgs.push(pods.get(n).await.map(|p| image(&p)).unwrap_or_default());
        }
        (s.updated_replicas == Some(2)
            && s.ready_replicas == Some(3)
            && imgs == vec!["v1", "v2", "v2"])
        .then_some(())
    })
    .await;
    rec.abort();
    let dels: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.0 == "del")
        .map(|e| e.1.clone())
        .collect();
    assert_eq!(
        dels,
        vec!["web-2", "web-1"],
        "updated from the highest ordinal down to the partition"
    );
    // A pod below the partition that goes away comes back at the current revision.
    let old_uid = pods.get("web-0").await.unwrap().metadata.uid;
    pods.delete("web-0", &Default::default()).await.unwrap();
    let back = eventually(30, "web-0 recreated", || async {
        let p = pods.get("web-0").await.ok()?;
        (p.metadata.uid != old_uid && pod_is_ready(&p)).then_some(p)
    })
    .await;
    assert_eq!(image(&back), "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_revisions_and_volume_claims() {
    use k8s_openapi::api::apps::v1::ControllerRevision;
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use kcore_reconcile::{claim_name, CONTROLLER_REVISION_HASH};

    let c = start(Kubelet::ReadyAtOnce, &["statefulset"]).await;
    let sts_api: Api<StatefulSet> = Api::namespaced(c.client.clone(), &c.namespace);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), &c.namespace);
    let crs: Api<ControllerRevision> = Api::namespaced(c.client.clone(), &c.namespace);
    let template = |image: &str| {
        json!({"metadata": {"labels": {"app": "db"}},
            "spec": {"containers": [{"name": "c", "image": image}]}})
    };
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 2,
            "podManagementPolicy": "Parallel",
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": template("pg:1"),
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    }))
    .unwrap();
    sts_api.create(&PostParams::default(), &sts).await.unwrap();
    let settled = |image: &'static str, rev: i64| {
        let (sts_api, crs, pods) = (sts_api.clone(), crs.clone(), pods.clone());
        async move {
            eventually(30, "rollout settled", || async {
                let s = sts_api.get("db").await.ok()?.status?;
                let update = s.update_revision.clone()?;
                let cr = crs.get(&update).await.ok()?;
                let imgs: Vec<String> = pods
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter_map(|p| p.spec.as_ref()?.containers[0].image.clone())
                    .collect();
                (s.ready_replicas == Some(2)
                    && s.updated_replicas == Some(2)
                    && s.current_revision.as_ref() == Some(&update)
                    && cr.revision == Some(rev)
                    && imgs == [image, image])
                .then_some((update, cr))
            })
            .await
        }
    };
    let (first, cr) = settled("pg:1", 1).await;
    assert_eq!(
        cr.data.0["spec"]["template"]["spec"]["containers"][0]["image"],
        "pg:1"
    );
    assert_eq!(cr.data.0["spec"]["template"]["$patch"], "replace");
    let owner = &cr.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("StatefulSet", "db")
    );
    // Pods carry the revision name; each has its own claim, mounted as volume `data`.
    for i in 0..2 {
        let p = pods.get(&format!("db-{i}")).await.unwrap();
        assert_eq!(
            p.metadata.labels.as_ref().unwrap()[CONTROLLER_REVISION_HASH],
            first
        );
        let want = claim_name("data", "db", i);
        assert_eq!(want, format!("data-db-{i}"));
        let vol = p.spec.unwrap().volumes.unwrap();
        let data = vol.iter().find(|v| v.name == "data").expect("data volume");
        assert_eq!(
            data.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some(want.as_str())
        );
        let pvc = pvcs.get(&want).await.expect("claim created");
        assert_eq!(pvc.metadata.labels.unwrap()["app"], "db");
        assert!(
            pvc.metadata.owner_references.is_none(),
            "retained by default"
        );
    }

    // A new template: a second revision.
    let set = |image: &'static str| {
        let sts_api = sts_api.clone();
        async move {
            sts_api
                .patch(
                    "db",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"template": template(image)}})),
                )
                .await
                .unwrap();
        }
    };
    set("pg:2").await;
    let (second, _) = settled("pg:2", 2).await;
    assert_ne!(second, first);
    // Back to the first template: its revision is renumbered, no third one is made.
    set("pg:1").await;
    let (back, _) = settled("pg:1", 3).await;
    assert_eq!(back, first);
    let all = crs.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 2, "one revision per distinct template");
    // The claims outlive the pods: same names, still there.
    assert_eq!(
        pvcs.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_scaled_delete_removes_the_claims_of_condemned_ordinals() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;

    let c = start(
        Kubelet::ReadyAtOnce,
        &["statefulset", "garbagecollector", "pvc-protection"],
    )
    .await;
    let sts_api: Api<StatefulSet> = Api::namespaced(c.client.clone(), &c.namespace);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), &c.namespace);
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 2,
            "podManagementPolicy": "Parallel",
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "c", "image": "pg"}]}},
            "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    }))
    .unwrap();
    sts_api.create(&PostParams::default(), &sts).await.unwrap();
    eventually(30, "two ready replicas", || async {
        let s = sts_api.get("db").await.ok()?.status?;
        (s.ready_replicas == Some(2)).then_some(())
    })
    .await;
    pvcs.get("data-db-1").await.expect("claim of ordinal 1");
    sts_api
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    eventually(60, "the condemned ordinal's claim to go", || async {
        pvcs.get_opt("data-db-1")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let kept = pvcs
        .get("data-db-0")
        .await
        .expect("ordinal 0 keeps its claim");
    assert!(kept.metadata.deletion_timestamp.is_none());
}
