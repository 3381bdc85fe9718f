//! Running the machine's kubectl against a test [`Cluster`].

use std::process::Command;

use super::Cluster;

/// What kubectl printed and whether it succeeded.
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs kubectl with `args` in the cluster's namespace, feeding `stdin`.
pub async fn kubectl(c: &Cluster, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new("kubectl");
    let home = c.kubeconfig.parent().expect("dir").to_path_buf();
    cmd.arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .arg("--cache-dir")
        .arg(home.join("cache"))
        .arg("-n")
        .arg(&c.namespace)
        .args(args)
        .env("HOME", &home)
        .env_remove("KUBECONFIG");
    let input = stdin.map(str::to_owned);
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::process::Stdio;
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(i) = input {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(i.as_bytes())
                .expect("stdin");
        }
        child.wait_with_output().expect("kubectl output")
    })
    .await
    .expect("join");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The stdout of a kubectl run that must succeed.
pub fn must(o: Out, what: &str) -> String {
    assert!(o.ok, "kubectl {what} failed: {}\n{}", o.stderr, o.stdout);
    o.stdout
}
