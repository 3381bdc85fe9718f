//! CEL in admission: `matchConditions` of webhooks and ValidatingAdmissionPolicies
//! (upstream's `webhook/matchconditions` and `plugin/cel` packages), on
//! [`kcore_schema::Expression`].
//!
//! Expressions see `object`, `oldObject` (null on create and delete as upstream) and
//! `request` (the AdmissionRequest without its objects); policies add `params`,
//! `namespaceObject` and `variables`. The `authorizer` variable is not offered (kcore
//! has no authorizer to ask): an expression calling its functions does not compile, one
//! reading it fails when evaluated.

use kcore_schema::{Bindings, CostLimits, Expression, ExpressionError};
use serde_json::Value;

use crate::error::Cause;

/// The variables webhook match conditions may use.
pub(crate) const WEBHOOK_VARIABLES: &[&str] = &["object", "oldObject", "request"];

/// The variables of ValidatingAdmissionPolicy expressions.
pub(crate) const POLICY_VARIABLES: &[&str] = &[
    "object",
    "oldObject",
    "request",
    "params",
    "namespaceObject",
    "variables",
];

/// Most match conditions one webhook or policy may have.
const MAX_MATCH_CONDITIONS: usize = 64;

/// Upstream's `RuntimeCELCostBudget` and `PerCallLimit` (the schema crate's defaults).
pub(crate) fn limits() -> CostLimits {
    CostLimits::default()
}

/// An expression as compiled from a stored object: compile errors (of objects stored
/// before a rule was enforced) surface when it is evaluated, as upstream's.
#[derive(Debug)]
pub(crate) struct Compiled(Result<Expression, String>);

impl Compiled {
    pub(crate) fn new(source: &str, variables: &[&str]) -> Self {
        Compiled(Expression::compile(source, variables).map_err(|e| e.to_string()))
    }

    pub(crate) fn source(&self) -> &str {
        match &self.0 {
            Ok(e) => e.source(),
            Err(_) => "",
        }
    }

    /// Evaluates to a bool; errors in upstream's words (`expression '…' resulted in
    /// error: …`, `compilation error: …`, the cost messages).
    pub(crate) fn evaluate_bool(&self, b: &Bindings<'_>, budget: &mut u64) -> Result<bool, String> {
        let e = self
            .0
            .as_ref()
            .map_err(|e| format!("compilation error: {e}"))?;
        e.evaluate_bool(b, limits().per_call, budget)
            .map_err(|err| explain(e, err))
    }

    /// Evaluates to a JSON value, errors as [`Compiled::evaluate_bool`].
    pub(crate) fn evaluate(&self, b: &Bindings<'_>, budget: &mut u64) -> Result<Value, String> {
        let e = self
            .0
            .as_ref()
            .map_err(|e| format!("compilation error: {e}"))?;
        e.evaluate(b, limits().per_call, budget)
            .map_err(|err| explain(e, err))
    }
}

fn explain(e: &Expression, err: ExpressionError) -> String {
    match err {
        ExpressionError::BudgetExhausted => err.to_string(),
        other => format!("expression '{}' resulted in error: {other}", e.source()),
    }
}

/// Parsed `matchConditions`.
#[derive(Debug, Default)]
pub(crate) struct MatchConditions(Vec<(String, Compiled)>);

impl MatchConditions {
    pub(crate) fn parse(v: &Value, variables: &[&str]) -> Self {
        MatchConditions(
            v.as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or_default().to_owned(),
                        Compiled::new(c["expression"].as_str().unwrap_or_default(), variables),
                    )
                })
                .collect(),
        )
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Upstream's matcher: any condition false → no match; else any error → with
    /// `fail_open` no match, otherwise the error (one as is, several in brackets);
    /// else a match.
    pub(crate) fn matches(&self, b: &Bindings<'_>, fail_open: bool) -> Result<bool, String> {
        let mut budget = limits().per_object;
        let mut errors = Vec::new();
        for (name, c) in &self.0 {
            match c.evaluate_bool(b, &mut budget) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(condition = %name, "match condition is false");
                    return Ok(false);
                }
                Err(e) => errors.push(e),
            }
        }
        match errors.as_slice() {
            [] => Ok(true),
            _ if fail_open => Ok(false),
            [one] => Err(one.clone()),
            many => Err(format!("[{}]", many.join(", "))),
        }
    }
}

