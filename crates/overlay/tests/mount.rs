//! Real overlayfs mounts and whiteouts: root only.

mod common;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::fd::AsFd;

use common::{mounts_under, overlay_available, read, TestDir};
use kcore_overlay::{
    is_opaque, is_opaque_fd, is_whiteout, is_whiteout_at, set_opaque, set_opaque_path, whiteout,
    whiteout_at, Error, LayerStore, MountOptions, MAX_DEPTH,
};

/// A fresh store, or `None` (the test skips) when the kernel has no overlayfs.
fn setup(tag: &str) -> Option<(TestDir, LayerStore)> {
    if !overlay_available() {
        return None;
    }
    let dir = TestDir::new(tag);
    let store = LayerStore::open(dir.store_root()).unwrap();
    Some((dir, store))
}

fn sorted_names(dir: impl AsRef<std::path::Path>) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
#[ignore = "needs root"]
fn write_in_merged_lands_in_upper_only() {
    let Some((dir, store)) = setup("upper") else {
        return;
    };
    let base = store.create("base", None).unwrap();
    fs::write(base.diff_path().join("shared"), "from lower").unwrap();
    let ctr = store.create("ctr", Some("base")).unwrap();

    let cwd = std::env::current_dir().unwrap();
    let merged = store.mount("ctr", &MountOptions::new()).unwrap();
    assert_eq!(
        std::env::current_dir().unwrap(),
        cwd,
        "mount changed the cwd"
    );
    assert_eq!(merged, ctr.merged_path());
    assert!(store.is_mounted("ctr").unwrap());
    assert!(!store.is_mounted("base").unwrap());
    assert_eq!(mounts_under(&dir.path), std::slice::from_ref(&merged));

    assert_eq!(read(merged.join("shared")), "from lower");
    fs::write(merged.join("new"), "written in merged").unwrap();
    fs::write(merged.join("shared"), "changed in merged").unwrap();

    assert_eq!(read(ctr.diff_path().join("new")), "written in merged");
    assert_eq!(read(ctr.diff_path().join("shared")), "changed in merged");
    assert_eq!(read(base.diff_path().join("shared")), "from lower");
    assert!(!base.diff_path().join("new").exists());

    // Deleting a lower file in merged leaves a whiteout in the upper.
    fs::remove_file(merged.join("shared")).unwrap();
    assert!(is_whiteout(&ctr.diff_path().join("shared")).unwrap());
    assert_eq!(read(base.diff_path().join("shared")), "from lower");

    assert!(matches!(
        store.mount("ctr", &MountOptions::new()),
        Err(Error::AlreadyMounted { .. })
    ));
    store.unmount("ctr").unwrap();
    store.unmount("ctr").unwrap(); // idempotent
    assert!(!store.is_mounted("ctr").unwrap());
    assert!(mounts_under(&dir.path).is_empty());
    assert!(!merged.join("new").exists());
}

#[test]
#[ignore = "needs root"]
fn whiteout_hides_lower_file() {
    let Some((dir, store)) = setup("whiteout") else {
        return;
    };
    let base = store.create("base", None).unwrap();
    fs::write(base.diff_path().join("gone"), "x").unwrap();
    fs::write(base.diff_path().join("also-gone"), "x").unwrap();
    fs::write(base.diff_path().join("kept"), "kept").unwrap();
    let img = store.create("img", Some("base")).unwrap();

    let diff = File::open(img.diff_path()).unwrap();
    whiteout_at(diff.as_fd(), OsStr::new("gone")).unwrap();
    whiteout(&img.diff_path().join("also-gone")).unwrap();
    assert!(is_whiteout_at(diff.as_fd(), OsStr::new("gone")).unwrap());
    assert!(is_whiteout(&img.diff_path().join("also-gone")).unwrap());
    assert_eq!(
        whiteout_at(diff.as_fd(), OsStr::new("gone"))
            .unwrap_err()
            .kind(),
        ErrorKind::AlreadyExists
    );

    for options in [MountOptions::new().read_only(true), MountOptions::new()] {
        let merged = store.mount("img", &options).unwrap();
        assert_eq!(sorted_names(&merged), ["kept"], "{options:?}");
        assert!(fs::symlink_metadata(merged.join("gone")).is_err());
        assert_eq!(read(merged.join("kept")), "kept");
        if options.is_read_only() {
            let err = fs::write(merged.join("new"), "x").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(30), "EROFS expected: {err}");
        }
        store.unmount("img").unwrap();
    }
    assert!(base.diff_path().join("gone").exists());
    assert!(mounts_under(&dir.path).is_empty());
}

