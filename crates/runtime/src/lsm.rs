//! Linux security modules: AppArmor profiles (`process.apparmorProfile`) and SELinux
//! labels (`process.selinuxLabel`, `linux.mountLabel`).
//!
//! A config that asks for an LSM the host has not enabled is refused before anything is
//! created, as runc and crun refuse it, rather than run unconfined. The probe reads a
//! root directory (`/` on a real host, a temp dir in tests):
//!
//! - AppArmor: `sys/kernel/security/apparmor` exists and
//!   `sys/module/apparmor/parameters/enabled` reads `Y`;
//! - SELinux: `sys/fs/selinux/enforce` exists (selinuxfs is mounted; enforcing or
//!   permissive alike).
//!
//! Applying is small and happens in the container process just before its user and
//! capabilities change (where runc does it): the profile is written as `exec <profile>`
//! to `/proc/thread-self/attr/apparmor/exec` (or the older `attr/exec`), the SELinux
//! process label to `/proc/thread-self/attr/exec`; both take effect at execve. The
//! mount label becomes a `context="..."` option of the container's tmpfs, mqueue and
//! devpts mounts ([`mount_label_option`]), as runc's `label.FormatMountLabel` does.

use std::ffi::CString;
use std::path::PathBuf;

use oci_spec::runtime::{Linux, Process};

use crate::error::{Error, Result};
use crate::sys::Syscall;

/// Which LSMs a host can apply, read under a root directory.
#[derive(Debug, Clone)]
pub(crate) struct LsmHost {
    root: PathBuf,
}

impl LsmHost {
    /// The running host.
    pub(crate) fn system() -> LsmHost {
        LsmHost::at("/")
    }

