//! The build engine: stages, instructions, the layer cache and the final image.
//!
//! Every instruction moves a cache key forward: `sha256(parent key, instruction,
//! inputs)`, where the inputs are what the step depends on beyond its text (the content
//! of COPY/ADD sources, the environment, user and mounts of a RUN). Steps that change
//! files (RUN, COPY, ADD, WORKDIR) look their key up in the cache index first; a hit
//! reuses the layer blob it recorded, so an unchanged rebuild makes no new layer, and
//! a change invalidates that step and every step after it. Steps that only change the
//! config (ENV, CMD, ...) are cheap and always replayed.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kcore_image::{chain_ids, Digest, ImageRecord, ImageStore, LayerInfo, Platform, PullOptions};
use kcore_overlay::{LayerStore, MountOptions};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use crate::error::{syntax, Error, IoContext, Result};
use crate::fscopy::{self, Attrs};
use crate::layer::{commit_diff, Committed, LAYER_MEDIA_TYPE};
use crate::parser::{key_values, parse, Dockerfile, Instruction, Lexer};
use crate::pattern::{clean, glob_match, has_meta, IgnoreRules};
use crate::run::{self, Network, Process, RunMount};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// What the builder reports while it works.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A step starts: `[stage n/total] INSTRUCTION`.
    Step {
        /// The stage's name (or its index).
        stage: String,
        /// 1-based step number in the stage.
        n: usize,
        /// Steps in the stage.
        total: usize,
        /// The instruction as written.
        text: String,
    },
    /// The step was found in the cache.
    Cached,
    /// A line a RUN step printed.
    Output(String),
    /// Something the user should know (an unused build arg, ...).
    Warning(String),
}

impl Event {
    /// The event's kind, as the C and Python bindings name it: `step`, `cached`,
    /// `output` or `warning`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Step { .. } => "step",
            Event::Cached => "cached",
            Event::Output(_) => "output",
            Event::Warning(_) => "warning",
        }
    }

    /// The event's text: `[stage n/total] INSTRUCTION` for a step, the line a RUN step
    /// printed, the warning, or nothing for a cache hit.
    ///
    /// ```
    /// let e = kcore_build::Event::Step { stage: "build".into(), n: 2, total: 5, text: "RUN make".into() };
    /// assert_eq!((e.kind(), e.text().as_str()), ("step", "[build 2/5] RUN make"));
    /// ```
    pub fn text(&self) -> String {
        match self {
            Event::Step {
                stage,
                n,
                total,
                text,
            } => format!("[{stage} {n}/{total}] {text}"),
            Event::Cached => String::new(),
            Event::Output(s) | Event::Warning(s) => s.clone(),
        }
    }
}

/// A progress callback.
pub type EventFn = Arc<dyn Fn(&Event) + Send + Sync>;

/// What to build.
#[derive(Clone, Default)]
pub struct BuildOptions {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// The build context directory (COPY/ADD sources, `.dockerignore`).
    pub context: PathBuf,
    /// The name to store the image as; without one it is stored by manifest digest.
    pub tag: Option<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// The stage to build (default: the last).
    pub target: Option<String>,
    /// Ignore the layer cache (results are still recorded in it).
    pub no_cache: bool,
    /// The platform to build for (default: the host's); RUN steps need it to be the
    /// host's architecture.
    pub platform: Option<Platform>,
    /// Credentials and transport for pulling `FROM` images missing from the store.
    pub pull: Option<PullOptions>,
    /// Progress callback.
    pub progress: Option<EventFn>,
    /// The NAT'd bridge network of `RUN --network=default` steps (its name and
    /// subnet).
    pub bridge: crate::net::BridgeNetwork,
}

impl std::fmt::Debug for BuildOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("context", &self.context)
            .field("tag", &self.tag)
            .field("build_args", &self.build_args)
            .field("target", &self.target)
            .field("no_cache", &self.no_cache)
            .field("platform", &self.platform)
            .field("bridge", &self.bridge)
            .finish_non_exhaustive()
    }
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The stored image.
    pub record: ImageRecord,
    /// Layers made by this build (cache misses that changed files).
    pub layers_built: usize,
    /// File-changing steps taken from the cache.
    pub steps_cached: usize,
}

/// Builds images from Dockerfiles into an image store.
///
/// Working state (the cache index, cache mounts, RUN containers' state and network
/// namespaces) lives in a directory of its own, by default `build/` in the image store.
#[derive(Debug)]
pub struct Builder<'a> {
    images: &'a ImageStore,
    layers: &'a LayerStore,
    work: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn host_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        other => other,
    };
    Platform {
        os: "linux".into(),
        architecture: arch.into(),
        variant: None,
    }
}

