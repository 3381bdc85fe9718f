//! `x-kubernetes-validations`: CEL rules compiled once per schema and evaluated against
//! each value, as apiextensions-apiserver's `schema/cel` package does.

use cel::common::types::CelOptional;
use cel::common::value::Val;
use cel::{Context, Program};
use serde_json::Value;

use crate::cost::{self, Size};
use crate::error::{join_path, ErrorType, FieldError};
use crate::schema::Node;

/// Upstream's `getCostErrorMessage`.
pub(crate) fn cost_error_message(what: &str, cost: f64, limit: u64) -> String {
    let factor = cost / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_owned()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!("{what} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)")
}

/// Cost limits for CEL rules. The defaults are upstream's.
#[derive(Clone, Debug)]
pub struct CostLimits {
    /// Largest estimated cost of one rule at schema compile time
    /// (upstream's `StaticEstimatedCostLimit`, 10,000,000).
    pub per_expression_estimate: u64,
    /// Largest estimated cost of all rules of a schema, each multiplied by the number of
    /// times it may run (upstream's `StaticEstimatedCRDCostLimit`, 100,000,000).
    pub per_schema_estimate: u64,
    /// Largest cost of one rule evaluation (upstream's `PerCallLimit`, 1,000,000).
    pub per_call: u64,
    /// Largest cost of all rule evaluations on one object (upstream's
    /// `RuntimeCELCostBudget`, 10,000,000).
    pub per_object: u64,
}

impl Default for CostLimits {
    fn default() -> Self {
        CostLimits {
            per_expression_estimate: 10_000_000,
            per_schema_estimate: 100_000_000,
            per_call: 1_000_000,
            per_object: 10_000_000,
        }
    }
}

/// Below this estimated cost a rule is charged its static estimate instead of measuring
/// the value (measuring costs a walk over the value).
const CHEAP_RULE: f64 = 100.0;

/// One compiled `x-kubernetes-validations` entry.
#[derive(Debug)]
pub(crate) struct Rule {
    pub source: String,
    pub message: Option<String>,
    pub message_expression: Option<Program>,
    pub reason: ErrorType,
    /// `fieldPath`, normalized to a relative field path (`spec.x`, `[key]`).
    pub field_path: String,
    pub program: Program,
    pub uses_old_self: bool,
    pub optional_old_self: bool,
    /// Estimated cost of one evaluation, from the schema.
    pub estimated_cost: u64,
    /// Position in the node's `x-kubernetes-validations`.
    pub index: usize,
}

fn compile_source(src: &str) -> Result<Program, String> {
    compile_with(src, &["self", "oldSelf"])
}

/// Compiles `src` in the shared environment; `variables` are the names it may bind (a
/// call on one of them, `self.f()`, is a member call, not a namespaced function).
pub(crate) fn compile_with(src: &str, variables: &[&str]) -> Result<Program, String> {
    let program = crate::celib::env()
        .compile(src)
        .map_err(|e| format!("compilation failed: {e}"))?;
    let mut bound = variables.to_vec();
    if let Some(name) = undeclared_function(program.expression(), &mut bound) {
        return Err(format!(
            "compilation failed: undeclared reference to '{name}'"
        ));
    }
    Ok(program)
}

