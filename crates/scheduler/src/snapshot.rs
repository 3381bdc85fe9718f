//! The cluster snapshot: nodes and assigned pods in compact, interned form,
//! updated incrementally as objects are added, changed and removed.

use std::collections::HashMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::error::Error;
use crate::intern::{FastMap, Interner, Sym};
use crate::labels::{LabelSelector, Labels};
use crate::model::{NodeId, NodeInfo, PodId, PodInfo};

/// A compiled PodDisruptionBudget.
#[derive(Clone, Debug)]
pub(crate) struct Pdb {
    pub(crate) namespace: Sym,
    pub(crate) selector: Option<LabelSelector>,
    pub(crate) disruptions_allowed: i64,
    pub(crate) disrupted: Vec<Box<str>>,
}

impl Pdb {
    /// Upstream: a nil or empty selector matches no pods for PDB purposes.
    pub(crate) fn covers(&self, pod: &PodInfo) -> bool {
        pod.namespace == self.namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|s| !s.is_empty() && s.matches(&pod.labels))
            && !self.disrupted.iter().any(|d| **d == *pod.name)
    }
}

/// The scheduler's view of the cluster.
///
/// Nodes and pods live in slots addressed by [`NodeId`] and [`PodId`]; strings
/// are interned once. Every mutation is incremental: adding or removing a pod
/// adjusts its node's requested resources, ports and counters in O(pods on the
/// node), never rebuilding the snapshot.
#[derive(Default, Debug, Clone)]
pub struct Snapshot {
    pub(crate) interner: Interner,
    nodes: Vec<Option<NodeInfo>>,
    free_nodes: Vec<u32>,
    /// Live nodes in a stable order, for round-robin evaluation.
    order: Vec<NodeId>,
    /// Position of each node slot in `order`.
    order_pos: Vec<u32>,
    node_by_name: HashMap<Box<str>, NodeId>,
    pods: Vec<Option<PodInfo>>,
    free_pods: Vec<u32>,
    pod_by_key: HashMap<String, PodId>,
    /// Pods whose node is not (yet) in the snapshot, by node name.
    waiting: HashMap<Box<str>, Vec<PodId>>,
    pub(crate) ns_labels: FastMap<Sym, Labels>,
    /// Number of nodes holding each image (ImageLocality's spread).
    pub(crate) image_nodes: FastMap<Sym, u32>,
    /// Assigned pods with any pod (anti-)affinity.
    pub(crate) affinity_pods: Vec<PodId>,
    /// Assigned pods with required anti-affinity.
    pub(crate) anti_affinity_pods: Vec<PodId>,
    pdbs: HashMap<String, Pdb>,
    /// Nodes with at least one PreferNoSchedule taint.
    pub(crate) soft_tainted_nodes: usize,
    /// Pods nominated to nodes by preemption, by node.
    pub(crate) nominated: FastMap<NodeId, Vec<PodInfo>>,
    generation: u64,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// The interner behind all ids in this snapshot.
    pub fn interner(&self) -> &Interner {
        &self.interner
    }

    /// Bumped on every change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of live nodes.
    pub fn num_nodes(&self) -> usize {
        self.order.len()
    }

    /// Number of pods held (assigned, and waiting for their node).
    pub fn num_pods(&self) -> usize {
        self.pod_by_key.len()
    }

    /// Number of node slots (live or free): the bound of `NodeId`s.
    pub(crate) fn node_slots(&self) -> usize {
        self.nodes.len()
    }

    /// Live node ids in evaluation order.
    pub fn node_ids(&self) -> &[NodeId] {
        &self.order
    }

    /// The node in slot `id`.
    #[inline]
    pub fn node(&self, id: NodeId) -> &NodeInfo {
        self.nodes[id.0 as usize]
            .as_ref()
            .expect("node id refers to a live node")
    }

