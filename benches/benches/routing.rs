//! The "routing" benchmark: pod IP → node longest-prefix match, Service
//! (VIP, port) → backend lookup, and the cost of an nftables Service update.
//!
//! Anchors run in the same process: a linear scan (how an iptables chain matches)
//! and the `prefix-trie` crate. Fixtures come from a fixed-seed generator.
//! Besides criterion's report, a summary with ns per lookup and ratios is printed.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kcore_netbridge::{
    Endpoint, NftBatch, NftCommand, NftConfig, NftNetlink, NftRunner, Protocol, Service,
    ServiceProxy, ServiceTable,
};
use kcore_vxlan::{linear_lookup, Ipv4Net, RouteTable};
use prefix_trie::PrefixMap;

const NODES: usize = 5_000;
const SERVICES: usize = 10_000;
const ENDPOINTS: u32 = 10;
const PROBES: usize = 4_096;

/// xorshift64*: deterministic fixtures.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// 5,000 random prefixes (/16 to /28, like node subnets of assorted clusters) and
/// probes that fall inside them.
fn lpm_fixture() -> (Vec<(Ipv4Net, u32)>, Vec<Ipv4Addr>) {
    let mut rng = Rng(0x6b63_6f72_6531);
    let mut nets = Vec::with_capacity(NODES);
    let mut seen = std::collections::HashSet::new();
    while nets.len() < NODES {
        let len = 16 + (rng.next() % 13) as u8;
        let net = Ipv4Net::new(Ipv4Addr::from(rng.next() as u32), len)
            .unwrap()
            .trunc();
        if seen.insert(net) {
            nets.push((net, nets.len() as u32));
        }
    }
    let probes = (0..PROBES)
        .map(|_| {
            let (net, _) = nets[(rng.next() % NODES as u64) as usize];
            Ipv4Addr::from(
                u32::from(net.network()) | (rng.next() as u32 & u32::from(net.hostmask())),
            )
        })
        .collect();
    (nets, probes)
}

fn services_fixture() -> Vec<Service> {
    (0..SERVICES as u32)
        .map(|i| {
            let mut s = Service::cluster_ip(
                format!("ns{}/svc{i}", i % 50),
                Protocol::Tcp,
                Ipv4Addr::from(0x0a60_0000 + i),
                80 + (i % 3) as u16,
            );
            s.endpoints = (0..ENDPOINTS)
                .map(|e| Endpoint::ready(Ipv4Addr::from(0x0af4_0000 + i * ENDPOINTS + e), 8080))
                .collect();
            s
        })
        .collect()
}

fn service_probes(services: &[Service]) -> Vec<(Ipv4Addr, u16, SocketAddrV4)> {
    let mut rng = Rng(0x7376_6331);
    (0..PROBES)
        .map(|_| {
            let s = &services[(rng.next() % services.len() as u64) as usize];
            let r = rng.next();
            let client = SocketAddrV4::new(
                Ipv4Addr::from(0x0af4_0000 | (r as u32 & 0xffff)),
                (r >> 32) as u16,
            );
            (s.cluster_ip, s.port, client)
        })
        .collect()
}

/// iptables-style anchor: walk the Service list until the frontend matches.
fn linear_service(
    services: &[Service],
    vip: Ipv4Addr,
    port: u16,
    client: SocketAddrV4,
) -> Option<SocketAddrV4> {
    let s = services
        .iter()
        .find(|s| s.cluster_ip == vip && s.port == port && s.protocol == Protocol::Tcp)?;
    let h = (u64::from(u32::from(*client.ip())) << 16 | u64::from(client.port()))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Some(s.endpoints[(h >> 32) as usize % s.endpoints.len()].addr)
}

struct Discard;

impl NftRunner for Discard {
    fn apply(&self, _: &NftBatch) -> Result<(), kcore_netbridge::Error> {
        Ok(())
    }
}

