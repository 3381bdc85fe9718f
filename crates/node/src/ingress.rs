//! An HTTP reverse proxy serving networking.k8s.io/v1 Ingress rules (host and path
//! rules, pathType Prefix / Exact / ImplementationSpecific, defaultBackend) to Service
//! endpoints, with each Ingress' status pointing at the node.
//!
//! - **Classes:** an Ingress is served when its `spec.ingressClassName` (or the legacy
//!   `kubernetes.io/ingress.class` annotation) names an IngressClass whose
//!   `spec.controller` is [`CONTROLLER`]; one naming another controller's class, or a
//!   class that does not exist, is left alone. An Ingress without a class is served (the
//!   DefaultIngressClass admission already gave it the default class if there is one).
//! - **TLS:** a second listener terminates TLS with the certificate of the
//!   `kubernetes.io/tls` Secret that a served Ingress' `spec.tls` names for the host
//!   the client asks for (SNI; exact hosts before `*.` wildcards; an entry without hosts
//!   is the fallback), offering HTTP/2 and HTTP/1.1 by ALPN. The node watches those
//!   Secrets one by one with its own credential, which the Node authorizer allows for
//!   the Secrets of the Ingresses kcore serves and no others (see
//!   [`crate::cache::follow_tls_secrets`]); a Secret rotated reaches new handshakes as
//!   soon as its watch event arrives. As ingress-nginx does, a
//!   plain HTTP request for a host with TLS is redirected to HTTPS with a 308, unless
//!   the Ingress sets `nginx.ingress.kubernetes.io/ssl-redirect: "false"`.
//! - **Upgrades:** an HTTP/1.1 `Upgrade` (WebSocket) request is passed to the backend
//!   and, once it answers `101`, bytes are copied both ways.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, IngressServiceBackend};
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use crate::cache::ClusterCache;
use crate::error::{Error, ErrorChain, Result};
use crate::netctx::NetCtx;

mod h1;

/// What the Ingress proxy runs with.
pub(crate) struct IngressEnv {
    /// Where the listener and the backend connections live (the node's namespace).
    pub net: NetCtx,
    /// Writes the Ingress status (none: the status is left alone).
    pub client: Option<kube::Client>,
    /// The address written to the Ingress status.
    pub node_ip: Ipv4Addr,
    /// The port of the TLS listener, once bound (for the HTTP to HTTPS redirect).
    pub tls_port: Option<u16>,
    /// Where the default certificate is kept (`default.crt`, `default.key`); without
    /// one, it is made anew each start.
    pub state_dir: Option<std::path::PathBuf>,
}

/// The `spec.controller` of the IngressClasses this proxy serves.
pub const CONTROLLER: &str = kcore_k8s::INGRESS_CONTROLLER;

/// ingress-nginx's annotation turning the HTTP to HTTPS redirect off.
const SSL_REDIRECT_ANNOTATION: &str = "nginx.ingress.kubernetes.io/ssl-redirect";

/// The Ingresses this proxy serves, from the cache.
pub(crate) fn served_ingresses(cache: &ClusterCache) -> Vec<Ingress> {
    let classes: Vec<IngressClass> = cache
        .ingress_classes
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    cache
        .ingresses
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter(|i| kcore_k8s::ingress_served(i, &classes))
        .cloned()
        .collect()
}

/// The Secrets the served Ingresses' `spec.tls` entries name, `(namespace, name)`: the
/// ones the node watches (one by one, see [`crate::cache::follow_tls_secrets`]).
pub(crate) fn tls_secret_keys(
    cache: &ClusterCache,
) -> std::collections::BTreeSet<crate::cache::Key> {
    let classes = cache
        .ingress_classes
        .read()
        .unwrap_or_else(|p| p.into_inner());
    let ingresses = cache.ingresses.read().unwrap_or_else(|p| p.into_inner());
    let keys = ingresses
        .iter()
        .filter(|(_, i)| kcore_k8s::ingress_served(i, classes.values()))
        .flat_map(|((ns, _), i)| {
            kcore_k8s::ingress_tls_secrets(i)
                .into_iter()
                .map(move |n| (ns.clone(), n.to_owned()))
        })
        .collect();
    keys
}

/// The TLS Secret for `host` among `ingresses`: `(namespace, secret name, redirect)`,
/// where `redirect` says whether plain HTTP for the host goes to HTTPS. An entry
/// naming the host exactly wins over a `*.` wildcard, which wins over an entry
/// without hosts. Pure.
pub(crate) fn tls_for(ingresses: &[Ingress], host: &str) -> Option<(String, String, bool)> {
    tls_entry(ingresses, host)
        .map(|(ns, secret, redirect)| (ns.to_owned(), secret.to_owned(), redirect))
}

/// Whether plain HTTP for `host` is redirected to HTTPS (see [`tls_for`]).
fn redirects(ingresses: &[Ingress], host: &str) -> bool {
    tls_entry(ingresses, host).is_some_and(|(_, _, redirect)| redirect)
}