#[test]
#[ignore = "needs root"]
fn opaque_dir_hides_lower_children() {
    let Some((dir, store)) = setup("opaque") else {
        return;
    };
    let base = store.create("base", None).unwrap();
    fs::create_dir_all(base.diff_path().join("etc/conf.d")).unwrap();
    fs::write(base.diff_path().join("etc/a"), "a").unwrap();
    fs::write(base.diff_path().join("etc/conf.d/b"), "b").unwrap();
    fs::create_dir(base.diff_path().join("other")).unwrap();
    fs::write(base.diff_path().join("other/c"), "c").unwrap();
    let img = store.create("img", Some("base")).unwrap();
    fs::create_dir(img.diff_path().join("etc")).unwrap();
    fs::write(img.diff_path().join("etc/new"), "new").unwrap();
    fs::create_dir(img.diff_path().join("other")).unwrap();

    let etc = File::open(img.diff_path().join("etc")).unwrap();
    assert!(!is_opaque_fd(etc.as_fd()).unwrap());
    set_opaque(etc.as_fd()).unwrap();
    assert!(is_opaque_fd(etc.as_fd()).unwrap());
    assert!(is_opaque(&img.diff_path().join("etc")).unwrap());
    assert!(!is_opaque(&img.diff_path().join("other")).unwrap());

    let merged = store
        .mount("img", &MountOptions::new().read_only(true))
        .unwrap();
    assert_eq!(sorted_names(merged.join("etc")), ["new"]);
    assert_eq!(
        sorted_names(merged.join("other")),
        ["c"],
        "non-opaque dir merges"
    );
    store.unmount("img").unwrap();

    // The path-based form works the same way.
    set_opaque_path(&img.diff_path().join("other")).unwrap();
    let merged = store
        .mount("img", &MountOptions::new().read_only(true))
        .unwrap();
    assert!(sorted_names(merged.join("other")).is_empty());
    store.unmount("img").unwrap();
    assert!(mounts_under(&dir.path).is_empty());
}

#[test]
#[ignore = "needs root"]
fn deep_stack_mounts_and_reads_right() {
    let Some((dir, store)) = setup("deep") else {
        return;
    };
    // 128 image layers, then a container layer whose 128 parents are all lowers.
    let n = MAX_DEPTH;
    let mut parent: Option<String> = None;
    for i in 0..n {
        let id = format!("layer-{i:03}");
        let layer = store.create(&id, parent.as_deref()).unwrap();
        fs::write(
            layer.diff_path().join(format!("f{i:03}")),
            format!("layer {i}"),
        )
        .unwrap();
        fs::write(layer.diff_path().join("top"), format!("{i}")).unwrap();
        parent = Some(id);
    }
    let top = parent.unwrap();
    assert_eq!(store.parents(&top).unwrap().len(), n - 1);
    let lower_file = read(store.root().join(&top).join("lower"));
    assert!(
        lower_file.len() > 2048,
        "lower file is {} bytes",
        lower_file.len()
    );

    let check = |merged: &std::path::Path| {
        for i in 0..n {
            assert_eq!(read(merged.join(format!("f{i:03}"))), format!("layer {i}"));
        }
        assert_eq!(read(merged.join("top")), format!("{}", n - 1));
        assert_eq!(fs::read_dir(merged).unwrap().count(), n + 1);
    };

    // Read-only view of the whole 128-layer image.
    let merged = store
        .mount(&top, &MountOptions::new().read_only(true))
        .unwrap();
    check(&merged);
    store.unmount(&top).unwrap();

    // A writable container on top: 128 lowers plus an upper.
    store.create("ctr", Some(&top)).unwrap();
    let cwd = std::env::current_dir().unwrap();
    let merged = store.mount("ctr", &MountOptions::new()).unwrap();
    assert_eq!(std::env::current_dir().unwrap(), cwd);
    check(&merged);
    fs::write(merged.join("f000"), "rewritten").unwrap();
    assert_eq!(
        read(store.diff_path("ctr").unwrap().join("f000")),
        "rewritten"
    );
    assert_eq!(
        read(store.diff_path("layer-000").unwrap().join("f000")),
        "layer 0"
    );
    store.unmount("ctr").unwrap();
    assert!(mounts_under(&dir.path).is_empty());
}

