//! How the lists and maps of a schema merge in server-side apply (upstream's
//! `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and `x-kubernetes-map-type`,
//! as structured-merge-diff reads them from a CRD's schema).

use crate::schema::Node;
use crate::Schema;

/// How a list merges when several appliers set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType<'a> {
    /// Replaced whole; owned whole by one manager (the default without
    /// `x-kubernetes-list-type`).
    Atomic,
    /// A set of scalars: each value is owned on its own (`v:"x"` in managed fields).
    Set,
    /// A map of objects keyed by the named fields: each entry is owned and merged on
    /// its own (`k:{"name":"a"}` in managed fields).
    Map(&'a [String]),
}

/// How an object (a struct or a map) merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    /// Each field is owned and merged on its own (the default).
    Granular,
    /// Replaced whole; owned whole by one manager (`x-kubernetes-map-type: atomic`).
    Atomic,
}

impl Schema {
    /// The schema node at `path`: property names from the root, where a name after a
    /// list names a property of the list's items (`["spec", "ports", "name"]` is
    /// `spec.ports[*].name`).
    fn node_at<S: AsRef<str>>(&self, path: &[S]) -> Option<&Node> {
        let mut n = &self.root;
        for seg in path {
            while n.ty.as_deref() == Some("array") {
                n = n.items.as_deref()?;
            }
            n = n.property(seg.as_ref())?;
        }
        Some(n)
    }

    /// The list type of the list at `path` (see [`Schema`]'s paths: property names,
    /// lists' items implied); [`ListType::Atomic`] where the schema says nothing or does
    /// not know the field, as upstream's "deduced" type for unknown fields.
    ///
    /// # Example
    ///
    /// ```
    /// use kcore_schema::{ListType, Schema};
    /// use serde_json::json;
    ///
    /// let schema = Schema::new(&json!({"type": "object", "properties": {"spec": {
    ///     "type": "object", "properties": {"ports": {
    ///         "type": "array", "x-kubernetes-list-type": "map",
    ///         "x-kubernetes-list-map-keys": ["name"],
    ///         "items": {"type": "object", "required": ["name"],
    ///                   "properties": {"name": {"type": "string"}}}}}}}}))
    /// .map_err(|errs| format!("{errs:?}"))?;
    /// assert_eq!(schema.list_type_at(&["spec", "ports"]), ListType::Map(&["name".to_owned()]));
    /// assert_eq!(schema.list_type_at(&["spec", "other"]), ListType::Atomic);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn list_type_at<S: AsRef<str>>(&self, path: &[S]) -> ListType<'_> {
        let Some(n) = self.node_at(path) else {
            return ListType::Atomic;
        };
        match n.list_type.as_deref() {
            Some("set") => ListType::Set,
            Some("map") if !n.list_map_keys.is_empty() => ListType::Map(&n.list_map_keys),
            _ => ListType::Atomic,
        }
    }

    /// The map type of the object at `path` (paths as [`Schema::list_type_at`]);
    /// [`MapType::Granular`] where the schema says nothing.
    pub fn map_type_at<S: AsRef<str>>(&self, path: &[S]) -> MapType {
        match self.node_at(path).and_then(|n| n.map_type.as_deref()) {
            Some("atomic") => MapType::Atomic,
            _ => MapType::Granular,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_and_map_types_at_paths() {
        let s = Schema::new(&json!({"type": "object", "properties": {"spec": {
            "type": "object", "properties": {
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "plain": {"type": "array", "items": {"type": "string"}},
                "sel": {"type": "object", "x-kubernetes-map-type": "atomic",
                        "properties": {"a": {"type": "string"}}},
                "entries": {"type": "array", "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name", "proto"],
                    "items": {"type": "object", "required": ["name", "proto"], "properties": {
                        "name": {"type": "string"}, "proto": {"type": "string"},
                        "hosts": {"type": "array", "x-kubernetes-list-type": "set",
                                  "items": {"type": "string"}}}}}}}}}))
        .unwrap();
        assert_eq!(s.list_type_at(&["spec", "tags"]), ListType::Set);
        assert_eq!(s.list_type_at(&["spec", "plain"]), ListType::Atomic);
        assert_eq!(s.list_type_at(&["spec", "missing"]), ListType::Atomic);
        let keys = ["name".to_owned(), "proto".to_owned()];
        assert_eq!(s.list_type_at(&["spec", "entries"]), ListType::Map(&keys));
        assert_eq!(s.list_type_at(&["spec", "entries", "hosts"]), ListType::Set);
        assert_eq!(s.map_type_at(&["spec", "sel"]), MapType::Atomic);
        assert_eq!(s.map_type_at(&["spec"]), MapType::Granular);
    }
}
