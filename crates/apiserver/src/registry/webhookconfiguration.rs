//! What Mutating- and ValidatingWebhookConfigurations (admissionregistration.k8s.io/v1)
//! share: defaults, upstream's validation of the webhooks they list, and the Table columns
//! `NAME WEBHOOKS AGE`. Each kind's file declares its resource with a
//! [`WebhookConfigStrategy`]; the admission chain that calls the webhooks is
//! `crate::admission`.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::selectors::LabelSelector;
use crate::table::{age, col};

/// The strategy of both webhook configuration kinds; `mutating` adds
/// `reinvocationPolicy`.
pub(crate) struct WebhookConfigStrategy {
    pub kind: &'static str,
    pub mutating: bool,
}

const OPERATIONS: &[&str] = &["*", "CREATE", "UPDATE", "DELETE", "CONNECT"];
const SCOPES: &[&str] = &["*", "Cluster", "Namespaced"];
const SIDE_EFFECTS: &[&str] = &["None", "NoneOnDryRun"];
const FAILURE_POLICIES: &[&str] = &["Fail", "Ignore"];
const MATCH_POLICIES: &[&str] = &["Equivalent", "Exact"];
const REINVOCATION_POLICIES: &[&str] = &["Never", "IfNeeded"];

/// The AdmissionReview versions kcore speaks.
const REVIEW_VERSIONS: &[&str] = &["v1"];

fn set_default(obj: &mut Value, field: &str, v: Value) {
    if obj[field].is_null() {
        obj[field] = v;
    }
}

