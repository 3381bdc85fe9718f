//! Interned label sets, label selectors and node selectors.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sLabelSelector;

use crate::error::Error;
use crate::intern::{Interner, Sym};

/// A label set as sorted `(key, value)` id pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(pub(crate) Vec<(Sym, Sym)>);

impl Labels {
    pub(crate) fn from_map(map: Option<&BTreeMap<String, String>>, i: &mut Interner) -> Self {
        let mut v: Vec<(Sym, Sym)> = map
            .into_iter()
            .flatten()
            .map(|(k, v)| (i.intern(k), i.intern(v)))
            .collect();
        v.sort_unstable();
        Labels(v)
    }

    /// The value of label `key`.
    #[inline]
    pub fn get(&self, key: Sym) -> Option<Sym> {
        // Label sets are small: a linear scan beats a binary search.
        self.0.iter().find(|e| e.0 == key).map(|e| e.1)
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    In(Vec<Sym>),
    NotIn(Vec<Sym>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Requirement {
    pub(crate) key: Sym,
    pub(crate) op: Op,
}

impl Requirement {
    #[inline]
    fn matches_value(&self, value: Option<Sym>, i: Option<&Interner>) -> bool {
        match (&self.op, value) {
            (Op::In(vals), Some(v)) => vals.contains(&v),
            (Op::In(_), None) => false,
            (Op::NotIn(vals), Some(v)) => !vals.contains(&v),
            (Op::NotIn(_), None) => true,
            (Op::Exists, v) => v.is_some(),
            (Op::DoesNotExist, v) => v.is_none(),
            (Op::Gt(n), Some(v)) => i
                .and_then(|i| i.resolve(v).parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            (Op::Lt(n), Some(v)) => i
                .and_then(|i| i.resolve(v).parse::<i64>().ok())
                .is_some_and(|x| x < *n),
            (Op::Gt(_) | Op::Lt(_), None) => false,
        }
    }
}

/// A compiled `metav1.LabelSelector` (requirements ANDed).
///
/// `None` selectors in the API match nothing; an empty selector `{}` matches
/// everything — callers decide which applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub(crate) reqs: Vec<Requirement>,
}

impl LabelSelector {
    pub(crate) fn compile(sel: &K8sLabelSelector, i: &mut Interner) -> Result<Self, Error> {
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement {
                key: i.intern(k),
                op: Op::In(vec![i.intern(v)]),
            });
        }
        for e in sel.match_expressions.iter().flatten() {
            let vals = || -> Vec<Sym> { Vec::new() };
            let mut values = vals();
            for v in e.values.iter().flatten() {
                values.push(i.intern(v));
            }
            let op = match e.operator.as_str() {
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(Error::Selector {
                        reason: format!("unknown label selector operator {other:?}"),
                    })
                }
            };
            reqs.push(Requirement {
                key: i.intern(&e.key),
                op,
            });
        }
        Ok(LabelSelector { reqs })
    }

    /// Adds `key In (value)` (used for matchLabelKeys).
    pub(crate) fn push_in(&mut self, key: Sym, value: Sym) {
        self.reqs.push(Requirement {
            key,
            op: Op::In(vec![value]),
        });
    }

    /// Adds `key NotIn (value)` (used for mismatchLabelKeys).
    pub(crate) fn push_not_in(&mut self, key: Sym, value: Sym) {
        self.reqs.push(Requirement {
            key,
            op: Op::NotIn(vec![value]),
        });
    }

    /// True when every requirement holds for `labels`.
    #[inline]
    pub fn matches(&self, labels: &Labels) -> bool {
        self.reqs
            .iter()
            .all(|r| r.matches_value(labels.get(r.key), None))
    }

    /// True when the selector has no requirements (matches everything).
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }
}

/// One compiled `NodeSelectorTerm`: expressions on labels and on fields
/// (`metadata.name`), ANDed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeSelectorTerm {
    pub(crate) exprs: Vec<Requirement>,
    /// `metadata.name` requirements (the only field Kubernetes supports).
    pub(crate) name_fields: Vec<Requirement>,
}

