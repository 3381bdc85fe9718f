//! End to end with the machine's real `kubectl` against a plain-HTTP loopback server.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kcore_apiserver::{ApiServer, RunningServer};
use serde_json::Value;

static COUNTER: AtomicU32 = AtomicU32::new(0);

struct Cluster {
    server: RunningServer,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

async fn start() -> Cluster {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-kubectl-{}-{n}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let server = ApiServer::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0".parse().expect("addr"))
        .insecure_http(true)
        .bookmark_interval(Duration::from_secs(1))
        .build()
        .await
        .expect("build server");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let cache = dir.path().join("cache");
    Cluster {
        server: server.spawn(),
        kubeconfig,
        cache,
        _dir: dir,
    }
}

async fn next_line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .ok()
        .flatten()
}

use kcore_tests::process::Output as Out;

fn kubectl_cmd(c: &Cluster, args: &[&str]) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .arg("--cache-dir")
        .arg(&c.cache)
        .args(args)
        .env("HOME", c.cache.parent().unwrap_or(Path::new("/tmp")))
        .env_remove("KUBECONFIG");
    cmd
}

async fn kubectl_stdin(c: &Cluster, args: &[&str], stdin: Option<&str>) -> Out {
    let cmd = kubectl_cmd(c, args);
    let input = stdin.map(str::to_owned);
    tokio::task::spawn_blocking(move || kcore_tests::process::output(cmd, input.as_deref()))
        .await
        .expect("join")
}

async fn kubectl(c: &Cluster, args: &[&str]) -> Out {
    kubectl_stdin(c, args, None).await
}

async fn ok(c: &Cluster, args: &[&str]) -> String {
    let o = kubectl(c, args).await;
    assert!(
        o.ok,
        "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
        o.stdout, o.stderr
    );
    o.stdout
}

async fn ok_json(c: &Cluster, args: &[&str]) -> Value {
    let out = ok(c, args).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {args:?}: not JSON ({e}): {out}"))
}

const MANIFESTS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  labels: {app: web}
data:
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: web-secret
  labels: {app: other}
stringData:
  password: s3cret
"#;

