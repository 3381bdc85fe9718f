//! The write-ahead log of the embedded backend.
//!
//! A durable redb commit rewrites B-tree pages all over its file and syncs them, which
//! costs several milliseconds per commit. Instead each group commit is applied to redb
//! without syncing, and the batch's events are appended to this log as one checksummed
//! frame and made durable with one `fdatasync` before any write of the batch is
//! acknowledged. The log file is preallocated (written with zeros), so that sync only
//! flushes data blocks. About once a second a durable redb commit (a checkpoint) makes
//! everything before it durable in the database itself, and the log is reused from its
//! start. On open, frames newer than the database's durable revision are replayed.
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

/// Bytes preallocated for the log; a checkpoint is forced before it would grow past.
pub(crate) const WAL_BYTES: u64 = 4 << 20;

fn checksum(len: u32, payload: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in len.to_le_bytes().iter().chain(payload) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn io_err<'a>(
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
}

impl Wal {
    /// Opens (or creates and preallocates) the log; returns it and the payloads of the
    /// valid frames it holds, oldest first.
    pub(crate) fn open(path: &Path) -> Result<(Self, Vec<Vec<u8>>), StorageError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
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
        if (raw.len() as u64) < WAL_BYTES {
            // Preallocate with real zeros (not a sparse hole) so appends do not change
            // the file's size or extents and `fdatasync` has no metadata to write.
            let zeros = vec![0u8; usize::try_from(WAL_BYTES).unwrap_or(0) - raw.len()];
            file.write_all_at(&zeros, raw.len() as u64)
                .map_err(io_err("preallocate log", path))?;
            file.sync_all().map_err(io_err("sync log", path))?;
        }
        Ok((
            Self {
                path: path.to_owned(),
                file,
                pos: 0,
            },
            frames,
        ))
    }

    /// Bytes written since the last [`Wal::reset`].
    pub(crate) fn len(&self) -> u64 {
        self.pos
    }

    /// Appends one frame and waits until it is on disk.
    pub(crate) fn append(&mut self, payload: &[u8]) -> Result<(), StorageError> {
        let len = u32::try_from(payload.len()).map_err(|_| StorageError::Backend {
            op: "append to log",
            message: format!("a batch of {} bytes is too large", payload.len()),
        })?;
        let mut frame = Vec::with_capacity(12 + payload.len() + 12);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&checksum(len, payload).to_le_bytes());
        frame.extend_from_slice(payload);
        // A zero header after the frame ends the log there, whatever older frames follow.
        frame.extend_from_slice(&[0u8; 12]);
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
        w.append(b"one").expect("append");
        w.append(b"two").expect("append");
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
        w.append(b"three").expect("append");
        // A torn frame: its header promises more than its checksum covers.
        let torn_at = w.len();
        let mut hdr = 100u32.to_le_bytes().to_vec();
        hdr.extend_from_slice(&42u64.to_le_bytes());
        w.file.write_all_at(&hdr, torn_at).expect("write");
        drop(w);
        let (_, frames) = Wal::open(&path).expect("reopen");
        assert_eq!(frames, vec![b"three".to_vec()]);
    }
}
