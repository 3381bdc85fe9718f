//! From a pod's container spec to an OCI runtime spec.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod, SecurityContext};
use kcore_k8s::Quantity;
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// What the OCI spec of one container is made from.
#[derive(Debug)]
pub(crate) struct SpecInput<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    /// The image's `config` section.
    pub image_config: Option<&'a oci_spec::image::Config>,
    /// The container's resolved environment (`env` and `envFrom`), in order.
    pub env: Vec<(String, String)>,
    pub rootfs: PathBuf,
    pub mounts: Vec<BindMount>,
    /// Network namespace to join (`None`: the agent's own, for hostNetwork without a
    /// node namespace).
    pub netns: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub hostname: String,
    pub cgroup_path: String,
    pub annotations: BTreeMap<String, String>,
}

/// The capabilities container runtimes grant by default.
pub(crate) const DEFAULT_CAPS: &[&str] = kcore_runtime::DEFAULT_CAPABILITIES;

const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
];

fn cap_name(c: &str) -> String {
    let up = c.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// Expands `$(VAR)` references like Kubernetes: `$$` escapes, unknown references stay.
pub(crate) fn expand(s: &str, env: &[(String, String)]) -> String {
    expand_with(s, |name| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
}

/// [`expand`] over any lookup: a reference the lookup answers `None` for stays as it is.
pub(crate) fn expand_with(s: &str, mut lookup: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    if let Some(v) = lookup(name) {
                        out.push_str(&v);
                    } else {
                        out.push_str(&s[i..i + 3 + end]);
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The process arguments per Kubernetes' rules for `command`/`args` over the image's
/// `Entrypoint`/`Cmd`.
pub(crate) fn process_args(
    c: &Container,
    image: Option<&oci_spec::image::Config>,
    env: &[(String, String)],
) -> Vec<String> {
    let ep = image
        .and_then(|i| i.entrypoint().clone())
        .unwrap_or_default();
    let cmd = image.and_then(|i| i.cmd().clone()).unwrap_or_default();
    let exp = |v: &Vec<String>| v.iter().map(|s| expand(s, env)).collect::<Vec<_>>();
    match (&c.command, &c.args) {
        (Some(command), args) if !command.is_empty() => {
            let mut v = exp(command);
            v.extend(args.as_ref().map(exp).unwrap_or_default());
            v
        }
        (_, Some(args)) if !args.is_empty() => {
            let mut v = ep;
            v.extend(exp(args));
            v
        }
        _ => {
            let mut v = ep;
            v.extend(cmd);
            v
        }
    }
}

fn merged_security(pod: &Pod, c: &Container) -> (Option<i64>, Option<i64>, Vec<i64>) {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let uid = csc
        .and_then(|s| s.run_as_user)
        .or_else(|| psc.and_then(|s| s.run_as_user));
    let gid = csc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|s| s.run_as_group));
    let mut groups: Vec<i64> = psc
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default();
    if let Some(fs) = psc.and_then(|s| s.fs_group) {
        groups.push(fs);
    }
    (uid, gid, groups)
}

/// Numeric `uid[:gid]` from an image's `User` (names resolve through the rootfs'
/// `/etc/passwd` when present).
fn image_user(user: &str, rootfs: &std::path::Path) -> (Option<i64>, Option<i64>) {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let lookup = |file: &str, name: &str, field: usize| -> Option<i64> {
        let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
        text.lines().find_map(|l| {
            let parts: Vec<&str> = l.split(':').collect();
            (parts.first() == Some(&name))
                .then(|| parts.get(field)?.parse().ok())
                .flatten()
        })
    };
    let uid = if u.is_empty() {
        None
    } else {
        u.parse().ok().or_else(|| lookup("etc/passwd", u, 2))
    };
    let gid = match g {
        Some(g) => g.parse().ok().or_else(|| lookup("etc/group", g, 2)),
        None if !u.is_empty() && u.parse::<i64>().is_err() => lookup("etc/passwd", u, 3),
        None => None,
    };
    (uid, gid)
}

fn capabilities(sc: Option<&SecurityContext>) -> Vec<String> {
    if sc.and_then(|s| s.privileged) == Some(true) {
        return ALL_CAPS.iter().map(|s| (*s).to_owned()).collect();
    }
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| (*s).to_owned()).collect();
    if let Some(c) = sc.and_then(|s| s.capabilities.as_ref()) {
        for d in c.drop.iter().flatten() {
            if d.eq_ignore_ascii_case("ALL") {
                caps.clear();
            } else {
                let d = cap_name(d);
                caps.retain(|x| *x != d);
            }
        }
        for a in c.add.iter().flatten() {
            if a.eq_ignore_ascii_case("ALL") {
                caps = ALL_CAPS.iter().map(|s| (*s).to_owned()).collect();
            } else {
                let a = cap_name(a);
                if !caps.contains(&a) {
                    caps.push(a);
                }
            }
        }
    }
    caps
}

/// Linux resources from the container's requests and limits.
pub(crate) fn resources(c: &Container) -> Value {
    let mut r = serde_json::Map::new();
    let res = c.resources.as_ref();
    let limit = |k: &str| {
        res.and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(k))
            .and_then(|q| Quantity::try_from(q).ok())
    };
    let request = |k: &str| {
        res.and_then(|r| r.requests.as_ref())
            .and_then(|l| l.get(k))
            .and_then(|q| Quantity::try_from(q).ok())
    };
    // Negative amounts (invalid upstream) count as zero.
    let bytes = |q: Quantity| q.value().max(0);
    let millis = |q: Quantity| q.milli_value().max(0);
    if let Some(m) = limit("memory").map(bytes) {
        r.insert("memory".into(), json!({"limit": m}));
    }
    let mut cpu = serde_json::Map::new();
    // requests (or, without one, the limit) become shares: 1024 per core, at least 2
    if let Some(m) = request("cpu").or_else(|| limit("cpu")).map(millis) {
        cpu.insert(
            "shares".into(),
            json!((m.saturating_mul(1024) / 1000).max(2)),
        );
    }
    if let Some(m) = limit("cpu").map(millis) {
        let period = 100_000i64;
        cpu.insert(
            "quota".into(),
            json!((m.saturating_mul(period) / 1000).max(1000)),
        );
        cpu.insert("period".into(), json!(period));
    }
    if !cpu.is_empty() {
        r.insert("cpu".into(), Value::Object(cpu));
    }
    Value::Object(r)
}

