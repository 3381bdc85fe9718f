//! Pod spec rules as upstream's `ValidatePodSpec` and `ValidatePodUpdate`: containers
//! (names, images, ports, env, resources, probes, volume mounts), volumes, hostname and
//! subdomain, DNS and restart policies, tolerations, affinity, topology spread; and the
//! few fields a running pod may change.

use std::collections::HashSet;

use kcore_k8s::Quantity;
use serde_json::{json, Value};

use super::{
    dns_label, dns_subdomain, label_name, label_selector, non_negative, one_of, port_name_errors,
    port_num_or_name, port_number,
};
use crate::error::Cause;

const CONTAINER_LISTS: [&str; 2] = ["initContainers", "containers"];

/// A container's name (required, a DNS label, unique among `names`, which it joins) and
/// image (required), for every kind of container in a pod.
fn name_and_image(c: &Value, p: &str, names: &mut HashSet<String>, causes: &mut Vec<Cause>) {
    match c["name"].as_str() {
        None | Some("") => causes.push(Cause::required(format!("{p}.name"))),
        Some(n) if !super::is_dns1123_label(n) => {
            dns_label(&c["name"], &format!("{p}.name"), causes)
        }
        Some(n) => {
            if !names.insert(n.to_owned()) {
                causes.push(Cause::duplicate(format!("{p}.name"), &c["name"]));
            }
        }
    }
    if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
        causes.push(Cause::required(format!("{p}.image")));
    }
}

