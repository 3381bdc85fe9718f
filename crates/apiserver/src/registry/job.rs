//! Jobs (batch/v1), as upstream's `pkg/registry/batch/job/strategy.go`: defaults
//! (parallelism and completions 1, backoffLimit 6, NonIndexed, not suspended, the pod
//! replacement policy), the generated selector and pod labels
//! (`batch.kubernetes.io/controller-uid`, `batch.kubernetes.io/job-name` and their legacy
//! forms) unless `manualSelector` is set, validation of the job spec (completion modes and
//! their limits, the pod failure and success policies, per-index backoff) and of updates
//! (selector, completion mode and policies fixed; completions only in tandem with
//! parallelism for Indexed Jobs; the template only while a never-started Job is
//! suspended, and then only its scheduling directives, labels and annotations); the
//! status is the controller's.

use serde_json::{json, Value};

use super::Strategy;
use crate::defaults::{obj_mut, set_default, template};
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, Sub, ALL};
use crate::table::{age, col, containers_images, human_duration, num, selector_str};
use crate::validate;

/// The served `Job` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::batch::v1::Job,
    "jobs",
    true,
    &[],
    ALL,
    &[Sub::Status],
    false,
    &JobStrategy
);

/// The label (and selector key) carrying the Job's UID.
pub(crate) const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The label carrying the Job's name.
pub(crate) const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// The legacy form of [`CONTROLLER_UID`], still set on pods.
pub(crate) const LEGACY_CONTROLLER_UID: &str = "controller-uid";
/// The legacy form of [`JOB_NAME`], still set on pods.
pub(crate) const LEGACY_JOB_NAME: &str = "job-name";

/// Upstream's limit on completions, parallelism and maxFailedIndexes of Indexed Jobs.
const MAX_INDEXED: i64 = 100_000;
/// Upstream's limit on podFailurePolicy rules and their pod condition patterns.
const MAX_RULES: usize = 20;
/// Upstream's limit on exit code values of one rule.
const MAX_EXIT_CODES: usize = 255;

/// The `Job` strategy.
pub(crate) struct JobStrategy;

/// Upstream's `SetDefaults_Job` on a job spec (also a CronJob's job template).
pub(crate) fn default_job_spec(spec: &mut Value) {
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        spec["completions"] = json!(1);
    }
    set_default(spec, "parallelism", json!(1));
    let limit = if spec["backoffLimitPerIndex"].is_null() {
        json!(6)
    } else {
        json!(i32::MAX)
    };
    set_default(spec, "backoffLimit", limit);
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "manualSelector", json!(false));
    let replacement = if spec["podFailurePolicy"].is_null() {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    set_default(spec, "podReplacementPolicy", json!(replacement));
    let rules = spec
        .get_mut("podFailurePolicy")
        .and_then(|p| p.get_mut("rules"))
        .and_then(Value::as_array_mut);
    for rule in rules.into_iter().flatten() {
        let patterns = rule
            .get_mut("onPodConditions")
            .and_then(Value::as_array_mut);
        for pattern in patterns.into_iter().flatten() {
            set_default(pattern, "status", json!("True"));
        }
    }
    let tpl = obj_mut(spec, "template");
    crate::defaults::pod_spec(obj_mut(tpl, "spec"));
}

