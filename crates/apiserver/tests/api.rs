//! Object semantics through the in-process [`Api`] on the embedded store.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kcore_apiserver::{
    Api, ListOptions, RedbStorage, Storage, WatchEvent, WatchEvents, WriteOptions,
};
use serde_json::{json, Value};

static COUNTER: AtomicU32 = AtomicU32::new(0);

struct Env {
    api: Api,
    storage: Arc<RedbStorage>,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-api-{}-{n}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let storage = Arc::new(RedbStorage::open(dir.path()).expect("open"));
    let api = Api::new(storage.clone());
    api.bootstrap().await.expect("bootstrap");
    Env {
        api,
        storage,
        _dir: dir,
    }
}

fn cm(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

async fn next(w: &mut WatchEvents) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch event in time")
        .expect("stream open")
}

const W: WriteOptions = WriteOptions {
    dry_run: false,
    field_manager: None,
    force: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_sets_server_fields_and_generate_name() {
    let e = env().await;
    let mut obj = cm("", json!({}));
    obj["metadata"] = json!({"generateName": "gen-"});
    let out = e
        .api
        .create_value("v1", "configmaps", Some("default"), obj, &W)
        .await
        .expect("create");
    let m = &out["metadata"];
    let name = m["name"].as_str().expect("name");
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    assert_eq!(m["uid"].as_str().map(str::len), Some(36));
    assert!(m["creationTimestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(m["generation"], 1);
    assert_eq!(m["namespace"], "default");
    assert!(m["resourceVersion"]
        .as_str()
        .is_some_and(|r| r.parse::<u64>().is_ok()));
    // A missing namespace is 404, and nothing is stored.
    let err = e
        .api
        .create_value("v1", "configmaps", Some("nope"), cm("a", json!({})), &W)
        .await
        .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    // Duplicate create is 409 AlreadyExists.
    let err = e
        .api
        .create_value("v1", "configmaps", Some("default"), cm(name, json!({})), &W)
        .await
        .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    // Dry run validates but stores nothing.
    let dry = WriteOptions { dry_run: true, ..W };
    e.api
        .create_value(
            "v1",
            "configmaps",
            Some("default"),
            cm("dry", json!({})),
            &dry,
        )
        .await
        .expect("dry run");
    let err = e
        .api
        .get_value("v1", "configmaps", Some("default"), "dry")
        .await
        .unwrap_err();
    assert_eq!(err.code, 404);
}

/// status.qosClass follows upstream's ComputePodQOS (kcore-k8s): init containers count
/// (the API server used to look at app containers only, the node at both), a limit
/// implies an equal request, and quantities compare by value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_qos_class_counts_init_containers() {
    let e = env().await;
    let g = json!({"limits": {"cpu": "1", "memory": "1Gi"}});
    let cases = [
        (
            "best-effort",
            json!([{"name": "c", "image": "busybox"}]),
            None,
            "BestEffort",
        ),
        (
            "guaranteed",
            json!([{"name": "c", "image": "busybox", "resources": g}]),
            None,
            "Guaranteed",
        ),
        (
            // was Burstable: "1" and "1000m" compared as JSON text
            "same-value-other-spelling",
            json!([{"name": "c", "image": "busybox", "resources":
                {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1024Mi"}}}]),
            None,
            "Guaranteed",
        ),
        (
            // was Guaranteed: the init container's request without limits was not seen
            "burstable-init",
            json!([{"name": "c", "image": "busybox", "resources": g}]),
            Some(
                json!([{"name": "i", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}]),
            ),
            "Burstable",
        ),
        (
            "guaranteed-init",
            json!([{"name": "c", "image": "busybox", "resources": g}]),
            Some(json!([{"name": "i", "image": "busybox", "resources": g}])),
            "Guaranteed",
        ),
    ];
    for (name, containers, init, want) in cases {
        let mut p = pod(name);
        p["spec"]["containers"] = containers;
        if let Some(init) = init {
            p["spec"]["initContainers"] = init;
        }
        let out = e
            .api
            .create_value("v1", "pods", Some("default"), p, &W)
            .await
            .expect("create pod");
        assert_eq!(out["status"]["qosClass"], want, "{name}");
        // and what the typed object model computes from the stored spec agrees
        let stored: Pod = serde_json::from_value(out).unwrap();
        assert_eq!(
            kcore_k8s::pod_qos_class(stored.spec.as_ref().unwrap()).as_str(),
            want,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_concurrency_and_generation() {
    let e = env().await;
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}});
    let created = e
        .api
        .create_value("apps/v1", "deployments", Some("default"), d, &W)
        .await
        .expect("create");
    assert_eq!(created["spec"]["replicas"], 1);
    assert_eq!(created["spec"]["progressDeadlineSeconds"], 600);
    assert!(created.get("status").is_none_or(Value::is_null));
    // A label change does not bump generation.
    let label = br#"{"metadata":{"labels":{"x":"y"}}}"#;
    let out = e
        .api
        .patch_value(
            "apps/v1",
            "deployments",
            Some("default"),
            "d",
            kcore_apiserver::PatchType::Merge,
            label,
            &W,
        )
        .await
        .expect("patch");
    assert_eq!(out["metadata"]["generation"], 1);
    // A spec change does.
    let spec = br#"{"spec":{"replicas":4}}"#;
    let out = e
        .api
        .patch_value(
            "apps/v1",
            "deployments",
            Some("default"),
            "d",
            kcore_apiserver::PatchType::Merge,
            spec,
            &W,
        )
        .await
        .expect("patch");
    assert_eq!(out["metadata"]["generation"], 2);
    // A patch carrying a stale resourceVersion is a 409 Conflict.
    let stale = format!(
        r#"{{"metadata":{{"resourceVersion":"{}"}},"spec":{{"replicas":5}}}}"#,
        created["metadata"]["resourceVersion"].as_str().expect("rv")
    );
    let err = e
        .api
        .patch_value(
            "apps/v1",
            "deployments",
            Some("default"),
            "d",
            kcore_apiserver::PatchType::Merge,
            stale.as_bytes(),
            &W,
        )
        .await
        .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );
    let now = e
        .api
        .get_value("apps/v1", "deployments", Some("default"), "d")
        .await
        .expect("get");
    assert_eq!(now["spec"]["replicas"], 4, "the stale write stored nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_a_separate_subresource() {
    let e = env().await;
    let p: Pod = serde_json::from_value(pod("p")).expect("pod");
    let created = e.api.create(Some("default"), &p).await.expect("create");
    assert_eq!(
        created.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    assert_eq!(
        created
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref()),
        Some("Always")
    );
    // The main resource ignores status changes...
    let mut changed = created.clone();
    changed.status.as_mut().expect("status").phase = Some("Running".into());
    let out = e
        .api
        .replace(Some("default"), &changed)
        .await
        .expect("replace");
    assert_eq!(
        out.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    // ...and the status subresource ignores spec changes.
    let mut st = out.clone();
    st.status.as_mut().expect("status").phase = Some("Running".into());
    st.spec.as_mut().expect("spec").restart_policy = Some("Never".into());
    let out = e
        .api
        .replace_status(Some("default"), &st)
        .await
        .expect("status");
    assert_eq!(
        out.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    assert_eq!(
        out.spec.as_ref().and_then(|s| s.restart_policy.as_deref()),
        Some("Always")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_deletion() {
    let e = env().await;
    let mut obj = cm("held", json!({}));
    obj["metadata"]["finalizers"] = json!(["example.com/keep"]);
    e.api
        .create_value("v1", "configmaps", Some("default"), obj, &W)
        .await
        .expect("create");
    let deleted: ConfigMap = e.api.delete(Some("default"), "held").await.expect("delete");
    assert!(deleted.metadata.deletion_timestamp.is_some());
    let still: ConfigMap = e
        .api
        .get(Some("default"), "held")
        .await
        .expect("still there");
    assert!(still.metadata.deletion_timestamp.is_some());
    let patch = br#"{"metadata":{"finalizers":null}}"#;
    e.api
        .patch_value(
            "v1",
            "configmaps",
            Some("default"),
            "held",
            kcore_apiserver::PatchType::Merge,
            patch,
            &W,
        )
        .await
        .expect("remove finalizer");
    let err = e
        .api
        .get_value("v1", "configmaps", Some("default"), "held")
        .await
        .unwrap_err();
    assert_eq!(
        err.code, 404,
        "removing the last finalizer deletes the object"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_and_selectors() {
    let e = env().await;
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        e.api
            .create_value(
                "v1",
                "configmaps",
                Some("default"),
                cm(&format!("c{i}"), json!({"tier": tier})),
                &W,
            )
            .await
            .expect("create");
    }
    let mut names = Vec::new();
    let mut cont: Option<String> = None;
    let mut pages = 0;
    loop {
        let opts = ListOptions {
            limit: Some(3),
            continue_token: cont.clone(),
            ..Default::default()
        };
        let page = e
            .api
            .list_value("v1", "configmaps", Some("default"), &opts)
            .await
            .expect("list");
        assert_eq!(page["kind"], "ConfigMapList");
        pages += 1;
        names.extend(page["items"].as_array().expect("items").iter().map(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }));
        cont = page["metadata"]["continue"].as_str().map(str::to_owned);
        if cont.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
    let opts = ListOptions {
        label_selector: Some("tier=even".into()),
        limit: Some(2),
        ..Default::default()
    };
    let page = e
        .api
        .list_value("v1", "configmaps", None, &opts)
        .await
        .expect("list");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    assert!(page["metadata"]["continue"].is_string());
    let opts = ListOptions {
        field_selector: Some("metadata.name=c3".into()),
        ..Default::default()
    };
    let (items, _) = e
        .api
        .list::<ConfigMap>(Some("default"), &opts)
        .await
        .expect("list");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].metadata.name.as_deref(), Some("c3"));
}

fn list_names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            format!(
                "{}={}",
                i["metadata"]["name"].as_str().unwrap_or_default(),
                i["data"]["k"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn rv_of(v: &Value) -> String {
    v["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_resource_versions_from_the_watch_cache() {
    let e = env().await;
    let ns = Some("default");
    let list = |rv: Option<&str>, m: Option<&str>| ListOptions {
        resource_version: rv.map(str::to_owned),
        resource_version_match: m.map(str::to_owned),
        ..Default::default()
    };
    let with = |name: &str, v: &str| {
        let mut c = cm(name, json!({}));
        c["data"]["k"] = json!(v);
        c
    };
    e.api
        .create_value("v1", "configmaps", ns, with("a", "1"), &W)
        .await
        .expect("a");
    let b = e
        .api
        .create_value("v1", "configmaps", ns, with("b", "1"), &W)
        .await
        .expect("b");
    let at_b = rv_of(&b);
    let a2: ConfigMap = serde_json::from_value(with("a", "2")).expect("cm");
    e.api.replace(ns, &a2).await.expect("update a");
    let _: ConfigMap = e.api.delete(ns, "b").await.expect("delete b");

    // Unset: the latest state, read-your-writes.
    let now = e
        .api
        .list_value("v1", "configmaps", ns, &list(None, None))
        .await
        .expect("list");
    assert_eq!(list_names(&now), ["a=2"]);
    let current = rv_of(&now);
    // "0": whatever the cache holds (here the same).
    let any = e
        .api
        .list_value("v1", "configmaps", ns, &list(Some("0"), None))
        .await
        .expect("list rv=0");
    assert_eq!(list_names(&any), ["a=2"]);
    // Exact: as of b's creation, from the cache's history.
    let exact = e
        .api
        .list_value("v1", "configmaps", ns, &list(Some(&at_b), Some("Exact")))
        .await
        .expect("exact");
    assert_eq!(list_names(&exact), ["a=1", "b=1"]);
    assert_eq!(rv_of(&exact), at_b);
    // NotOlderThan an old revision: at least that new, so the latest.
    let nto = e
        .api
        .list_value(
            "v1",
            "configmaps",
            ns,
            &list(Some(&at_b), Some("NotOlderThan")),
        )
        .await
        .expect("not older than");
    assert_eq!(
        (list_names(&nto), rv_of(&nto)),
        (vec!["a=2".to_string()], current.clone())
    );
    // A revision from the future times out with 504 "Too large resource version".
    let future = (current.parse::<u64>().unwrap() + 1000).to_string();
    let err = e
        .api
        .list_value("v1", "configmaps", ns, &list(Some(&future), None))
        .await
        .unwrap_err();
    assert_eq!(err.code, 504);
    assert!(err.message.contains("Too large resource version"), "{err}");
    // Invalid combinations are 400.
    for (rv, m) in [
        (Some("0"), Some("Exact")),
        (None, Some("Exact")),
        (Some("1"), Some("Sometimes")),
        (Some("x"), None),
    ] {
        let err = e
            .api
            .list_value("v1", "configmaps", ns, &list(rv, m))
            .await
            .unwrap_err();
        assert_eq!(err.code, 400, "{rv:?} {m:?}");
    }

    // A second API server process over the same store starts its cache now: older
    // revisions come from the store's history instead.
    let fresh = Api::new(e.storage.clone());
    let exact = fresh
        .list_value("v1", "configmaps", ns, &list(Some(&at_b), Some("Exact")))
        .await
        .expect("exact from the store");
    assert_eq!(list_names(&exact), ["a=1", "b=1"]);
    e.storage
        .compact(current.parse().unwrap())
        .await
        .expect("compact");
    let err = fresh
        .list_value("v1", "configmaps", ns, &list(Some(&at_b), Some("Exact")))
        .await
        .unwrap_err();
    assert_eq!(err.code, 410, "compacted history is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_a_consistent_snapshot() {
    let e = env().await;
    for n in ["p1", "p2", "p3"] {
        e.api
            .create_value("v1", "configmaps", Some("default"), cm(n, json!({})), &W)
            .await
            .expect("create");
    }
    let first = e
        .api
        .list_value(
            "v1",
            "configmaps",
            Some("default"),
            &ListOptions {
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("page 1");
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("continue")
        .to_owned();
    // Changes after the first page do not show in the next ones.
    e.api
        .create_value("v1", "configmaps", Some("default"), cm("p4", json!({})), &W)
        .await
        .expect("p4");
    let _: ConfigMap = e.api.delete(Some("default"), "p3").await.expect("delete");
    let second = e
        .api
        .list_value(
            "v1",
            "configmaps",
            Some("default"),
            &ListOptions {
                limit: Some(2),
                continue_token: Some(token),
                ..Default::default()
            },
        )
        .await
        .expect("page 2");
    assert_eq!(list_names(&second), ["p3=v"]);
    assert!(second["metadata"]["continue"].is_null());
    assert_eq!(rv_of(&second), rv_of(&first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_semantics() {
    let e = env().await;
    e.api
        .create_value(
            "v1",
            "configmaps",
            Some("default"),
            cm("a", json!({"app": "x"})),
            &W,
        )
        .await
        .expect("create");
    // No resourceVersion: ADDED for what exists, then live events.
    let opts = ListOptions {
        label_selector: Some("app=x".into()),
        ..Default::default()
    };
    let mut w = e
        .api
        .watch::<ConfigMap>(Some("default"), &opts)
        .await
        .expect("watch");
    let ev = next(&mut w).await;
    assert_eq!(
        (ev.kind, ev.object["metadata"]["name"].as_str()),
        ("ADDED", Some("a"))
    );
    e.api
        .create_value(
            "v1",
            "configmaps",
            Some("default"),
            cm("b", json!({"app": "x"})),
            &W,
        )
        .await
        .expect("create");
    e.api
        .create_value(
            "v1",
            "configmaps",
            Some("default"),
            cm("other", json!({"app": "y"})),
            &W,
        )
        .await
        .expect("create");
    let ev = next(&mut w).await;
    assert_eq!(
        (ev.kind, ev.object["metadata"]["name"].as_str()),
        ("ADDED", Some("b"))
    );
    // Leaving the selector is a DELETED for this watcher.
    let relabel = br#"{"metadata":{"labels":{"app":"z"}}}"#;
    e.api
        .patch_value(
            "v1",
            "configmaps",
            Some("default"),
            "b",
            kcore_apiserver::PatchType::Merge,
            relabel,
            &W,
        )
        .await
        .expect("patch");
    let ev = next(&mut w).await;
    assert_eq!(
        (ev.kind, ev.object["metadata"]["name"].as_str()),
        ("DELETED", Some("b"))
    );
    let _: ConfigMap = e.api.delete(Some("default"), "a").await.expect("delete");
    let ev = next(&mut w).await;
    assert_eq!(
        (ev.kind, ev.object["metadata"]["name"].as_str()),
        ("DELETED", Some("a"))
    );

    // sendInitialEvents: the initial state ends with an annotated BOOKMARK.
    let opts = ListOptions {
        send_initial_events: Some(true),
        allow_watch_bookmarks: true,
        resource_version_match: Some("NotOlderThan".into()),
        ..Default::default()
    };
    let mut w = e
        .api
        .watch::<ConfigMap>(Some("default"), &opts)
        .await
        .expect("watch");
    let mut added = 0;
    loop {
        let ev = next(&mut w).await;
        if ev.kind == "BOOKMARK" {
            assert_eq!(
                ev.object["metadata"]["annotations"]["k8s.io/initial-events-end"],
                "true"
            );
            assert!(ev.object["metadata"]["resourceVersion"].is_string());
            break;
        }
        assert_eq!(ev.kind, "ADDED");
        added += 1;
    }
    assert_eq!(added, 2, "b and other remain");

    // After compaction, watching from an old revision gets a 410 ERROR event.
    let rev = e.storage.revision().await.expect("rev").current;
    e.storage.compact(rev).await.expect("compact");
    let opts = ListOptions {
        resource_version: Some("1".into()),
        ..Default::default()
    };
    let mut w = e
        .api
        .watch::<ConfigMap>(Some("default"), &opts)
        .await
        .expect("watch");
    let ev = next(&mut w).await;
    assert_eq!(ev.kind, "ERROR");
    assert_eq!(
        (ev.object["code"].as_u64(), ev.object["reason"].as_str()),
        (Some(410), Some("Expired"))
    );

    // timeoutSeconds ends the stream.
    let opts = ListOptions {
        resource_version: Some(rev.to_string()),
        timeout_seconds: Some(1),
        ..Default::default()
    };
    let mut w = e
        .api
        .watch::<ConfigMap>(Some("default"), &opts)
        .await
        .expect("watch");
    let end = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("ends in time");
    assert!(end.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_cluster_ips_and_node_ports() {
    let e = env().await;
    let svc = |name: &str, ty: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": ty, "selector": {"app": "x"}, "ports": [{"port": 80}]}})
    };
    let a = e
        .api
        .create_value("v1", "services", Some("default"), svc("a", "ClusterIP"), &W)
        .await
        .expect("a");
    let b = e
        .api
        .create_value("v1", "services", Some("default"), svc("b", "NodePort"), &W)
        .await
        .expect("b");
    let (ia, ib) = (
        a["spec"]["clusterIP"].as_str().expect("ip a"),
        b["spec"]["clusterIP"].as_str().expect("ip b"),
    );
    assert_ne!(ia, ib);
    assert!(ia.starts_with("10.") && ib.starts_with("10."));
    assert_eq!(a["spec"]["clusterIPs"], json!([ia]));
    let np = b["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("node port");
    assert!((30000..=32767).contains(&np));
    assert_eq!(b["spec"]["ports"][0]["targetPort"], 80);
    // A replace that omits the allocated values keeps them.
    let replaced = e
        .api
        .replace::<Service>(
            Some("default"),
            &serde_json::from_value(svc("b", "NodePort")).expect("svc"),
        )
        .await
        .expect("replace");
    let spec = replaced.spec.expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some(ib));
    assert_eq!(spec.ports.expect("ports")[0].node_port, Some(np as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_names_each_field() {
    let e = env().await;
    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name", "labels": {"a": "-x-"}},
        "spec": {"containers": [{"name": "c"}, {"name": "c", "image": "i", "ports": [{"containerPort": 70000}]}]}});
    let err = e
        .api
        .create_value("v1", "pods", Some("default"), bad, &W)
        .await
        .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let status = err.to_status();
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .map(|c| c["field"].as_str().unwrap_or_default())
        .collect();
    for want in [
        "metadata.name",
        "metadata.labels",
        "spec.containers[0].image",
        "spec.containers[1].name",
        "spec.containers[1].ports[0].containerPort",
    ] {
        assert!(fields.contains(&want), "missing {want}: {fields:?}");
    }
    assert_eq!(status["details"]["kind"], "Pod");
    let list = e
        .api
        .list_value("v1", "pods", Some("default"), &ListOptions::default())
        .await
        .expect("list");
    assert!(
        list["items"].as_array().expect("items").is_empty(),
        "nothing stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_waits_for_its_finalizer() {
    let e = env().await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
    let created = e
        .api
        .create_value("v1", "namespaces", None, ns, &W)
        .await
        .expect("ns");
    assert_eq!(created["status"]["phase"], "Active");
    assert_eq!(created["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(
        created["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team"
    );
    e.api
        .create_value("v1", "configmaps", Some("team"), cm("x", json!({})), &W)
        .await
        .expect("cm");
    let _: k8s_openapi::api::core::v1::Namespace =
        e.api.delete(None, "team").await.expect("delete ns");
    // Terminating: content stays until the namespace controller removes it.
    let ns = e
        .api
        .get_value("v1", "namespaces", None, "team")
        .await
        .expect("still there");
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(ns["metadata"]["deletionTimestamp"].is_string());
    e.api
        .get_value("v1", "configmaps", Some("team"), "x")
        .await
        .expect("content is not wiped by the API server");
    let err = e
        .api
        .create_value("v1", "configmaps", Some("team"), cm("y", json!({})), &W)
        .await
        .unwrap_err();
    assert_eq!(err.code, 403, "no new content in a terminating namespace");
    // An update of the namespace itself cannot drop the finalizer.
    let mut upd = ns.clone();
    upd["spec"]["finalizers"] = json!([]);
    let kept = e
        .api
        .replace::<k8s_openapi::api::core::v1::Namespace>(
            None,
            &serde_json::from_value(upd).expect("ns"),
        )
        .await
        .expect("update");
    assert_eq!(
        kept.spec.and_then(|s| s.finalizers),
        Some(vec!["kubernetes".to_string()])
    );
    let _: ConfigMap = e.api.delete(Some("team"), "x").await.expect("delete cm");
    let out = e
        .api
        .finalize_namespace("team", &[])
        .await
        .expect("finalize");
    assert!(out["metadata"]["deletionTimestamp"].is_string());
    let err = e
        .api
        .get_value("v1", "namespaces", None, "team")
        .await
        .unwrap_err();
    assert_eq!(err.code, 404, "finalized namespace is gone");
}

fn ready_pod(name: &str, ready: bool) -> Value {
    let mut p = pod(name);
    p["metadata"]["labels"] = json!({"app": "db"});
    p["status"] = json!({"phase": "Running", "conditions": [
        {"type": "Ready", "status": if ready { "True" } else { "False" }}]});
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_honours_pod_disruption_budgets() {
    let e = env().await;
    for (name, ready) in [("db-0", true), ("db-1", true), ("db-2", false)] {
        let created = e
            .api
            .create_value("v1", "pods", Some("default"), ready_pod(name, ready), &W)
            .await
            .expect("pod");
        let mut st = created.clone();
        st["status"] = ready_pod(name, ready)["status"].clone();
        e.api
            .replace_status::<Pod>(Some("default"), &serde_json::from_value(st).expect("pod"))
            .await
            .expect("status");
    }
    // Pods not matched by any budget go at once.
    e.api
        .create_value("v1", "pods", Some("default"), pod("free"), &W)
        .await
        .expect("pod");
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "db"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}});
    e.api
        .create_value(
            "policy/v1",
            "poddisruptionbudgets",
            Some("default"),
            pdb,
            &W,
        )
        .await
        .expect("pdb");
    let opts = kcore_apiserver::DeleteOptions::default();
    e.api
        .evict("default", "free", &opts)
        .await
        .expect("evict free");
    // Two healthy, one required: one healthy pod may go, the second may not.
    e.api.evict("default", "db-0", &opts).await.expect("first");
    let err = e.api.evict("default", "db-1", &opts).await.unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (429, "TooManyRequests"));
    let cause = &err.details.expect("details")["causes"][0];
    assert_eq!(cause["reason"], "DisruptionBudget");
    assert!(
        cause["message"]
            .as_str()
            .is_some_and(|m| m.contains("needs 1 healthy pods and has 1")),
        "{cause}"
    );
    e.api
        .get_value("v1", "pods", Some("default"), "db-1")
        .await
        .expect("a refused eviction deletes nothing");
    // An unhealthy pod may go while the budget is met (IfHealthyBudget).
    e.api
        .evict("default", "db-2", &opts)
        .await
        .expect("unhealthy pod");
    // Two budgets on one pod: upstream refuses with 500.
    let second = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "db2"},
        "spec": {"maxUnavailable": "50%", "selector": {"matchLabels": {"app": "db"}}}});
    e.api
        .create_value(
            "policy/v1",
            "poddisruptionbudgets",
            Some("default"),
            second,
            &W,
        )
        .await
        .expect("pdb");
    let err = e.api.evict("default", "db-1", &opts).await.unwrap_err();
    assert_eq!(err.code, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_and_revision_resources_are_served() {
    let e = env().await;
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    let out = e
        .api
        .create_value("v1", "persistentvolumeclaims", Some("default"), pvc, &W)
        .await
        .expect("pvc");
    assert_eq!(out["spec"]["resources"]["requests"]["storage"], "1Gi");
    let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv1"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/tmp/pv1"}}});
    e.api
        .create_value("v1", "persistentvolumes", None, pv, &W)
        .await
        .expect("pv");
    let cr = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": "web-abc"}, "revision": 1, "data": {"spec": {"template": {}}}});
    let out = e
        .api
        .create_value("apps/v1", "controllerrevisions", Some("default"), cr, &W)
        .await
        .expect("controllerrevision");
    assert_eq!(out["revision"], 1);
    let bad = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": "x"}, "revision": "one"});
    let err = e
        .api
        .create_value("apps/v1", "controllerrevisions", Some("default"), bad, &W)
        .await
        .unwrap_err();
    assert_eq!(err.code, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_patch_delete_and_bind() {
    let e = env().await;
    let p: Pod = serde_json::from_value(pod("p")).expect("pod");
    e.api.create(Some("default"), &p).await.expect("create");
    let patched: Pod = e
        .api
        .patch(
            Some("default"),
            "p",
            kcore_apiserver::PatchType::Strategic,
            &json!({"metadata": {"labels": {"tier": "web"}}}),
            &W,
        )
        .await
        .expect("patch");
    assert_eq!(patched.metadata.labels.expect("labels")["tier"], "web");
    e.api
        .bind_pod("default", "p", "node-1")
        .await
        .expect("bind");
    let bound: Pod = e.api.get(Some("default"), "p").await.expect("get");
    assert_eq!(
        bound.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("node-1")
    );
    let err = e.api.bind_pod("default", "p", "node-2").await.unwrap_err();
    assert_eq!(err.code, 409);
    // A bound pod is deleted gracefully, unless the grace period is zero.
    let first: Pod = e.api.delete(Some("default"), "p").await.expect("delete");
    assert!(first.metadata.deletion_timestamp.is_some());
    assert!(
        e.api.get::<Pod>(Some("default"), "p").await.is_ok(),
        "still terminating"
    );
    let opts = kcore_apiserver::DeleteOptions {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    e.api
        .delete_with::<Pod>(Some("default"), "p", &opts)
        .await
        .expect("force delete");
    assert_eq!(
        e.api
            .get::<Pod>(Some("default"), "p")
            .await
            .unwrap_err()
            .code,
        404
    );
}

/// Pod watches go through the shared fan-out indexed by `spec.nodeName`: a node's watch
/// sees its pods only (also leaving and coming back through the index), a watch without
/// selector sees every pod, and a watch from an earlier revision replays the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_watches_indexed_by_node() {
    let e = env().await;
    let on = |name: &str, node: &str| {
        let mut p = pod(name);
        p["spec"]["nodeName"] = json!(node);
        p
    };
    let start = e.storage.revision().await.expect("revision").current;
    let from_now = |selector: Option<&str>| ListOptions {
        field_selector: selector.map(str::to_owned),
        resource_version: Some(start.to_string()),
        ..Default::default()
    };
    let mut node_a = e
        .api
        .watch::<Pod>(None, &from_now(Some("spec.nodeName=node-a")))
        .await
        .expect("watch node-a");
    let mut all = e
        .api
        .watch::<Pod>(Some("default"), &from_now(None))
        .await
        .expect("watch all");
    for (name, node) in [("p1", "node-a"), ("p2", "node-b"), ("p3", "node-a")] {
        e.api
            .create_value("v1", "pods", Some("default"), on(name, node), &W)
            .await
            .expect("create");
    }
    let _: Pod = e.api.delete(Some("default"), "p1").await.expect("delete");
    let seen = |ev: &WatchEvent| {
        format!(
            "{} {}",
            ev.kind,
            ev.object["metadata"]["name"].as_str().unwrap_or("")
        )
    };
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(seen(&next(&mut node_a).await));
    }
    // p1's deletion sets a deletion mark first (MODIFIED) on a pod with a node
    assert_eq!(&got[..2], ["ADDED p1", "ADDED p3"]);
    assert!(got[2].ends_with(" p1"), "{got:?}");
    let mut everything = Vec::new();
    for _ in 0..3 {
        everything.push(seen(&next(&mut all).await));
    }
    assert_eq!(everything, ["ADDED p1", "ADDED p2", "ADDED p3"]);
    // a late watcher from the same revision replays node-a's events only
    let mut late = e
        .api
        .watch::<Pod>(None, &from_now(Some("spec.nodeName=node-a")))
        .await
        .expect("late watch");
    let first = seen(&next(&mut late).await);
    let second = seen(&next(&mut late).await);
    assert_eq!([first, second], ["ADDED p1", "ADDED p3"]);
    // node-b's watcher never sees node-a's pods, even with another selector term
    let mut node_b = e
        .api
        .watch::<Pod>(
            None,
            &from_now(Some("spec.nodeName=node-b,metadata.namespace=default")),
        )
        .await
        .expect("watch node-b");
    assert_eq!(seen(&next(&mut node_b).await), "ADDED p2");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), node_b.next())
            .await
            .is_err(),
        "node-b saw another node's pod"
    );
}
