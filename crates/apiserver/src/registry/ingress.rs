//! Ingresses (networking.k8s.io/v1): hosts, paths (`pathType` required, `Exact` and
//! `Prefix` paths absolute) and backends (a service or a resource; a port by name or
//! number) are validated; the columns `kubectl get ingress` prints.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, NONE};
use crate::table::{age, col, join_str};
use crate::validate;

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

    fn create_reads(&self) -> Option<(&'static str, &'static str)> {
        Some(("networking.k8s.io/v1", "ingressclasses"))
    }

    /// Upstream's DefaultIngressClass admission: an Ingress that names no class (neither
    /// `spec.ingressClassName` nor the deprecated annotation) gets the default class.
    fn admit_create(&self, obj: &mut Value, classes: &[Value]) {
        if !obj["spec"]["ingressClassName"].is_null()
            || !obj["metadata"]["annotations"]["kubernetes.io/ingress.class"].is_null()
        {
            return;
        }
        if let Some(name) = super::ingressclass::default_class(classes) {
            obj["spec"]["ingressClassName"] = json!(name);
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        let rules = spec["rules"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if spec["defaultBackend"].is_null() && rules.is_empty() {
            causes.push(Cause::invalid(
                "spec",
                &json!("rules"),
                "either `defaultBackend` or `rules` must be specified",
            ));
        }
        if !spec["defaultBackend"].is_null() {
            backend(&spec["defaultBackend"], "spec.defaultBackend", causes);
        }
        if let Some(c) = spec["ingressClassName"].as_str() {
            validate::dns_subdomain(&json!(c), "spec.ingressClassName", causes);
        }
        for (i, t) in spec["tls"].as_array().into_iter().flatten().enumerate() {
            for (j, h) in t["hosts"].as_array().into_iter().flatten().enumerate() {
                host(h, &format!("spec.tls[{i}].hosts[{j}]"), causes);
            }
        }
        for (i, r) in rules.iter().enumerate() {
            let rp = format!("spec.rules[{i}]");
            if !r["host"].is_null() {
                host(&r["host"], &format!("{rp}.host"), causes);
            }
            if r["http"].is_null() {
                continue;
            }
            let paths = r["http"]["paths"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            if paths.is_empty() {
                causes.push(Cause::required(format!("{rp}.http.paths")));
            }
            for (j, p) in paths.iter().enumerate() {
                let pp = format!("{rp}.http.paths[{j}]");
                path(p, &pp, causes);
                backend(&p["backend"], &format!("{pp}.backend"), causes);
            }
        }
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
/// A rule or TLS host: a DNS subdomain, optionally with a `*.` wildcard, not an IP.
fn host(h: &Value, p: &str, causes: &mut Vec<Cause>) {
    let Some(s) = h.as_str() else { return };
    if validate::ip_family(s).is_some() {
        causes.push(Cause::invalid(
            p,
            h,
            "must be a DNS name, not an IP address",
        ));
        return;
    }
    match s.strip_prefix("*.") {
        Some(rest) => {
            if !validate::is_dns1123_subdomain(rest) {
                causes.push(Cause::invalid(
                    p,
                    h,
                    "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                ));
            }
        }
        None => validate::dns_subdomain(h, p, causes),
    }
}

/// An HTTP path: `pathType` required and known; `Exact` and `Prefix` paths absolute and
/// without `//`, `/./`, `/../` or a trailing `/..` or `/.`.
fn path(p: &Value, pp: &str, causes: &mut Vec<Cause>) {
    let ty = &p["pathType"];
    if ty.as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required_because(
            format!("{pp}.pathType"),
            "pathType must be specified",
        ));
        return;
    }
    validate::one_of(
        ty,
        &format!("{pp}.pathType"),
        &["Exact", "ImplementationSpecific", "Prefix"],
        causes,
    );
    let path = p["path"].as_str().unwrap_or_default();
    if matches!(ty.as_str(), Some("Exact" | "Prefix")) {
        if !path.starts_with('/') {
            causes.push(Cause::invalid(
                format!("{pp}.path"),
                &p["path"],
                "must be an absolute path",
            ));
            return;
        }
        for bad in ["//", "/./", "/../", "%2f", "%2F"] {
            if path.contains(bad) {
                causes.push(Cause::invalid(
                    format!("{pp}.path"),
                    &p["path"],
                    &format!("must not contain '{bad}'"),
                ));
            }
        }
        for bad in ["/..", "/."] {
            if path.ends_with(bad) {
                causes.push(Cause::invalid(
                    format!("{pp}.path"),
                    &p["path"],
                    &format!("cannot end with '{bad}'"),
                ));
            }
        }
    } else if !path.is_empty() && !path.starts_with('/') {
        causes.push(Cause::invalid(
            format!("{pp}.path"),
            &p["path"],
            "must be an absolute path",
        ));
    }
}

/// A backend: a service (name, and a port by name or number, not both) or a resource,
/// exactly one.
fn backend(b: &Value, bp: &str, causes: &mut Vec<Cause>) {
    let (svc, res) = (&b["service"], &b["resource"]);
    match (svc.is_null(), res.is_null()) {
        (false, false) => causes.push(Cause::invalid(
            bp,
            &json!(""),
            "cannot set both resource and service backends",
        )),
        (true, true) => causes.push(Cause::invalid(
            bp,
            &json!(""),
            "resource or service backend is required",
        )),
        (true, false) => {
            if res["kind"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("{bp}.resource.kind")));
            }
            if res["name"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("{bp}.resource.name")));
            }
        }
        (false, true) => {
            if svc["name"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("{bp}.service.name")));
            } else {
                validate::dns_label(&svc["name"], &format!("{bp}.service.name"), causes);
            }
            let port = &svc["port"];
            let name = port["name"].as_str().filter(|n| !n.is_empty());
            let number = port["number"].as_i64().filter(|n| *n != 0);
            match (name, number) {
                (Some(_), Some(_)) => causes.push(Cause::invalid(
                    bp,
                    &json!(""),
                    "cannot set both port name & port number",
                )),
                (Some(n), None) => {
                    for why in validate::port_name_errors(n) {
                        causes.push(Cause::invalid(
                            format!("{bp}.service.port.name"),
                            &port["name"],
                            why,
                        ));
                    }
                }
                (None, Some(_)) => validate::port_number(
                    &port["number"],
                    &format!("{bp}.service.port.number"),
                    causes,
                ),
                (None, None) => causes.push(Cause::required_because(
                    bp,
                    "port name or number is required",
                )),
            }
        }
    }
}
