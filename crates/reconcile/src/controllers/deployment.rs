//! The Deployment controller: one ReplicaSet per pod template (named and labelled by the
//! `pod-template-hash`), RollingUpdate within maxSurge / maxUnavailable, Recreate, the
//! revision annotation (and so `kubectl rollout undo`), revisionHistoryLimit clean-up,
//! pause / resume, proportional scaling during a rollout, status and conditions.
//!
//! The decisions are pure functions over numbers ([`new_rs_replicas`],
//! [`old_rs_scale_down`], [`proportional_scale`], ...) tested by tables, as upstream's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kcore_k8s::{label_selector_is_empty, label_selector_matches, status_code};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use super::replicaset::{apply_claim, claim};
use crate::cache::{Change, Store};
use crate::error::Error;
use crate::meta::{
    claimable, controller_index, controller_index_value, controller_of, controller_ref, fnv32a,
    safe_encode, ObjectKey, CONTROLLER_INDEX,
};
use crate::queue::WorkQueue;
use crate::runner::{Action, Reconciler};

/// Label on a ReplicaSet's selector, template and pods naming its template's hash.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Annotation with a rollout's revision number, on the Deployment and its ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Annotation on a ReplicaSet: the Deployment's replicas when the RS was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Annotation on a ReplicaSet: replicas + maxSurge when the RS was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Annotation on a ReplicaSet: the earlier revisions it served (after rollbacks).
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The hash naming a pod template: FNV-1a over its JSON form and the collision count,
/// rendered with upstream's safe alphabet.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut data = serde_json::to_vec(template).unwrap_or_default();
    if let Some(c) = collision_count {
        data.extend_from_slice(&c.to_le_bytes());
    }
    safe_encode(fnv32a(&data))
}

fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut() {
        if let Some(l) = m.labels.as_mut() {
            l.remove(POD_TEMPLATE_HASH);
            if l.is_empty() {
                m.labels = None;
            }
        }
    }
    t
}

/// Whether two templates are equal once the `pod-template-hash` label is ignored.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// Resolves an absolute number or a percentage of `total`, rounding up or down.
pub fn scaled_value(
    v: Option<&IntOrString>,
    total: i32,
    default_pct: i32,
    round_up: bool,
) -> Result<i32, String> {
    match v {
        None => Ok(percent_of(default_pct, total, round_up)),
        Some(IntOrString::Int(i)) => Ok(*i),
        Some(IntOrString::String(s)) => {
            let pct: i32 = s
                .strip_suffix('%')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("invalid value {s:?}: not an integer or a percentage"))?;
            Ok(percent_of(pct, total, round_up))
        }
    }
}

fn percent_of(pct: i32, total: i32, round_up: bool) -> i32 {
    let x = i64::from(pct) * i64::from(total);
    let v = if round_up {
        (x + 99).div_euclid(100)
    } else {
        x.div_euclid(100)
    };
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// maxSurge (rounded up) and maxUnavailable (rounded down) for `desired` replicas; both
/// zero would deadlock a rollout, so maxUnavailable becomes 1 then.
pub fn resolve_fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), String> {
    let s = scaled_value(surge, desired, 25, true)?;
    let u = scaled_value(unavailable, desired, 25, false)?;
    if s == 0 && u == 0 {
        return Ok((0, 1));
    }
    Ok((s, u))
}

/// The replica count of the new ReplicaSet in a rolling update: grow it as far as the
/// surge allows, never past `desired`; shrink it to `desired` if larger.
pub fn new_rs_replicas(desired: i32, max_surge: i32, all_replicas: i32, new_replicas: i32) -> i32 {
    if new_replicas >= desired {
        return desired;
    }
    let max_total = desired + max_surge;
    if all_replicas >= max_total {
        return new_replicas;
    }
    let up = (max_total - all_replicas).min(desired - new_replicas);
    new_replicas + up
}

/// Replicas and available replicas of one ReplicaSet, for the pure rollout math.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsCounts {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

/// New `spec.replicas` for each old ReplicaSet (given oldest first) in a rolling update:
/// first the unhealthy replicas go, then healthy ones as long as at least
/// `desired - max_unavailable` pods stay available.
///
/// A ReplicaSet never counts as more available than its `spec.replicas`: available pods
/// above that are ones its controller is deleting (a status written before it saw, or
/// acted on, a scale-down). Counting them let two scale-downs in a row breach
/// maxUnavailable.
pub fn old_rs_scale_down(
    desired: i32,
    max_unavailable: i32,
    new: RsCounts,
    olds: &[RsCounts],
) -> Vec<i32> {
    let clamp = |c: RsCounts| RsCounts {
        replicas: c.replicas,
        available: c.available.clamp(0, c.replicas.max(0)),
    };
    let new = clamp(new);
    let olds: Vec<RsCounts> = olds.iter().copied().map(clamp).collect();
    let olds = olds.as_slice();
    let mut out: Vec<i32> = olds.iter().map(|o| o.replicas).collect();
    let old_total: i32 = olds.iter().map(|o| o.replicas).sum();
    if old_total == 0 {
        return out;
    }
    let all_pods = old_total + new.replicas;
    let min_available = desired - max_unavailable;
    let new_unavailable = new.replicas - new.available;
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return out;
    }
    // Unhealthy replicas first: removing them costs no availability.
    let mut cleaned = 0;
    for (i, o) in olds.iter().enumerate() {
        if cleaned >= max_scaled_down {
            break;
        }
        if out[i] == 0 || out[i] <= o.available {
            continue;
        }
        let n = (max_scaled_down - cleaned).min(out[i] - o.available.max(0));
        out[i] -= n;
        cleaned += n;
    }
    // Then healthy ones while availability allows.
    let available: i32 = olds.iter().map(|o| o.available).sum::<i32>() + new.available;
    if available <= min_available {
        return out;
    }
    let total_down = available - min_available;
    let mut down = 0;
    for r in out.iter_mut() {
        if down >= total_down {
            break;
        }
        if *r == 0 {
            continue;
        }
        let n = (*r).min(total_down - down);
        *r -= n;
        down += n;
    }
    out
}

