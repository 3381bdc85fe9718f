//! The compiled schema tree and the structural checks upstream makes on a CRD's
//! `openAPIV3Schema` (apiextensions-apiserver's `schema.ValidateStructural` and the v1
//! CRD validation around it).

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

use crate::cel::Rule;
use crate::error::{join_path, ErrorType, FieldError};

/// The JSON types a structural schema may name.
pub(crate) const TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];

/// What `additionalProperties` says.
#[derive(Debug)]
pub(crate) enum Additional {
    /// `additionalProperties: true`/`false`.
    Bool(bool),
    /// `additionalProperties: {schema}`.
    Schema(Box<Node>),
}

/// One node of a compiled schema.
#[derive(Debug, Default)]
pub(crate) struct Node {
    pub ty: Option<String>,
    pub nullable: bool,
    pub format: Option<String>,
    pub properties: BTreeMap<String, Node>,
    pub additional: Option<Additional>,
    pub items: Option<Box<Node>>,
    pub required: Vec<String>,
    pub enumeration: Option<Vec<Value>>,
    pub maximum: Option<f64>,
    pub exclusive_maximum: bool,
    pub minimum: Option<f64>,
    pub exclusive_minimum: bool,
    pub multiple_of: Option<f64>,
    pub max_length: Option<u64>,
    pub min_length: Option<u64>,
    pub pattern: Option<(String, Regex)>,
    pub max_items: Option<u64>,
    pub min_items: Option<u64>,
    pub max_properties: Option<u64>,
    pub min_properties: Option<u64>,
    pub all_of: Vec<Node>,
    pub any_of: Vec<Node>,
    pub one_of: Vec<Node>,
    pub not: Option<Box<Node>>,
    pub default: Option<Value>,
    pub preserve_unknown: bool,
    pub int_or_string: bool,
    pub embedded: bool,
    pub list_type: Option<String>,
    pub list_map_keys: Vec<String>,
    pub map_type: Option<String>,
    pub rules: Vec<Rule>,
    /// This node or a descendant has rules (set once compiled).
    pub subtree_rules: bool,
}

impl Node {
    /// The schema of property `name` of an object node, if it has one.
    pub(crate) fn property(&self, name: &str) -> Option<&Node> {
        self.properties.get(name).or(match &self.additional {
            Some(Additional::Schema(s)) => Some(s),
            _ => None,
        })
    }

    /// The type name used where upstream reports "the schema's type".
    pub(crate) fn type_name(&self) -> &str {
        self.ty.as_deref().unwrap_or("")
    }

    /// True when this node, or a descendant, has CEL rules.
    pub(crate) fn has_rules(&self) -> bool {
        self.subtree_rules
    }

    fn compute_subtree_rules(&self) -> bool {
        !self.rules.is_empty()
            || self.properties.values().any(Node::has_rules)
            || matches!(&self.additional, Some(Additional::Schema(s)) if s.has_rules())
            || self.items.as_deref().is_some_and(Node::has_rules)
    }
}

/// Where a node sits, for the structural rules that depend on it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Root,
    /// A property or additionalProperties value of an object, or an array's items.
    Field,
    Items,
    /// Inside allOf/anyOf/oneOf/not: value validation only.
    Junctor,
}

/// Parses, checks and compiles one schema tree.
pub(crate) struct Compiler {
    pub errors: Vec<FieldError>,
}

fn keyword_path(path: &str, key: &str) -> String {
    join_path(path, key)
}

const FORBIDDEN_KEYWORDS: [(&str, &str); 7] = [
    ("$ref", "$ref is not supported"),
    ("definitions", "definitions are not supported"),
    ("dependencies", "dependencies are not supported"),
    ("patternProperties", "patternProperties is not supported"),
    ("additionalItems", "additionalItems cannot be set to false"),
    ("id", "id is not supported"),
    ("$schema", "$schema is not supported"),
];

impl Compiler {
    pub(crate) fn new() -> Self {
        Compiler { errors: Vec::new() }
    }

    fn err(&mut self, e: FieldError) {
        self.errors.push(e);
    }

    /// Compiles the root schema.
    pub(crate) fn root(&mut self, v: &Value) -> Node {
        let node = self.node(v, "", Place::Root);
        if node.ty.as_deref().is_some_and(|t| t != "object") {
            let ty = node.type_name().to_owned();
            self.err(FieldError::invalid(
                "type",
                Value::String(ty),
                "must be object at the root",
            ));
        }
        if let Some(meta) = node.properties.get("metadata") {
            self.check_metadata(meta, "properties[metadata]");
        }
        if node.additional.is_some() {
            self.err(FieldError::forbidden(
                "additionalProperties",
                "must not be used at the root",
            ));
        }
        node
    }

