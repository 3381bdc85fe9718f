//! The subject of an X.509 certificate: its common name and organizations, which the
//! API server reads as a client's user name and groups (upstream's x509 authenticator).
//!
//! Only what that needs is parsed: the DER is walked to `tbsCertificate.subject` and the
//! `CN` (2.5.4.3) and `O` (2.5.4.10) attributes are read as strings. The certificate was
//! verified by rustls before this runs; a certificate this reader cannot walk yields
//! `None`, never a guess.

/// The parts of a certificate's subject that name a Kubernetes user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// The common name (`CN`), the user name.
    pub common_name: Option<String>,
    /// The organizations (`O`), in order, the user's groups.
    pub organizations: Vec<String>,
}

/// One DER element: its tag and contents, and what follows it.
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];

/// Reads the subject of a DER-encoded certificate.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let ca = kcore_tls::Ca::load_or_create(dir.path())?;
/// let alice = ca.issue_client("alice", &["dev".into(), "ops".into()])?;
/// let der = kcore_tls::pem_certificates(&alice.cert_pem)?;
/// let s = kcore_tls::subject(&der[0]).expect("a subject");
/// assert_eq!(s.common_name.as_deref(), Some("alice"));
/// assert_eq!(s.organizations, ["dev", "ops"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn subject(der: &[u8]) -> Option<Subject> {
    let (tag, cert, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // version [0] EXPLICIT, optional
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    // serialNumber, signature, issuer, validity, subject
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    name(rest)
}

/// Reads the subject of a DER-encoded PKCS#10 certificate request (its signature is
/// checked by [`crate::CertRequest::parse`]).
pub(crate) fn request_subject(der: &[u8]) -> Option<Subject> {
    let (tag, req, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, info, _) = element(req)?;
    if tag != SEQUENCE {
        return None;
    }
    // version, then subject
    name(element(info)?.2)
}

/// The CN and O attributes of the X.501 Name at the start of `der`.
fn name(der: &[u8]) -> Option<Subject> {
    let (tag, mut rdns, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut out = Subject::default();
    while !rdns.is_empty() {
        let (tag, mut set, next) = element(rdns)?;
        rdns = next;
        if tag != SET {
            return None;
        }
        while !set.is_empty() {
            let (tag, atv, next) = element(set)?;
            set = next;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = element(atv)?;
            if tag != OID {
                return None;
            }
            let (_, text, _) = element(value)?;
            let text = String::from_utf8(text.to_vec()).ok()?;
            if oid == OID_CN {
                out.common_name = Some(text);
            } else if oid == OID_O {
                out.organizations.push(text);
            }
        }
    }
    Some(out)
}