/// One ReplicaSet in a proportional scaling: its replicas and its `max-replicas`
/// annotation (the size of the Deployment, surge included, when it was last scaled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleInput {
    /// `spec.replicas`.
    pub replicas: i32,
    /// The `deployment.kubernetes.io/max-replicas` annotation.
    pub max_replicas: Option<i32>,
    /// Position by age: larger is newer.
    pub age_rank: usize,
}

/// Scales the active ReplicaSets of a rollout to a new Deployment size proportionally to
/// their current sizes (upstream's `scale`); `fallback_max` stands in for a missing
/// annotation. Leftovers go to the largest ReplicaSet.
pub fn proportional_scale(
    rss: &[ScaleInput],
    desired: i32,
    max_surge: i32,
    fallback_max: i32,
) -> Vec<i32> {
    let all: i32 = rss.iter().map(|r| r.replicas).sum();
    let allowed = if desired > 0 { desired + max_surge } else { 0 };
    let to_add = allowed - all;
    let mut order: Vec<usize> = (0..rss.len()).collect();
    // Largest first; ties: newer first when growing, older first when shrinking.
    order.sort_by(|&a, &b| {
        rss[b].replicas.cmp(&rss[a].replicas).then_with(|| {
            if to_add > 0 {
                rss[b].age_rank.cmp(&rss[a].age_rank)
            } else {
                rss[a].age_rank.cmp(&rss[b].age_rank)
            }
        })
    });
    let mut out: Vec<i32> = rss.iter().map(|r| r.replicas).collect();
    if to_add == 0 {
        return out;
    }
    let mut added = 0;
    for &i in &order {
        let r = rss[i];
        if r.replicas == 0 || added == to_add {
            continue;
        }
        let fraction = if desired == 0 {
            -r.replicas
        } else {
            let annotated = r.max_replicas.unwrap_or(fallback_max).max(1);
            let target = (f64::from(r.replicas) * f64::from(desired + max_surge)
                / f64::from(annotated))
            .round();
            // Bounded by the i32 inputs above.
            #[allow(clippy::cast_possible_truncation)]
            let target = target as i32;
            target - r.replicas
        };
        let allowed_left = to_add - added;
        let p = if to_add > 0 {
            fraction.min(allowed_left)
        } else {
            fraction.max(allowed_left)
        };
        out[i] += p;
        added += p;
    }
    let leftover = to_add - added;
    if leftover != 0 {
        if let Some(&first) = order.first() {
            out[first] = (out[first] + leftover).max(0);
        }
    }
    out
}

/// Old ReplicaSets to delete to keep at most `limit` of them: those fully scaled down,
/// lowest revision first. Input: (name, revision, spec replicas, status replicas, deleting).
pub fn history_to_delete(olds: &[(String, i64, i32, i32, bool)], limit: i32) -> Vec<String> {
    let mut cleanable: Vec<&(String, i64, i32, i32, bool)> = olds
        .iter()
        .filter(|o| o.2 == 0 && o.3 == 0 && !o.4)
        .collect();
    let excess = usize::try_from(i64::try_from(olds.len()).unwrap_or(0) - i64::from(limit.max(0)))
        .unwrap_or(0);
    if excess == 0 {
        return Vec::new();
    }
    cleanable.sort_by_key(|o| o.1);
    cleanable
        .into_iter()
        .take(excess)
        .map(|o| o.0.clone())
        .collect()
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0)
}

/// The pods a ReplicaSet has or will have: the larger of `spec.replicas` and
/// `status.replicas` (a scale-down its controller has not carried out yet).
fn rs_pods(rs: &ReplicaSet) -> i32 {
    rs_replicas(rs).max(rs.status.as_ref().map_or(0, |s| s.replicas))
}

fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn created_at(rs: &ReplicaSet) -> (Option<Timestamp>, String) {
    (
        rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
        rs.metadata.name.clone().unwrap_or_default(),
    )
}

/// Strategy-dependent settings of a Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Strategy {
    recreate: bool,
    max_surge: i32,
    max_unavailable: i32,
}

fn strategy(d: &Deployment, key: &ObjectKey) -> Result<Strategy, Error> {
    let desired = d.spec.replicas.unwrap_or(1);
    let s = d.spec.strategy.as_ref();
    if s.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return Ok(Strategy {
            recreate: true,
            max_surge: 0,
            max_unavailable: 0,
        });
    }
    let ru = s.and_then(|s| s.rolling_update.as_ref());
    let (max_surge, max_unavailable) = resolve_fenceposts(
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
        desired,
    )
    .map_err(|reason| Error::Invalid {
        object: format!("deployment {key}"),
        field: "spec.strategy.rollingUpdate",
        reason,
    })?;
    Ok(Strategy {
        recreate: false,
        max_surge,
        max_unavailable,
    })
}

