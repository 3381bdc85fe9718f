//! ConfigMaps and Secrets a pod refers to, environment resolution and the downward API.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret, Service,
    ServiceAccount,
};
use kcore_k8s::Quantity;
use kube::Api;

use crate::error::{Error, Result};

/// Fetches ConfigMaps and Secrets of one namespace, caching them for one sync.
pub(crate) struct Refs {
    client: kube::Client,
    namespace: String,
    config_maps: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    secrets: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

impl Refs {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Refs {
            client,
            namespace: namespace.to_owned(),
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
        }
    }

    /// A token of the pod's service account for a projected `serviceAccountToken` source:
    /// `current` (the token the volume holds) while it is younger than 80% of its
    /// lifetime, as the kubelet rotates, else a new one from the TokenRequest API, bound
    /// to the pod.
    pub async fn service_account_token(
        &mut self,
        pod: &Pod,
        audience: Option<&str>,
        expiration_seconds: i64,
        current: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if let Some(cur) = current.filter(|c| token_is_fresh(c, now)) {
            return Ok(cur.to_vec());
        }
        let spec = pod.spec.as_ref();
        let sa = spec
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: audience.map(|a| vec![a.to_owned()]),
                expiration_seconds: Some(expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let out = api
            .create_token_request(sa, &kube::api::PostParams::default(), &request)
            .await
            .map_err(|e| {
                Error::kube(
                    format!("request a token of service account {}/{sa}", self.namespace),
                    e,
                )
            })?;
        Ok(out
            .status
            .and_then(|s| s.token)
            .unwrap_or_default()
            .into_bytes())
    }

    /// The namespace the references are read in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The data of a ConfigMap (`data` and `binaryData`), `None` if it does not exist.
    pub async fn config_map(&mut self, name: &str) -> Result<Option<&BTreeMap<String, Vec<u8>>>> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            let got = api
                .get_opt(name)
                .await
                .map_err(|e| Error::kube(format!("get configmap {}/{name}", self.namespace), e))?;
            let data = got.map(|cm| {
                let mut m: BTreeMap<String, Vec<u8>> = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                for (k, v) in cm.binary_data.unwrap_or_default() {
                    m.insert(k, v.0);
                }
                m
            });
            self.config_maps.insert(name.to_owned(), data);
        }
        Ok(self.config_maps[name].as_ref())
    }

    /// The data of a Secret (`data` plus `stringData`), `None` if it does not exist.
    pub async fn secret(&mut self, name: &str) -> Result<Option<&BTreeMap<String, Vec<u8>>>> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let got = api
                .get_opt(name)
                .await
                .map_err(|e| Error::kube(format!("get secret {}/{name}", self.namespace), e))?;
            let data = got.map(|s| {
                let mut m: BTreeMap<String, Vec<u8>> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                for (k, v) in s.string_data.unwrap_or_default() {
                    m.insert(k, v.into_bytes());
                }
                m
            });
            self.secrets.insert(name.to_owned(), data);
        }
        Ok(self.secrets[name].as_ref())
    }

    fn missing(&self, kind: &'static str, name: &str, key: Option<&str>) -> Error {
        Error::RefNotFound {
            kind,
            namespace: self.namespace.clone(),
            name: name.to_owned(),
            key: key.map(str::to_owned),
        }
    }

    async fn key_of(
        &mut self,
        secret: bool,
        name: &str,
        key: &str,
        optional: bool,
    ) -> Result<Option<String>> {
        let kind = if secret { "Secret" } else { "ConfigMap" };
        let data = if secret {
            self.secret(name).await?.cloned()
        } else {
            self.config_map(name).await?.cloned()
        };
        match data {
            None if optional => Ok(None),
            None => Err(self.missing(kind, name, None)),
            Some(d) => match d.get(key) {
                Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
                None if optional => Ok(None),
                None => Err(self.missing(kind, name, Some(key))),
            },
        }
    }

    /// The Docker-link style variables of the namespace's Services
    /// (`enableServiceLinks`, default on), and always those of the API server's
    /// `default/kubernetes` Service (`KUBERNETES_SERVICE_HOST`, ...), as the kubelet sets
    /// them.
    pub async fn service_env(&mut self, pod: &Pod) -> Result<Vec<(String, String)>> {
        let links = pod.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false);
        let local = if links {
            let api: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
            api.list(&Default::default())
                .await
                .map_err(|e| Error::kube(format!("list services in {}", self.namespace), e))?
                .items
        } else {
            Vec::new()
        };
        let master = if links && self.namespace == MASTER_NAMESPACE {
            None
        } else {
            let api: Api<Service> = Api::namespaced(self.client.clone(), MASTER_NAMESPACE);
            api.get_opt(MASTER_SERVICE)
                .await
                .map_err(|e| Error::kube("get service default/kubernetes".to_owned(), e))?
        };
        Ok(service_link_env(&env_services(master, local)))
    }

    /// The container's environment: Service links, then `envFrom`, then `env`, with
    /// `$(VAR)` expansion.
    pub async fn env(&mut self, pod: &Pod, c: &Container) -> Result<Vec<(String, String)>> {
        let mut out: Vec<(String, String)> = self.service_env(pod).await?;
        let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
            out.retain(|(x, _)| *x != k);
            out.push((k, v));
        };
        for from in c.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            let (secret, name, optional) = if let Some(cm) = &from.config_map_ref {
                (false, cm.name.clone(), cm.optional.unwrap_or(false))
            } else if let Some(s) = &from.secret_ref {
                (true, s.name.clone(), s.optional.unwrap_or(false))
            } else {
                continue;
            };
            let data = if secret {
                self.secret(&name).await?.cloned()
            } else {
                self.config_map(&name).await?.cloned()
            };
            match data {
                Some(d) => {
                    for (k, v) in d {
                        set(
                            &mut out,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into_owned(),
                        );
                    }
                }
                None if optional => {}
                None => {
                    return Err(self.missing(
                        if secret { "Secret" } else { "ConfigMap" },
                        &name,
                        None,
                    ))
                }
            }
        }
        for e in c.env.iter().flatten() {
            let value = if let Some(v) = &e.value {
                Some(crate::spec::expand(v, &out))
            } else if let Some(src) = &e.value_from {
                if let Some(r) = &src.config_map_key_ref {
                    self.key_of(false, &r.name, &r.key, r.optional.unwrap_or(false))
                        .await?
                } else if let Some(r) = &src.secret_key_ref {
                    self.key_of(true, &r.name, &r.key, r.optional.unwrap_or(false))
                        .await?
                } else if let Some(f) = &src.field_ref {
                    Some(field_ref(pod, f)?)
                } else if let Some(r) = &src.resource_field_ref {
                    Some(resource_field(pod, Some(c), r)?)
                } else {
                    Some(String::new())
                }
            } else {
                Some(String::new())
            };
            if let Some(v) = value {
                set(&mut out, e.name.clone(), v);
            }
        }
        Ok(out)
    }
}

