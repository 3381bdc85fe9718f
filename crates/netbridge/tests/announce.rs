//! L2 announcement, as root, inside network namespaces this test creates: a "switch"
//! namespace holding a bridge, two node namespaces and a client namespace plugged into
//! it. A pool address announced by node A answers the client's TCP; moved to node B, the
//! client's neighbour entry follows at once (gratuitous ARP) and B answers. The same
//! for an IPv6 address with NDP: solicitations answered, an unsolicited advertisement
//! moving the client's entry.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use common::{fetch, Namespaces, Server};
use kcore_netbridge::{Bridge, BridgeConfig, Ipv4Net, L2Announcer};
use kcore_ns::NetNs;

/// The MAC the client's neighbour table holds for `ip`, if any.
fn neighbour(ns: &NetNs, ip: Ipv4Addr) -> Option<String> {
    ns.run(move || {
        let arp = std::fs::read_to_string("/proc/thread-self/net/arp").unwrap_or_default();
        arp.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&ip.to_string().as_str()) && f.get(2) != Some(&"0x0"))
                .then(|| f[3].to_owned())
        })
    })
    .unwrap()
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The test's LAN: a "switch" namespace with a bridge on 192.0.2.0/24, two node
/// namespaces (192.0.2.10 and .11, their MACs in `macs`) and a client (192.0.2.20)
/// plugged into it, interfaces named after `prefix` and this process.
struct Lan {
    /// Holds the namespaces (and removes them on drop).
    _nss: Namespaces,
    nodes: [NetNs; 2],
    client: NetNs,
    macs: Vec<String>,
}

fn lan(rt: &tokio::runtime::Runtime, prefix: &str) -> Lan {
    let mut nss = Namespaces::new();
    let switch = nss.create("ksw");
    let nodes = [nss.create("kan"), nss.create("kan")];
    let client = nss.create("kac");
    let lan: Ipv4Net = "192.0.2.0/24".parse().unwrap();
    let tag = std::process::id() % 100_000;
    let br = rt
        .block_on(Bridge::ensure(
            Some(&switch),
            BridgeConfig {
                name: "ksw0".into(),
                ..BridgeConfig::new(lan)
            },
        ))
        .unwrap();
    let mut macs = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let ip = Ipv4Addr::new(192, 0, 2, 10 + i as u8);
        let iface = rt
            .block_on(br.attach(n, &format!("{prefix}n{tag}x{i}"), ip))
            .unwrap();
        macs.push(mac_text(iface.mac));
    }
    rt.block_on(br.attach(
        &client,
        &format!("{prefix}c{tag}"),
        Ipv4Addr::new(192, 0, 2, 20),
    ))
    .unwrap();
    Lan {
        _nss: nss,
        nodes,
        client,
        macs,
    }
}

