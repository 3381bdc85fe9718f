//! Admission webhooks end to end: a webhook server started here (HTTPS on loopback, its
//! own CA in `caBundle`), configurations made through the API, and objects written with
//! the real `kubectl` (which must be on PATH) and the in-process API.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kcore_apiserver::{Api, ApiServer, RunningServer, WriteOptions};
use serde_json::{json, Value};
use support::webhook::{self, hook, WebhookServer};

static COUNTER: AtomicU32 = AtomicU32::new(0);

const ADMISSION: &str = "admissionregistration.k8s.io/v1";

struct Cluster {
    server: RunningServer,
    api: Api,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

async fn start() -> Cluster {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-webhooks-{}-{n}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let server = ApiServer::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0".parse().expect("addr"))
        .insecure_http(true)
        .build()
        .await
        .expect("build server");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let api = server.api();
    Cluster {
        server: server.spawn(),
        api,
        kubeconfig,
        dir,
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn kubectl(c: &Cluster, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .arg("--cache-dir")
        .arg(c.dir.path().join("cache"))
        .args(args)
        .env("HOME", c.dir.path())
        .env_remove("KUBECONFIG")
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let input = stdin.map(str::to_owned);
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .spawn()
            .expect("kubectl must be on PATH (CI installs it)");
        if let Some(i) = input {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(i.as_bytes())
                .expect("write stdin");
        }
        child.wait_with_output().expect("kubectl runs")
    })
    .await
    .expect("join");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn configure(api: &Api, plural: &str, kind: &str, name: &str, hooks: Vec<Value>) {
    let obj = json!({"apiVersion": ADMISSION, "kind": kind, "metadata": {"name": name}, "webhooks": hooks});
    api.create_value(ADMISSION, plural, None, obj, &WriteOptions::default())
        .await
        .unwrap_or_else(|e| panic!("create {kind} {name}: {e:?}"));
}

async fn mutating(api: &Api, name: &str, hooks: Vec<Value>) {
    configure(
        api,
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        name,
        hooks,
    )
    .await;
}

async fn validating(api: &Api, name: &str, hooks: Vec<Value>) {
    configure(
        api,
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        name,
        hooks,
    )
    .await;
}

fn url_config(s: &WebhookServer, path: &str) -> Value {
    json!({"url": s.url(path), "caBundle": s.ca_bundle()})
}

fn configmap(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels}, "data": {"a": "b"}})
}

async fn create_cm(
    api: &Api,
    ns: &str,
    name: &str,
    labels: Value,
) -> Result<Value, kcore_apiserver::ApiError> {
    api.create_value(
        "v1",
        "configmaps",
        Some(ns),
        configmap(name, labels),
        &WriteOptions::default(),
    )
    .await
}

fn mutated(obj: &Value) -> bool {
    obj["metadata"]["labels"]["webhook.kcore.dev/mutated"] == "true"
}

