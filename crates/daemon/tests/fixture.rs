//! The test fixture (`kcored::testing::Cluster`) and `kcored server --ephemeral`:
//! clusters with simulated nodes inside a test, several at once, gone without a trace.

use std::io::BufRead;
use std::process::{Command, Stdio};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kcore_tests::wait::eventually;
use kcored::testing::Cluster;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

async fn create<K>(api: &Api<K>, v: serde_json::Value) -> K
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + k8s_openapi::serde::Serialize
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).expect("object");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create")
}

fn deployment(name: &str, replicas: u32) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {"replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "nginx",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}})
}

async fn available(api: &Api<Deployment>, name: &str, replicas: i32) {
    eventually(300, &format!("{name} available"), || async {
        let d = api.get(name).await.ok()?;
        (d.status?.available_replicas == Some(replicas)).then_some(())
    })
    .await;
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl (tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_three_simulated_nodes_runs_a_deployment_for_kubectl() {
    let c = Cluster::builder().nodes(3).start().await.expect("cluster");
    let out = kubectl(c.kubeconfig(), &["get", "nodes", "--no-headers"]);
    let ready: Vec<&str> = out.lines().filter(|l| l.contains(" Ready ")).collect();
    assert_eq!(ready.len(), 3, "{out}");
    let deploys: Api<Deployment> = Api::namespaced(c.client(), "default");
    create(&deploys, deployment("web", 3)).await;
    available(&deploys, "web", 3).await;
    let out = kubectl(
        c.kubeconfig(),
        &["get", "pods", "-o", "wide", "--no-headers"],
    );
    assert_eq!(out.matches("Running").count(), 3, "{out}");
    assert!(out.contains("sim-node-"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_side_by_side_share_nothing_and_leave_nothing() {
    let (a, b) = tokio::join!(
        Cluster::builder().nodes(1).start(),
        Cluster::builder().nodes(2).start()
    );
    let (a, b) = (a.expect("cluster a"), b.expect("cluster b"));
    assert_ne!(a.url(), b.url());
    let ns_a: Api<Namespace> = Api::all(a.client());
    let ns_b: Api<Namespace> = Api::all(b.client());
    create(&ns_a, json!({"metadata": {"name": "only-in-a"}})).await;
    assert!(ns_b.get_opt("only-in-a").await.expect("get").is_none());
    let count = |c: kube::Client| async move {
        Api::<Node>::all(c)
            .list(&ListParams::default())
            .await
            .expect("nodes")
            .items
            .len()
    };
    assert_eq!(count(a.client()).await, 1);
    assert_eq!(count(b.client()).await, 2);
    let dir = a.data_dir().to_owned();
    assert!(dir.exists());
    a.stop().await;
    assert!(!dir.exists(), "{} is left behind", dir.display());
    // b is untouched by a's end
    assert_eq!(count(b.client()).await, 2);
}

/// The simulator's path at a small scale (the benchmark goes to 5,000 nodes and
/// 150,000 pods): 200 nodes, 2,000 pods as 20 Deployments of 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_smoke_run_200_nodes_2000_pods() {
    let c = Cluster::builder()
        .nodes(200)
        .start()
        .await
        .expect("cluster");
    let nodes = Api::<Node>::all(c.client())
        .list(&ListParams::default().labels("kcore.dev/simulated=true"))
        .await
        .expect("nodes");
    assert_eq!(nodes.items.len(), 200);
    let deploys: Api<Deployment> = Api::namespaced(c.client(), "default");
    for i in 0..20 {
        create(&deploys, deployment(&format!("d{i}"), 100)).await;
    }
    for i in 0..20 {
        available(&deploys, &format!("d{i}"), 100).await;
    }
    // the Deployments count available replicas from their ReplicaSets' status, which may
    // trail a replacement pod by a moment: the pods themselves are what is asserted
    let pods_api = Api::<Pod>::namespaced(c.client(), "default");
    let pods = eventually(120, "2,000 pods Running", || async {
        let pods = pods_api.list(&ListParams::default()).await.ok()?;
        let running = pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (running == 2000).then_some(pods)
    })
    .await;
    let used: std::collections::BTreeSet<_> = pods
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    assert!(used.len() >= 150, "pods spread over {} nodes", used.len());
}

#[test]
fn ephemeral_server_leaves_nothing_behind() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcored"))
        .args([
            "server",
            "--ephemeral",
            "--listen",
            "127.0.0.1:0",
            "--simulated-nodes",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kcored");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut state, mut kubeconfig) = (None, None);
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(rest) = line.strip_prefix("kcored: ephemeral state in ") {
            state = rest.split(' ').next().map(std::path::PathBuf::from);
        }
        if let Some(rest) = line.strip_prefix("kcored: export KUBECONFIG=") {
            kubeconfig = rest.split(' ').next().map(std::path::PathBuf::from);
            break;
        }
    }
    let state = state.expect("the state directory is printed");
    let kubeconfig = kubeconfig.expect("the kubeconfig is printed");
    assert!(kubeconfig.starts_with(&state), "{}", kubeconfig.display());
    let out = kubectl(&kubeconfig, &["get", "nodes", "--no-headers"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "kcored exits cleanly on SIGTERM: {status}"
    );
    assert!(!state.exists(), "{} is left behind", state.display());
}
