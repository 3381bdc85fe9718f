//! The Pod Security Standards checks, as upstream's `k8s.io/pod-security-admission/policy`:
//! each check has an id, a level, and versions from which its behaviour applies; a check
//! returns upstream's forbidden reason and detail, word for word.
//!
//! Checks read the pod's metadata and spec as JSON (`metadata`, `spec` of a Pod or of a
//! pod template).

use std::collections::BTreeSet;

use serde_json::Value;

/// A failed check: upstream's `ForbiddenReason` and `ForbiddenDetail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    pub reason: String,
    pub detail: String,
}

type CheckFn = fn(&Value, &Value, u32) -> Option<Violation>;

/// One check: its id, whether it is a restricted one, the first minor version it applies
/// from, and the baseline check ids it replaces at the restricted level (from which
/// minor version).
pub(crate) struct Check {
    pub id: &'static str,
    pub restricted: bool,
    pub since: u32,
    pub overrides: &'static [(&'static str, u32)],
    pub run: CheckFn,
}

/// Every check, baseline ones first, each group in upstream's order (ids sorted
/// byte-wise), which is the order of the reasons in a message.
pub(crate) static CHECKS: &[Check] = &[
    Check {
        id: "appArmorProfile",
        restricted: false,
        since: 0,
        overrides: &[],
        run: app_armor,
    },
    Check {
        id: "capabilities_baseline",
        restricted: false,
        since: 0,
        overrides: &[],
        run: capabilities_baseline,
    },
    Check {
        id: "hostNamespaces",
        restricted: false,
        since: 0,
        overrides: &[],
        run: host_namespaces,
    },
    Check {
        id: "hostPathVolumes",
        restricted: false,
        since: 0,
        overrides: &[],
        run: host_path_volumes,
    },
    Check {
        id: "hostPorts",
        restricted: false,
        since: 0,
        overrides: &[],
        run: host_ports,
    },
    Check {
        id: "hostProbesAndHostLifecycle",
        restricted: false,
        since: 34,
        overrides: &[],
        run: host_probes,
    },
    Check {
        id: "privileged",
        restricted: false,
        since: 0,
        overrides: &[],
        run: privileged,
    },
    Check {
        id: "procMount",
        restricted: false,
        since: 0,
        overrides: &[],
        run: proc_mount_baseline,
    },
    Check {
        id: "seLinuxOptions",
        restricted: false,
        since: 0,
        overrides: &[],
        run: selinux,
    },
    Check {
        id: "seccompProfile_baseline",
        restricted: false,
        since: 0,
        overrides: &[],
        run: seccomp_baseline,
    },
    Check {
        id: "sysctls",
        restricted: false,
        since: 0,
        overrides: &[],
        run: sysctls,
    },
    Check {
        id: "windowsHostProcess",
        restricted: false,
        since: 0,
        overrides: &[],
        run: windows_host_process,
    },
    Check {
        id: "allowPrivilegeEscalation",
        restricted: true,
        since: 8,
        overrides: &[],
        run: allow_privilege_escalation,
    },
    Check {
        id: "capabilities_restricted",
        restricted: true,
        since: 22,
        overrides: &[("capabilities_baseline", 22)],
        run: capabilities_restricted,
    },
    Check {
        id: "procMount_restricted",
        restricted: true,
        since: 35,
        overrides: &[("procMount", 35)],
        run: proc_mount_restricted,
    },
    Check {
        id: "restrictedVolumes",
        restricted: true,
        since: 0,
        overrides: &[("hostPathVolumes", 0)],
        run: restricted_volumes,
    },
    Check {
        id: "runAsNonRoot",
        restricted: true,
        since: 0,
        overrides: &[],
        run: run_as_non_root,
    },
    Check {
        id: "runAsUser",
        restricted: true,
        since: 23,
        overrides: &[],
        run: run_as_user,
    },
    Check {
        id: "seccompProfile_restricted",
        restricted: true,
        since: 19,
        overrides: &[("seccompProfile_baseline", 19)],
        run: seccomp_restricted,
    },
];