#[test]
#[ignore = "needs root"]
fn pool_address_moves_between_nodes_with_gratuitous_arp() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host_links = common::current_links();
    let Lan {
        _nss,
        nodes,
        client,
        macs,
    } = lan(&rt, "ka");
    let _servers = [
        Server::start(&nodes[0], SocketAddr::from(([0, 0, 0, 0], 8080)), "node-a"),
        Server::start(&nodes[1], SocketAddr::from(([0, 0, 0, 0], 8080)), "node-b"),
    ];
    let vip = Ipv4Addr::new(192, 0, 2, 100);
    let at = SocketAddr::V4(SocketAddrV4::new(vip, 8080));
    let want: BTreeSet<Ipv4Addr> = [vip].into();
    let mut a = rt
        .block_on(L2Announcer::new(Some(&nodes[0]), "eth0"))
        .unwrap();
    let mut b = rt
        .block_on(L2Announcer::for_address(
            Some(&nodes[1]),
            Ipv4Addr::new(192, 0, 2, 11),
        ))
        .unwrap();
    // found by the node's own address, as the node agent finds its uplink
    assert_eq!(b.interface(), "eth0");

    // nobody holds it: nothing answers
    assert!(fetch(&client, at).is_err());
    rt.block_on(a.sync(&want)).unwrap();
    rt.block_on(a.sync(&want)).unwrap(); // idempotent
    assert_eq!(fetch(&client, at).unwrap(), "node-a");
    assert_eq!(neighbour(&client, vip).as_deref(), Some(macs[0].as_str()));

    // takeover: A gives it up, B announces; the client's cache follows without asking
    rt.block_on(a.sync(&BTreeSet::new())).unwrap();
    rt.block_on(b.sync(&want)).unwrap();
    let mut moved = false;
    for _ in 0..50 {
        if neighbour(&client, vip).as_deref() == Some(macs[1].as_str()) {
            moved = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(moved, "gratuitous ARP updated the client's neighbour entry");
    assert_eq!(fetch(&client, at).unwrap(), "node-b");

    // a fresh announcer (a restarted agent) adopts and can give the address up
    let mut b2 = rt
        .block_on(L2Announcer::for_address(
            Some(&nodes[1]),
            Ipv4Addr::new(192, 0, 2, 11),
        ))
        .unwrap();
    // found by the node's own address, as the node agent finds its uplink
    assert_eq!(b.interface(), "eth0");
    rt.block_on(b2.sync(&want)).unwrap();
    rt.block_on(b2.sync(&BTreeSet::new())).unwrap();
    assert!(b2.announced().is_empty());
    assert!(fetch(&client, at).is_err(), "released: nobody answers");
    assert_eq!(
        common::current_links(),
        host_links,
        "the test's own namespace is untouched"
    );
}

/// `ip <args>` inside `ns`.
fn ip_in(ns: &NetNs, args: &[&str]) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg("ip")
        .args(args)
        .output()
        .expect("nsenter ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The MAC of the client's IPv6 neighbour entry for `ip` on eth0, if any.
fn neighbour6(ns: &NetNs, ip: Ipv6Addr) -> Option<String> {
    let out = ip_in(ns, &["-6", "neigh", "show", &ip.to_string(), "dev", "eth0"]);
    let mut words = out.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_owned)
}

#[test]
#[ignore = "needs root"]
fn ipv6_pool_address_answers_solicitations_and_moves_with_advertisements() {
    if !std::path::Path::new("/proc/net/if_inet6").exists() {
        eprintln!("skipped: this kernel has no IPv6");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host_links = common::current_links();
    let Lan {
        _nss,
        nodes,
        client,
        macs,
    } = lan(&rt, "k6");
    for (i, n) in nodes.iter().enumerate() {
        ip_in(
            n,
            &[
                "-6",
                "addr",
                "add",
                &format!("2001:db8::{}/64", 10 + i),
                "dev",
                "eth0",
                "nodad",
            ],
        );
    }
    ip_in(
        &client,
        &[
            "-6",
            "addr",
            "add",
            "2001:db8::20/64",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
    let at = SocketAddr::V6(SocketAddrV6::new(vip, 8080, 0, 0));
    let _servers = [
        Server::start(&nodes[0], "[::]:8080".parse().unwrap(), "node-a"),
        Server::start(&nodes[1], "[::]:8080".parse().unwrap(), "node-b"),
    ];
    let want: BTreeSet<Ipv6Addr> = [vip].into();
    let mut a = rt
        .block_on(L2Announcer::new(Some(&nodes[0]), "eth0"))
        .unwrap();
    let mut b = rt
        .block_on(L2Announcer::new(Some(&nodes[1]), "eth0"))
        .unwrap();

    // nobody holds it: nothing answers the client's solicitations
    assert!(fetch(&client, at).is_err());
    rt.block_on(a.sync_v6(&want)).unwrap();
    rt.block_on(a.sync_v6(&want)).unwrap(); // idempotent
    assert!(a.announced().is_empty(), "no IPv4 address announced");
    // A's kernel answers the client's neighbour solicitation at once (no DAD wait)
    assert_eq!(fetch(&client, at).unwrap(), "node-a");
    assert_eq!(neighbour6(&client, vip).as_deref(), Some(macs[0].as_str()));

    // takeover: the client's entry follows B's unsolicited advertisement, unasked
    rt.block_on(a.sync_v6(&BTreeSet::new())).unwrap();
    rt.block_on(b.sync_v6(&want)).unwrap();
    let mut moved = false;
    for _ in 0..50 {
        if neighbour6(&client, vip).as_deref() == Some(macs[1].as_str()) {
            moved = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        moved,
        "the neighbour advertisement updated the client's entry"
    );
    assert_eq!(fetch(&client, at).unwrap(), "node-b");
    rt.block_on(b.sync_v6(&BTreeSet::new())).unwrap();
    assert!(b.announced_v6().is_empty());
    assert!(
        !ip_in(&nodes[1], &["-6", "addr", "show", "dev", "eth0"]).contains("2001:db8::100"),
        "released from the interface"
    );
    assert_eq!(
        common::current_links(),
        host_links,
        "the test's own namespace is untouched"
    );
}
