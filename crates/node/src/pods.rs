//! Pod workers: one task per pod bound to the node, driven by pod updates, container
//! exits and probe results (no fixed-tick polling of containers).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kcore_k8s::{pod_qos_class, status_code, QosClass};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::claims::{self, ClaimCache};
use crate::error::{Error, ErrorChain, Result};
use crate::images::Images;
use crate::keeper;
use crate::logs::{self, LogFile};
use crate::probes::{self, ProbeEnv, ProbeKind};
use crate::refs::Refs;
use crate::sandbox::{Sandbox, SandboxEnv};
use crate::spec::{self, BindMount, SpecInput};
use crate::streams::{AttachIo, ConsoleSocket, FdIo, Registry, Tees};
use crate::volumes;

/// Annotations on every container's OCI spec, used to adopt containers after a restart.
pub(crate) const ANN_POD_UID: &str = "io.kcore.pod.uid";
pub(crate) const ANN_CONTAINER: &str = "io.kcore.container.name";

/// Input to a pod worker.
#[derive(Debug)]
pub(crate) enum PodEvent {
    /// The pod object changed.
    Update(Box<Pod>),
    /// The pod object is gone from the API server.
    Removed,
    /// A container attempt exited (`None`: the status is unknown, e.g. an adopted one).
    Exited {
        name: String,
        attempt: u32,
        status: Option<kcore_runtime::ExitStatus>,
    },
    /// A probe's result changed.
    Probe {
        name: String,
        attempt: u32,
        kind: ProbeKind,
        ok: bool,
    },
    /// The agent is stopping: leave containers running.
    Stop,
}

/// A container's termination, as reported in the pod status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Term {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    pub container_id: String,
}

#[derive(Debug)]
struct Running {
    id: String,
    started_at: Timestamp,
    stopping: bool,
    probe: Option<tokio::task::AbortHandle>,
    log: Arc<Mutex<LogFile>>,
    /// Log copiers: left to drain on exit, stopped when the worker goes away.
    pumps: Vec<tokio::task::AbortHandle>,
    /// The stdio attached clients share.
    io: Arc<AttachIo>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(p) = &self.probe {
            p.abort();
        }
        for p in &self.pumps {
            p.abort();
        }
    }
}

/// The persisted part of a container's record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CtrSaved {
    restart_count: u32,
    /// Attempts made so far (the next attempt's number).
    attempts: u32,
    last_term: Option<Term>,
    /// The termination before `last_term`: a container that finished for good after
    /// restarts reports it as `lastState` (kubelet's `LastTerminationState`).
    #[serde(default)]
    prev_term: Option<Term>,
    image_id: Option<String>,
}

#[derive(Debug, Default)]
struct Ctr {
    saved: CtrSaved,
    running: Option<Running>,
    waiting: Option<(String, String)>,
    backoff: Duration,
    next_start: Option<Instant>,
    ready: bool,
    started: bool,
    /// Killed by a failed liveness/startup probe: restarts regardless of the exit code.
    probe_killed: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PodSaved {
    start_time: Option<Timestamp>,
    ctrs: BTreeMap<String, CtrSaved>,
    /// The eviction message, once the node evicted the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    evicted: Option<String>,
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn container_id(uid: &str, name: &str, attempt: u32) -> String {
    format!("{uid}_{name}_{attempt}")
}

/// Splits a runtime id made by [`container_id`].
pub(crate) fn parse_container_id(id: &str) -> Option<(&str, &str, u32)> {
    let (rest, attempt) = id.rsplit_once('_')?;
    let (uid, name) = rest.rsplit_once('_')?;
    Some((uid, name, attempt.parse().ok()?))
}

/// The handle the pod manager keeps for a worker; dropping it stops the worker
/// (containers keep running).
pub(crate) struct WorkerHandle {
    pub tx: mpsc::UnboundedSender<PodEvent>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        let _ = self.tx.send(PodEvent::Stop);
        self.task.abort();
    }
}

/// What pod workers run with: the agent builds one and every worker shares it.
pub(crate) struct PodEnv {
    /// Pod status and deletion, events, and the objects env and volumes refer to.
    pub client: kube::Client,
    /// The node's name, in events.
    pub node_name: String,
    /// The node's address, the pods' `hostIP`.
    pub node_ip: std::net::Ipv4Addr,
    pub runtime: kcore_runtime::Runtime,
    pub images: Arc<Images>,
    /// One directory per pod uid: sandbox, state, volumes, FIFOs.
    pub pods_root: PathBuf,
    /// Container logs.
    pub logs_root: PathBuf,
    pub sandbox: SandboxEnv,
    pub probe: Arc<ProbeEnv>,
    /// CrashLoopBackOff: first delay and longest delay.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Log rotation: size of a file and rotated files kept.
    pub log_max_bytes: u64,
    pub log_max_files: usize,
    /// How often ConfigMap, Secret and downward API volumes are refreshed.
    pub volume_refresh: Duration,
    /// How long an `Always` pull may take before a local copy is used.
    pub pull_timeout: Duration,
    /// The pods and running containers exec, attach and port-forward sessions find.
    pub streams: Arc<Registry>,
    /// Where console sockets for containers with `tty: true` are made.
    pub console_dir: PathBuf,
    /// The claims and volumes pods mount, and the news of their changes.
    pub claims: Arc<ClaimCache>,
}

/// The first retry of a failed sync (kubelet's volume operations back off from 500 ms).
const SYNC_RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between retries of a sync that keeps failing. A pod waiting for a
/// claim is woken by the claim's changes long before; this is the fallback.
const SYNC_RETRY_MAX: Duration = Duration::from_secs(16);

/// The wait before retry `failures` (1, 2, ...) of a failed sync: doubling from
/// [`SYNC_RETRY_FIRST`] up to [`SYNC_RETRY_MAX`].
fn sync_retry(failures: u32) -> Duration {
    SYNC_RETRY_FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(SYNC_RETRY_MAX)
}

/// Starts a worker for `pod`.
pub(crate) fn spawn_worker(env: Arc<PodEnv>, pod: Pod) -> WorkerHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = env.pods_root.join(&uid);
    let w = PodWorker {
        env,
        uid,
        dir,
        pod,
        sandbox: None,
        volumes: None,
        evicted: None,
        volume_refreshed: Instant::now(),
        ctrs: BTreeMap::new(),
        tx: tx.clone(),
        last_status: None,
        start_time: None,
        removed: false,
        error: None,
        failures: 0,
        adopted: false,
    };
    let span = tracing::info_span!(
        "pod",
        pod = %format!(
            "{}/{}",
            w.pod.metadata.namespace.as_deref().unwrap_or_default(),
            w.pod.metadata.name.as_deref().unwrap_or_default()
        )
    );
    let task = tokio::spawn(tracing::Instrument::instrument(w.run(rx), span));
    WorkerHandle { tx, task }
}

struct PodWorker {
    env: Arc<PodEnv>,
    uid: String,
    dir: PathBuf,
    pod: Pod,
    sandbox: Option<Sandbox>,
    volumes: Option<volumes::Volumes>,
    /// Why the node evicted the pod (its status message), once it did.
    evicted: Option<String>,
    volume_refreshed: Instant,
    ctrs: BTreeMap<String, Ctr>,
    tx: mpsc::UnboundedSender<PodEvent>,
    last_status: Option<Value>,
    start_time: Option<Timestamp>,
    removed: bool,
    error: Option<(String, String)>,
    /// Syncs failed in a row.
    failures: u32,
    adopted: bool,
}

enum Flow {
    Continue,
    Done,
}