/// The violations of a pod at a level (`restricted` or not) and minor version `v1.<minor>`.
pub(crate) fn evaluate(meta: &Value, spec: &Value, restricted: bool, minor: u32) -> Vec<Violation> {
    let overridden = |id: &str| {
        restricted
            && CHECKS.iter().any(|c| {
                c.restricted
                    && c.since <= minor
                    && c.overrides
                        .iter()
                        .any(|(o, from)| *o == id && *from <= minor)
            })
    };
    CHECKS
        .iter()
        .filter(|c| c.since <= minor && (restricted || !c.restricted) && !overridden(c.id))
        .filter_map(|c| (c.run)(meta, spec, minor))
        .collect()
}

// ----- helpers -----

fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let v: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    format!("\"{}\"", v.join("\", \""))
}

fn pluralize<'a>(singular: &'a str, plural: &'a str, n: usize) -> &'a str {
    if n == 1 {
        singular
    } else {
        plural
    }
}

/// `container "a"` / `containers "a", "b"`.
fn containers_phrase(names: &[String]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

/// Init containers, containers, then ephemeral containers, as upstream's visitor.
fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |k| spec[k].as_array().into_iter().flatten())
}

fn name(c: &Value) -> String {
    c["name"].as_str().unwrap_or_default().to_owned()
}

fn windows(spec: &Value) -> bool {
    spec["os"]["name"] == "windows"
}

fn user_namespace(spec: &Value) -> bool {
    spec["hostUsers"] == Value::Bool(false)
}

fn violation(reason: impl Into<String>, detail: impl Into<String>) -> Option<Violation> {
    Some(Violation {
        reason: reason.into(),
        detail: detail.into(),
    })
}

/// Names of containers for which `bad` holds.
fn bad_containers(spec: &Value, mut bad: impl FnMut(&Value) -> bool) -> Vec<String> {
    containers(spec).filter(|c| bad(c)).map(name).collect()
}

// ----- baseline -----

fn app_armor(meta: &Value, spec: &Value, _: u32) -> Option<Violation> {
    let allowed_type = |t: &Value| matches!(t.as_str(), Some("RuntimeDefault" | "Localhost"));
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    let pod = &spec["securityContext"]["appArmorProfile"];
    if pod.is_object() && !allowed_type(&pod["type"]) {
        setters.push("pod".to_owned());
        values.insert(pod["type"].as_str().unwrap_or_default().to_owned());
    }
    let mut bad = Vec::new();
    for c in containers(spec) {
        let p = &c["securityContext"]["appArmorProfile"];
        if p.is_object() && !allowed_type(&p["type"]) {
            bad.push(name(c));
            values.insert(p["type"].as_str().unwrap_or_default().to_owned());
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    let mut values: Vec<String> = values.into_iter().collect();
    let mut annotations: Vec<String> = meta["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("container.apparmor.security.beta.kubernetes.io/"))
        .filter_map(|(k, v)| {
            let v = v.as_str().unwrap_or_default();
            let ok = v.is_empty() || v == "runtime/default" || v.starts_with("localhost/");
            (!ok).then(|| format!("{k}={v:?}"))
        })
        .collect();
    if !annotations.is_empty() {
        annotations.sort();
        setters.push(pluralize("annotation", "annotations", annotations.len()).to_owned());
        values.extend(annotations);
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            setters.join(" and "),
            join_quote(&values)
        ),
    )
}

const DEFAULT_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added_capabilities(c: &Value) -> impl Iterator<Item = &str> {
    c["securityContext"]["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn capabilities_baseline(_: &Value, spec: &Value, _: u32) -> Option<Violation> {
    let mut caps = BTreeSet::new();
    let bad = bad_containers(spec, |c| {
        let mut bad = false;
        for cap in added_capabilities(c) {
            if !DEFAULT_CAPABILITIES.contains(&cap) {
                bad = true;
                caps.insert(cap.to_owned());
            }
        }
        bad
    });
    if bad.is_empty() {
        return None;
    }
    let caps: Vec<String> = caps.into_iter().collect();
    violation(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad),
            join_quote(&caps)
        ),
    )
}

fn host_namespaces(_: &Value, spec: &Value, _: u32) -> Option<Violation> {
    let list: Vec<&str> = [
        ("hostNetwork", "hostNetwork=true"),
        ("hostPID", "hostPID=true"),
        ("hostIPC", "hostIPC=true"),
    ]
    .into_iter()
    .filter(|(f, _)| spec[*f] == Value::Bool(true))
    .map(|(_, s)| s)
    .collect();
    if list.is_empty() {
        return None;
    }
    violation("host namespaces", list.join(", "))
}

fn volumes(spec: &Value) -> impl Iterator<Item = &Value> {
    spec["volumes"].as_array().into_iter().flatten()
}

fn host_path_volumes(_: &Value, spec: &Value, _: u32) -> Option<Violation> {
    let bad: Vec<String> = volumes(spec)
        .filter(|v| v["hostPath"].is_object())
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "hostPath volumes",
        format!(
            "{} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad)
        ),
    )
}

