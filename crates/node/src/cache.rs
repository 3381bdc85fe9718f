//! A shared, watched view of the cluster objects the node's network services need:
//! Services, EndpointSlices, Ingresses and Nodes.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::error::ErrorChain;

/// `(namespace, name)`.
pub(crate) type Key = (String, String);

/// Objects of one kind by key.
pub(crate) type Store<K> = Arc<RwLock<BTreeMap<Key, K>>>;

/// The cache; every change bumps `version`.
pub(crate) struct ClusterCache {
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub ingresses: Store<Ingress>,
    pub nodes: Store<Node>,
    pub version: watch::Sender<u64>,
}

fn key<K: ResourceExt>(o: &K) -> Key {
    (o.namespace().unwrap_or_default(), o.name_any())
}

impl ClusterCache {
    /// Starts the watchers.
    pub fn start(client: &kube::Client) -> (Arc<ClusterCache>, Vec<tokio::task::JoinHandle<()>>) {
        let (tx, _) = watch::channel(0u64);
        let c = Arc::new(ClusterCache {
            services: Arc::default(),
            slices: Arc::default(),
            ingresses: Arc::default(),
            nodes: Arc::default(),
            version: tx,
        });
        let tasks = vec![
            tokio::spawn(run(
                Api::<Service>::all(client.clone()),
                c.services.clone(),
                c.clone(),
            )),
            tokio::spawn(run(
                Api::<EndpointSlice>::all(client.clone()),
                c.slices.clone(),
                c.clone(),
            )),
            tokio::spawn(run(
                Api::<Ingress>::all(client.clone()),
                c.ingresses.clone(),
                c.clone(),
            )),
            tokio::spawn(run(
                Api::<Node>::all(client.clone()),
                c.nodes.clone(),
                c.clone(),
            )),
        ];
        (c, tasks)
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// The ready endpoint addresses (with their slice port list) of a Service.
    pub fn slices_of(&self, ns: &str, svc: &str) -> Vec<EndpointSlice> {
        self.slices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((n, _), s)| {
                n == ns
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        .is_some_and(|x| x == svc)
            })
            .map(|(_, s)| s.clone())
            .collect()
    }
}

async fn run<K>(api: Api<K>, store: Store<K>, cache: Arc<ClusterCache>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    watch_into(api, store, move || cache.bump()).await
}

/// Mirrors every object of `api` into `store`, calling `bump` after each change.
pub(crate) async fn watch_into<K>(api: Api<K>, store: Store<K>, bump: impl Fn() + Send)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    let mut fresh: BTreeMap<Key, K> = BTreeMap::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => fresh.clear(),
            Ok(watcher::Event::InitApply(o)) => {
                fresh.insert(key(&o), o);
            }
            Ok(watcher::Event::InitDone) => {
                *store.write().unwrap_or_else(|p| p.into_inner()) = std::mem::take(&mut fresh);
                bump();
            }
            Ok(watcher::Event::Apply(o)) => {
                store
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key(&o), o);
                bump();
            }
            Ok(watcher::Event::Delete(o)) => {
                store
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key(&o));
                bump();
            }
            Err(e) => {
                tracing::debug!(error = %ErrorChain(&e), "watch error");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}
