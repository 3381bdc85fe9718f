//! The review APIs and token endpoints: `authentication.k8s.io/v1` SelfSubjectReview
//! (`kubectl auth whoami`) and TokenReview; `authorization.k8s.io/v1`
//! SelfSubjectAccessReview (`kubectl auth can-i`), SubjectAccessReview,
//! LocalSubjectAccessReview and SelfSubjectRulesReview (`kubectl auth can-i --list`);
//! TokenRequest (`POST .../serviceaccounts/<name>/token`, `kubectl create token`); and
//! the service-account issuer's OIDC discovery documents.
//!
//! Reviews are answered, never stored, as upstream.

use std::collections::BTreeMap;

use axum::http::Method;
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::{json, Value};

use super::request::Attributes;
use super::token::ISSUER;
use super::{now_secs, Auth, UserInfo};
use crate::api::Api;
use crate::error::ApiError;
use crate::resources;

const AUTHN: &str = "authentication.k8s.io";
const AUTHZ: &str = "authorization.k8s.io";
const REVIEWS: &[&str] = &[
    "selfsubjectreviews",
    "tokenreviews",
    "selfsubjectaccessreviews",
    "subjectaccessreviews",
    "localsubjectaccessreviews",
    "selfsubjectrulesreviews",
];

/// The user the request runs as (set by the HTTP layer for the admission scope).
fn current_user() -> UserInfo {
    serde_json::from_value(crate::admission::current_user()).unwrap_or_default()
}

fn timestamp(secs: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn review(group: &str, kind: &str, body: &Value, status: Value) -> Value {
    let mut out = json!({"kind": kind, "apiVersion": format!("{group}/v1"),
        "metadata": {"creationTimestamp": null}, "spec": body["spec"].clone(), "status": status});
    if kind == "SelfSubjectReview" {
        out.as_object_mut().map(|o| o.remove("spec"));
        out["metadata"]["creationTimestamp"] = json!(timestamp(now_secs()));
    }
    out
}

fn check_kind(body: &Value, group: &str, kind: &str) -> Result<(), ApiError> {
    let ok_kind = body["kind"].is_null() || body["kind"] == kind;
    let ok_version = body["apiVersion"].is_null() || body["apiVersion"] == format!("{group}/v1");
    if ok_kind && ok_version {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "the body of the request must be a {group}/v1 {kind}, not {}/{}",
            body["apiVersion"].as_str().unwrap_or_default(),
            body["kind"].as_str().unwrap_or_default()
        )))
    }
}

/// Serves the endpoints of this module: `None` when `segs` (the path's segments) is
/// none of them; else the status code and body. `body` decodes the request's body (in
/// its content type: JSON, YAML or protobuf).
pub(crate) async fn serve(
    auth: &Auth,
    api: &Api,
    method: &Method,
    segs: &[&str],
    body: impl FnOnce() -> Result<Value, ApiError>,
) -> Option<Result<(u16, Value), ApiError>> {
    let post = method == Method::POST;
    let parse = body;
    let out = match segs {
        [".well-known", "openid-configuration"] if method == Method::GET => Ok((
            200,
            json!({
                "issuer": ISSUER,
                "jwks_uri": format!("{ISSUER}/openid/v1/jwks"),
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
            }),
        )),
        ["openid", "v1", "jwks"] if method == Method::GET => Ok((200, auth.issuer().jwks())),
        ["apis", AUTHN, "v1", "selfsubjectreviews"] if post => (|| {
            let b = parse()?;
            check_kind(&b, AUTHN, "SelfSubjectReview")?;
            Ok((
                201,
                review(
                    AUTHN,
                    "SelfSubjectReview",
                    &b,
                    json!({"userInfo": current_user().to_value()}),
                ),
            ))
        })(),
        ["apis", AUTHN, "v1", "tokenreviews"] if post => token_review(auth, api, parse()).await,
        ["apis", AUTHZ, "v1", "selfsubjectaccessreviews"] if post => {
            access_review(auth, api, parse(), "SelfSubjectAccessReview", None).await
        }
        ["apis", AUTHZ, "v1", "subjectaccessreviews"] if post => {
            access_review(auth, api, parse(), "SubjectAccessReview", None).await
        }
        ["apis", AUTHZ, "v1", "namespaces", ns, "localsubjectaccessreviews"] if post => {
            access_review(auth, api, parse(), "LocalSubjectAccessReview", Some(ns)).await
        }
        ["apis", AUTHZ, "v1", "selfsubjectrulesreviews"] if post => {
            rules_review(auth, api, parse()).await
        }
        ["api", "v1", "namespaces", ns, "serviceaccounts", name, "token"] if post => {
            token_request(auth, api, ns, name, parse()).await
        }
        // the reviews are only created
        ["apis", AUTHN | AUTHZ, "v1", .., plural] if REVIEWS.contains(plural) => {
            Err(ApiError::method_not_allowed(plural))
        }
        _ => return None,
    };
    Some(out)
}

