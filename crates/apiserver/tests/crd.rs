//! CustomResourceDefinitions end to end: the real `kubectl` (discovery, explain, get with
//! printer columns, scale, apply --server-side), multiple versions, name conflicts and
//! CRD deletion, against one plain-HTTP loopback server shared by the tests of this
//! file (each test uses its own API group and kubectl cache).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The shared server: built and run on a runtime of its own thread, so that it outlives
/// each test's runtime.
struct Shared {
    url: String,
    kubeconfig: PathBuf,
    dir: PathBuf,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kcore-crd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let server = kcore_apiserver::ApiServer::builder()
                    .data_dir(d.join("data"))
                    .listen("127.0.0.1:0".parse().expect("addr"))
                    .insecure_http(true)
                    .build()
                    .await
                    .expect("build server");
                let kubeconfig = d.join("kubeconfig");
                server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
                let running = server.spawn();
                tx.send(Shared {
                    url: running.url().to_owned(),
                    kubeconfig,
                    dir: d.clone(),
                })
                .expect("send");
                // Serve until the test process ends.
                let _keep = running;
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("server started")
    })
}

/// A test's view of the shared server: its own kubectl cache and file directory.
struct Ctx {
    s: &'static Shared,
    dir: PathBuf,
}

impl Ctx {
    fn new(name: &str) -> Self {
        let s = shared();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = s.dir.join(format!("{name}-{n}"));
        std::fs::create_dir_all(&dir).expect("test dir");
        Self { s, dir }
    }

    fn cmd(&self, prog: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .env("KUBECONFIG", &self.s.kubeconfig)
            .env("HOME", &self.dir)
            .env("XDG_CACHE_HOME", self.dir.join("xdg-cache"))
            .env("XDG_CONFIG_HOME", self.dir.join("xdg-config"))
            .env("XDG_DATA_HOME", self.dir.join("xdg-data"));
        cmd
    }

    fn run(&self, prog: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut cmd = self.cmd(prog, args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{prog} must be on PATH: {e}"));
        if let Some(i) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(i.as_bytes())
                .expect("write stdin");
        }
        let out = child.wait_with_output().expect("output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let cache = self.dir.join("kube-cache");
        let mut all = vec!["--cache-dir", cache.to_str().expect("utf-8")];
        all.extend_from_slice(args);
        self.run("kubectl", &all, None)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl(args);
        assert!(ok, "kubectl {args:?} failed:\nstdout: {out}\nstderr: {err}");
        out
    }

    fn fails(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl(args);
        assert!(
            !ok,
            "kubectl {args:?} should fail:\nstdout: {out}\nstderr: {err}"
        );
        err
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: not JSON ({e}): {out}"))
    }

    fn apply(&self, name: &str, yaml: &str, extra: &[&str]) -> String {
        let p = self.file(name, yaml);
        let mut args = vec!["apply", "-f", &p];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).expect("write file");
        p.to_string_lossy().into_owned()
    }

    /// Waits until `check` holds (polling), or panics with `what`.
    fn eventually(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out waiting for {what}");
    }
}

/// A namespaced CRD `widgets.<group>` with a schema, status and scale subresources,
/// printer columns, a selectable field, short names and the `all` category.
fn widget_crd(group: &str) -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wdg]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    selectableFields:
    - jsonPath: .spec.color
    subresources:
      status: {{}}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    additionalPrinterColumns:
    - name: Color
      type: string
      jsonPath: .spec.color
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Ready
      type: string
      jsonPath: .status.conditions[?(@.type=="Ready")].status
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        description: A widget for tests.
        properties:
          spec:
            type: object
            description: What the widget should be.
            required: [color]
            x-kubernetes-validations:
            - rule: self.replicas <= 10
              message: a widget runs at most 10 replicas
            properties:
              color:
                type: string
                description: The widget's color.
                enum: [red, blue, green]
              replicas:
                type: integer
                default: 1
              extra:
                type: object
                x-kubernetes-preserve-unknown-fields: true
          status:
            type: object
            properties:
              replicas: {{type: integer}}
              selector: {{type: string}}
              conditions:
                type: array
                items:
                  type: object
                  properties:
                    type: {{type: string}}
                    status: {{type: string}}
"#
    )
}

