//! The embedded default backend: one redb file in a data directory.
//!
//! All writes go through one applier thread that drains every pending request into a single
//! (non-durable) redb transaction and encodes the batch's events once, into the log frame
//! that also feeds redb's history table. A second thread, the syncer, owns the write-ahead
//! log: it appends every frame that is ready with one write and one `fdatasync` (group
//! commit), then publishes the events to watchers and acknowledges them. The two overlap:
//! the next batch is applied while the previous one is being synced, and no lock is held
//! across the sync. A write is acknowledged only after its events are durable (in the log,
//! or in the database by a checkpoint).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::hub::{watch_stream, WatchHub};
use super::wal::{io_err, Wal, WAL_BYTES};
use super::{
    Event, EventKind, KeyValue, RangeResult, Revisions, Storage, StorageError, WatchStream,
};

const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// Largest number of requests committed together.
const MAX_BATCH: usize = 1024;

/// redb's page cache (its read cache and write buffer together). redb's default is 1 GiB,
/// which a large cluster fills: the API server already keeps every current object in its
/// watch cache, so redb's copy of hot pages mostly duplicates it. A heap profile of 5,000
/// simulated pods had a third of the process's memory in redb's cache. Pages it lets go
/// are read again through the kernel's page cache.
const CACHE_BYTES: usize = 128 << 20;

/// When the embedded store takes checkpoints: durable commits of its database, after
/// which its write-ahead log starts over.
///
/// Writes are durable once their log entry is synced, so checkpoints only bound how much
/// log a restart replays. Each one stalls the writer while the database file syncs, so
/// taking them often costs write throughput and tail latency.
///
/// ```
/// use kcore_apiserver::{Checkpoints, RedbStorage};
///
/// // Replay at most about 1 MiB of log after a crash.
/// let c = Checkpoints::default().after_log_bytes(1 << 20);
/// let dir = tempfile::tempdir()?;
/// let _store = RedbStorage::open_with(dir.path(), c)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoints {
    idle: Duration,
    bytes: u64,
    every: Duration,
}

impl Default for Checkpoints {
    fn default() -> Self {
        Self {
            idle: CHECKPOINT_IDLE,
            bytes: CHECKPOINT_BYTES,
            every: CHECKPOINT_EVERY,
        }
    }
}

impl Checkpoints {
    /// Checkpoint once this many bytes were logged since the last one (default 48 MiB,
    /// within the log's preallocation).
    pub fn after_log_bytes(mut self, bytes: u64) -> Self {
        self.bytes = bytes.max(1);
        self
    }

    /// Checkpoint when no write came for this long (default 1 s).
    pub fn when_idle_for(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Under a steady trickle of writes, checkpoint at least this often (default 30 s).
    pub fn at_least_every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }
}

/// A checkpoint (a durable redb commit, after which the log restarts) is taken when no
/// write has come for this long...
const CHECKPOINT_IDLE: Duration = Duration::from_secs(1);

/// ... or when the log has grown by this many bytes since the last one. Each checkpoint
/// stalls the applier while redb writes and syncs its dirty pages, so they are kept rare
/// (at 40k creates/s, 3 MiB meant a quarter of the applier's time in checkpoints). The
/// log file starts at [`WAL_BYTES`] and grows in such steps (a write and a sync of zeros
/// on the acknowledgement path) only until its first checkpoint: it keeps its size after,
/// and a store that is seldom written never grows it ...
const CHECKPOINT_BYTES: u64 = WAL_BYTES * 3;

/// ... or, under a steady trickle of writes, this long after the last one. A checkpoint
/// blocks the applier while redb syncs its file (milliseconds, or far more when the disk
/// is busy), so it is kept off the busy path: the log alone makes writes durable.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

fn backend<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StorageError {
    move |e| StorageError::Backend {
        op,
        message: e.into().to_string(),
    }
}

enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Option<u64>,
    },
    Delete {
        key: String,
        expected: Option<u64>,
    },
    Compact {
        revision: u64,
    },
}

/// What one write produced: its event (none for a compaction), or why it failed.
type Outcome = Result<Option<Arc<Event>>, StorageError>;

type Reply = oneshot::Sender<Outcome>;

struct Request {
    op: WriteOp,
    reply: Reply,
}

