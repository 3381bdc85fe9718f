//! Which webhooks a request calls: upstream's rule matcher (operations, API groups,
//! versions, resources with subresources, scope), `matchPolicy`, `namespaceSelector` and
//! `objectSelector`. Pure functions over a parsed [`Hook`], table-tested.

use serde_json::Value;

use super::{Hook, Operation, Request};
use crate::resources::{ResourceInfo, RESOURCES};
use crate::selectors::LabelSelector;

/// One rule of a webhook (`rules[i]`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rule {
    pub operations: Vec<String>,
    pub groups: Vec<String>,
    pub versions: Vec<String>,
    pub resources: Vec<String>,
    pub scope: String,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

impl Rule {
    pub(crate) fn parse(r: &Value) -> Self {
        Self {
            operations: strings(&r["operations"]),
            groups: strings(&r["apiGroups"]),
            versions: strings(&r["apiVersions"]),
            resources: strings(&r["resources"]),
            scope: r["scope"].as_str().unwrap_or("*").to_owned(),
        }
    }

    /// Whether the rule covers `op` on `group/version/resource[/sub]` in the given scope.
    /// `namespaced` is whether the request is for an object in a namespace (a Namespace
    /// object itself is cluster-scoped).
    pub(crate) fn matches(
        &self,
        op: Operation,
        (group, version, resource): (&str, &str, &str),
        sub: &str,
        namespaced: bool,
    ) -> bool {
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        any(&self.operations, op.as_str())
            && any(&self.groups, group)
            && any(&self.versions, version)
            && self
                .resources
                .iter()
                .any(|r| resource_matches(r, resource, sub))
            && match self.scope.as_str() {
                "Cluster" => !namespaced,
                "Namespaced" => namespaced,
                _ => true,
            }
    }
}

/// Upstream's resource match: `*` is every resource without a subresource, `*/*` every
/// resource and subresource, `x/*` x and all its subresources, `*/s` subresource s of
/// any resource.
fn resource_matches(rule: &str, resource: &str, sub: &str) -> bool {
    let (r, s) = rule.split_once('/').unwrap_or((rule, ""));
    (r == "*" || r == resource) && (s == "*" || s == sub)
}

/// The resource a matching webhook is called for: the request's own, or with
/// `matchPolicy: Equivalent` a resource served from the same storage in another group
/// or version (the request's kind and resource then stay in `requestKind` and
/// `requestResource`, as upstream).
pub(crate) fn matched_resource<'a>(hook: &Hook, req: &Request<'a>) -> Option<&'a ResourceInfo> {
    let sub = req.sub.map_or("", |s| s.name());
    let namespaced = req.info.namespaced && req.namespace.is_some();
    matched_with(req, hook.equivalent, |i| {
        hook.rules
            .iter()
            .any(|r| r.matches(req.op, (&i.group, &i.version, &i.plural), sub, namespaced))
    })
}

/// The resource `hit` accepts for `req`: the request's own, or with `equivalent` one
/// served from the same storage in another group or version.
pub(crate) fn matched_with<'a>(
    req: &Request<'a>,
    equivalent: bool,
    hit: impl Fn(&ResourceInfo) -> bool,
) -> Option<&'a ResourceInfo> {
    let info = req.info;
    if hit(info) {
        return Some(info);
    }
    if !equivalent {
        return None;
    }
    let prefix = info.prefix(None);
    RESOURCES
        .iter()
        .filter(|r| !std::ptr::eq(*r, info) && r.prefix(None) == prefix)
        .find(|r| hit(r))
}

/// `objectSelector`: matches the new or the old object's labels; empty matches all.
pub(crate) fn object_selected(
    sel: &LabelSelector,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> bool {
    sel.is_empty() || obj.is_some_and(|o| sel.matches(o)) || old.is_some_and(|o| sel.matches(o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resource_wildcards_as_upstream() {
        let table = [
            ("*", "pods", "", true),
            ("*", "pods", "status", false),
            ("*/*", "pods", "", true),
            ("*/*", "pods", "status", true),
            ("pods", "pods", "", true),
            ("pods", "pods", "status", false),
            ("pods/*", "pods", "status", true),
            ("pods/*", "pods", "", true),
            ("*/status", "deployments", "status", true),
            ("*/status", "deployments", "scale", false),
            ("deployments/scale", "deployments", "scale", true),
            ("configmaps", "secrets", "", false),
        ];
        for (rule, res, sub, want) in table {
            assert_eq!(
                resource_matches(rule, res, sub),
                want,
                "{rule} vs {res}/{sub}"
            );
        }
    }

    #[test]
    fn rules_match_operations_groups_versions_and_scope() {
        let r = Rule::parse(
            &json!({"operations": ["CREATE", "UPDATE"], "apiGroups": ["apps"],
            "apiVersions": ["v1"], "resources": ["deployments"], "scope": "Namespaced"}),
        );
        let d = ("apps", "v1", "deployments");
        assert!(r.matches(Operation::Create, d, "", true));
        assert!(r.matches(Operation::Update, d, "", true));
        assert!(!r.matches(Operation::Delete, d, "", true));
        assert!(!r.matches(Operation::Create, d, "", false));
        assert!(!r.matches(Operation::Create, ("", "v1", "deployments"), "", true));
        assert!(!r.matches(
            Operation::Create,
            ("apps", "v1beta1", "deployments"),
            "",
            true
        ));
        let all = Rule::parse(&json!({"operations": ["*"], "apiGroups": ["*"],
            "apiVersions": ["*"], "resources": ["*"], "scope": "Cluster"}));
        assert!(all.matches(Operation::Connect, ("", "v1", "nodes"), "", false));
        assert!(!all.matches(Operation::Create, ("", "v1", "pods"), "", true));
    }

    #[test]
    fn object_selector_looks_at_new_and_old() {
        let sel = LabelSelector::from_object(&json!({"matchLabels": {"a": "b"}})).unwrap();
        let yes = json!({"metadata": {"labels": {"a": "b"}}});
        let no = json!({"metadata": {}});
        assert!(object_selected(&sel, Some(&yes), None));
        assert!(object_selected(&sel, Some(&no), Some(&yes)));
        assert!(object_selected(&sel, None, Some(&yes)));
        assert!(!object_selected(&sel, Some(&no), None));
        let empty = LabelSelector::from_object(&json!({})).unwrap();
        assert!(object_selected(&empty, Some(&no), None));
    }
}
