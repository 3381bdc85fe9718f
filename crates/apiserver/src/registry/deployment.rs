//! Deployments (apps/v1): upstream's defaults and validation (the template's pod spec,
//! the rolling-update parameters, a selector that never changes); the status is the
//! controller's.

use serde_json::{json, Value};

use super::Strategy;
use crate::defaults::{obj_mut, set_default, template};
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, ALL};
use crate::table::{age, col, containers_images, num, selector_str};
use crate::validate;

/// The served `Deployment` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::apps::v1::Deployment,
    "deployments",
    true,
    &["deploy"],
    ALL,
    &[Sub::Status, Sub::Scale],
    false,
    &DeploymentStrategy
);

/// The `Deployment` strategy.
pub(crate) struct DeploymentStrategy;

impl Strategy for DeploymentStrategy {
    fn kind(&self) -> &'static str {
        "Deployment"
    }

    fn defaults(&self, obj: &mut Value) {
        template(obj);
        let spec = obj_mut(obj, "spec");
        set_default(spec, "replicas", json!(1));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "progressDeadlineSeconds", json!(600));
        let strategy = obj_mut(spec, "strategy");
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy["type"] == "RollingUpdate" {
            let ru = obj_mut(strategy, "rollingUpdate");
            set_default(ru, "maxUnavailable", json!("25%"));
            set_default(ru, "maxSurge", json!("25%"));
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj.as_object_mut().map(|o| o.remove("status"));
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate::workload(obj, "Deployment", validate::Template::PodSpec, causes);
        let spec = &obj["spec"];
        let st = &spec["strategy"];
        validate::one_of(
            &st["type"],
            "spec.strategy.type",
            &["Recreate", "RollingUpdate"],
            causes,
        );
        let ru = &st["rollingUpdate"];
        if st["type"] == "Recreate" && !ru.is_null() {
            causes.push(Cause::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            ));
        }
        let p = "spec.strategy.rollingUpdate";
        validate::int_or_percent(
            &ru["maxUnavailable"],
            &format!("{p}.maxUnavailable"),
            causes,
        );
        validate::int_or_percent(&ru["maxSurge"], &format!("{p}.maxSurge"), causes);
        if !ru.is_null()
            && validate::is_zero_or_percent(&ru["maxUnavailable"])
            && validate::is_zero_or_percent(&ru["maxSurge"])
        {
            causes.push(Cause::invalid(
                format!("{p}.maxUnavailable"),
                &ru["maxUnavailable"],
                "may not be 0 when `maxSurge` is 0",
            ));
        }
        if let Some(pd) = spec["progressDeadlineSeconds"].as_i64() {
            if pd <= spec["minReadySeconds"].as_i64().unwrap_or(0) {
                causes.push(Cause::invalid(
                    "spec.progressDeadlineSeconds",
                    &spec["progressDeadlineSeconds"],
                    "must be greater than minReadySeconds",
                ));
            }
        }
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        validate::immutable(
            &new["spec"]["selector"],
            &old["spec"]["selector"],
            "spec.selector",
            causes,
        );
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        let i = "integer";
        vec![
            col("Name", s, 0),
            col("Ready", s, 0),
            col("Up-to-date", i, 0),
            col("Available", i, 0),
            col("Age", s, 0),
            col("Containers", s, 1),
            col("Images", s, 1),
            col("Selector", s, 1),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let name = json!(o["metadata"]["name"]);
        let a = json!(age(&o["metadata"]["creationTimestamp"]));
        let st = &o["status"];
        let spec = &o["spec"];
        let (c, i) = containers_images(&spec["template"]["spec"]);
        vec![
            name,
            json!(format!(
                "{}/{}",
                num(&st["readyReplicas"]),
                num(&spec["replicas"])
            )),
            json!(num(&st["updatedReplicas"])),
            json!(num(&st["availableReplicas"])),
            a,
            json!(c),
            json!(i),
            json!(selector_str(&spec["selector"])),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults_match_upstream() {
        let mut d = json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "nginx:1.27"}, {"name": "d", "image": "busybox", "ports": [{"containerPort": 80}]}]}}}});
        DeploymentStrategy.defaults(&mut d);
        let s = &d["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(s["progressDeadlineSeconds"], 600);
        assert_eq!(
            s["strategy"]["rollingUpdate"],
            json!({"maxUnavailable": "25%", "maxSurge": "25%"})
        );
        let ps = &s["template"]["spec"];
        assert_eq!(ps["restartPolicy"], "Always");
        assert_eq!(ps["dnsPolicy"], "ClusterFirst");
        assert_eq!(ps["terminationGracePeriodSeconds"], 30);
        assert_eq!(ps["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(ps["containers"][1]["imagePullPolicy"], "Always");
        assert_eq!(ps["containers"][1]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn causes_name_each_field() {
        let d = json!({"metadata": {"name": "Bad_Name", "labels": {"ok": "not ok!"}},
            "spec": {"replicas": -1, "selector": {"matchLabels": {"app": "x"}},
                "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c"}]}}}});
        let fields: Vec<String> = super::super::validate(&DeploymentStrategy, &d, None)
            .into_iter()
            .map(|c| c.field)
            .collect();
        for want in [
            "metadata.name",
            "metadata.labels",
            "spec.replicas",
            "spec.template.metadata.labels",
            "spec.template.spec.containers[0].image",
        ] {
            assert!(
                fields.iter().any(|f| f == want),
                "missing {want} in {fields:?}"
            );
        }
    }
}
