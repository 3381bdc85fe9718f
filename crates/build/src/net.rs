//! `RUN --network=default`: a NAT'd bridge network for a RUN step.
//!
//! The step's container gets its own network namespace, as with the default
//! (loopback only), plus `eth0`: one end of a veth pair whose other end is a port of
//! the build bridge ([`BridgeNetwork::bridge`], `kcore-build0` by default) in the
//! builder's network namespace. The bridge carries the subnet's `.1` as gateway and is
//! created on first use and left in place, as `docker0` is; the step's address comes
//! from a file-locked IPAM store, so concurrent builds never share one. IPv4
//! forwarding is turned on and an nftables table of its own (`ip kcore-build-<bridge>`)
//! masquerades traffic leaving the subnet. After the step the veth pair and the
//! address are released.
//!
//! Everything goes over netlink (kcore-netbridge): no `ip`, `brctl` or `nft` binary.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use kcore_netbridge::{Bridge, BridgeConfig, Ipam, Ipv4Net, NftNetlink, NftRunner};
use kcore_ns::NetNs;

use crate::error::{Error, Result};

/// Docker's fallback resolvers, used when the host names only loopback resolvers
/// (which a bridged container cannot reach) and systemd-resolved's upstream list
/// has none either.
const FALLBACK_NAMESERVERS: &[&str] = &["8.8.8.8", "8.8.4.4"];

/// The bridge network `RUN --network=default` steps join.
///
/// ```
/// let net = kcore_build::BridgeNetwork::default();
/// assert_eq!(net.bridge, "kcore-build0");
/// assert_eq!(net.subnet.to_string(), "10.213.0.0/24");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeNetwork {
    /// The bridge's name (at most 15 bytes). Default `kcore-build0`.
    pub bridge: String,
    /// The subnet; the bridge takes its `.1`, steps the addresses after it. Default
    /// `10.213.0.0/24`.
    pub subnet: Ipv4Net,
    /// Where step addresses are recorded (a CNI host-local style store, shared by
    /// every builder on the host that uses this bridge). Default
    /// `/run/kcore-build/<bridge>`.
    pub ipam_dir: Option<PathBuf>,
}

impl Default for BridgeNetwork {
    fn default() -> Self {
        Self {
            bridge: "kcore-build0".into(),
            subnet: Ipv4Net::new(Ipv4Addr::new(10, 213, 0, 0), 24).unwrap_or_default(),
            ipam_dir: None,
        }
    }
}

impl BridgeNetwork {
    fn ipam_dir(&self) -> PathBuf {
        self.ipam_dir
            .clone()
            .unwrap_or_else(|| Path::new("/run/kcore-build").join(&self.bridge))
    }

    /// The nftables table holding the bridge's masquerade rule.
    pub fn nft_table(&self) -> String {
        format!("kcore-build-{}", self.bridge)
    }

    /// The gateway address (the subnet's `.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()).wrapping_add(1))
    }
}

/// A step's place on the bridge; dropping it removes the veth pair and releases the
/// address.
pub(crate) struct Lease {
    rt: tokio::runtime::Runtime,
    bridge: Bridge,
    host_ifname: String,
    ipam: Ipam,
    owner: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Err(e) = self.rt.block_on(self.bridge.detach(&self.host_ifname)) {
            tracing::warn!(veth = %self.host_ifname, error = &e as &dyn std::error::Error, "removing a RUN step's veth pair");
        }
        if let Err(e) = self.ipam.release(&self.owner) {
            tracing::warn!(owner = %self.owner, error = &e as &dyn std::error::Error, "releasing a RUN step's address");
        }
    }
}

/// Whether the calling thread has `CAP_NET_ADMIN` in its effective set.
fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// Refuses `--network=default` up front when the builder cannot configure networks.
pub(crate) fn check_allowed(line: usize) -> Result<()> {
    if has_net_admin() {
        Ok(())
    } else {
        Err(Error::NetworkUnavailable {
            line,
            reason: "the builder lacks CAP_NET_ADMIN".into(),
            source: None,
        })
    }
}

/// The veth host end for a step `id`: `kb` and 12 hex digits of a hash of the id
/// (interface names are at most 15 bytes).
fn host_ifname(id: &str) -> String {
    // FNV-1a, 64 bits
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("kb{:012x}", h & 0xffff_ffff_ffff)
}

/// Releases addresses held by builder processes that no longer exist (owners are
/// `kb-<pid>-<n>`), so a crashed build does not keep its address forever.
fn prune_dead(ipam: &Ipam) {
    let Ok(list) = ipam.allocations() else {
        return;
    };
    for (_, owner) in list {
        let pid = owner
            .strip_prefix("kb-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = ipam.release(&owner);
            }
        }
    }
}

