//! The protobuf form of a Swagger 2.0 document: gnostic's `openapi.v2.Document`
//! (`openapiv2/OpenAPIv2.proto` of github.com/google/gnostic-models), which Go clients
//! (client-go's `OpenAPISchema()`, hence kubectl's client-side validation) ask
//! `/openapi/v2` for.
//!
//! The encoder covers what kcore's document holds: `swagger`, `info`, `paths` (its
//! vendor extensions; kcore serves no path items in v2) and `definitions` with their
//! schemas. Schema keywords Swagger 2.0 lacks (`nullable`, `oneOf`, `anyOf`, `not`) have
//! no field and are left out, as upstream's v3-to-v2 conversion drops them. Vendor
//! extensions (`x-…`) and the free-form values (`default`, `enum`, `example`) are
//! `Any` messages holding the value as YAML text, as gnostic writes them.

use std::convert::Infallible;

use serde_json::{Map, Value};

use super::wire::{put_bytes, put_nested, put_tag, put_varint, FIXED64, VARINT};

/// The media type client-go asks for (upstream's deprecated spelling, kept by clients).
pub const ACCEPT_MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The media type of the response (upstream answers both spellings with this one: `@` is
/// not a token character, so Go's `mime.ParseMediaType` refuses the other).
pub const MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Encodes a Swagger 2.0 document (JSON) as an `openapi.v2.Document` message.
///
/// # Example
///
/// ```
/// use serde_json::json;
///
/// let doc = json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.35.0"}});
/// let bytes = kcore_apiserver::protobuf::openapi_v2::encode_document(&doc);
/// // field 1 (swagger), length 3, "2.0"
/// assert_eq!(&bytes[..5], b"\x0a\x032.0");
/// ```
pub fn encode_document(doc: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, 1, doc.get("swagger"));
    if let Some(info) = doc.get("info").and_then(Value::as_object) {
        nested(&mut out, 2, |o| {
            put_str(o, 1, info.get("title"));
            put_str(o, 2, info.get("version"));
            put_str(o, 3, info.get("description"));
            put_str(o, 4, info.get("termsOfService"));
            extensions(o, 7, info);
        });
    }
    put_str(&mut out, 3, doc.get("host"));
    put_str(&mut out, 4, doc.get("basePath"));
    for (num, key) in [(5, "schemes"), (6, "consumes"), (7, "produces")] {
        put_strs(&mut out, num, doc.get(key));
    }
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        nested(&mut out, 8, |o| extensions(o, 1, paths));
    }
    if let Some(defs) = doc.get("definitions").and_then(Value::as_object) {
        nested(&mut out, 9, |o| named_schemas(o, 1, defs));
    }
    if let Some(top) = doc.as_object() {
        extensions(&mut out, 16, top);
    }
    out
}

/// Writes a length-delimited field whose body cannot fail.
fn nested(out: &mut Vec<u8>, num: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let _ = put_nested::<Infallible>(out, num, |o| {
        body(o);
        Ok(())
    });
}

/// A proto3 string field: written unless absent or empty.
fn put_str(out: &mut Vec<u8>, num: u32, v: Option<&Value>) {
    if let Some(s) = v.and_then(Value::as_str).filter(|s| !s.is_empty()) {
        put_bytes(out, num, s.as_bytes());
    }
}

/// A repeated string field from a JSON array (or a lone string).
fn put_strs(out: &mut Vec<u8>, num: u32, v: Option<&Value>) {
    match v {
        Some(Value::Array(a)) => {
            for s in a.iter().filter_map(Value::as_str) {
                put_bytes(out, num, s.as_bytes());
            }
        }
        Some(Value::String(s)) => put_bytes(out, num, s.as_bytes()),
        _ => {}
    }
}

/// A proto3 bool field: written when true.
fn put_bool(out: &mut Vec<u8>, num: u32, v: Option<&Value>) {
    if v.and_then(Value::as_bool) == Some(true) {
        put_tag(out, num, VARINT);
        put_varint(out, 1);
    }
}

