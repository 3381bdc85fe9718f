//! DefaultPreemption: victim selection, PDBs, nominations.

mod common;

use common::*;
use kcore_scheduler::*;
use serde_json::json;

fn prio(p: serde_json::Value, n: i32) -> serde_json::Value {
    set(p, "spec.priority", json!(n))
}

fn pdb(name: &str, app: &str, allowed: i32) -> k8s_openapi::api::policy::v1::PodDisruptionBudget {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": app}}, "maxUnavailable": 1},
        "status": {"disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}
    }))
    .unwrap()
}

fn unschedulable(o: Outcome) -> FitError {
    match o {
        Outcome::Unschedulable(e) => *e,
        other => panic!("expected unschedulable, got {other:?}"),
    }
}

#[test]
fn preempts_the_node_with_the_least_important_victims() {
    let nodes = [node("n1", "1", "4Gi", &[]), node("n2", "1", "4Gi", &[])];
    let assigned = [
        ("n1", prio(pod("low", "1", ""), 1)),
        ("n2", prio(pod("mid", "1", ""), 5)),
    ];
    let mut s = snapshot(&nodes, &assigned);
    let mut sched = Scheduler::new(Framework::with_defaults());
    let high = s
        .compile_pod(&to_pod(&prio(pod("high", "1", ""), 10)))
        .unwrap();
    let e = unschedulable(sched.schedule_one(&mut s, high));
    let p = e.preemption.as_ref().expect("preemption nominated a node");
    assert_eq!(p.node_name, "n1");
    assert_eq!(p.victims, vec!["default/low".to_string()]);
    assert!(
        e.to_string()
            .starts_with("0/2 nodes are available: 2 Insufficient cpu."),
        "{e}"
    );
}

#[test]
fn pdb_violations_weigh_more_than_priority() {
    let nodes = [node("n1", "1", "4Gi", &[]), node("n2", "1", "4Gi", &[])];
    let assigned = [
        (
            "n1",
            labeled(prio(pod("low", "1", ""), 1), &[("app", "guarded")]),
        ),
        ("n2", prio(pod("mid", "1", ""), 5)),
    ];
    let mut s = snapshot(&nodes, &assigned);
    s.upsert_pdb(&pdb("guard", "guarded", 0)).unwrap();
    let mut sched = Scheduler::new(Framework::with_defaults());
    let high = s
        .compile_pod(&to_pod(&prio(pod("high", "1", ""), 10)))
        .unwrap();
    let e = unschedulable(sched.schedule_one(&mut s, high));
    let p = e.preemption.expect("nominated");
    assert_eq!(p.node_name, "n2");
    assert_eq!(p.victims, vec!["default/mid".to_string()]);
    // With an allowance the PDB no longer protects the low pod.
    let mut s = snapshot(&nodes, &assigned);
    s.upsert_pdb(&pdb("guard", "guarded", 1)).unwrap();
    let high = s
        .compile_pod(&to_pod(&prio(pod("high", "1", ""), 10)))
        .unwrap();
    let e = unschedulable(sched.schedule_one(&mut s, high));
    assert_eq!(e.preemption.expect("nominated").node_name, "n1");
}

#[test]
fn reprieves_victims_that_need_not_go() {
    let nodes = [node("n1", "1", "4Gi", &[])];
    let mut older = prio(pod("older", "500m", ""), 1);
    older["status"] = json!({"startTime": "2024-01-01T00:00:00Z"});
    let mut newer = prio(pod("newer", "500m", ""), 1);
    newer["status"] = json!({"startTime": "2024-06-01T00:00:00Z"});
    let assigned = [("n1", older), ("n1", newer)];
    let mut s = snapshot(&nodes, &assigned);
    let mut sched = Scheduler::new(Framework::with_defaults());
    let high = s
        .compile_pod(&to_pod(&prio(pod("high", "500m", ""), 10)))
        .unwrap();
    let e = unschedulable(sched.schedule_one(&mut s, high));
    let p = e.preemption.expect("nominated");
    // The more important (earlier-started) pod is reprieved first.
    assert_eq!(p.victims, vec!["default/newer".to_string()]);
}

#[test]
fn no_preemption_without_lower_priority_pods_or_when_policy_is_never() {
    let nodes = [node("n1", "1", "4Gi", &[])];
    let assigned = [("n1", prio(pod("same", "1", ""), 10))];
    let mut s = snapshot(&nodes, &assigned);
    let mut sched = Scheduler::new(Framework::with_defaults());
    let p = s
        .compile_pod(&to_pod(&prio(pod("p", "1", ""), 10)))
        .unwrap();
    let e = unschedulable(sched.schedule_one(&mut s, p));
    assert!(e.preemption.is_none());
    assert!(
        e.to_string().contains(
            "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
        ),
        "{e}"
    );

    let mut s = snapshot(&nodes, &[("n1", prio(pod("low", "1", ""), 1))]);
    let never = set(
        prio(pod("p", "1", ""), 10),
        "spec.preemptionPolicy",
        json!("Never"),
    );
    let p = s.compile_pod(&to_pod(&never)).unwrap();
    assert!(unschedulable(sched.schedule_one(&mut s, p))
        .preemption
        .is_none());
}

#[test]
fn unresolvable_nodes_are_not_candidates() {
    let nodes = [
        node("n1", "1", "4Gi", &[("zone", "a")]),
        node("n2", "1", "4Gi", &[("zone", "b")]),
    ];
    let assigned = [
        ("n1", prio(pod("low1", "1", ""), 1)),
        ("n2", prio(pod("low2", "1", ""), 1)),
    ];
    let mut s = snapshot(&nodes, &assigned);
    let mut sched = Scheduler::new(Framework::with_defaults());
    let p = set(
        prio(pod("high", "1", ""), 10),
        "spec.nodeSelector",
        json!({"zone": "b"}),
    );
    let p = s.compile_pod(&to_pod(&p)).unwrap();
    let e = unschedulable(sched.schedule_one(&mut s, p));
    assert_eq!(e.preemption.expect("nominated").node_name, "n2");
}

#[test]
fn nominated_pod_reserves_room_against_lower_priority_pods() {
    let nodes = [node("n1", "1", "4Gi", &[])];
    let mut s = snapshot(&nodes, &[("n1", prio(pod("low", "1", ""), 1))]);
    let mut sched = Scheduler::new(Framework::with_defaults());
    let high = s
        .compile_pod(&to_pod(&prio(pod("high", "1", ""), 10)))
        .unwrap();
    let e = unschedulable(sched.schedule_one(&mut s, high));
    let p = e.preemption.expect("nominated");
    // The caller evicts the victims.
    for v in &p.victims {
        s.remove_pod(v).expect("victim in snapshot");
    }
    // A lower-priority pod must not take the room the nominee is waiting for.
    let mid = s
        .compile_pod(&to_pod(&prio(pod("mid", "1", ""), 5)))
        .unwrap();
    let e = unschedulable(sched.schedule_one(&mut s, mid));
    assert!(e.to_string().contains("Insufficient cpu"), "{e}");
    // The nominee itself fits on its nominated node.
    let mut high = prio(pod("high", "1", ""), 10);
    high["status"] = json!({"nominatedNodeName": "n1"});
    let high = s.compile_pod(&to_pod(&high)).unwrap();
    match sched.schedule_one(&mut s, high) {
        Outcome::Assumed { result, .. } => assert_eq!(result.node_name, "n1"),
        other => panic!("{other:?}"),
    }
}
