//! API aggregation against an extension server on loopback (HTTPS, its own CA): an
//! APIService with `insecureSkipTLSVerify` is proxied without a `caBundle`, a wrong
//! bundle is refused; the `Available` condition follows the Service, its endpoints and
//! the discovery check with upstream's reasons; `/apis`, `/apis/<group>`, aggregated
//! discovery and the real `kubectl api-resources` (which must be on PATH) list the
//! aggregated group.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

const GROUP: &str = "wardle.example.com";

/// An extension API server serving `wardle.example.com/v1alpha1` (`flunders`); while
/// `broken` is set, every request answers 500. Returns its port and its CA's PEM.
async fn extension_server(
    dir: &std::path::Path,
    broken: Arc<AtomicBool>,
) -> (u16, String, tokio::task::JoinHandle<()>) {
    let ca = kcore_tls::Ca::load_or_create(&dir.join("ext-pki")).expect("CA");
    let cert = ca
        .issue(
            "wardle",
            &["wardle.default.svc".to_owned()],
            kcore_tls::Usage::Server,
        )
        .expect("serving certificate");
    let cfg = kcore_tls::server_config(&cert, None).expect("tls config");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = kcore_tls::TlsListener::new(tcp, cfg).expect("listener");
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let broken = broken.load(Ordering::SeqCst);
        async move {
            use axum::http::StatusCode;
            if broken {
                return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({})));
            }
            let body = match uri.path() {
                "/apis/wardle.example.com/v1alpha1" => json!({"kind": "APIResourceList",
                    "apiVersion": "v1", "groupVersion": "wardle.example.com/v1alpha1",
                    "resources": [
                        {"name": "flunders", "singularName": "flunder", "namespaced": true,
                         "kind": "Flunder", "verbs": ["get", "list"], "shortNames": ["fl"]},
                        {"name": "flunders/status", "singularName": "", "namespaced": true,
                         "kind": "Flunder", "verbs": ["get"]}]}),
                "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders" => {
                    json!({"kind": "FlunderList", "apiVersion": "wardle.example.com/v1alpha1",
                        "metadata": {}, "items": [{"metadata": {"name": "f1"}}]})
                }
                _ => return (StatusCode::NOT_FOUND, axum::Json(json!({}))),
            };
            (StatusCode::OK, axum::Json(body))
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, ca.cert_pem().to_owned(), task)
}

fn apiservice(spec_extra: Value) -> Value {
    let mut spec = json!({"group": GROUP, "version": "v1alpha1", "groupPriorityMinimum": 1000,
        "versionPriority": 15, "service": {"namespace": "default", "name": "wardle"}});
    for (k, v) in spec_extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": format!("v1alpha1.{GROUP}")}, "spec": spec})
}

/// GET `path` on the plain-HTTP server (HTTP/1.0, so the body is not chunked): status
/// and body.
async fn get(url: &str, path: &str, accept: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n").as_bytes(),
    )
    .await
    .expect("request");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}

