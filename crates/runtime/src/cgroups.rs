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

/// Converts the limits kcore-cgroup applies on a host in `mode`; returns the names of
/// the ones it ignores. `memory.swappiness` and `memory.disableOOMKiller` are v1
/// controls: on a pure v2 host they are ignored, as runc does.
pub(crate) fn resources(r: &LinuxResources, mode: CgroupMode) -> (Resources, Vec<&'static str>) {
    let mut out = Resources::default();
    let mut ignored = Vec::new();
    if let Some(m) = r.memory() {
        out.memory.limit = m.limit();
        out.memory.swap = m.swap();
        out.memory.reservation = m.reservation();
        let v1 = mode != CgroupMode::V2;
        if let Some(sw) = m.swappiness() {
            if v1 {
                out.memory.swappiness = Some(sw);
            } else {
                ignored.push("memory.swappiness");
            }
        }
        if m.disable_oom_killer() == Some(true) {
            if v1 {
                out.memory.oom_kill_disable = Some(true);
            } else {
                ignored.push("memory.disableOOMKiller");
            }
        }
    }
    if let Some(c) = r.cpu() {
        out.cpu.shares = c.shares();
        out.cpu.quota = c.quota();
        out.cpu.period = c.period();
        out.cpu.cpus = c.cpus().clone().filter(|s| !s.is_empty());
        out.cpu.mems = c.mems().clone().filter(|s| !s.is_empty());
        if c.realtime_runtime().is_some() || c.realtime_period().is_some() {
            ignored.push("cpu.realtime");
        }
    }
    if let Some(p) = r.pids() {
        out.pids.max = Some(p.limit());
    }
    if let Some(b) = r.block_io() {
        out.io.weight = b.weight();
        if b.weight_device().is_some()
            || b.throttle_read_bps_device().is_some()
            || b.throttle_write_bps_device().is_some()
        {
            ignored.push("blockIO devices");
        }
    }
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        ignored.push("hugepageLimits");
    }
    if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        ignored.push("unified");
    }
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
