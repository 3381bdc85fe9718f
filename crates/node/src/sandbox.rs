//! Pod sandboxes: a network namespace with an address on the node bridge, shared IPC
//! and UTS namespaces kept alive as bind mounts, a pod cgroup, and the pod's
//! `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use kcore_k8s::Quantity;
use kcore_ns::{mount, Namespace, NetnsDir};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorChain, Result};

/// What a sandbox consists of; saved as `sandbox.json` in the pod directory so a
/// restarted agent adopts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sandbox {
    pub uid: String,
    /// The pod's network namespace (`None` with hostNetwork: the node's).
    pub netns: Option<PathBuf>,
    /// Whether the agent created `netns` (and removes it).
    pub own_netns: bool,
    pub ipc: PathBuf,
    pub uts: PathBuf,
    pub ip: Ipv4Addr,
    pub host_ifname: Option<String>,
    pub cgroup: String,
    pub hostname: String,
    pub etc_hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub etc_hostname: PathBuf,
}

/// The cgroup of the pod with `uid` below `parent` (`<parent>/pod<uid with _ for ->`).
pub(crate) fn pod_cgroup(parent: &str, uid: &str) -> String {
    format!("{parent}/pod{}", uid.replace('-', "_"))
}

/// The host end name of a pod's veth pair (at most 15 bytes).
pub(crate) fn host_ifname(uid: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in uid.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("veth{h:08x}")
}

/// The pod's hostname: `spec.hostname` or the pod name (63 bytes at most).
pub(crate) fn hostname(pod: &Pod) -> String {
    let n = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    n.chars().take(63).collect()
}

/// Pod-level cgroup limits: the sum of the app containers' limits when every one of
/// them sets that limit (otherwise the pod is not bounded for that resource), summed
/// exactly and then rounded up, as the kubelet does.
pub(crate) fn pod_resources(pod: &Pod) -> kcore_cgroup::Resources {
    let mut r = kcore_cgroup::Resources::default();
    let Some(spec) = pod.spec.as_ref() else {
        return r;
    };
    let sum = |k: &str| -> Option<Quantity> {
        let mut total = Quantity::ZERO;
        for c in &spec.containers {
            let q = c
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get(k))
                .and_then(|q| Quantity::try_from(q).ok())?;
            total = total.checked_add(q)?;
        }
        Some(total)
    };
    // Negative amounts (invalid upstream) count as zero.
    if let Some(m) = sum("memory") {
        r.memory.limit = Some(m.value().max(0));
    }
    if let Some(c) = sum("cpu") {
        r.cpu.period = Some(100_000);
        r.cpu.quota = Some(c.milli_value().max(0).saturating_mul(100));
    }
    r
}

/// `/etc/resolv.conf` for a pod.
pub(crate) fn resolv_conf(
    pod: &Pod,
    cluster_dns: Option<Ipv4Addr>,
    domain: &str,
    host_resolv: &str,
) -> String {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let host_net = spec.and_then(|s| s.host_network).unwrap_or(false);
    let mut servers: Vec<String> = Vec::new();
    let mut search: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let use_cluster = match policy {
        "ClusterFirst" => !host_net,
        "ClusterFirstWithHostNet" => true,
        _ => false,
    };
    if policy != "None" {
        if let (true, Some(ip)) = (use_cluster, cluster_dns) {
            servers.push(ip.to_string());
            search = vec![
                format!("{ns}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_owned(),
            ];
            options.push("ndots:5".into());
        } else {
            for l in host_resolv.lines() {
                let mut it = l.split_whitespace();
                match it.next() {
                    Some("nameserver") => servers.extend(it.next().map(str::to_owned)),
                    Some("search") => search.extend(it.map(str::to_owned)),
                    _ => {}
                }
            }
        }
    }
    if let Some(cfg) = spec.and_then(|s| s.dns_config.as_ref()) {
        for s in cfg.nameservers.iter().flatten() {
            if !servers.contains(s) {
                servers.push(s.clone());
            }
        }
        for s in cfg.searches.iter().flatten() {
            if !search.contains(s) {
                search.push(s.clone());
            }
        }
        for o in cfg.options.iter().flatten() {
            let Some(name) = o.name.as_deref() else {
                continue;
            };
            let v = match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.to_owned(),
            };
            options.retain(|x| x.split(':').next() != Some(name));
            options.push(v);
        }
    }
    let mut out = String::new();
    for s in servers.iter().take(3) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// `/etc/hosts` for a pod.
pub(crate) fn etc_hosts(pod: &Pod, ip: Ipv4Addr, domain: &str) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let host = hostname(pod);
    let spec = pod.spec.as_ref();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    match spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
    {
        Some(sub) => s.push_str(&format!("{ip}\t{host}.{sub}.{ns}.svc.{domain}\t{host}\n")),
        None => s.push_str(&format!("{ip}\t{host}\n")),
    }
    for a in spec
        .and_then(|s| s.host_aliases.as_ref())
        .into_iter()
        .flatten()
    {
        {
            let aip = &a.ip;
            s.push_str(&format!(
                "{aip}\t{}\n",
                a.hostnames.clone().unwrap_or_default().join("\t")
            ));
        }
    }
    s
}