fn host_ports(_: &Value, spec: &Value, _: u32) -> Option<Violation> {
    let mut ports = BTreeSet::new();
    let bad = bad_containers(spec, |c| {
        let mut bad = false;
        for p in c["ports"].as_array().into_iter().flatten() {
            let hp = p["hostPort"].as_i64().unwrap_or(0);
            if hp != 0 {
                bad = true;
                ports.insert(hp.to_string());
            }
        }
        bad
    });
    if bad.is_empty() {
        return None;
    }
    // sorted as strings, as upstream's sets.String
    let ports: Vec<String> = ports.into_iter().collect();
    violation(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            ports.join(", ")
        ),
    )
}

fn host_probes(_: &Value, spec: &Value, _: u32) -> Option<Violation> {
    let mut bad = BTreeSet::new();
    let mut hosts = BTreeSet::new();
    for c in containers(spec) {
        let handlers = [
            &c["livenessProbe"],
            &c["readinessProbe"],
            &c["startupProbe"],
            &c["lifecycle"]["postStart"],
            &c["lifecycle"]["preStop"],
        ];
        for h in handlers {
            for k in ["httpGet", "tcpSocket"] {
                if let Some(host) = h[k]["host"].as_str().filter(|s| !s.is_empty()) {
                    bad.insert(name(c));
                    hosts.insert(host.to_owned());
                }
            }
        }
    }
    if bad.is_empty() {
        return None;
    }
    let bad: Vec<String> = bad.into_iter().collect();
    let hosts: Vec<String> = hosts.into_iter().collect();
    violation(
        "probe or lifecycle host",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize(
                "probe or lifecycle host",
                "probe or lifecycle hosts",
                hosts.len()
            ),
            join_quote(&hosts)
        ),
    )
}

fn privileged(_: &Value, spec: &Value, _: u32) -> Option<Violation> {
    let bad = bad_containers(spec, |c| {
        c["securityContext"]["privileged"] == Value::Bool(true)
    });
    if bad.is_empty() {
        return None;
    }
    violation(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_phrase(&bad)
        ),
    )
}

fn proc_mount(spec: &Value) -> Option<Violation> {
    let mut types = BTreeSet::new();
    let bad = bad_containers(spec, |c| match c["securityContext"]["procMount"].as_str() {
        Some(t) if t != "Default" => {
            types.insert(t.to_owned());
            true
        }
        _ => false,
    });
    if bad.is_empty() {
        return None;
    }
    let types: Vec<String> = types.into_iter().collect();
    violation(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad),
            join_quote(&types)
        ),
    )
}

fn proc_mount_baseline(_: &Value, spec: &Value, minor: u32) -> Option<Violation> {
    if minor >= 35 && user_namespace(spec) {
        return None;
    }
    proc_mount(spec)
}

