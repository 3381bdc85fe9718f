//! `linux.intelRdt` through the resctrl filesystem: a group per container (or the
//! config's `closID`), its `schemata` (`l3CacheSchema`, `memBwSchema`, `schemata`
//! lines), and the container's processes in its `tasks`.
//!
//! Like runc, a config that asks for Intel RDT on a host without a resctrl mount, or
//! for a schema the host's resctrl does not offer (`info/L3` for cache allocation,
//! `info/MB` for memory bandwidth), is refused before the container exists. The
//! resctrl root is a parameter, so the writing is unit-tested on a fake directory.
//!
//! `update --l3-cache-schema/--mem-bw-schema` ([`update`]) rewrites a live container's
//! schemata (making its group first when the config had no `intelRdt`, as runc does),
//! and [`stats`] reads what `runc events` reports under `intel_rdt`: the allocation
//! info and schemata (CAT, MBA) and the monitoring counters (CMT `llc_occupancy`, MBM
//! `mbm_total_bytes`/`mbm_local_bytes`) of every `mon_data/mon_L3_*` domain.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxIntelRdt;

use crate::error::{Error, Result};

/// A resctrl filesystem (normally mounted at `/sys/fs/resctrl`).
#[derive(Debug, Clone)]
pub(crate) struct Resctrl {
    root: PathBuf,
}

/// The group a container's processes join, with what to write there.
#[derive(Debug, Clone)]
pub(crate) struct RdtPlan {
    /// `<resctrl>/<closID or container id>`.
    pub group: PathBuf,
    /// `schemata` content (one line per schema), empty to leave the group's as it is.
    pub schemata: String,
    /// `enableMonitoring`: the container's own monitoring group,
    /// `<group>/mon_groups/<id>` (as runc makes it).
    pub mon_group: Option<PathBuf>,
}

impl Resctrl {
    /// The resctrl mount of this host, from `/proc/self/mountinfo`.
    pub(crate) fn find() -> Option<Resctrl> {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        mi.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if post.split_whitespace().next()? != "resctrl" {
                return None;
            }
            Some(Resctrl {
                root: PathBuf::from(pre.split_whitespace().nth(4)?),
            })
        })
    }

    /// A resctrl filesystem at `root` (tests use a plain directory).
    #[cfg(test)]
    pub(crate) fn at(root: impl Into<PathBuf>) -> Resctrl {
        Resctrl { root: root.into() }
    }

    /// What this resctrl offers, from its `info` directory (as runc's intelrdt init).
    pub(crate) fn features(&self) -> RdtFeatures {
        let info = self.root.join("info");
        let mon = std::fs::read_to_string(info.join("L3_MON/mon_features")).unwrap_or_default();
        let has = |f: &str| mon.lines().any(|l| l.trim() == f);
        RdtFeatures {
            cat: info.join("L3").is_dir(),
            mba: info.join("MB").is_dir(),
            cmt: has("llc_occupancy"),
            mbm_total: has("mbm_total_bytes"),
            mbm_local: has("mbm_local_bytes"),
        }
    }
}

/// The parts of Intel RDT a resctrl filesystem offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RdtFeatures {
    /// Cache allocation (`info/L3`).
    pub cat: bool,
    /// Memory bandwidth allocation (`info/MB`).
    pub mba: bool,
    /// Cache monitoring (`llc_occupancy` in `info/L3_MON/mon_features`).
    pub cmt: bool,
    /// Memory bandwidth monitoring, total bytes.
    pub mbm_total: bool,
    /// Memory bandwidth monitoring, local bytes.
    pub mbm_local: bool,
}

impl RdtFeatures {
    fn mbm(self) -> bool {
        self.mbm_total || self.mbm_local
    }
}

fn unavailable(field: &'static str, missing: String) -> Error {
    Error::IntelRdtUnavailable { field, missing }
}

