//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection:
//! a candidate takes the lease when it is free or when its holder has not renewed it for a
//! lease duration as observed by the candidate's own clock (so clock skew between
//! machines does not matter); the leader renews every retry period and steps down when it
//! could not renew within the renew deadline.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{code_of, Error};

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

/// What a candidate does with the lease it just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// No lease exists: create it, holding it.
    Create,
    /// The lease is ours: renew it.
    Renew,
    /// The lease is free or expired: take it over (one more transition).
    Acquire,
    /// Someone else holds a live lease.
    Wait {
        /// The current holder.
        holder: String,
    },
}

/// Decides what to do with the lease `spec` (None: absent), given that its contents were
/// last seen to change at `observed_at` on our clock.
pub fn decide(
    spec: Option<&LeaseSpec>,
    identity: &str,
    observed_at: Instant,
    now: Instant,
    default_duration: Duration,
) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return LeaseDecision::Renew;
    }
    if holder.is_empty() {
        return LeaseDecision::Acquire;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(default_duration, Duration::from_secs);
    if now.saturating_duration_since(observed_at) >= duration {
        LeaseDecision::Acquire
    } else {
        LeaseDecision::Wait {
            holder: holder.to_owned(),
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
        let mut observed: Option<(String, Option<Timestamp>, Instant)> = None;
        let mut last_renew: Option<Instant> = None;
        loop {
            let attempt = self.try_once(&mut observed).await;
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
    async fn try_once(
        &self,
        observed: &mut Option<(String, Option<Timestamp>, Instant)>,
    ) -> Result<bool, Error> {
        let name = &self.config.name;
        let current = match self.api.get(name).await {
            Ok(l) => Some(l),
            Err(e) if code_of(&e) == Some(404) => None,
            Err(e) => return Err(Error::api("get", format!("lease {}", self.lease_name()))(e)),
        };
        let now = Instant::now();
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let record = spec.map(|s| {
            (
                s.holder_identity.clone().unwrap_or_default(),
                s.renew_time.as_ref().map(|t| t.0),
            )
        });
        let observed_at = match (&*observed, &record) {
            (Some((h, r, at)), Some((h2, r2))) if h == h2 && r == r2 => *at,
            _ => now,
        };
        if let Some((h, r)) = record {
            *observed = Some((h, r, observed_at));
        }
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let stamp = MicroTime(Timestamp::now());
        match decide(
            spec,
            &self.config.identity,
            observed_at,
            now,
            self.config.lease_duration,
        ) {
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
                    Err(e) if code_of(&e) == Some(409) => Ok(false),
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
                    Err(e) if code_of(&e) == Some(409) => Ok(false),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(secs),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        let t0 = Instant::now();
        let d = Duration::from_secs(15);
        let s = |sec| t0 + Duration::from_secs(sec);
        assert_eq!(decide(None, "me", t0, t0, d), LeaseDecision::Create);
        assert_eq!(
            decide(Some(&spec(Some("me"), 15)), "me", t0, s(100), d),
            LeaseDecision::Renew
        );
        assert_eq!(
            decide(Some(&spec(None, 15)), "me", t0, t0, d),
            LeaseDecision::Acquire
        );
        assert_eq!(
            decide(Some(&spec(Some(""), 15)), "me", t0, t0, d),
            LeaseDecision::Acquire
        );
        assert_eq!(
            decide(Some(&spec(Some("other"), 15)), "me", t0, s(14), d),
            LeaseDecision::Wait {
                holder: "other".into()
            }
        );
        assert_eq!(
            decide(Some(&spec(Some("other"), 15)), "me", t0, s(15), d),
            LeaseDecision::Acquire
        );
        // The lease's own duration wins over our default.
        assert_eq!(
            decide(Some(&spec(Some("other"), 60)), "me", t0, s(30), d),
            LeaseDecision::Wait {
                holder: "other".into()
            }
        );
    }
}
