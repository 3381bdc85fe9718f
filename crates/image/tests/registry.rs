//! Pull from Debian's docker-registry (distribution 2.8) on 127.0.0.1,
//! filled by skopeo from an OCI layout the test builds: basic auth through
//! htpasswd, and bearer-token auth through a small token server the test
//! runs (JWTs signed with openssl, trusted via the registry's rootcertbundle).
//! Needs: docker-registry, skopeo, apache2-utils (htpasswd), openssl.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::{skopeo, two_layers, write_layout, TempDir};
use kcore_image::{Digest, Error, ImageStore, PullOptions, PushOptions, UnpackOptions};

const USER: &str = "kcore";
const PASS: &str = "s3cret-pass";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A registry process, killed and reaped on drop.
struct Registry {
    child: Child,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path, auth: &str) -> Registry {
    // Parallel tests must not be handed the same free port: hold the lock until this
    // registry listens on it, so the kernel cannot give the port out again meanwhile.
    static START: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = START.lock().unwrap_or_else(|e| e.into_inner());
    let port = free_port();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: kcore-test-secret\n{auth}",
        data.display()
    );
    let cfg = dir.join("config.yml");
    std::fs::write(&cfg, config).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry must be installed (Debian package docker-registry)");
    let mut reg = Registry { child, port };
    // Readiness: the port accepts connections and our registry is still alive (it
    // exits at once if another process took the port).
    for _ in 0..200 {
        if let Ok(Some(status)) = reg.child.try_wait() {
            panic!("docker-registry exited before serving on port {port}: {status}");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
            if reg.child.try_wait().map(|s| s.is_none()).unwrap_or(false) {
                return reg;
            }
            continue;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("docker-registry did not start on port {port}");
}

fn push(layout: &Path, port: u16, repo_tag: &str, creds: &str, digest_file: &Path) -> Digest {
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        creds,
        "--digestfile",
        digest_file.to_str().unwrap(),
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://127.0.0.1:{port}/{repo_tag}"),
    ]);
    std::fs::read_to_string(digest_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn opts() -> PullOptions {
    PullOptions {
        plain_http: true,
        credentials: Some((USER.into(), PASS.into())),
        attempts: 2,
        ..Default::default()
    }
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

fn blob_inodes(store: &ImageStore) -> Vec<u64> {
    store
        .content()
        .list()
        .unwrap()
        .iter()
        .map(|d| {
            std::fs::metadata(store.content().blob_path(d))
                .unwrap()
                .ino()
        })
        .collect()
}

#[test]
fn pull_with_basic_auth_by_tag_and_digest() {
    let t = TempDir::new("reg-basic");
    let out = Command::new("htpasswd")
        .args(["-Bbn", USER, PASS])
        .output()
        .expect("htpasswd must be installed (Debian package apache2-utils)");
    assert!(out.status.success());
    let htpasswd = t.path().join("htpasswd");
    std::fs::write(&htpasswd, &out.stdout).unwrap();
    let reg = start_registry(
        t.path(),
        &format!(
            "auth:\n  htpasswd:\n    realm: kcore-test\n    path: {}\n",
            htpasswd.display()
        ),
    );
    let layout = t.path().join("layout");
    write_layout(&layout, &two_layers(), "v1");
    let pushed = push(
        &layout,
        reg.port,
        "kcore/test:v1",
        &format!("{USER}:{PASS}"),
        &t.path().join("digest"),
    );

    let store = ImageStore::open(t.path().join("store")).unwrap();
    let bytes = Arc::new(AtomicU64::new(0));
    let b2 = bytes.clone();
    let mut o = opts();
    o.progress = Some(Arc::new(move |p| {
        b2.fetch_max(p.bytes, Ordering::Relaxed);
    }));
    let by_tag = format!("127.0.0.1:{}/kcore/test:v1", reg.port);
    let rec = store.pull(&by_tag, &o).unwrap();
    assert_eq!(rec.name, by_tag);
    assert_eq!(rec.manifest, pushed);
    let img = store.inspect(&by_tag).unwrap();
    let layer_bytes: u64 = img.layers.iter().map(|l| l.size).sum();
    assert!(
        bytes.load(Ordering::Relaxed) >= layer_bytes,
        "progress saw the download"
    );
    check_rootfs(&store, &by_tag, &t.path().join("rootfs1"));

    // By digest: same manifest, blobs already present are not fetched again
    // (their files are untouched).
    let before = blob_inodes(&store);
    let by_digest = format!("127.0.0.1:{}/kcore/test@{pushed}", reg.port);
    let rec2 = store.pull(&by_digest, &opts()).unwrap();
    assert_eq!(rec2.manifest, pushed);
    assert_eq!(blob_inodes(&store), before);

    // Fresh store, by digest only.
    let store2 = ImageStore::open(t.path().join("store2")).unwrap();
    store2.pull(&by_digest, &opts()).unwrap();
    check_rootfs(&store2, &by_digest, &t.path().join("rootfs2"));

    // Wrong or missing credentials are refused.
    let mut bad = opts();
    bad.credentials = Some((USER.into(), "wrong".into()));
    let err = store2.pull(&by_tag, &bad).unwrap_err();
    assert!(matches!(err, Error::Registry { .. }), "{err}");
    let mut anon = opts();
    anon.credentials = None;
    assert!(store2.pull(&by_tag, &anon).is_err());
    // Unknown tag.
    let err = store
        .pull(&format!("127.0.0.1:{}/kcore/test:nope", reg.port), &opts())
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

#[test]
fn pull_anonymous_with_platform_index() {
    let t = TempDir::new("reg-anon");
    let reg = start_registry(t.path(), "");
    let layout = t.path().join("layout");
    write_layout(&layout, &two_layers(), "v1");
    // Push the image, then a multi-platform copy (`--all` keeps the index).
    let index_layout = t.path().join("index-layout");
    wrap_in_index(&layout, &index_layout);
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", index_layout.display()),
        &format!("docker://127.0.0.1:{}/kcore/multi:v1", reg.port),
    ]);
    let store = ImageStore::open(t.path().join("store")).unwrap();
    let mut o = opts();
    o.credentials = None;
    let name = format!("127.0.0.1:{}/kcore/multi:v1", reg.port);
    let rec = store.pull(&name, &o).unwrap();
    assert!(rec.index.is_some(), "pulled through an index");
    check_rootfs(&store, &name, &t.path().join("rootfs"));
    // No arm64 image in that index.
    o.platform = "linux/arm64".parse().unwrap();
    let err = store.pull(&name, &o).unwrap_err();
    assert!(matches!(err, Error::NoMatchingPlatform { .. }), "{err}");
}

/// Copy a one-image layout into a layout whose index.json points at a
/// nested image index holding the manifest with its platform.
fn wrap_in_index(src: &Path, dst: &Path) {
    let copy = Command::new("cp")
        .args(["-a"])
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(copy.success());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("index.json")).unwrap()).unwrap();
    let mut m = index["manifests"][0].clone();
    m.as_object_mut().unwrap().remove("annotations");
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [m],
    })
    .to_string();
    let nd = Digest::of(nested.as_bytes());
    std::fs::write(dst.join("blobs/sha256").join(nd.hex()), &nested).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": nd.to_string(),
            "size": nested.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }],
    });
    std::fs::write(dst.join("index.json"), top.to_string()).unwrap();
}