/// The Available condition's status and reason, polled until `want` (at most 40 s:
/// the check runs every 10 s).
async fn until_available(api: &kcore_apiserver::Api, want: (&str, &str)) -> Value {
    let name = format!("v1alpha1.{GROUP}");
    let mut last = Value::Null;
    for _ in 0..160 {
        let s = api
            .get_value("apiregistration.k8s.io/v1", "apiservices", None, &name)
            .await
            .expect("apiservice");
        let c = s["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Available")
            .cloned()
            .unwrap_or(Value::Null);
        if c["status"] == want.0 && c["reason"] == want.1 {
            return c;
        }
        last = c;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("Available never became {want:?}; last {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_api_is_proxied_checked_and_discovered() {
    let (_client, server, dir) = support::kube_client("aggregation").await;
    let api = server.api().clone();
    let url = server.url().to_owned();
    let broken = Arc::new(AtomicBool::new(false));
    let (port, ca_pem, task) = extension_server(dir.path(), Arc::clone(&broken)).await;

    // No Service yet.
    api.create_value(
        "apiregistration.k8s.io/v1",
        "apiservices",
        None,
        apiservice(json!({"insecureSkipTLSVerify": true})),
        &Default::default(),
    )
    .await
    .expect("apiservice");
    let c = until_available(&api, ("False", "ServiceNotFound")).await;
    assert_eq!(c["message"], "service/wardle in \"default\" is not present");

    // A Service without ready endpoints.
    api.create_value(
        "v1",
        "services",
        Some("default"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "wardle"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}),
        &Default::default(),
    )
    .await
    .expect("service");
    api.create_value(
        "v1",
        "endpoints",
        Some("default"),
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "wardle"},
            "subsets": [{"notReadyAddresses": [{"ip": "127.0.0.1"}],
                "ports": [{"name": "https", "port": port}]}]}),
        &Default::default(),
    )
    .await
    .expect("endpoints");
    let c = until_available(&api, ("False", "MissingEndpoints")).await;
    assert_eq!(
        c["message"],
        "endpoints for service/wardle in \"default\" have no addresses with port name \"https\""
    );

    // Ready, but the server fails discovery.
    broken.store(true, Ordering::SeqCst);
    let eps = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "wardle"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": port}]}]});
    api.patch_value(
        "v1",
        "endpoints",
        Some("default"),
        "wardle",
        kcore_apiserver::PatchType::Merge,
        eps.to_string().as_bytes(),
        &Default::default(),
    )
    .await
    .expect("endpoints ready");
    let c = until_available(&api, ("False", "FailedDiscoveryCheck")).await;
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "failing or missing response from https://wardle.default.svc:443/apis/wardle.example.com/v1alpha1: bad status"
        ),
        "{msg}"
    );

    // Healthy: Passed, and the proxy works without a caBundle (insecureSkipTLSVerify).
    broken.store(false, Ordering::SeqCst);
    let c = until_available(&api, ("True", "Passed")).await;
    assert_eq!(c["message"], "all checks passed");
    let (code, body) = get(
        &url,
        "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders",
        "application/json",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["items"][0]["metadata"]["name"], "f1");

    // Discovery lists the group, its versions and (aggregated) its resources.
    let (code, body) = get(&url, "/apis", "application/json").await;
    assert_eq!(code, 200);
    let groups: Value = serde_json::from_str(&body).unwrap();
    let g = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == GROUP)
        .unwrap_or_else(|| panic!("{GROUP} not in /apis: {body}"));
    assert_eq!(
        g["preferredVersion"]["groupVersion"],
        "wardle.example.com/v1alpha1"
    );
    let (code, body) = get(&url, "/apis/wardle.example.com", "application/json").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["kind"],
        "APIGroup"
    );
    let (code, body) = get(
        &url,
        "/apis",
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
    )
    .await;
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    let item = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == GROUP)
        .unwrap_or_else(|| panic!("{GROUP} not in aggregated discovery"));
    assert_eq!(item["versions"][0]["resources"][0]["resource"], "flunders");
    assert_eq!(
        item["versions"][0]["resources"][0]["subresources"][0]["subresource"],
        "status"
    );

    // The real kubectl lists the aggregated resource.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\n\
             users:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n\
             current-context: c\n"
        ),
    )
    .unwrap();
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["api-resources", "--api-group", GROUP])
        .env("HOME", dir.path())
        .env_remove("KUBECONFIG")
        .output()
        .expect("kubectl must be on PATH (CI installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("flunders"))
        .unwrap_or_else(|| panic!("no flunders in:\n{stdout}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "flunders",
            "fl",
            "wardle.example.com/v1alpha1",
            "true",
            "Flunder"
        ]
    );

    // With a caBundle of another CA the proxy refuses the server's certificate.
    let other = kcore_tls::Ca::load_or_create(&dir.path().join("other-pki")).unwrap();
    assert_ne!(other.cert_pem(), ca_pem);
    let patch = json!({"spec": {"insecureSkipTLSVerify": false,
        "caBundle": base64::engine::general_purpose::STANDARD.encode(other.cert_pem())}});
    api.patch_value(
        "apiregistration.k8s.io/v1",
        "apiservices",
        None,
        &format!("v1alpha1.{GROUP}"),
        kcore_apiserver::PatchType::Merge,
        patch.to_string().as_bytes(),
        &Default::default(),
    )
    .await
    .expect("update apiservice");
    let mut code = 0;
    for _ in 0..40 {
        (code, _) = get(
            &url,
            "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders",
            "application/json",
        )
        .await;
        if code == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(code, 503, "a certificate of another CA must be refused");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_presents_the_front_proxy_certificate_published_in_kube_system() {
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-frontproxy-{}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let data = dir.path().join("data");
    let server = kcore_apiserver::ApiServer::builder()
        .data_dir(&data)
        .listen("127.0.0.1:0".parse().expect("addr"))
        .build()
        .await
        .expect("https server");
    let cluster_ca = server.ca_pem().expect("tls").to_owned();
    let server = server.spawn();
    let api = server.api().clone();
    let cm = api
        .get_value(
            "v1",
            "configmaps",
            Some("kube-system"),
            "extension-apiserver-authentication",
        )
        .await
        .expect("extension-apiserver-authentication");
    assert_eq!(cm["data"]["client-ca-file"], cluster_ca.as_str());
    assert_eq!(
        cm["data"]["requestheader-allowed-names"],
        "[\"front-proxy-client\"]"
    );
    assert_eq!(
        cm["data"]["requestheader-username-headers"],
        "[\"X-Remote-User\"]"
    );
    let front_ca = cm["data"]["requestheader-client-ca-file"]
        .as_str()
        .expect("requestheader-client-ca-file")
        .to_owned();
    assert_ne!(front_ca, cluster_ca, "the front proxy has its own CA");

    // An extension server that accepts only clients certified by the front proxy's CA.
    let ca = kcore_tls::Ca::load_or_create(&dir.path().join("ext-pki")).expect("CA");
    let cert = ca
        .issue(
            "wardle",
            &["wardle.default.svc".to_owned()],
            kcore_tls::Usage::Server,
        )
        .expect("serving certificate");
    let cfg = kcore_tls::server_config(&cert, Some(&front_ca)).expect("tls config");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = kcore_tls::TlsListener::new(tcp, cfg).expect("listener");
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        let user = headers
            .get("x-remote-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        axum::Json(
            json!({"kind": "FlunderList", "apiVersion": "wardle.example.com/v1alpha1",
            "metadata": {}, "items": [{"metadata": {"name": user}}]}),
        )
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    for (plural, ns, obj) in [
        (
            "services",
            Some("default"),
            json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "wardle"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}),
        ),
        (
            "endpoints",
            Some("default"),
            json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "wardle"}, "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
            "ports": [{"name": "https", "port": port}]}]}),
        ),
    ] {
        api.create_value("v1", plural, ns, obj, &Default::default())
            .await
            .expect(plural);
    }
    api.create_value(
        "apiregistration.k8s.io/v1",
        "apiservices",
        None,
        apiservice(
            json!({"caBundle": base64::engine::general_purpose::STANDARD.encode(ca.cert_pem())}),
        ),
        &Default::default(),
    )
    .await
    .expect("apiservice");
    let mut last = String::new();
    for _ in 0..40 {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(data.join("admin.kubeconfig"))
            .args([
                "get",
                "--raw",
                "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders",
            ])
            .env("HOME", dir.path())
            .env_remove("KUBECONFIG")
            .output()
            .expect("kubectl must be on PATH (CI installs it)");
        if out.status.success() {
            let list: Value = serde_json::from_slice(&out.stdout).expect("json");
            let user = list["items"][0]["metadata"]["name"]
                .as_str()
                .unwrap_or_default();
            assert!(!user.is_empty(), "the user goes along in X-Remote-User");
            task.abort();
            return;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    task.abort();
    panic!("the extension server refused the aggregator: {last}");
}
