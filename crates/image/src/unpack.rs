//! Safe, pipelined layer unpacking.
//!
//! A layer is read by a decoder thread that decompresses and hashes it (the
//! DiffID) while the calling thread parses the tar stream and creates the
//! files. With more than one CPU, writer threads fill the files (data,
//! ownership, mode, xattrs, times, close) from batches of entry data; in an
//! overlay diff dir that starts empty they also create regular files whose
//! name is new to the layer (`openat(O_CREAT | O_EXCL | O_NOFOLLOW)` of one
//! component in a confined parent fd), so several inode creations, which
//! often wait for the file system to read inode tables, are in flight at
//! once. Everything else (directories, links, whiteouts, a name seen before)
//! stays on the parser, in archive order, after the writers caught up.
//!
//! Every path is resolved relative to a directory fd of the layer root with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` (kcore-rootfd's helpers,
//! shared with the runtime's mount setup; a careful `O_NOFOLLOW` walk on kernels
//! without openat2); the final component is
//! always created with `*at` calls that never follow symlinks. No path string
//! is ever joined onto the root. Resolved parent directory fds are cached by
//! path and the whole cache is dropped whenever an entry removes or replaces
//! anything (a directory fd stays on the inode it was resolved to, which the
//! extractor itself never moves, so a cached fd is as confined as a fresh
//! one; dropping the cache keeps later entries resolving through whatever
//! now sits at that path, like a fresh lookup would).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use kcore_rootfd::{open_in, remove_all_at, resolve_dir};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use crate::tarstream::{Member, TarReader};

const CHUNK: usize = 512 * 1024;
/// Bytes of file data per batch handed to the writer.
const BATCH_BYTES: usize = 1 << 20;
/// Files per batch (each holds an open fd until the writer is done with it).
const BATCH_FILES: usize = 32;
/// Batches queued for each writer.
const BATCH_QUEUE: usize = 2;
/// Writer threads by default (with more than one CPU). Creating an inode
/// often waits for the file system to read an inode table block; several
/// writers keep several of those reads in flight.
const WRITERS: usize = 3;
/// Beyond this many entries the extractor stops handing file creation to
/// the writers (the set of names it keeps for that would grow too big).
const MAX_KNOWN: usize = 1 << 20;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The allocation unit the budget counts in (a file system block).
const ALLOC_BLOCK: u64 = 4096;
/// The default budget of allocated bytes per layer.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 30;
/// Bytes accepted after the end of the archive (tar padding: usually up to
/// a 10 KiB record; anything much bigger is a decompression bomb).
const MAX_TRAILER: u64 = 16 << 20;
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// How a layer stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (`tar+gzip`).
    Gzip,
    /// zstd (`tar+zstd`).
    Zstd,
}

impl Compression {
    /// Detect from the first bytes of a stream, if they carry a known magic.
    pub fn from_magic(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

    /// Detect from an OCI or Docker layer media type.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
            Some(Compression::Gzip)
        } else if media_type.ends_with("+zstd") || media_type.ends_with(".tar.zstd") {
            Some(Compression::Zstd)
        } else if media_type.ends_with(".tar") || media_type.ends_with("layer.v1.tar") {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// What to do with OCI whiteout entries (`.wh.NAME`, `.wh..wh..opq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Turn them into overlayfs whiteouts (a 0:0 character device, the
    /// `trusted.overlay.opaque=y` xattr): the layer is an overlay diff dir.
    Overlay,
    /// Apply them: delete what they hide from the directory (flatten mode,
    /// the layer is applied onto the layers below it in one rootfs).
    Apply,
}

/// What to do with character and block device entries.
///
/// The default is [`DevicePolicy::Create`] when running as root and
/// [`DevicePolicy::Skip`] otherwise; a skipped node (also one whose `mknod`
/// was not permitted) is named in [`LayerStats::warnings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePolicy {
    /// Create them (needs CAP_MKNOD; without it they are skipped with a
    /// warning).
    Create,
    /// Skip them, with a warning.
    Skip,
    /// Refuse the layer.
    Reject,
}

/// What happened so far, reported to a progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Uncompressed tar bytes processed.
    pub bytes: u64,
    /// Archive entries processed.
    pub entries: u64,
}

/// A progress callback: called every few hundred entries and at the end.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Options for unpacking one layer.
#[derive(Clone)]
pub struct UnpackOptions {
    whiteouts: Whiteouts,
    devices: DevicePolicy,
    same_owner: bool,
    xattrs: bool,
    max_bytes: u64,
    max_entries: u64,
    threads: Option<usize>,
    progress: Option<ProgressFn>,
}

impl std::fmt::Debug for UnpackOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnpackOptions")
            .field("whiteouts", &self.whiteouts)
            .field("devices", &self.devices)
            .field("same_owner", &self.same_owner)
            .field("xattrs", &self.xattrs)
            .field("max_bytes", &self.max_bytes)
            .field("max_entries", &self.max_entries)
            .field("threads", &self.threads)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            whiteouts: Whiteouts::Overlay,
            devices: if rustix::process::geteuid().is_root() {
                DevicePolicy::Create
            } else {
                DevicePolicy::Skip
            },
            same_owner: rustix::process::geteuid().is_root(),
            xattrs: true,
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: 4_000_000,
            threads: None,
            progress: None,
        }
    }
}

impl UnpackOptions {
    /// Defaults: overlay whiteouts, device nodes and ownership kept when
    /// running as root (skipped with a warning otherwise), filtered xattrs
    /// kept, a budget of 64 GiB ([`DEFAULT_MAX_BYTES`]) allocated and 4 M
    /// entries.
    pub fn new() -> Self {
        Self::default()
    }
    /// Choose how whiteouts are handled.
    pub fn whiteouts(mut self, w: Whiteouts) -> Self {
        self.whiteouts = w;
        self
    }
    /// Choose what happens to device nodes.
    pub fn devices(mut self, d: DevicePolicy) -> Self {
        self.devices = d;
        self
    }
    /// Keep the archive's uid/gid (needs CAP_CHOWN).
    pub fn same_owner(mut self, yes: bool) -> Self {
        self.same_owner = yes;
        self
    }
    /// Keep `user.*` and `security.capability` xattrs from PAX headers.
    pub fn xattrs(mut self, yes: bool) -> Self {
        self.xattrs = yes;
        self
    }
    /// The budget of bytes the layer may allocate on disk: regular files
    /// count their size in whole 4 KiB blocks, sparse files only the blocks
    /// their data touches (holes are free, so a real sparse file such as
    /// `/var/log/lastlog` passes), other members the data they carry.
    /// Every member is charged before anything of it is written; a layer
    /// over the budget (a decompression or sparse bomb) fails with
    /// [`Error::BudgetExceeded`] and, through [`unpack_layer`] and
    /// [`crate::ImageStore::unpack`], leaves nothing behind.
    ///
    /// ```
    /// let opts = kcore_image::UnpackOptions::new().max_bytes(1 << 30);
    /// assert_eq!(opts.budget(), 1 << 30);
    /// ```
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n;
        self
    }
    /// Refuse a layer with more entries.
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = n;
        self
    }
    /// Helper threads per layer, besides the calling thread (which always
    /// parses the archive and creates directories and links):
    ///
    /// - `0`: none, everything (decompression, DiffID hashing, file data)
    ///   happens on the calling thread: one CPU per layer, for busy
    ///   machines or when many layers unpack at once;
    /// - `1`: a decoder thread decompresses and hashes the stream while the
    ///   calling thread creates and writes the files;
    /// - `n > 1`: the decoder thread plus `n - 1` writer threads that
    ///   create and fill regular files, so several file creations (which
    ///   often wait for the file system to read inode tables) are in
    ///   flight at once.
    ///
    /// Default: 4 (a decoder and 3 writers) with more than one CPU, 1 with
    /// one. The safety checks and the result do not depend on it.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }
    /// The helper threads per layer in effect (see [`Self::threads`]).
    pub fn thread_count(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            if std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
                1 + WRITERS
            } else {
                1
            }
        })
    }
    /// Report progress to `f`.
    pub fn progress(mut self, f: ProgressFn) -> Self {
        self.progress = Some(f);
        self
    }
    /// The progress callback, if any.
    pub fn progress_fn(&self) -> Option<ProgressFn> {
        self.progress.clone()
    }
    /// The budget of allocated bytes in effect (see [`Self::max_bytes`]).
    pub fn budget(&self) -> u64 {
        self.max_bytes
    }
    /// The whiteout mode in effect.
    pub fn whiteout_mode(&self) -> Whiteouts {
        self.whiteouts
    }
}