/// Builds the OCI runtime spec.
pub(crate) fn build(input: &SpecInput<'_>) -> Result<oci_spec::runtime::Spec> {
    let c = input.container;
    let object = format!(
        "{}/{} container {}",
        input.pod.metadata.namespace.as_deref().unwrap_or_default(),
        input.pod.metadata.name.as_deref().unwrap_or_default(),
        c.name
    );
    let invalid = |reason: String| Error::InvalidSpec {
        object: object.clone(),
        reason,
    };
    // environment: image first, then the container's
    let mut env: Vec<(String, String)> = Vec::new();
    for e in input
        .image_config
        .and_then(|i| i.env().clone())
        .unwrap_or_default()
    {
        if let Some((k, v)) = e.split_once('=') {
            env.retain(|(x, _)| x != k);
            env.push((k.to_owned(), v.to_owned()));
        }
    }
    for (k, v) in &input.env {
        env.retain(|(x, _)| x != k);
        env.push((k.clone(), v.clone()));
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(
            0,
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
        );
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.push(("HOSTNAME".into(), input.hostname.clone()));
    }
    let args = process_args(c, input.image_config, &env);
    if args.is_empty() {
        return Err(invalid(
            "no command: neither the container nor the image sets one".into(),
        ));
    }
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| {
            input
                .image_config
                .and_then(|i| i.working_dir().clone())
                .filter(|w| !w.is_empty())
        })
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(invalid(format!("workingDir {cwd:?} is not absolute")));
    }
    let (mut uid, mut gid, groups) = merged_security(input.pod, c);
    if uid.is_none() {
        if let Some(u) = input.image_config.and_then(|i| i.user().clone()) {
            let (iu, ig) = image_user(&u, &input.rootfs);
            uid = iu;
            gid = gid.or(ig);
        }
    }
    let sc = c.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged) == Some(true);
    let caps = capabilities(sc);
    let no_new_privs = sc.and_then(|s| s.allow_privilege_escalation) == Some(false);
    let readonly_root = sc.and_then(|s| s.read_only_root_filesystem) == Some(true);

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if privileged { "rw" } else { "ro" }]}),
    ];
    for m in &input.mounts {
        let mut opts = vec!["rbind", "rprivate"];
        if m.read_only {
            opts.push("ro");
        }
        mounts.push(json!({
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": opts,
        }));
    }
    let mut namespaces = vec![json!({"type": "pid"}), json!({"type": "mount"})];
    let ns = |t: &str, p: &Option<PathBuf>| match p {
        Some(p) => json!({"type": t, "path": p}),
        None => json!({"type": t}),
    };
    let host_network = input
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if !host_network || input.netns.is_some() {
        namespaces.push(ns("network", &input.netns));
    }
    namespaces.push(ns("ipc", &input.ipc));
    namespaces.push(ns("uts", &input.uts));
    let mut user = json!({"uid": uid.unwrap_or(0), "gid": gid.unwrap_or(0)});
    if !groups.is_empty() {
        user["additionalGids"] = json!(groups);
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": input.cgroup_path,
        "resources": resources(c),
    });
    if !privileged {
        linux["maskedPaths"] = json!([
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap"
        ]);
        linux["readonlyPaths"] = json!([
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]);
    }
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": user,
            "args": args,
            "env": env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "noNewPrivileges": no_new_privs,
        },
        "root": {"path": input.rootfs, "readonly": readonly_root},
        "hostname": input.hostname,
        "mounts": mounts,
        "annotations": input.annotations,
        "linux": linux,
    });
    kcore_runtime::parse_spec(&spec.to_string()).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn expand_follows_kubernetes_rules() {
        let env = vec![("A".to_owned(), "x".to_owned())];
        assert_eq!(expand("$(A)-$(B)-$$(A)", &env), "x-$(B)-$(A)");
        assert_eq!(expand("plain $ text", &env), "plain $ text");
    }

    #[test]
    fn command_and_args_override_entrypoint_and_cmd() {
        let img: oci_spec::image::Config =
            serde_json::from_value(json!({"Entrypoint": ["/ep"], "Cmd": ["c1"]})).unwrap();
        let c = |v: Value| -> Container { serde_json::from_value(v).unwrap() };
        let env = vec![("X".to_owned(), "1".to_owned())];
        assert_eq!(
            process_args(&c(json!({"name": "a"})), Some(&img), &env),
            ["/ep", "c1"]
        );
        assert_eq!(
            process_args(&c(json!({"name": "a", "args": ["$(X)"]})), Some(&img), &env),
            ["/ep", "1"]
        );
        assert_eq!(
            process_args(
                &c(json!({"name": "a", "command": ["sh"]})),
                Some(&img),
                &env
            ),
            ["sh"]
        );
        assert_eq!(
            process_args(
                &c(json!({"name": "a", "command": ["sh"], "args": ["-c", "x"]})),
                Some(&img),
                &env
            ),
            ["sh", "-c", "x"]
        );
    }

    #[test]
    fn spec_carries_security_resources_and_mounts() {
        let p = pod(json!({
            "metadata": {"name": "p", "namespace": "d"},
            "spec": {
                "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
                "containers": [{
                    "name": "c", "image": "busybox", "command": ["sleep", "1"],
                    "workingDir": "/work",
                    "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}},
                    "securityContext": {
                        "runAsGroup": 3000,
                        "readOnlyRootFilesystem": true,
                        "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}
                    }
                }]
            }
        }));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let input = SpecInput {
            pod: &p,
            container: c,
            image_config: None,
            env: vec![("FOO".into(), "bar".into())],
            rootfs: "/tmp/rootfs".into(),
            mounts: vec![BindMount {
                source: "/tmp/vol".into(),
                destination: "/data".into(),
                read_only: true,
            }],
            netns: Some("/run/netns/x".into()),
            ipc: Some("/tmp/ipc".into()),
            uts: None,
            hostname: "p".into(),
            cgroup_path: "kcore/podx/c".into(),
            annotations: BTreeMap::new(),
        };
        let s = build(&input).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(v["process"]["user"]["gid"], 3000);
        assert_eq!(v["process"]["user"]["additionalGids"], json!([2000]));
        assert_eq!(v["process"]["cwd"], "/work");
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(
            v["process"]["capabilities"]["bounding"],
            json!(["CAP_NET_ADMIN"])
        );
        assert!(v["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&json!("FOO=bar")));
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 256);
        let nss = v["linux"]["namespaces"].as_array().unwrap();
        assert!(nss.contains(&json!({"type": "network", "path": "/run/netns/x"})));
        let m = v["mounts"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(m["destination"], "/data");
        assert!(m["options"].as_array().unwrap().contains(&json!("ro")));
    }

    #[test]
    fn privileged_gets_every_capability_and_no_masks() {
        let p = pod(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "command": ["true"], "securityContext": {"privileged": true}}]}
        }));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let input = SpecInput {
            pod: &p,
            container: c,
            image_config: None,
            env: vec![],
            rootfs: "/tmp/r".into(),
            mounts: vec![],
            netns: None,
            ipc: None,
            uts: None,
            hostname: "p".into(),
            cgroup_path: "x".into(),
            annotations: BTreeMap::new(),
        };
        let v = serde_json::to_value(build(&input).unwrap()).unwrap();
        assert!(v["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .contains(&json!("CAP_SYS_ADMIN")));
        assert!(v["linux"]["maskedPaths"].is_null());
    }
}
