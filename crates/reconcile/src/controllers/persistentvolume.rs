//! The PersistentVolume controller (upstream's `persistentvolume-binder`): binds
//! PersistentVolumeClaims to matching PersistentVolumes and keeps the phases of both.
//!
//! - A claim with no `volumeName` is bound to the smallest Available volume that
//!   satisfies it ([`best_volume`]: class, access modes, capacity, volume mode,
//!   selector, a volume pre-bound to it first). Both sides are written as upstream
//!   does: the volume's `claimRef` (with `pv.kubernetes.io/bound-by-controller`), then
//!   its phase Bound; the claim's `volumeName` (`pv.kubernetes.io/bind-completed`,
//!   `pv.kubernetes.io/bound-by-controller`), then its phase Bound with the volume's
//!   capacity and access modes.
//! - With no match, a claim of a class with a provisioner is handed to it by the
//!   `volume.kubernetes.io/storage-provisioner` annotation, at once (`Immediate`) or
//!   once the scheduler chose a node (`WaitForFirstConsumer`: the
//!   `volume.kubernetes.io/selected-node` annotation); until then the claim stays
//!   Pending with upstream's events (`WaitForFirstConsumer`, `ExternalProvisioning`,
//!   `FailedBinding`).
//! - A claim pre-bound to a volume (`spec.volumeName`) gets it if the volume is free and
//!   fits; a bound claim whose volume is gone is Lost (`ClaimLost`).
//! - A volume whose claim is gone is Released; then its reclaim policy applies: Retain
//!   keeps it, Delete is the provisioner's (`pv.kubernetes.io/provisioned-by`) to carry
//!   out, and a volume nobody can delete or recycle is Failed (`VolumeFailedDelete`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Event, EventSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kcore_k8s::{label_selector_matches, status_code, Quantity};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;

use crate::cache::{Change, Store};
use crate::error::Error;
use crate::meta::ObjectKey;
use crate::queue::WorkQueue;
use crate::runner::{Action, Reconciler};

/// Set on a claim once the controller finished binding it.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on a claim or volume the controller (not a user) bound.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The node the scheduler chose for a `WaitForFirstConsumer` claim.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The provisioner a claim is handed to.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The beta form of [`ANN_STORAGE_PROVISIONER`], still set upstream.
const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The provisioner that made a volume (which deletes it under reclaim policy Delete).
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// How long a Pending claim waits before it is looked at again.
const RESYNC: Duration = Duration::from_secs(15);

/// The class of a claim or volume (`spec.storageClassName`, else the beta annotation).
fn class_of(meta: &ObjectMeta, spec_class: Option<&String>) -> String {
    spec_class
        .cloned()
        .or_else(|| {
            meta.annotations
                .as_ref()
                .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class").cloned())
        })
        .unwrap_or_default()
}

fn claim_class(c: &PersistentVolumeClaim) -> String {
    class_of(
        &c.metadata,
        c.spec.as_ref().and_then(|s| s.storage_class_name.as_ref()),
    )
}

