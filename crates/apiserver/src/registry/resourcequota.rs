//! ResourceQuotas (v1, namespaced), as upstream's `pkg/registry/core/resourcequota`: a
//! new quota's status is cleared (the controller fills it), a plain update keeps it;
//! `spec.hard` holds non-negative quantities and the scopes are upstream's. The
//! columns of `kubectl get quota`: NAME, AGE, REQUEST, LIMIT, where REQUEST lists
//! `resource: used/hard` for the resources not named `limits.*` and LIMIT the others.
//!
//! The admission plugin and the controller are `admission::quota`.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, NONE};
use crate::table::{age, col};
use crate::validate;

/// The served `ResourceQuota` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::core::v1::ResourceQuota,
    "resourcequotas",
    true,
    &["quota"],
    NONE,
    &[Sub::Status],
    false,
    &ResourceQuotaStrategy
);

/// The scopes a quota may name.
const SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
    "VolumeAttributesClass",
];

/// The `ResourceQuota` strategy.
pub(crate) struct ResourceQuotaStrategy;

/// Checks a resource list: names are qualified names, amounts non-negative quantities.
pub(crate) fn resource_list(list: &Value, path: &str, causes: &mut Vec<Cause>) {
    for (k, v) in list.as_object().into_iter().flatten() {
        let p = format!("{path}[{k}]");
        if !validate::is_qualified_name(k) {
            causes.push(Cause::invalid(
                &p,
                &json!(k),
                "must be a standard resource type or fully qualified",
            ));
        }
        match v.as_str().map(kcore_k8s::Quantity::parse) {
            Some(Ok(q)) if q < kcore_k8s::Quantity::ZERO => {
                causes.push(Cause::invalid(&p, v, "must be greater than or equal to 0"))
            }
            Some(Ok(_)) => {}
            _ => causes.push(Cause::invalid(&p, v, "must be a quantity")),
        }
    }
}

impl Strategy for ResourceQuotaStrategy {
    fn kind(&self) -> &'static str {
        "ResourceQuota"
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        resource_list(&spec["hard"], "spec.hard", causes);
        resource_list(&obj["status"]["hard"], "status.hard", causes);
        resource_list(&obj["status"]["used"], "status.used", causes);
        for (i, s) in spec["scopes"].as_array().into_iter().flatten().enumerate() {
            validate::one_of(s, &format!("spec.scopes[{i}]"), SCOPES, causes);
        }
        let exprs = spec["scopeSelector"]["matchExpressions"].as_array();
        for (i, e) in exprs.into_iter().flatten().enumerate() {
            let p = format!("spec.scopeSelector.matchExpressions[{i}]");
            validate::one_of(&e["scopeName"], &format!("{p}.scopeName"), SCOPES, causes);
            validate::one_of(
                &e["operator"],
                &format!("{p}.operator"),
                &["In", "NotIn", "Exists", "DoesNotExist"],
                causes,
            );
            let has_values = e["values"].as_array().is_some_and(|v| !v.is_empty());
            match e["operator"].as_str() {
                Some("In" | "NotIn") if !has_values => causes.push(Cause::required_because(
                    format!("{p}.values"),
                    "must be at least one value when `operator` is 'In' or 'NotIn' for scope selector",
                )),
                Some("Exists" | "DoesNotExist") if has_values => causes.push(Cause::invalid(
                    format!("{p}.values"),
                    &e["values"],
                    "must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
                )),
                _ => {}
            }
        }
    }

    fn table_columns(&self) -> Vec<Value> {
        vec![
            col("Name", "string", 0),
            col("Age", "string", 0),
            col("Request", "string", 0),
            col("Limit", "string", 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let hard = o["status"]["hard"].as_object();
        let used = &o["status"]["used"];
        let (mut request, mut limit) = (Vec::new(), Vec::new());
        for (k, h) in hard.into_iter().flatten() {
            let u = used[k].as_str().unwrap_or("0");
            let cell = format!("{k}: {u}/{}", h.as_str().unwrap_or_default());
            if k.starts_with("limits.") {
                limit.push(cell);
            } else {
                request.push(cell);
            }
        }
        vec![
            json!(o["metadata"]["name"]),
            json!(age(&o["metadata"]["creationTimestamp"])),
            json!(request.join(", ")),
            json!(limit.join(", ")),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_and_columns() {
        let mut c = Vec::new();
        let q = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "-1", "cpu": "x"},
            "scopes": ["Forever"]}});
        ResourceQuotaStrategy.validate(&q, &mut c);
        let fields: Vec<_> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.hard[cpu]", "spec.hard[pods]", "spec.scopes[0]"]
        );
        let q = json!({"metadata": {"name": "q"}, "status": {
            "hard": {"pods": "2", "limits.cpu": "2", "requests.cpu": "1"},
            "used": {"pods": "1", "limits.cpu": "500m"}}});
        let cells = ResourceQuotaStrategy.table_cells(&q);
        assert_eq!(cells[2], "pods: 1/2, requests.cpu: 0/1");
        assert_eq!(cells[3], "limits.cpu: 500m/2");
    }
}