/// The first function the rule calls that the environment does not declare.
///
/// cel-rust has no checker, so each call is probed once: `null.f(null)` (or `f(null)`)
/// with the call's arity fails with "undeclared reference" only when no overload of `f`
/// of that call style exists; any other failure means `f` exists.
fn undeclared_function<'a>(expr: &'a cel::IdedExpr, bound: &mut Vec<&'a str>) -> Option<String> {
    use cel::common::ast::{EntryExpr, Expr};
    match &expr.expr {
        Expr::Call(call) => {
            let name = call.func_name.as_str();
            let operator = name.starts_with(['_', '@', '!', '-']);
            let namespaced = matches!(
                call.target.as_deref().map(|t| &t.expr),
                Some(Expr::Ident(id)) if !bound.contains(&id.as_str())
            );
            if !operator
                && !namespaced
                && !function_declared(name, call.target.is_some(), call.args.len())
            {
                return Some(name.to_owned());
            }
            call.target
                .iter()
                .map(|t| &**t)
                .chain(call.args.iter())
                .find_map(|e| undeclared_function(e, bound))
        }
        Expr::Select(sel) => undeclared_function(&sel.operand, bound),
        Expr::List(l) => l
            .elements
            .iter()
            .find_map(|e| undeclared_function(e, bound)),
        Expr::Map(m) => m.entries.iter().find_map(|e| match &e.expr {
            EntryExpr::MapEntry(me) => undeclared_function(&me.key, bound)
                .or_else(|| undeclared_function(&me.value, bound)),
            EntryExpr::StructField(f) => undeclared_function(&f.value, bound),
        }),
        Expr::Struct(st) => st.entries.iter().find_map(|e| match &e.expr {
            EntryExpr::StructField(f) => undeclared_function(&f.value, bound),
            EntryExpr::MapEntry(me) => undeclared_function(&me.value, bound),
        }),
        Expr::Comprehension(c) => {
            let depth = bound.len();
            let found = undeclared_function(&c.iter_range, bound)
                .or_else(|| undeclared_function(&c.accu_init, bound));
            if found.is_some() {
                return found;
            }
            bound.push(c.iter_var.as_str());
            if let Some(v) = &c.iter_var2 {
                bound.push(v.as_str());
            }
            bound.push(c.accu_var.as_str());
            let found = [&c.loop_cond, &c.loop_step, &c.result]
                .into_iter()
                .find_map(|e| undeclared_function(e, bound));
            bound.truncate(depth);
            found
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => None,
    }
}

/// Whether `name` is declared for a call of this style and arity (memoized).
fn function_declared(name: &str, member: bool, arity: usize) -> bool {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    /// (name, member call, arity) → declared.
    type Seen = HashMap<(String, bool, usize), bool>;
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    let key = (name.to_owned(), member, arity);
    let seen = SEEN.get_or_init(Default::default);
    if let Some(&known) = seen.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return known;
    }
    let args = vec!["null"; arity].join(", ");
    let probe = if member {
        format!("null.{name}({args})")
    } else {
        format!("{name}({args})")
    };
    let env = crate::celib::env();
    let declared = match env.compile(&probe) {
        // a name the parser will not take as a function: leave it to evaluation
        Err(_) => true,
        Ok(p) => !matches!(
            p.execute(&Context::with_env(env.clone())),
            Err(cel::ExecutionError::UndeclaredReference(n)) if n.as_str() == name
        ),
    };
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, declared);
    declared
}

