//! Pod Security admission, as upstream's `PodSecurity` plugin
//! (`k8s.io/pod-security-admission`).
//!
//! A namespace chooses, by label, a level per mode:
//! `pod-security.kubernetes.io/{enforce,audit,warn}` = `privileged` | `baseline` |
//! `restricted`, each with an optional `…-version` = `latest` | `v1.<minor>` (a version newer
//! than the server's is the server's). Labels it lacks come from the configured defaults
//! (all `privileged:latest` unless an `AdmissionConfiguration` says otherwise).
//!
//! - **Pods** (create, and updates that change an image; not their `status`, `binding`
//!   and other subresources): an `enforce` violation is a 403 `pods "<name>" is
//!   forbidden: violates PodSecurity "<level>:<version>": <reasons>`; a `warn` violation
//!   a `Warning` header `would violate PodSecurity …`; an `audit` violation an audit
//!   annotation `pod-security.kubernetes.io/audit-violations`.
//! - **Workloads** with a pod template (ReplicationController, PodTemplate, ReplicaSet,
//!   Deployment, StatefulSet, DaemonSet, Job, CronJob): `warn` and `audit` only, as
//!   upstream: their pods are enforced when created.
//! - **Namespaces**: invalid labels are refused (422); making `enforce` stricter warns
//!   about the existing pods that would violate it, grouped by reason.
//! - **Exemptions** by user name, namespace and runtime class from the configuration.
//!
//! The checks themselves are in `checks`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::api::{Api, ListOptions};
use crate::error::{ApiError, Cause, Error};
use crate::resources;

mod checks;

const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// A Pod Security level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "privileged" => Some(Self::Privileged),
            "baseline" => Some(Self::Baseline),
            "restricted" => Some(Self::Restricted),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

/// A policy version: `None` is `latest`, else `v1.<minor>`.
type Version = Option<u32>;

fn parse_version(s: &str) -> Option<Version> {
    if s == "latest" {
        return Some(None);
    }
    let minor = s.strip_prefix("v1.")?;
    if minor.is_empty() || (minor.len() > 1 && minor.starts_with('0')) {
        return None;
    }
    minor.parse::<u32>().ok().map(Some)
}

/// A level at a version, written `level:version` as upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LevelVersion {
    level: Level,
    version: Version,
}

impl std::fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            None => write!(f, "{}:latest", self.level.as_str()),
            Some(m) => write!(f, "{}:v1.{m}", self.level.as_str()),
        }
    }
}

impl LevelVersion {
    const PRIVILEGED: Self = Self {
        level: Level::Privileged,
        version: None,
    };

    /// The violations of a pod (its `metadata` and `spec`) at this level and version.
    fn evaluate(&self, meta: &Value, spec: &Value) -> Vec<checks::Violation> {
        if self.level == Level::Privileged {
            return Vec::new();
        }
        let server: u32 = kcore_k8s::MINOR.parse().unwrap_or(u32::MAX);
        let minor = self.version.map_or(server, |m| m.min(server));
        checks::evaluate(meta, spec, self.level == Level::Restricted, minor)
    }

    fn equivalent(&self, other: &Self) -> bool {
        (self.level == Level::Privileged && other.level == Level::Privileged) || self == other
    }
}

/// The three modes of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    enforce: LevelVersion,
    audit: LevelVersion,
    warn: LevelVersion,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            enforce: LevelVersion::PRIVILEGED,
            audit: LevelVersion::PRIVILEGED,
            warn: LevelVersion::PRIVILEGED,
        }
    }
}

impl Policy {
    fn fully_privileged(&self) -> bool {
        [self.enforce, self.audit, self.warn]
            .iter()
            .all(|m| m.level == Level::Privileged)
    }

    fn equivalent(&self, o: &Self) -> bool {
        self.enforce.equivalent(&o.enforce)
            && self.audit.equivalent(&o.audit)
            && self.warn.equivalent(&o.warn)
    }

