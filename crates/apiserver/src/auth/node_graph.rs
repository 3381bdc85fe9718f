//! The Node authorizer's graph (upstream's `node.Graph` and its populator): for each node,
//! the objects reachable from the pods bound to it (Secrets, ConfigMaps, claims, service
//! accounts, resource claims, the pods themselves), and beside them which volume each
//! claim is bound to, the Secrets each volume names, and the node of each
//! VolumeAttachment. Beside the pods' edges it keeps kcore's own: the TLS Secrets that
//! the Ingresses kcore's controller serves name (every node may read those, see
//! [`super::node`]), with the IngressClasses that decide which Ingresses are served. It
//! is kept from watches of pods, claims, volumes, attachments, Ingresses and
//! IngressClasses ([`Graph::run`]), so that a decision is a few map lookups instead of a
//! pass over all pods.
//!
//! The watches trail the store by a moment: a pod just bound may not be in the graph yet.
//! Where the graph finds no path (or before it has synced), the authorizer confirms the
//! denial against the store ([`super::node`]), so a node is never refused what the store
//! already relates to it, and the common, allowed case costs no scan.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::Value;

use super::node::{volume_secrets, Kind, PodRefs};
use crate::api::{Api, ListOptions};
use crate::resources::{self, ResourceInfo};

type Key = (String, String);

/// One pod's edges: its node and what it refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodEdges {
    node: String,
    refs: Vec<(Kind, String)>,
}

#[derive(Debug, Default)]
struct State {
    pods: HashMap<Key, PodEdges>,
    /// node → (kind, namespace, name) → how many of its pods refer to it
    edges: HashMap<String, HashMap<(Kind, String, String), usize>>,
    claim_volume: HashMap<Key, String>,
    volume_secrets: HashMap<String, Vec<(Option<String>, String)>>,
    attachments: HashMap<String, String>,
    /// Ingress `(namespace, name)` → its class and the TLS Secrets it names
    ingresses: HashMap<Key, IngressTls>,
    /// TLS Secret `(namespace, name)` → the Ingresses of that namespace naming it
    tls_secrets: HashMap<Key, BTreeSet<String>>,
    /// IngressClasses by name
    classes: HashMap<String, IngressClass>,
}

/// What the graph keeps of one Ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IngressTls {
    class: Option<String>,
    secrets: Vec<String>,
}

impl State {
    fn unlink_pod(&mut self, key: &Key) {
        let Some(old) = self.pods.remove(key) else {
            return;
        };
        if let Some(e) = self.edges.get_mut(&old.node) {
            for (kind, name) in &old.refs {
                let k = (*kind, key.0.clone(), name.clone());
                if let Some(n) = e.get_mut(&k) {
                    *n -= 1;
                    if *n == 0 {
                        e.remove(&k);
                    }
                }
            }
            if e.is_empty() {
                self.edges.remove(&old.node);
            }
        }
    }

    fn set_pod(&mut self, pod: &Value, deleted: bool) {
        let key = key_of(pod);
        self.unlink_pod(&key);
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        if deleted || node.is_empty() {
            return;
        }
        let r = PodRefs::of(pod);
        let mut refs: Vec<(Kind, String)> = vec![
            (Kind::Pod, key.1.clone()),
            (Kind::ServiceAccount, r.service_account),
        ];
        refs.extend(r.secrets.into_iter().map(|n| (Kind::Secret, n)));
        refs.extend(r.config_maps.into_iter().map(|n| (Kind::ConfigMap, n)));
        refs.extend(r.claims.into_iter().map(|n| (Kind::Claim, n)));
        refs.extend(
            r.resource_claims
                .into_iter()
                .map(|n| (Kind::ResourceClaim, n)),
        );
        refs.sort();
        refs.dedup();
        let e = self.edges.entry(node.to_owned()).or_default();
        for (kind, name) in &refs {
            *e.entry((*kind, key.0.clone(), name.clone())).or_default() += 1;
        }
        self.pods.insert(
            key,
            PodEdges {
                node: node.to_owned(),
                refs,
            },
        );
    }

