//! The `ephemeral-volume` controller: a pod's generic ephemeral volume
//! (`volumes[].ephemeral.volumeClaimTemplate`) gets a PersistentVolumeClaim named
//! `<pod>-<volume>`, controlled by the pod, so the claim is provisioned and bound like any
//! other and the garbage collector deletes it with the pod (upstream's
//! `pkg/controller/volume/ephemeral`).
//!
//! A claim of that name that the pod does not control is never used: the pod gets a
//! `FailedBinding` warning in upstream's words and the node refuses to mount it, so a
//! claim created beforehand by someone else cannot be slipped into the pod.

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kcore_k8s::{claim_is_for_pod, ephemeral_claim_name, status_code};
use kube::api::{Api, PostParams};
use kube::Client;

use crate::cache::{Change, Store};
use crate::controllers::job::record_event;
use crate::error::Error;
use crate::meta::ObjectKey;
use crate::queue::WorkQueue;
use crate::runner::{Action, Reconciler};

/// The new claim of `volume` of `pod`, from its template, or `None` for another kind of
/// volume.
pub fn claim_for(pod: &Pod, volume: &Volume) -> Option<PersistentVolumeClaim> {
    let template = volume.ephemeral.as_ref()?.volume_claim_template.as_ref()?;
    let meta = template.metadata.clone().unwrap_or_default();
    Some(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(ephemeral_claim_name(pod, volume)),
            namespace: pod.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                uid: pod.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(template.spec.clone()),
        status: None,
    })
}

/// The `ephemeral-volume` controller.
pub(crate) struct EphemeralVolumeController {
    client: Client,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
}

impl EphemeralVolumeController {
    pub(crate) fn new(
        client: Client,
        pods: Store<Pod>,
        claims: Store<PersistentVolumeClaim>,
    ) -> Self {
        Self {
            client,
            pods,
            claims,
        }
    }

    fn has_ephemeral(p: &Pod) -> bool {
        p.spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .any(|v| v.ephemeral.is_some())
    }

    /// A pod with an ephemeral volume, not yet being deleted, is looked at.
    pub(crate) fn on_pod(queue: WorkQueue<ObjectKey>) -> impl Fn(&Change<Pod>) + Send + Sync {
        move |c| {
            let p = c.object();
            if p.metadata.deletion_timestamp.is_none() && Self::has_ephemeral(p) {
                queue.add(ObjectKey::of(p.as_ref()));
            }
        }
    }

    /// A claim that goes is made again for its pod while the pod lives.
    pub(crate) fn on_claim(
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<PersistentVolumeClaim>) + Send + Sync {
        move |c| {
            if let Change::Deleted(claim) = c {
                for o in claim.metadata.owner_references.iter().flatten() {
                    if o.kind == "Pod" && o.controller == Some(true) {
                        queue.add(ObjectKey::namespaced(
                            claim.metadata.namespace.clone().unwrap_or_default(),
                            o.name.clone(),
                        ));
                    }
                }
            }
        }
    }
}

impl Reconciler for EphemeralVolumeController {
    fn name(&self) -> &'static str {
        "ephemeral-volume"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(pod) = self.pods.get(key) else {
            return Ok(Action::Done);
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), key.ns());
        let pod_ref = || ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            ..ObjectReference::default()
        };
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let Some(claim) = claim_for(&pod, v) else {
                continue;
            };
            let name = ephemeral_claim_name(&pod, v);
            let cached = self
                .claims
                .get(&ObjectKey::namespaced(key.ns().to_owned(), name.clone()));
            let existing = match cached {
                Some(existing) => existing,
                None => match api.create(&PostParams::default(), &claim).await {
                    Ok(_) => {
                        tracing::debug!(pod = %key, claim = %name, "ephemeral claim created");
                        continue;
                    }
                    // the cache lags behind a claim made a moment ago, by us or by
                    // someone else: whose it is decides, as for a cached one
                    Err(e) if status_code(&e) == Some(409) => match api.get_opt(&name).await {
                        Ok(Some(existing)) => std::sync::Arc::new(existing),
                        Ok(None) => {
                            return Ok(Action::RequeueAfter(std::time::Duration::from_secs(1)))
                        }
                        Err(e) => {
                            return Err(Error::api("get", format!("persistentvolumeclaim {name}"))(
                                e,
                            ))
                        }
                    },
                    Err(e) => {
                        record_event(
                            &self.client,
                            "ephemeral_volume",
                            pod_ref(),
                            "Warning",
                            "FailedCreate",
                            &format!("error creating PVC {name}: {e}"),
                        )
                        .await;
                        return Err(Error::api(
                            "create",
                            format!("persistentvolumeclaim {name}"),
                        )(e));
                    }
                },
            };
            if let Err(msg) = claim_is_for_pod(&pod, &existing) {
                record_event(
                    &self.client,
                    "ephemeral_volume",
                    pod_ref(),
                    "Warning",
                    "FailedBinding",
                    &format!("ephemeral volume {}: {msg}", v.name),
                )
                .await;
                tracing::info!(pod = %key, volume = %v.name, "{msg}");
            }
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [], "volumes": [
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
                }}},
                {"name": "tmp", "emptyDir": {}}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn claims_are_named_and_owned_as_upstream() {
        let p = pod();
        let vols = p.spec.as_ref().unwrap().volumes.as_ref().unwrap();
        let c = claim_for(&p, &vols[0]).unwrap();
        assert_eq!(c.metadata.name.as_deref(), Some("web-scratch"));
        assert_eq!(c.metadata.labels.as_ref().unwrap()["a"], "b");
        let o = &c.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (o.kind.as_str(), o.uid.as_str(), o.controller),
            ("Pod", "u1", Some(true))
        );
        assert!(claim_is_for_pod(&p, &c).is_ok());
        assert!(claim_for(&p, &vols[1]).is_none());
        let mut foreign = c.clone();
        foreign.metadata.owner_references = None;
        assert_eq!(
            claim_is_for_pod(&p, &foreign).unwrap_err(),
            "PVC ns/web-scratch was not created for pod ns/web (pod is not owner)"
        );
    }
}
