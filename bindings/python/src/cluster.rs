//! `kcore.Cluster`: a real control plane (API server, scheduler, controllers) with
//! simulated nodes, running inside the Python process for the length of a test.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use kcored::testing::Cluster as RsCluster;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::ClusterError;

/// The running half: the cluster and the tokio runtime its tasks live on.
struct Running {
    runtime: tokio::runtime::Runtime,
    cluster: RsCluster,
}

/// A throw-away cluster: `with kcore.Cluster(nodes=3) as c:`.
#[pyclass(module = "kcore", name = "Cluster", frozen)]
pub(crate) struct Cluster {
    running: Mutex<Option<Running>>,
    kubeconfig: PathBuf,
    url: String,
    data_dir: PathBuf,
    api_client: OnceLock<Py<PyAny>>,
}

/// Seconds from Python as a `Duration`, refusing negative and non-finite values.
fn seconds(what: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a finite number of seconds ≥ 0, not {s}"
        ))
    })
}

impl Cluster {
    /// Runs `f` on the running cluster, or raises if it was stopped.
    fn with_running<T>(&self, f: impl FnOnce(&Running) -> T) -> PyResult<T> {
        let guard = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(r) => Ok(f(r)),
            None => Err(ClusterError::new_err("the cluster was stopped")),
        }
    }
}

#[pymethods]
impl Cluster {
    /// Starts a cluster with `nodes` simulated nodes (`sim-node-0`, …) and returns
    /// once its API server answers and the nodes are registered.
    ///
    /// In seconds: `pod_start_delay` is how long a pod bound to a simulated node
    /// stays Pending, `heartbeat` how often the nodes renew their Leases, and
    /// `node_monitor_grace_period` how long a node may miss them before it is
    /// NotReady.
    #[new]
    #[pyo3(signature = (
        nodes=3,
        *,
        scheduler=true,
        controllers=true,
        pod_start_delay=0.0,
        heartbeat=10.0,
        node_monitor_grace_period=40.0
    ))]
    fn new(
        py: Python<'_>,
        nodes: usize,
        scheduler: bool,
        controllers: bool,
        pod_start_delay: f64,
        heartbeat: f64,
        node_monitor_grace_period: f64,
    ) -> PyResult<Self> {
        let builder = RsCluster::builder()
            .nodes(nodes)
            .scheduler(scheduler)
            .controllers(controllers)
            .pod_start_delay(seconds("pod_start_delay", pod_start_delay)?)
            .heartbeat(seconds("heartbeat", heartbeat)?)
            .node_monitor_grace_period(seconds(
                "node_monitor_grace_period",
                node_monitor_grace_period,
            )?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kcore-cluster")
            .enable_all()
            .build()
            .map_err(|e| ClusterError::new_err(format!("starting the cluster's runtime: {e}")))?;
        let cluster = py
            .detach(|| runtime.block_on(builder.start()))
            .map_err(|e| ClusterError::new_err(format!("{e:#}")))?;
        Ok(Cluster {
            kubeconfig: cluster.kubeconfig().to_owned(),
            url: cluster.url().to_owned(),
            data_dir: cluster.data_dir().to_owned(),
            running: Mutex::new(Some(Running { runtime, cluster })),
            api_client: OnceLock::new(),
        })
    }

    /// The admin kubeconfig: for `kubectl --kubeconfig`, Helm, or any client.
    #[getter]
    fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig.clone()
    }

    /// The API server's URL (`https://127.0.0.1:<port>`).
    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    /// The cluster's state directory, removed when it stops.
    #[getter]
    fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// Whether the cluster is still running.
    #[getter]
    fn running(&self) -> bool {
        self.running.lock().map(|g| g.is_some()).unwrap_or(false)
    }

    /// A `kubernetes.client.ApiClient` for the admin kubeconfig (the official
    /// client, which must be installed), made once and closed on `stop()`.
    #[getter]
    fn api_client(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.with_running(|_| ())?;
        if let Some(c) = self.api_client.get() {
            return Ok(c.clone_ref(py));
        }
        let config = py.import("kubernetes.config")?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("config_file", self.kubeconfig.to_string_lossy())?;
        let client = config
            .call_method("new_client_from_config", (), Some(&kwargs))?
            .unbind();
        // a racing thread may have set it first: hand out the one that stays
        Ok(self.api_client.get_or_init(|| client).clone_ref(py))
    }

    /// The simulated nodes' names.
    fn node_names(&self) -> PyResult<Vec<String>> {
        self.with_running(|r| {
            r.cluster
                .simulation()
                .map(|s| s.node_names())
                .unwrap_or_default()
        })
    }

    /// Makes simulated node `name` fail: it stops heartbeating and its status goes
    /// stale, so the node lifecycle controller marks it NotReady. False if there is
    /// no such node.
    fn fail_node(&self, name: &str) -> PyResult<bool> {
        self.with_running(|r| r.cluster.simulation().is_some_and(|s| s.fail(name)))
    }

    /// Brings a failed simulated node back. False if there is no such node.
    fn recover_node(&self, name: &str) -> PyResult<bool> {
        self.with_running(|r| r.cluster.simulation().is_some_and(|s| s.recover(name)))
    }

    /// Stops every component and deletes the cluster's state; a second call does
    /// nothing.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(c) = self.api_client.get() {
            c.bind(py).call_method0("close")?;
        }
        let taken = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(Running { runtime, cluster }) = taken {
            py.detach(|| {
                runtime.block_on(cluster.stop());
                runtime.shutdown_timeout(Duration::from_secs(5));
            });
        }
        Ok(())
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
    ) -> PyResult<bool> {
        let _ = (exc_type, exc, tb);
        self.stop(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "kcore.Cluster(url={:?}, running={})",
            self.url,
            self.running()
        )
    }
}

/// Adds `Cluster` to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Cluster>()
}
