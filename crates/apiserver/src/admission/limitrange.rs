//! The LimitRanger admission plugin (upstream's `plugin/pkg/admission/limitranger`), on
//! the create of pods and PersistentVolumeClaims, with the LimitRanges of the
//! namespace:
//!
//! - `Container` items fill each container's missing limits from `default` and missing
//!   requests from `defaultRequest`, and say so in the pod's
//!   `kubernetes.io/limit-ranger` annotation;
//! - then `min`, `max` and `maxLimitRequestRatio` hold per container (`Container`), for
//!   the pod's sum (`Pod`), and for a claim's storage (`PersistentVolumeClaim`);
//!   a refusal is a 403 with upstream's messages (several in brackets).

use std::collections::BTreeMap;

use kcore_k8s::Quantity;
use serde_json::{json, Map, Value};

use super::{Operation, Request};
use crate::api::{Api, ListOptions};
use crate::error::ApiError;

/// The annotation listing what the plugin set.
const ANNOTATION: &str = "kubernetes.io/limit-ranger";

fn quantity(v: &Value) -> Option<Quantity> {
    v.as_str().and_then(|s| Quantity::parse(s).ok())
}

/// Applies the plugin to a new pod or claim.
pub(super) async fn admit(api: &Api, req: &Request<'_>, mut obj: Value) -> Result<Value, ApiError> {
    let info = req.info;
    let kind = match (info.group.as_ref(), info.plural.as_ref()) {
        ("", "pods") => "pods",
        ("", "persistentvolumeclaims") => "persistentvolumeclaims",
        _ => return Ok(obj),
    };
    let (Some(ns), Operation::Create, None) = (req.namespace, req.op, req.sub) else {
        return Ok(obj);
    };
    let list = api
        .list_value("v1", "limitranges", Some(ns), &ListOptions::default())
        .await?;
    let ranges = list["items"].as_array().map_or(&[][..], Vec::as_slice);
    if ranges.is_empty() {
        return Ok(obj);
    }
    let errors = if kind == "pods" {
        if apply_defaults(&mut obj, ranges) {
            // The QoS class follows the defaulted resources.
            info.strategy.prepare_for_create(&mut obj);
        }
        validate_pod(&obj, ranges)
    } else {
        validate_claim(&obj, ranges)
    };
    match errors.len() {
        0 => Ok(obj),
        1 => Err(ApiError::forbidden("", kind, req.name, &errors[0])),
        _ => Err(ApiError::forbidden(
            "",
            kind,
            req.name,
            &format!("[{}]", errors.join(", ")),
        )),
    }
}

/// The `type` items of all ranges.
fn items<'a>(ranges: &'a [Value], ty: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    ranges
        .iter()
        .flat_map(|r| r["spec"]["limits"].as_array().into_iter().flatten())
        .filter(move |i| i["type"] == ty)
}

/// Fills container defaults; whether anything changed.
fn apply_defaults(pod: &mut Value, ranges: &[Value]) -> bool {
    let mut defaults = Map::new();
    let mut default_requests = Map::new();
    for item in items(ranges, "Container") {
        for (src, dst) in [
            ("default", &mut defaults),
            ("defaultRequest", &mut default_requests),
        ] {
            for (k, v) in item[src].as_object().into_iter().flatten() {
                dst.entry(k.clone()).or_insert(v.clone());
            }
        }
    }
    if defaults.is_empty() && default_requests.is_empty() {
        return false;
    }
    let mut notes = Vec::new();
    for (list, what) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        for c in pod["spec"][list].as_array_mut().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or_default().to_owned();
            for (key, from, word) in [
                ("requests", &default_requests, "request"),
                ("limits", &defaults, "limit"),
            ] {
                let mut set = Vec::new();
                for (k, v) in from {
                    let has = !c["resources"][key][k].is_null();
                    // A request is not raised above a limit the container names.
                    let over_limit = key == "requests"
                        && match (quantity(v), quantity(&c["resources"]["limits"][k])) {
                            (Some(d), Some(l)) => d > l,
                            _ => false,
                        };
                    if !has {
                        if !c["resources"].is_object() {
                            c["resources"] = json!({});
                        }
                        if !c["resources"][key].is_object() {
                            c["resources"][key] = json!({});
                        }
                        let value = if over_limit {
                            c["resources"]["limits"][k].clone()
                        } else {
                            v.clone()
                        };
                        c["resources"][key][k] = value;
                        set.push(k.clone());
                    }
                }
                if !set.is_empty() {
                    set.sort();
                    notes.push(format!("{} {word} for {what} {name}", set.join(", ")));
                }
            }
        }
    }
    if notes.is_empty() {
        return false;
    }
    let meta = &mut pod["metadata"];
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"][ANNOTATION] =
        json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    true
}

