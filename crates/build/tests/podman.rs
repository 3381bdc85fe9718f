//! The same multi-stage Dockerfile built by kcore-build and by a real engine,
//! `podman build --format docker --network=none` (Debian's podman 4.3 / buildah 1.28),
//! in a private storage root: the two images have the same files, modes, owners and
//! (normalised) config.
//!
//! Needs root, overlayfs and podman (CI installs it: tests/run.sh); without root the
//! test says why it skips, without podman (as root) it fails.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use kcore_image::{ImageStore, ImportOptions, UnpackOptions};
use serde_json::{json, Value};

/// The Dockerfile of build.rs's multi-stage case, kept within what buildah 1.28 does
/// (no RUN --network, no heredocs, no COPY --exclude).
const DOCKERFILE: &str = "FROM kcore.test/busybox:1 AS make
WORKDIR /out
COPY greeting.txt ./
RUN mkdir -p bin etc/app && cp /bin/busybox bin/busybox && ln -s busybox bin/sh \\
 && echo \"built\" > etc/app/state && chmod 600 etc/app/state \\
 && chown 1000:50 etc/app && cat greeting.txt > etc/app/greeting
RUN chmod 4755 bin/busybox

FROM scratch
COPY --from=make /out/ /
COPY --chown=1000:1000 greeting.txt /home/app/
COPY --chmod=700 tool.sh /usr/local/bin/
ENV APP_MODE=demo
LABEL org.example.role=demo
EXPOSE 8080
USER 1000
WORKDIR /home/app
ENTRYPOINT [\"/bin/sh\", \"-c\"]
CMD [\"cat /etc/app/greeting\"]
";

fn podman(dir: &Path, args: &[&str]) -> String {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"))
        .env("CONTAINERS_CONF", dir.join("containers.conf"))
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("runroot"))
        .arg("--tmpdir")
        .arg(dir.join("libpod"))
        .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
        // crun refuses hybrid cgroup hosts (v1 controllers, an empty v2 mount); runc
        // (CI installs it with podman) runs on them.
        .args(["--runtime", "runc"])
        .args(args);
    let out = c
        .output()
        .expect("podman is installed (apt-get install podman)");
    assert!(
        out.status.success(),
        "podman {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The parts of a config both builders should agree on.
fn normalise(c: &Value) -> Value {
    let cfg = &c["config"];
    let mut labels = cfg["Labels"].clone();
    if let Some(m) = labels.as_object_mut() {
        m.retain(|k, _| !k.starts_with("io.buildah"));
    }
    // buildah leaves PATH out of a scratch image; BuildKit (and kcore-build) set it.
    let env: Vec<Value> = cfg["Env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !e.as_str().unwrap_or("").starts_with("PATH="))
        .collect();
    json!({
        "os": c["os"],
        "architecture": c["architecture"],
        "Env": env,
        "Entrypoint": cfg["Entrypoint"],
        "Cmd": cfg["Cmd"],
        "WorkingDir": cfg["WorkingDir"],
        "User": cfg["User"],
        "ExposedPorts": cfg["ExposedPorts"],
        "Labels": labels,
        "layers": c["rootfs"]["diff_ids"].as_array().map(|a| a.len()),
    })
}

#[test]
fn same_image_as_podman_build() {
    need_root!();
    let e = Env::new();
    e.busybox();
    e.file("greeting.txt", "hello from both\n");
    e.file("tool.sh", "#!/bin/sh\necho tool\n");
    std::fs::write(e.ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    e.build(DOCKERFILE, "cmp:kcore").unwrap();
    let ours = e.rootfs("cmp:kcore");
    let our_config = e.config("cmp:kcore");

    // podman: load the same busybox base into a private store, build, save.
    let p = tempfile::Builder::new()
        .prefix("kcore-build-podman")
        .tempdir()
        .unwrap();
    let dir = p.path();
    std::fs::write(
        dir.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/runroot\"\n",
            dir.display()
        ),
    )
    .unwrap();
    // nofile/nproc within what this process holds: podman as root otherwise asks for
    // 1048576, which a runtime cannot set without CAP_SYS_RESOURCE.
    std::fs::write(
        dir.join("containers.conf"),
        format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             [network]\nnetwork_config_dir = \"{}\"\n",
            dir.join("cni").display()
        ),
    )
    .unwrap();
    let layout = dir.join("busybox-layout");
    e.export_layout(BUSYBOX, &layout);
    let archive = dir.join("busybox.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let loaded = podman(dir, &["load", "-i", archive.to_str().unwrap()]);
    let id = loaded
        .lines()
        .find_map(|l| {
            l.strip_prefix("Loaded image: ")
                .or_else(|| l.strip_prefix("Loaded image(s): "))
        })
        .unwrap_or_else(|| panic!("podman load said {loaded:?}"))
        .trim()
        .to_string();
    podman(dir, &["tag", &id, BUSYBOX]);
    let ctx = e.ctx.to_str().unwrap();
    podman(
        dir,
        &[
            "build",
            "--format",
            "docker",
            "--network=none",
            "--pull=never",
            "--layers",
            "-t",
            "cmp:podman",
            "-f",
            &format!("{ctx}/Dockerfile"),
            ctx,
        ],
    );
    let saved = dir.join("podman-image.tar");
    podman(
        dir,
        &[
            "save",
            "--format",
            "docker-archive",
            "-o",
            saved.to_str().unwrap(),
            "cmp:podman",
        ],
    );
    let theirs_store = ImageStore::open(dir.join("kcore-images")).unwrap();
    let opts = ImportOptions {
        name: Some("cmp:podman".into()),
        ..ImportOptions::default()
    };
    theirs_store.import_docker_archive(&saved, &opts).unwrap();
    let theirs = dir.join("theirs");
    theirs_store
        .flatten("cmp:podman", &theirs, &UnpackOptions::new())
        .unwrap();
    let rec = theirs_store.get("cmp:podman").unwrap();
    let their_config: Value =
        serde_json::from_slice(&theirs_store.content().read_blob(&rec.config).unwrap()).unwrap();

    let a = tree(&ours);
    let b = tree(&theirs);
    let only_ours: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    let only_theirs: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "only in kcore's: {only_ours:?}\nonly in podman's: {only_theirs:?}"
    );
    for (path, ea) in &a {
        assert_eq!(ea, &b[path], "{path}: kcore-build vs podman build");
    }
    assert!(a.len() > 5, "{a:?}");
    assert_eq!(normalise(&our_config), normalise(&their_config));

    // Our image runs under the real engine too.
    let ours_layout = dir.join("ours-layout");
    e.export_layout("cmp:kcore", &ours_layout);
    let ours_tar = dir.join("ours.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&ours_layout)
        .arg("-cf")
        .arg(&ours_tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let loaded = podman(dir, &["load", "-i", ours_tar.to_str().unwrap()]);
    let id = loaded
        .lines()
        .find_map(|l| {
            l.strip_prefix("Loaded image: ")
                .or_else(|| l.strip_prefix("Loaded image(s): "))
        })
        .unwrap_or_else(|| panic!("podman load said {loaded:?}"))
        .trim()
        .to_string();
    let out = podman(dir, &["run", "--rm", "--network=none", &id]);
    assert_eq!(out, "hello from both\n");
    let out = podman(
        dir,
        &[
            "run",
            "--rm",
            "--network=none",
            &id,
            "id -u; pwd; echo $APP_MODE",
        ],
    );
    assert_eq!(out, "1000\n/home/app\ndemo\n");
}
