//! kcore-build: Dockerfile builds into the kcore image store, with the semantics of
//! BuildKit's Dockerfile frontend.
//!
//! - [`parse`] reads a Dockerfile (parser directives, comments, line continuations,
//!   `--flags`, exec and shell forms) and names the line of every syntax error;
//!   [`Lexer`] expands `$VAR`, `${VAR:-default}`, `${VAR:+alt}` and removes quotes.
//! - [`Builder`] runs the instructions: `FROM` (an image in the store, pulled when
//!   missing, `scratch`, or an earlier stage), multi-stage builds and `--target`,
//!   `COPY`/`ADD` (globs, `--from`, `--chown`, `--chmod`, `--link`, `--exclude`, local
//!   tar extraction by ADD, `.dockerignore`), `RUN` in a kcore-runtime container on an
//!   overlay snapshot of the previous step (`--mount=type=cache|bind|tmpfs`,
//!   `--network=none|host|default`), and every config instruction (ENV, ARG, WORKDIR, USER,
//!   LABEL, EXPOSE, VOLUME, ENTRYPOINT, CMD, SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD).
//!   Each step that changes files becomes one layer (the overlay upper directory, with
//!   whiteouts) and a history entry; the image is stored with an OCI manifest.
//! - A layer cache keyed by the parent, the instruction and its inputs (file contents
//!   for COPY/ADD): an unchanged rebuild makes no new layer, and a changed file rebuilds
//!   from the step that copies it.
//!
//! Unlike BuildKit, a RUN step gets a network namespace of its own with only loopback
//! by default (as `--network=none`): builds are reproducible and do not depend on the
//! host's network. `--network=host` shares the host's; `--network=default` puts the
//! step on a NAT'd bridge ([`BridgeNetwork`], `kcore-build0` on `10.213.0.0/24` by
//! default) with the host's resolvers.
//!
//! RUN, COPY, ADD and WORKDIR need root (overlay mounts and containers).
//!
//! # Example
//!
//! ```no_run
//! use kcore_build::{BuildOptions, Builder};
//! use kcore_image::ImageStore;
//! use kcore_overlay::LayerStore;
//!
//! let images = ImageStore::open("/var/lib/kcore/images")?;
//! let layers = LayerStore::open("/var/lib/kcore/overlay")?;
//! let opts = BuildOptions {
//!     dockerfile: std::fs::read_to_string("app/Dockerfile")?,
//!     context: "app".into(),
//!     tag: Some("app:v1".into()),
//!     ..BuildOptions::default()
//! };
//! let res = Builder::new(&images, &layers).build(&opts)?;
//! println!("{} ({} new layers)", res.record.manifest, res.layers_built);
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg(target_os = "linux")]

mod engine;
mod error;
mod fscopy;
mod layer;
mod net;
mod parser;
mod pattern;
mod run;

pub use engine::{BuildOptions, BuildResult, Builder, Event, EventFn};
pub use error::{Error, Result};
pub use kcore_netbridge::Ipv4Net;
pub use net::BridgeNetwork;
pub use parser::{parse, Dockerfile, Instruction, Lexer};
pub use pattern::{glob_match, IgnoreRules};
