//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection:
//! a candidate takes the lease when it is free or when its holder has not renewed it for a
//! lease duration as observed by the candidate's own clock (so clock skew between
//! machines does not matter: the decision is kcore-k8s's [`LeaseObserver`]); the leader
//! renews every retry period and steps down when it could not renew within the renew
//! deadline.

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

/// Competes for a Lease and publishes whether this candidate leads.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    leading: watch::Sender<bool>,
}

impl LeaderElector {
    /// A candidate for the lease described by `config`.
    pub fn new(client: Client, config: LeaderElectionConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            leading: watch::channel(false).0,
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
            let attempt = self.try_once(&mut seen).await;
            let now = Instant::now();
            match attempt {
                Ok(true) => {
                    last_renew = Some(now);
                    if !*self.leading.borrow() {
                        tracing::info!(lease = %self.lease_name(), identity = %self.config.identity, "became leader");
                    }
                    self.leading.send_replace(true);
                }
                Ok(false) => {
                    if *self.leading.borrow() {
                        tracing::warn!(lease = %self.lease_name(), "lease taken by another candidate");
                    }
                    last_renew = None;
                    self.leading.send_replace(false);
                }
                Err(err) => {
                    tracing::warn!(lease = %self.lease_name(), error = %crate::runner::display_chain(&err), "lease update failed");
                    if last_renew
                        .is_some_and(|t| now.duration_since(t) > self.config.renew_deadline)
                    {
                        tracing::warn!(lease = %self.lease_name(), "renew deadline passed; stepping down");
                        last_renew = None;
                        self.leading.send_replace(false);
                    }
                }
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
        if *self.leading.borrow() {
            if let Err(err) = self.release().await {
                tracing::warn!(lease = %self.lease_name(), error = %crate::runner::display_chain(&err), "releasing lease failed");
            }
            self.leading.send_replace(false);
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
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .map_err(Error::api("update", format!("lease {}", self.lease_name())))?;
        Ok(())
    }
}