fn write_manifests(c: &Cluster, name: &str, text: &str) -> String {
    let p = c.kubeconfig.with_file_name(name);
    std::fs::write(&p, text).expect("write manifest");
    p.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_apply_get_scale_patch_delete() {
    let c = start().await;
    let api = c.server.api().clone();
    let file = write_manifests(&c, "app.yaml", MANIFESTS);

    let out = ok(&c, &["apply", "-f", &file]).await;
    for want in [
        "deployment.apps/web created",
        "service/web created",
        "configmap/web-config created",
        "secret/web-secret created",
    ] {
        assert!(out.contains(want), "apply output lacks {want:?}: {out}");
    }
    // Re-applying unchanged manifests changes nothing.
    let out = ok(&c, &["apply", "-f", &file]).await;
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");

    // Defaults and allocation are visible through kubectl.
    let d = ok_json(&c, &["get", "deployment", "web", "-o", "json"]).await;
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(d["metadata"]["generation"], 1);
    let svc = ok(&c, &["get", "svc", "web", "-o", "yaml"]).await;
    assert!(svc.contains("clusterIP: 10.96.0."), "{svc}");
    let secret: k8s_openapi::api::core::v1::Secret = api
        .get(Some("default"), "web-secret")
        .await
        .expect("secret");
    assert_eq!(secret.data.expect("data")["password"].0, b"s3cret");

    // Label selectors and table output.
    let names = ok(&c, &["get", "cm,secret", "-l", "app=web", "-o", "name"]).await;
    assert_eq!(names.trim(), "configmap/web-config");
    let names = ok(
        &c,
        &["get", "secrets", "-l", "app notin (web)", "-o", "name"],
    )
    .await;
    assert_eq!(names.trim(), "secret/web-secret");
    let wide = ok(&c, &["get", "deploy", "-o", "wide"]).await;
    for col in [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ] {
        assert!(wide.contains(col), "missing column {col}: {wide}");
    }
    assert!(
        wide.contains("nginx:1.27") && wide.contains("0/2"),
        "{wide}"
    );
    let svcs = ok(&c, &["get", "svc"]).await;
    assert!(
        svcs.contains("CLUSTER-IP") && svcs.contains("80/TCP"),
        "{svcs}"
    );

    // scale, set image, label, annotate.
    let out = ok(&c, &["scale", "deployment/web", "--replicas=3"]).await;
    assert!(out.contains("scaled"), "{out}");
    let out = ok(&c, &["set", "image", "deployment/web", "web=nginx:1.28"]).await;
    assert!(out.contains("image updated"), "{out}");
    let dep: Deployment = api.get(Some("default"), "web").await.expect("get");
    let spec = &dep.spec;
    assert_eq!(spec.replicas, Some(3));
    let image = spec.template.spec.as_ref().expect("pod spec").containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("nginx:1.28"));
    assert_eq!(
        dep.metadata.generation,
        Some(3),
        "scale and set image each bump generation"
    );
    ok(&c, &["label", "configmap", "web-config", "tier=backend"]).await;
    ok(&c, &["annotate", "configmap", "web-config", "note=hi"]).await;
    let cm: ConfigMap = api.get(Some("default"), "web-config").await.expect("cm");
    assert_eq!(
        cm.metadata.labels.as_ref().expect("labels")["tier"],
        "backend"
    );
    assert_eq!(
        cm.metadata.annotations.as_ref().expect("annotations")["note"],
        "hi"
    );
    let err = kubectl(&c, &["label", "configmap", "web-config", "tier=frontend"]).await;
    assert!(!err.ok, "relabel without --overwrite must fail");

    // patch: strategic (default), merge, json.
    ok(&c, &["patch", "deployment", "web", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"MODE","value":"prod"}]}]}}}}"#]).await;
    let dep: Deployment = api.get(Some("default"), "web").await.expect("get");
    let c0 = &dep.spec.template.spec.expect("pod").containers[0];
    assert_eq!(
        c0.image.as_deref(),
        Some("nginx:1.28"),
        "strategic patch keeps other container fields"
    );
    assert_eq!(c0.env.as_ref().expect("env")[0].name, "MODE");
    ok(
        &c,
        &[
            "patch",
            "configmap",
            "web-config",
            "--type=merge",
            "-p",
            r#"{"data":{"greeting":null,"extra":"x"}}"#,
        ],
    )
    .await;
    let cm: ConfigMap = api.get(Some("default"), "web-config").await.expect("cm");
    let data = cm.data.expect("data");
    assert!(
        !data.contains_key("greeting") && data["extra"] == "x",
        "{data:?}"
    );
    ok(
        &c,
        &[
            "patch",
            "service",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/metadata/labels/patched","value":"yes"}]"#,
        ],
    )
    .await;
    let svc: Service = api.get(Some("default"), "web").await.expect("svc");
    assert_eq!(svc.metadata.labels.expect("labels")["patched"], "yes");

    // Server-side apply: creates, records the manager, and updates.
    let ssa = write_manifests(
        &c,
        "ssa.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"1\"\n  b: \"2\"\n",
    );
    let out = ok(&c, &["apply", "--server-side", "-f", &ssa]).await;
    assert!(out.contains("configmap/ssa serverside-applied"), "{out}");
    let ssa = write_manifests(
        &c,
        "ssa.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"3\"\n",
    );
    ok(&c, &["apply", "--server-side", "-f", &ssa]).await;
    let cm = ok_json(
        &c,
        &["get", "cm", "ssa", "-o", "json", "--show-managed-fields"],
    )
    .await;
    assert_eq!(
        cm["data"],
        serde_json::json!({"a": "3"}),
        "field dropped from the apply is removed"
    );
    assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(cm["metadata"]["managedFields"][0]["operation"], "Apply");

    // Errors come back as kubectl understands them.
    let nf = kubectl(&c, &["get", "deployment", "nope"]).await;
    assert!(
        !nf.ok && nf.stderr.contains("NotFound") && nf.stderr.contains("\"nope\" not found"),
        "{}",
        nf.stderr
    );

    // delete -f removes everything it created.
    let out = ok(&c, &["delete", "-f", &file]).await;
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    let left = ok(&c, &["get", "deploy,svc,secret", "-o", "name"]).await;
    // default/kubernetes is the API server's own Service, there from the start
    let left: Vec<&str> = left
        .lines()
        .filter(|l| *l != "service/kubernetes")
        .collect();
    assert!(left.is_empty(), "left over: {left:?}");
    c.server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_watch_and_rollout_status() {
    let c = start().await;
    let api = c.server.api().clone();
    let file = write_manifests(&c, "app.yaml", MANIFESTS);
    ok(&c, &["apply", "-f", &file]).await;

    // get --watch prints an initial row and then rows for new objects.
    let mut watch = kubectl_cmd(&c, &["get", "configmaps", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get --watch");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    assert_eq!(
        next_line(&mut rx).await.as_deref(),
        Some("configmap/web-config")
    );
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}}))
    .expect("cm");
    api.create(Some("default"), &cm).await.expect("create");
    assert_eq!(next_line(&mut rx).await.as_deref(), Some("configmap/late"));
    let _ = watch.kill();
    let _ = watch.wait();

    // rollout status returns once the status (written here, as a controller would) says
    // so. It prints "Waiting for deployment ..." for the state it listed and then
    // watches from that list's resourceVersion: the status is written only after that
    // line, so the change must arrive through the watch.
    let mut rollout = kubectl_cmd(
        &c,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("kubectl rollout status");
    let stdout = rollout.stdout.take().expect("stdout");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let waiting = next_line(&mut rx).await.unwrap_or_default();
    assert!(waiting.starts_with("Waiting for deployment"), "{waiting}");
    let mut dep: Deployment = api.get(Some("default"), "web").await.expect("get");
    dep.status = Some(DeploymentStatus {
        observed_generation: dep.metadata.generation,
        replicas: Some(2),
        updated_replicas: Some(2),
        ready_replicas: Some(2),
        available_replicas: Some(2),
        conditions: Some(vec![
            DeploymentCondition {
                type_: Some("Available".into()),
                status: Some("True".into()),
                reason: Some("MinimumReplicasAvailable".into()),
                ..Default::default()
            },
            DeploymentCondition {
                type_: Some("Progressing".into()),
                status: Some("True".into()),
                reason: Some("NewReplicaSetAvailable".into()),
                ..Default::default()
            },
        ]),
        ..Default::default()
    });
    api.replace_status(Some("default"), &dep)
        .await
        .expect("write status");
    let mut rest = Vec::new();
    while let Some(line) = next_line(&mut rx).await {
        rest.push(line);
    }
    let out = tokio::task::spawn_blocking(move || rollout.wait_with_output())
        .await
        .expect("join")
        .expect("rollout status");
    let stdout = rest.join("\n");
    assert!(
        out.status.success(),
        "rollout status failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("successfully rolled out"), "{stdout}");
    c.server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_over_https_with_token() {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-kubectl-tls-{}-{n}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let data = dir.path().join("data");
    let server = ApiServer::builder()
        .data_dir(&data)
        .listen("127.0.0.1:0".parse().expect("addr"))
        .build()
        .await
        .expect("https server");
    assert!(server.url().starts_with("https://"));
    let token = server
        .admin_token()
        .expect("a token is generated")
        .to_owned();
    let url = server.url();
    let running = server.spawn();
    let kubeconfig = data.join("admin.kubeconfig");
    assert!(kubeconfig.exists(), "admin kubeconfig written");
    let c = Cluster {
        server: running,
        kubeconfig,
        cache: dir.path().join("cache"),
        _dir: dir,
    };
    // The admin kubeconfig verifies the generated CA and carries the token.
    let file = write_manifests(
        &c,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tls-check\ndata:\n  a: b\n",
    );
    let out = ok(&c, &["apply", "-f", &file]).await;
    assert!(out.contains("configmap/tls-check created"), "{out}");
    let names = ok(&c, &["get", "cm", "-o", "name"]).await;
    assert!(names.contains("configmap/tls-check"));
    // Anonymous requests are refused with 401; a good token is accepted.
    let ca = data.join("pki/ca.crt");
    let anon = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&ca)
        .arg(format!("{url}/api/v1/namespaces"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&anon.stdout), "401");
    let authed = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&ca)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("{url}/api/v1/namespaces"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&authed.stdout), "200");
    c.server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_logs_are_proxied_to_the_node() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = start().await;
    let api = c.server.api().clone();
    // A stand-in node agent answering kubelet-style /containerLogs requests.
    let agent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind agent");
    let port = agent.local_addr().expect("addr").port();
    let (tx, mut paths) = tokio::sync::mpsc::unbounded_channel::<String>();
    let agent_task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = agent.accept().await else {
                break;
            };
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let body = "hello from c\n";
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = tx.send(path);
        }
    });
    let node = serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
    api.create_value("v1", "nodes", None, node, &Default::default())
        .await
        .expect("node");
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}});
    api.create_value("v1", "pods", Some("default"), pod, &Default::default())
        .await
        .expect("pod");
    // the node reported the container running (the logs of a container that has not
    // started are refused: crates/apiserver/tests/pod_logs.rs)
    let mut p: k8s_openapi::api::core::v1::Pod =
        api.get(Some("default"), "p").await.expect("get pod");
    p.status = Some(
        serde_json::from_value(serde_json::json!({"containerStatuses": [{"name": "c",
            "state": {"running": {}}, "ready": true, "restartCount": 0, "image": "busybox", "imageID": ""}]}))
        .expect("status"),
    );
    api.replace_status(Some("default"), &p)
        .await
        .expect("pod status");
    let out = ok(&c, &["logs", "p", "--tail=5"]).await;
    assert_eq!(out, "hello from c\n");
    let path = paths.recv().await.expect("agent saw a request");
    assert!(path.starts_with("/containerLogs/default/p/c?"), "{path}");
    assert!(path.contains("tailLines=5"), "{path}");
    // A pod without a node has no logs yet: upstream answers 204, an empty log.
    let pending = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    api.create_value("v1", "pods", Some("default"), pending, &Default::default())
        .await
        .expect("pod q");
    let out = kubectl(&c, &["logs", "q"]).await;
    assert!(out.ok && out.stdout.is_empty(), "{}", out.stderr);
    agent_task.abort();
    c.server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_generators_send_protobuf() {
    let c = start().await;
    let api = c.server.api().clone();
    ok(&c, &["create", "namespace", "team"]).await;
    ok(
        &c,
        &[
            "create",
            "configmap",
            "cfg",
            "-n",
            "team",
            "--from-literal=a=b",
        ],
    )
    .await;
    ok(
        &c,
        &[
            "create",
            "secret",
            "generic",
            "sec",
            "-n",
            "team",
            "--from-literal=pw=s3cret",
        ],
    )
    .await;
    ok(&c, &["create", "serviceaccount", "robot", "-n", "team"]).await;
    ok(
        &c,
        &[
            "create",
            "deployment",
            "web",
            "-n",
            "team",
            "--image=nginx:1.27",
            "--replicas=2",
            "--port=80",
        ],
    )
    .await;
    ok(
        &c,
        &[
            "run",
            "one",
            "-n",
            "team",
            "--image=busybox:1.36",
            "--labels=run=one",
            "--",
            "sleep",
            "3600",
        ],
    )
    .await;
    ok(
        &c,
        &[
            "create",
            "service",
            "nodeport",
            "web",
            "-n",
            "team",
            "--tcp=80:8080",
        ],
    )
    .await;
    let cm: ConfigMap = api.get(Some("team"), "cfg").await.expect("cm");
    assert_eq!(cm.data.expect("data")["a"], "b");
    let sec: k8s_openapi::api::core::v1::Secret =
        api.get(Some("team"), "sec").await.expect("secret");
    assert_eq!(sec.data.expect("data")["pw"].0, b"s3cret");
    let dep: Deployment = api.get(Some("team"), "web").await.expect("deployment");
    assert_eq!(dep.spec.replicas, Some(2));
    let tpl = dep.spec.template.spec.expect("pod spec");
    assert_eq!(tpl.containers[0].image.as_deref(), Some("nginx:1.27"));
    assert_eq!(
        tpl.containers[0].ports.as_ref().expect("ports")[0].container_port,
        80
    );
    let pod: k8s_openapi::api::core::v1::Pod = api.get(Some("team"), "one").await.expect("pod");
    let pc = &pod.spec.expect("spec").containers[0];
    assert_eq!(
        pc.args.as_deref(),
        Some(&["sleep".to_owned(), "3600".to_owned()][..])
    );
    let svc: Service = api.get(Some("team"), "web").await.expect("svc");
    let spec = svc.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(port.port, 80);
    assert!(port.node_port.is_some_and(|p| (30000..=32767).contains(&p)));
    c.server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_rejects_unknown_fields() {
    let c = start().await;
    let file = write_manifests(
        &c,
        "typo.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: typo\nspec:\n  replica: 2\n  selector:\n    matchLabels: {a: b}\n  template:\n    metadata:\n      labels: {a: b}\n    spec:\n      containers:\n      - name: c\n        image: x\n",
    );
    let out = kubectl(&c, &["apply", "-f", &file]).await;
    assert!(!out.ok, "a typo must be refused: {}", out.stdout);
    assert!(
        out.stderr.contains("unknown field \"spec.replica\""),
        "{}",
        out.stderr
    );
    let left = ok(&c, &["get", "deploy", "-o", "name"]).await;
    assert!(left.trim().is_empty(), "nothing stored: {left}");
    // --validate=false turns the check off, like upstream.
    ok(&c, &["apply", "--validate=false", "-f", &file]).await;
    c.server.shutdown().await.expect("shutdown");
}

const STORAGE: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kcore.dev/local-path
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: fast
provisioner: example.com/fast
allowVolumeExpansion: true
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: none
spec:
  storageClassName: ""
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv1
spec:
  capacity: {storage: 2Gi}
  accessModes: [ReadWriteOnce, ReadOnlyMany]
  storageClassName: fast
  hostPath: {path: /tmp/pv1}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_storage_classes_and_the_default_class() {
    let c = start().await;
    let file = write_manifests(&c, "storage.yaml", STORAGE);
    ok(&c, &["apply", "-f", &file]).await;
    let sc = ok(&c, &["get", "sc"]).await;
    let lines: Vec<Vec<&str>> = sc.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        lines[0],
        [
            "NAME",
            "PROVISIONER",
            "RECLAIMPOLICY",
            "VOLUMEBINDINGMODE",
            "ALLOWVOLUMEEXPANSION",
            "AGE"
        ],
        "{sc}"
    );
    assert_eq!(
        lines[1][..5],
        ["fast", "example.com/fast", "Delete", "Immediate", "true"],
        "{sc}"
    );
    assert_eq!(
        lines[2][..6],
        [
            "local-path",
            "(default)",
            "kcore.dev/local-path",
            "Delete",
            "WaitForFirstConsumer",
            "false"
        ],
        "{sc}"
    );
    // DefaultStorageClass admission: a claim naming no class gets the default one; an
    // empty class stays empty.
    let class = ok(
        &c,
        &[
            "get",
            "pvc",
            "data",
            "-o",
            "jsonpath={.spec.storageClassName}",
        ],
    )
    .await;
    assert_eq!(class, "local-path");
    let class = ok(
        &c,
        &[
            "get",
            "pvc",
            "none",
            "-o",
            "jsonpath={.spec.storageClassName}",
        ],
    )
    .await;
    assert_eq!(class, "");
    let pvc = ok(&c, &["get", "pvc", "data"]).await;
    let head: Vec<&str> = pvc
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        head,
        [
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS",
            "MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE"
        ],
        "{pvc}"
    );
    assert!(
        pvc.lines().nth(1).is_some_and(|l| l.starts_with("data")
            && l.contains("Pending")
            && l.contains("local-path")),
        "{pvc}"
    );
    let pv = ok(&c, &["get", "pv"]).await;
    let head: Vec<&str> = pv
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        head,
        [
            "NAME",
            "CAPACITY",
            "ACCESS",
            "MODES",
            "RECLAIM",
            "POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "REASON",
            "AGE"
        ],
        "{pv}"
    );
    let row: Vec<&str> = pv
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..6],
        ["pv1", "2Gi", "RWO,ROX", "Retain", "Pending", "fast"],
        "{pv}"
    );
    // Upstream's update rules.
    let out = kubectl(
        &c,
        &["patch", "sc", "fast", "-p", r#"{"reclaimPolicy":"Retain"}"#],
    )
    .await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains("updates to reclaimPolicy are forbidden"),
        "{}",
        out.stderr
    );
    let bad = write_manifests(
        &c,
        "bad-sc.yaml",
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: bad}\nprovisioner: \"\"\nvolumeBindingMode: Later\n",
    );
    let out = kubectl(&c, &["create", "-f", &bad]).await;
    assert!(!out.ok, "{}", out.stdout);
    assert!(
        out.stderr.contains("provisioner: Required value"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("volumeBindingMode: Unsupported value: \"Later\""),
        "{}",
        out.stderr
    );
    c.server.shutdown().await.expect("shutdown");
}

