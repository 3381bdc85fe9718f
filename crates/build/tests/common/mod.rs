//! Shared fixtures: a private image and layer store in a temp dir, a busybox base
//! image made from the host's static busybox, and helpers to build and look inside.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kcore_build::{BuildOptions, BuildResult, Builder};
use kcore_image::{ImageStore, UnpackOptions};
use kcore_overlay::LayerStore;
use serde_json::{json, Value};

pub const BUSYBOX: &str = "kcore.test/busybox:1";

/// Why root-only tests cannot run here, if they cannot.
pub fn root_skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root (overlay mounts and containers)".into());
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.lines().any(|l| l.trim_end().ends_with("overlay")) {
        return Some("the kernel has no overlayfs".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("no static busybox at /bin/busybox".into());
    }
    None
}

/// Returns early from a root-only test with the reason printed.
#[macro_export]
macro_rules! need_root {
    () => {
        if let Some(why) = common::root_skip_reason() {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub images: ImageStore,
    pub layers: LayerStore,
    pub ctx: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("kcore-build-test")
            .tempdir()
            .unwrap();
        let images = ImageStore::open(dir.path().join("images")).unwrap();
        let layers = LayerStore::open(dir.path().join("overlay")).unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        Env {
            dir,
            images,
            layers,
            ctx,
        }
    }

    /// Writes a file into the context (making parents).
    pub fn file(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.ctx.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    pub fn opts(&self, dockerfile: &str, tag: &str) -> BuildOptions {
        BuildOptions {
            dockerfile: dockerfile.to_owned(),
            context: self.ctx.clone(),
            tag: Some(tag.to_owned()),
            build_args: BTreeMap::new(),
            ..BuildOptions::default()
        }
    }

    pub fn build(&self, dockerfile: &str, tag: &str) -> kcore_build::Result<BuildResult> {
        self.build_with(&self.opts(dockerfile, tag))
    }

    pub fn build_with(&self, opts: &BuildOptions) -> kcore_build::Result<BuildResult> {
        Builder::new(&self.images, &self.layers).build(opts)
    }

    /// The image's config JSON.
    pub fn config(&self, name: &str) -> Value {
        let rec = self.images.get(name).unwrap();
        serde_json::from_slice(&self.images.content().read_blob(&rec.config).unwrap()).unwrap()
    }

    /// The image's layers applied onto a new directory.
    pub fn rootfs(&self, name: &str) -> PathBuf {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dest = self.dir.path().join(format!("rootfs-{n}"));
        self.images
            .flatten(name, &dest, &UnpackOptions::new())
            .unwrap();
        dest
    }

    /// A busybox image (busybox + applet links in /bin, /etc/passwd and group).
    pub fn busybox(&self) {
        if self.images.get(BUSYBOX).is_ok() {
            return;
        }
        let mut tar = tar::Builder::new(Vec::new());
        let dir = |tar: &mut tar::Builder<Vec<u8>>, p: &str| {
            let mut h = header();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, p, std::io::empty()).unwrap();
        };
        let file = |tar: &mut tar::Builder<Vec<u8>>, p: &str, mode: u32, data: &[u8]| {
            let mut h = header();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(mode);
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, p, data).unwrap();
        };
        for d in ["bin/", "etc/", "root/"] {
            dir(&mut tar, d);
        }
        let mut h = header();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o1777);
        h.set_size(0);
        tar.append_data(&mut h, "tmp/", std::io::empty()).unwrap();
        file(
            &mut tar,
            "bin/busybox",
            0o755,
            &std::fs::read("/bin/busybox").unwrap(),
        );
        let list = std::process::Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .unwrap();
        for a in String::from_utf8_lossy(&list.stdout).lines() {
            let a = a.trim();
            if a.is_empty() || a == "busybox" || a.contains('/') {
                continue;
            }
            let mut h = header();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            tar.append_link(&mut h, format!("bin/{a}"), "busybox")
                .unwrap();
        }
        file(&mut tar, "etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n");
        file(
            &mut tar,
            "etc/group",
            0o644,
            b"root:x:0:\napp:x:1000:\nstaff:x:50:\nnogroup:x:65534:\n",
        );
        let layer = tar.into_inner().unwrap();
        let content = self.images.content();
        let layer_d = content.put_bytes(&layer).unwrap();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_d.to_string()]},
            "history": [{"created_by": "test busybox"}],
        }))
        .unwrap();
        let config_d = content.put_bytes(&config).unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_d.to_string(), "size": layer.len()}],
        }))
        .unwrap();
        let m = content.put_bytes(&manifest).unwrap();
        self.images.tag(BUSYBOX, &m, None).unwrap();
    }

    /// Writes a tar archive into the context.
    pub fn tar(&self, rel: &str, files: &[(&str, &str)]) {
        let mut tar = tar::Builder::new(Vec::new());
        for (p, data) in files {
            let mut h = header();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o640);
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, p, data.as_bytes()).unwrap();
        }
        let mut f = std::fs::File::create(self.ctx.join(rel)).unwrap();
        f.write_all(&tar.into_inner().unwrap()).unwrap();
    }
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// (mode, uid, gid) of a path (not following a symlink).
pub fn attrs(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

impl Env {
    /// Stores image `name`: `base` with one more (uncompressed) layer on top.
    pub fn with_layer(&self, base: &str, name: &str, layer: &[u8]) {
        let rec = self.images.get(base).unwrap();
        let content = self.images.content();
        let mut config: Value =
            serde_json::from_slice(&content.read_blob(&rec.config).unwrap()).unwrap();
        let mut manifest: Value =
            serde_json::from_slice(&content.read_blob(&rec.manifest).unwrap()).unwrap();
        let layer_d = content.put_bytes(layer).unwrap();
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(json!(layer_d.to_string()));
        config["history"]
            .as_array_mut()
            .unwrap()
            .push(json!({"created_by": "test layer"}));
        let config = serde_json::to_vec(&config).unwrap();
        let config_d = content.put_bytes(&config).unwrap();
        manifest["config"]["digest"] = json!(config_d.to_string());
        manifest["config"]["size"] = json!(config.len());
        manifest["layers"].as_array_mut().unwrap().push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_d.to_string(), "size": layer.len(),
        }));
        let m = content
            .put_bytes(&serde_json::to_vec(&manifest).unwrap())
            .unwrap();
        self.images.tag(name, &m, None).unwrap();
    }

    /// Writes image `name` as an OCI image layout directory at `dest`.
    pub fn export_layout(&self, name: &str, dest: &Path) {
        let rec = self.images.get(name).unwrap();
        let img = self.images.inspect(name).unwrap();
        let blobs = dest.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let content = self.images.content();
        let mut digests = vec![rec.manifest.clone(), rec.config.clone()];
        digests.extend(img.layers.iter().map(|l| l.digest.clone()));
        for d in &digests {
            std::fs::write(blobs.join(d.hex()), content.read_blob(d).unwrap()).unwrap();
        }
        let size = content.blob_size(&rec.manifest).unwrap();
        std::fs::write(dest.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": rec.manifest.to_string(),
                "size": size,
                "annotations": {"org.opencontainers.image.ref.name": name},
            }],
        });
        std::fs::write(dest.join("index.json"), index.to_string()).unwrap();
    }
}

/// One entry of a tree listing: type, mode, owner, and content or link target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub data: String,
}

/// Every path under `root` with its [`Entry`] (file content as a sha256).
pub fn tree(root: &Path) -> BTreeMap<String, Entry> {
    use sha2::Digest as _;
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let p = root.join(&r);
            let m = std::fs::symlink_metadata(&p).unwrap();
            let (kind, data) = if m.is_dir() {
                stack.push(r.clone());
                ('d', String::new())
            } else if m.file_type().is_symlink() {
                ('l', std::fs::read_link(&p).unwrap().display().to_string())
            } else if m.is_file() {
                (
                    'f',
                    hex::encode(sha2::Sha256::digest(std::fs::read(&p).unwrap())),
                )
            } else {
                ('o', String::new())
            };
            out.insert(
                r.display().to_string(),
                Entry {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    data,
                },
            );
        }
    }
    out
}