impl Strategy for JobStrategy {
    fn kind(&self) -> &'static str {
        "Job"
    }

    fn defaults(&self, obj: &mut Value) {
        template(obj);
        default_job_spec(obj_mut(obj, "spec"));
        let tpl_labels = obj["spec"]["template"]["metadata"]["labels"].clone();
        if tpl_labels.as_object().is_some_and(|l| !l.is_empty())
            && obj["metadata"]["labels"]
                .as_object()
                .is_none_or(|l| l.is_empty())
        {
            obj["metadata"]["labels"] = tpl_labels;
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj.as_object_mut().map(|o| o.remove("status"));
        if obj["spec"]["manualSelector"] == true {
            return;
        }
        // Upstream's generateSelector: the pods carry the Job's name and UID, and the
        // selector picks the UID.
        let name = obj["metadata"]["name"].clone();
        let uid = obj["metadata"]["uid"].clone();
        let spec = obj_mut(obj, "spec");
        let tpl = obj_mut(spec, "template");
        let labels = obj_mut(obj_mut(tpl, "metadata"), "labels");
        set_default(labels, LEGACY_JOB_NAME, name.clone());
        set_default(labels, JOB_NAME, name);
        set_default(labels, LEGACY_CONTROLLER_UID, uid.clone());
        set_default(labels, CONTROLLER_UID, uid.clone());
        let sel = obj_mut(spec, "selector");
        set_default(obj_mut(sel, "matchLabels"), CONTROLLER_UID, uid);
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        validate_job_spec(spec, "spec", causes);
        let sel = &spec["selector"];
        let empty = sel["matchLabels"].as_object().is_none_or(|m| m.is_empty())
            && sel["matchExpressions"]
                .as_array()
                .is_none_or(|m| m.is_empty());
        if empty {
            causes.push(Cause::required("spec.selector"));
        } else {
            validate::label_selector(sel, "spec.selector", causes);
            let tpl =
                json!({"metadata": {"labels": spec["template"]["metadata"]["labels"].clone()}});
            match crate::selectors::LabelSelector::from_object(sel) {
                Err(why) => causes.push(Cause::invalid("spec.selector", sel, &why)),
                Ok(s) if !s.matches(&tpl) => causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    &spec["template"]["metadata"]["labels"],
                    "`selector` does not match template `labels`",
                )),
                Ok(_) => {}
            }
        }
        if spec["manualSelector"] != true {
            // Upstream's validateGeneratedSelector.
            let uid = &obj["metadata"]["uid"];
            if !uid.is_null() {
                let tl = &spec["template"]["metadata"]["labels"][CONTROLLER_UID];
                if tl != uid {
                    causes.push(Cause::invalid(
                        format!("spec.template.metadata.labels[{CONTROLLER_UID}]"),
                        tl,
                        &format!("must be '{}'", uid.as_str().unwrap_or_default()),
                    ));
                }
                let sl = &sel["matchLabels"][CONTROLLER_UID];
                if sl != uid {
                    causes.push(Cause::invalid(
                        format!("spec.selector.matchLabels[{CONTROLLER_UID}]"),
                        sl,
                        &format!("must be '{}'", uid.as_str().unwrap_or_default()),
                    ));
                }
            }
        }
        for f in ["active", "succeeded", "failed", "ready", "terminating"] {
            validate::non_negative(&obj["status"][f], &format!("status.{f}"), causes);
        }
    }

    fn validate_update(&self, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
        validate_status_update(new, old, causes);
        let (ns, os) = (&new["spec"], &old["spec"]);
        validate::immutable(&ns["selector"], &os["selector"], "spec.selector", causes);
        for f in [
            "completionMode",
            "podFailurePolicy",
            "backoffLimitPerIndex",
            "successPolicy",
            "managedBy",
        ] {
            validate::immutable(&ns[f], &os[f], &format!("spec.{f}"), causes);
        }
        if os["completionMode"] == "Indexed"
            && ns["completions"].is_i64()
            && os["completions"].is_i64()
            && ns["completions"] != os["completions"]
        {
            if ns["completions"] != ns["parallelism"] {
                causes.push(Cause::invalid(
                    "spec.completions",
                    &ns["completions"],
                    "can only be modified in tandem with spec.parallelism",
                ));
            }
        } else {
            validate::immutable(
                &ns["completions"],
                &os["completions"],
                "spec.completions",
                causes,
            );
        }
        // The template is fixed, except the scheduling directives, labels and
        // annotations of a suspended Job that never started (upstream's
        // AllowMutableSchedulingDirectives).
        let mutable = os["suspend"] == true && old["status"]["startTime"].is_null();
        let strip = |t: &Value| {
            let mut t = t.clone();
            if mutable {
                if let Some(m) = t["metadata"].as_object_mut() {
                    m.remove("labels");
                    m.remove("annotations");
                }
                if let Some(s) = t["spec"].as_object_mut() {
                    for k in ["nodeSelector", "tolerations", "schedulingGates"] {
                        s.remove(k);
                    }
                    if let Some(a) = s.get_mut("affinity").and_then(Value::as_object_mut) {
                        a.remove("nodeAffinity");
                    }
                }
            }
            t
        };
        if strip(&ns["template"]) != strip(&os["template"]) {
            causes.push(Cause::invalid(
                "spec.template",
                &Value::String("(the template)".into()),
                validate::MSG_IMMUTABLE,
            ));
        }
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("Status", s, 0),
            col("Completions", s, 0),
            col("Duration", s, 0),
            col("Age", s, 0),
            col("Containers", s, 1),
            col("Images", s, 1),
            col("Selector", s, 1),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        let spec = &o["spec"];
        let st = &o["status"];
        let completions = match spec["completions"].as_i64() {
            Some(c) => format!("{}/{c}", num(&st["succeeded"])),
            None => match spec["parallelism"].as_i64().unwrap_or(0) {
                p if p > 1 => format!("{}/1 of {p}", num(&st["succeeded"])),
                _ => format!("{}/1", num(&st["succeeded"])),
            },
        };
        let ts = |v: &Value| {
            v.as_str()
                .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
        };
        let duration = match (ts(&st["startTime"]), ts(&st["completionTime"])) {
            (None, _) => String::new(),
            (Some(s), None) => {
                human_duration(k8s_openapi::jiff::Timestamp::now().as_second() - s.as_second())
            }
            (Some(s), Some(c)) => human_duration(c.as_second() - s.as_second()),
        };
        let (c, i) = containers_images(&spec["template"]["spec"]);
        vec![
            json!(o["metadata"]["name"]),
            json!(job_status(o)),
            json!(completions),
            json!(duration),
            json!(age(&o["metadata"]["creationTimestamp"])),
            json!(c),
            json!(i),
            json!(selector_str(&spec["selector"])),
        ]
    }
}

