//! Loading and validating `config.json`.

use std::collections::HashSet;
use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

fn parse<T: DeserializeOwned>(json: &str, file: &str) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        Error::InvalidSpec {
            file: file.to_string(),
            field: if field == "." {
                "(top level)".into()
            } else {
                field
            },
            message: e.into_inner().to_string(),
        }
    })
}

/// Parses a runtime spec from JSON; errors name the field at fault.
pub fn parse_spec(json: &str) -> Result<Spec> {
    let mut spec: Spec = parse(json, "config.json")?;
    rdt_flags(json, &mut spec);
    validate(&spec)?;
    Ok(spec)
}

/// The runtime spec spells `linux.intelRdt.enableCMT`/`enableMBM` in capitals, which
/// the oci-spec crate reads as `enableCmt`/`enableMbm`: take the spec's spelling too.
fn rdt_flags(json: &str, spec: &mut Spec) {
    if !json.contains("enableCMT") && !json.contains("enableMBM") {
        return;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return;
    };
    let raw = &v["linux"]["intelRdt"];
    let (cmt, mbm) = (raw["enableCMT"].as_bool(), raw["enableMBM"].as_bool());
    if let Some(rdt) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.intel_rdt_mut().as_mut())
    {
        #[allow(deprecated)]
        {
            if cmt.is_some() {
                rdt.set_enable_cmt(cmt);
            }
            if mbm.is_some() {
                rdt.set_enable_mbm(mbm);
            }
        }
    }
}

/// Reads and validates `<bundle>/config.json`.
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let json = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
    parse_spec(&json)
}

/// Parses a `process` object (as `runc exec --process FILE` takes it).
pub fn parse_process(json: &str) -> Result<Process> {
    let p: Process = parse(json, "process.json")?;
    validate_process(&p, "").map_err(|e| match e {
        Error::InvalidSpec { field, message, .. } => Error::InvalidSpec {
            file: "process.json".into(),
            field,
            message,
        },
        other => other,
    })?;
    Ok(p)
}

fn validate_process(p: &Process, prefix: &str) -> Result<()> {
    match p.args() {
        Some(a) if !a.is_empty() && !a[0].is_empty() => {}
        _ => return Err(Error::spec(format!("{prefix}args"), "must name a program")),
    }
    if !p.cwd().is_absolute() {
        return Err(Error::spec(
            format!("{prefix}cwd"),
            format!("{} is not an absolute path", p.cwd().display()),
        ));
    }
    if let Some(env) = p.env() {
        for (i, e) in env.iter().enumerate() {
            if !e.contains('=') {
                return Err(Error::spec(
                    format!("{prefix}env[{i}]"),
                    format!("{e:?} is not KEY=VALUE"),
                ));
            }
        }
    }
    if let Some(rl) = p.rlimits() {
        let mut seen = HashSet::new();
        for (i, r) in rl.iter().enumerate() {
            if r.soft() > r.hard() {
                return Err(Error::spec(
                    format!("{prefix}rlimits[{i}]"),
                    "soft limit is above the hard limit",
                ));
            }
            if !seen.insert(r.typ().to_string()) {
                return Err(Error::spec(
                    format!("{prefix}rlimits[{i}].type"),
                    format!("{} given twice", r.typ()),
                ));
            }
        }
    }
    Ok(())
}

/// Checks what serde cannot: required fields and consistency.
pub fn validate(spec: &Spec) -> Result<()> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::spec("process", "missing"))?;
    validate_process(process, "process.")?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::spec("root", "missing"))?;
    if root.path().as_os_str().is_empty() {
        return Err(Error::spec("root.path", "empty"));
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !m.destination().is_absolute() {
            return Err(Error::spec(
                format!("mounts[{i}].destination"),
                format!("{} is not an absolute path", m.destination().display()),
            ));
        }
    }
    let Some(linux) = spec.linux() else {
        return Err(Error::spec("linux", "missing"));
    };
    let mut seen = HashSet::new();
    let mut has_mnt = false;
    let mut has_user = false;
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        if !seen.insert(ns.typ()) {
            return Err(Error::spec(
                format!("linux.namespaces[{i}].type"),
                format!("{} namespace given twice", ns.typ()),
            ));
        }
        if let Some(p) = ns.path() {
            if !p.is_absolute() {
                return Err(Error::spec(
                    format!("linux.namespaces[{i}].path"),
                    format!("{} is not an absolute path", p.display()),
                ));
            }
        }
        has_mnt |= ns.typ() == LinuxNamespaceType::Mount;
        has_user |= ns.typ() == LinuxNamespaceType::User;
    }
    if !has_mnt {
        no_mount_namespace(spec, linux)?;
    }
    let maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if maps && !has_user {
        return Err(Error::spec(
            "linux.uidMappings",
            "id mappings need a user namespace",
        ));
    }
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty())
        && !seen.contains(&LinuxNamespaceType::Uts)
    {
        return Err(Error::spec("hostname", "setting it needs a uts namespace"));
    }
    if let Some(p) = linux.rootfs_propagation() {
        if crate::mounts::propagation_flag(p).is_none() {
            return Err(Error::spec(
                "linux.rootfsPropagation",
                format!("unknown propagation {p:?}"),
            ));
        }
    }
    if let Some(sysctl) = linux.sysctl() {
        for k in sysctl.keys() {
            if k.contains('/') || k.contains("..") || k.is_empty() {
                return Err(Error::spec(
                    format!("linux.sysctl.{k}"),
                    "not a sysctl name",
                ));
            }
        }
    }
    Ok(())
}

