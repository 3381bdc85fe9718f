//! Compact, interned forms of Nodes and Pods, compiled once from k8s-openapi
//! objects and then compared by id on the hot path.

use k8s_openapi::api::core::v1 as core;

use crate::error::Error;
use crate::intern::{FastMap, Interner, Sym};
use crate::labels::{LabelSelector, Labels, NodeSelectorTerm};
use crate::resource::{Resources, DEFAULT_MEMORY_REQUEST, DEFAULT_MILLI_CPU_REQUEST};

/// Index of a node slot in the [`Snapshot`](crate::Snapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) u32);

/// Index of a pod slot in the [`Snapshot`](crate::Snapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodId(pub(crate) u32);

/// A taint effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    /// `NoSchedule`
    NoSchedule,
    /// `PreferNoSchedule`
    PreferNoSchedule,
    /// `NoExecute`
    NoExecute,
}

impl TaintEffect {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "NoSchedule" => TaintEffect::NoSchedule,
            "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
            "NoExecute" => TaintEffect::NoExecute,
            _ => return None,
        })
    }
}

/// A compiled node taint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    pub(crate) key: Sym,
    pub(crate) value: Sym,
    pub(crate) effect: TaintEffect,
}

/// A compiled pod toleration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Toleration {
    key: Option<Sym>,
    exists: bool,
    /// Unknown operators tolerate nothing.
    valid_op: bool,
    value: Sym,
    pub(crate) effect: Option<TaintEffect>,
}

impl Toleration {
    /// `v1.Toleration.ToleratesTaint`.
    #[inline]
    pub(crate) fn tolerates(&self, t: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != t.effect) {
            return false;
        }
        if self.key.is_some_and(|k| k != t.key) {
            return false;
        }
        self.valid_op && (self.exists || self.value == t.value)
    }
}

/// True when some toleration in `tols` tolerates `t`.
pub(crate) fn tolerated(tols: &[Toleration], t: &Taint) -> bool {
    tols.iter().any(|tol| tol.tolerates(t))
}

/// A host port a pod wants or a node has in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostPort {
    pub(crate) protocol: u8,
    /// `None` is the wildcard 0.0.0.0.
    pub(crate) ip: Option<Sym>,
    pub(crate) port: u16,
}

impl HostPort {
    /// Upstream `HostPortInfo` conflict rule: same protocol and port, and
    /// either address is the wildcard or they are equal.
    #[inline]
    pub(crate) fn conflicts(&self, o: &HostPort) -> bool {
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip.is_none() || o.ip.is_none() || self.ip == o.ip)
    }
}

/// A compiled pod (anti-)affinity term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AffinityTerm {
    pub(crate) selector: Option<LabelSelector>,
    pub(crate) namespaces: Vec<Sym>,
    pub(crate) ns_selector: Option<LabelSelector>,
    pub(crate) topology_key: Sym,
}

impl AffinityTerm {
    /// Upstream `AffinityTerm.Matches`: namespace in the list or selected by
    /// the namespace selector, and the label selector matches.
    #[inline]
    pub(crate) fn matches(&self, pod: &PodInfo, ns_labels: &FastMap<Sym, Labels>) -> bool {
        let ns_ok = self.namespaces.contains(&pod.namespace)
            || self.ns_selector.as_ref().is_some_and(|s| {
                s.is_empty() || ns_labels.get(&pod.namespace).is_some_and(|l| s.matches(l))
            });
        ns_ok
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(&pod.labels))
    }
}

/// Pod affinity and anti-affinity of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PodAffinity {
    pub(crate) required_affinity: Vec<AffinityTerm>,
    pub(crate) required_anti: Vec<AffinityTerm>,
    pub(crate) preferred_affinity: Vec<(i64, AffinityTerm)>,
    pub(crate) preferred_anti: Vec<(i64, AffinityTerm)>,
}

impl PodAffinity {
    fn is_empty(&self) -> bool {
        self.required_affinity.is_empty()
            && self.required_anti.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti.is_empty()
    }
}

