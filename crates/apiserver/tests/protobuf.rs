//! `application/vnd.kubernetes.protobuf` over real HTTP, read and written with an
//! independent implementation (the `k8s-pb` prost structs), and with real client-go tools:
//! kubectl 1.35 (which sends protobuf for built-in kinds) and Helm 4.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use kcore_apiserver::{ApiServer, RunningServer};
use prost::Message as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PB: &str = "application/vnd.kubernetes.protobuf";

static COUNTER: AtomicU32 = AtomicU32::new(0);

struct Cluster {
    server: RunningServer,
    dir: tempfile::TempDir,
}

async fn start() -> Cluster {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-protobuf-{}-{n}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let server = ApiServer::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0".parse().expect("addr"))
        .insecure_http(true)
        .build()
        .await
        .expect("build server");
    server
        .write_kubeconfig(dir.path().join("kubeconfig"))
        .expect("kubeconfig");
    Cluster {
        server: server.spawn(),
        dir,
    }
}

struct Resp {
    code: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The envelope's kind and the object's message.
    fn unknown(&self) -> (String, Vec<u8>) {
        assert_eq!(
            self.content_type,
            PB,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let u = unknown(&self.body);
        (
            u.type_meta.and_then(|t| t.kind).unwrap_or_default(),
            u.raw.unwrap_or_default(),
        )
    }

    fn pb<T: prost::Message + Default>(&self) -> T {
        T::decode(self.unknown().1.as_slice()).expect("k8s-pb decodes the body")
    }
}

fn unknown(b: &[u8]) -> Unknown {
    let rest = b.strip_prefix(b"k8s\0").expect("the k8s\\0 magic");
    Unknown::decode(rest).expect("runtime.Unknown")
}

/// A prost message in the envelope a Go client writes.
fn envelope(api_version: &str, kind: &str, msg: &impl prost::Message) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(msg.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(u.encode_to_vec());
    out
}

/// One HTTP/1.1 request on its own connection; the whole (de-chunked) body.
async fn request(
    c: &Cluster,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Resp {
    let mut s = tokio::net::TcpStream::connect(c.server.local_addr())
        .await
        .expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: kcore\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.map(|(ct, b)| {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
        b
    });
    head.push_str(&format!(
        "Content-Length: {}\r\n\r\n",
        body.as_ref().map_or(0, Vec::len)
    ));
    s.write_all(head.as_bytes()).await.expect("write");
    if let Some(b) = &body {
        s.write_all(b).await.expect("write body");
    }
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut rest = raw[split + 4..].to_vec();
    let code = head[9..12].parse().expect("status code");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    if header("transfer-encoding") == "chunked" {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let eol = at
                + rest[at..]
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .expect("chunk size");
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[at..eol]).expect("utf8"), 16)
                    .expect("hex size");
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            at = eol + 2 + size + 2;
        }
        rest = out;
    }
    Resp {
        code,
        content_type: header("content-type"),
        body: rest,
    }
}

fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn meta_named(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_requests_and_responses_over_http() {
    let c = start().await;
    let accept_pb = [(
        "Accept",
        "application/vnd.kubernetes.protobuf, application/json",
    )];
    // create from a protobuf body, answered in protobuf
    let cm = core::ConfigMap {
        metadata: meta_named("cfg"),
        data: labels(&[("k", "v")]),
        binary_data: [("bin".to_owned(), vec![0u8, 159, 146, 150])].into(),
        immutable: Some(false),
    };
    let r = request(
        &c,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &accept_pb,
        Some((PB, envelope("v1", "ConfigMap", &cm))),
    )
    .await;
    assert_eq!(r.code, 201, "{}", String::from_utf8_lossy(&r.body));
    let got: core::ConfigMap = r.pb();
    let m = got.metadata.as_ref().expect("metadata");
    assert_eq!(m.namespace.as_deref(), Some("default"));
    assert!(m.uid.as_ref().is_some_and(|u| !u.is_empty()));
    assert!(m
        .creation_timestamp
        .as_ref()
        .and_then(|t| t.seconds)
        .is_some_and(|s| s > 0));
    assert_eq!(got.data["k"], "v");
    assert_eq!(got.binary_data["bin"], [0u8, 159, 146, 150]);
    // the store holds the JSON a Go client's JSON would have made
    let j = request(
        &c,
        "GET",
        "/api/v1/namespaces/default/configmaps/cfg",
        &[],
        None,
    )
    .await
    .json();
    assert_eq!(j["binaryData"]["bin"], "AJ+Slg==");
    // `immutable` is a pointer upstream: the false a Go client sends is kept
    assert_eq!(j["immutable"], false, "{j}");

    // a Deployment scaled to zero: replicas is a pointer and 0 survives
    let dep = apps::Deployment {
        metadata: meta_named("web"),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: labels(&[("app", "web")]),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: labels(&[("app", "web")]),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: Some("c".into()),
                        image: Some("nginx".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(Default::default()),
    };
    let r = request(
        &c,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        &[],
        Some((PB, envelope("apps/v1", "Deployment", &dep))),
    )
    .await;
    assert_eq!(r.code, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.content_type, "application/json", "JSON stays the default");
    assert_eq!(r.json()["spec"]["replicas"], 0);

    // get and list in protobuf; q-values order the Accept list
    let r = request(
        &c,
        "GET",
        "/apis/apps/v1/namespaces/default/deployments/web",
        &[(
            "Accept",
            "application/json;q=0.5, application/vnd.kubernetes.protobuf",
        )],
        None,
    )
    .await;
    let got: apps::Deployment = r.pb();
    assert_eq!(got.spec.as_ref().and_then(|s| s.replicas), Some(0));
    let r = request(
        &c,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &accept_pb,
        None,
    )
    .await;
    assert_eq!(r.unknown().0, "ConfigMapList");
    let list: core::ConfigMapList = r.pb();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.and_then(|m| m.resource_version).is_some());

    // errors are a protobuf Status
    let r = request(
        &c,
        "GET",
        "/api/v1/namespaces/default/configmaps/nope",
        &accept_pb,
        None,
    )
    .await;
    assert_eq!(r.code, 404);
    let st: meta::Status = r.pb();
    assert_eq!(
        (st.code, st.reason.as_deref()),
        (Some(404), Some("NotFound"))
    );

    // nothing acceptable: 406; Tables stay JSON
    let r = request(
        &c,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[("Accept", "text/html")],
        None,
    )
    .await;
    assert_eq!(r.code, 406);
    assert_eq!(r.json()["reason"], "NotAcceptable");
    let r = request(
        &c,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[("Accept", "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json;as=Table;v=v1;g=meta.k8s.io, application/json")],
        None,
    )
    .await;
    assert_eq!(r.json()["kind"], "Table");

    // a protobuf body of a kind without a protobuf form
    let widget = meta::PartialObjectMetadata {
        metadata: meta_named("w"),
    };
    let r = request(
        &c,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[],
        Some((PB, envelope("example.com/v1", "Widget", &widget))),
    )
    .await;
    assert_eq!(r.code, 415, "{}", String::from_utf8_lossy(&r.body));

    // DELETE with a protobuf DeleteOptions body, as client-go (helm uninstall) sends it
    let opts = |uid: &str| meta::DeleteOptions {
        preconditions: Some(meta::Preconditions {
            uid: Some(uid.into()),
            resource_version: None,
        }),
        propagation_policy: Some("Background".into()),
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let r = request(
        &c,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/cfg",
        &accept_pb,
        Some((
            PB,
            envelope("meta.k8s.io/v1", "DeleteOptions", &opts("not-the-uid")),
        )),
    )
    .await;
    assert_eq!(
        r.code, 409,
        "the precondition was read from the protobuf body"
    );
    let st: meta::Status = r.pb();
    assert_eq!(st.reason.as_deref(), Some("Conflict"));
    let uid = m.uid.clone().unwrap_or_default();
    let r = request(
        &c,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/cfg",
        &accept_pb,
        Some((PB, envelope("meta.k8s.io/v1", "DeleteOptions", &opts(&uid)))),
    )
    .await;
    assert_eq!(r.code, 200, "{}", String::from_utf8_lossy(&r.body));
    let (kind, _) = r.unknown();
    assert!(matches!(kind.as_str(), "ConfigMap" | "Status"), "{kind}");
    let r = request(
        &c,
        "GET",
        "/api/v1/namespaces/default/configmaps/cfg",
        &[],
        None,
    )
    .await;
    assert_eq!(r.code, 404);

    // eviction with a protobuf body
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "x"}]}});
    let r = request(
        &c,
        "POST",
        "/api/v1/namespaces/default/pods",
        &[],
        Some(("application/json", serde_json::to_vec(&pod).expect("json"))),
    )
    .await;
    assert_eq!(r.code, 201);
    let ev = k8s_pb::api::policy::v1::Eviction {
        metadata: Some(meta::ObjectMeta {
            name: Some("p".into()),
            namespace: Some("default".into()),
            ..Default::default()
        }),
        delete_options: Some(meta::DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        }),
    };
    let r = request(
        &c,
        "POST",
        "/api/v1/namespaces/default/pods/p/eviction",
        &accept_pb,
        Some((PB, envelope("policy/v1", "Eviction", &ev))),
    )
    .await;
    assert_eq!(r.code, 201, "{}", String::from_utf8_lossy(&r.body));
    c.server.shutdown().await.expect("shutdown");
}

