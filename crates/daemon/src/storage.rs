//! The cluster's default classes, created by `kcored up` and `kcored server` when
//! missing, as k3s ships its `local-path` StorageClass and `traefik` IngressClass:
//! the StorageClass `local-path`, served by the local provisioner every node agent
//! runs ([`kcore_node::LOCAL_PATH_PROVISIONER`]), and the IngressClass `kcore`, served
//! by every node's Ingress proxy ([`kcore_node::INGRESS_CONTROLLER`]); and the
//! CSIDriver of the local provisioner, which says it publishes storage capacity.

use anyhow::{Context, Result};
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use kcore_k8s::status_code;
use kube::api::{Api, PostParams};

/// The name of the default class.
pub const DEFAULT_CLASS: &str = "local-path";

/// The default class: a directory per volume on the node the pod is scheduled to
/// (`WaitForFirstConsumer`), deleted with its claim.
pub fn default_class() -> StorageClass {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": DEFAULT_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": kcore_node::LOCAL_PATH_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": true,
    }))
    .expect("a valid StorageClass")
}

/// The CSIDriver of the built-in local provisioner: no attach step, and
/// `storageCapacity: true`, so the scheduler reads the CSIStorageCapacities each node's
/// provisioner publishes and places a claim only where it fits.
pub fn local_path_driver() -> CSIDriver {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": kcore_node::LOCAL_PATH_DRIVER},
        "spec": {
            "attachRequired": false,
            "storageCapacity": true,
            "volumeLifecycleModes": ["Persistent"],
        },
    }))
    .expect("a valid CSIDriver")
}

/// The name of the default IngressClass.
pub const DEFAULT_INGRESS_CLASS: &str = "kcore";

/// The default IngressClass: Ingresses created without a class get it (the
/// DefaultIngressClass admission) and the nodes' proxy serves them.
pub fn default_ingress_class() -> IngressClass {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": DEFAULT_INGRESS_CLASS,
            "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
        },
        "spec": {"controller": kcore_node::INGRESS_CONTROLLER},
    }))
    .expect("a valid IngressClass")
}

/// Creates the default StorageClass, the local provisioner's CSIDriver and the default
/// IngressClass unless objects of those names exist.
pub async fn ensure_default_class(client: &kube::Client) -> Result<()> {
    create_unless_present(Api::<StorageClass>::all(client.clone()), &default_class()).await?;
    create_unless_present(Api::<CSIDriver>::all(client.clone()), &local_path_driver()).await?;
    create_unless_present(
        Api::<IngressClass>::all(client.clone()),
        &default_ingress_class(),
    )
    .await
}

async fn create_unless_present<K>(api: Api<K>, obj: &K) -> Result<()>
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::Serialize
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let name = obj.meta().name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => {
            tracing::info!(%kind, %name, "created a default object");
            Ok(())
        }
        Err(e) if status_code(&e) == Some(409) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating the default {kind} {name}")),
    }
}
