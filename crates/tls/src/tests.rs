use super::*;

#[test]
fn issued_certificates_chain_to_the_ca_and_keep_their_usage() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();
    let server = ca
        .issue(
            "node-a",
            &["127.0.0.1".into(), "node-a".into()],
            Usage::Server,
        )
        .unwrap();
    let client = ca.issue("apiserver", &[], Usage::Client).unwrap();
    // a server certificate cannot serve as a client identity towards a verifying server
    // and vice versa: both configurations build, and rustls checks usage at handshake
    assert!(server_config(&server, Some(ca.cert_pem())).is_ok());
    assert!(client_config(ca.cert_pem(), Some(&client)).is_ok());
    // the key stays private on disk
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    client.write(dir.path(), "client").unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("client.crt")).unwrap(),
        client.cert_pem
    );
}

#[test]
fn garbage_pem_is_an_error_that_names_what_it_should_be() {
    let e = client_config("not a certificate", None).unwrap_err();
    assert_eq!(e.to_string(), "no certificate in the CA certificate");
}

#[tokio::test]
async fn the_listener_tells_certified_clients_from_the_others() {
    use axum::extract::ConnectInfo;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();
    let server = ca
        .issue("localhost", &["127.0.0.1".into()], Usage::Server)
        .unwrap();
    let client = ca.issue("apiserver", &[], Usage::Client).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener =
        TlsListener::new(tcp, server_config(&server, Some(ca.cert_pem())).unwrap()).unwrap();
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|ConnectInfo(p): ConnectInfo<PeerCertified>| async move {
            if p.0 {
                "certified"
            } else {
                "anonymous"
            }
        }),
    );
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<PeerCertified>(),
        )
        .await
    });
    async fn get(addr: std::net::SocketAddr, cfg: rustls::ClientConfig) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await?;
        tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        tls.read_to_string(&mut out).await?;
        Ok(out)
    }
    let anon = get(addr, client_config(ca.cert_pem(), None).unwrap())
        .await
        .unwrap();
    assert!(anon.ends_with("anonymous"), "{anon}");
    let cert = get(addr, client_config(ca.cert_pem(), Some(&client)).unwrap())
        .await
        .unwrap();
    assert!(cert.ends_with("certified"), "{cert}");
    // a client certificate from another CA is refused at the handshake
    let other = tempfile::tempdir().unwrap();
    let stranger = Ca::load_or_create(other.path())
        .unwrap()
        .issue("mallory", &[], Usage::Client)
        .unwrap();
    assert!(
        get(addr, client_config(ca.cert_pem(), Some(&stranger)).unwrap())
            .await
            .is_err()
    );
}

#[test]
fn client_certificates_name_their_user_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();
    for groups in [
        vec![],
        vec!["system:masters".to_owned()],
        vec!["dev".to_owned(), "ops".to_owned()],
    ] {
        let c = ca.issue_client("jane", &groups).unwrap();
        let der = pem_certificates(&c.cert_pem).unwrap();
        let s = subject(&der[0]).unwrap();
        assert_eq!(s.common_name.as_deref(), Some("jane"));
        assert_eq!(s.organizations, groups);
    }
    let too_many: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    assert!(ca.issue_client("jane", &too_many).is_err());
    // the CA's own subject has a CN and no O; garbage is no subject
    let ca_der = pem_certificates(ca.cert_pem()).unwrap();
    assert_eq!(
        subject(&ca_der[0]).unwrap().common_name.as_deref(),
        Some("kcore-ca")
    );
    assert_eq!(subject(b"\x30\x03\x02\x01"), None);
}

