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

/// How a list merges (strategic merge patch, server-side apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListStrategy {
    /// Entries are objects merged by these key fields.
    MergeKeys(Vec<String>),
    /// A set of scalars, merged by value.
    MergePrimitive,
    /// Replaced whole.
    Atomic,
}

impl ListStrategy {
    fn key(k: &str) -> Self {
        Self::MergeKeys(vec![k.to_owned()])
    }
}

/// Where a kind's merge rules come from: the patch strategies of lists and maps at a
/// place in its objects. `path` holds the field names of the ancestors from the root
/// (a list's name stands for its items), `field` the field itself.
///
/// Built-in kinds use [`BuiltinRules`] (upstream's `patchStrategy`/`patchMergeKey`
/// tags); custom resources their CRD's structural schema (`x-kubernetes-list-type`,
/// `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`).
pub(crate) trait MergeRules: Send + Sync {
    /// The strategy of list field `field` under `path`.
    fn list(&self, path: &[String], field: &str) -> ListStrategy;
    /// Whether object field `field` under `path` is atomic (replaced and owned whole).
    fn atomic_map(&self, _path: &[String], _field: &str) -> bool {
        false
    }
}

/// The merge rules of the built-in kinds.
pub(crate) struct BuiltinRules;

impl MergeRules for BuiltinRules {
    fn list(&self, path: &[String], field: &str) -> ListStrategy {
        use ListStrategy::*;
        let in_container = path.iter().any(|p| {
            matches!(
                p.as_str(),
                "containers" | "initContainers" | "ephemeralContainers"
            )
        });
        match field {
            "containers" | "initContainers" | "ephemeralContainers" => ListStrategy::key("name"),
            "ports" if in_container => ListStrategy::key("containerPort"),
            "ports" if path.last().is_some_and(|p| p == "spec") => ListStrategy::key("port"),
            "env" | "volumes" | "imagePullSecrets" | "resourceClaims" => ListStrategy::key("name"),
            "volumeMounts" => ListStrategy::key("mountPath"),
            "volumeDevices" => ListStrategy::key("devicePath"),
            "hostAliases" => ListStrategy::key("ip"),
            "conditions" => ListStrategy::key("type"),
            "ownerReferences" => ListStrategy::key("uid"),
            "topologySpreadConstraints" => ListStrategy::key("topologyKey"),
            "taints" => ListStrategy::key("key"),
            "addresses" if path.last().is_some_and(|p| p == "status") => ListStrategy::key("type"),
            "finalizers" if path.last().is_some_and(|p| p == "metadata") => MergePrimitive,
            _ => Atomic,
        }
    }
}

/// The merge rules of a custom resource: `metadata` as every kind's, the rest from the
/// CRD version's structural schema (no schema: every list atomic, as upstream's
/// deduced type).
pub(crate) struct SchemaRules<'a>(pub(crate) Option<&'a kcore_schema::Schema>);

fn full_path<'p>(path: &'p [String], field: &'p str) -> Vec<&'p str> {
    path.iter()
        .map(String::as_str)
        .chain(std::iter::once(field))
        .collect()
}

