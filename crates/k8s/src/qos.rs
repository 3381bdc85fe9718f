//! A pod's quality-of-service class, as upstream's `ComputePodQOS`
//! (pkg/apis/core/v1/helper/qos).
//!
//! * Only `cpu` and `memory` count, and only amounts above zero.
//! * App containers *and init containers* count (ephemeral containers cannot set
//!   resources). When the pod sets pod-level `spec.resources` for cpu or memory, those
//!   decide instead of the containers.
//! * A limit without a request implies a request equal to it, as API defaulting makes it,
//!   so the answer is the same before and after defaulting.
//! * **BestEffort**: nothing requested or limited. **Guaranteed**: every container (or the
//!   pod level) limits both cpu and memory, and the summed requests equal the summed
//!   limits. **Burstable**: everything else.
//!
//! Quantities are compared by value (`1` equals `1000m`). A quantity that does not parse
//! is ignored, as if absent (the API server rejects such pods upstream).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Amount;

use crate::quantity::Quantity;

/// The resources QoS looks at.
const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];

/// A pod's QoS class (`status.qosClass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QosClass {
    /// Requests equal limits for cpu and memory everywhere.
    Guaranteed,
    /// Some requests or limits, but not Guaranteed.
    Burstable,
    /// No requests or limits at all.
    BestEffort,
}

impl QosClass {
    /// The API spelling: `Guaranteed`, `Burstable` or `BestEffort`.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

impl fmt::Display for QosClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The QoS class of a pod with this spec.
///
/// ```
/// use k8s_openapi::api::core::v1::PodSpec;
/// use kcore_k8s::{pod_qos_class, QosClass};
///
/// let spec: PodSpec = serde_json::from_value(serde_json::json!({
///     "containers": [{"name": "app", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
///     "initContainers": [{"name": "init", "resources": {"requests": {"cpu": "100m"}}}],
/// }))?;
/// // the init container's request without a limit makes the pod Burstable
/// assert_eq!(pod_qos_class(&spec), QosClass::Burstable);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn pod_qos_class(spec: &PodSpec) -> QosClass {
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| c.resources.as_ref());
    qos_class(spec.resources.as_ref(), containers)
}

