//! Who may do what, end to end with the real `kubectl` against an HTTPS server: users
//! from client certificates, RBAC decisions and upstream's 403, escalation refusals,
//! service-account tokens, anonymous requests, impersonation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use kcore_apiserver::{ApiServer, RunningServer};
use serde_json::Value;

struct Cluster {
    _server: RunningServer,
    dir: tempfile::TempDir,
    url: String,
    ca_pem: String,
    ca: kcore_tls::Ca,
    admin: PathBuf,
}

async fn start() -> Cluster {
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-auth-{}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let data = dir.path().join("data");
    let server = ApiServer::builder()
        .data_dir(&data)
        .listen("127.0.0.1:0".parse().expect("addr"))
        .build()
        .await
        .expect("https server");
    let url = server.url();
    let ca_pem = server.ca_pem().expect("tls").to_owned();
    let ca = kcore_tls::Ca::load_or_create(&data.join("pki")).expect("the cluster CA");
    Cluster {
        _server: server.spawn(),
        url,
        ca_pem,
        ca,
        admin: data.join("admin.kubeconfig"),
        dir,
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl Cluster {
    /// A kubeconfig for `user` (YAML lines under `user:`).
    fn kubeconfig(&self, name: &str, user: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        let cfg = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    certificate-authority-data: {}\n    server: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: default}}\ncurrent-context: c\nusers:\n- name: u\n  user:\n{user}",
            b64(&self.ca_pem),
            self.url
        );
        std::fs::write(&path, cfg).expect("kubeconfig");
        path
    }

    /// A kubeconfig presenting a client certificate for `user` in `groups`, signed by `ca`.
    fn cert_user(&self, ca: &kcore_tls::Ca, user: &str, groups: &[&str]) -> PathBuf {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let c = ca.issue_client(user, &groups).expect("client cert");
        self.kubeconfig(
            user,
            &format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(&c.cert_pem),
                b64(&c.key_pem)
            ),
        )
    }

    fn token_user(&self, name: &str, token: &str) -> PathBuf {
        self.kubeconfig(name, &format!("    token: {token}\n"))
    }
}

use kcore_tests::process::Output as Out;

async fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new("kubectl");
    let cache = kubeconfig.with_extension("cache");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(&cache)
        .args(args)
        .env("HOME", kubeconfig.parent().unwrap_or(Path::new("/tmp")))
        .env_remove("KUBECONFIG");
    let input = stdin.map(str::to_owned);
    tokio::task::spawn_blocking(move || kcore_tests::process::output(cmd, input.as_deref()))
        .await
        .expect("join")
}

async fn ok(kubeconfig: &Path, args: &[&str]) -> String {
    let o = kubectl(kubeconfig, args, None).await;
    assert!(
        o.ok,
        "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
        o.stdout, o.stderr
    );
    o.stdout
}

async fn fails(kubeconfig: &Path, args: &[&str]) -> String {
    let o = kubectl(kubeconfig, args, None).await;
    assert!(!o.ok, "kubectl {args:?} should fail:\nstdout: {}", o.stdout);
    o.stderr
}

async fn json(kubeconfig: &Path, args: &[&str]) -> Value {
    let out = ok(kubeconfig, args).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {args:?}: not JSON ({e}): {out}"))
}

/// `kubectl auth can-i` as a boolean.
async fn can_i(kubeconfig: &Path, args: &[&str]) -> bool {
    let mut a = vec!["auth", "can-i"];
    a.extend_from_slice(args);
    let o = kubectl(kubeconfig, &a, None).await;
    match o.stdout.trim() {
        "yes" => true,
        // kubectl prints the authorizer's reason after a "no"
        no if no == "no" || no.starts_with("no - ") => false,
        other => panic!("kubectl auth can-i {args:?}: {other:?} {}", o.stderr),
    }
}

