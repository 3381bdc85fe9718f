//! The API server's side of the secured node API: it issues a node's serving certificate
//! (`POST /kcore/v1/nodecertificates`), proxies `pods/log` to the node over HTTPS with its
//! client certificate, and refuses a node whose certificate the cluster CA did not sign.

use axum::extract::ConnectInfo;
use k8s_openapi::api::core::v1::Pod;
use kcore_apiserver::ApiServer;
use kcore_tls::{CertKey, PeerCertified};
use kube::api::LogParams;

/// A stand-in node agent: `/containerLogs/...` answers only clients with a certificate
/// signed by `client_ca`.
async fn stand_in_node(serving: &CertKey, client_ca: &str) -> (u16, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = kcore_tls::TlsListener::new(
        tcp,
        kcore_tls::server_config(serving, Some(client_ca)).unwrap(),
    )
    .unwrap();
    let app = axum::Router::new().route(
        "/containerLogs/{ns}/{pod}/{c}",
        axum::routing::get(|ConnectInfo(p): ConnectInfo<PeerCertified>| async move {
            if p.0 {
                (axum::http::StatusCode::OK, "hello from c\n")
            } else {
                (axum::http::StatusCode::UNAUTHORIZED, "Unauthorized")
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<PeerCertified>(),
        )
        .await;
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_reach_a_node_over_verified_tls_with_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ApiServer::builder()
        .data_dir(&data)
        .listen("127.0.0.1:0".parse().unwrap())
        .build()
        .await
        .unwrap();
    let ca_pem = server.ca_pem().unwrap().to_owned();
    let server = server.spawn();
    let kubeconfig = kube::config::Kubeconfig::read_from(data.join("admin.kubeconfig")).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();

    // the node asks for its serving certificate
    let body = serde_json::json!({"nodeName": "n1", "addresses": ["127.0.0.1"]});
    let req = axum::http::Request::post("/kcore/v1/nodecertificates")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let answer: serde_json::Value = client.request(req).await.unwrap();
    assert_eq!(answer["caPem"], ca_pem.as_str());
    let serving = CertKey {
        cert_pem: answer["certificatePem"].as_str().unwrap().to_owned(),
        key_pem: answer["keyPem"].as_str().unwrap().to_owned(),
    };
    // and a node whose certificate comes from some other CA
    let other = tempfile::tempdir().unwrap();
    let rogue = kcore_tls::Ca::load_or_create(other.path())
        .unwrap()
        .issue("n2", &["127.0.0.1".into()], kcore_tls::Usage::Server)
        .unwrap();

    let (good_port, good) = stand_in_node(&serving, &ca_pem).await;
    let (rogue_port, rogue_task) = stand_in_node(&rogue, &ca_pem).await;
    let api = server.api().clone();
    for (node, port) in [("n1", good_port), ("n2", rogue_port)] {
        let n = serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
        api.create_value("v1", "nodes", None, n, &Default::default())
            .await
            .unwrap();
        let p = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p-{node}")},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}});
        api.create_value("v1", "pods", Some("default"), p, &Default::default())
            .await
            .unwrap();
        // running, as the node reports it (a container not started has no log to read)
        let mut p: Pod = api
            .get(Some("default"), &format!("p-{node}"))
            .await
            .unwrap();
        p.status = Some(
            serde_json::from_value(serde_json::json!({"containerStatuses": [{"name": "c",
                "state": {"running": {}}, "ready": true, "restartCount": 0, "image": "busybox", "imageID": ""}]}))
            .unwrap(),
        );
        api.replace_status(Some("default"), &p).await.unwrap();
    }
    let pods: kube::Api<Pod> = kube::Api::namespaced(client, "default");
    let logs = pods.logs("p-n1", &LogParams::default()).await.unwrap();
    assert_eq!(logs, "hello from c\n");
    let err = pods.logs("p-n2", &LogParams::default()).await.unwrap_err();
    let text = format!("{err:?}");
    assert!(
        text.contains("500")
            && text.contains("tls handshake")
            && text.contains("invalid peer certificate"),
        "a node with a certificate from another CA is refused: {text}"
    );
    good.abort();
    rogue_task.abort();
    server.shutdown().await.unwrap();
}
