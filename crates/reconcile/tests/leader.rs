//! Lease leader election against an in-process kcore-apiserver.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, start, Kubelet};
use k8s_openapi::api::coordination::v1::Lease;
use kcore_reconcile::{LeaderElectionConfig, LeaderElector};
use kube::api::Api;
use tokio::sync::oneshot;

fn config(ns: &str, id: &str) -> LeaderElectionConfig {
    LeaderElectionConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(100),
        ..LeaderElectionConfig::new(ns, "kcore-controller-manager", id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_handover_on_release() {
    let c = start(Kubelet::None, &[]).await;
    let a = Arc::new(LeaderElector::new(
        c.client.clone(),
        config(&c.namespace, "a"),
    ));
    let b = Arc::new(LeaderElector::new(
        c.client.clone(),
        config(&c.namespace, "b"),
    ));
    let (a_leads, b_leads) = (a.subscribe(), b.subscribe());
    let (stop_a, rx_a) = oneshot::channel::<()>();
    let (stop_b, rx_b) = oneshot::channel::<()>();
    let a2 = Arc::clone(&a);
    let ta = tokio::spawn(async move {
        a2.run(async {
            let _ = rx_a.await;
        })
        .await
    });
    eventually(30, "a leads", || async {
        (*a_leads.borrow()).then_some(())
    })
    .await;
    let b2 = Arc::clone(&b);
    let tb = tokio::spawn(async move {
        b2.run(async {
            let _ = rx_b.await;
        })
        .await
    });

    let leases: Api<Lease> = Api::namespaced(c.client.clone(), &c.namespace);
    // b keeps observing a live lease held by a.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            *a_leads.borrow() && !*b_leads.borrow(),
            "two leaders or none"
        );
    }
    let l = leases.get("kcore-controller-manager").await.unwrap();
    assert_eq!(
        l.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("a")
    );

    // a steps down and releases: b takes over, with one more transition.
    stop_a.send(()).unwrap();
    ta.await.unwrap();
    assert!(!*a_leads.borrow());
    eventually(30, "b leads", || async {
        (*b_leads.borrow()).then_some(())
    })
    .await;
    let l = leases.get("kcore-controller-manager").await.unwrap();
    let spec = l.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    stop_b.send(()).unwrap();
    tb.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_is_taken_over() {
    let c = start(Kubelet::None, &[]).await;
    let a = LeaderElector::new(c.client.clone(), config(&c.namespace, "a"));
    let a_leads = a.subscribe();
    // a acquires, then vanishes without releasing (its task is dropped).
    let ta = tokio::spawn(async move { a.run(std::future::pending()).await });
    eventually(30, "a leads", || async {
        (*a_leads.borrow()).then_some(())
    })
    .await;
    ta.abort();
    let b = Arc::new(LeaderElector::new(
        c.client.clone(),
        config(&c.namespace, "b"),
    ));
    let b_leads = b.subscribe();
    let b2 = Arc::clone(&b);
    let tb = tokio::spawn(async move { b2.run(std::future::pending()).await });
    eventually(30, "b takes the expired lease", || async {
        (*b_leads.borrow()).then_some(())
    })
    .await;
    tb.abort();
}