/// Splits a protobuf watch body into its frames: a 4-byte big-endian length each.
fn frames(mut b: &[u8]) -> Vec<meta::WatchEvent> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = u32::from_be_bytes(b[..4].try_into().expect("length")) as usize;
        out.push(meta::WatchEvent::decode(&b[4..4 + len]).expect("WatchEvent"));
        b = &b[4 + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_watch_stream() {
    let c = Arc::new(start().await);
    let c2 = c.clone();
    let watch = tokio::spawn(async move {
        request(
            &c2,
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=3",
            &[(
                "Accept",
                "application/vnd.kubernetes.protobuf;stream=watch, application/json",
            )],
            None,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let api = c.server.api();
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "w", "namespace": "default"}, "data": {"a": "1"}}))
    .expect("cm");
    api.create(Some("default"), &cm).await.expect("create");
    api.delete::<k8s_openapi::api::core::v1::ConfigMap>(Some("default"), "w")
        .await
        .expect("delete");
    let r = watch.await.expect("watch task");
    assert_eq!(r.code, 200);
    assert_eq!(
        r.content_type,
        "application/vnd.kubernetes.protobuf;stream=watch"
    );
    let events = frames(&r.body);
    let seen: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| e.r#type.as_deref() != Some("BOOKMARK"))
        .map(|e| {
            let raw = e
                .object
                .as_ref()
                .and_then(|o| o.raw.clone())
                .expect("object.raw");
            let u = unknown(&raw);
            let kind = u.type_meta.and_then(|t| t.kind).unwrap_or_default();
            let obj =
                core::ConfigMap::decode(u.raw.unwrap_or_default().as_slice()).expect("ConfigMap");
            let data = obj.data.get("a").cloned().unwrap_or_default();
            (e.r#type.clone().unwrap_or_default(), kind, data)
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ADDED".into(), "ConfigMap".into(), "1".into()),
            ("DELETED".into(), "ConfigMap".into(), "1".into())
        ]
    );
    match Arc::try_unwrap(c) {
        Ok(c) => c.server.shutdown().await.expect("shutdown"),
        Err(_) => panic!("cluster still shared"),
    }
}

use std::sync::Arc;

// ----- real client-go tools -----

fn tool(c: &Cluster, bin: &str, args: &[&str]) -> (bool, String, String) {
    let kubeconfig = c.dir.path().join("kubeconfig");
    let home = c.dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let out = Command::new(bin)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(args)
        .env("HOME", &home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .unwrap_or_else(|e| panic!("{bin} must be installed (tests/run.sh installs it): {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn ok(c: &Cluster, bin: &str, args: &[&str]) -> (String, String) {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let (ok, out, err) = tokio::task::block_in_place(|| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        tool(c, bin, &a)
    });
    assert!(ok, "{bin} {args:?} failed:\nstdout: {out}\nstderr: {err}");
    (out, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sends_and_reads_protobuf() {
    let c = start().await;
    // -v=8 logs each request's headers: the generators send protobuf bodies
    let (_, log) = ok(
        &c,
        "kubectl",
        &["create", "configmap", "cfg", "--from-literal=a=b", "-v=8"],
    )
    .await;
    assert!(
        log.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "kubectl sent no protobuf body: {log}"
    );
    // and read the protobuf answer
    let answer = log
        .split("\"Response\" status=\"201 Created\"")
        .nth(1)
        .expect("a 201 answer");
    assert!(
        answer.contains("Content-Type: application/vnd.kubernetes.protobuf\n"),
        "{log}"
    );
    ok(
        &c,
        "kubectl",
        &[
            "create",
            "secret",
            "generic",
            "sec",
            "--from-literal=pw=s3cret",
        ],
    )
    .await;
    ok(
        &c,
        "kubectl",
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--replicas=0",
            "--port=80",
        ],
    )
    .await;
    ok(
        &c,
        "kubectl",
        &["create", "service", "clusterip", "web", "--tcp=80:8080"],
    )
    .await;
    ok(
        &c,
        "kubectl",
        &["run", "one", "--image=busybox:1.36", "--", "sleep", "3600"],
    )
    .await;
    let dep = request(
        &c,
        "GET",
        "/apis/apps/v1/namespaces/default/deployments/web",
        &[],
        None,
    )
    .await
    .json();
    assert_eq!(dep["spec"]["replicas"], 0, "{dep}");
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        80
    );
    let svc = request(
        &c,
        "GET",
        "/api/v1/namespaces/default/services/web",
        &[],
        None,
    )
    .await
    .json();
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080, "{svc}");
    let sec = request(
        &c,
        "GET",
        "/api/v1/namespaces/default/secrets/sec",
        &[],
        None,
    )
    .await
    .json();
    assert_eq!(sec["data"]["pw"], "czNjcmV0");
    // kubectl delete speaks JSON (a dynamic client); Helm's uninstall sends protobuf
    let (out, _) = ok(
        &c,
        "kubectl",
        &["delete", "configmap", "cfg", "--cascade=background", "-v=8"],
    )
    .await;
    assert!(out.contains("deleted"), "{out}");
    ok(
        &c,
        "kubectl",
        &["delete", "deployment", "web", "--grace-period=0"],
    )
    .await;
    ok(&c, "kubectl", &["delete", "pod", "one", "--wait=false"]).await;
    let r = request(
        &c,
        "GET",
        "/apis/apps/v1/namespaces/default/deployments/web",
        &[],
        None,
    )
    .await;
    assert_eq!(r.code, 404);
    c.server.shutdown().await.expect("shutdown");
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn chart(dir: &Path) -> PathBuf {
    let c = dir.join("chart");
    write(
        &c.join("Chart.yaml"),
        "apiVersion: v2\nname: tiny\nversion: 0.1.0\n",
    );
    write(
        &c.join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\ndata:\n  greeting: hello\n",
    );
    write(
        &c.join("templates/deployment.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-web\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n",
    );
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_and_uninstalls_a_chart() {
    let c = start().await;
    let chart = chart(c.dir.path());
    let chart = chart.to_str().expect("utf8 path");
    ok(
        &c,
        "helm",
        &["install", "tiny", chart, "--namespace", "default"],
    )
    .await;
    let r = request(
        &c,
        "GET",
        "/api/v1/namespaces/default/configmaps/tiny-cfg",
        &[],
        None,
    )
    .await;
    assert_eq!(r.code, 200);
    assert_eq!(r.json()["data"]["greeting"], "hello");
    let r = request(
        &c,
        "GET",
        "/apis/apps/v1/namespaces/default/deployments/tiny-web",
        &[],
        None,
    )
    .await;
    assert_eq!(r.json()["spec"]["replicas"], 0);
    let (list, _) = ok(
        &c,
        "helm",
        &["list", "--namespace", "default", "-o", "json"],
    )
    .await;
    let list: Value = serde_json::from_str(&list).expect("helm list JSON");
    assert_eq!(list[0]["name"], "tiny", "{list}");
    // uninstall deletes with protobuf DeleteOptions bodies
    ok(
        &c,
        "helm",
        &["uninstall", "tiny", "--namespace", "default", "--wait"],
    )
    .await;
    for path in [
        "/api/v1/namespaces/default/configmaps/tiny-cfg",
        "/apis/apps/v1/namespaces/default/deployments/tiny-web",
    ] {
        let r = request(&c, "GET", path, &[], None).await;
        assert_eq!(r.code, 404, "{path} is gone");
    }
    let (list, _) = ok(
        &c,
        "helm",
        &["list", "--namespace", "default", "-o", "json"],
    )
    .await;
    assert_eq!(list.trim(), "[]");
    c.server.shutdown().await.expect("shutdown");
}