async fn token_review(
    auth: &Auth,
    api: &Api,
    body: Result<Value, ApiError>,
) -> Result<(u16, Value), ApiError> {
    let b = body?;
    check_kind(&b, AUTHN, "TokenReview")?;
    let token = b["spec"]["token"].as_str().unwrap_or_default();
    let wanted: Vec<String> = b["spec"]["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let audiences = if wanted.is_empty() {
        super::api_audiences()
    } else {
        wanted
    };
    let status = match auth.authenticate_token(api, token, &audiences).await {
        Ok(u) => json!({"authenticated": true, "user": u.to_value(), "audiences": audiences}),
        Err(e) => json!({"user": {}, "error": e}),
    };
    Ok((201, review(AUTHN, "TokenReview", &b, status)))
}

fn attributes_of(spec: &Value) -> Result<Attributes, ApiError> {
    let r = &spec["resourceAttributes"];
    let n = &spec["nonResourceAttributes"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    match (r.is_object(), n.is_object()) {
        (true, false) => Ok(Attributes {
            verb: s(&r["verb"]),
            resource_request: true,
            group: s(&r["group"]),
            resource: s(&r["resource"]),
            subresource: s(&r["subresource"]),
            namespace: s(&r["namespace"]),
            name: s(&r["name"]),
            path: String::new(),
            field_selector: s(&r["fieldSelector"]["rawSelector"]),
        }),
        (false, true) => Ok(Attributes::non_resource(&s(&n["verb"]), &s(&n["path"]))),
        (true, true) => Err(ApiError::invalid(
            AUTHZ,
            "SubjectAccessReview",
            "",
            vec![crate::error::Cause::invalid(
                "spec.nonResourceAttributes",
                n,
                "cannot be specified in combination with resourceAttributes",
            )],
        )),
        (false, false) => Err(ApiError::invalid(
            AUTHZ,
            "SubjectAccessReview",
            "",
            vec![crate::error::Cause::invalid(
                "spec.resourceAttributes",
                &Value::Null,
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )],
        )),
    }
}

async fn access_review(
    auth: &Auth,
    api: &Api,
    body: Result<Value, ApiError>,
    kind: &str,
    namespace: Option<&str>,
) -> Result<(u16, Value), ApiError> {
    let b = body?;
    check_kind(&b, AUTHZ, kind)?;
    let spec = &b["spec"];
    let attrs = attributes_of(spec)?;
    if let Some(ns) = namespace {
        if attrs.namespace != ns {
            return Err(ApiError::invalid(
                AUTHZ,
                kind,
                "",
                vec![crate::error::Cause::invalid(
                    "spec.resourceAttributes.namespace",
                    &json!(attrs.namespace),
                    "must match metadata.namespace",
                )],
            ));
        }
    }
    let user = if kind == "SelfSubjectAccessReview" {
        current_user()
    } else {
        let groups: Vec<String> = spec["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect();
        let extra: BTreeMap<String, Vec<String>> =
            serde_json::from_value(spec["extra"].clone()).unwrap_or_default();
        let name = spec["user"].as_str().unwrap_or_default();
        if name.is_empty() && groups.is_empty() {
            return Err(ApiError::invalid(
                AUTHZ,
                kind,
                "",
                vec![crate::error::Cause::invalid(
                    "spec.user",
                    &Value::Null,
                    "at least one of user or group must be specified",
                )],
            ));
        }
        UserInfo {
            username: name.to_owned(),
            uid: spec["uid"].as_str().unwrap_or_default().to_owned(),
            groups,
            extra,
        }
    };
    let status = match auth.authorize(api, &user, &attrs).await {
        Ok(()) => json!({"allowed": true}),
        Err(reason) if reason.is_empty() => json!({"allowed": false}),
        Err(reason) => json!({"allowed": false, "reason": reason}),
    };
    let mut out = review(AUTHZ, kind, &b, status);
    if let Some(ns) = namespace {
        out["metadata"]["namespace"] = json!(ns);
    }
    Ok((201, out))
}

async fn rules_review(
    auth: &Auth,
    api: &Api,
    body: Result<Value, ApiError>,
) -> Result<(u16, Value), ApiError> {
    let b = body?;
    check_kind(&b, AUTHZ, "SelfSubjectRulesReview")?;
    let ns = b["spec"]["namespace"].as_str().unwrap_or_default();
    let user = current_user();
    let policy = auth.policy(api).await?;
    let (mut rules, mut errors) = policy.rules_for(&user, ns);
    if super::node::identity(&user).is_some() {
        // the Node authorizer's grants depend on the objects asked for (upstream's
        // union of rule resolvers says so first)
        errors.insert(
            0,
            "node authorizer does not support user rule resolution".to_owned(),
        );
    }
    if user.is_master() {
        // the privileged group's own grant, as upstream's rules for system:masters
        rules.push(
            serde_json::from_value(json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}))
                .unwrap_or_default(),
        );
        rules.push(
            serde_json::from_value(json!({"nonResourceURLs": ["*"], "verbs": ["*"]}))
                .unwrap_or_default(),
        );
    }
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in rules {
        let PolicyRule {
            api_groups,
            non_resource_urls,
            resource_names,
            resources,
            verbs,
        } = r;
        if non_resource_urls.as_ref().is_some_and(|u| !u.is_empty()) {
            let v = json!({"verbs": verbs, "nonResourceURLs": non_resource_urls});
            if !non_resource_rules.contains(&v) {
                non_resource_rules.push(v);
            }
        } else {
            let mut v = json!({"verbs": verbs, "apiGroups": api_groups.unwrap_or_default(), "resources": resources.unwrap_or_default()});
            if let Some(n) = resource_names.filter(|n| !n.is_empty()) {
                v["resourceNames"] = json!(n);
            }
            if !resource_rules.contains(&v) {
                resource_rules.push(v);
            }
        }
    }
    let mut status = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": !errors.is_empty()});
    if !errors.is_empty() {
        status["evaluationError"] = json!(errors.join(", "));
    }
    Ok((201, review(AUTHZ, "SelfSubjectRulesReview", &b, status)))
}

