//! What a request asks to do, as the authorizer sees it (upstream's `RequestInfo`): a
//! verb on a resource (group, resource, subresource, namespace, name) or on a
//! non-resource path.

/// The attributes of one request that authorization decides on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`
    /// for resources; the lower-cased HTTP method for other paths.
    pub verb: String,
    /// Whether this is a request on a resource (else on [`Attributes::path`]).
    pub resource_request: bool,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The request path (non-resource requests).
    pub path: String,
    /// The decoded `fieldSelector` of a list or watch (`spec.nodeName=n1,...`).
    pub field_selector: String,
}

impl Attributes {
    /// A resource request.
    pub(crate) fn resource(verb: &str, group: &str, resource: &str, namespace: &str) -> Self {
        Self {
            verb: verb.into(),
            resource_request: true,
            group: group.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            ..Self::default()
        }
    }

    /// A request on a path that is no resource.
    pub(crate) fn non_resource(verb: &str, path: &str) -> Self {
        Self {
            verb: verb.into(),
            path: path.into(),
            ..Self::default()
        }
    }

    /// The value an `=`/`==` requirement of the field selector gives `field`.
    pub(crate) fn field_selector_equals(&self, field: &str) -> Option<&str> {
        self.field_selector.split(',').find_map(|req| {
            let (k, v) = req.split_once("==").or_else(|| req.split_once('='))?;
            (k.trim() == field && !k.ends_with('!')).then(|| v.trim())
        })
    }

    /// `resource/subresource`, or the resource alone.
    pub(crate) fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// Subresources of a namespace that stay on the namespace itself.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// The attributes of a request: its method, path, `watch` and a `metadata.name=`
/// `fieldSelector`.
pub(crate) fn of_parts(parts: &axum::http::request::Parts) -> Attributes {
    let query = parts.uri.query().unwrap_or_default();
    let param = |k: &str| {
        query.split('&').find_map(|kv| {
            let (key, v) = kv.split_once('=')?;
            (key == k).then(|| v.to_owned())
        })
    };
    let fields = param("fieldSelector")
        .map(|f| {
            f.replace("%3D", "=")
                .replace("%3d", "=")
                .replace("%2C", ",")
                .replace("%2c", ",")
                .replace("%21", "!")
        })
        .unwrap_or_default();
    let mut attrs = attributes(
        parts.method.as_str(),
        parts.uri.path(),
        matches!(param("watch").as_deref(), Some("true" | "1")),
        fields.strip_prefix("metadata.name="),
    );
    attrs.field_selector = fields;
    attrs
}

/// The attributes of `method path?query` (`field_name`: a `metadata.name=` field selector
/// of a list or watch, which names the object as upstream does).
pub(crate) fn attributes(
    method: &str,
    path: &str,
    watch_param: bool,
    field_name: Option<&str>,
) -> Attributes {
    let lower = method.to_ascii_lowercase();
    let non_resource = || Attributes::non_resource(&lower, path);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", g, _version, rest @ ..] if !rest.is_empty() => (*g, rest),
        _ => return non_resource(),
    };
    let mut verb = match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
    .to_owned();
    let mut parts: &[&str] = rest;
    // the deprecated /watch/ prefix
    if parts.first() == Some(&"watch") && verb == "get" {
        verb = "watch".into();
        parts = &parts[1..];
    }
    let mut a = Attributes {
        resource_request: true,
        group: group.to_owned(),
        path: path.to_owned(),
        ..Attributes::default()
    };
    if parts.first() == Some(&"namespaces") {
        if let Some(ns) = parts.get(1) {
            a.namespace = (*ns).to_owned();
            if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
                parts = &parts[2..];
            }
        }
    }
    match parts {
        [r, n, s, ..] => {
            a.resource = (*r).into();
            a.name = (*n).into();
            a.subresource = (*s).into();
        }
        [r, n] => {
            a.resource = (*r).into();
            a.name = (*n).into();
        }
        [r] => a.resource = (*r).into(),
        [] => return non_resource(),
    }
    if a.name.is_empty() {
        match verb.as_str() {
            "get" if watch_param => verb = "watch".into(),
            "get" => verb = "list".into(),
            "delete" => verb = "deletecollection".into(),
            _ => {}
        }
        if matches!(verb.as_str(), "list" | "watch") {
            if let Some(n) = field_name {
                a.name = n.to_owned();
            }
        }
    }
    a.verb = verb;
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_upstreams_attributes() {
        // (method, path, watch, verb, group, resource, sub, ns, name)
        let cases = [
            (
                "GET",
                "/api/v1/namespaces/d/pods",
                false,
                "list",
                "",
                "pods",
                "",
                "d",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/d/pods",
                true,
                "watch",
                "",
                "pods",
                "",
                "d",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/d/pods/p",
                false,
                "get",
                "",
                "pods",
                "",
                "d",
                "p",
            ),
            (
                "GET",
                "/api/v1/namespaces/d/pods/p/log",
                false,
                "get",
                "",
                "pods",
                "log",
                "d",
                "p",
            ),
            (
                "POST",
                "/api/v1/namespaces/d/pods",
                false,
                "create",
                "",
                "pods",
                "",
                "d",
                "",
            ),
            (
                "PUT",
                "/apis/apps/v1/namespaces/d/deployments/x/scale",
                false,
                "update",
                "apps",
                "deployments",
                "scale",
                "d",
                "x",
            ),
            (
                "PATCH",
                "/api/v1/nodes/n",
                false,
                "patch",
                "",
                "nodes",
                "",
                "",
                "n",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/d/pods",
                false,
                "deletecollection",
                "",
                "pods",
                "",
                "d",
                "",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/d/pods/p",
                false,
                "delete",
                "",
                "pods",
                "",
                "d",
                "p",
            ),
            (
                "GET",
                "/api/v1/namespaces",
                false,
                "list",
                "",
                "namespaces",
                "",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/d",
                false,
                "get",
                "",
                "namespaces",
                "",
                "d",
                "d",
            ),
            (
                "PUT",
                "/api/v1/namespaces/d/finalize",
                false,
                "update",
                "",
                "namespaces",
                "finalize",
                "d",
                "d",
            ),
            (
                "GET",
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                false,
                "list",
                "rbac.authorization.k8s.io",
                "clusterroles",
                "",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/watch/namespaces/d/pods",
                false,
                "watch",
                "",
                "pods",
                "",
                "d",
                "",
            ),
        ];
        for (m, p, w, verb, g, r, s, ns, n) in cases {
            let a = attributes(m, p, w, None);
            assert!(a.resource_request, "{p}");
            assert_eq!(
                (
                    a.verb.as_str(),
                    a.group.as_str(),
                    a.resource.as_str(),
                    a.subresource.as_str(),
                    a.namespace.as_str(),
                    a.name.as_str()
                ),
                (verb, g, r, s, ns, n),
                "{m} {p}"
            );
        }
        let a = attributes("GET", "/api/v1/namespaces/d/pods", false, Some("p1"));
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("list", "p1"));
        for p in [
            "/api",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/api/v1",
            "/healthz",
            "/version",
            "/openapi/v2",
        ] {
            let a = attributes("GET", p, false, None);
            assert!(!a.resource_request, "{p}");
            assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", p));
        }
    }
}
