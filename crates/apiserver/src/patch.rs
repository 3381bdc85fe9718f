//! PATCH: JSON patch (RFC 6902), JSON merge patch (RFC 7386), Kubernetes strategic merge
//! patch, and server-side apply.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::api::{now, WriteOptions};
use crate::error::ApiError;
use crate::resources::ResourceInfo;

/// The patch formats, named by the request's content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchType {
    /// The patch type for a content type, if supported.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    MergeKey(&'static str),
    MergePrimitive,
    Atomic,
}

/// The patch strategy of list field `field`, whose ancestors' field names are `path`.
fn list_strategy(path: &[String], field: &str) -> ListStrategy {
    use ListStrategy::*;
    let in_container = path.iter().any(|p| {
        matches!(
            p.as_str(),
            "containers" | "initContainers" | "ephemeralContainers"
        )
    });
    match field {
        "containers" | "initContainers" | "ephemeralContainers" => MergeKey("name"),
        "ports" if in_container => MergeKey("containerPort"),
        "ports" if path.last().is_some_and(|p| p == "spec") => MergeKey("port"),
        "env" | "volumes" | "imagePullSecrets" | "resourceClaims" => MergeKey("name"),
        "volumeMounts" => MergeKey("mountPath"),
        "volumeDevices" => MergeKey("devicePath"),
        "hostAliases" => MergeKey("ip"),
        "conditions" => MergeKey("type"),
        "ownerReferences" => MergeKey("uid"),
        "topologySpreadConstraints" => MergeKey("topologyKey"),
        "taints" => MergeKey("key"),
        "addresses" if path.last().is_some_and(|p| p == "status") => MergeKey("type"),
        "finalizers" if path.last().is_some_and(|p| p == "metadata") => MergePrimitive,
        _ => Atomic,
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"))
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn same_key(a: &Value, b: &Value, key: &str) -> bool {
    a.get(key).is_some() && a.get(key) == b.get(key)
}

fn merge_list(orig: &[Value], patch: &[Value], path: &mut Vec<String>, field: &str) -> Vec<Value> {
    match list_strategy(path, field) {
        ListStrategy::Atomic => patch.iter().map(strip_directives).collect(),
        ListStrategy::MergePrimitive => {
            let mut out = orig.to_vec();
            for p in patch {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
            out
        }
        ListStrategy::MergeKey(key) => {
            if patch
                .iter()
                .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                return patch
                    .iter()
                    .filter(|i| i.get("$patch").is_none())
                    .map(strip_directives)
                    .collect();
            }
            let mut out = orig.to_vec();
            path.push(field.to_owned());
            for item in patch {
                let directive = item.get("$patch").and_then(Value::as_str);
                if directive == Some("delete") {
                    out.retain(|o| !same_key(o, item, key));
                    continue;
                }
                match out.iter().position(|o| same_key(o, item, key)) {
                    Some(i) => {
                        if let (Some(om), Some(pm)) = (out[i].as_object(), item.as_object()) {
                            if let Some(m) = merge_map(om, pm, path) {
                                out[i] = Value::Object(m);
                            }
                        } else {
                            out[i] = strip_directives(item);
                        }
                    }
                    None => out.push(strip_directives(item)),
                }
            }
            path.pop();
            out
        }
    }
}

fn reorder(list: &mut [Value], order: &[Value], key: Option<&str>) {
    let pos = |v: &Value| -> usize {
        order
            .iter()
            .position(|o| match key {
                Some(k) => same_key(v, o, k),
                None => v == o,
            })
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(|v| pos(v));
}

/// Strategic merge of `patch` into `orig`; `None` means the map was deleted.
fn merge_map(
    orig: &Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Option<Map<String, Value>> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return None,
        Some("replace") => {
            return strip_directives(&Value::Object(patch.clone()))
                .as_object()
                .cloned()
        }
        _ => {}
    }
    let mut out = orig.clone();
    let mut orders = Vec::new();
    for (k, v) in patch {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field.to_owned(), v.clone()));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(del)) = (
                out.get_mut(field).and_then(Value::as_array_mut),
                v.as_array(),
            ) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        match v {
            Value::Null => {
                out.remove(k);
            }
            Value::Object(pm) => {
                let merged = match out.get(k).and_then(Value::as_object) {
                    Some(om) => {
                        path.push(k.clone());
                        let m = merge_map(om, pm, path);
                        path.pop();
                        m
                    }
                    None => merge_map(&Map::new(), pm, path),
                };
                match merged {
                    Some(m) => out.insert(k.clone(), Value::Object(m)),
                    None => out.remove(k),
                };
            }
            Value::Array(pa) => {
                let orig_list = out
                    .get(k)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let merged = merge_list(&orig_list, pa, path, k);
                out.insert(k.clone(), Value::Array(merged));
            }
            other => {
                out.insert(k.clone(), other.clone());
            }
        }
    }
    for (field, order) in orders {
        let key = match list_strategy(path, &field) {
            ListStrategy::MergeKey(k) => Some(k),
            _ => None,
        };
        if let (Some(list), Some(order)) = (
            out.get_mut(&field).and_then(Value::as_array_mut),
            order.as_array(),
        ) {
            reorder(list, order, key);
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: BTreeSet<&str> = retain.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(k.as_str()));
    }
    Some(out)
}

