//! OpenAPI v3 structural schemas as Kubernetes uses them for CustomResourceDefinitions:
//! the structural checks on a CRD version's `openAPIV3Schema`, defaulting, pruning of
//! unknown fields, validation with upstream's field paths and messages, and
//! `x-kubernetes-validations` CEL rules, all over [`serde_json::Value`].
//!
//! # Example
//!
//! ```
//! use kcore_schema::Schema;
//! use serde_json::json;
//!
//! let schema = Schema::new(&json!({
//!     "type": "object",
//!     "properties": {
//!         "spec": {
//!             "type": "object",
//!             "x-kubernetes-validations": [{
//!                 "rule": "self.minReplicas <= self.replicas",
//!                 "message": "replicas should be greater than or equal to minReplicas"
//!             }],
//!             "properties": {
//!                 "replicas": {"type": "integer", "maximum": 10},
//!                 "minReplicas": {"type": "integer", "default": 1}
//!             }
//!         }
//!     }
//! }))
//! .map_err(|errs| format!("{errs:?}"))?;
//!
//! let mut obj = json!({"apiVersion": "example.com/v1", "kind": "Web",
//!                      "spec": {"replicas": 20, "colour": "red"}});
//! schema.prune(&mut obj);            // drops spec.colour
//! schema.default(&mut obj);          // sets spec.minReplicas = 1
//! assert_eq!(obj["spec"], json!({"replicas": 20, "minReplicas": 1}));
//!
//! let errors = schema.validate(&obj, None);
//! assert_eq!(
//!     errors[0].to_string(),
//!     "spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is supported
//!
//! * Structural checks: a type everywhere (except on nodes with
//!   `x-kubernetes-int-or-string` or `x-kubernetes-preserve-unknown-fields`), no
//!   type/default/nullable/
//!   additionalProperties inside `allOf`/`anyOf`/`oneOf`/`not`, fields named in junctors
//!   also named outside, `properties` and `additionalProperties` mutually exclusive,
//!   forbidden keywords (`$ref`, `uniqueItems: true`, `additionalProperties: false`,
//!   `patternProperties`, …), metadata restricted to `name`/`generateName`,
//!   list-type and map-type rules, defaults pruned and valid against their schema,
//!   rules that parse and call only declared functions, cost estimates within limits.
//! * Validation: type, nullable, enum, minimum/maximum (exclusive too), multipleOf,
//!   minLength/maxLength, pattern, formats (date, date-time, duration, byte, ipv4, ipv6,
//!   cidr, mac, uuid*, hostname, email, uri, bsonobjectid, hexcolor; others pass),
//!   minItems/maxItems, minProperties/maxProperties, allOf/anyOf/oneOf/not,
//!   additionalProperties, int-or-string, embedded resources (apiVersion, kind and
//!   metadata names), list-type `set` and `map` duplicates; on update, ratcheting.
//! * CEL rules: `rule` with `self` and `oldSelf` (transition rules run only with an old
//!   value; `optionalOldSelf` binds `oldSelf` as an optional), `message`,
//!   `messageExpression`, `reason`, `fieldPath`; cel-rust's standard library and strings
//!   extension (`lowerAscii`, `upperAscii`, `split`, `join`, `trim`, `replace`,
//!   `indexOf`, `substring`, …), the macros (`has`, `all`, `exists`, `exists_one`,
//!   `map`, `filter`), and Kubernetes' list (`isSorted`, `sum`, `min`, `max`, `indexOf`,
//!   `lastIndexOf`), regex (`find`, `findAll`), URL (`url`, `isURL`, `getScheme`,
//!   `getHost`, `getHostname`, `getPort`, `getEscapedPath`, `getQuery`) and quantity
//!   (`quantity`, `isQuantity`, `isInteger`, `asInteger`, `asApproximateFloat`, `sign`,
//!   `add`, `sub`, `isGreaterThan`, `isLessThan`, `compareTo`), IP (`ip`, `isIP`,
//!   `family`, `isUnspecified`, `isLoopback`, `isLinkLocalMulticast`,
//!   `isLinkLocalUnicast`, `isGlobalUnicast`) and CIDR (`cidr`, `isCIDR`, `containsIP`,
//!   `containsCIDR`, `ip`, `masked`, `prefixLength`) libraries, and the sets extension
//!   (`sets.contains`, `sets.equivalent`, `sets.intersects`), and the format library
//!   (`format.dns1123Label()`, `dns1123Subdomain`, `dns1035Label`, `qualifiedName`,
//!   `labelValue`, `uri`, `uuid`, `byte`, `date`, `datetime`, `format.named(name)`,
//!   `.validate(s)`).
//! * Merge types for server-side apply: [`Schema::list_type_at`] and
//!   [`Schema::map_type_at`].
//! * CEL outside a schema: [`Expression`] compiles an expression with named variables in
//!   the same environment, [`Bindings`] binds JSON values to them, and evaluation is
//!   refused over a per-call cost estimate and charged to a shared budget.
//! * Cost: each rule's cost is estimated from the schema when it is compiled, times the
//!   number of values it may run on (items of lists without `maxItems` count as many as
//!   fit in a 3 MiB request, as upstream); over [`CostLimits::per_expression_estimate`]
//!   it is refused, as are schemas whose rules together may cost more than
//!   [`CostLimits::per_schema_estimate`]. Before a costly
//!   rule runs its cost is estimated again from the actual value and it does not run
//!   over [`CostLimits::per_call`]; all rules on one object share
//!   [`CostLimits::per_object`].
//!
//! # Not supported
//!
//! * CEL type checking at compile time: cel-rust has no checker, so a rule naming a
//!   missing field, calling a function with the wrong argument types or returning a
//!   non-bool fails when evaluated (as an `Invalid` error naming the rule), not when the
//!   CRD is created (calls to functions that do not exist are caught when compiling).
//! * `timestamp`/`duration` values in rules (the `date-time` and `duration` formats are
//!   strings in CEL), the `semver` and `authz` libraries.
//! * Ratcheting is per value as upstream's (an unchanged value is not validated again,
//!   nor are rules that do not use `oldSelf`), but ratcheted CEL failures are not
//!   returned as warnings, and list-type and embedded-resource checks are not ratcheted.
//! * Upstream's cost model is approximated (every node costs about one, scans cost by
//!   length), not reproduced exactly.

