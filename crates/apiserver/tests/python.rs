//! The official Kubernetes Python client against the server (`tests/python/*.py`).
//!
//! Uses the interpreter in `KCORE_PYTHON` if set; otherwise it makes a virtualenv under the
//! cargo target directory and installs the `kubernetes` package from PyPI into it once.

use std::path::{Path, PathBuf};
use std::process::Command;

use kcore_apiserver::ApiServer;

fn python_with_client() -> PathBuf {
    kcore_tests::python::python_with_client(env!("CARGO_TARGET_TMPDIR"))
}

/// Runs `tests/python/<script>` against a fresh server; it must print `<marker>`.
async fn run_script(script: &str, marker: &str) {
    let py = tokio::task::spawn_blocking(python_with_client)
        .await
        .expect("join");
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-python-{}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let server = ApiServer::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0".parse().expect("addr"))
        .insecure_http(true)
        .build()
        .await
        .expect("server");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let running = server.spawn();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .arg(script)
            .arg(kubeconfig)
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(marker), "{stdout}");
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_crud_watch_patch() {
    run_script("client_roundtrip.py", "python client: ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_custom_resources() {
    run_script("crd_client.py", "python crd client: ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_persistent_volume_claims() {
    run_script("storage_client.py", "python storage: ok").await;
}
