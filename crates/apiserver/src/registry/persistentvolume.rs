//! PersistentVolumes: capacity, access modes and exactly one volume source are
//! required; the source and volume mode are fixed after creation, node affinity once set.

use serde_json::{json, Value};

use super::persistentvolumeclaim::{access_modes, access_modes_str, attributes_class, class_of};
use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, NONE};
use crate::table::{age, col};
use crate::validate;

/// The served `PersistentVolume` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::core::v1::PersistentVolume,
    "persistentvolumes",
    false,
    &["pv"],
    NONE,
    &[Sub::Status],
    false,
    &PersistentVolumeStrategy
);

/// The `PersistentVolume` strategy.
pub(crate) struct PersistentVolumeStrategy;

/// Spec fields that are not the volume source.
const NOT_SOURCE: &[&str] = &[
    "accessModes",
    "capacity",
    "claimRef",
    "mountOptions",
    "nodeAffinity",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeAttributesClassName",
    "volumeMode",
];

fn source(spec: &Value) -> Value {
    let mut s = spec.clone();
    if let Some(o) = s.as_object_mut() {
        o.retain(|k, v| !NOT_SOURCE.contains(&k.as_str()) && !v.is_null());
    }
    s
}

impl Strategy for PersistentVolumeStrategy {
    fn kind(&self) -> &'static str {
        "PersistentVolume"
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        access_modes(&spec["accessModes"], "spec.accessModes", causes);
        let cap = &spec["capacity"];
        if cap.as_object().is_none_or(|c| c.is_empty()) {
            causes.push(Cause::required("spec.capacity"));
        } else {
            for k in cap.as_object().into_iter().flatten().map(|(k, _)| k) {
                if k != "storage" {
                    causes.push(Cause::not_supported(
                        format!("spec.capacity[{k}]"),
                        &Value::String(k.clone()),
                        &["storage"],
                    ));
                }
            }
        }
        match source(spec).as_object().map_or(0, |o| o.len()) {
            0 => causes.push(Cause::required_because(
                "spec",
                "must specify a volume type",
            )),
            1 => {}
            _ => causes.push(Cause::forbidden(
                "spec",
                "may not specify more than 1 volume type",
            )),
        }
        validate::one_of(
            &spec["persistentVolumeReclaimPolicy"],
            "spec.persistentVolumeReclaimPolicy",
            &["Delete", "Recycle", "Retain"],
            causes,
        );
        validate::one_of(
            &spec["volumeMode"],
            "spec.volumeMode",
            &["Block", "Filesystem"],
            causes,
        );
    }

    fn defaults(&self, obj: &mut Value) {
        let spec = &mut obj["spec"];
        if spec.is_object() {
            if spec["persistentVolumeReclaimPolicy"].is_null() {
                spec["persistentVolumeReclaimPolicy"] = json!("Retain");
            }
            if spec["volumeMode"].is_null() {
                spec["volumeMode"] = json!("Filesystem");
            }
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
        super::persistentvolumeclaim::add_finalizer(obj, "kubernetes.io/pv-protection");
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("Capacity", s, 0),
            col("Access Modes", s, 0),
            col("Reclaim Policy", s, 0),
            col("Status", s, 0),
            col("Claim", s, 0),
            col("StorageClass", s, 0),
            col("VolumeAttributesClass", s, 0),
            col("Reason", s, 0),
            col("Age", s, 0),
            col("VolumeMode", s, 1),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let spec = &o["spec"];
        let claim = match (
            spec["claimRef"]["namespace"].as_str(),
            spec["claimRef"]["name"].as_str(),
        ) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.to_owned(),
            _ => String::new(),
        };
        vec![
            json!(o["metadata"]["name"]),
            json!(spec["capacity"]["storage"].as_str().unwrap_or_default()),
            json!(access_modes_str(&spec["accessModes"])),
            json!(spec["persistentVolumeReclaimPolicy"]
                .as_str()
                .unwrap_or_default()),
            json!(o["status"]["phase"].as_str().unwrap_or_default()),
            json!(claim),
            json!(class_of(o)),
            json!(attributes_class(o)),
            json!(o["status"]["reason"].as_str().unwrap_or_default()),
            json!(age(&o["metadata"]["creationTimestamp"])),
            json!(spec["volumeMode"].as_str().unwrap_or("Filesystem")),
        ]
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        let (ns, os) = (&new["spec"], &old["spec"]);
        let (n, o) = (source(ns), source(os));
        if n != o {
            causes.push(Cause::forbidden(
                "spec.persistentvolumesource",
                &format!(
                    "spec.persistentvolumesource is immutable after creation\n{}",
                    validate::diff("core.PersistentVolumeSource", &o, &n)
                ),
            ));
        }
        validate::immutable(&ns["volumeMode"], &os["volumeMode"], "volumeMode", causes);
        if !os["nodeAffinity"].is_null() {
            validate::immutable(
                &ns["nodeAffinity"],
                &os["nodeAffinity"],
                "nodeAffinity",
                causes,
            );
        }
    }
}
