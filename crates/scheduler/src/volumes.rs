//! The API side of VolumeBinding: what a pending pod's PersistentVolumeClaims are
//! (read before each attempt), and, once a node is chosen, the
//! `volume.kubernetes.io/selected-node` annotation on its `WaitForFirstConsumer`
//! claims, then a bounded wait for them to be bound (upstream's PreBind) so the pod
//! reaches its node with its volumes ready. The wait follows a watch of the claims, so
//! the pod is bound as soon as the PV controller has bound its last claim.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt as _;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSIDriver, CSIStorageCapacity, StorageClass};
use kcore_k8s::Quantity;
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::Client;
use serde_json::json;

use crate::model::{ClaimCapacity, PodVolumes};

/// The annotation with the node the scheduler chose for a claim.
const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// How long the binder waits for delayed claims to be bound before binding the pod
/// anyway (the node then retries its mount until they are).
const BIND_WAIT: Duration = Duration::from_secs(60);

/// The pause before listing again after a failed list.
const RETRY: Duration = Duration::from_millis(200);

/// The claims a pod uses: its `persistentVolumeClaim` volumes and the claims of its
/// generic ephemeral volumes (`<pod>-<volume>`).
pub(crate) fn claim_names(pod: &Pod) -> Vec<String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(c.claim_name.clone())
            } else {
                v.ephemeral.as_ref().map(|_| format!("{name}-{}", v.name))
            }
        })
        .collect()
}

fn bound(c: &PersistentVolumeClaim) -> Option<&str> {
    c.spec
        .as_ref()?
        .volume_name
        .as_deref()
        .filter(|v| !v.is_empty())
}

/// Reads what VolumeBinding needs to know of `pod`'s claims; `None` for a pod without
/// claims.
pub(crate) async fn resolve(client: &Client, pod: &Pod) -> Option<PodVolumes> {
    let names = claim_names(pod);
    if names.is_empty() {
        return None;
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let classes: Api<StorageClass> = Api::all(client.clone());
    let mut out = PodVolumes::default();
    // the cluster's CSIStorageCapacities, read once per pod and only when needed
    let mut capacities = None;
    for name in names {
        let claim = match claims.get_opt(&name).await {
            Ok(Some(c)) if c.metadata.deletion_timestamp.is_none() => c,
            Ok(_) => {
                out.missing.push(name);
                continue;
            }
            Err(e) => {
                tracing::debug!(claim = %name, error = %e, "reading a pod's claim");
                out.missing.push(name);
                continue;
            }
        };
        if let Some(v) = bound(&claim) {
            if let Ok(Some(pv)) = pvs.get_opt(v).await {
                if let Some(req) = pv
                    .spec
                    .and_then(|s| s.node_affinity)
                    .and_then(|a| a.required)
                {
                    out.node_affinity.push(req);
                }
            }
            continue;
        }
        let class = claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default();
        let sc = if class.is_empty() {
            None
        } else {
            classes.get_opt(&class).await.ok().flatten()
        };
        let delayed = sc
            .as_ref()
            .is_some_and(|sc| sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
        if let Some(sc) = sc.filter(|_| delayed) {
            if let Some(c) = capacity_check(client, &claim, &sc, &mut capacities).await {
                out.capacity.push(c);
            }
            out.unbound_delayed.push(name);
        } else {
            out.unbound_immediate.push(name);
        }
    }
    Some(out)
}

/// The claim's request in bytes (`0` when it has none).
fn request_bytes(c: &PersistentVolumeClaim) -> i64 {
    c.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| Quantity::try_from(q).ok())
        .map_or(0, |q| q.value())
}

/// The CSIDriver object of a class's provisioner: upstream names it like the
/// provisioner; a provisioner whose name has a `/` (kcore's `kcore.dev/local-path`, in
/// the style of external provisioners) cannot be a CSIDriver name, so its driver is
/// looked up with `/` read as `.` (`kcore.dev.local-path`).
fn driver_name(provisioner: &str) -> String {
    provisioner.replace('/', ".")
}

/// Where claim `c` of class `sc` fits, when the class's driver publishes its capacity
/// (upstream VolumeBinding's `hasEnoughCapacity`): a CSIDriver named like the class's
/// provisioner with `storageCapacity: true`, and a claim asking for more than nothing.
/// `capacities` caches the cluster's CSIStorageCapacities for the pod's other claims.
async fn capacity_check(
    client: &Client,
    c: &PersistentVolumeClaim,
    sc: &StorageClass,
    capacities: &mut Option<Vec<CSIStorageCapacity>>,
) -> Option<ClaimCapacity> {
    let size = request_bytes(c);
    if sc.provisioner.is_empty() || size <= 0 {
        return None;
    }
    let drivers: Api<CSIDriver> = Api::all(client.clone());
    let driver = drivers
        .get_opt(&driver_name(&sc.provisioner))
        .await
        .ok()
        .flatten()?;
    if driver.spec.storage_capacity != Some(true) {
        return None;
    }
    if capacities.is_none() {
        let api: Api<CSIStorageCapacity> = Api::all(client.clone());
        match api.list(&ListParams::default()).await {
            Ok(l) => *capacities = Some(l.items),
            Err(e) => {
                // as upstream with an unreadable lister: no check rather than no node
                tracing::debug!(error = %e, "listing storage capacities");
                return None;
            }
        }
    }
    let class = sc.metadata.name.as_deref().unwrap_or_default();
    let topologies = capacities
        .iter()
        .flatten()
        .filter(|cap| cap.storage_class_name == class)
        .filter(|cap| {
            cap.maximum_volume_size
                .as_ref()
                .or(cap.capacity.as_ref())
                .and_then(|q| Quantity::try_from(q).ok())
                .is_some_and(|limit| limit.value() >= size)
        })
        .filter_map(|cap| cap.node_topology.clone())
        .collect();
    Some(ClaimCapacity {
        claim: c.metadata.name.clone().unwrap_or_default(),
        topologies,
    })
}

/// Marks the pod's delayed claims with the chosen `node`, then waits (at most a minute)
/// for them to be bound.
pub(crate) async fn select_node(client: &Client, pod: &Pod, delayed: &[String], node: &str) {
    if delayed.is_empty() {
        return;
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let patch = json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}});
    for c in delayed {
        if let Err(e) = claims
            .patch(c, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(claim = %c, error = %e, "setting the selected node of a claim");
        }
    }
    if !wait_bound(&claims, delayed, BIND_WAIT).await {
        tracing::warn!(pod = ?pod.metadata.name, "claims not bound in time; binding the pod anyway");
    }
}

