//! The TTL-after-finished controller (upstream's `pkg/controller/ttlafterfinished`):
//! deletes a finished Job `ttlSecondsAfterFinished` seconds after it finished (its
//! `completionTime`, or when its `Failed` condition became true), in the foreground so
//! its pods go first, with the Job's UID as a precondition.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kcore_k8s::status_code;
use kube::api::{Api, DeleteParams, PropagationPolicy};
use kube::Client;

use crate::cache::{Change, Store};
use crate::controllers::cronjob::Clock;
use crate::error::Error;
use crate::meta::ObjectKey;
use crate::queue::WorkQueue;
use crate::runner::{Action, Reconciler};

/// When a finished Job expires, if it has a TTL and has finished.
pub fn ttl_expiry(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let st = job.status.as_ref()?;
    let finished = st
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    let at = st
        .completion_time
        .as_ref()
        .filter(|_| finished.type_ == "Complete")
        .or(finished.last_transition_time.as_ref())?
        .0;
    at.checked_add(SignedDuration::from_secs(i64::from(ttl)))
        .ok()
}

/// The TTL-after-finished controller.
pub(crate) struct TtlAfterFinishedController {
    client: Client,
    jobs: Store<Job>,
    clock: Clock,
}

impl TtlAfterFinishedController {
    pub(crate) fn new(client: Client, jobs: Store<Job>, clock: Clock) -> Self {
        Self {
            client,
            jobs,
            clock,
        }
    }

    /// Handler for Job changes: only finished Jobs with a TTL matter.
    pub(crate) fn on_job(queue: WorkQueue<ObjectKey>) -> impl Fn(&Change<Job>) + Send + Sync {
        move |c| {
            let j = c.object();
            if j.metadata.deletion_timestamp.is_none() && ttl_expiry(j).is_some() {
                queue.add(ObjectKey::of(j.as_ref()));
            }
        }
    }
}

impl Reconciler for TtlAfterFinishedController {
    fn name(&self) -> &'static str {
        "ttl-after-finished"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(job) = self.jobs.get(key) else {
            return Ok(Action::Done);
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let Some(expiry) = ttl_expiry(&job) else {
            return Ok(Action::Done);
        };
        let now = self.clock.now();
        if expiry > now {
            let wait = Duration::try_from(expiry.duration_since(now)).unwrap_or_default();
            return Ok(Action::RequeueAfter(wait + Duration::from_millis(100)));
        }
        let api: Api<Job> = Api::namespaced(self.client.clone(), key.ns());
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(kube::api::Preconditions {
                uid: job.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&key.name, &dp).await {
            Ok(_) => Ok(Action::Done),
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(Action::Done),
            Err(e) => Err(Error::api("delete", format!("job {key}"))(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_from_completion_or_failure() {
        let j = |v: serde_json::Value| -> Job { serde_json::from_value(v).unwrap() };
        let done = j(
            serde_json::json!({"spec": {"ttlSecondsAfterFinished": 30, "template": {}},
            "status": {"completionTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T00:00:01Z"}]}}),
        );
        assert_eq!(
            ttl_expiry(&done).unwrap().to_string(),
            "2026-01-01T00:00:30Z"
        );
        let failed = j(
            serde_json::json!({"spec": {"ttlSecondsAfterFinished": 0, "template": {}},
            "status": {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}]}}),
        );
        assert_eq!(
            ttl_expiry(&failed).unwrap().to_string(),
            "2026-01-01T00:00:05Z"
        );
        let running = j(
            serde_json::json!({"spec": {"ttlSecondsAfterFinished": 0, "template": {}}, "status": {}}),
        );
        assert!(ttl_expiry(&running).is_none());
        let no_ttl = j(serde_json::json!({"spec": {"template": {}},
            "status": {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}]}}));
        assert!(ttl_expiry(&no_ttl).is_none());
    }
}
