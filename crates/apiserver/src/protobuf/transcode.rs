//! JSON <-> protobuf for one message, driven by the descriptor tables in `tables.rs`.
//!
//! Decoding produces the JSON that upstream's Go types would marshal for the same
//! object: a Go client marshals every non-pointer field, zero or not, so zero values of
//! `omitempty` non-pointer fields are dropped (as Go's JSON encoder drops them), while
//! pointer fields keep a zero they carry (`replicas: 0`, `runAsUser: 0`,
//! `automountServiceAccountToken: false`). Encoding writes the fields the JSON has, which a
//! Go client decodes to the same object as it would the JSON.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::wire::{self, Payload, Reader};
use super::{tables, Error};

/// The field's Go type is a pointer: a zero value it carries is meaningful.
pub(super) const PTR: u8 = 1;
/// The Go JSON tag has `omitempty`: a zero value is left out of the JSON.
pub(super) const OMITEMPTY: u8 = 2;
/// An embedded struct whose fields JSON inlines into the parent object.
pub(super) const INLINE: u8 = 4;

/// A protobuf message of the Kubernetes API.
#[derive(Debug)]
pub(super) struct Message {
    /// Full proto name, e.g. `k8s.io.api.core.v1.Pod`.
    pub name: &'static str,
    /// How the JSON form differs from an object of the fields.
    pub special: Special,
    pub fields: &'static [Field],
}

/// One field of a [`Message`].
#[derive(Debug)]
pub(super) struct Field {
    pub num: u32,
    /// The JSON name (empty for an inlined struct).
    pub json: &'static str,
    /// The value type (of a map: the key type, always string).
    pub ty: Ty,
    pub label: Label,
    /// [`PTR`], [`OMITEMPTY`], [`INLINE`].
    pub flags: u8,
}

/// A value type.
#[derive(Clone, Copy, Debug)]
pub(super) enum Ty {
    Str,
    Bytes,
    I32,
    I64,
    Bool,
    F64,
    /// A message, by index into `tables::MESSAGES`.
    Msg(u16),
}

/// Cardinality of a field.
#[derive(Clone, Copy, Debug)]
pub(super) enum Label {
    Opt,
    Rep,
    /// `map<string, T>`.
    Map(Ty),
}

/// Messages with a JSON form of their own (a custom `MarshalJSON` upstream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Special {
    None,
    /// `metav1.Time`: RFC 3339 with seconds.
    Time,
    /// `metav1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `metav1.Duration`: Go's duration text (`1h0m0s`).
    Duration,
    /// Raw JSON bytes embedded as JSON (`RawExtension`, `FieldsV1`, apiextensions `JSON`).
    RawJson,
    /// `intstr.IntOrString`: a JSON number or string.
    IntOrString,
    /// `resource.Quantity`: a string.
    Quantity,
    /// A named `[]string` (`ExtraValue`, `Verbs`): a bare JSON array.
    StringList,
    /// `JSONSchemaPropsOrArray`: a schema or an array of schemas.
    SchemaOrArray,
    /// `JSONSchemaPropsOrBool`: a schema or a bool.
    SchemaOrBool,
    /// `JSONSchemaPropsOrStringArray`: a schema or an array of strings.
    SchemaOrStringArray,
}

pub(super) fn message(i: u16) -> &'static Message {
    &tables::MESSAGES[usize::from(i)]
}

impl Message {
    fn field(&self, num: u32) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.num == num)
    }
}

// ----- protobuf -> JSON -----