impl NodeSelectorTerm {
    pub(crate) fn compile(t: &core::NodeSelectorTerm, i: &mut Interner) -> Result<Self, Error> {
        let compile_req = |r: &core::NodeSelectorRequirement, i: &mut Interner| {
            let values: Vec<Sym> = r.values.iter().flatten().map(|v| i.intern(v)).collect();
            let num = |i: &Interner| -> Result<i64, Error> {
                let [v] = values.as_slice() else {
                    return Err(Error::Selector {
                        reason: format!("operator {} needs exactly one value", r.operator),
                    });
                };
                i.resolve(*v).parse::<i64>().map_err(|_| Error::Selector {
                    reason: format!("operator {} needs an integer value", r.operator),
                })
            };
            let op = match r.operator.as_str() {
                "In" => Op::In(values.clone()),
                "NotIn" => Op::NotIn(values.clone()),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                "Gt" => Op::Gt(num(i)?),
                "Lt" => Op::Lt(num(i)?),
                other => {
                    return Err(Error::Selector {
                        reason: format!("unknown node selector operator {other:?}"),
                    })
                }
            };
            Ok(Requirement {
                key: i.intern(&r.key),
                op,
            })
        };
        let mut exprs = Vec::new();
        for r in t.match_expressions.iter().flatten() {
            exprs.push(compile_req(r, i)?);
        }
        let mut name_fields = Vec::new();
        for r in t.match_fields.iter().flatten() {
            if r.key != "metadata.name" {
                return Err(Error::Selector {
                    reason: format!("unsupported node field selector {:?}", r.key),
                });
            }
            name_fields.push(compile_req(r, i)?);
        }
        Ok(NodeSelectorTerm { exprs, name_fields })
    }

    /// Kubernetes semantics: a term with no requirements matches nothing.
    pub(crate) fn matches(&self, labels: &Labels, name: Sym, i: &Interner) -> bool {
        if self.exprs.is_empty() && self.name_fields.is_empty() {
            return false;
        }
        self.exprs
            .iter()
            .all(|r| r.matches_value(labels.get(r.key), Some(i)))
            && self
                .name_fields
                .iter()
                .all(|r| r.matches_value(Some(name), Some(i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(i: &mut Interner, kv: &[(&str, &str)]) -> Labels {
        let m: BTreeMap<String, String> = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Labels::from_map(Some(&m), i)
    }

    #[test]
    fn label_selector_operators() {
        let mut i = Interner::default();
        let sel = K8sLabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["db".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        let s = LabelSelector::compile(&sel, &mut i).unwrap();
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("app", "web")], true),
            (&[("app", "web"), ("tier", "front")], true),
            (&[("app", "web"), ("tier", "db")], false),
            (&[("app", "web"), ("canary", "1")], false),
            (&[("app", "api")], false),
            (&[], false),
        ];
        for (l, want) in cases {
            let l = labels(&mut i, l);
            assert_eq!(s.matches(&l), *want, "{l:?}");
        }
        assert!(LabelSelector::default().matches(&Labels::default()));
    }

    #[test]
    fn node_selector_term_gt_lt_and_fields() {
        let mut i = Interner::default();
        let t = core::NodeSelectorTerm {
            match_expressions: Some(vec![core::NodeSelectorRequirement {
                key: "cores".into(),
                operator: "Gt".into(),
                values: Some(vec!["4".into()]),
            }]),
            match_fields: Some(vec![core::NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec!["n1".into()]),
            }]),
        };
        let t = NodeSelectorTerm::compile(&t, &mut i).unwrap();
        let n1 = i.intern("n1");
        let n2 = i.intern("n2");
        let l8 = labels(&mut i, &[("cores", "8")]);
        let l2 = labels(&mut i, &[("cores", "2")]);
        assert!(t.matches(&l8, n1, &i));
        assert!(!t.matches(&l8, n2, &i));
        assert!(!t.matches(&l2, n1, &i));
        let empty = NodeSelectorTerm {
            exprs: vec![],
            name_fields: vec![],
        };
        assert!(!empty.matches(&l8, n1, &i));
    }
}