/// What the applier hands to the syncer, in commit order.
enum Synced {
    /// A committed (not yet durable) batch: its log frame payload and its answers.
    Batch {
        frame: Vec<u8>,
        answers: Vec<(Reply, Outcome)>,
    },
    /// A checkpoint made every batch sent before it durable in the database.
    Checkpointed,
}

/// A [`Storage`] in a redb database file, durable on every acknowledged write.
pub struct RedbStorage {
    path: PathBuf,
    db: Arc<Database>,
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    hub: Arc<WatchHub>,
    compacted: Arc<AtomicU64>,
}

impl std::fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStorage")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbStorage {
    /// Opens (or creates) the store `kcore.redb` inside `dir`, creating `dir` if needed.
    ///
    /// The stored objects include Secrets: `dir` is kept 0700 (an existing one is
    /// tightened) and the database and its log 0600, whatever the umask.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_with(dir, Checkpoints::default())
    }

    /// Opens (or creates) the store like [`RedbStorage::open`], with its own checkpoint
    /// policy.
    pub fn open_with(dir: impl AsRef<Path>, tuning: Checkpoints) -> Result<Self, StorageError> {
        let dir = dir.as_ref();
        let tightened = kcore_statedir::ensure_dir(dir, kcore_statedir::PRIVATE_DIR)
            .map_err(io_err("create data directory", dir))?;
        if let Some(t) = tightened {
            tracing::info!(%t, "tightened the mode of the store's directory");
        }
        let path = dir.join("kcore.redb");
        let _span = tracing::info_span!("redb_open", path = %path.display()).entered();
        // redb creates its file with the umask's mode: make it (or keep it) 0600 first
        kcore_statedir::open(
            &path,
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            kcore_statedir::PRIVATE_FILE,
        )
        .map_err(io_err("open", &path))?;
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| StorageError::Backend {
                op: "open",
                message: format!("{}: {e}", path.display()),
            })?;
        let txn = db.begin_write().map_err(backend("open"))?;
        let (revision, compacted) = {
            txn.open_table(KV).map_err(backend("open"))?;
            txn.open_table(LOG).map_err(backend("open"))?;
            let meta = txn.open_table(META).map_err(backend("open"))?;
            let get = |k: &str| -> Result<u64, StorageError> {
                Ok(meta
                    .get(k)
                    .map_err(backend("open"))?
                    .map(|g| g.value())
                    .unwrap_or(0))
            };
            (get("revision")?, get("compacted")?)
        };
        txn.commit().map_err(backend("open"))?;
        let (mut wal, frames) = Wal::open(&dir.join("kcore.wal"))?;
        let revision = replay(&db, revision, &frames)?;
        wal.reset();
        let db = Arc::new(db);
        let hub = Arc::new(WatchHub::new(revision, 10_000, 65_536));
        let compacted = Arc::new(AtomicU64::new(compacted));
        let (tx, rx) = mpsc::channel();
        let writer = {
            let (db, hub, compacted) = (db.clone(), hub.clone(), compacted.clone());
            std::thread::Builder::new()
                .name("kcore-redb-writer".into())
                .spawn(move || writer_loop(&db, wal, &rx, &hub, &compacted, revision, tuning))
                .map_err(|e| StorageError::Backend {
                    op: "spawn writer",
                    message: e.to_string(),
                })?
        };
        Ok(Self {
            path,
            db,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            hub,
            compacted,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn submit(&self, op: WriteOp) -> BoxFuture<'_, Outcome> {
        let (reply, rx) = oneshot::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|tx| tx.send(Request { op, reply }).is_ok())
            .unwrap_or(false);
        async move {
            if !sent {
                return Err(StorageError::Closed);
            }
            rx.await.map_err(|_| StorageError::Closed)?
        }
        .boxed()
    }

    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StorageError> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, StorageError>> {
        let db = self.db.clone();
        async move {
            tokio::task::spawn_blocking(move || f(&db))
                .await
                .map_err(|e| StorageError::Backend {
                    op: "read",
                    message: e.to_string(),
                })?
        }
        .boxed()
    }
}

impl Drop for RedbStorage {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = w.join();
        }
    }
}