/// PriorityClasses: the built-in classes, the columns, the Priority admission and its
/// refusals in upstream's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_priority_classes_and_priority_admission() {
    let c = start().await;
    let pcs = ok(&c, &["get", "priorityclass"]).await;
    let lines: Vec<Vec<&str>> = pcs
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"],
        "{pcs}"
    );
    assert_eq!(
        lines[1][..3],
        ["system-cluster-critical", "2000000000", "false"]
    );
    assert_eq!(
        lines[2][..3],
        ["system-node-critical", "2000001000", "false"]
    );
    assert_eq!(lines[2][4], "PreemptLowerPriority");

    ok(&c, &["create", "priorityclass", "high", "--value=1000"]).await;
    ok(
        &c,
        &[
            "create",
            "priorityclass",
            "batch",
            "--value=10",
            "--global-default",
            "--preemption-policy=Never",
        ],
    )
    .await;
    let o = kubectl(
        &c,
        &[
            "create",
            "priorityclass",
            "other",
            "--value=5",
            "--global-default",
        ],
    )
    .await;
    assert!(!o.ok);
    assert!(
        o.stderr.contains("priorityclasses.scheduling.k8s.io \"other\" is forbidden: PriorityClass batch is already marked as default. Only one default can exist"),
        "{}",
        o.stderr
    );
    let o = kubectl(&c, &["create", "priorityclass", "system-mine", "--value=5"]).await;
    assert!(
        o.stderr.contains("metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"),
        "{}",
        o.stderr
    );

    let pod = |name: &str, class: Option<&str>| {
        let mut p = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        if let Some(class) = class {
            p["spec"]["priorityClassName"] = serde_json::json!(class);
        }
        p.to_string()
    };
    ok_stdin(&c, &["create", "-f", "-"], &pod("hi", Some("high"))).await;
    let spec = ok_json(&c, &["get", "pod", "hi", "-o", "json"]).await["spec"].clone();
    assert_eq!(spec["priority"], 1000);
    assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
    // Without a class the global default applies.
    ok_stdin(&c, &["create", "-f", "-"], &pod("plain", None)).await;
    let spec = ok_json(&c, &["get", "pod", "plain", "-o", "json"]).await["spec"].clone();
    assert_eq!(spec["priorityClassName"], "batch");
    assert_eq!(spec["priority"], 10);
    assert_eq!(spec["preemptionPolicy"], "Never");
    let o = kubectl_stdin(&c, &["create", "-f", "-"], Some(&pod("lost", Some("nope")))).await;
    assert!(
        o.stderr
            .contains("pods \"lost\" is forbidden: no PriorityClass with name nope was found"),
        "{}",
        o.stderr
    );
    // The value is immutable.
    let o = kubectl(
        &c,
        &["patch", "priorityclass", "high", "-p", r#"{"value": 7}"#],
    )
    .await;
    assert!(
        o.stderr
            .contains("value: Forbidden: may not be changed in an update."),
        "{}",
        o.stderr
    );
}

