//! HorizontalPodAutoscalers, as upstream's `pkg/registry/autoscaling/horizontalpodautoscaler`:
//! `autoscaling/v2` is the stored form; `autoscaling/v1` is served from the same objects by
//! conversion (its `targetCPUUtilizationPercentage` is the v2 CPU utilization metric, its
//! `currentCPUUtilizationPercentage` the v2 current CPU metric).
//!
//! - Defaults (`SetDefaults_HorizontalPodAutoscaler`): `minReplicas` 1, the metric
//!   `cpu` at 80 % utilization when none is given, and, when `behavior` is set, its
//!   missing rules filled in (scale up: no stabilization, `Max` of 4 pods or 100 % per
//!   15 s; scale down: 300 s stabilization, 100 % per 15 s).
//! - Validation (`ValidateHorizontalPodAutoscaler`): the target's kind and name,
//!   `minReplicas` ≥ 1 and ≤ `maxReplicas`, `maxReplicas` > 0, resource metrics with a
//!   Utilization or AverageValue target, behavior windows within 0–3600 s and policies
//!   with a positive value and a period of 1–1800 s.
//! - Table columns as `kubectl get hpa`: REFERENCE TARGETS MINPODS MAXPODS REPLICAS AGE.

use serde_json::{json, Map, Value};

use super::Strategy;
use crate::defaults::set_default;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, ALL};
use crate::table::{age, col};

/// The served `autoscaling/v2` HorizontalPodAutoscaler.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
    "horizontalpodautoscalers",
    true,
    &["hpa"],
    ALL,
    &[Sub::Status],
    false,
    &HpaStrategy
);

/// The served `autoscaling/v1` HorizontalPodAutoscaler (the same objects).
pub(crate) const RESOURCE_V1: ResourceInfo = res!(
    k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler,
    "horizontalpodautoscalers",
    true,
    &["hpa"],
    ALL,
    &[Sub::Status],
    false,
    &HpaV1Strategy
);

/// The scale-up rules upstream fills in (`GenerateHPAScaleUpRules`).
fn default_scale_up() -> Value {
    json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15}]})
}

/// The scale-down rules upstream fills in (`GenerateHPAScaleDownRules`).
fn default_scale_down() -> Value {
    json!({"stabilizationWindowSeconds": 300, "selectPolicy": "Max", "policies": [
        {"type": "Percent", "value": 100, "periodSeconds": 15}]})
}

/// Fills the missing fields of `rules` from `defaults`.
fn fill_rules(rules: &mut Value, defaults: Value) {
    if !rules.is_object() {
        *rules = defaults;
        return;
    }
    for k in ["stabilizationWindowSeconds", "selectPolicy", "policies"] {
        set_default(rules, k, defaults[k].clone());
    }
}

/// v2 defaults on a v2 object.
pub(crate) fn default_v2(obj: &mut Value) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        return;
    }
    set_default(spec, "minReplicas", json!(1));
    if spec["metrics"].as_array().is_none_or(Vec::is_empty) {
        spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 80}}}]);
    }
    if spec["behavior"].is_object() {
        fill_rules(&mut spec["behavior"]["scaleUp"], default_scale_up());
        fill_rules(&mut spec["behavior"]["scaleDown"], default_scale_down());
    }
}

/// The `autoscaling/v2` strategy.
pub(crate) struct HpaStrategy;

impl Strategy for HpaStrategy {
    fn kind(&self) -> &'static str {
        "HorizontalPodAutoscaler"
    }

    fn defaults(&self, obj: &mut Value) {
        default_v2(obj);
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate_spec(&obj["spec"], causes);
    }

    fn validate_update(&self, new: &Value, _old: &Value, causes: &mut Vec<Cause>) {
        validate_spec(&new["spec"], causes);
    }

    fn table_columns(&self) -> Vec<Value> {
        columns()
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        cells(o)
    }
}

/// The `autoscaling/v1` strategy: converts to and from the stored v2 form.
pub(crate) struct HpaV1Strategy;

