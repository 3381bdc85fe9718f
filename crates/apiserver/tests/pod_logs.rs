//! `kubectl logs` through the API server's `pods/log` (the real `kubectl`, which must be
//! on PATH) to a stand-in node agent that echoes the query it was sent: every option
//! reaches the node as upstream's API server passes it, and what cannot be read answers
//! with upstream's messages and codes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery};
use k8s_openapi::api::core::v1::Pod;
use kcore_apiserver::{ApiServer, RunningServer};
use kube::api::{Patch, PatchParams};
use serde_json::{json, Value};

struct Cluster {
    server: RunningServer,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

/// The stand-in node: `/containerLogs/<ns>/<pod>/<container>?<query>` answers
/// `<container> [<query>]`, except for the pod `racy`, whose container is (as the node
/// sees it) still waiting. Every request's path and query is kept.
async fn stand_in_node(seen: Arc<Mutex<Vec<String>>>) -> (u16, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/containerLogs/{ns}/{pod}/{c}",
        axum::routing::get(
            move |Path((_, pod, c)): Path<(String, String, String)>, RawQuery(q): RawQuery| {
                let seen = seen.clone();
                async move {
                    let q = q.unwrap_or_default();
                    seen.lock().unwrap().push(format!("{pod}/{c}?{q}"));
                    if pod == "racy" {
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            format!(
                                "container {c:?} in pod {pod:?} is waiting to start - no logs yet"
                            ),
                        );
                    }
                    (axum::http::StatusCode::OK, format!("{c} [{q}]\n"))
                }
            },
        ),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(tcp, app).await;
    });
    (port, task)
}

async fn start() -> Cluster {
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-pod-logs-{}-", std::process::id()))
        .tempdir()
        .unwrap();
    let server = ApiServer::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0".parse().unwrap())
        .insecure_http(true)
        .build()
        .await
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    Cluster {
        server: server.spawn(),
        kubeconfig,
        dir,
    }
}