fn encode_kv(create: u64, modr: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modr.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_kv(key: &str, raw: &[u8]) -> KeyValue {
    let (create, rest) = raw.split_at(8);
    let (modr, value) = rest.split_at(8);
    KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision: u64::from_le_bytes(create.try_into().unwrap_or_default()),
        mod_revision: u64::from_le_bytes(modr.try_into().unwrap_or_default()),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

/// Appends `kv` as length-prefixed [`encode_kv`] bytes; returns where those bytes are.
fn put_kv(out: &mut Vec<u8>, kv: &KeyValue) -> std::ops::Range<usize> {
    out.extend_from_slice(&(16 + kv.value.len() as u64).to_le_bytes());
    let start = out.len();
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.value);
    start..out.len()
}

/// Appends the encoding of `ev`; returns where the encoding of its new `kv` is.
fn encode_event_into(out: &mut Vec<u8>, ev: &Event) -> std::ops::Range<usize> {
    out.push(match ev.kind {
        EventKind::Put => 0,
        EventKind::Delete => 1,
    });
    put_bytes(out, ev.kv.key.as_bytes());
    let kv = put_kv(out, &ev.kv);
    if let Some(prev) = &ev.prev {
        put_kv(out, prev);
    }
    kv
}

fn encode_event(ev: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    encode_event_into(&mut out, ev);
    out
}

fn decode_event(raw: &[u8]) -> Option<Event> {
    fn take<'a>(raw: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = usize::try_from(u64::from_le_bytes(raw.get(..8)?.try_into().ok()?)).ok()?;
        let b = raw.get(8..8 + len)?;
        *raw = &raw[8 + len..];
        Some(b)
    }
    let kind = match raw.first()? {
        0 => EventKind::Put,
        _ => EventKind::Delete,
    };
    let mut rest = &raw[1..];
    let key = std::str::from_utf8(take(&mut rest)?).ok()?.to_owned();
    let kv = decode_kv(&key, take(&mut rest)?);
    let prev = if rest.is_empty() {
        None
    } else {
        Some(decode_kv(&key, take(&mut rest)?))
    };
    Some(Event { kind, kv, prev })
}

type Tables<'t> = (
    redb::Table<'t, &'static str, &'static [u8]>,
    redb::Table<'t, u64, &'static [u8]>,
);

/// Applies one write to the open tables. The event is encoded once, appended to `frame`
/// (the batch's log payload: length-prefixed events) and inserted from there into the
/// history table (and, for a put, its new value into the key table).
fn apply(
    tables: &mut Tables<'_>,
    rev: &mut u64,
    compacted: &mut u64,
    op: WriteOp,
    frame: &mut Vec<u8>,
) -> Result<Outcome, redb::Error> {
    let (kv, log) = tables;
    let current = |kv: &redb::Table<'_, &str, &[u8]>, key: &str| -> Result<_, redb::Error> {
        Ok(kv.get(key)?.map(|g| decode_kv(key, g.value())))
    };
    let check = |prev: &Option<KeyValue>, key: &str, expected: Option<u64>| match (prev, expected) {
        (None, _) => Err(StorageError::NotFound { key: key.into() }),
        (Some(p), Some(e)) if p.mod_revision != e => Err(StorageError::Conflict {
            key: key.into(),
            expected: e,
            current: p.mod_revision,
        }),
        _ => Ok(()),
    };
    let r = *rev + 1;
    let event = match op {
        WriteOp::Create { key, value } => {
            if kv.get(key.as_str())?.is_some() {
                return Ok(Err(StorageError::AlreadyExists { key }));
            }
            Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key,
                    value,
                    create_revision: r,
                    mod_revision: r,
                },
                prev: None,
            }
        }
        WriteOp::Update {
            key,
            value,
            expected,
        } => {
            let prev = current(kv, &key)?;
            if let Err(e) = check(&prev, &key, expected) {
                return Ok(Err(e));
            }
            let prev = prev.expect("checked above");
            Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key,
                    value,
                    create_revision: prev.create_revision,
                    mod_revision: r,
                },
                prev: Some(prev),
            }
        }
        WriteOp::Delete { key, expected } => {
            let prev = current(kv, &key)?;
            if let Err(e) = check(&prev, &key, expected) {
                return Ok(Err(e));
            }
            let prev = prev.expect("checked above");
            Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    mod_revision: r,
                    ..prev.clone()
                },
                prev: Some(prev),
            }
        }
        WriteOp::Compact { revision } => {
            if revision > *rev {
                return Ok(Err(StorageError::FutureRevision {
                    requested: revision,
                    current: *rev,
                }));
            }
            if revision > *compacted {
                log.retain_in(..=revision, |_, _| false)?;
                *compacted = revision;
            }
            return Ok(Ok(None));
        }
    };
    let at = frame.len();
    frame.extend_from_slice(&[0; 8]);
    let new_kv = encode_event_into(frame, &event);
    let len = (frame.len() - at - 8) as u64;
    frame[at..at + 8].copy_from_slice(&len.to_le_bytes());
    match event.kind {
        EventKind::Put => kv.insert(event.kv.key.as_str(), &frame[new_kv])?,
        EventKind::Delete => kv.remove(event.kv.key.as_str())?,
    };
    log.insert(r, &frame[at + 8..])?;
    *rev = r;
    Ok(Ok(Some(Arc::new(event))))
}

