//! Kubernetes protobuf (`application/vnd.kubernetes.protobuf`) for every built-in kind.
//!
//! The store keeps JSON; this module transcodes between that JSON and upstream's protobuf
//! encoding, driven by descriptor tables generated from upstream's `generated.proto` files
//! and Go types (`tables.rs`, made by `tools/gen-protobuf-tables.py`).
//!
//! An encoded object is the magic `k8s\0` followed by a `runtime.Unknown` message:
//! `typeMeta` (apiVersion, kind), `raw` (the object's message), `contentEncoding` and
//! `contentType` (both empty). A watch stream is a sequence of frames, each a 4-byte
//! big-endian length and a bare `metav1.WatchEvent` message (no envelope, as upstream's
//! raw stream serializer writes it) whose `object.raw` is the enveloped object.
//!
//! Custom resources have no descriptor: they are JSON only, as upstream.
//!
//! # Example
//!
//! ```
//! use kcore_apiserver::protobuf;
//! use serde_json::json;
//!
//! let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
//!     "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}});
//! let bytes = protobuf::encode(&pod)?;
//! assert!(bytes.starts_with(protobuf::MAGIC));
//! let (api_version, kind, back) = protobuf::decode(&bytes)?;
//! assert_eq!((api_version.as_str(), kind.as_str()), ("v1", "Pod"));
//! assert_eq!(back, pod);
//! assert!(!protobuf::supports("example.com/v1", "Widget"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod openapi_v2;
mod time;
mod transcode;
mod wire;
#[allow(clippy::all)]
#[rustfmt::skip]
mod tables;

use serde_json::{Map, Value};

use crate::error::ApiError;
use transcode::Message;

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The media type of a watch stream.
pub const STREAM_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";
/// The prefix of every enveloped object.
pub const MAGIC: &[u8] = b"k8s\0";

/// A body that cannot be transcoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a well-formed message.
    #[error("malformed protobuf: {0}")]
    Malformed(&'static str),
    /// The body lacks the `k8s\0` prefix.
    #[error("protobuf body lacks the k8s envelope")]
    NoEnvelope,
    /// The envelope declares a content encoding (upstream defines none).
    #[error("unsupported protobuf content encoding {0:?}")]
    ContentEncoding(String),
    /// No message describes this kind (custom resources are JSON only).
    #[error("no protobuf message for kind {kind:?} of {api_version:?}")]
    UnknownKind {
        /// The object's apiVersion.
        api_version: String,
        /// The object's kind.
        kind: String,
    },
    /// A JSON value does not fit the message's field.
    #[error("{message} field {field:?}: expected {expected}")]
    Json {
        /// Full proto name of the message.
        message: &'static str,
        /// JSON name of the field (empty for the message itself).
        field: String,
        /// What the field holds.
        expected: &'static str,
    },
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::UnknownKind { .. } => ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({e})"),
            ),
            e => ApiError::bad_request(e.to_string()),
        }
    }
}

fn lookup(api_version: &str, kind: &str) -> Option<&'static Message> {
    tables::KINDS
        .binary_search_by(|(v, k, _)| (*v, *k).cmp(&(api_version, kind)))
        .ok()
        .map(|i| transcode::message(tables::KINDS[i].2))
}

/// Whether objects of this kind have a protobuf form (every built-in kind; no custom
/// resource).
pub fn supports(api_version: &str, kind: &str) -> bool {
    lookup(api_version, kind).is_some()
}