fn volume_class(v: &PersistentVolume) -> String {
    class_of(
        &v.metadata,
        v.spec.as_ref().and_then(|s| s.storage_class_name.as_ref()),
    )
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn request(c: &PersistentVolumeClaim) -> Option<Quantity> {
    c.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .and_then(|q| Quantity::try_from(q).ok())
}

fn capacity(v: &PersistentVolume) -> Option<Quantity> {
    v.spec
        .as_ref()?
        .capacity
        .as_ref()?
        .get("storage")
        .and_then(|q| Quantity::try_from(q).ok())
}

/// Why volume `v` cannot serve claim `c`, or `None` when it can (upstream's
/// `checkVolumeSatisfyClaim`, plus the selector).
pub fn volume_mismatch(v: &PersistentVolume, c: &PersistentVolumeClaim) -> Option<String> {
    let (Some(vs), Some(cs)) = (v.spec.as_ref(), c.spec.as_ref()) else {
        return Some("no spec".into());
    };
    if volume_class(v) != claim_class(c) {
        return Some("storageClassName does not match".into());
    }
    match (request(c), capacity(v)) {
        (Some(r), Some(cap)) if cap < r => {
            return Some("requested PV is too small".into());
        }
        (Some(_), None) => return Some("requested PV has no capacity".into()),
        _ => {}
    }
    let vmode = vs.volume_mode.as_deref().unwrap_or("Filesystem");
    let cmode = cs.volume_mode.as_deref().unwrap_or("Filesystem");
    if vmode != cmode {
        return Some("incompatible volumeMode".into());
    }
    let have = vs.access_modes.as_deref().unwrap_or_default();
    if !cs.access_modes.iter().flatten().all(|m| have.contains(m)) {
        return Some("incompatible accessMode".into());
    }
    if let Some(sel) = &cs.selector {
        if !label_selector_matches(sel, v.metadata.labels.as_ref()) {
            return Some("volume does not match the claim's selector".into());
        }
    }
    None
}

fn claim_ref_is(r: &ObjectReference, c: &PersistentVolumeClaim) -> bool {
    r.name == c.metadata.name
        && r.namespace == c.metadata.namespace
        && (r.uid.as_deref().is_none_or(str::is_empty) || r.uid == c.metadata.uid)
}

/// The volume to bind claim `c` to among `volumes` (upstream's `findBestMatchForClaim`):
/// a volume pre-bound to the claim (its `claimRef` names it) if one fits, else the
/// smallest Available, unclaimed volume that satisfies it.
pub fn best_volume<'a>(
    c: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a PersistentVolume>,
) -> Option<&'a PersistentVolume> {
    let mut best: Option<(&PersistentVolume, bool)> = None;
    for v in volumes {
        if v.metadata.deletion_timestamp.is_some() || volume_mismatch(v, c).is_some() {
            continue;
        }
        let claim_ref = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let prebound = match claim_ref {
            Some(r) if claim_ref_is(r, c) => true,
            Some(_) => continue,
            None => false,
        };
        if !prebound && v.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Available") {
            continue;
        }
        best = match best {
            Some((_, true)) if !prebound => best,
            Some((b, bp)) if bp == prebound && capacity(b) <= capacity(v) => Some((b, bp)),
            _ => Some((v, prebound)),
        };
    }
    best.map(|(v, _)| v)
}

/// The PersistentVolume controller.
pub(crate) struct PersistentVolumeController {
    client: Client,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    /// Events already sent, by (object uid, reason, message): each is sent once. The
    /// entries of objects no longer in the caches are dropped (see `forget_gone`).
    sent: Mutex<HashSet<(String, String, String)>>,
}

/// Keeps only the entries of `sent` whose object uid is in `live`.
fn retain_live(sent: &mut HashSet<(String, String, String)>, live: &HashSet<&str>) {
    sent.retain(|(uid, _, _)| live.contains(uid.as_str()));
}

impl PersistentVolumeController {
    pub(crate) fn new(
        client: Client,
        claims: Store<PersistentVolumeClaim>,
        volumes: Store<PersistentVolume>,
        classes: Store<StorageClass>,
    ) -> Self {
        Self {
            client,
            claims,
            volumes,
            classes,
            sent: Mutex::new(HashSet::new()),
        }
    }

    /// Claims are keyed by namespace and name; a claim's volume is looked at with it
    /// (a deleted claim's volume is released).
    pub(crate) fn on_claim(
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<PersistentVolumeClaim>) + Send + Sync {
        move |c| {
            let claim = c.object();
            queue.add(ObjectKey::of(claim.as_ref()));
            if let Some(v) = claim.spec.as_ref().and_then(|s| s.volume_name.as_ref()) {
                queue.add(ObjectKey::cluster(v.clone()));
            }
        }
    }