#[test]
#[ignore = "needs root"]
fn removing_a_mounted_layer_is_refused() {
    let Some((dir, store)) = setup("busy") else {
        return;
    };
    store.create("base", None).unwrap();
    let ctr = store.create("ctr", Some("base")).unwrap();
    let merged = store.mount("ctr", &MountOptions::new()).unwrap();

    let err = store.remove("ctr").unwrap_err();
    assert!(
        matches!(&err, Error::Mounted { id, merged: m } if id == "ctr" && *m == merged),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("layer ctr is mounted at") && msg.contains("unmount"),
        "{msg}"
    );
    assert!(store.exists("ctr").unwrap());
    assert!(ctr.diff_path().is_dir());
    assert!(store.root().join("l").join(ctr.short_id()).exists());
    assert!(store.is_mounted("ctr").unwrap());

    // A second store on the same root sees the mount too.
    let other = LayerStore::open(dir.store_root()).unwrap();
    assert!(other.is_mounted("ctr").unwrap());
    assert!(matches!(other.remove("ctr"), Err(Error::Mounted { .. })));
    other.unmount("ctr").unwrap();

    assert!(!store.is_mounted("ctr").unwrap());
    store.remove("ctr").unwrap();
    assert!(matches!(store.get("ctr"), Err(Error::NotFound { .. })));
    assert!(mounts_under(&dir.path).is_empty());
}

#[test]
#[ignore = "needs root"]
fn single_layers_are_bind_mounted() {
    let Some((dir, store)) = setup("bind") else {
        return;
    };
    let base = store.create("base", None).unwrap();
    fs::write(base.diff_path().join("f"), "base").unwrap();

    let merged = store.mount("base", &MountOptions::new()).unwrap();
    assert!(store.is_mounted("base").unwrap());
    fs::write(merged.join("g"), "written").unwrap();
    assert_eq!(read(base.diff_path().join("g")), "written");
    store.unmount("base").unwrap();

    let merged = store
        .mount("base", &MountOptions::new().read_only(true))
        .unwrap();
    assert_eq!(read(merged.join("f")), "base");
    let err = fs::write(merged.join("h"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "EROFS expected: {err}");
    assert!(matches!(store.remove("base"), Err(Error::Mounted { .. })));
    store.unmount("base").unwrap();
    assert!(mounts_under(&dir.path).is_empty());
    store.remove("base").unwrap();
}

#[test]
#[ignore = "needs root"]
fn extra_options_reach_the_kernel() {
    let Some((dir, store)) = setup("opts") else {
        return;
    };
    store.create("base", None).unwrap();
    store.create("ctr", Some("base")).unwrap();
    let err = store
        .mount("ctr", &MountOptions::new().option("no-such-option"))
        .unwrap_err();
    assert!(matches!(err, Error::Mount { .. }), "{err:?}");
    assert!(!store.is_mounted("ctr").unwrap());
    store
        .mount("ctr", &MountOptions::new().option("uuid=off"))
        .unwrap();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.contains(&format!("{}/ctr/merged ", store.root().display())))
        .expect("mount listed");
    assert!(line.contains(",uuid=off"), "{line}");
    // The options carry the short relative names, not absolute paths.
    assert!(line.contains("lowerdir=l/"), "{line}");
    assert!(
        line.contains("upperdir=ctr/diff,workdir=ctr/work"),
        "{line}"
    );
    assert!(line.contains(" - overlay "), "{line}");
    store.unmount("ctr").unwrap();
    assert!(mounts_under(&dir.path).is_empty());
}
