//! Endpoints and EndpointSlices for each Service with a selector, from the pods it
//! selects: ready pods as addresses, unready ones as notReadyAddresses (all of them ready
//! when `publishNotReadyAddresses`), named target ports resolved per pod.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod,
    Service,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kcore_k8s::{set_matches, status_code};
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;

use crate::cache::{Change, Store};
use crate::error::Error;
use crate::meta::{controller_ref, pod_is_ready, ObjectKey};
use crate::queue::WorkQueue;
use crate::runner::{Action, Reconciler};

/// Label naming the Service of an EndpointSlice.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`] (upstream's, so other tools recognise the slices).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Most endpoints per slice (upstream's default `--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// One pod's endpoint: address, readiness, and the ports it serves.
#[derive(Debug, Clone, PartialEq)]
struct PodEndpoint {
    ip: String,
    ready: bool,
    terminating: bool,
    node: Option<String>,
    hostname: Option<String>,
    target: ObjectReference,
}

fn resolve_port(pod: &Pod, target: Option<&IntOrString>, port: i32, protocol: &str) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol
            })
            .map(|p| p.container_port),
    }
}

/// One resolved port: name, number, protocol, appProtocol.
type ResolvedPort = (Option<String>, i32, String, Option<String>);
/// The ports and endpoints of one EndpointSlice.
pub(crate) type SliceGroup = (Vec<EndpointPort>, Vec<Endpoint>);

/// Desired Endpoints subsets and EndpointSlice groups (ports, endpoints) for `svc` and
/// the pods of its namespace.
pub(crate) fn desired(svc: &Service, pods: &[Arc<Pod>]) -> (Vec<EndpointSubset>, Vec<SliceGroup>) {
    let spec = svc.spec.clone().unwrap_or_default();
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return (Vec::new(), Vec::new());
    };
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let svc_name = svc.metadata.name.clone().unwrap_or_default();
    // Port set -> endpoints.
    let mut groups: BTreeMap<Vec<ResolvedPort>, Vec<PodEndpoint>> = BTreeMap::new();
    for pod in pods {
        if !set_matches(selector, pod.metadata.labels.as_ref()) {
            continue;
        }
        let status = pod.status.as_ref();
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let Some(ip) = status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let mut ports = Vec::new();
        for sp in spec.ports.iter().flatten() {
            let proto = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
            if let Some(p) = resolve_port(pod, sp.target_port.as_ref(), sp.port, &proto) {
                ports.push((sp.name.clone(), p, proto, sp.app_protocol.clone()));
            }
        }
        ports.sort();
        let pspec = pod.spec.as_ref();
        let hostname = pspec
            .filter(|s| s.subdomain.as_deref() == Some(svc_name.as_str()))
            .and_then(|s| s.hostname.clone());
        groups.entry(ports).or_default().push(PodEndpoint {
            ip,
            ready: publish_not_ready || pod_is_ready(pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            node: pspec.and_then(|s| s.node_name.clone()),
            hostname,
            target: ObjectReference {
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                ..ObjectReference::default()
            },
        });
    }
    let mut subsets = Vec::new();
    let mut slices = Vec::new();
    for (ports, mut eps) in groups {
        eps.sort_by(|a, b| a.ip.cmp(&b.ip).then(a.target.name.cmp(&b.target.name)));
        let addr = |e: &PodEndpoint| EndpointAddress {
            ip: e.ip.clone(),
            hostname: e.hostname.clone(),
            node_name: e.node.clone(),
            target_ref: Some(e.target.clone()),
        };
        // Endpoints leave terminating pods out (unless publishing not-ready addresses).
        let live: Vec<&PodEndpoint> = eps
            .iter()
            .filter(|e| !e.terminating || publish_not_ready)
            .collect();
        let ready: Vec<EndpointAddress> =
            live.iter().filter(|e| e.ready).map(|e| addr(e)).collect();
        let not_ready: Vec<EndpointAddress> =
            live.iter().filter(|e| !e.ready).map(|e| addr(e)).collect();
        if !ready.is_empty() || !not_ready.is_empty() {
            subsets.push(EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .iter()
                        .map(|(name, port, proto, app)| CorePort {
                            name: name.clone(),
                            port: *port,
                            protocol: Some(proto.clone()),
                            app_protocol: app.clone(),
                        })
                        .collect()
                }),
            });
        }
        let slice_ports: Vec<EndpointPort> = ports
            .iter()
            .map(|(name, port, proto, app)| EndpointPort {
                name: Some(name.clone().unwrap_or_default()),
                port: Some(*port),
                protocol: Some(proto.clone()),
                app_protocol: app.clone(),
            })
            .collect();
        let endpoints: Vec<Endpoint> = eps
            .iter()
            .map(|e| Endpoint {
                addresses: vec![e.ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(e.ready && !e.terminating),
                    serving: Some(e.ready),
                    terminating: Some(e.terminating),
                }),
                hostname: e.hostname.clone(),
                node_name: e.node.clone(),
                target_ref: Some(e.target.clone()),
                ..Endpoint::default()
            })
            .collect();
        for chunk in endpoints.chunks(MAX_ENDPOINTS_PER_SLICE) {
            slices.push((slice_ports.clone(), chunk.to_vec()));
        }
    }
    (subsets, slices)
}

