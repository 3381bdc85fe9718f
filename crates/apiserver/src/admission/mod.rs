//! Admission webhooks (admissionregistration.k8s.io/v1), called from the write path as
//! upstream's admission chain does: every matching mutating webhook in order
//! (configurations by name, webhooks in their order, `reinvocationPolicy: IfNeeded`
//! ones once more when a later one changed the object), then the object is defaulted and
//! validated by its kind's strategy, then every matching validating webhook, in parallel.
//! Deletes go through both lists with `oldObject` only.
//!
//! - Which webhooks match: `matching` (rules, `matchPolicy`, `namespaceSelector`,
//!   `objectSelector`), then `matchConditions` (`conditions`): CEL over `object`,
//!   `oldObject` and `request`, all true for the webhook to be called; one false skips
//!   it; an evaluation error follows `failurePolicy` (`Fail`: 403
//!   `<resource> "<name>" is forbidden: expression '…' resulted in error: …`, as
//!   upstream; `Ignore`: skipped). No `authorizer` variable.
//! - The call: an AdmissionReview v1 POST over HTTPS to `clientConfig.url`, or to a
//!   Service: kcore resolves `service {namespace, name, port}` through the Service's
//!   Endpoints (a ready address and the target port of the Service port), so the call
//!   goes straight to a pod IP, which the API server's host reaches on every kcore node;
//!   the TLS server name is `<name>.<namespace>.svc`. `clientConfig.caBundle` is the
//!   only trust. Connections are kept alive (`client`).
//! - Outcomes, with upstream's wording: a call that fails is ignored with
//!   `failurePolicy: Ignore`, else a 500 `failed calling webhook "<name>": <cause>`; a
//!   denial answers `admission webhook "<name>" denied the request: <message>` with the
//!   response's `status.code` (400 below 400) and reason; `warnings` reach the client as
//!   `Warning` headers; a JSONPatch (mutating webhooks only) is applied to the object.
//!
//! ValidatingAdmissionPolicies (`policy`) run between the kind's validation and the
//! validating webhooks, as upstream's plugin order; on delete, before the validating
//! webhooks too.
//!
//! The webhook configurations themselves (and everything else in
//! admissionregistration.k8s.io) are never sent to webhooks or policies.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::api::{scale_of, Api};
use crate::error::ApiError;
use crate::resources::{self, ResourceInfo, Sub};
use crate::selectors::LabelSelector;

mod client;
pub(crate) mod conditions;
mod limitrange;
mod matching;
pub(crate) mod noderestriction;
mod podsecurity;
mod policy;
mod priority;
pub(crate) mod quota;

pub(crate) use podsecurity::Config as PodSecurityConfig;

use client::{chain, Target, TransportError};
use matching::Rule;

/// The largest webhook response read.
const MAX_RESPONSE: usize = 3 << 20;

/// The group whose objects are never sent to webhooks.
const EXEMPT_GROUP: &str = "admissionregistration.k8s.io";

/// The operation of an admission request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Create,
    Update,
    Delete,
    #[allow(dead_code)] // matched by rules; kcore has no CONNECT requests that admit yet
    Connect,
}

impl Operation {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }

    fn options_kind(self) -> &'static str {
        match self {
            Operation::Create => "CreateOptions",
            Operation::Update => "UpdateOptions",
            Operation::Delete => "DeleteOptions",
            Operation::Connect => "ConnectOptions",
        }
    }
}

/// What a write asks of the admission chain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub info: &'a ResourceInfo,
    pub sub: Option<Sub>,
    pub op: Operation,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub dry_run: bool,
}

/// Where a webhook is served.
#[derive(Debug, Clone)]
enum Endpoint {
    Url {
        url: String,
        host: String,
        port: u16,
        authority: String,
        path: String,
    },
    Service {
        namespace: String,
        name: String,
        port: i64,
        path: String,
    },
}

/// One webhook of a configuration, parsed.
#[derive(Debug)]
pub(crate) struct Hook {
    name: String,
    mutating: bool,
    rules: Vec<Rule>,
    /// `matchPolicy: Equivalent`.
    equivalent: bool,
    namespace_selector: LabelSelector,
    object_selector: LabelSelector,
    /// `failurePolicy: Ignore`.
    fail_open: bool,
    /// `sideEffects` None or NoneOnDryRun: may be called for dry-run requests.
    dry_run_safe: bool,
    timeout: Duration,
    /// `reinvocationPolicy: IfNeeded`.
    reinvoke: bool,
    match_conditions: conditions::MatchConditions,
    endpoint: Endpoint,
    ca_bundle: Arc<[u8]>,
}

