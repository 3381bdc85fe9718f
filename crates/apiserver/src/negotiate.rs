//! Content negotiation, as upstream's `NegotiateOutputMediaType`: the `Accept` header's
//! media ranges in order of their q-values, the first one the server can write wins; JSON
//! when there is no `Accept` or it allows anything; 406 when nothing listed is served.

use crate::error::ApiError;

/// How a response body is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    /// `application/json`.
    Json,
    /// `application/yaml`.
    Yaml,
    /// `application/vnd.kubernetes.protobuf` (built-in kinds only).
    Protobuf,
    /// `application/json;as=Table;g=meta.k8s.io;v=v1`: a `meta.k8s.io/v1` Table.
    Table,
}

/// One media range of an `Accept` header.
struct Range<'a> {
    media: &'a str,
    q: f32,
    params: Vec<(&'a str, &'a str)>,
}

impl<'a> Range<'a> {
    fn parse(clause: &'a str) -> Option<Self> {
        let mut parts = clause.split(';').map(str::trim);
        let media = parts.next().filter(|m| !m.is_empty())?;
        let mut q = 1.0;
        let mut params = Vec::new();
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let (k, v) = (k.trim(), v.trim().trim_matches('"'));
            if k == "q" {
                q = v.parse().unwrap_or(1.0);
            } else {
                params.push((k, v));
            }
        }
        Some(Self { media, q, params })
    }

    fn param(&self, k: &str) -> Option<&'a str> {
        self.params.iter().find(|(x, _)| *x == k).map(|(_, v)| *v)
    }

    /// The codec this range asks for, if the server writes it.
    fn codec(&self, protobuf: bool) -> Option<Codec> {
        if let Some(as_kind) = self.param("as") {
            // Tables are JSON only, as upstream; other `as=` forms are served as the
            // object itself.
            if as_kind == "Table" {
                let ok = self.param("g") == Some("meta.k8s.io")
                    && matches!(self.param("v"), Some("v1" | "v1beta1"));
                return (ok && self.media == "application/json").then_some(Codec::Table);
            }
        }
        match self.media {
            "application/json" | "*/*" | "application/*" => Some(Codec::Json),
            "application/yaml" => Some(Codec::Yaml),
            "application/vnd.kubernetes.protobuf" if protobuf => Some(Codec::Protobuf),
            _ => None,
        }
    }
}

/// Picks the codec for a response from the request's `Accept` header. `protobuf` says
/// whether the resource has a protobuf form (custom resources do not).
pub(crate) fn output(accept: Option<&str>, protobuf: bool) -> Result<Codec, ApiError> {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
        return Ok(Codec::Json);
    };
    let mut ranges: Vec<Range<'_>> = accept.split(',').filter_map(Range::parse).collect();
    // stable: ranges of equal weight keep the client's order
    ranges.sort_by(|a, b| b.q.total_cmp(&a.q));
    ranges
        .iter()
        .filter(|r| r.q > 0.0)
        .find_map(|r| r.codec(protobuf))
        .ok_or_else(|| {
            let served = if protobuf {
                "application/json, application/yaml, application/vnd.kubernetes.protobuf"
            } else {
                "application/json, application/yaml"
            };
            ApiError::new(
                406,
                "NotAcceptable",
                format!("only the following media types are accepted: {served}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_pick_codecs_as_upstream() {
        let cases: &[(Option<&str>, bool, Option<Codec>)] = &[
            (None, true, Some(Codec::Json)),
            (Some(""), true, Some(Codec::Json)),
            (Some("*/*"), true, Some(Codec::Json)),
            (Some("application/json"), true, Some(Codec::Json)),
            (Some("application/yaml"), true, Some(Codec::Yaml)),
            (
                Some("application/vnd.kubernetes.protobuf, */*"),
                true,
                Some(Codec::Protobuf),
            ),
            // custom resources fall back to the next acceptable type
            (
                Some("application/vnd.kubernetes.protobuf, application/json"),
                false,
                Some(Codec::Json),
            ),
            (Some("application/vnd.kubernetes.protobuf"), false, None),
            // q-values order the ranges
            (
                Some("application/json;q=0.5, application/vnd.kubernetes.protobuf"),
                true,
                Some(Codec::Protobuf),
            ),
            (
                Some("application/vnd.kubernetes.protobuf;q=0.1, application/json;q=0.9"),
                true,
                Some(Codec::Json),
            ),
            (Some("application/json;q=0, text/html"), true, None),
            (Some("text/html"), true, None),
            // kubectl get: a Table, then plain JSON
            (
                Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"),
                true,
                Some(Codec::Table),
            ),
            // Tables are not served as protobuf: the next range wins
            (
                Some("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json"),
                true,
                Some(Codec::Json),
            ),
            (
                Some("application/json;as=Table;v=v9;g=meta.k8s.io,application/json"),
                true,
                Some(Codec::Json),
            ),
        ];
        for (accept, pb, want) in cases {
            let got = output(*accept, *pb);
            match want {
                Some(c) => assert_eq!(got.as_ref().ok(), Some(c), "{accept:?}"),
                None => assert_eq!(got.unwrap_err().code, 406, "{accept:?}"),
            }
        }
    }
}