impl Rule {
    /// Compiles rule `r` of the node `n` (whose children are compiled already).
    pub(crate) fn compile(
        r: &Value,
        index: usize,
        n: &Node,
        path: &str,
    ) -> Result<Rule, Vec<FieldError>> {
        let mut errs = Vec::new();
        let get = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
        let source = get("rule").unwrap_or_default();
        let rule_path = join_path(path, "rule");
        if source.trim().is_empty() {
            errs.push(FieldError::required(&rule_path, ""));
        }
        let message = get("message");
        if let Some(m) = &message {
            if m.contains('\n') {
                errs.push(FieldError::invalid(
                    &join_path(path, "message"),
                    Value::String(m.clone()),
                    "message must not contain line breaks",
                ));
            }
            if m.trim().is_empty() {
                errs.push(FieldError::invalid(
                    &join_path(path, "message"),
                    Value::String(m.clone()),
                    "message must be non-empty if specified",
                ));
            }
        }
        let reason = match get("reason") {
            None => ErrorType::Invalid,
            Some(x) => ErrorType::from_rule_reason(&x).unwrap_or_else(|| {
                errs.push(FieldError::new(
                    join_path(path, "reason"),
                    ErrorType::NotSupported,
                    crate::schema::supported(&[
                        "FieldValueDuplicate",
                        "FieldValueForbidden",
                        "FieldValueInvalid",
                        "FieldValueRequired",
                    ]),
                    Some(Value::String(x.clone())),
                ));
                ErrorType::Invalid
            }),
        };
        let field_path = match get("fieldPath") {
            None => String::new(),
            Some(fp) => match normalize_field_path(&fp, n) {
                Ok(p) => p,
                Err(e) => {
                    errs.push(FieldError::invalid(
                        &join_path(path, "fieldPath"),
                        Value::String(fp.clone()),
                        format!("fieldPath must be a valid path: {e}"),
                    ));
                    String::new()
                }
            },
        };
        let optional_old_self = r
            .get("optionalOldSelf")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let message_expression = match get("messageExpression") {
            None => None,
            Some(src) => match compile_source(&src) {
                Ok(p) => Some(p),
                Err(e) => {
                    errs.push(FieldError::invalid(
                        &join_path(path, "messageExpression"),
                        Value::String(src.clone()),
                        format!("messageExpression {e}"),
                    ));
                    None
                }
            },
        };
        let program = if source.trim().is_empty() {
            None
        } else {
            match compile_source(&source) {
                Ok(p) => Some(p),
                Err(e) => {
                    errs.push(FieldError::invalid(
                        &rule_path,
                        Value::String(source.clone()),
                        e,
                    ));
                    None
                }
            }
        };
        let Some(program) = program else {
            return Err(errs);
        };
        let uses_old_self = program.references().has_variable("oldSelf");
        if optional_old_self && !uses_old_self {
            errs.push(FieldError::invalid(
                &join_path(path, "optionalOldSelf"),
                Value::Bool(true),
                "may not be set if oldSelf is not used in rule",
            ));
        }
        let size = Size::of_schema(n);
        let estimate = cost::estimate(program.expression(), &size)
            + message_expression
                .as_ref()
                .map_or(0.0, |m| cost::estimate(m.expression(), &size));
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Rule {
            source,
            message,
            message_expression,
            reason,
            field_path,
            program,
            uses_old_self,
            optional_old_self,
            estimated_cost: estimate.min(u64::MAX as f64) as u64,
            index,
        })
    }

    /// `message`, or upstream's default `failed rule: <rule>`.
    fn message_or_default(&self) -> String {
        match &self.message {
            Some(m) => m.trim().to_owned(),
            None => format!("failed rule: {}", self.source.trim()),
        }
    }

    /// What upstream prints of a rule in errors: its message, else its source.
    fn error_string(&self) -> String {
        match &self.message {
            Some(m) => m.trim().to_owned(),
            None => self.source.trim().to_owned(),
        }
    }
}

/// Normalizes a rule's `fieldPath` (`.spec.x`, `.labels['a.b']`) against the schema it
/// is relative to, as upstream's `ValidFieldPath`.
fn normalize_field_path(fp: &str, n: &Node) -> Result<String, String> {
    let mut out = String::new();
    let mut node = Some(n);
    let mut rest = fp;
    if rest.is_empty() {
        return Err("unexpected end of JSON path".to_owned());
    }
    while !rest.is_empty() {
        let (name, bracket) = if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let name = &r[..end];
            if name.is_empty() {
                return Err("unexpected end of JSON path".to_owned());
            }
            rest = &r[end..];
            (name.to_owned(), false)
        } else if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']").ok_or("expected ] but got end of path")?;
            let name = &r[..end];
            rest = &r[end + 2..];
            (name.to_owned(), true)
        } else if rest.starts_with('[') {
            return Err("array notation is not allowed".to_owned());
        } else {
            return Err(format!("expected [ or . but got: {rest}"));
        };
        let Some(cur) = node else {
            return Err("does not refer to a valid field".to_owned());
        };
        let child = cur.properties.get(&name);
        let additional = match &cur.additional {
            Some(crate::schema::Additional::Schema(s)) => Some(&**s),
            _ => None,
        };
        node = match (child, additional) {
            (Some(c), _) => Some(c),
            (None, Some(a)) => {
                out.push_str(&format!("[{name}]"));
                node = Some(a);
                continue;
            }
            (None, None) if cur.preserve_unknown => None,
            (None, None) => return Err("does not refer to a valid field".to_owned()),
        };
        if bracket && name.contains('.') {
            out.push_str(&format!("[{name}]"));
        } else {
            out = join_path(&out, &name);
        }
    }
    Ok(out)
}

