//! ClusterRoleBindings (rbac.authorization.k8s.io/v1): validated as RoleBindings, but
//! they may name only ClusterRoles and their ServiceAccount subjects need a namespace.

use serde_json::{json, Value};

use super::rolebinding::{
    cells, columns, default_subjects, validate_binding, validate_ref_unchanged,
};
use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};

/// The served `ClusterRoleBinding` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::rbac::v1::ClusterRoleBinding,
    "clusterrolebindings",
    false,
    &[],
    NONE,
    &[],
    true,
    &ClusterRoleBindingStrategy
);

/// The `ClusterRoleBinding` strategy.
pub(crate) struct ClusterRoleBindingStrategy;

impl Strategy for ClusterRoleBindingStrategy {
    fn kind(&self) -> &'static str {
        "ClusterRoleBinding"
    }

    fn defaults(&self, obj: &mut Value) {
        default_subjects(obj);
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate_binding(obj, &["ClusterRole"], false, causes);
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