    fn unlink_ingress(&mut self, key: &Key) {
        let Some(old) = self.ingresses.remove(key) else {
            return;
        };
        for secret in old.secrets {
            let sk = (key.0.clone(), secret);
            if let Some(names) = self.tls_secrets.get_mut(&sk) {
                names.remove(&key.1);
                if names.is_empty() {
                    self.tls_secrets.remove(&sk);
                }
            }
        }
    }

    fn set_ingress(&mut self, obj: &Value, deleted: bool) {
        let key = key_of(obj);
        self.unlink_ingress(&key);
        // an Ingress without TLS entries relates no Secret: not read whole
        if deleted || obj["spec"]["tls"].as_array().is_none_or(Vec::is_empty) {
            return;
        }
        let ing: Ingress = match serde_json::from_value(obj.clone()) {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!(ingress = %format!("{}/{}", key.0, key.1), error = %e, "node graph: reading an ingress");
                return;
            }
        };
        let tls = IngressTls {
            class: kcore_k8s::ingress_class(&ing).map(str::to_owned),
            secrets: kcore_k8s::ingress_tls_secrets(&ing)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        };
        if tls.secrets.is_empty() {
            return;
        }
        for secret in &tls.secrets {
            self.tls_secrets
                .entry((key.0.clone(), secret.clone()))
                .or_default()
                .insert(key.1.clone());
        }
        self.ingresses.insert(key, tls);
    }

    fn set_class(&mut self, obj: &Value, name: String, deleted: bool) {
        match serde_json::from_value::<IngressClass>(obj.clone()) {
            Ok(c) if !deleted => self.classes.insert(name, c),
            _ => self.classes.remove(&name),
        };
    }

    /// Whether an Ingress kcore's controller serves names the Secret `ns/name` in its
    /// `spec.tls` (kcore's extension: every node may read it).
    fn ingress_tls_secret(&self, ns: &str, name: &str) -> bool {
        let Some(ingresses) = self.tls_secrets.get(&(ns.to_owned(), name.to_owned())) else {
            return false;
        };
        ingresses.iter().any(|i| {
            self.ingresses
                .get(&(ns.to_owned(), i.clone()))
                .is_some_and(|t| kcore_k8s::class_served(t.class.as_deref(), self.classes.values()))
        })
    }

    fn apply(&mut self, source: Source, obj: &Value, deleted: bool) {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match source {
            Source::Pods => self.set_pod(obj, deleted),
            Source::Claims => {
                let key = key_of(obj);
                match obj["spec"]["volumeName"]
                    .as_str()
                    .filter(|v| !v.is_empty() && !deleted)
                {
                    Some(v) => self.claim_volume.insert(key, v.to_owned()),
                    None => self.claim_volume.remove(&key),
                };
            }
            Source::Volumes => {
                let secrets = volume_secrets(&obj["spec"]);
                if deleted || secrets.is_empty() {
                    self.volume_secrets.remove(&name);
                } else {
                    self.volume_secrets.insert(name, secrets);
                }
            }
            Source::Attachments => {
                match obj["spec"]["nodeName"].as_str().filter(|_| !deleted) {
                    Some(n) => self.attachments.insert(name, n.to_owned()),
                    None => self.attachments.remove(&name),
                };
            }
            Source::Ingresses => self.set_ingress(obj, deleted),
            Source::IngressClasses => self.set_class(obj, name, deleted),
        }
    }

    fn clear(&mut self, source: Source) {
        match source {
            Source::Pods => {
                self.pods.clear();
                self.edges.clear();
            }
            Source::Claims => self.claim_volume.clear(),
            Source::Volumes => self.volume_secrets.clear(),
            Source::Attachments => self.attachments.clear(),
            Source::Ingresses => {
                self.ingresses.clear();
                self.tls_secrets.clear();
            }
            Source::IngressClasses => self.classes.clear(),
        }
    }

    fn has_path(&self, node: &str, kind: Kind, ns: &str, name: &str) -> bool {
        self.pod_path(node, kind, ns, name)
            || (kind == Kind::Secret && self.ingress_tls_secret(ns, name))
    }

    fn pod_path(&self, node: &str, kind: Kind, ns: &str, name: &str) -> bool {
        if kind == Kind::VolumeAttachment {
            return self.attachments.get(name).is_some_and(|n| n == node);
        }
        let Some(edges) = self.edges.get(node) else {
            return false;
        };
        if kind != Kind::Volume && edges.contains_key(&(kind, ns.to_owned(), name.to_owned())) {
            return true;
        }
        if !matches!(kind, Kind::Volume | Kind::Secret) {
            return false;
        }
        // node ← pod ← pvc ← pv (← secret)
        edges
            .keys()
            .filter(|(k, _, _)| *k == Kind::Claim)
            .filter_map(|(_, cns, cn)| self.claim_volume.get(&(cns.clone(), cn.clone())))
            .any(|pv| match kind {
                Kind::Volume => pv == name,
                _ => self.volume_secrets.get(pv).is_some_and(|s| {
                    s.iter()
                        .any(|(sns, sn)| sns.as_deref().unwrap_or(ns) == ns && sn == name)
                }),
            })
    }
}

