//! LimitRanges (v1, namespaced), as upstream's `pkg/registry/core/limitrange`: the
//! defaulting of `Container` items (a missing default limit is the max, a missing
//! default request is the default limit, else the min), validation of each item
//! (`min <= defaultRequest <= default <= max`, ratios of at least 1, no defaults for
//! `Pod` items) with upstream's messages, and the columns NAME, CREATED AT.
//!
//! The LimitRanger admission is `admission::limitrange`.

use kcore_k8s::Quantity;
use serde_json::{json, Map, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::col;
use crate::validate;

/// The served `LimitRange` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::core::v1::LimitRange,
    "limitranges",
    true,
    &["limits"],
    NONE,
    &[],
    false,
    &LimitRangeStrategy
);

/// The `LimitRange` strategy.
pub(crate) struct LimitRangeStrategy;

/// Copies into `to` each entry of `from` that `to` lacks.
fn fill(item: &mut Value, from: &str, to: &str) {
    let src = item[from].as_object().cloned().unwrap_or_default();
    if !item[to].is_object() {
        item[to] = Value::Object(Map::new());
    }
    let dst = item[to].as_object_mut().expect("object");
    for (k, v) in src {
        dst.entry(k).or_insert(v);
    }
}

fn quantity(v: &Value) -> Option<Quantity> {
    v.as_str().and_then(|s| Quantity::parse(s).ok())
}

impl Strategy for LimitRangeStrategy {
    fn kind(&self) -> &'static str {
        "LimitRange"
    }

    fn defaults(&self, obj: &mut Value) {
        for item in obj["spec"]["limits"].as_array_mut().into_iter().flatten() {
            if item["type"] != "Container" {
                continue;
            }
            fill(item, "max", "default");
            fill(item, "default", "defaultRequest");
            fill(item, "min", "defaultRequest");
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        for (i, item) in obj["spec"]["limits"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let p = format!("spec.limits[{i}]");
            validate::one_of(
                &item["type"],
                &format!("{p}.type"),
                &["Pod", "Container", "PersistentVolumeClaim"],
                causes,
            );
            if item["type"] == "Pod" {
                for f in ["default", "defaultRequest"] {
                    if item[f].as_object().is_some_and(|m| !m.is_empty()) {
                        causes.push(Cause::forbidden(
                            format!("{p}.{f}"),
                            "may not be specified when `type` is 'Pod'",
                        ));
                    }
                }
            }
            let get = |f: &str, k: &str| quantity(&item[f][k]);
            for f in [
                "min",
                "max",
                "default",
                "defaultRequest",
                "maxLimitRequestRatio",
            ] {
                for (k, v) in item[f].as_object().into_iter().flatten() {
                    if quantity(v).is_none() {
                        causes.push(Cause::invalid(
                            format!("{p}.{f}[{k}]"),
                            v,
                            "must be a quantity",
                        ));
                    }
                }
            }
            let mut keys: Vec<&String> = ["min", "max", "default", "defaultRequest"]
                .iter()
                .flat_map(|f| item[*f].as_object().into_iter().flatten().map(|(k, _)| k))
                .collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (min, max, def, req) = (
                    get("min", k),
                    get("max", k),
                    get("default", k),
                    get("defaultRequest", k),
                );
                let s = |f: &str| item[f][k].as_str().unwrap_or_default().to_owned();
                let mut bad = |f: &str, why: String| {
                    causes.push(Cause::invalid(format!("{p}.{f}[{k}]"), &item[f][k], &why))
                };
                if let (Some(a), Some(b)) = (min, max) {
                    if a > b {
                        bad(
                            "min",
                            format!(
                                "min value {} is greater than max value {}",
                                s("min"),
                                s("max")
                            ),
                        );
                    }
                }
                if let (Some(r), Some(d)) = (req, def) {
                    if r > d {
                        bad(
                            "defaultRequest",
                            format!(
                                "default request value {} is greater than default limit value {}",
                                s("defaultRequest"),
                                s("default")
                            ),
                        );
                    }
                }
                if let (Some(a), Some(r)) = (min, req) {
                    if a > r {
                        bad(
                            "defaultRequest",
                            format!(
                                "min value {} is greater than default request value {}",
                                s("min"),
                                s("defaultRequest")
                            ),
                        );
                    }
                }
                if let (Some(r), Some(b)) = (req, max) {
                    if r > b {
                        bad(
                            "defaultRequest",
                            format!(
                                "default request value {} is greater than max value {}",
                                s("defaultRequest"),
                                s("max")
                            ),
                        );
                    }
                }
                if let (Some(a), Some(d)) = (min, def) {
                    if a > d {
                        bad(
                            "default",
                            format!(
                                "min value {} is greater than default value {}",
                                s("min"),
                                s("default")
                            ),
                        );
                    }
                }
                if let (Some(d), Some(b)) = (def, max) {
                    if d > b {
                        bad(
                            "default",
                            format!(
                                "default value {} is greater than max value {}",
                                s("default"),
                                s("max")
                            ),
                        );
                    }
                }
            }
            for (k, v) in item["maxLimitRequestRatio"]
                .as_object()
                .into_iter()
                .flatten()
            {
                if quantity(v).is_some_and(|r| r < Quantity::new(1, 0)) {
                    causes.push(Cause::invalid(
                        format!("{p}.maxLimitRequestRatio[{k}]"),
                        v,
                        &format!("ratio {} is less than 1", v.as_str().unwrap_or_default()),
                    ));
                }
            }
        }
    }

    fn table_columns(&self) -> Vec<Value> {
        vec![col("Name", "string", 0), col("Created At", "date", 0)]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        vec![
            json!(o["metadata"]["name"]),
            json!(o["metadata"]["creationTimestamp"]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation_as_upstream() {
        let mut lr = json!({"metadata": {"name": "l"}, "spec": {"limits": [
            {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}]}});
        LimitRangeStrategy.defaults(&mut lr);
        let item = &lr["spec"]["limits"][0];
        assert_eq!(item["default"], json!({"cpu": "2"}));
        assert_eq!(
            item["defaultRequest"],
            json!({"cpu": "2", "memory": "64Mi"})
        );
        let mut c = Vec::new();
        LimitRangeStrategy.validate(&lr, &mut c);
        assert!(c.is_empty(), "{c:?}");

        let bad = json!({"metadata": {"name": "l"}, "spec": {"limits": [
            {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}},
            {"type": "Pod", "default": {"cpu": "1"}, "maxLimitRequestRatio": {"cpu": "500m"}}]}});
        let mut c = Vec::new();
        LimitRangeStrategy.validate(&bad, &mut c);
        let got: Vec<_> = c
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert!(got.contains(&"spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1".to_owned()), "{got:?}");
        assert!(
            got.contains(
                &"spec.limits[1].default: Forbidden: may not be specified when `type` is 'Pod'"
                    .to_owned()
            ),
            "{got:?}"
        );
        assert!(got.contains(&"spec.limits[1].maxLimitRequestRatio[cpu]: Invalid value: \"500m\": ratio 500m is less than 1".to_owned()), "{got:?}");
    }
}
