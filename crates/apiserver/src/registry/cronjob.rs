//! CronJobs (batch/v1), as upstream's `pkg/registry/batch/cronjob/strategy.go`: defaults
//! (concurrencyPolicy Allow, not suspended, history limits 3 and 1, the job template's
//! defaults), validation (a name of at most 52 characters so the Jobs' names fit, a
//! parseable schedule without `TZ=`, a time zone the host knows, the job template's spec
//! as a Job's) and the Table columns; the status is the controller's.

use serde_json::{json, Value};

use super::job::{default_job_spec, validate_job_spec};
use super::Strategy;
use crate::defaults::{obj_mut, set_default};
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, ALL};
use crate::table::{age, col, containers_images, selector_str};
use crate::validate;

/// The served `CronJob` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::batch::v1::CronJob,
    "cronjobs",
    true,
    &["cj"],
    ALL,
    &[Sub::Status],
    false,
    &CronJobStrategy
);

/// Upstream's limit: the Job's name adds `-` and up to 11 digits of scheduled minutes.
const MAX_NAME: usize = 52;

/// The `CronJob` strategy.
pub(crate) struct CronJobStrategy;

impl Strategy for CronJobStrategy {
    fn kind(&self) -> &'static str {
        "CronJob"
    }

    fn defaults(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        set_default(spec, "concurrencyPolicy", json!("Allow"));
        set_default(spec, "suspend", json!(false));
        set_default(spec, "successfulJobsHistoryLimit", json!(3));
        set_default(spec, "failedJobsHistoryLimit", json!(1));
        let jt = obj_mut(spec, "jobTemplate");
        default_job_spec(obj_mut(jt, "spec"));
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj.as_object_mut().map(|o| o.remove("status"));
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let name = &obj["metadata"]["name"];
        if name.as_str().is_some_and(|n| n.len() > MAX_NAME) {
            causes.push(Cause::invalid(
                "metadata.name",
                name,
                "must be no more than 52 characters",
            ));
        }
        let spec = &obj["spec"];
        match spec["schedule"].as_str() {
            None | Some("") => causes.push(Cause::required("spec.schedule")),
            Some(s) => {
                if let Err(kcore_k8s::Error::Cron { reason, .. }) =
                    kcore_k8s::CronSchedule::parse(s)
                {
                    causes.push(Cause::invalid("spec.schedule", &spec["schedule"], &reason));
                }
            }
        }
        if let Some(tz) = spec["timeZone"].as_str() {
            if let Err(e) = kcore_k8s::time_zone(Some(tz)) {
                causes.push(Cause::invalid(
                    "spec.timeZone",
                    &spec["timeZone"],
                    &e.to_string(),
                ));
            }
        }
        match &spec["concurrencyPolicy"] {
            Value::Null => causes.push(Cause::required("spec.concurrencyPolicy")),
            v => validate::one_of(
                v,
                "spec.concurrencyPolicy",
                &["Allow", "Forbid", "Replace"],
                causes,
            ),
        }
        for f in [
            "startingDeadlineSeconds",
            "successfulJobsHistoryLimit",
            "failedJobsHistoryLimit",
        ] {
            validate::non_negative(&spec[f], &format!("spec.{f}"), causes);
        }
        validate_job_spec(
            &spec["jobTemplate"]["spec"],
            "spec.jobTemplate.spec",
            causes,
        );
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("Schedule", s, 0),
            col("Timezone", s, 0),
            col("Suspend", "boolean", 0),
            col("Active", "integer", 0),
            col("Last Schedule", s, 0),
            col("Age", s, 0),
            col("Containers", s, 1),
            col("Images", s, 1),
            col("Selector", s, 1),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let spec = &o["spec"];
        let st = &o["status"];
        let suspend = match spec["suspend"].as_bool() {
            None => "<unset>",
            Some(true) => "True",
            Some(false) => "False",
        };
        let last = if st["lastScheduleTime"].is_null() {
            "<none>".to_owned()
        } else {
            age(&st["lastScheduleTime"])
        };
        let js = &spec["jobTemplate"]["spec"];
        let (c, i) = containers_images(&js["template"]["spec"]);
        vec![
            json!(o["metadata"]["name"]),
            json!(spec["schedule"]),
            json!(spec["timeZone"].as_str().unwrap_or("<none>")),
            json!(suspend),
            json!(st["active"].as_array().map_or(0, Vec::len)),
            json!(last),
            json!(age(&o["metadata"]["creationTimestamp"])),
            json!(c),
            json!(i),
            json!(selector_str(&js["selector"])),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cj(name: &str, spec: Value) -> Value {
        let mut c = json!({"kind": "CronJob", "metadata": {"name": name}, "spec": spec});
        CronJobStrategy.prepare_for_create(&mut c);
        CronJobStrategy.defaults(&mut c);
        c
    }

    fn tpl() -> Value {
        json!({"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
            "containers": [{"name": "c", "image": "busybox:1"}]}}}})
    }

    #[test]
    fn defaults_and_validation() {
        let c = cj(
            "hello",
            json!({"schedule": "*/1 * * * *", "jobTemplate": tpl()}),
        );
        let s = &c["spec"];
        assert_eq!(s["concurrencyPolicy"], "Allow");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["successfulJobsHistoryLimit"], 3);
        assert_eq!(s["failedJobsHistoryLimit"], 1);
        assert_eq!(s["jobTemplate"]["spec"]["backoffLimit"], 6);
        let causes = super::super::validate(&CronJobStrategy, &c, None);
        assert!(causes.is_empty(), "{causes:?}");

        for (name, spec, want) in [
            ("x", json!({"schedule": "61 * * * *", "jobTemplate": tpl()}),
                "spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61"),
            ("x", json!({"schedule": "TZ=UTC 0 * * * *", "jobTemplate": tpl()}),
                "spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
            ("x", json!({"schedule": "@hourly", "timeZone": "Nowhere/Land", "jobTemplate": tpl()}),
                "spec.timeZone: Invalid value: \"Nowhere/Land\": unknown time zone Nowhere/Land"),
            ("x", json!({"schedule": "@hourly", "concurrencyPolicy": "Sometimes", "jobTemplate": tpl()}),
                "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\""),
            (&"a".repeat(53), json!({"schedule": "@hourly", "jobTemplate": tpl()}),
                "metadata.name: Invalid value: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": must be no more than 52 characters"),
            ("x", json!({"schedule": "@hourly", "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}}),
                "spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""),
        ] {
            let c = cj(name, spec);
            let got: Vec<String> = super::super::validate(&CronJobStrategy, &c, None)
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect();
            assert!(got.iter().any(|g| g == want), "want {want}, got {got:?}");
        }
        let ok = cj(
            "x",
            json!({"schedule": "0 9 * * *", "timeZone": "Europe/Berlin", "jobTemplate": tpl()}),
        );
        assert!(super::super::validate(&CronJobStrategy, &ok, None).is_empty());
    }

    #[test]
    fn table_cells_as_upstream() {
        let mut c = cj(
            "hello",
            json!({"schedule": "@hourly", "jobTemplate": tpl()}),
        );
        c["status"] = json!({"active": [{"name": "hello-1"}]});
        let cells = CronJobStrategy.table_cells(&c);
        assert_eq!(cells[1], "@hourly");
        assert_eq!(cells[2], "<none>");
        assert_eq!(cells[3], "False");
        assert_eq!(cells[4], 1);
        assert_eq!(cells[5], "<none>");
        assert_eq!(cells[9], "<none>");
    }
}
