//! A certificate that is replaced while it is in use: the rustls resolver behind a
//! renewed serving certificate (each new handshake presents the current one) and behind
//! a renewed client certificate (each new connection presents the current one).

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::sign::CertifiedKey;

use crate::{CertKey, Error};

/// A certificate and key that can be swapped while servers and clients use it.
///
/// Clones share the certificate: [`LiveCert::replace`] on one is seen by every
/// configuration made from any of them ([`crate::server_config_live`], or a
/// `rustls::ClientConfig` with it as its client certificate resolver).
///
/// # Example
///
/// ```
/// use kcore_tls::{Ca, LiveCert, Usage};
///
/// let dir = tempfile::tempdir()?;
/// let ca = Ca::load_or_create(dir.path())?;
/// let live = LiveCert::new(ca.issue("node-a", &["node-a".into()], Usage::Server)?)?;
/// let server = kcore_tls::server_config_live(&live, Some(ca.cert_pem()))?;
/// let renewed = ca.issue("node-a", &["node-a".into()], Usage::Server)?;
/// live.replace(renewed.clone())?;
/// // the server's next handshake presents the renewed certificate
/// assert_eq!(live.current().cert_pem, renewed.cert_pem);
/// # drop(server);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct LiveCert {
    current: Arc<RwLock<(CertKey, Arc<CertifiedKey>)>>,
}

impl std::fmt::Debug for LiveCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCert")
            .field("validity", &self.validity())
            .finish_non_exhaustive()
    }
}

impl LiveCert {
    /// Presents `cert` until it is replaced.
    pub fn new(cert: CertKey) -> Result<Self, Error> {
        let key = crate::certified_key(&cert)?;
        Ok(LiveCert {
            current: Arc::new(RwLock::new((cert, key))),
        })
    }

    /// The current certificate and key (PEM).
    pub fn current(&self) -> CertKey {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// The current certificate, ready to present.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()).1)
    }

    /// Presents `cert` from now on (handshakes already done keep the old one); an
    /// unreadable certificate or key is an error and changes nothing.
    pub fn replace(&self, cert: CertKey) -> Result<(), Error> {
        let key = crate::certified_key(&cert)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (cert, key);
        Ok(())
    }

    /// The validity period (`notBefore`, `notAfter`) of the current certificate, `None`
    /// when it cannot be read.
    pub fn validity(&self) -> Option<(SystemTime, SystemTime)> {
        let key = self.certified_key();
        key.cert.first().and_then(|der| crate::validity(der))
    }
}

impl rustls::server::ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }
}

impl rustls::client::ResolvesClientCert for LiveCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ca, Usage};

    #[test]
    fn a_replaced_certificate_is_what_new_handshakes_get() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let first = ca.issue("n", &["n".into()], Usage::Server).unwrap();
        let live = LiveCert::new(first.clone()).unwrap();
        let shared = live.clone();
        let second = ca.issue("n", &["n".into()], Usage::Server).unwrap();
        let der = |c: &CertKey| crate::pem_certificates(&c.cert_pem).unwrap()[0].clone();
        assert_eq!(shared.certified_key().cert[0], der(&first));
        live.replace(second.clone()).unwrap();
        assert_eq!(shared.certified_key().cert[0], der(&second));
        assert_eq!(shared.current().key_pem, second.key_pem);
        // a broken certificate changes nothing
        let broken = CertKey {
            cert_pem: "nonsense".into(),
            key_pem: second.key_pem.clone(),
        };
        assert!(live.replace(broken).is_err());
        assert_eq!(shared.certified_key().cert[0], der(&second));
        let (from, until) = shared.validity().unwrap();
        assert!(from < until);
    }
}
