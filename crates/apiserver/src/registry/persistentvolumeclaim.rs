//! PersistentVolumeClaims: access modes and a storage request are required; after
//! creation the spec is fixed but for the storage request of a bound claim (which may
//! grow) and a `volumeName` set once.

use serde_json::Value;

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, NONE};
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

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        let mut n = new["spec"].clone();
        let mut o = old["spec"].clone();
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
