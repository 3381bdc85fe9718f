//! The garbage collector: a graph of objects and their ownerReferences, kept by the
//! shared informers, that
//! - deletes an object once every owner is gone (background cascade: the owner was
//!   deleted and its dependents follow);
//! - for an owner deleted with `propagationPolicy=Foreground` (finalizer
//!   `foregroundDeletion`), deletes its dependents and removes the finalizer once no
//!   dependent with `blockOwnerDeletion` remains;
//! - for an owner deleted with `propagationPolicy=Orphan` (finalizer `orphan`), removes
//!   the ownerReferences to it from its dependents, then the finalizer;
//! - drops dangling ownerReferences from objects that still have a live owner.
//!
//! Absence in the cache is confirmed with a live GET before anything is deleted.
//!
//! Built-in kinds reach the graph through the shared informers; other kinds (custom
//! resources) are found by discovery, as upstream's collector does, every few seconds,
//! and watched with dynamic watchers from then on, so custom resources can own objects.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kcore_k8s::status_code;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::core::{ApiResource, DynamicObject};
use kube::discovery::{verbs, Scope};
use kube::{Client, Resource};
use serde_json::json;

use crate::cache::Change;
use crate::error::Error;
use crate::meta::ObjectKey;
use crate::queue::WorkQueue;
use crate::runner::{Action, Reconciler};

/// Finalizer holding an owner until its blocking dependents are deleted.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer holding an owner until its dependents are orphaned.
pub const ORPHAN: &str = "orphan";

