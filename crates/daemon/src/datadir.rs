//! The data directory (`/var/lib/kcore`) and who may read what in it.
//!
//! Everything kcored keeps there is root's: the store and its log hold every object,
//! Secrets included; `apiserver/` also keeps the CA key, the tokens and the admin
//! kubeconfig; container states carry each process's environment; pod directories hold
//! Secret volumes; container logs print what programs print. So:
//!
//! | path | mode |
//! |---|---|
//! | the data directory, `apiserver/`, `apiserver/pki/`, `ipam/`, `images/`, `overlay/`, `containers/`, `netns/` | 0700 |
//! | files with object data, keys, tokens, state (`kcore.redb`, `kcore.wal`, `*.key`, `tokens.csv`, `admin.kubeconfig`, `node.json`, `state.json`, IPAM records, image catalog and locks) | 0600 |
//! | `pods/`, each `pods/<uid>/` and its `volumes/` | 0750 |
//! | `logs/` and the directories below it | 0750 |
//! | container log files | 0640 |
//!
//! Each crate creates its part with these modes whatever the umask (through
//! `kcore-statedir`). A data directory made by an older kcored has looser ones: on start,
//! [`secure`] tightens them (never widens) and says so once in the log. Volume files
//! keep their `defaultMode` so that non-root containers read them through their bind
//! mounts; other host users cannot reach them past `pods/`.

use std::path::Path;

use anyhow::{Context, Result};
use kcore_statedir::{Tightened, GROUP_DIR, GROUP_FILE, PRIVATE_DIR, PRIVATE_FILE};

/// Most tightened paths named in the log line; the rest are counted.
const NAMED: usize = 12;

/// Creates `data_dir` 0700, or tightens an existing one and the parts of it an older
/// kcored left readable by other users; logs what changed, in one line. Returns the
/// paths it tightened.
pub fn secure(data_dir: &Path) -> Result<Vec<Tightened>> {
    let mut changed = Vec::new();
    changed.extend(
        kcore_statedir::ensure_dir(data_dir, PRIVATE_DIR)
            .with_context(|| format!("creating {}", data_dir.display()))?,
    );
    let at = |rel: &str| data_dir.join(rel);
    let tighten = |p: &Path, mode| {
        kcore_statedir::tighten(p, mode)
            .with_context(|| format!("tightening the mode of {}", p.display()))
    };
    for dir in ["apiserver", "ipam", "containers"] {
        // certificates are public; everything else there is a secret or state
        tighten_tree(&at(dir), PRIVATE_DIR, &mut changed, |p| {
            if p.extension().is_some_and(|e| e == "crt") {
                0o644
            } else {
                PRIVATE_FILE
            }
        })?;
    }
    for dir in ["images", "overlay", "netns"] {
        // the directory only: the stores' content keeps its modes (layers are root file
        // systems), namespace handles are mounts
        changed.extend(tighten(&at(dir), PRIVATE_DIR)?);
    }
    for file in [
        "node.json",
        "images/images.json",
        "images/.lock",
        "images/.gc.lock",
        "images/.unpack.lock",
    ] {
        changed.extend(tighten(&at(file), PRIVATE_FILE)?);
    }
    tighten_tree(&at("logs"), GROUP_DIR, &mut changed, |_| GROUP_FILE)?;
    let pods = at("pods");
    changed.extend(tighten(&pods, GROUP_DIR)?);
    if let Ok(rd) = std::fs::read_dir(&pods) {
        for pod in rd.flatten().map(|e| e.path()) {
            changed.extend(tighten(&pod, GROUP_DIR)?);
            changed.extend(tighten(&pod.join("volumes"), GROUP_DIR)?);
            for f in ["state.json", "sandbox.json"] {
                changed.extend(tighten(&pod.join(f), PRIVATE_FILE)?);
            }
        }
    }
    if !changed.is_empty() {
        let mut named: Vec<String> = changed.iter().take(NAMED).map(|t| t.to_string()).collect();
        if changed.len() > NAMED {
            named.push(format!("and {} more", changed.len() - NAMED));
        }
        tracing::warn!(
            data_dir = %data_dir.display(),
            "tightened the modes of {} path(s) that an older kcored left readable by other users: {}",
            changed.len(),
            named.join(", ")
        );
    }
    Ok(changed)
}

