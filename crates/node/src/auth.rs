//! Who may use the agent's server, and for what, as the kubelet decides it:
//!
//! - **Authentication**: a client certificate signed by the cluster CA (user = CN,
//!   groups = O), or a bearer token the API server accepts, asked with a TokenReview.
//!   Everything else gets 401 with a Kubernetes `Status`.
//! - **Authorization**: a SubjectAccessReview to the API server for the user, with the
//!   kubelet's attributes: the verb from the HTTP method, resource `nodes`, the node's
//!   name, and the subresource from the path ([`attributes`]: `stats`, `metrics`, `log`,
//!   `checkpoint`, and `proxy` for everything else, exec, attach, port-forward and
//!   container logs included; `healthz`, `pods` and `configz` are tried first on their
//!   paths and fall back to `proxy`, as the kubelet's fine-grained authorization does).
//!   A refusal is the kubelet's 403 `Forbidden (user=..., verb=..., resource=...,
//!   subresource=...)`.
//!
//! Both reviews are sent with the agent's own API client (the node's identity, allowed
//! to create them by `system:node`). Their answers are cached as the kubelet's webhooks
//! cache them: accepted tokens for [`TOKEN_TTL`], allowed decisions for
//! [`ALLOWED_TTL`], denied ones for [`DENIED_TTL`]. Without an API client (no
//! `token_review_url`), only client certificates get in, and nothing is authorized.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kcore_tls::PeerCertificates;

/// How long an accepted token is trusted without asking again (the kubelet's
/// `--authentication-token-webhook-cache-ttl`).
pub(crate) const TOKEN_TTL: Duration = Duration::from_secs(120);
/// How long an allowed decision is reused (`--authorization-webhook-cache-authorized-ttl`).
pub(crate) const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// How long a denied decision is reused (`--authorization-webhook-cache-unauthorized-ttl`).
pub(crate) const DENIED_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 1024;
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// The user a request comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The kubelet's authorization attributes of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Attrs {
    pub verb: &'static str,
    /// Subresources of `nodes` to try in order (the first allowed wins).
    pub subresources: Vec<&'static str>,
}

/// The kubelet's `GetRequestAttributes`: the verb from the method and the subresource
/// from the path.
pub(crate) fn attributes(method: &Method, path: &str) -> Attrs {
    let verb = match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    let subresources = if under("/stats") {
        vec!["stats"]
    } else if under("/metrics") {
        vec!["metrics"]
    } else if under("/logs") {
        vec!["log"]
    } else if under("/checkpoint") {
        vec!["checkpoint"]
    } else if under("/healthz") {
        vec!["healthz", "proxy"]
    } else if under("/pods") {
        vec!["pods", "proxy"]
    } else if under("/configz") {
        vec!["configz", "proxy"]
    } else {
        vec!["proxy"]
    };
    Attrs { verb, subresources }
}

type Cache<K, V> = Mutex<HashMap<K, (V, Instant)>>;

fn cached<K: std::hash::Hash + Eq, V: Clone>(cache: &Cache<K, V>, k: &K) -> Option<V> {
    let c = cache.lock().unwrap_or_else(|p| p.into_inner());
    c.get(k)
        .filter(|(_, until)| Instant::now() < *until)
        .map(|(v, _)| v.clone())
}

fn remember<K: std::hash::Hash + Eq, V>(cache: &Cache<K, V>, k: K, v: V, ttl: Duration) {
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    if c.len() >= CACHE_MAX {
        let now = Instant::now();
        c.retain(|_, (_, until)| now < *until);
        if c.len() >= CACHE_MAX {
            c.clear();
        }
    }
    c.insert(k, (v, Instant::now() + ttl));
}

/// The agent server's authenticator and authorizer.
pub(crate) struct Authn {
    node: String,
    reviews: Option<kube::Client>,
    tokens: Cache<String, Option<User>>,
    decisions: Cache<(User, &'static str, &'static str), bool>,
}

impl Authn {
    /// For node `node`; with `reviews`, tokens are reviewed and requests authorized by
    /// the API server that client talks to.
    pub(crate) fn new(node: &str, reviews: Option<kube::Client>) -> Authn {
        Authn {
            node: node.to_owned(),
            reviews,
            tokens: Mutex::new(HashMap::new()),
            decisions: Mutex::new(HashMap::new()),
        }
    }