/// [`tls_for`], borrowing.
fn tls_entry<'a>(ingresses: &'a [Ingress], host: &str) -> Option<(&'a str, &'a str, bool)> {
    let mut best: Option<(u8, (&str, &str, bool))> = None;
    for ing in ingresses {
        let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
        let redirect = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SSL_REDIRECT_ANNOTATION))
            .is_none_or(|v| v != "false");
        for t in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
            let Some(secret) = t.secret_name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let hosts = t.hosts.as_deref().unwrap_or_default();
            let rank = if hosts.is_empty() {
                Some(1)
            } else if hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                Some(3)
            } else if hosts
                .iter()
                .any(|h| h.starts_with("*.") && host_matches(h, host))
            {
                Some(2)
            } else {
                None
            };
            if let Some(rank) = rank {
                if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                    best = Some((rank, (ns, secret, redirect)));
                }
            }
        }
    }
    best.map(|(_, entry)| entry)
}

/// The certificate and key a `kubernetes.io/tls` Secret holds.
fn secret_cert(secret: &Secret) -> Option<kcore_tls::CertKey> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
    Some(kcore_tls::CertKey {
        cert_pem: text("tls.crt")?,
        key_pem: text("tls.key")?,
    })
}

/// The subject of the default certificate, as ingress-nginx names its own.
pub const DEFAULT_CERT_SUBJECT: &str = "Kubernetes Ingress Controller Fake Certificate";

/// The self-signed certificate presented for a name that no served Ingress has a
/// certificate for (no `spec.tls` entry, or its Secret missing or unreadable), as
/// ingress-nginx does, so the handshake completes and the client decides whether to
/// trust it. Kept in `dir` (made once per node), or made anew without one.
fn default_certificate(dir: Option<&std::path::Path>) -> Result<Arc<rustls::sign::CertifiedKey>> {
    let tls = |source| Error::IngressTls { source };
    let make = || {
        kcore_tls::self_signed(
            DEFAULT_CERT_SUBJECT,
            &["Acme Co".to_owned()],
            &["ingress.local".to_owned()],
            kcore_tls::Usage::Server,
        )
        .map_err(tls)
    };
    let ck = match dir {
        None => make()?,
        Some(dir) => {
            let (crt, key) = (dir.join("default.crt"), dir.join("default.key"));
            match (std::fs::read_to_string(&crt), std::fs::read_to_string(&key)) {
                (Ok(cert_pem), Ok(key_pem)) => kcore_tls::CertKey { cert_pem, key_pem },
                _ => {
                    let ck = make()?;
                    kcore_statedir::ensure_dir(dir, kcore_statedir::PRIVATE_DIR).map_err(
                        |source| Error::Io {
                            op: "create",
                            path: dir.to_owned(),
                            source,
                        },
                    )?;
                    ck.write(dir, "default").map_err(tls)?;
                    ck
                }
            }
        }
    };
    kcore_tls::certified_key(&ck).map_err(tls)
}

/// Picks the certificate per connection by SNI from the served Ingresses' `spec.tls`,
/// parsing each Secret once per resourceVersion.
struct SniResolver {
    cache: Arc<ClusterCache>,
    routes: Arc<Routes>,
    parsed: std::sync::Mutex<ParsedSecrets>,
    /// Presented for a name without a certificate (see [`default_certificate`]).
    default: Arc<rustls::sign::CertifiedKey>,
}

/// Parsed certificates by Secret `(namespace, name)`, with the resourceVersion parsed.
type ParsedSecrets =
    std::collections::HashMap<(String, String), (String, Arc<rustls::sign::CertifiedKey>)>;

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl SniResolver {
    fn certificate(&self, host: &str) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let (ns, name, _) = tls_for(&self.routes.table().ingresses, host)?;
        let secret = self
            .cache
            .tls_secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(ns.clone(), name.clone()))
            .cloned()?;
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        let key = (ns, name);
        let mut parsed = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, ck)) = parsed.get(&key) {
            if *v == version {
                return Some(ck.clone());
            }
        }
        let ck = match secret_cert(&secret).map(|c| kcore_tls::certified_key(&c)) {
            Some(Ok(ck)) => ck,
            Some(Err(e)) => {
                tracing::warn!(secret = %format!("{}/{}", key.0, key.1), error = %ErrorChain(&e), "ingress tls secret");
                return None;
            }
            None => return None,
        };
        parsed.insert(key, (version, ck.clone()));
        Some(ck)
    }
}

impl rustls::server::ResolvesServerCert for SniResolver {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let host = hello.server_name().unwrap_or_default();
        Some(
            self.certificate(host)
                .unwrap_or_else(|| self.default.clone()),
        )
    }
}

/// The backend a request goes to: namespace, service and port.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Route {
    pub namespace: String,
    pub backend: IngressServiceBackend,
}