impl PodWorker {
    fn ns(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    fn spec_containers(&self) -> (Vec<Container>, Vec<Container>) {
        let s = self.pod.spec.clone().unwrap_or_default();
        (s.init_containers.unwrap_or_default(), s.containers)
    }

    fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<PodEvent>) {
        // sessions find the pod from now on (its containers as they run)
        self.env.streams.add_pod(self.ns(), self.name(), &self.uid);
        self.load_saved();
        self.adopt();
        loop {
            // changes of the pod's claims from before the sync on: one that lands while
            // the sync fails on it still wakes the wait below
            let mut claim_changes = self.env.claims.subscribe();
            match self.sync().await {
                Ok(Flow::Done) => return,
                Ok(Flow::Continue) => {
                    self.error = None;
                    self.failures = 0;
                }
                Err(e) => {
                    tracing::warn!(pod = %self.name(), error = %ErrorChain(&e), "pod sync failed");
                    self.error = Some(("SyncError".into(), ErrorChain(&e).to_string()));
                    self.failures += 1;
                }
            }
            if let Err(e) = self.write_status().await {
                tracing::debug!(pod = %self.name(), error = %ErrorChain(&e), "status update failed");
            }
            // wait for something to happen: a failed sync is retried when a claim of the
            // pod changes while its volumes are not ready, else after a backoff
            let mut wake = self.next_wake();
            let mut waits_for = std::collections::HashSet::new();
            if self.error.is_some() {
                let retry = Instant::now() + sync_retry(self.failures);
                wake = Some(wake.map_or(retry, |w| w.min(retry)));
                if self.volumes.is_none() {
                    waits_for = claims::pod_claims(&self.pod);
                }
            }
            let timer = async {
                match wake {
                    Some(w) => tokio::time::sleep_until(w.into()).await,
                    None => std::future::pending().await,
                }
            };
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                () = timer => Some(PodEvent::Update(Box::new(self.pod.clone()))),
                () = ClaimCache::changed(&mut claim_changes, &waits_for), if !waits_for.is_empty() => {
                    tracing::debug!(pod = %self.name(), "a claim of the pod changed; syncing again");
                    Some(PodEvent::Update(Box::new(self.pod.clone())))
                }
            };
            let Some(ev) = ev else { return };
            if self.handle(ev).await.is_break() {
                return;
            }
            while let Ok(ev) = rx.try_recv() {
                if self.handle(ev).await.is_break() {
                    return;
                }
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let mut w: Option<Instant> = self.ctrs.values().filter_map(|c| c.next_start).min();
        if self.volumes.is_some() && !self.is_terminal() {
            let v = self.volume_refreshed + self.env.volume_refresh;
            w = Some(w.map_or(v, |x| x.min(v)));
        }
        w
    }

    async fn handle(&mut self, ev: PodEvent) -> std::ops::ControlFlow<()> {
        match ev {
            PodEvent::Update(p) => {
                if p.metadata.uid.as_deref() == Some(self.uid.as_str()) {
                    self.pod = *p;
                }
            }
            PodEvent::Removed => self.removed = true,
            PodEvent::Exited {
                name,
                attempt,
                status,
            } => self.on_exit(&name, attempt, status).await,
            PodEvent::Probe {
                name,
                attempt,
                kind,
                ok,
            } => {
                let grace = self.grace_period();
                let Some(c) = self.ctrs.get_mut(&name) else {
                    return std::ops::ControlFlow::Continue(());
                };
                if c.saved.attempts != attempt + 1 || c.running.is_none() {
                    return std::ops::ControlFlow::Continue(());
                }
                match kind {
                    ProbeKind::Readiness => c.ready = ok,
                    ProbeKind::Startup => c.started = ok || c.started,
                    ProbeKind::Liveness | ProbeKind::StartupFailed => {
                        if !ok {
                            tracing::info!(container = %name, ?kind, "probe failed; restarting the container");
                            crate::events::record(
                                &self.env.client,
                                &self.pod,
                                &self.env.node_name,
                                true,
                                "Unhealthy",
                                format!(
                                    "{kind:?} probe failed; container {name} will be restarted"
                                ),
                                None,
                            );
                            c.probe_killed = true;
                            c.ready = false;
                            if let Some(r) = c.running.as_mut() {
                                r.stopping = true;
                                let id = r.id.clone();
                                let spec = self.container_spec(&name);
                                let ip = sb_ip(&self.sandbox);
                                tokio::spawn(stop_gracefully(
                                    self.env.probe.clone(),
                                    id,
                                    grace,
                                    spec,
                                    ip,
                                ));
                            }
                        }
                    }
                }
            }
            PodEvent::Stop => {
                self.save();
                return std::ops::ControlFlow::Break(());
            }
        }
        std::ops::ControlFlow::Continue(())
    }

    fn container_spec(&self, name: &str) -> Option<Container> {
        let s = self.pod.spec.as_ref()?;
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .cloned()
    }

    fn grace_period(&self) -> Duration {
        let g = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30);
        Duration::from_secs(g.max(0) as u64)
    }

    async fn on_exit(
        &mut self,
        name: &str,
        attempt: u32,
        status: Option<kcore_runtime::ExitStatus>,
    ) {
        let Some(r) = self
            .ctrs
            .get_mut(name)
            .filter(|c| c.saved.attempts == attempt + 1)
            .and_then(|c| c.running.take())
        else {
            let id = container_id(&self.uid, name, attempt);
            let _ = std::fs::remove_file(self.dir.join("termination").join(&id));
            return;
        };
        let mut r = r;
        if let Some(p) = r.probe.take() {
            p.abort();
        }
        // the copiers end by themselves once the output is drained
        r.pumps.clear();
        r.io.exited(match status {
            Some(kcore_runtime::ExitStatus::Exited(n)) => kcore_stream::Exit::Code(n),
            Some(kcore_runtime::ExitStatus::Signaled(s)) => kcore_stream::Exit::Signal(s),
            None => kcore_stream::Exit::Code(137),
        });
        r.log.lock().unwrap_or_else(|p| p.into_inner()).finish();
        let term = self.termination(name, attempt, status, r.stopping, r.started_at, now());
        self.record_termination(name, term);
        let rt = self.env.runtime.clone();
        let images = self.env.images.clone();
        let id = r.id.clone();
        self.env
            .streams
            .remove_container(self.ns(), self.name(), &self.uid, &id);
        let _ = tokio::task::spawn_blocking(move || remove_container(&rt, &images, &id)).await;
        self.save();
    }

    /// How attempt `attempt` of container `name` ended, as its status reports it: the
    /// code, signal and reason from `status` (`None`: unknown), and the message it left in
    /// its termination file (or, with `FallbackToLogsOnError`, its log's tail).
    fn termination(
        &self,
        name: &str,
        attempt: u32,
        status: Option<kcore_runtime::ExitStatus>,
        stopping: bool,
        started_at: Timestamp,
        finished_at: Timestamp,
    ) -> Term {
        let id = container_id(&self.uid, name, attempt);
        let fallback = self
            .container_spec(name)
            .and_then(|c| c.termination_message_policy)
            .as_deref()
            == Some("FallbackToLogsOnError");
        let failed = !matches!(status, Some(kcore_runtime::ExitStatus::Exited(0)));
        let mut message = std::fs::read(self.dir.join("termination").join(&id))
            .map(|mut b| {
                b.truncate(4096);
                String::from_utf8_lossy(&b).into_owned()
            })
            .unwrap_or_default();
        if message.is_empty() && fallback && failed {
            let file = logs::attempt_file(
                &logs::container_dir(&self.env.logs_root, self.ns(), self.name(), &self.uid, name),
                attempt,
            );
            let q = logs::LogQuery {
                tail_lines: Some(80),
                ..Default::default()
            };
            let (tail, _) = logs::read_all(&file, &q);
            let start = tail.len().saturating_sub(2048);
            message = String::from_utf8_lossy(&tail[start..]).into_owned();
        }
        let _ = std::fs::remove_file(self.dir.join("termination").join(&id));
        let (exit_code, signal, reason) = match status {
            Some(kcore_runtime::ExitStatus::Exited(0)) => (0, None, "Completed"),
            Some(kcore_runtime::ExitStatus::Exited(n)) => (n, None, "Error"),
            Some(kcore_runtime::ExitStatus::Signaled(s)) => (
                128 + s,
                Some(s),
                if s == libc::SIGKILL && !stopping {
                    "OOMKilled"
                } else {
                    "Error"
                },
            ),
            None => (137, None, "ContainerStatusUnknown"),
        };
        // a SIGKILL we did not send is most likely the OOM killer
        let reason = if reason == "OOMKilled" && !oom_happened(&self.env.runtime, &id) {
            "Error"
        } else {
            reason
        };
        Term {
            exit_code,
            signal,
            reason: reason.into(),
            message: (!message.is_empty()).then_some(message),
            started_at: Some(started_at),
            finished_at,
            container_id: format!("kcore://{id}"),
        }
    }