// ----- bearer tokens ----------------------------------------------------

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl must be installed");
    if let Some(i) = input {
        child.stdin.take().unwrap().write_all(i).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A token server on 127.0.0.1 that checks basic credentials and issues
/// RS256 JWTs with the signing certificate in `x5c`. Stopped on drop.
struct TokenServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    issued: Arc<AtomicU64>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_token_server(key: PathBuf, cert_der: Vec<u8>) -> TokenServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(AtomicU64::new(0));
    let (stop2, issued2) = (stop.clone(), issued.clone());
    let thread = std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut auth = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        auth = Some(v.trim().to_owned());
                    }
                }
            }
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"))
            );
            if auth.as_deref() != Some(want.as_str()) {
                let _ = conn.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
            let mut access = Vec::new();
            for pair in query.split('&') {
                let Some(("scope", v)) = pair.split_once('=') else {
                    continue;
                };
                let v = v
                    .replace("%3A", ":")
                    .replace("%2F", "/")
                    .replace("%2C", ",");
                let parts: Vec<&str> = v.splitn(3, ':').collect();
                if let [kind, name, actions] = parts.as_slice() {
                    access.push(serde_json::json!({
                        "type": kind, "name": name,
                        "actions": actions.split(',').collect::<Vec<_>>(),
                    }));
                }
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let header = serde_json::json!({
                "typ": "JWT", "alg": "RS256",
                "x5c": [base64::engine::general_purpose::STANDARD.encode(&cert_der)],
            });
            let claims = serde_json::json!({
                "iss": "kcore-test-issuer", "sub": USER, "aud": "kcore-registry",
                "exp": now + 600, "nbf": now - 60, "iat": now - 60,
                "jti": format!("t{}", issued2.fetch_add(1, Ordering::Relaxed)),
                "access": access,
            });
            let signing_input = format!(
                "{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            );
            let sig = openssl(
                &["dgst", "-sha256", "-sign", key.to_str().unwrap()],
                Some(signing_input.as_bytes()),
            );
            let token = format!("{signing_input}.{}", b64url(&sig));
            let body =
                serde_json::json!({"token": token, "access_token": token, "expires_in": 600})
                    .to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        }
    });
    TokenServer {
        port,
        stop,
        thread: Some(thread),
        issued,
    }
}

