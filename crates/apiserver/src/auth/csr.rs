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
//!
//! Also here:
//!
//! - upstream's `CertificateApproval` and `CertificateSigning` admission
//!   ([`admit_signer_rights`]): approving or denying (the `approval` subresource) needs
//!   `approve`, and changing the certificate or conditions through `status` needs
//!   `sign`, on the `signers` resource of `certificates.k8s.io` named after the
//!   request's signer, or after its `<domain>/*`;
//! - upstream's `csrapproving` controller ([`auto_approval`]): a node client
//!   certificate request (`kube-apiserver-client-kubelet`, a valid kubelet client
//!   subject and usages) is approved (`AutoApproved`) when its requester may `create`
//!   `certificatesigningrequests/selfnodeclient` (renewal: the requester is the node
//!   named in the request) or `certificatesigningrequests/nodeclient` (bootstrap);
//!   and, kcore's addition, a node's serving certificate request (`kubelet-serving`)
//!   from the node it names, for its own name ([`serving_approval`]).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::api::{Api, WriteOptions};
use crate::error::ApiError;
use crate::resources::{self, ResourceInfo, Sub};

use super::{rbac, Attributes, UserInfo};

const GROUP: &str = "certificates.k8s.io";

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

/// The PEM of a CSR's `spec.request` (empty when it is not base64 of UTF-8).
fn request_pem(csr: &Value) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(csr["spec"]["request"].as_str().unwrap_or_default())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}

fn parse_request(csr: &Value) -> Option<kcore_tls::CertRequest> {
    kcore_tls::CertRequest::parse(&request_pem(csr)).ok()
}

