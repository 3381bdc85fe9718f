//! Root test: NetworkPolicy enforced by nf_tables in a node network namespace this test
//! creates, with three pod namespaces on its bridge (two namespaces of the cluster:
//! `a` holds `web` and `client`, `b` holds `other`). Policies are compiled with
//! `kcore_node::compile_policies` and programmed over netlink; TCP connections between
//! the pods show what is allowed and what is dropped.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kcore_netbridge::{
    enable_ip_forwarding, Bridge, BridgeConfig, Endpoint, Ipv4Net, NftConfig, NftNetlink,
    PolicyFirewall, Protocol, Service, ServiceProxy,
};
use kcore_ns::NetNs;
use kcore_tests::netns::{Namespaces, Server};
use serde_json::{json, Value};

const PORTS: [u16; 3] = [80, 8080, 9000];

/// Whether a TCP connection from `ns` to `ip:port` gets the server's reply (a dropped
/// SYN times out).
fn can(ns: &NetNs, ip: Ipv4Addr, port: u16) -> bool {
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
    ns.run(move || -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(700)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut out = String::new();
        s.read_to_string(&mut out).is_ok() && !out.is_empty()
    })
    .unwrap()
}

fn pod(ns: &str, name: &str, ip: Ipv4Addr, labels: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "i",
            "ports": [{"name": "http", "containerPort": 80}, {"name": "alt", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip.to_string()}
    }))
    .unwrap()
}

fn np(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .unwrap()
}

/// Whether `bridge-nf-call-iptables` can be on in `node` (the bridge hands IPv4 to
/// netfilter); turns it on there.
fn bridge_netfilter(node: &NetNs) -> bool {
    node.run(|| {
        let knob = "/proc/sys/net/bridge/bridge-nf-call-iptables";
        std::fs::write(knob, "1").is_ok()
            && std::fs::read_to_string(knob).is_ok_and(|v| v.trim() == "1")
    })
    .unwrap_or(false)
}

