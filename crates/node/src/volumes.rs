//! Pod volumes: emptyDir (disk or memory), configMap, secret, downwardAPI, projected,
//! hostPath and claims, with atomically updated file sets like the kubelet's `..data`
//! links.
//!
//! # Mount semantics
//!
//! - A mount is read-only when its `volumeMount` says so, when the claim's volume source
//!   has `readOnly`, and always for configMap, secret, downwardAPI and projected volumes
//!   (the kubelet mounts API data read-only too).
//! - A memory emptyDir is a tmpfs sized to the smallest of its `sizeLimit` and the pod's
//!   memory limit (the pod cgroup's), so writes past it fail with `ENOSPC`; a disk emptyDir
//!   with a `sizeLimit` is measured and the pod is evicted past it ([`over_limit`]).
//! - A `subPath` (or an expanded `subPathExpr`) is resolved inside its volume through file
//!   descriptors (`openat2(RESOLVE_IN_ROOT)`, [`kcore_rootfd`]): a symlink in the volume,
//!   even one a container swapped in for a path component, resolves as if the volume were
//!   `/`, so it never leads outside. The fd it gives is bind-mounted through
//!   `/proc/self/fd/N` onto a staging path `volume-subpaths/<volume>/<container>/<index>`
//!   (the kubelet's layout), and the container mounts that staging path: nothing resolves
//!   the sub path as a string after it was checked. Missing directories are created with
//!   `mkdirat` in parents that were themselves resolved inside the volume.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use crate::claims::ClaimCache;
use crate::error::{Error, Result};
use crate::refs::{self, Refs};
use crate::spec::BindMount;

/// A file in a projected set: content and mode.
pub(crate) type FileSet = BTreeMap<String, (Vec<u8>, u32)>;

fn safe_rel(p: &str) -> bool {
    !p.is_empty()
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && !p.starts_with("..")
}

/// Writes `files` under `dir` the way the kubelet does: the content lives in a
/// timestamped directory, `..data` points at it, and each top-level name is a symlink
/// through `..data`; an update swaps `..data` with one rename. Returns whether
/// anything changed.
pub(crate) fn write_atomic(dir: &Path, files: &FileSet) -> Result<bool> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let data = dir.join("..data");
    // unchanged?
    if let Ok(cur) = std::fs::read_link(&data) {
        let cur = dir.join(cur);
        let mut same = true;
        for (name, (content, mode)) in files {
            match std::fs::read(cur.join(name)) {
                Ok(c) if &c == content => {
                    let m = std::fs::metadata(cur.join(name))
                        .map(|m| m.permissions().mode() & 0o7777)
                        .unwrap_or(0);
                    if m != *mode {
                        same = false;
                    }
                }
                _ => same = false,
            }
        }
        let count = count_files(&cur);
        if same && count == files.len() {
            return Ok(false);
        }
    }
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let new = dir.join(&stamp);
    std::fs::create_dir(&new).map_err(|e| Error::io("create", &new, e))?;
    for (name, (content, mode)) in files {
        let p = new.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        std::fs::write(&p, content).map_err(|e| Error::io("write", &p, e))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| Error::io("chmod", &p, e))?;
    }
    let old = std::fs::read_link(&data).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(|e| Error::io("symlink", &tmp, e))?;
    std::fs::rename(&tmp, &data).map_err(|e| Error::io("rename", &data, e))?;
    // top-level links
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|k| k.split('/').next().map(str::to_owned))
        .collect();
    for t in &tops {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{t}"), &link)
                .map_err(|e| Error::io("symlink", &link, e))?;
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !n.starts_with("..") && !tops.contains(&n) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old {
        if old != Path::new(&stamp) {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(true)
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => n += count_files(&e.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
        }
    }
    n
}

fn project(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    out: &mut FileSet,
    what: &str,
) -> Result<()> {
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                if !safe_rel(&it.path) {
                    return Err(Error::InvalidSpec {
                        object: what.to_owned(),
                        reason: format!("bad item path {:?}", it.path),
                    });
                }
                if let Some(v) = data.get(&it.key) {
                    let mode = it.mode.map(|m| m as u32).unwrap_or(default_mode);
                    out.insert(it.path.clone(), (v.clone(), mode));
                }
            }
        }
        _ => {
            for (k, v) in data {
                if safe_rel(k) {
                    out.insert(k.clone(), (v.clone(), default_mode));
                }
            }
        }
    }
    Ok(())
}

