//! core/v1 Events about pods, as the kubelet records them (`kubectl describe pod`).

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

use crate::error::ErrorChain;

/// The Event object for `pod` (without sending it).
pub(crate) fn event(
    pod: &Pod,
    node: &str,
    warning: bool,
    reason: &str,
    message: &str,
    field: Option<&str>,
) -> Event {
    let mut involved = json!({
        "kind": "Pod", "apiVersion": "v1", "namespace": pod.metadata.namespace.as_deref().unwrap_or("default"),
        "name": pod.metadata.name, "uid": pod.metadata.uid,
        "resourceVersion": pod.metadata.resource_version,
    });
    if let Some(f) = field {
        involved["fieldPath"] = json!(f);
    }
    event_about(involved, node, "kubelet", warning, reason, message)
}

/// The Event object about the object `involved` (an ObjectReference as JSON) from
/// `component` on `node`; events about cluster-scoped objects go to `default`, as
/// upstream.
pub(crate) fn event_about(
    involved: serde_json::Value,
    node: &str,
    component: &str,
    warning: bool,
    reason: &str,
    message: &str,
) -> Event {
    let now = serde_json::to_value(Time(Timestamp::now())).expect("time");
    let name = involved["name"].as_str().unwrap_or_default().to_owned();
    let ns = involved["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_owned();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    serde_json::from_value(json!({
        "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": ns},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": if warning { "Warning" } else { "Normal" },
        "source": {"component": component, "host": node},
        "reportingComponent": component,
        "reportingInstance": node,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }))
    .expect("event")
}

/// Sends an event in the background (failures are only logged).
pub(crate) fn send(client: &kube::Client, ev: Event) {
    let ns = ev
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    tokio::spawn(async move {
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            tracing::debug!(error = %ErrorChain(&e), "record event");
        }
    });
}

/// Records an event in the background (failures are only logged).
pub(crate) fn record(
    client: &kube::Client,
    pod: &Pod,
    node: &str,
    warning: bool,
    reason: &str,
    message: String,
    field: Option<&str>,
) {
    send(client, event(pod, node, warning, reason, &message, field));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_point_at_the_pod_and_container() {
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "n", "uid": "u"}}),
        )
        .unwrap();
        let e = event(
            &pod,
            "node-1",
            true,
            "BackOff",
            "back-off",
            Some("spec.containers{c}"),
        );
        assert_eq!(e.involved_object.name.as_deref(), Some("p"));
        assert_eq!(e.involved_object.uid.as_deref(), Some("u"));
        assert_eq!(
            e.involved_object.field_path.as_deref(),
            Some("spec.containers{c}")
        );
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.source.unwrap().host.as_deref(), Some("node-1"));
        assert!(e.metadata.name.unwrap().starts_with("p."));
    }
}
