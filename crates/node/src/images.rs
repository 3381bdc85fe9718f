//! Images for pods: lookup by Kubernetes-style reference, pull policy, unpacking into
//! the overlay layer store, and building a small OCI image from a directory.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kcore_image::{Image, ImageStore, UnpackOptions};
use kcore_overlay::LayerStore;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, ErrorChain, Result};

/// What to put in the config of an image built by [`image_from_dir`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSpec {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` (`NAME=value`).
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User`.
    pub user: Option<String>,
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Builds an OCI image layout at `layout` (created; must not exist) holding one image
/// named `name` whose single layer is the content of directory `rootfs` (symlinks kept,
/// owners and modes as on disk). Import it with [`ImageStore::import_oci_layout`].
///
/// Returns the manifest digest (`sha256:<hex>`).
pub fn image_from_dir(
    rootfs: &Path,
    layout: &Path,
    name: &str,
    spec: &ImageSpec,
) -> Result<String> {
    let _span = tracing::info_span!("image_from_dir", rootfs = %rootfs.display(), name).entered();
    std::fs::create_dir(layout).map_err(|e| Error::io("create", layout, e))?;
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| Error::io("create", &blobs, e))?;
    // the layer: an uncompressed tar of the directory
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    builder
        .append_dir_all(".", rootfs)
        .map_err(|e| Error::io("archive", rootfs, e))?;
    let layer = builder
        .into_inner()
        .map_err(|e| Error::io("archive", rootfs, e))?;
    let layer_hex = sha256_hex(&layer);
    let write_blob = |hex: &str, data: &[u8]| -> Result<()> {
        let p = blobs.join(hex);
        let mut f = std::fs::File::create(&p).map_err(|e| Error::io("create", &p, e))?;
        f.write_all(data).map_err(|e| Error::io("write", &p, e))
    };
    write_blob(&layer_hex, &layer)?;
    let mut cfg = serde_json::Map::new();
    if !spec.entrypoint.is_empty() {
        cfg.insert("Entrypoint".into(), json!(spec.entrypoint));
    }
    if !spec.cmd.is_empty() {
        cfg.insert("Cmd".into(), json!(spec.cmd));
    }
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    cfg.insert("Env".into(), json!(env));
    if let Some(w) = &spec.working_dir {
        cfg.insert("WorkingDir".into(), json!(w));
    }
    if let Some(u) = &spec.user {
        cfg.insert("User".into(), json!(u));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]},
        "history": [{"created_by": "kcore image_from_dir"}],
    }))
    .expect("json");
    let config_hex = sha256_hex(&config);
    write_blob(&config_hex, &config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_hex}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_hex}"),
            "size": layer.len(),
        }],
    }))
    .expect("json");
    let manifest_hex = sha256_hex(&manifest);
    write_blob(&manifest_hex, &manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_hex}"),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
            "platform": {"architecture": oci_arch(), "os": "linux"},
        }],
    });
    let p = layout.join("index.json");
    std::fs::write(&p, index.to_string()).map_err(|e| Error::io("write", &p, e))?;
    let p = layout.join("oci-layout");
    std::fs::write(&p, r#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(|e| Error::io("write", &p, e))?;
    Ok(format!("sha256:{manifest_hex}"))
}

/// The names a Kubernetes image reference may be stored under, most specific first:
/// `busybox` → `busybox`, `busybox:latest`, `docker.io/library/busybox:latest`, ...
pub fn reference_candidates(image: &str) -> Vec<String> {
    let mut out = vec![image.to_owned()];
    let (name, suffix) = match image.find('@') {
        Some(i) => (&image[..i], image[i..].to_owned()),
        None => {
            let last = image.rsplit('/').next().unwrap_or(image);
            if last.contains(':') {
                let i = image.rfind(':').expect("has a colon");
                (&image[..i], image[i..].to_owned())
            } else {
                (image, ":latest".to_owned())
            }
        }
    };
    let mut push = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    push(format!("{name}{suffix}"));
    let first = name.split('/').next().unwrap_or(name);
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_registry {
        let full = if name.contains('/') {
            format!("docker.io/{name}")
        } else {
            format!("docker.io/library/{name}")
        };
        push(format!("{full}{suffix}"));
    } else if let Some(rest) = name.strip_prefix("docker.io/library/") {
        push(format!("{rest}{suffix}"));
    } else if let Some(rest) = name.strip_prefix("docker.io/") {
        push(format!("{rest}{suffix}"));
    }
    out
}

/// A pod container's image, resolved in the store and unpacked.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedImage {
    /// The stored name.
    pub name: String,
    /// `imageID` for the status: `<name>@sha256:<manifest>`.
    pub image_id: String,
    /// The image with its config.
    pub image: Image,
    /// The top layer id (parent of the container's writable layer).
    pub top_layer: Option<String>,
}

/// The node's images and layers.
#[derive(Debug)]
pub(crate) struct Images {
    store: ImageStore,
    layers: LayerStore,
    /// Serialises unpacking (the store locks too; this avoids duplicate work).
    unpack: Mutex<()>,
    /// Images already resolved and unpacked, by stored name and manifest digest: a
    /// container start then costs a lookup instead of the store's locks and checks.
    ready: Mutex<HashMap<(String, String), ResolvedImage>>,
}

impl Images {
    pub fn open(image_root: &Path, layer_root: &Path) -> Result<Self> {
        let store = ImageStore::open(image_root).map_err(|e| Error::Image {
            image: image_root.display().to_string(),
            source: Box::new(e),
        })?;
        let layers = LayerStore::open(layer_root).map_err(|e| Error::Layer {
            layer: layer_root.display().to_string(),
            source: Box::new(e),
        })?;
        Ok(Images {
            store,
            layers,
            unpack: Mutex::new(()),
            ready: Mutex::new(HashMap::new()),
        })
    }

    /// Finds the stored image for a pod's reference.
    pub fn find(&self, image: &str) -> Option<kcore_image::ImageRecord> {
        reference_candidates(image)
            .iter()
            .find_map(|c| self.store.get(c).ok())
    }

    /// Resolves `image` under `policy` (`Always`, `IfNotPresent`, `Never`) and unpacks it.
    ///
    /// No registry is reachable from every node, so `Always` uses a local copy when a
    /// pull fails.
    pub fn ensure(
        self: &Arc<Self>,
        image: &str,
        policy: &str,
        pull_wait: Duration,
    ) -> Result<ResolvedImage> {
        let _span = tracing::info_span!("ensure_image", image, policy).entered();
        let mut record = self.find(image);
        if policy == "Always" || (record.is_none() && policy != "Never") {
            // with a local copy, wait for the registry only so long
            let pulled = if record.is_some() {
                let (tx, rx) = std::sync::mpsc::channel();
                let me = Arc::clone(self);
                let img = image.to_owned();
                std::thread::spawn(move || {
                    let _ = tx.send(me.pull(&img));
                });
                rx.recv_timeout(pull_wait).unwrap_or_else(|_| {
                    Err(Error::ImageNotPresent {
                        image: image.to_owned(),
                        reason: "registry did not answer in time".into(),
                    })
                })
            } else {
                self.pull(image)
            };
            match pulled {
                Ok(r) => record = Some(r),
                Err(e) if record.is_some() => {
                    tracing::info!(image, error = %ErrorChain(&e), "pull failed; using the local image");
                }
                Err(e) => return Err(e),
            }
        }
        let Some(record) = record else {
            return Err(Error::ImageNotPresent {
                image: image.to_owned(),
                reason: "imagePullPolicy is Never".into(),
            });
        };
        let key = (record.name.clone(), record.manifest.to_string());
        let known = self
            .ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(r) = known {
            // still there (nothing removed its layers since); the store answers this
            // without its lock, which every container's rootfs mount and removal hold
            // (waiting for it cost starting pods up to seconds with 100 at once)
            let present = match r.top_layer.as_deref() {
                Some(l) => self.layers.exists(l).unwrap_or(false),
                None => true,
            };
            if present {
                return Ok(r);
            }
        }
        let img_err = |e| Error::Image {
            image: image.to_owned(),
            source: Box::new(e),
        };
        let unpacked = {
            let _g = self.unpack.lock().unwrap_or_else(|p| p.into_inner());
            self.store
                .unpack(&record.name, &self.layers, &UnpackOptions::new(), 2)
                .map_err(img_err)?
        };
        let img = self.store.inspect(&record.name).map_err(img_err)?;
        let repo = record.name.split('@').next().unwrap_or(&record.name);
        let repo = match repo.rfind(':') {
            Some(i) if !repo[i..].contains('/') => &repo[..i],
            _ => repo,
        };
        let resolved = ResolvedImage {
            name: record.name.clone(),
            image_id: format!("{repo}@{}", record.manifest),
            top_layer: unpacked.top().map(str::to_owned),
            image: img,
        };
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, resolved.clone());
        Ok(resolved)
    }

    fn pull(&self, image: &str) -> Result<kcore_image::ImageRecord> {
        let opts = kcore_image::PullOptions {
            attempts: 1,
            ..Default::default()
        };
        self.store.pull(image, &opts).map_err(|e| Error::Pull {
            image: image.to_owned(),
            source: Box::new(e),
        })
    }

    /// Creates and mounts a writable layer for a container; returns the rootfs path.
    pub fn mount_rootfs(&self, layer: &str, parent: Option<&str>) -> Result<PathBuf> {
        let lerr = |e| Error::Layer {
            layer: layer.to_owned(),
            source: Box::new(e),
        };
        if self.layers.exists(layer).map_err(lerr)? {
            if self.layers.is_mounted(layer).map_err(lerr)? {
                let _ = self.layers.unmount(layer);
            }
            self.layers.remove(layer).map_err(lerr)?;
        }
        self.layers.create(layer, parent).map_err(lerr)?;
        self.layers
            .mount(layer, &kcore_overlay::MountOptions::new())
            .map_err(lerr)
    }

    /// Unmounts and removes a container's writable layer (if present).
    pub fn remove_rootfs(&self, layer: &str) -> Result<()> {
        let lerr = |e| Error::Layer {
            layer: layer.to_owned(),
            source: Box::new(e),
        };
        if !self.layers.exists(layer).map_err(lerr)? {
            return Ok(());
        }
        if self.layers.is_mounted(layer).map_err(lerr)? {
            self.layers.unmount(layer).map_err(lerr)?;
        }
        self.layers.remove(layer).map_err(lerr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_cover_docker_hub_short_names() {
        let c = reference_candidates("busybox");
        assert_eq!(
            c,
            vec![
                "busybox",
                "busybox:latest",
                "docker.io/library/busybox:latest"
            ]
        );
        let c = reference_candidates("docker.io/library/nginx:1.25");
        assert!(c.contains(&"nginx:1.25".to_owned()));
        let c = reference_candidates("localhost:5000/app");
        assert_eq!(c, vec!["localhost:5000/app", "localhost:5000/app:latest"]);
        let c = reference_candidates("me/app:v2");
        assert!(c.contains(&"docker.io/me/app:v2".to_owned()));
    }

    #[test]
    fn image_from_dir_writes_a_layout_the_store_imports() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/hello"), "hi\n").unwrap();
        std::os::unix::fs::symlink("hello", root.join("bin/link")).unwrap();
        let layout = tmp.path().join("layout");
        let spec = ImageSpec {
            cmd: vec!["/bin/hello".into()],
            ..Default::default()
        };
        let digest = image_from_dir(&root, &layout, "example.test/hello:v1", &spec).unwrap();
        let store = ImageStore::open(tmp.path().join("store")).unwrap();
        let recs = store
            .import_oci_layout(&layout, &kcore_image::ImportOptions::default())
            .unwrap();
        assert_eq!(recs[0].name, "example.test/hello:v1");
        assert_eq!(recs[0].manifest.to_string(), digest);
        let img = store.inspect("example.test/hello:v1").unwrap();
        assert_eq!(img.layers.len(), 1);
        let cmd = img.config.config().as_ref().unwrap().cmd().clone().unwrap();
        assert_eq!(cmd, vec!["/bin/hello".to_string()]);
    }
}
