//! `kcore.net`: the pod-subnet route table of kcore-vxlan and the Service
//! table of kcore-netbridge.

use std::net::{Ipv4Addr, SocketAddrV4};

use kcore_netbridge::{
    Endpoint, Protocol, Service, ServiceTable as RsServiceTable, SessionAffinity,
};
use kcore_vxlan::{Ipv4Net, RouteTable as RsRouteTable};
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::errors;

fn parse_net(s: &str) -> PyResult<Ipv4Net> {
    let net = if s.contains('/') {
        s.parse::<Ipv4Net>()
            .map_err(|e| PyValueError::new_err(format!("invalid IPv4 prefix {s:?}: {e}")))?
    } else {
        Ipv4Net::new(parse_ip(s)?, 32).map_err(|e| PyValueError::new_err(e.to_string()))?
    };
    Ok(net.trunc())
}

fn parse_ip(s: &str) -> PyResult<Ipv4Addr> {
    s.parse::<Ipv4Addr>()
        .map_err(|e| PyValueError::new_err(format!("invalid IPv4 address {s:?}: {e}")))
}

/// A longest-prefix-match IPv4 route table: prefixes (`"10.244.1.0/24"`) to
/// any Python values (a node name, a dict, ...).
#[pyclass(module = "kcore.net", name = "RouteTable")]
pub(crate) struct RouteTable {
    inner: RsRouteTable<Py<PyAny>>,
}

#[pymethods]
impl RouteTable {
    /// An empty table, filled from `routes` (a mapping or pairs of prefix and value).
    #[new]
    #[pyo3(signature = (routes=None))]
    fn new(routes: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut t = RouteTable {
            inner: RsRouteTable::new(),
        };
        if let Some(routes) = routes {
            let pairs = match routes.cast::<PyDict>() {
                Ok(d) => d.items().into_any(),
                Err(_) => routes.clone(),
            };
            for pair in pairs.try_iter()? {
                let pair = pair?;
                let tuple = pair.cast::<PyTuple>().map_err(|_| {
                    PyTypeError::new_err("routes must be a mapping or (prefix, value) pairs")
                })?;
                let (prefix, value): (String, Bound<'_, PyAny>) = tuple.extract()?;
                t.insert(&prefix, value)?;
            }
        }
        Ok(t)
    }

    /// Adds or replaces the route for `prefix`; returns the value it replaced.
    fn insert(&mut self, prefix: &str, value: Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        let net = parse_net(prefix)?;
        Ok(self.inner.insert(net, value.unbind()))
    }

    /// Removes the route for exactly `prefix`; returns its value, or None.
    fn remove(&mut self, prefix: &str) -> PyResult<Option<Py<PyAny>>> {
        Ok(self.inner.remove(parse_net(prefix)?))
    }

    /// The value of the longest prefix holding `ip`, or None.
    fn lookup(&self, py: Python<'_>, ip: &str) -> PyResult<Option<Py<PyAny>>> {
        Ok(self.inner.lookup(parse_ip(ip)?).map(|v| v.clone_ref(py)))
    }

    /// `(prefix, value)` of the longest prefix holding `ip`, or None.
    fn lookup_entry(&self, py: Python<'_>, ip: &str) -> PyResult<Option<(String, Py<PyAny>)>> {
        Ok(self
            .inner
            .lookup_entry(parse_ip(ip)?)
            .map(|(net, v)| (net.to_string(), v.clone_ref(py))))
    }

    /// The value stored for exactly `prefix`, or None.
    fn get(&self, py: Python<'_>, prefix: &str) -> PyResult<Option<Py<PyAny>>> {
        Ok(self.inner.get(parse_net(prefix)?).map(|v| v.clone_ref(py)))
    }

    /// Every `(prefix, value)` pair.
    fn items(&self, py: Python<'_>) -> Vec<(String, Py<PyAny>)> {
        self.inner
            .iter()
            .map(|(net, v)| (net.to_string(), v.clone_ref(py)))
            .collect()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __contains__(&self, prefix: &str) -> PyResult<bool> {
        Ok(self.inner.get(parse_net(prefix)?).is_some())
    }

    fn __getitem__(&self, py: Python<'_>, ip: &str) -> PyResult<Py<PyAny>> {
        self.lookup(py, ip)?
            .ok_or_else(|| PyKeyError::new_err(ip.to_owned()))
    }

    fn __repr__(&self) -> String {
        format!("<kcore.net.RouteTable with {} routes>", self.inner.len())
    }
}

fn protocol(s: &str) -> PyResult<Protocol> {
    match s.to_ascii_uppercase().as_str() {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "SCTP" => Ok(Protocol::Sctp),
        _ => Err(PyValueError::new_err(format!(
            "protocol must be TCP, UDP or SCTP, not {s:?}"
        ))),
    }
}

fn socket_addr(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<SocketAddrV4> {
    if let Ok(s) = obj.cast::<PyString>() {
        let s = s.to_str()?;
        return s
            .parse()
            .map_err(|e| PyValueError::new_err(format!("{what}: invalid ip:port {s:?}: {e}")));
    }
    let (ip, port): (String, u16) = obj
        .extract()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be \"ip:port\" or (ip, port)")))?;
    Ok(SocketAddrV4::new(parse_ip(&ip)?, port))
}

