//! Interned label sets, label selectors and node selectors.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sLabelSelector;

use kcore_k8s::{Op, Requirement, Selector};

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

    /// The value of label `key`, by reference.
    #[inline]
    fn get_ref(&self, key: Sym) -> Option<&Sym> {
        self.0.iter().find(|e| e.0 == key).map(|e| &e.1)
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

/// A compiled `metav1.LabelSelector` (requirements ANDed), with kcore-k8s's
/// rules over interned ids.
///
/// `None` selectors in the API match nothing; an empty selector `{}` matches
/// everything — callers decide which applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Selector<Sym>);

impl LabelSelector {
    pub(crate) fn compile(sel: &K8sLabelSelector, i: &mut Interner) -> Result<Self, Error> {
        Selector::compile_with(sel, |s| i.intern(s))
            .map(LabelSelector)
            .map_err(|source| Error::Selector { source })
    }

    /// Adds `key In (value)` (used for matchLabelKeys).
    pub(crate) fn push_in(&mut self, key: Sym, value: Sym) {
        self.0.push(Requirement {
            key,
            op: Op::In(vec![value]),
        });
    }

    /// Adds `key NotIn (value)` (used for mismatchLabelKeys).
    pub(crate) fn push_not_in(&mut self, key: Sym, value: Sym) {
        self.0.push(Requirement {
            key,
            op: Op::NotIn(vec![value]),
        });
    }

    /// True when every requirement holds for `labels`.
    #[inline]
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.matches_with(|k| labels.get_ref(*k), |_| None)
    }

    /// True when the selector has no requirements (matches everything).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One compiled `NodeSelectorTerm`: expressions on labels and on the node's
/// name (`metadata.name`), ANDed, with kcore-k8s's rules over interned ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeSelectorTerm(kcore_k8s::NodeSelectorTerm<Sym>);

impl NodeSelectorTerm {
    pub(crate) fn compile(t: &core::NodeSelectorTerm, i: &mut Interner) -> Result<Self, Error> {
        kcore_k8s::NodeSelectorTerm::compile_with(t, |s| i.intern(s))
            .map(NodeSelectorTerm)
            .map_err(|source| Error::Selector { source })
    }

    /// The node names an `In` requirement on `metadata.name` pins, if any.
    pub(crate) fn pinned_names(&self) -> Option<&[Sym]> {
        self.0.name_requirements().iter().find_map(|op| match op {
            Op::In(v) => Some(v.as_slice()),
            _ => None,
        })
    }

    /// Kubernetes semantics: a term with no requirements matches nothing.
    pub(crate) fn matches(&self, labels: &Labels, name: Sym, i: &Interner) -> bool {
        self.0.matches_with(
            |k| labels.get_ref(*k),
            &name,
            |v| i.resolve(*v).parse::<i64>().ok(),
        )
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
        let empty = NodeSelectorTerm::compile(&core::NodeSelectorTerm::default(), &mut i).unwrap();
        assert!(!empty.matches(&l8, n1, &i));
        assert_eq!(t.pinned_names(), Some(&[n1][..]));
    }
}
