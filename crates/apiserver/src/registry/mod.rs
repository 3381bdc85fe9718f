//! Per-kind strategies, as upstream's `pkg/registry/<group>/<kind>/strategy.go`: what the
//! generic store in `api/` does differently for one kind lives in that kind's file here.
//!
//! A [`Strategy`] says how a kind is defaulted, prepared on create and update, validated,
//! which of its fields count as spec (for `metadata.generation`) and which as status (reset
//! by a plain update when the kind has a status subresource), how it is deleted (graceful
//! deletion, finalizers of its own) and how it prints in a Table (`kubectl get`). Every method has the
//! default that fits a kind with no special rules, so a kind without a file here is served
//! by [`DefaultStrategy`].
//!
//! Field selectors are generic over JSON paths for built-in kinds; a strategy may limit
//! them ([`Strategy::selectable_field`], as custom resources do).
//!
//! Custom resources have no file here: their strategy is built at run time from their
//! CRD (`crate::crd::custom::CustomStrategy`), and their resources enter the
//! `Api`'s [`Registry`](crate::resources::Registry) when the CRD is established.
//!
//! Each kind's file also declares its served resource (`RESOURCE`: plural, scope, short
//! names, categories, subresources) with its strategy; adding a built-in kind is one new
//! file here plus one line in `resources::RESOURCES`. Kinds with no rules of their own
//! are listed there directly and get [`DefaultStrategy`].

use serde_json::{json, Value};

use crate::error::{ApiError, Cause};
use crate::table::{age, col};
use crate::validate;

pub(crate) mod apiservice;
pub(crate) mod certificatesigningrequest;
pub(crate) mod clusterrole;
pub(crate) mod clusterrolebinding;
pub(crate) mod configmap;
pub(crate) mod controllerrevision;
pub(crate) mod cronjob;
pub(crate) mod csidriver;
pub(crate) mod csistoragecapacity;
pub(crate) mod customresourcedefinition;
pub(crate) mod daemonset;
pub(crate) mod deployment;
pub(crate) mod endpoints;
pub(crate) mod endpointslice;
pub(crate) mod event;
pub(crate) mod events_v1;
pub(crate) mod horizontalpodautoscaler;
pub(crate) mod ingress;
pub(crate) mod ingressclass;
pub(crate) mod job;
pub(crate) mod lease;
pub(crate) mod limitrange;
pub(crate) mod metrics;
pub(crate) mod mutatingwebhookconfiguration;
pub(crate) mod namespace;
pub(crate) mod networkpolicy;
pub(crate) mod node;
pub(crate) mod persistentvolume;
pub(crate) mod persistentvolumeclaim;
pub(crate) mod pod;
pub(crate) mod pod_log;
pub(crate) mod poddisruptionbudget;
pub(crate) mod priorityclass;
pub(crate) mod replicaset;
pub(crate) mod resourcequota;
pub(crate) mod reviews;
pub(crate) mod role;
pub(crate) mod rolebinding;
pub(crate) mod secret;
pub(crate) mod service;
pub(crate) mod statefulset;
pub(crate) mod storageclass;
pub(crate) mod validatingadmissionpolicy;
pub(crate) mod validatingadmissionpolicybinding;
pub(crate) mod validatingwebhookconfiguration;
pub(crate) mod webhookconfiguration;

/// How the generic store treats objects of one kind.
pub(crate) trait Strategy: Send + Sync {
    /// The kind this strategy is for (`""` for [`DefaultStrategy`]).
    fn kind(&self) -> &str;

    /// Whether `metadata.name` must be an RFC 1123 label (otherwise a subdomain).
    fn name_is_label(&self) -> bool {
        false
    }

    /// The rule for names (by default from [`Strategy::name_is_label`]).
    fn name_rule(&self) -> validate::NameRule {
        if self.name_is_label() {
            validate::NameRule::Label
        } else {
            validate::NameRule::Subdomain
        }
    }

