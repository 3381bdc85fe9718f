//! Nodes: taints and pod CIDRs are validated, the pod CIDR and provider ID are set once;
//! the columns `kubectl get nodes` prints.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, NONE};
use crate::table::{age, col, join_str};
use crate::validate;

/// The served `Node` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::core::v1::Node,
    "nodes",
    false,
    &["no"],
    NONE,
    &[Sub::Status],
    false,
    &NodeStrategy
);

/// The `Node` strategy.
pub(crate) struct NodeStrategy;

impl Strategy for NodeStrategy {
    fn kind(&self) -> &'static str {
        "Node"
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        for (i, t) in spec["taints"].as_array().into_iter().flatten().enumerate() {
            let p = format!("spec.taints[{i}]");
            validate::label_name(&t["key"], &format!("{p}.key"), causes);
            if t["effect"].is_null() {
                causes.push(Cause::required(format!("{p}.effect")));
            }
            validate::one_of(
                &t["effect"],
                &format!("{p}.effect"),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                causes,
            );
        }
        for (i, c) in spec["podCIDRs"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let ok = c
                .as_str()
                .and_then(|c| c.split_once('/'))
                .is_some_and(|(ip, bits)| {
                    validate::ip_family(ip).is_some() && bits.parse::<u8>().is_ok_and(|b| b <= 128)
                });
            if !ok {
                causes.push(Cause::invalid(
                    format!("spec.podCIDRs[{i}]"),
                    c,
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                ));
            }
        }
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        let (ns, os) = (&new["spec"], &old["spec"]);
        // The pod CIDR and provider ID may be set once (by the controller manager).
        let old_cidrs = os["podCIDRs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if !old_cidrs.is_empty() && ns["podCIDRs"] != os["podCIDRs"] {
            causes.push(Cause::forbidden(
                "spec.podCIDRs",
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        if os["providerID"].as_str().is_some_and(|p| !p.is_empty())
            && ns["providerID"] != os["providerID"]
        {
            causes.push(Cause::forbidden(
                "spec.providerID",
                "node updates may not change providerID except from \"\" to valid",
            ));
        }
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("Status", s, 0),
            col("Roles", s, 0),
            col("Age", s, 0),
            col("Version", s, 0),
            col("Internal-IP", s, 1),
            col("OS-Image", s, 1),
            col("Kernel-Version", s, 1),
            col("Container-Runtime", s, 1),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let name = json!(o["metadata"]["name"]);
        let a = json!(age(&o["metadata"]["creationTimestamp"]));
        let st = &o["status"];
        let spec = &o["spec"];
        let ready = st["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready");
        let mut status = match ready.map(|c| c["status"].as_str().unwrap_or("")) {
            Some("True") => "Ready".to_owned(),
            _ => "NotReady".to_owned(),
        };
        if spec["unschedulable"] == true {
            status.push_str(",SchedulingDisabled");
        }
        let roles = join_str(
            o["metadata"]["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(str::to_owned)
                }),
        );
        let ip = st["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .unwrap_or("<none>");
        let ni = &st["nodeInfo"];
        vec![
            name,
            json!(status),
            json!(roles),
            a,
            json!(ni["kubeletVersion"].as_str().unwrap_or("")),
            json!(ip),
            json!(ni["osImage"].as_str().unwrap_or("<unknown>")),
            json!(ni["kernelVersion"].as_str().unwrap_or("<unknown>")),
            json!(ni["containerRuntimeVersion"]
                .as_str()
                .unwrap_or("<unknown>")),
        ]
    }
}
