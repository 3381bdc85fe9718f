//! The API side of VolumeBinding, served from watch caches (upstream's informers): what
//! a pending pod's PersistentVolumeClaims are (resolved before each attempt from the
//! cached claims, volumes, classes, CSIDrivers and CSIStorageCapacities), and, once a
//! node is chosen, the `volume.kubernetes.io/selected-node` annotation on its
//! `WaitForFirstConsumer` claims, then a bounded wait for them to be bound (upstream's
//! PreBind) so the pod reaches its node with its volumes ready.
//!
//! Every hop is a watch event: a change of any of those objects retries the pods
//! VolumeBinding rejected (the loop's queue gets a [`ClusterEvent`]), and the wait for
//! a binding wakes on each change the claim cache takes in. Nothing is polled; the API
//! server is read only where the cache may be behind: a claim, volume or class missing
//! from it (a StatefulSet makes a pod's claims just before the pod, and the two watches
//! are independent streams).

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSIDriver, CSIStorageCapacity, StorageClass};
use kcore_k8s::Quantity;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, store::Writer, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::Client;
use serde_json::json;

use crate::framework::{ClusterEvent, EventAction, EventResource};
use crate::model::{ClaimCapacity, PodVolumes};

/// The annotation with the node the scheduler chose for a claim.
const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// How long the binder waits for delayed claims to be bound before binding the pod
/// anyway (the node then waits for them).
const BIND_WAIT: Duration = Duration::from_secs(60);

/// How long the first attempt waits for the caches' first lists; a cache still empty
/// by then (a kind the API server does not serve) is read as it is.
const FIRST_LIST_WAIT: Duration = Duration::from_secs(10);

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