/// The STATUS column: upstream's printer checks the conditions in this order.
fn job_status(o: &Value) -> &'static str {
    let has = |t: &str| {
        o["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if !o["metadata"]["deletionTimestamp"].is_null() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

/// Upstream's `validateJobSpec`: everything of a job spec but its selector (shared with
/// a CronJob's `jobTemplate.spec`); `path` is where the spec sits.
pub(crate) fn validate_job_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let p = |f: &str| format!("{path}.{f}");
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        validate::non_negative(&spec[f], &p(f), causes);
    }
    let indexed = spec["completionMode"] == "Indexed";
    validate::one_of(
        &spec["completionMode"],
        &p("completionMode"),
        &["NonIndexed", "Indexed"],
        causes,
    );
    if indexed {
        match spec["completions"].as_i64() {
            None => causes.push(Cause::required_because(
                p("completions"),
                "when completion mode is Indexed",
            )),
            Some(c) if c > MAX_INDEXED => causes.push(Cause::invalid(
                p("completions"),
                &spec["completions"],
                "must be less than or equal to 100000 when completion mode is Indexed",
            )),
            Some(_) => {}
        }
        if spec["parallelism"]
            .as_i64()
            .is_some_and(|n| n > MAX_INDEXED)
        {
            causes.push(Cause::invalid(
                p("parallelism"),
                &spec["parallelism"],
                "must be less than or equal to 100000 when completion mode is Indexed",
            ));
        }
    }
    let per_index = &spec["backoffLimitPerIndex"];
    let max_failed = &spec["maxFailedIndexes"];
    if per_index.is_null() && !max_failed.is_null() {
        causes.push(Cause::required_because(
            p("backoffLimitPerIndex"),
            "when maxFailedIndexes is specified",
        ));
    }
    if !per_index.is_null() && !indexed {
        causes.push(Cause::invalid(
            p("backoffLimitPerIndex"),
            per_index,
            "requires indexed completion mode",
        ));
    }
    if let Some(m) = max_failed.as_i64() {
        if m > MAX_INDEXED {
            causes.push(Cause::invalid(
                p("maxFailedIndexes"),
                max_failed,
                "must be less than or equal to 100000",
            ));
        }
        if spec["completions"].as_i64().is_some_and(|c| m > c) {
            causes.push(Cause::invalid(
                p("maxFailedIndexes"),
                max_failed,
                "must be less than or equal to completions",
            ));
        }
    } else if !per_index.is_null()
        && spec["completions"]
            .as_i64()
            .is_some_and(|c| c > MAX_INDEXED)
    {
        causes.push(Cause::required_because(
            p("maxFailedIndexes"),
            "must be specified when completions is above 100000",
        ));
    }
    validate::one_of(
        &spec["podReplacementPolicy"],
        &p("podReplacementPolicy"),
        &["Failed", "TerminatingOrFailed"],
        causes,
    );
    let pod = &spec["template"]["spec"];
    let tp = p("template.spec");
    crate::validate::pod::spec(pod, &tp, causes);
    let rp = &pod["restartPolicy"];
    if rp
        .as_str()
        .is_some_and(|r| r != "OnFailure" && r != "Never")
    {
        causes.push(Cause::not_supported(
            format!("{tp}.restartPolicy"),
            rp,
            &["OnFailure", "Never"],
        ));
    }
    let pfp = &spec["podFailurePolicy"];
    if !pfp.is_null() {
        if rp.as_str().is_some_and(|r| r != "Never") {
            causes.push(Cause::invalid(
                format!("{tp}.restartPolicy"),
                rp,
                "only \"Never\" is supported when podFailurePolicy is specified",
            ));
        }
        let rpp = &spec["podReplacementPolicy"];
        if rpp.as_str().is_some_and(|r| r != "Failed") {
            causes.push(Cause::not_supported(
                p("podReplacementPolicy"),
                rpp,
                &["Failed"],
            ));
        }
        pod_failure_policy(
            pfp,
            pod,
            !per_index.is_null(),
            &p("podFailurePolicy"),
            causes,
        );
    }
    let sp = &spec["successPolicy"];
    if !sp.is_null() {
        success_policy(sp, spec, indexed, &p("successPolicy"), causes);
    }
}

fn pod_failure_policy(
    pfp: &Value,
    pod: &Value,
    per_index: bool,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    let rules = pfp["rules"].as_array().cloned().unwrap_or_default();
    let rp = format!("{path}.rules");
    if rules.len() > MAX_RULES {
        causes.push(Cause::invalid(
            &rp,
            &json!(rules.len()),
            "must have at most 20 items",
        ));
    }
    let names: Vec<&str> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| pod[*l].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    for (i, rule) in rules.iter().enumerate() {
        let rp = format!("{rp}[{i}]");
        let action = &rule["action"];
        if action.is_null() {
            causes.push(Cause::required(format!("{rp}.action")));
        }
        validate::one_of(
            action,
            &format!("{rp}.action"),
            &["Count", "FailIndex", "FailJob", "Ignore"],
            causes,
        );
        if action == "FailIndex" && !per_index {
            causes.push(Cause::invalid(
                format!("{rp}.action"),
                action,
                "requires the backoffLimitPerIndex to be set",
            ));
        }
        let (codes, conds) = (&rule["onExitCodes"], &rule["onPodConditions"]);
        match (codes.is_null(), conds.is_null()) {
            (false, false) => causes.push(Cause::invalid(
                &rp,
                &Value::String("(rule)".into()),
                "specifying both OnExitCodes and OnPodConditions is not supported",
            )),
            (true, true) => causes.push(Cause::invalid(
                &rp,
                &Value::String("(rule)".into()),
                "specifying one of OnExitCodes and OnPodConditions is required",
            )),
            _ => {}
        }
        if !codes.is_null() {
            let cp = format!("{rp}.onExitCodes");
            if let Some(n) = codes["containerName"].as_str() {
                if !names.contains(&n) {
                    causes.push(Cause::invalid(
                        format!("{cp}.containerName"),
                        &codes["containerName"],
                        "must be one of the container or initContainer names in the pod template",
                    ));
                }
            }
            let op = &codes["operator"];
            if op.is_null() {
                causes.push(Cause::required(format!("{cp}.operator")));
            }
            validate::one_of(op, &format!("{cp}.operator"), &["In", "NotIn"], causes);
            let values = codes["values"].as_array().cloned().unwrap_or_default();
            if values.is_empty() {
                causes.push(Cause::invalid(
                    format!("{cp}.values"),
                    &codes["values"],
                    "at least one value is required",
                ));
            } else if values.len() > MAX_EXIT_CODES {
                causes.push(Cause::invalid(
                    format!("{cp}.values"),
                    &json!(values.len()),
                    "must have at most 255 items",
                ));
            }
            let mut prev: Option<i64> = None;
            for (j, v) in values.iter().enumerate() {
                let vp = format!("{cp}.values[{j}]");
                let n = v.as_i64().unwrap_or_default();
                if op == "In" && n == 0 {
                    causes.push(Cause::invalid(&vp, v, "must not be 0 for the In operator"));
                }
                match prev {
                    Some(p) if p == n => causes.push(Cause::duplicate(&vp, v)),
                    Some(p) if p > n => causes.push(Cause::invalid(&vp, v, "must be ordered")),
                    _ => {}
                }
                prev = Some(n);
            }
        }
        let patterns = conds.as_array().cloned().unwrap_or_default();
        if patterns.len() > MAX_RULES {
            causes.push(Cause::invalid(
                format!("{rp}.onPodConditions"),
                &json!(patterns.len()),
                "must have at most 20 items",
            ));
        }
        for (j, c) in patterns.iter().enumerate() {
            let cp = format!("{rp}.onPodConditions[{j}]");
            validate::one_of(
                &c["status"],
                &format!("{cp}.status"),
                &["False", "True", "Unknown"],
                causes,
            );
            match c["type"].as_str() {
                None | Some("") => causes.push(Cause::required(format!("{cp}.type"))),
                Some(_) => validate::label_name(&c["type"], &format!("{cp}.type"), causes),
            }
        }
    }
}