fn unique_group(tag: &str) -> String {
    format!(
        "{tag}{}-{}.kcore.test",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

fn wait_established(c: &Ctx, crd: &str) {
    c.ok(&[
        "wait",
        "--for",
        "condition=Established",
        "--timeout=30s",
        &format!("crd/{crd}"),
    ]);
}

#[test]
fn crd_established_and_custom_resources_through_kubectl() {
    let c = Ctx::new("kubectl");
    let group = unique_group("w");
    let crd = format!("widgets.{group}");
    let out = c.apply("crd.yaml", &widget_crd(&group), &[]);
    assert!(
        out.contains(&format!(
            "customresourcedefinition.apiextensions.k8s.io/{crd} created"
        )),
        "{out}"
    );
    wait_established(&c, &crd);
    let got = c.json(&["get", "crd", &crd, "-o", "json"]);
    let conds = got["status"]["conditions"].as_array().expect("conditions");
    let cond = |t: &str| {
        conds
            .iter()
            .find(|x| x["type"] == t)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(cond("NamesAccepted")["status"], "True");
    assert_eq!(cond("NamesAccepted")["reason"], "NoConflicts");
    assert_eq!(cond("Established")["status"], "True");
    assert_eq!(got["status"]["acceptedNames"]["listKind"], "WidgetList");
    assert_eq!(got["status"]["acceptedNames"]["shortNames"], json!(["wdg"]));
    assert_eq!(got["status"]["storedVersions"], json!(["v1"]));
    assert_eq!(got["spec"]["conversion"]["strategy"], "None");
    // `kubectl get crd` prints upstream's columns, and the short names work.
    let table = c.ok(&["get", "crds"]);
    assert!(
        table.starts_with("NAME")
            && table
                .lines()
                .next()
                .unwrap_or_default()
                .contains("CREATED AT"),
        "{table}"
    );
    assert!(table.contains(&crd), "{table}");

    // Discovery: api-resources lists the resource with its short name and kind.
    let res = c.ok(&["api-resources", "--api-group", &group]);
    let line = res
        .lines()
        .find(|l| l.starts_with("widgets"))
        .unwrap_or_else(|| panic!("{res}"));
    for want in ["wdg", &format!("{group}/v1"), "true", "Widget"] {
        assert!(
            line.contains(want),
            "api-resources line lacks {want}: {line}"
        );
    }

    // Create, with defaulting and pruning of unknown fields.
    let cr = format!(
        "apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: w1\n  labels: {{tier: gold}}\nspec:\n  color: red\n  unknown: dropped\n  extra: {{kept: true}}\n"
    );
    // kubectl validates strictly by default: the server names the unknown field.
    let p = c.file("w1.yaml", &cr);
    let err = c.fails(&["apply", "-f", &p]);
    assert!(err.contains("unknown field \"spec.unknown\""), "{err}");
    let out = c.apply("w1.yaml", &cr, &["--validate=false"]);
    assert!(
        out.contains("widget.") && out.contains("/w1 created"),
        "{out}"
    );
    let w1 = c.json(&["get", "widget", "w1", "-o", "json"]);
    assert_eq!(w1["spec"]["replicas"], 1, "defaulted: {w1}");
    assert!(w1["spec"].get("unknown").is_none(), "pruned: {w1}");
    assert_eq!(w1["spec"]["extra"]["kept"], true);
    assert_eq!(w1["metadata"]["generation"], 1);
    // Re-applying a manifest without unknown fields is a no-op (client-side apply
    // computes a merge patch for custom resources).
    let clean = cr.replace("  unknown: dropped\n", "");
    c.apply("w1.yaml", &clean, &[]);
    let out = c.apply("w1.yaml", &clean, &[]);
    assert!(out.contains("unchanged"), "{out}");

    // An invalid object: 422 with the field path.
    let bad = format!(
        "apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: bad\nspec:\n  color: purple\n"
    );
    let p = c.file("bad.yaml", &bad);
    let err = c.fails(&["apply", "-f", &p]);
    assert!(
        err.contains("spec.color") && err.contains("Unsupported value"),
        "{err}"
    );

    // A CEL rule of the schema: 422 naming the field with the rule's message.
    let big = format!(
        "apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: big\nspec:\n  color: red\n  replicas: 20\n"
    );
    let p = c.file("big.yaml", &big);
    let err = c.fails(&["apply", "-f", &p]);
    assert!(
        err.contains("spec: Invalid value") && err.contains("a widget runs at most 10 replicas"),
        "{err}"
    );

    // A second widget through server-side apply.
    let w2 = format!("apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: w2\nspec:\n  color: blue\n  replicas: 2\n");
    let out = c.apply("w2.yaml", &w2, &["--server-side"]);
    assert!(out.contains("serverside-applied"), "{out}");
    let got = c.json(&["get", "wdg", "w2", "-o", "json", "--show-managed-fields"]);
    assert_eq!(got["metadata"]["managedFields"][0]["manager"], "kubectl");
    let w2b = w2.replace("replicas: 2", "replicas: 4");
    c.apply("w2.yaml", &w2b, &["--server-side"]);
    assert_eq!(
        c.json(&["get", "wdg", "w2", "-o", "json"])["spec"]["replicas"],
        4
    );

    // Printer columns, by short name; `get all` includes the category.
    let table = c.ok(&["get", "wdg"]);
    let header = table.lines().next().unwrap_or_default();
    for col in ["NAME", "COLOR", "REPLICAS", "READY", "AGE"] {
        assert!(header.contains(col), "{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("w2"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("blue") && row.contains('4'), "{row}");
    let all = c.ok(&["get", "all"]);
    assert!(all.contains("widget.") && all.contains("/w1"), "{all}");

    // Status subresource: the main endpoint ignores status, /status takes only status.
    c.ok(&[
        "patch",
        "widget",
        "w1",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"replicas":9},"spec":{"color":"green"}}"#,
    ]);
    let w1 = c.json(&["get", "widget", "w1", "-o", "json"]);
    assert_eq!(w1["spec"]["color"], "green");
    assert!(w1["status"]["replicas"].is_null(), "{w1}");
    assert_eq!(w1["metadata"]["generation"], 2);
    c.ok(&[
        "patch", "widget", "w1", "--subresource", "status", "--type", "merge", "-p",
        r#"{"status":{"replicas":1,"selector":"app=w1","conditions":[{"type":"Ready","status":"True"}]},"spec":{"color":"red"}}"#,
    ]);
    let w1 = c.json(&["get", "widget", "w1", "-o", "json"]);
    assert_eq!(w1["spec"]["color"], "green", "status writes ignore spec");
    assert_eq!(w1["status"]["replicas"], 1);
    assert_eq!(
        w1["metadata"]["generation"], 2,
        "status writes keep the generation"
    );
    let row = c.ok(&["get", "widget", "w1", "--no-headers"]);
    assert!(row.contains("True"), "Ready column: {row}");

    // Scale subresource through `kubectl scale`.
    let out = c.ok(&["scale", "widget", "w1", "--replicas", "3"]);
    assert!(out.contains("scaled"), "{out}");
    assert_eq!(
        c.json(&["get", "widget", "w1", "-o", "json"])["spec"]["replicas"],
        3
    );
    let scale = c.json(&[
        "get",
        "--raw",
        &format!("/apis/{group}/v1/namespaces/default/widgets/w1/scale"),
    ]);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=w1");

    // Selectors: labels, metadata.name, the CRD's selectable field; others refused.
    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["get", "widgets", "-o", "name"];
        a.extend_from_slice(args);
        c.ok(&a)
            .lines()
            .map(|l| l.rsplit('/').next().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(names(&["-l", "tier=gold"]), ["w1"]);
    assert_eq!(names(&["--field-selector", "metadata.name=w2"]), ["w2"]);
    assert_eq!(names(&["--field-selector", "spec.color=green"]), ["w1"]);
    let err = c.fails(&["get", "widgets", "--field-selector", "spec.replicas=3"]);
    assert!(
        err.contains("field label not supported: spec.replicas"),
        "{err}"
    );

    // Strategic merge patches are not for custom resources (415, as upstream).
    let err = c.fails(&[
        "patch",
        "widget",
        "w1",
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"color":"red"}}"#,
    ]);
    assert!(
        err.contains("unknown format")
            || err.contains("415")
            || err.contains("UnsupportedMediaType"),
        "{err}"
    );

    // kubectl explain reads the schema from OpenAPI v3.
    let out = c.ok(&["explain", "widgets.spec"]);
    assert!(
        out.contains("What the widget should be") && out.contains("color"),
        "{out}"
    );
    let out = c.ok(&["explain", "widget.spec.color"]);
    assert!(out.contains("The widget's color"), "{out}");

    // Deleting the CRD deletes its custom resources, then the CRD.
    c.ok(&[
        "create",
        "namespace",
        &format!("ns-{}", group.split('.').next().unwrap_or("x")),
    ]);
    let ns = format!("ns-{}", group.split('.').next().unwrap_or("x"));
    c.apply("w3.yaml", &format!("apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: w3\n  namespace: {ns}\nspec:\n  color: red\n"), &[]);
    // deletecollection with a label selector.
    c.ok(&["label", "widget", "w2", "doomed=yes"]);
    c.ok(&[
        "delete",
        "--raw",
        &format!("/apis/{group}/v1/namespaces/default/widgets?labelSelector=doomed%3Dyes"),
    ]);
    assert_eq!(names(&[]), ["w1"]);
    // A widget with a finalizer of its own holds the CRD in Terminating.
    c.apply("held.yaml", &format!("apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: held\n  finalizers: [kcore.test/hold]\nspec:\n  color: red\n"), &[]);
    c.ok(&["delete", "crd", &crd, "--wait=false"]);
    c.eventually("Terminating", || {
        let (ok, out, _) = c.kubectl(&["get", "crd", &crd, "-o", "json"]);
        ok && serde_json::from_str::<Value>(&out).is_ok_and(|v| {
            v["metadata"]["finalizers"] == json!(["customresourcecleanup.apiextensions.k8s.io"])
                && v["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|x| x["type"] == "Terminating" && x["status"] == "True")
        })
    });
    c.eventually("the other widgets deleted", || {
        let (ok, out, _) = c.kubectl(&["get", "widgets", "-A", "-o", "name"]);
        ok && out.trim().lines().count() == 1 && out.contains("held")
    });
    let err = c.fails(&["create", "-f", &c.file("late.yaml", &format!("apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: late\nspec:\n  color: red\n"))]);
    assert!(
        err.contains("create not allowed while custom resource definition is terminating"),
        "{err}"
    );
    c.ok(&[
        "patch",
        "widget",
        "held",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    c.eventually("the CRD gone", || !c.kubectl(&["get", "crd", &crd]).0);
    let (ok, out, err) = c.kubectl(&["get", "--raw", &format!("/apis/{group}/v1/widgets")]);
    assert!(
        !ok && err.contains("NotFound")
            || err.contains("not found")
            || err.contains("the server could not find"),
        "{ok} {out} {err}"
    );
    // The objects are gone from storage: a new CRD of the same name starts empty.
    c.apply("crd2.yaml", &widget_crd(&group), &[]);
    wait_established(&c, &crd);
    c.eventually("an empty widget list", || {
        let (ok, out, _) = c.kubectl(&["get", "widgets", "-A", "-o", "name"]);
        ok && out.trim().is_empty()
    });
    c.ok(&["delete", "crd", &crd]);
}

#[test]
fn multiple_versions_and_crd_updates_take_effect() {
    let c = Ctx::new("versions");
    let group = unique_group("v");
    let crd = format!("gadgets.{group}");
    let schema = "      schema:\n        openAPIV3Schema:\n          type: object\n          properties:\n            spec:\n              type: object\n              properties:\n                size: {type: integer}\n";
    let doc = |versions: &str| {
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {crd}\nspec:\n  group: {group}\n  scope: Cluster\n  names: {{plural: gadgets, kind: Gadget}}\n  versions:\n{versions}"
        )
    };
    let v = |name: &str, storage: bool, extra: &str| {
        format!("    - name: {name}\n      served: true\n      storage: {storage}\n{extra}{schema}")
    };
    c.apply(
        "crd.yaml",
        &doc(&(v("v1", true, "") + &v("v2", false, ""))),
        &[],
    );
    wait_established(&c, &crd);
    c.apply(
        "g.yaml",
        &format!("apiVersion: {group}/v1\nkind: Gadget\nmetadata:\n  name: g1\nspec:\n  size: 3\n"),
        &[],
    );
    let v2 = c.json(&["get", "--raw", &format!("/apis/{group}/v2/gadgets/g1")]);
    assert_eq!(v2["apiVersion"], format!("{group}/v2"));
    assert_eq!(v2["spec"]["size"], 3);
    let list = c.json(&["get", "--raw", &format!("/apis/{group}/v1/gadgets")]);
    assert_eq!(list["kind"], "GadgetList");
    assert_eq!(list["items"][0]["apiVersion"], format!("{group}/v1"));
    // The preferred version is the highest: v2.
    let g = c.json(&["get", "--raw", &format!("/apis/{group}")]);
    assert_eq!(g["preferredVersion"]["version"], "v2");
    // Written through v2, stored in v1 (the storage version), read back in v1.
    let _ = c.json(&["get", "--raw", &format!("/apis/{group}/v1/gadgets/g1")]);
    c.ok(&[
        "patch",
        &format!("gadgets.v2.{group}"),
        "g1",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"size":5}}"#,
    ]);
    let v1 = c.json(&["get", "--raw", &format!("/apis/{group}/v1/gadgets/g1")]);
    assert_eq!(v1["spec"]["size"], 5);
    assert_eq!(v1["apiVersion"], format!("{group}/v1"));

    // Cluster scope: no namespace in the URL or object.
    assert!(v1["metadata"].get("namespace").is_none());

    // Update: a new served version and a printer column, without a restart.
    let col = "      additionalPrinterColumns:\n      - name: Size\n        type: integer\n        jsonPath: .spec.size\n";
    c.apply(
        "crd.yaml",
        &doc(&(v("v1", true, col) + &v("v2", false, "") + &v("v3", false, ""))),
        &[],
    );
    c.eventually("v3 served", || {
        c.run(
            "kubectl",
            &["get", "--raw", &format!("/apis/{group}/v3/gadgets/g1")],
            None,
        )
        .0
    });
    c.eventually("the Size column", || {
        let (ok, out, _) = c.kubectl(&["get", &format!("gadgets.v1.{group}")]);
        ok && out.contains("SIZE") && out.contains('5')
    });
    let got = c.json(&["get", "crd", &crd, "-o", "json"]);
    assert_eq!(got["status"]["storedVersions"], json!(["v1"]));
    c.ok(&["delete", "crd", &crd]);
}

#[test]
fn name_conflicts_and_refused_specs() {
    let c = Ctx::new("conflicts");
    let group = unique_group("n");
    let crd = |plural: &str, kind: &str, short: &str| {
        let singular = plural.trim_end_matches('s');
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {plural}.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{plural: {plural}, singular: {singular}, kind: {kind}, shortNames: [{short}]}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n"
        )
    };
    c.apply("a.yaml", &crd("apples", "Apple", "ap"), &[]);
    wait_established(&c, &format!("apples.{group}"));
    c.apply("b.yaml", &crd("pears", "Apple", "pe"), &[]);
    let name = format!("pears.{group}");
    c.eventually("NamesAccepted=False", || {
        let (ok, out, _) = c.kubectl(&["get", "crd", &name, "-o", "json"]);
        ok && serde_json::from_str::<Value>(&out).is_ok_and(|v| {
            v["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|x| {
                    x["type"] == "NamesAccepted"
                        && x["status"] == "False"
                        && x["reason"] == "KindConflict"
                        && x["message"] == "\"Apple\" is already in use"
                })
        })
    });
    let got = c.json(&["get", "crd", &name, "-o", "json"]);
    let established = got["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["type"] == "Established")
        .cloned()
        .unwrap_or_default();
    assert_eq!(established["status"], "False", "{got}");
    let (ok, _, _) = c.kubectl(&["get", "--raw", &format!("/apis/{group}/v1/pears")]);
    assert!(!ok, "a CRD whose names conflict is not served");

    // Conversion webhooks are refused at creation, naming the field.
    let p = c.file(
        "hook.yaml",
        &crd("plums", "Plum", "pl").replace(
            "  versions:",
            "  conversion:\n    strategy: Webhook\n  versions:",
        ),
    );
    let err = c.fails(&["create", "-f", &p]);
    assert!(
        err.contains("spec.conversion.strategy") && err.contains("Webhook"),
        "{err}"
    );
    // metadata.name must be <plural>.<group>.
    let p = c.file(
        "name.yaml",
        &crd("figs", "Fig", "fg").replace(
            &format!("name: figs.{group}"),
            &format!("name: other.{group}"),
        ),
    );
    let err = c.fails(&["create", "-f", &p]);
    assert!(
        err.contains("metadata.name") && err.contains("spec.names.plural"),
        "{err}"
    );
    c.ok(&["delete", "crd", &format!("apples.{group}"), &name]);
}

#[test]
fn aggregated_discovery_etag_changes_with_crds() {
    let c = Ctx::new("etag");
    let get = |etag: Option<&str>| -> (u16, String, Value) {
        let mut args = vec![
            "-s".to_owned(),
            "-D".to_owned(),
            "-".to_owned(),
            "-H".to_owned(),
            "Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
                .to_owned(),
        ];
        if let Some(e) = etag {
            args.push("-H".to_owned());
            args.push(format!("If-None-Match: {e}"));
        }
        args.push(format!("{}/apis", c.s.url));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = c.run("curl", &refs, None);
        assert!(ok, "curl: {err}");
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let etag = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("etag: ")
                    .or_else(|| l.strip_prefix("ETag: "))
            })
            .unwrap_or_default()
            .trim()
            .to_owned();
        (
            code,
            etag,
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    };
    // The other tests of this binary share the server and add and remove CRDs, so
    // discovery may change between two requests: an unchanged document must answer 304
    // within a few tries (a changed one answers 200 with a new ETag, and is tried again).
    let mut etag = String::new();
    let mut unchanged = Vec::new();
    for _ in 0..20 {
        let (code, e, _) = get(None);
        assert_eq!(code, 200);
        assert!(!e.is_empty());
        let (code, e2, _) = get(Some(&e));
        if code != 304 {
            assert_ne!(e2, e, "a 200 to If-None-Match carries a new ETag");
        }
        unchanged.push((code, e.clone(), e2));
        etag = e;
        if code == 304 {
            break;
        }
    }
    assert_eq!(
        unchanged.last().map(|u| u.0),
        Some(304),
        "unchanged discovery answers 304: {unchanged:?}"
    );
    let group = unique_group("e");
    // Its own short name and category: the shared server's `kubectl get all` in the other
    // tests must not see a CRD this test is about to delete.
    let crd = widget_crd(&group)
        .replace("shortNames: [wdg]", "shortNames: [wdge]")
        .replace("categories: [all]", "categories: [discovery-etag]");
    c.apply("crd.yaml", &crd, &[]);
    wait_established(&c, &format!("widgets.{group}"));
    let (code, etag2, doc) = get(Some(&etag));
    assert_eq!(code, 200, "a new CRD changes the ETag");
    assert_ne!(etag, etag2);
    let item = doc["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["metadata"]["name"] == group.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{group} not in aggregated discovery"));
    let r = &item["versions"][0]["resources"][0];
    assert_eq!(r["resource"], "widgets");
    assert_eq!(r["shortNames"], json!(["wdge"]));
    assert_eq!(r["categories"], json!(["discovery-etag"]));
    let subs: Vec<&str> = r["subresources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["subresource"].as_str())
        .collect();
    assert_eq!(subs, ["status", "scale"]);
    c.ok(&["delete", "crd", &format!("widgets.{group}")]);
    let _ = Path::new(&c.s.url);
}