/// The Endpoints and EndpointSlice controller.
pub(crate) struct EndpointsController {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
    slices: Store<EndpointSlice>,
}

impl EndpointsController {
    pub(crate) fn new(
        client: Client,
        services: Store<Service>,
        pods: Store<Pod>,
        endpoints: Store<Endpoints>,
        slices: Store<EndpointSlice>,
    ) -> Self {
        Self {
            client,
            services,
            pods,
            endpoints,
            slices,
        }
    }

    pub(crate) fn on_service(
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<Service>) + Send + Sync {
        move |c| queue.add(ObjectKey::of(c.object().as_ref()))
    }

    /// Pod changes requeue the Services selecting the pod before or after the change.
    pub(crate) fn on_pod(
        &self,
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<Pod>) + Send + Sync {
        let services = self.services.clone();
        move |c| {
            let pod = c.object();
            let ns = pod.metadata.namespace.as_deref().unwrap_or("");
            for svc in services.list_namespace(ns) {
                let Some(sel) = svc
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .filter(|s| !s.is_empty())
                else {
                    continue;
                };
                let hit = set_matches(sel, pod.metadata.labels.as_ref())
                    || c.old()
                        .is_some_and(|o| set_matches(sel, o.metadata.labels.as_ref()));
                if hit {
                    queue.add(ObjectKey::of(svc.as_ref()));
                }
            }
        }
    }

    /// Changes to our slices or Endpoints made by others requeue their Service.
    pub(crate) fn on_slice(
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<EndpointSlice>) + Send + Sync {
        move |c| {
            let s = c.object();
            let labels = s.metadata.labels.as_ref();
            if labels
                .and_then(|l| l.get(MANAGED_BY_LABEL))
                .map(String::as_str)
                != Some(MANAGED_BY)
            {
                return;
            }
            if let Some(svc) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                queue.add(ObjectKey::namespaced(
                    s.metadata.namespace.clone().unwrap_or_default(),
                    svc,
                ));
            }
        }
    }

    async fn sync_endpoints(
        &self,
        key: &ObjectKey,
        svc: &Service,
        subsets: Vec<EndpointSubset>,
    ) -> Result<(), Error> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), key.ns());
        let current = self.endpoints.get(key);
        let subsets = (!subsets.is_empty()).then_some(subsets);
        let mut labels = svc.metadata.labels.clone().unwrap_or_default();
        if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
            labels.insert("service.kubernetes.io/headless".into(), String::new());
        }
        let labels = (!labels.is_empty()).then_some(labels);
        match current {
            Some(cur) if cur.subsets == subsets && cur.metadata.labels == labels => Ok(()),
            Some(cur) => {
                let mut e = (*cur).clone();
                e.subsets = subsets;
                e.metadata.labels = labels;
                match api.replace(&key.name, &PostParams::default(), &e).await {
                    Ok(_) => Ok(()),
                    Err(err) => Err(Error::api("update", format!("endpoints {key}"))(err)),
                }
            }
            None => {
                let e = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(key.name.clone()),
                        namespace: key.namespace.clone(),
                        labels,
                        ..ObjectMeta::default()
                    },
                    subsets,
                };
                match api.create(&PostParams::default(), &e).await {
                    Ok(_) => Ok(()),
                    Err(err) => Err(Error::api("create", format!("endpoints {key}"))(err)),
                }
            }
        }
    }

    async fn sync_slices(
        &self,
        key: &ObjectKey,
        svc: &Service,
        groups: Vec<SliceGroup>,
    ) -> Result<(), Error> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), key.ns());
        let mine = |s: &EndpointSlice| {
            let l = s.metadata.labels.as_ref();
            l.and_then(|l| l.get(SERVICE_NAME_LABEL)) == Some(&key.name)
                && l.and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) == Some(MANAGED_BY)
        };
        let existing: BTreeMap<String, Arc<EndpointSlice>> = self
            .slices
            .list_namespace(key.ns())
            .into_iter()
            .filter(|s| mine(s))
            .map(|s| (s.metadata.name.clone().unwrap_or_default(), s))
            .collect();
        let mut wanted = BTreeSet::new();
        for (i, (ports, endpoints)) in groups.into_iter().enumerate() {
            let name = format!("{}-{i}", key.name);
            wanted.insert(name.clone());
            let labels = BTreeMap::from([
                (SERVICE_NAME_LABEL.to_owned(), key.name.clone()),
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
            ]);
            let slice = EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: key.namespace.clone(),
                    labels: Some(labels),
                    owner_references: Some(vec![controller_ref(svc)]),
                    ..ObjectMeta::default()
                },
                address_type: "IPv4".into(),
                endpoints: Some(endpoints),
                ports: Some(ports),
            };
            match existing.get(&name) {
                Some(cur)
                    if cur.endpoints == slice.endpoints
                        && cur.ports == slice.ports
                        && cur.metadata.owner_references == slice.metadata.owner_references => {}
                Some(cur) => {
                    let mut s = slice;
                    s.metadata
                        .resource_version
                        .clone_from(&cur.metadata.resource_version);
                    api.replace(&name, &PostParams::default(), &s)
                        .await
                        .map_err(Error::api(
                            "update",
                            format!("endpointslice {}/{name}", key.ns()),
                        ))?;
                }
                None => match api.create(&PostParams::default(), &slice).await {
                    Ok(_) => {}
                    Err(e) if status_code(&e) == Some(409) => {
                        return Err(Error::api(
                            "create",
                            format!("endpointslice {}/{name}", key.ns()),
                        )(e));
                    }
                    Err(e) => {
                        return Err(Error::api(
                            "create",
                            format!("endpointslice {}/{name}", key.ns()),
                        )(e))
                    }
                },
            }
        }
        for name in existing.keys().filter(|n| !wanted.contains(*n)) {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => {
                    return Err(Error::api(
                        "delete",
                        format!("endpointslice {}/{name}", key.ns()),
                    )(e))
                }
            }
        }
        Ok(())
    }
}

