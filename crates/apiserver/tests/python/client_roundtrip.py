"""Drive kcore-apiserver with the official Kubernetes Python client.

Usage: client_roundtrip.py <kubeconfig>. Exits non-zero (with a traceback) on any failure.
Every response passes through the client's model deserialisation, which checks required
fields (client_side_validation is on by default).
"""
import sys
import threading
import time

from kubernetes import client, config, watch

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()
NS = "default"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# --- pods: create / get / list / watch / patch / delete ---------------------------
pod = client.V1Pod(
    metadata=client.V1ObjectMeta(name="py-pod", labels={"app": "py"}),
    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1.36")]),
)
created = core.create_namespaced_pod(NS, pod)
check(created.metadata.uid, "uid set")
check(created.spec.restart_policy == "Always", "restartPolicy defaulted")
check(created.status.phase == "Pending", "phase Pending")

got = core.read_namespaced_pod("py-pod", NS)
check(got.metadata.resource_version == created.metadata.resource_version, "get matches create")

pods = core.list_namespaced_pod(NS, label_selector="app=py")
check([p.metadata.name for p in pods.items] == ["py-pod"], "list by label")
check(core.list_namespaced_pod(NS, label_selector="app=other").items == [], "selector filters")

events = []


def watcher():
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_pod, NS, label_selector="app=py", timeout_seconds=10):
        events.append((ev["type"], ev["object"].metadata.name, ev["object"].metadata.labels.get("stage")))
        if ev["type"] == "DELETED":
            w.stop()


t = threading.Thread(target=watcher)
t.start()
time.sleep(0.5)

patched = core.patch_namespaced_pod("py-pod", NS, {"metadata": {"labels": {"stage": "patched"}}})
check(patched.metadata.labels["stage"] == "patched", "patch applied")
check(patched.spec.containers[0].image == "busybox:1.36", "patch kept the rest")

core.delete_namespaced_pod("py-pod", NS)
t.join(15)
check(not t.is_alive(), "watch ended")
kinds = [e[0] for e in events]
check(kinds[0] == "ADDED", f"first event ADDED: {events}")
check(("MODIFIED", "py-pod", "patched") in events, f"saw the patch: {events}")
check(kinds[-1] == "DELETED", f"saw the delete: {events}")

try:
    core.read_namespaced_pod("py-pod", NS)
    raise AssertionError("pod still exists")
except client.ApiException as e:
    check(e.status == 404, f"404 after delete, got {e.status}")

# --- deployments: create / list / scale / patch / status / delete -------------------
dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="py-dep"),
    spec=client.V1DeploymentSpec(
        replicas=2,
        selector=client.V1LabelSelector(match_labels={"app": "py-dep"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "py-dep"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.27")]),
        ),
    ),
)
d = apps.create_namespaced_deployment(NS, dep)
check(d.spec.strategy.rolling_update.max_surge == "25%", "deployment defaults")
check(d.spec.revision_history_limit == 10, "revisionHistoryLimit defaulted")
check([x.metadata.name for x in apps.list_namespaced_deployment(NS).items] == ["py-dep"], "list deployments")

scale = apps.read_namespaced_deployment_scale("py-dep", NS)
check(scale.spec.replicas == 2, "scale read")
apps.patch_namespaced_deployment_scale("py-dep", NS, {"spec": {"replicas": 4}})
check(apps.read_namespaced_deployment("py-dep", NS).spec.replicas == 4, "scaled")

apps.patch_namespaced_deployment(
    "py-dep", NS,
    {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}},
)
d = apps.read_namespaced_deployment("py-dep", NS)
check(d.spec.template.spec.containers[0].image == "nginx:1.28", "strategic patch on containers")
check(d.metadata.generation == 3, f"generation bumped twice, got {d.metadata.generation}")

d.status = client.V1DeploymentStatus(
    observed_generation=d.metadata.generation, replicas=4, ready_replicas=4,
    conditions=[client.V1DeploymentCondition(type="Available", status="True")],
)
s = apps.replace_namespaced_deployment_status("py-dep", NS, d)
check(s.status.ready_replicas == 4 and s.status.conditions[0].type == "Available", "status written")

# A stale update conflicts.
stale = apps.read_namespaced_deployment("py-dep", NS)
apps.patch_namespaced_deployment("py-dep", NS, {"metadata": {"labels": {"x": "y"}}})
stale.spec.replicas = 1
try:
    apps.replace_namespaced_deployment("py-dep", NS, stale)
    raise AssertionError("stale replace succeeded")
except client.ApiException as e:
    check(e.status == 409, f"409 on stale replace, got {e.status}")

# Invalid objects are rejected with 422.
try:
    core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name")))
    raise AssertionError("invalid name accepted")
except client.ApiException as e:
    check(e.status == 422, f"422 on invalid name, got {e.status}")

apps.delete_namespaced_deployment("py-dep", NS)
check(apps.list_namespaced_deployment(NS).items == [], "deployment deleted")
check(core.list_namespace().items, "namespaces listed")
print("python client: ok")
