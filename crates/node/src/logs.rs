//! Container logs: CRI-format files (`<RFC3339Nano> <stream> <F|P> <text>`) with size
//! rotation, and reading them back with tail, previous, timestamps and follow.
//!
//! As the kubelet keeps them, log files are 0640 in 0750 directories: root and its
//! group read them, other users do not (a log may print a Secret).

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::io::AsyncReadExt;

use crate::error::{Error, ErrorChain, Result};

/// Longest line written as one entry; longer output is split into partial (`P`) entries.
const MAX_LINE: usize = 16 * 1024;

/// Where a pod's container logs live: `<root>/<namespace>_<pod>_<uid>/<container>/`.
pub(crate) fn container_dir(
    root: &Path,
    ns: &str,
    pod: &str,
    uid: &str,
    container: &str,
) -> PathBuf {
    root.join(format!("{ns}_{pod}_{uid}")).join(container)
}

/// One container attempt's log file.
pub(crate) fn attempt_file(dir: &Path, attempt: u32) -> PathBuf {
    dir.join(format!("{attempt}.log"))
}

fn done_marker(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".done");
    PathBuf::from(s)
}

fn rfc3339_nanos(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let ts = k8s_openapi::jiff::Timestamp::new(d.as_secs() as i64, d.subsec_nanos() as i32)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()
}

/// A log file being written, with rotation.
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
    max_files: usize,
}

impl LogFile {
    pub fn open(path: &Path, max_bytes: u64, max_files: usize) -> Result<Self> {
        if let Some(p) = path.parent() {
            kcore_statedir::ensure_dir(p, kcore_statedir::GROUP_DIR)
                .map_err(|e| Error::io("create", p, e))?;
        }
        let _ = std::fs::remove_file(done_marker(path));
        let file = open_log(path).map_err(|e| Error::io("open", path, e))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogFile {
            path: path.to_owned(),
            file,
            size,
            max_bytes: max_bytes.max(1024),
            max_files,
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        for i in (1..self.max_files.max(1)).rev() {
            let from = rotated(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, i + 1))?;
            }
        }
        if self.max_files == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        let _ = std::fs::remove_file(rotated(&self.path, self.max_files + 1));
        self.file = open_log(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Appends one entry.
    pub fn write_entry(&mut self, stream: &str, partial: bool, text: &[u8]) {
        let mut line = Vec::with_capacity(text.len() + 48);
        line.extend_from_slice(rfc3339_nanos(std::time::SystemTime::now()).as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(text);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            if let Err(e) = self.rotate() {
                tracing::warn!(path = %self.path.display(), error = %ErrorChain(&e), "log rotation failed");
            }
        }
        if self.file.write_all(&line).is_ok() {
            self.size += line.len() as u64;
        }
    }

    /// Marks the attempt's output as complete (followers stop at the end).
    pub fn finish(&self) {
        let _ = std::fs::write(done_marker(&self.path), b"");
    }
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    kcore_statedir::open(
        path,
        std::fs::OpenOptions::new().create(true).append(true),
        kcore_statedir::GROUP_FILE,
    )
}

fn rotated(path: &Path, i: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// Copies a container stream into the log until end of file, and to the clients
/// attached to the container through `tee`.
pub(crate) async fn pump<R: tokio::io::AsyncRead + Unpin>(
    mut reader: R,
    stream: &'static str,
    log: Arc<Mutex<LogFile>>,
    tee: Option<tokio::sync::broadcast::Sender<crate::streams::Chunk>>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(t) = &tee {
            // no attached client is no error
            let _ = t.send(Arc::from(&buf[..n]));
        }
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        let mut lg = log.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
            lg.write_entry(stream, false, &pending[start..start + i]);
            start += i + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            let rest = pending.split_off(MAX_LINE);
            lg.write_entry(stream, true, &pending);
            pending = rest;
        }
    }
    if !pending.is_empty() {
        log.lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_entry(stream, false, &pending);
    }
}

/// What to read back (the kubelet's `/containerLogs` query).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    /// Keep streaming until the container attempt ends.
    #[serde(default, deserialize_with = "de_bool")]
    pub follow: bool,
    /// Only the last N lines.
    #[serde(default, deserialize_with = "de_opt_num")]
    pub tail_lines: Option<i64>,
    /// The previous (terminated) attempt.
    #[serde(default, deserialize_with = "de_bool")]
    pub previous: bool,
    /// Prefix every line with its RFC 3339 timestamp.
    #[serde(default, deserialize_with = "de_bool")]
    pub timestamps: bool,
    /// Stop after this many bytes.
    #[serde(default, deserialize_with = "de_opt_num")]
    pub limit_bytes: Option<i64>,
    /// Only lines newer than this many seconds.
    #[serde(default, deserialize_with = "de_opt_num")]
    pub since_seconds: Option<i64>,
    /// Only lines at or after this RFC 3339 time.
    #[serde(default)]
    pub since_time: Option<String>,
}