/// The outcome of unpacking one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStats {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Uncompressed tar bytes.
    pub tar_bytes: u64,
    /// Entries in the archive.
    pub entries: u64,
    /// Bytes charged against the budget (an upper bound of what the layer
    /// allocates on disk).
    pub allocated: u64,
    /// What was left out, one line each (device nodes that could not be
    /// created).
    pub warnings: Vec<String>,
}

/// Unpack a layer into `dest`, which must not exist yet: it is created, and
/// removed again if anything fails (a hostile entry, a wrong DiffID), so a
/// failed unpack leaves nothing behind.
///
/// `media_type` is a hint; the stream's magic bytes decide. With
/// `expected_diff_id`, the uncompressed stream must hash to it.
pub fn unpack_layer(
    reader: impl Read + Send,
    media_type: Option<&str>,
    dest: &Path,
    expected_diff_id: Option<&Digest>,
    opts: &UnpackOptions,
) -> Result<LayerStats> {
    std::fs::create_dir(dest).at(dest)?;
    let res = (|| {
        let root = open_root(dest)?;
        apply_layer_at(reader, media_type, root.as_fd(), expected_diff_id, opts)
    })();
    if res.is_err() {
        if let Err(e) = std::fs::remove_dir_all(dest) {
            tracing::warn!(path = %dest.display(), error = %e, "could not remove a failed layer");
        }
    }
    res
}

/// Apply a layer onto the existing directory `root` (an empty overlay diff
/// dir, or a rootfs holding the layers below in flatten mode). On error the
/// directory is left as it is: the caller owns its cleanup.
pub fn apply_layer(
    reader: impl Read + Send,
    media_type: Option<&str>,
    root: &Path,
    expected_diff_id: Option<&Digest>,
    opts: &UnpackOptions,
) -> Result<LayerStats> {
    let fd = open_root(root)?;
    apply_layer_at(reader, media_type, fd.as_fd(), expected_diff_id, opts)
}

pub(crate) fn open_root(path: &Path) -> Result<OwnedFd> {
    rfs::open(
        path,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
    .at(path)
}

/// [`apply_layer`] on an open directory fd.
pub fn apply_layer_at(
    reader: impl Read + Send,
    media_type: Option<&str>,
    root: BorrowedFd<'_>,
    expected_diff_id: Option<&Digest>,
    opts: &UnpackOptions,
) -> Result<LayerStats> {
    let label = expected_diff_id
        .map(|d| d.to_string())
        .unwrap_or_else(|| "layer".to_owned());
    let span = tracing::debug_span!("apply_layer", layer = %label);
    let _g = span.enter();

    let mut reader = BufReader::with_capacity(CHUNK, reader);
    let head = reader
        .fill_buf()
        .map_err(|source| Error::Archive {
            layer: label.clone(),
            source,
        })?
        .to_vec();
    let compression = Compression::from_magic(&head)
        .or_else(|| {
            media_type
                .and_then(Compression::from_media_type)
                .filter(|c| *c == Compression::None)
        })
        .unwrap_or(Compression::None);
    if let Some(declared) = media_type.and_then(Compression::from_media_type) {
        if declared != compression {
            tracing::debug!(?declared, detected = ?compression, "media type and magic bytes disagree; using the magic bytes");
        }
    }

    let owner = Owner::new(opts);
    let writer_threads = match opts.thread_count() {
        0 => {
            return apply_inline(
                reader,
                compression,
                root,
                expected_diff_id,
                opts,
                owner,
                &label,
            )
        }
        n => n - 1,
    };
    let (tx, rx) = sync_channel::<Vec<u8>>(8);
    let (back_tx, back_rx) = sync_channel::<Vec<u8>>(10);
    // A thread that cannot be started fails the layer like an I/O error would.
    let spawn_err = |source| Error::Archive {
        layer: label.clone(),
        source,
    };
    std::thread::scope(|s| {
        let decoder = std::thread::Builder::new()
            .name("unpack-decode".into())
            .spawn_scoped(s, move || decode(reader, compression, tx, back_rx))
            .map_err(spawn_err)?;
        let mut chan = ChanReader {
            rx,
            back: back_tx,
            cur: Vec::new(),
            pos: 0,
        };
        let mut writers = Vec::new();
        let mut shared = None;
        let sink = if writer_threads > 0 {
            let sh = Arc::new(Shared::default());
            let (back_tx, back) = sync_channel::<Batch>(writer_threads * (BATCH_QUEUE + 1));
            let mut txs = Vec::new();
            for _ in 0..writer_threads {
                let (wtx, wrx) = sync_channel::<Batch>(BATCH_QUEUE);
                let (b, sh2) = (back_tx.clone(), sh.clone());
                let w = std::thread::Builder::new()
                    .name("unpack-write".into())
                    .spawn_scoped(s, move || write_loop(wrx, b, owner, sh2))
                    .map_err(spawn_err)?;
                writers.push(w);
                txs.push(wtx);
            }
            shared = Some(sh.clone());
            Sink::Threads {
                txs,
                next: 0,
                back,
                shared: sh,
                sent: 0,
            }
        } else {
            Sink::Inline(Writer { owner, cur: None })
        };
        let mut ex = Extractor::new(root, opts, owner, sink).map_err(|source| Error::Archive {
            layer: label.clone(),
            source,
        })?;
        let res = ex.run(&mut chan);
        let closed = ex.close_sink(res.is_ok());
        for h in writers {
            h.join().expect("writer thread panicked");
        }
        let written = match shared.and_then(|sh| sh.error.lock().expect("not poisoned").take()) {
            Some(e) => Err(e),
            None => Ok(()),
        };
        // A writer's own error explains a parser that found it gone.
        let res = written.and(res).and(closed);
        // Drain the rest (tar padding) so the DiffID covers the whole stream,
        // or hang up on the decoder if we failed.
        let drained = match &res {
            Ok(()) => drain_trailer(&mut chan),
            Err(_) => Ok(()),
        };
        drop(chan);
        let decoded = decoder.join().expect("decoder thread panicked");
        res?;
        let (diff_id, tar_bytes) = decoded.map_err(|source| Error::Archive {
            layer: label.clone(),
            source,
        })?;
        drained.map_err(|source| Error::Archive {
            layer: label.clone(),
            source,
        })?;
        conclude(ex, diff_id, tar_bytes, expected_diff_id, opts)
    })
}

/// The end of a layer whose entries are all in place: check the DiffID,
/// apply the deferred directory metadata, report the final progress.
fn conclude(
    mut ex: Extractor<'_>,
    diff_id: Digest,
    tar_bytes: u64,
    expected_diff_id: Option<&Digest>,
    opts: &UnpackOptions,
) -> Result<LayerStats> {
    if let Some(exp) = expected_diff_id {
        if exp != &diff_id {
            return Err(Error::DigestMismatch {
                what: "layer diff id".to_owned(),
                expected: exp.clone(),
                actual: diff_id,
            });
        }
    }
    ex.finish()?;
    if let Some(p) = &opts.progress {
        p(Progress {
            bytes: tar_bytes,
            entries: ex.entries,
        });
    }
    Ok(LayerStats {
        diff_id,
        tar_bytes,
        entries: ex.entries,
        allocated: ex.allocated,
        warnings: std::mem::take(&mut ex.warnings),
    })
}

/// A layer on the calling thread alone (`threads(0)`): the archive is
/// decompressed and hashed as the parser reads it, files are written
/// inline.
fn apply_inline(
    reader: BufReader<impl Read>,
    compression: Compression,
    root: BorrowedFd<'_>,
    expected_diff_id: Option<&Digest>,
    opts: &UnpackOptions,
    owner: Owner,
    label: &str,
) -> Result<LayerStats> {
    let archive = |source: io::Error| Error::Archive {
        layer: label.to_owned(),
        source,
    };
    let hashing = HashingReader {
        inner: decompressor(reader, compression).map_err(archive)?,
        hasher: Hasher::new(),
    };
    // The tar parser reads headers 512 bytes at a time: decompress and
    // hash in big chunks underneath it.
    let mut input = BufReader::with_capacity(CHUNK, hashing);
    let sink = Sink::Inline(Writer { owner, cur: None });
    let mut ex = Extractor::new(root, opts, owner, sink).map_err(archive)?;
    ex.run(&mut input)?;
    ex.close_sink(true)?;
    // The rest (tar padding) is part of the DiffID too.
    drain_trailer(&mut input).map_err(archive)?;
    let hasher = input.into_inner().hasher;
    let tar_bytes = hasher.len();
    conclude(ex, hasher.finish(), tar_bytes, expected_diff_id, opts)
}

/// Read what follows the end of the archive (it is part of the DiffID),
/// refusing more than [`MAX_TRAILER`] bytes of it.
fn drain_trailer(r: &mut impl Read) -> io::Result<()> {
    let n = io::copy(&mut r.take(MAX_TRAILER + 1), &mut io::sink())?;
    if n > MAX_TRAILER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than {MAX_TRAILER} bytes after the end of the archive"),
        ));
    }
    Ok(())
}

