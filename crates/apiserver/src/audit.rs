//! The audit log, as upstream's: a policy (`--audit-policy-file`, `audit.k8s.io/v1`
//! `Policy`) chooses a level per request, and every audited request is written to
//! `--audit-log-path` as JSON lines of `audit.k8s.io/v1` `Event`s.
//!
//! - Rules match in order, the first wins; a request no rule matches is not audited
//!   (level `None`). A rule matches by `users`, `userGroups`, `verbs`, `namespaces`
//!   (resource requests; `""` is cluster-scoped), `resources` (`group`, `resources` as
//!   `pods`, `pods/log`, `*`, `*/status`, `pods/*`, `resourceNames`) and
//!   `nonResourceURLs` (a trailing `*` matches a prefix); `resources`/`namespaces` never
//!   match a non-resource request nor `nonResourceURLs` a resource one.
//! - Levels: `Metadata` (who, what, when, the outcome), `Request` (and the request
//!   body as `requestObject`), `RequestResponse` (and the response body as
//!   `responseObject`, except for streams).
//! - Stages: `RequestReceived` when the request is authorized, `ResponseComplete` when
//!   the answer is ready (for watches and other streams: when it starts); `omitStages`
//!   of the rule and of the policy drop stages.
//! - Every response carries an `Audit-Id` header, the event's `auditID`.
//!
//! The log file is created 0600 and appended to; lines are written whole under a lock.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use k8s_openapi::jiff;
use serde_json::{json, Value};

use crate::auth::Attributes;
use crate::error::Error;

/// An audit level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "None" => Self::None,
            "Metadata" => Self::Metadata,
            "Request" => Self::Request,
            "RequestResponse" => Self::RequestResponse,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Metadata => "Metadata",
            Self::Request => "Request",
            Self::RequestResponse => "RequestResponse",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct GroupResources {
    group: String,
    resources: Vec<String>,
    names: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    level: Level,
    users: Vec<String>,
    groups: Vec<String>,
    verbs: Vec<String>,
    resources: Vec<GroupResources>,
    namespaces: Vec<String>,
    urls: Vec<String>,
    omit: Vec<String>,
}

const STAGES: &[&str] = &[
    "RequestReceived",
    "ResponseStarted",
    "ResponseComplete",
    "Panic",
];

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn omit_stages(v: &Value, at: &str) -> Result<Vec<String>, String> {
    let list = strings(v);
    if let Some(bad) = list.iter().find(|s| !STAGES.contains(&s.as_str())) {
        return Err(format!("{at}: unknown stage {bad:?}"));
    }
    Ok(list)
}

