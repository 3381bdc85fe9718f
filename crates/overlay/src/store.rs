//! The on-disk layer store.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, RenameFlags, StatxAttributes, StatxFlags};
use rustix::io::Errno;

use crate::error::{io_err, Error, Result};
use crate::id::{is_short_id, new_short_id, validate_id};
use crate::mount::{self, MountOptions, Request};
use crate::usage::{self, DiskUsage};

/// The deepest parent chain a layer may have (Docker's overlay2 limit).
pub const MAX_DEPTH: usize = 128;

const LINK_DIR: &str = "l";
const LOCK_FILE: &str = ".lock";
const TMP_PREFIX: &str = ".tmp-";
const RM_PREFIX: &str = ".rm-";

/// One layer of a [`LayerStore`], as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    id: String,
    short_id: String,
    parent: Option<String>,
    lower: Vec<String>,
    dir: PathBuf,
}

impl Layer {
    /// The layer id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The short id: the name of the layer's `l/<short>` symlink, stored in its `link` file.
    pub fn short_id(&self) -> &str {
        &self.short_id
    }

    /// The id of the parent layer, if any.
    pub fn parent(&self) -> Option<&str> {
        self.parent.as_deref()
    }

    /// The short ids of the parent chain, nearest first (the `lower` file).
    pub fn lower_short_ids(&self) -> &[String] {
        &self.lower
    }

    /// How many parents the layer has.
    pub fn depth(&self) -> usize {
        self.lower.len()
    }

    /// The layer directory `<root>/<id>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The layer's own content, `<root>/<id>/diff`.
    pub fn diff_path(&self) -> PathBuf {
        self.dir.join("diff")
    }

    /// The overlay work directory, `<root>/<id>/work`.
    pub fn work_path(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The mount point of the layer's view, `<root>/<id>/merged`.
    pub fn merged_path(&self) -> PathBuf {
        self.dir.join("merged")
    }
}

/// An overlay2-style layer store rooted at a directory.
///
/// Layout (compatible in spirit with Docker's overlay2 driver):
///
/// ```text
/// <root>/.lock                  flock(2) guarding every change to the store
/// <root>/l/<short>  -> ../<id>/diff
/// <root>/<id>/diff/             the layer's content (the upper layer when mounted)
/// <root>/<id>/link              its short id
/// <root>/<id>/lower             l/<short>:l/<short>…  its parents, nearest first (absent for a base layer)
/// <root>/<id>/work/             overlay work directory
/// <root>/<id>/merged/           mount point of the layer's view
/// ```
///
/// All state is on disk: a second `LayerStore` (in this or another process) on the same
/// root sees the same layers. Mutating operations take an exclusive `flock` on
/// `<root>/.lock` (plus an in-process mutex); layers appear and disappear atomically by
/// `rename(2)` of a fully built directory. Whether a layer is mounted is read from the
/// kernel (its `merged` directory being a mount root in the caller's mount namespace).
#[derive(Debug)]
pub struct LayerStore {
    root: PathBuf,
    root_fd: OwnedFd,
    lock_file: File,
    mutex: Mutex<()>,
}

struct StoreLock<'a> {
    file: &'a File,
    _guard: MutexGuard<'a, ()>,
}

impl Drop for StoreLock<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.file, FlockOperation::Unlock);
    }
}