impl MergeRules for SchemaRules<'_> {
    fn list(&self, path: &[String], field: &str) -> ListStrategy {
        if path.first().is_some_and(|p| p == "metadata") {
            return BuiltinRules.list(path, field);
        }
        let Some(schema) = self.0 else {
            return ListStrategy::Atomic;
        };
        match schema.list_type_at(&full_path(path, field)) {
            kcore_schema::ListType::Map(keys) => ListStrategy::MergeKeys(keys.to_vec()),
            kcore_schema::ListType::Set => ListStrategy::MergePrimitive,
            _ => ListStrategy::Atomic,
        }
    }

    fn atomic_map(&self, path: &[String], field: &str) -> bool {
        let in_metadata = path.first().map_or(field, String::as_str) == "metadata";
        !in_metadata
            && self.0.is_some_and(|s| {
                s.map_type_at(&full_path(path, field)) == kcore_schema::MapType::Atomic
            })
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

fn same_key(a: &Value, b: &Value, keys: &[String]) -> bool {
    keys.iter().any(|k| a.get(k).is_some()) && keys.iter().all(|k| a.get(k) == b.get(k))
}

fn merge_list(
    rules: &dyn MergeRules,
    orig: &[Value],
    patch: &[Value],
    path: &mut Vec<String>,
    field: &str,
) -> Vec<Value> {
    match rules.list(path, field) {
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
        ListStrategy::MergeKeys(keys) => {
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
                    out.retain(|o| !same_key(o, item, &keys));
                    continue;
                }
                match out.iter().position(|o| same_key(o, item, &keys)) {
                    Some(i) => {
                        if let (Some(om), Some(pm)) = (out[i].as_object(), item.as_object()) {
                            if let Some(m) = merge_map(rules, om, pm, path) {
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

fn reorder(list: &mut [Value], order: &[Value], keys: Option<&[String]>) {
    let pos = |v: &Value| -> usize {
        order
            .iter()
            .position(|o| match keys {
                Some(k) => same_key(v, o, k),
                None => v == o,
            })
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(|v| pos(v));
}

/// Strategic merge of `patch` into `orig`; `None` means the map was deleted.
fn merge_map(
    rules: &dyn MergeRules,
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
            Value::Object(pm) if rules.atomic_map(path, k) => {
                out.insert(k.clone(), strip_directives(&Value::Object(pm.clone())));
            }
            Value::Object(pm) => {
                let empty = Map::new();
                let om = out.get(k).and_then(Value::as_object).unwrap_or(&empty);
                path.push(k.clone());
                let merged = merge_map(rules, om, pm, path);
                path.pop();
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
                let merged = merge_list(rules, &orig_list, pa, path, k);
                out.insert(k.clone(), Value::Array(merged));
            }
            other => {
                out.insert(k.clone(), other.clone());
            }
        }
    }
    for (field, order) in orders {
        let keys = match rules.list(path, &field) {
            ListStrategy::MergeKeys(k) => Some(k),
            _ => None,
        };
        if let (Some(list), Some(order)) = (
            out.get_mut(&field).and_then(Value::as_array_mut),
            order.as_array(),
        ) {
            reorder(list, order, keys.as_deref());
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: BTreeSet<&str> = retain.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(k.as_str()));
    }
    Some(out)
}

/// Applies a strategic merge patch to a whole object of a built-in kind.
pub fn strategic_merge(orig: &Value, patch: &Value) -> Result<Value, ApiError> {
    strategic_merge_with(&BuiltinRules, orig, patch)
}

/// Applies a strategic merge patch to a whole object, lists and maps merging by `rules`.
pub(crate) fn strategic_merge_with(
    rules: &dyn MergeRules,
    orig: &Value,
    patch: &Value,
) -> Result<Value, ApiError> {
    let (Some(o), Some(p)) = (orig.as_object(), patch.as_object()) else {
        return Err(ApiError::bad_request(
            "a strategic merge patch must be a JSON object",
        ));
    };
    Ok(Value::Object(
        merge_map(rules, o, p, &mut Vec::new()).unwrap_or_default(),
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

fn key_elem(item: &Value, keys: &[String]) -> String {
    let fields: std::collections::BTreeMap<&str, &Value> = keys
        .iter()
        .map(|k| (k.as_str(), item.get(k).unwrap_or(&Value::Null)))
        .collect();
    format!("k:{}", json!(fields))
}

/// Leaf paths set by an apply configuration, with the paths of the list-map entries
/// it sets (owned as entries, `"."` in fieldsV1).
fn field_paths(
    rules: &dyn MergeRules,
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
                    Value::Array(items) => match rules.list(names, k) {
                        ListStrategy::MergeKeys(keys) => {
                            names.push(k.clone());
                            for item in items {
                                path.push(key_elem(item, &keys));
                                out.insert(path.clone());
                                field_paths(rules, item, path, names, out);
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
                            if items.is_empty() {
                                out.insert(path.clone());
                            }
                        }
                        ListStrategy::Atomic => {
                            out.insert(path.clone());
                        }
                    },
                    Value::Object(_) if rules.atomic_map(names, k) => {
                        out.insert(path.clone());
                    }
                    _ => {
                        names.push(k.clone());
                        field_paths(rules, child, path, names, out);
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

fn paths_of(rules: &dyn MergeRules, applied: &Value) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    field_paths(rules, applied, &mut Vec::new(), &mut Vec::new(), &mut out);
    out
}

/// Whether a managed path names a list-map entry itself (not one of its fields).
fn is_entry(path: &[String]) -> bool {
    path.last().is_some_and(|s| s.starts_with("k:"))
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
    // A path owned itself and with owned fields below it is marked with ".".
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            cur = cur
                .get_mut(seg)
                .and_then(Value::as_object_mut)
                .expect("inserted above");
        }
        if !cur.is_empty() {
            cur.insert(".".to_owned(), json!({}));
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, path: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            if m.contains_key(".") && !path.is_empty() {
                out.insert(path.clone());
            }
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
        list.iter().position(|i| {
            want.iter()
                .all(|(k, v)| i.get(k).unwrap_or(&Value::Null) == v)
        })
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

/// A managed path as upstream's structured-merge-diff prints it:
/// `.spec.ports[name="a"].value`, `.spec.tags[="x"]`.
fn path_string(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let fields: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = seg.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        } else {
            out.push_str(seg);
        }
    }
    out
}

/// Upstream's apply conflict error: one line for one conflict, else the conflicting
/// paths grouped by manager (managers sorted).
fn conflict_error(conflicts: &[(String, Vec<String>)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m:?}"),
                "field": path_string(p)})
        })
        .collect();
    let message = match conflicts {
        [(m, p)] => format!(
            "Apply failed with 1 conflict: conflict with {m:?}: {}",
            path_string(p)
        ),
        _ => {
            let mut by_manager: std::collections::BTreeMap<&str, Vec<String>> =
                std::collections::BTreeMap::new();
            for (m, p) in conflicts {
                by_manager.entry(m).or_default().push(path_string(p));
            }
            let lines: Vec<String> = by_manager
                .iter()
                .flat_map(|(m, paths)| {
                    std::iter::once(format!("conflicts with {m:?}:"))
                        .chain(paths.iter().map(|p| format!("- {p}")))
                })
                .collect();
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        }
    };
    let mut e = ApiError::new(409, "Conflict", message);
    e.details = Some(json!({"causes": causes}));
    e
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
    let rules = info.strategy.merge_rules();
    let paths = paths_of(&*rules, &applied);
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
    let rules = info.strategy.merge_rules();
    let rules = &*rules;
    let manager = opts.field_manager.as_deref().unwrap_or_default();
    let new_paths = paths_of(rules, applied);
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
    // Conflicts: fields another applier owns, set here to a different value (entries
    // of list maps are shared; their fields are compared).
    let mut conflicts = Vec::new();
    for (i, set) in &mut others {
        let owner = entries[*i]["manager"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let clashing: Vec<Vec<String>> = set
            .iter()
            .filter(|p| {
                !is_entry(p)
                    && new_paths.contains(*p)
                    && value_at(current, p) != value_at(applied, p)
            })
            .cloned()
            .collect();
        for p in clashing {
            if opts.force {
                set.remove(&p);
            } else {
                conflicts.push((owner.clone(), p));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflict_error(&conflicts));
    }
    let mut merged = strategic_merge_with(rules, current, &strip_directives(applied))?;
    // Fields this manager applied before but no longer does, and nobody else owns, go
    // (list-map entries whole).
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
        PatchType::Strategic => {
            strategic_merge_with(&*info.strategy.merge_rules(), current, &parse_json(body)?)
        }
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

#[cfg(test)]
mod custom_resource_tests {
    use super::*;

    fn widget_info() -> ResourceInfo {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                        "type": "object", "properties": {
                            "ports": {"type": "array", "x-kubernetes-list-type": "map",
                                "x-kubernetes-list-map-keys": ["name"],
                                "items": {"type": "object", "required": ["name"], "properties": {
                                    "name": {"type": "string"}, "port": {"type": "integer"},
                                    "proto": {"type": "string"}}}},
                            "tags": {"type": "array", "x-kubernetes-list-type": "set",
                                "items": {"type": "string"}},
                            "args": {"type": "array", "items": {"type": "string"}},
                            "selector": {"type": "object", "x-kubernetes-map-type": "atomic",
                                "additionalProperties": {"type": "string"}},
                            "labels": {"type": "object",
                                "additionalProperties": {"type": "string"}}}}}}}}]},
            "status": {"acceptedNames": {"plural": "widgets", "kind": "Widget",
                "listKind": "WidgetList", "singular": "widget"}}
        });
        crate::crd::custom::resources_of(&crd).remove(0)
    }

    fn by(manager: &str, force: bool) -> WriteOptions {
        WriteOptions {
            field_manager: Some(manager.into()),
            force,
            ..Default::default()
        }
    }

    fn widget(spec: Value) -> Value {
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w"}, "spec": spec})
    }

    #[test]
    fn list_map_entries_of_two_managers_merge_and_conflict_per_field() {
        let info = widget_info();
        let alice = apply_create(
            widget(json!({"ports": [{"name": "a", "port": 1}], "args": ["x"]})),
            "alice",
            &info,
        )
        .unwrap();
        assert_eq!(
            alice["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"],
            json!({"f:args": {}, "f:ports": {r#"k:{"name":"a"}"#: {".": {}, "f:name": {}, "f:port": {}}}})
        );
        // Bob adds another entry: both survive.
        let both = apply_existing(
            &alice,
            &widget(json!({"ports": [{"name": "b", "port": 2}]})),
            &info,
            &by("bob", false),
        )
        .unwrap();
        assert_eq!(
            both["spec"]["ports"],
            json!([{"name": "a", "port": 1}, {"name": "b", "port": 2}])
        );
        // Bob setting a field of alice's entry to another value conflicts on that field.
        let err = apply_existing(
            &both,
            &widget(json!({"ports": [{"name": "b", "port": 2}, {"name": "a", "port": 9}]})),
            &info,
            &by("bob", false),
        )
        .unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            r#"Apply failed with 1 conflict: conflict with "alice": .spec.ports[name="a"].port"#
        );
        // A new field of alice's entry is not a conflict: the entry is shared.
        let shared = apply_existing(
            &both,
            &widget(json!({"ports": [{"name": "b", "port": 2}, {"name": "a", "proto": "TCP"}]})),
            &info,
            &by("bob", false),
        )
        .unwrap();
        assert_eq!(
            shared["spec"]["ports"][0],
            json!({"name": "a", "port": 1, "proto": "TCP"})
        );
        // Forced, bob takes the field over.
        let forced = apply_existing(
            &both,
            &widget(json!({"ports": [{"name": "b", "port": 2}, {"name": "a", "port": 9}]})),
            &info,
            &by("bob", true),
        )
        .unwrap();
        assert_eq!(forced["spec"]["ports"][0]["port"], 9);
        let alice_fields = &forced["metadata"]["managedFields"][0];
        assert_eq!(alice_fields["manager"], "alice");
        assert_eq!(
            alice_fields["fieldsV1"]["f:spec"]["f:ports"],
            json!({r#"k:{"name":"a"}"#: {".": {}, "f:name": {}}})
        );
        // Alice dropping her entry removes it; bob's stays.
        let dropped = apply_existing(
            &both,
            &widget(json!({"args": ["x"]})),
            &info,
            &by("alice", false),
        )
        .unwrap();
        assert_eq!(dropped["spec"]["ports"], json!([{"name": "b", "port": 2}]));
    }

    #[test]
    fn sets_are_owned_per_value_and_atomic_maps_whole() {
        let info = widget_info();
        let alice = apply_create(
            widget(json!({"tags": ["x", "y"], "selector": {"app": "a"}, "labels": {"k": "v"}})),
            "alice",
            &info,
        )
        .unwrap();
        let f = &alice["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"];
        assert_eq!(f["f:tags"], json!({r#"v:"x""#: {}, r#"v:"y""#: {}}));
        assert_eq!(f["f:selector"], json!({}));
        assert_eq!(f["f:labels"], json!({"f:k": {}}));
        let bob = apply_existing(
            &alice,
            &widget(json!({"tags": ["y", "z"], "labels": {"j": "w"}})),
            &info,
            &by("bob", false),
        )
        .unwrap();
        assert_eq!(bob["spec"]["tags"], json!(["x", "y", "z"]));
        assert_eq!(bob["spec"]["labels"], json!({"k": "v", "j": "w"}));
        // An atomic map is replaced whole, and conflicts whole.
        let err = apply_existing(
            &bob,
            &widget(json!({"selector": {"tier": "b"}})),
            &info,
            &by("bob", false),
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            r#"Apply failed with 1 conflict: conflict with "alice": .spec.selector"#
        );
        let out = apply_existing(
            &bob,
            &widget(json!({"selector": {"tier": "b"}})),
            &info,
            &by("bob", true),
        )
        .unwrap();
        assert_eq!(out["spec"]["selector"], json!({"tier": "b"}));
        // Alice dropping "y" keeps it (bob owns it too); "x" goes.
        let out = apply_existing(
            &bob,
            &widget(json!({"selector": {"app": "a"}, "labels": {"k": "v"}})),
            &info,
            &by("alice", false),
        )
        .unwrap();
        assert_eq!(out["spec"]["tags"], json!(["y", "z"]));
    }

    #[test]
    fn conflicts_with_several_managers_are_grouped() {
        let err = conflict_error(&[
            ("b".into(), vec!["f:spec".into(), "f:x".into()]),
            ("a".into(), vec!["f:spec".into(), r#"v:"t""#.into()]),
            ("b".into(), vec!["f:y".into()]),
        ]);
        assert_eq!(
            err.message,
            "Apply failed with 3 conflicts: conflicts with \"a\":\n- .spec[=\"t\"]\nconflicts with \"b\":\n- .spec.x\n- .y"
        );
    }
}
