//! ConfigMaps: keys and the 1 MiB data limit are validated; once `immutable: true` is
//! set it stays, and the data does not change; `data` and `binaryData` are the spec.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::{age, col};
use crate::validate;

/// The served `ConfigMap` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::core::v1::ConfigMap,
    "configmaps",
    true,
    &["cm"],
    NONE,
    &[],
    false,
    &ConfigMapStrategy
);

/// The `ConfigMap` strategy.
pub(crate) struct ConfigMapStrategy;

impl Strategy for ConfigMapStrategy {
    fn kind(&self) -> &'static str {
        "ConfigMap"
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate::data(obj, validate::DataOf::ConfigMap, causes);
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        validate::immutable_data(new, old, &["data", "binaryData"], causes);
    }

    fn spec_of(&self, obj: &Value) -> Value {
        json!([obj["data"], obj["binaryData"], obj["stringData"]])
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        let i = "integer";
        vec![col("Name", s, 0), col("Data", i, 0), col("Age", s, 0)]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let name = json!(o["metadata"]["name"]);
        let a = json!(age(&o["metadata"]["creationTimestamp"]));
        let n = o["data"].as_object().map_or(0, |m| m.len())
            + o["binaryData"].as_object().map_or(0, |m| m.len());
        vec![name, json!(n), a]
    }
}