/// The QoS class from a pod's pod-level resources and the resources of each of its app
/// and init containers (for callers that do not hold a whole [`PodSpec`]).
pub fn qos_class<'a>(
    pod_level: Option<&'a ResourceRequirements>,
    containers: impl IntoIterator<Item = Option<&'a ResourceRequirements>>,
) -> QosClass {
    let mut requests = Totals::default();
    let mut limits = Totals::default();
    let mut guaranteed = true;
    let mut add = |r: Option<&ResourceRequirements>| {
        let (req, lim) = effective(r);
        for (name, q) in req {
            requests.add(name, q);
        }
        for &(name, q) in &lim {
            limits.add(name, q);
        }
        // Guaranteed needs both limits, above zero, on every container (or the pod).
        guaranteed &= QOS_RESOURCES
            .iter()
            .all(|n| lim.iter().any(|(name, _)| name == n));
    };
    match pod_level.filter(|r| sets_qos_resources(r)) {
        Some(pod) => add(Some(pod)),
        None => containers.into_iter().for_each(&mut add),
    }
    if requests.0.is_empty() && limits.0.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed && requests == limits {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// Whether pod-level resources set cpu or memory (upstream's `IsPodLevelResourcesSet`).
fn sets_qos_resources(r: &ResourceRequirements) -> bool {
    [&r.requests, &r.limits]
        .into_iter()
        .flatten()
        .any(|m| QOS_RESOURCES.iter().any(|n| m.contains_key(*n)))
}

/// (resource, amount) pairs, amounts above zero.
type Positive = Vec<(&'static str, Quantity)>;

/// The positive cpu and memory requests (defaulted from limits) and limits of `r`.
fn effective(r: Option<&ResourceRequirements>) -> (Positive, Positive) {
    let empty = BTreeMap::new();
    let requests = r.and_then(|r| r.requests.as_ref()).unwrap_or(&empty);
    let limits = r.and_then(|r| r.limits.as_ref()).unwrap_or(&empty);
    let positive = |name: &'static str, q: Option<&Amount>| {
        q.and_then(|q| Quantity::try_from(q).ok())
            .filter(|q| *q > Quantity::ZERO)
            .map(|q| (name, q))
    };
    let mut req = Vec::new();
    let mut lim = Vec::new();
    for name in QOS_RESOURCES {
        let limit = limits.get(name);
        req.extend(positive(name, requests.get(name).or(limit)));
        lim.extend(positive(name, limit));
    }
    (req, lim)
}

/// Sums per resource.
#[derive(Default, PartialEq)]
struct Totals(BTreeMap<&'static str, Quantity>);

impl Totals {
    fn add(&mut self, name: &'static str, q: Quantity) {
        let t = self.0.entry(name).or_insert(Quantity::ZERO);
        // Sums beyond 10^38 are not real pods; keep the larger bound rather than fail.
        *t = t.checked_add(q).unwrap_or(q.max(*t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// (requests, limits) as "cpu,memory" with "" for absent.
    fn res(req: (&str, &str), lim: (&str, &str)) -> Value {
        let list = |(cpu, mem): (&str, &str)| {
            let mut m = serde_json::Map::new();
            if !cpu.is_empty() {
                m.insert("cpu".into(), json!(cpu));
            }
            if !mem.is_empty() {
                m.insert("memory".into(), json!(mem));
            }
            Value::Object(m)
        };
        json!({"requests": list(req), "limits": list(lim)})
    }

    fn spec(containers: Vec<Value>, init: Vec<Value>, pod: Option<Value>) -> PodSpec {
        let c = |r: &Value| json!({"name": "c", "resources": r});
        serde_json::from_value(json!({
            "containers": containers.iter().map(c).collect::<Vec<_>>(),
            "initContainers": init.iter().map(c).collect::<Vec<_>>(),
            "resources": pod,
        }))
        .unwrap()
    }

    /// Upstream's TestComputePodQOS table (qos_test.go), plus the defaulting and
    /// value-comparison cases.
    #[test]
    fn upstream_table() {
        use QosClass::*;
        let none = ("", "");
        let g = res(("100m", "100Mi"), ("100m", "100Mi"));
        let be = res(none, none);
        let cases: Vec<(&str, PodSpec, QosClass)> = vec![
            (
                "guaranteed",
                spec(vec![g.clone()], vec![], None),
                Guaranteed,
            ),
            (
                "guaranteed-guaranteed",
                spec(vec![g.clone(), g.clone()], vec![], None),
                Guaranteed,
            ),
            (
                "best-effort-best-effort",
                spec(vec![be.clone(), be.clone()], vec![], None),
                BestEffort,
            ),
            (
                "best-effort",
                spec(vec![be.clone()], vec![], None),
                BestEffort,
            ),
            (
                "best-effort-burstable",
                spec(vec![be.clone(), res(("1", ""), ("2", ""))], vec![], None),
                Burstable,
            ),
            (
                "best-effort-guaranteed",
                spec(
                    vec![be.clone(), res(("10m", "100Mi"), ("10m", "100Mi"))],
                    vec![],
                    None,
                ),
                Burstable,
            ),
            (
                "burstable-cpu-guaranteed-memory",
                spec(vec![res(("", "100Mi"), ("", "100Mi"))], vec![], None),
                Burstable,
            ),
            (
                "burstable-no-limits",
                spec(vec![res(("100m", "100Mi"), none)], vec![], None),
                Burstable,
            ),
            (
                "burstable-guaranteed",
                spec(
                    vec![res(("1", "100Mi"), ("2", "100Mi")), g.clone()],
                    vec![],
                    None,
                ),
                Burstable,
            ),
            (
                "burstable-unbounded-but-requests-match-limits",
                spec(
                    vec![
                        res(("100m", "100Mi"), ("200m", "200Mi")),
                        res(("100m", "100Mi"), none),
                    ],
                    vec![],
                    None,
                ),
                Burstable,
            ),
            (
                "burstable-1",
                spec(vec![res(("10m", "100Mi"), ("100m", "200Mi"))], vec![], None),
                Burstable,
            ),
            (
                "burstable-2",
                spec(vec![res(("0", "0"), ("100m", "200Mi"))], vec![], None),
                Burstable,
            ),
            (
                "best-effort-hugepages",
                serde_json::from_value(json!({"containers": [{"name": "c", "resources": {
                    "requests": {"cpu": "0", "memory": "0", "hugepages-2Mi": "1Gi"},
                    "limits": {"cpu": "0", "memory": "0", "hugepages-2Mi": "1Gi"}}}]}))
                .unwrap(),
                BestEffort,
            ),
            (
                "init-container",
                spec(
                    vec![be.clone()],
                    vec![res(("10m", "100Mi"), ("100m", "200Mi"))],
                    None,
                ),
                Burstable,
            ),
            (
                "guaranteed-with-pod-level-resources",
                spec(
                    vec![be.clone()],
                    vec![],
                    Some(res(("10m", "100Mi"), ("10m", "100Mi"))),
                ),
                Guaranteed,
            ),
            (
                "guaranteed-with-pod-and-container-level-resources",
                spec(
                    vec![res(("3m", "10Mi"), ("5m", "20Mi"))],
                    vec![],
                    Some(res(("10m", "100Mi"), ("10m", "100Mi"))),
                ),
                Guaranteed,
            ),
            (
                "burstable-with-pod-level-resources",
                spec(
                    vec![be.clone()],
                    vec![],
                    Some(res(("10m", "10Mi"), ("20m", "50Mi"))),
                ),
                Burstable,
            ),
            (
                "burstable-with-pod-and-container-level-resources",
                spec(
                    vec![res(("5m", "10Mi"), ("5m", "10Mi"))],
                    vec![],
                    Some(res(("10m", "10Mi"), ("20m", "50Mi"))),
                ),
                Burstable,
            ),
            (
                "burstable-with-pod-and-container-level-requests",
                spec(
                    vec![res(("5m", "10Mi"), none)],
                    vec![],
                    Some(res(("10m", "10Mi"), none)),
                ),
                Burstable,
            ),
            (
                "burstable-with-pod-and-container-level-resources-2",
                spec(
                    vec![
                        res(("5m", "10Mi"), none),
                        res(("5m", "10Mi"), ("5m", "10Mi")),
                    ],
                    vec![],
                    Some(res(("10m", "10Mi"), ("5m", ""))),
                ),
                Burstable,
            ),
            // requests defaulted from limits, as API defaulting does
            (
                "limits-only",
                spec(vec![res(none, ("1", "1Gi"))], vec![], None),
                Guaranteed,
            ),
            (
                "pod-level-limits-only",
                spec(vec![be.clone()], vec![], Some(res(none, ("1", "1Gi")))),
                Guaranteed,
            ),
            // compared by value, not by spelling
            (
                "equal-values-different-spelling",
                spec(vec![res(("1", "1Gi"), ("1000m", "1024Mi"))], vec![], None),
                Guaranteed,
            ),
            // an init container without limits spoils Guaranteed
            (
                "guaranteed-app-burstable-init",
                spec(vec![g.clone()], vec![res(("100m", ""), none)], None),
                Burstable,
            ),
            (
                "guaranteed-app-and-init",
                spec(vec![g.clone()], vec![g.clone()], None),
                Guaranteed,
            ),
            ("no-containers", spec(vec![], vec![], None), BestEffort),
        ];
        for (name, spec, want) in cases {
            assert_eq!(pod_qos_class(&spec), want, "{name}");
        }
    }

    #[test]
    fn spelled_as_the_api_does() {
        assert_eq!(QosClass::Guaranteed.as_str(), "Guaranteed");
        assert_eq!(QosClass::Burstable.to_string(), "Burstable");
        assert_eq!(QosClass::BestEffort.as_str(), "BestEffort");
    }
}
