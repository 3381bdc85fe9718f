//! Private state directories and files, with the modes asked for whatever the umask.
//!
//! A daemon's state directory holds what other accounts on the host must not read:
//! stored objects, keys, tokens, container logs. `mkdir` and `open` with `O_CREAT`
//! apply the process's umask, which can only take bits away, and leave the mode of an
//! existing path alone, so a file an older version made world-readable stays that way.
//! The calls here close both gaps:
//!
//! - [`ensure_dir`] creates a directory, and every missing parent, with exactly the
//!   mode asked for; an existing directory loses the bits the mode lacks (it is never
//!   widened, so an administrator's tighter choice stands).
//! - [`open`] opens (creating if the options say so) a file and gives it exactly the
//!   mode, new or old.
//! - [`write`] replaces a file's content atomically: a temporary file beside it,
//!   created with the mode (`O_EXCL`), renamed over it. A reader never sees half a file,
//!   and the content is never readable under a looser mode, even for a moment.
//!   [`write_volatile`] does the same for state that need not survive a host crash,
//!   without the writeback a rename over a file forces on ext4.
//! - [`tighten`] clears the bits a mode lacks on an existing path and reports what it
//!   changed, for a daemon that migrates an older tree and says so.
//!
//! The modes kcore uses are constants: [`PRIVATE_DIR`] and [`PRIVATE_FILE`] for state
//! only its owner (root) may read, [`GROUP_DIR`] and [`GROUP_FILE`] for what the owner's
//! group may read too (container logs, as the kubelet keeps them).
//!
//! # Example
//!
//! ```
//! use std::os::unix::fs::PermissionsExt;
//! use kcore_statedir::{ensure_dir, write, PRIVATE_DIR, PRIVATE_FILE};
//!
//! let base = tempfile::tempdir()?;
//! let dir = base.path().join("state/apiserver");
//! ensure_dir(&dir, PRIVATE_DIR)?; // state/ and state/apiserver/, both 0700
//! write(&dir.join("token"), b"s3cret", PRIVATE_FILE)?;
//! let mode = std::fs::metadata(dir.join("token"))?.permissions().mode() & 0o777;
//! assert_eq!(mode, 0o600);
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory only its owner may enter (a data directory, a store, keys).
pub const PRIVATE_DIR: u32 = 0o700;
/// A file only its owner may read or write (stored objects, keys, tokens, state).
pub const PRIVATE_FILE: u32 = 0o600;
/// A directory its owner's group may read too (container logs, pod directories, as
/// the kubelet keeps them).
pub const GROUP_DIR: u32 = 0o750;
/// A file its owner's group may read too (container logs).
pub const GROUP_FILE: u32 = 0o640;

/// The permission bits of a mode (`st_mode & 07777`).
const PERMISSION_BITS: u32 = 0o7777;

/// What [`tighten`] (or [`ensure_dir`] on an existing directory) changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tightened {
    /// The path whose mode changed.
    pub path: PathBuf,
    /// Its permission bits before.
    pub was: u32,
    /// Its permission bits now.
    pub now: u32,
}

impl fmt::Display for Tightened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04o} -> {:04o}",
            self.path.display(),
            self.was,
            self.now
        )
    }
}

/// The permission bits of `path` (following symlinks), or `None` if it does not exist.
pub fn mode_of(path: &Path) -> io::Result<Option<u32>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.permissions().mode() & PERMISSION_BITS)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Clears the permission bits of the existing `path` (following symlinks) that `mode`
/// lacks; never adds any. Returns what changed, `None` when nothing did or `path` does
/// not exist.
pub fn tighten(path: &Path, mode: u32) -> io::Result<Option<Tightened>> {
    let Some(was) = mode_of(path)? else {
        return Ok(None);
    };
    let now = was & mode;
    if now == was {
        return Ok(None);
    }
    fs::set_permissions(path, Permissions::from_mode(now))?;
    Ok(Some(Tightened {
        path: path.to_owned(),
        was,
        now,
    }))
}