#[test]
#[ignore = "needs root"]
fn network_policies_allow_and_deny_pod_traffic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host_links = kcore_tests::netns::current_links();
    let mut nss = Namespaces::new();
    let node = nss.create("kpn");
    if !bridge_netfilter(&node) {
        eprintln!("skipped: this kernel has no br_netfilter (bridge-nf-call-iptables)");
        return;
    }
    let subnet: Ipv4Net = "10.244.7.0/24".parse().unwrap();
    let bridge = rt
        .block_on(Bridge::ensure(Some(&node), BridgeConfig::new(subnet)))
        .unwrap();
    enable_ip_forwarding(Some(&node)).unwrap();
    let names = ["web", "client", "other"];
    let mut pods = Vec::new();
    let mut ips = Vec::new();
    for (i, _) in names.iter().enumerate() {
        let ns = nss.create("kpp");
        let ip = Ipv4Addr::new(10, 244, 7, 10 + i as u8);
        let host = format!("kq{}x{i}", std::process::id() % 100_000);
        rt.block_on(bridge.attach(&ns, &host, ip)).unwrap();
        pods.push(ns);
        ips.push(ip);
    }
    let (web, client, other) = (&pods[0], &pods[1], &pods[2]);
    let (web_ip, client_ip, other_ip) = (ips[0], ips[1], ips[2]);
    let _servers: Vec<Server> = pods
        .iter()
        .flat_map(|ns| {
            PORTS.map(|p| {
                Server::start(
                    ns,
                    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, p)),
                    "hi",
                )
            })
        })
        .collect();
    let mut cluster_pods = vec![
        pod("a", "web", web_ip, json!({"app": "web"})),
        pod("a", "client", client_ip, json!({"role": "client"})),
        pod("b", "other", other_ip, json!({"role": "client"})),
    ];
    let namespaces: Vec<Namespace> = vec![
        serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap(),
        serde_json::from_value(json!({"metadata": {"name": "b", "labels": {"team": "x"}}}))
            .unwrap(),
    ];
    let mut fw = PolicyFirewall::new("kcore-policy", NftNetlink::open(Some(&node)).unwrap());
    let apply = |fw: &mut PolicyFirewall<NftNetlink>, pods: &[Pod], pols: &[NetworkPolicy]| {
        fw.apply(&kcore_node::compile_policies(pols, pods, &namespaces))
            .unwrap()
    };

    // no policy: everything flows
    apply(&mut fw, &cluster_pods, &[]);
    assert!(can(client, web_ip, 80));
    assert!(can(other, web_ip, 9000));
    assert!(can(web, other_ip, 80));

    // default deny ingress in namespace a
    let deny_a = np("a", "deny", json!({"podSelector": {}}));
    apply(&mut fw, &cluster_pods, std::slice::from_ref(&deny_a));
    assert!(!can(client, web_ip, 80), "same namespace denied");
    assert!(!can(other, web_ip, 80), "other namespace denied");
    assert!(!can(web, client_ip, 80), "every pod of a is isolated");
    assert!(
        can(web, other_ip, 80),
        "b is not isolated, a's egress is open"
    );

    // allow web's ingress from pods labelled role=client in its own namespace
    let from_label = np(
        "a",
        "from-client",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}),
    );
    apply(
        &mut fw,
        &cluster_pods,
        &[deny_a.clone(), from_label.clone()],
    );
    assert!(
        can(client, web_ip, 80),
        "labelled pod allowed (union of policies)"
    );
    assert!(
        !can(other, web_ip, 80),
        "same label in another namespace is not selected by a podSelector alone"
    );
    // the client loses its label: only set elements change, and it is denied
    cluster_pods[1] = pod("a", "client", client_ip, json!({}));
    let st = apply(
        &mut fw,
        &cluster_pods,
        &[deny_a.clone(), from_label.clone()],
    );
    assert!(
        !st.replaced,
        "a label change only changes set elements: {st:?}"
    );
    assert!(st.elements > 0);
    assert!(!can(client, web_ip, 80), "unlabelled pod denied");
    cluster_pods[1] = pod("a", "client", client_ip, json!({"role": "client"}));
    apply(&mut fw, &cluster_pods, &[deny_a.clone(), from_label]);
    assert!(can(client, web_ip, 80));

    // namespaceSelector: pods of namespaces labelled team=x
    let from_ns = np(
        "a",
        "from-team-x",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "x"}}}]}]}),
    );
    apply(&mut fw, &cluster_pods, &[deny_a.clone(), from_ns]);
    assert!(can(other, web_ip, 80), "namespace b selected");
    assert!(!can(client, web_ip, 80), "namespace a not selected");

    // ipBlock with except: the pod subnet except the client
    let block = np(
        "a",
        "block",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.7.0/24",
                "except": [format!("{client_ip}/32")]}}]}]}),
    );
    apply(&mut fw, &cluster_pods, &[deny_a.clone(), block]);
    assert!(can(other, web_ip, 80), "inside the block");
    assert!(!can(client, web_ip, 80), "cut out by except");

    // ports: a range and a named port
    let ports = np(
        "a",
        "ports",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100}]},
                        {"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": "http"}]}]}),
    );
    apply(&mut fw, &cluster_pods, &[deny_a.clone(), ports]);
    assert!(can(client, web_ip, 8080), "inside 8000-8100");
    assert!(!can(client, web_ip, 9000), "outside the range");
    assert!(can(other, web_ip, 80), "named port http is 80 on web");

    // a Service in front of web: filtered on web's real address after DNAT
    let cfg = NftConfig {
        table: "kcore".into(),
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        local_pods: Some((subnet, "kcore0".into())),
    };
    let mut proxy = ServiceProxy::new(cfg, NftNetlink::open(Some(&node)).unwrap());
    proxy.init().unwrap();
    let vip = Ipv4Addr::new(10, 96, 7, 1);
    let mut svc = Service::cluster_ip("a/web", Protocol::Tcp, vip, 9000);
    svc.endpoints = vec![Endpoint::ready(web_ip, 9000)];
    proxy.sync(std::slice::from_ref(&svc)).unwrap();
    let only_client = np(
        "a",
        "svc",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": 9000}]}]}),
    );
    apply(&mut fw, &cluster_pods, &[deny_a.clone(), only_client]);
    assert!(can(client, vip, 9000), "allowed through the Service");
    assert!(!can(other, vip, 9000), "denied through the Service");
    proxy.teardown().unwrap();

    // egress: the client may only reach web on port 80; replies to allowed
    // connections flow back (established)
    let egress = np(
        "a",
        "client-out",
        json!({"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": format!("{web_ip}/32")}}], "ports": [{"port": 80}]}]}),
    );
    let web_open = np(
        "a",
        "web-open",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}),
    );
    apply(&mut fw, &cluster_pods, &[egress.clone(), web_open]);
    assert!(can(client, web_ip, 80), "egress allowed to web:80");
    assert!(!can(client, web_ip, 8080), "other ports denied");
    assert!(!can(client, other_ip, 80), "other destinations denied");
    assert!(
        can(other, client_ip, 80),
        "ingress to the client is open and its replies are established traffic"
    );
    // deny all egress
    let deny_out = np(
        "a",
        "client-deny-out",
        json!({"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"]}),
    );
    apply(&mut fw, &cluster_pods, &[deny_out]);
    assert!(!can(client, web_ip, 80), "egress denied");
    assert!(can(web, other_ip, 80), "other pods unaffected");

    // removing every policy opens everything again; teardown removes the table
    apply(&mut fw, &cluster_pods, &[]);
    assert!(can(client, web_ip, 80));
    fw.teardown().unwrap();
    fw.teardown().unwrap();
    drop(_servers);
    rt.block_on(bridge.delete()).unwrap();
    drop(nss);
    assert_eq!(
        kcore_tests::netns::current_links(),
        host_links,
        "the test's own namespace is untouched"
    );
}
