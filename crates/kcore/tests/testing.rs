//! The umbrella crate's `testing` feature: the fixture as users reach it,
//! `kcore::testing::Cluster`.

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{ListParams, PostParams};
use kube::Api;

#[tokio::test]
async fn a_cluster_with_three_nodes_through_the_umbrella_crate() {
    let cluster = kcore::testing::Cluster::builder()
        .nodes(3)
        .start()
        .await
        .expect("the cluster starts");
    let nodes: Api<Node> = Api::all(cluster.client());
    let mut names: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .expect("nodes list")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    names.sort();
    assert_eq!(names, ["sim-node-0", "sim-node-1", "sim-node-2"]);

    // the kubeconfig works for a client built from it alone
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(cluster.kubeconfig()).expect("kubeconfig reads"),
        &Default::default(),
    )
    .await
    .expect("kubeconfig loads");
    let other = kube::Client::try_from(config).expect("client");
    let ns: Api<Namespace> = Api::all(other);
    let mut created = Namespace::default();
    created.metadata.name = Some("umbrella".into());
    ns.create(&PostParams::default(), &created)
        .await
        .expect("a namespace is created through the kubeconfig");

    let dir = cluster.data_dir().to_owned();
    cluster.stop().await;
    assert!(!dir.exists(), "the cluster's state goes with it");
}
