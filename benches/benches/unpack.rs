//! The "unpack" benchmark: kcore-image layer unpacking against GNU tar and
//! umoci, on the same generated layer, in the same run.
//!
//! The fixture is generated (fixed seed, never downloaded): about 40,000
//! entries and ~750 MB (dirs, files of skewed sizes, half text-like and half
//! random content, symlinks, hardlinks), written as .tar, .tar.gz and
//! .tar.zst, plus a 5-layer gzip image of the same kind. It is cached in
//! `$KCORE_BENCH_DIR` (default `/var/tmp/kcore-bench-unpack`);
//! `KCORE_BENCH_SCALE` (default 1.0) scales entry count and size.
//!
//! 1. Criterion measures kcore alone (tar, zstd, gzip) on a layer a tenth
//!    that size, for regression tracking.
//! 2. The comparison runs `KCORE_BENCH_ROUNDS` (default 3) rounds on the big
//!    layer; in each round every tool extracts once, interleaved (GNU
//!    `tar -xf`, `zstd -dc | tar -x`, `tar -xzf`, `umoci raw unpack`, kcore
//!    for each codec, then the 5-layer image serially and with 2 jobs, each
//!    with the default helper threads per layer and with one thread per
//!    layer, `UnpackOptions::threads(0)`), so a busy machine slows them
//!    alike. Every run extracts into a fresh directory on the same
//!    filesystem; trees are removed only at the end: ext4 without a journal
//!    skips inodes freed in the last minute (five while their inode table
//!    block is dirty) when it allocates new ones, scanning past each of
//!    them, so creating files right after a large `rm -rf` is several times
//!    slower (leave a few minutes between runs).
//! 3. A summary prints the medians, every run, the ratios the issue asks
//!    for, the peak RSS of one run of each tool (GNU time), and the CPU
//!    time and CPU utilisation (CPU / wall) of the 5-layer runs.
//!
//! `KCORE_BENCH_ONLY=image5` runs only the 5-layer cases, printing wall
//! and CPU time of each run (see [`only_image5`]).
//!
//! Needs root (5-layer case: kcore-overlay layers; ownership) plus `tar`,
//! `zstd`, `umoci` and `time`, and ~30 GB free at full scale.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use kcore_image::{unpack_layer, Digest, ImageStore, ImportOptions, UnpackOptions};
use kcore_overlay::LayerStore;

const FIXTURE_VERSION: u32 = 1;
const MTIME: u64 = 1_700_000_000;

static TIMES: Mutex<BTreeMap<String, Vec<Duration>>> = Mutex::new(BTreeMap::new());
/// CPU time (user + system, all threads) of the in-process runs.
static CPU: Mutex<BTreeMap<String, Vec<Duration>>> = Mutex::new(BTreeMap::new());
static SEQ: AtomicU64 = AtomicU64::new(0);

/// xorshift64* — deterministic and fast.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const WORDS: &[&str] = &[
    "container",
    "layer",
    "overlay",
    "kernel",
    "namespace",
    "cgroup",
    "mount",
    "image",
    "digest",
    "manifest",
    "config",
    "registry",
    "static",
    "const",
    "return",
    "include",
    "function",
    "license",
    "copyright",
    "version",
    "lib",
    "usr",
    "share",
    "doc",
    "en_US",
    "locale",
    "python3",
    "site-packages",
    "__init__",
    "def",
    "class",
    "import",
    "0x7f",
];

