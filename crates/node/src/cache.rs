//! A shared, watched view of the cluster objects the node's network services need:
//! Services, EndpointSlices, Ingresses (with IngressClasses and the `kubernetes.io/tls`
//! Secrets they serve) and Nodes.
//!
//! The Secrets are not watched cluster-wide: a node's credential may not list them (the
//! Node authorizer). [`follow_tls_secrets`] keeps one watch per Secret a served Ingress
//! names, selected by `metadata.name` in its namespace (the one shape the authorizer
//! lets a node list and watch), started and stopped as Ingresses come and go.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The Secrets of type `kubernetes.io/tls` that served Ingresses name (Ingress TLS;
    /// kept by [`follow_tls_secrets`] when the node serves Ingress).
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

    /// Starts the watchers (the TLS Secrets' are [`follow_tls_secrets`]).
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

/// The Secret type Ingress TLS reads.
const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Keeps [`ClusterCache::tls_secrets`] holding the `kubernetes.io/tls` Secrets that the
/// served Ingresses' `spec.tls` entries name: one watch per Secret (a `metadata.name`
/// field selector in its namespace, all a node's credential may list and watch),
/// started when an Ingress comes to name the Secret and stopped, with the Secret
/// dropped from the store, when none does any more. Each watch delivers a rotated
/// Secret at once. Runs until aborted; its watches stop with it.
pub(crate) async fn follow_tls_secrets(client: kube::Client, cache: Arc<ClusterCache>) {
    let mut changed = cache.version.subscribe();
    let mut running: BTreeMap<Key, SecretWatch> = BTreeMap::new();
    loop {
        let want = crate::ingress::tls_secret_keys(&cache);
        let (start, stop) = plan(running.keys(), &want);
        for key in stop {
            if let Some(w) = running.remove(&key) {
                w.stop(&cache.tls_secrets, &key);
                cache.bump();
            }
        }
        for key in start {
            tracing::debug!(secret = %format!("{}/{}", key.0, key.1), "watching ingress tls secret");
            let stopped = Arc::new(AtomicBool::new(false));
            let task = tokio::spawn(watch_secret(
                Api::namespaced(client.clone(), &key.0),
                key.clone(),
                stopped.clone(),
                cache.clone(),
            ));
            running.insert(key, SecretWatch { task, stopped });
        }
        if changed.changed().await.is_err() {
            break;
        }
    }
    for (key, w) in running {
        w.stop(&cache.tls_secrets, &key);
    }
}

/// The watches to start and to stop to go from `running` to `want`. Pure.
fn plan<'a>(running: impl Iterator<Item = &'a Key>, want: &BTreeSet<Key>) -> (Vec<Key>, Vec<Key>) {
    let running: BTreeSet<&Key> = running.collect();
    let start = want
        .iter()
        .filter(|k| !running.contains(k))
        .cloned()
        .collect();
    let stop = running
        .into_iter()
        .filter(|k| !want.contains(*k))
        .cloned()
        .collect();
    (start, stop)
}

/// One Secret's watch.
struct SecretWatch {
    task: tokio::task::JoinHandle<()>,
    /// Set, under the store's lock, when the watch stops: the task, which may still be
    /// running for a moment after `abort`, writes only under that lock and while unset.
    stopped: Arc<AtomicBool>,
}

impl Drop for SecretWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SecretWatch {
    /// Stops the watch and drops its Secret from `store`.
    fn stop(&self, store: &Store<Secret>, key: &Key) {
        self.task.abort();
        let mut m = store.write().unwrap_or_else(|p| p.into_inner());
        self.stopped.store(true, Ordering::Release);
        m.remove(key);
    }
}

