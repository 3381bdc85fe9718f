//! The REST surface: paths, verbs, content negotiation, discovery, watch streaming.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::api::{Api, DeleteOptions, ListOptions, WriteOptions};
use crate::error::ApiError;
use crate::negotiate::{self, Codec};
use crate::patch::PatchType;
use crate::resources::{Registry, Resource, ResourceInfo, Sub};
use crate::table;

/// Largest accepted request body, as upstream.
pub(crate) const MAX_BODY: usize = 3 * 1024 * 1024;

/// Shared state of the HTTP layer.
pub(crate) struct AppState {
    pub api: Api,
    pub tokens: Option<Vec<String>>,
    /// Authentication and authorization of every request (`crate::auth`).
    pub auth: crate::auth::Auth,
    pub metrics: Metrics,
    /// How to reach the nodes' agents over HTTPS (cluster CA, the API server's client
    /// certificate); `None` when the server itself runs without a PKI (plain HTTP).
    pub node_tls: Option<Arc<rustls::ClientConfig>>,
    /// The node agents running in this process: their pods' streams skip the network.
    pub local_nodes: crate::node_client::LocalNodes,
    /// The identity requests to in-process agents carry: the chain of the client
    /// certificate `node_tls` presents (empty without a PKI).
    pub node_identity: kcore_tls::PeerCertificates,
    /// The cluster's PKI, which signs nodes' serving certificates; `None` on plain HTTP.
    pub pki: Option<crate::tls::Pki>,
    /// The audit log, when configured.
    pub audit: Option<Arc<crate::audit::Auditor>>,
}

/// Request counters for /metrics.
#[derive(Default)]
pub(crate) struct Metrics {
    requests: Mutex<HashMap<(String, String, u16), u64>>,
    watchers: AtomicU64,
}

impl Metrics {
    fn record(&self, verb: &str, resource: &str, code: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((verb.to_owned(), resource.to_owned(), code))
            .or_default() += 1;
    }

    fn render(&self) -> String {
        let m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::from(
            "# HELP apiserver_request_total Counter of apiserver requests broken out by verb, resource and HTTP response code.\n# TYPE apiserver_request_total counter\n",
        );
        let mut rows: Vec<_> = m.iter().collect();
        rows.sort();
        for ((verb, res, code), n) in rows {
            out.push_str(&format!(
                "apiserver_request_total{{verb=\"{verb}\",resource=\"{res}\",code=\"{code}\"}} {n}\n"
            ));
        }
        out.push_str(&format!(
            "# HELP apiserver_registered_watchers Number of currently open watches.\n# TYPE apiserver_registered_watchers gauge\napiserver_registered_watchers {}\n",
            self.watchers.load(Ordering::Relaxed)
        ));
        out
    }
}

fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

pub(crate) fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

fn accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}

/// The one place a response body is encoded: `v` in the negotiated codec. An object
/// without a protobuf form (a kind the tables do not know) is written as JSON.
fn respond(codec: Codec, code: u16, v: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match codec {
        Codec::Protobuf => match crate::protobuf::encode(v) {
            Ok(body) => {
                return (
                    status,
                    [(header::CONTENT_TYPE, crate::protobuf::MEDIA_TYPE)],
                    body,
                )
                    .into_response()
            }
            Err(e) => tracing::warn!(error = %e, "answering in JSON: no protobuf form"),
        },
        Codec::Yaml => {
            if let Ok(body) = serde_yaml_ng::to_string(v) {
                return (status, [(header::CONTENT_TYPE, "application/yaml")], body)
                    .into_response();
            }
        }
        Codec::Json | Codec::Table => {}
    }
    json_response(code, v)
}

fn text(code: StatusCode, s: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        s,
    )
        .into_response()
}

struct Params(HashMap<String, String>);

