//! kcore-apiserver: what authorization and auditing cost. In one run:
//!
//! 1. pod create throughput over HTTP at 64 clients (kube-rs clients) against a server
//!    with RBAC and the audit log on (a bearer-token user that is no administrator, so
//!    every request is decided by RBAC; a `Metadata` audit policy writing every request
//!    to a log file) and against one with both off (no credentials configured, so every
//!    request is the administrator's and nothing is audited). The two are measured in
//!    alternating slices (paired rounds) so that disk and scheduler noise hits both
//!    alike; it prints each round and the median ratio (goal: ≥ 0.9×);
//! 2. the RBAC decision time with 1,000 Roles and 1,000 RoleBindings (plus upstream's
//!    bootstrap roles), for an allowed and a refused request: criterion's estimate and
//!    the median of single timed decisions (goal: ≤ 2 µs median).
//!
//! `cargo bench -p kcore-benches --bench authz`
//! Environment: `KCORE_BENCH_SECS` (per slice, default 2), `KCORE_BENCH_ROUNDS`
//! (default 5), `KCORE_BENCH_CLIENTS` (default 64).

mod common;
use common::env_num;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use k8s_openapi::api::core::v1::Pod;
use kcore_apiserver::{ApiServer, RbacAuthorizer, RbacRequest, RunningServer};
use kube::api::PostParams;
use serde_json::{json, Value};

/// The allocator kcored uses, so that the figures are what the daemon does.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const NS: &str = "bench";
const TOKEN: &str = "bench-user-token";

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"automountServiceAccountToken": false,
            "containers": [{"name": "c", "image": "busybox:1.36", "ports": [{"containerPort": 80}]}]}}))
    .expect("pod")
}

/// A server on plain HTTP (loopback): with `secured`, a token user decided by RBAC
/// and a `Metadata` audit log; without, no credentials (everyone is the administrator)
/// and no audit. Returns it and a client for the bench user.
async fn server(dir: &std::path::Path, secured: bool) -> (RunningServer, kube::Client) {
    let mut b = ApiServer::builder()
        .data_dir(dir.join("data"))
        .listen("127.0.0.1:0".parse().expect("addr"))
        .insecure_http(true);
    if secured {
        let tokens = dir.join("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{TOKEN},bench-user,bench-uid,\"bench-group\"\nadmin-token\n"),
        )
        .expect("token file");
        let policy = dir.join("audit-policy.yaml");
        std::fs::write(
            &policy,
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n",
        )
        .expect("audit policy");
        b = b
            .token_file(tokens)
            .audit_policy_file(policy)
            .audit_log_path(dir.join("audit.log"));
    }
    let server = b.build().await.expect("server");
    let url = server.url();
    let running = server.spawn();
    let api = running.api().clone();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    api.create_value("v1", "namespaces", None, ns, &Default::default())
        .await
        .expect("namespace");
    if secured {
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "pod-creator", "namespace": NS},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list"]}]});
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "bench-creates-pods", "namespace": NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-creator"},
            "subjects": [{"kind": "Group", "name": "bench-group", "apiGroup": "rbac.authorization.k8s.io"}]});
        for (plural, obj) in [("roles", role), ("rolebindings", binding)] {
            api.create_value(
                "rbac.authorization.k8s.io/v1",
                plural,
                Some(NS),
                obj,
                &Default::default(),
            )
            .await
            .expect("rbac object");
        }
    }
    let mut cfg = kube::Config::new(url.parse().expect("url"));
    if secured {
        cfg.headers.push((
            axum::http::header::AUTHORIZATION,
            axum::http::HeaderValue::from_str(&format!("Bearer {TOKEN}")).expect("header"),
        ));
    }
    let client = kube::Client::try_from(cfg).expect("client");
    // pods wait for their namespace's default service account (ServiceAccount admission),
    // which the bench user may not read: the server's own handle looks
    let deadline = Instant::now() + Duration::from_secs(30);
    while api
        .get_value("v1", "serviceaccounts", Some(NS), "default")
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "no default service account");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), NS);
    if let Err(e) = pods.create(&PostParams::default(), &pod("probe")).await {
        panic!("the bench user cannot create pods: {e}");
    }
    (running, client)
}

/// Pod creates from `clients` tasks for `secs` seconds; pods per second.
async fn creates(client: &kube::Client, clients: usize, secs: f64, tag: &str) -> f64 {
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), NS);
            let (counter, tag) = (counter.clone(), tag.to_owned());
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    pods.create(&PostParams::default(), &pod(&format!("{tag}-{i}")))
                        .await
                        .expect("create");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("client task");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// `n` Roles (each on one resource of its own) and `n` RoleBindings (each of one user
