//! Scheduling queue: priority order, exponential backoff, re-queue on events.

use std::sync::Arc;
use std::time::Duration;

use kcore_scheduler::*;

fn queue() -> (SchedulingQueue<u32>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::default());
    let q = SchedulingQueue::new(&Framework::with_defaults(), clock.clone());
    (q, clock)
}

const NODE_ADD: ClusterEvent = ClusterEvent::new(EventResource::Node, EventAction::Add);
const POD_DELETE: ClusterEvent = ClusterEvent::new(EventResource::AssignedPod, EventAction::Delete);
const NS_UPDATE: ClusterEvent = ClusterEvent::new(EventResource::Namespace, EventAction::Update);

#[test]
fn active_queue_pops_by_priority_then_arrival() {
    let (mut q, clock) = queue();
    q.add("ns/a", 0, 1, false);
    clock.advance(Duration::from_millis(1));
    q.add("ns/b", 10, 2, false);
    clock.advance(Duration::from_millis(1));
    q.add("ns/c", 0, 3, false);
    clock.advance(Duration::from_millis(1));
    q.add("ns/d", 10, 4, false);
    let order: Vec<u32> = std::iter::from_fn(|| q.pop().map(|p| p.item)).collect();
    assert_eq!(order, vec![2, 4, 1, 3]);
}

#[test]
fn backoff_respects_a_configured_maximum() {
    let (q, clock) = queue();
    let mut q = q.with_backoff(Duration::from_millis(100), Duration::from_millis(300));
    q.add("ns/p", 0, 7, false);
    let p = q.pop().unwrap();
    let mut waits = Vec::new();
    for _ in 0..4 {
        q.requeue_error(&p.key);
        let mut waited = 0;
        while q.pop().is_none() {
            clock.advance(Duration::from_millis(50));
            waited += 50;
        }
        waits.push(waited);
    }
    assert_eq!(waits, vec![100, 200, 300, 300]);
}

#[test]
fn backoff_grows_exponentially() {
    let (mut q, clock) = queue();
    q.add("ns/p", 0, 7, false);
    let mut waits = Vec::new();
    let p = q.pop().unwrap();
    for _ in 0..5 {
        q.requeue_error(&p.key);
        let mut waited = 0;
        while q.pop().is_none() {
            clock.advance(Duration::from_millis(250));
            waited += 250;
        }
        waits.push(waited);
    }
    // 1s, 2s, 4s, 8s, then capped at upstream's 10s.
    assert_eq!(waits, vec![1000, 2000, 4000, 8000, 10000]);
}

#[test]
fn unschedulable_pods_move_only_on_relevant_events() {
    let (mut q, clock) = queue();
    q.add("ns/p", 0, 1, false);
    let p = q.pop().unwrap();
    q.requeue_unschedulable(&p.key, vec!["NodeResourcesFit"]);
    assert_eq!(q.state("ns/p"), Some(QueueState::Unschedulable));
    assert!(q.pop().is_none());
    // NodeResourcesFit does not care about namespaces.
    assert_eq!(q.on_event(NS_UPDATE), 0);
    assert_eq!(q.state("ns/p"), Some(QueueState::Unschedulable));
    // A deleted pod frees resources: the pod backs off (1s) then is active.
    assert_eq!(q.on_event(POD_DELETE), 1);
    assert_eq!(q.state("ns/p"), Some(QueueState::Backoff));
    clock.advance(Duration::from_secs(1));
    assert_eq!(q.pop().map(|p| p.item), Some(1));
}

#[test]
fn events_during_a_cycle_send_the_pod_to_backoff() {
    let (mut q, _clock) = queue();
    q.add("ns/p", 0, 1, false);
    let p = q.pop().unwrap();
    // A node appears while the pod is being scheduled.
    q.on_event(NODE_ADD);
    q.requeue_unschedulable(&p.key, vec!["NodeResourcesFit"]);
    assert_eq!(q.state("ns/p"), Some(QueueState::Backoff));
}

#[test]
fn unschedulable_pods_are_retried_after_five_minutes() {
    let (mut q, clock) = queue();
    q.add("ns/p", 0, 1, false);
    let p = q.pop().unwrap();
    q.requeue_unschedulable(&p.key, vec!["NodeAffinity"]);
    clock.advance(Duration::from_secs(299));
    assert!(q.pop().is_none());
    clock.advance(Duration::from_secs(1));
    assert_eq!(q.pop().map(|p| p.item), Some(1));
}

#[test]
fn gated_pods_wait_for_their_gates_to_clear() {
    let (mut q, _clock) = queue();
    q.add("ns/g", 0, 1, true);
    assert_eq!(q.state("ns/g"), Some(QueueState::Gated));
    assert!(q.pop().is_none());
    q.update("ns/g", 0, 2, false);
    assert_eq!(q.pop().map(|p| p.item), Some(2));
    q.done("ns/g");
    assert!(q.is_empty());
}

#[test]
fn updating_an_unschedulable_pod_retries_it() {
    let (mut q, clock) = queue();
    q.add("ns/p", 0, 1, false);
    let p = q.pop().unwrap();
    q.requeue_unschedulable(&p.key, vec!["NodeAffinity"]);
    clock.advance(Duration::from_secs(2));
    q.update("ns/p", 0, 9, false);
    assert_eq!(q.pop().map(|p| (p.item, p.attempts)), Some((9, 2)));
    assert_eq!(q.delete("ns/p"), Some(9));
}
