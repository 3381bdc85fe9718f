//! Storage end to end with the real kubectl on `kcored up` (the walkthrough's machine
//! setup): a StatefulSet of three replicas with `volumeClaimTemplates` on the built-in
//! local provisioner keeps each ordinal's data on its own claim through a scale to one
//! and back to three; a claim of an expandable class grows through upstream's resize
//! flow; a change of `persistentVolumeClaimRetentionPolicy` re-owns the claims that
//! exist; the node publishes its free storage (CSIStorageCapacity) and a claim no node
//! can hold keeps its pod Pending with upstream's "did not have enough free storage";
//! and with reclaim policy Retain, deleting the claims leaves the volumes Released with
//! their data.
//!
//! The demo database as a StatefulSet on loop-mounted volumes (`fsType: ext4`): its
//! records outlive its pod, a write past the claim's capacity fails with ENOSPC, the
//! claim grows with its file system, and `whenDeleted: Delete` with reclaim policy
//! Delete removes the claims, the volumes, their files and their mounts.

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

    // a change of the retention policy re-owns the claims that exist, as upstream
    let owned_by_set = |m: &Machine| {
        (0..3).all(|i| {
            let c = m.kubectl_json(&["get", "pvc", &format!("data-db-{i}")]);
            c["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| {
                    o.iter()
                        .any(|o| o["kind"] == "StatefulSet" && o["name"] == "db")
                })
        })
    };
    assert!(!owned_by_set(&m), "whenDeleted: Retain owns no claim");
    let policy = |when_deleted: &str| {
        format!(
            r#"{{"spec":{{"persistentVolumeClaimRetentionPolicy":{{"whenDeleted":"{when_deleted}"}}}}}}"#
        )
    };
    m.kubectl(&["patch", "statefulset", "db", "-p", &policy("Delete")]);
    wait_for(60, "the claims owned by the set", || {
        owned_by_set(&m).then_some(())
    });
    m.kubectl(&["patch", "statefulset", "db", "-p", &policy("Retain")]);
    wait_for(60, "the claims let go by the set", || {
        (0..3)
            .all(|i| {
                let c = m.kubectl_json(&["get", "pvc", &format!("data-db-{i}")]);
                c["metadata"]["ownerReferences"]
                    .as_array()
                    .is_none_or(|o| o.iter().all(|o| o["kind"] != "StatefulSet"))
            })
            .then_some(())
    });

    // the node publishes its free storage, and a claim no node can hold keeps its pod
    // Pending with upstream's reason, nothing provisioned
    let driver = m.kubectl(&["get", "csidriver", "kcore.dev.local-path"]);
    let header: Vec<_> = driver.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header[3], "STORAGECAPACITY", "{driver}");
    assert_eq!(
        driver.lines().nth(1).unwrap().split_whitespace().nth(3),
        Some("true"),
        "{driver}"
    );
    let caps = wait_for(60, "the node's capacity for class keep", || {
        let l = m.kubectl_json(&["get", "csistoragecapacities", "-n", "kube-system"]);
        l["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["storageClassName"] == "keep")
            .cloned()
    });
    assert_eq!(
        caps["nodeTopology"]["matchLabels"]["kubernetes.io/hostname"], "store",
        "{caps}"
    );
    let huge = m.data.join("huge.yaml");
    std::fs::write(
        &huge,
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: huge}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: keep
  resources: {requests: {storage: 1Ei}}
---
apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  containers:
  - name: c
    image: kcore.local/demo:v1
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: huge}}]
"#,
    )
    .unwrap();
    m.kubectl(&["apply", "-f", huge.to_str().unwrap()]);
    let why = wait_for(60, "FailedScheduling for the huge claim", || {
        let e = m.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=huge",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        e.contains("did not have enough free storage").then_some(e)
    });
    assert!(
        why.contains("1 node(s) did not have enough free storage"),
        "{why}"
    );
    let pod = m.kubectl_json(&["get", "pod", "huge"]);
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    assert!(pod["spec"]["nodeName"].is_null(), "{pod}");
    let claim = m.kubectl_json(&["get", "pvc", "huge"]);
    assert!(
        claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"].is_null(),
        "no node was chosen for it: {claim}"
    );
    m.kubectl(&[
        "delete",
        "-f",
        huge.to_str().unwrap(),
        "--wait=true",
        "--timeout=60s",
    ]);

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