impl Strategy for HpaV1Strategy {
    fn kind(&self) -> &'static str {
        "HorizontalPodAutoscaler"
    }

    fn stored_as(&self) -> Option<(&'static str, &'static str)> {
        Some(("autoscaling", "horizontalpodautoscalers"))
    }

    fn stored_form(&self, obj: &Value) -> Option<Value> {
        let mut v2 = v1_to_v2(obj);
        default_v2(&mut v2);
        Some(v2)
    }

    fn serve_stored(&self, obj: &mut Value) {
        if obj["apiVersion"] != "autoscaling/v1" {
            *obj = v2_to_v1(obj);
        }
    }

    fn defaults(&self, obj: &mut Value) {
        if obj["spec"].is_object() {
            set_default(&mut obj["spec"], "minReplicas", json!(1));
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let mut v2 = v1_to_v2(obj);
        default_v2(&mut v2);
        validate_spec(&v2["spec"], causes);
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        self.validate(new, causes);
        let _ = old;
    }

    fn table_columns(&self) -> Vec<Value> {
        columns()
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        cells(&v1_to_v2(o))
    }
}

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["type"] == "Utilization"
}

/// An `autoscaling/v1` object as v2 (upstream's `Convert_v1_HorizontalPodAutoscaler_To_autoscaling_HorizontalPodAutoscaler`).
pub(crate) fn v1_to_v2(obj: &Value) -> Value {
    let mut out = obj.clone();
    out["apiVersion"] = json!("autoscaling/v2");
    let spec = &obj["spec"];
    let mut s = Map::new();
    for k in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if !spec[k].is_null() {
            s.insert(k.into(), spec[k].clone());
        }
    }
    if let Some(t) = spec["targetCPUUtilizationPercentage"].as_i64() {
        s.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": t}}}]),
        );
    }
    out["spec"] = Value::Object(s);
    let st = &obj["status"];
    if st.is_object() {
        let mut o = Map::new();
        for k in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            if !st[k].is_null() {
                o.insert(k.into(), st[k].clone());
            }
        }
        if let Some(c) = st["currentCPUUtilizationPercentage"].as_i64() {
            o.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageUtilization": c}}}]),
            );
        }
        out["status"] = Value::Object(o);
    }
    out
}

/// A stored v2 object as `autoscaling/v1`: only the CPU utilization metric has a v1 form.
pub(crate) fn v2_to_v1(obj: &Value) -> Value {
    let mut out = obj.clone();
    out["apiVersion"] = json!("autoscaling/v1");
    let spec = &obj["spec"];
    let mut s = Map::new();
    for k in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if !spec[k].is_null() {
            s.insert(k.into(), spec[k].clone());
        }
    }
    if let Some(m) = spec["metrics"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| is_cpu_utilization(m)))
    {
        s.insert(
            "targetCPUUtilizationPercentage".into(),
            m["resource"]["target"]["averageUtilization"].clone(),
        );
    }
    out["spec"] = Value::Object(s);
    let st = &obj["status"];
    if st.is_object() {
        let mut o = Map::new();
        for k in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            if !st[k].is_null() {
                o.insert(k.into(), st[k].clone());
            }
        }
        if let Some(c) = st["currentMetrics"].as_array().and_then(|ms| {
            ms.iter().find(|m| {
                m["type"] == "Resource"
                    && m["resource"]["name"] == "cpu"
                    && !m["resource"]["current"]["averageUtilization"].is_null()
            })
        }) {
            o.insert(
                "currentCPUUtilizationPercentage".into(),
                c["resource"]["current"]["averageUtilization"].clone(),
            );
        }
        // v1 requires currentReplicas
        o.entry("currentReplicas").or_insert(json!(0));
        out["status"] = Value::Object(o);
    }
    out
}

fn validate_spec(spec: &Value, causes: &mut Vec<Cause>) {
    let p = "spec";
    let r = &spec["scaleTargetRef"];
    for k in ["kind", "name"] {
        if r[k].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(format!("{p}.scaleTargetRef.{k}")));
        }
    }
    let min = spec["minReplicas"].as_i64().unwrap_or(1);
    let max = spec["maxReplicas"].as_i64().unwrap_or(0);
    if min < 1 {
        causes.push(Cause::invalid(
            format!("{p}.minReplicas"),
            &json!(min),
            "must be greater than or equal to 1",
        ));
    }
    if max < 1 {
        causes.push(Cause::invalid(
            format!("{p}.maxReplicas"),
            &json!(max),
            "must be greater than 0",
        ));
    }
    if max >= 1 && min > max {
        causes.push(Cause::invalid(
            format!("{p}.minReplicas"),
            &json!(min),
            "must be less than or equal to maxReplicas",
        ));
    }
    for (i, m) in spec["metrics"].as_array().into_iter().flatten().enumerate() {
        validate_metric(m, &format!("{p}.metrics[{i}]"), causes);
    }
    let b = &spec["behavior"];
    for dir in ["scaleUp", "scaleDown"] {
        if b[dir].is_object() {
            validate_rules(&b[dir], &format!("{p}.behavior.{dir}"), causes);
        }
    }
}

