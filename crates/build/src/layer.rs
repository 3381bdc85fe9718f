//! Committing a step: an overlay upper directory (the changes of one step) becomes an
//! OCI layer blob in the content store. Overlay whiteouts (0/0 character devices) become
//! `.wh.<name>` entries and opaque directories get a `.wh..wh..opq` entry; entries are
//! written in name order so the same changes give the same tar. Extended attributes a
//! step set (`user.*`, except overlayfs's own `user.overlay.*`, and
//! `security.capability`, the file capabilities `setcap` writes) go with their entry
//! as PAX `SCHILY.xattr.<name>` records, which kcore-image's unpacker (and GNU tar,
//! containerd, BuildKit) apply.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use flate2::write::GzEncoder;
use kcore_image::{BlobWriter, Digest, ImageStore};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, IoContext, Result};

/// Media type of the layers the builder writes.
pub(crate) const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A layer blob written to the content store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Committed {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
}

/// Hashes the uncompressed tar on its way to the compressor.
struct Tee<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the changes in `diff` (an overlay upper directory) as a layer blob.
/// Returns `None` when there are no changes (an empty layer).
pub(crate) fn commit_diff(images: &ImageStore, diff: &Path) -> Result<Option<Committed>> {
    let _span = tracing::debug_span!("commit_diff", diff = %diff.display()).entered();
    let mut names = read_sorted(diff)?;
    if names.is_empty() {
        return Ok(None);
    }
    let store_err = |what: &str, e: kcore_image::Error| Error::Image {
        line: 0,
        what: what.to_owned(),
        source: e,
    };
    let writer = images
        .content()
        .writer(None, None)
        .map_err(|e| store_err("writing a layer blob", e))?;
    let gz = GzEncoder::new(writer, flate2::Compression::fast());
    let mut tar = tar::Builder::new(Tee {
        inner: gz,
        hash: Sha256::new(),
    });
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    let mut links = HashMap::new();
    let mut stack: Vec<(String, Vec<String>)> = vec![(String::new(), std::mem::take(&mut names))];
    while let Some((dir, mut rest)) = stack.pop() {
        let Some(name) = (!rest.is_empty()).then(|| rest.remove(0)) else {
            continue;
        };
        stack.push((dir.clone(), rest));
        let rel = if dir.is_empty() {
            name.clone()
        } else {
            format!("{dir}/{name}")
        };
        let path = diff.join(&rel);
        let meta = fs::symlink_metadata(&path).at("stat", &path)?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            let wh = match rel.rsplit_once('/') {
                Some((d, n)) => format!("{d}/.wh.{n}"),
                None => format!(".wh.{rel}"),
            };
            let mut h = header(&meta, tar::EntryType::Regular);
            h.set_size(0);
            tar.append_data(&mut h, &wh, io::empty())
                .at("archive", &path)?;
            continue;
        }
        // (a second name of a hard-linked file becomes a link entry, without them)
        let link_entry =
            ft.is_file() && meta.nlink() > 1 && links.contains_key(&(meta.dev(), meta.ino()));
        if (ft.is_dir() || ft.is_file()) && !link_entry {
            let x = carried_xattrs(&path)?;
            if !x.is_empty() {
                tar.append_pax_extensions(x.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                    .at("archive", &path)?;
            }
        }
        if ft.is_dir() {
            let mut h = header(&meta, tar::EntryType::Directory);
            h.set_size(0);
            tar.append_data(&mut h, format!("{rel}/"), io::empty())
                .at("archive", &path)?;
            if kcore_overlay::is_opaque(&path).unwrap_or(false) {
                let mut h = header(&meta, tar::EntryType::Regular);
                h.set_size(0);
                h.set_mode(0o644);
                tar.append_data(&mut h, format!("{rel}/.wh..wh..opq"), io::empty())
                    .at("archive", &path)?;
            }
            stack.push((rel, read_sorted(&path)?));
            continue;
        }
        if meta.nlink() > 1 && !ft.is_symlink() {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                let mut h = header(&meta, tar::EntryType::Link);
                h.set_size(0);
                tar.append_link(&mut h, &rel, first as &String)
                    .at("archive", &path)?;
                continue;
            }
            links.insert((meta.dev(), meta.ino()), rel.clone());
        }
        if ft.is_file() {
            let mut h = header(&meta, tar::EntryType::Regular);
            h.set_size(meta.len());
            let f = fs::File::open(&path).at("read", &path)?;
            tar.append_data(&mut h, &rel, f).at("archive", &path)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).at("read link", &path)?;
            let mut h = header(&meta, tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, &rel, &target)
                .at("archive", &path)?;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_fifo() {
                tar::EntryType::Fifo
            } else if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            let mut h = header(&meta, kind);
            h.set_size(0);
            if !ft.is_fifo() {
                let rdev = meta.rdev();
                h.set_device_major(rustix::fs::major(rdev))
                    .at("archive", &path)?;
                h.set_device_minor(rustix::fs::minor(rdev))
                    .at("archive", &path)?;
            }
            tar.append_data(&mut h, &rel, io::empty())
                .at("archive", &path)?;
        }
        // Sockets are not archived (as tar and BuildKit do).
    }
    let tee = tar.into_inner().at("archive", diff)?;
    let diff_id = hex::encode(tee.hash.finalize());
    let writer: BlobWriter = tee.inner.finish().at("compress", diff)?;
    let (digest, size) = writer
        .commit()
        .map_err(|e| store_err("storing a layer blob", e))?;
    Ok(Some(Committed {
        digest: digest.to_string(),
        diff_id: Digest::from_hex(&diff_id)
            .map(|d| d.to_string())
            .unwrap_or_else(|_| format!("sha256:{diff_id}")),
        size,
    }))
}

