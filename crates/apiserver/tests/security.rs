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

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    out
}

fn store_contains(dir: &Path, needle: &str) -> bool {
    files_under(dir)
        .iter()
        .any(|(_, b)| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

fn encryption_config(dir: &Path, keys: &[(&str, &str)]) -> PathBuf {
    let keys: String = keys
        .iter()
        .map(|(n, s)| format!("      - name: {n}\n        secret: {s}\n"))
        .collect();
    let path = dir.join("encryption.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aesgcm:
      keys:
{keys}  - identity: {{}}
"
        ),
    )
    .expect("write encryption config");
    path
}

const KEY1: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=";
const KEY2: &str = "c2Vjb25kLWtleS0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ=";

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_encrypted_at_rest_and_keys_rotate() {
    let mut c = start("enc", |b, dir| {
        let cfg = encryption_config(dir, &[("key1", KEY1)]);
        b.encryption_provider_config(cfg)
            .expect("encryption config")
    })
    .await;
    let store = c.dir.path().join("data");
    let secret = "TOPSECRET-7f3a9c";
    let secret_b64 = "VE9QU0VDUkVULTdmM2E5Yw==";
    let plain = "PLAINCONFIG-7f3a9c";
    c.ok(&["create", "ns", "enc-a"], None);
    for (ns, name) in [("default", "s1"), ("enc-a", "s2")] {
        c.ok(
            &[
                "-n",
                ns,
                "create",
                "secret",
                "generic",
                name,
                &format!("--from-literal=password={secret}"),
            ],
            None,
        );
    }
    c.ok(
        &[
            "create",
            "configmap",
            "cm",
            &format!("--from-literal=v={plain}"),
        ],
        None,
    );
    // the configmap is not configured: its value is in the store as it is, so the scan
    // finds what is there; the Secret's value is not, in either form
    assert!(store_contains(&store, plain), "the scan sees plain values");
    assert!(!store_contains(&store, secret) && !store_contains(&store, secret_b64));
    assert!(store_contains(&store, "k8s:enc:aesgcm:v1:key1:"));
    let (out, _) = c.ok(
        &["get", "secret", "s1", "-o", "jsonpath={.data.password}"],
        None,
    );
    assert_eq!(out, secret_b64);

    // rotation: the new key first, the old one still reads
    c.server
        .take()
        .expect("running")
        .shutdown()
        .await
        .expect("shutdown");
    c.server = Some(
        start_in(c.dir.path(), |b, dir| {
            let cfg = encryption_config(dir, &[("key2", KEY2), ("key1", KEY1)]);
            b.encryption_provider_config(cfg)
                .expect("encryption config")
        })
        .await,
    );
    let (out, _) = c.ok(
        &[
            "-n",
            "enc-a",
            "get",
            "secret",
            "s2",
            "-o",
            "jsonpath={.data.password}",
        ],
        None,
    );
    assert_eq!(out, secret_b64);
    let (all, _) = c.ok(&["get", "secrets", "-A", "-o", "json"], None);
    // a List: kubectl validates it client-side against /openapi/v2 in protobuf
    c.ok(&["replace", "-f", "-"], Some(&all));
    assert!(store_contains(&store, "k8s:enc:aesgcm:v1:key2:"));

    // the old key gone: every Secret still reads
    c.server
        .take()
        .expect("running")
        .shutdown()
        .await
        .expect("shutdown");
    c.server = Some(
        start_in(c.dir.path(), |b, dir| {
            let cfg = encryption_config(dir, &[("key2", KEY2)]);
            b.encryption_provider_config(cfg)
                .expect("encryption config")
        })
        .await,
    );
    let (out, _) = c.ok(&["get", "secrets", "-A", "-o", "json"], None);
    let list: Value = serde_json::from_str(&out).expect("json");
    let ours: Vec<&Value> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|s| matches!(s["metadata"]["name"].as_str(), Some("s1" | "s2")))
        .collect();
    assert_eq!(ours.len(), 2, "{out}");
    for s in ours {
        assert_eq!(s["data"]["password"], secret_b64);
    }
    assert!(!store_contains(&store, secret) && !store_contains(&store, secret_b64));
    // a bad configuration is refused before the server starts
    let bad = c.dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - secretbox: {keys: [{name: k, secret: eA==}]}\n",
    )
    .expect("write");
    let e = ApiServer::builder()
        .encryption_provider_config(&bad)
        .expect_err("refused");
    assert!(
        e.to_string()
            .contains("provider \"secretbox\" is not supported by kcore"),
        "{e}"
    );
}