/// Validates a PodSpec at `path` (`spec`, or `spec.template.spec` in a workload).
pub(crate) fn spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let volumes = volumes(spec, path, causes);
    if spec["containers"].as_array().is_none_or(|l| l.is_empty()) {
        causes.push(Cause::required(format!("{path}.containers")));
    }
    let mut names = HashSet::new();
    for field in CONTAINER_LISTS {
        for (i, c) in spec[field].as_array().into_iter().flatten().enumerate() {
            let p = format!("{path}.{field}[{i}]");
            name_and_image(c, &p, &mut names, causes);
            container(c, &p, &volumes, field == "containers", causes);
            let grace = spec["terminationGracePeriodSeconds"].as_i64();
            lifecycle(c, &p, field == "containers", grace, causes);
        }
    }
    ephemeral_containers(spec, path, &names, &volumes, causes);
    one_of(
        &spec["restartPolicy"],
        &format!("{path}.restartPolicy"),
        &["Always", "OnFailure", "Never"],
        causes,
    );
    one_of(
        &spec["dnsPolicy"],
        &format!("{path}.dnsPolicy"),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        causes,
    );
    dns_label(&spec["hostname"], &format!("{path}.hostname"), causes);
    dns_label(&spec["subdomain"], &format!("{path}.subdomain"), causes);
    if let Some(ads) = spec["activeDeadlineSeconds"].as_i64() {
        if !(1..=i64::from(i32::MAX)).contains(&ads) {
            causes.push(Cause::invalid(
                format!("{path}.activeDeadlineSeconds"),
                &spec["activeDeadlineSeconds"],
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    if let Some(sa) = spec["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        dns_subdomain(&json!(sa), &format!("{path}.serviceAccountName"), causes);
    }
    tolerations(&spec["tolerations"], &format!("{path}.tolerations"), causes);
    affinity(&spec["affinity"], &format!("{path}.affinity"), causes);
    topology_spread(
        &spec["topologySpreadConstraints"],
        &format!("{path}.topologySpreadConstraints"),
        causes,
    );
}

/// Fields of a container that an ephemeral container may not set: what the pod's
/// service relies on (ports, probes, hooks, resources, restarts).
const NOT_FOR_EPHEMERAL: [&str; 9] = [
    "ports",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "restartPolicyRules",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
];

/// Whether a JSON field holds its type's zero value (how upstream tells "not set").
fn unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Ephemeral containers as upstream's `validateEphemeralContainers`: a container's
/// common rules, a name unique among all the pod's containers, a `targetContainerName`
/// naming a regular or init container, none of [`NOT_FOR_EPHEMERAL`], and no subPath
/// mounts. `others` are the names of the regular and init containers.
fn ephemeral_containers(
    spec: &Value,
    path: &str,
    others: &HashSet<String>,
    volumes: &HashSet<String>,
    causes: &mut Vec<Cause>,
) {
    let mut names = others.clone();
    for (i, c) in spec["ephemeralContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = format!("{path}.ephemeralContainers[{i}]");
        name_and_image(c, &p, &mut names, causes);
        if let Some(t) = c["targetContainerName"].as_str().filter(|t| !t.is_empty()) {
            if !others.contains(t) {
                causes.push(Cause::not_found(
                    format!("{p}.targetContainerName"),
                    &c["targetContainerName"],
                ));
            }
        }
        // the common rules on what may be set; the forbidden fields are reported once
        let mut common = c.clone();
        for f in NOT_FOR_EPHEMERAL {
            if !unset(&c[f]) {
                causes.push(Cause::forbidden(
                    format!("{p}.{f}"),
                    "cannot be set for an Ephemeral Container",
                ));
            }
            common.as_object_mut().map(|o| o.remove(f));
        }
        container(&common, &p, volumes, true, causes);
        for (j, m) in c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            for f in ["subPath", "subPathExpr"] {
                if m[f].as_str().is_some_and(|s| !s.is_empty()) {
                    causes.push(Cause::forbidden(
                        format!("{p}.volumeMounts[{j}].{f}"),
                        "cannot be set for an Ephemeral Container",
                    ));
                }
            }
        }
    }
}

/// A `pods/ephemeralcontainers` update: ephemeral containers may be added, never
/// removed or changed.
pub(crate) fn ephemeral_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let list = |p: &Value| -> Vec<Value> {
        p["spec"]["ephemeralContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let new_list = list(new);
    for o in list(old) {
        let name = o["name"].as_str().unwrap_or_default();
        match new_list.iter().find(|n| n["name"] == o["name"]) {
            None => causes.push(Cause::forbidden(
                "spec.ephemeralContainers",
                &format!("existing ephemeral containers {name:?} may not be removed"),
            )),
            Some(n) if *n != o => causes.push(Cause::forbidden(
                "spec.ephemeralContainers",
                &format!("existing ephemeral containers {name:?} may not be changed"),
            )),
            Some(_) => {}
        }
    }
}

/// Volume names (required, DNS labels, unique), each with exactly one source; returns
/// the names for the mounts to refer to.
fn volumes(spec: &Value, path: &str, causes: &mut Vec<Cause>) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let p = format!("{path}.volumes[{i}]");
        let sources: Vec<&String> = v
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
            .filter(|k| *k != "name")
            .collect();
        match sources.as_slice() {
            [] => causes.push(Cause::required_because(&p, "must specify a volume type")),
            [_] => {}
            [_, rest @ ..] => {
                for k in rest {
                    causes.push(Cause::forbidden(
                        format!("{p}.{k}"),
                        "may not specify more than 1 volume type",
                    ));
                }
            }
        }
        match v["name"].as_str() {
            None | Some("") => causes.push(Cause::required(format!("{p}.name"))),
            Some(n) => {
                dns_label(&v["name"], &format!("{p}.name"), causes);
                if !names.insert(n.to_owned()) {
                    causes.push(Cause::duplicate(format!("{p}.name"), &v["name"]));
                }
            }
        }
    }
    names
}

fn container(
    c: &Value,
    p: &str,
    volumes: &HashSet<String>,
    regular: bool,
    causes: &mut Vec<Cause>,
) {
    let mut port_names = HashSet::new();
    for (j, port) in c["ports"].as_array().into_iter().flatten().enumerate() {
        let pp = format!("{p}.ports[{j}]");
        if let Some(n) = port["name"].as_str() {
            for why in port_name_errors(n) {
                causes.push(Cause::invalid(format!("{pp}.name"), &port["name"], why));
            }
            if !port_names.insert(n.to_owned()) {
                causes.push(Cause::duplicate(format!("{pp}.name"), &port["name"]));
            }
        }
        if port["containerPort"].is_null() {
            causes.push(Cause::required(format!("{pp}.containerPort")));
        } else {
            port_number(
                &port["containerPort"],
                &format!("{pp}.containerPort"),
                causes,
            );
        }
        if port["hostPort"].as_i64().is_some_and(|h| h != 0) {
            port_number(&port["hostPort"], &format!("{pp}.hostPort"), causes);
        }
        one_of(
            &port["protocol"],
            &format!("{pp}.protocol"),
            &["SCTP", "TCP", "UDP"],
            causes,
        );
    }
    for (j, e) in c["env"].as_array().into_iter().flatten().enumerate() {
        let ep = format!("{p}.env[{j}]");
        match e["name"].as_str() {
            None | Some("") => causes.push(Cause::required(format!("{ep}.name"))),
            Some(n) => {
                if !n.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'=') {
                    causes.push(Cause::invalid(
                        format!("{ep}.name"),
                        &e["name"],
                        "a valid environment variable name must consist only of printable ASCII characters other than '='",
                    ));
                }
            }
        }
        let from = &e["valueFrom"];
        if from.is_object() {
            let n = from.as_object().map_or(0, |o| o.len());
            if n != 1 {
                causes.push(Cause::invalid(
                    format!("{ep}.valueFrom"),
                    &json!(""),
                    "may not have more than one field specified at a time",
                ));
            }
            if e["value"].as_str().is_some_and(|v| !v.is_empty()) {
                causes.push(Cause::invalid(
                    format!("{ep}.valueFrom"),
                    &json!(""),
                    "may not be specified when `value` is not empty",
                ));
            }
        }
    }
    resources(&c["resources"], &format!("{p}.resources"), causes);
    one_of(
        &c["imagePullPolicy"],
        &format!("{p}.imagePullPolicy"),
        &["Always", "IfNotPresent", "Never"],
        causes,
    );
    one_of(
        &c["terminationMessagePolicy"],
        &format!("{p}.terminationMessagePolicy"),
        &["File", "FallbackToLogsOnError"],
        causes,
    );
    if !regular {
        // Only sidecars (restartPolicy Always) may set an init container's policy.
        one_of(
            &c["restartPolicy"],
            &format!("{p}.restartPolicy"),
            &["Always"],
            causes,
        );
    }
    let mut mount_paths = HashSet::new();
    for (j, m) in c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mp = format!("{p}.volumeMounts[{j}]");
        match m["name"].as_str() {
            None | Some("") => causes.push(Cause::required(format!("{mp}.name"))),
            Some(n) if !volumes.contains(n) => {
                causes.push(Cause::not_found(format!("{mp}.name"), &m["name"]))
            }
            Some(_) => {}
        }
        match m["mountPath"].as_str() {
            None | Some("") => causes.push(Cause::required(format!("{mp}.mountPath"))),
            Some(path) => {
                if !mount_paths.insert(path.to_owned()) {
                    causes.push(Cause::invalid(
                        format!("{mp}.mountPath"),
                        &m["mountPath"],
                        "must be unique",
                    ));
                }
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let pr = &c[probe];
        if pr.is_null() {
            continue;
        }
        let pp = format!("{p}.{probe}");
        if !regular {
            // Init containers (other than sidecars) may not have probes.
            if c["restartPolicy"] != "Always" {
                causes.push(Cause::forbidden(
                    &pp,
                    "may not be set for init containers without restartPolicy=Always",
                ));
            }
            continue;
        }
        handler(pr, &pp, &PROBE_HANDLERS, causes);
        for f in [
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
        ] {
            non_negative(&pr[f], &format!("{pp}.{f}"), causes);
        }
        if probe != "readinessProbe" && pr["successThreshold"].as_i64().is_some_and(|n| n != 1) {
            causes.push(Cause::invalid(
                format!("{pp}.successThreshold"),
                &pr["successThreshold"],
                "must be 1",
            ));
        }
        if pr["terminationGracePeriodSeconds"]
            .as_i64()
            .is_some_and(|n| n <= 0)
        {
            causes.push(Cause::invalid(
                format!("{pp}.terminationGracePeriodSeconds"),
                &pr["terminationGracePeriodSeconds"],
                "must be greater than 0",
            ));
        }
    }
}

/// The handler types of a probe.
const PROBE_HANDLERS: [&str; 4] = ["exec", "httpGet", "tcpSocket", "grpc"];
/// The handler types of a lifecycle hook (`tcpSocket` is kept by upstream for backward
/// compatibility only, and accepted).
const LIFECYCLE_HANDLERS: [&str; 4] = ["exec", "httpGet", "tcpSocket", "sleep"];

/// A container's `lifecycle`: each of `postStart` and `preStop` has exactly one handler
/// (upstream's `validateLifecycle`), a `sleep` lasts from 0 up to the pod's grace period;
/// init containers other than sidecars have none.
fn lifecycle(c: &Value, p: &str, regular: bool, grace: Option<i64>, causes: &mut Vec<Cause>) {
    let lc = &c["lifecycle"];
    if lc.is_null() {
        return;
    }
    if !regular && c["restartPolicy"] != "Always" {
        causes.push(Cause::forbidden(
            format!("{p}.lifecycle"),
            "may not be set for init containers without restartPolicy=Always",
        ));
        return;
    }
    for hook in ["postStart", "preStop"] {
        if !lc[hook].is_null() {
            let hp = format!("{p}.lifecycle.{hook}");
            handler(&lc[hook], &hp, &LIFECYCLE_HANDLERS, causes);
            let secs = &lc[hook]["sleep"]["seconds"];
            if let (Some(g), Some(n)) = (grace, secs.as_i64()) {
                if n < 0 || n > g {
                    causes.push(Cause::invalid(
                        format!("{hp}.sleep"),
                        secs,
                        &format!(
                            "must be non-negative and less than terminationGracePeriodSeconds ({g})"
                        ),
                    ));
                }
            }
        }
    }
}

/// A probe's or lifecycle hook's handler: exactly one of the `kinds`.
fn handler(pr: &Value, pp: &str, kinds: &[&str], causes: &mut Vec<Cause>) {
    let mut n = 0;
    for &h in kinds {
        if pr[h].is_null() {
            continue;
        }
        if n > 0 {
            causes.push(Cause::forbidden(
                format!("{pp}.{h}"),
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        n += 1;
        match h {
            "exec" => {
                if pr[h]["command"].as_array().is_none_or(|c| c.is_empty()) {
                    causes.push(Cause::required(format!("{pp}.exec.command")));
                }
            }
            "httpGet" => {
                port_num_or_name(&pr[h]["port"], &format!("{pp}.httpGet.port"), causes);
                one_of(
                    &pr[h]["scheme"],
                    &format!("{pp}.httpGet.scheme"),
                    &["HTTP", "HTTPS"],
                    causes,
                );
            }
            "tcpSocket" => {
                port_num_or_name(&pr[h]["port"], &format!("{pp}.tcpSocket.port"), causes)
            }
            "sleep" => {}
            _ => port_number(&pr[h]["port"], &format!("{pp}.grpc.port"), causes),
        }
    }
    if n == 0 {
        causes.push(Cause::required_because(pp, "must specify a handler type"));
    }
}

/// Requests and limits: parseable, non-negative, and each request at most its limit.
fn resources(r: &Value, path: &str, causes: &mut Vec<Cause>) {
    let parse = |field: &str, causes: &mut Vec<Cause>| {
        let mut out = Vec::new();
        for (k, v) in r[field].as_object().into_iter().flatten() {
            let p = format!("{path}.{field}[{k}]");
            let standard = matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage")
                || k.starts_with("hugepages-");
            if !k.contains('/') && !standard {
                causes.push(Cause::invalid(
                    &p,
                    &json!(k),
                    "must be a standard resource for containers",
                ));
            }
            match v.as_str().map(Quantity::parse) {
                Some(Ok(q)) => {
                    if q < Quantity::new(0, 0) {
                        causes.push(Cause::invalid(&p, v, "must be greater than or equal to 0"));
                    }
                    out.push((k.clone(), v.clone(), q));
                }
                _ => causes.push(Cause::invalid(
                    &p,
                    v,
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                )),
            }
        }
        out
    };
    let limits = parse("limits", causes);
    let requests = parse("requests", causes);
    for (name, shown, q) in &requests {
        if let Some((_, limit, lq)) = limits.iter().find(|(n, _, _)| n == name) {
            if q > lq {
                causes.push(Cause::invalid(
                    format!("{path}.requests"),
                    shown,
                    &format!(
                        "must be less than or equal to {name} limit of {}",
                        limit.as_str().unwrap_or_default()
                    ),
                ));
            }
        }
    }
}

/// Upstream's `ValidateTolerations`.
pub(crate) fn tolerations(list: &Value, path: &str, causes: &mut Vec<Cause>) {
    for (i, t) in list.as_array().into_iter().flatten().enumerate() {
        let p = format!("{path}[{i}]");
        let key = t["key"].as_str().unwrap_or_default();
        if !key.is_empty() {
            label_name(&t["key"], &format!("{p}.key"), causes);
        }
        let op = t["operator"].as_str().unwrap_or_default();
        if key.is_empty() && op != "Exists" {
            causes.push(Cause::invalid(
                format!("{p}.operator"),
                &json!(op),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        let effect = t["effect"].as_str().unwrap_or_default();
        if !t["tolerationSeconds"].is_null() && effect != "NoExecute" {
            causes.push(Cause::invalid(
                format!("{p}.effect"),
                &json!(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "" | "Equal" => {}
            "Exists" => {
                if t["value"].as_str().is_some_and(|v| !v.is_empty()) {
                    causes.push(Cause::invalid(
                        format!("{p}.operator"),
                        t,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            _ => causes.push(Cause::not_supported(
                format!("{p}.operator"),
                &t["operator"],
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() {
            one_of(
                &t["effect"],
                &format!("{p}.effect"),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                causes,
            );
        }
    }
}

fn node_selector_term(term: &Value, path: &str, causes: &mut Vec<Cause>) {
    for (j, rq) in term["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = format!("{path}.matchExpressions[{j}]");
        let n = rq["values"].as_array().map_or(0, Vec::len);
        match rq["operator"].as_str().unwrap_or_default() {
            "In" | "NotIn" => {
                if n == 0 {
                    causes.push(Cause::required_because(
                        format!("{p}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if n > 0 {
                    causes.push(Cause::forbidden(
                        format!("{p}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            "Gt" | "Lt" => {
                if n != 1 {
                    causes.push(Cause::required_because(
                        format!("{p}.values"),
                        "must be specified single value when `operator` is 'Lt' or 'Gt'",
                    ));
                }
            }
            _ => causes.push(Cause::invalid(
                format!("{p}.operator"),
                &rq["operator"],
                "not a valid selector operator",
            )),
        }
        label_name(&rq["key"], &format!("{p}.key"), causes);
    }
}

fn weight(v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if !v.as_i64().is_some_and(|w| (1..=100).contains(&w)) {
        causes.push(Cause::invalid(path, v, "must be in the range 1-100"));
    }
}

fn pod_affinity_term(term: &Value, path: &str, causes: &mut Vec<Cause>) {
    label_selector(
        &term["labelSelector"],
        &format!("{path}.labelSelector"),
        causes,
    );
    if term["topologyKey"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required_because(
            format!("{path}.topologyKey"),
            "can not be empty",
        ));
    } else {
        label_name(&term["topologyKey"], &format!("{path}.topologyKey"), causes);
    }
}

/// Upstream's `validateAffinity`: node affinity terms and pod (anti-)affinity terms.
fn affinity(a: &Value, path: &str, causes: &mut Vec<Cause>) {
    let na = &a["nodeAffinity"];
    let req = &na["requiredDuringSchedulingIgnoredDuringExecution"];
    if !req.is_null() {
        let tp = format!(
            "{path}.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"
        );
        match req["nodeSelectorTerms"].as_array() {
            Some(terms) if !terms.is_empty() => {
                for (i, t) in terms.iter().enumerate() {
                    node_selector_term(t, &format!("{tp}[{i}]"), causes);
                }
            }
            _ => causes.push(Cause::required_because(
                tp,
                "must have at least one node selector term",
            )),
        }
    }
    let pp = format!("{path}.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution");
    for (i, t) in na["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        weight(&t["weight"], &format!("{pp}[{i}].weight"), causes);
        node_selector_term(&t["preference"], &format!("{pp}[{i}].preference"), causes);
    }
    for kind in ["podAffinity", "podAntiAffinity"] {
        let k = &a[kind];
        let rp = format!("{path}.{kind}.requiredDuringSchedulingIgnoredDuringExecution");
        for (i, t) in k["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            pod_affinity_term(t, &format!("{rp}[{i}]"), causes);
        }
        let pp = format!("{path}.{kind}.preferredDuringSchedulingIgnoredDuringExecution");
        for (i, t) in k["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            weight(&t["weight"], &format!("{pp}[{i}].weight"), causes);
            pod_affinity_term(
                &t["podAffinityTerm"],
                &format!("{pp}[{i}].podAffinityTerm"),
                causes,
            );
        }
    }
}

/// Upstream's `validateTopologySpreadConstraints`.
fn topology_spread(list: &Value, path: &str, causes: &mut Vec<Cause>) {
    let all = list.as_array().map(Vec::as_slice).unwrap_or_default();
    for (i, c) in all.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if c["maxSkew"].as_i64().is_none_or(|m| m <= 0) {
            causes.push(Cause::invalid(
                format!("{p}.maxSkew"),
                &c["maxSkew"],
                "must be greater than zero",
            ));
        }
        if c["topologyKey"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required_because(
                format!("{p}.topologyKey"),
                "can not be empty",
            ));
        } else {
            label_name(&c["topologyKey"], &format!("{p}.topologyKey"), causes);
        }
        let wu = &c["whenUnsatisfiable"];
        if !matches!(wu.as_str(), Some("DoNotSchedule" | "ScheduleAnyway")) {
            causes.push(Cause::not_supported(
                format!("{p}.whenUnsatisfiable"),
                wu,
                &["DoNotSchedule", "ScheduleAnyway"],
            ));
        }
        let repeated = all[i + 1..].iter().any(|o| {
            o["topologyKey"] == c["topologyKey"] && o["whenUnsatisfiable"] == c["whenUnsatisfiable"]
        });
        if repeated {
            causes.push(Cause::duplicate(
                format!("{p}.{{topologyKey, whenUnsatisfiable}}"),
                &json!(format!(
                    "{{{}, {}}}",
                    c["topologyKey"].as_str().unwrap_or_default(),
                    wu.as_str().unwrap_or_default()
                )),
            ));
        }
        if let Some(md) = c["minDomains"].as_i64() {
            if md < 1 {
                causes.push(Cause::invalid(
                    format!("{p}.minDomains"),
                    &c["minDomains"],
                    "must be greater than zero",
                ));
            } else if wu != "DoNotSchedule" {
                causes.push(Cause::invalid(
                    format!("{p}.minDomains"),
                    &c["minDomains"],
                    &format!(
                        "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {}",
                        wu.as_str().unwrap_or_default()
                    ),
                ));
            }
        }
        label_selector(&c["labelSelector"], &format!("{p}.labelSelector"), causes);
    }
}

/// The parts of a pod's status upstream checks on status updates: addresses are IPs
/// (`podIP` first among `podIPs`), `nominatedNodeName` a DNS subdomain.
pub(crate) fn status(st: &Value, causes: &mut Vec<Cause>) {
    for f in ["podIP", "hostIP"] {
        if let Some(ip) = st[f].as_str().filter(|s| !s.is_empty()) {
            if super::ip_family(ip).is_none() {
                causes.push(Cause::invalid(format!("status.{f}"), &st[f], super::MSG_IP));
            }
        }
    }
    for (list, key) in [("podIPs", "podIPs"), ("hostIPs", "hostIPs")] {
        for (i, a) in st[list].as_array().into_iter().flatten().enumerate() {
            if a["ip"].as_str().and_then(super::ip_family).is_none() {
                causes.push(Cause::invalid(
                    format!("status.{key}[{i}].ip"),
                    &a["ip"],
                    super::MSG_IP,
                ));
            }
        }
    }
    if let (Some(ip), Some(first)) = (st["podIP"].as_str(), st["podIPs"][0]["ip"].as_str()) {
        if ip != first {
            causes.push(Cause::invalid(
                "status.podIPs[0].ip",
                &st["podIPs"][0]["ip"],
                "must be equal to `podIP`",
            ));
        }
    }
    if let Some(n) = st["nominatedNodeName"].as_str().filter(|s| !s.is_empty()) {
        dns_subdomain(&json!(n), "status.nominatedNodeName", causes);
    }
}

/// The fields of a pod spec a running pod may change, as upstream lists them.
const UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Upstream's `ValidatePodUpdate` for the spec: only images, `activeDeadlineSeconds`
/// (set, or lowered), added tolerations, removed scheduling gates (and, on a gated pod,
/// added node selectors), and `terminationGracePeriodSeconds` from negative to 1 may
/// change. Resources change through `pods/resize` only.
pub(crate) fn update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let (ns, os) = (&new["spec"], &old["spec"]);
    for field in CONTAINER_LISTS {
        let n = ns[field].as_array().map_or(0, Vec::len);
        if n != os[field].as_array().map_or(0, Vec::len) {
            let what = if field == "containers" {
                "containers"
            } else {
                "init containers"
            };
            causes.push(Cause::forbidden(
                format!("spec.{field}"),
                &format!("pod updates may not add or remove {what}"),
            ));
            return;
        }
    }
    let ads = &ns["activeDeadlineSeconds"];
    let old_ads = &os["activeDeadlineSeconds"];
    match (ads.as_i64(), old_ads.as_i64()) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => {
            causes.push(Cause::invalid(
                "spec.activeDeadlineSeconds",
                ads,
                "must be between 0 and 2147483647, inclusive",
            ));
            return;
        }
        (Some(n), Some(o)) if o < n => {
            causes.push(Cause::invalid(
                "spec.activeDeadlineSeconds",
                ads,
                "must be less than or equal to previous value",
            ));
            return;
        }
        (None, Some(_)) => {
            causes.push(Cause::invalid(
                "spec.activeDeadlineSeconds",
                &Value::Null,
                "must not update from a positive integer to nil value",
            ));
        }
        _ => {}
    }
    // The new spec with every allowed change taken back to the old value: what is left
    // must equal the old spec.
    let mut munged = ns.clone();
    for field in CONTAINER_LISTS {
        if let (Some(cs), Some(ocs)) = (munged[field].as_array_mut(), os[field].as_array()) {
            for (c, oc) in cs.iter_mut().zip(ocs) {
                c["image"] = oc["image"].clone();
            }
        }
    }
    munged["activeDeadlineSeconds"] = old_ads.clone();
    let old_tol = os["tolerations"].as_array().cloned().unwrap_or_default();
    let new_tol = ns["tolerations"].as_array().cloned().unwrap_or_default();
    if old_tol.iter().all(|t| new_tol.contains(t)) {
        munged["tolerations"] = os["tolerations"].clone();
    }
    if os["terminationGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|g| g < 0)
        && ns["terminationGracePeriodSeconds"] == 1
    {
        munged["terminationGracePeriodSeconds"] = os["terminationGracePeriodSeconds"].clone();
    }
    let old_gates = os["schedulingGates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let new_gates = ns["schedulingGates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !old_gates.is_empty() {
        if new_gates.iter().all(|g| old_gates.contains(g)) {
            munged["schedulingGates"] = os["schedulingGates"].clone();
        } else {
            causes.push(Cause::forbidden(
                "spec.schedulingGates",
                "only deletion is allowed, but found new scheduling gate",
            ));
        }
        // A gated pod may gain node selectors (not change or lose them).
        let old_sel = os["nodeSelector"].as_object().cloned().unwrap_or_default();
        let new_sel = ns["nodeSelector"].as_object().cloned().unwrap_or_default();
        if old_sel.iter().all(|(k, v)| new_sel.get(k) == Some(v)) {
            munged["nodeSelector"] = os["nodeSelector"].clone();
        }
    } else if !new_gates.is_empty() {
        causes.push(Cause::forbidden(
            "spec.schedulingGates",
            "only deletion is allowed, but found new scheduling gate",
        ));
        munged["schedulingGates"] = os["schedulingGates"].clone();
    }
    let strip = |v: &mut Value| {
        if let Some(o) = v.as_object_mut() {
            o.retain(|_, x| !x.is_null());
        }
    };
    strip(&mut munged);
    let mut old_spec = os.clone();
    strip(&mut old_spec);
    if munged != old_spec {
        causes.push(Cause::forbidden(
            "spec",
            &format!(
                "pod updates may not change fields other than {UPDATABLE}\n{}",
                super::diff("core.PodSpec", &old_spec, &munged)
            ),
        ));
    }
}
