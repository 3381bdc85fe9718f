//! Validation helpers as upstream (`pkg/apis/*/validation`): names, labels, annotations,
//! ports, selectors, sizes, immutable fields, workloads; pod specs and the pod update
//! rule in [`pod`]. Each kind's rules are in its strategy (`registry/`), and
//! `registry::validate` runs them, ratcheted on update.

use serde_json::Value;

use crate::error::Cause;
use crate::selectors::LabelSelector;

pub(crate) mod pod;

/// RFC 1123 label: at most 63 lower-case alphanumerics or '-', alphanumeric at both ends.
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A label or annotation key: optional DNS-subdomain prefix and '/', then a name part.
pub(crate) fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(s),
    }
}

fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_qualified_name_part(s)
}

pub(crate) const MSG_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
pub(crate) const MSG_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const MSG_NAME_PART: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
pub(crate) const MSG_LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// Upstream's `ValidateDNS1123Label` of an optional string at `path`: nothing when absent.
pub(crate) fn dns_label(v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(s) = v.as_str() {
        if !is_dns1123_label(s) {
            let why = if s.len() > 63 {
                "must be no more than 63 characters"
            } else {
                MSG_LABEL
            };
            causes.push(Cause::invalid(path, v, why));
        }
    }
}

/// Upstream's `ValidateDNS1123Subdomain` of an optional string at `path`.
pub(crate) fn dns_subdomain(v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(s) = v.as_str() {
        if !is_dns1123_subdomain(s) {
            let why = if s.len() > 253 {
                "must be no more than 253 characters"
            } else {
                MSG_SUBDOMAIN
            };
            causes.push(Cause::invalid(path, v, why));
        }
    }
}

/// Upstream's `ValidateLabelName` (a qualified name) of a string at `path`.
pub(crate) fn label_name(v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if !v.as_str().is_some_and(is_qualified_name) {
        causes.push(Cause::invalid(path, v, MSG_NAME_PART));
    }
}

/// Upstream's `IsValidPortName` (an IANA service name): the reasons a name is not one.
pub(crate) fn port_name_errors(s: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if s.len() > 15 {
        out.push("must be no more than 15 characters");
    }
    if !s
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        out.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)");
    }
    if s.contains("--") {
        out.push("must not contain consecutive hyphens");
    }
    if s.starts_with('-') || s.ends_with('-') {
        out.push("must not begin or end with a hyphen");
    }
    out
}

/// A port number at `path` must be 1-65535 (upstream's `IsValidPortNum`).
pub(crate) fn port_number(v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if !v.as_i64().is_some_and(|p| (1..=65535).contains(&p)) {
        causes.push(Cause::invalid(path, v, MSG_PORT_RANGE));
    }
}

pub(crate) const MSG_PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

/// A port given by number or IANA name (`targetPort`, probe ports).
pub(crate) fn port_num_or_name(v: &Value, path: &str, causes: &mut Vec<Cause>) {
    match v {
        Value::String(s) => {
            for why in port_name_errors(s) {
                causes.push(Cause::invalid(path, v, why));
            }
        }
        Value::Null => causes.push(Cause::required(path)),
        _ => port_number(v, path, causes),
    }
}

/// An optional integer at `path` that must be `>= 0`.
pub(crate) fn non_negative(v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if v.as_i64().is_some_and(|n| n < 0) {
        causes.push(Cause::invalid(
            path,
            v,
            "must be greater than or equal to 0",
        ));
    }
}

/// An enumerated string at `path`: absent, or one of `allowed`.
pub(crate) fn one_of(v: &Value, path: &str, allowed: &[&str], causes: &mut Vec<Cause>) {
    if v.as_str().is_some_and(|s| !allowed.contains(&s)) {
        causes.push(Cause::not_supported(path, v, allowed));
    }
}

/// Upstream's `ValidateImmutableField`: `new` must equal `old`.
pub(crate) fn immutable(new: &Value, old: &Value, path: &str, causes: &mut Vec<Cause>) {
    if new != old {
        causes.push(Cause::invalid(path, new, MSG_IMMUTABLE));
    }
}

/// Upstream's `FieldImmutableErrorMsg`.
pub(crate) const MSG_IMMUTABLE: &str = "field is immutable";

