"""A PersistentVolumeClaim through the official Kubernetes Python client.

Usage: storage_client.py <kubeconfig>. A default StorageClass, a claim that names no class
(DefaultStorageClass admission gives it the default), its phase read back (Pending: no
controller runs beside this bare API server), and an expansion refused because the class
does not allow it.
"""
import sys

from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
storage = client.StorageV1Api()
NS = "default"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


storage.create_storage_class(
    client.V1StorageClass(
        metadata=client.V1ObjectMeta(
            name="py-local",
            annotations={"storageclass.kubernetes.io/is-default-class": "true"},
        ),
        provisioner="kcore.dev/local-path",
        volume_binding_mode="WaitForFirstConsumer",
    )
)
claim = core.create_namespaced_persistent_volume_claim(
    NS,
    client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="py-claim"),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"],
            resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
        ),
    ),
)
check(claim.spec.storage_class_name == "py-local", f"default class: {claim.spec}")
check(claim.spec.volume_mode == "Filesystem", "volumeMode defaulted")
check("kubernetes.io/pvc-protection" in claim.metadata.finalizers, "protection finalizer")
read = core.read_namespaced_persistent_volume_claim("py-claim", NS)
check(read.status.phase == "Pending", f"phase: {read.status}")
listed = core.list_namespaced_persistent_volume_claim(NS)
check([c.metadata.name for c in listed.items] == ["py-claim"], "listed")

grow = {"spec": {"resources": {"requests": {"storage": "2Gi"}}}}
# validation comes first: an unbound claim's spec is immutable (422)
try:
    core.patch_namespaced_persistent_volume_claim("py-claim", NS, grow)
    raise AssertionError("a Pending claim's request was changed")
except ApiException as e:
    check(e.status == 422, f"status {e.status}")
    check("for bound claims" in e.body, e.body)
# once bound, the resize admission asks the class (403)
core.patch_namespaced_persistent_volume_claim_status(
    "py-claim", NS, {"status": {"phase": "Bound"}}
)
try:
    core.patch_namespaced_persistent_volume_claim("py-claim", NS, grow)
    raise AssertionError("expansion of a class without allowVolumeExpansion was accepted")
except ApiException as e:
    check(e.status == 403, f"status {e.status}")
    check("must support resize" in e.body, e.body)

core.delete_namespaced_persistent_volume_claim("py-claim", NS)
print("python storage: ok")
