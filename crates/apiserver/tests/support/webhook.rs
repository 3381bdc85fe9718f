//! An admission webhook server for tests and the webhook bench: HTTPS on 127.0.0.1 with
//! a certificate from its own CA (the PEM goes into `caBundle`), HTTP/1.1 keep-alive.
//!
//! - `POST /mutate`: adds the label `webhook.kcore.dev/mutated: "true"` (JSONPatch) and
//!   answers the warning `mutated by the test webhook`;
//! - `POST /validate`: denies (403 Forbidden, `the object is forbidden`) an object
//!   labelled `forbidden: "true"`, and the DELETE of one labelled `protected: "true"`
//!   (`protected objects cannot be deleted`, no code: upstream answers 400);
//! - `POST /copy`: copies the label `webhook.kcore.dev/mutated` to `copied` when the
//!   object has it (for reinvocation);
//! - `POST /slow`: allows after 3 seconds (for `timeoutSeconds`);
//! - `POST /allow`: allows everything.
//!
//! Every review received is kept in `reviews`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};

/// A running webhook server; stops when dropped.
pub struct WebhookServer {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub reviews: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebhookServer {
    /// `caBundle` as the API wants it (base64 of the PEM).
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// The reviews received so far for `path`'s kind of webhook, by operation.
    pub fn count(&self, op: &str) -> usize {
        self.reviews
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r["request"]["operation"] == op)
            .count()
    }
}

type Reviews = Arc<Mutex<Vec<Value>>>;

fn answer(review: &Value, response: Value) -> axum::response::Response {
    let mut r = response;
    r["uid"] = review["request"]["uid"].clone();
    let body =
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": r});
    axum::response::Response::builder()
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap()
}

fn parse(reviews: &Reviews, body: &Bytes) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    reviews.lock().unwrap().push(v.clone());
    v
}

async fn mutate(State(reviews): State<Reviews>, body: Bytes) -> axum::response::Response {
    let review = parse(&reviews, &body);
    let obj = &review["request"]["object"];
    let patch = if obj["metadata"]["labels"].is_object() {
        json!([{"op": "add", "path": "/metadata/labels/webhook.kcore.dev~1mutated", "value": "true"}])
    } else {
        json!([{"op": "add", "path": "/metadata/labels", "value": {"webhook.kcore.dev/mutated": "true"}}])
    };
    let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
    answer(
        &review,
        json!({"allowed": true, "patchType": "JSONPatch", "patch": patch,
               "warnings": ["mutated by the test webhook"]}),
    )
}

async fn validate(State(reviews): State<Reviews>, body: Bytes) -> axum::response::Response {
    let review = parse(&reviews, &body);
    let req = &review["request"];
    let label = |o: &Value, k: &str| o["metadata"]["labels"][k] == "true";
    let response = if label(&req["object"], "forbidden") {
        json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": "the object is forbidden"}})
    } else if req["operation"] == "DELETE" && label(&req["oldObject"], "protected") {
        json!({"allowed": false, "status": {"message": "protected objects cannot be deleted"}})
    } else {
        json!({"allowed": true})
    };
    answer(&review, response)
}

async fn copy(State(reviews): State<Reviews>, body: Bytes) -> axum::response::Response {
    let review = parse(&reviews, &body);
    let labels = &review["request"]["object"]["metadata"]["labels"];
    let mut response = json!({"allowed": true});
    if labels["webhook.kcore.dev/mutated"].is_string() && labels["copied"].is_null() {
        let patch = json!([{"op": "add", "path": "/metadata/labels/copied", "value": "true"}]);
        response["patchType"] = json!("JSONPatch");
        response["patch"] =
            json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
    }
    answer(&review, response)
}

async fn slow(State(reviews): State<Reviews>, body: Bytes) -> axum::response::Response {
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    allow(State(reviews), body).await
}

async fn allow(State(reviews): State<Reviews>, body: Bytes) -> axum::response::Response {
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let _ = &reviews;
    answer(&review, json!({"allowed": true}))
}

/// Starts a server whose certificate is valid for 127.0.0.1 and `names`.
pub async fn start(names: &[&str]) -> WebhookServer {
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-webhook-{}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let ca = kcore_tls::Ca::load_or_create(&dir.path().join("pki")).expect("CA");
    let mut sans = vec!["127.0.0.1".to_owned()];
    sans.extend(names.iter().map(|s| s.to_string()));
    let cert = ca
        .issue("webhook", &sans, kcore_tls::Usage::Server)
        .expect("serving certificate");
    let cfg = kcore_tls::server_config(&cert, None).expect("tls config");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let listener = kcore_tls::TlsListener::new(tcp, cfg).expect("tls listener");
    let reviews: Reviews = Arc::default();
    let app = Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .route("/copy", post(copy))
        .route("/slow", post(slow))
        .route("/allow", post(allow))
        .with_state(Arc::clone(&reviews));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    WebhookServer {
        addr,
        ca_pem: ca.cert_pem().to_owned(),
        reviews,
        task,
        _dir: dir,
    }
}

/// A webhook entry calling `client_config` for `resources` on `operations`.
pub fn hook(name: &str, client_config: Value, operations: &[&str], resources: &[&str]) -> Value {
    json!({
        "name": name,
        "clientConfig": client_config,
        "rules": [{"operations": operations, "apiGroups": [""], "apiVersions": ["v1"], "resources": resources}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    })
}
