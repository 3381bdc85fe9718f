//! The netlink runner programs exactly what the `nft` binary programs: the same
//! Service changes go through [`NftCommand`] in one namespace and [`NftNetlink`] in
//! another, and `nft list table` prints the same ruleset after every step.

mod common;

use std::net::Ipv4Addr;

use common::Namespaces;
use kcore_netbridge::{
    list_table, Endpoint, NftCommand, NftConfig, NftNetlink, NftRunner, Protocol, Service,
    ServiceProxy, SessionAffinity,
};

fn svc(i: u8, eps: u8) -> Service {
    let mut s = Service::cluster_ip(
        format!("default/s{i}"),
        Protocol::Tcp,
        Ipv4Addr::new(10, 96, 0, i),
        80,
    );
    s.endpoints = (0..eps)
        .map(|e| Endpoint::ready(Ipv4Addr::new(10, 244, 1, 10 + i * 8 + e), 8080))
        .collect();
    s
}

/// The table as `nft` prints it.
fn listing(nft: &NftCommand, cfg: &NftConfig) -> String {
    list_table(nft, cfg).unwrap()
}

#[test]
#[ignore = "needs root"]
fn netlink_and_nft_binary_program_the_same_ruleset() {
    let mut nss = Namespaces::new();
    let a = nss.create("kq");
    let b = nss.create("kq");
    let cfg = NftConfig {
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        local_pods: Some(("10.244.1.0/24".parse().unwrap(), "kcore0".into())),
        ..NftConfig::default()
    };
    let list_a = NftCommand::in_netns(a.path());
    let list_b = NftCommand::in_netns(b.path());
    let mut by_nft = ServiceProxy::new(cfg.clone(), list_a.clone());
    // without endpoint maps the netlink runner programs nft's own layout
    let mut by_netlink = ServiceProxy::new(
        cfg.clone(),
        NftNetlink::open(Some(&b))
            .unwrap()
            .with_endpoint_maps(false),
    );

    let mut web = svc(1, 3);
    web.node_port = Some(30080);
    web.load_balancer_ips = vec![Ipv4Addr::new(192, 0, 2, 10)];
    let mut sticky = svc(2, 2);
    sticky.affinity = SessionAffinity::ClientIp { timeout_secs: 300 };
    let mut dns = svc(3, 2);
    dns.protocol = Protocol::Udp;
    dns.port = 53;
    let empty = svc(4, 0);

    let mut steps: Vec<Vec<Service>> = vec![vec![
        web.clone(),
        sticky.clone(),
        dns.clone(),
        empty.clone(),
    ]];
    // an endpoint goes unready, one is added
    let mut web2 = web.clone();
    web2.endpoints[1].ready = false;
    web2.endpoints
        .push(Endpoint::ready(Ipv4Addr::new(10, 244, 1, 99), 8080));
    steps.push(vec![
        web2.clone(),
        sticky.clone(),
        dns.clone(),
        empty.clone(),
    ]);
    // affinity toggles both ways, the NodePort moves, a Service goes away
    let mut web3 = web2.clone();
    web3.affinity = SessionAffinity::ClientIp { timeout_secs: 60 };
    web3.node_port = Some(30081);
    let mut sticky2 = sticky.clone();
    sticky2.affinity = SessionAffinity::None;
    steps.push(vec![web3, sticky2, empty.clone()]);
    steps.push(vec![]);

    by_nft.restore(&[]).unwrap();
    by_netlink.restore(&[]).unwrap();
    assert_eq!(listing(&list_a, &cfg), listing(&list_b, &cfg));
    for (i, desired) in steps.iter().enumerate() {
        let sa = by_nft.sync(desired).unwrap();
        let sb = by_netlink.sync(desired).unwrap();
        assert_eq!(sa, sb);
        let (la, lb) = (listing(&list_a, &cfg), listing(&list_b, &cfg));
        assert_eq!(la, lb, "step {i}: nft binary\n{la}\nnetlink\n{lb}");
    }
    // a full restore in one transaction agrees too
    let all = steps[0].clone();
    by_nft.restore(&all).unwrap();
    by_netlink.restore(&all).unwrap();
    let (la, lb) = (listing(&list_a, &cfg), listing(&list_b, &cfg));
    assert_eq!(la, lb);
    assert!(la.contains("numgen random mod 3"), "{la}");

    // teardown is idempotent and leaves no table behind
    by_netlink.teardown().unwrap();
    by_netlink.teardown().unwrap();
    by_nft.teardown().unwrap();
    assert!(list_table(&list_b, &cfg).is_err());
    assert!(list_table(&list_a, &cfg).is_err());
}

