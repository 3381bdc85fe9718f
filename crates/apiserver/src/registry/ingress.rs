//! Ingresses (networking.k8s.io/v1): the columns `kubectl get ingress` prints.

use serde_json::{json, Value};

use super::Strategy;
use crate::resources::{res, ResourceInfo, Sub, NONE};
use crate::table::{age, col, join_str};

/// The served `Ingress` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::networking::v1::Ingress,
    "ingresses",
    true,
    &["ing"],
    NONE,
    &[Sub::Status],
    false,
    &IngressStrategy
);

/// The `Ingress` strategy.
pub(crate) struct IngressStrategy;

impl Strategy for IngressStrategy {
    fn kind(&self) -> &'static str {
        "Ingress"
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("Class", s, 0),
            col("Hosts", s, 0),
            col("Address", s, 0),
            col("Ports", s, 0),
            col("Age", s, 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let name = json!(o["metadata"]["name"]);
        let a = json!(age(&o["metadata"]["creationTimestamp"]));
        let st = &o["status"];
        let spec = &o["spec"];
        let hosts = join_str(
            spec["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["host"].as_str().map(str::to_owned)),
        );
        let hosts = if hosts == "<none>" {
            "*".to_owned()
        } else {
            hosts
        };
        let addr = join_str(
            st["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    i["ip"]
                        .as_str()
                        .or(i["hostname"].as_str())
                        .map(str::to_owned)
                }),
        );
        let addr = if addr == "<none>" {
            String::new()
        } else {
            addr
        };
        let ports = if spec["tls"].as_array().is_some_and(|t| !t.is_empty()) {
            "80, 443"
        } else {
            "80"
        };
        vec![
            name,
            json!(spec["ingressClassName"].as_str().unwrap_or("<none>")),
            json!(hosts),
            json!(addr),
            json!(ports),
            a,
        ]
    }
}