/// Upstream's `validateMatchConditions`: at most 64, names required, qualified and
/// unique, expressions required and compiling with `variables`.
pub(crate) fn validate_match_conditions(
    v: &Value,
    path: &str,
    variables: &[&str],
    causes: &mut Vec<Cause>,
) {
    let Some(list) = v.as_array() else { return };
    if list.len() > MAX_MATCH_CONDITIONS {
        causes.push(Cause {
            reason: "FieldValueTooMany",
            field: path.to_owned(),
            message: format!(
                "Too many: {}: must have at most {MAX_MATCH_CONDITIONS} items",
                list.len()
            ),
        });
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        validate_expression(
            &c["expression"],
            &format!("{p}.expression"),
            variables,
            causes,
        );
        match c["name"].as_str() {
            None | Some("") => causes.push(Cause::required(format!("{p}.name"))),
            Some(n) => {
                crate::validate::label_name(&c["name"], &format!("{p}.name"), causes);
                if !seen.insert(n) {
                    causes.push(Cause::duplicate(format!("{p}.name"), &c["name"]));
                }
            }
        }
    }
}

/// A required CEL expression at `path`: present, not blank, compiling.
pub(crate) fn validate_expression(
    v: &Value,
    path: &str,
    variables: &[&str],
    causes: &mut Vec<Cause>,
) {
    match v.as_str().map(str::trim) {
        None | Some("") => causes.push(Cause::required(path)),
        Some(src) => {
            if let Err(e) = Expression::compile(src, variables) {
                causes.push(Cause::invalid(path, v, &e.to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn causes(v: Value) -> Vec<String> {
        let mut c = Vec::new();
        validate_match_conditions(&v, "webhooks[0].matchConditions", WEBHOOK_VARIABLES, &mut c);
        c.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn match_conditions_validated_as_upstream() {
        assert!(causes(json!([{"name": "a", "expression": "true"}])).is_empty());
        let table = [
            (
                json!([{"name": "a", "expression": "true"}, {"name": "a", "expression": "true"}]),
                "webhooks[0].matchConditions[1].name: Duplicate value: \"a\"",
            ),
            (
                json!([{"name": "a b", "expression": "true"}]),
                "webhooks[0].matchConditions[0].name: Invalid value: \"a b\": name part must consist",
            ),
            (
                json!([{"expression": "true"}]),
                "webhooks[0].matchConditions[0].name: Required value",
            ),
            (
                json!([{"name": "a", "expression": "  "}]),
                "webhooks[0].matchConditions[0].expression: Required value",
            ),
            (
                json!([{"name": "a", "expression": "object.("}]),
                "webhooks[0].matchConditions[0].expression: Invalid value: \"object.(\": compilation failed",
            ),
            (
                json!([{"name": "a", "expression": "nosuch(object)"}]),
                "compilation failed: undeclared reference to 'nosuch'",
            ),
        ];
        for (v, want) in table {
            let got = causes(v.clone());
            assert!(
                got.iter().any(|g| g.contains(want)),
                "{v}: want {want:?} in {got:?}"
            );
        }
        let many: Vec<Value> = (0..65)
            .map(|i| json!({"name": format!("c{i}"), "expression": "true"}))
            .collect();
        assert_eq!(
            causes(json!(many)),
            vec!["webhooks[0].matchConditions: Too many: 65: must have at most 64 items"]
        );
    }

    #[test]
    fn false_wins_then_errors_follow_the_failure_policy() {
        let obj = json!({"metadata": {"name": "x", "labels": {"skip": "yes"}}});
        let request = json!({"operation": "CREATE"});
        let b = Bindings::new()
            .bind("object", &obj)
            .bind("oldObject", &Value::Null)
            .bind("request", &request);
        let conds = |list: Value| MatchConditions::parse(&list, WEBHOOK_VARIABLES);
        let t = json!({"name": "t", "expression": "object.metadata.name == 'x'"});
        let f = json!({"name": "f", "expression": "!has(object.metadata.labels.skip)"});
        let e = json!({"name": "e", "expression": "object.spec.replicas > 1"});
        assert_eq!(conds(json!([t])).matches(&b, false), Ok(true));
        assert_eq!(conds(json!([t, f])).matches(&b, false), Ok(false));
        assert_eq!(conds(json!([e, f])).matches(&b, false), Ok(false));
        assert_eq!(conds(json!([t, e])).matches(&b, true), Ok(false));
        assert_eq!(
            conds(json!([t, e])).matches(&b, false),
            Err(
                "expression 'object.spec.replicas > 1' resulted in error: no such key: spec"
                    .to_owned()
            )
        );
        let e2 = json!({"name": "e2", "expression": "request.x"});
        assert_eq!(
            conds(json!([e, e2])).matches(&b, false).unwrap_err(),
            "[expression 'object.spec.replicas > 1' resulted in error: no such key: spec, expression 'request.x' resulted in error: no such key: x]"
        );
    }
}
