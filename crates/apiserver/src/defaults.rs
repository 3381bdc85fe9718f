//! Defaulting helpers as upstream's `SetDefaults_*` functions, on JSON objects; each
//! kind's defaults are in its strategy (`registry/`).

use serde_json::{json, Map, Value};

/// Sets `obj[key]` to `v` if it is missing or null.
pub(crate) fn set_default(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        let slot = m.entry(key.to_owned()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = v;
        }
    }
}

/// `v[key]`, made an object first if it is not one.
pub(crate) fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
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
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(cs) = spec[list].as_array_mut() {
            cs.iter_mut().for_each(default_container);
        }
    }
}

/// Defaults the pod template of a workload.
pub(crate) fn template(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    let tpl = obj_mut(spec, "template");
    pod_spec(obj_mut(tpl, "spec"));
}
