//! Label and field selectors as in `?labelSelector=` and `?fieldSelector=`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sLabelSelector;
use kcore_k8s::{Op, Requirement, Selector};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// A parsed label selector; all requirements must hold. The matching rules are
/// kcore-k8s's [`Selector`], shared with the scheduler and the controllers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Selector);

fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let bad =
            |why: &str| ApiError::bad_request(format!("unable to parse requirement: {why}: {s:?}"));
        let mut sel = Selector::default();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let set = |rest: &str| -> Result<Vec<String>, ApiError> {
                let rest = rest.trim();
                let inner = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| bad("expected a parenthesized set"))?;
                let mut vals: Vec<String> = inner
                    .split(',')
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .collect();
                vals.sort_unstable();
                vals.dedup();
                if vals.iter().any(|v| !valid_value(v)) {
                    return Err(bad("invalid label value"));
                }
                Ok(vals)
            };
            // `=`, `==` and `!=` are `in` and `notin` with one value, as upstream.
            let one = |v: &str| -> Result<Vec<String>, ApiError> {
                let v = v.trim();
                if !valid_value(v) {
                    return Err(bad("invalid label value"));
                }
                Ok(vec![v.to_owned()])
            };
            let (key, op) = if let Some(k) = part.strip_prefix('!') {
                (k.trim().to_owned(), Op::DoesNotExist)
            } else if let Some((k, v)) = part.split_once("!=") {
                (k.trim().to_owned(), Op::NotIn(one(v)?))
            } else if let Some((k, v)) = part.split_once("==") {
                (k.trim().to_owned(), Op::In(one(v)?))
            } else if let Some((k, v)) = part.split_once('=') {
                (k.trim().to_owned(), Op::In(one(v)?))
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                (k.trim().to_owned(), Op::NotIn(set(rest)?))
            } else if let Some((k, rest)) = part.split_once(" in ") {
                (k.trim().to_owned(), Op::In(set(rest)?))
            } else {
                (part.to_owned(), Op::Exists)
            };
            if !valid_key(&key) {
                return Err(bad("invalid label key"));
            }
            sel.push(Requirement { key, op });
        }
        Ok(Self(sel))
    }

    /// Builds a selector from a `LabelSelector` object (`matchLabels`,
    /// `matchExpressions`); an unknown operator, or values where an operator takes
    /// none (or none where it needs some), is an error, as upstream.
    pub fn from_object(sel: &Value) -> Result<Self, String> {
        let sel = K8sLabelSelector::deserialize(sel).map_err(|e| e.to_string())?;
        Selector::compile(&sel).map(Self).map_err(|e| e.to_string())
    }

    /// Whether the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.0.matches_fn(|k| labels.get(k).and_then(Value::as_str))
    }
}

