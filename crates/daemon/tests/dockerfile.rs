//! `kcore image build -f Dockerfile CONTEXT` from the command line, then the image runs
//! in a pod under kcored: a multi-stage build whose first stage runs busybox `sh` steps
//! and whose second stage copies the result onto `scratch`.

mod common;

use std::process::Command;

use common::*;

const NODE_IP: &str = "192.0.2.27";

const DOCKERFILE: &str = "ARG BASE=kcore.local/demo:v1
FROM ${BASE} AS make
WORKDIR /out
COPY message.txt ./
RUN mkdir bin && cp /bin/busybox bin/ && ln -s busybox bin/sh && ln -s busybox bin/cat \\
 && ln -s busybox bin/sleep && sed 's/^/built: /' message.txt > built.txt && rm message.txt

FROM scratch
COPY --from=make /out/ /
ENTRYPOINT [\"/bin/sh\", \"-c\"]
CMD [\"cat /built.txt && sleep 3600\"]
";

#[test]
#[ignore = "needs root"]
fn a_dockerfile_image_runs_in_a_pod() {
    let mut m = Machine::new("kdf", Some(NODE_IP));
    build_demo_image(&m.data, "v1");
    let ctx = m.data.join("dockerfile-ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("message.txt"), "hello from a Dockerfile\n").unwrap();
    std::fs::write(ctx.join("Dockerfile.kcore"), DOCKERFILE).unwrap();
    let build = |extra: &[&str]| {
        let out = Command::new(KCORE)
            .arg("image")
            .arg("--root")
            .arg(&m.data)
            .args(["build", "-t", "kcore.local/built:v1", "-f"])
            .arg(ctx.join("Dockerfile.kcore"))
            .args(extra)
            .arg(&ctx)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kcore image build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = build(&["--build-arg", "BASE=kcore.local/demo:v1"]);
    assert!(first.contains("[make 4/4] RUN mkdir bin"), "{first}");
    // A second build finds every file step in the cache.
    let second = build(&[]);
    assert_eq!(second.matches("CACHED").count(), 4, "{second}");

    m.start_kcored(&[
        "up",
        "--listen",
        "127.0.0.1:6443",
        "--node-ip",
        NODE_IP,
        "--node-name",
        "dockerfile",
        "--no-ingress",
    ]);
    wait_for(60, "the API server", || {
        m.check_alive();
        let (ok, _) = m.kubectl_with(&m.kubeconfig(), &["get", "--raw", "/readyz"]);
        ok.then_some(())
    });
    m.wait_node_ready("dockerfile");
    m.kubectl(&["run", "built", "--image=kcore.local/built:v1"]);
    m.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/built",
        "--timeout=120s",
    ]);
    let logs = wait_for(30, "the pod's output", || {
        let (ok, out) = m.kubectl_with(&m.kubeconfig(), &["logs", "built"]);
        (ok && out.contains("built:")).then_some(out)
    });
    assert_eq!(logs, "built: hello from a Dockerfile\n");
}
