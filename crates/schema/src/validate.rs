//! OpenAPI v3 value validation with kube-openapi's messages, list-type invariants and
//! embedded-resource checks, as apiextensions-apiserver runs them on a custom resource.

use std::collections::HashSet;

use serde_json::{Number, Value};

use crate::error::{join_path, ErrorType, FieldError};
use crate::format;
use crate::schema::{Additional, Node};

/// A JSON number printed as Go's `%v` prints the int64 or float64 it decodes to.
pub(crate) fn format_number(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        n.to_string()
    } else {
        format_f64(n.as_f64().unwrap_or(0.0))
    }
}

/// A float printed as Go's `%v` does for the common cases.
pub(crate) fn format_f64(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{}", f as i128)
    } else if f.abs() >= 1e21 {
        let s = format!("{f:e}");
        // Go writes `1e+21`.
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

/// The JSON type name of a value, as kube-openapi infers it from Go's decoded value.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integral(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

/// Where a message names a field: the path, as kube-openapi writes it.
fn name(path: &str) -> &str {
    if path.is_empty() {
        "."
    } else {
        path
    }
}

fn type_error(path: &str, expected: &str, actual: &str) -> FieldError {
    FieldError::new(
        path,
        ErrorType::TypeInvalid,
        format!(
            "{} in body must be of type {expected}: {}",
            name(path),
            crate::error::go_quote(actual)
        ),
        Some(Value::String(actual.to_owned())),
    )
}

/// Validates `v` against `n` (kube-openapi's schema validator), appending errors.
///
/// On update, `old` is the correlated old value (same key in objects, same keys in
/// `x-kubernetes-list-type: map` lists, none in other lists): a value equal to its old
/// value is not validated again (upstream's validation ratcheting), so an object that
/// became invalid under a tightened schema can still be updated elsewhere.
pub(crate) fn openapi(
    n: &Node,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if old == Some(v) {
        return;
    }
    if v.is_null() {
        if n.ty.is_some() && !n.nullable {
            errs.push(type_error(path, n.type_name(), "null"));
        } else if n.int_or_string && !n.nullable {
            errs.push(type_error(path, "integer,string", "null"));
        }
        return;
    }
    let actual = json_type(v);
    if n.int_or_string {
        if !(actual == "string" || is_integral(v)) {
            errs.push(type_error(path, "integer,string", actual));
            return;
        }
    } else if let Some(ty) = n.ty.as_deref() {
        let ok = ty == actual
            || (ty == "integer" && is_integral(v))
            || (ty == "number" && actual == "integer");
        if !ok {
            errs.push(type_error(path, ty, actual));
            return;
        }
    }
    match v {
        Value::String(s) => string(n, s, v, path, errs),
        Value::Number(num) => number(n, num, v, path, errs),
        Value::Array(items) => array(n, items, old, path, errs),
        Value::Object(map) => object(n, map, old, path, errs),
        Value::Bool(_) | Value::Null => {}
    }
    if let Some(allowed) = &n.enumeration {
        if !allowed.contains(v) {
            let quoted: Vec<String> = allowed
                .iter()
                .map(|a| match a {
                    Value::String(s) => crate::error::go_quote(s),
                    other => crate::error::go_quote(&other.to_string()),
                })
                .collect();
            let detail = if quoted.is_empty() {
                String::new()
            } else {
                format!("supported values: {}", quoted.join(", "))
            };
            errs.push(FieldError::new(
                path,
                ErrorType::NotSupported,
                detail,
                Some(v.clone()),
            ));
        }
    }
    junctors(n, v, old, path, errs);
}

fn string(n: &Node, s: &str, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let len = s.chars().count() as u64;
    if let Some(max) = n.max_length {
        if len > max {
            let unit = if max == 1 { "byte" } else { "bytes" };
            errs.push(FieldError::new(
                path,
                ErrorType::TooLong,
                format!("may not be more than {max} {unit}"),
                None,
            ));
        }
    }
    if let Some(min) = n.min_length {
        if len < min {
            errs.push(FieldError::invalid(
                path,
                v.clone(),
                format!("{} in body should be at least {min} chars long", name(path)),
            ));
        }
    }
    if let Some((src, re)) = &n.pattern {
        if !re.is_match(s) {
            errs.push(FieldError::invalid(
                path,
                v.clone(),
                format!("{} in body should match '{src}'", name(path)),
            ));
        }
    }
    if let Some(f) = n.format.as_deref() {
        if !format::valid(f, s) {
            errs.push(FieldError::new(
                path,
                ErrorType::TypeInvalid,
                format!(
                    "{} in body must be of type {f}: {}",
                    name(path),
                    crate::error::go_quote(s)
                ),
                Some(v.clone()),
            ));
        }
    }
}

fn number(n: &Node, num: &Number, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let f = num.as_f64().unwrap_or(0.0);
    if let Some(m) = n.multiple_of {
        let q = f / m;
        if m > 0.0 && q.fract() != 0.0 {
            errs.push(FieldError::invalid(
                path,
                v.clone(),
                format!(
                    "{} in body should be a multiple of {}",
                    name(path),
                    format_f64(m)
                ),
            ));
        }
    }
    if let Some(max) = n.maximum {
        let bad = if n.exclusive_maximum {
            f >= max
        } else {
            f > max
        };
        if bad {
            let rel = if n.exclusive_maximum {
                "less than"
            } else {
                "less than or equal to"
            };
            errs.push(FieldError::invalid(
                path,
                v.clone(),
                format!("{} in body should be {rel} {}", name(path), format_f64(max)),
            ));
        }
    }
    if let Some(min) = n.minimum {
        let bad = if n.exclusive_minimum {
            f <= min
        } else {
            f < min
        };
        if bad {
            let rel = if n.exclusive_minimum {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errs.push(FieldError::invalid(
                path,
                v.clone(),
                format!("{} in body should be {rel} {}", name(path), format_f64(min)),
            ));
        }
    }
}

fn too_many(path: &str, actual: usize, max: u64) -> FieldError {
    let unit = if max == 1 { "item" } else { "items" };
    FieldError::new(
        path,
        ErrorType::TooMany,
        format!("must have at most {max} {unit}"),
        Some(Value::from(actual as u64)),
    )
}

fn array(n: &Node, items: &[Value], old: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(min) = n.min_items {
        if (items.len() as u64) < min {
            errs.push(FieldError::invalid(
                path,
                Value::from(items.len() as u64),
                format!("{} in body should have at least {min} items", name(path)),
            ));
        }
    }
    if let Some(max) = n.max_items {
        if items.len() as u64 > max {
            errs.push(too_many(path, items.len(), max));
        }
    }
    if let Some(item) = &n.items {
        for (i, v) in items.iter().enumerate() {
            let old_item = correlated_item(n, v, old);
            openapi(item, v, old_item, &format!("{path}[{i}]"), errs);
        }
    }
}

fn object(
    n: &Node,
    map: &serde_json::Map<String, Value>,
    old: Option<&Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if let Some(min) = n.min_properties {
        if (map.len() as u64) < min {
            errs.push(FieldError::invalid(
                path,
                Value::from(map.len() as u64),
                format!(
                    "{} in body should have at least {min} properties",
                    name(path)
                ),
            ));
        }
    }
    if let Some(max) = n.max_properties {
        if map.len() as u64 > max {
            errs.push(too_many(path, map.len(), max));
        }
    }
    for r in &n.required {
        if !map.contains_key(r) {
            errs.push(FieldError::required(&join_path(path, r), ""));
        }
    }
    for (k, v) in map {
        let child = join_path(path, k);
        let old_v = old.and_then(|o| o.get(k));
        // additionalProperties: false is refused when compiling (not structural)
        if let Some(p) = n.property(k) {
            openapi(p, v, old_v, &child, errs);
        }
    }
}

fn junctors(n: &Node, v: &Value, old: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let quoted = crate::error::go_quote(path);
    let composite = |msg: String| FieldError::invalid("", Value::String(String::new()), msg);
    if !n.any_of.is_empty() {
        let mut best: Option<Vec<FieldError>> = None;
        let mut ok = false;
        for s in &n.any_of {
            let mut e = Vec::new();
            openapi(s, v, old, path, &mut e);
            if e.is_empty() {
                ok = true;
                break;
            }
            if best.as_ref().is_none_or(|b| e.len() < b.len()) {
                best = Some(e);
            }
        }
        if !ok {
            errs.push(composite(format!(
                "{quoted} must validate at least one schema (anyOf)"
            )));
            errs.extend(best.unwrap_or_default());
        }
    }
    if !n.one_of.is_empty() {
        let mut best: Option<Vec<FieldError>> = None;
        let mut valid = 0;
        for s in &n.one_of {
            let mut e = Vec::new();
            openapi(s, v, old, path, &mut e);
            if e.is_empty() {
                valid += 1;
            } else if valid == 0 && best.as_ref().is_none_or(|b| e.len() < b.len()) {
                best = Some(e);
            }
        }
        if valid != 1 {
            let extra = if valid == 0 {
                "Found none valid".to_owned()
            } else {
                format!("Found {valid} valid alternatives")
            };
            errs.push(composite(format!(
                "{quoted} must validate one and only one schema (oneOf). {extra}"
            )));
            if valid == 0 {
                errs.extend(best.unwrap_or_default());
            }
        }
    }
    if !n.all_of.is_empty() {
        let mut valid = 0;
        for s in &n.all_of {
            let before = errs.len();
            openapi(s, v, old, path, errs);
            if errs.len() == before {
                valid += 1;
            }
        }
        if valid != n.all_of.len() {
            let extra = if valid == 0 { ". None validated" } else { "" };
            errs.push(composite(format!(
                "{quoted} must validate all the schemas (allOf){extra}"
            )));
        }
    }
    if let Some(not) = &n.not {
        let mut e = Vec::new();
        openapi(not, v, None, path, &mut e);
        if e.is_empty() {
            errs.push(composite(format!(
                "{quoted} must not validate the schema (not)"
            )));
        }
    }
}

/// `x-kubernetes-list-type: set | map` invariants (upstream's `listtype` package).
pub(crate) fn list_types(n: &Node, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    match v {
        Value::Array(items) => {
            match n.list_type.as_deref() {
                Some("set") => {
                    let mut seen: Vec<&Value> = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        if seen.contains(&item) {
                            errs.push(FieldError::new(
                                format!("{path}[{i}]"),
                                ErrorType::Duplicate,
                                "",
                                Some(item.clone()),
                            ));
                        }
                        seen.push(item);
                    }
                }
                Some("map") => {
                    let mut seen: HashSet<String> = HashSet::new();
                    for (i, item) in items.iter().enumerate() {
                        let Some(obj) = item.as_object() else {
                            errs.push(FieldError::invalid(
                                &format!("{path}[{i}]"),
                                item.clone(),
                                "must be an object for an array of list-type map",
                            ));
                            return;
                        };
                        let mut key = serde_json::Map::new();
                        for k in &n.list_map_keys {
                            if let Some(kv) = obj.get(k) {
                                key.insert(k.clone(), kv.clone());
                            }
                        }
                        let key = Value::Object(key);
                        if !seen.insert(key.to_string()) {
                            errs.push(FieldError::new(
                                format!("{path}[{i}]"),
                                ErrorType::Duplicate,
                                "",
                                Some(key),
                            ));
                        }
                    }
                }
                _ => {}
            }
            if let Some(item) = &n.items {
                for (i, x) in items.iter().enumerate() {
                    list_types(item, x, &format!("{path}[{i}]"), errs);
                }
            }
        }
        Value::Object(map) => {
            for (k, x) in map {
                if let Some(p) = n.property(k) {
                    list_types(p, x, &join_path(path, k), errs);
                }
            }
        }
        _ => {}
    }
}

/// `x-kubernetes-embedded-resource` objects need apiVersion and kind, and a light
/// check of their metadata (upstream's `objectmeta` validation of embedded resources).
pub(crate) fn embedded(n: &Node, v: &Value, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    match v {
        Value::Object(map) => {
            if n.embedded && !root {
                embedded_resource(map, path, errs);
            }
            for (k, x) in map {
                if let Some(p) = n.properties.get(k) {
                    embedded(p, x, &join_path(path, k), false, errs);
                } else if let Some(Additional::Schema(s)) = &n.additional {
                    embedded(s, x, &format!("{path}[{k}]"), false, errs);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = &n.items {
                for (i, x) in items.iter().enumerate() {
                    embedded(item, x, &format!("{path}[{i}]"), false, errs);
                }
            }
        }
        _ => {}
    }
}

/// A DNS-1035 label (`kind`s are checked lower-cased against it).
fn dns1035_label(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn embedded_resource(map: &serde_json::Map<String, Value>, path: &str, errs: &mut Vec<FieldError>) {
    for key in ["apiVersion", "kind"] {
        if !map.contains_key(key) {
            errs.push(FieldError::required(&join_path(path, key), ""));
        }
    }
    for (k, v) in map {
        let p = join_path(path, k);
        let problem = match (k.as_str(), v) {
            ("apiVersion" | "kind", Value::String(s)) if s.is_empty() => {
                Some("must not be empty".to_owned())
            }
            ("apiVersion", Value::String(s)) if s.matches('/').count() > 1 => {
                Some(format!("unexpected GroupVersion string: {s}"))
            }
            ("kind", Value::String(s)) if !dns1035_label(&s.to_lowercase()) => Some(format!(
                "may have mixed case, but should otherwise match: {DNS1035_MSG}"
            )),
            ("apiVersion" | "kind", Value::String(_)) => None,
            ("apiVersion" | "kind", _) => Some("must be a string".to_owned()),
            ("metadata", _) => {
                metadata(v, &p, errs);
                None
            }
            _ => None,
        };
        if let Some(msg) = problem {
            errs.push(FieldError::invalid(&p, v.clone(), msg));
        }
    }
}

/// Names of embedded objects are path segments (upstream's `ValidatePathSegmentName`).
fn path_segment_errors(name: &str, prefix: bool) -> Vec<String> {
    let mut out = Vec::new();
    if !prefix && (name == "." || name == "..") {
        out.push(format!("may not be '{name}'"));
    }
    for c in ["/", "%"] {
        if name.contains(c) {
            out.push(format!("may not contain '{c}'"));
        }
    }
    out
}

fn metadata(meta: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Some(m) = meta.as_object() else {
        errs.push(FieldError::invalid(path, meta.clone(), "must be an object"));
        return;
    };
    for key in ["name", "generateName", "namespace"] {
        if let Some(x) = m.get(key) {
            match x.as_str() {
                Some(s) => {
                    let problems = match key {
                        "name" => path_segment_errors(s, false),
                        "generateName" => path_segment_errors(s, true),
                        _ if !s.is_empty() && !format::dns1123_label(s) => {
                            vec![format::DNS1123_LABEL_MSG.to_owned()]
                        }
                        _ => Vec::new(),
                    };
                    for msg in problems {
                        errs.push(FieldError::invalid(&join_path(path, key), x.clone(), msg));
                    }
                }
                None => errs.push(type_error(&join_path(path, key), "string", json_type(x))),
            }
        }
    }
    for key in ["labels", "annotations"] {
        if let Some(x) = m.get(key) {
            let ok = x
                .as_object()
                .is_some_and(|o| o.values().all(Value::is_string));
            if !ok && !x.is_null() {
                errs.push(type_error(&join_path(path, key), "object", json_type(x)));
            }
        }
    }
}

/// The old item an item of a list correlates with: by the list-map keys in an
/// `x-kubernetes-list-type: map` list, none in other lists (upstream's correlation).
pub(crate) fn correlated_item<'a>(
    n: &Node,
    item: &Value,
    old: Option<&'a Value>,
) -> Option<&'a Value> {
    if n.list_type.as_deref() != Some("map") {
        return None;
    }
    old.and_then(Value::as_array)?
        .iter()
        .find(|o| n.list_map_keys.iter().all(|k| o.get(k) == item.get(k)))
}