fn proc_mount_restricted(_: &Value, spec: &Value, _: u32) -> Option<Violation> {
    proc_mount(spec)
}

fn selinux(_: &Value, spec: &Value, minor: u32) -> Option<Violation> {
    let mut allowed = vec!["", "container_t", "container_init_t", "container_kvm_t"];
    if minor >= 31 {
        allowed.push("container_engine_t");
    }
    let mut types = BTreeSet::new();
    let (mut user, mut role) = (false, false);
    let mut valid = |o: &Value| {
        let mut ok = true;
        let t = o["type"].as_str().unwrap_or_default();
        if !allowed.contains(&t) {
            ok = false;
            types.insert(t.to_owned());
        }
        if o["user"].as_str().is_some_and(|s| !s.is_empty()) {
            ok = false;
            user = true;
        }
        if o["role"].as_str().is_some_and(|s| !s.is_empty()) {
            ok = false;
            role = true;
        }
        ok
    };
    let mut setters = Vec::new();
    let pod = &spec["securityContext"]["seLinuxOptions"];
    if pod.is_object() && !valid(pod) {
        setters.push("pod".to_owned());
    }
    let mut bad = Vec::new();
    for c in containers(spec) {
        let o = &c["securityContext"]["seLinuxOptions"];
        if o.is_object() && !valid(o) {
            bad.push(name(c));
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    if !types.is_empty() {
        let types: Vec<String> = types.into_iter().collect();
        data.push(format!(
            "{} {}",
            pluralize("type", "types", types.len()),
            join_quote(&types)
        ));
    }
    if user {
        data.push("user may not be set".to_owned());
    }
    if role {
        data.push("role may not be set".to_owned());
    }
    violation(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            data.join("; ")
        ),
    )
}

fn valid_seccomp(t: &Value) -> bool {
    matches!(t.as_str(), Some("RuntimeDefault" | "Localhost"))
}

/// The explicitly bad seccomp setters and values; whether the pod sets a valid profile;
/// the containers that set none.
fn seccomp_setters(spec: &Value) -> (Vec<String>, Vec<String>, bool, Vec<String>) {
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    let mut pod_set = false;
    let pod = &spec["securityContext"]["seccompProfile"];
    if pod.is_object() {
        if valid_seccomp(&pod["type"]) {
            pod_set = true;
        } else {
            setters.push("pod".to_owned());
            values.insert(pod["type"].as_str().unwrap_or_default().to_owned());
        }
    }
    let mut bad = Vec::new();
    let mut unset = Vec::new();
    for c in containers(spec) {
        let p = &c["securityContext"]["seccompProfile"];
        if p.is_object() {
            if !valid_seccomp(&p["type"]) {
                bad.push(name(c));
                values.insert(p["type"].as_str().unwrap_or_default().to_owned());
            }
        } else {
            unset.push(name(c));
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    (setters, values.into_iter().collect(), pod_set, unset)
}

fn seccomp_annotations(meta: &Value, spec: &Value) -> Option<Violation> {
    let valid =
        |v: &str| v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/");
    let ann = &meta["annotations"];
    let mut forbidden = BTreeSet::new();
    let key = "seccomp.security.alpha.kubernetes.io/pod";
    if let Some(v) = ann[key].as_str().filter(|v| !valid(v)) {
        forbidden.insert(format!("{key}={v:?}"));
    }
    for c in containers(spec) {
        let key = format!("container.seccomp.security.alpha.kubernetes.io/{}", name(c));
        if let Some(v) = ann[&key].as_str().filter(|v| !valid(v)) {
            forbidden.insert(format!("{key}={v:?}"));
        }
    }
    if forbidden.is_empty() {
        return None;
    }
    let list: Vec<String> = forbidden.into_iter().collect();
    violation(
        "seccompProfile",
        format!(
            "forbidden {} {}",
            pluralize("annotation", "annotations", list.len()),
            list.join(", ")
        ),
    )
}

fn seccomp_baseline(meta: &Value, spec: &Value, minor: u32) -> Option<Violation> {
    if minor < 19 {
        return seccomp_annotations(meta, spec);
    }
    let (setters, values, _, _) = seccomp_setters(spec);
    if setters.is_empty() {
        return None;
    }
    violation(
        "seccompProfile",
        format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            setters.join(" and "),
            join_quote(&values)
        ),
    )
}

fn seccomp_restricted(_: &Value, spec: &Value, minor: u32) -> Option<Violation> {
    if minor >= 25 && windows(spec) {
        return None;
    }
    let (setters, values, pod_set, unset) = seccomp_setters(spec);
    if !setters.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(&values)
            ),
        );
    }
    if !pod_set && !unset.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_phrase(&unset)
            ),
        );
    }
    None
}

