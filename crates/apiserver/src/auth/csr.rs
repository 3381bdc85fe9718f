//! The CertificateSigningRequest side of authentication: who asked (recorded on create),
//! and the built-in signers, which issue approved requests with the cluster CA as
//! upstream's `csrsigning` controller does:
//!
//! - `kubernetes.io/kube-apiserver-client`: client certificates for any user;
//! - `kubernetes.io/kube-apiserver-client-kubelet`: a node's client certificate, only for
//!   `CN=system:node:<name>`, `O=system:nodes`, no subject alternative names, usages
//!   `client auth` and `digital signature` (optionally `key encipherment`);
//! - `kubernetes.io/kubelet-serving`: a node's serving certificate, for the same subject,
//!   with DNS names or IP addresses only, usages `server auth` and `digital signature`
//!   (optionally `key encipherment`).
//!
//! A request a signer refuses gets the `Failed` condition (`SignerValidationFailure`).
//! Certificates last `spec.expirationSeconds`, at most a year (upstream's default
//! `--cluster-signing-duration`).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::api::{Api, WriteOptions};
use crate::resources::{self, Sub};

use super::UserInfo;

const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Records the requesting user in a new CSR's spec (upstream's `PrepareForCreate`).
pub(crate) fn record_requester(mut obj: Value, user: &UserInfo) -> Value {
    let spec = &mut obj["spec"];
    spec["username"] = json!(user.username);
    spec["uid"] = json!(user.uid);
    spec["groups"] = json!(user.groups);
    if user.extra.is_empty() {
        if let Some(s) = spec.as_object_mut() {
            s.remove("extra");
        }
    } else {
        spec["extra"] = json!(user.extra);
    }
    obj
}

fn condition(obj: &Value, ty: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == ty && c["status"] != "False")
}

/// Why `signer` refuses `req` with `usages`, if it does; the certificate's usage if not.
fn check(
    signer: &str,
    req: &kcore_tls::CertRequest,
    usages: &[&str],
) -> Option<Result<kcore_tls::Usage, String>> {
    let only = |allowed: &[&str], required: &[&str]| -> Result<(), String> {
        if let Some(u) = usages.iter().find(|u| !allowed.contains(u)) {
            return Err(format!("usage {u:?} is not allowed, only {allowed:?}"));
        }
        match required.iter().find(|r| !usages.contains(r)) {
            Some(r) => Err(format!("missing required usage {r:?}")),
            None => Ok(()),
        }
    };
    let node_subject = || -> Result<(), String> {
        let s = req.subject();
        if s.organizations != ["system:nodes"] {
            return Err("subject organization is not system:nodes".into());
        }
        if !s
            .common_name
            .as_deref()
            .is_some_and(|cn| cn.starts_with("system:node:") && cn.len() > 12)
        {
            return Err("subject common name does not begin with system:node:".into());
        }
        if !req.emails_and_uris().is_empty() {
            return Err("email addresses and URIs are not allowed".into());
        }
        Ok(())
    };
    let kubelet_usages = |eku: &str| {
        only(
            &["digital signature", "key encipherment", eku],
            &["digital signature", eku],
        )
    };
    Some(match signer {
        KUBE_APISERVER_CLIENT => only(
            &["digital signature", "key encipherment", "client auth"],
            &["client auth"],
        )
        .map(|()| kcore_tls::Usage::Client),
        KUBELET_CLIENT => node_subject()
            .and_then(|()| {
                if req.dns_names().is_empty() && req.ip_addresses().is_empty() {
                    Ok(())
                } else {
                    Err("DNS or IP subjectAltNames are not allowed".into())
                }
            })
            .and_then(|()| kubelet_usages("client auth"))
            .map(|()| kcore_tls::Usage::Client),
        KUBELET_SERVING => node_subject()
            .and_then(|()| {
                if req.dns_names().is_empty() && req.ip_addresses().is_empty() {
                    Err("DNS or IP subjectAltName is required".into())
                } else {
                    Ok(())
                }
            })
            .and_then(|()| kubelet_usages("server auth"))
            .map(|()| kcore_tls::Usage::Server),
        _ => return None,
    })
}

/// Signs one approved CSR of a built-in signer; `None` when there is nothing to do.
fn sign(ca: &kcore_tls::Ca, csr: &Value) -> Option<Result<String, (String, String)>> {
    if !condition(csr, "Approved")
        || condition(csr, "Denied")
        || condition(csr, "Failed")
        || csr["status"]["certificate"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    {
        return None;
    }
    let spec = &csr["spec"];
    let signer = spec["signerName"].as_str().unwrap_or_default();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(spec["request"].as_str().unwrap_or_default())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    let req = match kcore_tls::CertRequest::parse(&pem) {
        Ok(r) => r,
        Err(e) => return Some(Err(("SignerValidationFailure".into(), e.to_string()))),
    };
    let usages: Vec<&str> = spec["usages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let usage = match check(signer, &req, &usages)? {
        Ok(u) => u,
        Err(why) => return Some(Err(("SignerValidationFailure".into(), why))),
    };
    let valid_for = spec["expirationSeconds"]
        .as_u64()
        .map(Duration::from_secs)
        .map_or(MAX_DURATION, |d| d.min(MAX_DURATION));
    Some(
        ca.sign_request(&req, usage, valid_for)
            .map_err(|e| ("SigningError".into(), e.to_string())),
    )
}

/// Watches CSRs and signs the approved ones of the built-in signers.
pub(crate) async fn run(api: Api, ca: Arc<kcore_tls::Ca>) {
    let info = resources::lookup("certificates.k8s.io", "v1", "certificatesigningrequests")
        .expect("served");
    super::watch_forever(&api, info, |csr| {
        let (api, ca) = (api.clone(), ca.clone());
        async move {
            let Some(result) = sign(&ca, &csr) else {
                return;
            };
            let name = csr["metadata"]["name"].as_str().unwrap_or_default();
            let mut obj = csr.clone();
            let now = crate::api::now();
            match result {
                Ok(pem) => {
                    obj["status"]["certificate"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(pem));
                    tracing::info!(csr = %name, "signed a certificate signing request");
                }
                Err((reason, message)) => {
                    let mut conds = obj["status"]["conditions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    conds.push(json!({"type": "Failed", "status": "True", "reason": reason,
                        "message": message, "lastUpdateTime": now, "lastTransitionTime": now}));
                    obj["status"]["conditions"] = json!(conds);
                    tracing::info!(csr = %name, %message, "refused a certificate signing request");
                }
            }
            if let Err(e) = api
                .update_in(
                    info,
                    None,
                    name,
                    obj,
                    Some(Sub::Status),
                    &WriteOptions::default(),
                )
                .await
            {
                tracing::debug!(csr = %name, error = %e.message, "writing a CSR's status");
            }
        }
    })
    .await;
}
