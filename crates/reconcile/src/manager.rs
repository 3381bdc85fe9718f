//! The controller manager: informers shared by the built-in controllers, their work
//! queues and workers, optionally behind Lease leader election.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, PersistentVolumeClaim, Pod, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::ApiResource;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cache::Informer;
use crate::controllers::cronjob::{Clock, CronJobController};
use crate::controllers::daemonset::DaemonSetController;
use crate::controllers::deployment::DeploymentController;
use crate::controllers::endpoints::EndpointsController;
use crate::controllers::ephemeral::EphemeralVolumeController;
use crate::controllers::gc::GarbageCollector;
use crate::controllers::job::{JobController, DEFAULT_POD_FAILURE_BACKOFF};
use crate::controllers::namespace::NamespaceController;
use crate::controllers::nodelifecycle::NodeLifecycleController;
use crate::controllers::persistentvolume::PersistentVolumeController;
use crate::controllers::podautoscaler::{HpaConfig, HpaController};
use crate::controllers::replicaset::ReplicaSetController;
use crate::controllers::servicelb::ServiceLbController;
use crate::controllers::statefulset::StatefulSetController;
use crate::controllers::ttlafterfinished::TtlAfterFinishedController;
use crate::controllers::volumeprotection::{PvProtectionController, PvcProtectionController};
use crate::error::Error;
use crate::leader::{LeaderElectionConfig, LeaderElector};
use crate::meta::ObjectKey;
use crate::queue::{RateLimitConfig, WorkQueue};
use crate::runner::run_workers;

/// The built-in controllers, by the names kube-controller-manager's `--controllers` uses.
pub const CONTROLLERS: &[&str] = &[
    "deployment",
    "replicaset",
    "daemonset",
    "statefulset",
    "endpoint",
    "garbagecollector",
    "namespace",
    "nodelifecycle",
    "job",
    "cronjob",
    "ttl-after-finished",
    "persistentvolume-binder",
    "pvc-protection",
    "pv-protection",
    "ephemeral-volume",
    "servicelb",
    "horizontal-pod-autoscaler",
];

/// Settings of the batch controllers (Job, CronJob, TTL-after-finished).
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Their clock; tests use [`Clock::manual`] to step through schedules.
    pub clock: Clock,
    /// The first backoff before a failed Job pod is replaced (10 s upstream), doubling
    /// per failure.
    pub pod_failure_backoff: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            clock: Clock::system(),
            pod_failure_backoff: DEFAULT_POD_FAILURE_BACKOFF,
        }
    }
}

/// Settings of a [`ControllerManager`].
#[derive(Debug, Clone)]
pub struct ControllerManagerConfig {
    /// Concurrent workers per controller (upstream's `--concurrent-*-syncs`, default 5).
    pub workers: usize,
    /// Which controllers run (names from [`CONTROLLERS`]); all by default.
    pub controllers: BTreeSet<String>,
    /// Leader election; `None` runs the controllers at once.
    pub leader_election: Option<LeaderElectionConfig>,
    /// Backoff and overall rate limit of each controller's queue.
    pub rate_limit: RateLimitConfig,
    /// How long a node may go without heartbeat before it is NotReady (40 s upstream).
    pub node_monitor_grace_period: Duration,
    /// The batch controllers' clock and backoff.
    pub batch: BatchConfig,
    /// LoadBalancer pool mode (MetalLB's L2): addresses Services get from, as
    /// inclusive ranges; empty (the default) is node mode (k3s's ServiceLB).
    pub service_lb_pool: Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    /// The HorizontalPodAutoscaler controller's sync period and windows.
    pub hpa: HpaConfig,
}

impl Default for ControllerManagerConfig {
    fn default() -> Self {
        Self {
            workers: 5,
            controllers: CONTROLLERS.iter().map(|s| (*s).to_owned()).collect(),
            leader_election: None,
            rate_limit: RateLimitConfig::default(),
            node_monitor_grace_period: Duration::from_secs(40),
            batch: BatchConfig::default(),
            service_lb_pool: Vec::new(),
            hpa: HpaConfig::default(),
        }
    }
}

/// Runs the built-in controllers against a Kubernetes API server.
#[derive(Clone)]
pub struct ControllerManager {
    client: Client,
    config: ControllerManagerConfig,
}

