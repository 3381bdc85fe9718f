//! End to end with the real `kubectl` (the one first on PATH; CI puts 1.35 there): an
//! in-process API server over TLS proxies `pods/exec` and `pods/portforward` to a loopback
//! node server (verified TLS) whose backend runs host processes in a temp dir and forwards
//! to loopback listeners. Each case runs with kubectl's defaults (WebSocket) and with SPDY
//! forced, and asserts the protocol the node recorded; and each runs with the API server
//! dialing the node and with the node's routes in the API server's process
//! (`LocalNodes`, as `kcored up` runs its own agent), asserting which way the node saw
//! the sessions come.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use kcore_stream::Transport;
use support::{noise, sha256, start_with, Cluster, NodePath};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// The transport kubectl is asked to use.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Defaults,
    Spdy,
}

fn kubectl(c: &Cluster, mode: Mode, args: &[&str]) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .arg("--cache-dir")
        .arg(&c.cache)
        .args(args)
        .env("HOME", c.cache.parent().unwrap_or(Path::new("/tmp")))
        .env_remove("KUBECONFIG")
        .env_remove("KUBECTL_REMOTE_COMMAND_WEBSOCKETS")
        .env_remove("KUBECTL_PORT_FORWARD_WEBSOCKETS")
        .kill_on_drop(true);
    if mode == Mode::Spdy {
        cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");
    }
    cmd
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(c: &Cluster, mode: Mode, args: &[&str], stdin: Option<&[u8]>) -> Out {
    let mut cmd = kubectl(c, mode, args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("kubectl must be on PATH (CI installs it)");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().unwrap();
        s.write_all(input).await.unwrap();
        drop(s);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl finishes")
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn exec_cases(mode: Mode, path: NodePath) {
    let c = start_with(path).await;
    let (want_transport, want_protocol) = match mode {
        Mode::Defaults => (Transport::WebSocket, "v5.channel.k8s.io"),
        Mode::Spdy => (Transport::Spdy, "v4.channel.k8s.io"),
    };

    // output split and exit code
    let out = run(
        &c,
        mode,
        &[
            "exec",
            "p",
            "-c",
            "c",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        None,
    )
    .await;
    assert_eq!(out.code, Some(3), "exit code 3: {}", out.stderr);
    assert_eq!(out.stdout, "out\n");
    assert!(out.stderr.starts_with("err\n"), "stderr: {:?}", out.stderr);
    assert_eq!(c.last("exec"), (want_transport, want_protocol.into()));

    // a zero exit
    let t = std::time::Instant::now();
    let out = run(
        &c,
        mode,
        &["exec", "p", "-c", "sidecar", "--", "true"],
        None,
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // a figure for the record, not a check
    eprintln!("kubectl exec -- true ({mode:?}): {:?}", t.elapsed());

    // stdin piped through, ended by the client's close
    let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let out = run(
        &c,
        mode,
        &[
            "exec",
            "-i",
            "p",
            "-c",
            "c",
            "--",
            "sh",
            "-c",
            "cat | wc -c",
        ],
        Some(&input),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "200000");
    let out = run(
        &c,
        mode,
        &["exec", "-i", "p", "-c", "c", "--", "cat"],
        Some(b"hi\n"),
    )
    .await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "hi\n"),
        "{}",
        out.stderr
    );
    assert_eq!(c.last("exec"), (want_transport, want_protocol.into()));

    // upstream's refusals
    let out = run(&c, mode, &["exec", "p", "-c", "nope", "--", "true"], None).await;
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("container nope is not valid for pod p"),
        "{}",
        out.stderr
    );
    // attach: the client's stdin reaches the process, its output comes back, and the end
    // of stdin ends it
    let out = run(
        &c,
        mode,
        &["attach", "-i", "p", "-c", "c"],
        Some(b"attached\n"),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "attached\n", "{}", out.stderr);
    assert_eq!(c.last("attach"), (want_transport, want_protocol.into()));

    abandoned_exec_is_killed(&c, mode).await;

    tty_case(&c, mode).await;
    assert_eq!(c.last("exec"), (want_transport, want_protocol.into()));

    cp_case(&c, mode).await;
    assert_eq!(c.last("exec"), (want_transport, want_protocol.into()));

    // discovery lists the subresources
    let out = run(&c, mode, &["get", "--raw", "/api/v1"], None).await;
    for sub in ["pods/exec", "pods/attach", "pods/portforward"] {
        assert!(
            out.stdout.contains(&format!("\"{sub}\"")),
            "{sub} in discovery"
        );
    }

    // kubectl picks the first container itself, and says so
    let out = run(&c, mode, &["exec", "p", "--", "true"], None).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("Defaulted container \"c\""),
        "{}",
        out.stderr
    );
    c.stop().await;
}

