//! Validating a custom resource with 50 spec fields and 3 CEL rules: the full
//! `prune` + `default` + `validate` pass an API server makes on each write, and
//! `validate` alone, with the OpenAPI-only validation of the same object as the anchor
//! (so the ratio shows what the CEL rules cost). Also what one admission expression
//! (`Expression`, as a webhook `matchConditions` entry or a policy validation) costs per
//! request: binding the request's values, then evaluating.

use criterion::{criterion_group, criterion_main, Criterion};
use kcore_schema::{Bindings, Expression, Schema};
use serde_json::{json, Map, Value};

fn schema(with_rules: bool) -> Schema {
    let mut props = Map::new();
    for i in 0..40 {
        props.insert(
            format!("s{i}"),
            json!({"type": "string", "maxLength": 63, "pattern": "^[a-z0-9-]*$"}),
        );
    }
    for i in 0..8 {
        props.insert(
            format!("n{i}"),
            json!({"type": "integer", "minimum": 0, "maximum": 1000, "default": 1}),
        );
    }
    props.insert(
        "tags".into(),
        json!({"type": "array", "maxItems": 32, "x-kubernetes-list-type": "set",
               "items": {"type": "string", "maxLength": 32}}),
    );
    props.insert(
        "limits".into(),
        json!({"type": "object", "maxProperties": 8,
               "additionalProperties": {"type": "string", "maxLength": 16}}),
    );
    let rules = json!([
        {"rule": "self.n0 <= self.n1", "message": "n0 must not exceed n1"},
        {"rule": "self.tags.all(t, t.startsWith('t'))"},
        {"rule": "!has(self.limits) || !('memory' in self.limits) || quantity(self.limits.memory).isLessThan(quantity('64Gi'))"}
    ]);
    let mut spec = json!({"type": "object", "properties": props});
    if with_rules {
        spec["x-kubernetes-validations"] = rules;
    }
    Schema::new(&json!({"type": "object", "properties": {"spec": spec}}))
        .unwrap_or_else(|e| panic!("bench schema refused: {e:?}"))
}

fn object() -> Value {
    let mut spec = Map::new();
    for i in 0..40 {
        spec.insert(format!("s{i}"), json!(format!("value-{i}")));
    }
    for i in 0..8 {
        spec.insert(format!("n{i}"), json!(10 + i));
    }
    spec.insert(
        "tags".into(),
        json!(["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"]),
    );
    spec.insert("limits".into(), json!({"memory": "2Gi", "cpu": "500m"}));
    spec.insert("unknown".into(), json!({"dropped": true}));
    json!({"apiVersion": "example.com/v1", "kind": "Widget",
           "metadata": {"name": "w", "namespace": "default"}, "spec": spec})
}

fn bench(c: &mut Criterion) {
    let with_cel = schema(true);
    let openapi_only = schema(false);
    let mut obj = object();
    with_cel.prune(&mut obj);
    with_cel.default(&mut obj);
    assert!(with_cel.validate(&obj, None).is_empty());
    let raw = object();
    let mut g = c.benchmark_group("validate_50_fields");
    g.bench_function("prune_default_validate_3_cel_rules", |b| {
        b.iter(|| {
            let mut o = raw.clone();
            with_cel.prune(&mut o);
            with_cel.default(&mut o);
            with_cel.validate(&o, None)
        })
    });
    g.bench_function("validate_3_cel_rules", |b| {
        b.iter(|| with_cel.validate(&obj, None))
    });
    g.bench_function("validate_openapi_only_anchor", |b| {
        b.iter(|| openapi_only.validate(&obj, None))
    });
    // an update changing one field: unchanged fields ratchet, the spec's rules run
    let mut old = obj.clone();
    old["spec"]["s0"] = json!("previous");
    g.bench_function("validate_update_one_field_changed", |b| {
        b.iter(|| with_cel.validate(&obj, Some(&old)))
    });
    g.finish();
}

fn admission_expression(c: &mut Criterion) {
    let obj = object();
    let request = json!({"operation": "CREATE", "namespace": "default", "name": "w",
        "userInfo": {"username": "alice", "groups": ["dev"]}});
    let vars = ["object", "oldObject", "request"];
    let simple = Expression::compile("request.userInfo.username != 'system:admin'", &vars)
        .unwrap_or_else(|e| panic!("{e}"));
    let scan = Expression::compile(
        "object.spec.tags.all(t, t.startsWith('t')) && object.spec.n0 <= object.spec.n1",
        &vars,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("admission_expression");
    for (name, e) in [("field_compare", &simple), ("list_scan", &scan)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let bindings = Bindings::new()
                    .bind("object", &obj)
                    .bind("oldObject", &Value::Null)
                    .bind("request", &request);
                let mut budget = 10_000_000;
                e.evaluate_bool(&bindings, 1_000_000, &mut budget)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, admission_expression);
criterion_main!(benches);
