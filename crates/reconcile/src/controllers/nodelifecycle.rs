//! The node lifecycle controller: a node whose heartbeat (its Lease in
//! `kube-node-lease`, or its Ready condition's lastHeartbeatTime) is older than the grace
//! period gets its Ready condition set to Unknown and the `node.kubernetes.io/unreachable`
//! taints; its pods are then evicted (deleted) once their toleration of the NoExecute
//! taint runs out, so their owners replace them elsewhere. A node that heartbeats again
//! loses the taints.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kcore_k8s::status_code;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Client;
use serde_json::json;

use crate::cache::{Change, Store};
use crate::error::Error;
use crate::meta::{toleration_for, ObjectKey};
use crate::queue::WorkQueue;
use crate::runner::{Action, Reconciler};

/// Taint key of a node that stopped heartbeating.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// Namespace of node heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Latest heartbeat of a node: its Lease's renewTime or its Ready condition's
/// lastHeartbeatTime, whichever is later; the creation time if it never heartbeat.
pub(crate) fn last_heartbeat(node: &Node, lease: Option<&Lease>) -> Option<Timestamp> {
    let from_lease = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let from_cond = ready_condition(node)
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    from_lease
        .into_iter()
        .chain(from_cond)
        .max()
        .or_else(|| node.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// When a pod on a node tainted at `tainted_at` must be evicted: `Some(now-or-past)` if it
/// does not tolerate the taint, `Some(t)` for a toleration of limited time, `None` if it
/// tolerates it for ever.
pub(crate) fn eviction_time(pod: &Pod, taint: &Taint, tainted_at: Timestamp) -> Option<Timestamp> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    match toleration_for(&tolerations, taint) {
        None => Some(tainted_at),
        Some(t) => t.toleration_seconds.map(|s| {
            tainted_at
                .checked_add(SignedDuration::from_secs(s.max(0)))
                .unwrap_or(tainted_at)
        }),
    }
}

/// The cache index of pods by `spec.nodeName` (upstream's taint manager keeps the same),
/// so evicting from one unreachable node reads that node's pods, not every pod.
const NODE_NAME_INDEX: &str = "spec.nodeName";

fn node_name_index() -> crate::cache::IndexFn<Pod> {
    Arc::new(|p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
            .into_iter()
            .collect()
    })
}

/// The node lifecycle controller.
pub(crate) struct NodeLifecycleController {
    client: Client,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    grace: Duration,
}

impl NodeLifecycleController {
    pub(crate) fn new(
        client: Client,
        nodes: Store<Node>,
        leases: Store<Lease>,
        pods: Store<Pod>,
        grace: Duration,
    ) -> Self {
        pods.add_index(NODE_NAME_INDEX, node_name_index());
        Self {
            client,
            nodes,
            leases,
            pods,
            grace,
        }
    }

    pub(crate) fn on_node(queue: WorkQueue<ObjectKey>) -> impl Fn(&Change<Node>) + Send + Sync {
        move |c| queue.add(ObjectKey::of(c.object().as_ref()))
    }

    pub(crate) fn on_lease(queue: WorkQueue<ObjectKey>) -> impl Fn(&Change<Lease>) + Send + Sync {
        move |c| {
            let l = c.object();
            if l.metadata.namespace.as_deref() == Some(NODE_LEASE_NAMESPACE) {
                queue.add(ObjectKey::cluster(
                    l.metadata.name.clone().unwrap_or_default(),
                ));
            }
        }
    }

    fn taints(node: &Node) -> Vec<Taint> {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
    }