/// Tightens `dir`, the directories below it to `dir_mode` and its files to
/// `file_mode(path)`; symbolic links are not followed.
fn tighten_tree(
    dir: &Path,
    dir_mode: u32,
    changed: &mut Vec<Tightened>,
    file_mode: impl Fn(&Path) -> u32 + Copy,
) -> Result<()> {
    let ctx = |p: &Path| format!("tightening the mode of {}", p.display());
    changed.extend(kcore_statedir::tighten(dir, dir_mode).with_context(|| ctx(dir))?);
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in rd.flatten() {
        let (p, Ok(t)) = (e.path(), e.file_type()) else {
            continue;
        };
        if t.is_dir() {
            tighten_tree(&p, dir_mode, changed, file_mode)?;
        } else if !t.is_symlink() {
            changed.extend(kcore_statedir::tighten(&p, file_mode(&p)).with_context(|| ctx(&p))?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn set(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn an_older_data_directory_is_tightened_once_and_volumes_keep_their_modes() {
        let base = tempfile::tempdir().unwrap();
        let d = base.path().join("data");
        // as kcored left it before: everything world-readable
        for sub in [
            "apiserver/pki",
            "ipam",
            "containers/c1",
            "images",
            "overlay/l1/diff",
            "netns",
            "logs/default_web_u1/app",
            "pods/u1/volumes/projected/sec/..1",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let files = [
            ("apiserver/kcore.redb", 0o600),
            ("apiserver/kcore.wal", 0o600),
            ("apiserver/tokens.csv", 0o600),
            ("apiserver/pki/ca.key", 0o600),
            ("apiserver/pki/ca.crt", 0o644),
            ("ipam/10.244.0.2", 0o600),
            ("containers/c1/state.json", 0o600),
            ("images/images.json", 0o600),
            ("node.json", 0o600),
            ("logs/default_web_u1/app/0.log", 0o640),
            ("pods/u1/state.json", 0o600),
            ("pods/u1/volumes/projected/sec/..1/password", 0o644),
            ("overlay/l1/diff/hello", 0o755),
        ];
        for (f, _) in files {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        set(&d.join("overlay/l1/diff/hello"), 0o755);
        let walk = [
            "",
            "apiserver",
            "apiserver/pki",
            "ipam",
            "containers",
            "containers/c1",
            "images",
            "overlay",
            "netns",
            "logs",
            "logs/default_web_u1",
            "pods",
            "pods/u1",
            "pods/u1/volumes",
        ];
        for p in walk {
            set(&d.join(p), 0o755);
        }
        let changed = secure(&d).unwrap();
        for (f, m) in files {
            assert_eq!(mode(&d.join(f)), m, "{f}");
        }
        for (p, m) in [
            ("", 0o700),
            ("apiserver", 0o700),
            ("apiserver/pki", 0o700),
            ("ipam", 0o700),
            ("containers/c1", 0o700),
            ("images", 0o700),
            ("overlay", 0o700),
            ("netns", 0o700),
            ("logs", 0o750),
            ("logs/default_web_u1/app", 0o750),
            ("pods", 0o750),
            ("pods/u1", 0o750),
            ("pods/u1/volumes", 0o750),
            // a volume's own directories: a non-root container reads through them
            ("pods/u1/volumes/projected/sec/..1", 0o755),
            ("overlay/l1/diff", 0o755),
        ] {
            assert_eq!(mode(&d.join(p)), m, "{p:?}");
        }
        assert!(changed.len() >= 20, "{changed:?}");
        // a second start finds nothing to say
        assert!(secure(&d).unwrap().is_empty());
    }

    #[test]
    fn a_new_data_directory_is_made_private() {
        let base = tempfile::tempdir().unwrap();
        let d = base.path().join("var/lib/kcore");
        assert!(secure(&d).unwrap().is_empty());
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(d.parent().unwrap()), 0o700);
    }
}
