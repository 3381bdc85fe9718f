//! Layer unpacking: content, metadata, compression, whiteouts, flatten mode,
//! and one test per escape route.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::{gzip, zstd, Layer, TempDir, MTIME};
use kcore_image::{
    apply_layer, unpack_layer, DevicePolicy, Digest, Error, UnpackOptions, Whiteouts,
};

fn opts() -> UnpackOptions {
    UnpackOptions::new()
}

fn sample() -> Vec<u8> {
    Layer::new()
        .dir("etc/", 0o755)
        .file("etc/hosts", 0o644, b"127.0.0.1 localhost\n")
        .dir("bin/", 0o755)
        .file("bin/tool", 0o4755, b"\x7fELF...")
        .symlink("bin/sh", "tool")
        .hardlink("bin/tool2", "bin/tool")
        .file("deep/missing/parent/file", 0o600, b"x")
        .dir("ro/", 0o555)
        .file("ro/inside", 0o444, b"ro")
        .fifo("run/pipe")
        .tar()
}

#[test]
fn unpacks_content_and_metadata_and_reports_diff_id() {
    let t = TempDir::new("basic");
    let dest = t.path().join("layer");
    let tar = sample();
    let st = unpack_layer(&tar[..], None, &dest, Some(&Digest::of(&tar)), &opts()).unwrap();
    assert_eq!(st.diff_id, Digest::of(&tar));
    assert_eq!(st.tar_bytes, tar.len() as u64);
    assert_eq!(st.entries, 10);

    assert_eq!(
        fs::read(dest.join("etc/hosts")).unwrap(),
        b"127.0.0.1 localhost\n"
    );
    assert_eq!(
        fs::read_link(dest.join("bin/sh")).unwrap(),
        Path::new("tool")
    );
    let a = fs::metadata(dest.join("bin/tool")).unwrap();
    let b = fs::metadata(dest.join("bin/tool2")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hardlink shares the inode");
    assert_eq!(a.mode() & 0o7777, 0o4755, "setuid bit kept");
    assert_eq!(
        fs::read(dest.join("deep/missing/parent/file")).unwrap(),
        b"x"
    );
    assert!(fs::metadata(dest.join("run/pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    let ro = fs::metadata(dest.join("ro")).unwrap();
    assert_eq!(ro.mode() & 0o777, 0o555);
    // Directory mtimes are set after their children were created.
    assert_eq!(ro.mtime(), MTIME as i64);
    assert_eq!(
        fs::metadata(dest.join("etc")).unwrap().mtime(),
        MTIME as i64
    );
    assert_eq!(
        fs::symlink_metadata(dest.join("bin/sh")).unwrap().mtime(),
        MTIME as i64
    );
    assert_eq!(a.mtime(), MTIME as i64);
}

#[test]
fn gzip_and_zstd_give_the_same_tree_and_diff_id() {
    let tar = sample();
    let t = TempDir::new("codecs");
    let plain = unpack_layer(&tar[..], None, &t.path().join("p"), None, &opts()).unwrap();
    // The media type is only a hint: a wrong one does not matter.
    let gz = unpack_layer(
        &gzip(&tar)[..],
        Some("application/vnd.oci.image.layer.v1.tar"),
        &t.path().join("g"),
        Some(&plain.diff_id),
        &opts(),
    )
    .unwrap();
    let zs = unpack_layer(
        &zstd(&tar)[..],
        Some("application/vnd.oci.image.layer.v1.tar+zstd"),
        &t.path().join("z"),
        Some(&plain.diff_id),
        &opts(),
    )
    .unwrap();
    assert_eq!(gz, plain);
    assert_eq!(zs, plain);
    for d in ["g", "z"] {
        assert_eq!(
            fs::read(t.path().join(d).join("bin/tool")).unwrap(),
            b"\x7fELF..."
        );
    }
}

#[test]
fn ownership_is_kept_and_setuid_survives_chown() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tar = Layer::new()
        .file_owned("suid", 0o6755, b"#!", 1234, 2345)
        .tar();
    let t = TempDir::new("owner");
    let dest = t.path().join("l");
    unpack_layer(&tar[..], None, &dest, None, &opts().same_owner(true)).unwrap();
    let m = fs::metadata(dest.join("suid")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 2345));
    assert_eq!(m.mode() & 0o7777, 0o6755);
}

#[test]
fn filtered_xattrs_and_pax_mtime() {
    let tar = Layer::new()
        .file_with_pax(
            "x",
            b"data",
            &[
                ("SCHILY.xattr.user.kcore", b"yes"),
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                ("mtime", b"1600000123.25"),
            ],
        )
        .tar();
    let t = TempDir::new("xattr");
    let dest = t.path().join("l");
    unpack_layer(&tar[..], None, &dest, None, &opts()).unwrap();
    let m = fs::metadata(dest.join("x")).unwrap();
    assert_eq!(m.mtime(), 1_600_000_123);
    assert_eq!(m.mtime_nsec(), 250_000_000);
    let mut buf = [0u8; 16];
    let f = fs::File::open(dest.join("x")).unwrap();
    // user.* is kept where the filesystem supports it (tmpfs and ext4 do).
    if let Ok(n) = rustix::fs::fgetxattr(&f, "user.kcore", &mut buf) {
        assert_eq!(&buf[..n], b"yes");
    }
    // An overlay xattr smuggled in a layer is never applied.
    assert!(rustix::fs::fgetxattr(&f, "trusted.overlay.opaque", &mut buf).is_err());
}

fn assert_refused(tar: &[u8], what: &str) -> Error {
    assert_refused_with(tar, what, &opts())
}

fn assert_refused_with(tar: &[u8], what: &str, o: &UnpackOptions) -> Error {
    let t = TempDir::new("refuse");
    let dest = t.path().join("l");
    let err = unpack_layer(tar, None, &dest, None, o).expect_err(what);
    assert!(
        !dest.exists(),
        "{what}: a failed layer leaves nothing behind"
    );
    err
}

#[test]
fn escape_dotdot_is_refused() {
    let tar = Layer::new().file("a/../../../escaped", 0o644, b"x").tar();
    let err = assert_refused(&tar, "dotdot");
    match err {
        Error::UnsafeEntry { entry, .. } => assert_eq!(entry, Path::new("a/../../../escaped")),
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn escape_absolute_path_is_confined() {
    let t = TempDir::new("abs");
    let outside = t.path().join("outside");
    let dest = t.path().join("l");
    let abs = format!("{}/pwned", outside.display());
    let tar = Layer::new().file(&abs, 0o644, b"x").tar();
    unpack_layer(&tar[..], None, &dest, None, &opts()).unwrap();
    assert!(!outside.exists());
    assert!(dest.join(abs.trim_start_matches('/')).is_file());
}

#[test]
fn escape_through_absolute_symlink_is_confined() {
    let t = TempDir::new("symabs");
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let dest = t.path().join("l");
    let tar = Layer::new()
        .symlink("link", outside.to_str().unwrap())
        .file("link/pwned", 0o644, b"x")
        .tar();
    // Either refused or written inside the root: never outside.
    let _ = unpack_layer(&tar[..], None, &dest, None, &opts());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn escape_through_relative_symlink_is_confined() {
    let t = TempDir::new("symrel");
    let dest = t.path().join("l");
    let tar = Layer::new()
        .dir("a/", 0o755)
        .symlink("a/up", "../../../../../..")
        .file("a/up/pwned", 0o644, b"x")
        .tar();
    unpack_layer(&tar[..], None, &dest, None, &opts()).unwrap();
    // `..` stops at the layer root: the file lands at the root of the layer.
    assert!(dest.join("pwned").is_file());
    assert!(!t.path().join("pwned").exists());
}

#[test]
fn escape_writing_through_an_existing_symlink_replaces_it() {
    let t = TempDir::new("through");
    let victim = t.path().join("victim");
    fs::write(&victim, b"original").unwrap();
    let dest = t.path().join("l");
    let tar = Layer::new()
        .symlink("f", victim.to_str().unwrap())
        .file("f", 0o644, b"overwritten?")
        .tar();
    unpack_layer(&tar[..], None, &dest, None, &opts()).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"original");
    assert_eq!(fs::read(dest.join("f")).unwrap(), b"overwritten?");
    assert!(fs::symlink_metadata(dest.join("f")).unwrap().is_file());
}

#[test]
fn escape_hardlink_to_absolute_outside_path_is_refused() {
    let t = TempDir::new("hlabs");
    let secret = t.path().join("secret");
    fs::write(&secret, b"s").unwrap();
    let tar = Layer::new().hardlink("h", secret.to_str().unwrap()).tar();
    let err = assert_refused(&tar, "hardlink to an outside absolute path");
    assert!(matches!(err, Error::Entry { .. }), "{err}");
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
}

#[test]
fn escape_hardlink_with_dotdot_is_refused() {
    let tar = Layer::new().hardlink("h", "../../etc/passwd").tar();
    let err = assert_refused(&tar, "hardlink with ..");
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
}

#[test]
fn escape_hardlink_through_symlink_is_refused() {
    let t = TempDir::new("hlsym");
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"s").unwrap();
    let tar = Layer::new()
        .symlink("ln", outside.to_str().unwrap())
        .hardlink("h", "ln/secret")
        .tar();
    assert_refused(&tar, "hardlink through a symlink");
    assert_eq!(fs::metadata(outside.join("secret")).unwrap().nlink(), 1);
}

#[test]
fn escape_symlink_swapped_in_during_extraction_is_confined() {
    // A racer keeps swapping the directory being filled for a symlink that
    // points outside. Whatever the interleaving, nothing lands outside.
    let t = TempDir::new("race");
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let dest = t.path().join("l");
    fs::create_dir(&dest).unwrap();
    let mut layer = Layer::new().dir("d/", 0o755);
    for i in 0..3000 {
        layer = layer.file(&format!("d/f{i}"), 0o644, b"data");
    }
    let tar = layer.tar();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let d = dest.join("d");
            let real = dest.join("d.real");
            for _ in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if fs::rename(&d, &real).is_ok() {
                    let _ = std::os::unix::fs::symlink(&outside, &d);
                    std::thread::yield_now();
                    let _ = fs::remove_file(&d);
                    let _ = fs::rename(&real, &d);
                }
            }
        });
        let _ = apply_layer(&tar[..], None, &dest, None, &opts());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing escaped"
    );
}