    /// The verbs served, when not all of them (kinds that are only created, never
    /// stored: the reviews).
    fn verbs(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// Upstream's `SetDefaults_*`, applied on create and on every update.
    fn defaults(&self, _obj: &mut Value) {}

    /// Server-owned fields of a new object, set before defaulting (a new Pod's phase and
    /// QoS class; a workload's status cleared).
    fn prepare_for_create(&self, _obj: &mut Value) {}

    /// Whether a plain update (not through `/status`) keeps the stored status, for kinds
    /// that have a status subresource.
    fn update_resets_status(&self) -> bool {
        true
    }

    /// Fields a plain update may not change, carried over from `old` (after the status
    /// reset).
    fn prepare_for_update(&self, _new: &mut Value, _old: &Value) {}

    /// Whether the store assigns a ClusterIP and NodePorts to objects of this kind.
    fn allocates_service_addresses(&self) -> bool {
        false
    }

    /// Kind-specific validation of a whole object (upstream's `Validate<Kind>`); metadata
    /// is validated by the caller. On update these rules run on the new object too,
    /// ratcheted (see [`validate`]).
    fn validate(&self, _obj: &Value, _causes: &mut Vec<Cause>) {}

    /// The rules of an update only (upstream's `Validate<Kind>Update` beyond the create
    /// rules): immutable fields and the allowed update paths.
    fn validate_update(&self, _new: &Value, _old: &Value, _causes: &mut Vec<Cause>) {}

    /// The part of an object whose change bumps `metadata.generation`.
    fn spec_of(&self, obj: &Value) -> Value {
        obj["spec"].clone()
    }

    /// On DELETE: `Some(grace seconds)` when the object must be marked for graceful
    /// deletion instead of removed (a pod bound to a node); `requested` is the request's
    /// `gracePeriodSeconds`.
    fn graceful_deletion(&self, _old: &Value, _requested: Option<i64>) -> Option<i64> {
        None
    }

    /// Whether the object still holds finalizers of its kind (outside
    /// `metadata.finalizers`) that keep it from being removed.
    fn has_kind_finalizers(&self, _obj: &Value) -> bool {
        false
    }

    /// Marks an object as terminating when its deletion starts.
    fn mark_terminating(&self, _obj: &mut Value) {}

    /// Whether writes wait for the watch cache to show them (kinds that admission reads
    /// from the cache).
    fn settle_in_cache(&self) -> bool {
        false
    }

    /// A built-in mutating admission on create that reads the objects of one other
    /// resource, named `(api version, plural)` (upstream's DefaultStorageClass reads the
    /// StorageClasses); [`Strategy::admit_create`] applies it.
    fn create_reads(&self) -> Option<(&'static str, &'static str)> {
        None
    }

    /// Applies the admission of [`Strategy::create_reads`] to a new object, given every
    /// object of that resource.
    fn admit_create(&self, _obj: &mut Value, _read: &[Value]) {}

    /// A built-in validating admission on update that reads the objects of one other
    /// resource, named `(api version, plural)`, when this update needs it (upstream's
    /// PersistentVolumeClaimResize reads the claim's StorageClass when it grows);
    /// [`Strategy::admit_update`] applies it.
    fn update_reads(&self, _new: &Value, _old: &Value) -> Option<(&'static str, &'static str)> {
        None
    }

    /// Applies the admission of [`Strategy::update_reads`]: `Err(why)` refuses the
    /// update with 403 Forbidden.
    fn admit_update(&self, _new: &Value, _old: &Value, _read: &[Value]) -> Result<(), String> {
        Ok(())
    }

    /// The Table column definitions (`kubectl get`).
    fn table_columns(&self) -> Vec<Value> {
        vec![col("Name", "string", 0), col("Age", "string", 0)]
    }

    /// The OpenAPI v3 schema of the kind, for kinds that publish one (custom resources).
    fn openapi_schema(&self) -> Option<Value> {
        None
    }

    /// The field (a field selector path) the shared watch fan-out indexes its watchers
    /// by, for a kind that has one (pods: `spec.nodeName`, the kubelets' watch).
    fn watch_index(&self) -> Option<&'static str> {
        None
    }

    /// Whether a field selector may name `field` (built-in kinds: any path).
    fn selectable_field(&self, _field: &str) -> bool {
        true
    }

    /// Drops the fields the kind does not know, beyond what its upstream type drops
    /// (custom resources: what their schema prunes).
    fn prune_unknown(&self, _obj: &mut Value) {}

    /// Why new objects are refused at the moment, if they are (the custom resources of
    /// a CRD being deleted).
    fn refuses_create(&self) -> Option<ApiError> {
        None
    }