/// `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT[_<PORT>]`, `<NAME>_PORT[_<n>_<PROTO>[_PROTO|_PORT|_ADDR]]`
/// for Services with a cluster IP.
/// Whether a JWT (its `iat` and `exp` claims, read without verifying: the node only
/// decides when to ask for a new one) is younger than 80% of its lifetime at `now`.
pub(crate) fn token_is_fresh(token: &[u8], now: i64) -> bool {
    use base64::Engine as _;
    let Some(payload) = token.split(|b| *b == b'.').nth(1) else {
        return false;
    };
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return false;
    };
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&json) else {
        return false;
    };
    match (claims["iat"].as_i64(), claims["exp"].as_i64()) {
        (Some(iat), Some(exp)) if exp > iat => now < iat + (exp - iat) * 8 / 10,
        _ => false,
    }
}

/// The namespace and name of the API server's Service, whose variables every container
/// gets (upstream's master services).
const MASTER_NAMESPACE: &str = "default";
const MASTER_SERVICE: &str = "kubernetes";

/// The Services a container's link variables come from: the namespace's own (`local`,
/// empty when service links are off) and the API server's `master`, unless a local
/// Service of the same name takes its place, in name order as the kubelet's map.
pub(crate) fn env_services(master: Option<Service>, local: Vec<Service>) -> Vec<Service> {
    let mut by_name: BTreeMap<String, Service> = BTreeMap::new();
    for s in master.into_iter().chain(local) {
        by_name.insert(s.metadata.name.clone().unwrap_or_default(), s);
    }
    by_name.into_values().collect()
}

pub(crate) fn service_link_env(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in services {
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|i| !i.is_empty() && *i != "None")
        else {
            continue;
        };
        let Some(ports) = spec.ports.as_ref().filter(|p| !p.is_empty()) else {
            continue;
        };
        let name = s
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .to_ascii_uppercase()
            .replace('-', "_");
        let first = &ports[0];
        out.push((format!("{name}_SERVICE_HOST"), ip.to_owned()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!(
                        "{name}_SERVICE_PORT_{}",
                        pn.to_ascii_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        out.push((
            format!("{name}_PORT"),
            format!(
                "{}://{ip}:{}",
                proto(first).to_ascii_lowercase(),
                first.port
            ),
        ));
        for p in ports {
            let pr = proto(p);
            let base = format!("{name}_PORT_{}_{pr}", p.port);
            out.push((
                base.clone(),
                format!("{}://{ip}:{}", pr.to_ascii_lowercase(), p.port),
            ));
            out.push((format!("{base}_PROTO"), pr.to_ascii_lowercase()));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.to_owned()));
        }
    }
    out
}

