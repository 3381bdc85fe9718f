//! Crash and restart: `kcored up` is killed with SIGKILL while a client is writing, then
//! started again on the same data directory. Every write the client saw acknowledged
//! is there, the running containers are adopted (same containers, same processes) and
//! nothing is duplicated.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;

const NODE_IP: &str = "192.0.2.20";

/// container id -> pid of every running container on the node.
fn containers(m: &Machine) -> BTreeMap<String, i32> {
    let rt = kcore_runtime::Runtime::new(m.data.join("containers"));
    rt.list()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|id| {
            let mut c = rt.load(&id).ok()?;
            (c.state().status.as_str() == "running").then(|| (id, c.pid()))
        })
        .collect()
}

fn web_pods(m: &Machine) -> Vec<(String, String)> {
    let l = m.kubectl_json(&["get", "pods", "-l", "app=web"]);
    let mut v: Vec<(String, String)> = l["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_owned(),
                p["metadata"]["uid"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn start(m: &mut Machine) {
    m.start_kcored(&[
        "up",
        "--listen",
        "127.0.0.1:6443",
        "--node-ip",
        NODE_IP,
        "--node-name",
        "crash",
        "--no-ingress",
    ]);
    wait_for(60, "the API server", || {
        m.check_alive();
        let (ok, _) = m.kubectl_with(&m.kubeconfig(), &["get", "--raw", "/readyz"]);
        ok.then_some(())
    });
}

#[test]
#[ignore = "needs root"]
fn killed_server_restarts_with_every_acknowledged_write_and_adopts_containers() {
    let mut m = Machine::new("kr", Some(NODE_IP));
    build_demo_image(&m.data, "v1");
    start(&mut m);
    m.wait_node_ready("crash");
    m.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=kcore.local/demo:v1",
        "--replicas=3",
        "--",
        "/bin/kcore-demo",
        "web",
    ]);
    m.kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let pods_before = web_pods(&m);
    assert_eq!(pods_before.len(), 3);
    let containers_before = wait_for(30, "three running containers", || {
        let c = containers(&m);
        (c.len() == 3).then_some(c)
    });

    // a writer creating ConfigMaps one after the other, recording what was acknowledged
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, ns, kubeconfig) = (stop.clone(), m.netns.clone(), m.kubeconfig());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            for i in 0..1000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("cm-{i}");
                let mut c = in_netns(&ns, "kubectl");
                c.arg("--kubeconfig").arg(&kubeconfig).args([
                    "create",
                    "configmap",
                    &name,
                    &format!("--from-literal=i={i}"),
                    "--request-timeout=5s",
                ]);
                match c.output() {
                    Ok(o) if o.status.success() => acked.push(name),
                    _ => break,
                }
            }
            acked
        })
    };
    wait_for(60, "a few acknowledged writes", || {
        let (ok, out) = m.kubectl_with(&m.kubeconfig(), &["get", "configmaps", "-o", "name"]);
        (ok && out.matches("cm-").count() >= 5).then_some(())
    });
    m.stop_kcored(false); // SIGKILL mid-write
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(acked.len() >= 5, "only {} writes acknowledged", acked.len());

    // the containers outlive the daemon
    assert_eq!(
        containers(&m),
        containers_before,
        "containers changed while kcored was down"
    );

    start(&mut m);
    let stored = m.kubectl(&["get", "configmaps", "-o", "name"]);
    for name in &acked {
        assert!(
            stored.contains(&format!("configmap/{name}\n")),
            "acknowledged {name} is missing after the crash"
        );
    }
    m.wait_node_ready("crash");
    m.kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    // adopted: the same pods and the same container processes, nothing new; give the
    // agent time to act on everything it found
    wait_for(60, "all three pods ready again", || {
        let l = m.kubectl_json(&["get", "pods", "-l", "app=web"]);
        let ready = l["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["status"]["containerStatuses"][0]["ready"] == true)
            .count();
        (ready == 3).then_some(())
    });
    assert_eq!(web_pods(&m), pods_before, "pods were replaced");
    assert_eq!(
        containers(&m),
        containers_before,
        "containers were not adopted"
    );
    let restarts = m.kubectl_json(&["get", "pods", "-l", "app=web"]);
    for p in restarts["items"].as_array().unwrap() {
        assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    }
    let rs = m.kubectl_json(&["get", "replicasets", "-l", "app=web"]);
    assert_eq!(
        rs["items"].as_array().unwrap().len(),
        1,
        "duplicate ReplicaSets"
    );

    m.kubectl(&["delete", "deployment", "web"]);
    wait_for(60, "the pods to go", || {
        web_pods(&m).is_empty().then_some(())
    });
    m.stop_kcored(true);
}