fn audit_events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON event"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_log_as_upstream() {
    let c = start("audit", |b, dir| {
        let policy = dir.join("audit-policy.yaml");
        std::fs::write(
            &policy,
            "apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  nonResourceURLs: ['/api*', '/apis*', '/openapi*', '/version']
- level: RequestResponse
  resources: [{group: '', resources: [configmaps]}]
- level: Request
  verbs: [create]
  namespaces: [audited]
- level: Metadata
  omitStages: [RequestReceived]
",
        )
        .expect("policy");
        b.audit_policy_file(policy)
            .audit_log_path(dir.join("audit.log"))
    })
    .await;
    let log = c.dir.path().join("audit.log");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&log).expect("log exists").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    c.ok(
        &["create", "configmap", "audit-cm", "--from-literal=k=v"],
        None,
    );
    c.fails(&["get", "secret", "no-such-secret"], None);
    c.ok(
        &["apply", "-f", "-"],
        Some(&namespace("audited", &[("audit", "restricted")])),
    );
    c.ok(
        &["-n", "audited", "apply", "-f", "-"],
        Some(&BARE_POD.replace("NAME", "audited-pod")),
    );
    // the Audit-Id header of a response names its events
    let out = c.kubectl(&["get", "ns", "default", "-v=8"], None);
    let verbose = String::from_utf8_lossy(&out.stderr).into_owned();
    let header_id = verbose
        .lines()
        .find_map(|l| l.trim().strip_prefix("Audit-Id: "))
        .or_else(|| verbose.lines().find_map(|l| l.split("Audit-Id: ").nth(1)))
        .unwrap_or_else(|| panic!("no Audit-Id header in {verbose}"))
        .trim()
        .to_owned();

    // events are written by the audit writer thread a moment after they happen
    let events = audit_event(&log, "the get of namespace default", |e| {
        e["auditID"] == header_id.as_str() && e["stage"] == "ResponseComplete"
    })
    .await;
    for e in &events {
        assert_eq!(e["kind"], "Event");
        assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
        assert!(e["requestReceivedTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        assert!(e["stageTimestamp"].is_string());
        assert_eq!(e["sourceIPs"][0], "127.0.0.1", "{e}");
        // discovery is at level None
        assert!(
            !e["requestURI"]
                .as_str()
                .unwrap_or_default()
                .starts_with("/openapi"),
            "{e}"
        );
    }
    let find = |verb: &str, resource: &str, stage: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| {
                e["verb"] == verb && e["objectRef"]["resource"] == resource && e["stage"] == stage
            })
            .collect()
    };
    // RequestResponse: both stages, both bodies
    let cm = find("create", "configmaps", "ResponseComplete");
    assert_eq!(cm.len(), 1, "{events:?}");
    let cm = cm[0];
    assert_eq!(cm["level"], "RequestResponse");
    assert_eq!(cm["objectRef"]["namespace"], "default");
    assert_eq!(cm["objectRef"]["apiVersion"], "v1");
    assert_eq!(cm["responseStatus"]["code"], 201);
    assert_eq!(cm["requestObject"]["data"]["k"], "v");
    assert!(cm["responseObject"]["metadata"]["uid"].is_string());
    assert!(
        cm["userAgent"]
            .as_str()
            .is_some_and(|u| u.starts_with("kubectl")),
        "{cm}"
    );
    assert_eq!(cm["user"]["username"], "admin");
    let received = find("create", "configmaps", "RequestReceived");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["auditID"], cm["auditID"]);
    assert!(received[0]["responseStatus"].is_null());
    // Metadata: no bodies, the failure's status, RequestReceived omitted by the rule
    let miss = find("get", "secrets", "ResponseComplete");
    assert_eq!(miss.len(), 1);
    assert_eq!(miss[0]["level"], "Metadata");
    assert_eq!(miss[0]["objectRef"]["name"], "no-such-secret");
    assert_eq!(miss[0]["responseStatus"]["code"], 404);
    assert_eq!(miss[0]["responseStatus"]["reason"], "NotFound");
    assert!(miss[0]["requestObject"].is_null() && miss[0]["responseObject"].is_null());
    assert!(find("get", "secrets", "RequestReceived").is_empty());
    // Request: the request body only; Pod Security's audit annotation
    let pod = find("create", "pods", "ResponseComplete");
    assert_eq!(pod.len(), 1, "{events:?}");
    assert_eq!(pod[0]["level"], "Request");
    assert_eq!(pod[0]["requestObject"]["metadata"]["name"], "audited-pod");
    assert!(pod[0]["responseObject"].is_null());
    assert!(
        pod[0]["annotations"]["pod-security.kubernetes.io/audit-violations"]
            .as_str()
            .is_some_and(|a| a.starts_with("would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false")),
        "{}",
        pod[0]
    );
    // the header's id is in the log
    assert!(
        events
            .iter()
            .any(|e| e["auditID"] == header_id.as_str() && e["verb"] == "get"),
        "{header_id}"
    );
}

