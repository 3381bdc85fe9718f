//! The image store: named images over the content store, import, garbage
//! collection, and unpacking into kcore-overlay layers or a flat rootfs.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kcore_overlay::LayerStore;
use oci_spec::image::{ImageConfiguration, ImageManifest};
use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use crate::digest::{chain_ids, Digest};
use crate::error::{Error, IoContext, Result};
use crate::oci::{self, Platform};
use crate::store::ContentStore;
use crate::unpack::{
    self, Compression, LayerStats, Progress, ProgressFn, UnpackOptions, Whiteouts,
};

/// A named image known to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The name it was imported or pulled as (`registry/repo:tag`, a layout
    /// ref name, or the manifest digest when it had none).
    pub name: String,
    /// Digest of the image manifest (for one platform).
    pub manifest: Digest,
    /// Digest of the index it was picked from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
    /// Digest of the image config.
    pub config: Digest,
    /// Seconds since the epoch when it was recorded.
    pub created: u64,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Digest of the (possibly compressed) blob.
    pub digest: Digest,
    /// Declared media type.
    pub media_type: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Chain ID: names the unpacked layer in the layer store.
    pub chain_id: Digest,
}

/// An image with its parsed manifest and config.
#[derive(Debug, Clone)]
pub struct Image {
    /// The store record.
    pub record: ImageRecord,
    /// The parsed manifest.
    pub manifest: ImageManifest,
    /// The parsed config.
    pub config: ImageConfiguration,
    /// Layers, bottom first.
    pub layers: Vec<LayerInfo>,
}

/// How to import an archive or layout.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The name to record (when the source holds one image); otherwise the
    /// names found in the source are used.
    pub name: Option<String>,
    /// Which platform to pick from an index.
    pub platform: Platform,
}

/// What [`ImageStore::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs deleted.
    pub blobs: Vec<Digest>,
    /// Bytes freed by deleted blobs.
    pub blob_bytes: u64,
    /// Unpacked layers (by layer id) deleted.
    pub layers: Vec<String>,
}

/// The result of unpacking an image into a layer store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedImage {
    /// Layer ids, bottom first (the hex of each chain ID).
    pub layer_ids: Vec<String>,
    /// Layers that were unpacked now (the others were already there).
    pub unpacked: usize,
    /// What the layers unpacked now left out (device nodes that could not
    /// be created), see [`crate::LayerStats::warnings`].
    pub warnings: Vec<String>,
}

impl UnpackedImage {
    /// The top layer: the parent for a container's writable layer.
    pub fn top(&self) -> Option<&str> {
        self.layer_ids.last().map(String::as_str)
    }
}

/// Named images over a [`ContentStore`], under one root directory:
/// `<root>/content` (blobs), `<root>/images.json` (names),
/// `<root>/unpacked/` (markers of completely unpacked layers).
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    content: ContentStore,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Catalog {
    images: Vec<ImageRecord>,
}

/// Small files kept in memory by name, and the blobs an import added.
type TarFiles = (HashMap<String, Vec<u8>>, Vec<Digest>);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) struct Lock(File);

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.0, FlockOperation::Unlock);
    }
}

impl ImageStore {
    /// Open (creating if needed) a store at `root`, kept 0700 (an existing one is
    /// tightened), its catalog and lock files 0600, whatever the umask.
    pub fn open(root: impl AsRef<Path>) -> Result<ImageStore> {
        let root = root.as_ref().to_path_buf();
        kcore_statedir::ensure_dir(&root, kcore_statedir::PRIVATE_DIR).at(&root)?;
        fs::create_dir_all(root.join("unpacked")).at(&root)?;
        let content = ContentStore::open(root.join("content"))?;
        Ok(ImageStore { root, content })
    }