/// One object in the graph.
#[derive(Debug, Clone, PartialEq)]
struct Node {
    kind: usize,
    namespace: Option<String>,
    name: String,
    resource_version: Option<String>,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    kinds: Vec<ApiResource>,
    /// Kinds known to be cluster-scoped (from discovery).
    cluster_scoped: BTreeSet<usize>,
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    /// The tracked kind of an owner reference, by group and kind (any version of a
    /// kind names the same objects).
    fn kind_of(&self, api_version: &str, kind: &str) -> Option<usize> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        self.kinds
            .iter()
            .position(|k| k.group == group && k.kind == kind)
    }

    /// Applies one observed object (or its deletion) to the graph; returns the uids the
    /// collector should look at.
    fn observe(&mut self, kind: usize, m: &ObjectMeta, deleted: bool) -> Vec<String> {
        let Some(uid) = m.uid.clone() else {
            return Vec::new();
        };
        let node = (!deleted).then(|| Node {
            kind,
            namespace: m.namespace.clone(),
            name: m.name.clone().unwrap_or_default(),
            resource_version: m.resource_version.clone(),
            owners: m.owner_references.clone().unwrap_or_default(),
            deleting: m.deletion_timestamp.is_some(),
            finalizers: m.finalizers.clone().unwrap_or_default(),
        });
        let interesting = node.as_ref().is_some_and(|n| {
            !n.owners.is_empty()
                || (n.deleting && n.finalizers.iter().any(|f| f == FOREGROUND || f == ORPHAN))
        });
        let old = self.set(&uid, node.clone());
        let changed = old != node;
        let mut keys = Vec::new();
        if interesting && changed {
            keys.push(uid.clone());
        }
        if node.is_none() || node.as_ref().is_some_and(|n| n.deleting) {
            // Dependents may have lost their last owner; owners may wait for us.
            keys.extend(self.dependents_of(&uid));
            keys.extend(
                old.iter()
                    .flat_map(|o| o.owners.iter().map(|r| r.uid.clone())),
            );
        }
        keys
    }

    /// The objects with an owner of kind `kind` (to look at once the kind is tracked).
    fn owned_by_kind(&self, kind: usize) -> Vec<String> {
        let k = &self.kinds[kind];
        self.nodes
            .iter()
            .filter(|(_, n)| {
                n.owners.iter().any(|o| {
                    o.kind == k.kind
                        && o.api_version.rsplit_once('/').map_or("", |(g, _)| g) == k.group
                })
            })
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// Replaces (or with `None`, removes) the node `uid`; keeps the dependents index.
    fn set(&mut self, uid: &str, node: Option<Node>) -> Option<Node> {
        let old = match node {
            Some(n) => {
                for o in &n.owners {
                    self.dependents
                        .entry(o.uid.clone())
                        .or_default()
                        .insert(uid.to_owned());
                }
                self.nodes.insert(uid.to_owned(), n)
            }
            None => self.nodes.remove(uid),
        };
        if let Some(old) = &old {
            let now: BTreeSet<&str> = self
                .nodes
                .get(uid)
                .map(|n| n.owners.iter().map(|o| o.uid.as_str()).collect())
                .unwrap_or_default();
            for o in &old.owners {
                if !now.contains(o.uid.as_str()) {
                    if let Some(set) = self.dependents.get_mut(&o.uid) {
                        set.remove(uid);
                        if set.is_empty() {
                            self.dependents.remove(&o.uid);
                        }
                    }
                }
            }
        }
        old
    }

    fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The garbage collector (keys are object uids, as `ObjectKey::cluster(uid)`).
#[derive(Clone)]
pub(crate) struct GarbageCollector {
    client: Client,
    graph: Arc<RwLock<Graph>>,
}

/// What the collector decided for one object.
#[derive(Debug, PartialEq)]
enum Plan {
    Nothing,
    /// Delete it: every owner is gone.
    Delete,
    /// Remove these dangling owner uids.
    DropOwners(Vec<String>),
    /// Remove the ownerReference to `owner` from each dependent, then the `orphan` finalizer.
    Orphan(Vec<String>),
    /// Delete these dependents (foreground when their reference blocks), or, when none
    /// blocks any more, remove the `foregroundDeletion` finalizer.
    Foreground {
        delete: Vec<(String, bool)>,
        finalize: bool,
    },
}

impl GarbageCollector {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            graph: Arc::new(RwLock::new(Graph::default())),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Graph> {
        self.graph
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Graph> {
        self.graph
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a kind and returns the handler that keeps its objects in the graph.
    pub(crate) fn track<K>(&self, queue: WorkQueue<ObjectKey>) -> impl Fn(&Change<K>) + Send + Sync
    where
        K: Resource<DynamicType = ()>,
    {
        let ar = ApiResource::erase::<K>(&());
        let kind = {
            let mut g = self.write();
            g.kinds.push(ar);
            g.kinds.len() - 1
        };
        let graph = Arc::clone(&self.graph);
        move |c| {
            let keys = graph
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .observe(kind, c.object().meta(), matches!(c, Change::Deleted(_)));
            for k in keys {
                queue.add(ObjectKey::cluster(k));
            }
        }
    }

    /// Finds the kinds the informers do not cover (custom resources) by discovery every
    /// `every`, and watches each new one, until `shutdown` resolves.
    pub(crate) async fn watch_other_kinds(
        self,
        queue: WorkQueue<ObjectKey>,
        every: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut watchers = tokio::task::JoinSet::new();
        let scan = async {
            loop {
                match self.discover().await {
                    Ok(new) => {
                        for (kind, ar) in new {
                            watchers.spawn(self.clone().watch_kind(kind, ar, queue.clone()));
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "garbage collector discovery"),
                }
                tokio::time::sleep(every).await;
            }
        };
        tokio::select! {
            _ = scan => {}
            _ = shutdown => {}
        }
        watchers.shutdown().await;
    }

    /// Registers the listable, watchable, deletable kinds discovery shows that the graph
    /// lacks; returns them.
    async fn discover(&self) -> Result<Vec<(usize, ApiResource)>, kube::Error> {
        let discovery = kube::discovery::Discovery::new(self.client.clone())
            .run()
            .await?;
        let mut new = Vec::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                let verbs = [verbs::LIST, verbs::WATCH, verbs::DELETE];
                if !verbs.iter().all(|v| caps.supports_operation(v))
                    || !ar.plural.chars().all(|c| c != '/')
                {
                    continue;
                }
                let mut g = self.write();
                if g.kind_of(&ar.api_version, &ar.kind).is_some() {
                    continue;
                }
                g.kinds.push(ar.clone());
                let kind = g.kinds.len() - 1;
                if caps.scope == Scope::Cluster {
                    g.cluster_scoped.insert(kind);
                }
                tracing::debug!(kind = %ar.kind, group = %ar.group, "garbage collector tracks a new kind");
                new.push((kind, ar));
            }
        }
        Ok(new)
    }

    /// Keeps the objects of one discovered kind in the graph.
    async fn watch_kind(self, kind: usize, ar: ApiResource, queue: WorkQueue<ObjectKey>) {
        use futures::StreamExt as _;
        use kube::runtime::watcher::{self, Event};
        use kube::runtime::WatchStreamExt as _;
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        // Backoff on errors: a failing list (a server gone, a kind removed) can fail
        // without ever pending, and a loop that never yields blocks the runtime's shutdown.
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        let mut listed: Option<BTreeSet<String>> = None;
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::debug!(error = %e, kind = %ar.kind, "garbage collector watch");
                    continue;
                }
            };
            let mut keys = Vec::new();
            {
                let mut g = self.write();
                match ev {
                    Event::Apply(o) => keys = g.observe(kind, &o.metadata, false),
                    Event::Delete(o) => keys = g.observe(kind, &o.metadata, true),
                    Event::Init => listed = Some(BTreeSet::new()),
                    Event::InitApply(o) => {
                        if let (Some(l), Some(uid)) = (listed.as_mut(), o.metadata.uid.clone()) {
                            l.insert(uid);
                        }
                        keys = g.observe(kind, &o.metadata, false);
                    }
                    Event::InitDone => {
                        // Objects gone while not watched, then everything that may be
                        // owned by one of this kind.
                        let seen = listed.take().unwrap_or_default();
                        let stale: Vec<(String, ObjectMeta)> = g
                            .nodes
                            .iter()
                            .filter(|(uid, n)| n.kind == kind && !seen.contains(*uid))
                            .map(|(uid, _)| {
                                (
                                    uid.clone(),
                                    ObjectMeta {
                                        uid: Some(uid.clone()),
                                        ..ObjectMeta::default()
                                    },
                                )
                            })
                            .collect();
                        for (_, m) in stale {
                            keys.extend(g.observe(kind, &m, true));
                        }
                        keys.extend(g.owned_by_kind(kind));
                    }
                }
            }
            for k in keys {
                queue.add(ObjectKey::cluster(k));
            }
        }
    }

    fn plan(&self, uid: &str) -> (Option<Node>, Plan) {
        let g = self.read();
        let Some(node) = g.nodes.get(uid).cloned() else {
            return (None, Plan::Nothing);
        };
        if node.deleting && node.finalizers.iter().any(|f| f == ORPHAN) {
            return (Some(node), Plan::Orphan(g.dependents_of(uid)));
        }
        if node.deleting && node.finalizers.iter().any(|f| f == FOREGROUND) {
            let mut delete = Vec::new();
            let mut blocking = false;
            for d in g.dependents_of(uid) {
                let Some(dn) = g.nodes.get(&d) else { continue };
                let blocks = dn
                    .owners
                    .iter()
                    .any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
                blocking |= blocks;
                if !dn.deleting {
                    delete.push((d, blocks));
                }
            }
            return (
                Some(node),
                Plan::Foreground {
                    delete,
                    finalize: !blocking,
                },
            );
        }
        if node.owners.is_empty() {
            return (Some(node), Plan::Nothing);
        }
        // Owners not in the cache are candidates for "gone"; confirmed live later.
        let missing: Vec<String> = node
            .owners
            .iter()
            .filter(|o| match g.nodes.get(&o.uid) {
                Some(_) => false,
                // An owner of a kind we do not track is assumed alive.
                None => g.kind_of(&o.api_version, &o.kind).is_some(),
            })
            .map(|o| o.uid.clone())
            .collect();
        let plan = if missing.is_empty() {
            Plan::Nothing
        } else if missing.len() == node.owners.len() {
            Plan::Delete
        } else {
            Plan::DropOwners(missing)
        };
        (Some(node), plan)
    }

    fn api_for(&self, kind: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = self.read().kinds[kind].clone();
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    fn describe(&self, n: &Node) -> String {
        let kind = self.read().kinds[n.kind].kind.to_lowercase();
        match &n.namespace {
            Some(ns) => format!("{kind} {ns}/{}", n.name),
            None => format!("{kind} {}", n.name),
        }
    }

    /// Whether the owner `r` of an object in `namespace` really is gone (live GET).
    async fn owner_gone(&self, r: &OwnerReference, namespace: Option<&str>) -> Result<bool, Error> {
        let Some(kind) = self.read().kind_of(&r.api_version, &r.kind) else {
            return Ok(false);
        };
        let namespaced = self
            .read()
            .nodes
            .values()
            .any(|n| n.kind == kind && n.namespace.is_some());
        let cluster_scoped = self.read().cluster_scoped.contains(&kind);
        let ns = if !cluster_scoped && (namespaced || r.kind != "Node" && r.kind != "Namespace") {
            namespace
        } else {
            None
        };
        match self.api_for(kind, ns).get(&r.name).await {
            Ok(o) => Ok(o.metadata.uid.as_deref() != Some(r.uid.as_str())),
            Err(e) if status_code(&e) == Some(404) => Ok(true),
            Err(e) => Err(Error::api(
                "get",
                format!("{} {}", r.kind.to_lowercase(), r.name),
            )(e)),
        }
    }

    /// The object `uid` as the server has it now, or `None` when it is gone (or the name
    /// now belongs to another object).
    async fn live(&self, uid: &str, n: &Node) -> Result<Option<Node>, Error> {
        let api = self.api_for(n.kind, n.namespace.as_deref());
        match api.get(&n.name).await {
            Ok(o) if o.metadata.uid.as_deref() == Some(uid) => Ok(Some(Node {
                resource_version: o.metadata.resource_version,
                owners: o.metadata.owner_references.unwrap_or_default(),
                deleting: o.metadata.deletion_timestamp.is_some(),
                finalizers: o.metadata.finalizers.unwrap_or_default(),
                ..n.clone()
            })),
            Ok(_) => Ok(None),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(Error::api("get", self.describe(n))(e)),
        }
    }

    /// Deletes `uid` whatever its version (the dependents of a foreground deletion).
    async fn delete(&self, uid: &str, n: &Node, policy: PropagationPolicy) -> Result<(), Error> {
        self.delete_with(uid, None, n, policy).await
    }

    /// Deletes `uid` only if it is still at the version `n` was read at: a change since
    /// (a dropped owner reference, say) makes the server refuse, and the change's own
    /// event brings the object back to the collector.
    async fn delete_version(
        &self,
        uid: &str,
        n: &Node,
        policy: PropagationPolicy,
    ) -> Result<(), Error> {
        self.delete_with(uid, n.resource_version.clone(), n, policy)
            .await
    }

    async fn delete_with(
        &self,
        uid: &str,
        resource_version: Option<String>,
        n: &Node,
        policy: PropagationPolicy,
    ) -> Result<(), Error> {
        let policy_name = format!("{policy:?}");
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version,
            }),
            ..DeleteParams::default()
        };
        match self
            .api_for(n.kind, n.namespace.as_deref())
            .delete(&n.name, &dp)
            .await
        {
            Ok(_) => {
                tracing::debug!(object = %self.describe(n), policy = %policy_name, "garbage collected");
                Ok(())
            }
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(Error::api("delete", self.describe(n))(e)),
        }
    }

    async fn patch_meta(&self, n: &Node, meta: serde_json::Value) -> Result<(), Error> {
        let mut meta = meta;
        meta["resourceVersion"] = json!(n.resource_version);
        let patch = json!({ "metadata": meta });
        match self
            .api_for(n.kind, n.namespace.as_deref())
            .patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(Error::api("patch", self.describe(n))(e)),
        }
    }
}

