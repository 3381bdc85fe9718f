//! External Service traffic, as root, inside network namespaces this test creates: a
//! node namespace with the pod bridge and an "uplink" bridge, two client namespaces on
//! the uplink (outside the cluster), a pod namespace serving its peer's address.
//! Checks `externalTrafficPolicy: Local` (only local endpoints, client address kept)
//! against `Cluster` (masqueraded), `ClientIP` affinity under `Local`, and
//! `loadBalancerSourceRanges`.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Namespaces;
use kcore_netbridge::{
    enable_ip_forwarding, Bridge, BridgeConfig, Endpoint, Ipv4Net, NftConfig, NftNetlink, Protocol,
    Service, ServiceProxy,
};
use kcore_ns::NetNs;

/// A TCP server in `ns` that answers each connection with the peer's address and its
/// own port.
struct PeerEcho {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeerEcho {
    fn start(ns: &NetNs, port: u16) -> Self {
        let listener = ns
            .run(move || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
            .unwrap()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, peer)) => {
                        let _ = c.write_all(format!("{} {port}", peer.ip()).as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PeerEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the server at `ip:port` says to a connection from `ns`: its view of the
/// client's address and the port of the endpoint that answered, or `None` when the
/// connection is dropped.
fn answer(ns: &NetNs, ip: Ipv4Addr, port: u16) -> Option<(String, u16)> {
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(700)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (peer, port) = out.split_once(' ')?;
        Some((peer.to_owned(), port.parse().ok()?))
    })
    .unwrap()
}

/// The client's address as the endpoint that answered saw it.
fn peer_seen(ns: &NetNs, ip: Ipv4Addr, port: u16) -> Option<String> {
    answer(ns, ip, port).map(|a| a.0)
}

#[test]
#[ignore = "needs root"]
fn external_traffic_policy_local_and_source_ranges() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host_links = common::current_links();
    let mut nss = Namespaces::new();
    let node = nss.create("kxn");
    let pod = nss.create("kxp");
    let clients = [nss.create("kxc"), nss.create("kxc")];
    let subnet: Ipv4Net = "10.244.9.0/24".parse().unwrap();
    let uplink: Ipv4Net = "192.0.2.0/24".parse().unwrap();
    let tag = std::process::id() % 100_000;
    let pods = rt
        .block_on(Bridge::ensure(Some(&node), BridgeConfig::new(subnet)))
        .unwrap();
    let up = rt
        .block_on(Bridge::ensure(
            Some(&node),
            BridgeConfig {
                name: "kup0".into(),
                ..BridgeConfig::new(uplink)
            },
        ))
        .unwrap();
    enable_ip_forwarding(Some(&node)).unwrap();
    let pod_ip = Ipv4Addr::new(10, 244, 9, 10);
    rt.block_on(pods.attach(&pod, &format!("kxp{tag}"), pod_ip))
        .unwrap();
    let client_ips = [Ipv4Addr::new(192, 0, 2, 20), Ipv4Addr::new(192, 0, 2, 21)];
    for (i, (c, ip)) in clients.iter().zip(client_ips).enumerate() {
        rt.block_on(up.attach(c, &format!("kxc{tag}x{i}"), ip))
            .unwrap();
    }
    let node_ip = up.gateway();
    let _server = PeerEcho::start(&pod, 8080);

    let cfg = NftConfig {
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        local_pods: Some((subnet, "kcore0".into())),
        ..NftConfig::default()
    };
    let mut proxy = ServiceProxy::new(cfg, NftNetlink::open(Some(&node)).unwrap());
    proxy.init().unwrap();
    let lb_ip = Ipv4Addr::new(198, 51, 100, 10);
    let mut svc = Service::cluster_ip(
        "default/web:http",
        Protocol::Tcp,
        Ipv4Addr::new(10, 96, 0, 30),
        80,
    );
    svc.node_port = Some(30081);
    svc.load_balancer_ips = vec![lb_ip];
    // one endpoint here, one on a node that does not exist: Local never picks it
    svc.endpoints = vec![
        Endpoint::ready(pod_ip, 8080),
        Endpoint::remote(Ipv4Addr::new(10, 244, 77, 5), 8080),
    ];

    // Cluster: the endpoint sees the node (masqueraded)
    proxy.sync(std::slice::from_ref(&svc)).unwrap();
    // (half the connections pick the endpoint that does not exist)
    let seen = (0..20).find_map(|_| peer_seen(&clients[0], node_ip, 30081));
    assert_eq!(seen.as_deref(), Some("10.244.9.1"), "Cluster masquerades");