/// Parses an index list such as `1,3-5,7` into sorted, non-overlapping ranges, with
/// upstream's `validateIndexesFormat` rules and messages (an interval's ends are
/// increasing, `3-3` is not an interval, each interval starts past the previous one).
pub(crate) fn parse_indexes(s: &str, completions: i64) -> Result<Vec<(i64, i64)>, String> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    if s.is_empty() {
        return Ok(out);
    }
    for part in s.split(',') {
        let limits: Vec<&str> = part.split('-').collect();
        if limits.len() > 2 {
            return Err(format!(
                "the fragment {part:?} violates the requirement that an index interval can have at most two parts separated by '-'"
            ));
        }
        let parse = |x: &str| {
            let n = x
                .parse::<i64>()
                .map_err(|_| format!("cannot convert string to integer for index: {x:?}"))?;
            if n >= completions {
                return Err(format!("too large index: {x:?}"));
            }
            Ok(n)
        };
        let a = parse(limits[0])?;
        let b = match limits.get(1) {
            Some(y) => {
                let b = parse(y)?;
                if a >= b {
                    return Err(format!("non-increasing order, previous: {a}, current: {b}"));
                }
                b
            }
            None => a,
        };
        if let Some(&(_, pb)) = out.last() {
            if pb >= a {
                return Err(format!(
                    "non-increasing order, previous: {pb}, current: {a}"
                ));
            }
        }
        out.push((a, b));
    }
    Ok(out)
}