fn sysctls(_: &Value, spec: &Value, minor: u32) -> Option<Violation> {
    let mut allowed = vec![
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
    ];
    if minor >= 27 {
        allowed.push("net.ipv4.ip_local_reserved_ports");
    }
    if minor >= 29 {
        allowed.extend([
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_fin_timeout",
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
        ]);
    }
    if minor >= 32 {
        allowed.extend(["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"]);
    }
    if minor >= 37 {
        allowed.extend([
            "net.ipv4.tcp_slow_start_after_idle",
            "net.ipv4.tcp_notsent_lowat",
        ]);
    }
    let bad: Vec<&str> = spec["securityContext"]["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| !allowed.contains(n))
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation("forbidden sysctls", bad.join(", "))
}

fn windows_host_process(_: &Value, spec: &Value, _: u32) -> Option<Violation> {
    let host_process = |sc: &Value| sc["windowsOptions"]["hostProcess"] == Value::Bool(true);
    let bad = bad_containers(spec, |c| host_process(&c["securityContext"]));
    let mut setters = Vec::new();
    if host_process(&spec["securityContext"]) {
        setters.push("pod".to_owned());
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters.join(" and ")
        ),
    )
}

// ----- restricted -----

fn allow_privilege_escalation(_: &Value, spec: &Value, minor: u32) -> Option<Violation> {
    if minor >= 25 && windows(spec) {
        return None;
    }
    let bad = bad_containers(spec, |c| {
        c["securityContext"]["allowPrivilegeEscalation"] != Value::Bool(false)
    });
    if bad.is_empty() {
        return None;
    }
    violation(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_phrase(&bad)
        ),
    )
}

fn capabilities_restricted(_: &Value, spec: &Value, minor: u32) -> Option<Violation> {
    if minor >= 25 && windows(spec) {
        return None;
    }
    let mut missing_drop = Vec::new();
    let mut adding = Vec::new();
    let mut forbidden = BTreeSet::new();
    for c in containers(spec) {
        let caps = &c["securityContext"]["capabilities"];
        if !caps.is_object() {
            missing_drop.push(name(c));
            continue;
        }
        let dropped_all = caps["drop"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d == "ALL");
        if !dropped_all {
            missing_drop.push(name(c));
        }
        let mut bad = false;
        for cap in added_capabilities(c) {
            if cap != "NET_BIND_SERVICE" {
                bad = true;
                forbidden.insert(cap.to_owned());
            }
        }
        if bad {
            adding.push(name(c));
        }
    }
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&missing_drop)
        ));
    }
    if !adding.is_empty() {
        let forbidden: Vec<String> = forbidden.into_iter().collect();
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(&forbidden)
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation("unrestricted capabilities", details.join("; "))
}

const ALLOWED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

const RESTRICTED_VOLUMES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

fn restricted_volumes(_: &Value, spec: &Value, _: u32) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for v in volumes(spec) {
        if ALLOWED_VOLUMES.iter().any(|k| v[*k].is_object()) {
            continue;
        }
        bad.push(name(v));
        let t = RESTRICTED_VOLUMES
            .iter()
            .find(|k| v[**k].is_object())
            .copied()
            .unwrap_or("unknown");
        types.insert(t.to_owned());
    }
    if bad.is_empty() {
        return None;
    }
    let types: Vec<String> = types.into_iter().collect();
    violation(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize(
                "restricted volume type",
                "restricted volume types",
                types.len()
            ),
            join_quote(&types)
        ),
    )
}

