//! CertificateSigningRequests (certificates.k8s.io/v1, cluster-scoped), as upstream's
//! `pkg/registry/certificates/certificates`:
//!
//! - on create the status is cleared and the requesting user is recorded in
//!   `spec.username`/`uid`/`groups`/`extra` (by `crate::auth::admit`, which knows the user);
//! - `spec.request` must be a PEM `CERTIFICATE REQUEST` with a valid signature,
//!   `spec.signerName` a qualified name, `spec.usages` known and unique,
//!   `spec.expirationSeconds` at least 600; the spec is immutable;
//! - the `approval` subresource changes only `status.conditions`: `Approved` and `Denied`
//!   exclude each other and, once set, stay;
//! - the columns of `kubectl get csr`: NAME, AGE, SIGNERNAME, REQUESTOR,
//!   REQUESTEDDURATION, CONDITION.
//!
//! The signers of `kubernetes.io/kube-apiserver-client`,
//! `kubernetes.io/kube-apiserver-client-kubelet` and `kubernetes.io/kubelet-serving` are
//! in `crate::auth::csr`.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, NONE};
use crate::table::{age, col};
use crate::validate;

/// The served `CertificateSigningRequest` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::certificates::v1::CertificateSigningRequest,
    "certificatesigningrequests",
    false,
    &["csr"],
    NONE,
    &[Sub::Status, Sub::Approval],
    false,
    &CsrStrategy
);

/// Upstream's `KeyUsage` values.
pub(crate) const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// The `CertificateSigningRequest` strategy.
pub(crate) struct CsrStrategy;

/// The condition types of a CSR that approval sets.
fn has_condition(obj: &Value, ty: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == ty)
}

/// Upstream's `ValidateSignerName`: `<domain>/<path>`, at most 571 characters.
fn signer_name(v: &Value, causes: &mut Vec<Cause>) {
    let p = "spec.signerName";
    let Some(s) = v.as_str().filter(|s| !s.is_empty()) else {
        causes.push(Cause::required(p));
        return;
    };
    let Some((domain, path)) = s.split_once('/') else {
        causes.push(Cause::invalid(
            p,
            v,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
        return;
    };
    validate::dns_subdomain(&json!(domain), p, causes);
    if path.is_empty() || path.len() > 317 {
        causes.push(Cause::invalid(
            p,
            v,
            "validating path: may not be empty or longer than 317 characters",
        ));
    }
}

impl Strategy for CsrStrategy {
    fn kind(&self) -> &'static str {
        "CertificateSigningRequest"
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        // a plain update changes neither the spec nor the status
        new["spec"] = old["spec"].clone();
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        match spec["request"].as_str().filter(|r| !r.is_empty()) {
            None => causes.push(Cause::required("spec.request")),
            Some(b64) => {
                use base64::Engine as _;
                let pem = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default();
                if !pem.contains("-----BEGIN CERTIFICATE REQUEST-----") {
                    causes.push(Cause::invalid(
                        "spec.request",
                        &json!("<request>"),
                        "PEM block type must be CERTIFICATE REQUEST",
                    ));
                } else if let Err(e) = kcore_tls::CertRequest::parse(&pem) {
                    let why = std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| e.to_string());
                    causes.push(Cause::invalid("spec.request", &json!("<request>"), &why));
                }
            }
        }
        signer_name(&spec["signerName"], causes);
        match spec["usages"].as_array().filter(|u| !u.is_empty()) {
            None => causes.push(Cause::required_because(
                "spec.usages",
                "usages must be provided",
            )),
            Some(usages) => {
                let mut seen = Vec::new();
                for (i, u) in usages.iter().enumerate() {
                    let p = format!("spec.usages[{i}]");
                    if !u.as_str().is_some_and(|s| USAGES.contains(&s)) {
                        causes.push(Cause::not_supported(&p, u, USAGES));
                    } else if seen.contains(&u) {
                        causes.push(Cause::duplicate(&p, u));
                    }
                    seen.push(u);
                }
            }
        }
        if let Some(secs) = spec["expirationSeconds"].as_i64() {
            if secs < 600 {
                causes.push(Cause::invalid(
                    "spec.expirationSeconds",
                    &json!(secs),
                    "may not specify a duration less than 600 seconds (10 minutes)",
                ));
            }
        }
        if has_condition(obj, "Approved") && has_condition(obj, "Denied") {
            causes.push(Cause::invalid(
                "status.conditions",
                &obj["status"]["conditions"],
                "Approved and Denied conditions are mutually exclusive",
            ));
        }
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        for ty in ["Approved", "Denied"] {
            if has_condition(old, ty) && !has_condition(new, ty) {
                causes.push(Cause::forbidden(
                    "status.conditions",
                    &format!("updates may not remove a condition of type {ty:?}"),
                ));
            }
        }
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("Age", s, 0),
            col("SignerName", s, 0),
            col("Requestor", s, 0),
            col("RequestedDuration", s, 0),
            col("Condition", s, 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let spec = &o["spec"];
        let mut conds: Vec<String> = o["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["type"].as_str().map(str::to_owned))
            .collect();
        if o["status"]["certificate"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
        {
            conds.push("Issued".into());
        }
        let condition = if conds.is_empty() {
            "Pending".to_owned()
        } else {
            conds.join(",")
        };
        let duration = spec["expirationSeconds"]
            .as_i64()
            .map(crate::table::human_duration)
            .unwrap_or_else(|| "<none>".into());
        vec![
            json!(o["metadata"]["name"]),
            json!(age(&o["metadata"]["creationTimestamp"])),
            json!(spec["signerName"]),
            json!(spec["username"]),
            json!(duration),
            json!(condition),
        ]
    }
}
