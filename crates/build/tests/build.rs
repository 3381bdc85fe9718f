//! Builds of real Dockerfiles into a private store: one case per instruction, the
//! cache, and the errors. Cases with RUN, COPY, ADD or WORKDIR need root and overlayfs
//! and say so when they skip.

mod common;

use common::*;
use kcore_build::Error;
use serde_json::json;
use std::path::Path;

// ----- config-only instructions (no root needed) -----------------------------------

#[test]
fn config_instructions_on_scratch() {
    let e = Env::new();
    let df = r#"
ARG BASE=scratch
FROM ${BASE}
ARG VERSION=1.0
ENV APP=web \
    DIR="/srv/${APP:-none}" MODE=${MODE:-prod}
ENV LEGACY two words
LABEL org.opencontainers.image.version=$VERSION "with space"="a b"
EXPOSE 80 443/udp 8000-8001
VOLUME ["/data", "/logs"]
VOLUME /cache
USER app:staff
STOPSIGNAL SIGQUIT
SHELL ["/bin/ash", "-eo", "pipefail", "-c"]
ENTRYPOINT ["/bin/web", "--dir=$DIR"]
CMD serve --mode $MODE
HEALTHCHECK --interval=30s --timeout=1m30s --retries=3 CMD wget -q -O- http://localhost/ || exit 1
ONBUILD RUN echo triggered
MAINTAINER someone@example.com
"#;
    let res = e.build(df, "cfg:1").unwrap();
    assert_eq!(res.layers_built, 0);
    let c = e.config("cfg:1");
    let cfg = &c["config"];
    assert_eq!(
        cfg["Env"],
        json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "APP=web",
            "DIR=/srv/none",
            "MODE=prod",
            "LEGACY=two words"
        ])
    );
    assert_eq!(cfg["Labels"]["org.opencontainers.image.version"], "1.0");
    assert_eq!(cfg["Labels"]["with space"], "a b");
    assert_eq!(
        cfg["ExposedPorts"],
        json!({"80/tcp": {}, "443/udp": {}, "8000/tcp": {}, "8001/tcp": {}})
    );
    assert_eq!(
        cfg["Volumes"],
        json!({"/data": {}, "/logs": {}, "/cache": {}})
    );
    assert_eq!(cfg["User"], "app:staff");
    assert_eq!(cfg["StopSignal"], "SIGQUIT");
    assert_eq!(cfg["Shell"], json!(["/bin/ash", "-eo", "pipefail", "-c"]));
    // Exec form is not expanded; shell form goes through SHELL.
    assert_eq!(cfg["Entrypoint"], json!(["/bin/web", "--dir=$DIR"]));
    assert_eq!(
        cfg["Cmd"],
        json!(["/bin/ash", "-eo", "pipefail", "-c", "serve --mode $MODE"])
    );
    assert_eq!(
        cfg["Healthcheck"],
        json!({
            "Test": ["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"],
            "Interval": 30_000_000_000u64,
            "Timeout": 90_000_000_000u64,
            "Retries": 3
        })
    );
    assert_eq!(cfg["OnBuild"], json!(["RUN echo triggered"]));
    assert_eq!(c["author"], "someone@example.com");
    assert_eq!(c["rootfs"]["diff_ids"], json!([]));
    // Every instruction after FROM has a history entry, all empty layers.
    let h = c["history"].as_array().unwrap();
    assert_eq!(h.len(), 15, "{h:#?}");
    assert!(h.iter().all(|e| e["empty_layer"] == true));
    assert_eq!(h[2]["created_by"], "ENV LEGACY=two words");
}