/// The user of a verified service-account token's claims: the service account (and any
/// bound object) must still exist with the uids the token names.
pub(crate) async fn service_account_user(api: &Api, claims: &Value) -> Result<UserInfo, String> {
    let k = &claims["kubernetes.io"];
    let ns = k["namespace"].as_str().ok_or("token has no namespace")?;
    let sa_name = k["serviceaccount"]["name"]
        .as_str()
        .ok_or("token has no service account")?;
    let sa_uid = k["serviceaccount"]["uid"].as_str().unwrap_or_default();
    let sas = resources::lookup("", "v1", "serviceaccounts").expect("served");
    let sa = api
        .get_in(sas, Some(ns), sa_name)
        .await
        .map_err(|_| format!("service account {ns}/{sa_name} has been deleted"))?;
    if sa["metadata"]["uid"] != sa_uid {
        return Err(format!(
            "service account UID ({sa_uid}) does not match claim"
        ));
    }
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (kind, plural) in [("pod", "pods"), ("secret", "secrets")] {
        let bound = &k[kind];
        if let Some(name) = bound["name"].as_str() {
            let info = resources::lookup("", "v1", plural).expect("served");
            let obj = api
                .get_in(info, Some(ns), name)
                .await
                .map_err(|_| format!("{kind} {ns}/{name} has been deleted"))?;
            if obj["metadata"]["uid"] != bound["uid"]
                || obj["metadata"]["deletionTimestamp"].is_string()
            {
                return Err(format!(
                    "{kind} {ns}/{name} is not the one the token is bound to"
                ));
            }
            if kind == "pod" {
                extra.insert(
                    "authentication.kubernetes.io/pod-name".into(),
                    vec![name.to_owned()],
                );
                extra.insert(
                    "authentication.kubernetes.io/pod-uid".into(),
                    vec![bound["uid"].as_str().unwrap_or_default().to_owned()],
                );
            }
        }
    }
    if let Some(node) = k["node"]["name"].as_str() {
        extra.insert(
            "authentication.kubernetes.io/node-name".into(),
            vec![node.to_owned()],
        );
    }
    if let Some(jti) = claims["jti"].as_str() {
        extra.insert(
            "authentication.kubernetes.io/credential-id".into(),
            vec![format!("JTI={jti}")],
        );
    }
    Ok(UserInfo {
        username: format!("system:serviceaccount:{ns}:{sa_name}"),
        uid: sa_uid.to_owned(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            super::AUTHENTICATED.into(),
        ],
        extra,
    })
}