fn de_bool<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    let s: Option<String> = serde::Deserialize::deserialize(d)?;
    Ok(matches!(s.as_deref(), Some("true" | "1" | "")))
}

fn de_opt_num<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<i64>, D::Error> {
    let s: Option<String> = serde::Deserialize::deserialize(d)?;
    Ok(s.and_then(|s| s.parse().ok()))
}

/// One parsed CRI log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub time: String,
    pub partial: bool,
    pub text: Vec<u8>,
}

pub(crate) fn parse_line(line: &[u8]) -> Option<Entry> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = String::from_utf8_lossy(parts.next()?).into_owned();
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default().to_vec();
    Some(Entry {
        time,
        partial: tag == b"P",
        text,
    })
}

/// Appends `e` as the client reads it; `line_start` says whether `e` begins a line (a
/// partial entry's continuation does not), so that a timestamp starts lines only, as
/// the kubelet prints them.
fn render(e: &Entry, q: &LogQuery, line_start: &mut bool, out: &mut Vec<u8>) {
    if q.timestamps && *line_start {
        out.extend_from_slice(e.time.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(&e.text);
    if !e.partial {
        out.push(b'\n');
    }
    *line_start = !e.partial;
}

/// The attempts with a log file in `dir`, oldest first.
pub(crate) fn attempts(dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// The file to read for `q` in a container's log directory: the latest attempt, or with
/// `previous` the kubelet's last terminated instance — the attempt before the running
/// one, or the last attempt itself once it is over (a container waiting to restart).
pub(crate) fn select(dir: &Path, previous: bool) -> Option<PathBuf> {
    let a = attempts(dir);
    let last = *a.last()?;
    if !previous {
        return Some(attempt_file(dir, last));
    }
    if done_marker(&attempt_file(dir, last)).exists() {
        return Some(attempt_file(dir, last));
    }
    let n = a.len().checked_sub(2).map(|i| a[i])?;
    Some(attempt_file(dir, n))
}

fn since_cutoff(q: &LogQuery) -> Option<Timestamp> {
    if let Some(s) = q.since_seconds.filter(|s| *s > 0) {
        return Timestamp::now()
            .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(s))
            .ok();
    }
    q.since_time.as_deref().and_then(|t| t.parse().ok())
}

/// Reads the whole history of `file` (rotated files first) as rendered text, applying
/// `tailLines`, `sinceSeconds` and `limitBytes`. Returns the text and the offset in the
/// live file where following continues.
pub(crate) fn read_all(file: &Path, q: &LogQuery) -> (Vec<u8>, u64) {
    let mut files = Vec::new();
    for i in (1..64).rev() {
        let r = rotated(file, i);
        if r.exists() {
            files.push(r);
        }
    }
    files.push(file.to_owned());
    let cutoff = since_cutoff(q);
    let mut entries = Vec::new();
    let mut offset = 0;
    for (i, f) in files.iter().enumerate() {
        let Ok(fh) = std::fs::File::open(f) else {
            continue;
        };
        let mut r = std::io::BufReader::new(fh);
        let mut line = Vec::new();
        let mut pos = 0u64;
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !line.ends_with(b"\n") {
                        break; // incomplete: picked up by the follower
                    }
                    pos += n as u64;
                    if let Some(e) = parse_line(&line) {
                        let newer = || {
                            e.time
                                .parse::<Timestamp>()
                                .is_ok_and(|t| t >= *cutoff.as_ref().expect("set"))
                        };
                        if cutoff.is_none() || newer() {
                            entries.push(e);
                        }
                    }
                }
            }
        }
        if i == files.len() - 1 {
            offset = pos;
        }
    }
    if let Some(t) = q.tail_lines.filter(|t| *t >= 0) {
        // count whole lines (a run of partial entries ends with a full one)
        let mut lines = 0;
        let mut start = entries.len();
        while start > 0 {
            if !entries[start - 1].partial {
                if lines == t {
                    break;
                }
                lines += 1;
            }
            start -= 1;
        }
        entries.drain(..start);
    }
    let mut out = Vec::new();
    let mut line_start = true;
    for e in &entries {
        render(e, q, &mut line_start, &mut out);
    }
    if let Some(l) = q.limit_bytes.filter(|l| *l >= 0) {
        out.truncate(l as usize);
    }
    (out, offset)
}