impl Reconciler for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbagecollector"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let uid = key.name.as_str();
        let (node, plan) = self.plan(uid);
        let Some(node) = node else {
            return Ok(Action::Done);
        };
        match plan {
            Plan::Nothing => {}
            Plan::Delete | Plan::DropOwners(_) => {
                // The graph may lag behind the server: an owner's deletion can arrive
                // before the update that orphaned this object. Decide on the object as
                // the server has it now (upstream's attemptToDeleteItem does the same),
                // then act only on that version of it.
                let Some(live) = self.live(uid, &node).await? else {
                    return Ok(Action::Done);
                };
                let mut gone = Vec::new();
                for o in &live.owners {
                    let in_graph = self.read().nodes.contains_key(&o.uid);
                    if !in_graph && self.owner_gone(o, live.namespace.as_deref()).await? {
                        gone.push(o.uid.clone());
                    }
                }
                if !gone.is_empty() && gone.len() == live.owners.len() {
                    self.delete_version(uid, &live, PropagationPolicy::Background)
                        .await?;
                } else if !gone.is_empty() {
                    let keep: Vec<&OwnerReference> = live
                        .owners
                        .iter()
                        .filter(|o| !gone.contains(&o.uid))
                        .collect();
                    self.patch_meta(&live, json!({ "ownerReferences": keep }))
                        .await?;
                }
            }
            Plan::Orphan(deps) => {
                for d in deps {
                    let Some(dn) = self.read().nodes.get(&d).cloned() else {
                        continue;
                    };
                    let keep: Vec<&OwnerReference> =
                        dn.owners.iter().filter(|o| o.uid != uid).collect();
                    self.patch_meta(&dn, json!({ "ownerReferences": keep }))
                        .await?;
                }
                let fin: Vec<&String> = node.finalizers.iter().filter(|f| *f != ORPHAN).collect();
                self.patch_meta(&node, json!({ "finalizers": fin })).await?;
            }
            Plan::Foreground { delete, finalize } => {
                for (d, blocks) in delete {
                    let Some(dn) = self.read().nodes.get(&d).cloned() else {
                        continue;
                    };
                    let policy = if blocks {
                        PropagationPolicy::Foreground
                    } else {
                        PropagationPolicy::Background
                    };
                    self.delete(&d, &dn, policy).await?;
                }
                if finalize {
                    let fin: Vec<&String> = node
                        .finalizers
                        .iter()
                        .filter(|f| *f != FOREGROUND)
                        .collect();
                    self.patch_meta(&node, json!({ "finalizers": fin })).await?;
                }
            }
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gc_graph() -> Graph {
        let mut g = Graph::default();
        g.kinds
            .push(ApiResource::erase::<k8s_openapi::api::apps::v1::ReplicaSet>(&()));
        g.kinds
            .push(ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()));
        g
    }

    fn owner(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn node(kind: usize, name: &str, owners: Vec<OwnerReference>) -> Node {
        Node {
            kind,
            namespace: Some("ns".into()),
            name: name.into(),
            resource_version: Some("1".into()),
            owners,
            deleting: false,
            finalizers: Vec::new(),
        }
    }

    fn plan_of(g: Graph, uid: &str) -> Plan {
        // Plans are computed from the graph alone; no client is used.
        let gc = GarbageCollector {
            client: dummy_client(),
            graph: Arc::new(RwLock::new(g)),
        };
        gc.plan(uid).1
    }

    fn dummy_client() -> Client {
        let cfg = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
        Client::try_from(cfg).expect("client")
    }

    /// The graph can lag behind the server: here it still shows pod `p` owned by a
    /// ReplicaSet that is gone, while the server's pod was already orphaned (its
    /// reference removed). The collector must decide on the live pod and keep it; a pod
    /// whose live reference does dangle is still collected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_graph_never_deletes_an_orphaned_object() {
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::PostParams;
        let (_dir, server, client) = crate::test_server().await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let gone_rs = owner("00000000-0000-0000-0000-00000000dead", true);
        let create = |name: &str, owners: Vec<&OwnerReference>| {
            let pods = pods.clone();
            let pod = json!({"metadata": {"name": name, "ownerReferences": owners},
                "spec": {"containers": [{"name": "c", "image": "x"}]}});
            async move {
                pods.create(
                    &PostParams::default(),
                    &serde_json::from_value(pod).expect("pod"),
                )
                .await
                .expect("create pod")
            }
        };
        let orphaned = create("orphaned", vec![]).await;
        let dangling = create("dangling", vec![&gone_rs]).await;

        let mut g = gc_graph();
        for p in [&orphaned, &dangling] {
            let mut n = node(
                1,
                p.metadata.name.as_deref().expect("name"),
                vec![gone_rs.clone()],
            );
            n.namespace = Some("default".into());
            n.resource_version = p.metadata.resource_version.clone();
            g.set(p.metadata.uid.as_deref().expect("uid"), Some(n));
        }
        let gc = GarbageCollector {
            client,
            graph: Arc::new(RwLock::new(g)),
        };
        for p in [&orphaned, &dangling] {
            let key = ObjectKey::cluster(p.metadata.uid.clone().expect("uid"));
            assert_eq!(gc.plan(&key.name).1, Plan::Delete);
            gc.reconcile(&key).await.expect("reconcile");
        }
        assert!(
            pods.get_opt("orphaned").await.expect("get").is_some(),
            "orphan deleted"
        );
        let d = pods.get_opt("dangling").await.expect("get");
        assert!(
            d.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
            "dangling kept"
        );
        server.shutdown().await.expect("shutdown");
    }

    #[tokio::test]
    async fn dependents_index_follows_owner_changes() {
        let mut g = gc_graph();
        g.set("p1", Some(node(1, "p1", vec![owner("rs1", true)])));
        assert_eq!(g.dependents_of("rs1"), vec!["p1"]);
        g.set("p1", Some(node(1, "p1", vec![owner("rs2", true)])));
        assert!(g.dependents_of("rs1").is_empty());
        assert_eq!(g.dependents_of("rs2"), vec!["p1"]);
        g.set("p1", None);
        assert!(g.dependents_of("rs2").is_empty());
    }

    #[tokio::test]
    async fn plans() {
        // Owner present: nothing.
        let mut g = gc_graph();
        g.set("rs1", Some(node(0, "rs1", vec![])));
        g.set("p1", Some(node(1, "p1", vec![owner("rs1", true)])));
        assert_eq!(plan_of(g, "p1"), Plan::Nothing);

        // Owner gone: delete.
        let mut g = gc_graph();
        g.set("p1", Some(node(1, "p1", vec![owner("rs1", true)])));
        assert_eq!(plan_of(g, "p1"), Plan::Delete);

        // One of two owners gone: drop that reference.
        let mut g = gc_graph();
        g.set("rs2", Some(node(0, "rs2", vec![])));
        g.set(
            "p1",
            Some(node(
                1,
                "p1",
                vec![owner("rs1", false), owner("rs2", false)],
            )),
        );
        assert_eq!(plan_of(g, "p1"), Plan::DropOwners(vec!["rs1".into()]));

        // Untracked owner kinds are assumed alive.
        let mut g = gc_graph();
        let mut r = owner("x", true);
        r.kind = "Widget".into();
        g.set("p1", Some(node(1, "p1", vec![r])));
        assert_eq!(plan_of(g, "p1"), Plan::Nothing);

        // Foreground: delete dependents; finalize only when none blocks.
        let mut g = gc_graph();
        let mut rs = node(0, "rs1", vec![]);
        rs.deleting = true;
        rs.finalizers = vec![FOREGROUND.into()];
        g.set("rs1", Some(rs.clone()));
        g.set("p1", Some(node(1, "p1", vec![owner("rs1", true)])));
        g.set("p2", Some(node(1, "p2", vec![owner("rs1", false)])));
        assert_eq!(
            plan_of(g, "rs1"),
            Plan::Foreground {
                delete: vec![("p1".into(), true), ("p2".into(), false)],
                finalize: false
            }
        );
        let mut g = gc_graph();
        g.set("rs1", Some(rs.clone()));
        g.set("p2", Some(node(1, "p2", vec![owner("rs1", false)])));
        assert_eq!(
            plan_of(g, "rs1"),
            Plan::Foreground {
                delete: vec![("p2".into(), false)],
                finalize: true
            }
        );

        // Orphan: strip references from dependents.
        let mut g = gc_graph();
        rs.finalizers = vec![ORPHAN.into()];
        g.set("rs1", Some(rs));
        g.set("p1", Some(node(1, "p1", vec![owner("rs1", true)])));
        assert_eq!(plan_of(g, "rs1"), Plan::Orphan(vec!["p1".into()]));
    }
}
