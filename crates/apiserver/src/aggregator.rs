//! API aggregation (kube-aggregator's proxy): a request under `/apis/<group>/<version>`
//! whose APIService (`<version>.<group>`, `apiregistration.k8s.io/v1`) names a Service
//! is sent on to that Service's server, authenticated and authorized here first, as
//! upstream does; the answer goes back as the server gave it. This is how metrics
//! adapters serve `custom.metrics.k8s.io` and `external.metrics.k8s.io` to the
//! HorizontalPodAutoscaler.
//!
//! The Service is resolved to a ready endpoint as webhook Services are, and reached over
//! TLS with the APIService's `caBundle` as the only trust (the server name is
//! `<service>.<namespace>.svc`). The requesting user goes along in upstream's
//! front-proxy headers (`X-Remote-User`, `X-Remote-Group`, `X-Remote-Extra-<key>`).
//! A Service that cannot be reached answers 503 `ServiceUnavailable`.
//!
//! Not done: `insecureSkipTLSVerify` (refused with 503: give the APIService a
//! `caBundle`), a front-proxy client certificate, and the availability controller
//! (service-backed APIServices show no `Available` condition).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::admission::ServiceRequest;
use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::http::AppState;
use crate::registry::apiservice;

/// How long a proxied request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The request headers sent on to the Service.
const FORWARDED: [HeaderName; 2] = [header::ACCEPT, header::CONTENT_TYPE];

/// The APIService that hands `path` to a Service, if one does.
async fn registration(state: &AppState, path: &str) -> Option<Arc<serde_json::Value>> {
    let mut segs = path.trim_matches('/').split('/');
    let (Some("apis"), Some(group), Some(version)) = (segs.next(), segs.next(), segs.next()) else {
        return None;
    };
    let info = crate::resources::lookup(apiservice::GROUP, "v1", "apiservices")?;
    let name = format!("{version}.{group}");
    let all = state.api.cached_objects(info, None).await.ok()?;
    all.into_iter()
        .find(|s| s["metadata"]["name"] == name.as_str() && s["spec"]["service"].is_object())
}

/// Serves `method path` by proxy when an APIService hands its group version to a
/// Service; `None` when the request is served here.
pub(crate) async fn proxy(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    user: &UserInfo,
) -> Option<Response> {
    let svc = registration(state, uri.path()).await?;
    let spec = &svc["spec"];
    let unavailable = |why: String| {
        let e = ApiError::new(
            503,
            "ServiceUnavailable",
            format!("Error trying to reach service: {why}"),
        );
        crate::http::error_response(&e)
    };
    if spec["insecureSkipTLSVerify"].as_bool() == Some(true) {
        return Some(unavailable(
            "insecureSkipTLSVerify is not supported: give the APIService a caBundle".into(),
        ));
    }
    let ca = match base64::engine::general_purpose::STANDARD
        .decode(spec["caBundle"].as_str().unwrap_or_default())
    {
        Ok(ca) => Arc::<[u8]>::from(ca),
        Err(e) => return Some(unavailable(format!("spec.caBundle: {e}"))),
    };
    let mut sent: Vec<(HeaderName, String)> = FORWARDED
        .iter()
        .filter_map(|h| Some((h.clone(), headers.get(h)?.to_str().ok()?.to_owned())))
        .collect();
    sent.push((
        HeaderName::from_static("x-remote-user"),
        user.username.clone(),
    ));
    for g in &user.groups {
        sent.push((HeaderName::from_static("x-remote-group"), g.clone()));
    }
    for (k, values) in &user.extra {
        if let Ok(h) = HeaderName::try_from(format!("x-remote-extra-{k}")) {
            sent.extend(values.iter().map(|v| (h.clone(), v.clone())));
        }
    }
    let s = &spec["service"];
    let req = ServiceRequest {
        service: (
            s["namespace"].as_str().unwrap_or_default(),
            s["name"].as_str().unwrap_or_default(),
            s["port"].as_i64().unwrap_or(443),
        ),
        ca_bundle: ca,
        method,
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: sent,
        body,
    };
    let span = tracing::debug_span!("aggregated", apiservice = %svc["metadata"]["name"], path = %uri.path());
    let answer = tracing::Instrument::instrument(
        state
            .api
            .webhooks()
            .send_to_service(&state.api, req, TIMEOUT),
        span,
    )
    .await;
    Some(match answer {
        Ok((code, content_type, bytes)) => {
            let status = axum::http::StatusCode::from_u16(code)
                .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
            let mut r = (status, bytes).into_response();
            if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                r.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            r
        }
        Err(why) => unavailable(why),
    })
}