    /// Upstream's `PolicyToEvaluate`: the policy of a namespace with these labels, and the
    /// invalid labels (`metadata.labels[<key>]`, the value, why). An invalid enforce level
    /// is `restricted`, invalid audit and warn levels are `privileged`, an invalid version
    /// is `latest`; `warn` follows an explicit, stricter `enforce` unless labelled.
    fn from_labels(labels: &Value, defaults: &Policy) -> (Policy, Vec<Cause>) {
        let mut p = *defaults;
        let mut errs = Vec::new();
        let label = |mode: &str, suffix: &str| {
            labels[format!("{LABEL_PREFIX}{mode}{suffix}")]
                .as_str()
                .map(str::to_owned)
        };
        let mut bad = |key: String, value: &str, why: &str| {
            errs.push(Cause::invalid(
                format!("metadata.labels[{key}]"),
                &json!(value),
                why,
            ));
        };
        const LEVELS: &str = "must be one of privileged, baseline, restricted";
        const VERSIONS: &str = "must be \"latest\" or \"v1.x\"";
        let mut has_enforce = false;
        let (mut has_warn_level, mut has_warn_version) = (false, false);
        for (mode, slot) in [
            ("enforce", &mut p.enforce),
            ("audit", &mut p.audit),
            ("warn", &mut p.warn),
        ] {
            if let Some(v) = label(mode, "") {
                match Level::parse(&v) {
                    Some(l) => {
                        slot.level = l;
                        has_enforce |= mode == "enforce";
                    }
                    None => {
                        slot.level = if mode == "enforce" {
                            Level::Restricted
                        } else {
                            Level::Privileged
                        };
                        bad(format!("{LABEL_PREFIX}{mode}"), &v, LEVELS);
                    }
                }
                has_warn_level |= mode == "warn";
            }
            if let Some(v) = label(mode, "-version") {
                match parse_version(&v) {
                    Some(ver) => slot.version = ver,
                    None => {
                        slot.version = None;
                        bad(format!("{LABEL_PREFIX}{mode}-version"), &v, VERSIONS);
                    }
                }
                has_warn_version |= mode == "warn";
            }
        }
        if !has_warn_level && has_enforce && p.enforce.level > p.warn.level {
            p.warn.level = p.enforce.level;
            if !has_warn_version {
                p.warn.version = p.enforce.version;
            }
        }
        (p, errs)
    }
}

/// The plugin's configuration: upstream's `PodSecurityConfiguration`
/// (`pod-security.admission.config.k8s.io/v1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Config {
    defaults: Policy,
    exempt_users: Vec<String>,
    exempt_namespaces: Vec<String>,
    exempt_runtime_classes: Vec<String>,
}