/// Applies the logged events newer than `revision` (the database's durable revision) and
/// makes them durable; returns the revision reached.
fn replay(db: &Database, mut revision: u64, frames: &[Vec<u8>]) -> Result<u64, StorageError> {
    let mut events = Vec::new();
    for f in frames {
        let mut rest = f.as_slice();
        while !rest.is_empty() {
            let Some(len) = rest
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .and_then(|l| usize::try_from(l).ok())
            else {
                break;
            };
            let Some(ev) = rest.get(8..8 + len).and_then(decode_event) else {
                break;
            };
            rest = &rest[8 + len..];
            events.push(ev);
        }
    }
    let start = revision;
    let txn = db.begin_write().map_err(backend("replay log"))?;
    {
        let mut kv = txn.open_table(KV).map_err(backend("replay log"))?;
        let mut log = txn.open_table(LOG).map_err(backend("replay log"))?;
        for ev in events {
            let r = ev.revision();
            if r <= revision {
                continue; // already in the database
            }
            if r != revision + 1 {
                tracing::warn!(
                    expected = revision + 1,
                    found = r,
                    "gap in the log; replay stops"
                );
                break;
            }
            match ev.kind {
                EventKind::Put => kv.insert(
                    ev.kv.key.as_str(),
                    encode_kv(ev.kv.create_revision, ev.kv.mod_revision, &ev.kv.value).as_slice(),
                ),
                EventKind::Delete => kv.remove(ev.kv.key.as_str()),
            }
            .map_err(backend("replay log"))?;
            log.insert(r, encode_event(&ev).as_slice())
                .map_err(backend("replay log"))?;
            revision = r;
        }
        txn.open_table(META)
            .map_err(backend("replay log"))?
            .insert("revision", revision)
            .map_err(backend("replay log"))?;
    }
    txn.commit().map_err(backend("replay log"))?;
    if revision > start {
        tracing::info!(from = start, to = revision, "replayed the write-ahead log");
    }
    Ok(revision)
}

/// A durable commit of everything committed so far.
fn checkpoint(db: &Database) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.commit()?;
    Ok(())
}

/// Applies one batch in one non-durable transaction; returns the log payload and the
/// per-request results (or the error that aborted the transaction).
fn commit_batch(
    db: &Database,
    ops: Vec<WriteOp>,
    revision: &mut u64,
    compacted: &mut u64,
) -> Result<(Vec<u8>, Vec<Outcome>), redb::Error> {
    let mut next = *revision;
    let mut comp = *compacted;
    let mut frame = Vec::new();
    let mut results = Vec::with_capacity(ops.len());
    let mut txn = db.begin_write()?;
    // Made durable by the log (the syncer), and by the next checkpoint.
    txn.set_durability(Durability::None)?;
    {
        let mut tables = (txn.open_table(KV)?, txn.open_table(LOG)?);
        for op in ops {
            results.push(apply(&mut tables, &mut next, &mut comp, op, &mut frame)?);
        }
        let mut meta = txn.open_table(META)?;
        meta.insert("revision", next)?;
        meta.insert("compacted", comp)?;
    }
    txn.commit()?;
    *revision = next;
    *compacted = comp;
    Ok((frame, results))
}