fn downward(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    out: &mut FileSet,
) -> Result<()> {
    for it in items {
        if !safe_rel(&it.path) {
            continue;
        }
        let v = if let Some(f) = &it.field_ref {
            refs::field_ref(pod, f)?
        } else if let Some(r) = &it.resource_field_ref {
            refs::resource_field(pod, None, r)?
        } else {
            continue;
        };
        let mode = it.mode.map(|m| m as u32).unwrap_or(default_mode);
        out.insert(it.path.clone(), (v.into_bytes(), mode));
    }
    Ok(())
}

/// The files of a configMap / secret / downwardAPI / projected volume, or `None` for
/// other kinds. A missing required object is an error.
///
/// `current` is where the volume's files are now (a service-account token there is kept
/// until it is due for rotation).
pub(crate) async fn files_of(
    pod: &Pod,
    v: &Volume,
    refs: &mut Refs,
    current: &Path,
) -> Result<Option<FileSet>> {
    let mut out = FileSet::new();
    if let Some(cm) = &v.config_map {
        let mode = cm.default_mode.unwrap_or(0o644) as u32;
        match refs.config_map(&cm.name).await? {
            Some(d) => project(d, cm.items.as_ref(), mode, &mut out, &v.name)?,
            None if cm.optional == Some(true) => {}
            None => {
                return Err(Error::RefNotFound {
                    kind: "ConfigMap",
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    name: cm.name.clone(),
                    key: None,
                })
            }
        }
        return Ok(Some(out));
    }
    if let Some(s) = &v.secret {
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        let name = s.secret_name.clone().unwrap_or_default();
        match refs.secret(&name).await? {
            Some(d) => project(d, s.items.as_ref(), mode, &mut out, &v.name)?,
            None if s.optional == Some(true) => {}
            None => {
                return Err(Error::RefNotFound {
                    kind: "Secret",
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    name,
                    key: None,
                })
            }
        }
        return Ok(Some(out));
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(0o644) as u32;
        downward(pod, d.items.as_deref().unwrap_or_default(), mode, &mut out)?;
        return Ok(Some(out));
    }
    if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                if let Some(d) = refs.config_map(&cm.name).await? {
                    project(d, cm.items.as_ref(), mode, &mut out, &v.name)?;
                } else if cm.optional != Some(true) {
                    return Err(Error::RefNotFound {
                        kind: "ConfigMap",
                        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                        name: cm.name.clone(),
                        key: None,
                    });
                }
            }
            if let Some(s) = &src.secret {
                if let Some(d) = refs.secret(&s.name).await? {
                    project(d, s.items.as_ref(), mode, &mut out, &v.name)?;
                } else if s.optional != Some(true) {
                    return Err(Error::RefNotFound {
                        kind: "Secret",
                        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                        name: s.name.clone(),
                        key: None,
                    });
                }
            }
            if let Some(d) = &src.downward_api {
                downward(pod, d.items.as_deref().unwrap_or_default(), mode, &mut out)?;
            }
            if let Some(t) = &src.service_account_token {
                let held = std::fs::read(current.join(&t.path)).ok();
                let token = refs
                    .service_account_token(
                        pod,
                        t.audience.as_deref(),
                        t.expiration_seconds.unwrap_or(3600),
                        held.as_deref(),
                    )
                    .await?;
                out.insert(t.path.clone(), (token, mode));
            }
        }
        return Ok(Some(out));
    }
    Ok(None)
}

