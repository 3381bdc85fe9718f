//! Serving CustomResourceDefinitions: the CRD controller and the custom resources'
//! strategy.
//!
//! The controller (upstream's naming, establishing and finalizer controllers in one
//! loop) watches CRDs and, on every change:
//! - checks each CRD's names against the built-in resources and the other CRDs of its
//!   group (older CRDs keep their names), sets `status.acceptedNames` and the
//!   `NamesAccepted` and `Established` conditions;
//! - puts the custom resources of established CRDs into the `Api`'s
//!   [`Registry`](crate::resources::Registry) (before it reports them Established) and
//!   takes out those of CRDs that are gone;
//! - empties a deleted CRD (`Terminating`) of its custom resources in every namespace,
//!   then removes the `customresourcecleanup.apiextensions.k8s.io` finalizer so the CRD
//!   goes.
//!
//! The custom resources themselves go through the generic store like any kind, with a
//! [`custom::CustomStrategy`] per served version.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use crate::api::{Api, DeleteOptions, ListOptions, WriteOptions};
use crate::error::ApiError;
use crate::registry::customresourcedefinition::{CLEANUP_FINALIZER, RESOURCE};
use crate::resources::{self, Sub};

pub(crate) mod custom;
mod jsonpath;
pub(crate) mod schema;

pub(crate) use jsonpath::JsonPath;