/// Without a mount namespace the container shares the runtime's (runtime spec,
/// config-linux.md "Namespaces"): its process only chroots into the rootfs, as runc
/// does. Whatever would need mounts is refused rather than done on the host's mount
/// table, where it would outlive the container.
fn no_mount_namespace(spec: &Spec, linux: &oci_spec::runtime::Linux) -> Result<()> {
    const WHY: &str = "needs a mount namespace: without one it would be mounted on the host";
    if spec.mounts().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(Error::spec("mounts[0]", WHY));
    }
    let some = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| !v.is_empty());
    if some(linux.masked_paths()) || some(linux.readonly_paths()) {
        // runc's words for the same refusal.
        let field = if some(linux.masked_paths()) {
            "linux.maskedPaths"
        } else {
            "linux.readonlyPaths"
        };
        return Err(Error::spec(
            field,
            "unable to restrict sys entries without a private MNT namespace",
        ));
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        return Err(Error::spec("root.readonly", WHY));
    }
    if linux.rootfs_propagation().is_some() {
        return Err(Error::spec("linux.rootfsPropagation", WHY));
    }
    if linux.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(Error::spec(
            "linux.devices",
            "needs a mount namespace: without one the device nodes would be made in the host's rootfs directory",
        ));
    }
    if linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(Error::spec("linux.mountLabel", WHY));
    }
    Ok(())
}

/// The capabilities container engines grant a container by default (Docker's,
/// containerd's and BuildKit's set).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
        "ociVersion": "1.2.0",
        "process": {"args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]}
    }"#;

    #[test]
    fn minimal_spec_parses() {
        let s = parse_spec(MINIMAL).unwrap();
        assert_eq!(
            s.process().as_ref().unwrap().args().as_ref().unwrap()[0],
            "/bin/true"
        );
    }

    #[test]
    fn unknown_namespace_names_the_field() {
        let bad = MINIMAL.replace(r#""type": "pid""#, r#""type": "bogus""#);
        match parse_spec(&bad).unwrap_err() {
            Error::InvalidSpec { field, message, .. } => {
                assert_eq!(field, "linux.namespaces[1].type");
                assert!(message.contains("bogus"), "{message}");
            }
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn wrong_type_names_the_field() {
        let bad = MINIMAL.replace(r#""uid": 0"#, r#""uid": "root""#);
        match parse_spec(&bad).unwrap_err() {
            Error::InvalidSpec { field, .. } => assert_eq!(field, "process.user.uid"),
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn semantic_checks() {
        let rel = MINIMAL.replace(r#""cwd": "/""#, r#""cwd": "tmp""#);
        let e = parse_spec(&rel).unwrap_err().to_string();
        assert!(e.contains("process.cwd"), "{e}");
        let noargs = MINIMAL.replace(r#"["/bin/true"]"#, "[]");
        assert!(parse_spec(&noargs)
            .unwrap_err()
            .to_string()
            .contains("process.args"));
        let dup = MINIMAL.replace(r#"{"type": "pid"}"#, r#"{"type": "mount"}"#);
        assert!(parse_spec(&dup).unwrap_err().to_string().contains("twice"));
    }

    /// Without a mount namespace: accepted bare; each setting that needs mounts is
    /// refused by name. With one, the same settings are fine.
    #[test]
    fn without_a_mount_namespace() {
        let bare = MINIMAL.replace(r#"{"type": "mount"}, "#, "");
        parse_spec(&bare).unwrap();
        let with = |extra: &str, root: &str| {
            bare.replace(r#""root": {"path": "rootfs"}"#, root)
                .replace(r#""linux": {"#, &format!(r#"{extra} "linux": {{"#))
        };
        let root = r#""root": {"path": "rootfs"}"#;
        for (json, field) in [
            (with(r#""mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],"#, root), "mounts[0]"),
            (with("", r#""root": {"path": "rootfs", "readonly": true}"#), "root.readonly"),
            (bare.replace(r#""linux": {"#, r#""linux": {"maskedPaths": ["/proc/kcore"], "#), "linux.maskedPaths"),
            (bare.replace(r#""linux": {"#, r#""linux": {"readonlyPaths": ["/proc/sys"], "#), "linux.readonlyPaths"),
            (bare.replace(r#""linux": {"#, r#""linux": {"rootfsPropagation": "private", "#), "linux.rootfsPropagation"),
            (bare.replace(r#""linux": {"#, r#""linux": {"devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}], "#), "linux.devices"),
            (bare.replace(r#""linux": {"#, r#""linux": {"mountLabel": "s:o:t:s0", "#), "linux.mountLabel"),
        ] {
            match parse_spec(&json) {
                Err(Error::InvalidSpec { field: f, .. }) => assert_eq!(f, field, "{json}"),
                other => panic!("{field}: expected a refusal, got {other:?}"),
            }
            // The same config with a mount namespace is accepted.
            let mnt = json.replace(r#""namespaces": ["#, r#""namespaces": [{"type": "mount"}, "#);
            parse_spec(&mnt).unwrap_or_else(|e| panic!("{field} with a mount namespace: {e}"));
        }
        // Empty lists ask for nothing.
        parse_spec(&with(r#""mounts": [],"#, root)).unwrap();
    }

    #[test]
    fn process_json() {
        let p =
            parse_process(r#"{"args": ["ls"], "cwd": "/", "user": {"uid": 0, "gid": 0}}"#).unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["ls".to_string()]);
        let e = parse_process(
            r#"{"args": ["ls"], "cwd": "/", "env": ["NOEQ"], "user": {"uid": 0, "gid": 0}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("process.json") && e.contains("env[0]"), "{e}");
    }
}
