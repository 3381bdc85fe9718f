//! Pod Security admission, encryption at rest and the audit log, end to end with the
//! real `kubectl` against an HTTPS server.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kcore_apiserver::{ApiServer, ApiServerBuilder, RunningServer};
use serde_json::Value;

struct Cluster {
    server: Option<RunningServer>,
    dir: tempfile::TempDir,
    admin: PathBuf,
}

/// Starts an HTTPS server on a fresh data directory, configured by `configure` (which
/// gets the temp dir to write its files in).
async fn start(
    prefix: &str,
    configure: impl FnOnce(ApiServerBuilder, &Path) -> ApiServerBuilder,
) -> Cluster {
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-{prefix}-{}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let server = start_in(dir.path(), configure).await;
    Cluster {
        server: Some(server),
        admin: dir.path().join("data/admin.kubeconfig"),
        dir,
    }
}

async fn start_in(
    dir: &Path,
    configure: impl FnOnce(ApiServerBuilder, &Path) -> ApiServerBuilder,
) -> RunningServer {
    let b = ApiServer::builder()
        .data_dir(dir.join("data"))
        .listen("127.0.0.1:0".parse().expect("addr"));
    configure(b, dir)
        .build()
        .await
        .expect("https server")
        .spawn()
}

impl Cluster {
    /// Runs kubectl as the administrator, with `stdin` if given.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.admin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl is on PATH (CI installs it)");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).expect("stdin");
        }
        drop(input);
        child.wait_with_output().expect("kubectl runs")
    }

    /// Runs kubectl and expects success; returns stdout and stderr.
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> (String, String) {
        let out = self.kubectl(args, stdin);
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "kubectl {args:?} failed: {e}{o}");
        (o, e)
    }

    /// Runs kubectl and expects failure; returns stderr.
    fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "kubectl {args:?} should fail");
        e
    }
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    pod-security.kubernetes.io/{k}: {v}\n"))
        .collect();
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n{labels}")
}

const BARE_POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: NAME}
spec:
  containers:
  - {name: c, image: busybox}
";

const PRIVILEGED_POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: priv}
spec:
  containers:
  - name: c
    image: busybox
    securityContext: {privileged: true}
";

const RESTRICTED_POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: good}
spec:
  securityContext:
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: c
    image: busybox
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
";

const HOST_NETWORK_DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      hostNetwork: true
      containers:
      - {name: c, image: busybox}
";

