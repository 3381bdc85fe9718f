//! The StatefulSet controller: pods with stable names `<name>-<ordinal>` and stable
//! network identities (hostname = pod name, subdomain = the governing headless Service),
//! created in order and each waiting for its predecessors to be Running and Ready
//! (`OrderedReady`) or all at once (`Parallel`), removed from the highest ordinal down,
//! and updated from the highest ordinal down to the `partition`, one pod at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kcore_k8s::status_code;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use super::daemonset::CONTROLLER_REVISION_HASH;
use super::deployment::template_hash;
use super::history::{prune_revisions, revision_name, sync_revisions};
use super::replicaset::{apply_claim, claim};
use crate::cache::{Change, Store};
use crate::error::Error;
use crate::meta::{
    claimable, controller_index, controller_of, controller_ref, pod_is_available, pod_is_ready,
    ObjectKey, CONTROLLER_INDEX,
};
use crate::queue::WorkQueue;
use crate::runner::{Action, Reconciler};

/// Label with a StatefulSet pod's own name (for per-pod Services).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Label with a StatefulSet pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The state of one ordinal's pod, for the planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrdinalPod {
    /// Its template revision.
    pub revision: String,
    /// Running and Ready.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// Phase Failed or Succeeded: to be recreated.
    pub finished: bool,
}

/// One step of a StatefulSet sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StsAction {
    /// Create the pod of this ordinal.
    Create(i32),
    /// Delete the pod of this ordinal.
    Delete(i32),
}

/// Plans a StatefulSet sync (upstream's `updateStatefulSet`, with maxUnavailable 1):
/// `pods` maps ordinals to pods; `ordered` is `OrderedReady`; `rolling` is the
/// RollingUpdate strategy with `partition`.
pub fn sts_plan(
    replicas: i32,
    ordered: bool,
    rolling: bool,
    partition: i32,
    update_revision: &str,
    pods: &BTreeMap<i32, OrdinalPod>,
) -> Vec<StsAction> {
    let mut out = Vec::new();
    // Replicas [0, replicas): create missing, recreate finished, wait in order.
    for i in 0..replicas.max(0) {
        match pods.get(&i) {
            None => {
                out.push(StsAction::Create(i));
                if ordered {
                    return out;
                }
            }
            Some(p) if p.finished && !p.terminating => {
                out.push(StsAction::Delete(i));
                if ordered {
                    return out;
                }
            }
            Some(p) => {
                if ordered && (p.terminating || !p.ready) {
                    return out;
                }
            }
        }
    }
    // Condemned ordinals, highest first.
    let healthy =
        (0..replicas.max(0)).all(|i| pods.get(&i).is_some_and(|p| p.ready && !p.terminating));
    let condemned: Vec<(&i32, &OrdinalPod)> = pods.range(replicas.max(0)..).rev().collect();
    for (i, p) in condemned {
        if p.terminating {
            if ordered {
                return out;
            }
            continue;
        }
        if ordered && !healthy {
            return out;
        }
        out.push(StsAction::Delete(*i));
        if ordered {
            return out;
        }
    }
    if !out.is_empty() || !rolling {
        return out;
    }
    // Rolling update from the highest ordinal down to the partition, one at a time, when
    // every replica is up.
    if !healthy {
        return out;
    }
    for i in (partition.max(0)..replicas.max(0)).rev() {
        if let Some(p) = pods.get(&i) {
            if p.revision != update_revision {
                out.push(StsAction::Delete(i));
                return out;
            }
        }
    }
    out
}

/// The PersistentVolumeClaim a StatefulSet pod gets from one of its
/// `volumeClaimTemplates`: `<template>-<statefulset>-<ordinal>`.
pub fn claim_name(template: &str, sts: &str, ordinal: i32) -> String {
    format!("{template}-{sts}-{ordinal}")
}

