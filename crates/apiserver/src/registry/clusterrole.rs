//! ClusterRoles (rbac.authorization.k8s.io/v1): rules validated as Roles' (non-resource
//! URLs allowed), an `aggregationRule`'s selectors checked; the aggregation itself is
//! `crate::auth`'s controller.

use serde_json::Value;

use super::role::{cells, columns, validate_rules};
use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::selectors::LabelSelector;

/// The served `ClusterRole` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::rbac::v1::ClusterRole,
    "clusterroles",
    false,
    &[],
    NONE,
    &[],
    true,
    &ClusterRoleStrategy
);

/// The `ClusterRole` strategy.
pub(crate) struct ClusterRoleStrategy;

impl Strategy for ClusterRoleStrategy {
    fn kind(&self) -> &'static str {
        "ClusterRole"
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate_rules(obj, false, causes);
        let rule = &obj["aggregationRule"];
        if rule.is_object() {
            let selectors = rule["clusterRoleSelectors"].as_array();
            if selectors.is_none_or(Vec::is_empty) {
                causes.push(Cause::required_because(
                    "aggregationRule.clusterRoleSelectors",
                    "at least one clusterRoleSelector required if aggregationRule is non-nil",
                ));
            }
            for (i, s) in selectors.into_iter().flatten().enumerate() {
                if let Err(e) = LabelSelector::from_object(s) {
                    causes.push(Cause::invalid(
                        format!("aggregationRule.clusterRoleSelectors[{i}]"),
                        s,
                        &e,
                    ));
                }
            }
        }
    }

    fn spec_of(&self, obj: &Value) -> Value {
        serde_json::json!([obj["rules"], obj["aggregationRule"]])
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
