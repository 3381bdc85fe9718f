//! ValidatingAdmissionPolicies (admissionregistration.k8s.io/v1): CEL validations the
//! admission chain (`crate::admission::policy`) runs in process for the requests their
//! bindings select. Defaults, upstream's validation (every expression compiles), the
//! status subresource (`status.typeChecking` stays empty: cel-rust has no type checker)
//! and the Table columns `NAME VALIDATIONS PARAMKIND AGE`.

use serde_json::{json, Value};

use super::webhookconfiguration::validate_rule;
use super::Strategy;
use crate::admission::conditions::{
    validate_expression, validate_match_conditions, POLICY_VARIABLES,
};
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub};
use crate::selectors::LabelSelector;
use crate::table::{age, col};

/// The served `ValidatingAdmissionPolicy` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy,
    "validatingadmissionpolicies",
    false,
    &[],
    &["api-extensions"],
    &[Sub::Status],
    false,
    &PolicyStrategy
);

/// The strategy of `ValidatingAdmissionPolicy`.
pub(crate) struct PolicyStrategy;

const FAILURE_POLICIES: &[&str] = &["Fail", "Ignore"];
const MATCH_POLICIES: &[&str] = &["Equivalent", "Exact"];
/// The reasons a validation may give (upstream's `supportedValidationPolicyReason`).
pub(crate) const REASONS: &[&str] = &[
    "Unauthorized",
    "Forbidden",
    "Invalid",
    "RequestEntityTooLarge",
];

fn set_default(obj: &mut Value, field: &str, v: Value) {
    if obj[field].is_null() {
        obj[field] = v;
    }
}

/// Upstream's `SetDefaults_MatchResources`: selectors match everything, `Equivalent`,
/// rule scope `*`.
pub(crate) fn default_match_resources(m: &mut Value) {
    if !m.is_object() {
        return;
    }
    set_default(m, "matchPolicy", json!("Equivalent"));
    set_default(m, "namespaceSelector", json!({}));
    set_default(m, "objectSelector", json!({}));
    for field in ["resourceRules", "excludeResourceRules"] {
        for r in m[field].as_array_mut().into_iter().flatten() {
            set_default(r, "scope", json!("*"));
        }
    }
}

/// Upstream's `validateMatchResources`; `rules_required` for a policy's
/// `matchConstraints`.
pub(crate) fn validate_match_resources(
    m: &Value,
    path: &str,
    rules_required: bool,
    causes: &mut Vec<Cause>,
) {
    if m.is_null() {
        return;
    }
    if let Some(p) = m["matchPolicy"].as_str() {
        if !MATCH_POLICIES.contains(&p) {
            causes.push(Cause::not_supported(
                format!("{path}.matchPolicy"),
                &m["matchPolicy"],
                MATCH_POLICIES,
            ));
        }
    }
    for sel in ["namespaceSelector", "objectSelector"] {
        if !m[sel].is_null() {
            if let Err(e) = LabelSelector::from_object(&m[sel]) {
                causes.push(Cause::invalid(format!("{path}.{sel}"), &m[sel], &e));
            }
        }
    }
    let rules = m["resourceRules"].as_array().map_or(&[][..], Vec::as_slice);
    if rules_required && rules.is_empty() {
        causes.push(Cause::required(format!("{path}.resourceRules")));
    }
    for field in ["resourceRules", "excludeResourceRules"] {
        for (i, r) in m[field].as_array().into_iter().flatten().enumerate() {
            let rp = format!("{path}.{field}[{i}]");
            validate_rule(r, &rp, causes);
            for (j, n) in r["resourceNames"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                if n.as_str().is_none_or(str::is_empty) {
                    causes.push(Cause::required(format!("{rp}.resourceNames[{j}]")));
                }
            }
        }
    }
}

