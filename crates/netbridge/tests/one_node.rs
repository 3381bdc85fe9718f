//! One node, as root, entirely inside network namespaces this test creates: a node
//! namespace with the pod bridge, three pod namespaces, nftables Service rules.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use common::{fetch, links, Namespaces, Server};
use kcore_netbridge::{
    enable_ip_forwarding, list_table, Bridge, BridgeConfig, Endpoint, Ipam, Ipv4Net, NftCommand,
    NftConfig, NftNetlink, NftRunner, Protocol, Service, ServiceProxy,
};
use kcore_ns::NetNs;

/// Makes the nftables runner for a node namespace.
type MakeRunner = dyn Fn(&NetNs) -> Box<dyn NftRunner>;

/// Runs `body` once with each way of programming nftables: the `nft` binary and
/// nf_tables netlink.
fn with_both_runners(body: fn(&MakeRunner)) {
    body(&|ns| Box::new(NftCommand::in_netns(ns.path())));
    body(&|ns| Box::new(NftNetlink::open(Some(ns)).unwrap()));
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

#[test]
#[ignore = "needs root"]
fn pods_on_one_node_talk_and_reach_services() {
    with_both_runners(one_node);
}

fn one_node(runner: &MakeRunner) {
    let rt = rt();
    let host_links = common::current_links();
    let mut nss = Namespaces::new();
    let node = nss.create("kn");
    let pods: Vec<_> = (0..3).map(|_| nss.create("kp")).collect();
    let subnet: Ipv4Net = "10.244.1.0/24".parse().unwrap();
    let ipam_dir = tempfile::tempdir().unwrap();
    let ipam = Ipam::open(ipam_dir.path(), subnet).unwrap();

    let bridge = rt
        .block_on(Bridge::ensure(Some(&node), BridgeConfig::new(subnet)))
        .unwrap();
    enable_ip_forwarding(Some(&node)).unwrap();
    // ensure is idempotent: adopting the same bridge works
    let again = rt
        .block_on(Bridge::ensure(Some(&node), BridgeConfig::new(subnet)))
        .unwrap();
    assert_eq!(again.index(), bridge.index());

    let mut ips = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let ip = ipam.allocate(&format!("pod-{i}")).unwrap();
        let host = format!("kv{}x{i}", std::process::id() % 100_000);
        let iface = rt.block_on(bridge.attach(pod, &host, ip)).unwrap();
        assert_eq!(iface.gateway, Ipv4Addr::new(10, 244, 1, 1));
        ips.push((ip, host));
    }
    // attach is idempotent (a retry replaces the half-made pair)
    let iface = rt
        .block_on(bridge.attach(&pods[2], &ips[2].1, ips[2].0))
        .unwrap();
    assert_eq!(iface.ifname, "eth0");
    assert_eq!(rt.block_on(bridge.ports()).unwrap().len(), 3);
    assert!(links(&pods[0]).contains(&"eth0".to_string()));

    // two pods talk TCP across the bridge
    let servers: Vec<Server> = (1..3)
        .map(|i| {
            Server::start(
                &pods[i],
                sa(Ipv4Addr::UNSPECIFIED, 8080),
                &format!("pod{i}"),
            )
        })
        .collect();
    assert_eq!(fetch(&pods[0], sa(ips[1].0, 8080)).unwrap(), "pod1");
    assert_eq!(fetch(&pods[0], sa(ips[2].0, 8080)).unwrap(), "pod2");

    // a Service with endpoints on pods 1 and 2: ClusterIP and NodePort
    let nft = NftCommand::in_netns(node.path());
    let cfg = NftConfig {
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        local_pods: Some((subnet, "kcore0".into())),
        ..NftConfig::default()
    };
    let mut proxy = ServiceProxy::new(cfg.clone(), runner(&node));
    // a stale table from an earlier run is replaced atomically
    proxy
        .restore(&[Service::cluster_ip(
            "default/stale",
            Protocol::Tcp,
            Ipv4Addr::new(10, 96, 9, 9),
            80,
        )])
        .unwrap();
    proxy.restore(&[]).unwrap();
    assert!(!list_table(&nft, &cfg).unwrap().contains("10.96.9.9"));
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let lb_ip = Ipv4Addr::new(10, 96, 100, 1);
    let mut svc = Service::cluster_ip("default/web", Protocol::Tcp, vip, 80);
    svc.node_port = Some(30080);
    svc.load_balancer_ips = vec![lb_ip];
    svc.endpoints = vec![
        Endpoint::ready(ips[1].0, 8080),
        Endpoint::ready(ips[2].0, 8080),
    ];
    let st = proxy.sync(std::slice::from_ref(&svc)).unwrap();
    assert_eq!(st.added, 1);
    let table = list_table(&nft, &cfg).unwrap();
    // an anonymous map per rule (nft binary) or the Service's endpoint map (netlink)
    assert!(
        table.contains("numgen random mod 2 map { 0 : 10.244.1.")
            || table.contains("numgen random mod 65536 offset 65536 map @endpoints-1"),
        "{table}"
    );

    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..40 {
        *seen
            .entry(fetch(&pods[0], sa(vip, 80)).unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        seen.len(),
        2,
        "ClusterIP spreads over both endpoints: {seen:?}"
    );
    let mut seen_np: HashMap<String, usize> = HashMap::new();
    for _ in 0..40 {
        *seen_np
            .entry(fetch(&pods[0], sa(bridge.gateway(), 30080)).unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        seen_np.len(),
        2,
        "NodePort spreads over both endpoints: {seen_np:?}"
    );

    // the LoadBalancer IP answers on the Service port
    assert!(fetch(&pods[0], sa(lb_ip, 80)).unwrap().starts_with("pod"));

    // hairpin: an endpoint reaching its own Service
    assert!(fetch(&pods[1], sa(vip, 80)).unwrap().starts_with("pod"));

    // remove endpoint 2: no more traffic reaches it
    svc.endpoints[1].ready = false;
    let st = proxy.update(std::slice::from_ref(&svc), &[]).unwrap();
    assert_eq!(st.changed, 1);
    let before = servers[1].hits.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..20 {
        assert_eq!(fetch(&pods[0], sa(vip, 80)).unwrap(), "pod1");
    }
    assert_eq!(
        servers[1].hits.load(std::sync::atomic::Ordering::Relaxed),
        before
    );

    // removing the Service removes its rules: the VIP no longer answers
    proxy.sync(&[]).unwrap();
    let table = list_table(&nft, &cfg).unwrap();
    assert!(
        !table.contains("dnat to") && !table.contains("svc-"),
        "{table}"
    );
    assert!(fetch(&pods[0], sa(vip, 80)).is_err());

    // teardown is idempotent and leaves nothing behind
    proxy.teardown().unwrap();
    proxy.teardown().unwrap();
    assert!(list_table(&nft, &cfg).is_err());
    drop(servers);
    for (i, (_, host)) in ips.iter().enumerate() {
        assert!(rt.block_on(bridge.detach(host)).unwrap());
        assert!(!rt.block_on(bridge.detach(host)).unwrap());
        assert!(ipam.release(&format!("pod-{i}")).unwrap().is_some());
    }
    assert!(rt.block_on(bridge.ports()).unwrap().is_empty());
    assert!(!links(&pods[0]).contains(&"eth0".to_string()));
    rt.block_on(bridge.clone().delete()).unwrap();
    rt.block_on(bridge.delete()).unwrap();
    assert_eq!(links(&node), vec!["lo".to_string()]);
    assert!(ipam.allocations().unwrap().is_empty());
    assert_eq!(
        common::current_links(),
        host_links,
        "the test's own namespace is untouched"
    );
}

#[test]
#[ignore = "needs root"]
fn client_ip_affinity_sticks_in_the_kernel() {
    with_both_runners(affinity);
}

fn affinity(runner: &MakeRunner) {
    let rt = rt();
    let mut nss = Namespaces::new();
    let node = nss.create("kn");
    let pods: Vec<_> = (0..4).map(|_| nss.create("kp")).collect();
    let subnet: Ipv4Net = "10.244.2.0/24".parse().unwrap();
    let bridge = rt
        .block_on(Bridge::ensure(Some(&node), BridgeConfig::new(subnet)))
        .unwrap();
    enable_ip_forwarding(Some(&node)).unwrap();
    let mut ips = Vec::new();
    // pods take .10, .11, ... (hosts() starts at .1)
    for (i, (pod, ip)) in pods.iter().zip(subnet.hosts().skip(9)).enumerate() {
        rt.block_on(bridge.attach(pod, &format!("ka{}x{i}", std::process::id() % 100_000), ip))
            .unwrap();
        ips.push(ip);
    }
    let _servers: Vec<Server> = (1..4)
        .map(|i| {
            Server::start(
                &pods[i],
                sa(Ipv4Addr::UNSPECIFIED, 9000),
                &format!("pod{i}"),
            )
        })
        .collect();
    let cfg = NftConfig {
        local_pods: Some((subnet, "kcore0".into())),
        ..NftConfig::default()
    };
    let mut proxy = ServiceProxy::new(cfg, runner(&node));
    proxy.init().unwrap();
    let vip = Ipv4Addr::new(10, 96, 0, 20);
    let mut svc = Service::cluster_ip("default/sticky", Protocol::Tcp, vip, 9000);
    svc.affinity = kcore_netbridge::SessionAffinity::ClientIp { timeout_secs: 300 };
    svc.endpoints = (1..4).map(|i| Endpoint::ready(ips[i], 9000)).collect();
    proxy.sync(std::slice::from_ref(&svc)).unwrap();
    let first = fetch(&pods[0], sa(vip, 9000)).unwrap();
    for _ in 0..15 {
        assert_eq!(fetch(&pods[0], sa(vip, 9000)).unwrap(), first);
    }
    proxy.teardown().unwrap();
}

#[test]
#[ignore = "needs root"]
fn udp_service_round_trips() {
    with_both_runners(udp);
}

fn udp(runner: &MakeRunner) {
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    let rt = rt();
    let mut nss = Namespaces::new();
    let node = nss.create("kn");
    let client = nss.create("kp");
    let server = nss.create("kp");
    let subnet: Ipv4Net = "10.244.3.0/24".parse().unwrap();
    let bridge = rt
        .block_on(Bridge::ensure(Some(&node), BridgeConfig::new(subnet)))
        .unwrap();
    enable_ip_forwarding(Some(&node)).unwrap();
    let tag = std::process::id() % 100_000;
    // client .2, server .3 (hosts() starts at the gateway, .1)
    let (cip, sip) = (
        subnet.hosts().nth(1).unwrap(),
        subnet.hosts().nth(2).unwrap(),
    );
    rt.block_on(bridge.attach(&client, &format!("ku{tag}x0"), cip))
        .unwrap();
    rt.block_on(bridge.attach(&server, &format!("ku{tag}x1"), sip))
        .unwrap();

    // a UDP echo server inside the server pod
    let sock = server
        .run(|| UdpSocket::bind("0.0.0.0:5353"))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = sock.send_to(&reply, from);
            }
        }
    });

    let mut proxy = ServiceProxy::new(
        NftConfig {
            local_pods: Some((subnet, "kcore0".into())),
            ..NftConfig::default()
        },
        runner(&node),
    );
    let vip = Ipv4Addr::new(10, 96, 0, 53);
    let mut svc = Service::cluster_ip("kube-system/dns", Protocol::Udp, vip, 53);
    svc.endpoints = vec![Endpoint::ready(sip, 5353)];
    proxy.restore(std::slice::from_ref(&svc)).unwrap();

    let c = client
        .run(|| UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.send_to(b"ping", sa(vip, 53)).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"echo:ping");
    assert_eq!(from, sa(vip, 53), "the reply is un-NATed back to the VIP");
    // a TCP connection to the same VIP and port matches nothing
    assert!(fetch(&client, sa(vip, 53)).is_err());

    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
    proxy.teardown().unwrap();
}
