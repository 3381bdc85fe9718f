//! Defaulting as upstream's `SetDefaults_*` functions do, on JSON objects.

use serde_json::{json, Map, Value};

fn set_default(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        let slot = m.entry(key.to_owned()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = v;
        }
    }
}

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v[key].is_object() {
        v[key] = Value::Object(Map::new());
    }
    &mut v[key]
}

fn image_pull_policy(image: &str) -> &'static str {
    let name = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match name.split_once(':') {
        None => "Always",
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(c: &mut Value) {
    if let Some(img) = c["image"].as_str().map(image_pull_policy) {
        set_default(c, "imagePullPolicy", json!(img));
    }
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    if let Some(ports) = c["ports"].as_array_mut() {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

/// Defaults a PodSpec (also inside templates).
pub(crate) fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers"] {
        if let Some(cs) = spec[list].as_array_mut() {
            cs.iter_mut().for_each(default_container);
        }
    }
}

fn template(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    let tpl = obj_mut(spec, "template");
    pod_spec(obj_mut(tpl, "spec"));
}

/// Applies the defaults for `kind` in place.
pub(crate) fn apply(kind: &str, obj: &mut Value) {
    match kind {
        "Pod" => {
            let spec = obj_mut(obj, "spec");
            pod_spec(spec);
            set_default(spec, "serviceAccountName", json!("default"));
            set_default(spec, "priority", json!(0));
        }
        "Deployment" => {
            template(obj);
            let spec = obj_mut(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = obj_mut(spec, "strategy");
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let ru = obj_mut(strategy, "rollingUpdate");
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
        }
        "ReplicaSet" => {
            template(obj);
            set_default(obj_mut(obj, "spec"), "replicas", json!(1));
        }
        "StatefulSet" => {
            template(obj);
            let spec = obj_mut(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            let us = obj_mut(spec, "updateStrategy");
            set_default(us, "type", json!("RollingUpdate"));
            if us["type"] == "RollingUpdate" {
                set_default(obj_mut(us, "rollingUpdate"), "partition", json!(0));
            }
        }
        "DaemonSet" => {
            template(obj);
            let spec = obj_mut(obj, "spec");
            set_default(spec, "revisionHistoryLimit", json!(10));
            let us = obj_mut(spec, "updateStrategy");
            set_default(us, "type", json!("RollingUpdate"));
            if us["type"] == "RollingUpdate" {
                let ru = obj_mut(us, "rollingUpdate");
                set_default(ru, "maxUnavailable", json!(1));
                set_default(ru, "maxSurge", json!(0));
            }
        }
        "Service" => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            if spec["type"] != "ExternalName" {
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                set_default(spec, "ipFamilies", json!(["IPv4"]));
                set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
            }
            if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer")) {
                set_default(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            if let Some(ports) = spec["ports"].as_array_mut() {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                    if p["targetPort"].is_null() {
                        p["targetPort"] = p["port"].clone();
                    }
                }
            }
        }
        "Namespace" => {
            let name = obj["metadata"]["name"].clone();
            if name.is_string() {
                let labels = obj_mut(obj_mut(obj, "metadata"), "labels");
                labels["kubernetes.io/metadata.name"] = name;
            }
            set_default(obj_mut(obj, "spec"), "finalizers", json!(["kubernetes"]));
            set_default(obj_mut(obj, "status"), "phase", json!("Active"));
        }
        "Secret" => {
            set_default(obj, "type", json!("Opaque"));
            // stringData is write-only: it is merged into data, base64-encoded.
            if let Some(sd) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
                use base64::Engine as _;
                let data = obj_mut(obj, "data");
                for (k, v) in sd.as_object().into_iter().flatten() {
                    let raw = v.as_str().unwrap_or_default();
                    data[k] = json!(base64::engine::general_purpose::STANDARD.encode(raw));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults_match_upstream() {
        let mut d = json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "nginx:1.27"}, {"name": "d", "image": "busybox", "ports": [{"containerPort": 80}]}]}}}});
        apply("Deployment", &mut d);
        let s = &d["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(s["progressDeadlineSeconds"], 600);
        assert_eq!(
            s["strategy"]["rollingUpdate"],
            json!({"maxUnavailable": "25%", "maxSurge": "25%"})
        );
        let ps = &s["template"]["spec"];
        assert_eq!(ps["restartPolicy"], "Always");
        assert_eq!(ps["dnsPolicy"], "ClusterFirst");
        assert_eq!(ps["terminationGracePeriodSeconds"], 30);
        assert_eq!(ps["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(ps["containers"][1]["imagePullPolicy"], "Always");
        assert_eq!(ps["containers"][1]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn explicit_values_are_kept() {
        let mut p = json!({"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "x:latest", "imagePullPolicy": "Never"}]}});
        apply("Pod", &mut p);
        assert_eq!(p["spec"]["restartPolicy"], "Never");
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Never");
        let mut s = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        apply("Service", &mut s);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
    }
}