fn host_matches(rule: &str, host: &str) -> bool {
    if let Some(suffix) = rule.strip_prefix("*.") {
        // `label.suffix`, compared without case and without allocating
        let Some(split) = host.len().checked_sub(suffix.len() + 1) else {
            return false;
        };
        let (label, rest) = host.as_bytes().split_at(split);
        rest[0] == b'.'
            && rest[1..].eq_ignore_ascii_case(suffix.as_bytes())
            && !label.is_empty()
            && !label.contains(&b'.')
    } else {
        rule.eq_ignore_ascii_case(host)
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        return true;
    }
    path.strip_prefix(p)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Picks the route for `host` + `path` across all Ingresses: the longest matching path
/// wins (Exact before Prefix at equal length); then a rule-less or default backend.
#[cfg(test)]
pub(crate) fn route(ingresses: &[Ingress], host: &str, path: &str) -> Option<Route> {
    let t = Table::build(0, ingresses.to_vec(), |_| Vec::new());
    t.lookup(host, path).map(|t| t.route.clone())
}

/// The served Ingresses compiled for the request path: each rule's paths in a flat list
/// with the endpoints of their backends resolved, rebuilt when the cache changes (see
/// [`Routes`]) so that a request clones nothing.
pub(crate) struct Table {
    /// The cache version this table was built from.
    version: u64,
    /// The served Ingresses, in the cache's order (TLS, redirects).
    ingresses: Vec<Ingress>,
    /// Every rule path of every Ingress, in order.
    paths: Vec<CompiledPath>,
    /// The first Ingress' `defaultBackend`, as an index into `targets`.
    default: Option<usize>,
    targets: Vec<Target>,
}

/// One path of one rule.
struct CompiledPath {
    /// The rule's host (lower case), if it names one.
    host: Option<String>,
    path: String,
    exact: bool,
    /// Index into [`Table::targets`].
    target: usize,
}

/// Where a matched request goes.
pub(crate) struct Target {
    pub route: Route,
    /// The ready endpoints of the backend's service port when the table was built.
    pub endpoints: Vec<SocketAddrV4>,
}

impl Table {
    /// Compiles `ingresses` (already filtered to the served ones), resolving each
    /// backend's endpoints with `endpoints`.
    fn build(
        version: u64,
        ingresses: Vec<Ingress>,
        mut endpoints: impl FnMut(&Route) -> Vec<SocketAddrV4>,
    ) -> Table {
        let mut paths = Vec::new();
        let mut targets = Vec::new();
        let mut default = None;
        let mut target = |route: Route| {
            let endpoints = endpoints(&route);
            targets.push(Target { route, endpoints });
            targets.len() - 1
        };
        for ing in &ingresses {
            let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
            let Some(spec) = ing.spec.as_ref() else {
                continue;
            };
            for rule in spec.rules.iter().flatten() {
                let host = rule
                    .host
                    .as_deref()
                    .filter(|h| !h.is_empty())
                    .map(str::to_ascii_lowercase);
                for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                    let Some(svc) = p.backend.service.clone() else {
                        continue;
                    };
                    paths.push(CompiledPath {
                        host: host.clone(),
                        path: p.path.clone().unwrap_or_else(|| "/".into()),
                        exact: p.path_type == "Exact",
                        target: target(Route {
                            namespace: ns.to_owned(),
                            backend: svc,
                        }),
                    });
                }
            }
            if default.is_none() {
                if let Some(svc) = spec
                    .default_backend
                    .as_ref()
                    .and_then(|b| b.service.clone())
                {
                    default = Some(target(Route {
                        namespace: ns.to_owned(),
                        backend: svc,
                    }));
                }
            }
        }
        Table {
            version,
            ingresses,
            paths,
            default,
            targets,
        }
    }

    /// The target for `host` (a Host header, port allowed) and `path`.
    fn lookup(&self, host: &str, path: &str) -> Option<&Target> {
        self.lookup_index(host, path).map(|i| &self.targets[i])
    }

    /// [`Table::lookup`], as an index into `targets`.
    fn lookup_index(&self, host: &str, path: &str) -> Option<usize> {
        let host = host.split(':').next().unwrap_or(host);
        let mut best: Option<(usize, bool, usize)> = None;
        for p in &self.paths {
            if p.host.as_deref().is_some_and(|h| !host_matches(h, host)) {
                continue;
            }
            let ok = if p.exact {
                path == p.path
            } else {
                prefix_matches(&p.path, path)
            };
            if !ok {
                continue;
            }
            let len = p.path.len();
            let better = match best {
                None => true,
                Some((l, e, _)) => len > l || (len == l && p.exact && !e),
            };
            if better {
                best = Some((len, p.exact, p.target));
            }
        }
        best.map(|b| b.2).or(self.default)
    }
}

/// The current [`Table`], rebuilt on the first request after the cache changed.
pub(crate) struct Routes {
    cache: Arc<ClusterCache>,
    current: std::sync::RwLock<Arc<Table>>,
}

impl Routes {
    fn new(cache: Arc<ClusterCache>) -> Routes {
        let table = Arc::new(Table::build(u64::MAX, Vec::new(), |_| Vec::new()));
        Routes {
            cache,
            current: std::sync::RwLock::new(table),
        }
    }

    /// The table for the cache as it is now.
    fn table(&self) -> Arc<Table> {
        let version = *self.cache.version.borrow();
        {
            let t = self.current.read().unwrap_or_else(|p| p.into_inner());
            if t.version == version {
                return t.clone();
            }
        }
        // built from the stores as they are now, which may already hold changes after
        // `version`: labelled with the older version, it is only rebuilt once more
        let table = Arc::new(Table::build(version, served_ingresses(&self.cache), |r| {
            endpoints(&self.cache, r)
        }));
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = table.clone();
        table
    }
}

/// The ready endpoints of a route's service port.
pub(crate) fn endpoints(cache: &ClusterCache, r: &Route) -> Vec<SocketAddrV4> {
    let svc = cache
        .services
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(r.namespace.clone(), r.backend.name.clone()))
        .cloned();
    let Some(svc) = svc else { return Vec::new() };
    let port = r.backend.port.as_ref();
    let sp = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ps| {
            ps.iter().find(|p| match port {
                Some(bp) if bp.number.is_some() => Some(p.port) == bp.number,
                Some(bp) if bp.name.is_some() => p.name == bp.name,
                _ => true,
            })
        });
    let Some(sp) = sp.cloned() else {
        return Vec::new();
    };
    let slices = cache.slices_of(&r.namespace, &r.backend.name);
    crate::proxy::services_of(&svc, &slices, "")
        .into_iter()
        .find(|s| s.port == sp.port as u16)
        .map(|s| s.ready_endpoints())
        .unwrap_or_default()
}