/// Decodes one message into JSON.
pub(super) fn decode(msg: &'static Message, buf: &[u8]) -> Result<Value, Error> {
    match msg.special {
        Special::None => decode_object(msg, buf).map(Value::Object),
        Special::Time | Special::MicroTime => {
            let (mut secs, mut nanos) = (0i64, 0i64);
            let mut r = Reader::new(buf);
            while let Some((n, p)) = r.field()? {
                match (n, p) {
                    (1, Payload::Varint(v)) => secs = v as i64,
                    (2, Payload::Varint(v)) => nanos = i64::from(v as i32),
                    _ => {}
                }
            }
            if secs == 0 && nanos == 0 {
                return Ok(Value::Null);
            }
            Ok(Value::String(super::time::format(
                secs,
                nanos,
                msg.special == Special::MicroTime,
            )?))
        }
        Special::Duration => {
            let mut ns = 0i64;
            let mut r = Reader::new(buf);
            while let Some((n, p)) = r.field()? {
                if let (1, Payload::Varint(v)) = (n, p) {
                    ns = v as i64;
                }
            }
            Ok(Value::String(super::time::format_duration(ns)))
        }
        Special::RawJson => {
            let mut raw: &[u8] = &[];
            let mut r = Reader::new(buf);
            while let Some((n, p)) = r.field()? {
                if let (1, Payload::Bytes(b)) = (n, p) {
                    raw = b;
                }
            }
            if raw.is_empty() {
                Ok(Value::Null)
            } else if raw.starts_with(super::MAGIC) {
                // an object a Go client embedded in protobuf form
                super::decode(raw).map(|(_, _, v)| v)
            } else {
                serde_json::from_slice(raw).map_err(|_| Error::Malformed("raw JSON field"))
            }
        }
        Special::IntOrString => {
            let (mut ty, mut iv, mut sv) = (0u64, 0i64, String::new());
            let mut r = Reader::new(buf);
            while let Some((n, p)) = r.field()? {
                match (n, p) {
                    (1, Payload::Varint(v)) => ty = v,
                    (2, Payload::Varint(v)) => iv = i64::from(v as i32),
                    (3, Payload::Bytes(b)) => sv = utf8(b)?,
                    _ => {}
                }
            }
            Ok(if ty == 1 {
                Value::String(sv)
            } else {
                Value::from(iv)
            })
        }
        Special::Quantity => {
            let mut s = String::new();
            let mut r = Reader::new(buf);
            while let Some((n, p)) = r.field()? {
                if let (1, Payload::Bytes(b)) = (n, p) {
                    s = utf8(b)?;
                }
            }
            if s.is_empty() {
                s.push('0');
            }
            Ok(Value::String(s))
        }
        Special::StringList => {
            let mut items = Vec::new();
            let mut r = Reader::new(buf);
            while let Some((n, p)) = r.field()? {
                if let (1, Payload::Bytes(b)) = (n, p) {
                    items.push(Value::String(utf8(b)?));
                }
            }
            Ok(Value::Array(items))
        }
        Special::SchemaOrArray | Special::SchemaOrBool | Special::SchemaOrStringArray => {
            let mut o = decode_object(msg, buf)?;
            // field 1 (2 for OrBool) is the schema; the other the array or bool
            let (schema_num, other_num) = if msg.special == Special::SchemaOrBool {
                (2, 1)
            } else {
                (1, 2)
            };
            let name = |n| msg.field(n).map_or("", |f| f.json);
            let other = o.remove(name(other_num));
            let schema = o.remove(name(schema_num));
            Ok(match (msg.special, other, schema) {
                (Special::SchemaOrBool, _, Some(s)) => s,
                (Special::SchemaOrBool, b, None) => b.unwrap_or(Value::Bool(false)),
                (_, Some(a), _) => a,
                (_, None, s) => s.unwrap_or(Value::Null),
            })
        }
    }
}

fn utf8(b: &[u8]) -> Result<String, Error> {
    String::from_utf8(b.to_vec()).map_err(|_| Error::Malformed("string is not UTF-8"))
}

fn scalar(ty: Ty, p: Payload<'_>) -> Result<Value, Error> {
    Ok(match (ty, p) {
        (Ty::Str, Payload::Bytes(b)) => Value::String(utf8(b)?),
        (Ty::Bytes, Payload::Bytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Ty::I32, Payload::Varint(v)) => Value::from(v as i32),
        (Ty::I64, Payload::Varint(v)) => Value::from(v as i64),
        (Ty::Bool, Payload::Varint(v)) => Value::Bool(v != 0),
        (Ty::F64, Payload::Fixed64(v)) => float(f64::from_bits(v)),
        (Ty::Msg(i), Payload::Bytes(b)) => decode(message(i), b)?,
        _ => return Err(Error::Malformed("field has the wrong wire type")),
    })
}