fn sha(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

fn now_rfc3339() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One stage of the Dockerfile.
#[derive(Debug, Clone)]
struct StageDef {
    name: Option<String>,
    from: Instruction,
    body: Vec<Instruction>,
}

/// A built stage.
#[derive(Debug, Clone)]
struct StageOut {
    config: Value,
    layers: Vec<LayerInfo>,
    key: String,
}

/// The state of the stage being built.
struct State {
    label: String,
    config: Value,
    layers: Vec<LayerInfo>,
    key: String,
    args: BTreeMap<String, String>,
    /// Index of the stage (for `--from` references to earlier stages).
    idx: usize,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

impl State {
    fn cfg(&mut self) -> &mut Map<String, Value> {
        if !self.config["config"].is_object() {
            self.config["config"] = json!({});
        }
        self.config["config"]
            .as_object_mut()
            .expect("config object")
    }

    fn env(&self) -> Vec<(String, String)> {
        self.config["config"]["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str())
                    .map(|e| match e.split_once('=') {
                        Some((k, v)) => (k.to_owned(), v.to_owned()),
                        None => (e.to_owned(), String::new()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_env(&mut self, k: &str, v: &str) {
        let mut env = self.env();
        match env.iter_mut().find(|(n, _)| n == k) {
            Some(e) => e.1 = v.to_owned(),
            None => env.push((k.to_owned(), v.to_owned())),
        }
        let list: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.cfg().insert("Env".into(), json!(list));
    }

    /// Variables for expansion: the stage's ARGs, overridden by its ENV.
    fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        let env = self.env();
        move |k: &str| {
            env.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .or_else(|| self.args.get(k).cloned())
        }
    }

    fn str_cfg(&self, key: &str) -> Option<String> {
        self.config["config"][key]
            .as_str()
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
    }

    fn shell(&self) -> Vec<String> {
        self.config["config"]["Shell"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn history(&mut self, created_by: String, empty: bool) {
        let mut h = json!({
            "created": now_rfc3339(),
            "created_by": created_by,
            "comment": HISTORY_COMMENT,
        });
        if empty {
            h["empty_layer"] = json!(true);
        }
        match self.config["history"].as_array_mut() {
            Some(a) => a.push(h),
            None => self.config["history"] = json!([h]),
        }
    }

    fn push_layer(&mut self, c: &Committed) -> Result<()> {
        let parse = |s: &str| {
            s.parse::<Digest>().map_err(|e| Error::Image {
                line: 0,
                what: format!("cache entry digest {s}"),
                source: e,
            })
        };
        let diff_id = parse(&c.diff_id)?;
        let mut diffs: Vec<Digest> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        diffs.push(diff_id.clone());
        let chain = chain_ids(&diffs).pop().expect("one chain id per layer");
        self.layers.push(LayerInfo {
            digest: parse(&c.digest)?,
            media_type: LAYER_MEDIA_TYPE.to_owned(),
            size: c.size,
            diff_id,
            chain_id: chain,
        });
        Ok(())
    }
}

/// A writable overlay snapshot on top of a chain of layers, mounted; removed on drop.
struct Snapshot<'a> {
    layers: &'a LayerStore,
    id: String,
    merged: PathBuf,
    mounted: bool,
}

impl Snapshot<'_> {
    fn root(&self) -> Result<OwnedFd> {
        kcore_rootfd::open_root(&self.merged).at("open", &self.merged)
    }

    /// Unmounts and turns the changes into a layer blob.
    fn commit(mut self, images: &ImageStore, cleanup: &[String]) -> Result<Option<Committed>> {
        self.unmount()?;
        let diff = self
            .layers
            .diff_path(&self.id)
            .map_err(|source| Error::Layer {
                what: format!("layer {}", self.id),
                source,
            })?;
        // Mount points the runtime made for the step's container are not changes.
        for mp in cleanup {
            let p = diff.join(mp.trim_start_matches('/'));
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {
                    let _ = fs::remove_dir(&p);
                }
                // a file bind's mount point (resolv.conf), still empty
                Ok(m) if m.is_file() && m.len() == 0 => {
                    let _ = fs::remove_file(&p);
                }
                _ => {}
            }
        }
        commit_diff(images, &diff)
    }

    fn unmount(&mut self) -> Result<()> {
        if self.mounted {
            // A container forked by another build in this process (a RUN step on
            // another thread) holds copies of this process's descriptors, some of
            // them inside this snapshot, until it execs: wait for that to pass.
            let mut tries = 0;
            loop {
                match self.layers.unmount(&self.id) {
                    Ok(()) => break,
                    Err(e) if tries < 100 && is_busy(&e) => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(source) => {
                        return Err(Error::Layer {
                            what: format!("unmounting build snapshot {}", self.id),
                            source,
                        })
                    }
                }
            }
            self.mounted = false;
        }
        Ok(())
    }
}

/// Whether a layer store error is `EBUSY` (a mount still in use).
fn is_busy(e: &kcore_overlay::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error());
        }
        cur = err.source();
    }
    false
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        let _ = self.unmount();
        if let Err(e) = self.layers.remove(&self.id) {
            tracing::warn!(id = %self.id, error = &e as &dyn std::error::Error, "removing a build snapshot");
        }
    }
}

struct Build<'a, 'b> {
    b: &'b Builder<'a>,
    opts: &'b BuildOptions,
    df: Dockerfile,
    lexer: Lexer,
    stages: Vec<StageDef>,
    done: RefCell<HashMap<usize, StageOut>>,
    global_args: BTreeMap<String, String>,
    used_args: RefCell<HashSet<String>>,
    ignore: IgnoreRules,
    platform: Platform,
    built: std::cell::Cell<usize>,
    cached: std::cell::Cell<usize>,
}

impl<'a> Builder<'a> {
    /// A builder over `images` and `layers`, working in `<image store>/build`.
    pub fn new(images: &'a ImageStore, layers: &'a LayerStore) -> Builder<'a> {
        let work = images.root().join("build");
        Builder {
            images,
            layers,
            work,
        }
    }

    /// Uses `dir` for the cache index, cache mounts and RUN containers' state.
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work = dir.into();
        self
    }

    /// Removes the snapshots of builds whose process is gone (killed mid-step).
    fn remove_stale_snapshots(&self) {
        let Ok(all) = self.layers.list() else { return };
        for l in all {
            let Some(rest) = l.id().strip_prefix("kbuild-") else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let _ = self.layers.unmount(l.id());
            if let Err(e) = self.layers.remove(l.id()) {
                tracing::warn!(
                    id = l.id(),
                    error = &e as &dyn std::error::Error,
                    "removing a stale build snapshot"
                );
            }
        }
    }

    /// Builds `opts.dockerfile` in `opts.context` and stores the image.
    pub fn build(&self, opts: &BuildOptions) -> Result<BuildResult> {
        let _span =
            tracing::info_span!("build", tag = ?opts.tag, context = %opts.context.display())
                .entered();
        let df = parse(&opts.dockerfile)?;
        self.remove_stale_snapshots();
        for d in ["cache", "mounts", "tmp"] {
            let p = self.work.join(d);
            fs::create_dir_all(&p).at("create", &p)?;
        }
        let ignore_path = opts.context.join(".dockerignore");
        let ignore = match fs::read_to_string(&ignore_path) {
            Ok(t) => IgnoreRules::parse(&t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => IgnoreRules::default(),
            Err(e) => return Err(e).at("read", ignore_path),
        };
        let platform = opts.platform.clone().unwrap_or_else(host_platform);
        let lexer = Lexer::new(df.escape);
        let mut build = Build {
            b: self,
            opts,
            lexer,
            stages: Vec::new(),
            done: RefCell::new(HashMap::new()),
            global_args: BTreeMap::new(),
            used_args: RefCell::new(HashSet::new()),
            ignore,
            platform,
            built: 0.into(),
            cached: 0.into(),
            df,
        };
        build.split_stages()?;
        let target = match &opts.target {
            Some(t) => build
                .stages
                .iter()
                .position(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
                .ok_or_else(|| Error::StageNotFound(t.clone()))?,
            None => build.stages.len() - 1,
        };
        let out = build.stage(target)?;
        for k in opts.build_args.keys() {
            if !build.used_args.borrow().contains(k) && !is_predefined(k) {
                build.event(&Event::Warning(format!("build arg {k} was not consumed")));
            }
        }
        let record = build.store(out)?;
        Ok(BuildResult {
            record,
            layers_built: build.built.get(),
            steps_cached: build.cached.get(),
        })
    }
}

fn is_predefined(k: &str) -> bool {
    matches!(
        k.to_ascii_uppercase().as_str(),
        "HTTP_PROXY" | "HTTPS_PROXY" | "FTP_PROXY" | "NO_PROXY" | "ALL_PROXY"
    )
}

impl<'a> Build<'a, '_> {
    fn event(&self, e: &Event) {
        if let Some(p) = &self.opts.progress {
            p(e);
        }
    }

    fn split_stages(&mut self) -> Result<()> {
        let platform_args = self.platform_args();
        let instructions = self.df.instructions.clone();
        let mut it = instructions.into_iter().peekable();
        // Global ARGs before the first FROM.
        while let Some(i) = it.peek() {
            if i.keyword == "FROM" {
                break;
            }
            let i = it.next().expect("peeked");
            if i.keyword != "ARG" {
                return Err(syntax(
                    i.line,
                    format!("{} before the first FROM", i.keyword),
                ));
            }
            let mut scope = platform_args.clone();
            scope.extend(self.global_args.clone());
            for (k, v) in self.arg_decls(&i, &scope)? {
                self.global_args.insert(k, v.unwrap_or_default());
            }
        }
        for i in it {
            if i.keyword == "FROM" {
                let words: Vec<&str> = i.args.split_whitespace().collect();
                let name = match words.as_slice() {
                    [_] => None,
                    [_, a, n] if a.eq_ignore_ascii_case("as") => Some(n.to_ascii_lowercase()),
                    _ => {
                        return Err(syntax(
                            i.line,
                            "FROM requires either one or three arguments",
                        ))
                    }
                };
                if let Some(n) = &name {
                    if self.stages.iter().any(|s| s.name.as_ref() == Some(n)) {
                        return Err(syntax(i.line, format!("duplicate stage name {n:?}")));
                    }
                }
                self.stages.push(StageDef {
                    name,
                    from: i,
                    body: Vec::new(),
                });
            } else {
                self.stages.last_mut().expect("a stage").body.push(i);
            }
        }
        if self.stages.is_empty() {
            return Err(syntax(1, "the Dockerfile has no FROM instruction"));
        }
        Ok(())
    }

    fn platform_args(&self) -> BTreeMap<String, String> {
        let host = host_platform();
        let p = &self.platform;
        let mut m = BTreeMap::new();
        m.insert("TARGETPLATFORM".into(), p.to_string());
        m.insert("TARGETOS".into(), p.os.clone());
        m.insert("TARGETARCH".into(), p.architecture.clone());
        m.insert(
            "TARGETVARIANT".into(),
            p.variant.clone().unwrap_or_default(),
        );
        m.insert("BUILDPLATFORM".into(), host.to_string());
        m.insert("BUILDOS".into(), host.os.clone());
        m.insert("BUILDARCH".into(), host.architecture.clone());
        m.insert("BUILDVARIANT".into(), String::new());
        m
    }

    /// `ARG name[=default] ...`: each name with its value (build arg, else default,
    /// else `None`).
    fn arg_decls(
        &self,
        i: &Instruction,
        scope: &BTreeMap<String, String>,
    ) -> Result<Vec<(String, Option<String>)>> {
        let lookup = |k: &str| scope.get(k).cloned();
        let words = self
            .lexer
            .words(&i.args, &lookup)
            .map_err(|e| syntax(i.line, e))?;
        let mut out = Vec::new();
        for w in words {
            let (k, default) = match w.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (w, None),
            };
            if k.is_empty() {
                return Err(syntax(i.line, "ARG requires a name"));
            }
            let v = match self.opts.build_args.get(&k) {
                Some(v) => {
                    self.used_args.borrow_mut().insert(k.clone());
                    Some(v.clone())
                }
                None => default,
            };
            out.push((k, v));
        }
        Ok(out)
    }

    /// Builds stage `idx` (once).
    fn stage(&self, idx: usize) -> Result<StageOut> {
        if let Some(o) = self.done.borrow().get(&idx) {
            return Ok(o.clone());
        }
        let def = self.stages[idx].clone();
        let label = def.name.clone().unwrap_or_else(|| format!("stage-{idx}"));
        let total = def.body.len() + 1;
        self.event(&Event::Step {
            stage: label.clone(),
            n: 1,
            total,
            text: def.from.original.clone(),
        });
        let mut st = self.from(idx, &def, &label)?;
        // Triggers of the base image run first, then are cleared.
        let triggers: Vec<String> = st.config["config"]["OnBuild"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        st.cfg().remove("OnBuild");
        for t in triggers {
            let inner = parse(&t)
                .map_err(|e| syntax(def.from.line, format!("ONBUILD trigger {t:?}: {e}")))?;
            for mut i in inner.instructions {
                i.line = def.from.line;
                self.step(&mut st, &i)?;
            }
        }
        for (n, i) in def.body.iter().enumerate() {
            self.event(&Event::Step {
                stage: label.clone(),
                n: n + 2,
                total,
                text: i.original.clone(),
            });
            self.step(&mut st, i)?;
        }
        let out = StageOut {
            config: st.config,
            layers: st.layers,
            key: st.key,
        };
        self.done.borrow_mut().insert(idx, out.clone());
        Ok(out)
    }

    fn from(&self, idx: usize, def: &StageDef, label: &str) -> Result<State> {
        let i = &def.from;
        i.check_flags(&["platform"])?;
        let mut scope = self.platform_args();
        scope.extend(self.global_args.clone());
        let lookup = |k: &str| scope.get(k).cloned();
        let image = i.args.split_whitespace().next().unwrap_or_default();
        let image = self
            .lexer
            .word(image, &lookup)
            .map_err(|e| syntax(i.line, e))?;
        if image.is_empty() {
            return Err(syntax(i.line, "FROM: empty image name after expansion"));
        }
        let platform = match i.flag("platform") {
            Some(p) => {
                let p = self.lexer.word(p, &lookup).map_err(|e| syntax(i.line, e))?;
                p.parse::<Platform>()
                    .map_err(|e| syntax(i.line, e.to_string()))?
            }
            None => self.platform.clone(),
        };
        let base = if image == "scratch" {
            StageOut {
                config: json!({
                    "architecture": platform.architecture,
                    "os": platform.os,
                    "config": {"Env": [format!("PATH={DEFAULT_PATH}")]},
                    "rootfs": {"type": "layers", "diff_ids": []},
                    "history": [],
                }),
                layers: Vec::new(),
                key: sha(&["scratch", &platform.to_string()]),
            }
        } else if let Some(j) = self.stage_ref(&image, idx) {
            self.stage(j)?
        } else {
            self.image(&image, &platform, i.line)?
        };
        let mut config = base.config;
        if let Some(v) = &platform.variant {
            config["variant"] = json!(v);
        }
        Ok(State {
            label: label.to_owned(),
            config,
            layers: base.layers,
            key: base.key,
            args: BTreeMap::new(),
            idx,
            cmd_set: false,
        })
    }

    /// An earlier stage named `name` (or by index) than `before`.
    fn stage_ref(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(j) = self.stages[..before]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(j);
        }
        name.parse::<usize>().ok().filter(|&j| j < before)
    }

    /// An image from the store, pulled when missing.
    fn image(&self, name: &str, platform: &Platform, line: usize) -> Result<StageOut> {
        let images = self.b.images;
        let mut candidates = vec![name.to_owned()];
        let has_tag =
            name.contains('@') || name.rsplit('/').next().is_some_and(|l| l.contains(':'));
        if !has_tag {
            candidates.push(format!("{name}:latest"));
        }
        if !name.contains('/') {
            candidates.push(format!("docker.io/library/{name}"));
            if !has_tag {
                candidates.push(format!("docker.io/library/{name}:latest"));
            }
        }
        let found = candidates.iter().find_map(|c| images.get(c).ok());
        let record = match found {
            Some(r) => r,
            None => {
                let mut pull = self.opts.pull.clone().unwrap_or_default();
                pull.platform = platform.clone();
                images.pull(name, &pull).map_err(|source| Error::Image {
                    line,
                    what: format!("pulling {name}"),
                    source,
                })?
            }
        };
        let img = images
            .inspect(&record.name)
            .map_err(|source| Error::Image {
                line,
                what: format!("reading image {name}"),
                source,
            })?;
        let raw = images
            .content()
            .read_blob(&record.config)
            .map_err(|source| Error::Image {
                line,
                what: format!("reading the config of {name}"),
                source,
            })?;
        let config: Value = serde_json::from_slice(&raw)
            .map_err(|e| syntax(line, format!("config of {name}: {e}")))?;
        Ok(StageOut {
            config,
            key: sha(&["image", &record.manifest.to_string()]),
            layers: img.layers,
        })
    }

    /// A writable snapshot over `layers` (or over nothing).
    fn snapshot(&self, layers: &[LayerInfo], label: &str, line: usize) -> Result<Snapshot<'a>> {
        let ls = self.b.layers;
        let parent = if layers.is_empty() {
            None
        } else {
            let u = self
                .b
                .images
                .unpack_layers(label, layers, ls, &kcore_image::UnpackOptions::new(), 2)
                .map_err(|source| Error::Image {
                    line,
                    what: format!("unpacking the layers of {label}"),
                    source,
                })?;
            u.top().map(str::to_owned)
        };
        let id = format!(
            "kbuild-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let lerr = |what: String| move |source| Error::Layer { what, source };
        ls.create(&id, parent.as_deref())
            .map_err(lerr(format!("creating build snapshot {id}")))?;
        let mut snap = Snapshot {
            layers: ls,
            id: id.clone(),
            merged: PathBuf::new(),
            mounted: false,
        };
        snap.merged = ls
            .mount(&id, &MountOptions::new())
            .map_err(lerr(format!("mounting build snapshot {id}")))?;
        snap.mounted = true;
        Ok(snap)
    }

    fn cache_path(&self, key: &str) -> PathBuf {
        self.b.work.join("cache").join(format!("{key}.json"))
    }

    /// A cached result of step `key`: `Some(None)` for a step that changed nothing.
    fn cache_get(&self, key: &str) -> Option<Option<Committed>> {
        if self.opts.no_cache {
            return None;
        }
        let data = fs::read(self.cache_path(key)).ok()?;
        let v: Option<Committed> = serde_json::from_slice(&data).ok()?;
        if let Some(c) = &v {
            let d: Digest = c.digest.parse().ok()?;
            if !self.b.images.content().contains(&d) {
                return None;
            }
        }
        Some(v)
    }

    fn cache_put(&self, key: &str, c: &Option<Committed>) -> Result<()> {
        let p = self.cache_path(key);
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&tmp, serde_json::to_vec(c).unwrap_or_default()).at("write", &tmp)?;
        fs::rename(&tmp, &p).at("rename", &p)
    }

    /// Runs a file-changing step through the cache: `exec` makes the layer on a miss.
    fn fs_step(
        &self,
        st: &mut State,
        key: String,
        created_by: String,
        exec: impl FnOnce(&State) -> Result<Option<Committed>>,
    ) -> Result<()> {
        let next = key.clone();
        self.fs_step_keyed(st, key, next, created_by, exec)
    }

    /// [`fs_step`](Self::fs_step) where the cache entry's key differs from the key the
    /// stage moves on with (`COPY --link`: its layer does not depend on the parent).
    fn fs_step_keyed(
        &self,
        st: &mut State,
        key: String,
        next: String,
        created_by: String,
        exec: impl FnOnce(&State) -> Result<Option<Committed>>,
    ) -> Result<()> {
        let result = match self.cache_get(&key) {
            Some(c) => {
                self.event(&Event::Cached);
                self.cached.set(self.cached.get() + 1);
                c
            }
            None => {
                let c = exec(st)?;
                if c.is_some() {
                    self.built.set(self.built.get() + 1);
                }
                self.cache_put(&key, &c)?;
                c
            }
        };
        match &result {
            Some(c) => {
                st.push_layer(c)?;
                st.history(created_by, false);
            }
            None => st.history(created_by, true),
        }
        st.key = next;
        Ok(())
    }

    fn config_step(&self, st: &mut State, created_by: String) {
        st.key = sha(&[&st.key, &created_by]);
        st.history(created_by, true);
    }

    fn step(&self, st: &mut State, i: &Instruction) -> Result<()> {
        let _span = tracing::debug_span!("step", line = i.line, keyword = %i.keyword).entered();
        match i.keyword.as_str() {
            "FROM" => Err(syntax(i.line, "FROM inside a stage")),
            "ARG" => {
                i.check_flags(&[])?;
                let mut scope = st.args.clone();
                scope.extend(st.env());
                for (k, v) in self.arg_decls(i, &scope)? {
                    let v = v
                        .or_else(|| self.global_args.get(&k).cloned())
                        .or_else(|| self.platform_args().get(&k).cloned());
                    if let Some(v) = v {
                        st.args.insert(k, v);
                    } else {
                        st.args.remove(&k);
                    }
                }
                // ARG changes the cache key only through the RUN environment.
                st.history(format!("ARG {}", i.args), true);
                Ok(())
            }
            "ENV" => {
                i.check_flags(&[])?;
                let kv = key_values(i, &self.lexer, &st.lookup())?;
                for (k, v) in &kv {
                    st.set_env(k, v);
                }
                let text: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
                self.config_step(st, format!("ENV {}", text.join(" ")));
                Ok(())
            }
            "LABEL" => {
                i.check_flags(&[])?;
                let kv = key_values(i, &self.lexer, &st.lookup())?;
                let cfg = st.cfg();
                let labels = cfg.entry("Labels").or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                for (k, v) in &kv {
                    labels[k] = json!(v);
                }
                let text: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
                self.config_step(st, format!("LABEL {}", text.join(" ")));
                Ok(())
            }
            "MAINTAINER" => {
                i.check_flags(&[])?;
                st.config["author"] = json!(i.args);
                self.config_step(st, format!("MAINTAINER {}", i.args));
                Ok(())
            }
            "EXPOSE" => {
                i.check_flags(&[])?;
                let words = self.words(st, i)?;
                let cfg = st.cfg();
                let ports = cfg.entry("ExposedPorts").or_insert_with(|| json!({}));
                for w in &words {
                    let (p, proto) = match w.split_once('/') {
                        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
                        None => (w.as_str(), "tcp".to_owned()),
                    };
                    let (lo, hi) = match p.split_once('-') {
                        Some((a, b)) => (a, b),
                        None => (p, p),
                    };
                    let bad = || syntax(i.line, format!("invalid containerPort: {w}"));
                    let lo: u16 = lo.parse().map_err(|_| bad())?;
                    let hi: u16 = hi.parse().map_err(|_| bad())?;
                    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") || hi < lo {
                        return Err(bad());
                    }
                    for port in lo..=hi {
                        ports[format!("{port}/{proto}")] = json!({});
                    }
                }
                self.config_step(st, format!("EXPOSE map[{}]", words.join(" ")));
                Ok(())
            }
            "VOLUME" => {
                i.check_flags(&[])?;
                let vols = match i.json_args() {
                    Some(v) => v,
                    None => self.words(st, i)?,
                };
                let cfg = st.cfg();
                let v = cfg.entry("Volumes").or_insert_with(|| json!({}));
                for p in &vols {
                    if p.trim().is_empty() {
                        return Err(syntax(
                            i.line,
                            "VOLUME specified can not be an empty string",
                        ));
                    }
                    v[p] = json!({});
                }
                self.config_step(st, format!("VOLUME [{}]", vols.join(" ")));
                Ok(())
            }
            "USER" => {
                i.check_flags(&[])?;
                let u = self.word(st, i, i.args.trim())?;
                st.cfg().insert("User".into(), json!(u));
                self.config_step(st, format!("USER {u}"));
                Ok(())
            }
            "STOPSIGNAL" => {
                i.check_flags(&[])?;
                let s = self.word(st, i, i.args.trim())?;
                st.cfg().insert("StopSignal".into(), json!(s));
                self.config_step(st, format!("STOPSIGNAL {s}"));
                Ok(())
            }
            "SHELL" => {
                i.check_flags(&[])?;
                let sh = i.json_args().filter(|v| !v.is_empty()).ok_or_else(|| {
                    syntax(i.line, "SHELL requires the arguments to be in JSON form")
                })?;
                st.cfg().insert("Shell".into(), json!(sh));
                self.config_step(st, format!("SHELL {}", json!(sh)));
                Ok(())
            }
            "CMD" | "ENTRYPOINT" => {
                i.check_flags(&[])?;
                let args = self.command(st, i);
                let (key, text) = if i.keyword == "CMD" {
                    ("Cmd", format!("CMD {}", json!(args)))
                } else {
                    ("Entrypoint", format!("ENTRYPOINT {}", json!(args)))
                };
                let cfg = st.cfg();
                cfg.insert(
                    key.into(),
                    if args.is_empty() {
                        Value::Null
                    } else {
                        json!(args)
                    },
                );
                if key == "Entrypoint" && !st.cmd_set {
                    st.cfg().insert("Cmd".into(), Value::Null);
                }
                if key == "Cmd" {
                    st.cmd_set = true;
                }
                self.config_step(st, text);
                Ok(())
            }
            "HEALTHCHECK" => self.healthcheck(st, i),
            "ONBUILD" => {
                i.check_flags(&[])?;
                let inner = parse(&i.args).map_err(|e| syntax(i.line, format!("ONBUILD: {e}")))?;
                let kw = inner
                    .instructions
                    .first()
                    .map(|x| x.keyword.as_str())
                    .unwrap_or("");
                if matches!(kw, "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(syntax(
                        i.line,
                        format!("{kw} isn't allowed as an ONBUILD trigger"),
                    ));
                }
                let cfg = st.cfg();
                let ob = cfg.entry("OnBuild").or_insert_with(|| json!([]));
                if !ob.is_array() {
                    *ob = json!([]);
                }
                ob.as_array_mut().expect("array").push(json!(i.args));
                self.config_step(st, format!("ONBUILD {}", i.args));
                Ok(())
            }
            "WORKDIR" => {
                i.check_flags(&[])?;
                let w = self.word(st, i, i.args.trim())?;
                let base = st.str_cfg("WorkingDir").unwrap_or_else(|| "/".into());
                let dir = if w.starts_with('/') {
                    format!("/{}", clean(&w))
                } else {
                    format!("/{}", clean(&format!("{base}/{w}")))
                };
                st.cfg().insert("WorkingDir".into(), json!(dir));
                let key = sha(&[&st.key, "WORKDIR", &dir]);
                let label = st.label.clone();
                self.fs_step(st, key, format!("WORKDIR {dir}"), |st| {
                    let snap = self.snapshot(&st.layers, &label, i.line)?;
                    let root = snap.root()?;
                    if !fscopy::is_dir_in(&root, &dir) {
                        fscopy::mkdir_all(&root, &dir, &snap.merged)?;
                    }
                    drop(root);
                    snap.commit(self.b.images, &[])
                })
            }
            "COPY" | "ADD" => self.copy(st, i),
            "RUN" => self.run(st, i),
            other => Err(syntax(i.line, format!("unknown instruction: {other}"))),
        }
    }

    fn word(&self, st: &State, i: &Instruction, s: &str) -> Result<String> {
        self.lexer
            .word(s, &st.lookup())
            .map_err(|e| syntax(i.line, e))
    }

    fn words(&self, st: &State, i: &Instruction) -> Result<Vec<String>> {
        self.lexer
            .words(&i.args, &st.lookup())
            .map_err(|e| syntax(i.line, e))
    }

    /// CMD/ENTRYPOINT/RUN arguments: exec form as is, shell form through SHELL.
    fn command(&self, st: &State, i: &Instruction) -> Vec<String> {
        match i.json_args() {
            Some(v) => v,
            None if i.args.trim().is_empty() => Vec::new(),
            None => {
                let mut v = st.shell();
                v.push(i.args.clone());
                v
            }
        }
    }

    fn healthcheck(&self, st: &mut State, i: &Instruction) -> Result<()> {
        i.check_flags(&[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ])?;
        let args = i.args.trim();
        let (kw, rest) = match args.find(char::is_whitespace) {
            Some(p) => (&args[..p], args[p..].trim()),
            None => (args, ""),
        };
        let hc = if kw.eq_ignore_ascii_case("NONE") {
            if !rest.is_empty() || !i.flags.is_empty() {
                return Err(syntax(i.line, "HEALTHCHECK NONE takes no arguments"));
            }
            json!({"Test": ["NONE"]})
        } else if kw.eq_ignore_ascii_case("CMD") {
            if rest.is_empty() {
                return Err(syntax(i.line, "HEALTHCHECK CMD requires a command"));
            }
            let test: Vec<String> = match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) if rest.starts_with('[') => {
                    std::iter::once("CMD".to_owned()).chain(v).collect()
                }
                _ => vec!["CMD-SHELL".into(), rest.into()],
            };
            let mut hc = json!({"Test": test});
            for (flag, field) in [
                ("interval", "Interval"),
                ("timeout", "Timeout"),
                ("start-period", "StartPeriod"),
                ("start-interval", "StartInterval"),
            ] {
                if let Some(v) = i.flag(flag) {
                    let ns = parse_duration(v).ok_or_else(|| {
                        syntax(
                            i.line,
                            format!("HEALTHCHECK --{flag}: invalid duration {v:?}"),
                        )
                    })?;
                    if ns != 0 {
                        hc[field] = json!(ns);
                    }
                }
            }
            if let Some(r) = i.flag("retries") {
                let n: i64 = r.parse().map_err(|_| {
                    syntax(
                        i.line,
                        format!("HEALTHCHECK --retries: invalid number {r:?}"),
                    )
                })?;
                if n < 0 {
                    return Err(syntax(i.line, "--retries cannot be negative"));
                }
                if n > 0 {
                    hc["Retries"] = json!(n);
                }
            }
            hc
        } else {
            return Err(syntax(
                i.line,
                format!("unknown type {kw:?} in HEALTHCHECK (try CMD)"),
            ));
        };
        st.cfg().insert("Healthcheck".into(), hc.clone());
        self.config_step(st, format!("HEALTHCHECK {}", hc["Test"]));
        Ok(())
    }

    /// Variables a RUN step sees: build args in scope, then ENV over them.
    fn run_env(&self, st: &State) -> Vec<String> {
        let env = st.env();
        let mut out: Vec<String> = Vec::new();
        for (k, v) in &st.args {
            if !env.iter().any(|(n, _)| n == k) {
                out.push(format!("{k}={v}"));
            }
        }
        out.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        if !env.iter().any(|(k, _)| k == "PATH") {
            out.push(format!("PATH={DEFAULT_PATH}"));
        }
        out
    }

    fn run(&self, st: &mut State, i: &Instruction) -> Result<()> {
        i.check_flags(&["mount", "network", "security"])?;
        if let Some(s) = i.flag("security") {
            if s != "sandbox" {
                return Err(Error::Unsupported {
                    line: i.line,
                    what: format!("RUN --security={s}"),
                });
            }
        }
        if self.platform.architecture != host_platform().architecture {
            return Err(Error::Unsupported {
                line: i.line,
                what: format!(
                    "RUN for platform {} on a {} host",
                    self.platform,
                    host_platform()
                ),
            });
        }
        let network = match i.flag("network").unwrap_or("none") {
            "none" => Network::Isolated,
            "host" => Network::Host,
            "default" => Network::Bridge,
            n => {
                return Err(syntax(
                    i.line,
                    format!("RUN --network: unknown network {n:?}"),
                ))
            }
        };
        let args = self.command(st, i);
        if args.is_empty() {
            return Err(syntax(i.line, "RUN requires a command"));
        }
        let env = self.run_env(st);
        let user = st.str_cfg("User").unwrap_or_else(|| "0".into());
        let cwd = st.str_cfg("WorkingDir").unwrap_or_else(|| "/".into());
        let specs = i
            .flag_all("mount")
            .into_iter()
            .map(|m| self.parse_mount(st, i, m))
            .collect::<Result<Vec<_>>>()?;
        // Inputs beyond the text: bind-mounted content.
        let mut inputs = Vec::new();
        for m in &specs {
            inputs.push(format!("{m:?}"));
            if m.kind == "bind" {
                match &m.from {
                    Some(f) => inputs.push(self.source_key(st, f, i.line)?),
                    None => inputs.push(self.context_digest(&m.source, i.line)?),
                }
            }
        }
        let arg_prefix = if st.args.is_empty() {
            String::new()
        } else {
            let a: Vec<String> = st.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("|{} {} ", a.len(), a.join(" "))
        };
        let created_by = format!("RUN {arg_prefix}{} # buildkit", args.join(" "));
        let key = sha(&[
            &st.key,
            "RUN",
            &json!(args).to_string(),
            &json!(env).to_string(),
            &user,
            &cwd,
            &format!("{network:?}"),
            &inputs.join("\n"),
        ]);
        let label = st.label.clone();
        self.fs_step(st, key, created_by, |st| {
            let snap = self.snapshot(&st.layers, &label, i.line)?;
            let root = snap.root()?;
            let (uid, gid) = fscopy::resolve_user(&root, &user).map_err(|e| syntax(i.line, e))?;
            if !fscopy::is_dir_in(&root, &cwd) {
                fscopy::mkdir_all(&root, &cwd, &snap.merged)?;
            }
            // Keep snapshots of stages bound with --mount from=... alive for the run.
            let mut held = Vec::new();
            let mut mounts = Vec::new();
            let tmp = tempfile::Builder::new()
                .prefix("run-")
                .tempdir_in(self.b.work.join("tmp"))
                .at("create", self.b.work.join("tmp"))?;
            for m in &specs {
                mounts.push(self.realize_mount(m, st.idx, &mut held, tmp.path(), i.line)?);
            }
            if network != Network::Isolated {
                // The host's resolvers, as BuildKit gives a step with a network; a
                // private copy, so what the step writes there stays out of the image.
                let resolv = tmp.path().join("resolv.conf");
                let text = crate::net::host_resolv_conf(network == Network::Bridge);
                fs::write(&resolv, text).at("write", &resolv)?;
                mounts.push(RunMount::Bind {
                    source: resolv,
                    target: "/etc/resolv.conf".into(),
                    read_only: false,
                });
            }
            let created: Vec<String> = run::mount_points(&mounts)
                .into_iter()
                .filter(|p| !fscopy::exists_in(&root, p))
                .collect();
            drop(root);
            let p = Process {
                args: args.clone(),
                env: env.clone(),
                cwd: cwd.clone(),
                uid,
                gid,
                network,
                mounts,
            };
            let id = format!(
                "kb-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let progress = self.opts.progress.clone();
            let on_line = move |l: &str| {
                if let Some(p) = &progress {
                    p(&Event::Output(l.to_owned()));
                }
            };
            let out = run::run(
                i.line,
                &snap.merged,
                tmp.path(),
                &id,
                &p,
                &self.opts.bridge,
                &on_line,
            )?;
            drop(held);
            if !out.status.success() {
                return Err(Error::RunFailed {
                    line: i.line,
                    command: i.args.clone(),
                    status: out.status.to_string(),
                    output: out.tail,
                });
            }
            snap.commit(self.b.images, &created)
        })
    }

    fn parse_mount(&self, st: &State, i: &Instruction, spec: &str) -> Result<MountSpec> {
        let spec = self.word(st, i, spec)?;
        let mut m = MountSpec {
            kind: "bind".into(),
            target: String::new(),
            source: String::new(),
            from: None,
            id: None,
            rw: false,
            size: None,
            mode: None,
            uid: None,
            gid: None,
        };
        for field in spec.split(',') {
            let (k, v) = match field.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), v.trim().to_owned()),
                None => (field.trim().to_ascii_lowercase(), "true".to_owned()),
            };
            let bad = || syntax(i.line, format!("RUN --mount: invalid value {v:?} for {k}"));
            match k.as_str() {
                "type" => m.kind = v.clone(),
                "target" | "dst" | "destination" => m.target = v.clone(),
                "source" | "src" => m.source = v.clone(),
                "from" => m.from = Some(v.clone()),
                "id" => m.id = Some(v.clone()),
                "ro" | "readonly" => m.rw = v == "false",
                "rw" | "readwrite" => m.rw = v != "false",
                "size" => m.size = Some(v.parse().map_err(|_| bad())?),
                "mode" => m.mode = Some(u32::from_str_radix(&v, 8).map_err(|_| bad())?),
                "uid" => m.uid = Some(v.parse().map_err(|_| bad())?),
                "gid" => m.gid = Some(v.parse().map_err(|_| bad())?),
                "sharing" | "required" => {}
                _ => return Err(syntax(i.line, format!("RUN --mount: unknown option {k:?}"))),
            }
        }
        if !matches!(m.kind.as_str(), "bind" | "cache" | "tmpfs") {
            return Err(Error::Unsupported {
                line: i.line,
                what: format!("RUN --mount=type={}", m.kind),
            });
        }
        if m.target.is_empty() {
            return Err(syntax(i.line, "RUN --mount: target is required"));
        }
        if !m.target.starts_with('/') {
            let wd = st.str_cfg("WorkingDir").unwrap_or_else(|| "/".into());
            m.target = format!("/{}", clean(&format!("{wd}/{}", m.target)));
        }
        if m.kind == "cache" {
            m.rw = true;
        }
        Ok(m)
    }

    fn realize_mount(
        &self,
        m: &MountSpec,
        before: usize,
        held: &mut Vec<Snapshot<'a>>,
        tmp: &Path,
        line: usize,
    ) -> Result<RunMount> {
        match m.kind.as_str() {
            "tmpfs" => Ok(RunMount::Tmpfs {
                target: m.target.clone(),
                size: m.size,
            }),
            "cache" => {
                let id = m.id.clone().unwrap_or_else(|| m.target.clone());
                let dir = self.b.work.join("mounts").join(sha(&["cache", &id]));
                if !dir.exists() {
                    fs::create_dir_all(&dir).at("create", &dir)?;
                    let mode = m.mode.unwrap_or(0o755);
                    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(mode))
                        .at("chmod", &dir)?;
                    std::os::unix::fs::chown(
                        &dir,
                        Some(m.uid.unwrap_or(0)),
                        Some(m.gid.unwrap_or(0)),
                    )
                    .at("chown", &dir)?;
                }
                Ok(RunMount::Bind {
                    source: dir,
                    target: m.target.clone(),
                    read_only: false,
                })
            }
            _ => {
                let rel = clean(&m.source);
                let source = match &m.from {
                    Some(f) => {
                        let (layers, label) = self.source_layers(f, before, line)?;
                        let snap = self.snapshot(&layers, &label, line)?;
                        let root = snap.root()?;
                        let fd = kcore_rootfd::open_in(
                            &root,
                            Path::new(&rel),
                            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                        )
                        .at("open", snap.merged.join(&rel))?;
                        let p = resolved_path(&fd, &snap.merged.join(&rel));
                        held.push(snap);
                        p
                    }
                    None => {
                        let ctx = kcore_rootfd::open_root(&self.opts.context)
                            .at("open", &self.opts.context)?;
                        let fd = kcore_rootfd::open_in(
                            &ctx,
                            Path::new(&rel),
                            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                        )
                        .at("open", self.opts.context.join(&rel))?;
                        let p = resolved_path(&fd, &self.opts.context.join(&rel));
                        if m.rw {
                            // Writes must not reach the user's context: bind a copy.
                            let copy =
                                tmp.join(format!("bind-{}", sha(&[&rel]).get(..12).unwrap_or("x")));
                            fs::create_dir_all(&copy).at("create", &copy)?;
                            let dir = kcore_rootfd::open_root(&copy).at("open", &copy)?;
                            fscopy::copy_entry(
                                &p,
                                dir.as_fd(),
                                "c".as_ref(),
                                Attrs::default(),
                                "",
                                &|_| false,
                            )?;
                            copy.join("c")
                        } else {
                            p
                        }
                    }
                };
                Ok(RunMount::Bind {
                    source,
                    target: m.target.clone(),
                    read_only: !m.rw,
                })
            }
        }
    }

    /// Layers (and a label) of `--from`: a stage by name or index, or an image.
    fn source_layers(
        &self,
        from: &str,
        before: usize,
        line: usize,
    ) -> Result<(Vec<LayerInfo>, String)> {
        let out = self.source_stage(from, before, line)?;
        Ok((out.layers, from.to_owned()))
    }

    fn source_stage(&self, from: &str, before: usize, line: usize) -> Result<StageOut> {
        match self.stage_ref(from, before) {
            Some(j) => self.stage(j),
            None => self.image(from, &self.platform, line),
        }
    }

    /// A cache input naming `--from`'s content: its stage key.
    fn source_key(&self, st: &State, from: &str, line: usize) -> Result<String> {
        Ok(self.source_stage(from, st.idx, line)?.key)
    }

    /// A digest of a path in the context (for bind mounts).
    fn context_digest(&self, rel: &str, line: usize) -> Result<String> {
        let rel = clean(rel);
        let p = self.opts.context.join(&rel);
        if fs::symlink_metadata(&p).is_err() {
            return Err(Error::SourceNotFound {
                line,
                instruction: "RUN --mount".into(),
                source_path: rel,
                from: None,
            });
        }
        let mut h = Sha256::new();
        hash_tree(&p, &rel, &|r| self.ignore.is_excluded(r), &mut h)?;
        Ok(hex::encode(h.finalize()))
    }

    fn copy(&self, st: &mut State, i: &Instruction) -> Result<()> {
        let add = i.keyword == "ADD";
        if add {
            i.check_flags(&[
                "chown",
                "chmod",
                "link",
                "exclude",
                "checksum",
                "keep-git-dir",
            ])?;
        } else {
            i.check_flags(&["from", "chown", "chmod", "link", "exclude", "parents"])?;
        }
        if i.flag("parents").is_some() {
            return Err(Error::Unsupported {
                line: i.line,
                what: "COPY --parents".into(),
            });
        }
        let words = match i.json_args() {
            Some(v) => v
                .iter()
                .map(|w| self.word(st, i, w))
                .collect::<Result<Vec<_>>>()?,
            None => self.words(st, i)?,
        };
        if words.len() < 2 {
            return Err(syntax(
                i.line,
                format!("{} requires at least two arguments", i.keyword),
            ));
        }
        let (dest, srcs) = words.split_last().expect("two words");
        let workdir = st.str_cfg("WorkingDir").unwrap_or_else(|| "/".into());
        let dest_dir_syntax = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
        let dest_abs = if dest.starts_with('/') {
            format!("/{}", clean(dest))
        } else {
            format!("/{}", clean(&format!("{workdir}/{dest}")))
        };
        for s in srcs {
            if add
                && (s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@"))
            {
                return Err(Error::Unsupported {
                    line: i.line,
                    what: format!("ADD from a URL ({s})"),
                });
            }
        }
        let link = i.flag("link").is_some_and(|v| v != "false");
        let chmod = match i.flag("chmod") {
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .map_err(|_| syntax(i.line, format!("invalid --chmod {m:?}: must be octal")))?,
            ),
            None => None,
        };
        let chown = i.flag("chown").map(|c| self.word(st, i, c)).transpose()?;
        let excludes: Vec<String> = i
            .flag_all("exclude")
            .into_iter()
            .map(|e| self.word(st, i, e).map(|e| clean(&e)))
            .collect::<Result<Vec<_>>>()?;
        let from = i.flag("from").map(|f| self.word(st, i, f)).transpose()?;
        let source_stage = match &from {
            Some(f) => Some(self.source_stage(f, st.idx, i.line)?),
            None => None,
        };

        // Inputs: the content (or the source stage's key) of every source.
        let mut inputs =
            vec![json!([srcs, dest_abs, chown, chmod, excludes, link, add]).to_string()];
        let matches_ctx = match &source_stage {
            None => {
                let ctx =
                    kcore_rootfd::open_root(&self.opts.context).at("open", &self.opts.context)?;
                let m = self.matches(&ctx, &self.opts.context, srcs, &excludes, true, i, None)?;
                let mut h = Sha256::new();
                for (p, rel) in &m {
                    h.update(rel.as_bytes());
                    hash_tree(p, rel, &|r| self.excluded(r, &excludes, true), &mut h)?;
                }
                inputs.push(hex::encode(h.finalize()));
                Some(m)
            }
            Some(o) => {
                inputs.push(o.key.clone());
                None
            }
        };
        let created_by = format!("{} {} # buildkit", i.keyword, i.args);
        let parent_key = if link { String::new() } else { st.key.clone() };
        let key = sha(&[&parent_key, &i.keyword, &inputs.join("\n")]);
        let label = st.label.clone();
        let next = if link {
            sha(&[&st.key, &key])
        } else {
            key.clone()
        };
        self.fs_step_keyed(st, key, next, created_by, |st| {
            let snap = if link {
                self.snapshot(&[], &label, i.line)?
            } else {
                self.snapshot(&st.layers, &label, i.line)?
            };
            // Sources from another stage or image: a snapshot of it, read only by us.
            let src_snap = match (&source_stage, &from) {
                (Some(o), Some(f)) => Some((self.snapshot(&o.layers, f, i.line)?, f.clone())),
                _ => None,
            };
            let matches = match (&src_snap, matches_ctx) {
                (Some((s, f)), _) => {
                    let r = s.root()?;
                    self.matches(&r, &s.merged, srcs, &excludes, false, i, Some(f))?
                }
                (_, Some(m)) => m,
                _ => Vec::new(),
            };
            let root = snap.root()?;
            // Users and groups are looked up in the image being built.
            let lookup_root = if link && chown.is_some() {
                let merged = self.snapshot(&st.layers, &label, i.line)?;
                let r = merged.root()?;
                let u = chown.as_ref().map(|c| fscopy::resolve_user(&r, c)).transpose();
                drop(r);
                u
            } else {
                chown.as_ref().map(|c| fscopy::resolve_user(&root, c)).transpose()
            };
            let owner = lookup_root.map_err(|e| syntax(i.line, e))?;
            let attrs = Attrs {
                owner: owner.or(if from.is_none() { Some((0, 0)) } else { None }),
                mode: chmod,
            };
            let many = srcs.len() > 1 || srcs.iter().any(|s| has_meta(s)) && matches.len() > 1;
            if many && !dest_dir_syntax {
                return Err(syntax(
                    i.line,
                    format!("When using {} with more than one source file, the destination must be a directory and end with a /", i.keyword),
                ));
            }
            let from_ctx = from.is_none();
            for (p, rel) in &matches {
                let meta = fs::metadata(p).at("stat", p)?;
                let skip = |r: &str| {
                    let full = if rel.is_empty() { r.to_owned() } else { format!("{rel}/{r}") };
                    self.excluded(&full, &excludes, from_ctx) || excludes.iter().any(|e| glob_match(e, r))
                };
                if meta.is_dir() {
                    let d = fscopy::mkdir_all_owned(&root, &dest_abs, owner, &snap.merged)?;
                    for e in fs::read_dir(p).at("read directory", p)? {
                        let e = e.at("read directory", p)?;
                        let name = e.file_name().to_string_lossy().into_owned();
                        if skip(&name) {
                            continue;
                        }
                        fscopy::copy_entry(&e.path(), d.as_fd(), &e.file_name(), attrs, &name, &skip)?;
                    }
                    if let Some((uid, gid)) = owner {
                        rustix::fs::fchown(&d, Some(fscopy::uid_of(uid)), Some(fscopy::gid_of(gid))).at("chown", &dest_abs)?;
                    }
                    continue;
                }
                if add && from_ctx && is_archive(p) {
                    let d = fscopy::mkdir_all(&root, &dest_abs, &snap.merged)?;
                    let f = fs::File::open(p).at("read", p)?;
                    let opts = kcore_image::UnpackOptions::new().whiteouts(kcore_image::Whiteouts::Apply);
                    kcore_image::apply_layer_at(f, None, d.as_fd(), None, &opts).map_err(|source| Error::Image {
                        line: i.line,
                        what: format!("extracting {}", p.display()),
                        source,
                    })?;
                    continue;
                }
                let base = Path::new(rel).file_name().map(|n| n.to_owned()).unwrap_or_else(|| "file".into());
                let (dir, name) = if dest_dir_syntax || fscopy::is_dir_in(&root, &dest_abs) {
                    (fscopy::mkdir_all_owned(&root, &dest_abs, owner, &snap.merged)?, base)
                } else {
                    let (parent, name) = dest_abs.rsplit_once('/').unwrap_or(("", &dest_abs));
                    (fscopy::mkdir_all_owned(&root, parent, owner, &snap.merged)?, name.into())
                };
                fscopy::copy_with_top(p, &meta, dir.as_fd(), &name, attrs)?;
            }
            drop(root);
            drop(src_snap);
            snap.commit(self.b.images, &[])
        })
    }

    fn excluded(&self, rel: &str, excludes: &[String], ctx: bool) -> bool {
        (ctx && self.ignore.is_excluded(rel)) || excludes.iter().any(|e| glob_match(e, rel))
    }

    /// Sources matching `srcs` under `base` (the context or a stage's root): each as a
    /// host path (a top-level symlink followed inside the root) and its relative path.
    #[allow(clippy::too_many_arguments)]
    fn matches(
        &self,
        root: &OwnedFd,
        base: &Path,
        srcs: &[String],
        excludes: &[String],
        ctx: bool,
        i: &Instruction,
        from: Option<&String>,
    ) -> Result<Vec<(PathBuf, String)>> {
        let mut out = Vec::new();
        for s in srcs {
            let rel = clean(s.trim_start_matches('/'));
            let found_before = out.len();
            if has_meta(&rel) {
                let mut all = Vec::new();
                walk(base, "", &|r| self.excluded(r, excludes, ctx), &mut all)?;
                for r in all {
                    if glob_match(&rel, &r) {
                        out.push((base.join(&r), r));
                    }
                }
                // A match inside a matched directory is copied with it.
                let mut keep: Vec<(PathBuf, String)> = Vec::new();
                for (p, r) in out.drain(found_before..) {
                    if keep.iter().any(|(_, k)| r.starts_with(&format!("{k}/"))) {
                        continue;
                    }
                    keep.push((p, r));
                }
                out.extend(keep);
            } else if rel.is_empty() {
                out.push((base.to_path_buf(), String::new()));
            } else if !self.excluded(&rel, excludes, ctx)
                || (ctx && self.ignore.may_reinclude_below(&rel))
            {
                if let Ok(fd) = kcore_rootfd::open_in(
                    root,
                    Path::new(&rel),
                    rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                ) {
                    out.push((resolved_path(&fd, &base.join(&rel)), rel));
                }
            }
            if out.len() == found_before {
                return Err(Error::SourceNotFound {
                    line: i.line,
                    instruction: i.keyword.clone(),
                    source_path: s.clone(),
                    from: from.cloned(),
                });
            }
        }
        Ok(out)
    }

    /// Writes the config and manifest and names the image.
    fn store(&self, out: StageOut) -> Result<ImageRecord> {
        let images = self.b.images;
        let mut config = out.config;
        config["created"] = json!(now_rfc3339());
        config["architecture"] = json!(self.platform.architecture);
        config["os"] = json!(self.platform.os);
        let diff_ids: Vec<String> = out.layers.iter().map(|l| l.diff_id.to_string()).collect();
        config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
        let serr = |what: &str| {
            let what = what.to_owned();
            move |source| Error::Image {
                line: 0,
                what,
                source,
            }
        };
        let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
        let config_digest = images
            .content()
            .put_bytes(&config_bytes)
            .map_err(serr("storing the image config"))?;
        let layers: Vec<Value> = out
            .layers
            .iter()
            .map(|l| json!({"mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size}))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": kcore_image::OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.to_string(),
                "size": config_bytes.len(),
            },
            "layers": layers,
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let md = images
            .content()
            .put_bytes(&manifest_bytes)
            .map_err(serr("storing the manifest"))?;
        let name = self.opts.tag.clone().unwrap_or_else(|| md.to_string());
        images
            .tag(&name, &md, None)
            .map_err(serr(&format!("naming the image {name}")))
    }
}

/// The path an `O_PATH` fd resolved to, as a path the host can open.
fn resolved_path(fd: &OwnedFd, fallback: &Path) -> PathBuf {
    fs::read_link(kcore_rootfd::proc_fd_path(fd)).unwrap_or_else(|_| fallback.to_path_buf())
}

#[derive(Debug, Clone)]
struct MountSpec {
    kind: String,
    target: String,
    source: String,
    from: Option<String>,
    id: Option<String>,
    rw: bool,
    size: Option<u64>,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
}

/// Every path under `dir` (relative, `/`-separated), skipping excluded subtrees.
fn walk(dir: &Path, rel: &str, skip: &dyn Fn(&str) -> bool, out: &mut Vec<String>) -> Result<()> {
    let path = if rel.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(rel)
    };
    let mut names: Vec<String> = fs::read_dir(&path)
        .at("read directory", &path)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for n in names {
        let r = if rel.is_empty() {
            n
        } else {
            format!("{rel}/{n}")
        };
        let excluded = skip(&r);
        if !excluded {
            out.push(r.clone());
        }
        let p = dir.join(&r);
        if fs::symlink_metadata(&p)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            walk(dir, &r, skip, out)?;
        }
    }
    Ok(())
}