impl std::fmt::Debug for ControllerManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerManager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = rx.wait_for(|v| *v).await;
}

/// Starts one controller's workers once the caches are synced.
type Starter = Box<dyn FnOnce(&mut JoinSet<()>) + Send>;

impl ControllerManager {
    /// A manager with the default settings (all controllers, 5 workers each, no election).
    pub fn new(client: Client) -> Self {
        Self {
            client,
            config: ControllerManagerConfig::default(),
        }
    }

    /// Replaces the settings.
    pub fn with_config(mut self, config: ControllerManagerConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs until `shutdown` resolves. With leader election, controllers start once this
    /// candidate leads; losing the lease stops them and returns
    /// [`Error::LeadershipLost`] (as kube-controller-manager exits) so the caller can
    /// restart cleanly.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let Some(le) = self.config.leader_election.clone() else {
            return self.run_when(std::future::ready(()), shutdown).await;
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let lease = format!("{}/{}", le.namespace, le.name);
        let elector = Arc::new(LeaderElector::new(self.client.clone(), le));
        let mut leading = elector.subscribe();
        let (elect_stop_tx, elect_stop_rx) = watch::channel(false);
        let el = Arc::clone(&elector);
        let election = tokio::spawn(async move { el.run(stopped(elect_stop_rx)).await });
        tokio::pin!(shutdown);
        // Wait to lead.
        let became = tokio::select! {
            () = &mut shutdown => false,
            r = leading.wait_for(|l| *l) => r.is_ok(),
        };
        let mut result = Ok(());
        if became {
            let ctl = tokio::spawn(
                self.clone()
                    .run_controllers(stop_rx, Box::pin(std::future::ready(()))),
            );
            tokio::select! {
                () = &mut shutdown => {}
                _ = leading.wait_for(|l| !*l) => {
                    result = Err(Error::LeadershipLost { lease });
                }
            }
            stop_tx.send_replace(true);
            let r = join(ctl, "controllers").await;
            if result.is_ok() {
                result = r;
            }
        }
        elect_stop_tx.send_replace(true);
        let _ = election.await;
        result
    }

