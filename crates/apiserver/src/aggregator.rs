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
//! With `insecureSkipTLSVerify` the Service's certificate is not checked at all, as
//! upstream. Discovery (`/apis`, `/apis/<group>`) lists the groups of service-backed
//! APIServices next to the served ones ([`aggregated_groups`]).
//!
//! [`run_availability`] keeps each service-backed APIService's `Available` condition
//! as upstream's availability controller does.
//!
//! Over HTTPS the aggregator presents the front proxy's client certificate
//! (`front-proxy-client`, signed by the `front-proxy-ca` made with the cluster's PKI),
//! and publishes whom extension servers should trust in the `kube-system` ConfigMap
//! `extension-apiserver-authentication` ([`publish_authentication`]), as upstream.

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

/// The APIServices that hand a group version to a Service.
async fn service_backed(state: &AppState) -> Vec<Arc<serde_json::Value>> {
    let Some(info) = crate::resources::lookup(apiservice::GROUP, "v1", "apiservices") else {
        return Vec::new();
    };
    let all = state
        .api
        .cached_objects(info, None)
        .await
        .unwrap_or_default();
    all.into_iter()
        .filter(|s| s["spec"]["service"].is_object())
        .collect()
}

/// The groups of service-backed APIServices that are not served here, each with its
/// versions, as `/apis` lists them (upstream's aggregator: groups by
/// `groupPriorityMinimum`, highest first, then by name; versions by `versionPriority`,
/// highest first, then by Kubernetes version order, the first one preferred).
pub(crate) async fn aggregated_groups(
    state: &AppState,
    served: impl Fn(&str) -> bool,
) -> Vec<(String, Vec<String>)> {
    group_order(&service_backed(state).await, served)
}

/// [`aggregated_groups`] over a list of APIServices.
fn group_order(
    services: &[Arc<serde_json::Value>],
    served: impl Fn(&str) -> bool,
) -> Vec<(String, Vec<String>)> {
    // group -> (highest group priority, [(version priority, version)])
    let mut groups: std::collections::BTreeMap<String, (i64, Vec<(i64, String)>)> =
        std::collections::BTreeMap::new();
    for s in services {
        let spec = &s["spec"];
        let (Some(g), Some(v)) = (spec["group"].as_str(), spec["version"].as_str()) else {
            continue;
        };
        if g.is_empty() || served(g) {
            continue;
        }
        let e = groups.entry(g.to_owned()).or_insert((0, Vec::new()));
        e.0 = e.0.max(spec["groupPriorityMinimum"].as_i64().unwrap_or(0));
        e.1.push((spec["versionPriority"].as_i64().unwrap_or(0), v.to_owned()));
    }
    let mut out: Vec<(i64, String, Vec<String>)> = groups
        .into_iter()
        .map(|(g, (prio, mut versions))| {
            versions.sort_by(|a, b| {
                b.0.cmp(&a.0).then_with(|| {
                    crate::resources::version_priority(&a.1)
                        .cmp(&crate::resources::version_priority(&b.1))
                })
            });
            (prio, g, versions.into_iter().map(|(_, v)| v).collect())
        })
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    out.into_iter().map(|(_, g, v)| (g, v)).collect()
}