fn error(code: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("{msg}\n")));
    *r.status_mut() = code;
    r
}

/// Idle keep-alive connections to backends, by endpoint, reused across requests as
/// ingress-nginx's upstream keepalive does (a new TCP connection per request would cost
/// more than the proxying itself).
#[derive(Default)]
struct Pool(std::sync::Mutex<std::collections::HashMap<SocketAddrV4, Vec<Sender>>>);

/// The sending half of one backend connection.
type Sender = hyper::client::conn::http1::SendRequest<Incoming>;

/// At most this many connections are kept per endpoint.
const POOL_IDLE_PER_ENDPOINT: usize = 64;

impl Pool {
    /// An open connection to `ep` that is ready for a request. Connections whose last
    /// response is still being read stay in the pool for later.
    fn take(&self, ep: SocketAddrV4) -> Option<Sender> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let idle = m.get_mut(&ep)?;
        idle.retain(|s| !s.is_closed());
        let i = idle.iter().position(|s| s.is_ready())?;
        Some(idle.swap_remove(i))
    }

    /// Puts `s` back as soon as its response has arrived: it becomes ready for the next
    /// request once the response body has been read to the end (checked by
    /// [`Pool::take`], which costs less than a task per request waiting for it).
    fn give_back(&self, ep: SocketAddrV4, s: Sender) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let idle = m.entry(ep).or_default();
        if idle.len() < POOL_IDLE_PER_ENDPOINT {
            idle.push(s);
        }
    }
}

/// What every request of the proxy shares.
#[derive(Clone)]
struct Shared {
    env: Arc<IngressEnv>,
    routes: Arc<Routes>,
    rr: Arc<AtomicUsize>,
    pool: Arc<Pool>,
    /// The HTTP/1.1 fast path's backend connections.
    raw: Arc<h1::Pool>,
}

/// Rewrites a client's request for the backend: HTTP/1.1, origin-form URI, the Host
/// header and the `X-Forwarded-*` headers.
fn to_backend(req: &mut Request<Incoming>, host: &str, secure: bool) {
    // the backends speak HTTP/1.1, whatever the client spoke (HTTP/2 carries the host
    // in the URI's authority, not a Host header)
    if !req.headers().contains_key(hyper::header::HOST) {
        if let Ok(v) = host.parse() {
            req.headers_mut().insert(hyper::header::HOST, v);
        }
    }
    *req.version_mut() = hyper::Version::HTTP_11;
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    *req.uri_mut() = pq.parse().unwrap_or_default();
    if let Some(peer) = req.extensions().get::<SocketAddr>().copied() {
        req.headers_mut().insert(
            "x-forwarded-for",
            peer.ip().to_string().parse().expect("ip header"),
        );
    }
    if let Ok(v) = host.parse() {
        req.headers_mut().insert("x-forwarded-host", v);
    }
    req.headers_mut().insert(
        "x-forwarded-proto",
        hyper::header::HeaderValue::from_static(if secure { "https" } else { "http" }),
    );
}

async fn serve_one(
    shared: Shared,
    mut req: Request<Incoming>,
) -> std::result::Result<Response<Body>, std::convert::Infallible> {
    let Shared {
        env,
        routes,
        rr,
        pool,
        ..
    } = shared;
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().host().map(str::to_owned))
        .unwrap_or_default();
    let table = routes.table();
    let Some(target) = table.lookup(&host, req.uri().path()) else {
        return Ok(error(StatusCode::NOT_FOUND, "default backend - 404"));
    };
    let secure = req.extensions().get::<Secure>().is_some();
    let bare_host = host.split(':').next().unwrap_or(&host);
    if let (false, Some(port)) = (secure, env.tls_port) {
        if let Some((_, _, true)) = tls_for(&table.ingresses, bare_host) {
            return Ok(redirect(bare_host, port, req.uri()));
        }
    }
    // an Upgrade (WebSocket) request: the client's side of the upgraded connection
    let client_upgrade = req
        .headers()
        .contains_key(hyper::header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let eps = &target.endpoints;
    if eps.is_empty() {
        return Ok(error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "no endpoints available for service \"{}\"",
                target.route.backend.name
            ),
        ));
    }
    to_backend(&mut req, &host, secure);
    let start = rr.fetch_add(1, Ordering::Relaxed);
    // try each endpoint once, starting round-robin; on each, an idle connection first
    // (one the backend closed meanwhile gives the request back), then a new one
    let mut last_err = String::new();
    for i in 0..eps.len() {
        let ep = eps[(start + i) % eps.len()];
        let reused = if client_upgrade.is_none() {
            pool.take(ep)
        } else {
            None
        };
        let mut sender = match reused {
            Some(s) => s,
            None => match connect(&env.net, ep).await {
                Ok(s) => s,
                Err(e) => {
                    last_err = e;
                    continue;
                }
            },
        };
        let sent = sender.try_send_request(req).await;
        let mut resp = match sent {
            Ok(resp) => resp,
            Err(mut e) => match e.take_message() {
                // never written: another endpoint (or a new connection) may take it
                Some(back) => {
                    req = back;
                    last_err = ErrorChain(e.error()).to_string();
                    continue;
                }
                None => {
                    return Ok(error(
                        StatusCode::BAD_GATEWAY,
                        &format!("upstream: {}", ErrorChain(&e.into_error())),
                    ))
                }
            },
        };
        match client_upgrade {
            Some(client) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let backend = hyper::upgrade::on(&mut resp);
                tokio::spawn(splice(client, backend));
            }
            Some(_) => {}
            None => pool.give_back(ep, sender),
        }
        return Ok(resp.map(Body::new));
    }
    Ok(error(
        StatusCode::BAD_GATEWAY,
        &format!("upstream: {last_err}"),
    ))
}

