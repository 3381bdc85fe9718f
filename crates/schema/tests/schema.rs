//! kcore-schema against upstream's behaviour: cases from the Kubernetes documentation
//! ("Extend the Kubernetes API with CustomResourceDefinitions", "Validation rules") and
//! apiextensions-apiserver's tests, each error's path and text asserted.

use kcore_schema::{CostLimits, ErrorType, FieldError, Schema};
use serde_json::{json, Value};

fn schema(v: Value) -> Schema {
    match Schema::new(&v) {
        Ok(s) => s,
        Err(e) => panic!("schema refused: {}", texts(&e).join("\n")),
    }
}

fn texts(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

fn refused(v: Value) -> Vec<String> {
    match Schema::new(&v) {
        Ok(_) => panic!("schema accepted: {v}"),
        Err(e) => texts(&e),
    }
}

/// A CRD root with `spec` as given.
fn with_spec(spec: Value) -> Value {
    json!({"type": "object", "properties": {"spec": spec}})
}

fn obj(spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec})
}

fn errors_of(s: &Schema, spec: Value) -> Vec<String> {
    texts(&s.validate(&obj(spec), None))
}

// ---------- OpenAPI validation ----------

#[test]
fn type_errors_name_the_field_and_actual_type() {
    let s = schema(with_spec(json!({"type": "object", "properties": {
        "replicas": {"type": "integer"},
        "ratio": {"type": "number"},
        "name": {"type": "string"},
        "on": {"type": "boolean"},
        "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}
    }})));
    assert_eq!(
        errors_of(&s, json!({"replicas": "3"})),
        vec![
            r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#
        ]
    );
    let e = s.validate(&obj(json!({"replicas": 1.5})), None);
    assert_eq!(e[0].error_type, ErrorType::TypeInvalid);
    assert_eq!(e[0].error_type.reason(), "FieldValueTypeInvalid");
    assert_eq!(e[0].field, "spec.replicas");
    assert!(e[0]
        .message
        .ends_with(r#"must be of type integer: "number""#));
    // integral floats are integers; integers are numbers
    assert!(errors_of(&s, json!({"replicas": 2.0, "ratio": 3})).is_empty());
    assert_eq!(
        errors_of(
            &s,
            json!({"items": [{"name": "a"}, {"name": "b"}, {"name": 7}]})
        ),
        vec![
            r#"spec.items[2].name: Invalid value: "integer": spec.items[2].name in body must be of type string: "integer""#
        ]
    );
    assert_eq!(
        errors_of(&s, json!({"on": "yes"})),
        vec![
            r#"spec.on: Invalid value: "string": spec.on in body must be of type boolean: "string""#
        ]
    );
}

#[test]
fn required_enum_and_nullable() {
    let s = schema(with_spec(
        json!({"type": "object", "required": ["size"], "properties": {
            "size": {"type": "string", "enum": ["small", "large"]},
            "level": {"type": "integer", "enum": [1, 2]},
            "note": {"type": "string", "nullable": true},
            "other": {"type": "object"}
        }}),
    ));
    assert_eq!(errors_of(&s, json!({})), vec!["spec.size: Required value"]);
    let e = s.validate(&obj(json!({"size": "medium"})), None);
    assert_eq!(
        e[0].to_string(),
        r#"spec.size: Unsupported value: "medium": supported values: "small", "large""#
    );
    assert_eq!(e[0].error_type.reason(), "FieldValueNotSupported");
    assert_eq!(
        errors_of(&s, json!({"size": "small", "level": 3})),
        vec![r#"spec.level: Unsupported value: 3: supported values: "1", "2""#]
    );
    assert!(errors_of(&s, json!({"size": "small", "note": null})).is_empty());
    assert_eq!(
        errors_of(&s, json!({"size": "small", "other": null})),
        vec![
            r#"spec.other: Invalid value: "null": spec.other in body must be of type object: "null""#
        ]
    );
}

#[test]
fn numbers_strings_and_formats() {
    let s = schema(with_spec(json!({"type": "object", "properties": {
        "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
        "ex": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1.5, "exclusiveMaximum": true},
        "step": {"type": "integer", "multipleOf": 5},
        "code": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$"},
        "when": {"type": "string", "format": "date-time"},
        "addr": {"type": "string", "format": "ipv4"}
    }})));
    assert_eq!(
        errors_of(&s, json!({"replicas": 20})),
        vec!["spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10"]
    );
    assert_eq!(
        errors_of(&s, json!({"replicas": 0})),
        vec!["spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1"]
    );
    assert_eq!(
        errors_of(&s, json!({"ex": 0})),
        vec!["spec.ex: Invalid value: 0: spec.ex in body should be greater than 0"]
    );
    assert_eq!(
        errors_of(&s, json!({"ex": 1.5})),
        vec!["spec.ex: Invalid value: 1.5: spec.ex in body should be less than 1.5"]
    );
    assert_eq!(
        errors_of(&s, json!({"step": 7})),
        vec!["spec.step: Invalid value: 7: spec.step in body should be a multiple of 5"]
    );
    let e = s.validate(&obj(json!({"code": "abcdefg"})), None);
    assert_eq!(
        texts(&e),
        vec!["spec.code: Too long: may not be more than 5 bytes"]
    );
    assert_eq!(e[0].error_type, ErrorType::TooLong);
    assert_eq!(
        errors_of(&s, json!({"code": "A"})),
        vec![
            r#"spec.code: Invalid value: "A": spec.code in body should be at least 2 chars long"#,
            r#"spec.code: Invalid value: "A": spec.code in body should match '^[a-z]+$'"#,
        ]
    );
    assert_eq!(
        errors_of(&s, json!({"when": "yesterday", "addr": "10.0.0.1"})),
        vec![
            r#"spec.when: Invalid value: "yesterday": spec.when in body must be of type date-time: "yesterday""#
        ]
    );
    assert!(errors_of(&s, json!({"when": "2024-05-01T10:00:00Z"})).is_empty());
}

#[test]
fn items_and_properties_counts() {
    let s = schema(with_spec(json!({"type": "object", "properties": {
        "tags": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string"}},
        "labels": {"type": "object", "minProperties": 1, "maxProperties": 1,
                   "additionalProperties": {"type": "string"}}
    }})));
    let e = s.validate(&obj(json!({"tags": ["a", "b", "c"]})), None);
    assert_eq!(
        texts(&e),
        vec!["spec.tags: Too many: 3: must have at most 2 items"]
    );
    assert_eq!(e[0].error_type.reason(), "FieldValueTooMany");
    assert_eq!(
        errors_of(&s, json!({"tags": []})),
        vec!["spec.tags: Invalid value: 0: spec.tags in body should have at least 1 items"]
    );
    assert_eq!(
        errors_of(&s, json!({"labels": {"a": "1", "b": "2"}})),
        vec!["spec.labels: Too many: 2: must have at most 1 item"]
    );
    assert_eq!(
        errors_of(&s, json!({"labels": {"a": 1}})),
        vec![
            r#"spec.labels.a: Invalid value: "integer": spec.labels.a in body must be of type string: "integer""#
        ]
    );
}

#[test]
fn junctors() {
    let s = schema(with_spec(json!({"type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}, "n": {"type": "integer",
            "not": {"enum": [13]}, "allOf": [{"minimum": 0}, {"maximum": 100}]}},
        "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
        "anyOf": [{"properties": {"a": {"maxLength": 1}}}, {"properties": {"b": {"maxLength": 1}}}]
    })));
    assert!(errors_of(&s, json!({"a": "x"})).is_empty());
    let e = errors_of(&s, json!({"a": "x", "b": "y"}));
    assert_eq!(
        e,
        vec![
            r#"<nil>: Invalid value: "": "spec" must validate one and only one schema (oneOf). Found 2 valid alternatives"#
        ]
    );
    let e = errors_of(&s, json!({}));
    assert_eq!(
        e[0],
        r#"<nil>: Invalid value: "": "spec" must validate one and only one schema (oneOf). Found none valid"#
    );
    assert!(e.contains(&"spec.a: Required value".to_owned()), "{e:?}");
    let e = errors_of(&s, json!({"a": "xx", "b": "yy"}));
    assert!(
        e.contains(
            &r#"<nil>: Invalid value: "": "spec" must validate at least one schema (anyOf)"#
                .to_owned()
        ),
        "{e:?}"
    );
    assert_eq!(
        errors_of(&s, json!({"a": "x", "n": 13})),
        vec![r#"<nil>: Invalid value: "": "spec.n" must not validate the schema (not)"#]
    );
    let e = errors_of(&s, json!({"a": "x", "n": 101}));
    assert_eq!(
        e[0],
        "spec.n: Invalid value: 101: spec.n in body should be less than or equal to 100"
    );
    assert_eq!(
        e[1],
        r#"<nil>: Invalid value: "": "spec.n" must validate all the schemas (allOf)"#
    );
}

#[test]
fn int_or_string() {
    let s = schema(with_spec(json!({"type": "object", "properties": {
        "port": {"x-kubernetes-int-or-string": true},
        "checked": {"x-kubernetes-int-or-string": true,
                    "anyOf": [{"type": "integer"}, {"type": "string"}], "pattern": "^[0-9]+%$"}
    }})));
    assert!(errors_of(&s, json!({"port": 80})).is_empty());
    assert!(errors_of(&s, json!({"port": "http"})).is_empty());
    assert_eq!(
        errors_of(&s, json!({"port": true})),
        vec![
            r#"spec.port: Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean""#
        ]
    );
    assert!(errors_of(&s, json!({"checked": "50%"})).is_empty());
    assert_eq!(
        errors_of(&s, json!({"checked": "half"})),
        vec![
            r#"spec.checked: Invalid value: "half": spec.checked in body should match '^[0-9]+%$'"#
        ]
    );
}

#[test]
fn list_type_set_and_map_duplicates() {
    let s = schema(with_spec(json!({"type": "object", "properties": {
        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "ports": {"type": "array", "x-kubernetes-list-type": "map",
                  "x-kubernetes-list-map-keys": ["name", "protocol"],
                  "items": {"type": "object", "required": ["name", "protocol"], "properties": {
                      "name": {"type": "string"}, "protocol": {"type": "string"}, "port": {"type": "integer"}}}}
    }})));
    let e = s.validate(&obj(json!({"tags": ["a", "b", "a"]})), None);
    assert_eq!(texts(&e), vec![r#"spec.tags[2]: Duplicate value: "a""#]);
    assert_eq!(e[0].error_type.reason(), "FieldValueDuplicate");
    assert_eq!(
        errors_of(
            &s,
            json!({"ports": [
            {"name": "http", "protocol": "TCP", "port": 80},
            {"name": "http", "protocol": "UDP", "port": 80},
            {"name": "http", "protocol": "TCP", "port": 8080}]})
        ),
        vec![r#"spec.ports[2]: Duplicate value: {"name":"http","protocol":"TCP"}"#]
    );
}

#[test]
fn embedded_resources_need_api_version_and_kind() {
    let s = schema(with_spec(json!({"type": "object", "properties": {
        "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                     "x-kubernetes-preserve-unknown-fields": true}
    }})));
    assert_eq!(
        errors_of(&s, json!({"template": {"metadata": {"name": "a/b"}}})),
        vec![
            "spec.template.apiVersion: Required value",
            "spec.template.kind: Required value",
            r#"spec.template.metadata.name: Invalid value: "a/b": may not contain '/'"#,
        ]
    );
    assert_eq!(
        errors_of(
            &s,
            json!({"template": {"apiVersion": "a/b/c", "kind": "9Pod"}})
        ),
        vec![
            r#"spec.template.apiVersion: Invalid value: "a/b/c": unexpected GroupVersion string: a/b/c"#,
            r#"spec.template.kind: Invalid value: "9Pod": may have mixed case, but should otherwise match: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"#,
        ]
    );
    assert!(errors_of(
        &s,
        json!({"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}})
    )
    .is_empty());
}

// ---------- structural checks ----------

#[test]
fn structural_checks() {
    let e = refused(json!({"type": "object", "properties": {
        "spec": {"properties": {"a": {"type": "string"}}},
        "list": {"type": "array"},
        "both": {"type": "object", "properties": {"x": {"type": "string"}},
                 "additionalProperties": {"type": "string"}},
        "bad": {"type": "strnig"},
        "junk": {"type": "object", "anyOf": [{"type": "object"}],
                 "properties": {"x": {"type": "string"}}},
        "uniq": {"type": "array", "uniqueItems": true, "items": {"type": "string"}},
        "ref": {"$ref": "#/definitions/x"}
    }}));
    let expected = [
        "properties[spec].type: Required value: must not be empty for specified object fields",
        "properties[list].items: Required value: must be specified",
        "properties[both].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive",
        r#"properties[bad].type: Unsupported value: "strnig": supported values: "array", "boolean", "integer", "number", "object", "string""#,
        "properties[junk].anyOf[0].type: Forbidden: must be empty to be structural",
        "properties[uniq].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        "properties[ref].$ref: Forbidden: $ref is not supported",
    ];
    for want in expected {
        assert!(e.contains(&want.to_owned()), "missing {want:?} in {e:#?}");
    }
    let e = refused(
        json!({"type": "object", "additionalProperties": {"type": "string"}, "properties": {
            "emb": {"type": "object", "x-kubernetes-embedded-resource": true},
            "emb2": {"x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
            "j": {"type": "object", "properties": {"a": {"type": "string"}},
                  "allOf": [{"description": "d", "default": {}, "nullable": true, "properties": {"metadata": {}, "a": {}}}]},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                     "properties": {"untyped": {"description": "children still need a type"}}}
        }}),
    );
    let expected = [
        "additionalProperties: Forbidden: must not be used at the root",
        "properties[emb].properties: Required value: must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        "properties[emb2].type: Required value: must be object if x-kubernetes-embedded-resource is true",
        "properties[j].allOf[0].description: Forbidden: must be empty to be structural",
        "properties[j].allOf[0].default: Forbidden: must be undefined to be structural",
        "properties[j].allOf[0].nullable: Forbidden: must be false to be structural",
        "properties[j].allOf[0].properties[metadata]: Forbidden: must not be specified in a nested context",
        "properties[free].properties[untyped].type: Required value: must not be empty for specified object fields",
    ];
    for want in expected {
        assert!(e.contains(&want.to_owned()), "missing {want:?} in {e:#?}");
    }
    // the root must be an object
    assert_eq!(
        refused(json!({"type": "string"})),
        vec![r#"type: Invalid value: "string": must be object at the root"#]
    );
    // metadata may only restrict name and generateName
    let e = refused(json!({"type": "object", "properties": {
        "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}}));
    assert_eq!(
        e,
        vec!["properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"]
    );
    schema(json!({"type": "object", "properties": {
        "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}}}}));
    // list-map keys must be required or defaulted
    let e = refused(with_spec(
        json!({"type": "array", "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        "items": {"type": "object", "properties": {"name": {"type": "string"}}}}),
    ));
    assert_eq!(
        e,
        vec![
            r#"properties[spec].items.required: Required value: all map keys must be required or have a default value, but "name" is neither"#
        ]
    );
    // errors go under the CRD's path
    let e = Schema::new(&json!({"type": "string"})).unwrap_err();
    assert_eq!(
        e[0].clone()
            .prefixed("spec.versions[0].schema.openAPIV3Schema")
            .field,
        "spec.versions[0].schema.openAPIV3Schema.type"
    );
}

#[test]
fn defaults_must_be_valid_and_known() {
    let e = refused(with_spec(json!({"type": "object", "properties": {
        "replicas": {"type": "integer", "maximum": 5, "default": 10},
        "obj": {"type": "object", "properties": {"a": {"type": "string"}}, "default": {"a": "x", "b": 1}}
    }})));
    assert_eq!(
        e,
        vec![
            r#"properties[spec].properties[obj].default: Invalid value: {"a":"x","b":1}: must not have unknown fields, but got "b""#,
            "properties[spec].properties[replicas].default: Invalid value: 10: properties[spec].properties[replicas].default in body should be less than or equal to 5",
        ]
    );
}

// ---------- defaulting ----------

#[test]
fn defaulting_nested_arrays_and_nulls() {
    let s = schema(with_spec(
        json!({"type": "object", "default": {}, "properties": {
            "replicas": {"type": "integer", "default": 1},
            "strategy": {"type": "object", "default": {}, "properties": {
                "type": {"type": "string", "default": "RollingUpdate"},
                "maxSurge": {"x-kubernetes-int-or-string": true, "default": "25%"}}},
            "ports": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "protocol": {"type": "string", "default": "TCP"}}}},
            "nullable": {"type": "string", "nullable": true, "default": "d"},
            "plain": {"type": "string", "default": "p"},
            "dropped": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "v": {"type": "string", "default": "dv"}}}}
        }}),
    ));
    let mut o = json!({"apiVersion": "example.com/v1", "kind": "Widget"});
    s.default(&mut o);
    assert_eq!(
        o["spec"],
        json!({"replicas": 1, "strategy": {"type": "RollingUpdate", "maxSurge": "25%"},
               "nullable": "d", "plain": "p"})
    );
    let mut o = obj(
        json!({"replicas": 3, "ports": [{"name": "a"}, {"name": "b", "protocol": "UDP"}],
        "nullable": null, "plain": null, "dropped": null, "labels": {"x": {}}}),
    );
    s.default(&mut o);
    assert_eq!(
        o["spec"],
        json!({"replicas": 3, "strategy": {"type": "RollingUpdate", "maxSurge": "25%"},
               "ports": [{"name": "a", "protocol": "TCP"}, {"name": "b", "protocol": "UDP"}],
               "nullable": null, "plain": "p", "labels": {"x": {"v": "dv"}}})
    );
}

// ---------- pruning ----------

#[test]
fn pruning_unknown_preserved_and_embedded() {
    let s = schema(with_spec(json!({"type": "object", "properties": {
        "known": {"type": "object", "properties": {"a": {"type": "string"}}},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                 "properties": {"inner": {"type": "object", "properties": {"k": {"type": "string"}}}}},
        "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                     "properties": {"spec": {"type": "object", "properties": {"image": {"type": "string"}}}}},
        "items": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        "map": {"type": "object", "additionalProperties": {"type": "object", "properties": {"v": {"type": "string"}}}}
    }})));
    let mut o = json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "status": {"x": 1},
        "spec": {
            "unknown": 1,
            "known": {"a": "x", "b": "y"},
            "free": {"anything": {"deep": [1, 2]}, "inner": {"k": "v", "drop": true}},
            "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "bogusMeta": 1}, "extra": 1,
                         "spec": {"image": "nginx", "bogus": 2}},
            "items": [{"n": 1, "x": 2}],
            "map": {"a": {"v": "1", "w": "2"}}
        }
    });
    let mut pruned = s.prune_report(&mut o);
    pruned.sort();
    assert_eq!(
        o,
        json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {
                "known": {"a": "x"},
                "free": {"anything": {"deep": [1, 2]}, "inner": {"k": "v"}},
                "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                             "spec": {"image": "nginx"}},
                "items": [{"n": 1}],
                "map": {"a": {"v": "1"}}
            }
        })
    );
    assert_eq!(
        pruned,
        vec![
            "spec.free.inner.drop",
            "spec.items[0].x",
            "spec.known.b",
            "spec.map.a.w",
            "spec.template.extra",
            "spec.template.metadata.bogusMeta",
            "spec.template.spec.bogus",
            "spec.unknown",
            "status",
        ]
    );
}

// ---------- CEL rules ----------

fn scale_schema() -> Schema {
    schema(with_spec(json!({"type": "object",
    "x-kubernetes-validations": [
        {"rule": "self.minReplicas <= self.replicas", "message": "replicas should be greater than or equal to minReplicas"},
        {"rule": "self.replicas <= self.maxReplicas", "messageExpression": "'replicas ' + string(self.replicas) + ' above ' + string(self.maxReplicas)"},
        {"rule": "!has(self.name) || self.name.startsWith('a')", "reason": "FieldValueForbidden", "fieldPath": ".name", "message": "name must start with a"}
    ],
    "properties": {
        "minReplicas": {"type": "integer"}, "replicas": {"type": "integer"}, "maxReplicas": {"type": "integer"},
        "name": {"type": "string", "maxLength": 64}
    }})))
}

#[test]
fn cel_rules_messages_reasons_and_field_paths() {
    let s = scale_schema();
    assert!(errors_of(
        &s,
        json!({"minReplicas": 1, "replicas": 2, "maxReplicas": 3})
    )
    .is_empty());
    let e = s.validate(
        &obj(json!({"minReplicas": 5, "replicas": 2, "maxReplicas": 3})),
        None,
    );
    assert_eq!(
        texts(&e),
        vec!["spec: Invalid value: replicas should be greater than or equal to minReplicas"]
    );
    assert_eq!(e[0].bad_value, None);
    assert_eq!(
        errors_of(
            &s,
            json!({"minReplicas": 1, "replicas": 9, "maxReplicas": 3, "name": "bob"})
        ),
        vec![
            "spec: Invalid value: replicas 9 above 3",
            "spec.name: Forbidden: name must start with a"
        ]
    );
}

#[test]
fn cel_doc_examples() {
    let s = schema(with_spec(json!({"type": "object", "properties": {
        "names": {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 20},
                  "x-kubernetes-validations": [{"rule": "self.all(x, x.startsWith('a'))"}]},
        "replicas": {"type": "integer", "x-kubernetes-validations": [{"rule": "self >= 0 && self % 2 == 0"}]},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 10}, "maxProperties": 10,
                   "x-kubernetes-validations": [{"rule": "'app' in self", "message": "must have an app label"}]},
        "words": {"type": "string", "maxLength": 100,
                  "x-kubernetes-validations": [{"rule": "self.split(' ').size() <= 3 && self.lowerAscii() == self"}]}
    }})));
    assert!(errors_of(
        &s,
        json!({"names": ["ab", "ac"], "replicas": 2, "labels": {"app": "x"}, "words": "a b c"})
    )
    .is_empty());
    assert_eq!(
        errors_of(&s, json!({"names": ["ab", "bc"]})),
        vec!["spec.names: Invalid value: failed rule: self.all(x, x.startsWith('a'))"]
    );
    assert_eq!(
        errors_of(&s, json!({"replicas": 3})),
        vec!["spec.replicas: Invalid value: 3: failed rule: self >= 0 && self % 2 == 0"]
    );
    assert_eq!(
        errors_of(&s, json!({"labels": {"team": "x"}})),
        vec!["spec.labels: Invalid value: must have an app label"]
    );
    assert_eq!(
        errors_of(&s, json!({"words": "One two"})),
        vec![
            r#"spec.words: Invalid value: "One two": failed rule: self.split(' ').size() <= 3 && self.lowerAscii() == self"#
        ]
    );
}

#[test]
fn cel_transition_rules() {
    let s = schema(with_spec(json!({"type": "object", "properties": {
        "immutable": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "Value is immutable"}]},
        "counter": {"type": "integer", "x-kubernetes-validations": [
            {"rule": "!oldSelf.hasValue() || self >= oldSelf.value()", "optionalOldSelf": true, "message": "may only grow"},
            {"rule": "oldSelf.hasValue() || self < 100", "optionalOldSelf": true, "message": "must start below 100"}]}
    }})));
    // create: transition rules without optionalOldSelf do not run
    assert!(s
        .validate(&obj(json!({"immutable": "a", "counter": 5})), None)
        .is_empty());
    assert_eq!(
        errors_of(&s, json!({"counter": 500})),
        vec!["spec.counter: Invalid value: 500: must start below 100"]
    );
    let old = obj(json!({"immutable": "a", "counter": 5}));
    assert!(s
        .validate(&obj(json!({"immutable": "a", "counter": 500})), Some(&old))
        .is_empty());
    assert_eq!(
        texts(&s.validate(&obj(json!({"immutable": "b", "counter": 4})), Some(&old))),
        vec![
            "spec.counter: Invalid value: 4: may only grow",
            r#"spec.immutable: Invalid value: "b": Value is immutable"#,
        ]
    );
    // a field that did not exist before has no oldSelf: the plain transition rule skips
    let old = obj(json!({"counter": 5}));
    assert!(s
        .validate(&obj(json!({"immutable": "new", "counter": 6})), Some(&old))
        .is_empty());
}

