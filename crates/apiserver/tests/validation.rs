//! Create and update validation of every built-in kind, through the real HTTP path: a
//! table per kind (cases from upstream's validation tests and documentation), the
//! refusals a user meets with the real `kubectl`, ratcheting of objects stored before a
//! rule, and a property: an object or update is stored whole or refused, never half.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use kcore_apiserver::{ApiServer, RedbStorage, RunningServer, Storage};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static COUNTER: AtomicU32 = AtomicU32::new(0);

struct Server {
    server: RunningServer,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts a server; `seed` are raw objects written to storage first (as an older server
/// that did not enforce today's rules would have stored them).
async fn start(seed: &[(&str, Value)]) -> Server {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = tempfile::Builder::new()
        .prefix(&format!("kcore-validation-{}-{n}-", std::process::id()))
        .tempdir()
        .expect("temp dir");
    let storage = Arc::new(RedbStorage::open(dir.path().join("data")).expect("open storage"));
    for (key, obj) in seed {
        storage
            .create(key, serde_json::to_vec(obj).expect("encode"))
            .await
            .expect("seed");
    }
    let server = ApiServer::builder()
        .storage(storage)
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0".parse().expect("addr"))
        .insecure_http(true)
        .build()
        .await
        .expect("build server");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    Server {
        server: server.spawn(),
        kubeconfig,
        _dir: dir,
    }
}

/// One HTTP/1.1 exchange over loopback: (status code, JSON body).
async fn http(
    s: &Server,
    method: &str,
    path: &str,
    ct: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let addr = s.server.local_addr();
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    conn.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let code: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (code, v)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

const JSON: &str = "application/json";

/// The collection URL of a kind in namespace `default`.
fn collection(kind: &str) -> &'static str {
    match kind {
        "Namespace" => "/api/v1/namespaces",
        "Node" => "/api/v1/nodes",
        "PersistentVolume" => "/api/v1/persistentvolumes",
        "Pod" => "/api/v1/namespaces/default/pods",
        "Service" => "/api/v1/namespaces/default/services",
        "Endpoints" => "/api/v1/namespaces/default/endpoints",
        "ConfigMap" => "/api/v1/namespaces/default/configmaps",
        "Secret" => "/api/v1/namespaces/default/secrets",
        "Event" => "/api/v1/namespaces/default/events",
        "ServiceAccount" => "/api/v1/namespaces/default/serviceaccounts",
        "PersistentVolumeClaim" => "/api/v1/namespaces/default/persistentvolumeclaims",
        "Deployment" => "/apis/apps/v1/namespaces/default/deployments",
        "ReplicaSet" => "/apis/apps/v1/namespaces/default/replicasets",
        "StatefulSet" => "/apis/apps/v1/namespaces/default/statefulsets",
        "DaemonSet" => "/apis/apps/v1/namespaces/default/daemonsets",
        "ControllerRevision" => "/apis/apps/v1/namespaces/default/controllerrevisions",
        "EndpointSlice" => "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        "Ingress" => "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
        "Lease" => "/apis/coordination.k8s.io/v1/namespaces/default/leases",
        "PodDisruptionBudget" => "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
        "Job" => "/apis/batch/v1/namespaces/default/jobs",
        "CronJob" => "/apis/batch/v1/namespaces/default/cronjobs",
        other => panic!("no collection for {other}"),
    }
}

/// A Job of one busybox pod, changed by `f`.
fn batch_job(f: impl FnOnce(&mut Value)) -> Value {
    let mut j = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox:1.36"}]}}}});
    f(&mut j);
    j
}

/// A CronJob on `schedule`.
fn batch_cronjob(schedule: &str) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {},
        "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}}})
}

/// What a case expects: accepted, or refused (422) with a cause at `field` whose message
/// contains `message`.
#[derive(Clone, Copy)]
enum Want {
    Ok,
    Invalid(&'static str, &'static str),
}

/// One table case: `obj` is created; with `update`, creating it must succeed and the
/// update (GET, change, PUT) is what is judged.
struct Case {
    kind: &'static str,
    what: &'static str,
    obj: Value,
    update: Option<fn(&mut Value)>,
    want: Want,
}

fn create(kind: &'static str, what: &'static str, obj: Value, want: Want) -> Case {
    Case {
        kind,
        what,
        obj,
        update: None,
        want,
    }
}

fn update(
    kind: &'static str,
    what: &'static str,
    obj: Value,
    f: fn(&mut Value),
    want: Want,
) -> Case {
    Case {
        kind,
        what,
        obj,
        update: Some(f),
        want,
    }
}

fn has_cause(status: &Value, field: &str, message: &str) -> bool {
    status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["field"] == field && c["message"].as_str().is_some_and(|m| m.contains(message)))
}

/// Runs one case; returns a failure description.
async fn run(s: &Server, n: usize, case: &Case) -> Result<(), String> {
    let mut obj = case.obj.clone();
    let name = match obj["metadata"]["name"].as_str() {
        Some(given) => given.to_owned(),
        None => format!("c{n}"),
    };
    obj["metadata"]["name"] = json!(name);
    let url = collection(case.kind);
    let (code, body) = http(s, "POST", url, JSON, Some(&obj)).await;
    let judged = match case.update {
        None => (code, body),
        Some(f) => {
            if code != 201 {
                return Err(format!("setup create answered {code}: {body}"));
            }
            let item = format!("{url}/{name}");
            let (_, mut cur) = http(s, "GET", &item, JSON, None).await;
            let before = cur.clone();
            f(&mut cur);
            let (code, body) = http(s, "PUT", &item, JSON, Some(&cur)).await;
            if code != 200 {
                // Refused: nothing of it was stored.
                let (_, after) = http(s, "GET", &item, JSON, None).await;
                if after != before {
                    return Err(format!("a refused update changed the object: {after}"));
                }
            }
            (code, body)
        }
    };
    let (code, body) = judged;
    match case.want {
        Want::Ok if (200..300).contains(&code) => Ok(()),
        Want::Ok => Err(format!("expected success, got {code}: {body}")),
        Want::Invalid(field, msg) => {
            if code != 422 || body["reason"] != "Invalid" {
                return Err(format!("expected 422 Invalid, got {code}: {body}"));
            }
            if !has_cause(&body, field, msg) {
                return Err(format!("no cause at {field:?} with {msg:?}: {body}"));
            }
            if case.update.is_none() {
                let (code, _) = http(s, "GET", &format!("{url}/{name}"), JSON, None).await;
                if code != 404 {
                    return Err(format!("a refused create was stored ({code})"));
                }
            }
            Ok(())
        }
    }
}

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}})
}

fn pod_with(f: impl FnOnce(&mut Value)) -> Value {
    let mut p = pod();
    f(&mut p);
    p
}

fn container_with(f: impl FnOnce(&mut Value)) -> Value {
    pod_with(|p| f(&mut p["spec"]["containers"][0]))
}

fn workload(kind: &str) -> Value {
    let api = if kind == "ReplicaSet"
        || kind == "Deployment"
        || kind == "StatefulSet"
        || kind == "DaemonSet"
    {
        "apps/v1"
    } else {
        unreachable!()
    };
    let mut w = json!({"apiVersion": api, "kind": kind, "metadata": {},
        "spec": {"selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}});
    if kind == "StatefulSet" {
        w["spec"]["serviceName"] = json!("svc");
    }
    w
}

fn workload_with(kind: &str, f: impl FnOnce(&mut Value)) -> Value {
    let mut w = workload(kind);
    f(&mut w);
    w
}

fn service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}})
}

fn service_with(f: impl FnOnce(&mut Value)) -> Value {
    let mut s = service();
    f(&mut s);
    s
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}, "data": data})
}

fn ingress(paths: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {},
        "spec": {"rules": [{"host": "foo.example.com", "http": {"paths": paths}}]}})
}

fn svc_backend() -> Value {
    json!({"service": {"name": "web", "port": {"number": 80}}})
}

fn pvc() -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
}

fn pv() -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {},
        "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
            "hostPath": {"path": "/tmp/pv"}}})
}

const BIG: usize = 1_500_000;