fn condition_true(job: &Value, t: &str) -> bool {
    job["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == t && c["status"] == "True"))
}

fn is_finished(job: &Value) -> bool {
    condition_true(job, "Complete") || condition_true(job, "Failed")
}

/// The first index both lists hold, if any (upstream's
/// `validateFailedIndexesNotOverlapCompleted`; lists that do not parse are judged by the
/// format rule instead).
fn indexes_overlap(completed: &str, failed: &str, completions: i64) -> Option<i64> {
    let (Ok(c), Ok(f)) = (
        parse_indexes(completed, completions),
        parse_indexes(failed, completions),
    ) else {
        return None;
    };
    c.iter()
        .flat_map(|&(ca, cb)| f.iter().map(move |&(fa, fb)| (ca, cb, fa, fb)))
        .filter(|&(ca, cb, fa, fb)| ca <= fb && fa <= cb)
        .map(|(ca, _, fa, _)| ca.max(fa))
        .min()
}

/// Upstream's `ValidateJobStatusUpdate` with the options its Job strategy turns on
/// (1.35, `JobManagedBy` on): each rule about a field applies when the update changes
/// what the rule looks at, so a Job stored before a rule existed still takes updates
/// that leave those fields alone. A plain update keeps the stored status, so only
/// writes to `/status` can trip these rules.
fn validate_status_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let (st, ost) = (&new["status"], &old["status"]);
    let spec = &new["spec"];
    let changed = |f: &str| st[f] != ost[f];
    let cond_changed = |t: &str| condition_true(new, t) != condition_true(old, t);
    let omitted = |field: &str, why: &str| Cause::invalid_omitted(field, why);
    let indexed = spec["completionMode"] == "Indexed";
    let completions = spec["completions"].as_i64();
    let (complete, failed) = (
        condition_true(new, "Complete"),
        condition_true(new, "Failed"),
    );
    let failure_target = condition_true(new, "FailureTarget");
    let criteria_met = condition_true(new, "SuccessCriteriaMet");
    let finished = complete || failed;
    let finished_changed = finished != is_finished(old);
    let count = |v: &Value| v.as_i64().unwrap_or(0);
    let uncounted = &st["uncountedTerminatedPods"];
    let uncounted_len = |k: &str| uncounted[k].as_array().map_or(0, Vec::len);

    // validateJobStatus (its non-negative counts are create rules, see `validate`):
    // the uncounted pods' UIDs, then the conditions and times.
    let mut seen = std::collections::HashSet::new();
    for k in ["succeeded", "failed"] {
        for (i, uid) in uncounted[k].as_array().into_iter().flatten().enumerate() {
            let p = format!("status.uncountedTerminatedPods.{k}[{i}]");
            if uid.as_str().is_none_or(str::is_empty) {
                causes.push(Cause::invalid(p, uid, "must not be empty"));
            } else if !seen.insert(uid.as_str().unwrap_or_default().to_owned()) {
                causes.push(Cause::duplicate(p, uid));
            }
        }
    }
    if (cond_changed("Complete") || cond_changed("Failed")) && complete && failed {
        causes.push(omitted(
            "status.conditions",
            "cannot set Complete=True and Failed=true conditions",
        ));
    }
    if (cond_changed("Complete") || cond_changed("FailureTarget")) && complete && failure_target {
        causes.push(omitted(
            "status.conditions",
            "cannot set Complete=True and FailureTarget=true conditions",
        ));
    }
    let completion_changed = changed("completionTime");
    if (cond_changed("Complete") || completion_changed)
        && !st["completionTime"].is_null()
        && !complete
    {
        causes.push(Cause::invalid(
            "status.completionTime",
            &st["completionTime"],
            "cannot set completionTime when there is no Complete=True condition",
        ));
    }
    if (cond_changed("Complete") || completion_changed)
        && st["completionTime"].is_null()
        && complete
    {
        causes.push(Cause::required_because(
            "status.completionTime",
            "completionTime is required for Complete jobs",
        ));
    }
    if changed("startTime") || completion_changed {
        if let (Some(s), Some(c)) = (
            st["startTime"]
                .as_str()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok()),
            st["completionTime"]
                .as_str()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok()),
        ) {
            if c < s {
                causes.push(Cause::invalid(
                    "status.completionTime",
                    &st["completionTime"],
                    "completionTime cannot be set before startTime",
                ));
            }
        }
    }
    if (cond_changed("Failed") || changed("failedIndexes")) && failed && !failure_target {
        causes.push(omitted(
            "status.conditions",
            "cannot set Failed=True condition without the FailureTarget=true condition",
        ));
    }
    if cond_changed("Complete") && complete && !criteria_met {
        causes.push(omitted(
            "status.conditions",
            "cannot set Complete=True condition without the SuccessCriteriaMet=true condition",
        ));
    }
    if (finished_changed || changed("active")) && count(&st["active"]) > 0 && finished {
        causes.push(Cause::invalid(
            "status.active",
            &st["active"],
            "active>0 is invalid for finished job",
        ));
    }
    if (finished_changed || changed("startTime")) && st["startTime"].is_null() && finished {
        causes.push(Cause::required_because(
            "status.startTime",
            "startTime is required for finished job",
        ));
    }
    if (finished_changed || changed("uncountedTerminatedPods"))
        && finished
        && uncounted_len("succeeded") + uncounted_len("failed") > 0
    {
        causes.push(Cause::invalid(
            "status.uncountedTerminatedPods",
            uncounted,
            "uncountedTerminatedPods needs to be empty for finished job",
        ));
    }
    let completed_indexes = st["completedIndexes"].as_str().unwrap_or_default();
    let failed_indexes = st["failedIndexes"].as_str();
    let (ci_changed, fi_changed) = (changed("completedIndexes"), changed("failedIndexes"));
    if let Some(n) = completions {
        if ci_changed {
            if let Err(e) = parse_indexes(completed_indexes, n) {
                causes.push(Cause::invalid(
                    "status.completedIndexes",
                    &st["completedIndexes"],
                    &format!("error parsing completedIndexes: {e}"),
                ));
            }
        }
        if let (true, Some(fi), false) = (
            fi_changed,
            failed_indexes,
            spec["backoffLimitPerIndex"].is_null(),
        ) {
            if let Err(e) = parse_indexes(fi, n) {
                causes.push(Cause::invalid(
                    "status.failedIndexes",
                    &st["failedIndexes"],
                    &format!("error parsing failedIndexes: {e}"),
                ));
            }
        }
    }
    if ci_changed && !completed_indexes.is_empty() && !indexed {
        causes.push(Cause::invalid(
            "status.completedIndexes",
            &st["completedIndexes"],
            "cannot set non-empty completedIndexes when non-indexed completion mode",
        ));
    }
    if fi_changed && spec["backoffLimitPerIndex"].is_null() && failed_indexes.is_some() {
        causes.push(Cause::invalid(
            "status.failedIndexes",
            &st["failedIndexes"],
            "cannot set non-null failedIndexes when backoffLimitPerIndex is null",
        ));
    }
    if let (true, Some(n), Some(fi)) = (ci_changed || fi_changed, completions, failed_indexes) {
        if let Some(i) = indexes_overlap(completed_indexes, fi, n) {
            causes.push(Cause::invalid(
                "status.failedIndexes",
                &st["failedIndexes"],
                &format!("failedIndexes and completedIndexes overlap at index: {i}"),
            ));
        }
    }
    if (finished_changed || changed("terminating")) && count(&st["terminating"]) > 0 && finished {
        causes.push(Cause::invalid(
            "status.terminating",
            &st["terminating"],
            "terminating>0 is invalid for finished job",
        ));
    }
    if (changed("ready") || changed("active"))
        && st["ready"]
            .as_i64()
            .is_some_and(|r| r > count(&st["active"]))
    {
        causes.push(Cause::invalid(
            "status.ready",
            &st["ready"],
            "cannot set more ready pods than active",
        ));
    }
    if criteria_met && failed {
        causes.push(omitted(
            "status.conditions",
            "cannot set SuccessCriteriaMet=True and Failed=true conditions",
        ));
    }
    if criteria_met && failure_target {
        causes.push(omitted(
            "status.conditions",
            "cannot set SuccessCriteriaMet=True and FailureTarget=true conditions",
        ));
    }
    if !spec["successPolicy"].is_null() && !criteria_met && complete {
        causes.push(omitted(
            "status.conditions",
            "cannot set Complete=True for Job with SuccessPolicy unless SuccessCriteriaMet=True",
        ));
    }

    // ValidateJobStatusUpdate: the transitions.
    for t in ["Failed", "Complete", "FailureTarget"] {
        if condition_true(old, t) && !condition_true(new, t) {
            causes.push(omitted(
                "status.conditions",
                &format!("cannot disable the terminal {t}=True condition"),
            ));
        }
    }
    if count(&st["failed"]) < count(&ost["failed"]) {
        causes.push(Cause::invalid(
            "status.failed",
            &json!(count(&st["failed"])),
            "cannot decrease the failed counter",
        ));
    }
    // A scaled-down Indexed Job (completions equal to parallelism) may count fewer.
    let elastic = indexed && spec["completions"] == spec["parallelism"];
    if !elastic && count(&st["succeeded"]) < count(&ost["succeeded"]) {
        causes.push(Cause::invalid(
            "status.succeeded",
            &json!(count(&st["succeeded"])),
            "cannot decrease the succeeded counter",
        ));
    }
    if !st["completionTime"].is_null() && !ost["completionTime"].is_null() && completion_changed {
        causes.push(Cause::invalid(
            "status.completionTime",
            &st["completionTime"],
            "completionTime cannot be mutated",
        ));
    }
    if !ost["startTime"].is_null() && changed("startTime") && spec["suspend"] != true {
        causes.push(Cause::required_because(
            "status.startTime",
            "startTime cannot be removed for unsuspended job",
        ));
    }
    if condition_true(old, "SuccessCriteriaMet") && !criteria_met {
        causes.push(omitted(
            "status.conditions",
            "cannot disable the SuccessCriteriaMet=True condition",
        ));
    }
    if condition_true(old, "Complete") && !condition_true(old, "SuccessCriteriaMet") && criteria_met
    {
        causes.push(omitted(
            "status.conditions",
            "cannot set SuccessCriteriaMet=True for Job already has Complete=true conditions",
        ));
    }
}