#[tokio::test]
async fn kubectl_sees_mutation_denial_warnings_and_delete_checks() {
    let c = start().await;
    let s = webhook::start(&[]).await;
    mutating(
        &c.api,
        "add-label",
        vec![hook(
            "label.webhooks.kcore.dev",
            url_config(&s, "/mutate"),
            &["CREATE", "UPDATE"],
            &["configmaps"],
        )],
    )
    .await;
    validating(
        &c.api,
        "deny-forbidden",
        vec![hook(
            "deny.webhooks.kcore.dev",
            url_config(&s, "/validate"),
            &["CREATE", "UPDATE", "DELETE"],
            &["configmaps"],
        )],
    )
    .await;

    // The columns upstream prints.
    let out = kubectl(&c, &["get", "mutatingwebhookconfigurations"], None).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let header: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "WEBHOOKS", "AGE"], "{}", out.stdout);
    assert!(out.stdout.contains("add-label"), "{}", out.stdout);

    // Mutated, with the webhook's warning shown by kubectl.
    let out = kubectl(
        &c,
        &["create", "configmap", "plain", "--from-literal=a=b"],
        None,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("Warning: mutated by the test webhook"),
        "{}",
        out.stderr
    );
    let out = kubectl(&c, &["get", "configmap", "plain", "-o", "json"], None).await;
    let cm: Value = serde_json::from_str(&out.stdout).expect("json");
    assert!(mutated(&cm), "{cm}");

    // Denied with upstream's message, reason and exit status.
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  labels:\n    forbidden: \"true\"\ndata:\n  a: b\n";
    let out = kubectl(&c, &["apply", "-f", "-"], Some(manifest)).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("Error from server (Forbidden)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("admission webhook \"deny.webhooks.kcore.dev\" denied the request: the object is forbidden"),
        "{}",
        out.stderr
    );
    let out = kubectl(&c, &["get", "configmap", "bad"], None).await;
    assert_ne!(out.code, 0, "a denied object is not stored");

    // An update is admitted too: labelling an object forbidden is denied.
    let out = kubectl(&c, &["label", "configmap", "plain", "forbidden=true"], None).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("denied the request: the object is forbidden"),
        "{}",
        out.stderr
    );

    // DELETE of a protected object is denied (no code in the answer: 400).
    let out = kubectl(&c, &["label", "configmap", "plain", "protected=true"], None).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = kubectl(&c, &["delete", "configmap", "plain"], None).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("admission webhook \"deny.webhooks.kcore.dev\" denied the request: protected objects cannot be deleted"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("(BadRequest)") || !out.stderr.contains("(Forbidden)"),
        "{}",
        out.stderr
    );
    let old = s
        .reviews
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["request"]["operation"] == "DELETE")
        .cloned()
        .expect("a DELETE review");
    assert_eq!(old["request"]["oldObject"]["metadata"]["name"], "plain");
    assert!(old["request"]["object"].is_null());
    assert_eq!(old["request"]["options"]["kind"], "DeleteOptions");

    // The review carries what upstream sends.
    let create = s
        .reviews
        .lock()
        .unwrap()
        .iter()
        .find(|r| r["request"]["operation"] == "CREATE")
        .cloned()
        .expect("a CREATE review");
    let r = &create["request"];
    assert_eq!(
        r["kind"],
        json!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert_eq!(
        r["resource"],
        json!({"group": "", "version": "v1", "resource": "configmaps"})
    );
    assert_eq!(r["namespace"], "default");
    assert_eq!(r["name"], "plain");
    assert!(r["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(r["userInfo"]["username"].is_string());
    assert_eq!(r["dryRun"], false);

    // The configurations themselves are never sent to webhooks.
    let n = s.reviews.lock().unwrap().len();
    let out = kubectl(
        &c,
        &["delete", "validatingwebhookconfiguration", "deny-forbidden"],
        None,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(s.reviews.lock().unwrap().len(), n);
    let out = kubectl(&c, &["delete", "configmap", "plain"], None).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    c.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn failure_policy_decides_for_a_dead_webhook() {
    let c = start().await;
    let s = webhook::start(&[]).await;
    // A port nothing listens on.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead_url = format!("https://{}/dead", dead.local_addr().expect("addr"));
    drop(dead);
    let mut ignore = hook(
        "ignore.webhooks.kcore.dev",
        json!({"url": dead_url, "caBundle": s.ca_bundle()}),
        &["CREATE"],
        &["configmaps"],
    );
    ignore["failurePolicy"] = json!("Ignore");
    validating(&c.api, "ignore", vec![ignore]).await;
    let out = kubectl(
        &c,
        &["create", "configmap", "passes", "--from-literal=a=b"],
        None,
    )
    .await;
    assert_eq!(
        out.code, 0,
        "Ignore lets the create through: {}",
        out.stderr
    );

    let mut fail = hook(
        "fail.webhooks.kcore.dev",
        json!({"url": dead_url, "caBundle": s.ca_bundle()}),
        &["CREATE"],
        &["configmaps"],
    );
    fail["failurePolicy"] = json!("Fail");
    validating(&c.api, "fail", vec![fail]).await;
    let out = kubectl(
        &c,
        &["create", "configmap", "blocked", "--from-literal=a=b"],
        None,
    )
    .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "Internal error occurred: failed calling webhook \"fail.webhooks.kcore.dev\": failed to call webhook: Post \"{dead_url}?timeout=10s\""
        )),
        "{}",
        out.stderr
    );
    let e = create_cm(&c.api, "default", "blocked2", json!({}))
        .await
        .expect_err("Fail blocks");
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));

    // A webhook slower than its timeoutSeconds fails the call.
    let mut slow = hook(
        "slow.webhooks.kcore.dev",
        url_config(&s, "/slow"),
        &["CREATE"],
        &["secrets"],
    );
    slow["timeoutSeconds"] = json!(1);
    validating(&c.api, "slow", vec![slow]).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    let e = c
        .api
        .create_value(
            "v1",
            "secrets",
            Some("default"),
            secret,
            &WriteOptions::default(),
        )
        .await
        .expect_err("timed out");
    assert!(
        e.message.ends_with(&format!(
            "Post \"{}?timeout=1s\": context deadline exceeded",
            s.url("/slow")
        )),
        "{}",
        e.message
    );

    // A webhook the CA does not vouch for fails the same way (caBundle is the only trust).
    c.api
        .patch_value(ADMISSION, "validatingwebhookconfigurations", None, "fail",
            kcore_apiserver::PatchType::Json,
            json!([{"op": "replace", "path": "/webhooks/0/clientConfig",
                "value": {"url": s.url("/validate"), "caBundle": webhook::start(&[]).await.ca_bundle()}}]).to_string().as_bytes(),
            &WriteOptions::default())
        .await
        .expect("patch");
    let e = create_cm(&c.api, "default", "blocked3", json!({}))
        .await
        .expect_err("untrusted");
    assert!(e.message.contains("tls handshake"), "{}", e.message);
    c.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn namespace_and_object_selectors() {
    let c = start().await;
    let s = webhook::start(&[]).await;
    let mut by_ns = hook(
        "ns.webhooks.kcore.dev",
        url_config(&s, "/mutate"),
        &["CREATE"],
        &["configmaps"],
    );
    by_ns["namespaceSelector"] = json!({"matchLabels": {"webhooks": "on"}});
    mutating(&c.api, "by-namespace", vec![by_ns]).await;
    for (ns, labels) in [("hooked", json!({"webhooks": "on"})), ("plain", json!({}))] {
        c.api
            .create_value("v1", "namespaces", None,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}),
                &WriteOptions::default())
            .await
            .expect("namespace");
    }
    assert!(mutated(
        &create_cm(&c.api, "hooked", "a", json!({}))
            .await
            .expect("create")
    ));
    assert!(!mutated(
        &create_cm(&c.api, "plain", "a", json!({}))
            .await
            .expect("create")
    ));

    c.api
        .delete::<MutatingWebhookConfiguration>(None, "by-namespace")
        .await
        .expect("delete");

    let mut by_obj = hook(
        "obj.webhooks.kcore.dev",
        url_config(&s, "/mutate"),
        &["CREATE", "UPDATE"],
        &["configmaps"],
    );
    by_obj["objectSelector"] =
        json!({"matchExpressions": [{"key": "mutate", "operator": "In", "values": ["yes"]}]});
    mutating(&c.api, "by-object", vec![by_obj]).await;
    assert!(mutated(
        &create_cm(&c.api, "plain", "b", json!({"mutate": "yes"}))
            .await
            .expect("create")
    ));
    assert!(!mutated(
        &create_cm(&c.api, "plain", "c", json!({"mutate": "no"}))
            .await
            .expect("create")
    ));
    // On update the old object's labels select too: dropping the label is still seen.
    let mut cm = c
        .api
        .get_value("v1", "configmaps", Some("plain"), "b")
        .await
        .expect("get");
    cm["metadata"]["labels"] = json!({"other": "x"});
    let before = s.count("UPDATE");
    c.api
        .patch_value(
            "v1",
            "configmaps",
            Some("plain"),
            "b",
            kcore_apiserver::PatchType::Merge,
            json!({"metadata": {"labels": {"mutate": null, "webhook.kcore.dev/mutated": null}}})
                .to_string()
                .as_bytes(),
            &WriteOptions::default(),
        )
        .await
        .expect("patch");
    assert_eq!(
        s.count("UPDATE"),
        before + 1,
        "the old object's labels matched"
    );
    c.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn service_backed_webhook_through_endpoints() {
    let c = start().await;
    let s = webhook::start(&["hook.webhooks.svc"]).await;
    let create = |plural: &'static str, obj: Value| {
        let api = c.api.clone();
        async move {
            api.create_value(
                "v1",
                plural,
                Some("webhooks"),
                obj,
                &WriteOptions::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{plural}: {e:?}"))
        }
    };
    c.api
        .create_value(
            "v1",
            "namespaces",
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "webhooks"}}),
            &WriteOptions::default(),
        )
        .await
        .expect("namespace");
    create(
        "services",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook"},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}),
    )
    .await;
    // The Service's endpoints: the test's server on loopback, as an endpoints controller
    // would list a ready pod.
    create(
        "endpoints",
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "hook"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                     "ports": [{"name": "https", "port": s.addr.port()}]}]}),
    )
    .await;
    let cc = json!({"service": {"namespace": "webhooks", "name": "hook", "path": "/mutate"},
        "caBundle": s.ca_bundle()});
    mutating(
        &c.api,
        "by-service",
        vec![hook(
            "svc.webhooks.kcore.dev",
            cc,
            &["CREATE"],
            &["configmaps"],
        )],
    )
    .await;
    let stored = c
        .api
        .get_value(
            ADMISSION,
            "mutatingwebhookconfigurations",
            None,
            "by-service",
        )
        .await
        .expect("get");
    assert_eq!(
        stored["webhooks"][0]["clientConfig"]["service"]["port"], 443,
        "defaulted"
    );
    assert!(mutated(
        &create_cm(&c.api, "default", "via-svc", json!({}))
            .await
            .expect("create")
    ));
    // Without ready endpoints the call fails (failurePolicy Fail).
    c.api
        .patch_value(
            "v1",
            "endpoints",
            Some("webhooks"),
            "hook",
            kcore_apiserver::PatchType::Merge,
            br#"{"subsets": []}"#,
            &WriteOptions::default(),
        )
        .await
        .expect("patch endpoints");
    let e = create_cm(&c.api, "default", "no-endpoints", json!({}))
        .await
        .expect_err("fails");
    assert_eq!(e.code, 500);
    assert!(
        e.message
            .contains("no endpoints available for service \"hook\""),
        "{}",
        e.message
    );
    c.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn reinvocation_and_dry_run() {
    let c = start().await;
    let s = webhook::start(&[]).await;
    // "a-copy" runs first and finds nothing to copy; "b-label" then changes the object, so
    // with IfNeeded "a-copy" is called again and copies the label.
    let mut copy = hook(
        "copy.webhooks.kcore.dev",
        url_config(&s, "/copy"),
        &["CREATE"],
        &["configmaps"],
    );
    copy["reinvocationPolicy"] = json!("IfNeeded");
    mutating(&c.api, "a-copy", vec![copy]).await;
    mutating(
        &c.api,
        "b-label",
        vec![hook(
            "label.webhooks.kcore.dev",
            url_config(&s, "/mutate"),
            &["CREATE"],
            &["configmaps"],
        )],
    )
    .await;
    let cm = create_cm(&c.api, "default", "twice", json!({}))
        .await
        .expect("create");
    assert!(mutated(&cm), "{cm}");
    assert_eq!(
        cm["metadata"]["labels"]["copied"], "true",
        "reinvoked: {cm}"
    );
    assert_eq!(s.count("CREATE"), 3);

    // Never: no second call.
    c.api
        .patch_value(
            ADMISSION,
            "mutatingwebhookconfigurations",
            None,
            "a-copy",
            kcore_apiserver::PatchType::Json,
            br#"[{"op": "replace", "path": "/webhooks/0/reinvocationPolicy", "value": "Never"}]"#,
            &WriteOptions::default(),
        )
        .await
        .expect("patch");
    let cm = create_cm(&c.api, "default", "once", json!({}))
        .await
        .expect("create");
    assert!(
        mutated(&cm) && cm["metadata"]["labels"]["copied"].is_null(),
        "{cm}"
    );

    // A server-side dry run is admitted (sideEffects None) and says so; nothing is stored.
    let out = kubectl(
        &c,
        &[
            "create",
            "configmap",
            "dry",
            "--from-literal=a=b",
            "--dry-run=server",
            "-o",
            "json",
        ],
        None,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let dry: Value = serde_json::from_str(&out.stdout).expect("json");
    assert!(mutated(&dry), "{dry}");
    let last = s.reviews.lock().unwrap().last().cloned().expect("a review");
    assert_eq!(last["request"]["dryRun"], true);
    assert_eq!(last["request"]["options"]["dryRun"], json!(["All"]));
    assert_eq!(last["request"]["name"], "dry");
    assert!(c
        .api
        .get_value("v1", "configmaps", Some("default"), "dry")
        .await
        .is_err());
    c.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn subresources_match_their_own_rules() {
    let c = start().await;
    let s = webhook::start(&[]).await;
    let mut sub = hook(
        "sub.webhooks.kcore.dev",
        url_config(&s, "/validate"),
        &["UPDATE"],
        &["deployments/scale", "*/status"],
    );
    sub["rules"][0]["apiGroups"] = json!(["apps"]);
    validating(&c.api, "subresources", vec![sub]).await;
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    c.api
        .create_value(
            "apps/v1",
            "deployments",
            Some("default"),
            d,
            &WriteOptions::default(),
        )
        .await
        .expect("deployment");
    // A plain update matches neither `deployments/scale` nor `*/status`.
    let out = kubectl(&c, &["label", "deployment", "d", "x=y"], None).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(s.count("UPDATE"), 0);

    let out = kubectl(&c, &["scale", "deployment", "d", "--replicas=3"], None).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = s
        .reviews
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("a scale review");
    assert_eq!(r["request"]["subResource"], "scale");
    assert_eq!(
        r["request"]["kind"],
        json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
    );
    assert_eq!(r["request"]["resource"]["resource"], "deployments");
    assert_eq!(r["request"]["object"]["spec"]["replicas"], 3);
    assert_eq!(r["request"]["oldObject"]["spec"]["replicas"], 1);

    let mut dep: k8s_openapi::api::apps::v1::Deployment =
        c.api.get(Some("default"), "d").await.expect("get");
    dep.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
        replicas: Some(3),
        ..Default::default()
    });
    c.api
        .replace_status(Some("default"), &dep)
        .await
        .expect("status");
    let r = s
        .reviews
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("a status review");
    assert_eq!(r["request"]["subResource"], "status");
    assert_eq!(r["request"]["object"]["status"]["replicas"], 3);
    assert_eq!(s.count("UPDATE"), 2);
    c.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn configurations_are_validated_and_defaulted() {
    let c = start().await;
    let bad = json!({"apiVersion": ADMISSION, "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "bad"}, "webhooks": [
            {"name": "a.b.c", "clientConfig": {"url": "http://x/y?z=1"}, "sideEffects": "Some",
             "admissionReviewVersions": ["v1beta1"], "timeoutSeconds": 60},
            {"name": "a.b.c", "clientConfig": {"url": "https://x/"}, "sideEffects": "None",
             "admissionReviewVersions": ["v1"]}]});
    let e = c
        .api
        .create_value(
            ADMISSION,
            "validatingwebhookconfigurations",
            None,
            bad,
            &WriteOptions::default(),
        )
        .await
        .expect_err("invalid");
    assert_eq!(e.code, 422);
    for want in [
        "webhooks[1].name: Duplicate value",
        "'https' is the only allowed URL scheme",
        "query parameters are not permitted",
        "webhooks[0].sideEffects: Unsupported value",
        "must include at least one of v1",
        "the timeout value must be between 1 and 30 seconds",
    ] {
        assert!(e.message.contains(want), "{want}: {}", e.message);
    }
    let good = json!({"apiVersion": ADMISSION, "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "good"}, "webhooks": [hook("a.b.c", json!({"url": "https://x/"}), &["*"], &["*"])]});
    let v = c
        .api
        .create_value(
            ADMISSION,
            "validatingwebhookconfigurations",
            None,
            good,
            &WriteOptions::default(),
        )
        .await
        .expect("valid");
    let w = &v["webhooks"][0];
    assert_eq!(
        (
            w["failurePolicy"].as_str(),
            w["matchPolicy"].as_str(),
            w["timeoutSeconds"].as_i64()
        ),
        (Some("Fail"), Some("Equivalent"), Some(10))
    );
    assert_eq!(w["namespaceSelector"], json!({}));
    assert_eq!(w["rules"][0]["scope"], "*");
    assert!(w.get("reinvocationPolicy").is_none());
    c.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn match_conditions_decide_whether_a_webhook_is_called() {
    let c = start().await;
    let s = webhook::start(&[]).await;
    let mut conditional = hook(
        "cel.webhooks.kcore.dev",
        url_config(&s, "/mutate"),
        &["CREATE", "UPDATE"],
        &["configmaps"],
    );
    conditional["matchConditions"] = json!([
        {"name": "not-skipped", "expression": "!has(object.metadata.labels) || !('skip' in object.metadata.labels)"},
        {"name": "creates-by-users", "expression": "request.operation == 'CREATE' && oldObject == null"},
    ]);
    mutating(&c.api, "conditional", vec![conditional]).await;
    assert!(mutated(
        &create_cm(&c.api, "default", "called", json!({}))
            .await
            .expect("create")
    ));
    assert!(!mutated(
        &create_cm(&c.api, "default", "skipped", json!({"skip": "yes"}))
            .await
            .expect("create")
    ));
    c.api
        .delete::<MutatingWebhookConfiguration>(None, "conditional")
        .await
        .expect("delete");

    // An evaluation error fails closed with failurePolicy Fail (upstream's 403)...
    let mut failing = hook(
        "fail.webhooks.kcore.dev",
        url_config(&s, "/mutate"),
        &["CREATE"],
        &["configmaps"],
    );
    failing["matchConditions"] =
        json!([{"name": "needs-spec", "expression": "object.spec.x == 1"}]);
    let mut ignoring = failing.clone();
    ignoring["name"] = json!("ignore.webhooks.kcore.dev");
    ignoring["failurePolicy"] = json!("Ignore");
    ignoring["objectSelector"] = json!({"matchLabels": {"policy": "ignore"}});
    failing["objectSelector"] = json!({"matchLabels": {"policy": "fail"}});
    mutating(&c.api, "erroring", vec![failing, ignoring]).await;
    let cm = serde_json::to_string(&configmap("closed", json!({"policy": "fail"}))).expect("json");
    let out = kubectl(&c, &["create", "-f", "-"], Some(&cm)).await;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains(
            r#"configmaps "closed" is forbidden: expression 'object.spec.x == 1' resulted in error: no such key: spec"#
        ),
        "{}",
        out.stderr
    );
    // ... and skips the webhook with Ignore.
    assert!(!mutated(
        &create_cm(&c.api, "default", "open", json!({"policy": "ignore"}))
            .await
            .expect("create")
    ));

    // Conditions are validated with the configuration.
    let mut bad = hook(
        "bad.webhooks.kcore.dev",
        url_config(&s, "/mutate"),
        &["CREATE"],
        &["configmaps"],
    );
    bad["matchConditions"] = json!([
        {"name": "a", "expression": "object.("},
        {"name": "a", "expression": "true"},
        {"name": "b", "expression": "authorizer.group('').check()"},
    ]);
    let obj = json!({"apiVersion": ADMISSION, "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "bad"}, "webhooks": [bad]});
    let e = c
        .api
        .create_value(
            ADMISSION,
            "validatingwebhookconfigurations",
            None,
            obj,
            &WriteOptions::default(),
        )
        .await
        .expect_err("invalid");
    assert_eq!(e.code, 422);
    for want in [
        "webhooks[0].matchConditions[0].expression: Invalid value: \"object.(\": compilation failed",
        "webhooks[0].matchConditions[1].name: Duplicate value: \"a\"",
        "webhooks[0].matchConditions[2].expression: Invalid value",
    ] {
        assert!(e.message.contains(want), "{want}: {}", e.message);
    }
    c.server.shutdown().await.expect("shutdown");
}

const REPLICA_POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: replica-limit.example.com
spec:
  failurePolicy: Fail
  paramKind:
    apiVersion: v1
    kind: ConfigMap
  matchConstraints:
    resourceRules:
    - apiGroups: ["apps"]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["deployments"]
  variables:
  - name: max
    expression: "int(params.data.max)"
  validations:
  - expression: "object.spec.replicas <= variables.max"
    messageExpression: "'replicas must be at most ' + string(variables.max)"
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: replica-limit-binding
spec:
  policyName: replica-limit.example.com
  validationActions: [Deny]
  paramRef:
    name: replica-limits
    parameterNotFoundAction: Deny
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: few-keys.example.com
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["configmaps"]
  matchConditions:
  - name: not-params
    expression: "object.metadata.name != 'replica-limits'"
  validations:
  - expression: "!has(object.data) || size(object.data) <= 1"
    message: "a configmap holds one key"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: few-keys-warn
spec:
  policyName: few-keys.example.com
  validationActions: [Warn]
"#;

#[tokio::test]
async fn validating_admission_policies_through_kubectl() {
    let c = start().await;
    let out = kubectl(&c, &["apply", "-f", "-"], Some(REPLICA_POLICY)).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(
            "validatingadmissionpolicy.admissionregistration.k8s.io/replica-limit.example.com created"
        ),
        "{}",
        out.stdout
    );
    let out = kubectl(
        &c,
        &[
            "create",
            "configmap",
            "replica-limits",
            "--from-literal=max=3",
        ],
        None,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Denied, with upstream's message and the validation's reason.
    let out = kubectl(
        &c,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=5",
        ],
        None,
    )
    .await;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains(
            r#"deployments.apps "web" is forbidden: ValidatingAdmissionPolicy 'replica-limit.example.com' with binding 'replica-limit-binding' denied request: replicas must be at most 3"#
        ),
        "{}",
        out.stderr
    );
    let out = kubectl(
        &c,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
        ],
        None,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Updates are checked too (the scale subresource is not: the rule names
    // `deployments`, not `deployments/scale`, as upstream matches).
    let out = kubectl(
        &c,
        &[
            "patch",
            "deployment",
            "web",
            "-p",
            r#"{"spec":{"replicas":4}}"#,
        ],
        None,
    )
    .await;
    assert_ne!(out.code, 0, "patching past the limit: {}", out.stdout);
    assert!(
        out.stderr.contains("replicas must be at most 3"),
        "{}",
        out.stderr
    );

    // No params in another namespace: parameterNotFoundAction Deny.
    let out = kubectl(&c, &["create", "namespace", "elsewhere"], None).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = kubectl(
        &c,
        &[
            "-n",
            "elsewhere",
            "create",
            "deployment",
            "web",
            "--image=nginx",
        ],
        None,
    )
    .await;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains(
            "denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"
        ),
        "{}",
        out.stderr
    );

    // Warn: admitted, with the warning.
    let out = kubectl(
        &c,
        &[
            "create",
            "configmap",
            "two",
            "--from-literal=a=1",
            "--from-literal=b=2",
        ],
        None,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "Warning: Validation failed for ValidatingAdmissionPolicy 'few-keys.example.com' with binding 'few-keys-warn': a configmap holds one key"
        ),
        "{}",
        out.stderr
    );
    let out = kubectl(
        &c,
        &["create", "configmap", "one", "--from-literal=a=1"],
        None,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("Warning"), "{}", out.stderr);

    // Table columns.
    let out = kubectl(&c, &["get", "validatingadmissionpolicies"], None).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let header: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "VALIDATIONS", "PARAMKIND", "AGE"],
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("v1/ConfigMap"), "{}", out.stdout);
    let out = kubectl(&c, &["get", "validatingadmissionpolicybindings"], None).await;
    assert!(out.stdout.contains("*/replica-limits"), "{}", out.stdout);

    // A policy whose expression does not compile is refused.
    let bad = REPLICA_POLICY
        .split("---")
        .next()
        .unwrap_or_default()
        .replace(
            "object.spec.replicas <= variables.max",
            "object.spec.replicas <=",
        );
    let out = kubectl(&c, &["apply", "-f", "-"], Some(&bad)).await;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("spec.validations[0].expression: Invalid value"),
        "{}",
        out.stderr
    );
    c.server.shutdown().await.expect("shutdown");
}