#[tokio::test(flavor = "multi_thread")]
async fn pod_security_admission_as_upstream() {
    let c = start("psa", |b, dir| {
        let conf = dir.join("admission.yaml");
        std::fs::write(
            &conf,
            "apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults: {enforce: privileged}
    exemptions: {namespaces: [psa-exempt]}
",
        )
        .expect("write config");
        b.admission_config_file(&conf).expect("admission config")
    })
    .await;
    let ns = ["-n", "psa-restricted"];
    c.ok(
        &["apply", "-f", "-"],
        Some(&namespace("psa-restricted", &[("enforce", "restricted")])),
    );
    // a privileged pod is refused with upstream's message, baseline reasons first
    let e = c.fails(
        &[&ns[..], &["apply", "-f", "-"]].concat(),
        Some(PRIVILEGED_POD),
    );
    assert!(
        e.contains(
            "pods \"priv\" is forbidden: violates PodSecurity \"restricted:latest\": \
privileged (container \"c\" must not set securityContext.privileged=true), \
allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        ),
        "{e}"
    );
    // a pod that meets restricted is admitted
    c.ok(
        &[&ns[..], &["apply", "-f", "-"]].concat(),
        Some(RESTRICTED_POD),
    );
    // a pinned older version: runAsUser=0 is not checked before v1.23
    c.ok(
        &["apply", "-f", "-"],
        Some(&namespace(
            "psa-old",
            &[("enforce", "restricted"), ("enforce-version", "v1.22")],
        )),
    );
    let root = RESTRICTED_POD.replace("runAsNonRoot: true", "runAsNonRoot: true\n    runAsUser: 0");
    c.ok(&["-n", "psa-old", "apply", "-f", "-"], Some(&root));
    c.ok(
        &[
            "label",
            "ns",
            "psa-old",
            "pod-security.kubernetes.io/enforce-version=v1.23",
            "--overwrite",
        ],
        None,
    );
    let e = c.fails(
        &["-n", "psa-old", "apply", "-f", "-"],
        Some(&root.replace("name: good", "name: good2")),
    );
    assert!(
        e.contains(
            "violates PodSecurity \"restricted:v1.23\": runAsUser=0 (pod must not set runAsUser=0)"
        ),
        "{e}"
    );

    // warn on a workload's template: admitted, with kubectl's `Warning:` line
    c.ok(
        &["apply", "-f", "-"],
        Some(&namespace("psa-warn", &[("warn", "baseline")])),
    );
    let (_, e) = c.ok(
        &["-n", "psa-warn", "apply", "-f", "-"],
        Some(HOST_NETWORK_DEPLOYMENT),
    );
    assert!(
        e.contains("Warning: would violate PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)"),
        "{e}"
    );
    // enforce does not apply to templates, only warn and audit
    c.ok(
        &[
            "label",
            "ns",
            "psa-warn",
            "pod-security.kubernetes.io/enforce=baseline",
        ],
        None,
    );
    let (_, e) = c.ok(
        &["-n", "psa-warn", "apply", "-f", "-"],
        Some(&HOST_NETWORK_DEPLOYMENT.replace("name: web", "name: web2")),
    );
    assert!(
        e.contains("Warning: would violate PodSecurity \"baseline:latest\""),
        "{e}"
    );

    // tightening a namespace warns about the pods already in it
    c.ok(&["create", "ns", "psa-later"], None);
    for p in ["p2", "p1"] {
        let (_, e) = c.ok(
            &["-n", "psa-later", "apply", "-f", "-"],
            Some(&BARE_POD.replace("NAME", p)),
        );
        assert!(!e.contains("Warning"), "{e}");
    }
    let (_, e) = c.ok(
        &[
            "label",
            "ns",
            "psa-later",
            "pod-security.kubernetes.io/enforce=restricted",
        ],
        None,
    );
    assert!(
        e.contains("Warning: existing pods in namespace \"psa-later\" violate the new PodSecurity enforce level \"restricted:latest\""),
        "{e}"
    );
    assert!(
        e.contains("Warning: p1 (and 1 other pod): allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile"),
        "{e}"
    );
    // ... and then enforces it
    let e = c.fails(
        &["-n", "psa-later", "apply", "-f", "-"],
        Some(&BARE_POD.replace("NAME", "p3")),
    );
    assert!(
        e.contains("violates PodSecurity \"restricted:latest\""),
        "{e}"
    );

    // invalid labels are refused
    let e = c.fails(
        &[
            "label",
            "ns",
            "psa-later",
            "pod-security.kubernetes.io/warn=strict",
            "--overwrite",
        ],
        None,
    );
    assert!(
        e.contains("metadata.labels[pod-security.kubernetes.io/warn]: Invalid value: \"strict\": must be one of privileged, baseline, restricted"),
        "{e}"
    );

    // an exempt namespace admits anything, and says its policy is ignored
    let (_, e) = c.ok(
        &["apply", "-f", "-"],
        Some(&namespace("psa-exempt", &[("enforce", "restricted")])),
    );
    assert!(
        e.contains("Warning: namespace \"psa-exempt\" is exempt from Pod Security, and the policy (enforce=restricted:latest) will be ignored"),
        "{e}"
    );
    c.ok(
        &["-n", "psa-exempt", "apply", "-f", "-"],
        Some(PRIVILEGED_POD),
    );
    drop(c.server);
}