/// An APIGroup of an aggregated group with these versions, the first preferred.
pub(crate) fn api_group(group: &str, versions: &[String]) -> serde_json::Value {
    let versions: Vec<serde_json::Value> = versions
        .iter()
        .map(|v| serde_json::json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    serde_json::json!({"kind": "APIGroup", "apiVersion": "v1", "name": group,
        "versions": versions, "preferredVersion": versions.first()})
}

/// Appends the aggregated groups to the APIGroupList `doc` of `/apis`.
pub(crate) async fn add_to_group_list(state: &AppState, doc: &mut serde_json::Value) {
    let reg = state.api.registry();
    let extra = aggregated_groups(state, |g| reg.serves_group(g)).await;
    if let Some(list) = doc["groups"].as_array_mut() {
        for (g, versions) in extra {
            let mut v = api_group(&g, &versions);
            if let Some(m) = v.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            list.push(v);
        }
    }
}

/// `GET /apis/<group>` of an aggregated group not served here.
pub(crate) async fn group(state: &AppState, group: &str) -> Option<serde_json::Value> {
    let reg = state.api.registry();
    aggregated_groups(state, |g| reg.serves_group(g))
        .await
        .into_iter()
        .find(|(g, _)| g == group)
        .map(|(g, versions)| api_group(&g, &versions))
}

/// The ConfigMap in `kube-system` that tells extension API servers whom to trust.
pub(crate) const AUTHENTICATION_CONFIGMAP: &str = "extension-apiserver-authentication";

/// The data of [`AUTHENTICATION_CONFIGMAP`], as upstream's API server publishes it: the
/// CA of client certificates, and the front proxy's CA, allowed name and headers.
pub(crate) fn authentication_data(client_ca: &str, front_proxy_ca: &str) -> serde_json::Value {
    let list = |v: &[&str]| serde_json::to_string(v).unwrap_or_default();
    serde_json::json!({
        "client-ca-file": client_ca,
        "requestheader-client-ca-file": front_proxy_ca,
        "requestheader-allowed-names": list(&[crate::tls::FRONT_PROXY_CLIENT]),
        "requestheader-username-headers": list(&["X-Remote-User"]),
        "requestheader-group-headers": list(&["X-Remote-Group"]),
        "requestheader-extra-headers-prefix": list(&["X-Remote-Extra-"]),
    })
}

/// Creates or updates [`AUTHENTICATION_CONFIGMAP`] with [`authentication_data`].
pub(crate) async fn publish_authentication(
    api: &crate::api::Api,
    client_ca: &str,
    front_proxy_ca: &str,
) -> Result<(), crate::error::ApiError> {
    let data = authentication_data(client_ca, front_proxy_ca);
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": AUTHENTICATION_CONFIGMAP, "namespace": "kube-system"}, "data": data});
    match api
        .create_value(
            "v1",
            "configmaps",
            Some("kube-system"),
            cm,
            &Default::default(),
        )
        .await
    {
        Err(e) if e.code == 409 => {
            let cur = api
                .get_value(
                    "v1",
                    "configmaps",
                    Some("kube-system"),
                    AUTHENTICATION_CONFIGMAP,
                )
                .await?;
            if cur["data"] != data {
                let patch = serde_json::json!({"data": data});
                api.patch_value(
                    "v1",
                    "configmaps",
                    Some("kube-system"),
                    AUTHENTICATION_CONFIGMAP,
                    crate::patch::PatchType::Merge,
                    patch.to_string().as_bytes(),
                    &Default::default(),
                )
                .await?;
            }
            Ok(())
        }
        r => r.map(|_| ()),
    }
}

/// How long a discovery fetch from an aggregated server may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The identity the API server fetches aggregated discovery as (upstream's
/// `system:kube-aggregator`).
const AGGREGATOR_USER: &str = "system:kube-aggregator";

/// `GET /apis/<group>/<version>` of the server behind the APIService `svc`: its
/// APIResourceList, or why it could not be had.
async fn fetch_resource_list(
    api: &crate::api::Api,
    svc: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let spec = &svc["spec"];
    let ca = base64::engine::general_purpose::STANDARD
        .decode(spec["caBundle"].as_str().unwrap_or_default())
        .map_err(|e| format!("spec.caBundle: {e}"))?;
    let s = &spec["service"];
    let path = format!(
        "/apis/{}/{}",
        spec["group"].as_str().unwrap_or_default(),
        spec["version"].as_str().unwrap_or_default()
    );
    let req = ServiceRequest {
        service: (
            s["namespace"].as_str().unwrap_or_default(),
            s["name"].as_str().unwrap_or_default(),
            s["port"].as_i64().unwrap_or(443),
        ),
        ca_bundle: Arc::from(ca),
        insecure: spec["insecureSkipTLSVerify"].as_bool() == Some(true),
        method: &Method::GET,
        path_and_query: path,
        headers: vec![
            (header::ACCEPT, "application/json".to_owned()),
            (
                HeaderName::from_static("x-remote-user"),
                AGGREGATOR_USER.to_owned(),
            ),
            (
                HeaderName::from_static("x-remote-group"),
                "system:authenticated".to_owned(),
            ),
        ],
        body: Bytes::new(),
    };
    let url = format!(
        "https://{}.{}.svc:{}{}",
        req.service.1, req.service.0, req.service.2, req.path_and_query
    );
    let missing = |why: String| format!("failing or missing response from {url}: {why}");
    let (code, _, bytes) = api
        .webhooks()
        .send_to_service(api, req, DISCOVERY_TIMEOUT)
        .await
        .map_err(missing)?;
    if code != 200 {
        return Err(missing(format!("bad status from {url}: {code}")));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| missing(format!("decoding the APIResourceList: {e}")))
}

/// How often the availability of service-backed APIServices is checked.
pub(crate) const AVAILABILITY_PERIOD: Duration = Duration::from_secs(10);

/// Upstream's `AvailableConditionController`: keeps each service-backed APIService's
/// `Available` condition current, checking every `every` that its Service exists and
/// listens on the port, that it has a ready endpoint, and that the server answers
/// discovery of the group version (reasons `ServiceNotFound`, `ServicePortError`,
/// `EndpointsNotFound`, `MissingEndpoints`, `FailedDiscoveryCheck`, `Passed`).
pub(crate) async fn run_availability(api: crate::api::Api, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        check_availability(&api).await;
    }
}

