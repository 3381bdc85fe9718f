//! The DaemonSet controller: one pod per eligible node (nodeSelector, required node
//! affinity, taints vs tolerations), placed through a node-affinity term on the node's
//! name as upstream does (the scheduler binds it), and a rolling update that replaces old
//! pods while at most `maxUnavailable` nodes lack an available pod.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kcore_k8s::{set_matches, status_code};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use super::deployment::{scaled_value, template_hash};
use super::history::{prune_revisions, revision_name, sync_revisions};
use super::replicaset::{apply_claim, claim};
use crate::cache::{Change, Store};
use crate::error::Error;
use crate::meta::{
    claimable, controller_index, controller_of, controller_ref, pod_is_available, pod_is_ready,
    toleration_for, ObjectKey, CONTROLLER_INDEX,
};
use crate::queue::WorkQueue;
use crate::runner::{Action, Reconciler};

/// Label with the hash of the template a DaemonSet or StatefulSet pod was made from.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";

/// Tolerations every DaemonSet pod gets, as upstream adds them.
fn default_tolerations(spec: &PodSpec) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    };
    let mut v = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        v.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    v
}

/// Whether `node` matches `term` (kcore-k8s's node selector rules; a term that does not
/// compile matches nothing).
fn term_matches(term: &NodeSelectorTerm, node: &Node, labels: &BTreeMap<String, String>) -> bool {
    kcore_k8s::NodeSelectorTerm::compile(term)
        .is_ok_and(|t| t.matches(labels, node.metadata.name.as_deref().unwrap_or_default()))
}

/// Whether a pod of `spec` belongs on `node`: node selector, required node affinity, and
/// every NoSchedule / NoExecute taint tolerated (with the DaemonSet default tolerations).
pub fn node_should_run(spec: &PodSpec, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    if spec
        .node_selector
        .as_ref()
        .is_some_and(|sel| !set_matches(sel, Some(labels)))
    {
        return false;
    }
    if let Some(req) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    {
        if !req
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node, labels))
        {
            return false;
        }
    }
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    tolerations.extend(default_tolerations(spec));
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| toleration_for(&tolerations, t).is_some())
}

/// The node a DaemonSet pod is for: its nodeName, or the name in its node-affinity term.
pub fn pod_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// One node's state for the rolling-update math.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePods {
    /// The node should run a pod.
    pub should_run: bool,
    /// (pod name, updated to the current template, available) of its live pods.
    pub pods: Vec<(String, bool, bool)>,
}

/// What to do: nodes to create a pod on, pods to delete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DaemonPlan {
    /// Nodes that need a pod.
    pub create: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<String>,
}

/// Plans one sync: a pod for each eligible node without one, extra pods and pods on
/// ineligible nodes deleted, and old pods replaced while at most `max_unavailable` eligible
/// nodes are without an available pod.
pub fn plan(nodes: &BTreeMap<String, NodePods>, max_unavailable: i32) -> DaemonPlan {
    let mut p = DaemonPlan::default();
    let mut unavailable = 0;
    let mut candidates = Vec::new();
    for (node, st) in nodes {
        if !st.should_run {
            p.delete.extend(st.pods.iter().map(|x| x.0.clone()));
            continue;
        }
        match st.pods.len() {
            0 => {
                p.create.push(node.clone());
                unavailable += 1;
            }
            _ => {
                // Keep the best pod (updated, then available); delete the rest.
                let mut pods = st.pods.clone();
                pods.sort_by_key(|x| (!x.1, !x.2));
                p.delete.extend(pods.iter().skip(1).map(|x| x.0.clone()));
                let (name, updated, available) = pods[0].clone();
                if !available {
                    unavailable += 1;
                }
                if !updated {
                    candidates.push((name, available));
                }
            }
        }
    }
    // Unavailable old pods cost nothing to replace; then available ones within budget.
    candidates.sort_by_key(|c| c.1);
    for (name, available) in candidates {
        if !available {
            p.delete.push(name);
        } else if unavailable < max_unavailable {
            p.delete.push(name);
            unavailable += 1;
        }
    }
    p
}