    async fn mark_unknown(&self, node: &Node, now: Timestamp) -> Result<(), Error> {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let api: Api<Node> = Api::all(self.client.clone());
        let mut conds = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        if ready_condition(node).is_none_or(|c| c.status != "Unknown") {
            let new = NodeCondition {
                type_: "Ready".into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusUnknown".into()),
                message: Some("Kubelet stopped posting node status.".into()),
                last_transition_time: Some(Time(now)),
                last_heartbeat_time: ready_condition(node)
                    .and_then(|c| c.last_heartbeat_time.clone()),
            };
            match conds.iter_mut().find(|c| c.type_ == "Ready") {
                Some(c) => *c = new,
                None => conds.push(new),
            }
            let patch = json!({"status": {"conditions": conds}});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api("patch status of", format!("node {name}")))?;
            tracing::warn!(node = %name, "node stopped heartbeating; marked NotReady (Unknown)");
        }
        let mut taints = Self::taints(node);
        let mut changed = false;
        for effect in ["NoSchedule", "NoExecute"] {
            if !taints
                .iter()
                .any(|t| t.key == UNREACHABLE_TAINT && t.effect == effect)
            {
                taints.push(Taint {
                    key: UNREACHABLE_TAINT.into(),
                    effect: effect.into(),
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                    value: None,
                });
                changed = true;
            }
        }
        if changed {
            let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "spec": {"taints": taints}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api("taint", format!("node {name}")))?;
        }
        Ok(())
    }

    async fn untaint(&self, node: &Node) -> Result<(), Error> {
        let taints = Self::taints(node);
        if !taints.iter().any(|t| t.key == UNREACHABLE_TAINT) {
            return Ok(());
        }
        let name = node.metadata.name.as_deref().unwrap_or("");
        let keep: Vec<&Taint> = taints
            .iter()
            .filter(|t| t.key != UNREACHABLE_TAINT)
            .collect();
        let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "spec": {"taints": keep}});
        Api::<Node>::all(self.client.clone())
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::api("untaint", format!("node {name}")))?;
        tracing::info!(node = %name, "node heartbeating again; taints removed");
        Ok(())
    }

    /// Evicts the pods due for eviction; returns when the next one is due.
    async fn evict(&self, node: &Node, now: Timestamp) -> Result<Option<Timestamp>, Error> {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let Some(taint) = Self::taints(node)
            .into_iter()
            .find(|t| t.key == UNREACHABLE_TAINT && t.effect == "NoExecute")
        else {
            return Ok(None);
        };
        let tainted_at = taint.time_added.as_ref().map_or(now, |t| t.0);
        let mut next: Option<Timestamp> = None;
        let pods: Vec<Arc<Pod>> = self.pods.by_index(NODE_NAME_INDEX, &[name]);
        for p in pods
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let Some(at) = eviction_time(&p, &taint, tainted_at) else {
                continue;
            };
            if at > now {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            let ns = p.metadata.namespace.as_deref().unwrap_or("");
            let pname = p.metadata.name.as_deref().unwrap_or("");
            match Api::<Pod>::namespaced(self.client.clone(), ns)
                .delete(pname, &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    tracing::info!(node = %name, pod = %format!("{ns}/{pname}"), "evicted pod from unreachable node")
                }
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(Error::api("evict", format!("pod {ns}/{pname}"))(e)),
            }
        }
        Ok(next)
    }
}

impl Reconciler for NodeLifecycleController {
    fn name(&self) -> &'static str {
        "nodelifecycle"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(node) = self.nodes.get(key) else {
            return Ok(Action::Done);
        };
        let lease = self
            .leases
            .get(&ObjectKey::namespaced(NODE_LEASE_NAMESPACE, &key.name));
        let now = Timestamp::now();
        let grace = SignedDuration::try_from(self.grace).unwrap_or(SignedDuration::from_secs(40));
        let Some(beat) = last_heartbeat(&node, lease.as_deref()) else {
            return Ok(Action::RequeueAfter(self.grace));
        };
        let deadline = beat.checked_add(grace).unwrap_or(beat);
        if now < deadline {
            self.untaint(&node).await?;
            let left = now.duration_until(deadline).unsigned_abs();
            return Ok(Action::RequeueAfter(left + Duration::from_millis(100)));
        }
        self.mark_unknown(&node, now).await?;
        // Evict from the freshest copy (with the taint just added, if any).
        let fresh = Api::<Node>::all(self.client.clone())
            .get(&key.name)
            .await
            .map_err(Error::api("get", format!("node {key}")))?;
        let next = self.evict(&fresh, now).await?;
        let monitor = (self.grace / 4).max(Duration::from_millis(200));
        let wait = next.map_or(monitor, |n| {
            now.duration_until(n).unsigned_abs().min(monitor)
        });
        Ok(Action::RequeueAfter(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, Toleration};

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn heartbeat_is_the_latest_of_lease_and_condition() {
        let mut node = Node::default();
        node.metadata.creation_timestamp = Some(Time(ts(0)));
        assert_eq!(last_heartbeat(&node, None), Some(ts(0)));
        node.status = Some(k8s_openapi::api::core::v1::NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_heartbeat_time: Some(Time(ts(10))),
                ..NodeCondition::default()
            }]),
            ..Default::default()
        });
        assert_eq!(last_heartbeat(&node, None), Some(ts(10)));
        let lease = Lease {
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    ts(30),
                )),
                ..Default::default()
            }),
            ..Lease::default()
        };
        assert_eq!(last_heartbeat(&node, Some(&lease)), Some(ts(30)));
    }

    #[test]
    fn eviction_times() {
        let taint = Taint {
            key: UNREACHABLE_TAINT.into(),
            effect: "NoExecute".into(),
            ..Taint::default()
        };
        let pod = |tol: Option<Toleration>| Pod {
            spec: Some(PodSpec {
                tolerations: tol.map(|t| vec![t]),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let tol = |secs: Option<i64>| Toleration {
            key: Some(UNREACHABLE_TAINT.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            ..Toleration::default()
        };
        assert_eq!(
            eviction_time(&pod(None), &taint, ts(0)),
            Some(ts(0)),
            "no toleration: at once"
        );
        assert_eq!(
            eviction_time(&pod(Some(tol(Some(300)))), &taint, ts(0)),
            Some(ts(300))
        );
        assert_eq!(
            eviction_time(&pod(Some(tol(None))), &taint, ts(0)),
            None,
            "tolerated for ever"
        );
    }
}