/// The files under `dir` (relative paths) and their contents, sorted.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `kubectl cp` of a directory (a nested one inside, a binary file) into the pod and
/// back out: tar through exec both ways.
async fn cp_case(c: &Cluster, mode: Mode) {
    let root = c.cache.parent().unwrap().to_owned();
    let src = root.join(format!("cp-src-{mode:?}"));
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(src.join("sub/b.bin"), noise(5, 300_000)).unwrap();
    std::fs::write(src.join("sub/deeper/c.txt"), format!("over {mode:?}\n")).unwrap();
    // the host backend's pod runs in `<root>/pod`: the copy lands there
    let remote = root.join("pod").join(format!("cp-{mode:?}"));
    let remote_arg = format!("p:{}", remote.display());
    let out = run(
        c,
        mode,
        &["cp", "-c", "c", src.to_str().unwrap(), &remote_arg],
        None,
    )
    .await;
    assert_eq!(out.code, Some(0), "cp in: {}", out.stderr);
    let want = tree(&src);
    assert_eq!(want.len(), 3);
    assert!(tree(&remote) == want, "the copy in differs");
    let back = root.join(format!("cp-back-{mode:?}"));
    let out = run(
        c,
        mode,
        &["cp", "-c", "c", &remote_arg, back.to_str().unwrap()],
        None,
    )
    .await;
    assert_eq!(out.code, Some(0), "cp out: {}", out.stderr);
    assert!(tree(&back) == want, "the copy out differs");
}

