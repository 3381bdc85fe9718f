//! Running the machine's kubectl against a test [`Cluster`].

use std::process::Command;

use super::Cluster;

pub use kcore_tests::process::Output as Out;

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
    tokio::task::spawn_blocking(move || kcore_tests::process::output(cmd, input.as_deref()))
        .await
        .expect("join")
}

/// The stdout of a kubectl run that must succeed.
pub fn must(o: Out, what: &str) -> String {
    assert!(o.ok, "kubectl {what} failed: {}\n{}", o.stderr, o.stdout);
    o.stdout
}