/// The status a Deployment should report for its ReplicaSets.
pub(crate) fn calculate_status(
    d: &Deployment,
    new: Option<&ReplicaSet>,
    all: &[&ReplicaSet],
    max_unavailable: i32,
    now: Timestamp,
) -> DeploymentStatus {
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(|r| f(r)).sum::<i32>();
    let replicas = sum(&|r| r.status.as_ref().map_or(0, |s| s.replicas));
    let ready = sum(&|r| {
        r.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    });
    let available = sum(&rs_available);
    let spec_total = sum(&rs_replicas);
    let updated = new
        .and_then(|n| n.status.as_ref())
        .map_or(0, |s| s.replicas);
    let desired = d.spec.replicas.unwrap_or(1);
    let old = d.status.clone().unwrap_or_default();
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let (st, reason, msg) = if available >= desired - max_unavailable {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    set_condition(&mut conditions, "Available", st, reason, msg, now);
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((spec_total - available).max(0)),
        collision_count: old.collision_count,
        conditions: Some(conditions),
        terminating_replicas: None,
    }
}

/// Sets a condition; lastTransitionTime changes only when the status does, and an
/// unchanged condition is left alone entirely.
pub(crate) fn set_condition(
    conds: &mut Vec<DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let t = Some(Time(now));
    if let Some(c) = conds.iter_mut().find(|c| c.type_.as_deref() == Some(type_)) {
        if c.status.as_deref() == Some(status)
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message)
        {
            return;
        }
        if c.status.as_deref() != Some(status) {
            c.last_transition_time.clone_from(&t);
        }
        c.status = Some(status.into());
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_update_time = t;
        return;
    }
    conds.push(DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: t.clone(),
        last_transition_time: t,
    });
}

fn condition<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.as_deref() == Some(type_))
}

/// The rollout is done: every replica updated and available, no old ones left.
pub(crate) fn is_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let desired = d.spec.replicas.unwrap_or(1);
    s.updated_replicas == Some(desired)
        && s.replicas == Some(desired)
        && s.available_replicas == Some(desired)
        && s.observed_generation >= d.metadata.generation
}

/// Progress was made between two statuses.
fn made_progress(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    new.updated_replicas > old.updated_replicas
        || new.ready_replicas > old.ready_replicas
        || new.available_replicas > old.available_replicas
        || new.replicas < old.replicas
}

/// The Deployment controller.
pub(crate) struct DeploymentController {
    client: Client,
    deployments: Store<Deployment>,
    replicasets: Store<ReplicaSet>,
    pods: Store<Pod>,
}

fn deployment_key_of_rs(rs: &ReplicaSet) -> Option<ObjectKey> {
    let r = controller_of(&rs.metadata)?;
    (r.kind == "Deployment")
        .then(|| ObjectKey::namespaced(rs.metadata.namespace.clone().unwrap_or_default(), &r.name))
}

impl DeploymentController {
    pub(crate) fn new(
        client: Client,
        deployments: Store<Deployment>,
        replicasets: Store<ReplicaSet>,
        pods: Store<Pod>,
    ) -> Self {
        replicasets.add_index(CONTROLLER_INDEX, controller_index());
        pods.add_index(CONTROLLER_INDEX, controller_index());
        Self {
            client,
            deployments,
            replicasets,
            pods,
        }
    }

    pub(crate) fn on_deployment(
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<Deployment>) + Send + Sync {
        move |c| queue.add(ObjectKey::of(c.object().as_ref()))
    }

    /// ReplicaSet changes requeue their Deployment (both owners if the owner changed;
    /// matching Deployments for orphans).
    pub(crate) fn on_replicaset(
        &self,
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<ReplicaSet>) + Send + Sync {
        let deployments = self.deployments.clone();
        move |c| {
            let rs = c.object();
            if let Some(old) = c.old() {
                if let Some(k) = deployment_key_of_rs(old) {
                    queue.add(k);
                }
            }
            match deployment_key_of_rs(rs) {
                Some(k) => queue.add(k),
                None => {
                    let ns = rs.metadata.namespace.as_deref().unwrap_or("");
                    for d in deployments.list_namespace(ns) {
                        if label_selector_matches(&d.spec.selector, rs.metadata.labels.as_ref()) {
                            queue.add(ObjectKey::of(d.as_ref()));
                        }
                    }
                }
            }
        }
    }

    /// Pod deletions requeue the Deployment owning the pod's ReplicaSet (Recreate waits
    /// for old pods to be gone).
    pub(crate) fn on_pod(
        &self,
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<Pod>) + Send + Sync {
        let rss = self.replicasets.clone();
        move |c| {
            let is_gone = matches!(c, Change::Deleted(_))
                || c.old().is_some_and(|o| {
                    crate::meta::pod_is_active(o) && !crate::meta::pod_is_active(c.object())
                });
            if !is_gone {
                return;
            }
            let p = c.object();
            if let Some(r) = controller_of(&p.metadata) {
                if r.kind == "ReplicaSet" {
                    let key = ObjectKey::namespaced(
                        p.metadata.namespace.clone().unwrap_or_default(),
                        &r.name,
                    );
                    if let Some(rs) = rss.get(&key) {
                        if let Some(k) = deployment_key_of_rs(&rs) {
                            queue.add(k);
                        }
                    }
                }
            }
        }
    }

