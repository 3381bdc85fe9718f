//! `POST /kcore/v1/nodecertificates`: a node's serving certificate for its agent's
//! server (port 10250) and its client certificate, signed by the cluster CA in one call,
//! for administrators' tools and tests. `kcored` nodes get theirs through
//! CertificateSigningRequests with a bootstrap token instead (`kcored::credentials`).
//!
//! The request names the node and the addresses and host names its certificate is for:
//! `{"nodeName": "n1", "addresses": ["10.0.0.7", "n1"]}`; the answer carries the CA, the
//! certificate and its new key (PEM), over the TLS connection of an authenticated
//! client, with the node's client certificate (`CN=system:node:<name>`,
//! `O=system:nodes`), the only credential its agent then uses. Only callers allowed to
//! `create` the path `/kcore/v1/nodecertificates` (administrators) get one.

use std::net::IpAddr;

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::tls::Pki;

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Issues the certificate `body` asks for.
pub(crate) fn issue(pki: Option<&Pki>, body: &Value) -> Result<Value, ApiError> {
    let Some(pki) = pki else {
        return Err(ApiError::new(
            404,
            "NotFound",
            "this API server has no cluster CA (it serves plain HTTP)",
        ));
    };
    let node = body["nodeName"].as_str().unwrap_or_default();
    if !valid_name(node) {
        return Err(ApiError::bad_request(format!(
            "nodeName {node:?} is not a valid node name"
        )));
    }
    let mut names = vec![node.to_owned()];
    for a in body["addresses"].as_array().into_iter().flatten() {
        let a = a.as_str().unwrap_or_default();
        if a.parse::<IpAddr>().is_err() && !valid_name(a) {
            return Err(ApiError::bad_request(format!(
                "address {a:?} is neither an IP address nor a host name"
            )));
        }
        names.push(a.to_owned());
    }
    let cert = pki
        .ca
        .issue(
            &format!("system:node:{node}"),
            &names,
            kcore_tls::Usage::Server,
        )
        .map_err(|e| ApiError::internal(format!("issuing the certificate of node {node}: {e}")))?;
    // the node's own credential towards the API server (what the
    // `kube-apiserver-client-kubelet` signer issues): the Node authorizer and
    // NodeRestriction admission limit it to the node's own objects
    let client = pki
        .ca
        .issue_client(
            &format!("{}{node}", crate::auth::node::NODE_USER_PREFIX),
            &[crate::auth::node::NODES_GROUP.to_owned()],
        )
        .map_err(|e| {
            ApiError::internal(format!(
                "issuing the client certificate of node {node}: {e}"
            ))
        })?;
    tracing::info!(%node, ?names, "issued a node's serving and client certificates");
    Ok(json!({
        "kind": "NodeCertificate",
        "apiVersion": "kcore.dev/v1",
        "nodeName": node,
        "caPem": pki.ca_pem,
        "certificatePem": cert.cert_pem,
        "keyPem": cert.key_pem,
        "clientCertificatePem": client.cert_pem,
        "clientKeyPem": client.key_pem,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_certificates_chain_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::tls::ensure_pki(dir.path(), &[]).unwrap();
        let ok = issue(
            Some(&pki),
            &json!({"nodeName": "n1", "addresses": ["10.0.0.7", "n1.example"]}),
        )
        .unwrap();
        assert_eq!(ok["caPem"], pki.ca_pem.as_str());
        assert!(ok["certificatePem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        let client = ok["clientCertificatePem"].as_str().unwrap();
        let der = kcore_tls::pem_certificates(client).unwrap();
        let subject = kcore_tls::subject(&der[0]).unwrap();
        assert_eq!(subject.common_name.as_deref(), Some("system:node:n1"));
        assert_eq!(subject.organizations, ["system:nodes"]);
        for bad in [
            json!({"nodeName": "N_1"}),
            json!({"nodeName": "n1", "addresses": ["bad name"]}),
            json!({}),
        ] {
            assert_eq!(issue(Some(&pki), &bad).unwrap_err().code, 400, "{bad}");
        }
        assert_eq!(
            issue(None, &json!({"nodeName": "n1"})).unwrap_err().code,
            404
        );
    }
}
