//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection:
//! a candidate takes the lease when it is free or when its holder has not renewed it for a
//! lease duration as observed by the candidate's own clock (so clock skew between
//! machines does not matter: the decision is kcore-k8s's [`LeaseObserver`]); the leader
//! renews every retry period and steps down when it could not renew within the renew
//! deadline.
//!
//! A leader that was frozen (SIGSTOP, a paused VM) must not act on a lease that expired
//! meanwhile: [`LeaseFence`] says whether the last successful renewal *started* less than
//! a renew deadline ago by the monotonic clock, which advances while the process is
//! stopped. Writers check it right before each write; no task has to run first.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kcore_k8s::{status_code, LeaseDecision, LeaseObserver};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Error;

/// Settings of a [`LeaderElector`].
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    /// Namespace of the Lease (`kube-system` for kube-controller-manager).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate's identity (host name plus a unique suffix).
    pub identity: String,
    /// How long a lease stays valid without renewal (15 s upstream).
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before stepping down (10 s upstream).
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew (2 s upstream).
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// Upstream's timings for a lease `namespace/name` held by `identity`.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Whether a leader may still act: its lease is valid until a monotonic deadline (the
/// start of its last successful renewal plus the renew deadline, which is shorter than
/// the lease duration after which another candidate may take over).
///
/// ```
/// let fence = kcore_reconcile::LeaseFence::default();
/// assert!(!fence.is_valid()); // never renewed
/// ```
#[derive(Debug, Clone, Default)]
pub struct LeaseFence {
    valid_until: Arc<Mutex<Option<std::time::Instant>>>,
}

impl LeaseFence {
    /// `true` while the lease is held and the deadline has not passed.
    pub fn is_valid(&self) -> bool {
        self.deadline()
            .is_some_and(|t| std::time::Instant::now() < t)
    }

    /// The monotonic deadline, when the lease is held.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, until: Option<std::time::Instant>) {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }
}

/// Competes for a Lease and publishes whether this candidate leads.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    leading: watch::Sender<bool>,
    fence: LeaseFence,
}

impl LeaderElector {
    /// A candidate for the lease described by `config`.
    pub fn new(client: Client, config: LeaderElectionConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            leading: watch::channel(false).0,
            fence: LeaseFence::default(),
        }
    }

    /// The fence of this candidate's lease: check it right before acting as leader.
    pub fn fence(&self) -> LeaseFence {
        self.fence.clone()
    }

    fn step_down(&self, why: &str) {
        self.fence.set(None);
        if self.leading.send_replace(false) {
            tracing::warn!(lease = %self.lease_name(), identity = %self.config.identity, why, "stopped leading");
        }
    }

    /// A receiver that is `true` while this candidate leads.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    /// Competes and renews until `shutdown` resolves, then releases the lease if held.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut seen = LeaseObserver::new();
        let mut last_renew: Option<Instant> = None;
        loop {
            // the lease can be valid no longer than from the start of this attempt
            let started = std::time::Instant::now();
            let attempt =
                tokio::time::timeout(self.config.renew_deadline, self.try_once(&mut seen)).await;
            let now = Instant::now();
            match attempt {
                Ok(Ok(true)) => {
                    last_renew = Some(now);
                    self.fence.set(Some(started + self.config.renew_deadline));
                    if !*self.leading.borrow() {
                        tracing::info!(lease = %self.lease_name(), identity = %self.config.identity, "became leader");
                    }
                    self.leading.send_replace(true);
                }
                Ok(Ok(false)) => {
                    last_renew = None;
                    self.step_down("lease held by another candidate");
                }
                Ok(Err(err)) => {
                    tracing::warn!(lease = %self.lease_name(), error = %crate::runner::display_chain(&err), "lease update failed");
                }
                Err(_) => {
                    tracing::warn!(lease = %self.lease_name(), "lease update timed out");
                }
            }
            if last_renew.is_some() && !self.fence.is_valid() {
                last_renew = None;
                self.step_down("renew deadline passed");
            }
            // step down the moment the deadline passes, not at the next attempt
            let deadline = self
                .fence
                .deadline()
                .map(Instant::from_std)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.config.retry_period) => {}
                () = tokio::time::sleep_until(deadline), if last_renew.is_some() => {
                    last_renew = None;
                    self.step_down("renew deadline passed");
                }
            }
        }
        if *self.leading.borrow() {
            self.fence.set(None);
            self.leading.send_replace(false);
            if let Err(err) = self.release().await {
                tracing::warn!(lease = %self.lease_name(), error = %crate::runner::display_chain(&err), "releasing lease failed");
            }
        }
    }

    /// One acquire-or-renew attempt; `Ok(true)` when we hold the lease afterwards.
    async fn try_once(&self, seen: &mut LeaseObserver) -> Result<bool, Error> {
        let name = &self.config.name;
        let current = match self.api.get(name).await {
            Ok(l) => Some(l),
            Err(e) if status_code(&e) == Some(404) => None,
            Err(e) => return Err(Error::api("get", format!("lease {}", self.lease_name()))(e)),
        };
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let decision = seen.decide(
            spec,
            &self.config.identity,
            std::time::Instant::now(),
            self.config.lease_duration,
        );
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let stamp = MicroTime(Timestamp::now());
        match decision {
            LeaseDecision::Wait { .. } => Ok(false),
            LeaseDecision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(duration_secs),
                        acquire_time: Some(stamp.clone()),
                        renew_time: Some(stamp),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if status_code(&e) == Some(409) => Ok(false),
                    Err(e) => Err(Error::api("create", format!("lease {}", self.lease_name()))(e)),
                }
            }
            decision @ (LeaseDecision::Renew | LeaseDecision::Acquire) => {
                let Some(mut lease) = current else {
                    return Ok(false);
                };
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if decision == LeaseDecision::Acquire {
                    spec.holder_identity = Some(self.config.identity.clone());
                    spec.acquire_time = Some(stamp.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(duration_secs);
                spec.renew_time = Some(stamp);
                // The resourceVersion in `lease` makes this a compare-and-swap.
                match self.api.replace(name, &PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if status_code(&e) == Some(409) => Ok(false),
                    Err(e) => Err(Error::api("update", format!("lease {}", self.lease_name()))(e)),
                }
            }
        }
    }

    /// Gives the lease up so another candidate can take it at once.
    async fn release(&self) -> Result<(), Error> {
        let mut lease = self
            .api
            .get(&self.config.name)
            .await
            .map_err(Error::api("get", format!("lease {}", self.lease_name())))?;
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        // as client-go's ReleaseOnCancel: no holder, so the next candidate acquires at once
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .map_err(Error::api("update", format!("lease {}", self.lease_name())))?;
        Ok(())
    }
}