/// to one role), spread over 50 namespaces.
fn policy_objects(n: usize) -> (Vec<Value>, Vec<Value>) {
    let rbac = "rbac.authorization.k8s.io";
    let roles = (0..n)
        .map(|i| {
            json!({"apiVersion": format!("{rbac}/v1"), "kind": "Role",
                "metadata": {"name": format!("role-{i}"), "namespace": format!("ns-{}", i % 50)},
                "rules": [{"apiGroups": ["", "apps"], "resources": [format!("things{i}"), "pods", "deployments"],
                           "verbs": ["get", "list", "watch"]},
                          {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [format!("cm-{i}")],
                           "verbs": ["get", "update"]}]})
        })
        .collect();
    let bindings = (0..n)
        .map(|i| {
            json!({"apiVersion": format!("{rbac}/v1"), "kind": "RoleBinding",
                "metadata": {"name": format!("binding-{i}"), "namespace": format!("ns-{}", i % 50)},
                "roleRef": {"apiGroup": rbac, "kind": "Role", "name": format!("role-{i}")},
                "subjects": [{"kind": "User", "name": format!("user-{i}"), "apiGroup": rbac},
                             {"kind": "Group", "name": format!("team-{}", i % 20), "apiGroup": rbac}]})
        })
        .collect();
    (roles, bindings)
}

/// The median of `samples` single decisions, each timed over a batch of 64.
fn median_decision(mut decide: impl FnMut() -> bool, samples: usize) -> Duration {
    const BATCH: u32 = 64;
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..BATCH {
                std::hint::black_box(decide());
            }
            t.elapsed() / BATCH
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let secs = env_num("KCORE_BENCH_SECS", 2) as f64;
    let rounds = env_num("KCORE_BENCH_ROUNDS", 5);
    let clients = env_num("KCORE_BENCH_CLIENTS", 64) as usize;

    // 1. throughput, RBAC + audit on vs off, paired rounds
    let on_dir = tempfile::tempdir().expect("tempdir");
    let off_dir = tempfile::tempdir().expect("tempdir");
    let (on_server, on) = rt.block_on(server(on_dir.path(), true));
    let (off_server, off) = rt.block_on(server(off_dir.path(), false));
    println!("pod create over HTTP at {clients} clients, {secs} s slices:");
    println!("| round | RBAC + audit pods/s | off pods/s | ratio |");
    println!("|------:|--------------------:|-----------:|------:|");
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let (a, b) = rt.block_on(async {
            // alternate which side goes first
            if round % 2 == 0 {
                let a = creates(&on, clients, secs, &format!("on-{round}")).await;
                let b = creates(&off, clients, secs, &format!("off-{round}")).await;
                (a, b)
            } else {
                let b = creates(&off, clients, secs, &format!("off-{round}")).await;
                let a = creates(&on, clients, secs, &format!("on-{round}")).await;
                (a, b)
            }
        });
        println!("| {round:>5} | {a:>19.0} | {b:>10.0} | {:>5.2} |", a / b);
        ratios.push(a / b);
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    rt.block_on(async {
        on_server.shutdown().await.expect("shutdown");
        off_server.shutdown().await.expect("shutdown");
    });
    // counted once the server is gone and its audit writer has written everything
    let audited = std::fs::read_to_string(on_dir.path().join("audit.log"))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    println!(
        "pod create with RBAC + audit (Metadata) vs off at {clients} clients: median {median:.2}x over {rounds} rounds (goal >= 0.9x); {audited} audit events written"
    );

    // 2. the RBAC decision with 1,000 roles and 1,000 bindings
    let (roles, bindings) = policy_objects(1000);
    let cluster_roles: Vec<Value> = Vec::new();
    let authz = RbacAuthorizer::new(&cluster_roles, &roles, &[], &bindings);
    let groups: Vec<String> = vec!["team-7".into(), "system:authenticated".into()];
    let allowed = RbacRequest::resource("get", "", "configmaps", "ns-27").name("cm-827");
    let refused = RbacRequest::resource("delete", "apps", "deployments", "ns-27").name("web");
    assert!(authz.authorize("user-827", &groups, &allowed).is_ok());
    assert!(authz.authorize("user-827", &groups, &refused).is_err());
    let allow_median = median_decision(
        || authz.authorize("user-827", &groups, &allowed).is_ok(),
        2001,
    );
    let refuse_median = median_decision(
        || authz.authorize("user-827", &groups, &refused).is_ok(),
        2001,
    );
    let mut c = Criterion::default().configure_from_args();
    c.bench_function("rbac decision, 1000 roles + 1000 bindings: allowed", |b| {
        b.iter(|| authz.authorize("user-827", &groups, &allowed).is_ok())
    });
    c.bench_function("rbac decision, 1000 roles + 1000 bindings: refused", |b| {
        b.iter(|| authz.authorize("user-827", &groups, &refused).is_ok())
    });
    c.final_summary();
    println!(
        "RBAC decision with 1000 roles and 1000 bindings: median {:.3} us allowed, {:.3} us refused (goal <= 2 us)",
        allow_median.as_secs_f64() * 1e6,
        refuse_median.as_secs_f64() * 1e6
    );
}
