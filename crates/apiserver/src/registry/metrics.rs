//! `metrics.k8s.io/v1beta1` NodeMetrics and PodMetrics, served as metrics-server serves
//! them (get and list, label selectors, `timestamp` and `window`), from the resource
//! usage each node agent reports on its Summary API (`GET /stats/summary`): CPU as the
//! rate over the node's last sampling interval, memory as the working set.
//!
//! Nothing is stored: a request reads the Nodes (or Pods) from the store, asks each node
//! concerned once, concurrently, and builds the answer. A node that cannot be reached
//! contributes nothing, as metrics-server leaves out what it could not scrape; a pod
//! whose containers have no CPU rate yet is left out too (a get answers 404).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{json, Value};

use super::Strategy;
use crate::api::ListOptions;
use crate::error::ApiError;
use crate::http::AppState;
use crate::resources::{self, Names, ResourceInfo, StrategyRef};
use crate::selectors::{FieldSelector, LabelSelector};

/// The group and version.
pub(crate) const GROUP: &str = "metrics.k8s.io";
const VERSION: &str = "v1beta1";

const fn metrics_resource(
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> ResourceInfo {
    ResourceInfo {
        group: Cow::Borrowed(GROUP),
        version: Cow::Borrowed(VERSION),
        kind: Cow::Borrowed(kind),
        list_kind: Cow::Borrowed(if namespaced {
            "PodMetricsList"
        } else {
            "NodeMetricsList"
        }),
        plural: Cow::Borrowed(plural),
        singular: None,
        namespaced,
        short_names: Names::Static(&[]),
        categories: Names::Static(&[]),
        subresources: Cow::Borrowed(&[]),
        create_on_update: false,
        normalize: as_is,
        strategy: StrategyRef::Static(&MetricsStrategy),
    }
}

fn as_is(v: Value) -> Result<Value, serde_json::Error> {
    Ok(v)
}

/// `nodes.metrics.k8s.io`.
pub(crate) const NODE_METRICS: ResourceInfo = metrics_resource("NodeMetrics", "nodes", false);
/// `pods.metrics.k8s.io`.
pub(crate) const POD_METRICS: ResourceInfo = metrics_resource("PodMetrics", "pods", true);

/// The metrics kinds: read only.
pub(crate) struct MetricsStrategy;

impl Strategy for MetricsStrategy {
    fn kind(&self) -> &'static str {
        ""
    }

    fn verbs(&self) -> Option<&'static [&'static str]> {
        Some(&["get", "list"])
    }
}

/// Answers `GET /apis/metrics.k8s.io/v1beta1/<rest>`; `None` for paths it does not serve.
pub(crate) async fn serve(
    state: &AppState,
    rest: &[&str],
    opts: &ListOptions,
) -> Option<Result<Value, ApiError>> {
    let r = match rest {
        ["nodes"] => node_metrics(state, None, opts).await,
        ["nodes", name] => node_metrics(state, Some(name), opts).await,
        ["pods"] => pod_metrics(state, None, None, opts).await,
        ["namespaces", ns, "pods"] => pod_metrics(state, Some(ns), None, opts).await,
        ["namespaces", ns, "pods", name] => pod_metrics(state, Some(ns), Some(name), opts).await,
        _ => return None,
    };
    Some(r)
}

/// The metrics' view of one node's summary: its own usage and its pods' by namespace
/// and name.
#[derive(Debug, Default)]
struct NodeUsage {
    node: Option<Value>,
    pods: HashMap<(String, String), Value>,
}

