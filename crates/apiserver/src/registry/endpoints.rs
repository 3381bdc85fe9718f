//! Endpoints: addresses and ports are validated; the columns `kubectl get endpoints`
//! prints.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::{age, col, join_str, num};
use crate::validate;

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

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        for (i, s) in obj["subsets"].as_array().into_iter().flatten().enumerate() {
            let sp = format!("subsets[{i}]");
            for list in ["addresses", "notReadyAddresses"] {
                for (j, a) in s[list].as_array().into_iter().flatten().enumerate() {
                    let ip = &a["ip"];
                    if ip.as_str().and_then(validate::ip_family).is_none() {
                        causes.push(Cause::invalid(
                            format!("{sp}.{list}[{j}].ip"),
                            ip,
                            validate::MSG_IP,
                        ));
                    }
                    if let Some(h) = a["hostname"].as_str() {
                        validate::dns_label(
                            &Value::String(h.to_owned()),
                            &format!("{sp}.{list}[{j}].hostname"),
                            causes,
                        );
                    }
                }
            }
            let ports = s["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
            for (j, p) in ports.iter().enumerate() {
                let pp = format!("{sp}.ports[{j}]");
                match p["name"].as_str().filter(|n| !n.is_empty()) {
                    None if ports.len() > 1 => causes.push(Cause::required(format!("{pp}.name"))),
                    None => {}
                    Some(_) => validate::dns_label(&p["name"], &format!("{pp}.name"), causes),
                }
                validate::port_number(&p["port"], &format!("{pp}.port"), causes);
                validate::one_of(
                    &p["protocol"],
                    &format!("{pp}.protocol"),
                    &["SCTP", "TCP", "UDP"],
                    causes,
                );
            }
        }
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