    /// The user of `token` (TokenReview), `None` when the API server does not know it or
    /// cannot be asked (logged).
    async fn token_user(&self, token: &str) -> Option<User> {
        let client = self.reviews.as_ref()?;
        if let Some(u) = cached(&self.tokens, &token.to_owned()) {
            return u;
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(client.clone());
        let out = match tokio::time::timeout(
            REVIEW_TIMEOUT,
            api.create(&kube::api::PostParams::default(), &review),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::ErrorChain(&e), "reviewing a bearer token with the api server");
                return None;
            }
            Err(_) => {
                tracing::warn!("reviewing a bearer token with the api server: timed out");
                return None;
            }
        };
        let status = out.status.unwrap_or_default();
        let user = status
            .authenticated
            .unwrap_or(false)
            .then(|| status.user.unwrap_or_default())
            .map(|u| User {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default().into_iter().collect(),
            });
        // only answers are cached: a refusal for as long as an acceptance
        remember(&self.tokens, token.to_owned(), user.clone(), TOKEN_TTL);
        user
    }

    /// Whether `user` may `verb` the node's `subresource` (SubjectAccessReview).
    async fn allowed(&self, user: &User, verb: &'static str, subresource: &'static str) -> bool {
        let Some(client) = &self.reviews else {
            return true;
        };
        let key = (user.clone(), verb, subresource);
        if let Some(d) = cached(&self.decisions, &key) {
            return d;
        }
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone().into_iter().collect()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_owned()),
                    version: Some("v1".to_owned()),
                    resource: Some("nodes".to_owned()),
                    subresource: Some(subresource.to_owned()),
                    name: Some(self.node.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(client.clone());
        let allowed = match tokio::time::timeout(
            REVIEW_TIMEOUT,
            api.create(&kube::api::PostParams::default(), &sar),
        )
        .await
        {
            Ok(Ok(r)) => r.status.is_some_and(|s| s.allowed),
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::ErrorChain(&e), "authorizing a request with the api server");
                return false;
            }
            Err(_) => {
                tracing::warn!("authorizing a request with the api server: timed out");
                return false;
            }
        };
        let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
        remember(&self.decisions, key, allowed, ttl);
        allowed
    }
}

/// The `Status` a request without valid credentials gets.
pub(crate) fn unauthorized() -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    });
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The kubelet's refusal of an authenticated user.
fn forbidden(user: &User, attrs: &Attrs) -> Response {
    let sub = attrs.subresources.last().copied().unwrap_or("proxy");
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "Forbidden (user={}, verb={}, resource=nodes, subresource={sub})",
            user.name, attrs.verb
        ),
    )
        .into_response()
}