/// Puts the step's namespace `step` on the build bridge, making the bridge, the
/// forwarding sysctl and the masquerade rule first (in the calling thread's network
/// namespace) when they are missing.
pub(crate) fn attach(line: usize, net: &BridgeNetwork, step: &NetNs, id: &str) -> Result<Lease> {
    let _span = tracing::info_span!("run_network_attach", line, bridge = %net.bridge).entered();
    let unavailable = |reason: String, source: kcore_netbridge::Error| Error::NetworkUnavailable {
        line,
        reason,
        source: Some(Box::new(source)),
    };
    check_allowed(line)?;
    let host = NetNs::current().map_err(|source| Error::Netns { line, source })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            op: "start a netlink runtime for",
            path: PathBuf::from(&net.bridge),
            source,
        })?;
    let cfg = BridgeConfig {
        name: net.bridge.clone(),
        subnet: net.subnet.trunc(),
        mtu: 1500,
    };
    let bridge = rt
        .block_on(Bridge::ensure(Some(&host), cfg))
        .map_err(|e| unavailable(format!("creating the bridge {}", net.bridge), e))?;
    kcore_netbridge::enable_ip_forwarding(Some(&host))
        .map_err(|e| unavailable("turning on IPv4 forwarding".into(), e))?;
    NftNetlink::open(Some(&host))
        .and_then(|nft| {
            nft.apply(&kcore_netbridge::masquerade_batch(
                &net.nft_table(),
                net.subnet,
            ))
        })
        .map_err(|e| {
            unavailable(
                format!("adding the nftables masquerade rule for {}", net.subnet),
                e,
            )
        })?;
    let failed = |what: String| {
        move |source| Error::Network {
            line,
            what,
            source: Box::new(source),
        }
    };
    let dir = net.ipam_dir();
    let ipam = Ipam::open(&dir, net.subnet).map_err(failed(format!(
        "opening the address store {}",
        dir.display()
    )))?;
    prune_dead(&ipam);
    let ip = ipam
        .allocate(id)
        .map_err(failed(format!("allocating an address in {}", net.subnet)))?;
    let host_ifname = host_ifname(id);
    let lease = Lease {
        rt,
        bridge,
        host_ifname,
        ipam,
        owner: id.to_owned(),
    };
    lease
        .rt
        .block_on(lease.bridge.attach(step, &lease.host_ifname, ip))
        .map_err(failed(format!("connecting {ip} to {}", net.bridge)))?;
    tracing::debug!(%ip, veth = %lease.host_ifname, "RUN step on the build bridge");
    Ok(lease)
}

/// The resolv.conf a RUN step sees, made from the host's: with `bridged`, loopback
/// nameservers (unreachable from the step's namespace) are dropped, then
/// `systemd_upstream` (systemd-resolved's list of real upstreams) is tried, then
/// Docker's public fallback resolvers. `search` and `options` lines are kept.
pub(crate) fn resolv_conf(host: &str, systemd_upstream: Option<&str>, bridged: bool) -> String {
    fn nameserver(l: &str) -> Option<&str> {
        let rest = l.trim().strip_prefix("nameserver")?;
        rest.starts_with([' ', '\t']).then(|| rest.trim())
    }
    fn usable(ns: &str, bridged: bool) -> bool {
        if !bridged {
            return true;
        }
        match ns.parse::<std::net::IpAddr>() {
            Ok(ip) => !ip.is_loopback(),
            Err(_) => false,
        }
    }
    let keep = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(nameserver)
            .filter(|ns| usable(ns, bridged))
            .map(|ns| format!("nameserver {ns}"))
            .collect()
    };
    let mut servers = keep(host);
    if servers.is_empty() && bridged {
        servers = systemd_upstream.map(keep).unwrap_or_default();
    }
    if servers.is_empty() && bridged {
        servers = FALLBACK_NAMESERVERS
            .iter()
            .map(|ns| format!("nameserver {ns}"))
            .collect();
    }
    let mut out: Vec<String> = host
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("search ") || l.starts_with("options "))
        .map(str::to_owned)
        .collect();
    out.splice(0..0, servers);
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// The host's resolv.conf for a RUN step (see [`resolv_conf`]).
pub(crate) fn host_resolv_conf(bridged: bool) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstream = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").ok();
    resolv_conf(&host, upstream.as_deref(), bridged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_drops_loopback_resolvers_on_the_bridge() {
        let host = "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp.example\noptions edns0 trust-ad\n";
        assert_eq!(
            resolv_conf(host, None, true),
            "nameserver 10.0.0.2\nsearch corp.example\noptions edns0 trust-ad\n"
        );
        // with the host's network the stub resolver is reachable
        assert_eq!(
            resolv_conf(host, None, false),
            "nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp.example\noptions edns0 trust-ad\n"
        );
    }

    #[test]
    fn resolv_conf_falls_back_to_systemd_upstreams_then_public_resolvers() {
        let stub = "nameserver 127.0.0.53\nnameserver ::1\nsearch lan\n";
        assert_eq!(
            resolv_conf(stub, Some("nameserver 192.168.1.1\n"), true),
            "nameserver 192.168.1.1\nsearch lan\n"
        );
        assert_eq!(
            resolv_conf(stub, Some("nameserver 127.0.0.1\n"), true),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch lan\n"
        );
        assert_eq!(
            resolv_conf("", None, true),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        // `nameservers` is not a nameserver line
        assert_eq!(
            resolv_conf("nameservers 1.2.3.4\nnameserver\t9.9.9.9\n", None, true),
            "nameserver 9.9.9.9\n"
        );
    }

    #[test]
    fn veth_names_fit_and_differ() {
        let a = host_ifname("kb-1234-0");
        let b = host_ifname("kb-1234-1");
        assert_eq!(a.len(), 14);
        assert_ne!(a, b);
        assert_eq!(a, host_ifname("kb-1234-0"));
    }

    #[test]
    fn defaults() {
        let n = BridgeNetwork::default();
        assert_eq!(n.gateway(), Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(n.nft_table(), "kcore-build-kcore-build0");
        assert_eq!(n.ipam_dir(), Path::new("/run/kcore-build/kcore-build0"));
    }
}