#[test]
fn signed_requests_keep_their_subject_and_names_and_verify_as_clients() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();
    let req = CertRequest::generate(
        "system:node:n1",
        &["system:nodes".into()],
        &["n1".into(), "10.0.0.7".into()],
    )
    .unwrap();
    let parsed = CertRequest::parse(&req.cert_pem).unwrap();
    assert_eq!(parsed.dns_names(), ["n1"]);
    assert_eq!(
        parsed.ip_addresses(),
        ["10.0.0.7".parse::<std::net::IpAddr>().unwrap()]
    );
    let pem = ca
        .sign_request(&parsed, Usage::Client, std::time::Duration::from_secs(3600))
        .unwrap();
    let chain = pem_certificates(&pem).unwrap();
    let who = ClientVerifier::new(ca.cert_pem())
        .unwrap()
        .verify(&chain)
        .unwrap();
    assert_eq!(who.common_name.as_deref(), Some("system:node:n1"));
    assert_eq!(who.organizations, ["system:nodes"]);
    // a server certificate is no client's
    let server = ca
        .sign_request(&parsed, Usage::Server, std::time::Duration::from_secs(3600))
        .unwrap();
    assert!(ClientVerifier::new(ca.cert_pem())
        .unwrap()
        .verify(&pem_certificates(&server).unwrap())
        .is_err());
    // a tampered request is refused
    let mut bad = req.cert_pem.clone().into_bytes();
    let mid = bad.len() / 2;
    bad[mid] = if bad[mid] == b'A' { b'B' } else { b'A' };
    assert!(CertRequest::parse(&String::from_utf8(bad).unwrap()).is_err());
}

#[test]
fn a_peer_certificate_verifies_as_server_and_as_client() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();
    let peer = ca
        .issue("etcd0", &["10.0.0.1".into()], Usage::Peer)
        .unwrap();
    let chain = pem_certificates(&peer.cert_pem).unwrap();
    // dialling a peer: the certificate is a client's
    ClientVerifier::new(ca.cert_pem())
        .unwrap()
        .verify(&chain)
        .unwrap();
    // serving a peer: the certificate is a server's for its address
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots(ca.cert_pem()).unwrap()),
        provider(),
    )
    .build()
    .unwrap();
    let name = rustls::pki_types::ServerName::try_from("10.0.0.1").unwrap();
    let now = rustls::pki_types::UnixTime::now();
    rustls::client::danger::ServerCertVerifier::verify_server_cert(
        verifier.as_ref(),
        &chain[0],
        &[],
        &name,
        &[],
        now,
    )
    .unwrap();
    // a client-only certificate does not serve
    let client = ca.issue_client("etcd-client", &[]).unwrap();
    let chain = pem_certificates(&client.cert_pem).unwrap();
    assert!(
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &chain[0],
            &[],
            &name,
            &[],
            now,
        )
        .is_err()
    );
}

#[test]
fn a_named_ca_lives_beside_the_cluster_ca_with_its_own_subject() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Ca::load_or_create(dir.path()).unwrap();
    let front = Ca::load_or_create_named(dir.path(), "front-proxy-ca", "front-proxy-ca").unwrap();
    assert!(dir.path().join("front-proxy-ca.crt").exists());
    assert!(dir.path().join("front-proxy-ca.key").exists());
    assert_ne!(front.cert_pem(), cluster.cert_pem());
    let der = pem_certificates(front.cert_pem()).unwrap();
    assert_eq!(
        subject(&der[0]).unwrap().common_name.as_deref(),
        Some("front-proxy-ca")
    );
    // loaded again, the same CA; its clients verify against it and not the cluster CA
    let again = Ca::load_or_create_named(dir.path(), "front-proxy-ca", "front-proxy-ca").unwrap();
    assert_eq!(again.cert_pem(), front.cert_pem());
    let client = again.issue_client("front-proxy-client", &[]).unwrap();
    let chain = pem_certificates(&client.cert_pem).unwrap();
    let s = ClientVerifier::new(front.cert_pem())
        .unwrap()
        .verify(&chain)
        .unwrap();
    assert_eq!(s.common_name.as_deref(), Some("front-proxy-client"));
    assert!(ClientVerifier::new(cluster.cert_pem())
        .unwrap()
        .verify(&chain)
        .is_err());
    assert!(client_config_unverified(Some(&client)).is_ok());
}
