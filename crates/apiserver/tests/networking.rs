//! networking.k8s.io kinds through a kube-rs client: NetworkPolicy defaulted and
//! validated, IngressClass with the default-class annotation given to new Ingresses.

mod support;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use kube::api::{PostParams, ResourceExt};
use kube::{Api, Client};
use serde_json::json;

async fn client() -> (Client, kcore_apiserver::RunningServer, tempfile::TempDir) {
    support::kube_client("networking").await
}

fn status_of(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policies_and_ingress_classes() {
    let (client, _server, _dir) = client().await;
    let nps: Api<NetworkPolicy> = Api::default_namespaced(client.clone());
    let np: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                 "egress": [{"ports": [{"port": 53}]}]}
    }))
    .unwrap();
    let created = nps
        .create(&PostParams::default(), &np)
        .await
        .expect("create");
    let spec = created.spec.unwrap();
    assert_eq!(
        spec.policy_types,
        Some(vec!["Ingress".into(), "Egress".into()])
    );
    let egress = spec.egress.unwrap();
    let port = &egress[0].ports.as_ref().unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    let bad: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "bad"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}]}]}
    }))
    .unwrap();
    let (code, msg) = status_of(nps.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!(code, 422);
    assert!(
        msg.contains("spec.ingress[0].from[0].ipBlock.except[0]") && msg.contains("strict subset"),
        "{msg}"
    );

    let classes: Api<IngressClass> = Api::all(client.clone());
    let ings: Api<Ingress> = Api::default_namespaced(client.clone());
    let ing = |name: &str, class: Option<&str>| -> Ingress {
        let mut spec =
            json!({"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}});
        if let Some(c) = class {
            spec["ingressClassName"] = json!(c);
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    // no default class yet: the Ingress keeps no class
    let i = ings
        .create(&PostParams::default(), &ing("before", None))
        .await
        .unwrap();
    assert_eq!(i.spec.unwrap().ingress_class_name, None);
    let class = |name: &str, default: bool| -> IngressClass {
        let mut o =
            json!({"metadata": {"name": name}, "spec": {"controller": "kcore.dev/ingress"}});
        if default {
            o["metadata"]["annotations"] =
                json!({"ingressclass.kubernetes.io/is-default-class": "true"});
        }
        serde_json::from_value(o).unwrap()
    };
    classes
        .create(&PostParams::default(), &class("plain", false))
        .await
        .unwrap();
    classes
        .create(&PostParams::default(), &class("kcore", true))
        .await
        .unwrap();
    let i = ings
        .create(&PostParams::default(), &ing("after", None))
        .await
        .unwrap();
    assert_eq!(i.spec.unwrap().ingress_class_name.as_deref(), Some("kcore"));
    let i = ings
        .create(&PostParams::default(), &ing("chosen", Some("plain")))
        .await
        .unwrap();
    assert_eq!(i.spec.unwrap().ingress_class_name.as_deref(), Some("plain"));
    // the controller is immutable
    let mut c = classes.get("plain").await.unwrap();
    c.spec.as_mut().unwrap().controller = Some("other.dev/x".into());
    let (code, msg) = status_of(
        classes
            .replace("plain", &PostParams::default(), &c)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422, "{msg}");
    assert!(
        msg.contains("spec.controller") && msg.contains("immutable"),
        "{msg}"
    );
    assert_eq!(c.name_any(), "plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_node_port_follows_the_traffic_policy() {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Patch, PatchParams};
    let (client, _server, _dir) = client().await;
    let svcs: Api<Service> = Api::default_namespaced(client);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "lb-local"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                 "selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    let created = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let spec = created.spec.unwrap();
    let hc = spec.health_check_node_port.expect("allocated");
    let np = spec.ports.unwrap()[0].node_port.unwrap();
    assert!((30000..=32767).contains(&hc) && hc != np, "{hc} {np}");
    // a replace that leaves it out keeps it
    let mut again = svcs.get("lb-local").await.unwrap();
    again.spec.as_mut().unwrap().health_check_node_port = None;
    let kept = svcs
        .replace("lb-local", &PostParams::default(), &again)
        .await
        .unwrap();
    assert_eq!(kept.spec.unwrap().health_check_node_port, Some(hc));
    // the Cluster policy needs none: it is released
    let patch = json!({"spec": {"externalTrafficPolicy": "Cluster"}});
    let cluster = svcs
        .patch("lb-local", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(cluster.spec.unwrap().health_check_node_port, None);
}
