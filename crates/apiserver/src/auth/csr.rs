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
//!   from the node it names, for the node's own names and addresses as its Node
//!   reports them ([`check_serving_names`]; denied otherwise, with the name that is
//!   not the node's; left pending, and decided again, until a new Node reports its
//!   addresses).

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

/// What the approver does with one CSR.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Approval {
    /// Adds this condition (`Approved`, or `Denied` for a serving request whose names are
    /// not its node's).
    Decide(Value),
    /// Leaves it pending until the node it names reports its addresses (why).
    Wait {
        /// The node whose addresses are awaited.
        node: String,
        /// Why it waits.
        reason: String,
    },
    /// Not for this approver (not a node's request, already decided, or not permitted).
    Ignore,
}

fn approved(message: &str) -> Value {
    json!({"type": "Approved", "status": "True", "reason": "AutoApproved",
        "message": message, "lastUpdateTime": crate::api::now()})
}

/// Upstream's `csrapproving` decision for one CSR: approve a node client certificate
/// request its requester may have approved; for a node's serving certificate request
/// from the node it names, approve, deny or wait by [`check_serving_names`] against the
/// Node's status.
pub(crate) async fn auto_approval(api: &Api, csr: &Value) -> Result<Approval, ApiError> {
    let decided = csr["status"]["certificate"]
        .as_str()
        .is_some_and(|c| !c.is_empty())
        || condition(csr, "Approved")
        || condition(csr, "Denied");
    let signer = csr["spec"]["signerName"].as_str().unwrap_or_default();
    if decided || (signer != KUBELET_CLIENT && signer != KUBELET_SERVING) {
        return Ok(Approval::Ignore);
    }
    let Some(req) = parse_request(csr) else {
        return Ok(Approval::Ignore);
    };
    let usages = usages(csr);
    if !matches!(check(signer, &req, &usages), Some(Ok(_))) {
        return Ok(Approval::Ignore);
    }
    let user = requester(csr);
    let own = req.subject().common_name.as_deref() == Some(user.username.as_str());
    if signer == KUBELET_SERVING {
        return serving_approval(api, &req, &user, own).await;
    }
    for (sub, self_only, message) in RECOGNIZERS {
        if *self_only && !own {
            continue;
        }
        let mut a = Attributes::resource("create", GROUP, "certificatesigningrequests", "");
        a.subresource = (*sub).to_owned();
        if rbac_allows(api, &user, &a).await? {
            return Ok(Approval::Decide(approved(message)));
        }
    }
    Ok(Approval::Ignore)
}

/// What a node's serving certificate request names, against the Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServingNames {
    /// Every DNS name and IP address is the node's.
    Match,
    /// The Node is not there, or has reported no addresses yet (why).
    Unknown(String),
    /// A name that is not the node's (which).
    Foreign(String),
}