/// Waits until the audit log holds an event `pred` accepts; returns the events.
async fn audit_event(log: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    for _ in 0..100 {
        let events = audit_events(log);
        if events.iter().any(&pred) {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no audit event for {what}: {:#?}", audit_events(log));
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_log_records_refusals_and_streams_as_upstream() {
    let c = start("audit-refusals", |b, dir| {
        let policy = dir.join("audit-policy.yaml");
        std::fs::write(
            &policy,
            "apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  nonResourceURLs: ['/api*', '/apis*', '/openapi*', '/version']
- level: Metadata
",
        )
        .expect("policy");
        b.audit_policy_file(policy)
            .audit_log_path(dir.join("audit.log"))
            .audit_log_rotation(kcore_apiserver::AuditLogRotation {
                max_size_mb: 50,
                max_backups: 3,
                max_age_days: 7,
            })
    })
    .await;
    let log = c.dir.path().join("audit.log");
    // kubeconfigs with the admin's cluster and no user, or a token nobody issued
    let (server, _) = c.ok(
        &[
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ],
        None,
    );
    let (ca, _) = c.ok(
        &[
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority-data}",
        ],
        None,
    );
    let kubeconfig = |name: &str, user: &str| {
        let p = c.dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(
            &p,
            format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    certificate-authority-data: {ca}\n    server: {server}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {user}\n"),
        )
        .expect("kubeconfig");
        p
    };
    let as_other = |kc: &Path, args: &[&str]| {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kc)
            .args(args)
            .output()
            .expect("kubectl runs")
    };
    // (a user with Basic credentials, which kubectl does not prompt for and the server
    // does not accept)
    let nobody = kubeconfig("nobody", "{username: nobody, password: none}");
    let out = as_other(
        &nobody,
        &["get", "--raw", "/api/v1/namespaces/no-credentials/pods"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Unauthorized"), "{stderr}");
    let forged = kubeconfig("forged", "{token: not-a-token}");
    let out = as_other(
        &forged,
        &["get", "--raw", "/api/v1/namespaces/forged-token/pods"],
    );
    assert!(!out.status.success());
    let events = audit_event(&log, "the forged token's 401", |e| {
        e["objectRef"]["namespace"] == "forged-token"
    })
    .await;
    // failed authentication: one ResponseStarted event, no user, upstream's message
    for (ns, message) in [
        ("no-credentials", "Authentication failed, attempted: basic"),
        ("forged-token", "Authentication failed, attempted: bearer"),
    ] {
        let mine: Vec<&Value> = events
            .iter()
            .filter(|e| e["objectRef"]["namespace"] == ns)
            .collect();
        assert!(!mine.is_empty(), "{ns}: {events:#?}");
        for e in mine {
            assert_eq!(e["stage"], "ResponseStarted", "{e}");
            assert_eq!(e["level"], "Metadata");
            assert_eq!(e["verb"], "list");
            assert_eq!(e["user"], serde_json::json!({}), "{e}");
            assert_eq!(e["responseStatus"]["code"], 401);
            assert_eq!(e["responseStatus"]["message"], message, "{e}");
        }
    }

    // a 403 (here of an impersonated user): both stages, the authenticated user, the
    // impersonated one as asked, the decision
    let e = c.fails(
        &["--as=nobody-at-all", "get", "secrets", "-n", "kube-public"],
        None,
    );
    assert!(e.contains("forbidden"), "{e}");
    let events = audit_event(&log, "the 403", |e| {
        e["objectRef"]["resource"] == "secrets" && e["stage"] == "ResponseComplete"
    })
    .await;
    let refused: Vec<&Value> = events
        .iter()
        .filter(|e| e["objectRef"]["resource"] == "secrets")
        .collect();
    let stages: Vec<&str> = refused
        .iter()
        .map(|e| e["stage"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        stages,
        ["RequestReceived", "ResponseComplete"],
        "{refused:#?}"
    );
    let done = refused[1];
    assert_eq!(done["user"]["username"], "admin");
    assert_eq!(done["impersonatedUser"]["username"], "nobody-at-all");
    assert_eq!(done["objectRef"]["namespace"], "kube-public");
    assert_eq!(done["responseStatus"]["code"], 403);
    assert_eq!(done["responseStatus"]["reason"], "Forbidden");
    assert_eq!(done["responseStatus"]["status"], "Failure");
    assert_eq!(
        done["annotations"]["authorization.k8s.io/decision"], "forbid",
        "{done}"
    );
    assert_eq!(done["auditID"], refused[0]["auditID"]);

    // a watch: ResponseStarted when it starts, ResponseComplete when it ends
    let out = c.kubectl(
        &[
            "get",
            "configmaps",
            "-n",
            "watched",
            "--watch-only",
            "--request-timeout=2s",
        ],
        None,
    );
    drop(out);
    let events = audit_event(&log, "the watch's end", |e| {
        e["verb"] == "watch" && e["stage"] == "ResponseComplete"
    })
    .await;
    let watch: Vec<&Value> = events
        .iter()
        .filter(|e| e["verb"] == "watch" && e["objectRef"]["namespace"] == "watched")
        .collect();
    let stages: Vec<&str> = watch
        .iter()
        .map(|e| e["stage"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        stages,
        ["RequestReceived", "ResponseStarted", "ResponseComplete"],
        "{watch:#?}"
    );
    assert_eq!(watch[1]["responseStatus"]["code"], 200);
    assert_eq!(watch[2]["responseStatus"]["code"], 200);
    assert!(watch[1]["stageTimestamp"].as_str() <= watch[2]["stageTimestamp"].as_str());
    // an allowed request carries the allow decision
    assert_eq!(
        watch[2]["annotations"]["authorization.k8s.io/decision"],
        "allow"
    );
}
