//! Label selectors and node selector terms with upstream's semantics
//! (k8s.io/apimachinery/pkg/labels, `metav1.LabelSelectorAsSelector`, and the scheduler's
//! `nodeaffinity` helpers).
//!
//! | operator | matches when |
//! |---|---|
//! | `In` (and `=`, `==`, `matchLabels`) | the label exists and its value is one of the values |
//! | `NotIn` (and `!=`) | the label is absent, or its value is none of the values |
//! | `Exists` | the label exists |
//! | `DoesNotExist` | the label is absent |
//! | `Gt`, `Lt` (node selectors only) | the label exists and, read as an integer, is greater / less than the one value |
//!
//! All requirements of a selector must hold; a selector without requirements matches
//! everything (a missing selector matches nothing: callers decide which they have). A node
//! selector term without requirements matches nothing; its `matchFields` may only name
//! `metadata.name`, with `In` or `NotIn` and exactly one value.
//!
//! Compiling checks what upstream's `NewRequirement` checks about operators and values:
//! `In`/`NotIn` need values, `Exists`/`DoesNotExist` take none, `Gt`/`Lt` take exactly
//! one integer; an unknown operator is an error. The syntax of label keys and values is
//! the API server's validation, not checked here.
//!
//! Selectors are generic over the value type `V` so a caller that interns strings (the
//! scheduler) compiles to its own ids and still shares these rules; `V = String` is the
//! plain form.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm as Term};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::error::Error;

/// The only field a node selector term's `matchFields` may name.
pub const NODE_NAME_FIELD: &str = "metadata.name";

/// A compiled operator with its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op<V = String> {
    /// The label exists and its value is one of these.
    In(Vec<V>),
    /// The label is absent or its value is none of these.
    NotIn(Vec<V>),
    /// The label exists.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label exists and, as an integer, is greater than this.
    Gt(i64),
    /// The label exists and, as an integer, is less than this.
    Lt(i64),
}

impl<V> Op<V> {
    /// Compiles `operator` over `values` (upstream's `NewRequirement` checks); `Gt` and
    /// `Lt` only when `numeric` (node selectors).
    fn compile(
        key: &str,
        operator: &str,
        values: &[String],
        numeric: bool,
        intern: &mut impl FnMut(&str) -> V,
    ) -> Result<Self, Error> {
        let bad = |reason: String| Error::Selector {
            key: key.to_owned(),
            reason,
        };
        let mut set = || -> Result<Vec<V>, Error> {
            if values.is_empty() {
                return Err(bad(format!("operator {operator} needs at least one value")));
            }
            Ok(values.iter().map(|v| intern(v)).collect())
        };
        let none = |op: Op<V>| -> Result<Op<V>, Error> {
            if values.is_empty() {
                Ok(op)
            } else {
                Err(bad(format!("operator {operator} takes no values")))
            }
        };
        let int = || -> Result<i64, Error> {
            let [v] = values else {
                return Err(bad(format!("operator {operator} needs exactly one value")));
            };
            v.parse()
                .map_err(|_| bad(format!("operator {operator} needs an integer, not {v:?}")))
        };
        match operator {
            "In" => Ok(Op::In(set()?)),
            "NotIn" => Ok(Op::NotIn(set()?)),
            "Exists" => none(Op::Exists),
            "DoesNotExist" => none(Op::DoesNotExist),
            "Gt" if numeric => Ok(Op::Gt(int()?)),
            "Lt" if numeric => Ok(Op::Lt(int()?)),
            other => Err(bad(format!("unknown operator {other:?}"))),
        }
    }

