//! The node's watch caches of PersistentVolumeClaims and PersistentVolumes, shared by
//! the local provisioner and the pod workers.
//!
//! Each change the caches take in is announced on a broadcast channel as the key
//! (`namespace/name`) of the claim it concerns: the claim itself, or the claim a
//! volume's `claimRef` names. A pod whose claim is not bound yet waits for exactly
//! that (see [`ClaimCache::changed`]) instead of retrying on a timer: the kubelet's
//! `FailedMount` retry, driven by the PV controller's writes. A first or renewed list
//! is announced as [`ALL`].
//!
//! Reads go to the caches first; a claim the cache does not show bound, or a volume it
//! does not hold, is read from the API server (the pod watch and these watches are
//! independent streams, so the node may hear of a pod before it hears of its claim's
//! binding).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::runtime::reflector::{self, store::Writer, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::Api;
use tokio::sync::broadcast;

use crate::error::{Error, ErrorChain, Result};

/// The key announced after a (re)list: every claim may have changed.
pub(crate) const ALL: &str = "*";

/// How many announcements a slow listener may fall behind before it is told it lagged
/// (and then looks at everything again).
const BACKLOG: usize = 1024;

/// The claim and volume caches, filled by [`ClaimCache::start`].
pub(crate) struct ClaimCache {
    client: kube::Client,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    changed: broadcast::Sender<Arc<str>>,
    /// The stores' writing ends until [`ClaimCache::start`] takes them.
    writers: Mutex<Option<(Writer<PersistentVolumeClaim>, Writer<PersistentVolume>)>>,
}

impl std::fmt::Debug for ClaimCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimCache")
            .field("claims", &self.claims.len())
            .field("volumes", &self.volumes.len())
            .finish()
    }
}

/// The key of claim `name` in `ns`.
pub(crate) fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// The keys of the claims `pod` mounts: its `persistentVolumeClaim` volumes and its
/// generic ephemeral volumes' claims.
pub(crate) fn pod_claims(pod: &Pod) -> HashSet<String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(key(ns, &c.claim_name))
            } else {
                v.ephemeral
                    .as_ref()
                    .map(|_| key(ns, &kcore_k8s::ephemeral_claim_name(pod, v)))
            }
        })
        .collect()
}

/// Whether claim `c` is bound: phase Bound and a volume named.
pub(crate) fn is_bound(c: &PersistentVolumeClaim) -> bool {
    c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
        && c.spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_some_and(|v| !v.is_empty())
}

impl ClaimCache {
    /// Empty caches reading through `client`; nothing fills them before
    /// [`ClaimCache::start`] (reads then go to the API server).
    pub(crate) fn new(client: kube::Client) -> Arc<Self> {
        let (claims, claims_w) = reflector::store();
        let (volumes, volumes_w) = reflector::store();
        Arc::new(ClaimCache {
            client,
            claims,
            volumes,
            changed: broadcast::channel(BACKLOG).0,
            writers: Mutex::new(Some((claims_w, volumes_w))),
        })
    }

