//! ConfigMaps and Secrets a pod refers to, environment resolution and the downward API.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret,
};
use kube::Api;

use crate::error::{Error, Result};
use crate::quantity;

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

    /// The container's environment from `envFrom` then `env`, with `$(VAR)` expansion.
    pub async fn env(&mut self, pod: &Pod, c: &Container) -> Result<Vec<(String, String)>> {
        let mut out: Vec<(String, String)> = Vec::new();
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
        .and_then(|q| quantity::parse(&q.0))
        .unwrap_or(0.0);
    let divisor = r
        .divisor
        .as_ref()
        .and_then(|d| quantity::parse(&d.0))
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Ok(format!("{}", (q / divisor).ceil() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    }
}
