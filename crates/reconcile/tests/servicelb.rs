//! The node-mode LoadBalancer controller: a LoadBalancer Service gets the Ready nodes'
//! addresses as its ingress, one of another `loadBalancerClass` is left alone, a second
//! one on a port already served waits with a Warning event until the port is free, and
//! a Service that stops being a LoadBalancer has its ingress cleared.

mod common;

use common::{eventually, start_with, Kubelet};
use k8s_openapi::api::core::v1::{Event, Node, Service};
use kcore_reconcile::ControllerManagerConfig;
use kube::api::{Api, Patch, PatchParams, PostParams, ResourceExt};
use serde_json::json;

fn ingress_ips(s: &Service) -> Vec<String> {
    s.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_services_get_node_addresses() {
    let cfg = ControllerManagerConfig {
        workers: 2,
        controllers: ["servicelb".to_owned()].into(),
        ..ControllerManagerConfig::default()
    };
    let c = start_with(Kubelet::None, cfg).await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let svcs: Api<Service> = Api::namespaced(c.client.clone(), &c.namespace);
    let node = |name: String, ip: &str| -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": ip}]},
        }))
        .unwrap()
    };
    nodes
        .create(
            &PostParams::default(),
            &node(format!("{}-a", c.namespace), "10.9.0.2"),
        )
        .await
        .expect("node a");
    let svc = |name: &str, class: Option<&str>| -> Service {
        let mut spec = json!({"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 8080}]});
        if let Some(cl) = class {
            spec["loadBalancerClass"] = json!(cl);
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    svcs.create(&PostParams::default(), &svc("web", None))
        .await
        .expect("web");
    svcs.create(
        &PostParams::default(),
        &svc("other", Some("example.com/lb")),
    )
    .await
    .expect("other");
    eventually(30, "web gets node a's address", || async {
        let s = svcs.get("web").await.ok()?;
        (ingress_ips(&s) == ["10.9.0.2"]).then_some(())
    })
    .await;
    // a second node joins: both addresses
    nodes
        .create(
            &PostParams::default(),
            &node(format!("{}-b", c.namespace), "10.9.0.3"),
        )
        .await
        .expect("node b");
    eventually(30, "web gets both nodes", || async {
        let s = svcs.get("web").await.ok()?;
        (ingress_ips(&s) == ["10.9.0.2", "10.9.0.3"]).then_some(())
    })
    .await;
    // another class stays pending
    assert!(ingress_ips(&svcs.get("other").await.unwrap()).is_empty());
    // a second node-mode Service on port 80 waits, with a Warning event
    svcs.create(&PostParams::default(), &svc("web2", None))
        .await
        .expect("web2");
    let events: Api<Event> = Api::namespaced(c.client.clone(), &c.namespace);
    eventually(30, "web2's port-taken event", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some("web2")
                    && e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("SyncLoadBalancerFailed")
                    && e.message.as_deref().is_some_and(|m| {
                        m.contains("port 80/TCP") && m.contains(&format!("{}/web", c.namespace))
                    })
            })
            .map(|_| ())
    })
    .await;
    assert!(ingress_ips(&svcs.get("web2").await.unwrap()).is_empty());
    // no longer a LoadBalancer: cleared
    svcs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80, "targetPort": 8080, "nodePort": null}]}})),
    )
    .await
    .expect("to ClusterIP");
    eventually(30, "web's ingress cleared", || async {
        let s = svcs.get("web").await.ok()?;
        ingress_ips(&s).is_empty().then_some(())
    })
    .await;
    assert!(ingress_ips(&svcs.get("other").await.unwrap()).is_empty());
    // the port is free: web2 gets the nodes' addresses
    eventually(30, "web2 gets both nodes", || async {
        let s = svcs.get("web2").await.ok()?;
        (ingress_ips(&s) == ["10.9.0.2", "10.9.0.3"]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_mode_allocates_addresses_and_names_the_announcer() {
    let cfg = ControllerManagerConfig {
        workers: 2,
        controllers: ["servicelb".to_owned()].into(),
        service_lb_pool: vec![(
            "192.0.2.100".parse().unwrap(),
            "192.0.2.101".parse().unwrap(),
        )],
        ..ControllerManagerConfig::default()
    };
    let c = start_with(Kubelet::None, cfg).await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let svcs: Api<Service> = Api::namespaced(c.client.clone(), &c.namespace);
    let node_names = [format!("{}-a", c.namespace), format!("{}-b", c.namespace)];
    for n in &node_names {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": n},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "10.9.0.2"}]},
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let svc = |name: &str, ip: Option<&str>| -> Service {
        let mut spec = json!({"type": "LoadBalancer", "ports": [{"port": 80}]});
        if let Some(ip) = ip {
            spec["loadBalancerIP"] = json!(ip);
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    svcs.create(&PostParams::default(), &svc("asks", Some("192.0.2.101")))
        .await
        .unwrap();
    eventually(30, "asks gets the address it asked for", || async {
        let s = svcs.get("asks").await.ok()?;
        (ingress_ips(&s) == ["192.0.2.101"]).then_some(())
    })
    .await;
    // the same port on another address: no conflict in pool mode
    svcs.create(&PostParams::default(), &svc("any", None))
        .await
        .unwrap();
    eventually(
        30,
        "any gets the other address and an announcer",
        || async {
            let s = svcs.get("any").await.ok()?;
            let node = s.annotations().get("kcore.io/lb-announce-node")?.clone();
            (ingress_ips(&s) == ["192.0.2.100"] && node_names.contains(&node)).then_some(())
        },
    )
    .await;
    // the pool is empty: pending, with an event
    svcs.create(&PostParams::default(), &svc("late", None))
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(c.client.clone(), &c.namespace);
    eventually(30, "late's AllocationFailed event", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some("late")
                    && e.reason.as_deref() == Some("AllocationFailed")
            })
            .map(|_| ())
    })
    .await;
    assert!(ingress_ips(&svcs.get("late").await.unwrap()).is_empty());
    // an address freed is given to the one waiting
    svcs.delete("asks", &Default::default()).await.unwrap();
    eventually(30, "late gets the freed address", || async {
        let s = svcs.get("late").await.ok()?;
        (ingress_ips(&s) == ["192.0.2.101"]).then_some(())
    })
    .await;
}
