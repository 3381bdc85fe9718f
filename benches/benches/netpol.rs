//! The "netpol" benchmark: the cost of one NetworkPolicy-relevant change (a pod's
//! label flips, so it joins one policy's pods) at two scales, 100 policies × 1,000
//! pods and 1,000 policies × 10,000 pods (issue 24's goal: at most 1 ms at both):
//! planning the nftables transaction (`PolicyFirewall::plan`: one comparison per
//! policy, then the set elements of the policy that changed), applying it
//! (`PolicyFirewall::apply` with a runner that sends nothing to the kernel: the plan
//! plus keeping the firewall's state), and the size of that transaction, against the
//! anchor of replacing the whole table.
//!
//! Fixtures are generated: each policy selects 10 pods and allows ingress from 20
//! peers on two ports.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kcore_netbridge::{
    AddrRange, CompiledPolicy, Error, NftBatch, NftRunner, PolicyFirewall, PolicyRule, PolicySet,
    PortMatch, Protocol,
};

/// Applies nothing: the bench measures planning only.
struct Dry;

impl NftRunner for Dry {
    fn apply(&self, _: &NftBatch) -> Result<(), Error> {
        Ok(())
    }
}

fn pod(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0af4_0000 + i)
}

fn fixture(policies: u32, pods: u32) -> PolicySet {
    PolicySet {
        policies: (0..policies)
            .map(|p| CompiledPolicy {
                name: format!("ns{}/p{p}", p % 50),
                pods: (0..10).map(|k| pod((p * 10 + k) % pods)).collect(),
                ingress: Some(vec![PolicyRule {
                    peers: Some(
                        (0..20)
                            .map(|k| AddrRange::single(pod((p * 37 + k * 3) % pods)))
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .collect(),
                    ),
                    ports: Some(vec![
                        PortMatch::Ports {
                            protocol: Protocol::Tcp,
                            first: 80,
                            last: 80,
                        },
                        PortMatch::Ports {
                            protocol: Protocol::Tcp,
                            first: 8000,
                            last: 8100,
                        },
                    ]),
                }]),
                egress: None,
            })
            .collect(),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("netpol_change");
    g.sample_size(10);
    for (policies, pods) in [(100u32, 1_000u32), (1_000, 10_000)] {
        let base = fixture(policies, pods);
        let mut fw = PolicyFirewall::new("kcore-policy", Dry);
        fw.apply(&base).expect("dry apply");
        let mut changed = base.clone();
        changed.policies[(policies / 2) as usize]
            .pods
            .insert(pod(pods - 1));
        let (batch, stats) = fw.plan(&changed);
        let full = PolicyFirewall::new("kcore-policy", Dry).plan(&changed).0;
        println!(
            "netpol {policies} policies x {pods} pods: one pod change = {} commands, {} elements \
             (replacing the table: {} commands, {} bytes of JSON vs {})",
            stats.commands,
            stats.elements,
            full.len(),
            full.to_json().len(),
            batch.to_json().len(),
        );
        let id = format!("{policies}x{pods}");
        g.bench_with_input(
            BenchmarkId::new("plan_one_pod_change", &id),
            &changed,
            |b, set| b.iter(|| black_box(fw.plan(black_box(set)))),
        );
        // apply, alternating between the two sets: one change per iteration
        let mut flip = false;
        g.bench_with_input(
            BenchmarkId::new("apply_one_pod_change", &id),
            &(&base, &changed),
            |b, (base, changed)| {
                b.iter(|| {
                    flip = !flip;
                    let st = fw
                        .apply(black_box(if flip { changed } else { base }))
                        .expect("dry apply");
                    assert!(!st.replaced);
                    st
                })
            },
        );
        let fresh = PolicyFirewall::new("kcore-policy", Dry);
        g.bench_with_input(
            BenchmarkId::new("plan_full_replace", &id),
            &changed,
            |b, set| b.iter(|| black_box(fresh.plan(black_box(set)))),
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
