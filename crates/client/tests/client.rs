//! kcore-client against an in-process kcore-apiserver: apply creates then
//! updates, get, list with a selector, delete, watch events, and errors.

use std::path::PathBuf;
use std::time::Duration;

use kcore_apiserver::ApiServer;
use kcore_client::{Client, Error, WatchEventKind};

/// A server on its own runtime, a kubeconfig for it, and the temp dir.
struct Server {
    rt: tokio::runtime::Runtime,
    running: Option<kcore_apiserver::RunningServer>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kcore-client-{}-", std::process::id()))
            .tempdir()
            .expect("temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let kubeconfig = dir.path().join("kubeconfig");
        let running = rt.block_on(async {
            let server = ApiServer::builder()
                .data_dir(dir.path().join("data"))
                .listen("127.0.0.1:0".parse().expect("addr"))
                .insecure_http(true)
                .build()
                .await
                .expect("server");
            server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
            server.spawn()
        });
        Server {
            rt,
            running: Some(running),
            kubeconfig,
            _dir: dir,
        }
    }

    fn client(&self) -> Client {
        Client::from_kubeconfig(Some(&self.kubeconfig)).expect("client")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = self.rt.block_on(r.shutdown());
        }
    }
}

const CM: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: web}
data:
  mode: one
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: other
  namespace: kube-system
  labels: {app: db}
data:
  mode: x
";

#[test]
fn apply_get_list_delete() {
    let server = Server::start();
    let client = server.client();
    assert_eq!(client.default_namespace(), "default");

    let stored = client.apply(CM, "kcore-client-test").expect("apply");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["kind"], "ConfigMap");
    assert_eq!(stored[0]["metadata"]["namespace"], "default");
    assert_eq!(stored[1]["metadata"]["namespace"], "kube-system");
    let uid = stored[0]["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();

    // A second apply updates in place (same uid, new data).
    let updated = client
        .apply(&CM.replace("mode: one", "mode: two"), "kcore-client-test")
        .expect("re-apply");
    assert_eq!(updated[0]["data"]["mode"], "two");
    assert_eq!(updated[0]["metadata"]["uid"], uid.as_str());
    let got = client
        .get("v1", "ConfigMap", None, "settings")
        .expect("get");
    assert_eq!(got["data"]["mode"], "two");
    assert_eq!(got["apiVersion"], "v1");

    // JSON manifests and other groups resolve through discovery.
    let dep = client
        .apply(
            r#"{"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}"#,
            "kcore-client-test",
        )
        .expect("apply deployment");
    assert_eq!(dep[0]["spec"]["replicas"], 2);

    let web = client
        .list("v1", "ConfigMap", None, Some("app=web"))
        .expect("list selector");
    let names: Vec<_> = web
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["settings"]);
    assert!(web.iter().all(|o| o["kind"] == "ConfigMap"));
    let in_ks = client
        .list("v1", "ConfigMap", Some("kube-system"), Some("app"))
        .expect("list ns");
    assert_eq!(in_ks.len(), 1);
    assert_eq!(in_ks[0]["metadata"]["name"], "other");
    let none = client
        .list("v1", "ConfigMap", Some("default"), Some("app=db"))
        .expect("list empty");
    assert!(none.is_empty());

    // Cluster-scoped kinds ignore the namespace.
    let nss = client
        .list("v1", "Namespace", None, None)
        .expect("namespaces");
    assert!(nss.iter().any(|n| n["metadata"]["name"] == "kube-system"));

    client
        .delete("v1", "ConfigMap", None, "settings")
        .expect("delete");
    match client.get("v1", "ConfigMap", None, "settings") {
        Err(Error::NotFound { kind, name, .. }) => {
            assert_eq!(kind, "ConfigMap");
            assert_eq!(name, "default/settings");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        client.delete("v1", "ConfigMap", Some("default"), "settings"),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn errors() {
    let server = Server::start();
    let client = server.client();
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {labels: {}}\n";
    match client.apply(bad, "t") {
        Err(Error::Manifest { document, message }) => {
            assert_eq!(document, 1);
            assert!(message.contains("metadata.name"), "{message}");
        }
        other => panic!("expected Manifest, got {other:?}"),
    }
    // Nothing was applied: the manifest is checked before any request.
    assert!(matches!(
        client.get("v1", "ConfigMap", None, "ok"),
        Err(Error::NotFound { .. })
    ));
    match client.apply("apiVersion: v1\nkind: [\n", "t") {
        Err(Error::Manifest { document: 0, .. }) => {}
        other => panic!("expected Manifest, got {other:?}"),
    }
    assert!(matches!(
        client.get("example.com/v1", "Widget", None, "w"),
        Err(Error::Discovery { .. })
    ));
    assert!(matches!(
        client.get("v1", "NoSuchKind", None, "w"),
        Err(Error::Discovery { .. })
    ));
    assert!(matches!(
        client.list("a/b/c", "Pod", None, None),
        Err(Error::InvalidArgument { .. })
    ));
    // Another manager changing the same field conflicts unless forced.
    client
        .apply(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owned}\ndata: {k: a}\n",
            "one",
        )
        .expect("apply one");
    match client.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owned}\ndata: {k: b}\n",
        "two",
    ) {
        Err(Error::Conflict { name, .. }) => assert_eq!(name, "default/owned"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    let forced = client
        .apply_with(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owned}\ndata: {k: b}\n",
            "two",
            true,
        )
        .expect("forced");
    assert_eq!(forced[0]["data"]["k"], "b");
    // A kubeconfig that does not exist.
    match Client::from_kubeconfig(Some(std::path::Path::new("/nonexistent/kubeconfig"))) {
        Err(Error::Kubeconfig { path, .. }) => {
            assert_eq!(
                path.as_deref(),
                Some(std::path::Path::new("/nonexistent/kubeconfig"))
            )
        }
        other => panic!("expected Kubeconfig, got {other:?}"),
    }
}