/// A compiled topology spread constraint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SpreadConstraint {
    pub(crate) max_skew: i64,
    pub(crate) topology_key: Sym,
    /// `whenUnsatisfiable: DoNotSchedule`.
    pub(crate) hard: bool,
    pub(crate) selector: Option<LabelSelector>,
    pub(crate) min_domains: i64,
    /// `nodeAffinityPolicy: Honor` (the default).
    pub(crate) honor_affinity: bool,
    /// `nodeTaintsPolicy: Honor` (default Ignore).
    pub(crate) honor_taints: bool,
}

impl SpreadConstraint {
    #[inline]
    pub(crate) fn selects(&self, pod: &PodInfo) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| s.matches(&pod.labels))
    }
}

/// A node compiled for scheduling, with the pods assigned to it.
///
/// Laid out so the fields the common filters and scores read (resources,
/// pod count, taints, images) share the first cache lines.
#[derive(Clone, Debug)]
#[repr(C)]
pub struct NodeInfo {
    pub(crate) allocatable: Resources,
    pub(crate) requested: Resources,
    pub(crate) non_zero_cpu: i64,
    pub(crate) non_zero_mem: i64,
    pub(crate) pods: Vec<PodId>,
    pub(crate) taints: Vec<Taint>,
    /// `(normalized image name, size in bytes)`, sorted by name id.
    pub(crate) images: Vec<(Sym, i64)>,
    pub(crate) unschedulable: bool,
    pub(crate) name_sym: Sym,
    pub(crate) pods_with_affinity: u32,
    pub(crate) pods_with_required_anti: u32,
    pub(crate) labels: Labels,
    pub(crate) used_ports: Vec<HostPort>,
    pub(crate) name: Box<str>,
    pub(crate) generation: u64,
}