    /// The blob store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> Result<Lock> {
        self.lock_file(".lock")
    }

    /// Held shared by imports, pulls and unpacks, exclusively by prune: a
    /// blob fetched but not yet tagged is never collected under them.
    pub(crate) fn gc_guard(&self, exclusive: bool) -> Result<Lock> {
        self.flock(".gc.lock", exclusive)
    }

    fn lock_file(&self, name: &str) -> Result<Lock> {
        self.flock(name, true)
    }

    fn flock(&self, name: &str, exclusive: bool) -> Result<Lock> {
        let p = self.root.join(name);
        let f = kcore_statedir::open(
            &p,
            fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true),
            kcore_statedir::PRIVATE_FILE,
        )
        .at(&p)?;
        let op = if exclusive {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::LockShared
        };
        rustix::fs::flock(&f, op).map_err(io::Error::from).at(&p)?;
        Ok(Lock(f))
    }

    fn load(&self) -> Result<Catalog> {
        let p = self.root.join("images.json");
        match fs::read(&p) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| Error::Invalid {
                what: p.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Catalog::default()),
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }

    fn save_catalog(&self, c: &Catalog) -> Result<()> {
        let p = self.root.join("images.json");
        let data = serde_json::to_vec_pretty(c).expect("catalog serializes");
        kcore_statedir::write(&p, &data, kcore_statedir::PRIVATE_FILE).at(&p)
    }

    /// All images, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let mut v = self.load()?.images;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    fn find(c: &Catalog, name: &str) -> Option<usize> {
        c.images.iter().position(|r| r.name == name).or_else(|| {
            let hex = name.strip_prefix("sha256:").unwrap_or(name);
            if hex.len() < 12 {
                return None;
            }
            let hits: Vec<usize> = c
                .images
                .iter()
                .enumerate()
                .filter(|(_, r)| r.manifest.hex().starts_with(hex))
                .map(|(i, _)| i)
                .collect();
            hits.first().copied()
        })
    }

    /// Look an image up by name, by manifest digest, or by a digest prefix
    /// of at least 12 hex characters.
    pub fn get(&self, name: &str) -> Result<ImageRecord> {
        let c = self.load()?;
        Self::find(&c, name)
            .map(|i| c.images[i].clone())
            .ok_or_else(|| Error::ImageNotFound(name.to_owned()))
    }

    /// The image with its manifest, config and layers.
    pub fn inspect(&self, name: &str) -> Result<Image> {
        let record = self.get(name)?;
        self.load_image(record)
    }

    fn load_image(&self, record: ImageRecord) -> Result<Image> {
        let manifest = oci::parse_manifest(
            &self.content.read_blob(&record.manifest)?,
            &format!("manifest {}", record.manifest),
        )?;
        let config = oci::parse_config(
            &self.content.read_blob(&record.config)?,
            &format!("config {}", record.config),
        )?;
        let diff_ids = oci::diff_ids(&config)?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(Error::Invalid {
                what: format!("image {}", record.name),
                reason: format!(
                    "{} layers but {} diff ids",
                    manifest.layers().len(),
                    diff_ids.len()
                ),
            });
        }
        let chains = chain_ids(&diff_ids);
        let mut layers = Vec::new();
        for ((d, diff_id), chain_id) in manifest.layers().iter().zip(diff_ids).zip(chains) {
            layers.push(LayerInfo {
                digest: oci::digest_of(d)?,
                media_type: d.media_type().to_string(),
                size: d.size(),
                diff_id,
                chain_id,
            });
        }
        Ok(Image {
            record,
            manifest,
            config,
            layers,
        })
    }

    /// Record `name` -> manifest (already in the content store), checking
    /// that the manifest, config and every layer blob are present.
    pub fn tag(
        &self,
        name: &str,
        manifest: &Digest,
        index: Option<&Digest>,
    ) -> Result<ImageRecord> {
        let m = oci::parse_manifest(
            &self.content.read_blob(manifest)?,
            &format!("manifest {manifest}"),
        )?;
        let config = oci::digest_of(m.config())?;
        if !self.content.contains(&config) {
            return Err(Error::BlobNotFound(config));
        }
        for l in m.layers() {
            let d = oci::digest_of(l)?;
            if !self.content.contains(&d) {
                return Err(Error::BlobNotFound(d));
            }
        }
        let record = ImageRecord {
            name: name.to_owned(),
            manifest: manifest.clone(),
            index: index.cloned(),
            config,
            created: now(),
        };
        // Check the config parses and matches the layers now, not at unpack.
        self.load_image(record.clone())?;
        let _l = self.lock()?;
        let mut c = self.load()?;
        c.images.retain(|r| r.name != name);
        c.images.push(record.clone());
        self.save_catalog(&c)?;
        Ok(record)
    }

    /// Forget an image name. Its blobs stay until [`prune`](Self::prune).
    pub fn remove(&self, name: &str) -> Result<ImageRecord> {
        let _l = self.lock()?;
        let mut c = self.load()?;
        let i = Self::find(&c, name).ok_or_else(|| Error::ImageNotFound(name.to_owned()))?;
        let r = c.images.remove(i);
        self.save_catalog(&c)?;
        Ok(r)
    }

    /// Delete blobs no image references and, given the layer store, the
    /// unpacked layers no image references (layers someone else built on,
    /// such as a container's writable layer, are kept).
    pub fn prune(&self, layers: Option<&LayerStore>) -> Result<PruneReport> {
        let span = tracing::info_span!("prune");
        let _g = span.enter();
        // Lock order everywhere: unpack, gc, catalog.
        let _unpacking = match layers {
            Some(_) => Some(self.lock_file(".unpack.lock")?),
            None => None,
        };
        let _gc = self.gc_guard(true)?;
        let _l = self.lock()?;
        let c = self.load()?;
        let mut keep_blobs = BTreeSet::new();
        let mut keep_layers = BTreeSet::new();
        for r in &c.images {
            keep_blobs.insert(r.manifest.clone());
            keep_blobs.insert(r.config.clone());
            if let Some(i) = &r.index {
                keep_blobs.insert(i.clone());
            }
            match self.load_image(r.clone()) {
                Ok(img) => {
                    for l in img.layers {
                        keep_blobs.insert(l.digest);
                        keep_layers.insert(l.chain_id.hex().to_owned());
                    }
                }
                Err(e) => {
                    // Never delete what a broken record might still need.
                    tracing::warn!(image = %r.name, error = &e as &dyn std::error::Error, "unreadable image; pruning nothing");
                    return Err(e);
                }
            }
        }
        let mut report = PruneReport::default();
        for d in self.content.list()? {
            if !keep_blobs.contains(&d) {
                report.blob_bytes += self.content.blob_size(&d).unwrap_or(0);
                self.content.remove(&d)?;
                report.blobs.push(d);
            }
        }
        if let Some(ls) = layers {
            let marks = self.root.join("unpacked");
            let mut ours: Vec<(usize, String)> = Vec::new();
            for e in fs::read_dir(&marks).at(&marks)? {
                let name = e.at(&marks)?.file_name().to_string_lossy().into_owned();
                if !keep_layers.contains(&name) {
                    let depth = ls.get(&name).map(|l| l.depth()).unwrap_or(0);
                    ours.push((depth, name));
                }
            }
            // Children first.
            ours.sort_by_key(|b| std::cmp::Reverse(b.0));
            for (_, id) in ours {
                match ls.remove(&id) {
                    Ok(()) | Err(kcore_overlay::Error::NotFound { .. }) => {
                        let _ = fs::remove_file(marks.join(&id));
                        report.layers.push(id);
                    }
                    Err(e) => {
                        tracing::info!(layer = %id, error = &e as &dyn std::error::Error, "keeping an unreferenced layer in use");
                    }
                }
            }
        }
        Ok(report)
    }

    // ----- import ---------------------------------------------------------

    /// Import an OCI image layout, from a directory or a tar of one.
    pub fn import_oci_layout(&self, path: &Path, opts: &ImportOptions) -> Result<Vec<ImageRecord>> {
        let span = tracing::info_span!("import_oci_layout", path = %path.display());
        let _g = span.enter();
        let _gc = self.gc_guard(false)?;
        if path.is_dir() {
            let layout = path.join("oci-layout");
            check_layout_file(&fs::read(&layout).at(&layout)?)?;
            let index_path = path.join("index.json");
            let index = fs::read(&index_path).at(&index_path)?;
            let fetch = |d: &Digest| -> Result<()> {
                let p = path.join("blobs/sha256").join(d.hex());
                let f = File::open(&p).at(&p)?;
                self.content.put_reader(f, Some(d), None)?;
                Ok(())
            };
            self.import_index(&index, &fetch, opts)
        } else {
            let f = File::open(path).at(path)?;
            let (files, added) = self.stream_tar(f, path, |name| {
                name.strip_prefix("blobs/sha256/")
                    .and_then(|h| Digest::from_hex(h).ok())
            })?;
            let res = (|| {
                let layout = files
                    .get("oci-layout")
                    .ok_or_else(|| invalid(path, "no oci-layout file"))?;
                check_layout_file(layout)?;
                let index = files
                    .get("index.json")
                    .ok_or_else(|| invalid(path, "no index.json"))?;
                let fetch = |d: &Digest| -> Result<()> {
                    if self.content.contains(d) {
                        Ok(())
                    } else {
                        Err(Error::BlobNotFound(d.clone()))
                    }
                };
                self.import_index(index, &fetch, opts)
            })();
            self.drop_unreferenced(&added)?;
            res
        }
    }

    /// Walk a layout's index.json: copy what the chosen manifests need and
    /// record them.
    fn import_index(
        &self,
        index: &[u8],
        fetch: &dyn Fn(&Digest) -> Result<()>,
        opts: &ImportOptions,
    ) -> Result<Vec<ImageRecord>> {
        let idx = oci::parse_index(index, "index.json")?;
        let mut chosen: Vec<(Option<String>, Digest, Option<Digest>)> = Vec::new();
        let entries = idx.manifests();
        let has_platforms = entries.iter().any(|d| d.platform().is_some());
        for d in entries {
            let mt = d.media_type().to_string();
            let digest = oci::digest_of(d)?;
            let ref_name = d
                .annotations()
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.ref.name").cloned());
            if oci::is_index(&mt) {
                fetch(&digest)?;
                let nested = self.content.read_blob(&digest)?;
                let nested = oci::parse_index(&nested, &format!("index {digest}"))?;
                let m = oci::select_manifest(&nested, &opts.platform, &format!("index {digest}"))?;
                chosen.push((ref_name, oci::digest_of(m)?, Some(digest)));
            } else if oci::is_manifest(&mt) {
                if has_platforms && d.platform().is_some() && !opts.platform.matches(d) {
                    continue;
                }
                chosen.push((ref_name, digest, None));
            }
        }
        if chosen.is_empty() {
            return Err(Error::NoMatchingPlatform {
                platform: opts.platform.to_string(),
                what: "index.json".into(),
            });
        }
        let mut out = Vec::new();
        let single = chosen.len() == 1;
        for (ref_name, manifest, index) in chosen {
            fetch(&manifest)?;
            let m = oci::parse_manifest(
                &self.content.read_blob(&manifest)?,
                &format!("manifest {manifest}"),
            )?;
            fetch(&oci::digest_of(m.config())?)?;
            for l in m.layers() {
                fetch(&oci::digest_of(l)?)?;
            }
            let name = match (&opts.name, single) {
                (Some(n), true) => n.clone(),
                _ => ref_name.unwrap_or_else(|| manifest.to_string()),
            };
            out.push(self.tag(&name, &manifest, index.as_ref())?);
        }
        Ok(out)
    }

    /// Import a `docker save` archive (a tar, or a directory of one
    /// unpacked) with `manifest.json`. Layers are stored as they are; an
    /// OCI manifest is written for each image.
    pub fn import_docker_archive(
        &self,
        path: &Path,
        opts: &ImportOptions,
    ) -> Result<Vec<ImageRecord>> {
        let span = tracing::info_span!("import_docker_archive", path = %path.display());
        let _g = span.enter();
        let _gc = self.gc_guard(false)?;
        let (files, added, by_path) = if path.is_dir() {
            let mf = path.join("manifest.json");
            let manifest = fs::read(&mf).at(&mf)?;
            let entries = parse_docker_manifest(&manifest, path)?;
            let mut by_path = HashMap::new();
            let mut added = Vec::new();
            for e in &entries {
                for rel in std::iter::once(&e.config).chain(e.layers.iter()) {
                    let rel_norm = unpack::normalize(rel.as_bytes())
                        .ok()
                        .flatten()
                        .ok_or_else(|| invalid(path, "bad path in manifest.json"))?;
                    let p = path.join(&rel_norm);
                    let f = File::open(&p).at(&p)?;
                    let (d, _) = self.content.put_reader(f, None, None)?;
                    added.push(d.clone());
                    by_path.insert(rel_norm.to_string_lossy().into_owned(), d);
                }
            }
            let mut files = HashMap::new();
            files.insert("manifest.json".to_owned(), manifest);
            (files, added, by_path)
        } else {
            let f = File::open(path).at(path)?;
            let by_path = Mutex::new(HashMap::new());
            let (files, added) = self.stream_tar_all(f, path, &by_path)?;
            (files, added, by_path.into_inner().expect("not poisoned"))
        };
        let res = (|| {
            let manifest = files
                .get("manifest.json")
                .ok_or_else(|| invalid(path, "no manifest.json (not a docker-archive?)"))?;
            let entries = parse_docker_manifest(manifest, path)?;
            let single = entries.len() == 1;
            let mut out = Vec::new();
            for e in entries {
                let blob = |rel: &str| -> Result<Digest> {
                    let key = unpack::normalize(rel.as_bytes())
                        .ok()
                        .flatten()
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    by_path.get(&key).cloned().ok_or_else(|| {
                        invalid(path, &format!("{rel} listed in manifest.json is missing"))
                    })
                };
                let config = blob(&e.config)?;
                // A config named after a digest must match it.
                if let Some(claimed) = Path::new(&e.config)
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| Digest::from_hex(s).ok())
                {
                    if claimed != config {
                        return Err(Error::DigestMismatch {
                            what: format!("config {}", e.config),
                            expected: claimed,
                            actual: config,
                        });
                    }
                }
                let cfg = oci::parse_config(&self.content.read_blob(&config)?, &e.config)?;
                let diff_ids = oci::diff_ids(&cfg)?;
                if diff_ids.len() != e.layers.len() {
                    return Err(invalid(
                        path,
                        "layer count differs from the config's diff ids",
                    ));
                }
                let mut layers = Vec::new();
                for (rel, diff_id) in e.layers.iter().zip(&diff_ids) {
                    let d = blob(rel)?;
                    let mut head = [0u8; 4];
                    let n = self.content.open_blob(&d)?.read(&mut head).unwrap_or(0);
                    let mt = match Compression::from_magic(&head[..n]) {
                        Some(Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
                        Some(Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
                        _ => {
                            if &d != diff_id {
                                return Err(Error::DigestMismatch {
                                    what: format!("layer {rel} diff id"),
                                    expected: diff_id.clone(),
                                    actual: d,
                                });
                            }
                            "application/vnd.oci.image.layer.v1.tar"
                        }
                    };
                    layers.push(serde_json::json!({
                        "mediaType": mt,
                        "digest": d.to_string(),
                        "size": self.content.blob_size(&d)?,
                    }));
                }
                let m = serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": oci::OCI_MANIFEST,
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": config.to_string(),
                        "size": self.content.blob_size(&config)?,
                    },
                    "layers": layers,
                });
                let mdigest = self.content.put_bytes(m.to_string().as_bytes())?;
                let names: Vec<String> = match (&opts.name, single) {
                    (Some(n), true) => vec![n.clone()],
                    _ if e.repo_tags.is_empty() => vec![mdigest.to_string()],
                    _ => e.repo_tags.clone(),
                };
                for n in names {
                    out.push(self.tag(&n, &mdigest, None)?);
                }
            }
            Ok(out)
        })();
        self.drop_unreferenced(&added)?;
        res
    }

    /// Stream a tar: entries accepted by `blob_name` go into the content
    /// store verified against the digest their name claims; small JSON-ish
    /// files are kept in memory. Returns those files and the blobs added.
    fn stream_tar(
        &self,
        f: File,
        path: &Path,
        blob_name: impl Fn(&str) -> Option<Digest>,
    ) -> Result<TarFiles> {
        let mut files = HashMap::new();
        let mut added = Vec::new();
        let mut ar = tar::Archive::new(io::BufReader::with_capacity(1 << 20, f));
        let tar_err = |e: io::Error| Error::Archive {
            layer: path.display().to_string(),
            source: e,
        };
        for entry in ar.entries().map_err(tar_err)? {
            let mut entry = entry.map_err(tar_err)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let raw = entry.path_bytes().into_owned();
            let Some(name) = unpack::normalize(&raw).ok().flatten() else {
                continue;
            };
            let name = name.to_string_lossy().into_owned();
            if let Some(d) = blob_name(&name) {
                let had = self.content.contains(&d);
                let size = entry.size();
                self.content.put_reader(&mut entry, Some(&d), Some(size))?;
                if !had {
                    added.push(d);
                }
            } else if entry.size() <= 16 << 20 {
                let mut v = Vec::new();
                entry.read_to_end(&mut v).map_err(tar_err)?;
                files.insert(name, v);
            }
        }
        Ok((files, added))
    }

    /// Like [`stream_tar`](Self::stream_tar) but every regular file larger
    /// than 0 bytes goes into the store (docker-archive: which files are
    /// layers is only known from manifest.json, often the last entry).
    fn stream_tar_all(
        &self,
        f: File,
        path: &Path,
        by_path: &Mutex<HashMap<String, Digest>>,
    ) -> Result<TarFiles> {
        let mut files = HashMap::new();
        let mut added = Vec::new();
        let mut ar = tar::Archive::new(io::BufReader::with_capacity(1 << 20, f));
        let tar_err = |e: io::Error| Error::Archive {
            layer: path.display().to_string(),
            source: e,
        };
        for entry in ar.entries().map_err(tar_err)? {
            let mut entry = entry.map_err(tar_err)?;
            let kind = entry.header().entry_type();
            let raw = entry.path_bytes().into_owned();
            let Some(name) = unpack::normalize(&raw).ok().flatten() else {
                continue;
            };
            let name = name.to_string_lossy().into_owned();
            if kind.is_symlink() {
                // skopeo / docker link duplicate layers: resolve later.
                if let Some(target) = entry.link_name_bytes() {
                    let base = Path::new(&name).parent().unwrap_or(Path::new(""));
                    let joined = base.join(Path::new(&*String::from_utf8_lossy(&target)));
                    let mut parts: Vec<String> = Vec::new();
                    for c in joined.components() {
                        match c {
                            std::path::Component::ParentDir => {
                                parts.pop();
                            }
                            std::path::Component::Normal(s) => {
                                parts.push(s.to_string_lossy().into_owned())
                            }
                            _ => {}
                        }
                    }
                    let resolved = parts.join("/");
                    let map = by_path.lock().expect("not poisoned");
                    if let Some(d) = map.get(&resolved).cloned() {
                        drop(map);
                        by_path.lock().expect("not poisoned").insert(name, d);
                    }
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            if name == "manifest.json"
                || name == "repositories"
                || name.ends_with("/json")
                || name.ends_with("VERSION")
            {
                let mut v = Vec::new();
                entry.read_to_end(&mut v).map_err(tar_err)?;
                files.insert(name, v);
                continue;
            }
            let size = entry.size();
            let mut w = self.content.writer(None, Some(size))?;
            io::copy(&mut entry, &mut w).map_err(tar_err)?;
            let (d, _) = w.commit()?;
            added.push(d.clone());
            by_path.lock().expect("not poisoned").insert(name, d);
        }
        Ok((files, added))
    }

    /// Delete blobs added by an import that no image ended up referencing.
    fn drop_unreferenced(&self, added: &[Digest]) -> Result<()> {
        if added.is_empty() {
            return Ok(());
        }
        let mut keep = BTreeSet::new();
        for r in self.load()?.images {
            keep.insert(r.manifest.clone());
            keep.insert(r.config.clone());
            if let Some(i) = &r.index {
                keep.insert(i.clone());
            }
            if let Ok(img) = self.load_image(r) {
                keep.extend(img.layers.into_iter().map(|l| l.digest));
            }
        }
        for d in added {
            if !keep.contains(d) {
                self.content.remove(d)?;
            }
        }
        Ok(())
    }

    // ----- unpack ---------------------------------------------------------

    /// Unpack an image's layers into `layers`, each into its own diff
    /// directory (named by the hex of its chain ID), `jobs` layers at a time,
    /// each with the helper threads of [`UnpackOptions::threads`].
    /// Layers already unpacked are reused. Each layer's DiffID is verified;
    /// a failed layer (and every layer above it) is removed.
    ///
    /// `opts` must use [`Whiteouts::Overlay`] (it is forced).
    pub fn unpack(
        &self,
        name: &str,
        layers: &LayerStore,
        opts: &UnpackOptions,
        jobs: usize,
    ) -> Result<UnpackedImage> {
        let img = self.inspect(name)?;
        self.unpack_layers(&img.record.name, &img.layers, layers, opts, jobs)
    }

    /// Like [`unpack`](Self::unpack), for a chain of layers (bottom first) whose
    /// blobs are in the content store but that no image names yet: an image
    /// builder's steps. `label` names the chain in logs.
    pub fn unpack_layers(
        &self,
        label: &str,
        chain: &[LayerInfo],
        layers: &LayerStore,
        opts: &UnpackOptions,
        jobs: usize,
    ) -> Result<UnpackedImage> {
        let span = tracing::info_span!("unpack_image", image = %label, layers = chain.len());
        let _g = span.enter();
        let opts = opts.clone().whiteouts(Whiteouts::Overlay);
        let marks = self.root.join("unpacked");
        // One unpack at a time per store (across processes): a half-built
        // layer of another unpack must not be taken for a leftover.
        let _unpacking = self.lock_file(".unpack.lock")?;
        let _gc = self.gc_guard(false)?;
        let ids: Vec<String> = chain.iter().map(|l| l.chain_id.hex().to_owned()).collect();
        let ov = |e: kcore_overlay::Error| Error::Io {
            path: layers.root().to_path_buf(),
            source: io::Error::other(e),
        };

        // Phase 1 (in order, cheap): make sure each layer exists, empty if new.
        let mut todo = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let parent = if i == 0 {
                None
            } else {
                Some(ids[i - 1].as_str())
            };
            let complete = marks.join(id).exists();
            let exists = layers.exists(id).map_err(ov)?;
            if exists && complete {
                continue;
            }
            if exists {
                // Left over by an interrupted unpack.
                remove_layer_tree(layers, id).map_err(ov)?;
            }
            let _ = fs::remove_file(marks.join(id));
            layers.create(id, parent).map_err(ov)?;
            todo.push(i);
        }

        // Phase 2: unpack the missing diffs in parallel.
        let total = Aggregate::new(opts.progress_fn());
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<(usize, Result<LayerStats>)>> = Mutex::new(Vec::new());
        let workers = jobs.max(1).min(todo.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = todo.get(k) else { break };
                    let l = &chain[i];
                    let res = (|| {
                        let diff = layers.diff_path(&ids[i]).map_err(ov)?;
                        let blob = self.content.open_blob(&l.digest)?;
                        let o = opts.clone().progress(total.for_layer());
                        unpack::apply_layer(blob, Some(&l.media_type), &diff, Some(&l.diff_id), &o)
                    })();
                    results.lock().expect("not poisoned").push((i, res));
                });
            }
        });
        let mut results = results.into_inner().expect("not poisoned");
        results.sort_by_key(|(i, _)| *i);
        let first_err = results.iter().position(|(_, r)| r.is_err());
        if let Some(pos) = first_err {
            let failed = results[pos].0;
            // Remove the failed layer and everything above it, top first.
            for id in ids[failed..].iter().rev() {
                if !marks.join(id).exists() {
                    let _ = remove_layer_tree(layers, id);
                }
            }
            let (_, err) = results.swap_remove(pos);
            return Err(err.expect_err("position of an error"));
        }
        for (i, _) in &results {
            let m = marks.join(&ids[*i]);
            File::create(&m).at(&m)?;
        }
        let warnings = results
            .iter_mut()
            .filter_map(|(_, r)| r.as_mut().ok())
            .flat_map(|st| std::mem::take(&mut st.warnings))
            .collect();
        Ok(UnpackedImage {
            warnings,
            unpacked: results.len(),
            layer_ids: ids,
        })
    }

    /// Apply all of an image's layers, in order, onto a new plain directory
    /// `dest` (which must not exist). Whiteouts delete what they hide. On
    /// any error `dest` is removed.
    pub fn flatten(&self, name: &str, dest: &Path, opts: &UnpackOptions) -> Result<()> {
        let img = self.inspect(name)?;
        let span =
            tracing::info_span!("flatten_image", image = %img.record.name, dest = %dest.display());
        let _g = span.enter();
        let _gc = self.gc_guard(false)?;
        let total = Aggregate::new(opts.progress_fn());
        fs::create_dir(dest).at(dest)?;
        let res = (|| {
            let root = unpack::open_root(dest)?;
            for l in &img.layers {
                let blob = self.content.open_blob(&l.digest)?;
                let o = opts
                    .clone()
                    .whiteouts(Whiteouts::Apply)
                    .progress(total.for_layer());
                unpack::apply_layer_at(
                    blob,
                    Some(&l.media_type),
                    std::os::fd::AsFd::as_fd(&root),
                    Some(&l.diff_id),
                    &o,
                )?;
            }
            Ok(())
        })();
        if res.is_err() {
            let _ = fs::remove_dir_all(dest);
        }
        res
    }

    /// Whether every layer of the image is completely unpacked in `layers`.
    pub fn is_unpacked(&self, name: &str, layers: &LayerStore) -> Result<bool> {
        let img = self.inspect(name)?;
        for l in &img.layers {
            let id = l.chain_id.hex();
            if !self.root.join("unpacked").join(id).exists() || !layers.exists(id).unwrap_or(false)
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Remove a layer, after removing whatever was built on top of it.
fn remove_layer_tree(
    layers: &LayerStore,
    id: &str,
) -> std::result::Result<(), kcore_overlay::Error> {
    match layers.children(id) {
        Ok(children) => {
            for c in children {
                remove_layer_tree(layers, &c)?;
            }
        }
        Err(kcore_overlay::Error::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    }
    match layers.remove(id) {
        Ok(()) | Err(kcore_overlay::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sums per-layer progress into image totals.
struct Aggregate {
    user: Option<ProgressFn>,
    bytes: Arc<AtomicU64>,
    entries: Arc<AtomicU64>,
}

impl Aggregate {
    fn new(user: Option<ProgressFn>) -> Self {
        Aggregate {
            user,
            bytes: Arc::new(AtomicU64::new(0)),
            entries: Arc::new(AtomicU64::new(0)),
        }
    }

    fn for_layer(&self) -> ProgressFn {
        let user = self.user.clone();
        let bytes = self.bytes.clone();
        let entries = self.entries.clone();
        let last = Mutex::new(Progress {
            bytes: 0,
            entries: 0,
        });
        Arc::new(move |p: Progress| {
            let mut l = last.lock().expect("not poisoned");
            let b = bytes.fetch_add(p.bytes.saturating_sub(l.bytes), Ordering::Relaxed)
                + p.bytes.saturating_sub(l.bytes);
            let e = entries.fetch_add(p.entries.saturating_sub(l.entries), Ordering::Relaxed)
                + p.entries.saturating_sub(l.entries);
            *l = p;
            if let Some(u) = &user {
                u(Progress {
                    bytes: b,
                    entries: e,
                });
            }
        })
    }
}

fn invalid(path: &Path, reason: &str) -> Error {
    Error::Invalid {
        what: path.display().to_string(),
        reason: reason.to_owned(),
    }
}

fn check_layout_file(data: &[u8]) -> Result<()> {
    #[derive(Deserialize)]
    struct L {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let l: L = serde_json::from_slice(data).map_err(|e| Error::Invalid {
        what: "oci-layout".into(),
        reason: e.to_string(),
    })?;
    if !l.version.starts_with("1.") {
        return Err(Error::Invalid {
            what: "oci-layout".into(),
            reason: format!("unsupported image layout version {}", l.version),
        });
    }
    Ok(())
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn parse_docker_manifest(data: &[u8], path: &Path) -> Result<Vec<DockerEntry>> {
    serde_json::from_slice(data).map_err(|e| Error::Invalid {
        what: format!("{}: manifest.json", path.display()),
        reason: e.to_string(),
    })
}