impl Rule {
    fn parse(r: &Value, i: usize) -> Result<Self, String> {
        let level = r["level"].as_str().unwrap_or_default();
        let level = Level::parse(level).ok_or_else(|| {
            format!("rules[{i}].level: Unsupported value: {level:?}: supported values: \"None\", \"Metadata\", \"Request\", \"RequestResponse\"")
        })?;
        let rule = Self {
            level,
            users: strings(&r["users"]),
            groups: strings(&r["userGroups"]),
            verbs: strings(&r["verbs"]),
            resources: r["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| GroupResources {
                    group: g["group"].as_str().unwrap_or_default().to_owned(),
                    resources: strings(&g["resources"]),
                    names: strings(&g["resourceNames"]),
                })
                .collect(),
            namespaces: strings(&r["namespaces"]),
            urls: strings(&r["nonResourceURLs"]),
            omit: omit_stages(&r["omitStages"], &format!("rules[{i}].omitStages"))?,
        };
        if !rule.urls.is_empty() && (!rule.resources.is_empty() || !rule.namespaces.is_empty()) {
            return Err(format!(
                "rules[{i}].nonResourceURLs: rules cannot apply to both regular resources and non-resource URLs"
            ));
        }
        Ok(rule)
    }

    /// Upstream's `ruleMatches`.
    fn matches(&self, user: &Value, a: &Attributes) -> bool {
        let name = user["username"].as_str().unwrap_or_default();
        if !self.users.is_empty() && !self.users.iter().any(|u| u == name) {
            return false;
        }
        if !self.groups.is_empty() {
            let groups = strings(&user["groups"]);
            if !self.groups.iter().any(|g| groups.contains(g)) {
                return false;
            }
        }
        if !self.verbs.is_empty() && !self.verbs.contains(&a.verb) {
            return false;
        }
        if !self.namespaces.is_empty() || !self.resources.is_empty() {
            return a.resource_request && self.matches_resource(a);
        }
        if !self.urls.is_empty() {
            return !a.resource_request
                && self.urls.iter().any(|u| match u.strip_suffix('*') {
                    Some(prefix) => a.path.starts_with(prefix),
                    None => *u == a.path,
                });
        }
        true
    }

    fn matches_resource(&self, a: &Attributes) -> bool {
        if !self.namespaces.is_empty() && !self.namespaces.contains(&a.namespace) {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        let combined = a.combined_resource();
        self.resources.iter().any(|gr| {
            if gr.group != a.group {
                return false;
            }
            if gr.resources.is_empty() {
                return true;
            }
            gr.resources.iter().any(|r| {
                let hit = *r == combined
                    || r == "*"
                    || (!a.subresource.is_empty()
                        && (r.strip_prefix("*/") == Some(a.subresource.as_str())
                            || r.strip_suffix("/*") == Some(a.resource.as_str())));
                hit && (gr.names.is_empty() || gr.names.contains(&a.name))
            })
        })
    }
}

/// A parsed audit `Policy`.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    rules: Vec<Rule>,
    omit: Vec<String>,
}

impl Policy {
    fn parse(doc: &Value) -> Result<Self, String> {
        if doc["kind"] != "Policy" {
            return Err(format!("expected kind Policy, not {}", doc["kind"]));
        }
        match doc["apiVersion"].as_str() {
            Some("audit.k8s.io/v1") => {}
            other => return Err(format!("unsupported apiVersion {other:?}")),
        }
        let rules = doc["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| Rule::parse(r, i))
            .collect::<Result<Vec<_>, _>>()?;
        if rules.is_empty() {
            return Err("rules: a policy needs at least one rule".into());
        }
        Ok(Self {
            rules,
            omit: omit_stages(&doc["omitStages"], "omitStages")?,
        })
    }

    /// The level of a request and the stages it omits.
    fn decide(&self, user: &Value, a: &Attributes) -> (Level, Vec<String>) {
        match self.rules.iter().find(|r| r.matches(user, a)) {
            Some(r) => {
                let mut omit = r.omit.clone();
                omit.extend(self.omit.iter().cloned());
                (r.level, omit)
            }
            None => (Level::None, Vec::new()),
        }
    }
}

/// The audit backend: a policy and the log file.
pub(crate) struct Auditor {
    policy: Policy,
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Auditor {
    /// Reads the policy file and opens (creates, mode 0600) the log for appending.
    pub(crate) fn open(policy: &Path, log: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(policy).map_err(|source| Error::Io {
            path: policy.into(),
            source,
        })?;
        let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "audit policy {}: not YAML or JSON: {e}",
                policy.display()
            ))
        })?;
        let policy = Policy::parse(&doc)
            .map_err(|why| Error::Config(format!("audit policy {}: {why}", policy.display())))?;
        let file = kcore_statedir::open(
            log,
            std::fs::OpenOptions::new().append(true).create(true),
            kcore_statedir::PRIVATE_FILE,
        )
        .map_err(|source| Error::Io {
            path: log.into(),
            source,
        })?;
        Ok(Self {
            policy,
            path: log.into(),
            file: Mutex::new(file),
        })
    }

    /// Starts the audit of a request: its level decided, `RequestReceived` written.
    /// `None` when the policy does not audit it.
    pub(crate) fn begin(&self, req: RequestInfo) -> Option<Audit<'_>> {
        let (level, omit) = self.policy.decide(&req.user, &req.attrs);
        if level == Level::None {
            return None;
        }
        let a = Audit {
            auditor: self,
            level,
            omit,
            id: req.id.clone(),
            received: timestamp(),
            req,
        };
        if a.wants("RequestReceived") {
            let ev = a.event("RequestReceived");
            self.write(&ev);
        }
        Some(a)
    }

    fn write(&self, ev: &Value) {
        let mut line = serde_json::to_vec(ev).unwrap_or_default();
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = f.write_all(&line) {
            tracing::warn!(path = %self.path.display(), error = %e, "writing the audit log");
        }
    }
}

