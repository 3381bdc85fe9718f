//! Fixtures shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kcore_scheduler::{Code, CycleState, Framework, NodeId, Plugin, Snapshot};
use serde_json::{json, Value};

/// A node with allocatable cpu/memory/pods, labels (hostname added) and extra
/// JSON merged into `spec` / `status`.
pub fn node(name: &str, cpu: &str, mem: &str, labels: &[(&str, &str)]) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/hostname".into(), json!(name));
    for (k, v) in labels {
        l.insert((*k).into(), json!(v));
    }
    json!({
        "metadata": {"name": name, "labels": l},
        "spec": {},
        "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"}}
    })
}

/// A pod in `default` with one container requesting cpu/memory ("" = none).
pub fn pod(name: &str, cpu: &str, mem: &str) -> Value {
    let mut req = serde_json::Map::new();
    if !cpu.is_empty() {
        req.insert("cpu".into(), json!(cpu));
    }
    if !mem.is_empty() {
        req.insert("memory".into(), json!(mem));
    }
    json!({
        "metadata": {"name": name, "namespace": "default", "labels": {}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": req}}]}
    })
}

/// Sets `path` (dot-separated) in `v` to `val`.
pub fn set(mut v: Value, path: &str, val: Value) -> Value {
    let mut cur = &mut v;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        if cur.get(*p).is_none() || cur[*p].is_null() {
            cur[*p] = json!({});
        }
        cur = cur.get_mut(*p).unwrap();
    }
    cur[parts[parts.len() - 1]] = val;
    v
}

pub fn labeled(v: Value, labels: &[(&str, &str)]) -> Value {
    let mut v = v;
    for (k, val) in labels {
        v["metadata"]["labels"][*k] = json!(val);
    }
    v
}

pub fn to_node(v: &Value) -> Node {
    serde_json::from_value(v.clone()).expect("valid node")
}

pub fn to_pod(v: &Value) -> Pod {
    serde_json::from_value(v.clone()).expect("valid pod")
}

/// A snapshot holding `nodes` and `(node, pod)` assignments.
pub fn snapshot(nodes: &[Value], assigned: &[(&str, Value)]) -> Snapshot {
    let mut s = Snapshot::new();
    for n in nodes {
        s.upsert_node(&to_node(n)).unwrap();
    }
    for (n, p) in assigned {
        let p = set(p.clone(), "spec.nodeName", json!(n));
        s.upsert_pod(&to_pod(&p)).unwrap();
    }
    s
}

/// A framework with just `plugin` (weight 1), scoring all nodes.
pub fn only(plugin: Arc<dyn Plugin>) -> Framework {
    Framework::builder("test")
        .plugin(plugin, 1)
        .percentage_of_nodes_to_score(100)
        .build()
        .unwrap()
}

/// Runs PreFilter + Filter of `fw` for `pod` on every node: (node, code,
/// reasons). A PreFilter rejection is reported for every node.
pub fn filter_all(
    fw: &Framework,
    snap: &mut Snapshot,
    pod: &Value,
) -> Vec<(String, Code, Vec<String>)> {
    let info = snap.compile_pod(&to_pod(pod)).unwrap();
    let mut state = CycleState::default();
    let pre = fw.run_pre_filter(&mut state, &info, snap);
    let mut out = Vec::new();
    let mut ids: Vec<NodeId> = snap.node_ids().to_vec();
    ids.sort_by(|a, b| snap.node(*a).name().cmp(snap.node(*b).name()));
    for id in ids {
        let n = snap.node(id);
        let st = if pre.is_success() {
            fw.run_filters(&state, &info, n, snap)
        } else {
            pre.clone()
        };
        out.push((
            n.name().to_string(),
            st.code(),
            st.reasons().iter().map(|r| r.to_string()).collect(),
        ));
    }
    out
}

/// Runs PreFilter, PreScore and Score (weights applied) over all nodes
/// sorted by name: (node, score).
pub fn score_all(fw: &Framework, snap: &mut Snapshot, pod: &Value) -> Vec<(String, i64)> {
    let info = snap.compile_pod(&to_pod(pod)).unwrap();
    let mut state = CycleState::default();
    let _ = fw.run_pre_filter(&mut state, &info, snap);
    let mut ids: Vec<NodeId> = snap.node_ids().to_vec();
    ids.sort_by(|a, b| snap.node(*a).name().cmp(snap.node(*b).name()));
    let st = fw.run_pre_score(&mut state, &info, snap, &ids);
    assert!(matches!(st.code(), Code::Success | Code::Skip), "{st:?}");
    let mut totals = Vec::new();
    let mut scratch = Vec::new();
    fw.run_score(&state, &info, snap, &ids, &mut totals, &mut scratch);
    ids.iter()
        .zip(totals)
        .map(|(id, s)| (snap.node(*id).name().to_string(), s))
        .collect()
}

/// Filter results as `(node, passed)`.
pub fn passed(r: &[(String, Code, Vec<String>)]) -> Vec<(&str, bool)> {
    r.iter()
        .map(|(n, c, _)| (n.as_str(), *c == Code::Success))
        .collect()
}
