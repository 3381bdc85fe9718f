//! The embedded default backend: one redb file in a data directory.
//!
//! All writes go through one writer thread that drains every pending request into a single
//! transaction and commits it with one fsync (group commit), so concurrent writers share the
//! cost of durability. A write is acknowledged only after its transaction is durable.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use futures::future::BoxFuture;
use futures::FutureExt;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::hub::{watch_stream, WatchHub};
use super::wal::{Wal, WAL_BYTES};
use super::{
    Event, EventKind, KeyValue, RangeResult, Revisions, Storage, StorageError, WatchStream,
};

const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// Largest number of requests committed together.
const MAX_BATCH: usize = 1024;

/// How often the database itself is made durable (and the log restarted).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

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

struct Request {
    op: WriteOp,
    reply: oneshot::Sender<Result<Option<Event>, StorageError>>,
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
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Backend {
            op: "create data directory",
            message: format!("{}: {e}", dir.display()),
        })?;
        let path = dir.join("kcore.redb");
        let _span = tracing::info_span!("redb_open", path = %path.display()).entered();
        let db = Database::create(&path).map_err(|e| StorageError::Backend {
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
                .spawn(move || writer_loop(&db, &mut wal, &rx, &hub, &compacted, revision))
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

    fn submit(&self, op: WriteOp) -> BoxFuture<'_, Result<Option<Event>, StorageError>> {
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

fn encode_event(ev: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(match ev.kind {
        EventKind::Put => 0,
        EventKind::Delete => 1,
    });
    put_bytes(&mut out, ev.kv.key.as_bytes());
    put_bytes(
        &mut out,
        &encode_kv(ev.kv.create_revision, ev.kv.mod_revision, &ev.kv.value),
    );
    if let Some(prev) = &ev.prev {
        put_bytes(
            &mut out,
            &encode_kv(prev.create_revision, prev.mod_revision, &prev.value),
        );
    }
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

fn apply(
    tables: &mut Tables<'_>,
    rev: &mut u64,
    compacted: &mut u64,
    op: &WriteOp,
) -> Result<Result<Option<Event>, StorageError>, redb::Error> {
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
    let event = match op {
        WriteOp::Create { key, value } => {
            if current(kv, key)?.is_some() {
                return Ok(Err(StorageError::AlreadyExists { key: key.clone() }));
            }
            let r = *rev + 1;
            kv.insert(key.as_str(), encode_kv(r, r, value).as_slice())?;
            Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.clone(),
                    value: value.clone(),
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
            let prev = current(kv, key)?;
            if let Err(e) = check(&prev, key, *expected) {
                return Ok(Err(e));
            }
            let prev = prev.expect("checked above");
            let r = *rev + 1;
            kv.insert(
                key.as_str(),
                encode_kv(prev.create_revision, r, value).as_slice(),
            )?;
            Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: prev.create_revision,
                    mod_revision: r,
                },
                prev: Some(prev),
            }
        }
        WriteOp::Delete { key, expected } => {
            let prev = current(kv, key)?;
            if let Err(e) = check(&prev, key, *expected) {
                return Ok(Err(e));
            }
            let prev = prev.expect("checked above");
            let r = *rev + 1;
            kv.remove(key.as_str())?;
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
            if *revision > *rev {
                return Ok(Err(StorageError::FutureRevision {
                    requested: *revision,
                    current: *rev,
                }));
            }
            if *revision > *compacted {
                log.retain_in(..=*revision, |_, _| false)?;
                *compacted = *revision;
            }
            return Ok(Ok(None));
        }
    };
    *rev += 1;
    log.insert(*rev, encode_event(&event).as_slice())?;
    Ok(Ok(Some(event)))
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

/// One log frame holding a batch's events.
fn frame(events: &[&Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for ev in events {
        put_bytes(&mut out, &encode_event(ev));
    }
    out
}

/// A durable commit of everything committed so far.
fn checkpoint(db: &Database) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.commit()?;
    Ok(())
}

fn writer_loop(
    db: &Database,
    wal: &mut Wal,
    rx: &mpsc::Receiver<Request>,
    hub: &WatchHub,
    compacted_shared: &AtomicU64,
    mut revision: u64,
) {
    let mut last_checkpoint = std::time::Instant::now();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let _span = tracing::debug_span!("redb_commit", ops = batch.len()).entered();
        let mut next = revision;
        let mut compacted = compacted_shared.load(Ordering::SeqCst);
        let mut results = Vec::with_capacity(batch.len());
        let outcome = (|| -> Result<(), redb::Error> {
            let mut txn = db.begin_write()?;
            // Made durable by the log below, and by the next checkpoint.
            txn.set_durability(Durability::None)?;
            {
                let mut tables = (txn.open_table(KV)?, txn.open_table(LOG)?);
                for req in &batch {
                    results.push(apply(&mut tables, &mut next, &mut compacted, &req.op)?);
                }
                let mut meta = txn.open_table(META)?;
                meta.insert("revision", next)?;
                meta.insert("compacted", compacted)?;
            }
            txn.commit()?;
            Ok(())
        })();
        let outcome = outcome.map_err(|e| StorageError::Backend {
            op: "commit",
            message: e.to_string(),
        });
        // Nothing is acknowledged before the batch's events are durable in the log.
        let outcome = outcome.and_then(|()| {
            let events: Vec<&Event> = results
                .iter()
                .filter_map(|r| r.as_ref().ok().and_then(Option::as_ref))
                .collect();
            if events.is_empty() {
                return Ok(());
            }
            match wal.append(&frame(&events)) {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::error!(error = %e, "log append failed; checkpointing instead");
                    checkpoint(db).map_err(|c| StorageError::Backend {
                        op: "commit",
                        message: format!("{e}; checkpoint: {c}"),
                    })?;
                    last_checkpoint = std::time::Instant::now();
                    wal.reset();
                    Ok(())
                }
            }
        });
        match outcome {
            Ok(()) => {
                revision = next;
                compacted_shared.store(compacted, Ordering::SeqCst);
                hub.publish(
                    results
                        .iter()
                        .filter_map(|r| r.as_ref().ok().cloned().flatten()),
                );
                for (req, res) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(res);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "redb commit failed");
                for req in batch {
                    let _ = req.reply.send(Err(StorageError::Backend {
                        op: "commit",
                        message: e.to_string(),
                    }));
                }
            }
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY || wal.len() >= WAL_BYTES / 2 {
            let _span = tracing::debug_span!("redb_checkpoint").entered();
            match checkpoint(db) {
                Ok(()) => {
                    wal.reset();
                    last_checkpoint = std::time::Instant::now();
                }
                Err(e) => tracing::error!(error = %e, "checkpoint failed; keeping the log"),
            }
        }
    }
    // Shutting down: leave a durable database and an empty log.
    if checkpoint(db).is_ok() {
        wal.reset();
    }
}

fn expect_event(r: Result<Option<Event>, StorageError>) -> Result<KeyValue, StorageError> {
    match r? {
        Some(ev) => Ok(ev.kv),
        None => Err(StorageError::Backend {
            op: "write",
            message: "writer returned no event".into(),
        }),
    }
}

impl Storage for RedbStorage {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, StorageError>> {
        let key = key.to_owned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend("get"))?;
            let kv = txn.open_table(KV).map_err(backend("get"))?;
            let got = kv.get(key.as_str()).map_err(backend("get"))?;
            Ok(got.map(|g| decode_kv(&key, g.value())))
        })
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
