//! `kcored`: the kcore reference daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kcored::cluster::{ControlPlane, ControlPlaneConfig, DEFAULT_DATA_DIR};

#[derive(Parser)]
#[command(name = "kcored", version, about = "kcored: the kcore reference daemon")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a one-node cluster on this machine (API server on the embedded store,
    /// scheduler, controllers) and write a kubeconfig for kubectl.
    Up(ServerArgs),
    /// Run the control plane (API server, scheduler, controllers).
    Server(ServerArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// State directory.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Address for the API server (HTTPS).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Also write the admin kubeconfig here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Do not run the scheduler.
    #[arg(long)]
    no_scheduler: bool,
    /// Do not run the controllers.
    #[arg(long)]
    no_controllers: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kcored: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kcored: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Up(a) | Cmd::Server(a) => {
            let cfg = ControlPlaneConfig {
                data_dir: a.data_dir,
                listen: a.listen,
                kubeconfig_out: a.kubeconfig,
                scheduler: !a.no_scheduler,
                controllers: !a.no_controllers,
            };
            let plane = ControlPlane::start(&cfg).await?;
            println!("kcored: API server at {}", plane.url());
            println!(
                "kcored: export KUBECONFIG={} && kubectl get nodes",
                plane.kubeconfig().display()
            );
            plane.run_until(shutdown_signal()?).await
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
