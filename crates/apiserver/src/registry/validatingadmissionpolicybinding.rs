//! ValidatingAdmissionPolicyBindings (admissionregistration.k8s.io/v1): which requests a
//! ValidatingAdmissionPolicy validates (`matchResources` narrowing the policy's own
//! constraints), with which parameters (`paramRef`) and what a failure does
//! (`validationActions`: Deny, Warn, Audit). Defaults, upstream's validation and the
//! Table columns `NAME POLICYNAME PARAMREF AGE`.

use serde_json::{json, Value};

use super::validatingadmissionpolicy::{default_match_resources, validate_match_resources};
use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo};
use crate::selectors::LabelSelector;
use crate::table::{age, col};

/// The served `ValidatingAdmissionPolicyBinding` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
    "validatingadmissionpolicybindings",
    false,
    &[],
    &["api-extensions"],
    &[],
    false,
    &BindingStrategy
);

/// The strategy of `ValidatingAdmissionPolicyBinding`.
pub(crate) struct BindingStrategy;

const ACTIONS: &[&str] = &["Deny", "Warn", "Audit"];
const NOT_FOUND_ACTIONS: &[&str] = &["Allow", "Deny"];

impl Strategy for BindingStrategy {
    fn kind(&self) -> &'static str {
        "ValidatingAdmissionPolicyBinding"
    }

    fn defaults(&self, obj: &mut Value) {
        default_match_resources(&mut obj["spec"]["matchResources"]);
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        if spec["policyName"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required("spec.policyName"));
        }
        let actions = spec["validationActions"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        if actions.is_empty() {
            causes.push(Cause::required_because(
                "spec.validationActions",
                "at least one validation action is required",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in actions.iter().enumerate() {
            let p = format!("spec.validationActions[{i}]");
            if !a.as_str().is_some_and(|s| ACTIONS.contains(&s)) {
                causes.push(Cause::not_supported(p, a, ACTIONS));
            } else if !seen.insert(a.as_str()) {
                causes.push(Cause::duplicate(p, a));
            }
        }
        if seen.contains(&Some("Deny")) && seen.contains(&Some("Warn")) {
            causes.push(Cause::invalid(
                "spec.validationActions",
                &spec["validationActions"],
                "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
            ));
        }
        let pr = &spec["paramRef"];
        if pr.is_object() {
            let named = pr["name"].as_str().is_some_and(|n| !n.is_empty());
            if named && !pr["selector"].is_null() {
                causes.push(Cause::forbidden(
                    "spec.paramRef.name",
                    "name and selector are mutually exclusive",
                ));
            }
            if !named && pr["selector"].is_null() {
                causes.push(Cause::required_because(
                    "spec.paramRef",
                    "one of name or selector must be specified",
                ));
            }
            if !pr["selector"].is_null() {
                if let Err(e) = LabelSelector::from_object(&pr["selector"]) {
                    causes.push(Cause::invalid(
                        "spec.paramRef.selector",
                        &pr["selector"],
                        &e,
                    ));
                }
            }
            match &pr["parameterNotFoundAction"] {
                Value::Null => {
                    causes.push(Cause::required("spec.paramRef.parameterNotFoundAction"))
                }
                v if !v.as_str().is_some_and(|s| NOT_FOUND_ACTIONS.contains(&s)) => {
                    causes.push(Cause::not_supported(
                        "spec.paramRef.parameterNotFoundAction",
                        v,
                        NOT_FOUND_ACTIONS,
                    ))
                }
                _ => {}
            }
        }
        validate_match_resources(
            &spec["matchResources"],
            "spec.matchResources",
            false,
            causes,
        );
    }

    /// The admission chain reads bindings from the watch cache: a write returns once the
    /// next request sees it.
    fn settle_in_cache(&self) -> bool {
        true
    }

    fn table_columns(&self) -> Vec<Value> {
        vec![
            col("Name", "string", 0),
            col("PolicyName", "string", 0),
            col("ParamRef", "string", 0),
            col("Age", "string", 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let pr = &o["spec"]["paramRef"];
        let param_ref = match (
            pr["name"].as_str().filter(|n| !n.is_empty()),
            pr["namespace"].as_str(),
        ) {
            (Some(n), Some(ns)) if !ns.is_empty() => format!("{ns}/{n}"),
            (Some(n), _) => format!("*/{n}"),
            (None, _) if !pr["selector"].is_null() => {
                kcore_k8s::label_selector_string(&pr["selector"])
            }
            _ => "<unset>".to_owned(),
        };
        vec![
            json!(o["metadata"]["name"]),
            json!(o["spec"]["policyName"]),
            json!(param_ref),
            json!(age(&o["metadata"]["creationTimestamp"])),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: Value) -> Vec<String> {
        let mut obj = json!({"metadata": {"name": "b"}, "spec": spec});
        BindingStrategy.defaults(&mut obj);
        let mut causes = Vec::new();
        BindingStrategy.validate(&obj, &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn validation_cases() {
        assert!(check(json!({"policyName": "p", "validationActions": ["Deny"]})).is_empty());
        assert!(check(
            json!({"policyName": "p", "validationActions": ["Warn", "Audit"],
            "paramRef": {"name": "x", "parameterNotFoundAction": "Allow"}})
        )
        .is_empty());
        let table: &[(Value, &str)] = &[
            (json!({"validationActions": ["Deny"]}), "spec.policyName: Required value"),
            (json!({"policyName": "p"}), "spec.validationActions: Required value: at least one validation action is required"),
            (json!({"policyName": "p", "validationActions": ["Block"]}), "spec.validationActions[0]: Unsupported value: \"Block\""),
            (json!({"policyName": "p", "validationActions": ["Deny", "Deny"]}), "spec.validationActions[1]: Duplicate value: \"Deny\""),
            (json!({"policyName": "p", "validationActions": ["Deny", "Warn"]}), "must not contain both Deny and Warn"),
            (json!({"policyName": "p", "validationActions": ["Deny"], "paramRef": {"name": "x", "selector": {}, "parameterNotFoundAction": "Deny"}}), "spec.paramRef.name: Forbidden: name and selector are mutually exclusive"),
            (json!({"policyName": "p", "validationActions": ["Deny"], "paramRef": {"parameterNotFoundAction": "Deny"}}), "spec.paramRef: Required value: one of name or selector must be specified"),
            (json!({"policyName": "p", "validationActions": ["Deny"], "paramRef": {"name": "x"}}), "spec.paramRef.parameterNotFoundAction: Required value"),
            (json!({"policyName": "p", "validationActions": ["Deny"], "matchResources": {"resourceRules": [{"operations": ["CREATE"], "apiGroups": [], "apiVersions": ["v1"], "resources": ["pods"]}]}}), "spec.matchResources.resourceRules[0].apiGroups: Required value"),
        ];
        for (spec, want) in table {
            let got = check(spec.clone());
            assert!(
                got.iter().any(|g| g.contains(want)),
                "{spec}: want {want:?} in {got:?}"
            );
        }
    }

    #[test]
    fn param_ref_column() {
        let cell = |pr: Value| {
            BindingStrategy.table_cells(&json!({"metadata": {"name": "b"},
                "spec": {"policyName": "p", "paramRef": pr}}))[2]
                .clone()
        };
        assert_eq!(cell(json!({"name": "x", "namespace": "ns"})), "ns/x");
        assert_eq!(cell(json!({"name": "x"})), "*/x");
        assert_eq!(cell(Value::Null), "<unset>");
        assert_eq!(
            cell(json!({"selector": {"matchLabels": {"b": "1"},
                "matchExpressions": [{"key": "a", "operator": "In", "values": ["y", "x"]}]}})),
            "a in (x,y),b=1"
        );
    }
}