/// A volume made ready on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prepared {
    /// Where it is on the host.
    pub path: PathBuf,
    /// Every mount of it is read-only (see the module doc).
    pub read_only: bool,
    /// A disk emptyDir's `sizeLimit`: bytes, and the quantity as written.
    pub size_limit: Option<(u64, String)>,
}

/// The pod's volumes by name.
pub(crate) type Volumes = HashMap<String, Prepared>;

/// The size of a memory emptyDir's tmpfs, as the kubelet picks it: the smallest positive
/// one of the volume's `sizeLimit` and the pod's memory limit; `None` when neither is set
/// (the tmpfs default, half the host's memory).
pub(crate) fn memory_medium_size(pod: &Pod, size_limit: Option<i64>) -> Option<i64> {
    let pod_limit = crate::sandbox::pod_resources(pod).memory.limit;
    [pod_limit, size_limit]
        .into_iter()
        .flatten()
        .filter(|b| *b > 0)
        .min()
}

/// Prepares (or refreshes) every volume of the pod under `dir`; its claims and their
/// volumes are read through `claims`.
pub(crate) async fn prepare(
    pod: &Pod,
    dir: &Path,
    refs: &mut Refs,
    claims: &ClaimCache,
) -> Result<Volumes> {
    // the volumes' parent stays 0750 (the kubelet's too): other host users reach no
    // volume through it, while the volumes themselves keep modes that let a non-root
    // container read them through its bind mounts
    kcore_statedir::ensure_dir(dir, kcore_statedir::GROUP_DIR)
        .map_err(|e| Error::io("create", dir, e))?;
    let mut out = HashMap::new();
    let what = |v: &Volume| {
        format!(
            "{}/{} volume {}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default(),
            v.name
        )
    };
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let projected = dir.join("projected").join(&v.name);
        let mut read_only = false;
        let mut size_limit = None;
        let path = if let Some(files) = files_of(pod, v, refs, &projected).await? {
            let p = projected;
            write_atomic(&p, &files)?;
            read_only = true;
            p
        } else if let Some(e) = &v.empty_dir {
            let p = dir.join("empty-dir").join(&v.name);
            std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| Error::io("chmod", &p, e))?;
            let limit = e
                .size_limit
                .as_ref()
                .and_then(|q| Some((kcore_k8s::Quantity::try_from(q).ok()?.value(), &q.0)));
            if e.medium.as_deref() == Some("Memory") {
                if !is_mountpoint(&p) {
                    let size = memory_medium_size(pod, limit.map(|l| l.0))
                        .map(|b| format!("mode=1777,size={b}"))
                        .unwrap_or_else(|| "mode=1777".into());
                    kcore_ns::mount::mount_tmpfs(
                        &p,
                        kcore_ns::mount::MountFlags::NONE,
                        Some(&size),
                    )
                    .map_err(|e| Error::ns(format!("mount tmpfs for {}", what(v)), e))?;
                }
            } else {
                size_limit = limit
                    .filter(|(b, _)| *b > 0)
                    .map(|(b, s)| (b as u64, s.clone()));
            }
            p
        } else if let Some(pvc) = &v.persistent_volume_claim {
            read_only = pvc.read_only == Some(true);
            claim_dir(claims, refs.namespace(), &pvc.claim_name, None, &what(v)).await?
        } else if v.ephemeral.is_some() {
            // the claim the ephemeral-volume controller made, and only if it is the pod's
            let name = kcore_k8s::ephemeral_claim_name(pod, v);
            claim_dir(claims, refs.namespace(), &name, Some(pod), &what(v)).await?
        } else if let Some(h) = &v.host_path {
            let p = PathBuf::from(&h.path);
            match h.type_.as_deref() {
                Some("DirectoryOrCreate") => {
                    std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?
                }
                Some("FileOrCreate") if !p.exists() => {
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| Error::io("create", parent, e))?;
                    }
                    std::fs::write(&p, b"").map_err(|e| Error::io("create", &p, e))?
                }
                Some("Directory") if !p.is_dir() => {
                    return Err(Error::InvalidSpec {
                        object: what(v),
                        reason: format!("hostPath {} is not a directory", p.display()),
                    })
                }
                Some("File") if !p.is_file() => {
                    return Err(Error::InvalidSpec {
                        object: what(v),
                        reason: format!("hostPath {} is not a file", p.display()),
                    })
                }
                _ => {}
            }
            p
        } else {
            return Err(Error::InvalidSpec {
                object: what(v),
                reason: "unsupported volume type on this node".into(),
            });
        };
        out.insert(
            v.name.clone(),
            Prepared {
                path,
                read_only,
                size_limit,
            },
        );
    }
    Ok(out)
}