async fn ok_stdin(c: &Cluster, args: &[&str], stdin: &str) -> String {
    let o = kubectl_stdin(c, args, Some(stdin)).await;
    assert!(
        o.ok,
        "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
        o.stdout, o.stderr
    );
    o.stdout
}

/// ResourceQuota: object counts and compute resources refused in upstream's words, the
/// controller's `status.used`, and the columns of `kubectl get quota`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_resource_quotas() {
    let c = start().await;
    let ns = "quota-test";
    ok(&c, &["create", "namespace", ns]).await;
    ok(
        &c,
        &[
            "create",
            "quota",
            "counts",
            "-n",
            ns,
            "--hard=pods=2,count/configmaps=1",
        ],
    )
    .await;
    let pod = |name: &str, resources: serde_json::Value| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}})
        .to_string()
    };
    let create = |name: &'static str, resources: serde_json::Value| {
        let body = pod(name, resources);
        let c = &c;
        async move { kubectl_stdin(c, &["create", "-n", ns, "-f", "-"], Some(&body)).await }
    };
    for name in ["a", "b"] {
        let o = create(name, serde_json::json!({})).await;
        assert!(o.ok, "{}", o.stderr);
    }
    let o = create("c", serde_json::json!({})).await;
    assert!(
        o.stderr.contains("pods \"c\" is forbidden: exceeded quota: counts, requested: pods=1, used: pods=2, limited: pods=2"),
        "{}",
        o.stderr
    );
    ok(&c, &["create", "configmap", "one", "-n", ns]).await;
    let o = kubectl(&c, &["create", "configmap", "two", "-n", ns]).await;
    assert!(
        o.stderr.contains("exceeded quota: counts, requested: count/configmaps=1, used: count/configmaps=1, limited: count/configmaps=1"),
        "{}",
        o.stderr
    );
    let table = ok(&c, &["get", "quota", "-n", ns]).await;
    let head: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(head, ["NAME", "AGE", "REQUEST", "LIMIT"], "{table}");
    assert!(
        table.contains("count/configmaps: 1/1, pods: 2/2"),
        "{table}"
    );
    // The controller gives back what a deleted pod used.
    ok(&c, &["delete", "pod", "a", "-n", ns]).await;
    let mut used = String::new();
    for _ in 0..100 {
        used = ok(
            &c,
            &[
                "get",
                "quota",
                "counts",
                "-n",
                ns,
                "-o",
                "jsonpath={.status.used.pods}",
            ],
        )
        .await;
        if used == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(used, "1");
    let o = create("c", serde_json::json!({})).await;
    assert!(o.ok, "{}", o.stderr);
    let described = ok(&c, &["describe", "quota", "counts", "-n", ns]).await;
    assert!(described.contains("Resource"), "{described}");
    assert!(
        described
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["pods", "2", "2"]),
        "{described}"
    );

    // Compute resources: each container must name what the quota limits.
    ok(&c, &["delete", "quota", "counts", "-n", ns]).await;
    ok(
        &c,
        &[
            "create",
            "quota",
            "compute",
            "-n",
            ns,
            "--hard=limits.cpu=1,requests.memory=1Gi",
        ],
    )
    .await;
    let o = create("d", serde_json::json!({})).await;
    assert!(
        o.stderr.contains("pods \"d\" is forbidden: failed quota: compute: must specify limits.cpu for: c; requests.memory for: c"),
        "{}",
        o.stderr
    );
    let fits = serde_json::json!({"limits": {"cpu": "600m"}, "requests": {"memory": "512Mi"}});
    let o = create("e", fits.clone()).await;
    assert!(o.ok, "{}", o.stderr);
    let o = create("f", fits).await;
    assert!(
        o.stderr.contains("exceeded quota: compute, requested: limits.cpu=600m, used: limits.cpu=600m, limited: limits.cpu=1"),
        "{}",
        o.stderr
    );

    // A quota whose status lacks the use of what it limits refuses, as upstream; the
    // controller leaves a status alone while its hard limits match the spec.
    let ns = "quota-status";
    ok(&c, &["create", "namespace", ns]).await;
    ok(&c, &["create", "quota", "gate", "-n", ns, "--hard=pods=5"]).await;
    let mut used = String::new();
    for _ in 0..100 {
        let args = [
            "get",
            "quota",
            "gate",
            "-n",
            ns,
            "-o",
            "jsonpath={.status.used.pods}",
        ];
        used = ok(&c, &args).await;
        if used == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(used, "0");
    ok(
        &c,
        &[
            "patch",
            "quota",
            "gate",
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"used":null}}"#,
        ],
    )
    .await;
    let body = pod("g", serde_json::json!({}));
    let o = kubectl_stdin(&c, &["create", "-n", ns, "-f", "-"], Some(&body)).await;
    assert!(
        o.stderr
            .contains("pods \"g\" is forbidden: status unknown for quota: gate, resources: pods"),
        "{}",
        o.stderr
    );
    // An update that grows what a quota counts is charged: a Service turned NodePort.
    ok(
        &c,
        &[
            "create",
            "quota",
            "ports",
            "-n",
            ns,
            "--hard=services.nodeports=1",
        ],
    )
    .await;
    ok(
        &c,
        &[
            "create",
            "service",
            "clusterip",
            "web",
            "-n",
            ns,
            "--tcp=80:80,443:443",
        ],
    )
    .await;
    let o = kubectl(
        &c,
        &[
            "patch",
            "service",
            "web",
            "-n",
            ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"type":"NodePort"}}"#,
        ],
    )
    .await;
    assert!(
        o.stderr.contains("services \"web\" is forbidden: exceeded quota: ports, requested: services.nodeports=2, used: services.nodeports=0, limited: services.nodeports=1"),
        "{}",
        o.stderr
    );
}