    /// Runs until `shutdown` resolves, without an election of its own (`leader_election`
    /// is not used), and starts the controllers only once `go` resolves. The informers
    /// list and watch from the start, so a standby that runs this with `go` = "this
    /// candidate leads" acts on warm caches the moment it wins its Lease instead of
    /// first listing every kind (kcored's servers on etcd do). Its client must not
    /// write before `go` (kcored's refuses writes without the Lease).
    ///
    /// ```no_run
    /// # async fn f(
    /// #     client: kube::Client,
    /// #     mut leading: tokio::sync::watch::Receiver<bool>,
    /// #     shutdown: std::future::Pending<()>,
    /// # ) -> Result<(), kcore_reconcile::Error> {
    /// use kcore_reconcile::ControllerManager;
    /// let go = async move {
    ///     let _ = leading.wait_for(|l| *l).await;
    /// };
    /// ControllerManager::new(client).run_when(go, shutdown).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run_when(
        self,
        go: impl Future<Output = ()> + Send + 'static,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let ctl = tokio::spawn(self.run_controllers(stop_rx, Box::pin(go)));
        shutdown.await;
        stop_tx.send_replace(true);
        join(ctl, "controllers").await
    }

    fn enabled(&self, name: &str) -> bool {
        self.config.controllers.contains(name)
    }

    async fn run_controllers(
        self,
        stop: watch::Receiver<bool>,
        go: futures::future::BoxFuture<'static, ()>,
    ) -> Result<(), Error> {
        let client = self.client.clone();
        let workers_n = self.config.workers;
        let mut queues: Vec<WorkQueue<ObjectKey>> = Vec::new();
        let mut new_queue = || {
            let q = WorkQueue::new(self.config.rate_limit);
            queues.push(q.clone());
            q
        };
        let gc_on = self.enabled("garbagecollector");

        let mut pods = Informer::new(Api::<Pod>::all(client.clone()));
        let mut rss = Informer::new(Api::<ReplicaSet>::all(client.clone()));
        let mut deps = Informer::new(Api::<Deployment>::all(client.clone()));
        let mut svcs = Informer::new(Api::<Service>::all(client.clone()));
        let mut eps = Informer::new(Api::<Endpoints>::all(client.clone()));
        let mut slices = Informer::new(Api::<EndpointSlice>::all(client.clone()));
        let mut nss = Informer::new(Api::<Namespace>::all(client.clone()));
        let mut cms = Informer::new(Api::<ConfigMap>::all(client.clone()));
        let mut secrets = Informer::new(Api::<Secret>::all(client.clone()));
        let mut sas = Informer::new(Api::<ServiceAccount>::all(client.clone()));
        let mut stss = Informer::new(Api::<StatefulSet>::all(client.clone()));
        let mut dss = Informer::new(Api::<DaemonSet>::all(client.clone()));
        let mut nodes = Informer::new(Api::<Node>::all(client.clone()));
        let mut leases = Informer::new(Api::<Lease>::all(client.clone()));
        let mut jobs = Informer::new(Api::<Job>::all(client.clone()));
        let mut cronjobs = Informer::new(Api::<CronJob>::all(client.clone()));
        let mut pvcs = Informer::new(Api::<PersistentVolumeClaim>::all(client.clone()));
        let mut pvs = Informer::new(Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(
            client.clone(),
        ));
        let mut scs = Informer::new(Api::<k8s_openapi::api::storage::v1::StorageClass>::all(
            client.clone(),
        ));
        let mut hpas = Informer::new(Api::<HorizontalPodAutoscaler>::all(client.clone()));

        let mut starters: Vec<Starter> = Vec::new();
        macro_rules! start {
            ($c:expr, $q:expr) => {{
                let c = $c;
                let q = $q;
                starters.push(Box::new(move |set| {
                    set.spawn(run_workers(Arc::new(c), q, workers_n));
                }));
            }};
        }
        if self.enabled("replicaset") {
            let q = new_queue();
            let c = ReplicaSetController::new(client.clone(), rss.store(), pods.store());
            rss.on_change(c.on_replicaset(q.clone()));
            pods.on_change(c.on_pod(q.clone()));
            start!(c, q);
        }
        if self.enabled("deployment") {
            let q = new_queue();
            let c =
                DeploymentController::new(client.clone(), deps.store(), rss.store(), pods.store());
            deps.on_change(DeploymentController::on_deployment(q.clone()));
            rss.on_change(c.on_replicaset(q.clone()));
            pods.on_change(c.on_pod(q.clone()));
            start!(c, q);
        }
        if self.enabled("endpoint") {
            let q = new_queue();
            let c = EndpointsController::new(
                client.clone(),
                svcs.store(),
                pods.store(),
                eps.store(),
                slices.store(),
            );
            svcs.on_change(EndpointsController::on_service(q.clone()));
            pods.on_change(c.on_pod(q.clone()));
            slices.on_change(EndpointsController::on_slice(q.clone()));
            let qe = q.clone();
            eps.on_change(move |c| qe.add(ObjectKey::of(c.object().as_ref())));
            start!(c, q);
        }
        self.start_batch(
            &mut starters,
            &mut new_queue,
            &mut jobs,
            &mut cronjobs,
            &mut pods,
        );
        if self.enabled("servicelb") {
            let q = new_queue();
            let c = ServiceLbController::new(
                client.clone(),
                svcs.store(),
                nodes.store(),
                self.config.service_lb_pool.clone(),
            );
            svcs.on_change(c.on_service(q.clone()));
            nodes.on_change(c.on_node(q.clone()));
            start!(c, q);
        }
        if self.enabled("horizontal-pod-autoscaler") {
            let q = new_queue();
            let c = HpaController::new(client.clone(), hpas.store(), self.config.hpa);
            hpas.on_change(HpaController::on_hpa(q.clone()));
            start!(c, q);
        }
        let namespaced_kinds = vec![
            ApiResource::erase::<Job>(&()),
            ApiResource::erase::<CronJob>(&()),
            ApiResource::erase::<Pod>(&()),
            ApiResource::erase::<ReplicaSet>(&()),
            ApiResource::erase::<Deployment>(&()),
            ApiResource::erase::<StatefulSet>(&()),
            ApiResource::erase::<DaemonSet>(&()),
            ApiResource::erase::<Service>(&()),
            ApiResource::erase::<Endpoints>(&()),
            ApiResource::erase::<EndpointSlice>(&()),
            ApiResource::erase::<ConfigMap>(&()),
            ApiResource::erase::<Secret>(&()),
            ApiResource::erase::<ServiceAccount>(&()),
            ApiResource::erase::<Lease>(&()),
            ApiResource::erase::<Event>(&()),
            ApiResource::erase::<Ingress>(&()),
            ApiResource::erase::<NetworkPolicy>(&()),
            ApiResource::erase::<PersistentVolumeClaim>(&()),
            ApiResource::erase::<ControllerRevision>(&()),
            ApiResource::erase::<PodDisruptionBudget>(&()),
            ApiResource::erase::<HorizontalPodAutoscaler>(&()),
        ];
        if self.enabled("namespace") {
            let q = new_queue();
            let c = NamespaceController::new(client.clone(), nss.store(), namespaced_kinds);
            nss.on_change(NamespaceController::on_namespace(q.clone()));
            start!(c, q);
        }
        if self.enabled("daemonset") {
            let q = new_queue();
            let c =
                DaemonSetController::new(client.clone(), dss.store(), nodes.store(), pods.store());
            dss.on_change(DaemonSetController::on_daemonset(q.clone()));
            nodes.on_change(c.on_node(q.clone()));
            pods.on_change(DaemonSetController::on_pod(q.clone()));
            start!(c, q);
        }
        if self.enabled("statefulset") {
            let q = new_queue();
            let c = StatefulSetController::new(
                client.clone(),
                stss.store(),
                pods.store(),
                pvcs.store(),
            );
            stss.on_change(StatefulSetController::on_set(q.clone()));
            // keep the claim cache running: claims are re-owned from it
            pvcs.on_change(|_| {});
            pods.on_change(StatefulSetController::on_pod(q.clone()));
            start!(c, q);
        }
        if self.enabled("nodelifecycle") {
            let q = new_queue();
            let c = NodeLifecycleController::new(
                client.clone(),
                nodes.store(),
                leases.store(),
                pods.store(),
                self.config.node_monitor_grace_period,
            );
            nodes.on_change(NodeLifecycleController::on_node(q.clone()));
            leases.on_change(NodeLifecycleController::on_lease(q.clone()));
            // Keep the pod cache running for evictions.
            pods.on_change(|_| {});
            start!(c, q);
        }
        if self.enabled("persistentvolume-binder") {
            let q = new_queue();
            let c = PersistentVolumeController::new(
                client.clone(),
                pvcs.store(),
                pvs.store(),
                scs.store(),
            );
            pvcs.on_change(PersistentVolumeController::on_claim(q.clone()));
            pvs.on_change(c.on_volume(q.clone()));
            scs.on_change(|_| {});
            start!(c, q);
        }
        if self.enabled("pvc-protection") {
            let q = new_queue();
            let c = PvcProtectionController::new(client.clone(), pvcs.store(), pods.store());
            pvcs.on_change(PvcProtectionController::on_claim(q.clone()));
            pods.on_change(PvcProtectionController::on_pod(q.clone()));
            start!(c, q);
        }
        if self.enabled("ephemeral-volume") {
            let q = new_queue();
            let c = EphemeralVolumeController::new(client.clone(), pods.store(), pvcs.store());
            pods.on_change(EphemeralVolumeController::on_pod(q.clone()));
            pvcs.on_change(EphemeralVolumeController::on_claim(q.clone()));
            start!(c, q);
        }
        if self.enabled("pv-protection") {
            let q = new_queue();
            let c = PvProtectionController::new(client.clone(), pvs.store());
            pvs.on_change(PvProtectionController::on_volume(q.clone()));
            start!(c, q);
        }
        let mut other_kinds = None;
        if gc_on {
            let q = new_queue();
            let gc = GarbageCollector::new(client.clone());
            pods.on_change(gc.track(q.clone()));
            rss.on_change(gc.track(q.clone()));
            deps.on_change(gc.track(q.clone()));
            svcs.on_change(gc.track(q.clone()));
            eps.on_change(gc.track(q.clone()));
            slices.on_change(gc.track(q.clone()));
            cms.on_change(gc.track(q.clone()));
            secrets.on_change(gc.track(q.clone()));
            sas.on_change(gc.track(q.clone()));
            stss.on_change(gc.track(q.clone()));
            dss.on_change(gc.track(q.clone()));
            nodes.on_change(gc.track(q.clone()));
            leases.on_change(gc.track(q.clone()));
            nss.on_change(gc.track(q.clone()));
            jobs.on_change(gc.track(q.clone()));
            cronjobs.on_change(gc.track(q.clone()));
            other_kinds = Some((gc.clone(), q.clone()));
            start!(gc, q);
        }

        // Informers nobody listens to are not started.
        let mut informers = JoinSet::new();
        let mut syncs: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
        macro_rules! run {
            ($($inf:ident),*) => {$(
                if $inf.has_handlers() {
                    let store = $inf.store();
                    syncs.push(Box::pin(async move { store.wait_synced().await }));
                    informers.spawn($inf.run(stopped(stop.clone())));
                }
            )*};
        }
        run!(
            pods, rss, deps, svcs, eps, slices, nss, cms, secrets, sas, stss, dss, nodes, leases,
            jobs, cronjobs
        );
        run!(pvcs, pvs, scs, hpas);
        if let Some((gc, q)) = other_kinds {
            // Custom resources as owners: kinds beyond the informers', by discovery.
            informers.spawn(gc.watch_other_kinds(
                q,
                std::time::Duration::from_secs(5),
                stopped(stop.clone()),
            ));
        }

        // Controllers start once every cache holds a complete list (and `go` resolved).
        let mut stop_wait = stop.clone();
        let go = tokio::select! {
            _ = async {
                futures::future::join_all(syncs).await;
                tracing::info!("controller caches synced");
                go.await
            } => true,
            _ = stop_wait.wait_for(|v| *v) => false,
        };
        let mut workers = JoinSet::new();
        if go {
            tracing::info!(controllers = ?self.config.controllers, "starting controllers");
            for s in starters {
                s(&mut workers);
            }
            let _ = stop_wait.wait_for(|v| *v).await;
        }
        for q in &queues {
            q.shutdown();
        }
        let mut failure = None;
        while let Some(r) = workers.join_next().await {
            if let Err(e) = r {
                failure.get_or_insert(Error::Task {
                    task: "controller workers".into(),
                    reason: e.to_string(),
                });
            }
        }
        while informers.join_next().await.is_some() {}
        failure.map_or(Ok(()), Err)
    }
}

