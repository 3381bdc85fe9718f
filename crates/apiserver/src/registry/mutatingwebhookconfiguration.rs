//! MutatingWebhookConfigurations (admissionregistration.k8s.io/v1): the webhooks the
//! admission chain (`crate::admission`) calls first, in name order, to change objects.

use super::webhookconfiguration::WebhookConfigStrategy;
use crate::resources::{res, ResourceInfo};

/// The served `MutatingWebhookConfiguration` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
    "mutatingwebhookconfigurations",
    false,
    &[],
    &["api-extensions"],
    &[],
    false,
    &WebhookConfigStrategy {
        kind: "MutatingWebhookConfiguration",
        mutating: true,
    }
);