#[allow(clippy::too_many_lines)]
fn cases() -> Vec<Case> {
    use Want::{Invalid, Ok as Accepted};
    let forbidden_pod =
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`";
    vec![
        // ---- Pod, create (ValidatePodSpec) ----
        create("Pod", "a plain pod", pod(), Accepted),
        create("Pod", "request above limit", container_with(|c| c["resources"] = json!({"requests": {"cpu": "600m"}, "limits": {"cpu": "500m"}})),
            Invalid("spec.containers[0].resources.requests", "Invalid value: \"600m\": must be less than or equal to cpu limit of 500m")),
        create("Pod", "memory request above limit", container_with(|c| c["resources"] = json!({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}})),
            Invalid("spec.containers[0].resources.requests", "must be less than or equal to memory limit of 1Gi")),
        create("Pod", "unknown resource name", container_with(|c| c["resources"] = json!({"limits": {"gpu": "1"}})),
            Invalid("spec.containers[0].resources.limits[gpu]", "Invalid value: \"gpu\": must be a standard resource for containers")),
        create("Pod", "extended resource", container_with(|c| c["resources"] = json!({"limits": {"example.com/gpu": "1"}})), Accepted),
        create("Pod", "unknown imagePullPolicy", container_with(|c| c["imagePullPolicy"] = json!("Sometimes")),
            Invalid("spec.containers[0].imagePullPolicy", "Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"")),
        create("Pod", "init container restartPolicy Never", pod_with(|p| p["spec"]["initContainers"] = json!([{"name": "i", "image": "busybox", "restartPolicy": "Never"}])),
            Invalid("spec.initContainers[0].restartPolicy", "Unsupported value: \"Never\": supported values: \"Always\"")),
        create("Pod", "sidecar with a probe", pod_with(|p| p["spec"]["initContainers"] = json!([{"name": "i", "image": "busybox", "restartPolicy": "Always", "readinessProbe": {"tcpSocket": {"port": 80}}}])), Accepted),
        create("Pod", "negative limit", container_with(|c| c["resources"] = json!({"limits": {"cpu": "-1"}})),
            Invalid("spec.containers[0].resources.limits[cpu]", "must be greater than or equal to 0")),
        create("Pod", "probe without a handler", container_with(|c| c["livenessProbe"] = json!({"periodSeconds": 10})),
            Invalid("spec.containers[0].livenessProbe", "Required value: must specify a handler type")),
        create("Pod", "probe with two handlers", container_with(|c| c["readinessProbe"] = json!({"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}})),
            Invalid("spec.containers[0].readinessProbe.tcpSocket", "Forbidden: may not specify more than 1 handler type")),
        create("Pod", "liveness successThreshold 2", container_with(|c| c["livenessProbe"] = json!({"tcpSocket": {"port": 80}, "successThreshold": 2})),
            Invalid("spec.containers[0].livenessProbe.successThreshold", "Invalid value: 2: must be 1")),
        create("Pod", "negative periodSeconds", container_with(|c| c["readinessProbe"] = json!({"tcpSocket": {"port": 80}, "periodSeconds": -1})),
            Invalid("spec.containers[0].readinessProbe.periodSeconds", "must be greater than or equal to 0")),
        create("Pod", "preStop sleep hook", container_with(|c| c["lifecycle"] = json!({"preStop": {"sleep": {"seconds": 5}}, "postStart": {"exec": {"command": ["true"]}}})), Accepted),
        create("Pod", "lifecycle hook without a handler", container_with(|c| c["lifecycle"] = json!({"preStop": {}})),
            Invalid("spec.containers[0].lifecycle.preStop", "Required value: must specify a handler type")),
        create("Pod", "lifecycle hook with two handlers", container_with(|c| c["lifecycle"] = json!({"postStart": {"exec": {"command": ["true"]}, "httpGet": {"port": 80}}})),
            Invalid("spec.containers[0].lifecycle.postStart.httpGet", "Forbidden: may not specify more than 1 handler type")),
        create("Pod", "negative preStop sleep", container_with(|c| c["lifecycle"] = json!({"preStop": {"sleep": {"seconds": -1}}})),
            Invalid("spec.containers[0].lifecycle.preStop.sleep", "Invalid value: -1: must be non-negative and less than terminationGracePeriodSeconds (30)")),
        create("Pod", "lifecycle on a plain init container", pod_with(|p| p["spec"]["initContainers"] = json!([{"name": "i", "image": "busybox", "lifecycle": {"preStop": {"exec": {"command": ["true"]}}}}])),
            Invalid("spec.initContainers[0].lifecycle", "Forbidden: may not be set for init containers without restartPolicy=Always")),
        create("Pod", "httpGet probe port out of range", container_with(|c| c["livenessProbe"] = json!({"httpGet": {"port": 70000}})),
            Invalid("spec.containers[0].livenessProbe.httpGet.port", "must be between 1 and 65535, inclusive")),
        create("Pod", "containerPort 0", container_with(|c| c["ports"] = json!([{"containerPort": 0}])),
            Invalid("spec.containers[0].ports[0].containerPort", "must be between 1 and 65535, inclusive")),
        create("Pod", "duplicate port names", container_with(|c| c["ports"] = json!([{"name": "http", "containerPort": 80}, {"name": "http", "containerPort": 81}])),
            Invalid("spec.containers[0].ports[1].name", "Duplicate value: \"http\"")),
        create("Pod", "port name too long", container_with(|c| c["ports"] = json!([{"name": "a-very-long-port-name", "containerPort": 80}])),
            Invalid("spec.containers[0].ports[0].name", "must be no more than 15 characters")),
        create("Pod", "unknown protocol", container_with(|c| c["ports"] = json!([{"containerPort": 80, "protocol": "HTTP"}])),
            Invalid("spec.containers[0].ports[0].protocol", "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"")),
        create("Pod", "mount of a missing volume", container_with(|c| c["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}])),
            Invalid("spec.containers[0].volumeMounts[0].name", "Not found: \"data\"")),
        create("Pod", "mount without a path", pod_with(|p| {
            p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
            p["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": ""}]);
        }), Invalid("spec.containers[0].volumeMounts[0].mountPath", "Required value")),
        create("Pod", "a mounted volume", pod_with(|p| {
            p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
            p["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
        }), Accepted),
        create("Pod", "duplicate volume names", pod_with(|p| p["spec"]["volumes"] = json!([{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}])),
            Invalid("spec.volumes[1].name", "Duplicate value: \"v\"")),
        create("Pod", "volume without a source", pod_with(|p| p["spec"]["volumes"] = json!([{"name": "v"}])),
            Invalid("spec.volumes[0]", "Required value: must specify a volume type")),
        create("Pod", "env name with '='", container_with(|c| c["env"] = json!([{"name": "A=B", "value": "x"}])),
            Invalid("spec.containers[0].env[0].name", "a valid environment variable name must consist only of printable ASCII characters other than '='")),
        create("Pod", "relaxed env name (1.34+)", container_with(|c| c["env"] = json!([{"name": "1-dashed.name", "value": "x"}])), Accepted),
        create("Pod", "env value and valueFrom", container_with(|c| c["env"] = json!([{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])),
            Invalid("spec.containers[0].env[0].valueFrom", "may not be specified when `value` is not empty")),
        create("Pod", "hostname not a DNS label", pod_with(|p| p["spec"]["hostname"] = json!("Bad_Host")),
            Invalid("spec.hostname", "a lowercase RFC 1123 label must consist of")),
        create("Pod", "subdomain not a DNS label", pod_with(|p| p["spec"]["subdomain"] = json!("a.b")),
            Invalid("spec.subdomain", "a lowercase RFC 1123 label")),
        create("Pod", "unknown dnsPolicy", pod_with(|p| p["spec"]["dnsPolicy"] = json!("Nope")),
            Invalid("spec.dnsPolicy", "Unsupported value: \"Nope\"")),
        create("Pod", "unknown restartPolicy", pod_with(|p| p["spec"]["restartPolicy"] = json!("Sometimes")),
            Invalid("spec.restartPolicy", "Unsupported value: \"Sometimes\"")),
        create("Pod", "activeDeadlineSeconds 0", pod_with(|p| p["spec"]["activeDeadlineSeconds"] = json!(0)),
            Invalid("spec.activeDeadlineSeconds", "must be between 1 and 2147483647, inclusive")),
        create("Pod", "toleration Exists with a value", pod_with(|p| p["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists", "value": "v"}])),
            Invalid("spec.tolerations[0].operator", "value must be empty when `operator` is 'Exists'")),
        create("Pod", "toleration with an empty key and Equal", pod_with(|p| p["spec"]["tolerations"] = json!([{"operator": "Equal", "value": "v"}])),
            Invalid("spec.tolerations[0].operator", "operator must be Exists when `key` is empty")),
        create("Pod", "toleration with an unknown effect", pod_with(|p| p["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists", "effect": "Sometimes"}])),
            Invalid("spec.tolerations[0].effect", "Unsupported value: \"Sometimes\"")),
        create("Pod", "tolerationSeconds without NoExecute", pod_with(|p| p["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}])),
            Invalid("spec.tolerations[0].effect", "effect must be 'NoExecute' when `tolerationSeconds` is set")),
        create("Pod", "maxSkew 0", pod_with(|p| p["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}])),
            Invalid("spec.topologySpreadConstraints[0].maxSkew", "must be greater than zero")),
        create("Pod", "repeated spread constraint", pod_with(|p| p["spec"]["topologySpreadConstraints"] = json!([
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
            {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}])),
            Invalid("spec.topologySpreadConstraints[0].{topologyKey, whenUnsatisfiable}", "Duplicate value: \"{zone, DoNotSchedule}\"")),
        create("Pod", "minDomains with ScheduleAnyway", pod_with(|p| p["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2}])),
            Invalid("spec.topologySpreadConstraints[0].minDomains", "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not ScheduleAnyway")),
        create("Pod", "node affinity In without values", pod_with(|p| p["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": []}]}]}}})),
            Invalid("spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values", "must be specified when `operator` is 'In' or 'NotIn'")),
        create("Pod", "node affinity without terms", pod_with(|p| p["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}})),
            Invalid("spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms", "must have at least one node selector term")),
        create("Pod", "preferred weight 0", pod_with(|p| p["spec"]["affinity"] = json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 0, "podAffinityTerm": {"topologyKey": "zone"}}]}})),
            Invalid("spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight", "must be in the range 1-100")),
        create("Pod", "pod affinity term without topologyKey", pod_with(|p| p["spec"]["affinity"] = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"a": "b"}}}]}})),
            Invalid("spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey", "Required value: can not be empty")),
        // ---- Pod, update (ValidatePodUpdate) ----
        update("Pod", "image change", pod(), |p| p["spec"]["containers"][0]["image"] = json!("nginx:1.28"), Accepted),
        update("Pod", "label change", pod(), |p| p["metadata"]["labels"]["tier"] = json!("web"), Accepted),
        update("Pod", "restartPolicy change", pod(), |p| p["spec"]["restartPolicy"] = json!("Never"), Invalid("spec", forbidden_pod)),
        update("Pod", "port change", container_with(|c| c["ports"] = json!([{"containerPort": 80}])), |p| p["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(81), Invalid("spec", forbidden_pod)),
        update("Pod", "resources change (resize only)", pod(), |p| p["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "1"}}), Invalid("spec", forbidden_pod)),
        update("Pod", "added container", pod(), |p| p["spec"]["containers"].as_array_mut().unwrap().push(json!({"name": "d", "image": "busybox"})), Invalid("spec.containers", "Forbidden: pod updates may not add or remove containers")),
        update("Pod", "activeDeadlineSeconds set", pod(), |p| p["spec"]["activeDeadlineSeconds"] = json!(30), Accepted),
        update("Pod", "activeDeadlineSeconds raised", pod_with(|p| p["spec"]["activeDeadlineSeconds"] = json!(30)), |p| p["spec"]["activeDeadlineSeconds"] = json!(60), Invalid("spec.activeDeadlineSeconds", "must be less than or equal to previous value")),
        update("Pod", "activeDeadlineSeconds lowered", pod_with(|p| p["spec"]["activeDeadlineSeconds"] = json!(30)), |p| p["spec"]["activeDeadlineSeconds"] = json!(10), Accepted),
        update("Pod", "activeDeadlineSeconds unset", pod_with(|p| p["spec"]["activeDeadlineSeconds"] = json!(30)), |p| { p["spec"].as_object_mut().unwrap().remove("activeDeadlineSeconds"); }, Invalid("spec.activeDeadlineSeconds", "must not update from a positive integer to nil value")),
        update("Pod", "toleration added", pod(), |p| p["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]), Accepted),
        update("Pod", "toleration removed", pod_with(|p| p["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}])), |p| p["spec"]["tolerations"] = json!([]), Invalid("spec", forbidden_pod)),
        update("Pod", "grace period from negative to 1", pod_with(|p| p["spec"]["terminationGracePeriodSeconds"] = json!(-1)), |p| p["spec"]["terminationGracePeriodSeconds"] = json!(1), Accepted),
        update("Pod", "grace period 30 to 10", pod(), |p| p["spec"]["terminationGracePeriodSeconds"] = json!(10), Invalid("spec", forbidden_pod)),
        update("Pod", "scheduling gate removed", pod_with(|p| p["spec"]["schedulingGates"] = json!([{"name": "a"}, {"name": "b"}])), |p| p["spec"]["schedulingGates"] = json!([{"name": "a"}]), Accepted),
        update("Pod", "scheduling gate added", pod(), |p| p["spec"]["schedulingGates"] = json!([{"name": "a"}]), Invalid("spec.schedulingGates", "only deletion is allowed, but found new scheduling gate")),
        update("Pod", "node selector added to a gated pod", pod_with(|p| p["spec"]["schedulingGates"] = json!([{"name": "a"}])), |p| p["spec"]["nodeSelector"] = json!({"zone": "a"}), Accepted),
        update("Pod", "node selector added to a scheduled pod", pod(), |p| p["spec"]["nodeSelector"] = json!({"zone": "a"}), Invalid("spec", forbidden_pod)),
        // ---- Deployment ----
        create("Deployment", "a plain deployment", workload("Deployment"), Accepted),
        create("Deployment", "selector not matching the template", workload_with("Deployment", |d| d["spec"]["selector"]["matchLabels"]["app"] = json!("y")),
            Invalid("spec.template.metadata.labels", "`selector` does not match template `labels`")),
        create("Deployment", "maxUnavailable and maxSurge both 0", workload_with("Deployment", |d| d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}})),
            Invalid("spec.strategy.rollingUpdate.maxUnavailable", "may not be 0 when `maxSurge` is 0")),
        create("Deployment", "maxSurge above 100%", workload_with("Deployment", |d| d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "150%"}})),
            Invalid("spec.strategy.rollingUpdate.maxSurge", "must not be greater than 100%")),
        create("Deployment", "Recreate with rollingUpdate", workload_with("Deployment", |d| d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})),
            Invalid("spec.strategy.rollingUpdate", "Forbidden: may not be specified when strategy `type` is 'Recreate'")),
        create("Deployment", "progressDeadlineSeconds not above minReadySeconds", workload_with("Deployment", |d| { d["spec"]["minReadySeconds"] = json!(10); d["spec"]["progressDeadlineSeconds"] = json!(10); }),
            Invalid("spec.progressDeadlineSeconds", "must be greater than minReadySeconds")),
        create("Deployment", "template restartPolicy Never", workload_with("Deployment", |d| d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never")),
            Invalid("spec.template.spec.restartPolicy", "Unsupported value: \"Never\": supported values: \"Always\"")),
        create("Deployment", "template activeDeadlineSeconds", workload_with("Deployment", |d| d["spec"]["template"]["spec"]["activeDeadlineSeconds"] = json!(5)),
            Invalid("spec.template.spec.activeDeadlineSeconds", "Forbidden: activeDeadlineSeconds in Deployment is not Supported")),
        create("Deployment", "template container request above limit", workload_with("Deployment", |d| d["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}})),
            Invalid("spec.template.spec.containers[0].resources.requests", "must be less than or equal to cpu limit of 1")),
        update("Deployment", "selector change", workload("Deployment"), |d| {
            d["spec"]["selector"] = json!({"matchLabels": {"app": "y"}});
            d["spec"]["template"]["metadata"]["labels"] = json!({"app": "y"});
        }, Invalid("spec.selector", "field is immutable")),
        update("Deployment", "replicas change", workload("Deployment"), |d| d["spec"]["replicas"] = json!(5), Accepted),
        update("Deployment", "template change", workload("Deployment"), |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28"), Accepted),
        // ---- ReplicaSet ----
        create("ReplicaSet", "negative replicas", workload_with("ReplicaSet", |r| r["spec"]["replicas"] = json!(-1)),
            Invalid("spec.replicas", "must be greater than or equal to 0")),
        create("ReplicaSet", "missing selector", workload_with("ReplicaSet", |r| { r["spec"].as_object_mut().unwrap().remove("selector"); }),
            Invalid("spec.selector", "Required value")),
        update("ReplicaSet", "selector change", workload("ReplicaSet"), |r| r["spec"]["selector"]["matchExpressions"] = json!([{"key": "app", "operator": "Exists"}]),
            Invalid("spec.selector", "field is immutable")),
        update("ReplicaSet", "replicas change", workload("ReplicaSet"), |r| r["spec"]["replicas"] = json!(3), Accepted),
        // ---- DaemonSet ----
        create("DaemonSet", "unknown updateStrategy", workload_with("DaemonSet", |d| d["spec"]["updateStrategy"] = json!({"type": "Sometimes"})),
            Invalid("spec.updateStrategy.type", "Unsupported value: \"Sometimes\"")),
        create("DaemonSet", "template restartPolicy OnFailure", workload_with("DaemonSet", |d| d["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure")),
            Invalid("spec.template.spec.restartPolicy", "supported values: \"Always\"")),
        update("DaemonSet", "selector change", workload("DaemonSet"), |d| d["spec"]["selector"]["matchLabels"]["tier"] = json!("a"),
            Invalid("spec.selector", "field is immutable")),
        update("DaemonSet", "template change", workload("DaemonSet"), |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox"), Accepted),
        // ---- StatefulSet ----
        create("StatefulSet", "unknown podManagementPolicy", workload_with("StatefulSet", |s| s["spec"]["podManagementPolicy"] = json!("Random")),
            Invalid("spec.podManagementPolicy", "Unsupported value: \"Random\"")),
        create("StatefulSet", "serviceName not a DNS label", workload_with("StatefulSet", |s| s["spec"]["serviceName"] = json!("Bad_Name")),
            Invalid("spec.serviceName", "a lowercase RFC 1123 label")),
        create("StatefulSet", "OnDelete with rollingUpdate", workload_with("StatefulSet", |s| s["spec"]["updateStrategy"] = json!({"type": "OnDelete", "rollingUpdate": {"partition": 1}})),
            Invalid("spec.updateStrategy.rollingUpdate", "only allowed for updateStrategy 'RollingUpdate'")),
        create("StatefulSet", "template mounting a claim template", workload_with("StatefulSet", |s| {
            s["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
            s["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]);
        }), Accepted),
        create("StatefulSet", "template restartPolicy Never", workload_with("StatefulSet", |s| s["spec"]["template"]["spec"]["restartPolicy"] = json!("Never")),
            Invalid("spec.template.spec.restartPolicy", "Unsupported value: \"Never\": supported values: \"Always\"")),
        update("StatefulSet", "serviceName change", workload("StatefulSet"), |s| s["spec"]["serviceName"] = json!("other"),
            Invalid("spec", "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden")),
        update("StatefulSet", "podManagementPolicy change", workload("StatefulSet"), |s| s["spec"]["podManagementPolicy"] = json!("Parallel"),
            Invalid("spec", "updates to statefulset spec for fields other than")),
        update("StatefulSet", "volumeClaimTemplates change", workload("StatefulSet"), |s| s["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "d"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]),
            Invalid("spec", "updates to statefulset spec for fields other than")),
        update("StatefulSet", "replicas, template, minReadySeconds change", workload("StatefulSet"), |s| {
            s["spec"]["replicas"] = json!(3);
            s["spec"]["minReadySeconds"] = json!(5);
            s["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox");
        }, Accepted),
        update("StatefulSet", "updateStrategy and retention policy change", workload("StatefulSet"), |s| {
            s["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
            s["spec"]["persistentVolumeClaimRetentionPolicy"] = json!({"whenDeleted": "Delete", "whenScaled": "Retain"});
        }, Accepted),
        // ---- Service ----
        create("Service", "a plain service", service(), Accepted),
        create("Service", "port out of range", service_with(|s| s["spec"]["ports"][0]["port"] = json!(70000)),
            Invalid("spec.ports[0].port", "must be between 1 and 65535, inclusive")),
        create("Service", "targetPort 0", service_with(|s| s["spec"]["ports"][0]["targetPort"] = json!(0)),
            Invalid("spec.ports[0].targetPort", "must be between 1 and 65535, inclusive")),
        create("Service", "targetPort name not an IANA name", service_with(|s| s["spec"]["ports"][0]["targetPort"] = json!("Web_Port")),
            Invalid("spec.ports[0].targetPort", "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")),
        create("Service", "unknown protocol", service_with(|s| s["spec"]["ports"][0]["protocol"] = json!("ICMP")),
            Invalid("spec.ports[0].protocol", "Unsupported value: \"ICMP\"")),
        create("Service", "two ports without names", service_with(|s| s["spec"]["ports"] = json!([{"port": 80}, {"port": 81}])),
            Invalid("spec.ports[0].name", "Required value")),
        create("Service", "duplicate port names", service_with(|s| s["spec"]["ports"] = json!([{"name": "a", "port": 80}, {"name": "a", "port": 81}])),
            Invalid("spec.ports[1].name", "Duplicate value: \"a\"")),
        create("Service", "duplicate port and protocol", service_with(|s| s["spec"]["ports"] = json!([{"name": "a", "port": 80}, {"name": "b", "port": 80}])),
            Invalid("spec.ports[1]", "Duplicate value")),
        create("Service", "nodePort on a ClusterIP service", service_with(|s| s["spec"]["ports"][0]["nodePort"] = json!(30080)),
            Invalid("spec.ports[0].nodePort", "Forbidden: may not be used when `type` is 'ClusterIP'")),
        create("Service", "nodePort outside the configured range", service_with(|s| { s["spec"]["type"] = json!("NodePort"); s["spec"]["ports"][0]["nodePort"] = json!(80); }),
            Invalid("spec.ports[0].nodePort", "provided port is not in the valid range. The range of valid ports is 30000-32767")),
        create("Service", "sessionAffinityConfig without ClientIP", service_with(|s| s["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10}})),
            Invalid("spec.sessionAffinityConfig", "must not be set when session affinity is None")),
        create("Service", "ClientIP timeout 0", service_with(|s| { s["spec"]["sessionAffinity"] = json!("ClientIP"); s["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 0}}); }),
            Invalid("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "must be greater than 0 and less than 86400")),
        create("Service", "clusterIP not an address", service_with(|s| s["spec"]["clusterIP"] = json!("10.0.0.256")),
            Invalid("spec.clusterIPs[0]", "must be a valid IP address")),
        create("Service", "IPv6 clusterIP with IPv4 family", service_with(|s| { s["spec"]["clusterIP"] = json!("fd00::10"); s["spec"]["ipFamilies"] = json!(["IPv4"]); }),
            Invalid("spec.clusterIPs[0]", "expected an IPv4 value as indicated by `ipFamilies[0]`")),
        create("Service", "ExternalName with a clusterIP", json!({"apiVersion": "v1", "kind": "Service", "metadata": {}, "spec": {"type": "ExternalName", "externalName": "example.com", "clusterIP": "10.96.0.50"}}),
            Invalid("spec.clusterIPs", "Forbidden: may not be set for ExternalName services")),
        create("Service", "externalIPs not addresses", service_with(|s| s["spec"]["externalIPs"] = json!(["1.2.3.4", "nope"])),
            Invalid("spec.externalIPs[1]", "Invalid value: \"nope\": must be a valid IP address")),
        create("Service", "selector value not a label value", service_with(|s| s["spec"]["selector"] = json!({"app": "a b"})),
            Invalid("spec.selector", "a valid label must be an empty string")),
        create("Service", "a chosen clusterIP", service_with(|s| s["spec"]["clusterIP"] = json!("10.96.100.1")), Accepted),
        create("Service", "a clusterIP already allocated", service_with(|s| s["spec"]["clusterIP"] = json!("10.96.100.1")),
            Invalid("spec.clusterIPs", "Invalid value: [\"10.96.100.1\"]: failed to allocate IP 10.96.100.1: provided IP is already allocated")),
        create("Service", "a clusterIP outside the service range", service_with(|s| s["spec"]["clusterIP"] = json!("10.0.0.5")),
            Invalid("spec.clusterIPs", "failed to allocate IP 10.0.0.5: the provided IP (10.0.0.5) is not in the valid range. The range of valid IPs is 10.96.0.0/12")),
        create("Service", "a chosen nodePort", service_with(|s| { s["spec"]["type"] = json!("NodePort"); s["spec"]["ports"][0]["nodePort"] = json!(30100); }), Accepted),
        create("Service", "a nodePort already allocated", service_with(|s| { s["spec"]["type"] = json!("NodePort"); s["spec"]["ports"][0]["nodePort"] = json!(30100); }),
            Invalid("spec.ports[0].nodePort", "Invalid value: 30100: provided port is already allocated")),
        create("Service", "headless LoadBalancer", service_with(|s| { s["spec"]["type"] = json!("LoadBalancer"); s["spec"]["clusterIP"] = json!("None"); }),
            Invalid("spec.clusterIPs[0]", "Invalid value: \"None\": may not be set to 'None' for LoadBalancer services")),
        create("Service", "ExternalName with ipFamilies", json!({"apiVersion": "v1", "kind": "Service", "metadata": {}, "spec": {"type": "ExternalName", "externalName": "example.com", "ipFamilies": ["IPv4"]}}),
            Invalid("spec.ipFamilies", "Forbidden: may not be set for ExternalName services")),
        update("Service", "ClusterIP to headless", service(), |s| { s["spec"]["clusterIP"] = json!("None"); s["spec"]["clusterIPs"] = json!(["None"]); },
            Invalid("spec.clusterIPs[0]", "Invalid value: [\"None\"]: may not change once set")),
        create("Service", "externalTrafficPolicy on ClusterIP", service_with(|s| s["spec"]["externalTrafficPolicy"] = json!("Local")),
            Invalid("spec.externalTrafficPolicy", "may only be set for externally-accessible services")),
        create("Service", "loadBalancerSourceRanges on a NodePort", service_with(|s| { s["spec"]["type"] = json!("NodePort"); s["spec"]["loadBalancerSourceRanges"] = json!(["10.0.0.0/8"]); }),
            Invalid("spec.LoadBalancerSourceRanges", "Forbidden: may only be used when `type` is 'LoadBalancer'")),
        create("Service", "loadBalancerSourceRanges not CIDRs", service_with(|s| { s["spec"]["type"] = json!("LoadBalancer"); s["spec"]["loadBalancerSourceRanges"] = json!([" 10.0.0.0/8", "10.0.0.1"]); }),
            Invalid("spec.LoadBalancerSourceRanges", "Invalid value: \"[ 10.0.0.0/8 10.0.0.1]\": must be a list of IP ranges. For example, 10.240.0.0/24,10.250.0.0/24")),
        create("Service", "the source-ranges annotation not CIDRs", service_with(|s| { s["spec"]["type"] = json!("LoadBalancer"); s["metadata"]["annotations"] = json!({"service.beta.kubernetes.io/load-balancer-source-ranges": "10.0.0.0/8,nope"}); }),
            Invalid("metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]", "must be a list of IP ranges")),
        create("Service", "loadBalancerSourceRanges, trimmed, IPv4 and IPv6", service_with(|s| { s["spec"]["type"] = json!("LoadBalancer"); s["spec"]["loadBalancerSourceRanges"] = json!([" 192.0.2.0/24 ", "2001:db8::/32"]); }), Accepted),
        create("Service", "healthCheckNodePort with the Cluster policy", service_with(|s| { s["spec"]["type"] = json!("LoadBalancer"); s["spec"]["healthCheckNodePort"] = json!(30200); }),
            Invalid("spec.healthCheckNodePort", "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")),
        create("Service", "a chosen healthCheckNodePort", service_with(|s| { s["spec"]["type"] = json!("LoadBalancer"); s["spec"]["externalTrafficPolicy"] = json!("Local"); s["spec"]["healthCheckNodePort"] = json!(30201); }), Accepted),
        create("Service", "a healthCheckNodePort already allocated", service_with(|s| { s["spec"]["type"] = json!("NodePort"); s["spec"]["ports"][0]["nodePort"] = json!(30201); }),
            Invalid("spec.ports[0].nodePort", "Invalid value: 30201: provided port is already allocated")),
        create("Service", "a healthCheckNodePort outside the range", service_with(|s| { s["spec"]["type"] = json!("LoadBalancer"); s["spec"]["externalTrafficPolicy"] = json!("Local"); s["spec"]["healthCheckNodePort"] = json!(99); }),
            Invalid("spec.healthCheckNodePort", "provided port is not in the valid range")),
        update("Service", "clusterIP change", service(), |s| s["spec"]["clusterIP"] = json!("10.96.0.99"),
            Invalid("spec.clusterIPs[0]", "may not change once set")),
        update("Service", "clusterIPs change", service(), |s| s["spec"]["clusterIPs"] = json!(["10.96.0.99"]),
            Invalid("spec.clusterIPs[0]", "may not change once set")),
        update("Service", "ClusterIP to NodePort", service(), |s| s["spec"]["type"] = json!("NodePort"), Accepted),
        update("Service", "NodePort back to ClusterIP drops the nodePorts", service_with(|s| s["spec"]["type"] = json!("NodePort")), |s| s["spec"]["type"] = json!("ClusterIP"), Accepted),
        update("Service", "ClusterIP to ExternalName", service(), |s| { s["spec"]["type"] = json!("ExternalName"); s["spec"]["externalName"] = json!("example.com"); }, Accepted),
        update("Service", "a port added", service(), |s| s["spec"]["ports"] = json!([{"name": "a", "port": 80}, {"name": "b", "port": 443}]), Accepted),
        // ---- Endpoints ----
        create("Endpoints", "bad address", json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {}, "subsets": [{"addresses": [{"ip": "not-an-ip"}], "ports": [{"port": 80}]}]}),
            Invalid("subsets[0].addresses[0].ip", "must be a valid IP address")),
        create("Endpoints", "two ports without names", json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}, {"port": 81}]}]}),
            Invalid("subsets[0].ports[0].name", "Required value")),
        create("Endpoints", "port out of range", json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 0}]}]}),
            Invalid("subsets[0].ports[0].port", "must be between 1 and 65535, inclusive")),
        update("Endpoints", "addresses change", json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
            |e| e["subsets"][0]["addresses"] = json!([{"ip": "10.0.0.2"}]), Accepted),
        // ---- EndpointSlice ----
        create("EndpointSlice", "unknown addressType", json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {}, "addressType": "IPX", "endpoints": []}),
            Invalid("addressType", "Unsupported value: \"IPX\"")),
        create("EndpointSlice", "IPv6 address in an IPv4 slice", json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {}, "addressType": "IPv4", "endpoints": [{"addresses": ["fd00::1"]}]}),
            Invalid("endpoints[0].addresses[0]", "must be a valid IPv4 address")),
        update("EndpointSlice", "addressType change", json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {}, "addressType": "IPv4", "endpoints": []}),
            |e| e["addressType"] = json!("IPv6"), Invalid("addressType", "Invalid value: \"IPv6\": field is immutable")),
        update("EndpointSlice", "endpoints change", json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {}, "addressType": "IPv4", "endpoints": []}),
            |e| e["endpoints"] = json!([{"addresses": ["10.0.0.1"]}]), Accepted),
        // ---- ConfigMap ----
        create("ConfigMap", "a plain config map", cm(json!({"a": "b"})), Accepted),
        create("ConfigMap", "1.5 MB of data", cm(json!({"big": "x".repeat(BIG)})),
            Invalid("", "Too long: may not be more than 1048576 bytes")),
        create("ConfigMap", "bad key", cm(json!({"a b": "c"})),
            Invalid("data[a b]", "a valid config key must consist of alphanumeric characters")),
        create("ConfigMap", "key '..'", cm(json!({"..": "c"})), Invalid("data[..]", "must not be '..'")),
        create("ConfigMap", "key in data and binaryData", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}, "data": {"k": "v"}, "binaryData": {"k": "dg=="}}),
            Invalid("data[k]", "duplicate of key present in binaryData")),
        update("ConfigMap", "data change when immutable", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}, "data": {"a": "b"}, "immutable": true}),
            |c| c["data"]["a"] = json!("c"), Invalid("data", "Forbidden: field is immutable when `immutable` is set")),
        update("ConfigMap", "immutable unset", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}, "data": {"a": "b"}, "immutable": true}),
            |c| c["immutable"] = json!(false), Invalid("immutable", "Forbidden: field is immutable when `immutable` is set")),
        update("ConfigMap", "labels change when immutable", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}, "data": {"a": "b"}, "immutable": true}),
            |c| c["metadata"]["labels"] = json!({"x": "y"}), Accepted),
        update("ConfigMap", "data change when mutable", cm(json!({"a": "b"})), |c| c["data"]["a"] = json!("c"), Accepted),
        update("ConfigMap", "grown past 1 MiB", cm(json!({"a": "b"})), |c| c["data"]["a"] = json!("x".repeat(BIG)),
            Invalid("", "Too long: may not be more than 1048576 bytes")),
        // ---- Secret ----
        create("Secret", "TLS secret without keys", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}, "type": "kubernetes.io/tls", "data": {}}),
            Invalid("data[tls.crt]", "Required value")),
        create("Secret", "dockerconfigjson without its key", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}, "type": "kubernetes.io/dockerconfigjson", "data": {}}),
            Invalid("data[.dockerconfigjson]", "Required value")),
        create("Secret", "1.5 MB of stringData", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}, "stringData": {"big": "x".repeat(BIG)}}),
            Invalid("data", "Too long: may not be more than 1048576 bytes")),
        update("Secret", "type change", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}, "stringData": {"a": "b"}}),
            |s| s["type"] = json!("kubernetes.io/basic-auth"), Invalid("type", "Invalid value: \"kubernetes.io/basic-auth\": field is immutable")),
        update("Secret", "data change when immutable", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}, "data": {"a": "Yg=="}, "immutable": true}),
            |s| s["data"]["a"] = json!("Yw=="), Invalid("data", "Forbidden: field is immutable when `immutable` is set")),
        update("Secret", "data change when mutable", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}, "data": {"a": "Yg=="}}),
            |s| s["data"]["a"] = json!("Yw=="), Accepted),
        // ---- Namespace ----
        create("Namespace", "name not a DNS label", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}),
            Invalid("metadata.name", "a lowercase RFC 1123 label must consist of")),
        update("Namespace", "labels change", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {}}), |n| n["metadata"]["labels"] = json!({"team": "a"}), Accepted),
        update("Namespace", "bad label value", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {}}), |n| n["metadata"]["labels"] = json!({"team": "a b"}),
            Invalid("metadata.labels", "a valid label must be an empty string or consist of alphanumeric characters")),
        // ---- Node ----
        create("Node", "taint with an unknown effect", json!({"apiVersion": "v1", "kind": "Node", "metadata": {}, "spec": {"taints": [{"key": "k", "effect": "Sometimes"}]}}),
            Invalid("spec.taints[0].effect", "Unsupported value: \"Sometimes\"")),
        create("Node", "bad pod CIDR", json!({"apiVersion": "v1", "kind": "Node", "metadata": {}, "spec": {"podCIDRs": ["10.0.0.0/99x"]}}),
            Invalid("spec.podCIDRs[0]", "must be a valid CIDR value")),
        update("Node", "pod CIDR set once", json!({"apiVersion": "v1", "kind": "Node", "metadata": {}, "spec": {}}),
            |n| { n["spec"]["podCIDR"] = json!("10.244.1.0/24"); n["spec"]["podCIDRs"] = json!(["10.244.1.0/24"]); }, Accepted),
        update("Node", "pod CIDR changed", json!({"apiVersion": "v1", "kind": "Node", "metadata": {}, "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}}),
            |n| { n["spec"]["podCIDR"] = json!("10.244.2.0/24"); n["spec"]["podCIDRs"] = json!(["10.244.2.0/24"]); },
            Invalid("spec.podCIDRs", "Forbidden: node updates may not change podCIDR except from \"\" to valid")),
        update("Node", "providerID changed", json!({"apiVersion": "v1", "kind": "Node", "metadata": {}, "spec": {"providerID": "kcore://a"}}),
            |n| n["spec"]["providerID"] = json!("kcore://b"), Invalid("spec.providerID", "node updates may not change providerID except from \"\" to valid")),
        update("Node", "unschedulable set", json!({"apiVersion": "v1", "kind": "Node", "metadata": {}, "spec": {}}), |n| n["spec"]["unschedulable"] = json!(true), Accepted),
        // ---- Ingress ----
        create("Ingress", "a plain ingress", ingress(json!([{"path": "/", "pathType": "Prefix", "backend": svc_backend()}])), Accepted),
        create("Ingress", "pathType missing", ingress(json!([{"path": "/", "backend": svc_backend()}])),
            Invalid("spec.rules[0].http.paths[0].pathType", "Required value: pathType must be specified")),
        create("Ingress", "relative Prefix path", ingress(json!([{"path": "foo", "pathType": "Prefix", "backend": svc_backend()}])),
            Invalid("spec.rules[0].http.paths[0].path", "Invalid value: \"foo\": must be an absolute path")),
        create("Ingress", "path with //", ingress(json!([{"path": "/a//b", "pathType": "Exact", "backend": svc_backend()}])),
            Invalid("spec.rules[0].http.paths[0].path", "must not contain '//'")),
        create("Ingress", "service and resource backends", ingress(json!([{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}, "resource": {"kind": "Bucket", "name": "b"}}}])),
            Invalid("spec.rules[0].http.paths[0].backend", "cannot set both resource and service backends")),
        create("Ingress", "port name and number", ingress(json!([{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80, "name": "http"}}}}])),
            Invalid("spec.rules[0].http.paths[0].backend", "cannot set both port name & port number")),
        create("Ingress", "no port", ingress(json!([{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {}}}}])),
            Invalid("spec.rules[0].http.paths[0].backend", "port name or number is required")),
        create("Ingress", "neither rules nor default backend", json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {}, "spec": {}}),
            Invalid("spec", "either `defaultBackend` or `rules` must be specified")),
        create("Ingress", "host is an IP", json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {}, "spec": {"rules": [{"host": "10.0.0.1", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": svc_backend()}]}}]}}),
            Invalid("spec.rules[0].host", "must be a DNS name, not an IP address")),
        create("Ingress", "wildcard host", json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {}, "spec": {"rules": [{"host": "*.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": svc_backend()}]}}]}}), Accepted),
        update("Ingress", "pathType dropped", ingress(json!([{"path": "/", "pathType": "Prefix", "backend": svc_backend()}])),
            |i| { i["spec"]["rules"][0]["http"]["paths"][0].as_object_mut().unwrap().remove("pathType"); },
            Invalid("spec.rules[0].http.paths[0].pathType", "pathType must be specified")),
        update("Ingress", "backend changed", ingress(json!([{"path": "/", "pathType": "Prefix", "backend": svc_backend()}])),
            |i| i["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = json!("api"), Accepted),
        // ---- Lease ----
        create("Lease", "leaseDurationSeconds 0", json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {}, "spec": {"leaseDurationSeconds": 0}}),
            Invalid("spec.leaseDurationSeconds", "must be greater than 0")),
        create("Lease", "negative leaseTransitions", json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {}, "spec": {"leaseTransitions": -1}}),
            Invalid("spec.leaseTransitions", "must be greater than or equal to 0")),
        update("Lease", "holder renewed", json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}),
            |l| l["spec"]["holderIdentity"] = json!("b"), Accepted),
        // ---- PersistentVolumeClaim ----
        create("PersistentVolumeClaim", "a plain claim", pvc(), Accepted),
        create("PersistentVolumeClaim", "no access modes", json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}),
            Invalid("spec.accessModes", "Required value: at least 1 access mode is required")),
        create("PersistentVolumeClaim", "no storage request", json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {}, "spec": {"accessModes": ["ReadWriteOnce"]}}),
            Invalid("spec.resources[storage]", "Required value")),
        create("PersistentVolumeClaim", "unknown access mode", json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {}, "spec": {"accessModes": ["ReadWriteSometimes"], "resources": {"requests": {"storage": "1Gi"}}}}),
            Invalid("spec.accessModes", "Unsupported value: \"ReadWriteSometimes\"")),
        update("PersistentVolumeClaim", "access modes change", pvc(), |c| c["spec"]["accessModes"] = json!(["ReadWriteMany"]),
            Invalid("spec", "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims")),
        update("PersistentVolumeClaim", "storage change on an unbound claim", pvc(), |c| c["spec"]["resources"]["requests"]["storage"] = json!("2Gi"),
            Invalid("spec", "spec is immutable after creation")),
        update("PersistentVolumeClaim", "volumeName set once", pvc(), |c| c["spec"]["volumeName"] = json!("pv-1"), Accepted),
        // ---- PersistentVolume ----
        create("PersistentVolume", "a plain volume", pv(), Accepted),
        create("PersistentVolume", "no capacity", json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {}, "spec": {"accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/tmp"}}}),
            Invalid("spec.capacity", "Required value")),
        create("PersistentVolume", "two sources", json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {}, "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}, "hostPath": {"path": "/tmp"}, "nfs": {"server": "s", "path": "/"}}}),
            Invalid("spec", "may not specify more than 1 volume type")),
        create("PersistentVolume", "no source", json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {}, "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}}),
            Invalid("spec", "must specify a volume type")),
        update("PersistentVolume", "source change", pv(), |v| v["spec"]["hostPath"]["path"] = json!("/tmp/other"),
            Invalid("spec.persistentvolumesource", "Forbidden: spec.persistentvolumesource is immutable after creation")),
        update("PersistentVolume", "reclaim policy change", pv(), |v| v["spec"]["persistentVolumeReclaimPolicy"] = json!("Delete"), Accepted),
        // ---- ControllerRevision ----
        create("ControllerRevision", "negative revision", json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {}, "revision": -1, "data": {}}),
            Invalid("revision", "must be greater than or equal to 0")),
        update("ControllerRevision", "data change", json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {}, "revision": 1, "data": {"a": 1}}),
            |r| r["data"] = json!({"a": 2}), Invalid("data", "field is immutable")),
        update("ControllerRevision", "labels change", json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {}, "revision": 1, "data": {"a": 1}}),
            |r| r["metadata"]["labels"] = json!({"x": "y"}), Accepted),
        // ---- PodDisruptionBudget ----
        create("PodDisruptionBudget", "both minAvailable and maxUnavailable", json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {}, "spec": {"minAvailable": 1, "maxUnavailable": 1}}),
            Invalid("spec", "minAvailable and maxUnavailable cannot be both set")),
        create("PodDisruptionBudget", "minAvailable above 100%", json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {}, "spec": {"minAvailable": "120%"}}),
            Invalid("spec.minAvailable", "must not be greater than 100%")),
        create("PodDisruptionBudget", "negative maxUnavailable", json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {}, "spec": {"maxUnavailable": -1}}),
            Invalid("spec.maxUnavailable", "must be greater than or equal to 0")),
        create("PodDisruptionBudget", "bad selector operator", json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {}, "spec": {"minAvailable": 1, "selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}}),
            Invalid("spec.selector.matchExpressions[0].values", "must be specified when `operator` is 'In' or 'NotIn'")),
        create("PodDisruptionBudget", "unknown eviction policy", json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {}, "spec": {"minAvailable": 1, "unhealthyPodEvictionPolicy": "Never"}}),
            Invalid("spec.unhealthyPodEvictionPolicy", "Unsupported value: \"Never\"")),
        update("PodDisruptionBudget", "selector change (mutable since 1.15)", json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"a": "b"}}}}),
            |p| p["spec"]["selector"] = json!({"matchLabels": {"a": "c"}}), Accepted),
        // ---- Job, CronJob ----
        create("Job", "a plain job", batch_job(|_| {}), Accepted),
        create("Job", "template restartPolicy Always", batch_job(|j| j["spec"]["template"]["spec"]["restartPolicy"] = json!("Always")),
            Invalid("spec.template.spec.restartPolicy", "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"")),
        create("Job", "Indexed without completions", batch_job(|j| { j["spec"]["completionMode"] = json!("Indexed"); j["spec"]["parallelism"] = json!(2); }),
            Invalid("spec.completions", "Required value: when completion mode is Indexed")),
        create("Job", "podFailurePolicy with OnFailure", batch_job(|j| {
            j["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
            j["spec"]["podFailurePolicy"] = json!({"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [1]}}]});
        }), Invalid("spec.template.spec.restartPolicy", "only \"Never\" is supported when podFailurePolicy is specified")),
        create("Job", "a selector of its own without manualSelector", batch_job(|j| j["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "not-mine"}})),
            Invalid("spec.selector.matchLabels[batch.kubernetes.io/controller-uid]", "must be '")),
        update("Job", "completions change", batch_job(|_| {}), |j| j["spec"]["completions"] = json!(3),
            Invalid("spec.completions", "field is immutable")),
        update("Job", "template change of a running job", batch_job(|_| {}), |j| j["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:2"),
            Invalid("spec.template", "field is immutable")),
        update("Job", "parallelism and suspend change", batch_job(|_| {}), |j| { j["spec"]["parallelism"] = json!(0); j["spec"]["suspend"] = json!(true); }, Accepted),
        create("CronJob", "a plain cronjob", batch_cronjob("*/5 * * * *"), Accepted),
        create("CronJob", "an unparseable schedule", batch_cronjob("every minute"),
            Invalid("spec.schedule", "expected exactly 5 fields, found 2: [every minute]")),
        create("CronJob", "an unknown time zone", { let mut c = batch_cronjob("@daily"); c["spec"]["timeZone"] = json!("Atlantis/Capital"); c },
            Invalid("spec.timeZone", "unknown time zone Atlantis/Capital")),
        update("CronJob", "schedule and suspend change", batch_cronjob("*/5 * * * *"), |c| { c["spec"]["schedule"] = json!("@hourly"); c["spec"]["suspend"] = json!(true); }, Accepted),
        // ---- ServiceAccount, Event ----
        create("ServiceAccount", "bad name", json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "Bad_Name"}}),
            Invalid("metadata.name", "a lowercase RFC 1123 subdomain must consist of")),
        update("ServiceAccount", "labels change", json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {}}), |s| s["metadata"]["labels"] = json!({"a": "b"}), Accepted),
        update("ServiceAccount", "a finalizer that is not a qualified name", json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {}}),
            |s| s["metadata"]["finalizers"] = json!(["bad finalizer"]), Invalid("metadata.finalizers", "Invalid value: \"bad finalizer\": name part must consist of")),
        update("ServiceAccount", "orphan and foregroundDeletion", json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {}}),
            |s| s["metadata"]["finalizers"] = json!(["orphan", "foregroundDeletion"]), Invalid("metadata.finalizers", "finalizer orphan and foregroundDeletion cannot be both set")),
        update("ServiceAccount", "annotations past 256 KiB", json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {}}),
            |s| s["metadata"]["annotations"] = json!({"big": "x".repeat(300 * 1024)}), Invalid("metadata.annotations", "Too long: may not be more than 262144 bytes")),
        create("Event", "involved object in another namespace", json!({"apiVersion": "v1", "kind": "Event", "metadata": {}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}, "reason": "Started", "message": "m", "type": "Normal"}),
            Invalid("involvedObject.namespace", "Invalid value: \"other\": does not match event.namespace")),
        create("Event", "unknown type", json!({"apiVersion": "v1", "kind": "Event", "metadata": {}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Started", "message": "m", "type": "Loud"}),
            Invalid("type", "Unsupported value: \"Loud\": supported values: \"Normal\", \"Warning\"")),
        update("Event", "count bumped", json!({"apiVersion": "v1", "kind": "Event", "metadata": {}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Started", "message": "m", "type": "Normal", "count": 1}),
            |e| e["count"] = json!(2), Accepted),
        update("Event", "reason of a new-style event changed", json!({"apiVersion": "v1", "kind": "Event", "metadata": {}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Started", "message": "m", "type": "Normal",
            "eventTime": "2026-01-01T00:00:00.000000Z", "reportingComponent": "kcore", "reportingInstance": "n1", "action": "Start"}),
            |e| e["reason"] = json!("Stopped"), Invalid("reason", "Invalid value: \"Stopped\": field is immutable")),
        create("Event", "an event", json!({"apiVersion": "v1", "kind": "Event", "metadata": {}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Started", "message": "m", "type": "Normal"}), Accepted),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_built_in_kind_validates_as_upstream_on_create_and_update() {
    let s = start(&[]).await;
    let mut counts: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    let mut failures = Vec::new();
    for (n, case) in cases().iter().enumerate() {
        let e = counts.entry(case.kind).or_default();
        if case.update.is_some() {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
        if let Err(why) = run(&s, n, case).await {
            failures.push(format!("{} / {}: {why}", case.kind, case.what));
        }
    }
    for (kind, (c, u)) in &counts {
        println!("{kind}: {c} create cases, {u} update cases");
    }
    assert_eq!(
        counts.len(),
        22,
        "a table for every served built-in kind: {counts:?}"
    );
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs the real `kubectl` against `s` (stdin from `input`): (success, stdout, stderr).
async fn kubectl(s: &Server, args: &[&str], input: Option<String>) -> (bool, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new("kubectl");
    let cache = s.kubeconfig.with_file_name("cache");
    cmd.arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .arg("--cache-dir")
        .arg(&cache)
        .args(args)
        .env("HOME", s.kubeconfig.parent().expect("dir"))
        .env_remove("KUBECONFIG")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .spawn()
            .expect("kubectl must be installed (CI installs it)");
        if let Some(i) = input {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(i.as_bytes())
                .expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    })
    .await
    .expect("join");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn kubectl_ok(s: &Server, args: &[&str], input: Option<String>) {
    let (ok, out, err) = kubectl(s, args, input).await;
    assert!(ok, "kubectl {args:?} failed:\n{out}\n{err}");
}

/// Asserts kubectl fails with every one of `want` in its error output.
async fn kubectl_refused(s: &Server, args: &[&str], input: Option<String>, want: &[&str]) {
    let (ok, out, err) = kubectl(s, args, input).await;
    assert!(!ok, "kubectl {args:?} was accepted:\n{out}");
    for w in want {
        assert!(err.contains(w), "kubectl {args:?}: {w:?} not in\n{err}");
    }
}

fn deployment_yaml(app: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {{app: {app}}}\n  template:\n    metadata:\n      labels: {{app: {app}}}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n"
    )
}

/// Each refusal of issue 18's "Why", met with the real kubectl, with upstream's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_gets_upstreams_refusals() {
    let s = start(&[]).await;
    let apply = ["apply", "-f", "-"];

    // A Deployment's selector changed by `kubectl apply`.
    kubectl_ok(&s, &apply, Some(deployment_yaml("a"))).await;
    kubectl_refused(
        &s,
        &apply,
        Some(deployment_yaml("b")),
        &[
            "The Deployment \"web\" is invalid: spec.selector: Invalid value: ",
            "field is immutable",
        ],
    )
    .await;

    // A Service's clusterIP patched to another address.
    kubectl_ok(
        &s,
        &["create", "service", "clusterip", "web", "--tcp=80:8080"],
        None,
    )
    .await;
    kubectl_refused(&s, &["patch", "service", "web", "-p", r#"{"spec":{"clusterIP":"10.96.0.99"}}"#], None, &[
        "The Service \"web\" is invalid: spec.clusterIPs[0]: Invalid value: [\"10.96.0.99\"]: may not change once set",
    ])
    .await;

    // An immutable ConfigMap's data patched.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: frozen\nimmutable: true\ndata:\n  a: b\n";
    kubectl_ok(&s, &apply, Some(cm.to_owned())).await;
    kubectl_refused(&s, &["patch", "configmap", "frozen", "-p", r#"{"data":{"a":"c"}}"#], None, &[
        "The ConfigMap \"frozen\" is invalid: data: Forbidden: field is immutable when `immutable` is set",
    ])
    .await;

    // A Secret's type changed.
    kubectl_ok(
        &s,
        &["create", "secret", "generic", "creds", "--from-literal=a=b"],
        None,
    )
    .await;
    kubectl_refused(&s, &["patch", "secret", "creds", "-p", r#"{"type":"example.com/custom"}"#], None, &[
        "The Secret \"creds\" is invalid: type: Invalid value: \"example.com/custom\": field is immutable",
    ])
    .await;

    // A StatefulSet's serviceName changed.
    let sts = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  serviceName: db\n  selector:\n    matchLabels: {app: db}\n  template:\n    metadata:\n      labels: {app: db}\n    spec:\n      containers:\n      - name: db\n        image: postgres:16\n";
    kubectl_ok(&s, &apply, Some(sts.to_owned())).await;
    kubectl_refused(&s, &["patch", "statefulset", "db", "-p", r#"{"spec":{"serviceName":"other"}}"#], None, &[
        "The StatefulSet \"db\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
    ])
    .await;

    // A Pod's restartPolicy patched.
    kubectl_ok(
        &s,
        &["run", "p", "--image=nginx:1.27", "--restart=Always"],
        None,
    )
    .await;
    kubectl_refused(&s, &["patch", "pod", "p", "-p", r#"{"spec":{"restartPolicy":"Never"}}"#], None, &[
        "The Pod \"p\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`",
    ])
    .await;
    // ... while its image may change.
    kubectl_ok(&s, &["set", "image", "pod/p", "p=nginx:1.28"], None).await;

    // A container whose CPU request exceeds its limit.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: greedy\nspec:\n  containers:\n  - name: c\n    image: nginx:1.27\n    resources:\n      requests: {cpu: 600m}\n      limits: {cpu: 500m}\n";
    kubectl_refused(&s, &apply, Some(pod.to_owned()), &[
        "The Pod \"greedy\" is invalid: spec.containers[0].resources.requests: Invalid value: \"600m\": must be less than or equal to cpu limit of 500m",
    ])
    .await;

    // A 1.5 MB ConfigMap.
    let big = s.kubeconfig.with_file_name("big.txt");
    std::fs::write(&big, "x".repeat(BIG)).expect("write");
    let from = format!("--from-file=big={}", big.display());
    kubectl_refused(
        &s,
        &["create", "configmap", "big", &from],
        None,
        &["ConfigMap \"big\" is invalid: : Too long: may not be more than 1048576 bytes"],
    )
    .await;
}