fn map_lookup(m: Option<&BTreeMap<String, String>>, path: &str, prefix: &str) -> Option<String> {
    let key = path
        .strip_prefix(prefix)?
        .strip_prefix("['")?
        .strip_suffix("']")?;
    Some(m.and_then(|m| m.get(key)).cloned().unwrap_or_default())
}

fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    let mut s = String::new();
    for (k, v) in m.into_iter().flatten() {
        s.push_str(&format!("{k}={}\n", serde_json::Value::String(v.clone())));
    }
    s
}

/// The value of a downward API `fieldRef`.
pub(crate) fn field_ref(pod: &Pod, f: &ObjectFieldSelector) -> Result<String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let p = f.field_path.as_str();
    let v = match p {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
        "status.hostIPs" => status
            .and_then(|s| s.host_ips.as_ref())
            .map(|v| v.iter().map(|i| i.ip.clone()).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        "status.podIPs" => status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|v| v.iter().map(|i| i.ip.clone()).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        _ => {
            if let Some(v) = map_lookup(m.labels.as_ref(), p, "metadata.labels") {
                v
            } else if let Some(v) = map_lookup(m.annotations.as_ref(), p, "metadata.annotations") {
                v
            } else {
                return Err(Error::InvalidSpec {
                    object: format!(
                        "{}/{}",
                        m.namespace.as_deref().unwrap_or_default(),
                        m.name.as_deref().unwrap_or_default()
                    ),
                    reason: format!("unsupported fieldRef {p:?}"),
                });
            }
        }
    };
    Ok(v)
}

