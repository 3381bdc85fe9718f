//! ControllerRevisions for StatefulSets and DaemonSets, as upstream keeps them: one
//! `apps/v1` ControllerRevision per distinct pod template, named `<owner>-<hash>`,
//! labelled `controller-revision-hash`, holding the template as a patch
//! (`{"spec":{"template":{…,"$patch":"replace"}}}`, what `kubectl rollout undo` applies)
//! and numbered in order of use: returning to an earlier template renumbers its revision
//! rather than making a new one. Old revisions no pod uses are pruned to
//! `revisionHistoryLimit`.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kcore_k8s::status_code;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::{json, Value};

use super::daemonset::CONTROLLER_REVISION_HASH;
use super::deployment::template_hash;
use crate::error::Error;
use crate::meta::{controller_of, controller_ref};

/// The `data` of a ControllerRevision for `template`: a strategic merge patch that
/// replaces the owner's template with it.
pub fn revision_data(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The name of the ControllerRevision of `owner` for a template hash.
pub fn revision_name(owner: &str, hash: &str) -> String {
    format!("{owner}-{hash}")
}

/// Revisions to delete to keep `limit` of them: those not in `live`, lowest revision
/// first. Input: (name, revision number).
pub fn revisions_to_prune(
    revisions: &[(String, i64)],
    live: &BTreeSet<String>,
    limit: i32,
) -> Vec<String> {
    let mut dead: Vec<&(String, i64)> = revisions
        .iter()
        .filter(|(n, _)| !live.contains(n))
        .collect();
    let keep = usize::try_from(limit.max(0)).unwrap_or(0);
    if dead.len() <= keep {
        return Vec::new();
    }
    dead.sort_by_key(|(_, r)| *r);
    let excess = dead.len() - keep;
    dead.into_iter()
        .take(excess)
        .map(|(n, _)| n.clone())
        .collect()
}

/// The revisions of one owner after a sync.
#[derive(Debug, Clone)]
pub(crate) struct Revisions {
    /// The template hash of the current template.
    pub hash: String,
    /// The ControllerRevision of the current template.
    pub update: ControllerRevision,
    /// Every revision the owner has, including `update`.
    pub all: Vec<ControllerRevision>,
}

fn revision_of(cr: &ControllerRevision) -> i64 {
    cr.revision.unwrap_or(0)
}

/// Makes sure the ControllerRevision of `owner`'s current `template` exists and is the
/// newest; adopts nothing (revisions are always created with the owner reference).
pub(crate) async fn sync_revisions<O>(
    client: &Client,
    owner: &O,
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
) -> Result<Revisions, Error>
where
    O: Resource<DynamicType = ()>,
{
    let meta = owner.meta();
    let ns = meta.namespace.as_deref().unwrap_or("");
    let owner_name = meta.name.as_deref().unwrap_or("");
    let uid = meta.uid.as_deref().unwrap_or("");
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let mut all: Vec<ControllerRevision> = api
        .list(&ListParams::default())
        .await
        .map_err(Error::api(
            "list",
            format!("controllerrevisions in namespace {ns}"),
        ))?
        .items
        .into_iter()
        .filter(|cr| controller_of(&cr.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    let hash = template_hash(template, collision_count);
    let name = revision_name(owner_name, &hash);
    let data = revision_data(template);
    let max = all.iter().map(revision_of).max().unwrap_or(0);
    let pos = all
        .iter()
        .position(|cr| cr.metadata.name.as_deref() == Some(name.as_str()));
    let update = match pos {
        Some(i) if all[i].data.0 == data => {
            let cr = all[i].clone();
            if revision_of(&cr) < max {
                // Back to an earlier template (a rollback): it becomes the newest.
                let patch = json!({"revision": max + 1});
                let cr = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(Error::api(
                        "patch",
                        format!("controllerrevision {ns}/{name}"),
                    ))?;
                all[i] = cr.clone();
                cr
            } else {
                cr
            }
        }
        Some(_) => {
            return Err(Error::Invalid {
                object: format!("controllerrevision {ns}/{name}"),
                field: "data",
                reason: "hash collision with a different template; raise collisionCount".into(),
            })
        }
        None => {
            let mut labels = template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(CONTROLLER_REVISION_HASH.into(), hash.clone());
            let cr = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.to_owned()),
                    labels: Some(labels),
                    owner_references: Some(vec![controller_ref(owner)]),
                    ..ObjectMeta::default()
                },
                data: RawExtension(data.clone()),
                revision: Some(max + 1),
            };
            match api.create(&PostParams::default(), &cr).await {
                Ok(created) => {
                    tracing::debug!(revision = %name, number = max + 1, "created controllerrevision");
                    all.push(created.clone());
                    created
                }
                Err(e) if status_code(&e) == Some(409) => {
                    // Made by an earlier sync our list did not see yet.
                    let other = api
                        .get(&name)
                        .await
                        .map_err(Error::api("get", format!("controllerrevision {ns}/{name}")))?;
                    let ours = controller_of(&other.metadata).is_some_and(|r| r.uid == uid);
                    if !ours || other.data.0 != data {
                        return Err(Error::Invalid {
                            object: format!("controllerrevision {ns}/{name}"),
                            field: "data",
                            reason: "name taken by a different revision".into(),
                        });
                    }
                    all.push(other.clone());
                    other
                }
                Err(e) => {
                    return Err(Error::api(
                        "create",
                        format!("controllerrevision {ns}/{name}"),
                    )(e))
                }
            }
        }
    };
    Ok(Revisions { hash, update, all })
}

/// Deletes the revisions of `revs` beyond `limit` that are not `live`.
pub(crate) async fn prune_revisions(
    client: &Client,
    ns: &str,
    revs: &Revisions,
    live: &BTreeSet<String>,
    limit: i32,
) -> Result<(), Error> {
    let rows: Vec<(String, i64)> = revs
        .all
        .iter()
        .map(|cr| {
            (
                cr.metadata.name.clone().unwrap_or_default(),
                revision_of(cr),
            )
        })
        .collect();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    for name in revisions_to_prune(&rows, live, limit) {
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => tracing::debug!(revision = %name, "pruned controllerrevision"),
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => {
                return Err(Error::api(
                    "delete",
                    format!("controllerrevision {ns}/{name}"),
                )(e))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_a_replace_patch_of_the_template() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        }))
        .unwrap();
        let d = revision_data(&t);
        assert_eq!(d["spec"]["template"]["$patch"], "replace");
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx"
        );
        assert_eq!(revision_name("web", "abc"), "web-abc");
    }

    #[test]
    fn prune_keeps_live_and_newest() {
        let revs: Vec<(String, i64)> = (1..=5).map(|i| (format!("r{i}"), i)).collect();
        let live: BTreeSet<String> = ["r1".to_string(), "r5".to_string()].into();
        // Three dead revisions (2, 3, 4), limit 1: the two oldest go.
        assert_eq!(revisions_to_prune(&revs, &live, 1), vec!["r2", "r3"]);
        assert!(revisions_to_prune(&revs, &live, 10).is_empty());
        assert_eq!(revisions_to_prune(&revs, &live, 0).len(), 3);
    }
}