#[test]
fn cel_transition_rules_in_list_maps_correlate_by_key() {
    let s = schema(with_spec(json!({"type": "object", "properties": {
        "ports": {"type": "array", "maxItems": 10, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                  "items": {"type": "object", "required": ["name"], "properties": {
                      "name": {"type": "string", "maxLength": 10}, "port": {"type": "integer"}},
                      "x-kubernetes-validations": [{"rule": "self.port == oldSelf.port", "message": "port is immutable"}]}}
    }})));
    let old = obj(json!({"ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}]}));
    let new = obj(
        json!({"ports": [{"name": "b", "port": 2}, {"name": "a", "port": 9}, {"name": "c", "port": 3}]}),
    );
    assert_eq!(
        texts(&s.validate(&new, Some(&old))),
        vec!["spec.ports[1]: Invalid value: port is immutable"]
    );
    // oldSelf inside a plain list cannot be correlated
    let e = refused(with_spec(json!({"type": "object", "properties": {
        "xs": {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 10,
            "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}}}})));
    assert_eq!(
        e,
        vec![
            r#"properties[spec].properties[xs].items.x-kubernetes-validations: Invalid value: "self == oldSelf": oldSelf cannot be used on the uncorrelatable portion of the schema within a list that is not x-kubernetes-list-type: map"#
        ]
    );
}

#[test]
fn cel_kubernetes_libraries() {
    let rules = [
        "self.nums.isSorted() && self.nums.sum() == 6 && self.nums.min() == 1 && self.nums.max() == 3",
        "self.nums.indexOf(2) == 1 && self.nums.lastIndexOf(7) == -1",
        "self.name.indexOf('b') == 1 && self.name.substring(1, 3) == 'bc' && self.name.upperAscii() == 'ABCD'",
        "'a,b'.split(',').join('-') == 'a-b' && '  x '.trim() == 'x' && self.name.replace('b', 'B') == 'aBcd'",
        "self.name.matches('^a[b-d]+$') && self.name.find('[cd]+') == 'cd' && 'a1b22'.findAll('[0-9]+') == ['1', '22']",
        "url(self.url).getScheme() == 'https' && url(self.url).getHost() == 'example.com:8443' && url(self.url).getHostname() == 'example.com'",
        "url(self.url).getPort() == '8443' && url(self.url).getEscapedPath() == '/a/b' && url(self.url).getQuery()['x'] == ['1', '2']",
        "isURL(self.url) && !isURL('not a url')",
        "quantity(self.mem).isGreaterThan(quantity('1Gi')) && quantity('1').compareTo(quantity('1000m')) == 0",
        "quantity(self.mem).add(quantity('512Mi')) == quantity('2560Mi') && quantity('2').sub(1).asInteger() == 1",
        "isQuantity(self.mem) && !isQuantity('1.5.5') && quantity('1.5').isInteger() == false && quantity('-1').sign() == -1",
        "self.nums.exists_one(n, n == 2) && self.nums.map(n, n * 2) == [2, 4, 6] && self.nums.filter(n, n > 1).size() == 2",
        "has(self.name) && !has(self.missing) && size(self.name) == 4",
        "size(self.blob) == 5",
        "self.blob == b'hello'",
        "!format.dns1123Label().validate(self.name).hasValue() && format.dns1123Label().validate('Bad_Name').value().size() == 1",
        "format.named('labelValue').value().validate('ok.value-1') == optional.none() && !format.named('nope').hasValue() && format.qualifiedName().validate('example.com/a_b').hasValue() == false",
        "isIP('10.0.0.1') && !isIP('10.0.0.300') && !isIP('::ffff:1.2.3.4') && ip('fe80::1').family() == 6 && ip('127.0.0.1').isLoopback() && ip('8.8.8.8').isGlobalUnicast()",
        "cidr('10.0.0.0/8').containsIP(ip('10.1.2.3')) && cidr('10.0.0.0/8').containsIP('10.9.9.9') && !cidr('10.0.0.0/8').containsIP('11.0.0.1') && cidr('10.0.0.0/8').containsCIDR('10.1.0.0/16')",
        "cidr('192.168.1.7/24').masked() == cidr('192.168.1.0/24') && cidr('192.168.1.7/24').prefixLength() == 24 && string(cidr('192.168.1.7/24').ip()) == '192.168.1.7' && isCIDR('fd00::/8') && !isCIDR('10.0.0.0/40')",
        "sets.contains(self.nums, [1, 3]) && !sets.contains(self.nums, [4]) && sets.equivalent([3, 2, 1], self.nums) && sets.intersects(self.nums, [9, 2])",
        "self.ratio == 2.0",
        "type(self.ratio) == double",
    ];
    let validations: Vec<Value> = rules.iter().map(|r| json!({"rule": r})).collect();
    let s = schema(with_spec(
        json!({"type": "object", "x-kubernetes-validations": validations, "properties": {
            "nums": {"type": "array", "maxItems": 10, "items": {"type": "integer"}},
            "name": {"type": "string", "maxLength": 10},
            "missing": {"type": "string"},
            "url": {"type": "string", "maxLength": 100},
            "mem": {"type": "string", "maxLength": 10},
            "blob": {"type": "string", "format": "byte", "maxLength": 100},
            "ratio": {"type": "number"}
        }}),
    ));
    let e = errors_of(
        &s,
        json!({"nums": [1, 2, 3], "name": "abcd", "url": "https://example.com:8443/a/b?x=1&x=2", "mem": "2Gi",
               "blob": "aGVsbG8=", "ratio": 2}),
    );
    assert!(e.is_empty(), "{e:#?}");
    // each rule fails on other data
    let e = errors_of(
        &s,
        json!({"nums": [3, 1], "name": "zz", "url": "ftp://h/", "mem": "1Mi"}),
    );
    assert!(e.len() >= 8, "{e:#?}");
}

#[test]
fn cel_compile_errors_and_bad_fields() {
    let e = refused(with_spec(json!({"type": "object",
        "x-kubernetes-validations": [
            {"rule": "self.a ==", "message": "m"},
            {"rule": "true", "reason": "Bogus"},
            {"rule": "true", "fieldPath": ".nope"},
            {"rule": ""},
            {"rule": "self.a.frobnicate() && has(self.a)"},
            {"rule": "self.all(k, nonsense(k))"}
        ],
        "properties": {"a": {"type": "string"}}})));
    assert!(e[0].starts_with(r#"properties[spec].x-kubernetes-validations[0].rule: Invalid value: "self.a ==": compilation failed"#), "{e:#?}");
    assert_eq!(
        e[1],
        r#"properties[spec].x-kubernetes-validations[1].reason: Unsupported value: "Bogus": supported values: "FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired""#
    );
    assert_eq!(
        e[2],
        r#"properties[spec].x-kubernetes-validations[2].fieldPath: Invalid value: ".nope": fieldPath must be a valid path: does not refer to a valid field"#
    );
    assert_eq!(
        e[3],
        "properties[spec].x-kubernetes-validations[3].rule: Required value"
    );
    // a rule that fails at runtime names the rule
    let s = schema(with_spec(
        json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.a == 'x'"}],
        "properties": {"a": {"type": "string"}}}),
    ));
    let e = errors_of(&s, json!({}));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(r#"spec: Invalid value: "object": "#)
            && e[0].ends_with("evaluating rule: self.a == 'x'"),
        "{e:?}"
    );
}

#[test]
fn cel_skipped_after_blocking_errors() {
    let s = scale_schema();
    assert_eq!(
        errors_of(&s, json!({"replicas": "x"})),
        vec![
            r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#,
            "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        ]
    );
}

#[test]
fn cel_cost_refused_at_compile_time() {
    // strings of unbounded length in a list of unbounded size: refused, as upstream
    let e = refused(with_spec(json!({"type": "object", "properties": {
        "names": {"type": "array", "items": {"type": "string"},
                  "x-kubernetes-validations": [{"rule": "self.all(x, x.contains('a'))"}]}}})));
    // the rule, its share of the schema-wide total, and the total
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].starts_with("properties[spec].properties[names].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of"), "{e:?}");
    assert!(e[0].contains("adding maxItems, maxProperties, and maxLength"));
    // the same rule with bounds compiles
    schema(with_spec(json!({"type": "object", "properties": {
        "names": {"type": "array", "maxItems": 100, "items": {"type": "string", "maxLength": 64},
                  "x-kubernetes-validations": [{"rule": "self.all(x, x.contains('a'))"}]}}})));
}

#[test]
fn cel_cost_stops_at_runtime() {
    // quadratic over a list bounded at 1000 items: within the compile-time estimate
    // limit (10M), but over the per-call limit (1M) once the list is long
    let s = schema(with_spec(json!({"type": "object", "properties": {
        "xs": {"type": "array", "maxItems": 1000, "items": {"type": "integer"},
               "x-kubernetes-validations": [{"rule": "self.all(x, self.exists(y, y == x))"}]}}})));
    let small: Vec<i64> = (0..10).collect();
    assert!(errors_of(&s, json!({"xs": small})).is_empty());
    let big: Vec<i64> = (0..1000).collect();
    assert_eq!(
        errors_of(&s, json!({"xs": big})),
        vec!["spec.xs: Invalid value: \"array\": 'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: self.all(x, self.exists(y, y == x))"]
    );
    // the per-object budget stops rules on many items
    let limits = CostLimits {
        per_object: 500,
        ..CostLimits::default()
    };
    let s = Schema::with_limits(
        &with_spec(json!({"type": "object", "properties": {"items": {"type": "array", "maxItems": 1000,
            "items": {"type": "object", "properties": {"n": {"type": "integer"}},
                      "x-kubernetes-validations": [{"rule": "self.n >= 0 && self.n < 1000000"}]}}}})),
        limits,
    )
    .unwrap();
    let items: Vec<Value> = (0..200).map(|n| json!({"n": n})).collect();
    let e = errors_of(&s, json!({"items": items}));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].ends_with("validation failed due to running out of cost budget, no further validation rules will be run"), "{e:?}");
}

#[test]
fn schemas_are_shared_across_threads() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Schema>();
    let s = std::sync::Arc::new(scale_schema());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                errors_of(
                    &s,
                    json!({"minReplicas": i + 2, "replicas": 1, "maxReplicas": 5}),
                )
            })
        })
        .collect();
    for h in handles {
        let e = h.join().expect("validation thread");
        assert_eq!(
            e,
            vec!["spec: Invalid value: replicas should be greater than or equal to minReplicas"]
        );
    }
}

#[test]
fn cel_field_paths_into_maps_and_message_expression_fallback() {
    let s = schema(with_spec(json!({"type": "object",
        "x-kubernetes-validations": [
            {"rule": "!('a.b' in self.labels) || self.labels['a.b'] != ''", "fieldPath": ".labels['a.b']",
             "message": "must not be empty", "reason": "FieldValueRequired"},
            {"rule": "self.labels.size() < 3", "messageExpression": "self.nope + 'x'", "message": "too many labels"},
            {"rule": "!('dup' in self.labels)", "reason": "FieldValueDuplicate", "fieldPath": ".labels"}
        ],
        "properties": {"labels": {"type": "object", "maxProperties": 10,
            "additionalProperties": {"type": "string", "maxLength": 10}}}})));
    let e = s.validate(
        &obj(json!({"labels": {"a.b": "", "c": "1", "dup": "x"}})),
        None,
    );
    assert_eq!(
        texts(&e),
        vec![
            "spec.labels[a.b]: Required value: must not be empty",
            "spec: Invalid value: too many labels",
            "spec.labels: Duplicate value",
        ]
    );
    assert_eq!(e[0].error_type.reason(), "FieldValueRequired");
    assert_eq!(e[2].error_type.reason(), "FieldValueDuplicate");
}

#[test]
fn cel_rules_over_map_keys_run_when_keys_are_short() {
    // keys have no length bound, so the compile-time estimate is high but allowed; the
    // actual keys are short, so the rule runs
    let s = schema(with_spec(json!({"type": "object", "properties": {
        "labels": {"type": "object", "maxProperties": 10,
                   "additionalProperties": {"type": "string", "maxLength": 10},
                   "x-kubernetes-validations": [{"rule": "self.all(k, k.startsWith('app'))"}]}}})));
    assert!(errors_of(
        &s,
        json!({"labels": {"app": "1", "app.kubernetes.io/name": "x"}})
    )
    .is_empty());
    assert_eq!(
        errors_of(&s, json!({"labels": {"app": "1", "team": "x"}})),
        vec!["spec.labels: Invalid value: failed rule: self.all(k, k.startsWith('app'))"]
    );
}

#[test]
fn cel_cost_counts_how_often_a_rule_runs() {
    // a cheap rule on the items of an unbounded list inside an unbounded list runs on up
    // to ~10^11 values: refused, as upstream multiplies by the maximum cardinality
    let e = refused(with_spec(json!({"type": "object", "properties": {
        "rows": {"type": "array", "items": {"type": "array", "items": {"type": "integer",
            "x-kubernetes-validations": [{"rule": "self >= 0"}]}}}}})));
    assert_eq!(
        e,
        vec![
            "properties[spec].properties[rows].items.items.x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)",
            "properties[spec].properties[rows].items.items.x-kubernetes-validations[0].rule: Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema",
            "<nil>: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)",
        ]
    );
    // the schema-wide total: two rules each within their own limit, over the total
    let limits = CostLimits {
        per_schema_estimate: 700,
        ..CostLimits::default()
    };
    let e = Schema::with_limits(
        &with_spec(json!({"type": "object", "properties": {"xs": {"type": "array", "maxItems": 100,
            "items": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                      "x-kubernetes-validations": [{"rule": "self.a <= self.b"}, {"rule": "self.a >= 0"}]}}}})),
        limits,
    )
    .unwrap_err();
    let e = texts(&e);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].ends_with("x-kubernetes-validations[0].rule: Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema"), "{e:#?}");
    assert!(e[2].starts_with("<nil>: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of 1."), "{e:#?}");
}