/// A CRD for the Helm charts (`crontabs.<group>`): a schema, a status subresource and
/// printer columns; `versions` is the YAML of its versions' extra entries.
fn crontab_crd(group: &str, extra_versions: &str) -> String {
    let version = |name: &str, storage: bool| {
        format!(
            r#"  - name: {name}
    served: true
    storage: {storage}
    subresources:
      status: {{}}
    additionalPrinterColumns:
    - name: Spec
      type: string
      jsonPath: .spec.cronSpec
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              cronSpec: {{type: string}}
              replicas: {{type: integer}}
          status:
            type: object
            properties:
              active: {{type: integer}}
"#
        )
    };
    let mut versions = version("v1", true);
    for v in extra_versions.split_whitespace() {
        versions.push_str(&version(v, false));
    }
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: crontabs.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names:\n    plural: crontabs\n    singular: crontab\n    kind: CronTab\n    shortNames: [ct]\n  versions:\n{versions}"
    )
}

/// Writes a chart: `crds` (files of the `crds/` folder) and `templates`.
fn write_chart(dir: &Path, name: &str, crds: &[(&str, String)], templates: &[(&str, String)]) {
    std::fs::create_dir_all(dir.join("templates")).expect("chart dir");
    std::fs::write(
        dir.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: 0.1.0\n"),
    )
    .expect("Chart.yaml");
    std::fs::write(
        dir.join("values.yaml"),
        "schedule: \"*/5 * * * *\"\nreplicas: 1\n",
    )
    .expect("values");
    if !crds.is_empty() {
        std::fs::create_dir_all(dir.join("crds")).expect("crds dir");
    }
    for (f, text) in crds {
        std::fs::write(dir.join("crds").join(f), text).expect("crd file");
    }
    for (f, text) in templates {
        std::fs::write(dir.join("templates").join(f), text).expect("template");
    }
}