/// What the audit log records of a request.
pub(crate) struct RequestInfo {
    /// The `Audit-Id`.
    pub id: String,
    pub uri: String,
    pub attrs: Attributes,
    /// The authenticated user (a `UserInfo` object).
    pub user: Value,
    /// The user the request was made as, when impersonating.
    pub impersonated: Option<Value>,
    pub source_ips: Vec<String>,
    pub user_agent: Option<String>,
}

impl RequestInfo {
    /// The audit view of a request from `user` (a `UserInfo` object).
    pub(crate) fn new(id: String, parts: &Parts, user: Value) -> Self {
        let uri = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
        let query = parts.uri.query().unwrap_or_default();
        let param = |k: &str| {
            query.split('&').find_map(|kv| {
                let (key, v) = kv.split_once('=')?;
                (key == k).then(|| v.to_owned())
            })
        };
        let field_name = param("fieldSelector").and_then(|f| {
            let f = f.replace("%3D", "=").replace("%3d", "=");
            f.strip_prefix("metadata.name=").map(str::to_owned)
        });
        let attrs = crate::auth::attributes(
            parts.method.as_str(),
            parts.uri.path(),
            matches!(param("watch").as_deref(), Some("true" | "1")),
            field_name.as_deref(),
        );
        let header = |k: &str| {
            parts
                .headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // X-Forwarded-For first, then X-Real-Ip, then the peer, as upstream's SourceIPs
        let mut source_ips: Vec<String> = header("x-forwarded-for")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(ip) = header("x-real-ip") {
            source_ips.push(ip);
        }
        if let Some(peer) = parts
            .extensions
            .get::<axum::extract::ConnectInfo<kcore_tls::PeerCertificates>>()
            .and_then(|c| c.0 .1)
        {
            let ip = peer.ip().to_string();
            if !source_ips.contains(&ip) {
                source_ips.push(ip);
            }
        }
        let impersonated = header("impersonate-user").map(|_| user.clone());
        Self {
            id,
            uri,
            attrs,
            user,
            impersonated,
            source_ips,
            user_agent: header("user-agent"),
        }
    }
}

/// Puts the `Audit-Id` header on a response.
pub(crate) fn with_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("audit-id", v);
    }
    resp
}

/// The largest response body copied into `responseObject`.
const MAX_LOGGED_RESPONSE: usize = 64 << 20;

/// A JSON body as a value, if it is one.
fn json_body(content_type: Option<&str>, body: &[u8]) -> Option<Value> {
    let ct = content_type.unwrap_or("application/json");
    if ct.starts_with("application/json") || ct.ends_with("+json") {
        serde_json::from_slice(body).ok()
    } else if ct.starts_with("application/yaml") || ct.starts_with("application/apply-patch+yaml") {
        serde_yaml_ng::from_slice(body).ok()
    } else if ct.starts_with(crate::protobuf::MEDIA_TYPE) {
        crate::protobuf::decode_body(body).ok()
    } else {
        None
    }
}

