//! ValidatingWebhookConfigurations (admissionregistration.k8s.io/v1): the webhooks the
//! admission chain (`crate::admission`) calls, in parallel, after an object is mutated,
//! defaulted and validated, to admit or deny it.

use super::webhookconfiguration::WebhookConfigStrategy;
use crate::resources::{res, ResourceInfo};

/// The served `ValidatingWebhookConfiguration` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
    "validatingwebhookconfigurations",
    false,
    &[],
    &["api-extensions"],
    &[],
    false,
    &WebhookConfigStrategy {
        kind: "ValidatingWebhookConfiguration",
        mutating: false,
    }
);