impl Config {
    /// Reads the `PodSecurity` plugin's configuration from an `AdmissionConfiguration`
    /// file (`apiserver.config.k8s.io/v1`, YAML or JSON): inline under `configuration`,
    /// or in the file its `path` names (relative to the first file). A file without a
    /// `PodSecurity` entry leaves the defaults.
    pub(crate) fn from_admission_config(path: &Path) -> Result<Self, Error> {
        let doc = read_yaml(path)?;
        let bad = |why: String| Error::Config(format!("{}: {why}", path.display()));
        if doc["kind"] != "AdmissionConfiguration" {
            return Err(bad(format!(
                "expected kind AdmissionConfiguration, not {}",
                doc["kind"]
            )));
        }
        let Some(plugin) = doc["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "PodSecurity")
        else {
            return Ok(Self::default());
        };
        let conf = match (&plugin["configuration"], plugin["path"].as_str()) {
            (c, _) if c.is_object() => c.clone(),
            (_, Some(p)) => read_yaml(&path.parent().unwrap_or(Path::new(".")).join(p))?,
            _ => return Ok(Self::default()),
        };
        Self::parse(&conf).map_err(bad)
    }

    fn parse(conf: &Value) -> Result<Self, String> {
        if conf["kind"] != "PodSecurityConfiguration" {
            return Err(format!(
                "expected kind PodSecurityConfiguration, not {}",
                conf["kind"]
            ));
        }
        let d = &conf["defaults"];
        let mut defaults = Policy::default();
        for (mode, slot) in [
            ("enforce", &mut defaults.enforce),
            ("audit", &mut defaults.audit),
            ("warn", &mut defaults.warn),
        ] {
            if let Some(l) = d[mode].as_str().filter(|s| !s.is_empty()) {
                slot.level = Level::parse(l).ok_or_else(|| {
                    format!("defaults.{mode}: Invalid value: {l:?}: must be one of privileged, baseline, restricted")
                })?;
            }
            let key = format!("{mode}-version");
            if let Some(v) = d[&key].as_str().filter(|s| !s.is_empty()) {
                slot.version = parse_version(v).ok_or_else(|| {
                    format!("defaults.{key}: Invalid value: {v:?}: must be \"latest\" or \"v1.x\"")
                })?;
            }
        }
        let list = |k: &str| -> Vec<String> {
            conf["exemptions"][k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        Ok(Self {
            defaults,
            exempt_users: list("usernames"),
            exempt_namespaces: list("namespaces"),
            exempt_runtime_classes: list("runtimeClasses"),
        })
    }

    fn exempt_namespace(&self, ns: &str) -> bool {
        !ns.is_empty() && self.exempt_namespaces.iter().any(|n| n == ns)
    }

    fn exempt_user(&self, user: &str) -> bool {
        !user.is_empty() && self.exempt_users.iter().any(|n| n == user)
    }

    fn exempt_runtime_class(&self, spec: &Value) -> bool {
        spec["runtimeClassName"]
            .as_str()
            .is_some_and(|rc| !rc.is_empty() && self.exempt_runtime_classes.iter().any(|n| n == rc))
    }

    /// Upstream's warning when a namespace that is exempt gets a policy.
    fn exempt_namespace_warning(&self, ns: &str, p: &Policy, labels: &Value) -> Option<String> {
        if p.fully_privileged() || p.equivalent(&self.defaults) {
            return None;
        }
        let has = |mode: &str| {
            labels[format!("{LABEL_PREFIX}{mode}")].is_string()
                || labels[format!("{LABEL_PREFIX}{mode}-version")].is_string()
        };
        let parts: Vec<String> = [("enforce", p.enforce), ("audit", p.audit), ("warn", p.warn)]
            .into_iter()
            .filter(|(m, lv)| lv.level != Level::Privileged && has(m))
            .map(|(m, lv)| format!("{m}={lv}"))
            .collect();
        Some(format!(
            "namespace {ns:?} is exempt from Pod Security, and the policy ({}) will be ignored",
            parts.join(", ")
        ))
    }
}

fn read_yaml(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    serde_yaml_ng::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: not YAML or JSON: {e}", path.display())))
}

/// The outcome of Pod Security for one request: warnings for the response and audit
/// annotations, or a denial.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub warnings: Vec<String>,
    pub annotations: BTreeMap<String, String>,
}

/// "reason (detail), reason (detail)" as upstream's `ForbiddenDetail`.
fn forbidden_detail(v: &[checks::Violation]) -> String {
    v.iter()
        .map(|v| {
            if v.detail.is_empty() {
                v.reason.clone()
            } else {
                format!("{} ({})", v.reason, v.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pod `metadata` and `spec` a workload of `plural` in `group` carries, if it is one
/// upstream checks.
fn template_of<'a>(group: &str, plural: &str, obj: &'a Value) -> Option<(&'a Value, &'a Value)> {
    let t = match (group, plural) {
        ("", "podtemplates") => &obj["template"],
        ("", "replicationcontrollers")
        | ("apps", "replicasets" | "deployments" | "statefulsets" | "daemonsets")
        | ("batch", "jobs") => &obj["spec"]["template"],
        ("batch", "cronjobs") => &obj["spec"]["jobTemplate"]["spec"]["template"],
        _ => return None,
    };
    t.is_object().then(|| (&t["metadata"], &t["spec"]))
}

/// Whether a pod update changes what Pod Security looks at (upstream: container count or
/// an image; an added ephemeral container).
fn significant_pod_update(new: &Value, old: &Value) -> bool {
    let images = |p: &Value, k: &str| -> Vec<Value> {
        p["spec"][k]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["image"].clone())
            .collect()
    };
    if images(new, "containers") != images(old, "containers")
        || images(new, "initContainers") != images(old, "initContainers")
    {
        return true;
    }
    let old_eph = old["spec"]["ephemeralContainers"].as_array();
    new["spec"]["ephemeralContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            !old_eph
                .into_iter()
                .flatten()
                .any(|o| o["name"] == c["name"] && o["image"] == c["image"])
        })
}

/// What a request asks of Pod Security.
pub(crate) struct Request<'a> {
    pub group: &'a str,
    pub plural: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub user: &'a str,
}

/// Runs Pod Security on a create or update of `obj` (`old` on update).
pub(crate) async fn admit(
    api: &Api,
    config: &Config,
    req: &Request<'_>,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Outcome, ApiError> {
    match (req.group, req.plural) {
        ("", "namespaces") => namespace(api, config, req, obj, old).await,
        ("", "pods") => {
            if matches!(
                req.subresource,
                Some(
                    "exec"
                        | "attach"
                        | "binding"
                        | "eviction"
                        | "log"
                        | "portforward"
                        | "proxy"
                        | "status"
                )
            ) {
                return Ok(Outcome::default());
            }
            if let Some(old) = old {
                if !significant_pod_update(obj, old) {
                    return Ok(Outcome::default());
                }
            }
            workload(api, config, req, &obj["metadata"], &obj["spec"], true).await
        }
        (g, p) => match template_of(g, p, obj) {
            Some((meta, spec)) if req.subresource.is_none() => {
                workload(api, config, req, meta, spec, false).await
            }
            _ => Ok(Outcome::default()),
        },
    }
}

async fn namespace_labels(api: &Api, ns: &str) -> Result<Value, ApiError> {
    let info = resources::lookup("", "v1", "namespaces").expect("served");
    let obj = api.get_in(info, None, ns).await.map_err(|e| {
        ApiError::internal(format!(
            "Internal error occurred: failed to lookup namespace {ns:?}: {}",
            e.message
        ))
    })?;
    Ok(obj["metadata"]["labels"].clone())
}

/// A pod (`enforce` true) or a workload's template (warn and audit only).
async fn workload(
    api: &Api,
    config: &Config,
    req: &Request<'_>,
    meta: &Value,
    spec: &Value,
    enforce: bool,
) -> Result<Outcome, ApiError> {
    let ns = req.namespace.unwrap_or_default();
    let mut out = Outcome::default();
    let exemption = |why: &str| {
        let mut o = Outcome::default();
        o.annotations
            .insert(format!("{LABEL_PREFIX}exempt"), why.to_owned());
        Ok(o)
    };
    if config.exempt_namespace(ns) {
        return exemption("namespace");
    }
    if config.exempt_user(req.user) {
        return exemption("user");
    }
    let labels = match namespace_labels(api, ns).await {
        Ok(l) => l,
        Err(e) if enforce => return Err(e),
        Err(e) => {
            out.annotations.insert("error".into(), e.message);
            return Ok(out);
        }
    };
    let (policy, errs) = Policy::from_labels(&labels, &config.defaults);
    if errs.is_empty()
        && (if enforce {
            policy.fully_privileged()
        } else {
            policy.warn.level == Level::Privileged && policy.audit.level == Level::Privileged
        })
    {
        if enforce {
            out.annotations.insert(
                format!("{LABEL_PREFIX}enforce-policy"),
                LevelVersion::PRIVILEGED.to_string(),
            );
        }
        return Ok(out);
    }
    if config.exempt_runtime_class(spec) {
        return exemption("runtimeClass");
    }
    if !errs.is_empty() {
        let list: Vec<String> = errs
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let list = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        out.annotations
            .insert("error".into(), format!("Failed to parse policy: {list}"));
    }
    let mut cache: Vec<(LevelVersion, Vec<checks::Violation>)> = Vec::new();
    let mut results = |lv: LevelVersion| -> Vec<checks::Violation> {
        if let Some((_, r)) = cache.iter().find(|(k, _)| *k == lv) {
            return r.clone();
        }
        let r = lv.evaluate(meta, spec);
        cache.push((lv, r.clone()));
        r
    };
    if enforce {
        out.annotations.insert(
            format!("{LABEL_PREFIX}enforce-policy"),
            policy.enforce.to_string(),
        );
        let r = results(policy.enforce);
        if !r.is_empty() {
            let info = resources::lookup(req.group, "v1", req.plural).expect("pods are served");
            return Err(super::forbidden(
                info,
                req.name,
                &format!(
                    "violates PodSecurity {:?}: {}",
                    policy.enforce.to_string(),
                    forbidden_detail(&r)
                ),
            ));
        }
    }
    let audit = results(policy.audit);
    if !audit.is_empty() {
        out.annotations.insert(
            format!("{LABEL_PREFIX}audit-violations"),
            format!(
                "would violate PodSecurity {:?}: {}",
                policy.audit.to_string(),
                forbidden_detail(&audit)
            ),
        );
    }
    let warn = results(policy.warn);
    if !warn.is_empty() {
        out.warnings.push(format!(
            "would violate PodSecurity {:?}: {}",
            policy.warn.to_string(),
            forbidden_detail(&warn)
        ));
    }
    Ok(out)
}

/// The most pods checked when a namespace's enforce level is tightened (upstream's
/// default `namespaceMaxPodsToCheck`).
const MAX_PODS_TO_CHECK: usize = 3000;

async fn namespace(
    api: &Api,
    config: &Config,
    req: &Request<'_>,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Outcome, ApiError> {
    let mut out = Outcome::default();
    if req.subresource.is_some() {
        return Ok(out);
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or(req.name);
    let labels = &obj["metadata"]["labels"];
    let (policy, errs) = Policy::from_labels(labels, &config.defaults);
    let invalid = || Err(ApiError::invalid("", "Namespace", name, errs.clone()));
    let Some(old) = old else {
        if !errs.is_empty() {
            return invalid();
        }
        if config.exempt_namespace(name) {
            out.warnings
                .extend(config.exempt_namespace_warning(name, &policy, labels));
        }
        return Ok(out);
    };
    let (old_policy, old_errs) = Policy::from_labels(&old["metadata"]["labels"], &config.defaults);
    if !errs.is_empty() && (old_errs.is_empty() || old_errs != errs) {
        return invalid();
    }
    if policy.enforce == old_policy.enforce
        || policy.enforce.level == Level::Privileged
        || (policy.enforce.version == old_policy.enforce.version
            && policy.enforce.level <= old_policy.enforce.level)
    {
        return Ok(out);
    }
    if config.exempt_namespace(name) {
        out.warnings
            .extend(config.exempt_namespace_warning(name, &policy, labels));
        return Ok(out);
    }
    out.warnings = pods_in_namespace(api, config, name, policy.enforce).await;
    Ok(out)
}

/// Upstream's `EvaluatePodsInNamespace`: one warning per distinct set of reasons, naming
/// the first pod (by name) and how many others share it.
async fn pods_in_namespace(
    api: &Api,
    config: &Config,
    ns: &str,
    enforce: LevelVersion,
) -> Vec<String> {
    let list = match api
        .list_value("v1", "pods", Some(ns), &ListOptions::default())
        .await
    {
        Ok(l) => l,
        Err(_) => {
            return vec!["failed to list pods while checking new PodSecurity enforce level".into()]
        }
    };
    let pods: Vec<&Value> = list["items"].as_array().into_iter().flatten().collect();
    // one pod per controller first, then the rest (upstream's prioritizePods)
    let mut seen = std::collections::HashSet::new();
    let (mut first, mut rest) = (Vec::new(), Vec::new());
    for p in pods {
        if config.exempt_runtime_class(&p["spec"]) {
            continue;
        }
        let owner = p["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["controller"] == Value::Bool(true))
            .and_then(|o| o["uid"].as_str());
        match owner {
            Some(uid) if !seen.insert(uid.to_owned()) => rest.push(p),
            _ => first.push(p),
        }
    }
    first.extend(rest);
    let total = first.len();
    first.truncate(MAX_PODS_TO_CHECK);
    let mut warnings = Vec::new();
    if first.len() < total {
        warnings.push(format!(
            "new PodSecurity enforce level only checked against the first {} of {total} existing pods",
            first.len()
        ));
    }
    // reason -> (first pod name, count), in the order reasons were first seen
    let mut by_reason: Vec<(String, String, usize)> = Vec::new();
    for p in &first {
        let r = enforce.evaluate(&p["metadata"], &p["spec"]);
        if r.is_empty() {
            continue;
        }
        let reason = r
            .iter()
            .map(|v| v.reason.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let pod = p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match by_reason.iter_mut().find(|(r, _, _)| *r == reason) {
            Some((_, name, n)) => {
                *n += 1;
                if pod < *name {
                    *name = pod;
                }
            }
            None => by_reason.push((reason, pod, 1)),
        }
    }
    if !by_reason.is_empty() {
        warnings.push(format!(
            "existing pods in namespace {ns:?} violate the new PodSecurity enforce level {:?}",
            enforce.to_string()
        ));
    }
    let mut pod_warnings: Vec<String> = by_reason
        .into_iter()
        .map(|(reason, pod, n)| match n {
            1 => format!("{pod}: {reason}"),
            2 => format!("{pod} (and 1 other pod): {reason}"),
            n => format!("{pod} (and {} other pods): {reason}", n - 1),
        })
        .collect();
    pod_warnings.sort();
    warnings.extend(pod_warnings);
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Value {
        Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (format!("{LABEL_PREFIX}{k}"), json!(v)))
                .collect(),
        )
    }

    #[test]
    fn labels_resolve_as_upstream() {
        let d = Policy::default();
        let (p, e) = Policy::from_labels(&labels(&[("enforce", "baseline")]), &d);
        assert!(e.is_empty());
        assert_eq!(p.enforce.to_string(), "baseline:latest");
        // warn follows a stricter enforce
        assert_eq!(p.warn.to_string(), "baseline:latest");
        assert_eq!(p.audit.to_string(), "privileged:latest");
        let (p, _) = Policy::from_labels(
            &labels(&[
                ("enforce", "restricted"),
                ("enforce-version", "v1.24"),
                ("warn", "baseline"),
            ]),
            &d,
        );
        assert_eq!(p.enforce.to_string(), "restricted:v1.24");
        assert_eq!(p.warn.to_string(), "baseline:latest");
        let (p, e) = Policy::from_labels(
            &labels(&[("enforce", "strict"), ("warn-version", "1.2")]),
            &d,
        );
        assert_eq!(p.enforce.level, Level::Restricted);
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0].field,
            "metadata.labels[pod-security.kubernetes.io/enforce]"
        );
        for bad in ["v1.", "v1.01", "v2.1", "1.2", "latest "] {
            assert!(parse_version(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn configuration_parses() {
        let c = Config::parse(&json!({
            "apiVersion": "pod-security.admission.config.k8s.io/v1",
            "kind": "PodSecurityConfiguration",
            "defaults": {"enforce": "baseline", "enforce-version": "v1.30"},
            "exemptions": {"usernames": ["u"], "namespaces": ["kube-system"], "runtimeClasses": ["rc"]}
        }))
        .expect("valid");
        assert_eq!(c.defaults.enforce.to_string(), "baseline:v1.30");
        assert!(c.exempt_namespace("kube-system") && c.exempt_user("u"));
        assert!(c.exempt_runtime_class(&json!({"runtimeClassName": "rc"})));
        assert!(Config::parse(
            &json!({"kind": "PodSecurityConfiguration", "defaults": {"warn": "x"}})
        )
        .is_err());
    }

    #[test]
    fn image_changes_are_significant() {
        let p = json!({"spec": {"containers": [{"name": "c", "image": "a"}]}});
        let mut q = p.clone();
        q["metadata"] = json!({"labels": {"x": "y"}});
        assert!(!significant_pod_update(&q, &p));
        q["spec"]["containers"][0]["image"] = json!("b");
        assert!(significant_pod_update(&q, &p));
    }
}
