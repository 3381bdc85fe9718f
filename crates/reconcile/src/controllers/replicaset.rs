//! The ReplicaSet controller: keeps `spec.replicas` active pods matching the selector,
//! adopting orphans and releasing pods that stop matching, and reports status.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kcore_k8s::{label_selector_matches, status_code};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;

use crate::cache::{Change, Store};
use crate::error::Error;
use crate::meta::{
    claimable, controller_index, controller_of, controller_ref, pod_is_active, pod_is_available,
    pod_is_ready, pod_ready_since, ObjectKey, CONTROLLER_INDEX,
};
use crate::queue::WorkQueue;
use crate::runner::{Action, Expectations, Reconciler};

/// Most pods created or deleted for one ReplicaSet in one reconcile (upstream's burst).
pub(crate) const BURST_REPLICAS: usize = 500;

/// The annotation by which users rank pods for scale-down.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// How objects split for one controller: kept, to adopt, to release.
#[derive(Debug)]
pub(crate) struct Claim<'a, K> {
    pub owned: Vec<&'a Arc<K>>,
    pub adopt: Vec<&'a Arc<K>>,
    pub release: Vec<&'a Arc<K>>,
}

/// Splits `objs` (of the owner's namespace) into the ones `owner_uid` controls and keeps,
/// orphans it should adopt, and ones it controls but whose labels no longer match.
pub(crate) fn claim<'a, K: Resource>(
    owner_uid: &str,
    owner_deleting: bool,
    selector: &LabelSelector,
    objs: &'a [Arc<K>],
) -> Claim<'a, K> {
    let mut c = Claim {
        owned: Vec::new(),
        adopt: Vec::new(),
        release: Vec::new(),
    };
    for o in objs {
        let m = o.meta();
        let matches = label_selector_matches(selector, m.labels.as_ref());
        match controller_of(m) {
            Some(r) if r.uid == owner_uid => {
                if matches {
                    c.owned.push(o);
                } else {
                    c.release.push(o);
                }
            }
            Some(_) => {}
            None => {
                if matches && !owner_deleting && m.deletion_timestamp.is_none() {
                    c.adopt.push(o);
                }
            }
        }
    }
    c
}

/// Points the owner references of `obj` at `refs` (a merge patch guarded by the object's
/// resourceVersion, so a concurrent change makes it fail with a conflict).
pub(crate) async fn patch_owner_refs<K>(
    client: &Client,
    obj: &K,
    refs: Vec<OwnerReference>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let m = obj.meta();
    let ns = m.namespace.as_deref().unwrap_or("");
    let name = m.name.as_deref().unwrap_or("");
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": m.resource_version,
        "uid": m.uid,
    }});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::api(
            "patch",
            format!("{} {ns}/{name}", K::kind(&()).to_lowercase()),
        ))?;
    Ok(())
}

/// Adopts and releases per `claim`; returns the owned objects including the adopted ones.
pub(crate) async fn apply_claim<K, O>(
    client: &Client,
    owner: &O,
    c: &Claim<'_, K>,
) -> Result<Vec<Arc<K>>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    O: Resource<DynamicType = ()>,
{
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let mut owned: Vec<Arc<K>> = c.owned.iter().map(|p| Arc::clone(p)).collect();
    for o in &c.adopt {
        let mut refs = o.meta().owner_references.clone().unwrap_or_default();
        refs.push(controller_ref(owner));
        match patch_owner_refs(client, o.as_ref(), refs).await {
            Ok(()) => owned.push(Arc::clone(o)),
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e),
        }
    }
    for o in &c.release {
        let refs: Vec<OwnerReference> = o
            .meta()
            .owner_references
            .iter()
            .flatten()
            .filter(|r| r.uid != uid)
            .cloned()
            .collect();
        match patch_owner_refs(client, o.as_ref(), refs).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(owned)
}

fn phase_rank(p: &Pod) -> u8 {
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    }
}

fn deletion_cost(p: &Pod) -> i64 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| {
            cs.iter().map(|c| c.restart_count).max().unwrap_or(0)
        })
}

