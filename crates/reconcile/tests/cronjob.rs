//! The CronJob controller against an in-process kcore-apiserver on a manual clock: Jobs
//! at each start time, Forbid and Replace, one catch-up run after downtime with upstream's
//! warning, history limits and `lastSuccessfulTime`. The test plays the Job controller
//! (it marks Jobs complete).

mod common;

use std::time::Duration;

use common::{eventually, start_with, Cluster, Kubelet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kcore_reconcile::{
    cronjob_job_name, BatchConfig, Clock, ControllerManagerConfig, CRONJOB_SCHEDULED_TIMESTAMP,
};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn cluster(clock: &Clock) -> Cluster {
    let cfg = ControllerManagerConfig {
        workers: 2,
        controllers: ["cronjob"].iter().map(|s| (*s).to_owned()).collect(),
        batch: BatchConfig {
            clock: clock.clone(),
            ..BatchConfig::default()
        },
        ..ControllerManagerConfig::default()
    };
    start_with(Kubelet::None, cfg).await
}

fn cronjob(name: &str, policy: &str, history: i32) -> CronJob {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"schedule": "*/1 * * * *", "concurrencyPolicy": policy,
            "successfulJobsHistoryLimit": history,
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}},
    }))
    .expect("cronjob")
}

/// The names of the Jobs `cj` owns that are not being deleted.
async fn jobs_of(api: &Api<Job>, cj: &str) -> Vec<String> {
    let mut v: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("jobs")
        .items
        .into_iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter(|j| {
            j.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.name == cj)
        })
        .filter_map(|j| j.metadata.name)
        .collect();
    v.sort();
    v
}

