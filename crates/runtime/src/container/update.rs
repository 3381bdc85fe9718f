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
