//! Paths inside a directory root, through file descriptors.
//!
//! A container runtime and an image unpacker both act on paths *inside* a tree that
//! someone else filled (an image layer, a container rootfs). Resolving such a path as a
//! string (`root.join(path)` after reading symlinks) and then acting on the string is a
//! time-of-check/time-of-use race: a symlink swapped in between sends the action outside
//! the root (runc CVE-2021-30465). The helpers here never do that:
//!
//! - every lookup starts at a directory fd of the root and goes through
//!   `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: symlinks, absolute or relative,
//!   and `..` resolve as if the root were `/`, and `/proc` magic links are refused;
//! - on kernels without openat2 (before Linux 5.6, `ENOSYS`) the same semantics come from
//!   [`walk_in`], a component-by-component walk that opens each component with
//!   `O_PATH | O_NOFOLLOW` relative to the fd of its parent, reads symlinks itself and
//!   keeps `..` from leaving the root by popping its own stack of fds (it never opens
//!   `..`);
//! - missing components are created with `mkdirat` / `openat(O_CREAT | O_EXCL |
//!   O_NOFOLLOW)` in a parent fd that was itself resolved inside the root, and the
//!   result is the fd of what was created, so the caller acts on that object, not on a
//!   path looked up again (hand it to a path-only syscall as [`proc_fd_path`]).
//!
//! # Example
//!
//! ```
//! use kcore_rootfd::{mkdir_all_in, open_in, open_root, OFlags};
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::create_dir(dir.path().join("etc"))?;
//! std::os::unix::fs::symlink("../../../etc", dir.path().join("up"))?;
//! let root = open_root(dir.path())?;
//! // `up` points far above the root; inside it, it is the root's own /etc.
//! let fd = mkdir_all_in(&root, "up/conf.d".as_ref(), 0o755)?;
//! assert!(dir.path().join("etc/conf.d").is_dir());
//! let again = open_in(&root, "/up/conf.d".as_ref(), OFlags::PATH | OFlags::DIRECTORY)?;
//! assert_eq!(rustix::fs::fstat(&fd)?.st_ino, rustix::fs::fstat(&again)?.st_ino);
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg(target_os = "linux")]

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

pub use rustix::fs::OFlags;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, ResolveFlags};
pub use rustix::io::Errno;

/// Symlinks followed in one resolution before `ELOOP` (the kernel's limit).
const MAX_LINKS: usize = 40;

