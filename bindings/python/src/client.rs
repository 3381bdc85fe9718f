//! `kcore.Client`: a blocking dynamic Kubernetes client (kcore-client), objects
//! as dicts.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use kcore_client::{Client as RsClient, Error as ClientErr, Watch as RsWatch};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};
use serde_json::json;

use crate::convert::{from_py, to_py};
use crate::errors::{chain, ClientError, ConflictError, NotFoundError};

/// A kcore-client error as the matching `kcore.ClientError` subclass.
fn client_err(err: ClientErr) -> PyErr {
    let msg = chain(&err);
    match err {
        ClientErr::NotFound { .. } => NotFoundError::new_err(msg),
        ClientErr::Conflict { .. } => ConflictError::new_err(msg),
        _ => ClientError::new_err(msg),
    }
}

/// A connection to a Kubernetes API server (kcore's or any other).
#[pyclass(module = "kcore", name = "Client", frozen)]
pub(crate) struct Client {
    inner: RsClient,
}

#[pymethods]
impl Client {
    /// Connects with the kubeconfig at `kubeconfig` (None: `$KUBECONFIG`,
    /// then `~/.kube/config`).
    #[new]
    #[pyo3(signature = (kubeconfig=None))]
    fn new(py: Python<'_>, kubeconfig: Option<PathBuf>) -> PyResult<Self> {
        let inner = py
            .detach(|| RsClient::from_kubeconfig(kubeconfig.as_deref()))
            .map_err(client_err)?;
        Ok(Client { inner })
    }

    /// The namespace of the kubeconfig's context (`default` when it names none).
    #[getter]
    fn default_namespace(&self) -> &str {
        self.inner.default_namespace()
    }

    /// Applies a manifest with server-side apply and returns the objects as
    /// stored. `manifest` is YAML or JSON text (several documents, a list or a
    /// `*List` allowed), a dict, or a list of dicts. `force` takes over fields
    /// other managers own; without it such a conflict raises `ConflictError`.
    #[pyo3(signature = (manifest, *, field_manager="kcore-python", force=false))]
    fn apply(
        &self,
        py: Python<'_>,
        manifest: &Bound<'_, PyAny>,
        field_manager: &str,
        force: bool,
    ) -> PyResult<Py<PyList>> {
        let text = match manifest.cast::<PyString>() {
            Ok(s) => s.to_str()?.to_owned(),
            Err(_) => {
                if !(manifest.is_instance_of::<pyo3::types::PyDict>()
                    || manifest.is_instance_of::<PyList>())
                {
                    return Err(PyTypeError::new_err(
                        "manifest must be YAML/JSON text, a dict or a list of dicts",
                    ));
                }
                serde_json::to_string(&from_py(manifest)?)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?
            }
        };
        let objs = py
            .detach(|| self.inner.apply_with(&text, field_manager, force))
            .map_err(client_err)?;
        values(py, &objs)
    }

    /// One object. For namespaced kinds `namespace=None` means the default
    /// namespace. Raises `NotFoundError` when it does not exist.
    #[pyo3(signature = (api_version, kind, name, *, namespace=None))]
    fn get(
        &self,
        py: Python<'_>,
        api_version: &str,
        kind: &str,
        name: &str,
        namespace: Option<&str>,
    ) -> PyResult<Py<PyAny>> {
        let obj = py
            .detach(|| self.inner.get(api_version, kind, namespace, name))
            .map_err(client_err)?;
        Ok(to_py(py, &obj)?.unbind())
    }

    /// Objects of a kind, optionally filtered by a label selector
    /// (`"app=web,tier!=db"`). For namespaced kinds `namespace=None` lists
    /// every namespace.
    #[pyo3(signature = (api_version, kind, *, namespace=None, label_selector=None))]
    fn list(
        &self,
        py: Python<'_>,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> PyResult<Py<PyList>> {
        let objs = py
            .detach(|| {
                self.inner
                    .list(api_version, kind, namespace, label_selector)
            })
            .map_err(client_err)?;
        values(py, &objs)
    }

    /// Deletes one object. Raises `NotFoundError` when it does not exist.
    #[pyo3(signature = (api_version, kind, name, *, namespace=None))]
    fn delete(
        &self,
        py: Python<'_>,
        api_version: &str,
        kind: &str,
        name: &str,
        namespace: Option<&str>,
    ) -> PyResult<()> {
        py.detach(|| self.inner.delete(api_version, kind, namespace, name))
            .map_err(client_err)
    }

    /// Watches a kind: an iterator of `{"type": "ADDED" | "MODIFIED" |
    /// "DELETED", "object": {...}}`, starting with one ADDED per existing
    /// object, until `timeout` seconds pass (None: until closed). An error
    /// from the server is raised from the iteration.
    #[pyo3(signature = (api_version, kind, *, namespace=None, label_selector=None, timeout=None))]
    fn watch(
        &self,
        py: Python<'_>,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        label_selector: Option<&str>,
        timeout: Option<f64>,
    ) -> PyResult<Watch> {
        let timeout = match timeout {
            None => None,
            Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(PyValueError::new_err(format!(
                    "timeout must be a non-negative number of seconds, not {t}"
                )))
            }
        };
        let w = py
            .detach(|| {
                self.inner
                    .watch(api_version, kind, namespace, label_selector, timeout)
            })
            .map_err(client_err)?;
        Ok(Watch {
            inner: Mutex::new(Some(w)),
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "<kcore.Client namespace={:?}>",
            self.inner.default_namespace()
        )
    }
}

fn values(py: Python<'_>, objs: &[serde_json::Value]) -> PyResult<Py<PyList>> {
    let list = PyList::empty(py);
    for o in objs {
        list.append(to_py(py, o)?)?;
    }
    Ok(list.unbind())
}

/// A running watch: iterate it for events; `close()` (or leaving a `with`
/// block) stops it.
#[pyclass(module = "kcore", name = "Watch", frozen)]
pub(crate) struct Watch {
    inner: Mutex<Option<RsWatch>>,
}

#[pymethods]
impl Watch {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let item = py.detach(|| {
            let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let w = guard.as_mut()?;
            let item = w.next();
            if item.is_none() {
                *guard = None;
            }
            item
        });
        match item {
            None => Ok(None),
            Some(Ok(ev)) => {
                let v = json!({ "type": ev.kind.as_str(), "object": ev.object });
                Ok(Some(to_py(py, &v)?.unbind()))
            }
            Some(Err(e)) => Err(client_err(e)),
        }
    }

    /// Stops the watch; iteration ends.
    fn close(&self, py: Python<'_>) {
        let w = py.detach(|| self.inner.lock().unwrap_or_else(|e| e.into_inner()).take());
        drop(w);
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (exc_type, exc, tb))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        let _ = (exc_type, exc, tb);
        self.close(py);
        false
    }
}

/// Adds the client classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Client>()?;
    m.add_class::<Watch>()?;
    Ok(())
}
