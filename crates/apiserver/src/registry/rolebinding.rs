//! RoleBindings (rbac.authorization.k8s.io/v1): the role reference and subjects
//! validated as upstream's `ValidateRoleBinding` (shared with ClusterRoleBindings), the
//! reference immutable, the `Role` column and the wide subject columns; binding a role
//! one could not grant is refused at admission (`crate::auth`).

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::{age, col};

/// The served `RoleBinding` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::rbac::v1::RoleBinding,
    "rolebindings",
    true,
    &[],
    NONE,
    &[],
    true,
    &RoleBindingStrategy
);

const GROUP: &str = "rbac.authorization.k8s.io";

/// Upstream's binding rules: the role reference (`kinds` it may name) and the subjects
/// (`namespaced`: a RoleBinding, whose ServiceAccount subjects default to its namespace).
pub(crate) fn validate_binding(
    obj: &Value,
    kinds: &[&str],
    namespaced: bool,
    causes: &mut Vec<Cause>,
) {
    let r = &obj["roleRef"];
    if r["apiGroup"] != GROUP {
        causes.push(Cause::not_supported(
            "roleRef.apiGroup",
            &r["apiGroup"],
            &[GROUP],
        ));
    }
    if !kinds.iter().any(|k| r["kind"] == *k) {
        causes.push(Cause::not_supported("roleRef.kind", &r["kind"], kinds));
    }
    if r["name"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required("roleRef.name"));
    }
    for (i, s) in obj["subjects"].as_array().into_iter().flatten().enumerate() {
        let at = |f: &str| format!("subjects[{i}].{f}");
        if s["name"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(at("name")));
        }
        match s["kind"].as_str().unwrap_or_default() {
            "ServiceAccount" => {
                if !s["apiGroup"].as_str().is_none_or(str::is_empty) {
                    causes.push(Cause::not_supported(at("apiGroup"), &s["apiGroup"], &[""]));
                }
                if !namespaced && s["namespace"].as_str().is_none_or(str::is_empty) {
                    causes.push(Cause::required(at("namespace")));
                }
            }
            "User" | "Group" => {
                if s["apiGroup"] != GROUP {
                    causes.push(Cause::not_supported(
                        at("apiGroup"),
                        &s["apiGroup"],
                        &[GROUP],
                    ));
                }
            }
            _ => causes.push(Cause::not_supported(
                at("kind"),
                &s["kind"],
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
}

/// Refuses a change of the role reference, as upstream.
pub(crate) fn validate_ref_unchanged(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    if new["roleRef"] != old["roleRef"] {
        causes.push(Cause::invalid(
            "roleRef",
            &new["roleRef"],
            "cannot change roleRef",
        ));
    }
}

/// Fills in the API group of User and Group subjects, as upstream's defaults.
pub(crate) fn default_subjects(obj: &mut Value) {
    for s in obj["subjects"].as_array_mut().into_iter().flatten() {
        if matches!(s["kind"].as_str(), Some("User" | "Group")) && s["apiGroup"].is_null() {
            s["apiGroup"] = json!(GROUP);
        }
    }
    if obj["roleRef"].is_object() && obj["roleRef"]["apiGroup"].is_null() {
        obj["roleRef"]["apiGroup"] = json!(GROUP);
    }
}

/// The columns of RoleBindings and ClusterRoleBindings.
pub(crate) fn columns() -> Vec<Value> {
    let s = "string";
    vec![
        col("Name", s, 0),
        col("Role", s, 0),
        col("Age", s, 0),
        col("Users", s, 1),
        col("Groups", s, 1),
        col("ServiceAccounts", s, 1),
    ]
}

/// The cells of a RoleBinding or ClusterRoleBinding.
pub(crate) fn cells(o: &Value) -> Vec<Value> {
    let r = &o["roleRef"];
    let role = format!(
        "{}/{}",
        r["kind"].as_str().unwrap_or_default(),
        r["name"].as_str().unwrap_or_default()
    );
    let of = |kind: &str| -> String {
        let v: Vec<String> = o["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["kind"] == kind)
            .map(|s| {
                let n = s["name"].as_str().unwrap_or_default();
                match s["namespace"].as_str() {
                    Some(ns) if kind == "ServiceAccount" => format!("{ns}:{n}"),
                    _ => n.to_owned(),
                }
            })
            .collect();
        v.join(", ")
    };
    vec![
        json!(o["metadata"]["name"]),
        json!(role),
        json!(age(&o["metadata"]["creationTimestamp"])),
        json!(of("User")),
        json!(of("Group")),
        json!(of("ServiceAccount")),
    ]
}

/// The `RoleBinding` strategy.
pub(crate) struct RoleBindingStrategy;

impl Strategy for RoleBindingStrategy {
    fn kind(&self) -> &'static str {
        "RoleBinding"
    }

    fn defaults(&self, obj: &mut Value) {
        default_subjects(obj);
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate_binding(obj, &["Role", "ClusterRole"], true, causes);
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        validate_ref_unchanged(new, old, causes);
    }

    fn spec_of(&self, obj: &Value) -> Value {
        json!([obj["roleRef"], obj["subjects"]])
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