/// Waits (RBAC changes reach the authorizer through the watch cache) until `f` holds.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_users_get_what_rbac_grants_and_upstreams_403_otherwise() {
    let c = start().await;
    let admin = c.admin.clone();
    let alice = c.cert_user(&c.ca, "alice", &["dev"]);

    let who = json(&alice, &["auth", "whoami", "-o", "json"]).await;
    assert_eq!(who["kind"], "SelfSubjectReview");
    assert_eq!(who["status"]["userInfo"]["username"], "alice");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!(["dev", "system:authenticated"])
    );

    ok(&admin, &["create", "namespace", "team"]).await;
    let e = fails(&alice, &["get", "pods", "-n", "team"]).await;
    assert!(
        e.contains(r#"Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "team""#),
        "{e}"
    );
    assert!(!can_i(&alice, &["list", "pods", "-n", "team"]).await);

    ok(
        &admin,
        &[
            "create",
            "rolebinding",
            "alice-view",
            "--clusterrole=view",
            "--user=alice",
            "-n",
            "team",
        ],
    )
    .await;
    eventually("alice may list pods in team", || {
        can_i(&alice, &["list", "pods", "-n", "team"])
    })
    .await;
    ok(&alice, &["get", "pods", "-n", "team"]).await;
    assert!(can_i(&alice, &["get", "pods/log", "-n", "team"]).await);
    assert!(!can_i(&alice, &["delete", "pods", "-n", "team"]).await);
    assert!(!can_i(&alice, &["list", "pods", "-n", "default"]).await);
    let e = fails(&alice, &["get", "secret", "s1", "-n", "team"]).await;
    assert!(
        e.contains(r#"secrets "s1" is forbidden: User "alice" cannot get resource "secrets" in API group "" in the namespace "team""#),
        "{e}"
    );
    let e = fails(&alice, &["get", "nodes"]).await;
    assert!(
        e.contains(
            r#"User "alice" cannot list resource "nodes" in API group "" at the cluster scope"#
        ),
        "{e}"
    );

    // the admin's view of alice, through impersonation; alice may not impersonate
    assert!(can_i(&admin, &["list", "pods", "-n", "team", "--as", "alice"]).await);
    assert!(!can_i(&admin, &["list", "secrets", "-n", "team", "--as", "alice"]).await);
    let e = fails(&alice, &["get", "pods", "-n", "team", "--as", "bob"]).await;
    assert!(
        e.contains(r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users""#),
        "{e}"
    );

    // the rules alice holds in team
    let list = ok(&alice, &["auth", "can-i", "--list", "-n", "team"]).await;
    let pods = list
        .lines()
        .find(|l| l.starts_with("pods "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(pods.contains("[get list watch]"), "{pods}");
    assert!(
        list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{list}"
    );
    assert!(!list.lines().any(|l| l.starts_with("secrets ")), "{list}");

    // escalation: alice may manage roles in team but not grant more than she holds
    ok(
        &admin,
        &[
            "create",
            "role",
            "rbac-manager",
            "--verb=create,get,list",
            "--resource=roles,rolebindings",
            "-n",
            "team",
        ],
    )
    .await;
    ok(
        &admin,
        &[
            "create",
            "rolebinding",
            "alice-rbac",
            "--role=rbac-manager",
            "--user=alice",
            "-n",
            "team",
        ],
    )
    .await;
    eventually("alice may create roles", || {
        can_i(&alice, &["create", "roles", "-n", "team"])
    })
    .await;
    let e = fails(
        &alice,
        &[
            "create",
            "role",
            "secrets",
            "--verb=get",
            "--resource=secrets",
            "-n",
            "team",
        ],
    )
    .await;
    assert!(
        e.contains(r#"roles.rbac.authorization.k8s.io "secrets" is forbidden: user "alice" (groups=["dev" "system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#)
            && e.contains(r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#),
        "{e}"
    );
    ok(
        &alice,
        &[
            "create",
            "role",
            "pod-reader",
            "--verb=get,list",
            "--resource=pods",
            "-n",
            "team",
        ],
    )
    .await;
    let e = fails(
        &alice,
        &[
            "create",
            "rolebinding",
            "bob-edit",
            "--clusterrole=edit",
            "--user=bob",
            "-n",
            "team",
        ],
    )
    .await;
    assert!(
        e.contains("is attempting to grant RBAC permissions not currently held"),
        "{e}"
    );
    ok(
        &alice,
        &[
            "create",
            "rolebinding",
            "bob-read",
            "--role=pod-reader",
            "--user=bob",
            "-n",
            "team",
        ],
    )
    .await;
    // with `bind` on edit, alice may bind it after all
    ok(
        &admin,
        &[
            "create",
            "role",
            "bind-edit",
            "--verb=bind",
            "--resource=clusterroles",
            "--resource-name=edit",
            "-n",
            "team",
        ],
    )
    .await;
    ok(
        &admin,
        &[
            "create",
            "rolebinding",
            "alice-bind",
            "--role=bind-edit",
            "--user=alice",
            "-n",
            "team",
        ],
    )
    .await;
    eventually("alice may bind edit", || async {
        kubectl(
            &alice,
            &[
                "create",
                "rolebinding",
                "bob-edit",
                "--clusterrole=edit",
                "--user=bob",
                "-n",
                "team",
            ],
            None,
        )
        .await
        .ok
    })
    .await;
}

/// A GET over TLS with a client certificate and a bearer token of one's choice: the
/// status code and body.
async fn raw_get(
    c: &Cluster,
    cert: Option<&kcore_tls::CertKey>,
    token: Option<&str>,
    path: &str,
) -> (u16, String) {
    raw_get_as(c, &c.ca_pem, "127.0.0.1", cert, token, path).await
}

/// [`raw_get`] trusting `ca_pem` and checking the server's certificate for `server_name`.
async fn raw_get_as(
    c: &Cluster,
    ca_pem: &str,
    server_name: &str,
    cert: Option<&kcore_tls::CertKey>,
    token: Option<&str>,
    path: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cfg = kcore_tls::client_config(ca_pem, cert).expect("client config");
    let addr = c.url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("the handshake succeeds whatever the certificate");
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out).into_owned();
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {out}"));
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    (code, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_get_401_except_health_and_version() {
    let c = start().await;
    // a user kubectl does not prompt for, whose Basic credentials the server ignores
    let anon = c.kubeconfig("anonymous", "    username: nobody\n    password: none\n");
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(ok(&anon, &["get", "--raw", path]).await.trim(), "ok");
    }
    let v: Value = serde_json::from_str(&ok(&anon, &["get", "--raw", "/version"]).await).unwrap();
    assert!(v["gitVersion"].is_string());
    // kubectl's words for a 401
    let unauthorized = "You must be logged in to the server";
    let e = fails(&anon, &["get", "pods"]).await;
    assert!(e.contains(unauthorized), "{e}");
    let e = fails(&anon, &["get", "--raw", "/apis"]).await;
    assert!(e.contains(unauthorized), "{e}");
    let bad = c.token_user("bad-token", "not-a-token");
    let e = fails(&bad, &["get", "pods"]).await;
    assert!(e.contains(unauthorized), "{e}");
    // a certificate from another CA gets through the handshake and is answered 401
    let other = tempfile::tempdir().unwrap();
    let rogue_ca = kcore_tls::Ca::load_or_create(other.path()).unwrap();
    let rogue = c.cert_user(&rogue_ca, "mallory", &["system:masters"]);
    let e = fails(&rogue, &["get", "pods"]).await;
    assert!(e.contains(unauthorized), "{e}");
    let e = fails(&rogue, &["get", "--raw", "/version"]).await;
    assert!(e.contains(unauthorized), "not anonymous either: {e}");
    let mallory = rogue_ca
        .issue_client("mallory", &["system:masters".into()])
        .unwrap();
    let (code, body) = raw_get(&c, Some(&mallory), None, "/api/v1/namespaces").await;
    assert_eq!(code, 401, "{body}");
    let status: Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Unauthorized");
    assert_eq!(status["message"], "Unauthorized");
    // a valid token still authenticates a request that brings a bad certificate, as
    // upstream's union of authenticators
    let tokens = std::fs::read_to_string(c.dir.path().join("data/tokens.csv")).expect("tokens");
    let token = tokens.split(',').next().expect("the admin token");
    let (code, body) = raw_get(&c, Some(&mallory), Some(token), "/api/v1/namespaces").await;
    assert_eq!(code, 200, "{body}");
    // the cluster CA's own certificate users get through the same path
    let alice = c.ca.issue_client("alice", &[]).unwrap();
    let (code, body) = raw_get(&c, Some(&alice), None, "/api/v1/namespaces").await;
    assert_eq!(code, 403, "alice is authenticated, not authorized: {body}");
    assert!(body.contains(r#"User \"alice\" cannot list"#), "{body}");
    // a certificate in system:masters from the cluster CA is an administrator
    let root = c.cert_user(&c.ca, "root", &["system:masters"]);
    ok(&root, &["get", "secrets", "-A"]).await;
    assert!(can_i(&root, &["delete", "nodes"]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_service_leads_in_cluster_clients_to_the_server() {
    let c = start().await;
    let port: u16 = c.url.rsplit(':').next().unwrap().parse().unwrap();
    let svc = json(
        &c.admin,
        &[
            "get",
            "service",
            "kubernetes",
            "-n",
            "default",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert!(svc["spec"]["selector"].is_null());
    assert_eq!(svc["metadata"]["labels"]["component"], "apiserver");
    assert_eq!(svc["metadata"]["labels"]["provider"], "kubernetes");
    let p = &svc["spec"]["ports"][0];
    assert_eq!(
        (p["name"].as_str(), p["port"].as_u64()),
        (Some("https"), Some(443))
    );
    assert_eq!(p["targetPort"].as_u64(), Some(u64::from(port)));
    let ep = json(
        &c.admin,
        &[
            "get",
            "endpoints",
            "kubernetes",
            "-n",
            "default",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
    assert_eq!(
        ep["subsets"][0]["ports"][0]["port"].as_u64(),
        Some(u64::from(port))
    );
    let slice = json(
        &c.admin,
        &[
            "get",
            "endpointslices",
            "kubernetes",
            "-n",
            "default",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "kubernetes"
    );
    assert_eq!(slice["endpoints"][0]["addresses"][0], "127.0.0.1");
    // an edited Service gets its ports back, a deleted Endpoints comes back
    ok(
        &c.admin,
        &[
            "patch",
            "service",
            "kubernetes",
            "-n",
            "default",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/ports/0/port","value":8443}]"#,
        ],
    )
    .await;
    ok(
        &c.admin,
        &["delete", "endpoints", "kubernetes", "-n", "default"],
    )
    .await;
    let admin = c.admin.clone();
    eventually("the kubernetes service is reconciled", || {
        let admin = admin.clone();
        async move {
            let s = kubectl(
                &admin,
                &[
                    "get",
                    "service",
                    "kubernetes",
                    "-n",
                    "default",
                    "-o",
                    "jsonpath={.spec.ports[0].port}",
                ],
                None,
            )
            .await;
            let e = kubectl(
                &admin,
                &["get", "endpoints", "kubernetes", "-n", "default"],
                None,
            )
            .await;
            s.stdout.trim() == "443" && e.ok
        }
    })
    .await;
    // what a pod has: the default service account's token and the root CA it is given,
    // checking the server as `kubernetes.default.svc` and as the Service's address
    ok(&c.admin, &["create", "namespace", "incluster"]).await;
    let admin = c.admin.clone();
    eventually("the namespace's service account and root CA", || {
        let admin = admin.clone();
        async move {
            kubectl(
                &admin,
                &[
                    "get",
                    "serviceaccount/default",
                    "configmap/kube-root-ca.crt",
                    "-n",
                    "incluster",
                ],
                None,
            )
            .await
            .ok
        }
    })
    .await;
    let ca = ok(
        &c.admin,
        &[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "incluster",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ],
    )
    .await;
    let token = ok(&c.admin, &["create", "token", "default", "-n", "incluster"]).await;
    let token = token.trim().to_owned();
    let pods = "/api/v1/namespaces/incluster/pods";
    for name in [
        "10.96.0.1",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        let (code, body) = raw_get_as(&c, &ca, name, None, Some(&token), pods).await;
        assert_eq!(code, 403, "{name}: {body}");
        assert!(
            body.contains("system:serviceaccount:incluster:default"),
            "{body}"
        );
    }
    ok(
        &c.admin,
        &[
            "create",
            "rolebinding",
            "sa-view",
            "-n",
            "incluster",
            "--clusterrole=view",
            "--serviceaccount=incluster:default",
        ],
    )
    .await;
    let mut last = String::new();
    for _ in 0..100 {
        let (code, body) =
            raw_get_as(&c, &ca, "kubernetes.default.svc", None, Some(&token), pods).await;
        if code == 200 {
            last.clear();
            break;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        last.is_empty(),
        "the bound service account still cannot list pods: {last}"
    );
}

/// A CertificateSigningRequest manifest for `req` (PEM).
fn csr_yaml(name: &str, req: &str, signer: &str, usages: &[&str]) -> String {
    let usages: Vec<String> = usages.iter().map(|u| format!("  - {u}")).collect();
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {}\n  signerName: {signer}\n  expirationSeconds: 3600\n  usages:\n{}\n",
        b64(req),
        usages.join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_signing_requests_are_approved_signed_and_denied() {
    let c = start().await;
    let apply = |yaml: String| {
        let admin = c.admin.clone();
        async move { kubectl(&admin, &["create", "-f", "-"], Some(&yaml)).await }
    };
    // a user asks for a client certificate; the admin approves it; it works
    let bob = kcore_tls::CertRequest::generate("bob", &["devs".into()], &[]).unwrap();
    let o = apply(csr_yaml(
        "bob",
        &bob.cert_pem,
        "kubernetes.io/kube-apiserver-client",
        &["client auth", "digital signature"],
    ))
    .await;
    assert!(o.ok, "{}", o.stderr);
    let table = ok(&c.admin, &["get", "csr", "bob"]).await;
    let head: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        [
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ]
    );
    assert!(
        table.contains("Pending") && table.contains("admin") && table.contains("60m"),
        "{table}"
    );
    ok(&c.admin, &["certificate", "approve", "bob"]).await;
    let admin = c.admin.clone();
    eventually("bob's certificate is issued", || {
        let admin = admin.clone();
        async move {
            kubectl(&admin, &["get", "csr", "bob"], None)
                .await
                .stdout
                .contains("Approved,Issued")
        }
    })
    .await;
    let cert = ok(
        &c.admin,
        &["get", "csr", "bob", "-o", "jsonpath={.status.certificate}"],
    )
    .await;
    let cert = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(cert.trim())
            .unwrap(),
    )
    .unwrap();
    let kc = c.kubeconfig(
        "bob",
        &format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&cert),
            b64(&bob.key_pem)
        ),
    );
    let who = json(&kc, &["auth", "whoami", "-o", "json"]).await;
    assert_eq!(who["status"]["userInfo"]["username"], "bob");
    assert!(who["status"]["userInfo"]["groups"]
        .as_array()
        .unwrap()
        .contains(&"devs".into()));
    // the kubelet signer refuses a subject that is not a node's
    let o = apply(csr_yaml(
        "not-a-node",
        &bob.cert_pem,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["client auth", "digital signature"],
    ))
    .await;
    assert!(o.ok, "{}", o.stderr);
    ok(&c.admin, &["certificate", "approve", "not-a-node"]).await;
    let admin = c.admin.clone();
    eventually("the kubelet signer fails a non-node request", || {
        let admin = admin.clone();
        async move {
            kubectl(
                &admin,
                &[
                    "get",
                    "csr",
                    "not-a-node",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
                ],
                None,
            )
            .await
            .stdout
            .contains("SignerValidationFailure")
        }
    })
    .await;
    // denied requests get no certificate, and stay denied
    let o = apply(csr_yaml(
        "carol",
        &bob.cert_pem,
        "kubernetes.io/kube-apiserver-client",
        &["client auth"],
    ))
    .await;
    assert!(o.ok, "{}", o.stderr);
    ok(&c.admin, &["certificate", "deny", "carol"]).await;
    let e = fails(&c.admin, &["certificate", "approve", "carol"]).await;
    assert!(
        e.contains("mutually exclusive") || e.contains("already denied") || e.contains("Denied"),
        "{e}"
    );
    let t = ok(&c.admin, &["get", "csr", "carol"]).await;
    assert!(t.contains("Denied") && !t.contains("Issued"), "{t}");
    // validation as upstream
    let o = apply(csr_yaml("bad", "not a request", "example", &["flying"])).await;
    assert!(!o.ok);
    assert!(o.stderr.contains("spec.request"), "{}", o.stderr);
    assert!(o.stderr.contains("spec.signerName"), "{}", o.stderr);
    assert!(
        o.stderr
            .contains(r#"spec.usages[0]: Unsupported value: "flying""#),
        "{}",
        o.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_authenticate_until_their_pod_is_gone() {
    let c = start().await;
    let admin = c.admin.clone();
    ok(&admin, &["create", "namespace", "apps"]).await;
    eventually("the default service account", || async {
        kubectl(
            &admin,
            &["get", "serviceaccount", "default", "-n", "apps"],
            None,
        )
        .await
        .ok
    })
    .await;
    let token = ok(&admin, &["create", "token", "default", "-n", "apps"]).await;
    let sa = c.token_user("sa", token.trim());
    let who = json(&sa, &["auth", "whoami", "-o", "json"]).await;
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:apps:default"
    );
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(
        groups.contains("\"system:serviceaccounts\"")
            && groups.contains("\"system:serviceaccounts:apps\""),
        "{groups}"
    );
    let e = fails(&sa, &["get", "pods", "-n", "apps"]).await;
    assert!(
        e.contains(r#"User "system:serviceaccount:apps:default" cannot list resource "pods""#),
        "{e}"
    );
    ok(
        &admin,
        &[
            "create",
            "rolebinding",
            "sa-view",
            "--clusterrole=view",
            "--serviceaccount=apps:default",
            "-n",
            "apps",
        ],
    )
    .await;
    eventually("the service account may list pods", || {
        can_i(&sa, &["list", "pods", "-n", "apps"])
    })
    .await;
    ok(&sa, &["get", "pods", "-n", "apps"]).await;

    // TokenReview, as an authenticating proxy would use it
    let review = format!(
        r#"{{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {{"token": "{}"}}}}"#,
        token.trim()
    );
    let o = kubectl(&admin, &["create", "-f", "-", "-o", "json"], Some(&review)).await;
    assert!(o.ok, "{}", o.stderr);
    let r: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(r["status"]["authenticated"], true, "{r}");
    assert_eq!(
        r["status"]["user"]["username"],
        "system:serviceaccount:apps:default"
    );

    // the cluster CA is published in the namespace, and pods get the token volume
    eventually("kube-root-ca.crt", || async {
        kubectl(
            &admin,
            &["get", "configmap", "kube-root-ca.crt", "-n", "apps"],
            None,
        )
        .await
        .ok
    })
    .await;
    let cm = json(
        &admin,
        &[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "apps",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(cm["data"]["ca.crt"], c.ca_pem.as_str());
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}"#;
    let o = kubectl(&admin, &["create", "-n", "apps", "-f", "-"], Some(pod)).await;
    assert!(o.ok, "{}", o.stderr);
    let p = json(&admin, &["get", "pod", "p", "-n", "apps", "-o", "json"]).await;
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    let vol = &p["spec"]["volumes"][0];
    assert!(
        vol["name"]
            .as_str()
            .unwrap()
            .starts_with("kube-api-access-"),
        "{vol}"
    );
    assert_eq!(
        vol["projected"]["sources"][0]["serviceAccountToken"]["path"],
        "token"
    );
    assert_eq!(
        p["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    let no_token = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q"}, "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "busybox"}]}}"#;
    let o = kubectl(&admin, &["create", "-n", "apps", "-f", "-"], Some(no_token)).await;
    assert!(o.ok, "{}", o.stderr);
    let q = json(&admin, &["get", "pod", "q", "-n", "apps", "-o", "json"]).await;
    assert!(q["spec"]["volumes"].is_null(), "{q}");

    // a token bound to a pod stops working when the pod goes
    let bound = ok(
        &admin,
        &[
            "create",
            "token",
            "default",
            "-n",
            "apps",
            "--bound-object-kind=Pod",
            "--bound-object-name=p",
            "--duration=20m",
        ],
    )
    .await;
    let bound_user = c.token_user("bound", bound.trim());
    let who = json(&bound_user, &["auth", "whoami", "-o", "json"]).await;
    assert_eq!(
        who["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"],
        serde_json::json!(["p"])
    );
    ok(
        &admin,
        &[
            "delete",
            "pod",
            "p",
            "-n",
            "apps",
            "--grace-period=0",
            "--force",
            "--wait=false",
        ],
    )
    .await;
    eventually("the pod is gone", || async {
        !kubectl(&admin, &["get", "pod", "p", "-n", "apps"], None)
            .await
            .ok
    })
    .await;
    let e = fails(&bound_user, &["get", "pods", "-n", "apps"]).await;
    assert!(e.contains("You must be logged in to the server"), "{e}");
    let e = fails(
        &admin,
        &["create", "token", "default", "-n", "apps", "--duration=1m"],
    )
    .await;
    assert!(
        e.contains("may not specify a duration less than 10 minutes"),
        "{e}"
    );

    // the issuer's keys for OIDC consumers
    let jwks: Value =
        serde_json::from_str(&ok(&admin, &["get", "--raw", "/openid/v1/jwks"]).await).unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    let oidc: Value = serde_json::from_str(
        &ok(&sa, &["get", "--raw", "/.well-known/openid-configuration"]).await,
    )
    .unwrap();
    assert_eq!(
        oidc["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_roles_print_as_upstream_and_aggregate() {
    let c = start().await;
    let admin = c.admin.clone();
    let out = ok(
        &admin,
        &["get", "clusterrolebinding", "cluster-admin", "-o", "wide"],
    )
    .await;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    );
    let row = out.lines().nth(1).unwrap();
    assert!(
        row.contains("ClusterRole/cluster-admin") && row.contains("system:masters"),
        "{row}"
    );
    let out = ok(&admin, &["get", "clusterroles"]).await;
    assert!(
        out.starts_with("NAME") && out.lines().next().unwrap().contains("CREATED AT"),
        "{out}"
    );
    for name in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:discovery",
        "system:basic-user",
        "system:public-info-viewer",
        "system:node",
    ] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} in {out}"
        );
    }
    // view aggregates a new role labelled for it; admin aggregates edit's and view's
    let extra = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "widgets-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]}]}"#;
    let o = kubectl(&admin, &["create", "-f", "-"], Some(extra)).await;
    assert!(o.ok, "{}", o.stderr);
    eventually("view aggregates widgets", || async {
        let v = json(&admin, &["get", "clusterrole", "view", "-o", "json"]).await;
        v["rules"].to_string().contains("widgets")
    })
    .await;
    let admin_role = json(&admin, &["get", "clusterrole", "admin", "-o", "json"]).await;
    let rules = admin_role["rules"].to_string();
    assert!(
        rules.contains("rolebindings") && rules.contains("deployments") && !rules.is_empty(),
        "{rules}"
    );
    // invalid rules are refused as upstream
    let bad = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "bad"},
        "rules": [{"nonResourceURLs": ["/x"], "verbs": ["get"]}]}"#;
    let o = kubectl(&admin, &["create", "-f", "-"], Some(bad)).await;
    assert!(
        o.stderr
            .contains("namespaced rules cannot apply to non-resource URLs"),
        "{}",
        o.stderr
    );
}

const NODE_OBJECTS: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Node, metadata: {name: n1}}
- {apiVersion: v1, kind: Node, metadata: {name: n2}}
- {apiVersion: v1, kind: Secret, metadata: {name: s1}, stringData: {k: one}}
- {apiVersion: v1, kind: Secret, metadata: {name: s2}, stringData: {k: two}}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: cm2}, data: {k: two}}
- apiVersion: v1
  kind: Pod
  metadata: {name: p1}
  spec:
    nodeName: n1
    containers: [{name: c, image: busybox}]
    volumes: [{name: s, secret: {secretName: s1}}]
- apiVersion: v1
  kind: Pod
  metadata: {name: p2}
  spec:
    nodeName: n2
    containers:
    - name: c
      image: busybox
      env: [{name: K, valueFrom: {configMapKeyRef: {name: cm2, key: k}}}]
    volumes: [{name: s, secret: {secretName: s2}}]
"#;

/// A node's credential as a joining node gets it (`POST /kcore/v1/nodecertificates`
/// with the bootstrap credential), as a kubeconfig.
async fn node_credential(c: &Cluster, node: &str) -> PathBuf {
    let body = c.dir.path().join(format!("{node}-request.json"));
    std::fs::write(
        &body,
        format!(r#"{{"nodeName": "{node}", "addresses": ["127.0.0.1"]}}"#),
    )
    .expect("request");
    let out = json(
        &c.admin,
        &[
            "create",
            "--raw",
            "/kcore/v1/nodecertificates",
            "-f",
            body.to_str().expect("utf-8"),
        ],
    )
    .await;
    let pem = |k: &str| {
        out[k]
            .as_str()
            .unwrap_or_else(|| panic!("no {k}: {out}"))
            .to_owned()
    };
    c.kubeconfig(
        &format!("node-{node}"),
        &format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&pem("clientCertificatePem")),
            b64(&pem("clientKeyPem"))
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaches_only_its_own_pods_objects() {
    let c = start().await;
    let admin = c.admin.clone();
    eventually("the default service account", || async {
        kubectl(&admin, &["get", "serviceaccount", "default"], None)
            .await
            .ok
    })
    .await;
    let o = kubectl(&admin, &["apply", "-f", "-"], Some(NODE_OBJECTS)).await;
    assert!(o.ok, "{}", o.stderr);
    let n1 = node_credential(&c, "n1").await;

    let who = json(&n1, &["auth", "whoami", "-o", "json"]).await;
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:n1");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!(["system:nodes", "system:authenticated"])
    );

    // the Node authorizer: its own pod's Secret, not another node's pod's
    assert_eq!(
        ok(&n1, &["get", "secret", "s1", "-o", "jsonpath={.data.k}"]).await,
        b64("one")
    );
    let forbidden = |what: &str, verb: &str, res: &str, scope: &str, reason: &str| {
        format!(
            r#"Error from server (Forbidden): {what} is forbidden: User "system:node:n1" cannot {verb} resource "{res}" in API group "" {scope}: {reason}"#
        )
    };
    let no_relation = "no relationship found between node 'n1' and this object";
    let e = fails(&n1, &["get", "secret", "s2"]).await;
    let want = forbidden(
        r#"secrets "s2""#,
        "get",
        "secrets",
        r#"in the namespace "default""#,
        no_relation,
    );
    assert!(e.contains(&want), "{e}\nwanted: {want}");
    let e = fails(&n1, &["get", "configmap", "cm2"]).await;
    assert!(e.contains(no_relation), "{e}");
    let e = fails(&n1, &["get", "secrets"]).await;
    assert!(
        e.contains(&forbidden(
            "secrets",
            "list",
            "secrets",
            r#"in the namespace "default""#,
            "No Object name found"
        )),
        "{e}"
    );
    assert!(can_i(&n1, &["get", "secret/s1"]).await);
    assert!(!can_i(&n1, &["get", "secret/s2"]).await);
    let e = fails(&n1, &["get", "node", "n2"]).await;
    assert!(
        e.contains(&forbidden(
            r#"nodes "n2""#,
            "get",
            "nodes",
            "at the cluster scope",
            "node 'n1' cannot read 'n2', only its own Node object"
        )),
        "{e}"
    );
    ok(&n1, &["get", "node", "n1"]).await;
    let mine = ok(
        &n1,
        &[
            "get",
            "pods",
            "--field-selector",
            "spec.nodeName=n1",
            "-o",
            "name",
        ],
    )
    .await;
    assert_eq!(mine.trim(), "pod/p1");

    // NodeRestriction: only its own Node, without restricted labels
    // (kubectl label and patch read the Node first, which the authorizer refuses: a raw
    // PUT reaches admission)
    let n2 = c.dir.path().join("n2.json");
    std::fs::write(
        &n2,
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n2","labels":{"team":"a"}}}"#,
    )
    .expect("node");
    let n2 = n2.to_str().expect("utf-8");
    let e = fails(&n1, &["replace", "--raw", "/api/v1/nodes/n2", "-f", n2]).await;
    assert!(
        e.contains(r#"nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2""#),
        "{e}"
    );
    ok(&n1, &["label", "node", "n1", "team=a"]).await;
    let e = fails(
        &n1,
        &[
            "label",
            "node",
            "n1",
            "node-role.kubernetes.io/control-plane=",
        ],
    )
    .await;
    assert!(
        e.contains(r#"nodes "n1" is forbidden: is not allowed to modify labels: node-role.kubernetes.io/control-plane"#),
        "{e}"
    );
    let e = fails(&n1, &["taint", "node", "n1", "k=v:NoSchedule"]).await;
    assert!(
        e.contains(r#"node "n1" is not allowed to modify taints"#),
        "{e}"
    );
    // pods: the status of its own only, no deletes of others', only mirror pods
    // (kubectl patch --subresource=status reads pods/status first, which nodes may not)
    let status_put = |p: &'static str| {
        let (admin, n1, dir) = (admin.clone(), n1.clone(), c.dir.path().to_owned());
        async move {
            let mut pod = json(&admin, &["get", "pod", p, "-o", "json"]).await;
            pod["status"]["message"] = "seen".into();
            let file = dir.join(format!("{p}-status.json"));
            std::fs::write(&file, pod.to_string()).expect("pod");
            let path = format!("/api/v1/namespaces/default/pods/{p}/status");
            kubectl(
                &n1,
                &[
                    "replace",
                    "--raw",
                    &path,
                    "-f",
                    file.to_str().expect("utf-8"),
                ],
                None,
            )
            .await
        }
    };
    let o = status_put("p1").await;
    assert!(o.ok, "{}", o.stderr);
    let e = status_put("p2").await.stderr;
    assert!(
        e.contains(r#"pods "p2" is forbidden: node "n1" can only update pod status for pods with spec.nodeName set to itself"#),
        "{e}"
    );
    let e = fails(&n1, &["delete", "pod", "p2", "--wait=false"]).await;
    assert!(
        e.contains(r#"node "n1" can only delete pods with spec.nodeName set to itself"#),
        "{e}"
    );
    let e = fails(&n1, &["run", "x", "--image=busybox"]).await;
    assert!(
        e.contains(r#"pod does not have "kubernetes.io/config.mirror" annotation, node "n1" can only create mirror pods"#),
        "{e}"
    );
    // tokens only for pods on the node; leases only its own
    let uid = |p: &'static str| {
        let admin = admin.clone();
        async move { ok(&admin, &["get", "pod", p, "-o", "jsonpath={.metadata.uid}"]).await }
    };
    let (u1, u2) = (uid("p1").await, uid("p2").await);
    let token = |p: &'static str, u: String| {
        let n1 = n1.clone();
        async move {
            kubectl(
                &n1,
                &[
                    "create",
                    "token",
                    "default",
                    "--bound-object-kind=Pod",
                    &format!("--bound-object-name={p}"),
                    &format!("--bound-object-uid={u}"),
                ],
                None,
            )
            .await
        }
    };
    let t = token("p1", u1).await;
    assert!(t.ok, "{}", t.stderr);
    let t = token("p2", u2).await;
    assert!(
        t.stderr
            .contains("node requested token bound to a pod scheduled on a different node"),
        "{}",
        t.stderr
    );
    let lease = |n: &str| {
        format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {n}, namespace: kube-node-lease}}\nspec: {{holderIdentity: {n}}}\n"
        )
    };
    let o = kubectl(&n1, &["create", "-f", "-"], Some(&lease("n1"))).await;
    assert!(o.ok, "{}", o.stderr);
    let o = kubectl(&n1, &["create", "-f", "-"], Some(&lease("n2"))).await;
    assert!(
        o.stderr
            .contains("can only access node lease with the same name as the requesting node"),
        "{}",
        o.stderr
    );
}

/// Ingresses and the Secrets they name, for the Node authorizer's TLS extension.
const INGRESS_OBJECTS: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: team}}
- {apiVersion: v1, kind: Secret, metadata: {name: web-tls}, type: kubernetes.io/tls, stringData: {tls.crt: crt, tls.key: key}}
- {apiVersion: v1, kind: Secret, metadata: {name: web-tls, namespace: team}, type: kubernetes.io/tls, stringData: {tls.crt: crt, tls.key: key}}
- {apiVersion: v1, kind: Secret, metadata: {name: nginx-tls}, type: kubernetes.io/tls, stringData: {tls.crt: crt, tls.key: key}}
- {apiVersion: v1, kind: Secret, metadata: {name: plain}, stringData: {k: v}}
- {apiVersion: networking.k8s.io/v1, kind: IngressClass, metadata: {name: nginx}, spec: {controller: k8s.io/ingress-nginx}}
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata: {name: web}
  spec:
    tls: [{hosts: [a.test], secretName: web-tls}]
    defaultBackend: {service: {name: web, port: {number: 80}}}
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata: {name: theirs}
  spec:
    ingressClassName: nginx
    tls: [{hosts: [n.test], secretName: nginx-tls}]
    defaultBackend: {service: {name: web, port: {number: 80}}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_the_tls_secrets_of_the_ingresses_kcore_serves_only() {
    let c = start().await;
    let admin = c.admin.clone();
    eventually("the default service account", || async {
        kubectl(&admin, &["get", "serviceaccount", "default"], None)
            .await
            .ok
    })
    .await;
    let o = kubectl(&admin, &["apply", "-f", "-"], Some(INGRESS_OBJECTS)).await;
    assert!(o.ok, "{}", o.stderr);
    let n1 = node_credential(&c, "n1").await;
    // at once (the graph may not have the Ingress yet: the store confirms), by get, by
    // a list and a watch of its name, though no pod of n1 refers to it
    assert_eq!(
        ok(
            &n1,
            &[
                "get",
                "secret",
                "web-tls",
                "-o",
                "jsonpath={.data.tls\\.crt}"
            ]
        )
        .await,
        b64("crt")
    );
    let listed = ok(
        &n1,
        &[
            "get",
            "secrets",
            "--field-selector",
            "metadata.name=web-tls",
            "-o",
            "name",
        ],
    )
    .await;
    assert_eq!(listed.trim(), "secret/web-tls");
    let watched = ok(
        &n1,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Dweb-tls&watch=true&timeoutSeconds=1",
        ],
    )
    .await;
    assert!(watched.contains(r#""name":"web-tls""#), "{watched}");
    // not: a Secret no Ingress names, the same name in a namespace without such an
    // Ingress, another controller's Ingress' Secret, nor a list of them all
    let no_relation = "no relationship found between node 'n1' and this object";
    for (secret, ns) in [
        ("plain", "default"),
        ("web-tls", "team"),
        ("nginx-tls", "default"),
    ] {
        let e = fails(&n1, &["get", "secret", secret, "-n", ns]).await;
        assert!(
            e.contains(&format!(
                r#"secrets "{secret}" is forbidden: User "system:node:n1" cannot get resource "secrets" in API group "" in the namespace "{ns}": {no_relation}"#
            )),
            "{ns}/{secret}: {e}"
        );
    }
    let e = fails(&n1, &["get", "secrets"]).await;
    assert!(e.contains("No Object name found"), "{e}");
    // the Ingress gone, so is the node's access
    ok(&admin, &["delete", "ingress", "web"]).await;
    eventually("n1 refused web-tls", || async {
        !kubectl(&n1, &["get", "secret", "web-tls"], None).await.ok
    })
    .await;
    let e = fails(&n1, &["get", "secret", "web-tls"]).await;
    assert!(e.contains(no_relation), "{e}");
}

/// A ClusterRole `name` with `rules` (JSON) bound to `user`, as the admin.
async fn grant(c: &Cluster, name: &str, rules: &str, user: &str) {
    let yaml = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {name}}}\nrules: {rules}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {name}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {name}}}\nsubjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user:?}}}]\n"
    );
    let o = kubectl(&c.admin, &["apply", "-f", "-"], Some(&yaml)).await;
    assert!(o.ok, "{}", o.stderr);
}

/// Binds the ClusterRole `role` to the group `group` (binding `name`).
async fn bind_group(c: &Cluster, name: &str, role: &str, group: &str) {
    let o = kubectl(
        &c.admin,
        &[
            "create",
            "clusterrolebinding",
            name,
            &format!("--clusterrole={role}"),
            &format!("--group={group}"),
        ],
        None,
    )
    .await;
    assert!(o.ok, "{}", o.stderr);
}

/// The conditions of a CSR, as `type/reason/message` lines.
async fn csr_conditions(c: &Cluster, name: &str) -> String {
    ok(
        &c.admin,
        &[
            "get",
            "csr",
            name,
            "-o",
            "jsonpath={range .status.conditions[*]}{.type}/{.reason}/{.message}{\"\\n\"}{end}",
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_approval_needs_approve_on_the_signer_and_node_client_requests_are_auto_approved() {
    let c = start().await;
    let create_as = |kc: PathBuf, yaml: String| async move {
        let o = kubectl(&kc, &["create", "-f", "-"], Some(&yaml)).await;
        assert!(o.ok, "{}", o.stderr);
    };
    let someone = kcore_tls::CertRequest::generate("someone", &[], &[]).unwrap();

    // approve on the signer (by name, then by `<domain>/*`), upstream's CertificateApproval
    let approver = c.cert_user(&c.ca, "approver", &[]);
    grant(
        &c,
        "csr-approver",
        r#"[{apiGroups: [certificates.k8s.io], resources: [certificatesigningrequests], verbs: [get, list]},
            {apiGroups: [certificates.k8s.io], resources: [certificatesigningrequests/approval, certificatesigningrequests/status], verbs: [get, update, patch]}]"#,
        "approver",
    )
    .await;
    create_as(
        c.admin.clone(),
        csr_yaml(
            "dave",
            &someone.cert_pem,
            "kubernetes.io/kube-apiserver-client",
            &["client auth"],
        ),
    )
    .await;
    let e = fails(&approver, &["certificate", "approve", "dave"]).await;
    assert!(
        e.contains(r#"certificatesigningrequests.certificates.k8s.io "dave" is forbidden: user not permitted to approve requests with signerName "kubernetes.io/kube-apiserver-client""#),
        "{e}"
    );
    let o = kubectl(
        &c.admin,
        &[
            "create",
            "clusterrolebinding",
            "approver-client",
            "--clusterrole=system:certificates.k8s.io:kube-apiserver-client-approver",
            "--user=approver",
        ],
        None,
    )
    .await;
    assert!(o.ok, "{}", o.stderr);
    let kc = approver.clone();
    eventually("the approver may approve client certificates", || {
        let kc = kc.clone();
        async move {
            kubectl(&kc, &["certificate", "approve", "dave"], None)
                .await
                .ok
        }
    })
    .await;
    assert!(csr_conditions(&c, "dave").await.starts_with("Approved/"));

    create_as(
        c.admin.clone(),
        csr_yaml(
            "erin",
            &someone.cert_pem,
            "example.com/custom",
            &["client auth"],
        ),
    )
    .await;
    let e = fails(&approver, &["certificate", "approve", "erin"]).await;
    assert!(
        e.contains(
            r#"user not permitted to approve requests with signerName "example.com/custom""#
        ),
        "{e}"
    );
    grant(
        &c,
        "example-signer",
        r#"[{apiGroups: [certificates.k8s.io], resources: [signers], resourceNames: ["example.com/*"], verbs: [approve]}]"#,
        "approver",
    )
    .await;
    let kc = approver.clone();
    eventually("the approver may approve example.com/*", || {
        let kc = kc.clone();
        async move {
            kubectl(&kc, &["certificate", "approve", "erin"], None)
                .await
                .ok
        }
    })
    .await;

    // sign: writing the certificate through status, upstream's CertificateSigning
    let issued = c.ca.issue_client("someone", &[]).expect("certificate");
    let patch = format!(
        r#"{{"status":{{"certificate":"{}"}}}}"#,
        b64(&issued.cert_pem)
    );
    let sign = |kc: PathBuf, patch: String| async move {
        kubectl(
            &kc,
            &[
                "patch",
                "csr",
                "erin",
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch,
            ],
            None,
        )
        .await
    };
    let o = sign(approver.clone(), patch.clone()).await;
    assert!(!o.ok);
    assert!(
        o.stderr.contains(r#"certificatesigningrequests.certificates.k8s.io "erin" is forbidden: user not permitted to sign requests with signerName "example.com/custom""#),
        "{}",
        o.stderr
    );
    grant(
        &c,
        "example-signer-sign",
        r#"[{apiGroups: [certificates.k8s.io], resources: [signers], resourceNames: [example.com/custom], verbs: [sign]}]"#,
        "approver",
    )
    .await;
    let (kc, p) = (approver.clone(), patch.clone());
    eventually("the approver may sign for example.com/custom", || {
        let (kc, p) = (kc.clone(), p.clone());
        async move { sign(kc, p).await.ok }
    })
    .await;

    // node client requests: approved when the requester may create
    // certificatesigningrequests/nodeclient (bootstrap) or .../selfnodeclient (its own)
    let node_csr = |node: &str| {
        kcore_tls::CertRequest::generate(
            &format!("system:node:{node}"),
            &["system:nodes".into()],
            &[],
        )
        .unwrap()
        .cert_pem
    };
    let kubelet_csr = |name: &str, pem: &str| {
        csr_yaml(
            name,
            pem,
            "kubernetes.io/kube-apiserver-client-kubelet",
            &["client auth", "digital signature"],
        )
    };
    let stranger = c.cert_user(&c.ca, "stranger", &["strangers"]);
    bind_group(&c, "strangers-csr", "system:node-bootstrapper", "strangers").await;
    let boot = c.cert_user(&c.ca, "bootstrap-n1", &["system:bootstrappers"]);
    bind_group(
        &c,
        "bootstrappers-csr",
        "system:node-bootstrapper",
        "system:bootstrappers",
    )
    .await;
    bind_group(
        &c,
        "auto-approve-bootstrap",
        "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        "system:bootstrappers",
    )
    .await;
    let node3 = c.cert_user(&c.ca, "system:node:n3", &["system:nodes"]);
    bind_group(
        &c,
        "auto-approve-renewal",
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
        "system:nodes",
    )
    .await;
    // (upstream's Node authorizer lets nodes create CSRs; here RBAC does, for the test)
    bind_group(&c, "nodes-csr", "system:node-bootstrapper", "system:nodes").await;
    let requesters = [stranger.clone(), boot.clone(), node3.clone()];
    eventually("the requesters may create CSRs", || {
        let requesters = requesters.clone();
        async move {
            for r in &requesters {
                if !can_i(r, &["create", "csr"]).await {
                    return false;
                }
            }
            true
        }
    })
    .await;
    create_as(
        stranger.clone(),
        kubelet_csr("n2-by-stranger", &node_csr("n2")),
    )
    .await;
    // a node asking for another node's certificate is no renewal
    create_as(node3.clone(), kubelet_csr("n4-by-n3", &node_csr("n4"))).await;
    create_as(boot.clone(), kubelet_csr("n1-bootstrap", &node_csr("n1"))).await;
    create_as(node3.clone(), kubelet_csr("n3-renewal", &node_csr("n3"))).await;
    let admin = c.admin.clone();
    eventually(
        "the bootstrap and renewal requests are approved and issued",
        || {
            let admin = admin.clone();
            async move {
                let t = kubectl(&admin, &["get", "csr"], None).await.stdout;
                t.lines()
                    .filter(|l| {
                        (l.starts_with("n1-bootstrap") || l.starts_with("n3-renewal"))
                            && l.contains("Approved,Issued")
                    })
                    .count()
                    == 2
            }
        },
    )
    .await;
    assert_eq!(
        csr_conditions(&c, "n1-bootstrap").await.trim(),
        "Approved/AutoApproved/Auto approving kubelet client certificate after SubjectAccessReview."
    );
    assert_eq!(
        csr_conditions(&c, "n3-renewal").await.trim(),
        "Approved/AutoApproved/Auto approving self kubelet client certificate after SubjectAccessReview."
    );
    // the others wait for a person (their events came first, so they were decided)
    assert_eq!(csr_conditions(&c, "n2-by-stranger").await.trim(), "");
    assert_eq!(csr_conditions(&c, "n4-by-n3").await.trim(), "");
}

/// A bootstrap-token Secret as `kubeadm token create` writes it.
fn bootstrap_secret(id: &str, secret: &str, expiration: Option<&str>, usage: bool) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bootstrap-token-{id}\n  namespace: kube-system\ntype: bootstrap.kubernetes.io/token\nstringData:\n  token-id: {id}\n  token-secret: {secret}\n  auth-extra-groups: system:bootstrappers:kcore:test\n"
    );
    if usage {
        s.push_str("  usage-bootstrap-authentication: \"true\"\n");
    }
    if let Some(e) = expiration {
        s.push_str(&format!("  expiration: \"{e}\"\n"));
    }
    s
}

fn rfc3339_in(secs: i64) -> String {
    let at = std::time::SystemTime::now() + Duration::from_secs(secs as u64);
    let t = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    // civil date from days (Howard Hinnant)
    let (days, rem) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Waits until the CSR `name` has a certificate; its PEM.
async fn issued(c: &Cluster, name: &str) -> String {
    let (admin, n) = (c.admin.clone(), name.to_owned());
    eventually(&format!("CSR {name} is issued"), || {
        let (admin, n) = (admin.clone(), n.clone());
        async move {
            !ok(
                &admin,
                &["get", "csr", &n, "-o", "jsonpath={.status.certificate}"],
            )
            .await
            .trim()
            .is_empty()
        }
    })
    .await;
    let b = ok(
        &c.admin,
        &["get", "csr", name, "-o", "jsonpath={.status.certificate}"],
    )
    .await;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_tokens_may_only_ask_for_node_certificates_until_they_expire() {
    let c = start().await;
    let create = |kc: PathBuf, yaml: String| async move {
        let o = kubectl(&kc, &["create", "-f", "-"], Some(&yaml)).await;
        assert!(o.ok, "{}", o.stderr);
    };
    create(
        c.admin.clone(),
        bootstrap_secret("abcdef", "0123456789abcdef", Some(&rfc3339_in(3600)), true),
    )
    .await;
    create(
        c.admin.clone(),
        bootstrap_secret("nousg1", "0123456789abcdef", None, false),
    )
    .await;
    let boot = c.token_user("boot", "abcdef.0123456789abcdef");
    let who = json(&boot, &["auth", "whoami", "-o", "json"]).await;
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:bootstrap:abcdef"
    );
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!([
            "system:bootstrappers",
            "system:bootstrappers:kcore:test",
            "system:authenticated"
        ])
    );
    // nothing but CSRs
    let e = fails(&boot, &["get", "pods"]).await;
    assert!(
        e.contains(r#"pods is forbidden: User "system:bootstrap:abcdef" cannot list resource "pods" in API group "" in the namespace "default""#),
        "{e}"
    );
    let e = fails(&boot, &["get", "secrets", "-n", "kube-system"]).await;
    assert!(e.contains("is forbidden"), "{e}");
    assert!(can_i(&boot, &["create", "certificatesigningrequests"]).await);
    assert!(can_i(&boot, &["get", "certificatesigningrequests"]).await);
    assert!(!can_i(&boot, &["approve", "signers", "--all-namespaces"]).await);
    assert!(!can_i(&boot, &["create", "nodes"]).await);

    // a wrong secret, a token not for authentication, an unknown id: 401
    for (name, token) in [
        ("wrong", "abcdef.0123456789abcdee"),
        ("nousage", "nousg1.0123456789abcdef"),
        ("unknown", "zzzzzz.0123456789abcdef"),
    ] {
        let kc = c.token_user(name, token);
        let e = fails(&kc, &["get", "--raw", "/api"]).await;
        assert!(e.contains("Unauthorized"), "{name}: {e}");
    }

    // the node client certificate: asked with the bootstrap token, auto-approved, signed
    let n1 =
        kcore_tls::CertRequest::generate("system:node:n1", &["system:nodes".into()], &[]).unwrap();
    create(
        boot.clone(),
        csr_yaml(
            "n1-client",
            &n1.cert_pem,
            "kubernetes.io/kube-apiserver-client-kubelet",
            &["client auth", "digital signature"],
        ),
    )
    .await;
    let cert = issued(&c, "n1-client").await;
    assert_eq!(
        csr_conditions(&c, "n1-client").await.trim(),
        "Approved/AutoApproved/Auto approving kubelet client certificate after SubjectAccessReview."
    );
    let requester = ok(
        &c.admin,
        &["get", "csr", "n1-client", "-o", "jsonpath={.spec.username}"],
    )
    .await;
    assert_eq!(requester, "system:bootstrap:abcdef");
    // which is n1's credential
    let node1 = c.kubeconfig(
        "n1",
        &format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&cert),
            b64(&n1.key_pem)
        ),
    );
    let who = json(&node1, &["auth", "whoami", "-o", "json"]).await;
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:n1");

    // serving certificates: approved for the node's own names and addresses (as its Node
    // reports them), from the node itself; refused for another's; left to an
    // administrator when someone else asks
    create(
        c.admin.clone(),
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus:\n  addresses:\n  - {type: Hostname, address: n1}\n  - {type: InternalIP, address: 10.0.0.7}\n".into(),
    )
    .await;
    let serving = |cn: &str, names: &[&str]| {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        kcore_tls::CertRequest::generate(cn, &["system:nodes".into()], &names)
            .unwrap()
            .cert_pem
    };
    let serving_yaml = |name: &str, pem: &str| {
        csr_yaml(
            name,
            pem,
            "kubernetes.io/kubelet-serving",
            &["server auth", "digital signature"],
        )
    };
    create(
        node1.clone(),
        serving_yaml(
            "n1-serving",
            &serving("system:node:n1", &["n1", "10.0.0.7"]),
        ),
    )
    .await;
    create(
        node1.clone(),
        serving_yaml("n1-as-n2", &serving("system:node:n1", &["n2"])),
    )
    .await;
    create(
        boot.clone(),
        serving_yaml("n1-by-boot", &serving("system:node:n1", &["n1"])),
    )
    .await;
    let pem = issued(&c, "n1-serving").await;
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert_eq!(csr_conditions(&c, "n1-by-boot").await.trim(), "");
    let (admin, n) = (c.admin.clone(), "n1-as-n2");
    eventually("CSR n1-as-n2 is denied", || {
        let admin = admin.clone();
        async move {
            !ok(
                &admin,
                &[
                    "get",
                    "csr",
                    n,
                    "-o",
                    "jsonpath={.status.conditions[*].type}",
                ],
            )
            .await
            .trim()
            .is_empty()
        }
    })
    .await;
    assert_eq!(
        csr_conditions(&c, "n1-as-n2").await.trim(),
        r#"Denied/AutoDenied/Denied kubelet serving certificate: DNS name "n2" is not an address of node "n1"."#
    );

    // a short-lived token works, then is refused, then its Secret is cleaned up
    create(
        c.admin.clone(),
        bootstrap_secret("short1", "0123456789abcdef", Some(&rfc3339_in(5)), true),
    )
    .await;
    let short = c.token_user("short", "short1.0123456789abcdef");
    let o = kubectl(&short, &["get", "--raw", "/api"], None).await;
    assert!(o.ok, "before expiry: {}", o.stderr);
    let (kc, admin) = (short.clone(), c.admin.clone());
    eventually("the expired token is refused", || {
        let kc = kc.clone();
        async move {
            let o = kubectl(&kc, &["get", "--raw", "/api"], None).await;
            !o.ok && o.stderr.contains("Unauthorized")
        }
    })
    .await;
    eventually("the token cleaner deletes the expired Secret", || {
        let admin = admin.clone();
        async move {
            let o = kubectl(
                &admin,
                &[
                    "get",
                    "secret",
                    "-n",
                    "kube-system",
                    "bootstrap-token-short1",
                ],
                None,
            )
            .await;
            !o.ok && o.stderr.contains("NotFound")
        }
    })
    .await;
    // the others stay
    ok(
        &c.admin,
        &[
            "get",
            "secret",
            "-n",
            "kube-system",
            "bootstrap-token-abcdef",
            "bootstrap-token-nousg1",
        ],
    )
    .await;
}
