//! `kcore.runtime`: OCI containers from kcore-runtime.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;

use kcore_runtime::{CreateOptions, ExitStatus, Runtime as RsRuntime, DEFAULT_ROOT};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyInt;

use crate::convert::{from_py, ser_to_py};
use crate::errors;

/// A state root holding one directory per container.
#[pyclass(module = "kcore.runtime", name = "Runtime", frozen)]
pub(crate) struct Runtime {
    inner: RsRuntime,
}

/// A duplicate of the descriptor `obj` names: an int, or an object with `fileno()`.
fn fd_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<OwnedFd> {
    let fd: i32 = if obj.is_instance_of::<PyInt>() {
        obj.extract()?
    } else if obj.hasattr("fileno")? {
        obj.call_method0("fileno")?.extract()?
    } else {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a file descriptor or have fileno()"
        )));
    };
    if fd < 0 {
        return Err(PyValueError::new_err(format!(
            "{what}: invalid file descriptor {fd}"
        )));
    }
    // SAFETY: the descriptor is only borrowed for the duplicate made on the next
    // line, while the caller's object (holding it open) is alive.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed
        .try_clone_to_owned()
        .map_err(|e| PyValueError::new_err(format!("{what}: file descriptor {fd}: {e}")))
}

struct Stdio {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

impl Stdio {
    fn new(
        stdin: Option<&Bound<'_, PyAny>>,
        stdout: Option<&Bound<'_, PyAny>>,
        stderr: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        Ok(Stdio {
            stdin: stdin.map(|o| fd_arg(o, "stdin")).transpose()?,
            stdout: stdout.map(|o| fd_arg(o, "stdout")).transpose()?,
            stderr: stderr.map(|o| fd_arg(o, "stderr")).transpose()?,
        })
    }
}

fn parse_spec(
    spec: Option<&Bound<'_, PyAny>>,
    bundle: &std::path::Path,
) -> PyResult<oci_spec::runtime::Spec> {
    match spec {
        None => kcore_runtime::load_spec(bundle).map_err(errors::container),
        Some(obj) => {
            let json = serde_json::to_string(&from_py(obj)?)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            kcore_runtime::parse_spec(&json).map_err(errors::container)
        }
    }
}

impl Runtime {
    #[allow(clippy::too_many_arguments)]
    fn create_or_run(
        &self,
        py: Python<'_>,
        id: &str,
        bundle: PathBuf,
        spec: Option<&Bound<'_, PyAny>>,
        stdin: Option<&Bound<'_, PyAny>>,
        stdout: Option<&Bound<'_, PyAny>>,
        stderr: Option<&Bound<'_, PyAny>>,
        no_pivot: bool,
        run: bool,
    ) -> PyResult<Container> {
        let spec = parse_spec(spec, &bundle)?;
        let stdio = Stdio::new(stdin, stdout, stderr)?;
        let opts = CreateOptions {
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            no_pivot,
            ..CreateOptions::default()
        };
        let c = py
            .detach(|| {
                if run {
                    self.inner.run(id, &bundle, &spec, opts)
                } else {
                    self.inner.create(id, &bundle, &spec, opts)
                }
            })
            .map_err(errors::container)?;
        Ok(Container::new(self.inner.clone(), c))
    }
}

#[pymethods]
impl Runtime {
    /// A runtime keeping container state under `root` (created on first use;
    /// default: `/run/kcore-runc`, the state root of the `kcore-runc` CLI).
    #[new]
    #[pyo3(signature = (root=None))]
    fn new(root: Option<PathBuf>) -> Self {
        Runtime {
            inner: RsRuntime::new(root.unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))),
        }
    }

    /// The state root.
    #[getter]
    fn root(&self) -> PathBuf {
        self.inner.root().to_path_buf()
    }

    /// Ids of the containers under the root.
    fn list(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.list()).map_err(errors::container)
    }

    /// Creates container `id` from `bundle` (holding the rootfs) and `spec` (an
    /// OCI runtime-spec dict; `None` reads `bundle/config.json`). The container
    /// is `created`: call `start()` to run its program. `stdin`/`stdout`/
    /// `stderr` are file descriptors or files (default: inherited).
    #[pyo3(signature = (id, bundle, spec=None, *, stdin=None, stdout=None, stderr=None, no_pivot=false))]
    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        py: Python<'_>,
        id: &str,
        bundle: PathBuf,
        spec: Option<&Bound<'_, PyAny>>,
        stdin: Option<&Bound<'_, PyAny>>,
        stdout: Option<&Bound<'_, PyAny>>,
        stderr: Option<&Bound<'_, PyAny>>,
        no_pivot: bool,
    ) -> PyResult<Container> {
        self.create_or_run(py, id, bundle, spec, stdin, stdout, stderr, no_pivot, false)
    }

    /// Like `create`, and starts the program at once: the container is `running`.
    #[pyo3(signature = (id, bundle, spec=None, *, stdin=None, stdout=None, stderr=None, no_pivot=false))]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        py: Python<'_>,
        id: &str,
        bundle: PathBuf,
        spec: Option<&Bound<'_, PyAny>>,
        stdin: Option<&Bound<'_, PyAny>>,
        stdout: Option<&Bound<'_, PyAny>>,
        stderr: Option<&Bound<'_, PyAny>>,
        no_pivot: bool,
    ) -> PyResult<Container> {
        self.create_or_run(py, id, bundle, spec, stdin, stdout, stderr, no_pivot, true)
    }

    /// Opens an existing container. `wait()` works only on containers this
    /// process created.
    fn load(&self, py: Python<'_>, id: &str) -> PyResult<Container> {
        let c = py
            .detach(|| self.inner.load(id))
            .map_err(errors::container)?;
        Ok(Container::new(self.inner.clone(), c))
    }

    fn __repr__(&self) -> String {
        format!(
            "kcore.runtime.Runtime({:?})",
            self.inner.root().display().to_string()
        )
    }
}