/// Whether a claim is fully bound: its volume named and its phase Bound. The node mounts
/// a claim only in phase Bound, and the PV controller writes the phase after the volume
/// name, so a pod bound in between would meet an unbound claim and retry its mount.
fn fully_bound(c: &PersistentVolumeClaim) -> bool {
    bound(c).is_some() && c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

/// The watch caches VolumeBinding reads, filled by [`VolumeCache::watch`].
pub(crate) struct VolumeCache {
    client: Client,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    drivers: Store<CSIDriver>,
    capacities: Store<CSIStorageCapacity>,
    /// Bumped after each change the claim cache took in: binders waiting for their
    /// claims to be bound look again.
    claims_changed: tokio::sync::watch::Sender<u64>,
    /// Whether the first lists were awaited (see [`FIRST_LIST_WAIT`]).
    listed: AtomicBool,
}

/// The writing ends of a [`VolumeCache`]'s stores, for [`VolumeCache::watch`].
pub(crate) struct VolumeWriters {
    claims: Writer<PersistentVolumeClaim>,
    volumes: Writer<PersistentVolume>,
    classes: Writer<StorageClass>,
    drivers: Writer<CSIDriver>,
    capacities: Writer<CSIStorageCapacity>,
}

/// Keeps `writer`'s store in step with a watch of `api`, calling `changed` with an
/// event of `resource` after each change the store took in: a first or renewed list as
/// an `Add` (objects may have appeared), a watched addition or modification as an
/// `Update` (VolumeBinding registers both), a deletion as a `Delete`.
async fn follow<K>(
    api: Api<K>,
    writer: Writer<K>,
    resource: EventResource,
    changed: impl Fn(ClusterEvent),
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .boxed();
    loop {
        let action = match stream.next().await {
            Some(Ok(watcher::Event::InitDone)) => EventAction::Add,
            Some(Ok(watcher::Event::Apply(_))) => EventAction::Update,
            Some(Ok(watcher::Event::Delete(_))) => EventAction::Delete,
            // a list in progress: the store takes it in at InitDone
            Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => continue,
            Some(Err(e)) => {
                tracing::debug!(?resource, error = %e, "volume watch error; retrying");
                continue;
            }
            None => return,
        };
        changed(ClusterEvent::new(resource, action));
    }
}

impl VolumeCache {
    /// Empty caches reading through `client`, and the ends [`VolumeCache::watch`] fills
    /// them through.
    pub(crate) fn new(client: Client) -> (Arc<Self>, VolumeWriters) {
        let (claims, claims_w) = reflector::store();
        let (volumes, volumes_w) = reflector::store();
        let (classes, classes_w) = reflector::store();
        let (drivers, drivers_w) = reflector::store();
        let (capacities, capacities_w) = reflector::store();
        let cache = VolumeCache {
            client,
            claims,
            volumes,
            classes,
            drivers,
            capacities,
            claims_changed: tokio::sync::watch::Sender::new(0),
            listed: AtomicBool::new(false),
        };
        let writers = VolumeWriters {
            claims: claims_w,
            volumes: volumes_w,
            classes: classes_w,
            drivers: drivers_w,
            capacities: capacities_w,
        };
        (Arc::new(cache), writers)
    }

    /// Watches the five kinds until dropped, handing `changed` a [`ClusterEvent`] for
    /// every change (the loop's queue retries the pods VolumeBinding rejected).
    pub(crate) async fn watch(&self, w: VolumeWriters, changed: impl Fn(ClusterEvent) + Clone) {
        let c = &self.client;
        let on_claim = {
            let changed = changed.clone();
            move |ev| {
                self.claims_changed.send_modify(|n| *n = n.wrapping_add(1));
                changed(ev);
            }
        };
        futures::join!(
            follow(
                Api::<PersistentVolumeClaim>::all(c.clone()),
                w.claims,
                EventResource::PersistentVolumeClaim,
                on_claim,
            ),
            follow(
                Api::<PersistentVolume>::all(c.clone()),
                w.volumes,
                EventResource::PersistentVolume,
                changed.clone(),
            ),
            follow(
                Api::<StorageClass>::all(c.clone()),
                w.classes,
                EventResource::StorageClass,
                changed.clone(),
            ),
            follow(
                Api::<CSIDriver>::all(c.clone()),
                w.drivers,
                EventResource::CsiDriver,
                changed.clone(),
            ),
            follow(
                Api::<CSIStorageCapacity>::all(c.clone()),
                w.capacities,
                EventResource::CsiStorageCapacity,
                changed,
            ),
        );
    }

    /// Waits (once, bounded) for the first lists of the caches.
    async fn first_lists(&self) {
        if self.listed.load(Ordering::Acquire) {
            return;
        }
        let all = async {
            let _ = futures::join!(
                self.claims.wait_until_ready(),
                self.volumes.wait_until_ready(),
                self.classes.wait_until_ready(),
                self.drivers.wait_until_ready(),
                self.capacities.wait_until_ready(),
            );
        };
        if tokio::time::timeout(FIRST_LIST_WAIT, all).await.is_err() {
            tracing::warn!("volume caches not listed in time; scheduling with what they hold");
        }
        self.listed.store(true, Ordering::Release);
    }

    /// Claim `ns/name`: from the cache, else (a claim newer than the cache) from the
    /// API server.
    async fn claim(&self, ns: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        if let Some(c) = self.claims.get(&ObjectRef::new(name).within(ns)) {
            return Some(c);
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        match api.get_opt(name).await {
            Ok(c) => c.map(Arc::new),
            Err(e) => {
                tracing::debug!(claim = %name, error = %e, "reading a pod's claim");
                None
            }
        }
    }

    /// Volume `name`: from the cache, else from the API server.
    async fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        if let Some(v) = self.volumes.get(&ObjectRef::new(name)) {
            return Some(v);
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        api.get_opt(name).await.ok().flatten().map(Arc::new)
    }

    /// Class `name`: from the cache, else from the API server.
    async fn class(&self, name: &str) -> Option<Arc<StorageClass>> {
        if let Some(c) = self.classes.get(&ObjectRef::new(name)) {
            return Some(c);
        }
        let api: Api<StorageClass> = Api::all(self.client.clone());
        api.get_opt(name).await.ok().flatten().map(Arc::new)
    }

    /// What VolumeBinding needs to know of `pod`'s claims; `None` for a pod without
    /// claims.
    pub(crate) async fn resolve(&self, pod: &Pod) -> Option<PodVolumes> {
        let names = claim_names(pod);
        if names.is_empty() {
            return None;
        }
        self.first_lists().await;
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut out = PodVolumes::default();
        for name in names {
            let claim = match self.claim(ns, &name).await {
                Some(c) if c.metadata.deletion_timestamp.is_none() => c,
                _ => {
                    out.missing.push(name);
                    continue;
                }
            };
            if let Some(v) = bound(&claim) {
                if let Some(req) = self
                    .volume(v)
                    .await
                    .and_then(|pv| pv.spec.as_ref()?.node_affinity.as_ref()?.required.clone())
                {
                    out.node_affinity.push(req);
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
                self.class(&class).await
            };
            let delayed = sc.as_ref().is_some_and(|sc| {
                sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
            });
            if let Some(sc) = sc.filter(|_| delayed) {
                if let Some(c) = self.capacity_check(&claim, &sc) {
                    out.capacity.push(c);
                }
                out.unbound_delayed.push(name);
            } else {
                out.unbound_immediate.push(name);
            }
        }
        Some(out)
    }

    /// Where claim `c` of class `sc` fits, when the class's driver publishes its
    /// capacity (upstream VolumeBinding's `hasEnoughCapacity`): a CSIDriver named like
    /// the class's provisioner with `storageCapacity: true`, and a claim asking for more
    /// than nothing.
    fn capacity_check(
        &self,
        c: &PersistentVolumeClaim,
        sc: &StorageClass,
    ) -> Option<ClaimCapacity> {
        let size = request_bytes(c);
        if sc.provisioner.is_empty() || size <= 0 {
            return None;
        }
        let driver = self
            .drivers
            .get(&ObjectRef::new(&driver_name(&sc.provisioner)))?;
        if driver.spec.storage_capacity != Some(true) {
            return None;
        }
        let class = sc.metadata.name.as_deref().unwrap_or_default();
        let topologies = self
            .capacities
            .state()
            .iter()
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

    /// Marks the pod's delayed claims with the chosen `node` (those the cache does not
    /// show marked already), then waits (at most [`BIND_WAIT`]) for them to be bound.
    pub(crate) async fn select_node(&self, pod: &Pod, delayed: &[String], node: &str) {
        if delayed.is_empty() {
            return;
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let patch = json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}});
        for c in delayed {
            let marked = self
                .claims
                .get(&ObjectRef::new(c).within(ns))
                .is_some_and(|c| {
                    c.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(ANN_SELECTED_NODE))
                        .is_some_and(|n| n == node)
                });
            if marked {
                continue;
            }
            if let Err(e) = claims
                .patch(c, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(claim = %c, error = %e, "setting the selected node of a claim");
            }
        }
        if !self.wait_bound(ns, delayed, BIND_WAIT).await {
            tracing::warn!(pod = ?pod.metadata.name, "claims not bound in time; binding the pod anyway");
        }
    }

    /// Waits until every claim `ns/<name>` of `names` is [`fully_bound`] in the cache,
    /// looking again at each change the cache takes in (no polling); `false` when
    /// `within` passes first.
    async fn wait_bound(&self, ns: &str, names: &[String], within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut changes = self.claims_changed.subscribe();
        loop {
            // seen before looking: a change from here on wakes the wait below
            changes.borrow_and_update();
            let all = names.iter().all(|n| {
                self.claims
                    .get(&ObjectRef::new(n).within(ns))
                    .is_some_and(|c| fully_bound(&c))
            });
            if all {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // the deadline passed, or the watch is gone
                Err(_) | Ok(Err(_)) => return false,
            }
        }
    }
}