/// The kernel accepts every kind of change with endpoint maps, and the table
/// then holds exactly the ready endpoints.
#[test]
#[ignore = "needs root"]
fn endpoint_maps_follow_every_kind_of_change() {
    let mut nss = Namespaces::new();
    let ns = nss.create("kq");
    let list = NftCommand::in_netns(ns.path());
    let cfg = NftConfig::default();
    let mut p = ServiceProxy::new(cfg.clone(), NftNetlink::open(Some(&ns)).unwrap());
    p.restore(&[]).unwrap();
    let mut s = svc(1, 3);
    p.sync(std::slice::from_ref(&s)).unwrap();
    let t = listing(&list, &cfg);
    assert!(
        t.contains("65536-87380 : 10.244.1.18 . 8080")
            && t.contains("109226-131071 : 10.244.1.20 . 8080"),
        "{t}"
    );
    // replace one endpoint, then one goes unready
    s.endpoints[2] = Endpoint::ready(Ipv4Addr::new(10, 244, 1, 99), 8080);
    p.sync(std::slice::from_ref(&s)).unwrap();
    let t = listing(&list, &cfg);
    assert!(
        t.contains("109226-131071 : 10.244.1.99 . 8080") && !t.contains("10.244.1.20"),
        "{t}"
    );
    s.endpoints[0].ready = false;
    p.sync(std::slice::from_ref(&s)).unwrap();
    let t = listing(&list, &cfg);
    assert!(
        t.contains("65536-98303 : 10.244.1.19 . 8080") && !t.contains("10.244.1.18 "),
        "{t}"
    );
    // to ClientIP and back, then UDP, then no endpoints at all
    s.affinity = SessionAffinity::ClientIp { timeout_secs: 60 };
    p.sync(std::slice::from_ref(&s)).unwrap();
    let t = listing(&list, &cfg);
    assert!(
        !t.contains(": 10.244.1.19 . 8080") && t.contains("update @aff-"),
        "{t}"
    );
    s.affinity = SessionAffinity::None;
    s.protocol = Protocol::Udp;
    p.sync(std::slice::from_ref(&s)).unwrap();
    let t = listing(&list, &cfg);
    assert!(
        t.contains(
            "meta l4proto udp dnat ip to numgen random mod 65536 offset 65536 map @endpoints-1"
        ),
        "{t}"
    );
    assert!(!t.contains("aff-"), "{t}");
    s.endpoints.clear();
    p.sync(std::slice::from_ref(&s)).unwrap();
    assert!(!listing(&list, &cfg).contains("10.244.1."));
    p.sync(&[]).unwrap();
    let t = listing(&list, &cfg);
    assert!(!t.contains("10.244.1.") && !t.contains("svc-"), "{t}");
    p.teardown().unwrap();
    assert!(list_table(&list, &cfg).is_err());
}

/// A Service with a thousand endpoints needs several element messages in one
/// transaction, with and without endpoint maps.
#[test]
#[ignore = "needs root"]
fn a_thousand_endpoints_fit_in_one_transaction() {
    let mut nss = Namespaces::new();
    let ns = nss.create("kq");
    let list = NftCommand::in_netns(ns.path());
    let cfg = NftConfig::default();
    let mut big = svc(9, 0);
    big.endpoints = (0..1000u32)
        .map(|i| Endpoint::ready(Ipv4Addr::from(0x0af5_0000 + i), 8080))
        .collect();
    for maps in [true, false] {
        let runner = NftNetlink::open(Some(&ns))
            .unwrap()
            .with_endpoint_maps(maps);
        let mut p = ServiceProxy::new(cfg.clone(), runner);
        p.restore(std::slice::from_ref(&big)).unwrap();
        let t = listing(&list, &cfg);
        assert!(
            t.contains("10.245.0.0 . 8080") && t.contains("10.245.3.231 . 8080"),
            "maps {maps}"
        );
        let mut fewer = big.clone();
        fewer.endpoints.truncate(500);
        p.sync(std::slice::from_ref(&fewer)).unwrap();
        let t = listing(&list, &cfg);
        assert!(
            t.contains("10.245.1.243 . 8080") && !t.contains("10.245.1.244 . 8080"),
            "maps {maps}"
        );
        p.teardown().unwrap();
    }
    assert!(list_table(&list, &cfg).is_err());
}

#[test]
#[ignore = "needs root"]
fn kernel_errors_name_the_failing_message() {
    let mut nss = Namespaces::new();
    let ns = nss.create("kq");
    let runner = NftNetlink::in_netns(ns.path()).unwrap();
    let mut p = ServiceProxy::new(NftConfig::default(), runner.clone());
    p.init().unwrap();
    // a Service into a table that does not exist: the whole transaction is refused
    let cfg = NftConfig {
        table: "kcore-missing".into(),
        ..NftConfig::default()
    };
    let other = ServiceProxy::new(cfg, runner.clone());
    let (plan, _) = other.plan_update(&[svc(1, 1)], &[]).unwrap();
    let err = runner.apply(&plan).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, kcore_netbridge::Error::NftNetlink { .. }),
        "{msg}"
    );
    assert!(msg.contains("kcore-missing"), "{msg}");
    // the kernel's errno is the source, shown once in the chain, not in the message
    let cause = std::error::Error::source(&err).map(ToString::to_string);
    assert!(!msg.contains("No such file"), "{msg}");
    assert!(
        cause.as_deref().is_some_and(|c| c.contains("No such file")),
        "{cause:?}"
    );
    // the shared socket stays usable after an error
    let st = p.update(&[svc(1, 1)], &[]).unwrap();
    assert_eq!(st.added, 1);
    let listing = list_table(&NftCommand::in_netns(ns.path()), &NftConfig::default()).unwrap();
    assert!(listing.contains("10.96.0.1 . tcp . 80"), "{listing}");
    p.teardown().unwrap();
    assert!(list_table(&NftCommand::in_netns(ns.path()), &NftConfig::default()).is_err());
}
