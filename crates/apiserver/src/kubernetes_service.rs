//! The `default/kubernetes` Service, through which pods reach the API server (in-cluster
//! configuration: `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`, the name
//! `kubernetes.default.svc`), as upstream's "kubernetes" service controller and endpoint
//! reconciler keep it:
//!
//! - the Service: ClusterIP the first address of the service range, port `https` 443 to
//!   the API server's port, no selector, labels `component: apiserver` and
//!   `provider: kubernetes`; an existing one gets its ports and type reset;
//! - its Endpoints (labelled `endpointslice.kubernetes.io/skip-mirror`) and EndpointSlice
//!   with the address the server advertises.
//!
//! It runs at start and then every ten seconds (upstream's endpoint reconcile interval),
//! so a deleted or edited object comes back.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::{Api, WriteOptions};
use crate::error::ApiError;
use crate::resources;

/// The Service's name, in namespace `default`.
pub(crate) const NAME: &str = "kubernetes";
const NAMESPACE: &str = "default";
const PORT_NAME: &str = "https";

/// Where the API server is reached: the Service's address and the server's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MasterService {
    /// The ClusterIP: the first address of the service range.
    pub cluster_ip: Ipv4Addr,
    /// The address pods are sent to (the server's advertised address).
    pub endpoint_ip: IpAddr,
    /// The server's port (the Service's targetPort).
    pub port: u16,
}

/// The first address of `base/bits` (`10.96.0.1` for `10.96.0.0/12`), upstream's
/// `kubernetes` Service address.
pub(crate) fn first_service_ip(base: Ipv4Addr, bits: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
    Ipv4Addr::from((u32::from(base) & mask) + 1)
}

impl MasterService {
    fn ports(&self) -> Value {
        json!([{"name": PORT_NAME, "protocol": "TCP", "port": 443, "targetPort": self.port}])
    }

    fn service(&self) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": self.cluster_ip.to_string(),
                "clusterIPs": [self.cluster_ip.to_string()],
                "ipFamilyPolicy": "SingleStack",
                "sessionAffinity": "None",
                "ports": self.ports(),
            }
        })
    }

    fn endpoints(&self) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{
                "addresses": [{"ip": self.endpoint_ip.to_string()}],
                "ports": [{"name": PORT_NAME, "port": self.port, "protocol": "TCP"}],
            }]
        })
    }

    fn endpoint_slice(&self) -> Value {
        let family = if self.endpoint_ip.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        };
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": NAME}},
            "addressType": family,
            "endpoints": [{"addresses": [self.endpoint_ip.to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": PORT_NAME, "port": self.port, "protocol": "TCP"}],
        })
    }

    /// Creates the Service, Endpoints and EndpointSlice, or puts back what drifted.
    pub(crate) async fn reconcile(&self, api: &Api) -> Result<(), ApiError> {
        let services = lookup("", "services");
        match api.get_in(services, Some(NAMESPACE), NAME).await {
            Ok(mut cur) => {
                // upstream resets the ports and the type, and leaves the rest alone
                let want = self.service();
                if cur["spec"]["ports"] != want["spec"]["ports"]
                    || cur["spec"]["type"] != want["spec"]["type"]
                {
                    tracing::warn!("resetting the kubernetes service's ports and type");
                    cur["spec"]["ports"] = want["spec"]["ports"].clone();
                    cur["spec"]["type"] = want["spec"]["type"].clone();
                    api.update_in(services, Some(NAMESPACE), NAME, cur, None, &opts())
                        .await?;
                }
            }
            Err(e) if e.code == 404 => create(api, services, self.service()).await?,
            Err(e) => return Err(e),
        }
        ensure(api, lookup("", "endpoints"), self.endpoints(), &["subsets"]).await?;
        ensure(
            api,
            lookup("discovery.k8s.io", "endpointslices"),
            self.endpoint_slice(),
            &["addressType", "endpoints", "ports"],
        )
        .await
    }

    /// Reconciles at once, then every ten seconds, until dropped.
    pub(crate) async fn run(self, api: Api) {
        loop {
            if let Err(e) = self.reconcile(&api).await {
                tracing::warn!(error = %e.message, "reconciling the kubernetes service");
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    }
}

fn lookup(group: &str, plural: &str) -> &'static resources::ResourceInfo {
    resources::lookup(group, "v1", plural).expect("served")
}

fn opts() -> WriteOptions {
    WriteOptions::default()
}

async fn create(api: &Api, info: &resources::ResourceInfo, obj: Value) -> Result<(), ApiError> {
    match api.create_in(info, Some(NAMESPACE), obj, &opts()).await {
        Ok(_) => Ok(()),
        // another server of the control plane made it first
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `want`, or rewrites the `fields` of the stored object that differ.
async fn ensure(
    api: &Api,
    info: &resources::ResourceInfo,
    want: Value,
    fields: &[&str],
) -> Result<(), ApiError> {
    match api.get_in(info, Some(NAMESPACE), NAME).await {
        Ok(mut cur) => {
            if fields.iter().all(|f| cur[*f] == want[*f]) {
                return Ok(());
            }
            for f in fields {
                cur[*f] = want[*f].clone();
            }
            api.update_in(info, Some(NAMESPACE), NAME, cur, None, &opts())
                .await
                .map(|_| ())
        }
        Err(e) if e.code == 404 => create(api, info, want).await,
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_takes_the_first_address_of_the_range() {
        assert_eq!(
            first_service_ip(Ipv4Addr::new(10, 96, 0, 0), 12),
            Ipv4Addr::new(10, 96, 0, 1)
        );
        assert_eq!(
            first_service_ip(Ipv4Addr::new(10, 43, 7, 9), 16),
            Ipv4Addr::new(10, 43, 0, 1)
        );
    }
}