impl Params {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
    fn list_options(&self) -> Result<ListOptions, ApiError> {
        let num = |k: &str| -> Result<Option<u64>, ApiError> {
            self.get(k)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<u64>()
                        .map_err(|_| ApiError::bad_request(format!("invalid {k}: {s:?}")))
                })
                .transpose()
        };
        Ok(ListOptions {
            label_selector: self.get("labelSelector").map(str::to_owned),
            field_selector: self.get("fieldSelector").map(str::to_owned),
            limit: num("limit")?.map(|n| n as usize),
            continue_token: self.get("continue").map(str::to_owned),
            resource_version: self.get("resourceVersion").map(str::to_owned),
            resource_version_match: self.get("resourceVersionMatch").map(str::to_owned),
            allow_watch_bookmarks: self.flag("allowWatchBookmarks"),
            send_initial_events: self.get("sendInitialEvents").map(|s| s == "true"),
            timeout_seconds: num("timeoutSeconds")?,
        })
    }
    fn write_options(&self) -> WriteOptions {
        WriteOptions {
            dry_run: self.get("dryRun") == Some("All"),
            field_manager: self.get("fieldManager").map(str::to_owned),
            force: self.flag("force"),
        }
    }
}

fn protobuf_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(crate::protobuf::MEDIA_TYPE))
}

fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if ct.starts_with("application/vnd.kubernetes.protobuf") {
        crate::protobuf::decode_body(body)
    } else if ct.starts_with("application/yaml") || ct.starts_with("application/x-yaml") {
        serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else if ct.starts_with("application/json") || ct.is_empty() || ct.starts_with("*/*") {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml: {e}"))
        })
    } else {
        Err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, not {ct}")))
    }
}

/// Paths of fields in `raw` that the upstream type does not know (what
/// `fieldValidation=Strict` rejects).
fn unknown_fields(info: &ResourceInfo, raw: &Value) -> Vec<String> {
    fn walk(raw: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
        match (raw, known) {
            (Value::Object(r), Value::Object(k)) => {
                for (key, v) in r {
                    if v.is_null() || key.starts_with('$') {
                        continue;
                    }
                    let p = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match k.get(key) {
                        Some(kv) => walk(v, kv, &p, out),
                        None => out.push(p),
                    }
                }
            }
            (Value::Array(r), Value::Array(k)) => {
                for (i, (rv, kv)) in r.iter().zip(k).enumerate() {
                    walk(rv, kv, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut obj = raw.clone();
    if obj["apiVersion"].is_null() {
        obj["apiVersion"] = json!(info.api_version());
    }
    if obj["kind"].is_null() {
        obj["kind"] = json!(info.kind);
    }
    let Ok(mut known) = (info.normalize)(obj) else {
        return Vec::new();
    };
    // Custom resources: fields their schema lacks are unknown too.
    info.strategy.prune_unknown(&mut known);
    let mut out = Vec::new();
    walk(raw, &known, "", &mut out);
    out
}

fn check_fields(
    params: &Params,
    info: &ResourceInfo,
    raw: &Value,
) -> Result<Vec<String>, ApiError> {
    let mode = params.get("fieldValidation").unwrap_or("Ignore");
    if mode == "Ignore" {
        return Ok(Vec::new());
    }
    let unknown = unknown_fields(info, raw);
    if mode == "Strict" && !unknown.is_empty() {
        let list: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect();
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            list.join(", ")
        )));
    }
    Ok(unknown)
}

fn decode_body_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

fn with_warnings(mut r: Response, unknown: &[String]) -> Response {
    for f in unknown {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"unknown field \\\"{f}\\\"\"")) {
            r.headers_mut().append("warning", v);
        }
    }
    r
}

fn delete_options(
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions {
        grace_period_seconds: params
            .get("gracePeriodSeconds")
            .and_then(|s| s.parse().ok()),
        propagation_policy: params.get("propagationPolicy").map(str::to_owned),
        dry_run: params.get("dryRun") == Some("All"),
        ..Default::default()
    };
    if !body.is_empty() {
        let b = decode_body(headers, body)?;
        if let Some(g) = b["gracePeriodSeconds"].as_i64() {
            o.grace_period_seconds = Some(g);
        }
        if let Some(p) = b["propagationPolicy"].as_str() {
            o.propagation_policy = Some(p.to_owned());
        }
        o.precondition_uid = b["preconditions"]["uid"].as_str().map(str::to_owned);
        o.precondition_resource_version = b["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        if b["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "All"))
        {
            o.dry_run = true;
        }
    }
    if let Some(p) = &o.propagation_policy {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::bad_request(format!(
                "unsupported propagationPolicy {p:?}"
            )));
        }
    }
    Ok(o)
}

