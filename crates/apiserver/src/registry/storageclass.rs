//! StorageClasses (storage.k8s.io/v1): defaults, validation and the columns of
//! `kubectl get storageclass`, as upstream's `pkg/registry/storage/storageclass`; and the
//! default-class rule that PersistentVolumeClaim admission applies ([`default_class`],
//! upstream's `DefaultStorageClass` admission plugin).

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::{age, col};
use crate::validate;

/// The served `StorageClass` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::storage::v1::StorageClass,
    "storageclasses",
    false,
    &["sc"],
    NONE,
    &[],
    false,
    &StorageClassStrategy
);

/// The annotation that makes a class the default one.
pub(crate) const IS_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The beta form of [`IS_DEFAULT_CLASS`], still honoured upstream.
const BETA_IS_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// The longest provisioner name.
const MAX_PROVISIONER_LEN: usize = 63;
/// The largest total size of a class's parameters (keys and values).
const MAX_PARAMETERS_SIZE: usize = 256 * 1024;

/// The `StorageClass` strategy.
pub(crate) struct StorageClassStrategy;

/// Whether `sc` is annotated as a default class.
pub(crate) fn is_default(sc: &Value) -> bool {
    let a = &sc["metadata"]["annotations"];
    a[IS_DEFAULT_CLASS] == "true" || a[BETA_IS_DEFAULT_CLASS] == "true"
}

/// The default class among `classes`, as upstream's admission picks it: of several
/// default classes, the newest (then the first by name).
pub(crate) fn default_class(classes: &[Value]) -> Option<&str> {
    super::newest_default(classes, is_default)
}

impl Strategy for StorageClassStrategy {
    fn kind(&self) -> &'static str {
        "StorageClass"
    }

    fn defaults(&self, obj: &mut Value) {
        if obj["reclaimPolicy"].is_null() {
            obj["reclaimPolicy"] = json!("Delete");
        }
        if obj["volumeBindingMode"].is_null() {
            obj["volumeBindingMode"] = json!("Immediate");
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let p = &obj["provisioner"];
        match p.as_str() {
            None | Some("") => causes.push(Cause::required("provisioner")),
            Some(s) if s.len() > MAX_PROVISIONER_LEN => {
                causes.push(Cause::too_long("provisioner", MAX_PROVISIONER_LEN))
            }
            Some(s) if !validate::is_qualified_name(&s.to_ascii_lowercase()) => {
                causes.push(Cause::invalid(
                    "provisioner",
                    p,
                    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                ))
            }
            _ => {}
        }
        let mut size = 0;
        for (k, v) in obj["parameters"].as_object().into_iter().flatten() {
            if k.is_empty() {
                causes.push(Cause::invalid(
                    "parameters",
                    &json!(k),
                    "invalid empty parameter name",
                ));
            }
            size += k.len() + v.as_str().map_or(0, str::len);
        }
        if size > MAX_PARAMETERS_SIZE {
            causes.push(Cause::too_long("parameters", MAX_PARAMETERS_SIZE));
        }
        let rp = &obj["reclaimPolicy"];
        if !rp.is_null() {
            validate::one_of(rp, "reclaimPolicy", &["Delete", "Retain"], causes);
        }
        match &obj["volumeBindingMode"] {
            Value::Null => causes.push(Cause::required("volumeBindingMode")),
            m => validate::one_of(
                m,
                "volumeBindingMode",
                &["Immediate", "WaitForFirstConsumer"],
                causes,
            ),
        }
        for (i, t) in obj["allowedTopologies"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let path = format!("allowedTopologies[{i}].matchLabelExpressions");
            if t["matchLabelExpressions"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                causes.push(Cause::required_because(
                    path,
                    "must contain at least one requirement",
                ));
            }
        }
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        let param = |o: &Value| match &o["parameters"] {
            Value::Object(m) if m.is_empty() => Value::Null,
            v => v.clone(),
        };
        if param(new) != param(old) {
            causes.push(Cause::forbidden(
                "parameters",
                "updates to parameters are forbidden.",
            ));
        }
        if new["provisioner"] != old["provisioner"] {
            causes.push(Cause::forbidden(
                "provisioner",
                "updates to provisioner are forbidden.",
            ));
        }
        if new["reclaimPolicy"] != old["reclaimPolicy"] {
            causes.push(Cause::forbidden(
                "reclaimPolicy",
                "updates to reclaimPolicy are forbidden.",
            ));
        }
        validate::immutable(
            &new["volumeBindingMode"],
            &old["volumeBindingMode"],
            "volumeBindingMode",
            causes,
        );
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("Provisioner", s, 0),
            col("ReclaimPolicy", s, 0),
            col("VolumeBindingMode", s, 0),
            col("AllowVolumeExpansion", s, 0),
            col("Age", s, 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let name = if is_default(o) {
            format!("{name} (default)")
        } else {
            name.to_owned()
        };
        vec![
            json!(name),
            json!(o["provisioner"].as_str().unwrap_or_default()),
            json!(o["reclaimPolicy"].as_str().unwrap_or("Delete")),
            json!(o["volumeBindingMode"].as_str().unwrap_or("Immediate")),
            json!(o["allowVolumeExpansion"]
                .as_bool()
                .unwrap_or(false)
                .to_string()),
            json!(age(&o["metadata"]["creationTimestamp"])),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(name: &str, default: bool, created: &str) -> Value {
        let mut o = json!({"metadata": {"name": name, "creationTimestamp": created},
            "provisioner": "kcore.dev/local-path"});
        if default {
            o["metadata"]["annotations"] = json!({IS_DEFAULT_CLASS: "true"});
        }
        o
    }

    #[test]
    fn the_newest_default_class_wins() {
        let classes = [
            sc("a", true, "2024-01-01T00:00:00Z"),
            sc("b", false, "2025-01-01T00:00:00Z"),
            sc("c", true, "2024-06-01T00:00:00Z"),
        ];
        assert_eq!(default_class(&classes), Some("c"));
        assert_eq!(default_class(&classes[1..2]), None);
    }

    #[test]
    fn validation_as_upstream() {
        let s = StorageClassStrategy;
        let mut o = sc("a", false, "");
        s.defaults(&mut o);
        assert_eq!(o["reclaimPolicy"], "Delete");
        assert_eq!(o["volumeBindingMode"], "Immediate");
        let mut causes = Vec::new();
        s.validate(&o, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        let mut bad = o.clone();
        bad["provisioner"] = json!("");
        bad["reclaimPolicy"] = json!("Recycle");
        bad["volumeBindingMode"] = json!("Later");
        s.validate(&bad, &mut causes);
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["provisioner", "reclaimPolicy", "volumeBindingMode"]
        );
        let mut causes = Vec::new();
        let mut changed = o.clone();
        changed["parameters"] = json!({"a": "b"});
        changed["volumeBindingMode"] = json!("WaitForFirstConsumer");
        s.validate_update(&changed, &o, &mut causes);
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["parameters", "volumeBindingMode"]);
    }
}