/// A new HTTP/1.1 connection to `ep` (in the node's namespace), driven by a task.
async fn connect(net: &NetCtx, ep: SocketAddrV4) -> std::result::Result<Sender, String> {
    let stream = net
        .connect(SocketAddr::V4(ep))
        .await
        .map_err(|e| ErrorChain(&e).to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ErrorChain(&e).to_string())?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// Marks a request that came over TLS.
#[derive(Debug, Clone, Copy)]
struct Secure;

/// A `308 Permanent Redirect` to the same host and path over HTTPS on `port`.
fn redirect(host: &str, port: u16, uri: &hyper::Uri) -> Response<Body> {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{port}{pq}")
    };
    let mut r = error(StatusCode::PERMANENT_REDIRECT, "308 Permanent Redirect");
    if let Ok(v) = location.parse() {
        r.headers_mut().insert(hyper::header::LOCATION, v);
    }
    r
}

/// Copies bytes both ways between the two sides of an upgraded connection.
async fn splice(client: hyper::upgrade::OnUpgrade, backend: hyper::upgrade::OnUpgrade) {
    let (Ok(client), Ok(backend)) = (client.await, backend.await) else {
        return;
    };
    let (mut c, mut b) = (TokioIo::new(client), TokioIo::new(backend));
    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut b).await {
        tracing::debug!(error = %ErrorChain(&e), "upgraded ingress connection");
    }
}

/// Serves one accepted connection (plain or TLS): HTTP/1.1 with upgrades, and HTTP/2
/// when `http2` (the client chose it by ALPN).
async fn serve_connection<S>(stream: S, peer: SocketAddr, secure: bool, shared: Shared)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(peer);
        if secure {
            req.extensions_mut().insert(Secure);
        }
        serve_one(shared.clone(), req)
    });
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
        .await
    {
        tracing::debug!(error = %e, "ingress connection");
    }
}

/// Starts the proxy on `addr` (and with TLS on `tls_addr`) and the status writer.
pub(crate) fn start(
    env: IngressEnv,
    cache: Arc<ClusterCache>,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = env
        .net
        .listen(addr)
        .map_err(|e| Error::Listen { addr, source: e })?;
    // a TLS port already taken leaves Ingress on plain HTTP only, with a warning
    let tls_listener = tls_addr.and_then(|a| match env.net.listen(a) {
        Ok(l) => Some(l),
        Err(e) => {
            let e = Error::Listen { addr: a, source: e };
            tracing::warn!(error = %ErrorChain(&e), "ingress tls disabled");
            None
        }
    });
    serve(env, cache, listener, tls_listener)
}

/// Serves Ingress on bound listeners: plain HTTP on `listener`, TLS on `tls`.
pub(crate) fn serve(
    mut env: IngressEnv,
    cache: Arc<ClusterCache>,
    listener: tokio::net::TcpListener,
    tls: Option<tokio::net::TcpListener>,
) -> Result<tokio::task::JoinHandle<()>> {
    env.tls_port = tls
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.port());
    let routes = Arc::new(Routes::new(cache.clone()));
    let tls = match tls {
        Some(l) => {
            let resolver = Arc::new(SniResolver {
                cache: cache.clone(),
                routes: routes.clone(),
                parsed: std::sync::Mutex::default(),
                default: default_certificate(env.state_dir.as_deref())?,
            });
            let cfg = kcore_tls::server_config_with_resolver(resolver, &[b"h2", b"http/1.1"])
                .map_err(|source| Error::IngressTls { source })?;
            Some((l, tokio_rustls::TlsAcceptor::from(Arc::new(cfg))))
        }
        None => None,
    };
    let env = Arc::new(env);
    Ok(tokio::spawn(async move {
        let status = tokio::spawn(write_status(env.clone(), cache.clone()));
        let shared = Shared {
            env,
            routes,
            rr: Arc::default(),
            pool: Arc::default(),
            raw: Arc::default(),
        };
        let tls_task = tls.map(|(l, acceptor)| {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Ok((stream, peer)) = l.accept().await {
                    let _ = stream.set_nodelay(true);
                    let (acceptor, shared) = (acceptor.clone(), shared.clone());
                    tokio::spawn(async move {
                        match acceptor.accept(stream).await {
                            // HTTP/2 by ALPN goes to hyper, HTTP/1.1 to the fast path
                            Ok(s) if s.get_ref().1.alpn_protocol() == Some(b"h2") => {
                                serve_connection(s, peer, true, shared).await
                            }
                            Ok(s) => h1::serve(s, peer, true, shared).await,
                            Err(e) => tracing::debug!(error = %e, %peer, "ingress tls handshake"),
                        }
                    });
                }
            })
        });
        while let Ok((stream, peer)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(h1::serve(stream, peer, false, shared.clone()));
        }
        status.abort();
        if let Some(t) = tls_task {
            t.abort();
        }
    }))
}