impl WebhookConfigStrategy {
    fn validate_webhook(&self, w: &Value, path: &str, causes: &mut Vec<Cause>) {
        match w["name"].as_str() {
            None | Some("") => causes.push(Cause::required(format!("{path}.name"))),
            Some(n) if !is_fully_qualified(n) => causes.push(Cause::invalid(
                format!("{path}.name"),
                &w["name"],
                "should be a domain with at least three segments separated by dots",
            )),
            Some(_) => {}
        }
        for (i, r) in w["rules"].as_array().into_iter().flatten().enumerate() {
            validate_rule(r, &format!("{path}.rules[{i}]"), causes);
        }
        let one_of = |field: &str, allowed: &[&str], causes: &mut Vec<Cause>| {
            let v = &w[field];
            if !v.is_null() && !v.as_str().is_some_and(|s| allowed.contains(&s)) {
                causes.push(Cause::not_supported(format!("{path}.{field}"), v, allowed));
            }
        };
        one_of("failurePolicy", FAILURE_POLICIES, causes);
        one_of("matchPolicy", MATCH_POLICIES, causes);
        if self.mutating {
            one_of("reinvocationPolicy", REINVOCATION_POLICIES, causes);
        }
        match &w["sideEffects"] {
            Value::Null => causes.push(Cause {
                reason: "FieldValueRequired",
                field: format!("{path}.sideEffects"),
                message: format!(
                    "Required value: must specify one of {}",
                    SIDE_EFFECTS.join(", ")
                ),
            }),
            _ => one_of("sideEffects", SIDE_EFFECTS, causes),
        }
        if let Some(t) = w["timeoutSeconds"].as_i64() {
            if !(1..=30).contains(&t) {
                causes.push(Cause::invalid(
                    format!("{path}.timeoutSeconds"),
                    &w["timeoutSeconds"],
                    "the timeout value must be between 1 and 30 seconds",
                ));
            }
        }
        let versions: Vec<&str> = w["admissionReviewVersions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let vpath = format!("{path}.admissionReviewVersions");
        if versions.is_empty() {
            causes.push(Cause {
                reason: "FieldValueRequired",
                field: vpath,
                message: format!(
                    "Required value: must specify one of {}",
                    REVIEW_VERSIONS.join(", ")
                ),
            });
        } else if !versions.iter().any(|v| REVIEW_VERSIONS.contains(v)) {
            causes.push(Cause::invalid(
                vpath,
                &w["admissionReviewVersions"],
                &format!(
                    "must include at least one of {}",
                    REVIEW_VERSIONS.join(", ")
                ),
            ));
        }
        for sel in ["namespaceSelector", "objectSelector"] {
            if !w[sel].is_null() {
                if let Err(e) = LabelSelector::from_object(&w[sel]) {
                    causes.push(Cause::invalid(format!("{path}.{sel}"), &w[sel], &e));
                }
            }
        }
        validate_client_config(&w["clientConfig"], &format!("{path}.clientConfig"), causes);
        crate::admission::conditions::validate_match_conditions(
            &w["matchConditions"],
            &format!("{path}.matchConditions"),
            crate::admission::conditions::WEBHOOK_VARIABLES,
            causes,
        );
    }
}

/// Upstream's `IsFullyQualifiedName`: a DNS subdomain with at least three segments.
fn is_fully_qualified(n: &str) -> bool {
    crate::validate::is_dns1123_subdomain(n) && n.split('.').count() >= 3
}

fn validate_client_config(c: &Value, path: &str, causes: &mut Vec<Cause>) {
    match (c["url"].as_str(), c["service"].is_object()) {
        (Some(url), false) => {
            for why in url_problems(url) {
                causes.push(Cause::invalid(format!("{path}.url"), &c["url"], why));
            }
        }
        (None, true) => {
            let s = &c["service"];
            let sp = format!("{path}.service");
            for f in ["name", "namespace"] {
                if s[f].as_str().is_none_or(str::is_empty) {
                    causes.push(Cause::required(format!("{sp}.{f}")));
                }
            }
            if let Some(p) = s["path"].as_str() {
                if !p.starts_with('/') {
                    causes.push(Cause::invalid(
                        format!("{sp}.path"),
                        &s["path"],
                        "must start with a '/'",
                    ));
                }
            }
            if let Some(port) = s["port"].as_i64() {
                if !(1..=65535).contains(&port) {
                    causes.push(Cause::invalid(
                        format!("{sp}.port"),
                        &s["port"],
                        "port is not valid: must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
        _ => causes.push(Cause {
            reason: "FieldValueRequired",
            field: path.to_owned(),
            message: "Required value: exactly one of url or service is required".into(),
        }),
    }
}

/// What upstream's `ValidateWebhookURL` rejects in a webhook URL.
pub(crate) fn url_problems(url: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    if scheme != "https" {
        out.push("'https' is the only allowed URL scheme");
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        out.push("user information is not permitted in the URL");
    }
    if authority.rsplit('@').next().unwrap_or_default().is_empty() {
        out.push("host must be specified");
    }
    if fragment.is_some() {
        out.push("fragments are not permitted in the URL");
    }
    if query.is_some() {
        out.push("query parameters are not permitted in the URL");
    }
    out
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Upstream's `validateRule` (a `RuleWithOperations`), shared with the admission policies'
/// resource rules.
pub(crate) fn validate_rule(r: &Value, path: &str, causes: &mut Vec<Cause>) {
    for (field, what) in [
        ("operations", "operations"),
        ("apiGroups", "API groups"),
        ("apiVersions", "API versions"),
    ] {
        let items = strings(&r[field]);
        let fp = format!("{path}.{field}");
        if items.is_empty() {
            causes.push(Cause::required(fp));
            continue;
        }
        if items.len() > 1 && items.contains(&"*") {
            causes.push(Cause::invalid(
                fp.clone(),
                &r[field],
                &format!("if '*' is present, must not specify other {what}"),
            ));
        }
        for (i, s) in items.iter().enumerate() {
            if field == "operations" && !OPERATIONS.contains(s) {
                causes.push(Cause::not_supported(
                    format!("{fp}[{i}]"),
                    &json!(s),
                    OPERATIONS,
                ));
            }
            if field == "apiVersions" && s.is_empty() {
                causes.push(Cause::required(format!("{fp}[{i}]")));
            }
        }
    }
    let resources = strings(&r["resources"]);
    let rp = format!("{path}.resources");
    if resources.is_empty() {
        causes.push(Cause::required(rp.clone()));
    }
    let has = |s: &str| resources.contains(&s);
    for (i, res) in resources.iter().enumerate() {
        let fp = format!("{rp}[{i}]");
        if res.is_empty() {
            causes.push(Cause::required(fp));
            continue;
        }
        let (main, sub) = match res.split_once('/') {
            Some((m, s)) => (m, Some(s)),
            None => (*res, None),
        };
        let why = if has("*/*") && resources.len() > 1 {
            Some("if '*/*' is present, must not specify other resources")
        } else if sub.is_none() && main != "*" && has("*") {
            Some("if '*' is present, must not specify other resources without subresources")
        } else if sub.is_some_and(|s| s != "*") && has(&format!("{main}/*")) {
            Some("if '<resource>/*' is present, must not specify <resource>/<subresource>")
        } else {
            None
        };
        if let Some(why) = why {
            causes.push(Cause::invalid(fp, &json!(res), why));
        }
    }
    if let Some(s) = r["scope"].as_str() {
        if !SCOPES.contains(&s) {
            causes.push(Cause::not_supported(
                format!("{path}.scope"),
                &r["scope"],
                SCOPES,
            ));
        }
    }
}

impl Strategy for WebhookConfigStrategy {
    fn kind(&self) -> &'static str {
        self.kind
    }

    /// Upstream's `SetDefaults_*Webhook`, `SetDefaults_Rule` and
    /// `SetDefaults_ServiceReference`.
    fn defaults(&self, obj: &mut Value) {
        let Some(hooks) = obj["webhooks"].as_array_mut() else {
            return;
        };
        for w in hooks {
            set_default(w, "failurePolicy", json!("Fail"));
            set_default(w, "matchPolicy", json!("Equivalent"));
            set_default(w, "namespaceSelector", json!({}));
            set_default(w, "objectSelector", json!({}));
            set_default(w, "timeoutSeconds", json!(10));
            if self.mutating {
                set_default(w, "reinvocationPolicy", json!("Never"));
            }
            for r in w["rules"].as_array_mut().into_iter().flatten() {
                set_default(r, "scope", json!("*"));
            }
            if w["clientConfig"]["service"].is_object() {
                set_default(&mut w["clientConfig"]["service"], "port", json!(443));
            }
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let mut seen = std::collections::HashSet::new();
        for (i, w) in obj["webhooks"].as_array().into_iter().flatten().enumerate() {
            let path = format!("webhooks[{i}]");
            if let Some(n) = w["name"].as_str().filter(|n| !n.is_empty()) {
                if !seen.insert(n) {
                    causes.push(Cause {
                        reason: "FieldValueDuplicate",
                        field: format!("{path}.name"),
                        message: format!("Duplicate value: {:?}", n),
                    });
                }
            }
            self.validate_webhook(w, &path, causes);
        }
    }

    fn spec_of(&self, obj: &Value) -> Value {
        obj["webhooks"].clone()
    }

    /// The admission chain reads configurations from the watch cache: a write returns
    /// once the next request sees it.
    fn settle_in_cache(&self) -> bool {
        true
    }

    fn table_columns(&self) -> Vec<Value> {
        vec![
            col("Name", "string", 0),
            col("Webhooks", "integer", 0),
            col("Age", "string", 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        vec![
            json!(o["metadata"]["name"]),
            json!(o["webhooks"].as_array().map_or(0, Vec::len)),
            json!(age(&o["metadata"]["creationTimestamp"])),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(extra: Value) -> Value {
        let mut w = json!({"name": "a.example.com", "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": "https://127.0.0.1:8443/m"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["configmaps"]}]});
        for (k, v) in extra.as_object().unwrap() {
            w[k] = v.clone();
        }
        w
    }

    fn check(mutating: bool, hooks: Vec<Value>) -> Vec<String> {
        let s = WebhookConfigStrategy {
            kind: "MutatingWebhookConfiguration",
            mutating,
        };
        let mut obj = json!({"metadata": {"name": "x"}, "webhooks": hooks});
        s.defaults(&mut obj);
        let mut causes = Vec::new();
        s.validate(&obj, &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_are_upstreams() {
        let s = WebhookConfigStrategy {
            kind: "MutatingWebhookConfiguration",
            mutating: true,
        };
        let mut obj = json!({"webhooks": [hook(json!({"clientConfig": {"service":
            {"name": "s", "namespace": "n"}}}))]});
        s.defaults(&mut obj);
        let w = &obj["webhooks"][0];
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(w["matchPolicy"], "Equivalent");
        assert_eq!(w["reinvocationPolicy"], "Never");
        assert_eq!(w["timeoutSeconds"], 10);
        assert_eq!(w["namespaceSelector"], json!({}));
        assert_eq!(w["objectSelector"], json!({}));
        assert_eq!(w["rules"][0]["scope"], "*");
        assert_eq!(w["clientConfig"]["service"]["port"], 443);
    }

    #[test]
    fn validation_cases() {
        assert!(check(true, vec![hook(json!({}))]).is_empty());
        let table: &[(Value, &str)] = &[
            (
                json!({"name": "short.name"}),
                "webhooks[0].name: Invalid value",
            ),
            (
                json!({"sideEffects": null}),
                "webhooks[0].sideEffects: Required value",
            ),
            (
                json!({"sideEffects": "Some"}),
                "webhooks[0].sideEffects: Unsupported value",
            ),
            (
                json!({"admissionReviewVersions": ["v1beta1"]}),
                "must include at least one of v1",
            ),
            (json!({"timeoutSeconds": 31}), "between 1 and 30 seconds"),
            (json!({"timeoutSeconds": 0}), "between 1 and 30 seconds"),
            (
                json!({"clientConfig": {}}),
                "exactly one of url or service is required",
            ),
            (
                json!({"clientConfig": {"url": "https://a/b", "service": {"name": "s", "namespace": "n"}}}),
                "exactly one of url or service",
            ),
            (
                json!({"clientConfig": {"url": "http://a/b"}}),
                "'https' is the only allowed URL scheme",
            ),
            (
                json!({"clientConfig": {"url": "https://a/b#f"}}),
                "fragments are not permitted",
            ),
            (
                json!({"clientConfig": {"url": "https://a/b?q=1"}}),
                "query parameters are not permitted",
            ),
            (
                json!({"clientConfig": {"url": "https://u:p@a/b"}}),
                "user information is not permitted",
            ),
            (
                json!({"clientConfig": {"service": {"name": "s", "namespace": "n", "path": "x"}}}),
                "must start with a '/'",
            ),
            (
                json!({"failurePolicy": "Maybe"}),
                "webhooks[0].failurePolicy: Unsupported value",
            ),
            (
                json!({"matchPolicy": "Fuzzy"}),
                "webhooks[0].matchPolicy: Unsupported value",
            ),
            (
                json!({"reinvocationPolicy": "Always"}),
                "webhooks[0].reinvocationPolicy: Unsupported value",
            ),
            (
                json!({"rules": [{"operations": ["CREATE", "*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}),
                "if '*' is present, must not specify other operations",
            ),
            (
                json!({"rules": [{"operations": ["PATCH"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}),
                "webhooks[0].rules[0].operations[0]: Unsupported value",
            ),
            (
                json!({"rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["*", "pods"]}]}),
                "must not specify other resources without subresources",
            ),
            (
                json!({"rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Everywhere"}]}),
                "webhooks[0].rules[0].scope: Unsupported value",
            ),
            (
                json!({"rules": [{"operations": ["CREATE"], "apiGroups": [], "apiVersions": ["v1"], "resources": ["pods"]}]}),
                "webhooks[0].rules[0].apiGroups: Required value",
            ),
            (
                json!({"objectSelector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}}),
                "webhooks[0].objectSelector: Invalid value",
            ),
        ];
        for (extra, want) in table {
            let got = check(true, vec![hook(extra.clone())]);
            assert!(
                got.iter().any(|g| g.contains(want)),
                "{extra}: want {want:?} in {got:?}"
            );
        }
        // Names are unique within a configuration.
        let got = check(false, vec![hook(json!({})), hook(json!({}))]);
        assert_eq!(
            got,
            vec!["webhooks[1].name: Duplicate value: \"a.example.com\""]
        );
        // reinvocationPolicy is not a field of validating webhooks.
        assert!(check(false, vec![hook(json!({"reinvocationPolicy": "Always"}))]).is_empty());
        // Subresource wildcards are allowed.
        let sub = json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"],
            "resources": ["*/status", "deployments/scale"], "scope": "Namespaced"}]});
        assert!(check(true, vec![hook(sub)]).is_empty());
    }
}
