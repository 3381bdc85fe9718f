//! The simple JSONPath of CRD printer columns and scale paths: `.a.b`, `.a[0]`,
//! `.a[*].b`, `.a['dotted.key']` and `.a[?(@.type=="Ready")].status`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    /// `[?(@.<path>=="value")]`.
    Filter(Vec<String>, Value),
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JsonPath(Vec<Step>);

/// A path that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported JSONPath {0:?}")]
pub(crate) struct BadPath(String);

impl JsonPath {
    /// Parses a path; `{...}` around it is accepted.
    pub(crate) fn parse(src: &str) -> Result<Self, BadPath> {
        let bad = || BadPath(src.to_owned());
        let s = src.trim();
        let s = s
            .strip_prefix('{')
            .and_then(|x| x.strip_suffix('}'))
            .unwrap_or(s);
        let s = s.strip_prefix('$').unwrap_or(s);
        let b = s.as_bytes();
        let mut steps = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'.' => {
                    let start = i + 1;
                    let mut j = start;
                    while j < b.len() && b[j] != b'.' && b[j] != b'[' {
                        j += 1;
                    }
                    if j == start {
                        return Err(bad());
                    }
                    steps.push(Step::Field(s[start..j].to_owned()));
                    i = j;
                }
                b'[' => {
                    let end = s[i..].find(']').map(|e| i + e).ok_or_else(bad)?;
                    // A filter may hold `]` only inside quotes; the paths CRDs use do not.
                    let inner = s[i + 1..end].trim();
                    let step = if inner == "*" {
                        Step::All
                    } else if let Ok(n) = inner.parse::<usize>() {
                        Step::Index(n)
                    } else if let Some(q) = inner
                        .strip_prefix('\'')
                        .and_then(|x| x.strip_suffix('\''))
                        .or_else(|| inner.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
                    {
                        Step::Field(q.to_owned())
                    } else if let Some(f) =
                        inner.strip_prefix("?(@.").and_then(|x| x.strip_suffix(')'))
                    {
                        let (lhs, rhs) = f.split_once("==").ok_or_else(bad)?;
                        let rhs = rhs.trim();
                        let val = if let Some(q) = rhs
                            .strip_prefix('"')
                            .and_then(|x| x.strip_suffix('"'))
                            .or_else(|| rhs.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                        {
                            Value::String(q.to_owned())
                        } else {
                            serde_json::from_str(rhs).map_err(|_| bad())?
                        };
                        Step::Filter(lhs.trim().split('.').map(str::to_owned).collect(), val)
                    } else {
                        return Err(bad());
                    };
                    steps.push(step);
                    i = end + 1;
                }
                _ => return Err(bad()),
            }
        }
        Ok(Self(steps))
    }

    /// Every value the path selects in `v`.
    pub(crate) fn find<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        let mut cur = vec![v];
        for step in &self.0 {
            let mut next = Vec::new();
            for c in cur {
                match step {
                    Step::Field(f) => next.extend(c.get(f.as_str())),
                    Step::Index(n) => next.extend(c.get(*n)),
                    Step::All => match c {
                        Value::Array(a) => next.extend(a.iter()),
                        Value::Object(m) => next.extend(m.values()),
                        _ => {}
                    },
                    Step::Filter(path, want) => {
                        for item in c.as_array().into_iter().flatten() {
                            let mut x = item;
                            for seg in path {
                                x = x.get(seg.as_str()).unwrap_or(&Value::Null);
                            }
                            if x == want {
                                next.push(item);
                            }
                        }
                    }
                }
            }
            cur = next;
        }
        cur
    }

    /// The first value the path selects.
    pub(crate) fn first<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        self.find(v).into_iter().next()
    }

    /// Sets the value at a path of plain fields, creating objects on the way.
    pub(crate) fn set(&self, v: &mut Value, value: Value) {
        let mut cur = v;
        for step in &self.0 {
            let Step::Field(f) = step else { return };
            if !cur.is_object() {
                *cur = Value::Object(Default::default());
            }
            cur = &mut cur[f.as_str()];
        }
        *cur = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn printer_column_paths() {
        let o = json!({"spec": {"replicas": 3, "a.b": "x", "items": [{"n": 1}, {"n": 2}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "False"}]}});
        let get = |p: &str| {
            JsonPath::parse(p)
                .unwrap()
                .find(&o)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(get(".spec.replicas"), [json!(3)]);
        assert_eq!(get("{.spec.replicas}"), [json!(3)]);
        assert_eq!(get(".spec['a.b']"), [json!("x")]);
        assert_eq!(get(".spec.items[1].n"), [json!(2)]);
        assert_eq!(get(".spec.items[*].n"), [json!(1), json!(2)]);
        assert_eq!(
            get(".status.conditions[?(@.type==\"Ready\")].status"),
            [json!("True")]
        );
        assert!(get(".spec.missing").is_empty());
        assert!(JsonPath::parse("spec").is_err());
        let mut v = json!({});
        JsonPath::parse(".spec.replicas")
            .unwrap()
            .set(&mut v, json!(5));
        assert_eq!(v["spec"]["replicas"], 5);
    }
}
