//! Root tests: Services through nftables, cluster DNS and the Ingress proxy, all in a
//! node network namespace the test creates.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{http_get, Env, IMAGE};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, PostParams};
use serde_json::json;

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn services_dns_and_ingress_reach_pods() {
    let mut env = Env::new("10.77.4.0/24").await;
    let gw: std::net::Ipv4Addr = "10.77.4.1".parse().unwrap();
    env.cfg.ingress_addr = Some(SocketAddr::new(gw.into(), 18080));
    let ns = env.namespace.clone();
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "site"}, "data": {"index.html": "through-the-service"}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    env.start_agent();
    env.create_pod(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "volumes": [{"name": "site", "configMap": {"name": "site"}}],
            "containers": [{"name": "httpd", "image": IMAGE, "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                "volumeMounts": [{"name": "site", "mountPath": "/www"}]}]
        }
    }))
    .await;
    let web = env.wait_pod("web", 60, running).await;
    let web_ip = web.status.unwrap().pod_ip.unwrap();

    // a Service and its EndpointSlice (as the endpoint-slice controller would write it)
    let svcs: Api<Service> = Api::namespaced(env.client.clone(), &ns);
    let svc = svcs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(env.client.clone(), &ns);
    slices
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [web_ip], "conditions": {"ready": true}}]
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    // a client pod: the ClusterIP through nftables, the name through cluster DNS
    env.create_pod(json!({
        "metadata": {"name": "client"},
        "spec": {"containers": [{"name": "c", "image": IMAGE, "command": ["sh", "-c",
            format!("i=0; while test $i -lt 60; do if printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {cluster_ip} 80 > /tmp/out 2>&1 && grep -q through /tmp/out; then cat /tmp/out; echo; break; fi; i=$((i+1)); sleep 0.5; done; \
                     i=0; while test $i -lt 60; do if nslookup web.{ns}.svc.cluster.local > /tmp/ns 2>&1; then cat /tmp/ns; break; fi; i=$((i+1)); sleep 0.5; done; echo svc-host=$WEB_SERVICE_HOST; echo END; exec sleep 3600")]}]}
    }))
    .await;
    env.wait_pod("client", 60, running).await;
    let path = format!("/containerLogs/{ns}/client/c");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let logs = loop {
        let (_, body) = env.agent_get(&path).await;
        if body.contains("END") {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "client never finished: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        logs.contains("through-the-service"),
        "service traffic: {logs}"
    );
    assert!(logs.contains(&cluster_ip), "dns answer: {logs}");
    assert!(
        logs.contains(&format!("svc-host={cluster_ip}\n")),
        "service links: {logs}"
    );

    // the Ingress proxy routes by host and path to the Service's endpoints
    let ings: Api<Ingress> = Api::namespaced(env.client.clone(), &ns);
    ings.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "site"}, "spec": {"rules": [{
            "host": "k8s-test.local",
            "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}))
        .unwrap(),
    )
    .await
    .unwrap();
    let ing_addr = SocketAddr::new(gw.into(), 18080);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = http_get(
            Some(&env.node_netns),
            ing_addr,
            "k8s-test.local",
            "/index.html",
        )
        .await;
        if code == 200 {
            assert_eq!(body, "through-the-service");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingress: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, _) = http_get(Some(&env.node_netns), ing_addr, "other.host", "/").await;
    assert_eq!(code, 404);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ing = ings.get("site").await.unwrap();
        let ip = ing
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .and_then(|v| v.first().and_then(|i| i.ip.clone()));
        if ip.as_deref() == Some("192.0.2.1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingress status never written"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn two_nodes_join_the_vxlan_overlay_from_node_annotations() {
    use kcore_netbridge::{Bridge, BridgeConfig};
    let mut a = Env::new("10.78.1.0/24").await;
    let mut b = a.another_node("10.78.2.0/24");
    // the underlay: a switch in its own namespace, one port per node
    let switch_dir = kcore_ns::NetnsDir::new(a.path().join("switch-netns"));
    let switch_name = common::unique("ksw");
    let switch_ns = switch_dir.create(&switch_name).unwrap();
    struct Gone(kcore_ns::NetnsDir, String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = self.0.remove(&self.1);
        }
    }
    let _switch_guard = Gone(switch_dir, switch_name);
    let switch = Bridge::ensure(
        Some(&switch_ns),
        BridgeConfig {
            name: "sw0".into(),
            subnet: "10.124.0.0/24".parse().unwrap(),
            mtu: 1500,
        },
    )
    .await
    .unwrap();
    let tag = std::process::id() % 100_000;
    for (i, env) in [&mut a, &mut b].into_iter().enumerate() {
        let ip = std::net::Ipv4Addr::new(10, 124, 0, 11 + i as u8);
        let ns = kcore_ns::NetNs::open(&env.node_netns).unwrap();
        switch
            .attach(&ns, &format!("su{tag}x{i}"), ip)
            .await
            .unwrap();
        env.cfg.node_ip = ip;
        env.cfg.server_addr = "127.0.0.1:0".parse().unwrap();
        env.cfg.vxlan = true;
        env.cfg.cluster_cidr = Some("10.78.0.0/16".parse().unwrap());
        env.start_agent();
    }
    let serve = |name: &str, node: &str, text: &str| {
        json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": IMAGE, "command": ["sh", "-c",
                format!("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8080 -h /www")]}]}
        })
    };
    a.create_pod(serve("on-a", &a.node, "from-a")).await;
    b.create_pod(serve("on-b", &b.node, "from-b")).await;
    let pa = a.wait_pod("on-a", 60, running).await;
    let pb = b.wait_pod("on-b", 60, running).await;
    let ip_b = pb.status.unwrap().pod_ip.unwrap();
    assert!(ip_b.starts_with("10.78.2."), "{ip_b}");
    let _ = pa;
    // the nodes advertise their VTEPs
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(a.client.clone());
    let nb = nodes.get(&b.node).await.unwrap();
    let ann = nb.metadata.annotations.unwrap();
    assert_eq!(
        ann.get(kcore_node::ANN_PUBLIC_IP).map(String::as_str),
        Some("10.124.0.12")
    );
    assert!(ann.contains_key(kcore_node::ANN_VTEP_MAC));
    // a pod on node A reaches the pod on node B over the overlay
    a.create_pod(json!({
        "metadata": {"name": "client"},
        "spec": {"containers": [{"name": "c", "image": IMAGE, "command": ["sh", "-c",
            format!("i=0; while test $i -lt 60; do if printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip_b} 8080 > /tmp/out 2>&1 && grep -q from-b /tmp/out; then cat /tmp/out; break; fi; i=$((i+1)); sleep 0.5; done; echo END; exec sleep 3600")]}]}
    }))
    .await;
    a.wait_pod("client", 60, running).await;
    let path = format!("/containerLogs/{}/client/c", a.namespace);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let logs = loop {
        let (_, body) = a.agent_get(&path).await;
        if body.contains("END") {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "client never finished: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(logs.contains("from-b"), "cross-node traffic: {logs}");
    b.stop_agent().await;
    a.stop_agent().await;
    drop(b);
}
