//! The review kinds (`authentication.k8s.io/v1` SelfSubjectReview and TokenReview,
//! `authorization.k8s.io/v1` SelfSubjectAccessReview, SubjectAccessReview,
//! LocalSubjectAccessReview, SelfSubjectRulesReview): served for `create` only and
//! never stored, as upstream. They are listed here so discovery and OpenAPI name them
//! (`kubectl create -f` maps their kinds); `crate::auth` answers the requests.

use super::Strategy;
use crate::resources::{normalize, Names, ResourceInfo, StrategyRef};
use std::borrow::Cow;

/// A review resource of type `T`.
const fn review<T>(plural: &'static str, kind: &'static str, namespaced: bool) -> ResourceInfo
where
    T: k8s_openapi::Resource + serde::de::DeserializeOwned + serde::Serialize,
{
    ResourceInfo {
        group: Cow::Borrowed(T::GROUP),
        version: Cow::Borrowed(T::VERSION),
        kind: Cow::Borrowed(kind),
        list_kind: Cow::Borrowed(""),
        plural: Cow::Borrowed(plural),
        singular: None,
        namespaced,
        short_names: Names::Static(&[]),
        categories: Names::Static(&[]),
        subresources: Cow::Borrowed(&[]),
        create_on_update: false,
        normalize: normalize::<T>,
        strategy: StrategyRef::Static(&ReviewStrategy),
    }
}

use k8s_openapi::api::authentication::v1 as authn;
use k8s_openapi::api::authorization::v1 as authz;

/// `selfsubjectreviews` (`kubectl auth whoami`).
pub(crate) const SELF_SUBJECT_REVIEW: ResourceInfo =
    review::<authn::SelfSubjectReview>("selfsubjectreviews", "SelfSubjectReview", false);
/// `tokenreviews`.
pub(crate) const TOKEN_REVIEW: ResourceInfo =
    review::<authn::TokenReview>("tokenreviews", "TokenReview", false);
/// `selfsubjectaccessreviews` (`kubectl auth can-i`).
pub(crate) const SELF_SUBJECT_ACCESS_REVIEW: ResourceInfo = review::<authz::SelfSubjectAccessReview>(
    "selfsubjectaccessreviews",
    "SelfSubjectAccessReview",
    false,
);
/// `subjectaccessreviews`.
pub(crate) const SUBJECT_ACCESS_REVIEW: ResourceInfo =
    review::<authz::SubjectAccessReview>("subjectaccessreviews", "SubjectAccessReview", false);
/// `localsubjectaccessreviews`.
pub(crate) const LOCAL_SUBJECT_ACCESS_REVIEW: ResourceInfo =
    review::<authz::LocalSubjectAccessReview>(
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        true,
    );
/// `selfsubjectrulesreviews` (`kubectl auth can-i --list`).
pub(crate) const SELF_SUBJECT_RULES_REVIEW: ResourceInfo = review::<authz::SelfSubjectRulesReview>(
    "selfsubjectrulesreviews",
    "SelfSubjectRulesReview",
    false,
);

/// The strategy of the review kinds: `create` only.
pub(crate) struct ReviewStrategy;

impl Strategy for ReviewStrategy {
    fn kind(&self) -> &'static str {
        ""
    }

    fn verbs(&self) -> Option<&'static [&'static str]> {
        Some(&["create"])
    }
}
