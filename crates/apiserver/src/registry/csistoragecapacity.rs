//! CSIStorageCapacities (storage.k8s.io/v1, namespaced), as upstream's
//! `pkg/registry/storage/csistoragecapacity`: how much a storage class can still
//! provision in a node topology (`nodeTopology`, a label selector over nodes), published
//! by the class's provisioner and read by the scheduler's VolumeBinding when the
//! driver's CSIDriver has `storageCapacity: true`. `storageClassName` and
//! `nodeTopology` are immutable; `capacity` and `maximumVolumeSize` are non-negative
//! quantities. The columns `kubectl get csistoragecapacities` prints: NAME,
//! STORAGECLASSNAME, CAPACITY, AGE.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::{age, col};
use crate::validate;

/// The served `CSIStorageCapacity` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::storage::v1::CSIStorageCapacity,
    "csistoragecapacities",
    true,
    &[],
    NONE,
    &[],
    false,
    &CsiStorageCapacityStrategy
);

/// The `CSIStorageCapacity` strategy.
pub(crate) struct CsiStorageCapacityStrategy;

/// A quantity field: absent, or a quantity of at least zero.
fn quantity(v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(s) = v.as_str() else {
        return;
    };
    match kcore_k8s::Quantity::parse(s) {
        Ok(q) if q < kcore_k8s::Quantity::new(0, 0) => causes.push(Cause::invalid(
            path,
            v,
            "must be greater than or equal to 0",
        )),
        Ok(_) => {}
        Err(_) => causes.push(Cause::invalid(
            path,
            v,
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        )),
    }
}

impl Strategy for CsiStorageCapacityStrategy {
    fn kind(&self) -> &'static str {
        "CSIStorageCapacity"
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let class = &obj["storageClassName"];
        match class.as_str() {
            None | Some("") => causes.push(Cause::required("storageClassName")),
            Some(s) if !validate::is_dns1123_subdomain(s) => causes.push(Cause::invalid(
                "storageClassName",
                class,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            )),
            _ => {}
        }
        validate::label_selector(&obj["nodeTopology"], "nodeTopology", causes);
        quantity(&obj["capacity"], "capacity", causes);
        quantity(&obj["maximumVolumeSize"], "maximumVolumeSize", causes);
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        for f in ["storageClassName", "nodeTopology"] {
            validate::immutable(&new[f], &old[f], f, causes);
        }
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("StorageClassName", s, 0),
            col("Capacity", s, 0),
            col("Age", s, 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        vec![
            json!(o["metadata"]["name"].as_str().unwrap_or_default()),
            json!(o["storageClassName"].as_str().unwrap_or_default()),
            json!(o["capacity"].as_str().unwrap_or("<unset>")),
            json!(age(&o["metadata"]["creationTimestamp"])),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_as_upstream() {
        let s = CsiStorageCapacityStrategy;
        let ok = json!({"metadata": {"name": "c"}, "storageClassName": "local-path",
            "capacity": "10Gi", "maximumVolumeSize": "10Gi",
            "nodeTopology": {"matchLabels": {"kubernetes.io/hostname": "n1"}}});
        let mut causes = Vec::new();
        s.validate(&ok, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        let bad = json!({"metadata": {"name": "c"}, "storageClassName": "Local_Path",
            "capacity": "-1", "maximumVolumeSize": "lots"});
        s.validate(&bad, &mut causes);
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["storageClassName", "capacity", "maximumVolumeSize"]
        );
        let mut causes = Vec::new();
        let mut moved = ok.clone();
        moved["nodeTopology"] = json!({"matchLabels": {"kubernetes.io/hostname": "n2"}});
        moved["capacity"] = json!("1Gi");
        s.validate_update(&moved, &ok, &mut causes);
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["nodeTopology"]);
        assert_eq!(s.table_cells(&ok)[1], "local-path");
    }
}