    /// Starts the two watches (once; later calls start nothing).
    pub(crate) fn start(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let Some((claims_w, volumes_w)) = self
            .writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Vec::new();
        };
        let (c1, c2) = (self.clone(), self.clone());
        vec![
            tokio::spawn(follow(
                Api::<PersistentVolumeClaim>::all(self.client.clone()),
                claims_w,
                move |c: &PersistentVolumeClaim| {
                    let m = &c.metadata;
                    c1.announce(key(
                        m.namespace.as_deref().unwrap_or_default(),
                        m.name.as_deref().unwrap_or_default(),
                    ));
                },
                self.clone(),
            )),
            tokio::spawn(follow(
                Api::<PersistentVolume>::all(self.client.clone()),
                volumes_w,
                move |v: &PersistentVolume| {
                    if let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                        c2.announce(key(
                            r.namespace.as_deref().unwrap_or_default(),
                            r.name.as_deref().unwrap_or_default(),
                        ));
                    }
                },
                self.clone(),
            )),
        ]
    }

    fn announce(&self, key: String) {
        // no listener is fine: nobody waits
        let _ = self.changed.send(key.into());
    }

    /// A listener for changes from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.changed.subscribe()
    }

    /// Resolves once `rx` hears of a change of one of the claims `keys` (or of a
    /// relist, or it lagged and cannot tell); never when the caches are gone.
    pub(crate) async fn changed(rx: &mut broadcast::Receiver<Arc<str>>, keys: &HashSet<String>) {
        loop {
            match rx.recv().await {
                Ok(k) if &*k == ALL || keys.contains(&*k) => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// Whether both caches hold a first full list.
    pub(crate) fn ready(&self) -> bool {
        use futures::FutureExt as _;
        [
            self.claims.wait_until_ready().now_or_never(),
            self.volumes.wait_until_ready().now_or_never(),
        ]
        .iter()
        .all(|r| matches!(r, Some(Ok(()))))
    }

    /// Every cached claim.
    pub(crate) fn claims(&self) -> Vec<Arc<PersistentVolumeClaim>> {
        self.claims.state()
    }

    /// Every cached volume.
    pub(crate) fn volumes(&self) -> Vec<Arc<PersistentVolume>> {
        self.volumes.state()
    }

    /// Claim `ns/name`: from the cache when it shows it bound, else from the API server.
    pub(crate) async fn claim(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<Arc<PersistentVolumeClaim>>> {
        if let Some(c) = self
            .claims
            .get(&ObjectRef::new(name).within(ns))
            .filter(|c| is_bound(c))
        {
            return Ok(Some(c));
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let c = api
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("get persistentvolumeclaim {ns}/{name}"), e))?;
        Ok(c.map(Arc::new))
    }

    /// Volume `name`: from the cache, else from the API server.
    pub(crate) async fn volume(&self, name: &str) -> Result<Option<Arc<PersistentVolume>>> {
        if let Some(v) = self.volumes.get(&ObjectRef::new(name)) {
            return Ok(Some(v));
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let v = api
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("get persistentvolume {name}"), e))?;
        Ok(v.map(Arc::new))
    }
}

/// Keeps `writer`'s store in step with a watch of `api`, announcing through `each` every
/// object that changed and [`ALL`] after each (re)list.
async fn follow<K>(api: Api<K>, writer: Writer<K>, each: impl Fn(&K), cache: Arc<ClaimCache>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    // with backoff: a watch that keeps failing must not spin
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .boxed();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => each(&o),
            Ok(watcher::Event::InitDone) => cache.announce(ALL.into()),
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(e) => tracing::debug!(error = %ErrorChain(&e), "claim or volume watch error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_wakes_for_its_claims_a_relist_or_a_lag_only() {
        let (tx, _) = broadcast::channel::<Arc<str>>(2);
        let keys: HashSet<String> = ["ns/a".to_owned()].into();
        let wakes = |sent: &[&str]| {
            let mut rx = tx.subscribe();
            for k in sent {
                tx.send((*k).into()).expect("a listener");
            }
            let keys = keys.clone();
            async move {
                use futures::FutureExt as _;
                ClaimCache::changed(&mut rx, &keys).now_or_never().is_some()
            }
        };
        assert!(!wakes(&[]).await);
        assert!(!wakes(&["ns/b"]).await);
        assert!(!wakes(&["other/a"]).await);
        assert!(wakes(&["ns/b", "ns/a"]).await);
        assert!(wakes(&[ALL]).await);
        // three sends into a backlog of two: it lagged, so it looks again
        assert!(wakes(&["x/1", "x/2", "x/3"]).await);
    }

    #[test]
    fn a_pod_names_its_claims_and_its_ephemeral_volumes_claims() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop"},
            "spec": {"containers": [], "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "tmp", "emptyDir": {}},
            ]}
        }))
        .expect("pod");
        let want: HashSet<String> = ["shop/data-web-0".into(), "shop/web-0-scratch".into()].into();
        assert_eq!(pod_claims(&pod), want);
    }
}