#[test]
fn helm_charts_with_crds() {
    let c = Ctx::new("helm");
    let helm = |args: &[&str]| -> (bool, String, String) {
        let mut all: Vec<&str> = args.to_vec();
        let kc = c.s.kubeconfig.to_str().expect("utf-8").to_owned();
        all.extend(["--kubeconfig", &kc]);
        c.run("helm", &all, None)
    };
    let helm_ok = |args: &[&str]| -> String {
        let (ok, out, err) = helm(args);
        assert!(ok, "helm {args:?} failed:\nstdout: {out}\nstderr: {err}");
        out
    };

    // Chart 1: the CRD in crds/, a CronTab from a template.
    let group = unique_group("h");
    let chart = c.dir.join("chart-crds");
    let cr = format!(
        "apiVersion: {group}/v1\nkind: CronTab\nmetadata:\n  name: {{{{ .Release.Name }}}}-tab\nspec:\n  cronSpec: {{{{ .Values.schedule | quote }}}}\n  replicas: {{{{ .Values.replicas }}}}\n"
    );
    write_chart(
        &chart,
        "crontab",
        &[("crontab.yaml", crontab_crd(&group, ""))],
        &[("crontab.yaml", cr)],
    );
    let chart_s = chart.to_str().expect("utf-8");
    helm_ok(&["install", "tabs", chart_s]);
    let out = c.ok(&["get", "crontabs"]);
    let header = out.lines().next().unwrap_or_default();
    assert!(
        header.contains("SPEC") && header.contains("REPLICAS"),
        "{out}"
    );
    assert!(
        out.contains("tabs-tab") && out.contains("*/5 * * * *"),
        "{out}"
    );
    helm_ok(&["upgrade", "tabs", chart_s, "--set", "replicas=3"]);
    let row = c.ok(&["get", "ct", "tabs-tab", "--no-headers"]);
    assert!(row.split_whitespace().any(|w| w == "3"), "{row}");
    let list = helm_ok(&["list", "-o", "json"]);
    assert!(
        list.contains("\"tabs\"") && list.contains("\"revision\":\"2\""),
        "{list}"
    );
    helm_ok(&["uninstall", "tabs"]);
    let (found, out, _) = c.kubectl(&["get", "ct", "tabs-tab"]);
    assert!(!found, "the release's CronTab is gone: {out}");
    // Helm never deletes CRDs from crds/.
    c.ok(&["get", "crd", &format!("crontabs.{group}")]);
    c.ok(&["delete", "crd", &format!("crontabs.{group}")]);

    // Chart 2: the CRD in templates/: an upgrade adds a served version, uninstall
    // removes the CRD.
    let group = unique_group("t");
    let chart = c.dir.join("chart-templates");
    write_chart(
        &chart,
        "crd-in-templates",
        &[],
        &[("crd.yaml", crontab_crd(&group, ""))],
    );
    let chart_s = chart.to_str().expect("utf-8");
    helm_ok(&["install", "defs", chart_s]);
    wait_established(&c, &format!("crontabs.{group}"));
    let (v2, _, _) = c.kubectl(&["get", "--raw", &format!("/apis/{group}/v2")]);
    assert!(!v2, "v2 is not served yet");
    write_chart(
        &chart,
        "crd-in-templates",
        &[],
        &[("crd.yaml", crontab_crd(&group, "v2"))],
    );
    helm_ok(&["upgrade", "defs", chart_s]);
    c.eventually("v2 served", || {
        c.kubectl(&["get", "--raw", &format!("/apis/{group}/v2")]).0
    });
    let tab = c.file(
        "tab.yaml",
        &format!("apiVersion: {group}/v2\nkind: CronTab\nmetadata:\n  name: via-v2\nspec:\n  cronSpec: x\n"),
    );
    c.ok(&["apply", "-f", &tab]);
    helm_ok(&["uninstall", "defs"]);
    c.eventually("the CRD to go with the release", || {
        !c.kubectl(&["get", "crd", &format!("crontabs.{group}")]).0
    });
}

