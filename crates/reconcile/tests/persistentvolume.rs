//! The PersistentVolume controller against an in-process kcore-apiserver: claims bind to
//! matching volumes, phases follow, a volume whose claim is deleted is Released (Retain)
//! or Failed when nothing can delete it, and a WaitForFirstConsumer claim waits for its
//! node before it is handed to its provisioner.

mod common;

use common::{eventually, start, Kubelet};
use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kcore_reconcile::{
    ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

async fn create<K>(api: &Api<K>, v: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(
        &PostParams::default(),
        &serde_json::from_value(v).expect("object"),
    )
    .await
    .expect("create")
}

fn pv(name: &str, size: &str, policy: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {
        "capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": policy, "storageClassName": "manual",
        "hostPath": {"path": format!("/tmp/{name}")}}})
}

fn pvc(name: &str, size: &str, class: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {
        "accessModes": ["ReadWriteOnce"], "storageClassName": class,
        "resources": {"requests": {"storage": size}}}})
}

async fn phase_of_pv(api: &Api<PersistentVolume>, name: &str) -> String {
    api.get(name)
        .await
        .ok()
        .and_then(|v| v.status)
        .and_then(|s| s.phase)
        .unwrap_or_default()
}

async fn has_event(client: &Client, ns: &str, name: &str, reason: &str) -> Option<Event> {
    let evs: Api<Event> = Api::namespaced(client.clone(), ns);
    evs.list(&ListParams::default())
        .await
        .ok()?
        .items
        .into_iter()
        .find(|e| {
            e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_bind_to_the_smallest_fitting_volume_and_release_on_delete() {
    let c = start(
        Kubelet::None,
        &["persistentvolume-binder", "pvc-protection", "pv-protection"],
    )
    .await;
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), &c.namespace);
    create(&pvs, pv("big", "10Gi", "Retain")).await;
    create(&pvs, pv("small", "1Gi", "Retain")).await;
    create(&pvs, pv("doomed", "2Gi", "Delete")).await;
    eventually(20, "volumes Available", || async {
        for n in ["big", "small", "doomed"] {
            if phase_of_pv(&pvs, n).await != "Available" {
                return None;
            }
        }
        Some(())
    })
    .await;
    create(&pvcs, pvc("data", "1500Mi", "manual")).await;
    let bound = eventually(20, "claim Bound", || async {
        let claim = pvcs.get("data").await.ok()?;
        (claim.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(claim)
    })
    .await;
    assert_eq!(
        bound.spec.as_ref().and_then(|s| s.volume_name.as_deref()),
        Some("doomed")
    );
    let ann = bound.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(ann.get(ANN_BIND_COMPLETED).map(String::as_str), Some("yes"));
    assert_eq!(
        ann.get(ANN_BOUND_BY_CONTROLLER).map(String::as_str),
        Some("yes")
    );
    let status = bound.status.clone().unwrap_or_default();
    assert_eq!(
        status
            .capacity
            .and_then(|c| c.get("storage").map(|q| q.0.clone()))
            .as_deref(),
        Some("2Gi")
    );
    eventually(20, "volume Bound", || async {
        (phase_of_pv(&pvs, "doomed").await == "Bound").then_some(())
    })
    .await;
    let v = pvs.get("doomed").await.expect("pv");
    let r = v.spec.and_then(|s| s.claim_ref).expect("claimRef");
    assert_eq!(r.uid, bound.metadata.uid);

    // A claim pre-bound to a volume gets that one, even if a smaller one fits.
    let mut pre = pvc("pre", "1Gi", "manual");
    pre["spec"]["volumeName"] = json!("big");
    create(&pvcs, pre).await;
    let v = eventually(20, "pre-bound claim Bound", || async {
        let claim = pvcs.get("pre").await.ok()?;
        (claim.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(claim)
    })
    .await;
    assert_eq!(v.spec.and_then(|s| s.volume_name).as_deref(), Some("big"));

    // Deleting a claim: Retain keeps the volume Released; Delete with no provisioner
    // to delete it fails with upstream's event.
    pvcs.delete("pre", &DeleteParams::default())
        .await
        .expect("delete");
    pvcs.delete("data", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(20, "Retain volume Released", || async {
        (phase_of_pv(&pvs, "big").await == "Released").then_some(())
    })
    .await;
    eventually(20, "Delete volume Failed", || async {
        (phase_of_pv(&pvs, "doomed").await == "Failed").then_some(())
    })
    .await;
    let ev = eventually(20, "VolumeFailedDelete event", || async {
        has_event(&c.client, "default", "doomed", "VolumeFailedDelete").await
    })
    .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    // A claim no volume fits stays Pending.
    create(&pvcs, pvc("huge", "100Gi", "manual")).await;
    eventually(
        20,
        "ProvisioningFailed event for a missing class",
        || async { has_event(&c.client, &c.namespace, "huge", "ProvisioningFailed").await },
    )
    .await;
    let huge = pvcs.get("huge").await.expect("get");
    assert_eq!(
        huge.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_first_consumer_claims_wait_for_a_node() {
    let c = start(Kubelet::None, &["persistentvolume-binder"]).await;
    let scs: Api<StorageClass> = Api::all(c.client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), &c.namespace);
    create(
        &scs,
        json!({"metadata": {"name": "local"}, "provisioner": "kcore.dev/local-path",
        "volumeBindingMode": "WaitForFirstConsumer"}),
    )
    .await;
    create(&pvcs, pvc("wait", "1Gi", "local")).await;
    let ev = eventually(20, "WaitForFirstConsumer event", || async {
        has_event(&c.client, &c.namespace, "wait", "WaitForFirstConsumer").await
    })
    .await;
    assert_eq!(
        ev.message.as_deref(),
        Some("waiting for first consumer to be created before binding")
    );
    let claim = pvcs.get("wait").await.expect("get");
    assert!(!claim
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key(ANN_STORAGE_PROVISIONER));
    // The scheduler's choice hands it to the provisioner.
    pvcs.patch(
        "wait",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "n1"}}})),
    )
    .await
    .expect("patch");
    eventually(20, "storage-provisioner annotation", || async {
        let claim = pvcs.get("wait").await.ok()?;
        let ann = claim.metadata.annotations?;
        (ann.get(ANN_STORAGE_PROVISIONER)? == "kcore.dev/local-path").then_some(())
    })
    .await;
    eventually(20, "ExternalProvisioning event", || async {
        has_event(&c.client, &c.namespace, "wait", "ExternalProvisioning").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_in_use_is_kept_until_its_pod_goes() {
    use k8s_openapi::api::core::v1::Pod;
    use kcore_reconcile::{PVC_PROTECTION_FINALIZER, PV_PROTECTION_FINALIZER};
    let c = start(Kubelet::None, &["pvc-protection", "pv-protection"]).await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), &c.namespace);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    let claim = create(&pvcs, pvc("used", "1Gi", "")).await;
    assert_eq!(
        claim.metadata.finalizers,
        Some(vec![PVC_PROTECTION_FINALIZER.to_owned()])
    );
    create(
        &pods,
        json!({"metadata": {"name": "db"}, "spec": {"containers": [{"name": "c", "image": "x"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "used"}}]}}),
    )
    .await;
    pvcs.delete("used", &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let kept = pvcs.get("used").await.expect("kept while in use");
    assert!(kept.metadata.deletion_timestamp.is_some());
    pods.delete("db", &DeleteParams::default())
        .await
        .expect("delete pod");
    eventually(20, "the claim to go with its pod", || async {
        pvcs.get_opt("used").await.ok()?.is_none().then_some(())
    })
    .await;
    // A volume that is not bound goes at once.
    let v = create(&pvs, pv("loose", "1Gi", "Retain")).await;
    assert_eq!(
        v.metadata.finalizers,
        Some(vec![PV_PROTECTION_FINALIZER.to_owned()])
    );
    pvs.delete("loose", &DeleteParams::default())
        .await
        .expect("delete pv");
    eventually(20, "the unbound volume to go", || async {
        pvs.get_opt("loose").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_volumes_get_their_own_claim_and_never_a_foreign_one() {
    use k8s_openapi::api::core::v1::Pod;
    let c = start(Kubelet::None, &["ephemeral-volume", "garbagecollector"]).await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), &c.namespace);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    let template = json!({"volumeClaimTemplate": {
        "metadata": {"labels": {"tier": "scratch"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                 "resources": {"requests": {"storage": "1Gi"}}}}});
    // someone else's claim already has the name the second pod's volume would get
    create(&pvcs, pvc("squat-data", "5Gi", "manual")).await;
    let web = create(
        &pods,
        json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "x"}],
            "volumes": [{"name": "data", "ephemeral": template}]}}),
    )
    .await;
    create(
        &pods,
        json!({"metadata": {"name": "squat"}, "spec": {"containers": [{"name": "c", "image": "x"}],
            "volumes": [{"name": "data", "ephemeral": template}]}}),
    )
    .await;
    let claim = eventually(20, "the claim web-data", || async {
        pvcs.get_opt("web-data").await.ok()?
    })
    .await;
    let owner = &claim.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Pod", "web", Some(true))
    );
    assert_eq!(Some(&owner.uid), web.metadata.uid.as_ref());
    assert_eq!(claim.metadata.labels.unwrap()["tier"], "scratch");
    assert_eq!(
        claim.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0,
        "1Gi"
    );
    let ev = eventually(20, "a FailedBinding event on the squatted pod", || async {
        has_event(&c.client, &c.namespace, "squat", "FailedBinding").await
    })
    .await;
    assert_eq!(
        ev.message.as_deref(),
        Some(format!(
            "ephemeral volume data: PVC {0}/squat-data was not created for pod {0}/squat (pod is not owner)",
            c.namespace
        ))
        .as_deref()
    );
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    let foreign = pvcs.get("squat-data").await.expect("foreign claim");
    assert!(
        foreign.metadata.owner_references.is_none(),
        "the foreign claim is left alone"
    );
    // the claim goes with its pod
    pods.delete("web", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod");
    eventually(30, "web-data to go with its pod", || async {
        let c = pvcs.get_opt("web-data").await.ok()?;
        (c.is_none() || c.is_some_and(|c| c.metadata.deletion_timestamp.is_some())).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_grow_only_in_expandable_classes_and_never_shrink() {
    let c = start(Kubelet::None, &["persistentvolume-binder"]).await;
    let scs: Api<StorageClass> = Api::all(c.client.clone());
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), &c.namespace);
    let fixed = format!("fixed-{}", c.namespace);
    let growing = format!("growing-{}", c.namespace);
    create(
        &scs,
        json!({"metadata": {"name": fixed}, "provisioner": "kubernetes.io/no-provisioner"}),
    )
    .await;
    create(
        &scs,
        json!({"metadata": {"name": growing}, "provisioner": "kubernetes.io/no-provisioner",
               "allowVolumeExpansion": true}),
    )
    .await;
    for (class, vol) in [(&fixed, "pv-fixed"), (&growing, "pv-growing")] {
        let vol = format!("{vol}-{}", c.namespace);
        let mut v = pv(&vol, "1Gi", "Retain");
        v["spec"]["storageClassName"] = json!(class);
        create(&pvs, v).await;
        create(&pvcs, pvc(class, "1Gi", class)).await;
    }
    for class in [&fixed, &growing] {
        eventually(20, "claims Bound", || async {
            let st = pvcs.get(class).await.ok()?.status?;
            (st.phase.as_deref() == Some("Bound")).then_some(())
        })
        .await;
    }
    let grow =
        |size: &str| Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": size}}}}));
    let err = pvcs
        .patch(&fixed, &PatchParams::default(), &grow("2Gi"))
        .await
        .expect_err("a class without allowVolumeExpansion");
    let kube::Error::Api(s) = err else {
        panic!("not an API error: {err}")
    };
    assert_eq!(s.code, 403);
    assert_eq!(
        s.message,
        format!("persistentvolumeclaims \"{fixed}\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize")
    );
    let grown = pvcs
        .patch(&growing, &PatchParams::default(), &grow("2Gi"))
        .await
        .expect("an expandable class");
    assert_eq!(
        grown.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0,
        "2Gi"
    );
    // the binder leaves the claim's capacity to the resizer
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let st = pvcs.get(&growing).await.expect("claim").status.unwrap();
    assert_eq!(st.capacity.unwrap()["storage"].0, "1Gi");
    let err = pvcs
        .patch(&growing, &PatchParams::default(), &grow("512Mi"))
        .await
        .expect_err("shrinking");
    let kube::Error::Api(s) = err else {
        panic!("not an API error: {err}")
    };
    assert_eq!(s.code, 422);
    assert!(
        s.message
            .contains("spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"),
        "{}",
        s.message
    );
}