/// Hashes what it reads (the DiffID of an inline layer).
struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The uncompressed tar stream of a layer.
fn decompressor<'r>(
    reader: BufReader<impl Read + 'r>,
    compression: Compression,
) -> io::Result<Box<dyn Read + 'r>> {
    Ok(match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
    })
}

fn decode(
    reader: BufReader<impl Read>,
    compression: Compression,
    tx: SyncSender<Vec<u8>>,
    back: Receiver<Vec<u8>>,
) -> io::Result<(Digest, u64)> {
    let mut src = decompressor(reader, compression)?;
    let mut hasher = Hasher::new();
    loop {
        let mut buf = back
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        buf.resize(CHUNK, 0);
        let mut filled = 0;
        while filled < CHUNK {
            match src.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        hasher.update(&buf);
        if filled == 0 {
            break;
        }
        if tx.send(buf).is_err() {
            // The extractor stopped (it failed); its error is the one to report.
            break;
        }
    }
    let len = hasher.len();
    Ok((hasher.finish(), len))
}

struct ChanReader {
    rx: Receiver<Vec<u8>>,
    back: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(next) => {
                    let old = std::mem::replace(&mut self.cur, next);
                    let _ = self.back.try_send(old);
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Metadata applied to a directory after all entries are in place.
struct DirMeta {
    path: PathBuf,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Timespec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Timespec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// Who owns what is created, and which mode bits need an explicit chmod.
#[derive(Clone, Copy)]
struct Owner {
    same_owner: bool,
    euid: u32,
    egid: u32,
    /// The process umask, if known (`None`: always chmod).
    umask: Option<u32>,
}

impl Owner {
    fn new(opts: &UnpackOptions) -> Self {
        Owner {
            same_owner: opts.same_owner,
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
            umask: process_umask(),
        }
    }

    /// Whether a chown is needed for these ids.
    fn needs_chown(&self, uid: u64, gid: u64) -> bool {
        self.same_owner && !(uid == u64::from(self.euid) && gid == u64::from(self.egid))
    }

    fn own_fd(&self, fd: &impl AsFd, uid: u64, gid: u64) -> io::Result<()> {
        if !self.needs_chown(uid, gid) {
            return Ok(());
        }
        let (u, g) = ids(uid, gid)?;
        rfs::fchown(fd, Some(u), Some(g)).map_err(errno)
    }

    /// Ownership, then mode (chmod after chown keeps setuid bits), xattrs
    /// and times on an open file. `chmod` false: the mode it was created
    /// with is already the final one.
    fn finish_fd(&self, fd: &impl AsFd, meta: &Meta, chmod: bool) -> io::Result<()> {
        self.own_fd(fd, meta.uid, meta.gid)?;
        if chmod {
            rfs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(errno)?;
        }
        for (k, v) in &meta.xattrs {
            set_xattr(fd, k, v)?;
        }
        let ts = Timestamps {
            last_access: meta.mtime,
            last_modification: meta.mtime,
        };
        rfs::futimens(fd, &ts).map_err(errno)
    }

    /// Whether a file created with `mode` (as the creation mode) ends up
    /// with exactly `mode` without a chmod: no special bits (a chown clears
    /// them, and they are set after it), nothing the umask takes away.
    fn created_exact(&self, mode: u32) -> bool {
        match self.umask {
            Some(mask) => mode & 0o7000 == 0 && mode & mask == 0,
            None => false,
        }
    }
}

/// The umask, read from `/proc/self/status` (setting it to read it back
/// would race with other threads).
fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}

/// A regular file created by the parser, filled and closed by the writer.
struct PendingFile {
    file: File,
    meta: Meta,
    chmod: bool,
    entry: PathBuf,
}

/// A regular file the writer creates itself: `name` in `dir`, a confined
/// directory fd, with `O_CREAT | O_EXCL | O_NOFOLLOW` (one path component,
/// never an existing entry, never through a symlink).
struct NewFile {
    dir: Arc<OwnedFd>,
    name: OsString,
    mode: u32,
    meta: Meta,
    chmod: bool,
    entry: PathBuf,
}

/// One step of the writer's work.
enum Op {
    /// A newly created file: the following writes go to it.
    Start(PendingFile),
    /// Create a file; the following writes go to it.
    Create(NewFile),
    /// Write `data[start..end]` of the batch to the current file.
    Write(usize, usize),
    /// Move the current file's offset (a sparse file: the bytes skipped
    /// stay a hole).
    Seek(u64),
    /// Set the current file's length (a sparse file ending in a hole).
    SetLen(u64),
    /// The current file is complete: apply its metadata and close it.
    End,
}

/// File data and the operations that consume it, in archive order.
struct Batch {
    /// Always `BATCH_BYTES` long; `used` of them hold data.
    data: Vec<u8>,
    used: usize,
    ops: Vec<Op>,
    files: usize,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            data: vec![0u8; BATCH_BYTES],
            used: 0,
            ops: Vec::with_capacity(4 * BATCH_FILES),
            files: 0,
        }
    }
}

/// Applies batches: on the writer thread, or inline with a single CPU.
struct Writer {
    owner: Owner,
    cur: Option<PendingFile>,
}

impl Writer {
    fn apply(&mut self, batch: &mut Batch) -> Result<()> {
        let Batch {
            data,
            ops,
            used,
            files,
        } = batch;
        for op in ops.drain(..) {
            match op {
                Op::Start(p) => self.cur = Some(p),
                Op::Create(n) => {
                    let flags = OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC;
                    let fd = rfs::openat(&*n.dir, &n.name, flags, Mode::from_raw_mode(n.mode))
                        .map_err(|e| Error::Entry {
                            entry: n.entry.clone(),
                            source: errno(e),
                        })?;
                    self.cur = Some(PendingFile {
                        file: File::from(fd),
                        meta: n.meta,
                        chmod: n.chmod,
                        entry: n.entry,
                    });
                }
                Op::Write(a, b) => {
                    let p = self.cur.as_mut().expect("a write follows a start");
                    p.file
                        .write_all(&data[a..b])
                        .map_err(|source| Error::Entry {
                            entry: p.entry.clone(),
                            source,
                        })?;
                }
                Op::Seek(off) => {
                    let p = self.cur.as_mut().expect("a seek follows a start");
                    p.file
                        .seek(io::SeekFrom::Start(off))
                        .map_err(|source| Error::Entry {
                            entry: p.entry.clone(),
                            source,
                        })?;
                }
                Op::SetLen(len) => {
                    let p = self.cur.as_mut().expect("a length follows a start");
                    p.file.set_len(len).map_err(|source| Error::Entry {
                        entry: p.entry.clone(),
                        source,
                    })?;
                }
                Op::End => {
                    let p = self.cur.take().expect("an end follows a start");
                    self.owner
                        .finish_fd(&p.file, &p.meta, p.chmod)
                        .map_err(|source| Error::Entry {
                            entry: p.entry,
                            source,
                        })?;
                }
            }
        }
        *used = 0;
        *files = 0;
        Ok(())
    }
}

/// Where full batches go.
enum Sink {
    Inline(Writer),
    Threads {
        /// One queue per writer: a file whose data spans batches keeps
        /// going to the same writer, so its writes and its metadata stay in
        /// order.
        txs: Vec<SyncSender<Batch>>,
        next: usize,
        back: Receiver<Batch>,
        shared: Arc<Shared>,
        sent: u64,
    },
}

/// State shared by the parser and the writers.
#[derive(Default)]
struct Shared {
    /// Batches the writers are done with.
    done: Mutex<u64>,
    cv: Condvar,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
}

/// A writer thread: applies batches until the parser hangs up, hands the
/// emptied batches back for reuse. After a failure (kept in `shared`) it
/// only drains its queue, so the parser never blocks on it.
fn write_loop(rx: Receiver<Batch>, back: SyncSender<Batch>, owner: Owner, shared: Arc<Shared>) {
    let mut w = Writer { owner, cur: None };
    for mut batch in rx {
        if !shared.failed.load(Ordering::Acquire) {
            if let Err(e) = w.apply(&mut batch) {
                let mut slot = shared.error.lock().expect("not poisoned");
                if slot.is_none() {
                    *slot = Some(e);
                }
                shared.failed.store(true, Ordering::Release);
            }
        }
        // Files still open in a failed batch are closed here.
        batch.ops.clear();
        batch.used = 0;
        batch.files = 0;
        let _ = back.try_send(batch);
        *shared.done.lock().expect("not poisoned") += 1;
        shared.cv.notify_all();
    }
}

/// The writer thread stopped early; its own error is the one reported.
fn writer_gone() -> Error {
    Error::Archive {
        layer: "layer".into(),
        source: io::Error::other("the file writer stopped"),
    }
}

struct Extractor<'a> {
    root: BorrowedFd<'a>,
    opts: &'a UnpackOptions,
    /// Resolved parent directories (O_PATH fds and inode numbers), by path
    /// in the layer.
    dir_fds: HashMap<PathBuf, (Arc<OwnedFd>, u64)>,
    /// The root, shared with writers that create files in it.
    root_dir: (Arc<OwnedFd>, u64),
    /// Every name this layer created or queued, by (parent inode, name),
    /// when the layer started empty: a file whose name is not in it cannot
    /// exist yet, so a writer can create it with O_EXCL while the parser
    /// goes on. `None`: files are created by the parser.
    known: Option<HashSet<(u64, OsString)>>,
    dir_cap: usize,
    dirs: Vec<DirMeta>,
    /// Paths created by this layer (only tracked in Apply mode, where the
    /// directory also holds lower layers).
    created: HashSet<PathBuf>,
    entries: u64,
    bytes: u64,
    /// Bytes the layer allocates on disk so far (see [`Self::charge`]).
    allocated: u64,
    /// Things left out, for [`LayerStats::warnings`].
    warnings: Vec<String>,
    owner: Owner,
    batch: Batch,
    sink: Sink,
    /// Flushing in the middle of a file's data (the next batch must go to
    /// the same writer).
    mid_file: bool,
}

