//! `kcore`: the kcore command-line tool.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use kcored::image_cmd;
use kcored::run::{self, RunOptions};
use kcored::units::parse_size;

#[derive(Parser)]
#[command(
    name = "kcore",
    version,
    about = "kcore: containers and a small Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a program in new namespaces, inside a cgroup with limits, on an overlay root.
    Run(RunArgs),
    /// Manage images: build, import, pull, push, save, tag, list, inspect, unpack, remove, prune.
    Image(ImageArgs),
}

#[derive(clap::Args)]
struct ImageArgs {
    /// State directory (images in <root>/images, layers in <root>/overlay).
    #[arg(long, default_value = "/var/lib/kcore")]
    root: PathBuf,
    #[command(subcommand)]
    command: ImageCmd,
}

// `build`'s Dockerfile options make one variant larger; parsed once, it does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum ImageCmd {
    /// Import an OCI image layout (directory or tar) or a `docker save` archive.
    Import {
        /// The layout or archive.
        path: PathBuf,
        /// Name to record for the image.
        #[arg(long)]
        name: Option<String>,
        /// Platform to pick from an index (os/arch[/variant]).
        #[arg(long)]
        platform: Option<String>,
    },
    /// Build an image from a Dockerfile (`build -t NAME [-f FILE] CONTEXT`), or a
    /// one-layer image from files (static binaries, busybox) without a CONTEXT.
    ///
    /// RUN steps get a network namespace with only loopback unless they ask for
    /// `RUN --network=default` (a NAT'd bridge, see --bridge-name) or
    /// `--network=host`; BuildKit's default is its bridge network.
    Build {
        /// Name of the image, e.g. kcore.local/web:v1.
        #[arg(long, short = 't')]
        tag: String,
        /// The build context directory: build from its Dockerfile.
        context: Option<PathBuf>,
        #[command(flatten)]
        dockerfile: image_cmd::DockerfileArgs,
        /// Start from a copy of this directory.
        #[arg(long)]
        from_dir: Option<PathBuf>,
        /// Include the host's static busybox (/bin/busybox) with its applets in /bin.
        #[arg(long)]
        busybox: bool,
        /// Add a file: SRC:DEST (DEST inside the image, e.g. ./app:/bin/app).
        #[arg(long = "add", value_name = "SRC:DEST")]
        add: Vec<String>,
        /// The image's entrypoint (repeat for each argument).
        #[arg(long)]
        entrypoint: Vec<String>,
        /// The image's default command (repeat for each argument).
        #[arg(long)]
        cmd: Vec<String>,
        /// NAME=value environment (repeatable).
        #[arg(long)]
        env: Vec<String>,
        /// Working directory.
        #[arg(long)]
        workdir: Option<String>,
    },
    /// Pull an image from a registry.
    Pull {
        /// e.g. registry.example:5000/repo:tag or repo@sha256:...
        reference: String,
        /// user:password for basic or token auth.
        #[arg(long)]
        creds: Option<String>,
        /// Use plain HTTP (a registry on loopback).
        #[arg(long)]
        plain_http: bool,
        /// Platform to pick from an index (os/arch[/variant]).
        #[arg(long)]
        platform: Option<String>,
    },
    /// Push an image to a registry (OCI distribution).
    Push {
        /// The image in the store.
        name: String,
        /// Where to: registry/repository[:tag] (default: the image's own name).
        dest: Option<String>,
        /// user:password for basic or token auth.
        #[arg(long)]
        creds: Option<String>,
        /// Use plain HTTP (a registry on loopback).
        #[arg(long)]
        plain_http: bool,
        /// Mount blobs from this repository of the same registry.
        #[arg(long)]
        mount_from: Option<String>,
    },
    /// Save images to an OCI layout (a directory, or a tar file) or a docker-archive.
    Save {
        /// The images to save.
        #[arg(required = true)]
        names: Vec<String>,
        /// A tar file, or a directory (existing, or ending in /).
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// oci or docker-archive (`podman load` / `docker load` read both).
        #[arg(long, default_value = "oci")]
        format: String,
    },
    /// Give an image another name.
    Tag {
        /// The image's name (or digest).
        src: String,
        /// The new name.
        dst: String,
    },
    /// List images.
    Ls,
    /// Show an image's record, layers and config as JSON.
    Inspect {
        /// Name, digest or digest prefix.
        name: String,
    },
    /// Unpack an image into the layer store, or flatten it onto a directory.
    Unpack {
        /// Name, digest or digest prefix.
        name: String,
        /// Apply all layers onto this new directory instead.
        #[arg(long)]
        flatten: Option<PathBuf>,
        /// Layers unpacked at once.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
    },
    /// Remove an image's name.
    Rm {
        /// Name, digest or digest prefix.
        name: String,
    },
    /// Delete blobs and layers no image references.
    Prune,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Memory limit (e.g. 64M, 1G).
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Most processes and threads the container may have.
    #[arg(long)]
    pids: Option<i64>,
    /// CPU bandwidth in CPUs (e.g. 0.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// Hostname inside the container.
    #[arg(long, default_value = "kcore")]
    hostname: String,
    /// Share the host's network namespace instead of a new one.
    #[arg(long)]
    host_network: bool,
    /// Extra environment variables, KEY=VALUE.
    #[arg(short, long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Layer store directory.
    #[arg(long, default_value = run::DEFAULT_STORE)]
    store: PathBuf,
    /// Static busybox binary for the base layer.
    #[arg(long, default_value = run::DEFAULT_BUSYBOX)]
    busybox: PathBuf,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<OsString>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kcore: error: {e:#}");
            ExitCode::from(125)
        }
    }
}