/// `kubectl <args>`: (success, stdout, stderr).
async fn kubectl(c: &Cluster, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .arg("--cache-dir")
        .arg(c.dir.path().join("cache"))
        .args(args)
        .env("HOME", c.dir.path())
        .env_remove("KUBECONFIG");
    let out = tokio::task::spawn_blocking(move || {
        cmd.output()
            .expect("kubectl must be on PATH (CI installs it)")
    })
    .await
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn running(name: &str) -> Value {
    json!({"name": name, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
           "containerID": format!("kcore://{name}"), "ready": true, "restartCount": 0,
           "image": "busybox", "imageID": ""})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_options_reach_the_node_and_errors_read_as_upstream() {
    let c = start().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (port, node_task) = stand_in_node(seen.clone()).await;
    let api = c.server.api().clone();
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
    api.create_value("v1", "nodes", None, node, &Default::default())
        .await
        .unwrap();

    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&c.kubeconfig).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let pods: kube::Api<Pod> = kube::Api::namespaced(client, "default");
    let restarted = {
        let mut s = running("app");
        s["restartCount"] = json!(1);
        s["lastState"] = json!({"terminated": {"exitCode": 1, "containerID": "kcore://old",
            "reason": "Error", "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}});
        s
    };
    let waiting = json!({"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}},
        "ready": false, "restartCount": 0, "image": "busybox", "imageID": ""});
    let init_done = json!({"name": "init", "state": {"terminated": {"exitCode": 0, "containerID": "kcore://init",
        "reason": "Completed", "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}},
        "ready": false, "restartCount": 0, "image": "busybox", "imageID": ""});
    let cases: [(&str, Value, Value); 6] = [
        (
            "web",
            json!({"containers": [{"name": "app", "image": "busybox"}]}),
            json!({"containerStatuses": [restarted]}),
        ),
        (
            "fresh",
            json!({"containers": [{"name": "app", "image": "busybox"}]}),
            json!({"containerStatuses": [running("app")]}),
        ),
        (
            "pending",
            json!({"containers": [{"name": "app", "image": "busybox"}]}),
            json!({"containerStatuses": [waiting]}),
        ),
        (
            "racy",
            json!({"containers": [{"name": "app", "image": "busybox"}]}),
            json!({"containerStatuses": [running("app")]}),
        ),
        (
            "multi",
            json!({"initContainers": [{"name": "init", "image": "busybox"}],
                   "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]}),
            json!({"initContainerStatuses": [init_done], "containerStatuses": [running("a"), running("b")]}),
        ),
        (
            "unscheduled",
            json!({"containers": [{"name": "app", "image": "busybox"}]}),
            json!({}),
        ),
    ];
    for (name, mut spec, status) in cases {
        if name != "unscheduled" {
            spec["nodeName"] = json!("n1");
        }
        let p =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec});
        api.create_value("v1", "pods", Some("default"), p, &Default::default())
            .await
            .unwrap();
        if name != "unscheduled" {
            pods.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .unwrap();
        }
    }

    // every option reaches the node, as upstream's API server builds the query
    let ok = |r: (bool, String, String)| {
        assert!(r.0, "kubectl failed: {}", r.2);
        r.1
    };
    assert_eq!(ok(kubectl(&c, &["logs", "web"]).await), "app []\n");
    assert_eq!(
        ok(kubectl(
            &c,
            &[
                "logs",
                "web",
                "--since=5m",
                "--timestamps",
                "--limit-bytes=100",
                "--tail=3"
            ]
        )
        .await),
        "app [timestamps=true&sinceSeconds=300&tailLines=3&limitBytes=100]\n"
    );
    assert_eq!(
        ok(kubectl(
            &c,
            &["logs", "web", "--since-time=2026-01-02T03:04:05+01:00"]
        )
        .await),
        "app [sinceTime=2026-01-02T02:04:05Z]\n"
    );
    assert_eq!(
        ok(kubectl(&c, &["logs", "-f", "web"]).await),
        "app [follow=true]\n"
    );
    assert_eq!(
        ok(kubectl(&c, &["logs", "web", "--previous"]).await),
        "app [previous=true]\n"
    );
    // --all-containers asks for each container, init containers too (kubectl 1.35
    // asks in parallel: the order of the lines varies)
    let out = ok(kubectl(&c, &["logs", "multi", "--all-containers", "--prefix"]).await);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "[pod/multi/a] a []",
            "[pod/multi/b] b []",
            "[pod/multi/init] init []"
        ]
    );
    // a pod not on a node yet has an empty log
    assert_eq!(ok(kubectl(&c, &["logs", "unscheduled"]).await), "");

    // what cannot be read, with upstream's messages; the node is not asked
    let asked = seen.lock().unwrap().len();
    let err = |r: (bool, String, String)| {
        assert!(!r.0, "kubectl succeeded: {}", r.1);
        r.2
    };
    let e = err(kubectl(&c, &["logs", "pending"]).await);
    assert!(
        e.contains(r#"Error from server (BadRequest): container "app" in pod "pending" is waiting to start: ContainerCreating"#),
        "{e}"
    );
    let e = err(kubectl(&c, &["logs", "fresh", "--previous"]).await);
    assert!(
        e.contains(r#"Error from server (BadRequest): previous terminated container "app" in pod "fresh" not found"#),
        "{e}"
    );
    let e = err(kubectl(
        &c,
        &["get", "--raw", "/api/v1/namespaces/default/pods/multi/log"],
    )
    .await);
    assert!(
        e.contains("a container name must be specified for pod multi, choose one of: [a b] or one of the init containers: [init]"),
        "{e}"
    );
    let e = err(kubectl(
        &c,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/web/log?container=nope",
        ],
    )
    .await);
    assert!(e.contains("container nope is not valid for pod web"), "{e}");
    let e = err(kubectl(
        &c,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/web/log?tailLines=-1",
        ],
    )
    .await);
    assert!(
        e.contains(r#"PodLogOptions "web" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"#),
        "{e}"
    );
    let e = err(kubectl(
        &c,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/web/log?sinceSeconds=5&sinceTime=2026-01-02T03:04:05Z",
        ],
    )
    .await);
    assert!(
        e.contains("at most one of `sinceTime` or `sinceSeconds` may be specified"),
        "{e}"
    );
    assert_eq!(seen.lock().unwrap().len(), asked, "the node was asked");

    // the node's own refusal becomes a Status with its text
    let e = err(kubectl(&c, &["logs", "racy"]).await);
    assert!(
        e.contains(r#"Error from server (BadRequest): container "app" in pod "racy" is waiting to start - no logs yet"#),
        "{e}"
    );

    node_task.abort();
    c.server.shutdown().await.unwrap();
}
