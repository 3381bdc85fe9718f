//! Root tests: exec, attach and port-forward sessions run by the agent's
//! [`kcore_node::PodStreams`] backend in real pods (called directly, without a protocol).

mod common;

use std::time::Duration;

use common::{Env, IMAGE};
use k8s_openapi::api::core::v1::Pod;
use kcore_stream::{Backend, BackendError, Exit, Process, Streams, Target, TerminalSize};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

fn target(env: &Env, pod: &str, container: &str) -> Target {
    Target {
        namespace: env.namespace.clone(),
        pod: pod.into(),
        uid: None,
        container: container.into(),
    }
}

fn running(p: &Pod, name: &str) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == name))
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

fn terminated(p: &Pod, name: &str) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == name))
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.terminated.is_some())
}

async fn read_all(r: Option<impl AsyncRead + Unpin>) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        r.expect("stream").read_to_end(&mut out),
    )
    .await
    .expect("read timeout")
    .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads from `r` until the output contains `want`; returns all of it.
async fn read_until(r: &mut (impl AsyncRead + Unpin), want: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let fut = async {
        loop {
            if String::from_utf8_lossy(&out).contains(want) {
                return;
            }
            let n = r.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "end of output before {want:?}; got {:?}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&buf[..n]);
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .is_err()
    {
        panic!(
            "no {want:?} in the output; got {:?}",
            String::from_utf8_lossy(&out)
        );
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn exit_of(p: Process) -> Exit {
    tokio::time::timeout(Duration::from_secs(20), p.exit)
        .await
        .expect("exit timeout")
        .expect("exit")
}

const OUT_ERR: Streams = Streams {
    stdin: false,
    stdout: true,
    stderr: true,
    tty: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn exec_attach_and_port_forward_in_a_running_pod() {
    let mut env = Env::new("10.77.31.0/24").await;
    env.cfg.node_ip = std::net::Ipv4Addr::LOCALHOST;
    env.start_agent();
    let be = env.streams.clone().expect("agent started");
    env.create_pod(json!({
        "metadata": {"name": "s"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "main", "image": IMAGE, "imagePullPolicy": "Never",
                 "workingDir": "/tmp", "env": [{"name": "GREETING", "value": "hi"}],
                 "command": ["nc", "-ll", "-p", "8080", "-e", "cat"]},
                {"name": "in", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["cat"], "stdin": true},
                {"name": "t", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["sh"], "stdin": true, "tty": true},
                {"name": "once", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["cat"], "stdin": true, "stdinOnce": true},
                {"name": "done", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["true"]}
            ]
        }
    }))
    .await;
    env.wait_pod("s", 60, |p| {
        ["main", "in", "t", "once"].iter().all(|c| running(p, c)) && terminated(p, "done")
    })
    .await;

    // exec: split output, the container's env and working directory, the exit code
    let mut p = be
        .exec(
            target(&env, "s", "main"),
            vec![
                "sh".into(),
                "-c".into(),
                "echo out $GREETING $(pwd); echo err >&2; exit 3".into(),
            ],
            OUT_ERR,
        )
        .await
        .unwrap();
    assert!(p.stdin.is_none() && p.resize.is_none());
    let (out, err) = tokio::join!(read_all(p.stdout.take()), read_all(p.stderr.take()));
    assert_eq!(out, "out hi /tmp\n");
    assert_eq!(err, "err\n");
    assert_eq!(exit_of(p).await, Exit::Code(3));

    // a process killed by a signal
    let p = be
        .exec(
            target(&env, "s", "main"),
            vec!["sh".into(), "-c".into(), "kill -9 $$".into()],
            OUT_ERR,
        )
        .await
        .unwrap();
    assert_eq!(exit_of(p).await, Exit::Signal(9));

    // a client that goes away: the session kills the exec'd shell and its group (here a
    // background sleep), which the kill the backend hands out does
    let mut p = be
        .exec(
            target(&env, "s", "main"),
            vec![
                "sh".into(),
                "-c".into(),
                "sleep 1000 & echo $!; wait".into(),
            ],
            OUT_ERR,
        )
        .await
        .unwrap();
    let mut out = p.stdout.take().unwrap();
    let line = read_until(&mut out, "\n").await;
    let sleep_pid: u32 = line.trim().parse().unwrap();
    let state = |pid: u32| {
        let be = be.clone();
        let t = target(&env, "s", "main");
        async move {
            let mut p = be
                .exec(
                    t,
                    vec![
                        "sh".into(),
                        "-c".into(),
                        format!("cut -d' ' -f3 /proc/{pid}/stat 2>/dev/null || echo gone"),
                    ],
                    OUT_ERR,
                )
                .await
                .unwrap();
            read_all(p.stdout.take()).await.trim().to_owned()
        }
    };
    assert_eq!(state(sleep_pid).await, "S", "the sleep runs");
    (p.kill.take().expect("exec hands out a kill"))();
    assert_eq!(exit_of(p).await, Exit::Signal(9));
    let s = state(sleep_pid).await;
    assert!(s == "gone" || s == "Z", "the group's sleep is killed: {s}");

    // stdin piped through cat, closed by shutting the writer down
    let mut p = be
        .exec(
            target(&env, "s", "main"),
            vec!["cat".into()],
            Streams {
                stdin: true,
                stdout: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut w = p.stdin.take().unwrap();
    let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let d2 = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&d2).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    p.stdout
        .take()
        .unwrap()
        .read_to_end(&mut got)
        .await
        .unwrap();
    writer.await.unwrap();
    assert!(
        got == data,
        "cat returned {} of {} bytes",
        got.len(),
        data.len()
    );
    assert_eq!(exit_of(p).await, Exit::Code(0));

    // a terminal: the process sees a tty, and a resize reaches it
    let mut p = be
        .exec(
            target(&env, "s", "main"),
            vec!["sh".into(), "-c".into(), "tty; read x; stty size".into()],
            Streams {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true,
            },
        )
        .await
        .unwrap();
    assert!(p.stderr.is_none());
    let mut out = p.stdout.take().unwrap();
    read_until(&mut out, "/dev/pts/").await;
    p.resize
        .as_ref()
        .unwrap()
        .send(TerminalSize {
            width: 123,
            height: 45,
        })
        .unwrap();
    // the resize is applied by a task; give it a moment before stty reads the size
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.stdin.as_mut().unwrap().write_all(b"go\n").await.unwrap();
    read_until(&mut out, "45 123").await;
    assert_eq!(exit_of(p).await, Exit::Code(0));

    // a container that is not running, a pod that is not here, no command
    match be
        .exec(target(&env, "s", "done"), vec!["true".into()], OUT_ERR)
        .await
    {
        Err(BackendError::BadRequest(m)) => assert_eq!(m, "container not found (\"done\")"),
        Err(e) => panic!("unexpected error {e:?}"),
        Ok(_) => panic!("exec in a finished container"),
    }
    assert!(matches!(
        be.exec(target(&env, "nope", "main"), vec!["true".into()], OUT_ERR)
            .await,
        Err(BackendError::NotFound(_))
    ));
    let mut wrong_uid = target(&env, "s", "main");
    wrong_uid.uid = Some("not-the-uid".into());
    assert!(matches!(
        be.exec(wrong_uid, vec!["true".into()], OUT_ERR).await,
        Err(BackendError::NotFound(_))
    ));

    // attach to a `stdin: true` container: input comes back from cat, twice (a
    // second client after the first detached), and the output also reaches the log
    let both = Streams {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    for word in ["ping", "pong"] {
        let mut p = be.attach(target(&env, "s", "in"), both).await.unwrap();
        let mut out = p.stdout.take().unwrap();
        let mut w = p.stdin.take().unwrap();
        w.write_all(format!("{word}\n").as_bytes()).await.unwrap();
        read_until(&mut out, word).await;
    }
    let (code, log) = env
        .agent_get(&format!("/containerLogs/{}/s/in", env.namespace))
        .await;
    assert_eq!(code, 200);
    assert_eq!(log, "ping\npong\n");
    // a container without stdin has none to attach to
    assert!(matches!(
        be.attach(target(&env, "s", "main"), both).await,
        Err(BackendError::BadRequest(_))
    ));

    // stdinOnce: the first client's detach closes the container's stdin, so cat ends,
    // and the session's exit is the container's
    let mut p = be.attach(target(&env, "s", "once"), both).await.unwrap();
    let mut out = p.stdout.take().unwrap();
    let mut w = p.stdin.take().unwrap();
    w.write_all(b"bye\n").await.unwrap();
    read_until(&mut out, "bye").await;
    w.shutdown().await.unwrap();
    assert_eq!(exit_of(p).await, Exit::Code(0));
    env.wait_pod("s", 20, |p| terminated(p, "once")).await;

    // attach to a `tty: true` container: a shell on its terminal
    let mut p = be
        .attach(
            target(&env, "s", "t"),
            Streams {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true,
            },
        )
        .await
        .unwrap();
    assert!(p.stderr.is_none() && p.resize.is_some());
    let mut out = p.stdout.take().unwrap();
    let mut w = p.stdin.take().unwrap();
    w.write_all(b"echo $((6*7)); tty\n").await.unwrap();
    let seen = read_until(&mut out, "/dev/pts/").await;
    assert!(seen.contains("42"), "{seen}");
    drop((w, out, p));

    // port-forward: a connection into the pod's namespace carries data both ways
    let mut conn = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match be.port_forward(target(&env, "s", ""), 8080).await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "nothing listens on 8080: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = tokio::io::split(&mut conn);
    let d2 = data.clone();
    let (wr, rd) = tokio::join!(
        async move {
            w.write_all(&d2).await.unwrap();
        },
        async move {
            let mut got = vec![0u8; 1_000_000];
            r.read_exact(&mut got).await.unwrap();
            got
        }
    );
    let _: () = wr;
    assert!(rd == data, "echoed data differs");
    drop(conn);

    // nothing listening: upstream's message
    match be.port_forward(target(&env, "s", ""), 8081).await {
        Err(e) => {
            let m = e.to_string();
            assert!(
                m.starts_with("failed to connect to localhost:8081 inside namespace"),
                "{m}"
            );
            assert!(m.contains("connection refused"), "{m}");
        }
        Ok(_) => panic!("connected to a closed port"),
    }
    assert!(matches!(
        be.port_forward(target(&env, "nope", ""), 8080).await,
        Err(BackendError::NotFound(_))
    ));

    // an ephemeral container targeting "main" runs in main's PID namespace
    let patch = json!({"spec": {"ephemeralContainers": [{
        "name": "dbg", "image": IMAGE, "imagePullPolicy": "Never",
        "command": ["sleep", "3600"], "targetContainerName": "main"}]}});
    env.pods()
        .patch_ephemeral_containers("s", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let p = env
        .wait_pod("s", 30, |p| {
            p.status
                .as_ref()
                .and_then(|s| s.ephemeral_container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref())
                .is_some_and(|s| s.running.is_some())
        })
        .await;
    assert_eq!(
        p.status.unwrap().ephemeral_container_statuses.unwrap()[0].name,
        "dbg"
    );
    let mut ps = be
        .exec(target(&env, "s", "dbg"), vec!["ps".into()], OUT_ERR)
        .await
        .unwrap();
    let out = read_all(ps.stdout.take()).await;
    assert!(out.contains("nc -ll -p 8080"), "{out}");
    assert!(out.contains("sleep 3600"), "{out}");
    assert_eq!(exit_of(ps).await, Exit::Code(0));
    // the target's own view has the debugger's process too
    let mut ps = be
        .exec(target(&env, "s", "main"), vec!["ps".into()], OUT_ERR)
        .await
        .unwrap();
    let out = read_all(ps.stdout.take()).await;
    assert!(out.contains("sleep 3600"), "{out}");
}

/// Attaches to `container` of pod `pod` once the agent has it registered (a restarted
/// agent registers adopted containers as it syncs).
async fn attach_when_ready(env: &Env, pod: &str, container: &str, streams: Streams) -> Process {
    let be = env.streams.clone().expect("agent started");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match be.attach(target(env, pod, container), streams).await {
            Ok(p) => return p,
            Err(BackendError::NotFound(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("attach {pod}/{container}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn attach_keeps_stdin_and_terminal_across_an_agent_restart() {
    let mut env = Env::new("10.77.32.0/24").await;
    env.cfg.node_ip = std::net::Ipv4Addr::LOCALHOST;
    env.start_agent();
    env.create_pod(json!({
        "metadata": {"name": "r"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "in", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["cat"], "stdin": true},
                {"name": "t", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["sh"], "stdin": true, "tty": true},
                {"name": "once", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["cat"], "stdin": true, "stdinOnce": true},
                {"name": "seven", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["sh", "-c", "until [ -e /tmp/go ]; do sleep 0.1; done; exit 7"]}
            ]
        }
    }))
    .await;
    let before = env
        .wait_pod("r", 60, |p| {
            ["in", "t", "once", "seven"].iter().all(|c| running(p, c))
        })
        .await;
    let ids = |p: &Pod| -> Vec<(String, Option<String>, i32)> {
        let mut v: Vec<_> = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.name, c.container_id, c.restart_count))
            .collect();
        v.sort();
        v
    };
    let both = Streams {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let tty = Streams {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    {
        let mut p = attach_when_ready(&env, "r", "in", both).await;
        let mut out = p.stdout.take().unwrap();
        let mut w = p.stdin.take().unwrap();
        w.write_all(b"before\n").await.unwrap();
        read_until(&mut out, "before").await;
        let mut p = attach_when_ready(&env, "r", "t", tty).await;
        let mut out = p.stdout.take().unwrap();
        let mut w = p.stdin.take().unwrap();
        w.write_all(b"export MARK=kept\n").await.unwrap();
        w.write_all(b"echo $((6*7))\n").await.unwrap();
        read_until(&mut out, "42").await;
    }

    // the agent goes away and a new one starts: the containers' stdin and terminal were
    // held meanwhile (cat has not read end of file, the shell has not hung up)
    env.stop_agent().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.start_agent();

    // stdin: a new client's input reaches the same cat
    let mut p = attach_when_ready(&env, "r", "in", both).await;
    let mut out = p.stdout.take().unwrap();
    let mut w = p
        .stdin
        .take()
        .expect("the adopted container's stdin is attachable");
    w.write_all(b"after\n").await.unwrap();
    read_until(&mut out, "after").await;
    drop((w, out, p));

    // the terminal: the same shell (its variable survives), still on its pty
    let mut p = attach_when_ready(&env, "r", "t", tty).await;
    assert!(p.resize.is_some(), "the adopted container has its terminal");
    let mut out = p.stdout.take().unwrap();
    let mut w = p.stdin.take().unwrap();
    w.write_all(b"echo mark=$MARK; tty\n").await.unwrap();
    let seen = read_until(&mut out, "/dev/pts/").await;
    assert!(seen.contains("mark=kept"), "{seen}");
    drop((w, out, p));

    // stdinOnce after the restart: the first client's detach still ends cat's input
    // (the keeper goes too), so cat ends and so does the session; the container's end
    // is checked here, its code below (with a container that ends with one of its own).
    let mut p = attach_when_ready(&env, "r", "once", both).await;
    let mut out = p.stdout.take().unwrap();
    let mut w = p.stdin.take().unwrap();
    w.write_all(b"bye\n").await.unwrap();
    read_until(&mut out, "bye").await;
    w.shutdown().await.unwrap();
    exit_of(p).await;
    env.wait_pod("r", 20, |p| terminated(p, "once")).await;

    // a container this agent did not start ends with code 7: its reaper recorded the
    // code for the agent that is no longer its parent (else it reads 137, unknown)
    let be = env.streams.clone().expect("agent restarted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let p = loop {
        match be
            .exec(
                target(&env, "r", "seven"),
                vec!["touch".into(), "/tmp/go".into()],
                OUT_ERR,
            )
            .await
        {
            Ok(p) => break p,
            Err(BackendError::NotFound(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("exec in r/seven: {e}"),
        }
    };
    exit_of(p).await;
    let after = env.wait_pod("r", 20, |p| terminated(p, "seven")).await;
    let seven = after
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == "seven"))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone())
        .expect("seven terminated");
    assert_eq!(
        (seven.exit_code, seven.reason.as_deref()),
        (7, Some("Error")),
        "{seven:?}"
    );

    // the same containers throughout, none restarted
    let (b, a) = (ids(&before), ids(&after));
    assert_eq!(b.len(), 4);
    for (x, y) in b.iter().zip(&a) {
        assert_eq!((&x.0, &x.1), (&y.0, &y.1), "{a:?}");
        assert_eq!(y.2, 0, "{a:?}");
    }
    let (code, log) = env
        .agent_get(&format!("/containerLogs/{}/r/in", env.namespace))
        .await;
    assert_eq!(code, 200);
    assert_eq!(log, "before\nafter\n");
    env.stop_agent().await;
}

/// The status of container `name` of `p`.
fn status_of(p: &Pod, name: &str) -> k8s_openapi::api::core::v1::ContainerStatus {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == name))
        .cloned()
        .unwrap_or_else(|| panic!("no status of container {name}"))
}

/// A container that ends while no agent runs is reported, once the next agent adopts
/// the pod, with the code its reaper recorded and when it ended, and (with
/// `restartPolicy: Never`) it is not started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn a_container_that_ends_while_the_agent_is_away_keeps_its_exit_code() {
    let mut env = Env::new("10.77.33.0/24").await;
    env.cfg.node_ip = std::net::Ipv4Addr::LOCALHOST;
    env.start_agent();
    env.create_pod(json!({
        "metadata": {"name": "away"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "nine", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["sh", "-c", "until [ -e /tmp/go ]; do sleep 0.1; done; exit 9"]},
                {"name": "stay", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["sleep", "3600"]}
            ]
        }
    }))
    .await;
    let before = env
        .wait_pod("away", 60, |p| running(p, "nine") && running(p, "stay"))
        .await;
    let cid = |p: &Pod, name: &str| status_of(p, name).container_id.expect("a container id");
    let nine = cid(&before, "nine");
    let id = nine
        .strip_prefix("kcore://")
        .expect("a kcore id")
        .to_owned();

    // no agent: the container ends (the test makes its file through /proc, as root)
    env.stop_agent().await;
    let rt = kcore_runtime::Runtime::new(env.cfg.data_dir.join("containers"));
    let pid = rt.load(&id).expect("the container").pid();
    std::fs::write(format!("/proc/{pid}/root/tmp/go"), b"").expect("write /tmp/go");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while rt.load(&id).expect("the container").status() != kcore_runtime::Status::Stopped {
        assert!(std::time::Instant::now() < deadline, "{id} did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let restarted = k8s_openapi::jiff::Timestamp::now();

    // the next agent reads the code the reaper recorded
    env.start_agent();
    let after = env.wait_pod("away", 30, |p| terminated(p, "nine")).await;
    let st = status_of(&after, "nine");
    let t = st
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .expect("nine terminated");
    assert_eq!(
        (t.exit_code, t.reason.as_deref(), st.restart_count),
        (9, Some("Error"), 0),
        "{t:?}"
    );
    assert_eq!(t.container_id.as_deref(), Some(nine.as_str()));
    let finished = t.finished_at.expect("finishedAt").0;
    assert!(
        finished < restarted,
        "finished {finished}, agent restarted {restarted}"
    );
    assert!(t.started_at.expect("startedAt").0 <= finished);
    // the other container was adopted, and nine was removed, not started again
    assert_eq!(cid(&after, "stay"), cid(&before, "stay"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids = env.container_ids();
    assert!(
        !ids.iter().any(|i| i.contains("_nine_")),
        "nine was started again or kept: {ids:?}"
    );
    let now = env.pods().get("away").await.unwrap();
    assert!(terminated(&now, "nine"), "{:?}", status_of(&now, "nine"));
    env.stop_agent().await;
}