/// Checks `rdt` against the host's resctrl (`None`: the host has none) and plans the
/// group of container `id`. `Ok(None)` when the config does not ask for Intel RDT.
pub(crate) fn plan(
    rdt: Option<&LinuxIntelRdt>,
    host: Option<&Resctrl>,
    id: &str,
) -> Result<Option<RdtPlan>> {
    let Some(rdt) = rdt else {
        return Ok(None);
    };
    let Some(host) = host else {
        return Err(unavailable(
            "linux.intelRdt",
            "no resctrl filesystem is mounted".into(),
        ));
    };
    let l3 = rdt.l3_cache_schema().as_deref().filter(|s| !s.is_empty());
    let mb = rdt.mem_bw_schema().as_deref().filter(|s| !s.is_empty());
    if l3.is_some() && !host.root.join("info/L3").is_dir() {
        return Err(unavailable(
            "linux.intelRdt.l3CacheSchema",
            format!(
                "no {} (cache allocation)",
                host.root.join("info/L3").display()
            ),
        ));
    }
    if mb.is_some() && !host.root.join("info/MB").is_dir() {
        return Err(unavailable(
            "linux.intelRdt.memBwSchema",
            format!(
                "no {} (memory bandwidth allocation)",
                host.root.join("info/MB").display()
            ),
        ));
    }
    let f = host.features();
    #[allow(deprecated)]
    let (cmt, mbm) = (*rdt.enable_cmt(), *rdt.enable_mbm());
    if cmt == Some(true) && !f.cmt {
        return Err(unavailable(
            "linux.intelRdt.enableCMT",
            "Intel RDT/CMT is not enabled (no llc_occupancy in info/L3_MON/mon_features)".into(),
        ));
    }
    if mbm == Some(true) && !f.mbm() {
        return Err(unavailable(
            "linux.intelRdt.enableMBM",
            "Intel RDT/MBM is not enabled (no mbm_*_bytes in info/L3_MON/mon_features)".into(),
        ));
    }
    let monitoring = *rdt.enable_monitoring() == Some(true);
    if monitoring && !f.cmt && !f.mbm() {
        return Err(unavailable(
            "linux.intelRdt.enableMonitoring",
            "no resctrl monitoring (info/L3_MON)".into(),
        ));
    }
    let name = rdt.clos_id().as_deref().unwrap_or(id);
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::InvalidSpec {
            file: "config.json".into(),
            field: "linux.intelRdt.closID".into(),
            message: format!("{name:?} is not a resctrl group name"),
        });
    }
    let mut lines: Vec<&str> = Vec::new();
    // Each schema may hold several lines ("L3:0=f;1=f\nL3CODE:…"); keep them as given.
    lines.extend(l3.into_iter().flat_map(str::lines));
    lines.extend(mb.into_iter().flat_map(str::lines));
    lines.extend(rdt.schemata().iter().flatten().map(String::as_str));
    let mut schemata = lines.join("\n");
    if !schemata.is_empty() {
        schemata.push('\n');
    }
    let group = host.root.join(name);
    if rdt.clos_id().is_some() && schemata.is_empty() && !group.is_dir() {
        // runc: a CLOS named without any schema must have been made beforehand.
        return Err(Error::InvalidSpec {
            file: "config.json".into(),
            field: "linux.intelRdt.closID".into(),
            message: format!(
                "clos dir {} not accessible (must be pre-created when schemata, \
                 l3CacheSchema and memBwSchema are empty)",
                group.display()
            ),
        });
    }
    Ok(Some(RdtPlan {
        mon_group: monitoring.then(|| group.join("mon_groups").join(id)),
        group,
        schemata,
    }))
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| Error::io("write", path, e))
}

impl RdtPlan {
    /// Creates the group when it does not exist (returning true then), writes the
    /// schemata and moves `pid` into it.
    pub(crate) fn apply(&self, pid: i32) -> Result<bool> {
        let created = match std::fs::create_dir(&self.group) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(Error::io("create", &self.group, e)),
        };
        let res = (|| {
            if !self.schemata.is_empty() {
                write(&self.group.join("schemata"), &self.schemata)?;
            }
            add_process(&self.group, self.mon_group.as_deref(), pid)
        })();
        if res.is_err() && created {
            let _ = std::fs::remove_dir(&self.group);
        }
        res.map(|()| created)
    }
}

