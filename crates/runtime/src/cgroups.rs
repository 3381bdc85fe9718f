//! From the spec's `linux.resources` to kcore-cgroup, plus v1 device rules.

use std::path::{Path, PathBuf};

use kcore_cgroup::{CgroupMode, Controller, Host, Resources};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use crate::error::{Error, Result};

/// The cgroup path for a container: the spec's `cgroupsPath` (a systemd-style
/// `slice:prefix:name` becomes `slice/prefix-name.scope`), else `kcore-runc-<id>`.
pub(crate) fn cgroup_path(spec_path: Option<&Path>, id: &str) -> PathBuf {
    match spec_path.and_then(Path::to_str) {
        Some(p) if !p.is_empty() => {
            let parts: Vec<&str> = p.split(':').collect();
            if parts.len() == 3 && !p.starts_with('/') {
                let slice = if parts[0].is_empty() {
                    "system.slice"
                } else {
                    parts[0]
                };
                PathBuf::from(slice).join(format!("{}-{}.scope", parts[1], parts[2]))
            } else {
                // Relative to the hierarchy roots (so `root.join(path)` stays below them).
                PathBuf::from(p.trim_start_matches('/'))
            }
        }
        _ => PathBuf::from(format!("kcore-runc-{id}")),
    }
}

/// Converts `linux.resources` to kcore-cgroup's [`Resources`]; returns the names of
/// the fields left alone on a host in `mode`, as runc leaves them: on pure v2,
/// `memory.swappiness`, `memory.disableOOMKiller`, `memory.kernelTCP` and the blkio
/// leaf weights (v2 has no such files); everywhere, the obsolete `memory.kernel`.
/// What a host cannot apply at all (a controller it lacks, `unified` on v1, realtime
/// CPU time on v2) is refused by [`kcore_cgroup::Cgroup::set_resources`].
pub(crate) fn resources(r: &LinuxResources, mode: CgroupMode) -> (Resources, Vec<&'static str>) {
    let mut out = Resources::default();
    let mut ignored = Vec::new();
    let v1 = mode != CgroupMode::V2;
    let v1_only = |name: &'static str, ignored: &mut Vec<&'static str>| {
        if !v1 {
            ignored.push(name);
        }
        v1
    };
    // Zero means "not set" for the scalar limits, as in runc (engines such as Docker send
    // every field of `update`'s resources, the ones not asked for as 0).
    let nz = |v: Option<i64>| v.filter(|v| *v != 0);
    let nzu = |v: Option<u64>| v.filter(|v| *v != 0);
    if let Some(m) = r.memory() {
        out.memory.limit = nz(m.limit());
        out.memory.swap = nz(m.swap());
        out.memory.reservation = nz(m.reservation());
        if let Some(sw) = m.swappiness() {
            if v1_only("memory.swappiness", &mut ignored) {
                out.memory.swappiness = Some(sw);
            }
        }
        if m.disable_oom_killer() == Some(true) && v1_only("memory.disableOOMKiller", &mut ignored)
        {
            out.memory.oom_kill_disable = Some(true);
        }
        if let Some(tcp) = m.kernel_tcp().filter(|v| *v != 0) {
            if v1_only("memory.kernelTCP", &mut ignored) {
                out.memory.kernel_tcp = Some(tcp);
            }
        }
        #[allow(deprecated)]
        if m.kernel().is_some_and(|k| k != 0) {
            ignored.push("memory.kernel");
        }
    }
    if let Some(c) = r.cpu() {
        out.cpu.shares = nzu(c.shares());
        out.cpu.quota = nz(c.quota());
        out.cpu.period = nzu(c.period());
        out.cpu.cpus = c.cpus().clone().filter(|s| !s.is_empty());
        out.cpu.mems = c.mems().clone().filter(|s| !s.is_empty());
        out.cpu.realtime_runtime = nz(c.realtime_runtime());
        out.cpu.realtime_period = nzu(c.realtime_period());
    }
    if let Some(p) = r.pids() {
        out.pids.max = nz(Some(p.limit()));
    }
    if let Some(b) = r.block_io() {
        out.io.weight = b.weight().filter(|w| *w != 0);
        if b.leaf_weight().is_some_and(|w| w != 0) && v1_only("blockIO.leafWeight", &mut ignored) {
            out.io.leaf_weight = b.leaf_weight();
        }
        for d in b.weight_device().iter().flatten() {
            let leaf = d.leaf_weight().filter(|w| *w != 0);
            let leaf =
                if leaf.is_some() && !v1_only("blockIO.weightDevice.leafWeight", &mut ignored) {
                    None
                } else {
                    leaf
                };
            out.io.weight_device.push(kcore_cgroup::WeightDevice {
                major: d.major(),
                minor: d.minor(),
                weight: d.weight(),
                leaf_weight: leaf,
            });
        }
        let throttles = |l: &Option<Vec<oci_spec::runtime::LinuxThrottleDevice>>| {
            l.iter()
                .flatten()
                .map(|d| kcore_cgroup::ThrottleDevice {
                    major: d.major(),
                    minor: d.minor(),
                    rate: d.rate(),
                })
                .collect::<Vec<_>>()
        };
        out.io.throttle_read_bps = throttles(b.throttle_read_bps_device());
        out.io.throttle_write_bps = throttles(b.throttle_write_bps_device());
        out.io.throttle_read_iops = throttles(b.throttle_read_iops_device());
        out.io.throttle_write_iops = throttles(b.throttle_write_iops_device());
    }
    for h in r.hugepage_limits().iter().flatten() {
        out.hugetlb.push(kcore_cgroup::HugetlbLimit {
            page_size: h.page_size().clone(),
            // A negative limit is "unlimited" in the spec's int64: the largest value.
            limit: u64::try_from(h.limit()).unwrap_or(u64::MAX),
        });
    }
    if let Some(n) = r.network() {
        out.network.class_id = n.class_id();
        out.network.priorities = n
            .priorities()
            .iter()
            .flatten()
            .map(|p| (p.name().clone(), p.priority()))
            .collect();
    }
    for (dev, l) in r.rdma().iter().flatten() {
        out.rdma.insert(
            dev.clone(),
            kcore_cgroup::RdmaLimit {
                hca_handles: l.hca_handles(),
                hca_objects: l.hca_objects(),
            },
        );
    }
    for (k, v) in r.unified().iter().flatten() {
        out.unified.insert(k.clone(), v.clone());
    }
    ignored.dedup();
    (out, ignored)
}

