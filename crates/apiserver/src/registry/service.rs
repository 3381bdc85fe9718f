//! Services: defaults, the status a new Service starts with, ClusterIP and NodePort
//! allocation (done by the store, see `Api::allocate_service`), the fields a type change
//! drops, and upstream's validation: ports, ClusterIPs and families (fixed once set),
//! session affinity, traffic policies.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::Strategy;
use crate::defaults::{obj_mut, set_default};
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, ALL};
use crate::table::{age, col, join_str, num, selector_str};
use crate::validate;

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

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        drop_type_dependent_fields(new, old);
        // Upstream's normalizeClusterIPs: a changed `clusterIP` with `clusterIPs` left as
        // they were means the primary address changed.
        let spec = &mut new["spec"];
        if spec["clusterIP"] != old["spec"]["clusterIP"]
            && spec["clusterIPs"] == old["spec"]["clusterIPs"]
            && spec["clusterIP"].as_str().is_some_and(|ip| !ip.is_empty())
        {
            spec["clusterIPs"] = json!([spec["clusterIP"].clone()]);
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        let ty = spec["type"].as_str().unwrap_or("ClusterIP");
        let types = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
        if !types.contains(&ty) {
            causes.push(Cause::not_supported("spec.type", &spec["type"], &types));
        }
        let ports = spec["ports"].as_array();
        let headless = spec["clusterIP"] == "None";
        if ty != "ExternalName" && !headless && ports.is_none_or(|p| p.is_empty()) {
            causes.push(Cause::required("spec.ports"));
        }
        validate_ports(spec, ty, causes);
        for (k, v) in spec["selector"].as_object().into_iter().flatten() {
            validate::label_name(&json!(k), "spec.selector", causes);
            if !v
                .as_str()
                .is_some_and(|v| v.is_empty() || validate::is_qualified_name(v) && !v.contains('/'))
            {
                causes.push(Cause::invalid(
                    "spec.selector",
                    v,
                    validate::MSG_LABEL_VALUE,
                ));
            }
        }
        for (i, ip) in spec["externalIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if ip.as_str().and_then(validate::ip_family).is_none() {
                causes.push(Cause::invalid(
                    format!("spec.externalIPs[{i}]"),
                    ip,
                    validate::MSG_IP,
                ));
            }
        }
        if ty == "ExternalName" {
            if spec["externalName"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required("spec.externalName"));
            } else {
                validate::dns_subdomain(&spec["externalName"], "spec.externalName", causes);
            }
            if spec["clusterIPs"]
                .as_array()
                .is_some_and(|ips| !ips.is_empty())
                || spec["clusterIP"].as_str().is_some_and(|ip| !ip.is_empty())
            {
                causes.push(Cause::forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                ));
            }
            for f in ["ipFamilies", "ipFamilyPolicy"] {
                let v = &spec[f];
                if !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()) {
                    causes.push(Cause::forbidden(
                        format!("spec.{f}"),
                        "may not be set for ExternalName services",
                    ));
                }
            }
        } else {
            validate_cluster_ips(spec, causes);
            if headless && matches!(ty, "NodePort" | "LoadBalancer") {
                causes.push(Cause::invalid(
                    "spec.clusterIPs[0]",
                    &spec["clusterIP"],
                    &format!("may not be set to 'None' for {ty} services"),
                ));
            }
        }
        validate::one_of(
            &spec["sessionAffinity"],
            "spec.sessionAffinity",
            &["ClientIP", "None"],
            causes,
        );
        let sac = &spec["sessionAffinityConfig"];
        if spec["sessionAffinity"] == "ClientIP" {
            if let Some(t) = sac["clientIP"]["timeoutSeconds"].as_i64() {
                if !(1..=86400).contains(&t) {
                    causes.push(Cause::invalid(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        &sac["clientIP"]["timeoutSeconds"],
                        "must be greater than 0 and less than 86400",
                    ));
                }
            }
        } else if !sac.is_null() && sac.as_object().is_some_and(|o| !o.is_empty()) {
            causes.push(Cause::invalid(
                "spec.sessionAffinityConfig",
                sac,
                &format!(
                    "must not be set when session affinity is {}",
                    spec["sessionAffinity"].as_str().unwrap_or("None")
                ),
            ));
        }
        for (f, allowed) in [
            ("externalTrafficPolicy", &["Cluster", "Local"][..]),
            ("internalTrafficPolicy", &["Cluster", "Local"][..]),
        ] {
            validate::one_of(&spec[f], &format!("spec.{f}"), allowed, causes);
        }
        validate_source_ranges(obj, ty, causes);
        let hc = &spec["healthCheckNodePort"];
        if hc.as_i64().is_some_and(|n| n < 0) {
            causes.push(Cause::invalid(
                "spec.healthCheckNodePort",
                hc,
                "must be not less than 0",
            ));
        } else if hc.as_i64().is_some_and(|n| n != 0) && !needs_health_check(spec) {
            causes.push(Cause::invalid(
                "spec.healthCheckNodePort",
                hc,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
        if matches!(ty, "ClusterIP" | "ExternalName") && !spec["externalTrafficPolicy"].is_null() {
            causes.push(Cause::invalid(
                "spec.externalTrafficPolicy",
                &spec["externalTrafficPolicy"],
                "may only be set for externally-accessible services",
            ));
        }
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        let (ns, os) = (&new["spec"], &old["spec"]);
        if ns["type"] == "ExternalName" || os["type"] == "ExternalName" {
            return;
        }
        let ips: Vec<Value> = ns["clusterIPs"].as_array().cloned().unwrap_or_default();
        let old_ips = os["clusterIPs"].as_array().cloned().unwrap_or_default();
        for (i, (n, o)) in ips.iter().zip(&old_ips).enumerate() {
            if n != o {
                causes.push(Cause::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    &json!(ips),
                    "may not change once set",
                ));
                break;
            }
        }
        if ips.is_empty() && !old_ips.is_empty() && ns["clusterIP"] != os["clusterIP"] {
            causes.push(Cause::invalid(
                "spec.clusterIPs[0]",
                &json!(ips),
                "may not change once set",
            ));
        }
        let fam = ns["ipFamilies"].as_array().cloned().unwrap_or_default();
        let old_fam = os["ipFamilies"].as_array().cloned().unwrap_or_default();
        if let (Some(n), Some(o)) = (fam.first(), old_fam.first()) {
            if n != o {
                causes.push(Cause::invalid(
                    "spec.ipFamilies[0]",
                    n,
                    "may not change once set",
                ));
            }
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

/// Upstream's `dropTypeDependentFields`: a type change drops what the old type
/// allocated and the new one cannot have, when the update left it as it was (NodePorts
/// leaving NodePort/LoadBalancer; the ClusterIP and families becoming ExternalName).
fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    // the health-check port goes when it is no longer needed and was left as it was
    if needs_health_check(&old["spec"])
        && !needs_health_check(&new["spec"])
        && new["spec"]["healthCheckNodePort"] == old["spec"]["healthCheckNodePort"]
    {
        if let Some(o) = new["spec"].as_object_mut() {
            o.remove("healthCheckNodePort");
        }
    }
    let (ty, old_ty) = (
        new["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_owned(),
        old["spec"]["type"].as_str().unwrap_or("ClusterIP"),
    );
    if ty == old_ty {
        return;
    }
    let spec = &mut new["spec"];
    if !matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
        let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
        for p in spec["ports"].as_array_mut().into_iter().flatten() {
            let kept = old_ports
                .iter()
                .any(|op| op["nodePort"].is_number() && op["nodePort"] == p["nodePort"]);
            if kept {
                p.as_object_mut().map(|o| o.remove("nodePort"));
            }
        }
        if spec["externalTrafficPolicy"] == old["spec"]["externalTrafficPolicy"] {
            spec.as_object_mut()
                .map(|o| o.remove("externalTrafficPolicy"));
        }
    }
    if ty == "ExternalName" {
        for f in [
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "internalTrafficPolicy",
        ] {
            if spec[f] == old["spec"][f] {
                spec.as_object_mut().map(|o| o.remove(f));
            }
        }
    }
}

/// Upstream's `needsHealthCheck`: a LoadBalancer with `externalTrafficPolicy: Local`
/// gets a `healthCheckNodePort`.
fn needs_health_check(spec: &Value) -> bool {
    spec["type"] == "LoadBalancer" && spec["externalTrafficPolicy"] == "Local"
}

/// The source-range annotation upstream reads when `spec.loadBalancerSourceRanges` is
/// empty.
const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

/// `loadBalancerSourceRanges` (or its annotation) only on a LoadBalancer, and a list of
/// CIDRs (entries trimmed), as upstream's `ValidateService`: the causes name the field
/// as upstream does (`spec.LoadBalancerSourceRanges`).
fn validate_source_ranges(obj: &Value, ty: &str, causes: &mut Vec<Cause>) {
    let ranges: Vec<&str> = obj["spec"]["loadBalancerSourceRanges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap_or_default())
        .collect();
    let annotation = obj["metadata"]["annotations"][SOURCE_RANGES_ANNOTATION].as_str();
    let (field, value, list) = if !ranges.is_empty() {
        (
            "spec.LoadBalancerSourceRanges".to_owned(),
            format!("[{}]", ranges.join(" ")),
            ranges,
        )
    } else if let Some(a) = annotation {
        (
            format!("metadata.annotations[{SOURCE_RANGES_ANNOTATION}]"),
            a.to_owned(),
            // an empty annotation means everywhere
            a.split(',').filter(|r| !r.trim().is_empty()).collect(),
        )
    } else {
        return;
    };
    if ty != "LoadBalancer" {
        causes.push(Cause::forbidden(
            field.clone(),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if list.iter().any(|r| !is_cidr(r.trim())) {
        causes.push(Cause::invalid(
            field,
            &json!(value),
            "must be a list of IP ranges. For example, 10.240.0.0/24,10.250.0.0/24 ",
        ));
    }
}

/// Whether `s` is an address and prefix length (`10.0.0.0/8`, `2001:db8::/32`); host
/// bits may be set, as upstream's sloppy CIDR parser allows.
fn is_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    let max = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => return false,
    };
    len.parse::<u8>().is_ok_and(|l| l <= max) && !len.starts_with('+')
}

/// Ports: number, name (a DNS label, required and unique when there are several),
/// protocol, targetPort, nodePort (only for NodePort and LoadBalancer, unique), and no
/// port/protocol pair twice.
fn validate_ports(spec: &Value, ty: &str, causes: &mut Vec<Cause>) {
    let ports = spec["ports"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let multi = ports.len() > 1;
    let mut names = HashSet::new();
    let mut pairs = HashSet::new();
    let mut node_ports = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        validate::port_number(&p["port"], &format!("{pp}.port"), causes);
        match p["name"].as_str().filter(|n| !n.is_empty()) {
            None if multi => causes.push(Cause::required(format!("{pp}.name"))),
            None => {}
            Some(n) => {
                validate::dns_label(&p["name"], &format!("{pp}.name"), causes);
                if !names.insert(n.to_owned()) {
                    causes.push(Cause::duplicate(format!("{pp}.name"), &p["name"]));
                }
            }
        }
        validate::one_of(
            &p["protocol"],
            &format!("{pp}.protocol"),
            &["SCTP", "TCP", "UDP"],
            causes,
        );
        if !p["targetPort"].is_null() && ty != "ExternalName" {
            validate::port_num_or_name(&p["targetPort"], &format!("{pp}.targetPort"), causes);
        }
        let pair = json!({"port": p["port"], "protocol": p["protocol"]});
        if !pairs.insert(pair.to_string()) {
            causes.push(Cause::duplicate(pp.clone(), &pair));
        }
        if let Some(np) = p["nodePort"].as_i64() {
            if !matches!(ty, "NodePort" | "LoadBalancer") {
                causes.push(Cause::forbidden(
                    format!("{pp}.nodePort"),
                    &format!("may not be used when `type` is '{ty}'"),
                ));
            } else if !node_ports.insert((np, p["protocol"].to_string())) {
                causes.push(Cause::duplicate(format!("{pp}.nodePort"), &p["nodePort"]));
            }
        }
    }
}

/// `clusterIP` and `clusterIPs`: `None` or addresses, the first equal to `clusterIP`, each
/// of the family `ipFamilies` names at its index; families and policy from their sets.
fn validate_cluster_ips(spec: &Value, causes: &mut Vec<Cause>) {
    let fams = spec["ipFamilies"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, f) in fams.iter().enumerate() {
        validate::one_of(
            f,
            &format!("spec.ipFamilies[{i}]"),
            &["IPv4", "IPv6"],
            causes,
        );
    }
    if fams.len() == 2 && fams[0] == fams[1] {
        causes.push(Cause::duplicate("spec.ipFamilies[1]", &fams[1]));
    }
    validate::one_of(
        &spec["ipFamilyPolicy"],
        "spec.ipFamilyPolicy",
        &["SingleStack", "PreferDualStack", "RequireDualStack"],
        causes,
    );
    let ips = spec["clusterIPs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if let (Some(ip), Some(first)) = (spec["clusterIP"].as_str(), ips.first()) {
        if !ip.is_empty() && first != ip {
            causes.push(Cause::invalid(
                "spec.clusterIPs",
                &spec["clusterIPs"],
                "first value must match `clusterIP`",
            ));
        }
    }
    if spec["ipFamilyPolicy"] == "SingleStack" && ips.len() > 1 {
        causes.push(Cause::invalid(
            "spec.clusterIPs",
            &spec["clusterIPs"],
            "must have at most one value when `ipFamilyPolicy` is 'SingleStack'",
        ));
    }
    for (i, ipv) in ips.iter().enumerate() {
        let Some(ip) = ipv.as_str() else { continue };
        if ip == "None" {
            if ips.len() > 1 {
                causes.push(Cause::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    ipv,
                    "must be a valid IP address, or 'None' for a headless service",
                ));
            }
            continue;
        }
        match validate::ip_family(ip) {
            None => causes.push(Cause::invalid(
                format!("spec.clusterIPs[{i}]"),
                ipv,
                validate::MSG_IP,
            )),
            Some(fam) => {
                if let Some(want) = fams.get(i).and_then(Value::as_str) {
                    if want != fam {
                        causes.push(Cause::invalid(
                            format!("spec.clusterIPs[{i}]"),
                            ipv,
                            &format!("expected an {want} value as indicated by `ipFamilies[{i}]`"),
                        ));
                    }
                }
            }
        }
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
