//! HTTPS: the cluster CA (made on first start, see [`kcore_tls::Ca`]), the API server's
//! serving certificate, its client certificate towards the nodes' agents, and the token file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kcore_tls::{Ca, CertKey, Usage};

use crate::error::Error;

/// The file stem, under `<data_dir>/pki`, of the certificate the API server presents to the
/// nodes' agents (upstream's `apiserver-kubelet-client`).
pub(crate) const KUBELET_CLIENT: &str = "apiserver-kubelet-client";
/// The user name ([`KUBELET_CLIENT`]'s common name) of the API server towards the nodes'
/// agents, as kubeadm names it; bound to `system:kubelet-api-admin`.
pub(crate) const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// The file stem, under `<data_dir>/pki`, of the front proxy's CA (upstream's
/// `front-proxy-ca`), which signs only [`FRONT_PROXY_CLIENT`]: extension API servers
/// trust the user headers of a request that presents it.
pub(crate) const FRONT_PROXY_CA: &str = "front-proxy-ca";
/// The file stem and common name of the certificate the API aggregator presents to
/// extension API servers (upstream's `front-proxy-client`).
pub(crate) const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// PEM files of the cluster's PKI as the API server uses them.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    /// The CA, which signs the nodes' serving certificates.
    pub ca: Arc<Ca>,
    pub ca_pem: String,
    /// The serving certificate, its chain ending with the CA (so a joining node can pin
    /// the CA by its hash), and its key.
    pub serving: CertKey,
    /// The client certificate shown to the nodes' agents.
    pub kubelet_client: CertKey,
    /// The front proxy's CA certificate (`requestheader-client-ca-file`).
    pub front_proxy_ca_pem: String,
    /// The client certificate the aggregator shows to extension API servers.
    pub front_proxy_client: CertKey,
}

/// Loads the CA from `dir` (making it on first start), issues a serving certificate for
/// `hosts` (DNS names or IP addresses) and the client certificate towards the nodes.
pub(crate) fn ensure_pki(dir: &Path, hosts: &[String]) -> Result<Pki, Error> {
    let ca = Ca::load_or_create(dir)?;
    let ca_pem = ca.cert_pem().to_owned();
    let mut names: Vec<String> = vec![
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
        "127.0.0.1".into(),
        "::1".into(),
    ];
    names.extend(hosts.iter().cloned());
    let serving = ca.issue("kcore-apiserver", &names, Usage::Server)?;
    serving.write(dir, "apiserver")?;
    let kubelet_client = ca.issue(KUBELET_CLIENT_USER, &[], Usage::Client)?;
    kubelet_client.write(dir, KUBELET_CLIENT)?;
    let front = Ca::load_or_create_named(dir, FRONT_PROXY_CA, FRONT_PROXY_CA)?;
    let front_proxy_client = front.issue_client(FRONT_PROXY_CLIENT, &[])?;
    front_proxy_client.write(dir, FRONT_PROXY_CLIENT)?;
    Ok(Pki {
        front_proxy_ca_pem: front.cert_pem().to_owned(),
        front_proxy_client,
        ca_pem: ca_pem.clone(),
        ca: Arc::new(ca),
        serving: CertKey {
            cert_pem: format!("{}{}", serving.cert_pem, ca_pem),
            key_pem: serving.key_pem,
        },
        kubelet_client,
    })
}

/// The rustls configuration of the API server's listener.
pub(crate) fn server_config(pki: &Pki) -> Result<rustls::ServerConfig, Error> {
    // clients may prove who they are with a certificate the cluster CA signed; the chain
    // is checked by the authenticator, so one from another CA gets a 401 (`crate::auth`)
    Ok(kcore_tls::server_config_requesting_client_certs(
        &pki.serving,
        &pki.ca_pem,
    )?)
}

/// The rustls configuration the API server connects to nodes' agents with: it trusts
/// only the cluster CA and presents [`KUBELET_CLIENT`].
pub(crate) fn node_client_config(pki: &Pki) -> Result<Arc<rustls::ClientConfig>, Error> {
    Ok(Arc::new(kcore_tls::client_config(
        &pki.ca_pem,
        Some(&pki.kubelet_client),
    )?))
}

/// Reads the token file, creating it with one random admin token if it does not exist.
pub(crate) fn ensure_token_file(path: &Path) -> Result<PathBuf, Error> {
    if !path.exists() {
        let token =
            uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
        kcore_tls::write_private(path, &format!("{token},admin,admin,system:masters\n"))?;
    }
    Ok(path.to_owned())
}
