//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`: the columns kubectl prints.

use k8s_openapi::jiff;
use serde_json::{json, Value};

use crate::resources::ResourceInfo;

/// Human age like kubectl's (`5s`, `3m2s`, `4h`, `2d`).
pub(crate) fn age(ts: &Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    age_at(ts, now)
}

fn age_at(ts: &Value, now: i64) -> String {
    let Some(t) = ts.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let s = (now - t.as_second()).max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ if d < 730 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

fn col(name: &str, ty: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": name, "priority": priority})
}

fn num(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn join_str(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "<none>".into()
    } else {
        v.join(",")
    }
}

fn containers_images(spec: &Value) -> (String, String) {
    let cs = spec["containers"].as_array().cloned().unwrap_or_default();
    (
        join_str(
            cs.iter()
                .map(|c| c["name"].as_str().unwrap_or_default().to_owned()),
        ),
        join_str(
            cs.iter()
                .map(|c| c["image"].as_str().unwrap_or_default().to_owned()),
        ),
    )
}

fn selector_str(sel: &Value) -> String {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if parts.is_empty() {
        if let Some(m) = sel.as_object() {
            if !m.contains_key("matchLabels") && !m.contains_key("matchExpressions") {
                parts = m
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect();
            }
        }
    }
    join_str(parts.into_iter())
}

fn pod_status(o: &Value) -> String {
    if o["metadata"]["deletionTimestamp"].is_string() {
        return "Terminating".into();
    }
    for cs in o["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(r) = cs["state"]["waiting"]["reason"].as_str() {
            return r.to_owned();
        }
        if let Some(r) = cs["state"]["terminated"]["reason"].as_str() {
            return r.to_owned();
        }
    }
    o["status"]["reason"]
        .as_str()
        .or(o["status"]["phase"].as_str())
        .unwrap_or("Pending")
        .to_owned()
}

fn service_ports(spec: &Value) -> String {
    join_str(spec["ports"].as_array().into_iter().flatten().map(|p| {
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        match p["nodePort"].as_i64() {
            Some(np) => format!("{}:{np}/{proto}", num(&p["port"])),
            None => format!("{}/{proto}", num(&p["port"])),
        }
    }))
}