/// The objects an Ingress proxy serves, given by hand rather than watched from an API
/// server (see [`serve_ingress`]).
#[derive(Debug, Default, Clone)]
pub struct IngressObjects {
    /// IngressClasses; an Ingress naming a class is served when the class names
    /// [`CONTROLLER`].
    pub classes: Vec<IngressClass>,
    /// The Ingresses.
    pub ingresses: Vec<Ingress>,
    /// The Services the Ingresses' backends name.
    pub services: Vec<Service>,
    /// Their EndpointSlices (label `kubernetes.io/service-name`).
    pub endpoint_slices: Vec<EndpointSlice>,
    /// `kubernetes.io/tls` Secrets that `spec.tls` entries name.
    pub tls_secrets: Vec<Secret>,
}

/// Serves the Ingress rules of `objects` on `listener` (HTTP) and `tls` (HTTPS, the
/// certificate chosen by SNI, a self-signed default for other names): the proxy each
/// kcored agent runs, without an API server, for embedding and benchmarks. Backends
/// are dialled from the caller's network namespace. Call inside a tokio runtime; abort
/// the handle to stop.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let http = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let proxy = kcore_node::serve_ingress(kcore_node::IngressObjects::default(), http, None)?;
/// proxy.abort();
/// # Ok(())
/// # }
/// ```
pub fn serve_ingress(
    objects: IngressObjects,
    listener: tokio::net::TcpListener,
    tls: Option<tokio::net::TcpListener>,
) -> Result<tokio::task::JoinHandle<()>> {
    let cache = ClusterCache::empty();
    fn fill<K: kube::ResourceExt>(store: &crate::cache::Store<K>, objects: Vec<K>) {
        let mut m = store.write().unwrap_or_else(|p| p.into_inner());
        for o in objects {
            m.insert((o.namespace().unwrap_or_default(), o.name_any()), o);
        }
    }
    fill(&cache.ingress_classes, objects.classes);
    fill(&cache.ingresses, objects.ingresses);
    fill(&cache.services, objects.services);
    fill(&cache.slices, objects.endpoint_slices);
    fill(&cache.tls_secrets, objects.tls_secrets);
    let env = IngressEnv {
        net: NetCtx::new(None),
        client: None,
        node_ip: Ipv4Addr::LOCALHOST,
        tls_port: None,
        state_dir: None,
    };
    serve(env, cache, listener, tls)
}