/// File content: text-like runs mixed with random runs (compresses ~2-3x,
/// like real layers).
fn fill(rng: &mut Rng, size: usize, out: &mut Vec<u8>) {
    out.clear();
    while out.len() < size {
        let run = (64 + rng.below(4096) as usize).min(size - out.len());
        if rng.below(10) < 6 {
            let end = out.len() + run;
            while out.len() < end {
                let w = WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes();
                let take = w.len().min(end - out.len());
                out.extend_from_slice(&w[..take]);
                if out.len() < end {
                    out.push(if rng.below(8) == 0 { b'\n' } else { b' ' });
                }
            }
        } else {
            for _ in 0..run.div_ceil(8) {
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
            out.truncate(out.len().min(size));
        }
    }
    out.truncate(size);
}

fn file_size(rng: &mut Rng) -> usize {
    let p = rng.below(1000);
    (if p < 750 {
        rng.below(8 << 10)
    } else if p < 970 {
        (8 << 10) + rng.below(24 << 10)
    } else if p < 998 {
        (32 << 10) + rng.below(480 << 10)
    } else {
        (512 << 10) + rng.below(3584 << 10)
    }) as usize
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Write `entries` entries of a deterministic tree into `out`, with the
/// names prefixed by `prefix`. Returns the number of entries written.
fn write_tree(
    out: &mut tar::Builder<impl Write>,
    seed: u64,
    entries: usize,
    prefix: &str,
) -> usize {
    let mut rng = Rng(seed);
    let ndirs = (entries / 20).max(1);
    let nlinks = (entries / 40).max(1);
    let nfiles = entries - ndirs - 2 * nlinks;
    let mut dirs: Vec<String> = Vec::with_capacity(ndirs);
    let mut count = 0;
    for i in 0..ndirs {
        let name = if i < 8 || dirs.is_empty() {
            format!("{prefix}d{i}")
        } else {
            let parent = &dirs[rng.below(dirs.len() as u64) as usize];
            if parent.matches('/').count() > 5 {
                format!("{prefix}d{i}")
            } else {
                format!("{parent}/d{i}")
            }
        };
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        out.append_data(&mut h, format!("{name}/"), std::io::empty())
            .unwrap();
        dirs.push(name);
        count += 1;
    }
    let mut files: Vec<String> = Vec::with_capacity(nfiles);
    let mut buf = Vec::new();
    for i in 0..nfiles {
        let dir = &dirs[rng.below(dirs.len() as u64) as usize];
        let name = format!("{dir}/f{i}.dat");
        let size = file_size(&mut rng);
        fill(&mut rng, size, &mut buf);
        let mode = if rng.below(10) == 0 { 0o755 } else { 0o644 };
        let mut h = header(tar::EntryType::Regular, mode, size as u64);
        out.append_data(&mut h, &name, &buf[..]).unwrap();
        files.push(name);
        count += 1;
    }
    for i in 0..nlinks {
        let dir = &dirs[rng.below(dirs.len() as u64) as usize];
        let target = &files[rng.below(files.len() as u64) as usize];
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        out.append_link(&mut h, format!("{dir}/s{i}"), format!("/{target}"))
            .unwrap();
        let mut h = header(tar::EntryType::Link, 0o644, 0);
        out.append_link(&mut h, format!("{dir}/h{i}"), target)
            .unwrap();
        count += 2;
    }
    count
}

struct Fixture {
    dir: PathBuf,
    tar: PathBuf,
    gz: PathBuf,
    zst: PathBuf,
    diff_id: Digest,
    bytes: u64,
    entries: usize,
    /// OCI layout holding the single gzip layer (for umoci).
    umoci_layout: PathBuf,
    /// Image store holding the 5-layer image `five`.
    five_store: PathBuf,
}

fn compress_gz(src: &Path, dst: &Path) {
    let mut enc = flate2::write::GzEncoder::new(
        BufWriter::new(File::create(dst).unwrap()),
        flate2::Compression::default(),
    );
    std::io::copy(&mut File::open(src).unwrap(), &mut enc).unwrap();
    enc.finish().unwrap().flush().unwrap();
}

fn compress_zst(src: &Path, dst: &Path) {
    let mut enc =
        zstd::stream::write::Encoder::new(BufWriter::new(File::create(dst).unwrap()), 3).unwrap();
    std::io::copy(&mut File::open(src).unwrap(), &mut enc).unwrap();
    enc.finish().unwrap().flush().unwrap();
}

fn digest_file(p: &Path) -> Digest {
    let store_dir = p.with_extension("digest");
    if let Ok(s) = fs::read_to_string(&store_dir) {
        if let Ok(d) = s.trim().parse() {
            return d;
        }
    }
    let tmp = tempdir_in(p.parent().unwrap(), "hash");
    let cs = kcore_image::ContentStore::open(&tmp).unwrap();
    let (d, _) = cs.put_reader(File::open(p).unwrap(), None, None).unwrap();
    fs::remove_dir_all(&tmp).unwrap();
    fs::write(&store_dir, d.to_string()).unwrap();
    d
}

fn tempdir_in(base: &Path, tag: &str) -> PathBuf {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let p = base.join(format!("{tag}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p).unwrap();
    p
}

/// An OCI layout with one image `tag` made of the given gzip layers.
fn write_layout(dir: &Path, layers: &[(PathBuf, Digest)], tag: &str) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (path, diff_id) in layers {
        let d = digest_file(path);
        let dst = blobs.join(d.hex());
        if !dst.exists() {
            fs::hard_link(path, &dst)
                .or_else(|_| fs::copy(path, &dst).map(|_| ()))
                .unwrap();
        }
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d.to_string(),
            "size": fs::metadata(path).unwrap().len(),
        }));
        diff_ids.push(diff_id.to_string());
    }
    let put = |data: String| -> (Digest, usize) {
        let d = Digest::of(data.as_bytes());
        fs::write(blobs.join(d.hex()), &data).unwrap();
        (d, data.len())
    };
    let (cd, cl) = put(serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string());
    let (md, ml) = put(
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": cl},
            "layers": descs,
        })
        .to_string(),
    );
    fs::write(
        dir.join("index.json"),
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": md.to_string(), "size": ml,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        })
        .to_string(),
    )
    .unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn scale() -> f64 {
    std::env::var("KCORE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn fixture(scale: f64) -> Fixture {
    let base = PathBuf::from(
        std::env::var("KCORE_BENCH_DIR").unwrap_or_else(|_| "/var/tmp/kcore-bench-unpack".into()),
    );
    let entries = ((40_000.0 * scale) as usize).max(500);
    let dir = base.join(format!("fixture-v{FIXTURE_VERSION}-{entries}"));
    let tar = dir.join("layer.tar");
    let gz = dir.join("layer.tar.gz");
    let zst = dir.join("layer.tar.zst");
    let stamp = dir.join("complete");
    if !stamp.exists() {
        eprintln!("generating the fixture in {} (once)...", dir.display());
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut b = tar::Builder::new(BufWriter::new(File::create(&tar).unwrap()));
        let n = write_tree(&mut b, 0x6b63_6f72_6531, entries, "");
        b.into_inner().unwrap().flush().unwrap();
        fs::write(dir.join("entries"), n.to_string()).unwrap();
        compress_gz(&tar, &gz);
        compress_zst(&tar, &zst);
        // Five independent layers of a fifth of the entries each.
        let mut five = Vec::new();
        for i in 0..5u64 {
            let p = dir.join(format!("five-{i}.tar"));
            let mut b = tar::Builder::new(BufWriter::new(File::create(&p).unwrap()));
            write_tree(&mut b, 0x1000 + i, entries / 5, &format!("l{i}-"));
            b.into_inner().unwrap().flush().unwrap();
            let pgz = dir.join(format!("five-{i}.tar.gz"));
            compress_gz(&p, &pgz);
            five.push((pgz, digest_file(&p)));
            fs::remove_file(&p).unwrap();
        }
        let diff_id = digest_file(&tar);
        write_layout(&dir.join("umoci-layout"), &[(gz.clone(), diff_id)], "bench");
        write_layout(&dir.join("five-layout"), &five, "five");
        let store = ImageStore::open(dir.join("five-store")).unwrap();
        store
            .import_oci_layout(&dir.join("five-layout"), &ImportOptions::default())
            .unwrap();
        fs::write(&stamp, "ok").unwrap();
    }
    let entries: usize = fs::read_to_string(dir.join("entries"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Fixture {
        diff_id: digest_file(&tar),
        bytes: fs::metadata(&tar).unwrap().len(),
        entries,
        umoci_layout: dir.join("umoci-layout"),
        five_store: dir.join("five-store"),
        tar,
        gz,
        zst,
        dir,
    }
}

fn syncfs(dir: &Path) {
    let f = File::open(dir).unwrap();
    // SAFETY: syncfs takes a valid open fd and nothing else.
    unsafe {
        libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f));
    }
}

/// Read `path` (a file, or every file under a directory) so that every tool
/// starts with its input in the page cache: the extracted trees of earlier
/// runs push the fixture out of memory, and a cold read would measure the
/// disk instead of the unpacker.
fn warm(path: &Path) {
    if path.is_dir() {
        for e in fs::read_dir(path).unwrap() {
            warm(&e.unwrap().path());
        }
    } else if path.is_file() {
        std::io::copy(&mut File::open(path).unwrap(), &mut std::io::sink()).unwrap();
    }
}

fn run(cmd: &mut Command) {
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?} failed");
}