/// The eviction message of the first disk emptyDir whose usage is past its `sizeLimit`,
/// in the kubelet's words (trailing space included).
pub(crate) fn over_limit(pod: &Pod, volumes: &Volumes) -> Option<String> {
    // in the pod's order, as the kubelet checks them
    let names = pod.spec.as_ref()?.volumes.as_ref()?;
    names.iter().find_map(|v| {
        let p = volumes.get(&v.name)?;
        let (limit, shown) = p.size_limit.as_ref()?;
        (crate::provisioner::disk_usage(&p.path) > *limit).then(|| {
            format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {shown:?}. ",
                v.name
            )
        })
    })
}

/// The host directory of the volume bound to claim `name` in `ns` (a `local` or
/// `hostPath` PersistentVolume); an [`Error::InvalidSpec`] about `object` says, in the
/// kubelet's words, why there is none yet.
///
/// With `for_pod`, the claim must be that pod's own (a generic ephemeral volume's).
async fn claim_dir(
    claims: &ClaimCache,
    ns: &str,
    name: &str,
    for_pod: Option<&Pod>,
    object: &str,
) -> Result<PathBuf> {
    let invalid = |reason: String| Error::InvalidSpec {
        object: object.to_owned(),
        reason,
    };
    let claim = claims
        .claim(ns, name)
        .await?
        .ok_or_else(|| invalid(format!("persistentvolumeclaim {name:?} not found")))?;
    if let Some(pod) = for_pod {
        kcore_k8s::claim_is_for_pod(pod, &claim).map_err(invalid)?;
    }
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || volume.is_empty() {
        return Err(invalid(format!(
            "PVC {ns}/{name} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume:?})"
        )));
    }
    let pv = claims
        .volume(&volume)
        .await?
        .ok_or_else(|| invalid(format!("persistentvolume {volume:?} not found")))?;
    let loop_fs = crate::provisioner::loop_fs(&pv);
    let spec = pv.spec.clone().unwrap_or_default();
    if spec.volume_mode.as_deref() == Some("Block") {
        return Err(invalid(format!(
            "volume {volume} has volumeMode Block, which this node does not support"
        )));
    }
    let path = match (&spec.local, &spec.host_path) {
        (Some(l), _) => PathBuf::from(&l.path),
        (None, Some(h)) => PathBuf::from(&h.path),
        _ => {
            return Err(invalid(format!(
                "volume {volume} is of a type this node cannot mount (only local and hostPath)"
            )))
        }
    };
    if let Some(fs) = loop_fs {
        // a loop-mounted volume whose mount went away (a reboot, `kcored reset`) is
        // mounted again before any container sees the bare directory
        let p = path.clone();
        tokio::task::spawn_blocking(move || crate::loopfs::mount(&p, &fs))
            .await
            .map_err(|e| Error::Config(format!("mounting volume {volume} panicked: {e}")))?
            .map_err(|source| Error::LoopVolume {
                path: path.clone(),
                source,
            })?;
    }
    if !path.is_dir() {
        return Err(invalid(format!(
            "path {} of volume {volume} is not a directory on this node",
            path.display()
        )));
    }
    Ok(path)
}