fn errno(e: Errno) -> io::Error {
    io::Error::from(e)
}

impl<'a> Extractor<'a> {
    fn new(
        root: BorrowedFd<'a>,
        opts: &'a UnpackOptions,
        owner: Owner,
        sink: Sink,
    ) -> io::Result<Self> {
        // Cached directory fds take a small share of the fd limit (parallel
        // unpacks each have their own cache).
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(1024);
        let dir_cap = usize::try_from(limit / 16).unwrap_or(1024).clamp(8, 1024);
        let root_fd = root.try_clone_to_owned()?;
        let root_ino = rfs::fstat(&root_fd).map_err(errno)?.st_ino;
        // Writers create files only in an overlay diff dir that starts
        // empty: then every existing name is one this layer made.
        let known = (matches!(sink, Sink::Threads { .. })
            && opts.whiteouts == Whiteouts::Overlay
            && dir_is_empty(root)?)
        .then(HashSet::new);
        Ok(Extractor {
            root,
            opts,
            dir_fds: HashMap::new(),
            root_dir: (Arc::new(root_fd), root_ino),
            known,
            dir_cap,
            dirs: Vec::new(),
            created: HashSet::new(),
            entries: 0,
            bytes: 0,
            allocated: 0,
            warnings: Vec::new(),
            owner,
            batch: Batch::new(),
            sink,
            mid_file: false,
        })
    }

