//! The strategy of a custom resource: what one served version of a CRD asks of the
//! generic store (schema, status and scale subresources, printer columns, selectable
//! fields, the storage version), and the [`ResourceInfo`]s a CRD serves.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{json, Value};

use super::jsonpath::JsonPath;
use super::schema::VersionSchema;
use crate::error::{ApiError, Cause};
use crate::registry::Strategy;
use crate::resources::{Names, ResourceInfo, StrategyRef, Sub};
use crate::table::{age, col};

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    ty: String,
    format: String,
    description: String,
    priority: u8,
    path: JsonPath,
}

/// The scale subresource's paths.
#[derive(Debug, Clone)]
struct ScalePaths {
    spec_replicas: JsonPath,
    status_replicas: JsonPath,
    label_selector: Option<JsonPath>,
}

/// The rules of one served version of a CRD.
#[derive(Debug)]
pub(crate) struct CustomStrategy {
    kind: String,
    api_version: String,
    storage_api_version: String,
    schema: Option<VersionSchema>,
    status: bool,
    scale: Option<ScalePaths>,
    columns: Vec<Column>,
    selectable: Vec<String>,
    /// The CRD is being deleted: no new objects.
    terminating: bool,
}

/// Parses `.spec.replicas`-style paths of a CRD; `None` if the path is not simple.
fn path(v: &Value) -> Option<JsonPath> {
    JsonPath::parse(v.as_str()?).ok()
}

/// Keeps an object's metadata to the `ObjectMeta` shape and the object a JSON object.
fn normalize(mut v: Value) -> Result<Value, serde_json::Error> {
    if !v.is_object() {
        return Err(serde::de::Error::custom(
            "a custom resource must be a JSON object",
        ));
    }
    let meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
        serde_json::from_value(v["metadata"].take())?;
    v["metadata"] = serde_json::to_value(meta)?;
    Ok(v)
}

/// The served resources (one per served version) of an established CRD, from its
/// spec and accepted names.
pub(crate) fn resources_of(crd: &Value) -> Vec<ResourceInfo> {
    let spec = &crd["spec"];
    let names = &crd["status"]["acceptedNames"];
    let group = spec["group"].as_str().unwrap_or_default().to_owned();
    let kind = names["kind"].as_str().unwrap_or_default().to_owned();
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage = versions
        .iter()
        .find(|v| v["storage"] == true)
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default()
        .to_owned();
    let gv = |v: &str| format!("{group}/{v}");
    versions
        .iter()
        .filter(|v| v["served"] == true)
        .map(|v| {
            let version = v["name"].as_str().unwrap_or_default().to_owned();
            let subs = &v["subresources"];
            let mut subresources = Vec::new();
            if subs["status"].is_object() {
                subresources.push(Sub::Status);
            }
            let scale = subs["scale"].as_object().and_then(|s| {
                Some(ScalePaths {
                    spec_replicas: path(s.get("specReplicasPath")?)?,
                    status_replicas: path(s.get("statusReplicasPath")?)?,
                    label_selector: s.get("labelSelectorPath").and_then(path),
                })
            });
            if scale.is_some() {
                subresources.push(Sub::Scale);
            }
            let columns = v["additionalPrinterColumns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    Some(Column {
                        name: c["name"].as_str()?.to_owned(),
                        ty: c["type"].as_str().unwrap_or("string").to_owned(),
                        format: c["format"].as_str().unwrap_or_default().to_owned(),
                        description: c["description"].as_str().unwrap_or_default().to_owned(),
                        priority: c["priority"].as_u64().unwrap_or(0).min(255) as u8,
                        path: path(&c["jsonPath"])?,
                    })
                })
                .collect();
            let selectable = v["selectableFields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["jsonPath"].as_str())
                .map(|p| p.trim_start_matches('.').to_owned())
                .collect();
            let schema = VersionSchema::new(&v["schema"]["openAPIV3Schema"], "").ok();
            let strategy = CustomStrategy {
                kind: kind.clone(),
                api_version: gv(&version),
                storage_api_version: gv(&storage),
                schema,
                status: subresources.contains(&Sub::Status),
                scale,
                columns,
                selectable,
                terminating: crd["metadata"]["deletionTimestamp"].is_string(),
            };
            ResourceInfo {
                group: Cow::Owned(group.clone()),
                version: Cow::Owned(version),
                kind: Cow::Owned(kind.clone()),
                list_kind: Cow::Owned(names["listKind"].as_str().unwrap_or_default().to_owned()),
                plural: Cow::Owned(names["plural"].as_str().unwrap_or_default().to_owned()),
                singular: names["singular"].as_str().map(|s| Cow::Owned(s.to_owned())),
                namespaced: spec["scope"] == "Namespaced",
                short_names: Names::Owned(strs(&names["shortNames"])),
                categories: Names::Owned(strs(&names["categories"])),
                subresources: Cow::Owned(subresources),
                create_on_update: false,
                normalize,
                strategy: StrategyRef::Shared(Arc::new(strategy)),
            }
        })
        .collect()
}