/// An expandable class of loop-mounted ext4 volumes, and the demo database as a
/// StatefulSet whose claims go with it.
const DB: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: sized}
provisioner: kcore.dev/local-path
parameters: {fsType: ext4}
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: users}
spec:
  serviceName: users
  replicas: 1
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: users}}
  persistentVolumeClaimRetentionPolicy: {whenScaled: Retain, whenDeleted: Delete}
  template:
    metadata: {labels: {app: users}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: kcore.local/demo:v1
        imagePullPolicy: IfNotPresent
        args: ["db", "0.0.0.0:8080", "/data/users.jsonl"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: sized
      resources: {requests: {storage: 16Mi}}
"#;

/// Why this host cannot loop-mount volumes, if it cannot.
fn no_loop_volumes() -> Option<String> {
    if !std::path::Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join("mkfs.ext4").is_file());
    (!found).then(|| "no mkfs.ext4 on PATH or in /usr/sbin".into())
}

/// What `users-0`'s database answers to `GET /users`.
fn users(m: &Machine) -> String {
    m.kubectl(&[
        "exec",
        "users-0",
        "--",
        "wget",
        "-qO-",
        "http://127.0.0.1:8080/users",
    ])
}

/// Total KiB of the file system on the pod's `/data`, as `df` inside it sees it.
fn data_kib(m: &Machine) -> u64 {
    let df = m.kubectl(&["exec", "users-0", "--", "df", "-k", "/data"]);
    df.lines()
        .last()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("df: {df}"))
}

/// Whether a loop device still has `image` as its backing file.
fn attached(image: &std::path::Path) -> bool {
    std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| b.trim() == image.to_string_lossy())
        })
}