/// Makes sure `dir` is a directory: creates it and each missing parent with exactly
/// `mode`, or, when it exists, [tightens](tighten) it to `mode` and returns what
/// changed. Existing parents are left alone.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<Option<Tightened>> {
    // the missing directories, deepest first
    let mut missing = Vec::new();
    let mut cur = Some(dir).filter(|p| !p.as_os_str().is_empty());
    while let Some(p) = cur {
        match fs::metadata(p) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} exists and is not a directory", p.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(p);
                cur = p.parent().filter(|p| !p.as_os_str().is_empty());
            }
            Err(e) => return Err(e),
        }
    }
    if missing.is_empty() {
        return tighten(dir, mode);
    }
    for p in missing.iter().rev() {
        match fs::DirBuilder::new().mode(mode).create(p) {
            // the umask may have taken bits away: set exactly `mode`
            Ok(()) => fs::set_permissions(p, Permissions::from_mode(mode))?,
            // made meanwhile by another thread or process: no looser than `mode` either
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => {
                tighten(p, mode)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Opens `path` with `options` (creating it if they say so) and gives the file exactly
/// `mode`, whether it was just made or already there. The file is never open under a
/// looser mode than `mode`: a new one is created with it (less what the umask takes).
pub fn open(path: &Path, options: &OpenOptions, mode: u32) -> io::Result<File> {
    let mut options = options.clone();
    options.mode(mode);
    let file = options.open(path)?;
    if file.metadata()?.permissions().mode() & PERMISSION_BITS != mode {
        file.set_permissions(Permissions::from_mode(mode))?;
    }
    Ok(file)
}

/// Replaces the content of `path` with `data` atomically, the file getting exactly
/// `mode`: written to a new temporary file beside it (created with `mode`, `O_EXCL`),
/// then renamed over it. Readers see the old content or the new, never a part; on
/// failure the temporary file is removed and `path` is untouched.
///
/// The data is not synced to disk: a caller that must survive a power loss syncs the
/// directory and file itself. A rename over an existing file does make ext4 (with its
/// default `auto_da_alloc`) start writing the new blocks back, so after a crash the file
/// holds the old content or the new, not an empty one; state that need not survive a
/// crash of the host can skip that cost with [`write_volatile`].
pub fn write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_via_temporary(path, data, mode, |tmp| fs::rename(tmp, path))
}

/// Like [`write`], for state that need not survive a crash of the host (what runc and
/// crun keep on `/run`): the temporary file is *exchanged* with `path`
/// (`renameat2(RENAME_EXCHANGE)`) and then removed, holding the old content.
///
/// Readers still see the old content or the new, never a part. What it saves: ext4
/// allocates and starts writing back the new file's blocks when a rename replaces a
/// file, so every change of a small, short-lived state file wrote to disk, and removing
/// it later freed those blocks (a synchronous discard on a `discard` mount). An exchange
/// forces nothing. Where `path` does not exist yet, or the file system (or kernel)
/// cannot exchange, it is a plain rename.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let state = dir.path().join("state.json");
/// kcore_statedir::write_volatile(&state, b"{\"status\":\"created\"}", kcore_statedir::PRIVATE_FILE)?;
/// kcore_statedir::write_volatile(&state, b"{\"status\":\"running\"}", kcore_statedir::PRIVATE_FILE)?;
/// assert_eq!(std::fs::read(&state)?, b"{\"status\":\"running\"}");
/// assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write_volatile(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    write_via_temporary(path, data, mode, |tmp| {
        let c =
            |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
        let (from, to) = (c(tmp)?, c(path)?);
        // SAFETY: two NUL-terminated paths, resolved against the working directory.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            // `tmp` holds the old content now.
            return fs::remove_file(tmp);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // Nothing to exchange with yet, or no exchange here: a rename that replaces
            // nothing forces no writeback.
            Some(libc::ENOENT | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                fs::rename(tmp, path)
            }
            _ => Err(err),
        }
    })
}