    fn rs_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn scale_rs(
        &self,
        d: &Deployment,
        rs: &ReplicaSet,
        replicas: i32,
        st: Strategy,
    ) -> Result<(), Error> {
        let desired = d.spec.replicas.unwrap_or(1);
        let max = desired + st.max_surge;
        if rs_replicas(rs) == replicas
            && annotation_i32(rs, DESIRED_REPLICAS) == Some(desired)
            && annotation_i32(rs, MAX_REPLICAS) == Some(max)
        {
            return Ok(());
        }
        let ns = rs.metadata.namespace.as_deref().unwrap_or("");
        let name = rs.metadata.name.as_deref().unwrap_or("");
        let patch = json!({
            "metadata": {"annotations": {DESIRED_REPLICAS: desired.to_string(), MAX_REPLICAS: max.to_string()}},
            "spec": {"replicas": replicas},
        });
        self.rs_api(ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::api("scale", format!("replicaset {ns}/{name}")))?;
        tracing::debug!(replicaset = %format!("{ns}/{name}"), from = rs_replicas(rs), to = replicas, "scaled");
        Ok(())
    }

    /// Finds the ReplicaSet of the current template (syncing its revision annotations), or
    /// creates it with `replicas` when `create` is set. Returns it and whether it is new.
    async fn new_replicaset(
        &self,
        d: &Deployment,
        olds: &[Arc<ReplicaSet>],
        existing: Option<Arc<ReplicaSet>>,
        create: Option<i32>,
        st: Strategy,
    ) -> Result<Option<Arc<ReplicaSet>>, Error> {
        let ns = d.metadata.namespace.as_deref().unwrap_or("");
        let max_old = olds.iter().map(|r| revision_of(r)).max().unwrap_or(0);
        let desired = d.spec.replicas.unwrap_or(1);
        if let Some(rs) = existing {
            let rev = revision_of(&rs);
            let min_ready = d.spec.min_ready_seconds;
            if rev > max_old && rs.spec.min_ready_seconds == min_ready {
                return Ok(Some(rs));
            }
            let mut annotations = serde_json::Map::new();
            if rev <= max_old {
                annotations.insert(REVISION.into(), json!((max_old + 1).to_string()));
                // Remember the revisions this template served before (rollbacks).
                if rev > 0 {
                    let mut hist: Vec<String> = rs
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(REVISION_HISTORY))
                        .map(|h| h.split(',').map(str::to_owned).collect())
                        .unwrap_or_default();
                    hist.push(rev.to_string());
                    annotations.insert(REVISION_HISTORY.into(), json!(hist.join(",")));
                }
            }
            let patch = json!({"metadata": {"annotations": annotations}, "spec": {"minReadySeconds": min_ready}});
            let name = rs.metadata.name.as_deref().unwrap_or("");
            let updated = self
                .rs_api(ns)
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api("patch", format!("replicaset {ns}/{name}")))?;
            return Ok(Some(Arc::new(updated)));
        }
        let Some(replicas) = create else {
            return Ok(None);
        };
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&d.spec.template, collision);
        let mut template = d.spec.template.clone();
        template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector: LabelSelector = d.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut annotations: BTreeMap<String, String> = d
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| {
                ![
                    LAST_APPLIED,
                    REVISION,
                    REVISION_HISTORY,
                    DESIRED_REPLICAS,
                    MAX_REPLICAS,
                ]
                .contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        annotations.insert(REVISION.into(), (max_old + 1).to_string());
        annotations.insert(DESIRED_REPLICAS.into(), desired.to_string());
        annotations.insert(MAX_REPLICAS.into(), (desired + st.max_surge).to_string());
        let name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or(""));
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.to_owned()),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(annotations),
                owner_references: Some(vec![controller_ref(d)]),
                ..ObjectMeta::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: d.spec.min_ready_seconds,
                selector,
                template: Some(template),
            },
            status: None,
        };
        match self.rs_api(ns).create(&PostParams::default(), &rs).await {
            Ok(created) => {
                tracing::info!(deployment = %format!("{ns}/{}", d.metadata.name.as_deref().unwrap_or("")), replicaset = %name, replicas, "created new replicaset");
                Ok(Some(Arc::new(created)))
            }
            Err(e) if status_code(&e) == Some(409) => {
                // Someone has that name: ours from a stale cache, or a hash collision.
                let other = self
                    .rs_api(ns)
                    .get(&name)
                    .await
                    .map_err(Error::api("get", format!("replicaset {ns}/{name}")))?;
                let ours = controller_of(&other.metadata)
                    .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                if ours
                    && other
                        .spec
                        .template
                        .as_ref()
                        .is_some_and(|t| equal_ignore_hash(t, &d.spec.template))
                {
                    return Ok(Some(Arc::new(other)));
                }
                let count = collision.unwrap_or(0) + 1;
                let dname = d.metadata.name.as_deref().unwrap_or("");
                let patch = json!({"status": {"collisionCount": count}});
                Api::<Deployment>::namespaced(self.client.clone(), ns)
                    .patch_status(dname, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(Error::api(
                        "patch status of",
                        format!("deployment {ns}/{dname}"),
                    ))?;
                Err(Error::Api {
                    verb: "create",
                    object: format!(
                        "replicaset {ns}/{name} (hash collision, collisionCount now {count})"
                    ),
                    source: e,
                })
            }
            Err(e) => Err(Error::api("create", format!("replicaset {ns}/{name}"))(e)),
        }
    }

    async fn cleanup(&self, d: &Deployment, olds: &[Arc<ReplicaSet>]) -> Result<(), Error> {
        let limit = d.spec.revision_history_limit.unwrap_or(10);
        let rows: Vec<(String, i64, i32, i32, bool)> = olds
            .iter()
            .map(|r| {
                (
                    r.metadata.name.clone().unwrap_or_default(),
                    revision_of(r),
                    rs_replicas(r),
                    r.status.as_ref().map_or(0, |s| s.replicas),
                    r.metadata.deletion_timestamp.is_some(),
                )
            })
            .collect();
        let ns = d.metadata.namespace.as_deref().unwrap_or("");
        for name in history_to_delete(&rows, limit) {
            match self
                .rs_api(ns)
                .delete(&name, &DeleteParams::background())
                .await
            {
                Ok(_) => {
                    tracing::debug!(replicaset = %format!("{ns}/{name}"), "deleted old replicaset")
                }
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(Error::api("delete", format!("replicaset {ns}/{name}"))(e)),
            }
        }
        Ok(())
    }

    /// Copies the new ReplicaSet's revision onto the Deployment (what `kubectl rollout
    /// history` and `undo` read).
    async fn sync_revision(&self, d: &Deployment, new: Option<&ReplicaSet>) -> Result<(), Error> {
        let Some(new) = new else {
            return Ok(());
        };
        let rev = revision_of(new).to_string();
        if d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            == Some(&rev)
        {
            return Ok(());
        }
        let ns = d.metadata.namespace.as_deref().unwrap_or("");
        let name = d.metadata.name.as_deref().unwrap_or("");
        let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
        match Api::<Deployment>::namespaced(self.client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(Error::api("patch", format!("deployment {ns}/{name}"))(e)),
        }
    }

    async fn write_status(&self, d: &Deployment, status: DeploymentStatus) -> Result<(), Error> {
        if d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let ns = d.metadata.namespace.as_deref().unwrap_or("");
        let name = d.metadata.name.as_deref().unwrap_or("");
        let patch = json!({"status": status});
        match Api::<Deployment>::namespaced(self.client.clone(), ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(Error::api(
                "patch status of",
                format!("deployment {ns}/{name}"),
            )(e)),
        }
    }

    /// Status plus the Progressing condition; returns how long until the progress
    /// deadline would pass, so the key can be requeued then.
    async fn sync_status(
        &self,
        d: &Deployment,
        new: Option<&ReplicaSet>,
        all: &[Arc<ReplicaSet>],
        st: Strategy,
        new_rs_created: bool,
    ) -> Result<Action, Error> {
        if d.metadata.deletion_timestamp.is_none() {
            self.sync_revision(d, new).await?;
        }
        let now = Timestamp::now();
        let refs: Vec<&ReplicaSet> = all.iter().map(AsRef::as_ref).collect();
        let mut status = calculate_status(d, new, &refs, st.max_unavailable, now);
        let old = d.status.clone().unwrap_or_default();
        let mut conds = status.conditions.take().unwrap_or_default();
        let new_name = new
            .and_then(|n| n.metadata.name.clone())
            .unwrap_or_default();
        let mut requeue = None;
        if d.spec.paused == Some(true) {
            set_condition(
                &mut conds,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
                now,
            );
        } else {
            let prev = condition(&old, "Progressing").cloned();
            let was_paused = prev
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some("DeploymentPaused"));
            if is_complete(d, &status) && all_olds_empty(&refs, new) {
                set_condition(
                    &mut conds,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                    now,
                );
            } else if new_rs_created {
                set_condition(
                    &mut conds,
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    &format!("Created new replica set \"{new_name}\""),
                    now,
                );
            } else if was_paused {
                set_condition(
                    &mut conds,
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed",
                    now,
                );
            } else if made_progress(&old, &status)
                || prev.is_none()
                || old.observed_generation != d.metadata.generation
            {
                let msg = format!("ReplicaSet \"{new_name}\" is progressing.");
                set_condition(
                    &mut conds,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    &msg,
                    now,
                );
                // Progress refreshes lastUpdateTime even with the same message.
                if let Some(c) = conds
                    .iter_mut()
                    .find(|c| c.type_.as_deref() == Some("Progressing"))
                {
                    c.last_update_time = Some(Time(now));
                }
            }
            if let (Some(deadline), Some(c)) = (
                d.spec.progress_deadline_seconds,
                conds
                    .iter()
                    .find(|c| c.type_.as_deref() == Some("Progressing"))
                    .cloned(),
            ) {
                let reason = c.reason.as_deref();
                if reason != Some("NewReplicaSetAvailable")
                    && reason != Some("ProgressDeadlineExceeded")
                {
                    if let Some(last) = c.last_update_time.as_ref().map(|t| t.0) {
                        let due = last
                            .checked_add(SignedDuration::from_secs(i64::from(deadline)))
                            .unwrap_or(last);
                        if now >= due {
                            set_condition(
                                &mut conds,
                                "Progressing",
                                "False",
                                "ProgressDeadlineExceeded",
                                &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                                now,
                            );
                        } else {
                            let left = now.duration_until(due).unsigned_abs();
                            requeue = Some(left + Duration::from_secs(1));
                        }
                    }
                }
            }
        }
        status.conditions = Some(conds);
        self.write_status(d, status).await?;
        Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
    }
}