/// A parsed field selector: `path=value` and `path!=value` terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses `metadata.name=x,spec.nodeName!=y`.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, eq, val) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: {s:?}; can't understand {part:?}"
                )));
            };
            reqs.push((path.trim().to_owned(), eq, val.trim().to_owned()));
        }
        Ok(Self { reqs })
    }

    /// The value required for `path`, if the selector pins it with `=`.
    pub fn exact(&self, path: &str) -> Option<&str> {
        self.reqs
            .iter()
            .find(|(p, eq, _)| *eq && p == path)
            .map(|(_, _, v)| v.as_str())
    }

    /// Whether the selector has no terms (it matches everything).
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// The fields the selector names.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.reqs.iter().map(|(p, _, _)| p.as_str())
    }

    /// A cheap test on an object's compact JSON encoding (as stored) that is false only
    /// when [`FieldSelector::matches`] is false for it: every `path=value` term whose value
    /// can only be a JSON string (letters, no quote, backslash or control character, not
    /// `true`/`false`/`null`) needs `"<last segment>":"<value>"` in the bytes. A watch of
    /// one node's pods (`spec.nodeName=<node>`, as every kubelet has) skips other nodes'
    /// pod events this way without decoding them.
    pub fn may_match_json(&self, raw: &[u8]) -> bool {
        self.reqs.iter().all(|(path, eq, want)| {
            let plain = want.bytes().any(|b| b.is_ascii_alphabetic())
                && !matches!(want.as_str(), "true" | "false" | "null")
                && !want.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
            if !*eq || !plain {
                return true;
            }
            let last = path.rsplit('.').next().unwrap_or(path);
            let needle = format!("\"{last}\":\"{want}\"");
            memchr::memmem::find(raw, needle.as_bytes()).is_some()
        })
    }

    /// Whether the object's fields satisfy the selector; missing fields read as "".
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(path, eq, want)| {
            let mut cur = obj;
            for seg in path.split('.') {
                cur = cur.get(seg).unwrap_or(&Value::Null);
            }
            let same = match cur {
                Value::String(s) => s == want,
                Value::Null => want.is_empty(),
                v => {
                    let text = v.to_string();
                    text == *want
                }
            };
            same == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn raw_prefilter_never_drops_a_match() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"},
                         "spec": {"nodeName": "node-1", "priority": 7},
                         "status": {"phase": "Running"}});
        let raw = serde_json::to_vec(&pod).unwrap();
        let cases = [
            ("spec.nodeName=node-1", true),
            ("spec.nodeName=node-2", false),
            ("spec.nodeName!=node-2", true),
            ("spec.nodeName=node-1,status.phase=Pending", false),
            ("metadata.name=p,metadata.namespace=ns", true),
            // not plain strings: never ruled out on bytes
            ("spec.priority=7", true),
            ("spec.unschedulable=false", true),
            ("", true),
        ];
        for (sel, want) in cases {
            let f = FieldSelector::parse(sel).unwrap();
            assert_eq!(f.may_match_json(&raw), want, "{sel}");
            // the prefilter is sound: whatever it rules out does not match
            if !f.may_match_json(&raw) {
                assert!(!f.matches(&pod), "{sel}");
            }
        }
    }

    #[test]
    fn label_selector_table() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app=db", false),
            ("app in (db, web)", true),
            ("app notin (db,web)", false),
            ("app notin (db)", true),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("missing!=x", true),
            ("app=web,tier in (front),!missing", true),
            ("app=web,tier=back", false),
            ("", true),
        ];
        for (sel, want) in cases {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&obj),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a=b c").is_err());
    }

    #[test]
    fn selector_from_object() {
        let sel = json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]});
        let s = LabelSelector::from_object(&sel).unwrap();
        assert!(s.matches(&json!({"metadata": {"labels": {"app": "web", "tier": "front"}}})));
        assert!(!s.matches(&json!({"metadata": {"labels": {"app": "web"}}})));
        // An unknown operator is an error (it used to read as Exists), as are values
        // that do not fit the operator.
        for bad in [
            json!({"matchExpressions": [{"key": "tier", "operator": "Bogus"}]}),
            json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": []}]}),
            json!({"matchExpressions": [{"key": "tier", "operator": "Exists", "values": ["a"]}]}),
            json!({"matchLabels": {"app": 1}}),
        ] {
            assert!(LabelSelector::from_object(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selector_table() {
        let pod = json!({"metadata": {"name": "a", "namespace": "ns"},
            "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let cases = [
            ("metadata.name=a", true),
            ("metadata.name!=a", false),
            ("spec.nodeName=n1,status.phase=Running", true),
            ("spec.nodeName=", false),
            ("status.phase!=Pending", true),
            ("involvedObject.kind=", true),
        ];
        for (sel, want) in cases {
            assert_eq!(
                FieldSelector::parse(sel).unwrap().matches(&pod),
                want,
                "{sel}"
            );
        }
        assert_eq!(
            FieldSelector::parse("metadata.name=a")
                .unwrap()
                .exact("metadata.name"),
            Some("a")
        );
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
