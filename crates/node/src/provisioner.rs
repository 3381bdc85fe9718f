//! The built-in local volume provisioner (`kcore.dev/local-path`), run by every node
//! agent for its own node, as k3s's local-path provisioner does for its nodes.
//!
//! A claim the PV controller handed to this provisioner (the
//! `volume.kubernetes.io/storage-provisioner` annotation) and that the scheduler placed
//! on this node (`volume.kubernetes.io/selected-node`) gets a directory
//! `<data dir>/volumes/pvc-<claim uid>` and a `local` PersistentVolume with node affinity
//! to this node, pre-bound to the claim; the PV controller then binds the claim. A
//! Released volume of this node whose reclaim policy is Delete has its directory removed
//! and then its PersistentVolume. A claim for a `Block` volume is refused with a
//! `ProvisioningFailed` event (directories are file systems only).
//!
//! **Capacity.** A class with the parameter `fsType: ext4` (or `ext3`, `ext2`) gets real
//! limits: each volume is a file system of the claim's size in a sparse file, loop-mounted
//! on the volume's directory (see `loopfs`), so a write past the capacity fails with
//! `ENOSPC`; the PV says so with `local.fsType`. A node without `/dev/loop-control` or
//! `mkfs.<fsType>` refuses such claims with a `ProvisioningFailed` event. Without the
//! parameter a volume is a plain directory and capacity is not enforced (the hosts'
//! file systems have no project quotas): the provisioner measures each bound volume's
//! usage and warns with a `VolumeCapacityExceeded` event on the claim when it grows past
//! its capacity.
//!
//! Pods using an over-full volume are deliberately *not* evicted. The kubelet evicts for
//! ephemeral storage (an emptyDir past its `sizeLimit`, see `volumes::over_limit`)
//! because removing the pod frees that storage; a claim's data outlives the pod, and its
//! `local` volume pins the replacement pod to the same node, so an eviction would free
//! nothing and only turn a full volume into a restart loop. Upstream does not act either:
//! Kubernetes `local` volumes and Rancher's local-path-provisioner document that their
//! capacity is not enforced. The honest answers are real limits (the `fsType` parameter)
//! and this warning.
//!
//! **Published capacity.** For each local-path StorageClass the provisioner publishes a
//! CSIStorageCapacity in `kube-system` (topology: this node's `kubernetes.io/hostname`)
//! with the free space of its volumes' file system; the CSIDriver [`LOCAL_PATH_DRIVER`]
//! has `storageCapacity: true`, so the scheduler places a claim only on a node with room
//! for it, and a claim no node can hold keeps its pod Pending with upstream's "node(s)
//! did not have enough free storage". The provisioner still refuses a claim larger than
//! the free space (a claim placed before the capacity was published).
//!
//! A bound claim that asks for more (the API server allows it only when the class has
//! `allowVolumeExpansion`) is expanded at once: a loop-mounted volume's file and file
//! system grow online; a directory has no device or file system to grow, so for it the
//! resize flow only records the new size (see `LocalProvisioner::resize`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::{CSIStorageCapacity, StorageClass};
use kcore_k8s::{status_code, Quantity};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::claims::ClaimCache;
use crate::error::{Error, ErrorChain, Result};
use crate::events;

/// The provisioner name of the built-in local volumes.
pub const LOCAL_PATH_PROVISIONER: &str = "kcore.dev/local-path";
/// The name of the built-in provisioner's CSIDriver object. CSIDriver names cannot hold
/// the `/` of [`LOCAL_PATH_PROVISIONER`], so the scheduler finds a provisioner's driver
/// under its name with `/` read as `.` (see kcore-scheduler's VolumeBinding).
pub const LOCAL_PATH_DRIVER: &str = "kcore.dev.local-path";

const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
const COMPONENT: &str = "kcore.dev/local-path";
/// The class parameter that selects a loop-mounted file system per volume.
const PARAM_FS_TYPE: &str = "fsType";

/// The namespace of the CSIStorageCapacities the provisioners publish.
pub const CAPACITY_NAMESPACE: &str = "kube-system";
/// How often a changed free space is published again (external-provisioner's
/// `--capacity-poll-interval` is a minute too).
const PUBLISH_EVERY: Duration = Duration::from_secs(60);

/// How often usage is measured.
const MEASURE_EVERY: Duration = Duration::from_secs(30);
/// The pass made without a change (retries, remounts, measurements): changes make
/// theirs at once.
const RESYNC: Duration = Duration::from_secs(5);