fn ordinal_of(sts_name: &str, pod_name: &str) -> Option<i32> {
    pod_name
        .strip_prefix(sts_name)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// The StatefulSet controller.
pub(crate) struct StatefulSetController {
    client: Client,
    sets: Store<StatefulSet>,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
}

impl StatefulSetController {
    pub(crate) fn new(
        client: Client,
        sets: Store<StatefulSet>,
        pods: Store<Pod>,
        claims: Store<PersistentVolumeClaim>,
    ) -> Self {
        pods.add_index(CONTROLLER_INDEX, controller_index());
        Self {
            client,
            sets,
            pods,
            claims,
        }
    }

    pub(crate) fn on_set(
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<StatefulSet>) + Send + Sync {
        move |c| queue.add(ObjectKey::of(c.object().as_ref()))
    }

    pub(crate) fn on_pod(queue: WorkQueue<ObjectKey>) -> impl Fn(&Change<Pod>) + Send + Sync {
        move |c| {
            for p in std::iter::once(c.object()).chain(c.old()) {
                if let Some(r) = controller_of(&p.metadata).filter(|r| r.kind == "StatefulSet") {
                    queue.add(ObjectKey::namespaced(
                        p.metadata.namespace.clone().unwrap_or_default(),
                        &r.name,
                    ));
                }
            }
        }
    }

    fn new_pod(sts: &StatefulSet, ordinal: i32, revision: &str) -> Pod {
        Self::new_pod_from(sts, &sts.spec.template, ordinal, revision)
    }

    /// A pod of `sts` for `ordinal` from `t` (the update template, or below the partition
    /// the current revision's).
    fn new_pod_from(sts: &StatefulSet, t: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
        let name = format!("{}-{ordinal}", sts.metadata.name.as_deref().unwrap_or(""));
        let tm = t.metadata.clone().unwrap_or_default();
        let mut labels = tm.labels.unwrap_or_default();
        labels.insert(CONTROLLER_REVISION_HASH.into(), revision.to_owned());
        labels.insert(POD_NAME_LABEL.into(), name.clone());
        labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
        let mut spec = t.spec.clone().unwrap_or_default();
        spec.hostname = Some(name.clone());
        // Each claim template becomes a volume of that name bound to the pod's own claim.
        let set = sts.metadata.name.as_deref().unwrap_or("");
        for ct in sts.spec.volume_claim_templates.iter().flatten() {
            let vname = ct.metadata.name.clone().unwrap_or_default();
            let volumes = spec.volumes.get_or_insert_with(Vec::new);
            volumes.retain(|v| v.name != vname);
            volumes.push(Volume {
                name: vname.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&vname, set, ordinal),
                    read_only: None,
                }),
                ..Volume::default()
            });
        }
        if let Some(svc) = sts.spec.service_name.as_ref().filter(|s| !s.is_empty()) {
            spec.subdomain = Some(svc.clone());
        }
        Pod {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: sts.metadata.namespace.clone(),
                labels: Some(labels),
                annotations: tm.annotations,
                owner_references: Some(vec![controller_ref(sts)]),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status: None,
        }
    }
}

impl StatefulSetController {
    /// Creates the claims of `ordinal` from the volumeClaimTemplates if they are missing.
    /// With `persistentVolumeClaimRetentionPolicy.whenDeleted: Delete` they are owned by
    /// the StatefulSet (so the garbage collector removes them with it); by default
    /// (`Retain`) they outlive it, as upstream.
    async fn ensure_claims(&self, sts: &StatefulSet, ordinal: i32) -> Result<(), Error> {
        let ns = sts.metadata.namespace.as_deref().unwrap_or("");
        let set = sts.metadata.name.as_deref().unwrap_or("");
        let owned = sts
            .spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .and_then(|p| p.when_deleted.as_deref())
            == Some("Delete");
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        for ct in sts.spec.volume_claim_templates.iter().flatten() {
            let tname = ct.metadata.name.as_deref().unwrap_or("");
            let name = claim_name(tname, set, ordinal);
            let mut labels = ct.metadata.labels.clone().unwrap_or_default();
            labels.extend(sts.spec.selector.match_labels.clone().unwrap_or_default());
            let pvc = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.to_owned()),
                    labels: Some(labels),
                    annotations: ct.metadata.annotations.clone(),
                    owner_references: owned.then(|| vec![controller_ref(sts)]),
                    ..ObjectMeta::default()
                },
                spec: ct.spec.clone(),
                status: None,
            };
            match api.create(&PostParams::default(), &pvc).await {
                Ok(_) => tracing::debug!(claim = %format!("{ns}/{name}"), "created claim"),
                Err(e) if status_code(&e) == Some(409) => {}
                Err(e) => {
                    return Err(Error::api(
                        "create",
                        format!("persistentvolumeclaim {ns}/{name}"),
                    )(e))
                }
            }
        }
        Ok(())
    }
}