type List = BTreeMap<String, (Quantity, String)>;

fn list(v: &Value) -> List {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), (quantity(v)?, v.as_str()?.to_owned()))))
        .collect()
}

/// Upstream's `minConstraint`, `maxConstraint` and `limitRequestRatioConstraint` for
/// one item against one set of requests and limits.
fn check(item: &Value, ty: &str, requests: &List, limits: &List, errors: &mut Vec<String>) {
    for (k, (min, min_s)) in list(&item["min"]) {
        match requests.get(&k) {
            None => errors.push(format!(
                "minimum {k} usage per {ty} is {min_s}.  No request is specified"
            )),
            Some((r, r_s)) if *r < min => errors.push(format!(
                "minimum {k} usage per {ty} is {min_s}, but request is {r_s}"
            )),
            _ => match limits.get(&k) {
                Some((l, l_s)) if *l < min => errors.push(format!(
                    "minimum {k} usage per {ty} is {min_s}, but limit is {l_s}"
                )),
                _ => {}
            },
        }
    }
    for (k, (max, max_s)) in list(&item["max"]) {
        if ty == "PersistentVolumeClaim" {
            // A claim's max holds against what it requests (upstream's
            // `maxRequestConstraint`).
            match requests.get(&k) {
                None => errors.push(format!(
                    "maximum {k} usage per {ty} is {max_s}.  No request is specified"
                )),
                Some((r, r_s)) if *r > max => errors.push(format!(
                    "maximum {k} usage per {ty} is {max_s}, but request is {r_s}"
                )),
                _ => {}
            }
            continue;
        }
        match limits.get(&k) {
            None => errors.push(format!(
                "maximum {k} usage per {ty} is {max_s}.  No limit is specified"
            )),
            Some((l, l_s)) if *l > max => errors.push(format!(
                "maximum {k} usage per {ty} is {max_s}, but limit is {l_s}"
            )),
            _ => match requests.get(&k) {
                Some((r, r_s)) if *r > max => errors.push(format!(
                    "maximum {k} usage per {ty} is {max_s}, but request is {r_s}"
                )),
                _ => {}
            },
        }
    }
    for (k, (ratio, ratio_s)) in list(&item["maxLimitRequestRatio"]) {
        let r = requests.get(&k).map(|(q, _)| q.milli_value()).unwrap_or(0);
        let l = limits.get(&k).map(|(q, _)| q.milli_value()).unwrap_or(0);
        if r == 0 {
            errors.push(format!("{k} max limit to request ratio per {ty} is {ratio_s}, but no request is specified or request is 0"));
        } else if l == 0 {
            errors.push(format!("{k} max limit to request ratio per {ty} is {ratio_s}, but no limit is specified or limit is 0"));
        } else {
            let observed = l as f64 / r as f64;
            if observed * 1000.0 > ratio.milli_value() as f64 {
                errors.push(format!("{k} max limit to request ratio per {ty} is {ratio_s}, but provided ratio is {observed:.6}"));
            }
        }
    }
}