    /// Record that `parent_ino/name` exists (or is queued). Returns whether
    /// it was there already: the entry must then be handled by the parser,
    /// after the writers caught up.
    fn note_name(&mut self, parent_ino: u64, name: &OsStr) -> bool {
        let Some(known) = &mut self.known else {
            return true;
        };
        if known.len() >= MAX_KNOWN {
            // Too many to track: the parser creates everything from now on.
            self.known = None;
            return true;
        }
        !known.insert((parent_ino, name.to_owned()))
    }

    /// Wait until the writers have applied every batch sent so far (files
    /// they create exist afterwards).
    fn barrier(&mut self) -> Result<()> {
        self.flush()?;
        if let Sink::Threads { shared, sent, .. } = &self.sink {
            let mut done = shared.done.lock().expect("not poisoned");
            while *done < *sent && !shared.failed.load(Ordering::Acquire) {
                done = shared.cv.wait(done).expect("not poisoned");
            }
            if shared.failed.load(Ordering::Acquire) {
                return Err(writer_gone());
            }
        }
        Ok(())
    }

    /// Forget every cached directory fd: something was removed or replaced.
    fn forget_dirs(&mut self) {
        self.dir_fds.clear();
    }

    /// Hand the current batch to the writer (or apply it inline).
    fn flush(&mut self) -> Result<()> {
        if self.batch.ops.is_empty() && self.batch.used == 0 {
            return Ok(());
        }
        let mid_file = std::mem::take(&mut self.mid_file);
        match &mut self.sink {
            Sink::Inline(w) => w.apply(&mut self.batch),
            Sink::Threads {
                txs,
                next,
                back,
                shared,
                sent,
            } => {
                if shared.failed.load(Ordering::Acquire) {
                    return Err(writer_gone());
                }
                let fresh = back.try_recv().unwrap_or_else(|_| Batch::new());
                let full = std::mem::replace(&mut self.batch, fresh);
                txs[*next].send(full).map_err(|_| writer_gone())?;
                *sent += 1;
                if !mid_file {
                    *next = (*next + 1) % txs.len();
                }
                Ok(())
            }
        }
    }

    /// Flush what is left (unless the layer failed) and stop the writer
    /// thread's input.
    fn close_sink(&mut self, flush: bool) -> Result<()> {
        let r = if flush { self.flush() } else { Ok(()) };
        if let Sink::Threads { .. } = self.sink {
            // Dropping the senders ends the writers' loops.
            self.sink = Sink::Inline(Writer {
                owner: self.owner,
                cur: None,
            });
        }
        r
    }

    fn run(&mut self, input: &mut impl Read) -> Result<()> {
        let archive = |source: io::Error| Error::Archive {
            layer: "layer".into(),
            source,
        };
        let mut tar = TarReader::new(input);
        while let Some(member) = tar.next_member().map_err(archive)? {
            let shown = PathBuf::from(OsStr::from_bytes(&member.path));
            self.entries += 1;
            if self.entries > self.opts.max_entries {
                return Err(Error::LimitExceeded {
                    entry: shown,
                    limit: format!("max_entries {}", self.opts.max_entries),
                });
            }
            self.bytes += member.size;
            self.charge(&member, &shown)?;
            self.entry(&mut tar, member, &shown)?;
            if self.entries % 512 == 0 {
                if let Some(p) = &self.opts.progress {
                    p(Progress {
                        bytes: self.bytes,
                        entries: self.entries,
                    });
                }
            }
        }
        Ok(())
    }