const LIMIT_RANGE: &str = r#"
apiVersion: v1
kind: LimitRange
metadata:
  name: defaults
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 256Mi}
    defaultRequest: {cpu: 100m}
    max: {cpu: "1"}
    maxLimitRequestRatio: {cpu: "10"}
  - type: PersistentVolumeClaim
    max: {storage: 2Gi}
"#;

/// LimitRange: defaults filled into a pod, min/max and ratio refusals, a claim's max,
/// in upstream's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_limit_ranges() {
    let c = start().await;
    let ns = "limits-test";
    ok(&c, &["create", "namespace", ns]).await;
    let file = write_manifests(&c, "limits.yaml", LIMIT_RANGE);
    ok(&c, &["apply", "-n", ns, "-f", &file]).await;
    let table = ok(&c, &["get", "limits", "-n", ns]).await;
    let head: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(head, ["NAME", "CREATED", "AT"], "{table}");
    // The stored range is defaulted: the memory default request is the default limit.
    let lr = ok_json(&c, &["get", "limits", "defaults", "-n", ns, "-o", "json"]).await;
    assert_eq!(
        lr["spec"]["limits"][0]["defaultRequest"],
        serde_json::json!({"cpu": "100m", "memory": "256Mi"})
    );
    ok(&c, &["run", "plain", "-n", ns, "--image=busybox"]).await;
    let pod = ok_json(&c, &["get", "pod", "plain", "-n", ns, "-o", "json"]).await;
    let r = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(
        r["limits"],
        serde_json::json!({"cpu": "500m", "memory": "256Mi"})
    );
    assert_eq!(
        r["requests"],
        serde_json::json!({"cpu": "100m", "memory": "256Mi"})
    );
    assert_eq!(pod["status"]["qosClass"], "Burstable");
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container plain; cpu, memory limit for container plain"
    );
    let pod = |name: &str, req: &str, lim: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": req}, "limits": {"cpu": lim}}}]}})
        .to_string()
    };
    let o = kubectl_stdin(
        &c,
        &["create", "-n", ns, "-f", "-"],
        Some(&pod("big", "1", "2")),
    )
    .await;
    assert!(
        o.stderr.contains(
            "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        ),
        "{}",
        o.stderr
    );
    let o = kubectl_stdin(
        &c,
        &["create", "-n", ns, "-f", "-"],
        Some(&pod("skewed", "50m", "1")),
    )
    .await;
    assert!(
        o.stderr.contains("pods \"skewed\" is forbidden: cpu max limit to request ratio per Container is 10, but provided ratio is 20.000000"),
        "{}",
        o.stderr
    );
    let claim = serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "huge"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "storageClassName": "", "resources": {"requests": {"storage": "5Gi"}}}})
    .to_string();
    let o = kubectl_stdin(&c, &["create", "-n", ns, "-f", "-"], Some(&claim)).await;
    assert!(
        o.stderr.contains("persistentvolumeclaims \"huge\" is forbidden: maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"),
        "{}",
        o.stderr
    );
}