/// A process's state letter from `/proc/<pid>/stat` (`None`: no such process).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// `kubectl exec` of a shell that starts `sleep 1000` in the background, killed while
/// they run: the node kills the exec'd process and its process group.
async fn abandoned_exec_is_killed(c: &Cluster, mode: Mode) {
    let mut child = kubectl(
        c,
        mode,
        &[
            "exec",
            "p",
            "-c",
            "c",
            "--",
            "sh",
            "-c",
            "sleep 1000 & echo $$ $!; wait",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("kubectl must be on PATH (CI installs it)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the shell prints its pids")
        .unwrap()
        .expect("a line of pids");
    let pids: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{line}");
    for &pid in &pids {
        assert!(
            matches!(proc_state(pid), Some(s) if s != 'Z'),
            "{pid} runs before the client goes"
        );
    }
    // the client goes away without a word
    child.kill().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for &pid in &pids {
        while matches!(proc_state(pid), Some(s) if s != 'Z') {
            assert!(
                std::time::Instant::now() < deadline,
                "{mode:?}: process {pid} still runs after its client went away"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `kubectl exec -it` on a terminal of 33 rows and 101 columns: the remote shell sees
/// that size once the first resize message arrives, and its output comes back.
async fn tty_case(c: &Cluster, mode: Mode) {
    let (master, slave) = support::openpty(33, 101);
    let mut cmd = kubectl(
        c,
        mode,
        &[
            "exec",
            "-it",
            "p",
            "-c",
            "c",
            "--",
            "sh",
            "-c",
            "while [ \"$(stty size)\" = \"0 0\" ]; do sleep 0.05; done; echo \"size $(stty size)\"; tty >/dev/null && echo on-a-tty; exit 4",
        ],
    );
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    support::controlling_terminal(&mut cmd);
    let mut child = cmd
        .spawn()
        .expect("kubectl must be on PATH (CI installs it)");
    drop(cmd);
    // read the terminal until kubectl (its last holder) is gone
    let reader = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut master = master;
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = master.read(&mut chunk) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("kubectl exec -it finishes")
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the terminal closes")
        .unwrap();
    assert!(out.contains("size 33 101"), "terminal output: {out:?}");
    assert!(out.contains("on-a-tty"), "terminal output: {out:?}");
    assert_eq!(status.code(), Some(4), "terminal output: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_exec_over_websocket() {
    exec_cases(Mode::Defaults, NodePath::Dial).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_exec_over_spdy() {
    exec_cases(Mode::Spdy, NodePath::Dial).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_exec_over_websocket_to_a_node_in_process() {
    exec_cases(Mode::Defaults, NodePath::InProcess).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_exec_over_spdy_to_a_node_in_process() {
    exec_cases(Mode::Spdy, NodePath::InProcess).await;
}

/// One connection through the forwarded local port: `len` bytes up, their SHA-256 as the
/// pod saw them and the bytes back down, checked.
async fn one_connection(local: u16, seed: u64, len: usize) {
    let data = noise(seed, len);
    let s = tokio::net::TcpStream::connect(("127.0.0.1", local))
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let up = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&(up.len() as u64).to_be_bytes())
            .await
            .unwrap();
        wr.write_all(&up).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    rd.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), 32 + len, "answer length");
    assert!(
        back[..32] == sha256(&data)[..],
        "the pod's SHA-256 of the upload"
    );
    assert!(back[32..] == data[..], "the download matches");
}

/// Starts `kubectl port-forward <what> <ports>` and returns it with its local ports by remote port.
async fn forward(
    c: &Cluster,
    mode: Mode,
    what: &str,
    ports: &[&str],
) -> (tokio::process::Child, HashMap<u16, u16>) {
    let mut args = vec!["port-forward", what];
    args.extend_from_slice(ports);
    let mut child = kubectl(c, mode, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl must be on PATH (CI installs it)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut local = HashMap::new();
    while local.len() < ports.len() {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("kubectl reports its ports")
            .unwrap()
            .expect("kubectl keeps running");
        // "Forwarding from 127.0.0.1:43567 -> 8080"
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            let (l, r) = rest.split_once(" -> ").unwrap();
            local.insert(r.trim().parse::<u16>().unwrap(), l.parse::<u16>().unwrap());
        }
    }
    // keep reading ("Handling connection for ..."): a closed pipe would end kubectl
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, local)
}

async fn port_forward_cases(mode: Mode, path: NodePath) {
    let c = start_with(path).await;

    // through a Service: kubectl picks its pod and maps 80 to the target port 8080
    let (mut svc, local) = forward(&c, mode, "svc/s", &[":80"]).await;
    let conn = tokio::spawn(one_connection(local[&8080], 7, 1000)).await;
    let _ = svc.kill().await;
    if conn.is_err() {
        let mut err = String::new();
        let _ = svc.stderr.take().unwrap().read_to_string(&mut err).await;
        panic!(
            "through svc/s: kubectl says {err}; node saw {:?}",
            c.sessions.to_json()
        );
    }

    // through a Deployment: kubectl picks a pod by its selector (no controller runs
    // here, so the pod is `p`, which the selector matches)
    let deploy: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(serde_json::json!({
        "metadata": {"name": "d", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "p"}},
            "template": {"metadata": {"labels": {"app": "p"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))
        .unwrap();
    c.server
        .api()
        .create(Some("default"), &deploy)
        .await
        .unwrap();
    let (mut dep, local) = forward(&c, mode, "deploy/d", &[":8080"]).await;
    let conn = tokio::spawn(one_connection(local[&8080], 8, 1000)).await;
    let _ = dep.kill().await;
    assert!(
        conn.is_ok(),
        "through deploy/d: node saw {:?}",
        c.sessions.to_json()
    );

    let (mut child, local) = forward(&c, mode, "pod/p", &[":8080", ":9"]).await;
    let fwd = local[&8080];
    // two concurrent connections carrying 100 MiB each way between them, checksummed
    const EACH: usize = 50 << 20;
    let t = std::time::Instant::now();
    let a = tokio::spawn(one_connection(fwd, 1, EACH));
    let b = tokio::spawn(one_connection(fwd, 2, EACH));
    a.await.unwrap();
    b.await.unwrap();
    // a figure for the record (200 MiB moved: 2 connections x 50 MiB each way, with the
    // test's own making and checking of the data), not a check; the bench compares
    eprintln!(
        "port-forward {mode:?} {path:?}: 200 MiB through kubectl in {:.1?}",
        t.elapsed()
    );
    // and a small one after them
    one_connection(fwd, 3, 10).await;
    let want = match mode {
        Mode::Defaults => (
            Transport::WebSocketSpdyTunnel,
            kcore_stream::TUNNEL_PROTOCOL.to_owned(),
        ),
        Mode::Spdy => (Transport::Spdy, "portforward.k8s.io".to_owned()),
    };
    assert_eq!(c.last("portforward"), want);

    // nothing listens on the pod's port 9: the error stream says so
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", local[&9]))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    assert!(buf.is_empty());
    let mut err = String::new();
    let mut stderr = child.stderr.take().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        let mut chunk = [0u8; 4096];
        while !err.contains("error forwarding port 9 to pod p") {
            match stderr.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => err.push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    })
    .await;
    assert!(
        err.contains("error forwarding port 9 to pod p")
            && err.contains("failed to connect to localhost:9 inside the pod"),
        "kubectl's stderr: {err}"
    );
    let _ = child.kill().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_port_forward_over_websocket() {
    port_forward_cases(Mode::Defaults, NodePath::Dial).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_port_forward_over_spdy() {
    port_forward_cases(Mode::Spdy, NodePath::Dial).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_port_forward_over_websocket_to_a_node_in_process() {
    port_forward_cases(Mode::Defaults, NodePath::InProcess).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_port_forward_over_spdy_to_a_node_in_process() {
    port_forward_cases(Mode::Spdy, NodePath::InProcess).await;
}