async fn until_jobs(api: &Api<Job>, cj: &str, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    let mut last = Vec::new();
    for _ in 0..400 {
        last = jobs_of(api, cj).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("jobs of {cj}: want {want:?}, have {last:?}");
}

async fn complete(api: &Api<Job>, name: &str) {
    let now = Timestamp::now().to_string();
    let patch = json!({"status": {"startTime": now, "completionTime": now, "succeeded": 1, "conditions": [
        {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "lastTransitionTime": now},
        {"type": "Complete", "status": "True", "reason": "CompletionsReached", "lastTransitionTime": now}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("complete job");
}

async fn has_event(c: &Cluster, name: &str, reason: &str) -> String {
    let api: Api<Event> = Api::namespaced(c.client.clone(), &c.namespace);
    eventually(30, &format!("{reason} event of {name}"), || async {
        api.list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some(name)
                    && e.reason.as_deref() == Some(reason)
            })
            .and_then(|e| e.message)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_forbid_replace_catch_up_and_history() {
    let clock = Clock::manual(Timestamp::now());
    let c = cluster(&clock).await;
    let cjs: Api<CronJob> = Api::namespaced(c.client.clone(), &c.namespace);
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), &c.namespace);
    for (n, p, h) in [
        ("forbid", "Forbid", 3),
        ("replace", "Replace", 3),
        ("allow", "Allow", 1),
    ] {
        cjs.create(&PostParams::default(), &cronjob(n, p, h))
            .await
            .expect("create cronjob");
    }
    // Created mid-minute: nothing runs until the next minute starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(jobs_of(&jobs, "forbid").await.is_empty());

    let t0 = clock.now();
    let m1 = Timestamp::from_second((t0.as_second() / 60 + 1) * 60).unwrap();
    clock.set(
        m1.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1))
            .unwrap(),
    );
    let f1 = cronjob_job_name("forbid", m1);
    let r1 = cronjob_job_name("replace", m1);
    let a1 = cronjob_job_name("allow", m1);
    until_jobs(&jobs, "forbid", &[f1.as_str()]).await;
    until_jobs(&jobs, "replace", &[r1.as_str()]).await;
    until_jobs(&jobs, "allow", &[a1.as_str()]).await;
    let j = jobs.get(&f1).await.unwrap();
    assert_eq!(
        j.metadata.annotations.as_ref().unwrap()[CRONJOB_SCHEDULED_TIMESTAMP],
        m1.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    );
    let cj = eventually(30, "forbid status", || async {
        let cj = cjs.get("forbid").await.ok()?;
        let st = cj.status.clone()?;
        (st.active.as_ref().map(Vec::len) == Some(1)).then_some(st)
    })
    .await;
    assert_eq!(cj.last_schedule_time.map(|t| t.0), Some(m1));

    // The next minute, with every Job still running.
    let m2 = Timestamp::from_second(m1.as_second() + 60).unwrap();
    clock.set(
        m2.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1))
            .unwrap(),
    );
    let r2 = cronjob_job_name("replace", m2);
    let a2 = cronjob_job_name("allow", m2);
    until_jobs(&jobs, "replace", &[r2.as_str()]).await;
    until_jobs(&jobs, "allow", &[a1.as_str(), a2.as_str()]).await;
    let msg = has_event(&c, "forbid", "JobAlreadyActive").await;
    assert_eq!(
        msg,
        "Not starting job because prior execution is running and concurrency policy is Forbid"
    );
    assert_eq!(jobs_of(&jobs, "forbid").await, [f1.as_str()]);
    assert_eq!(
        has_event(&c, "replace", "SuccessfulDelete").await,
        format!("Deleted job {r1}")
    );

    // Once its Job finished, Forbid runs the start time it skipped (still the most recent
    // one), as upstream; lastSuccessfulTime follows the completed Job.
    complete(&jobs, &f1).await;
    let f2 = cronjob_job_name("forbid", m2);
    until_jobs(&jobs, "forbid", &[f1.as_str(), f2.as_str()]).await;
    eventually(30, "forbid saw the completed job", || async {
        let st = cjs.get("forbid").await.ok()?.status?;
        st.last_successful_time.is_some().then_some(())
    })
    .await;
    has_event(&c, "forbid", "SawCompletedJob").await;
    let m3 = Timestamp::from_second(m2.as_second() + 60).unwrap();
    clock.set(
        m3.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1))
            .unwrap(),
    );

    // History: Allow keeps one successful Job.
    let a3 = cronjob_job_name("allow", m3);
    until_jobs(&jobs, "allow", &[a1.as_str(), a2.as_str(), a3.as_str()]).await;
    for n in [&a1, &a2, &a3] {
        complete(&jobs, n).await;
    }
    until_jobs(&jobs, "allow", &[a3.as_str()]).await;

    // Down for three hours: one catch-up run for the latest start time, and a warning.
    let late = Timestamp::from_second(m3.as_second() + 3 * 3600).unwrap();
    clock.set(
        late.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(5))
            .unwrap(),
    );
    let a_late = cronjob_job_name("allow", late);
    until_jobs(&jobs, "allow", &[a3.as_str(), a_late.as_str()]).await;
    let msg = has_event(&c, "allow", "TooManyMissedTimes").await;
    assert_eq!(
        msg,
        "too many missed start times: 180. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        jobs_of(&jobs, "allow").await.len(),
        2,
        "only one catch-up run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_cronjobs_do_not_run() {
    let clock = Clock::manual(Timestamp::now());
    let c = cluster(&clock).await;
    let cjs: Api<CronJob> = Api::namespaced(c.client.clone(), &c.namespace);
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), &c.namespace);
    let mut cj = cronjob("paused", "Allow", 3);
    cj.spec.suspend = Some(true);
    cjs.create(&PostParams::default(), &cj)
        .await
        .expect("create");
    clock.advance(Duration::from_secs(600));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(jobs_of(&jobs, "paused").await.is_empty());
    cjs.patch(
        "paused",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"suspend": false}})),
    )
    .await
    .expect("resume");
    // Resumed: the most recent missed start time runs once.
    let now = clock.now();
    let last = Timestamp::from_second(now.as_second() / 60 * 60).unwrap();
    until_jobs(
        &jobs,
        "paused",
        &[cronjob_job_name("paused", last).as_str()],
    )
    .await;
}
