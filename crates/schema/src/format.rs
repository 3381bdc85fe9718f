//! String formats of upstream's CRD format registry (kube-openapi's strfmt as
//! apiextensions-apiserver configures it). Unknown formats are not checked, as upstream.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine;

/// Upstream's message for a namespace that is not a DNS-1123 label.
pub(crate) const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// True when `s` is valid for `format`; formats kcore does not check pass.
pub(crate) fn valid(format: &str, s: &str) -> bool {
    match format {
        "int32" | "int64" | "float" | "double" | "password" => true,
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "date" => date(s),
        "date-time" | "datetime" => date_time(s),
        "duration" => duration(s),
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "cidr" => cidr(s),
        "mac" => mac(s),
        "uuid" => uuid(s, None),
        "uuid3" => uuid(s, Some('3')),
        "uuid4" => uuid(s, Some('4')),
        "uuid5" => uuid(s, Some('5')),
        "hostname" => hostname(s),
        "email" => email(s),
        "uri" => url::Url::parse(s).is_ok() || (s.starts_with('/') && !s.contains(' ')),
        "bsonobjectid" => s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()),
        "hexcolor" => {
            let h = s.strip_prefix('#').unwrap_or("");
            (h.len() == 3 || h.len() == 6) && h.bytes().all(|b| b.is_ascii_hexdigit())
        }
        _ => true,
    }
}

fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `YYYY-MM-DD` (RFC 3339 full-date).
pub(crate) fn date(s: &str) -> bool {
    let mut parts = s.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Some(y), Some(m), Some(d)) = (digits(y, 4), digits(m, 2), digits(d, 2)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// RFC 3339 date-time: `2006-01-02T15:04:05[.frac](Z|±hh:mm)`.
pub(crate) fn date_time(s: &str) -> bool {
    let Some((d, t)) = s.split_once(['T', 't', ' ']) else {
        return false;
    };
    if !date(d) {
        return false;
    }
    let (time, zone) = if let Some(t) = t.strip_suffix(['Z', 'z']) {
        (t, None)
    } else if let Some(i) = t.rfind(['+', '-']) {
        (&t[..i], Some(&t[i + 1..]))
    } else {
        return false;
    };
    if let Some(z) = zone {
        let Some((h, m)) = z.split_once(':') else {
            return false;
        };
        if digits(h, 2).is_none_or(|h| h >= 24) || digits(m, 2).is_none_or(|m| m >= 60) {
            return false;
        }
    }
    let (hms, frac) = match time.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (time, None),
    };
    if frac.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let mut p = hms.split(':');
    matches!(
        (p.next().and_then(|h| digits(h, 2)), p.next().and_then(|m| digits(m, 2)), p.next().and_then(|x| digits(x, 2)), p.next()),
        (Some(h), Some(m), Some(sec), None) if h < 24 && m < 60 && sec <= 60
    )
}

/// A Go duration (`1h30m`, `-1.5s`, `300ms`).
pub(crate) fn duration(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    if s.is_empty() {
        return false;
    }
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_end];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return false;
        }
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        if !matches!(
            &rest[..unit_end],
            "ns" | "us" | "µs" | "μs" | "ms" | "s" | "m" | "h"
        ) {
            return false;
        }
        rest = &rest[unit_end..];
    }
    true
}

fn cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => bits <= 32,
        Ok(IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

fn mac(s: &str) -> bool {
    let groups: Vec<&str> = s.split([':', '-']).collect();
    matches!(groups.len(), 6 | 8 | 20)
        && groups
            .iter()
            .all(|g| g.len() == 2 && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn uuid(s: &str, version: Option<char>) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let shape = groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, l)| g.len() == l && g.bytes().all(|b| b.is_ascii_hexdigit()));
    shape && version.is_none_or(|v| groups[2].starts_with(v))
}

/// An RFC 1123 host name: dot-separated labels of letters, digits and `-`.
fn hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn email(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !local.contains(char::is_whitespace) && hostname(domain)
        }
        None => false,
    }
}

