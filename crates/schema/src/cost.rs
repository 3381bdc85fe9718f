//! Cost estimates of CEL rules, after upstream's cost model: every node costs about
//! one unit, string and list functions cost in proportion to the sizes they scan, and a
//! comprehension (`all`, `exists`, `map`, …) costs its body once per element.
//!
//! One walker serves both checks. At compile time the sizes come from the schema
//! (`maxItems`, `maxLength`, `maxProperties`; unbounded ones as upstream estimates them
//! from the largest request, 3 MiB). At validation time they come from the value being
//! validated, so a rule whose worst case exceeds the per-call budget is refused before
//! it runs, rather than stopped while it runs: cel-rust has no cost tracker, and this
//! keeps a rule from ever running long.

use std::collections::BTreeMap;

use cel::common::ast::{EntryExpr, Expr};
use cel::IdedExpr;
use serde_json::Value;

use crate::schema::{Additional, Node};

/// Largest request the API server accepts; unbounded sizes are derived from it.
pub(crate) const MAX_REQUEST_BYTES: u64 = 3 * 1024 * 1024;

/// The shape of a value, with the largest sizes it may have.
#[derive(Clone, Debug)]
pub(crate) enum Size {
    /// A number, boolean or null.
    Scalar,
    /// A string of at most this many bytes.
    Str(u64),
    /// A list of at most `len` elements shaped like `elem`.
    List(u64, Box<Size>),
    /// A map of at most `len` entries: known fields, the shape of any other value, and
    /// the longest key.
    Map(u64, BTreeMap<String, Size>, Box<Size>, u64),
    /// Anything (preserved unknown fields), no larger than this in any dimension.
    Any(u64),
}

impl Size {
    /// The number of elements a comprehension over this value visits, or the length a
    /// function over it scans.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Size::Scalar => 1,
            Size::Str(l) | Size::List(l, _) | Size::Map(l, _, _, _) | Size::Any(l) => *l,
        }
    }

    fn elem(&self) -> Size {
        match self {
            Size::List(_, e) => (**e).clone(),
            // iterating a map visits its keys
            Size::Map(_, _, _, key) => Size::Str(*key),
            Size::Any(s) => Size::Any(*s),
            Size::Scalar | Size::Str(_) => Size::Scalar,
        }
    }

    fn field(&self, name: &str) -> Size {
        match self {
            Size::Map(_, fields, other, _) => {
                fields.get(name).cloned().unwrap_or((**other).clone())
            }
            Size::List(_, e) => (**e).clone(),
            Size::Any(s) => Size::Any(*s),
            _ => Size::Scalar,
        }
    }

    /// The larger of two shapes.
    fn merge(self, other: Size) -> Size {
        match (self, other) {
            (Size::Scalar, o) | (o, Size::Scalar) => o,
            (Size::Str(a), Size::Str(b)) => Size::Str(a.max(b)),
            (Size::List(a, x), Size::List(b, y)) => Size::List(a.max(b), Box::new(x.merge(*y))),
            (Size::Map(a, mut f, x, k), Size::Map(b, g, y, l)) => {
                for (k, v) in g {
                    let merged = match f.remove(&k) {
                        Some(old) => old.merge(v),
                        None => v,
                    };
                    f.insert(k, merged);
                }
                Size::Map(a.max(b), f, Box::new(x.merge(*y)), k.max(l))
            }
            (a, b) => Size::Any(a.len().max(b.len())),
        }
    }

    /// The shape a schema allows, with upstream's estimates for unbounded sizes.
    pub(crate) fn of_schema(n: &Node) -> Size {
        if n.int_or_string {
            return Size::Str(n.max_length.unwrap_or(MAX_REQUEST_BYTES));
        }
        match n.ty.as_deref() {
            Some("string") => Size::Str(n.max_length.unwrap_or(MAX_REQUEST_BYTES - 2)),
            Some("array") => {
                let elem = n
                    .items
                    .as_deref()
                    .map_or(Size::Any(MAX_REQUEST_BYTES), Size::of_schema);
                let len = n.max_items.unwrap_or_else(|| {
                    MAX_REQUEST_BYTES / (min_serialized_size(n.items.as_deref()) + 1)
                });
                Size::List(len, Box::new(elem))
            }
            Some("object") => {
                let fields: BTreeMap<String, Size> = n
                    .properties
                    .iter()
                    .map(|(k, v)| (k.clone(), Size::of_schema(v)))
                    .collect();
                match &n.additional {
                    Some(Additional::Schema(s)) => {
                        let len = n.max_properties.unwrap_or_else(|| {
                            // "k":v, at least 4 bytes plus the value
                            MAX_REQUEST_BYTES / (min_serialized_size(Some(s)) + 4)
                        });
                        Size::Map(len, fields, Box::new(Size::of_schema(s)), MAX_REQUEST_BYTES)
                    }
                    _ if n.preserve_unknown || n.embedded => {
                        let len = n.max_properties.unwrap_or(MAX_REQUEST_BYTES / 5);
                        Size::Map(
                            len,
                            fields,
                            Box::new(Size::Any(MAX_REQUEST_BYTES)),
                            MAX_REQUEST_BYTES,
                        )
                    }
                    _ => {
                        let len = n.max_properties.unwrap_or(fields.len() as u64);
                        let key = n
                            .properties
                            .keys()
                            .map(|k| k.len() as u64)
                            .max()
                            .unwrap_or(0);
                        Size::Map(len, fields, Box::new(Size::Scalar), key)
                    }
                }
            }
            Some(_) => Size::Scalar,
            None => Size::Any(MAX_REQUEST_BYTES),
        }
    }

    /// The shape of an actual value.
    pub(crate) fn of_value(v: &Value) -> Size {
        match v {
            Value::String(s) => Size::Str(s.len() as u64),
            Value::Array(items) => {
                let elem = items
                    .iter()
                    .map(Size::of_value)
                    .fold(Size::Scalar, Size::merge);
                Size::List(items.len() as u64, Box::new(elem))
            }
            Value::Object(map) => {
                let fields = map
                    .iter()
                    .map(|(k, v)| (k.clone(), Size::of_value(v)))
                    .collect();
                let key = map.keys().map(|k| k.len() as u64).max().unwrap_or(0);
                Size::Map(map.len() as u64, fields, Box::new(Size::Scalar), key)
            }
            _ => Size::Scalar,
        }
    }
}