/// Decodes an enveloped object into apiVersion, kind and its JSON (with `apiVersion`
/// and `kind` set).
pub fn decode(body: &[u8]) -> Result<(String, String, Value), Error> {
    let rest = body.strip_prefix(MAGIC).ok_or(Error::NoEnvelope)?;
    let mut r = wire::Reader::new(rest);
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    let mut encoding = String::new();
    let text = |b: &[u8]| {
        String::from_utf8(b.to_vec()).map_err(|_| Error::Malformed("string is not UTF-8"))
    };
    while let Some((n, p)) = r.field()? {
        match (n, p) {
            (1, wire::Payload::Bytes(tm)) => {
                let mut t = wire::Reader::new(tm);
                while let Some((n, p)) = t.field()? {
                    match (n, p) {
                        (1, wire::Payload::Bytes(b)) => api_version = text(b)?,
                        (2, wire::Payload::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, wire::Payload::Bytes(b)) => raw = b,
            (3, wire::Payload::Bytes(b)) => encoding = text(b)?,
            _ => {}
        }
    }
    if !encoding.is_empty() {
        return Err(Error::ContentEncoding(encoding));
    }
    let msg = lookup(&api_version, &kind).ok_or_else(|| Error::UnknownKind {
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    let body = transcode::decode(msg, raw)?;
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), Value::String(api_version.clone()));
    obj.insert("kind".into(), Value::String(kind.clone()));
    if let Value::Object(m) = body {
        obj.extend(m);
    }
    Ok((api_version, kind, Value::Object(obj)))
}

/// Decodes a protobuf request body into the equivalent JSON object.
pub(crate) fn decode_body(body: &[u8]) -> Result<Value, ApiError> {
    Ok(decode(body)?.2)
}

/// Encodes a JSON object (with `apiVersion` and `kind`) as an enveloped object.
pub fn encode(obj: &Value) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(256);
    encode_into(obj, &mut out)?;
    Ok(out)
}

fn encode_into(obj: &Value, out: &mut Vec<u8>) -> Result<(), Error> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let msg = lookup(api_version, kind).ok_or_else(|| Error::UnknownKind {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    })?;
    out.extend_from_slice(MAGIC);
    wire::put_nested(out, 1, |out| {
        wire::put_bytes(out, 1, api_version.as_bytes());
        wire::put_bytes(out, 2, kind.as_bytes());
        Ok::<_, Error>(())
    })?;
    wire::put_nested(out, 2, |out| transcode::encode(msg, obj, out))?;
    wire::put_bytes(out, 3, b"");
    wire::put_bytes(out, 4, b"");
    Ok(())
}

/// One frame of a protobuf watch stream: the 4-byte big-endian length, then a
/// `metav1.WatchEvent` whose `object.raw` is the enveloped object.
pub fn watch_frame(event_type: &str, object: &Value) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; 4];
    wire::put_bytes(&mut out, 1, event_type.as_bytes());
    wire::put_nested(&mut out, 2, |out| {
        // RawExtension { raw = 1 }
        wire::put_nested(out, 1, |out| encode_into(object, out))
    })?;
    let len = u32::try_from(out.len() - 4).map_err(|_| Error::Malformed("frame too large"))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Decodes one watch frame's message (without its length prefix) into the event type
/// and object.
#[cfg(test)]
pub(crate) fn decode_watch_event(frame: &[u8]) -> Result<(String, Value), Error> {
    let mut r = wire::Reader::new(frame);
    let (mut ty, mut obj) = (String::new(), Value::Null);
    while let Some((n, p)) = r.field()? {
        match (n, p) {
            (1, wire::Payload::Bytes(b)) => {
                ty = String::from_utf8(b.to_vec()).map_err(|_| Error::Malformed("type"))?
            }
            (2, wire::Payload::Bytes(b)) => {
                let mut raw = wire::Reader::new(b);
                while let Some((n, p)) = raw.field()? {
                    if let (1, wire::Payload::Bytes(b)) = (n, p) {
                        obj = decode(b)?.2;
                    }
                }
            }
            _ => {}
        }
    }
    Ok((ty, obj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(n: u32, b: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(n) << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    #[test]
    fn decodes_a_configmap_envelope() {
        let mut meta = Vec::new();
        bytes_field(1, b"cm", &mut meta);
        let mut entry = Vec::new();
        bytes_field(1, b"app", &mut entry);
        bytes_field(2, b"web", &mut entry);
        bytes_field(11, &entry, &mut meta);
        let mut cm = Vec::new();
        bytes_field(1, &meta, &mut cm);
        let mut data = Vec::new();
        bytes_field(1, b"k", &mut data);
        bytes_field(2, b"v", &mut data);
        bytes_field(2, &data, &mut cm);
        varint(4 << 3, &mut cm);
        varint(1, &mut cm);
        let mut tm = Vec::new();
        bytes_field(1, b"v1", &mut tm);
        bytes_field(2, b"ConfigMap", &mut tm);
        let mut unknown = b"k8s\0".to_vec();
        bytes_field(1, &tm, &mut unknown);
        bytes_field(2, &cm, &mut unknown);
        let v = decode_body(&unknown).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "immutable": true,
            "metadata": {"name": "cm", "labels": {"app": "web"}}, "data": {"k": "v"}})
        );
        assert_eq!(decode_body(b"k8s\0\x0a\x05").unwrap_err().code, 400);
        let mut other = b"k8s\0".to_vec();
        let mut tm = Vec::new();
        bytes_field(2, b"Widget", &mut tm);
        bytes_field(1, &tm, &mut other);
        assert_eq!(decode_body(&other).unwrap_err().code, 415);
    }
}

#[cfg(test)]
mod k8s_pb_tests;