impl Reconciler for EndpointsController {
    fn name(&self) -> &'static str {
        "endpoint"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(svc) = self.services.get(key) else {
            // The Service is gone: its Endpoints go too (slices follow by ownerReference).
            if self.endpoints.get(key).is_some() {
                let api: Api<Endpoints> = Api::namespaced(self.client.clone(), key.ns());
                match api.delete(&key.name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if status_code(&e) == Some(404) => {}
                    Err(e) => return Err(Error::api("delete", format!("endpoints {key}"))(e)),
                }
            }
            return Ok(Action::Done);
        };
        let has_selector = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|s| !s.is_empty());
        if !has_selector || svc.metadata.deletion_timestamp.is_some() {
            // Endpoints of selector-less Services belong to their users.
            return Ok(Action::Done);
        }
        let pods = self.pods.list_namespace(key.ns());
        let (subsets, slices) = desired(&svc, &pods);
        self.sync_endpoints(key, &svc, subsets).await?;
        self.sync_slices(key, &svc, slices).await?;
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use serde_json::json;

    fn pod(name: &str, ip: Option<&str>, ready: bool, app: &str) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some(BTreeMap::from([("app".into(), app.into())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        ..ContainerPort::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: ip.map(str::to_owned),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        })
    }

    fn svc(publish_not_ready: bool) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".into(), "web".into())])),
                publish_not_ready_addresses: Some(publish_not_ready),
                ports: Some(vec![
                    ServicePort {
                        name: Some("http".into()),
                        port: 80,
                        target_port: Some(IntOrString::String("http".into())),
                        ..ServicePort::default()
                    },
                    ServicePort {
                        name: Some("metrics".into()),
                        port: 9090,
                        ..ServicePort::default()
                    },
                ]),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn ready_and_not_ready_addresses_with_resolved_ports() {
        let pods = vec![
            pod("a", Some("10.0.0.2"), true, "web"),
            pod("b", Some("10.0.0.1"), false, "web"),
            pod("no-ip", None, true, "web"),
            pod("other", Some("10.0.0.9"), true, "db"),
        ];
        let (subsets, slices) = desired(&svc(false), &pods);
        assert_eq!(subsets.len(), 1);
        let s = serde_json::to_value(&subsets[0]).unwrap();
        assert_eq!(s["addresses"].as_array().unwrap().len(), 1);
        assert_eq!(s["addresses"][0]["ip"], "10.0.0.2");
        assert_eq!(s["notReadyAddresses"][0]["ip"], "10.0.0.1");
        assert_eq!(s["addresses"][0]["targetRef"]["name"], "a");
        let ports: Vec<(String, i64)> = s["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["port"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(ports, vec![("http".into(), 8080), ("metrics".into(), 9090)]);
        assert_eq!(slices.len(), 1);
        let eps = serde_json::to_value(&slices[0].1).unwrap();
        assert_eq!(
            eps,
            json!([
                {"addresses": ["10.0.0.1"], "conditions": {"ready": false, "serving": false, "terminating": false}, "targetRef": {"kind": "Pod", "name": "b", "namespace": "ns"}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": true, "serving": true, "terminating": false}, "targetRef": {"kind": "Pod", "name": "a", "namespace": "ns"}},
            ])
        );
    }

    #[test]
    fn publish_not_ready_and_no_selector() {
        let pods = vec![pod("b", Some("10.0.0.1"), false, "web")];
        let (subsets, _) = desired(&svc(true), &pods);
        assert!(subsets[0].not_ready_addresses.is_none());
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 1);
        let mut bare = svc(false);
        bare.spec.as_mut().unwrap().selector = None;
        assert_eq!(desired(&bare, &pods), (Vec::new(), Vec::new()));
    }

    #[test]
    fn slices_hold_at_most_100_endpoints() {
        let pods: Vec<Arc<Pod>> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    Some(&format!("10.1.{}.{}", i / 200, i % 200)),
                    true,
                    "web",
                )
            })
            .collect();
        let (_, slices) = desired(&svc(false), &pods);
        let sizes: Vec<usize> = slices.iter().map(|s| s.1.len()).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
    }
}