/// A container: `created → running ⇄ paused → stopped`, then deleted.
#[pyclass(module = "kcore.runtime", name = "Container", frozen)]
pub(crate) struct Container {
    runtime: RsRuntime,
    id: String,
    /// `None` once deleted.
    inner: Mutex<Option<kcore_runtime::Container>>,
}

impl Container {
    fn new(runtime: RsRuntime, c: kcore_runtime::Container) -> Self {
        Container {
            runtime,
            id: c.id().to_owned(),
            inner: Mutex::new(Some(c)),
        }
    }

    /// Runs `f` on the container, without the GIL.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut kcore_runtime::Container) -> kcore_runtime::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let c = guard.as_mut().ok_or_else(|| self.deleted())?;
            f(c).map_err(errors::container)
        })
    }

    /// Like [`Container::with`], but when another thread holds the container
    /// (blocked in `wait()`), acts on a fresh handle loaded from the state
    /// directory, so `kill()` can end a `wait()`.
    fn with_any<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut kcore_runtime::Container) -> kcore_runtime::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| match self.inner.try_lock() {
            Ok(mut guard) => {
                let c = guard.as_mut().ok_or_else(|| self.deleted())?;
                f(c).map_err(errors::container)
            }
            Err(std::sync::TryLockError::Poisoned(p)) => {
                let mut guard = p.into_inner();
                let c = guard.as_mut().ok_or_else(|| self.deleted())?;
                f(c).map_err(errors::container)
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                let mut c = self.runtime.load(&self.id).map_err(errors::container)?;
                f(&mut c).map_err(errors::container)
            }
        })
    }

    fn delete_held(
        &self,
        mut guard: std::sync::MutexGuard<'_, Option<kcore_runtime::Container>>,
        force: bool,
    ) -> PyResult<()> {
        let c = guard.as_mut().ok_or_else(|| self.deleted())?;
        let status = c.status();
        if !force && !status.can_delete() {
            // refuse here, keeping this handle (it may own the init process)
            return Err(errors::container(kcore_runtime::Error::InvalidState {
                id: self.id.clone(),
                op: "delete",
                status: status.as_str().into(),
            }));
        }
        let c = guard.take().ok_or_else(|| self.deleted())?;
        c.delete(force).map_err(|e| {
            // keep a handle on what is left, so the caller can retry
            *guard = self.runtime.load(&self.id).ok();
            errors::container(e)
        })
    }

    fn deleted(&self) -> PyErr {
        errors::ContainerError::new_err(format!("container {} was deleted", self.id))
    }
}

