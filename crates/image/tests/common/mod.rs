//! Helpers shared by the integration tests: hand-made tar layers (including
//! hostile ones the tar crate's builder would refuse) and temp dirs.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique temp dir (pid + counter), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("kcore-image-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds tar streams entry by entry, writing names raw (so `..` and
/// absolute paths can be produced on purpose).
#[derive(Default)]
pub struct Layer {
    out: Vec<u8>,
}

pub const MTIME: u64 = 1_600_000_000;

impl Layer {
    pub fn new() -> Layer {
        Layer::default()
    }

    fn header(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        mode: u32,
        size: u64,
        link: Option<&str>,
    ) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        {
            let raw = h.as_old_mut();
            assert!(name.len() < 100, "short names only");
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                raw.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        h
    }

    pub fn dir(mut self, name: &str, mode: u32) -> Self {
        let h = self.header(name, tar::EntryType::Directory, mode, 0, None);
        self.out.extend_from_slice(h.as_bytes());
        self
    }

    pub fn file(self, name: &str, mode: u32, data: &[u8]) -> Self {
        self.file_owned(name, mode, data, 0, 0)
    }

    pub fn file_owned(mut self, name: &str, mode: u32, data: &[u8], uid: u64, gid: u64) -> Self {
        let mut h = self.header(name, tar::EntryType::Regular, mode, data.len() as u64, None);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        let h = self.header(name, tar::EntryType::Symlink, 0o777, 0, Some(target));
        self.out.extend_from_slice(h.as_bytes());
        self
    }

    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        let h = self.header(name, tar::EntryType::Link, 0o644, 0, Some(target));
        self.out.extend_from_slice(h.as_bytes());
        self
    }

    pub fn chardev(mut self, name: &str, major: u32, minor: u32) -> Self {
        let mut h = self.header(name, tar::EntryType::Char, 0o666, 0, None);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self
    }

    pub fn fifo(mut self, name: &str) -> Self {
        let h = self.header(name, tar::EntryType::Fifo, 0o644, 0, None);
        self.out.extend_from_slice(h.as_bytes());
        self
    }

    /// A file with a PAX header carrying an xattr and a sub-second mtime.
    pub fn file_with_pax(mut self, name: &str, data: &[u8], pax: &[(&str, &[u8])]) -> Self {
        let mut body = Vec::new();
        for (k, v) in pax {
            // "<len> <key>=<value>\n" where len counts the whole record.
            let rest = format!(" {k}=").len() + v.len() + 1;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len = len.to_string().len() + rest;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let h = self.header(
            "PaxHeaders/x",
            tar::EntryType::XHeader,
            0o644,
            body.len() as u64,
            None,
        );
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(&body);
        let pad = (512 - body.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self.file(name, 0o644, data)
    }

    pub fn tar(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Write an OCI image layout at `dir` holding one image made of `layers`
/// (tar streams, stored as given: compress them first if wanted, with the
/// matching media type). Returns the manifest digest.
pub fn write_layout(
    dir: &Path,
    layers: &[(Vec<u8>, &str, Vec<u8>)],
    ref_name: &str,
) -> kcore_image::Digest {
    use kcore_image::Digest;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> Digest {
        let d = Digest::of(data);
        std::fs::write(blobs.join(d.hex()), data).unwrap();
        d
    };
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (blob, media_type, tar) in layers {
        let d = put(blob);
        layer_descs.push(serde_json::json!({"mediaType": media_type, "digest": d.to_string(), "size": blob.len()}));
        diff_ids.push(Digest::of(tar).to_string());
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string();
    let cd = put(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": layer_descs,
    })
    .to_string();
    let md = put(manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md.to_string(),
            "size": manifest.len(),
            "platform": {"os": "linux", "architecture": "amd64"},
            "annotations": {"org.opencontainers.image.ref.name": ref_name},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    md
}

/// Two layers: a base, and one with a whiteout, an opaque dir and a
/// re-created path. (gzip base, plain top.)
pub fn two_layers() -> Vec<(Vec<u8>, &'static str, Vec<u8>)> {
    let base = Layer::new()
        .dir("etc/", 0o755)
        .file("etc/os-release", 0o644, b"ID=kcore\n")
        .file("etc/gone", 0o644, b"old")
        .dir("var/", 0o755)
        .dir("var/cache/", 0o755)
        .file("var/cache/stale", 0o644, b"stale")
        .symlink("bin", "usr/bin")
        .dir("usr/", 0o755)
        .dir("usr/bin/", 0o755)
        .file("usr/bin/tool", 0o755, b"#!/bin/sh\n")
        .hardlink("usr/bin/tool-link", "usr/bin/tool")
        .tar();
    let top = Layer::new()
        .file("etc/.wh.gone", 0o644, b"")
        .dir("var/cache/", 0o755)
        .file("var/cache/.wh..wh..opq", 0o644, b"")
        .file("var/cache/fresh", 0o644, b"fresh")
        .file("etc/added", 0o600, b"new")
        .tar();
    vec![
        (
            gzip(&base),
            "application/vnd.oci.image.layer.v1.tar+gzip",
            base,
        ),
        (top.clone(), "application/vnd.oci.image.layer.v1.tar", top),
    ]
}

pub fn skopeo(args: &[&str]) {
    let out = std::process::Command::new("skopeo")
        .args(["--insecure-policy"])
        .args(args)
        .output()
        .expect("skopeo must be installed (Debian package skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
