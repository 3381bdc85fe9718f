//! `kcore image tag | save | push` end to end: an image imported from a
//! layout is tagged, saved as a docker-archive (which `kcore image import`
//! and skopeo read back), and pushed to Debian's docker-registry on
//! loopback, where skopeo finds it by digest. Needs: docker-registry,
//! skopeo, GNU tar.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kcore_image::Digest;

const KCORE: &str = env!("CARGO_BIN_EXE_kcore");

struct Tmp(PathBuf);

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_registry(dir: &Path) -> (Registry, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.join("registry.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: kcore-cli-test\n",
            dir.join("registry-data").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry must be installed (Debian package docker-registry)");
    let mut reg = Registry(child);
    for _ in 0..200 {
        if let Ok(Some(st)) = reg.0.try_wait() {
            panic!("docker-registry exited: {st}");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (reg, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("docker-registry did not start");
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn kcore(root: &Path, args: &[&str]) -> String {
    run(Command::new(KCORE)
        .arg("image")
        .arg("--root")
        .arg(root)
        .args(args))
}

/// An OCI layout with one uncompressed layer holding `etc/hello`.
fn layout(dir: &Path) {
    let files = dir.join("files");
    std::fs::create_dir_all(files.join("etc")).unwrap();
    std::fs::write(files.join("etc/hello"), "hello from kcore\n").unwrap();
    let blobs = dir.join("layout/blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer_tar = dir.join("layer.tar");
    run(Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(&files)
        .arg("-cf")
        .arg(&layer_tar)
        .arg("etc"));
    let put = |data: &[u8]| {
        let d = Digest::of(data);
        std::fs::write(blobs.join(d.hex()), data).unwrap();
        d
    };
    let layer = std::fs::read(&layer_tar).unwrap();
    let ld = put(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [ld.to_string()]},
    })
    .to_string();
    let cd = put(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld.to_string(), "size": layer.len()}],
    })
    .to_string();
    let md = put(manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.to_string(), "size": manifest.len()}],
    });
    std::fs::write(dir.join("layout/index.json"), index.to_string()).unwrap();
    std::fs::write(
        dir.join("layout/oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

#[test]
fn tag_save_and_push_from_the_cli() {
    let t = Tmp(std::env::temp_dir().join(format!("kcore-cli-push-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&t.0);
    std::fs::create_dir_all(&t.0).unwrap();
    let root = t.0.join("root");
    layout(&t.0);
    let imported = kcore(
        &root,
        &[
            "import",
            t.0.join("layout").to_str().unwrap(),
            "--name",
            "kcore.local/hello:v1",
        ],
    );
    let digest = imported.split_whitespace().nth(1).unwrap().to_owned();

    let (_reg, port) = start_registry(&t.0);
    let dest = format!("127.0.0.1:{port}/kcore/hello:v1");
    let tagged = kcore(&root, &["tag", "kcore.local/hello:v1", &dest]);
    assert!(tagged.contains(&digest), "{tagged}");
    assert!(kcore(&root, &["ls"]).contains(&dest));

    // Push the new name (no destination: the name says where).
    let pushed = kcore(&root, &["push", &dest, "--plain-http"]);
    assert!(pushed.contains(&digest), "{pushed}");
    assert!(pushed.contains("2 uploaded"), "{pushed}");
    let raw = run(Command::new("skopeo").args([
        "--insecure-policy",
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://127.0.0.1:{port}/kcore/hello@{digest}"),
    ]));
    assert_eq!(Digest::of(raw.as_bytes()).to_string(), digest);
    // Again: nothing to upload.
    let again = kcore(&root, &["push", &dest, "--plain-http"]);
    assert!(again.contains("0 uploaded, 2 already there"), "{again}");

    // Save as a docker-archive; import it into a fresh root.
    let archive = t.0.join("hello.tar");
    kcore(
        &root,
        &[
            "save",
            &dest,
            "-o",
            archive.to_str().unwrap(),
            "--format",
            "docker-archive",
        ],
    );
    let root2 = t.0.join("root2");
    let back = kcore(&root2, &["import", archive.to_str().unwrap()]);
    assert!(back.starts_with(&dest), "{back}");
    let flat = t.0.join("flat");
    kcore(
        &root2,
        &["unpack", &dest, "--flatten", flat.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read_to_string(flat.join("etc/hello")).unwrap(),
        "hello from kcore\n"
    );
}