fn loaded_proxy(n: usize) -> (ServiceProxy<Discard>, Vec<Service>) {
    let all: Vec<Service> = services_fixture().into_iter().take(n).collect();
    let mut p = ServiceProxy::new(NftConfig::default(), Discard);
    p.sync(&all).unwrap();
    (p, all)
}

fn changed(svc: &Service, round: u32) -> Service {
    let mut s = svc.clone();
    s.endpoints[0] = Endpoint::ready(Ipv4Addr::from(0x0afe_0000 + round), 8080);
    s
}

fn bench_lpm(c: &mut Criterion) {
    let (nets, probes) = lpm_fixture();
    let mut ours = RouteTable::new();
    // kcore_vxlan::Ipv4Net is ipnet::Ipv4Net, the key type prefix-trie uses
    let mut trie: PrefixMap<Ipv4Net, u32> = PrefixMap::new();
    for (n, v) in &nets {
        ours.insert(*n, *v);
        trie.insert(*n, *v);
    }
    let mut g = c.benchmark_group("routing/lpm_5000_nodes");
    g.throughput(Throughput::Elements(probes.len() as u64));
    g.bench_function("kcore_route_table", |b| {
        b.iter(|| {
            for ip in &probes {
                black_box(ours.lookup(black_box(*ip)));
            }
        })
    });
    g.bench_function("prefix_trie", |b| {
        b.iter(|| {
            for ip in &probes {
                let p = Ipv4Net::new(*ip, 32).unwrap();
                black_box(trie.get_lpm(black_box(&p)));
            }
        })
    });
    g.sample_size(10);
    g.throughput(Throughput::Elements(256));
    g.bench_function("linear_scan", |b| {
        b.iter(|| {
            for ip in &probes[..256] {
                black_box(linear_lookup(&nets, black_box(*ip)));
            }
        })
    });
    g.finish();
}

fn bench_services(c: &mut Criterion) {
    let services = services_fixture();
    let mut table = ServiceTable::new();
    for s in &services {
        table.upsert(s).unwrap();
    }
    let probes = service_probes(&services);
    let mut g = c.benchmark_group("routing/service_10000x10");
    g.throughput(Throughput::Elements(probes.len() as u64));
    g.bench_function("kcore_service_table", |b| {
        b.iter(|| {
            for (vip, port, client) in &probes {
                black_box(table.pick(*vip, *port, Protocol::Tcp, black_box(*client)));
            }
        })
    });
    g.sample_size(10);
    g.throughput(Throughput::Elements(64));
    g.bench_function("linear_scan", |b| {
        b.iter(|| {
            for (vip, port, client) in &probes[..64] {
                black_box(linear_service(&services, *vip, *port, black_box(*client)));
            }
        })
    });
    g.finish();
}

fn bench_nft_update(c: &mut Criterion) {
    let mut g = c.benchmark_group("routing/nft_update_one_service");
    for n in [1_000usize, 10_000] {
        let (proxy, all) = loaded_proxy(n);
        let target = all[n / 2].clone();
        let mut round = 0u32;
        g.bench_with_input(BenchmarkId::new("plan_and_serialise", n), &n, |b, _| {
            b.iter(|| {
                round = round.wrapping_add(1);
                let s = changed(&target, round);
                let (batch, _) = proxy.plan_update(std::slice::from_ref(&s), &[]).unwrap();
                black_box(batch.to_json())
            })
        });
        let (mut full, all) = loaded_proxy(n);
        let mut desired = all.clone();
        let mut round = 0u32;
        g.bench_with_input(BenchmarkId::new("full_sync_one_changed", n), &n, |b, _| {
            b.iter(|| {
                round = round.wrapping_add(1);
                desired[n / 2] = changed(&all[n / 2], round);
                black_box(full.sync(&desired).unwrap())
            })
        });
    }
    g.finish();
}

/// Median ns per operation of `f` (which performs `ops` operations) over `runs` runs.
fn median_ns(runs: usize, ops: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as f64 / ops as f64
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Removes the bench's network namespace even if the bench panics.
struct NsGuard(kcore_ns::NetnsDir, String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = self.0.remove(&self.1);
    }
}