#[test]
fn pull_with_token_auth() {
    let t = TempDir::new("reg-token");
    let key = t.path().join("key.pem");
    let cert = t.path().join("cert.pem");
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=kcore-token",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
        None,
    );
    let der = openssl(
        &["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"],
        None,
    );
    let tokens = start_token_server(key, der);
    let reg = start_registry(
        t.path(),
        &format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: kcore-registry\n    issuer: kcore-test-issuer\n    rootcertbundle: {}\n",
            tokens.port,
            cert.display()
        ),
    );
    let layout = t.path().join("layout");
    write_layout(&layout, &two_layers(), "v1");
    let pushed = push(
        &layout,
        reg.port,
        "kcore/tok:v1",
        &format!("{USER}:{PASS}"),
        &t.path().join("digest"),
    );
    let before = tokens.issued.load(Ordering::Relaxed);

    let store = ImageStore::open(t.path().join("store")).unwrap();
    let name = format!("127.0.0.1:{}/kcore/tok:v1", reg.port);
    let rec = store.pull(&name, &opts()).unwrap();
    assert_eq!(rec.manifest, pushed);
    assert!(
        tokens.issued.load(Ordering::Relaxed) > before,
        "a token was issued for the pull"
    );
    check_rootfs(&store, &name, &t.path().join("rootfs"));

    // The token server refuses wrong credentials: so does the pull.
    let mut bad = opts();
    bad.credentials = Some((USER.into(), "nope".into()));
    let store2 = ImageStore::open(t.path().join("store2")).unwrap();
    let err = store2.pull(&name, &bad).unwrap_err();
    assert!(matches!(err, Error::Registry { .. }), "{err}");
}

fn skopeo_out(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("skopeo must be installed (Debian package skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn htpasswd_registry(t: &TempDir) -> Registry {
    let out = Command::new("htpasswd")
        .args(["-Bbn", USER, PASS])
        .output()
        .expect("htpasswd must be installed (Debian package apache2-utils)");
    assert!(out.status.success());
    let htpasswd = t.path().join("htpasswd");
    std::fs::write(&htpasswd, &out.stdout).unwrap();
    start_registry(
        t.path(),
        &format!(
            "auth:\n  htpasswd:\n    realm: kcore-test\n    path: {}\n",
            htpasswd.display()
        ),
    )
}

fn push_opts() -> PushOptions {
    PushOptions {
        plain_http: true,
        credentials: Some((USER.into(), PASS.into())),
        attempts: 2,
        ..Default::default()
    }
}

/// skopeo reads the pushed image back by digest: the raw manifest is the
/// store's, and a copy into an OCI layout verifies every blob.
fn skopeo_pulls_back(t: &TempDir, port: u16, repo: &str, digest: &Digest, manifest: &[u8]) {
    let by_digest = format!("docker://127.0.0.1:{port}/{repo}@{digest}");
    let creds = format!("{USER}:{PASS}");
    let raw = skopeo_out(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &by_digest,
    ]);
    assert_eq!(
        raw, manifest,
        "{repo}: the registry serves the manifest as pushed"
    );
    let dir = t.path().join(format!("back-{}", repo.replace('/', "-")));
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &by_digest,
        &format!("oci:{}:back", dir.display()),
    ]);
    let back =
        ImageStore::open(t.path().join(format!("store-{}", repo.replace('/', "-")))).unwrap();
    let recs = back
        .import_oci_layout(&dir, &kcore_image::ImportOptions::default())
        .unwrap();
    assert_eq!(recs[0].manifest, *digest);
    check_rootfs(
        &back,
        &recs[0].name,
        &t.path().join(format!("rootfs-{}", repo.replace('/', "-"))),
    );
}