fn legacy_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "legacy", "namespace": "default", "uid": "7f1d0c4e-0000-4000-8000-000000000001",
            "creationTimestamp": "2024-01-01T00:00:00Z", "generation": 1},
        "spec": {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "terminationGracePeriodSeconds": 30,
            "schedulerName": "default-scheduler", "securityContext": {}, "enableServiceLinks": true,
            "serviceAccountName": "default", "priority": 0,
            "containers": [{"name": "c", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent",
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                "resources": {"requests": {"cpu": "600m"}, "limits": {"cpu": "500m"}}}]},
        "status": {"phase": "Pending", "qosClass": "Burstable"}})
}

/// Objects stored before a rule was enforced still take metadata, status and allowed
/// spec updates and can be deleted; only what an update changes meets the new rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn objects_stored_before_a_rule_still_update_and_delete() {
    let big_cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "huge", "namespace": "default", "uid": "7f1d0c4e-0000-4000-8000-000000000002",
            "creationTimestamp": "2024-01-01T00:00:00Z"},
        "data": {"big": "x".repeat(BIG)}});
    let s = start(&[
        ("/registry/core/pods/default/legacy", legacy_pod()),
        ("/registry/core/configmaps/default/huge", big_cm),
    ])
    .await;
    let pods = "/api/v1/namespaces/default/pods/legacy";
    let merge = "application/merge-patch+json";
    // Metadata and finalizers.
    let (code, body) = http(
        &s,
        "PATCH",
        pods,
        merge,
        Some(&json!({"metadata": {"labels": {"a": "b"}, "finalizers": ["example.com/keep"]}})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // Status.
    let (code, body) = http(
        &s,
        "PATCH",
        &format!("{pods}/status"),
        merge,
        Some(&json!({"status": {"phase": "Running"}})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"]["phase"], "Running");
    // An allowed spec change (the image) is not held to the old fault.
    let (code, body) = http(
        &s,
        "PATCH",
        pods,
        "application/strategic-merge-patch+json",
        Some(&json!({"spec": {"containers": [{"name": "c", "image": "nginx:1.28"}]}})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // A change that adds a fault of its own is refused, naming only that fault.
    let (code, body) = http(
        &s,
        "PATCH",
        pods,
        merge,
        Some(&json!({"metadata": {"labels": {"bad": "a b"}}})),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    let causes = body["details"]["causes"].as_array().expect("causes");
    assert_eq!(causes.len(), 1, "{body}");
    assert_eq!(causes[0]["field"], "metadata.labels");
    // Deletion (the finalizer removed first).
    let (code, body) = http(
        &s,
        "PATCH",
        pods,
        merge,
        Some(&json!({"metadata": {"finalizers": null}})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(&s, "DELETE", pods, JSON, None).await;
    assert_eq!(code, 200, "{body}");

    let cm = "/api/v1/namespaces/default/configmaps/huge";
    let (code, body) = http(
        &s,
        "PATCH",
        cm,
        merge,
        Some(&json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(&s, "DELETE", cm, JSON, None).await;
    assert_eq!(code, 200, "{body}");
}

/// A small deterministic generator (xorshift64*), so the property runs the same cases
/// on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next() % xs.len() as u64) as usize]
    }
}

fn random_object(r: &mut Rng) -> Value {
    match r.next() % 3 {
        0 => {
            let mut p = pod();
            let c = &mut p["spec"]["containers"][0];
            c["resources"]["requests"]["cpu"] = json!(r.pick(&["100m", "600m", "1"]));
            if let Some(l) = r.pick(&[None, Some("500m"), Some("2")]) {
                c["resources"]["limits"]["cpu"] = json!(l);
            }
            c["ports"] = json!([{"containerPort": r.pick(&[80, 0, 70000])}]);
            c["env"] = json!([{"name": r.pick(&["A", "A=B", "b.c"]), "value": "v"}]);
            p["spec"]["restartPolicy"] = json!(r.pick(&["Always", "Never", "Bogus"]));
            p
        }
        1 => {
            let size = *r.pick(&[10usize, 2_000_000]);
            let mut c = cm(json!({"k": "x".repeat(size)}));
            c["immutable"] = json!(*r.pick(&[true, false]));
            c
        }
        _ => service_with(|s| {
            s["spec"]["type"] = json!(r.pick(&["ClusterIP", "NodePort", "Bogus"]));
            s["spec"]["ports"][0]["port"] = json!(r.pick(&[80, 0]));
        }),
    }
}

fn random_change(r: &mut Rng, obj: &mut Value) {
    match obj["kind"].as_str() {
        Some("Pod") => match r.next() % 5 {
            0 => obj["spec"]["containers"][0]["image"] = json!("nginx:1.28"),
            1 => obj["spec"]["restartPolicy"] = json!("OnFailure"),
            2 => obj["metadata"]["labels"]["n"] = json!(r.next().to_string()),
            3 => obj["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]),
            _ => obj["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080}]),
        },
        Some("ConfigMap") => match r.next() % 4 {
            0 => obj["data"]["k"] = json!("changed"),
            1 => obj["metadata"]["labels"] = json!({"n": r.next().to_string()}),
            2 => obj["immutable"] = json!(false),
            _ => obj["data"]["k"] = json!("x".repeat(2_000_000)),
        },
        _ => match r.next() % 4 {
            0 => obj["spec"]["clusterIP"] = json!("10.96.1.1"),
            1 => {
                obj["spec"]["ports"] = json!([{"name": "a", "port": 80}, {"name": "b", "port": 81}])
            }
            2 => obj["spec"]["type"] = json!(r.pick(&["NodePort", "ClusterIP", "Bogus"])),
            _ => obj["spec"]["ports"][0]["port"] = json!(0),
        },
    }
}

/// Every generated object and update is stored whole or refused, never half-stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_are_stored_whole_or_refused() {
    let s = start(&[]).await;
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut stored, mut refused) = (0, 0);
    for n in 0..60 {
        let mut obj = random_object(&mut r);
        let kind = obj["kind"].as_str().expect("kind").to_owned();
        let url = collection(&kind);
        obj["metadata"]["name"] = json!(format!("p{n}"));
        let item = format!("{url}/p{n}");
        let (code, created) = http(&s, "POST", url, JSON, Some(&obj)).await;
        let (get_code, got) = http(&s, "GET", &item, JSON, None).await;
        match code {
            201 => assert_eq!(got, created, "a created {kind} reads back as answered"),
            422 => {
                assert_eq!(get_code, 404, "a refused {kind} was stored: {got}");
                refused += 1;
                continue;
            }
            other => panic!("create answered {other}: {created}"),
        }
        stored += 1;
        for _ in 0..3 {
            let (_, before) = http(&s, "GET", &item, JSON, None).await;
            let mut changed = before.clone();
            random_change(&mut r, &mut changed);
            let (code, answer) = http(&s, "PUT", &item, JSON, Some(&changed)).await;
            let (_, after) = http(&s, "GET", &item, JSON, None).await;
            match code {
                200 => assert_eq!(
                    after, answer,
                    "an accepted {kind} update reads back as answered"
                ),
                422 => {
                    assert_eq!(after, before, "a refused {kind} update changed the object");
                    refused += 1;
                }
                other => panic!("update answered {other}: {answer}"),
            }
        }
    }
    println!("stored {stored} objects; refused {refused} writes");
    assert!(
        stored > 0 && refused > 0,
        "the generator exercises both outcomes"
    );
}

/// For each kind with a status subresource: a plain update does not change the status,
/// and an update through `/status` changes nothing but the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_and_spec_change_only_through_their_own_endpoints() {
    let s = start(&[]).await;
    type Change = fn(&mut Value);
    let kinds: Vec<(&str, Value, Change, Value)> = vec![
        (
            "Pod",
            pod(),
            |o| o["spec"]["containers"][0]["image"] = json!("busybox"),
            json!({"phase": "Running"}),
        ),
        (
            "Service",
            service(),
            |o| o["spec"]["ports"][0]["port"] = json!(81),
            json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}),
        ),
        (
            "Deployment",
            workload("Deployment"),
            |o| o["spec"]["replicas"] = json!(7),
            json!({"replicas": 3, "readyReplicas": 2}),
        ),
        (
            "ReplicaSet",
            workload("ReplicaSet"),
            |o| o["spec"]["replicas"] = json!(7),
            json!({"replicas": 3}),
        ),
        (
            "StatefulSet",
            workload("StatefulSet"),
            |o| o["spec"]["replicas"] = json!(7),
            json!({"replicas": 3, "availableReplicas": 0}),
        ),
        (
            "DaemonSet",
            workload("DaemonSet"),
            |o| o["spec"]["minReadySeconds"] = json!(7),
            json!({"currentNumberScheduled": 1, "desiredNumberScheduled": 1, "numberMisscheduled": 0, "numberReady": 1}),
        ),
        (
            "PersistentVolumeClaim",
            {
                // in a class that allows expansion, for the growth case below
                let mut c = pvc();
                c["spec"]["storageClassName"] = json!("expandable");
                c
            },
            |o| o["spec"]["volumeName"] = json!("pv-1"),
            json!({"phase": "Bound"}),
        ),
        (
            "PersistentVolume",
            pv(),
            |o| o["spec"]["persistentVolumeReclaimPolicy"] = json!("Delete"),
            json!({"phase": "Available"}),
        ),
        (
            "PodDisruptionBudget",
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {}, "spec": {"minAvailable": 1}}),
            |o| o["spec"]["minAvailable"] = json!(2),
            json!({"currentHealthy": 1, "desiredHealthy": 1, "disruptionsAllowed": 0, "expectedPods": 1}),
        ),
        (
            "Node",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {}, "spec": {}}),
            |o| o["spec"]["unschedulable"] = json!(true),
            json!({"capacity": {"cpu": "4"}}),
        ),
        (
            "Ingress",
            ingress(json!([{"path": "/", "pathType": "Prefix", "backend": svc_backend()}])),
            |o| o["spec"]["ingressClassName"] = json!("nginx"),
            json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}),
        ),
    ];
    let class = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "expandable"}, "provisioner": "example.com/x",
        "allowVolumeExpansion": true});
    let (code, body) = http(
        &s,
        "POST",
        "/apis/storage.k8s.io/v1/storageclasses",
        JSON,
        Some(&class),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    for (n, (kind, obj, change_spec, status)) in kinds.into_iter().enumerate() {
        let mut obj = obj;
        obj["metadata"]["name"] = json!(format!("s{n}"));
        let item = format!("{}/s{n}", collection(kind));
        let (code, created) = http(&s, "POST", collection(kind), JSON, Some(&obj)).await;
        assert_eq!(code, 201, "{kind}: {created}");
        // A plain update that sets a status keeps the stored one (and takes the spec).
        let mut both = created.clone();
        change_spec(&mut both);
        both["status"] = status.clone();
        let (code, after) = http(&s, "PUT", &item, JSON, Some(&both)).await;
        assert_eq!(code, 200, "{kind}: {after}");
        assert_eq!(
            after["status"], created["status"],
            "{kind}: a plain update changed the status"
        );
        let mut want = created.clone();
        change_spec(&mut want);
        assert_eq!(
            after["spec"], want["spec"],
            "{kind}: the spec change was not taken"
        );
        // A status update that also changes the spec takes only the status.
        let mut both = after.clone();
        change_spec(&mut both);
        for (k, v) in status.as_object().expect("status") {
            both["status"][k] = v.clone();
        }
        let (code, st) = http(&s, "PUT", &format!("{item}/status"), JSON, Some(&both)).await;
        assert_eq!(code, 200, "{kind}: {st}");
        assert_eq!(
            st["spec"], after["spec"],
            "{kind}: a status update changed the spec"
        );
        for (k, v) in status.as_object().expect("status") {
            assert_eq!(&st["status"][k], v, "{kind}: status.{k} not taken");
        }
    }
    // A bound claim may grow, and shrink no lower than its capacity.
    let claim = format!("{}/s6", collection("PersistentVolumeClaim"));
    let (_, mut c) = http(&s, "GET", &claim, JSON, None).await;
    c["status"] = json!({"phase": "Bound", "capacity": {"storage": "1Gi"}});
    let (code, body) = http(&s, "PUT", &format!("{claim}/status"), JSON, Some(&c)).await;
    assert_eq!(code, 200, "{body}");
    let (_, mut c) = http(&s, "GET", &claim, JSON, None).await;
    c["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    let (code, body) = http(&s, "PUT", &claim, JSON, Some(&c)).await;
    assert_eq!(code, 200, "a bound claim grows: {body}");
    let mut c = body;
    c["spec"]["resources"]["requests"]["storage"] = json!("512Mi");
    let (code, body) = http(&s, "PUT", &claim, JSON, Some(&c)).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        has_cause(
            &body,
            "spec.resources.requests.storage",
            "Forbidden: field can not be less than status.capacity"
        ),
        "{body}"
    );
    // Workload status counts are not negative.
    let item = format!("{}/s2/status", collection("Deployment"));
    let (_, mut d) = http(&s, "GET", &item, JSON, None).await;
    d["status"]["readyReplicas"] = json!(-1);
    let (code, body) = http(&s, "PUT", &item, JSON, Some(&d)).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        has_cause(
            &body,
            "status.readyReplicas",
            "must be greater than or equal to 0"
        ),
        "{body}"
    );
    // A status update is validated: a pod's addresses must be IPs.
    let item = format!("{}/s0/status", collection("Pod"));
    let (_, mut p) = http(&s, "GET", &item, JSON, None).await;
    p["status"]["podIP"] = json!("10.0.0.300");
    let (code, body) = http(&s, "PUT", &item, JSON, Some(&p)).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        has_cause(
            &body,
            "status.podIP",
            "Invalid value: \"10.0.0.300\": must be a valid IP address"
        ),
        "{body}"
    );
}

