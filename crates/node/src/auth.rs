//! Who may use the agent's server: a client certificate signed by the cluster CA (the
//! API server's), or a bearer token the API server accepts. Everything else gets 401
//! with a Kubernetes `Status`.
//!
//! A token is checked by asking the API server itself for `GET /api` with it, over a
//! connection that trusts only the cluster CA: the answer is the same token check the
//! API server applies to every request (its token file; TokenReview when it has one can
//! replace this call without changing the agent's side). Accepted tokens are remembered
//! for [`TOKEN_TTL`], so a `kubectl logs -f` does not cost one review per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use kcore_tls::PeerCertified;

/// How long an accepted token is trusted without asking again.
pub(crate) const TOKEN_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 1024;

/// The agent server's authenticator.
pub(crate) struct Authn {
    review: Option<TokenReview>,
    accepted: Mutex<HashMap<String, Instant>>,
}

struct TokenReview {
    uri: hyper::Uri,
    tls: Arc<rustls::ClientConfig>,
}

/// Why a token could not be checked (the request then gets 401 too; the cause is logged).
#[derive(Debug, thiserror::Error)]
enum ReviewError {
    #[error("api server url {0} has no host")]
    NoHost(String),
    #[error("connect to {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("tls handshake with {0}")]
    Tls(String, #[source] std::io::Error),
    #[error("server name {0}")]
    Name(String, #[source] rustls::pki_types::InvalidDnsNameError),
    #[error("http")]
    Http(#[source] hyper::Error),
    #[error("request")]
    Request(#[source] axum::http::Error),
    #[error("timed out")]
    Timeout,
}

impl Authn {
    /// Checks tokens with the API server at `url` (trusted through `ca_pem`), if given.
    pub(crate) fn new(ca_pem: &str, url: Option<&str>) -> Result<Authn, crate::Error> {
        let review = match url {
            Some(u) => Some(TokenReview {
                uri: u.parse().map_err(|source| crate::Error::ApiServerUrl {
                    url: u.to_owned(),
                    source,
                })?,
                tls: Arc::new(
                    kcore_tls::client_config(ca_pem, None)
                        .map_err(|source| crate::Error::ServerTls { source })?,
                ),
            }),
            None => None,
        };
        Ok(Authn {
            review,
            accepted: Mutex::new(HashMap::new()),
        })
    }

    async fn token_ok(&self, token: &str) -> bool {
        let Some(review) = &self.review else {
            return false;
        };
        {
            let cache = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
            if cache.get(token).is_some_and(|t| t.elapsed() < TOKEN_TTL) {
                return true;
            }
        }
        let ok = match tokio::time::timeout(Duration::from_secs(10), review.check(token)).await {
            Ok(Ok(ok)) => ok,
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::ErrorChain(&e), "checking a bearer token with the api server");
                false
            }
            Err(_) => {
                tracing::warn!(error = %ReviewError::Timeout, "checking a bearer token with the api server");
                false
            }
        };
        if ok {
            let mut cache = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, t| t.elapsed() < TOKEN_TTL);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(token.to_owned(), Instant::now());
        }
        ok
    }
}

impl TokenReview {
    /// `GET /api` with the token: 2xx means the API server knows it.
    async fn check(&self, token: &str) -> Result<bool, ReviewError> {
        let host = self
            .uri
            .host()
            .ok_or_else(|| ReviewError::NoHost(self.uri.to_string()))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = self.uri.port_u16().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| ReviewError::Connect(format!("{host}:{port}"), e))?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| ReviewError::Name(host.clone(), e))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| ReviewError::Tls(format!("{host}:{port}"), e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(ReviewError::Http)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = axum::http::Request::get("/api")
            .header(header::HOST, format!("{host}:{port}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .map_err(ReviewError::Request)?;
        let resp = sender.send_request(req).await.map_err(ReviewError::Http)?;
        Ok(resp.status().is_success())
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

/// Middleware: lets through clients with a verified certificate or an accepted token.
pub(crate) async fn require(
    State(authn): State<Arc<Authn>>,
    ConnectInfo(peer): ConnectInfo<PeerCertified>,
    req: Request,
    next: Next,
) -> Response {
    if peer.0 {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match token {
        Some(t) if authn.token_ok(t).await => next.run(req).await,
        _ => unauthorized(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// The node's server against a real API server with its PKI: only the API server's
    /// client certificate and tokens the API server accepts get in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_certified_clients_and_accepted_tokens_get_in() {
        let dir = tempfile::tempdir().unwrap();
        let api_dir = dir.path().join("api");
        let server = kcore_apiserver::ApiServer::builder()
            .data_dir(&api_dir)
            .listen("127.0.0.1:0".parse().unwrap())
            .build()
            .await
            .unwrap();
        let token = server.admin_token().unwrap().to_owned();
        let url = server.url();
        let server = server.spawn();

        let pki = api_dir.join("pki");
        let ca = Ca::load_or_create(&pki).unwrap();
        let serving = ca
            .issue("system:node:n1", &["127.0.0.1".into()], Usage::Server)
            .unwrap();
        let read = |f: &str| std::fs::read_to_string(pki.join(f)).unwrap();
        let apiserver_client = CertKey {
            cert_pem: read("apiserver-kubelet-client.crt"),
            key_pem: read("apiserver-kubelet-client.key"),
        };
        let authn = Arc::new(Authn::new(ca.cert_pem(), Some(&url)).unwrap());
        let logs = tempfile::tempdir().unwrap();
        let app = crate::server::router(logs.path().to_owned(), Some(authn), None, None)
            .into_make_service_with_connect_info::<PeerCertified>();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = kcore_tls::TlsListener::new(
            tcp,
            kcore_tls::server_config(&serving, Some(ca.cert_pem())).unwrap(),
        )
        .unwrap();
        let task = tokio::spawn(async move { axum::serve(listener, app).await });
        let ca_pem = ca.cert_pem();

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
        // the API server's client certificate
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
        assert_eq!(code, 404, "past authentication, no such pod: {body}");
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
        // a token the API server accepts (twice: the second from the cache)
        for _ in 0..2 {
            let (code, body) = get(addr, ca_pem, None, Some(&token), "/healthz").await;
            assert_eq!((code, body.as_str()), (200, "ok"));
        }
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
