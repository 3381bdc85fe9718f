//! The native half of the `kcore` Python package (`kcore._kcore`), built into
//! a wheel by maturin from `python/pyproject.toml`. The Python package
//! (`python/kcore`) re-exports it as `kcore.image`, `kcore.runtime`,
//! `kcore.net`, `kcore.scheduler`, `kcore.Client` and `kcore.Cluster`, with `.pyi` stubs.
//!
//! Objects cross the boundary as plain dicts and lists; every blocking call
//! releases the GIL; errors are `kcore.KcoreError` subclasses, one per family.

#![deny(missing_docs)]

mod client;
mod cluster;
mod convert;
mod errors;
mod image;
mod net;
mod progress;
mod runtime;
mod scheduler;

use pyo3::prelude::*;

/// The `kcore._kcore` extension module.
#[pymodule]
fn _kcore(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    image::register(m)?;
    runtime::register(m)?;
    net::register(m)?;
    scheduler::register(m)?;
    client::register(m)?;
    cluster::register(m)?;
    Ok(())
}