/// A proto3 int64 field: written when non-zero.
fn put_int(out: &mut Vec<u8>, num: u32, v: Option<&Value>) {
    let n = v.and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)));
    if let Some(n) = n.filter(|n| *n != 0) {
        put_tag(out, num, VARINT);
        put_varint(out, n as u64);
    }
}

/// A proto3 double field: written when non-zero.
fn put_double(out: &mut Vec<u8>, num: u32, v: Option<&Value>) {
    if let Some(f) = v.and_then(Value::as_f64).filter(|f| *f != 0.0) {
        put_tag(out, num, FIXED64);
        out.extend_from_slice(&f.to_le_bytes());
    }
}

/// An `Any` message: the value as YAML text (field 2).
fn any(out: &mut Vec<u8>, num: u32, v: &Value) {
    let yaml = serde_yaml_ng::to_string(v).unwrap_or_default();
    nested(out, num, |o| put_bytes(o, 2, yaml.as_bytes()));
}

/// The object's `x-…` keys as repeated `NamedAny` (name 1, value 2).
fn extensions(out: &mut Vec<u8>, num: u32, obj: &Map<String, Value>) {
    for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
        nested(out, num, |o| {
            put_bytes(o, 1, k.as_bytes());
            any(o, 2, v);
        });
    }
}

/// Repeated `NamedSchema` (name 1, value 2) from a JSON object of schemas.
fn named_schemas(out: &mut Vec<u8>, num: u32, schemas: &Map<String, Value>) {
    for (name, s) in schemas {
        nested(out, num, |o| {
            put_bytes(o, 1, name.as_bytes());
            nested(o, 2, |o| schema(o, s));
        });
    }
}

/// The fields of a `Schema` message.
fn schema(out: &mut Vec<u8>, s: &Value) {
    let Some(m) = s.as_object() else {
        return;
    };
    let get = |k: &str| m.get(k);
    put_str(out, 1, get("$ref"));
    put_str(out, 2, get("format"));
    put_str(out, 3, get("title"));
    put_str(out, 4, get("description"));
    if let Some(d) = get("default") {
        any(out, 5, d);
    }
    put_double(out, 6, get("multipleOf"));
    put_double(out, 7, get("maximum"));
    put_bool(out, 8, get("exclusiveMaximum"));
    put_double(out, 9, get("minimum"));
    put_bool(out, 10, get("exclusiveMinimum"));
    put_int(out, 11, get("maxLength"));
    put_int(out, 12, get("minLength"));
    put_str(out, 13, get("pattern"));
    put_int(out, 14, get("maxItems"));
    put_int(out, 15, get("minItems"));
    put_bool(out, 16, get("uniqueItems"));
    put_int(out, 17, get("maxProperties"));
    put_int(out, 18, get("minProperties"));
    put_strs(out, 19, get("required"));
    for e in get("enum").and_then(Value::as_array).into_iter().flatten() {
        any(out, 20, e);
    }
    match get("additionalProperties") {
        Some(Value::Bool(b)) => nested(out, 21, |o| {
            // oneof: the bool is written even when false
            put_tag(o, 2, VARINT);
            put_varint(o, u64::from(*b));
        }),
        Some(v @ Value::Object(_)) => nested(out, 21, |o| nested(o, 1, |o| schema(o, v))),
        _ => {}
    }
    if let Some(t) = get("type") {
        nested(out, 22, |o| put_strs(o, 1, Some(t)));
    }
    match get("items") {
        Some(Value::Array(items)) => nested(out, 23, |o| {
            for i in items {
                nested(o, 1, |o| schema(o, i));
            }
        }),
        Some(i @ Value::Object(_)) => nested(out, 23, |o| nested(o, 1, |o| schema(o, i))),
        _ => {}
    }
    for a in get("allOf").and_then(Value::as_array).into_iter().flatten() {
        nested(out, 24, |o| schema(o, a));
    }
    if let Some(p) = get("properties").and_then(Value::as_object) {
        nested(out, 25, |o| named_schemas(o, 1, p));
    }
    put_str(out, 26, get("discriminator"));
    put_bool(out, 27, get("readOnly"));
    if let Some(e) = get("example") {
        any(out, 30, e);
    }
    extensions(out, 31, m);
}