/// Whether a claim is fully bound: its volume named and its phase Bound. The node mounts
/// a claim only in phase Bound, and the PV controller writes the phase after the volume
/// name, so a pod bound in between would meet an unbound claim and retry its mount.
fn fully_bound(c: &PersistentVolumeClaim) -> bool {
    bound(c).is_some() && c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

/// Waits until every claim of `names` is [`fully_bound`], reacting to a watch of the
/// namespace's claims (no polling); `false` when `within` passes first.
async fn wait_bound(api: &Api<PersistentVolumeClaim>, names: &[String], within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut pending: HashSet<&str> = names.iter().map(String::as_str).collect();
    loop {
        // a list gives the state and the resourceVersion to watch from
        let list = match tokio::time::timeout_at(deadline, api.list(&ListParams::default())).await {
            Err(_) => return false,
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "listing claims to wait for");
                if tokio::time::timeout_at(deadline, tokio::time::sleep(RETRY))
                    .await
                    .is_err()
                {
                    return false;
                }
                continue;
            }
        };
        for c in list.items.iter().filter(|c| fully_bound(c)) {
            pending.remove(c.metadata.name.as_deref().unwrap_or_default());
        }
        if pending.is_empty() {
            return true;
        }
        let rv = list.metadata.resource_version.unwrap_or_default();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wp = WatchParams::default()
            .timeout(u32::try_from(left.as_secs()).unwrap_or(290).clamp(1, 290));
        let mut events = match api.watch(&wp, &rv).await {
            Ok(s) => s.boxed(),
            Err(e) => {
                tracing::debug!(error = %e, "watching claims to wait for");
                continue;
            }
        };
        loop {
            match tokio::time::timeout_at(deadline, events.next()).await {
                Err(_) => return false,
                Ok(Some(Ok(WatchEvent::Added(c) | WatchEvent::Modified(c)))) => {
                    if fully_bound(&c) {
                        pending.remove(c.metadata.name.as_deref().unwrap_or_default());
                        if pending.is_empty() {
                            return true;
                        }
                    }
                }
                Ok(Some(Ok(WatchEvent::Deleted(_) | WatchEvent::Bookmark(_)))) => {}
                // an expired resourceVersion, a failed or ended watch: list again
                Ok(Some(Ok(WatchEvent::Error(_)) | Err(_)) | None) => break,
            }
        }
    }
}
