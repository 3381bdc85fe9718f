//! Save images out of the store: an OCI image layout (a directory or a
//! tar of one) or a docker-archive (`docker save` / `podman save` format,
//! loadable by `docker load` and `podman load`); and give an image a
//! second name.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use crate::images::{ImageRecord, ImageStore};
use crate::oci;
use crate::registry::Reference;
use crate::unpack::Compression;

/// The format [`ImageStore::save`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveFormat {
    /// An OCI image layout: `oci-layout`, `index.json`, `blobs/sha256/`.
    /// Blobs are written as stored (digests unchanged).
    #[default]
    Oci,
    /// A docker-archive: `manifest.json`, `repositories`, the config as
    /// `<hex>.json` and each layer uncompressed as `<diff id hex>/layer.tar`.
    DockerArchive,
}

impl std::str::FromStr for SaveFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "oci" | "oci-archive" | "oci-dir" => Ok(SaveFormat::Oci),
            "docker-archive" | "docker" => Ok(SaveFormat::DockerArchive),
            other => Err(Error::Invalid {
                what: format!("save format {other:?}"),
                reason: "expected oci or docker-archive".into(),
            }),
        }
    }
}

/// Where saved files go: a directory or a tar stream.
enum Out {
    Dir(PathBuf),
    Tar(tar::Builder<BufWriter<File>>, PathBuf),
}

impl Out {
    fn add_bytes(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.add_reader(name, data.len() as u64, data)
    }

    fn add_reader(&mut self, name: &str, size: u64, mut r: impl Read) -> Result<()> {
        match self {
            Out::Dir(root) => {
                let p = root.join(name);
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent).at(parent)?;
                }
                let mut f = File::create(&p).at(&p)?;
                io::copy(&mut r, &mut f).at(&p)?;
                Ok(())
            }
            Out::Tar(b, path) => {
                let mut h = tar::Header::new_gnu();
                h.set_size(size);
                h.set_mode(0o644);
                h.set_mtime(0);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, name, r).at(path.clone())
            }
        }
    }

    fn add_dir(&mut self, name: &str) -> Result<()> {
        match self {
            Out::Dir(root) => {
                let p = root.join(name);
                fs::create_dir_all(&p).at(p)
            }
            Out::Tar(b, path) => {
                let mut h = tar::Header::new_gnu();
                h.set_size(0);
                h.set_mode(0o755);
                h.set_mtime(0);
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, name, io::empty()).at(path.clone())
            }
        }
    }

    fn finish(self) -> Result<()> {
        if let Out::Tar(b, path) = self {
            let mut w = b.into_inner().at(path.clone())?;
            w.flush().at(path.clone())?;
            w.get_ref().sync_all().at(path)?;
        }
        Ok(())
    }
}

impl ImageStore {
    /// Give the image `src` the name `dst` too (`kcore image tag`).
    pub fn tag_image(&self, src: &str, dst: &str) -> Result<ImageRecord> {
        let rec = self.get(src)?;
        // A name must be a valid reference (it is pushed and pulled by it).
        dst.parse::<Reference>()?;
        self.tag(dst, &rec.manifest, rec.index.as_ref())
    }