/// `(name, directory)` of the container's cgroup in each hierarchy, for `cgroup` mounts.
/// On a pure v2 host the single entry has an empty name.
pub(crate) fn mount_dirs(host: &Host, path: &Path) -> Vec<(String, PathBuf)> {
    if host.mode() == CgroupMode::V2 {
        return host
            .unified()
            .map(|u| vec![(String::new(), u.join(path))])
            .unwrap_or_default();
    }
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    let roots = host
        .v1_controllers()
        .map(|(_, p)| p)
        .chain(host.unified())
        .map(Path::to_path_buf);
    for root in roots {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.is_empty() || out.iter().any(|(n, _)| *n == name) {
            continue;
        }
        out.push((name, root.join(path)));
    }
    out
}

/// The files a process writes `0` to in order to join the cgroup itself: every v1
/// controller hierarchy's `tasks` (on hybrid hosts the membership-only unified
/// hierarchy is left out), or the unified `cgroup.procs` on pure v2 hosts.
pub(crate) fn self_attach_files(host: &Host, path: &Path) -> Vec<PathBuf> {
    if host.mode() == CgroupMode::V2 {
        return host
            .unified()
            .map(|u| vec![u.join(path).join("cgroup.procs")])
            .unwrap_or_default();
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for (_, root) in host.v1_controllers() {
        let f = root.join(path).join("tasks");
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

fn rule(d: &LinuxDeviceCgroup) -> String {
    let t = d.typ().map_or("a", |t| match t {
        oci_spec::runtime::LinuxDeviceType::B => "b",
        oci_spec::runtime::LinuxDeviceType::C | oci_spec::runtime::LinuxDeviceType::U => "c",
        _ => "a",
    });
    let n = |v: Option<i64>| {
        v.filter(|v| *v >= 0)
            .map_or("*".to_string(), |v| v.to_string())
    };
    let access = d
        .access()
        .clone()
        .filter(|a| !a.is_empty())
        .unwrap_or("rwm".into());
    format!("{t} {}:{} {access}", n(d.major()), n(d.minor()))
}

/// Writes the v1 `devices` rules: the spec's list in order, then the devices the
/// runtime creates itself (so a "deny all" spec still gets `/dev/null` and friends).
/// A no-op on hosts without the v1 devices controller.
pub(crate) fn apply_devices(
    host: &Host,
    path: &Path,
    rules: &[LinuxDeviceCgroup],
    created: &[(char, i64, i64)],
) -> Result<()> {
    let Some(root) = host.v1_mount(Controller::Devices) else {
        return Ok(());
    };
    if rules.is_empty() {
        return Ok(());
    }
    let dir = root.join(path);
    let write = |file: &str, line: &str| -> Result<()> {
        let p = dir.join(file);
        std::fs::write(&p, line).map_err(|e| Error::io("write", p, e))
    };
    for r in rules {
        write(
            if r.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            },
            &rule(r),
        )?;
    }
    let defaults = [
        ('c', 1, 3),
        ('c', 1, 5),
        ('c', 1, 7),
        ('c', 1, 8),
        ('c', 1, 9),
        ('c', 5, 0),
        ('c', 5, 1),
        ('c', 5, 2),
        ('c', 136, -1),
    ];
    for (t, major, minor) in defaults.iter().chain(created) {
        let minor = if *minor < 0 {
            "*".to_string()
        } else {
            minor.to_string()
        };
        write("devices.allow", &format!("{t} {major}:{minor} rwm"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(cgroup_path(None, "a"), PathBuf::from("kcore-runc-a"));
        assert_eq!(
            cgroup_path(Some(Path::new("/k/pod1/c")), "a"),
            PathBuf::from("k/pod1/c")
        );
        assert_eq!(
            cgroup_path(Some(Path::new("system.slice:kcore:abc")), "a"),
            PathBuf::from("system.slice/kcore-abc.scope")
        );
    }

    #[test]
    fn converts_limits_and_rules() {
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory": {"limit": 1048576, "swappiness": 1}, "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": ""},
                "pids": {"limit": 20}, "blockIO": {"weight": 300}, "devices": [{"allow": false, "access": "rwm"}]}"#,
        )
        .unwrap();
        let (res, ignored) = resources(&r, CgroupMode::V1);
        assert_eq!(res.memory.limit, Some(1 << 20));
        assert_eq!(res.memory.swappiness, Some(1));
        assert_eq!(res.cpu.shares, Some(512));
        assert_eq!(res.cpu.quota, Some(50000));
        assert_eq!(res.cpu.cpus, None);
        assert_eq!(res.pids.max, Some(20));
        assert_eq!(res.io.weight, Some(300));
        assert!(ignored.is_empty(), "{ignored:?}");
        assert_eq!(rule(&r.devices().as_ref().unwrap()[0]), "a *:* rwm");
    }

    /// swappiness and disableOOMKiller per host mode: applied on v1 and hybrid hosts,
    /// ignored (and reported) on v2.
    #[test]
    fn swappiness_and_oom_killer_per_mode() {
        let r: LinuxResources =
            serde_json::from_str(r#"{"memory": {"swappiness": 0, "disableOOMKiller": true}}"#)
                .unwrap();
        for (mode, swappiness, oom, ignored) in [
            (CgroupMode::V1, Some(0), Some(true), vec![]),
            (CgroupMode::Hybrid, Some(0), Some(true), vec![]),
            (
                CgroupMode::V2,
                None,
                None,
                vec!["memory.swappiness", "memory.disableOOMKiller"],
            ),
        ] {
            let (res, got) = resources(&r, mode);
            assert_eq!(res.memory.swappiness, swappiness, "{mode:?}");
            assert_eq!(res.memory.oom_kill_disable, oom, "{mode:?}");
            assert_eq!(got, ignored, "{mode:?}");
        }
        // disableOOMKiller: false asks for nothing.
        let r: LinuxResources =
            serde_json::from_str(r#"{"memory": {"disableOOMKiller": false}}"#).unwrap();
        let (res, got) = resources(&r, CgroupMode::V2);
        assert!(res.is_empty() && got.is_empty());
    }

    /// Every `linux.resources` field reaches kcore-cgroup; per host mode, the fields v2
    /// has no file for are reported as left alone (runc's behaviour).
    #[test]
    fn every_field_converts_and_v2_leaves_the_v1_only_ones() {
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory": {"limit": 1048576, "kernelTCP": 65536, "kernel": 4096, "swappiness": 10, "disableOOMKiller": true},
                "cpu": {"realtimeRuntime": 950000, "realtimePeriod": 1000000},
                "blockIO": {"weight": 300, "leafWeight": 400,
                    "weightDevice": [{"major": 8, "minor": 0, "weight": 500, "leafWeight": 600}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1}],
                    "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 2}],
                    "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 3}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 4}]},
                "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
                "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]},
                "rdma": {"mlx5_0": {"hcaHandles": 3}},
                "unified": {"memory.high": "1G"}}"#,
        )
        .unwrap();
        for (mode, ignored) in [
            (CgroupMode::V1, vec!["memory.kernel"]),
            (CgroupMode::Hybrid, vec!["memory.kernel"]),
            (
                CgroupMode::V2,
                vec![
                    "memory.swappiness",
                    "memory.disableOOMKiller",
                    "memory.kernelTCP",
                    "memory.kernel",
                    "blockIO.leafWeight",
                    "blockIO.weightDevice.leafWeight",
                ],
            ),
        ] {
            let (res, got) = resources(&r, mode);
            assert_eq!(got, ignored, "{mode:?}");
            let v1 = mode != CgroupMode::V2;
            assert_eq!(res.memory.kernel_tcp, v1.then_some(65536), "{mode:?}");
            assert_eq!(res.io.leaf_weight, v1.then_some(400), "{mode:?}");
            assert_eq!(res.io.weight_device[0].leaf_weight, v1.then_some(600));
            assert_eq!(res.io.weight_device[0].weight, Some(500));
            assert_eq!(res.cpu.realtime_runtime, Some(950_000));
            assert_eq!(res.cpu.realtime_period, Some(1_000_000));
            let rates: Vec<u64> = [
                &res.io.throttle_read_bps,
                &res.io.throttle_write_bps,
                &res.io.throttle_read_iops,
                &res.io.throttle_write_iops,
            ]
            .iter()
            .map(|l| l[0].rate)
            .collect();
            assert_eq!(rates, [1, 2, 3, 4]);
            assert_eq!(res.hugetlb[0].page_size, "2MB");
            assert_eq!(res.hugetlb[0].limit, 4 << 20);
            assert_eq!(res.network.class_id, Some(0x10_0001));
            assert_eq!(res.network.priorities, vec![("eth0".to_string(), 5)]);
            assert_eq!(res.rdma["mlx5_0"].hca_handles, Some(3));
            assert_eq!(res.rdma["mlx5_0"].hca_objects, None);
            assert_eq!(res.unified["memory.high"], "1G");
        }
    }

    #[test]
    fn device_rules_on_fake_v1() {
        let dir = tempfile::tempdir().unwrap();
        let devs = dir.path().join("devices");
        std::fs::create_dir_all(devs.join("ctr")).unwrap();
        let host = Host::v1([(Controller::Devices, devs.clone())]);
        let rules: Vec<LinuxDeviceCgroup> =
            serde_json::from_str(r#"[{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rw"}]"#)
                .unwrap();
        apply_devices(&host, Path::new("ctr"), &rules, &[('b', 7, 0)]).unwrap();
        // Each write replaces the fake file: the last allow is the runtime's own device.
        assert_eq!(
            std::fs::read_to_string(devs.join("ctr/devices.deny")).unwrap(),
            "a *:* rwm"
        );
        assert_eq!(
            std::fs::read_to_string(devs.join("ctr/devices.allow")).unwrap(),
            "b 7:0 rwm"
        );
        assert_eq!(
            mount_dirs(&host, Path::new("ctr")),
            vec![("devices".to_string(), devs.join("ctr"))]
        );
    }
}
