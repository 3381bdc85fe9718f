//! Endpoints: the columns `kubectl get endpoints` prints.

use serde_json::{json, Value};

use super::Strategy;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::{age, col, join_str, num};

/// The served `Endpoints` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::core::v1::Endpoints,
    "endpoints",
    true,
    &["ep"],
    NONE,
    &[],
    true,
    &EndpointsStrategy
);

/// The `Endpoints` strategy.
pub(crate) struct EndpointsStrategy;

impl Strategy for EndpointsStrategy {
    fn kind(&self) -> &'static str {
        "Endpoints"
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![col("Name", s, 0), col("Endpoints", s, 0), col("Age", s, 0)]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let name = json!(o["metadata"]["name"]);
        let a = json!(age(&o["metadata"]["creationTimestamp"]));
        let eps = join_str(o["subsets"].as_array().into_iter().flatten().flat_map(|s| {
            let ports: Vec<i64> = s["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| num(&p["port"]))
                .collect();
            s["addresses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .flat_map(move |ad| {
                    let ip = ad["ip"].as_str().unwrap_or_default().to_owned();
                    let ports = ports.clone();
                    if ports.is_empty() {
                        vec![ip]
                    } else {
                        ports.into_iter().map(|p| format!("{ip}:{p}")).collect()
                    }
                })
        }));
        vec![name, json!(eps), a]
    }
}
