//! The Deployment controller (with the ReplicaSet controller) on kcore's test fixture:
//! the real API server and scheduler, with simulated nodes.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, eventually_or, simulated, workload, Cluster};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kcore_reconcile::{pod_is_ready, POD_TEMPLATE_HASH, REVISION};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

fn apis(c: &Cluster) -> (Api<Deployment>, Api<ReplicaSet>, Api<Pod>) {
    (
        Api::namespaced(c.client.clone(), &c.namespace),
        Api::namespaced(c.client.clone(), &c.namespace),
        Api::namespaced(c.client.clone(), &c.namespace),
    )
}

/// Waits until the rollout is complete the way `kubectl rollout status` decides.
async fn rolled_out(deps: &Api<Deployment>, name: &str, replicas: i32) -> Deployment {
    eventually(60, "rollout complete", || async {
        let d = deps.get(name).await.ok()?;
        let s = d.status.clone()?;
        let done = s.observed_generation >= d.metadata.generation
            && s.updated_replicas == Some(replicas)
            && s.replicas == Some(replicas)
            && s.available_replicas == Some(replicas);
        let progressing = s.conditions.iter().flatten().any(|c| {
            c.type_.as_deref() == Some("Progressing")
                && c.reason.as_deref() == Some("NewReplicaSetAvailable")
        });
        (done && progressing).then_some(d)
    })
    .await
}

async fn replicasets(rss: &Api<ReplicaSet>) -> Vec<ReplicaSet> {
    let mut v = rss
        .list(&ListParams::default())
        .await
        .expect("list rs")
        .items;
    v.sort_by_key(|r| {
        r.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .cloned()
    });
    v
}

fn revision(r: &ReplicaSet) -> &str {
    r.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .map_or("", String::as_str)
}

fn image(r: &ReplicaSet) -> &str {
    r.spec
        .template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| s.containers[0].image.as_deref())
        .unwrap_or("")
}

async fn set_image(deps: &Api<Deployment>, name: &str, image: &str) {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
    deps.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("set image");
}

/// Tracks the live pods (not terminating) and how many of them are ready, from a watch,
/// recording the extremes seen at any event.
#[derive(Default)]
struct Extremes {
    pods: HashMap<String, bool>,
    max_pods: usize,
    min_ready: Option<usize>,
    images: HashMap<String, String>,
    mixed: bool,
}

