//! The `pvc-protection` and `pv-protection` controllers: the API server gives every new
//! claim the `kubernetes.io/pvc-protection` finalizer and every new volume
//! `kubernetes.io/pv-protection` (upstream's StorageObjectInUseProtection admission);
//! these controllers remove them from a claim being deleted once no pod uses it, and from
//! a volume being deleted once it is not Bound, so storage in use is never deleted from
//! under a pod.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kcore_k8s::status_code;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::json;

use crate::cache::{Change, Store};
use crate::error::Error;
use crate::meta::ObjectKey;
use crate::queue::WorkQueue;
use crate::runner::{Action, Reconciler};

/// The finalizer that keeps a claim a pod uses.
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a volume bound to a claim.
pub const PV_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-protection";

fn has(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, f: &str) -> bool {
    meta.finalizers.iter().flatten().any(|x| x == f)
}

/// Whether `pod` uses claim `claim` of its namespace and may still run (upstream's
/// `podUsesPVC` with `podIsShutDown`).
pub fn pod_uses_claim(pod: &Pod, claim: &str) -> bool {
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    !finished
        && pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == claim)
                    || (v.ephemeral.is_some() && format!("{name}-{}", v.name) == claim)
            })
}

/// Removes `finalizer` from an object through a JSON merge patch of its finalizers
/// (guarded by its resourceVersion).
async fn drop_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let meta = obj.meta();
    let name = meta.name.clone().unwrap_or_default();
    let rest: Vec<&String> = meta
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .collect();
    let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": meta.resource_version}});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(Error::api("patch", format!("finalizers of {name}"))(e)),
    }
}

/// The `pvc-protection` controller.
pub(crate) struct PvcProtectionController {
    client: Client,
    claims: Store<PersistentVolumeClaim>,
    pods: Store<Pod>,
}

impl PvcProtectionController {
    pub(crate) fn new(
        client: Client,
        claims: Store<PersistentVolumeClaim>,
        pods: Store<Pod>,
    ) -> Self {
        Self {
            client,
            claims,
            pods,
        }
    }

    /// A claim being deleted is looked at.
    pub(crate) fn on_claim(
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<PersistentVolumeClaim>) + Send + Sync {
        move |c| {
            let m = &c.object().metadata;
            if m.deletion_timestamp.is_some() && has(m, PVC_PROTECTION_FINALIZER) {
                queue.add(ObjectKey::of(c.object().as_ref()));
            }
        }
    }

    /// A pod that goes or finishes frees its claims.
    pub(crate) fn on_pod(queue: WorkQueue<ObjectKey>) -> impl Fn(&Change<Pod>) + Send + Sync {
        move |c| {
            let p = c.object();
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let name = p.metadata.name.as_deref().unwrap_or_default();
            for v in p.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
                if let Some(pvc) = &v.persistent_volume_claim {
                    queue.add(ObjectKey::namespaced(ns.clone(), pvc.claim_name.clone()));
                } else if v.ephemeral.is_some() {
                    queue.add(ObjectKey::namespaced(
                        ns.clone(),
                        format!("{name}-{}", v.name),
                    ));
                }
            }
        }
    }
}

impl Reconciler for PvcProtectionController {
    fn name(&self) -> &'static str {
        "pvc-protection"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(claim) = self.claims.get(key) else {
            return Ok(Action::Done);
        };
        let m = &claim.metadata;
        if m.deletion_timestamp.is_none() || !has(m, PVC_PROTECTION_FINALIZER) {
            return Ok(Action::Done);
        }
        let cached = self
            .pods
            .list_namespace(key.ns())
            .iter()
            .any(|p| pod_uses_claim(p, &key.name));
        if cached {
            return Ok(Action::Done);
        }
        // The cache may not have a pod created a moment ago: ask the server, as upstream.
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), key.ns());
        let live = pods.list(&ListParams::default()).await.map_err(Error::api(
            "list",
            format!("pods in namespace {}", key.ns()),
        ))?;
        if live.items.iter().any(|p| pod_uses_claim(p, &key.name)) {
            return Ok(Action::Done);
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), key.ns());
        drop_finalizer(&api, claim.as_ref(), PVC_PROTECTION_FINALIZER).await?;
        tracing::debug!(claim = %key, "claim no longer in use; protection removed");
        Ok(Action::Done)
    }
}

/// The `pv-protection` controller.
pub(crate) struct PvProtectionController {
    client: Client,
    volumes: Store<PersistentVolume>,
}

impl PvProtectionController {
    pub(crate) fn new(client: Client, volumes: Store<PersistentVolume>) -> Self {
        Self { client, volumes }
    }

    /// A volume being deleted is looked at (again when its phase changes).
    pub(crate) fn on_volume(
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<PersistentVolume>) + Send + Sync {
        move |c| {
            let m = &c.object().metadata;
            if m.deletion_timestamp.is_some() && has(m, PV_PROTECTION_FINALIZER) {
                queue.add(ObjectKey::of(c.object().as_ref()));
            }
        }
    }
}

impl Reconciler for PvProtectionController {
    fn name(&self) -> &'static str {
        "pv-protection"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(v) = self.volumes.get(key) else {
            return Ok(Action::Done);
        };
        let m = &v.metadata;
        if m.deletion_timestamp.is_none() || !has(m, PV_PROTECTION_FINALIZER) {
            return Ok(Action::Done);
        }
        if v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") {
            return Ok(Action::Done);
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        drop_finalizer(&api, v.as_ref(), PV_PROTECTION_FINALIZER).await?;
        Ok(Action::Done)
    }
}
