//! The schema of one CRD version (`schema.openAPIV3Schema`) applied to custom resources:
//! the one place where a custom resource meets its schema.
//!
//! The engine is [`kcore_schema`]: [`VersionSchema::new`] checks that a CRD version's
//! schema is structural and compiles its CEL rules (on CRD create and update);
//! [`VersionSchema::default_and_prune`] drops fields the schema does not know (unless
//! `x-kubernetes-preserve-unknown-fields`) and fills in defaults; and
//! [`VersionSchema::validate`] checks the object against the schema and its
//! `x-kubernetes-validations` rules (with `oldSelf` and ratcheting on update), answering
//! with [`Cause`]s that carry the field path.

use std::sync::Arc;

use serde_json::Value;

use crate::error::Cause;

/// The compiled schema of one CRD version.
#[derive(Clone)]
pub(crate) struct VersionSchema {
    raw: Value,
    compiled: Arc<kcore_schema::Schema>,
}

impl std::fmt::Debug for VersionSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionSchema").finish_non_exhaustive()
    }
}

fn cause(e: kcore_schema::FieldError) -> Cause {
    Cause {
        reason: e.error_type.reason(),
        message: e.body(),
        field: e.field,
    }
}

impl VersionSchema {
    /// Checks and compiles a CRD version's `openAPIV3Schema` (`field` is its path in the
    /// CRD, for the causes).
    pub(crate) fn new(schema: &Value, field: &str) -> Result<Self, Vec<Cause>> {
        let compiled = kcore_schema::Schema::new(schema).map_err(|errs| {
            errs.into_iter()
                .map(|e| cause(e.prefixed(field)))
                .collect::<Vec<_>>()
        })?;
        Ok(Self {
            raw: schema.clone(),
            compiled: Arc::new(compiled),
        })
    }

    /// The schema as given, for OpenAPI documents.
    pub(crate) fn raw(&self) -> &Value {
        &self.raw
    }

    /// Prunes unknown fields (apiVersion, kind and metadata at the root are kept), then
    /// applies defaults, in upstream's order.
    pub(crate) fn default_and_prune(&self, obj: &mut Value) {
        self.compiled.prune(obj);
        self.compiled.default(obj);
    }

    /// The compiled schema (list and map types for server-side apply).
    pub(crate) fn compiled(&self) -> &kcore_schema::Schema {
        &self.compiled
    }

    /// Prunes unknown fields only.
    pub(crate) fn prune(&self, obj: &mut Value) {
        self.compiled.prune(obj);
    }

    /// Validates an object (on update `old` is the stored object, for transition rules
    /// and ratcheting); empty means valid.
    pub(crate) fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        self.compiled
            .validate(obj, old)
            .into_iter()
            .map(cause)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> VersionSchema {
        VersionSchema::new(
            &json!({"type": "object", "properties": {
                "spec": {"type": "object", "required": ["color"], "properties": {
                    "color": {"type": "string", "enum": ["red", "blue"]},
                    "size": {"type": "integer", "default": 3},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
                }},
                "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
            }}),
            "spec.versions[0].schema.openAPIV3Schema",
        )
        .unwrap()
    }

    #[test]
    fn defaults_prunes_and_validates() {
        let s = schema();
        let mut o = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "junk": 1, "spec": {"color": "red", "extra": true, "free": {"any": 1},
            "tags": [{"k": "a", "z": 1}]}});
        s.default_and_prune(&mut o);
        assert_eq!(o["spec"]["size"], 3);
        assert!(o.get("junk").is_none());
        assert!(o["spec"].get("extra").is_none());
        assert_eq!(o["spec"]["free"]["any"], 1);
        assert!(o["spec"]["tags"][0].get("z").is_none());
        assert_eq!(o["metadata"]["name"], "a");
        assert!(s.validate(&o, None).is_empty());
        let bad = json!({"spec": {"color": "green", "size": "big"}});
        let causes = s.validate(&bad, None);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.color", "spec.size"]);
        let missing = s.validate(&json!({"spec": {}}), None);
        assert_eq!(missing[0].field, "spec.color");
        assert_eq!(missing[0].reason, "FieldValueRequired");
    }

    #[test]
    fn schema_check_names_the_field() {
        let err = VersionSchema::new(&json!({"type": "strin"}), "s").unwrap_err();
        assert_eq!(err[0].field, "s.type");
        assert!(VersionSchema::new(&json!({"properties": {}}), "s").is_err());
    }
}
