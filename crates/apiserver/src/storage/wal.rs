//! The write-ahead log of the embedded backend.
//!
//! A durable redb commit rewrites B-tree pages all over its file and syncs them, which
//! costs several milliseconds per commit. Instead each group commit is applied to redb
//! without syncing, and the events of every batch committed since the last sync are
//! appended to this log as one checksummed frame, with one write and one `fdatasync`,
//! before any of them is acknowledged. The log file is preallocated (written with zeros,
//! and grown the same way in steps when it fills), so that sync only flushes data blocks.
//! Now and then (when writes pause, after 48 MiB of log, or every 30 s) a durable redb
//! commit (a checkpoint) makes everything before it durable in the database itself, and
//! the log is reused from its start. On open, frames newer than the database's durable
//! revision are replayed.
//!
//! Frame: `len: u32 LE | checksum: u64 LE (FNV-1a of len and payload) | payload`, the
//! payload being length-prefixed encoded events. A zero length or a bad checksum ends the
//! log (a torn frame was never acknowledged). Frames left from before a checkpoint hold
//! revisions the database already has and are skipped.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::StorageError;

/// Bytes preallocated for the log when it is created, and the step it grows by.
pub(crate) const WAL_BYTES: u64 = 16 << 20;

fn checksum(len: u32, payload: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in len.to_le_bytes().iter().chain(payload) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub(super) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |e| StorageError::Backend {
        op,
        message: format!("{}: {e}", path.display()),
    }
}

/// An open log, positioned where the next frame goes.
pub(crate) struct Wal {
    path: PathBuf,
    file: File,
    pos: u64,
    /// The file's size: zeros (or stale frames) up to here.
    allocated: u64,
}

impl Wal {
    /// Opens (or creates and preallocates) the log; returns it and the payloads of the
    /// valid frames it holds, oldest first.
    pub(crate) fn open(path: &Path) -> Result<(Self, Vec<Vec<u8>>), StorageError> {
        let mut file = kcore_statedir::open(
            path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            kcore_statedir::PRIVATE_FILE,
        )
        .map_err(io_err("open log", path))?;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw)
            .map_err(io_err("read log", path))?;
        let mut frames = Vec::new();
        let mut at = 0usize;
        while let Some(head) = raw.get(at..at + 12) {
            let len = u32::from_le_bytes(head[..4].try_into().unwrap_or_default());
            let sum = u64::from_le_bytes(head[4..].try_into().unwrap_or_default());
            let Some(payload) = usize::try_from(len)
                .ok()
                .filter(|l| *l > 0)
                .and_then(|l| raw.get(at + 12..at + 12 + l))
            else {
                break;
            };
            if checksum(len, payload) != sum {
                break;
            }
            frames.push(payload.to_vec());
            at += 12 + payload.len();
        }
        let mut wal = Self {
            path: path.to_owned(),
            file,
            pos: 0,
            allocated: raw.len() as u64,
        };
        wal.reserve(WAL_BYTES)?;
        Ok((wal, frames))
    }

    /// Makes the file at least `size` bytes long, with real zeros (not a sparse hole), so
    /// appends do not change the file's size or extents and `fdatasync` has no metadata to
    /// write.
    fn reserve(&mut self, size: u64) -> Result<(), StorageError> {
        if size <= self.allocated {
            return Ok(());
        }
        let target = size.div_ceil(WAL_BYTES) * WAL_BYTES;
        let zeros = vec![0u8; usize::try_from(target - self.allocated).unwrap_or(0)];
        self.file
            .write_all_at(&zeros, self.allocated)
            .map_err(io_err("preallocate log", &self.path))?;
        self.file
            .sync_all()
            .map_err(io_err("sync log", &self.path))?;
        self.allocated = target;
        Ok(())
    }

    /// Bytes written since the last [`Wal::reset`].
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.pos
    }

    /// Appends one frame whose payload is `parts` joined, with one write, and waits until
    /// it is on disk.
    pub(crate) fn append(&mut self, parts: &[&[u8]]) -> Result<(), StorageError> {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(size).map_err(|_| StorageError::Backend {
            op: "append to log",
            message: format!("a batch of {size} bytes is too large"),
        })?;
        let mut frame = Vec::with_capacity(12 + size + 12);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&[0; 8]);
        for p in parts {
            frame.extend_from_slice(p);
        }
        let sum = checksum(len, &frame[12..]);
        frame[4..12].copy_from_slice(&sum.to_le_bytes());
        // A zero header after the frame ends the log there, whatever older frames follow.
        frame.extend_from_slice(&[0u8; 12]);
        self.reserve(self.pos + frame.len() as u64)?;
        self.file
            .write_all_at(&frame, self.pos)
            .map_err(io_err("append to log", &self.path))?;
        self.file
            .sync_data()
            .map_err(io_err("sync log", &self.path))?;
        self.pos += frame.len() as u64 - 12;
        Ok(())
    }

    /// Starts the log over after a checkpoint made its frames redundant.
    pub(crate) fn reset(&mut self) {
        self.pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_torn_tail_ends_the_log() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("wal");
        let (mut w, frames) = Wal::open(&path).expect("open");
        assert!(frames.is_empty());
        w.append(&[b"one"]).expect("append");
        w.append(&[b"t", b"wo"]).expect("append");
        drop(w);
        let (mut w, frames) = Wal::open(&path).expect("reopen");
        assert_eq!(frames, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            WAL_BYTES,
            "preallocated"
        );
        // After a reset, a new frame hides the older ones behind its end marker.
        w.reset();
        w.append(&[b"three"]).expect("append");
        // A torn frame: its header promises more than its checksum covers.
        let torn_at = w.len();
        let mut hdr = 100u32.to_le_bytes().to_vec();
        hdr.extend_from_slice(&42u64.to_le_bytes());
        w.file.write_all_at(&hdr, torn_at).expect("write");
        drop(w);
        let (_, frames) = Wal::open(&path).expect("reopen");
        assert_eq!(frames, vec![b"three".to_vec()]);
    }

    #[test]
    fn a_frame_past_the_preallocation_grows_the_log() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("wal");
        let (mut w, _) = Wal::open(&path).expect("open");
        let big = vec![7u8; usize::try_from(WAL_BYTES).expect("size")];
        w.append(&[b"small"]).expect("append");
        w.append(&[&big, b"tail"]).expect("append past the end");
        let size = std::fs::metadata(&path).expect("meta").len();
        assert!(
            size > WAL_BYTES && size % WAL_BYTES == 0,
            "grown in steps: {size}"
        );
        drop(w);
        let (_, frames) = Wal::open(&path).expect("reopen");
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].len(), big.len() + 4);
        assert!(frames[1].ends_with(b"tail"));
    }
}