    /// Save the images `names` to `dest`: a directory when `dest` is an
    /// existing directory or ends in `/`, a tar file otherwise (created or
    /// replaced whole: written to a temporary name and renamed).
    ///
    /// ```no_run
    /// use kcore_image::{ImageStore, SaveFormat};
    /// let images = ImageStore::open("/var/lib/kcore/images")?;
    /// images.save(&["web:v1"], "web.tar".as_ref(), SaveFormat::DockerArchive)?;
    /// // podman load -i web.tar
    /// Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save(&self, names: &[&str], dest: &Path, format: SaveFormat) -> Result<()> {
        let span = tracing::info_span!("save", dest = %dest.display(), ?format);
        let _g = span.enter();
        let _gc = self.gc_guard(false)?;
        let records = names
            .iter()
            .map(|n| self.get(n))
            .collect::<Result<Vec<_>>>()?;
        let as_dir = dest.is_dir() || dest.as_os_str().as_encoded_bytes().ends_with(b"/");
        if as_dir {
            fs::create_dir_all(dest).at(dest)?;
            let out = Out::Dir(dest.to_owned());
            return self.write_save(&records, format, out);
        }
        let file_name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let tmp = dest.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
        let f = File::create(&tmp).at(&tmp)?;
        let out = Out::Tar(
            tar::Builder::new(BufWriter::with_capacity(1 << 20, f)),
            tmp.clone(),
        );
        let res = self
            .write_save(&records, format, out)
            .and_then(|()| fs::rename(&tmp, dest).at(dest));
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }

    fn write_save(&self, records: &[ImageRecord], format: SaveFormat, mut out: Out) -> Result<()> {
        match format {
            SaveFormat::Oci => self.write_oci(records, &mut out)?,
            SaveFormat::DockerArchive => self.write_docker(records, &mut out)?,
        }
        out.finish()
    }

    fn write_oci(&self, records: &[ImageRecord], out: &mut Out) -> Result<()> {
        out.add_bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        out.add_dir("blobs/")?;
        out.add_dir("blobs/sha256/")?;
        let mut written = std::collections::HashSet::new();
        let mut manifests = Vec::new();
        for rec in records {
            let img = self.inspect(&rec.name)?;
            let mut blobs = vec![rec.manifest.clone(), rec.config.clone()];
            blobs.extend(img.layers.iter().map(|l| l.digest.clone()));
            for d in blobs {
                if written.insert(d.clone()) {
                    let size = self.content().blob_size(&d)?;
                    let f = self.content().open_blob(&d)?;
                    out.add_reader(&format!("blobs/sha256/{}", d.hex()), size, f)?;
                }
            }
            let body = self.content().read_blob(&rec.manifest)?;
            let media_type =
                oci::declared_media_type(&body).unwrap_or_else(|| oci::OCI_MANIFEST.into());
            let mut desc = serde_json::json!({
                "mediaType": media_type,
                "digest": rec.manifest.to_string(),
                "size": body.len(),
                "platform": {
                    "os": img.config.os().to_string(),
                    "architecture": img.config.architecture().to_string(),
                },
            });
            if let Ok(r) = rec.name.parse::<Reference>() {
                // The full name in both (as `podman save` and containerd
                // write them), so `podman load` and imports keep it.
                desc["annotations"] = serde_json::json!({
                    "io.containerd.image.name": r.to_string(),
                    "org.opencontainers.image.ref.name": r.to_string(),
                });
            }
            manifests.push(desc);
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::OCI_INDEX,
            "manifests": manifests,
        });
        out.add_bytes("index.json", index.to_string().as_bytes())
    }

    fn write_docker(&self, records: &[ImageRecord], out: &mut Out) -> Result<()> {
        let mut manifest = Vec::new();
        let mut repositories = serde_json::Map::new();
        let mut written = std::collections::HashSet::new();
        for rec in records {
            let img = self.inspect(&rec.name)?;
            let config_name = format!("{}.json", rec.config.hex());
            if written.insert(config_name.clone()) {
                let body = self.content().read_blob(&rec.config)?;
                out.add_bytes(&config_name, &body)?;
            }
            let mut layers = Vec::new();
            for l in &img.layers {
                let name = format!("{}/layer.tar", l.diff_id.hex());
                if written.insert(name.clone()) {
                    out.add_dir(&format!("{}/", l.diff_id.hex()))?;
                    self.write_uncompressed(out, &name, &l.digest, &l.media_type, &l.diff_id)?;
                }
                layers.push(name);
            }
            let mut repo_tags = Vec::new();
            if let Ok(r) = rec.name.parse::<Reference>() {
                if let Some(tag) = &r.tag {
                    let repo = docker_short_name(&r);
                    repo_tags.push(format!("{repo}:{tag}"));
                    if let Some(top) = img.layers.last() {
                        let entry = repositories
                            .entry(repo)
                            .or_insert_with(|| serde_json::Value::Object(Default::default()));
                        entry[tag.as_str()] = top.diff_id.hex().into();
                    }
                }
            }
            manifest.push(serde_json::json!({
                "Config": config_name,
                "RepoTags": repo_tags,
                "Layers": layers,
            }));
        }
        out.add_bytes(
            "manifest.json",
            serde_json::Value::Array(manifest).to_string().as_bytes(),
        )?;
        out.add_bytes(
            "repositories",
            serde_json::Value::Object(repositories)
                .to_string()
                .as_bytes(),
        )
    }

    /// A layer blob, decompressed (docker-archive layers are plain tars
    /// named by their DiffID), checked against the DiffID.
    fn write_uncompressed(
        &self,
        out: &mut Out,
        name: &str,
        digest: &Digest,
        media_type: &str,
        diff_id: &Digest,
    ) -> Result<()> {
        let path = self.content().blob_path(digest);
        let mut f = self.content().open_blob(digest)?;
        let mut head = [0u8; 4];
        let n = f.read(&mut head).at(&path)?;
        let compression = Compression::from_magic(&head[..n])
            .or_else(|| Compression::from_media_type(media_type))
            .unwrap_or(Compression::None);
        if compression == Compression::None {
            let size = self.content().blob_size(digest)?;
            let f = self.content().open_blob(digest)?;
            return out.add_reader(name, size, f);
        }
        // The size goes in the tar header first: decompress once to count
        // and hash, then again to write.
        let (size, got) = {
            let mut r = decoder(self.content().open_blob(digest)?, compression, &path)?;
            let mut h = HashWriter(Hasher::new());
            let size = io::copy(&mut r, &mut h).at(&path)?;
            (size, h.0.finish())
        };
        if &got != diff_id {
            return Err(Error::DigestMismatch {
                what: format!("layer {digest} (uncompressed)"),
                expected: diff_id.clone(),
                actual: got,
            });
        }
        let r = decoder(self.content().open_blob(digest)?, compression, &path)?;
        out.add_reader(name, size, r)
    }
}

struct HashWriter(Hasher);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn decoder(f: File, c: Compression, path: &Path) -> Result<Box<dyn Read>> {
    let r = io::BufReader::with_capacity(1 << 20, f);
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r).at(path)?),
    })
}

/// The repository as `docker save` writes it: Docker Hub's
/// `docker.io/library/` prefix dropped.
fn docker_short_name(r: &Reference) -> String {
    if r.registry == "docker.io" {
        r.repository
            .strip_prefix("library/")
            .unwrap_or(&r.repository)
            .to_owned()
    } else {
        format!("{}/{}", r.registry, r.repository)
    }
}