/// The applier: drains requests into batches, commits each to redb without syncing and
/// hands it to the syncer; takes a checkpoint when writes pause (see [`CHECKPOINT_IDLE`]).
fn writer_loop(
    db: &Arc<Database>,
    wal: Wal,
    rx: &mpsc::Receiver<Request>,
    hub: &Arc<WatchHub>,
    compacted_shared: &AtomicU64,
    mut revision: u64,
    tuning: Checkpoints,
) {
    let (to_sync, sync_rx) = mpsc::channel();
    let syncer = {
        let (db, hub) = (db.clone(), hub.clone());
        std::thread::Builder::new()
            .name("kcore-redb-sync".into())
            .spawn(move || sync_loop(&db, wal, &sync_rx, &hub))
    };
    let syncer = match syncer {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the log syncer");
            for req in rx.iter() {
                let _ = req.reply.send(Err(StorageError::Closed));
            }
            return;
        }
    };
    let mut last_checkpoint = Instant::now();
    let mut logged: u64 = 0;
    let take_checkpoint = |logged: &mut u64, last: &mut Instant| {
        let _span = tracing::debug_span!("redb_checkpoint").entered();
        match checkpoint(db) {
            Ok(()) => {
                let _ = to_sync.send(Synced::Checkpointed);
                *last = Instant::now();
                *logged = 0;
            }
            Err(e) => tracing::error!(error = %e, "checkpoint failed; keeping the log"),
        }
    };
    loop {
        let first = match rx.recv_timeout(tuning.idle) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if logged > 0 {
                    take_checkpoint(&mut logged, &mut last_checkpoint);
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let _span = tracing::debug_span!("redb_commit", ops = batch.len()).entered();
        let (ops, replies): (Vec<WriteOp>, Vec<Reply>) =
            batch.into_iter().map(|r| (r.op, r.reply)).unzip();
        let mut compacted = compacted_shared.load(Ordering::SeqCst);
        match commit_batch(db, ops, &mut revision, &mut compacted) {
            Ok((frame, results)) => {
                compacted_shared.store(compacted, Ordering::SeqCst);
                logged += frame.len() as u64;
                let answers = replies.into_iter().zip(results).collect();
                if to_sync.send(Synced::Batch { frame, answers }).is_err() {
                    tracing::error!("the log syncer stopped");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "redb commit failed");
                for reply in replies {
                    let _ = reply.send(Err(StorageError::Backend {
                        op: "commit",
                        message: e.to_string(),
                    }));
                }
            }
        }
        if logged >= tuning.bytes || (logged > 0 && last_checkpoint.elapsed() >= tuning.every) {
            take_checkpoint(&mut logged, &mut last_checkpoint);
        }
    }
    // Shutting down: leave a durable database and an empty log.
    take_checkpoint(&mut logged, &mut last_checkpoint);
    drop(to_sync);
    let _ = syncer.join();
}

/// The syncer: makes committed batches durable in the log, many at a time with one write
/// and one sync, then publishes their events in commit order and answers the writers.
fn sync_loop(db: &Database, mut wal: Wal, rx: &mpsc::Receiver<Synced>, hub: &WatchHub) {
    while let Ok(first) = rx.recv() {
        let mut items = vec![first];
        items.extend(rx.try_iter());
        // Batches sent before the last checkpoint are durable in the database: they need
        // no log, and the log restarts.
        let covered = items
            .iter()
            .rposition(|i| matches!(i, Synced::Checkpointed))
            .map_or(0, |at| at + 1);
        if covered > 0 {
            wal.reset();
        }
        let frames: Vec<&[u8]> = items[covered..]
            .iter()
            .filter_map(|i| match i {
                Synced::Batch { frame, .. } if !frame.is_empty() => Some(frame.as_slice()),
                _ => None,
            })
            .collect();
        let mut failure = None;
        if !frames.is_empty() {
            let _span = tracing::debug_span!("redb_log_sync", batches = frames.len()).entered();
            if let Err(e) = wal.append(&frames) {
                tracing::error!(error = %e, "log append failed; checkpointing instead");
                match checkpoint(db) {
                    Ok(()) => wal.reset(),
                    Err(c) => failure = Some(format!("{e}; checkpoint: {c}")),
                }
            }
        }
        for (n, item) in items.into_iter().enumerate() {
            let Synced::Batch { answers, .. } = item else {
                continue;
            };
            match &failure {
                Some(message) if n >= covered => {
                    for (reply, _) in answers {
                        let _ = reply.send(Err(StorageError::Backend {
                            op: "commit",
                            message: message.clone(),
                        }));
                    }
                }
                _ => {
                    hub.publish(
                        answers
                            .iter()
                            .filter_map(|(_, r)| r.as_ref().ok().cloned().flatten()),
                    );
                    for (reply, res) in answers {
                        let _ = reply.send(res);
                    }
                }
            }
        }
    }
}