/// The `/version` answer: the Kubernetes version kcore implements (kcore-k8s) and the
/// commit, tree state and date of this build (see `build.rs`).
pub(crate) fn version_info() -> Value {
    json!({
        "major": kcore_k8s::MAJOR, "minor": kcore_k8s::MINOR, "gitVersion": kcore_k8s::GIT_VERSION,
        "gitCommit": env!("KCORE_GIT_COMMIT"), "gitTreeState": env!("KCORE_GIT_TREE_STATE"),
        "buildDate": env!("KCORE_BUILD_DATE"), "goVersion": "rust", "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

// ----- routing -----

struct Target {
    info: Resource,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<Sub>,
}

fn parse_target(reg: &Registry, segs: &[&str]) -> Result<Option<Target>, ApiError> {
    // segs: the part after /api/v1 or /apis/<g>/<v>, plus group and version first.
    let (group, version, rest) = (segs[0], segs[1], &segs[2..]);
    let find = |plural: &str| reg.lookup(group, version, plural);
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let sub_of = |info: &ResourceInfo, s: &str| -> Result<Sub, ApiError> {
        info.subresources
            .iter()
            .copied()
            .find(|x| x.name() == s)
            .ok_or_else(not_found)
    };
    let t = match rest {
        [] => return Ok(None),
        ["namespaces", ns, plural] if find(plural).is_some() => Target {
            info: find(plural).ok_or_else(not_found)?,
            namespace: Some((*ns).into()),
            name: None,
            sub: None,
        },
        ["namespaces", ns, plural, name] if find(plural).is_some() => Target {
            info: find(plural).ok_or_else(not_found)?,
            namespace: Some((*ns).into()),
            name: Some((*name).into()),
            sub: None,
        },
        ["namespaces", ns, plural, name, sub] if find(plural).is_some() => {
            let info = find(plural).ok_or_else(not_found)?;
            Target {
                sub: Some(sub_of(&info, sub)?),
                info,
                namespace: Some((*ns).into()),
                name: Some((*name).into()),
            }
        }
        [plural] => Target {
            info: find(plural).ok_or_else(not_found)?,
            namespace: None,
            name: None,
            sub: None,
        },
        [plural, name] => Target {
            info: find(plural).ok_or_else(not_found)?,
            namespace: None,
            name: Some((*name).into()),
            sub: None,
        },
        [plural, name, sub] => {
            let info = find(plural).ok_or_else(not_found)?;
            Target {
                sub: Some(sub_of(&info, sub)?),
                info,
                namespace: None,
                name: Some((*name).into()),
            }
        }
        _ => return Err(not_found()),
    };
    if t.namespace.is_some() && !t.info.namespaced {
        return Err(not_found());
    }
    Ok(Some(t))
}

/// The single entry point for every request.
pub(crate) async fn handle(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
        return text(StatusCode::OK, "ok".into());
    }
    let audit_id = uuid::Uuid::new_v4().to_string();
    let Some(auditor) = state.audit.as_ref() else {
        let resp = match state.auth.check(&state.api, &parts).await {
            Ok(user) => serve_authorized(&state, parts, body, &user).await.0,
            Err(e) => error_response(&e),
        };
        return crate::audit::with_id(resp, &audit_id);
    };
    let user = match state.auth.authenticate(&state.api, &parts).await {
        Ok(u) => u,
        Err(e) => {
            let info = crate::audit::RequestInfo::new(audit_id.clone(), &parts, json!({}));
            auditor.failed_authentication(info, e.code);
            return crate::audit::with_id(error_response(&e), &audit_id);
        }
    };
    let audit = auditor.begin(crate::audit::RequestInfo::new(
        audit_id.clone(),
        &parts,
        user.to_value(),
    ));
    let (resp, mut served) = match state.auth.authorize_request(&state.api, &parts, user).await {
        Ok(user) => {
            let (resp, mut served) = serve_authorized(&state, parts, body, &user).await;
            served.authorized(true, "");
            (resp, served)
        }
        Err(d) => {
            let mut served = Served::default();
            if let Some(reason) = &d.reason {
                served.authorized(false, reason);
            }
            (error_response(&d.error), served)
        }
    };
    let resp = match audit {
        Some(a) => a.finish(resp, std::mem::take(&mut served)).await,
        None => resp,
    };
    crate::audit::with_id(resp, &audit_id)
}

/// What the audit log needs of a served request: its body and audit annotations.
#[derive(Default)]
pub(crate) struct Served {
    pub body: Option<Bytes>,
    pub content_type: Option<String>,
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl Served {
    /// Records the authorization decision as upstream's audit annotations.
    fn authorized(&mut self, allowed: bool, reason: &str) {
        let decision = if allowed { "allow" } else { "forbid" };
        self.annotations
            .insert("authorization.k8s.io/decision".into(), decision.into());
        self.annotations
            .insert("authorization.k8s.io/reason".into(), reason.into());
    }
}

/// Serves an authenticated, authorized request.
/// A request header of kcore's: the wall-clock time, in microseconds since the Unix epoch,
/// after which the server refuses the write (any method but GET, HEAD and OPTIONS)
/// instead of applying it. A leader's fenced client sets it to the end of its lease's
/// validity: a write sent just before the writer (or its server) was frozen, and taken
/// up only after the lease passed to another leader, is refused then, not applied.
/// (A wall-clock jump between sending and serving moves the deadline with it.)
pub const WRITE_DEADLINE_HEADER: &str = "kcore-write-deadline";

/// The 504 of a write whose [`WRITE_DEADLINE_HEADER`] has passed at `now`.
fn past_write_deadline(method: &Method, headers: &HeaderMap, now: SystemTime) -> Option<ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let deadline = headers
        .get(WRITE_DEADLINE_HEADER)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()?;
    let now = u64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_micros()).ok()?;
    (now > deadline).then(|| {
        ApiError::new(
            504,
            "Timeout",
            format!(
                "the write's deadline ({WRITE_DEADLINE_HEADER}) passed {} ms before the server took it up",
                (now - deadline) / 1000
            ),
        )
    })
}

async fn serve_authorized(
    state: &Arc<AppState>,
    parts: axum::http::request::Parts,
    body: Body,
    user: &crate::auth::UserInfo,
) -> (Response, Served) {
    let path = parts.uri.path().to_owned();
    if let Some(sub) = crate::stream_proxy::streaming_subresource(&path) {
        let verb = parts.method.as_str().to_owned();
        let resp = match crate::stream_proxy::serve(state, sub, parts).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        state.metrics.record(&verb, "pods", resp.status().as_u16());
        return (resp, Served::default());
    }
    let too_large = || {
        let e = ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than {MAX_BODY} bytes"),
        );
        error_response(&e)
    };
    // A declared length over the limit is refused before the body is read: a client that
    // sent `Expect: 100-continue` (curl does above 1 MiB) then gets the final 413 instead
    // of a 100 Continue followed by a connection closed under its upload.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return (too_large(), Served::default());
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return (too_large(), Served::default()),
    };
    if let Some(e) = past_write_deadline(&parts.method, &parts.headers, SystemTime::now()) {
        return (error_response(&e), Served::default());
    }
    let mut served = Served {
        body: (!body.is_empty()).then(|| body.clone()),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ..Served::default()
    };
    // API aggregation: a group version an APIService hands to a Service
    if let Some(resp) = crate::aggregator::proxy(
        state,
        &parts.method,
        &parts.uri,
        &parts.headers,
        body.clone(),
        user,
    )
    .await
    {
        state
            .metrics
            .record(parts.method.as_str(), "aggregated", resp.status().as_u16());
        return (resp, served);
    }
    let params = Params(
        Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map(|q| q.0)
            .unwrap_or_default(),
    );
    let method = parts.method.clone();
    let verb = method.as_str().to_owned();
    let (result, scope) = crate::admission::request_scope(
        user.to_value(),
        route(state, &method, &path, &params, &parts.headers, body),
    )
    .await;
    let (mut resp, code, resource) = match result {
        Ok((r, res)) => {
            let c = r.status().as_u16();
            (r, c, res)
        }
        Err(e) => {
            // a Status in what the client accepts (JSON when that is nothing we write)
            let codec = negotiate::output(accept(&parts.headers), true).unwrap_or(Codec::Json);
            (
                respond(codec, e.code, &e.to_status()),
                e.code,
                String::new(),
            )
        }
    };
    state.metrics.record(&verb, &resource, code);
    for w in scope.warnings {
        if let Ok(v) = HeaderValue::from_str(&crate::admission::warning_header(&w)) {
            resp.headers_mut().append("warning", v);
        }
    }
    served.annotations = scope.annotations;
    (resp, served)
}

