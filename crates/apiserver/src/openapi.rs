//! A minimal OpenAPI v3 description: the paths and operations of each group-version, with
//! `x-kubernetes-group-version-kind` and the `fieldValidation` parameter, which is what
//! kubectl reads to decide that the server validates fields itself. Built-in kinds'
//! schemas are not described (kubectl then computes patches from its compiled-in
//! types); custom resources are, from their CRD's `openAPIV3Schema`, so that
//! `kubectl explain` works on them. `/openapi/v2` describes the custom resources, in JSON
//! or, for Go clients (kubectl's client-side validation), as gnostic's protobuf.

use serde_json::{json, Map, Value};

use crate::resources::{Registry, ResourceInfo};

/// The documents' hash: changes whenever the served custom resources change, so that
/// clients caching documents by URL (kubectl) fetch the new ones.
fn hash(reg: &Registry) -> String {
    format!("kcore-0-1-0-{}", reg.generation())
}

/// The name of a custom resource's schema (`<reversed group>.<version>.<Kind>`, as
/// upstream).
fn schema_name(r: &ResourceInfo) -> String {
    let mut parts: Vec<&str> = r.group.split('.').collect();
    parts.reverse();
    format!("{}.{}.{}", parts.join("."), r.version, r.kind)
}

/// A custom resource's schema with its identity, or `None` for built-in kinds.
fn resource_schema(r: &ResourceInfo) -> Option<Value> {
    let mut schema = r.strategy.openapi_schema()?;
    if !schema.is_object() {
        schema = json!({"type": "object"});
    }
    let props = &mut schema["properties"];
    if !props.is_object() {
        *props = json!({});
    }
    props["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."});
    props["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."});
    props["metadata"] = json!({"type": "object", "description": "Standard object's metadata."});
    schema["type"] = json!("object");
    schema["x-kubernetes-group-version-kind"] =
        json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
    Some(schema)
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: the index of group-version documents.
pub(crate) fn index(reg: &Registry) -> Value {
    let mut paths = Map::new();
    let hash = hash(reg);
    for (g, v) in reg.group_versions() {
        let p = gv_path(&g, &v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

/// `GET /openapi/v2`: a Swagger 2.0 document with the custom resources' definitions.
pub(crate) fn v2(reg: &Registry) -> Value {
    let mut defs = Map::new();
    for r in reg.all() {
        if let Some(s) = resource_schema(&r) {
            defs.insert(schema_name(&r), s);
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": kcore_k8s::VERSION},
        "paths": {},
        "definitions": defs,
    })
}

/// Whether a `GET /openapi/v2` asks for gnostic's protobuf form: the first media range
/// that names either form decides, as upstream's handler (JSON otherwise).
pub(crate) fn v2_wants_protobuf(accept: Option<&str>) -> bool {
    const PB: [&str; 2] = [
        crate::protobuf::openapi_v2::ACCEPT_MEDIA_TYPE,
        crate::protobuf::openapi_v2::MEDIA_TYPE,
    ];
    accept
        .into_iter()
        .flat_map(|a| a.split(','))
        .map(|r| r.split(';').next().unwrap_or("").trim())
        .find_map(|m| {
            if PB.iter().any(|p| m.eq_ignore_ascii_case(p)) {
                Some(true)
            } else if m.eq_ignore_ascii_case("application/json") {
                Some(false)
            } else {
                None
            }
        })
        .unwrap_or(false)
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
pub(crate) fn group_version(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    if !reg.serves(group, version) {
        return None;
    }
    let mut schemas = Map::new();
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
    for r in reg
        .all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
    {
        if let Some(s) = resource_schema(&r) {
            schemas.insert(schema_name(&r), s);
        }
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let coll = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        let k = &r.kind;
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
        for s in r.subresources.iter() {
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
        "components": {"schemas": schemas},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_carry_gvk_and_field_validation() {
        let reg = Registry::new();
        let idx = index(&reg);
        assert!(idx["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/apis/apps/v1"));
        let doc = group_version(&reg, "apps", "v1").unwrap();
        let p = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(p["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "fieldValidation"));
        assert!(group_version(&reg, "nope", "v1").is_none());
    }

    #[test]
    fn v2_protobuf_is_served_when_the_first_known_range_asks_for_it() {
        let pb = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
        assert!(v2_wants_protobuf(Some(pb)));
        assert!(v2_wants_protobuf(Some(
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
        )));
        assert!(v2_wants_protobuf(Some(&format!(
            "text/plain, {pb};q=0.9, application/json"
        ))));
        assert!(!v2_wants_protobuf(Some(&format!("application/json, {pb}"))));
        assert!(!v2_wants_protobuf(Some("*/*")));
        assert!(!v2_wants_protobuf(None));
    }

    #[test]
    fn v2_document_encodes_as_gnostic_protobuf() {
        let doc = v2(&Registry::new());
        let pb = crate::protobuf::openapi_v2::encode_document(&doc);
        // swagger (1), then info (2) holding title (1) and version (2)
        assert!(pb.starts_with(b"\x0a\x032.0\x12"));
        let title = b"\x0a\x0aKubernetes";
        assert!(pb.windows(title.len()).any(|w| w == title));
    }
}