fn expect_event(r: Outcome) -> Result<KeyValue, StorageError> {
    match r? {
        Some(ev) => Ok(Arc::try_unwrap(ev).map_or_else(|ev| ev.kv.clone(), |ev| ev.kv)),
        None => Err(StorageError::Backend {
            op: "write",
            message: "writer returned no event".into(),
        }),
    }
}

impl Storage for RedbStorage {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, StorageError>> {
        // A point read is a few page lookups, mostly in redb's cache: cheaper in place than
        // the hand-off to a blocking thread and back.
        let got = (|| {
            let txn = self.db.begin_read().map_err(backend("get"))?;
            let kv = txn.open_table(KV).map_err(backend("get"))?;
            let got = kv.get(key).map_err(backend("get"))?;
            Ok(got.map(|g| decode_kv(key, g.value())))
        })();
        futures::future::ready(got).boxed()
    }

    fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RangeResult, StorageError>> {
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend("range"))?;
            let revision = txn
                .open_table(META)
                .map_err(backend("range"))?
                .get("revision")
                .map_err(backend("range"))?
                .map(|g| g.value())
                .unwrap_or(0);
            let kv = txn.open_table(KV).map_err(backend("range"))?;
            let start = match &start_after {
                Some(s) if s.as_str() >= prefix.as_str() => s.clone(),
                _ => prefix.clone(),
            };
            let mut out = RangeResult {
                revision,
                ..Default::default()
            };
            for item in kv.range(start.as_str()..).map_err(backend("range"))? {
                let (k, v) = item.map_err(backend("range"))?;
                let key = k.value();
                if !key.starts_with(&prefix) {
                    break;
                }
                if start_after.as_deref() == Some(key) {
                    continue;
                }
                if limit > 0 && out.kvs.len() == limit {
                    out.more = true;
                    break;
                }
                out.kvs.push(decode_kv(key, v.value()));
            }
            Ok(out)
        })
    }

    fn create(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<KeyValue, StorageError>> {
        let f = self.submit(WriteOp::Create {
            key: key.to_owned(),
            value,
        });
        async move { expect_event(f.await) }.boxed()
    }

    fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: Option<u64>,
    ) -> BoxFuture<'_, Result<KeyValue, StorageError>> {
        let f = self.submit(WriteOp::Update {
            key: key.to_owned(),
            value,
            expected: expected_revision,
        });
        async move { expect_event(f.await) }.boxed()
    }

    fn delete(
        &self,
        key: &str,
        expected_revision: Option<u64>,
    ) -> BoxFuture<'_, Result<KeyValue, StorageError>> {
        let f = self.submit(WriteOp::Delete {
            key: key.to_owned(),
            expected: expected_revision,
        });
        async move { expect_event(f.await) }.boxed()
    }

    fn watch(
        &self,
        prefix: &str,
        after_revision: u64,
    ) -> BoxFuture<'_, Result<WatchStream, StorageError>> {
        let prefix = prefix.to_owned();
        async move {
            let compacted = self.compacted.load(Ordering::SeqCst);
            if after_revision < compacted {
                return Err(StorageError::Compacted {
                    requested: after_revision,
                    compacted,
                });
            }
            let sub = self.hub.subscribe(after_revision);
            let backlog = match sub.backlog {
                Some(b) => b,
                None => {
                    let last = sub.last;
                    self.read(move |db| {
                        let txn = db.begin_read().map_err(backend("watch"))?;
                        let log = txn.open_table(LOG).map_err(backend("watch"))?;
                        let compacted = txn
                            .open_table(META)
                            .map_err(backend("watch"))?
                            .get("compacted")
                            .map_err(backend("watch"))?
                            .map(|g| g.value())
                            .unwrap_or(0);
                        if after_revision < compacted {
                            return Err(StorageError::Compacted {
                                requested: after_revision,
                                compacted,
                            });
                        }
                        let mut out = Vec::new();
                        for item in log
                            .range(after_revision + 1..=last)
                            .map_err(backend("watch"))?
                        {
                            let (_, v) = item.map_err(backend("watch"))?;
                            if let Some(ev) = decode_event(v.value()) {
                                out.push(Arc::new(ev));
                            }
                        }
                        Ok(out)
                    })
                    .await?
                }
            };
            Ok(watch_stream(prefix, backlog, sub.rx, sub.last))
        }
        .boxed()
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StorageError>> {
        let f = self.submit(WriteOp::Compact { revision });
        async move { f.await.map(|_| ()) }.boxed()
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revisions, StorageError>> {
        async move {
            Ok(Revisions {
                current: self.hub.last(),
                compacted: self.compacted.load(Ordering::SeqCst),
            })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// Checkpoints after every few batches, so that tests cross many of them.
    fn busy_tuning() -> Checkpoints {
        Checkpoints::default()
            .after_log_bytes(2048)
            .when_idle_for(Duration::from_millis(5))
            .at_least_every(Duration::from_millis(20))
    }

    fn temp_dir() -> tempfile::TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        tempfile::Builder::new()
            .prefix(&format!(
                "kcore-redb-{}-{}-",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ))
            .tempdir()
            .expect("temp dir")
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
    }

    #[tokio::test]
    async fn the_store_is_readable_by_its_owner_only_and_an_older_one_is_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let base = temp_dir();
        let dir = base.path().join("apiserver");
        {
            let s = RedbStorage::open(&dir).expect("open");
            s.create("/k/secret", b"s3cret".to_vec())
                .await
                .expect("create");
        }
        let files = [dir.join("kcore.redb"), dir.join("kcore.wal")];
        assert_eq!(mode(&dir), 0o700);
        for f in &files {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
        // as an older version left them
        let open_up = |p: &Path, m| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
        };
        open_up(&dir, 0o755);
        for f in &files {
            open_up(f, 0o644);
        }
        let s = RedbStorage::open(&dir).expect("reopen");
        assert_eq!(
            s.get("/k/secret").await.expect("get").map(|kv| kv.value),
            Some(b"s3cret".to_vec())
        );
        assert_eq!(mode(&dir), 0o700);
        for f in &files {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_across_checkpoints_keep_order_and_survive_reopen() {
        let dir = temp_dir();
        let (writers, per) = (8u64, 150u64);
        let mut revs = {
            let s = Arc::new(RedbStorage::open_with(dir.path(), busy_tuning()).expect("open"));
            let mut w = s.watch("/k/", 0).await.expect("watch");
            let mut tasks = Vec::new();
            for t in 0..writers {
                let s = s.clone();
                tasks.push(tokio::spawn(async move {
                    let mut out = Vec::new();
                    for i in 0..per {
                        let key = format!("/k/{t}-{i:04}");
                        let kv = s
                            .create(&key, key.clone().into_bytes())
                            .await
                            .expect("create");
                        out.push((key, kv.mod_revision));
                    }
                    out
                }));
            }
            let mut revs = Vec::new();
            for t in tasks {
                revs.extend(t.await.expect("writer"));
            }
            // Watchers see every write once, in revision order.
            let mut seen = Vec::new();
            while seen.len() < revs.len() {
                let ev = w.next().await.expect("event").expect("ok");
                seen.push(ev.revision());
            }
            assert!(seen.windows(2).all(|p| p[0] < p[1]), "watch out of order");
            revs
        };
        revs.sort_by_key(|(_, r)| *r);
        let expected: Vec<u64> = (1..=writers * per).collect();
        assert_eq!(revs.iter().map(|(_, r)| *r).collect::<Vec<_>>(), expected);
        let s = RedbStorage::open(dir.path()).expect("reopen");
        for (key, rev) in &revs {
            let kv = s.get(key).await.expect("get").expect("present");
            assert_eq!(
                (kv.mod_revision, kv.value.as_slice()),
                (*rev, key.as_bytes())
            );
        }
    }

    #[test]
    fn event_encoding_round_trips() {
        let kv = KeyValue {
            key: "/a/b".into(),
            value: b"v2".to_vec(),
            create_revision: 3,
            mod_revision: 9,
        };
        for prev in [
            None,
            Some(KeyValue {
                value: b"v1".to_vec(),
                mod_revision: 4,
                ..kv.clone()
            }),
        ] {
            for kind in [EventKind::Put, EventKind::Delete] {
                let ev = Event {
                    kind,
                    kv: kv.clone(),
                    prev: prev.clone(),
                };
                assert_eq!(decode_event(&encode_event(&ev)), Some(ev));
            }
        }
    }
}