/// One extraction tool under test.
#[derive(Clone, Copy)]
enum Tool {
    Kcore(Codec),
    GnuTar(Codec),
    Umoci,
}

#[derive(Clone, Copy, Debug)]
enum Codec {
    Tar,
    Gzip,
    Zstd,
}

impl Tool {
    fn id(self) -> String {
        match self {
            Tool::Kcore(c) => format!("kcore/{c:?}").to_lowercase(),
            Tool::GnuTar(c) => format!("gnu-tar/{c:?}").to_lowercase(),
            Tool::Umoci => "umoci/gzip".into(),
        }
    }

    /// The input file this tool reads.
    fn input(self, fx: &Fixture) -> &Path {
        match self {
            Tool::Kcore(Codec::Tar) | Tool::GnuTar(Codec::Tar) => &fx.tar,
            Tool::Kcore(Codec::Zstd) | Tool::GnuTar(Codec::Zstd) => &fx.zst,
            // umoci's layout hard-links the same gzip blob.
            Tool::Kcore(Codec::Gzip) | Tool::GnuTar(Codec::Gzip) | Tool::Umoci => &fx.gz,
        }
    }

    /// Extract into the fresh directory `dest` (not existing yet).
    fn extract(self, fx: &Fixture, dest: &Path) {
        match self {
            Tool::Kcore(c) => {
                let src = match c {
                    Codec::Tar => &fx.tar,
                    Codec::Gzip => &fx.gz,
                    Codec::Zstd => &fx.zst,
                };
                let st = unpack_layer(
                    File::open(src).unwrap(),
                    None,
                    dest,
                    Some(&fx.diff_id),
                    &UnpackOptions::new(),
                )
                .unwrap();
                assert_eq!(st.entries as usize, fx.entries);
            }
            Tool::GnuTar(c) => {
                fs::create_dir(dest).unwrap();
                let d = dest.display();
                let script = match c {
                    Codec::Tar => format!("tar -xf {} -C {d}", fx.tar.display()),
                    Codec::Gzip => format!("tar -xzf {} -C {d}", fx.gz.display()),
                    Codec::Zstd => format!("zstd -dcq {} | tar -x -C {d}", fx.zst.display()),
                };
                run(Command::new("sh").args(["-ec", &script]));
            }
            Tool::Umoci => {
                run(Command::new("umoci")
                    .args(["raw", "unpack", "--image"])
                    .arg(format!("{}:bench", fx.umoci_layout.display()))
                    .arg(dest));
            }
        }
    }
}

