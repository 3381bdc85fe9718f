//! `RUN --network=default`, as root, without touching the host's network: the build
//! engine runs inside a "node" network namespace this test creates (on a thread that
//! entered it), where the builder makes its bridge, forwarding and masquerade rule. A
//! second namespace "outside" sits on an uplink bridge of the node and serves HTTP,
//! answering with the client address it sees. A bridged RUN step reaches it through
//! NAT (the server sees the node's uplink address, not the step's), while a default
//! (loopback only) RUN step cannot reach it at all.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Env, BUSYBOX};
use kcore_build::{BridgeNetwork, BuildOptions, Builder, Error};
use kcore_netbridge::{Bridge, BridgeConfig, Ipam, NftNetlink, NftRunner};
use kcore_ns::NetNs;
use kcore_tests::netns::{current_links, unique, Namespaces};

/// An HTTP server in `ns` that answers every request with the client's address.
struct PeerHttp {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeerHttp {
    fn start(ns: &NetNs, addr: SocketAddr) -> Self {
        let listener = ns.run(move || TcpListener::bind(addr)).unwrap().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, peer)) => {
                        c.set_nonblocking(false).ok();
                        c.set_read_timeout(Some(Duration::from_secs(2))).ok();
                        let mut req = [0u8; 1024];
                        let _ = c.read(&mut req);
                        let body = peer.ip().to_string();
                        let _ = write!(
                            c,
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
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

impl Drop for PeerHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why the host cannot give this test a bridge and nftables NAT inside `node`.
fn network_skip_reason(rt: &tokio::runtime::Runtime, node: &NetNs) -> Option<String> {
    let probe = BridgeConfig {
        name: unique("kbp"),
        ..BridgeConfig::new("198.18.0.0/24".parse().unwrap())
    };
    match rt.block_on(Bridge::ensure(Some(node), probe)) {
        Ok(b) => {
            let _ = rt.block_on(b.delete());
        }
        Err(e) => return Some(format!("cannot create a bridge: {e}")),
    }
    let nat = NftNetlink::open(Some(node)).and_then(|n| {
        n.apply(&kcore_netbridge::masquerade_batch(
            "kcore-build-probe",
            "198.18.0.0/24".parse().unwrap(),
        ))
    });
    if let Err(e) = nat {
        return Some(format!("no nf_tables NAT: {e}"));
    }
    None
}

#[test]
fn run_network_default_reaches_outside_through_nat_and_none_does_not() {
    need_root!();
    let host_before = current_links();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut nss = Namespaces::new();
    let node = nss.create("kbn");
    let outside = nss.create("kbo");
    if let Some(why) = network_skip_reason(&rt, &node) {
        eprintln!("skipping: {why}");
        return;
    }
    // node <-> outside: an uplink bridge in the node (192.0.2.1), outside at .20
    let uplink = rt
        .block_on(Bridge::ensure(
            Some(&node),
            BridgeConfig {
                name: unique("kbu"),
                ..BridgeConfig::new("192.0.2.0/24".parse().unwrap())
            },
        ))
        .unwrap();
    let server_ip = Ipv4Addr::new(192, 0, 2, 20);
    rt.block_on(uplink.attach(&outside, &unique("kbo"), server_ip))
        .unwrap();
    let port = 8080;
    let _server = PeerHttp::start(&outside, SocketAddr::from((server_ip, port)));

    let e = Env::new();
    e.busybox();
    let net = BridgeNetwork {
        bridge: unique("kbb"),
        ipam_dir: Some(e.dir.path().join("ipam")),
        ..BridgeNetwork::default()
    };
    // (busybox's nc: a static busybox's wget crashes in glibc's NSS without libnss)
    let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {server_ip} {port}");
    let df = format!(
        "FROM {BUSYBOX}\n\
         RUN --network=default {get} > /reply && tail -n 1 /reply > /seen && ip -4 -o addr show eth0 > /eth0 && cp /etc/resolv.conf /resolv\n\
         RUN {get} > /seen-isolated || echo unreachable > /isolated\n"
    );
    let opts = BuildOptions {
        bridge: net.clone(),
        ..e.opts(&df, "net-default:1")
    };
    // The engine runs in the node namespace: its bridge, sysctl and NAT rule land there.
    let built = node
        .run(|| Builder::new(&e.images, &e.layers).build(&opts))
        .unwrap();
    built.unwrap();
    let root = e.rootfs("net-default:1");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    // masqueraded: the server saw the node's uplink address, not the step's
    assert_eq!(read("seen"), uplink.gateway().to_string());
    let eth0 = read("eth0");
    assert!(eth0.contains("inet 10.213.0."), "{eth0}");
    assert!(
        !read("resolv")
            .lines()
            .any(|l| l.trim().starts_with("nameserver 127.")),
        "{}",
        read("resolv")
    );
    // the bind mount point of resolv.conf is not part of the layer
    assert!(!root.join("etc/resolv.conf").exists());
    // the default network (loopback only) cannot reach the server
    assert_eq!(read("seen-isolated"), "");
    assert_eq!(read("isolated"), "unreachable\n");

    // After the build: the bridge stays (as docker0 does) with no port left, the
    // address is released, and the host's own namespace was never touched.
    let bridge = rt
        .block_on(Bridge::ensure(
            Some(&node),
            BridgeConfig {
                name: net.bridge.clone(),
                ..BridgeConfig::new(net.subnet)
            },
        ))
        .unwrap();
    assert_eq!(rt.block_on(bridge.ports()).unwrap(), Vec::<String>::new());
    let ipam = Ipam::open(e.dir.path().join("ipam"), net.subnet).unwrap();
    assert!(ipam.allocations().unwrap().is_empty());
    let forward = node
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap())
        .unwrap();
    assert_eq!(forward.trim(), "1");
    assert_eq!(current_links(), host_before);
}

#[test]
fn run_network_default_without_net_admin_is_a_typed_error() {
    need_root!();
    let e = Env::new();
    e.busybox();
    let df = format!("FROM {BUSYBOX}\nRUN --network=default true\n");
    let opts = e.opts(&df, "net-noadmin:1");
    // A thread that dropped CAP_NET_ADMIN from its effective set (capabilities are
    // per thread): the builder refuses before touching any network.
    let res = std::thread::scope(|s| {
        s.spawn(|| {
            drop_effective_net_admin();
            Builder::new(&e.images, &e.layers).build(&opts)
        })
        .join()
        .unwrap()
    });
    match res {
        Err(err @ Error::NetworkUnavailable { line: 2, .. }) => {
            let text = err.to_string();
            assert!(text.contains("CAP_NET_ADMIN"), "{text}");
        }
        other => panic!("expected NetworkUnavailable, got {other:?}"),
    }
}

/// Clears `CAP_NET_ADMIN` from the calling thread's effective capability set.
fn drop_effective_net_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const V3: u32 = 0x2008_0522;
    let mut h = Header {
        version: V3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget fills two Data entries for version 3 headers.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget");
    d[0].effective &= !(1 << 12);
    // SAFETY: capset reads the header and two Data entries; pid 0 is this thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
    assert_eq!(rc, 0, "capset");
}