fn run_as_non_root(_: &Value, spec: &Value, minor: u32) -> Option<Violation> {
    if minor >= 35 && user_namespace(spec) {
        return None;
    }
    let mut setters = Vec::new();
    let mut pod_non_root = false;
    match &spec["securityContext"]["runAsNonRoot"] {
        Value::Bool(false) => setters.push("pod".to_owned()),
        Value::Bool(true) => pod_non_root = true,
        _ => {}
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in containers(spec) {
        match &c["securityContext"]["runAsNonRoot"] {
            Value::Bool(false) => explicit.push(name(c)),
            Value::Bool(true) => {}
            _ if !pod_non_root => implicit.push(name(c)),
            _ => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        );
    }
    if !implicit.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_phrase(&implicit)
            ),
        );
    }
    None
}

fn run_as_user(_: &Value, spec: &Value, minor: u32) -> Option<Violation> {
    if minor >= 35 && user_namespace(spec) {
        return None;
    }
    let root = |sc: &Value| sc["runAsUser"].as_i64() == Some(0);
    let mut setters = Vec::new();
    if root(&spec["securityContext"]) {
        setters.push("pod".to_owned());
    }
    let bad = bad_containers(spec, |c| root(&c["securityContext"]));
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", setters.join(" and ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detail(spec: Value, restricted: bool) -> String {
        evaluate(&json!({}), &spec, restricted, 35)
            .iter()
            .map(|v| format!("{} ({})", v.reason, v.detail))
            .collect::<Vec<_>>()
            .join(", ")
    }

    #[test]
    fn a_bare_pod_violates_restricted_as_upstream_says() {
        let spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
        assert_eq!(
            detail(spec.clone(), true),
            "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        assert_eq!(detail(spec, false), "");
    }

    #[test]
    fn a_compliant_pod_passes_restricted() {
        let spec = json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
            "volumes": [{"name": "v", "emptyDir": {}}]
        });
        assert_eq!(detail(spec, true), "");
    }

    #[test]
    fn baseline_violations_in_upstream_order() {
        let spec = json!({
            "hostNetwork": true, "hostPID": true,
            "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]},
            "containers": [
                {"name": "a", "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN", "CHOWN"]}},
                 "ports": [{"containerPort": 80, "hostPort": 8080}]},
                {"name": "b", "securityContext": {"privileged": true}, "ports": [{"containerPort": 1, "hostPort": 9090}]}
            ],
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}]
        });
        assert_eq!(
            detail(spec.clone(), false),
            "non-default capabilities (container \"a\" must not include \"NET_ADMIN\" in securityContext.capabilities.add), \
host namespaces (hostNetwork=true, hostPID=true), \
hostPath volumes (volume \"h\"), \
hostPort (containers \"a\", \"b\" use hostPorts 8080, 9090), \
privileged (containers \"a\", \"b\" must not set securityContext.privileged=true), \
forbidden sysctls (kernel.msgmax)"
        );
        // restricted: hostPath is reported as a restricted volume type instead
        assert!(detail(spec, true).contains(
            "restricted volume types (volume \"h\" uses restricted volume type \"hostPath\")"
        ));
    }

    #[test]
    fn versions_select_behaviour() {
        let spec = json!({"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_rmem"}]},
            "containers": [{"name": "c"}]});
        assert_eq!(evaluate(&json!({}), &spec, false, 31).len(), 1);
        assert!(evaluate(&json!({}), &spec, false, 32).is_empty());
        // runAsUser=0 is checked from 1.23 on
        let spec = json!({"securityContext": {"runAsUser": 0, "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]});
        assert!(evaluate(&json!({}), &spec, true, 22).is_empty());
        assert_eq!(
            evaluate(&json!({}), &spec, true, 23)[0].detail,
            "pod must not set runAsUser=0"
        );
    }
}