#[test]
fn updates_ratchet_unchanged_invalid_values() {
    // a schema tightened after objects were stored: unchanged values are not re-validated
    let s = schema(with_spec(json!({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 3},
        "replicas": {"type": "integer"},
        "tags": {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 10},
                 "x-kubernetes-validations": [{"rule": "self.size() < 3", "message": "at most 2 tags"}]},
        "ports": {"type": "array", "maxItems": 10, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                  "items": {"type": "object", "required": ["name"], "properties": {
                      "name": {"type": "string", "maxLength": 10}, "port": {"type": "integer", "maximum": 100}}}}
    }})));
    let old = obj(
        json!({"name": "toolong", "replicas": 1, "tags": ["a", "b", "c"],
                         "ports": [{"name": "a", "port": 500}, {"name": "b", "port": 1}]}),
    );
    // create-time validation reports everything
    assert_eq!(s.validate(&old, None).len(), 3);
    // an update elsewhere passes; list-map items correlate by key, even reordered
    let new = obj(
        json!({"name": "toolong", "replicas": 2, "tags": ["a", "b", "c"],
                         "ports": [{"name": "b", "port": 1}, {"name": "a", "port": 500}]}),
    );
    assert!(
        s.validate(&new, Some(&old)).is_empty(),
        "{:?}",
        texts(&s.validate(&new, Some(&old)))
    );
    // changed values are validated
    let new = obj(
        json!({"name": "abc", "replicas": 2, "tags": ["a", "b", "c", "d"],
                         "ports": [{"name": "a", "port": 501}, {"name": "b", "port": 1}]}),
    );
    assert_eq!(
        texts(&s.validate(&new, Some(&old))),
        vec![
            "spec.ports[0].port: Invalid value: 501: spec.ports[0].port in body should be less than or equal to 100",
            "spec.tags: Invalid value: at most 2 tags",
        ]
    );
    let new = obj(json!({"name": "stilltoolong", "tags": ["a"]}));
    assert_eq!(
        texts(&s.validate(&new, Some(&old))),
        vec![
            "spec.name: Too long: may not be more than 3 bytes",
            "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        ]
    );
}

