//! kube-proxy's Service health checks: every LoadBalancer Service with
//! `externalTrafficPolicy: Local` has a `healthCheckNodePort`, and each node answers
//! HTTP on it (any path) with how many ready endpoints of the Service run on this
//! node: `200` when there is at least one, `503` when none, and the JSON body
//! `{"service":{"namespace":..,"name":..},"localEndpoints":N,"serviceProxyHealthy":true}`.
//! An external load balancer uses it to send traffic only to nodes that serve it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::cache::{ClusterCache, Key};
use crate::error::ErrorChain;
use crate::netctx::NetCtx;
use axum::body::Body;
use hyper::{Response, StatusCode};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// What the health-check servers run with.
pub(crate) struct HealthEnv {
    /// Where the listeners live (the node's namespace).
    pub net: NetCtx,
    /// The address they bind (`0.0.0.0`: every address of the node).
    pub bind: IpAddr,
    /// This node's name: endpoints with this `nodeName` are local.
    pub node_name: String,
}

/// The health-check ports the Services ask for: port → Service.
pub(crate) fn wanted<'a>(services: impl IntoIterator<Item = &'a Service>) -> BTreeMap<u16, Key> {
    let mut out = BTreeMap::new();
    for s in services {
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        if spec.type_.as_deref() != Some("LoadBalancer")
            || spec.external_traffic_policy.as_deref() != Some("Local")
        {
            continue;
        }
        let Some(port) = spec
            .health_check_node_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            continue;
        };
        let key = (
            s.metadata.namespace.clone().unwrap_or_default(),
            s.metadata.name.clone().unwrap_or_default(),
        );
        out.entry(port).or_insert(key);
    }
    out
}

/// How many ready endpoint addresses of the slices run on `node`.
pub(crate) fn local_endpoints(slices: &[EndpointSlice], node: &str) -> usize {
    let mut addrs = BTreeSet::new();
    for s in slices {
        for e in s.endpoints.iter().flatten() {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if ready && e.node_name.as_deref() == Some(node) {
                addrs.extend(e.addresses.iter().cloned());
            }
        }
    }
    addrs.len()
}

/// The body, with kube-proxy's field order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    service: ServiceRef<'a>,
    local_endpoints: usize,
    service_proxy_healthy: bool,
}

#[derive(serde::Serialize)]
struct ServiceRef<'a> {
    namespace: &'a str,
    name: &'a str,
}

/// The answer for a Service with `n` local endpoints.
pub(crate) fn answer(key: &Key, n: usize) -> Response<Body> {
    let body = Payload {
        service: ServiceRef {
            namespace: &key.0,
            name: &key.1,
        },
        local_endpoints: n,
        service_proxy_healthy: true,
    };
    let body = serde_json::to_string(&body).unwrap_or_default();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = if n > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    h.insert(
        "X-Content-Type-Options",
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    r
}

/// Serves one health-check port until aborted.
async fn serve(
    listener: tokio::net::TcpListener,
    cache: Arc<ClusterCache>,
    key: Key,
    node: String,
) {
    let app = axum::Router::new().fallback(move || {
        let (cache, key, node) = (cache.clone(), key.clone(), node.clone());
        async move {
            let n = local_endpoints(&cache.slices_of(&key.0, &key.1), &node);
            answer(&key, n)
        }
    });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "health check server stopped");
    }
}

/// Starts keeping one listener per wanted health-check port, following the cache.
pub(crate) fn start(env: HealthEnv, cache: Arc<ClusterCache>) -> tokio::task::JoinHandle<()> {
    let mut rx = cache.version.subscribe();
    tokio::spawn(async move {
        let mut running: HashMap<u16, (Key, tokio::task::JoinHandle<()>)> = HashMap::new();
        loop {
            let want = {
                let svcs = cache.services.read().unwrap_or_else(|p| p.into_inner());
                wanted(svcs.values())
            };
            running.retain(|port, (key, task)| {
                let keep = want.get(port) == Some(key) && !task.is_finished();
                if !keep {
                    task.abort();
                }
                keep
            });
            for (port, key) in want {
                if running.contains_key(&port) {
                    continue;
                }
                match env.net.listen(SocketAddr::new(env.bind, port)) {
                    Ok(l) => {
                        let task = tokio::spawn(serve(
                            l,
                            cache.clone(),
                            key.clone(),
                            env.node_name.clone(),
                        ));
                        running.insert(port, (key, task));
                    }
                    // tried again on the next change
                    Err(e) => tracing::warn!(port, error = %ErrorChain(&e),
                        "cannot listen on a health check node port"),
                }
            }
            if rx.changed().await.is_err() {
                for (_, (_, t)) in running {
                    t.abort();
                }
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn svc(name: &str, spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"}, "spec": spec}))
            .unwrap()
    }

    fn slice(svc: &str, eps: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-x"), "namespace": "d",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "endpoints": eps
        }))
        .unwrap()
    }

    #[test]
    fn wanted_ports_and_local_counts() {
        let svcs = [
            svc(
                "a",
                json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000}),
            ),
            svc(
                "b",
                json!({"type": "LoadBalancer", "externalTrafficPolicy": "Cluster"}),
            ),
            svc(
                "c",
                json!({"type": "NodePort", "externalTrafficPolicy": "Local", "healthCheckNodePort": 31001}),
            ),
        ];
        let w = wanted(svcs.iter());
        assert_eq!(w.len(), 1);
        assert_eq!(w[&31000], ("d".to_string(), "a".to_string()));
        let s = slice(
            "a",
            json!([
                {"addresses": ["10.244.0.5"], "nodeName": "n1"},
                {"addresses": ["10.244.0.6"], "nodeName": "n1", "conditions": {"ready": false}},
                {"addresses": ["10.244.1.5"], "nodeName": "n2"}
            ]),
        );
        assert_eq!(local_endpoints(std::slice::from_ref(&s), "n1"), 1);
        assert_eq!(local_endpoints(&[s], "n3"), 0);
    }

    async fn get(addr: SocketAddr) -> String {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_200_with_local_endpoints_and_503_without() {
        // a free loopback port for the Service's health check
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cache = ClusterCache::empty();
        let key: Key = ("d".into(), "web".into());
        cache.services.write().unwrap().insert(
            key.clone(),
            svc("web", json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": port})),
        );
        let env = HealthEnv {
            net: NetCtx::new(None),
            bind: IpAddr::from([127, 0, 0, 1]),
            node_name: "n1".into(),
        };
        let task = start(env, cache.clone());
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut reply = String::new();
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                reply = get(addr).await;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
        assert!(
            reply.ends_with(
                r#"{"service":{"namespace":"d","name":"web"},"localEndpoints":0,"serviceProxyHealthy":true}"#
            ),
            "{reply}"
        );
        cache.slices.write().unwrap().insert(
            ("d".into(), "web-x".into()),
            slice(
                "web",
                json!([{"addresses": ["10.244.0.5"], "nodeName": "n1"}]),
            ),
        );
        let reply = get(addr).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains(r#""localEndpoints":1"#), "{reply}");
        assert!(reply
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
        // the Service goes: so does its listener
        cache.services.write().unwrap().clear();
        cache.version.send_modify(|v| *v += 1);
        let mut closed = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(closed, "the listener is closed");
        task.abort();
    }
}
