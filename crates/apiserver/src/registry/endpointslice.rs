//! EndpointSlices (discovery.k8s.io/v1): the columns `kubectl get endpointslices` prints.

use serde_json::{json, Value};

use super::Strategy;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::{age, col, join_str, num};

/// The served `EndpointSlice` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::discovery::v1::EndpointSlice,
    "endpointslices",
    true,
    &[],
    NONE,
    &[],
    false,
    &EndpointSliceStrategy
);

/// The `EndpointSlice` strategy.
pub(crate) struct EndpointSliceStrategy;

impl Strategy for EndpointSliceStrategy {
    fn kind(&self) -> &'static str {
        "EndpointSlice"
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("AddressType", s, 0),
            col("Ports", s, 0),
            col("Endpoints", s, 0),
            col("Age", s, 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let name = json!(o["metadata"]["name"]);
        let a = json!(age(&o["metadata"]["creationTimestamp"]));
        let ports = join_str(
            o["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| num(&p["port"]).to_string()),
        );
        let eps = join_str(
            o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| {
                    e["addresses"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|a| a.as_str().map(str::to_owned))
                }),
        );
        vec![name, json!(o["addressType"]), json!(ports), json!(eps), a]
    }
}