fn success_policy(sp: &Value, spec: &Value, indexed: bool, path: &str, causes: &mut Vec<Cause>) {
    if !indexed {
        causes.push(Cause::invalid(
            path,
            &Value::String("(successPolicy)".into()),
            "requires indexed completion mode",
        ));
    }
    let rules = sp["rules"].as_array().cloned().unwrap_or_default();
    let rp = format!("{path}.rules");
    if rules.is_empty() {
        causes.push(Cause::required_because(
            &rp,
            "at least one rules must be specified when the successPolicy is specified",
        ));
    }
    if rules.len() > MAX_RULES {
        causes.push(Cause::invalid(
            &rp,
            &json!(rules.len()),
            "must have at most 20 items",
        ));
    }
    let completions = spec["completions"].as_i64().unwrap_or(0);
    for (i, r) in rules.iter().enumerate() {
        let p = format!("{rp}[{i}]");
        let (idx, count) = (&r["succeededIndexes"], &r["succeededCount"]);
        if idx.is_null() && count.is_null() {
            causes.push(Cause::required_because(
                &p,
                "at least one of succeededCount or succeededIndexes must be specified",
            ));
        }
        let mut total = None;
        if let Some(s) = idx.as_str() {
            match parse_indexes(s, completions) {
                Err(e) => causes.push(Cause::invalid(
                    format!("{p}.succeededIndexes"),
                    idx,
                    &format!("error parsing succeededIndexes: {e}"),
                )),
                Ok(r) => total = Some(r.iter().map(|(a, b)| b - a + 1).sum::<i64>()),
            }
        }
        if let Some(c) = count.as_i64() {
            if c < 0 {
                causes.push(Cause::invalid(
                    format!("{p}.succeededCount"),
                    count,
                    "must be greater than or equal to 0",
                ));
            }
            if c > completions {
                causes.push(Cause::invalid(
                    format!("{p}.succeededCount"),
                    count,
                    &format!(
                        "must be less than or equal to {completions} (the number of specified completions)"
                    ),
                ));
            }
            if let Some(t) = total.filter(|t| c > *t) {
                causes.push(Cause::invalid(
                    format!("{p}.succeededCount"),
                    count,
                    &format!("must be less than or equal to {t} (the number of indexes in the specified succeededIndexes field)"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: Value) -> Value {
        let mut j = json!({"kind": "Job", "metadata": {"name": "pi", "uid": "u-1"}, "spec": spec});
        JobStrategy.prepare_for_create(&mut j);
        JobStrategy.defaults(&mut j);
        j
    }

    fn fields(j: &Value) -> Vec<String> {
        super::super::validate(&JobStrategy, j, None)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    fn tpl(policy: &str) -> Value {
        json!({"spec": {"restartPolicy": policy, "containers": [{"name": "main", "image": "busybox:1"}]}})
    }

    #[test]
    fn defaults_and_generated_selector_match_upstream() {
        let j = job(json!({"template": tpl("Never")}));
        let s = &j["spec"];
        assert_eq!(s["completions"], 1);
        assert_eq!(s["parallelism"], 1);
        assert_eq!(s["backoffLimit"], 6);
        assert_eq!(s["completionMode"], "NonIndexed");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["manualSelector"], false);
        assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(
            s["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        let want = json!({"batch.kubernetes.io/controller-uid": "u-1",
            "batch.kubernetes.io/job-name": "pi", "controller-uid": "u-1", "job-name": "pi"});
        assert_eq!(s["template"]["metadata"]["labels"], want);
        assert_eq!(
            j["metadata"]["labels"], want,
            "the job takes its pods' labels"
        );
        assert!(fields(&j).is_empty(), "{:?}", fields(&j));

        // Parallelism alone leaves completions unset (a work queue).
        let q = job(json!({"parallelism": 3, "template": tpl("OnFailure")}));
        assert!(q["spec"]["completions"].is_null());
        let pi = job(
            json!({"backoffLimitPerIndex": 1, "completionMode": "Indexed", "completions": 3, "template": tpl("Never")}),
        );
        assert_eq!(pi["spec"]["backoffLimit"], i32::MAX);
        let pfp = job(json!({"podFailurePolicy": {"rules": [{"action": "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget"}]}]}, "template": tpl("Never")}));
        assert_eq!(pfp["spec"]["podReplacementPolicy"], "Failed");
        assert_eq!(
            pfp["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"],
            "True"
        );
        assert!(fields(&pfp).is_empty(), "{:?}", fields(&pfp));
    }

    #[test]
    fn validation_table() {
        for (spec, want) in [
            (json!({"template": tpl("Always")}), "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""),
            (json!({"completionMode": "Indexed", "parallelism": 2, "template": tpl("Never")}), "spec.completions: Required value: when completion mode is Indexed"),
            (json!({"completionMode": "Indexed", "completions": 100001, "template": tpl("Never")}), "spec.completions: Invalid value: 100001: must be less than or equal to 100000 when completion mode is Indexed"),
            (json!({"backoffLimitPerIndex": 1, "template": tpl("Never")}), "spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode"),
            (json!({"maxFailedIndexes": 1, "completionMode": "Indexed", "completions": 2, "template": tpl("Never")}), "spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified"),
            (json!({"backoffLimit": -1, "template": tpl("Never")}), "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0"),
            (json!({"podFailurePolicy": {"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [1]}}]}, "template": tpl("OnFailure")}),
                "spec.template.spec.restartPolicy: Invalid value: \"OnFailure\": only \"Never\" is supported when podFailurePolicy is specified"),
            (json!({"podFailurePolicy": {"rules": [{"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [1]}}]}, "template": tpl("Never")}),
                "spec.podFailurePolicy.rules[0].action: Invalid value: \"FailIndex\": requires the backoffLimitPerIndex to be set"),
            (json!({"podFailurePolicy": {"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [0, 2]}}]}, "template": tpl("Never")}),
                "spec.podFailurePolicy.rules[0].onExitCodes.values[0]: Invalid value: 0: must not be 0 for the In operator"),
            (json!({"podFailurePolicy": {"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3, 2]}}]}, "template": tpl("Never")}),
                "spec.podFailurePolicy.rules[0].onExitCodes.values[1]: Invalid value: 2: must be ordered"),
            (json!({"podFailurePolicy": {"rules": [{"action": "Ignore", "onExitCodes": {"containerName": "other", "operator": "In", "values": [1]}}]}, "template": tpl("Never")}),
                "spec.podFailurePolicy.rules[0].onExitCodes.containerName: Invalid value: \"other\": must be one of the container or initContainer names in the pod template"),
            (json!({"podFailurePolicy": {"rules": [{"action": "Ignore"}]}, "template": tpl("Never")}),
                "spec.podFailurePolicy.rules[0]: Invalid value: \"(rule)\": specifying one of OnExitCodes and OnPodConditions is required"),
            (json!({"successPolicy": {"rules": [{"succeededCount": 1}]}, "template": tpl("Never")}),
                "spec.successPolicy: Invalid value: \"(successPolicy)\": requires indexed completion mode"),
            (json!({"completionMode": "Indexed", "completions": 3, "successPolicy": {"rules": [{"succeededIndexes": "0-5"}]}, "template": tpl("Never")}),
                "spec.successPolicy.rules[0].succeededIndexes: Invalid value: \"0-5\": error parsing succeededIndexes: too large index: \"5\""),
        ] {
            let j = job(spec.clone());
            let got = fields(&j);
            assert!(got.iter().any(|g| g == want), "{spec}: want {want}, got {got:?}");
        }
    }

    #[test]
    fn update_rules() {
        let old = job(
            json!({"completionMode": "Indexed", "completions": 3, "parallelism": 3, "suspend": true, "template": tpl("Never")}),
        );
        let upd = |f: &dyn Fn(&mut Value)| {
            let mut n = old.clone();
            f(&mut n);
            JobStrategy.defaults(&mut n);
            super::super::validate(&JobStrategy, &n, Some(&old))
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect::<Vec<_>>()
        };
        assert!(upd(&|n| {
            n["spec"]["completions"] = json!(5);
            n["spec"]["parallelism"] = json!(5);
        })
        .is_empty());
        assert_eq!(
            upd(&|n| n["spec"]["completions"] = json!(5)),
            ["spec.completions: Invalid value: 5: can only be modified in tandem with spec.parallelism"]
        );
        assert!(
            upd(&|n| n["spec"]["template"]["spec"]["nodeSelector"] = json!({"disk": "ssd"}))
                .is_empty(),
            "a suspended job that never started may change its scheduling directives"
        );
        assert_eq!(
            upd(&|n| n["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:2")),
            ["spec.template: Invalid value: \"(the template)\": field is immutable"]
        );
        assert!(
            upd(&|n| n["spec"]["selector"]["matchLabels"]["x"] = json!("y")).iter().any(|c| c
                == "spec.selector: Invalid value: {\"matchLabels\":{\"batch.kubernetes.io/controller-uid\":\"u-1\",\"x\":\"y\"}}: field is immutable")
        );
        let mut started = old.clone();
        started["status"]["startTime"] = json!("2026-01-01T00:00:00Z");
        let mut n = started.clone();
        n["spec"]["template"]["spec"]["nodeSelector"] = json!({"disk": "ssd"});
        assert_eq!(
            super::super::validate(&JobStrategy, &n, Some(&started)).len(),
            1
        );
    }

    #[test]
    fn status_update_rules_as_upstream() {
        let base = job(json!({"completions": 2, "parallelism": 2, "template": tpl("Never")}));
        let start = "2026-01-01T00:00:00Z";
        let mut running = base.clone();
        running["status"] = json!({"active": 2, "ready": 0, "startTime": start});
        let status = |old: &Value, st: Value| {
            let mut n = old.clone();
            n["status"] = st;
            super::super::validate(&JobStrategy, &n, Some(old))
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect::<Vec<_>>()
        };
        let t = |ty: &str| json!({"type": ty, "status": "True"});
        // The controller's own path: SuccessCriteriaMet, then Complete with the time.
        let met = json!({"active": 0, "succeeded": 2, "startTime": start,
            "conditions": [t("SuccessCriteriaMet")]});
        assert!(status(&running, met.clone()).is_empty());
        let mut meeting = running.clone();
        meeting["status"] = met.clone();
        let mut done = met.clone();
        done["conditions"] = json!([t("SuccessCriteriaMet"), t("Complete")]);
        done["completionTime"] = json!("2026-01-01T00:01:00Z");
        assert!(status(&meeting, done.clone()).is_empty());
        let mut finished = meeting.clone();
        finished["status"] = done.clone();
        assert_eq!(
            status(
                &running,
                json!({"active": -1, "succeeded": 1, "startTime": start})
            ),
            ["status.active: Invalid value: -1: must be greater than or equal to 0"]
        );
        assert_eq!(
            status(&running, json!({"active": 2, "startTime": start, "completionTime": start})),
            ["status.completionTime: Invalid value: \"2026-01-01T00:00:00Z\": cannot set completionTime when there is no Complete=True condition"]
        );
        let mut no_time = done.clone();
        no_time.as_object_mut().unwrap().remove("completionTime");
        assert_eq!(
            status(&meeting, no_time),
            ["status.completionTime: Required value: completionTime is required for Complete jobs"]
        );
        let mut early = done.clone();
        early["completionTime"] = json!("2025-12-31T00:00:00Z");
        assert_eq!(
            status(&meeting, early),
            ["status.completionTime: Invalid value: \"2025-12-31T00:00:00Z\": completionTime cannot be set before startTime"]
        );
        let mut both = done.clone();
        both["conditions"] = json!([
            t("SuccessCriteriaMet"),
            t("Complete"),
            t("Failed"),
            t("FailureTarget")
        ]);
        let got = status(&meeting, both);
        for want in [
            "status.conditions: Invalid value: cannot set Complete=True and Failed=true conditions",
            "status.conditions: Invalid value: cannot set Complete=True and FailureTarget=true conditions",
            "status.conditions: Invalid value: cannot set SuccessCriteriaMet=True and Failed=true conditions",
        ] {
            assert!(got.iter().any(|g| g == want), "{want} in {got:?}");
        }
        assert_eq!(
            status(&running, json!({"active": 0, "failed": 1, "startTime": start, "conditions": [t("Failed")]})),
            ["status.conditions: Invalid value: cannot set Failed=True condition without the FailureTarget=true condition"]
        );
        let mut active_done = done.clone();
        active_done["active"] = json!(1);
        assert_eq!(
            status(&meeting, active_done),
            ["status.active: Invalid value: 1: active>0 is invalid for finished job"]
        );
        assert_eq!(
            status(
                &running,
                json!({"active": 1, "ready": 2, "startTime": start})
            ),
            ["status.ready: Invalid value: 2: cannot set more ready pods than active"]
        );
        assert_eq!(
            status(&running, json!({"active": 2, "startTime": start,
                "uncountedTerminatedPods": {"succeeded": ["a", ""], "failed": ["a"]}})),
            [
                "status.uncountedTerminatedPods.succeeded[1]: Invalid value: \"\": must not be empty",
                "status.uncountedTerminatedPods.failed[0]: Duplicate value: \"a\"",
            ]
        );
        let mut uncounted_done = done.clone();
        uncounted_done["uncountedTerminatedPods"] = json!({"succeeded": ["a"]});
        assert_eq!(
            status(&meeting, uncounted_done),
            ["status.uncountedTerminatedPods: Invalid value: {\"succeeded\":[\"a\"]}: uncountedTerminatedPods needs to be empty for finished job"]
        );
        assert_eq!(
            status(&running, json!({"active": 2, "startTime": start, "completedIndexes": "0"})),
            ["status.completedIndexes: Invalid value: \"0\": cannot set non-empty completedIndexes when non-indexed completion mode"]
        );
        // Transitions: terminal conditions stay, counters do not go down, times stay.
        let mut undone = done.clone();
        undone["conditions"] = json!([t("SuccessCriteriaMet")]);
        undone.as_object_mut().unwrap().remove("completionTime");
        assert_eq!(
            status(&finished, undone),
            ["status.conditions: Invalid value: cannot disable the terminal Complete=True condition"]
        );
        let mut fewer = done.clone();
        fewer["succeeded"] = json!(1);
        assert_eq!(
            status(&finished, fewer),
            ["status.succeeded: Invalid value: 1: cannot decrease the succeeded counter"]
        );
        let mut moved = done.clone();
        moved["completionTime"] = json!("2026-01-01T00:02:00Z");
        assert_eq!(
            status(&finished, moved),
            ["status.completionTime: Invalid value: \"2026-01-01T00:02:00Z\": completionTime cannot be mutated"]
        );
        assert_eq!(
            status(&running, json!({"active": 2})),
            ["status.startTime: Required value: startTime cannot be removed for unsuspended job"]
        );
        // A stored Job that already broke a rule still takes updates that leave it be.
        let mut odd = running.clone();
        odd["status"]["ready"] = json!(5);
        assert!(status(
            &odd,
            json!({"active": 2, "ready": 5, "startTime": start, "failed": 1})
        )
        .is_empty());
        // Indexed: the lists' format, and failed indexes need backoffLimitPerIndex.
        let indexed = job(
            json!({"completionMode": "Indexed", "completions": 4, "parallelism": 2,
            "backoffLimitPerIndex": 1, "template": tpl("Never")}),
        );
        let mut irun = indexed.clone();
        irun["status"] = json!({"active": 2, "startTime": start});
        assert_eq!(
            status(&irun, json!({"active": 2, "startTime": start, "completedIndexes": "1,0"})),
            ["status.completedIndexes: Invalid value: \"1,0\": error parsing completedIndexes: non-increasing order, previous: 1, current: 0"]
        );
        assert_eq!(
            status(&irun, json!({"active": 2, "startTime": start, "completedIndexes": "0-5"})),
            ["status.completedIndexes: Invalid value: \"0-5\": error parsing completedIndexes: too large index: \"5\""]
        );
        assert_eq!(
            status(&irun, json!({"active": 2, "startTime": start, "completedIndexes": "0-2", "failedIndexes": "2"})),
            ["status.failedIndexes: Invalid value: \"2\": failedIndexes and completedIndexes overlap at index: 2"]
        );
    }

    #[test]
    fn table_cells_as_upstream() {
        let mut j = job(json!({"completions": 3, "template": tpl("Never")}));
        j["status"] = json!({"succeeded": 2, "startTime": "2026-01-01T00:00:00Z",
            "completionTime": "2026-01-01T00:01:05Z",
            "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]});
        let c = JobStrategy.table_cells(&j);
        assert_eq!(c[1], "Complete");
        assert_eq!(c[2], "2/3");
        assert_eq!(c[3], "65s");
        let mut w = job(json!({"parallelism": 4, "template": tpl("Never")}));
        w["status"] = json!({"conditions": [{"type": "Suspended", "status": "True"}]});
        let c = JobStrategy.table_cells(&w);
        assert_eq!(
            (c[1].as_str(), c[2].as_str(), c[3].as_str()),
            (Some("Suspended"), Some("0/1 of 4"), Some(""))
        );
    }
}
