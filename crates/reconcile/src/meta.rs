//! Object helpers shared by the controllers: keys, owner references,
//! pod readiness and time.

use std::fmt;

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

/// The identity of an object in a cache and a work queue: namespace (if namespaced) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// A namespaced key.
    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    /// A cluster-scoped key.
    pub fn cluster(name: impl Into<String>) -> Self {
        Self {
            namespace: None,
            name: name.into(),
        }
    }

    /// The key of an object.
    pub fn of<K: Resource>(obj: &K) -> Self {
        let m = obj.meta();
        Self {
            namespace: m.namespace.clone(),
            name: m.name.clone().unwrap_or_default(),
        }
    }

    /// The namespace, or `""`.
    pub fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The name of the cache index of objects by their controller: see
/// [`controller_index_value`].
pub(crate) const CONTROLLER_INDEX: &str = "controller";

/// The value under which [`CONTROLLER_INDEX`] files an object of namespace `ns` whose
/// controller has `uid` (`None`: an orphan, which a controller may adopt).
pub(crate) fn controller_index_value(ns: &str, uid: Option<&str>) -> String {
    format!("{ns}/{}", uid.unwrap_or(""))
}

/// The index function of [`CONTROLLER_INDEX`] (upstream's pod indexer by controller UID,
/// plus the orphans of each namespace).
pub(crate) fn controller_index<K: Resource>() -> crate::cache::IndexFn<K> {
    std::sync::Arc::new(|o: &K| {
        let m = o.meta();
        let ns = m.namespace.as_deref().unwrap_or("");
        vec![controller_index_value(
            ns,
            controller_of(m).map(|r| r.uid.as_str()),
        )]
    })
}

/// A controller owner reference to `owner` (blockOwnerDeletion set, as upstream controllers do).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let m = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The pod is neither finished nor being deleted.
pub fn pod_is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's Ready condition is True; `Some(since)` gives when it became so.
pub fn pod_ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| c.last_transition_time.as_ref().map(|t| t.0))
}

/// The pod is ready.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// The pod has been ready for at least `min_ready_seconds` at `now`.
pub fn pod_is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match pod_ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => {
            let avail = since
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i64::from(
                    min_ready_seconds,
                )))
                .unwrap_or(since);
            avail <= now
        }
    }
}

/// The toleration in `tolerations` that tolerates `taint`, if any (upstream's
/// `ToleratesTaint`: same key, or an empty key with `Exists`; same effect or none; `Exists`
/// or an equal value).
pub fn toleration_for<'a>(tolerations: &'a [Toleration], taint: &Taint) -> Option<&'a Toleration> {
    tolerations.iter().find(|t| {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        let key = t.key.as_deref().unwrap_or("");
        let op = t.operator.as_deref().unwrap_or("Equal");
        let key_ok = key == taint.key || (key.is_empty() && op == "Exists");
        let value_ok = match op {
            "Exists" => true,
            _ => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        };
        effect_ok && key_ok && value_ok
    })
}

/// FNV-1a, 32 bits, as upstream's `ComputeHash` uses.
pub(crate) fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Renders a number with the alphabet of upstream's `rand.SafeEncodeString` (no vowels,
/// no confusable characters), so names never spell words.
pub(crate) fn safe_encode(n: u32) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    n.to_string()
        .bytes()
        .map(|d| ALPHA[usize::from(d) % ALPHA.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations() {
        let taint = Taint {
            key: "node.kubernetes.io/unreachable".into(),
            effect: "NoExecute".into(),
            ..Taint::default()
        };
        let t = |key: Option<&str>, op: &str, effect: Option<&str>| Toleration {
            key: key.map(str::to_owned),
            operator: Some(op.into()),
            effect: effect.map(str::to_owned),
            ..Toleration::default()
        };
        assert!(toleration_for(
            &[t(
                Some("node.kubernetes.io/unreachable"),
                "Exists",
                Some("NoExecute")
            )],
            &taint
        )
        .is_some());
        assert!(
            toleration_for(&[t(None, "Exists", None)], &taint).is_some(),
            "tolerate everything"
        );
        assert!(toleration_for(
            &[t(
                Some("node.kubernetes.io/unreachable"),
                "Exists",
                Some("NoSchedule")
            )],
            &taint
        )
        .is_none());
        assert!(toleration_for(&[t(Some("other"), "Exists", None)], &taint).is_none());
        assert!(
            toleration_for(
                &[t(Some("node.kubernetes.io/unreachable"), "Equal", None)],
                &taint
            )
            .is_some(),
            "empty values match"
        );
        assert!(toleration_for(&[], &taint).is_none());
    }

    #[test]
    fn fnv_and_encoding() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(safe_encode(0), "4");
        assert_eq!(safe_encode(1029), "546f");
        assert!(safe_encode(u32::MAX)
            .chars()
            .all(|c| !"aeiou013".contains(c)));
    }
}
