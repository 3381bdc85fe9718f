//! The walkthrough, end to end, with the real kubectl: `kcored up` in a network
//! namespace of its own, the demo images built with `kcore image build`, the manifests
//! of examples/walkthrough applied, and every effect checked — pods Running with IPs,
//! HTTP through the Service and the Ingress, DNS between them, scaling, a rolling
//! update with maxUnavailable 0 that never fails a request, logs, ConfigMap and Secret
//! volumes, and the database's records on a PersistentVolumeClaim that outlive its pod.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;

const NODE_IP: &str = "192.0.2.10";
const HOST: &str = "k8s-test.local";

fn ingress() -> SocketAddr {
    format!("{NODE_IP}:80").parse().unwrap()
}

fn running_pods(m: &Machine, app: &str) -> Vec<serde_json::Value> {
    let list = m.kubectl_json(&["get", "pods", "-l", &format!("app={app}")]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running"
                && p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .cloned()
        .collect()
}

#[test]
#[ignore = "needs root"]
fn walkthrough_on_one_node_with_kubectl() {
    let mut m = Machine::new("kw", Some(NODE_IP));
    build_demo_image(&m.data, "v1");
    build_demo_image(&m.data, "v2");
    m.start_kcored(&[
        "up",
        "--listen",
        "127.0.0.1:6443",
        "--node-ip",
        NODE_IP,
        "--node-name",
        "walk",
        "--ingress-listen",
        "0.0.0.0:80",
    ]);
    m.wait_node_ready("walk");

    // deploy
    let app = workspace_root().join("examples/walkthrough/app.yaml");
    m.kubectl(&["apply", "-f", app.to_str().unwrap()]);
    m.kubectl(&["rollout", "status", "deployment/db", "--timeout=120s"]);
    m.kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let web = wait_for(60, "two ready web pods", || {
        let p = running_pods(&m, "web");
        (p.len() == 2).then_some(p)
    });
    for p in &web {
        let ip = p["status"]["podIP"].as_str().expect("pod IP");
        assert!(
            ip.starts_with("10.244."),
            "pod IP {ip} outside the cluster CIDR"
        );
        assert_eq!(p["status"]["hostIP"], NODE_IP);
    }

    // users through the Ingress: web -> db by the db Service's DNS name
    let (code, body) = http(
        &m.netns,
        ingress(),
        "POST",
        HOST,
        "/users",
        r#"{"name":"ada"}"#,
    )
    .expect("POST /users");
    assert_eq!(code, 201, "POST /users: {body}");
    let (code, _) = http(
        &m.netns,
        ingress(),
        "POST",
        HOST,
        "/users",
        r#"{"name":"grace"}"#,
    )
    .unwrap();
    assert_eq!(code, 201);
    let (code, body) = http(&m.netns, ingress(), "GET", HOST, "/users", "").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains(r#"{"name":"ada"}"#) && body.contains(r#"{"name":"grace"}"#),
        "GET /users: {body}"
    );
    // an unknown host gets no backend
    let (code, _) = http(&m.netns, ingress(), "GET", "other.local", "/", "").unwrap();
    assert_eq!(code, 404);

    // through the Service's ClusterIP, from the node
    let svc = m.kubectl_json(&["get", "service", "web"]);
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_owned();
    let (code, body) = http(
        &m.netns,
        format!("{cluster_ip}:80").parse().unwrap(),
        "GET",
        "web",
        "/",
        "",
    )
    .expect("GET through the ClusterIP");
    assert_eq!(code, 200);
    assert!(body.starts_with("hello from web v1"), "{body}");

    // ConfigMap and Secret volumes
    let (code, body) = http(&m.netns, ingress(), "GET", HOST, "/secret", "").unwrap();
    assert_eq!((code, body.trim()), (200, "secret matches: true"));
    m.kubectl(&[
        "patch",
        "configmap",
        "web-config",
        "-p",
        r#"{"data":{"greeting":"bonjour"}}"#,
    ]);
    wait_for(60, "the ConfigMap volume to follow the change", || {
        let (_, body) = http(&m.netns, ingress(), "GET", HOST, "/", "").ok()?;
        body.starts_with("bonjour").then_some(())
    });

    // scale to three
    m.kubectl(&["scale", "deployment/web", "--replicas=3"]);
    m.kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    wait_for(60, "three ready web pods", || {
        (running_pods(&m, "web").len() == 3).then_some(())
    });

    // a rolling update with maxUnavailable 0 never fails a request
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let prober = {
        let (stop, ok, failed, ns) = (stop.clone(), ok.clone(), failed.clone(), m.netns.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match http(&ns, ingress(), "GET", HOST, "/", "") {
                    Ok((200, _)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{other:?}"));
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            errors
        })
    };
    m.kubectl(&["set", "image", "deployment/web", "web=kcore.local/demo:v2"]);
    m.kubectl(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    stop.store(true, Ordering::Relaxed);
    let errors = prober.join().unwrap();
    assert!(
        ok.load(Ordering::Relaxed) > 10,
        "too few requests during the rollout"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests: {errors:?}"
    );
    let (_, body) = http(&m.netns, ingress(), "GET", HOST, "/", "").unwrap();
    assert!(body.contains("from web v2"), "{body}");
    wait_for(60, "three ready v2 pods", || {
        let p = running_pods(&m, "web");
        (p.len() == 3
            && p.iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "kcore.local/demo:v2"))
        .then_some(())
    });
    // the users survived (the database was not touched)
    let (_, body) = http(&m.netns, ingress(), "GET", HOST, "/users", "").unwrap();
    assert!(body.contains("ada"), "{body}");

    // logs
    let logs = m.kubectl(&["logs", "deployment/db"]);
    assert!(logs.contains("db: POST /users -> 201"), "db logs: {logs}");
    // logs -f streams what comes after it started
    let mut follow = in_netns(&m.netns, "kubectl")
        .arg("--kubeconfig")
        .arg(m.kubeconfig())
        .args(["logs", "-f", "--tail=0", "deployment/db"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("POST /users -> 201") && l.contains("db:"))
            .is_some()
    });
    // (posting until it shows: the stream may start after the first request)
    wait_for(30, "kubectl logs -f to show a new request", || {
        if lines.is_finished() {
            return Some(());
        }
        let (code, _) = http(
            &m.netns,
            ingress(),
            "POST",
            HOST,
            "/users",
            r#"{"name":"linus"}"#,
        )
        .ok()?;
        assert_eq!(code, 201);
        None
    });
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        lines.join().unwrap(),
        "kubectl logs -f ended without the request"
    );
    let web_pod = running_pods(&m, "web")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let logs = m.kubectl(&["logs", &web_pod, "--tail=1"]);
    assert_eq!(logs.lines().count(), 1, "{logs}");

    // the database keeps its records on a claim of the default class: bound to a
    // local volume on this node, they outlive the database's pod
    let sc = m.kubectl(&["get", "storageclass"]);
    assert!(sc.contains("local-path (default)"), "{sc}");
    let pvc = m.kubectl_json(&["get", "pvc", "db-data"]);
    assert_eq!(pvc["status"]["phase"], "Bound", "{pvc}");
    assert_eq!(pvc["spec"]["storageClassName"], "local-path");
    let pv_name = pvc["spec"]["volumeName"]
        .as_str()
        .expect("volume")
        .to_owned();
    let pv = m.kubectl_json(&["get", "pv", &pv_name]);
    let dir = std::path::PathBuf::from(pv["spec"]["local"]["path"].as_str().expect("local path"));
    assert!(
        dir.join("users.jsonl").is_file(),
        "records in {}",
        dir.display()
    );
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
            ["values"][0],
        "walk"
    );
    let db_pod = running_pods(&m, "db")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    m.kubectl(&["delete", "pod", &db_pod, "--wait=true", "--timeout=60s"]);
    wait_for(120, "a new database pod with the old records", || {
        let p = running_pods(&m, "db");
        if p.len() != 1 || p[0]["metadata"]["name"] == db_pod.as_str() {
            return None;
        }
        let (code, body) = http(&m.netns, ingress(), "GET", HOST, "/users", "").ok()?;
        (code == 200 && body.contains("ada") && body.contains("grace")).then_some(())
    });

    // clean up through the API, then stop the daemon (which resets the node)
    m.kubectl(&[
        "delete",
        "-f",
        app.to_str().unwrap(),
        "--wait=true",
        "--timeout=60s",
    ]);
    wait_for(60, "the pods to go", || {
        let l = m.kubectl_json(&["get", "pods"]);
        l["items"].as_array().unwrap().is_empty().then_some(())
    });
    // reclaim policy Delete: the claim's volume and its directory go with it
    wait_for(60, "the released volume to be deleted", || {
        let l = m.kubectl_json(&["get", "pv"]);
        (l["items"].as_array().unwrap().is_empty() && !dir.exists()).then_some(())
    });
    m.stop_kcored(true);
}