/// Converts a JSON value to a CEL value borrowing its strings, by its schema: `number`
/// fields are doubles even when integral, `integer` fields ints, `format: byte` strings
/// bytes.
pub(crate) fn to_val<'v>(v: &'v Value, n: Option<&Node>) -> Box<dyn Val + 'v> {
    use cel::common::types::{
        CelBool, CelBytes, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString,
        CelUInt,
    };
    match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(num) => {
            let as_double = n.is_some_and(|n| n.ty.as_deref() == Some("number"));
            match (num.as_i64(), num.as_u64()) {
                (Some(i), _) if !as_double => Box::new(CelInt::from(i)),
                (None, Some(u)) if !as_double => Box::new(CelUInt::from(u)),
                _ => Box::new(CelDouble::from(num.as_f64().unwrap_or(0.0))),
            }
        }
        Value::String(s) => {
            use base64::Engine;
            let bytes = n
                .filter(|n| n.format.as_deref() == Some("byte"))
                .and_then(|_| base64::engine::general_purpose::STANDARD.decode(s).ok());
            match bytes {
                Some(b) => Box::new(CelBytes::from(b)),
                None => Box::new(CelString::from(s.as_str())),
            }
        }
        Value::Array(items) => {
            let item = n.and_then(|n| n.items.as_deref());
            let list: Vec<Box<dyn Val + 'v>> = items.iter().map(|x| to_val(x, item)).collect();
            Box::new(CelList::from(list))
        }
        Value::Object(map) => {
            let m: std::collections::HashMap<CelMapKey<'v>, Box<dyn Val + 'v>> = map
                .iter()
                .map(|(k, x)| {
                    (
                        CelMapKey::from(k.as_str()),
                        to_val(x, n.and_then(|n| n.property(k))),
                    )
                })
                .collect();
            Box::new(CelMap::from(m))
        }
    }
}

/// How rule evaluation ended for one value.
pub(crate) enum Budget {
    /// Budget left for the rest of the object.
    Left(u64),
    /// Spent: no further rules run.
    Exhausted,
}