/// The provisioner of one node.
pub(crate) struct LocalProvisioner {
    client: kube::Client,
    node: String,
    /// `<data dir>/volumes`: one directory per volume.
    root: PathBuf,
    /// Events already sent (object uid, reason): each once.
    sent: HashSet<(String, String)>,
    measured: Option<Instant>,
    /// The capacity last published per class, and when.
    published: HashMap<String, (u64, Instant)>,
}

/// The node a volume's node affinity pins it to (a `kubernetes.io/hostname In [node]`
/// term), if any.
pub(crate) fn volume_node(pv: &PersistentVolume) -> Option<&str> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_expressions.iter().flatten().find_map(|e| {
            (e.key == HOSTNAME_LABEL && e.operator == "In")
                .then(|| e.values.as_ref()?.first().map(String::as_str))
                .flatten()
        })
    })
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    k: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(k).map(String::as_str)
}

/// The bytes a directory tree takes on disk (allocated blocks; symlinks are not
/// followed, other file systems not entered).
pub(crate) fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let dev = top.dev();
    let mut total = top.blocks() * 512;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// The bytes an unprivileged writer may still use on the file system holding `path`
/// (`f_bavail`, as `df` shows them).
#[allow(clippy::useless_conversion)] // the field types differ between targets
fn fs_free(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid C string and `st` a plain struct statvfs fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both outlive the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

/// The objects of a watch cache, owned.
fn owned<K: Clone>(v: Vec<Arc<K>>) -> Vec<K> {
    v.into_iter().map(|o| (*o).clone()).collect()
}

/// The name of the CSIStorageCapacity of `class` on `node`: fixed, so a restarted agent
/// finds its own (FNV-1a of both names; names alone could exceed 253 bytes).
fn capacity_name(node: &str, class: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0]).chain(class.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("local-path-{h:016x}")
}

/// The CSIStorageCapacity that says `class` can still provision `free` bytes on `node`.
fn capacity_object(node: &str, class: &str, free: u64) -> CSIStorageCapacity {
    serde_json::from_value(json!({
        "metadata": {
            "name": capacity_name(node, class),
            "namespace": CAPACITY_NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "kcore-local-path"},
        },
        "storageClassName": class,
        "nodeTopology": {"matchLabels": {HOSTNAME_LABEL: node}},
        "capacity": free.to_string(),
    }))
    .expect("a valid CSIStorageCapacity")
}

/// The file system of a loop-mounted volume (its `local.fsType`), if `pv` is one.
pub(crate) fn loop_fs(pv: &PersistentVolume) -> Option<String> {
    let fs = pv.spec.as_ref()?.local.as_ref()?.fs_type.clone()?;
    (annotation(&pv.metadata, ANN_PROVISIONED_BY) == Some(LOCAL_PATH_PROVISIONER)
        && crate::loopfs::FS_TYPES.contains(&fs.as_str()))
    .then_some(fs)
}

/// Removes a volume's directory, or, for a loop-mounted one, its mount, image and
/// directory.
async fn remove_volume(dir: PathBuf, loop_mounted: bool) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        if loop_mounted {
            crate::loopfs::delete(&dir).map_err(|source| Error::LoopVolume { path: dir, source })
        } else {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io("remove", &dir, e))
                }
                _ => Ok(()),
            }
        }
    })
    .await
    .map_err(|e| Error::Config(format!("removing a volume panicked: {e}")))?
}

impl LocalProvisioner {
    pub(crate) fn new(client: kube::Client, node: String, root: PathBuf) -> Self {
        LocalProvisioner {
            client,
            node,
            root,
            sent: HashSet::new(),
            measured: None,
            published: HashMap::new(),
        }
    }

    fn event(&mut self, involved: serde_json::Value, warning: bool, reason: &str, msg: &str) {
        self.event_once(involved, warning, reason, msg, &format!("{reason}/{msg}"));
    }

    /// Sends an event unless one with the same `key` about the same object was sent.
    fn event_once(
        &mut self,
        involved: serde_json::Value,
        warning: bool,
        reason: &str,
        msg: &str,
        key: &str,
    ) {
        let uid = involved["uid"].as_str().unwrap_or_default().to_owned();
        if self.sent.insert((uid, key.to_owned())) {
            events::send(
                &self.client,
                events::event_about(involved, &self.node, COMPONENT, warning, reason, msg),
            );
        }
    }

