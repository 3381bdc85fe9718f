//! IngressClasses (networking.k8s.io/v1, cluster-scoped), as upstream's
//! `pkg/registry/networking/ingressclass`: `spec.controller` is a domain-prefixed path of
//! at most 250 bytes and immutable; `spec.parameters` names a kind and an object, with
//! `scope` defaulted to `Cluster` and `namespace` required exactly for `Namespace` scope.
//! The columns `kubectl get ingressclass` prints: NAME, CONTROLLER, PARAMETERS, AGE.
//!
//! [`default_class`] picks the class a new Ingress without `spec.ingressClassName` gets
//! (upstream's DefaultIngressClass admission): among the classes annotated
//! `ingressclass.kubernetes.io/is-default-class: "true"`, the newest.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::{age, col};
use crate::validate;

/// The served `IngressClass` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::networking::v1::IngressClass,
    "ingressclasses",
    false,
    &[],
    NONE,
    &[],
    false,
    &IngressClassStrategy
);

/// The annotation that marks the default class.
pub(crate) const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Upstream's `maxLenIngressClassController`.
const MAX_CONTROLLER_LEN: usize = 250;

/// The `IngressClass` strategy.
pub(crate) struct IngressClassStrategy;

impl Strategy for IngressClassStrategy {
    fn kind(&self) -> &'static str {
        "IngressClass"
    }

    fn settle_in_cache(&self) -> bool {
        true
    }

    fn defaults(&self, obj: &mut Value) {
        let params = &mut obj["spec"]["parameters"];
        if params.is_object() && params["scope"].is_null() {
            params["scope"] = json!("Cluster");
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        let controller = &spec["controller"];
        let c = controller.as_str().unwrap_or_default();
        if c.len() > MAX_CONTROLLER_LEN {
            causes.push(Cause::too_long("spec.controller", MAX_CONTROLLER_LEN));
        }
        domain_prefixed_path(c, "spec.controller", causes);
        let p = &spec["parameters"];
        if p.is_object() {
            parameters(p, "spec.parameters", causes);
        }
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        validate::immutable(
            &new["spec"]["controller"],
            &old["spec"]["controller"],
            "spec.controller",
            causes,
        );
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("Controller", s, 0),
            col("Parameters", s, 0),
            col("Age", s, 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let p = &o["spec"]["parameters"];
        let params = if p.is_object() {
            let mut s = p["kind"].as_str().unwrap_or_default().to_owned();
            if let Some(g) = p["apiGroup"].as_str() {
                s = format!("{s}.{g}");
            }
            format!("{s}/{}", p["name"].as_str().unwrap_or_default())
        } else {
            "<none>".to_owned()
        };
        vec![
            json!(o["metadata"]["name"]),
            json!(o["spec"]["controller"]),
            json!(params),
            json!(age(&o["metadata"]["creationTimestamp"])),
        ]
    }
}

/// Upstream's `IsDomainPrefixedPath`.
fn domain_prefixed_path(s: &str, p: &str, causes: &mut Vec<Cause>) {
    if s.is_empty() {
        causes.push(Cause::required(p));
        return;
    }
    let Some((host, path)) = s
        .split_once('/')
        .filter(|(h, r)| !h.is_empty() && !r.is_empty())
    else {
        causes.push(Cause::invalid(
            p,
            &json!(s),
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        ));
        return;
    };
    validate::dns_subdomain(&json!(host), p, causes);
    let ok = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/-._~%!$&'()*+,;=:".contains(c));
    if !ok {
        causes.push(Cause::invalid(
            p,
            &json!(path),
            "Invalid path must match the regex [A-Za-z0-9/\\-._~%!$&'()*+,;=:]+ (e.g. '/path')",
        ));
    }
}

/// Upstream's `validateIngressClassParametersReference`.
fn parameters(params: &Value, p: &str, causes: &mut Vec<Cause>) {
    if let Some(g) = params["apiGroup"].as_str() {
        validate::dns_subdomain(&json!(g), &format!("{p}.apiGroup"), causes);
    }
    for f in ["kind", "name"] {
        if params[f].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(format!("{p}.{f}")));
        }
    }
    let ns = &params["namespace"];
    match params["scope"].as_str() {
        Some("Namespace") => {
            if ns.as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required_because(
                    format!("{p}.namespace"),
                    "`parameters.scope` is set to 'Namespace'",
                ));
            } else {
                validate::dns_label(ns, &format!("{p}.namespace"), causes);
            }
        }
        Some("Cluster") => {
            if !ns.is_null() {
                causes.push(Cause::forbidden(
                    format!("{p}.namespace"),
                    "`parameters.scope` is set to 'Cluster'",
                ));
            }
        }
        None => causes.push(Cause::required(format!("{p}.scope"))),
        Some(_) => validate::one_of(
            &params["scope"],
            &format!("{p}.scope"),
            &["Cluster", "Namespace"],
            causes,
        ),
    }
}

