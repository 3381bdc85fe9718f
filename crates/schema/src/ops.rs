//! Defaulting and pruning, as apiextensions-apiserver's `structural/defaulting` and
//! `structural/pruning` packages.

use serde_json::{Map, Value};

use crate::error::join_path;
use crate::schema::{Additional, Node};

fn non_nullable_null(v: &Value, n: &Node) -> bool {
    v.is_null() && !n.nullable
}

/// Applies `default`s below `v`: a missing field, or a null one whose schema is not
/// nullable, gets its default; then each field, item and map value is defaulted in turn
/// (so defaults inside defaults apply too).
pub(crate) fn default(n: &Node, v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, prop) in &n.properties {
                let Some(d) = &prop.default else { continue };
                let missing = map.get(k).is_none_or(|x| non_nullable_null(x, prop));
                if missing {
                    map.insert(k.clone(), d.clone());
                }
            }
            for (k, x) in map.iter_mut() {
                if let Some(p) = n.properties.get(k) {
                    default(p, x);
                } else if let Some(Additional::Schema(s)) = &n.additional {
                    if let Some(d) = &s.default {
                        if non_nullable_null(x, s) {
                            *x = d.clone();
                        }
                    }
                    default(s, x);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = &n.items {
                for x in items.iter_mut() {
                    if let Some(d) = &item.default {
                        if non_nullable_null(x, item) {
                            *x = d.clone();
                        }
                    }
                    default(item, x);
                }
            }
        }
        _ => {}
    }
}

/// Drops null fields whose schema is neither nullable nor defaulted (upstream's
/// `PruneNonNullableNullsWithoutDefaults`), so that they read as absent.
pub(crate) fn drop_non_nullable_nulls(n: &Node, v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, x| match n.property(k) {
                Some(p) => !(x.is_null() && !p.nullable && p.default.is_none()),
                None => true,
            });
            for (k, x) in map.iter_mut() {
                if let Some(p) = n.property(k) {
                    drop_non_nullable_nulls(p, x);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = &n.items {
                for x in items.iter_mut() {
                    drop_non_nullable_nulls(item, x);
                }
            }
        }
        _ => {}
    }
}

/// Drops the fields the schema does not specify, collecting their paths.
///
/// `root` marks a resource root (the object itself, or an
/// `x-kubernetes-embedded-resource`), where `apiVersion`, `kind` and `metadata` stay.
pub(crate) fn prune(n: &Node, v: &mut Value, root: bool, path: &str, pruned: &mut Vec<String>) {
    match v {
        Value::Object(map) => prune_object(n, map, root, path, pruned),
        Value::Array(items) => {
            if let Some(item) = &n.items {
                for (i, x) in items.iter_mut().enumerate() {
                    prune(item, x, item.embedded, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}

fn prune_object(
    n: &Node,
    map: &mut Map<String, Value>,
    root: bool,
    path: &str,
    pruned: &mut Vec<String>,
) {
    let keeps_all = n.preserve_unknown
        || matches!(
            n.additional,
            Some(Additional::Bool(true)) | Some(Additional::Schema(_))
        );
    if !keeps_all {
        map.retain(|k, _| {
            let keep = n.properties.contains_key(k)
                || (root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"));
            if !keep {
                pruned.push(join_path(path, k));
            }
            keep
        });
    }
    for (k, x) in map.iter_mut() {
        let child_path = join_path(path, k);
        if root && matches!(k.as_str(), "apiVersion" | "kind") {
            continue;
        }
        if root && k == "metadata" {
            // metadata is an ObjectMeta whatever the schema says of its name
            prune_object_meta(x, &child_path, pruned);
            continue;
        }
        if let Some(p) = n.property(k) {
            prune(p, x, p.embedded, &child_path, pruned);
        }
    }
}

/// The fields of an ObjectMeta; others are dropped, as decoding into ObjectMeta does.
const OBJECT_META_FIELDS: [&str; 15] = [
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

fn prune_object_meta(meta: &mut Value, path: &str, pruned: &mut Vec<String>) {
    if let Value::Object(m) = meta {
        m.retain(|k, _| {
            let keep = OBJECT_META_FIELDS.contains(&k.as_str());
            if !keep {
                pruned.push(join_path(path, k));
            }
            keep
        });
    }
}