fn track(
    pods: Api<Pod>,
    armed: Arc<Mutex<bool>>,
) -> (Arc<Mutex<Extremes>>, tokio::task::JoinHandle<()>) {
    let ext = Arc::new(Mutex::new(Extremes::default()));
    let e2 = Arc::clone(&ext);
    let h = tokio::spawn(async move {
        let stream = common::watch_events(pods);
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let mut e = e2.lock().unwrap();
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    if p.metadata.deletion_timestamp.is_some() {
                        e.pods.remove(&name);
                        e.images.remove(&name);
                    } else {
                        e.pods.insert(name.clone(), pod_is_ready(&p));
                        let img = p
                            .spec
                            .as_ref()
                            .and_then(|s| s.containers[0].image.clone())
                            .unwrap_or_default();
                        e.images.insert(name, img);
                    }
                }
                watcher::Event::Delete(p) => {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    e.pods.remove(&name);
                    e.images.remove(&name);
                }
                _ => continue,
            }
            if *armed.lock().unwrap() {
                let n = e.pods.len();
                let ready = e.pods.values().filter(|r| **r).count();
                e.max_pods = e.max_pods.max(n);
                e.min_ready = Some(e.min_ready.map_or(ready, |m| m.min(ready)));
                let mut distinct: Vec<&String> = e.images.values().collect();
                distinct.sort();
                distinct.dedup();
                if distinct.len() > 1 {
                    e.mixed = true;
                }
            }
        }
    });
    (ext, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_stays_within_surge_and_availability() {
    let c = simulated(1, Duration::from_millis(30), &["deployment", "replicaset"]).await;
    let (deps, rss, pods) = apis(&c);
    let mut body = workload("Deployment", "web", 6, "nginx:1");
    body["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 1}});
    let d: Deployment = serde_json::from_value(body).unwrap();
    deps.create(&PostParams::default(), &d)
        .await
        .expect("create");
    let d = rolled_out(&deps, "web", 6).await;
    assert_eq!(d.metadata.annotations.as_ref().unwrap()[REVISION], "1");
    let first = replicasets(&rss).await;
    assert_eq!(first.len(), 1);
    let hash = first[0].metadata.labels.as_ref().unwrap()[POD_TEMPLATE_HASH].clone();
    assert_eq!(
        first[0].metadata.name.as_deref().unwrap(),
        format!("web-{hash}")
    );
    assert_eq!(
        first[0].spec.selector.match_labels.as_ref().unwrap()[POD_TEMPLATE_HASH],
        hash
    );

    let armed = Arc::new(Mutex::new(false));
    let (ext, watch) = track(pods.clone(), Arc::clone(&armed));
    // Arm only once the tracker's own watch shows all six pods ready: before that its
    // view lags the Deployment status and would report a drop that never happened.
    eventually(30, "tracker synced", || async {
        let e = ext.lock().unwrap();
        (e.pods.len() == 6 && e.pods.values().all(|r| *r)).then_some(())
    })
    .await;
    *armed.lock().unwrap() = true;

    set_image(&deps, "web", "nginx:2").await;
    let d = rolled_out(&deps, "web", 6).await;
    watch.abort();
    {
        let e = ext.lock().unwrap();
        assert!(e.max_pods <= 6 + 2, "surge exceeded: {} pods", e.max_pods);
        let min_ready = e.min_ready.expect("events seen");
        assert!(min_ready >= 6 - 1, "availability dropped to {min_ready}");
    }
    assert_eq!(d.metadata.annotations.as_ref().unwrap()[REVISION], "2");

    let all = replicasets(&rss).await;
    assert_eq!(all.len(), 2);
    assert_eq!(
        (revision(&all[0]), image(&all[0]), all[0].spec.replicas),
        ("1", "nginx:1", Some(0))
    );
    assert_eq!(
        (revision(&all[1]), image(&all[1]), all[1].spec.replicas),
        ("2", "nginx:2", Some(6))
    );
    let live: Vec<Pod> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(live.len(), 6);
    let new_hash = &all[1].metadata.labels.as_ref().unwrap()[POD_TEMPLATE_HASH];
    assert!(live
        .iter()
        .all(|p| &p.metadata.labels.as_ref().unwrap()[POD_TEMPLATE_HASH] == new_hash));
    let s = d.status.unwrap();
    assert_eq!(
        (s.ready_replicas, s.unavailable_replicas),
        (Some(6), Some(0))
    );
    let avail = s
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_.as_deref() == Some("Available"))
        .unwrap();
    assert_eq!(avail.status.as_deref(), Some("True"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_never_mixes_versions() {
    let c = simulated(1, Duration::from_millis(20), &["deployment", "replicaset"]).await;
    let (deps, _rss, pods) = apis(&c);
    let mut body = workload("Deployment", "db", 3, "pg:1");
    body["spec"]["strategy"] = json!({"type": "Recreate"});
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .expect("create");
    rolled_out(&deps, "db", 3).await;
    let armed = Arc::new(Mutex::new(false));
    let (ext, watch) = track(pods.clone(), Arc::clone(&armed));
    eventually(30, "tracker synced", || async {
        (ext.lock().unwrap().pods.len() == 3).then_some(())
    })
    .await;
    *armed.lock().unwrap() = true;
    set_image(&deps, "db", "pg:2").await;
    rolled_out(&deps, "db", 3).await;
    eventually(30, "new pods seen", || async {
        let e = ext.lock().unwrap();
        (e.images.len() == 3 && e.images.values().all(|i| i == "pg:2")).then_some(())
    })
    .await;
    watch.abort();
    let e = ext.lock().unwrap();
    assert!(!e.mixed, "old and new pods ran together");
    assert!(e.max_pods <= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_reuses_the_old_replicaset_with_a_new_revision() {
    let c = simulated(1, Duration::ZERO, &["deployment", "replicaset"]).await;
    let (deps, rss, _pods) = apis(&c);
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(workload("Deployment", "app", 2, "v1")).unwrap(),
    )
    .await
    .expect("create");
    rolled_out(&deps, "app", 2).await;
    set_image(&deps, "app", "v2").await;
    rolled_out(&deps, "app", 2).await;
    // Back to v1, as `kubectl rollout undo` does: the template of revision 1.
    set_image(&deps, "app", "v1").await;
    let d = rolled_out(&deps, "app", 2).await;
    assert_eq!(d.metadata.annotations.as_ref().unwrap()[REVISION], "3");
    let all = replicasets(&rss).await;
    assert_eq!(all.len(), 2, "no third ReplicaSet: the v1 one is reused");
    assert_eq!(
        (revision(&all[0]), image(&all[0]), all[0].spec.replicas),
        ("2", "v2", Some(0))
    );
    assert_eq!(
        (revision(&all[1]), image(&all[1]), all[1].spec.replicas),
        ("3", "v1", Some(2))
    );
    let hist = all[1]
        .metadata
        .annotations
        .as_ref()
        .unwrap()
        .get(kcore_reconcile::REVISION_HISTORY);
    assert_eq!(hist.map(String::as_str), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_the_rollout_and_resume_continues() {
    let c = simulated(1, Duration::ZERO, &["deployment", "replicaset"]).await;
    let (deps, rss, _pods) = apis(&c);
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(workload("Deployment", "p", 2, "v1")).unwrap(),
    )
    .await
    .expect("create");
    rolled_out(&deps, "p", 2).await;
    deps.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": true}})),
    )
    .await
    .unwrap();
    set_image(&deps, "p", "v2").await;
    // Scaling still works while paused.
    deps.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    let d = eventually(30, "paused condition and scale", || async {
        let d = deps.get("p").await.ok()?;
        let s = d.status.clone()?;
        let paused = s
            .conditions
            .iter()
            .flatten()
            .any(|c| c.reason.as_deref() == Some("DeploymentPaused"));
        (paused
            && s.observed_generation >= d.metadata.generation
            && s.available_replicas == Some(3))
        .then_some(d)
    })
    .await;
    assert_eq!(replicasets(&rss).await.len(), 1, "no rollout while paused");
    assert_eq!(d.metadata.annotations.as_ref().unwrap()[REVISION], "1");
    deps.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": false}})),
    )
    .await
    .unwrap();
    let d = rolled_out(&deps, "p", 3).await;
    assert_eq!(d.metadata.annotations.as_ref().unwrap()[REVISION], "2");
    let all = replicasets(&rss).await;
    assert_eq!(image(&all[1]), "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_history_limit_deletes_oldest_replicasets() {
    let c = simulated(1, Duration::ZERO, &["deployment", "replicaset"]).await;
    let (deps, rss, _pods) = apis(&c);
    let mut body = workload("Deployment", "h", 1, "v1");
    body["spec"]["revisionHistoryLimit"] = json!(1);
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .expect("create");
    rolled_out(&deps, "h", 1).await;
    for v in ["v2", "v3", "v4"] {
        set_image(&deps, "h", v).await;
        rolled_out(&deps, "h", 1).await;
    }
    let all = eventually(30, "history trimmed", || async {
        let all = replicasets(&rss).await;
        (all.len() == 2).then_some(all)
    })
    .await;
    assert_eq!((revision(&all[0]), image(&all[0])), ("3", "v3"));
    assert_eq!((revision(&all[1]), image(&all[1])), ("4", "v4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_mid_rollout_is_proportional() {
    // Pods never become ready, so the rollout stalls with both ReplicaSets active.
    let c = simulated(0, Duration::ZERO, &["deployment", "replicaset"]).await;
    let (deps, rss, _pods) = apis(&c);
    let mut body = workload("Deployment", "s", 10, "v1");
    body["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 0}});
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .expect("create");
    eventually(30, "first rs at 10", || async {
        let all = replicasets(&rss).await;
        (all.len() == 1 && all[0].spec.replicas == Some(10)).then_some(())
    })
    .await;
    set_image(&deps, "s", "v2").await;
    let seen = Mutex::new(String::new());
    eventually_or(
        30,
        "rollout stalled with two active replicasets",
        || async {
            let all = replicasets(&rss).await;
            *seen.lock().unwrap() = format!(
                "{:?}",
                all.iter()
                    .map(|r| (
                        r.metadata.name.clone(),
                        r.spec.replicas,
                        r.metadata.annotations.clone()
                    ))
                    .collect::<Vec<_>>()
            );
            (all.len() == 2
                && all
                    .iter()
                    .map(|r| r.spec.replicas.unwrap_or(0))
                    .sum::<i32>()
                    == 13)
                .then_some(())
        },
        || seen.lock().unwrap().clone(),
    )
    .await;
    deps.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 20}})),
    )
    .await
    .unwrap();
    let all = eventually(30, "proportional scale to 20 + 3 surge", || async {
        let all = replicasets(&rss).await;
        let total: i32 = all.iter().map(|r| r.spec.replicas.unwrap_or(0)).sum();
        (total == 23).then_some(all)
    })
    .await;
    // 10 old + 3 new of 13 grow by the same factor 23/13: 18 + 5.
    let sizes: Vec<Option<i32>> = all.iter().map(|r| r.spec.replicas).collect();
    assert_eq!(sizes, vec![Some(18), Some(5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_rollout_reports_progress_deadline_exceeded() {
    // No kubelet: pods never become ready, so the rollout cannot progress.
    let c = simulated(0, Duration::ZERO, &["deployment", "replicaset"]).await;
    let (deps, _rss, _pods) = apis(&c);
    let mut body = workload("Deployment", "stuck", 2, "v1");
    body["spec"]["progressDeadlineSeconds"] = json!(1);
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .expect("create");
    let d = eventually(30, "ProgressDeadlineExceeded", || async {
        let d = deps.get("stuck").await.ok()?;
        let c = d
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_.as_deref() == Some("Progressing"))?
            .clone();
        (c.reason.as_deref() == Some("ProgressDeadlineExceeded")).then_some(d)
    })
    .await;
    let s = d.status.unwrap();
    let avail = s
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_.as_deref() == Some("Available"))
        .unwrap();
    assert_eq!(avail.status.as_deref(), Some("False"));
    assert_eq!(s.unavailable_replicas, Some(2));
}
