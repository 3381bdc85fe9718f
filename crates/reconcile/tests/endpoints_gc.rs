//! Endpoints / EndpointSlices and the garbage collector against an in-process
//! kcore-apiserver.

mod common;

use common::{eventually, start, workload, Kubelet};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn pod(name: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"name": "http", "containerPort": 8080}]}]},
    }))
    .unwrap()
}

async fn set_ready(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let patch = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("pod status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_readiness() {
    let c = start(Kubelet::None, &["endpoint"]).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    let svcs: Api<Service> = Api::namespaced(c.client.clone(), &c.namespace);
    let eps: Api<Endpoints> = Api::namespaced(c.client.clone(), &c.namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), &c.namespace);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }))
    .unwrap();
    svcs.create(&PostParams::default(), &svc)
        .await
        .expect("svc");
    for n in ["a", "b"] {
        pods.create(&PostParams::default(), &pod(n, "web"))
            .await
            .unwrap();
    }
    pods.create(&PostParams::default(), &pod("other", "db"))
        .await
        .unwrap();
    set_ready(&pods, "a", "10.1.0.1", true).await;
    set_ready(&pods, "b", "10.1.0.2", false).await;
    set_ready(&pods, "other", "10.1.0.9", true).await;

    let addrs = |e: &Endpoints| -> (Vec<String>, Vec<String>, Vec<i32>) {
        let s = e.subsets.clone().unwrap_or_default();
        let ips = |f: &dyn Fn(
            &k8s_openapi::api::core::v1::EndpointSubset,
        )
            -> Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
            let mut v: Vec<String> = s
                .iter()
                .flat_map(|x| f(x).unwrap_or_default())
                .map(|a| a.ip)
                .collect();
            v.sort();
            v
        };
        let ports = s
            .iter()
            .flat_map(|x| x.ports.clone().unwrap_or_default())
            .map(|p| p.port)
            .collect();
        (
            ips(&|x| x.addresses.clone()),
            ips(&|x| x.not_ready_addresses.clone()),
            ports,
        )
    };
    eventually(30, "a ready, b not ready", || async {
        let e = eps.get("web").await.ok()?;
        (addrs(&e) == (vec!["10.1.0.1".into()], vec!["10.1.0.2".into()], vec![8080])).then_some(())
    })
    .await;
    let sl = eventually(30, "endpoint slice", || async {
        let l = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .ok()?;
        (l.items.len() == 1 && l.items[0].endpoints.as_ref().is_some_and(|e| e.len() == 2))
            .then(|| l.items[0].clone())
    })
    .await;
    assert_eq!(sl.address_type, "IPv4");
    assert_eq!(sl.ports.as_ref().unwrap()[0].port, Some(8080));
    assert_eq!(
        sl.metadata.owner_references.as_ref().unwrap()[0].kind,
        "Service"
    );

    // b becomes ready, a goes away.
    set_ready(&pods, "b", "10.1.0.2", true).await;
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    eventually(30, "only b, ready", || async {
        let e = eps.get("web").await.ok()?;
        (addrs(&e) == (vec!["10.1.0.2".into()], vec![], vec![8080])).then_some(())
    })
    .await;
    eventually(30, "slice follows", || async {
        let l = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .ok()?;
        let e = l.items.first()?.endpoints.clone()?;
        (e.len() == 1
            && e[0].addresses == vec!["10.1.0.2".to_string()]
            && e[0].conditions.as_ref()?.ready == Some(true))
        .then_some(())
    })
    .await;

    // Deleting the Service removes its Endpoints.
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    eventually(30, "endpoints removed", || async {
        eps.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
}

async fn deployment_with_pods(
    c: &common::Cluster,
    name: &str,
) -> (Api<Deployment>, Api<ReplicaSet>, Api<Pod>) {
    let deps: Api<Deployment> = Api::namespaced(c.client.clone(), &c.namespace);
    let rss: Api<ReplicaSet> = Api::namespaced(c.client.clone(), &c.namespace);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(workload("Deployment", name, 2, "x")).unwrap(),
    )
    .await
    .unwrap();
    eventually(30, "2 pods", || async {
        let n = pods
            .list(&ListParams::default().labels(&format!("app={name}")))
            .await
            .ok()?
            .items
            .len();
        (n == 2).then_some(())
    })
    .await;
    (deps, rss, pods)
}