/// Mirrors the Secret `key` (when it exists and is of type `kubernetes.io/tls`) into
/// `cache.tls_secrets` until stopped.
async fn watch_secret(
    api: Api<Secret>,
    key: Key,
    stopped: Arc<AtomicBool>,
    cache: Arc<ClusterCache>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={}", key.1));
    let mut stream = watcher(api, config).boxed();
    let mut listed: Option<Secret> = None;
    let set = |secret: Option<Secret>| {
        let secret = secret.filter(|s| {
            s.metadata.name.as_deref() == Some(key.1.as_str())
                && s.type_.as_deref() == Some(TLS_SECRET_TYPE)
        });
        {
            let mut m = cache.tls_secrets.write().unwrap_or_else(|p| p.into_inner());
            if stopped.load(Ordering::Acquire) {
                return;
            }
            match secret {
                Some(s) => m.insert(key.clone(), s),
                None => m.remove(&key),
            };
        }
        cache.bump();
    };
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => listed = None,
            Ok(watcher::Event::InitApply(s)) => listed = Some(s),
            Ok(watcher::Event::InitDone) => set(listed.take()),
            Ok(watcher::Event::Apply(s)) => set(Some(s)),
            Ok(watcher::Event::Delete(_)) => set(None),
            Err(e) => {
                tracing::debug!(secret = %format!("{}/{}", key.0, key.1), error = %ErrorChain(&e), "ingress tls secret watch error");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::{DeleteParams, PostParams};
    use serde_json::json;

    fn keys(ks: &[(&str, &str)]) -> BTreeSet<Key> {
        ks.iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
            .collect()
    }

    #[test]
    fn plan_starts_the_new_and_stops_the_gone() {
        let running = keys(&[("d", "a"), ("d", "b")]);
        let (start, stop) = plan(running.iter(), &keys(&[("d", "b"), ("e", "a")]));
        assert_eq!(start, [("e".to_owned(), "a".to_owned())]);
        assert_eq!(stop, [("d".to_owned(), "a".to_owned())]);
        let (start, stop) = plan(running.iter(), &running);
        assert!(start.is_empty() && stop.is_empty());
    }

    async fn create<K>(client: &kube::Client, v: serde_json::Value) -> K
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let obj: K = serde_json::from_value(v).expect("object");
        let ns = obj.namespace().unwrap_or_else(|| "default".into());
        Api::<K>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &obj)
            .await
            .expect("create")
    }

    fn tls(name: &str, crt: &str) -> serde_json::Value {
        use base64::Engine as _;
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        json!({"metadata": {"name": name, "namespace": "default"}, "type": "kubernetes.io/tls",
            "data": {"tls.crt": b(crt), "tls.key": b("key")}})
    }

    /// What the store holds: Secret name → its `tls.crt`.
    fn held(c: &ClusterCache) -> BTreeMap<String, String> {
        c.tls_secrets
            .read()
            .unwrap()
            .iter()
            .map(|((_, n), s)| {
                let crt = s.data.as_ref().and_then(|d| d.get("tls.crt")).unwrap();
                (n.clone(), String::from_utf8(crt.0.clone()).unwrap())
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_secrets_are_watched_one_by_one_as_ingresses_name_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = kcore_apiserver::ApiServer::builder()
            .data_dir(dir.path().join("data"))
            .listen("127.0.0.1:0".parse().expect("addr"))
            .insecure_http(true)
            .build()
            .await
            .expect("server")
            .spawn();
        let client = kube::Client::try_from(kube::Config::new(server.url().parse().expect("url")))
            .expect("client");
        let (cache, mut tasks) = ClusterCache::start(&client);
        tasks.push(tokio::spawn(follow_tls_secrets(
            client.clone(),
            cache.clone(),
        )));
        let other: IngressClass = serde_json::from_value(
            json!({"metadata": {"name": "other"}, "spec": {"controller": "example.com/other"}}),
        )
        .expect("class");
        Api::<IngressClass>::all(client.clone())
            .create(&PostParams::default(), &other)
            .await
            .expect("class");
        for s in [
            tls("a-tls", "one"),
            tls("unnamed-tls", "x"),
            tls("other-tls", "x"),
        ] {
            let _: Secret = create(&client, s).await;
        }
        let _: Secret = create(
            &client,
            json!({"metadata": {"name": "opaque", "namespace": "default"}, "stringData": {"tls.crt": "x", "tls.key": "y"}}),
        )
        .await;
        let _: Ingress = create(
            &client,
            json!({"metadata": {"name": "mine", "namespace": "default"}, "spec": {
                "tls": [{"hosts": ["a.test"], "secretName": "a-tls"},
                        {"hosts": ["o.test"], "secretName": "opaque"},
                        {"hosts": ["m.test"], "secretName": "missing-tls"}],
                "defaultBackend": {"service": {"name": "s", "port": {"number": 80}}}}}),
        )
        .await;
        let _: Ingress = create(
            &client,
            json!({"metadata": {"name": "theirs", "namespace": "default"}, "spec": {
                "ingressClassName": "other",
                "tls": [{"hosts": ["x.test"], "secretName": "other-tls"}],
                "defaultBackend": {"service": {"name": "s", "port": {"number": 80}}}}}),
        )
        .await;
        let one = BTreeMap::from([("a-tls".to_owned(), "one".to_owned())]);
        kcore_tests::wait::eventually(20, "the served Ingress' TLS Secret", || async {
            (held(&cache) == one).then_some(())
        })
        .await;
        // a Secret named later, and a rotation, arrive through the watches
        let _: Secret = create(&client, tls("missing-tls", "late")).await;
        let secrets = Api::<Secret>::namespaced(client.clone(), "default");
        let mut a = secrets.get("a-tls").await.expect("a-tls");
        a.data
            .as_mut()
            .unwrap()
            .insert("tls.crt".into(), k8s_openapi::ByteString(b"two".to_vec()));
        secrets
            .replace("a-tls", &PostParams::default(), &a)
            .await
            .expect("rotate");
        let two = BTreeMap::from([
            ("a-tls".to_owned(), "two".to_owned()),
            ("missing-tls".to_owned(), "late".to_owned()),
        ]);
        kcore_tests::wait::eventually(20, "the rotated and the late Secret", || async {
            (held(&cache) == two).then_some(())
        })
        .await;
        // the Ingress gone: its Secrets leave the store (their watches stop)
        Api::<Ingress>::namespaced(client.clone(), "default")
            .delete("mine", &DeleteParams::default())
            .await
            .expect("delete");
        kcore_tests::wait::eventually(20, "no TLS Secrets", || async {
            held(&cache).is_empty().then_some(())
        })
        .await;
        for t in tasks {
            t.abort();
        }
    }
}
