//! Two set-ups for the controller tests:
//! - [`simulated`]: kcore's test fixture (`kcored::testing::Cluster`): the real API
//!   server, scheduler and the chosen controllers, with simulated nodes that take pods
//!   through their lifecycle. Suites whose pods only need to run use this one.
//! - [`start`]: a bare in-process kcore-apiserver, the chosen controllers, and a fake
//!   kubelet that marks every pod Running and Ready wherever it is bound; for suites
//!   that make their own Nodes (DaemonSets, node lifecycle) or step a manual clock.

#![allow(dead_code)]

pub mod kubectl;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::jiff::Timestamp;
use kcore_apiserver::{ApiServer, RunningServer};
use kcore_reconcile::{ControllerManager, ControllerManagerConfig};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;
use tokio::sync::oneshot;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running server + controllers + kubelet; everything stops on drop.
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
    pub kubeconfig: std::path::PathBuf,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _state: State,
}

/// What the cluster's state lives in: the fixture, or a bare server and its directory.
/// Held only to be dropped with the [`Cluster`].
#[allow(dead_code)]
enum State {
    Fixture(Box<kcored::testing::Cluster>),
    Bare(RunningServer, tempfile::TempDir),
}

/// kcore's test fixture with `nodes` simulated nodes whose pods run `start_delay` after
/// they are bound, the scheduler, and only `controllers`; a fresh namespace.
pub async fn simulated(nodes: usize, start_delay: Duration, controllers: &[&str]) -> Cluster {
    let cfg = ControllerManagerConfig {
        workers: 3,
        controllers: controllers.iter().map(|s| (*s).to_owned()).collect(),
        ..ControllerManagerConfig::default()
    };
    let fixture = kcored::testing::Cluster::builder()
        .nodes(nodes)
        .pod_start_delay(start_delay)
        .controller_manager(cfg)
        .start()
        .await
        .expect("the test cluster starts");
    let client = fixture.client();
    let kubeconfig = fixture.kubeconfig().to_owned();
    let namespace = create_namespace(&client).await;
    Cluster {
        client,
        namespace,
        kubeconfig,
        stops: Vec::new(),
        tasks: Vec::new(),
        _state: State::Fixture(Box::new(fixture)),
    }
}

/// A namespace unique to this test.
async fn create_namespace(client: &Client) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let namespace = format!("t{}-{n}", std::process::id());
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("ns"),
        )
        .await
        .expect("create namespace");
    namespace
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How the simulated kubelet treats new pods.
#[derive(Clone, Copy)]
pub enum Kubelet {
    /// Running and Ready at once.
    ReadyAtOnce,
    /// Running and Ready after this delay.
    ReadyAfter(Duration),
    /// No kubelet: pods stay Pending.
    None,
}

pub async fn start(kubelet: Kubelet, controllers: &[&str]) -> Cluster {
    let cfg = ControllerManagerConfig {
        workers: 3,
        controllers: controllers.iter().map(|s| (*s).to_owned()).collect(),
        ..ControllerManagerConfig::default()
    };
    start_with(kubelet, cfg).await
}

pub async fn start_with(kubelet: Kubelet, cfg: ControllerManagerConfig) -> Cluster {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-reconcile-{}-{n}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let server = ApiServer::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0".parse().expect("addr"))
        .insecure_http(true)
        .bookmark_interval(Duration::from_secs(1))
        .build()
        .await
        .expect("build server");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let server = server.spawn();
    let config = kube::Config::new(server.url().parse().expect("url"));
    let client = Client::try_from(config).expect("client");
    let namespace = create_namespace(&client).await;

    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    let (tx, rx) = oneshot::channel();
    stops.push(tx);
    let mgr = ControllerManager::new(client.clone()).with_config(cfg);
    tasks.push(tokio::spawn(async move {
        mgr.run(async {
            let _ = rx.await;
        })
        .await
        .expect("controller manager");
    }));
    match kubelet {
        Kubelet::None => {}
        Kubelet::ReadyAtOnce => tasks.push(tokio::spawn(kubelet_loop(
            client.clone(),
            namespace.clone(),
            Duration::ZERO,
        ))),
        Kubelet::ReadyAfter(d) => tasks.push(tokio::spawn(kubelet_loop(
            client.clone(),
            namespace.clone(),
            d,
        ))),
    }
    Cluster {
        client,
        namespace,
        kubeconfig,
        stops,
        tasks,
        _state: State::Bare(server, dir),
    }
}

/// The watch events of `api`, as a test's stand-in node or observer reads them: with
/// kube-rs's default backoff, so an API error cannot turn the watch into a busy loop
/// (each error is printed, then skipped).
pub fn watch_events<K>(api: Api<K>) -> impl futures::Stream<Item = watcher::Event<K>> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use kube::runtime::WatchStreamExt;
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(|ev| async move { ev.map_err(|e| eprintln!("test watch: {e}")).ok() })
}

/// Marks every new pod of `ns` Running and Ready after `delay`.
async fn kubelet_loop(client: Client, ns: String, delay: Duration) {
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let stream = watch_events(api.clone());
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let pods = match ev {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => vec![p],
            _ => continue,
        };
        for p in pods {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready"));
            if ready || p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let api = api.clone();
            let name = p.metadata.name.clone().unwrap_or_default();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let now = Timestamp::now().to_string();
                let patch = json!({"status": {
                    "phase": "Running",
                    "podIP": "10.0.0.1",
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
                }});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            });
        }
    }
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_or(secs, what, f, String::new).await
}

/// [`eventually`], with `describe()` (the state last seen) in the failure message.
pub async fn eventually_or<T, F, Fut>(
    secs: u64,
    what: &str,
    mut f: F,
    describe: impl FnOnce() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}; last seen: {}", describe());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Deployment or ReplicaSet body with `replicas` of `image`, selecting `app=<name>`.
pub fn workload(kind: &str, name: &str, replicas: i32, image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
        },
    })
}
