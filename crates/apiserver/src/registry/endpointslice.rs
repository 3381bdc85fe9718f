//! EndpointSlices (discovery.k8s.io/v1): addresses of the slice's `addressType` (which
//! never changes) and ports are validated; the columns `kubectl get endpointslices` prints.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::{age, col, join_str, num};
use crate::validate;

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

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let at = &obj["addressType"];
        let ty = at.as_str().unwrap_or_default();
        if at.is_null() {
            causes.push(Cause::required("addressType"));
        } else {
            validate::one_of(at, "addressType", &["IPv4", "IPv6", "FQDN"], causes);
        }
        for (i, e) in obj["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let p = format!("endpoints[{i}].addresses");
            let addrs = e["addresses"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            if addrs.is_empty() || addrs.len() > 100 {
                causes.push(Cause::invalid(
                    &p,
                    &e["addresses"],
                    "must contain at least 1 and at most 100 addresses",
                ));
            }
            for (j, a) in addrs.iter().enumerate() {
                let ap = format!("{p}[{j}]");
                match (ty, a.as_str().and_then(validate::ip_family)) {
                    ("IPv4", Some("IPv4")) | ("IPv6", Some("IPv6")) => {}
                    ("IPv4", _) => {
                        causes.push(Cause::invalid(ap, a, "must be a valid IPv4 address"))
                    }
                    ("IPv6", _) => {
                        causes.push(Cause::invalid(ap, a, "must be a valid IPv6 address"))
                    }
                    ("FQDN", _) => validate::dns_subdomain(a, &ap, causes),
                    _ => {}
                }
            }
            if let Some(h) = e["hostname"].as_str() {
                validate::dns_label(
                    &Value::String(h.to_owned()),
                    &format!("endpoints[{i}].hostname"),
                    causes,
                );
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, port) in obj["ports"].as_array().into_iter().flatten().enumerate() {
            let p = format!("ports[{i}]");
            if let Some(n) = port["name"].as_str().filter(|n| !n.is_empty()) {
                validate::dns_label(&port["name"], &format!("{p}.name"), causes);
                if !names.insert(n.to_owned()) {
                    causes.push(Cause::duplicate(format!("{p}.name"), &port["name"]));
                }
            }
            if !port["port"].is_null() {
                validate::port_number(&port["port"], &format!("{p}.port"), causes);
            }
            validate::one_of(
                &port["protocol"],
                &format!("{p}.protocol"),
                &["SCTP", "TCP", "UDP"],
                causes,
            );
        }
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        validate::immutable(
            &new["addressType"],
            &old["addressType"],
            "addressType",
            causes,
        );
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