async fn route(
    state: &Arc<AppState>,
    method: &Method,
    path: &str,
    params: &Params,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(Response, String), ApiError> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let get = method == Method::GET;
    let reg = state.api.registry();
    let static_resp = |v: Value| Ok((json_response(200, &v), String::new()));
    if let Some(r) = crate::auth::serve(&state.auth, &state.api, method, &segs, || {
        decode_body(headers, &body)
    })
    .await
    {
        let (code, v) = r?;
        return Ok((json_response(code, &v), String::new()));
    }
    match segs.as_slice() {
        ["version"] if get => return static_resp(version_info()),
        ["kcore", "v1", "nodecertificates"] if method == Method::POST => {
            let b = decode_body_json(&body)?;
            let out = crate::node_certs::issue(state.pki.as_ref(), &b)?;
            return Ok((json_response(201, &out), String::new()));
        }
        ["metrics"] if get => {
            return Ok((text(StatusCode::OK, state.metrics.render()), String::new()))
        }
        ["api"] | ["apis"] if get && crate::discovery::wants_aggregated(headers) => {
            let reg = state.api.registry();
            let core = segs.len() == 1 && segs[0] == "api";
            let mut doc = crate::discovery::aggregated(reg, core);
            if !core {
                crate::aggregator::add_to_aggregated(state, &mut doc).await;
            }
            let body = serde_json::to_vec(&doc).unwrap_or_default();
            let etag = crate::discovery::etag(&body);
            let unchanged = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == etag);
            let mut r = if unchanged {
                StatusCode::NOT_MODIFIED.into_response()
            } else {
                (StatusCode::OK, body).into_response()
            };
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::discovery::AGGREGATED_CT),
            );
            if let Ok(v) = HeaderValue::from_str(&etag) {
                h.insert(header::ETAG, v);
            }
            return Ok((r, String::new()));
        }
        ["api"] if get => {
            return static_resp(
                json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
            )
        }
        ["apis"] if get => {
            let mut doc = crate::discovery::api_group_list(reg);
            crate::aggregator::add_to_group_list(state, &mut doc).await;
            return static_resp(doc);
        }
        ["openapi", "v2"] if get => {
            let doc = crate::openapi::v2(reg);
            if !crate::openapi::v2_wants_protobuf(accept(headers)) {
                return static_resp(doc);
            }
            let mut r = (
                StatusCode::OK,
                crate::protobuf::openapi_v2::encode_document(&doc),
            )
                .into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::protobuf::openapi_v2::MEDIA_TYPE),
            );
            return Ok((r, String::new()));
        }
        ["openapi", "v3"] if get => return static_resp(crate::openapi::index(reg)),
        ["openapi", "v3", "api", v] if get => {
            if let Some(doc) = crate::openapi::group_version(reg, "", v) {
                return static_resp(doc);
            }
        }
        ["openapi", "v3", "apis", g, v] if get => {
            if let Some(doc) = crate::openapi::group_version(reg, g, v) {
                return static_resp(doc);
            }
        }
        ["api", "v1"] if get => {
            return static_resp(crate::discovery::api_resource_list(reg, "", "v1"))
        }
        ["apis", g] if get && reg.serves_group(g) => {
            return static_resp(crate::discovery::api_group(reg, g))
        }
        ["apis", g] if get => {
            if let Some(doc) = crate::aggregator::group(state, g).await {
                return static_resp(doc);
            }
        }
        ["apis", g, v] if get && reg.serves(g, v) => {
            return static_resp(crate::discovery::api_resource_list(reg, g, v))
        }
        _ => {}
    }
    if let ["apis", crate::registry::metrics::GROUP, "v1beta1", rest @ ..] = segs.as_slice() {
        // read only, never stored: get and list, nothing else
        if !get || params.flag("watch") {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ));
        }
        let r = crate::registry::metrics::serve(state, rest, &params.list_options()?).await;
        let v = r.ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        })??;
        return Ok((json_response(200, &v), "metrics".into()));
    }
    let target = match segs.as_slice() {
        ["api", "v1", rest @ ..] => {
            let mut s = vec!["", "v1"];
            s.extend_from_slice(rest);
            // Legacy POST /api/v1/namespaces/<ns>/bindings.
            if let ["namespaces", ns, "bindings"] = rest {
                if method == Method::POST {
                    let b = decode_body(headers, &body)?;
                    let name = b["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let out = state.api.bind(Some(ns), &name, b).await?;
                    return Ok((json_response(201, &out), "bindings".into()));
                }
            }
            parse_target(reg, &s)?
        }
        ["apis", g, v, rest @ ..] => {
            let mut s = vec![*g, *v];
            s.extend_from_slice(rest);
            parse_target(reg, &s)?
        }
        _ => None,
    };
    let Some(t) = target else {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    let resource = t.info.plural.to_string();
    let resp = serve_resource(state, method, t, params, headers, body).await?;
    Ok((resp, resource))
}

fn output(codec: Codec, params: &Params, info: &ResourceInfo, code: u16, obj: Value) -> Response {
    if codec == Codec::Table && obj["kind"] != "Status" {
        let items = if obj["items"].is_array() {
            obj["items"].as_array().cloned().unwrap_or_default()
        } else {
            vec![obj.clone()]
        };
        let include = params.get("includeObject") != Some("None");
        let t = table::table(
            info,
            &items,
            &obj["metadata"]["resourceVersion"],
            &obj["metadata"]["continue"],
            include,
        );
        return json_response(code, &t);
    }
    respond(codec, code, &obj)
}

async fn serve_resource(
    state: &Arc<AppState>,
    method: &Method,
    t: Target,
    params: &Params,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let api = &state.api;
    let info: &ResourceInfo = &t.info;
    let ns = t.namespace.as_deref();
    let wopts = params.write_options();
    let codec = negotiate::output(accept(headers), info.supports_protobuf())?;
    match (method.clone(), t.name, t.sub) {
        (Method::GET, None, None) if params.flag("watch") => {
            let opts = params.list_options()?;
            let events = api.watch_in(info, ns, &opts).await?;
            let table_mode = codec == Codec::Table;
            let protobuf = codec == Codec::Protobuf;
            let res = t.info.clone();
            let state2 = state.clone();
            state.metrics.watchers.fetch_add(1, Ordering::Relaxed);
            let guard = WatchGuard(state2);
            let stream = events.map(move |ev| {
                let _keep = &guard;
                if protobuf {
                    match crate::protobuf::watch_frame(ev.kind, &ev.object) {
                        Ok(frame) => return Ok::<_, Infallible>(Bytes::from(frame)),
                        Err(e) => tracing::warn!(error = %e, "watch event has no protobuf form"),
                    }
                }
                if !(table_mode && matches!(ev.kind, "ADDED" | "MODIFIED" | "DELETED")) {
                    return Ok::<_, Infallible>(Bytes::from(ev.to_json_line()));
                }
                let mut j = ev.to_json();
                let rv = ev.object["metadata"]["resourceVersion"].clone();
                j["object"] = table::table(&res, &[ev.object], &rv, &Value::Null, true);
                let mut line = serde_json::to_vec(&j).unwrap_or_default();
                line.push(b'\n');
                Ok::<_, Infallible>(Bytes::from(line))
            });
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(if protobuf {
                    crate::protobuf::STREAM_MEDIA_TYPE
                } else {
                    "application/json"
                }),
            );
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, private"),
            );
            Ok(resp)
        }
        (Method::GET, None, None) => {
            let opts = params.list_options()?;
            let list = api.list_in(info, ns, &opts).await?;
            Ok(output(codec, params, info, 200, list))
        }
        (Method::POST, None, None) => {
            let obj = decode_body(headers, &body)?;
            // protobuf bodies are not decoded strictly, as upstream
            let unknown = if protobuf_body(headers) {
                Vec::new()
            } else {
                check_fields(params, info, &obj)?
            };
            let out = api.create_in(info, ns, obj, &wopts).await?;
            Ok(with_warnings(
                output(codec, params, info, 201, out),
                &unknown,
            ))
        }
        (Method::DELETE, None, None) => {
            let lopts = params.list_options()?;
            let dopts = delete_options(params, headers, &body)?;
            let out = api.delete_collection(info, ns, &lopts, &dopts).await?;
            Ok(respond(codec, 200, &out))
        }
        (Method::GET, Some(name), None) => {
            let out = api.get_in(info, ns, &name).await?;
            Ok(output(codec, params, info, 200, out))
        }
        (Method::PUT, Some(name), None) => {
            let obj = decode_body(headers, &body)?;
            // protobuf bodies are not decoded strictly, as upstream
            let unknown = if protobuf_body(headers) {
                Vec::new()
            } else {
                check_fields(params, info, &obj)?
            };
            let out = api.update_in(info, ns, &name, obj, None, &wopts).await?;
            Ok(with_warnings(
                output(codec, params, info, 200, out),
                &unknown,
            ))
        }
        (
            Method::PATCH,
            Some(name),
            sub @ (None | Some(Sub::Status | Sub::Scale | Sub::EphemeralContainers)),
        ) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let pt = PatchType::from_content_type(ct).ok_or_else(|| {
                ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json, not {ct:?}"))
            })?;
            let unknown = match pt {
                PatchType::Json => Vec::new(),
                PatchType::Apply => check_fields(params, info, &crate::patch::parse_apply(&body)?)?,
                _ => check_fields(params, info, &decode_body_json(&body)?)?,
            };
            let existed = pt == PatchType::Apply && api.get_in(info, ns, &name).await.is_ok();
            let out = api
                .patch_in(info, ns, &name, sub, pt, &body, &wopts)
                .await?;
            let code = if pt == PatchType::Apply && !existed {
                201
            } else {
                200
            };
            Ok(with_warnings(
                output(codec, params, info, code, out),
                &unknown,
            ))
        }
        (Method::DELETE, Some(name), None) => {
            let dopts = delete_options(params, headers, &body)?;
            let out = api.delete_in(info, ns, &name, &dopts).await?;
            let code = if out["metadata"]["deletionTimestamp"].is_string()
                && out["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty())
            {
                202
            } else {
                200
            };
            Ok(respond(codec, code, &out))
        }
        (Method::GET, Some(name), Some(Sub::Status | Sub::EphemeralContainers | Sub::Approval)) => {
            Ok(output(
                codec,
                params,
                info,
                200,
                api.get_in(info, ns, &name).await?,
            ))
        }
        (Method::PUT, Some(name), Some(Sub::Status)) => {
            let obj = decode_body(headers, &body)?;
            Ok(respond(
                codec,
                200,
                &api.update_in(info, ns, &name, obj, Some(Sub::Status), &wopts)
                    .await?,
            ))
        }
        (
            Method::PUT,
            Some(name),
            Some(sub @ (Sub::Finalize | Sub::EphemeralContainers | Sub::Approval)),
        ) => {
            let obj = decode_body(headers, &body)?;
            Ok(respond(
                codec,
                200,
                &api.update_in(info, ns, &name, obj, Some(sub), &wopts)
                    .await?,
            ))
        }
        (Method::GET, Some(name), Some(Sub::Scale)) => {
            Ok(respond(codec, 200, &api.get_scale(info, ns, &name).await?))
        }
        (Method::PUT, Some(name), Some(Sub::Scale)) => {
            let obj = decode_body(headers, &body)?;
            Ok(respond(
                codec,
                200,
                &api.update_scale(info, ns, &name, obj, &wopts).await?,
            ))
        }
        (Method::POST, Some(name), Some(Sub::Binding)) => {
            let b = decode_body(headers, &body)?;
            Ok(respond(codec, 201, &api.bind(ns, &name, b).await?))
        }
        (Method::POST, Some(name), Some(Sub::Eviction)) => {
            let b = decode_body(headers, &body)?;
            let dopts = DeleteOptions {
                grace_period_seconds: b["deleteOptions"]["gracePeriodSeconds"].as_i64(),
                ..Default::default()
            };
            let out = api.evict(ns.unwrap_or("default"), &name, &dopts).await?;
            Ok(respond(codec, 201, &out))
        }
        (Method::GET, Some(name), Some(Sub::Log)) => {
            let pod = api.get_in(info, ns, &name).await?;
            proxy_logs(state, &pod, params).await
        }
        _ => Err(ApiError::method_not_allowed(&info.plural)),
    }
}