fn all_olds_empty(all: &[&ReplicaSet], new: Option<&ReplicaSet>) -> bool {
    let new_uid = new.and_then(|n| n.metadata.uid.as_ref());
    all.iter()
        .filter(|r| r.metadata.uid.as_ref() != new_uid)
        .all(|r| rs_replicas(r) == 0 && r.status.as_ref().map_or(0, |s| s.replicas) == 0)
}

impl Reconciler for DeploymentController {
    fn name(&self) -> &'static str {
        "deployment"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(d) = self.deployments.get(key) else {
            return Ok(Action::Done);
        };
        if label_selector_is_empty(&d.spec.selector) {
            return Err(Error::Invalid {
                object: format!("deployment {key}"),
                field: "spec.selector",
                reason: "empty selector would select all pods".into(),
            });
        }
        let st = strategy(&d, key)?;
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let deleting = d.metadata.deletion_timestamp.is_some();
        // Its own ReplicaSets and the namespace's orphans (the controller index): a sync
        // costs O(its ReplicaSets).
        let candidates = claimable(&self.replicasets, key.ns(), &uid);
        let claimed = claim(&uid, deleting, &d.spec.selector, &candidates);
        let mut rss = apply_claim(&self.client, d.as_ref(), &claimed).await?;
        rss.sort_by_key(|r| created_at(r));

