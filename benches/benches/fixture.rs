//! Test-fixture start-up: `kcore::testing::Cluster` with 3 simulated nodes, from
//! `start()` to a client that has listed the nodes (goal: ≤ 300 ms).
//!
//! `cargo bench -p kcore-benches --bench fixture`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use k8s_openapi::api::core::v1::Node;
use kcored::testing::Cluster;
use kube::api::{Api, ListParams};

fn fixture_start(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("fixture");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("start_3_nodes_to_usable_client", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let cluster = Cluster::builder()
                        .nodes(3)
                        .start()
                        .await
                        .expect("cluster starts");
                    let nodes: Api<Node> = Api::all(cluster.client());
                    let listed = nodes.list(&ListParams::default()).await.expect("list");
                    total += t0.elapsed();
                    assert_eq!(listed.items.len(), 3);
                    cluster.stop().await;
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, fixture_start);
criterion_main!(benches);