/// Whether `s` is a CEL identifier (upstream checks variable names with this).
fn is_cel_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Strategy for PolicyStrategy {
    fn kind(&self) -> &'static str {
        "ValidatingAdmissionPolicy"
    }

    /// Upstream's `SetDefaults_ValidatingAdmissionPolicySpec`.
    fn defaults(&self, obj: &mut Value) {
        let spec = &mut obj["spec"];
        if !spec.is_object() {
            return;
        }
        set_default(spec, "failurePolicy", json!("Fail"));
        default_match_resources(&mut spec["matchConstraints"]);
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        if let Some(p) = spec["failurePolicy"].as_str() {
            if !FAILURE_POLICIES.contains(&p) {
                causes.push(Cause::not_supported(
                    "spec.failurePolicy",
                    &spec["failurePolicy"],
                    FAILURE_POLICIES,
                ));
            }
        }
        let pk = &spec["paramKind"];
        if pk.is_object() {
            match pk["apiVersion"].as_str() {
                None | Some("") => causes.push(Cause::required("spec.paramKind.apiVersion")),
                Some(gv) if gv.split('/').count() > 2 || gv.ends_with('/') => {
                    causes.push(Cause::invalid(
                        "spec.paramKind.apiVersion",
                        &pk["apiVersion"],
                        "unexpected GroupVersion string",
                    ))
                }
                Some(_) => {}
            }
            if pk["kind"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required("spec.paramKind.kind"));
            }
        }
        if spec["matchConstraints"].is_null() {
            causes.push(Cause::required("spec.matchConstraints"));
        } else {
            validate_match_resources(
                &spec["matchConstraints"],
                "spec.matchConstraints",
                true,
                causes,
            );
        }
        validate_match_conditions(
            &spec["matchConditions"],
            "spec.matchConditions",
            POLICY_VARIABLES,
            causes,
        );
        let mut names = std::collections::HashSet::new();
        for (i, v) in spec["variables"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let p = format!("spec.variables[{i}]");
            match v["name"].as_str() {
                None | Some("") => causes.push(Cause::required(format!("{p}.name"))),
                Some(n) if !is_cel_identifier(n) => causes.push(Cause::invalid(
                    format!("{p}.name"),
                    &v["name"],
                    "name is not a valid CEL identifier",
                )),
                Some(n) => {
                    if !names.insert(n) {
                        causes.push(Cause::duplicate(format!("{p}.name"), &v["name"]));
                    }
                }
            }
            validate_expression(
                &v["expression"],
                &format!("{p}.expression"),
                POLICY_VARIABLES,
                causes,
            );
        }
        let validations = spec["validations"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        let audits = spec["auditAnnotations"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        if validations.is_empty() && audits.is_empty() {
            causes.push(Cause::required_because(
                "spec.validations",
                "validations or auditAnnotations must contain at least one item",
            ));
        }
        for (i, v) in validations.iter().enumerate() {
            let p = format!("spec.validations[{i}]");
            validate_expression(
                &v["expression"],
                &format!("{p}.expression"),
                POLICY_VARIABLES,
                causes,
            );
            if let Some(m) = v["message"].as_str() {
                if m.contains('\n') {
                    causes.push(Cause::invalid(
                        format!("{p}.message"),
                        &v["message"],
                        "message must not contain line breaks",
                    ));
                } else if m.trim().is_empty() {
                    causes.push(Cause::invalid(
                        format!("{p}.message"),
                        &v["message"],
                        "message must be non-empty if specified",
                    ));
                }
            }
            if !v["messageExpression"].is_null() {
                validate_expression(
                    &v["messageExpression"],
                    &format!("{p}.messageExpression"),
                    POLICY_VARIABLES,
                    causes,
                );
            }
            if let Some(r) = v["reason"].as_str() {
                if !REASONS.contains(&r) {
                    causes.push(Cause::not_supported(
                        format!("{p}.reason"),
                        &v["reason"],
                        REASONS,
                    ));
                }
            }
        }
        for (i, a) in audits.iter().enumerate() {
            let p = format!("spec.auditAnnotations[{i}]");
            if a["key"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("{p}.key")));
            }
            validate_expression(
                &a["valueExpression"],
                &format!("{p}.valueExpression"),
                POLICY_VARIABLES,
                causes,
            );
        }
    }

    /// The admission chain reads policies from the watch cache: a write returns once the
    /// next request sees it.
    fn settle_in_cache(&self) -> bool {
        true
    }

    fn table_columns(&self) -> Vec<Value> {
        vec![
            col("Name", "string", 0),
            col("Validations", "integer", 0),
            col("ParamKind", "string", 0),
            col("Age", "string", 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let pk = &o["spec"]["paramKind"];
        let param_kind = if pk.is_object() {
            format!(
                "{}/{}",
                pk["apiVersion"].as_str().unwrap_or_default(),
                pk["kind"].as_str().unwrap_or_default()
            )
        } else {
            "<unset>".to_owned()
        };
        vec![
            json!(o["metadata"]["name"]),
            json!(o["spec"]["validations"].as_array().map_or(0, Vec::len)),
            json!(param_kind),
            json!(age(&o["metadata"]["creationTimestamp"])),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(spec: Value) -> Value {
        let mut s = json!({"matchConstraints": {"resourceRules": [{"operations": ["CREATE"],
            "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"]}]},
            "validations": [{"expression": "object.spec.replicas <= 5"}]});
        for (k, v) in spec.as_object().unwrap() {
            s[k] = v.clone();
        }
        json!({"metadata": {"name": "p"}, "spec": s})
    }

    fn check(spec: Value) -> Vec<String> {
        let mut obj = policy(spec);
        PolicyStrategy.defaults(&mut obj);
        let mut causes = Vec::new();
        PolicyStrategy.validate(&obj, &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_and_valid_policy() {
        let mut obj = policy(json!({}));
        PolicyStrategy.defaults(&mut obj);
        assert_eq!(obj["spec"]["failurePolicy"], "Fail");
        let m = &obj["spec"]["matchConstraints"];
        assert_eq!(m["matchPolicy"], "Equivalent");
        assert_eq!(m["namespaceSelector"], json!({}));
        assert_eq!(m["resourceRules"][0]["scope"], "*");
        assert!(check(json!({})).is_empty());
    }

    #[test]
    fn validation_cases() {
        let table: &[(Value, &str)] = &[
            (json!({"failurePolicy": "Maybe"}), "spec.failurePolicy: Unsupported value: \"Maybe\""),
            (json!({"matchConstraints": null}), "spec.matchConstraints: Required value"),
            (json!({"matchConstraints": {}}), "spec.matchConstraints.resourceRules: Required value"),
            (json!({"validations": []}), "spec.validations: Required value: validations or auditAnnotations must contain at least one item"),
            (json!({"validations": [{"expression": "object.("}]}), "spec.validations[0].expression: Invalid value: \"object.(\": compilation failed"),
            (json!({"validations": [{"expression": ""}]}), "spec.validations[0].expression: Required value"),
            (json!({"validations": [{"expression": "true", "message": "a\nb"}]}), "message must not contain line breaks"),
            (json!({"validations": [{"expression": "true", "reason": "Teapot"}]}), "spec.validations[0].reason: Unsupported value: \"Teapot\""),
            (json!({"validations": [{"expression": "true", "messageExpression": "'a' +"}]}), "spec.validations[0].messageExpression: Invalid value"),
            (json!({"variables": [{"name": "1x", "expression": "1"}]}), "spec.variables[0].name: Invalid value: \"1x\": name is not a valid CEL identifier"),
            (json!({"variables": [{"name": "x", "expression": "1"}, {"name": "x", "expression": "2"}]}), "spec.variables[1].name: Duplicate value: \"x\""),
            (json!({"paramKind": {"kind": "ConfigMap"}}), "spec.paramKind.apiVersion: Required value"),
            (json!({"matchConditions": [{"name": "a", "expression": "nosuch()"}]}), "spec.matchConditions[0].expression: Invalid value"),
            (json!({"matchConstraints": {"matchPolicy": "Fuzzy", "resourceRules": [{"operations": ["PATCH"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}}), "spec.matchConstraints.resourceRules[0].operations[0]: Unsupported value"),
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
    fn table_cells() {
        let mut p = policy(json!({"paramKind": {"apiVersion": "v1", "kind": "ConfigMap"}}));
        p["metadata"]["creationTimestamp"] = json!("2020-01-01T00:00:00Z");
        let cells = PolicyStrategy.table_cells(&p);
        assert_eq!((&cells[1], &cells[2]), (&json!(1), &json!("v1/ConfigMap")));
        assert_eq!(PolicyStrategy.table_cells(&policy(json!({})))[2], "<unset>");
    }
}