fn key_of(obj: &Value) -> Key {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_owned(),
        m["name"].as_str().unwrap_or_default().to_owned(),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Pods,
    Claims,
    Volumes,
    Attachments,
    Ingresses,
    IngressClasses,
}

impl Source {
    const ALL: [Source; 6] = [
        Source::Pods,
        Source::Claims,
        Source::Volumes,
        Source::Attachments,
        Source::Ingresses,
        Source::IngressClasses,
    ];

    /// The resource, when this server serves it.
    fn info(self) -> Option<&'static ResourceInfo> {
        let (group, plural) = match self {
            Source::Pods => ("", "pods"),
            Source::Claims => ("", "persistentvolumeclaims"),
            Source::Volumes => ("", "persistentvolumes"),
            Source::Attachments => ("storage.k8s.io", "volumeattachments"),
            Source::Ingresses => ("networking.k8s.io", "ingresses"),
            Source::IngressClasses => ("networking.k8s.io", "ingressclasses"),
        };
        resources::lookup(group, "v1", plural)
    }
}

/// The Node authorizer's graph.
#[derive(Debug, Default)]
pub(crate) struct Graph {
    state: RwLock<State>,
    synced: [AtomicBool; Source::ALL.len()],
}

impl Graph {
    /// Whether every watch has delivered its initial list.
    pub(crate) fn synced(&self) -> bool {
        self.synced.iter().all(|s| s.load(Ordering::Acquire))
    }

    /// Whether an object of `kind` named `ns/name` is reachable from `node`.
    pub(crate) fn has_path(&self, node: &str, kind: Kind, ns: &str, name: &str) -> bool {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .has_path(node, kind, ns, name)
    }

    fn apply(&self, source: Source, obj: &Value, deleted: bool) {
        self.state
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(source, obj, deleted);
    }

    /// Keeps the graph from watches until the server stops.
    pub(crate) async fn run(self: Arc<Self>, api: Api) {
        futures::future::join_all(Source::ALL.into_iter().enumerate().map(|(i, source)| {
            let (graph, api) = (self.clone(), api.clone());
            async move { graph.follow(&api, i, source).await }
        }))
        .await;
    }