    /// Count what a member will allocate against the budget, before
    /// anything of it is written: a regular file its size in whole
    /// blocks, a sparse file the blocks its data segments touch (holes are
    /// free), any other member the data it carries.
    fn charge(&mut self, m: &Member, shown: &Path) -> Result<()> {
        let need = match (&m.sparse, m.kind) {
            (Some(map), _) => map.allocated(ALLOC_BLOCK),
            (None, b'0') => m.size.div_ceil(ALLOC_BLOCK).saturating_mul(ALLOC_BLOCK),
            (None, _) => m.size,
        };
        let total = self.allocated.saturating_add(need);
        if total > self.opts.max_bytes {
            return Err(Error::BudgetExceeded {
                entry: shown.to_owned(),
                needed: need,
                allocated: self.allocated,
                budget: self.opts.max_bytes,
            });
        }
        self.allocated = total;
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        entry: Member,
        shown: &Path,
    ) -> Result<()> {
        let rel = normalize(&entry.path).map_err(|reason| Error::UnsafeEntry {
            entry: shown.to_owned(),
            reason: reason.to_owned(),
        })?;
        let meta = self.meta(&entry);
        let kind = entry.kind;
        let Some(rel) = rel else {
            // The root itself ("./"): only its metadata applies.
            if kind == b'5' {
                self.dirs.push(DirMeta {
                    path: PathBuf::new(),
                    mode: meta.mode,
                    uid: meta.uid,
                    gid: meta.gid,
                    mtime: meta.mtime,
                    xattrs: meta.xattrs,
                });
            }
            return Ok(());
        };
        let name = rel.file_name().expect("normalized path has a name");
        let parent = rel.parent().unwrap_or(Path::new(""));
        let ctx = |source: io::Error| Error::Entry {
            entry: shown.to_owned(),
            source,
        };

        let nb = name.as_bytes();
        if nb == OPAQUE_MARKER {
            if self.known.is_some() {
                self.barrier()?;
            }
            return self.opaque(parent).map_err(ctx);
        }
        if let Some(hidden) = nb.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(Error::UnsafeEntry {
                    entry: shown.to_owned(),
                    reason: "whiteout of an invalid name".into(),
                });
            }
            if self.known.is_some() {
                // Whether it hides something of this layer depends on
                // every queued file existing.
                self.barrier()?;
                self.claim(parent, OsStr::from_bytes(hidden))?;
            }
            return self
                .whiteout(parent, OsStr::from_bytes(hidden))
                .map_err(ctx);
        }

        let tracked = self.opts.whiteouts == Whiteouts::Apply;
        match kind {
            b'0' => self.file(tar, &entry, parent, name, meta, shown)?,
            b'5' => {
                self.claim(parent, name)?;
                self.dir(parent, name).map_err(ctx)?;
                self.dirs.push(DirMeta {
                    path: rel.clone(),
                    mode: meta.mode,
                    uid: meta.uid,
                    gid: meta.gid,
                    mtime: meta.mtime,
                    xattrs: meta.xattrs,
                });
            }
            b'2' => {
                let target = entry
                    .link
                    .clone()
                    .ok_or_else(|| ctx(io::Error::other("symlink without a target")))?;
                self.claim(parent, name)?;
                self.symlink(parent, name, &target, &meta).map_err(ctx)?
            }
            b'1' => {
                let target = entry
                    .link
                    .clone()
                    .ok_or_else(|| ctx(io::Error::other("hardlink without a target")))?;
                let target = normalize(&target)
                    .map_err(|reason| Error::UnsafeEntry {
                        entry: shown.to_owned(),
                        reason: format!("hardlink target: {reason}"),
                    })?
                    .ok_or_else(|| Error::UnsafeEntry {
                        entry: shown.to_owned(),
                        reason: "hardlink to the layer root".into(),
                    })?;
                self.claim(parent, name)?;
                if self.known.is_some() {
                    // The target may be a queued file.
                    self.barrier()?;
                }
                self.hardlink(parent, name, &target).map_err(ctx)?
            }
            b'3' | b'4' => match self.opts.devices {
                DevicePolicy::Skip => {
                    self.skip_device(shown, "devices are skipped");
                    return Ok(());
                }
                DevicePolicy::Reject => {
                    return Err(Error::UnsafeEntry {
                        entry: shown.to_owned(),
                        reason: "device nodes are not allowed".into(),
                    })
                }
                DevicePolicy::Create => {
                    let ft = if kind == b'3' {
                        FileType::CharacterDevice
                    } else {
                        FileType::BlockDevice
                    };
                    self.claim(parent, name)?;
                    let dev = rfs::makedev(entry.dev_major, entry.dev_minor);
                    match self.node(parent, name, ft, dev, &meta) {
                        Ok(()) => {}
                        // No CAP_MKNOD here after all (a user namespace).
                        Err(e) if e.raw_os_error() == Some(Errno::PERM.raw_os_error()) => {
                            self.skip_device(shown, "mknod is not permitted");
                            return Ok(());
                        }
                        Err(e) => return Err(ctx(e)),
                    }
                }
            },
            b'6' => {
                self.claim(parent, name)?;
                self.node(parent, name, FileType::Fifo, 0, &meta)
                    .map_err(ctx)?
            }
            other => {
                tracing::debug!(entry = %shown.display(), kind = ?other, "skipping an unsupported entry type");
                return Ok(());
            }
        }
        if tracked {
            self.created.insert(rel);
        }
        Ok(())
    }

    fn meta(&self, m: &Member) -> Meta {
        let xattrs = if self.opts.xattrs {
            m.xattrs
                .iter()
                .filter(|(k, _)| k.to_str().is_some_and(xattr_allowed))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        Meta {
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            mtime: Timespec {
                tv_sec: m.mtime.0,
                tv_nsec: m.mtime.1,
            },
            xattrs,
        }
    }

    /// A device node left out: logged and recorded in the layer's warnings.
    fn skip_device(&mut self, shown: &Path, why: &str) {
        tracing::warn!(entry = %shown.display(), why, "skipping a device node");
        self.warnings
            .push(format!("skipped device node {} ({why})", shown.display()));
    }

    /// A directory fd (O_PATH) for `parent`, resolved inside the root;
    /// missing directories are created.
    fn parent_fd(&mut self, parent: &Path) -> io::Result<BorrowedFd<'_>> {
        if parent.as_os_str().is_empty() {
            return Ok(self.root);
        }
        self.cache_dir(parent)?;
        Ok(self.dir_fds[parent].0.as_fd())
    }

    /// Like [`Self::parent_fd`], as a shareable fd with its inode number.
    fn parent_dir(&mut self, parent: &Path) -> io::Result<(Arc<OwnedFd>, u64)> {
        if parent.as_os_str().is_empty() {
            return Ok(self.root_dir.clone());
        }
        self.cache_dir(parent)?;
        Ok(self.dir_fds[parent].clone())
    }

    fn cache_dir(&mut self, parent: &Path) -> io::Result<()> {
        if self.dir_fds.contains_key(parent) {
            return Ok(());
        }
        let fd = match resolve_dir(self.root, parent) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => self.mkdir_all(parent)?,
            Err(e) => return Err(errno(e)),
        };
        let ino = rfs::fstat(&fd).map_err(errno)?.st_ino;
        if self.dir_fds.len() >= self.dir_cap {
            // Full: drop one (whichever the map yields first).
            let old = self.dir_fds.keys().next().cloned();
            if let Some(old) = old {
                self.dir_fds.remove(&old);
            }
        }
        self.dir_fds.insert(parent.to_owned(), (Arc::new(fd), ino));
        Ok(())
    }

    /// Before creating `parent/name` while writers may be creating files:
    /// `Some(dir)` when the name is new to this layer (a writer may create
    /// a file there with O_EXCL); `None` when the parser must handle it, in
    /// which case every queued creation has been carried out first.
    fn claim(&mut self, parent: &Path, name: &OsStr) -> Result<Option<Arc<OwnedFd>>> {
        if self.known.is_none() {
            return Ok(None);
        }
        let (dir, ino) = self.parent_dir(parent).map_err(|source| Error::Entry {
            entry: parent.join(name),
            source,
        })?;
        if self.note_name(ino, name) {
            self.barrier()?;
            return Ok(None);
        }
        Ok(Some(dir))
    }

    fn mkdir_all(&mut self, path: &Path) -> io::Result<OwnedFd> {
        let mut cur: Option<OwnedFd> = None;
        let mut so_far = PathBuf::new();
        for comp in path.components() {
            so_far.push(comp);
            match resolve_dir(self.root, &so_far) {
                Ok(fd) => cur = Some(fd),
                Err(Errno::NOENT) => {
                    let dirfd = cur.as_ref().map(|f| f.as_fd()).unwrap_or(self.root);
                    if self.known.is_some() {
                        // A queued file of that name must exist first (and
                        // then fails this, as it would in archive order).
                        let ino = rfs::fstat(dirfd).map_err(errno)?.st_ino;
                        if self.note_name(ino, comp.as_os_str()) {
                            self.barrier()
                                .map_err(|_| io::Error::other("the file writer stopped"))?;
                        }
                    }
                    let dirfd = cur.as_ref().map(|f| f.as_fd()).unwrap_or(self.root);
                    match rfs::mkdirat(dirfd, comp.as_os_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(errno(e)),
                    }
                    if self.opts.whiteouts == Whiteouts::Apply {
                        self.created.insert(so_far.clone());
                    }
                    cur = Some(resolve_dir(self.root, &so_far).map_err(errno)?);
                }
                Err(e) => return Err(errno(e)),
            }
        }
        cur.ok_or_else(|| io::Error::other("empty parent path"))
    }

    /// Make room for a new entry at `parent/name` that already exists.
    /// Returns false when an existing directory should be kept (a directory
    /// entry over a directory).
    fn clear(&mut self, parent: &Path, name: &OsStr, new_is_dir: bool) -> io::Result<bool> {
        let pfd = self.parent_fd(parent)?;
        let st = match rfs::statat(pfd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(true),
            Err(e) => return Err(errno(e)),
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::Directory {
            if new_is_dir {
                return Ok(false);
            }
            remove_all_at(pfd, name)?;
            // A directory we may hold an fd into is gone.
            self.forget_dirs();
        } else {
            rfs::unlinkat(pfd, name, AtFlags::empty()).map_err(errno)?;
            // It may have been a symlink that cached paths went through.
            self.forget_dirs();
            if new_is_dir
                && self.opts.whiteouts == Whiteouts::Overlay
                && is_overlay_whiteout(ft, st.st_rdev)
            {
                // A directory re-created over its own whiteout in the same
                // layer: it must hide the lower directory, so it is opaque.
                let pfd = self.parent_fd(parent)?;
                rfs::mkdirat(pfd, name, Mode::from_raw_mode(0o700)).map_err(errno)?;
                let d = rfs::openat(
                    pfd,
                    name,
                    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(errno)?;
                kcore_overlay::set_opaque(d.as_fd())?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn dir(&mut self, parent: &Path, name: &OsStr) -> io::Result<()> {
        let pfd = self.parent_fd(parent)?;
        match rfs::mkdirat(pfd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => {
                if self.clear(parent, name, true)? {
                    let pfd = self.parent_fd(parent)?;
                    rfs::mkdirat(pfd, name, Mode::from_raw_mode(0o700)).map_err(errno)?;
                }
                Ok(())
            }
            Err(e) => Err(errno(e)),
        }
    }

    /// Create a regular file and queue its data and metadata for the
    /// writer. Errors of the writer surface later, naming the entry.
    fn file<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        entry: &Member,
        parent: &Path,
        name: &OsStr,
        meta: Meta,
        shown: &Path,
    ) -> Result<()> {
        let ctx = |source: io::Error| Error::Entry {
            entry: shown.to_owned(),
            source,
        };
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // Created with its final permission bits when the umask keeps them
        // and no special bit needs setting after the chown.
        let exact = self.owner.created_exact(meta.mode);
        let raw_mode = if exact { meta.mode } else { 0o600 };
        if self.batch.files >= BATCH_FILES {
            self.flush()?;
        }
        if let Some(dir) = self.claim(parent, name)? {
            // A name new to this layer: a writer creates it.
            self.batch.files += 1;
            self.batch.ops.push(Op::Create(NewFile {
                dir,
                name: name.to_owned(),
                mode: raw_mode,
                meta,
                chmod: !exact,
                entry: shown.to_owned(),
            }));
            return self.file_data(tar, entry, shown);
        }
        let mode = Mode::from_raw_mode(raw_mode);
        let pfd = self.parent_fd(parent).map_err(ctx)?;
        let fd = match rfs::openat(pfd, name, flags, mode) {
            Ok(fd) => fd,
            Err(Errno::EXIST) => {
                self.clear(parent, name, false).map_err(ctx)?;
                let pfd = self.parent_fd(parent).map_err(ctx)?;
                rfs::openat(pfd, name, flags, mode).map_err(|e| ctx(errno(e)))?
            }
            Err(e) => return Err(ctx(errno(e))),
        };
        self.batch.files += 1;
        self.batch.ops.push(Op::Start(PendingFile {
            file: File::from(fd),
            meta,
            chmod: !exact,
            entry: shown.to_owned(),
        }));
        self.file_data(tar, entry, shown)
    }

    /// Queue the data of the file just started, then its end. A sparse
    /// file gets a seek before each data segment and its final length, so
    /// its holes are never written.
    fn file_data<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        entry: &Member,
        shown: &Path,
    ) -> Result<()> {
        match &entry.sparse {
            None => self.segment_data(tar, entry.size, shown)?,
            Some(map) => {
                for &(off, len) in &map.segments {
                    if len == 0 {
                        continue;
                    }
                    self.batch.ops.push(Op::Seek(off));
                    self.segment_data(tar, len, shown)?;
                }
                self.batch.ops.push(Op::SetLen(map.real_size));
            }
        }
        self.batch.ops.push(Op::End);
        Ok(())
    }

    /// Queue `len` bytes of the member's data for the current file.
    fn segment_data<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        mut len: u64,
        shown: &Path,
    ) -> Result<()> {
        let ctx = |source: io::Error| Error::Entry {
            entry: shown.to_owned(),
            source,
        };
        while len > 0 {
            if self.batch.used == BATCH_BYTES {
                // The file goes on in the next batch, on the same writer.
                self.mid_file = true;
                self.flush()?;
            }
            let start = self.batch.used;
            let room = (BATCH_BYTES - start).min(usize::try_from(len).unwrap_or(usize::MAX));
            let n = match tar.read_data(&mut self.batch.data[start..start + room]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ctx(e)),
            };
            len -= n as u64;
            self.batch.used += n;
            match self.batch.ops.last_mut() {
                Some(Op::Write(_, end)) if *end == start => *end += n,
                _ => self.batch.ops.push(Op::Write(start, start + n)),
            }
        }
        Ok(())
    }

    fn owner(&self) -> (bool, u32, u32) {
        (self.owner.same_owner, self.owner.euid, self.owner.egid)
    }

    fn symlink(
        &mut self,
        parent: &Path,
        name: &OsStr,
        target: &[u8],
        meta: &Meta,
    ) -> io::Result<()> {
        let target = OsStr::from_bytes(target);
        let pfd = self.parent_fd(parent)?;
        match rfs::symlinkat(target, pfd, name) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                self.clear(parent, name, false)?;
                let pfd = self.parent_fd(parent)?;
                rfs::symlinkat(target, pfd, name).map_err(errno)?;
            }
            Err(e) => return Err(errno(e)),
        }
        let owner = self.owner();
        let pfd = self.parent_fd(parent)?;
        Self::finish_at(owner, pfd, name, meta)
    }

    /// Metadata on a non-openable node (symlink, device, fifo), by name.
    fn finish_at(
        owner: (bool, u32, u32),
        pfd: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
    ) -> io::Result<()> {
        let (same_owner, euid, egid) = owner;
        if same_owner && !(meta.uid == u64::from(euid) && meta.gid == u64::from(egid)) {
            let (u, g) = ids(meta.uid, meta.gid)?;
            rfs::chownat(pfd, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
        }
        let ts = Timestamps {
            last_access: meta.mtime,
            last_modification: meta.mtime,
        };
        rfs::utimensat(pfd, name, &ts, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)
    }

    fn node(
        &mut self,
        parent: &Path,
        name: &OsStr,
        ft: FileType,
        dev: u64,
        meta: &Meta,
    ) -> io::Result<()> {
        let mode = Mode::from_raw_mode(meta.mode & 0o777);
        let pfd = self.parent_fd(parent)?;
        match rfs::mknodat(pfd, name, ft, mode, dev) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                self.clear(parent, name, false)?;
                let pfd = self.parent_fd(parent)?;
                rfs::mknodat(pfd, name, ft, mode, dev).map_err(errno)?;
            }
            Err(e) => return Err(errno(e)),
        }
        let owner = self.owner();
        let pfd = self.parent_fd(parent)?;
        Self::finish_at(owner, pfd, name, meta)?;
        // fchmodat cannot skip symlinks but this is not one: apply the full
        // mode (umask may have masked it) after the chown.
        rfs::chmodat(pfd, name, Mode::from_raw_mode(meta.mode), AtFlags::empty()).map_err(errno)
    }

    fn hardlink(&mut self, parent: &Path, name: &OsStr, target: &Path) -> io::Result<()> {
        let tname = target.file_name().expect("normalized").to_owned();
        let tparent = target.parent().unwrap_or(Path::new(""));
        let tfd = if tparent.as_os_str().is_empty() {
            None
        } else {
            Some(resolve_dir(self.root, tparent).map_err(errno)?)
        };
        let link = |pfd: BorrowedFd<'_>, tfd: &Option<OwnedFd>, root: BorrowedFd<'_>| {
            let t = tfd.as_ref().map(|f| f.as_fd()).unwrap_or(root);
            rfs::linkat(t, &tname, pfd, name, AtFlags::empty())
        };
        let root = self.root;
        let pfd = self.parent_fd(parent)?;
        match link(pfd, &tfd, root) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => {
                // Linking an entry to itself is a no-op.
                let pfd = self.parent_fd(parent)?;
                let a = rfs::statat(pfd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
                let t = tfd.as_ref().map(|f| f.as_fd()).unwrap_or(root);
                let b = rfs::statat(t, &tname, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
                if a.st_ino == b.st_ino && a.st_dev == b.st_dev {
                    return Ok(());
                }
                self.clear(parent, name, false)?;
                let pfd = self.parent_fd(parent)?;
                link(pfd, &tfd, root).map_err(errno)
            }
            Err(Errno::NOENT) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("hardlink target {} is not in the layer", target.display()),
            )),
            Err(e) => Err(errno(e)),
        }
    }

    fn whiteout(&mut self, parent: &Path, hidden: &OsStr) -> io::Result<()> {
        let mode = self.opts.whiteouts;
        let path = parent.join(hidden);
        let same_layer = self.created.contains(&path);
        let pfd = self.parent_fd(parent)?;
        let existing = match rfs::statat(pfd, hidden, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(FileType::from_raw_mode(st.st_mode)),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(errno(e)),
        };
        match mode {
            Whiteouts::Overlay => match existing {
                // Same-layer entries are not hidden by a whiteout; a directory
                // of this layer still has to hide the lower one.
                Some(FileType::Directory) => {
                    let d = rfs::openat(
                        pfd,
                        hidden,
                        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(errno)?;
                    kcore_overlay::set_opaque(d.as_fd())
                }
                Some(_) => Ok(()),
                None => make_overlay_whiteout(pfd, hidden),
            },
            Whiteouts::Apply => match existing {
                None => Ok(()),
                Some(_) if same_layer => Ok(()),
                Some(FileType::Directory) => {
                    remove_all_at(pfd, hidden)?;
                    self.forget_dirs();
                    Ok(())
                }
                Some(_) => {
                    rfs::unlinkat(pfd, hidden, AtFlags::empty()).map_err(errno)?;
                    // It may have been a symlink that cached paths went through.
                    self.forget_dirs();
                    Ok(())
                }
            },
        }
    }

    fn opaque(&mut self, dir: &Path) -> io::Result<()> {
        match self.opts.whiteouts {
            Whiteouts::Overlay => {
                let fd = if dir.as_os_str().is_empty() {
                    rfs::openat(
                        self.root,
                        ".",
                        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                } else {
                    self.parent_fd(dir)?;
                    open_in(
                        self.root,
                        dir,
                        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                    )
                }
                .map_err(errno)?;
                kcore_overlay::set_opaque(fd.as_fd())
            }
            Whiteouts::Apply => {
                // Remove every child that the lower layers put there.
                self.parent_fd(dir)?;
                let fd = if dir.as_os_str().is_empty() {
                    rfs::openat(
                        self.root,
                        ".",
                        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                } else {
                    open_in(
                        self.root,
                        dir,
                        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                    )
                }
                .map_err(errno)?;
                let mut doomed = Vec::new();
                let mut it = rfs::Dir::read_from(&fd).map_err(errno)?;
                while let Some(e) = it.read() {
                    let e = e.map_err(errno)?;
                    let n = e.file_name().to_bytes();
                    if n == b"." || n == b".." {
                        continue;
                    }
                    let n = OsStr::from_bytes(n).to_owned();
                    if !self.created.contains(&dir.join(&n)) {
                        doomed.push((n, e.file_type()));
                    }
                }
                for (n, ft) in doomed {
                    if ft == FileType::Directory {
                        remove_all_at(fd.as_fd(), &n)?;
                    } else {
                        match rfs::unlinkat(&fd, &n, AtFlags::empty()) {
                            Err(Errno::ISDIR) | Err(Errno::PERM) => remove_all_at(fd.as_fd(), &n)?,
                            r => r.map_err(errno)?,
                        }
                    }
                }
                self.forget_dirs();
                Ok(())
            }
        }
    }

    /// Deferred directory metadata: after every child is in place, so the
    /// mtimes stick and read-only directories did not block their children.
    fn finish(&mut self) -> Result<()> {
        self.forget_dirs();
        let dirs = std::mem::take(&mut self.dirs);
        for d in dirs.iter().rev() {
            let fd = if d.path.as_os_str().is_empty() {
                rfs::openat(
                    self.root,
                    ".",
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            } else {
                open_in(
                    self.root,
                    &d.path,
                    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                )
            };
            let fd = match fd {
                Ok(fd) => fd,
                // Replaced or removed by a later entry of the layer.
                Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => continue,
                Err(e) => {
                    return Err(Error::Entry {
                        entry: d.path.clone(),
                        source: errno(e),
                    })
                }
            };
            let meta = Meta {
                mode: d.mode,
                uid: d.uid,
                gid: d.gid,
                mtime: d.mtime,
                xattrs: d.xattrs.clone(),
            };
            self.owner
                .finish_fd(&fd, &meta, true)
                .map_err(|source| Error::Entry {
                    entry: d.path.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

fn ids(uid: u64, gid: u64) -> io::Result<(rustix::process::Uid, rustix::process::Gid)> {
    let u = u32::try_from(uid).map_err(|_| io::Error::other(format!("uid {uid} out of range")))?;
    let g = u32::try_from(gid).map_err(|_| io::Error::other(format!("gid {gid} out of range")))?;
    Ok((
        rustix::process::Uid::from_raw(u),
        rustix::process::Gid::from_raw(g),
    ))
}

fn set_xattr(fd: &impl AsFd, name: &OsStr, value: &[u8]) -> io::Result<()> {
    match rfs::fsetxattr(fd, name, value, XattrFlags::empty()) {
        Ok(()) => Ok(()),
        // The filesystem (or a non-root caller) cannot keep it: not fatal.
        Err(Errno::NOTSUP | Errno::PERM) => {
            tracing::debug!(xattr = ?name, "xattr not supported here; skipped");
            Ok(())
        }
        Err(e) => Err(errno(e)),
    }
}

fn xattr_allowed(name: &str) -> bool {
    name.starts_with("user.") || name == "security.capability"
}

/// Normalize an archive path to a relative path of plain components. A
/// leading `/` and `.` components are dropped (confined to the root); `..`
/// is refused. `Ok(None)` names the root itself.
pub(crate) fn normalize(raw: &[u8]) -> std::result::Result<Option<PathBuf>, &'static str> {
    if raw.contains(&0) {
        return Err("path contains a NUL byte");
    }
    let mut out = PathBuf::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("path contains a '..' component"),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

/// Whether a directory has no entries besides `.` and `..`.
fn dir_is_empty(dir: BorrowedFd<'_>) -> io::Result<bool> {
    let mut it = rfs::Dir::read_from(dir).map_err(errno)?;
    while let Some(e) = it.read() {
        let e = e.map_err(errno)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

fn is_overlay_whiteout(ft: FileType, rdev: u64) -> bool {
    ft == FileType::CharacterDevice && rdev == 0
}

/// An overlayfs whiteout: a 0:0 character device (kcore-overlay's format).
fn make_overlay_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    kcore_overlay::whiteout_at(dir, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_confines_and_refuses() {
        assert_eq!(normalize(b"./a/b").unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(
            normalize(b"/etc/passwd").unwrap(),
            Some(PathBuf::from("etc/passwd"))
        );
        assert_eq!(normalize(b"a//./b/").unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(normalize(b"./").unwrap(), None);
        assert!(normalize(b"a/../../b").is_err());
        assert!(normalize(b"..").is_err());
    }

    #[test]
    fn compression_detection() {
        assert_eq!(
            Compression::from_magic(&[0x1f, 0x8b, 8]),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_magic(&[0x28, 0xb5, 0x2f, 0xfd]),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::from_magic(b"etc/\0\0"), None);
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar"),
            Some(Compression::None)
        );
    }
}