/// `pods/log`: forwards to the node agent that runs the pod, kubelet-style:
/// `GET https://<node InternalIP>:<status.daemonEndpoints.kubeletEndpoint.Port>/containerLogs/<ns>/<pod>/<container>`
/// (the node's certificate verified against the cluster CA, the API server's client
/// certificate presented) with the validated `PodLogOptions` passed through, streaming
/// the answer back; the container and its status are checked first
/// ([`crate::registry::pod_log`]).
async fn proxy_logs(state: &AppState, pod: &Value, params: &Params) -> Result<Response, ApiError> {
    use crate::registry::pod_log;
    let api = &state.api;
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let opts = pod_log::LogOptions::parse(name, |k| params.get(k))?;
    let container = pod_log::container(pod, opts.container.as_deref())?;
    if pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
        // upstream: a pod not yet on a node has no log stream, 204 No Content
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    pod_log::check_status(pod, &container, opts.previous)?;
    let crate::node_client::NodeEndpoint {
        name: node_name,
        ip,
        port,
    } = crate::node_client::endpoint(api, pod).await?;
    let path = format!(
        "/containerLogs/{ns}/{name}/{container}?{}",
        opts.node_query()
    );
    let resp = crate::node_client::get(state.node_tls.as_ref(), &ip, port, &path)
        .await
        .map_err(|e| {
            // upstream answers a failed proxy to the kubelet with an InternalError (500),
            // which clients do not retry as they do a 503
            ApiError::internal(format!(
                "cannot reach node {node_name} at {ip}:{port}: {}",
                e.chain()
            ))
        })?;
    let status = resp.status();
    if !status.is_success() {
        // the node's error text (a short one) in a Status
        let text = axum::body::to_bytes(Body::new(resp.into_body()), 64 * 1024)
            .await
            .unwrap_or_default();
        return Err(pod_log::node_error(
            status.as_u16(),
            &String::from_utf8_lossy(&text),
            name,
        ));
    }
    let mut out = Response::new(Body::new(resp.into_body()));
    *out.status_mut() = status;
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(out)
}

struct WatchGuard(Arc<AppState>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.metrics.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_write_past_its_deadline_is_refused() {
        let at = UNIX_EPOCH + Duration::from_secs(1_000);
        let mut h = HeaderMap::new();
        // no header: no deadline
        assert!(past_write_deadline(&Method::POST, &h, at).is_none());
        h.insert(
            WRITE_DEADLINE_HEADER,
            HeaderValue::from_static("1000000000"),
        );
        // at the deadline still taken, after it refused
        assert!(past_write_deadline(&Method::POST, &h, at).is_none());
        let late = at + Duration::from_millis(250);
        let e = past_write_deadline(&Method::PUT, &h, late).expect("refused");
        assert_eq!(e.code, 504);
        assert!(e.message.contains("250 ms"), "{}", e.message);
        assert!(past_write_deadline(&Method::DELETE, &h, late).is_some());
        assert!(past_write_deadline(&Method::PATCH, &h, late).is_some());
        // reads are never refused for it
        assert!(past_write_deadline(&Method::GET, &h, late).is_none());
        // a malformed value is ignored
        h.insert(WRITE_DEADLINE_HEADER, HeaderValue::from_static("soon"));
        assert!(past_write_deadline(&Method::POST, &h, late).is_none());
    }
}
