//! The snapshot's incremental updates and the scheduling algorithm end to end.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use kcore_scheduler::*;
use serde_json::json;

#[test]
fn snapshot_updates_are_incremental() {
    let mut s = snapshot(&[node("n1", "4", "8Gi", &[])], &[]);
    let id = s.node_id("n1").unwrap();
    let p1 = set(pod("p1", "500m", "1Gi"), "spec.nodeName", json!("n1"));
    let p2 = set(pod("p2", "250m", ""), "spec.nodeName", json!("n1"));
    s.upsert_pod(&to_pod(&p1)).unwrap();
    s.upsert_pod(&to_pod(&p2)).unwrap();
    assert_eq!(s.node(id).requested().milli_cpu, 750);
    assert_eq!(s.node(id).requested().memory, 1 << 30);
    assert_eq!(s.node(id).pods().len(), 2);
    // Updating a pod replaces its accounting.
    let p1b = set(pod("p1", "1", "1Gi"), "spec.nodeName", json!("n1"));
    s.upsert_pod(&to_pod(&p1b)).unwrap();
    assert_eq!(s.node(id).requested().milli_cpu, 1250);
    // Updating the node keeps its pods.
    let n1 = labeled(node("n1", "8", "8Gi", &[]), &[("zone", "a")]);
    assert_eq!(s.upsert_node(&to_node(&n1)).unwrap(), id);
    assert_eq!(s.node(id).allocatable().milli_cpu, 8000);
    assert_eq!(s.node(id).requested().milli_cpu, 1250);
    // A finished pod frees its resources.
    let done = set(p2.clone(), "status", json!({"phase": "Succeeded"}));
    assert_eq!(s.upsert_pod(&to_pod(&done)).unwrap(), None);
    assert_eq!(s.node(id).requested().milli_cpu, 1000);
    assert!(s.remove_pod("default/p1").is_some());
    assert_eq!(s.node(id).requested().milli_cpu, 0);
    assert!(s.node(id).pods().is_empty());
    // Unscheduled pods are not held.
    assert_eq!(
        s.upsert_pod(&to_pod(&pod("pending", "1", ""))).unwrap(),
        None
    );
    assert_eq!(s.num_pods(), 0);
}

#[test]
fn pods_seen_before_their_node_attach_when_it_arrives() {
    let mut s = Snapshot::new();
    let p = set(pod("early", "1", ""), "spec.nodeName", json!("late"));
    s.upsert_pod(&to_pod(&p)).unwrap();
    assert_eq!(s.num_pods(), 1);
    let id = s
        .upsert_node(&to_node(&node("late", "4", "4Gi", &[])))
        .unwrap();
    assert_eq!(s.node(id).requested().milli_cpu, 1000);
    // Removing the node drops its pods, and the slot is reused.
    assert!(s.remove_node("late"));
    assert_eq!(s.num_pods(), 0);
    assert_eq!(s.num_nodes(), 0);
    let id2 = s
        .upsert_node(&to_node(&node("other", "4", "4Gi", &[])))
        .unwrap();
    assert_eq!(id2, id);
    assert_eq!(s.node(id2).requested().milli_cpu, 0);
}

#[test]
fn percentage_of_nodes_to_score_matches_upstream() {
    let fw = Framework::with_defaults();
    let cases = [
        (50, 50),
        (100, 100),
        (1000, 420),
        (5000, 500),
        (6000, 300),
        (100_000, 5000),
    ];
    for (n, want) in cases {
        assert_eq!(fw.num_feasible_nodes_to_find(n), want, "{n} nodes");
    }
    let fw = Framework::default_builder("x", &DefaultPluginsConfig::default())
        .percentage_of_nodes_to_score(100)
        .build()
        .unwrap();
    assert_eq!(fw.num_feasible_nodes_to_find(5000), 5000);
    let fw = Framework::default_builder("x", &DefaultPluginsConfig::default())
        .percentage_of_nodes_to_score(1)
        .build()
        .unwrap();
    assert_eq!(fw.num_feasible_nodes_to_find(5000), 100);
    assert!(Framework::builder("x")
        .percentage_of_nodes_to_score(101)
        .build()
        .is_err());
}

#[test]
fn evaluation_window_rotates_over_the_nodes() {
    let nodes: Vec<_> = (0..400)
        .map(|i| node(&format!("n{i:03}"), "4", "8Gi", &[]))
        .collect();
    let mut s = snapshot(&nodes, &[]);
    let mut sched = Scheduler::new(Framework::with_defaults());
    let info = s.compile_pod(&to_pod(&pod("p", "100m", "100Mi"))).unwrap();
    // 400 nodes: 50 − 400/125 = 47% → 188 nodes per cycle.
    let r1 = sched.schedule(&s, &info).unwrap();
    assert_eq!(r1.evaluated_nodes, 188);
    assert_eq!(r1.feasible_nodes, 188);
    let a = sched.schedule(&s, &info).unwrap();
    let b = sched.schedule(&s, &info).unwrap();
    // Identical nodes tie; the windows differ, so choices come from
    // different node ranges over time.
    let idx = |r: &ScheduleResult| r.node_name[1..].parse::<usize>().unwrap();
    assert!(
        idx(&r1) < 188 && (188..376).contains(&idx(&a)),
        "{} {}",
        r1.node_name,
        a.node_name
    );
    assert!(idx(&b) >= 376 || idx(&b) < 176, "{}", b.node_name);
}