    /// Records `term` as container `name`'s last termination and arms its crash-loop
    /// back-off, which grows while the container keeps failing fast.
    fn record_termination(&mut self, name: &str, term: Term) {
        let (base, max) = (self.env.backoff_base, self.env.backoff_max);
        let c = self.ctrs.entry(name.to_owned()).or_default();
        let ran = term
            .started_at
            .map(|s| term.finished_at.duration_since(s).as_secs().max(0) as u64)
            .unwrap_or(0);
        c.saved.prev_term = c.saved.last_term.take();
        c.saved.last_term = Some(term);
        c.ready = false;
        c.backoff = if Duration::from_secs(ran) > max * 2 || c.backoff.is_zero() {
            base
        } else {
            (c.backoff * 2).min(max)
        };
    }

    fn load_saved(&mut self) {
        let Ok(data) = std::fs::read(self.dir.join("state.json")) else {
            return;
        };
        let Ok(saved) = serde_json::from_slice::<PodSaved>(&data) else {
            return;
        };
        self.start_time = saved.start_time;
        self.evicted = saved.evicted;
        for (n, s) in saved.ctrs {
            self.ctrs.insert(
                n,
                Ctr {
                    saved: s,
                    ..Default::default()
                },
            );
        }
    }

    fn save(&self) {
        let saved = PodSaved {
            start_time: self.start_time,
            evicted: self.evicted.clone(),
            ctrs: self
                .ctrs
                .iter()
                .map(|(k, v)| (k.clone(), v.saved.clone()))
                .collect(),
        };
        if kcore_statedir::ensure_dir(&self.dir, kcore_statedir::GROUP_DIR).is_ok() {
            let _ = kcore_statedir::write(
                &self.dir.join("state.json"),
                &serde_json::to_vec(&saved).expect("json"),
                kcore_statedir::PRIVATE_FILE,
            );
        }
    }