/// Moves `pid` (a container process or an exec'd one) into the resctrl `group`, and
/// into the container's monitoring group `mon` (made when missing) if it has one.
pub(crate) fn add_process(group: &Path, mon: Option<&Path>, pid: i32) -> Result<()> {
    write(&group.join("tasks"), &pid.to_string())?;
    if let Some(m) = mon {
        match std::fs::create_dir(m) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create", m, e)),
        }
        write(&m.join("tasks"), &pid.to_string())?;
    }
    Ok(())
}

/// Removes a group the runtime created (a resctrl group directory is removed with
/// `rmdir`, its control files go with it).
pub(crate) fn remove_group(group: &Path) -> Result<()> {
    match std::fs::remove_dir(group) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", group, e)),
    }
}

/// The `schemata` a group gets from an update: the L3 and MB lines, then any others
/// the group already had (runc writes the schemas it was given and leaves the rest).
fn updated_schemata(old: &str, l3: Option<&str>, mb: Option<&str>) -> String {
    let mut lines: Vec<&str> = Vec::new();
    lines.extend(l3.into_iter().flat_map(str::lines));
    lines.extend(mb.into_iter().flat_map(str::lines));
    let replaced = |l: &str| {
        let key = l.split(':').next().unwrap_or("").trim();
        (l3.is_some() && key.starts_with("L3")) || (mb.is_some() && key == "MB")
    };
    lines.extend(old.lines().filter(|l| !l.trim().is_empty() && !replaced(l)));
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// `update --l3-cache-schema/--mem-bw-schema` on a live container: refuses a schema
/// the host does not offer (runc's messages), makes the group `<resctrl>/<id>` with
/// `pid` in it when the container has none (`group` is `None`), and writes the new
/// schemas. Returns the group and whether it was created here.
pub(crate) fn update(
    host: Option<&Resctrl>,
    group: Option<&Path>,
    id: &str,
    pid: i32,
    l3: Option<&str>,
    mb: Option<&str>,
) -> Result<(PathBuf, bool)> {
    let Some(host) = host else {
        return Err(unavailable(
            "update --l3-cache-schema/--mem-bw-schema",
            "no resctrl filesystem is mounted".into(),
        ));
    };
    let f = host.features();
    if l3.is_some() && !f.cat {
        return Err(unavailable(
            "--l3-cache-schema",
            "Intel RDT/CAT: l3 cache schema is not enabled".into(),
        ));
    }
    if mb.is_some() && !f.mba {
        return Err(unavailable(
            "--mem-bw-schema",
            "Intel RDT/MBA: memory bandwidth schema is not enabled".into(),
        ));
    }
    let (group, created) = match group {
        Some(g) => (g.to_path_buf(), false),
        None => {
            let plan = RdtPlan {
                group: host.root.join(id),
                schemata: String::new(),
                mon_group: None,
            };
            let created = plan.apply(pid)?;
            (plan.group, created)
        }
    };
    let path = group.join("schemata");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let res = write(&path, &updated_schemata(&old, l3, mb));
    if res.is_err() && created {
        let _ = remove_group(&group);
    }
    res.map(|()| (group, created))
}

/// What `runc events` reports under `intel_rdt` (its field names; empty parts left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IntelRdtStats {
    /// `info/L3`: the cache allocation's limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l3_cache_info: Option<L3CacheInfo>,
    /// The root group's L3 schema line.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub l3_cache_schema_root: String,
    /// The container group's L3 schema line.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub l3_cache_schema: String,
    /// `info/MB`: the memory bandwidth allocation's limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_bw_info: Option<MemBwInfo>,
    /// The root group's MB schema line.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mem_bw_schema_root: String,
    /// The container group's MB schema line.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mem_bw_schema: String,
    /// Memory bandwidth monitoring, one entry per `mon_data` domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mbm_stats: Option<Vec<MbmStats>>,
    /// Cache monitoring, one entry per `mon_data` domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmt_stats: Option<Vec<CmtStats>>,
}