// ----- /openapi/v2 in protobuf: kubectl's client-side validation of Lists -----

/// The part of gnostic's `openapiv2/OpenAPIv2.proto` that kcore's document uses, with
/// upstream's field numbers, for `protoc --decode` (the independent decoder).
const OPENAPI_V2_PROTO: &str = r#"
syntax = "proto3";
package openapi.v2;
message Any { string yaml = 2; }
message NamedAny { string name = 1; Any value = 2; }
message Info { string title = 1; string version = 2; string description = 3; repeated NamedAny vendor_extension = 7; }
message Paths { repeated NamedAny vendor_extension = 1; }
message NamedSchema { string name = 1; Schema value = 2; }
message Definitions { repeated NamedSchema additional_properties = 1; }
message Properties { repeated NamedSchema additional_properties = 1; }
message TypeItem { repeated string value = 1; }
message ItemsItem { repeated Schema schema = 1; }
message AdditionalPropertiesItem { oneof oneof { Schema schema = 1; bool boolean = 2; } }
message Schema {
  string _ref = 1; string format = 2; string title = 3; string description = 4; Any default = 5;
  double multiple_of = 6; double maximum = 7; bool exclusive_maximum = 8; double minimum = 9;
  bool exclusive_minimum = 10; int64 max_length = 11; int64 min_length = 12; string pattern = 13;
  int64 max_items = 14; int64 min_items = 15; bool unique_items = 16; int64 max_properties = 17;
  int64 min_properties = 18; repeated string required = 19; repeated Any enum = 20;
  AdditionalPropertiesItem additional_properties = 21; TypeItem type = 22; ItemsItem items = 23;
  repeated Schema all_of = 24; Properties properties = 25; string discriminator = 26;
  bool read_only = 27; Any example = 30; repeated NamedAny vendor_extension = 31;
}
message Document {
  string swagger = 1; Info info = 2; string host = 3; string base_path = 4;
  repeated string schemes = 5; repeated string consumes = 6; repeated string produces = 7;
  Paths paths = 8; Definitions definitions = 9; repeated NamedAny vendor_extension = 16;
}
"#;

/// A message of protobuf text format: each field's values in order.
#[derive(Debug, Default)]
struct TextMsg(Vec<(String, TextVal)>);

#[derive(Debug)]
enum TextVal {
    Scalar(String),
    Msg(TextMsg),
}