#![deny(missing_docs)]

mod cel;
mod celib;
mod cost;
mod error;
mod expr;
mod format;
mod merge;
mod ops;
mod schema;
mod validate;

pub use crate::cel::CostLimits;
pub use crate::error::{ErrorType, FieldError};
pub use crate::expr::{Bindings, Expression, ExpressionError};
pub use crate::merge::{ListType, MapType};

use serde_json::Value;

use crate::cel::{run_rules, Budget};
use crate::error::join_path;
use crate::schema::{Additional, Compiler, Node};

/// One CRD version's `openAPIV3Schema`, checked and compiled (CEL programs compiled
/// once). Cheap to share: validation takes `&self`.
///
/// # Example
///
/// A transition rule from the Kubernetes documentation, checked on update only:
///
/// ```
/// use kcore_schema::{ErrorType, Schema};
/// use serde_json::json;
///
/// let schema = Schema::new(&json!({
///     "type": "object",
///     "properties": {"spec": {"type": "object", "properties": {
///         "region": {
///             "type": "string",
///             "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "Value is immutable"}]
///         }
///     }}}
/// }))
/// .map_err(|errs| format!("{errs:?}"))?;
///
/// let old = json!({"spec": {"region": "eu-west"}});
/// let new = json!({"spec": {"region": "us-east"}});
/// assert!(schema.validate(&new, None).is_empty()); // create: no old value
/// let errors = schema.validate(&new, Some(&old));
/// assert_eq!(errors[0].error_type, ErrorType::Invalid);
/// assert_eq!(
///     errors[0].to_string(),
///     r#"spec.region: Invalid value: "us-east": Value is immutable"#
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Schema {
    root: Node,
    limits: CostLimits,
}

impl Schema {
    /// Checks that the schema is structural as upstream requires and compiles it, with
    /// upstream's default cost limits.
    ///
    /// The errors' paths are relative to the schema (`properties[spec].type`); put them
    /// under the CRD's path with [`FieldError::prefixed`].
    pub fn new(open_api_v3_schema: &Value) -> Result<Schema, Vec<FieldError>> {
        Self::with_limits(open_api_v3_schema, CostLimits::default())
    }

