//! A shared, watched view of the cluster objects the node's network services need:
//! Services, EndpointSlices, Ingresses (with IngressClasses and the `kubernetes.io/tls`
//! Secrets they serve) and Nodes.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
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
    pub ingress_classes: Store<IngressClass>,
    /// Secrets of type `kubernetes.io/tls` only (Ingress TLS).
    pub tls_secrets: Store<Secret>,
    pub nodes: Store<Node>,
    pub version: watch::Sender<u64>,
}

fn key<K: ResourceExt>(o: &K) -> Key {
    (o.namespace().unwrap_or_default(), o.name_any())
}

impl ClusterCache {
    /// An empty cache, filled by [`ClusterCache::start`]'s watchers (or by hand).
    pub fn empty() -> Arc<ClusterCache> {
        let (tx, _) = watch::channel(0u64);
        Arc::new(ClusterCache {
            services: Arc::default(),
            slices: Arc::default(),
            ingresses: Arc::default(),
            ingress_classes: Arc::default(),
            tls_secrets: Arc::default(),
            nodes: Arc::default(),
            version: tx,
        })
    }

    /// Starts the watchers.
    pub fn start(client: &kube::Client) -> (Arc<ClusterCache>, Vec<tokio::task::JoinHandle<()>>) {
        let c = ClusterCache::empty();
        let all = watcher::Config::default;
        let tasks = vec![
            tokio::spawn(run(
                Api::<Service>::all(client.clone()),
                all(),
                c.services.clone(),
                c.clone(),
            )),
            tokio::spawn(run(
                Api::<EndpointSlice>::all(client.clone()),
                all(),
                c.slices.clone(),
                c.clone(),
            )),
            tokio::spawn(run(
                Api::<Ingress>::all(client.clone()),
                all(),
                c.ingresses.clone(),
                c.clone(),
            )),
            tokio::spawn(run(
                Api::<IngressClass>::all(client.clone()),
                all(),
                c.ingress_classes.clone(),
                c.clone(),
            )),
            tokio::spawn(run(
                Api::<Secret>::all(client.clone()),
                all().fields("type=kubernetes.io/tls"),
                c.tls_secrets.clone(),
                c.clone(),
            )),
            tokio::spawn(run(
                Api::<Node>::all(client.clone()),
                all(),
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

async fn run<K>(api: Api<K>, config: watcher::Config, store: Store<K>, cache: Arc<ClusterCache>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    watch_with(api, config, store, move || cache.bump()).await
}

/// Mirrors every object of `api` into `store`, calling `bump` after each change.
pub(crate) async fn watch_into<K>(api: Api<K>, store: Store<K>, bump: impl Fn() + Send)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    watch_with(api, watcher::Config::default(), store, bump).await
}

/// Mirrors the objects of `api` that `config` selects into `store`.
async fn watch_with<K>(
    api: Api<K>,
    config: watcher::Config,
    store: Store<K>,
    bump: impl Fn() + Send,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let mut stream = watcher(api, config).boxed();
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