/// Column definitions and cells for one kind.
fn columns(kind: &str) -> Vec<Value> {
    let s = "string";
    let i = "integer";
    match kind {
        "Pod" => vec![
            col("Name", s, 0),
            col("Ready", s, 0),
            col("Status", s, 0),
            col("Restarts", s, 0),
            col("Age", s, 0),
            col("IP", s, 1),
            col("Node", s, 1),
            col("Nominated Node", s, 1),
            col("Readiness Gates", s, 1),
        ],
        "Deployment" => vec![
            col("Name", s, 0),
            col("Ready", s, 0),
            col("Up-to-date", i, 0),
            col("Available", i, 0),
            col("Age", s, 0),
            col("Containers", s, 1),
            col("Images", s, 1),
            col("Selector", s, 1),
        ],
        "ReplicaSet" => vec![
            col("Name", s, 0),
            col("Desired", i, 0),
            col("Current", i, 0),
            col("Ready", i, 0),
            col("Age", s, 0),
            col("Containers", s, 1),
            col("Images", s, 1),
            col("Selector", s, 1),
        ],
        "StatefulSet" => vec![
            col("Name", s, 0),
            col("Ready", s, 0),
            col("Age", s, 0),
            col("Containers", s, 1),
            col("Images", s, 1),
        ],
        "DaemonSet" => vec![
            col("Name", s, 0),
            col("Desired", i, 0),
            col("Current", i, 0),
            col("Ready", i, 0),
            col("Up-to-date", i, 0),
            col("Available", i, 0),
            col("Node Selector", s, 0),
            col("Age", s, 0),
            col("Containers", s, 1),
            col("Images", s, 1),
            col("Selector", s, 1),
        ],
        "Service" => vec![
            col("Name", s, 0),
            col("Type", s, 0),
            col("Cluster-IP", s, 0),
            col("External-IP", s, 0),
            col("Port(s)", s, 0),
            col("Age", s, 0),
            col("Selector", s, 1),
        ],
        "ConfigMap" => vec![col("Name", s, 0), col("Data", i, 0), col("Age", s, 0)],
        "Secret" => vec![
            col("Name", s, 0),
            col("Type", s, 0),
            col("Data", i, 0),
            col("Age", s, 0),
        ],
        "Namespace" => vec![col("Name", s, 0), col("Status", s, 0), col("Age", s, 0)],
        "Node" => vec![
            col("Name", s, 0),
            col("Status", s, 0),
            col("Roles", s, 0),
            col("Age", s, 0),
            col("Version", s, 0),
            col("Internal-IP", s, 1),
            col("OS-Image", s, 1),
            col("Kernel-Version", s, 1),
            col("Container-Runtime", s, 1),
        ],
        "Endpoints" => vec![col("Name", s, 0), col("Endpoints", s, 0), col("Age", s, 0)],
        "Event" => vec![
            col("Last Seen", s, 0),
            col("Type", s, 0),
            col("Reason", s, 0),
            col("Object", s, 0),
            col("Message", s, 0),
        ],
        "Ingress" => vec![
            col("Name", s, 0),
            col("Class", s, 0),
            col("Hosts", s, 0),
            col("Address", s, 0),
            col("Ports", s, 0),
            col("Age", s, 0),
        ],
        "Lease" => vec![col("Name", s, 0), col("Holder", s, 0), col("Age", s, 0)],
        "EndpointSlice" => vec![
            col("Name", s, 0),
            col("AddressType", s, 0),
            col("Ports", s, 0),
            col("Endpoints", s, 0),
            col("Age", s, 0),
        ],
        _ => vec![col("Name", s, 0), col("Age", s, 0)],
    }
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = json!(o["metadata"]["name"]);
    let a = json!(age(&o["metadata"]["creationTimestamp"]));
    let st = &o["status"];
    let spec = &o["spec"];
    match kind {
        "Pod" => {
            let cs = st["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let ready = cs.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = cs.iter().map(|c| num(&c["restartCount"])).sum();
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                a,
                json!(st["podIP"].as_str().unwrap_or("<none>")),
                json!(spec["nodeName"].as_str().unwrap_or("<none>")),
                json!("<none>"),
                json!("<none>"),
            ]
        }
        "Deployment" => {
            let (c, i) = containers_images(&spec["template"]["spec"]);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    num(&st["readyReplicas"]),
                    num(&spec["replicas"])
                )),
                json!(num(&st["updatedReplicas"])),
                json!(num(&st["availableReplicas"])),
                a,
                json!(c),
                json!(i),
                json!(selector_str(&spec["selector"])),
            ]
        }
        "ReplicaSet" => {
            let (c, i) = containers_images(&spec["template"]["spec"]);
            vec![
                name,
                json!(num(&spec["replicas"])),
                json!(num(&st["replicas"])),
                json!(num(&st["readyReplicas"])),
                a,
                json!(c),
                json!(i),
                json!(selector_str(&spec["selector"])),
            ]
        }
        "StatefulSet" => {
            let (c, i) = containers_images(&spec["template"]["spec"]);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    num(&st["readyReplicas"]),
                    num(&spec["replicas"])
                )),
                a,
                json!(c),
                json!(i),
            ]
        }
        "DaemonSet" => {
            let (c, i) = containers_images(&spec["template"]["spec"]);
            vec![
                name,
                json!(num(&st["desiredNumberScheduled"])),
                json!(num(&st["currentNumberScheduled"])),
                json!(num(&st["numberReady"])),
                json!(num(&st["updatedNumberScheduled"])),
                json!(num(&st["numberAvailable"])),
                json!(selector_str(&spec["template"]["spec"]["nodeSelector"])),
                a,
                json!(c),
                json!(i),
                json!(selector_str(&spec["selector"])),
            ]
        }
        "Service" => {
            let ext: Vec<String> = st["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    i["ip"]
                        .as_str()
                        .or(i["hostname"].as_str())
                        .map(str::to_owned)
                })
                .chain(
                    spec["externalIPs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_owned)),
                )
                .collect();
            let ext = if ext.is_empty() {
                if spec["type"] == "LoadBalancer" {
                    "<pending>".into()
                } else if spec["type"] == "ExternalName" {
                    spec["externalName"].as_str().unwrap_or("<none>").into()
                } else {
                    "<none>".to_owned()
                }
            } else {
                ext.join(",")
            };
            vec![
                name,
                json!(spec["type"]),
                json!(spec["clusterIP"].as_str().unwrap_or("<none>")),
                json!(ext),
                json!(service_ports(spec)),
                a,
                json!(selector_str(&spec["selector"])),
            ]
        }
        "ConfigMap" => {
            let n = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(n), a]
        }
        "Secret" => vec![
            name,
            json!(o["type"]),
            json!(o["data"].as_object().map_or(0, |m| m.len())),
            a,
        ],
        "Namespace" => vec![name, json!(st["phase"].as_str().unwrap_or("Active")), a],
        "Node" => {
            let ready = st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready");
            let mut status = match ready.map(|c| c["status"].as_str().unwrap_or("")) {
                Some("True") => "Ready".to_owned(),
                _ => "NotReady".to_owned(),
            };
            if spec["unschedulable"] == true {
                status.push_str(",SchedulingDisabled");
            }
            let roles = join_str(
                o["metadata"]["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, _)| {
                        k.strip_prefix("node-role.kubernetes.io/")
                            .map(str::to_owned)
                    }),
            );
            let ip = st["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["type"] == "InternalIP")
                .and_then(|a| a["address"].as_str())
                .unwrap_or("<none>");
            let ni = &st["nodeInfo"];
            vec![
                name,
                json!(status),
                json!(roles),
                a,
                json!(ni["kubeletVersion"].as_str().unwrap_or("")),
                json!(ip),
                json!(ni["osImage"].as_str().unwrap_or("<unknown>")),
                json!(ni["kernelVersion"].as_str().unwrap_or("<unknown>")),
                json!(ni["containerRuntimeVersion"]
                    .as_str()
                    .unwrap_or("<unknown>")),
            ]
        }
        "Endpoints" => {
            let eps = join_str(o["subsets"].as_array().into_iter().flatten().flat_map(|s| {
                let ports: Vec<i64> = s["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| num(&p["port"]))
                    .collect();
                s["addresses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(move |ad| {
                        let ip = ad["ip"].as_str().unwrap_or_default().to_owned();
                        let ports = ports.clone();
                        if ports.is_empty() {
                            vec![ip]
                        } else {
                            ports.into_iter().map(|p| format!("{ip}:{p}")).collect()
                        }
                    })
            }));
            vec![name, json!(eps), a]
        }
        "Event" => {
            let last = if o["lastTimestamp"].is_string() {
                &o["lastTimestamp"]
            } else if o["eventTime"].is_string() {
                &o["eventTime"]
            } else {
                &o["metadata"]["creationTimestamp"]
            };
            let io = &o["involvedObject"];
            vec![
                json!(age(last)),
                json!(o["type"]),
                json!(o["reason"]),
                json!(format!(
                    "{}/{}",
                    io["kind"].as_str().unwrap_or_default().to_lowercase(),
                    io["name"].as_str().unwrap_or_default()
                )),
                json!(o["message"]),
            ]
        }
        "Ingress" => {
            let hosts = join_str(
                spec["rules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["host"].as_str().map(str::to_owned)),
            );
            let hosts = if hosts == "<none>" {
                "*".to_owned()
            } else {
                hosts
            };
            let addr = join_str(
                st["loadBalancer"]["ingress"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| {
                        i["ip"]
                            .as_str()
                            .or(i["hostname"].as_str())
                            .map(str::to_owned)
                    }),
            );
            let addr = if addr == "<none>" {
                String::new()
            } else {
                addr
            };
            let ports = if spec["tls"].as_array().is_some_and(|t| !t.is_empty()) {
                "80, 443"
            } else {
                "80"
            };
            vec![
                name,
                json!(spec["ingressClassName"].as_str().unwrap_or("<none>")),
                json!(hosts),
                json!(addr),
                json!(ports),
                a,
            ]
        }
        "Lease" => vec![
            name,
            json!(spec["holderIdentity"].as_str().unwrap_or("")),
            a,
        ],
        "EndpointSlice" => {
            let ports = join_str(
                o["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| num(&p["port"]).to_string()),
            );
            let eps = join_str(
                o["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|e| {
                        e["addresses"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(|a| a.as_str().map(str::to_owned))
                    }),
            );
            vec![name, json!(o["addressType"]), json!(ports), json!(eps), a]
        }
        _ => vec![name, a],
    }
}