    /// Takes over containers of this pod that a previous agent left running.
    fn adopt(&mut self) {
        if self.adopted {
            return;
        }
        self.adopted = true;
        self.sandbox = Sandbox::load(&self.dir);
        let Ok(ids) = self.env.runtime.list() else {
            return;
        };
        for id in ids {
            let Some((uid, name, attempt)) = parse_container_id(&id) else {
                continue;
            };
            if uid != self.uid {
                continue;
            }
            let Ok(mut c) = self.env.runtime.load(&id) else {
                continue;
            };
            // when it was created (its state directory's time, read before the status
            // check rewrites the state of one that stopped)
            let created_at = std::fs::metadata(c.state_dir())
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| Timestamp::try_from(t).ok());
            let status = c.status();
            let log_dir =
                logs::container_dir(&self.env.logs_root, self.ns(), self.name(), &self.uid, name);
            let ctr = self.ctrs.entry(name.to_owned()).or_default();
            if status == kcore_runtime::Status::Running && ctr.running.is_none() {
                tracing::info!(id, "adopting running container");
                ctr.saved.attempts = ctr.saved.attempts.max(attempt + 1);
                let file = logs::attempt_file(&log_dir, attempt);
                let Ok(lf) = LogFile::open(&file, self.env.log_max_bytes, self.env.log_max_files)
                else {
                    continue;
                };
                let log = Arc::new(Mutex::new(lf));
                let fifo_dir = self.dir.join("fifo");
                let spec = self.container_spec(name);
                let (io, pumps) = adopt_stdio(&fifo_dir, &id, c.pid(), spec.as_ref(), &log);
                let started_at = created_at.unwrap_or_else(now);
                // probes start over, as after a start: readiness is earned again when
                // the container has a readiness probe, and is immediate without one
                let probe = spec.as_ref().map(|spec| {
                    probes::spawn(
                        self.env.probe.clone(),
                        spec.clone(),
                        sb_ip(&self.sandbox),
                        id.clone(),
                        attempt,
                        self.tx.clone(),
                    )
                });
                let ctr = self.ctrs.entry(name.to_owned()).or_default();
                ctr.ready = spec.as_ref().is_some_and(|s| s.readiness_probe.is_none());
                ctr.running = Some(Running {
                    id: id.clone(),
                    started_at,
                    stopping: false,
                    probe: probe.flatten(),
                    log,
                    pumps,
                    io: io.clone(),
                });
                ctr.started = true;
                let sb_netns = self.sandbox.as_ref().and_then(|s| s.netns.clone());
                let (ns, pod) = (self.ns().to_owned(), self.name().to_owned());
                self.env
                    .streams
                    .set_pod(&ns, &pod, &self.uid, sb_netns.as_deref());
                self.env
                    .streams
                    .set_container(&ns, &pod, &self.uid, name, &id, io);
                watch_adopted(c, name.to_owned(), attempt, self.tx.clone());
            } else if status == kcore_runtime::Status::Stopped
                && ctr.running.is_none()
                && attempt + 1 >= ctr.saved.attempts
                && ctr
                    .saved
                    .last_term
                    .as_ref()
                    .is_none_or(|t| t.container_id != format!("kcore://{id}"))
            {
                // it ended while no agent watched it: its reaper recorded how, and it is
                // reported (and restarted, or not, by the pod's policy) as if it had just
                // ended
                ctr.saved.attempts = attempt + 1;
                let exited = exit_record_time(&c);
                let st = match c.wait() {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::info!(id, error = %ErrorChain(&e), "the exit status of a container that ended while the agent was away is unknown");
                        None
                    }
                };
                tracing::info!(id, status = ?st, "a container ended while the agent was away");
                let finished_at = exited.unwrap_or_else(now);
                let term = self.termination(
                    name,
                    attempt,
                    st,
                    false,
                    created_at.unwrap_or(finished_at),
                    finished_at,
                );
                self.record_termination(name, term);
                let log_file = logs::attempt_file(&log_dir, attempt);
                if let Ok(lf) =
                    LogFile::open(&log_file, self.env.log_max_bytes, self.env.log_max_files)
                {
                    lf.finish();
                }
                remove_container(&self.env.runtime, &self.env.images, &id);
                self.save();
            } else if ctr.running.as_ref().is_none_or(|r| r.id != id) {
                let rt = self.env.runtime.clone();
                let images = self.env.images.clone();
                remove_container(&rt, &images, &id);
            }
        }
    }

    fn is_terminal(&self) -> bool {
        matches!(
            self.pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) || matches!(self.phase().as_str(), "Succeeded" | "Failed")
    }

    async fn sync(&mut self) -> Result<Flow> {
        if self.removed || self.pod.metadata.deletion_timestamp.is_some() {
            self.terminate().await;
            if !self.removed {
                let api: Api<Pod> = Api::namespaced(self.env.client.clone(), self.ns());
                let _ = self.write_status().await;
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(self.uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(self.name(), &dp).await {
                    Ok(_) => {}
                    Err(e) if matches!(status_code(&e), Some(404 | 409)) => {}
                    Err(e) => return Err(Error::kube(format!("delete pod {}", self.name()), e)),
                }
            }
            self.cleanup_files();
            self.env
                .streams
                .remove_pod(self.ns(), self.name(), &self.uid);
            return Ok(Flow::Done);
        }
        if self.is_terminal() {
            // nothing will run again: free the node's resources, keep the status
            if self.ctrs.values().any(|c| c.running.is_some()) {
                return Ok(Flow::Continue);
            }
            if let Some(sb) = self.sandbox.take() {
                sb.teardown(&self.dir, &self.env.sandbox).await;
            }
            return Ok(Flow::Continue);
        }
        if self.start_time.is_none() {
            self.start_time = Some(now());
            self.save();
        }
        if self.sandbox.is_none() {
            let sb = Sandbox::ensure(&self.pod, &self.dir, &self.env.sandbox).await?;
            tracing::debug!(pod = %self.name(), ip = %sb.ip, "sandbox ready");
            self.sandbox = Some(sb);
        }
        if let Some(sb) = &self.sandbox {
            self.env
                .streams
                .set_pod(self.ns(), self.name(), &self.uid, sb.netns.as_deref());
        }
        if self.volumes.is_none() || self.volume_refreshed.elapsed() >= self.env.volume_refresh {
            let mut refs = Refs::new(self.env.client.clone(), self.ns());
            let prepared = volumes::prepare(
                &self.pod,
                &self.dir.join("volumes"),
                &mut refs,
                &self.env.claims,
            )
            .await;
            let v = match prepared {
                Ok(v) => v,
                Err(e) => {
                    // a FailedMount event per new reason; the sync retries when one of the
                    // pod's claims changes (see `run`), else after a backoff
                    let msg = ErrorChain(&e).to_string();
                    if self.error.as_ref().is_none_or(|(_, m)| *m != msg) {
                        crate::events::record(
                            &self.env.client,
                            &self.pod,
                            &self.env.node_name,
                            true,
                            "FailedMount",
                            format!("MountVolume.SetUp failed: {msg}"),
                            None,
                        );
                    }
                    return Err(e);
                }
            };
            // the kubelet's emptyDir sizeLimit eviction, on the refresh cadence (its
            // eviction manager's 10 s by default)
            if let Some(msg) = volumes::over_limit(&self.pod, &v) {
                self.volumes = Some(v);
                self.evict(msg).await;
                return Ok(Flow::Continue);
            }
            self.volumes = Some(v);
            self.volume_refreshed = Instant::now();
        }
        let (inits, apps) = self.spec_containers();
        let policy = self.restart_policy().to_owned();
        // init containers, in order
        for c in &inits {
            let st = self.ctrs.entry(c.name.clone()).or_default();
            if st.running.is_some() {
                return Ok(Flow::Continue);
            }
            match &st.saved.last_term {
                Some(t) if t.exit_code == 0 => continue,
                Some(_) if policy == "Never" => return Ok(Flow::Continue),
                _ => {}
            }
            self.maybe_start(c, None).await;
            return Ok(Flow::Continue);
        }
        for c in &apps {
            let st = self.ctrs.entry(c.name.clone()).or_default();
            if st.running.is_some() {
                continue;
            }
            let restart = match &st.saved.last_term {
                None => true,
                Some(t) => {
                    policy == "Always"
                        || (policy == "OnFailure" && (t.exit_code != 0 || st.probe_killed))
                }
            };
            if restart {
                self.maybe_start(c, None).await;
            }
        }
        // ephemeral containers (kubectl debug): started once, never restarted, in the
        // PID namespace of their target container when they name one
        for (c, target) in self.ephemeral_containers() {
            let st = self.ctrs.entry(c.name.clone()).or_default();
            if st.running.is_none() && st.saved.attempts == 0 {
                self.maybe_start(&c, target.as_deref()).await;
            }
        }
        Ok(Flow::Continue)
    }

    /// The pod's ephemeral containers as containers, each with its target's name.
    fn ephemeral_containers(&self) -> Vec<(Container, Option<String>)> {
        let Some(spec) = self.pod.spec.as_ref() else {
            return Vec::new();
        };
        spec.ephemeral_containers
            .iter()
            .flatten()
            .filter_map(|e| {
                // the same fields, less targetContainerName
                let c: Container = serde_json::to_value(e)
                    .and_then(serde_json::from_value)
                    .ok()?;
                let target = e.target_container_name.clone().filter(|t| !t.is_empty());
                Some((c, target))
            })
            .collect()
    }

    /// Starts `c` unless it is backing off (in the PID namespace of the container
    /// `target` when given).
    async fn maybe_start(&mut self, c: &Container, target: Option<&str>) {
        let st = self.ctrs.entry(c.name.clone()).or_default();
        if let Some(t) = st.next_start {
            if Instant::now() < t {
                return;
            }
        }
        if st.saved.last_term.is_some() && st.next_start.is_none() && !st.backoff.is_zero() {
            st.next_start = Some(Instant::now() + st.backoff);
            crate::events::record(
                &self.env.client,
                &self.pod,
                &self.env.node_name,
                true,
                "BackOff",
                format!("Back-off restarting failed container {}", c.name),
                None,
            );
            st.waiting = Some((
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {}s restarting failed container={} pod={}",
                    st.backoff.as_secs(),
                    c.name,
                    self.pod.metadata.name.as_deref().unwrap_or_default()
                ),
            ));
            return;
        }
        st.next_start = None;
        match self.start(c, target).await {
            Ok(()) => {}
            Err((reason, e)) => {
                tracing::warn!(container = %c.name, error = %ErrorChain(&e), "container start failed");
                crate::events::record(
                    &self.env.client,
                    &self.pod,
                    &self.env.node_name,
                    true,
                    "Failed",
                    format!("{reason}: {}", ErrorChain(&e)),
                    None,
                );
                let st = self.ctrs.entry(c.name.clone()).or_default();
                st.waiting = Some((reason.into(), ErrorChain(&e).to_string()));
                let base = self.env.backoff_base;
                st.backoff = if st.backoff.is_zero() {
                    base
                } else {
                    (st.backoff * 2).min(self.env.backoff_max)
                };
                st.next_start = Some(Instant::now() + st.backoff);
            }
        }
    }

    async fn start(
        &mut self,
        c: &Container,
        target: Option<&str>,
    ) -> std::result::Result<(), (&'static str, Error)> {
        // an ephemeral container's target: its PID namespace is shared
        let pid_ns = match target {
            None => None,
            Some(t) => {
                let pid = self
                    .ctrs
                    .get(t)
                    .and_then(|st| st.running.as_ref())
                    .and_then(|r| self.env.runtime.load(&r.id).ok())
                    .map(|ctr| ctr.pid());
                match pid {
                    Some(pid) => Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))),
                    None => {
                        return Err((
                            "CreateContainerError",
                            Error::InvalidSpec {
                                object: format!(
                                    "{}/{} container {}",
                                    self.ns(),
                                    self.name(),
                                    c.name
                                ),
                                reason: format!("the target container {t} is not running"),
                            },
                        ))
                    }
                }
            }
        };
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let img = c.image.as_deref().unwrap_or_default();
            if img.ends_with(":latest") || !img.rsplit('/').next().unwrap_or(img).contains(':') {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let image = c.image.clone().unwrap_or_default();
        let images = self.env.images.clone();
        let (img, pol) = (image.clone(), policy.clone());
        let wait = self.env.pull_timeout;
        let resolved = tokio::task::spawn_blocking(move || images.ensure(&img, &pol, wait))
            .await
            .expect("image task");
        let resolved = match resolved {
            Ok(r) => r,
            Err(e) => {
                let reason = if policy == "Never" {
                    "ErrImageNeverPull"
                } else if self.ctrs.get(&c.name).is_some_and(|s| {
                    s.waiting
                        .as_ref()
                        .is_some_and(|w| w.0 == "ErrImagePull" || w.0 == "ImagePullBackOff")
                }) {
                    "ImagePullBackOff"
                } else {
                    "ErrImagePull"
                };
                return Err((reason, e));
            }
        };
        let mut refs = Refs::new(self.env.client.clone(), self.ns());
        let env = refs
            .env(&self.pod, c)
            .await
            .map_err(|e| ("CreateContainerConfigError", e))?;
        let image_id = resolved.image_id.clone();
        tracing::debug!(container = %c.name, image = %resolved.name, "image ready");
        let sb = self
            .sandbox
            .clone()
            .expect("sandbox made before containers");
        let object = format!("{}/{} container {}", self.ns(), self.name(), c.name);
        let mut mounts = volumes::container_mounts(
            c,
            self.volumes.as_ref().expect("volumes"),
            &env,
            &self.dir.join("volumes").join("volume-subpaths"),
            &object,
        )
        .map_err(|e| ("CreateContainerConfigError", e))?;
        let user_paths: Vec<String> = mounts.iter().map(|m| m.destination.clone()).collect();
        for (src, dst) in [
            (&sb.etc_hosts, "/etc/hosts"),
            (&sb.resolv_conf, "/etc/resolv.conf"),
            (&sb.etc_hostname, "/etc/hostname"),
        ] {
            if !user_paths.iter().any(|p| p == dst) {
                mounts.push(BindMount {
                    source: src.clone(),
                    destination: dst.into(),
                    read_only: false,
                });
            }
        }
        let term_dir = self.dir.join("termination");
        let _ = std::fs::create_dir_all(&term_dir);
        let st = self.ctrs.entry(c.name.clone()).or_default();
        let attempt = st.saved.attempts;
        let id = container_id(&self.uid, &c.name, attempt);
        let term_log = term_dir.join(&id);
        let _ = std::fs::write(&term_log, b"");
        let tpath = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        if !user_paths.contains(&tpath) {
            mounts.push(BindMount {
                source: term_log,
                destination: tpath,
                read_only: false,
            });
        }
        let log_dir = logs::container_dir(
            &self.env.logs_root,
            self.ns(),
            self.name(),
            &self.uid,
            &c.name,
        );
        let log_file = logs::attempt_file(&log_dir, attempt);
        let log = LogFile::open(&log_file, self.env.log_max_bytes, self.env.log_max_files)
            .map_err(|e| ("RunContainerError", e))?;
        let log = Arc::new(Mutex::new(log));
        let fifo_dir = self.dir.join("fifo");
        let mut annotations = BTreeMap::new();
        annotations.insert(ANN_POD_UID.to_owned(), self.uid.clone());
        annotations.insert(ANN_CONTAINER.to_owned(), c.name.clone());
        let (runtime, images) = (self.env.runtime.clone(), self.env.images.clone());
        let pod = self.pod.clone();
        let container = c.clone();
        let id2 = id.clone();
        let cgroup = format!("{}/{}", sb.cgroup, c.name);
        let st_name = c.name.clone();
        let tx = self.tx.clone();
        let log2 = log.clone();
        let console_dir = self.env.console_dir.clone();
        let result = tokio::task::spawn_blocking(
            move || -> Result<(i32, Vec<tokio::task::AbortHandle>, Arc<AttachIo>)> {
                let rootfs = images.mount_rootfs(&id2, resolved.top_layer.as_deref())?;
                let cfg = resolved.image.config.config().clone();
                let input = SpecInput {
                    pod: &pod,
                    container: &container,
                    image_config: cfg.as_ref(),
                    env,
                    rootfs: rootfs.clone(),
                    mounts,
                    netns: sb.netns.clone(),
                    ipc: Some(sb.ipc.clone()),
                    uts: Some(sb.uts.clone()),
                    hostname: sb.hostname.clone(),
                    cgroup_path: cgroup,
                    annotations,
                };
                let mut oci = match spec::build(&input) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = images.remove_rootfs(&id2);
                        return Err(e);
                    }
                };
                if let Some(path) = pid_ns {
                    share_pid_namespace(&mut oci, path);
                }
                let bundle = rootfs
                    .parent()
                    .map(Path::to_owned)
                    .unwrap_or(rootfs.clone());
                // stdio: a pty with `tty: true` (its master comes back over a console
                // socket), FIFOs into the log otherwise; with `stdin: true` the agent
                // keeps stdin open for attached clients
                let tty = container.tty == Some(true);
                let keep_stdin = container.stdin == Some(true);
                let stdin_once = container.stdin_once == Some(true);
                // the exit code outlives this agent: a reaper records it (`watch_adopted`)
                let mut opts = kcore_runtime::CreateOptions {
                    reaper: true,
                    ..Default::default()
                };
                let console = if tty {
                    if let Some(p) = oci.process_mut() {
                        p.set_terminal(Some(true));
                    }
                    let sock = ConsoleSocket::new(&console_dir)
                        .map_err(|e| Error::io("make a console socket in", &console_dir, e))?;
                    opts.console_socket = Some(sock.path().to_owned());
                    Some(sock)
                } else {
                    let (out, err) = make_fifos(&fifo_dir, &id2)?;
                    opts.stdout = Some(out);
                    opts.stderr = Some(err);
                    None
                };
                let mut stdin_w = None;
                opts.stdin = if keep_stdin && !tty {
                    let (r, w) = crate::streams::pipe()
                        .map_err(|e| Error::io("make the stdin pipe of", PathBuf::from(&id2), e))?;
                    stdin_w = Some(w);
                    Some(r)
                } else if tty {
                    // the pty is the process's stdio (given stdio would replace it)
                    None
                } else {
                    open_dev_null().ok()
                };
                // a leftover from a crash with the same id
                if let Ok(old) = runtime.load(&id2) {
                    let _ = old.delete(true);
                }
                let handle = tokio::runtime::Handle::current();
                let _rt = handle.enter();
                let fd_io = |fd| {
                    FdIo::new(fd)
                        .map_err(|e| Error::io("watch the stdio of", PathBuf::from(&id2), e))
                };
                let (io, tees) = if tty {
                    AttachIo::new(None, stdin_once, None)
                } else {
                    AttachIo::new(stdin_w.map(fd_io).transpose()?, stdin_once, None)
                };
                // the log pumps read the FIFOs before the program can write to them
                let mut pumps = if tty {
                    Vec::new()
                } else {
                    attach_pumps(&fifo_dir, &id2, log2.clone(), &tees)
                };
                // create and start in one step (no exec.fifo round trip)
                let mut ctr = match runtime.run(&id2, &bundle, &oci, opts) {
                    Ok(c) => c,
                    Err(e) => {
                        for p in &pumps {
                            p.abort();
                        }
                        let _ = images.remove_rootfs(&id2);
                        return Err(Error::Runtime {
                            id: id2,
                            source: Box::new(e),
                        });
                    }
                };
                let io = match console {
                    None => io,
                    Some(sock) => {
                        let master = match sock.receive().and_then(FdIo::new) {
                            Ok(m) => m,
                            Err(e) => {
                                let _ = ctr.kill(libc::SIGKILL, true);
                                return Err(Error::io(
                                    "receive the pty of",
                                    PathBuf::from(&id2),
                                    e,
                                ));
                            }
                        };
                        let (io, tees) = AttachIo::new(
                            keep_stdin.then(|| master.share()),
                            stdin_once,
                            Some(master.share()),
                        );
                        let t = tokio::spawn(logs::pump(master, "stdout", log2, Some(tees.stdout)));
                        pumps.push(t.abort_handle());
                        io
                    }
                };
                let pid = ctr.pid();
                // the terminal or open stdin outlives this agent in a keeper
                if tty || keep_stdin {
                    let _ = std::fs::create_dir_all(&fifo_dir);
                    io.keep(pid, &keeper::record_path(&fifo_dir, &id2));
                }
                let name = st_name;
                std::thread::Builder::new()
                    .name(format!("wait-{pid}"))
                    .spawn(move || {
                        let status = ctr.wait().ok();
                        let _ = tx.send(PodEvent::Exited {
                            name,
                            attempt,
                            status,
                        });
                    })
                    .map_err(|e| Error::io("spawn waiter for", PathBuf::from(&id2), e))?;
                Ok((pid, pumps, io))
            },
        )
        .await
        .expect("start task");
        let (pid, pumps, io) = result.map_err(|e| ("RunContainerError", e))?;
        tracing::debug!(container = %c.name, pid, "container started");
        let st = self.ctrs.entry(c.name.clone()).or_default();
        if st.saved.attempts > 0 {
            st.saved.restart_count += 1;
        }
        st.saved.attempts = attempt + 1;
        st.saved.image_id = Some(image_id);
        st.waiting = None;
        st.probe_killed = false;
        for (reason, msg) in [
            (
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            ),
            ("Created", format!("Created container {}", c.name)),
            ("Started", format!("Started container {}", c.name)),
        ] {
            crate::events::record(
                &self.env.client,
                &self.pod,
                &self.env.node_name,
                false,
                reason,
                msg,
                None,
            );
        }
        st.ready = c.readiness_probe.is_none();
        st.started = c.startup_probe.is_none();
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
            // a failed postStart hook kills the container, like a failed liveness probe
            let (probe, c2, id2, tx) = (
                self.env.probe.clone(),
                c.clone(),
                id.clone(),
                self.tx.clone(),
            );
            let ip = sb_ip(&self.sandbox);
            let name = c.name.clone();
            tokio::spawn(async move {
                let limit = Duration::from_secs(30);
                if !probes::run_handler(&probe, &c2, &h, ip, &id2, limit).await {
                    let _ = tx.send(PodEvent::Probe {
                        name,
                        attempt,
                        kind: ProbeKind::Liveness,
                        ok: false,
                    });
                }
            });
        }
        let probe = probes::spawn(
            self.env.probe.clone(),
            c.clone(),
            sb_ip(&self.sandbox),
            id.clone(),
            attempt,
            self.tx.clone(),
        );
        st.running = Some(Running {
            id: id.clone(),
            started_at: now(),
            stopping: false,
            probe,
            log,
            pumps,
            io: io.clone(),
        });
        self.save();
        self.env
            .streams
            .set_container(self.ns(), self.name(), &self.uid, &c.name, &id, io);
        Ok(())
    }

    /// Stops every container (SIGTERM, grace period, SIGKILL) and removes the sandbox.
    async fn terminate(&mut self) {
        self.terminate_within(self.grace_period()).await;
    }

    /// Evicts the pod as the kubelet's eviction manager does: a Warning `Evicted` event,
    /// its containers killed at once, and the pod Failed with reason `Evicted` and `msg`.
    async fn evict(&mut self, msg: String) {
        tracing::info!(pod = %self.name(), message = %msg, "evicting the pod");
        crate::events::record(
            &self.env.client,
            &self.pod,
            &self.env.node_name,
            true,
            "Evicted",
            msg.clone(),
            None,
        );
        self.evicted = Some(msg);
        self.save();
        self.terminate_within(Duration::ZERO).await;
    }

    async fn terminate_within(&mut self, grace: Duration) {
        let running: Vec<(String, String, u32)> = self
            .ctrs
            .iter_mut()
            .filter_map(|(n, c)| {
                let r = c.running.as_mut()?;
                r.stopping = true;
                Some((n.clone(), r.id.clone(), c.saved.attempts.saturating_sub(1)))
            })
            .collect();
        let mut stops = Vec::new();
        let ip = sb_ip(&self.sandbox);
        for (name, _, _) in &running {
            crate::events::record(
                &self.env.client,
                &self.pod,
                &self.env.node_name,
                false,
                "Killing",
                format!("Stopping container {name}"),
                None,
            );
        }
        for (name, id, _) in &running {
            let spec = self.container_spec(name);
            stops.push(tokio::spawn(stop_gracefully(
                self.env.probe.clone(),
                id.clone(),
                grace,
                spec,
                ip,
            )));
        }
        for s in stops {
            let _ = s.await;
        }
        // the waiters report the exits; give them a moment, then record what is left
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.ctrs.values().any(|c| c.running.is_some()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // exits arrive through the channel, which the run loop drains; here the
            // containers are gone, so finish their records directly
            let names: Vec<(String, u32)> = self
                .ctrs
                .iter()
                .filter(|(_, c)| {
                    c.running.as_ref().is_some_and(|r| {
                        self.env
                            .runtime
                            .load(&r.id)
                            .map(|mut x| x.status() == kcore_runtime::Status::Stopped)
                            .unwrap_or(true)
                    })
                })
                .map(|(n, c)| (n.clone(), c.saved.attempts.saturating_sub(1)))
                .collect();
            for (n, a) in names {
                self.on_exit(
                    &n,
                    a,
                    Some(kcore_runtime::ExitStatus::Signaled(libc::SIGTERM)),
                )
                .await;
            }
        }
        for (n, _, a) in running {
            if self.ctrs.get(&n).is_some_and(|c| c.running.is_some()) {
                self.on_exit(&n, a, None).await;
            }
        }
        if let Some(sb) = self.sandbox.take() {
            sb.teardown(&self.dir, &self.env.sandbox).await;
        }
        volumes::teardown(&self.dir.join("volumes"));
    }

    fn cleanup_files(&self) {
        volumes::remove_unmounted(&self.dir);
        let d = self
            .env
            .logs_root
            .join(format!("{}_{}_{}", self.ns(), self.name(), self.uid));
        let _ = std::fs::remove_dir_all(d);
    }

    fn phase(&self) -> String {
        if self.evicted.is_some() {
            return "Failed".into();
        }
        let (inits, apps) = self.spec_containers();
        let policy = self.restart_policy();
        for c in &inits {
            match self.ctrs.get(&c.name) {
                Some(st) => match &st.saved.last_term {
                    Some(t) if t.exit_code != 0 && policy == "Never" && st.running.is_none() => {
                        return "Failed".into()
                    }
                    Some(t) if t.exit_code == 0 => {}
                    _ => return "Pending".into(),
                },
                None => return "Pending".into(),
            }
        }
        let mut running = 0;
        let mut succeeded = 0;
        let mut failed = 0;
        let mut never = 0;
        for c in &apps {
            match self.ctrs.get(&c.name) {
                Some(st) if st.running.is_some() => running += 1,
                Some(st) => match &st.saved.last_term {
                    Some(t) => {
                        let will_restart = policy == "Always"
                            || (policy == "OnFailure" && (t.exit_code != 0 || st.probe_killed));
                        if will_restart {
                            running += 1;
                        } else if t.exit_code == 0 {
                            succeeded += 1;
                        } else {
                            failed += 1;
                        }
                    }
                    None => never += 1,
                },
                None => never += 1,
            }
        }
        if never > 0 {
            "Pending".into()
        } else if running > 0 {
            "Running".into()
        } else if failed > 0 {
            "Failed".into()
        } else if succeeded > 0 {
            "Succeeded".into()
        } else {
            "Pending".into()
        }
    }

    fn container_status(&self, c: &Container) -> Value {
        let st = self.ctrs.get(&c.name);
        let image = c.image.clone().unwrap_or_default();
        let image_id = st
            .and_then(|s| s.saved.image_id.clone())
            .unwrap_or_default();
        let ts = |t: &Timestamp| serde_json::to_value(Time(*t)).expect("time");
        let term = terminated_state;
        let mut v = json!({
            "name": c.name,
            "image": image,
            "imageID": image_id,
            "ready": false,
            "restartCount": st.map(|s| s.saved.restart_count).unwrap_or(0),
            "started": false,
        });
        let Some(st) = st else {
            v["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
            return v;
        };
        if let Some(r) = &st.running {
            v["state"] = json!({"running": {"startedAt": ts(&r.started_at)}});
            v["containerID"] = json!(format!("kcore://{}", r.id));
            v["ready"] = json!(st.ready && st.started);
            v["started"] = json!(st.started);
            if let Some(t) = &st.saved.last_term {
                v["lastState"] = term(t);
            }
        } else if let Some((reason, msg)) = &st.waiting {
            v["state"] = json!({"waiting": {"reason": reason, "message": msg}});
            if let Some(t) = &st.saved.last_term {
                v["lastState"] = term(t);
            }
        } else if let Some(t) = &st.saved.last_term {
            let policy = self.restart_policy();
            let is_init = self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|i| i.iter().any(|x| x.name == c.name));
            let restarting = if is_init {
                t.exit_code != 0 && policy != "Never"
            } else {
                st.next_start.is_some()
                    || policy == "Always"
                    || (policy == "OnFailure" && t.exit_code != 0)
            };
            if restarting && !self.is_terminal_local() {
                v["state"] = json!({"waiting": {"reason": "CrashLoopBackOff"}});
                v["lastState"] = term(t);
            } else {
                v["state"] = term(t);
                v["containerID"] = json!(t.container_id);
                if let Some(prev) = &st.saved.prev_term {
                    v["lastState"] = term(prev);
                }
            }
        } else {
            v["state"] = json!({"waiting": {"reason": if self.sandbox.is_some() { "ContainerCreating" } else { "PodInitializing" }}});
        }
        v
    }

    /// An ephemeral container's status: as a container's, except that an ended one
    /// stays terminated (it is never restarted).
    fn ephemeral_status(&self, c: &Container) -> Value {
        let mut v = self.container_status(c);
        if let Some(st) = self.ctrs.get(&c.name) {
            if let (None, Some(t)) = (&st.running, &st.saved.last_term) {
                v["state"] = terminated_state(t);
                v["containerID"] = json!(t.container_id);
                if let Some(o) = v.as_object_mut() {
                    o.remove("lastState");
                }
            }
        }
        v["ready"] = json!(false);
        v
    }

    fn is_terminal_local(&self) -> bool {
        matches!(self.phase().as_str(), "Succeeded" | "Failed")
            || self.removed
            || self.pod.metadata.deletion_timestamp.is_some()
    }

    fn status(&self) -> Value {
        let (inits, apps) = self.spec_containers();
        let phase = self.phase();
        let ts_now = serde_json::to_value(Time(now())).expect("time");
        let old_conds: Vec<Value> = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|c| {
                c.iter()
                    .map(|x| serde_json::to_value(x).expect("json"))
                    .collect()
            })
            .unwrap_or_default();
        let cond = |t: &str, ok: bool, reason: Option<&str>| {
            let status = if ok { "True" } else { "False" };
            let prev = old_conds.iter().find(|c| c["type"] == t);
            let when = match prev {
                Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
                _ => ts_now.clone(),
            };
            let mut v = json!({"type": t, "status": status, "lastTransitionTime": when, "lastProbeTime": null});
            if let (false, Some(r)) = (ok, reason) {
                v["reason"] = json!(r);
            }
            v
        };
        let init_done = inits.iter().all(|c| {
            self.ctrs
                .get(&c.name)
                .and_then(|s| s.saved.last_term.as_ref())
                .is_some_and(|t| t.exit_code == 0)
        });
        let statuses: Vec<Value> = apps.iter().map(|c| self.container_status(c)).collect();
        let all_ready = !apps.is_empty()
            && statuses.iter().all(|s| s["ready"] == json!(true))
            && phase == "Running";
        let ready_reason = if all_ready {
            None
        } else if phase == "Succeeded" || phase == "Failed" {
            Some("PodCompleted")
        } else {
            Some("ContainersNotReady")
        };
        let mut conditions = vec![
            cond("PodReadyToStartContainers", self.sandbox.is_some(), None),
            cond("Initialized", init_done, Some("ContainersNotInitialized")),
            cond("Ready", all_ready, ready_reason),
            cond("ContainersReady", all_ready, ready_reason),
            cond("PodScheduled", true, None),
        ];
        if let Some((reason, msg)) = &self.error {
            if self.sandbox.is_none() {
                conditions[0]["reason"] = json!(reason);
                conditions[0]["message"] = json!(msg);
            }
        }
        let qos = self
            .pod
            .spec
            .as_ref()
            .map_or(QosClass::BestEffort, pod_qos_class);
        let mut st = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.env.node_ip.to_string(),
            "hostIPs": [{"ip": self.env.node_ip.to_string()}],
            "containerStatuses": statuses,
            "qosClass": qos.as_str(),
        });
        if let Some(t) = &self.start_time {
            st["startTime"] = serde_json::to_value(Time(*t)).expect("time");
        }
        if !inits.is_empty() {
            st["initContainerStatuses"] = json!(inits
                .iter()
                .map(|c| {
                    let mut v = self.container_status(c);
                    let done = self
                        .ctrs
                        .get(&c.name)
                        .and_then(|s| s.saved.last_term.as_ref())
                        .is_some_and(|t| t.exit_code == 0);
                    v["ready"] = json!(done);
                    v
                })
                .collect::<Vec<_>>());
        }
        let ephemeral = self.ephemeral_containers();
        if !ephemeral.is_empty() {
            st["ephemeralContainerStatuses"] = json!(ephemeral
                .iter()
                .map(|(c, _)| self.ephemeral_status(c))
                .collect::<Vec<_>>());
        }
        if let Some(sb) = &self.sandbox {
            st["podIP"] = json!(sb.ip.to_string());
            st["podIPs"] = json!([{"ip": sb.ip.to_string()}]);
        } else if let Some(ip) = self.pod.status.as_ref().and_then(|s| s.pod_ip.clone()) {
            st["podIP"] = json!(ip);
            st["podIPs"] = json!([{"ip": ip}]);
        }
        if let Some((reason, msg)) = &self.error {
            st["reason"] = json!(reason);
            st["message"] = json!(msg);
        }
        if let Some(msg) = &self.evicted {
            st["reason"] = json!("Evicted");
            st["message"] = json!(msg);
        }
        st
    }

    async fn write_status(&mut self) -> Result<()> {
        let st = self.status();
        // compare without timestamps of conditions that only moved
        if self.last_status.as_ref() == Some(&st) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.env.client.clone(), self.ns());
        let patch = json!({"status": st});
        match api
            .patch_status(self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(p) => {
                if p.metadata.uid.as_deref() == Some(self.uid.as_str()) {
                    self.pod.status = p.status;
                }
                self.last_status = Some(st);
                Ok(())
            }
            Err(e) if status_code(&e) == Some(404) => {
                self.last_status = Some(st);
                Ok(())
            }
            Err(e) => Err(Error::kube(
                format!("update status of pod {}", self.name()),
                e,
            )),
        }
    }
}

