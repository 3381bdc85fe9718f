//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`)
//! for the kinds that kubectl's generators send that way (`kubectl create configmap |
//! secret | namespace | serviceaccount | deployment | service`, `kubectl run`).
//!
//! The envelope is the magic `k8s\0` followed by a `runtime.Unknown` message whose `raw`
//! field holds the object. Objects are decoded field by field from descriptors that mirror
//! upstream's `generated.proto` numbering; unknown fields are skipped. Kinds without a
//! descriptor are refused with 415 so the client can be told to send JSON.

use serde_json::{json, Map, Value};

use crate::error::ApiError;

#[derive(Clone, Copy)]
enum K {
    Str,
    Int,
    Bool,
    Msg(&'static [F]),
    RepStr,
    RepMsg(&'static [F]),
    MapStr,
    MapBytes,
    MapQuantity,
    IntOrStr,
    Time,
}

/// One field: number, JSON name, kind.
type F = (u32, &'static str, K);

static TIME_FIELDS: &[F] = &[(1, "seconds", K::Int), (2, "nanos", K::Int)];
static OWNER_REF: &[F] = &[
    (1, "kind", K::Str),
    (3, "name", K::Str),
    (4, "uid", K::Str),
    (5, "apiVersion", K::Str),
    (6, "controller", K::Bool),
    (7, "blockOwnerDeletion", K::Bool),
];
static OBJECT_META: &[F] = &[
    (1, "name", K::Str),
    (2, "generateName", K::Str),
    (3, "namespace", K::Str),
    (5, "uid", K::Str),
    (6, "resourceVersion", K::Str),
    (7, "generation", K::Int),
    (8, "creationTimestamp", K::Time),
    (9, "deletionTimestamp", K::Time),
    (10, "deletionGracePeriodSeconds", K::Int),
    (11, "labels", K::MapStr),
    (12, "annotations", K::MapStr),
    (13, "ownerReferences", K::RepMsg(OWNER_REF)),
    (14, "finalizers", K::RepStr),
];
static LOCAL_OBJECT_REF: &[F] = &[(1, "name", K::Str)];
static OBJECT_REF: &[F] = &[
    (1, "kind", K::Str),
    (2, "namespace", K::Str),
    (3, "name", K::Str),
    (4, "uid", K::Str),
    (5, "apiVersion", K::Str),
];
static CONFIG_MAP: &[F] = &[
    (1, "metadata", K::Msg(OBJECT_META)),
    (2, "data", K::MapStr),
    (3, "binaryData", K::MapBytes),
    (4, "immutable", K::Bool),
];
static SECRET: &[F] = &[
    (1, "metadata", K::Msg(OBJECT_META)),
    (2, "data", K::MapBytes),
    (3, "type", K::Str),
    (4, "stringData", K::MapStr),
    (5, "immutable", K::Bool),
];
static NAMESPACE_SPEC: &[F] = &[(1, "finalizers", K::RepStr)];
static NAMESPACE: &[F] = &[
    (1, "metadata", K::Msg(OBJECT_META)),
    (2, "spec", K::Msg(NAMESPACE_SPEC)),
];
static SERVICE_ACCOUNT: &[F] = &[
    (1, "metadata", K::Msg(OBJECT_META)),
    (2, "secrets", K::RepMsg(OBJECT_REF)),
    (3, "imagePullSecrets", K::RepMsg(LOCAL_OBJECT_REF)),
    (4, "automountServiceAccountToken", K::Bool),
];
static CONTAINER_PORT: &[F] = &[
    (1, "name", K::Str),
    (2, "hostPort", K::Int),
    (3, "containerPort", K::Int),
    (4, "protocol", K::Str),
    (5, "hostIP", K::Str),
];
static ENV_VAR: &[F] = &[(1, "name", K::Str), (2, "value", K::Str)];
static RESOURCES: &[F] = &[
    (1, "limits", K::MapQuantity),
    (2, "requests", K::MapQuantity),
];
static CONTAINER: &[F] = &[
    (1, "name", K::Str),
    (2, "image", K::Str),
    (3, "command", K::RepStr),
    (4, "args", K::RepStr),
    (5, "workingDir", K::Str),
    (6, "ports", K::RepMsg(CONTAINER_PORT)),
    (7, "env", K::RepMsg(ENV_VAR)),
    (8, "resources", K::Msg(RESOURCES)),
    (13, "terminationMessagePath", K::Str),
    (14, "imagePullPolicy", K::Str),
    (16, "stdin", K::Bool),
    (17, "stdinOnce", K::Bool),
    (18, "tty", K::Bool),
    (20, "terminationMessagePolicy", K::Str),
];
static POD_SPEC: &[F] = &[
    (2, "containers", K::RepMsg(CONTAINER)),
    (3, "restartPolicy", K::Str),
    (4, "terminationGracePeriodSeconds", K::Int),
    (5, "activeDeadlineSeconds", K::Int),
    (6, "dnsPolicy", K::Str),
    (7, "nodeSelector", K::MapStr),
    (8, "serviceAccountName", K::Str),
    (10, "nodeName", K::Str),
    (11, "hostNetwork", K::Bool),
    (15, "imagePullSecrets", K::RepMsg(LOCAL_OBJECT_REF)),
    (16, "hostname", K::Str),
    (17, "subdomain", K::Str),
    (19, "schedulerName", K::Str),
    (20, "initContainers", K::RepMsg(CONTAINER)),
];
static POD: &[F] = &[
    (1, "metadata", K::Msg(OBJECT_META)),
    (2, "spec", K::Msg(POD_SPEC)),
];
static POD_TEMPLATE: &[F] = &[
    (1, "metadata", K::Msg(OBJECT_META)),
    (2, "spec", K::Msg(POD_SPEC)),
];
static SELECTOR_REQ: &[F] = &[
    (1, "key", K::Str),
    (2, "operator", K::Str),
    (3, "values", K::RepStr),
];
static LABEL_SELECTOR: &[F] = &[
    (1, "matchLabels", K::MapStr),
    (2, "matchExpressions", K::RepMsg(SELECTOR_REQ)),
];
static ROLLING_UPDATE: &[F] = &[
    (1, "maxUnavailable", K::IntOrStr),
    (2, "maxSurge", K::IntOrStr),
];
static STRATEGY: &[F] = &[
    (1, "type", K::Str),
    (2, "rollingUpdate", K::Msg(ROLLING_UPDATE)),
];
static DEPLOYMENT_SPEC: &[F] = &[
    (1, "replicas", K::Int),
    (2, "selector", K::Msg(LABEL_SELECTOR)),
    (3, "template", K::Msg(POD_TEMPLATE)),
    (4, "strategy", K::Msg(STRATEGY)),
    (5, "minReadySeconds", K::Int),
    (6, "revisionHistoryLimit", K::Int),
    (7, "paused", K::Bool),
    (9, "progressDeadlineSeconds", K::Int),
];
static DEPLOYMENT: &[F] = &[
    (1, "metadata", K::Msg(OBJECT_META)),
    (2, "spec", K::Msg(DEPLOYMENT_SPEC)),
];
static SERVICE_PORT: &[F] = &[
    (1, "name", K::Str),
    (2, "protocol", K::Str),
    (3, "port", K::Int),
    (4, "targetPort", K::IntOrStr),
    (5, "nodePort", K::Int),
    (6, "appProtocol", K::Str),
];
static SERVICE_SPEC: &[F] = &[
    (1, "ports", K::RepMsg(SERVICE_PORT)),
    (2, "selector", K::MapStr),
    (3, "clusterIP", K::Str),
    (4, "type", K::Str),
    (5, "externalIPs", K::RepStr),
    (7, "sessionAffinity", K::Str),
    (10, "externalName", K::Str),
];
static SERVICE: &[F] = &[
    (1, "metadata", K::Msg(OBJECT_META)),
    (2, "spec", K::Msg(SERVICE_SPEC)),
];

fn descriptor(kind: &str) -> Option<&'static [F]> {
    Some(match kind {
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Pod" => POD,
        "Deployment" => DEPLOYMENT,
        "Service" => SERVICE,
        _ => return None,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
}

fn malformed() -> ApiError {
    ApiError::bad_request("malformed protobuf body")
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or_else(malformed)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed())
    }

    fn bytes(&mut self) -> Result<&'a [u8], ApiError> {
        let len = usize::try_from(self.varint()?).map_err(|_| malformed())?;
        if len > self.buf.len() {
            return Err(malformed());
        }
        let (b, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(b)
    }

    /// The next field: number, wire type, and its payload (varint value or bytes).
    fn field(&mut self) -> Result<Option<(u32, Payload<'a>)>, ApiError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let num = u32::try_from(tag >> 3).map_err(|_| malformed())?;
        let p = match tag & 7 {
            0 => Payload::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Payload::Other
            }
            2 => Payload::Bytes(self.bytes()?),
            5 => {
                self.skip(4)?;
                Payload::Other
            }
            _ => return Err(malformed()),
        };
        Ok(Some((num, p)))
    }

    fn skip(&mut self, n: usize) -> Result<(), ApiError> {
        if n > self.buf.len() {
            return Err(malformed());
        }
        self.buf = &self.buf[n..];
        Ok(())
    }
}

enum Payload<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

fn text(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| malformed())
}