impl NodeInfo {
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Allocatable resources.
    pub fn allocatable(&self) -> &Resources {
        &self.allocatable
    }
    /// Sum of the requests of the pods assigned to the node.
    pub fn requested(&self) -> &Resources {
        &self.requested
    }
    /// Ids of the pods assigned to the node.
    pub fn pods(&self) -> &[PodId] {
        &self.pods
    }
    /// Labels of the node.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    pub(crate) fn compile(node: &core::Node, i: &mut Interner) -> Result<Self, Error> {
        let name = node.metadata.name.clone().ok_or(Error::Missing {
            kind: "Node",
            name: String::new(),
            field: "metadata.name",
        })?;
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();
        let mut taints = Vec::new();
        for t in spec.and_then(|s| s.taints.as_ref()).into_iter().flatten() {
            let Some(effect) = TaintEffect::parse(&t.effect) else {
                continue;
            };
            taints.push(Taint {
                key: i.intern(&t.key),
                value: i.intern(t.value.as_deref().unwrap_or("")),
                effect,
            });
        }
        // TaintNodesByCondition: the node lifecycle controller turns bad
        // conditions into NoSchedule taints. Apply the same rule here so a
        // cluster without that controller still avoids unhealthy nodes.
        for c in status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
        {
            let key = match (c.type_.as_str(), c.status.as_str()) {
                ("Ready", "False") => "node.kubernetes.io/not-ready",
                ("Ready", "Unknown") => "node.kubernetes.io/unreachable",
                ("MemoryPressure", "True") => "node.kubernetes.io/memory-pressure",
                ("DiskPressure", "True") => "node.kubernetes.io/disk-pressure",
                ("PIDPressure", "True") => "node.kubernetes.io/pid-pressure",
                ("NetworkUnavailable", "True") => "node.kubernetes.io/network-unavailable",
                _ => continue,
            };
            let key = i.intern(key);
            if !taints
                .iter()
                .any(|t| t.key == key && t.effect == TaintEffect::NoSchedule)
            {
                taints.push(Taint {
                    key,
                    value: i.intern(""),
                    effect: TaintEffect::NoSchedule,
                });
            }
        }
        let allocatable = match status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
        {
            Some(m) => Resources::from_map(m, i)?,
            None => Resources::default(),
        };
        let mut images = Vec::new();
        for img in status.and_then(|s| s.images.as_ref()).into_iter().flatten() {
            let size = img.size_bytes.unwrap_or(0);
            for n in img.names.iter().flatten() {
                images.push((i.intern(&normalize_image(n)), size));
            }
        }
        images.sort_unstable();
        images.dedup_by_key(|e| e.0);
        Ok(NodeInfo {
            name_sym: i.intern(&name),
            name: name.into(),
            labels: Labels::from_map(node.metadata.labels.as_ref(), i),
            taints,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable,
            requested: Resources::default(),
            non_zero_cpu: 0,
            non_zero_mem: 0,
            images,
            used_ports: Vec::new(),
            pods: Vec::new(),
            pods_with_affinity: 0,
            pods_with_required_anti: 0,
            generation: 0,
        })
    }

    /// Accounts `pod` (with id `id`) on this node.
    pub(crate) fn add_pod(&mut self, id: PodId, pod: &PodInfo) {
        self.requested.add(&pod.requests);
        self.non_zero_cpu += pod.non_zero_cpu;
        self.non_zero_mem += pod.non_zero_mem;
        self.used_ports.extend_from_slice(&pod.host_ports);
        self.pods.push(id);
        if pod.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if pod.has_required_anti_affinity() {
            self.pods_with_required_anti += 1;
        }
        self.generation += 1;
    }

    /// Removes `pod` (with id `id`) from this node's accounting.
    pub(crate) fn remove_pod(&mut self, id: PodId, pod: &PodInfo) {
        if let Some(pos) = self.pods.iter().position(|&p| p == id) {
            self.pods.swap_remove(pos);
        } else {
            return;
        }
        self.requested.sub(&pod.requests);
        self.non_zero_cpu -= pod.non_zero_cpu;
        self.non_zero_mem -= pod.non_zero_mem;
        for hp in &pod.host_ports {
            if let Some(pos) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(pos);
            }
        }
        if pod.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if pod.has_required_anti_affinity() {
            self.pods_with_required_anti -= 1;
        }
        self.generation += 1;
    }

    /// Size of the image named `name` on this node, if present.
    #[inline]
    pub(crate) fn image_size(&self, name: Sym) -> Option<i64> {
        self.images
            .binary_search_by_key(&name, |e| e.0)
            .ok()
            .map(|i| self.images[i].1)
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.name.len()
            + self.labels.0.capacity() * 8
            + self.taints.capacity() * std::mem::size_of::<Taint>()
            + self.images.capacity() * 16
            + self.used_ports.capacity() * std::mem::size_of::<HostPort>()
            + self.pods.capacity() * 4
            + self.allocatable.scalars.capacity() * 16
            + self.requested.scalars.capacity() * 16
    }
}

/// Appends `:latest` to an image reference that has neither tag nor digest,
/// as upstream's ImageLocality `normalizedImageName`.
pub fn normalize_image(name: &str) -> String {
    let colon = name.rfind(':');
    let slash = name.rfind('/');
    match (colon, slash) {
        (Some(c), Some(s)) if c > s => name.to_string(),
        (Some(_), None) => name.to_string(),
        _ => format!("{name}:latest"),
    }
}

/// A pod compiled for scheduling.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub(crate) namespace: Sym,
    pub(crate) name: Box<str>,
    pub(crate) uid: Box<str>,
    pub(crate) labels: Labels,
    pub(crate) requests: Resources,
    pub(crate) non_zero_cpu: i64,
    pub(crate) non_zero_mem: i64,
    pub(crate) priority: i32,
    pub(crate) preempt_never: bool,
    pub(crate) node_name: Option<Box<str>>,
    pub(crate) nominated_node: Option<Box<str>>,
    pub(crate) node_selector: Vec<(Sym, Sym)>,
    pub(crate) required_node_affinity: Option<Vec<NodeSelectorTerm>>,
    pub(crate) preferred_node_affinity: Vec<(i64, NodeSelectorTerm)>,
    pub(crate) tolerations: Vec<Toleration>,
    pub(crate) host_ports: Vec<HostPort>,
    pub(crate) affinity: Option<Box<PodAffinity>>,
    pub(crate) spread: Vec<SpreadConstraint>,
    pub(crate) images: Vec<Sym>,
    pub(crate) num_containers: i64,
    pub(crate) scheduler_name: Box<str>,
    pub(crate) gated: bool,
    pub(crate) terminating: bool,
    /// `status.startTime` (or creation) in seconds since the epoch.
    pub(crate) start_time: i64,
    /// The node this pod is assigned to in the snapshot.
    pub(crate) node: Option<NodeId>,
    /// Its PersistentVolumeClaims, when the caller resolved them
    /// ([`Snapshot::compile_pod_with_volumes`](crate::Snapshot::compile_pod_with_volumes)).
    pub(crate) volumes: Option<Box<CompiledVolumes>>,
}