/// Set once openat2 answered `ENOSYS`: later calls go straight to [`walk_in`].
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `path` as a root directory fd (`O_PATH | O_DIRECTORY`) for the other helpers.
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens `path` inside `root` with `flags` (`O_CLOEXEC` is added; `O_CREAT` is not
/// supported): symlinks and `..` resolve as if `root` were `/`, magic links are refused.
/// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` where the kernel has it, else
/// [`walk_in`].
pub fn open_in(root: impl AsFd, path: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let root = root.as_fd();
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        loop {
            match rfs::openat2(
                root,
                path,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                // A rename elsewhere raced the lookup (EAGAIN), or a signal: try again.
                Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
                Err(Errno::NOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                r => return r,
            }
        }
    }
    walk_in(root, path, flags)
}

/// A directory inside `root`, as an `O_PATH` fd.
pub fn resolve_dir(root: impl AsFd, path: &Path) -> rustix::io::Result<OwnedFd> {
    open_in(root, path, OFlags::PATH | OFlags::DIRECTORY)
}

/// The plain components of `path` as bytes (`/` and `.` dropped, `..` kept).
fn components(path: &Path) -> impl DoubleEndedIterator<Item = &OsStr> {
    path.as_os_str()
        .as_bytes()
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(OsStr::from_bytes)
}

/// The fallback of [`open_in`] for kernels without openat2, usable on its own.
///
/// Walks `path` one component at a time: each is opened with `O_PATH | O_NOFOLLOW`
/// relative to the fd of its parent (so a symlink swapped in is seen, never followed by
/// the kernel), a symlink is read with `readlinkat` and its target walked from the root
/// (absolute) or the current directory (relative), `..` pops the walk's own stack of
/// directory fds and stops at the root, and at most 40 links are followed (`ELOOP`).
/// Magic links cannot be followed: a link is only ever read as text. The final object is
/// reopened with `flags` relative to its parent with `O_NOFOLLOW`, and checked to be the
/// inode the walk found (`EAGAIN` if it was replaced in between).
pub fn walk_in(root: impl AsFd, path: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let root = root.as_fd();
    let walk = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // Directories below the root on the way to the current one.
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut todo: Vec<OsString> = components(path).rev().map(OsStr::to_owned).collect();
    let mut links = 0;
    fn cur<'a>(stack: &'a [OwnedFd], root: BorrowedFd<'a>) -> BorrowedFd<'a> {
        stack.last().map_or(root, |f| f.as_fd())
    }
    while let Some(name) = todo.pop() {
        if name == ".." {
            stack.pop();
            continue;
        }
        let last = todo.is_empty();
        let fd = rfs::openat(cur(&stack, root), &name, walk, Mode::empty())?;
        let st = rfs::fstat(&fd)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink if last && flags.contains(OFlags::NOFOLLOW) => {
                if flags.contains(OFlags::PATH) {
                    return Ok(fd);
                }
                return Err(Errno::LOOP);
            }
            FileType::Symlink => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Errno::LOOP);
                }
                let target = rfs::readlinkat(&fd, "", Vec::new())?;
                let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                if target.is_absolute() {
                    stack.clear();
                }
                todo.extend(components(target).rev().map(OsStr::to_owned));
            }
            FileType::Directory if !last => stack.push(fd),
            ft => {
                if !last {
                    return Err(Errno::NOTDIR);
                }
                if flags.contains(OFlags::DIRECTORY) && ft != FileType::Directory {
                    return Err(Errno::NOTDIR);
                }
                if flags.contains(OFlags::PATH) {
                    return Ok(fd);
                }
                let again = rfs::openat(
                    cur(&stack, root),
                    &name,
                    flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let st2 = rfs::fstat(&again)?;
                if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino) {
                    return Err(Errno::AGAIN);
                }
                return Ok(again);
            }
        }
    }
    // The path named a directory on the stack (or the root itself): reopen it.
    rfs::openat(
        cur(&stack, root),
        ".",
        flags | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `path` inside `root` as a directory fd (`O_PATH`), creating every missing component
/// with `mkdirat(mode)` in its parent's fd. A dangling symlink on the way is created
/// through, inside the root (its target taken as if the root were `/`), as
/// `mkdir -p` in a chroot would; a component that exists but is not a directory fails
/// with `ENOTDIR`. Nothing is created outside the root whatever symlinks the tree holds
/// or gains meanwhile.
pub fn mkdir_all_in(root: impl AsFd, path: &Path, mode: u32) -> rustix::io::Result<OwnedFd> {
    mkdir_all_links(root.as_fd(), path, mode, 0)
}

/// Where a dangling symlink `name` in `dir` (reached as `at`) points, with `rest`
/// appended: the path to create instead, still relative to the root.
fn through_link(
    dir: BorrowedFd<'_>,
    at: &Path,
    name: &OsStr,
    rest: &[&OsStr],
) -> rustix::io::Result<PathBuf> {
    let target = match rfs::readlinkat(dir, name, Vec::new()) {
        Ok(t) => t,
        // Not a link: something was there and went away; report it as missing.
        Err(Errno::INVAL) => return Err(Errno::NOENT),
        Err(e) => return Err(e),
    };
    let target = Path::new(OsStr::from_bytes(target.as_bytes()));
    let mut new = if target.is_absolute() {
        PathBuf::from("/")
    } else {
        at.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    new.push(target);
    new.extend(rest);
    Ok(new)
}

fn mkdir_all_links(
    root: BorrowedFd<'_>,
    path: &Path,
    mode: u32,
    links: usize,
) -> rustix::io::Result<OwnedFd> {
    match resolve_dir(root, path) {
        Err(Errno::NOENT) => {}
        r => return r,
    }
    let comps: Vec<&OsStr> = components(path).collect();
    let mut so_far = PathBuf::new();
    let mut cur: Option<OwnedFd> = None;
    for (i, name) in comps.iter().enumerate() {
        let parent = cur.as_ref().map_or(root, |f| f.as_fd());
        so_far.push(name);
        if *name != ".." {
            match rfs::mkdirat(parent, *name, Mode::from_raw_mode(mode)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
        }
        match resolve_dir(root, &so_far) {
            Ok(fd) => cur = Some(fd),
            Err(Errno::NOENT) if *name != ".." => {
                if links >= MAX_LINKS {
                    return Err(Errno::LOOP);
                }
                let new = through_link(parent, &so_far, name, &comps[i + 1..])?;
                return mkdir_all_links(root, &new, mode, links + 1);
            }
            Err(e) => return Err(e),
        }
    }
    match cur {
        Some(fd) => Ok(fd),
        None => resolve_dir(root, Path::new(".")),
    }
}

/// What [`create_in`] makes when the path is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory (`mkdirat`).
    Dir,
    /// An empty regular file (`openat(O_CREAT | O_EXCL | O_NOFOLLOW)`).
    File,
}

/// `path` inside `root` as an `O_PATH` fd, created as `kind` with `mode` (and its parent
/// directories with 0755) when missing. What exists is kept, whatever its type (a mount
/// point for a file may already be a directory; the caller checks if it cares). The
/// final component is resolved like every other: a symlink in the tree is followed
/// inside the root, a dangling one is created through, as runc does for mount
/// destinations.
pub fn create_in(
    root: impl AsFd,
    path: &Path,
    kind: Kind,
    mode: u32,
) -> rustix::io::Result<OwnedFd> {
    create_links(root.as_fd(), path, kind, mode, 0)
}

fn create_links(
    root: BorrowedFd<'_>,
    path: &Path,
    kind: Kind,
    mode: u32,
    links: usize,
) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::PATH;
    match open_in(root, path, flags) {
        Err(Errno::NOENT) => {}
        r => return r,
    }
    if kind == Kind::Dir {
        return mkdir_all_links(root, path, mode, links);
    }
    let (parent, name) = split_last(path).ok_or(Errno::ISDIR)?;
    let pfd = mkdir_all_links(root, parent, 0o755, links)?;
    match rfs::openat(
        &pfd,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    ) {
        Ok(_) => open_in(root, path, flags),
        Err(Errno::EXIST) => match open_in(root, path, flags) {
            Err(Errno::NOENT) if links < MAX_LINKS => {
                // A dangling symlink: create its target instead.
                let new = through_link(pfd.as_fd(), path, name, &[])?;
                create_links(root, &new, kind, mode, links + 1)
            }
            Err(Errno::NOENT) => Err(Errno::LOOP),
            r => r,
        },
        Err(e) => Err(e),
    }
}

/// Splits `path` into its parent and last plain component; `None` when the last
/// component is `..` or there is none (the root itself).
pub fn split_last(path: &Path) -> Option<(&Path, &OsStr)> {
    let name = components(path).next_back()?;
    if name == ".." {
        return None;
    }
    Some((path.parent().unwrap_or(Path::new("")), name))
}

/// `/proc/self/fd/N` for an fd: a path that the kernel resolves to exactly the object
/// the fd holds (a magic link), for syscalls that take only paths (mount(2)). Needs
/// `/proc` mounted.
pub fn proc_fd_path(fd: impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// Removes `name` in `dir` and everything below it, never following a symlink (a
/// symlink is removed, not its target). A missing `name` is not an error.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let fd = match rfs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOTDIR | Errno::LOOP) => return Ok(rfs::unlinkat(dir, name, AtFlags::empty())?),
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut children = Vec::new();
    {
        let mut it = rfs::Dir::read_from(&fd)?;
        while let Some(e) = it.read() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                children.push((OsStr::from_bytes(n).to_owned(), e.file_type()));
            }
        }
    }
    for (n, ft) in children {
        if ft == FileType::Directory || ft == FileType::Unknown {
            remove_all_at(fd.as_fd(), &n)?;
        } else {
            match rfs::unlinkat(&fd, &n, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    drop(fd);
    match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn ino(fd: &OwnedFd) -> u64 {
        rfs::fstat(fd).unwrap().st_ino
    }

    fn on_disk(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().ino()
    }

    /// A tree with every kind of escape attempt: absolute and relative links out,
    /// `..` above the root, a link loop, a file in the middle of a path.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("file"), b"x").unwrap();
        symlink("/etc", r.join("a/abs")).unwrap();
        symlink("../../..", r.join("a/b/up")).unwrap();
        symlink("b", r.join("a/rel")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        symlink("/proc/self/root", r.join("magic")).unwrap();
        dir
    }

    /// Both resolvers (openat2 where the kernel has it, and the fallback walk) give the
    /// same answers; checked for each case.
    #[test]
    fn both_resolvers_stay_inside() {
        let dir = tree();
        let r = dir.path();
        let root = open_root(r).unwrap();
        type Resolver = fn(BorrowedFd<'_>, &Path, OFlags) -> rustix::io::Result<OwnedFd>;
        let resolvers: [(&str, Resolver); 2] = [
            ("open_in", |r, p, f| open_in(r, p, f)),
            ("walk_in", |r, p, f| walk_in(r, p, f)),
        ];
        for (name, resolve) in resolvers {
            let dirf = OFlags::PATH | OFlags::DIRECTORY;
            let at = |p: &str| resolve(root.as_fd(), Path::new(p), dirf);
            assert_eq!(
                ino(&at("/a/abs").unwrap()),
                on_disk(&r.join("etc")),
                "{name}"
            );
            assert_eq!(
                ino(&at("a/b/up/etc").unwrap()),
                on_disk(&r.join("etc")),
                "{name}"
            );
            assert_eq!(
                ino(&at("/a/rel").unwrap()),
                on_disk(&r.join("a/b")),
                "{name}"
            );
            assert_eq!(ino(&at("/../../..").unwrap()), on_disk(r), "{name}");
            assert_eq!(ino(&at("").unwrap()), on_disk(r), "{name}");
            assert_eq!(at("/loop").unwrap_err(), Errno::LOOP, "{name}");
            assert_eq!(at("/file/x").unwrap_err(), Errno::NOTDIR, "{name}");
            assert_eq!(at("/file").unwrap_err(), Errno::NOTDIR, "{name}");
            assert_eq!(at("/missing").unwrap_err(), Errno::NOENT, "{name}");
            // A magic link is never followed into the host's root.
            assert!(at("/magic").is_err(), "{name}");
            // O_NOFOLLOW on the final component gives the link itself (with O_PATH).
            let l = resolve(
                root.as_fd(),
                Path::new("a/abs"),
                OFlags::PATH | OFlags::NOFOLLOW,
            )
            .unwrap();
            let st = rfs::fstat(&l).unwrap();
            assert_eq!(FileType::from_raw_mode(st.st_mode), FileType::Symlink);
            // A readable fd of a file reached through links.
            let f = resolve(root.as_fd(), Path::new("a/b/up/file"), OFlags::RDONLY).unwrap();
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(f), &mut s).unwrap();
            assert_eq!(s, "x", "{name}");
        }
    }

    #[test]
    fn creation_follows_links_inside_the_root() {
        let dir = tree();
        let r = dir.path();
        let root = open_root(r).unwrap();
        let d = mkdir_all_in(&root, Path::new("/a/abs/new/deeper"), 0o755).unwrap();
        assert_eq!(ino(&d), on_disk(&r.join("etc/new/deeper")));
        let f = create_in(
            &root,
            Path::new("a/b/up/etc/resolv.conf"),
            Kind::File,
            0o644,
        )
        .unwrap();
        assert_eq!(ino(&f), on_disk(&r.join("etc/resolv.conf")));
        assert!(r.join("etc/resolv.conf").is_file());
        // Existing things are kept as they are.
        let again = create_in(&root, Path::new("/etc/resolv.conf"), Kind::Dir, 0o755).unwrap();
        assert_eq!(ino(&again), ino(&f));
        assert_eq!(
            mkdir_all_in(&root, Path::new("/file/x"), 0o755).unwrap_err(),
            Errno::NOTDIR
        );
        // Dangling links are created through, inside the root.
        let outside = tempfile::tempdir().unwrap();
        let out = outside.path().join("made");
        symlink(&out, r.join("dangling")).unwrap();
        let d = create_in(&root, Path::new("/dangling/x"), Kind::Dir, 0o755).unwrap();
        let inside = r.join(out.strip_prefix("/").unwrap());
        assert_eq!(ino(&d), on_disk(&inside.join("x")));
        assert!(!out.exists());
        symlink("../gone/file.conf", r.join("etc/dangling.conf")).unwrap();
        let f = create_in(&root, Path::new("etc/dangling.conf"), Kind::File, 0o644).unwrap();
        assert_eq!(ino(&f), on_disk(&r.join("gone/file.conf")));
        assert!(r.join("gone/file.conf").is_file());
        symlink("self", r.join("self")).unwrap();
        assert_eq!(
            create_in(&root, Path::new("/self/x"), Kind::Dir, 0o755).unwrap_err(),
            Errno::LOOP
        );
    }

    #[test]
    fn split_and_proc_path() {
        assert_eq!(
            split_last(Path::new("/a/b")),
            Some((Path::new("/a"), OsStr::new("b")))
        );
        assert_eq!(split_last(Path::new("/")), None);
        assert_eq!(split_last(Path::new("/a/..")), None);
        let dir = tempfile::tempdir().unwrap();
        let root = open_root(dir.path()).unwrap();
        let via_proc = std::fs::canonicalize(proc_fd_path(&root)).unwrap();
        assert_eq!(via_proc, std::fs::canonicalize(dir.path()).unwrap());
    }

    #[test]
    fn remove_all_never_follows_links() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"k").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("t/sub")).unwrap();
        symlink(outside.path(), r.join("t/sub/out")).unwrap();
        std::fs::write(r.join("t/f"), b"").unwrap();
        let root = rfs::open(r, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
        remove_all_at(root.as_fd(), OsStr::new("t")).unwrap();
        assert!(!r.join("t").exists());
        assert!(outside.path().join("keep").exists());
        remove_all_at(root.as_fd(), OsStr::new("t")).unwrap();
    }
}