impl ControllerManager {
    /// Registers the Job, CronJob and TTL-after-finished controllers that are enabled.
    fn start_batch(
        &self,
        starters: &mut Vec<Starter>,
        new_queue: &mut dyn FnMut() -> WorkQueue<ObjectKey>,
        jobs: &mut Informer<Job>,
        cronjobs: &mut Informer<CronJob>,
        pods: &mut Informer<Pod>,
    ) {
        let client = &self.client;
        let workers_n = self.config.workers;
        let batch = &self.config.batch;
        if self.enabled("job") {
            let q = new_queue();
            let c = JobController::new(
                client.clone(),
                jobs.store(),
                pods.store(),
                batch.clock.clone(),
                batch.pod_failure_backoff,
            );
            jobs.on_change(c.on_job(q.clone()));
            pods.on_change(c.on_pod(q.clone()));
            starters.push(Box::new(move |set| {
                set.spawn(run_workers(Arc::new(c), q, workers_n));
            }));
        }
        if self.enabled("cronjob") {
            let q = new_queue();
            let c = CronJobController::new(
                client.clone(),
                cronjobs.store(),
                jobs.store(),
                batch.clock.clone(),
            );
            cronjobs.on_change(CronJobController::on_cronjob(q.clone()));
            jobs.on_change(CronJobController::on_job(q.clone()));
            let follow = c.follow_clock(q.clone());
            starters.push(Box::new(move |set| {
                set.spawn(follow);
                set.spawn(run_workers(Arc::new(c), q, workers_n));
            }));
        }
        if self.enabled("ttl-after-finished") {
            let q = new_queue();
            let c =
                TtlAfterFinishedController::new(client.clone(), jobs.store(), batch.clock.clone());
            jobs.on_change(TtlAfterFinishedController::on_job(q.clone()));
            starters.push(Box::new(move |set| {
                set.spawn(run_workers(Arc::new(c), q, workers_n));
            }));
        }
    }
}

async fn join(handle: tokio::task::JoinHandle<Result<(), Error>>, task: &str) -> Result<(), Error> {
    match handle.await {
        Ok(r) => r,
        Err(e) => Err(Error::Task {
            task: task.to_owned(),
            reason: e.to_string(),
        }),
    }
}