/// Middleware: authenticates the request (client certificate or reviewed token) and
/// authorizes it with a SubjectAccessReview.
pub(crate) async fn require(
    State(authn): State<Arc<Authn>>,
    ConnectInfo(peer): ConnectInfo<PeerCertificates>,
    req: Request,
    next: Next,
) -> Response {
    // rustls verified the chain against the cluster CA during the handshake
    let from_cert = peer
        .0
        .first()
        .and_then(|c| kcore_tls::subject(c))
        .map(|s| User {
            name: s.common_name.unwrap_or_default(),
            uid: String::new(),
            groups: s.organizations,
            extra: BTreeMap::new(),
        });
    let user = match from_cert {
        Some(u) => u,
        None => {
            let token = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty());
            match token {
                Some(t) => match authn.token_user(t).await {
                    Some(u) => u,
                    None => return unauthorized(),
                },
                None => return unauthorized(),
            }
        }
    };
    let attrs = attributes(req.method(), req.uri().path());
    for sub in &attrs.subresources {
        if authn.allowed(&user, attrs.verb, sub).await {
            return next.run(req).await;
        }
    }
    tracing::debug!(user = %user.name, verb = attrs.verb, subresources = ?attrs.subresources, "refused a request to the node's API");
    forbidden(&user, &attrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use hyper_util::rt::TokioIo;
    use kcore_tls::{Ca, CertKey, Usage};

    async fn get(
        addr: std::net::SocketAddr,
        ca_pem: &str,
        identity: Option<&CertKey>,
        token: Option<&str>,
        path: &str,
    ) -> (u16, String) {
        let cfg = kcore_tls::client_config(ca_pem, identity).unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = axum::http::Request::get(path).header(header::HOST, "127.0.0.1");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = sender
            .send_request(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let code = resp.status().as_u16();
        let body = axum::body::to_bytes(Body::new(resp.into_body()), 1 << 20)
            .await
            .unwrap();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    /// A streaming backend without pods.
    struct NoPods;

    impl kcore_stream::Backend for NoPods {
        fn exec(
            &self,
            t: kcore_stream::Target,
            _: Vec<String>,
            _: kcore_stream::Streams,
        ) -> kcore_stream::BoxFuture<'_, Result<kcore_stream::Process, kcore_stream::BackendError>>
        {
            Box::pin(async move {
                Err(kcore_stream::BackendError::NotFound(format!(
                    "pod {} does not exist",
                    t.pod
                )))
            })
        }

        fn attach(
            &self,
            t: kcore_stream::Target,
            s: kcore_stream::Streams,
        ) -> kcore_stream::BoxFuture<'_, Result<kcore_stream::Process, kcore_stream::BackendError>>
        {
            self.exec(t, Vec::new(), s)
        }

        fn port_forward(
            &self,
            t: kcore_stream::Target,
            _: u16,
        ) -> kcore_stream::BoxFuture<
            '_,
            Result<Box<dyn kcore_stream::Duplex>, kcore_stream::BackendError>,
        > {
            Box::pin(async move {
                Err(kcore_stream::BackendError::NotFound(format!(
                    "pod {} does not exist",
                    t.pod
                )))
            })
        }
    }

    /// An exec upgrade request to the in-process `router`, from the holder of `chain`
    /// (as the connection info an API server in the process brings).
    async fn call_local(
        router: &axum::Router,
        chain: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
    ) -> (u16, String) {
        use tower::Service;
        let mut req = axum::http::Request::get("/exec/default/p/c?command=true&stdout=1")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-protocol", "v5.channel.k8s.io")
            .body(Body::empty())
            .unwrap();
        if let Some(c) = chain {
            req.extensions_mut()
                .insert(ConnectInfo(PeerCertificates(c, None)));
        }
        let mut router = router.clone();
        let resp = router.call(req).await.unwrap();
        let code = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[test]
    fn attributes_are_the_kubelets() {
        let a = |m: Method, p: &str| {
            let a = attributes(&m, p);
            (a.verb, a.subresources)
        };
        assert_eq!(a(Method::GET, "/stats/summary"), ("get", vec!["stats"]));
        assert_eq!(
            a(Method::GET, "/metrics/cadvisor"),
            ("get", vec!["metrics"])
        );
        assert_eq!(a(Method::GET, "/logs/syslog"), ("get", vec!["log"]));
        assert_eq!(
            a(Method::GET, "/containerLogs/d/p/c"),
            ("get", vec!["proxy"])
        );
        assert_eq!(a(Method::POST, "/exec/d/p/c"), ("create", vec!["proxy"]));
        assert_eq!(
            a(Method::POST, "/portforward/d/p"),
            ("create", vec!["proxy"])
        );
        assert_eq!(
            a(Method::GET, "/healthz"),
            ("get", vec!["healthz", "proxy"])
        );
        assert_eq!(a(Method::GET, "/pods"), ("get", vec!["pods", "proxy"]));
        assert_eq!(a(Method::GET, "/statsx"), ("get", vec!["proxy"]));
        assert_eq!(a(Method::PUT, "/x").0, "update");
        assert_eq!(a(Method::DELETE, "/x").0, "delete");
        assert_eq!(a(Method::PATCH, "/x").0, "patch");
    }

    /// The node's server against a real API server with its PKI: certificates of the
    /// cluster CA and tokens the API server accepts get in, and each request is
    /// authorized by a SubjectAccessReview (the API server's own certificate through
    /// `system:kubelet-api-admin`, a user without rights gets the kubelet's 403).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_are_authenticated_and_authorized_by_the_api_server() {
        let dir = tempfile::tempdir().unwrap();
        let api_dir = dir.path().join("api");
        std::fs::create_dir_all(&api_dir).unwrap();
        let tokens = api_dir.join("tokens.csv");
        std::fs::write(
            &tokens,
            "admin-token-0123456789\nnobody-token-0123456789,nobody,1001\n",
        )
        .unwrap();
        let server = kcore_apiserver::ApiServer::builder()
            .data_dir(&api_dir)
            .token_file(&tokens)
            .listen("127.0.0.1:0".parse().unwrap())
            .build()
            .await
            .unwrap();
        let url = server.url();
        let server = server.spawn();

        let pki = api_dir.join("pki");
        let ca = Ca::load_or_create(&pki).unwrap();
        let ca_pem = ca.cert_pem();
        // the node's reviews go out with an administrator's client here (the agent uses
        // its own, which `system:node` allows to create reviews)
        let mut kcfg = kube::Config::new(url.parse().unwrap());
        kcfg.root_cert = Some(vec![
            kcore_tls::pem_certificates(ca_pem).unwrap()[0].to_vec()
        ]);
        kcfg.auth_info.token = Some("admin-token-0123456789".to_owned().into());
        let reviews = kube::Client::try_from(kcfg).unwrap();

        let serving = ca
            .issue("system:node:n1", &["127.0.0.1".into()], Usage::Server)
            .unwrap();
        let read = |f: &str| std::fs::read_to_string(pki.join(f)).unwrap();
        let apiserver_client = CertKey {
            cert_pem: read("apiserver-kubelet-client.crt"),
            key_pem: read("apiserver-kubelet-client.key"),
        };
        let authn = Arc::new(Authn::new("n1", Some(reviews)));
        let logs = tempfile::tempdir().unwrap();
        let app = crate::server::router(
            logs.path().to_owned(),
            Some(authn.clone()),
            None,
            None,
            kcore_stream::Sessions::default(),
        )
        .into_make_service_with_connect_info::<PeerCertificates>();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = kcore_tls::TlsListener::new(
            tcp,
            kcore_tls::server_config(&serving, Some(ca_pem)).unwrap(),
        )
        .unwrap();
        let task = tokio::spawn(async move { axum::serve(listener, app).await });

        for path in [
            "/healthz",
            "/containerLogs/default/p/c",
            "/exec/default/p/c?command=true&stdout=1",
            "/portforward/default/p",
            "/debug/streams",
        ] {
            let (code, body) = get(addr, ca_pem, None, None, path).await;
            assert_eq!(code, 401, "{path}: {body}");
            let status: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(status["kind"], "Status");
            assert_eq!(status["reason"], "Unauthorized");
            let (code, _) = get(addr, ca_pem, None, Some("not-a-token"), path).await;
            assert_eq!(code, 401, "{path} with a bad token");
        }
        // the API server's client certificate: kube-apiserver-kubelet-client, bound to
        // system:kubelet-api-admin
        let (code, body) = get(addr, ca_pem, Some(&apiserver_client), None, "/healthz").await;
        assert_eq!((code, body.as_str()), (200, "ok"));
        let (code, body) = get(
            addr,
            ca_pem,
            Some(&apiserver_client),
            None,
            "/containerLogs/default/p/c",
        )
        .await;
        assert_eq!(code, 404, "past authorization, no such pod: {body}");
        // this router has no streaming backend
        let (code, body) = get(
            addr,
            ca_pem,
            Some(&apiserver_client),
            None,
            "/exec/default/p/c?command=true&stdout=1",
        )
        .await;
        assert_eq!(code, 501, "no exec without a backend: {body}");
        // an administrator's token (twice: the second from the caches)
        for _ in 0..2 {
            let (code, body) = get(
                addr,
                ca_pem,
                None,
                Some("admin-token-0123456789"),
                "/healthz",
            )
            .await;
            assert_eq!((code, body.as_str()), (200, "ok"));
        }
        // a token the API server knows, of a user without rights on nodes: the kubelet's 403
        for _ in 0..2 {
            let (code, body) = get(
                addr,
                ca_pem,
                None,
                Some("nobody-token-0123456789"),
                "/containerLogs/default/p/c",
            )
            .await;
            assert_eq!(
                (code, body.as_str()),
                (
                    403,
                    "Forbidden (user=nobody, verb=get, resource=nodes, subresource=proxy)"
                )
            );
        }
        let (code, body) = get(
            addr,
            ca_pem,
            None,
            Some("nobody-token-0123456789"),
            "/stats/summary",
        )
        .await;
        assert_eq!(
            (code, body.as_str()),
            (
                403,
                "Forbidden (user=nobody, verb=get, resource=nodes, subresource=stats)"
            )
        );
        // a certificate of the cluster CA without rights
        let mallory = ca.issue_client("mallory", &["devs".into()]).unwrap();
        let (code, body) = get(addr, ca_pem, Some(&mallory), None, "/healthz").await;
        assert_eq!(
            (code, body.as_str()),
            (
                403,
                "Forbidden (user=mallory, verb=get, resource=nodes, subresource=proxy)"
            )
        );
        // the streaming routes for an API server in this process: the caller's identity
        // comes as the connection info, and is authorized as the port authorizes it
        let local = crate::server::local_router(
            Some(authn.clone()),
            Arc::new(NoPods),
            kcore_stream::Sessions::default(),
        );
        let pem = |c: &CertKey| kcore_tls::pem_certificates(&c.cert_pem).unwrap();
        let (code, body) = call_local(&local, Some(pem(&apiserver_client))).await;
        assert_eq!(
            (code, body.as_str()),
            (404, "pod p does not exist"),
            "the API server's identity gets to the backend"
        );
        let (code, body) = call_local(&local, Some(pem(&mallory))).await;
        assert_eq!(
            (code, body.as_str()),
            (
                403,
                "Forbidden (user=mallory, verb=get, resource=nodes, subresource=proxy)"
            )
        );
        let (code, _) = call_local(&local, Some(Vec::new())).await;
        assert_eq!(code, 401, "no certificate, no token");
        // a client certificate from another CA does not even complete the handshake
        let other = tempfile::tempdir().unwrap();
        let stranger = Ca::load_or_create(other.path())
            .unwrap()
            .issue("mallory", &[], Usage::Client)
            .unwrap();
        let cfg = kcore_tls::client_config(ca_pem, Some(&stranger)).unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let refused = async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                .await?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await?;
            std::io::Result::Ok(n)
        }
        .await;
        assert!(!matches!(refused, Ok(n) if n > 0), "{refused:?}");
        task.abort();
        server.shutdown().await.unwrap();
    }
}
