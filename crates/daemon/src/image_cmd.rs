//! `kcore image ...`: the image store from the command line, with progress bars.
//!
//! Images live in `<root>/images` (a [`kcore_image::ImageStore`]) and their unpacked
//! layers in `<root>/overlay` (a [`kcore_overlay::LayerStore`]) — the same places the
//! node agent and `kcore run` use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use kcore_image::{ImageStore, ImportOptions, Platform, Progress, PullOptions, UnpackOptions};
use kcore_overlay::LayerStore;

/// Where images and layers are kept.
#[derive(Debug, Clone)]
pub struct Stores {
    root: PathBuf,
}

impl Stores {
    /// Stores under `root` (`/var/lib/kcore` by default).
    pub fn new(root: impl Into<PathBuf>) -> Stores {
        Stores { root: root.into() }
    }

    /// The image store.
    pub fn images(&self) -> Result<ImageStore> {
        self.ensure_root()?;
        let dir = self.root.join("images");
        ImageStore::open(&dir).with_context(|| format!("opening image store {}", dir.display()))
    }

    /// The root is kcored's data directory (by default): made, or tightened, as kcored
    /// does it.
    fn ensure_root(&self) -> Result<()> {
        crate::datadir::secure(&self.root).map(drop)
    }

    /// The layer store.
    pub fn layers(&self) -> Result<LayerStore> {
        self.ensure_root()?;
        let dir = self.root.join("overlay");
        LayerStore::open(&dir).with_context(|| format!("opening layer store {}", dir.display()))
    }
}

/// A spinner-style bar that shows bytes and entries as the library reports them.
fn progress_bar(what: &str) -> (ProgressBar, Arc<dyn Fn(Progress) + Send + Sync>) {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} {binary_bytes} ({msg}) {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    let b = bar.clone();
    let f: Arc<dyn Fn(Progress) + Send + Sync> = Arc::new(move |p: Progress| {
        b.set_position(p.bytes);
        b.set_message(format!("{} entries", p.entries));
    });
    (bar, f)
}