/// A cluster-scoped CRD `gateways.<group>` whose spec has a list-map (`listeners`,
/// keyed by name), a set (`hosts`) and an atomic map (`selector`).
fn gateway_crd(group: &str) -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gateways.{group}
spec:
  group: {group}
  scope: Cluster
  names: {{plural: gateways, singular: gateway, kind: Gateway}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              listeners:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {{type: string}}
                    port: {{type: integer}}
              hosts:
                type: array
                x-kubernetes-list-type: set
                items: {{type: string}}
              selector:
                type: object
                x-kubernetes-map-type: atomic
                additionalProperties: {{type: string}}
"#
    )
}

#[test]
fn server_side_apply_merges_custom_resource_lists_by_schema() {
    let c = Ctx::new("ssa-lists");
    let group = unique_group("g");
    let crd = format!("gateways.{group}");
    c.apply("crd.yaml", &gateway_crd(&group), &[]);
    wait_established(&c, &crd);
    let gw = |listeners: &str, hosts: &str| {
        format!(
            "apiVersion: {group}/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  listeners: {listeners}\n  hosts: {hosts}\n"
        )
    };
    let resource = format!("gateways.{group}/gw");
    let as_manager = |m: &str, file: &str, text: &str, extra: &[&str]| {
        let p = c.file(file, text);
        let mut args = vec!["apply", "--server-side", "--field-manager", m, "-f", &p];
        args.extend_from_slice(extra);
        c.kubectl(&args)
    };
    let (ok, _, err) = as_manager(
        "alice",
        "a.yaml",
        &gw("[{name: a, port: 80}]", "[x.example]"),
        &[],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = as_manager(
        "bob",
        "b.yaml",
        &gw("[{name: b, port: 443}]", "[y.example]"),
        &[],
    );
    assert!(ok, "{err}");
    let got = c.json(&["get", &resource, "-o", "json", "--show-managed-fields"]);
    assert_eq!(
        got["spec"]["listeners"],
        json!([{"name": "a", "port": 80}, {"name": "b", "port": 443}])
    );
    assert_eq!(got["spec"]["hosts"], json!(["x.example", "y.example"]));
    let managed = got["metadata"]["managedFields"]
        .as_array()
        .expect("managed");
    let bob = managed.iter().find(|m| m["manager"] == "bob").expect("bob");
    assert_eq!(
        bob["fieldsV1"]["f:spec"]["f:listeners"],
        json!({r#"k:{"name":"b"}"#: {".": {}, "f:name": {}, "f:port": {}}})
    );
    assert_eq!(
        bob["fieldsV1"]["f:spec"]["f:hosts"],
        json!({r#"v:"y.example""#: {}})
    );

    // Bob changing alice's listener's port conflicts on that field only.
    let both = gw(
        "[{name: b, port: 443}, {name: a, port: 8080}]",
        "[y.example]",
    );
    let (ok, _, err) = as_manager("bob", "b2.yaml", &both, &[]);
    assert!(!ok, "the conflict must fail the apply");
    assert!(
        err.contains(
            r#"Apply failed with 1 conflict: conflict with "alice": .spec.listeners[name="a"].port"#
        ),
        "{err}"
    );
    // --force-conflicts takes it over.
    let (ok, _, err) = as_manager("bob", "b2.yaml", &both, &["--force-conflicts"]);
    assert!(ok, "{err}");
    let got = c.json(&["get", &resource, "-o", "json"]);
    assert_eq!(
        got["spec"]["listeners"],
        json!([{"name": "a", "port": 8080}, {"name": "b", "port": 443}])
    );

    // Alice drops her listener: it stays, since bob now owns a field of it; bob drops
    // his own: it goes.
    let (ok, _, err) = as_manager("alice", "a2.yaml", &gw("[]", "[x.example]"), &[]);
    assert!(ok, "{err}");
    let (ok, _, err) = as_manager(
        "bob",
        "b3.yaml",
        &gw("[{name: a, port: 8080}]", "[y.example]"),
        &[],
    );
    assert!(ok, "{err}");
    let got = c.json(&["get", &resource, "-o", "json"]);
    assert_eq!(
        got["spec"]["listeners"],
        json!([{"name": "a", "port": 8080}])
    );
    c.ok(&["delete", "crd", &crd]);
}
