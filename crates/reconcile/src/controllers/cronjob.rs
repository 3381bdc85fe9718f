//! The CronJob controller (upstream's `pkg/controller/cronjob`, v2): creates a Job at each
//! start time of a CronJob's schedule, in its `timeZone`.
//!
//! Each sync reconciles `status.active` with the Jobs the CronJob owns (finished ones leave
//! it, `lastSuccessfulTime` follows completed ones, vanished ones are dropped), then, unless
//! suspended, finds the start times missed since the last one (or creation, or
//! `startingDeadlineSeconds` ago): at most the most recent one runs, a warning is recorded
//! past 100 misses, and a start time older than the deadline is skipped. The concurrency
//! policy decides whether a new Job may start while one runs (Allow), must wait (Forbid)
//! or replaces it (Replace). Jobs are named `<cronjob>-<scheduled minutes since epoch>`
//! and annotated with `batch.kubernetes.io/cronjob-scheduled-timestamp`; finished Jobs
//! beyond the history limits are deleted, oldest first. The controller requeues a
//! CronJob for its next start time.
//!
//! Time comes from a [`Clock`], which tests replace with a manual one to step through
//! schedules without waiting for wall-clock minutes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kcore_k8s::{missed_schedules, status_code, time_zone, CronSchedule};
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;
use tokio::sync::watch;

use crate::cache::{Change, Store};
use crate::controllers::job::{job_finished, object_ref, record_event};
use crate::error::Error;
use crate::meta::{controller_of, controller_ref, ObjectKey};
use crate::queue::WorkQueue;
use crate::runner::{Action, Reconciler};

/// The annotation with a CronJob's Job's scheduled start time (RFC 3339, in the
/// CronJob's time zone).
pub const CRONJOB_SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Upstream's limit of missed start times before it warns.
const TOO_MANY_MISSED: i64 = 100;
const COMPONENT: &str = "cronjob-controller";

/// The time source of the batch controllers: the system clock, or a manual clock that
/// tests set and advance (and that wakes the controllers when it moves).
///
/// ```
/// use kcore_reconcile::Clock;
/// use std::time::Duration;
///
/// let clock = Clock::manual("2026-01-01T00:00:00Z".parse()?);
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.now().to_string(), "2026-01-01T00:01:30Z");
/// Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Clock {
    manual: Option<Arc<(Mutex<Timestamp>, watch::Sender<Timestamp>)>>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.manual {
            None => f.write_str("Clock::system"),
            Some(_) => write!(f, "Clock::manual({})", self.now()),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock that stands at `start` until set or advanced.
    pub fn manual(start: Timestamp) -> Self {
        let (tx, _) = watch::channel(start);
        Self {
            manual: Some(Arc::new((Mutex::new(start), tx))),
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        match &self.manual {
            None => Timestamp::now(),
            Some(m) => {
                *m.0.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            }
        }
    }

    /// Sets a manual clock (a system clock ignores this).
    pub fn set(&self, t: Timestamp) {
        if let Some(m) = &self.manual {
            *m.0.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = t;
            m.1.send_replace(t);
        }
    }

    /// Moves a manual clock forward (a system clock ignores this).
    pub fn advance(&self, d: Duration) {
        let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
        self.set(self.now().checked_add(d).unwrap_or(Timestamp::MAX));
    }

    /// For a manual clock, a receiver that sees every change.
    pub fn subscribe(&self) -> Option<watch::Receiver<Timestamp>> {
        self.manual.as_ref().map(|m| m.1.subscribe())
    }
}

/// The name of the Job a CronJob starts for `scheduled` (upstream's `getJobName`).
pub fn cronjob_job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// What the controller does about a CronJob's start times at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleDecision {
    /// No start time has passed since the last one.
    Wait,
    /// The most recent start time is older than `startingDeadlineSeconds`.
    TooLate(Timestamp),
    /// Run for this start time.
    Run(Timestamp),
}