    fn claim_ref(c: &PersistentVolumeClaim) -> serde_json::Value {
        json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1",
            "namespace": c.metadata.namespace, "name": c.metadata.name,
            "uid": c.metadata.uid, "resourceVersion": c.metadata.resource_version})
    }

    /// Provisions a volume for `c` if it is this node's to provision; `classes` and
    /// `pvs` are the watch caches' (a volume made meanwhile is a conflict on create).
    async fn provision(
        &mut self,
        c: &PersistentVolumeClaim,
        classes: &[StorageClass],
        pvs: &[PersistentVolume],
    ) -> Result<()> {
        let m = &c.metadata;
        if m.deletion_timestamp.is_some()
            || annotation(m, ANN_SELECTED_NODE) != Some(self.node.as_str())
            || annotation(m, ANN_STORAGE_PROVISIONER) != Some(LOCAL_PATH_PROVISIONER)
        {
            return Ok(());
        }
        let spec = c.spec.clone().unwrap_or_default();
        if spec.volume_name.as_deref().is_some_and(|v| !v.is_empty()) {
            return Ok(());
        }
        let class_name = spec.storage_class_name.clone().unwrap_or_default();
        let what = format!(
            "persistentvolumeclaim {}/{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default()
        );
        // a class the cache does not hold yet: its watch event makes another pass
        let Some(class) = classes
            .iter()
            .find(|sc| sc.metadata.name.as_deref() == Some(class_name.as_str()))
        else {
            return Ok(());
        };
        if class.provisioner != LOCAL_PATH_PROVISIONER {
            return Ok(());
        }
        let claim_ref = Self::claim_ref(c);
        let params = class.parameters.clone().unwrap_or_default();
        if let Some(unknown) = params.keys().find(|k| *k != PARAM_FS_TYPE) {
            self.event(
                claim_ref,
                true,
                "ProvisioningFailed",
                &format!(
                    "failed to provision volume with StorageClass {class_name:?}: invalid parameter {unknown:?} (the only parameter of {LOCAL_PATH_PROVISIONER} is {PARAM_FS_TYPE})"
                ),
            );
            return Ok(());
        }
        let fs_type = params.get(PARAM_FS_TYPE).cloned();
        if spec.volume_mode.as_deref() == Some("Block") {
            self.event(
                claim_ref,
                true,
                "ProvisioningFailed",
                &format!(
                    "failed to provision volume with StorageClass {class_name:?}: {LOCAL_PATH_PROVISIONER} provisions only volumeMode Filesystem; volumeMode Block is not supported"
                ),
            );
            return Ok(());
        }
        let name = format!("pvc-{}", m.uid.as_deref().unwrap_or_default());
        if pvs
            .iter()
            .any(|v| v.metadata.name.as_deref() == Some(name.as_str()))
        {
            return Ok(());
        }
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        tracing::debug!(volume = %name, claim = %what, "provisioning");
        self.event(
            claim_ref.clone(),
            false,
            "Provisioning",
            &format!(
                "External provisioner is provisioning volume for claim \"{}/{}\"",
                m.namespace.as_deref().unwrap_or_default(),
                m.name.as_deref().unwrap_or_default()
            ),
        );
        let dir = self.root.join(&name);
        kcore_statedir::ensure_dir(&self.root, kcore_statedir::GROUP_DIR)
            .map_err(|e| Error::io("create", &self.root, e))?;
        let request = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_else(|| "0".into());
        let requested = request
            .parse::<Quantity>()
            .map(|q| u64::try_from(q.value()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        if let Some(holds) = fs_free(&self.root).filter(|h| requested > *h) {
            self.event(
                claim_ref,
                true,
                "ProvisioningFailed",
                &format!(
                    "failed to provision volume with StorageClass {class_name:?}: the claim asks for {request}, more than node {} can hold (its volumes' file system has {holds} bytes free)",
                    self.node
                ),
            );
            return Ok(());
        }
        if let Some(fs) = &fs_type {
            let (d, f) = (dir.clone(), fs.clone());
            let made =
                tokio::task::spawn_blocking(move || crate::loopfs::create(&d, requested, &f))
                    .await
                    .map_err(|e| Error::Config(format!("making volume {name} panicked: {e}")))?;
            if let Err(e) = made {
                let e = Error::LoopVolume {
                    path: dir.clone(),
                    source: e,
                };
                self.event(
                    claim_ref,
                    true,
                    "ProvisioningFailed",
                    &format!(
                        "failed to provision volume with StorageClass {class_name:?}: {}",
                        ErrorChain(&e)
                    ),
                );
                return Err(e);
            }
        } else {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
            use std::os::unix::fs::PermissionsExt;
            // as local-path-provisioner: any container user may write its volume
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| Error::io("chmod", &dir, e))?;
        }
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {ANN_PROVISIONED_BY: LOCAL_PATH_PROVISIONER}},
            "spec": {
                "capacity": {"storage": request},
                "accessModes": spec.access_modes,
                "persistentVolumeReclaimPolicy": class.reclaim_policy.as_deref().unwrap_or("Delete"),
                "storageClassName": class_name,
                "volumeMode": "Filesystem",
                "mountOptions": class.mount_options,
                "local": {"path": dir, "fsType": fs_type},
                "claimRef": claim_ref,
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": HOSTNAME_LABEL, "operator": "In", "values": [self.node]}]}]}},
            },
        }))
        .map_err(|e| Error::Config(format!("persistentvolume {name}: {e}")))?;
        match pvs.create(&PostParams::default(), &pv).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(409) => return Ok(()),
            Err(e) => {
                let _ = remove_volume(dir.clone(), fs_type.is_some()).await;
                self.event(
                    claim_ref,
                    true,
                    "ProvisioningFailed",
                    &format!(
                        "failed to provision volume with StorageClass {class_name:?}: {}",
                        ErrorChain(&e)
                    ),
                );
                return Err(Error::kube(format!("create persistentvolume {name}"), e));
            }
        }
        tracing::info!(volume = %name, claim = %what, path = %dir.display(), "provisioned a local volume");
        self.event(
            claim_ref,
            false,
            "ProvisioningSucceeded",
            &format!("Successfully provisioned volume {name}"),
        );
        Ok(())
    }

    /// The directory of a volume this node provisioned, if `pv` is one.
    fn own_dir(&self, pv: &PersistentVolume) -> Option<PathBuf> {
        let name = pv.metadata.name.as_deref()?;
        if annotation(&pv.metadata, ANN_PROVISIONED_BY) != Some(LOCAL_PATH_PROVISIONER)
            || volume_node(pv) != Some(self.node.as_str())
        {
            return None;
        }
        let dir = self.root.join(name);
        // only the directory this provisioner made for that name, whatever the spec says
        let path = pv.spec.as_ref()?.local.as_ref()?.path.clone();
        (Path::new(&path) == dir).then_some(dir)
    }

    /// Deletes a Released volume of this node under reclaim policy Delete: the
    /// directory, then the object.
    async fn reclaim(&mut self, pv: &PersistentVolume) -> Result<()> {
        let Some(dir) = self.own_dir(pv) else {
            return Ok(());
        };
        let spec = pv.spec.clone().unwrap_or_default();
        let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        if !released
            || pv.metadata.deletion_timestamp.is_some()
            || spec.persistent_volume_reclaim_policy.as_deref() != Some("Delete")
        {
            return Ok(());
        }
        let name = pv.metadata.name.clone().unwrap_or_default();
        if let Err(e) = remove_volume(dir.clone(), loop_fs(pv).is_some()).await {
            self.event(
                json!({"kind": "PersistentVolume", "apiVersion": "v1", "name": name, "uid": pv.metadata.uid}),
                true,
                "VolumeFailedDelete",
                &ErrorChain(&e).to_string(),
            );
            return Err(e);
        }
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        match pvs.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(Error::kube(format!("delete persistentvolume {name}"), e)),
        }
        tracing::info!(volume = %name, path = %dir.display(), "deleted a released local volume");
        Ok(())
    }

    /// Expands a volume of this node whose bound claim asks for more than it has, in
    /// upstream's resize flow made honest for a directory (there is no block device or
    /// file system to grow, so every step succeeds at once): the claim's
    /// `allocatedResources` and a `Resizing` condition with
    /// `ControllerResizeInProgress`, the volume's new capacity, then the claim's
    /// `status.capacity` with the condition and status cleared, with the external
    /// resizer's events. The API server has already refused the request unless the
    /// class allows expansion.
    async fn resize(
        &mut self,
        pv: &PersistentVolume,
        claims: &[PersistentVolumeClaim],
    ) -> Result<()> {
        if self.own_dir(pv).is_none() {
            return Ok(());
        }
        let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
            return Ok(());
        };
        let Some(c) = claims.iter().find(|c| c.metadata.uid == r.uid) else {
            return Ok(());
        };
        let bound = c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let storage = |m: Option<
            &std::collections::BTreeMap<
                String,
                k8s_openapi::apimachinery::pkg::api::resource::Quantity,
            >,
        >| { m.and_then(|m| m.get("storage")).cloned() };
        let (Some(want_q), Some(have_q)) = (
            storage(
                c.spec
                    .as_ref()
                    .and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.requests.as_ref()),
            ),
            storage(pv.spec.as_ref().and_then(|s| s.capacity.as_ref())),
        ) else {
            return Ok(());
        };
        let (Ok(want), Ok(have)) = (Quantity::try_from(&want_q), Quantity::try_from(&have_q))
        else {
            return Ok(());
        };
        let pv_name = pv.metadata.name.clone().unwrap_or_default();
        let claim_cap = storage(c.status.as_ref().and_then(|s| s.capacity.as_ref()));
        if !bound || c.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let ns = c.metadata.namespace.clone().unwrap_or_default();
        let name = c.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let patch_status = |v: serde_json::Value| {
            let api = api.clone();
            let name = name.clone();
            async move {
                api.patch_status(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(v),
                )
                .await
                .map(|_| ())
            }
        };
        let ctx = |what: &str| format!("{what} of persistentvolumeclaim {ns}/{name}");
        if want > have {
            tracing::info!(volume = %pv_name, from = %have_q.0, to = %want_q.0, "expanding a local volume");
            let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            );
            patch_status(json!({"status": {
                "allocatedResources": {"storage": want_q},
                "allocatedResourceStatuses": {"storage": "ControllerResizeInProgress"},
                "conditions": [{"type": "Resizing", "status": "True", "lastTransitionTime": now}]
            }}))
            .await
            .map_err(|e| Error::kube(ctx("update status"), e))?;
            self.event_once(
                Self::claim_ref(c),
                false,
                "Resizing",
                &format!("External resizer is resizing volume {pv_name}"),
                &format!("resize/{}", want_q.0),
            );
            if let (Some(fs), Some(dir)) = (loop_fs(pv), self.own_dir(pv)) {
                let size = u64::try_from(want.value()).unwrap_or(0);
                let d = dir.clone();
                let grown = tokio::task::spawn_blocking(move || crate::loopfs::grow(&d, size, &fs))
                    .await
                    .map_err(|e| {
                        Error::Config(format!("growing volume {pv_name} panicked: {e}"))
                    })?;
                if let Err(e) = grown {
                    let in_use = matches!(e, crate::loopfs::LoopFsError::InUse);
                    let e = Error::LoopVolume {
                        path: dir,
                        source: e,
                    };
                    self.event_once(
                        Self::claim_ref(c),
                        true,
                        "VolumeResizeFailed",
                        &format!("resize volume {pv_name:?} failed: {}", ErrorChain(&e)),
                        &format!("resize-failed/{}", want_q.0),
                    );
                    if in_use {
                        // retried at every pass until the pods are gone
                        tracing::debug!(volume = %pv_name, "a loop volume waits to grow offline");
                        return Ok(());
                    }
                    return Err(e);
                }
            }
            let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
            pvs.patch(
                &pv_name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"spec": {"capacity": {"storage": want_q}}})),
            )
            .await
            .map_err(|e| Error::kube(format!("expand persistentvolume {pv_name}"), e))?;
        } else if claim_cap.as_ref() != Some(&have_q)
            && claim_cap
                .as_ref()
                .and_then(|q| Quantity::try_from(q).ok())
                .is_some_and(|q| q < have)
        {
            // the volume has grown: the claim shows it and the resize is finished
            patch_status(json!({"status": {
                "capacity": {"storage": have_q},
                "allocatedResources": {"storage": have_q},
                "allocatedResourceStatuses": null,
                "conditions": null
            }}))
            .await
            .map_err(|e| Error::kube(ctx("update status"), e))?;
            self.event_once(
                Self::claim_ref(c),
                false,
                "VolumeResizeSuccessful",
                "Resize volume succeeded",
                &format!("resized/{}", have_q.0),
            );
        }
        Ok(())
    }

    /// Mounts again the loop-mounted volumes of this node that are not mounted (after
    /// a reboot or a `kcored reset`).
    async fn remount(&self, pvs: &[PersistentVolume]) {
        for pv in pvs {
            let (Some(dir), Some(fs)) = (self.own_dir(pv), loop_fs(pv)) else {
                continue;
            };
            if pv.metadata.deletion_timestamp.is_some()
                || crate::loopfs::mounted_device(&dir).is_some()
                || !crate::loopfs::image_of(&dir).is_file()
            {
                continue;
            }
            let d = dir.clone();
            match tokio::task::spawn_blocking(move || crate::loopfs::mount(&d, &fs)).await {
                Ok(Ok(())) => {
                    tracing::info!(volume = %dir.display(), "mounted a loop volume again")
                }
                Ok(Err(e)) => {
                    let e = Error::LoopVolume {
                        path: dir,
                        source: e,
                    };
                    tracing::warn!(error = %ErrorChain(&e), "mounting a loop volume failed");
                }
                Err(e) => tracing::warn!(error = %e, "mounting a loop volume panicked"),
            }
        }
    }

    /// Warns about bound volumes of this node that use more than their capacity.
    async fn measure(&mut self, pvs: &[PersistentVolume], claims: &[PersistentVolumeClaim]) {
        for pv in pvs {
            let Some(dir) = self.own_dir(pv) else {
                continue;
            };
            if loop_fs(pv).is_some() {
                continue; // its file system holds no more than its capacity
            }
            let Some(cap_q) = pv
                .spec
                .as_ref()
                .and_then(|s| s.capacity.as_ref())
                .and_then(|c| c.get("storage"))
                .cloned()
            else {
                continue;
            };
            let Ok(cap) = Quantity::try_from(&cap_q) else {
                continue;
            };
            let used = tokio::task::spawn_blocking(move || disk_usage(&dir))
                .await
                .unwrap_or(0);
            if i128::from(used) <= i128::from(cap.value()) {
                continue;
            }
            let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
                continue;
            };
            let Some(c) = claims.iter().find(|c| c.metadata.uid == r.uid) else {
                continue;
            };
            let name = pv.metadata.name.as_deref().unwrap_or_default();
            let msg = format!(
                "volume {name} uses {used} bytes, more than its capacity {} (capacity is not enforced on this node's file system)",
                cap_q.0
            );
            tracing::warn!(volume = name, used, "volume over capacity");
            // once per claim
            self.event_once(
                Self::claim_ref(c),
                true,
                "VolumeCapacityExceeded",
                &msg,
                "capacity",
            );
        }
    }

    /// Publishes, per local-path class, a CSIStorageCapacity with the free space of this
    /// node's volume file system, as upstream's external-provisioner does for a driver
    /// with `storageCapacity: true`: the scheduler then places a claim only on a node
    /// with room for it. A new class is published at once; a changed free space at most
    /// every [`PUBLISH_EVERY`]; the capacity of a class that is gone is deleted.
    async fn publish_capacity(&mut self, classes: &[StorageClass]) {
        if let Err(e) = kcore_statedir::ensure_dir(&self.root, kcore_statedir::GROUP_DIR) {
            tracing::debug!(error = %e, "creating the volumes directory");
            return;
        }
        let Some(free) = fs_free(&self.root) else {
            return;
        };
        let api: Api<CSIStorageCapacity> = Api::namespaced(self.client.clone(), CAPACITY_NAMESPACE);
        let ours: HashSet<&str> = classes
            .iter()
            .filter(|c| {
                c.provisioner == LOCAL_PATH_PROVISIONER && c.metadata.deletion_timestamp.is_none()
            })
            .filter_map(|c| c.metadata.name.as_deref())
            .collect();
        for class in &ours {
            if self
                .published
                .get(*class)
                .is_some_and(|(was, at)| *was == free || at.elapsed() < PUBLISH_EVERY)
            {
                continue;
            }
            let obj = capacity_object(&self.node, class, free);
            let name = capacity_name(&self.node, class);
            let done = match api.get_opt(&name).await {
                Ok(Some(_)) => api
                    .patch(
                        &name,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(json!({"capacity": obj.capacity})),
                    )
                    .await
                    .map(|_| ()),
                Ok(None) => api.create(&PostParams::default(), &obj).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => {
                    tracing::debug!(class, free, "published the storage capacity");
                    self.published
                        .insert((*class).to_owned(), (free, Instant::now()));
                }
                Err(e) => tracing::warn!(
                    class,
                    error = %ErrorChain(&e),
                    "publishing the storage capacity failed"
                ),
            }
        }
        let gone: Vec<String> = self
            .published
            .keys()
            .filter(|c| !ours.contains(c.as_str()))
            .cloned()
            .collect();
        for class in gone {
            let name = capacity_name(&self.node, &class);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => {
                    tracing::warn!(class, error = %ErrorChain(&e), "deleting a storage capacity failed");
                    continue;
                }
            }
            self.published.remove(&class);
        }
    }

    /// One pass over every claim and volume, as the watch caches hold them.
    async fn sync(
        &mut self,
        claims: &[PersistentVolumeClaim],
        pvs: &[PersistentVolume],
        classes: &[StorageClass],
    ) {
        // forget the events of objects that are gone
        let live: HashSet<&str> = claims
            .iter()
            .filter_map(|c| c.metadata.uid.as_deref())
            .chain(pvs.iter().filter_map(|p| p.metadata.uid.as_deref()))
            .collect();
        self.sent.retain(|(uid, _)| live.contains(uid.as_str()));
        for c in claims {
            if let Err(e) = self.provision(c, classes, pvs).await {
                tracing::warn!(error = %ErrorChain(&e), "provisioning a local volume failed");
            }
        }
        self.remount(pvs).await;
        for pv in pvs {
            if let Err(e) = self.reclaim(pv).await {
                tracing::warn!(error = %ErrorChain(&e), "deleting a local volume failed");
            }
            if let Err(e) = self.resize(pv, claims).await {
                tracing::warn!(error = %ErrorChain(&e), "expanding a local volume failed");
            }
        }
        if self.measured.is_none_or(|t| t.elapsed() >= MEASURE_EVERY) {
            self.measured = Some(Instant::now());
            self.measure(pvs, claims).await;
        }
    }

    /// Runs until the task is dropped: a pass on every change of a claim, volume or
    /// class (from watch caches: the claims and volumes of `cache`, shared with the
    /// pods, and a class cache of its own, so a pass costs no API reads), and every few
    /// seconds.
    pub(crate) async fn run(mut self, cache: Arc<ClaimCache>) {
        use kube::runtime::{reflector, WatchStreamExt as _};
        use tokio::sync::broadcast::error::{RecvError, TryRecvError};
        let mut changes = cache.subscribe();
        let (classes, classes_w) = reflector::store::<StorageClass>();
        // with backoff: errors count as changes, and one that never pends would spin
        let mut class_changes = watcher::watcher(
            Api::<StorageClass>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(classes_w)
        .map(|_| ())
        .boxed();
        let mut tick = tokio::time::interval(RESYNC);
        loop {
            tokio::select! {
                c = class_changes.next() => if c.is_none() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                },
                r = changes.recv() => if matches!(r, Err(RecvError::Closed)) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                },
                _ = tick.tick() => {}
            }
            // a burst of changes makes one pass
            while let Some(Some(())) = class_changes.next().now_or_never() {}
            while matches!(changes.try_recv(), Ok(_) | Err(TryRecvError::Lagged(_))) {}
            // not before the caches hold a first full list
            let classes_ready = classes
                .wait_until_ready()
                .now_or_never()
                .is_some_and(|r| r.is_ok());
            if !cache.ready() || !classes_ready {
                continue;
            }
            let (c, p, sc) = (
                owned(cache.claims()),
                owned(cache.volumes()),
                owned(classes.state()),
            );
            self.sync(&c, &p, &sc).await;
            self.publish_capacity(&sc).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_allocated_bytes_below_the_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let empty = disk_usage(tmp.path());
        std::fs::create_dir(tmp.path().join("sub")).expect("mkdir");
        std::fs::write(tmp.path().join("sub/f"), vec![1u8; 1 << 20]).expect("write");
        let used = disk_usage(tmp.path());
        assert!(used >= empty + (1 << 20), "{used} after 1 MiB");
        // a symlink to elsewhere does not count what it points at
        std::os::unix::fs::symlink("/usr", tmp.path().join("link")).expect("symlink");
        assert!(disk_usage(tmp.path()) < used + (1 << 20));
    }

    #[test]
    fn volumes_name_their_node_through_their_affinity() {
        let pv: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": "v"},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": ["n1"]}]}]}}}}))
        .expect("pv");
        assert_eq!(volume_node(&pv), Some("n1"));
        assert_eq!(volume_node(&PersistentVolume::default()), None);
    }
}
