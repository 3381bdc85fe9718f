//! Root tests: pods on a real node agent (namespaces, cgroups, overlay, bridge inside a
//! test network namespace) against an in-process API server.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{http_get, Env, IMAGE};
use futures::AsyncBufReadExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn pod_runs_with_env_volumes_probes_logs_and_is_deleted_cleanly() {
    let mut env = Env::new("10.77.1.0/24").await;
    let ns = env.namespace.clone();
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"greeting": "hello-cm", "index.html": "v1"}})).unwrap(),
    )
    .await
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "sec"}, "stringData": {"password": "s3cret"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    // the API server reaches the agent's log endpoint at the node's InternalIP
    env.cfg.node_ip = std::net::Ipv4Addr::LOCALHOST;
    env.start_agent();

    // the node registers and becomes Ready with a Lease
    let nodes: Api<Node> = Api::all(env.client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(n) = nodes.get_opt(&env.node).await.unwrap() {
            let ok = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if ok {
                assert_eq!(n.spec.unwrap().pod_cidr.as_deref(), Some("10.77.1.0/24"));
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "node never Ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.client.clone(), "kube-node-lease");
    assert!(
        leases.get_opt(&env.node).await.unwrap().is_some(),
        "node lease"
    );

    let host_dir = env.path().join("host").to_string_lossy().into_owned();
    env.create_pod(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "volumes": [
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "sec", "secret": {"secretName": "sec"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"name": "host", "hostPath": {"path": host_dir, "type": "DirectoryOrCreate"}}
            ],
            "initContainers": [{
                "name": "init", "image": IMAGE,
                "command": ["sh", "-c", "echo from-init > /scratch/done"],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]
            }],
            "containers": [
                {
                    "name": "http", "image": IMAGE,
                    "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "volumeMounts": [{"name": "cfg", "mountPath": "/www", "readOnly": true}],
                    "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
                    "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
                },
                {
                    "name": "app", "image": IMAGE,
                    "command": ["sh", "-c"],
                    "args": ["echo hello from $(POD_NAME); echo greeting=$GREETING pw=$PASSWORD cm_prefix=$CM_greeting; cat /scratch/done; cat /info/labels; cat /sec/password; echo; hostname; echo cwd=$(pwd) image_env=$FROM_IMAGE; echo to-stderr >&2; sleep 0.3; echo last-line; exec sleep 3600"],
                    "workingDir": "/tmp",
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}}
                    ],
                    "envFrom": [{"prefix": "CM_", "configMapRef": {"name": "cfg"}}],
                    "volumeMounts": [
                        {"name": "scratch", "mountPath": "/scratch"},
                        {"name": "info", "mountPath": "/info"},
                        {"name": "sec", "mountPath": "/sec"},
                        {"name": "host", "mountPath": "/host"}
                    ],
                    "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo bye > /host/prestop"]}}},
                    "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}
                }
            ]
        }
    }))
    .await;
    let pod = env
        .wait_pod("web", 60, |p| phase(p) == "Running" && ready(p))
        .await;
    let st = pod.status.clone().unwrap();
    let ip: std::net::Ipv4Addr = st.pod_ip.as_deref().unwrap().parse().unwrap();
    assert!("10.77.1.0/24"
        .parse::<kcore_node::Ipv4Net>()
        .unwrap()
        .contains(&ip));
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(st.start_time.is_some());
    let cs = st.container_statuses.clone().unwrap();
    assert_eq!(cs.len(), 2);
    for c in &cs {
        assert!(c.ready, "{c:?}");
        assert_eq!(c.restart_count, 0);
        assert_eq!(c.image, IMAGE);
        assert!(c.image_id.contains("@sha256:"), "{}", c.image_id);
        assert!(c.state.as_ref().unwrap().running.is_some());
        assert!(c.container_id.as_deref().unwrap().starts_with("kcore://"));
    }
    let init = &st.init_container_statuses.clone().unwrap()[0];
    assert_eq!(
        init.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        0
    );
    // every condition the clients look for
    let conds = st.conditions.clone().unwrap();
    for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert!(
            conds.iter().any(|c| c.type_ == t && c.status == "True"),
            "{t}"
        );
    }

    // logs over the agent's HTTP endpoint
    let path = format!("/containerLogs/{ns}/web/app");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (code, body) = env.agent_get(&path).await;
        if code == 200 && body.contains("last-line") {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "logs: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains("hello from web\n"), "{body}");
    assert!(
        body.contains("greeting=hello-cm pw=s3cret cm_prefix=hello-cm"),
        "{body}"
    );
    assert!(body.contains("from-init"), "{body}");
    assert!(body.contains("app=\"web\""), "{body}");
    // stdout and stderr are separate pipes, read apart: lines keep their order within a
    // stream only (as with the CRI), so each line is looked for on its own.
    assert!(body.lines().any(|l| l == "s3cret"), "{body}");
    assert!(
        body.lines().any(|l| l == "web"),
        "hostname is the pod name: {body}"
    );
    assert!(body.contains("cwd=/tmp image_env=yes"), "{body}");
    assert!(body.contains("to-stderr"), "{body}");
    let (_, tail) = env.agent_get(&format!("{path}?tailLines=1")).await;
    assert_eq!(tail, "last-line\n");
    let (_, ts) = env
        .agent_get(&format!("{path}?tailLines=1&timestamps=true"))
        .await;
    assert!(ts.ends_with("Z last-line\n") && ts.len() > 20, "{ts}");
    let (code, _) = env
        .agent_get(&format!("/containerLogs/{ns}/web/nope"))
        .await;
    assert_eq!(code, 404);
    // ... and through the API server's pods/log proxy, as kubectl logs does
    let lp = kube::api::LogParams {
        container: Some("app".into()),
        tail_lines: Some(1),
        ..Default::default()
    };
    assert_eq!(env.pods().logs("web", &lp).await.unwrap(), "last-line\n");

    // the pod serves the ConfigMap from the node's network; updates reach the files
    let addr = SocketAddr::new(ip.into(), 8080);
    let (code, body) = http_get(Some(&env.node_netns), addr, "web", "/index.html").await;
    assert_eq!((code, body.as_str()), (200, "v1"));
    cms.patch(
        "cfg",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"index.html": "v2"}})),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = http_get(Some(&env.node_netns), addr, "web", "/index.html").await;
        if body == "v2" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "configMap update not propagated: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // graceful deletion: the object goes away, and so does everything on the node
    assert_eq!(env.container_ids().len(), 2);
    env.pods()
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone("web", 30).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !env.container_ids().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "containers left: {:?}",
            env.container_ids()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        std::fs::read_to_string(env.path().join("host/prestop")).unwrap(),
        "bye\n",
        "preStop ran in the container"
    );
    let netns_left = std::fs::read_dir(env.cfg.data_dir.join("netns"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(netns_left, 0, "pod network namespace left");
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn restart_policies_and_crash_loop_back_off() {
    let mut env = Env::new("10.77.2.0/24").await;
    // the API server reaches the agent's log endpoint at the node's InternalIP
    env.cfg.node_ip = std::net::Ipv4Addr::LOCALHOST;
    env.start_agent();
    env.create_pod(json!({
        "metadata": {"name": "crash"},
        "spec": {"containers": [{"name": "c", "image": IMAGE, "command": ["sh", "-c", "echo attempt; echo last-words > /dev/termination-log; exit 3"]}]}
    }))
    .await;
    env.create_pod(json!({
        "metadata": {"name": "done"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": IMAGE, "command": ["sh", "-c", "echo finished"]}]}
    }))
    .await;
    env.create_pod(json!({
        "metadata": {"name": "badinit"},
        "spec": {"restartPolicy": "Never",
            "initContainers": [{"name": "i", "image": IMAGE, "command": ["false"]}],
            "containers": [{"name": "c", "image": IMAGE, "command": ["true"]}]}
    }))
    .await;
    // OnFailure: the first run fails and leaves a mark, the retry succeeds.
    env.create_pod(json!({
        "metadata": {"name": "retry"},
        "spec": {"restartPolicy": "OnFailure",
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "containers": [{"name": "c", "image": IMAGE, "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                "command": ["sh", "-c", "if [ -e /scratch/ran ]; then exit 0; fi; touch /scratch/ran; exit 4"]}]}
    }))
    .await;
    env.create_pod(json!({
        "metadata": {"name": "nevercrash"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": IMAGE, "command": ["sh", "-c", "exit 2"]}]}
    }))
    .await;
    env.create_pod(json!({
        "metadata": {"name": "noimage"},
        "spec": {"containers": [{"name": "c", "image": "kcore.test/absent:v9", "imagePullPolicy": "Never"}]}
    }))
    .await;

    let p = env
        .wait_pod("crash", 60, |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| c[0].restart_count >= 2)
        })
        .await;
    let c = &p.status.unwrap().container_statuses.unwrap()[0];
    let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.exit_code, 3);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert_eq!(last.message.as_deref(), Some("last-words\n"));
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let evs = events.list(&Default::default()).await.unwrap().items;
    for reason in ["Started", "BackOff"] {
        assert!(
            evs.iter().any(|e| e.reason.as_deref() == Some(reason)
                && e.involved_object.name.as_deref() == Some("crash")),
            "no {reason} event"
        );
    }
    let p = env.wait_pod("done", 30, |p| phase(p) == "Succeeded").await;
    let t = p.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    let (_, logs) = env
        .agent_get(&format!("/containerLogs/{}/done/c", env.namespace))
        .await;
    assert_eq!(logs, "finished\n");
    let p = env.wait_pod("retry", 60, |p| phase(p) == "Succeeded").await;
    let c = &p.status.unwrap().container_statuses.unwrap()[0];
    assert_eq!(c.restart_count, 1, "restarted once after the failure");
    let now = c.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (now.exit_code, now.reason.as_deref()),
        (0, Some("Completed"))
    );
    let before = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (before.exit_code, before.reason.as_deref()),
        (4, Some("Error"))
    );
    let p = env
        .wait_pod("nevercrash", 30, |p| phase(p) == "Failed")
        .await;
    let c = &p.status.unwrap().container_statuses.unwrap()[0];
    assert_eq!(c.restart_count, 0, "Never does not restart");
    let t = c.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (2, Some("Error")));
    let p = env.wait_pod("badinit", 30, |p| phase(p) == "Failed").await;
    assert!(p.status.unwrap().container_statuses.unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .running
        .is_none());
    let p = env
        .wait_pod("noimage", 30, |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c[0].state.as_ref()?.waiting.as_ref()?.reason.clone())
                .as_deref()
                == Some("ErrImageNeverPull")
        })
        .await;
    assert_eq!(phase(&p), "Pending");
    // previous logs of the crash-looping container
    let (code, prev) = env
        .agent_get(&format!(
            "/containerLogs/{}/crash/c?previous=true",
            env.namespace
        ))
        .await;
    assert_eq!((code, prev.as_str()), (200, "attempt\n"));
    // ... and through the API server, as kubectl logs --previous asks for them
    let previous = kube::api::LogParams {
        previous: true,
        ..Default::default()
    };
    assert_eq!(
        env.pods().logs("crash", &previous).await.unwrap(),
        "attempt\n"
    );
    // a container that never ran: the kubelet's messages, as a 400
    for (lp, want) in [
        (
            kube::api::LogParams::default(),
            r#"container "c" in pod "noimage" is waiting to start: ErrImageNeverPull"#,
        ),
        (
            previous,
            r#"previous terminated container "c" in pod "noimage" not found"#,
        ),
    ] {
        match env.pods().logs("noimage", &lp).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!((e.code, e.message.as_str()), (400, want));
            }
            other => panic!("logs of a container that never ran: {other:?}"),
        }
    }
    for n in ["crash", "done", "badinit", "noimage", "retry", "nevercrash"] {
        env.pods()
            .delete(n, &DeleteParams::default())
            .await
            .unwrap();
    }
    for n in ["crash", "done", "badinit", "noimage", "retry", "nevercrash"] {
        env.wait_gone(n, 30).await;
    }
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn restarted_agent_adopts_running_containers() {
    let mut env = Env::new("10.77.3.0/24").await;
    env.start_agent();
    env.create_pod(json!({
        "metadata": {"name": "long"},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": IMAGE, "command": ["sh", "-c", "echo first; sleep 1; echo second; exec sleep 3600"]}]}
    }))
    .await;
    let p = env.wait_pod("long", 60, |p| phase(p) == "Running").await;
    let id = p.status.unwrap().container_statuses.unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    env.stop_agent().await;
    // The container goes on while no agent runs: wait until it has printed its second
    // line, that is until its shell has gone on to `exec sleep 3600`.
    let ids = env.container_ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let pid = kcore_runtime::Runtime::new(env.cfg.data_dir.join("containers"))
        .load(&ids[0])
        .unwrap()
        .pid();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"sleep\x003600\x00") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "container never reached its sleep"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.start_agent();
    // A barrier: a pod created after the restart reaches Running only once the new agent
    // has synced the pods it found, so a wrong restart of "long" would show by then.
    env.create_pod(json!({
        "metadata": {"name": "after-restart"},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": IMAGE, "command": ["sleep", "3600"]}]}
    }))
    .await;
    env.wait_pod("after-restart", 60, |p| phase(p) == "Running")
        .await;
    // still the same container, not restarted, its output still collected
    let p = env.wait_pod("long", 30, |p| phase(p) == "Running").await;
    let c = &p.status.unwrap().container_statuses.unwrap()[0];
    assert_eq!(c.container_id.as_deref(), Some(id.as_str()));
    assert_eq!(c.restart_count, 0);
    assert_eq!(env.container_ids().len(), 2);
    let (_, logs) = env
        .agent_get(&format!("/containerLogs/{}/long/c", env.namespace))
        .await;
    assert_eq!(logs, "first\nsecond\n");
    env.pods()
        .delete("long", &DeleteParams::default())
        .await
        .unwrap();
    env.pods()
        .delete("after-restart", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone("long", 30).await;
    env.wait_gone("after-restart", 30).await;
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn probes_restart_and_gate_readiness_and_security_context_applies() {
    let mut env = Env::new("10.77.5.0/24").await;
    env.cfg.node_ip = std::net::Ipv4Addr::LOCALHOST;
    env.start_agent();
    env.create_pod(json!({
        "metadata": {"name": "probed"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsUser": 65534, "runAsGroup": 65534},
            "volumes": [{"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}],
            "containers": [
                {
                    // alive for a while, then the liveness file disappears
                    "name": "flaky", "image": IMAGE,
                    "command": ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 3600"],
                    "securityContext": {"runAsUser": 0},
                    "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 1}
                },
                {
                    // never ready
                    "name": "unready", "image": IMAGE,
                    "command": ["sh", "-c", "id -u; id -g; touch /rootfile 2>/dev/null && echo rw || echo ro; grep -c ' /mem tmpfs ' /proc/mounts; echo; exec sleep 3600"],
                    "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "mem", "mountPath": "/mem"}],
                    "readinessProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1}
                }
            ]
        }
    }))
    .await;
    let p = env
        .wait_pod("probed", 60, |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.iter().find(|c| c.name == "flaky"))
                .is_some_and(|c| c.restart_count >= 1)
        })
        .await;
    let st = p.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    let ready = st
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        ready.status, "False",
        "an unready container keeps the pod unready"
    );
    let unready = st
        .container_statuses
        .unwrap()
        .into_iter()
        .find(|c| c.name == "unready")
        .unwrap();
    assert!(!unready.ready);
    assert_eq!(unready.restart_count, 0);
    let (_, logs) = env
        .agent_get(&format!("/containerLogs/{}/probed/unready", env.namespace))
        .await;
    assert_eq!(
        logs, "65534\n65534\nro\n1\n\n",
        "user, group, read-only root, memory emptyDir"
    );
    // follow on a running container streams what is there and keeps the stream open
    let stream = env
        .pods()
        .log_stream(
            "probed",
            &kube::api::LogParams {
                container: Some("unready".into()),
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut lines = stream.lines();
    let first = futures::StreamExt::next(&mut lines).await.unwrap().unwrap();
    assert_eq!(first, "65534");
    env.pods()
        .delete("probed", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone("probed", 40).await;
    env.stop_agent().await;
}