/// Bytes of the smallest JSON value a schema allows (upstream's minimum sizes).
fn min_serialized_size(n: Option<&Node>) -> u64 {
    match n.and_then(|n| n.ty.as_deref()) {
        Some("string") => 2,
        Some("boolean") => 4,
        Some("integer" | "number") => 1,
        Some("object" | "array") => 2,
        _ => 1,
    }
}

/// Variables in scope, innermost last.
struct Scope<'a> {
    vars: Vec<(&'a str, Size)>,
}

impl Scope<'_> {
    fn get(&self, name: &str) -> Option<&Size> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s)
    }
}

/// The estimated cost of `expr` with `self` (and `oldSelf`) shaped as `this`.
pub(crate) fn estimate(expr: &IdedExpr, this: &Size) -> f64 {
    estimate_with(
        expr,
        vec![("self", this.clone()), ("oldSelf", this.clone())],
    )
}

/// The estimated cost of `expr` with its variables shaped as given (others scalars).
pub(crate) fn estimate_with<'a>(expr: &'a IdedExpr, vars: Vec<(&'a str, Size)>) -> f64 {
    let mut scope = Scope { vars };
    walk(expr, &mut scope).0
}

/// Functions that scan their receiver and arguments once, in tenths of a unit per byte
/// or element as upstream charges string traversal.
fn scans(name: &str) -> Option<f64> {
    Some(match name {
        "contains" | "startsWith" | "endsWith" | "lowerAscii" | "upperAscii" | "trim"
        | "replace" | "split" | "join" | "indexOf" | "lastIndexOf" | "substring" | "charAt"
        | "reverse" | "url" | "isURL" | "quantity" | "isQuantity" | "string" | "_==_" | "_!=_"
        | "_+_" | "format" => 0.1,
        "matches" | "find" | "findAll" => 1.0,
        "isSorted" | "sum" | "min" | "max" | "@in" | "size" => 1.0,
        // quadratic in the two lists' lengths; charged as their product below
        "sets.contains" | "sets.equivalent" | "sets.intersects" => 1.0,
        _ => return None,
    })
}

