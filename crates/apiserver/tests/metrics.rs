//! `metrics.k8s.io` through the API server to a stand-in node agent serving a fixed
//! Summary API answer, read by the real `kubectl top` (which must be on PATH): the
//! columns, the rates and working sets as quantities, label selectors, `--containers`,
//! and upstream's answers for what is not there or not allowed.

mod support;

use std::process::Command;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use serde_json::{json, Value};

/// A node agent that answers `GET /stats/summary` with `summary`.
async fn stand_in_node(summary: Value) -> (u16, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/stats/summary",
        axum::routing::get(move || {
            let s = summary.clone();
            async move { axum::Json(s) }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(tcp, app).await;
    });
    (port, task)
}

fn usage(nano_cores: u64, working_set: u64) -> (Value, Value) {
    (
        json!({"time": "2026-01-01T00:00:10Z", "usageNanoCores": nano_cores,
               "usageCoreNanoSeconds": 123_000_000_000u64, "windowSeconds": 3.0}),
        json!({"time": "2026-01-01T00:00:10Z", "workingSetBytes": working_set, "usageBytes": working_set * 2}),
    )
}

fn container(name: &str, nano_cores: u64, working_set: u64) -> Value {
    let (cpu, memory) = usage(nano_cores, working_set);
    json!({"name": name, "startTime": "2026-01-01T00:00:00Z", "cpu": cpu, "memory": memory})
}