/// A container state `{"terminated": ...}` from its termination record.
fn terminated_state(t: &Term) -> Value {
    let ts = |t: &Timestamp| serde_json::to_value(Time(*t)).expect("time");
    let mut v = json!({
        "exitCode": t.exit_code,
        "reason": t.reason,
        "finishedAt": ts(&t.finished_at),
        "containerID": t.container_id,
    });
    if let Some(s) = t.signal {
        v["signal"] = json!(s);
    }
    if let Some(s) = &t.started_at {
        v["startedAt"] = ts(s);
    }
    if let Some(m) = &t.message {
        v["message"] = json!(m);
    }
    json!({"terminated": v})
}

/// Makes the container join the PID namespace at `path` instead of having its own.
fn share_pid_namespace(oci: &mut oci_spec::runtime::Spec, path: PathBuf) {
    let nss = oci
        .linux_mut()
        .as_mut()
        .and_then(|l| l.namespaces_mut().as_mut());
    for ns in nss.into_iter().flatten() {
        if ns.typ() == oci_spec::runtime::LinuxNamespaceType::Pid {
            ns.set_path(Some(path.clone()));
        }
    }
}

fn sb_ip(sb: &Option<Sandbox>) -> std::net::Ipv4Addr {
    sb.as_ref()
        .map(|s| s.ip)
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST)
}