        // The new ReplicaSet: the oldest whose template matches.
        let existing_new = rss
            .iter()
            .find(|r| {
                r.spec
                    .template
                    .as_ref()
                    .is_some_and(|t| equal_ignore_hash(t, &d.spec.template))
            })
            .cloned();
        let new_uid = existing_new.as_ref().and_then(|r| r.metadata.uid.clone());
        let olds: Vec<Arc<ReplicaSet>> = rss
            .iter()
            .filter(|r| r.metadata.uid != new_uid)
            .cloned()
            .collect();

        if deleting {
            let all: Vec<Arc<ReplicaSet>> = rss.clone();
            return self
                .sync_status(&d, existing_new.as_deref(), &all, st, false)
                .await;
        }

        let desired = d.spec.replicas.unwrap_or(1);
        let paused = d.spec.paused == Some(true);
        let scaling = rss
            .iter()
            .filter(|r| rs_replicas(r) > 0)
            .any(|r| annotation_i32(r, DESIRED_REPLICAS).is_some_and(|v| v != desired));

        if paused || scaling {
            // Sync only: scale proportionally, no rollout.
            let new = self
                .new_replicaset(&d, &olds, existing_new, None, st)
                .await?;
            let mut all: Vec<Arc<ReplicaSet>> = olds.clone();
            if let Some(n) = &new {
                all.push(Arc::clone(n));
            }
            let active: Vec<&Arc<ReplicaSet>> = all.iter().filter(|r| rs_replicas(r) > 0).collect();
            if active.len() <= 1 {
                let target = active.first().copied().or(new.as_ref()).or(olds.last());
                if let Some(t) = target {
                    self.scale_rs(&d, t, desired, st).await?;
                }
            } else if !st.recreate {
                let inputs: Vec<ScaleInput> = active
                    .iter()
                    .enumerate()
                    .map(|(i, r)| ScaleInput {
                        replicas: rs_replicas(r),
                        max_replicas: annotation_i32(r, MAX_REPLICAS),
                        age_rank: i,
                    })
                    .collect();
                let fallback = d
                    .status
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .unwrap_or(desired);
                let sizes = proportional_scale(&inputs, desired, st.max_surge, fallback);
                for (r, size) in active.iter().zip(sizes) {
                    self.scale_rs(&d, r, size, st).await?;
                }
            }
            if paused {
                self.cleanup(&d, &olds).await?;
            }
            return self.sync_status(&d, new.as_deref(), &all, st, false).await;
        }

        if st.recreate {
            // Scale every old ReplicaSet down first.
            let mut scaled = false;
            for r in olds.iter().filter(|r| rs_replicas(r) > 0) {
                self.scale_rs(&d, r, 0, st).await?;
                scaled = true;
            }
            let old_values: Vec<String> = olds
                .iter()
                .filter_map(|r| r.metadata.uid.as_deref())
                .map(|uid| controller_index_value(key.ns(), Some(uid)))
                .collect();
            let old_values: Vec<&str> = old_values.iter().map(String::as_str).collect();
            let old_pods_running = self
                .pods
                .by_index(CONTROLLER_INDEX, &old_values)
                .iter()
                .any(|p| {
                    !matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
                });
            if scaled || old_pods_running {
                let mut all = olds.clone();
                all.extend(existing_new.clone());
                return self
                    .sync_status(&d, existing_new.as_deref(), &all, st, false)
                    .await;
            }
            let created = existing_new.is_none();
            let new = self
                .new_replicaset(&d, &olds, existing_new, Some(desired), st)
                .await?;
            let mut all = olds.clone();
            if let Some(n) = &new {
                self.scale_rs(&d, n, desired, st).await?;
                all.push(Arc::clone(n));
            }
            let status_action = self
                .sync_status(&d, new.as_deref(), &all, st, created)
                .await?;
            if d.status.as_ref().is_some_and(|s| is_complete(&d, s)) {
                self.cleanup(&d, &olds).await?;
            }
            return Ok(status_action);
        }