/// Sets condition `ty` in `obj.status.conditions`; the transition time changes only
/// with the status. Returns whether anything changed.
pub(crate) fn set_condition(
    obj: &mut Value,
    ty: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> bool {
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    if !obj["status"]["conditions"].is_array() {
        obj["status"]["conditions"] = json!([]);
    }
    let conds = obj["status"]["conditions"]
        .as_array_mut()
        .expect("conditions is an array");
    let now = crate::api::now();
    match conds.iter_mut().find(|c| c["type"] == ty) {
        Some(c) if c["status"] == status && c["reason"] == reason && c["message"] == message => {
            false
        }
        Some(c) => {
            if c["status"] != status {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
            true
        }
        None => {
            conds.push(
                json!({"type": ty, "status": status, "lastTransitionTime": now,
                "reason": reason, "message": message}),
            );
            true
        }
    }
}

/// The names a resource holds in its group.
#[derive(Debug, Default, Clone)]
struct Held {
    plural: String,
    singular: String,
    short_names: Vec<String>,
    kind: String,
    list_kind: String,
}

impl Held {
    fn of(names: &Value) -> Self {
        let s = |k: &str| names[k].as_str().unwrap_or_default().to_owned();
        Self {
            plural: s("plural"),
            singular: s("singular"),
            short_names: names["shortNames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            kind: s("kind"),
            list_kind: s("listKind"),
        }
    }

    fn resource_names(&self) -> impl Iterator<Item = &str> {
        [self.plural.as_str(), self.singular.as_str()]
            .into_iter()
            .chain(self.short_names.iter().map(String::as_str))
            .filter(|n| !n.is_empty())
    }

    fn kinds(&self) -> impl Iterator<Item = &str> {
        [self.kind.as_str(), self.list_kind.as_str()]
            .into_iter()
            .filter(|n| !n.is_empty())
    }
}

/// The first conflict of `wanted` with names already `taken` in the group, as
/// upstream's naming controller reports it: `(reason, message)`.
fn conflict(wanted: &Held, taken: &[Held]) -> Option<(&'static str, String)> {
    let used = |n: &str| taken.iter().any(|t| t.resource_names().any(|x| x == n));
    let used_kind = |n: &str| taken.iter().any(|t| t.kinds().any(|x| x == n));
    let msg = |n: &str| format!("{n:?} is already in use");
    if used(&wanted.plural) {
        return Some(("PluralConflict", msg(&wanted.plural)));
    }
    if !wanted.singular.is_empty() && used(&wanted.singular) {
        return Some(("SingularConflict", msg(&wanted.singular)));
    }
    if let Some(s) = wanted.short_names.iter().find(|s| used(s)) {
        return Some(("ShortNamesConflict", msg(s)));
    }
    if used_kind(&wanted.kind) {
        return Some(("KindConflict", msg(&wanted.kind)));
    }
    if used_kind(&wanted.list_kind) {
        return Some(("ListKindConflict", msg(&wanted.list_kind)));
    }
    None
}

/// The names the built-in resources of `group` hold.
fn built_in_names(group: &str) -> Vec<Held> {
    resources::RESOURCES
        .iter()
        .filter(|r| r.group == group)
        .map(|r| Held {
            plural: r.plural.to_string(),
            singular: r.singular(),
            short_names: r.short_names.iter().map(str::to_owned).collect(),
            kind: r.kind.to_string(),
            list_kind: r.list_kind.to_string(),
        })
        .collect()
}

/// One pass of the controller over every CRD. Returns the revision it read and
/// whether work is left (a deleted CRD whose custom resources are still going).
pub(crate) async fn reconcile(api: &Api) -> Result<(String, bool), ApiError> {
    let list = api
        .list_in(&RESOURCE, None, &ListOptions::default())
        .await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut crds = list["items"].as_array().cloned().unwrap_or_default();
    crds.sort_by(|a, b| {
        let key = |o: &Value| {
            (
                o["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut taken: Vec<(String, Held)> = Vec::new();
    let mut serving = Vec::new();
    let mut pending = false;
    for crd in crds {
        let group = crd["spec"]["group"].as_str().unwrap_or_default().to_owned();
        let wanted = Held::of(&crd["spec"]["names"]);
        let mut others: Vec<Held> = built_in_names(&group);
        others.extend(
            taken
                .iter()
                .filter(|(g, _)| *g == group)
                .map(|(_, h)| h.clone()),
        );
        let mut new = crd.clone();
        match conflict(&wanted, &others) {
            None => {
                new["status"]["acceptedNames"] = crd["spec"]["names"].clone();
                set_condition(
                    &mut new,
                    "NamesAccepted",
                    "True",
                    "NoConflicts",
                    "no conflicts found",
                );
            }
            Some((reason, message)) => {
                set_condition(&mut new, "NamesAccepted", "False", reason, &message);
            }
        }
        let accepted = Held::of(&new["status"]["acceptedNames"]);
        let established = !accepted.plural.is_empty();
        if established {
            taken.push((group.clone(), accepted.clone()));
            let fingerprint = json!([
                crd["spec"],
                new["status"]["acceptedNames"],
                crd["metadata"]["deletionTimestamp"]
            ])
            .to_string();
            api.registry().set_custom(
                &group,
                &accepted.plural,
                &fingerprint,
                custom::resources_of(&new),
            );
            serving.push((group.clone(), accepted.plural.clone()));
            set_condition(
                &mut new,
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            );
        } else {
            set_condition(
                &mut new,
                "Established",
                "False",
                "NotAccepted",
                "not all names are accepted",
            );
        }
        if new["status"] != crd["status"] {
            let name = crd["metadata"]["name"].as_str().unwrap_or_default();
            match api
                .update_in(
                    &RESOURCE,
                    None,
                    name,
                    new.clone(),
                    Some(Sub::Status),
                    &WriteOptions::default(),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 404 || e.code == 409 => pending = true,
                Err(e) => return Err(e),
            }
        }
        if crd["metadata"]["deletionTimestamp"].is_string() && established {
            pending |= !cleanup(api, &new).await?;
        }
    }
    api.registry().retain_custom(&serving);
    Ok((rv, pending))
}

/// Deletes a terminating CRD's custom resources; once none is left, removes the
/// cleanup finalizer. Returns whether the CRD is done.
async fn cleanup(api: &Api, crd: &Value) -> Result<bool, ApiError> {
    let mut any = crd.clone();
    for v in any["spec"]["versions"].as_array_mut().into_iter().flatten() {
        v["served"] = json!(true);
    }
    let Some(info) = custom::resources_of(&any).into_iter().next() else {
        return Ok(true);
    };
    let left = api
        .delete_collection(
            &info,
            None,
            &ListOptions::default(),
            &DeleteOptions::default(),
        )
        .await?;
    let remaining = api.list_in(&info, None, &ListOptions::default()).await?;
    let still = remaining["items"].as_array().is_some_and(|a| !a.is_empty());
    tracing::debug!(
        crd = crd["metadata"]["name"].as_str().unwrap_or_default(),
        deleted = left["items"].as_array().map_or(0, Vec::len),
        still,
        "cleaning up custom resources"
    );
    if still {
        return Ok(false);
    }
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let cur = match api.get_in(&RESOURCE, None, name).await {
        Ok(c) => c,
        Err(e) if e.code == 404 => return Ok(true),
        Err(e) => return Err(e),
    };
    let mut next = cur.clone();
    if let Some(f) = next["metadata"]["finalizers"].as_array_mut() {
        f.retain(|x| x != CLEANUP_FINALIZER);
    }
    if next == cur {
        return Ok(true);
    }
    match api
        .update_in(&RESOURCE, None, name, next, None, &WriteOptions::default())
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.code == 404 => Ok(true),
        Err(e) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// The CRD controller: a pass at start, then one per change of any CRD (and every
/// second while a deleted CRD is being emptied). Runs until the task is dropped.
pub(crate) async fn run(api: Api) {
    loop {
        let (rv, pending) = match reconcile(&api).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e.message, "CRD controller pass failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let opts = ListOptions {
            resource_version: Some(rv),
            timeout_seconds: Some(if pending { 1 } else { 300 }),
            ..Default::default()
        };
        match api.watch_in(&RESOURCE, None, &opts).await {
            Ok(mut events) => {
                // Any event (or the end of the watch) starts the next pass.
                let _ = events.next().await;
            }
            Err(e) => {
                tracing::debug!(error = %e.message, "CRD watch failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_conflict_as_upstream_reports_them() {
        let taken = vec![Held::of(&json!({"plural": "widgets", "singular": "widget",
            "shortNames": ["wd"], "kind": "Widget", "listKind": "WidgetList"}))];
        let c = |n: Value| conflict(&Held::of(&n), &taken).map(|(r, m)| format!("{r}: {m}"));
        assert_eq!(
            c(json!({"plural": "widgets", "kind": "Other"})).unwrap(),
            "PluralConflict: \"widgets\" is already in use"
        );
        assert_eq!(
            c(json!({"plural": "gadgets", "shortNames": ["wd"], "kind": "Gadget"})).unwrap(),
            "ShortNamesConflict: \"wd\" is already in use"
        );
        assert_eq!(
            c(json!({"plural": "gadgets", "kind": "Widget"})).unwrap(),
            "KindConflict: \"Widget\" is already in use"
        );
        assert!(c(json!({"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList"})).is_none());
        assert!(built_in_names("apps")
            .iter()
            .any(|h| h.plural == "deployments"));
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let mut o = json!({});
        assert!(set_condition(&mut o, "Established", "True", "R", "m"));
        assert!(!set_condition(&mut o, "Established", "True", "R", "m"));
        assert!(set_condition(&mut o, "Established", "False", "R2", "m2"));
        assert_eq!(o["status"]["conditions"].as_array().unwrap().len(), 1);
    }
}