impl StatefulSetController {
    /// Creates the pod of `ordinal` (its claims first, as upstream's `createPersistentVolumeClaims`).
    async fn create_pod(
        &self,
        api: &Api<Pod>,
        sts: &StatefulSet,
        key: &ObjectKey,
        ordinal: i32,
        pod: Pod,
    ) -> Result<(), Error> {
        self.ensure_claims(sts, ordinal).await?;
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                tracing::debug!(statefulset = %key, ordinal, "created pod");
                Ok(())
            }
            Err(e) if status_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(Error::api(
                "create",
                format!("pod {}/{}-{ordinal}", key.ns(), key.name),
            )(e)),
        }
    }
}

/// The owners a StatefulSet's claim should have under its
/// `persistentVolumeClaimRetentionPolicy` (upstream's `updateClaimOwnerRefForSetAndPod`),
/// or `None` when `owners` already are right. `set` is the StatefulSet's reference; `pod`
/// the reference of the claim's pod, `scaled_down` whether that pod's ordinal is at or
/// above `replicas`:
///
/// | whenDeleted | whenScaled | owners |
/// |---|---|---|
/// | Retain | Retain | neither the set nor the pod |
/// | Delete | Retain | the set |
/// | Retain | Delete | the pod once scaled down, else none |
/// | Delete | Delete | the pod once scaled down, else the set |
///
/// Other owners are kept. A change of the policy so re-owns the claims that already
/// exist (KEP-1847, "Mutating PersistentVolumeClaimRetentionPolicy").
pub fn claim_owners(
    owners: &[OwnerReference],
    when_deleted: Option<&str>,
    when_scaled: Option<&str>,
    set: &OwnerReference,
    pod: &OwnerReference,
    scaled_down: bool,
) -> Option<Vec<OwnerReference>> {
    let delete_on_set = when_deleted == Some("Delete");
    let delete_on_scale = when_scaled == Some("Delete");
    let by_pod = delete_on_scale && scaled_down;
    let by_set = delete_on_set && !by_pod;
    let mut out: Vec<OwnerReference> = owners
        .iter()
        .filter(|o| (by_set || o.uid != set.uid) && (by_pod || o.uid != pod.uid))
        .cloned()
        .collect();
    for (want, r) in [(by_set, set), (by_pod, pod)] {
        if want && !out.iter().any(|o| o.uid == r.uid) {
            out.push(r.clone());
        }
    }
    (out != owners).then_some(out)
}

impl StatefulSetController {
    /// Gives the existing claims of `pod` (ordinal `ordinal`) the owners the set's
    /// retention policy asks for ([`claim_owners`]): with `whenScaled: Delete` a claim
    /// of a scaled-down ordinal is owned by its pod, so the garbage collector deletes it
    /// once the pod is gone; with `whenDeleted: Delete` the others are owned by the set.
    async fn update_claim_owners(
        &self,
        sts: &StatefulSet,
        ordinal: i32,
        pod: &Pod,
    ) -> Result<(), Error> {
        let policy = sts.spec.persistent_volume_claim_retention_policy.as_ref();
        let when_deleted = policy.and_then(|p| p.when_deleted.as_deref());
        let when_scaled = policy.and_then(|p| p.when_scaled.as_deref());
        let ns = sts.metadata.namespace.as_deref().unwrap_or("");
        let set = sts.metadata.name.as_deref().unwrap_or("");
        let scaled_down = ordinal >= sts.spec.replicas.unwrap_or(1);
        let set_ref = controller_ref(sts);
        let pod_ref = OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            controller: Some(false),
            block_owner_deletion: Some(true),
        };
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        for ct in sts.spec.volume_claim_templates.iter().flatten() {
            let name = claim_name(ct.metadata.name.as_deref().unwrap_or(""), set, ordinal);
            let Some(claim) = self.claims.get(&ObjectKey::namespaced(ns, &name)) else {
                continue;
            };
            if claim.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(owners) = claim_owners(
                claim
                    .metadata
                    .owner_references
                    .as_deref()
                    .unwrap_or_default(),
                when_deleted,
                when_scaled,
                &set_ref,
                &pod_ref,
                scaled_down,
            ) else {
                continue;
            };
            tracing::debug!(claim = %format!("{ns}/{name}"), "re-owning a claim for the retention policy");
            // the cache's resourceVersion: a claim changed meanwhile is a conflict, retried
            let patch = json!({"metadata": {"ownerReferences": owners,
                "resourceVersion": claim.metadata.resource_version}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => {
                    return Err(Error::api(
                        "patch",
                        format!("persistentvolumeclaim {ns}/{name}"),
                    )(e))
                }
            }
        }
        Ok(())
    }
}

