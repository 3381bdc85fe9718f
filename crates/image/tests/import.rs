//! Import (OCI layout dir and tar, docker-archive made by skopeo), content
//! verification, the image catalog, garbage collection, and unpacking into
//! kcore-overlay layers and flat rootfs directories.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{skopeo, two_layers, write_layout, Layer, TempDir};
use kcore_image::{Digest, Error, ImageStore, ImportOptions, UnpackOptions};
use kcore_overlay::LayerStore;

fn check_flat(root: &Path) {
    assert_eq!(
        fs::read(root.join("etc/os-release")).unwrap(),
        b"ID=kcore\n"
    );
    assert!(!root.join("etc/gone").exists());
    assert!(!root.join("etc/.wh.gone").exists());
    assert!(!root.join("var/cache/stale").exists());
    assert_eq!(fs::read(root.join("var/cache/fresh")).unwrap(), b"fresh");
    assert_eq!(fs::read(root.join("etc/added")).unwrap(), b"new");
    assert_eq!(
        fs::read_link(root.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    let a = fs::metadata(root.join("usr/bin/tool")).unwrap();
    let b = fs::metadata(root.join("usr/bin/tool-link")).unwrap();
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn import_oci_layout_dir_then_flatten() {
    let t = TempDir::new("layout");
    let layout = t.path().join("layout");
    let md = write_layout(&layout, &two_layers(), "v1");
    let store = ImageStore::open(t.path().join("store")).unwrap();
    let recs = store
        .import_oci_layout(&layout, &ImportOptions::default())
        .unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].name, "v1");
    assert_eq!(recs[0].manifest, md);
    // Found by name, digest and digest prefix.
    assert_eq!(store.get("v1").unwrap().manifest, md);
    assert_eq!(store.get(&md.to_string()).unwrap().name, "v1");
    assert_eq!(store.get(&md.hex()[..12]).unwrap().name, "v1");
    let img = store.inspect("v1").unwrap();
    assert_eq!(img.layers.len(), 2);
    assert_eq!(img.layers[0].chain_id, img.layers[0].diff_id);

    let entries = Arc::new(AtomicU64::new(0));
    let e2 = entries.clone();
    let opts =
        UnpackOptions::new().progress(Arc::new(move |p| e2.store(p.entries, Ordering::Relaxed)));
    let root = t.path().join("rootfs");
    store.flatten("v1", &root, &opts).unwrap();
    check_flat(&root);
    assert_eq!(
        entries.load(Ordering::Relaxed),
        16,
        "progress counts every entry of both layers"
    );
    // the store is root's: its directory 0700, catalog, locks and blobs 0600
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    let s = store.root();
    assert_eq!(mode(s), 0o700);
    for f in ["images.json", ".lock", ".gc.lock"] {
        assert_eq!(mode(&s.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&store.content().blob_path(&md)), 0o600);
}

#[test]
fn import_named_and_by_tar_made_by_skopeo() {
    let t = TempDir::new("ociarchive");
    let layout = t.path().join("layout");
    write_layout(&layout, &two_layers(), "v1");
    let archive = t.path().join("image.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}:v1", layout.display()),
        &format!("oci-archive:{}:v1", archive.display()),
    ]);
    let store = ImageStore::open(t.path().join("store")).unwrap();
    let opts = ImportOptions {
        name: Some("example.com/app:1".into()),
        ..Default::default()
    };
    let recs = store.import_oci_layout(&archive, &opts).unwrap();
    assert_eq!(recs[0].name, "example.com/app:1");
    let root = t.path().join("rootfs");
    store
        .flatten("example.com/app:1", &root, &UnpackOptions::new())
        .unwrap();
    check_flat(&root);
}

#[test]
fn import_docker_archive_made_by_skopeo() {
    let t = TempDir::new("docker");
    let layout = t.path().join("layout");
    write_layout(&layout, &two_layers(), "v1");
    let archive = t.path().join("docker.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker-archive:{}:kcore/test:v1", archive.display()),
    ]);
    let store = ImageStore::open(t.path().join("store")).unwrap();
    let recs = store
        .import_docker_archive(&archive, &ImportOptions::default())
        .unwrap();
    assert_eq!(recs.len(), 1);
    assert!(recs[0].name.ends_with("kcore/test:v1"), "{}", recs[0].name);
    let root = t.path().join("rootfs");
    store
        .flatten(&recs[0].name, &root, &UnpackOptions::new())
        .unwrap();
    check_flat(&root);
    // Only what the image needs is kept: manifest, config and two layers.
    assert_eq!(store.content().list().unwrap().len(), 4);
}