/// Applies a strategic merge patch to a whole object.
pub fn strategic_merge(orig: &Value, patch: &Value) -> Result<Value, ApiError> {
    let (Some(o), Some(p)) = (orig.as_object(), patch.as_object()) else {
        return Err(ApiError::bad_request(
            "a strategic merge patch must be a JSON object",
        ));
    };
    Ok(Value::Object(
        merge_map(o, p, &mut Vec::new()).unwrap_or_default(),
    ))
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

/// Parses an apply configuration (YAML or JSON).
pub(crate) fn parse_apply(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_yaml_ng::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "an apply configuration must be an object",
        ));
    }
    Ok(v)
}

// ----- managed fields (fieldsV1) -----

fn key_elem(item: &Value, key: &str) -> String {
    format!(
        "k:{}",
        json!({key: item.get(key).cloned().unwrap_or(Value::Null)})
    )
}

/// Leaf paths set by an apply configuration.
fn field_paths(
    v: &Value,
    path: &mut Vec<String>,
    names: &mut Vec<String>,
    out: &mut BTreeSet<Vec<String>>,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind") {
                    continue;
                }
                if path.len() == 1
                    && path[0] == "f:metadata"
                    && matches!(
                        k.as_str(),
                        "name"
                            | "namespace"
                            | "resourceVersion"
                            | "managedFields"
                            | "uid"
                            | "creationTimestamp"
                            | "generation"
                    )
                {
                    continue;
                }
                path.push(format!("f:{k}"));
                match child {
                    Value::Array(items) => match list_strategy(names, k) {
                        ListStrategy::MergeKey(key) => {
                            names.push(k.clone());
                            for item in items {
                                path.push(key_elem(item, key));
                                field_paths(item, path, names, out);
                                path.pop();
                            }
                            names.pop();
                            if items.is_empty() {
                                out.insert(path.clone());
                            }
                        }
                        ListStrategy::MergePrimitive => {
                            for item in items {
                                path.push(format!("v:{item}"));
                                out.insert(path.clone());
                                path.pop();
                            }
                        }
                        ListStrategy::Atomic => {
                            out.insert(path.clone());
                        }
                    },
                    _ => {
                        names.push(k.clone());
                        field_paths(child, path, names, out);
                        names.pop();
                    }
                }
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

fn paths_of(applied: &Value) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    field_paths(applied, &mut Vec::new(), &mut Vec::new(), &mut out);
    out
}

fn to_fields_v1(paths: &BTreeSet<Vec<String>>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            cur = cur
                .entry(seg.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, path: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, child) in m {
                if k == "." {
                    continue;
                }
                path.push(k.clone());
                from_fields_v1(child, path, out);
                path.pop();
            }
        }
        _ => {
            if !path.is_empty() {
                out.insert(path.clone());
            }
        }
    }
}

fn find_item(list: &[Value], elem: &str) -> Option<usize> {
    if let Some(k) = elem.strip_prefix("k:") {
        let want: Value = serde_json::from_str(k).ok()?;
        let want = want.as_object()?;
        list.iter()
            .position(|i| want.iter().all(|(k, v)| i.get(k) == Some(v)))
    } else if let Some(v) = elem.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        list.iter().position(|i| *i == want)
    } else {
        None
    }
}

fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        cur = if let Some(f) = seg.strip_prefix("f:") {
            cur.get(f)?
        } else {
            let list = cur.as_array()?;
            &list[find_item(list, seg)?]
        };
    }
    Some(cur)
}

fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parents {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else {
            match cur.as_array_mut() {
                Some(list) => match find_item(list, seg) {
                    Some(i) => list.get_mut(i),
                    None => None,
                },
                None => None,
            }
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(list) = cur.as_array_mut() {
        if let Some(i) = find_item(list, last) {
            list.remove(i);
        }
    }
}

fn managed_entry(manager: &str, api_version: &str, paths: &BTreeSet<Vec<String>>) -> Value {
    json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    })
}