/// Whether the kernel's OOM killer killed a process of the container (read from its
/// memory cgroup, which exists until the container is deleted).
fn oom_happened(rt: &kcore_runtime::Runtime, id: &str) -> bool {
    rt.load(id)
        .and_then(|c| c.stats())
        .map(|s| s.memory.oom_kill.unwrap_or(0) > 0 || s.memory.oom.unwrap_or(0) > 0)
        .unwrap_or(false)
}

fn open_dev_null() -> std::io::Result<std::os::fd::OwnedFd> {
    Ok(std::fs::File::open("/dev/null")?.into())
}

fn mkfifo(p: &Path) -> Result<()> {
    let _ = std::fs::remove_file(p);
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| {
        Error::io(
            "mkfifo",
            p,
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(Error::io("mkfifo", p, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Creates the container's stdout/stderr FIFOs and opens the container's ends
/// read-write, so writes never fail with EPIPE while no agent reads them (after a
/// restart the new agent reopens the read side).
fn make_fifos(dir: &Path, id: &str) -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let mut out = Vec::new();
    for s in ["out", "err"] {
        let p = dir.join(format!("{id}.{s}"));
        mkfifo(&p)?;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io("open", &p, e))?;
        out.push(std::os::fd::OwnedFd::from(f));
    }
    let err = out.pop().expect("two");
    let o = out.pop().expect("two");
    Ok((o, err))
}

/// The attachable stdio of a container a previous agent started: its stdin pipe or pty
/// master taken back from the keeper holding it (see [`crate::keeper`]), its output
/// copied into the log and to attached clients again (call inside a tokio runtime).
fn adopt_stdio(
    fifo_dir: &Path,
    id: &str,
    pid: i32,
    spec: Option<&Container>,
    log: &Arc<Mutex<LogFile>>,
) -> (Arc<AttachIo>, Vec<tokio::task::AbortHandle>) {
    let tty = spec.is_some_and(|c| c.tty == Some(true));
    let keep_stdin = spec.is_some_and(|c| c.stdin == Some(true));
    let stdin_once = spec.is_some_and(|c| c.stdin_once == Some(true));
    let record = keeper::record_path(fifo_dir, id);
    let kept = if tty || keep_stdin {
        match keeper::Keeper::reclaim(&record, pid) {
            Ok(Some((k, fd))) => match FdIo::new(fd) {
                Ok(f) => Some((k, f)),
                Err(e) => {
                    tracing::warn!(id, error = %ErrorChain(&e), "watch the kept stdio");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(id, error = %ErrorChain(&e), "take back the kept stdio");
                None
            }
        }
    } else {
        None
    };
    if kept.is_none() && (tty || keep_stdin) {
        tracing::info!(
            id,
            "no stdio keeper: the adopted container's stdin stays closed"
        );
    }
    match (tty, kept) {
        (true, Some((k, master))) => {
            let (io, tees) = AttachIo::new(
                keep_stdin.then(|| master.share()),
                stdin_once,
                Some(master.share()),
            );
            io.kept_by(k);
            let t = tokio::spawn(logs::pump(master, "stdout", log.clone(), Some(tees.stdout)));
            (io, vec![t.abort_handle()])
        }
        (true, None) => (AttachIo::new(None, stdin_once, None).0, Vec::new()),
        (false, kept) => {
            let (k, sink) = kept.unzip();
            let (io, tees) = AttachIo::new(sink, stdin_once, None);
            if let Some(k) = k {
                io.kept_by(k);
            }
            let pumps = attach_pumps(fifo_dir, id, log.clone(), &tees);
            (io, pumps)
        }
    }
}

/// Starts copying a container's FIFOs into its log file and to attached clients
/// (call inside a tokio runtime).
fn attach_pumps(
    dir: &Path,
    id: &str,
    log: Arc<Mutex<LogFile>>,
    tees: &Tees,
) -> Vec<tokio::task::AbortHandle> {
    let mut out = Vec::new();
    for (s, stream, tee) in [
        ("out", "stdout", &tees.stdout),
        ("err", "stderr", &tees.stderr),
    ] {
        let p = dir.join(format!("{id}.{s}"));
        match tokio::net::unix::pipe::OpenOptions::new().open_receiver(&p) {
            Ok(rx) => {
                let log = log.clone();
                let p2 = p.clone();
                let tee = tee.clone();
                let t = tokio::spawn(async move {
                    logs::pump(rx, stream, log, Some(tee)).await;
                    let _ = std::fs::remove_file(p2);
                });
                out.push(t.abort_handle());
            }
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %ErrorChain(&e), "open container output")
            }
        }
    }
    out
}

/// When the reaper of `c` wrote its exit record (the `exit` file of kcore-runtime's
/// state directory, see `kcore_runtime::CreateOptions::reaper`), once it has.
fn exit_record_time(c: &kcore_runtime::Container) -> Option<Timestamp> {
    let m = std::fs::metadata(c.state_dir().join("exit")).ok()?;
    if m.len() == 0 {
        return None;
    }
    Timestamp::try_from(m.modified().ok()?).ok()
}

/// Waits (on a thread) for an adopted container's process to exit. Its exit status is
/// known when its reaper recorded it (containers this agent's predecessors started with
/// one); else it is unknown (`None`), as for a container whose parent collected it.
fn watch_adopted(
    mut c: kcore_runtime::Container,
    name: String,
    attempt: u32,
    tx: mpsc::UnboundedSender<PodEvent>,
) {
    let pid = c.pid();
    let _ = std::thread::Builder::new()
        .name(format!("adopt-{pid}"))
        .spawn(move || {
            let status = match c.wait() {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::info!(id = c.id(), error = %ErrorChain(&e), "the adopted container's exit status is unknown");
                    None
                }
            };
            let _ = tx.send(PodEvent::Exited {
                name,
                attempt,
                status,
            });
        });
}

/// Runs the container's preStop hook (within the grace period), then stops it.
async fn stop_gracefully(
    probe: Arc<ProbeEnv>,
    id: String,
    grace: Duration,
    c: Option<Container>,
    ip: std::net::Ipv4Addr,
) {
    let started = Instant::now();
    if let Some(c) = &c {
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
            let ok = tokio::time::timeout(grace, probes::run_handler(&probe, c, h, ip, &id, grace))
                .await;
            if !matches!(ok, Ok(true)) {
                tracing::info!(id, "preStop hook failed or timed out");
            }
        }
    }
    let left = grace.saturating_sub(started.elapsed());
    let rt = probe.runtime.clone();
    let _ = tokio::task::spawn_blocking(move || stop_container(&rt, &id, left)).await;
}

