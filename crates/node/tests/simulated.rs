//! Simulated nodes against the real API server, scheduler and controllers: Deployments
//! spread over them and run, Jobs finish by annotation, deletion honours the grace
//! period, and a failed node goes NotReady.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kcore_apiserver::ApiServer;
use kcore_node::{NodeTemplate, SimulatedNodes, ANN_EXIT_AFTER, ANN_EXIT_CODE};
use kcore_reconcile::{ControllerManager, ControllerManagerConfig};
use kcore_scheduler::{Framework, SchedulerLoop};
use kcore_tests::wait::eventually;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::Client;
use serde_json::json;

async fn create<K>(api: &Api<K>, v: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).expect("object");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create")
}

fn ready(n: &Node) -> Option<String> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_nodes_run_pods_through_the_real_control_plane() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ApiServer::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0".parse().expect("addr"))
        .insecure_http(true)
        .build()
        .await
        .expect("server")
        .spawn();
    let client =
        Client::try_from(kube::Config::new(server.url().parse().expect("url"))).expect("client");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let sched = SchedulerLoop::new(client.clone(), Framework::with_defaults());
    let sched_stop = stopped(stop_rx.clone());
    tokio::spawn(async move {
        let _ = sched.run(sched_stop).await;
    });
    let cfg = ControllerManagerConfig {
        node_monitor_grace_period: Duration::from_secs(2),
        ..ControllerManagerConfig::default()
    };
    let mgr = ControllerManager::new(client.clone()).with_config(cfg);
    let mgr_stop = stopped(stop_rx.clone());
    tokio::spawn(async move {
        let _ = mgr.run(mgr_stop).await;
    });

    let sim = SimulatedNodes::new(client.clone(), 3)
        .template(NodeTemplate::default().label("tier", "sim"))
        .heartbeat(Duration::from_millis(500))
        .stop_delay(Duration::from_secs(30))
        .start()
        .await
        .expect("simulated nodes");
    let nodes: Api<Node> = Api::all(client.clone());
    let listed = nodes
        .list(&ListParams::default().labels("tier=sim"))
        .await
        .expect("nodes");
    assert_eq!(listed.items.len(), 3);
    for n in &listed.items {
        assert_eq!(ready(n).as_deref(), Some("True"));
        let cap = &n.status.as_ref().unwrap().capacity.as_ref().unwrap();
        assert_eq!(cap["pods"].0, "110");
    }

    let ns = "sim";
    create(
        &Api::<Namespace>::all(client.clone()),
        json!({"metadata": {"name": ns}}),
    )
    .await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), ns);
    create(
        &deploys,
        json!({"metadata": {"name": "web"}, "spec": {"replicas": 6,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    )
    .await;
    eventually(30, "6 available replicas", || async {
        let d = deploys.get("web").await.ok()?;
        (d.status?.available_replicas == Some(6)).then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let running = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods");
    let mut on = std::collections::BTreeSet::new();
    for p in &running.items {
        let st = p.status.as_ref().unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"));
        let node = p.spec.as_ref().unwrap().node_name.clone().unwrap();
        let cidr: ipnet::Ipv4Net = nodes
            .get(&node)
            .await
            .unwrap()
            .spec
            .unwrap()
            .pod_cidr
            .unwrap()
            .parse()
            .unwrap();
        let ip: std::net::Ipv4Addr = st.pod_ip.as_deref().unwrap().parse().unwrap();
        assert!(cidr.contains(&ip), "{ip} in {cidr}");
        on.insert(node);
    }
    assert_eq!(on.len(), 3, "the scheduler spreads the replicas: {on:?}");

    // a Job's pod exits by annotation and the Job completes
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    create(
        &jobs,
        json!({"metadata": {"name": "once"}, "spec": {"template": {
            "metadata": {"annotations": {ANN_EXIT_CODE: "0", ANN_EXIT_AFTER: "200ms"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}),
    )
    .await;
    eventually(30, "the Job to complete", || async {
        let j = jobs.get("once").await.ok()?;
        (j.status?.succeeded == Some(1)).then_some(())
    })
    .await;

    // deletion waits for the containers (stop delay 30 s, capped by a 1 s grace period)
    let victim = running.items[0].metadata.name.clone().unwrap();
    pods.delete(&victim, &DeleteParams::default().grace_period(1))
        .await
        .expect("delete");
    let p = pods.get(&victim).await.expect("still terminating");
    assert!(p.metadata.deletion_timestamp.is_some());
    eventually(10, "the deleted pod to go", || async {
        pods.get_opt(&victim).await.ok()?.is_none().then_some(())
    })
    .await;

    // a failed node stops heartbeating and goes NotReady
    let failed = sim.node_names()[0].clone();
    assert!(sim.fail(&failed));
    eventually(30, "the failed node NotReady", || async {
        let n = nodes.get(&failed).await.ok()?;
        (ready(&n).as_deref() == Some("Unknown")).then_some(())
    })
    .await;
    assert!(sim.recover(&failed));
    eventually(30, "the recovered node Ready", || async {
        let n = nodes.get(&failed).await.ok()?;
        (ready(&n).as_deref() == Some("True")).then_some(())
    })
    .await;
    sim.stop().await;
    let _ = stop_tx.send(true);
}