    /// As [`Schema::new`], with other cost limits.
    pub fn with_limits(
        open_api_v3_schema: &Value,
        limits: CostLimits,
    ) -> Result<Schema, Vec<FieldError>> {
        let _span = tracing::debug_span!("compile_openapi_v3_schema").entered();
        let mut compiler = Compiler::new();
        let root = compiler.root(open_api_v3_schema);
        let mut errors = compiler.errors;
        let mut costs = Vec::new();
        check_tree(&root, "", 1.0, true, &limits, &mut costs, &mut errors);
        let total: f64 = costs.iter().map(|(_, c)| c).sum();
        if total > limits.per_schema_estimate as f64 {
            costs.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (path, _) in costs.iter().take(4) {
                errors.push(FieldError::forbidden(
                    path,
                    "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema",
                ));
            }
            errors.push(FieldError::forbidden(
                "",
                cel::cost_error_message(
                    "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                    total,
                    limits.per_schema_estimate,
                ),
            ));
        }
        if errors.is_empty() {
            Ok(Schema { root, limits })
        } else {
            Err(errors)
        }
    }

    /// Applies `default`s as upstream does on create, update and read from storage:
    /// missing fields (and null fields whose schema is not nullable) get their default,
    /// recursively through objects, arrays and maps; null fields that are neither
    /// nullable nor defaulted are dropped.
    pub fn default(&self, obj: &mut Value) {
        ops::default(&self.root, obj);
        ops::drop_non_nullable_nulls(&self.root, obj);
    }

    /// Drops unknown fields. `x-kubernetes-preserve-unknown-fields` keeps a subtree's
    /// unknown fields (known ones below are still pruned by their schemas); the top
    /// level and `x-kubernetes-embedded-resource` objects keep `apiVersion`, `kind` and
    /// `metadata`, whose fields are pruned to ObjectMeta's.
    pub fn prune(&self, obj: &mut Value) {
        self.prune_report(obj);
    }

    /// As [`Schema::prune`], returning the paths of the dropped fields (for upstream's
    /// `unknown field "spec.x"` warnings).
    pub fn prune_report(&self, obj: &mut Value) -> Vec<String> {
        let mut pruned = Vec::new();
        ops::prune(&self.root, obj, true, "", &mut pruned);
        pruned
    }

    /// Validates `obj` (and, on update, the transition rules against `old`): OpenAPI
    /// validation, list-type invariants and embedded resources first, then the CEL
    /// rules unless a blocking error (type, required, enum, too long, too many) was
    /// found, as upstream.
    ///
    /// On update (`old` given) validation ratchets as upstream's: a value equal to the
    /// old value it correlates with (same key in objects, same list-map keys in
    /// `x-kubernetes-list-type: map` lists) is not validated again, and rules that do not
    /// use `oldSelf` do not run on it, so objects stored before a schema was tightened
    /// can still be updated elsewhere.
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate::openapi(&self.root, obj, old, "", &mut errs);
        validate::embedded(&self.root, obj, "", true, &mut errs);
        validate::list_types(&self.root, obj, "", &mut errs);
        if !self.root.has_rules() {
            return errs;
        }
        let blocking = errs.iter().any(|e| {
            matches!(
                e.error_type,
                ErrorType::NotSupported
                    | ErrorType::Required
                    | ErrorType::TooLong
                    | ErrorType::TooMany
                    | ErrorType::TypeInvalid
            )
        });
        if blocking {
            errs.push(FieldError::new(
                "",
                ErrorType::Invalid,
                "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
                Some(Value::Null),
            ));
            return errs;
        }
        let mut budget = Budget::Left(self.limits.per_object);
        rules(
            &self.root,
            obj,
            old,
            "",
            &self.limits,
            &mut budget,
            &mut errs,
        );
        errs
    }
}

