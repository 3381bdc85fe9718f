//! An HTTP reverse proxy serving networking.k8s.io/v1 Ingress rules (host and path
//! rules, pathType Prefix / Exact / ImplementationSpecific, defaultBackend) to Service
//! endpoints, with each Ingress' status pointing at the node.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::networking::v1::{Ingress, IngressServiceBackend};
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use crate::cache::ClusterCache;
use crate::error::{Error, ErrorChain, Result};
use crate::netctx::NetCtx;

/// What the Ingress proxy runs with.
pub(crate) struct IngressEnv {
    /// Where the listener and the backend connections live (the node's namespace).
    pub net: NetCtx,
    /// Writes the Ingress status.
    pub client: kube::Client,
    /// The address written to the Ingress status.
    pub node_ip: Ipv4Addr,
}

/// The backend a request goes to: namespace, service and port.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Route {
    pub namespace: String,
    pub backend: IngressServiceBackend,
}

fn host_matches(rule: &str, host: &str) -> bool {
    if let Some(suffix) = rule.strip_prefix("*.") {
        host.strip_suffix(suffix)
            .and_then(|h| h.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.'))
    } else {
        rule.eq_ignore_ascii_case(host)
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        return true;
    }
    path == p || path.starts_with(&format!("{p}/"))
}

/// Picks the route for `host` + `path` across all Ingresses: the longest matching path
/// wins (Exact before Prefix at equal length); then a rule-less or default backend.
pub(crate) fn route(ingresses: &[Ingress], host: &str, path: &str) -> Option<Route> {
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    let mut best: Option<(usize, bool, Route)> = None;
    let mut default: Option<Route> = None;
    for ing in ingresses {
        let ns = ing
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let Some(spec) = ing.spec.as_ref() else {
            continue;
        };
        for rule in spec.rules.iter().flatten() {
            if let Some(h) = rule.host.as_deref().filter(|h| !h.is_empty()) {
                if !host_matches(h, &host) {
                    continue;
                }
            }
            for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let pp = p.path.clone().unwrap_or_else(|| "/".into());
                let exact = p.path_type == "Exact";
                let ok = if exact {
                    path == pp
                } else {
                    prefix_matches(&pp, path)
                };
                let Some(svc) = p.backend.service.clone() else {
                    continue;
                };
                if ok {
                    let len = pp.len();
                    let better = match &best {
                        None => true,
                        Some((l, e, _)) => len > *l || (len == *l && exact && !*e),
                    };
                    if better {
                        best = Some((
                            len,
                            exact,
                            Route {
                                namespace: ns.clone(),
                                backend: svc,
                            },
                        ));
                    }
                }
            }
        }
        if default.is_none() {
            if let Some(svc) = spec
                .default_backend
                .as_ref()
                .and_then(|b| b.service.clone())
            {
                default = Some(Route {
                    namespace: ns,
                    backend: svc,
                });
            }
        }
    }
    best.map(|b| b.2).or(default)
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

async fn serve_one(
    env: Arc<IngressEnv>,
    cache: Arc<ClusterCache>,
    rr: Arc<AtomicUsize>,
    mut req: Request<Incoming>,
) -> std::result::Result<Response<Body>, std::convert::Infallible> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().host().map(str::to_owned))
        .unwrap_or_default();
    let path = req.uri().path().to_owned();
    let ings: Vec<Ingress> = cache
        .ingresses
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    let Some(r) = route(&ings, &host, &path) else {
        return Ok(error(StatusCode::NOT_FOUND, "default backend - 404"));
    };
    let eps = endpoints(&cache, &r);
    if eps.is_empty() {
        return Ok(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no endpoints available for service",
        ));
    }
    let start = rr.fetch_add(1, Ordering::Relaxed);
    // try each endpoint once, starting round-robin
    let mut last_err = String::new();
    for i in 0..eps.len() {
        let ep = eps[(start + i) % eps.len()];
        let stream = match env.net.connect(SocketAddr::V4(ep)).await {
            Ok(s) => s,
            Err(e) => {
                last_err = ErrorChain(&e).to_string();
                continue;
            }
        };
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(x) => x,
                Err(e) => {
                    last_err = ErrorChain(&e).to_string();
                    continue;
                }
            };
        tokio::spawn(async move {
            let _ = conn.await;
        });
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
        return Ok(match sender.send_request(req).await {
            Ok(resp) => resp.map(Body::new),
            Err(e) => error(
                StatusCode::BAD_GATEWAY,
                &format!("upstream: {}", ErrorChain(&e)),
            ),
        });
    }
    Ok(error(
        StatusCode::BAD_GATEWAY,
        &format!("upstream: {last_err}"),
    ))
}

/// Starts the proxy on `addr` and the status writer.
pub(crate) fn start(
    env: IngressEnv,
    cache: Arc<ClusterCache>,
    addr: SocketAddr,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = env
        .net
        .listen(addr)
        .map_err(|e| Error::Listen { addr, source: e })?;
    let rr = Arc::new(AtomicUsize::new(0));
    let env = Arc::new(env);
    Ok(tokio::spawn(async move {
        let status = tokio::spawn(write_status(env.clone(), cache.clone()));
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                break;
            };
            let (s, c, r) = (env.clone(), cache.clone(), rr.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(peer);
                    serve_one(s.clone(), c.clone(), r.clone(), req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
        status.abort();
    }))
}

/// Keeps `status.loadBalancer.ingress` of every Ingress pointing at this node.
async fn write_status(env: Arc<IngressEnv>, cache: Arc<ClusterCache>) {
    let mut rx = cache.version.subscribe();
    let ip = env.node_ip.to_string();
    loop {
        let ings: Vec<Ingress> = cache
            .ingresses
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for ing in ings {
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
            let api: Api<Ingress> = Api::namespaced(env.client.clone(), &ns);
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
}