#[test]
fn corrupted_blob_in_a_layout_is_rejected() {
    let t = TempDir::new("corrupt");
    let layout = t.path().join("layout");
    let layers = two_layers();
    write_layout(&layout, &layers, "v1");
    let victim = Digest::of(&layers[1].0);
    let p = layout.join("blobs/sha256").join(victim.hex());
    let mut data = fs::read(&p).unwrap();
    data[600] ^= 1;
    fs::write(&p, data).unwrap();
    let store = ImageStore::open(t.path().join("store")).unwrap();
    let err = store
        .import_oci_layout(&layout, &ImportOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(!store.content().contains(&victim));
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn wrong_diff_id_is_rejected_at_unpack() {
    let t = TempDir::new("diffid");
    let layout = t.path().join("layout");
    let real = Layer::new().file("a", 0o644, b"a").tar();
    let claimed = Layer::new().file("a", 0o644, b"b").tar();
    write_layout(
        &layout,
        &[(real, "application/vnd.oci.image.layer.v1.tar+gzip", claimed)],
        "bad",
    );
    let store = ImageStore::open(t.path().join("store")).unwrap();
    store
        .import_oci_layout(&layout, &ImportOptions::default())
        .unwrap();
    let root = t.path().join("rootfs");
    let err = store
        .flatten("bad", &root, &UnpackOptions::new())
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(!root.exists());
}

#[test]
fn remove_and_prune() {
    let t = TempDir::new("prune");
    let layout = t.path().join("layout");
    write_layout(&layout, &two_layers(), "v1");
    let store = ImageStore::open(t.path().join("store")).unwrap();
    store
        .import_oci_layout(&layout, &ImportOptions::default())
        .unwrap();
    let stray = store.content().put_bytes(b"unreferenced").unwrap();
    let r = store.prune(None).unwrap();
    assert_eq!(r.blobs, vec![stray]);
    assert_eq!(store.content().list().unwrap().len(), 4);
    store.remove("v1").unwrap();
    assert!(matches!(store.get("v1"), Err(Error::ImageNotFound(_))));
    let r = store.prune(None).unwrap();
    assert_eq!(r.blobs.len(), 4);
    assert!(store.content().list().unwrap().is_empty());
}

fn mount_and_list(layers: &LayerStore, ids: &[String]) -> String {
    // Mount the image read-only in a private mount namespace of a child
    // process and look at the merged view.
    let lower: Vec<String> = ids
        .iter()
        .rev()
        .map(|id| layers.diff_path(id).unwrap().display().to_string())
        .collect();
    let t = TempDir::new("merged");
    let script = format!(
        "mount -t overlay overlay -o lowerdir={} {m} && cd {m} && find . | sort && cat etc/os-release",
        lower.join(":"),
        m = t.path().display()
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[ignore = "needs root"]
fn unpack_into_overlay_layers_in_parallel_and_reuse() {
    let t = TempDir::new("overlay");
    let layout = t.path().join("layout");
    write_layout(&layout, &two_layers(), "v1");
    let store = ImageStore::open(t.path().join("store")).unwrap();
    store
        .import_oci_layout(&layout, &ImportOptions::default())
        .unwrap();
    let layers = LayerStore::open(t.path().join("layers")).unwrap();
    let u = store
        .unpack("v1", &layers, &UnpackOptions::new(), 2)
        .unwrap();
    assert_eq!(u.unpacked, 2);
    let img = store.inspect("v1").unwrap();
    assert_eq!(u.top(), Some(img.layers[1].chain_id.hex()));
    assert!(store.is_unpacked("v1", &layers).unwrap());
    let view = mount_and_list(&layers, &u.layer_ids);
    assert!(view.contains("./var/cache/fresh"), "{view}");
    assert!(
        !view.contains("stale"),
        "opaque dir hides the lower content: {view}"
    );
    assert!(
        !view.contains("./etc/gone"),
        "whiteout hides the file: {view}"
    );
    assert!(view.contains("ID=kcore"));

    // Second time: nothing to do.
    let again = store
        .unpack("v1", &layers, &UnpackOptions::new(), 2)
        .unwrap();
    assert_eq!(again.unpacked, 0);

    // A container layer on top keeps the image layers alive through prune.
    layers.create("container-1", u.top()).unwrap();
    store.remove("v1").unwrap();
    let r = store.prune(Some(&layers)).unwrap();
    assert!(r.layers.is_empty(), "{r:?}");
    layers.remove("container-1").unwrap();
    let r = store.prune(Some(&layers)).unwrap();
    assert_eq!(r.layers.len(), 2);
    assert!(layers.list().unwrap().is_empty());
}

#[test]
#[ignore = "needs root"]
fn failed_layer_unpack_leaves_no_layer_behind() {
    let t = TempDir::new("ovfail");
    let layout = t.path().join("layout");
    let good = Layer::new().file("ok", 0o644, b"ok").tar();
    let hostile = Layer::new().file("x/../../../etc/evil", 0o644, b"x").tar();
    write_layout(
        &layout,
        &[
            (good.clone(), "application/vnd.oci.image.layer.v1.tar", good),
            (
                hostile.clone(),
                "application/vnd.oci.image.layer.v1.tar",
                hostile,
            ),
        ],
        "hostile",
    );
    let store = ImageStore::open(t.path().join("store")).unwrap();
    store
        .import_oci_layout(&layout, &ImportOptions::default())
        .unwrap();
    let layers = LayerStore::open(t.path().join("layers")).unwrap();
    let err = store
        .unpack("hostile", &layers, &UnpackOptions::new(), 2)
        .unwrap_err();
    match err {
        Error::UnsafeEntry { entry, .. } => assert_eq!(entry, Path::new("x/../../../etc/evil")),
        e => panic!("unexpected {e}"),
    }
    let ids: Vec<String> = layers
        .list()
        .unwrap()
        .iter()
        .map(|l| l.id().to_owned())
        .collect();
    let img = store.inspect("hostile").unwrap();
    assert!(
        !ids.contains(&img.layers[1].chain_id.hex().to_owned()),
        "{ids:?}"
    );
    assert!(!store.is_unpacked("hostile", &layers).unwrap());
}