/// Asks the node `node` (a Node object) for its summary; `None` when it cannot answer.
async fn scrape(state: &AppState, node: &Value) -> Option<NodeUsage> {
    let name = node["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let ep = crate::node_client::endpoint_of(node).ok()?;
    let fetch = async {
        let resp =
            crate::node_client::get(state.node_tls.as_ref(), &ep.ip, ep.port, "/stats/summary")
                .await
                .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 16 << 20)
            .await
            .ok()?;
        serde_json::from_slice::<Value>(&body).ok()
    };
    let Some(summary) = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .ok()
        .flatten()
    else {
        tracing::debug!(node = name, "no resource usage from the node");
        return None;
    };
    let mut out = NodeUsage {
        node: Some(summary["node"].clone()),
        ..Default::default()
    };
    for p in summary["pods"].as_array().into_iter().flatten() {
        let ns = p["podRef"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let n = p["podRef"]["name"].as_str().unwrap_or_default().to_owned();
        out.pods.insert((ns, n), p.clone());
    }
    Some(out)
}

fn list_selectors(opts: &ListOptions) -> Result<(LabelSelector, FieldSelector), ApiError> {
    Ok((
        LabelSelector::parse(opts.label_selector.as_deref().unwrap_or(""))?,
        FieldSelector::parse(opts.field_selector.as_deref().unwrap_or(""))?,
    ))
}

async fn node_metrics(
    state: &AppState,
    name: Option<&str>,
    opts: &ListOptions,
) -> Result<Value, ApiError> {
    let nodes_res = resources::lookup("", "v1", "nodes").expect("served");
    let nodes: Vec<Value> = match name {
        Some(n) => match state.api.get_in(nodes_res, None, n).await {
            Ok(node) => vec![node],
            Err(e) if e.code == 404 => return Err(ApiError::not_found(GROUP, "nodes", n)),
            Err(e) => return Err(e),
        },
        None => {
            let (labels, fields) = list_selectors(opts)?;
            let list = state
                .api
                .list_in(nodes_res, None, &ListOptions::default())
                .await?;
            list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| labels.matches(n) && fields.matches(n))
                .cloned()
                .collect()
        }
    };
    let usages = futures::future::join_all(nodes.iter().map(|n| scrape(state, n))).await;
    let now = crate::api::now();
    let items: Vec<Value> = nodes
        .iter()
        .zip(usages)
        .filter_map(|(node, u)| node_item(node, u?.node.as_ref()?, &now))
        .collect();
    match name {
        Some(n) => items
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found(GROUP, "nodes", n)),
        None => Ok(list("NodeMetricsList", items)),
    }
}

/// A NodeMetrics from a node's summary `usage` (`None` while it has no CPU rate).
fn node_item(node: &Value, usage: &Value, now: &str) -> Option<Value> {
    let (cpu, window, time) = cpu_rate(&usage["cpu"])?;
    let mem = usage["memory"]["workingSetBytes"].as_u64()?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": meta(node, now),
        "timestamp": time,
        "window": window,
        "usage": {"cpu": cpu_quantity(cpu), "memory": memory_quantity(mem)},
    }))
}

/// The name, namespace and labels of `obj`, with `creationTimestamp` now (as
/// metrics-server, whose objects are made on request).
fn meta(obj: &Value, now: &str) -> Value {
    let m = &obj["metadata"];
    let mut out = json!({"name": m["name"], "creationTimestamp": now});
    if let Some(ns) = m["namespace"].as_str() {
        out["namespace"] = json!(ns);
    }
    if m["labels"].is_object() {
        out["labels"] = m["labels"].clone();
    }
    out
}

/// The CPU rate (nanocores), its window (a Go duration) and time of a summary's
/// `CPUStats`.
fn cpu_rate(cpu: &Value) -> Option<(u64, String, Value)> {
    let n = cpu["usageNanoCores"].as_u64()?;
    let w = cpu["windowSeconds"].as_f64().unwrap_or(0.0);
    Some((n, go_duration(w), cpu["time"].clone()))
}

async fn pod_metrics(
    state: &AppState,
    namespace: Option<&str>,
    name: Option<&str>,
    opts: &ListOptions,
) -> Result<Value, ApiError> {
    let pods_res = resources::lookup("", "v1", "pods").expect("served");
    let pods: Vec<Value> = match name {
        Some(n) => match state.api.get_in(pods_res, namespace, n).await {
            Ok(p) => vec![p],
            Err(e) if e.code == 404 => return Err(ApiError::not_found(GROUP, "pods", n)),
            Err(e) => return Err(e),
        },
        None => {
            let (labels, fields) = list_selectors(opts)?;
            let list = state
                .api
                .list_in(pods_res, namespace, &ListOptions::default())
                .await?;
            list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| labels.matches(p) && fields.matches(p))
                .cloned()
                .collect()
        }
    };
    // each node the pods run on, asked once
    let mut node_names: Vec<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()))
        .collect();
    node_names.sort_unstable();
    node_names.dedup();
    let nodes_res = resources::lookup("", "v1", "nodes").expect("served");
    let scrapes = node_names.iter().map(|n| async move {
        let node = state.api.get_in(nodes_res, None, n).await.ok()?;
        scrape(state, &node).await
    });
    let usages: BTreeMap<&str, NodeUsage> = node_names
        .iter()
        .copied()
        .zip(futures::future::join_all(scrapes).await)
        .filter_map(|(n, u)| Some((n, u?)))
        .collect();
    let now = crate::api::now();
    let items: Vec<Value> = pods
        .iter()
        .filter_map(|p| {
            let node = p["spec"]["nodeName"].as_str()?;
            let ns = p["metadata"]["namespace"].as_str()?;
            let n = p["metadata"]["name"].as_str()?;
            let usage = usages.get(node)?.pods.get(&(ns.to_owned(), n.to_owned()))?;
            if usage["podRef"]["uid"] != p["metadata"]["uid"] {
                return None;
            }
            pod_item(p, usage, &now)
        })
        .collect();
    match name {
        Some(n) => items
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found(GROUP, "pods", n)),
        None => Ok(list("PodMetricsList", items)),
    }
}