#[test]
fn devices_follow_the_policy() {
    let tar = Layer::new()
        .chardev("dev/null", 1, 3)
        .file("keep", 0o644, b"k")
        .tar();
    let err = assert_refused_with(
        &tar,
        "devices rejected",
        &opts().devices(DevicePolicy::Reject),
    );
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    let t = TempDir::new("dev");
    let st = unpack_layer(
        &tar[..],
        None,
        &t.path().join("skip"),
        None,
        &opts().devices(DevicePolicy::Skip),
    )
    .unwrap();
    assert!(!t.path().join("skip/dev/null").exists());
    assert!(t.path().join("skip/keep").exists());
    // A skipped node is a recorded warning, naming it.
    assert_eq!(st.warnings.len(), 1, "{:?}", st.warnings);
    assert!(st.warnings[0].contains("dev/null"), "{:?}", st.warnings);
    // The default: created as root, skipped with a warning otherwise.
    let d = t.path().join("default");
    let st = unpack_layer(&tar[..], None, &d, None, &opts()).unwrap();
    if common::is_root() {
        let m = fs::metadata(d.join("dev/null")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), rustix::fs::makedev(1, 3));
        assert!(st.warnings.is_empty(), "{:?}", st.warnings);
    } else {
        assert!(!d.join("dev/null").exists());
        assert_eq!(st.warnings.len(), 1, "{:?}", st.warnings);
    }
    if common::is_root() {
        let d = t.path().join("create");
        unpack_layer(
            &tar[..],
            None,
            &d,
            None,
            &opts().devices(DevicePolicy::Create),
        )
        .unwrap();
        let m = fs::metadata(d.join("dev/null")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), rustix::fs::makedev(1, 3));
    }
}