#[test]
fn push_monolithic_chunked_existing_and_mounted_blobs() {
    let t = TempDir::new("reg-push");
    let reg = htpasswd_registry(&t);
    let layout = t.path().join("layout");
    let md = write_layout(&layout, &two_layers(), "v1");
    let store = ImageStore::open(t.path().join("store")).unwrap();
    let src = format!("127.0.0.1:{}/kcore/src:v1", reg.port);
    store
        .import_oci_layout(
            &layout,
            &kcore_image::ImportOptions {
                name: Some(src.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    let img = store.inspect(&src).unwrap();
    let manifest = store.content().read_blob(&md).unwrap();

    // Small chunks: the plain top layer goes up as PATCH chunks, the
    // config and the gzip base layer in one PUT each.
    let chunk = 1024;
    assert!(
        img.layers[1].size > chunk as u64 * 2,
        "the top layer spans chunks"
    );
    assert!(img.layers[0].size <= chunk as u64);
    let bytes = Arc::new(AtomicU64::new(0));
    let b2 = bytes.clone();
    let mut o = push_opts();
    o.chunk_size = chunk;
    o.progress = Some(Arc::new(move |p| {
        b2.fetch_max(p.bytes, Ordering::Relaxed);
    }));
    let dest_a = format!("127.0.0.1:{}/kcore/a:v1", reg.port);
    // The source repository does not exist in the registry: its mounts
    // fall back to uploads.
    let r = store.push(&src, Some(&dest_a), &o).unwrap();
    assert_eq!(r.manifest, md);
    assert_eq!(r.digest, md);
    assert_eq!((r.uploaded, r.existing, r.mounted), (3, 0, 0), "{r:?}");
    let blob_bytes: u64 = img.layers.iter().map(|l| l.size).sum::<u64>()
        + store.content().blob_size(&img.record.config).unwrap();
    assert_eq!(r.bytes, blob_bytes);
    assert_eq!(
        bytes.load(Ordering::Relaxed),
        blob_bytes,
        "progress saw the upload"
    );
    skopeo_pulls_back(&t, reg.port, "kcore/a", &md, &manifest);

    // Again: every blob is there (HEAD), only the manifest is put.
    let r = store.push(&src, Some(&dest_a), &push_opts()).unwrap();
    assert_eq!(
        (r.uploaded, r.existing, r.mounted, r.bytes),
        (0, 3, 0, 0),
        "{r:?}"
    );

    // Into another repository, mounting from the first.
    let dest_b = format!("127.0.0.1:{}/kcore/b:v2", reg.port);
    let mut o = push_opts();
    o.mount_from = Some("kcore/a".into());
    let r = store.push(&src, Some(&dest_b), &o).unwrap();
    assert_eq!(
        (r.uploaded, r.existing, r.mounted, r.bytes),
        (0, 0, 3, 0),
        "{r:?}"
    );
    skopeo_pulls_back(&t, reg.port, "kcore/b", &md, &manifest);

    // Our own pull gets it back by tag too.
    let store2 = ImageStore::open(t.path().join("store2")).unwrap();
    let rec = store2.pull(&dest_b, &opts()).unwrap();
    assert_eq!(rec.manifest, md);

    // Wrong credentials are refused with a registry error.
    let mut bad = push_opts();
    bad.credentials = Some((USER.into(), "wrong".into()));
    let err = store
        .push(
            &src,
            Some(&format!("127.0.0.1:{}/kcore/c:v1", reg.port)),
            &bad,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Registry { .. }), "{err}");
}

#[test]
fn push_with_token_auth() {
    let t = TempDir::new("reg-push-token");
    let key = t.path().join("key.pem");
    let cert = t.path().join("cert.pem");
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=kcore-token",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
        None,
    );
    let der = openssl(
        &["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"],
        None,
    );
    let tokens = start_token_server(key, der);
    let reg = start_registry(
        t.path(),
        &format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: kcore-registry\n    issuer: kcore-test-issuer\n    rootcertbundle: {}\n",
            tokens.port,
            cert.display()
        ),
    );
    let layout = t.path().join("layout");
    let md = write_layout(&layout, &two_layers(), "v1");
    let store = ImageStore::open(t.path().join("store")).unwrap();
    let name = format!("127.0.0.1:{}/kcore/tok:v1", reg.port);
    store
        .import_oci_layout(
            &layout,
            &kcore_image::ImportOptions {
                name: Some(name.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    // To the image's own name (no destination given).
    let r = store.push(&name, None, &push_opts()).unwrap();
    assert_eq!(r.digest, md);
    assert_eq!(r.uploaded, 3);
    assert!(
        tokens.issued.load(Ordering::Relaxed) > 0,
        "a token was issued"
    );
    // Mounting into a second repository needs pull on the source: the
    // token asked for it.
    let mut o = push_opts();
    o.mount_from = Some("kcore/tok".into());
    let r = store
        .push(
            &name,
            Some(&format!("127.0.0.1:{}/kcore/tok2:v1", reg.port)),
            &o,
        )
        .unwrap();
    assert_eq!(r.mounted, 3, "{r:?}");
    let manifest = store.content().read_blob(&md).unwrap();
    skopeo_pulls_back(&t, reg.port, "kcore/tok2", &md, &manifest);
}
