//! `kcore-demo`: the walkthrough's application, built as one static binary so that it
//! fits in a one-file image.
//!
//! - `kcore-demo db [ADDR] [FILE]` keeps users in FILE: `POST /users` appends the JSON
//!   object in the body, `GET /users` returns them all as a JSON array.
//! - `kcore-demo web [ADDR]` is the front end: `/users` is passed to the database at
//!   `$DB_URL` (found by its Service's DNS name), `/` greets with the text of
//!   `$GREETING_FILE` (a ConfigMap volume) and the version `$APP_VERSION`, `/secret`
//!   says whether `$SECRET_FILE` (a Secret volume) holds the expected token.
//!
//! - `kcore-demo webhook [ADDR] [CERT] [KEY]` is an admission webhook over HTTPS (the
//!   serving certificate and key in PEM, by default from a Secret volume at
//!   `/etc/webhook/tls.{crt,key}`) that answers AdmissionReview v1: `POST /mutate` adds
//!   the label `webhook.kcore.dev/mutated-by: <host name>` (a JSONPatch), `POST /validate`
//!   denies (403) an object labelled `forbidden: "true"`.
//!
//! All log one line per request to standard output and answer `GET /healthz`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain",
            body: body.into(),
        }
    }

    fn json(status: u16, body: &Value) -> Self {
        Response {
            status,
            content_type: "application/json",
            body: body.to_string(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        502 => "Bad Gateway",
        _ => "Internal Server Error",
    }
}

fn read_request(stream: impl Read) -> std::io::Result<Request> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or("/").to_owned();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length.min(1 << 20)];
    r.read_exact(&mut body)?;
    Ok(Request { method, path, body })
}

fn write_response(mut stream: impl Write, resp: &Response) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len(),
        resp.body
    )?;
    stream.flush()
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// Reads one request from `stream`, answers it and logs it.
fn respond(mut stream: impl Read + Write, name: &str, handler: &Handler) {
    let Ok(req) = read_request(&mut stream) else {
        return;
    };
    let resp = handler(&req);
    if req.path != "/healthz" {
        println!("{name}: {} {} -> {}", req.method, req.path, resp.status);
    }
    let _ = write_response(&mut stream, &resp);
}

/// Serves `handler` on `addr`, one thread per connection, over TLS when `tls` is given.
fn serve(
    addr: &str,
    name: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("{name}: cannot listen on {addr}: {e}");
        std::process::exit(1)
    });
    println!("{name}: listening on {addr}");
    let handler: Arc<Handler> = Arc::new(handler);
    for stream in listener.incoming().flatten() {
        let handler = handler.clone();
        let name = name.to_owned();
        let tls = tls.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            match tls {
                None => respond(&stream, &name, &*handler),
                Some(config) => {
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    respond(&mut tls, &name, &*handler);
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            }
        });
    }
}

/// One HTTP/1.1 request to `url` (`http://host:port/path`); returns status and body.
fn call(url: &str, method: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other(format!("not an http URL: {url}")))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:80")
    };
    let addr = hostport
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{hostport} did not resolve")))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    Ok((status, body.to_owned()))
}

fn db(addr: &str, file: &str) {
    let lock = Arc::new(Mutex::new(()));
    let file = file.to_owned();
    serve(addr, "db", None, move |req| {
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/healthz") => Response::new(200, "ok\n"),
            ("GET", "/users") => {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                let users: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
                Response::new(200, format!("[{}]\n", users.join(",")))
            }
            ("POST", "/users") => {
                let body = String::from_utf8_lossy(&req.body).trim().to_owned();
                if !(body.starts_with('{') && body.ends_with('}')) || body.contains('\n') {
                    return Response::new(400, "a user is one JSON object\n");
                }
                let stored = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&file)
                    .and_then(|mut f| writeln!(f, "{body}").and_then(|()| f.sync_data()));
                match stored {
                    Ok(()) => Response::new(201, format!("{body}\n")),
                    Err(e) => Response::new(500, format!("storing: {e}\n")),
                }
            }
            (_, "/users") => Response::new(405, "GET or POST\n"),
            _ => Response::new(404, "not found\n"),
        }
    });
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn web(addr: &str) {
    let db_url = env("DB_URL", "http://db:8080");
    let version = env("APP_VERSION", "dev");
    let greeting_file = env("GREETING_FILE", "/etc/web/greeting");
    let secret_file = env("SECRET_FILE", "/etc/web-secret/token");
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    serve(addr, "web", None, move |req| match req.path.as_str() {
        "/healthz" => Response::new(200, "ok\n"),
        "/" => {
            let greeting = std::fs::read_to_string(&greeting_file)
                .map(|g| g.trim().to_owned())
                .unwrap_or_else(|_| "hello".into());
            Response::new(200, format!("{greeting} from web {version} on {host}\n"))
        }
        "/secret" => {
            let token = std::fs::read_to_string(&secret_file).unwrap_or_default();
            let expected = env("EXPECTED_TOKEN", "");
            let ok = !token.is_empty() && token.trim() == expected;
            Response::new(
                if ok { 200 } else { 500 },
                format!("secret matches: {ok}\n"),
            )
        }
        "/users" => match call(&format!("{db_url}/users"), &req.method, &req.body) {
            Ok((status, body)) => Response::new(status, body),
            Err(e) => Response::new(502, format!("database at {db_url}: {e}\n")),
        },
        _ => Response::new(404, "not found\n"),
    });
}