/// A float as Go's JSON encoder writes it: integral values without a fraction.
fn float(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// Packed repeated scalars (proto3 style; Go's proto2 code accepts them too).
fn packed(ty: Ty, b: &[u8], out: &mut Vec<Value>) -> Result<(), Error> {
    let bad = || Error::Malformed("packed repeated field");
    match ty {
        Ty::F64 => {
            for c in b.chunks(8) {
                let c: [u8; 8] = c.try_into().map_err(|_| bad())?;
                out.push(scalar(ty, Payload::Fixed64(u64::from_le_bytes(c)))?);
            }
        }
        _ => {
            let mut r = Reader::new(b);
            while !r.is_empty() {
                out.push(scalar(ty, Payload::Varint(r.varint()?))?);
            }
        }
    }
    Ok(())
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn decode_object(msg: &'static Message, buf: &[u8]) -> Result<Map<String, Value>, Error> {
    let mut out = Map::new();
    let mut r = Reader::new(buf);
    while let Some((num, p)) = r.field()? {
        let Some(f) = msg.field(num) else {
            continue;
        };
        match f.label {
            Label::Opt => {
                let v = scalar(f.ty, p)?;
                if f.flags & INLINE != 0 {
                    if let Value::Object(m) = v {
                        out.extend(m);
                    }
                } else {
                    out.insert(f.json.to_owned(), v);
                }
            }
            Label::Rep => {
                let slot = out
                    .entry(f.json.to_owned())
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(items) = slot else {
                    return Err(Error::Malformed("repeated field"));
                };
                match (f.ty, p) {
                    (Ty::Str | Ty::Bytes | Ty::Msg(_), p) => items.push(scalar(f.ty, p)?),
                    (ty, Payload::Bytes(b)) => packed(ty, b, items)?,
                    (ty, p) => items.push(scalar(ty, p)?),
                }
            }
            Label::Map(vt) => {
                let Payload::Bytes(entry) = p else {
                    return Err(Error::Malformed("map entry"));
                };
                let (mut k, mut v) = (String::new(), None);
                let mut er = Reader::new(entry);
                while let Some((n, p)) = er.field()? {
                    match (n, p) {
                        (1, Payload::Bytes(b)) => k = utf8(b)?,
                        (2, p) => v = Some(scalar(vt, p)?),
                        _ => {}
                    }
                }
                // an entry without a value holds the type's zero value
                let v = match v {
                    Some(v) => v,
                    None => scalar(vt, zero_payload(vt))?,
                };
                let slot = out
                    .entry(f.json.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = slot {
                    m.insert(k, v);
                }
            }
        }
    }
    // What Go's JSON encoder leaves out: zero values of omitempty fields unless the
    // field is a pointer, and zero times (which marshal as null) everywhere.
    for f in msg.fields {
        if f.flags & INLINE != 0 {
            continue;
        }
        let drop = match out.get(f.json) {
            None => false,
            Some(Value::Null) => true,
            Some(v) => f.flags & OMITEMPTY != 0 && f.flags & PTR == 0 && is_zero(v),
        };
        if drop {
            out.remove(f.json);
        }
    }
    Ok(out)
}

fn zero_payload(ty: Ty) -> Payload<'static> {
    match ty {
        Ty::Str | Ty::Bytes | Ty::Msg(_) => Payload::Bytes(&[]),
        Ty::F64 => Payload::Fixed64(0),
        _ => Payload::Varint(0),
    }
}

// ----- JSON -> protobuf -----

fn wrong(msg: &Message, field: &str, expected: &'static str) -> Error {
    Error::Json {
        message: msg.name,
        field: field.to_owned(),
        expected,
    }
}

/// Encodes `v` as message `msg`, appending its fields to `out`.
pub(super) fn encode(msg: &'static Message, v: &Value, out: &mut Vec<u8>) -> Result<(), Error> {
    match msg.special {
        Special::None => {
            let o = v.as_object().ok_or_else(|| wrong(msg, "", "an object"))?;
            encode_object(msg, o, out)
        }
        Special::Time | Special::MicroTime => {
            let s = v.as_str().ok_or_else(|| wrong(msg, "", "a time string"))?;
            let (secs, nanos) =
                super::time::parse(s).ok_or_else(|| wrong(msg, "", "an RFC 3339 time"))?;
            wire::put_tag(out, 1, wire::VARINT);
            wire::put_varint(out, secs as u64);
            wire::put_tag(out, 2, wire::VARINT);
            wire::put_varint(out, i64::from(nanos) as u64);
            Ok(())
        }
        Special::Duration => {
            let s = v
                .as_str()
                .ok_or_else(|| wrong(msg, "", "a duration string"))?;
            let ns =
                super::time::parse_duration(s).ok_or_else(|| wrong(msg, "", "a Go duration"))?;
            wire::put_tag(out, 1, wire::VARINT);
            wire::put_varint(out, ns as u64);
            Ok(())
        }
        Special::RawJson => {
            let raw = serde_json::to_vec(v).map_err(|_| wrong(msg, "", "JSON"))?;
            wire::put_bytes(out, 1, &raw);
            Ok(())
        }
        Special::IntOrString => {
            match v {
                Value::String(s) => {
                    wire::put_tag(out, 1, wire::VARINT);
                    wire::put_varint(out, 1);
                    wire::put_tag(out, 2, wire::VARINT);
                    wire::put_varint(out, 0);
                    wire::put_bytes(out, 3, s.as_bytes());
                }
                Value::Number(n) => {
                    let i = n.as_i64().ok_or_else(|| wrong(msg, "", "an integer"))?;
                    wire::put_tag(out, 1, wire::VARINT);
                    wire::put_varint(out, 0);
                    wire::put_tag(out, 2, wire::VARINT);
                    wire::put_varint(out, i64::from(i as i32) as u64);
                    wire::put_bytes(out, 3, b"");
                }
                _ => return Err(wrong(msg, "", "an integer or a string")),
            }
            Ok(())
        }
        Special::Quantity => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(wrong(msg, "", "a quantity")),
            };
            wire::put_bytes(out, 1, s.as_bytes());
            Ok(())
        }
        Special::StringList => {
            let a = v.as_array().ok_or_else(|| wrong(msg, "", "an array"))?;
            for s in a {
                let s = s.as_str().ok_or_else(|| wrong(msg, "", "strings"))?;
                wire::put_bytes(out, 1, s.as_bytes());
            }
            Ok(())
        }
        Special::SchemaOrArray | Special::SchemaOrBool | Special::SchemaOrStringArray => {
            let (schema_num, other_num) = if msg.special == Special::SchemaOrBool {
                (2, 1)
            } else {
                (1, 2)
            };
            let field = |n| msg.field(n).ok_or_else(|| wrong(msg, "", "a known field"));
            match v {
                Value::Object(_) => {
                    let f = field(schema_num)?;
                    encode_field(msg, f, v, out)?;
                    if msg.special == Special::SchemaOrBool {
                        wire::put_tag(out, 1, wire::VARINT);
                        wire::put_varint(out, 1);
                    }
                    Ok(())
                }
                Value::Array(_) | Value::Bool(_) => encode_field(msg, field(other_num)?, v, out),
                _ => Err(wrong(msg, "", "a schema")),
            }
        }
    }
}