/// How the bench programs the kernel.
#[derive(Clone, Copy)]
enum Runner {
    /// The `nft` binary (`nft -j -f -`), which reads the table back first.
    NftBinary,
    /// nf_tables netlink batches straight from the process.
    Netlink,
}

/// With root (and `nft` for [`Runner::NftBinary`]): loads `n` Services into
/// nftables inside a network namespace made for the bench, then times applying
/// one changed Service (an endpoint replaced; median of 21), and adding one more
/// Service (median of 11). Returns (initial load seconds, one-update ms, one-add
/// ms), or why it was skipped.
/// An error and its sources, `a: b: c` (messages do not repeat their cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn kernel_update(n: usize, runner: Runner) -> Result<(f64, f64, f64), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = kcore_ns::NetnsDir::new(dir.path());
    let name = format!("kb-routing-{}-{n}", std::process::id());
    let ns = store.create(&name).map_err(|e| chain(&e))?;
    let _guard = NsGuard(store, name);
    let runner: Box<dyn NftRunner> = match runner {
        Runner::NftBinary => Box::new(NftCommand::in_netns(ns.path())),
        Runner::Netlink => Box::new(NftNetlink::open(Some(&ns)).map_err(|e| chain(&e))?),
    };
    let all: Vec<Service> = services_fixture().into_iter().take(n).collect();
    let mut proxy = ServiceProxy::new(NftConfig::default(), runner);
    proxy.init().map_err(|e| chain(&e))?;
    let t = Instant::now();
    for chunk in all.chunks(500) {
        proxy.update(chunk, &[]).map_err(|e| chain(&e))?;
    }
    let load = t.elapsed().as_secs_f64();
    let mut round = 0;
    let ms = median_ns(21, 1, || {
        round += 1;
        let s = changed(&all[n / 2], round);
        proxy.update(std::slice::from_ref(&s), &[]).unwrap();
    }) / 1e6;
    let mut extra = all[n / 2].clone();
    let mut k = 0u32;
    let add_ms = median_ns(11, 1, || {
        k += 1;
        extra.name = format!("bench/extra{k}");
        extra.cluster_ip = Ipv4Addr::from(0x0a70_0000 + k);
        proxy.update(std::slice::from_ref(&extra), &[]).unwrap();
    }) / 1e6;
    proxy.teardown().map_err(|e| chain(&e))?;
    Ok((load, ms, add_ms))
}

