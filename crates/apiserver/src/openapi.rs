//! A minimal OpenAPI v3 description: the paths and operations of each group-version, with
//! `x-kubernetes-group-version-kind` and the `fieldValidation` parameter, which is what
//! kubectl reads to decide that the server validates fields itself. Schemas are not
//! described (kubectl then computes patches from its compiled-in types).

use serde_json::{json, Map, Value};

use crate::resources::{self, RESOURCES};

const HASH: &str = "kcore-0-1-0";

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: the index of group-version documents.
pub(crate) fn index() -> Value {
    let mut paths = Map::new();
    for (g, v) in resources::group_versions() {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={HASH}")}),
        );
    }
    json!({"paths": paths})
}

fn op(id: String, gvk: &Value, params: &[&str]) -> Value {
    let parameters: Vec<Value> = params
        .iter()
        .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect();
    json!({
        "operationId": id,
        "parameters": parameters,
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-group-version-kind": gvk,
    })
}

/// `GET /openapi/v3/<api|apis/group>/<version>`, if served.
pub(crate) fn group_version(group: &str, version: &str) -> Option<Value> {
    if !resources::group_versions().contains(&(group, version)) {
        return None;
    }
    let mut paths = Map::new();
    let base = format!("/{}", gv_path(group, version));
    let write = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
    let patch = [
        "dryRun",
        "fieldManager",
        "fieldValidation",
        "force",
        "pretty",
    ];
    let list = [
        "labelSelector",
        "fieldSelector",
        "limit",
        "continue",
        "resourceVersion",
        "resourceVersionMatch",
        "watch",
        "allowWatchBookmarks",
        "sendInitialEvents",
        "timeoutSeconds",
    ];
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let coll = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        let k = r.kind;
        paths.insert(
            coll.clone(),
            json!({
                "get": op(format!("list{k}"), &gvk, &list),
                "post": op(format!("create{k}"), &gvk, &write),
                "delete": op(format!("deletecollection{k}"), &gvk, &list),
            }),
        );
        paths.insert(format!("{coll}/{{name}}"), json!({
            "get": op(format!("read{k}"), &gvk, &[]),
            "put": op(format!("replace{k}"), &gvk, &write),
            "patch": op(format!("patch{k}"), &gvk, &patch),
            "delete": op(format!("delete{k}"), &gvk, &["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
        }));
        for s in r.subresources {
            paths.insert(
                format!("{coll}/{{name}}/{}", s.name()),
                json!({
                    "get": op(format!("read{k}{}", s.name()), &gvk, &[]),
                }),
            );
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": kcore_k8s::VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_carry_gvk_and_field_validation() {
        let idx = index();
        assert!(idx["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/apis/apps/v1"));
        let doc = group_version("apps", "v1").unwrap();
        let p = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(p["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "fieldValidation"));
        assert!(group_version("nope", "v1").is_none());
    }
}
