//! A kcore API server for the C tests: serves plain HTTP on a free loopback
//! port, writes a kubeconfig to the path given as the first argument, prints
//! `ready` and serves until stdin closes (or the process is killed).
//!
//! `cargo run -p kcore-ffi --example test-apiserver -- /tmp/x/kubeconfig`

use std::io::{BufRead, Write};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kubeconfig = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .ok_or("usage: test-apiserver <kubeconfig>")?,
    );
    let data = kubeconfig.with_extension("data");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let running = rt.block_on(async {
        let server = kcore_apiserver::ApiServer::builder()
            .data_dir(&data)
            .listen("127.0.0.1:0".parse().expect("addr"))
            .insecure_http(true)
            .build()
            .await?;
        server.write_kubeconfig(&kubeconfig)?;
        Ok::<_, kcore_apiserver::Error>(server.spawn())
    })?;
    println!("ready {}", running.url());
    std::io::stdout().flush()?;
    // Serve until stdin reaches EOF (the test script closes it, or dies).
    let mut line = String::new();
    while std::io::stdin().lock().read_line(&mut line)? > 0 {
        line.clear();
    }
    rt.block_on(running.shutdown())?;
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
