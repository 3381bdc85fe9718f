//! The schema of one CRD version (`schema.openAPIV3Schema`) applied to custom resources:
//! the one place where a custom resource meets its schema.
//!
//! [`VersionSchema::new`] checks a CRD version's schema (on CRD create and update);
//! [`VersionSchema::default_and_prune`] fills in defaults and drops fields the schema
//! does not know (unless `x-kubernetes-preserve-unknown-fields`); and
//! [`VersionSchema::validate`] checks types, `required` and `enum`, answering with
//! [`Cause`]s that carry the field path. This covers the structural core; a full engine
//! (CEL rules, formats, list types) plugs in behind the same three calls.

use serde_json::{Map, Value};

use crate::error::Cause;

/// The compiled schema of one CRD version.
#[derive(Debug, Clone)]
pub(crate) struct VersionSchema {
    raw: Value,
}

/// Root fields every object has, outside any schema.
const ROOT_META: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn preserves_unknown(s: &Value) -> bool {
    s["x-kubernetes-preserve-unknown-fields"] == true
}

impl VersionSchema {
    /// Checks a CRD version's `openAPIV3Schema` (`field` is its path in the CRD, for the
    /// causes). The root must be an object schema.
    pub(crate) fn new(schema: &Value, field: &str) -> Result<Self, Vec<Cause>> {
        let mut causes = Vec::new();
        check_schema(schema, field, true, &mut causes);
        if causes.is_empty() {
            Ok(Self {
                raw: schema.clone(),
            })
        } else {
            Err(causes)
        }
    }

    /// The schema as given, for OpenAPI documents.
    pub(crate) fn raw(&self) -> &Value {
        &self.raw
    }

    /// Applies defaults, then prunes unknown fields (apiVersion, kind and metadata at the
    /// root are kept).
    pub(crate) fn default_and_prune(&self, obj: &mut Value) {
        default(&self.raw, obj);
        prune(&self.raw, obj, true);
    }

    /// Prunes unknown fields only.
    pub(crate) fn prune(&self, obj: &mut Value) {
        prune(&self.raw, obj, true);
    }

    /// Validates an object (on update `old` is the stored object); empty means valid.
    pub(crate) fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate(&self.raw, obj, "", true, &mut causes);
        causes
    }
}

const TYPES: [&str; 6] = ["object", "array", "string", "integer", "number", "boolean"];

fn check_schema(s: &Value, path: &str, root: bool, causes: &mut Vec<Cause>) {
    let Some(m) = s.as_object() else {
        causes.push(Cause::invalid(path, s, "must be an object"));
        return;
    };
    match m.get("type").and_then(Value::as_str) {
        Some(t) if TYPES.contains(&t) => {}
        Some(t) => causes.push(Cause::not_supported(
            join(path, "type"),
            &Value::String(t.into()),
            &TYPES,
        )),
        None if root => causes.push(Cause::required(join(path, "type"))),
        None => {}
    }
    if root
        && m.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t != "object")
    {
        causes.push(Cause::invalid(
            join(path, "type"),
            &m["type"],
            "must be object at the root",
        ));
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_schema(v, &format!("{path}.properties[{k}]"), false, causes);
        }
    }
    if let Some(items) = m.get("items") {
        check_schema(items, &join(path, "items"), false, causes);
    }
    if let Some(ap) = m.get("additionalProperties").filter(|v| v.is_object()) {
        check_schema(ap, &join(path, "additionalProperties"), false, causes);
    }
}

