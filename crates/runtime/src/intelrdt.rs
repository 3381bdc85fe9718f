//! `linux.intelRdt` through the resctrl filesystem: a group per container (or the
//! config's `closID`), its `schemata` (`l3CacheSchema`, `memBwSchema`, `schemata`
//! lines), and the container's processes in its `tasks`.
//!
//! Like runc, a config that asks for Intel RDT on a host without a resctrl mount, or
//! for a schema the host's resctrl does not offer (`info/L3` for cache allocation,
//! `info/MB` for memory bandwidth), is refused before the container exists. The
//! resctrl root is a parameter, so the writing is unit-tested on a fake directory.

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
    Ok(Some(RdtPlan {
        group: host.root.join(name),
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
            add_process(&self.group, pid)
        })();
        if res.is_err() && created {
            let _ = std::fs::remove_dir(&self.group);
        }
        res.map(|()| created)
    }
}

/// Moves `pid` (a container process or an exec'd one) into the resctrl `group`.
pub(crate) fn add_process(group: &Path, pid: i32) -> Result<()> {
    write(&group.join("tasks"), &pid.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rdt(v: serde_json::Value) -> LinuxIntelRdt {
        serde_json::from_value(v).unwrap()
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
        add_process(&p.group, 4343).unwrap();
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
}