    /// Lists `source` into the graph, then follows its watch; relists when the watch
    /// ends.
    async fn follow(&self, api: &Api, index: usize, source: Source) {
        let Some(info) = source.info() else {
            // nothing of this kind can exist
            self.synced[index].store(true, Ordering::Release);
            return;
        };
        loop {
            let list = match api.list_in(info, None, &ListOptions::default()).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(plural = %info.plural, error = %e.message, "node graph: listing");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            {
                let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
                st.clear(source);
                for obj in list["items"].as_array().into_iter().flatten() {
                    st.apply(source, obj, false);
                }
            }
            self.synced[index].store(true, Ordering::Release);
            let opts = ListOptions {
                resource_version: list["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_owned),
                send_initial_events: Some(false),
                ..ListOptions::default()
            };
            match api.watch_in(info, None, &opts).await {
                Ok(mut events) => {
                    while let Some(ev) = events.next().await {
                        match ev.kind {
                            "ADDED" | "MODIFIED" => self.apply(source, &ev.object, false),
                            "DELETED" => self.apply(source, &ev.object, true),
                            "ERROR" => break,
                            _ => {}
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(plural = %info.plural, error = %e.message, "node graph: watching");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// The nodes the graph relates to each kind of object, for tests.
#[cfg(test)]
fn nodes_of(g: &Graph) -> std::collections::HashSet<String> {
    g.state.read().unwrap().edges.keys().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, node: &str, spec: Value) -> Value {
        let mut spec = spec;
        spec["nodeName"] = json!(node);
        json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})
    }

    #[test]
    fn paths_follow_pods_claims_and_volumes() {
        let g = Graph::default();
        let p1 = pod(
            "d",
            "p1",
            "n1",
            json!({"serviceAccountName": "sa1",
                "volumes": [{"name": "s", "secret": {"secretName": "s1"}},
                            {"name": "c", "persistentVolumeClaim": {"claimName": "c1"}}],
                "containers": [{"name": "x", "envFrom": [{"configMapRef": {"name": "cm1"}}]}]}),
        );
        g.apply(Source::Pods, &p1, false);
        g.apply(
            Source::Claims,
            &json!({"metadata": {"namespace": "d", "name": "c1"}, "spec": {"volumeName": "pv1"}}),
            false,
        );
        g.apply(
            Source::Volumes,
            &json!({"metadata": {"name": "pv1"}, "spec": {"csi": {"nodePublishSecretRef": {"name": "pvs", "namespace": "e"}}}}),
            false,
        );
        g.apply(
            Source::Attachments,
            &json!({"metadata": {"name": "va1"}, "spec": {"nodeName": "n1"}}),
            false,
        );
        for (kind, ns, name) in [
            (Kind::Pod, "d", "p1"),
            (Kind::Secret, "d", "s1"),
            (Kind::ConfigMap, "d", "cm1"),
            (Kind::Claim, "d", "c1"),
            (Kind::ServiceAccount, "d", "sa1"),
            (Kind::Volume, "", "pv1"),
            (Kind::Secret, "e", "pvs"),
            (Kind::VolumeAttachment, "", "va1"),
        ] {
            assert!(g.has_path("n1", kind, ns, name), "{kind:?} {ns}/{name}");
            assert!(
                !g.has_path("n2", kind, ns, name),
                "n2: {kind:?} {ns}/{name}"
            );
        }
        assert!(!g.has_path("n1", Kind::Secret, "other", "s1"));
        assert!(!g.has_path("n1", Kind::Secret, "d", "cm1"));
        // a second pod sharing the secret keeps it reachable when the first goes
        let p2 = pod(
            "d",
            "p2",
            "n1",
            json!({"imagePullSecrets": [{"name": "s1"}]}),
        );
        g.apply(Source::Pods, &p2, false);
        g.apply(Source::Pods, &p1, true);
        assert!(g.has_path("n1", Kind::Secret, "d", "s1"));
        assert!(!g.has_path("n1", Kind::ConfigMap, "d", "cm1"));
        assert!(!g.has_path("n1", Kind::Volume, "", "pv1"));
        // rebinding moves the edges
        let moved = pod(
            "d",
            "p2",
            "n2",
            json!({"imagePullSecrets": [{"name": "s1"}]}),
        );
        g.apply(Source::Pods, &moved, false);
        assert!(!g.has_path("n1", Kind::Secret, "d", "s1"));
        assert!(g.has_path("n2", Kind::Secret, "d", "s1"));
        assert_eq!(
            nodes_of(&g),
            std::collections::HashSet::from(["n2".to_owned()])
        );
        g.apply(Source::Pods, &moved, true);
        assert!(nodes_of(&g).is_empty());
        assert!(!g.synced());
    }

    fn ingress(ns: &str, name: &str, spec: Value) -> Value {
        json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})
    }

    #[test]
    fn every_node_reaches_the_tls_secrets_of_served_ingresses_only() {
        let g = Graph::default();
        // n1 runs a pod, n2 none: both may read what a served Ingress names
        g.apply(Source::Pods, &pod("d", "p1", "n1", json!({})), false);
        let web = ingress(
            "d",
            "web",
            json!({"tls": [{"hosts": ["a.test"], "secretName": "a-tls"},
                           {"secretName": "fallback-tls"}]}),
        );
        g.apply(Source::Ingresses, &web, false);
        for node in ["n1", "n2"] {
            assert!(g.has_path(node, Kind::Secret, "d", "a-tls"), "{node}");
            assert!(
                g.has_path(node, Kind::Secret, "d", "fallback-tls"),
                "{node}"
            );
            // a Secret no Ingress names, the same name in another namespace, and
            // other kinds of the same name are not reachable
            assert!(!g.has_path(node, Kind::Secret, "d", "db-creds"), "{node}");
            assert!(!g.has_path(node, Kind::Secret, "e", "a-tls"), "{node}");
            assert!(!g.has_path(node, Kind::ConfigMap, "d", "a-tls"), "{node}");
        }
        // another controller's class: not kcore's to serve, so not the nodes' to read
        let theirs = ingress(
            "d",
            "theirs",
            json!({"ingressClassName": "nginx", "tls": [{"secretName": "nginx-tls"}]}),
        );
        g.apply(Source::Ingresses, &theirs, false);
        assert!(!g.has_path("n1", Kind::Secret, "d", "nginx-tls"));
        let class = |name: &str, controller: &str| json!({"metadata": {"name": name}, "spec": {"controller": controller}});
        g.apply(
            Source::IngressClasses,
            &class("nginx", "k8s.io/ingress-nginx"),
            false,
        );
        assert!(!g.has_path("n1", Kind::Secret, "d", "nginx-tls"));
        // the class handed to kcore's controller: served, readable; and back
        g.apply(
            Source::IngressClasses,
            &class("nginx", kcore_k8s::INGRESS_CONTROLLER),
            false,
        );
        assert!(g.has_path("n1", Kind::Secret, "d", "nginx-tls"));
        g.apply(
            Source::IngressClasses,
            &class("nginx", kcore_k8s::INGRESS_CONTROLLER),
            true,
        );
        assert!(!g.has_path("n1", Kind::Secret, "d", "nginx-tls"));
        // two Ingresses naming one Secret: it stays reachable until both stop naming it
        let also = ingress("d", "also", json!({"tls": [{"secretName": "a-tls"}]}));
        g.apply(Source::Ingresses, &also, false);
        let edited = ingress("d", "web", json!({"tls": [{"secretName": "b-tls"}]}));
        g.apply(Source::Ingresses, &edited, false);
        assert!(g.has_path("n2", Kind::Secret, "d", "a-tls"));
        assert!(g.has_path("n2", Kind::Secret, "d", "b-tls"));
        assert!(!g.has_path("n2", Kind::Secret, "d", "fallback-tls"));
        g.apply(Source::Ingresses, &also, true);
        assert!(!g.has_path("n2", Kind::Secret, "d", "a-tls"));
        g.apply(Source::Ingresses, &edited, true);
        assert!(!g.has_path("n2", Kind::Secret, "d", "b-tls"));
        let st = g.state.read().unwrap();
        assert_eq!(
            st.ingresses.len(),
            1,
            "only the other class' Ingress is left"
        );
        assert_eq!(st.tls_secrets.len(), 1);
    }
}