fn record(id: &str, d: Duration) {
    TIMES
        .lock()
        .unwrap()
        .entry(id.to_owned())
        .or_default()
        .push(d);
}

/// Criterion: kcore on the small layer, each codec. Trees are removed at
/// the end of the run, never between measurements.
fn bench_layers(c: &mut Criterion, fx: &Fixture, work: &Path) {
    let mut g = c.benchmark_group("unpack");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .throughput(criterion::Throughput::Bytes(fx.bytes));
    for tool in [
        Tool::Kcore(Codec::Tar),
        Tool::Kcore(Codec::Zstd),
        Tool::Kcore(Codec::Gzip),
    ] {
        let id = format!("{}-{}", tool.id(), fx.entries);
        g.bench_function(&id, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dest = work.join(format!("c{}", SEQ.fetch_add(1, Ordering::Relaxed)));
                    let t = Instant::now();
                    tool.extract(fx, &dest);
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

/// The comparison on the big layer: rounds in which every tool runs once,
/// interleaved, so that a busy machine slows them alike. Each run extracts
/// into a fresh directory; trees are removed at the end.
fn compare(fx: &Fixture, rounds: usize, work: &Path) -> Vec<String> {
    let store = ImageStore::open(&fx.five_store).unwrap();
    let tools = [
        Tool::GnuTar(Codec::Tar),
        Tool::Kcore(Codec::Tar),
        Tool::GnuTar(Codec::Zstd),
        Tool::Kcore(Codec::Zstd),
        Tool::GnuTar(Codec::Gzip),
        Tool::Kcore(Codec::Gzip),
        Tool::Umoci,
    ];
    let mut loads = Vec::new();
    for round in 0..rounds {
        eprintln!("comparison round {}/{rounds}", round + 1);
        loads.push(load());
        for tool in tools {
            let dest = work.join(format!("t{}", SEQ.fetch_add(1, Ordering::Relaxed)));
            warm(tool.input(fx));
            syncfs(work);
            let t = Instant::now();
            tool.extract(fx, &dest);
            record(&tool.id(), t.elapsed());
        }
        for (id, jobs) in image5_modes() {
            let layers =
                LayerStore::open(work.join(format!("s{}", SEQ.fetch_add(1, Ordering::Relaxed))))
                    .unwrap();
            warm(&fx.five_store);
            syncfs(work);
            let (u0, s0) = cpu_times();
            let t = Instant::now();
            let u = store
                .unpack("five", &layers, &image5_options(id), jobs)
                .unwrap();
            record(id, t.elapsed());
            let (u1, s1) = cpu_times();
            CPU.lock()
                .unwrap()
                .entry(id.to_owned())
                .or_default()
                .push(u1 - u0 + (s1 - s0));
            assert_eq!(u.unpacked, 5);
        }
    }
    loads.push(load());
    loads
}

/// The 5-layer cases: (id, layers unpacked at a time). `serial` and
/// `parallel` use the default helper threads per layer (a decoder and 3
/// writers); `*-1thread` unpack each layer on one thread
/// (`UnpackOptions::threads(0)`).
fn image5_modes() -> Vec<(&'static str, usize)> {
    vec![
        ("image5/serial", 1),
        ("image5/parallel", 2),
        ("image5/serial-1thread", 1),
        ("image5/parallel-1thread", 2),
    ]
}

/// The unpack options of a 5-layer case.
fn image5_options(id: &str) -> UnpackOptions {
    if id.ends_with("-1thread") {
        UnpackOptions::new().threads(0)
    } else {
        UnpackOptions::new()
    }
}

fn median(v: &[Duration]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s: Vec<f64> = v.iter().map(Duration::as_secs_f64).collect();
    s.sort_by(f64::total_cmp);
    Some(if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    })
}

/// Peak RSS (KiB) of one run of `tool`, measured by GNU time around a
/// child process (measuring from this process would count its own RSS: a
/// forked child inherits the parent's high-water mark).
fn peak_rss(fx: &Fixture, tool: &str) -> Option<i64> {
    let dest = fx
        .dir
        .join(format!("rss-{}", SEQ.fetch_add(1, Ordering::Relaxed)));
    let exe = std::env::current_exe().ok()?;
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(exe)
        .env("KCORE_BENCH_CHILD", tool)
        .env("KCORE_BENCH_DEST", &dest)
        .stdout(std::process::Stdio::null())
        .output()
        .ok()?;
    let _ = Command::new("rm").arg("-rf").arg(&dest).status();
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()?
        .trim()
        .parse()
        .ok()
}

/// Child mode: one extraction, for peak-RSS measurement. GNU tar and umoci
/// are exec'd (not spawned) so the measured process is the tool itself.
fn child_mode(tool: &str) {
    let fx = fixture(scale());
    let dest = PathBuf::from(std::env::var("KCORE_BENCH_DEST").unwrap());
    let t = match tool {
        "kcore/tar" => Tool::Kcore(Codec::Tar),
        "kcore/zstd" => Tool::Kcore(Codec::Zstd),
        "kcore/gzip" => Tool::Kcore(Codec::Gzip),
        "gnu-tar/tar" => Tool::GnuTar(Codec::Tar),
        "gnu-tar/zstd" => Tool::GnuTar(Codec::Zstd),
        "gnu-tar/gzip" => Tool::GnuTar(Codec::Gzip),
        _ => Tool::Umoci,
    };
    use std::os::unix::process::CommandExt;
    let d = dest.display();
    let err = match t {
        Tool::Kcore(_) => {
            t.extract(&fx, &dest);
            return;
        }
        Tool::GnuTar(c) => {
            fs::create_dir(&dest).unwrap();
            let script = match c {
                Codec::Tar => format!("exec tar -xf {} -C {d}", fx.tar.display()),
                Codec::Gzip => format!("exec tar -xzf {} -C {d}", fx.gz.display()),
                Codec::Zstd => format!("zstd -dcq {} | tar -x -C {d}", fx.zst.display()),
            };
            Command::new("sh").args(["-ec", &script]).exec()
        }
        Tool::Umoci => Command::new("umoci")
            .args(["raw", "unpack", "--image"])
            .arg(format!("{}:bench", fx.umoci_layout.display()))
            .arg(&dest)
            .exec(),
    };
    panic!("exec failed: {err}");
}

/// The 1-minute load average, to print next to the numbers.
fn load() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn summary(fx: &Fixture, loads: &[String]) {
    let times = TIMES.lock().unwrap().clone();
    let m = |id: &str| median(times.get(id).map(Vec::as_slice).unwrap_or(&[]));
    println!();
    println!(
        "== unpack summary: {} entries, {:.0} MB tar, {:.0} MB gzip, {:.0} MB zstd ==",
        fx.entries,
        fx.bytes as f64 / 1e6,
        fs::metadata(&fx.gz).map(|m| m.len()).unwrap_or(0) as f64 / 1e6,
        fs::metadata(&fx.zst).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
    );
    println!(
        "load average (1 min) at the start of each round and at the end: {}",
        loads.join(" ")
    );
    println!(
        "{:<24} {:>10} {:>10} {:>14}   all runs (s)",
        "case", "median s", "samples", "peak RSS MiB"
    );
    for (id, v) in &times {
        let rss = if id.starts_with("image5") {
            None
        } else {
            peak_rss(fx, id)
        };
        let all: Vec<String> = v
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect();
        println!(
            "{:<24} {:>10.3} {:>10} {:>14}   {}",
            id,
            median(v).unwrap_or(f64::NAN),
            v.len(),
            rss.map(|k| format!("{:.1}", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into()),
            all.join(" ")
        );
    }
    // The ratio of the medians, and the median of the per-round ratios
    // (both tools ran back to back in each round, so a load spike from
    // other work on the machine hits a pair rather than one side).
    let ratio = |label: &str, num: &str, den: &str, target: &str| {
        if let (Some(a), Some(b)) = (m(num), m(den)) {
            let per_round: Vec<Duration> = match (times.get(num), times.get(den)) {
                (Some(x), Some(y)) => x
                    .iter()
                    .zip(y)
                    .map(|(a, b)| Duration::from_secs_f64(a.as_secs_f64() / b.as_secs_f64()))
                    .collect(),
                _ => Vec::new(),
            };
            let rounds: Vec<String> = per_round
                .iter()
                .map(|r| format!("{:.2}", r.as_secs_f64()))
                .collect();
            println!(
                "{label:<44} {:>10.2} {:>16.2}   (target {target})   per round: {}",
                a / b,
                median(&per_round).unwrap_or(f64::NAN),
                rounds.join(" ")
            );
        }
    };
    println!();
    println!(
        "{:<44} {:>10} {:>16}",
        "ratio", "of medians", "median of rounds"
    );
    ratio(
        "kcore zstd / gnu tar -xf (plain)",
        "kcore/zstd",
        "gnu-tar/tar",
        "<= 1.05",
    );
    ratio(
        "gnu tar -xzf / kcore gzip (speed-up)",
        "gnu-tar/gzip",
        "kcore/gzip",
        ">= 1.5",
    );
    ratio(
        "umoci raw unpack / kcore gzip (speed-up)",
        "umoci/gzip",
        "kcore/gzip",
        ">= 3",
    );
    ratio(
        "zstd -dc | tar -x / kcore zstd (speed-up)",
        "gnu-tar/zstd",
        "kcore/zstd",
        "-",
    );
    ratio(
        "gnu tar -xf / kcore tar (speed-up)",
        "gnu-tar/tar",
        "kcore/tar",
        "-",
    );
    ratio(
        "5 layers: serial / parallel (speed-up)",
        "image5/serial",
        "image5/parallel",
        ">= 1.5",
    );
    ratio(
        "5 layers: single-threaded serial / parallel",
        "image5/serial-1thread",
        "image5/parallel",
        "-",
    );
    ratio(
        "5 layers, 1 thread/layer: serial / parallel",
        "image5/serial-1thread",
        "image5/parallel-1thread",
        "-",
    );
    // How much of the 2 CPUs each 5-layer mode keeps busy: a mode near
    // the CPU count cannot get faster by running more at once.
    let cpu = CPU.lock().unwrap().clone();
    println!();
    println!(
        "{:<24} {:>10} {:>16} {:>10}   CPU s of every run (user + sys)",
        "5 layers", "median s", "median CPU s", "CPU/wall"
    );
    for (id, v) in &cpu {
        let (Some(c), Some(w)) = (median(v), m(id)) else {
            continue;
        };
        let all: Vec<String> = v
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect();
        println!(
            "{id:<24} {w:>10.3} {c:>16.3} {:>10.2}   {}",
            c / w,
            all.join(" ")
        );
    }
}

/// CPU time (user, system) used so far by this process, all its threads
/// included (joined threads too).
fn cpu_times() -> (Duration, Duration) {
    // SAFETY: getrusage fills the zeroed struct it is given and nothing else.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// `KCORE_BENCH_ONLY=image5` (or one case, e.g. `image5/parallel`): only
/// the 5-layer cases, no criterion, no other tool; `KCORE_BENCH_ROUNDS`
/// rounds (default 3), each mode once per round, into fresh trees. Prints
/// wall time, user and system CPU and the CPU utilisation (CPU / wall) of
/// every run: a quick loop for profiling (`perf record`) and tuning. The
/// trees are removed at the end unless `KCORE_BENCH_KEEP` is set.
fn only_image5(which: &str) {
    let fx = fixture(scale());
    let work = fx.dir.join(format!("work-{}", std::process::id()));
    fs::create_dir_all(&work).unwrap();
    let rounds: usize = std::env::var("KCORE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let store = ImageStore::open(&fx.five_store).unwrap();
    let modes: Vec<(&str, usize)> = image5_modes()
        .into_iter()
        .filter(|(id, _)| which == "image5" || *id == which)
        .collect();
    assert!(!modes.is_empty(), "unknown KCORE_BENCH_ONLY={which}");
    println!(
        "{:<22} {:>7} {:>7} {:>7} {:>6} {:>6}",
        "case", "wall s", "user s", "sys s", "util", "load"
    );
    for _ in 0..rounds {
        for &(id, jobs) in &modes {
            let layers =
                LayerStore::open(work.join(format!("s{}", SEQ.fetch_add(1, Ordering::Relaxed))))
                    .unwrap();
            warm(&fx.five_store);
            syncfs(&work);
            let l = load();
            let (u0, s0) = cpu_times();
            let t = Instant::now();
            let u = store
                .unpack("five", &layers, &image5_options(id), jobs)
                .unwrap();
            let wall = t.elapsed().as_secs_f64();
            let (u1, s1) = cpu_times();
            assert_eq!(u.unpacked, 5);
            let (user, sys) = ((u1 - u0).as_secs_f64(), (s1 - s0).as_secs_f64());
            println!(
                "{id:<22} {wall:>7.3} {user:>7.3} {sys:>7.3} {:>6.2} {l:>6}",
                (user + sys) / wall
            );
        }
    }
    if std::env::var_os("KCORE_BENCH_KEEP").is_some() {
        // Back-to-back profiling runs: ext4 without a journal skips inodes
        // freed in the last ~30 s when it allocates new ones, so creating
        // files right after a big removal is much slower.
        eprintln!("trees kept in {}", work.display());
    } else {
        remove_trees(&work);
    }
}

fn main() {
    if let Ok(tool) = std::env::var("KCORE_BENCH_CHILD") {
        child_mode(&tool);
        return;
    }
    if let Ok(which) = std::env::var("KCORE_BENCH_ONLY") {
        only_image5(&which);
        return;
    }
    let scale = scale();
    let big = fixture(scale);
    let small = fixture(scale / 10.0);
    let work = big.dir.join(format!("work-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();
    let mut c = Criterion::default().configure_from_args();
    bench_layers(&mut c, &small, &work);
    c.final_summary();
    let rounds = std::env::var("KCORE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let loads = compare(&big, rounds, &work);
    summary(&big, &loads);
    eprintln!("removing the extracted trees...");
    remove_trees(&work);
}

/// Remove `dir` and everything in it, several trees at once: on a file
/// system mounted with `discard` every freed extent waits for its discard,
/// and one `rm -rf` of ~20 GB takes many minutes where a few in parallel
/// keep the device busier.
fn remove_trees(dir: &Path) {
    let trees: Vec<PathBuf> = fs::read_dir(dir)
        .map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    for group in trees.chunks(4) {
        let children: Vec<_> = group
            .iter()
            .map(|t| Command::new("rm").arg("-rf").arg(t).spawn().unwrap())
            .collect();
        for mut c in children {
            let st = c.wait().unwrap();
            assert!(st.success(), "rm -rf failed");
        }
    }
    run(Command::new("rm").arg("-rf").arg(dir));
}