fn usages(csr: &Value) -> Vec<&str> {
    csr["spec"]["usages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
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
    let req = match kcore_tls::CertRequest::parse(&request_pem(csr)) {
        Ok(r) => r,
        Err(e) => return Some(Err(("SignerValidationFailure".into(), e.to_string()))),
    };
    let usages = usages(csr);
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

/// Whether RBAC lets `user` do `a` (members of `system:masters` may do anything): the
/// check the server's own components make where upstream's send a SubjectAccessReview.
async fn rbac_allows(api: &Api, user: &UserInfo, a: &Attributes) -> Result<bool, ApiError> {
    if user.is_master() {
        return Ok(true);
    }
    let objs = super::current_rbac(api).await?;
    let policy = rbac::Policy::build(&objs[0], &objs[1], &objs[2], &objs[3]);
    Ok(policy.authorize(user, a).is_ok())
}

/// Upstream's `IsAuthorizedForSignerName`: `verb` on the `signers` named `signer`, or
/// on its `<domain>/*`.
async fn may_use_signer(
    api: &Api,
    user: &UserInfo,
    verb: &str,
    signer: &str,
) -> Result<bool, ApiError> {
    let domain = signer.split('/').next().unwrap_or_default();
    for name in [signer.to_owned(), format!("{domain}/*")] {
        let mut a = Attributes::resource(verb, GROUP, "signers", "");
        a.name = name;
        if rbac_allows(api, user, &a).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Upstream's `CertificateApproval` and `CertificateSigning` admission: an update of a
/// CSR's `approval` needs `approve`, and one of its `status` that changes the
/// certificate or the conditions needs `sign`, on the request's signer (checked against
/// the old object, whose signer cannot change). `user` is the request's `UserInfo`.
pub(crate) async fn admit_signer_rights(
    api: &Api,
    info: &ResourceInfo,
    sub: Option<Sub>,
    old: Option<&Value>,
    new: &Value,
    user: &Value,
) -> Result<(), ApiError> {
    let Some(old) =
        old.filter(|_| info.group == GROUP && info.plural == "certificatesigningrequests")
    else {
        return Ok(());
    };
    let verb = match sub {
        Some(Sub::Approval) => "approve",
        Some(Sub::Status)
            if old["status"]["certificate"] != new["status"]["certificate"]
                || old["status"]["conditions"] != new["status"]["conditions"] =>
        {
            "sign"
        }
        _ => return Ok(()),
    };
    let u: UserInfo = serde_json::from_value(user.clone()).unwrap_or_default();
    let signer = old["spec"]["signerName"].as_str().unwrap_or_default();
    if may_use_signer(api, &u, verb, signer).await? {
        return Ok(());
    }
    let name = old["metadata"]["name"].as_str().unwrap_or_default();
    Err(ApiError::forbidden(
        GROUP,
        "certificatesigningrequests",
        name,
        &format!("user not permitted to {verb} requests with signerName {signer:?}"),
    ))
}

/// The requester of a CSR, as its spec records them.
fn requester(csr: &Value) -> UserInfo {
    let spec = &csr["spec"];
    UserInfo {
        username: spec["username"].as_str().unwrap_or_default().to_owned(),
        uid: spec["uid"].as_str().unwrap_or_default().to_owned(),
        groups: serde_json::from_value(spec["groups"].clone()).unwrap_or_default(),
        extra: serde_json::from_value(spec["extra"].clone()).unwrap_or_default(),
    }
}

/// The permissions upstream's approver tries, in order, with the message of its
/// approval: (subresource of `certificatesigningrequests` to `create`, only for the
/// node's own request, message).
const RECOGNIZERS: &[(&str, bool, &str)] = &[
    (
        "selfnodeclient",
        true,
        "Auto approving self kubelet client certificate after SubjectAccessReview.",
    ),
    (
        "nodeclient",
        false,
        "Auto approving kubelet client certificate after SubjectAccessReview.",
    ),
];

/// Upstream's `csrapproving` decision for one CSR: the `Approved` condition to add when
/// it is a node client certificate request its requester may have approved, `None`
/// otherwise (not such a request, already decided or issued, or not permitted).
pub(crate) async fn auto_approval(api: &Api, csr: &Value) -> Result<Option<Value>, ApiError> {
    let decided = csr["status"]["certificate"]
        .as_str()
        .is_some_and(|c| !c.is_empty())
        || condition(csr, "Approved")
        || condition(csr, "Denied");
    let signer = csr["spec"]["signerName"].as_str().unwrap_or_default();
    if decided || (signer != KUBELET_CLIENT && signer != KUBELET_SERVING) {
        return Ok(None);
    }
    let Some(req) = parse_request(csr) else {
        return Ok(None);
    };
    let usages = usages(csr);
    if !matches!(check(signer, &req, &usages), Some(Ok(_))) {
        return Ok(None);
    }
    let user = requester(csr);
    let own = req.subject().common_name.as_deref() == Some(user.username.as_str());
    if signer == KUBELET_SERVING {
        return Ok(serving_approval(&req, &user, own));
    }
    for (sub, self_only, message) in RECOGNIZERS {
        if *self_only && !own {
            continue;
        }
        let mut a = Attributes::resource("create", GROUP, "certificatesigningrequests", "");
        a.subresource = (*sub).to_owned();
        if rbac_allows(api, &user, &a).await? {
            return Ok(Some(
                json!({"type": "Approved", "status": "True", "reason": "AutoApproved",
                "message": message, "lastUpdateTime": crate::api::now()}),
            ));
        }
    }
    Ok(None)
}

/// kcore's approval of a node's serving certificate (upstream leaves these to an
/// external approver): the requester is the node the request names, in `system:nodes`,
/// and the only DNS name is the node's own; the IP addresses are the node's to choose,
/// as k3s's supervisor signs the addresses its agents ask for.
fn serving_approval(req: &kcore_tls::CertRequest, user: &UserInfo, own: bool) -> Option<Value> {
    let node = super::node::identity(user).filter(|n| !n.is_empty())?;
    if !own || req.dns_names().iter().any(|d| d != node) {
        return None;
    }
    Some(
        json!({"type": "Approved", "status": "True", "reason": "AutoApproved",
        "message": "Auto approving kubelet serving certificate of its own node.",
        "lastUpdateTime": crate::api::now()}),
    )
}

/// Approves `csr` when [`auto_approval`] says so.
async fn auto_approve(api: &Api, info: &'static ResourceInfo, csr: &Value) {
    let name = csr["metadata"]["name"].as_str().unwrap_or_default();
    let cond = match auto_approval(api, csr).await {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(csr = %name, error = %e.message, "deciding a CSR's auto-approval");
            return;
        }
    };
    let mut obj = csr.clone();
    let mut conds = obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    conds.push(cond);
    obj["status"]["conditions"] = json!(conds);
    match api
        .update_in(
            info,
            None,
            name,
            obj,
            Some(Sub::Approval),
            &WriteOptions::default(),
        )
        .await
    {
        Ok(_) => tracing::info!(csr = %name, "auto-approved a node certificate request"),
        Err(e) => tracing::debug!(csr = %name, error = %e.message, "approving a CSR"),
    }
}

/// Watches CSRs: approves node client requests as upstream's `csrapproving` controller
/// and signs the approved ones of the built-in signers.
pub(crate) async fn run(api: Api, ca: Arc<kcore_tls::Ca>) {
    let info = resources::lookup(GROUP, "v1", "certificatesigningrequests").expect("served");
    super::watch_forever(&api, info, |csr| {
        let (api, ca) = (api.clone(), ca.clone());
        async move {
            if csr["metadata"]["deletionTimestamp"].is_null() {
                auto_approve(&api, info, &csr).await;
            }
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