/// `info/L3` (runc's `l3_cache_info`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct L3CacheInfo {
    /// Valid capacity bitmask.
    pub cbm_mask: String,
    /// Fewest bits a mask may set.
    pub min_cbm_bits: u64,
    /// Classes of service.
    pub num_closids: u64,
}

/// `info/MB` (runc's `mem_bw_info`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemBwInfo {
    /// Granularity of a bandwidth percentage.
    pub bandwidth_gran: u64,
    /// 1 when the delay scale is linear.
    pub delay_linear: u64,
    /// Smallest bandwidth percentage.
    pub min_bandwidth: u64,
    /// Classes of service.
    pub num_closids: u64,
}

/// Memory bandwidth counters of one L3 domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MbmStats {
    /// `mbm_total_bytes`.
    pub mbm_total_bytes: u64,
    /// `mbm_local_bytes`.
    pub mbm_local_bytes: u64,
}

/// Cache occupancy of one L3 domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CmtStats {
    /// `llc_occupancy` (bytes).
    pub llc_occupancy: u64,
}

fn read_trim(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::io("read", path, e))
}

fn read_u64(path: &Path) -> Result<u64> {
    let s = read_trim(path)?;
    s.parse().map_err(|_| {
        Error::io(
            "parse",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{s:?}")),
        )
    })
}

/// The last line of `schemata` naming `kind` (runc: `strings.Contains`).
fn schema_line(schemata: &str, kind: &str) -> String {
    schemata
        .lines()
        .rfind(|l| l.contains(kind))
        .map(|l| l.trim().to_string())
        .unwrap_or_default()
}

