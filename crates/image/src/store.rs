//! The content-addressed blob store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A content-addressed store of sha256 blobs under `<root>/blobs/sha256/<hex>`.
///
/// Every blob is hashed while it is written to a temporary file and renamed
/// into place only once its digest (and size, when announced) matched: a blob
/// file's name always tells the truth about its content.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Open (creating if needed) a store rooted at `root`. Directories it creates are
    /// 0700 and blobs 0600: a private image's content is root's only.
    pub fn open(root: impl AsRef<Path>) -> Result<ContentStore> {
        let root = root.as_ref().to_path_buf();
        for d in [root.join("blobs/sha256"), root.join("tmp")] {
            kcore_statedir::ensure_dir(&d, kcore_statedir::PRIVATE_DIR).at(&d)?;
        }
        Ok(ContentStore { root })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` lives (whether or not it is present).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Open a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let p = self.blob_path(digest);
        File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::BlobNotFound(digest.clone()),
            _ => Error::Io { path: p, source: e },
        })
    }

    /// Read a (small) blob fully: manifests, indexes, configs.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut f = self.open_blob(digest)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v).at(self.blob_path(digest))?;
        Ok(v)
    }

    /// Size of a present blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let p = self.blob_path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::BlobNotFound(digest.clone()))
            }
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }

    /// Start writing a blob. With `expected`, the content must hash to it
    /// (and have `size` bytes when given) or [`BlobWriter::commit`] fails.
    pub fn writer(&self, expected: Option<Digest>, size: Option<u64>) -> Result<BlobWriter> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("blob-{}-{n}", std::process::id()));
        let file = kcore_statedir::open(
            &tmp,
            OpenOptions::new().write(true).create_new(true),
            kcore_statedir::PRIVATE_FILE,
        )
        .at(&tmp)?;
        Ok(BlobWriter {
            store: self.clone(),
            tmp,
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            hasher: Hasher::new(),
            expected,
            size,
        })
    }

    /// Copy `reader` into the store, verifying it against `expected` / `size`
    /// when given. Returns the digest and size.
    pub fn put_reader(
        &self,
        mut reader: impl Read,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<(Digest, u64)> {
        if let Some(d) = expected {
            if self.contains(d) {
                // Still drain nothing: the present blob was verified when it
                // was written.
                return Ok((d.clone(), self.blob_size(d)?));
            }
        }
        let mut w = self.writer(expected.cloned(), size)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Io {
                        path: w.tmp.clone(),
                        source: e,
                    })
                }
            };
            w.write_all(&buf[..n]).at(&w.tmp)?;
        }
        w.commit()
    }

    /// Store `data`, returning its digest.
    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest> {
        let d = Digest::of(data);
        self.put_reader(data, Some(&d), Some(data.len() as u64))?;
        Ok(d)
    }

    /// Re-hash a present blob and check it still matches its name.
    pub fn verify(&self, digest: &Digest) -> Result<()> {
        let mut f = self.open_blob(digest)?;
        let mut h = Hasher::new();
        io::copy(&mut f, &mut h).at(self.blob_path(digest))?;
        let actual = h.finish();
        if &actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("blob {}", self.blob_path(digest).display()),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Delete a blob (absent is fine).
    pub fn remove(&self, digest: &Digest) -> Result<()> {
        let p = self.blob_path(digest);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::Io { path: p, source: e }),
            _ => Ok(()),
        }
    }

    /// All blobs present (names that are not valid digests are skipped).
    pub fn list(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            if let Some(d) = e
                .file_name()
                .to_str()
                .and_then(|s| Digest::from_hex(s).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// A blob being written; see [`ContentStore::writer`]. Dropping it without
/// [`commit`](BlobWriter::commit) removes the temporary file.
#[derive(Debug)]
pub struct BlobWriter {
    store: ContentStore,
    tmp: PathBuf,
    file: Option<io::BufWriter<File>>,
    hasher: Hasher,
    expected: Option<Digest>,
    size: Option<u64>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hasher({} bytes)", self.len())
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    /// Verify and move the blob into place. Returns its digest and size.
    pub fn commit(mut self) -> Result<(Digest, u64)> {
        let file = self.file.take().expect("file present until commit");
        let file = file
            .into_inner()
            .map_err(|e| e.into_error())
            .at(&self.tmp)?;
        let len = self.hasher.len();
        let actual = std::mem::take(&mut self.hasher).finish();
        if let Some(size) = self.size {
            if size != len {
                return Err(Error::SizeMismatch {
                    what: format!("blob {}", self.expected.as_ref().unwrap_or(&actual)),
                    expected: size,
                    actual: len,
                });
            }
        }
        if let Some(exp) = &self.expected {
            if exp != &actual {
                return Err(Error::DigestMismatch {
                    what: format!("blob {exp}"),
                    expected: exp.clone(),
                    actual,
                });
            }
        }
        file.sync_data().at(&self.tmp)?;
        drop(file);
        let dst = self.store.blob_path(&actual);
        fs::rename(&self.tmp, &dst).at(&dst)?;
        Ok((actual, len))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self
            .file
            .as_mut()
            .expect("file present until commit")
            .write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file
            .as_mut()
            .expect("file present until commit")
            .flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() || self.tmp.exists() {
            self.file = None;
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_verify_and_refuse_lies() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let d = s.put_bytes(b"hello").unwrap();
        assert!(s.contains(&d));
        assert_eq!(s.read_blob(&d).unwrap(), b"hello");
        s.verify(&d).unwrap();

        let lie = Digest::of(b"something else");
        let err = s.put_reader(&b"hello!"[..], Some(&lie), None).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!s.contains(&lie));
        let err = s.put_reader(&b"abc"[..], None, Some(4)).unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
        // No temporary left behind.
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);

        // A blob corrupted on disk is caught by verify.
        fs::write(s.blob_path(&d), b"jello").unwrap();
        assert!(matches!(s.verify(&d), Err(Error::DigestMismatch { .. })));
        assert_eq!(s.list().unwrap(), vec![d.clone()]);
        s.remove(&d).unwrap();
        assert!(!s.contains(&d));
    }
}