/// Upstream's `nextScheduleTime` plus its deadline check: the start time to act on (the
/// most recent missed one) and how many were missed. `last` is `status.lastScheduleTime`,
/// `created` the CronJob's creation time.
pub fn schedule_decision(
    schedule: &CronSchedule,
    tz: &k8s_openapi::jiff::tz::TimeZone,
    created: Timestamp,
    last: Option<Timestamp>,
    starting_deadline_seconds: Option<i64>,
    now: Timestamp,
) -> Result<(ScheduleDecision, i64), kcore_k8s::Error> {
    let mut earliest = last.unwrap_or(created);
    let deadline = starting_deadline_seconds.map(SignedDuration::from_secs);
    if let Some(d) = deadline {
        if let Ok(t) = now.checked_sub(d) {
            earliest = earliest.max(t);
        }
    }
    let missed = missed_schedules(schedule, tz, earliest, now)?;
    let Some(t) = missed.most_recent else {
        return Ok((ScheduleDecision::Wait, 0));
    };
    if let Some(d) = deadline {
        if t.checked_add(d).is_ok_and(|until| until < now) {
            return Ok((ScheduleDecision::TooLate(t), missed.count));
        }
    }
    Ok((ScheduleDecision::Run(t), missed.count))
}

fn rfc3339_in(t: Timestamp, tz: &k8s_openapi::jiff::tz::TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The Job of `cj` for start time `scheduled`.
pub fn job_for_schedule(
    cj: &CronJob,
    scheduled: Timestamp,
    tz: &k8s_openapi::jiff::tz::TimeZone,
) -> Job {
    let name = cj.metadata.name.clone().unwrap_or_default();
    let tpl = cj.spec.job_template.clone();
    let tm = tpl.metadata.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    annotations.insert(
        CRONJOB_SCHEDULED_TIMESTAMP.into(),
        rfc3339_in(scheduled, tz),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(cronjob_job_name(&name, scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..ObjectMeta::default()
        },
        spec: tpl.spec,
        status: None,
    }
}

fn finished_condition(j: &Job) -> Option<&str> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

/// The CronJob controller.
pub(crate) struct CronJobController {
    client: Client,
    cronjobs: Store<CronJob>,
    jobs: Store<Job>,
    clock: Clock,
}

impl CronJobController {
    pub(crate) fn new(
        client: Client,
        cronjobs: Store<CronJob>,
        jobs: Store<Job>,
        clock: Clock,
    ) -> Self {
        Self {
            client,
            cronjobs,
            jobs,
            clock,
        }
    }

    /// Handler for CronJob changes.
    pub(crate) fn on_cronjob(
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<CronJob>) + Send + Sync {
        move |c| queue.add(ObjectKey::of(c.object().as_ref()))
    }

    /// Handler for Job changes: requeues the owning CronJob.
    pub(crate) fn on_job(queue: WorkQueue<ObjectKey>) -> impl Fn(&Change<Job>) + Send + Sync {
        move |c| {
            let j = c.object();
            if let Some(r) = controller_of(&j.metadata).filter(|r| r.kind == "CronJob") {
                queue.add(ObjectKey::namespaced(
                    j.metadata.namespace.clone().unwrap_or_default(),
                    &r.name,
                ));
            }
        }
    }

    /// Requeues every CronJob whenever a manual clock moves (returns at once for the
    /// system clock).
    pub(crate) fn follow_clock(
        &self,
        queue: WorkQueue<ObjectKey>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let rx = self.clock.subscribe();
        let cronjobs = self.cronjobs.clone();
        async move {
            let Some(mut rx) = rx else { return };
            while rx.changed().await.is_ok() {
                for cj in cronjobs.list() {
                    queue.add(ObjectKey::of(cj.as_ref()));
                }
            }
        }
    }

    async fn event(&self, cj: &CronJob, type_: &str, reason: &str, message: &str) {
        record_event(
            &self.client,
            COMPONENT,
            object_ref(cj),
            type_,
            reason,
            message,
        )
        .await;
    }

    async fn delete_job(&self, cj: &CronJob, ns: &str, name: &str) -> Result<(), Error> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {
                self.event(
                    cj,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted job {name}"),
                )
                .await;
                Ok(())
            }
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(Error::api("delete", format!("job {ns}/{name}"))(e)),
        }
    }

    /// Deletes finished Jobs beyond the history limits, oldest first.
    async fn cleanup(&self, cj: &CronJob, owned: &[Arc<Job>]) -> Result<(), Error> {
        let spec = Some(&cj.spec);
        let ns = cj.metadata.namespace.as_deref().unwrap_or("");
        for (cond, limit) in [
            (
                "Complete",
                spec.and_then(|s| s.successful_jobs_history_limit),
            ),
            ("Failed", spec.and_then(|s| s.failed_jobs_history_limit)),
        ] {
            let Some(limit) = limit else { continue };
            let mut done: Vec<&Arc<Job>> = owned
                .iter()
                .filter(|j| finished_condition(j) == Some(cond))
                .collect();
            let keep = usize::try_from(limit).unwrap_or(0);
            if done.len() <= keep {
                continue;
            }
            // upstream's byJobStartTime: by start time, Jobs without one last, equal
            // start times by name
            done.sort_by_key(|j| {
                let start = j
                    .status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0);
                (start.is_none(), start, j.metadata.name.clone())
            });
            let n = done.len() - keep;
            for j in done.into_iter().take(n) {
                self.delete_job(cj, ns, j.metadata.name.as_deref().unwrap_or(""))
                    .await?;
            }
        }
        Ok(())
    }

    async fn write_status(&self, cj: &CronJob, status: CronJobStatus) -> Result<(), Error> {
        if cj.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let key = ObjectKey::of(cj);
        let api: Api<CronJob> = Api::namespaced(self.client.clone(), key.ns());
        let mut body = cj.clone();
        body.status = Some(status);
        api.replace_status(&key.name, &PostParams::default(), &body)
            .await
            .map_err(Error::api("update status of", format!("cronjob {key}")))?;
        Ok(())
    }
}

