//! A node's credentials as `kcored agent` gets them, against a real API server on
//! loopback (no node agent, no root): the join token's bootstrap token may only ask for
//! certificates, the node's client and serving certificates come through CSRs, the
//! client certificate is renewed while its client runs, the serving certificate while
//! its server runs, the approver checks a serving certificate's names against the
//! Node's addresses, and `kcored token create/list` manage bootstrap tokens as
//! `kubeadm token` does.

use std::path::Path;
use std::process::Command;

use kcored::credentials::{self, ClientIdentity, ClientRotation, CsrSpec, ServingRotation};
use kcored::join::{BootstrapToken, JoinToken};

async fn whoami(client: &kube::Client) -> serde_json::Value {
    let req = hyper::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}))
            .unwrap(),
        )
        .unwrap();
    let v: serde_json::Value = client.request(req).await.expect("SelfSubjectReview");
    v["status"]["userInfo"].clone()
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::task::block_in_place(|| {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .env("HOME", kubeconfig.parent().unwrap())
            .env_remove("KUBECONFIG")
            .output()
    })
    .expect("kubectl (CI installs it; see tests/fetch-clients.sh)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Creates Node `name` with these addresses, or sets them, as the node agent does
/// before it asks for its serving certificate.
async fn report_addresses(client: &kube::Client, name: &str, ip: &str) {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let status = serde_json::json!({"addresses": [
        {"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]});
    let node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "status": status}))
            .unwrap();
    if nodes.create(&Default::default(), &node).await.is_err() {
        let patch = serde_json::json!({ "status": status });
        nodes
            .patch_status(name, &Default::default(), &kube::api::Patch::Merge(&patch))
            .await
            .unwrap();
    }
}

fn serial(pem: &str) -> Vec<u8> {
    kcore_tls::pem_certificates(pem).unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_their_certificates_through_csrs_and_renew_them() {
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcored-credentials-{}-", std::process::id()))
        .tempdir()
        .unwrap();
    let api_dir = dir.path().join("apiserver");
    let server = kcore_apiserver::ApiServer::builder()
        .data_dir(&api_dir)
        .listen("127.0.0.1:0".parse().unwrap())
        .build()
        .await
        .unwrap();
    let url = server.url();
    let ca_pem = server.ca_pem().unwrap().to_owned();
    let _server = server.spawn();
    let admin_kc = api_dir.join("admin.kubeconfig");
    let admin = kcored::cluster::client_from_kubeconfig(&admin_kc)
        .await
        .unwrap();

    // the join token as `kcored server` makes it, and the agent's side of it
    let boot = BootstrapToken::load_or_create(&api_dir.join(kcored::cluster::JOIN_TOKEN)).unwrap();
    boot.store(&admin, None, "test").await.unwrap();
    let join: JoinToken = JoinToken::for_ca(&ca_pem, &boot.to_string())
        .unwrap()
        .to_string()
        .parse()
        .unwrap();
    let ca_der = kcored::join::discover_ca(&url, &join).await.unwrap();
    assert_eq!(serial(&kcored::join::ca_pem(&ca_der)), serial(&ca_pem));
    let bootstrap = kcored::join::client(&url, ca_der, &join.secret).unwrap();
    let who = whoami(&bootstrap).await;
    assert_eq!(who["username"], format!("system:bootstrap:{}", boot.id));
    // the bootstrap token reads nothing else
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(bootstrap.clone());
    let e = nodes.list(&Default::default()).await.unwrap_err();
    assert_eq!(kcore_k8s::status_code(&e), Some(403), "{e}");

    // the client certificate, through a CSR the control plane approves and signs
    let user = "system:node:n1";
    let groups = ["system:nodes".to_owned()];
    let cert =
        credentials::request_certificate(&bootstrap, &credentials::client_csr(user, &groups))
            .await
            .unwrap();
    let kubeconfig = dir.path().join("node.kubeconfig");
    credentials::write_kubeconfig(&kubeconfig, &url, "n1", &ca_pem, &cert).unwrap();
    let identity = ClientIdentity::new(cert.clone()).unwrap();
    let client = identity.client(&url, &ca_pem).unwrap();
    let who = whoami(&client).await;
    assert_eq!(who["username"], user);
    assert_eq!(who["groups"][0], "system:nodes");
    let (ok, out, err) = kubectl(
        &kubeconfig,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, user);

    // the serving certificate, asked as the node, once its Node reports the addresses
    // it names (the agent registers them first)
    report_addresses(&client, "n1", "127.0.0.1").await;
    let names = ["127.0.0.1".to_owned(), "n1".to_owned()];
    let serving =
        credentials::request_certificate(&client, &credentials::serving_csr(user, &groups, &names))
            .await
            .unwrap();
    kcore_tls::server_config(&serving, Some(&ca_pem)).expect("a usable serving certificate");
    // the bootstrap token gets none (only nodes get theirs approved)
    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        credentials::request_certificate(
            &bootstrap,
            &CsrSpec {
                signer: credentials::KUBELET_SERVING_SIGNER,
                common_name: user,
                organizations: &groups,
                names: &names,
                usages: &["digital signature", "server auth"],
                expiration: None,
            },
        ),
    )
    .await;
    assert!(
        refused.is_err(),
        "a bootstrap token's serving CSR stays pending"
    );
    // a name that is not the node's is denied, with the reason
    let foreign = ["10.9.9.9".to_owned(), "n1".to_owned()];
    let e = credentials::request_certificate(
        &client,
        &credentials::serving_csr(user, &groups, &foreign),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{e:#}").contains(
            r#"is denied: AutoDenied: Denied kubelet serving certificate: IP address 10.9.9.9 is not an address of node "n1"."#
        ),
        "{e:#}"
    );
    let other_host = ["127.0.0.1".to_owned(), "n2.example".to_owned()];
    let e = credentials::request_certificate(
        &client,
        &credentials::serving_csr(user, &groups, &other_host),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{e:#}").contains(r#"DNS name "n2.example" is not an address of node "n1""#),
        "{e:#}"
    );

    // renewal: a new certificate through a CSR the node sends itself, swapped into the
    // running client and written to the kubeconfig
    let (from, until) = identity.validity().unwrap();
    let deadline = credentials::rotation_deadline(from, until, 0.5);
    let life = until.duration_since(from).unwrap();
    assert!(
        life >= std::time::Duration::from_secs(364 * 24 * 3600),
        "{life:?}"
    );
    assert!(deadline > std::time::SystemTime::now());
    let rotation = ClientRotation {
        identity: identity.clone(),
        client: client.clone(),
        kubeconfig: kubeconfig.clone(),
        server_url: url.clone(),
        node: "n1".into(),
        ca_pem: ca_pem.clone(),
    };
    // a watch open on a connection made with the old certificate
    let own_node: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let mut watch = Box::pin(
        own_node
            .watch(
                &kube::api::WatchParams::default().fields("metadata.name=n1"),
                "0",
            )
            .await
            .unwrap(),
    );
    rotation.renew().await.unwrap();
    // ... is closed by the renewal, as the kubelet closes its connections
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        use futures::StreamExt as _;
        while let Some(Ok(_)) = watch.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the old certificate's connection stays open");
    let renewed = identity.current();
    assert_ne!(serial(&renewed.cert_pem), serial(&cert.cert_pem));
    assert_ne!(renewed.key_pem, cert.key_pem, "a new key");
    // a new connection presents the new certificate
    let fresh = identity.client(&url, &ca_pem).unwrap();
    assert_eq!(whoami(&fresh).await["username"], user);
    assert_eq!(whoami(&client).await["username"], user);
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    use base64::Engine as _;
    assert!(text.contains(&base64::engine::general_purpose::STANDARD.encode(&renewed.cert_pem)));
    let (ok, out, err) = kubectl(
        &kubeconfig,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, user);
    // the renewal was approved as the node's own (selfnodeclient)
    let (ok, out, err) = kubectl(
        &admin_kc,
        &["get", "csr", "-o", "jsonpath={range .items[*]}{.spec.username}={.status.conditions[0].message}{\"\\n\"}{end}"],
    );
    assert!(ok, "{err}");
    assert!(
        out.lines().any(|l| l
            == "system:node:n1=Auto approving self kubelet client certificate after SubjectAccessReview."),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l
            == format!("system:bootstrap:{}=Auto approving kubelet client certificate after SubjectAccessReview.", boot.id)),
        "{out}"
    );

    // `kcored token`, `kcored token create --ttl`, `kcored token list`
    let kcored = |args: &[&str]| {
        let out = tokio::task::block_in_place(|| {
            Command::new(env!("CARGO_BIN_EXE_kcored"))
                .args(args)
                .arg("--data-dir")
                .arg(dir.path())
                .output()
        })
        .unwrap();
        assert!(
            out.status.success(),
            "kcored {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let printed: JoinToken = kcored(&["token"]).parse().unwrap();
    assert_eq!(printed, join);
    let created: JoinToken = kcored(&["token", "create", "--ttl", "2h", "--description", "for n2"])
        .parse()
        .unwrap();
    let new: BootstrapToken = created.secret.parse().unwrap();
    let list = kcored(&["token", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "TOKEN",
            "TTL",
            "EXPIRES",
            "USAGES",
            "DESCRIPTION",
            "EXTRA",
            "GROUPS"
        ]
    );
    let row = lines
        .iter()
        .find(|l| l.starts_with(&new.to_string()))
        .unwrap_or_else(|| panic!("{list}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert!(matches!(cols[1], "1h" | "2h"), "{row}");
    assert_eq!(cols[3], "authentication,signing", "{row}");
    assert!(row.contains("for n2"), "{row}");
    assert!(
        row.ends_with("system:bootstrappers:kcore:default-node-token"),
        "{row}"
    );
    let default_row = lines
        .iter()
        .find(|l| l.starts_with(&boot.to_string()))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(default_row.contains("<forever>"), "{default_row}");
    // the new token joins too
    let c2 = kcored::join::client(
        &url,
        kcored::join::discover_ca(&url, &created).await.unwrap(),
        &created.secret,
    )
    .unwrap();
    assert_eq!(
        whoami(&c2).await["username"],
        format!("system:bootstrap:{}", new.id)
    );
}

/// The certificate a TLS server at `addr` presents (its serial).
async fn presented(addr: std::net::SocketAddr, ca_pem: &str) -> Vec<u8> {
    let cfg = kcore_tls::client_config(ca_pem, None).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("a verified handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_certificates_wait_for_the_nodes_addresses_and_renew_in_a_running_server() {
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcored-serving-{}-", std::process::id()))
        .tempdir()
        .unwrap();
    let api_dir = dir.path().join("apiserver");
    let server = kcore_apiserver::ApiServer::builder()
        .data_dir(&api_dir)
        .listen("127.0.0.1:0".parse().unwrap())
        .build()
        .await
        .unwrap();
    let url = server.url();
    let ca_pem = server.ca_pem().unwrap().to_owned();
    let _server = server.spawn();
    let admin = kcored::cluster::client_from_kubeconfig(&api_dir.join("admin.kubeconfig"))
        .await
        .unwrap();
    let boot = BootstrapToken::load_or_create(&api_dir.join(kcored::cluster::JOIN_TOKEN)).unwrap();
    boot.store(&admin, None, "test").await.unwrap();
    let ca_der = kcore_tls::pem_certificates(&ca_pem).unwrap()[0].to_vec();
    let bootstrap = kcored::join::client(&url, ca_der, &boot.to_string()).unwrap();
    let user = "system:node:n3";
    let groups = ["system:nodes".to_owned()];
    let cert =
        credentials::request_certificate(&bootstrap, &credentials::client_csr(user, &groups))
            .await
            .unwrap();
    let client = ClientIdentity::new(cert)
        .unwrap()
        .client(&url, &ca_pem)
        .unwrap();

    // no Node yet: the request waits, and is approved once the Node reports the address
    let names = vec!["127.0.0.1".to_owned(), "n3".to_owned()];
    let request = {
        let (client, names, groups) = (client.clone(), names.clone(), groups.clone());
        tokio::spawn(async move {
            credentials::request_certificate(
                &client,
                &credentials::serving_csr(user, &groups, &names),
            )
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        !request.is_finished(),
        "approved before the node reported its addresses"
    );
    let csrs: kube::Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest> =
        kube::Api::all(admin.clone());
    let pending = csrs.list(&Default::default()).await.unwrap();
    assert!(
        pending
            .items
            .iter()
            .any(|c| c.spec.username.as_deref() == Some(user)
                && c.spec.signer_name == credentials::KUBELET_SERVING_SIGNER
                && c.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_none_or(|c| c.is_empty())),
        "a pending serving request"
    );
    report_addresses(&client, "n3", "127.0.0.1").await;
    let serving = tokio::time::timeout(std::time::Duration::from_secs(30), request)
        .await
        .expect("approved after the node reported its addresses")
        .unwrap()
        .unwrap();

    // a server presenting it; renewal swaps it in while the server runs
    let live = kcore_tls::LiveCert::new(serving.clone()).unwrap();
    let tls = kcore_tls::server_config_live(&live, Some(&ca_pem)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let accepting = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    assert_eq!(presented(addr, &ca_pem).await, serial(&serving.cert_pem));
    let rotation = ServingRotation {
        cert: live.clone(),
        client: client.clone(),
        node: "n3".into(),
        names,
    };
    rotation.renew().await.unwrap();
    let renewed = live.current();
    assert_ne!(serial(&renewed.cert_pem), serial(&serving.cert_pem));
    assert_ne!(renewed.key_pem, serving.key_pem, "a new key");
    assert_eq!(
        presented(addr, &ca_pem).await,
        serial(&renewed.cert_pem),
        "the running server presents the renewed certificate"
    );
    accepting.abort();
}