/// The name of the class a new Ingress without a class gets: the newest of the
/// IngressClasses annotated as the default (by `creationTimestamp`, then name), or
/// `None` when no class is marked.
pub(crate) fn default_class(classes: &[Value]) -> Option<&str> {
    super::newest_default(classes, |c| {
        c["metadata"]["annotations"][DEFAULT_CLASS_ANNOTATION] == "true"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(spec: Value) -> Vec<(String, String)> {
        let mut o = json!({"metadata": {"name": "c"}, "spec": spec});
        IngressClassStrategy.defaults(&mut o);
        let mut c = Vec::new();
        IngressClassStrategy.validate(&o, &mut c);
        c.into_iter().map(|c| (c.field, c.message)).collect()
    }

    #[test]
    fn validation_table() {
        assert!(causes(json!({"controller": "kcore.dev/ingress"})).is_empty());
        assert!(causes(json!({"controller": "k8s.io/ingress-nginx",
            "parameters": {"kind": "Config", "apiGroup": "example.com", "name": "p"}}))
        .is_empty());
        let long = format!("a.io/{}", "x".repeat(250));
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!({}), "spec.controller", "Required value"),
            (
                json!({"controller": "nginx"}),
                "spec.controller",
                "must be a domain-prefixed path",
            ),
            (
                json!({"controller": "Bad_Host/x"}),
                "spec.controller",
                "RFC 1123 subdomain",
            ),
            (
                json!({"controller": "a.io/x y"}),
                "spec.controller",
                "Invalid path",
            ),
            (json!({"controller": long}), "spec.controller", "Too long"),
            (
                json!({"controller": "a.io/x", "parameters": {"kind": "K"}}),
                "spec.parameters.name",
                "Required value",
            ),
            (
                json!({"controller": "a.io/x", "parameters": {"kind": "K", "name": "n", "scope": "Namespace"}}),
                "spec.parameters.namespace",
                "`parameters.scope` is set to 'Namespace'",
            ),
            (
                json!({"controller": "a.io/x", "parameters": {"kind": "K", "name": "n", "namespace": "x"}}),
                "spec.parameters.namespace",
                "`parameters.scope` is set to 'Cluster'",
            ),
            (
                json!({"controller": "a.io/x", "parameters": {"kind": "K", "name": "n", "scope": "Galaxy"}}),
                "spec.parameters.scope",
                "Unsupported value",
            ),
        ];
        for (spec, field, msg) in cases {
            let c = causes(spec.clone());
            assert!(
                c.iter().any(|(f, m)| f == field && m.contains(msg)),
                "{spec}: want {field}: {msg}, got {c:?}"
            );
        }
        let mut c = Vec::new();
        IngressClassStrategy.validate_update(
            &json!({"spec": {"controller": "a.io/y"}}),
            &json!({"spec": {"controller": "a.io/x"}}),
            &mut c,
        );
        assert_eq!(c[0].field, "spec.controller");
    }

    #[test]
    fn columns_and_the_default_class() {
        let o = json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx",
            "parameters": {"kind": "IngressParameters", "apiGroup": "k8s.example.com", "name": "external-lb"}}});
        let cells = IngressClassStrategy.table_cells(&o);
        assert_eq!(cells[2], "IngressParameters.k8s.example.com/external-lb");
        let o = json!({"metadata": {"name": "x"}, "spec": {"controller": "a.io/x"}});
        assert_eq!(IngressClassStrategy.table_cells(&o)[2], "<none>");

        let class = |name: &str, ts: &str, default: bool| {
            let mut c = json!({"metadata": {"name": name, "creationTimestamp": ts}});
            if default {
                c["metadata"]["annotations"] = json!({DEFAULT_CLASS_ANNOTATION: "true"});
            }
            c
        };
        assert_eq!(
            default_class(&[class("a", "2024-01-01T00:00:00Z", false)]),
            None
        );
        assert_eq!(
            default_class(&[
                class("old", "2024-01-01T00:00:00Z", true),
                class("new", "2024-06-01T00:00:00Z", true),
                class("newest-not-default", "2025-01-01T00:00:00Z", false),
            ]),
            Some("new")
        );
    }
}