#[test]
fn build_args_override_defaults_and_target_picks_a_stage() {
    let e = Env::new();
    let df = "ARG WHO=world\nFROM scratch AS one\nARG WHO\nENV GREETING=hello-$WHO\nFROM scratch AS two\nENV GREETING=second-${WHO:-unset}\n";
    let mut o = e.opts(df, "args:1");
    o.build_args.insert("WHO".into(), "kcore".into());
    o.target = Some("one".into());
    e.build_with(&o).unwrap();
    assert_eq!(
        e.config("args:1")["config"]["Env"][1],
        "GREETING=hello-kcore"
    );
    o.target = None;
    o.tag = Some("args:2".into());
    e.build_with(&o).unwrap();
    // A global ARG is not in scope in a stage that does not declare it.
    assert_eq!(
        e.config("args:2")["config"]["Env"][1],
        "GREETING=second-unset"
    );
    o.target = Some("three".into());
    assert!(matches!(e.build_with(&o), Err(Error::StageNotFound(_))));
}

#[test]
fn entrypoint_resets_an_inherited_cmd() {
    let e = Env::new();
    e.build("FROM scratch\nCMD [\"a\"]\n", "base:1").unwrap();
    e.build("FROM base:1\nENTRYPOINT [\"e\"]\n", "child:1")
        .unwrap();
    assert_eq!(e.config("child:1")["config"]["Cmd"], json!(null));
    e.build("FROM base:1\nCMD [\"b\"]\nENTRYPOINT [\"e\"]\n", "child:2")
        .unwrap();
    assert_eq!(e.config("child:2")["config"]["Cmd"], json!(["b"]));
}

#[test]
fn healthcheck_none_and_exec_form() {
    let e = Env::new();
    e.build("FROM scratch\nHEALTHCHECK NONE\n", "hc:1").unwrap();
    assert_eq!(
        e.config("hc:1")["config"]["Healthcheck"],
        json!({"Test": ["NONE"]})
    );
    e.build(
        "FROM scratch\nHEALTHCHECK CMD [\"/bin/check\", \"-q\"]\n",
        "hc:2",
    )
    .unwrap();
    assert_eq!(
        e.config("hc:2")["config"]["Healthcheck"]["Test"],
        json!(["CMD", "/bin/check", "-q"])
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let e = Env::new();
    let err = e.build("FROM scratch\n\nFOO bar\n", "bad:1").unwrap_err();
    assert_eq!(err.to_string(), "Dockerfile:3: unknown instruction: FOO");
    let err = e
        .build("FROM scratch\nENV A=\"unterminated\n", "bad:2")
        .unwrap_err();
    assert!(err.to_string().starts_with("Dockerfile:2: "), "{err}");
    let err = e
        .build("FROM scratch\nEXPOSE 80/xyz\n", "bad:3")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Dockerfile:2: invalid containerPort: 80/xyz"
    );
    let err = e
        .build("FROM scratch\nCOPY --bogus a b\n", "bad:4")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Dockerfile:2: unknown flag --bogus for COPY"
    );
    let err = e
        .build("FROM scratch\nSHELL /bin/sh\n", "bad:5")
        .unwrap_err();
    assert!(
        err.to_string().starts_with("Dockerfile:2: SHELL requires"),
        "{err}"
    );
}

// ----- file instructions (root) ------------------------------------------------------

#[test]
fn copy_globs_chown_chmod_and_dockerignore() {
    need_root!();
    let e = Env::new();
    e.busybox();
    e.file("a.txt", "a");
    e.file("b.txt", "b");
    e.file("c.log", "c");
    e.file("dir/x", "x");
    e.file("dir/sub/y", "y");
    e.file("dir/skip.tmp", "no");
    e.file("secret", "no");
    e.file(".dockerignore", "secret\n**/*.tmp\n");
    std::fs::set_permissions(
        e.ctx.join("b.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let df = format!(
        "FROM {BUSYBOX}\nCOPY *.txt /glob/\nCOPY --chown=app:staff --chmod=640 c.log /owned/c.log\nCOPY dir /tree\nCOPY --chown=1234 dir/x rel/\nWORKDIR /w\nCOPY a.txt .\n"
    );
    e.build(&df, "copy:1").unwrap();
    let r = e.rootfs("copy:1");
    assert_eq!(read(&r.join("glob/a.txt")), "a");
    assert_eq!(attrs(&r.join("glob/b.txt")), (0o600, 0, 0));
    assert_eq!(attrs(&r.join("owned/c.log")), (0o640, 1000, 50));
    assert_eq!(read(&r.join("tree/sub/y")), "y");
    assert!(!r.join("tree/skip.tmp").exists(), ".dockerignore ignored");
    assert_eq!(attrs(&r.join("rel/x")).1, 1234);
    assert_eq!(attrs(&r.join("rel/x")).2, 0);
    assert_eq!(read(&r.join("w/a.txt")), "a");
    let err = e
        .build(&format!("FROM {BUSYBOX}\nCOPY secret /\n"), "copy:2")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Dockerfile:2: COPY source \"secret\" not found in the build context"
    );
    let err = e
        .build(&format!("FROM {BUSYBOX}\n\nCOPY nope*.txt /\n"), "copy:3")
        .unwrap_err();
    assert!(
        matches!(err, Error::SourceNotFound { line: 3, .. }),
        "{err}"
    );
    let err = e
        .build(&format!("FROM {BUSYBOX}\nCOPY a.txt b.txt /x\n"), "copy:4")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("must be a directory and end with a /"),
        "{err}"
    );
}