    /// Whether a label whose value is `value` (None: absent) satisfies the operator;
    /// `as_int` reads a value as an integer for `Gt` and `Lt`.
    #[inline]
    pub fn matches_with<T: ?Sized>(
        &self,
        value: Option<&T>,
        as_int: impl FnOnce(&T) -> Option<i64>,
    ) -> bool
    where
        V: PartialEq<T>,
    {
        match self {
            Op::In(vals) => value.is_some_and(|v| vals.iter().any(|x| x == v)),
            Op::NotIn(vals) => value.is_none_or(|v| !vals.iter().any(|x| x == v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Gt(n) => value.and_then(as_int).is_some_and(|x| x > *n),
            Op::Lt(n) => value.and_then(as_int).is_some_and(|x| x < *n),
        }
    }
}

impl Op<String> {
    /// Whether a label whose value is `value` (None: absent) satisfies the operator.
    pub fn matches(&self, value: Option<&str>) -> bool {
        self.matches_with(value, |v| v.parse().ok())
    }
}

/// One requirement on a label: its key and the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement<V = String> {
    /// The label key.
    pub key: V,
    /// The operator and its values.
    pub op: Op<V>,
}

/// A compiled label selector: requirements, all of which must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector<V = String> {
    requirements: Vec<Requirement<V>>,
}

impl<V> Default for Selector<V> {
    fn default() -> Self {
        Self {
            requirements: Vec::new(),
        }
    }
}

impl<V> Selector<V> {
    /// Compiles a `metav1.LabelSelector` (`matchLabels` and `matchExpressions`), turning
    /// each key and value into a `V` with `intern`.
    pub fn compile_with(
        sel: &LabelSelector,
        mut intern: impl FnMut(&str) -> V,
    ) -> Result<Self, Error> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement {
                key: intern(k),
                op: Op::In(vec![intern(v)]),
            });
        }
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.as_deref().unwrap_or_default();
            let op = Op::compile(&e.key, &e.operator, values, false, &mut intern)?;
            requirements.push(Requirement {
                key: intern(&e.key),
                op,
            });
        }
        Ok(Self { requirements })
    }

    /// Adds a requirement (ANDed with the others).
    pub fn push(&mut self, requirement: Requirement<V>) {
        self.requirements.push(requirement);
    }

    /// The requirements.
    pub fn requirements(&self) -> &[Requirement<V>] {
        &self.requirements
    }

    /// True when there are no requirements (the selector matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether the labels read by `get` (a key to its value, None when absent) satisfy
    /// every requirement; `as_int` reads a value as an integer for `Gt` and `Lt`.
    #[inline]
    pub fn matches_with<'l, T: ?Sized + 'l>(
        &self,
        get: impl Fn(&V) -> Option<&'l T>,
        as_int: impl Fn(&T) -> Option<i64>,
    ) -> bool
    where
        V: PartialEq<T>,
    {
        self.requirements
            .iter()
            .all(|r| r.op.matches_with(get(&r.key), &as_int))
    }
}

impl Selector<String> {
    /// Compiles a `metav1.LabelSelector`.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    /// use kcore_k8s::Selector;
    ///
    /// let sel: LabelSelector = serde_json::from_value(serde_json::json!({
    ///     "matchLabels": {"app": "web"},
    ///     "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}],
    /// }))?;
    /// let sel = Selector::compile(&sel)?;
    /// let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    /// assert!(sel.matches(&labels));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compile(sel: &LabelSelector) -> Result<Self, Error> {
        Self::compile_with(sel, str::to_owned)
    }

    /// The selector of a plain `key: value` map (a Service's or ReplicationController's
    /// selector, a pod's `nodeSelector`): every pair must be present.
    pub fn from_set(set: &BTreeMap<String, String>) -> Self {
        Self {
            requirements: set
                .iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    op: Op::In(vec![v.clone()]),
                })
                .collect(),
        }
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_fn(|k| labels.get(k).map(String::as_str))
    }

    /// Whether the labels read by `get` satisfy every requirement.
    pub fn matches_fn<'l>(&self, get: impl Fn(&str) -> Option<&'l str>) -> bool {
        self.matches_with(|k: &String| get(k), |v: &str| v.parse().ok())
    }
}

