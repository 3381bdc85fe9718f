//! A plain-HTTP loopback API server for local experiments:
//! `cargo run -p kcore-apiserver --example dev_server -- <data-dir> [port] [kubeconfig]`.

use kcore_apiserver::ApiServer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "/tmp/kcore-apiserver-dev".into());
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(8080);
    let server = ApiServer::builder()
        .data_dir(dir)
        .listen(([127, 0, 0, 1], port).into())
        .insecure_http(true)
        .build()
        .await?;
    if let Some(kc) = args.next() {
        server.write_kubeconfig(kc)?;
    }
    println!("serving on {}", server.url());
    server.serve().await?;
    Ok(())
}