/// Checks the subject alternative names of node `node`'s serving certificate request
/// against its Node object (`None`: not registered), as the approvers of
/// `kubelet-serving` requests do (upstream leaves them to one such as
/// kubelet-csr-approver): each DNS name must be the node's name or one of its
/// `Hostname`, `InternalDNS` or `ExternalDNS` addresses, and each IP address one of its
/// `InternalIP` or `ExternalIP` addresses, as `status.addresses` reports them.
pub(crate) fn check_serving_names(
    node: &str,
    dns_names: &[String],
    ips: &[std::net::IpAddr],
    node_obj: Option<&Value>,
) -> ServingNames {
    let Some(obj) = node_obj else {
        return ServingNames::Unknown(format!("node {node:?} is not registered"));
    };
    let addresses: Vec<(&str, &str)> = obj["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["type"].as_str()?, a["address"].as_str()?)))
        .collect();
    if addresses.is_empty() {
        return ServingNames::Unknown(format!("node {node:?} has not reported its addresses"));
    }
    for d in dns_names {
        let known = d == node
            || addresses.iter().any(|(t, a)| {
                matches!(*t, "Hostname" | "InternalDNS" | "ExternalDNS")
                    && a.eq_ignore_ascii_case(d)
            });
        if !known {
            return ServingNames::Foreign(format!(
                "DNS name {d:?} is not an address of node {node:?}"
            ));
        }
    }
    for ip in ips {
        let known = addresses.iter().any(|(t, a)| {
            matches!(*t, "InternalIP" | "ExternalIP")
                && a.parse::<std::net::IpAddr>().is_ok_and(|x| x == *ip)
        });
        if !known {
            return ServingNames::Foreign(format!(
                "IP address {ip} is not an address of node {node:?}"
            ));
        }
    }
    ServingNames::Match
}

/// kcore's approval of a node's serving certificate request (upstream leaves these to an
/// external approver): the requester is the node the request names, in `system:nodes`,
/// and every name is one of the node's ([`check_serving_names`]); a request naming
/// anything else is denied with the reason, and one whose node has not reported its
/// addresses waits for them.
async fn serving_approval(
    api: &Api,
    req: &kcore_tls::CertRequest,
    user: &UserInfo,
    own: bool,
) -> Result<Approval, ApiError> {
    let Some(node) = super::node::identity(user).filter(|n| !n.is_empty() && own) else {
        return Ok(Approval::Ignore);
    };
    let nodes = resources::lookup("", "v1", "nodes").expect("served");
    let obj = match api.get_in(nodes, None, node).await {
        Ok(o) => Some(o),
        Err(e) if e.code == 404 => None,
        Err(e) => return Err(e),
    };
    Ok(
        match check_serving_names(node, &req.dns_names(), &req.ip_addresses(), obj.as_ref()) {
            ServingNames::Match => Approval::Decide(approved(
                "Auto approving kubelet serving certificate of its own node.",
            )),
            ServingNames::Unknown(reason) => Approval::Wait {
                node: node.to_owned(),
                reason,
            },
            ServingNames::Foreign(why) => Approval::Decide(
                json!({"type": "Denied", "status": "True", "reason": "AutoDenied",
                "message": format!("Denied kubelet serving certificate: {why}."),
                "lastUpdateTime": crate::api::now()}),
            ),
        },
    )
}

/// Serving requests waiting for their node's addresses: node name to CSR names.
type Waiting =
    std::sync::Mutex<std::collections::HashMap<String, std::collections::BTreeSet<String>>>;

/// Decides `csr` by [`auto_approval`]: writes the condition, or records it in `waiting`.
async fn auto_approve(api: &Api, info: &'static ResourceInfo, csr: &Value, waiting: &Waiting) {
    let name = csr["metadata"]["name"].as_str().unwrap_or_default();
    let cond = match auto_approval(api, csr).await {
        Ok(Approval::Decide(c)) => c,
        Ok(Approval::Ignore) => return,
        Ok(Approval::Wait { node, reason }) => {
            tracing::info!(csr = %name, %reason, "a serving certificate request waits for its node's addresses");
            let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
            w.entry(node).or_default().insert(name.to_owned());
            return;
        }
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
    let approved = cond["type"] == "Approved";
    let message = cond["message"].as_str().unwrap_or_default().to_owned();
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
        Ok(_) if approved => {
            tracing::info!(csr = %name, "auto-approved a node certificate request")
        }
        Ok(_) => tracing::info!(csr = %name, %message, "denied a node certificate request"),
        Err(e) => tracing::debug!(csr = %name, error = %e.message, "approving a CSR"),
    }
}

/// How often serving requests that wait for their node's addresses are decided again.
const RECHECK_WAITING: Duration = Duration::from_secs(2);

/// Decides again the serving requests that wait for node `node`.
async fn recheck(api: &Api, info: &'static ResourceInfo, node: &str, waiting: &Waiting) {
    let csrs = {
        let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
        match w.remove(node) {
            Some(c) => c,
            None => return,
        }
    };
    for name in csrs {
        match api.get_in(info, None, &name).await {
            Ok(csr) => auto_approve(api, info, &csr, waiting).await,
            Err(e) => tracing::debug!(csr = %name, error = %e.message, "reading a waiting CSR"),
        }
    }
}

/// Watches CSRs: approves node client requests as upstream's `csrapproving` controller
/// (and nodes' serving requests, [`serving_approval`]) and signs the approved ones of
/// the built-in signers; decides again, every 2 s, the serving requests that wait for
/// their node's addresses.
pub(crate) async fn run(api: Api, ca: Arc<kcore_tls::Ca>) {
    let info = resources::lookup(GROUP, "v1", "certificatesigningrequests").expect("served");
    let waiting: Arc<Waiting> = Arc::default();
    // waiting requests are few and short-lived: polled rather than a watch on every
    // Node's heartbeat
    let on_waiting = async {
        loop {
            tokio::time::sleep(RECHECK_WAITING).await;
            let nodes: Vec<String> = waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned()
                .collect();
            for node in nodes {
                recheck(&api, info, &node, &waiting).await;
            }
        }
    };
    let on_csrs = super::watch_forever(&api, info, |csr| {
        let (api, ca, waiting) = (api.clone(), ca.clone(), waiting.clone());
        async move {
            if csr["metadata"]["deletionTimestamp"].is_null() {
                auto_approve(&api, info, &csr, &waiting).await;
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
    });
    tokio::join!(on_waiting, on_csrs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn node(addresses: Value) -> Value {
        json!({"metadata": {"name": "n1"}, "status": {"addresses": addresses}})
    }

    #[test]
    fn serving_names_must_be_the_nodes_own() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let dns = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let reported = node(json!([
            {"type": "InternalIP", "address": "10.0.0.7"},
            {"type": "ExternalIP", "address": "2001:db8::7"},
            {"type": "Hostname", "address": "n1.example"},
            {"type": "InternalDNS", "address": "n1.internal"},
        ]));
        let check = |d: &[&str], ips: &[IpAddr], n: Option<&Value>| {
            check_serving_names("n1", &dns(d), ips, n)
        };
        let ok = ServingNames::Match;
        assert_eq!(check(&["n1"], &[ip("10.0.0.7")], Some(&reported)), ok);
        assert_eq!(
            check(
                &["n1.example", "N1.Internal"],
                &[ip("2001:db8:0::7")],
                Some(&reported)
            ),
            ok
        );
        assert_eq!(check(&[], &[ip("10.0.0.7")], Some(&reported)), ok);
        assert_eq!(
            check(&["n2"], &[ip("10.0.0.7")], Some(&reported)),
            ServingNames::Foreign(r#"DNS name "n2" is not an address of node "n1""#.into())
        );
        assert_eq!(
            check(&["n1"], &[ip("10.0.0.7"), ip("10.0.0.8")], Some(&reported)),
            ServingNames::Foreign(r#"IP address 10.0.0.8 is not an address of node "n1""#.into())
        );
        // an address of another type is no IP address of the node
        let odd = node(json!([{"type": "Hostname", "address": "10.0.0.9"}]));
        assert!(matches!(
            check(&[], &[ip("10.0.0.9")], Some(&odd)),
            ServingNames::Foreign(_)
        ));
        // a DNS name reported as an IP address is not a DNS name of the node
        let odd = node(json!([{"type": "InternalIP", "address": "10.0.0.9"}]));
        assert!(matches!(
            check(&["10.0.0.9"], &[], Some(&odd)),
            ServingNames::Foreign(_)
        ));
        // nothing to compare with yet: wait
        assert_eq!(
            check(&["n1"], &[], None),
            ServingNames::Unknown(r#"node "n1" is not registered"#.into())
        );
        assert_eq!(
            check(&["n1"], &[], Some(&json!({"metadata": {"name": "n1"}}))),
            ServingNames::Unknown(r#"node "n1" has not reported its addresses"#.into())
        );
    }
}