fn validate_pod(pod: &Value, ranges: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    let spec = &pod["spec"];
    let all: Vec<&Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten())
        .collect();
    for item in items(ranges, "Container") {
        for c in &all {
            let r = &c["resources"];
            check(
                item,
                "Container",
                &list(&r["requests"]),
                &list(&r["limits"]),
                &mut errors,
            );
        }
    }
    let pod_items: Vec<&Value> = items(ranges, "Pod").collect();
    if !pod_items.is_empty() {
        let total = |key: &str| -> List {
            let mut sum: BTreeMap<String, Quantity> = BTreeMap::new();
            for c in spec["containers"].as_array().into_iter().flatten() {
                for (k, (q, _)) in list(&c["resources"][key]) {
                    let e = sum.entry(k).or_insert(Quantity::ZERO);
                    *e = e.checked_add(q).unwrap_or(*e);
                }
            }
            for c in spec["initContainers"].as_array().into_iter().flatten() {
                for (k, (q, _)) in list(&c["resources"][key]) {
                    let e = sum.entry(k).or_insert(Quantity::ZERO);
                    *e = (*e).max(q);
                }
            }
            sum.into_iter()
                .map(|(k, q)| {
                    let s = q.to_string();
                    (k, (q, s))
                })
                .collect()
        };
        let (requests, limits) = (total("requests"), total("limits"));
        for item in pod_items {
            check(item, "Pod", &requests, &limits, &mut errors);
        }
    }
    errors
}

fn validate_claim(pvc: &Value, ranges: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    let r = &pvc["spec"]["resources"];
    for item in items(ranges, "PersistentVolumeClaim") {
        // The claim's limits are not taken as input, as upstream.
        check(
            item,
            "PersistentVolumeClaim",
            &list(&r["requests"]),
            &List::new(),
            &mut errors,
        );
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(item: Value) -> Vec<Value> {
        vec![json!({"spec": {"limits": [item]}})]
    }

    #[test]
    fn defaults_fill_missing_resources() {
        let ranges = range(json!({"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"}, "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}));
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"limits": {"cpu": "50m"}, "requests": {"cpu": "50m"}}}]}});
        assert!(apply_defaults(&mut pod, &ranges));
        let a = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(a["limits"], json!({"cpu": "500m", "memory": "256Mi"}));
        assert_eq!(a["requests"], json!({"cpu": "100m", "memory": "128Mi"}));
        let b = &pod["spec"]["containers"][1]["resources"];
        assert_eq!(b["limits"], json!({"cpu": "50m", "memory": "256Mi"}));
        assert_eq!(b["requests"], json!({"cpu": "50m", "memory": "128Mi"}));
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu, memory request for container a; cpu, memory limit for container a; memory request for container b; memory limit for container b"
        );
    }

    #[test]
    fn constraints_in_upstream_words() {
        let ranges = range(
            json!({"type": "Container", "min": {"cpu": "100m"}, "max": {"cpu": "1"},
            "maxLimitRequestRatio": {"cpu": "2"}}),
        );
        let pod = |req: &str, lim: &str| {
            json!({"spec": {"containers": [{"name": "c",
            "resources": {"requests": {"cpu": req}, "limits": {"cpu": lim}}}]}})
        };
        assert!(validate_pod(&pod("500m", "1"), &ranges).is_empty());
        assert_eq!(
            validate_pod(&pod("50m", "100m"), &ranges),
            ["minimum cpu usage per Container is 100m, but request is 50m"]
        );
        assert_eq!(
            validate_pod(&pod("1", "2"), &ranges),
            ["maximum cpu usage per Container is 1, but limit is 2"]
        );
        assert_eq!(
            validate_pod(&pod("200m", "1"), &ranges),
            ["cpu max limit to request ratio per Container is 2, but provided ratio is 5.000000"]
        );
        let claims = range(
            json!({"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}),
        );
        let pvc = |s: &str| json!({"spec": {"resources": {"requests": {"storage": s}}}});
        assert!(validate_claim(&pvc("1Gi"), &claims).is_empty());
        assert_eq!(
            validate_claim(&pvc("5Gi"), &claims),
            ["maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"]
        );
    }
}