fn is_mountpoint(p: &Path) -> bool {
    let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let s = p.to_string_lossy();
    mi.lines().any(|l| l.split(' ').nth(4) == Some(&s))
}

/// The mount points at or below `dir` in this mount namespace, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = mi
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Unmounts everything at or below `dir` (memory emptyDirs, sub-path staging mounts)
/// and then removes it. When a mount stays, nothing is removed: a sub-path mount shows
/// a claim's own files, which removing the pod must never touch.
pub(crate) fn remove_unmounted(dir: &Path) {
    for _ in 0..4 {
        let left = mounts_under(dir);
        if left.is_empty() {
            let _ = std::fs::remove_dir_all(dir);
            return;
        }
        for m in left {
            if let Err(e) = kcore_ns::mount::unmount(&m, true) {
                tracing::debug!(path = %m.display(), error = %e, "unmount");
            }
        }
    }
    tracing::warn!(dir = %dir.display(), "mounts remain below the pod's directory; it is kept");
}

/// Unmounts memory-backed emptyDirs and sub-path mounts and removes the pod's volume
/// directory.
pub(crate) fn teardown(dir: &Path) {
    remove_unmounted(dir);
}

/// The error of a bad sub path of `object`.
fn bad_sub_path(object: &str, reason: String) -> Error {
    Error::InvalidSpec {
        object: object.to_owned(),
        reason,
    }
}

/// A mount's sub path: `subPath`, or `subPathExpr` expanded with the container's
/// environment (every variable it names must be set and non-empty, as upstream); it
/// must be relative and must not contain `..`.
fn sub_path_of(
    m: &k8s_openapi::api::core::v1::VolumeMount,
    env: &[(String, String)],
    object: &str,
) -> Result<Option<String>> {
    let sub = if let Some(e) = m.sub_path_expr.as_deref().filter(|s| !s.is_empty()) {
        let mut missing = std::collections::BTreeSet::new();
        let out = crate::spec::expand_with(e, |name| {
            let v = env
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty());
            if v.is_none() {
                missing.insert(name.to_owned());
            }
            Some(v.unwrap_or_default())
        });
        if !missing.is_empty() {
            let names: Vec<_> = missing.into_iter().collect();
            return Err(bad_sub_path(
                object,
                format!("missing value for {}", names.join(", ")),
            ));
        }
        out
    } else if let Some(s) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
        s.to_owned()
    } else {
        return Ok(None);
    };
    if sub.starts_with('/') {
        return Err(bad_sub_path(
            object,
            format!("error SubPath `{sub}` must not be an absolute path"),
        ));
    }
    if Path::new(&sub)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(bad_sub_path(
            object,
            format!("unable to provision SubPath `{sub}`: must not contain '..'"),
        ));
    }
    Ok(Some(sub))
}

