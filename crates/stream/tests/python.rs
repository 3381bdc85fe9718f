//! The official Kubernetes Python client's `stream(connect_get_namespaced_pod_exec, ...)`
//! and `portforward(...)` through the API server to the loopback node
//! (`tests/python/stream_client.py`), on the protocols it asks for.
//!
//! Uses the interpreter in `KCORE_PYTHON` if set; otherwise a virtualenv under the cargo
//! target directory with the `kubernetes` package from PyPI (the API server's Python
//! tests make and share the same one).

mod support;

use std::path::{Path, PathBuf};

use kcore_stream::Transport;

fn python_with_client() -> PathBuf {
    kcore_tests::python::python_with_client(env!("CARGO_TARGET_TMPDIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_client_exec_and_port_forward() {
    let py = tokio::task::spawn_blocking(python_with_client)
        .await
        .unwrap();
    let c = support::start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/stream_client.py");
    let kubeconfig = c.kubeconfig.clone();
    let out = tokio::process::Command::new(py)
        .arg(script)
        .arg(kubeconfig)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("the script finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("STREAM-OK"), "{stdout}");
    assert_eq!(
        c.last("exec"),
        (Transport::WebSocket, "v5.channel.k8s.io".to_owned())
    );
    assert_eq!(
        c.last("portforward"),
        (Transport::WebSocket, "v4.channel.k8s.io".to_owned())
    );
    c.stop().await;
}