fn walk<'a>(expr: &'a IdedExpr, scope: &mut Scope<'a>) -> (f64, Size) {
    match &expr.expr {
        Expr::Unspecified | Expr::Literal(_) => (0.0, Size::Scalar),
        Expr::Ident(name) => (1.0, scope.get(name).cloned().unwrap_or(Size::Scalar)),
        Expr::Select(sel) => {
            let (c, s) = walk(&sel.operand, scope);
            let out = if sel.test {
                Size::Scalar
            } else {
                s.field(&sel.field)
            };
            (c + 1.0, out)
        }
        Expr::List(l) => {
            let mut cost = 1.0;
            let mut elem = Size::Scalar;
            for e in &l.elements {
                let (c, s) = walk(e, scope);
                cost += c;
                elem = elem.merge(s);
            }
            (cost, Size::List(l.elements.len() as u64, Box::new(elem)))
        }
        Expr::Map(m) => {
            let mut cost = 1.0;
            for entry in &m.entries {
                if let EntryExpr::MapEntry(e) = &entry.expr {
                    cost += walk(&e.key, scope).0 + walk(&e.value, scope).0;
                }
            }
            (
                cost,
                Size::Map(
                    m.entries.len() as u64,
                    BTreeMap::new(),
                    Box::new(Size::Scalar),
                    MAX_REQUEST_BYTES,
                ),
            )
        }
        Expr::Struct(s) => {
            let mut cost = 1.0;
            for entry in &s.entries {
                if let EntryExpr::StructField(f) = &entry.expr {
                    cost += walk(&f.value, scope).0;
                }
            }
            (cost, Size::Scalar)
        }
        Expr::Call(call) => {
            let mut cost = 1.0;
            let mut sizes = Vec::new();
            if let Some(t) = &call.target {
                let (c, s) = walk(t, scope);
                cost += c;
                sizes.push(s);
            }
            for a in &call.args {
                let (c, s) = walk(a, scope);
                cost += c;
                sizes.push(s);
            }
            let scanned: u64 = if call.func_name.starts_with("sets.") {
                sizes.iter().map(Size::len).product()
            } else {
                sizes.iter().map(Size::len).sum()
            };
            if let Some(factor) = scans(&call.func_name) {
                cost += factor * scanned as f64;
            }
            let first = sizes.first().cloned().unwrap_or(Size::Scalar);
            let out = match call.func_name.as_str() {
                "split" | "findAll" => Size::List(first.len(), Box::new(Size::Str(first.len()))),
                "_[_]" => first.field(""),
                "size" | "_<_" | "_<=_" | "_>_" | "_>=_" | "_==_" | "_!=_" | "@in" | "matches"
                | "contains" | "startsWith" | "endsWith" | "isSorted" | "indexOf"
                | "lastIndexOf" | "_&&_" | "_||_" | "!_" | "isURL" | "isQuantity" | "url"
                | "quantity" => Size::Scalar,
                "_+_" => sizes.into_iter().fold(Size::Scalar, |a, b| match (a, b) {
                    (Size::Str(x), Size::Str(y)) => Size::Str(x + y),
                    (Size::List(x, e), Size::List(y, f)) => {
                        Size::List(x + y, Box::new(e.merge(*f)))
                    }
                    (a, b) => a.merge(b),
                }),
                _ => sizes.into_iter().fold(Size::Scalar, Size::merge),
            };
            (cost, out)
        }
        Expr::Comprehension(c) => {
            let (range_cost, range) = walk(&c.iter_range, scope);
            let n = range.len() as f64;
            let (init_cost, _) = walk(&c.accu_init, scope);
            let depth = scope.vars.len();
            scope.vars.push((c.iter_var.as_str(), range.elem()));
            if let Some(v2) = &c.iter_var2 {
                scope.vars.push((v2.as_str(), range.elem()));
            }
            // The accumulator of map/filter grows to the size of the range.
            let accu = Size::List(range.len(), Box::new(range.elem()));
            scope.vars.push((c.accu_var.as_str(), accu.clone()));
            let (cond, _) = walk(&c.loop_cond, scope);
            let (step, _) = walk(&c.loop_step, scope);
            let (result_cost, result) = walk(&c.result, scope);
            scope.vars.truncate(depth);
            let cost = range_cost + init_cost + n * (cond + step + 1.0) + result_cost;
            (cost, result)
        }
    }
}
