//! Secrets: `type` defaults to Opaque, write-only `stringData` is merged into `data`,
//! keys, the 1 MiB data limit and the keys each built-in type needs are validated; the
//! `type` never changes, nor the data of an `immutable` Secret; the data fields are the spec.

use serde_json::{json, Value};

use super::Strategy;
use crate::defaults::{obj_mut, set_default};
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::{age, col};
use crate::validate;

/// The served `Secret` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::core::v1::Secret,
    "secrets",
    true,
    &[],
    NONE,
    &[],
    false,
    &SecretStrategy
);

/// The `Secret` strategy.
pub(crate) struct SecretStrategy;

impl Strategy for SecretStrategy {
    fn kind(&self) -> &'static str {
        "Secret"
    }

    fn defaults(&self, obj: &mut Value) {
        set_default(obj, "type", json!("Opaque"));
        // stringData is write-only: it is merged into data, base64-encoded.
        if let Some(sd) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
            use base64::Engine as _;
            let data = obj_mut(obj, "data");
            for (k, v) in sd.as_object().into_iter().flatten() {
                let raw = v.as_str().unwrap_or_default();
                data[k] = json!(base64::engine::general_purpose::STANDARD.encode(raw));
            }
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate::data(obj, validate::DataOf::Secret, causes);
        secret_type(obj, causes);
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        validate::immutable(&new["type"], &old["type"], "type", causes);
        validate::immutable_data(new, old, &["data"], causes);
    }

    fn spec_of(&self, obj: &Value) -> Value {
        json!([obj["data"], obj["binaryData"], obj["stringData"]])
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        let i = "integer";
        vec![
            col("Name", s, 0),
            col("Type", s, 0),
            col("Data", i, 0),
            col("Age", s, 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let name = json!(o["metadata"]["name"]);
        let a = json!(age(&o["metadata"]["creationTimestamp"]));
        vec![
            name,
            json!(o["type"]),
            json!(o["data"].as_object().map_or(0, |m| m.len())),
            a,
        ]
    }
}
/// The keys each built-in Secret type requires (upstream's `ValidateSecret`).
fn secret_type(obj: &Value, causes: &mut Vec<Cause>) {
    let data = &obj["data"];
    let has = |k: &str| data.get(k).is_some();
    let require = |k: &str, causes: &mut Vec<Cause>| {
        if !has(k) {
            causes.push(Cause::required(format!("data[{k}]")));
        }
    };
    match obj["type"].as_str().unwrap_or_default() {
        "kubernetes.io/service-account-token" => {
            let key = "kubernetes.io/service-account.name";
            if obj["metadata"]["annotations"][key]
                .as_str()
                .is_none_or(str::is_empty)
            {
                causes.push(Cause::required(format!("metadata.annotations[{key}]")));
            }
        }
        "kubernetes.io/dockercfg" => require(".dockercfg", causes),
        "kubernetes.io/dockerconfigjson" => require(".dockerconfigjson", causes),
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            require("username", causes);
            require("password", causes);
        }
        "kubernetes.io/ssh-auth" => require("ssh-privatekey", causes),
        "kubernetes.io/tls" => {
            require("tls.crt", causes);
            require("tls.key", causes);
        }
        _ => {}
    }
}