/// A meta.k8s.io/v1 Table for `items` (with the object in each row unless `include_object`
/// is false).
pub(crate) fn table(
    info: &ResourceInfo,
    items: &[Value],
    rv: &Value,
    cont: &Value,
    include_object: bool,
) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(info.kind, o)});
            if include_object {
                let mut obj = o.clone();
                if obj["kind"].is_null() {
                    obj["kind"] = json!(info.kind);
                    obj["apiVersion"] = json!(info.api_version());
                }
                row["object"] = obj;
            }
            row
        })
        .collect();
    let mut meta = json!({"resourceVersion": rv});
    if cont.is_string() {
        meta["continue"] = cont.clone();
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns(info.kind),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_row_has_kubectl_columns() {
        let info = crate::resources::lookup("apps", "v1", "deployments").unwrap();
        let d = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = table(info, &[d], &json!("5"), &Value::Null, true);
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            &names[..5],
            ["Name", "Ready", "Up-to-date", "Available", "Age"]
        );
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "2/3");
        assert_eq!(cells[7], "app=web");
        assert_eq!(t["rows"][0]["object"]["kind"], "Deployment");
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now = 1_700_000_000;
        let ts = |secs_ago: i64| {
            let t = jiff::Timestamp::from_second(now - secs_ago).unwrap();
            json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        };
        assert_eq!(age_at(&ts(5), now), "5s");
        assert_eq!(age_at(&ts(185), now), "3m5s");
        assert_eq!(age_at(&ts(3 * 86400), now), "3d0h");
        assert_eq!(age_at(&ts(900 * 86400), now), "2y");
        assert_eq!(age_at(&Value::Null, now), "<unknown>");
    }
}
