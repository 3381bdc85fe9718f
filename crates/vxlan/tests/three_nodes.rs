//! Three nodes on one machine, as root, entirely inside network namespaces this
//! test creates: a switch namespace with a bridge, three node namespaces with an
//! underlay link to it, a pod bridge, pods and the VXLAN device each.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use common::{fetch, links, Namespaces, Server};
use kcore_netbridge::{
    enable_ip_forwarding, Bridge, BridgeConfig, Endpoint, NftCommand, NftConfig, Protocol, Service,
    ServiceProxy,
};
use kcore_ns::NetNs;
use kcore_vxlan::{Ipv4Net, Overlay, Peer, VxlanConfig};

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

struct Node {
    ns: NetNs,
    underlay: Ipv4Addr,
    subnet: Ipv4Net,
    overlay: Overlay,
    bridge: Bridge,
    pod: NetNs,
    pod_ip: Ipv4Addr,
}

impl Node {
    fn peer(&self) -> Peer {
        Peer {
            subnet: self.subnet,
            vtep_ip: self.subnet.network(),
            vtep_mac: self.overlay.mac(),
            underlay: self.underlay,
        }
    }
}

#[test]
#[ignore = "needs root"]
fn pods_reach_each_other_and_services_across_three_nodes() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host_links = common::current_links();
    let mut nss = Namespaces::new();
    let tag = std::process::id() % 100_000;

    // the underlay: a switch (bridge) in its own namespace
    let switch_ns = nss.create("ks");
    let switch = rt
        .block_on(Bridge::ensure(
            Some(&switch_ns),
            BridgeConfig {
                name: "sw0".into(),
                subnet: "10.123.0.0/24".parse().unwrap(),
                mtu: 1500,
            },
        ))
        .unwrap();

    let mut nodes = Vec::new();
    for n in 1..=3u8 {
        let ns = nss.create("kn");
        let underlay = Ipv4Addr::new(10, 123, 0, 10 + n);
        // node's underlay NIC: eth0 on the switch
        rt.block_on(switch.attach(&ns, &format!("su{tag}x{n}"), underlay))
            .unwrap();
        let subnet: Ipv4Net = format!("10.244.{n}.0/24").parse().unwrap();
        let cfg = VxlanConfig {
            vtep_addr: Some(subnet.network()),
            ..VxlanConfig::new(underlay)
        };
        let overlay = rt
            .block_on(Overlay::ensure(Some(&ns), cfg.clone()))
            .unwrap();
        assert_eq!(overlay.mtu(), 1450, "MTU = underlay - 50");
        // adopting the existing device is idempotent
        let again = rt.block_on(Overlay::ensure(Some(&ns), cfg)).unwrap();
        assert_eq!(again.index(), overlay.index());
        let bridge = rt
            .block_on(Bridge::ensure(
                Some(&ns),
                BridgeConfig {
                    mtu: overlay.mtu(),
                    ..BridgeConfig::new(subnet)
                },
            ))
            .unwrap();
        enable_ip_forwarding(Some(&ns)).unwrap();
        let pod = nss.create("kp");
        // .1 is the bridge gateway; the pod takes .5
        let pod_ip = subnet.hosts().nth(4).unwrap();
        rt.block_on(bridge.attach(&pod, &format!("kv{tag}x{n}"), pod_ip))
            .unwrap();
        nodes.push(Node {
            ns,
            underlay,
            subnet,
            overlay,
            bridge,
            pod,
            pod_ip,
        });
    }

    // every node learns the other two
    for (i, node) in nodes.iter().enumerate() {
        let peers: Vec<Peer> = nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| p.peer())
            .collect();
        let st = rt.block_on(node.overlay.reconcile(&peers)).unwrap();
        assert_eq!(st.written, 6);
        assert_eq!(rt.block_on(node.overlay.entry_counts()).unwrap(), (2, 2, 2));
        let st = rt.block_on(node.overlay.reconcile(&peers)).unwrap();
        assert_eq!((st.written, st.removed), (0, 0), "reconcile is idempotent");
        let mut want = peers.clone();
        want.sort();
        assert_eq!(rt.block_on(node.overlay.peers()).unwrap(), want);
    }

    let servers: Vec<Server> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            Server::start(
                &n.pod,
                sa(Ipv4Addr::UNSPECIFIED, 8080),
                &format!("node{}", i + 1),
            )
        })
        .collect();

    // pod on A reaches pods on B and C by pod IP, and back
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    assert_eq!(fetch(&a.pod, sa(b.pod_ip, 8080)).unwrap(), "node2");
    assert_eq!(fetch(&a.pod, sa(c.pod_ip, 8080)).unwrap(), "node3");
    assert_eq!(fetch(&c.pod, sa(a.pod_ip, 8080)).unwrap(), "node1");

    // a Service on A whose endpoints are on B and C
    let nft = NftCommand::in_netns(a.ns.path());
    let mut proxy = ServiceProxy::new(
        NftConfig {
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            local_pods: Some((a.subnet, "kcore0".into())),
            ..NftConfig::default()
        },
        nft,
    );
    proxy.init().unwrap();
    let vip = Ipv4Addr::new(10, 96, 0, 50);
    let mut svc = Service::cluster_ip("default/spread", Protocol::Tcp, vip, 80);
    svc.endpoints = vec![
        Endpoint::ready(b.pod_ip, 8080),
        Endpoint::ready(c.pod_ip, 8080),
    ];
    proxy.sync(std::slice::from_ref(&svc)).unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        *seen.entry(fetch(&a.pod, sa(vip, 80)).unwrap()).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "both remote endpoints answer: {seen:?}");
    assert!(seen.contains_key("node2") && seen.contains_key("node3"));

    // C leaves: A drops its peer entries and can no longer reach C's pods
    let st = rt.block_on(a.overlay.reconcile(&[b.peer()])).unwrap();
    assert_eq!((st.written, st.removed), (0, 3));
    assert_eq!(rt.block_on(a.overlay.entry_counts()).unwrap(), (1, 1, 1));
    assert_eq!(rt.block_on(a.overlay.peers()).unwrap(), vec![b.peer()]);
    let hits_c = servers[2].hits.load(std::sync::atomic::Ordering::Relaxed);
    assert!(fetch(&a.pod, sa(c.pod_ip, 8080)).is_err(), "C is cut off");
    assert_eq!(fetch(&a.pod, sa(b.pod_ip, 8080)).unwrap(), "node2");
    assert_eq!(
        servers[2].hits.load(std::sync::atomic::Ordering::Relaxed),
        hits_c
    );

    // B's VTEP changes MAC (device re-created): A replaces its entries, keeps the route
    let mut b2 = b.peer();
    b2.vtep_mac = [0x0e, 0x6b, 0xaa, 0xbb, 0xcc, 0xdd];
    let st = rt.block_on(a.overlay.reconcile(&[b2])).unwrap();
    assert_eq!((st.written, st.removed), (2, 1));
    assert_eq!(rt.block_on(a.overlay.peers()).unwrap(), vec![b2]);
    assert_eq!(rt.block_on(a.overlay.entry_counts()).unwrap(), (1, 1, 1));
    let st = rt.block_on(a.overlay.reconcile(&[b.peer()])).unwrap();
    assert_eq!((st.written, st.removed), (2, 1));
    assert_eq!(fetch(&a.pod, sa(b.pod_ip, 8080)).unwrap(), "node2");

    // teardown leaves nothing behind in the node namespaces
    proxy.teardown().unwrap();
    drop(servers);
    for (n, node) in nodes.into_iter().enumerate() {
        assert!(rt
            .block_on(node.bridge.detach(&format!("kv{tag}x{}", n + 1)))
            .unwrap());
        rt.block_on(node.bridge.delete()).unwrap();
        let overlay = node.overlay;
        rt.block_on(overlay.clone().delete()).unwrap();
        rt.block_on(overlay.delete()).unwrap();
        assert!(rt
            .block_on(switch.detach(&format!("su{tag}x{}", n + 1)))
            .unwrap());
        assert_eq!(links(&node.ns), vec!["lo".to_string()]);
    }
    assert!(rt.block_on(switch.ports()).unwrap().is_empty());
    assert_eq!(
        common::current_links(),
        host_links,
        "the test's own namespace is untouched"
    );
}