/// What the scheduler knows of a pod's PersistentVolumeClaims (VolumeBinding's input),
/// resolved by the caller from the API server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodVolumes {
    /// Claims that do not exist.
    pub missing: Vec<String>,
    /// Unbound claims that bind at once (no class, or an `Immediate` one).
    pub unbound_immediate: Vec<String>,
    /// Unbound claims of `WaitForFirstConsumer` classes: bound where the pod goes.
    pub unbound_delayed: Vec<String>,
    /// The required node affinity of each bound volume that has one.
    pub node_affinity: Vec<core::NodeSelector>,
    /// The delayed claims whose class's driver publishes its storage capacity (a
    /// CSIDriver with `storageCapacity: true`), each with where it fits.
    pub capacity: Vec<ClaimCapacity>,
}

/// Where a claim to be provisioned fits (upstream VolumeBinding's capacity check): the
/// `nodeTopology` of each CSIStorageCapacity of the claim's class whose
/// `maximumVolumeSize` (else `capacity`) holds the claim's request. A node matched by
/// none of them "did not have enough free storage".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClaimCapacity {
    /// The claim's name.
    pub claim: String,
    /// The topologies with room for it.
    pub topologies: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

/// [`PodVolumes`], compiled.
#[derive(Clone, Debug)]
pub(crate) struct CompiledVolumes {
    pub(crate) missing: Vec<String>,
    pub(crate) unbound_immediate: Vec<String>,
    pub(crate) node_affinity: Vec<Vec<NodeSelectorTerm>>,
    /// Per claim whose capacity is checked, the topologies with room for it.
    pub(crate) capacity: Vec<Vec<LabelSelector>>,
}