fn opt_item<'py>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    Ok(d.get_item(key)?.filter(|v| !v.is_none()))
}

fn req_item<'py>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<Bound<'py, PyAny>> {
    opt_item(d, key)?.ok_or_else(|| PyKeyError::new_err(format!("service needs {key:?}")))
}

/// A Service from its dict form (see `ServiceTable.upsert`).
fn service(d: &Bound<'_, PyDict>) -> PyResult<Service> {
    let name: String = req_item(d, "name")?.extract()?;
    let proto = match opt_item(d, "protocol")? {
        Some(p) => protocol(&p.extract::<String>()?)?,
        None => Protocol::Tcp,
    };
    let ip: String = req_item(d, "cluster_ip")?.extract()?;
    let port: u16 = req_item(d, "port")?.extract()?;
    let mut svc = Service::cluster_ip(name, proto, parse_ip(&ip)?, port);
    svc.node_port = opt_item(d, "node_port")?.map(|v| v.extract()).transpose()?;
    if let Some(ips) = opt_item(d, "load_balancer_ips")? {
        for ip in ips.try_iter()? {
            svc.load_balancer_ips
                .push(parse_ip(&ip?.extract::<String>()?)?);
        }
    }
    svc.affinity = match opt_item(d, "session_affinity")? {
        None => SessionAffinity::None,
        Some(a) => match a.extract::<String>()?.as_str() {
            "None" => SessionAffinity::None,
            "ClientIP" => SessionAffinity::ClientIp {
                timeout_secs: match opt_item(d, "affinity_timeout")? {
                    Some(t) => t.extract()?,
                    None => 10800,
                },
            },
            other => {
                return Err(PyValueError::new_err(format!(
                    "session_affinity must be \"None\" or \"ClientIP\", not {other:?}"
                )))
            }
        },
    };
    if let Some(eps) = opt_item(d, "endpoints")? {
        for ep in eps.try_iter()? {
            let ep = ep?;
            let endpoint = match ep.cast::<PyDict>() {
                Ok(e) => {
                    let ip: String = req_item(e, "ip")?.extract()?;
                    let port: u16 = req_item(e, "port")?.extract()?;
                    let ready = match opt_item(e, "ready")? {
                        Some(r) => r.extract()?,
                        None => true,
                    };
                    Endpoint {
                        addr: SocketAddrV4::new(parse_ip(&ip)?, port),
                        ready,
                        local: true,
                    }
                }
                Err(_) => Endpoint {
                    addr: socket_addr(&ep, "endpoint")?,
                    ready: true,
                    local: true,
                },
            };
            svc.endpoints.push(endpoint);
        }
    }
    Ok(svc)
}

/// The Service load-balancing table: frontends (cluster IP, load-balancer
/// IPs and node port, per protocol) to ready endpoints, picked per flow with
/// Maglev consistent hashing.
#[pyclass(module = "kcore.net", name = "ServiceTable")]
pub(crate) struct ServiceTable {
    inner: RsServiceTable,
}

#[pymethods]
impl ServiceTable {
    /// An empty table.
    #[new]
    fn new() -> Self {
        ServiceTable {
            inner: RsServiceTable::new(),
        }
    }

    /// Inserts or replaces a Service given as a dict: `name`, `cluster_ip`,
    /// `port`, and optionally `protocol` (`"TCP"`), `node_port`,
    /// `load_balancer_ips`, `session_affinity` (`"None"` or `"ClientIP"`),
    /// `affinity_timeout` (seconds), `endpoints` (`"ip:port"` strings or
    /// dicts with `ip`, `port`, `ready`). Raises `kcore.NetworkError` for an
    /// invalid Service.
    fn upsert(&mut self, service: &Bound<'_, PyDict>) -> PyResult<()> {
        let svc = self::service(service)?;
        self.inner.upsert(&svc).map_err(errors::network)
    }

    /// Removes a Service by name; returns whether it was there.
    fn remove(&mut self, name: &str) -> bool {
        self.inner.remove(name)
    }

    /// The backend `(ip, port)` for a new flow from `client` (`"ip:port"` or
    /// `(ip, port)`) to `vip:port`, or None when nothing serves it.
    #[pyo3(signature = (vip, port, client, protocol="TCP"))]
    fn pick(
        &self,
        vip: &str,
        port: u16,
        client: &Bound<'_, PyAny>,
        protocol: &str,
    ) -> PyResult<Option<(String, u16)>> {
        let proto = self::protocol(protocol)?;
        let client = socket_addr(client, "client")?;
        Ok(self
            .inner
            .pick(parse_ip(vip)?, port, proto, client)
            .map(|a| (a.ip().to_string(), a.port())))
    }

    /// Number of Services.
    #[getter]
    fn services(&self) -> usize {
        self.inner.services()
    }

    /// Number of frontends (address, port, protocol keys).
    #[getter]
    fn frontends(&self) -> usize {
        self.inner.frontends()
    }

    fn __len__(&self) -> usize {
        self.inner.services()
    }

    fn __repr__(&self) -> String {
        format!(
            "<kcore.net.ServiceTable with {} services>",
            self.inner.services()
        )
    }
}

/// Adds the network classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RouteTable>()?;
    m.add_class::<ServiceTable>()?;
    Ok(())
}