/// `--creds user:password`.
fn parse_creds(creds: Option<String>) -> Result<Option<(String, String)>> {
    creds
        .map(|c| {
            c.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--creds must be user:password"))
        })
        .transpose()
}

fn image(a: ImageArgs) -> Result<()> {
    let stores = image_cmd::Stores::new(a.root);
    match a.command {
        ImageCmd::Import {
            path,
            name,
            platform,
        } => image_cmd::import(&stores, &path, name, platform.as_deref()),
        ImageCmd::Pull {
            reference,
            creds,
            plain_http,
            platform,
        } => {
            let args = image_cmd::PullArgs {
                credentials: parse_creds(creds)?,
                plain_http,
                platform,
            };
            image_cmd::pull(&stores, &reference, args)
        }
        ImageCmd::Build {
            tag,
            context: Some(context),
            dockerfile,
            ..
        } => image_cmd::build_dockerfile(&stores, &tag, &context, &dockerfile),
        ImageCmd::Build {
            tag,
            from_dir,
            busybox,
            add,
            entrypoint,
            cmd,
            env,
            workdir,
            ..
        } => {
            let files = add
                .iter()
                .map(|a| image_cmd::parse_add(a))
                .collect::<Result<Vec<_>>>()?;
            let spec = kcore_node::ImageSpec {
                entrypoint,
                cmd,
                env,
                working_dir: workdir,
                user: None,
            };
            let build = image_cmd::Build {
                from_dir,
                busybox,
                files,
                spec,
            };
            image_cmd::build(&stores, &tag, &build)
        }
        ImageCmd::Push {
            name,
            dest,
            creds,
            plain_http,
            mount_from,
        } => {
            let args = image_cmd::PushArgs {
                credentials: parse_creds(creds)?,
                plain_http,
                mount_from,
            };
            image_cmd::push(&stores, &name, dest.as_deref(), args)
        }
        ImageCmd::Save {
            names,
            output,
            format,
        } => image_cmd::save(&stores, &names, &output, &format),
        ImageCmd::Tag { src, dst } => image_cmd::tag(&stores, &src, &dst),
        ImageCmd::Ls => image_cmd::list(&stores),
        ImageCmd::Inspect { name } => image_cmd::inspect(&stores, &name),
        ImageCmd::Unpack {
            name,
            flatten,
            jobs,
        } => image_cmd::unpack(&stores, &name, flatten.as_deref(), jobs.max(1)),
        ImageCmd::Rm { name } => image_cmd::remove(&stores, &name),
        ImageCmd::Prune => image_cmd::prune(&stores),
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Image(a) => image(a).map(|()| ExitCode::SUCCESS),
        Cmd::Run(a) => {
            let mut opts = RunOptions::new(a.command);
            opts.store = a.store;
            opts.busybox = a.busybox;
            opts.hostname = a.hostname;
            opts.memory = a.memory;
            opts.pids = a.pids;
            opts.cpus = a.cpus;
            opts.new_network = !a.host_network;
            opts.env = a.env;
            let status = run::run(&opts)?;
            let code = match (status.code(), status.signal()) {
                (Some(c), _) => c,
                (None, Some(sig)) => 128 + sig,
                (None, None) => 1,
            };
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
    }
}