/// One audited request in flight.
pub(crate) struct Audit<'a> {
    auditor: &'a Auditor,
    level: Level,
    omit: Vec<String>,
    id: String,
    received: String,
    req: RequestInfo,
}

fn timestamp() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

impl Audit<'_> {
    fn wants(&self, stage: &str) -> bool {
        !self.omit.iter().any(|s| s == stage)
    }

    /// Whether the request body is recorded (level `Request` and above).
    pub(crate) fn wants_request(&self) -> bool {
        self.level >= Level::Request
    }

    /// Whether the response body is recorded (level `RequestResponse`).
    pub(crate) fn wants_response(&self) -> bool {
        self.level >= Level::RequestResponse
    }

    fn event(&self, stage: &str) -> Value {
        let a = &self.req.attrs;
        let mut ev = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": self.level.as_str(),
            "auditID": self.id,
            "stage": stage,
            "requestURI": self.req.uri,
            "verb": a.verb,
            "user": self.req.user,
            "sourceIPs": self.req.source_ips,
            "requestReceivedTimestamp": self.received,
            "stageTimestamp": timestamp(),
        });
        if let Some(u) = &self.req.impersonated {
            ev["impersonatedUser"] = u.clone();
        }
        if let Some(ua) = &self.req.user_agent {
            ev["userAgent"] = json!(ua);
        }
        if a.resource_request {
            let mut r = json!({"resource": a.resource});
            let set = |r: &mut Value, k: &str, v: &str| {
                if !v.is_empty() {
                    r[k] = json!(v);
                }
            };
            set(&mut r, "namespace", &a.namespace);
            set(&mut r, "name", &a.name);
            set(&mut r, "apiGroup", &a.group);
            set(&mut r, "subresource", &a.subresource);
            if let Some(v) = api_version(&self.req.uri) {
                r["apiVersion"] = json!(v);
            }
            ev["objectRef"] = r;
        }
        ev
    }

    /// Completes the audit of a served request: reads back what the level records
    /// (the Status of a failure, the response body of a non-streaming JSON answer) and
    /// writes `ResponseComplete`. Returns the response to send.
    pub(crate) async fn finish(self, resp: Response, served: crate::http::Served) -> Response {
        let code = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let json = content_type.as_deref().is_some_and(|ct| {
            ct.starts_with("application/json") || ct.starts_with(crate::protobuf::MEDIA_TYPE)
        });
        let streaming = matches!(self.req.attrs.verb.as_str(), "watch" | "connect")
            || self.req.attrs.subresource == "log"
            || (self.req.attrs.resource == "pods"
                && matches!(
                    self.req.attrs.subresource.as_str(),
                    "exec" | "attach" | "portforward" | "proxy"
                ));
        let read_body = json && !streaming && (code >= 300 || self.wants_response());
        let (resp, body) = if read_body {
            let (parts, body) = resp.into_parts();
            match axum::body::to_bytes(body, MAX_LOGGED_RESPONSE).await {
                Ok(b) => {
                    let v = json_body(content_type.as_deref(), &b);
                    (Response::from_parts(parts, Body::from(b)), v)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading a response for the audit log");
                    (Response::from_parts(parts, Body::empty()), None)
                }
            }
        } else {
            (resp, None)
        };
        let request = served
            .body
            .as_deref()
            .filter(|_| self.wants_request())
            .and_then(|b| json_body(served.content_type.as_deref(), b));
        let status = body.as_ref().filter(|v| v["kind"] == "Status").cloned();
        let response = body.filter(|_| self.wants_response());
        self.complete(
            code,
            status.as_ref(),
            request,
            response,
            &served.annotations,
        );
        resp
    }

    /// Writes `ResponseComplete`: the status code, the Status of a failure, the request
    /// and response bodies as the level asks, and the audit annotations.
    fn complete(
        self,
        code: u16,
        status: Option<&Value>,
        request: Option<Value>,
        response: Option<Value>,
        annotations: &BTreeMap<String, String>,
    ) {
        if !self.wants("ResponseComplete") {
            return;
        }
        let mut ev = self.event("ResponseComplete");
        let mut rs = json!({"metadata": {}, "code": code});
        if let Some(s) = status.filter(|_| code >= 300) {
            for k in ["status", "message", "reason", "details"] {
                if !s[k].is_null() {
                    rs[k] = s[k].clone();
                }
            }
        }
        ev["responseStatus"] = rs;
        if self.wants_request() {
            if let Some(r) = request {
                ev["requestObject"] = r;
            }
        }
        if self.wants_response() {
            if let Some(r) = response {
                ev["responseObject"] = r;
            }
        }
        if !annotations.is_empty() {
            ev["annotations"] = json!(annotations);
        }
        self.auditor.write(&ev);
    }
}

