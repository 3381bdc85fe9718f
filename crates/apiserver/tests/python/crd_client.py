"""CustomResourceDefinitions through the official Kubernetes Python client.

Usage: crd_client.py <kubeconfig>. Creates a CRD with ApiextensionsV1Api, waits for it
to be Established, drives custom objects with CustomObjectsApi (create, get, list with a
label selector, merge patch, status, scale, watch, delete), then deletes the CRD and
checks that its objects went with it. Exits non-zero (with a traceback) on any failure.
"""
import os
import sys
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
ext = client.ApiextensionsV1Api()
objs = client.CustomObjectsApi()
GROUP = "py%d.kcore.test" % os.getpid()
NS = "default"
PLURAL = "crontabs"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def wait(what, fn, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


crd = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": PLURAL + "." + GROUP},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}, "scale": {
                "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {
                    "cronSpec": {"type": "string"},
                    "replicas": {"type": "integer", "default": 1}}},
                "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
            }}},
        }],
    },
}
created = ext.create_custom_resource_definition(crd)
check(created.metadata.name == PLURAL + "." + GROUP, "CRD created")
check(created.status.stored_versions == ["v1"], "storedVersions")


def established():
    c = ext.read_custom_resource_definition(PLURAL + "." + GROUP)
    return any(x.type == "Established" and x.status == "True" for x in (c.status.conditions or []))


wait("Established", established)
names = ext.read_custom_resource_definition(PLURAL + "." + GROUP).status.accepted_names
check(names.kind == "CronTab" and names.list_kind == "CronTabList", "accepted names")
check(any(c.metadata.name == PLURAL + "." + GROUP for c in ext.list_custom_resource_definition().items), "listed")

body = {"apiVersion": GROUP + "/v1", "kind": "CronTab",
        "metadata": {"name": "ct1", "labels": {"app": "py"}}, "spec": {"cronSpec": "* * * * */5"}}
o = objs.create_namespaced_custom_object(GROUP, "v1", NS, PLURAL, body)
check(o["spec"]["replicas"] == 1, "defaulted replicas")
objs.create_namespaced_custom_object(GROUP, "v1", NS, PLURAL, {
    "apiVersion": GROUP + "/v1", "kind": "CronTab", "metadata": {"name": "ct2"}, "spec": {"cronSpec": "x"}})
got = objs.get_namespaced_custom_object(GROUP, "v1", NS, PLURAL, "ct1")
check(got["metadata"]["uid"] == o["metadata"]["uid"], "get")
lst = objs.list_namespaced_custom_object(GROUP, "v1", NS, PLURAL, label_selector="app=py")
check([i["metadata"]["name"] for i in lst["items"]] == ["ct1"], "label selector")
check(lst["kind"] == "CronTabList", "list kind")
lst = objs.list_cluster_custom_object(GROUP, "v1", PLURAL, field_selector="metadata.name=ct2")
check([i["metadata"]["name"] for i in lst["items"]] == ["ct2"], "field selector")

p = objs.patch_namespaced_custom_object(GROUP, "v1", NS, PLURAL, "ct1", {"spec": {"cronSpec": "0 * * * *"}})
check(p["spec"]["cronSpec"] == "0 * * * *" and p["metadata"]["generation"] == 2, "merge patch bumps generation")
s = objs.patch_namespaced_custom_object_status(GROUP, "v1", NS, PLURAL, "ct1", {"status": {"replicas": 1}})
check(s["status"]["replicas"] == 1 and s["metadata"]["generation"] == 2, "status patch")
sc = objs.get_namespaced_custom_object_scale(GROUP, "v1", NS, PLURAL, "ct1")
check(sc["kind"] == "Scale" and sc["spec"]["replicas"] == 1 and sc["status"]["replicas"] == 1, "scale")
objs.patch_namespaced_custom_object_scale(GROUP, "v1", NS, PLURAL, "ct1", {"spec": {"replicas": 3}})
check(objs.get_namespaced_custom_object(GROUP, "v1", NS, PLURAL, "ct1")["spec"]["replicas"] == 3, "scaled")

# Watch: the existing objects arrive, then a modification.
rv = objs.list_namespaced_custom_object(GROUP, "v1", NS, PLURAL)["metadata"]["resourceVersion"]
objs.patch_namespaced_custom_object(GROUP, "v1", NS, PLURAL, "ct2", {"metadata": {"labels": {"seen": "yes"}}})
w = watch.Watch()
events = []
for ev in w.stream(objs.list_namespaced_custom_object, GROUP, "v1", NS, PLURAL,
                   resource_version=rv, timeout_seconds=5):
    events.append((ev["type"], ev["object"]["metadata"]["name"]))
    if ev["type"] == "MODIFIED":
        w.stop()
check(("MODIFIED", "ct2") in events, "watch saw the change: %r" % events)

objs.delete_namespaced_custom_object(GROUP, "v1", NS, PLURAL, "ct2")
try:
    objs.get_namespaced_custom_object(GROUP, "v1", NS, PLURAL, "ct2")
    raise AssertionError("ct2 still there")
except ApiException as e:
    check(e.status == 404, "404 after delete")

try:
    objs.create_namespaced_custom_object(GROUP, "v1", NS, PLURAL, {
        "apiVersion": GROUP + "/v1", "kind": "CronTab", "metadata": {"name": "bad"},
        "spec": {"cronSpec": 5}})
    raise AssertionError("invalid object accepted")
except ApiException as e:
    check(e.status == 422 and "spec.cronSpec" in e.body, "422 names the field: " + e.body)

ext.delete_custom_resource_definition(PLURAL + "." + GROUP)


def gone():
    try:
        ext.read_custom_resource_definition(PLURAL + "." + GROUP)
        return False
    except ApiException as e:
        return e.status == 404


wait("the CRD to go", gone)
print("python crd client: ok")