/// Feeds a tree's names, types, modes and content into `h` (in name order).
fn hash_tree(p: &Path, rel: &str, skip: &dyn Fn(&str) -> bool, h: &mut Sha256) -> Result<()> {
    let meta = fs::metadata(p).at("stat", p)?;
    hash_entry(p, &meta, rel, skip, h)
}

fn hash_entry(
    p: &Path,
    meta: &fs::Metadata,
    rel: &str,
    skip: &dyn Fn(&str) -> bool,
    h: &mut Sha256,
) -> Result<()> {
    h.update(rel.as_bytes());
    h.update([0]);
    h.update(meta.mode().to_le_bytes());
    h.update(meta.uid().to_le_bytes());
    h.update(meta.gid().to_le_bytes());
    let ft = meta.file_type();
    if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(p)
            .at("read directory", p)?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for n in names {
            let r = if rel.is_empty() {
                n.to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", n.to_string_lossy())
            };
            if skip(&r) {
                continue;
            }
            let cp = p.join(&n);
            let m = fs::symlink_metadata(&cp).at("stat", &cp)?;
            hash_entry(&cp, &m, &r, skip, h)?;
        }
    } else if ft.is_symlink() {
        let t = fs::read_link(p).at("read link", p)?;
        h.update(t.to_string_lossy().as_bytes());
    } else if ft.is_file() {
        use std::io::Read;
        let mut f = fs::File::open(p).at("read", p)?;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = f.read(&mut buf).at("read", p)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    h.update([1]);
    Ok(())
}

/// Whether `p` is a tar archive (plain, gzip or zstd) that ADD extracts.
fn is_archive(p: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = fs::File::open(p) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return false,
        }
    }
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return true;
    }
    n == 512 && &head[257..262] == b"ustar"
}

/// Parses a Go duration (`30s`, `1m30s`, `500ms`, `1h`) into nanoseconds.
fn parse_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn rfc3339() {
        std::env::set_var("SOURCE_DATE_EPOCH", "86400");
        assert_eq!(now_rfc3339(), "1970-01-02T00:00:00Z");
        std::env::set_var("SOURCE_DATE_EPOCH", "1700000000");
        assert_eq!(now_rfc3339(), "2023-11-14T22:13:20Z");
        std::env::remove_var("SOURCE_DATE_EPOCH");
    }
}