impl Strategy for CustomStrategy {
    fn kind(&self) -> &str {
        &self.kind
    }

    fn defaults(&self, obj: &mut Value) {
        if let Some(s) = &self.schema {
            s.default_and_prune(obj);
        }
    }

    fn prune_unknown(&self, obj: &mut Value) {
        if let Some(s) = &self.schema {
            s.prune(obj);
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        if self.status {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        if let Some(s) = &self.schema {
            causes.extend(s.validate(obj, None));
        }
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        if let Some(s) = &self.schema {
            causes.extend(s.validate(new, Some(old)));
        }
    }

    /// Everything but metadata (and status, with a status subresource), as upstream.
    fn spec_of(&self, obj: &Value) -> Value {
        let mut o = obj.clone();
        if let Some(m) = o.as_object_mut() {
            for k in ["metadata", "apiVersion", "kind"] {
                m.remove(k);
            }
            if self.status {
                m.remove("status");
            }
        }
        o
    }

    fn openapi_schema(&self) -> Option<Value> {
        Some(
            self.schema
                .as_ref()
                .map(|s| s.raw().clone())
                .unwrap_or_else(
                    || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
                ),
        )
    }

    fn selectable_field(&self, field: &str) -> bool {
        matches!(field, "metadata.name" | "metadata.namespace")
            || self.selectable.iter().any(|f| f == field)
    }

    fn merge_rules(&self) -> Box<dyn crate::patch::MergeRules + '_> {
        Box::new(crate::patch::SchemaRules(
            self.schema.as_ref().map(VersionSchema::compiled),
        ))
    }

    fn strategic_merge_patch(&self) -> bool {
        false
    }

    fn refuses_create(&self) -> Option<ApiError> {
        self.terminating.then(|| {
            ApiError::new(
                405,
                "MethodNotAllowed",
                "create not allowed while custom resource definition is terminating",
            )
        })
    }

    fn stored_form(&self, obj: &Value) -> Option<Value> {
        (self.api_version != self.storage_api_version).then(|| {
            let mut o = obj.clone();
            o["apiVersion"] = json!(self.storage_api_version);
            o
        })
    }

    fn serve_stored(&self, obj: &mut Value) {
        if obj["apiVersion"] != self.api_version.as_str() {
            obj["apiVersion"] = json!(self.api_version);
        }
    }

    fn scale(&self, obj: &Value) -> (i64, i64, String) {
        let Some(s) = &self.scale else {
            return (0, 0, String::new());
        };
        let int = |p: &JsonPath| p.first(obj).and_then(Value::as_i64).unwrap_or(0);
        let selector = s
            .label_selector
            .as_ref()
            .and_then(|p| p.first(obj))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        (int(&s.spec_replicas), int(&s.status_replicas), selector)
    }

    fn set_replicas(&self, obj: &mut Value, replicas: Value) {
        if let Some(s) = &self.scale {
            s.spec_replicas.set(obj, replicas);
        }
    }

    fn table_columns(&self) -> Vec<Value> {
        let mut cols = vec![col("Name", "string", 0)];
        if self.columns.is_empty() {
            cols.push(col("Age", "date", 0));
        }
        for c in &self.columns {
            cols.push(json!({"name": c.name, "type": c.ty, "format": c.format,
                "description": c.description, "priority": c.priority}));
        }
        cols
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let mut cells = vec![json!(o["metadata"]["name"])];
        if self.columns.is_empty() {
            cells.push(json!(age(&o["metadata"]["creationTimestamp"])));
        }
        for c in &self.columns {
            let found = c.path.find(o);
            let cell = match found.as_slice() {
                [] => Value::Null,
                [v] if c.ty == "date" => match v.as_str() {
                    Some(_) => json!(age(v)),
                    None => (*v).clone(),
                },
                [v] => (*v).clone(),
                many => json!(many
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        v => v.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(",")),
            };
            cells.push(cell);
        }
        cells
    }
}