/// The label the mutating webhook adds; its value is the webhook's host (pod) name.
const MUTATED_BY: &str = "webhook.kcore.dev/mutated-by";

/// The TLS configuration of the webhook from PEM files; exits when they cannot be used.
fn tls_config(cert: &str, key: &str) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        eprintln!("webhook: {what}: {e}");
        std::process::exit(1)
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .unwrap_or_else(|e| fail(&format!("reading {cert}"), &e));
    let key =
        PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| fail(&format!("reading {key}"), &e));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .unwrap_or_else(|e| fail("TLS configuration", &e));
    Arc::new(config)
}

/// The mutating webhook's answer: a JSONPatch adding [`MUTATED_BY`].
fn mutate(request: &Value, host: &str) -> Value {
    let patch = if request["object"]["metadata"]["labels"].is_object() {
        let path = format!(
            "/metadata/labels/{}",
            MUTATED_BY.replace('~', "~0").replace('/', "~1")
        );
        json!([{"op": "add", "path": path, "value": host}])
    } else {
        json!([{"op": "add", "path": "/metadata/labels", "value": {MUTATED_BY: host}}])
    };
    let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
    json!({"allowed": true, "patchType": "JSONPatch", "patch": patch})
}

/// The validating webhook's answer: objects labelled `forbidden: "true"` are denied.
fn validate(request: &Value) -> Value {
    if request["object"]["metadata"]["labels"]["forbidden"] == "true" {
        println!(
            "webhook: denied {} {}",
            request["kind"]["kind"].as_str().unwrap_or("object"),
            request["name"].as_str().unwrap_or("")
        );
        json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden",
               "message": "objects labelled forbidden=true are not allowed"}})
    } else {
        json!({"allowed": true})
    }
}

fn webhook(addr: &str, cert: &str, key: &str) {
    let config = tls_config(cert, key);
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "webhook".into());
    serve(addr, "webhook", Some(config), move |req| {
        // the API server adds `?timeout=<n>s`
        let path = req.path.split('?').next().unwrap_or_default();
        match (req.method.as_str(), path) {
            ("GET", "/healthz") => return Response::new(200, "ok\n"),
            ("POST", "/mutate" | "/validate") => {}
            _ => return Response::new(404, "not found\n"),
        }
        let review: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => return Response::new(400, format!("not an AdmissionReview: {e}\n")),
        };
        let request = &review["request"];
        let mut response = if path == "/mutate" {
            mutate(request, &host)
        } else {
            validate(request)
        };
        response["uid"] = request["uid"].clone();
        Response::json(
            200,
            &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "response": response}),
        )
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    match args.get(1).map(String::as_str) {
        Some("db") => db(&arg(2, "0.0.0.0:8080"), &arg(3, "/data/users.jsonl")),
        Some("web") => web(&arg(2, "0.0.0.0:8080")),
        Some("webhook") => webhook(
            &arg(2, "0.0.0.0:8443"),
            &arg(3, "/etc/webhook/tls.crt"),
            &arg(4, "/etc/webhook/tls.key"),
        ),
        _ => {
            eprintln!(
                "usage: kcore-demo db [ADDR] [FILE] | web [ADDR] | webhook [ADDR] [CERT] [KEY]"
            );
            std::process::exit(2);
        }
    }
}