impl Reconciler for StatefulSetController {
    fn name(&self) -> &'static str {
        "statefulset"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(sts) = self.sets.get(key) else {
            return Ok(Action::Done);
        };
        let uid = sts.metadata.uid.clone().unwrap_or_default();
        let deleting = sts.metadata.deletion_timestamp.is_some();
        // Its own pods and the namespace's orphans (the controller index).
        let candidates = claimable(&self.pods, key.ns(), &uid);
        let claimed = claim(&uid, deleting, &sts.spec.selector, &candidates);
        let owned = apply_claim(&self.client, sts.as_ref(), &claimed).await?;
        let collision = sts.status.as_ref().and_then(|s| s.collision_count);
        let revisions = if deleting {
            None
        } else {
            Some(sync_revisions(&self.client, sts.as_ref(), &sts.spec.template, collision).await?)
        };
        let update_revision = revisions.as_ref().map_or_else(
            || revision_name(&key.name, &template_hash(&sts.spec.template, collision)),
            |r| r.update.metadata.name.clone().unwrap_or_default(),
        );
        let replicas = sts.spec.replicas.unwrap_or(1);
        let ordered = sts.spec.pod_management_policy.as_deref() != Some("Parallel");
        let strategy = sts.spec.update_strategy.as_ref();
        let rolling = strategy.and_then(|s| s.type_.as_deref()) != Some("OnDelete");
        let partition = strategy
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0);
        let min_ready = sts.spec.min_ready_seconds.unwrap_or(0);
        let now = Timestamp::now();

        let mut pods: BTreeMap<i32, OrdinalPod> = BTreeMap::new();
        let mut by_ordinal: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
        for p in owned {
            let Some(i) = ordinal_of(&key.name, p.metadata.name.as_deref().unwrap_or("")) else {
                continue;
            };
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            pods.insert(
                i,
                OrdinalPod {
                    revision: p
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(CONTROLLER_REVISION_HASH))
                        .cloned()
                        .unwrap_or_default(),
                    ready: phase == Some("Running") && pod_is_ready(&p),
                    terminating: p.metadata.deletion_timestamp.is_some(),
                    finished: matches!(phase, Some("Failed" | "Succeeded")),
                },
            );
            by_ordinal.insert(i, p);
        }

        // The current revision's template, when it differs from the update revision.
        let current: Option<(String, PodTemplateSpec)> = sts
            .status
            .as_ref()
            .and_then(|s| s.current_revision.clone())
            .filter(|c| *c != update_revision)
            .and_then(|c| {
                let cr = revisions
                    .as_ref()?
                    .all
                    .iter()
                    .find(|cr| cr.metadata.name.as_deref() == Some(c.as_str()))?;
                let mut t = cr.data.0["spec"]["template"].clone();
                t.as_object_mut()?.remove("$patch");
                Some((c, serde_json::from_value(t).ok()?))
            });
        if !deleting {
            // claims follow the retention policy before a condemned pod goes
            for (i, p) in &by_ordinal {
                if p.metadata.deletion_timestamp.is_none() {
                    self.update_claim_owners(&sts, *i, p).await?;
                }
            }
            let api: Api<Pod> = Api::namespaced(self.client.clone(), key.ns());
            let plan = sts_plan(
                replicas,
                ordered,
                rolling,
                partition,
                &update_revision,
                &pods,
            );
            // the pods to create: one at a time when ordered, else in slow-start batches
            // of 1, 2, 4, ... at once (upstream's burst mode runs its replicas through
            // slowStartBatch), so a failing create costs one call
            let creates: Vec<i32> = plan
                .iter()
                .filter_map(|s| match s {
                    StsAction::Create(i) => Some(*i),
                    StsAction::Delete(_) => None,
                })
                .collect();
            let mut done = 0;
            let mut batch = 1;
            while done < creates.len() {
                let size = if ordered { 1 } else { batch };
                let chunk = &creates[done..creates.len().min(done + size)];
                let results = futures::future::join_all(chunk.iter().map(|&i| {
                    // Below the partition a pod is recreated at the current revision.
                    let pod = match &current {
                        Some((name, t)) if rolling && i < partition => {
                            Self::new_pod_from(&sts, t, i, name)
                        }
                        _ => Self::new_pod(&sts, i, &update_revision),
                    };
                    self.create_pod(&api, &sts, key, i, pod)
                }))
                .await;
                results.into_iter().collect::<Result<Vec<()>, Error>>()?;
                done += chunk.len();
                batch *= 2;
            }
            for step in plan {
                match step {
                    StsAction::Create(_) => {}
                    StsAction::Delete(i) => {
                        let name = format!("{}-{i}", key.name);
                        match api.delete(&name, &DeleteParams::default()).await {
                            Ok(_) => {
                                tracing::debug!(statefulset = %key, ordinal = i, "deleted pod")
                            }
                            Err(e) if status_code(&e) == Some(404) => {}
                            Err(e) => {
                                return Err(Error::api(
                                    "delete",
                                    format!("pod {}/{name}", key.ns()),
                                )(e))
                            }
                        }
                    }
                }
            }
        }

        let live: Vec<&Arc<Pod>> = by_ordinal
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let count = |f: &dyn Fn(&Pod) -> bool| {
            i32::try_from(live.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
        };
        let rev = |p: &Pod| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CONTROLLER_REVISION_HASH))
                .cloned()
                .unwrap_or_default()
        };
        let updated = count(&|p| rev(p) == update_revision);
        let old_status = sts.status.clone().unwrap_or_default();
        let current_revision =
            if updated == replicas && i32::try_from(live.len()).unwrap_or(0) == replicas {
                update_revision.clone()
            } else {
                old_status
                    .current_revision
                    .clone()
                    .unwrap_or_else(|| update_revision.clone())
            };
        if let Some(revs) = &revisions {
            let mut live: BTreeSet<String> = live.iter().map(|p| rev(p)).collect();
            live.insert(current_revision.clone());
            live.insert(update_revision.clone());
            let limit = sts.spec.revision_history_limit.unwrap_or(10);
            prune_revisions(&self.client, key.ns(), revs, &live, limit).await?;
        }
        let status = StatefulSetStatus {
            replicas: count(&|_| true),
            ready_replicas: Some(count(&pod_is_ready)),
            available_replicas: Some(count(&|p| pod_is_available(p, min_ready, now))),
            current_replicas: Some(count(&|p| rev(p) == current_revision)),
            updated_replicas: Some(updated),
            current_revision: Some(current_revision),
            update_revision: Some(update_revision),
            observed_generation: sts.metadata.generation,
            collision_count: old_status.collision_count,
            conditions: old_status.conditions.clone(),
        };
        if sts.status.as_ref() != Some(&status) {
            let patch = json!({ "status": status });
            match Api::<StatefulSet>::namespaced(self.client.clone(), key.ns())
                .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => {
                    return Err(Error::api("patch status of", format!("statefulset {key}"))(
                        e,
                    ))
                }
            }
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(rev: &str, ready: bool) -> OrdinalPod {
        OrdinalPod {
            revision: rev.into(),
            ready,
            terminating: false,
            finished: false,
        }
    }

    fn pods(list: &[(i32, OrdinalPod)]) -> BTreeMap<i32, OrdinalPod> {
        list.iter().cloned().collect()
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time() {
        use StsAction::*;
        assert_eq!(
            sts_plan(3, true, true, 0, "r1", &pods(&[])),
            vec![Create(0)]
        );
        // 0 exists but is not ready: wait.
        assert!(sts_plan(3, true, true, 0, "r1", &pods(&[(0, p("r1", false))])).is_empty());
        assert_eq!(
            sts_plan(3, true, true, 0, "r1", &pods(&[(0, p("r1", true))])),
            vec![Create(1)]
        );
        // Parallel: everything at once.
        assert_eq!(
            sts_plan(3, false, true, 0, "r1", &pods(&[])),
            vec![Create(0), Create(1), Create(2)]
        );
    }

    #[test]
    fn scale_down_from_the_highest_ordinal() {
        use StsAction::*;
        let all = pods(&[
            (0, p("r1", true)),
            (1, p("r1", true)),
            (2, p("r1", true)),
            (3, p("r1", true)),
        ]);
        assert_eq!(sts_plan(2, true, true, 0, "r1", &all), vec![Delete(3)]);
        assert_eq!(
            sts_plan(2, false, true, 0, "r1", &all),
            vec![Delete(3), Delete(2)]
        );
        // Ordered: not while a remaining replica is unhealthy.
        let mut sick = all.clone();
        sick.get_mut(&0).unwrap().ready = false;
        assert!(sts_plan(2, true, true, 0, "r1", &sick).is_empty());
        // Ordered: wait for a terminating condemned pod before the next.
        let mut going = all;
        going.get_mut(&3).unwrap().terminating = true;
        assert!(sts_plan(2, true, true, 0, "r1", &going).is_empty());
    }

    #[test]
    fn rolling_update_highest_first_down_to_partition() {
        use StsAction::*;
        let old = pods(&[(0, p("r1", true)), (1, p("r1", true)), (2, p("r1", true))]);
        assert_eq!(sts_plan(3, true, true, 0, "r2", &old), vec![Delete(2)]);
        let mut half = old.clone();
        half.insert(2, p("r2", true));
        assert_eq!(sts_plan(3, true, true, 0, "r2", &half), vec![Delete(1)]);
        // Partition 2: ordinals below stay at the old revision.
        assert!(sts_plan(3, true, true, 2, "r2", &half).is_empty());
        // OnDelete: no automatic replacement.
        assert!(sts_plan(3, true, false, 0, "r2", &old).is_empty());
        // A recreated pod not yet ready blocks the next.
        half.insert(2, p("r2", false));
        assert!(sts_plan(3, true, true, 0, "r2", &half).is_empty());
    }

    #[test]
    fn claims_are_reowned_when_the_retention_policy_changes() {
        let r = |kind: &str, uid: &str| OwnerReference {
            api_version: "v1".into(),
            kind: kind.into(),
            name: uid.into(),
            uid: uid.into(),
            controller: Some(kind == "StatefulSet"),
            block_owner_deletion: Some(true),
        };
        let (set, pod, other) = (r("StatefulSet", "s"), r("Pod", "p"), r("ConfigMap", "o"));
        let uids = |v: Option<Vec<OwnerReference>>| {
            v.map(|v| v.into_iter().map(|o| o.uid).collect::<Vec<_>>())
        };
        let (d, k) = (Some("Delete"), Some("Retain"));
        // (owners now, whenDeleted, whenScaled, scaled down) → new owners (None: unchanged)
        // (owners now, whenDeleted, whenScaled, scaled down, new owners)
        type Case<'a> = (
            &'a [&'a OwnerReference],
            Option<&'a str>,
            Option<&'a str>,
            bool,
            Option<&'a [&'a str]>,
        );
        let cases: &[Case<'_>] = &[
            // Retain → whenDeleted: Delete gives a claim that exists the set as owner
            (&[], d, k, false, Some(&["s"])),
            (&[&set], d, k, false, None),
            // back to Retain: the set lets go, other owners stay
            (&[&other, &set], k, k, false, Some(&["o"])),
            (&[], None, None, false, None),
            // whenScaled: Delete owns a scaled-down claim by its pod only
            (&[&set], d, d, true, Some(&["p"])),
            (&[], k, d, true, Some(&["p"])),
            (&[], k, d, false, None),
            // a pod scaled back up lets its claim go to the set again
            (&[&pod], d, d, false, Some(&["s"])),
            (&[&pod], k, d, false, Some(&[])),
        ];
        for (i, (now, wd, ws, down, want)) in cases.iter().enumerate() {
            let now: Vec<OwnerReference> = now.iter().map(|o| (*o).clone()).collect();
            let got = uids(claim_owners(&now, *wd, *ws, &set, &pod, *down));
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn ordinals_and_pods() {
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        let mut sts = StatefulSet::default();
        sts.metadata.name = Some("db".into());
        sts.spec.service_name = Some("db-headless".into());
        let pod = StatefulSetController::new_pod(&sts, 2, "rev");
        assert_eq!(pod.metadata.name.as_deref(), Some("db-2"));
        let spec = pod.spec.unwrap();
        assert_eq!(
            (spec.hostname.as_deref(), spec.subdomain.as_deref()),
            (Some("db-2"), Some("db-headless"))
        );
        assert_eq!(pod.metadata.labels.unwrap()[POD_INDEX_LABEL], "2");
    }
}
