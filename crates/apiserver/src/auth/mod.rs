//! Who may do what: authentication, authorization (RBAC) and service-account tokens.
//!
//! Every request passes [`Auth::check`] before it is routed:
//!
//! 1. **Authentication** finds the user: a client certificate signed by the cluster CA
//!    (user = CN, groups = O; TLS only asks for it, and its chain is verified here, so a
//!    certificate from another CA gets a 401 unless a valid bearer token comes with it,
//!    as upstream's union of authenticators), else a bearer
//!    token: a static token of the token file (`token,user,uid,"group1,group2"`, the
//!    bootstrap credentials; a line with the token alone is an administrator in
//!    `system:masters`), else a bootstrap token (`<id>.<secret>`, [`bootstrap_token`]),
//!    else a service-account JWT this server signed
//!    ([`token::Issuer`]). Authenticated users also get `system:authenticated`. Anyone
//!    else is anonymous (`system:anonymous`, group `system:unauthenticated`) and is
//!    answered 401 except on the health and version paths, which upstream serves to
//!    anonymous users through `system:public-info-viewer`. A server given no credentials
//!    at all (plain HTTP for tests, no token) treats a request without one as an
//!    administrator, as before authentication existed.
//! 2. **Impersonation** (`Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid`)
//!    switches to another user when the caller may `impersonate` them.
//! 3. **Authorization**: `system:masters` may do anything; everyone else gets what the
//!    RBAC bindings grant ([`rbac::Policy`]), and a 403 with upstream's message otherwise.
//!
//! The user then travels with the request (admission webhooks see it in
//! `AdmissionReview.request.userInfo`), and writes of Roles and bindings are checked
//! against escalation ([`confirm_no_escalation`]).

mod bootstrap;
mod bootstrap_token;
mod csr;
pub(crate) mod node;
mod node_graph;
pub(crate) mod rbac;
mod request;
mod reviews;
mod serviceaccount;
mod token;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::http::{header, request::Parts, HeaderMap};
use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{Api, ListOptions, WriteOptions};
use crate::error::{ApiError, Error};
use crate::resources::{self, ResourceInfo};

pub(crate) use bootstrap::reconcile as reconcile_bootstrap_policy;
pub(crate) use csr::{admit_signer_rights, run as run_csr_signer};
pub(crate) use request::{of_parts as request_attributes, Attributes};
pub(crate) use reviews::serve;
pub(crate) use token::Issuer;

/// The group whose members may do anything (upstream's privileged group).
pub(crate) const MASTERS: &str = "system:masters";
const AUTHENTICATED: &str = "system:authenticated";
const UNAUTHENTICATED: &str = "system:unauthenticated";
const ANONYMOUS: &str = "system:anonymous";

/// An authenticated user, as upstream's `user.Info` (and `UserInfo` in reviews).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    fn new(name: &str, uid: &str, groups: Vec<String>) -> Self {
        Self {
            username: name.into(),
            uid: uid.into(),
            groups,
            extra: BTreeMap::new(),
        }
    }

    /// Adds `system:authenticated` (once).
    fn authenticated(mut self) -> Self {
        if !self.groups.iter().any(|g| g == AUTHENTICATED) {
            self.groups.push(AUTHENTICATED.into());
        }
        self
    }

    fn anonymous() -> Self {
        Self::new(ANONYMOUS, "", vec![UNAUTHENTICATED.into()])
    }

    /// The administrator a credential-less request is on a server without credentials.
    fn admin() -> Self {
        Self::new("admin", "", vec![MASTERS.into()]).authenticated()
    }

    pub(crate) fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }

    /// As a JSON `UserInfo`.
    pub(crate) fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// One line of the token file: `token,user,uid,"group1,group2"` (upstream's format).
