//! CSIDrivers (storage.k8s.io/v1, cluster-scoped), as upstream's
//! `pkg/registry/storage/csidriver`: what Kubernetes should know of a volume driver,
//! named by the driver. kcore's built-in local provisioner has one
//! (`kcore.dev.local-path`, created by `kcored up` and `kcored server`) with
//! `storageCapacity: true`, so the scheduler checks the CSIStorageCapacities its nodes
//! publish. Defaults as upstream (`attachRequired` true, `podInfoOnMount`,
//! `requiresRepublish`, `storageCapacity` and `seLinuxMount` false, `fsGroupPolicy`
//! `ReadWriteOnceWithFSType`, `volumeLifecycleModes` `[Persistent]`);
//! `attachRequired` is immutable. The columns `kubectl get csidrivers` prints: NAME,
//! ATTACHREQUIRED, PODINFOONMOUNT, STORAGECAPACITY, TOKENREQUESTS, REQUIRESREPUBLISH,
//! MODES, AGE.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::{age, col};
use crate::validate;

/// The served `CSIDriver` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::storage::v1::CSIDriver,
    "csidrivers",
    false,
    &[],
    NONE,
    &[],
    false,
    &CsiDriverStrategy
);

/// The `CSIDriver` strategy.
pub(crate) struct CsiDriverStrategy;

impl Strategy for CsiDriverStrategy {
    fn kind(&self) -> &'static str {
        "CSIDriver"
    }

    fn defaults(&self, obj: &mut Value) {
        let spec = &mut obj["spec"];
        for (f, v) in [
            ("attachRequired", json!(true)),
            ("podInfoOnMount", json!(false)),
            ("requiresRepublish", json!(false)),
            ("storageCapacity", json!(false)),
            ("seLinuxMount", json!(false)),
            ("fsGroupPolicy", json!("ReadWriteOnceWithFSType")),
            ("volumeLifecycleModes", json!(["Persistent"])),
        ] {
            if spec[f].is_null() {
                spec[f] = v;
            }
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        validate::one_of(
            &spec["fsGroupPolicy"],
            "spec.fsGroupPolicy",
            &["ReadWriteOnceWithFSType", "File", "None"],
            causes,
        );
        for (i, m) in spec["volumeLifecycleModes"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            validate::one_of(
                m,
                &format!("spec.volumeLifecycleModes[{i}]"),
                &["Persistent", "Ephemeral"],
                causes,
            );
        }
        for (i, t) in spec["tokenRequests"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if t["audience"].is_null() {
                causes.push(Cause::required(format!("spec.tokenRequests[{i}].audience")));
            }
        }
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        validate::immutable(
            &new["spec"]["attachRequired"],
            &old["spec"]["attachRequired"],
            "spec.attachRequired",
            causes,
        );
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("AttachRequired", "boolean", 0),
            col("PodInfoOnMount", "boolean", 0),
            col("StorageCapacity", "boolean", 0),
            col("TokenRequests", s, 0),
            col("RequiresRepublish", "boolean", 0),
            col("Modes", s, 0),
            col("Age", s, 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let spec = &o["spec"];
        let flag = |f: &str| json!(spec[f].as_bool().unwrap_or(false));
        let list = |f: &str, key: Option<&str>| {
            let items: Vec<&str> = spec[f]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| key.map_or(v, |k| &v[k]).as_str())
                .collect();
            if items.is_empty() {
                "<unset>".to_owned()
            } else {
                items.join(",")
            }
        };
        vec![
            json!(o["metadata"]["name"].as_str().unwrap_or_default()),
            json!(spec["attachRequired"].as_bool().unwrap_or(true)),
            flag("podInfoOnMount"),
            flag("storageCapacity"),
            json!(list("tokenRequests", Some("audience"))),
            flag("requiresRepublish"),
            json!(list("volumeLifecycleModes", None)),
            json!(age(&o["metadata"]["creationTimestamp"])),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validation_and_columns_as_upstream() {
        let s = CsiDriverStrategy;
        let mut o = json!({"metadata": {"name": "kcore.dev.local-path"},
            "spec": {"storageCapacity": true, "attachRequired": false}});
        s.defaults(&mut o);
        assert_eq!(o["spec"]["volumeLifecycleModes"], json!(["Persistent"]));
        assert_eq!(o["spec"]["storageCapacity"], true);
        let mut causes = Vec::new();
        s.validate(&o, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        let cells = s.table_cells(&o);
        assert_eq!(
            cells[1..7],
            [
                json!(false),
                json!(false),
                json!(true),
                json!("<unset>"),
                json!(false),
                json!("Persistent")
            ]
        );
        let mut bad = o.clone();
        bad["spec"]["fsGroupPolicy"] = json!("Always");
        bad["spec"]["volumeLifecycleModes"] = json!(["Sometimes"]);
        s.validate(&bad, &mut causes);
        bad["spec"]["attachRequired"] = json!(true);
        s.validate_update(&bad, &o, &mut causes);
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.fsGroupPolicy",
                "spec.volumeLifecycleModes[0]",
                "spec.attachRequired"
            ]
        );
    }
}
