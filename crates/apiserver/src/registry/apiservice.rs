//! APIServices (`apiregistration.k8s.io/v1`, cluster-scoped), as kube-aggregator's
//! `pkg/registry/apiservice`: an APIService named `<version>.<group>` hands the API
//! group version to the Service in `spec.service` (namespace, name, port, 443 by
//! default), whose server answers what the API server proxies to it
//! (`crate::aggregator`); one without a service is served locally.
//!
//! Validation as upstream's `ValidateAPIService`: the name is `<version>.<group>`, the
//! version a DNS label, `groupPriorityMinimum` in 1..20000 and `versionPriority` in
//! 1..1000, `caBundle` and `insecureSkipTLSVerify` exclusive. A local APIService is
//! `Available` (reason `Local`) from its creation. Columns: NAME, SERVICE, AVAILABLE, AGE.

use std::borrow::Cow;

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{Names, ResourceInfo, StrategyRef, Sub};
use crate::table::{age, col};
use crate::validate;

/// The group of APIServices.
pub(crate) const GROUP: &str = "apiregistration.k8s.io";

/// The served `APIService` resource.
pub(crate) const RESOURCE: ResourceInfo = ResourceInfo {
    group: Cow::Borrowed(GROUP),
    version: Cow::Borrowed("v1"),
    kind: Cow::Borrowed("APIService"),
    list_kind: Cow::Borrowed("APIServiceList"),
    plural: Cow::Borrowed("apiservices"),
    singular: None,
    namespaced: false,
    short_names: Names::Static(&[]),
    categories: Names::Static(&["api-extensions"]),
    subresources: Cow::Borrowed(&[Sub::Status]),
    create_on_update: false,
    normalize: as_is,
    strategy: StrategyRef::Static(&ApiServiceStrategy),
};

/// No upstream type in k8s-openapi: the object is kept as sent, validated here.
fn as_is(v: Value) -> Result<Value, serde_json::Error> {
    Ok(v)
}

/// The `APIService` strategy.
pub(crate) struct ApiServiceStrategy;

impl Strategy for ApiServiceStrategy {
    fn kind(&self) -> &'static str {
        "APIService"
    }

    fn settle_in_cache(&self) -> bool {
        // the proxy finds APIServices in the watch cache
        true
    }

    fn defaults(&self, obj: &mut Value) {
        let svc = &mut obj["spec"]["service"];
        if svc.is_object() && svc["port"].is_null() {
            svc["port"] = json!(443);
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = if obj["spec"]["service"].is_object() {
            json!({})
        } else {
            json!({"conditions": [{"type": "Available", "status": "True", "reason": "Local",
                "message": "Local APIServices are always available",
                "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string()}]})
        };
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        let version = spec["version"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        if name != format!("{version}.{group}") {
            causes.push(Cause::invalid(
                "metadata.name",
                &obj["metadata"]["name"],
                &format!("must be `spec.version+\".\"+spec.group`: {version:?}"),
            ));
        }
        if version.is_empty() {
            causes.push(Cause::required("spec.version"));
        } else {
            validate::dns_label(&spec["version"], "spec.version", causes);
        }
        if !group.is_empty() {
            validate::dns_subdomain(&spec["group"], "spec.group", causes);
        }
        for (field, max) in [("groupPriorityMinimum", 20000), ("versionPriority", 1000)] {
            let v = &spec[field];
            match v.as_i64() {
                Some(n) if n > 0 && n <= max => {}
                Some(n) if n > max => causes.push(Cause::invalid(
                    format!("spec.{field}"),
                    v,
                    &format!("must be less than or equal to {max}"),
                )),
                _ => causes.push(Cause::invalid(
                    format!("spec.{field}"),
                    v,
                    "must be positive and less than 1000",
                )),
            }
        }
        let insecure = spec["insecureSkipTLSVerify"].as_bool() == Some(true);
        let ca = spec["caBundle"].as_str().is_some_and(|s| !s.is_empty());
        if insecure && ca {
            causes.push(Cause::invalid(
                "spec.insecureSkipTLSVerify",
                &spec["insecureSkipTLSVerify"],
                "may not be true if caBundle is present",
            ));
        }
        let svc = &spec["service"];
        if svc.is_object() {
            for field in ["namespace", "name"] {
                if svc[field].as_str().is_none_or(str::is_empty) {
                    causes.push(Cause::required(format!("spec.service.{field}")));
                }
            }
            if let Some(p) = svc["port"].as_i64() {
                if !(1..=65535).contains(&p) {
                    causes.push(Cause::invalid(
                        "spec.service.port",
                        &svc["port"],
                        "must be a valid port number",
                    ));
                }
            }
        } else if insecure || ca {
            causes.push(Cause::required_because(
                "spec.service",
                "a local APIService takes no caBundle or insecureSkipTLSVerify",
            ));
        }
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("Service", s, 0),
            col("Available", s, 0),
            col("Age", s, 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let svc = &o["spec"]["service"];
        let service = if svc.is_object() {
            format!(
                "{}/{}",
                svc["namespace"].as_str().unwrap_or_default(),
                svc["name"].as_str().unwrap_or_default()
            )
        } else {
            "Local".to_owned()
        };
        let available = o["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Available")
            .map_or("Unknown".to_owned(), |c| {
                let status = c["status"].as_str().unwrap_or("Unknown");
                match c["reason"].as_str() {
                    Some(r) if status != "True" => format!("{status} ({r})"),
                    _ => status.to_owned(),
                }
            });
        vec![
            json!(o["metadata"]["name"]),
            json!(service),
            json!(available),
            json!(age(&o["metadata"]["creationTimestamp"])),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(obj: &Value) -> Vec<String> {
        let mut c = Vec::new();
        ApiServiceStrategy.validate(obj, &mut c);
        c.iter().map(|c| c.field.clone()).collect()
    }

    #[test]
    fn validation_as_upstream() {
        let ok = json!({"metadata": {"name": "v1beta2.custom.metrics.k8s.io"},
            "spec": {"group": "custom.metrics.k8s.io", "version": "v1beta2",
                "groupPriorityMinimum": 100, "versionPriority": 200,
                "service": {"namespace": "m", "name": "adapter", "port": 443},
                "caBundle": "Zm9v"}});
        assert!(causes(&ok).is_empty(), "{:?}", causes(&ok));
        let mut bad = ok.clone();
        bad["metadata"]["name"] = json!("v1.custom.metrics.k8s.io");
        bad["spec"]["versionPriority"] = json!(0);
        bad["spec"]["insecureSkipTLSVerify"] = json!(true);
        assert_eq!(
            causes(&bad),
            [
                "metadata.name",
                "spec.versionPriority",
                "spec.insecureSkipTLSVerify"
            ]
        );
    }

    #[test]
    fn table_cells_as_upstream() {
        let mut local =
            json!({"metadata": {"name": "v1.apps"}, "spec": {"group": "apps", "version": "v1"}});
        ApiServiceStrategy.prepare_for_create(&mut local);
        let c = ApiServiceStrategy.table_cells(&local);
        assert_eq!((&c[1], &c[2]), (&json!("Local"), &json!("True")));
        let remote = json!({"metadata": {"name": "v1beta1.external.metrics.k8s.io"},
            "spec": {"service": {"namespace": "m", "name": "adapter"}},
            "status": {"conditions": [{"type": "Available", "status": "False", "reason": "FailedDiscoveryCheck"}]}});
        let c = ApiServiceStrategy.table_cells(&remote);
        assert_eq!(
            (&c[1], &c[2]),
            (&json!("m/adapter"), &json!("False (FailedDiscoveryCheck)"))
        );
    }
}