    /// How the kind's lists and maps merge in server-side apply and strategic merge
    /// patches (custom resources: by their CRD's schema).
    fn merge_rules(&self) -> Box<dyn crate::patch::MergeRules + '_> {
        Box::new(crate::patch::BuiltinRules)
    }

    /// Whether PATCH accepts strategic merge patches (not for custom resources, as
    /// upstream).
    fn strategic_merge_patch(&self) -> bool {
        true
    }

    /// The stored form of an object when it differs from the served one (custom
    /// resources served in several versions are stored in their storage version).
    fn stored_form(&self, _obj: &Value) -> Option<Value> {
        None
    }

    /// A stored object as served by this resource (its version).
    fn serve_stored(&self, _obj: &mut Value) {}

    /// The resource, as `(group, plural)`, whose storage this one shares when it is a
    /// second view of another resource's objects (events.k8s.io Events are core Events,
    /// as upstream); [`Strategy::stored_form`] and [`Strategy::serve_stored`] convert.
    fn stored_as(&self) -> Option<(&'static str, &'static str)> {
        None
    }

    /// The scale of a scalable object: desired replicas, observed replicas and the
    /// label selector as a string (autoscaling/v1 `Scale`).
    fn scale(&self, obj: &Value) -> (i64, i64, String) {
        let sel_str = obj["spec"]["selector"]["matchLabels"]
            .as_object()
            .map(|ml| {
                ml.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        (
            obj["spec"]["replicas"].as_i64().unwrap_or(0),
            obj["status"]["replicas"].as_i64().unwrap_or(0),
            sel_str,
        )
    }

    /// Sets the desired replicas (a write of the `scale` subresource).
    fn set_replicas(&self, obj: &mut Value, replicas: Value) {
        obj["spec"]["replicas"] = replicas;
    }

    /// One object's Table cells, matching [`Strategy::table_columns`].
    fn table_cells(&self, o: &Value) -> Vec<Value> {
        vec![
            json!(o["metadata"]["name"]),
            json!(age(&o["metadata"]["creationTimestamp"])),
        ]
    }
}

/// The strategy of kinds with no special rules.
pub(crate) struct DefaultStrategy;

impl Strategy for DefaultStrategy {
    fn kind(&self) -> &'static str {
        ""
    }
}

/// Validates an object (metadata, then the rules of its kind's strategy `s`); `old` is
/// the stored object on update. An empty result means valid.
///
/// Ratcheting, as upstream: on update the create rules run on the new object, but a
/// fault the stored object already had (the same field, the same message) is let
/// through, so an object stored before a rule was enforced still takes metadata,
/// finalizer and status updates and can be deleted; only what the update changes is
/// held to the rules. The update rules ([`Strategy::validate_update`]) always apply.
pub(crate) fn validate(s: &dyn Strategy, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = create_rules(s, obj);
    if let Some(old) = old {
        if !causes.is_empty() {
            let before = create_rules(s, old);
            causes.retain(|c| !before.contains(c));
        }
        s.validate_update(obj, old, &mut causes);
    }
    causes
}

fn create_rules(s: &dyn Strategy, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    validate::metadata(s.name_rule(), obj, &mut causes);
    s.validate(obj, &mut causes);
    causes
}

/// The default class among `classes` as upstream's DefaultStorageClass and
/// DefaultIngressClass admissions pick it: of the classes `is_default` marks (and not
/// being deleted), the newest by `creationTimestamp`, then the first by name.
pub(crate) fn newest_default(
    classes: &[Value],
    is_default: impl Fn(&Value) -> bool,
) -> Option<&str> {
    classes
        .iter()
        .filter(|c| is_default(c) && c["metadata"]["deletionTimestamp"].is_null())
        .max_by(|a, b| {
            let ts = |o: &Value| {
                o["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            };
            let name = |o: &Value| o["metadata"]["name"].as_str().unwrap_or("").to_owned();
            ts(a).cmp(&ts(b)).then_with(|| name(b).cmp(&name(a)))
        })
        .and_then(|c| c["metadata"]["name"].as_str())
}

#[cfg(test)]
mod tests {
    use crate::resources::RESOURCES;

    #[test]
    fn each_resource_has_its_kinds_strategy_or_the_default() {
        for r in RESOURCES {
            let k = r.strategy.kind();
            assert!(
                k.is_empty() || k == r.kind,
                "{} has the {k} strategy",
                r.kind
            );
        }
        let pods = crate::resources::lookup("", "v1", "pods").unwrap();
        assert_eq!(pods.strategy.kind(), "Pod");
    }

    #[test]
    fn updates_ratchet_faults_the_stored_object_already_had() {
        use serde_json::json;
        let s = &super::pod::PodStrategy;
        let old = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]}});
        assert_eq!(
            super::validate(s, &old, None).len(),
            1,
            "the old fault counts on create"
        );
        let mut relabelled = old.clone();
        relabelled["metadata"]["labels"] = json!({"a": "b"});
        assert!(super::validate(s, &relabelled, Some(&old)).is_empty());
        let mut worse = relabelled.clone();
        worse["metadata"]["labels"] = json!({"a": "not valid"});
        let causes = super::validate(s, &worse, Some(&old));
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "metadata.labels");
    }
}