/// The `version` of a resource path (`/api/v1/...` -> `v1`, `/apis/g/v1/...` -> `v1`).
fn api_version(uri: &str) -> Option<String> {
    let path = uri.split('?').next().unwrap_or_default();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", v, ..] => Some((*v).to_owned()),
        ["apis", _, v, ..] => Some((*v).to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: Value) -> Policy {
        Policy::parse(&json!({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": rules}))
            .expect("valid policy")
    }

    fn attrs(verb: &str, group: &str, res: &str, sub: &str, ns: &str) -> Attributes {
        let mut a = Attributes::resource(verb, group, res, ns);
        a.subresource = sub.into();
        a
    }

    #[test]
    fn first_matching_rule_decides() {
        let p = policy(json!([
            {"level": "None", "users": ["system:kube-proxy"]},
            {"level": "RequestResponse", "resources": [{"group": "", "resources": ["pods/log", "*/status"]}]},
            {"level": "Request", "verbs": ["create"], "namespaces": ["prod"]},
            {"level": "None", "nonResourceURLs": ["/healthz*", "/version"]},
            {"level": "Metadata", "omitStages": ["RequestReceived"]}
        ]));
        let admin = json!({"username": "admin", "groups": ["system:masters"]});
        let proxy = json!({"username": "system:kube-proxy"});
        let level = |u: &Value, a: &Attributes| p.decide(u, a).0;
        assert_eq!(
            level(&proxy, &attrs("get", "", "pods", "", "x")),
            Level::None
        );
        assert_eq!(
            level(&admin, &attrs("get", "", "pods", "log", "x")),
            Level::RequestResponse
        );
        assert_eq!(
            level(
                &admin,
                &attrs("update", "apps", "deployments", "status", "x")
            ),
            Level::Metadata
        );
        assert_eq!(
            level(&admin, &attrs("update", "", "nodes", "status", "")),
            Level::RequestResponse
        );
        assert_eq!(
            level(&admin, &attrs("create", "", "pods", "", "prod")),
            Level::Request
        );
        assert_eq!(
            level(&admin, &attrs("create", "", "pods", "", "dev")),
            Level::Metadata
        );
        assert_eq!(
            level(&admin, &Attributes::non_resource("get", "/healthz/etcd")),
            Level::None
        );
        assert_eq!(
            level(&admin, &Attributes::non_resource("get", "/metrics")),
            Level::Metadata
        );
        assert_eq!(
            p.decide(&admin, &Attributes::non_resource("get", "/metrics"))
                .1,
            vec!["RequestReceived".to_owned()]
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        let bad = |rules: Value| {
            Policy::parse(
                &json!({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": rules}),
            )
            .expect_err("refused")
        };
        assert!(bad(json!([{"level": "Everything"}])).contains("Unsupported value"));
        assert!(bad(json!([{"level": "None", "omitStages": ["Later"]}])).contains("unknown stage"));
        assert!(
            bad(json!([{"level": "None", "nonResourceURLs": ["/x"], "namespaces": ["a"]}]))
                .contains("both")
        );
    }
}