/// SIGTERM, then SIGKILL after `grace` if the container is still running.
pub(crate) fn stop_container(rt: &kcore_runtime::Runtime, id: &str, grace: Duration) {
    let Ok(mut c) = rt.load(id) else { return };
    if c.status() != kcore_runtime::Status::Running {
        return;
    }
    let _ = c.kill(libc::SIGTERM, false);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if c.status() == kcore_runtime::Status::Stopped {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill(libc::SIGKILL, true);
}

/// Deletes a runtime container and its writable layer.
pub(crate) fn remove_container(
    rt: &kcore_runtime::Runtime,
    images: &crate::images::Images,
    id: &str,
) {
    if let Ok(c) = rt.load(id) {
        if let Err(e) = c.delete(true) {
            tracing::warn!(id, error = %ErrorChain(&e), "delete container");
        }
    }
    if let Err(e) = images.remove_rootfs(id) {
        tracing::warn!(id, error = %ErrorChain(&e), "remove container layer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_syncs_back_off_from_half_a_second_to_sixteen() {
        let waits: Vec<u64> = (1..=8).map(|n| sync_retry(n).as_millis() as u64).collect();
        assert_eq!(
            waits,
            [500, 1_000, 2_000, 4_000, 8_000, 16_000, 16_000, 16_000]
        );
        assert_eq!(sync_retry(u32::MAX), SYNC_RETRY_MAX);
    }

    #[test]
    fn container_ids_round_trip() {
        let id = container_id("0b7c-11", "web", 3);
        assert_eq!(parse_container_id(&id), Some(("0b7c-11", "web", 3)));
        assert_eq!(parse_container_id("kcore-runc-x"), None);
    }
}