/// The DaemonSet controller.
pub(crate) struct DaemonSetController {
    client: Client,
    daemonsets: Store<DaemonSet>,
    nodes: Store<Node>,
    pods: Store<Pod>,
}

impl DaemonSetController {
    pub(crate) fn new(
        client: Client,
        daemonsets: Store<DaemonSet>,
        nodes: Store<Node>,
        pods: Store<Pod>,
    ) -> Self {
        pods.add_index(CONTROLLER_INDEX, controller_index());
        Self {
            client,
            daemonsets,
            nodes,
            pods,
        }
    }

    pub(crate) fn on_daemonset(
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<DaemonSet>) + Send + Sync {
        move |c| queue.add(ObjectKey::of(c.object().as_ref()))
    }

    /// Any node change may change where daemons belong.
    pub(crate) fn on_node(
        &self,
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<Node>) + Send + Sync {
        let dss = self.daemonsets.clone();
        move |_| {
            for d in dss.list() {
                queue.add(ObjectKey::of(d.as_ref()));
            }
        }
    }

    pub(crate) fn on_pod(queue: WorkQueue<ObjectKey>) -> impl Fn(&Change<Pod>) + Send + Sync {
        move |c| {
            for p in std::iter::once(c.object()).chain(c.old()) {
                if let Some(r) = controller_of(&p.metadata).filter(|r| r.kind == "DaemonSet") {
                    queue.add(ObjectKey::namespaced(
                        p.metadata.namespace.clone().unwrap_or_default(),
                        &r.name,
                    ));
                }
            }
        }
    }

    fn new_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
        let t = &ds.spec.template;
        let tm = t.metadata.clone().unwrap_or_default();
        let mut labels = tm.labels.unwrap_or_default();
        labels.insert(CONTROLLER_REVISION_HASH.into(), hash.to_owned());
        let mut spec = t.spec.clone().unwrap_or_default();
        let mut tolerations = spec.tolerations.take().unwrap_or_default();
        for d in default_tolerations(&spec) {
            if !tolerations.contains(&d) {
                tolerations.push(d);
            }
        }
        spec.tolerations = Some(tolerations);
        let affinity = spec.affinity.get_or_insert_with(Affinity::default);
        let na = affinity
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".into(),
                    operator: "In".into(),
                    values: Some(vec![node.to_owned()]),
                }]),
            }],
        });
        let name = ds.metadata.name.clone().unwrap_or_default();
        Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}-")),
                namespace: ds.metadata.namespace.clone(),
                labels: Some(labels),
                annotations: tm.annotations,
                owner_references: Some(vec![controller_ref(ds)]),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status: None,
        }
    }
}

impl Reconciler for DaemonSetController {
    fn name(&self) -> &'static str {
        "daemonset"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(ds) = self.daemonsets.get(key) else {
            return Ok(Action::Done);
        };
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let deleting = ds.metadata.deletion_timestamp.is_some();
        // Its own pods and the namespace's orphans (the controller index).
        let candidates = claimable(&self.pods, key.ns(), &uid);
        let claimed = claim(&uid, deleting, &ds.spec.selector, &candidates);
        let owned = apply_claim(&self.client, ds.as_ref(), &claimed).await?;
        let live: Vec<Arc<Pod>> = owned
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let collision = ds.status.as_ref().and_then(|s| s.collision_count);
        let revisions = if deleting {
            None
        } else {
            Some(sync_revisions(&self.client, ds.as_ref(), &ds.spec.template, collision).await?)
        };
        let hash = revisions.as_ref().map_or_else(
            || template_hash(&ds.spec.template, collision),
            |r| r.hash.clone(),
        );
        let min_ready = ds.spec.min_ready_seconds.unwrap_or(0);
        let now = Timestamp::now();
        let tspec = ds.spec.template.spec.clone().unwrap_or_default();

