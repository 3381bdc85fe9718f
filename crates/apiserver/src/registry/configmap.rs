//! ConfigMaps: keys are validated; `data` and `binaryData` are the spec.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::validate;

/// The `ConfigMap` strategy.
pub(crate) struct ConfigMapStrategy;

impl Strategy for ConfigMapStrategy {
    fn kind(&self) -> &'static str {
        "ConfigMap"
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate::data_keys(obj, causes);
    }

    fn spec_of(&self, obj: &Value) -> Value {
        json!([obj["data"], obj["binaryData"], obj["stringData"]])
    }
}
