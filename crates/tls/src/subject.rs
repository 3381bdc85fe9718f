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

/// The validity period (`notBefore`, `notAfter`) of a DER-encoded certificate.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let ca = kcore_tls::Ca::load_or_create(dir.path())?;
/// let alice = ca.issue_client("alice", &[])?;
/// let der = kcore_tls::pem_certificates(&alice.cert_pem)?;
/// let (from, until) = kcore_tls::validity(&der[0]).expect("a validity");
/// assert!(from < std::time::SystemTime::now() && until > std::time::SystemTime::now());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn validity(der: &[u8]) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
    let (tag, cert, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    // serialNumber, signature, issuer, then validity
    for _ in 0..3 {
        rest = element(rest)?.2;
    }
    let (tag, validity, _) = element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (t1, from, rest) = element(validity)?;
    let (t2, until, _) = element(rest)?;
    Some((time(t1, from)?, time(t2, until)?))
}

/// An X.509 `UTCTime` (tag 0x17, `YYMMDDHHMMSSZ`) or `GeneralizedTime` (0x18,
/// `YYYYMMDDHHMMSSZ`).
fn time(tag: u8, text: &[u8]) -> Option<std::time::SystemTime> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if text.len() == 12 => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        0x18 if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let num = |r: std::ops::Range<usize>| rest.get(r)?.parse::<i64>().ok();
    let (month, day) = (num(0..2)?, num(2..4)?);
    let (h, m, s) = (num(4..6)?, num(6..8)?, num(8..10)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // days from the civil date (Howard Hinnant's algorithm)
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    let secs = u64::try_from(secs).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
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

#[cfg(test)]
mod validity_tests {
    #[test]
    fn times_read_as_upstream_encodes_them() {
        let at = |tag, t: &str| {
            super::time(tag, t.as_bytes())
                .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
        };
        assert_eq!(at(0x17, "700101000000Z"), Some(0));
        assert_eq!(at(0x17, "260301120000Z"), Some(1_772_366_400));
        assert_eq!(at(0x18, "20500101000000Z"), Some(2_524_608_000));
        assert_eq!(at(0x17, "261301120000Z"), None);
        assert_eq!(at(0x17, "2603011200Z"), None);
    }
}
