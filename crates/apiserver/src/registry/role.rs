//! Roles (rbac.authorization.k8s.io/v1): rules validated as upstream's `ValidateRole`
//! (shared with ClusterRoles), the `Name`/`Created At` columns; granting rights one
//! does not hold is refused at admission (`crate::auth`).

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::col;

/// The served `Role` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::rbac::v1::Role,
    "roles",
    true,
    &[],
    NONE,
    &[],
    true,
    &RoleStrategy
);

/// Upstream's `ValidatePolicyRule` for each rule of `obj` (`namespaced`: a Role, whose
/// rules may not name non-resource URLs).
pub(crate) fn validate_rules(obj: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    let empty = |v: &Value| v.as_array().is_none_or(Vec::is_empty);
    for (i, r) in obj["rules"].as_array().into_iter().flatten().enumerate() {
        let at = |f: &str| format!("rules[{i}].{f}");
        if empty(&r["verbs"]) {
            causes.push(Cause::required_because(
                at("verbs"),
                "verbs must contain at least one value",
            ));
        }
        if !empty(&r["nonResourceURLs"]) {
            if namespaced {
                causes.push(Cause::invalid(
                    at("nonResourceURLs"),
                    &r["nonResourceURLs"],
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !empty(&r["apiGroups"]) || !empty(&r["resources"]) || !empty(&r["resourceNames"]) {
                causes.push(Cause::invalid(
                    at("nonResourceURLs"),
                    &r["nonResourceURLs"],
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if empty(&r["apiGroups"]) {
            causes.push(Cause::required_because(
                at("apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if empty(&r["resources"]) {
            causes.push(Cause::required_because(
                at("resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}

/// The columns of Roles and ClusterRoles.
pub(crate) fn columns() -> Vec<Value> {
    vec![col("Name", "string", 0), col("Created At", "date", 0)]
}

/// The cells of a Role or ClusterRole.
pub(crate) fn cells(o: &Value) -> Vec<Value> {
    vec![
        json!(o["metadata"]["name"]),
        o["metadata"]["creationTimestamp"].clone(),
    ]
}

/// The `Role` strategy.
pub(crate) struct RoleStrategy;

impl Strategy for RoleStrategy {
    fn kind(&self) -> &'static str {
        "Role"
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate_rules(obj, true, causes);
    }

    fn spec_of(&self, obj: &Value) -> Value {
        obj["rules"].clone()
    }

    fn name_rule(&self) -> crate::validate::NameRule {
        crate::validate::NameRule::PathSegment
    }

    fn settle_in_cache(&self) -> bool {
        true
    }

    fn table_columns(&self) -> Vec<Value> {
        columns()
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        cells(o)
    }
}