/// One round of [`run_availability`].
pub(crate) async fn check_availability(api: &crate::api::Api) {
    let Some(info) = crate::resources::lookup(apiservice::GROUP, "v1", "apiservices") else {
        return;
    };
    let Ok(all) = api.cached_objects(info, None).await else {
        return;
    };
    for svc in all.iter().filter(|s| s["spec"]["service"].is_object()) {
        let (ok, reason, message) = availability(api, svc).await;
        let status = if ok { "True" } else { "False" };
        let conds = svc["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let current = conds.iter().find(|c| c["type"] == "Available");
        if current.is_some_and(|c| {
            c["status"] == status && c["reason"] == reason && c["message"] == message.as_str()
        }) {
            continue;
        }
        let transition = match current {
            Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
            _ => serde_json::json!(k8s_openapi::jiff::Timestamp::now().to_string()),
        };
        let mut next: Vec<serde_json::Value> = conds
            .into_iter()
            .filter(|c| c["type"] != "Available")
            .collect();
        next.push(
            serde_json::json!({"type": "Available", "status": status, "reason": reason,
            "message": message, "lastTransitionTime": transition}),
        );
        let mut obj = (**svc).clone();
        obj["status"]["conditions"] = serde_json::json!(next);
        let name = svc["metadata"]["name"].as_str().unwrap_or_default();
        if let Err(e) = api
            .update_in(
                info,
                None,
                name,
                obj,
                Some(crate::resources::Sub::Status),
                &crate::api::WriteOptions::default(),
            )
            .await
        {
            tracing::debug!(apiservice = name, error = %e.message, "updating the Available condition");
        }
    }
}

/// Whether the Service behind `svc` is available: the reason and message of its
/// `Available` condition.
async fn availability(
    api: &crate::api::Api,
    svc: &serde_json::Value,
) -> (bool, &'static str, String) {
    let s = &svc["spec"]["service"];
    let (ns, name) = (
        s["namespace"].as_str().unwrap_or_default(),
        s["name"].as_str().unwrap_or_default(),
    );
    let port = s["port"].as_i64().unwrap_or(443);
    let get = |plural: &'static str| {
        let info = crate::resources::lookup("", "v1", plural).expect("served");
        api.get_in(info, Some(ns), name)
    };
    let service = match get("services").await {
        Ok(v) => v,
        Err(e) if e.code == 404 => {
            return (
                false,
                "ServiceNotFound",
                format!("service/{name} in {ns:?} is not present"),
            )
        }
        Err(e) => return (false, "ServiceAccessError", e.message),
    };
    if service["spec"]["type"] != "ExternalName" {
        let Some(sp) = service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["port"].as_i64() == Some(port))
        else {
            return (
                false,
                "ServicePortError",
                format!("service/{name} in {ns:?} is not listening on port {port}"),
            );
        };
        let port_name = sp["name"].as_str().unwrap_or_default();
        let eps = match get("endpoints").await {
            Ok(v) => v,
            Err(e) if e.code == 404 => {
                return (
                    false,
                    "EndpointsNotFound",
                    format!("cannot find endpoints for service/{name} in {ns:?}"),
                )
            }
            Err(e) => return (false, "EndpointsAccessError", e.message),
        };
        let ready = eps["subsets"].as_array().into_iter().flatten().any(|sub| {
            sub["addresses"].as_array().is_some_and(|a| !a.is_empty())
                && sub["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"].as_str().unwrap_or_default() == port_name)
        });
        if !ready {
            return (
                false,
                "MissingEndpoints",
                format!("endpoints for service/{name} in {ns:?} have no addresses with port name {port_name:?}"),
            );
        }
    }
    match fetch_resource_list(api, svc).await {
        Ok(_) => (true, "Passed", "all checks passed".to_owned()),
        Err(why) => (false, "FailedDiscoveryCheck", why),
    }
}

