//! PKCS#10 certificate requests: made by a client that keeps its key
//! ([`CertRequest::generate`]), read and checked by the server ([`CertRequest::parse`]), and
//! signed by the cluster CA ([`Ca::sign_request`]) once approved, as upstream's
//! CertificateSigningRequest signers do.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{CertificateSigningRequestParams, KeyPair, SanType};

use crate::{cert_err, leaf_params, Ca, CertKey, Error, Subject, Usage};

/// A certificate request whose signature was checked: who it names, for what names.
#[derive(Debug)]
pub struct CertRequest {
    params: CertificateSigningRequestParams,
    subject: Subject,
}

impl CertRequest {
    /// A new key and a request for `common_name` in `organizations` with `names` (DNS
    /// names or IP addresses): the request's PEM in `cert_pem`, the key in `key_pem`.
    ///
    /// ```
    /// let req = kcore_tls::CertRequest::generate("system:node:n1", &["system:nodes".into()], &[])?;
    /// let parsed = kcore_tls::CertRequest::parse(&req.cert_pem)?;
    /// assert_eq!(parsed.subject().common_name.as_deref(), Some("system:node:n1"));
    /// assert_eq!(parsed.subject().organizations, ["system:nodes"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn generate(
        common_name: &str,
        organizations: &[String],
        names: &[String],
    ) -> Result<CertKey, Error> {
        let key = KeyPair::generate().map_err(cert_err("generating a key"))?;
        let mut params = leaf_params(common_name, organizations, names, Usage::Client)?;
        // the signer decides the usages
        params.key_usages.clear();
        params.extended_key_usages.clear();
        let csr = params.serialize_request(&key).map_err(cert_err(format!(
            "the certificate request of {common_name}"
        )))?;
        Ok(CertKey {
            cert_pem: csr.pem().map_err(cert_err(format!(
                "the certificate request of {common_name}"
            )))?,
            key_pem: key.serialize_pem(),
        })
    }

    /// Reads a PEM `CERTIFICATE REQUEST` and checks its signature.
    pub fn parse(pem: &str) -> Result<Self, Error> {
        let params = CertificateSigningRequestParams::from_pem(pem)
            .map_err(|source| Error::Request { source })?;
        let block = ::rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes())
            .filter_map(Result::ok)
            .next()
            .map(|d: ::rustls::pki_types::CertificateSigningRequestDer<'static>| d);
        let subject = block
            .as_ref()
            .and_then(|d| crate::subject::request_subject(d.as_ref()))
            .ok_or(Error::Subject)?;
        Ok(Self { params, subject })
    }

    /// The subject: CN and O.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// The DNS names it asks for.
    pub fn dns_names(&self) -> Vec<String> {
        self.sans(|s| match s {
            SanType::DnsName(n) => Some(n.as_str().to_owned()),
            _ => None,
        })
    }

    /// The IP addresses it asks for.
    pub fn ip_addresses(&self) -> Vec<IpAddr> {
        self.sans(|s| match s {
            SanType::IpAddress(ip) => Some(*ip),
            _ => None,
        })
    }

    /// The e-mail addresses and URIs it asks for.
    pub fn emails_and_uris(&self) -> Vec<String> {
        self.sans(|s| match s {
            SanType::Rfc822Name(n) | SanType::URI(n) => Some(n.as_str().to_owned()),
            _ => None,
        })
    }

    fn sans<T>(&self, f: impl Fn(&SanType) -> Option<T>) -> Vec<T> {
        self.params
            .params
            .subject_alt_names
            .iter()
            .filter_map(f)
            .collect()
    }
}

impl Ca {
    /// Signs `req` for `usage`, valid from now for `valid_for`: its subject and names as
    /// requested, the key usages of `usage` (a request's own extensions are not copied).
    pub fn sign_request(
        &self,
        req: &CertRequest,
        usage: Usage,
        valid_for: Duration,
    ) -> Result<String, Error> {
        let cn = req.subject.common_name.clone().unwrap_or_default();
        let mut names: Vec<String> = req.dns_names();
        names.extend(req.ip_addresses().iter().map(IpAddr::to_string));
        let mut params = leaf_params(&cn, &req.subject.organizations, &names, usage)?;
        let now = time::OffsetDateTime::now_utc();
        // a little slack for clocks that lag, as upstream's signer backdates
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + valid_for;
        let mut serial = [0u8; 16];
        getrandom(&mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(serial.to_vec().into());
        let signed = CertificateSigningRequestParams {
            params,
            public_key: req.params.public_key.clone(),
        };
        let cert = signed
            .signed_by(&self.issuer)
            .map_err(cert_err(format!("signing the certificate request of {cn}")))?;
        Ok(cert.pem())
    }
}

/// Random bytes for serial numbers, from a fresh key's randomness source (ring's).
fn getrandom(out: &mut [u8]) {
    use ring::rand::SecureRandom;
    let _ = ring::rand::SystemRandom::new().fill(out);
}