/// `pods/ephemeralcontainers`: GET reads the pod; PATCH and PUT change only
/// `spec.ephemeralContainers`, as upstream validates them (no ports, probes, hooks or
/// resources; unique names; a target among the pod's containers; never removed or
/// changed once added), while the pod itself still refuses such a change.
#[tokio::test]
async fn ephemeral_containers_subresource_validates_as_upstream() {
    let s = start(&[]).await;
    let item = "/api/v1/namespaces/default/pods/eph";
    let sub = format!("{item}/ephemeralcontainers");
    let (code, body) = http(
        &s,
        "POST",
        "/api/v1/namespaces/default/pods",
        JSON,
        Some(&pod_with(|p| p["metadata"]["name"] = json!("eph"))),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (code, got) = http(&s, "GET", &sub, JSON, None).await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["kind"], "Pod");

    // added with a strategic merge patch, as kubectl debug does; other changes in the
    // body are not taken
    let dbg = json!({"name": "dbg", "image": "busybox:1.36", "targetContainerName": "c",
        "stdin": true, "tty": true});
    let patch = json!({"metadata": {"labels": {"app": "changed"}},
        "spec": {"containers": [{"name": "c", "image": "other:1"}], "ephemeralContainers": [dbg]}});
    let (code, got) = http(
        &s,
        "PATCH",
        &sub,
        "application/strategic-merge-patch+json",
        Some(&patch),
    )
    .await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["spec"]["ephemeralContainers"][0]["name"], "dbg");
    assert_eq!(
        got["spec"]["ephemeralContainers"][0]["terminationMessagePolicy"],
        "File"
    );
    assert_eq!(got["spec"]["containers"][0]["image"], "nginx:1.27");
    assert_eq!(got["metadata"]["labels"]["app"], "x");

    // what a new ephemeral container may not be
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"name": "e1", "image": "busybox", "ports": [{"containerPort": 80}]}),
            "spec.ephemeralContainers[1].ports",
            "cannot be set for an Ephemeral Container",
        ),
        (
            json!({"name": "e1", "image": "busybox",
                "readinessProbe": {"exec": {"command": ["true"]}}}),
            "spec.ephemeralContainers[1].readinessProbe",
            "cannot be set for an Ephemeral Container",
        ),
        (
            json!({"name": "e1", "image": "busybox",
                "lifecycle": {"preStop": {"exec": {"command": ["true"]}}}}),
            "spec.ephemeralContainers[1].lifecycle",
            "cannot be set for an Ephemeral Container",
        ),
        (
            json!({"name": "e1", "image": "busybox", "resources": {"limits": {"cpu": "1"}}}),
            "spec.ephemeralContainers[1].resources",
            "cannot be set for an Ephemeral Container",
        ),
        (
            json!({"name": "c", "image": "busybox"}),
            "spec.ephemeralContainers[1].name",
            "Duplicate value",
        ),
        (
            json!({"name": "dbg2", "image": "busybox", "targetContainerName": "nope"}),
            "spec.ephemeralContainers[1].targetContainerName",
            "Not found",
        ),
        (
            json!({"name": "e1"}),
            "spec.ephemeralContainers[1].image",
            "Required value",
        ),
    ];
    let (_, base) = http(&s, "GET", &sub, JSON, None).await;
    for (c, field, msg) in cases {
        let mut body = base.clone();
        body["spec"]["ephemeralContainers"]
            .as_array_mut()
            .unwrap()
            .push(c.clone());
        let (code, got) = http(&s, "PUT", &sub, JSON, Some(&body)).await;
        assert_eq!(code, 422, "{c}: {got}");
        assert!(has_cause(&got, field, msg), "{c}: {got}");
    }

    // once added, never removed or changed
    let mut removed = base.clone();
    removed["spec"]["ephemeralContainers"] = json!([]);
    let (code, got) = http(&s, "PUT", &sub, JSON, Some(&removed)).await;
    assert_eq!(code, 422, "{got}");
    assert!(
        has_cause(
            &got,
            "spec.ephemeralContainers",
            "existing ephemeral containers \"dbg\" may not be removed"
        ),
        "{got}"
    );
    let mut changed = base.clone();
    changed["spec"]["ephemeralContainers"][0]["image"] = json!("busybox:1.37");
    let (code, got) = http(&s, "PUT", &sub, JSON, Some(&changed)).await;
    assert_eq!(code, 422, "{got}");
    assert!(
        has_cause(
            &got,
            "spec.ephemeralContainers",
            "existing ephemeral containers \"dbg\" may not be changed"
        ),
        "{got}"
    );

    // a second one is added by PUT; the pod itself does not take the change
    let mut two = base.clone();
    two["spec"]["ephemeralContainers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "dbg2", "image": "busybox:1.36"}));
    let (code, got) = http(&s, "PUT", &sub, JSON, Some(&two)).await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["spec"]["ephemeralContainers"][1]["name"], "dbg2");
    let mut three = got.clone();
    three["spec"]["ephemeralContainers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "dbg3", "image": "busybox:1.36"}));
    let (code, got) = http(&s, "PUT", item, JSON, Some(&three)).await;
    assert_eq!(code, 422, "{got}");
}