#[test]
fn copy_exclude_and_link() {
    need_root!();
    let e = Env::new();
    e.busybox();
    e.file("src/keep.rs", "k");
    e.file("src/drop.bak", "d");
    let df = format!(
        "FROM {BUSYBOX}\nCOPY --exclude=*.bak src /src/\nCOPY --link src/keep.rs /linked/\n"
    );
    let res = e.build(&df, "ex:1").unwrap();
    assert_eq!(res.layers_built, 2);
    let r = e.rootfs("ex:1");
    assert!(r.join("src/keep.rs").exists());
    assert!(!r.join("src/drop.bak").exists());
    assert_eq!(read(&r.join("linked/keep.rs")), "k");
    // A --link layer does not depend on its parent: another base reuses it.
    let df2 = format!("FROM {BUSYBOX}\nENV X=1\nCOPY --link src/keep.rs /linked/\n");
    let res = e.build(&df2, "ex:2").unwrap();
    assert_eq!((res.layers_built, res.steps_cached), (0, 1));
}

#[test]
fn add_extracts_local_tars() {
    need_root!();
    let e = Env::new();
    e.busybox();
    e.tar("files.tar", &[("one", "1"), ("d/two", "2")]);
    let df = format!("FROM {BUSYBOX}\nADD files.tar /x/\nCOPY files.tar /y/\n");
    e.build(&df, "add:1").unwrap();
    let r = e.rootfs("add:1");
    assert_eq!(read(&r.join("x/one")), "1");
    assert_eq!(read(&r.join("x/d/two")), "2");
    assert!(r.join("y/files.tar").is_file(), "COPY does not extract");
    let err = e
        .build(
            &format!("FROM {BUSYBOX}\nADD https://example.com/x /\n"),
            "add:2",
        )
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { line: 2, .. }), "{err}");
}