/// Writes `data` to a new temporary file beside `path` with `mode`, then lets `install`
/// put it in place; on any failure the temporary file is removed.
fn write_via_temporary(
    path: &Path,
    data: &[u8],
    mode: u32,
    install: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let tmp = path.with_file_name(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        let mut f = open(&tmp, &options, mode)?;
        f.write_all(data)?;
        drop(f);
        install(&tmp)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        mode_of(p).unwrap().expect("exists")
    }

    /// Runs `f` under each of a few umasks, restoring the old one. The calls under test
    /// set exact modes, so the other tests of this binary do not care which is in force.
    fn under_umasks(f: impl Fn(u32)) {
        for mask in [0o000, 0o022, 0o077] {
            // SAFETY: umask only swaps the process's mask; no memory is involved.
            let old = unsafe { libc::umask(mask) };
            f(mask);
            // SAFETY: as above.
            unsafe { libc::umask(old) };
        }
    }

    #[test]
    fn ensure_dir_creates_missing_parents_with_exactly_the_mode() {
        under_umasks(|mask| {
            let base = tempfile::tempdir().unwrap();
            let leaf = base.path().join("a/b/c");
            assert_eq!(ensure_dir(&leaf, GROUP_DIR).unwrap(), None);
            for p in ["a", "a/b", "a/b/c"] {
                assert_eq!(
                    mode(&base.path().join(p)),
                    0o750,
                    "{p} under umask {mask:o}"
                );
            }
            // idempotent
            assert_eq!(ensure_dir(&leaf, GROUP_DIR).unwrap(), None);
        });
    }

    #[test]
    fn ensure_dir_tightens_an_existing_directory_and_never_widens_it() {
        let base = tempfile::tempdir().unwrap();
        let d = base.path().join("old");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, Permissions::from_mode(0o755)).unwrap();
        let t = ensure_dir(&d, PRIVATE_DIR).unwrap().expect("tightened");
        assert_eq!((t.was, t.now), (0o755, 0o700));
        assert_eq!(mode(&d), 0o700);
        assert!(t.to_string().ends_with("old 0755 -> 0700"), "{t}");
        // an administrator's tighter choice stands
        assert_eq!(ensure_dir(&d, GROUP_DIR).unwrap(), None);
        assert_eq!(mode(&d), 0o700);
    }

    #[test]
    fn ensure_dir_refuses_a_file() {
        let base = tempfile::tempdir().unwrap();
        let f = base.path().join("f");
        fs::write(&f, b"").unwrap();
        let e = ensure_dir(&f, PRIVATE_DIR).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
        let e = ensure_dir(&f.join("sub"), PRIVATE_DIR).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotADirectory, "{e}");
    }

    #[test]
    fn open_gives_new_and_existing_files_exactly_the_mode() {
        under_umasks(|mask| {
            let base = tempfile::tempdir().unwrap();
            let p = base.path().join("log");
            let mut o = OpenOptions::new();
            o.create(true).append(true);
            open(&p, &o, GROUP_FILE).unwrap();
            assert_eq!(mode(&p), 0o640, "new file under umask {mask:o}");
            fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
            open(&p, &o, PRIVATE_FILE).unwrap();
            assert_eq!(mode(&p), 0o600, "old file under umask {mask:o}");
        });
    }

    #[test]
    fn write_replaces_atomically_with_the_mode_and_leaves_no_temporary_file() {
        under_umasks(|mask| {
            let base = tempfile::tempdir().unwrap();
            let p = base.path().join("state.json");
            fs::write(&p, b"old").unwrap();
            fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
            write(&p, b"new", PRIVATE_FILE).unwrap();
            assert_eq!(fs::read(&p).unwrap(), b"new");
            assert_eq!(mode(&p), 0o600, "under umask {mask:o}");
            let names: Vec<_> = fs::read_dir(base.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["state.json"]);
        });
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temporary_file() {
        let base = tempfile::tempdir().unwrap();
        // a directory where the file should go: the rename fails
        let d = base.path().join("state.json");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("inside"), b"kept").unwrap();
        assert!(write(&d, b"new", PRIVATE_FILE).is_err());
        assert_eq!(fs::read(d.join("inside")).unwrap(), b"kept");
        let names: Vec<_> = fs::read_dir(base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn write_volatile_exchanges_leaving_one_private_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        let listing = || {
            let mut v: Vec<String> = fs::read_dir(d.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        // First write: nothing to exchange with.
        write_volatile(&p, b"one", PRIVATE_FILE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        // Later writes exchange; the old content goes away with the temporary file.
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        let first = ino(&p);
        write_volatile(&p, b"two, longer", PRIVATE_FILE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two, longer");
        assert_ne!(ino(&p), first, "a new file took the name");
        write_volatile(&p, b"3", PRIVATE_FILE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"3");
        assert_eq!(listing(), ["state.json"]);
        assert_eq!(mode(&p), 0o600);
        // A directory that is gone: the error, and no temporary file left anywhere.
        let e = write_volatile(&d.path().join("gone/state.json"), b"x", PRIVATE_FILE).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert_eq!(listing(), ["state.json"]);
    }

    #[test]
    fn tighten_reports_only_changes() {
        let base = tempfile::tempdir().unwrap();
        assert_eq!(tighten(&base.path().join("missing"), 0o600).unwrap(), None);
        let p = base.path().join("f");
        fs::write(&p, b"").unwrap();
        fs::set_permissions(&p, Permissions::from_mode(0o600)).unwrap();
        assert_eq!(tighten(&p, GROUP_FILE).unwrap(), None);
        fs::set_permissions(&p, Permissions::from_mode(0o666)).unwrap();
        let t = tighten(&p, GROUP_FILE).unwrap().expect("tightened");
        assert_eq!((t.was, t.now), (0o666, 0o640));
    }
}
