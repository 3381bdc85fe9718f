//! The exception hierarchy: `kcore.KcoreError` and one subclass per error family,
//! and the mapping from each crate's error enum onto it.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::PyErr;

create_exception!(
    kcore,
    KcoreError,
    PyException,
    "Base class of every error raised by kcore."
);
create_exception!(
    kcore,
    ImageError,
    KcoreError,
    "An image store, import, pull or unpack failure (kcore.image)."
);
create_exception!(
    kcore,
    ContainerError,
    KcoreError,
    "A container runtime failure (kcore.runtime)."
);
create_exception!(
    kcore,
    NetworkError,
    KcoreError,
    "A route or service table failure (kcore.net)."
);
create_exception!(
    kcore,
    SchedulerError,
    KcoreError,
    "A scheduling failure: malformed nodes or pods (kcore.scheduler)."
);
create_exception!(
    kcore,
    ClientError,
    KcoreError,
    "A cluster client failure: kubeconfig, transport or API error (kcore.Client)."
);
create_exception!(
    kcore,
    NotFoundError,
    ClientError,
    "The API server answered 404 Not Found."
);
create_exception!(
    kcore,
    ConflictError,
    ClientError,
    "The API server answered 409 Conflict (already exists, or a stale resourceVersion)."
);

create_exception!(
    kcore,
    ClusterError,
    KcoreError,
    "A test cluster failed to start, or was used after it stopped (kcore.Cluster)."
);

/// The full chain of `err` (its message and every source's), as one line.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    msg
}

/// An image-family error as `kcore.ImageError`.
pub(crate) fn image(err: kcore_image::Error) -> PyErr {
    ImageError::new_err(chain(&err))
}

/// A Dockerfile build error as `kcore.ImageError` (builds make images).
pub(crate) fn build(err: kcore_build::Error) -> PyErr {
    ImageError::new_err(chain(&err))
}

/// A layer-store error as `kcore.ImageError` (layers belong to the image family).
pub(crate) fn overlay(err: kcore_overlay::Error) -> PyErr {
    ImageError::new_err(chain(&err))
}

/// A runtime error as `kcore.ContainerError`.
pub(crate) fn container(err: kcore_runtime::Error) -> PyErr {
    ContainerError::new_err(chain(&err))
}

/// A netbridge error as `kcore.NetworkError`.
pub(crate) fn network(err: kcore_netbridge::Error) -> PyErr {
    NetworkError::new_err(chain(&err))
}

/// Adds the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("KcoreError", py.get_type::<KcoreError>())?;
    m.add("ImageError", py.get_type::<ImageError>())?;
    m.add("ContainerError", py.get_type::<ContainerError>())?;
    m.add("NetworkError", py.get_type::<NetworkError>())?;
    m.add("SchedulerError", py.get_type::<SchedulerError>())?;
    m.add("ClientError", py.get_type::<ClientError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("ClusterError", py.get_type::<ClusterError>())?;
    Ok(())
}
