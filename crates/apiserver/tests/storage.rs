//! The storage conformance suite on the embedded backend, and its crash durability.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kcore_apiserver::{conformance, Checkpoints, RedbStorage, Storage};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn temp_dir(tag: &str) -> tempfile::TempDir {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    tempfile::Builder::new()
        .prefix(&format!(
            "kcore-apiserver-{tag}-{}-{n}-",
            std::process::id()
        ))
        .tempdir()
        .expect("temp dir")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_passes_conformance() {
    let mut dirs = Vec::new();
    conformance::run(|| {
        let dir = temp_dir("conf");
        let store = RedbStorage::open(dir.path()).expect("open");
        dirs.push(dir);
        async move { store }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_state_survives_reopen() {
    let dir = temp_dir("reopen");
    let (rev, watched_from) = {
        let s = RedbStorage::open(dir.path()).expect("open");
        let a = s.create("/x/a", b"1".to_vec()).await.expect("create");
        s.update("/x/a", b"2".to_vec(), Some(a.mod_revision))
            .await
            .expect("update");
        let b = s.create("/x/b", b"3".to_vec()).await.expect("create");
        (b.mod_revision, a.mod_revision)
    };
    let s = RedbStorage::open(dir.path()).expect("reopen");
    assert_eq!(s.revision().await.expect("rev").current, rev);
    assert_eq!(s.get("/x/a").await.expect("get").expect("a").value, b"2");
    // History is on disk too: a watch from before the restart replays it.
    let mut w = s.watch("/x/", watched_from).await.expect("watch");
    let ev = futures::StreamExt::next(&mut w)
        .await
        .expect("event")
        .expect("ok");
    assert_eq!(ev.kv.value, b"2");
    let c = s.create("/x/c", vec![]).await.expect("create after reopen");
    assert_eq!(c.mod_revision, rev + 1);
}

/// Checkpoints after every few batches, so that a run crosses dozens of them.
fn busy_checkpoints() -> Checkpoints {
    Checkpoints::default()
        .after_log_bytes(2048)
        .when_idle_for(Duration::from_millis(5))
        .at_least_every(Duration::from_millis(20))
}

/// Child side of the kill -9 tests: writes keys from 8 tasks as fast as it can and prints
/// each acknowledged key; the parent kills it with SIGKILL. `KCORE_CRASH_BUSY` makes it
/// checkpoint all the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by the kill -9 tests"]
async fn crash_child_writer() {
    let Ok(dir) = std::env::var("KCORE_CRASH_DIR") else {
        return;
    };
    let checkpoints = if std::env::var_os("KCORE_CRASH_BUSY").is_some() {
        busy_checkpoints()
    } else {
        Checkpoints::default()
    };
    let s = std::sync::Arc::new(RedbStorage::open_with(dir, checkpoints).expect("open"));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("/crash/{t}-{i:06}");
                s.create(&key, key.as_bytes().to_vec())
                    .await
                    .expect("create");
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {key}").expect("stdout");
                out.flush().expect("flush");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}

/// Runs [`crash_child_writer`], kills it with SIGKILL once it acknowledged `writes` keys,
/// and checks that every acknowledged key is there after reopening.
async fn acknowledged_writes_survive(busy: bool, writes: usize) {
    let dir = temp_dir("crash");
    let mut cmd = Command::new(std::env::current_exe().expect("exe"));
    cmd.args([
        "--exact",
        "crash_child_writer",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("KCORE_CRASH_DIR", dir.path())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if busy {
        cmd.env("KCORE_CRASH_BUSY", "1");
    }
    let mut child = cmd.spawn().expect("spawn child");
    let mut acked = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    while acked.len() < writes {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(k) = line.strip_prefix("ACK ") {
                    acked.push(k.to_owned());
                }
            }
            _ => break,
        }
    }
    // SIGKILL while writes are in flight.
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    // Lines already written by the child before the kill are acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some(k) = line.strip_prefix("ACK ") {
            acked.push(k.to_owned());
        }
    }
    assert!(
        acked.len() >= writes,
        "child acknowledged only {} writes",
        acked.len()
    );
    let s = RedbStorage::open(dir.path()).expect("reopen after crash");
    for key in &acked {
        let kv = s
            .get(key)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{key} lost"));
        assert_eq!(kv.value, key.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    acknowledged_writes_survive(false, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_across_checkpoints() {
    // Enough writes for dozens of checkpoints (one per 2 KiB of log).
    acknowledged_writes_survive(true, 1500).await;
}
