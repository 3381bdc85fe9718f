//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`): spec validation as upstream
//! (names, group, scope, versions, schemas, subresources, conversion), defaults
//! (`singular`, `listKind`, conversion `None`), `status.storedVersions` kept up to
//! date, and the cleanup finalizer a deletion adds. The names check against other CRDs,
//! the conditions and the serving of the custom resources are the CRD controller's
//! (`crate::crd`).

use serde_json::{json, Value};

use super::Strategy;
use crate::crd::schema::VersionSchema;
use crate::defaults::{obj_mut, set_default};
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub};
use crate::table::col;

/// The finalizer that holds a deleted CRD until its custom resources are gone.
pub(crate) const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The served `CustomResourceDefinition` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    "customresourcedefinitions",
    false,
    &["crd", "crds"],
    &["api-extensions"],
    &[Sub::Status],
    false,
    &CrdStrategy
);

/// The `CustomResourceDefinition` strategy.
pub(crate) struct CrdStrategy;

/// A DNS-1035 label (names of resources and versions), with upstream's messages.
fn dns1035(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    (!ok).then(|| {
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_owned()
    })
}

/// Adds the storage version to `status.storedVersions` if missing.
fn record_storage_version(obj: &mut Value) {
    let storage = obj["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == true)
        .and_then(|v| v["name"].as_str())
        .map(str::to_owned);
    let Some(storage) = storage else { return };
    let status = obj_mut(obj, "status");
    if !status["storedVersions"].is_array() {
        status["storedVersions"] = json!([]);
    }
    if let Some(a) = status["storedVersions"].as_array_mut() {
        if !a.iter().any(|v| v == storage.as_str()) {
            a.push(json!(storage));
        }
    }
}

fn validate_names(names: &Value, causes: &mut Vec<Cause>) {
    let p = "spec.names";
    for k in ["plural", "singular"] {
        match names[k].as_str() {
            None | Some("") if k == "plural" => causes.push(Cause::required(format!("{p}.{k}"))),
            None | Some("") => {}
            Some(s) => {
                if let Some(why) = dns1035(s) {
                    causes.push(Cause::invalid(format!("{p}.{k}"), &names[k], &why));
                }
            }
        }
    }
    let kind = names["kind"].as_str().unwrap_or_default();
    if kind.is_empty() {
        causes.push(Cause::required(format!("{p}.kind")));
    } else if let Some(why) = dns1035(&kind.to_ascii_lowercase()) {
        causes.push(Cause::invalid(format!("{p}.kind"), &names["kind"], &why));
    }
    let list_kind = names["listKind"].as_str().unwrap_or_default();
    if let Some(why) = dns1035(&list_kind.to_ascii_lowercase()).filter(|_| !list_kind.is_empty()) {
        causes.push(Cause::invalid(
            format!("{p}.listKind"),
            &names["listKind"],
            &why,
        ));
    }
    if !kind.is_empty() && kind == list_kind {
        causes.push(Cause::invalid(
            format!("{p}.listKind"),
            &names["listKind"],
            "kind and listKind may not be the same or parsing will be ambiguous",
        ));
    }
    for (i, s) in names["shortNames"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(why) = s.as_str().and_then(dns1035) {
            causes.push(Cause::invalid(format!("{p}.shortNames[{i}]"), s, &why));
        }
    }
    for (i, s) in names["categories"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if s.as_str().is_none_or(str::is_empty) {
            causes.push(Cause::invalid(
                format!("{p}.categories[{i}]"),
                s,
                "must not be empty",
            ));
        }
    }
}

fn validate_versions(spec: &Value, causes: &mut Vec<Cause>) {
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage_msg = "must have exactly one version marked as storage version";
    if versions.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired",
            field: "spec.versions".into(),
            message: format!("Required value: {storage_msg}"),
        });
        return;
    }
    let mut seen = Vec::new();
    let mut unique = true;
    let mut storage = 0;
    for (i, v) in versions.iter().enumerate() {
        let f = format!("spec.versions[{i}]");
        let name = v["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            causes.push(Cause::required(format!("{f}.name")));
        } else if let Some(why) = dns1035(name) {
            causes.push(Cause::invalid(format!("{f}.name"), &v["name"], &why));
        }
        if seen.contains(&name) {
            unique = false;
        }
        seen.push(name);
        if v["storage"] == true {
            storage += 1;
        }
        let schema = &v["schema"]["openAPIV3Schema"];
        if schema.is_null() {
            causes.push(Cause {
                reason: "FieldValueRequired",
                field: format!("{f}.schema.openAPIV3Schema"),
                message: "Required value: schemas are required".into(),
            });
        } else if let Err(errs) = VersionSchema::new(schema, &format!("{f}.schema.openAPIV3Schema"))
        {
            causes.extend(errs);
        }
        let scale = &v["subresources"]["scale"];
        if scale.is_object() {
            for (k, prefix) in [
                ("specReplicasPath", ".spec."),
                ("statusReplicasPath", ".status."),
            ] {
                match scale[k].as_str() {
                    None | Some("") => {
                        causes.push(Cause::required(format!("{f}.subresources.scale.{k}")))
                    }
                    Some(p) if !p.starts_with(prefix) => causes.push(Cause::invalid(
                        format!("{f}.subresources.scale.{k}"),
                        &scale[k],
                        &format!(
                            "should be a json path under {}",
                            prefix.trim_end_matches('.')
                        ),
                    )),
                    Some(_) => {}
                }
            }
        }
        for (j, c) in v["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cf = format!("{f}.additionalPrinterColumns[{j}]");
            if c["name"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("{cf}.name")));
            }
            match c["type"].as_str() {
                Some("integer" | "number" | "string" | "boolean" | "date") => {}
                _ => causes.push(Cause::not_supported(
                    format!("{cf}.type"),
                    &c["type"],
                    &["integer", "number", "string", "boolean", "date"],
                )),
            }
            if c["jsonPath"]
                .as_str()
                .is_none_or(|p| crate::crd::JsonPath::parse(p).is_err())
            {
                causes.push(Cause::invalid(
                    format!("{cf}.jsonPath"),
                    &c["jsonPath"],
                    "must be a simple json path",
                ));
            }
        }
    }
    if !unique {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: "spec.versions".into(),
            message: "Invalid value: the versions: must contain unique version names".into(),
        });
    }
    if storage != 1 {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: "spec.versions".into(),
            message: format!("Invalid value: the versions: {storage_msg}"),
        });
    }
}

