//! The runtime-spec Features structure (`kcore-runc features`), which containerd and
//! podman read to learn what the runtime accepts.
//!
//! Per features.md it describes the runtime, not the host: AppArmor and SELinux are
//! `enabled` because kcore applies them where the host has them (and refuses a config
//! asking for one the host lacks). The one host-dependent list the spec defines,
//! `seccomp.supportedFlags`, is probed on the running kernel. Only properties of the
//! `ociVersionMax` version of the spec appear.

use serde_json::{json, Value};

/// The highest runtime-spec version kcore accepts in `config.json`.
pub const OCI_VERSION_MAX: &str = "1.2.0";

/// Mount options [`features`] lists: every one is decoded by the mount setup (the
/// `r`-prefixed recursive ones with mount_setattr, Linux 5.12+).
const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "remount",
    "rexec",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
    "runbindable",
    "rw",
    "shared",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "unbindable",
];

/// Seccomp filter flags kcore passes to the kernel, with their values.
const SECCOMP_FLAGS: &[(&str, libc::c_ulong)] = &[
    ("SECCOMP_FILTER_FLAG_TSYNC", libc::SECCOMP_FILTER_FLAG_TSYNC),
    ("SECCOMP_FILTER_FLAG_LOG", libc::SECCOMP_FILTER_FLAG_LOG),
    (
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    ),
];

/// Whether the running kernel knows a seccomp filter flag: installing a filter with
/// that flag and no program fails with `EFAULT` when it does, `EINVAL` when it does not
/// (the probe runc and libseccomp use; nothing is installed).
fn kernel_knows(flag: libc::c_ulong) -> bool {
    // SAFETY: a NULL program makes the call fail before anything is installed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flag,
            std::ptr::null::<libc::c_void>(),
        )
    };
    rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
}

/// The Features structure of this runtime (runtime-spec `features.md` and
/// `features-linux.md`), as `kcore-runc features` prints it.
///
/// ```
/// let f = kcore_runtime::features();
/// assert_eq!(f["ociVersionMin"], "1.0.0");
/// assert_eq!(f["linux"]["apparmor"]["enabled"], true);
/// ```
pub fn features() -> Value {
    let known: Vec<&str> = SECCOMP_FLAGS.iter().map(|(n, _)| *n).collect();
    let supported: Vec<&str> = SECCOMP_FLAGS
        .iter()
        .filter(|(_, f)| kernel_knows(*f))
        .map(|(n, _)| *n)
        .collect();
    let mut caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    caps.sort();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": crate::hooks::KINDS,
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": [if cfg!(target_arch = "aarch64") { "SCMP_ARCH_AARCH64" } else { "SCMP_ARCH_X86_64" }],
                "knownFlags": known,
                "supportedFlags": supported,
            },
            "apparmor": {"enabled": true},
            "selinux": {"enabled": true},
            "intelRdt": {"enabled": true},
            "mountExtensions": {"idmap": {"enabled": false}},
        },
        "annotations": {"org.kcore.runtime.version": env!("CARGO_PKG_VERSION")}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The structure parses as the spec's Features type, and each list holds only what
    /// the runtime really accepts: every mount option is decoded (a flag or a
    /// propagation, never passed on as file-system data), every namespace and seccomp
    /// action parses in a config, and the supported seccomp flags are known ones.
    #[test]
    fn features_list_only_what_is_accepted() {
        let f = features();
        let typed: oci_spec::runtime::Features = serde_json::from_value(f.clone()).unwrap();
        assert_eq!(typed.oci_version_max(), OCI_VERSION_MAX);
        let opts = f["mountOptions"].as_array().unwrap();
        let mut sorted = opts.clone();
        sorted.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        assert_eq!(&sorted, opts, "sorted, as runc lists them");
        for o in opts {
            let o = [o.as_str().unwrap().to_string()];
            let (flags, prop, data) = crate::mounts::parse_options(&o);
            assert!(data.is_empty(), "{o:?} is not decoded");
            let rec = crate::mounts::recursive_attrs(&o);
            let does_something = flags != 0 || !prop.is_empty() || rec != (0, 0);
            let clears = [
                "rw",
                "suid",
                "dev",
                "exec",
                "async",
                "nomand",
                "atime",
                "diratime",
                "norelatime",
                "nostrictatime",
                "defaults",
                "symfollow",
            ];
            assert!(
                does_something || clears.contains(&o[0].as_str()) || o[0].starts_with('r'),
                "{o:?}"
            );
        }
        for ns in f["linux"]["namespaces"].as_array().unwrap() {
            let cfg = format!(r#"{{"type": {ns}}}"#);
            serde_json::from_str::<oci_spec::runtime::LinuxNamespace>(&cfg).unwrap();
        }
        for a in f["linux"]["seccomp"]["actions"].as_array().unwrap() {
            let s = format!(r#"{{"defaultAction": {a}}}"#);
            let s: oci_spec::runtime::LinuxSeccomp = serde_json::from_str(&s).unwrap();
            crate::seccomp::compile(&s).unwrap();
        }
        let known = f["linux"]["seccomp"]["knownFlags"].as_array().unwrap();
        for s in f["linux"]["seccomp"]["supportedFlags"].as_array().unwrap() {
            assert!(known.contains(s));
        }
        // Every kernel this runs on (3.17+) knows TSYNC.
        assert!(f["linux"]["seccomp"]["supportedFlags"]
            .as_array()
            .unwrap()
            .contains(&json!("SECCOMP_FILTER_FLAG_TSYNC")));
        assert_eq!(
            f["hooks"],
            json!([
                "prestart",
                "createRuntime",
                "createContainer",
                "startContainer",
                "poststart",
                "poststop"
            ])
        );
    }
}
