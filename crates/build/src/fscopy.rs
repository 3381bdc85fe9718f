//! COPY and ADD into a snapshot's root: every destination path is resolved inside the
//! root through file descriptors (`kcore-rootfd`), and every entry is created with `*at`
//! calls that never follow a symlink, so a symlink in the image cannot send a copy
//! outside it. Sources are read with symlinks kept as symlinks.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

use crate::error::{IoContext, Result};

/// How copied entries get their owner and mode.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Attrs {
    /// `uid:gid` for everything copied; `None` keeps the source's owner.
    pub owner: Option<(u32, u32)>,
    /// Permission bits for everything copied (`--chmod`); `None` keeps the source's.
    pub mode: Option<u32>,
}

/// Filter on source paths relative to the copied tree's top (`true`: skip it).
pub(crate) type Skip<'a> = &'a dyn Fn(&str) -> bool;

/// Copies `src` to `name` in directory `dir` (an fd inside the root). Directories merge
/// into an existing directory; anything else replaces what is there.
pub(crate) fn copy_entry(
    src: &Path,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    attrs: Attrs,
    rel: &str,
    skip: Skip<'_>,
) -> Result<()> {
    let meta = fs::symlink_metadata(src).at("stat", src)?;
    copy_with_meta(src, &meta, dir, name, attrs, rel, skip)
}

/// Copies `src` (with its already-read metadata, a top-level symlink followed) to
/// `name` in `dir`.
pub(crate) fn copy_with_top(
    src: &Path,
    meta: &fs::Metadata,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    attrs: Attrs,
) -> Result<()> {
    copy_with_meta(src, meta, dir, name, attrs, "", &|_| false)
}