#[test]
fn run_shell_and_exec_forms_with_env_args_user_and_workdir() {
    need_root!();
    let e = Env::new();
    e.busybox();
    let df = format!(
        "FROM {BUSYBOX}\nARG FLAVOUR=plain\nENV GREETING=hi\nWORKDIR /work\nRUN echo \"$GREETING $FLAVOUR $(pwd)\" > out && rm /etc/group\nRUN [\"/bin/sh\", \"-c\", \"id -u > uid0\"]\nUSER app\nRUN id -u > /tmp/uid1 && touch /tmp/owned\nSHELL [\"/bin/sh\", \"-ec\"]\nRUN test \"$0\" = /bin/sh\n"
    );
    let mut o = e.opts(&df, "run:1");
    o.build_args.insert("FLAVOUR".into(), "salty".into());
    e.build_with(&o).unwrap();
    let r = e.rootfs("run:1");
    assert_eq!(read(&r.join("work/out")), "hi salty /work\n");
    assert_eq!(read(&r.join("work/uid0")), "0\n");
    assert_eq!(read(&r.join("tmp/uid1")), "1000\n");
    assert_eq!(attrs(&r.join("tmp/owned")).1, 1000);
    assert!(
        !r.join("etc/group").exists(),
        "the whiteout deletes /etc/group"
    );
    // Mount points the runtime made are not part of the layers.
    assert!(!r.join("proc").exists() && !r.join("sys").exists());
    let c = e.config("run:1");
    assert!(c["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| !v.as_str().unwrap().starts_with("FLAVOUR")));
    let h: Vec<String> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        h.iter()
            .any(|s| s.starts_with("RUN |1 FLAVOUR=salty /bin/sh -c echo")),
        "{h:?}"
    );
}

#[test]
fn run_network_is_loopback_only_by_default() {
    need_root!();
    let e = Env::new();
    e.busybox();
    let df = format!("FROM {BUSYBOX}\nRUN cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /ifaces && ping -c1 -W1 127.0.0.1 >/dev/null\nRUN --network=host cat /proc/net/dev | tail -n +3 | wc -l > /host-ifaces\n");
    e.build(&df, "net:1").unwrap();
    let r = e.rootfs("net:1");
    assert_eq!(read(&r.join("ifaces")), "lo\n");
    let host = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count()
        - 2;
    assert_eq!(read(&r.join("host-ifaces")).trim(), host.to_string());
}

#[test]
fn run_mounts_cache_bind_tmpfs() {
    need_root!();
    let e = Env::new();
    e.busybox();
    e.file("conf/app.conf", "port=80\n");
    let df = format!(
        "FROM {BUSYBOX} AS tools\nRUN echo tool > /tool\nFROM {BUSYBOX}\nRUN --mount=type=cache,target=/cache echo x >> /cache/log && wc -l < /cache/log > /count\nRUN --mount=type=bind,source=conf,target=/mnt cp /mnt/app.conf /app.conf\nRUN --mount=type=bind,from=tools,source=/tool,target=/t cp /t /tool-copy\nRUN --mount=type=tmpfs,target=/scratch touch /scratch/f && grep -q ' /scratch tmpfs' /proc/mounts\n"
    );
    e.build(&df, "mnt:1").unwrap();
    let r = e.rootfs("mnt:1");
    assert_eq!(read(&r.join("count")).trim(), "1");
    assert_eq!(read(&r.join("app.conf")), "port=80\n");
    assert_eq!(read(&r.join("tool-copy")), "tool\n");
    assert!(
        !r.join("scratch/f").exists(),
        "tmpfs content is not in the image"
    );
    assert!(
        !r.join("cache/log").exists(),
        "cache content is not in the image"
    );
    // The cache mount persists across builds.
    let mut o = e.opts(&df, "mnt:2");
    o.no_cache = true;
    e.build_with(&o).unwrap();
    assert_eq!(read(&e.rootfs("mnt:2").join("count")).trim(), "2");
}

#[test]
fn failing_run_reports_exit_code_and_last_lines() {
    need_root!();
    let e = Env::new();
    e.busybox();
    let df = format!("FROM {BUSYBOX}\n\nRUN for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25; do echo line$i; done; echo oops >&2; exit 3\n");
    let err = e.build(&df, "fail:1").unwrap_err();
    match &err {
        Error::RunFailed {
            line,
            status,
            output,
            ..
        } => {
            assert_eq!(*line, 3);
            assert!(status.contains('3'), "{status}");
            assert_eq!(output.last().map(String::as_str), Some("oops"));
            assert_eq!(output.len(), 20);
            assert!(!output.iter().any(|l| l == "line5"));
        }
        other => panic!("{other}"),
    }
    assert!(
        err.to_string().starts_with("Dockerfile:3: RUN for i in"),
        "{err}"
    );
    // Nothing is left mounted or in the layer store but the base's layer.
    let left: Vec<String> = e
        .layers
        .list()
        .unwrap()
        .into_iter()
        .map(|l| l.id().to_string())
        .collect();
    assert!(left.iter().all(|id| !id.starts_with("kbuild-")), "{left:?}");
}

#[test]
fn onbuild_triggers_run_in_the_child() {
    need_root!();
    let e = Env::new();
    e.busybox();
    e.build(
        &format!("FROM {BUSYBOX}\nONBUILD RUN echo from-trigger > /trig\n"),
        "ob:base",
    )
    .unwrap();
    e.build("FROM ob:base\nENV X=1\n", "ob:child").unwrap();
    let r = e.rootfs("ob:child");
    assert_eq!(read(&r.join("trig")), "from-trigger\n");
    assert_eq!(e.config("ob:child")["config"]["OnBuild"], json!(null));
}

/// The Dockerfile of the issue: busybox steps make files, a scratch stage copies them.
pub const MULTI_STAGE: &str = "FROM kcore.test/busybox:1 AS make
WORKDIR /out
COPY greeting.txt ./
RUN mkdir -p bin etc/app && cp /bin/busybox bin/busybox && ln -s busybox bin/sh \\
 && echo \"built\" > etc/app/state && chmod 600 etc/app/state \\
 && chown 1000:50 etc/app && cat greeting.txt > etc/app/greeting
RUN chmod 4755 bin/busybox

FROM scratch
COPY --from=make /out/ /
COPY --chown=1000:1000 greeting.txt /home/app/
ENV APP_MODE=demo
WORKDIR /home/app
ENTRYPOINT [\"/bin/sh\", \"-c\"]
CMD [\"cat /etc/app/greeting\"]
";

#[test]
fn multi_stage_busybox_to_scratch_and_the_cache() {
    need_root!();
    let e = Env::new();
    e.busybox();
    e.file("greeting.txt", "hello\n");
    let first = e.build(MULTI_STAGE, "ms:1").unwrap();
    let r = e.rootfs("ms:1");
    assert_eq!(read(&r.join("etc/app/greeting")), "hello\n");
    assert_eq!(attrs(&r.join("etc/app/state")), (0o600, 0, 0));
    assert_eq!(attrs(&r.join("etc/app")), (0o755, 1000, 50));
    assert_eq!(attrs(&r.join("bin/busybox")).0, 0o4755);
    assert_eq!(
        std::fs::read_link(r.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    assert_eq!(attrs(&r.join("home/app/greeting.txt")), (0o644, 1000, 1000));
    // The contents of /out, not /out itself.
    assert!(!r.join("out").exists());
    assert_eq!(read(&r.join("greeting.txt")), "hello\n");
    let c = e.config("ms:1");
    assert_eq!(c["config"]["WorkingDir"], "/home/app");
    // COPY --from and COPY; WORKDIR finds /home/app made already (an empty layer).
    assert_eq!(
        c["rootfs"]["diff_ids"].as_array().unwrap().len(),
        2,
        "{c:#}"
    );

    // Nothing changed: no new layer, the same layers.
    let blobs = e.images.content().list().unwrap().len();
    let again = e.build(MULTI_STAGE, "ms:2").unwrap();
    assert_eq!(again.layers_built, 0);
    // Every file step: WORKDIR, COPY, RUN, RUN; COPY --from, COPY, WORKDIR.
    assert_eq!((first.layers_built, first.steps_cached), (6, 0));
    assert_eq!(again.steps_cached, 7);
    assert_eq!(e.config("ms:2")["rootfs"], c["rootfs"]);
    // Only a new config and manifest.
    assert!(e.images.content().list().unwrap().len() <= blobs + 2);

    // One COPY'd file changes: rebuilt from the step that copies it.
    e.file("greeting.txt", "changed\n");
    let third = e.build(MULTI_STAGE, "ms:3").unwrap();
    // make: WORKDIR cached; COPY, RUN, RUN rebuilt; scratch: COPY --from, COPY rebuilt.
    assert_eq!(
        third.steps_cached, 1,
        "only WORKDIR /out comes from the cache"
    );
    assert_eq!(third.layers_built, 5);
    assert_eq!(
        read(&e.rootfs("ms:3").join("etc/app/greeting")),
        "changed\n"
    );

    // --no-cache rebuilds everything.
    let mut o = e.opts(MULTI_STAGE, "ms:4");
    o.no_cache = true;
    let fourth = e.build_with(&o).unwrap();
    assert_eq!(fourth.steps_cached, 0);
}

#[test]
fn copy_from_an_image_and_a_stage_by_index_and_from_a_stage() {
    need_root!();
    let e = Env::new();
    e.busybox();
    let df = format!(
        "FROM {BUSYBOX}\nRUN echo zero > /zero\nFROM 0 AS again\nRUN cat /zero > /copied\nFROM scratch\nCOPY --from={BUSYBOX} /etc/passwd /etc/\nCOPY --from=0 /zero /\nCOPY --from=again --chmod=600 /copied /\n"
    );
    e.build(&df, "from:1").unwrap();
    let r = e.rootfs("from:1");
    assert!(read(&r.join("etc/passwd")).starts_with("root:x:0:0"));
    assert_eq!(read(&r.join("zero")), "zero\n");
    assert_eq!(attrs(&r.join("copied")), (0o600, 0, 0));
    let err = e
        .build(
            &format!("FROM {BUSYBOX}\nCOPY --from={BUSYBOX} /nope /\n"),
            "from:2",
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Dockerfile:2: COPY source \"/nope\" not found in {BUSYBOX}")
    );
}

#[test]
fn xattrs_a_run_step_keeps_go_into_its_layer() {
    need_root!();
    let e = Env::new();
    e.busybox();
    // A base layer with a file carrying a user xattr and file capabilities
    // (cap_net_raw+ep), as PAX records.
    let cap: Vec<u8> = [0x0200_0001u32, 1 << 13, 0, 0, 0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_pax_extensions([
        ("SCHILY.xattr.security.capability", cap.as_slice()),
        ("SCHILY.xattr.user.kcore.note", b"hello".as_slice()),
    ])
    .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(4);
    tar.append_data(&mut h, "opt/tool", b"tool".as_slice())
        .unwrap();
    e.with_layer(
        BUSYBOX,
        "kcore.test/xattr-base:1",
        &tar.into_inner().unwrap(),
    );
    let base = e.rootfs("kcore.test/xattr-base:1");
    let get = |p: &Path, k: &str| -> Option<Vec<u8>> {
        let mut v = vec![0u8; 256];
        let n = rustix::fs::lgetxattr(p, k, &mut v[..]).ok()?;
        v.truncate(n);
        Some(v)
    };
    if get(&base.join("opt/tool"), "user.kcore.note").is_none() {
        eprintln!("skipping: the temp dir's file system keeps no user xattrs");
        return;
    }
    assert_eq!(
        get(&base.join("opt/tool"), "security.capability"),
        Some(cap.clone())
    );
    // chmod copies the file up into the step's upper dir with its xattrs (and keeps
    // file capabilities, which a write would drop); the layer must carry them.
    let df = "FROM kcore.test/xattr-base:1\nRUN chmod 0750 /opt/tool\n";
    let r = e.build(df, "xattr:1").unwrap();
    assert_eq!(r.layers_built, 1);
    // Only the step's layer, unpacked alone, holds opt/tool: check there.
    let img = e.images.inspect("xattr:1").unwrap();
    let top = img.layers.last().unwrap();
    let blob = e.images.content().open_blob(&top.digest).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    let mut records = Vec::new();
    for entry in ar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == Path::new("opt/tool") {
            for x in entry.pax_extensions().unwrap().into_iter().flatten() {
                let x = x.unwrap();
                records.push((x.key().unwrap().to_owned(), x.value_bytes().to_vec()));
            }
        }
    }
    assert_eq!(
        records,
        vec![
            ("SCHILY.xattr.security.capability".to_owned(), cap.clone()),
            ("SCHILY.xattr.user.kcore.note".to_owned(), b"hello".to_vec()),
        ]
    );
    // and the unpacker applies them
    let root = e.rootfs("xattr:1");
    let tool = root.join("opt/tool");
    assert_eq!(attrs(&tool).0, 0o750);
    assert_eq!(get(&tool, "user.kcore.note"), Some(b"hello".to_vec()));
    assert_eq!(get(&tool, "security.capability"), Some(cap));
}
