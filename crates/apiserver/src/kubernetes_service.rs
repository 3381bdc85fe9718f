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
//!
//! Several servers of one control plane each list themselves, as upstream's `lease`
//! endpoint reconciler does: every server renews a Lease of its own,
//! `kube-system/apiserver-<hash>` (labelled `apiserver.kubernetes.io/identity:
//! kube-apiserver`, as upstream's API server identity leases), that says where it is
//! reached (annotation [`ENDPOINT_ANNOTATION`]); the Endpoints and the EndpointSlice list
//! the servers whose Lease has not expired. A server that stops cleanly deletes its Lease
//! and takes itself out at once; one that dies drops out when its Lease expires, and its
//! Lease is deleted.

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

/// The annotation of an API server's identity Lease that says where it is reached.
pub const ENDPOINT_ANNOTATION: &str = "kcore.io/apiserver-endpoint";
const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
const LEASE_NAMESPACE: &str = "kube-system";

/// Where the API server is reached: the Service's address and the server's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MasterService {
    /// The ClusterIP: the first address of the service range.
    pub cluster_ip: Ipv4Addr,
    /// The address pods are sent to (the server's advertised address).
    pub endpoint_ip: IpAddr,
    /// The server's port (the Service's targetPort).
    pub port: u16,
    /// How often the Service, the endpoints and this server's Lease are reconciled
    /// (10 s upstream); the Lease lasts one and a half of these.
    pub interval: Duration,
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

    fn endpoints(&self, ips: &[IpAddr]) -> Value {
        let addresses: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{
                "addresses": addresses,
                "ports": [{"name": PORT_NAME, "port": self.port, "protocol": "TCP"}],
            }]
        })
    }

    fn endpoint_slice(&self, ips: &[IpAddr]) -> Value {
        let family = if self.endpoint_ip.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        };
        let endpoints: Vec<Value> = ips
            .iter()
            .filter(|ip| ip.is_ipv4() == self.endpoint_ip.is_ipv4())
            .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": NAME}},
            "addressType": family,
            "endpoints": endpoints,
            "ports": [{"name": PORT_NAME, "port": self.port, "protocol": "TCP"}],
        })
    }

    /// The name of this server's identity Lease: `apiserver-<hash of where it is reached>`.
    fn lease_name(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, self.endpoint().as_bytes());
        let hex: String = d.as_ref()[..10]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("apiserver-{hex}")
    }

    fn endpoint(&self) -> String {
        std::net::SocketAddr::new(self.endpoint_ip, self.port).to_string()
    }

    /// One and a half intervals, in whole seconds (a Lease stores seconds), and always
    /// more than one interval.
    fn lease_ttl(&self) -> Duration {
        let secs = (self.interval.as_secs_f64() * 1.5).ceil() as u64;
        Duration::from_secs(secs.max(self.interval.as_secs() + 1))
    }

    /// Creates or renews this server's identity Lease.
    async fn renew_lease(&self, api: &Api) -> Result<(), ApiError> {
        let info = resources::lookup("coordination.k8s.io", "v1", "leases").expect("served");
        let name = self.lease_name();
        let now = k8s_openapi::jiff::Timestamp::now();
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now);
        let now = serde_json::to_value(now).expect("a timestamp");
        let ttl = i64::try_from(self.lease_ttl().as_secs()).unwrap_or(i64::MAX);
        match api.get_in(info, Some(LEASE_NAMESPACE), &name).await {
            Ok(mut cur) => {
                cur["spec"]["renewTime"] = now;
                cur["spec"]["leaseDurationSeconds"] = json!(ttl);
                cur["metadata"]["annotations"][ENDPOINT_ANNOTATION] = json!(self.endpoint());
                api.update_in(info, Some(LEASE_NAMESPACE), &name, cur, None, &opts())
                    .await
                    .map(|_| ())
            }
            Err(e) if e.code == 404 => {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": LEASE_NAMESPACE,
                        "labels": {IDENTITY_LABEL: "kube-apiserver"},
                        "annotations": {ENDPOINT_ANNOTATION: self.endpoint()}},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": ttl,
                        "renewTime": now},
                });
                match api
                    .create_in(info, Some(LEASE_NAMESPACE), lease, &opts())
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if e.code == 409 => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The addresses of the live servers on this server's port: every identity Lease that
    /// has not expired, and always this server itself (unless `without_self`).
    async fn live_servers(&self, api: &Api, without_self: bool) -> Result<Vec<IpAddr>, ApiError> {
        let info = resources::lookup("coordination.k8s.io", "v1", "leases").expect("served");
        let list = api
            .list_in(
                info,
                Some(LEASE_NAMESPACE),
                &crate::api::ListOptions {
                    label_selector: Some(format!("{IDENTITY_LABEL}=kube-apiserver")),
                    ..Default::default()
                },
            )
            .await?;
        let now = k8s_openapi::jiff::Timestamp::now();
        let items = list["items"].as_array().cloned().unwrap_or_default();
        // upstream's API server lease garbage collector: expired identity leases go
        // (a slow server whose lease is removed creates it again at its next renewal)
        for expired in items.iter().filter(|l| !live(l, now)) {
            if let Some(name) = expired["metadata"]["name"].as_str() {
                // only the expired version: a renewal in between keeps the lease
                let opts = crate::api::DeleteOptions {
                    precondition_resource_version: expired["metadata"]["resourceVersion"]
                        .as_str()
                        .map(str::to_owned),
                    ..Default::default()
                };
                let _ = api
                    .delete_in(info, Some(LEASE_NAMESPACE), name, &opts)
                    .await;
            }
        }
        let mut ips: Vec<IpAddr> = items
            .iter()
            .filter(|l| live(l, now))
            .filter_map(|l| l["metadata"]["annotations"][ENDPOINT_ANNOTATION].as_str())
            .filter_map(|e| e.parse::<std::net::SocketAddr>().ok())
            .filter(|a| a.port() == self.port)
            .map(|a| a.ip())
            .collect();
        ips.retain(|ip| !(without_self && *ip == self.endpoint_ip));
        if !without_self {
            ips.push(self.endpoint_ip);
        }
        ips.sort();
        ips.dedup();
        Ok(ips)
    }

    /// Creates the Service, Endpoints and EndpointSlice, or puts back what drifted.
    pub(crate) async fn reconcile(&self, api: &Api) -> Result<(), ApiError> {
        if let Err(e) = self.renew_lease(api).await {
            tracing::warn!(error = %e.message, "renewing the API server's identity lease");
        }
        self.write_endpoints(api, false).await
    }

    /// Takes this server out of the endpoints and deletes its Lease (on clean shutdown).
    pub(crate) async fn remove(&self, api: &Api) -> Result<(), ApiError> {
        let info = resources::lookup("coordination.k8s.io", "v1", "leases").expect("served");
        match api
            .delete_in(
                info,
                Some(LEASE_NAMESPACE),
                &self.lease_name(),
                &Default::default(),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
        self.write_endpoints(api, true).await
    }

    /// Writes the Service and the endpoints of the live servers (but this one when
    /// `without_self`). The other servers write the same objects, so a conflict is
    /// retried a few times on a fresh read: a server that starts while the others
    /// reconcile must not fail on their write.
    async fn write_endpoints(&self, api: &Api, without_self: bool) -> Result<(), ApiError> {
        let mut attempt = 0;
        loop {
            let ips = self.live_servers(api, without_self).await?;
            if without_self && ips.is_empty() {
                // the last server: leave the endpoints as they were, upstream keeps them too
                return Ok(());
            }
            match self.reconcile_with(api, &ips).await {
                Err(e) if e.code == 409 && attempt < 5 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn reconcile_with(&self, api: &Api, ips: &[IpAddr]) -> Result<(), ApiError> {
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
        ensure(
            api,
            lookup("", "endpoints"),
            self.endpoints(ips),
            &["subsets"],
        )
        .await?;
        ensure(
            api,
            lookup("discovery.k8s.io", "endpointslices"),
            self.endpoint_slice(ips),
            &["addressType", "endpoints", "ports"],
        )
        .await
    }

    /// Reconciles at once, then every interval, until dropped.
    pub(crate) async fn run(self, api: Api) {
        loop {
            match self.reconcile(&api).await {
                Ok(()) => {}
                // another server of the control plane wrote the same endpoints first
                Err(e) if e.code == 409 => {
                    tracing::debug!(error = %e.message, "reconciling the kubernetes service")
                }
                Err(e) => tracing::warn!(error = %e.message, "reconciling the kubernetes service"),
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}

/// Whether an identity Lease was renewed within its duration.
fn live(lease: &Value, now: k8s_openapi::jiff::Timestamp) -> bool {
    let Some(renewed) = lease["spec"]["renewTime"]
        .as_str()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
    else {
        return false;
    };
    let secs = lease["spec"]["leaseDurationSeconds"].as_i64().unwrap_or(0);
    let Ok(ttl) = k8s_openapi::jiff::SignedDuration::try_from(Duration::from_secs(
        u64::try_from(secs).unwrap_or(0),
    )) else {
        return false;
    };
    renewed.checked_add(ttl).is_ok_and(|expires| expires > now)
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
    fn an_identity_lease_lives_for_its_duration() {
        let now: k8s_openapi::jiff::Timestamp = "2026-01-01T00:00:20Z".parse().expect("time");
        let lease = |renewed: &str, secs: i64| json!({"spec": {"renewTime": renewed, "leaseDurationSeconds": secs}});
        assert!(live(&lease("2026-01-01T00:00:10.000000Z", 15), now));
        assert!(!live(&lease("2026-01-01T00:00:04.000000Z", 15), now));
        assert!(!live(&json!({"spec": {}}), now));
    }

    #[test]
    fn the_endpoints_list_every_live_server() {
        let m = MasterService {
            cluster_ip: Ipv4Addr::new(10, 96, 0, 1),
            endpoint_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            port: 6443,
            interval: Duration::from_secs(10),
        };
        let ips = [
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
        ];
        let e = m.endpoints(&ips);
        assert_eq!(e["subsets"][0]["addresses"][1]["ip"], "192.0.2.2");
        let s = m.endpoint_slice(&ips);
        assert_eq!(s["endpoints"].as_array().map(Vec::len), Some(2));
        assert!(m.lease_name().starts_with("apiserver-"));
        assert_eq!(m.lease_ttl(), Duration::from_secs(15));
        let fast = MasterService {
            interval: Duration::from_secs(1),
            ..m
        };
        assert_eq!(fast.lease_ttl(), Duration::from_secs(2));
    }

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
