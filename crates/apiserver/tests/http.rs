//! The REST surface over real HTTP (with `curl`): discovery, content negotiation, bad
//! input, chunked watch streams.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use kcore_apiserver::{ApiServer, RunningServer};
use serde_json::{json, Value};

static COUNTER: AtomicU32 = AtomicU32::new(0);

async fn start() -> (RunningServer, tempfile::TempDir) {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-http-{}-{n}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let server = ApiServer::builder()
        .data_dir(dir.path())
        .listen("127.0.0.1:0".parse().expect("addr"))
        .insecure_http(true)
        .build()
        .await
        .expect("build");
    (server.spawn(), dir)
}

struct Resp {
    code: u16,
    body: String,
    content_type: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn curl(method: &str, url: String, headers: &[&str], body: Option<Vec<u8>>) -> Resp {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-X",
        method,
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{content_type}",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if body.is_some() {
        cmd.args(["--data-binary", "@-"]);
    }
    cmd.arg(&url);
    let out = tokio::task::spawn_blocking(move || {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("curl");
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(b) = body {
            let _ = stdin.write_all(&b);
        }
        drop(stdin);
        child.wait_with_output().expect("curl output")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (code, ct) = status.split_once(' ').unwrap_or((status, ""));
    Resp {
        code: code.parse().unwrap_or(0),
        body: body.to_owned(),
        content_type: ct.to_owned(),
    }
}

const JSON: &str = "Content-Type: application/json";

/// What, headers, body, expected code, expected reason.
type Case<'a> = (&'a str, Vec<&'a str>, Vec<u8>, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_health() {
    let (s, _d) = start().await;
    let u = s.url().to_owned();
    let v = curl("GET", format!("{u}/version"), &[], None).await.json();
    assert_eq!(v["major"], "1");
    // One version everywhere: the one kcore-k8s says kcore implements.
    assert_eq!(v["minor"], kcore_k8s::MINOR);
    assert_eq!(v["gitVersion"], kcore_k8s::GIT_VERSION);
    // The commit and date of this build, not placeholders.
    let commit = v["gitCommit"].as_str().expect("gitCommit");
    assert!(
        commit == "unknown"
            || (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit}"
    );
    assert_ne!(commit, "0000000000000000000000000000000000000000");
    assert!(
        ["clean", "dirty", "unknown"].contains(&v["gitTreeState"].as_str().unwrap_or_default()),
        "{v}"
    );
    let date = v["buildDate"].as_str().expect("buildDate");
    assert!(
        date.parse::<k8s_openapi::jiff::Timestamp>().is_ok()
            && date.ends_with('Z')
            && date.len() == 20,
        "{date}"
    );
    assert_ne!(date, "2026-01-01T00:00:00Z");
    let api = curl("GET", format!("{u}/api"), &[], None).await.json();
    assert_eq!(api["versions"], json!(["v1"]));
    let apis = curl("GET", format!("{u}/apis"), &[], None).await.json();
    let groups: Vec<&str> = apis["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["name"].as_str().unwrap_or_default())
        .collect();
    for g in [
        "apps",
        "discovery.k8s.io",
        "networking.k8s.io",
        "coordination.k8s.io",
    ] {
        assert!(groups.contains(&g), "{g} missing from {groups:?}");
    }
    let core = curl("GET", format!("{u}/api/v1"), &[], None).await.json();
    let pods = core["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "pods")
        .expect("pods")
        .clone();
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["categories"], json!(["all"]));
    assert!(core["resources"]
        .as_array()
        .expect("r")
        .iter()
        .any(|r| r["name"] == "pods/status"));
    let apps = curl("GET", format!("{u}/apis/apps/v1"), &[], None)
        .await
        .json();
    let dep = apps["resources"]
        .as_array()
        .expect("r")
        .iter()
        .find(|r| r["name"] == "deployments/scale")
        .expect("scale")
        .clone();
    assert_eq!(
        (dep["group"].as_str(), dep["kind"].as_str()),
        (Some("autoscaling"), Some("Scale"))
    );
    for p in ["/healthz", "/livez", "/readyz"] {
        let r = curl("GET", format!("{u}{p}"), &[], None).await;
        assert_eq!((r.code, r.body.as_str()), (200, "ok"));
    }
    let m = curl("GET", format!("{u}/metrics"), &[], None).await;
    assert!(
        m.body.contains("apiserver_request_total{verb=\"GET\""),
        "{}",
        m.body
    );
    // OpenAPI v2 describes the custom resources (none here).
    let v2 = curl("GET", format!("{u}/openapi/v2"), &[], None).await;
    assert_eq!(v2.code, 200);
    assert_eq!(v2.json()["swagger"], "2.0");
    assert_eq!(
        curl("GET", format!("{u}/apis/nope.io/v1"), &[], None)
            .await
            .json()["kind"],
        "Status"
    );
    s.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_status_and_stores_nothing() {
    let (s, _d) = start().await;
    let u = s.url().to_owned();
    let cms = format!("{u}/api/v1/namespaces/default/configmaps");
    let cases: Vec<Case<'_>> = vec![
        ("malformed JSON", vec![JSON], b"{\"apiVersion\": \"v1\",".to_vec(), 400, "BadRequest"),
        ("malformed YAML", vec!["Content-Type: application/yaml"], b"a: [unclosed".to_vec(), 400, "BadRequest"),
        ("wrong kind", vec![JSON], br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"}}"#.to_vec(), 400, "BadRequest"),
        ("wrong apiVersion", vec![JSON], br#"{"apiVersion":"v2","kind":"ConfigMap","metadata":{"name":"a"}}"#.to_vec(), 400, "BadRequest"),
        ("invalid name", vec![JSON], br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Not_Valid"}}"#.to_vec(), 422, "Invalid"),
        ("invalid label", vec![JSON], br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","labels":{"k":"bad value"}}}"#.to_vec(), 422, "Invalid"),
        ("wrong field type", vec![JSON], br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":[1]}"#.to_vec(), 400, "BadRequest"),
        ("unsupported media", vec!["Content-Type: text/plain"], b"hello".to_vec(), 415, "UnsupportedMediaType"),
    ];
    for (what, headers, body, code, reason) in cases {
        let r = curl("POST", cms.clone(), &headers, Some(body)).await;
        assert_eq!(r.code, code, "{what}: {}", r.body);
        let st = r.json();
        assert_eq!(
            (st["kind"].as_str(), st["reason"].as_str()),
            (Some("Status"), Some(reason)),
            "{what}"
        );
        assert_eq!(st["code"], code, "{what}");
    }
    let r = curl(
        "POST",
        cms.clone(),
        &[JSON],
        Some(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Not_Valid"}}"#.to_vec()),
    )
    .await;
    assert_eq!(r.json()["details"]["causes"][0]["field"], "metadata.name");
    // Oversized body: 413.
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"x":"{}"}}}}"#,
        "a".repeat(4 << 20)
    );
    let r = curl("POST", cms.clone(), &[JSON], Some(big.into_bytes())).await;
    assert_eq!(
        r.code,
        413,
        "{}",
        r.body.chars().take(200).collect::<String>()
    );
    // Unknown resource: 404 Status.
    let r = curl(
        "GET",
        format!("{u}/api/v1/namespaces/default/widgets"),
        &[],
        None,
    )
    .await;
    assert_eq!((r.code, r.json()["kind"].as_str()), (404, Some("Status")));
    // Nothing was stored by any of the above.
    let list = curl("GET", cms.clone(), &[], None).await.json();
    assert_eq!(list["items"], json!([]));

    // A stale resourceVersion on PUT is 409; an unknown patch type is 415.
    let created = curl(
        "POST",
        cms.clone(),
        &[JSON],
        Some(
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ok"},"data":{"a":"1"}}"#
                .to_vec(),
        ),
    )
    .await;
    assert_eq!(created.code, 201, "{}", created.body);
    let mut obj = created.json();
    let rv: u64 = obj["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("num");
    obj["data"]["a"] = json!("2");
    let r = curl(
        "PUT",
        format!("{cms}/ok"),
        &[JSON],
        Some(obj.to_string().into_bytes()),
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.body);
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    obj["data"]["a"] = json!("3");
    let r = curl(
        "PUT",
        format!("{cms}/ok"),
        &[JSON],
        Some(obj.to_string().into_bytes()),
    )
    .await;
    assert_eq!(
        (r.code, r.json()["reason"].as_str()),
        (409, Some("Conflict"))
    );
    let r = curl(
        "PATCH",
        format!("{cms}/ok"),
        &["Content-Type: application/xml"],
        Some(b"<a/>".to_vec()),
    )
    .await;
    assert_eq!(r.code, 415);
    let got = curl("GET", format!("{cms}/ok"), &[], None).await.json();
    assert_eq!(got["data"]["a"], "2");
    // fieldValidation=Strict rejects unknown fields; Warn stores and warns.
    let typo =
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"typo"},"dta":{"a":"1"}}"#
            .to_vec();
    let r = curl(
        "POST",
        format!("{cms}?fieldValidation=Strict"),
        &[JSON],
        Some(typo.clone()),
    )
    .await;
    assert_eq!(r.code, 400, "{}", r.body);
    assert!(
        r.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown field \"dta\"")),
        "{}",
        r.body
    );
    let r = curl(
        "POST",
        format!("{cms}?fieldValidation=Warn"),
        &[JSON],
        Some(typo),
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.body);
    // Apply without a field manager is 400.
    let r = curl(
        "PATCH",
        format!("{cms}/ok"),
        &["Content-Type: application/apply-patch+yaml"],
        Some(b"data: {a: '9'}".to_vec()),
    )
    .await;
    assert_eq!(r.code, 400);
    s.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_yaml_bodies_and_watch_streams() {
    let (s, _d) = start().await;
    let u = s.url().to_owned();
    let pods = format!("{u}/api/v1/namespaces/default/pods");
    let yaml = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\nspec:\n  containers:\n  - name: c\n    image: busybox\n".to_vec();
    let r = curl(
        "POST",
        pods.clone(),
        &["Content-Type: application/yaml"],
        Some(yaml),
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert!(r.content_type.starts_with("application/json"));
    let t = curl(
        "GET",
        pods.clone(),
        &["Accept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json"],
        None,
    )
    .await
    .json();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .expect("cols")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(&cols[..5], ["Name", "Ready", "Status", "Restarts", "Age"]);
    assert_eq!(t["rows"][0]["cells"][0], "p1");
    assert_eq!(t["rows"][0]["cells"][2], "Pending");
    // Binding sets the node; a second binding conflicts.
    let bind = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p1"}, "target": {"kind": "Node", "name": "n1"}});
    let r = curl(
        "POST",
        format!("{pods}/p1/binding"),
        &[JSON],
        Some(bind.to_string().into_bytes()),
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let r = curl(
        "POST",
        format!("{pods}/p1/binding"),
        &[JSON],
        Some(bind.to_string().into_bytes()),
    )
    .await;
    assert_eq!(r.code, 409);
    let p = curl("GET", format!("{pods}/p1"), &[], None).await.json();
    assert_eq!(p["spec"]["nodeName"], "n1");
    // A watch is chunked NDJSON and ends at timeoutSeconds.
    let w = curl(
        "GET",
        format!("{pods}?watch=true&timeoutSeconds=1"),
        &[],
        None,
    )
    .await;
    let lines: Vec<Value> = w
        .body
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("event line"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", w.body);
    assert_eq!(lines[0]["type"], "ADDED");
    assert_eq!(lines[0]["object"]["metadata"]["name"], "p1");
    // A watch from a compacted revision delivers a 410 ERROR event.
    let api = s.api().clone();
    let rev = api.storage().revision().await.expect("rev").current;
    api.storage().compact(rev).await.expect("compact");
    let w = curl(
        "GET",
        format!("{pods}?watch=1&resourceVersion=1&timeoutSeconds=5"),
        &[],
        None,
    )
    .await;
    let ev: Value = serde_json::from_str(w.body.lines().next().expect("a line")).expect("json");
    assert_eq!(
        (ev["type"].as_str(), ev["object"]["code"].as_u64()),
        (Some("ERROR"), Some(410))
    );
    // Scale subresource.
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    let deps = format!("{u}/apis/apps/v1/namespaces/default/deployments");
    assert_eq!(
        curl(
            "POST",
            deps.clone(),
            &[JSON],
            Some(dep.to_string().into_bytes())
        )
        .await
        .code,
        201
    );
    let sc = curl("GET", format!("{deps}/d/scale"), &[], None)
        .await
        .json();
    assert_eq!(
        (sc["kind"].as_str(), sc["spec"]["replicas"].as_i64()),
        (Some("Scale"), Some(1))
    );
    assert_eq!(sc["status"]["selector"], "a=b");
    let r = curl(
        "PATCH",
        format!("{deps}/d/scale"),
        &["Content-Type: application/merge-patch+json"],
        Some(br#"{"spec":{"replicas":5}}"#.to_vec()),
    )
    .await;
    assert_eq!(r.json()["spec"]["replicas"], 5);
    let d = curl("GET", format!("{deps}/d"), &[], None).await.json();
    assert_eq!(d["spec"]["replicas"], 5);
    s.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_compacted_periodically() {
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-compact-{}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let server = ApiServer::builder()
        .data_dir(dir.path())
        .listen("127.0.0.1:0".parse().expect("addr"))
        .insecure_http(true)
        .compaction_interval(std::time::Duration::from_millis(100))
        .build()
        .await
        .expect("build");
    let api = server.api();
    let s = server.spawn();
    let first = api.storage().revision().await.expect("rev").current;
    let mut compacted = 0;
    for i in 0..200 {
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}});
        api.create_value("v1", "configmaps", Some("default"), cm, &Default::default())
            .await
            .expect("create");
        compacted = api.storage().revision().await.expect("rev").compacted;
        if compacted > first {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(compacted >= first, "history was never compacted");
    // A watch from before the compaction now gets 410; objects themselves remain.
    let w = curl(
        "GET",
        format!(
            "{}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=1&timeoutSeconds=5",
            s.url()
        ),
        &[],
        None,
    )
    .await;
    assert!(
        w.body
            .lines()
            .next()
            .is_some_and(|l| l.contains("\"code\":410")),
        "{}",
        w.body
    );
    let list = curl(
        "GET",
        format!("{}/api/v1/namespaces/default/configmaps", s.url()),
        &[],
        None,
    )
    .await
    .json();
    assert!(!list["items"].as_array().expect("items").is_empty());
    s.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_discovery() {
    let (s, _d) = start().await;
    let accept = "Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let r = curl("GET", format!("{}/apis", s.url()), &[accept], None).await;
    assert!(
        r.content_type.contains("as=APIGroupDiscoveryList"),
        "{}",
        r.content_type
    );
    let doc = r.json();
    assert_eq!(doc["kind"], "APIGroupDiscoveryList");
    let apps = doc["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|g| g["metadata"]["name"] == "apps")
        .expect("apps")
        .clone();
    let deploy = apps["versions"][0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["resource"] == "deployments")
        .expect("deployments")
        .clone();
    assert_eq!(deploy["scope"], "Namespaced");
    assert_eq!(deploy["shortNames"], json!(["deploy"]));
    assert!(deploy["subresources"]
        .as_array()
        .expect("subs")
        .iter()
        .any(|s| s["subresource"] == "scale"));
    let core = curl("GET", format!("{}/api", s.url()), &[accept], None)
        .await
        .json();
    assert_eq!(core["items"][0]["versions"][0]["version"], "v1");
    // Without the media type, the legacy list.
    let legacy = curl("GET", format!("{}/apis", s.url()), &[], None)
        .await
        .json();
    assert_eq!(legacy["kind"], "APIGroupList");
    s.shutdown().await.expect("shutdown");
}

/// events.k8s.io/v1 Events are the core Events seen through another API, as upstream:
/// one store, fields renamed on the way, the strict new-style rules on writes through
/// events.k8s.io, and watches of either API see writes through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_k8s_io_serves_the_core_events() {
    let (s, _d) = start().await;
    let u = s.url().to_owned();
    let core = format!("{u}/api/v1/namespaces/default/events");
    let v1 = format!("{u}/apis/events.k8s.io/v1/namespaces/default/events");

    // A watch through events.k8s.io, opened before any write.
    let watch = tokio::spawn(curl(
        "GET",
        format!("{v1}?watch=1&timeoutSeconds=3"),
        &[],
        None,
    ));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // A legacy event through the core API reads back through events.k8s.io.
    let legacy = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "legacy", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Pulled", "message": "pulled the image", "type": "Normal",
        "count": 2, "source": {"component": "kubelet"}});
    let r = curl(
        "POST",
        core.clone(),
        &[JSON],
        Some(legacy.to_string().into_bytes()),
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let got = curl("GET", format!("{v1}/legacy"), &[], None).await.json();
    assert_eq!(got["apiVersion"], "events.k8s.io/v1");
    assert_eq!(got["regarding"]["name"], "p");
    assert_eq!(got["note"], "pulled the image");
    assert_eq!(got["deprecatedCount"], 2);
    assert_eq!(got["deprecatedSource"]["component"], "kubelet");
    assert!(got.get("message").is_none(), "{got}");

    // Through events.k8s.io a new-style event must say who reported what.
    let bare = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "bare", "namespace": "default"},
        "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
        "type": "Normal", "deprecatedCount": 1});
    let r = curl(
        "POST",
        v1.clone(),
        &[JSON],
        Some(bare.to_string().into_bytes()),
    )
    .await;
    assert_eq!(r.code, 422, "{}", r.body);
    let causes: Vec<String> = r.json()["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .map(|c| {
            format!(
                "{}: {}",
                c["field"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    for want in [
        "eventTime: Required value",
        "reportingController: Required value",
        "reportingInstance: Required value",
        "action: Required value",
        "reason: Required value",
        "count: Invalid value: \"\": needs to be unset",
    ] {
        assert!(causes.iter().any(|c| c == want), "{want} not in {causes:?}");
    }
    assert_eq!(
        curl("GET", format!("{core}/bare"), &[], None).await.code,
        404
    );

    // A complete new-style event reads back through the core API.
    let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "fresh", "namespace": "default"},
        "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
        "eventTime": "2026-12-06T10:00:00.000000Z", "type": "Warning",
        "reason": "BackOff", "action": "Restarting", "note": "back-off restarting",
        "reportingController": "kcore.dev/node", "reportingInstance": "node-1"});
    let r = curl(
        "POST",
        v1.clone(),
        &[JSON],
        Some(new.to_string().into_bytes()),
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.json()["note"], "back-off restarting");
    let got = curl("GET", format!("{core}/fresh"), &[], None).await.json();
    assert_eq!(got["apiVersion"], "v1");
    assert_eq!(got["message"], "back-off restarting");
    assert_eq!(got["involvedObject"]["name"], "p");
    assert_eq!(got["reportingComponent"], "kcore.dev/node");

    // What it is about does not change through events.k8s.io.
    let patch = json!({"note": "something else"}).to_string().into_bytes();
    let r = curl(
        "PATCH",
        format!("{v1}/fresh"),
        &["Content-Type: application/merge-patch+json"],
        Some(patch),
    )
    .await;
    assert_eq!(r.code, 422, "{}", r.body);
    assert!(r.body.contains("field is immutable"), "{}", r.body);

    // Both lists hold both events; the watch saw both creates in its own form.
    for url in [&core, &v1] {
        let list = curl("GET", url.to_string(), &[], None).await.json();
        let mut names: Vec<&str> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|o| o["metadata"]["name"].as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["fresh", "legacy"], "{url}");
    }
    let w = watch.await.expect("watch");
    let events: Vec<Value> = w
        .body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("watch event"))
        .collect();
    let added: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "ADDED")
        .map(|e| {
            assert_eq!(e["object"]["apiVersion"], "events.k8s.io/v1", "{e}");
            e["object"]["metadata"]["name"].as_str().unwrap_or("")
        })
        .collect();
    assert_eq!(added, ["legacy", "fresh"]);
}
