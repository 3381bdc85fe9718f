//! Services: defaults, the status a new Service starts with, ClusterIP and NodePort
//! allocation (done by the store, see `Api::allocate_service`) and port validation.

use serde_json::{json, Value};

use super::Strategy;
use crate::defaults::{obj_mut, set_default};
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, ALL};
use crate::table::{age, col, join_str, num, selector_str};

/// The served `Service` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::core::v1::Service,
    "services",
    true,
    &["svc"],
    ALL,
    &[Sub::Status],
    false,
    &ServiceStrategy
);

/// The `Service` strategy.
pub(crate) struct ServiceStrategy;

impl Strategy for ServiceStrategy {
    fn kind(&self) -> &'static str {
        "Service"
    }

    fn name_is_label(&self) -> bool {
        true
    }

    fn defaults(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        set_default(spec, "type", json!("ClusterIP"));
        set_default(spec, "sessionAffinity", json!("None"));
        if spec["type"] != "ExternalName" {
            set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            set_default(spec, "ipFamilies", json!(["IPv4"]));
            set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        }
        if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer")) {
            set_default(spec, "externalTrafficPolicy", json!("Cluster"));
        }
        if let Some(ports) = spec["ports"].as_array_mut() {
            for p in ports {
                set_default(p, "protocol", json!("TCP"));
                if p["targetPort"].is_null() {
                    p["targetPort"] = p["port"].clone();
                }
            }
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"loadBalancer": {}});
    }

    fn allocates_service_addresses(&self) -> bool {
        true
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        let ty = spec["type"].as_str().unwrap_or("ClusterIP");
        let types = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
        if !types.contains(&ty) {
            causes.push(Cause::not_supported("spec.type", &spec["type"], &types));
        }
        let ports = spec["ports"].as_array();
        let headless = spec["clusterIP"] == "None";
        if ty != "ExternalName" && !headless && ports.is_none_or(|p| p.is_empty()) {
            causes.push(Cause::required("spec.ports"));
        }
        let multi = ports.is_some_and(|p| p.len() > 1);
        for (i, p) in ports.into_iter().flatten().enumerate() {
            let port = p["port"].as_i64().unwrap_or(0);
            if !(1..=65535).contains(&port) {
                causes.push(Cause::invalid(
                    format!("spec.ports[{i}].port"),
                    &p["port"],
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if multi && p["name"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("spec.ports[{i}].name")));
            }
            if let Some(np) = p["nodePort"].as_i64() {
                if !(30000..=32767).contains(&np) {
                    causes.push(Cause::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        &p["nodePort"],
                        "provided port is not in the valid range. The range of valid ports is 30000-32767",
                    ));
                }
            }
        }
        if ty == "ExternalName" && spec["externalName"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required("spec.externalName"));
        }
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("Type", s, 0),
            col("Cluster-IP", s, 0),
            col("External-IP", s, 0),
            col("Port(s)", s, 0),
            col("Age", s, 0),
            col("Selector", s, 1),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let name = json!(o["metadata"]["name"]);
        let a = json!(age(&o["metadata"]["creationTimestamp"]));
        let st = &o["status"];
        let spec = &o["spec"];
        let ext: Vec<String> = st["loadBalancer"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                i["ip"]
                    .as_str()
                    .or(i["hostname"].as_str())
                    .map(str::to_owned)
            })
            .chain(
                spec["externalIPs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned)),
            )
            .collect();
        let ext = if ext.is_empty() {
            if spec["type"] == "LoadBalancer" {
                "<pending>".into()
            } else if spec["type"] == "ExternalName" {
                spec["externalName"].as_str().unwrap_or("<none>").into()
            } else {
                "<none>".to_owned()
            }
        } else {
            ext.join(",")
        };
        vec![
            name,
            json!(spec["type"]),
            json!(spec["clusterIP"].as_str().unwrap_or("<none>")),
            json!(ext),
            json!(service_ports(spec)),
            a,
            json!(selector_str(&spec["selector"])),
        ]
    }
}

fn service_ports(spec: &Value) -> String {
    join_str(spec["ports"].as_array().into_iter().flatten().map(|p| {
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        match p["nodePort"].as_i64() {
            Some(np) => format!("{}:{np}/{proto}", num(&p["port"])),
            None => format!("{}/{proto}", num(&p["port"])),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_port_defaults() {
        let mut s = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        ServiceStrategy.defaults(&mut s);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
    }

    #[test]
    fn a_valid_service_has_no_causes() {
        let good = json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}});
        assert!(super::super::validate(&ServiceStrategy, &good, None).is_empty());
    }
}