#[pymethods]
impl Container {
    /// The container id.
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    /// Host pid of the container's process (0 once stopped).
    #[getter]
    fn pid(&self, py: Python<'_>) -> PyResult<i32> {
        self.with_any(py, |c| Ok(c.state().pid))
    }

    /// `"created"`, `"running"`, `"paused"` or `"stopped"`.
    #[getter]
    fn status(&self, py: Python<'_>) -> PyResult<&'static str> {
        self.with_any(py, |c| Ok(c.status().as_str()))
    }

    /// The runtime-spec state (`ociVersion`, `id`, `status`, `pid`, `bundle`, ...).
    fn state(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let st = self.with_any(py, |c| Ok(c.state()))?;
        Ok(ser_to_py(py, &st)?.unbind())
    }

    /// The container's OCI runtime spec.
    fn spec(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let spec = self.with_any(py, |c| Ok(c.spec().clone()))?;
        Ok(ser_to_py(py, &spec)?.unbind())
    }

    /// Runs the user program of a `created` container.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |c| c.start())
    }

    /// Waits for the program to exit and returns its status the way
    /// `subprocess` does: the exit code, or `-signal` when killed by one.
    /// The GIL is released while waiting.
    fn wait(&self, py: Python<'_>) -> PyResult<i32> {
        let st = self.with(py, |c| c.wait())?;
        Ok(match st {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(sig) => -sig,
        })
    }

    /// Sends `signal` (default SIGTERM) to the program, or with `all` to every
    /// process of its cgroup. Works while another thread is in `wait()`.
    #[pyo3(signature = (signal=15, all=false))]
    fn kill(&self, py: Python<'_>, signal: i32, all: bool) -> PyResult<()> {
        self.with_any(py, |c| c.kill(signal, all))
    }

    /// Freezes every process of the container.
    fn pause(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |c| c.pause())
    }

    /// Thaws a paused container.
    fn resume(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |c| c.resume())
    }

    /// Pids of every process in the container's cgroup.
    fn processes(&self, py: Python<'_>) -> PyResult<Vec<i32>> {
        self.with_any(py, |c| c.processes())
    }

    /// Deletes the container (its cgroup and state); with `force`, kills it
    /// first if it still runs. The object is unusable afterwards.
    #[pyo3(signature = (force=false))]
    fn delete(&self, py: Python<'_>, force: bool) -> PyResult<()> {
        py.detach(|| match self.inner.try_lock() {
            Ok(guard) => self.delete_held(guard, force),
            Err(std::sync::TryLockError::Poisoned(p)) => self.delete_held(p.into_inner(), force),
            // another thread is in wait(): delete through a fresh handle; the
            // waiter returns once the process is gone
            Err(std::sync::TryLockError::WouldBlock) => self
                .runtime
                .load(&self.id)
                .and_then(|c| c.delete(force))
                .map_err(errors::container),
        })
    }

    fn __repr__(&self) -> String {
        format!("<kcore.runtime.Container {:?}>", self.id)
    }
}

/// A runc-style default OCI runtime spec as a dict (rootfs `rootfs`, the
/// default namespaces, mounts, capabilities and masked paths), running `args`
/// when given. Edit it and pass it to `Runtime.create`/`run`.
#[pyfunction]
#[pyo3(signature = (args=None))]
pub(crate) fn default_spec(py: Python<'_>, args: Option<Vec<String>>) -> PyResult<Py<PyAny>> {
    let mut spec = oci_spec::runtime::Spec::default();
    if let Some(args) = args {
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(args));
        process.set_terminal(Some(false));
        spec.set_process(Some(process));
    }
    Ok(ser_to_py(py, &spec)?.unbind())
}

/// Adds the runtime classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(default_spec, m)?)?;
    m.add_class::<Runtime>()?;
    m.add_class::<Container>()?;
    Ok(())
}
