//! Client certificates checked after the handshake, as upstream's API server does: TLS
//! asks for a certificate without requiring or trusting one, and the x509 authenticator
//! verifies the chain against the client CA, so a certificate from another CA is answered
//! with a 401 instead of a failed handshake.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::{provider, roots, Error, Subject};

/// Asks for a client certificate (naming the CA's subject as acceptable), checks that the
/// client holds its key (the handshake signature), and leaves the chain to
/// [`ClientVerifier`].
#[derive(Debug)]
pub(crate) struct RequestClientCert {
    /// The CA's verifier: its hints and signature checks; its chain check is not used here.
    inner: Arc<dyn ClientCertVerifier>,
}

impl RequestClientCert {
    pub(crate) fn new(ca_pem: &str) -> Result<Self, Error> {
        Ok(Self {
            inner: webpki_verifier(ca_pem)?,
        })
    }
}

fn webpki_verifier(ca_pem: &str) -> Result<Arc<dyn ClientCertVerifier>, Error> {
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca_pem)?),
        provider(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|source| Error::Verifier { source })
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // the chain is the authenticator's to judge (ClientVerifier), after the handshake
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Verifies a client's certificate chain against a CA for `clientAuth` and reads the
/// user it names: upstream's x509 request authenticator.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let ca = kcore_tls::Ca::load_or_create(dir.path())?;
/// let verifier = kcore_tls::ClientVerifier::new(ca.cert_pem())?;
/// let alice = ca.issue_client("alice", &["dev".into()])?;
/// let chain = kcore_tls::pem_certificates(&alice.cert_pem)?;
/// assert_eq!(verifier.verify(&chain)?.common_name.as_deref(), Some("alice"));
///
/// let other = tempfile::tempdir()?;
/// let rogue = kcore_tls::Ca::load_or_create(other.path())?.issue_client("mallory", &[])?;
/// assert!(verifier.verify(&kcore_tls::pem_certificates(&rogue.cert_pem)?).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientVerifier {
    /// A verifier trusting the CA certificates in `ca_pem`.
    pub fn new(ca_pem: &str) -> Result<Self, Error> {
        Ok(Self {
            inner: webpki_verifier(ca_pem)?,
        })
    }

    /// The subject of `chain` (leaf first) when the CA signed it for `clientAuth` and it is
    /// valid now.
    pub fn verify(&self, chain: &[CertificateDer<'_>]) -> Result<Subject, Error> {
        let (leaf, intermediates) = chain.split_first().ok_or(Error::NoCertificate {
            what: "client certificate chain",
        })?;
        self.inner
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|source| Error::Untrusted { source })?;
        crate::subject(leaf).ok_or(Error::Subject)
    }
}