fn encode_object(
    msg: &'static Message,
    o: &Map<String, Value>,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    for f in msg.fields {
        if f.flags & INLINE != 0 {
            let Ty::Msg(i) = f.ty else {
                return Err(wrong(msg, f.json, "an inlined message"));
            };
            let sub = message(i);
            wire::put_nested(out, f.num, |out| encode_object(sub, o, out))?;
            continue;
        }
        match o.get(f.json) {
            None | Some(Value::Null) => {}
            Some(v) => encode_field(msg, f, v, out)?,
        }
    }
    Ok(())
}

fn encode_field(
    msg: &'static Message,
    f: &'static Field,
    v: &Value,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    match f.label {
        Label::Opt => encode_value(msg, f.json, f.num, f.ty, v, out),
        Label::Rep => {
            let a = v.as_array().ok_or_else(|| wrong(msg, f.json, "an array"))?;
            for item in a {
                if !item.is_null() {
                    encode_value(msg, f.json, f.num, f.ty, item, out)?;
                }
            }
            Ok(())
        }
        Label::Map(vt) => {
            let m = v
                .as_object()
                .ok_or_else(|| wrong(msg, f.json, "an object"))?;
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            for k in keys {
                let val = &m[k];
                wire::put_nested(out, f.num, |out| {
                    wire::put_bytes(out, 1, k.as_bytes());
                    if val.is_null() {
                        Ok(())
                    } else {
                        encode_value(msg, f.json, 2, vt, val, out)
                    }
                })?;
            }
            Ok(())
        }
    }
}

fn encode_value(
    msg: &'static Message,
    name: &str,
    num: u32,
    ty: Ty,
    v: &Value,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let int = |v: &Value| -> Result<i64, Error> {
        v.as_i64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| wrong(msg, name, "an integer"))
    };
    match ty {
        Ty::Str => {
            let s = v.as_str().ok_or_else(|| wrong(msg, name, "a string"))?;
            wire::put_bytes(out, num, s.as_bytes());
        }
        Ty::Bytes => {
            let s = v.as_str().ok_or_else(|| wrong(msg, name, "base64 text"))?;
            let b = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| wrong(msg, name, "base64 text"))?;
            wire::put_bytes(out, num, &b);
        }
        Ty::I32 => {
            wire::put_tag(out, num, wire::VARINT);
            wire::put_varint(out, i64::from(int(v)? as i32) as u64);
        }
        Ty::I64 => {
            wire::put_tag(out, num, wire::VARINT);
            wire::put_varint(out, int(v)? as u64);
        }
        Ty::Bool => {
            let b = v.as_bool().ok_or_else(|| wrong(msg, name, "a boolean"))?;
            wire::put_tag(out, num, wire::VARINT);
            wire::put_varint(out, u64::from(b));
        }
        Ty::F64 => {
            let f = v.as_f64().ok_or_else(|| wrong(msg, name, "a number"))?;
            wire::put_tag(out, num, wire::FIXED64);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Ty::Msg(i) => {
            let sub = message(i);
            wire::put_nested(out, num, |out| encode(sub, v, out))?;
        }
    }
    Ok(())
}