        // RollingUpdate.
        // Pods that still exist count against the surge even when their ReplicaSet was
        // already scaled down: else the new ReplicaSet could grow before the old one's
        // pods are gone, and the total would pass desired + maxSurge.
        let all_replicas: i32 = rss.iter().map(|r| rs_pods(r)).sum();
        let created = existing_new.is_none();
        let initial = new_rs_replicas(desired, st.max_surge, all_replicas, 0);
        let new = self
            .new_replicaset(&d, &olds, existing_new, Some(initial), st)
            .await?;
        let Some(new) = new else {
            return Ok(Action::Done);
        };
        let mut all = olds.clone();
        all.push(Arc::clone(&new));
        if !created {
            let target = new_rs_replicas(desired, st.max_surge, all_replicas, rs_replicas(&new));
            if target != rs_replicas(&new) {
                self.scale_rs(&d, &new, target, st).await?;
                if target > rs_replicas(&new) {
                    return self.sync_status(&d, Some(&new), &all, st, false).await;
                }
            }
        } else {
            return self.sync_status(&d, Some(&new), &all, st, true).await;
        }
        let olds_counts: Vec<RsCounts> = olds
            .iter()
            .map(|r| RsCounts {
                replicas: rs_replicas(r),
                available: rs_available(r),
            })
            .collect();
        let new_counts = RsCounts {
            replicas: rs_replicas(&new),
            available: rs_available(&new),
        };
        let targets = old_rs_scale_down(desired, st.max_unavailable, new_counts, &olds_counts);
        for (r, t) in olds.iter().zip(targets) {
            if t != rs_replicas(r) {
                self.scale_rs(&d, r, t, st).await?;
            }
        }
        let action = self.sync_status(&d, Some(&new), &all, st, false).await?;
        if d.status.as_ref().is_some_and(|s| is_complete(&d, s)) {
            self.cleanup(&d, &olds).await?;
        }
        Ok(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn is(v: &str) -> IntOrString {
        IntOrString::String(v.into())
    }

    #[test]
    fn fenceposts_table() {
        type Case = (Option<IntOrString>, Option<IntOrString>, i32, (i32, i32));
        let cases: &[Case] = &[
            (None, None, 10, (3, 2)), // 25 % up (ceil), 25 % down (floor)
            (None, None, 1, (1, 0)),
            (
                Some(IntOrString::Int(0)),
                Some(IntOrString::Int(0)),
                5,
                (0, 1),
            ), // never both zero
            (Some(is("50%")), Some(is("10%")), 10, (5, 1)),
            (Some(is("1%")), Some(is("99%")), 3, (1, 2)),
            (
                Some(IntOrString::Int(2)),
                Some(IntOrString::Int(1)),
                3,
                (2, 1),
            ),
        ];
        for (s, u, d, want) in cases {
            assert_eq!(
                resolve_fenceposts(s.as_ref(), u.as_ref(), *d).unwrap(),
                *want,
                "{s:?} {u:?} {d}"
            );
        }
        assert!(resolve_fenceposts(Some(&is("x")), None, 3).is_err());
    }

    #[test]
    fn new_rs_replicas_table() {
        // (desired, surge, all, new) -> want
        let cases = [
            (10, 3, 10, 0, 3),   // surge room 3
            (10, 3, 13, 3, 3),   // at the surge limit: wait
            (10, 3, 11, 3, 5),   // olds went down by 2
            (10, 0, 9, 0, 1),    // no surge: replace what went away
            (3, 1, 3, 3, 3),     // done
            (3, 1, 6, 5, 3),     // too big: shrink to desired
            (10, 25, 10, 0, 10), // never beyond desired
        ];
        for (desired, surge, all, new, want) in cases {
            assert_eq!(
                new_rs_replicas(desired, surge, all, new),
                want,
                "{desired} {surge} {all} {new}"
            );
        }
    }

    fn c(replicas: i32, available: i32) -> RsCounts {
        RsCounts {
            replicas,
            available,
        }
    }

    #[test]
    fn old_scale_down_table() {
        struct Case {
            name: &'static str,
            desired: i32,
            max_unavailable: i32,
            new: RsCounts,
            olds: Vec<RsCounts>,
            want: Vec<i32>,
        }
        let cases = vec![
            Case {
                name: "new not yet available: keep olds",
                desired: 10,
                max_unavailable: 0,
                new: c(3, 0),
                olds: vec![c(10, 10)],
                want: vec![10],
            },
            Case {
                name: "new available: scale old by as many",
                desired: 10,
                max_unavailable: 0,
                new: c(3, 3),
                olds: vec![c(10, 10)],
                want: vec![7],
            },
            Case {
                name: "max unavailable allows going below",
                desired: 10,
                max_unavailable: 2,
                new: c(0, 0),
                olds: vec![c(10, 10)],
                want: vec![8],
            },
            Case {
                name: "unhealthy olds go first",
                desired: 4,
                max_unavailable: 0,
                new: c(1, 0),
                olds: vec![c(2, 0), c(4, 4)],
                want: vec![0, 4],
            },
            Case {
                name: "oldest scaled down first",
                desired: 4,
                max_unavailable: 1,
                new: c(2, 2),
                olds: vec![c(1, 1), c(2, 2)],
                want: vec![0, 1],
            },
            Case {
                name: "availability floor respected across olds",
                desired: 6,
                max_unavailable: 1,
                new: c(2, 0),
                olds: vec![c(3, 3), c(3, 3)],
                want: vec![2, 3],
            },
            Case {
                // The failure seen in the rolling-update test: the old RS was scaled to 3
                // but its status still counted 5 available pods being deleted.
                name: "available above spec.replicas is not counted",
                desired: 6,
                max_unavailable: 1,
                new: c(5, 3),
                olds: vec![c(3, 5)],
                want: vec![2],
            },
            Case {
                name: "nothing old",
                desired: 3,
                max_unavailable: 1,
                new: c(3, 3),
                olds: vec![c(0, 0)],
                want: vec![0],
            },
        ];
        for k in cases {
            assert_eq!(
                old_rs_scale_down(k.desired, k.max_unavailable, k.new, &k.olds),
                k.want,
                "case {}",
                k.name
            );
        }
    }

    /// Simulates a whole rolling update with the pure functions and instant readiness,
    /// checking the surge and availability bounds at every step.
    #[test]
    fn simulated_rollout_respects_bounds() {
        for (desired, surge, unavail) in [(10, 3, 2), (5, 1, 0), (3, 0, 1), (1, 1, 0), (7, 2, 3)] {
            let mut new = c(0, 0);
            let mut old = c(desired, desired);
            for step in 0..100 {
                let all = new.replicas + old.replicas;
                new.replicas = new_rs_replicas(desired, surge, all, new.replicas);
                assert!(
                    new.replicas + old.replicas <= desired + surge,
                    "surge exceeded at step {step}"
                );
                // Pods become available (the simulated kubelet).
                new.available = new.replicas;
                old.replicas = old_rs_scale_down(desired, unavail, new, &[old])[0];
                old.available = old.available.min(old.replicas);
                assert!(
                    new.available + old.available >= desired - unavail,
                    "availability dropped at step {step}"
                );
                if new.replicas == desired && old.replicas == 0 {
                    break;
                }
                assert!(
                    step < 99,
                    "rollout did not finish: {desired} {surge} {unavail}"
                );
            }
        }
    }

    #[test]
    fn proportional_scale_table() {
        let s = |replicas, max: Option<i32>, age_rank| ScaleInput {
            replicas,
            max_replicas: max,
            age_rank,
        };
        // Rollout of 10 (+3 surge) in progress: 5 old + 8 new = 13; scale to 20 (+5 surge = 25).
        let out = proportional_scale(&[s(5, Some(13), 0), s(8, Some(13), 1)], 20, 5, 13);
        assert_eq!(out.iter().sum::<i32>(), 25);
        assert_eq!(out, vec![10, 15]);
        // Scale down to 0.
        assert_eq!(
            proportional_scale(&[s(5, Some(13), 0), s(8, Some(13), 1)], 0, 0, 13),
            vec![0, 0]
        );
        // Scale down by half, leftovers to the largest.
        let out = proportional_scale(&[s(3, Some(4), 0), s(1, Some(4), 1)], 2, 0, 4);
        assert_eq!(out.iter().sum::<i32>(), 2);
        assert!(out.iter().all(|v| *v >= 0));
        // Nothing to do.
        assert_eq!(
            proportional_scale(&[s(2, Some(4), 0), s(2, Some(4), 1)], 3, 1, 4),
            vec![2, 2]
        );
    }

    #[test]
    fn history_cleanup_table() {
        let row =
            |n: &str, rev: i64, spec: i32, status: i32| (n.to_string(), rev, spec, status, false);
        let olds = vec![
            row("r3", 3, 0, 0),
            row("r1", 1, 0, 0),
            row("r2", 2, 0, 0),
            row("busy", 4, 2, 2),
        ];
        assert_eq!(history_to_delete(&olds, 2), vec!["r1", "r2"]);
        assert_eq!(history_to_delete(&olds, 0), vec!["r1", "r2", "r3"]);
        assert!(history_to_delete(&olds, 10).is_empty());
        let mut pending = olds.clone();
        pending[1].3 = 1; // r1 still has pods
        assert_eq!(history_to_delete(&pending, 2), vec!["r2", "r3"]);
    }

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let a = template("nginx:1");
        assert_eq!(template_hash(&a, None), template_hash(&a.clone(), None));
        assert_ne!(
            template_hash(&a, None),
            template_hash(&template("nginx:2"), None)
        );
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        assert!(template_hash(&a, None)
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        let mut hashed = a.clone();
        hashed
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH.into(), "abc".into());
        assert!(equal_ignore_hash(&a, &hashed));
        assert!(!equal_ignore_hash(&template("nginx:2"), &hashed));
    }

