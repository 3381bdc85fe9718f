//! The HTTPS side of admission webhooks: one TLS configuration per `caBundle` (its
//! certificates are the only trusted roots) and a pool of kept-alive HTTP/1.1
//! connections per address, server name and bundle, so a busy webhook costs one round
//! trip per call, not a TCP and TLS handshake.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderName, Method, Request};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Why a request to a webhook failed on the way (the cause of a
/// [`CallError::Transport`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TransportError {
    #[error("context deadline exceeded")]
    Timeout,
    #[error("dial tcp {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("lookup {host}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no address found for {0}")]
    NoAddress(String),
    #[error("tls: server name {0:?} is not valid")]
    ServerName(String),
    #[error("tls handshake with {name}")]
    Tls {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("clientConfig.caBundle holds no usable certificate")]
    CaBundle(#[source] kcore_tls::Error),
    #[error("clientConfig.caBundle is empty: webhook servers are trusted only through it")]
    NoCaBundle,
    #[error("http")]
    Http(#[source] hyper::Error),
    #[error("building the request")]
    Request(#[source] axum::http::Error),
    #[error("reading the response body")]
    Body(#[source] axum::Error),
}

/// Where one webhook call goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Target {
    /// The address connected to.
    pub addr: SocketAddr,
    /// The TLS server name (`<svc>.<ns>.svc`, or the URL's host).
    pub server_name: String,
    /// `Host` header value.
    pub authority: String,
    /// Path and query of the request.
    pub path_and_query: String,
    /// The PEM bundle trusted for this webhook.
    pub ca_bundle: Arc<[u8]>,
    /// Accept any server certificate (an APIService's `insecureSkipTLSVerify`); the
    /// bundle is then not used.
    pub insecure: bool,
    /// Present the front proxy's client certificate (API aggregation), when the pool
    /// has one.
    pub front_proxy: bool,
}

type Sender = SendRequest<Body>;

/// What a TLS configuration is kept for: the CA bundle (`None`: no verification) and
/// whether the front-proxy certificate is presented.
type TlsKey = (Option<Arc<[u8]>>, bool);

/// TLS configurations per CA bundle and idle connections per target.
#[derive(Default)]
pub(crate) struct Pool {
    /// Per CA bundle and front-proxy choice.
    tls: Mutex<HashMap<TlsKey, Arc<rustls::ClientConfig>>>,
    front_proxy: std::sync::OnceLock<kcore_tls::CertKey>,
    idle: Mutex<HashMap<Target, Vec<Sender>>>,
}

/// Idle connections kept per target.
const MAX_IDLE: usize = 64;

impl Pool {
    /// Sets the client certificate presented to targets marked `front_proxy`.
    pub(crate) fn set_front_proxy(&self, cert: kcore_tls::CertKey) {
        let _ = self.front_proxy.set(cert);
    }

    fn tls_for(&self, t: &Target) -> Result<Arc<rustls::ClientConfig>, TransportError> {
        if !t.insecure && t.ca_bundle.is_empty() {
            return Err(TransportError::NoCaBundle);
        }
        let identity = if t.front_proxy {
            self.front_proxy.get()
        } else {
            None
        };
        let key = (
            (!t.insecure).then(|| Arc::clone(&t.ca_bundle)),
            identity.is_some(),
        );
        let mut map = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(&key) {
            return Ok(Arc::clone(c));
        }
        let cfg = if t.insecure {
            kcore_tls::client_config_unverified(identity)
        } else {
            kcore_tls::client_config(&String::from_utf8_lossy(&t.ca_bundle), identity)
        };
        let cfg = Arc::new(cfg.map_err(TransportError::CaBundle)?);
        map.insert(key, Arc::clone(&cfg));
        Ok(cfg)
    }

    fn take_idle(&self, t: &Target) -> Option<Sender> {
        let mut map = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.get_mut(t)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() && s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, t: &Target, s: Sender) {
        if s.is_closed() {
            return;
        }
        let mut map = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(t.clone()).or_default();
        if list.len() < MAX_IDLE {
            list.push(s);
        }
    }

    async fn connect(&self, t: &Target) -> Result<Sender, TransportError> {
        let tls = self.tls_for(t)?;
        let tcp = tokio::net::TcpStream::connect(t.addr)
            .await
            .map_err(|source| TransportError::Connect {
                addr: t.addr,
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(t.server_name.clone())
            .map_err(|_| TransportError::ServerName(t.server_name.clone()))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|source| TransportError::Tls {
                name: t.server_name.clone(),
                source,
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(TransportError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "webhook connection ended");
            }
        });
        Ok(sender)
    }

    /// POSTs `body` (JSON) to `t`; returns the status and the response body. A kept-alive
    /// connection the server closed meanwhile is replaced once.
    pub(crate) async fn post(
        &self,
        t: &Target,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(u16, Bytes), TransportError> {
        let headers = [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::ACCEPT, "application/json, */*".to_owned()),
        ];
        self.send(t, &Method::POST, &headers, body, timeout)
            .await
            .map(|(code, _, bytes)| (code, bytes))
    }

    /// Sends `method` with `headers` and `body` to `t`; returns the status, the content
    /// type and the body of the answer. A kept-alive connection the server closed
    /// meanwhile is replaced once.
    pub(crate) async fn send(
        &self,
        t: &Target,
        method: &Method,
        headers: &[(HeaderName, String)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<(u16, Option<String>, Bytes), TransportError> {
        tokio::time::timeout(timeout, self.send_inner(t, method, headers, body))
            .await
            .map_err(|_| TransportError::Timeout)?
    }

    async fn send_inner(
        &self,
        t: &Target,
        method: &Method,
        headers: &[(HeaderName, String)],
        body: Bytes,
    ) -> Result<(u16, Option<String>, Bytes), TransportError> {
        let request = || {
            let mut r = Request::builder()
                .method(method.clone())
                .uri(t.path_and_query.as_str())
                .header(header::HOST, t.authority.as_str());
            for (k, v) in headers {
                r = r.header(k, v.as_str());
            }
            r.body(Body::from(body.clone()))
                .map_err(TransportError::Request)
        };
        let (mut sender, reused) = match self.take_idle(t) {
            Some(s) => (s, true),
            None => (self.connect(t).await?, false),
        };
        let resp = match sender.send_request(request()?).await {
            Ok(r) => r,
            Err(e) if reused && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) => {
                sender = self.connect(t).await?;
                sender
                    .send_request(request()?)
                    .await
                    .map_err(TransportError::Http)?
            }
            Err(e) => return Err(TransportError::Http(e)),
        };
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(Body::new(resp.into_body()), super::MAX_RESPONSE)
            .await
            .map_err(TransportError::Body)?;
        self.put_idle(t, sender);
        Ok((status, content_type, bytes))
    }
}

/// The message of an error and its causes, `: `-joined, as Go prints wrapped errors.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