    /// Volumes are keyed by name (no namespace); a volume's claim is looked at with it,
    /// and a free volume has every Pending claim looked at again.
    pub(crate) fn on_volume(
        &self,
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<PersistentVolume>) + Send + Sync {
        let claims = self.claims.clone();
        move |c| {
            let v = c.object();
            queue.add(ObjectKey::cluster(
                v.metadata.name.clone().unwrap_or_default(),
            ));
            match v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                Some(r) => {
                    if let (Some(ns), Some(n)) = (&r.namespace, &r.name) {
                        queue.add(ObjectKey::namespaced(ns.clone(), n.clone()));
                    }
                }
                None => {
                    for claim in
                        claims.filter(|c| c.spec.as_ref().is_none_or(|s| s.volume_name.is_none()))
                    {
                        queue.add(ObjectKey::of(claim.as_ref()));
                    }
                }
            }
        }
    }

    /// Forgets the events sent about claims and volumes that are gone, so the record
    /// does not grow with every object ever seen. Called when a sync finds its object
    /// gone from the cache.
    fn forget_gone(&self) {
        let claims = self.claims.list();
        let volumes = self.volumes.list();
        let live: HashSet<&str> = claims
            .iter()
            .filter_map(|c| c.metadata.uid.as_deref())
            .chain(volumes.iter().filter_map(|v| v.metadata.uid.as_deref()))
            .collect();
        retain_live(
            &mut self.sent.lock().unwrap_or_else(|e| e.into_inner()),
            &live,
        );
    }

    /// Records an event about `obj` once per (object, reason, message).
    async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        let meta = obj.meta();
        let uid = meta.uid.clone().unwrap_or_default();
        let fresh = self.sent.lock().unwrap_or_else(|e| e.into_inner()).insert((
            uid.clone(),
            reason.to_owned(),
            message.to_owned(),
        ));
        if !fresh {
            return;
        }
        record_event(&self.client, obj, type_, reason, message).await;
    }

    async fn patch_claim(
        &self,
        c: &PersistentVolumeClaim,
        patch: serde_json::Value,
        status: bool,
    ) -> Result<(), Error> {
        let ns = c.metadata.namespace.as_deref().unwrap_or_default();
        let name = c.metadata.name.as_deref().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let pp = PatchParams::default();
        let r = if status {
            api.patch_status(name, &pp, &Patch::Merge(&patch)).await
        } else {
            api.patch(name, &pp, &Patch::Merge(&patch)).await
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(Error::api(
                "patch",
                format!("persistentvolumeclaim {ns}/{name}"),
            )(e)),
        }
    }

    async fn patch_volume(
        &self,
        name: &str,
        patch: serde_json::Value,
        status: bool,
    ) -> Result<(), Error> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let pp = PatchParams::default();
        let r = if status {
            api.patch_status(name, &pp, &Patch::Merge(&patch)).await
        } else {
            api.patch(name, &pp, &Patch::Merge(&patch)).await
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(Error::api("patch", format!("persistentvolume {name}"))(e)),
        }
    }

    async fn volume_phase(&self, v: &PersistentVolume, phase: &str) -> Result<(), Error> {
        if v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
            return Ok(());
        }
        let name = v.metadata.name.as_deref().unwrap_or_default();
        tracing::debug!(volume = name, phase, "volume phase");
        self.patch_volume(name, json!({"status": {"phase": phase}}), true)
            .await
    }

    async fn claim_phase(&self, c: &PersistentVolumeClaim, phase: &str) -> Result<(), Error> {
        if c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
            return Ok(());
        }
        self.patch_claim(c, json!({"status": {"phase": phase}}), true)
            .await
    }

    /// Binds `v` and `c` to each other (upstream's `bind`): volume first, then claim.
    async fn bind(&self, v: &PersistentVolume, c: &PersistentVolumeClaim) -> Result<(), Error> {
        let vname = v.metadata.name.clone().unwrap_or_default();
        let vspec = v.spec.clone().unwrap_or_default();
        let by_us_volume = vspec.claim_ref.as_ref().is_none_or(|r| r.uid.is_none());
        let claim_ref = json!({
            "kind": "PersistentVolumeClaim",
            "apiVersion": "v1",
            "namespace": c.metadata.namespace,
            "name": c.metadata.name,
            "uid": c.metadata.uid,
            "resourceVersion": c.metadata.resource_version,
        });
        let ref_done = vspec
            .claim_ref
            .as_ref()
            .is_some_and(|r| r.uid == c.metadata.uid && r.uid.is_some());
        if !ref_done {
            let mut patch = json!({"spec": {"claimRef": claim_ref}});
            if by_us_volume && vspec.claim_ref.is_none() {
                patch["metadata"] = json!({"annotations": {ANN_BOUND_BY_CONTROLLER: "yes"}});
            }
            self.patch_volume(&vname, patch, false).await?;
        }
        self.volume_phase(v, "Bound").await?;
        let cspec = c.spec.clone().unwrap_or_default();
        let completed = annotation(&c.metadata, ANN_BIND_COMPLETED).is_some();
        if cspec.volume_name.as_deref() != Some(&vname) || !completed {
            let mut ann = BTreeMap::new();
            ann.insert(ANN_BIND_COMPLETED, "yes");
            if cspec.volume_name.is_none() {
                ann.insert(ANN_BOUND_BY_CONTROLLER, "yes");
            }
            self.patch_claim(
                c,
                json!({"metadata": {"annotations": ann}, "spec": {"volumeName": vname}}),
                false,
            )
            .await?;
        }
        let status = c.status.clone().unwrap_or_default();
        // the capacity is set as the claim becomes Bound, not later: after that it is
        // the resizer's (a difference can mean an expansion in progress), as upstream
        let becoming = status.phase.as_deref() != Some("Bound");
        if becoming || status.access_modes != vspec.access_modes {
            let mut st = json!({"phase": "Bound", "accessModes": vspec.access_modes});
            if becoming || status.capacity.is_none() {
                st["capacity"] = json!(vspec.capacity);
            }
            self.patch_claim(c, json!({ "status": st }), true).await?;
        }
        tracing::info!(
            claim = %ObjectKey::of(c),
            volume = %vname,
            "claim bound"
        );
        Ok(())
    }

    /// A live read of a claim, for decisions a stale cache must not make (releasing a
    /// volume).
    async fn fresh_claim(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, Error> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        api.get_opt(name).await.map_err(Error::api(
            "get",
            format!("persistentvolumeclaim {ns}/{name}"),
        ))
    }

    async fn sync_claim(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(c) = self.claims.get(key) else {
            self.forget_gone();
            return Ok(Action::Done);
        };
        if c.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let spec = c.spec.clone().unwrap_or_default();
        let Some(vname) = spec.volume_name.clone().filter(|s| !s.is_empty()) else {
            return self.sync_unbound_claim(&c).await;
        };
        let v = match self.volumes.get(&ObjectKey::cluster(vname.clone())) {
            Some(v) => Some(v.as_ref().clone()),
            None => Api::<PersistentVolume>::all(self.client.clone())
                .get_opt(&vname)
                .await
                .map_err(Error::api("get", format!("persistentvolume {vname}")))?,
        };
        let Some(v) = v else {
            if annotation(&c.metadata, ANN_BIND_COMPLETED).is_some() {
                self.claim_phase(&c, "Lost").await?;
                self.event(
                    c.as_ref(),
                    "Warning",
                    "ClaimLost",
                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                )
                .await;
                return Ok(Action::Done);
            }
            self.claim_phase(&c, "Pending").await?;
            return Ok(Action::RequeueAfter(RESYNC));
        };
        match v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            Some(r) if claim_ref_is(r, &c) => {
                self.bind(&v, &c).await?;
                Ok(Action::Done)
            }
            None => {
                if let Some(why) = volume_mismatch(&v, &c) {
                    self.event(
                        c.as_ref(),
                        "Warning",
                        "VolumeMismatch",
                        &format!("Cannot bind to requested volume {vname:?}: {why}"),
                    )
                    .await;
                    self.claim_phase(&c, "Pending").await?;
                    return Ok(Action::RequeueAfter(RESYNC));
                }
                self.bind(&v, &c).await?;
                Ok(Action::Done)
            }
            Some(_) => {
                self.event(
                    c.as_ref(),
                    "Warning",
                    "FailedBinding",
                    &format!("volume {vname:?} already bound to a different claim."),
                )
                .await;
                let phase = if annotation(&c.metadata, ANN_BIND_COMPLETED).is_some() {
                    "Lost"
                } else {
                    "Pending"
                };
                self.claim_phase(&c, phase).await?;
                Ok(Action::RequeueAfter(RESYNC))
            }
        }
    }

    async fn sync_unbound_claim(&self, c: &PersistentVolumeClaim) -> Result<Action, Error> {
        let volumes = self.volumes.list();
        if let Some(v) = best_volume(c, volumes.iter().map(AsRef::as_ref)) {
            self.bind(v, c).await?;
            return Ok(Action::Done);
        }
        self.claim_phase(c, "Pending").await?;
        let class = claim_class(c);
        if class.is_empty() {
            self.event(
                c,
                "Normal",
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            )
            .await;
            return Ok(Action::RequeueAfter(RESYNC));
        }
        let Some(sc) = self.classes.get(&ObjectKey::cluster(class.clone())) else {
            self.event(
                c,
                "Warning",
                "ProvisioningFailed",
                &format!("storageclass.storage.k8s.io {class:?} not found"),
            )
            .await;
            return Ok(Action::RequeueAfter(RESYNC));
        };
        let wffc = sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
        if wffc && annotation(&c.metadata, ANN_SELECTED_NODE).is_none() {
            self.event(
                c,
                "Normal",
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding",
            )
            .await;
            return Ok(Action::RequeueAfter(RESYNC));
        }
        if sc.provisioner == "kubernetes.io/no-provisioner" {
            self.event(
                c,
                "Normal",
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            )
            .await;
            return Ok(Action::RequeueAfter(RESYNC));
        }
        if annotation(&c.metadata, ANN_STORAGE_PROVISIONER) != Some(sc.provisioner.as_str()) {
            self.patch_claim(
                c,
                json!({"metadata": {"annotations": {
                    ANN_STORAGE_PROVISIONER: sc.provisioner,
                    ANN_BETA_STORAGE_PROVISIONER: sc.provisioner,
                }}}),
                false,
            )
            .await?;
        }
        self.event(
            c,
            "Normal",
            "ExternalProvisioning",
            &format!(
                "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
                sc.provisioner
            ),
        )
        .await;
        Ok(Action::RequeueAfter(RESYNC))
    }

    async fn sync_volume(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(v) = self.volumes.get(key) else {
            self.forget_gone();
            return Ok(Action::Done);
        };
        if v.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
            self.volume_phase(&v, "Available").await?;
            return Ok(Action::Done);
        };
        let (ns, name) = (
            r.namespace.clone().unwrap_or_default(),
            r.name.clone().unwrap_or_default(),
        );
        if r.uid.as_deref().is_none_or(str::is_empty) {
            // Pre-bound by a user: available to that claim only.
            self.volume_phase(&v, "Available").await?;
            return Ok(Action::Done);
        }
        let cached = self
            .claims
            .get(&ObjectKey::namespaced(ns.clone(), name.clone()))
            .map(|c| c.as_ref().clone());
        let claim = match cached {
            Some(c) if c.metadata.uid == r.uid => Some(c),
            _ => self.fresh_claim(&ns, &name).await?,
        };
        let claim = claim.filter(|c| c.metadata.uid == r.uid);
        match claim {
            Some(c) => {
                let volume_name = c.spec.as_ref().and_then(|s| s.volume_name.as_deref());
                match volume_name {
                    Some(n) if Some(n) == v.metadata.name.as_deref() => {
                        self.volume_phase(&v, "Bound").await?;
                    }
                    Some(_) if annotation(&v.metadata, ANN_BOUND_BY_CONTROLLER).is_some() => {
                        // The claim went to another volume: unbind this one.
                        let vname = v.metadata.name.clone().unwrap_or_default();
                        self.patch_volume(&vname, json!({"spec": {"claimRef": null}}), false)
                            .await?;
                        self.volume_phase(&v, "Available").await?;
                    }
                    // The claim's side is being bound.
                    _ => {}
                }
                Ok(Action::Done)
            }
            None => self.reclaim(&v).await,
        }
    }

    /// A volume whose claim is gone: Released, then its reclaim policy.
    async fn reclaim(&self, v: &PersistentVolume) -> Result<Action, Error> {
        let phase = v.status.as_ref().and_then(|s| s.phase.as_deref());
        if phase == Some("Failed") {
            return Ok(Action::Done);
        }
        self.volume_phase(v, "Released").await?;
        let name = v.metadata.name.as_deref().unwrap_or_default();
        let policy = v
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            .unwrap_or("Retain");
        match policy {
            "Retain" => {
                tracing::debug!(volume = name, "released volume retained");
            }
            "Delete" if annotation(&v.metadata, ANN_PROVISIONED_BY).is_some() => {
                // Its provisioner deletes it (the storage first, then the object).
                tracing::debug!(volume = name, "released volume left to its provisioner");
            }
            "Delete" => {
                let msg = format!(
                    "error getting deleter volume plugin for volume {name:?}: no deletable volume plugin matched"
                );
                self.patch_volume(
                    name,
                    json!({"status": {"phase": "Failed", "message": msg}}),
                    true,
                )
                .await?;
                self.event(v, "Warning", "VolumeFailedDelete", &msg).await;
            }
            other => {
                let msg =
                    format!("no volume plugin matched to recycle volume {name:?} (policy {other})");
                self.patch_volume(
                    name,
                    json!({"status": {"phase": "Failed", "message": msg}}),
                    true,
                )
                .await?;
                self.event(v, "Warning", "VolumeFailedRecycle", &msg).await;
            }
        }
        Ok(Action::Done)
    }
}