/// A PodMetrics from a pod's summary entry: `None` unless every container listed has a
/// CPU rate and a working set (metrics-server's rule).
fn pod_item(pod: &Value, usage: &Value, now: &str) -> Option<Value> {
    let mut containers = Vec::new();
    let mut stamp: Option<(Value, String)> = None;
    for c in usage["containers"].as_array()? {
        let (cpu, window, time) = cpu_rate(&c["cpu"])?;
        let mem = c["memory"]["workingSetBytes"].as_u64()?;
        stamp.get_or_insert((time, window));
        containers.push(json!({"name": c["name"], "usage": {
            "cpu": cpu_quantity(cpu), "memory": memory_quantity(mem)}}));
    }
    let (time, window) = stamp?;
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": meta(pod, now),
        "timestamp": time,
        "window": window,
        "containers": containers,
    }))
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items})
}

/// Nanocores as a canonical quantity (`250m`, `1`, `1500u`, `12345n`).
fn cpu_quantity(n: u64) -> String {
    for (div, suffix) in [(1_000_000_000, ""), (1_000_000, "m"), (1_000, "u")] {
        if n % div == 0 {
            return format!("{}{suffix}", n / div);
        }
    }
    format!("{n}n")
}

/// Bytes as a canonical binary quantity (`64Mi`, `26912Ki`, `1000`).
fn memory_quantity(b: u64) -> String {
    if b == 0 {
        return "0".into();
    }
    for (shift, suffix) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if b % (1 << shift) == 0 {
            return format!("{}{suffix}", b >> shift);
        }
    }
    b.to_string()
}

/// Seconds as a Go duration string, to the millisecond (`15s`, `3.001s`, `250ms`).
fn go_duration(secs: f64) -> String {
    let ms = (secs * 1000.0).round().max(0.0) as u64;
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = format!("{}.{:03}", ms / 1000, ms % 1000);
    format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_durations_as_metrics_server_writes_them() {
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(cpu_quantity(1_500_000), "1500u");
        assert_eq!(cpu_quantity(12_345), "12345n");
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(memory_quantity(64 << 20), "64Mi");
        assert_eq!(memory_quantity(26912 * 1024), "26912Ki");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(go_duration(3.0), "3s");
        assert_eq!(go_duration(3.0012), "3.001s");
        assert_eq!(go_duration(2.5), "2.5s");
        assert_eq!(go_duration(0.25), "250ms");
    }

    #[test]
    fn pod_metrics_need_every_container_measured() {
        let pod = json!({"metadata": {"name": "web", "namespace": "a", "labels": {"app": "w"}}});
        let c = |name: &str, rate: Option<u64>| {
            let mut cpu = json!({"time": "2026-01-01T00:00:02Z", "windowSeconds": 3.0});
            if let Some(r) = rate {
                cpu["usageNanoCores"] = json!(r);
            }
            json!({"name": name, "cpu": cpu, "memory": {"workingSetBytes": 1 << 20}})
        };
        let usage =
            json!({"containers": [c("app", Some(500_000_000)), c("side", Some(1_000_000))]});
        let m = pod_item(&pod, &usage, "2026-01-01T00:00:05Z").unwrap();
        assert_eq!(m["metadata"]["labels"]["app"], "w");
        assert_eq!(m["metadata"]["namespace"], "a");
        assert_eq!(m["timestamp"], "2026-01-01T00:00:02Z");
        assert_eq!(m["window"], "3s");
        assert_eq!(
            m["containers"][0]["usage"],
            json!({"cpu": "500m", "memory": "1Mi"})
        );
        assert_eq!(m["containers"][1]["name"], "side");
        let partial = json!({"containers": [c("app", Some(5)), c("side", None)]});
        assert!(pod_item(&pod, &partial, "x").is_none());
        assert!(pod_item(&pod, &json!({"containers": []}), "x").is_none());
    }
}