/// Upstream's `MaxSecretSize`: the data of a ConfigMap or Secret, 1 MiB.
pub(crate) const MAX_DATA_SIZE: usize = 1024 * 1024;

/// An IPv4 or IPv6 address.
pub(crate) fn ip_family(s: &str) -> Option<&'static str> {
    match s.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(_) => Some("IPv4"),
        std::net::IpAddr::V6(_) => Some("IPv6"),
    }
}

/// Upstream's `IsValidIP` message.
pub(crate) const MSG_IP: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

/// A leaf-by-leaf account of how `new` differs from `old`, in the shape of upstream's
/// `cmp.Diff` of a spec (`-` old, `+` new), for the messages that show what changed.
pub(crate) fn diff(type_name: &str, old: &Value, new: &Value) -> String {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            _ if a == b => {}
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(&p, &a[k.as_str()], &b[k.as_str()], out);
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (u, v)) in x.iter().zip(y).enumerate() {
                    walk(&format!("{path}[{i}]"), u, v, out);
                }
            }
            _ => {
                if !a.is_null() {
                    out.push(format!("- \t{path}: {a}"));
                }
                if !b.is_null() {
                    out.push(format!("+ \t{path}: {b}"));
                }
            }
        }
    }
    let mut lines = Vec::new();
    walk("", old, new, &mut lines);
    format!("  {type_name}{{\n{}\n  }}\n", lines.join("\n"))
}

/// Validates metadata: name (an RFC 1123 label if `name_is_label`, else a subdomain),
/// labels, annotations.
/// What a kind's names must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// An RFC 1123 label (Namespaces, Services).
    Label,
    /// An RFC 1123 subdomain (most kinds).
    Subdomain,
    /// Anything usable as one path segment (RBAC's `ValidateRBACName`:
    /// `system:node` is a valid role name).
    PathSegment,
}

/// Upstream's `IsValidPathSegmentName`.
fn path_segment_faults(n: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    match n {
        "." => out.push("may not be '.'"),
        ".." => out.push("may not be '..'"),
        _ => {}
    }
    if n.contains('/') {
        out.push("may not contain '/'");
    }
    if n.contains('%') {
        out.push("may not contain '%'");
    }
    out
}

