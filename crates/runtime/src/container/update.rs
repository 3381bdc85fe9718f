//! `update`: new resource limits for a live container (`runc update`).

use oci_spec::runtime::LinuxResources;
use serde_json::Value;

use crate::cgroups;
use crate::error::{Error, Result};
use crate::state::Status;

use super::Container;

/// Merges `new` into `old`: objects key by key, anything else replaced. What `new`
/// leaves out keeps its old value, as `runc update` keeps unchanged limits.
fn merge(old: &mut Value, new: Value) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (k, v) in n {
                merge(o.entry(k).or_insert(Value::Null), v);
            }
        }
        (o, n) => *o = n,
    }
}

/// The container's resources after an update: `old` with `new` merged in.
pub(crate) fn merged(
    old: Option<&LinuxResources>,
    new: &LinuxResources,
) -> serde_json::Result<LinuxResources> {
    let mut v = match old {
        Some(o) => serde_json::to_value(o)?,
        None => Value::Object(Default::default()),
    };
    merge(&mut v, serde_json::to_value(new)?);
    serde_json::from_value(v)
}

impl Container {
    /// Applies new resource limits to the container's cgroup while it runs (created,
    /// running or paused), and records them in its state so later reads of the spec
    /// see them. Fields `resources` leaves out keep their values; device rules are not
    /// changed (as `runc update`). Returns the names of limits this host cannot apply,
    /// which were skipped.
    pub fn update(&mut self, resources: &LinuxResources) -> Result<Vec<&'static str>> {
        let _span = tracing::info_span!("update", id = %self.saved.id).entered();
        self.guard("update", Status::can_update)?;
        let cg = self.cgroup()?.ok_or_else(|| Error::InvalidState {
            id: self.saved.id.clone(),
            op: "update",
            status: "without a cgroup".into(),
        })?;
        let mut apply = resources.clone();
        apply.set_devices(None);
        let (res, ignored) = cgroups::resources(&apply, cg.host().mode());
        if !res.is_empty() {
            cg.set_resources(&res)?;
        }
        let mut linux = self.saved.spec.linux().clone().unwrap_or_default();
        let all =
            merged(linux.resources().as_ref(), &apply).map_err(|source| Error::Resources {
                id: self.saved.id.clone(),
                source,
            })?;
        linux.set_resources(Some(all));
        self.saved.spec.set_linux(Some(linux));
        self.saved.save(&self.dir)?;
        Ok(ignored)
    }
}

impl Container {
    /// `update --l3-cache-schema/--mem-bw-schema`: writes new Intel RDT schemas into the
    /// container's resctrl group, making the group (`<resctrl>/<id>`, with the
    /// container's process in it) when the config had no `intelRdt`, as runc does. A
    /// schema the host's resctrl does not offer is refused with runc's message. The new
    /// schemas are recorded in the container's spec.
    pub fn update_intel_rdt(&mut self, l3: Option<&str>, mem_bw: Option<&str>) -> Result<()> {
        let _span = tracing::info_span!("update_intel_rdt", id = %self.saved.id).entered();
        self.guard("update", Status::can_update)?;
        let (group, created) = crate::intelrdt::update(
            crate::intelrdt::Resctrl::find().as_ref(),
            self.saved.rdt_group.as_deref(),
            &self.saved.id,
            self.saved.pid,
            l3,
            mem_bw,
        )?;
        if created {
            self.saved.rdt_created = true;
        }
        self.saved.rdt_group = Some(group);
        let mut linux = self.saved.spec.linux().clone().unwrap_or_default();
        let mut rdt = linux.intel_rdt().clone().unwrap_or_default();
        if let Some(v) = l3 {
            rdt.set_l3_cache_schema(Some(v.to_string()));
        }
        if let Some(v) = mem_bw {
            rdt.set_mem_bw_schema(Some(v.to_string()));
        }
        linux.set_intel_rdt(Some(rdt));
        self.saved.spec.set_linux(Some(linux));
        self.saved.save(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_keeps_what_it_leaves_out() {
        let old: LinuxResources = serde_json::from_str(
            r#"{"memory": {"limit": 1000, "reservation": 500}, "cpu": {"shares": 512}, "pids": {"limit": 10}}"#,
        )
        .unwrap();
        let new: LinuxResources =
            serde_json::from_str(r#"{"memory": {"limit": 2000}, "pids": {"limit": 20}}"#).unwrap();
        let m = merged(Some(&old), &new).unwrap();
        let mem = m.memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(2000));
        assert_eq!(mem.reservation(), Some(500));
        assert_eq!(m.cpu().as_ref().unwrap().shares(), Some(512));
        assert_eq!(m.pids().as_ref().unwrap().limit(), 20);
        let fresh = merged(None, &new).unwrap();
        assert_eq!(fresh.memory().as_ref().unwrap().limit(), Some(2000));
        assert!(fresh.cpu().is_none());
    }
}