/// Runs the CEL rules of the tree at `n` over `v`, correlating `old` as upstream: by
/// key in maps, by list-map keys in `x-kubernetes-list-type: map` lists, not at all in
/// other lists.
fn rules(
    n: &Node,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    limits: &CostLimits,
    budget: &mut Budget,
    errs: &mut Vec<FieldError>,
) {
    if v.is_null() || !n.has_rules() {
        return;
    }
    run_rules(n, v, old, path, limits, budget, errs);
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                if matches!(budget, Budget::Exhausted) {
                    return;
                }
                let old_x = old.and_then(|o| o.get(k));
                if let Some(p) = n.properties.get(k) {
                    rules(p, x, old_x, &join_path(path, k), limits, budget, errs);
                } else if let Some(Additional::Schema(s)) = &n.additional {
                    rules(s, x, old_x, &format!("{path}[{k}]"), limits, budget, errs);
                }
            }
        }
        Value::Array(items) => {
            let Some(item) = &n.items else { return };
            for (i, x) in items.iter().enumerate() {
                if matches!(budget, Budget::Exhausted) {
                    return;
                }
                let old_x = validate::correlated_item(n, x, old);
                rules(
                    item,
                    x,
                    old_x,
                    &format!("{path}[{i}]"),
                    limits,
                    budget,
                    errs,
                );
            }
        }
        _ => {}
    }
}

/// How many values one node may stand for in an object at most.
fn fan_out(n: &Node) -> f64 {
    crate::cost::Size::of_schema(n).len() as f64
}

/// Checks that need the whole compiled tree: defaults valid against their schemas,
/// transition rules only where old values can be correlated, and each rule's estimated
/// cost times the number of values it may run on (`cardinality`) within the limit; the
/// costs are collected in `costs` for the schema-wide limit.
fn check_tree(
    n: &Node,
    path: &str,
    cardinality: f64,
    correlatable: bool,
    limits: &CostLimits,
    costs: &mut Vec<(String, f64)>,
    errs: &mut Vec<FieldError>,
) {
    if let Some(d) = &n.default {
        let p = join_path(path, "default");
        let mut pruned = d.clone();
        let mut dropped = Vec::new();
        ops::prune(n, &mut pruned, n.embedded, "", &mut dropped);
        if !dropped.is_empty() {
            errs.push(FieldError::invalid(
                &p,
                d.clone(),
                format!(
                    "must not have unknown fields, but got {}",
                    dropped
                        .iter()
                        .map(|f| crate::error::go_quote(f))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let mut inner = Vec::new();
        validate::openapi(n, d, None, &p, &mut inner);
        let mut budget = Budget::Left(limits.per_object);
        if inner.is_empty() {
            rules(n, d, None, &p, limits, &mut budget, &mut inner);
        }
        errs.extend(inner);
    }
    for r in &n.rules {
        let rule_path = join_path(path, &format!("x-kubernetes-validations[{}].rule", r.index));
        let cost = r.estimated_cost as f64 * cardinality;
        if cost > limits.per_expression_estimate as f64 {
            errs.push(FieldError::forbidden(
                &rule_path,
                cel::cost_error_message(
                    "estimated rule cost",
                    cost,
                    limits.per_expression_estimate,
                ),
            ));
        }
        costs.push((rule_path, cost));
        if r.uses_old_self && !correlatable {
            errs.push(FieldError::invalid(
                &join_path(path, "x-kubernetes-validations"),
                Value::String(r.source.clone()),
                "oldSelf cannot be used on the uncorrelatable portion of the schema within a list that is not x-kubernetes-list-type: map",
            ));
        }
    }
    for (k, p) in &n.properties {
        check_tree(
            p,
            &join_path(path, &format!("properties[{k}]")),
            cardinality,
            correlatable,
            limits,
            costs,
            errs,
        );
    }
    if let Some(Additional::Schema(s)) = &n.additional {
        check_tree(
            s,
            &join_path(path, "additionalProperties"),
            cardinality * fan_out(n),
            correlatable,
            limits,
            costs,
            errs,
        );
    }
    if let Some(item) = &n.items {
        let keeps = correlatable && n.list_type.as_deref() == Some("map");
        check_tree(
            item,
            &join_path(path, "items"),
            cardinality * fan_out(n),
            keeps,
            limits,
            costs,
            errs,
        );
    }
}
