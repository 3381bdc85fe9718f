//! Storage end to end with the real kubectl on `kcored up` (the walkthrough's machine
//! setup): a StatefulSet of three replicas with `volumeClaimTemplates` on the built-in
//! local provisioner keeps each ordinal's data on its own claim through a scale to one
//! and back to three; a claim of an expandable class grows through upstream's resize
//! flow; and with reclaim policy Retain, deleting the claims leaves the volumes Released
//! with their data.

mod common;

use common::*;

const NODE_IP: &str = "192.0.2.12";

/// A Retain, expandable class on the built-in provisioner, and the StatefulSet.
const APP: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: keep}
provisioner: kcore.dev/local-path
reclaimPolicy: Retain
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: db}}
  persistentVolumeClaimRetentionPolicy: {whenScaled: Retain, whenDeleted: Retain}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: kcore.local/demo:v1
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "[ -f /data/id ] || hostname > /data/id; exec sleep 3600"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: keep
      resources: {requests: {storage: 16Mi}}
"#;

/// The volume of claim `data-db-<i>` and its directory on the node.
fn volume_of(m: &Machine, i: usize) -> (String, std::path::PathBuf) {
    let pvc = m.kubectl_json(&["get", "pvc", &format!("data-db-{i}")]);
    assert_eq!(pvc["status"]["phase"], "Bound", "{pvc}");
    let pv = pvc["spec"]["volumeName"]
        .as_str()
        .expect("volume")
        .to_owned();
    let v = m.kubectl_json(&["get", "pv", &pv]);
    let dir = v["spec"]["local"]["path"]
        .as_str()
        .expect("local path")
        .into();
    (pv, dir)
}

fn pods_named(m: &Machine) -> Vec<String> {
    let l = m.kubectl_json(&["get", "pods", "-l", "app=db"]);
    let mut names: Vec<String> = l["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
#[ignore = "needs root"]
fn statefulset_claims_survive_scaling_grow_and_are_retained() {
    let mut m = Machine::new("ks", Some(NODE_IP));
    build_demo_image(&m.data, "v1");
    m.start_kcored(&[
        "up",
        "--listen",
        "127.0.0.1:6443",
        "--node-ip",
        NODE_IP,
        "--node-name",
        "store",
    ]);
    m.wait_node_ready("store");
    let app = m.data.join("storage-app.yaml");
    std::fs::write(&app, APP).unwrap();
    m.kubectl(&["apply", "-f", app.to_str().unwrap()]);
    m.kubectl(&["rollout", "status", "statefulset/db", "--timeout=180s"]);
    let before: Vec<_> = (0..3).map(|i| volume_of(&m, i)).collect();
    for (i, (_, dir)) in before.iter().enumerate() {
        let id = wait_for(30, "each ordinal's id on its volume", || {
            std::fs::read_to_string(dir.join("id")).ok()
        });
        assert_eq!(id.trim(), format!("db-{i}"));
    }
    let table = m.kubectl(&["get", "pvc"]);
    assert!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()[..6]
            == ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS", "MODES"],
        "{table}"
    );
    assert!(
        table.contains("16Mi") && table.contains("RWO") && table.contains("keep"),
        "{table}"
    );

    // 3 -> 1: the pods go, their claims stay (whenScaled: Retain)
    m.kubectl(&["scale", "statefulset/db", "--replicas=1"]);
    wait_for(90, "one pod left", || {
        (pods_named(&m) == ["db-0"]).then_some(())
    });
    for (i, volume) in before.iter().enumerate().skip(1) {
        assert_eq!(
            &volume_of(&m, i),
            volume,
            "claim data-db-{i} kept its volume"
        );
    }
    // 1 -> 3: the same claims, the same data, seen from inside the new pods
    m.kubectl(&["scale", "statefulset/db", "--replicas=3"]);
    m.kubectl(&["rollout", "status", "statefulset/db", "--timeout=180s"]);
    for (i, volume) in before.iter().enumerate() {
        assert_eq!(&volume_of(&m, i), volume);
        let id = m.kubectl(&["exec", &format!("db-{i}"), "--", "cat", "/data/id"]);
        assert_eq!(id.trim(), format!("db-{i}"));
    }

    // expansion: the class allows it, the directory-backed volume records it
    m.kubectl(&[
        "patch",
        "pvc",
        "data-db-0",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"32Mi"}}}}"#,
    ]);
    let pvc = wait_for(60, "the claim's capacity to grow", || {
        let p = m.kubectl_json(&["get", "pvc", "data-db-0"]);
        (p["status"]["capacity"]["storage"] == "32Mi").then_some(p)
    });
    assert_eq!(
        pvc["status"]["allocatedResources"]["storage"], "32Mi",
        "{pvc}"
    );
    assert!(
        pvc["status"]["conditions"].is_null(),
        "resize finished: {pvc}"
    );
    let pv = m.kubectl_json(&["get", "pv", &before[0].0]);
    assert_eq!(pv["spec"]["capacity"]["storage"], "32Mi");
    let events = m.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=data-db-0",
    ]);
    assert!(
        events.contains("Resizing") && events.contains("VolumeResizeSuccessful"),
        "{events}"
    );

    // delete the set and the claims: Retain leaves the volumes Released, with data
    m.kubectl(&[
        "delete",
        "statefulset",
        "db",
        "--wait=true",
        "--timeout=60s",
    ]);
    wait_for(60, "the pods to go", || {
        pods_named(&m).is_empty().then_some(())
    });
    m.kubectl(&["delete", "pvc", "--all", "--wait=true", "--timeout=60s"]);
    wait_for(60, "the volumes Released", || {
        before
            .iter()
            .all(|(pv, _)| m.kubectl_json(&["get", "pv", pv])["status"]["phase"] == "Released")
            .then_some(())
    });
    for (i, (_, dir)) in before.iter().enumerate() {
        assert_eq!(
            std::fs::read_to_string(dir.join("id")).unwrap().trim(),
            format!("db-{i}"),
            "a Retain volume keeps its data"
        );
    }
    let table = m.kubectl(&["get", "pv"]);
    assert_eq!(table.matches("Released").count(), 3, "{table}");
    m.stop_kcored(true);
}