/// Imports an OCI layout (directory or tar) or a `docker save` archive.
pub fn import(
    stores: &Stores,
    path: &Path,
    name: Option<String>,
    platform: Option<&str>,
) -> Result<()> {
    let images = stores.images()?;
    let mut opts = ImportOptions {
        name,
        ..ImportOptions::default()
    };
    if let Some(p) = platform {
        opts.platform = p.parse::<Platform>().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let is_docker_archive = is_docker_archive(path);
    let records = if is_docker_archive {
        images.import_docker_archive(path, &opts)
    } else {
        images.import_oci_layout(path, &opts)
    }
    .with_context(|| format!("importing {}", path.display()))?;
    for r in records {
        println!("{}\t{}", r.name, r.manifest);
    }
    Ok(())
}

/// A docker-archive is a tar with `manifest.json` at its top; an OCI layout has
/// `oci-layout` instead.
fn is_docker_archive(path: &Path) -> bool {
    if path.is_dir() {
        return path.join("manifest.json").is_file() && !path.join("oci-layout").exists();
    }
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut archive = tar::Archive::new(file);
    let Ok(entries) = archive.entries() else {
        return false;
    };
    for entry in entries.flatten() {
        if let Ok(p) = entry.path() {
            let p = p.to_string_lossy().trim_start_matches("./").to_string();
            if p == "oci-layout" {
                return false;
            }
            if p == "manifest.json" {
                return true;
            }
        }
    }
    false
}

/// Pulls an image from a registry.
pub fn pull(stores: &Stores, reference: &str, opts: PullArgs) -> Result<()> {
    let images = stores.images()?;
    let (bar, progress) = progress_bar(&format!("pulling {reference}"));
    let mut pull = PullOptions {
        credentials: opts.credentials,
        plain_http: opts.plain_http,
        progress: Some(progress),
        ..PullOptions::default()
    };
    if let Some(p) = &opts.platform {
        pull.platform = p.parse::<Platform>().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let rec = images.pull(reference, &pull);
    bar.finish_and_clear();
    let rec = rec.with_context(|| format!("pulling {reference}"))?;
    println!("{}\t{}", rec.name, rec.manifest);
    Ok(())
}

/// Options of [`pull`].
#[derive(Debug, Clone, Default)]
pub struct PullArgs {
    /// Basic-auth user and password (also used for the token service).
    pub credentials: Option<(String, String)>,
    /// Talk HTTP instead of HTTPS (a registry on loopback).
    pub plain_http: bool,
    /// `os/arch[/variant]`.
    pub platform: Option<String>,
}

/// Lists the images.
pub fn list(stores: &Stores) -> Result<()> {
    let images = stores.images()?;
    println!("{:<50} {:<20} CREATED", "NAME", "MANIFEST");
    for r in images.list()? {
        let digest = r.manifest.to_string();
        let short = digest
            .trim_start_matches("sha256:")
            .get(..12)
            .unwrap_or("")
            .to_string();
        println!("{:<50} {:<20} {}", r.name, short, r.created);
    }
    Ok(())
}

/// Prints an image's record, layers and config as JSON.
pub fn inspect(stores: &Stores, name: &str) -> Result<()> {
    let img = stores.images()?.inspect(name)?;
    let layers: Vec<_> = img
        .layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "digest": l.digest.to_string(),
                "mediaType": l.media_type,
                "size": l.size,
                "diffID": l.diff_id.to_string(),
                "chainID": l.chain_id.to_string(),
            })
        })
        .collect();
    let out = serde_json::json!({
        "record": img.record,
        "layers": layers,
        "config": img.config,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Unpacks an image: into the layer store (one overlay layer per image layer) or,
/// with `flatten_to`, onto one plain directory.
pub fn unpack(stores: &Stores, name: &str, flatten_to: Option<&Path>, jobs: usize) -> Result<()> {
    let images = stores.images()?;
    let (bar, progress) = progress_bar(&format!("unpacking {name}"));
    let opts = UnpackOptions::new().progress(progress);
    let result = match flatten_to {
        Some(dest) => images
            .flatten(name, dest, &opts)
            .map(|()| dest.display().to_string()),
        None => {
            let layers = stores.layers()?;
            images
                .unpack(name, &layers, &opts, jobs)
                .map(|u| u.top().map(str::to_string).unwrap_or_default())
        }
    };
    bar.finish_and_clear();
    let where_ = result.with_context(|| format!("unpacking {name}"))?;
    println!("{where_}");
    Ok(())
}

/// Removes an image's name (its blobs go at the next prune).
pub fn remove(stores: &Stores, name: &str) -> Result<()> {
    let rec = stores.images()?.remove(name)?;
    println!("removed {}", rec.name);
    Ok(())
}

/// Deletes blobs and unpacked layers no image references.
pub fn prune(stores: &Stores) -> Result<()> {
    let images = stores.images()?;
    let layers = stores.layers()?;
    let report = images.prune(Some(&layers))?;
    println!(
        "removed {} blobs ({} bytes) and {} layers",
        report.blobs.len(),
        report.blob_bytes,
        report.layers.len()
    );
    Ok(())
}

/// What `kcore image build` puts into an image.
#[derive(Debug, Clone, Default)]
pub struct Build {
    /// A directory copied in first.
    pub from_dir: Option<PathBuf>,
    /// Add the host's static busybox with its applets in `/bin`, and a minimal `/etc`.
    pub busybox: bool,
    /// Files copied in: (source on the host, absolute destination in the image).
    pub files: Vec<(PathBuf, String)>,
    /// Entrypoint, command, environment and working directory.
    pub spec: kcore_node::ImageSpec,
}

/// Parses `SRC:DEST`; DEST must be absolute.
pub fn parse_add(arg: &str) -> Result<(PathBuf, String)> {
    let (src, dest) = arg
        .rsplit_once(':')
        .with_context(|| format!("--add {arg}: expected SRC:DEST"))?;
    anyhow::ensure!(
        dest.starts_with('/') && !dest.split('/').any(|c| c == ".."),
        "--add {arg}: DEST must be an absolute path without `..`"
    );
    Ok((PathBuf::from(src), dest.to_owned()))
}

/// Copies a tree, keeping symlinks as symlinks and file modes.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let meta =
        std::fs::symlink_metadata(from).with_context(|| format!("reading {}", from.display()))?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(from)?;
        std::os::unix::fs::symlink(&target, to)
            .with_context(|| format!("linking {}", to.display()))?;
    } else if meta.is_dir() {
        std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
        std::fs::set_permissions(to, meta.permissions())?;
        for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
    } else {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

fn add_busybox(root: &Path) -> Result<()> {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin)?;
    let busybox = Path::new("/bin/busybox");
    std::fs::copy(busybox, bin.join("busybox"))
        .context("copying /bin/busybox (apt-get install busybox-static)")?;
    let out = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .context("running busybox --list")?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let link = bin.join(applet.trim());
        if applet.trim().is_empty() || applet.contains('/') || link.exists() {
            continue;
        }
        std::os::unix::fs::symlink("busybox", &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc)?;
    for (name, text) in [
        (
            "passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        ("group", "root:x:0:\nnogroup:x:65534:\n"),
    ] {
        if !etc.join(name).exists() {
            std::fs::write(etc.join(name), text)?;
        }
    }
    for d in ["tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    Ok(())
}

/// Builds a one-layer image named `tag` from `build` and stores it.
#[tracing::instrument(skip(stores, build))]
pub fn build(stores: &Stores, tag: &str, build: &Build) -> Result<()> {
    let images = stores.images()?;
    let scratch = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&stores.root)
        .with_context(|| format!("making a build directory in {}", stores.root.display()))?;
    let root = scratch.path().join("rootfs");
    match &build.from_dir {
        Some(dir) => copy_tree(dir, &root)?,
        None => std::fs::create_dir_all(&root)?,
    }
    if build.busybox {
        add_busybox(&root)?;
    }
    for (src, dest) in &build.files {
        let to = root.join(dest.trim_start_matches('/'));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        copy_tree(src, &to)?;
    }
    let layout = scratch.path().join("layout");
    kcore_node::image_from_dir(&root, &layout, tag, &build.spec)
        .with_context(|| format!("building {tag}"))?;
    let records = images
        .import_oci_layout(&layout, &ImportOptions::default())
        .with_context(|| format!("storing {tag}"))?;
    for r in records {
        println!("{}\t{}", r.name, r.manifest);
    }
    Ok(())
}

/// Options of [`push`].
#[derive(Debug, Clone, Default)]
pub struct PushArgs {
    /// Basic-auth user and password (also used for the token service).
    pub credentials: Option<(String, String)>,
    /// Talk HTTP instead of HTTPS (a registry on loopback).
    pub plain_http: bool,
    /// A repository of the destination registry to mount blobs from.
    pub mount_from: Option<String>,
}

/// Pushes an image to a registry (under `dest`, or its own name).
pub fn push(stores: &Stores, name: &str, dest: Option<&str>, args: PushArgs) -> Result<()> {
    let images = stores.images()?;
    let target = dest.unwrap_or(name);
    let (bar, progress) = progress_bar(&format!("pushing {target}"));
    let opts = kcore_image::PushOptions {
        credentials: args.credentials,
        plain_http: args.plain_http,
        mount_from: args.mount_from,
        progress: Some(progress),
        ..Default::default()
    };
    let report = images.push(name, dest, &opts);
    bar.finish_and_clear();
    let r = report.with_context(|| format!("pushing {name} to {target}"))?;
    println!(
        "{}\t{}\t({} uploaded, {} already there, {} mounted)",
        r.reference, r.digest, r.uploaded, r.existing, r.mounted
    );
    Ok(())
}

/// Saves images to an OCI layout (directory or tar) or a docker-archive.
pub fn save(stores: &Stores, names: &[String], out: &Path, format: &str) -> Result<()> {
    let images = stores.images()?;
    let format: kcore_image::SaveFormat = format.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    images
        .save(&names, out, format)
        .with_context(|| format!("saving {} to {}", names.join(", "), out.display()))
}

/// Gives an image a second name.
pub fn tag(stores: &Stores, src: &str, dst: &str) -> Result<()> {
    let images = stores.images()?;
    let rec = images
        .tag_image(src, dst)
        .with_context(|| format!("tagging {src} as {dst}"))?;
    println!("{}\t{}", rec.name, rec.manifest);
    Ok(())
}

/// `kcore image build`'s Dockerfile options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DockerfileArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(long = "file", short = 'f')]
    pub file: Option<PathBuf>,
    /// A build argument, NAME=value (repeatable).
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,
    /// The stage to build (default: the last).
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the layer cache.
    #[arg(long)]
    pub no_cache: bool,
    /// The platform to build for (os/arch[/variant]; default: the host's).
    #[arg(long = "platform", value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// The bridge that `RUN --network=default` steps join (created on first use and
    /// kept, like docker0). Unlike BuildKit, a RUN step without --network gets only
    /// loopback; --network=default is a NAT'd bridge, --network=host the host's network.
    #[arg(
        long = "bridge-name",
        value_name = "NAME",
        default_value = "kcore-build0"
    )]
    pub bridge_name: String,
    /// The subnet of that bridge (the bridge takes its .1; steps the next free
    /// addresses; traffic leaving it is masqueraded).
    #[arg(
        long = "bridge-subnet",
        value_name = "CIDR",
        default_value = "10.213.0.0/24"
    )]
    pub bridge_subnet: String,
}