/// Follows `file` from `offset`, sending rendered chunks until the attempt is marked
/// done and fully read, or the receiver goes away.
pub(crate) async fn follow(
    file: PathBuf,
    mut offset: u64,
    q: LogQuery,
    mut budget: Option<u64>,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
) {
    let mut ino = std::fs::metadata(&file)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .ok();
    let mut line_start = true;
    loop {
        let done = done_marker(&file).exists();
        let meta = std::fs::metadata(&file).ok();
        let cur_ino = meta.as_ref().map(std::os::unix::fs::MetadataExt::ino);
        if cur_ino != ino {
            // rotated: start the new file from the beginning
            ino = cur_ino;
            offset = 0;
        }
        let mut chunk = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&file) {
            if f.seek(SeekFrom::Start(offset)).is_ok() {
                let mut buf = Vec::new();
                let _ = f.read_to_end(&mut buf);
                let whole = buf
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map(|i| i + 1)
                    .unwrap_or(0);
                for line in buf[..whole].split_inclusive(|b| *b == b'\n') {
                    if let Some(e) = parse_line(line) {
                        render(&e, &q, &mut line_start, &mut chunk);
                    }
                }
                offset += whole as u64;
            }
        }
        if !chunk.is_empty() {
            if let Some(b) = budget.as_mut() {
                if chunk.len() as u64 >= *b {
                    chunk.truncate(*b as usize);
                    let _ = tx.send(chunk).await;
                    return;
                }
                *b -= chunk.len() as u64;
            }
            if tx.send(chunk).await.is_err() {
                return;
            }
        } else if done {
            return;
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_rotates_and_tails() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c/0.log");
        let mut lf = LogFile::open(&path, 1024, 2).unwrap();
        for i in 0..100 {
            lf.write_entry("stdout", false, format!("line {i}").as_bytes());
        }
        assert!(rotated(&path, 1).exists());
        assert!(rotated(&path, 2).exists());
        assert!(
            !rotated(&path, 3).exists(),
            "only max_files rotated files kept"
        );
        // root and its group only, as the kubelet keeps them
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(path.parent().unwrap()), 0o750);
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            assert_eq!(mode(&p), 0o640, "{}", p.display());
        }
        let q = LogQuery {
            tail_lines: Some(3),
            ..Default::default()
        };
        let (out, _) = read_all(&path, &q);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "line 97\nline 98\nline 99\n"
        );
        let q = LogQuery {
            tail_lines: Some(1),
            timestamps: true,
            ..Default::default()
        };
        let (out, _) = read_all(&path, &q);
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with("Z line 99\n"), "{s}");
        assert!(s.starts_with("20"), "{s}");
        let q = LogQuery {
            since_time: Some("2999-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert!(read_all(&path, &q).0.is_empty());
        let q = LogQuery {
            since_seconds: Some(60),
            tail_lines: Some(1),
            ..Default::default()
        };
        assert_eq!(read_all(&path, &q).0, b"line 99\n");
    }

    #[test]
    fn partial_lines_join() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("0.log");
        let mut lf = LogFile::open(&path, 1 << 20, 1).unwrap();
        lf.write_entry("stdout", true, b"ab");
        lf.write_entry("stdout", false, b"cd");
        lf.write_entry("stderr", false, b"e");
        let (out, off) = read_all(&path, &LogQuery::default());
        assert_eq!(out, b"abcd\ne\n");
        assert_eq!(off, std::fs::metadata(&path).unwrap().len());
        let (out, _) = read_all(
            &path,
            &LogQuery {
                tail_lines: Some(1),
                ..Default::default()
            },
        );
        assert_eq!(out, b"e\n");
    }

    #[test]
    fn previous_selects_the_last_terminated_attempt() {
        let tmp = tempfile::tempdir().unwrap();
        for a in [0, 1, 2] {
            std::fs::write(attempt_file(tmp.path(), a), b"").unwrap();
        }
        assert_eq!(select(tmp.path(), false), Some(attempt_file(tmp.path(), 2)));
        assert_eq!(select(tmp.path(), true), Some(attempt_file(tmp.path(), 1)));
        // attempt 2 is over and the container waits to restart: it is the previous one
        std::fs::write(done_marker(&attempt_file(tmp.path(), 2)), b"").unwrap();
        assert_eq!(select(tmp.path(), false), Some(attempt_file(tmp.path(), 2)));
        assert_eq!(select(tmp.path(), true), Some(attempt_file(tmp.path(), 2)));
        // a first attempt still running has no previous one
        let one = tempfile::tempdir().unwrap();
        std::fs::write(attempt_file(one.path(), 0), b"").unwrap();
        assert_eq!(select(one.path(), true), None);
    }

    /// A pod's log directory as the agent leaves it: attempt 0 (terminated) and 1, with
    /// fixed times, a partial entry and both streams.
    fn fixture(root: &Path) {
        let dir = container_dir(root, "ns", "p", "uid1", "c");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            attempt_file(&dir, 0),
            "2026-01-01T00:00:00.000000000Z stdout F first-attempt\n",
        )
        .unwrap();
        std::fs::write(
            attempt_file(&dir, 1),
            "2026-01-01T00:00:01.000000000Z stdout F one\n\
             2026-01-01T00:00:02.000000000Z stderr F two\n\
             2026-01-01T00:00:03.000000000Z stdout P thr\n\
             2026-01-01T00:00:03.500000000Z stdout F ee\n",
        )
        .unwrap();
        // a container that has not written its first log file yet
        std::fs::create_dir_all(container_dir(root, "ns", "p", "uid1", "later")).unwrap();
    }

    /// `GET path` on the agent's server (no authentication) serving `root`.
    async fn get(root: &Path, path: &str) -> (u16, String) {
        use tokio::io::AsyncWriteExt;
        let app = crate::server::router(
            root.to_owned(),
            None,
            None,
            None,
            kcore_stream::Sessions::default(),
        );
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let task = tokio::spawn(async move { axum::serve(tcp, app).await });
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut text = Vec::new();
        s.read_to_end(&mut text).await.unwrap();
        task.abort();
        let text = String::from_utf8(text).unwrap();
        let code = text[9..12].parse().unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(!head.contains("chunked"), "{head}");
        (code, body.to_owned())
    }

    #[tokio::test]
    async fn the_endpoint_applies_each_option() {
        let tmp = tempfile::tempdir().unwrap();
        fixture(tmp.path());
        let base = "/containerLogs/ns/p/c";
        let cases = [
            ("", "one\ntwo\nthree\n"),
            ("?tailLines=1", "three\n"),
            ("?tailLines=0", ""),
            (
                "?tailLines=2&timestamps=true",
                "2026-01-01T00:00:02.000000000Z two\n2026-01-01T00:00:03.000000000Z three\n",
            ),
            ("?sinceTime=2026-01-01T00:00:02Z", "two\nthree\n"),
            // long before now
            ("?sinceSeconds=60", ""),
            ("?limitBytes=5", "one\nt"),
            ("?previous=true", "first-attempt\n"),
            (
                "?previous=true&timestamps=true",
                "2026-01-01T00:00:00.000000000Z first-attempt\n",
            ),
            // the attempt is over (no follower is left waiting)
            ("?follow=true&limitBytes=4", "one\n"),
        ];
        for (q, want) in cases {
            let (code, body) = get(tmp.path(), &format!("{base}{q}")).await;
            assert_eq!((code, body.as_str()), (200, want), "{q}");
        }
    }

    #[tokio::test]
    async fn the_endpoint_answers_as_the_kubelet_when_there_is_no_log() {
        let tmp = tempfile::tempdir().unwrap();
        fixture(tmp.path());
        let cases = [
            (
                "/containerLogs/ns/p/later",
                400,
                r#"container "later" in pod "p" is waiting to start - no logs yet"#,
            ),
            (
                "/containerLogs/ns/p/later?previous=true",
                400,
                r#"previous terminated container "later" in pod "p" not found"#,
            ),
            (
                "/containerLogs/ns/p/nope",
                404,
                r#"container "nope" not found in pod "p""#,
            ),
            ("/containerLogs/ns/q/c", 404, r#"pod "q" does not exist"#),
        ];
        for (path, code, msg) in cases {
            assert_eq!(
                get(tmp.path(), path).await,
                (code, msg.to_owned()),
                "{path}"
            );
        }
        // one attempt only: no previous one
        let dir = container_dir(tmp.path(), "ns", "p", "uid1", "c");
        std::fs::remove_file(attempt_file(&dir, 0)).unwrap();
        let (code, body) = get(tmp.path(), "/containerLogs/ns/p/c?previous=true").await;
        assert_eq!(
            (code, body.as_str()),
            (
                400,
                r#"previous terminated container "c" in pod "p" not found"#
            )
        );
    }

    #[tokio::test]
    async fn pump_splits_lines_and_follow_stops_when_done() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("0.log");
        let lf = Arc::new(Mutex::new(LogFile::open(&path, 1 << 20, 1).unwrap()));
        pump(&b"one\ntwo\nthr"[..], "stdout", lf.clone(), None).await;
        lf.lock().unwrap().finish();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(follow(path.clone(), 0, LogQuery::default(), None, tx));
        let mut got = Vec::new();
        while let Some(c) = rx.recv().await {
            got.extend(c);
        }
        assert_eq!(got, b"one\ntwo\nthr\n");
    }
}