fn parse_token_line(line: &str) -> Option<(String, UserInfo)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (head, groups) = match line.split_once(",\"") {
        Some((h, g)) => (h, g.trim_end_matches('"').to_owned()),
        None => (line, String::new()),
    };
    let mut f = head.split(',').map(str::trim);
    let token = f.next()?.to_owned();
    let user = f.next().unwrap_or_default();
    let uid = f.next().unwrap_or_default();
    let mut groups: Vec<String> = if groups.is_empty() {
        f.next().map(|g| vec![g.to_owned()]).unwrap_or_default()
    } else {
        groups.split(',').map(|g| g.trim().to_owned()).collect()
    };
    groups.retain(|g| !g.is_empty());
    let info = if user.is_empty() {
        // kcore's tokens before authentication were all administrators'
        UserInfo::new("admin", "", vec![MASTERS.into()])
    } else {
        UserInfo::new(user, uid, groups)
    };
    Some((token, info.authenticated()))
}

/// Authentication and authorization of the HTTP server.
pub(crate) struct Auth {
    /// Static bearer tokens (the token file, [`crate::ApiServerBuilder::token`]).
    tokens: HashMap<String, UserInfo>,
    /// Whether any credential is configured (a server without any treats a request
    /// that brings none as an administrator).
    required: bool,
    /// Verifies client certificates against the cluster CA (with TLS).
    client_ca: Option<kcore_tls::ClientVerifier>,
    issuer: Arc<Issuer>,
    policy: rbac::PolicyCache,
    node_graph: Arc<node_graph::Graph>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

/// The audiences this server accepts in service-account tokens.
pub(crate) fn api_audiences() -> Vec<String> {
    vec![token::ISSUER.to_owned()]
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Auth {
    /// Authentication from token-file lines (`lines`) and extra administrator tokens;
    /// `client_ca` (with TLS): clients may bring certificates, so credentials are required.
    pub(crate) fn new(
        lines: &[String],
        admin_tokens: &[String],
        client_ca: Option<kcore_tls::ClientVerifier>,
        issuer: Issuer,
    ) -> Self {
        let mut tokens: HashMap<String, UserInfo> =
            lines.iter().filter_map(|l| parse_token_line(l)).collect();
        for t in admin_tokens {
            tokens.insert(
                t.clone(),
                UserInfo::new("admin", "", vec![MASTERS.into()]).authenticated(),
            );
        }
        Self {
            required: client_ca.is_some() || !tokens.is_empty(),
            client_ca,
            tokens,
            issuer: Arc::new(issuer),
            policy: rbac::PolicyCache::default(),
            node_graph: Arc::default(),
        }
    }

    /// Keeps the Node authorizer's graph from watches until the server stops.
    pub(crate) fn run_node_graph(&self, api: Api) -> impl std::future::Future<Output = ()> {
        self.node_graph.clone().run(api)
    }

    /// The service-account token issuer.
    pub(crate) fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// Who presented `token` (a static token or a service-account JWT), checked against
    /// the stored service account and bound objects.
    pub(crate) async fn authenticate_token(
        &self,
        api: &Api,
        token: &str,
        audiences: &[String],
    ) -> Result<UserInfo, String> {
        if let Some(u) = self.tokens.get(token) {
            return Ok(u.clone());
        }
        if let Some(r) = bootstrap_token::authenticate(api, token).await {
            return r;
        }
        let claims = self
            .issuer
            .verify(token, audiences, now_secs())
            .map_err(|e| e.to_string())?;
        reviews::service_account_user(api, &claims).await
    }

    /// Authenticates, impersonates and authorizes one request; the user it runs as, or
    /// the 401/403 to answer.
    pub(crate) async fn check(&self, api: &Api, parts: &Parts) -> Result<UserInfo, ApiError> {
        let user = self.authenticate(api, parts).await?;
        self.authorize_request(api, parts, user)
            .await
            .map_err(|d| d.error)
    }

    /// The authentication step of [`Auth::check`]: who sent the request, or the 401 to
    /// answer (anonymous requests pass only on the public paths, authorized).
    pub(crate) async fn authenticate(
        &self,
        api: &Api,
        parts: &Parts,
    ) -> Result<UserInfo, ApiError> {
        let unauthorized = || ApiError::new(401, "Unauthorized", "Unauthorized");
        let chain = parts
            .extensions
            .get::<axum::extract::ConnectInfo<kcore_tls::PeerCertificates>>()
            .map(|c| c.0 .0.as_slice())
            .filter(|c| !c.is_empty());
        // upstream's x509 authenticator: a chain the cluster CA did not sign is an error,
        // which a valid token still overrides but which is never anonymous
        let (peer, bad_cert) = match (chain, &self.client_ca) {
            (Some(chain), Some(ca)) => match ca.verify(chain) {
                Ok(s) => (Some(s), false),
                Err(e) => {
                    tracing::debug!(error = %e, source = ?std::error::Error::source(&e), "client certificate refused");
                    (None, true)
                }
            },
            _ => (None, false),
        };
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let user = if let Some(cn) = peer.as_ref().and_then(|p| p.common_name.clone()) {
            let groups = peer.map(|p| p.organizations).unwrap_or_default();
            UserInfo::new(&cn, "", groups).authenticated()
        } else if let Some(t) = bearer {
            match self.authenticate_token(api, t, &api_audiences()).await {
                Ok(u) => u,
                Err(_) if !self.required => UserInfo::admin(),
                Err(why) => {
                    tracing::debug!(%why, "bearer token refused");
                    return Err(unauthorized());
                }
            }
        } else if bad_cert {
            return Err(unauthorized());
        } else if !self.required {
            UserInfo::admin()
        } else {
            UserInfo::anonymous()
        };
        if user.username == ANONYMOUS {
            // anonymous requests reach only what upstream's anonymous conditions allow
            let path = parts.uri.path();
            let public = matches!(
                path,
                "/healthz" | "/livez" | "/readyz" | "/version" | "/version/"
            );
            if !public
                || self
                    .authorize(api, &user, &request::of_parts(parts))
                    .await
                    .is_err()
            {
                return Err(unauthorized());
            }
        }
        Ok(user)
    }

    /// The impersonation and authorization steps of [`Auth::check`] for an
    /// authenticated `user`: the user the request runs as, or why it is refused.
    pub(crate) async fn authorize_request(
        &self,
        api: &Api,
        parts: &Parts,
        user: UserInfo,
    ) -> Result<UserInfo, Denied> {
        if user.username == ANONYMOUS {
            // authorized by `authenticate`
            return Ok(user);
        }
        let attrs = request::of_parts(parts);
        let user = self
            .impersonate(api, user, &parts.headers)
            .await
            .map_err(|error| Denied {
                error,
                reason: None,
            })?;
        match self.authorize(api, &user, &attrs).await {
            Ok(()) => Ok(user),
            Err(reason) => Err(Denied {
                error: forbidden(&user, &attrs, &reason),
                reason: Some(reason),
            }),
        }
    }

    /// The RBAC snapshot of the stored objects.
    pub(crate) async fn policy(&self, api: &Api) -> Result<Arc<rbac::Policy>, ApiError> {
        let rev = api.group_revision(rbac::GROUP);
        if let Some(p) = rev.and_then(|r| self.policy.at(r)) {
            return Ok(p);
        }
        let objs = current_rbac(api).await?;
        Ok(self
            .policy
            .get([&objs[0], &objs[1], &objs[2], &objs[3]], rev))
    }

    /// Whether `user` may do `a`: `Err(reason)` when not.
    pub(crate) async fn authorize(
        &self,
        api: &Api,
        user: &UserInfo,
        a: &Attributes,
    ) -> Result<(), String> {
        if user.is_master() {
            return Ok(());
        }
        // the authorization modes Node,RBAC: the first to allow wins, and the 403 names
        // the reasons of both (upstream's union authorizer)
        let node_reason = match node::identity(user) {
            Some(name) => match node::authorize(api, &self.node_graph, user, name, a).await {
                node::Decision::Allow => return Ok(()),
                node::Decision::NoOpinion(reason) => reason,
            },
            None => String::new(),
        };
        let policy = self.policy(api).await.map_err(|e| e.message)?;
        policy.authorize(user, a).map_err(|rbac| {
            [node_reason, rbac]
                .into_iter()
                .filter(|r| !r.is_empty())
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    /// Upstream's impersonation filter: the caller must be allowed to `impersonate` the
    /// user (or service account), each group and the uid it asks for.
    async fn impersonate(
        &self,
        api: &Api,
        user: UserInfo,
        headers: &HeaderMap,
    ) -> Result<UserInfo, ApiError> {
        let get = |k: &str| -> Vec<String> {
            headers
                .get_all(k)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect()
        };
        let Some(target) = get("impersonate-user").into_iter().next() else {
            if !get("impersonate-group").is_empty() {
                return Err(ApiError::bad_request(
                    "requested [{Group  ...}] without impersonating a user",
                ));
            }
            return Ok(user);
        };
        let groups = get("impersonate-group");
        let uid = get("impersonate-uid")
            .into_iter()
            .next()
            .unwrap_or_default();
        let mut checks: Vec<Attributes> = Vec::new();
        let sa = target
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'));
        let mut a = match sa {
            Some((ns, name)) => {
                let mut a = Attributes::resource("impersonate", "", "serviceaccounts", ns);
                a.name = name.into();
                a
            }
            None => {
                let mut a = Attributes::resource("impersonate", "", "users", "");
                a.name = target.clone();
                a
            }
        };
        a.path = String::new();
        checks.push(a);
        for g in &groups {
            let mut a = Attributes::resource("impersonate", "", "groups", "");
            a.name = g.clone();
            checks.push(a);
        }
        if !uid.is_empty() {
            let mut a = Attributes::resource("impersonate", "authentication.k8s.io", "uids", "");
            a.name = uid.clone();
            checks.push(a);
        }
        for a in &checks {
            if let Err(reason) = self.authorize(api, &user, a).await {
                return Err(forbidden(&user, a, &reason));
            }
        }
        let mut groups = groups;
        if let Some((ns, _)) = sa {
            groups.push("system:serviceaccounts".into());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
        let mut out = UserInfo::new(&target, &uid, groups);
        for (k, v) in headers.iter() {
            if let Some(key) = k.as_str().strip_prefix("impersonate-extra-") {
                if let Ok(v) = v.to_str() {
                    out.extra
                        .entry(key.to_owned())
                        .or_default()
                        .push(v.to_owned());
                }
            }
        }
        Ok(out.authenticated())
    }
}

/// A request [`Auth::authorize_request`] refuses.
#[derive(Debug)]
pub(crate) struct Denied {
    /// The answer (403, or 400 for a malformed impersonation).
    pub error: ApiError,
    /// The authorizer's reason, when authorization (not impersonation) refused it.
    pub reason: Option<String>,
}

/// The 403 of a refused request, with upstream's message.
pub(crate) fn forbidden(user: &UserInfo, a: &Attributes, reason: &str) -> ApiError {
    let mut why = if !a.resource_request {
        format!(
            "User {:?} cannot {} path {:?}",
            user.username, a.verb, a.path
        )
    } else if a.namespace.is_empty() {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            user.username,
            a.verb,
            a.combined_resource(),
            a.group
        )
    } else {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            user.username,
            a.verb,
            a.combined_resource(),
            a.group,
            a.namespace
        )
    };
    if !reason.is_empty() {
        why = format!("{why}: {reason}");
    }
    if a.resource_request {
        ApiError::forbidden(&a.group, &a.resource, &a.name, &why)
    } else {
        ApiError::forbidden("", "", "", &why)
    }
}

fn rbac_info(plural: &str) -> &'static ResourceInfo {
    resources::lookup(rbac::GROUP, "v1", plural).expect("RBAC is served")
}

async fn current_rbac(api: &Api) -> Result<[Vec<Arc<Value>>; 4], ApiError> {
    Ok([
        api.current_objects(rbac_info("clusterroles")).await?,
        api.current_objects(rbac_info("roles")).await?,
        api.current_objects(rbac_info("clusterrolebindings"))
            .await?,
        api.current_objects(rbac_info("rolebindings")).await?,
    ])
}

/// Refuses a write of a Role, ClusterRole or binding that would grant `user` (the
/// request's user, a `UserInfo` object) rights it does not hold, unless it may
/// `escalate` (roles) or `bind` (bindings) — upstream's RBAC storage checks.
async fn confirm_no_escalation(
    api: &Api,
    info: &ResourceInfo,
    namespace: Option<&str>,
    obj: &Value,
    user: &Value,
) -> Result<(), ApiError> {
    if info.group != rbac::GROUP {
        return Ok(());
    }
    let user: UserInfo = serde_json::from_value(user.clone()).unwrap_or_default();
    if user.is_master() {
        return Ok(());
    }
    let ns = namespace.unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let objs = current_rbac(api).await?;
    let policy = rbac::Policy::build(&objs[0], &objs[1], &objs[2], &objs[3]);
    let plural = info.plural.to_string();
    let requested: Vec<PolicyRule> = match plural.as_str() {
        "roles" | "clusterroles" => {
            let mut a = Attributes::resource("escalate", rbac::GROUP, &plural, ns);
            a.name = name.into();
            if policy.authorize(&user, &a).is_ok() {
                return Ok(());
            }
            serde_json::from_value(obj["rules"].clone()).unwrap_or_default()
        }
        "rolebindings" | "clusterrolebindings" => {
            let role_ref: RoleRef = serde_json::from_value(obj["roleRef"].clone())
                .map_err(|e| ApiError::bad_request(format!("roleRef: {e}")))?;
            let target = if role_ref.kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            let mut a = Attributes::resource("bind", rbac::GROUP, target, ns);
            a.name = role_ref.name.clone();
            if policy.authorize(&user, &a).is_ok() {
                return Ok(());
            }
            match policy.resolve(&role_ref, ns) {
                Ok(rules) => rules.to_vec(),
                Err(e) => return Err(ApiError::forbidden(rbac::GROUP, &plural, name, &e)),
            }
        }
        _ => return Ok(()),
    };
    let (owned, errors) = policy.rules_for(&user, ns);
    let missing = rbac::uncovered(&owned, &requested);
    if missing.is_empty() {
        return Ok(());
    }
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let mut why = format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.username,
        groups.join(" "),
        missing.join("\n")
    );
    if !errors.is_empty() {
        why.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
    }
    Err(ApiError::forbidden(rbac::GROUP, &plural, name, &why))
}

/// The admission steps of this module for a write of `obj` by `user` (a `UserInfo`
/// object): escalation checks on RBAC objects, the ServiceAccount admission of new pods.
pub(crate) async fn admit(
    api: &Api,
    info: &ResourceInfo,
    namespace: Option<&str>,
    create: bool,
    obj: Value,
    user: &Value,
) -> Result<Value, ApiError> {
    confirm_no_escalation(api, info, namespace, &obj, user).await?;
    if create && info.group == "certificates.k8s.io" && info.plural == "certificatesigningrequests"
    {
        let u: UserInfo = serde_json::from_value(user.clone()).unwrap_or_default();
        return Ok(csr::record_requester(obj, &u));
    }
    match namespace {
        Some(ns) if create && info.group.is_empty() && info.plural == "pods" => {
            serviceaccount::admit_pod(api, ns, obj).await
        }
        _ => Ok(obj),
    }
}

/// The controllers of this module, run with the server: the aggregation of
/// ClusterRoles, the cleaner of expired bootstrap tokens, and in every namespace the `default` ServiceAccount and (with a
/// cluster CA, `ca_pem`) the `kube-root-ca.crt` ConfigMap.
pub(crate) async fn run(api: Api, ca_pem: Option<String>) {
    futures::future::join3(
        aggregation_loop(&api),
        service_account_loop(&api, ca_pem.as_deref()),
        bootstrap_token::run_cleaner(api.clone()),
    )
    .await;
}

async fn watch_forever<F, Fut>(api: &Api, info: &'static ResourceInfo, mut on_event: F)
where
    F: FnMut(Value) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        match api.watch_in(info, None, &ListOptions::default()).await {
            Ok(mut events) => {
                while let Some(ev) = events.next().await {
                    if matches!(ev.kind, "ADDED" | "MODIFIED" | "DELETED") {
                        on_event(ev.object).await;
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e.message, plural = %info.plural, "watch failed"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

async fn aggregation_loop(api: &Api) {
    watch_forever(api, rbac_info("clusterroles"), |_| async {
        if let Err(e) = bootstrap::aggregate(api).await {
            tracing::warn!(error = %e.message, "aggregating cluster roles");
        }
    })
    .await;
}

async fn service_account_loop(api: &Api, ca_pem: Option<&str>) {
    let namespaces = resources::lookup("", "v1", "namespaces").expect("served");
    let sas = resources::lookup("", "v1", "serviceaccounts").expect("served");
    watch_forever(api, namespaces, |ns| async move {
        let Some(name) = ns["metadata"]["name"].as_str() else {
            return;
        };
        if ns["metadata"]["deletionTimestamp"].is_string() || ns["status"]["phase"] == "Terminating" {
            return;
        }
        if let Some(ca) = ca_pem {
            serviceaccount::publish_root_ca(api, name, ca).await;
        }
        if api.get_in(sas, Some(name), "default").await.is_ok() {
            return;
        }
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}});
        match api.create_in(sas, Some(name), sa, &WriteOptions::default()).await {
            Ok(_) => tracing::debug!(namespace = %name, "created the default service account"),
            Err(e) if e.code == 409 => {}
            Err(e) => tracing::debug!(namespace = %name, error = %e.message, "creating the default service account"),
        }
    })
    .await;
}

/// Reads the token file's lines.
pub(crate) fn read_token_file(path: &std::path::Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    Ok(text.lines().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines_name_users_and_groups() {
        let (t, u) = parse_token_line(r#"abc,alice,1001,"dev,ops""#).unwrap();
        assert_eq!(t, "abc");
        assert_eq!(u.username, "alice");
        assert_eq!(u.uid, "1001");
        assert_eq!(u.groups, ["dev", "ops", "system:authenticated"]);
        let (_, u) = parse_token_line("tok,admin,admin,system:masters").unwrap();
        assert!(u.is_master());
        let (_, u) = parse_token_line("bare").unwrap();
        assert!(
            u.is_master(),
            "a bare token is an administrator's, as before"
        );
        assert!(parse_token_line("# comment").is_none());
    }

    #[test]
    fn forbidden_messages_are_upstreams() {
        let u = UserInfo::new("alice", "", vec![]);
        let mut a = Attributes::resource("list", "", "pods", "d");
        assert_eq!(
            forbidden(&u, &a, "").message,
            r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "d""#
        );
        a.verb = "get".into();
        a.name = "p".into();
        a.subresource = "log".into();
        assert_eq!(
            forbidden(&u, &a, "").message,
            r#"pods "p" is forbidden: User "alice" cannot get resource "pods/log" in API group "" in the namespace "d""#
        );
        let a = Attributes::resource("list", "apps", "deployments", "");
        let e = forbidden(
            &u,
            &a,
            "RBAC: clusterrole.rbac.authorization.k8s.io \"x\" not found",
        );
        assert_eq!(
            e.message,
            r#"deployments.apps is forbidden: User "alice" cannot list resource "deployments" in API group "apps" at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io "x" not found"#
        );
        assert_eq!(e.code, 403);
        let a = Attributes::non_resource("get", "/metrics");
        assert_eq!(
            forbidden(&u, &a, "").message,
            r#"forbidden: User "alice" cannot get path "/metrics""#
        );
    }
}