fn default(s: &Value, v: &mut Value) {
    match v {
        Value::Object(obj) => {
            if let Some(props) = s["properties"].as_object() {
                for (k, ps) in props {
                    if !obj.contains_key(k) {
                        if let Some(d) = ps.get("default") {
                            obj.insert(k.clone(), d.clone());
                        }
                    }
                    if let Some(child) = obj.get_mut(k) {
                        default(ps, child);
                    }
                }
            }
            if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                for (_, child) in obj.iter_mut() {
                    default(ap, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for child in items {
                    default(is, child);
                }
            }
        }
        _ => {}
    }
}

fn prune(s: &Value, v: &mut Value, root: bool) {
    match v {
        Value::Object(obj) => {
            let props = s["properties"].as_object();
            let ap = s.get("additionalProperties").filter(|a| a.is_object());
            let keep_all = preserves_unknown(s) || s["additionalProperties"] == true;
            if !keep_all && ap.is_none() {
                let empty = Map::new();
                let props = props.unwrap_or(&empty);
                obj.retain(|k, _| {
                    props.contains_key(k) || (root && ROOT_META.contains(&k.as_str()))
                });
            }
            for (k, child) in obj.iter_mut() {
                if root && ROOT_META.contains(&k.as_str()) {
                    continue;
                }
                if let Some(ps) = props.and_then(|p| p.get(k)) {
                    prune(ps, child, false);
                } else if let Some(ap) = ap {
                    prune(ap, child, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for child in items {
                    prune(is, child, false);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
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

fn validate(s: &Value, v: &Value, path: &str, root: bool, causes: &mut Vec<Cause>) {
    let shown = if path.is_empty() { "<root>" } else { path };
    if v.is_null() {
        if s["nullable"] != true && !root {
            causes.push(Cause::invalid(shown, v, "must not be null"));
        }
        return;
    }
    let int_or_string = s["x-kubernetes-int-or-string"] == true;
    if let Some(want) = s["type"].as_str() {
        let got = type_name(v);
        let ok = got == want || (want == "number" && got == "integer") || int_or_string;
        if !ok {
            causes.push(Cause {
                reason: "FieldValueTypeInvalid",
                field: shown.to_owned(),
                message: format!(
                    "Invalid value: {:?}: {shown} in body must be of type {want}: {:?}",
                    got, got
                ),
            });
            return;
        }
    }
    if let Some(allowed) = s["enum"].as_array() {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: shown.to_owned(),
                message: format!(
                    "Unsupported value: {v}: supported values: {}",
                    list.join(", ")
                ),
            });
        }
    }
    match v {
        Value::Object(obj) => {
            for r in s["required"].as_array().into_iter().flatten() {
                if let Some(k) = r.as_str() {
                    if !obj.contains_key(k) {
                        causes.push(Cause::required(join(path, k)));
                    }
                }
            }
            let props = s["properties"].as_object();
            let ap = s.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in obj {
                if root && ROOT_META.contains(&k.as_str()) {
                    continue;
                }
                if let Some(ps) = props.and_then(|p| p.get(k)) {
                    validate(ps, child, &join(path, k), false, causes);
                } else if let Some(ap) = ap {
                    validate(ap, child, &join(path, k), false, causes);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, child) in items.iter().enumerate() {
                    validate(is, child, &format!("{path}[{i}]"), false, causes);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> VersionSchema {
        VersionSchema::new(
            &json!({"type": "object", "properties": {
                "spec": {"type": "object", "required": ["color"], "properties": {
                    "color": {"type": "string", "enum": ["red", "blue"]},
                    "size": {"type": "integer", "default": 3},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
                }},
                "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
            }}),
            "spec.versions[0].schema.openAPIV3Schema",
        )
        .unwrap()
    }

    #[test]
    fn defaults_prunes_and_validates() {
        let s = schema();
        let mut o = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "junk": 1, "spec": {"color": "red", "extra": true, "free": {"any": 1},
            "tags": [{"k": "a", "z": 1}]}});
        s.default_and_prune(&mut o);
        assert_eq!(o["spec"]["size"], 3);
        assert!(o.get("junk").is_none());
        assert!(o["spec"].get("extra").is_none());
        assert_eq!(o["spec"]["free"]["any"], 1);
        assert!(o["spec"]["tags"][0].get("z").is_none());
        assert_eq!(o["metadata"]["name"], "a");
        assert!(s.validate(&o, None).is_empty());
        let bad = json!({"spec": {"color": "green", "size": "big"}});
        let causes = s.validate(&bad, None);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.color", "spec.size"]);
        let missing = s.validate(&json!({"spec": {}}), None);
        assert_eq!(missing[0].field, "spec.color");
        assert_eq!(missing[0].reason, "FieldValueRequired");
    }

    #[test]
    fn schema_check_names_the_field() {
        let err = VersionSchema::new(&json!({"type": "strin"}), "s").unwrap_err();
        assert_eq!(err[0].field, "s.type");
        assert!(VersionSchema::new(&json!({"properties": {}}), "s").is_err());
    }
}