    #[test]
    fn status_and_available_condition() {
        let mut d = Deployment::default();
        d.metadata.generation = Some(3);
        d.spec.replicas = Some(4);
        let rs = |replicas: i32, ready: i32, available: i32| {
            let mut r = ReplicaSet::default();
            r.spec.replicas = Some(replicas);
            r.status = Some(k8s_openapi::api::apps::v1::ReplicaSetStatus {
                replicas,
                ready_replicas: Some(ready),
                available_replicas: Some(available),
                ..Default::default()
            });
            r
        };
        let new = rs(2, 2, 1);
        let old = rs(3, 3, 3);
        let now = Timestamp::now();
        let s = calculate_status(&d, Some(&new), &[&old, &new], 1, now);
        assert_eq!(s.replicas, Some(5));
        assert_eq!(s.updated_replicas, Some(2));
        assert_eq!(s.ready_replicas, Some(5));
        assert_eq!(s.available_replicas, Some(4));
        assert_eq!(s.unavailable_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(3));
        let avail = condition(&s, "Available").unwrap();
        assert_eq!(avail.status.as_deref(), Some("True"));
        let s2 = calculate_status(&d, Some(&new), &[&new], 1, now);
        assert_eq!(
            condition(&s2, "Available").unwrap().reason.as_deref(),
            Some("MinimumReplicasUnavailable")
        );
        assert!(!is_complete(&d, &s));
    }
}