/// Whether `labels` satisfy `selector`, as a controller reads its `spec.selector`: an
/// empty selector matches everything, and one that does not compile matches nothing.
pub fn label_selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    Selector::compile(selector).is_ok_and(|s| s.matches(labels.unwrap_or(&empty)))
}

/// True when `selector` has no requirements (it selects every object).
pub fn label_selector_is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

/// Whether every `key: value` of a map selector is among `labels`.
pub fn set_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.is_some_and(|l| l.get(k) == Some(v)))
}

fn values(r: &NodeSelectorRequirement) -> &[String] {
    r.values.as_deref().unwrap_or_default()
}

/// A compiled node selector term: requirements on node labels (`matchExpressions`) and on
/// the node's name (`matchFields`), all ANDed; a term without any matches nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSelectorTerm<V = String> {
    expressions: Vec<Requirement<V>>,
    name: Vec<Op<V>>,
}

impl<V> NodeSelectorTerm<V> {
    /// Compiles a `NodeSelectorTerm`, turning keys and values into `V` with `intern`.
    pub fn compile_with(term: &Term, mut intern: impl FnMut(&str) -> V) -> Result<Self, Error> {
        let mut expressions = Vec::new();
        for r in term.match_expressions.iter().flatten() {
            let op = Op::compile(&r.key, &r.operator, values(r), true, &mut intern)?;
            expressions.push(Requirement {
                key: intern(&r.key),
                op,
            });
        }
        let mut name = Vec::new();
        for r in term.match_fields.iter().flatten() {
            let bad = |reason: String| Error::Selector {
                key: r.key.clone(),
                reason,
            };
            if r.key != NODE_NAME_FIELD {
                return Err(bad(format!(
                    "node field selectors support only {NODE_NAME_FIELD}"
                )));
            }
            if !matches!(r.operator.as_str(), "In" | "NotIn") || values(r).len() != 1 {
                return Err(bad(format!(
                    "node field selector operator {} needs In or NotIn with exactly one value",
                    r.operator
                )));
            }
            name.push(Op::compile(
                &r.key,
                &r.operator,
                values(r),
                false,
                &mut intern,
            )?);
        }
        Ok(Self { expressions, name })
    }

    /// The requirements on node labels.
    pub fn expressions(&self) -> &[Requirement<V>] {
        &self.expressions
    }

    /// The requirements on the node's name (`metadata.name`).
    pub fn name_requirements(&self) -> &[Op<V>] {
        &self.name
    }

    /// Whether a node whose labels are read by `get` and whose name is `name` matches;
    /// `as_int` reads a label value as an integer for `Gt` and `Lt`.
    pub fn matches_with<'l, T: ?Sized + 'l>(
        &self,
        get: impl Fn(&V) -> Option<&'l T>,
        name: &T,
        as_int: impl Fn(&T) -> Option<i64>,
    ) -> bool
    where
        V: PartialEq<T>,
    {
        if self.expressions.is_empty() && self.name.is_empty() {
            return false;
        }
        self.expressions
            .iter()
            .all(|r| r.op.matches_with(get(&r.key), &as_int))
            && self
                .name
                .iter()
                .all(|op| op.matches_with(Some(name), &as_int))
    }
}

impl NodeSelectorTerm<String> {
    /// Compiles a `NodeSelectorTerm`.
    pub fn compile(term: &Term) -> Result<Self, Error> {
        Self::compile_with(term, str::to_owned)
    }

    /// Whether a node with these labels and this name matches.
    pub fn matches(&self, labels: &BTreeMap<String, String>, name: &str) -> bool {
        self.matches_with(
            |k: &String| labels.get(k).map(String::as_str),
            name,
            |v: &str| v.parse().ok(),
        )
    }
}

