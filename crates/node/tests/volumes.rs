//! Root tests of the node's volume semantics: read-only mounts (by the mount, by the
//! claim, and always for API data), sub paths resolved through file descriptors even
//! when a container swaps a path component for a symlink to `/`, `subPathExpr`, memory
//! emptyDirs sized like the kubelet's, and the eviction of a pod past a disk emptyDir's
//! `sizeLimit`; projected and generic ephemeral volumes; and bad input (a missing
//! `hostPath` of `type: Directory`, a claim larger than the node can hold) answered with
//! an event giving the reason, nothing on the host touched.

mod common;

use std::time::Duration;

use common::{Env, IMAGE};
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn restarts(p: &Pod, name: &str) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == name))
        .map_or(0, |c| c.restart_count)
}

fn running(p: &Pod, name: &str) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == name))
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn read_only_mounts_sub_paths_through_fds_and_memory_empty_dirs() {
    let mut env = Env::new("10.77.9.0/24").await;
    let ns = env.namespace.clone();
    env.cfg.node_ip = std::net::Ipv4Addr::LOCALHOST;
    let vol = env.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    // a symlink planted in the volume before the pod starts: it must stay inside
    std::os::unix::fs::symlink("/", vol.join("escape")).unwrap();
    let pv_dir = env.path().join("pv");
    std::fs::create_dir_all(&pv_dir).unwrap();
    let marker = format!("kcore-subpath-escape-{}", std::process::id());
    assert!(!std::path::Path::new("/").join(&marker).exists());

    // a claim bound to a hostPath volume, mounted read-only through the claim
    let pvs: Api<PersistentVolume> = Api::all(env.client.clone());
    let pv_name = common::unique("pv-");
    pvs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": pv_name},
            "spec": {"capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": "", "hostPath": {"path": pv_dir}}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &ns);
    pvcs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "claim"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "volumeName": pv_name, "resources": {"requests": {"storage": "1Mi"}}}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    pvcs.patch_status(
        "claim",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Bound"}})),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"k": "v"}})).unwrap(),
    )
    .await
    .unwrap();
    env.start_agent();

    let ro = |p: &str| format!("touch {p}/x 2>/dev/null && echo rw || echo ro");
    env.create_pod(json!({
        "metadata": {"name": "vols"},
        "spec": {
            "restartPolicy": "OnFailure",
            "terminationGracePeriodSeconds": 1,
            "volumes": [
                {"name": "vol", "hostPath": {"path": vol, "type": "Directory"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "claim", "persistentVolumeClaim": {"claimName": "claim", "readOnly": true}},
                {"name": "cfg", "configMap": {"name": "cfg"}},
                // the pod's memory limit (two containers of 16Mi: 32Mi) is smaller than the sizeLimit
                {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "100Mi"}},
                {"name": "tiny", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
            ],
            "containers": [
                {
                    "name": "checks", "image": IMAGE,
                    "command": ["sh", "-c", format!(
                        "{}; {}; {}; {}; grep ' /mem tmpfs ' /proc/mounts | grep -o 'size=[0-9]*k'; \
                         head -c 2000000 /dev/zero > /tiny/f 2>/dev/null && echo fits || echo enospc; \
                         echo planted > /planted/file; echo expr > /expr/file; echo; exec sleep 3600",
                        ro("/scratch-ro"), ro("/claim"), ro("/cfg"), ro("/scratch"))],
                    "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "volumeMounts": [
                        {"name": "scratch", "mountPath": "/scratch-ro", "readOnly": true},
                        {"name": "scratch", "mountPath": "/scratch"},
                        {"name": "claim", "mountPath": "/claim"},
                        {"name": "cfg", "mountPath": "/cfg"},
                        {"name": "mem", "mountPath": "/mem"},
                        {"name": "tiny", "mountPath": "/tiny"},
                        // through the planted symlink: resolves to <vol>/etc, created
                        {"name": "vol", "mountPath": "/planted", "subPath": "escape/etc"},
                        {"name": "vol", "mountPath": "/expr", "subPathExpr": "by-pod/$(POD)"}
                    ],
                    "resources": {"limits": {"memory": "16Mi"}}
                },
                {
                    // first run: replaces its sub path with a symlink to / and fails;
                    // the restart must see the volume's root, not the host's
                    "name": "swap", "image": IMAGE,
                    "command": ["sh", "-c", format!(
                        "if [ -L /vol/data ]; then echo second > /data/{marker}; exec sleep 3600; \
                         else echo first > /data/first; rm -rf /vol/data; ln -s / /vol/data; exit 1; fi")],
                    "volumeMounts": [
                        {"name": "vol", "mountPath": "/vol"},
                        {"name": "vol", "mountPath": "/data", "subPath": "data"}
                    ],
                    "resources": {"limits": {"memory": "16Mi"}}
                }
            ]
        }
    }))
    .await;
    env.wait_pod("vols", 90, |p| {
        restarts(p, "swap") >= 1 && running(p, "swap") && running(p, "checks")
    })
    .await;
    let (_, logs) = env
        .agent_get(&format!("/containerLogs/{ns}/vols/checks"))
        .await;
    assert_eq!(
        logs, "ro\nro\nro\nrw\nsize=32768k\nenospc\n\n",
        "readOnly mount, readOnly claim, configMap, writable emptyDir, tmpfs sized by the pod's memory limit, a full 1Mi tmpfs"
    );
    assert_eq!(
        std::fs::read_to_string(vol.join("etc/file")).unwrap(),
        "planted\n",
        "the planted symlink resolved inside the volume"
    );
    assert_eq!(
        std::fs::read_to_string(vol.join("by-pod/vols/file")).unwrap(),
        "expr\n"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !vol.join(&marker).exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted container wrote nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        std::fs::read_to_string(vol.join(&marker)).unwrap(),
        "second\n"
    );
    assert!(
        !std::path::Path::new("/").join(&marker).exists(),
        "the swapped symlink led outside the volume"
    );
    assert!(
        std::fs::read_dir(&pv_dir).unwrap().next().is_none(),
        "the claim stayed read-only"
    );

    // a subPathExpr that expands to `..` is refused on the node
    env.create_pod(json!({
        "metadata": {"name": "upward"},
        "spec": {
            "volumes": [{"name": "vol", "hostPath": {"path": vol, "type": "Directory"}}],
            "containers": [{
                "name": "c", "image": IMAGE, "command": ["sleep", "3600"],
                "env": [{"name": "UP", "value": ".."}],
                "volumeMounts": [{"name": "vol", "mountPath": "/x", "subPathExpr": "$(UP)"}]
            }]
        }
    }))
    .await;
    let p = env
        .wait_pod("upward", 60, |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref()?.waiting.as_ref())
                .is_some_and(|w| w.reason.as_deref() == Some("CreateContainerConfigError"))
        })
        .await;
    let w = p.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert!(
        w.message
            .unwrap_or_default()
            .contains("must not contain '..'"),
        "the reason is given"
    );
    for name in ["vols", "upward"] {
        env.pods().delete(name, &Default::default()).await.unwrap();
    }
    for name in ["vols", "upward"] {
        env.wait_gone(name, 40).await;
    }
    // the staging mounts went with the pod, and the volume's files stayed
    assert!(vol.join("etc/file").exists());
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains("volume-subpaths"),
        "a sub path mount outlived its pod"
    );
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn a_pod_past_its_empty_dir_size_limit_is_evicted() {
    let mut env = Env::new("10.77.10.0/24").await;
    let ns = env.namespace.clone();
    env.start_agent();
    env.create_pod(json!({
        "metadata": {"name": "hog"},
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}],
            "containers": [{
                "name": "c", "image": IMAGE,
                "command": ["sh", "-c", "head -c 2000000 /dev/urandom > /scratch/f; exec sleep 3600"],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]
            }]
        }
    }))
    .await;
    let p = env
        .wait_pod("hog", 60, |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
        })
        .await;
    let st = p.status.unwrap();
    let msg = "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ";
    assert_eq!(st.reason.as_deref(), Some("Evicted"));
    assert_eq!(st.message.as_deref(), Some(msg));
    let c = &st.container_statuses.unwrap()[0];
    assert!(
        c.state.as_ref().unwrap().terminated.is_some(),
        "the container was killed at once (not after its 30 s grace period)"
    );
    let events: Api<Event> = Api::namespaced(env.client.clone(), &ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .any(|e| {
                e.reason.as_deref() == Some("Evicted")
                    && e.type_.as_deref() == Some("Warning")
                    && e.message.as_deref() == Some(msg)
            });
        if found {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no Evicted event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.pods().delete("hog", &Default::default()).await.unwrap();
    env.wait_gone("hog", 40).await;
    env.stop_agent().await;
}

/// Waits for a Warning event with `reason` about `name` whose message contains `text`.
async fn wait_event(env: &Env, name: &str, reason: &str, text: &str) -> String {
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.namespace);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let found = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find_map(|e| {
                (e.involved_object.name.as_deref() == Some(name)
                    && e.reason.as_deref() == Some(reason)
                    && e.type_.as_deref() == Some("Warning"))
                .then_some(e.message.unwrap_or_default())
                .filter(|m| m.contains(text))
            });
        if let Some(m) = found {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {reason} event about {name} saying {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn projected_and_ephemeral_volumes_mount_and_bad_volumes_get_events() {
    let mut env = Env::new("10.77.11.0/24").await;
    let ns = env.namespace.clone();
    let out = env.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let eph_dir = env.path().join("eph");
    std::fs::create_dir_all(&eph_dir).unwrap();
    let missing = env.path().join("missing");
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"greeting": "hi"}}))
            .unwrap(),
    )
    .await
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "sec"}, "stringData": {"password": "s3"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    env.start_agent();

    // a hostPath of type Directory that does not exist: FailedMount with the reason,
    // and the path is not made
    env.create_pod(json!({
        "metadata": {"name": "nohost"},
        "spec": {
            "volumes": [{"name": "h", "hostPath": {"path": missing, "type": "Directory"}}],
            "containers": [{"name": "c", "image": IMAGE, "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "h", "mountPath": "/h"}]}]
        }
    }))
    .await;
    let msg = wait_event(&env, "nohost", "FailedMount", "is not a directory").await;
    assert!(msg.starts_with("MountVolume.SetUp failed"), "{msg}");
    assert!(!missing.exists(), "the missing hostPath was made");

    // projected: a configMap, a secret and the downward API in one read-only directory
    env.create_pod(json!({
        "metadata": {"name": "proj", "labels": {"tier": "t1"}},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [
                {"name": "p", "projected": {"sources": [
                    {"configMap": {"name": "cfg", "items": [{"key": "greeting", "path": "greeting"}]}},
                    {"secret": {"name": "sec", "items": [{"key": "password", "path": "pw"}]}},
                    {"downwardAPI": {"items": [{"path": "tier", "fieldRef": {"fieldPath": "metadata.name"}}]}}
                ]}},
                {"name": "out", "hostPath": {"path": out, "type": "Directory"}}
            ],
            "containers": [{"name": "c", "image": IMAGE, "command": ["sh", "-c",
                "{ cat /p/greeting; echo; cat /p/pw; echo; cat /p/tier; echo; \
                   touch /p/x 2>/dev/null && echo rw || echo ro; } > /out/projected"],
                "volumeMounts": [{"name": "p", "mountPath": "/p"}, {"name": "out", "mountPath": "/out"}]}]
        }
    }))
    .await;
    env.wait_pod("proj", 60, |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(out.join("projected")).unwrap(),
        "hi\ns3\nproj\nro\n"
    );

    // a generic ephemeral volume: the pod's own claim `<pod>-<volume>` (made here as the
    // ephemeral-volume controller makes it), bound to a volume, is mounted
    let pod = env
        .create_pod(json!({
            "metadata": {"name": "eph"},
            "spec": {
                "restartPolicy": "Never",
                "volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
                    "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                    "resources": {"requests": {"storage": "1Mi"}}}}}}],
                "containers": [{"name": "c", "image": IMAGE,
                    "command": ["sh", "-c", "echo kept > /scratch/file"],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}]
            }
        }))
        .await;
    let pv_name = common::unique("pv-");
    let pvs: Api<PersistentVolume> = Api::all(env.client.clone());
    pvs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": pv_name},
            "spec": {"capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": "", "hostPath": {"path": eph_dir}}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &ns);
    pvcs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "eph-scratch", "ownerReferences": [{"apiVersion": "v1",
                "kind": "Pod", "name": "eph", "uid": pod.metadata.uid,
                "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "volumeName": pv_name, "resources": {"requests": {"storage": "1Mi"}}}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    pvcs.patch_status(
        "eph-scratch",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Bound"}})),
    )
    .await
    .unwrap();
    env.wait_pod("eph", 60, |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(eph_dir.join("file")).unwrap(),
        "kept\n"
    );

    // a claim larger than this node can hold: the provisioner refuses it with the reason
    let class = common::unique("huge-");
    let classes: Api<StorageClass> = Api::all(env.client.clone());
    classes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": class},
                "provisioner": "kcore.dev/local-path", "volumeBindingMode": "WaitForFirstConsumer"}))
            .unwrap(),
        )
        .await
        .unwrap();
    pvcs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "huge", "annotations": {
                "volume.kubernetes.io/selected-node": env.node,
                "volume.kubernetes.io/storage-provisioner": "kcore.dev/local-path"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                     "resources": {"requests": {"storage": "1Ei"}}}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let msg = wait_event(&env, "huge", "ProvisioningFailed", "more than node").await;
    assert!(msg.contains("1Ei"), "{msg}");
    let volumes = env.cfg.data_dir.join("volumes");
    assert!(
        std::fs::read_dir(&volumes)
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "nothing was made for the claim"
    );
    let _ = classes.delete(&class, &Default::default()).await;
    let _ = pvs.delete(&pv_name, &Default::default()).await;
    for name in ["nohost", "proj", "eph"] {
        env.pods().delete(name, &Default::default()).await.unwrap();
    }
    for name in ["nohost", "proj", "eph"] {
        env.wait_gone(name, 40).await;
    }
    env.stop_agent().await;
}