/// Keeps `status.loadBalancer.ingress` of every Ingress pointing at this node.
async fn write_status(env: Arc<IngressEnv>, cache: Arc<ClusterCache>) {
    let Some(client) = env.client.clone() else {
        return;
    };
    let mut rx = cache.version.subscribe();
    let ip = env.node_ip.to_string();
    loop {
        for ing in served_ingresses(&cache) {
            let has = ing
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref())
                .is_some_and(|v| v.iter().any(|i| i.ip.as_deref() == Some(ip.as_str())));
            if has {
                continue;
            }
            let ns = ing
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let name = ing.metadata.name.clone().unwrap_or_default();
            let api: Api<Ingress> = Api::namespaced(client.clone(), &ns);
            let mut list: Vec<serde_json::Value> = ing
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref())
                .into_iter()
                .flatten()
                .map(|i| serde_json::to_value(i).expect("json"))
                .collect();
            list.push(json!({"ip": ip}));
            let patch = json!({"status": {"loadBalancer": {"ingress": list}}});
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!(ingress = %name, error = %ErrorChain(&e), "ingress status");
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ing(v: serde_json::Value) -> Ingress {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn longest_path_wins_and_exact_beats_prefix() {
        let a = ing(
            json!({"metadata": {"name": "a", "namespace": "d"}, "spec": {
            "defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}},
            "rules": [{"host": "k8s-test.local", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"number": 80}}}},
                {"path": "/api/exact", "pathType": "Exact", "backend": {"service": {"name": "ex", "port": {"number": 80}}}}
            ]}}, {"host": "*.wild.test", "http": {"paths": [
                {"path": "/", "pathType": "ImplementationSpecific", "backend": {"service": {"name": "wild", "port": {"name": "http"}}}}
            ]}}]}}),
        );
        let r = |h: &str, p: &str| route(std::slice::from_ref(&a), h, p).map(|r| r.backend.name);
        assert_eq!(r("k8s-test.local", "/users").as_deref(), Some("web"));
        assert_eq!(r("k8s-test.local:80", "/api/users").as_deref(), Some("api"));
        assert_eq!(r("k8s-test.local", "/apix").as_deref(), Some("web"));
        assert_eq!(r("k8s-test.local", "/api/exact").as_deref(), Some("ex"));
        assert_eq!(r("x.wild.test", "/").as_deref(), Some("wild"));
        assert_eq!(r("a.b.wild.test", "/").as_deref(), Some("fallback"));
        assert_eq!(r("other.host", "/").as_deref(), Some("fallback"));
    }

    #[test]
    fn tls_secret_by_host_exact_then_wildcard_then_default() {
        let a = ing(json!({"metadata": {"name": "a", "namespace": "d",
            "annotations": {SSL_REDIRECT_ANNOTATION: "false"}}, "spec": {"tls": [
            {"hosts": ["a.test"], "secretName": "a-cert"},
            {"hosts": ["*.wild.test"], "secretName": "wild-cert"}]}}));
        let b = ing(
            json!({"metadata": {"name": "b", "namespace": "e"}, "spec": {"tls": [
            {"hosts": ["exact.wild.test"], "secretName": "exact-cert"},
            {"secretName": "default-cert"}]}}),
        );
        let both = [a, b];
        let t = |h: &str| tls_for(&both, h);
        assert_eq!(t("A.test"), Some(("d".into(), "a-cert".into(), false)));
        assert_eq!(
            t("x.wild.test"),
            Some(("d".into(), "wild-cert".into(), false))
        );
        assert_eq!(
            t("exact.wild.test"),
            Some(("e".into(), "exact-cert".into(), true))
        );
        assert_eq!(
            t("other.test"),
            Some(("e".into(), "default-cert".into(), true))
        );
        assert_eq!(tls_for(&both[..1], "other.test"), None);
    }

    #[test]
    fn default_certificate_is_made_once_per_node() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("ingress");
        let a = default_certificate(Some(&state)).unwrap();
        let b = default_certificate(Some(&state)).unwrap();
        assert_eq!(a.cert, b.cert, "kept in the state directory");
        let c = default_certificate(None).unwrap();
        assert_ne!(a.cert, c.cert);
        assert_eq!(
            kcore_tls::subject(&a.cert[0])
                .unwrap()
                .common_name
                .as_deref(),
            Some(DEFAULT_CERT_SUBJECT)
        );
    }

    /// Reads from `s` up to the end of an HTTP head (and whatever came with it); `None`
    /// when the peer closes first. The test backends here and in `h1` read requests so.
    pub(super) async fn read_head(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut head = Vec::new();
        let mut b = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => head.extend_from_slice(&b[..n]),
            }
        }
        Some(head)
    }

    /// A backend on loopback: answers `<Host>|<X-Forwarded-Proto>`, or switches to an
    /// echo of raw bytes on a WebSocket upgrade.
    async fn backend() -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut s).await else {
                        return;
                    };
                    let mut b = [0u8; 4096];
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(&format!("{name}:")))
                            .unwrap_or("")
                            .trim()
                            .to_owned()
                    };
                    if header("upgrade") == "websocket" {
                        let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").await;
                        loop {
                            match s.read(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if s.write_all(&b[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    }
                    let body = format!("{}|{}", header("host"), header("x-forwarded-proto"));
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                                .as_bytes(),
                        )
                        .await;
                });
            }
        });
        addr
    }

    /// Sends a raw HTTP/1.1 request and reads the answer to the end.
    async fn raw<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        mut s: S,
        host: &str,
        path: &str,
    ) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The proxy in this process on loopback, with a fake API client (status writes
    /// fail quietly): classes, Exact/Prefix, TLS by SNI for two hosts over HTTP/1.1 and
    /// HTTP/2, the redirect to HTTPS, and a WebSocket through it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_classes_tls_by_sni_h2_redirects_and_websockets() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let be = backend().await;
        let dir = tempfile::tempdir().unwrap();
        let ca = kcore_tls::Ca::load_or_create(dir.path()).unwrap();
        let cache = ClusterCache::empty();
        cache.services.write().unwrap().insert(
            ("d".into(), "web".into()),
            serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "d"},
                "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}}))
            .unwrap(),
        );
        cache.slices.write().unwrap().insert(
            ("d".into(), "web-1".into()),
            serde_json::from_value(json!({"metadata": {"name": "web-1", "namespace": "d",
                "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4",
                "ports": [{"port": be.port(), "protocol": "TCP"}],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]}))
            .unwrap(),
        );
        for (name, controller) in [("kcore", CONTROLLER), ("other", "example.com/other")] {
            cache.ingress_classes.write().unwrap().insert(
                (String::new(), name.into()),
                serde_json::from_value(
                    json!({"metadata": {"name": name}, "spec": {"controller": controller}}),
                )
                .unwrap(),
            );
        }
        let mut pems = Vec::new();
        for host in ["a.test", "b.test"] {
            let ck = ca
                .issue(host, &[host.to_owned()], kcore_tls::Usage::Server)
                .unwrap();
            let b64 = |t: &str| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(t)
            };
            let name = format!("{host}-cert");
            cache.tls_secrets.write().unwrap().insert(
                ("d".into(), name.clone()),
                serde_json::from_value(
                    json!({"metadata": {"name": name, "namespace": "d", "resourceVersion": "1"},
                    "type": "kubernetes.io/tls",
                    "data": {"tls.crt": b64(&ck.cert_pem), "tls.key": b64(&ck.key_pem)}}),
                )
                .unwrap(),
            );
            pems.push(ck);
        }
        let backend = |path: &str, ty: &str| {
            json!({"path": path, "pathType": ty,
            "backend": {"service": {"name": "web", "port": {"number": 80}}}})
        };
        let rule =
            |host: &str, paths: serde_json::Value| json!({"host": host, "http": {"paths": paths}});
        let ingresses = [
            json!({"metadata": {"name": "tls", "namespace": "d"}, "spec": {
                "ingressClassName": "kcore",
                "tls": [{"hosts": ["a.test"], "secretName": "a.test-cert"},
                        {"hosts": ["b.test"], "secretName": "b.test-cert"}],
                "rules": [rule("a.test", json!([backend("/", "Prefix")])),
                          rule("b.test", json!([backend("/", "Prefix")]))]}}),
            json!({"metadata": {"name": "other", "namespace": "d"}, "spec": {
                "ingressClassName": "other",
                "rules": [rule("c.test", json!([backend("/", "Prefix")]))]}}),
            json!({"metadata": {"name": "plain", "namespace": "d"}, "spec": {
                "ingressClassName": "kcore",
                "rules": [rule("p.test", json!([backend("/exact", "Exact"), backend("/pre", "Prefix")]))]}}),
        ];
        for i in ingresses {
            let i: Ingress = serde_json::from_value(i).unwrap();
            let key = ("d".to_owned(), i.metadata.name.clone().unwrap());
            cache.ingresses.write().unwrap().insert(key, i);
        }
        let env = IngressEnv {
            net: NetCtx::new(None),
            client: None,
            node_ip: Ipv4Addr::LOCALHOST,
            tls_port: None,
            state_dir: Some(dir.path().join("ingress")),
        };
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (http_at, tls_at) = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
        let task = serve(env, cache.clone(), plain, Some(tls)).unwrap();
        let connect = || tokio::net::TcpStream::connect(http_at);

        // classes; Exact and Prefix
        let get = |host: &'static str, path: &'static str| async move {
            raw(connect().await.unwrap(), host, path).await
        };
        assert!(get("p.test", "/exact").await.ends_with("p.test|http"));
        assert!(get("p.test", "/exact/more")
            .await
            .starts_with("HTTP/1.1 404"));
        assert!(get("p.test", "/pre/more").await.ends_with("p.test|http"));
        assert!(get("p.test", "/prefix").await.starts_with("HTTP/1.1 404"));
        assert!(
            get("c.test", "/").await.starts_with("HTTP/1.1 404"),
            "another class's Ingress"
        );

        // plain HTTP for a TLS host is redirected
        let r = get("a.test", "/x?y=1").await;
        assert!(r.starts_with("HTTP/1.1 308"), "{r}");
        assert!(
            r.to_ascii_lowercase()
                .contains(&format!("location: https://a.test:{}/x?y=1", tls_at.port())),
            "{r}"
        );

        // TLS: each host gets its own certificate (the handshake checks the name)
        let mut cfg = kcore_tls::client_config(ca.cert_pem(), None).unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let h1 = tokio_rustls::TlsConnector::from(Arc::new(cfg.clone()));
        for host in ["a.test", "b.test"] {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
            let s = h1
                .connect(name, tokio::net::TcpStream::connect(tls_at).await.unwrap())
                .await
                .unwrap_or_else(|e| panic!("handshake for {host}: {e}"));
            let served = s.get_ref().1.peer_certificates().unwrap()[0].clone();
            let want =
                kcore_tls::pem_certificates(&pems[usize::from(host == "b.test")].cert_pem).unwrap();
            assert_eq!(served, want[0], "the certificate of {host}");
            let r = raw(s, host, "/").await;
            assert!(r.ends_with(&format!("{host}|https")), "{r}");
        }
        // a host without TLS gets no certificate
        let name = rustls::pki_types::ServerName::try_from("p.test").unwrap();
        assert!(h1
            .connect(name, tokio::net::TcpStream::connect(tls_at).await.unwrap())
            .await
            .is_err());

        // a name without a certificate gets the node's self-signed default (kept in the
        // state directory), not a failed handshake
        let fake = std::fs::read_to_string(dir.path().join("ingress/default.crt")).unwrap();
        let trusting_fake = kcore_tls::client_config(&fake, None).unwrap();
        let name = rustls::pki_types::ServerName::try_from("ingress.local").unwrap();
        let s = tokio_rustls::TlsConnector::from(Arc::new(trusting_fake))
            .connect(name, tokio::net::TcpStream::connect(tls_at).await.unwrap())
            .await
            .expect("handshake with the default certificate");
        let served = s.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(
            kcore_tls::subject(&served).unwrap().common_name.as_deref(),
            Some(DEFAULT_CERT_SUBJECT)
        );
        assert_eq!(
            raw(s, "p.test", "/exact").await.rsplit("\r\n").next(),
            Some("p.test|https")
        );

        // HTTP/2 by ALPN
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let h2 = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let name = rustls::pki_types::ServerName::try_from("b.test").unwrap();
        let s = h2
            .connect(name, tokio::net::TcpStream::connect(tls_at).await.unwrap())
            .await
            .unwrap();
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(s),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = Request::get("https://b.test/h2")
            .body(Body::empty())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        let body = axum::body::to_bytes(Body::new(resp.into_body()), 1 << 20)
            .await
            .unwrap();
        assert_eq!(&body[..], b"b.test|https");

        // a WebSocket through the proxy
        let mut s = connect().await.unwrap();
        s.write_all(b"GET /pre/ws HTTP/1.1\r\nHost: p.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut b).await.unwrap(), 1, "{head:?}");
            head.push(b[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        for msg in [&b"\x81\x04ping"[..], &b"\x81\x04pong"[..]] {
            s.write_all(msg).await.unwrap();
            let mut back = vec![0u8; msg.len()];
            s.read_exact(&mut back).await.unwrap();
            assert_eq!(back, msg);
        }
        task.abort();
    }
}