fn kubectl(
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
    args: &[&str],
) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .output()
        .expect("kubectl must be on PATH (CI installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The rows of a kubectl table, split on whitespace.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_reads_node_and_pod_metrics() {
    let (client, server, dir) = support::kube_client("metrics").await;
    let api = server.api().clone();
    let pods: kube::Api<Pod> = kube::Api::namespaced(client, "default");
    let mut uids = Vec::new();
    for (name, app) in [("web", "web"), ("fresh", "other")] {
        let p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox"}]}});
        let created = api
            .create_value("v1", "pods", Some("default"), p, &Default::default())
            .await
            .unwrap();
        uids.push(created["metadata"]["uid"].clone());
        pods.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    }
    let (node_cpu, node_mem) = usage(1_500_000_000, 2 << 30);
    let (pod_cpu, pod_mem) = usage(500_000_000, 80 << 20);
    let web = json!({"podRef": {"name": "web", "namespace": "default", "uid": uids[0]},
        "startTime": "2026-01-01T00:00:00Z",
        "containers": [container("app", 480_000_000, 64 << 20), container("side", 20_000_000, 16 << 20)],
        "cpu": pod_cpu, "memory": pod_mem});
    let fresh = json!({"podRef": {"name": "fresh", "namespace": "default", "uid": uids[1]},
        "startTime": "2026-01-01T00:00:09Z",
        // sampled once: no rate yet
        "containers": [{"name": "app", "cpu": {"time": "2026-01-01T00:00:10Z"},
                        "memory": {"time": "2026-01-01T00:00:10Z", "workingSetBytes": 1000}}]});
    let summary = json!({"node": {"nodeName": "n1", "cpu": node_cpu, "memory": node_mem},
        "pods": [web, fresh]});
    let (port, node_task) = stand_in_node(summary).await;
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"zone": "a"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}});
    api.create_value("v1", "nodes", None, node, &Default::default())
        .await
        .unwrap();

    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n\
             users:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n\
             current-context: c\n",
            server.url()
        ),
    )
    .unwrap();
    let home = dir.path().to_owned();
    let run = move |args: Vec<&'static str>| {
        let (k, h) = (kubeconfig.clone(), home.clone());
        tokio::task::spawn_blocking(move || kubectl(&k, &h, &args))
    };
    let ok = |r: (bool, String, String)| {
        assert!(r.0, "kubectl failed: {}", r.2);
        r.1
    };

    // kubectl top node: 1.5 CPUs of 4, 2 GiB of 8
    let out = ok(run(vec!["top", "node"]).await.unwrap());
    let r = rows(&out);
    assert_eq!(
        r[0],
        ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"],
        "{out}"
    );
    assert_eq!(r[1], ["n1", "1500m", "37%", "2048Mi", "25%"], "{out}");
    // no node matches: kubectl's own message for an empty list
    let (found, _, err) = run(vec!["top", "node", "-l", "zone=b"]).await.unwrap();
    assert!(!found && err.contains("metrics not available yet"), "{err}");

    // kubectl top pod: the pod's containers summed; a pod without a rate is left out
    let out = ok(run(vec!["top", "pod"]).await.unwrap());
    let r = rows(&out);
    assert_eq!(r[0], ["NAME", "CPU(cores)", "MEMORY(bytes)"], "{out}");
    assert_eq!(r[1], ["web", "500m", "80Mi"], "{out}");
    assert_eq!(r.len(), 2, "{out}");
    let out = ok(run(vec!["top", "pod", "--containers", "-l", "app=web"])
        .await
        .unwrap());
    let r = rows(&out);
    assert_eq!(
        r[0],
        ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"],
        "{out}"
    );
    assert_eq!(r[1], ["web", "app", "480m", "64Mi"], "{out}");
    assert_eq!(r[2], ["web", "side", "20m", "16Mi"], "{out}");

    // the objects as metrics-server writes them
    let raw = ok(run(vec![
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web",
    ])
    .await
    .unwrap());
    let m: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(m["kind"], "PodMetrics");
    assert_eq!(m["metadata"]["labels"]["app"], "web");
    assert_eq!(m["window"], "3s");
    assert_eq!(m["timestamp"], "2026-01-01T00:00:10Z");
    let (found, _, err) = run(vec![
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/fresh",
    ])
    .await
    .unwrap();
    assert!(!found && err.contains("NotFound"), "{err}");
    let (found, _, err) = run(vec!["top", "pod", "nope"]).await.unwrap();
    assert!(!found && err.contains("not found"), "{err}");

    // discovery names the group, read only
    let out = ok(run(vec![
        "api-resources",
        "--api-group=metrics.k8s.io",
        "-o",
        "wide",
    ])
    .await
    .unwrap());
    assert!(
        out.contains("PodMetrics") && out.contains("get,list"),
        "{out}"
    );
    let (created, _, err) = run(vec![
        "create",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        "-f",
        "/dev/null",
    ])
    .await
    .unwrap();
    assert!(!created && err.contains("MethodNotAllowed"), "{err}");
    node_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_autoscale_makes_a_v2_hpa_readable_as_v1() {
    let (_client, server, dir) = support::kube_client("hpa").await;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n\
             users:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n\
             current-context: c\n",
            server.url()
        ),
    )
    .unwrap();
    let home = dir.path().to_owned();
    let run = move |args: Vec<&'static str>| {
        let (k, h) = (kubeconfig.clone(), home.clone());
        tokio::task::spawn_blocking(move || kubectl(&k, &h, &args))
    };
    let ok = |r: (bool, String, String)| {
        assert!(r.0, "kubectl failed: {}", r.2);
        r.1
    };
    ok(run(vec!["create", "deployment", "web", "--image=busybox"])
        .await
        .unwrap());
    ok(run(vec![
        "autoscale",
        "deployment",
        "web",
        "--cpu-percent=50",
        "--min=2",
        "--max=5",
    ])
    .await
    .unwrap());
    let out = ok(run(vec!["get", "hpa"]).await.unwrap());
    let r = rows(&out);
    assert_eq!(
        r[0],
        [
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ],
        "{out}"
    );
    assert_eq!(
        r[1][..7],
        [
            "web",
            "Deployment/web",
            "cpu:",
            "<unknown>/50%",
            "2",
            "5",
            "0"
        ],
        "{out}"
    );
    let v2: Value = serde_json::from_str(&ok(run(vec!["get", "hpa", "web", "-o", "json"])
        .await
        .unwrap()))
    .unwrap();
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        50
    );
    let v1: Value = serde_json::from_str(&ok(run(vec![
        "get",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "-o",
        "json",
    ])
    .await
    .unwrap()))
    .unwrap();
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
    assert_eq!(v1["spec"]["minReplicas"], 2);
    // the server's validation, as upstream words it
    let (patched, _, err) = run(vec![
        "patch",
        "hpa",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minReplicas":6}}"#,
    ])
    .await
    .unwrap();
    assert!(
        !patched
            && err.contains(
                "spec.minReplicas: Invalid value: 6: must be less than or equal to maxReplicas"
            ),
        "{err}"
    );
}