#[test]
#[ignore = "needs root"]
fn the_demo_database_on_loop_volumes_keeps_its_records_and_goes_with_its_set() {
    if let Some(why) = no_loop_volumes() {
        eprintln!("skipped: loop-mounted volumes need {why}");
        return;
    }
    let mut m = Machine::new("kl", Some(NODE_IP));
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
    let app = m.data.join("db.yaml");
    std::fs::write(&app, DB).unwrap();
    m.kubectl(&["apply", "-f", app.to_str().unwrap()]);
    m.kubectl(&["rollout", "status", "statefulset/users", "--timeout=180s"]);
    let pvc = m.kubectl_json(&["get", "pvc", "data-users-0"]);
    assert_eq!(pvc["status"]["phase"], "Bound", "{pvc}");
    assert_eq!(
        pvc["metadata"]["ownerReferences"][0]["name"], "users",
        "whenDeleted: Delete makes the set own its claims: {pvc}"
    );
    let pv_name = pvc["spec"]["volumeName"].as_str().unwrap().to_owned();
    let pv = m.kubectl_json(&["get", "pv", &pv_name]);
    assert_eq!(pv["spec"]["local"]["fsType"], "ext4", "{pv}");
    let dir = std::path::PathBuf::from(pv["spec"]["local"]["path"].as_str().unwrap());
    let image = std::path::PathBuf::from(format!("{}.img", dir.display()));
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 16 << 20);
    assert!(attached(&image), "{} is on a loop device", image.display());
    // the pod sees a file system of the claim's size, not the host's
    let kib = data_kib(&m);
    assert!((8 * 1024..=16 * 1024).contains(&kib), "{kib} KiB");

    // records written through the database
    for name in ["ada", "grace"] {
        let out = m.kubectl(&[
            "exec",
            "users-0",
            "--",
            "wget",
            "-qO-",
            &format!("--post-data={{\"name\":\"{name}\"}}"),
            "http://127.0.0.1:8080/users",
        ]);
        assert!(out.contains(name), "{out}");
    }
    // a write past the capacity fails, and nothing outside the volume fills up
    let out = m.kubectl(&[
        "exec",
        "users-0",
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=/data/fill bs=1M count=64 2>&1; echo rc=$?; rm -f /data/fill",
    ]);
    assert!(
        out.contains("No space left on device") && !out.contains("rc=0"),
        "{out}"
    );

    // the pod goes; its replacement has the same claim and the records
    let uid = m.kubectl_json(&["get", "pod", "users-0"])["metadata"]["uid"].clone();
    m.kubectl(&["delete", "pod", "users-0", "--wait=true", "--timeout=60s"]);
    wait_for(120, "a new users-0 Running", || {
        let p = m.kubectl_json(&["get", "pods", "-l", "app=users"]);
        p["items"]
            .as_array()?
            .iter()
            .any(|p| p["metadata"]["uid"] != uid && p["status"]["phase"] == "Running")
            .then_some(())
    });
    let pvc = m.kubectl_json(&["get", "pvc", "data-users-0"]);
    assert_eq!(
        pvc["spec"]["volumeName"],
        pv_name.as_str(),
        "the same claim and volume"
    );
    let records = wait_for(60, "the database to answer", || {
        let (ok, out) = m.kubectl_with(
            &m.kubeconfig(),
            &[
                "exec",
                "users-0",
                "--",
                "wget",
                "-qO-",
                "http://127.0.0.1:8080/users",
            ],
        );
        ok.then_some(out)
    });
    assert!(
        records.contains("ada") && records.contains("grace"),
        "{records}"
    );

    // expansion grows the file system: online where the node may resize a mounted file
    // system, else once no pod uses the volume (scaled to 0 here, as for an offline
    // expansion upstream)
    m.kubectl(&[
        "patch",
        "pvc",
        "data-users-0",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"48Mi"}}}}"#,
    ]);
    m.kubectl(&["scale", "statefulset/users", "--replicas=0"]);
    wait_for(120, "the claim's capacity to grow", || {
        let p = m.kubectl_json(&["get", "pvc", "data-users-0"]);
        (p["status"]["capacity"]["storage"] == "48Mi").then_some(())
    });
    m.kubectl(&["scale", "statefulset/users", "--replicas=1"]);
    m.kubectl(&["rollout", "status", "statefulset/users", "--timeout=180s"]);
    wait_for(60, "the database to answer", || {
        m.kubectl_with(
            &m.kubeconfig(),
            &[
                "exec",
                "users-0",
                "--",
                "wget",
                "-qO-",
                "http://127.0.0.1:8080/users",
            ],
        )
        .0
        .then_some(())
    });
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 48 << 20);
    assert!(attached(&image), "mounted again for the new pod");
    let kib = data_kib(&m);
    assert!(kib > 32 * 1024, "{kib} KiB after growing to 48Mi");
    let out = m.kubectl(&[
        "exec",
        "users-0",
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=/data/fill bs=1M count=24 2>&1 && rm /data/fill && echo grown",
    ]);
    assert!(out.contains("grown"), "{out}");
    assert!(users(&m).contains("grace"));

    // deleting the set deletes its claims (whenDeleted: Delete), and reclaim Delete
    // the volume, its mount, its loop device, its image and its directory
    m.kubectl(&[
        "delete",
        "statefulset",
        "users",
        "--wait=true",
        "--timeout=60s",
    ]);
    wait_for(120, "the claim to go", || {
        let (_, out) = m.kubectl_with(&m.kubeconfig(), &["get", "pvc", "data-users-0"]);
        out.contains("NotFound").then_some(())
    });
    wait_for(60, "the volume to go", || {
        let (_, out) = m.kubectl_with(&m.kubeconfig(), &["get", "pv", &pv_name]);
        out.contains("NotFound").then_some(())
    });
    wait_for(30, "the files to go", || {
        (!dir.exists() && !image.exists()).then_some(())
    });
    assert!(!attached(&image), "the loop device was detached");
    m.stop_kcored(true);
}