    // Local: every connection reaches the local endpoint and keeps the client address
    svc.external_local = true;
    assert_eq!(proxy.sync(std::slice::from_ref(&svc)).unwrap().changed, 1);
    for _ in 0..12 {
        assert_eq!(
            peer_seen(&clients[0], node_ip, 30081).as_deref(),
            Some("192.0.2.20")
        );
    }
    assert_eq!(
        peer_seen(&clients[1], lb_ip, 80).as_deref(),
        Some("192.0.2.21")
    );

    // loadBalancerSourceRanges: only the first client reaches the load-balancer IP;
    // the node port is not filtered
    svc.source_ranges = vec!["192.0.2.20/32".parse().unwrap()];
    proxy.sync(std::slice::from_ref(&svc)).unwrap();
    assert_eq!(
        peer_seen(&clients[0], lb_ip, 80).as_deref(),
        Some("192.0.2.20")
    );
    assert_eq!(peer_seen(&clients[1], lb_ip, 80), None);
    assert_eq!(
        peer_seen(&clients[1], node_ip, 30081).as_deref(),
        Some("192.0.2.21")
    );
    // widening the range lets the second one in; clearing it removes the check
    svc.source_ranges = vec!["192.0.2.0/24".parse().unwrap()];
    proxy.sync(std::slice::from_ref(&svc)).unwrap();
    assert!(peer_seen(&clients[1], lb_ip, 80).is_some());
    svc.source_ranges = vec!["203.0.113.0/24".parse().unwrap()];
    proxy.sync(std::slice::from_ref(&svc)).unwrap();
    assert_eq!(peer_seen(&clients[0], lb_ip, 80), None);
    svc.source_ranges.clear();
    proxy.sync(std::slice::from_ref(&svc)).unwrap();
    assert!(peer_seen(&clients[0], lb_ip, 80).is_some());

    // Local with no local endpoint: external traffic is dropped, not sent elsewhere
    svc.endpoints.remove(0);
    proxy.sync(std::slice::from_ref(&svc)).unwrap();
    assert_eq!(peer_seen(&clients[0], node_ip, 30081), None);
    assert_eq!(peer_seen(&clients[0], lb_ip, 80), None);

    // Local with ClientIP affinity: a client sticks to one of the local endpoints and
    // keeps its address; a second endpoint (port 8081 of the same pod) is there to pick
    let _second = PeerEcho::start(&pod, 8081);
    svc.endpoints = vec![
        Endpoint::ready(pod_ip, 8080),
        Endpoint::ready(pod_ip, 8081),
        Endpoint::remote(Ipv4Addr::new(10, 244, 77, 5), 8080),
    ];
    svc.affinity = kcore_netbridge::SessionAffinity::ClientIp { timeout_secs: 60 };
    proxy.sync(std::slice::from_ref(&svc)).unwrap();
    let first = answer(&clients[0], node_ip, 30081).expect("a local endpoint answers");
    assert_eq!(first.0, "192.0.2.20");
    for _ in 0..12 {
        assert_eq!(answer(&clients[0], node_ip, 30081).as_ref(), Some(&first));
    }
    // the endpoint it sticks to goes: it moves to the other local one, and stays
    svc.endpoints.retain(|e| e.addr.port() != first.1);
    proxy.sync(std::slice::from_ref(&svc)).unwrap();
    let moved = answer(&clients[0], node_ip, 30081).expect("the other local endpoint");
    assert_ne!(moved.1, first.1);
    assert_eq!(moved.0, "192.0.2.20");
    svc.affinity = kcore_netbridge::SessionAffinity::None;

    // a fresh restore builds the same rules as the updates did
    svc.endpoints = vec![Endpoint::ready(pod_ip, 8080)];
    svc.source_ranges = vec!["192.0.2.21/32".parse().unwrap()];
    proxy.restore(std::slice::from_ref(&svc)).unwrap();
    assert_eq!(peer_seen(&clients[0], lb_ip, 80), None);
    assert_eq!(
        peer_seen(&clients[1], lb_ip, 80).as_deref(),
        Some("192.0.2.21")
    );
    proxy.sync(&[]).unwrap();
    proxy.teardown().unwrap();
    assert_eq!(
        common::current_links(),
        host_links,
        "the test's own namespace is untouched"
    );
}
