//! Service accounts in pods: upstream's root-CA publisher (the `kube-root-ca.crt`
//! ConfigMap in every namespace, holding the cluster CA) and its ServiceAccount
//! admission (a pod runs as `default` unless it names another account, and gets the
//! `kube-api-access-*` projected volume — a bound token, `ca.crt` and `namespace` — at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container, unless
//! `automountServiceAccountToken` is false on the pod or its account).
//!
//! A pod gets the volume only in namespaces where the CA is published (servers with a
//! cluster CA): on a plain-HTTP server there is no `ca.crt` to give it.

use serde_json::{json, Value};

use crate::api::{Api, WriteOptions};
use crate::error::ApiError;
use crate::resources;

/// The ConfigMap holding the cluster CA in every namespace.
pub(crate) const ROOT_CA: &str = "kube-root-ca.crt";
/// Where the token, CA and namespace appear in containers.
pub(crate) const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Creates or updates `kube-root-ca.crt` in `namespace`.
pub(crate) async fn publish_root_ca(api: &Api, namespace: &str, ca_pem: &str) {
    let cms = resources::lookup("", "v1", "configmaps").expect("served");
    let want = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": ROOT_CA, "namespace": namespace,
            "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
        "data": {"ca.crt": ca_pem}});
    let opts = WriteOptions::default();
    let result = match api.get_in(cms, Some(namespace), ROOT_CA).await {
        Ok(have) if have["data"] == want["data"] => Ok(()),
        Ok(mut have) => {
            have["data"] = want["data"].clone();
            api.update_in(cms, Some(namespace), ROOT_CA, have, None, &opts)
                .await
                .map(|_| ())
        }
        Err(e) if e.code == 404 => api
            .create_in(cms, Some(namespace), want, &opts)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {}
        Err(e) if e.code == 409 => {}
        Err(e) => tracing::debug!(%namespace, error = %e.message, "publishing the root CA"),
    }
}

fn random_suffix() -> String {
    // upstream's alphabet for generated names (no vowels, no confusable digits)
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// The ServiceAccount admission of a new pod in `namespace`.
pub(crate) async fn admit_pod(
    api: &Api,
    namespace: &str,
    mut pod: Value,
) -> Result<Value, ApiError> {
    if pod["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string() {
        return Ok(pod);
    }
    let cms = resources::lookup("", "v1", "configmaps").expect("served");
    if api.get_in(cms, Some(namespace), ROOT_CA).await.is_err() {
        return Ok(pod);
    }
    let spec = &mut pod["spec"];
    let sa_name = match spec["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        Some(s) => s.to_owned(),
        None => {
            spec["serviceAccountName"] = json!("default");
            "default".to_owned()
        }
    };
    if spec["automountServiceAccountToken"] == false {
        return Ok(pod);
    }
    if spec["automountServiceAccountToken"].is_null() {
        let sas = resources::lookup("", "v1", "serviceaccounts").expect("served");
        if let Ok(sa) = api.get_in(sas, Some(namespace), &sa_name).await {
            if sa["automountServiceAccountToken"] == false {
                return Ok(pod);
            }
        }
    }
    let lists = ["initContainers", "containers"];
    let mounted = lists.iter().any(|l| {
        spec[*l].as_array().into_iter().flatten().any(|c| {
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"] == MOUNT_PATH)
        })
    });
    if mounted {
        return Ok(pod);
    }
    let name = format!("kube-api-access-{}", random_suffix());
    let volume = json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": ROOT_CA, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}});
    match spec["volumes"].as_array_mut() {
        Some(v) => v.push(volume),
        None => spec["volumes"] = json!([volume]),
    }
    let mount = json!({"name": name, "readOnly": true, "mountPath": MOUNT_PATH});
    for l in lists {
        for c in spec[l].as_array_mut().into_iter().flatten() {
            match c["volumeMounts"].as_array_mut() {
                Some(m) => m.push(mount.clone()),
                None => c["volumeMounts"] = json!([mount.clone()]),
            }
        }
    }
    Ok(pod)
}