/// The object that server-side apply creates when none exists.
pub(crate) fn apply_create(
    mut applied: Value,
    manager: &str,
    info: &ResourceInfo,
) -> Result<Value, ApiError> {
    let paths = paths_of(&applied);
    applied["metadata"]["managedFields"] =
        json!([managed_entry(manager, &info.api_version(), &paths)]);
    Ok(applied)
}

/// Server-side apply onto an existing object.
fn apply_existing(
    current: &Value,
    applied: &Value,
    info: &ResourceInfo,
    opts: &WriteOptions,
) -> Result<Value, ApiError> {
    let manager = opts.field_manager.as_deref().unwrap_or_default();
    let new_paths = paths_of(applied);
    let mut entries: Vec<Value> = current["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut prev_paths = BTreeSet::new();
    let mut others: Vec<(usize, BTreeSet<Vec<String>>)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let mut set = BTreeSet::new();
        from_fields_v1(&e["fieldsV1"], &mut Vec::new(), &mut set);
        if e["manager"] == manager && e["operation"] == "Apply" {
            prev_paths = set;
        } else if e["operation"] == "Apply" {
            others.push((i, set));
        }
    }
    // Conflicts: fields another applier owns, set here to a different value.
    let mut conflicts = Vec::new();
    for (i, set) in &mut others {
        let owner = entries[*i]["manager"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let clashing: Vec<Vec<String>> = set
            .iter()
            .filter(|p| new_paths.contains(*p) && value_at(current, p) != value_at(applied, p))
            .cloned()
            .collect();
        for p in &clashing {
            if opts.force {
                set.remove(p);
            } else {
                let field = p
                    .iter()
                    .map(|s| s.trim_start_matches("f:"))
                    .collect::<Vec<_>>()
                    .join(".");
                conflicts.push((owner.clone(), field));
            }
        }
    }
    if !conflicts.is_empty() {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m:?}"), "field": f}))
            .collect();
        let msg = conflicts
            .iter()
            .map(|(m, f)| format!("conflict with {m:?}: .{f}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut e = ApiError::new(
            409,
            "Conflict",
            format!("Apply failed with {} conflict(s): {msg}", conflicts.len()),
        );
        e.details = Some(json!({"causes": causes}));
        return Err(e);
    }
    let mut merged = strategic_merge(current, &strip_directives(applied))?;
    // Fields this manager applied before but no longer does, and nobody else owns, go.
    for p in prev_paths.difference(&new_paths) {
        if !others.iter().any(|(_, s)| s.contains(p)) {
            remove_at(&mut merged, p);
        }
    }
    for (i, set) in &others {
        entries[*i]["fieldsV1"] = to_fields_v1(set);
    }
    entries.retain(|e| !(e["manager"] == manager && e["operation"] == "Apply"));
    entries.push(managed_entry(manager, &info.api_version(), &new_paths));
    merged["metadata"]["managedFields"] = json!(entries);
    Ok(merged)
}

/// Applies a patch body of `patch_type` to `current`.
pub(crate) fn apply_patch(
    patch_type: PatchType,
    current: &Value,
    body: &[u8],
    info: &ResourceInfo,
    opts: &WriteOptions,
) -> Result<Value, ApiError> {
    match patch_type {
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut doc = current.clone();
            json_patch::patch(&mut doc, &p).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
            Ok(doc)
        }
        PatchType::Merge => {
            let p = parse_json(body)?;
            let mut doc = current.clone();
            json_patch::merge(&mut doc, &p);
            Ok(doc)
        }
        PatchType::Strategic => strategic_merge(current, &parse_json(body)?),
        PatchType::Apply => apply_existing(current, &parse_apply(body)?, info, opts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smp(orig: Value, patch: Value) -> Value {
        strategic_merge(&orig, &patch).unwrap()
    }

    #[test]
    fn containers_merge_by_name() {
        let orig = json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}});
        let out = smp(
            orig,
            json!({"spec": {"containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}])
        );
    }

    #[test]
    fn lists_without_merge_key_are_replaced() {
        let orig = json!({"spec": {"tolerations": [{"key": "a"}], "containers": [{"name": "x", "args": ["1", "2"]}]}});
        let out = smp(
            orig,
            json!({"spec": {"tolerations": [{"key": "b"}], "containers": [{"name": "x", "args": ["3"]}]}}),
        );
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "b"}]));
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["3"]));
    }

    #[test]
    fn null_deletes_and_maps_merge() {
        let orig = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let out = smp(orig, json!({"metadata": {"labels": {"a": null, "c": "3"}}}));
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
    }

    #[test]
    fn patch_directives() {
        let orig = json!({"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}],
            "template": {"x": 1, "y": 2}}});
        // $patch: delete on a list item.
        let out = smp(
            orig.clone(),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "b", "image": "b"}])
        );
        // $patch: replace on a list.
        let out = smp(
            orig.clone(),
            json!({"spec": {"containers": [{"name": "z", "image": "z"}, {"$patch": "replace"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "z", "image": "z"}])
        );
        // $patch: replace on a map.
        let out = smp(
            orig.clone(),
            json!({"spec": {"template": {"z": 3, "$patch": "replace"}}}),
        );
        assert_eq!(out["spec"]["template"], json!({"z": 3}));
        // $patch: delete on a map.
        let out = smp(
            orig.clone(),
            json!({"spec": {"template": {"$patch": "delete"}}}),
        );
        assert!(out["spec"].get("template").is_none());
    }

    #[test]
    fn retain_keys_set_order_and_primitive_lists() {
        let orig = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let out = smp(
            orig,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));

        let orig = json!({"metadata": {"finalizers": ["a", "b"]}});
        let out = smp(orig.clone(), json!({"metadata": {"finalizers": ["c"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let out = smp(
            orig,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));

        let orig = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let out = smp(
            orig,
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "x"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "b"}, {"name": "a", "image": "x"}])
        );
    }

    #[test]
    fn ports_merge_keys_depend_on_place() {
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let out = smp(
            svc,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
        );
        assert_eq!(
            out["spec"]["ports"][0],
            json!({"port": 80, "name": "http", "targetPort": 8080})
        );
        assert_eq!(out["spec"]["ports"].as_array().unwrap().len(), 2);
        let pod = json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}],
            "env": [{"name": "A", "value": "1"}]}]}});
        let out = smp(
            pod,
            json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 81}],
            "env": [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}]}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80}, {"containerPort": 81}])
        );
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "2"}, {"name": "B", "value": "3"}])
        );
    }

    #[test]
    fn json_and_merge_patches() {
        let info = crate::resources::lookup("", "v1", "configmaps").unwrap();
        let cur = json!({"data": {"a": "1", "b": "2"}});
        let opts = WriteOptions::default();
        let out = apply_patch(
            PatchType::Merge,
            &cur,
            br#"{"data":{"a":null,"c":"3"}}"#,
            info,
            &opts,
        )
        .unwrap();
        assert_eq!(out["data"], json!({"b": "2", "c": "3"}));
        let out = apply_patch(
            PatchType::Json,
            &cur,
            br#"[{"op":"replace","path":"/data/a","value":"9"}]"#,
            info,
            &opts,
        )
        .unwrap();
        assert_eq!(out["data"]["a"], "9");
        let err = apply_patch(
            PatchType::Json,
            &cur,
            br#"[{"op":"test","path":"/data/a","value":"0"}]"#,
            info,
            &opts,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml; charset=utf-8"),
            Some(PatchType::Apply)
        );
        assert_eq!(PatchType::from_content_type("text/plain"), None);
    }

    #[test]
    fn server_side_apply_owns_removes_and_conflicts() {
        let info = crate::resources::lookup("", "v1", "configmaps").unwrap();
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let created = apply_create(first, "alice", info).unwrap();
        assert_eq!(
            created["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:data": {"f:a": {}, "f:b": {}}})
        );
        let mine = WriteOptions {
            field_manager: Some("alice".into()),
            ..Default::default()
        };
        // Re-applying without b removes b.
        let out = apply_existing(&created, &json!({"data": {"a": "1"}}), info, &mine).unwrap();
        assert_eq!(out["data"], json!({"a": "1"}));
        // Another manager changing a is a conflict, unless forced.
        let bob = WriteOptions {
            field_manager: Some("bob".into()),
            ..Default::default()
        };
        let err = apply_existing(&out, &json!({"data": {"a": "2"}}), info, &bob).unwrap_err();
        assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
        let forced = WriteOptions {
            force: true,
            ..bob.clone()
        };
        let out2 = apply_existing(&out, &json!({"data": {"a": "2"}}), info, &forced).unwrap();
        assert_eq!(out2["data"]["a"], "2");
        // Same value is shared ownership, not a conflict.
        assert!(apply_existing(&out, &json!({"data": {"a": "1"}}), info, &bob).is_ok());
    }
}