#[test]
fn limits_name_the_entry_and_leave_nothing() {
    let tar = Layer::new()
        .file("a", 0o644, b"1")
        .file("b", 0o644, b"22")
        .file("c", 0o644, b"3")
        .tar();
    let t = TempDir::new("limits");
    let dest = t.path().join("l");
    let err = unpack_layer(&tar[..], None, &dest, None, &opts().max_entries(2)).unwrap_err();
    match err {
        Error::LimitExceeded { entry, .. } => assert_eq!(entry, Path::new("c")),
        e => panic!("unexpected {e}"),
    }
    assert!(!dest.exists());
    // Each small file takes a 4 KiB block of the budget.
    let err = unpack_layer(&tar[..], None, &dest, None, &opts().max_bytes(8192)).unwrap_err();
    match err {
        Error::BudgetExceeded {
            entry,
            needed,
            allocated,
            budget,
        } => {
            assert_eq!(entry, Path::new("c"));
            assert_eq!((needed, allocated, budget), (4096, 8192, 8192));
        }
        e => panic!("unexpected {e}"),
    }
    assert!(!dest.exists());
}

#[test]
fn wrong_diff_id_is_rejected_and_removed() {
    let tar = sample();
    let t = TempDir::new("diffid");
    let dest = t.path().join("l");
    let err = unpack_layer(
        &gzip(&tar)[..],
        None,
        &dest,
        Some(&Digest::of(b"nope")),
        &opts(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(!dest.exists());
}

#[test]
fn corrupt_compressed_stream_is_an_error() {
    let mut gz = gzip(&sample());
    let n = gz.len();
    gz[n / 2] ^= 0xff;
    gz[n / 2 + 1] ^= 0xff;
    let t = TempDir::new("corrupt");
    let dest = t.path().join("l");
    assert!(unpack_layer(&gz[..], None, &dest, None, &opts()).is_err());
    assert!(!dest.exists());
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let f = fs::File::open(p).ok()?;
    let mut buf = [0u8; 64];
    let n = rustix::fs::fgetxattr(&f, name, &mut buf).ok()?;
    Some(buf[..n].to_vec())
}

#[test]
#[ignore = "needs root"]
fn overlay_whiteouts() {
    let tar = Layer::new()
        .file(".wh.gone", 0o644, b"")
        .dir("opaque/", 0o755)
        .file("opaque/.wh..wh..opq", 0o644, b"")
        .file("opaque/new", 0o644, b"n")
        // Whiteout, then re-create in the same layer.
        .file(".wh.again", 0o644, b"")
        .dir("again/", 0o755)
        .file("again/x", 0o644, b"x")
        .file(".wh.file", 0o644, b"")
        .file("file", 0o644, b"f")
        // A whiteout after a same-layer directory makes it opaque.
        .dir("later/", 0o755)
        .file(".wh.later", 0o644, b"")
        .tar();
    let t = TempDir::new("wh");
    let d = t.path().join("l");
    unpack_layer(
        &tar[..],
        None,
        &d,
        None,
        &opts().whiteouts(Whiteouts::Overlay),
    )
    .unwrap();
    let m = fs::symlink_metadata(d.join("gone")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    assert!(!d.join(".wh.gone").exists());
    assert_eq!(
        xattr(&d.join("opaque"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(d.join("opaque/new").is_file());
    assert!(!d.join("opaque/.wh..wh..opq").exists());
    assert!(fs::symlink_metadata(d.join("again")).unwrap().is_dir());
    assert_eq!(
        xattr(&d.join("again"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(d.join("again/x").is_file());
    assert!(fs::symlink_metadata(d.join("file")).unwrap().is_file());
    assert_eq!(
        xattr(&d.join("later"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
}

#[test]
fn flatten_applies_whiteouts_onto_lower_layers() {
    let l1 = Layer::new()
        .dir("a/", 0o755)
        .file("a/old", 0o644, b"o")
        .file("b", 0o644, b"b")
        .dir("c/", 0o755)
        .file("c/keep", 0o644, b"k")
        .dir("d/", 0o755)
        .file("d/old", 0o644, b"o")
        .tar();
    let l2 = Layer::new()
        .dir("a/", 0o755)
        .file("a/.wh..wh..opq", 0o644, b"")
        .file("a/new", 0o644, b"n")
        .file(".wh.b", 0o644, b"")
        .file("c/more", 0o644, b"m")
        .file(".wh.d", 0o644, b"")
        .dir("d/", 0o755)
        .file("d/fresh", 0o644, b"f")
        .tar();
    let t = TempDir::new("flat");
    let root = t.path().join("rootfs");
    let o = opts().whiteouts(Whiteouts::Apply);
    unpack_layer(&l1[..], None, &root, None, &o).unwrap();
    apply_layer(&l2[..], None, &root, None, &o).unwrap();
    assert!(!root.join("a/old").exists());
    assert!(root.join("a/new").is_file());
    assert!(!root.join("b").exists());
    assert!(!root.join(".wh.b").exists());
    assert!(root.join("c/keep").is_file() && root.join("c/more").is_file());
    assert!(!root.join("d/old").exists());
    assert!(root.join("d/fresh").is_file());
    assert_eq!(
        fs::metadata(root.join("a")).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

#[test]
fn flatten_whiteout_of_a_symlink_then_a_directory_of_that_name() {
    // The upper layer first writes through the lower symlink (which
    // resolves inside the root), then whites the symlink out and makes a
    // real directory of that name: later entries must land in the new
    // directory, not where the symlink used to point.
    let l1 = Layer::new()
        .dir("real/", 0o755)
        .symlink("link", "real")
        .tar();
    let l2 = Layer::new()
        .file("link/pre", 0o644, b"p")
        .file(".wh.link", 0o644, b"")
        .dir("link/", 0o755)
        .file("link/post", 0o644, b"q")
        .tar();
    let t = TempDir::new("flat-link");
    let root = t.path().join("rootfs");
    let o = opts().whiteouts(Whiteouts::Apply);
    unpack_layer(&l1[..], None, &root, None, &o).unwrap();
    apply_layer(&l2[..], None, &root, None, &o).unwrap();
    assert_eq!(fs::read(root.join("real/pre")).unwrap(), b"p");
    let link = fs::symlink_metadata(root.join("link")).unwrap();
    assert!(link.is_dir(), "the symlink was replaced by a directory");
    assert_eq!(fs::read(root.join("link/post")).unwrap(), b"q");
    assert!(!root.join("real/post").exists());
}

#[test]
fn a_directory_replaced_by_a_symlink_is_resolved_afresh() {
    // Entries under "d" are written, "d" becomes a symlink to "e", and a
    // later "d/y" must follow the new symlink (inside the root).
    let tar = Layer::new()
        .dir("d/", 0o755)
        .file("d/x", 0o644, b"x")
        .dir("e/", 0o755)
        .symlink("d", "e")
        .file("d/y", 0o644, b"y")
        .tar();
    let t = TempDir::new("dir-to-link");
    let dest = t.path().join("layer");
    unpack_layer(&tar[..], None, &dest, None, &opts()).unwrap();
    assert_eq!(fs::read_link(dest.join("d")).unwrap(), Path::new("e"));
    assert_eq!(fs::read(dest.join("e/y")).unwrap(), b"y");
    assert!(!dest.join("e/x").exists());
}

#[test]
fn many_files_across_many_directories_keep_content_and_metadata() {
    // More files and directories than one writer batch and the directory
    // fd cache hold, in an order that jumps between directories.
    let mut layer = Layer::new();
    for d in 0..40 {
        layer = layer.dir(&format!("d{d}/"), 0o755);
    }
    let mut expect = Vec::new();
    for i in 0..1500u32 {
        let d = (i * 7) % 40;
        let mode = [0o644, 0o755, 0o600, 0o4755, 0o444][i as usize % 5];
        let data = vec![(i % 251) as u8; (i as usize * 37) % 3000];
        let name = format!("d{d}/f{i}");
        layer = layer.file(&name, mode, &data);
        expect.push((name, mode, data));
    }
    // One big file that spans several writer batches.
    let big: Vec<u8> = (0..3_500_000u32).map(|i| (i % 253) as u8).collect();
    layer = layer.file("d3/big", 0o640, &big);
    let tar = layer.tar();
    let t = TempDir::new("many");
    let dest = t.path().join("layer");
    let st = unpack_layer(&tar[..], None, &dest, Some(&Digest::of(&tar)), &opts()).unwrap();
    assert_eq!(st.entries, 40 + 1500 + 1);
    for (name, mode, data) in &expect {
        let p = dest.join(name);
        assert_eq!(&fs::read(&p).unwrap(), data, "{name}");
        let m = fs::metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o7777, *mode, "{name}");
        assert_eq!(m.mtime(), MTIME as i64, "{name}");
    }
    assert_eq!(fs::read(dest.join("d3/big")).unwrap(), big);
    assert_eq!(
        fs::metadata(dest.join("d3/big")).unwrap().mode() & 0o7777,
        0o640
    );
}

#[test]
fn same_layer_duplicates_and_replacements_keep_archive_order() {
    // Files are created by writer threads while the parser goes on; later
    // entries naming the same path must still see them, in archive order.
    let tar = Layer::new()
        .file("dup", 0o644, b"first")
        .file("dup", 0o600, b"second")
        .file("f", 0o644, b"target")
        .hardlink("h", "f")
        .file("x", 0o644, b"file first")
        .dir("x/", 0o755)
        .file("x/inner", 0o644, b"i")
        .file("w", 0o644, b"kept")
        .file(".wh.w", 0o644, b"")
        .file("s", 0o644, b"replaced by a symlink")
        .symlink("s", "f")
        .tar();
    let t = TempDir::new("dups");
    let dest = t.path().join("layer");
    unpack_layer(&tar[..], None, &dest, None, &opts()).unwrap();
    assert_eq!(fs::read(dest.join("dup")).unwrap(), b"second");
    assert_eq!(
        fs::metadata(dest.join("dup")).unwrap().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(dest.join("h")).unwrap().ino(),
        fs::metadata(dest.join("f")).unwrap().ino()
    );
    assert!(fs::symlink_metadata(dest.join("x")).unwrap().is_dir());
    assert_eq!(fs::read(dest.join("x/inner")).unwrap(), b"i");
    // A whiteout does not hide an entry of its own layer.
    assert_eq!(fs::read(dest.join("w")).unwrap(), b"kept");
    assert_eq!(fs::read_link(dest.join("s")).unwrap(), Path::new("f"));
}

/// Every entry under `root`, sorted: path, type, mode, size, mtime, inode
/// group (hardlinks share one), symlink target and content.
fn describe_tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, inodes: &mut Vec<u64>, out: &mut Vec<String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let group = match inodes.iter().position(|i| *i == m.ino()) {
                Some(g) => g,
                None => {
                    inodes.push(m.ino());
                    inodes.len() - 1
                }
            };
            let what = if m.is_dir() {
                "dir".to_owned()
            } else if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_file() {
                format!("{:?}", Digest::of(&fs::read(&p).unwrap()))
            } else {
                format!("{:?}", m.file_type())
            };
            let size = if m.is_dir() { 0 } else { m.len() };
            out.push(format!(
                "{rel} {:o} {size} {} inode#{group} {what}",
                m.mode(),
                m.mtime()
            ));
            if m.is_dir() {
                walk(root, &p, inodes, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut Vec::new(), &mut out);
    out
}

#[test]
fn every_thread_count_gives_the_same_tree_and_diff_id() {
    // The sample, same-layer replacements, and enough files and data for
    // several writer batches.
    let mut layer = Layer::new()
        .dir("etc/", 0o755)
        .file("etc/hosts", 0o644, b"127.0.0.1 localhost\n")
        .dir("bin/", 0o755)
        .file("bin/tool", 0o4755, b"\x7fELF...")
        .symlink("bin/sh", "tool")
        .hardlink("bin/tool2", "bin/tool")
        .dir("ro/", 0o555)
        .file("ro/inside", 0o444, b"ro")
        .dir("run/", 0o755)
        .fifo("run/pipe")
        .file("dup", 0o644, b"first")
        .file("dup", 0o600, b"second")
        .file("x", 0o644, b"file first")
        .dir("x/", 0o755)
        .file("x/inner", 0o644, b"i")
        .file("w", 0o644, b"kept")
        .file(".wh.w", 0o644, b"");
    // Every directory has an entry (an implicit one gets the current time).
    for d in 0..7 {
        layer = layer.dir(&format!("d{d}/"), 0o750);
    }
    for i in 0..300u32 {
        let data = vec![(i % 251) as u8; (i as usize * 97) % 9000];
        layer = layer.file(&format!("d{}/f{i}", i % 7), 0o644, &data);
    }
    let big: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
    let tar = layer.file("d1/big", 0o640, &big).tar();
    let gz = gzip(&tar);
    let t = TempDir::new("threads");
    let mut trees = Vec::new();
    for threads in [0, 1, 2, 4] {
        assert_eq!(opts().threads(threads).thread_count(), threads);
        for (codec, input) in [("tar", &tar), ("gzip", &gz)] {
            let dest = t.path().join(format!("{codec}-{threads}"));
            let o = opts().threads(threads);
            let st = unpack_layer(&input[..], None, &dest, Some(&Digest::of(&tar)), &o)
                .unwrap_or_else(|e| panic!("{codec}, {threads} threads: {e}"));
            assert_eq!(st.tar_bytes, tar.len() as u64);
            assert_eq!(st.entries, 17 + 7 + 300 + 1);
            trees.push((format!("{codec}, {threads} threads"), describe_tree(&dest)));
        }
    }
    let (first, want) = &trees[0];
    assert!(
        want.iter().any(|l| l.starts_with("dup 100600 6 ")),
        "{want:#?}"
    );
    assert!(
        want.iter().any(|l| l.starts_with("w 100644 4 ")),
        "{want:#?}"
    );
    for (which, tree) in &trees[1..] {
        let diff: Vec<_> = tree.iter().filter(|l| !want.contains(l)).collect();
        assert!(
            tree.len() == want.len() && diff.is_empty(),
            "{which} differs from {first}: {diff:#?}"
        );
    }
}

#[test]
fn one_thread_refuses_escapes_and_wrong_diff_ids_and_leaves_nothing() {
    let o = opts().threads(0);
    let tar = Layer::new().file("a/../../../escaped", 0o644, b"x").tar();
    let err = assert_refused_with(&tar, "dotdot", &o);
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    let tar = Layer::new()
        .symlink("link", "/")
        .hardlink("h", "link/etc/passwd")
        .tar();
    assert_refused_with(&tar, "hardlink through a symlink", &o);

    let t = TempDir::new("one-thread-diffid");
    let dest = t.path().join("l");
    let err = unpack_layer(
        &gzip(&sample())[..],
        None,
        &dest,
        Some(&Digest::of(b"nope")),
        &o,
    )
    .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(!dest.exists());
}

#[test]
fn long_names_and_links_in_every_tar_format() {
    // GNU tar writes them: ustar (prefix + name), GNU (L / K members) and
    // PAX (path / linkpath records).
    let t = TempDir::new("longnames");
    let src = t.path().join("src");
    let deep = format!("{}/{}", "d".repeat(60), "e".repeat(60));
    fs::create_dir_all(src.join(&deep)).unwrap();
    let file = format!("{deep}/{}", "f".repeat(40));
    fs::write(src.join(&file), b"long").unwrap();
    let target = format!("{}/{}", "t".repeat(80), "u".repeat(60));
    std::os::unix::fs::symlink(&target, src.join("link")).unwrap();
    for format in ["ustar", "gnu", "posix"] {
        let archive = t.path().join(format!("{format}.tar"));
        let mut args = vec![format!("--format={format}"), "-C".into()];
        if format == "ustar" {
            // ustar cannot hold a 141-byte link target.
            args.insert(0, "--exclude=./link".into());
        }
        args.push(src.to_str().unwrap().into());
        args.extend(["-cf".into(), archive.to_str().unwrap().into(), ".".into()]);
        let st = std::process::Command::new("tar")
            .args(&args)
            .status()
            .expect("GNU tar is needed for this test");
        assert!(st.success(), "{format}");
        let dest = t.path().join(format!("out-{format}"));
        let layer = fs::read(&archive).unwrap();
        unpack_layer(&layer[..], None, &dest, None, &opts())
            .unwrap_or_else(|e| panic!("{format}: {e:#?}"));
        assert_eq!(fs::read(dest.join(&file)).unwrap(), b"long", "{format}");
        if format != "ustar" {
            assert_eq!(
                fs::read_link(dest.join("link")).unwrap(),
                Path::new(&target),
                "{format}"
            );
        }
    }
}