async fn count(pods: &Api<Pod>, rss: &Api<ReplicaSet>, app: &str) -> (usize, usize) {
    let lp = ListParams::default().labels(&format!("app={app}"));
    let p = pods
        .list(&lp)
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    let r = rss.list(&lp).await.unwrap().items.len();
    (p, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_background_cascade() {
    let c = start(
        Kubelet::ReadyAtOnce,
        &["deployment", "replicaset", "garbagecollector"],
    )
    .await;
    let (deps, rss, pods) = deployment_with_pods(&c, "bg").await;
    deps.delete("bg", &DeleteParams::background())
        .await
        .unwrap();
    eventually(30, "replicasets and pods collected", || async {
        (count(&pods, &rss, "bg").await == (0, 0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_foreground_deletes_dependents_before_the_owner() {
    let c = start(
        Kubelet::ReadyAtOnce,
        &["deployment", "replicaset", "garbagecollector"],
    )
    .await;
    let (deps, rss, pods) = deployment_with_pods(&c, "fg").await;
    deps.delete("fg", &DeleteParams::foreground())
        .await
        .unwrap();
    // The owner is held (deletionTimestamp + finalizer) until its dependents are gone.
    let held = deps.get_opt("fg").await.unwrap();
    if let Some(d) = held {
        assert!(d.metadata.deletion_timestamp.is_some());
    }
    eventually(30, "everything gone", || async {
        let gone = deps.get_opt("fg").await.ok()?.is_none();
        (gone && count(&pods, &rss, "fg").await == (0, 0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_orphan_keeps_dependents_without_owner() {
    let c = start(Kubelet::ReadyAtOnce, &["replicaset", "garbagecollector"]).await;
    let rss: Api<ReplicaSet> = Api::namespaced(c.client.clone(), &c.namespace);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    let owner_uid = rss
        .create(
            &PostParams::default(),
            &serde_json::from_value(workload("ReplicaSet", "or", 2, "x")).unwrap(),
        )
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    eventually(30, "2 pods", || async {
        (count(&pods, &rss, "or").await.0 == 2).then_some(())
    })
    .await;
    rss.delete("or", &DeleteParams::orphan()).await.unwrap();
    let left = eventually(30, "rs gone, pods orphaned", || async {
        let gone = rss.get_opt("or").await.ok()?.is_none();
        let ps = pods
            .list(&ListParams::default().labels("app=or"))
            .await
            .ok()?
            .items;
        (gone
            && ps.len() == 2
            && ps.iter().all(|p| {
                p.metadata
                    .owner_references
                    .as_ref()
                    .is_none_or(Vec::is_empty)
            }))
        .then_some(ps)
    })
    .await;
    // And they stay: the collector does not delete orphans. As a barrier, a pod created
    // now that still names the deleted ReplicaSet as its owner must be collected; the
    // pod watch delivers in order, so once it is gone the collector has seen everything
    // that happened to the orphans before it.
    let gone_owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "or",
        "uid": owner_uid, "controller": true});
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "sentinel", "labels": {"app": "sentinel"},
                "ownerReferences": [gone_owner]},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    eventually(30, "sentinel collected", || async {
        pods.get_opt("sentinel").await.ok()?.is_none().then_some(())
    })
    .await;
    let now: Vec<String> = pods
        .list(&ListParams::default().labels("app=or"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    let mut before: Vec<String> = left.into_iter().filter_map(|p| p.metadata.name).collect();
    before.sort();
    let mut now = now;
    now.sort();
    assert_eq!(now, before, "orphans survive the collector");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_collects_objects_whose_owner_vanished_and_drops_dangling_refs() {
    let c = start(Kubelet::None, &["garbagecollector"]).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &c.namespace);
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let r = |name: &str, uid: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid});
    let live = r("owner", owner.metadata.uid.as_deref().unwrap());
    let dead = r("ghost", "00000000-dead-beef-0000-000000000000");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "orphaned", "ownerReferences": [dead]}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "half", "ownerReferences": [live, dead]}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    eventually(30, "dependent of a missing owner deleted", || async {
        cms.get_opt("orphaned").await.ok()?.is_none().then_some(())
    })
    .await;
    eventually(30, "dangling reference dropped", || async {
        let h = cms.get("half").await.ok()?;
        let refs = h.metadata.owner_references?;
        (refs.len() == 1 && refs[0].name == "owner").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_custom_resources_own_objects() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
    let c = start(Kubelet::None, &["garbagecollector"]).await;
    let group = format!("gc{}.kcore.test", std::process::id());
    let crds: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": format!("owners.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": "owners", "singular": "owner", "kind": "Owner"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Owner"), "owners");
    let owners: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), &c.namespace, &ar);
    let owner = eventually(30, "the CRD served", || async {
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": format!("{group}/v1"), "kind": "Owner", "metadata": {"name": "boss"}
        }))
        .unwrap();
        owners.create(&PostParams::default(), &o).await.ok()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &c.namespace);
    let owned = json!({"metadata": {"name": "owned", "ownerReferences": [{
        "apiVersion": format!("{group}/v1"), "kind": "Owner", "name": "boss",
        "uid": owner.metadata.uid.clone().unwrap()}]}});
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(owned).unwrap(),
    )
    .await
    .expect("owned configmap");
    // The owner lives: the dependent stays (give the collector time to track the kind).
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    assert!(
        cms.get_opt("owned").await.unwrap().is_some(),
        "a live owner keeps its dependent"
    );
    owners
        .delete("boss", &DeleteParams::default())
        .await
        .expect("delete owner");
    eventually(
        30,
        "the dependent of a deleted custom resource collected",
        || async { cms.get_opt("owned").await.ok()?.is_none().then_some(()) },
    )
    .await;
}
