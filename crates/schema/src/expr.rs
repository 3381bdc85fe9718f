//! CEL expressions outside a schema, as the admission plugins use them (webhook
//! `matchConditions`, ValidatingAdmissionPolicy `validations`, `variables`,
//! `messageExpression`): compiled once in the same environment as validation rules,
//! with the variables the caller names, and evaluated against JSON values under the
//! caller's cost limits.

use std::cell::OnceCell;

use cel::{Context, Program};
use serde_json::Value;

use crate::cel::{compile_with, error_text, to_val};
use crate::cost::{self, Size};

/// Why an expression did not compile or evaluate. The messages are upstream's (cel-go's
/// where the cause is the evaluation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpressionError {
    /// The expression does not parse or calls an undeclared function; the text starts
    /// with `compilation failed:`.
    #[error("{0}")]
    Compile(String),
    /// The cost of one evaluation, estimated from the actual values, exceeds the
    /// per-call limit: the expression is not run.
    #[error("operation cancelled: actual cost limit exceeded")]
    CostLimit,
    /// The budget shared by a request's expressions is spent.
    #[error("validation failed due to running out of cost budget, no further validation rules will be run")]
    BudgetExhausted,
    /// Evaluation failed (`no such key: x`, `division by zero`, …).
    #[error("{0}")]
    Evaluation(String),
    /// The result has no JSON form (a quantity or URL value, a function).
    #[error("expression result of type {0} cannot be used as a value")]
    Unrepresentable(String),
}

/// The values an expression is evaluated against, by variable name. Each value is
/// measured (for cost estimates) at most once, and only when an expression that uses it
/// is evaluated.
#[derive(Debug, Default, Clone)]
pub struct Bindings<'v> {
    vars: Vec<(String, &'v Value, OnceCell<Size>)>,
}

impl<'v> Bindings<'v> {
    /// No variables bound.
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds `name` to `value` (a later binding of the same name wins).
    pub fn bind(mut self, name: impl Into<String>, value: &'v Value) -> Self {
        let name = name.into();
        self.vars.retain(|(n, _, _)| *n != name);
        self.vars.push((name, value, OnceCell::new()));
        self
    }
}

/// A compiled CEL expression with named variables.
///
/// # Example
///
/// ```
/// use kcore_schema::{Bindings, Expression};
/// use serde_json::json;
///
/// let e = Expression::compile("object.spec.replicas <= params.max", &["object", "params"])?;
/// let object = json!({"spec": {"replicas": 3}});
/// let params = json!({"max": 5});
/// let b = Bindings::new().bind("object", &object).bind("params", &params);
/// let mut budget = 10_000_000;
/// assert!(e.evaluate_bool(&b, 1_000_000, &mut budget)?);
/// assert!(Expression::compile("object.nope(", &["object"]).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Expression {
    source: String,
    program: Program,
}