/// A label selector (as JSON: `matchLabels`, `matchExpressions`) the way upstream prints
/// `metav1.LabelSelectorAsSelector(sel).String()`: requirements sorted by key, each as
/// `k=v`, `k in (a,b)`, `k notin (a)`, `k` or `!k` (values sorted), joined by commas.
/// A selector without requirements (or none at all) is `""`; a requirement with an
/// operator upstream does not know is left out (validation refuses those).
///
/// ```
/// use serde_json::json;
/// let sel = json!({"matchLabels": {"queue": "jobs", "app": "web"},
///     "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]},
///                          {"key": "canary", "operator": "DoesNotExist"}]});
/// assert_eq!(kcore_k8s::label_selector_string(&sel), "app=web,!canary,queue=jobs,tier in (a,b)");
/// assert_eq!(kcore_k8s::label_selector_string(&serde_json::Value::Null), "");
/// ```
pub fn label_selector_string(sel: &serde_json::Value) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    for (k, v) in sel["matchLabels"].as_object().into_iter().flatten() {
        reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default();
        let mut values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .collect();
        values.sort_unstable();
        let text = match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        };
        reqs.push((key.to_owned(), text));
    }
    reqs.sort();
    reqs.into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selector(v: serde_json::Value) -> Result<Selector, Error> {
        Selector::compile(&serde_json::from_value(v).unwrap())
    }

    /// Upstream's requirement semantics (labels/selector_test.go TestRequirementMatches
    /// and TestLabelSelectorAsSelector): each operator against present, absent and
    /// different values.
    #[test]
    fn operators_table() {
        let l = labels(&[("x", "foo"), ("n", "5"), ("bad", "a5")]);
        let cases: &[(&str, &[&str], &str, bool)] = &[
            ("In", &["foo"], "x", true),
            ("In", &["bar", "foo"], "x", true),
            ("In", &["bar"], "x", false),
            ("In", &["foo"], "missing", false),
            ("NotIn", &["foo"], "x", false),
            ("NotIn", &["bar"], "x", true),
            ("NotIn", &["foo"], "missing", true),
            ("Exists", &[], "x", true),
            ("Exists", &[], "missing", false),
            ("DoesNotExist", &[], "x", false),
            ("DoesNotExist", &[], "missing", true),
            ("Gt", &["4"], "n", true),
            ("Gt", &["5"], "n", false),
            ("Lt", &["6"], "n", true),
            ("Lt", &["5"], "n", false),
            ("Gt", &["1"], "missing", false),
            ("Gt", &["1"], "bad", false),
            ("Lt", &["100"], "bad", false),
        ];
        for &(op, values, key, want) in cases {
            let term: Term = serde_json::from_value(json!({"matchExpressions": [
                {"key": key, "operator": op, "values": values}]}))
            .unwrap();
            let t = NodeSelectorTerm::compile(&term).unwrap();
            assert_eq!(t.matches(&l, "node"), want, "{key} {op} {values:?}");
            // label selectors share the rules (without Gt/Lt)
            if !matches!(op, "Gt" | "Lt") {
                let s = selector(json!({"matchExpressions": [
                    {"key": key, "operator": op, "values": values}]}))
                .unwrap();
                assert_eq!(s.matches(&l), want, "label selector {key} {op} {values:?}");
            }
        }
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = selector(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["db"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ]
        }))
        .unwrap();
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("app", "web")], true),
            (&[("app", "web"), ("tier", "front")], true),
            (&[("app", "web"), ("tier", "db")], false),
            (&[("app", "web"), ("canary", "1")], false),
            (&[("app", "api")], false),
            (&[], false),
        ];
        for (l, want) in cases {
            assert_eq!(s.matches(&labels(l)), *want, "{l:?}");
        }
        // the empty selector matches everything
        assert!(selector(json!({})).unwrap().matches(&labels(&[])));
        assert!(Selector::default().matches(&labels(&[("a", "b")])));
        assert!(label_selector_is_empty(&LabelSelector::default()));
    }

    #[test]
    fn invalid_requirements_are_errors_as_upstream() {
        for bad in [
            json!({"key": "a", "operator": "In"}),
            json!({"key": "a", "operator": "In", "values": []}),
            json!({"key": "a", "operator": "NotIn", "values": []}),
            json!({"key": "a", "operator": "Exists", "values": ["x"]}),
            json!({"key": "a", "operator": "DoesNotExist", "values": ["x"]}),
            json!({"key": "a", "operator": "Gt", "values": ["1"]}), // not in label selectors
            json!({"key": "a", "operator": "in", "values": ["x"]}),
            json!({"key": "a", "operator": "Equals", "values": ["x"]}),
        ] {
            assert!(
                selector(json!({"matchExpressions": [bad.clone()]})).is_err(),
                "{bad}"
            );
            // a controller's reading: an invalid selector matches nothing
            let sel: LabelSelector =
                serde_json::from_value(json!({"matchExpressions": [bad.clone()]})).unwrap();
            assert!(!label_selector_matches(&sel, Some(&labels(&[("a", "x")]))));
        }
        for bad in [
            json!({"matchExpressions": [{"key": "n", "operator": "Gt", "values": ["1", "2"]}]}),
            json!({"matchExpressions": [{"key": "n", "operator": "Lt", "values": ["x"]}]}),
            json!({"matchExpressions": [{"key": "n", "operator": "Gt"}]}),
            json!({"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["a"]}]}),
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a", "b"]}]}),
            json!({"matchFields": [{"key": "metadata.name", "operator": "Exists"}]}),
        ] {
            let t: Term = serde_json::from_value(bad.clone()).unwrap();
            assert!(NodeSelectorTerm::compile(&t).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_selector_terms() {
        let t = |v| NodeSelectorTerm::compile(&serde_json::from_value(v).unwrap()).unwrap();
        let l8 = labels(&[("cores", "8")]);
        let l2 = labels(&[("cores", "2")]);
        let both = t(json!({
            "matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}],
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}],
        }));
        assert!(both.matches(&l8, "n1"));
        assert!(!both.matches(&l8, "n2"));
        assert!(!both.matches(&l2, "n1"));
        let not_n1 = t(json!({
            "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}],
        }));
        assert!(!not_n1.matches(&l8, "n1"));
        assert!(not_n1.matches(&l8, "n2"));
        // a term without requirements matches nothing
        assert!(!t(json!({})).matches(&l8, "n1"));
        assert!(!t(json!({"matchExpressions": [], "matchFields": []})).matches(&l8, "n1"));
    }

    #[test]
    fn set_selectors() {
        let sel = labels(&[("app", "web")]);
        assert!(set_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("x", "y")]))
        ));
        assert!(!set_matches(&sel, Some(&labels(&[("app", "db")]))));
        assert!(!set_matches(&sel, None));
        assert!(set_matches(&labels(&[]), None));
        assert!(Selector::from_set(&sel).matches(&labels(&[("app", "web")])));
        assert!(!Selector::from_set(&sel).matches(&labels(&[])));
    }

    #[test]
    fn interned_values_share_the_rules() {
        // A caller that interns strings to ids compiles and matches with its own ids.
        let mut ids: Vec<String> = Vec::new();
        let mut intern = |s: &str| match ids.iter().position(|x| x == s) {
            Some(i) => i,
            None => {
                ids.push(s.to_owned());
                ids.len() - 1
            }
        };
        let sel: LabelSelector =
            serde_json::from_value(json!({"matchLabels": {"app": "web"}})).unwrap();
        let s = Selector::compile_with(&sel, &mut intern).unwrap();
        let (app, web, db) = (intern("app"), intern("web"), intern("db"));
        let node = [(app, web)];
        let get = |k: &usize| node.iter().find(|e| e.0 == *k).map(|e| &e.1);
        assert!(s.matches_with(get, |_| None));
        let other = [(app, db)];
        assert!(!s.matches_with(
            |k: &usize| other.iter().find(|e| e.0 == *k).map(|e| &e.1),
            |_| None
        ));
    }
}