/// One version of aggregated discovery (`apidiscovery.k8s.io/v2`) from an
/// APIResourceList of `group`/`version`: subresources (`<plural>/<sub>`) under their
/// resource.
pub(crate) fn discovery_version(
    group: &str,
    version: &str,
    list: &serde_json::Value,
) -> serde_json::Value {
    use serde_json::json;
    let entries = list["resources"].as_array().cloned().unwrap_or_default();
    let kind_of = |e: &serde_json::Value| {
        json!({"group": e["group"].as_str().unwrap_or(group),
            "version": e["version"].as_str().unwrap_or(version),
            "kind": e["kind"]})
    };
    let mut out: Vec<serde_json::Value> = Vec::new();
    for e in entries.iter().filter(|e| {
        e["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty() && !n.contains('/'))
    }) {
        let name = e["name"].as_str().unwrap_or_default();
        let mut r = json!({
            "resource": name,
            "responseKind": kind_of(e),
            "scope": if e["namespaced"].as_bool() == Some(true) { "Namespaced" } else { "Cluster" },
            "singularResource": e["singularName"],
            "verbs": e["verbs"],
        });
        for f in ["shortNames", "categories"] {
            if e[f].as_array().is_some_and(|a| !a.is_empty()) {
                r[f] = e[f].clone();
            }
        }
        let subs: Vec<serde_json::Value> = entries
            .iter()
            .filter_map(|s| {
                let (res, sub) = s["name"].as_str()?.split_once('/')?;
                (res == name).then(
                    || json!({"subresource": sub, "responseKind": kind_of(s), "verbs": s["verbs"]}),
                )
            })
            .collect();
        if !subs.is_empty() {
            r["subresources"] = json!(subs);
        }
        out.push(r);
    }
    json!({"version": version, "resources": out, "freshness": "Current"})
}

/// Appends the aggregated groups to the aggregated discovery document `doc` of `/apis`,
/// each version's resources fetched from its server (a version whose server does not
/// answer is left out, as upstream leaves out what it never fetched).
pub(crate) async fn add_to_aggregated(state: &AppState, doc: &mut serde_json::Value) {
    let reg = state.api.registry();
    let services = service_backed(state).await;
    let extra = group_order(&services, |g| reg.serves_group(g));
    let mut items = Vec::new();
    for (g, versions) in extra {
        let mut vs = Vec::new();
        for v in &versions {
            let Some(svc) = services.iter().find(|s| {
                s["spec"]["group"].as_str() == Some(g.as_str())
                    && s["spec"]["version"].as_str() == Some(v.as_str())
            }) else {
                continue;
            };
            match fetch_resource_list(&state.api, svc).await {
                Ok(list) => vs.push(discovery_version(&g, v, &list)),
                Err(why) => tracing::debug!(group = %g, version = %v, %why, "aggregated discovery"),
            }
        }
        if !vs.is_empty() {
            items.push(serde_json::json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": vs}));
        }
    }
    if let Some(list) = doc["items"].as_array_mut() {
        list.extend(items);
    }
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
    let insecure = spec["insecureSkipTLSVerify"].as_bool() == Some(true);
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
        insecure,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(group: &str, version: &str, gp: i64, vp: i64) -> Arc<serde_json::Value> {
        Arc::new(json!({"metadata": {"name": format!("{version}.{group}")},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": gp,
                "versionPriority": vp, "service": {"namespace": "ns", "name": "s"}}}))
    }

    #[test]
    fn aggregated_groups_in_upstream_order() {
        let list = [
            svc("b.example.com", "v1beta1", 100, 10),
            svc("b.example.com", "v1", 100, 15),
            svc("a.example.com", "v1alpha1", 100, 5),
            svc("a.example.com", "v2", 100, 5),
            svc("top.example.com", "v1", 1000, 1),
            svc("apps", "v9", 17000, 1),
        ];
        let got = group_order(&list, |g| g == "apps");
        assert_eq!(
            got,
            vec![
                ("top.example.com".to_owned(), vec!["v1".to_owned()]),
                (
                    "a.example.com".to_owned(),
                    vec!["v2".to_owned(), "v1alpha1".to_owned()]
                ),
                (
                    "b.example.com".to_owned(),
                    vec!["v1".to_owned(), "v1beta1".to_owned()]
                ),
            ]
        );
        let g = api_group("a.example.com", &got[1].1);
        let list = json!({"resources": [
            {"name": "widgets", "singularName": "widget", "namespaced": true, "kind": "Widget",
             "verbs": ["get", "list"], "shortNames": ["wd"]},
            {"name": "widgets/status", "singularName": "", "namespaced": true, "kind": "Widget",
             "verbs": ["get"]},
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics",
             "verbs": ["get"]},
        ]});
        let v = discovery_version("a.example.com", "v2", &list);
        assert_eq!(v["version"], "v2");
        assert_eq!(v["resources"][0]["resource"], "widgets");
        assert_eq!(v["resources"][0]["scope"], "Namespaced");
        assert_eq!(v["resources"][0]["shortNames"][0], "wd");
        assert_eq!(v["resources"][0]["responseKind"]["group"], "a.example.com");
        assert_eq!(
            v["resources"][0]["subresources"][0]["subresource"],
            "status"
        );
        assert_eq!(v["resources"][1]["scope"], "Cluster");
        assert!(v["resources"][1].get("subresources").is_none());
        assert_eq!(g["preferredVersion"]["groupVersion"], "a.example.com/v2");
        assert_eq!(g["versions"][1]["version"], "v1alpha1");
    }
}
