//! A list of 10,000 pods as Kubernetes protobuf against JSON: bytes, encode time, and the
//! whole `GET /api/v1/pods` over loopback HTTP (store read, encode, transfer).
//!
//! `cargo bench -p kcore-benches --bench protobuf`; `KCORE_BENCH_PODS` changes the count.

use std::sync::Arc;
use std::time::Instant;

use std::hint::black_box;

use criterion::Criterion;
use kcore_apiserver::{protobuf, Api, ApiServer, WriteOptions};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A pod as a controller and a node agent leave it: owner, labels, resources, probes,
/// status with conditions and a container state.
fn pod(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("web-{i:05}"), "namespace": "default",
            "labels": {"app": "web", "pod-template-hash": "5d8f7c9b4"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f7c9b4",
                "uid": "0b6f1f7e-3f0e-4c5e-9a51-0e0c1f7a2b11", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "nodeName": format!("node-{}", i % 50), "schedulerName": "default-scheduler",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]},
        "status": {"phase": "Running", "hostIP": format!("10.0.0.{}", i % 50),
            "podIP": format!("10.244.{}.{}", (i / 250) % 256, i % 250), "qosClass": "Burstable",
            "startTime": "2024-05-06T07:08:09Z",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-05-06T07:08:12Z"},
                           {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2024-05-06T07:08:09Z"}],
            "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "started": true,
                "image": "nginx:1.27", "imageID": "docker.io/library/nginx@sha256:0123456789abcdef",
                "containerID": format!("kcore://{i:064x}"),
                "state": {"running": {"startedAt": "2024-05-06T07:08:11Z"}}}]}})
}

/// `GET path` with `accept` on a fresh connection; the response size in bytes.
async fn get(addr: std::net::SocketAddr, path: &str, accept: &str) -> usize {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: kcore\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::with_capacity(8 << 20);
    s.read_to_end(&mut buf).await.expect("read");
    assert!(buf.starts_with(b"HTTP/1.1 200"), "GET {path} failed");
    buf.len()
}

fn main() {
    let n = std::env::var("KCORE_BENCH_PODS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000usize);
    let items: Vec<Value> = (0..n).map(pod).collect();
    let list = json!({"apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": "123456"}, "items": items});

    let json_bytes = serde_json::to_vec(&list).expect("json");
    let pb_bytes = protobuf::encode(&list).expect("protobuf");
    let (_, _, back) = protobuf::decode(&pb_bytes).expect("decode");
    assert_eq!(back["items"].as_array().map(Vec::len), Some(n));
    println!(
        "list of {n} pods: JSON {} bytes, protobuf {} bytes ({:.2}x smaller)",
        json_bytes.len(),
        pb_bytes.len(),
        json_bytes.len() as f64 / pb_bytes.len() as f64
    );

    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut g = c.benchmark_group(format!("list_{n}_pods"));
    g.bench_function("encode/json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&list)).expect("json"))
    });
    g.bench_function("encode/protobuf", |b| {
        b.iter(|| protobuf::encode(black_box(&list)).expect("protobuf"))
    });
    g.bench_function("decode/json", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(&json_bytes)).expect("json"))
    });
    g.bench_function("decode/protobuf", |b| {
        b.iter(|| protobuf::decode(black_box(&pb_bytes)).expect("protobuf"))
    });

    // The whole GET: read the store, encode, send over loopback.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = rt.block_on(async {
        let server = ApiServer::builder()
            .data_dir(dir.path())
            .listen("127.0.0.1:0".parse().expect("addr"))
            .insecure_http(true)
            .build()
            .await
            .expect("server");
        let api: Api = server.api();
        let t = Instant::now();
        let api = Arc::new(api);
        let mut tasks = Vec::new();
        for chunk in 0..8 {
            let (api, items) = (api.clone(), list["items"].clone());
            tasks.push(tokio::spawn(async move {
                for p in items
                    .as_array()
                    .into_iter()
                    .flatten()
                    .skip(chunk)
                    .step_by(8)
                {
                    api.create_value(
                        "v1",
                        "pods",
                        Some("default"),
                        p.clone(),
                        &WriteOptions::default(),
                    )
                    .await
                    .expect("create");
                }
            }));
        }
        for t in tasks {
            t.await.expect("create task");
        }
        println!("stored {n} pods in {:.1}s", t.elapsed().as_secs_f64());
        server.spawn()
    });
    let addr = server.local_addr();
    let path = "/api/v1/namespaces/default/pods";
    let (js, pb) = rt.block_on(async {
        (
            get(addr, path, "application/json").await,
            get(addr, path, protobuf::MEDIA_TYPE).await,
        )
    });
    println!(
        "GET {path} ({n} pods) on the wire: JSON {js} bytes, protobuf {pb} bytes ({:.2}x smaller)",
        js as f64 / pb as f64
    );
    g.bench_function("http_get/json", |b| {
        b.iter(|| rt.block_on(get(addr, path, "application/json")))
    });
    g.bench_function("http_get/protobuf", |b| {
        b.iter(|| rt.block_on(get(addr, path, protobuf::MEDIA_TYPE)))
    });
    g.finish();
    c.final_summary();
    rt.block_on(server.shutdown()).expect("shutdown");
}