/// Reads the Intel RDT statistics of `group` on `host`, as runc's intelrdt GetStats;
/// the monitoring counters from the container's own monitoring group `mon` when it
/// has one, else from the group's.
pub(crate) fn stats(host: &Resctrl, group: &Path, mon: Option<&Path>) -> Result<IntelRdtStats> {
    let f = host.features();
    let root_schemata = read_trim(&host.root.join("schemata"))?;
    let schemata = read_trim(&group.join("schemata"))?;
    let info = host.root.join("info");
    let mut s = IntelRdtStats::default();
    if f.cat {
        let l3 = info.join("L3");
        s.l3_cache_info = Some(L3CacheInfo {
            cbm_mask: read_trim(&l3.join("cbm_mask"))?,
            min_cbm_bits: read_u64(&l3.join("min_cbm_bits"))?,
            num_closids: read_u64(&l3.join("num_closids"))?,
        });
        s.l3_cache_schema_root = schema_line(&root_schemata, "L3");
        s.l3_cache_schema = schema_line(&schemata, "L3");
    }
    if f.mba {
        let mb = info.join("MB");
        s.mem_bw_info = Some(MemBwInfo {
            bandwidth_gran: read_u64(&mb.join("bandwidth_gran"))?,
            delay_linear: read_u64(&mb.join("delay_linear"))?,
            min_bandwidth: read_u64(&mb.join("min_bandwidth"))?,
            num_closids: read_u64(&mb.join("num_closids"))?,
        });
        s.mem_bw_schema_root = schema_line(&root_schemata, "MB");
        s.mem_bw_schema = schema_line(&schemata, "MB");
    }
    if f.cmt || f.mbm() {
        let mon = mon.unwrap_or(group).join("mon_data");
        let rd = std::fs::read_dir(&mon).map_err(|e| Error::io("read", &mon, e))?;
        let mut domains: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        domains.sort();
        let (mut mbm, mut cmt) = (Vec::new(), Vec::new());
        for d in &domains {
            if f.mbm() {
                let get = |on: bool, name: &str| {
                    if on {
                        read_u64(&d.join(name))
                    } else {
                        Ok(0)
                    }
                };
                mbm.push(MbmStats {
                    mbm_total_bytes: get(f.mbm_total, "mbm_total_bytes")?,
                    mbm_local_bytes: get(f.mbm_local, "mbm_local_bytes")?,
                });
            }
            if f.cmt {
                cmt.push(CmtStats {
                    llc_occupancy: read_u64(&d.join("llc_occupancy"))?,
                });
            }
        }
        s.mbm_stats = f.mbm().then_some(mbm);
        s.cmt_stats = f.cmt.then_some(cmt);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `intelRdt` object of a config, read as `kcore-runc` reads a config.
    fn rdt(v: serde_json::Value) -> LinuxIntelRdt {
        let mut spec = serde_json::to_value(oci_spec::runtime::Spec::default()).unwrap();
        spec["linux"]["intelRdt"] = v;
        crate::spec::parse_spec(&spec.to_string())
            .unwrap()
            .linux()
            .clone()
            .unwrap()
            .intel_rdt()
            .clone()
            .unwrap()
    }

    fn fake(l3: bool, mb: bool) -> (tempfile::TempDir, Resctrl) {
        let d = tempfile::tempdir().unwrap();
        if l3 {
            std::fs::create_dir_all(d.path().join("info/L3")).unwrap();
        }
        if mb {
            std::fs::create_dir_all(d.path().join("info/MB")).unwrap();
        }
        let r = Resctrl::at(d.path());
        (d, r)
    }

    #[test]
    fn writes_schemata_and_tasks_in_a_group_named_by_the_id() {
        let (d, host) = fake(true, true);
        let cfg = rdt(
            serde_json::json!({"l3CacheSchema": "L3:0=ffff0;1=3ff", "memBwSchema": "MB:0=70;1=20"}),
        );
        let p = plan(Some(&cfg), Some(&host), "ctr1").unwrap().unwrap();
        assert_eq!(p.group, d.path().join("ctr1"));
        assert!(p.apply(4242).unwrap(), "group created");
        let get = |f: &str| std::fs::read_to_string(d.path().join("ctr1").join(f)).unwrap();
        assert_eq!(get("schemata"), "L3:0=ffff0;1=3ff\nMB:0=70;1=20\n");
        assert_eq!(get("tasks"), "4242");
        add_process(&p.group, None, 4343).unwrap();
        assert_eq!(get("tasks"), "4343");
        remove_group(&p.group).ok();
    }

    #[test]
    fn clos_id_names_an_existing_group_which_is_kept() {
        let (d, host) = fake(true, false);
        std::fs::create_dir(d.path().join("shared")).unwrap();
        let cfg = rdt(serde_json::json!({"closID": "shared"}));
        let p = plan(Some(&cfg), Some(&host), "ctr1").unwrap().unwrap();
        assert_eq!(p.group, d.path().join("shared"));
        assert_eq!(
            p.schemata, "",
            "no schema: the group's schemata are left alone"
        );
        assert!(
            !p.apply(7).unwrap(),
            "existing group reported as not created"
        );
        assert!(!d.path().join("shared/schemata").exists());
        assert_eq!(
            std::fs::read_to_string(d.path().join("shared/tasks")).unwrap(),
            "7"
        );
    }

    #[test]
    fn refused_without_resctrl_or_the_schema_it_lacks() {
        let cfg = rdt(serde_json::json!({"l3CacheSchema": "L3:0=f"}));
        let e = plan(Some(&cfg), None, "c").unwrap_err();
        assert!(
            e.to_string().contains("linux.intelRdt") && e.to_string().contains("resctrl"),
            "{e}"
        );
        let (_d, host) = fake(false, true);
        let e = plan(Some(&cfg), Some(&host), "c").unwrap_err();
        assert!(e.to_string().contains("l3CacheSchema"), "{e}");
        let (_d, host) = fake(true, false);
        let mb = rdt(serde_json::json!({"memBwSchema": "MB:0=10"}));
        let e = plan(Some(&mb), Some(&host), "c").unwrap_err();
        assert!(e.to_string().contains("memBwSchema"), "{e}");
        let bad = rdt(serde_json::json!({"closID": "../x"}));
        assert!(plan(Some(&bad), Some(&host), "c").is_err());
        assert!(plan(None, None, "c").unwrap().is_none());
    }

    /// A resctrl tree as a host with CAT, MBA, CMT and MBM shows it.
    fn full_fake() -> (tempfile::TempDir, Resctrl) {
        let (d, host) = fake(true, true);
        let w = |p: &str, v: &str| {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, v).unwrap();
        };
        w("schemata", "    L3:0=fffff;1=fffff\n    MB:0=100;1=100\n");
        w("info/L3/cbm_mask", "fffff\n");
        w("info/L3/min_cbm_bits", "1\n");
        w("info/L3/num_closids", "16\n");
        w("info/MB/bandwidth_gran", "10\n");
        w("info/MB/delay_linear", "1\n");
        w("info/MB/min_bandwidth", "10\n");
        w("info/MB/num_closids", "8\n");
        w(
            "info/L3_MON/mon_features",
            "llc_occupancy\nmbm_total_bytes\nmbm_local_bytes\n",
        );
        (d, host)
    }

    #[test]
    fn update_makes_the_group_when_the_config_had_none_and_keeps_other_lines() {
        let (d, host) = full_fake();
        let (g, created) = update(Some(&host), None, "c1", 99, Some("L3:0=f;1=f"), None).unwrap();
        assert!(created);
        assert_eq!(g, d.path().join("c1"));
        let get = |f: &str| std::fs::read_to_string(g.join(f)).unwrap();
        assert_eq!(get("tasks"), "99");
        assert_eq!(get("schemata"), "L3:0=f;1=f\n");
        // A second update on the existing group: MB added, the L3 line kept.
        let (g2, created) = update(Some(&host), Some(&g), "c1", 99, None, Some("MB:0=50")).unwrap();
        assert_eq!((g2.as_path(), created), (g.as_path(), false));
        assert_eq!(get("schemata"), "MB:0=50\nL3:0=f;1=f\n");
        let (_, _) = update(Some(&host), Some(&g), "c1", 99, Some("L3:0=3"), None).unwrap();
        assert_eq!(get("schemata"), "L3:0=3\nMB:0=50\n");
    }

    #[test]
    fn update_refuses_what_the_host_lacks_with_runcs_words() {
        let e = update(None, None, "c", 1, Some("L3:0=f"), None).unwrap_err();
        assert!(e.to_string().contains("no resctrl"), "{e}");
        let (d, host) = fake(false, true);
        let e = update(Some(&host), None, "c", 1, Some("L3:0=f"), None).unwrap_err();
        assert!(
            e.to_string()
                .contains("Intel RDT/CAT: l3 cache schema is not enabled"),
            "{e}"
        );
        assert!(!d.path().join("c").exists(), "nothing made on refusal");
        let (_d, host) = fake(true, false);
        let e = update(Some(&host), None, "c", 1, None, Some("MB:0=1")).unwrap_err();
        assert!(
            e.to_string()
                .contains("Intel RDT/MBA: memory bandwidth schema is not enabled"),
            "{e}"
        );
    }

    #[test]
    fn stats_read_info_schemata_and_every_mon_data_domain() {
        let (d, host) = full_fake();
        let g = d.path().join("c1");
        for (dom, total, local, occ) in [("mon_L3_00", 100, 40, 4096), ("mon_L3_01", 7, 3, 0)] {
            let m = g.join("mon_data").join(dom);
            std::fs::create_dir_all(&m).unwrap();
            std::fs::write(m.join("mbm_total_bytes"), format!("{total}\n")).unwrap();
            std::fs::write(m.join("mbm_local_bytes"), format!("{local}\n")).unwrap();
            std::fs::write(m.join("llc_occupancy"), format!("{occ}\n")).unwrap();
        }
        std::fs::write(g.join("schemata"), "L3:0=ff;1=ff\nMB:0=30;1=30\n").unwrap();
        let s = stats(&host, &g, None).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "l3_cache_info": {"cbm_mask": "fffff", "min_cbm_bits": 1, "num_closids": 16},
                "l3_cache_schema_root": "L3:0=fffff;1=fffff",
                "l3_cache_schema": "L3:0=ff;1=ff",
                "mem_bw_info": {"bandwidth_gran": 10, "delay_linear": 1, "min_bandwidth": 10, "num_closids": 8},
                "mem_bw_schema_root": "MB:0=100;1=100",
                "mem_bw_schema": "MB:0=30;1=30",
                "mbm_stats": [
                    {"mbm_total_bytes": 100, "mbm_local_bytes": 40},
                    {"mbm_total_bytes": 7, "mbm_local_bytes": 3}
                ],
                "cmt_stats": [{"llc_occupancy": 4096}, {"llc_occupancy": 0}]
            })
        );
        // Without monitoring, and with CAT only: only the L3 parts.
        std::fs::remove_dir_all(d.path().join("info/L3_MON")).unwrap();
        std::fs::remove_dir_all(d.path().join("info/MB")).unwrap();
        let v = serde_json::to_value(stats(&host, &g, None).unwrap()).unwrap();
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["l3_cache_info", "l3_cache_schema", "l3_cache_schema_root"]
        );
        // A broken counter is an error naming the file, not a zero.
        std::fs::create_dir_all(d.path().join("info/L3_MON")).unwrap();
        std::fs::write(d.path().join("info/L3_MON/mon_features"), "llc_occupancy\n").unwrap();
        std::fs::write(g.join("mon_data/mon_L3_01/llc_occupancy"), "Unavailable\n").unwrap();
        let e = stats(&host, &g, None).unwrap_err();
        assert!(e.to_string().contains("llc_occupancy"), "{e}");
    }

    #[test]
    fn monitoring_group_per_container_and_its_counters() {
        let (d, host) = full_fake();
        std::fs::create_dir_all(d.path().join("shared/mon_groups")).unwrap();
        let cfg = rdt(serde_json::json!({"closID": "shared", "enableMonitoring": true}));
        let p = plan(Some(&cfg), Some(&host), "c9").unwrap().unwrap();
        let mon = d.path().join("shared/mon_groups/c9");
        assert_eq!(p.mon_group.as_deref(), Some(mon.as_path()));
        assert!(!p.apply(31).unwrap(), "the CLOS existed");
        assert_eq!(std::fs::read_to_string(mon.join("tasks")).unwrap(), "31");
        assert_eq!(
            std::fs::read_to_string(d.path().join("shared/tasks")).unwrap(),
            "31"
        );
        add_process(&p.group, p.mon_group.as_deref(), 32).unwrap();
        assert_eq!(std::fs::read_to_string(mon.join("tasks")).unwrap(), "32");
        // The counters come from the container's monitoring group, not the CLOS's.
        std::fs::write(d.path().join("shared/schemata"), "L3:0=f\n").unwrap();
        for (dir, occ) in [(d.path().join("shared"), 1), (mon.clone(), 2)] {
            let m = dir.join("mon_data/mon_L3_00");
            std::fs::create_dir_all(&m).unwrap();
            for f in ["mbm_total_bytes", "mbm_local_bytes"] {
                std::fs::write(m.join(f), "0\n").unwrap();
            }
            std::fs::write(m.join("llc_occupancy"), format!("{occ}\n")).unwrap();
        }
        let s = stats(&host, &p.group, p.mon_group.as_deref()).unwrap();
        assert_eq!(s.cmt_stats.unwrap()[0].llc_occupancy, 2);
        let s = stats(&host, &p.group, None).unwrap();
        assert_eq!(s.cmt_stats.unwrap()[0].llc_occupancy, 1);
    }

    #[test]
    fn monitoring_and_clos_rules_like_runc() {
        let (_d, host) = fake(true, true);
        for (field, cfg) in [
            ("enableCMT", serde_json::json!({"enableCMT": true})),
            ("enableMBM", serde_json::json!({"enableMBM": true})),
            (
                "enableMonitoring",
                serde_json::json!({"enableMonitoring": true}),
            ),
        ] {
            let e = plan(Some(&rdt(cfg)), Some(&host), "c").unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
        }
        let e = plan(
            Some(&rdt(serde_json::json!({"closID": "absent"}))),
            Some(&host),
            "c",
        )
        .unwrap_err();
        assert!(e.to_string().contains("must be pre-created"), "{e}");
        // With a schema the CLOS is made.
        let with = rdt(serde_json::json!({"closID": "absent", "memBwSchema": "MB:0=20"}));
        assert!(plan(Some(&with), Some(&host), "c").unwrap().is_some());
    }
}