/// Whether an extended attribute goes into layers: what the unpacker applies.
fn carried(name: &str) -> bool {
    (name.starts_with("user.") && !name.starts_with("user.overlay."))
        || name == "security.capability"
}

/// The carried extended attributes of `path` (not following a symlink) as PAX
/// records `SCHILY.xattr.<name>`, sorted by name.
fn carried_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    use rustix::io::Errno;
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e).at("list extended attributes of", path),
    };
    if size == 0 {
        return Ok(Vec::new());
    }
    let mut list = vec![0u8; size];
    let n = rustix::fs::llistxattr(path, &mut list[..]).at("list extended attributes of", path)?;
    let mut out = Vec::new();
    for name in list[..n].split(|b| *b == 0) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if !carried(name) {
            continue;
        }
        let len = match rustix::fs::lgetxattr_query(path, name) {
            Ok(len) => len,
            // removed meanwhile
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e).at("read extended attribute of", path),
        };
        let mut value = vec![0u8; len];
        let m = rustix::fs::lgetxattr(path, name, &mut value[..])
            .at("read extended attribute of", path)?;
        value.truncate(m);
        out.push((format!("SCHILY.xattr.{name}"), value));
    }
    out.sort();
    Ok(out)
}

fn read_sorted(dir: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).at("read directory", dir)? {
        let e = e.at("read directory", dir)?;
        v.push(e.file_name().to_string_lossy().into_owned());
    }
    v.sort();
    Ok(v)
}

fn header(meta: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_diff_is_no_layer() {
        let t = tempfile::tempdir().unwrap();
        let images = ImageStore::open(t.path().join("images")).unwrap();
        let d = t.path().join("diff");
        fs::create_dir(&d).unwrap();
        assert!(commit_diff(&images, &d).unwrap().is_none());
    }

    #[test]
    fn carried_xattrs_become_pax_records() {
        let t = tempfile::tempdir().unwrap();
        let images = ImageStore::open(t.path().join("images")).unwrap();
        let d = t.path().join("diff");
        fs::create_dir_all(d.join("dir")).unwrap();
        fs::write(d.join("dir/tool"), "x").unwrap();
        let set = |p: &Path, k: &str, v: &[u8]| {
            rustix::fs::lsetxattr(p, k, v, rustix::fs::XattrFlags::empty())
        };
        if let Err(e) = set(&d.join("dir/tool"), "user.kcore.note", b"hello") {
            eprintln!("skipping: no user xattrs on {}: {e}", t.path().display());
            return;
        }
        set(&d.join("dir"), "user.kcore.dir", b"d").unwrap();
        // overlayfs's own attributes stay out of layers
        set(&d.join("dir/tool"), "user.overlay.origin", b"o").unwrap();
        // file capabilities (cap_net_raw+ep, VFS_CAP_REVISION_2), as root
        let cap: Vec<u8> = [0x0200_0001u32, 1 << 13, 0, 0, 0]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let with_cap = set(&d.join("dir/tool"), "security.capability", &cap).is_ok();
        let c = commit_diff(&images, &d).unwrap().unwrap();
        let blob = images
            .content()
            .open_blob(&c.digest.parse().unwrap())
            .unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(blob));
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            if let Some(x) = e.pax_extensions().unwrap() {
                for r in x {
                    let r = r.unwrap();
                    seen.push((
                        path.clone(),
                        r.key().unwrap().to_owned(),
                        r.value_bytes().to_vec(),
                    ));
                }
            }
        }
        let mut want = vec![
            (
                "dir/".to_owned(),
                "SCHILY.xattr.user.kcore.dir".to_owned(),
                b"d".to_vec(),
            ),
            (
                "dir/tool".to_owned(),
                "SCHILY.xattr.user.kcore.note".to_owned(),
                b"hello".to_vec(),
            ),
        ];
        if with_cap {
            want.insert(
                1,
                (
                    "dir/tool".to_owned(),
                    "SCHILY.xattr.security.capability".to_owned(),
                    cap,
                ),
            );
        }
        assert_eq!(seen, want);
    }

    #[test]
    fn diff_to_tar_in_name_order() {
        let t = tempfile::tempdir().unwrap();
        let images = ImageStore::open(t.path().join("images")).unwrap();
        let d = t.path().join("diff");
        fs::create_dir_all(d.join("b/c")).unwrap();
        fs::write(d.join("b/c/f"), "x").unwrap();
        fs::write(d.join("a"), "y").unwrap();
        std::os::unix::fs::symlink("a", d.join("l")).unwrap();
        fs::hard_link(d.join("a"), d.join("h")).unwrap();
        let c = commit_diff(&images, &d).unwrap().unwrap();
        let blob = images
            .content()
            .open_blob(&c.digest.parse().unwrap())
            .unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(blob));
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec!["a", "b/", "b/c/", "b/c/f", "h", "l"]);
        // Same content, same diff id.
        let again = commit_diff(&images, &d).unwrap().unwrap();
        assert_eq!(again.diff_id, c.diff_id);
    }
}
