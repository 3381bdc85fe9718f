//! Discovery: `/api`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>` and the
//! aggregated form (`apidiscovery.k8s.io/v2`), from the [`Registry`] of served
//! resources, built-in and custom alike.

use axum::http::{header, HeaderMap};
use serde_json::{json, Value};

use crate::resources::{Registry, ResourceInfo, Sub};

/// The content type of aggregated discovery.
pub(crate) const AGGREGATED_CT: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the client asks for aggregated discovery.
pub(crate) fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',').any(|t| {
                t.contains("as=APIGroupDiscoveryList")
                    && t.contains("g=apidiscovery.k8s.io")
                    && t.contains("v=v2")
                    && !t.contains("v=v2beta1")
            })
        })
}

/// A subresource's response kind (kind, group, version) and verbs.
fn sub_desc(r: &ResourceInfo, s: Sub) -> (&str, &str, &str, &'static [&'static str]) {
    match s {
        Sub::Status => (&r.kind, &r.group, &r.version, &["get", "patch", "update"]),
        Sub::Scale => ("Scale", "autoscaling", "v1", &["get", "patch", "update"]),
        Sub::Binding => ("Binding", "", "v1", &["create"]),
        Sub::Eviction => ("Eviction", "policy", "v1", &["create"]),
        Sub::Log => ("Pod", "", "v1", &["get"]),
        Sub::Finalize => (&r.kind, &r.group, &r.version, &["update"]),
        Sub::Exec => ("PodExecOptions", "", "v1", &["create", "get"]),
        Sub::Attach => ("PodAttachOptions", "", "v1", &["create", "get"]),
        Sub::PortForward => ("PodPortForwardOptions", "", "v1", &["create", "get"]),
        Sub::EphemeralContainers => ("Pod", "", "v1", &["get", "patch", "update"]),
        Sub::Approval => (&r.kind, &r.group, &r.version, &["get", "patch", "update"]),
    }
}

/// `GET /api/v1` or `/apis/<group>/<version>`: an APIResourceList.
pub(crate) fn api_resource_list(reg: &Registry, group: &str, version: &str) -> Value {
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    let mut out = Vec::new();
    for r in reg
        .all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut e = json!({
            "name": r.plural, "singularName": r.singular(), "namespaced": r.namespaced,
            "kind": r.kind, "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        out.push(e);
        for s in r.subresources.iter().copied() {
            let (kind, grp, ver, verbs) = sub_desc(&r, s);
            let mut e = json!({"name": format!("{}/{}", r.plural, s.name()), "singularName": "",
                "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if (grp, ver) != (&*r.group, &*r.version) && !(grp.is_empty() && ver == "v1") {
                e["group"] = json!(grp);
                e["version"] = json!(ver);
            }
            out.push(e);
        }
    }
    if group.is_empty() {
        out.push(json!({"name": "bindings", "singularName": "binding", "namespaced": true, "kind": "Binding", "verbs": ["create"]}));
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out})
}

/// `GET /apis/<group>`: an APIGroup, its preferred version first.
pub(crate) fn api_group(reg: &Registry, group: &str) -> Value {
    let versions: Vec<Value> = reg
        .group_versions()
        .into_iter()
        .filter(|(g, _)| g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions, "preferredVersion": versions.first()})
}

fn groups(reg: &Registry) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    for (g, _) in reg.group_versions() {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    groups
}

/// `GET /apis`: the APIGroupList.
pub(crate) fn api_group_list(reg: &Registry) -> Value {
    let list: Vec<Value> = groups(reg)
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(|g| {
            let mut v = api_group(reg, &g);
            if let Some(m) = v.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            v
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list})
}

/// Aggregated discovery (apidiscovery.k8s.io/v2) for `/api` (core) or `/apis` (groups).
pub(crate) fn aggregated(reg: &Registry, core: bool) -> Value {
    let all = reg.all();
    let gvs = reg.group_versions();
    let mut items = Vec::new();
    for g in groups(reg).into_iter().filter(|g| g.is_empty() == core) {
        let mut versions = Vec::new();
        for (_, v) in gvs.iter().filter(|(x, _)| *x == g) {
            let res: Vec<Value> = all
                .iter()
                .filter(|r| r.group == g && r.version == *v)
                .map(|r| {
                    let subs: Vec<Value> = r
                        .subresources
                        .iter()
                        .copied()
                        .map(|s| {
                            let (kind, grp, ver, verbs) = sub_desc(r, s);
                            json!({"subresource": s.name(), "responseKind": {"group": grp, "version": ver, "kind": kind}, "verbs": verbs})
                        })
                        .collect();
                    let mut e = json!({
                        "resource": r.plural,
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular(),
                        "verbs": r.verbs(),
                    });
                    if !r.short_names.is_empty() {
                        e["shortNames"] = json!(r.short_names);
                    }
                    if !r.categories.is_empty() {
                        e["categories"] = json!(r.categories);
                    }
                    if !subs.is_empty() {
                        e["subresources"] = json!(subs);
                    }
                    e
                })
                .collect();
            versions.push(json!({"version": v, "resources": res, "freshness": "Current"}));
        }
        items.push(
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions}),
        );
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

/// The ETag of a discovery document: a hash of its bytes, so that clients caching
/// discovery (kubectl) see a new CRD at once.
pub(crate) fn etag(body: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:016X}\"", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_discovery_lists_groups_and_subresources() {
        let reg = Registry::new();
        let list = api_resource_list(&reg, "apps", "v1");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"deployments/scale"));
        let scale = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        let groups = api_group_list(&reg);
        assert!(groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "apps"));
        let agg = aggregated(&reg, true);
        assert_eq!(agg["items"][0]["metadata"]["name"], "");
        assert_ne!(etag(b"a"), etag(b"b"));
    }
}
