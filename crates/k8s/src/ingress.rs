//! Which Ingresses kcore's Ingress controller serves, and the TLS Secrets they name: the
//! node agent's proxy serves by this rule, and the API server's Node authorizer lets the
//! nodes read exactly the Secrets it yields.

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

/// The `spec.controller` of the IngressClasses kcore's Ingress proxy serves.
pub const INGRESS_CONTROLLER: &str = "kcore.dev/ingress";

/// The legacy annotation naming an Ingress' class.
pub const INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// The class an Ingress names: `spec.ingressClassName`, else the legacy
/// `kubernetes.io/ingress.class` annotation (upstream's precedence).
pub fn ingress_class(ing: &Ingress) -> Option<&str> {
    ing.spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ing.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(INGRESS_CLASS_ANNOTATION))
                .map(String::as_str)
        })
}

/// Whether kcore's controller ([`INGRESS_CONTROLLER`]) serves an Ingress of `class`
/// among `classes`: one without a class is served (the DefaultIngressClass admission
/// already gave it the default class if there is one); one naming a class is served
/// when that class exists and names kcore's controller.
pub fn class_served<'a>(
    class: Option<&str>,
    classes: impl IntoIterator<Item = &'a IngressClass>,
) -> bool {
    let Some(class) = class else {
        return true;
    };
    classes.into_iter().any(|c| {
        c.metadata.name.as_deref() == Some(class)
            && c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(INGRESS_CONTROLLER)
    })
}

/// Whether kcore's controller serves `ing`, given the cluster's IngressClasses.
pub fn ingress_served<'a>(
    ing: &Ingress,
    classes: impl IntoIterator<Item = &'a IngressClass>,
) -> bool {
    class_served(ingress_class(ing), classes)
}

/// The Secrets `ing`'s `spec.tls` entries name (`secretName`, empty ones left out), in
/// the Ingress' namespace, in order, without repeats.
pub fn ingress_tls_secrets(ing: &Ingress) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for t in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
        if let Some(n) = t.secret_name.as_deref().filter(|n| !n.is_empty()) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ing(v: serde_json::Value) -> Ingress {
        serde_json::from_value(v).expect("ingress")
    }

    #[test]
    fn classes_decide_which_ingresses_are_served() {
        let class = |name: &str, controller: &str| -> IngressClass {
            serde_json::from_value(
                json!({"metadata": {"name": name}, "spec": {"controller": controller}}),
            )
            .expect("class")
        };
        let classes = [
            class("kcore", INGRESS_CONTROLLER),
            class("nginx", "k8s.io/ingress-nginx"),
        ];
        let with = |spec: serde_json::Value, ann: serde_json::Value| {
            ing(
                json!({"metadata": {"name": "i", "namespace": "d", "annotations": ann}, "spec": spec}),
            )
        };
        for (spec, ann, served) in [
            (json!({"ingressClassName": "kcore"}), json!({}), true),
            (json!({"ingressClassName": "nginx"}), json!({}), false),
            (json!({"ingressClassName": "gone"}), json!({}), false),
            (json!({}), json!({}), true),
            (json!({}), json!({INGRESS_CLASS_ANNOTATION: "kcore"}), true),
            (json!({}), json!({INGRESS_CLASS_ANNOTATION: "nginx"}), false),
            // the field wins over the annotation
            (
                json!({"ingressClassName": "nginx"}),
                json!({INGRESS_CLASS_ANNOTATION: "kcore"}),
                false,
            ),
        ] {
            let i = with(spec.clone(), ann.clone());
            assert_eq!(ingress_served(&i, &classes), served, "{spec} {ann}");
        }
        assert!(!class_served(Some("kcore"), &[]));
        assert!(class_served(None, &[]));
    }

    #[test]
    fn tls_secrets_are_named_once_without_empty_names() {
        let i = ing(json!({"metadata": {"name": "i"}, "spec": {"tls": [
            {"hosts": ["a"], "secretName": "a-tls"},
            {"hosts": ["b"], "secretName": ""},
            {"hosts": ["c"]},
            {"hosts": ["d"], "secretName": "a-tls"},
            {"secretName": "fallback"}
        ]}}));
        assert_eq!(ingress_tls_secrets(&i), ["a-tls", "fallback"]);
        assert!(ingress_tls_secrets(&ing(json!({"metadata": {"name": "i"}}))).is_empty());
    }
}