/// The value of a `resourceFieldRef` (limits default to the node's allocatable,
/// which callers do not know here: an unset limit reads as 0).
pub(crate) fn resource_field(
    pod: &Pod,
    container: Option<&Container>,
    r: &ResourceFieldSelector,
) -> Result<String> {
    let c = match (&r.container_name, container) {
        (Some(n), _) if !n.is_empty() => pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| &c.name == n)),
        (_, c) => c,
    };
    let (kind, res) = r
        .resource
        .split_once('.')
        .unwrap_or(("limits", &r.resource));
    let q = c
        .and_then(|c| c.resources.as_ref())
        .and_then(|rs| {
            if kind == "requests" {
                rs.requests.as_ref()
            } else {
                rs.limits.as_ref()
            }
        })
        .and_then(|m| m.get(res))
        .and_then(|q| Quantity::try_from(q).ok())
        .unwrap_or(Quantity::ZERO);
    let divisor = r
        .divisor
        .as_ref()
        .and_then(|d| Quantity::try_from(d).ok())
        .filter(|d| *d > Quantity::ZERO)
        .unwrap_or(Quantity::new(1, 0));
    // As the kubelet: cpu in millicores, everything else in base units, rounded up.
    let (n, d) = if res == "cpu" {
        (q.milli_value(), divisor.milli_value())
    } else {
        (q.value(), divisor.value())
    };
    Ok((n / d + i64::from(n % d > 0)).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_are_rotated_at_eighty_percent_of_their_lifetime() {
        use base64::Engine as _;
        let claims = serde_json::json!({"iat": 1000, "exp": 2000});
        let b = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let t = format!(
            "{}.{}.sig",
            b(&serde_json::json!({"alg": "ES256"})),
            b(&claims)
        );
        assert!(token_is_fresh(t.as_bytes(), 1500));
        assert!(token_is_fresh(t.as_bytes(), 1799));
        assert!(!token_is_fresh(t.as_bytes(), 1800));
        assert!(!token_is_fresh(b"not a token", 1500));
    }

    #[test]
    fn every_container_gets_the_kubernetes_service_unless_its_namespace_has_its_own() {
        let svc = |name: &str, ip: &str, port: u16, port_name: &str| -> Service {
            serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"clusterIP": ip, "ports": [{"name": port_name, "port": port}]}}))
            .unwrap()
        };
        let master = svc("kubernetes", "10.96.0.1", 443, "https");
        // service links off: the API server's variables all the same
        let env = service_link_env(&env_services(Some(master.clone()), Vec::new()));
        let get = |env: &[(String, String)], k: &str| {
            env.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone())
        };
        assert_eq!(
            get(&env, "KUBERNETES_SERVICE_HOST").as_deref(),
            Some("10.96.0.1")
        );
        assert_eq!(get(&env, "KUBERNETES_SERVICE_PORT").as_deref(), Some("443"));
        assert_eq!(
            get(&env, "KUBERNETES_SERVICE_PORT_HTTPS").as_deref(),
            Some("443")
        );
        assert_eq!(
            get(&env, "KUBERNETES_PORT").as_deref(),
            Some("tcp://10.96.0.1:443")
        );
        assert_eq!(
            get(&env, "KUBERNETES_PORT_443_TCP_ADDR").as_deref(),
            Some("10.96.0.1")
        );
        // a namespace's own Service of that name wins, the others join
        let local = vec![
            svc("kubernetes", "10.96.0.9", 8443, "web"),
            svc("db", "10.96.0.5", 5432, "pg"),
        ];
        let env = service_link_env(&env_services(Some(master), local));
        assert_eq!(
            get(&env, "KUBERNETES_SERVICE_HOST").as_deref(),
            Some("10.96.0.9")
        );
        assert_eq!(get(&env, "DB_SERVICE_HOST").as_deref(), Some("10.96.0.5"));
        assert_eq!(
            env.iter()
                .filter(|(k, _)| k == "KUBERNETES_SERVICE_HOST")
                .count(),
            1
        );
    }

    #[test]
    fn service_links_follow_the_docker_link_names() {
        let s: Service = serde_json::from_value(json!({"metadata": {"name": "my-db"},
            "spec": {"clusterIP": "10.96.0.5", "ports": [{"name": "pg", "port": 5432}]}}))
        .unwrap();
        let env = service_link_env(&[s]);
        let get = |k: &str| env.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MY_DB_SERVICE_HOST"), Some("10.96.0.5"));
        assert_eq!(get("MY_DB_SERVICE_PORT"), Some("5432"));
        assert_eq!(get("MY_DB_SERVICE_PORT_PG"), Some("5432"));
        assert_eq!(get("MY_DB_PORT"), Some("tcp://10.96.0.5:5432"));
        assert_eq!(get("MY_DB_PORT_5432_TCP_ADDR"), Some("10.96.0.5"));
    }

    #[test]
    fn field_refs_read_metadata_spec_and_status() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u1", "labels": {"app": "web", "tier": "a"}},
            "spec": {"nodeName": "node1", "containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}}}]},
            "status": {"podIP": "10.0.0.5", "hostIP": "192.0.2.1"}
        }))
        .unwrap();
        let f = |p: &str| {
            field_ref(
                &pod,
                &ObjectFieldSelector {
                    field_path: p.into(),
                    api_version: None,
                },
            )
            .unwrap()
        };
        assert_eq!(f("metadata.name"), "p");
        assert_eq!(f("spec.nodeName"), "node1");
        assert_eq!(f("status.podIP"), "10.0.0.5");
        assert_eq!(f("metadata.labels['app']"), "web");
        assert_eq!(f("metadata.labels"), "app=\"web\"\ntier=\"a\"\n");
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let r = |res: &str, div: Option<&str>| {
            resource_field(
                &pod,
                Some(c),
                &ResourceFieldSelector {
                    resource: res.into(),
                    container_name: None,
                    divisor: div
                        .map(|d| k8s_openapi::apimachinery::pkg::api::resource::Quantity(d.into())),
                },
            )
            .unwrap()
        };
        assert_eq!(r("limits.memory", Some("1Mi")), "64");
        assert_eq!(r("limits.cpu", Some("1m")), "250");
        assert_eq!(r("limits.cpu", None), "1");
        // exact: no floating point on the way (f64 made this ...784)
        let big: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "c",
            "resources": {"limits": {"memory": "123456789123456789", "cpu": "1.1"}}}]}}))
        .unwrap();
        let c = &big.spec.as_ref().unwrap().containers[0];
        let r = |res: &str, div: Option<&str>| {
            resource_field(
                &big,
                Some(c),
                &ResourceFieldSelector {
                    resource: res.into(),
                    container_name: None,
                    divisor: div
                        .map(|d| k8s_openapi::apimachinery::pkg::api::resource::Quantity(d.into())),
                },
            )
            .unwrap()
        };
        assert_eq!(r("limits.memory", None), "123456789123456789");
        assert_eq!(r("limits.cpu", Some("100m")), "11"); // f64: 11.000000000000002 -> 12
    }
}