fn map_entry(b: &[u8]) -> Result<(String, Vec<u8>), ApiError> {
    let mut r = Reader { buf: b };
    let (mut k, mut v) = (String::new(), Vec::new());
    while let Some((n, p)) = r.field()? {
        match (n, p) {
            (1, Payload::Bytes(b)) => k = text(b)?,
            (2, Payload::Bytes(b)) => v = b.to_vec(),
            _ => {}
        }
    }
    Ok((k, v))
}

fn message(b: &[u8], desc: &'static [F]) -> Result<Value, ApiError> {
    use base64::Engine as _;
    let mut out = Map::new();
    let mut r = Reader { buf: b };
    while let Some((num, payload)) = r.field()? {
        let Some(&(_, name, kind)) = desc.iter().find(|f| f.0 == num) else {
            continue;
        };
        match (kind, payload) {
            // Go's protobuf encoding writes zero values of non-pointer fields, which JSON
            // leaves out: read empty strings, false and 0 as unset (except replica counts,
            // which are pointers upstream and meaningful at 0).
            (K::Int, Payload::Varint(v)) => {
                if v != 0 || name == "replicas" {
                    out.insert(name.into(), json!(v as i64));
                }
            }
            (K::Bool, Payload::Varint(v)) => {
                if v != 0 {
                    out.insert(name.into(), json!(true));
                }
            }
            (K::Str, Payload::Bytes(b)) => {
                if !b.is_empty() {
                    out.insert(name.into(), json!(text(b)?));
                }
            }
            (K::Msg(d), Payload::Bytes(b)) => {
                out.insert(name.into(), message(b, d)?);
            }
            (K::Time, Payload::Bytes(b)) => {
                let t = message(b, TIME_FIELDS)?;
                let secs = t["seconds"].as_i64().unwrap_or(0);
                if secs == 0 {
                    continue;
                }
                let ts =
                    k8s_openapi::jiff::Timestamp::from_second(secs).map_err(|_| malformed())?;
                out.insert(
                    name.into(),
                    json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
            }
            (K::IntOrStr, Payload::Bytes(b)) => {
                let mut r = Reader { buf: b };
                let (mut ty, mut iv, mut sv) = (0, 0i64, String::new());
                while let Some((n, p)) = r.field()? {
                    match (n, p) {
                        (1, Payload::Varint(v)) => ty = v,
                        (2, Payload::Varint(v)) => iv = v as i64,
                        (3, Payload::Bytes(b)) => sv = text(b)?,
                        _ => {}
                    }
                }
                out.insert(name.into(), if ty == 1 { json!(sv) } else { json!(iv) });
            }
            (K::RepStr, Payload::Bytes(b)) => {
                let item = json!(text(b)?);
                let v = out.entry(name.to_owned()).or_insert_with(|| json!([]));
                if let Some(a) = v.as_array_mut() {
                    a.push(item);
                }
            }
            (K::RepMsg(d), Payload::Bytes(b)) => {
                let m = message(b, d)?;
                let v = out.entry(name.to_owned()).or_insert_with(|| json!([]));
                if let Some(a) = v.as_array_mut() {
                    a.push(m);
                }
            }
            (K::MapStr | K::MapBytes | K::MapQuantity, Payload::Bytes(b)) => {
                let (k, raw) = map_entry(b)?;
                let val = match kind {
                    K::MapStr => json!(text(&raw)?),
                    K::MapBytes => json!(base64::engine::general_purpose::STANDARD.encode(raw)),
                    _ => {
                        let q = message(&raw, &[(1, "string", K::Str)])?;
                        q["string"].clone()
                    }
                };
                let v = out.entry(name.to_owned()).or_insert_with(|| json!({}));
                if let Some(m) = v.as_object_mut() {
                    m.insert(k, val);
                }
            }
            _ => return Err(malformed()),
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a protobuf request body into the equivalent JSON object.
pub(crate) fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| ApiError::bad_request("protobuf body lacks the k8s envelope"))?;
    let mut r = Reader { buf: rest };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while let Some((n, p)) = r.field()? {
        match (n, p) {
            (1, Payload::Bytes(tm)) => {
                let mut t = Reader { buf: tm };
                while let Some((n, p)) = t.field()? {
                    match (n, p) {
                        (1, Payload::Bytes(b)) => api_version = text(b)?,
                        (2, Payload::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Payload::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let desc = descriptor(&kind).ok_or_else(|| {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("protobuf bodies of kind {kind:?} are not supported; send application/json"),
        )
    })?;
    let mut obj = message(raw, desc)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let v = decode(&unknown).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "immutable": true,
            "metadata": {"name": "cm", "labels": {"app": "web"}}, "data": {"k": "v"}})
        );
        assert_eq!(decode(b"k8s\0\x0a\x05").unwrap_err().code, 400);
        let mut other = b"k8s\0".to_vec();
        let mut tm = Vec::new();
        bytes_field(2, b"Widget", &mut tm);
        bytes_field(1, &tm, &mut other);
        assert_eq!(decode(&other).unwrap_err().code, 415);
    }
}
