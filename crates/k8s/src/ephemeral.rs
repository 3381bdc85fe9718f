//! Generic ephemeral volumes: the claim a pod's `ephemeral` volume gets, and whether a
//! claim of that name really is the pod's (upstream's `component-helpers/storage/ephemeral`).

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Volume};

/// The claim name of a pod's ephemeral volume: `<pod>-<volume>`.
pub fn ephemeral_claim_name(pod: &Pod, volume: &Volume) -> String {
    format!(
        "{}-{}",
        pod.metadata.name.as_deref().unwrap_or_default(),
        volume.name
    )
}

/// Whether `claim` was made for `pod`: the same namespace, and controlled by the pod;
/// otherwise upstream's message (a claim someone else created under that name is never
/// used by the pod).
///
/// ```
/// use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
/// let pod: Pod = serde_json::from_value(serde_json::json!(
///     {"metadata": {"name": "web", "namespace": "ns", "uid": "u1"}}))?;
/// let foreign: PersistentVolumeClaim = serde_json::from_value(serde_json::json!(
///     {"metadata": {"name": "web-data", "namespace": "ns"}}))?;
/// assert_eq!(
///     kcore_k8s::claim_is_for_pod(&pod, &foreign).unwrap_err(),
///     "PVC ns/web-data was not created for pod ns/web (pod is not owner)"
/// );
/// Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn claim_is_for_pod(pod: &Pod, claim: &PersistentVolumeClaim) -> Result<(), String> {
    let (pm, cm) = (&pod.metadata, &claim.metadata);
    let controlled =
        cm.owner_references.iter().flatten().any(|o| {
            o.controller == Some(true) && Some(&o.uid) == pm.uid.as_ref() && o.kind == "Pod"
        });
    if cm.namespace == pm.namespace && controlled {
        return Ok(());
    }
    let s = |x: &Option<String>| x.clone().unwrap_or_default();
    Err(format!(
        "PVC {}/{} was not created for pod {}/{} (pod is not owner)",
        s(&cm.namespace),
        s(&cm.name),
        s(&pm.namespace),
        s(&pm.name)
    ))
}