impl Expression {
    /// Compiles `source`; `variables` are the names it may use.
    pub fn compile(source: &str, variables: &[&str]) -> Result<Self, ExpressionError> {
        let program = compile_with(source, variables).map_err(ExpressionError::Compile)?;
        Ok(Self {
            source: source.to_owned(),
            program,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the expression names variable `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.program.references().has_variable(name)
    }

    /// Evaluates the expression. Its cost is first estimated from the bound values: over
    /// `per_call` it does not run ([`ExpressionError::CostLimit`]); otherwise the cost is
    /// taken from `budget`, and if that does not hold it, the expression does not run
    /// either ([`ExpressionError::BudgetExhausted`]).
    pub fn evaluate(
        &self,
        bindings: &Bindings<'_>,
        per_call: u64,
        budget: &mut u64,
    ) -> Result<Value, ExpressionError> {
        let value = self.run(bindings, per_call, budget)?;
        to_json(&value)
    }

    /// As [`Expression::evaluate`], for an expression that must give a bool (anything
    /// else is an evaluation error).
    pub fn evaluate_bool(
        &self,
        bindings: &Bindings<'_>,
        per_call: u64,
        budget: &mut u64,
    ) -> Result<bool, ExpressionError> {
        match self.run(bindings, per_call, budget)? {
            cel::Value::Bool(b) => Ok(b),
            other => Err(ExpressionError::Evaluation(format!(
                "expected a bool result, got {}",
                other.type_of()
            ))),
        }
    }

    fn run(
        &self,
        bindings: &Bindings<'_>,
        per_call: u64,
        budget: &mut u64,
    ) -> Result<cel::Value, ExpressionError> {
        // Only the variables the expression names are measured and converted.
        let references = self.program.references();
        let used: Vec<_> = bindings
            .vars
            .iter()
            .filter(|(n, _, _)| references.has_variable(n))
            .collect();
        let sizes = used
            .iter()
            .map(|(n, v, size)| (n.as_str(), size.get_or_init(|| Size::of_value(v)).clone()))
            .collect();
        let cost = cost::estimate_with(self.program.expression(), sizes);
        if cost > per_call as f64 {
            return Err(ExpressionError::CostLimit);
        }
        let cost = cost as u64;
        if cost > *budget {
            return Err(ExpressionError::BudgetExhausted);
        }
        *budget -= cost;
        let mut ctx = Context::with_env(crate::celib::env());
        for (name, v, _) in used {
            ctx.add_variable_as_val(name.clone(), to_val(v, None));
        }
        self.program
            .execute(&ctx)
            .map_err(|e| ExpressionError::Evaluation(error_text(&e)))
    }
}

/// A CEL result as JSON.
fn to_json(v: &cel::Value) -> Result<Value, ExpressionError> {
    use base64::Engine;
    use cel::objects::Key;
    Ok(match v {
        cel::Value::Null => Value::Null,
        cel::Value::Bool(b) => Value::Bool(*b),
        cel::Value::Int(i) => Value::from(*i),
        cel::Value::UInt(u) => Value::from(*u),
        cel::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| ExpressionError::Unrepresentable("double".to_owned()))?,
        cel::Value::String(s) => Value::String(s.to_string()),
        cel::Value::Bytes(b) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b.as_slice()))
        }
        cel::Value::List(items) => {
            Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        cel::Value::Map(m) => Value::Object(
            m.map
                .iter()
                .map(|(k, x)| {
                    let key = match k {
                        Key::String(s) => s.to_string(),
                        Key::Int(i) => i.to_string(),
                        Key::Uint(u) => u.to_string(),
                        Key::Bool(b) => b.to_string(),
                    };
                    Ok((key, to_json(x)?))
                })
                .collect::<Result<_, ExpressionError>>()?,
        ),
        other => {
            return Err(ExpressionError::Unrepresentable(
                other.type_of().to_string(),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compile_evaluate_and_errors() {
        let obj = json!({"metadata": {"name": "a", "labels": {"env": "prod"}}, "n": [1, 2, 3]});
        let b = Bindings::new()
            .bind("object", &obj)
            .bind("oldObject", &Value::Null);
        let mut budget = 1_000_000;
        let t = |src: &str, budget: &mut u64| {
            Expression::compile(src, &["object", "oldObject"])
                .unwrap()
                .evaluate(&b, 1_000_000, budget)
        };
        assert_eq!(
            t("object.metadata.labels.env == 'prod'", &mut budget),
            Ok(json!(true))
        );
        assert_eq!(t("oldObject == null", &mut budget), Ok(json!(true)));
        assert_eq!(
            t("object.n.map(x, x * 2)", &mut budget),
            Ok(json!([2, 4, 6]))
        );
        assert_eq!(
            t("{'a': object.metadata.name}", &mut budget),
            Ok(json!({"a": "a"}))
        );
        assert_eq!(
            t("object.metadata.missing", &mut budget),
            Err(ExpressionError::Evaluation("no such key: missing".into()))
        );
        let e = Expression::compile("object.", &["object"]).unwrap_err();
        assert!(e.to_string().starts_with("compilation failed:"), "{e}");
        let e = Expression::compile("nosuch(object)", &["object"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "compilation failed: undeclared reference to 'nosuch'"
        );
        let bool_err =
            Expression::compile("1", &[])
                .unwrap()
                .evaluate_bool(&b, 1_000_000, &mut budget);
        assert!(matches!(bool_err, Err(ExpressionError::Evaluation(_))));
        // Cost: a per-call limit, then the shared budget.
        let e = Expression::compile("object.n.all(x, object.n.all(y, x + y > 0))", &["object"])
            .unwrap();
        assert_eq!(
            e.evaluate(&b, 1, &mut budget),
            Err(ExpressionError::CostLimit)
        );
        let mut small = 1;
        assert_eq!(
            e.evaluate(&b, 1_000_000, &mut small),
            Err(ExpressionError::BudgetExhausted)
        );
        assert!(e.uses("object") && !e.uses("oldObject"));
    }
}