/// Runs the rules of `n` against `v` (at `path`), charging `budget`.
pub(crate) fn run_rules<'v>(
    n: &Node,
    v: &'v Value,
    old: Option<&'v Value>,
    path: &str,
    limits: &CostLimits,
    budget: &mut Budget,
    errs: &mut Vec<FieldError>,
) {
    if n.rules.is_empty() {
        return;
    }
    let type_value = Value::String(n.type_name().to_owned());
    let mut actual: Option<Size> = None;
    // One context per node: `self`, and `oldSelf` when there is an old value; rules
    // with optionalOldSelf bind their optional in a child scope.
    let mut base: Option<Context<'_, 'v>> = None;
    for rule in &n.rules {
        let Budget::Left(left) = *budget else {
            return;
        };
        if rule.uses_old_self && old.is_none() && !rule.optional_old_self {
            continue;
        }
        // ratcheting: a rule that does not look at oldSelf is not re-run on an unchanged value
        if !rule.uses_old_self && old == Some(v) {
            continue;
        }
        // Charge the rule; measure the value when the static estimate is not small.
        let mut cost = rule.estimated_cost as f64;
        if cost > CHEAP_RULE {
            let size = actual.get_or_insert_with(|| {
                let s = Size::of_value(v);
                match old {
                    Some(o) => merge_sizes(s, Size::of_value(o)),
                    None => s,
                }
            });
            cost = cost::estimate(rule.program.expression(), size)
                + rule
                    .message_expression
                    .as_ref()
                    .map_or(0.0, |m| cost::estimate(m.expression(), size));
            if cost > limits.per_call as f64 {
                tracing::debug!(rule = %rule.source, path, cost, "CEL rule not run: its cost exceeds the per-call limit");
                errs.push(FieldError::invalid(
                    path,
                    type_value.clone(),
                    format!("'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: {}", rule.error_string()),
                ));
                *budget = Budget::Exhausted;
                return;
            }
        }
        let cost = cost as u64;
        if cost > left {
            errs.push(FieldError::invalid(
                path,
                type_value.clone(),
                "validation failed due to running out of cost budget, no further validation rules will be run",
            ));
            *budget = Budget::Exhausted;
            return;
        }
        *budget = Budget::Left(left - cost);

        let base_ctx: &Context<'_, 'v> = base.get_or_insert_with(|| {
            let mut c = Context::with_env(crate::celib::env());
            c.add_variable_as_val("self", to_val(v, Some(n)));
            let plain_old_self = n
                .rules
                .iter()
                .any(|r| r.uses_old_self && !r.optional_old_self);
            if let (Some(o), true) = (old, plain_old_self) {
                c.add_variable_as_val("oldSelf", to_val(o, Some(n)));
            }
            c
        });
        let optional_scope;
        let ctx = if rule.uses_old_self && rule.optional_old_self {
            let mut child = base_ctx.new_inner_scope();
            let bound = match old {
                Some(o) => CelOptional::of(to_val(o, Some(n))),
                None => CelOptional::none(),
            };
            child.add_variable_as_val("oldSelf", Box::new(bound));
            optional_scope = child;
            &optional_scope
        } else {
            base_ctx
        };
        let field = join_path(path, &rule.field_path);
        match rule.program.execute(ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => {
                let detail = rule
                    .message_expression
                    .as_ref()
                    .and_then(|m| match m.execute(ctx) {
                        Ok(cel::Value::String(s)) => {
                            let s = s.trim();
                            (!s.is_empty() && !s.contains('\n')).then(|| s.to_owned())
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| rule.message_or_default());
                let value = match n.ty.as_deref() {
                    Some("object" | "array") => None,
                    _ => Some(v.clone()),
                };
                let e = match rule.reason {
                    ErrorType::Forbidden => FieldError::forbidden(&field, detail),
                    ErrorType::Required => FieldError::required(&field, detail),
                    ErrorType::Duplicate => FieldError::new(field, ErrorType::Duplicate, "", value),
                    _ => FieldError::new(field, ErrorType::Invalid, detail, value),
                };
                errs.push(e);
            }
            Ok(other) => errs.push(FieldError::invalid(
                path,
                type_value.clone(),
                format!(
                    "rule evaluated to {other:?}, not a bool, evaluating rule: {}",
                    rule.error_string()
                ),
            )),
            Err(e) => errs.push(FieldError::invalid(
                path,
                type_value.clone(),
                format!(
                    "{} evaluating rule: {}",
                    error_text(&e),
                    rule.error_string()
                ),
            )),
        }
    }
}

/// An evaluation error in cel-go's words where cel-rust's differ.
pub(crate) fn error_text(e: &cel::ExecutionError) -> String {
    use cel::ExecutionError as E;
    match e {
        E::NoSuchKey(k) => format!("no such key: {k}"),
        E::UndeclaredReference(r) => format!("undeclared reference to '{r}'"),
        E::DivisionByZero(_) => "division by zero".to_owned(),
        E::RemainderByZero(_) => "modulus by zero".to_owned(),
        E::FunctionError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn merge_sizes(a: Size, b: Size) -> Size {
    // The larger value bounds both self and oldSelf.
    if a.len() >= b.len() {
        a
    } else {
        b
    }
}
