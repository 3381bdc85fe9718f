//! Lease leader election decisions, as client-go's `leaderelection`.
//!
//! A candidate reads the `coordination.k8s.io/v1` Lease and decides: create it when absent,
//! renew it when it holds it, take it over when it is free or when its holder has not
//! renewed it for a lease duration, and otherwise wait. "Has not renewed" is measured on
//! the candidate's *own* clock, from the moment it first saw the current record (holder and
//! `renewTime`) unchanged; the holder's `renewTime` is compared only for equality, never
//! with the local time, so clock skew between machines does not matter.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use k8s_openapi::api::coordination::v1::LeaseSpec;
//! use kcore_k8s::{LeaseDecision, LeaseObserver};
//!
//! let held = LeaseSpec {
//!     holder_identity: Some("other".into()),
//!     lease_duration_seconds: Some(15),
//!     ..LeaseSpec::default()
//! };
//! let mut seen = LeaseObserver::new();
//! let t0 = Instant::now();
//! let wait = LeaseDecision::Wait { holder: "other".into() };
//! assert_eq!(seen.decide(Some(&held), "me", t0, Duration::from_secs(15)), wait);
//! let later = t0 + Duration::from_secs(15);
//! assert_eq!(seen.decide(Some(&held), "me", later, Duration::from_secs(15)), LeaseDecision::Acquire);
//! ```

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

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

/// Decides what to do with the lease `spec` (None: absent), given that its record was
/// first seen unchanged at `observed_at` on our clock and it is `now` on our clock. The
/// lease's own `leaseDurationSeconds` wins over `default_duration`.
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

/// What a candidate last saw of a lease: its record (holder and `renewTime`) and when, on
/// the candidate's clock, that record was first seen.
#[derive(Debug, Clone, Default)]
pub struct LeaseObserver {
    seen: Option<(String, Option<MicroTime>, Instant)>,
}

impl LeaseObserver {
    /// A candidate that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the lease `spec` read at `now` and returns when its record was first seen
    /// unchanged (`now` for a new record).
    pub fn observe(&mut self, spec: Option<&LeaseSpec>, now: Instant) -> Instant {
        let Some(spec) = spec else {
            return now;
        };
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renew = spec.renew_time.clone();
        match &self.seen {
            Some((h, r, at)) if *h == holder && *r == renew => *at,
            _ => {
                self.seen = Some((holder, renew, now));
                now
            }
        }
    }

    /// [`observe`](Self::observe)s `spec` at `now`, then [`decide`]s.
    pub fn decide(
        &mut self,
        spec: Option<&LeaseSpec>,
        identity: &str,
        now: Instant,
        default_duration: Duration,
    ) -> LeaseDecision {
        let observed_at = self.observe(spec, now);
        decide(spec, identity, observed_at, now, default_duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

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
        let wait = LeaseDecision::Wait {
            holder: "other".into(),
        };
        let other = spec(Some("other"), 15);
        let cases: &[(Option<&LeaseSpec>, Instant, LeaseDecision)] = &[
            (None, t0, LeaseDecision::Create),
            (Some(&spec(Some("me"), 15)), s(100), LeaseDecision::Renew),
            (Some(&spec(None, 15)), t0, LeaseDecision::Acquire),
            (Some(&spec(Some(""), 15)), t0, LeaseDecision::Acquire),
            (Some(&other), s(14), wait.clone()),
            (Some(&other), s(15), LeaseDecision::Acquire),
            // the lease's own duration wins over our default
            (Some(&spec(Some("other"), 60)), s(30), wait.clone()),
            // no duration in the lease: our default
            (
                Some(&LeaseSpec {
                    holder_identity: Some("other".into()),
                    ..LeaseSpec::default()
                }),
                s(15),
                LeaseDecision::Acquire,
            ),
            // a clock that went backwards is not expiry
            (Some(&other), t0, wait.clone()),
        ];
        for (i, (spec, now, want)) in cases.iter().enumerate() {
            assert_eq!(&decide(*spec, "me", t0, *now, d), want, "case {i}");
        }
    }

    /// A holder whose clock is far behind (or ahead) still holds the lease for a whole
    /// lease duration as we observe it: its renewTime is never compared with our clock.
    #[test]
    fn skewed_renew_time_is_respected_for_the_locally_observed_duration() {
        let d = Duration::from_secs(15);
        let t0 = Instant::now();
        // renewTimes written by clocks decades behind and ahead of ours
        for skew_to in [946_684_800, 4_102_444_800] {
            let renew = Timestamp::from_second(skew_to).unwrap();
            let lease = LeaseSpec {
                renew_time: Some(MicroTime(renew)),
                ..spec(Some("other"), 15)
            };
            let mut seen = LeaseObserver::new();
            for sec in [0, 5, 14] {
                assert_eq!(
                    seen.decide(Some(&lease), "me", t0 + Duration::from_secs(sec), d),
                    LeaseDecision::Wait {
                        holder: "other".into()
                    },
                    "renewTime {renew}, {sec}s after first seen"
                );
            }
            assert_eq!(
                seen.decide(Some(&lease), "me", t0 + Duration::from_secs(15), d),
                LeaseDecision::Acquire,
                "renewTime {renew}: expired after a locally observed lease duration"
            );
        }
    }

    #[test]
    fn a_renewal_restarts_the_local_clock() {
        let d = Duration::from_secs(15);
        let t0 = Instant::now();
        let at = |sec| t0 + Duration::from_secs(sec);
        let renewed = |sec: i64| LeaseSpec {
            renew_time: Some(MicroTime(Timestamp::from_second(sec).unwrap())),
            ..spec(Some("other"), 15)
        };
        let mut seen = LeaseObserver::new();
        assert_eq!(seen.observe(Some(&renewed(1)), at(0)), at(0));
        assert_eq!(seen.observe(Some(&renewed(1)), at(10)), at(0));
        // renewed: seen anew at 12, so still held at 20
        assert_eq!(seen.observe(Some(&renewed(2)), at(12)), at(12));
        assert!(matches!(
            seen.decide(Some(&renewed(2)), "me", at(20), d),
            LeaseDecision::Wait { .. }
        ));
        // a new holder is a new record too
        let taken = LeaseSpec {
            holder_identity: Some("third".into()),
            ..renewed(2)
        };
        assert_eq!(seen.observe(Some(&taken), at(30)), at(30));
        // an absent lease is observed now and forgets nothing
        assert_eq!(seen.observe(None, at(40)), at(40));
        assert_eq!(seen.observe(Some(&taken), at(41)), at(30));
    }
}