    /// Only `name` and `generateName` of metadata may be restricted (upstream).
    fn check_metadata(&mut self, meta: &Node, path: &str) {
        let extra = meta
            .properties
            .keys()
            .any(|k| k != "name" && k != "generateName")
            || meta.additional.is_some()
            || !meta.required.is_empty()
            || meta.default.is_some()
            || !meta.rules.is_empty()
            || meta.enumeration.is_some()
            || meta.max_properties.is_some()
            || meta.min_properties.is_some()
            || meta.preserve_unknown;
        if extra {
            self.err(FieldError::forbidden(
                path,
                "must not specify anything other than name and generateName, but metadata is implicitly specified",
            ));
        }
    }

    fn node(&mut self, v: &Value, path: &str, place: Place) -> Node {
        let Some(obj) = v.as_object() else {
            self.err(FieldError::invalid(
                path,
                v.clone(),
                "must be a schema object",
            ));
            return Node::default();
        };
        let mut n = Node::default();
        for (key, msg) in FORBIDDEN_KEYWORDS {
            if obj.contains_key(key) {
                self.err(FieldError::forbidden(&keyword_path(path, key), msg));
            }
        }
        n.int_or_string = flag(obj, "x-kubernetes-int-or-string");
        n.preserve_unknown = flag(obj, "x-kubernetes-preserve-unknown-fields");
        if obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
            self.err(FieldError::invalid(
                &keyword_path(path, "x-kubernetes-preserve-unknown-fields"),
                Value::Bool(false),
                "must be true or undefined",
            ));
        }
        n.embedded = flag(obj, "x-kubernetes-embedded-resource");
        n.nullable = flag(obj, "nullable");

