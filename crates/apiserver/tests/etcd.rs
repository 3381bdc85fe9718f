//! The etcd backend: the shared conformance suite and two API servers on one etcd.
//! Needs the `etcd` feature and Debian's `etcd-server` (the test starts its own etcd on
//! loopback ports in a temporary directory).
#![cfg(feature = "etcd")]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kcore_apiserver::{conformance, Api, EtcdStorage, ListOptions, Storage};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// An etcd server for one test, killed and removed on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn start_etcd() -> Etcd {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-etcd-{}-{n}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--name", "kcore-test", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("kcore-test={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd (Debian package etcd-server)");
    let etcd = Etcd {
        child,
        endpoint,
        _dir: dir,
    };
    for _ in 0..200 {
        if let Ok(s) = EtcdStorage::connect(&[etcd.endpoint.as_str()], "/probe").await {
            if s.revision().await.is_ok() {
                return etcd;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("etcd did not become ready at {}", etcd.endpoint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_passes_conformance() {
    let etcd = start_etcd().await;
    let ep = etcd.endpoint.clone();
    let mut n = 0;
    conformance::run(|| {
        n += 1;
        let ep = ep.clone();
        let root = format!("/case{n}");
        async move {
            EtcdStorage::connect(&[ep.as_str()], &root)
                .await
                .expect("connect")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apiservers_share_one_etcd() {
    let etcd = start_etcd().await;
    let ep = etcd.endpoint.as_str();
    let a = Api::new(Arc::new(
        EtcdStorage::connect(&[ep], "/kcore").await.expect("a"),
    ));
    let b = Api::new(Arc::new(
        EtcdStorage::connect(&[ep], "/kcore").await.expect("b"),
    ));
    a.bootstrap().await.expect("bootstrap a");
    b.bootstrap().await.expect("bootstrap b is idempotent");
    let mut watch = b
        .watch::<ConfigMap>(Some("default"), &ListOptions::default())
        .await
        .expect("watch on b");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": {"x": "1"}}))
    .expect("cm");
    let created = a.create(Some("default"), &cm).await.expect("create on a");
    let seen: ConfigMap = b.get(Some("default"), "shared").await.expect("read on b");
    assert_eq!(seen.metadata.uid, created.metadata.uid);
    let ev = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("event in time")
        .expect("event");
    assert_eq!(ev.kind, "ADDED");
    assert_eq!(ev.object["metadata"]["name"], "shared");
    // Optimistic concurrency holds across servers.
    let mut stale = seen.clone();
    b.replace(Some("default"), &seen)
        .await
        .expect("no-op replace on b");
    let mut changed = seen.clone();
    changed.data = Some([("x".to_owned(), "2".to_owned())].into());
    b.replace(Some("default"), &changed)
        .await
        .expect("replace on b");
    stale.data = Some([("x".to_owned(), "3".to_owned())].into());
    let err = a.replace(Some("default"), &stale).await.unwrap_err();
    assert_eq!(err.code, 409);
}