/// Creates new IPC and UTS namespaces (hostname set) on a short-lived thread and keeps
/// them at `ipc` / `uts`.
fn make_ipc_uts(ipc: &Path, uts: &Path, host: &str) -> Result<()> {
    for p in [ipc, uts] {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .map_err(|e| Error::io("create", p, e))?;
    }
    let (ipc, uts, host) = (ipc.to_owned(), uts.to_owned(), host.to_owned());
    std::thread::spawn(move || -> kcore_ns::Result<()> {
        kcore_ns::unshare(Namespace::Ipc | Namespace::Uts)?;
        kcore_ns::set_hostname(&host)?;
        mount::bind(
            Path::new("/proc/thread-self/ns/ipc"),
            &ipc,
            false,
            mount::MountFlags::NONE,
        )?;
        mount::bind(
            Path::new("/proc/thread-self/ns/uts"),
            &uts,
            false,
            mount::MountFlags::NONE,
        )
    })
    .join()
    .unwrap_or(Err(kcore_ns::Error::ThreadPanicked { ns: Namespace::Ipc }))
    .map_err(|e| Error::ns("create pod ipc/uts namespaces", e))
}

fn unbind(p: &Path) {
    if p.exists() {
        let _ = mount::unmount(p, true);
        let _ = std::fs::remove_file(p);
    }
}

/// The node-side pieces sandboxes are made with (cheap to clone: paths and handles).
#[derive(Clone)]
pub(crate) struct SandboxEnv {
    pub netns_dir: NetnsDir,
    pub node_netns: Option<PathBuf>,
    pub ipam: kcore_netbridge::Ipam,
    pub bridge: Option<kcore_netbridge::Bridge>,
    pub cgroup_parent: String,
    pub node_ip: Ipv4Addr,
    pub cluster_dns: Option<Ipv4Addr>,
    pub domain: String,
}

/// Runs blocking sandbox work (namespaces, IPAM with its fsync, cgroups, files) off
/// the async workers, so that many pods starting at once do not stall the agent.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

impl Sandbox {
    pub fn load(pod_dir: &Path) -> Option<Sandbox> {
        let data = std::fs::read(pod_dir.join("sandbox.json")).ok()?;
        serde_json::from_slice(&data).ok()
    }

    fn save(&self, pod_dir: &Path) -> Result<()> {
        let p = pod_dir.join("sandbox.json");
        let data = serde_json::to_vec(self).expect("json");
        kcore_statedir::write(&p, &data, kcore_statedir::PRIVATE_FILE)
            .map_err(|e| Error::io("write", &p, e))
    }

