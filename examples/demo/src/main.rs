//! `kcore-demo`: the walkthrough's application, built as one static binary with only
//! the standard library so that it fits in a one-file image.
//!
//! - `kcore-demo db [ADDR] [FILE]` keeps users in FILE: `POST /users` appends the JSON
//!   object in the body, `GET /users` returns them all as a JSON array.
//! - `kcore-demo web [ADDR]` is the front end: `/users` is passed to the database at
//!   `$DB_URL` (found by its Service's DNS name), `/` greets with the text of
//!   `$GREETING_FILE` (a ConfigMap volume) and the version `$APP_VERSION`, `/secret`
//!   says whether `$SECRET_FILE` (a Secret volume) holds the expected token.
//!
//! Both log one line per request to standard output and answer `GET /healthz`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    body: String,
}

impl Response {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            body: body.into(),
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

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
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

fn write_response(mut stream: &TcpStream, resp: &Response) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        resp.status,
        reason(resp.status),
        resp.body.len(),
        resp.body
    )?;
    stream.flush()
}

fn serve(addr: &str, name: &str, handler: impl Fn(&Request) -> Response + Send + Sync + 'static) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("{name}: cannot listen on {addr}: {e}");
        std::process::exit(1)
    });
    println!("{name}: listening on {addr}");
    let handler = Arc::new(handler);
    for stream in listener.incoming().flatten() {
        let handler = handler.clone();
        let name = name.to_owned();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(req) = read_request(&stream) else {
                return;
            };
            let resp = handler(&req);
            if req.path != "/healthz" {
                println!("{name}: {} {} -> {}", req.method, req.path, resp.status);
            }
            let _ = write_response(&stream, &resp);
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
    serve(addr, "db", move |req| {
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
    serve(addr, "web", move |req| match req.path.as_str() {
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    match args.get(1).map(String::as_str) {
        Some("db") => db(&arg(2, "0.0.0.0:8080"), &arg(3, "/data/users.jsonl")),
        Some("web") => web(&arg(2, "0.0.0.0:8080")),
        _ => {
            eprintln!("usage: kcore-demo db [ADDR] [FILE] | web [ADDR]");
            std::process::exit(2);
        }
    }
}