impl Hook {
    fn parse(w: &Value, mutating: bool) -> Option<Self> {
        let selector = |f: &str| LabelSelector::from_object(&w[f]).ok();
        let cc = &w["clientConfig"];
        let endpoint = match (cc["url"].as_str(), cc["service"].is_object()) {
            (Some(url), _) => parse_url(url)?,
            (None, true) => {
                let s = &cc["service"];
                Endpoint::Service {
                    namespace: s["namespace"].as_str()?.to_owned(),
                    name: s["name"].as_str()?.to_owned(),
                    port: s["port"].as_i64().unwrap_or(443),
                    path: s["path"].as_str().unwrap_or("/").to_owned(),
                }
            }
            _ => return None,
        };
        let ca = cc["caBundle"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_default();
        Some(Self {
            name: w["name"].as_str()?.to_owned(),
            mutating,
            rules: w["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(Rule::parse)
                .collect(),
            equivalent: w["matchPolicy"].as_str() != Some("Exact"),
            namespace_selector: if w["namespaceSelector"].is_null() {
                LabelSelector::default()
            } else {
                selector("namespaceSelector")?
            },
            object_selector: if w["objectSelector"].is_null() {
                LabelSelector::default()
            } else {
                selector("objectSelector")?
            },
            fail_open: w["failurePolicy"].as_str() == Some("Ignore"),
            dry_run_safe: matches!(w["sideEffects"].as_str(), Some("None" | "NoneOnDryRun")),
            timeout: Duration::from_secs(w["timeoutSeconds"].as_u64().unwrap_or(10)),
            reinvoke: w["reinvocationPolicy"].as_str() == Some("IfNeeded"),
            match_conditions: conditions::MatchConditions::parse(
                &w["matchConditions"],
                conditions::WEBHOOK_VARIABLES,
            ),
            endpoint,
            ca_bundle: ca.into(),
        })
    }
}

/// Splits a validated `https://host[:port]/path` webhook URL.
fn parse_url(url: &str) -> Option<Endpoint> {
    let rest = url.strip_prefix("https://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']')?;
        (h, p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 443,
    };
    Some(Endpoint::Url {
        url: url.to_owned(),
        host: host.to_owned(),
        port,
        authority: authority.to_owned(),
        path: path.to_owned(),
    })
}

type Hooks = Arc<Vec<Arc<Hook>>>;

/// The parsed webhooks of the current configurations, re-parsed only when one changes.
#[derive(Default)]
struct Memo {
    versions: Vec<String>,
    hooks: Hooks,
}

/// The admission webhooks state of one [`Api`]: parsed configurations and the
/// connection pool.
#[derive(Default)]
pub(crate) struct Webhooks {
    pool: client::Pool,
    memo: [Mutex<Memo>; 2],
    /// Round-robin over a Service's endpoints.
    next: std::sync::atomic::AtomicUsize,
    /// The compiled ValidatingAdmissionPolicies and their bindings.
    policies: Mutex<policy::Memo>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").finish_non_exhaustive()
    }
}

// ----- the request scope: who asks, and the warnings for the response -----

/// What the HTTP layer hands to admission for one request and gets back.
struct Scope {
    user: Value,
    warnings: Mutex<Vec<String>>,
    annotations: Mutex<std::collections::BTreeMap<String, String>>,
}

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// What admission leaves for the response and the audit log of one request.
#[derive(Debug, Default)]
pub(crate) struct ScopeOutput {
    /// Warnings for `Warning` headers.
    pub warnings: Vec<String>,
    /// Audit annotations (`pod-security.kubernetes.io/audit-violations`, ...).
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// Runs `f` (one API request from `user`, a `UserInfo` object) and returns its output with
/// the warnings admission gave for the response and its audit annotations.
pub(crate) async fn request_scope<F: Future>(user: Value, f: F) -> (F::Output, ScopeOutput) {
    let scope = Arc::new(Scope {
        user,
        warnings: Mutex::new(Vec::new()),
        annotations: Mutex::default(),
    });
    let out = SCOPE.scope(Arc::clone(&scope), f).await;
    let warnings = std::mem::take(&mut *scope.warnings.lock().unwrap_or_else(|e| e.into_inner()));
    let annotations =
        std::mem::take(&mut *scope.annotations.lock().unwrap_or_else(|e| e.into_inner()));
    (
        out,
        ScopeOutput {
            warnings,
            annotations,
        },
    )
}

/// Adds audit annotations for the current request.
fn add_audit_annotations(list: std::collections::BTreeMap<String, String>) {
    if list.is_empty() {
        return;
    }
    let _ = SCOPE.try_with(|s| {
        s.annotations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(list)
    });
}

/// A `Warning` header value (`299 - "text"`) as upstream writes it.
pub(crate) fn warning_header(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("299 - \"{escaped}\"")
}

/// The user of the current request (`system:apiserver` in `system:masters` outside one:
/// the server's own in-process calls).
pub(crate) fn current_user() -> Value {
    user_info()
}

fn user_info() -> Value {
    SCOPE
        .try_with(|s| s.user.clone())
        .unwrap_or_else(|_| json!({"username": "system:apiserver", "groups": ["system:masters"]}))
}

fn add_warnings(w: &Value) {
    add_warnings_list(
        w.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
    );
}

/// Adds warnings for the response of the current request.
fn add_warnings_list(list: Vec<String>) {
    if list.is_empty() {
        return;
    }
    let _ = SCOPE.try_with(|s| {
        s.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(list)
    });
}

// ----- errors -----

/// Why a webhook could not be called or answered wrongly: what `failurePolicy` rules on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
enum CallError {
    #[error("failed to call webhook: Post {url:?}")]
    Transport {
        url: String,
        #[source]
        source: TransportError,
    },
    #[error("failed to call webhook: {0}")]
    Resolve(String),
    #[error("failed to call webhook: the server answered HTTP {code}: {body}")]
    Status { code: u16, body: String },
    #[error("received invalid webhook response")]
    Decode(#[source] serde_json::Error),
    #[error("expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {0}")]
    WrongKind(String),
    #[error("webhook response was absent")]
    NoResponse,
    #[error("expected response.uid={want:?}, got {got:?}")]
    Uid { want: String, got: String },
    #[error("webhook returned response.patch but not response.patchType")]
    NoPatchType,
    #[error("webhook returned invalid response.patchType of {0:?}")]
    PatchType(String),
    #[error("validating webhook may not return response.patch")]
    ValidatingPatch,
}

/// Upstream's `NewForbidden` for a request on `info`: `<resource>[.<group>] "<name>" is
/// forbidden: <why>`.
pub(crate) fn forbidden(info: &ResourceInfo, name: &str, why: &str) -> ApiError {
    let resource = if info.group.is_empty() {
        info.plural.to_string()
    } else {
        format!("{}.{}", info.plural, info.group)
    };
    let message = if name.is_empty() {
        format!("{resource} is forbidden: {why}")
    } else {
        format!("{resource} {name:?} is forbidden: {why}")
    };
    let mut e = ApiError::new(403, "Forbidden", message);
    let mut details = json!({"name": name, "kind": info.plural, "causes": [{"message": why}]});
    if !info.group.is_empty() {
        details["group"] = json!(info.group);
    }
    e.details = Some(details);
    e
}

/// upstream's `NewInternalError`.
fn internal(message: String) -> ApiError {
    ApiError::internal(format!("Internal error occurred: {message}"))
}

/// Upstream's `ToStatusErr` for a denial.
fn denied(hook: &str, status: &Value) -> ApiError {
    let by = format!("admission webhook {hook:?} denied the request");
    let message = match (status["message"].as_str(), status["reason"].as_str()) {
        (Some(m), _) if !m.is_empty() => format!("{by}: {m}"),
        (_, Some(r)) if !r.is_empty() => format!("{by}: {r}"),
        _ => format!("{by} without explanation"),
    };
    let code = status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .unwrap_or(400);
    let mut e = ApiError::new(code, status["reason"].as_str().unwrap_or(""), message);
    if status["details"].is_object() {
        e.details = Some(status["details"].clone());
    }
    e
}

/// A webhook's answer.
struct Answer {
    allowed: bool,
    status: Value,
    patch: Option<json_patch::Patch>,
}

/// A request the API aggregator sends to the Service behind an APIService.
pub(crate) struct ServiceRequest<'a> {
    /// The Service's namespace, name and port.
    pub service: (&'a str, &'a str, i64),
    /// The PEM bundle trusted for the Service's certificate.
    pub ca_bundle: Arc<[u8]>,
    /// Accept any certificate instead (`insecureSkipTLSVerify`).
    pub insecure: bool,
    /// Method, path and query, headers and body, as sent on.
    pub method: &'a axum::http::Method,
    pub path_and_query: String,
    pub headers: Vec<(axum::http::HeaderName, String)>,
    pub body: Bytes,
}

impl Webhooks {
    /// Sets the front proxy's client certificate, presented by [`Self::send_to_service`].
    pub(crate) fn set_front_proxy(&self, cert: kcore_tls::CertKey) {
        self.pool.set_front_proxy(cert);
    }

    /// Sends `req` over TLS to a ready endpoint of its Service, resolved and connected
    /// as webhook calls are (the API aggregator's transport), presenting the front
    /// proxy's client certificate; the status, content type and body of the answer, or
    /// why the Service could not be reached.
    pub(crate) async fn send_to_service(
        &self,
        api: &Api,
        req: ServiceRequest<'_>,
        timeout: Duration,
    ) -> Result<(u16, Option<String>, Bytes), String> {
        let (namespace, name, port) = req.service;
        let addr = self
            .resolve_service(api, namespace, name, port)
            .await
            .map_err(|e| match e {
                CallError::Resolve(why) => why,
                other => other.to_string(),
            })?;
        let host = format!("{name}.{namespace}.svc");
        let t = Target {
            addr,
            server_name: host.clone(),
            authority: format!("{host}:{port}"),
            path_and_query: req.path_and_query,
            ca_bundle: req.ca_bundle,
            insecure: req.insecure,
            front_proxy: true,
        };
        self.pool
            .send(&t, req.method, &req.headers, req.body, timeout)
            .await
            .map_err(|e| client::chain(&e))
    }

    async fn hooks(&self, api: &Api, mutating: bool) -> Result<Hooks, ApiError> {
        let plural = if mutating {
            "mutatingwebhookconfigurations"
        } else {
            "validatingwebhookconfigurations"
        };
        let info = resources::lookup(EXEMPT_GROUP, "v1", plural).expect("served");
        let configs = api.current_objects(info).await?;
        let memo = &self.memo[usize::from(!mutating)];
        if configs.is_empty() {
            return Ok(Hooks::default());
        }
        let versions: Vec<String> = configs
            .iter()
            .map(|c| {
                format!(
                    "{}@{}",
                    c["metadata"]["name"].as_str().unwrap_or_default(),
                    c["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                )
            })
            .collect();
        {
            let m = memo.lock().unwrap_or_else(|e| e.into_inner());
            if m.versions == versions {
                return Ok(Arc::clone(&m.hooks));
            }
        }
        // The cache lists cluster-scoped objects in key order: by name, as upstream sorts.
        let hooks: Vec<Arc<Hook>> = configs
            .iter()
            .flat_map(|c| c["webhooks"].as_array().cloned().unwrap_or_default())
            .filter_map(|w| {
                let h = Hook::parse(&w, mutating);
                if h.is_none() {
                    tracing::warn!(webhook = %w["name"], "skipping a webhook that does not parse");
                }
                h.map(Arc::new)
            })
            .collect();
        let hooks = Arc::new(hooks);
        *memo.lock().unwrap_or_else(|e| e.into_inner()) = Memo {
            versions,
            hooks: Arc::clone(&hooks),
        };
        Ok(hooks)
    }

    /// Where `hook` is called now.
    async fn target(&self, api: &Api, hook: &Hook) -> Result<(Target, String), CallError> {
        let timeout = format!("?timeout={}s", hook.timeout.as_secs());
        match &hook.endpoint {
            Endpoint::Url {
                url,
                host,
                port,
                authority,
                path,
            } => {
                let shown = format!("{url}{timeout}");
                let addr = match host.parse::<std::net::IpAddr>() {
                    Ok(ip) => std::net::SocketAddr::new(ip, *port),
                    Err(_) => tokio::net::lookup_host((host.as_str(), *port))
                        .await
                        .map_err(|source| TransportError::Resolve {
                            host: host.clone(),
                            source,
                        })
                        .and_then(|mut a| {
                            a.next()
                                .ok_or_else(|| TransportError::NoAddress(host.clone()))
                        })
                        .map_err(|source| CallError::Transport {
                            url: shown.clone(),
                            source,
                        })?,
                };
                let t = Target {
                    addr,
                    server_name: host.clone(),
                    authority: authority.clone(),
                    path_and_query: format!("{path}{timeout}"),
                    ca_bundle: Arc::clone(&hook.ca_bundle),
                    insecure: false,
                    front_proxy: false,
                };
                Ok((t, shown))
            }
            Endpoint::Service {
                namespace,
                name,
                port,
                path,
            } => {
                let host = format!("{name}.{namespace}.svc");
                let shown = format!("https://{host}:{port}{path}{timeout}");
                let addr = self.resolve_service(api, namespace, name, *port).await?;
                let t = Target {
                    addr,
                    server_name: host.clone(),
                    authority: format!("{host}:{port}"),
                    path_and_query: format!("{path}{timeout}"),
                    ca_bundle: Arc::clone(&hook.ca_bundle),
                    insecure: false,
                    front_proxy: false,
                };
                Ok((t, shown))
            }
        }
    }

    /// A ready endpoint of Service `namespace/name` for its port `port` (upstream's
    /// `ResolveEndpoint`): the Endpoints port named as the Service port, round-robin over
    /// the ready addresses.
    async fn resolve_service(
        &self,
        api: &Api,
        namespace: &str,
        name: &str,
        port: i64,
    ) -> Result<std::net::SocketAddr, CallError> {
        let get = |plural: &'static str| {
            let info = resources::lookup("", "v1", plural).expect("served");
            api.get_in(info, Some(namespace), name)
        };
        let svc = get("services").await.map_err(|e| match e.code {
            404 => CallError::Resolve(format!("service \"{name}\" not found")),
            _ => CallError::Resolve(e.message),
        })?;
        let sp = svc["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["port"].as_i64() == Some(port))
            .ok_or_else(|| CallError::Resolve(format!("service \"{name}\" has no port {port}")))?;
        let port_name = sp["name"].as_str().unwrap_or("");
        let none = || CallError::Resolve(format!("no endpoints available for service {name:?}"));
        let eps = get("endpoints").await.map_err(|_| none())?;
        let mut addrs = Vec::new();
        for subset in eps["subsets"].as_array().into_iter().flatten() {
            let Some(p) = subset["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"].as_str().unwrap_or("") == port_name)
                .and_then(|p| p["port"].as_u64())
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for a in subset["addresses"].as_array().into_iter().flatten() {
                if let Some(ip) = a["ip"].as_str().and_then(|s| s.parse().ok()) {
                    addrs.push(std::net::SocketAddr::new(ip, p));
                }
            }
        }
        if addrs.is_empty() {
            return Err(none());
        }
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(addrs[i % addrs.len()])
    }

    /// Calls one webhook with `review` and checks its answer.
    async fn call(
        &self,
        api: &Api,
        hook: &Hook,
        review: &Value,
        uid: &str,
    ) -> Result<Answer, CallError> {
        let (target, url) = self.target(api, hook).await?;
        let span = tracing::debug_span!("webhook", name = %hook.name, %url);
        let body = Bytes::from(serde_json::to_vec(review).unwrap_or_default());
        let (code, bytes) =
            tracing::Instrument::instrument(self.pool.post(&target, body, hook.timeout), span)
                .await
                .map_err(|source| CallError::Transport { url, source })?;
        if !(200..300).contains(&code) {
            let body = String::from_utf8_lossy(&bytes[..bytes.len().min(256)]).into_owned();
            return Err(CallError::Status { code, body });
        }
        let mut v: Value = serde_json::from_slice(&bytes).map_err(CallError::Decode)?;
        if v["apiVersion"] != "admission.k8s.io/v1" || v["kind"] != "AdmissionReview" {
            return Err(CallError::WrongKind(format!(
                "{}, Kind={}",
                v["apiVersion"].as_str().unwrap_or_default(),
                v["kind"].as_str().unwrap_or_default()
            )));
        }
        let r = v["response"].take();
        if !r.is_object() {
            return Err(CallError::NoResponse);
        }
        let got = r["uid"].as_str().unwrap_or_default();
        if got != uid {
            return Err(CallError::Uid {
                want: uid.to_owned(),
                got: got.to_owned(),
            });
        }
        add_warnings(&r["warnings"]);
        let patch = match r["patch"].as_str().filter(|p| !p.is_empty()) {
            None => None,
            Some(_) if !hook.mutating => return Err(CallError::ValidatingPatch),
            Some(p) => {
                match r["patchType"].as_str() {
                    None => return Err(CallError::NoPatchType),
                    Some("JSONPatch") => {}
                    Some(t) => return Err(CallError::PatchType(t.to_owned())),
                }
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(p)
                    .map_err(|e| {
                        CallError::Resolve(format!("response.patch is not base64: {e}"))
                    })?;
                Some(serde_json::from_slice(&raw).map_err(CallError::Decode)?)
            }
        };
        Ok(Answer {
            allowed: r["allowed"].as_bool().unwrap_or(false),
            status: r["status"].clone(),
            patch,
        })
    }
}

/// Whether `info` is the core `namespaces` resource (whose objects are selected by their
/// own labels and named as the request's namespace).
fn is_namespaces(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.plural == "namespaces"
}

/// `{group, version, kind}` / `{group, version, resource}` of a request, for `info`.
fn gvk(info: &ResourceInfo, sub: Option<Sub>) -> (Value, Value) {
    let kind = match sub {
        Some(Sub::Scale) => json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
        _ => json!({"group": info.group, "version": info.version, "kind": info.kind}),
    };
    let res = json!({"group": info.group, "version": info.version, "resource": info.plural});
    (kind, res)
}

/// The AdmissionRequest of `req` for the resource it `matched`, without `object` and
/// `oldObject` (what CEL expressions see as `request`).
pub(crate) fn admission_request(req: &Request<'_>, matched: &ResourceInfo, uid: &str) -> Value {
    let (kind, resource) = gvk(matched, req.sub);
    let (request_kind, request_resource) = gvk(req.info, req.sub);
    let sub = req.sub.map_or("", |s| s.name());
    let mut r = json!({
        "uid": uid, "kind": kind, "resource": resource,
        "requestKind": request_kind, "requestResource": request_resource,
        "name": req.name, "operation": req.op.as_str(), "userInfo": user_info(),
        "dryRun": req.dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": req.op.options_kind()},
    });
    if !sub.is_empty() {
        r["subResource"] = json!(sub);
        r["requestSubResource"] = json!(sub);
    }
    if let Some(ns) = req.namespace.filter(|_| req.info.namespaced) {
        r["namespace"] = json!(ns);
    } else if is_namespaces(req.info) {
        // Upstream sets a Namespace's own name as the request's namespace.
        r["namespace"] = json!(req.name);
    }
    if req.dry_run {
        r["options"]["dryRun"] = json!(["All"]);
    }
    r
}

impl Api {
    /// Whether `hook` is called for `req` on `obj` / `old`; the resource it is called for.
    async fn should_call<'a>(
        &self,
        hook: &Hook,
        req: &Request<'a>,
        obj: Option<&Value>,
        old: Option<&Value>,
    ) -> Option<&'a ResourceInfo> {
        let matched = matching::matched_resource(hook, req)?;
        if !matching::object_selected(&hook.object_selector, obj, old) {
            return None;
        }
        self.namespace_selected(&hook.namespace_selector, req, obj, old)
            .await
            .then_some(matched)
    }

    /// Whether a `namespaceSelector` selects the request: a Namespace by its own labels,
    /// a namespaced object by its namespace's; cluster-scoped objects always.
    async fn namespace_selected(
        &self,
        sel: &LabelSelector,
        req: &Request<'_>,
        obj: Option<&Value>,
        old: Option<&Value>,
    ) -> bool {
        if sel.is_empty() {
            return true;
        }
        let labels_of = if is_namespaces(req.info) {
            obj.or(old).cloned()
        } else if req.info.namespaced && req.namespace.is_some() {
            self.namespace_object(req).await
        } else {
            return true;
        };
        labels_of.is_some_and(|n| sel.matches(&n))
    }

    /// The Namespace of a namespaced request, if it exists.
    async fn namespace_object(&self, req: &Request<'_>) -> Option<Value> {
        let ns = req.namespace.filter(|_| req.info.namespaced)?;
        let ns_info = resources::lookup("", "v1", "namespaces").expect("served");
        self.get_in(ns_info, None, ns).await.ok()
    }

    /// Builds the AdmissionReview for `hook` and calls it. `Ok(None)`: not called.
    async fn review(
        &self,
        hook: &Hook,
        req: &Request<'_>,
        obj: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<Option<Answer>, ApiError> {
        let Some(matched) = self.should_call(hook, req, obj, old).await else {
            return Ok(None);
        };
        let uid = uuid::Uuid::new_v4().to_string();
        let mut r = admission_request(req, matched, &uid);
        if !hook.match_conditions.is_empty() {
            let b = kcore_schema::Bindings::new()
                .bind("object", obj.unwrap_or(&Value::Null))
                .bind("oldObject", old.unwrap_or(&Value::Null))
                .bind("request", &r);
            match hook.match_conditions.matches(&b, hook.fail_open) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(why) => {
                    tracing::warn!(webhook = %hook.name, error = %why, "failed evaluating match conditions, failing closed");
                    return Err(forbidden(req.info, req.name, &why));
                }
            }
        }
        if req.dry_run && !hook.dry_run_safe {
            return Err(ApiError::bad_request(format!(
                "admission webhook {:?} does not support dry run",
                hook.name
            )));
        }
        r["object"] = json!(obj);
        r["oldObject"] = json!(old);
        let review =
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": r});
        match self.webhooks().call(self, hook, &review, &uid).await {
            Ok(a) if !a.allowed => Err(denied(&hook.name, &a.status)),
            Ok(a) => Ok(Some(a)),
            Err(e) if hook.fail_open => {
                tracing::warn!(webhook = %hook.name, error = %chain(&e), "failed calling webhook, failing open");
                Ok(None)
            }
            Err(e) => Err(internal(format!(
                "failed calling webhook {:?}: {}",
                hook.name,
                chain(&e)
            ))),
        }
    }

    /// Calls a mutating webhook and applies its patch to `obj`.
    async fn mutate_once(
        &self,
        hook: &Hook,
        req: &Request<'_>,
        obj: &mut Option<Value>,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let Some(answer) = self.review(hook, req, obj.as_ref(), old).await? else {
            return Ok(());
        };
        // A patch of a DELETE (no object) has nothing to apply to.
        if let (Some(p), Some(o)) = (answer.patch, obj.as_mut()) {
            let (name, namespace) = (
                o["metadata"]["name"].clone(),
                o["metadata"]["namespace"].clone(),
            );
            json_patch::patch(o, &p).map_err(|e| internal(e.to_string()))?;
            // The object stays where the request put it.
            o["metadata"]["name"] = name;
            match namespace {
                Value::Null => {
                    o["metadata"].as_object_mut().map(|m| m.remove("namespace"));
                }
                ns => o["metadata"]["namespace"] = ns,
            }
        }
        Ok(())
    }

    /// The mutating webhooks, with one reinvocation of `IfNeeded` ones.
    async fn run_mutating(
        &self,
        hooks: &[Arc<Hook>],
        req: &Request<'_>,
        obj: &mut Option<Value>,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let mut after: Vec<(usize, Option<Value>)> = Vec::new();
        for (i, h) in hooks.iter().enumerate() {
            self.mutate_once(h, req, obj, old).await?;
            if h.reinvoke {
                after.push((i, obj.clone()));
            }
        }
        if after.iter().any(|(_, o)| o != obj) {
            for (i, _) in after {
                self.mutate_once(&hooks[i], req, obj, old).await?;
            }
        }
        Ok(())
    }

    /// The validating webhooks, called in parallel; the first denial or failure in
    /// configuration order wins.
    async fn run_validating(
        &self,
        hooks: &[Arc<Hook>],
        req: &Request<'_>,
        obj: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let calls = hooks.iter().map(|h| self.review(h, req, obj, old));
        for r in futures::future::join_all(calls).await {
            r?;
        }
        Ok(())
    }

    /// The admission chain of a create or update: mutating webhooks, then `check` (the
    /// kind's defaults are applied again if a webhook changed the object; `check`
    /// normalizes and validates), then validating webhooks. For `pods/scale`-style
    /// requests the webhooks see the autoscaling/v1 Scale.
    pub(crate) async fn admit(
        &self,
        req: &Request<'_>,
        obj: Value,
        old: Option<&Value>,
        check: impl FnOnce(Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let obj = self.admit_until_quota(req, obj, old, check).await?;
        // ResourceQuota comes last, as in upstream's plugin order.
        quota::admit(self, req, &obj, old).await?;
        Ok(obj)
    }

    async fn admit_until_quota(
        &self,
        req: &Request<'_>,
        obj: Value,
        old: Option<&Value>,
        check: impl FnOnce(Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let create = matches!(req.op, Operation::Create) && req.sub.is_none();
        // LimitRanger first, as in upstream's plugin order.
        let obj = limitrange::admit(self, req, obj).await?;
        let obj =
            crate::auth::admit(self, req.info, req.namespace, create, obj, &user_info()).await?;
        noderestriction::admit(self, req, &obj, old).await?;
        crate::auth::admit_signer_rights(self, req.info, req.sub, old, &obj, &user_info()).await?;
        let obj = priority::admit(self, req, obj).await?;
        if req.info.group == EXEMPT_GROUP {
            return check(obj);
        }
        let wh = self.webhooks();
        let mutating = wh.hooks(self, true).await?;
        let validating = wh.hooks(self, false).await?;
        let policies = policy::bound(self, &wh.policies).await?;
        if mutating.is_empty() && validating.is_empty() && policies.is_empty() {
            // The common case: no copy of the old object, no views.
            let obj = check(obj)?;
            self.pod_security_admit(req, &obj, old).await?;
            return Ok(obj);
        }
        let scale = req.sub == Some(Sub::Scale);
        let view = |o: &Value| {
            if scale {
                scale_of(req.info, o)
            } else {
                o.clone()
            }
        };
        let old_view = old.map(view);
        let mut obj = obj;
        if !mutating.is_empty() {
            if scale {
                let mut o = Some(view(&obj));
                self.run_mutating(&mutating, req, &mut o, old_view.as_ref())
                    .await?;
                obj["spec"]["replicas"] = o.map(|o| o["spec"]["replicas"].clone()).into();
            } else {
                let mut o = Some(obj);
                self.run_mutating(&mutating, req, &mut o, old_view.as_ref())
                    .await?;
                obj = o.unwrap_or_default();
            }
            req.info.strategy.defaults(&mut obj);
        }
        let obj = check(obj)?;
        self.pod_security_admit(req, &obj, old).await?;
        if !validating.is_empty() || !policies.is_empty() {
            let v = view(&obj);
            // Policies first, as upstream's plugin order (ValidatingAdmissionPolicy, then
            // ValidatingAdmissionWebhook).
            self.run_policies(&policies, req, Some(&v), old_view.as_ref())
                .await?;
            self.run_validating(&validating, req, Some(&v), old_view.as_ref())
                .await?;
        }
        Ok(obj)
    }

    /// Pod Security (upstream's `PodSecurity` plugin, the first validating one): a
    /// denial, or warnings and audit annotations for the request.
    async fn pod_security_admit(
        &self,
        req: &Request<'_>,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let user = user_info();
        let ps = podsecurity::Request {
            group: &req.info.group,
            plural: &req.info.plural,
            subresource: req.sub.map(Sub::name),
            namespace: req.namespace,
            name: req.name,
            user: user["username"].as_str().unwrap_or_default(),
        };
        let out = podsecurity::admit(self, self.pod_security(), &ps, obj, old).await?;
        add_warnings_list(out.warnings);
        add_audit_annotations(out.annotations);
        Ok(())
    }

    /// The admission chain of a delete: the webhooks see `oldObject` only.
    pub(crate) async fn admit_delete(
        &self,
        req: &Request<'_>,
        old: &Value,
    ) -> Result<(), ApiError> {
        noderestriction::admit_delete(req, old)?;
        if req.info.group == EXEMPT_GROUP {
            return Ok(());
        }
        let wh = self.webhooks();
        let mutating = wh.hooks(self, true).await?;
        if !mutating.is_empty() {
            self.run_mutating(&mutating, req, &mut None, Some(old))
                .await?;
        }
        let policies = policy::bound(self, &wh.policies).await?;
        if !policies.is_empty() {
            self.run_policies(&policies, req, None, Some(old)).await?;
        }
        let validating = wh.hooks(self, false).await?;
        if !validating.is_empty() {
            self.run_validating(&validating, req, None, Some(old))
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_as_upstream() {
        let e = denied(
            "a.b.c",
            &json!({"message": "no", "code": 403, "reason": "Forbidden"}),
        );
        assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
        assert_eq!(
            e.message,
            "admission webhook \"a.b.c\" denied the request: no"
        );
        let e = denied("a.b.c", &json!({"code": 200}));
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "admission webhook \"a.b.c\" denied the request without explanation"
        );
        let e = denied("a.b.c", &Value::Null);
        assert_eq!(e.code, 400);
    }

    #[test]
    fn urls_split() {
        let Some(Endpoint::Url {
            host,
            port,
            path,
            authority,
            ..
        }) = parse_url("https://127.0.0.1:8443/mutate")
        else {
            panic!("parses")
        };
        assert_eq!(
            (host.as_str(), port, path.as_str(), authority.as_str()),
            ("127.0.0.1", 8443, "/mutate", "127.0.0.1:8443")
        );
        let Some(Endpoint::Url {
            host, port, path, ..
        }) = parse_url("https://[::1]")
        else {
            panic!("parses")
        };
        assert_eq!((host.as_str(), port, path.as_str()), ("::1", 443, "/"));
        assert!(parse_url("http://x/").is_none());
    }

    #[test]
    fn warning_headers_are_quoted() {
        assert_eq!(warning_header("a \"b\""), "299 - \"a \\\"b\\\"\"");
    }
}