    /// Creates the sandbox (or re-creates the missing parts of a saved one).
    pub async fn ensure(pod: &Pod, pod_dir: &Path, env: &SandboxEnv) -> Result<Sandbox> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        tracing::debug!(uid = %uid, "ensure sandbox");
        // 0750 like the kubelet's pod directories: other users reach no volume through it
        kcore_statedir::ensure_dir(pod_dir, kcore_statedir::GROUP_DIR)
            .map_err(|e| Error::io("create", pod_dir, e))?;
        if let Some(sb) = Sandbox::load(pod_dir) {
            let net_ok = sb.netns.as_ref().is_none_or(|p| p.exists());
            if net_ok && sb.ipc.exists() && sb.uts.exists() {
                return Ok(sb);
            }
        }
        let host_net = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let (netns, own_netns, ip, host_ifname) = if host_net {
            (env.node_netns.clone(), false, env.node_ip, None)
        } else {
            let (e, u) = (env.clone(), uid.clone());
            let (ns, ip) =
                blocking(move || {
                    let name = format!("pod-{u}");
                    let ns = e.netns_dir.open_or_create(&name).map_err(|err| {
                        Error::ns(format!("create network namespace {name}"), err)
                    })?;
                    let ip = e.ipam.allocate(&u).map_err(|err| {
                        Error::net(format!("allocate an address for pod {u}"), err)
                    })?;
                    Ok((ns, ip))
                })
                .await?;
            let ifname = host_ifname(&uid);
            if let Some(bridge) = &env.bridge {
                bridge
                    .attach(&ns, &ifname, ip)
                    .await
                    .map_err(|e| Error::net(format!("attach pod {uid}"), e))?;
            }
            (Some(ns.path().to_owned()), true, ip, Some(ifname))
        };
        let (pod, pod_dir, env) = (pod.clone(), pod_dir.to_owned(), env.clone());
        blocking(move || {
            let host = hostname(&pod);
            let ipc = pod_dir.join("ipc");
            let uts = pod_dir.join("uts");
            unbind(&ipc);
            unbind(&uts);
            make_ipc_uts(&ipc, &uts, &host)?;
            let cgroup = pod_cgroup(&env.cgroup_parent, &uid);
            let cg_err = |e: kcore_cgroup::Error| Error::Cgroup {
                path: cgroup.clone(),
                source: Box::new(e),
            };
            let cg = kcore_cgroup::Host::system()
                .and_then(|h| kcore_cgroup::Cgroup::create(h, &cgroup))
                .map_err(cg_err)?;
            if let Err(e) = cg.set_resources(&pod_resources(&pod)) {
                tracing::warn!(error = %ErrorChain(&e), "pod cgroup limits");
            }
            let etc = pod_dir.join("etc");
            std::fs::create_dir_all(&etc).map_err(|e| Error::io("create", &etc, e))?;
            let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            let files = [
                ("hosts", etc_hosts(&pod, ip, &env.domain)),
                (
                    "resolv.conf",
                    resolv_conf(&pod, env.cluster_dns, &env.domain, &host_resolv),
                ),
                ("hostname", format!("{host}\n")),
            ];
            for (n, content) in &files {
                let p = etc.join(n);
                std::fs::write(&p, content).map_err(|e| Error::io("write", &p, e))?;
            }
            let sb = Sandbox {
                uid,
                netns,
                own_netns,
                ipc,
                uts,
                ip,
                host_ifname,
                cgroup,
                hostname: host,
                etc_hosts: etc.join("hosts"),
                resolv_conf: etc.join("resolv.conf"),
                etc_hostname: etc.join("hostname"),
            };
            sb.save(&pod_dir)?;
            Ok(sb)
        })
        .await
    }

    /// Removes everything the sandbox holds (idempotent).
    pub async fn teardown(&self, pod_dir: &Path, env: &SandboxEnv) {
        tracing::debug!(uid = %self.uid, "tear down sandbox");
        let (sb, env2) = (self.clone(), env.clone());
        let netns_removed = blocking(move || {
            // the pod's processes first, so nothing keeps its namespaces alive
            if let Ok(h) = kcore_cgroup::Host::system() {
                if let Ok(cg) = kcore_cgroup::Cgroup::open(h, &sb.cgroup) {
                    let _ = cg.kill();
                    if let Err(e) = cg.delete() {
                        tracing::warn!(error = %ErrorChain(&e), "remove pod cgroup");
                    }
                }
            }
            unbind(&sb.ipc);
            unbind(&sb.uts);
            if !sb.own_netns {
                return Ok(false);
            }
            match env2.netns_dir.remove(&format!("pod-{}", sb.uid)) {
                Ok(_) => Ok(true),
                Err(e) => {
                    tracing::warn!(error = %ErrorChain(&e), "remove pod network namespace");
                    Ok(false)
                }
            }
        })
        .await
        .unwrap_or(false);
        // A removed namespace takes its veth pair with it: the kernel unregisters the
        // devices of dying namespaces in batches, off this path. Deleting each pair
        // here instead holds the rtnl lock ~20 ms per pod, which stalled the sandboxes
        // of pods starting meanwhile.
        if !netns_removed {
            if let (Some(ifname), Some(bridge)) = (&self.host_ifname, &env.bridge) {
                if let Err(e) = bridge.detach(ifname).await {
                    tracing::warn!(error = %ErrorChain(&e), "detach pod interface");
                }
            }
        }
        let (sb, pod_dir, env) = (self.clone(), pod_dir.to_owned(), env.clone());
        let _ = blocking(move || {
            // the address is free once its namespace is on its way out
            if sb.own_netns {
                let _ = env.ipam.release(&sb.uid);
            }
            let _ = std::fs::remove_file(pod_dir.join("sandbox.json"));
            Ok(())
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn resolv_conf_points_cluster_first_pods_at_cluster_dns() {
        let p = pod(
            json!({"metadata": {"name": "a", "namespace": "shop"}, "spec": {"containers": []}}),
        );
        let r = resolv_conf(
            &p,
            Some(Ipv4Addr::new(10, 244, 0, 1)),
            "cluster.local",
            "nameserver 9.9.9.9\n",
        );
        assert_eq!(
            r,
            "nameserver 10.244.0.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
        let p = pod(
            json!({"metadata": {"name": "a"}, "spec": {"dnsPolicy": "Default", "containers": []}}),
        );
        let r = resolv_conf(
            &p,
            Some(Ipv4Addr::new(10, 244, 0, 1)),
            "cluster.local",
            "nameserver 9.9.9.9\nsearch lan\n",
        );
        assert_eq!(r, "nameserver 9.9.9.9\nsearch lan\n");
    }

    #[test]
    fn hosts_file_names_the_pod_and_aliases() {
        let p = pod(
            json!({"metadata": {"name": "web-0", "namespace": "d"}, "spec": {
            "subdomain": "web", "containers": [],
            "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["a", "b"]}]}}),
        );
        let h = etc_hosts(&p, Ipv4Addr::new(10, 0, 0, 9), "cluster.local");
        assert!(h.contains("10.0.0.9\tweb-0.web.d.svc.cluster.local\tweb-0\n"));
        assert!(h.contains("1.2.3.4\ta\tb\n"));
    }

    #[test]
    fn pod_limits_sum_only_when_every_container_sets_them() {
        let p = pod(json!({"metadata": {"name": "a"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}},
            {"name": "b", "resources": {"limits": {"memory": "32Mi"}}}
        ]}}));
        let r = pod_resources(&p);
        assert_eq!(r.memory.limit, Some(96 << 20));
        assert_eq!(r.cpu.quota, None);
        assert_eq!(host_ifname("x").len(), 12);
    }

    #[test]
    fn pod_limits_are_summed_exactly() {
        // f64 read 123456789123456789 as ...784, and 0.1 + 0.2 cores as 300.00000000000006m
        let p = pod(json!({"metadata": {"name": "a"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"memory": "123456789123456789", "cpu": "0.1"}}},
            {"name": "b", "resources": {"limits": {"memory": "1", "cpu": "0.2"}}}
        ]}}));
        let r = pod_resources(&p);
        assert_eq!(r.memory.limit, Some(123_456_789_123_456_790));
        assert_eq!(r.cpu.quota, Some(30_000));
    }
}