    /// A host whose `/sys` lives under `root` (a fake one in tests).
    pub(crate) fn at(root: impl Into<PathBuf>) -> LsmHost {
        LsmHost { root: root.into() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// `Ok` if AppArmor is enabled, else what is missing.
    fn apparmor(&self) -> std::result::Result<(), String> {
        let fs = self.path("sys/kernel/security/apparmor");
        if !fs.exists() {
            return Err(format!("{} does not exist", fs.display()));
        }
        let p = self.path("sys/module/apparmor/parameters/enabled");
        match std::fs::read_to_string(&p) {
            Ok(s) if s.trim_end() == "Y" => Ok(()),
            Ok(s) => Err(format!(
                "{} reads {:?}, not \"Y\"",
                p.display(),
                s.trim_end()
            )),
            Err(_) => Err(format!("{} cannot be read", p.display())),
        }
    }

    /// `Ok` if SELinux is enabled, else what is missing.
    fn selinux(&self) -> std::result::Result<(), String> {
        let p = self.path("sys/fs/selinux/enforce");
        if p.exists() {
            Ok(())
        } else {
            Err(format!("{} does not exist", p.display()))
        }
    }
}

/// What the container process applies before it executes the user program.
#[derive(Debug, Clone, Default)]
pub(crate) struct LsmPlan {
    /// `exec <profile>` for AppArmor's attr file.
    apparmor: Option<CString>,
    /// The SELinux process label.
    selinux: Option<CString>,
    /// The SELinux mount label.
    pub(crate) mount_label: Option<String>,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

fn cstring(field: &'static str, s: String) -> Result<CString> {
    CString::new(s).map_err(|_| Error::spec(field, "contains a NUL byte"))
}

impl LsmPlan {
    /// Checks what `process` (and, for a container, `linux`) asks for against `host`;
    /// refuses an LSM the host has not enabled. An empty string asks for nothing.
    pub(crate) fn new(process: &Process, linux: Option<&Linux>, host: &LsmHost) -> Result<Self> {
        let mut plan = LsmPlan::default();
        let refuse =
            |field: &'static str, lsm: &'static str, missing: String| Error::LsmUnavailable {
                field,
                lsm,
                missing,
            };
        if let Some(profile) = non_empty(process.apparmor_profile()) {
            host.apparmor()
                .map_err(|m| refuse("process.apparmorProfile", "AppArmor", m))?;
            plan.apparmor = Some(cstring(
                "process.apparmorProfile",
                format!("exec {profile}"),
            )?);
        }
        if let Some(label) = non_empty(process.selinux_label()) {
            host.selinux()
                .map_err(|m| refuse("process.selinuxLabel", "SELinux", m))?;
            plan.selinux = Some(cstring("process.selinuxLabel", label.to_string())?);
        }
        if let Some(label) = linux.and_then(|l| non_empty(l.mount_label())) {
            host.selinux()
                .map_err(|m| refuse("linux.mountLabel", "SELinux", m))?;
            plan.mount_label = Some(label.to_string());
        }
        Ok(plan)
    }

    /// The LSM attribute files each label goes to, first match wins: AppArmor's own
    /// directory (Linux 5.1+, stacking-safe) before the shared `attr/exec`.
    const APPARMOR_ATTRS: &'static [&'static std::ffi::CStr] = &[
        c"/proc/thread-self/attr/apparmor/exec",
        c"/proc/thread-self/attr/exec",
    ];
    const SELINUX_ATTRS: &'static [&'static std::ffi::CStr] = &[c"/proc/thread-self/attr/exec"];

    /// Sets the labels the next execve takes on, through the syscall seam. Runs in the
    /// container process.
    pub(crate) fn apply(
        &self,
        sys: &impl Syscall,
    ) -> std::result::Result<(), kcore_ns::SetupError> {
        if let Some(v) = &self.apparmor {
            sys.set_exec_label(Self::APPARMOR_ATTRS, v)
                .map_err(|e| format!("apply AppArmor profile: {e}"))?;
        }
        if let Some(v) = &self.selinux {
            sys.set_exec_label(Self::SELINUX_ATTRS, v)
                .map_err(|e| format!("apply SELinux label: {e}"))?;
        }
        Ok(())
    }
}

/// The mount option that carries the SELinux mount label for a mount of `fstype`
/// (tmpfs, mqueue and devpts take one, as in runc), or `None`.
pub(crate) fn mount_label_option(fstype: &str, label: Option<&str>) -> Option<String> {
    let label = label.filter(|l| !l.is_empty())?;
    matches!(fstype, "tmpfs" | "mqueue" | "devpts").then(|| format!("context=\"{label}\""))
}

/// Adds the mount label to the data of the mounts that take one.
pub(crate) fn label_mounts(mounts: &mut [crate::mounts::MountPlan], label: Option<&str>) {
    for m in mounts {
        if let Some(opt) = mount_label_option(m.fstype.as_deref().unwrap_or(""), label) {
            if m.data.is_empty() {
                m.data = opt;
            } else {
                m.data = format!("{},{opt}", m.data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(json: &str) -> Process {
        let mut v: serde_json::Value = serde_json::from_str(
            r#"{"args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0}}"#,
        )
        .unwrap();
        let extra: serde_json::Value = serde_json::from_str(json).unwrap();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    /// A fake root with AppArmor and/or SELinux switched on.
    fn fake(apparmor: Option<&str>, apparmor_fs: bool, selinux: bool) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        if apparmor_fs {
            std::fs::create_dir_all(t.path().join("sys/kernel/security/apparmor")).unwrap();
        }
        if let Some(v) = apparmor {
            let p = t.path().join("sys/module/apparmor/parameters");
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("enabled"), v).unwrap();
        }
        if selinux {
            std::fs::create_dir_all(t.path().join("sys/fs/selinux")).unwrap();
            std::fs::write(t.path().join("sys/fs/selinux/enforce"), "0").unwrap();
        }
        t
    }

    /// (what the config asks for) × (what the host has) → accepted or the field refused.
    #[test]
    fn refuses_what_the_host_cannot_apply() {
        let linux = |label: &str| -> Linux {
            serde_json::from_str(&format!(r#"{{"mountLabel": "{label}"}}"#)).unwrap()
        };
        let profile = r#"{"apparmorProfile": "kcore-test"}"#;
        let label = r#"{"selinuxLabel": "system_u:system_r:container_t:s0"}"#;
        let none = r#"{}"#;
        let empty = r#"{"apparmorProfile": "", "selinuxLabel": ""}"#;
        #[rustfmt::skip]
        type Host<'a> = (Option<&'a str>, bool, bool);
        let cases: &[(&str, &str, Host<'_>, Option<&str>)] = &[
            // process JSON, mountLabel, (apparmor enabled param, apparmor fs, selinux), refused field
            (none, "", (None, false, false), None),
            (empty, "", (None, false, false), None),
            (profile, "", (Some("Y\n"), true, false), None),
            (
                profile,
                "",
                (None, false, false),
                Some("process.apparmorProfile"),
            ),
            (
                profile,
                "",
                (Some("N\n"), true, false),
                Some("process.apparmorProfile"),
            ),
            (
                profile,
                "",
                (Some("Y\n"), false, false),
                Some("process.apparmorProfile"),
            ),
            (
                profile,
                "",
                (None, true, false),
                Some("process.apparmorProfile"),
            ),
            (
                profile,
                "",
                (None, false, true),
                Some("process.apparmorProfile"),
            ),
            (label, "", (None, false, true), None),
            (
                label,
                "",
                (Some("Y\n"), true, false),
                Some("process.selinuxLabel"),
            ),
            (
                none,
                "system_u:object_r:container_file_t:s0",
                (None, false, true),
                None,
            ),
            (
                none,
                "system_u:object_r:container_file_t:s0",
                (None, false, false),
                Some("linux.mountLabel"),
            ),
        ];
        for (i, (p, mount_label, (aa, aa_fs, se), refused)) in cases.iter().enumerate() {
            let root = fake(*aa, *aa_fs, *se);
            let host = LsmHost::at(root.path());
            let res = LsmPlan::new(&process(p), Some(&linux(mount_label)), &host);
            match (refused, res) {
                (None, Ok(plan)) => {
                    assert_eq!(
                        plan.mount_label.as_deref(),
                        Some(*mount_label).filter(|l| !l.is_empty()),
                        "case {i}"
                    );
                }
                (Some(field), Err(e)) => {
                    assert!(
                        matches!(&e, Error::LsmUnavailable { field: f, .. } if f == field),
                        "case {i}: {e:?}"
                    );
                    let msg = e.to_string();
                    assert!(msg.starts_with(field), "case {i}: {msg}");
                    assert!(
                        msg.contains(root.path().to_str().unwrap()),
                        "case {i}: {msg}"
                    );
                }
                (want, got) => panic!("case {i}: want refusal of {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn plan_holds_what_is_applied() {
        let root = fake(Some("Y\n"), true, false);
        let plan = LsmPlan::new(
            &process(r#"{"apparmorProfile": "kcore-p"}"#),
            None,
            &LsmHost::at(root.path()),
        )
        .unwrap();
        assert_eq!(plan.apparmor.as_deref(), Some(c"exec kcore-p"));
        assert_eq!(plan.selinux, None);
    }

    #[test]
    fn label_mounts_appends_to_data() {
        let spec: Vec<oci_spec::runtime::Mount> = serde_json::from_str(
            r#"[{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
                {"destination": "/proc", "type": "proc", "source": "proc"}]"#,
        )
        .unwrap();
        let mut plans = crate::mounts::plan(&spec, std::path::Path::new("/b"));
        label_mounts(&mut plans, Some("s:o:t:s0"));
        let data: Vec<&str> = plans.iter().map(|m| m.data.as_str()).collect();
        assert_eq!(
            data,
            ["mode=755,context=\"s:o:t:s0\"", "context=\"s:o:t:s0\"", ""]
        );
        label_mounts(&mut plans[2..], None);
        assert_eq!(plans[2].data, "");
    }

    /// Applying goes through the syscall seam only: the AppArmor profile to AppArmor's
    /// attribute file (then the shared one), the SELinux label to the shared one; an
    /// empty plan makes no call.
    #[test]
    fn apply_writes_the_exec_attributes_through_the_seam() {
        use crate::sys::testing::{Call, Recorder};
        let root = fake(Some("Y\n"), true, true);
        let plan = LsmPlan::new(
            &process(r#"{"apparmorProfile": "kcore-p", "selinuxLabel": "u:r:t:s0"}"#),
            None,
            &LsmHost::at(root.path()),
        )
        .unwrap();
        let rec = Recorder::default();
        plan.apply(&rec).unwrap();
        assert_eq!(
            *rec.calls.borrow(),
            vec![
                Call::Label {
                    attrs: vec![
                        "/proc/thread-self/attr/apparmor/exec".into(),
                        "/proc/thread-self/attr/exec".into()
                    ],
                    value: "exec kcore-p".into(),
                },
                Call::Label {
                    attrs: vec!["/proc/thread-self/attr/exec".into()],
                    value: "u:r:t:s0".into(),
                },
            ]
        );
        let none = LsmPlan::new(&process("{}"), None, &LsmHost::at(root.path())).unwrap();
        let rec = Recorder::default();
        none.apply(&rec).unwrap();
        assert!(rec.calls.borrow().is_empty());
    }

    #[test]
    fn mount_label_options() {
        for (fstype, label, want) in [
            ("tmpfs", Some("l:t"), Some("context=\"l:t\"")),
            ("mqueue", Some("l:t"), Some("context=\"l:t\"")),
            ("devpts", Some("l:t"), Some("context=\"l:t\"")),
            ("proc", Some("l:t"), None),
            ("bind", Some("l:t"), None),
            ("tmpfs", Some(""), None),
            ("tmpfs", None, None),
        ] {
            assert_eq!(
                mount_label_option(fstype, label).as_deref(),
                want,
                "{fstype}"
            );
        }
    }
}