#[test]
fn least_allocated_spreads_pods_evenly() {
    let nodes: Vec<_> = (0..10)
        .map(|i| node(&format!("n{i}"), "4", "32Gi", &[]))
        .collect();
    let mut s = snapshot(&nodes, &[]);
    let mut sched = Scheduler::new(Framework::with_defaults());
    for i in 0..100 {
        let info = s
            .compile_pod(&to_pod(&pod(&format!("p{i}"), "100m", "500Mi")))
            .unwrap();
        assert!(matches!(
            sched.schedule_one(&mut s, info),
            Outcome::Assumed { .. }
        ));
    }
    for &id in s.node_ids() {
        assert_eq!(s.node(id).pods().len(), 10, "{}", s.node(id).name());
    }
    assert!(s.memory_bytes() > 0);
}

#[test]
fn fit_error_message_counts_reasons_like_upstream() {
    let nodes = [
        node("small", "100m", "1Gi", &[]),
        set(
            node("t1", "4", "4Gi", &[]),
            "spec.taints",
            json!([{"key": "k", "value": "v", "effect": "NoSchedule"}]),
        ),
        set(
            node("t2", "4", "4Gi", &[]),
            "spec.taints",
            json!([{"key": "k", "value": "v", "effect": "NoSchedule"}]),
        ),
    ];
    let mut s = snapshot(&nodes, &[]);
    let mut sched = Scheduler::new(Framework::with_defaults());
    let info = s.compile_pod(&to_pod(&pod("big", "1", ""))).unwrap();
    let e = sched.schedule(&s, &info).unwrap_err();
    assert_eq!(
        e.to_string(),
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {k: v}. \
         preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
         2 Preemption is not helpful for scheduling."
    );
    assert_eq!(
        e.diagnosis.unschedulable_plugins,
        vec!["NodeResourcesFit", "TaintToleration"]
    );
    let empty = Snapshot::new();
    let e = sched.schedule(&empty, &info).unwrap_err();
    assert_eq!(
        e.to_string(),
        "0/0 nodes are available: no nodes available to schedule pods."
    );
}

struct Gate {
    reserved: AtomicUsize,
    unreserved: AtomicUsize,
    reject_on: &'static str,
}

impl Plugin for Gate {
    fn name(&self) -> &'static str {
        "Gate"
    }
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        Some(self)
    }
    fn as_permit(&self) -> Option<&dyn PermitPlugin> {
        Some(self)
    }
}

impl ReservePlugin for Gate {
    fn reserve(&self, _: &mut CycleState, _: &PodInfo, _: &str) -> Status {
        self.reserved.fetch_add(1, Ordering::SeqCst);
        Status::success()
    }
    fn unreserve(&self, _: &mut CycleState, _: &PodInfo, _: &str) {
        self.unreserved.fetch_add(1, Ordering::SeqCst);
    }
}

impl PermitPlugin for Gate {
    fn permit(&self, _: &mut CycleState, pod: &PodInfo, _: &str) -> PermitDecision {
        if pod.name() == self.reject_on {
            PermitDecision::Reject(Status::new(Code::Unschedulable, "gate closed"))
        } else {
            PermitDecision::Allow
        }
    }
}

#[test]
fn custom_reserve_and_permit_plugins_run_in_the_cycle() {
    let gate = Arc::new(Gate {
        reserved: AtomicUsize::new(0),
        unreserved: AtomicUsize::new(0),
        reject_on: "blocked",
    });
    let fw = Framework::default_builder("custom", &DefaultPluginsConfig::default())
        .plugin(gate.clone(), 1)
        .build()
        .unwrap();
    let mut sched = Scheduler::new(fw);
    let mut s = snapshot(&[node("n1", "4", "4Gi", &[])], &[]);
    let ok = s.compile_pod(&to_pod(&pod("fine", "1", ""))).unwrap();
    assert!(matches!(
        sched.schedule_one(&mut s, ok),
        Outcome::Assumed { .. }
    ));
    let blocked = s.compile_pod(&to_pod(&pod("blocked", "1", ""))).unwrap();
    match sched.schedule_one(&mut s, blocked) {
        Outcome::Rejected(st) => {
            assert_eq!(st.plugin(), "Gate");
            assert_eq!(st.reasons()[0], "gate closed");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(gate.reserved.load(Ordering::SeqCst), 2);
    assert_eq!(gate.unreserved.load(Ordering::SeqCst), 1);
    // The rejected pod was not assumed.
    assert_eq!(s.num_pods(), 1);
}