/// Builds an image from a Dockerfile with [`kcore_build`], printing its steps.
pub fn build_dockerfile(
    stores: &Stores,
    tag: &str,
    context: &Path,
    args: &DockerfileArgs,
) -> Result<()> {
    let images = stores.images()?;
    let layers = stores.layers()?;
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| context.join("Dockerfile"));
    let dockerfile =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut build_args = std::collections::BTreeMap::new();
    for a in &args.build_args {
        let (k, v) = match a.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            // `--build-arg NAME` takes the value from the environment, as docker does.
            None => match std::env::var(a) {
                Ok(v) => (a.clone(), v),
                Err(_) => continue,
            },
        };
        build_args.insert(k, v);
    }
    let platform = match &args.platform {
        Some(p) => Some(p.parse::<Platform>().map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let progress: kcore_build::EventFn = Arc::new(|e: &kcore_build::Event| match e {
        kcore_build::Event::Step {
            stage,
            n,
            total,
            text,
        } => eprintln!("[{stage} {n}/{total}] {text}"),
        kcore_build::Event::Cached => eprintln!("  CACHED"),
        kcore_build::Event::Output(l) => eprintln!("  {l}"),
        kcore_build::Event::Warning(w) => eprintln!("warning: {w}"),
        _ => {}
    });
    let opts = kcore_build::BuildOptions {
        dockerfile,
        context: context.to_path_buf(),
        tag: Some(tag.to_owned()),
        build_args,
        target: args.target.clone(),
        no_cache: args.no_cache,
        platform,
        pull: None,
        progress: Some(progress),
        bridge: kcore_build::BridgeNetwork {
            bridge: args.bridge_name.clone(),
            subnet: args
                .bridge_subnet
                .parse()
                .with_context(|| format!("--bridge-subnet {}", args.bridge_subnet))?,
            ipam_dir: None,
        },
    };
    let res = kcore_build::Builder::new(&images, &layers)
        .build(&opts)
        .with_context(|| format!("building {tag}"))?;
    println!("{}\t{}", res.record.name, res.record.manifest);
    Ok(())
}