impl TextMsg {
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a TextVal> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v)
    }
    fn msgs<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a TextMsg> + 'a {
        self.all(name).filter_map(|v| match v {
            TextVal::Msg(m) => Some(m),
            TextVal::Scalar(_) => None,
        })
    }
    fn msg<'a>(&'a self, name: &'a str) -> Option<&'a TextMsg> {
        self.msgs(name).next()
    }
    fn scalars<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.all(name).filter_map(|v| match v {
            TextVal::Scalar(s) => Some(s.as_str()),
            TextVal::Msg(_) => None,
        })
    }
    fn scalar<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.scalars(name).next()
    }
}

/// Undoes protoc's C-style string escapes (octal bytes for non-ASCII).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        i += 1;
        match b[i] {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            c @ b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut k = 1;
                while k < 3 && i + 1 < b.len() && (b'0'..=b'7').contains(&b[i + 1]) {
                    i += 1;
                    k += 1;
                    v = v * 8 + u32::from(b[i] - b'0');
                }
                out.push(v as u8);
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).expect("utf-8")
}

/// Parses protoc's text output (one field per line).
fn parse_text(lines: &mut std::str::Lines<'_>) -> TextMsg {
    let mut m = TextMsg::default();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line == "}" {
            break;
        }
        if let Some(name) = line.strip_suffix(" {") {
            m.0.push((name.to_owned(), TextVal::Msg(parse_text(lines))));
        } else if let Some((name, v)) = line.split_once(": ") {
            let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(s) => unescape(s),
                None => v.to_owned(),
            };
            m.0.push((name.to_owned(), TextVal::Scalar(v)));
        }
    }
    m
}

fn yaml_of(any: &TextMsg) -> Value {
    serde_yaml_ng::from_str(any.scalar("yaml").expect("Any.yaml")).expect("Any.yaml is YAML")
}

fn extensions_of(m: &TextMsg, out: &mut serde_json::Map<String, Value>) {
    for e in m.msgs("vendor_extension") {
        let name = e.scalar("name").expect("NamedAny.name");
        out.insert(
            name.to_owned(),
            yaml_of(e.msg("value").expect("NamedAny.value")),
        );
    }
}

/// A decoded `Schema` back to Swagger JSON.
fn schema_of(m: &TextMsg) -> Value {
    let mut o = serde_json::Map::new();
    for (field, key) in [
        ("_ref", "$ref"),
        ("format", "format"),
        ("title", "title"),
        ("description", "description"),
        ("pattern", "pattern"),
    ] {
        if let Some(s) = m.scalar(field) {
            o.insert(key.into(), Value::from(s));
        }
    }
    for (field, key) in [
        ("max_length", "maxLength"),
        ("min_length", "minLength"),
        ("max_items", "maxItems"),
        ("min_items", "minItems"),
    ] {
        if let Some(s) = m.scalar(field) {
            o.insert(key.into(), Value::from(s.parse::<i64>().expect("int64")));
        }
    }
    for (field, key) in [("maximum", "maximum"), ("minimum", "minimum")] {
        if let Some(s) = m.scalar(field) {
            o.insert(key.into(), Value::from(s.parse::<f64>().expect("double")));
        }
    }
    if m.scalar("unique_items") == Some("true") {
        o.insert("uniqueItems".into(), Value::Bool(true));
    }
    if let Some(d) = m.msg("default") {
        o.insert("default".into(), yaml_of(d));
    }
    let req: Vec<Value> = m.scalars("required").map(Value::from).collect();
    if !req.is_empty() {
        o.insert("required".into(), Value::Array(req));
    }
    let en: Vec<Value> = m.msgs("enum").map(yaml_of).collect();
    if !en.is_empty() {
        o.insert("enum".into(), Value::Array(en));
    }
    if let Some(a) = m.msg("additional_properties") {
        let v = match (a.msg("schema"), a.scalar("boolean")) {
            (Some(s), _) => schema_of(s),
            (None, Some(b)) => Value::Bool(b == "true"),
            (None, None) => panic!("additional_properties without a value"),
        };
        o.insert("additionalProperties".into(), v);
    }
    if let Some(t) = m.msg("type") {
        let t: Vec<&str> = t.scalars("value").collect();
        o.insert("type".into(), Value::from(t[0]));
    }
    if let Some(i) = m.msg("items") {
        let items: Vec<Value> = i.msgs("schema").map(schema_of).collect();
        o.insert("items".into(), items[0].clone());
    }
    if let Some(p) = m.msg("properties") {
        let mut props = serde_json::Map::new();
        for n in p.msgs("additional_properties") {
            let name = n.scalar("name").expect("NamedSchema.name");
            props.insert(name.to_owned(), schema_of(n.msg("value").expect("value")));
        }
        o.insert("properties".into(), Value::Object(props));
    }
    extensions_of(m, &mut o);
    Value::Object(o)
}

/// The Swagger 2.0 keywords of a schema (what the protobuf form carries).
fn v2_keywords(s: &Value) -> Value {
    let Some(m) = s.as_object() else {
        return s.clone();
    };
    let mut o = serde_json::Map::new();
    for (k, v) in m {
        match k.as_str() {
            "nullable" | "oneOf" | "anyOf" | "not" => {}
            "properties" => {
                let p = v.as_object().expect("properties").iter();
                let p = p.map(|(k, v)| (k.clone(), v2_keywords(v))).collect();
                o.insert(k.clone(), Value::Object(p));
            }
            "items" | "additionalProperties" => {
                o.insert(k.clone(), v2_keywords(v));
            }
            "maximum" | "minimum" => {
                o.insert(k.clone(), Value::from(v.as_f64().expect("number")));
            }
            _ => {
                o.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(o)
}

/// `GET /openapi/v2` with an Accept header over a raw loopback connection: the
/// Content-Type and the body.
fn get_openapi_v2(addr: std::net::SocketAddr, accept: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET /openapi/v2 HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let ct = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        })
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    (ct, raw[at + 4..].to_vec())
}

/// `/openapi/v2` in gnostic's protobuf form, decoded by protoc, says what the JSON form
/// says; kubectl then validates Lists client-side without `--validate=false`: a
/// `get -o yaml | replace -f -` round trip and `apply -f` of a List holding a ConfigMap
/// and a custom resource (a bad custom resource in a List is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_validates_lists_against_openapi_v2_protobuf() {
    let c = start().await;
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let group = format!("v2pb{}-{n}.example.com", std::process::id());
    let crd = format!("gizmos.{group}");
    let crd_yaml = format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {crd}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: gizmos, singular: gizmo, kind: Gizmo}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        description: "A gizmo: \"quoted\", naïve and multi\nline."
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {{type: integer, format: int32, minimum: 1, maximum: 10}}
              color: {{type: string, enum: [red, blue], default: red, maxLength: 8}}
              tags:
                type: array
                items: {{type: string, pattern: "^[a-z]+$"}}
                x-kubernetes-list-type: set
              labels:
                type: object
                additionalProperties: {{type: string}}
              port:
                x-kubernetes-int-or-string: true
              note: {{type: string, nullable: true}}
              extra:
                type: object
                x-kubernetes-preserve-unknown-fields: true