fn summary(_: &mut Criterion) {
    let (nets, probes) = lpm_fixture();
    let mut ours = RouteTable::new();
    // kcore_vxlan::Ipv4Net is ipnet::Ipv4Net, the key type prefix-trie uses
    let mut trie: PrefixMap<Ipv4Net, u32> = PrefixMap::new();
    for (n, v) in &nets {
        ours.insert(*n, *v);
        trie.insert(*n, *v);
    }
    // correctness check before timing: all three agree
    for ip in &probes {
        let p = Ipv4Net::new(*ip, 32).unwrap();
        assert_eq!(ours.lookup(*ip), trie.get_lpm(&p).map(|(_, v)| v));
        assert_eq!(ours.lookup(*ip), linear_lookup(&nets, *ip));
    }
    let lpm_ours = median_ns(51, probes.len(), || {
        for ip in &probes {
            black_box(ours.lookup(black_box(*ip)));
        }
    });
    let lpm_trie = median_ns(51, probes.len(), || {
        for ip in &probes {
            black_box(trie.get_lpm(black_box(&Ipv4Net::new(*ip, 32).unwrap())));
        }
    });
    let lpm_linear = median_ns(11, 256, || {
        for ip in &probes[..256] {
            black_box(linear_lookup(&nets, black_box(*ip)));
        }
    });

    let services = services_fixture();
    let mut table = ServiceTable::new();
    for s in &services {
        table.upsert(s).unwrap();
    }
    let sprobes = service_probes(&services);
    let svc_ours = median_ns(51, sprobes.len(), || {
        for (vip, port, client) in &sprobes {
            black_box(table.pick(*vip, *port, Protocol::Tcp, black_box(*client)));
        }
    });
    let svc_linear = median_ns(11, 64, || {
        for (vip, port, client) in &sprobes[..64] {
            black_box(linear_service(&services, *vip, *port, black_box(*client)));
        }
    });

    let mut nft = Vec::new();
    for n in [1_000usize, 10_000] {
        let (proxy, all) = loaded_proxy(n);
        let mut round = 0;
        let t_update = median_ns(101, 1, || {
            round += 1;
            let s = changed(&all[n / 2], round);
            let (batch, _) = proxy.plan_update(std::slice::from_ref(&s), &[]).unwrap();
            black_box(batch.to_json());
        });
        let (mut full, all) = loaded_proxy(n);
        let mut desired = all.clone();
        let t_sync = median_ns(21, 1, || {
            round += 1;
            desired[n / 2] = changed(&all[n / 2], round);
            black_box(full.sync(&desired).unwrap());
        });
        let (cmds, _) = proxy.plan_update(&[changed(&all[n / 2], 0)], &[]).unwrap();
        nft.push((n, t_update, t_sync, cmds.len()));
    }

    println!();
    println!("routing summary (median ns per lookup, same run)");
    println!("  LPM pod IP -> node over {NODES} random prefixes:");
    println!("    kcore RouteTable   {lpm_ours:>10.1} ns");
    println!(
        "    prefix-trie        {lpm_trie:>10.1} ns   ({:.1}x slower than kcore)",
        lpm_trie / lpm_ours
    );
    println!(
        "    linear scan        {lpm_linear:>10.1} ns   ({:.0}x slower than kcore)",
        lpm_linear / lpm_ours
    );
    println!("  Service (VIP, port) -> backend over {SERVICES} services x {ENDPOINTS} endpoints:");
    println!("    kcore ServiceTable {svc_ours:>10.1} ns");
    println!(
        "    linear scan        {svc_linear:>10.1} ns   ({:.0}x slower than kcore)",
        svc_linear / svc_ours
    );
    println!(
        "  nftables update, one Service changed (plan + JSON; full sync also diffs every Service):"
    );
    for (n, u, s, cmds) in nft {
        println!(
            "    {n:>6} services: update {:>8.1} us ({cmds} commands), full sync {:>8.1} us",
            u / 1e3,
            s / 1e3
        );
    }
    println!("  one changed Service applied to the kernel (own netns; an endpoint replaced, median of 21):");
    for n in [1_000usize, 10_000] {
        let nl = kernel_update(n, Runner::Netlink);
        let bin = kernel_update(n, Runner::NftBinary);
        match (&nl, &bin) {
            (Ok((nl_load, nl_ms, nl_add)), Ok((bin_load, bin_ms, bin_add))) => println!(
                "    {n:>6} services: netlink {nl_ms:>7.2} ms, nft -j {bin_ms:>7.1} ms ({:.0}x faster); \
                 a new Service: {nl_add:.1} ms vs {bin_add:.1} ms ({:.0}x); initial load {nl_load:.2} s vs {bin_load:.1} s",
                bin_ms / nl_ms,
                bin_add / nl_add
            ),
            _ => {
                for (what, r) in [("netlink", nl), ("nft -j", bin)] {
                    match r {
                        Ok((load, ms, add)) => println!(
                            "    {n:>6} services ({what}): one update {ms:.2} ms, a new Service {add:.1} ms (initial load {load:.2} s)"
                        ),
                        Err(e) => println!("    {n:>6} services ({what}): skipped ({e})"),
                    }
                }
            }
        }
    }
    println!();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = routing;
    config = config();
    targets = bench_lpm, bench_services, bench_nft_update, summary
}
criterion_main!(routing);