    /// Looks a node up by name.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.node_by_name.get(name).copied()
    }

    /// The pod in slot `id`.
    #[inline]
    pub fn pod(&self, id: PodId) -> &PodInfo {
        self.pods[id.0 as usize]
            .as_ref()
            .expect("pod id refers to a live pod")
    }

    /// Looks a pod up by `namespace/name`.
    pub fn pod_id(&self, key: &str) -> Option<PodId> {
        self.pod_by_key.get(key).copied()
    }

    /// Pods assigned to a node in the snapshot, with their node, in slot
    /// order (contiguous memory: faster than walking node by node).
    pub(crate) fn assigned_pods(&self) -> impl Iterator<Item = (&PodInfo, NodeId)> {
        self.pods
            .iter()
            .flatten()
            .filter_map(|p| p.node.map(|n| (p, n)))
    }

    /// Keys (`namespace/name`) of the pods held.
    pub fn pod_keys(&self) -> impl Iterator<Item = &str> {
        self.pod_by_key.keys().map(String::as_str)
    }

    /// Compiles a Pod against this snapshot's interner without adding it.
    pub fn compile_pod(&mut self, pod: &core::Pod) -> Result<PodInfo, Error> {
        PodInfo::compile(pod, &mut self.interner)
    }

    /// Compiles a pending pod together with what is known of its PersistentVolumeClaims
    /// (for the VolumeBinding plugin).
    pub fn compile_pod_with_volumes(
        &mut self,
        pod: &core::Pod,
        volumes: &crate::model::PodVolumes,
    ) -> Result<PodInfo, Error> {
        let mut info = PodInfo::compile(pod, &mut self.interner)?;
        info.volumes = Some(Box::new(crate::model::CompiledVolumes::compile(
            volumes,
            &mut self.interner,
        )?));
        Ok(info)
    }

    /// Adds or replaces a node.
    pub fn upsert_node(&mut self, node: &core::Node) -> Result<NodeId, Error> {
        let mut info = NodeInfo::compile(node, &mut self.interner)?;
        self.generation += 1;
        if let Some(id) = self.node_id(&info.name) {
            let old = self.nodes[id.0 as usize].take().expect("live node");
            self.soft_tainted_nodes -= usize::from(has_soft_taint(&old));
            self.soft_tainted_nodes += usize::from(has_soft_taint(&info));
            for &(img, _) in &old.images {
                self.dec_image(img);
            }
            for &(img, _) in &info.images {
                *self.image_nodes.entry(img).or_default() += 1;
            }
            info.requested = old.requested;
            info.non_zero_cpu = old.non_zero_cpu;
            info.non_zero_mem = old.non_zero_mem;
            info.used_ports = old.used_ports;
            info.pods = old.pods;
            info.pods_with_affinity = old.pods_with_affinity;
            info.pods_with_required_anti = old.pods_with_required_anti;
            info.generation = old.generation + 1;
            self.nodes[id.0 as usize] = Some(info);
            return Ok(id);
        }
        for &(img, _) in &info.images {
            *self.image_nodes.entry(img).or_default() += 1;
        }
        self.soft_tainted_nodes += usize::from(has_soft_taint(&info));
        let name = info.name.clone();
        let id = match self.free_nodes.pop() {
            Some(slot) => {
                self.nodes[slot as usize] = Some(info);
                NodeId(slot)
            }
            None => {
                self.nodes.push(Some(info));
                self.order_pos.push(0);
                NodeId((self.nodes.len() - 1) as u32)
            }
        };
        self.order_pos[id.0 as usize] = self.order.len() as u32;
        self.order.push(id);
        self.node_by_name.insert(name.clone(), id);
        if let Some(waiting) = self.waiting.remove(&name) {
            for pid in waiting {
                self.attach(pid, id);
            }
        }
        Ok(id)
    }

    fn dec_image(&mut self, img: Sym) {
        if let Some(c) = self.image_nodes.get_mut(&img) {
            *c -= 1;
            if *c == 0 {
                self.image_nodes.remove(&img);
            }
        }
    }

    /// Removes a node and the pods assigned to it. Returns false if unknown.
    pub fn remove_node(&mut self, name: &str) -> bool {
        let Some(id) = self.node_by_name.remove(name) else {
            return false;
        };
        self.generation += 1;
        let info = self.nodes[id.0 as usize].take().expect("live node");
        self.soft_tainted_nodes -= usize::from(has_soft_taint(&info));
        for &(img, _) in &info.images {
            self.dec_image(img);
        }
        for pid in info.pods {
            if let Some(p) = self.pods[pid.0 as usize].take() {
                let key = p.key(&self.interner);
                self.pod_by_key.remove(&key);
                self.affinity_pods.retain(|&x| x != pid);
                self.anti_affinity_pods.retain(|&x| x != pid);
                self.free_pods.push(pid.0);
            }
        }
        self.nominated.remove(&id);
        let pos = self.order_pos[id.0 as usize] as usize;
        self.order.swap_remove(pos);
        if let Some(&moved) = self.order.get(pos) {
            self.order_pos[moved.0 as usize] = pos as u32;
        }
        self.free_nodes.push(id.0);
        true
    }

    /// Adds or replaces a Pod. Pods without `spec.nodeName` are not held (they
    /// belong in the scheduling queue) and yield `Ok(None)`; terminal pods
    /// (Succeeded/Failed) free their resources and are removed.
    pub fn upsert_pod(&mut self, pod: &core::Pod) -> Result<Option<PodId>, Error> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let key = format!("{ns}/{}", pod.metadata.name.as_deref().unwrap_or(""));
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if matches!(phase, Some("Succeeded" | "Failed")) || node.is_none() {
            self.remove_pod(&key);
            return Ok(None);
        }
        let info = PodInfo::compile(pod, &mut self.interner)?;
        self.remove_pod(&key);
        let node = node.unwrap_or_default();
        Ok(Some(self.insert(info, key, &node)))
    }

    /// Puts a scheduled pod on `node` ("assume"): its resources count at once,
    /// before the binding is confirmed by the API server.
    pub fn assume(&mut self, mut pod: PodInfo, node: NodeId) -> PodId {
        let key = pod.key(&self.interner);
        self.remove_pod(&key);
        let name = self.node(node).name.clone();
        pod.node_name = Some(name.clone());
        self.insert(pod, key, &name)
    }

    fn insert(&mut self, pod: PodInfo, key: String, node: &str) -> PodId {
        self.generation += 1;
        let id = match self.free_pods.pop() {
            Some(slot) => {
                self.pods[slot as usize] = Some(pod);
                PodId(slot)
            }
            None => {
                self.pods.push(Some(pod));
                PodId((self.pods.len() - 1) as u32)
            }
        };
        self.pod_by_key.insert(key, id);
        match self.node_by_name.get(node) {
            Some(&nid) => self.attach(id, nid),
            None => self.waiting.entry(node.into()).or_default().push(id),
        }
        id
    }

    fn attach(&mut self, pid: PodId, nid: NodeId) {
        let pod = self.pods[pid.0 as usize].as_mut().expect("live pod");
        pod.node = Some(nid);
        let pod = self.pods[pid.0 as usize].as_ref().expect("live pod");
        if pod.has_affinity() {
            self.affinity_pods.push(pid);
        }
        if pod.has_required_anti_affinity() {
            self.anti_affinity_pods.push(pid);
        }
        self.nodes[nid.0 as usize]
            .as_mut()
            .expect("live node")
            .add_pod(pid, pod);
    }

    /// Removes a pod by `namespace/name`, releasing its resources.
    pub fn remove_pod(&mut self, key: &str) -> Option<PodInfo> {
        let id = self.pod_by_key.remove(key)?;
        self.generation += 1;
        let pod = self.pods[id.0 as usize].take().expect("live pod");
        self.free_pods.push(id.0);
        if pod.has_affinity() {
            self.affinity_pods.retain(|&x| x != id);
        }
        if pod.has_required_anti_affinity() {
            self.anti_affinity_pods.retain(|&x| x != id);
        }
        match pod.node {
            Some(nid) => {
                if let Some(n) = self.nodes[nid.0 as usize].as_mut() {
                    n.remove_pod(id, &pod);
                }
            }
            None => {
                if let Some(w) = pod
                    .node_name
                    .as_deref()
                    .and_then(|n| self.waiting.get_mut(n))
                {
                    w.retain(|&x| x != id);
                }
            }
        }
        Some(pod)
    }

    /// Adds or replaces a namespace (its labels feed namespaceSelector).
    pub fn upsert_namespace(&mut self, ns: &core::Namespace) {
        let Some(name) = ns.metadata.name.as_deref() else {
            return;
        };
        let sym = self.interner.intern(name);
        let labels = Labels::from_map(ns.metadata.labels.as_ref(), &mut self.interner);
        self.ns_labels.insert(sym, labels);
        self.generation += 1;
    }

    /// Adds or replaces a PodDisruptionBudget (policy/v1).
    pub fn upsert_pdb(&mut self, pdb: &PodDisruptionBudget) -> Result<(), Error> {
        let ns = pdb.metadata.namespace.as_deref().unwrap_or("default");
        let name = pdb.metadata.name.as_deref().unwrap_or("");
        let selector = match pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) {
            Some(s) => Some(LabelSelector::compile(s, &mut self.interner)?),
            None => None,
        };
        let status = pdb.status.as_ref();
        let compiled = Pdb {
            namespace: self.interner.intern(ns),
            selector,
            disruptions_allowed: status
                .map_or(0, |s| i64::from(s.disruptions_allowed.unwrap_or(0))),
            disrupted: status
                .and_then(|s| s.disrupted_pods.as_ref())
                .map(|m| m.keys().map(|k| k.as_str().into()).collect())
                .unwrap_or_default(),
        };
        self.pdbs.insert(format!("{ns}/{name}"), compiled);
        Ok(())
    }

    /// Removes a PodDisruptionBudget by `namespace/name`.
    pub fn remove_pdb(&mut self, key: &str) -> bool {
        self.pdbs.remove(key).is_some()
    }

    pub(crate) fn pdbs(&self) -> impl Iterator<Item = &Pdb> {
        self.pdbs.values()
    }

    /// Records that `pod` is nominated to run on `node` after preemption:
    /// pods of lower priority then see its resources as taken.
    pub fn nominate(&mut self, pod: PodInfo, node: NodeId) {
        self.clear_nomination(&pod.key(&self.interner));
        let mut pod = pod;
        pod.nominated_node = Some(self.node(node).name.clone());
        self.nominated.entry(node).or_default().push(pod);
    }

    /// Forgets a nomination (the pod was scheduled, deleted or renominated).
    pub fn clear_nomination(&mut self, key: &str) {
        let interner = &self.interner;
        self.nominated.retain(|_, pods| {
            pods.retain(|p| p.key(interner) != key);
            !pods.is_empty()
        });
    }

    /// An estimate of the heap memory held, in bytes.
    pub fn memory_bytes(&self) -> usize {
        let pod_size = std::mem::size_of::<Option<PodInfo>>();
        let node_size = std::mem::size_of::<Option<NodeInfo>>();
        let pods_heap: usize = self
            .pods
            .iter()
            .flatten()
            .map(|p| {
                p.name.len()
                    + p.uid.len()
                    + p.labels.0.capacity() * 8
                    + p.requests.scalars.capacity() * 16
                    + p.images.capacity() * 4
                    + p.tolerations.capacity() * 24
                    + p.host_ports.capacity() * 12
                    + p.spread.capacity() * 64
                    + p.node_name.as_ref().map_or(0, |n| n.len())
                    + p.affinity.as_ref().map_or(0, |_| 256)
            })
            .sum();
        self.interner.heap_bytes()
            + self.nodes.capacity() * node_size
            + self
                .nodes
                .iter()
                .flatten()
                .map(NodeInfo::heap_bytes)
                .sum::<usize>()
            + self.pods.capacity() * pod_size
            + pods_heap
            + self.order.capacity() * 8
            + self.node_by_name.capacity() * 40
            + self.pod_by_key.capacity() * 48
            + self.pod_by_key.keys().map(String::len).sum::<usize>()
            + self.image_nodes.capacity() * 12
    }
}

fn has_soft_taint(n: &NodeInfo) -> bool {
    n.taints
        .iter()
        .any(|t| t.effect == crate::model::TaintEffect::PreferNoSchedule)
}
