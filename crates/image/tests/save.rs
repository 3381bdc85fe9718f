//! `ImageStore::save` (OCI layout as a directory or tar, docker-archive)
//! and `tag_image`: what is saved imports back with the same digests, and
//! real tools read it (skopeo for the OCI layout; podman load for both,
//! when podman is installed).

mod common;

use std::path::Path;
use std::process::Command;

use common::{two_layers, write_layout, TempDir};
use kcore_image::{Error, ImageStore, ImportOptions, SaveFormat, UnpackOptions};

const NAME: &str = "kcore.local/web:v1";

fn store_with_image(t: &TempDir) -> (ImageStore, kcore_image::Digest) {
    let layout = t.path().join("layout");
    let md = write_layout(&layout, &two_layers(), "v1");
    let store = ImageStore::open(t.path().join("store")).unwrap();
    store
        .import_oci_layout(
            &layout,
            &ImportOptions {
                name: Some(NAME.into()),
                ..Default::default()
            },
        )
        .unwrap();
    (store, md)
}

fn check_rootfs(store: &ImageStore, name: &str, dest: &Path) {
    store.flatten(name, dest, &UnpackOptions::new()).unwrap();
    assert_eq!(
        std::fs::read(dest.join("etc/os-release")).unwrap(),
        b"ID=kcore\n"
    );
    assert_eq!(
        std::fs::read(dest.join("var/cache/fresh")).unwrap(),
        b"fresh"
    );
    assert!(!dest.join("etc/gone").exists());
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("skopeo must be installed (Debian package skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn oci_layout_dir_and_tar_round_trip() {
    let t = TempDir::new("save-oci");
    let (store, md) = store_with_image(&t);
    let manifest = store.content().read_blob(&md).unwrap();

    let dir = t.path().join("out-dir/");
    store.save(&[NAME], &dir, SaveFormat::Oci).unwrap();
    assert!(dir.join("oci-layout").is_file());
    // skopeo reads it by the tag annotation, byte for byte.
    let raw = skopeo(&["inspect", "--raw", &format!("oci:{}:{NAME}", dir.display())]);
    assert_eq!(raw, manifest);

    let tar = t.path().join("web-oci.tar");
    store.save(&[NAME], &tar, SaveFormat::Oci).unwrap();
    assert!(tar.is_file());
    for (i, src) in [dir.as_path(), tar.as_path()].iter().enumerate() {
        let back = ImageStore::open(t.path().join(format!("back{i}"))).unwrap();
        let recs = back
            .import_oci_layout(src, &ImportOptions::default())
            .unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].manifest, md);
        assert_eq!(recs[0].name, NAME, "the full name survives the round trip");
        check_rootfs(&back, NAME, &t.path().join(format!("rootfs{i}")));
    }
    // Unknown images are refused, and no file is left.
    let missing = t.path().join("missing.tar");
    let err = store
        .save(&["nope:v1"], &missing, SaveFormat::Oci)
        .unwrap_err();
    assert!(matches!(err, Error::ImageNotFound(_)), "{err}");
    assert!(!missing.exists());
}

#[test]
fn docker_archive_round_trip_and_podman_load() {
    let t = TempDir::new("save-docker");
    let (store, _) = store_with_image(&t);
    let img = store.inspect(NAME).unwrap();
    let tar = t.path().join("web-docker.tar");
    store
        .save(&[NAME], &tar, SaveFormat::DockerArchive)
        .unwrap();

    let back = ImageStore::open(t.path().join("back")).unwrap();
    let recs = back
        .import_docker_archive(&tar, &ImportOptions::default())
        .unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].name, NAME);
    // Same config, same layers (by DiffID: docker-archive layers are plain tars).
    assert_eq!(recs[0].config, img.record.config);
    let got = back.inspect(NAME).unwrap();
    let ids = |i: &kcore_image::Image| {
        i.layers
            .iter()
            .map(|l| l.diff_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&got), ids(&img));
    check_rootfs(&back, NAME, &t.path().join("rootfs"));

    // skopeo reads the archive.
    let cfg = skopeo(&[
        "inspect",
        "--config",
        "--raw",
        &format!("docker-archive:{}", tar.display()),
    ]);
    assert_eq!(kcore_image::Digest::of(&cfg), img.record.config);

    if Command::new("podman").arg("--version").output().is_err() {
        println!("skipping podman load: podman is not installed");
        return;
    }
    // A private podman store (vfs: no overlay mounts needed).
    let root = t.path().join("podman-root");
    let runroot = t.path().join("podman-run");
    let podman = |args: &[&str]| {
        Command::new("podman")
            .arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = podman(&["load", "-i", tar.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "podman load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = podman(&["image", "inspect", "--format", "{{.Id}}", NAME]);
    assert!(
        out.status.success(),
        "podman image inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        img.record.config.hex(),
        "podman's image id is the config digest"
    );
    // The OCI archive loads too.
    let oci = t.path().join("web-oci.tar");
    store.save(&[NAME], &oci, SaveFormat::Oci).unwrap();
    let out = podman(&["rmi", NAME]);
    assert!(out.status.success());
    let out = podman(&["load", "-i", oci.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "podman load (oci): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = podman(&["image", "inspect", "--format", "{{.Id}}", NAME]);
    assert!(
        out.status.success(),
        "podman image inspect (oci): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        img.record.config.hex()
    );
}

#[test]
fn tag_gives_a_second_name() {
    let t = TempDir::new("tag");
    let (store, md) = store_with_image(&t);
    let rec = store.tag_image(NAME, "127.0.0.1:5000/team/web:v2").unwrap();
    assert_eq!(rec.manifest, md);
    assert_eq!(
        store.get("127.0.0.1:5000/team/web:v2").unwrap().manifest,
        md
    );
    assert_eq!(store.get(NAME).unwrap().manifest, md);
    assert!(matches!(
        store.tag_image("nope:v1", "x:v1").unwrap_err(),
        Error::ImageNotFound(_)
    ));
    assert!(matches!(
        store.tag_image(NAME, "Bad Name").unwrap_err(),
        Error::InvalidReference { .. }
    ));
}
