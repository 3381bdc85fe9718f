//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`: the columns kubectl prints.

use k8s_openapi::jiff;
use serde_json::{json, Value};

use crate::resources::ResourceInfo;

/// Human age like kubectl's (`5s`, `3m2s`, `4h`, `2d`).
pub(crate) fn age(ts: &Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    age_at(ts, now)
}

fn age_at(ts: &Value, now: i64) -> String {
    let Some(t) = ts.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    human_duration(now - t.as_second())
}

/// A duration in seconds as kubectl prints ages (`5s`, `3m2s`, `4h`, `2d`).
pub(crate) fn human_duration(s: i64) -> String {
    let s = s.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ if d < 730 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

/// A column definition.
pub(crate) fn col(name: &str, ty: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": name, "priority": priority})
}

/// An integer field, 0 when missing.
pub(crate) fn num(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// Comma-joined items, `<none>` when there are none.
pub(crate) fn join_str(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "<none>".into()
    } else {
        v.join(",")
    }
}

/// The container names and images of a PodSpec, comma-joined.
pub(crate) fn containers_images(spec: &Value) -> (String, String) {
    let cs = spec["containers"].as_array().cloned().unwrap_or_default();
    (
        join_str(
            cs.iter()
                .map(|c| c["name"].as_str().unwrap_or_default().to_owned()),
        ),
        join_str(
            cs.iter()
                .map(|c| c["image"].as_str().unwrap_or_default().to_owned()),
        ),
    )
}

/// A selector (or a plain label map) as `k=v,k=v`.
pub(crate) fn selector_str(sel: &Value) -> String {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if parts.is_empty() {
        if let Some(m) = sel.as_object() {
            if !m.contains_key("matchLabels") && !m.contains_key("matchExpressions") {
                parts = m
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect();
            }
        }
    }
    join_str(parts.into_iter())
}

/// A meta.k8s.io/v1 Table for `items` (with the object in each row unless `include_object`
/// is false).
pub(crate) fn table(
    info: &ResourceInfo,
    items: &[Value],
    rv: &Value,
    cont: &Value,
    include_object: bool,
) -> Value {
    let strategy = &info.strategy;
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut row = json!({"cells": strategy.table_cells(o)});
            if include_object {
                let mut obj = o.clone();
                if obj["kind"].is_null() {
                    obj["kind"] = json!(info.kind);
                    obj["apiVersion"] = json!(info.api_version());
                }
                row["object"] = obj;
            }
            row
        })
        .collect();
    let mut meta = json!({"resourceVersion": rv});
    if cont.is_string() {
        meta["continue"] = cont.clone();
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": strategy.table_columns(),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_row_has_kubectl_columns() {
        let info = crate::resources::lookup("apps", "v1", "deployments").unwrap();
        let d = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = table(info, &[d], &json!("5"), &Value::Null, true);
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            &names[..5],
            ["Name", "Ready", "Up-to-date", "Available", "Age"]
        );
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "2/3");
        assert_eq!(cells[7], "app=web");
        assert_eq!(t["rows"][0]["object"]["kind"], "Deployment");
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now = 1_700_000_000;
        let ts = |secs_ago: i64| {
            let t = jiff::Timestamp::from_second(now - secs_ago).unwrap();
            json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        };
        assert_eq!(age_at(&ts(5), now), "5s");
        assert_eq!(age_at(&ts(185), now), "3m5s");
        assert_eq!(age_at(&ts(3 * 86400), now), "3d0h");
        assert_eq!(age_at(&ts(900 * 86400), now), "2y");
        assert_eq!(age_at(&Value::Null, now), "<unknown>");
    }
}