fn validate_metric(m: &Value, path: &str, causes: &mut Vec<Cause>) {
    let types = [
        "ContainerResource",
        "External",
        "Object",
        "Pods",
        "Resource",
    ];
    let ty = m["type"].as_str().unwrap_or_default();
    if ty.is_empty() {
        causes.push(Cause::required(format!("{path}.type")));
        return;
    }
    if !types.contains(&ty) {
        causes.push(Cause::not_supported(
            format!("{path}.type"),
            &m["type"],
            &types,
        ));
        return;
    }
    if ty != "Resource" && ty != "ContainerResource" {
        return;
    }
    let key = if ty == "Resource" {
        "resource"
    } else {
        "containerResource"
    };
    let res = &m[key];
    let rp = format!("{path}.{key}");
    if !res.is_object() {
        causes.push(Cause::required(rp));
        return;
    }
    if res["name"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required(format!("{rp}.name")));
    }
    let t = &res["target"];
    match t["type"].as_str() {
        Some("Utilization") => match t["averageUtilization"].as_i64() {
            None => causes.push(Cause::required(format!("{rp}.target.averageUtilization"))),
            Some(u) if u <= 0 => causes.push(Cause::invalid(
                format!("{rp}.target.averageUtilization"),
                &json!(u),
                "must be greater than 0",
            )),
            Some(_) => {}
        },
        Some("AverageValue") => {
            if t["averageValue"].is_null() {
                causes.push(Cause::required(format!("{rp}.target.averageValue")));
            }
        }
        Some(other) => causes.push(Cause::not_supported(
            format!("{rp}.target.type"),
            &json!(other),
            &["AverageValue", "Utilization"],
        )),
        None => causes.push(Cause::required(format!("{rp}.target.type"))),
    }
}

fn validate_rules(rules: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(w) = rules["stabilizationWindowSeconds"].as_i64() {
        if !(0..=3600).contains(&w) {
            causes.push(Cause::invalid(
                format!("{path}.stabilizationWindowSeconds"),
                &json!(w),
                "must be less than or equal to 3600 and greater than or equal to 0",
            ));
        }
    }
    if let Some(s) = rules["selectPolicy"].as_str() {
        let ok = ["Disabled", "Max", "Min"];
        if !ok.contains(&s) {
            causes.push(Cause::not_supported(
                format!("{path}.selectPolicy"),
                &json!(s),
                &ok,
            ));
        }
    }
    let policies = rules["policies"].as_array().cloned().unwrap_or_default();
    if policies.is_empty() && rules["selectPolicy"] != "Disabled" {
        causes.push(Cause::required_because(
            format!("{path}.policies"),
            "must specify at least one Policy",
        ));
    }
    for (i, pol) in policies.iter().enumerate() {
        let pp = format!("{path}.policies[{i}]");
        let ok = ["Percent", "Pods"];
        if !pol["type"].as_str().is_some_and(|t| ok.contains(&t)) {
            causes.push(Cause::not_supported(
                format!("{pp}.type"),
                &pol["type"],
                &ok,
            ));
        }
        let v = pol["value"].as_i64().unwrap_or(0);
        if v <= 0 {
            causes.push(Cause::invalid(
                format!("{pp}.value"),
                &json!(v),
                "must be greater than zero",
            ));
        }
        let period = pol["periodSeconds"].as_i64().unwrap_or(0);
        if period <= 0 {
            causes.push(Cause::invalid(
                format!("{pp}.periodSeconds"),
                &json!(period),
                "must be greater than zero",
            ));
        } else if period > 1800 {
            causes.push(Cause::invalid(
                format!("{pp}.periodSeconds"),
                &json!(period),
                "must be less than or equal to 1800",
            ));
        }
    }
}

fn columns() -> Vec<Value> {
    let s = "string";
    vec![
        col("Name", s, 0),
        col("Reference", s, 0),
        col("Targets", s, 0),
        col("MinPods", s, 0),
        col("MaxPods", "integer", 0),
        col("Replicas", "integer", 0),
        col("Age", s, 0),
    ]
}