/// Resolves `sub` inside the volume at `volume` through file descriptors (creating
/// missing directories as upstream does) and bind-mounts what it found onto `target`
/// through `/proc/self/fd/N`, replacing an earlier mount there (a restarted container
/// resolves again, so a symlink swapped in meanwhile is followed only inside the volume).
fn bind_sub_path(volume: &Path, sub: &str, target: &Path, object: &str) -> Result<()> {
    use kcore_rootfd::{mkdir_all_in, open_in, open_root, Errno, OFlags};
    let root = open_root(volume).map_err(|e| Error::io("open", volume, e))?;
    let io = |e: Errno| Error::io("resolve sub path in", volume.join(sub), e.into());
    let fd = match open_in(&root, Path::new(sub), OFlags::PATH | OFlags::CLOEXEC) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => mkdir_all_in(&root, Path::new(sub), 0o755).map_err(io)?,
        Err(e) => return Err(io(e)),
    };
    while is_mountpoint(target) {
        kcore_ns::mount::unmount(target, true)
            .map_err(|e| Error::ns(format!("unmount the old sub path of {object}"), e))?;
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    // a staging target of the other type (a file became a directory) is replaced
    let source = kcore_rootfd::proc_fd_path(&fd);
    let is_dir = std::fs::metadata(&source)
        .map_err(|e| Error::io("stat", volume.join(sub), e))?
        .is_dir();
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() != is_dir => {
            let _ = std::fs::remove_dir(target).or_else(|_| std::fs::remove_file(target));
        }
        _ => {}
    }
    kcore_ns::mount::bind(&source, target, false, kcore_ns::mount::MountFlags::NONE)
        .map_err(|e| Error::ns(format!("bind-mount sub path {sub:?} of {object}"), e))
}

/// The bind mounts of a container's `volumeMounts`. Sub paths are staged under
/// `staging` (the pod's `volume-subpaths/<volume>/<container>/<index>`); `env` is the
/// container's resolved environment, for `subPathExpr`.
pub(crate) fn container_mounts(
    c: &Container,
    volumes: &Volumes,
    env: &[(String, String)],
    staging: &Path,
    object: &str,
) -> Result<Vec<BindMount>> {
    let mut out = Vec::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let Some(vol) = volumes.get(&m.name) else {
            return Err(Error::InvalidSpec {
                object: object.to_owned(),
                reason: format!("volumeMount {} refers to no volume", m.name),
            });
        };
        let mut source = vol.path.clone();
        if let Some(sub) = sub_path_of(m, env, object)? {
            // a projected volume's top-level names are links through ..data: the
            // resolution inside the volume follows them
            let target = staging.join(&m.name).join(&c.name).join(i.to_string());
            bind_sub_path(&vol.path, &sub, &target, object)?;
            source = target;
        }
        out.push(BindMount {
            source,
            destination: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false) || vol.read_only,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writer_swaps_data_and_prunes_old_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v");
        let mut f = FileSet::new();
        f.insert("a".into(), (b"1".to_vec(), 0o644));
        f.insert("sub/b".into(), (b"2".to_vec(), 0o600));
        assert!(write_atomic(&dir, &f).unwrap());
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"1");
        assert_eq!(std::fs::read(dir.join("sub/b")).unwrap(), b"2");
        let mode = std::fs::metadata(dir.join("sub/b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            !write_atomic(&dir, &f).unwrap(),
            "unchanged content is not rewritten"
        );
        let first = std::fs::read_link(dir.join("..data")).unwrap();
        f.remove("a");
        f.insert("sub/b".into(), (b"3".to_vec(), 0o600));
        assert!(write_atomic(&dir, &f).unwrap());
        assert_eq!(std::fs::read(dir.join("sub/b")).unwrap(), b"3");
        assert!(!dir.join("a").exists());
        assert!(!dir.join(first).exists(), "old data dir removed");
    }

    #[test]
    fn items_select_and_rename_keys() {
        let mut data = BTreeMap::new();
        data.insert("k1".to_owned(), b"v1".to_vec());
        data.insert("k2".to_owned(), b"v2".to_vec());
        let items: Vec<KeyToPath> = serde_json::from_value(
            serde_json::json!([{"key": "k2", "path": "dir/two", "mode": 0o400}]),
        )
        .unwrap();
        let mut out = FileSet::new();
        project(&data, Some(&items), 0o644, &mut out, "v").unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out["dir/two"], (b"v2".to_vec(), 0o400));
        let bad: Vec<KeyToPath> =
            serde_json::from_value(serde_json::json!([{"key": "k1", "path": "../x"}])).unwrap();
        assert!(project(&data, Some(&bad), 0o644, &mut FileSet::new(), "v").is_err());
    }
}