        match obj.get("type") {
            None => {}
            Some(Value::String(t)) if t.is_empty() => {}
            Some(Value::String(t)) => {
                if TYPES.contains(&t.as_str()) {
                    n.ty = Some(t.clone());
                } else {
                    self.err(FieldError::new(
                        keyword_path(path, "type"),
                        ErrorType::NotSupported,
                        supported(&TYPES),
                        Some(Value::String(t.clone())),
                    ));
                }
            }
            Some(other) => self.err(FieldError::invalid(
                &keyword_path(path, "type"),
                other.clone(),
                "must be a string",
            )),
        }
        if place == Place::Junctor {
            let rules: [(&str, &str); 13] = [
                ("type", "must be empty to be structural"),
                ("additionalProperties", "must be undefined to be structural"),
                ("default", "must be undefined to be structural"),
                ("title", "must be empty to be structural"),
                ("description", "must be empty to be structural"),
                ("nullable", "must be false to be structural"),
                (
                    "x-kubernetes-preserve-unknown-fields",
                    "must be false to be structural",
                ),
                (
                    "x-kubernetes-embedded-resource",
                    "must be false to be structural",
                ),
                (
                    "x-kubernetes-int-or-string",
                    "must be false to be structural",
                ),
                (
                    "x-kubernetes-list-map-keys",
                    "must be empty to be structural",
                ),
                (
                    "x-kubernetes-list-type",
                    "must be undefined to be structural",
                ),
                (
                    "x-kubernetes-map-type",
                    "must be undefined to be structural",
                ),
                ("x-kubernetes-validations", "must be empty to be structural"),
            ];
            for (key, msg) in rules {
                if obj.contains_key(key) && !n.int_or_string_pattern_ok(obj, key) {
                    self.err(FieldError::forbidden(&keyword_path(path, key), msg));
                }
            }
            if obj
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| p.contains_key("metadata"))
            {
                self.err(FieldError::forbidden(
                    &keyword_path(path, "properties[metadata]"),
                    "must not be specified in a nested context",
                ));
            }
        } else if n.embedded && n.ty.as_deref() != Some("object") {
            let p = keyword_path(path, "type");
            let msg = "must be object if x-kubernetes-embedded-resource is true";
            match &n.ty {
                None => self.err(FieldError::required(&p, msg)),
                Some(t) => self.err(FieldError::invalid(&p, Value::String(t.clone()), msg)),
            }
        } else if n.ty.is_none()
            && !n.int_or_string
            && !n.preserve_unknown
            && obj.get("type").is_none_or(|t| t.as_str() == Some(""))
        {
            let msg = match place {
                Place::Root => "must not be empty at the root",
                Place::Items => "must not be empty for specified array items",
                _ => "must not be empty for specified object fields",
            };
            self.err(FieldError::required(&keyword_path(path, "type"), msg));
        }
        if n.int_or_string && n.preserve_unknown {
            self.err(FieldError::invalid(
                &keyword_path(path, "x-kubernetes-preserve-unknown-fields"),
                Value::Bool(true),
                "must be false if x-kubernetes-int-or-string is true",
            ));
        }
        if n.int_or_string && n.embedded {
            self.err(FieldError::invalid(
                &keyword_path(path, "x-kubernetes-embedded-resource"),
                Value::Bool(true),
                "must be false if x-kubernetes-int-or-string is true",
            ));
        }
        if n.int_or_string && n.ty.is_some() {
            self.err(FieldError::forbidden(
                &keyword_path(path, "type"),
                "must be empty if x-kubernetes-int-or-string is true",
            ));
        }
        n.format = obj.get("format").and_then(Value::as_str).map(str::to_owned);
        n.maximum = obj.get("maximum").and_then(Value::as_f64);
        n.minimum = obj.get("minimum").and_then(Value::as_f64);
        n.exclusive_maximum = flag(obj, "exclusiveMaximum");
        n.exclusive_minimum = flag(obj, "exclusiveMinimum");
        n.multiple_of = obj.get("multipleOf").and_then(Value::as_f64);
        if n.multiple_of.is_some_and(|m| m <= 0.0) {
            self.err(FieldError::invalid(
                &keyword_path(path, "multipleOf"),
                obj["multipleOf"].clone(),
                "must be greater than zero",
            ));
        }
        n.max_length = obj.get("maxLength").and_then(Value::as_u64);
        n.min_length = obj.get("minLength").and_then(Value::as_u64);
        n.max_items = obj.get("maxItems").and_then(Value::as_u64);
        n.min_items = obj.get("minItems").and_then(Value::as_u64);
        n.max_properties = obj.get("maxProperties").and_then(Value::as_u64);
        n.min_properties = obj.get("minProperties").and_then(Value::as_u64);
        if flag(obj, "uniqueItems") {
            self.err(FieldError::forbidden(
                &keyword_path(path, "uniqueItems"),
                "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            ));
        }
        if let Some(p) = obj.get("pattern").and_then(Value::as_str) {
            match Regex::new(p) {
                Ok(re) => n.pattern = Some((p.to_owned(), re)),
                Err(e) => self.err(FieldError::invalid(
                    &keyword_path(path, "pattern"),
                    Value::String(p.to_owned()),
                    format!("must be a valid regular expression, but isn't: {e}"),
                )),
            }
        }
        match obj.get("enum") {
            Some(Value::Array(values)) => n.enumeration = Some(values.clone()),
            Some(other) => self.err(FieldError::invalid(
                &keyword_path(path, "enum"),
                other.clone(),
                "must be an array",
            )),
            None => {}
        }
        if let Some(req) = obj.get("required").and_then(Value::as_array) {
            n.required = req
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
        }
        let child_place = if place == Place::Junctor {
            Place::Junctor
        } else {
            Place::Field
        };
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                let p = keyword_path(path, &format!("properties[{name}]"));
                let child = self.node(sub, &p, child_place);
                n.properties.insert(name.clone(), child);
            }
        }
        match obj.get("additionalProperties") {
            None => {}
            Some(Value::Bool(b)) => {
                if !b {
                    self.err(FieldError::forbidden(
                        &keyword_path(path, "additionalProperties"),
                        "must not be used",
                    ));
                }
                n.additional = Some(Additional::Bool(*b));
            }
            Some(sub) => {
                let p = keyword_path(path, "additionalProperties");
                let child = self.node(sub, &p, child_place);
                n.additional = Some(Additional::Schema(Box::new(child)));
            }
        }
        if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
            self.err(FieldError::forbidden(
                &keyword_path(path, "additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            ));
        }
        match obj.get("items") {
            None => {
                if n.ty.as_deref() == Some("array") && place != Place::Junctor {
                    self.err(FieldError::required(
                        &keyword_path(path, "items"),
                        "must be specified",
                    ));
                }
            }
            Some(Value::Array(_)) => self.err(FieldError::forbidden(
                &keyword_path(path, "items"),
                "items must be a schema object and not an array",
            )),
            Some(sub) => {
                let items_place = if place == Place::Junctor {
                    Place::Junctor
                } else {
                    Place::Items
                };
                let p = keyword_path(path, "items");
                n.items = Some(Box::new(self.node(sub, &p, items_place)));
            }
        }
        for (key, target) in [("allOf", 0), ("anyOf", 1), ("oneOf", 2)] {
            if let Some(list) = obj.get(key).and_then(Value::as_array) {
                let nodes: Vec<Node> = list
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let p = keyword_path(path, &format!("{key}[{i}]"));
                        let j = self.node(s, &p, Place::Junctor);
                        self.check_junctor_fields(&n, &j, &p);
                        j
                    })
                    .collect();
                match target {
                    0 => n.all_of = nodes,
                    1 => n.any_of = nodes,
                    _ => n.one_of = nodes,
                }
            }
        }
        if let Some(s) = obj.get("not") {
            let p = keyword_path(path, "not");
            let j = self.node(s, &p, Place::Junctor);
            self.check_junctor_fields(&n, &j, &p);
            n.not = Some(Box::new(j));
        }
        self.list_and_map_types(obj, &mut n, path);
        if place != Place::Junctor {
            if let Some(d) = obj.get("default") {
                n.default = Some(d.clone());
            }
            self.rules(obj, &mut n, path);
            if n.embedded || place == Place::Root {
                self.resource_fields(&n, path);
            }
            if n.embedded && !n.preserve_unknown && n.properties.is_empty() {
                self.err(FieldError::required(
                    &keyword_path(path, "properties"),
                    "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
                ));
            }
            if n.embedded && n.additional.is_some() {
                self.err(FieldError::forbidden(
                    &keyword_path(path, "additionalProperties"),
                    "must not be used if x-kubernetes-embedded-resource is set",
                ));
            }
        }
        n.subtree_rules = n.compute_subtree_rules();
        n
    }

    /// At a resource root (the top, or an embedded resource): `kind` and `apiVersion`
    /// are strings and `metadata` an object.
    fn resource_fields(&mut self, n: &Node, path: &str) {
        for key in ["kind", "apiVersion"] {
            if let Some(p) = n.properties.get(key) {
                if p.ty.as_deref() != Some("string") {
                    self.err(FieldError::invalid(
                        &keyword_path(path, &format!("properties[{key}].type")),
                        Value::String(p.type_name().to_owned()),
                        "must be string",
                    ));
                }
            }
        }
        if let Some(m) = n.properties.get("metadata") {
            if m.ty.as_deref() != Some("object") {
                self.err(FieldError::invalid(
                    &keyword_path(path, "properties[metadata].type"),
                    Value::String(m.type_name().to_owned()),
                    "must be object",
                ));
            }
        }
    }

    /// A field or item named inside a junctor must be specified outside it too.
    fn check_junctor_fields(&mut self, outer: &Node, junctor: &Node, path: &str) {
        for name in junctor.properties.keys() {
            if !outer.properties.contains_key(name) && outer.additional.is_none() {
                self.err(FieldError::required(
                    &keyword_path(path, &format!("properties[{name}]")),
                    "must have a corresponding property outside of the logical junctors",
                ));
            }
        }
        if junctor.items.is_some() && outer.items.is_none() {
            self.err(FieldError::required(
                &keyword_path(path, "items"),
                "must have a corresponding items outside of the logical junctors",
            ));
        }
    }

    fn list_and_map_types(&mut self, obj: &Map<String, Value>, n: &mut Node, path: &str) {
        if let Some(lt) = obj.get("x-kubernetes-list-type").and_then(Value::as_str) {
            let p = keyword_path(path, "x-kubernetes-list-type");
            if n.ty.as_deref() != Some("array") {
                self.err(FieldError::invalid(
                    &p,
                    Value::String(lt.to_owned()),
                    "must only be used if type == array",
                ));
            }
            match lt {
                "atomic" | "set" | "map" => n.list_type = Some(lt.to_owned()),
                other => self.err(FieldError::new(
                    p.clone(),
                    ErrorType::NotSupported,
                    supported(&["atomic", "set", "map"]),
                    Some(Value::String(other.to_owned())),
                )),
            }
            if lt == "set" {
                if let Some(items) = &n.items {
                    let scalar = matches!(
                        items.ty.as_deref(),
                        Some("string" | "integer" | "number" | "boolean")
                    ) || items.int_or_string;
                    if !scalar && items.map_type.as_deref() != Some("atomic") {
                        self.err(FieldError::invalid(
                            &keyword_path(path, "items"),
                            Value::String(items.type_name().to_owned()),
                            "must be a scalar type if x-kubernetes-list-type is set",
                        ));
                    }
                }
            }
        }
        if let Some(keys) = obj.get("x-kubernetes-list-map-keys") {
            let p = keyword_path(path, "x-kubernetes-list-map-keys");
            n.list_map_keys = keys
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if n.list_type.as_deref() != Some("map") {
                self.err(FieldError::forbidden(
                    &p,
                    "must only be used if x-kubernetes-list-type is map",
                ));
            }
        }
        if n.list_type.as_deref() == Some("map") {
            let p = keyword_path(path, "x-kubernetes-list-map-keys");
            if n.list_map_keys.is_empty() {
                self.err(FieldError::required(
                    &p,
                    "must not be empty if x-kubernetes-list-type is map",
                ));
            }
            match &n.items {
                Some(items) if items.ty.as_deref() == Some("object") => {
                    for key in &n.list_map_keys {
                        match items.properties.get(key) {
                            None => self.err(FieldError::invalid(
                                &p,
                                Value::String(key.clone()),
                                "entries must all be names of item properties",
                            )),
                            Some(k) => {
                                let scalar = matches!(
                                    k.ty.as_deref(),
                                    Some("string" | "integer" | "number" | "boolean")
                                ) || k.int_or_string;
                                if !scalar {
                                    self.err(FieldError::invalid(
                                        &keyword_path(
                                            path,
                                            &format!("items.properties[{key}].type"),
                                        ),
                                        Value::String(k.type_name().to_owned()),
                                        "must be a scalar type if parent array's x-kubernetes-list-type is map",
                                    ));
                                }
                                if !items.required.contains(key) && k.default.is_none() {
                                    self.err(FieldError::required(
                                        &keyword_path(path, "items.required"),
                                        format!("all map keys must be required or have a default value, but {key:?} is neither"),
                                    ));
                                }
                            }
                        }
                    }
                }
                _ => self.err(FieldError::invalid(
                    &keyword_path(path, "items.type"),
                    Value::String(
                        n.items
                            .as_ref()
                            .map(|i| i.type_name().to_owned())
                            .unwrap_or_default(),
                    ),
                    "must be object if parent array's x-kubernetes-list-type is map",
                )),
            }
        }
        if let Some(mt) = obj.get("x-kubernetes-map-type").and_then(Value::as_str) {
            let p = keyword_path(path, "x-kubernetes-map-type");
            if n.ty.as_deref() != Some("object") {
                self.err(FieldError::invalid(
                    &p,
                    Value::String(mt.to_owned()),
                    "must only be used if type == object",
                ));
            }
            match mt {
                "granular" | "atomic" => n.map_type = Some(mt.to_owned()),
                other => self.err(FieldError::new(
                    p,
                    ErrorType::NotSupported,
                    supported(&["granular", "atomic"]),
                    Some(Value::String(other.to_owned())),
                )),
            }
        }
    }

    fn rules(&mut self, obj: &Map<String, Value>, n: &mut Node, path: &str) {
        let Some(list) = obj.get("x-kubernetes-validations") else {
            return;
        };
        let Some(list) = list.as_array() else {
            self.err(FieldError::invalid(
                &keyword_path(path, "x-kubernetes-validations"),
                list.clone(),
                "must be an array",
            ));
            return;
        };
        for (i, r) in list.iter().enumerate() {
            let p = keyword_path(path, &format!("x-kubernetes-validations[{i}]"));
            match Rule::compile(r, i, n, &p) {
                Ok(rule) => n.rules.push(rule),
                Err(errs) => self.errors.extend(errs),
            }
        }
    }
}

impl Node {
    /// In a junctor, `type` may still appear for the int-or-string pattern
    /// (`anyOf: [{type: integer}, {type: string}]`).
    fn int_or_string_pattern_ok(&self, obj: &Map<String, Value>, key: &str) -> bool {
        key == "type"
            && matches!(
                obj.get("type").and_then(Value::as_str),
                Some("integer" | "string")
            )
    }
}

fn flag(obj: &Map<String, Value>, key: &str) -> bool {
    obj.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Upstream's `supported values: "a", "b"` detail.
pub(crate) fn supported(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| crate::error::go_quote(v)).collect();
    format!("supported values: {}", quoted.join(", "))
}