impl LayerStore {
    /// Opens the store at `root`, creating the directory and its `l/` if needed.
    ///
    /// Leftovers of operations interrupted by a crash (half-built or half-removed layer
    /// directories, dangling short links) are cleaned up.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io_err("create directory", root))?;
        let root = fs::canonicalize(root).map_err(io_err("resolve", root))?;
        let links = root.join(LINK_DIR);
        match fs::DirBuilder::new().mode(0o700).create(&links) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create directory", links)(e)),
        }
        let root_fd = rustix::fs::open(
            &root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("open", &root)(e.into()))?;
        let lock_path = root.join(LOCK_FILE);
        let lock_file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        let store = Self {
            root,
            root_fd,
            lock_file,
            mutex: Mutex::new(()),
        };
        {
            let _lock = store.lock(FlockOperation::LockExclusive)?;
            store.clean_leftovers()?;
        }
        Ok(store)
    }

    /// The (canonical) root directory of the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates an empty layer `id`, on top of `parent` if given, and returns it.
    ///
    /// Fails with [`Error::InvalidId`], [`Error::AlreadyExists`], [`Error::NotFound`] (for
    /// the parent) or [`Error::TooDeep`] when the chain would exceed [`MAX_DEPTH`].
    pub fn create(&self, id: &str, parent: Option<&str>) -> Result<Layer> {
        validate_id(id)?;
        if let Some(p) = parent {
            validate_id(p)?;
        }
        let _span = tracing::debug_span!("create_layer", id, parent).entered();
        let _lock = self.lock(FlockOperation::LockExclusive)?;
        let dir = self.root.join(id);
        if fs::symlink_metadata(&dir).is_ok() {
            return Err(Error::AlreadyExists { id: id.to_owned() });
        }
        let mut lower = Vec::new();
        if let Some(p) = parent {
            let parent_layer = self.read_layer(p)?;
            lower.push(parent_layer.short_id.clone());
            lower.extend(parent_layer.lower.iter().cloned());
        }
        if lower.len() > MAX_DEPTH {
            return Err(Error::TooDeep {
                id: id.to_owned(),
                depth: lower.len(),
                max: MAX_DEPTH,
            });
        }

        let tmp = self.root.join(format!("{TMP_PREFIX}{id}"));
        remove_tree_if_present(&tmp)?;
        let result = self.build_layer(id, &tmp, &lower);
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        let short_id = result?;
        Ok(Layer {
            id: id.to_owned(),
            short_id,
            parent: parent.map(str::to_owned),
            lower,
            dir,
        })
    }

    /// Builds the layer in `tmp`, links it and renames it into place; returns its short id.
    fn build_layer(&self, id: &str, tmp: &Path, lower: &[String]) -> Result<String> {
        let mkdir = |path: &Path, mode| {
            fs::DirBuilder::new()
                .mode(mode)
                .create(path)
                .map_err(io_err("create directory", path))
        };
        mkdir(tmp, 0o700)?;
        mkdir(&tmp.join("diff"), 0o755)?;
        mkdir(&tmp.join("work"), 0o700)?;
        mkdir(&tmp.join("merged"), 0o700)?;
        if !lower.is_empty() {
            let text = lower
                .iter()
                .map(|s| format!("{LINK_DIR}/{s}"))
                .collect::<Vec<_>>()
                .join(":");
            let path = tmp.join("lower");
            fs::write(&path, text).map_err(io_err("write", path))?;
        }
        // Claim a fresh short name; the symlink dangles until the rename below.
        let target = format!("../{id}/diff");
        let short_id = loop {
            let short = new_short_id().map_err(io_err("generate short id for", tmp))?;
            let link = self.root.join(LINK_DIR).join(&short);
            match std::os::unix::fs::symlink(&target, &link) {
                Ok(()) => break short,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("create symlink", link)(e)),
            }
        };
        let link_file = tmp.join("link");
        let link_path = self.root.join(LINK_DIR).join(&short_id);
        let finish = fs::write(&link_file, &short_id)
            .map_err(io_err("write", &link_file))
            .and_then(|()| {
                rustix::fs::renameat_with(
                    &self.root_fd,
                    tmp.file_name().unwrap_or_default(),
                    &self.root_fd,
                    id,
                    RenameFlags::NOREPLACE,
                )
                .map_err(|e| io_err("rename into place", self.root.join(id))(e.into()))
            });
        if let Err(e) = finish {
            let _ = fs::remove_file(&link_path);
            return Err(e);
        }
        Ok(short_id)
    }

    /// Reads layer `id`.
    pub fn get(&self, id: &str) -> Result<Layer> {
        validate_id(id)?;
        let _lock = self.lock(FlockOperation::LockShared)?;
        self.read_layer(id)
    }

    /// Whether layer `id` exists.
    ///
    /// It takes no lock: [`LayerStore::create`] renames a finished layer into place and
    /// [`LayerStore::remove`] renames it away before deleting it, so the directory is
    /// there exactly while the layer is. (A node starting many pods asks this for each
    /// one while every rootfs mount and removal holds the lock.)
    pub fn exists(&self, id: &str) -> Result<bool> {
        validate_id(id)?;
        let dir = self.root.join(id);
        match fs::symlink_metadata(&dir) {
            Ok(m) => Ok(m.is_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("stat", dir)(e)),
        }
    }

    /// All layers, sorted by id.
    pub fn list(&self) -> Result<Vec<Layer>> {
        let _lock = self.lock(FlockOperation::LockShared)?;
        self.list_unlocked()
    }

    /// The directory holding layer `id`'s own content (`<root>/<id>/diff`).
    pub fn diff_path(&self, id: &str) -> Result<PathBuf> {
        Ok(self.get(id)?.diff_path())
    }

    /// The ids of the parent chain of `id`, nearest first.
    pub fn parents(&self, id: &str) -> Result<Vec<String>> {
        validate_id(id)?;
        let _lock = self.lock(FlockOperation::LockShared)?;
        let layer = self.read_layer(id)?;
        layer.lower.iter().map(|s| self.resolve_short(s)).collect()
    }

    /// The ids of the direct children of `id`, sorted.
    pub fn children(&self, id: &str) -> Result<Vec<String>> {
        validate_id(id)?;
        let _lock = self.lock(FlockOperation::LockShared)?;
        self.read_layer(id)?;
        self.children_unlocked(id)
    }

    /// Mounts the view of layer `id` on its `merged` directory and returns that path.
    ///
    /// Writable (the default): overlay with the layer's `diff` as upper and its parents as
    /// lowers; a layer without parents is bind-mounted. Read-only
    /// ([`MountOptions::read_only`]): the layer and its parents are all lowers, with no
    /// upper (a single layer is bind-mounted read-only). Lower layers are named
    /// `l/<short>` relative to the store root, so even a [`MAX_DEPTH`] chain fits in the
    /// kernel's one-page limit for mount options. Fails with [`Error::AlreadyMounted`]
    /// when the layer is mounted already.
    pub fn mount(&self, id: &str, options: &MountOptions) -> Result<PathBuf> {
        validate_id(id)?;
        options.validate()?;
        let _span =
            tracing::debug_span!("mount_layer", id, read_only = options.is_read_only()).entered();
        let _lock = self.lock(FlockOperation::LockExclusive)?;
        let layer = self.read_layer(id)?;
        let merged = layer.merged_path();
        if self.mounted_unlocked(id)? {
            return Err(Error::AlreadyMounted {
                id: id.to_owned(),
                merged,
            });
        }
        let mut lowers: Vec<String> = Vec::with_capacity(layer.lower.len() + 1);
        if options.is_read_only() {
            lowers.push(format!("{LINK_DIR}/{}", layer.short_id));
        }
        lowers.extend(layer.lower.iter().map(|s| format!("{LINK_DIR}/{s}")));
        let target = format!("{id}/merged");
        let request = if lowers.len() <= usize::from(options.is_read_only()) {
            // Nothing to stack: a plain bind mount of the layer's own content.
            Request::Bind {
                source: format!("{id}/diff"),
                target,
                read_only: options.is_read_only(),
            }
        } else {
            let upper = format!("{id}/diff");
            let work = format!("{id}/work");
            let upper_work = (!options.is_read_only()).then_some((upper.as_str(), work.as_str()));
            let data = mount::overlay_data(&lowers, upper_work, options.extra_options());
            let max = mount::max_data_len();
            if data.len() > max {
                return Err(Error::MountDataTooLong {
                    id: id.to_owned(),
                    len: data.len(),
                    max,
                });
            }
            tracing::trace!(data = %data, "overlay mount options");
            Request::Overlay {
                target,
                // Ids, short ids and validated options contain no NUL.
                data: CString::new(data).map_err(|e| Error::InvalidMountOption {
                    option: String::from_utf8_lossy(&e.into_vec()).into_owned(),
                    reason: "contains NUL",
                })?,
                read_only: options.is_read_only(),
            }
        };
        mount::mount_at(self.root_fd.as_fd(), &request).map_err(|source| Error::Mount {
            id: id.to_owned(),
            target: merged.clone(),
            source,
        })?;
        Ok(merged)
    }

    /// Unmounts the view of layer `id`. Unmounting a layer that is not mounted is a no-op.
    pub fn unmount(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let _span = tracing::debug_span!("unmount_layer", id).entered();
        let _lock = self.lock(FlockOperation::LockExclusive)?;
        let layer = self.read_layer(id)?;
        let merged = layer.merged_path();
        while self.mounted_unlocked(id)? {
            match rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::empty()) {
                Ok(()) => {}
                Err(Errno::INVAL) => break,
                Err(e) => {
                    return Err(Error::Unmount {
                        id: id.to_owned(),
                        target: merged,
                        source: e.into(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Whether layer `id`'s `merged` directory is a mount point in this mount namespace.
    pub fn is_mounted(&self, id: &str) -> Result<bool> {
        validate_id(id)?;
        let _lock = self.lock(FlockOperation::LockShared)?;
        self.read_layer(id)?;
        self.mounted_unlocked(id)
    }

    /// Removes layer `id` and its content.
    ///
    /// Refused with [`Error::Mounted`] while its view is mounted and with
    /// [`Error::HasChildren`] while other layers are built on it.
    pub fn remove(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let _span = tracing::debug_span!("remove_layer", id).entered();
        let _lock = self.lock(FlockOperation::LockExclusive)?;
        let layer = self.read_layer(id)?;
        if self.mounted_unlocked(id)? {
            return Err(Error::Mounted {
                id: id.to_owned(),
                merged: layer.merged_path(),
            });
        }
        let children = self.children_unlocked(id)?;
        if !children.is_empty() {
            return Err(Error::HasChildren {
                id: id.to_owned(),
                children,
            });
        }
        // Hide the layer atomically, then delete at leisure.
        let doomed = format!("{RM_PREFIX}{id}");
        let doomed_path = self.root.join(&doomed);
        remove_tree_if_present(&doomed_path)?;
        rustix::fs::renameat(&self.root_fd, id, &self.root_fd, doomed.as_str())
            .map_err(|e| io_err("rename", &layer.dir)(e.into()))?;
        let link = self.root.join(LINK_DIR).join(&layer.short_id);
        match fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", link)(e)),
        }
        fs::remove_dir_all(&doomed_path).map_err(io_err("remove", doomed_path))
    }

    /// Space used by layer `id`'s `diff` directory.
    pub fn disk_usage(&self, id: &str) -> Result<DiskUsage> {
        let diff = self.diff_path(id)?;
        let _span = tracing::debug_span!("layer_disk_usage", id).entered();
        usage::disk_usage(&diff).map_err(io_err("measure", diff))
    }

    fn lock(&self, op: FlockOperation) -> Result<StoreLock<'_>> {
        let guard = self
            .mutex
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            match rustix::fs::flock(&self.lock_file, op) {
                Ok(()) => break,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(io_err("lock", self.root.join(LOCK_FILE))(e.into())),
            }
        }
        Ok(StoreLock {
            file: &self.lock_file,
            _guard: guard,
        })
    }

    fn read_layer(&self, id: &str) -> Result<Layer> {
        let dir = self.root.join(id);
        let link_path = dir.join("link");
        let short_id = match fs::read_to_string(&link_path) {
            Ok(s) => s.trim().to_owned(),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Err(Error::NotFound { id: id.to_owned() })
            }
            Err(e) => return Err(io_err("read", link_path)(e)),
        };
        if !is_short_id(&short_id) {
            return Err(Error::Corrupt {
                path: link_path,
                reason: format!("{short_id:?} is not a short id"),
            });
        }
        let lower_path = dir.join("lower");
        let lower = match fs::read_to_string(&lower_path) {
            Ok(text) => parse_lower(text.trim()).ok_or_else(|| Error::Corrupt {
                path: lower_path.clone(),
                reason: format!("{text:?} is not a list of l/<short> names"),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("read", lower_path)(e)),
        };
        let parent = match lower.first() {
            Some(short) => Some(self.resolve_short(short)?),
            None => None,
        };
        Ok(Layer {
            id: id.to_owned(),
            short_id,
            parent,
            lower,
            dir,
        })
    }

    /// Maps a short id to its layer id through the `l/<short>` symlink.
    fn resolve_short(&self, short: &str) -> Result<String> {
        let link = self.root.join(LINK_DIR).join(short);
        let target = fs::read_link(&link).map_err(io_err("read link", &link))?;
        let corrupt = || Error::Corrupt {
            path: link.clone(),
            reason: format!("target {} is not ../<id>/diff", target.display()),
        };
        let text = target.to_str().ok_or_else(corrupt)?;
        let id = text
            .strip_prefix("../")
            .and_then(|t| t.strip_suffix("/diff"))
            .ok_or_else(corrupt)?;
        validate_id(id).map_err(|_| corrupt())?;
        Ok(id.to_owned())
    }

    fn list_unlocked(&self) -> Result<Vec<Layer>> {
        let mut layers = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io_err("read directory", &self.root))? {
            let entry = entry.map_err(io_err("read directory", &self.root))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if validate_id(&name).is_err() {
                continue;
            }
            match self.read_layer(&name) {
                Ok(layer) => layers.push(layer),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        layers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(layers)
    }

    fn children_unlocked(&self, id: &str) -> Result<Vec<String>> {
        Ok(self
            .list_unlocked()?
            .into_iter()
            .filter(|l| l.parent.as_deref() == Some(id))
            .map(|l| l.id)
            .collect())
    }

    fn mounted_unlocked(&self, id: &str) -> Result<bool> {
        let rel = format!("{id}/merged");
        let path = self.root.join(&rel);
        let st = rustix::fs::statx(
            &self.root_fd,
            rel.as_str(),
            AtFlags::empty(),
            StatxFlags::BASIC_STATS,
        )
        .map_err(|e| io_err("stat", &path)(e.into()))?;
        if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
            return Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
        }
        // Kernels before 5.8 do not report STATX_ATTR_MOUNT_ROOT: look it up.
        let info = fs::read_to_string("/proc/self/mountinfo")
            .map_err(io_err("read", "/proc/self/mountinfo"))?;
        let found = mount_points(&info).any(|p| p == path);
        Ok(found)
    }

    fn clean_leftovers(&self) -> Result<()> {
        for entry in fs::read_dir(&self.root).map_err(io_err("read directory", &self.root))? {
            let entry = entry.map_err(io_err("read directory", &self.root))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TMP_PREFIX) || name.starts_with(RM_PREFIX) {
                tracing::debug!(entry = %name, "removing leftover of an interrupted operation");
                remove_tree_if_present(&entry.path())?;
            }
        }
        let links = self.root.join(LINK_DIR);
        for entry in fs::read_dir(&links).map_err(io_err("read directory", &links))? {
            let entry = entry.map_err(io_err("read directory", &links))?;
            let path = entry.path();
            // metadata() follows the link: NotFound means it dangles.
            if matches!(fs::metadata(&path), Err(e) if e.kind() == io::ErrorKind::NotFound) {
                tracing::debug!(link = %path.display(), "removing dangling short link");
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(())
    }
}

fn parse_lower(text: &str) -> Option<Vec<String>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(':')
        .map(|part| {
            part.strip_prefix("l/")
                .filter(|s| is_short_id(s))
                .map(str::to_owned)
        })
        .collect()
}

fn remove_tree_if_present(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Mount points (field 5) of a mountinfo text, with octal escapes decoded.
pub(crate) fn mount_points(info: &str) -> impl Iterator<Item = PathBuf> + '_ {
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lower_files() {
        let a = "A".repeat(26);
        let b = "B".repeat(26);
        assert_eq!(parse_lower(""), Some(vec![]));
        assert_eq!(
            parse_lower(&format!("l/{a}:l/{b}")),
            Some(vec![a.clone(), b.clone()])
        );
        assert_eq!(parse_lower(&format!("{a}:l/{b}")), None);
        assert_eq!(parse_lower("l/../x"), None);
    }

    #[test]
    fn decodes_mountinfo_escapes() {
        let info = "36 35 98:0 / /mnt/with\\040space rw - ext4 /dev/x rw\n37 35 0:1 / /plain rw - tmpfs t rw\n";
        let points: Vec<_> = mount_points(info).collect();
        assert_eq!(
            points,
            [PathBuf::from("/mnt/with space"), PathBuf::from("/plain")]
        );
    }
}
