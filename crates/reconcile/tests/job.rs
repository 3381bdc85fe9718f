//! The Job and TTL-after-finished controllers against an in-process kcore-apiserver, with
//! the test acting as the node (it ends each pod as the case wants), plus kubectl's
//! batch commands (`create job`, `create cronjob`, `create job --from`, `get jobs`,
//! `wait --for=condition=complete`, `logs job/x`).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::kubectl::{kubectl, must};
use common::{eventually, start_with, Cluster, Kubelet};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kcore_reconcile::{
    pod_index, BatchConfig, ControllerManagerConfig, JOB_COMPLETION_INDEX_ENV,
    JOB_TRACKING_FINALIZER,
};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};

/// How the test node ends a pod: `Some((phase, exit code))`, or `None` to leave it running.
type Outcome = Arc<dyn Fn(&Pod) -> Option<(&'static str, i32)> + Send + Sync>;

/// Acts as the node for the pods of `ns`: each pod not yet finished is ended as `outcome`
/// says. Returns the names of every pod seen.
fn node(client: Client, ns: &str, outcome: Outcome) -> Arc<Mutex<Vec<Pod>>> {
    let seen: Arc<Mutex<Vec<Pod>>> = Arc::default();
    let out = Arc::clone(&seen);
    let api: Api<Pod> = Api::namespaced(client, ns);
    tokio::spawn(async move {
        let stream = common::watch_events(api.clone());
        futures::pin_mut!(stream);
        let mut done: HashSet<String> = HashSet::new();
        while let Some(ev) = stream.next().await {
            let p = match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => p,
                _ => continue,
            };
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let phase = p.status.as_ref().and_then(|s| s.phase.clone());
            if matches!(phase.as_deref(), Some("Succeeded" | "Failed"))
                || p.metadata.deletion_timestamp.is_some()
                || done.contains(&uid)
            {
                continue;
            }
            {
                let mut s = out.lock().unwrap();
                if !s.iter().any(|q| q.metadata.uid == p.metadata.uid) {
                    s.push(p.clone());
                }
            }
            let Some((phase, code)) = outcome(&p) else {
                continue;
            };
            done.insert(uid);
            let name = p.metadata.name.clone().unwrap_or_default();
            let now = Timestamp::now().to_string();
            let patch = json!({"status": {"phase": phase, "containerStatuses": [{
                "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                    "startedAt": now, "finishedAt": now}}}]}});
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    });
    seen
}

async fn cluster() -> Cluster {
    let cfg = ControllerManagerConfig {
        workers: 3,
        controllers: ["job", "ttl-after-finished", "garbagecollector"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        batch: BatchConfig {
            pod_failure_backoff: Duration::from_millis(50),
            ..BatchConfig::default()
        },
        ..ControllerManagerConfig::default()
    };
    start_with(Kubelet::None, cfg).await
}

fn job_body(name: &str, spec: Value) -> Job {
    let mut spec = spec;
    spec["template"] = json!({"spec": {"restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox:1.36"}]}});
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("job")
}

async fn create(c: &Cluster, job: &Job) -> Api<Job> {
    let api: Api<Job> = Api::namespaced(c.client.clone(), &c.namespace);
    api.create(&PostParams::default(), job)
        .await
        .expect("create job");
    api
}

fn condition(j: &Job, t: &str) -> Option<(String, String)> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

async fn until_condition(api: &Api<Job>, name: &str, t: &str) -> Job {
    eventually(60, &format!("job {name} {t}"), || async {
        let j = api.get(name).await.ok()?;
        condition(&j, t).map(|_| j)
    })
    .await
}

/// The events about `name` (type, reason, message), once `want` holds of them.
async fn events_of(
    c: &Cluster,
    name: &str,
    want: impl Fn(&[(String, String, String)]) -> bool,
) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(c.client.clone(), &c.namespace);
    let mut last = Vec::new();
    for _ in 0..200 {
        last = api
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                )
            })
            .collect();
        if want(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("events of {name}: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_job_runs_each_index_once_with_bounded_parallelism() {
    let c = cluster().await;
    // Pods succeed one at a time, so the controller's parallelism shows.
    let seen = node(
        c.client.clone(),
        &c.namespace,
        Arc::new(|_p: &Pod| Some(("Succeeded", 0))),
    );
    let api = create(
        &c,
        &job_body(
            "idx",
            json!({"completionMode": "Indexed", "completions": 10, "parallelism": 3}),
        ),
    )
    .await;
    let j = until_condition(&api, "idx", "Complete").await;
    let st = j.status.clone().unwrap();
    assert_eq!(st.succeeded, Some(10));
    assert_eq!(st.completed_indexes.as_deref(), Some("0-9"));
    assert_eq!(st.active, Some(0));
    assert!(st.completion_time.is_some() && st.start_time.is_some());
    assert_eq!(
        condition(&j, "SuccessCriteriaMet").map(|c| c.0).as_deref(),
        Some("CompletionsReached")
    );
    assert_eq!(
        condition(&j, "Complete"),
        Some((
            "CompletionsReached".into(),
            "Reached expected number of succeeded pods".into()
        ))
    );
    let pods = seen.lock().unwrap().clone();
    let mut per_index: BTreeMap<i32, usize> = BTreeMap::new();
    for p in &pods {
        *per_index.entry(pod_index(p).expect("index")).or_default() += 1;
        let spec = p.spec.as_ref().unwrap();
        let i = pod_index(p).unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(format!("idx-{i}").as_str()));
        assert!(spec.containers[0]
            .env
            .iter()
            .flatten()
            .any(|e| e.name == JOB_COMPLETION_INDEX_ENV));
        assert!(p
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == JOB_TRACKING_FINALIZER));
    }
    assert_eq!(per_index.len(), 10, "{per_index:?}");
    assert!(per_index.values().all(|n| *n == 1), "{per_index:?}");
    // Every finished pod was let go: none keeps the tracking finalizer.
    let pods_api: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    eventually(30, "finalizers removed", || async {
        let l = pods_api.list(&ListParams::default()).await.ok()?;
        l.items
            .iter()
            .all(|p| p.metadata.finalizers.as_ref().is_none_or(Vec::is_empty))
            .then_some(())
    })
    .await;
    events_of(&c, "idx", |ev| {
        ev.iter()
            .any(|e| e.1 == "SuccessfulCreate" && e.2.starts_with("Created pod: idx-"))
            && ev
                .iter()
                .any(|e| e.1 == "Completed" && e.2 == "Job completed")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_stops_at_its_backoff_limit() {
    let c = cluster().await;
    let seen = node(
        c.client.clone(),
        &c.namespace,
        Arc::new(|_p: &Pod| Some(("Failed", 1))),
    );
    let api = create(&c, &job_body("fail", json!({"backoffLimit": 2}))).await;
    let j = until_condition(&api, "fail", "Failed").await;
    assert_eq!(
        condition(&j, "Failed"),
        Some((
            "BackoffLimitExceeded".into(),
            "Job has reached the specified backoff limit".into()
        ))
    );
    assert_eq!(
        condition(&j, "FailureTarget").map(|c| c.0).as_deref(),
        Some("BackoffLimitExceeded")
    );
    let st = j.status.unwrap();
    assert_eq!(st.failed, Some(3), "the first run and two retries");
    assert_eq!(st.succeeded.unwrap_or(0), 0);
    assert!(st.completion_time.is_none());
    assert_eq!(seen.lock().unwrap().len(), 3);
    events_of(&c, "fail", |ev| {
        ev.iter().any(|e| {
            e.0 == "Warning"
                && e.1 == "BackoffLimitExceeded"
                && e.2 == "Job has reached the specified backoff limit"
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_failure_policy_ignores_an_exit_code_and_fails_on_another() {
    let c = cluster().await;
    // The first pod of each job exits with the job's chosen code; later ones succeed.
    let firsts: Arc<Mutex<HashSet<String>>> = Arc::default();
    let f = Arc::clone(&firsts);
    node(
        c.client.clone(),
        &c.namespace,
        Arc::new(move |p: &Pod| {
            let job = p.metadata.labels.as_ref()?.get("job-name")?.clone();
            if f.lock().unwrap().insert(job.clone()) {
                Some(("Failed", if job == "ignore" { 42 } else { 3 }))
            } else {
                Some(("Succeeded", 0))
            }
        }),
    );
    let policy = json!({"rules": [
        {"action": "Ignore", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}},
    ]});
    let api = create(
        &c,
        &job_body(
            "ignore",
            json!({"backoffLimit": 0, "podFailurePolicy": policy}),
        ),
    )
    .await;
    create(
        &c,
        &job_body(
            "failjob",
            json!({"backoffLimit": 5, "podFailurePolicy": policy}),
        ),
    )
    .await;
    let j = until_condition(&api, "ignore", "Complete").await;
    let st = j.status.unwrap();
    assert_eq!(
        st.failed.unwrap_or(0),
        0,
        "the ignored failure is not counted"
    );
    assert_eq!(st.succeeded, Some(1));
    let f = until_condition(&api, "failjob", "Failed").await;
    let (reason, msg) = condition(&f, "Failed").unwrap();
    assert_eq!(reason, "PodFailurePolicy");
    assert!(
        msg.starts_with("Container main for pod ")
            && msg.ends_with(" failed with exit code 3 matching FailJob rule at index 1"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_deletes_pods_and_resume_restarts_them() {
    let c = cluster().await;
    node(c.client.clone(), &c.namespace, Arc::new(|_p: &Pod| None));
    let api = create(
        &c,
        &job_body("sus", json!({"parallelism": 2, "completions": 4})),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    let count = || async {
        pods.list(&ListParams::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(usize::MAX)
    };
    eventually(30, "two pods", || async {
        (count().await == 2).then_some(())
    })
    .await;
    api.patch(
        "sus",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"suspend": true}})),
    )
    .await
    .expect("suspend");
    let j = until_condition(&api, "sus", "Suspended").await;
    assert_eq!(
        condition(&j, "Suspended"),
        Some(("JobSuspended".into(), "Job suspended".into()))
    );
    eventually(30, "pods gone", || async {
        (count().await == 0).then_some(())
    })
    .await;
    let j = eventually(30, "active 0", || async {
        let j = api.get("sus").await.ok()?;
        (j.status.as_ref()?.active == Some(0)).then_some(j)
    })
    .await;
    assert!(condition(&j, "Failed").is_none());
    api.patch(
        "sus",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"suspend": false}})),
    )
    .await
    .expect("resume");
    eventually(30, "pods back", || async {
        (count().await == 2).then_some(())
    })
    .await;
    // the pods may come before the status that says why: wait for the condition
    eventually(30, "Suspended=False JobResumed", || async {
        let j = api.get("sus").await.ok()?;
        let s = j
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Suspended")?;
        (s.status == "False" && s.reason.as_deref() == Some("JobResumed")).then_some(())
    })
    .await;
    events_of(&c, "sus", |ev| {
        ev.iter().any(|e| e.1 == "Suspended") && ev.iter().any(|e| e.1 == "Resumed")
    })
    .await;
    // Deleted in the background with its pods still running: the controller lets go of
    // their tracking finalizers, so the garbage collector's deletions complete.
    api.delete("sus", &kube::api::DeleteParams::background())
        .await
        .expect("delete job");
    eventually(30, "running pods of a deleted job gone", || async {
        (count().await == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_fails_the_job_and_ttl_deletes_finished_jobs() {
    let c = cluster().await;
    node(
        c.client.clone(),
        &c.namespace,
        Arc::new(|p: &Pod| {
            let job = p.metadata.labels.as_ref()?.get("job-name")?;
            (job == "quick").then_some(("Succeeded", 0))
        }),
    );
    let api = create(&c, &job_body("slow", json!({"activeDeadlineSeconds": 1}))).await;
    create(
        &c,
        &job_body("quick", json!({"ttlSecondsAfterFinished": 0})),
    )
    .await;
    let j = until_condition(&api, "slow", "Failed").await;
    assert_eq!(
        condition(&j, "Failed"),
        Some((
            "DeadlineExceeded".into(),
            "Job was active longer than specified deadline".into()
        ))
    );
    assert_eq!(j.status.unwrap().active, Some(0));
    eventually(30, "the finished job deleted by its TTL", || async {
        api.get_opt("quick").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_lists_waits_and_resolves_logs() {
    let c = cluster().await;
    node(
        c.client.clone(),
        &c.namespace,
        Arc::new(|_p: &Pod| Some(("Succeeded", 0))),
    );
    must(
        kubectl(
            &c,
            &[
                "create",
                "job",
                "hello",
                "--image=busybox:1.36",
                "--",
                "echo",
                "hi",
            ],
            None,
        )
        .await,
        "create job",
    );
    must(
        kubectl(
            &c,
            &[
                "create",
                "cronjob",
                "tick",
                "--image=busybox:1.36",
                "--schedule=*/5 * * * *",
                "--",
                "date",
            ],
            None,
        )
        .await,
        "create cronjob",
    );
    must(
        kubectl(
            &c,
            &["create", "job", "manual", "--from=cronjob/tick"],
            None,
        )
        .await,
        "create job --from",
    );
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), &c.namespace);
    let manual = jobs.get("manual").await.expect("manual job");
    assert_eq!(
        manual.metadata.annotations.as_ref().unwrap()["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(
        manual.metadata.owner_references.as_ref().unwrap()[0].kind,
        "CronJob"
    );
    must(
        kubectl(
            &c,
            &[
                "wait",
                "--for=condition=complete",
                "job/hello",
                "--timeout=60s",
            ],
            None,
        )
        .await,
        "wait for complete",
    );
    let out = must(kubectl(&c, &["get", "jobs"], None).await, "get jobs");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        "{out}"
    );
    let hello = out
        .lines()
        .find(|l| l.starts_with("hello "))
        .expect("hello row");
    let cells: Vec<&str> = hello.split_whitespace().collect();
    assert_eq!(&cells[1..3], ["Complete", "1/1"], "{out}");
    let out = must(kubectl(&c, &["get", "cj"], None).await, "get cj");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"],
        "{out}"
    );
    let all = must(kubectl(&c, &["get", "all"], None).await, "get all");
    assert!(
        all.contains("job.batch/hello") && all.contains("cronjob.batch/tick"),
        "{all}"
    );
    // `kubectl logs job/x` picks the job's pod; with no node serving logs the request
    // reaches the pod's log subresource, which names the pod.
    let logs = kubectl(&c, &["logs", "job/hello"], None).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    let pod = pods
        .list(&ListParams::default().labels("job-name=hello"))
        .await
        .unwrap()
        .items
        .remove(0);
    let name = pod.metadata.name.unwrap();
    assert!(
        logs.ok || logs.stderr.contains(&name),
        "logs job/hello: {}{}",
        logs.stdout,
        logs.stderr
    );
    // Deleting the Job in the background takes its pods along: the controller lets go
    // of the tracking finalizers of a Job that is gone.
    must(
        kubectl(
            &c,
            &["delete", "job", "hello", "--cascade=background"],
            None,
        )
        .await,
        "delete job",
    );
    eventually(30, "the job's pods gone", || async {
        let l = pods
            .list(&ListParams::default().labels("job-name=hello"))
            .await
            .ok()?;
        l.items.is_empty().then_some(())
    })
    .await;
}

/// The official Python client creates an Indexed Job with `BatchV1Api`, polls its status
/// until Complete (this test is the node: every pod exits 0) and reads the counts, the
/// completed indexes and the conditions (`tests/python/job_client.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_runs_a_job_and_reads_its_status() {
    let py = tokio::task::spawn_blocking(|| {
        kcore_tests::python::python_with_client(env!("CARGO_TARGET_TMPDIR"))
    })
    .await
    .expect("join");
    let c = cluster().await;
    let _node = node(
        c.client.clone(),
        &c.namespace,
        Arc::new(|_p: &Pod| Some(("Succeeded", 0))),
    );
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/job_client.py");
    let (kubeconfig, ns) = (c.kubeconfig.clone(), c.namespace.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(py)
            .arg(script)
            .arg(kubeconfig)
            .arg(ns)
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("python job: ok"), "{stdout}");
}