fn created(p: &Pod) -> Option<Timestamp> {
    p.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Upstream's `ActivePodsWithRanks` order: the pod that sorts first is deleted first.
/// `rank` is the number of pods of the same owner on the pod's node (crowded nodes first).
pub(crate) fn deletion_order(a: &Pod, ra: usize, b: &Pod, rb: usize) -> Ordering {
    let node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some_and(|n| !n.is_empty())
    };
    // 1. unassigned before assigned
    node(a)
        .cmp(&node(b))
        // 2. Pending < Unknown < Running
        .then(phase_rank(a).cmp(&phase_rank(b)))
        // 3. not ready before ready
        .then(pod_is_ready(a).cmp(&pod_is_ready(b)))
        // 4. more pods of the owner on the same node first
        .then(rb.cmp(&ra))
        // 5. lower deletion cost first
        .then(deletion_cost(a).cmp(&deletion_cost(b)))
        // 6. ready for a shorter time first
        .then_with(|| {
            let since = |p: &Pod| pod_ready_since(p).flatten();
            match (since(a), since(b)) {
                (Some(x), Some(y)) => y.cmp(&x),
                _ => Ordering::Equal,
            }
        })
        // 7. more restarts first
        .then(restarts(b).cmp(&restarts(a)))
        // 8. newer first
        .then_with(|| match (created(a), created(b)) {
            (Some(x), Some(y)) => y.cmp(&x),
            _ => Ordering::Equal,
        })
}

/// The `n` pods to delete first when scaling down, from the active pods of one owner.
pub(crate) fn pods_to_delete(pods: &[Arc<Pod>], n: usize) -> Vec<Arc<Pod>> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in pods {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            *per_node.entry(node).or_default() += 1;
        }
    }
    let rank = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .map_or(0, |n| per_node.get(n).copied().unwrap_or(0))
    };
    let mut ranked: Vec<(usize, &Arc<Pod>)> = pods.iter().map(|p| (rank(p), p)).collect();
    ranked.sort_by(|(ra, a), (rb, b)| deletion_order(a, *ra, b, *rb));
    ranked
        .into_iter()
        .take(n)
        .map(|(_, p)| Arc::clone(p))
        .collect()
}

/// Creations (positive) or deletions (negative) needed, bounded by the burst.
pub(crate) fn replica_diff(desired: i32, active: usize) -> i64 {
    let desired = i64::from(desired.max(0));
    let active = i64::try_from(active).unwrap_or(i64::MAX);
    let burst = i64::try_from(BURST_REPLICAS).unwrap_or(i64::MAX);
    (desired - active).clamp(-burst, burst)
}