        let mut by_node: BTreeMap<String, NodePods> = BTreeMap::new();
        for n in self.nodes.list() {
            let name = n.metadata.name.clone().unwrap_or_default();
            by_node.insert(
                name,
                NodePods {
                    should_run: node_should_run(&tspec, &n),
                    pods: Vec::new(),
                },
            );
        }
        let mut failed = Vec::new();
        let mut pod_index: HashMap<String, Arc<Pod>> = HashMap::new();
        for p in &live {
            let name = p.metadata.name.clone().unwrap_or_default();
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed") {
                failed.push(name);
                continue;
            }
            let updated = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CONTROLLER_REVISION_HASH))
                == Some(&hash);
            let available = pod_is_available(p, min_ready, now);
            let node = pod_node(p).unwrap_or_default();
            by_node
                .entry(node)
                .or_insert(NodePods {
                    should_run: false,
                    pods: Vec::new(),
                })
                .pods
                .push((name.clone(), updated, available));
            pod_index.insert(name, Arc::clone(p));
        }
        let desired =
            i32::try_from(by_node.values().filter(|n| n.should_run).count()).unwrap_or(i32::MAX);
        let rolling = ds
            .spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            != Some("OnDelete");
        let max_unavailable = if rolling {
            let mu = ds
                .spec
                .update_strategy
                .as_ref()
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.max_unavailable.as_ref());
            let v = match mu {
                None => 1,
                Some(v) => {
                    scaled_value(Some(v), desired, 0, true).map_err(|reason| Error::Invalid {
                        object: format!("daemonset {key}"),
                        field: "spec.updateStrategy.rollingUpdate.maxUnavailable",
                        reason,
                    })?
                }
            };
            v.max(1)
        } else {
            0
        };
        let mut p = plan(&by_node, max_unavailable);
        if !rolling {
            // OnDelete: only missing pods are created; old ones stay until deleted by hand.
            p.delete.retain(|n| {
                pod_index.get(n).is_none_or(|pod| {
                    let node = pod_node(pod).unwrap_or_default();
                    !by_node
                        .get(&node)
                        .is_some_and(|s| s.should_run && s.pods.len() == 1)
                })
            });
        }
        p.delete.extend(failed);

        if !deleting {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), key.ns());
            for node in &p.create {
                api.create(&PostParams::default(), &Self::new_pod(&ds, node, &hash))
                    .await
                    .map_err(Error::api(
                        "create",
                        format!("pod of daemonset {key} for node {node}"),
                    ))?;
            }
            for name in &p.delete {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if status_code(&e) == Some(404) => {}
                    Err(e) => {
                        return Err(Error::api("delete", format!("pod {}/{name}", key.ns()))(e))
                    }
                }
            }
        }

        if let Some(revs) = &revisions {
            let mut in_use: std::collections::BTreeSet<String> = live
                .iter()
                .filter_map(|p| p.metadata.labels.as_ref()?.get(CONTROLLER_REVISION_HASH))
                .map(|h| revision_name(&key.name, h))
                .collect();
            in_use.insert(revision_name(&key.name, &hash));
            let limit = ds.spec.revision_history_limit.unwrap_or(10);
            prune_revisions(&self.client, key.ns(), revs, &in_use, limit).await?;
        }
        let count = |f: &dyn Fn(&NodePods) -> bool| {
            i32::try_from(by_node.values().filter(|n| f(n)).count()).unwrap_or(i32::MAX)
        };
        let scheduled = |n: &NodePods| !n.pods.is_empty();
        let ready = i32::try_from(live.iter().filter(|p| pod_is_ready(p)).count()).unwrap_or(0);
        let available = count(&|n| n.should_run && n.pods.iter().any(|x| x.2));
        let status = DaemonSetStatus {
            desired_number_scheduled: desired,
            current_number_scheduled: count(&|n| n.should_run && scheduled(n)),
            number_misscheduled: count(&|n| !n.should_run && scheduled(n)),
            number_ready: ready,
            number_available: Some(available),
            number_unavailable: Some((desired - available).max(0)),
            updated_number_scheduled: Some(count(&|n| n.should_run && n.pods.iter().any(|x| x.1))),
            observed_generation: ds.metadata.generation,
            collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
            conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        };
        if ds.status.as_ref() != Some(&status) {
            let patch = json!({ "status": status });
            match Api::<DaemonSet>::namespaced(self.client.clone(), key.ns())
                .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(404) => return Ok(Action::Done),
                Err(e) => return Err(Error::api("patch status of", format!("daemonset {key}"))(e)),
            }
        }
        if min_ready > 0 && ready != available {
            return Ok(Action::RequeueAfter(Duration::from_secs(
                u64::try_from(min_ready).unwrap_or(1),
            )));
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Taint::default()
        }
    }

    #[test]
    fn eligibility() {
        let mut spec = PodSpec {
            node_selector: Some(BTreeMap::from([("role".to_string(), "worker".to_string())])),
            ..PodSpec::default()
        };
        assert!(node_should_run(
            &spec,
            &node("w", &[("role", "worker")], vec![])
        ));
        assert!(!node_should_run(
            &spec,
            &node("m", &[("role", "master")], vec![])
        ));
        // Taints: NoSchedule must be tolerated; PreferNoSchedule is ignored; defaults cover
        // unschedulable (cordoned) nodes.
        let w = |t| node("w", &[("role", "worker")], vec![t]);
        assert!(!node_should_run(
            &spec,
            &w(taint("dedicated", "NoSchedule"))
        ));
        assert!(node_should_run(
            &spec,
            &w(taint("dedicated", "PreferNoSchedule"))
        ));
        assert!(node_should_run(
            &spec,
            &w(taint("node.kubernetes.io/unschedulable", "NoSchedule"))
        ));
        spec.tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Toleration::default()
        }]);
        assert!(node_should_run(&spec, &w(taint("dedicated", "NoSchedule"))));
        // Required node affinity.
        spec.node_selector = None;
        spec.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "cpus".into(),
                            operator: "Gt".into(),
                            values: Some(vec!["4".into()]),
                        }]),
                        match_fields: None,
                    }],
                }),
                ..NodeAffinity::default()
            }),
            ..Affinity::default()
        });
        assert!(node_should_run(
            &spec,
            &node("big", &[("cpus", "8")], vec![])
        ));
        assert!(!node_should_run(
            &spec,
            &node("small", &[("cpus", "2")], vec![])
        ));
    }

    #[test]
    fn plan_table() {
        let np = |should_run: bool, pods: &[(&str, bool, bool)]| NodePods {
            should_run,
            pods: pods
                .iter()
                .map(|(n, u, a)| (n.to_string(), *u, *a))
                .collect(),
        };
        let nodes = BTreeMap::from([
            ("a".to_string(), np(true, &[])),                    // needs a pod
            ("b".to_string(), np(false, &[("b1", true, true)])), // misscheduled
            (
                "c".to_string(),
                np(true, &[("c1", true, true), ("c2", false, true)]),
            ), // duplicate
            ("d".to_string(), np(true, &[("d1", false, false)])), // old, unavailable
            ("e".to_string(), np(true, &[("e1", false, true)])), // old, available
            ("f".to_string(), np(true, &[("f1", false, true)])),
        ]);
        // a and d are unavailable already: budget 3 allows one more replacement.
        let p = plan(&nodes, 3);
        assert_eq!(p.create, vec!["a"]);
        assert_eq!(p.delete, vec!["b1", "c2", "d1", "e1"]);
        // Budget exhausted: only free replacements.
        let p = plan(&nodes, 2);
        assert_eq!(p.delete, vec!["b1", "c2", "d1"]);
    }

    #[test]
    fn pod_node_from_name_or_affinity() {
        let ds = DaemonSet::default();
        let p = DaemonSetController::new_pod(&ds, "n7", "h");
        assert_eq!(pod_node(&p).as_deref(), Some("n7"));
        assert_eq!(
            p.metadata.labels.as_ref().unwrap()[CONTROLLER_REVISION_HASH],
            "h"
        );
        assert!(p
            .spec
            .as_ref()
            .unwrap()
            .tolerations
            .as_ref()
            .unwrap()
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")));
    }
}