pub(crate) fn metadata(rule: NameRule, obj: &Value, causes: &mut Vec<Cause>) {
    let meta = &obj["metadata"];
    match meta["name"].as_str() {
        None | Some("") => causes.push(Cause::required("metadata.name")),
        Some(n) if rule == NameRule::PathSegment => {
            for why in path_segment_faults(n) {
                causes.push(Cause::invalid("metadata.name", &meta["name"], why));
            }
        }
        Some(n) => {
            if rule == NameRule::Label {
                if !is_dns1123_label(n) {
                    causes.push(Cause::invalid("metadata.name", &meta["name"], MSG_LABEL));
                }
            } else if !is_dns1123_subdomain(n) {
                causes.push(Cause::invalid(
                    "metadata.name",
                    &meta["name"],
                    MSG_SUBDOMAIN,
                ));
            }
        }
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                causes.push(Cause::invalid(
                    "metadata.labels",
                    &Value::String(k.clone()),
                    MSG_NAME_PART,
                ));
            }
            if !v.as_str().is_some_and(is_label_value) {
                causes.push(Cause::invalid("metadata.labels", v, MSG_LABEL_VALUE));
            }
        }
    }
    let finalizers = meta["finalizers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for f in finalizers {
        if !f.as_str().is_some_and(is_qualified_name) {
            causes.push(Cause::invalid("metadata.finalizers", f, MSG_NAME_PART));
        }
    }
    if finalizers.iter().any(|f| f == "orphan")
        && finalizers.iter().any(|f| f == "foregroundDeletion")
    {
        causes.push(Cause::invalid(
            "metadata.finalizers",
            &meta["finalizers"],
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    if let Some(ann) = meta["annotations"].as_object() {
        let mut total = 0;
        for (k, v) in ann {
            total += k.len() + v.as_str().map_or(0, str::len);
            if !is_qualified_name(k) {
                causes.push(Cause::invalid(
                    "metadata.annotations",
                    &Value::String(k.clone()),
                    MSG_NAME_PART,
                ));
            }
        }
        if total > 256 * 1024 {
            causes.push(Cause::too_long("metadata.annotations", 256 * 1024));
        }
    }
}

/// How much of a workload's pod template [`workload`] validates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Template {
    /// The whole pod spec (Deployments, ReplicaSets, DaemonSets).
    PodSpec,
    /// Only what upstream checks of a StatefulSet's template (its restart policy and
    /// deadline): the controller completes the spec (volumes from the claim templates)
    /// and the pods it makes are validated as pods.
    PoliciesOnly,
}

/// Validates a workload: replicas, selector against template labels, and the template's
/// pod spec (as `template` says) with the rules of pods owned by a controller
/// (`restartPolicy: Always`, no `activeDeadlineSeconds`). `kind` names the workload in
/// messages.
pub(crate) fn workload(obj: &Value, kind: &str, template: Template, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    if let Some(r) = spec.get("replicas").filter(|r| !r.is_null()) {
        if r.as_i64().is_none_or(|r| r < 0) {
            causes.push(Cause::invalid(
                "spec.replicas",
                r,
                "must be greater than or equal to 0",
            ));
        }
    }
    non_negative(&spec["minReadySeconds"], "spec.minReadySeconds", causes);
    non_negative(
        &spec["revisionHistoryLimit"],
        "spec.revisionHistoryLimit",
        causes,
    );
    let sel = &spec["selector"];
    let empty_sel = sel["matchLabels"].as_object().is_none_or(|m| m.is_empty())
        && sel["matchExpressions"]
            .as_array()
            .is_none_or(|m| m.is_empty());
    if sel.is_null() || empty_sel {
        causes.push(Cause::required("spec.selector"));
    } else {
        let tpl_meta = serde_json::json!({"metadata": {"labels": spec["template"]["metadata"]["labels"].clone()}});
        match LabelSelector::from_object(sel) {
            Err(why) => causes.push(Cause::invalid("spec.selector", sel, &why)),
            Ok(s) if !s.matches(&tpl_meta) => causes.push(Cause::invalid(
                "spec.template.metadata.labels",
                &spec["template"]["metadata"]["labels"],
                "`selector` does not match template `labels`",
            )),
            Ok(_) => {}
        }
    }
    for f in [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
        "fullyLabeledReplicas",
        "currentReplicas",
        "terminatingReplicas",
        "collisionCount",
        "currentNumberScheduled",
        "desiredNumberScheduled",
        "numberMisscheduled",
        "numberReady",
        "numberAvailable",
        "numberUnavailable",
        "updatedNumberScheduled",
    ] {
        non_negative(&obj["status"][f], &format!("status.{f}"), causes);
    }
    let pod = &spec["template"]["spec"];
    if template == Template::PodSpec {
        pod::spec(pod, "spec.template.spec", causes);
    }
    let rp = &pod["restartPolicy"];
    if rp.as_str().is_some_and(|p| p != "Always") {
        causes.push(Cause::not_supported(
            "spec.template.spec.restartPolicy",
            rp,
            &["Always"],
        ));
    }
    if !pod["activeDeadlineSeconds"].is_null() {
        causes.push(Cause::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            &format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
}

/// Upstream's `ValidatePositiveIntOrPercent` and `IsNotMoreThan100Percent` of an optional
/// int-or-string at `path`.
pub(crate) fn int_or_percent(v: &Value, path: &str, causes: &mut Vec<Cause>) {
    match v {
        Value::Null => {}
        Value::String(s) => match s.strip_suffix('%').map(str::parse::<i64>) {
            Some(Ok(p)) if p > 100 => {
                causes.push(Cause::invalid(path, v, "must not be greater than 100%"))
            }
            Some(Ok(p)) if p >= 0 => {}
            _ => causes.push(Cause::invalid(
                path,
                v,
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            )),
        },
        _ => non_negative(v, path, causes),
    }
}

/// Whether an int-or-percent is zero (`0` or `"0%"`).
pub(crate) fn is_zero_or_percent(v: &Value) -> bool {
    v.as_i64() == Some(0) || v.as_str() == Some("0%")
}

/// Whose data [`data`] validates: they differ in encoding and in where upstream reports
/// the size.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataOf {
    /// `data` is text, `binaryData` base64; the size is reported at `""`.
    ConfigMap,
    /// `data` is base64; the size is reported at `data`.
    Secret,
}

/// Validates the keys of `data` and `binaryData` (`stringData` too, before it is merged),
/// a ConfigMap key in both, and the total decoded size (at most [`MAX_DATA_SIZE`]).
pub(crate) fn data(obj: &Value, of: DataOf, causes: &mut Vec<Cause>) {
    use base64::Engine as _;
    let mut total = 0usize;
    for field in ["data", "binaryData", "stringData"] {
        for (k, v) in obj[field].as_object().into_iter().flatten() {
            let key = Value::String(k.clone());
            let path = format!("{field}[{k}]");
            for why in config_key_errors(k) {
                causes.push(Cause::invalid(&path, &key, why));
            }
            if field == "data" && obj["binaryData"].get(k).is_some() && of == DataOf::ConfigMap {
                causes.push(Cause::invalid(
                    &path,
                    &key,
                    "duplicate of key present in binaryData",
                ));
            }
            let s = v.as_str().unwrap_or_default();
            // Secret data and ConfigMap binaryData are base64 on the wire; their size is
            // that of the decoded bytes.
            let base64 = field == "binaryData" || (field == "data" && of == DataOf::Secret);
            total += if base64 {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_or(s.len(), |b| b.len())
            } else {
                s.len()
            };
        }
    }
    if total > MAX_DATA_SIZE {
        let at = match of {
            DataOf::ConfigMap => "",
            DataOf::Secret => "data",
        };
        causes.push(Cause::too_long(at, MAX_DATA_SIZE));
    }
}

/// The `immutable: true` rule of ConfigMaps and Secrets: once set, `immutable` stays and
/// the data `fields` do not change.
pub(crate) fn immutable_data(new: &Value, old: &Value, fields: &[&str], causes: &mut Vec<Cause>) {
    if old["immutable"] != true {
        return;
    }
    const WHY: &str = "field is immutable when `immutable` is set";
    if new["immutable"] != true {
        causes.push(Cause::forbidden("immutable", WHY));
    }
    for f in fields {
        let empty = |v: &Value| v.is_null() || v.as_object().is_some_and(|o| o.is_empty());
        if new[*f] != old[*f] && !(empty(&new[*f]) && empty(&old[*f])) {
            causes.push(Cause::forbidden(*f, WHY));
        }
    }
}

/// Upstream's `IsConfigMapKey`.
fn config_key_errors(k: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if k.len() > 253 {
        out.push("must be no more than 253 characters");
    }
    if k.is_empty()
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        out.push("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')");
    }
    match k {
        "." => out.push("must not be '.'"),
        ".." => out.push("must not be '..'"),
        _ if k.starts_with("..") => out.push("must not start with '..'"),
        _ => {}
    }
    out
}

/// Validates a label selector at `path` (upstream's `ValidateLabelSelector`).
pub(crate) fn label_selector(sel: &Value, path: &str, causes: &mut Vec<Cause>) {
    if sel.is_null() {
        return;
    }
    for (k, v) in sel["matchLabels"].as_object().into_iter().flatten() {
        label_name(
            &Value::String(k.clone()),
            &format!("{path}.matchLabels"),
            causes,
        );
        if !v.as_str().is_some_and(is_label_value) {
            causes.push(Cause::invalid(
                format!("{path}.matchLabels"),
                v,
                MSG_LABEL_VALUE,
            ));
        }
    }
    for (i, e) in sel["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = format!("{path}.matchExpressions[{i}]");
        let n = e["values"].as_array().map_or(0, Vec::len);
        match e["operator"].as_str().unwrap_or_default() {
            "In" | "NotIn" if n == 0 => causes.push(Cause::required_because(
                format!("{p}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if n > 0 => causes.push(Cause::forbidden(
                format!("{p}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => causes.push(Cause::invalid(
                format!("{p}.operator"),
                &e["operator"],
                "not a valid selector operator",
            )),
        }
        label_name(&e["key"], &format!("{p}.key"), causes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "a-b", "a1", "0"] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(is_qualified_name("App_1"));
        assert!(!is_qualified_name("/x"));
        assert!(!is_qualified_name("a/b/c"));
    }
}
