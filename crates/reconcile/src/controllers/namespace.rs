//! The namespace controller: a namespace being deleted (phase Terminating, finalizer
//! `kubernetes` in `spec.finalizers`) has every object of the known namespaced kinds in it
//! deleted; once none is left, the finalizer is removed through the `finalize`
//! subresource and the API server removes the namespace.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kcore_k8s::status_code;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::Client;

use crate::cache::{Change, Store};
use crate::error::Error;
use crate::meta::ObjectKey;
use crate::queue::WorkQueue;
use crate::runner::{Action, Reconciler};

/// The finalizer the namespace controller owns.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";

/// The namespace controller.
pub(crate) struct NamespaceController {
    client: Client,
    namespaces: Store<Namespace>,
    kinds: Vec<ApiResource>,
}

impl NamespaceController {
    /// A controller that empties namespaces of objects of `kinds` (namespaced kinds).
    pub(crate) fn new(
        client: Client,
        namespaces: Store<Namespace>,
        kinds: Vec<ApiResource>,
    ) -> Self {
        Self {
            client,
            namespaces,
            kinds,
        }
    }

    pub(crate) fn on_namespace(
        queue: WorkQueue<ObjectKey>,
    ) -> impl Fn(&Change<Namespace>) + Send + Sync {
        move |c| {
            if c.object().metadata.deletion_timestamp.is_some() {
                queue.add(ObjectKey::of(c.object().as_ref()));
            }
        }
    }

    /// Deletes what is left in `ns`; returns how many objects remain.
    async fn empty(&self, ns: &str) -> Result<usize, Error> {
        let mut remaining = 0;
        for ar in &self.kinds {
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, ar);
            let list = match api.list(&ListParams::default()).await {
                Ok(l) => l,
                // A kind this server does not serve.
                Err(e) if status_code(&e) == Some(404) => continue,
                Err(e) => {
                    return Err(Error::api(
                        "list",
                        format!("{} in namespace {ns}", ar.plural),
                    )(e))
                }
            };
            for o in &list.items {
                remaining += 1;
                if o.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let name = o.metadata.name.as_deref().unwrap_or("");
                match api.delete(name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(e) if status_code(&e) == Some(404) => {}
                    Err(e) => {
                        return Err(Error::api(
                            "delete",
                            format!("{} {ns}/{name}", ar.kind.to_lowercase()),
                        )(e))
                    }
                }
            }
        }
        Ok(remaining)
    }
}

impl Reconciler for NamespaceController {
    fn name(&self) -> &'static str {
        "namespace"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(ns) = self.namespaces.get(key) else {
            return Ok(Action::Done);
        };
        if ns.metadata.deletion_timestamp.is_none() {
            return Ok(Action::Done);
        }
        let finalizers = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default();
        if !finalizers.iter().any(|f| f == KUBERNETES_FINALIZER) {
            return Ok(Action::Done);
        }
        let remaining = self.empty(&key.name).await?;
        if remaining > 0 {
            tracing::debug!(namespace = %key, remaining, "waiting for namespace contents to go");
            return Ok(Action::RequeueAfter(Duration::from_secs(2)));
        }
        let mut done = (*ns).clone();
        if let Some(spec) = done.spec.as_mut() {
            spec.finalizers = Some(
                finalizers
                    .into_iter()
                    .filter(|f| f != KUBERNETES_FINALIZER)
                    .collect(),
            );
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api
            .replace_subresource("finalize", &key.name, &PostParams::default(), &done)
            .await
        {
            Ok(_) => Ok(Action::Done),
            Err(e) if status_code(&e) == Some(404) => Ok(Action::Done),
            Err(e) => Err(Error::api("finalize", format!("namespace {key}"))(e)),
        }
    }
}