/// The TARGETS cell: `cpu: 50%/80%` per metric, `<unknown>` before a measurement, the
/// first few only (upstream's `formatHPAMetrics`).
fn targets(o: &Value) -> String {
    let metrics = o["spec"]["metrics"].as_array().cloned().unwrap_or_default();
    if metrics.is_empty() {
        return "<none>".into();
    }
    let current = o["status"]["currentMetrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut list = Vec::new();
    for (i, m) in metrics.iter().enumerate() {
        let key = match m["type"].as_str() {
            Some("Resource") => "resource",
            Some("ContainerResource") => "containerResource",
            Some(ty @ ("Pods" | "Object" | "External")) => {
                list.push(custom_target(ty, m, current.get(i)));
                continue;
            }
            _ => {
                list.push("<unknown type>".to_owned());
                continue;
            }
        };
        let t = &m[key]["target"];
        let cur = current.get(i).map(|c| &c[key]["current"]);
        let name = m[key]["name"].as_str().unwrap_or_default();
        if let Some(av) = t["averageValue"].as_str() {
            let c = cur
                .and_then(|c| c["averageValue"].as_str())
                .unwrap_or("<unknown>");
            list.push(format!("{name}: {c}/{av}"));
        } else {
            let c = cur
                .and_then(|c| c["averageUtilization"].as_i64())
                .map_or("<unknown>".to_owned(), |u| format!("{u}%"));
            let target = t["averageUtilization"]
                .as_i64()
                .map_or("<auto>".to_owned(), |u| format!("{u}%"));
            list.push(format!("{name}: {c}/{target}"));
        }
    }
    const MAX_SHOWN: usize = 2;
    if list.len() > MAX_SHOWN {
        let more = list.len() - MAX_SHOWN;
        list.truncate(MAX_SHOWN);
        return format!("{} + {more} more...", list.join(", "));
    }
    list.join(", ")
}

/// One `Pods`, `Object` or `External` metric in the TARGETS cell, as upstream prints it:
/// `current/target`, with ` (avg)` for an Object or External metric's `averageValue`
/// target; the metric's name is not shown.
fn custom_target(ty: &str, spec: &Value, status: Option<&Value>) -> String {
    let key = match ty {
        "Pods" => "pods",
        "Object" => "object",
        _ => "external",
    };
    let t = &spec[key]["target"];
    let cur = status
        .filter(|s| s["type"] == ty)
        .map(|s| &s[key]["current"]);
    let shown = |field: &str| {
        cur.and_then(|c| c[field].as_str())
            .unwrap_or("<unknown>")
            .to_owned()
    };
    let quantity = |v: &Value| v.as_str().unwrap_or("<unknown>").to_owned();
    if ty == "Pods" {
        return format!("{}/{}", shown("averageValue"), quantity(&t["averageValue"]));
    }
    if t["averageValue"].is_string() {
        format!(
            "{}/{} (avg)",
            shown("averageValue"),
            quantity(&t["averageValue"])
        )
    } else {
        format!("{}/{}", shown("value"), quantity(&t["value"]))
    }
}

fn cells(o: &Value) -> Vec<Value> {
    let spec = &o["spec"];
    let r = &spec["scaleTargetRef"];
    let reference = format!(
        "{}/{}",
        r["kind"].as_str().unwrap_or_default(),
        r["name"].as_str().unwrap_or_default()
    );
    let min = spec["minReplicas"]
        .as_i64()
        .map_or("<unset>".to_owned(), |m| m.to_string());
    vec![
        json!(o["metadata"]["name"]),
        json!(reference),
        json!(targets(o)),
        json!(min),
        json!(spec["maxReplicas"].as_i64().unwrap_or(0)),
        json!(o["status"]["currentReplicas"].as_i64().unwrap_or(0)),
        json!(age(&o["metadata"]["creationTimestamp"])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(spec: Value) -> Value {
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn fields(o: &Value) -> Vec<String> {
        let mut c = Vec::new();
        HpaStrategy.validate(o, &mut c);
        c.iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_as_upstream() {
        let mut o = hpa(
            json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "maxReplicas": 5, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10}}}),
        );
        HpaStrategy.defaults(&mut o);
        assert_eq!(o["spec"]["minReplicas"], 1);
        assert_eq!(
            o["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert_eq!(o["spec"]["behavior"]["scaleUp"], default_scale_up());
        let down = &o["spec"]["behavior"]["scaleDown"];
        assert_eq!(down["stabilizationWindowSeconds"], 10);
        assert_eq!(down["policies"][0]["type"], "Percent");
        assert_eq!(down["selectPolicy"], "Max");
        // no behavior: left unset
        let mut o =
            hpa(json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5}));
        HpaStrategy.defaults(&mut o);
        assert!(o["spec"]["behavior"].is_null());
    }

    #[test]
    fn validation_table() {
        let ok = hpa(
            json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 5}),
        );
        assert!(fields(&ok).is_empty(), "{:?}", fields(&ok));
        let cases: [(Value, &str); 7] = [
            (json!({"scaleTargetRef": {"name": "web"}, "maxReplicas": 5}),
             "spec.scaleTargetRef.kind: Required value"),
            (json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 0, "maxReplicas": 5}),
             "spec.minReplicas: Invalid value: 0: must be greater than or equal to 1"),
            (json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 0}),
             "spec.maxReplicas: Invalid value: 0: must be greater than 0"),
            (json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 6, "maxReplicas": 5}),
             "spec.minReplicas: Invalid value: 6: must be less than or equal to maxReplicas"),
            (json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 0}}}]}),
             "spec.metrics[0].resource.target.averageUtilization: Invalid value: 0: must be greater than 0"),
            (json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
                    "behavior": {"scaleUp": {"stabilizationWindowSeconds": 4000, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]}}}),
             "spec.behavior.scaleUp.stabilizationWindowSeconds: Invalid value: 4000: must be less than or equal to 3600 and greater than or equal to 0"),
            (json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
                    "behavior": {"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 1801}]}}}),
             "spec.behavior.scaleDown.policies[0].periodSeconds: Invalid value: 1801: must be less than or equal to 1800"),
        ];
        for (spec, want) in cases {
            let got = fields(&hpa(spec));
            assert!(got.iter().any(|g| g == want), "want {want:?}, got {got:?}");
        }
    }

    #[test]
    fn v1_round_trips_through_v2() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50},
            "status": {"currentReplicas": 3, "desiredReplicas": 3, "currentCPUUtilizationPercentage": 40}});
        let v2 = v1_to_v2(&v1);
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        assert_eq!(
            v2["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            40
        );
        assert_eq!(v2_to_v1(&v2), v1);
        // a v1 object without a target reads back with the v2 default of 80 %
        let mut bare = v1.clone();
        bare["spec"]
            .as_object_mut()
            .unwrap()
            .remove("targetCPUUtilizationPercentage");
        let stored = HpaV1Strategy.stored_form(&bare).unwrap();
        assert_eq!(
            v2_to_v1(&stored)["spec"]["targetCPUUtilizationPercentage"],
            80
        );
    }

    #[test]
    fn table_cells_as_upstream() {
        let mut o = hpa(
            json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 10,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}]}),
        );
        let names: Vec<Value> = columns().iter().map(|c| c["name"].clone()).collect();
        assert_eq!(
            names,
            [
                "Name",
                "Reference",
                "Targets",
                "MinPods",
                "MaxPods",
                "Replicas",
                "Age"
            ]
        );
        assert_eq!(cells(&o)[2], "cpu: <unknown>/50%, memory: <unknown>/100Mi");
        o["status"] = json!({"currentReplicas": 3, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 72, "averageValue": "360m"}}},
            {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "80Mi"}}}]});
        let c = cells(&o);
        assert_eq!(c[1], "Deployment/web");
        assert_eq!(c[2], "cpu: 72%/50%, memory: 80Mi/100Mi");
        assert_eq!(
            (c[3].clone(), c[4].clone(), c[5].clone()),
            (json!("1"), json!(10), json!(3))
        );
    }

    #[test]
    fn custom_and_external_targets_as_upstream() {
        let mut o = hpa(
            json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "maxReplicas": 10, "metrics": [
            {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
            {"type": "Object", "object": {"metric": {"name": "hits"}, "describedObject": {"kind": "Service", "name": "web"},
                "target": {"type": "Value", "value": "100"}}},
            {"type": "External", "external": {"metric": {"name": "queue"}, "target": {"type": "AverageValue", "averageValue": "30"}}}]}),
        );
        assert_eq!(cells(&o)[2], "<unknown>/10, <unknown>/100 + 1 more...");
        o["spec"]["metrics"].as_array_mut().unwrap().remove(0);
        o["status"] = json!({"currentMetrics": [
            {"type": "Object", "object": {"metric": {"name": "hits"}, "current": {"value": "250"}}},
            {"type": "External", "external": {"metric": {"name": "queue"}, "current": {"averageValue": "45"}}}]});
        assert_eq!(cells(&o)[2], "250/100, 45/30 (avg)");
        o["spec"]["metrics"] = json!([{"type": "Pods", "pods": {"metric": {"name": "rps"},
            "target": {"type": "AverageValue", "averageValue": "10"}}}]);
        o["status"] = json!({"currentMetrics": [
            {"type": "Pods", "pods": {"metric": {"name": "rps"}, "current": {"averageValue": "12500m"}}}]});
        assert_eq!(cells(&o)[2], "12500m/10");
    }
}