impl CompiledVolumes {
    pub(crate) fn compile(v: &PodVolumes, i: &mut Interner) -> Result<Self, Error> {
        let node_affinity = v
            .node_affinity
            .iter()
            .map(|sel| {
                sel.node_selector_terms
                    .iter()
                    .map(|t| NodeSelectorTerm::compile(t, i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let capacity = v
            .capacity
            .iter()
            .map(|c| {
                c.topologies
                    .iter()
                    .map(|t| LabelSelector::compile(t, i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CompiledVolumes {
            missing: v.missing.clone(),
            unbound_immediate: v.unbound_immediate.clone(),
            node_affinity,
            capacity,
        })
    }
}

/// The default scheduler name.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

impl PodInfo {
    /// `namespace/name`, as the snapshot keys pods.
    pub fn key(&self, i: &Interner) -> String {
        format!("{}/{}", i.resolve(self.namespace), self.name)
    }
    /// The pod's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The pod's uid ("" when unset).
    pub fn uid(&self) -> &str {
        &self.uid
    }
    /// The pod's priority.
    pub fn priority(&self) -> i32 {
        self.priority
    }
    /// The effective requests (containers, init containers, overhead).
    pub fn requests(&self) -> &Resources {
        &self.requests
    }
    /// `spec.schedulerName` (defaulted).
    pub fn scheduler_name(&self) -> &str {
        &self.scheduler_name
    }
    /// True when the pod still has scheduling gates.
    pub fn is_gated(&self) -> bool {
        self.gated
    }
    /// `status.nominatedNodeName`.
    pub fn nominated_node(&self) -> Option<&str> {
        self.nominated_node.as_deref()
    }
    /// The node the pod is assigned to in the snapshot.
    pub fn node(&self) -> Option<NodeId> {
        self.node
    }

    pub(crate) fn has_affinity(&self) -> bool {
        self.affinity.is_some()
    }
    pub(crate) fn has_required_anti_affinity(&self) -> bool {
        self.affinity
            .as_ref()
            .is_some_and(|a| !a.required_anti.is_empty())
    }

    pub(crate) fn compile(pod: &core::Pod, i: &mut Interner) -> Result<Self, Error> {
        let name = pod.metadata.name.clone().ok_or(Error::Missing {
            kind: "Pod",
            name: String::new(),
            field: "metadata.name",
        })?;
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let spec = pod.spec.as_ref().ok_or_else(|| Error::Missing {
            kind: "Pod",
            name: format!("{ns}/{name}"),
            field: "spec",
        })?;
        let labels = Labels::from_map(pod.metadata.labels.as_ref(), i);
        let (requests, non_zero_cpu, non_zero_mem) = pod_requests(spec, i)?;

        let mut node_selector: Vec<(Sym, Sym)> = spec
            .node_selector
            .iter()
            .flatten()
            .map(|(k, v)| (i.intern(k), i.intern(v)))
            .collect();
        node_selector.sort_unstable();

        let aff = spec.affinity.as_ref();
        let node_aff = aff.and_then(|a| a.node_affinity.as_ref());
        let required_node_affinity = match node_aff.and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        }) {
            Some(sel) => Some(
                sel.node_selector_terms
                    .iter()
                    .map(|t| NodeSelectorTerm::compile(t, i))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let mut preferred_node_affinity = Vec::new();
        for p in node_aff
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
        {
            if p.weight != 0 {
                preferred_node_affinity.push((
                    i64::from(p.weight),
                    NodeSelectorTerm::compile(&p.preference, i)?,
                ));
            }
        }

        let tolerations = spec
            .tolerations
            .iter()
            .flatten()
            .map(|t| {
                let op = t.operator.as_deref().unwrap_or("Equal");
                Toleration {
                    key: t
                        .key
                        .as_deref()
                        .filter(|k| !k.is_empty())
                        .map(|k| i.intern(k)),
                    exists: op == "Exists",
                    valid_op: op == "Exists" || op == "Equal",
                    value: i.intern(t.value.as_deref().unwrap_or("")),
                    effect: t.effect.as_deref().and_then(TaintEffect::parse),
                }
            })
            .collect();

        let mut host_ports = Vec::new();
        let mut images = Vec::new();
        let mut num_containers = 0;
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
        {
            num_containers += 1;
            if let Some(img) = c.image.as_deref() {
                images.push(i.intern(&normalize_image(img)));
            }
            for p in c.ports.iter().flatten() {
                let Some(hp) = p.host_port.filter(|&p| p > 0) else {
                    continue;
                };
                let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                    "UDP" => 1,
                    "SCTP" => 2,
                    _ => 0,
                };
                let ip = p
                    .host_ip
                    .as_deref()
                    .filter(|ip| !ip.is_empty() && *ip != "0.0.0.0")
                    .map(|ip| i.intern(ip));
                host_ports.push(HostPort {
                    protocol,
                    ip,
                    port: u16::try_from(hp).unwrap_or(u16::MAX),
                });
            }
        }

        let ns_sym = i.intern(ns);
        let affinity = compile_pod_affinity(aff, ns_sym, &labels, i)?;

        let mut spread = Vec::new();
        for c in spec.topology_spread_constraints.iter().flatten() {
            let mut selector = match &c.label_selector {
                Some(s) => Some(LabelSelector::compile(s, i)?),
                None => None,
            };
            if let Some(sel) = selector.as_mut() {
                for k in c.match_label_keys.iter().flatten() {
                    let k = i.intern(k);
                    if let Some(v) = labels.get(k) {
                        sel.push_in(k, v);
                    }
                }
            }
            spread.push(SpreadConstraint {
                max_skew: i64::from(c.max_skew.max(1)),
                topology_key: i.intern(&c.topology_key),
                hard: c.when_unsatisfiable == "DoNotSchedule",
                selector,
                min_domains: i64::from(c.min_domains.unwrap_or(1).max(1)),
                honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            });
        }

        let status = pod.status.as_ref();
        let start_time = status
            .and_then(|s| s.start_time.as_ref())
            .or(pod.metadata.creation_timestamp.as_ref())
            .map(|t| t.0.as_second())
            .unwrap_or(0);

        Ok(PodInfo {
            namespace: ns_sym,
            uid: pod.metadata.uid.clone().unwrap_or_default().into(),
            name: name.into(),
            labels,
            requests,
            non_zero_cpu,
            non_zero_mem,
            priority: spec.priority.unwrap_or(0),
            preempt_never: spec.preemption_policy.as_deref() == Some("Never"),
            node_name: spec
                .node_name
                .as_deref()
                .filter(|n| !n.is_empty())
                .map(Into::into),
            nominated_node: status
                .and_then(|s| s.nominated_node_name.as_deref())
                .filter(|n| !n.is_empty())
                .map(Into::into),
            node_selector,
            required_node_affinity,
            preferred_node_affinity,
            tolerations,
            host_ports,
            affinity,
            spread,
            images,
            num_containers,
            scheduler_name: spec
                .scheduler_name
                .as_deref()
                .unwrap_or(DEFAULT_SCHEDULER_NAME)
                .into(),
            gated: spec
                .scheduling_gates
                .as_ref()
                .is_some_and(|g| !g.is_empty()),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            start_time,
            node: None,
            volumes: None,
        })
    }
}

fn compile_term(
    t: &core::PodAffinityTerm,
    own_ns: Sym,
    own_labels: &Labels,
    i: &mut Interner,
) -> Result<AffinityTerm, Error> {
    let mut selector = match &t.label_selector {
        Some(s) => Some(LabelSelector::compile(s, i)?),
        None => None,
    };
    if let Some(sel) = selector.as_mut() {
        for k in t.match_label_keys.iter().flatten() {
            let k = i.intern(k);
            if let Some(v) = own_labels.get(k) {
                sel.push_in(k, v);
            }
        }
        for k in t.mismatch_label_keys.iter().flatten() {
            let k = i.intern(k);
            if let Some(v) = own_labels.get(k) {
                sel.push_not_in(k, v);
            }
        }
    }
    let mut namespaces: Vec<Sym> = t.namespaces.iter().flatten().map(|n| i.intern(n)).collect();
    let ns_selector = match &t.namespace_selector {
        Some(s) => Some(LabelSelector::compile(s, i)?),
        None => None,
    };
    if namespaces.is_empty() && ns_selector.is_none() {
        namespaces.push(own_ns);
    }
    Ok(AffinityTerm {
        selector,
        namespaces,
        ns_selector,
        topology_key: i.intern(&t.topology_key),
    })
}

fn compile_pod_affinity(
    aff: Option<&core::Affinity>,
    ns: Sym,
    labels: &Labels,
    i: &mut Interner,
) -> Result<Option<Box<PodAffinity>>, Error> {
    let Some(aff) = aff else { return Ok(None) };
    let mut out = PodAffinity::default();
    if let Some(pa) = &aff.pod_affinity {
        for t in pa
            .required_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
        {
            out.required_affinity.push(compile_term(t, ns, labels, i)?);
        }
        for w in pa
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
        {
            out.preferred_affinity.push((
                i64::from(w.weight),
                compile_term(&w.pod_affinity_term, ns, labels, i)?,
            ));
        }
    }
    if let Some(pa) = &aff.pod_anti_affinity {
        for t in pa
            .required_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
        {
            out.required_anti.push(compile_term(t, ns, labels, i)?);
        }
        for w in pa
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
        {
            out.preferred_anti.push((
                i64::from(w.weight),
                compile_term(&w.pod_affinity_term, ns, labels, i)?,
            ));
        }
    }
    Ok(if out.is_empty() {
        None
    } else {
        Some(Box::new(out))
    })
}

fn container_requests(
    c: &core::Container,
    i: &mut Interner,
) -> Result<(Resources, i64, i64), Error> {
    let res = c.resources.as_ref();
    let mut r = match res.and_then(|r| r.requests.as_ref()) {
        Some(m) => Resources::from_map(m, i)?,
        None => Resources::default(),
    };
    // API defaulting: a limit without a request makes the request equal to it.
    if let Some(lim) = res.and_then(|r| r.limits.as_ref()) {
        let req = res.and_then(|r| r.requests.as_ref());
        let has = |k: &str| req.is_some_and(|m| m.contains_key(k));
        let l = Resources::from_map(lim, i)?;
        if !has("cpu") {
            r.milli_cpu = l.milli_cpu;
        }
        if !has("memory") {
            r.memory = l.memory;
        }
        if !has("ephemeral-storage") {
            r.ephemeral_storage = l.ephemeral_storage;
        }
        for (name, q) in lim {
            if !matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage") && !has(name) {
                let v = crate::resource::quantity(name, q, false)?;
                let mut one = Resources::default();
                one.scalars.push((i.intern(name), v));
                r.add(&one);
            }
        }
    }
    let has_cpu = res
        .and_then(|r| r.requests.as_ref().or(r.limits.as_ref()))
        .is_some_and(|m| m.contains_key("cpu"));
    let has_mem = res
        .and_then(|r| r.requests.as_ref().or(r.limits.as_ref()))
        .is_some_and(|m| m.contains_key("memory"));
    let nz_cpu = if has_cpu {
        r.milli_cpu
    } else {
        DEFAULT_MILLI_CPU_REQUEST
    };
    let nz_mem = if has_mem {
        r.memory
    } else {
        DEFAULT_MEMORY_REQUEST
    };
    Ok((r, nz_cpu, nz_mem))
}

/// Effective pod requests as `resourcehelper.PodRequests`: the sum of app
/// containers and restartable (sidecar) init containers, at least the largest
/// init-container step, plus overhead. Also returns the "non-zero" CPU and
/// memory used for scoring (missing container requests count as defaults).
fn pod_requests(spec: &core::PodSpec, i: &mut Interner) -> Result<(Resources, i64, i64), Error> {
    let mut sum = Resources::default();
    let (mut nz_cpu, mut nz_mem) = (0i64, 0i64);
    for c in &spec.containers {
        let (r, c_cpu, c_mem) = container_requests(c, i)?;
        sum.add(&r);
        nz_cpu += c_cpu;
        nz_mem += c_mem;
    }
    let mut sidecars = Resources::default();
    let (mut sc_cpu, mut sc_mem) = (0i64, 0i64);
    let mut init_max = Resources::default();
    let (mut init_cpu, mut init_mem) = (0i64, 0i64);
    for c in spec.init_containers.iter().flatten() {
        let (r, c_cpu, c_mem) = container_requests(c, i)?;
        if c.restart_policy.as_deref() == Some("Always") {
            sum.add(&r);
            nz_cpu += c_cpu;
            nz_mem += c_mem;
            sidecars.add(&r);
            sc_cpu += c_cpu;
            sc_mem += c_mem;
            init_max.max_with(&sidecars);
            init_cpu = init_cpu.max(sc_cpu);
            init_mem = init_mem.max(sc_mem);
        } else {
            let mut step = r;
            step.add(&sidecars);
            init_max.max_with(&step);
            init_cpu = init_cpu.max(c_cpu + sc_cpu);
            init_mem = init_mem.max(c_mem + sc_mem);
        }
    }
    sum.max_with(&init_max);
    nz_cpu = nz_cpu.max(init_cpu);
    nz_mem = nz_mem.max(init_mem);
    // Pod-level resources (spec.resources) override the container sum.
    if let Some(m) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        let p = Resources::from_map(m, i)?;
        if m.contains_key("cpu") {
            sum.milli_cpu = p.milli_cpu;
            nz_cpu = p.milli_cpu;
        }
        if m.contains_key("memory") {
            sum.memory = p.memory;
            nz_mem = p.memory;
        }
    }
    if let Some(o) = &spec.overhead {
        let o = Resources::from_map(o, i)?;
        sum.add(&o);
        nz_cpu += o.milli_cpu;
        nz_mem += o.memory;
    }
    sum.pods = 0;
    Ok((sum, nz_cpu, nz_mem))
}
