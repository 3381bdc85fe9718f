//! The cluster's default StorageClass, `local-path`: created by `kcored up` and
//! `kcored server` when it is missing (as k3s ships its `local-path` class), served by
//! the local provisioner every node agent runs ([`kcore_node::LOCAL_PATH_PROVISIONER`]).

use anyhow::{Context, Result};
use k8s_openapi::api::storage::v1::StorageClass;
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

/// Creates the default class unless a class of that name exists.
pub async fn ensure_default_class(client: &kube::Client) -> Result<()> {
    let api: Api<StorageClass> = Api::all(client.clone());
    match api.create(&PostParams::default(), &default_class()).await {
        Ok(_) => {
            tracing::info!(class = DEFAULT_CLASS, "created the default storage class");
            Ok(())
        }
        Err(e) if status_code(&e) == Some(409) => Ok(()),
        Err(e) => Err(e).context("creating the default storage class"),
    }
}
