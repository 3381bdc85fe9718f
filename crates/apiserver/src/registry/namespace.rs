//! Namespaces: `spec.finalizers` (`kubernetes` by default) change only through the
//! `finalize` subresource and keep a deleted namespace Terminating until the namespace
//! controller has emptied it; the status is not reset by updates; writes settle in the
//! watch cache, which namespace admission reads.

use serde_json::{json, Value};

use super::Strategy;
use crate::defaults::{obj_mut, set_default};
use crate::resources::{res, ResourceInfo, Sub, NONE};
use crate::table::{age, col};

/// The served `Namespace` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::core::v1::Namespace,
    "namespaces",
    false,
    &["ns"],
    NONE,
    &[Sub::Status, Sub::Finalize],
    false,
    &NamespaceStrategy
);

/// The `Namespace` strategy.
pub(crate) struct NamespaceStrategy;

impl Strategy for NamespaceStrategy {
    fn kind(&self) -> &'static str {
        "Namespace"
    }

    fn name_is_label(&self) -> bool {
        true
    }

    fn defaults(&self, obj: &mut Value) {
        let name = obj["metadata"]["name"].clone();
        if name.is_string() {
            let labels = obj_mut(obj_mut(obj, "metadata"), "labels");
            labels["kubernetes.io/metadata.name"] = name;
        }
        set_default(obj_mut(obj, "spec"), "finalizers", json!(["kubernetes"]));
        set_default(obj_mut(obj, "status"), "phase", json!("Active"));
    }

    fn update_resets_status(&self) -> bool {
        false
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        // spec.finalizers changes only through the finalize subresource.
        if !new["spec"].is_object() {
            new["spec"] = json!({});
        }
        new["spec"]["finalizers"] = old["spec"]["finalizers"].clone();
        if old["metadata"]["deletionTimestamp"].is_string() {
            new["status"]["phase"] = json!("Terminating");
        }
    }

    fn has_kind_finalizers(&self, obj: &Value) -> bool {
        obj["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    }

    fn mark_terminating(&self, obj: &mut Value) {
        obj["status"]["phase"] = json!("Terminating");
    }

    fn settle_in_cache(&self) -> bool {
        true
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![col("Name", s, 0), col("Status", s, 0), col("Age", s, 0)]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let name = json!(o["metadata"]["name"]);
        let a = json!(age(&o["metadata"]["creationTimestamp"]));
        let st = &o["status"];
        vec![name, json!(st["phase"].as_str().unwrap_or("Active")), a]
    }
}
