//! Pod volumes: emptyDir (disk or memory), configMap, secret, downwardAPI, projected
//! and hostPath, with atomically updated file sets like the kubelet's `..data` links.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

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

/// Prepares (or refreshes) every volume of the pod under `dir`; returns name → host path.
pub(crate) async fn prepare(
    pod: &Pod,
    dir: &Path,
    refs: &mut Refs,
) -> Result<HashMap<String, PathBuf>> {
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
        let path = if let Some(files) = files_of(pod, v, refs, &projected).await? {
            let p = projected;
            write_atomic(&p, &files)?;
            p
        } else if let Some(e) = &v.empty_dir {
            let p = dir.join("empty-dir").join(&v.name);
            std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| Error::io("chmod", &p, e))?;
            if e.medium.as_deref() == Some("Memory") && !is_mountpoint(&p) {
                let size = e
                    .size_limit
                    .as_ref()
                    .and_then(|q| kcore_k8s::Quantity::try_from(q).ok())
                    .map(|q| q.value().max(0))
                    .map(|b| format!("mode=1777,size={b}"))
                    .unwrap_or_else(|| "mode=1777".into());
                kcore_ns::mount::mount_tmpfs(&p, kcore_ns::mount::MountFlags::NONE, Some(&size))
                    .map_err(|e| Error::ns(format!("mount tmpfs for {}", what(v)), e))?;
            }
            p
        } else if let Some(pvc) = &v.persistent_volume_claim {
            claim_dir(refs, &pvc.claim_name, &what(v)).await?
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
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// The host directory of the volume bound to claim `name` (a `local` or `hostPath`
/// PersistentVolume); an [`Error::InvalidSpec`] about `object` says, in the kubelet's
/// words, why there is none yet.
async fn claim_dir(refs: &Refs, name: &str, object: &str) -> Result<PathBuf> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let ns = refs.namespace();
    let invalid = |reason: String| Error::InvalidSpec {
        object: object.to_owned(),
        reason,
    };
    let claims: kube::Api<PersistentVolumeClaim> = kube::Api::namespaced(refs.client().clone(), ns);
    let claim = claims
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("get persistentvolumeclaim {ns}/{name}"), e))?
        .ok_or_else(|| invalid(format!("persistentvolumeclaim {name:?} not found")))?;
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
    let pvs: kube::Api<PersistentVolume> = kube::Api::all(refs.client().clone());
    let pv = pvs
        .get_opt(&volume)
        .await
        .map_err(|e| Error::kube(format!("get persistentvolume {volume}"), e))?
        .ok_or_else(|| invalid(format!("persistentvolume {volume:?} not found")))?;
    let spec = pv.spec.unwrap_or_default();
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

/// Unmounts memory-backed emptyDirs and removes the pod's volume directory.
pub(crate) fn teardown(dir: &Path) {
    let ed = dir.join("empty-dir");
    if let Ok(rd) = std::fs::read_dir(&ed) {
        for e in rd.flatten() {
            let p = e.path();
            while is_mountpoint(&p) {
                if kcore_ns::mount::unmount(&p, true).is_err() {
                    break;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The bind mounts of a container's `volumeMounts`.
pub(crate) fn container_mounts(
    c: &Container,
    volumes: &HashMap<String, PathBuf>,
    object: &str,
) -> Result<Vec<BindMount>> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let Some(src) = volumes.get(&m.name) else {
            return Err(Error::InvalidSpec {
                object: object.to_owned(),
                reason: format!("volumeMount {} refers to no volume", m.name),
            });
        };
        let mut source = src.clone();
        if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if !safe_rel(sp) {
                return Err(Error::InvalidSpec {
                    object: object.to_owned(),
                    reason: format!("bad subPath {sp:?}"),
                });
            }
            source = src.join(sp);
            if !source.exists() {
                std::fs::create_dir_all(&source).map_err(|e| Error::io("create", &source, e))?;
            }
            // a subPath of a projected volume goes through ..data
            if let Ok(real) = std::fs::canonicalize(&source) {
                source = real;
            }
        }
        out.push(BindMount {
            source,
            destination: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false),
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