"#
    );
    let f = write_manifests(&c, "gizmo-crd.yaml", &crd_yaml);
    ok(&c, &["apply", "-f", &f]).await;
    ok(
        &c,
        &[
            "wait",
            "--for",
            "condition=Established",
            "--timeout=60s",
            &format!("crd/{crd}"),
        ],
    )
    .await;

    // the protobuf form, decoded independently, equals the JSON form
    let addr = c.server.local_addr();
    let pb_accept = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
    let (ct, pb) = tokio::task::spawn_blocking(move || get_openapi_v2(addr, pb_accept))
        .await
        .expect("join");
    assert_eq!(
        ct,
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
    let (json_ct, json_body) =
        tokio::task::spawn_blocking(move || get_openapi_v2(addr, "application/json"))
            .await
            .expect("join");
    assert!(json_ct.starts_with("application/json"), "{json_ct}");
    let doc: Value = serde_json::from_slice(&json_body).expect("JSON document");
    let dir = c.kubeconfig.parent().expect("dir").to_path_buf();
    std::fs::write(dir.join("openapi_v2.proto"), OPENAPI_V2_PROTO).expect("write proto");
    let mut cmd = Command::new("protoc");
    cmd.arg("--decode=openapi.v2.Document")
        .arg(format!("--proto_path={}", dir.display()))
        .arg("openapi_v2.proto")
        .current_dir(&dir);
    let out = tokio::task::spawn_blocking(move || {
        // protoc reads the message on stdin: bytes, so through a file
        let bin = dir.join("openapi_v2.pb");
        std::fs::write(&bin, &pb).expect("write pb");
        cmd.stdin(std::fs::File::open(&bin).expect("open pb"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
    })
    .await
    .expect("join")
    .expect("protoc (Debian's protobuf-compiler) must be installed");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        out.status.success(),
        "protoc --decode failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded = parse_text(&mut text.lines());
    assert_eq!(decoded.scalar("swagger"), doc["swagger"].as_str());
    let info = decoded.msg("info").expect("info");
    assert_eq!(info.scalar("title"), doc["info"]["title"].as_str());
    assert_eq!(info.scalar("version"), doc["info"]["version"].as_str());
    assert!(decoded.msg("paths").is_some(), "{text}");
    let mut defs = serde_json::Map::new();
    for d in decoded
        .msg("definitions")
        .expect("definitions")
        .msgs("additional_properties")
    {
        let name = d.scalar("name").expect("name").to_owned();
        defs.insert(name, schema_of(d.msg("value").expect("schema")));
    }
    let want = doc["definitions"].as_object().expect("definitions");
    assert_eq!(defs.len(), want.len(), "{text}");
    let gizmo = format!(
        "com.example.{}.v1.Gizmo",
        group.trim_end_matches(".example.com")
    );
    assert!(
        defs.contains_key(&gizmo),
        "{gizmo} not in {:?}",
        defs.keys()
    );
    for (name, schema) in want {
        assert_eq!(defs[name], v2_keywords(schema), "definition {name}");
    }
    assert_eq!(
        defs[&gizmo]["x-kubernetes-group-version-kind"][0]["kind"],
        "Gizmo"
    );

    // kubectl: a List round trip and a List with a ConfigMap and a custom resource
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: v2pb-a}\ndata: {k: v}\n";
    ok_stdin(&c, &["apply", "-f", "-"], cm).await;
    let all = ok(&c, &["get", "configmaps", "-o", "yaml"]).await;
    assert!(all.contains("kind: List"), "{all}");
    ok_stdin(&c, &["replace", "-f", "-"], &all).await;
    let list = format!(
        r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {{name: v2pb-b}}
  data: {{k: v}}
- apiVersion: {group}/v1
  kind: Gizmo
  metadata: {{name: g1}}
  spec: {{size: 3, color: blue, tags: [a, b], labels: {{env: prod}}, port: http, note: hi, extra: {{any: [thing]}}}}
"#
    );
    let f = write_manifests(&c, "v2pb-list.yaml", &list);
    let out = ok(&c, &["apply", "-f", &f]).await;
    assert!(out.contains("configmap/v2pb-b"), "{out}");
    assert!(out.contains("gizmo.") && out.contains("/g1"), "{out}");
    let g = ok_json(&c, &["get", &format!("gizmos.{group}"), "g1", "-o", "json"]).await;
    assert_eq!(g["spec"]["size"], 3);

    // the client-side validation uses the custom resource's schema: a wrong type is
    // refused by kubectl itself, before any request
    let bad = list.replace("size: 3", "size: \"three\"");
    let f = write_manifests(&c, "v2pb-bad.yaml", &bad);
    let o = kubectl(&c, &["apply", "--validate=true", "-f", &f]).await;
    assert!(!o.ok, "a string size was accepted: {}", o.stdout);
    assert!(o.stderr.contains("error validating data"), "{}", o.stderr);
    assert!(o.stderr.contains("Gizmo.spec.size"), "{}", o.stderr);
}