/// Upstream's bounds on a requested token lifetime.
const MIN_EXPIRATION: i64 = 600;
const DEFAULT_EXPIRATION: i64 = 3600;

async fn token_request(
    auth: &Auth,
    api: &Api,
    ns: &str,
    name: &str,
    body: Result<Value, ApiError>,
) -> Result<(u16, Value), ApiError> {
    let b = body?;
    check_kind(&b, AUTHN, "TokenRequest")?;
    let sas = resources::lookup("", "v1", "serviceaccounts").expect("served");
    let sa = api.get_in(sas, Some(ns), name).await?;
    crate::admission::noderestriction::admit_token_request(api, &current_user(), ns, name, &b)
        .await?;
    let spec = &b["spec"];
    let expiration = spec["expirationSeconds"]
        .as_i64()
        .unwrap_or(DEFAULT_EXPIRATION);
    let invalid = |field: &str, v: &Value, why: &str| {
        ApiError::invalid(
            AUTHN,
            "TokenRequest",
            name,
            vec![crate::error::Cause::invalid(field, v, why)],
        )
    };
    if expiration < MIN_EXPIRATION {
        return Err(invalid(
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > 1 << 32 {
        return Err(invalid(
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let mut audiences: Vec<String> = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    if audiences.is_empty() {
        audiences = super::api_audiences();
    }
    let now = now_secs();
    let jti = uuid::Uuid::new_v4().to_string();
    let mut k =
        json!({"namespace": ns, "serviceaccount": {"name": name, "uid": sa["metadata"]["uid"]}});
    let mut bound_ref = Value::Null;
    let r = &spec["boundObjectRef"];
    if r.is_object() {
        let kind = r["kind"].as_str().unwrap_or_default();
        let (plural, key, namespaced) = match kind {
            "Pod" => ("pods", "pod", true),
            "Secret" => ("secrets", "secret", true),
            "Node" => ("nodes", "node", false),
            _ => {
                return Err(invalid(
                    "spec.boundObjectRef.kind",
                    &r["kind"],
                    "supported values: \"Pod\", \"Secret\", \"Node\"",
                ))
            }
        };
        let oname = r["name"].as_str().unwrap_or_default();
        let info = resources::lookup("", "v1", plural).expect("served");
        let obj = api.get_in(info, namespaced.then_some(ns), oname).await?;
        let uid = obj["metadata"]["uid"].clone();
        if r["uid"].is_string() && r["uid"] != uid {
            return Err(ApiError::conflict("", plural, oname, &format!(
                "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                r["uid"].as_str().unwrap_or_default())));
        }
        k[key] = json!({"name": oname, "uid": uid});
        if kind == "Pod" {
            if let Some(node) = obj["spec"]["nodeName"].as_str() {
                let nodes = resources::lookup("", "v1", "nodes").expect("served");
                if let Ok(n) = api.get_in(nodes, None, node).await {
                    k["node"] = json!({"name": node, "uid": n["metadata"]["uid"]});
                }
            }
        }
        bound_ref = json!({"kind": kind, "apiVersion": "v1", "name": oname, "uid": uid});
    }
    let claims = json!({
        "aud": audiences, "exp": now + expiration, "iat": now, "nbf": now, "iss": ISSUER, "jti": jti,
        "kubernetes.io": k, "sub": format!("system:serviceaccount:{ns}:{name}"),
    });
    let token = auth
        .issuer()
        .sign(&claims)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut spec_out = json!({"audiences": audiences, "expirationSeconds": expiration});
    if !bound_ref.is_null() {
        spec_out["boundObjectRef"] = bound_ref;
    }
    Ok((
        201,
        json!({
            "kind": "TokenRequest", "apiVersion": format!("{AUTHN}/v1"),
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": timestamp(now)},
            "spec": spec_out,
            "status": {"token": token, "expirationTimestamp": timestamp(now + expiration)},
        }),
    ))
}