#[test]
fn kubebuilder_generated_schema_is_structural() {
    // the shapes controller-gen emits: descriptions everywhere, int-or-string and
    // quantities as anyOf, metav1.Condition lists as list-map, metadata as a bare object
    let s = schema(json!({
        "description": "Widget is the Schema for the widgets API",
        "type": "object",
        "properties": {
            "apiVersion": {"description": "APIVersion defines the versioned schema", "type": "string"},
            "kind": {"description": "Kind is a string value", "type": "string"},
            "metadata": {"type": "object"},
            "spec": {"description": "WidgetSpec", "type": "object", "required": ["image"], "properties": {
                "image": {"type": "string", "minLength": 1},
                "replicas": {"type": "integer", "format": "int32", "default": 1, "minimum": 0},
                "port": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": true},
                "memory": {"anyOf": [{"type": "integer"}, {"type": "string"}],
                           "pattern": "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$",
                           "x-kubernetes-int-or-string": true},
                "args": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "atomic"},
                "selector": {"type": "object", "x-kubernetes-map-type": "atomic", "properties": {
                    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "template": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }},
            "status": {"type": "object", "properties": {
                "conditions": {"type": "array", "x-kubernetes-list-map-keys": ["type"], "x-kubernetes-list-type": "map",
                    "items": {"type": "object", "required": ["lastTransitionTime", "message", "reason", "status", "type"],
                        "properties": {
                            "lastTransitionTime": {"type": "string", "format": "date-time"},
                            "message": {"type": "string", "maxLength": 32768},
                            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
                            "reason": {"type": "string", "maxLength": 1024, "minLength": 1,
                                       "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"},
                            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                            "type": {"type": "string", "maxLength": 316}
                        }}}
            }}
        }
    }));
    let mut o = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"image": "nginx", "port": "http", "memory": "1Gi", "template": {"any": "thing"}},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Up", "message": "",
                                   "lastTransitionTime": "2024-01-01T00:00:00Z"}]}});
    s.default(&mut o);
    assert_eq!(o["spec"]["replicas"], json!(1));
    assert!(
        s.validate(&o, None).is_empty(),
        "{:?}",
        texts(&s.validate(&o, None))
    );
    o["spec"]["memory"] = json!("lots");
    o["status"]["conditions"][0]["status"] = json!("Maybe");
    assert_eq!(
        texts(&s.validate(&o, None)),
        vec![
            r#"spec.memory: Invalid value: "lots": spec.memory in body should match '^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$'"#,
            r#"status.conditions[0].status: Unsupported value: "Maybe": supported values: "True", "False", "Unknown""#,
        ]
    );
}
