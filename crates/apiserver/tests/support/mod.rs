//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod webhook;

use kcore_apiserver::{ApiServer, RunningServer};
use kube::{Client, Config};

/// A kube-rs client of a fresh plain-HTTP server on loopback with its own temporary data
/// directory (named after `prefix`), defaulting to namespace `default`. Keep the server
/// and the directory alive as long as the client is used.
pub async fn kube_client(prefix: &str) -> (Client, RunningServer, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-{prefix}-{}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let server = ApiServer::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0".parse().expect("addr"))
        .insecure_http(true)
        .build()
        .await
        .expect("server");
    let url = server.url().parse().expect("url");
    let running = server.spawn();
    let mut cfg = Config::new(url);
    cfg.default_namespace = "default".into();
    (Client::try_from(cfg).expect("client"), running, dir)
}