fn copy_with_meta(
    src: &Path,
    meta: &fs::Metadata,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    attrs: Attrs,
    rel: &str,
    skip: Skip<'_>,
) -> Result<()> {
    let ft = meta.file_type();
    let (uid, gid) = attrs.owner.unwrap_or((meta.uid(), meta.gid()));
    let mode = attrs.mode.unwrap_or(meta.mode() & 0o7777);
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        },
    };
    if ft.is_dir() {
        let existing = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok();
        let is_dir = existing
            .as_ref()
            .is_some_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir());
        if !is_dir {
            if existing.is_some() {
                kcore_rootfd::remove_all_at(dir, name).at("replace", src)?;
            }
            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)).at("create", src)?;
        }
        let d = open_dir(dir, name).at("open", src)?;
        let mut entries: Vec<_> = fs::read_dir(src)
            .at("read directory", src)?
            .collect::<io::Result<Vec<_>>>()
            .at("read directory", src)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let child_rel = if rel.is_empty() {
                e.file_name().to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", e.file_name().to_string_lossy())
            };
            if skip(&child_rel) {
                continue;
            }
            copy_entry(
                &e.path(),
                d.as_fd(),
                &e.file_name(),
                attrs,
                &child_rel,
                skip,
            )?;
        }
        rustix::fs::fchown(&d, Some(uid_of(uid)), Some(gid_of(gid))).at("chown", src)?;
        rustix::fs::fchmod(&d, Mode::from_raw_mode(mode)).at("chmod", src)?;
        rustix::fs::futimens(&d, &times).at("set times", src)?;
        return Ok(());
    }
    remove_existing(dir, name, src)?;
    if ft.is_file() {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .at("create", src)?;
        let mut out = fs::File::from(fd);
        let mut input = fs::File::open(src).at("read", src)?;
        io::copy(&mut input, &mut out).at("copy", src)?;
        rustix::fs::fchown(&out, Some(uid_of(uid)), Some(gid_of(gid))).at("chown", src)?;
        rustix::fs::fchmod(&out, Mode::from_raw_mode(mode)).at("chmod", src)?;
        rustix::fs::futimens(&out, &times).at("set times", src)?;
    } else if ft.is_symlink() {
        let target = fs::read_link(src).at("read link", src)?;
        rustix::fs::symlinkat(&target, dir, name).at("symlink", src)?;
        rustix::fs::chownat(
            dir,
            name,
            Some(uid_of(uid)),
            Some(gid_of(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .at("chown", src)?;
        rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW).at("set times", src)?;
    } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
        let kind = if ft.is_fifo() {
            rustix::fs::FileType::Fifo
        } else if ft.is_char_device() {
            rustix::fs::FileType::CharacterDevice
        } else {
            rustix::fs::FileType::BlockDevice
        };
        rustix::fs::mknodat(dir, name, kind, Mode::from_raw_mode(mode), meta.rdev())
            .at("create", src)?;
        rustix::fs::chownat(
            dir,
            name,
            Some(uid_of(uid)),
            Some(gid_of(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .at("chown", src)?;
    }
    Ok(())
}

/// A uid for rustix.
pub(crate) fn uid_of(n: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(n)
}

/// A gid for rustix.
pub(crate) fn gid_of(n: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(n)
}

/// Removes whatever is at `name` (a directory with its content).
fn remove_existing(dir: BorrowedFd<'_>, name: &OsStr, src: &Path) -> Result<()> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => kcore_rootfd::remove_all_at(dir, name).at("replace", src),
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e).at("stat", src),
    }
}

/// Opens directory `name` in `dir` for reading and changing, not following a symlink.
pub(crate) fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `mkdir -p` of `path` inside `root`; returns an fd of the directory that can be used
/// for `*at` calls and for changing it.
pub(crate) fn mkdir_all(root: &OwnedFd, path: &str, what: &Path) -> Result<OwnedFd> {
    let p = Path::new(path.trim_start_matches('/'));
    let o = kcore_rootfd::mkdir_all_in(root, p, 0o755).at("create directory", what.join(p))?;
    rustix::fs::openat(
        &o,
        ".",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open directory", what.join(p))
}

/// [`mkdir_all`] where every directory it creates gets `owner` (as BuildKit and
/// buildah give the parents a `COPY --chown` creates to that user).
pub(crate) fn mkdir_all_owned(
    root: &OwnedFd,
    path: &str,
    owner: Option<(u32, u32)>,
    what: &Path,
) -> Result<OwnedFd> {
    if let Some((uid, gid)) = owner {
        let mut prefix = String::new();
        for c in path.split('/').filter(|c| !c.is_empty()) {
            prefix.push('/');
            prefix.push_str(c);
            if !is_dir_in(root, &prefix) {
                let d = mkdir_all(root, &prefix, what)?;
                rustix::fs::fchown(&d, Some(uid_of(uid)), Some(gid_of(gid)))
                    .at("chown", what.join(prefix.trim_start_matches('/')))?;
            }
        }
    }
    mkdir_all(root, path, what)
}

/// Whether `path` inside `root` is an existing directory (following symlinks inside).
pub(crate) fn is_dir_in(root: &OwnedFd, path: &str) -> bool {
    let p = Path::new(path.trim_start_matches('/'));
    if p.as_os_str().is_empty() {
        return true;
    }
    kcore_rootfd::open_in(root, p, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC).is_ok()
}

/// Whether `path` inside `root` exists (following symlinks inside).
pub(crate) fn exists_in(root: &OwnedFd, path: &str) -> bool {
    let p = Path::new(path.trim_start_matches('/'));
    if p.as_os_str().is_empty() {
        return true;
    }
    kcore_rootfd::open_in(root, p, OFlags::PATH | OFlags::CLOEXEC).is_ok()
}

/// Reads a small file inside `root` (for `/etc/passwd` and `/etc/group`).
pub(crate) fn read_in(root: &OwnedFd, path: &str) -> Option<String> {
    let fd = kcore_rootfd::open_in(
        root,
        Path::new(path.trim_start_matches('/')),
        OFlags::RDONLY | OFlags::CLOEXEC,
    )
    .ok()?;
    io::read_to_string(fs::File::from(fd)).ok()
}

/// Resolves `user[:group]` (names or numbers) against the root's `/etc/passwd` and
/// `/etc/group`. A user without a group takes the user's primary group (0 when the
/// user is a number not in passwd).
pub(crate) fn resolve_user(root: &OwnedFd, spec: &str) -> std::result::Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in(root, "/etc/passwd").unwrap_or_default();
    let entry = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && (f[0] == user || f[2] == user))
            .then(|| (f[2].parse::<u32>(), f[3].parse::<u32>()))
    });
    let (uid, primary) = match (user.parse::<u32>(), entry) {
        (Ok(n), Some((_, Ok(g)))) => (n, g),
        (Ok(n), _) => (n, 0),
        (Err(_), Some((Ok(u), Ok(g)))) => (u, g),
        _ => {
            return Err(format!(
                "unable to find user {user}: no matching entries in passwd file"
            ))
        }
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let groups = read_in(root, "/etc/group").unwrap_or_default();
                groups
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() >= 3 && f[0] == g)
                            .then(|| f[2].parse::<u32>().ok())
                            .flatten()
                    })
                    .ok_or_else(|| {
                        format!("unable to find group {g}: no matching entries in group file")
                    })?
            }
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_from_the_root() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("etc")).unwrap();
        fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(t.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let root = kcore_rootfd::open_root(t.path()).unwrap();
        assert_eq!(resolve_user(&root, "app"), Ok((1000, 1001)));
        assert_eq!(resolve_user(&root, "app:staff"), Ok((1000, 50)));
        assert_eq!(resolve_user(&root, "1000"), Ok((1000, 1001)));
        assert_eq!(resolve_user(&root, "42:7"), Ok((42, 7)));
        assert_eq!(resolve_user(&root, "42"), Ok((42, 0)));
        assert!(resolve_user(&root, "nobody").is_err());
        assert!(resolve_user(&root, "app:nogroup").is_err());
    }
}