/// Creates a core/v1 Event about `obj` from the volume controller.
async fn record_event<K: Resource<DynamicType = ()>>(
    client: &Client,
    obj: &K,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let meta = obj.meta();
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let now = Timestamp::now();
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: Some(name),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        type_: Some(type_.to_owned()),
        source: Some(EventSource {
            component: Some("persistentvolume-controller".into()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: None::<MicroTime>,
        count: Some(1),
        reporting_component: Some("persistentvolume-controller".into()),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::debug!(error = %e, reason, "could not record an event");
    }
}

impl Reconciler for PersistentVolumeController {
    fn name(&self) -> &'static str {
        "persistentvolume-binder"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        if key.namespace.is_some() {
            self.sync_claim(key).await
        } else {
            self.sync_volume(key).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(name: &str, size: &str, modes: &[&str], class: &str, phase: &str) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"tier": "fast"}},
            "spec": {"capacity": {"storage": size}, "accessModes": modes,
                "storageClassName": class, "hostPath": {"path": "/x"}},
            "status": {"phase": phase},
        }))
        .expect("pv")
    }

    fn pvc(size: &str, modes: &[&str], class: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
            "spec": {"resources": {"requests": {"storage": size}}, "accessModes": modes,
                "storageClassName": class},
        }))
        .expect("pvc")
    }

    #[test]
    fn the_smallest_fitting_available_volume_wins() {
        let vs = [
            pv("big", "10Gi", &["ReadWriteOnce"], "", "Available"),
            pv("small", "1Gi", &["ReadWriteOnce"], "", "Available"),
            pv(
                "fits",
                "2Gi",
                &["ReadWriteOnce", "ReadOnlyMany"],
                "",
                "Available",
            ),
            pv("bound", "2Gi", &["ReadWriteOnce"], "", "Bound"),
            pv(
                "other-class",
                "2Gi",
                &["ReadWriteOnce"],
                "fast",
                "Available",
            ),
        ];
        let c = pvc("1500Mi", &["ReadWriteOnce"], "");
        assert_eq!(
            best_volume(&c, &vs).and_then(|v| v.metadata.name.as_deref()),
            Some("fits")
        );
        let c = pvc("1500Mi", &["ReadWriteMany"], "");
        assert!(
            best_volume(&c, &vs).is_none(),
            "no volume has the access mode"
        );
        let c = pvc("20Gi", &["ReadWriteOnce"], "");
        assert!(best_volume(&c, &vs).is_none(), "no volume is large enough");
        let c = pvc("1Gi", &["ReadWriteOnce"], "fast");
        assert_eq!(
            best_volume(&c, &vs).and_then(|v| v.metadata.name.as_deref()),
            Some("other-class")
        );
    }

    #[test]
    fn a_prebound_volume_and_the_selector_count() {
        let mut pre = pv("pre", "5Gi", &["ReadWriteOnce"], "", "Available");
        pre.spec.as_mut().expect("spec").claim_ref = Some(ObjectReference {
            namespace: Some("ns".into()),
            name: Some("c".into()),
            ..ObjectReference::default()
        });
        let mut taken = pv("taken", "1Gi", &["ReadWriteOnce"], "", "Available");
        taken.spec.as_mut().expect("spec").claim_ref = Some(ObjectReference {
            namespace: Some("ns".into()),
            name: Some("other".into()),
            ..ObjectReference::default()
        });
        let vs = [
            pv("free", "1Gi", &["ReadWriteOnce"], "", "Available"),
            pre,
            taken,
        ];
        let c = pvc("1Gi", &["ReadWriteOnce"], "");
        assert_eq!(
            best_volume(&c, &vs).and_then(|v| v.metadata.name.as_deref()),
            Some("pre")
        );
        let mut sel = pvc("1Gi", &["ReadWriteOnce"], "");
        sel.spec.as_mut().expect("spec").selector =
            serde_json::from_value(json!({"matchLabels": {"tier": "slow"}})).expect("selector");
        assert!(best_volume(&sel, &vs[..1]).is_none());
        let mut block = pvc("1Gi", &["ReadWriteOnce"], "");
        block.spec.as_mut().expect("spec").volume_mode = Some("Block".into());
        assert_eq!(
            volume_mismatch(&vs[0], &block).as_deref(),
            Some("incompatible volumeMode")
        );
    }

    #[test]
    fn the_record_of_sent_events_keeps_only_live_objects() {
        let entry = |uid: &str, reason: &str| (uid.to_owned(), reason.to_owned(), "m".to_owned());
        let mut sent: HashSet<_> = [entry("a", "X"), entry("a", "Y"), entry("gone", "X")]
            .into_iter()
            .collect();
        retain_live(&mut sent, &["a", "b"].into_iter().collect());
        let mut left: Vec<_> = sent.into_iter().map(|(u, r, _)| (u, r)).collect();
        left.sort();
        assert_eq!(
            left,
            [
                ("a".to_owned(), "X".to_owned()),
                ("a".to_owned(), "Y".to_owned())
            ]
        );
    }
}