impl Strategy for CrdStrategy {
    fn kind(&self) -> &'static str {
        "CustomResourceDefinition"
    }

    fn defaults(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        let kind = spec["names"]["kind"].as_str().map(str::to_owned);
        if let Some(kind) = kind.filter(|k| !k.is_empty()) {
            let names = obj_mut(spec, "names");
            set_default(names, "singular", json!(kind.to_ascii_lowercase()));
            set_default(names, "listKind", json!(format!("{kind}List")));
        }
        set_default(obj_mut(spec, "conversion"), "strategy", json!("None"));
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        // As upstream: empty accepted names until the controller accepts them.
        obj["status"] = json!({"acceptedNames": {"plural": "", "kind": ""}});
        record_storage_version(obj);
    }

    fn prepare_for_update(&self, new: &mut Value, _old: &Value) {
        record_storage_version(new);
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        if group.is_empty() {
            causes.push(Cause::required("spec.group"));
        } else if !group.contains('.') {
            causes.push(Cause::invalid(
                "spec.group",
                &spec["group"],
                "should be a domain with at least one dot",
            ));
        } else if !crate::validate::is_dns1123_subdomain(group) {
            causes.push(Cause::invalid("spec.group", &spec["group"], "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"));
        }
        let plural = spec["names"]["plural"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        if name != format!("{plural}.{group}") {
            causes.push(Cause::invalid(
                "metadata.name",
                &obj["metadata"]["name"],
                "must be spec.names.plural+\".\"+spec.group",
            ));
        }
        match spec["scope"].as_str() {
            Some("Namespaced" | "Cluster") => {}
            None | Some("") => causes.push(Cause::required("spec.scope")),
            Some(_) => causes.push(Cause::not_supported(
                "spec.scope",
                &spec["scope"],
                &["Cluster", "Namespaced"],
            )),
        }
        validate_names(&spec["names"], causes);
        validate_versions(spec, causes);
        match spec["conversion"]["strategy"].as_str() {
            None | Some("None") => {}
            Some("Webhook") => causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: "spec.conversion.strategy".into(),
                message: "Unsupported value: \"Webhook\": conversion webhooks are not supported by this server: supported values: \"None\"".into(),
            }),
            Some(_) => causes.push(Cause::not_supported(
                "spec.conversion.strategy",
                &spec["conversion"]["strategy"],
                &["None", "Webhook"],
            )),
        }
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        self.validate(new, causes);
        if new["spec"]["scope"] != old["spec"]["scope"] {
            causes.push(Cause::invalid(
                "spec.scope",
                &new["spec"]["scope"],
                "field is immutable",
            ));
        }
        // A version still stored must stay in spec.versions.
        let versions: Vec<&str> = new["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .collect();
        for (i, s) in new["status"]["storedVersions"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if s.as_str().is_some_and(|s| !versions.contains(&s)) {
                causes.push(Cause::invalid(
                    format!("status.storedVersions[{i}]"),
                    s,
                    "must appear in spec.versions",
                ));
            }
        }
    }

    fn spec_of(&self, obj: &Value) -> Value {
        obj["spec"].clone()
    }

    /// A CRD not yet terminating goes through the cleanup of its custom resources
    /// first: its deletion marks it and adds [`CLEANUP_FINALIZER`].
    fn has_kind_finalizers(&self, obj: &Value) -> bool {
        obj["metadata"]["deletionTimestamp"].is_null()
    }

    fn mark_terminating(&self, obj: &mut Value) {
        let meta = obj_mut(obj, "metadata");
        if !meta["finalizers"].is_array() {
            meta["finalizers"] = json!([]);
        }
        if let Some(a) = meta["finalizers"].as_array_mut() {
            if !a.iter().any(|f| f == CLEANUP_FINALIZER) {
                a.push(json!(CLEANUP_FINALIZER));
            }
        }
        crate::crd::set_condition(
            obj,
            "Terminating",
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        );
    }

    fn table_columns(&self) -> Vec<Value> {
        vec![col("Name", "string", 0), col("Created At", "date", 0)]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        vec![
            json!(o["metadata"]["name"]),
            o["metadata"]["creationTimestamp"].clone(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    }

    fn causes(o: &Value) -> Vec<String> {
        let mut o = o.clone();
        CrdStrategy.defaults(&mut o);
        let mut c = Vec::new();
        CrdStrategy.validate(&o, &mut c);
        c.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_and_valid_spec() {
        let mut o = crd();
        CrdStrategy.defaults(&mut o);
        assert_eq!(o["spec"]["names"]["listKind"], "WidgetList");
        assert_eq!(o["spec"]["names"]["singular"], "widget");
        assert_eq!(o["spec"]["conversion"]["strategy"], "None");
        CrdStrategy.prepare_for_create(&mut o);
        assert_eq!(o["status"]["storedVersions"], json!(["v1"]));
        assert!(causes(&crd()).is_empty());
    }

    #[test]
    fn invalid_specs_name_their_fields() {
        let mut o = crd();
        o["metadata"]["name"] = json!("nope.example.com");
        assert!(causes(&o)[0].starts_with("metadata.name"));
        let mut o = crd();
        o["spec"]["group"] = json!("example");
        assert!(causes(&o).iter().any(|c| c.contains("at least one dot")));
        let mut o = crd();
        o["spec"]["names"]["plural"] = json!("Widgets");
        assert!(causes(&o)
            .iter()
            .any(|c| c.starts_with("spec.names.plural")));
        let mut o = crd();
        o["spec"]["versions"][0]["storage"] = json!(false);
        assert!(causes(&o)
            .iter()
            .any(|c| c.contains("exactly one version marked as storage")));
        let mut o = crd();
        let v = o["spec"]["versions"][0].clone();
        o["spec"]["versions"] = json!([v.clone(), v]);
        assert!(causes(&o)
            .iter()
            .any(|c| c.contains("unique version names")));
        let mut o = crd();
        o["spec"]["scope"] = json!("Global");
        assert!(causes(&o).iter().any(|c| c.starts_with("spec.scope")));
        let mut o = crd();
        o["spec"]["conversion"] = json!({"strategy": "Webhook"});
        assert!(causes(&o)
            .iter()
            .any(|c| c.starts_with("spec.conversion.strategy")));
        let mut o = crd();
        o["spec"]["versions"] = json!([]);
        assert!(causes(&o).iter().any(|c| c.starts_with("spec.versions")));
    }

    #[test]
    fn deletion_adds_the_cleanup_finalizer() {
        let mut o = crd();
        assert!(CrdStrategy.has_kind_finalizers(&o));
        CrdStrategy.mark_terminating(&mut o);
        assert_eq!(o["metadata"]["finalizers"], json!([CLEANUP_FINALIZER]));
        assert_eq!(o["status"]["conditions"][0]["type"], "Terminating");
    }
}