/// A lowercase RFC 1123 label (namespaces).
pub(crate) fn dns1123_label(s: &str) -> bool {
    s.len() <= 63
        && !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn too_long(s: &str, max: usize) -> Option<String> {
    (s.len() > max).then(|| format!("must be no more than {max} characters"))
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`: label values and qualified-name parts.
fn label_like(s: &str) -> bool {
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    ends(s.chars().next())
        && ends(s.chars().last())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What Kubernetes' CEL format library reports for `s` in `format`; empty when valid.
pub(crate) fn named_format_errors(format: &str, s: &str) -> Vec<String> {
    let mut out = Vec::new();
    fn check(out: &mut Vec<String>, ok: bool, msg: &str) {
        if !ok {
            out.push(msg.to_owned());
        }
    }
    match format {
        "dns1123Label" | "dns1123LabelPrefix" => {
            let s = if format.ends_with("Prefix") {
                s.trim_end_matches('-')
            } else {
                s
            };
            out.extend(too_long(s, 63));
            check(&mut out, dns1123_label(s), DNS1123_LABEL_MSG);
        }
        "dns1123Subdomain" => {
            out.extend(too_long(s, 253));
            check(&mut out, dns1123_subdomain(s), DNS1123_SUBDOMAIN_MSG);
        }
        "dns1035Label" => {
            out.extend(too_long(s, 63));
            let ok = s.starts_with(|c: char| c.is_ascii_lowercase())
                && !s.ends_with('-')
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            check(&mut out, ok, DNS1035_LABEL_MSG);
        }
        "labelValue" => {
            out.extend(too_long(s, 63));
            check(&mut out, s.is_empty() || label_like(s), LABEL_VALUE_MSG);
        }
        "qualifiedName" => {
            let (prefix, name) = match s.split_once('/') {
                Some((p, n)) => (Some(p), n),
                None => (None, s),
            };
            if let Some(p) = prefix {
                if p.is_empty() {
                    out.push("prefix part must be non-empty".to_owned());
                } else if !dns1123_subdomain(p) {
                    out.push(format!("prefix part {DNS1123_SUBDOMAIN_MSG}"));
                }
            }
            if name.is_empty() {
                out.push("name part must be non-empty".to_owned());
            } else {
                if name.len() > 63 {
                    out.push("name part must be no more than 63 characters".to_owned());
                }
                check(&mut out, label_like(name), QUALIFIED_NAME_MSG);
            }
        }
        "uri" => check(&mut out, valid("uri", s), "invalid URI"),
        "uuid" => check(&mut out, valid("uuid", s), "does not match the UUID format"),
        "byte" => check(&mut out, valid("byte", s), "invalid base64"),
        "date" => check(&mut out, date(s), "invalid date"),
        "datetime" => check(&mut out, date_time(s), "invalid datetime"),
        _ => {}
    }
    out
}

/// A lowercase RFC 1123 subdomain.
fn dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let cases = [
            ("date", "2024-02-29", true),
            ("date", "2023-02-29", false),
            ("date-time", "2024-01-02T15:04:05Z", true),
            ("date-time", "2024-01-02T15:04:05.123+02:00", true),
            ("date-time", "2024-01-02", false),
            ("duration", "1h30m", true),
            ("duration", "1.5s", true),
            ("duration", "5 minutes", false),
            ("ipv4", "10.0.0.1", true),
            ("ipv4", "10.0.0.256", false),
            ("ipv6", "fe80::1", true),
            ("cidr", "10.0.0.0/8", true),
            ("cidr", "10.0.0.0/33", false),
            ("mac", "00:1a:2b:3c:4d:5e", true),
            ("uuid", "123e4567-e89b-12d3-a456-426614174000", true),
            ("uuid4", "123e4567-e89b-12d3-a456-426614174000", false),
            ("byte", "aGVsbG8=", true),
            ("byte", "not base64!", false),
            ("hostname", "example.com", true),
            ("hostname", "-bad.com", false),
            ("email", "a@example.com", true),
            ("uri", "https://example.com/x", true),
            ("unknown-format", "anything", true),
        ];
        for (f, s, ok) in cases {
            assert_eq!(valid(f, s), ok, "{f} {s}");
        }
    }
}