impl Reconciler for CronJobController {
    fn name(&self) -> &'static str {
        "cronjob"
    }

    #[allow(clippy::too_many_lines)]
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(cj) = self.cronjobs.get(key) else {
            return Ok(Action::Done);
        };
        if cj.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let spec = cj.spec.clone();
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let now = self.clock.now();
        let owned: Vec<Arc<Job>> = self
            .jobs
            .list_namespace(key.ns())
            .into_iter()
            .filter(|j| controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
            .collect();
        let mut status = cj.status.clone().unwrap_or_default();
        let mut active: Vec<ObjectReference> = status.active.clone().unwrap_or_default();

        // 1. The active list against the Jobs this CronJob owns.
        for j in &owned {
            let juid = j.metadata.uid.as_deref();
            let name = j.metadata.name.as_deref().unwrap_or("");
            let listed = active.iter().any(|r| r.uid.as_deref() == juid);
            match (listed, finished_condition(j)) {
                (false, None) => {
                    self.event(
                        &cj,
                        "Warning",
                        "UnexpectedJob",
                        &format!("Saw a job that the controller did not create or forgot: {name}"),
                    )
                    .await;
                }
                (true, Some(cond)) => {
                    active.retain(|r| r.uid.as_deref() != juid);
                    self.event(
                        &cj,
                        "Normal",
                        "SawCompletedJob",
                        &format!("Saw completed job: {name}, condition: {cond}"),
                    )
                    .await;
                    if cond == "Complete" {
                        if let Some(t) = j.status.as_ref().and_then(|s| s.completion_time.clone()) {
                            if status
                                .last_successful_time
                                .as_ref()
                                .is_none_or(|l| l.0 < t.0)
                            {
                                status.last_successful_time = Some(t);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let mut gone = Vec::new();
        for r in &active {
            if owned.iter().any(|j| j.metadata.uid == r.uid) {
                continue;
            }
            let name = r.name.clone().unwrap_or_default();
            let api: Api<Job> = Api::namespaced(self.client.clone(), key.ns());
            match api.get_opt(&name).await {
                Ok(Some(j)) if j.metadata.uid == r.uid => {}
                Ok(_) => gone.push(r.uid.clone()),
                Err(e) => return Err(Error::api("get", format!("job {}/{name}", key.ns()))(e)),
            }
        }
        for g in gone {
            if let Some(r) = active.iter().find(|r| r.uid == g) {
                let name = r.name.clone().unwrap_or_default();
                self.event(
                    &cj,
                    "Normal",
                    "MissingJob",
                    &format!("Active job went missing: {name}"),
                )
                .await;
            }
            active.retain(|r| r.uid != g);
        }
        let write = |mut status: CronJobStatus, active: Vec<ObjectReference>| {
            status.active = (!active.is_empty()).then_some(active);
            status
        };

        // 2. Whether to start a Job now.
        if spec.suspend == Some(true) {
            self.write_status(&cj, write(status, active)).await?;
            self.cleanup(&cj, &owned).await?;
            return Ok(Action::Done);
        }
        let tz = match time_zone(spec.time_zone.as_deref()) {
            Ok(tz) => tz,
            Err(e) => {
                let tzs = spec.time_zone.clone().unwrap_or_default();
                self.event(
                    &cj,
                    "Warning",
                    "UnknownTimeZone",
                    &format!("invalid timeZone: {tzs:?}: {e}"),
                )
                .await;
                self.write_status(&cj, write(status, active)).await?;
                return Ok(Action::Done);
            }
        };
        let schedule = match CronSchedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                let reason = match &e {
                    kcore_k8s::Error::Cron { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                self.event(
                    &cj,
                    "Warning",
                    "UnparseableSchedule",
                    &format!("unparseable schedule: {:?} : {reason}", spec.schedule),
                )
                .await;
                self.write_status(&cj, write(status, active)).await?;
                return Ok(Action::Done);
            }
        };
        let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
        let last = status.last_schedule_time.as_ref().map(|t| t.0);
        let requeue = |now: Timestamp| {
            schedule.next_after(now, &tz).map_or(Action::Done, |next| {
                let d = Duration::try_from(next.duration_since(now)).unwrap_or_default();
                Action::RequeueAfter(d + Duration::from_millis(100))
            })
        };
        let (decision, missed) = match schedule_decision(
            &schedule,
            &tz,
            created,
            last,
            spec.starting_deadline_seconds,
            now,
        ) {
            Ok(d) => d,
            Err(e) => {
                self.event(
                    &cj,
                    "Warning",
                    "InvalidSchedule",
                    &format!("invalid schedule: {} : {e}", spec.schedule),
                )
                .await;
                self.write_status(&cj, write(status, active)).await?;
                return Ok(Action::Done);
            }
        };
        if missed > TOO_MANY_MISSED {
            self.event(&cj, "Warning", "TooManyMissedTimes", &format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew")).await;
        }
        let scheduled = match decision {
            ScheduleDecision::Wait => {
                self.write_status(&cj, write(status, active)).await?;
                self.cleanup(&cj, &owned).await?;
                return Ok(requeue(now));
            }
            ScheduleDecision::TooLate(t) => {
                let when = t
                    .to_zoned(tz.clone())
                    .strftime("%a, %d %b %Y %H:%M:%S %z")
                    .to_string();
                self.event(
                    &cj,
                    "Warning",
                    "MissSchedule",
                    &format!("Missed scheduled time to start a job: {when}"),
                )
                .await;
                self.write_status(&cj, write(status, active)).await?;
                return Ok(requeue(now));
            }
            ScheduleDecision::Run(t) => t,
        };
        let job_name = cronjob_job_name(key.name.as_str(), scheduled);
        if active
            .iter()
            .any(|r| r.name.as_deref() == Some(job_name.as_str()))
            || last == Some(scheduled)
        {
            self.write_status(&cj, write(status, active)).await?;
            return Ok(requeue(now));
        }
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        if policy == "Forbid" && !active.is_empty() {
            self.event(&cj, "Normal", "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid").await;
            self.write_status(&cj, write(status, active)).await?;
            return Ok(requeue(now));
        }
        if policy == "Replace" {
            for r in std::mem::take(&mut active) {
                self.delete_job(&cj, key.ns(), r.name.as_deref().unwrap_or(""))
                    .await?;
            }
        }
        let job = job_for_schedule(&cj, scheduled, &tz);
        let api: Api<Job> = Api::namespaced(self.client.clone(), key.ns());
        let made = match api.create(&PostParams::default(), &job).await {
            Ok(j) => {
                self.event(
                    &cj,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created job {job_name}"),
                )
                .await;
                Some(j)
            }
            Err(e) if status_code(&e) == Some(409) => {
                // Created by an earlier sync whose status write was lost: adopt it.
                let existing = api
                    .get_opt(&job_name)
                    .await
                    .map_err(Error::api("get", format!("job {}/{job_name}", key.ns())))?;
                existing.filter(|j| controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
            }
            Err(e) => {
                self.event(
                    &cj,
                    "Warning",
                    "FailedCreate",
                    &format!("Error creating job: {e}"),
                )
                .await;
                self.write_status(&cj, write(status, active)).await?;
                return Err(Error::api("create", format!("job {}/{job_name}", key.ns()))(e));
            }
        };
        if let Some(j) = made {
            if !job_finished(&j) {
                active.push(object_ref(&j));
            }
        }
        status.last_schedule_time = Some(Time(scheduled));
        self.write_status(&cj, write(status, active)).await?;
        self.cleanup(&cj, &owned).await?;
        Ok(requeue(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn decisions_with_an_injected_clock() {
        let utc = time_zone(None).unwrap();
        let every_min = CronSchedule::parse("*/1 * * * *").unwrap();
        let created = ts("2026-01-01T00:00:30Z");
        // (last, deadline, now) -> decision, missed
        for (last, deadline, now, want, missed) in [
            (
                None,
                None,
                "2026-01-01T00:00:59Z",
                ScheduleDecision::Wait,
                0,
            ),
            (
                None,
                None,
                "2026-01-01T00:01:00Z",
                ScheduleDecision::Run(ts("2026-01-01T00:01:00Z")),
                1,
            ),
            // Already ran at 00:01: nothing new until 00:02.
            (
                Some("2026-01-01T00:01:00Z"),
                None,
                "2026-01-01T00:01:40Z",
                ScheduleDecision::Wait,
                0,
            ),
            // Down for three hours: one catch-up run, for the latest start time, and a warning.
            (
                Some("2026-01-01T00:01:00Z"),
                None,
                "2026-01-01T03:01:10Z",
                ScheduleDecision::Run(ts("2026-01-01T03:01:00Z")),
                180,
            ),
            // A deadline bounds how far back misses are counted.
            (
                Some("2026-01-01T00:01:00Z"),
                Some(200),
                "2026-01-01T03:01:10Z",
                ScheduleDecision::Run(ts("2026-01-01T03:01:00Z")),
                4,
            ),
            // The latest start time is older than the deadline: skipped.
            (
                Some("2026-01-01T00:01:00Z"),
                Some(5),
                "2026-01-01T03:01:10Z",
                ScheduleDecision::Wait,
                0,
            ),
            (
                Some("2026-01-01T03:00:00Z"),
                Some(5),
                "2026-01-01T03:01:03Z",
                ScheduleDecision::Run(ts("2026-01-01T03:01:00Z")),
                1,
            ),
        ] {
            let got = schedule_decision(&every_min, &utc, created, last.map(ts), deadline, ts(now))
                .unwrap();
            assert_eq!(got, (want.clone(), missed), "{last:?} {deadline:?} {now}");
        }
    }

    #[test]
    fn job_names_and_annotations() {
        let cj: CronJob = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hello", "namespace": "ns", "uid": "u"},
            "spec": {"schedule": "0 9 * * *", "jobTemplate": {"metadata": {"labels": {"a": "b"}},
                "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}}}))
        .unwrap();
        let t = ts("2026-01-01T09:00:00Z");
        assert_eq!(
            cronjob_job_name("hello", t),
            format!("hello-{}", t.as_second() / 60)
        );
        let berlin = time_zone(Some("Europe/Berlin")).unwrap();
        let j = job_for_schedule(&cj, t, &berlin);
        assert_eq!(
            j.metadata.annotations.as_ref().unwrap()[CRONJOB_SCHEDULED_TIMESTAMP],
            "2026-01-01T10:00:00+01:00"
        );
        assert_eq!(j.metadata.labels.as_ref().unwrap()["a"], "b");
        let r = &j.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((r.kind.as_str(), r.controller), ("CronJob", Some(true)));
        let utc = job_for_schedule(&cj, t, &time_zone(None).unwrap());
        assert_eq!(
            utc.metadata.annotations.as_ref().unwrap()[CRONJOB_SCHEDULED_TIMESTAMP],
            "2026-01-01T09:00:00Z"
        );
    }

    #[test]
    fn manual_clock_wakes_subscribers() {
        let c = Clock::manual(ts("2026-01-01T00:00:00Z"));
        let mut rx = c.subscribe().unwrap();
        c.advance(Duration::from_secs(60));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), ts("2026-01-01T00:01:00Z"));
        assert!(Clock::system().subscribe().is_none());
    }
}