/// The status of a ReplicaSet whose active owned pods are `pods`.
pub(crate) fn compute_status(
    rs: &ReplicaSet,
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> ReplicaSetStatus {
    let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
    let template_labels = rs
        .spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(pods.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let fully_labeled = count(&|p| {
        template_labels
            .iter()
            .all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
    });
    ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(fully_labeled),
        ready_replicas: Some(count(&pod_is_ready)),
        available_replicas: Some(count(&|p| pod_is_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: None,
    }
}

/// A pod for `template`, owned by `owner`, named `<prefix>` plus a random suffix.
pub(crate) fn pod_from_template(
    template: &PodTemplateSpec,
    owner: OwnerReference,
    namespace: &str,
    prefix: &str,
) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            namespace: Some(namespace.to_owned()),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// The key of the ReplicaSet controlling `pod`, if one does.
fn owner_key(pod: &Pod) -> Option<ObjectKey> {
    let r = controller_of(&pod.metadata)?;
    (r.kind == "ReplicaSet")
        .then(|| ObjectKey::namespaced(pod.metadata.namespace.clone().unwrap_or_default(), &r.name))
}

/// The ReplicaSet controller.
pub(crate) struct ReplicaSetController {
    client: Client,
    replicasets: Store<ReplicaSet>,
    pods: Store<Pod>,
    expectations: Expectations,
}

impl ReplicaSetController {
    pub(crate) fn new(client: Client, replicasets: Store<ReplicaSet>, pods: Store<Pod>) -> Self {
        pods.add_index(CONTROLLER_INDEX, controller_index());
        Self {
            client,
            replicasets,
            pods,
            expectations: Expectations::default(),
        }
    }

    /// Handler for ReplicaSet changes.
    pub(crate) fn on_replicaset(
        &self,
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<ReplicaSet>) + Send + Sync {
        let exp = self.expectations.clone();
        move |c| {
            let key = ObjectKey::of(c.object().as_ref());
            if let Change::Deleted(_) = c {
                exp.delete(&key);
            }
            queue.add(key);
        }
    }

    /// Handler for Pod changes: requeues the owning ReplicaSet (old and new owner when the
    /// owner changed) and, for orphans, every ReplicaSet whose selector matches.
    pub(crate) fn on_pod(
        &self,
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<Pod>) + Send + Sync {
        let exp = self.expectations.clone();
        let rss = self.replicasets.clone();
        move |c| {
            let pod = c.object();
            let enqueue_matching = |p: &Pod| {
                let ns = p.metadata.namespace.as_deref().unwrap_or("");
                for rs in rss.list_namespace(ns) {
                    if label_selector_matches(&rs.spec.selector, p.metadata.labels.as_ref()) {
                        queue.add(ObjectKey::of(rs.as_ref()));
                    }
                }
            };
            match c {
                Change::Added(p) => match owner_key(p) {
                    Some(k) => {
                        exp.creation_observed(&k);
                        queue.add(k);
                    }
                    None => enqueue_matching(p),
                },
                Change::Updated { old, new } => {
                    let (ko, kn) = (owner_key(old), owner_key(new));
                    if old.metadata.deletion_timestamp.is_none()
                        && new.metadata.deletion_timestamp.is_some()
                    {
                        if let Some(k) = &kn {
                            exp.deletion_observed_uid(k, new.metadata.uid.as_deref().unwrap_or(""));
                        }
                    }
                    if ko != kn {
                        if let Some(k) = ko {
                            queue.add(k);
                        }
                    }
                    match kn {
                        Some(k) => queue.add(k),
                        None => enqueue_matching(new),
                    }
                }
                Change::Deleted(p) => {
                    if let Some(k) = owner_key(pod) {
                        // Counted once per UID, so a graceful deletion already seen
                        // as an update is not counted twice.
                        exp.deletion_observed_uid(&k, p.metadata.uid.as_deref().unwrap_or(""));
                        queue.add(k);
                    }
                }
            }
        }
    }

    async fn manage(
        &self,
        key: &ObjectKey,
        rs: &ReplicaSet,
        active: &[Arc<Pod>],
    ) -> Result<(), Error> {
        let spec = &rs.spec;
        let desired = spec.replicas.unwrap_or(1);
        let diff = replica_diff(desired, active.len());
        let ns = key.ns();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        if diff > 0 {
            let Some(template) = spec.template.as_ref() else {
                return Err(Error::Invalid {
                    object: format!("replicaset {key}"),
                    field: "spec.template",
                    reason: "missing".into(),
                });
            };
            let n = usize::try_from(diff).unwrap_or(0);
            self.expectations.expect(key, n, 0);
            let pod = pod_from_template(template, controller_ref(rs), ns, &key.name);
            // Slow start: batches of 1, 2, 4, ... so a failing create costs one call.
            let pp = PostParams::default();
            let mut created = 0usize;
            let mut batch = 1usize;
            while created < n {
                let size = batch.min(n - created);
                let results =
                    futures::future::join_all((0..size).map(|_| api.create(&pp, &pod))).await;
                let mut first_err = None;
                for r in results {
                    if let Err(e) = r {
                        self.expectations.creation_observed(key);
                        first_err.get_or_insert(e);
                    }
                }
                created += size;
                if let Some(e) = first_err {
                    for _ in created..n {
                        self.expectations.creation_observed(key);
                    }
                    return Err(Error::api("create", format!("pod for replicaset {key}"))(e));
                }
                batch *= 2;
            }
            tracing::debug!(replicaset = %key, created = n, "created pods");
        } else if diff < 0 {
            let n = usize::try_from(-diff).unwrap_or(0);
            let victims = pods_to_delete(active, n);
            self.expectations.expect_deletions(
                key,
                victims
                    .iter()
                    .map(|p| p.metadata.uid.clone().unwrap_or_default()),
            );
            let results = futures::future::join_all(victims.iter().map(|p| {
                let name = p.metadata.name.clone().unwrap_or_default();
                let uid = p.metadata.uid.clone().unwrap_or_default();
                let api = api.clone();
                async move { (api.delete(&name, &DeleteParams::default()).await, name, uid) }
            }))
            .await;
            let mut first_err = None;
            for (r, name, uid) in results {
                if let Err(e) = r {
                    self.expectations.deletion_observed_uid(key, &uid);
                    if status_code(&e) != Some(404) {
                        first_err.get_or_insert((e, name));
                    }
                }
            }
            if let Some((e, name)) = first_err {
                return Err(Error::api("delete", format!("pod {ns}/{name}"))(e));
            }
            tracing::debug!(replicaset = %key, deleted = n, "deleted pods");
        }
        Ok(())
    }
}

impl Reconciler for ReplicaSetController {
    fn name(&self) -> &'static str {
        "replicaset"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(rs) = self.replicasets.get(key) else {
            self.expectations.delete(key);
            return Ok(Action::Done);
        };
        let spec = &rs.spec;
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let deleting = rs.metadata.deletion_timestamp.is_some();
        // Before the pods (upstream's `rsNeedsSync`): a creation observed after this point
        // is in the cache read next, so a satisfied expectation never meets a cache that
        // lacks a pod this controller created.
        let needs_sync = self.expectations.satisfied(key);
        // Its own pods and the namespace's orphans, from the controller index (upstream's
        // `getRSPods`): a sync costs O(its pods), not O(pods in the namespace).
        let pods = claimable(&self.pods, key.ns(), &uid);
        let claimed = claim(&uid, deleting, &spec.selector, &pods);
        let owned = apply_claim(&self.client, rs.as_ref(), &claimed).await?;
        // Pods this controller already deleted but the cache still shows are not counted:
        // neither for managing nor in the status (else the status would report, under the
        // new generation, available pods that are going away).
        let not_going = |p: &Arc<Pod>| {
            !self
                .expectations
                .pending_deletion(key, p.metadata.uid.as_deref().unwrap_or(""))
        };
        let mut active: Vec<Arc<Pod>> = owned
            .into_iter()
            .filter(|p| pod_is_active(p) && not_going(p))
            .collect();
        let manage_result = if !deleting && needs_sync {
            self.manage(key, &rs, &active).await
        } else {
            Ok(())
        };
        active.retain(not_going);

        let now = Timestamp::now();
        let status = compute_status(&rs, &active, now);
        if rs.status.as_ref() != Some(&status) {
            let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), key.ns());
            let patch = json!({"status": status});
            match api
                .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(404) => return Ok(Action::Done),
                Err(e) => {
                    return Err(Error::api("patch status of", format!("replicaset {key}"))(
                        e,
                    ))
                }
            }
        }
        manage_result?;
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        if min_ready > 0 && status.ready_replicas != status.available_replicas {
            return Ok(Action::RequeueAfter(Duration::from_secs(
                u64::try_from(min_ready).unwrap_or(1),
            )));
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    /// A pod for tables: name, node, phase, ready-since (seconds), restarts, created (seconds).
    pub(crate) fn pod(
        name: &str,
        node: Option<&str>,
        phase: &str,
        ready: Option<i64>,
        restarts: i32,
        created: i64,
    ) -> Arc<Pod> {
        let ts = |s: i64| Time(Timestamp::from_second(1_700_000_000 + s).unwrap());
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                creation_timestamp: Some(ts(created)),
                labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_owned),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready.map(|s| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(ts(s)),
                        ..PodCondition::default()
                    }]
                }),
                container_statuses: Some(vec![ContainerStatus {
                    restart_count: restarts,
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
        })
    }

    fn names(p: &[Arc<Pod>]) -> Vec<&str> {
        p.iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect()
    }

    #[test]
    fn scale_down_order_table() {
        struct Case {
            name: &'static str,
            pods: Vec<Arc<Pod>>,
            n: usize,
            want: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "unassigned first",
                pods: vec![
                    pod("on-node", Some("n1"), "Running", Some(0), 0, 0),
                    pod("unassigned", None, "Pending", None, 0, 0),
                ],
                n: 1,
                want: vec!["unassigned"],
            },
            Case {
                name: "pending before running",
                pods: vec![
                    pod("run", Some("n1"), "Running", Some(0), 0, 0),
                    pod("pend", Some("n2"), "Pending", None, 0, 0),
                ],
                n: 1,
                want: vec!["pend"],
            },
            Case {
                name: "not ready before ready",
                pods: vec![
                    pod("ready", Some("n1"), "Running", Some(0), 0, 0),
                    pod("unready", Some("n2"), "Running", None, 0, 0),
                ],
                n: 1,
                want: vec!["unready"],
            },
            Case {
                name: "crowded node first",
                pods: vec![
                    pod("alone", Some("n1"), "Running", Some(0), 0, 0),
                    pod("crowd-a", Some("n2"), "Running", Some(0), 0, 0),
                    pod("crowd-b", Some("n2"), "Running", Some(0), 0, 0),
                ],
                n: 1,
                want: vec!["crowd-a"],
            },
            Case {
                name: "ready for less time first",
                pods: vec![
                    pod("old-ready", Some("n1"), "Running", Some(10), 0, 0),
                    pod("new-ready", Some("n2"), "Running", Some(50), 0, 0),
                ],
                n: 1,
                want: vec!["new-ready"],
            },
            Case {
                name: "more restarts first",
                pods: vec![
                    pod("calm", Some("n1"), "Running", Some(10), 0, 0),
                    pod("crashy", Some("n2"), "Running", Some(10), 5, 0),
                ],
                n: 1,
                want: vec!["crashy"],
            },
            Case {
                name: "newer first",
                pods: vec![
                    pod("older", Some("n1"), "Running", Some(10), 0, 1),
                    pod("newer", Some("n2"), "Running", Some(10), 0, 9),
                    pod("mid", Some("n3"), "Running", Some(10), 0, 5),
                ],
                n: 2,
                want: vec!["newer", "mid"],
            },
        ];
        for c in cases {
            assert_eq!(
                names(&pods_to_delete(&c.pods, c.n)),
                c.want,
                "case {}",
                c.name
            );
        }
    }

    #[test]
    fn deletion_cost_ranks_before_age() {
        let mut cheap = (*pod("cheap", Some("n1"), "Running", Some(10), 0, 0)).clone();
        cheap.metadata.annotations = Some(BTreeMap::from([(
            POD_DELETION_COST.to_string(),
            "-5".to_string(),
        )]));
        let dear = pod("dear", Some("n2"), "Running", Some(10), 0, 9);
        assert_eq!(
            names(&pods_to_delete(&[dear, Arc::new(cheap)], 1)),
            vec!["cheap"]
        );
    }

    #[test]
    fn diff_is_bounded_by_burst() {
        assert_eq!(replica_diff(3, 1), 2);
        assert_eq!(replica_diff(1, 3), -2);
        assert_eq!(replica_diff(2, 2), 0);
        assert_eq!(replica_diff(10_000, 0), 500);
        assert_eq!(replica_diff(0, 10_000), -500);
        assert_eq!(replica_diff(-1, 0), 0);
    }

    #[test]
    fn claim_adopts_orphans_and_releases_non_matching() {
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            ..LabelSelector::default()
        };
        let owned_ref = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "rs".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let mine = |name: &str, app: &str| {
            let mut p = (*pod(name, None, "Running", None, 0, 0)).clone();
            p.metadata.labels = Some(BTreeMap::from([("app".to_string(), app.to_string())]));
            p.metadata.owner_references = Some(vec![owned_ref.clone()]);
            Arc::new(p)
        };
        let other = {
            let mut p = (*pod("other", None, "Running", None, 0, 0)).clone();
            p.metadata.owner_references = Some(vec![OwnerReference {
                uid: "u2".into(),
                ..owned_ref.clone()
            }]);
            Arc::new(p)
        };
        let pods = vec![
            mine("kept", "web"),
            mine("relabeled", "db"),
            pod("orphan", None, "Running", None, 0, 0),
            other,
        ];
        let c = claim("u1", false, &sel, &pods);
        let n = |v: &[&Arc<Pod>]| {
            v.iter()
                .map(|p| p.metadata.name.clone().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(n(&c.owned), vec!["kept"]);
        assert_eq!(n(&c.release), vec!["relabeled"]);
        assert_eq!(n(&c.adopt), vec!["orphan"]);
        // A ReplicaSet being deleted adopts nothing.
        assert!(claim("u1", true, &sel, &pods).adopt.is_empty());
    }

    #[test]
    fn status_counts_ready_and_available() {
        let now = Timestamp::from_second(1_700_000_100).unwrap();
        let mut rs = ReplicaSet::default();
        rs.metadata.generation = Some(4);
        rs.spec.min_ready_seconds = Some(30);
        let pods = vec![
            pod("a", Some("n"), "Running", Some(0), 0, 0), // ready 100 s: available
            pod("b", Some("n"), "Running", Some(90), 0, 0), // ready 10 s: not yet available
            pod("c", Some("n"), "Pending", None, 0, 0),
        ];
        let s = compute_status(&rs, &pods, now);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(4));
    }
}