#[test]
fn watch_sees_added_modified_deleted() {
    let server = Server::start();
    let client = server.client();
    client
        .apply(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: before, labels: {w: x}}\n",
            "t",
        )
        .expect("pre-existing");
    let mut watch = client
        .watch(
            "v1",
            "ConfigMap",
            Some("default"),
            Some("w=x"),
            Some(Duration::from_secs(60)),
        )
        .expect("watch");
    let first = watch.next().expect("event").expect("ok");
    assert_eq!(first.kind, WatchEventKind::Added);
    assert_eq!(first.object["metadata"]["name"], "before");

    let cm = |data: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: w1, labels: {{w: x}}}}\ndata: {{k: \"{data}\"}}\n")
    };
    client.apply(&cm("1"), "t").expect("create");
    // Not matching the selector: never seen.
    client
        .apply(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n",
            "t",
        )
        .expect("other");
    client.apply(&cm("2"), "t").expect("update");
    client
        .delete("v1", "ConfigMap", None, "w1")
        .expect("delete");

    let mut seen = Vec::new();
    for ev in watch.by_ref() {
        let ev = ev.expect("event");
        let name = ev.object["metadata"]["name"].as_str().unwrap().to_string();
        seen.push((ev.kind, name, ev.object["data"]["k"].clone()));
        if ev.kind == WatchEventKind::Deleted {
            break;
        }
    }
    let kinds: Vec<_> = seen
        .iter()
        .map(|(k, n, _)| (k.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]
    );
    assert_eq!(seen[1].2, "2");
    drop(watch);

    // A short timeout ends the iterator.
    let quiet = client
        .watch(
            "v1",
            "ConfigMap",
            Some("empty-ns"),
            None,
            Some(Duration::from_millis(300)),
        )
        .expect("watch");
    assert_eq!(quiet.count(), 0);
}
