//! PersistentVolumeClaims: access modes and a storage request are required; after
//! creation the spec is fixed but for the storage request of a bound claim (which may
//! grow) and a `volumeName` set once.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, NONE};
use crate::table::{age, col};
use crate::validate;

/// The served `PersistentVolumeClaim` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::core::v1::PersistentVolumeClaim,
    "persistentvolumeclaims",
    true,
    &["pvc"],
    NONE,
    &[Sub::Status],
    false,
    &PersistentVolumeClaimStrategy
);

/// The `PersistentVolumeClaim` strategy.
pub(crate) struct PersistentVolumeClaimStrategy;

/// The access modes a volume or claim may ask for.
pub(crate) const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// Access modes at `path`: at least one, each known, `ReadWriteOncePod` alone.
pub(crate) fn access_modes(modes: &Value, path: &str, causes: &mut Vec<Cause>) {
    let list = modes.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        causes.push(Cause::required_because(
            path,
            "at least 1 access mode is required",
        ));
    }
    for m in list {
        validate::one_of(m, path, ACCESS_MODES, causes);
    }
    if list.len() > 1 && list.iter().any(|m| m == "ReadWriteOncePod") {
        causes.push(Cause::forbidden(
            path,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

/// Access modes as kubectl prints them (`RWO,ROX,RWX,RWOP`, in that order).
pub(crate) fn access_modes_str(modes: &Value) -> String {
    let list = modes.as_array().map(Vec::as_slice).unwrap_or_default();
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| list.iter().any(|x| x == m))
    .map(|(_, s)| *s)
    .collect::<Vec<_>>()
    .join(",")
}

/// A claim's or volume's class: `spec.storageClassName`, else the beta annotation.
pub(crate) fn class_of(obj: &Value) -> &str {
    obj["spec"]["storageClassName"]
        .as_str()
        .or_else(|| {
            obj["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"].as_str()
        })
        .unwrap_or_default()
}

/// The volume attributes class as kubectl prints it (`<unset>` when there is none).
pub(crate) fn attributes_class(obj: &Value) -> String {
    obj["spec"]["volumeAttributesClassName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("<unset>")
        .to_owned()
}

/// Upstream's StorageObjectInUseProtection admission: a new claim or volume gets its
/// protection finalizer (removed by the pvc-protection and pv-protection controllers).
pub(crate) fn add_finalizer(obj: &mut Value, finalizer: &str) {
    let meta = &mut obj["metadata"];
    if !meta["finalizers"].is_array() {
        meta["finalizers"] = json!([]);
    }
    if let Some(list) = meta["finalizers"].as_array_mut() {
        if !list.iter().any(|f| f == finalizer) {
            list.push(json!(finalizer));
        }
    }
}

fn storage_request(obj: &Value) -> Option<kcore_k8s::Quantity> {
    obj["spec"]["resources"]["requests"]["storage"]
        .as_str()
        .and_then(|s| kcore_k8s::Quantity::parse(s).ok())
}

impl Strategy for PersistentVolumeClaimStrategy {
    fn kind(&self) -> &'static str {
        "PersistentVolumeClaim"
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        access_modes(&spec["accessModes"], "spec.accessModes", causes);
        let req = &spec["resources"]["requests"]["storage"];
        match storage_request(obj) {
            _ if req.is_null() => causes.push(Cause::required("spec.resources[storage]")),
            Some(q) if q <= kcore_k8s::Quantity::new(0, 0) => causes.push(Cause::invalid(
                "spec.resources[storage]",
                req,
                "must be greater than zero",
            )),
            _ => {}
        }
        validate::one_of(
            &spec["volumeMode"],
            "spec.volumeMode",
            &["Block", "Filesystem"],
            causes,
        );
        if let Some(sc) = spec["storageClassName"].as_str().filter(|s| !s.is_empty()) {
            validate::dns_subdomain(
                &Value::String(sc.to_owned()),
                "spec.storageClassName",
                causes,
            );
        }
    }

    fn defaults(&self, obj: &mut Value) {
        if obj["spec"].is_object() && obj["spec"]["volumeMode"].is_null() {
            obj["spec"]["volumeMode"] = json!("Filesystem");
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
        add_finalizer(obj, "kubernetes.io/pvc-protection");
    }

    fn create_reads(&self) -> Option<(&'static str, &'static str)> {
        Some(("storage.k8s.io/v1", "storageclasses"))
    }

    /// Upstream's DefaultStorageClass admission: a claim that names no class (a null
    /// `storageClassName`, not an empty one) gets the default class.
    fn admit_create(&self, obj: &mut Value, classes: &[Value]) {
        let annotated =
            !obj["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"].is_null();
        if !obj["spec"]["storageClassName"].is_null() || annotated {
            return;
        }
        if let Some(name) = super::storageclass::default_class(classes) {
            obj["spec"]["storageClassName"] = json!(name);
        }
    }

    /// Upstream's PersistentVolumeClaimResize admission: a claim may grow only when its
    /// class allows volume expansion.
    fn update_reads(&self, new: &Value, old: &Value) -> Option<(&'static str, &'static str)> {
        match (storage_request(new), storage_request(old)) {
            (Some(n), Some(o)) if n > o => Some(("storage.k8s.io/v1", "storageclasses")),
            _ => None,
        }
    }

    fn admit_update(&self, new: &Value, old: &Value, classes: &[Value]) -> Result<(), String> {
        let class = class_of(new);
        let expandable = !class.is_empty()
            && class == class_of(old)
            && classes.iter().any(|c| {
                c["metadata"]["name"] == class && c["allowVolumeExpansion"] == json!(true)
            });
        if expandable {
            Ok(())
        } else {
            Err("only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize".into())
        }
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("Status", s, 0),
            col("Volume", s, 0),
            col("Capacity", s, 0),
            col("Access Modes", s, 0),
            col("StorageClass", s, 0),
            col("VolumeAttributesClass", s, 0),
            col("Age", s, 0),
            col("VolumeMode", s, 1),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let volume = o["spec"]["volumeName"].as_str().unwrap_or_default();
        let (modes, capacity) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            (
                access_modes_str(&o["status"]["accessModes"]),
                o["status"]["capacity"]["storage"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        };
        vec![
            json!(o["metadata"]["name"]),
            json!(o["status"]["phase"].as_str().unwrap_or("Pending")),
            json!(volume),
            json!(capacity),
            json!(modes),
            json!(class_of(o)),
            json!(attributes_class(o)),
            json!(age(&o["metadata"]["creationTimestamp"])),
            json!(o["spec"]["volumeMode"].as_str().unwrap_or("Filesystem")),
        ]
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        let mut n = new["spec"].clone();
        let mut o = old["spec"].clone();
        // Claims stored before volumeMode was defaulted.
        if o["volumeMode"].is_null() {
            o["volumeMode"] = n["volumeMode"].clone();
        }
        // volumeName may be set once.
        if o["volumeName"].as_str().is_none_or(str::is_empty) {
            o["volumeName"] = n["volumeName"].clone();
        }
        // A bound claim may change its storage request and volume attributes class.
        if new["status"]["phase"] == "Bound" {
            if !n["resources"]["requests"].is_null() {
                n["resources"]["requests"]["storage"] =
                    o["resources"]["requests"]["storage"].clone();
            }
            n["volumeAttributesClassName"] = o["volumeAttributesClassName"].clone();
        }
        let clean = |v: &mut Value| {
            if let Some(m) = v.as_object_mut() {
                m.retain(|_, x| !x.is_null());
            }
        };
        clean(&mut n);
        clean(&mut o);
        if n != o {
            causes.push(Cause::forbidden(
                "spec",
                &format!(
                    "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n{}",
                    validate::diff("core.PersistentVolumeClaimSpec", &o, &n)
                ),
            ));
        }
        if let (Some(nq), Some(oq)) = (storage_request(new), storage_request(old)) {
            if nq < oq {
                let cap = old["status"]["capacity"]["storage"]
                    .as_str()
                    .and_then(|s| kcore_k8s::Quantity::parse(s).ok());
                if cap.is_none_or(|c| nq <= c) {
                    causes.push(Cause::forbidden(
                        "spec.resources.requests.storage",
                        "field can not be less than status.capacity",
                    ));
                }
            }
        }
    }
}
