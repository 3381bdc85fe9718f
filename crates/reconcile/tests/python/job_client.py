"""A Job through the official Kubernetes Python client (BatchV1Api).

Usage: job_client.py <kubeconfig> <namespace>. An Indexed Job of two completions is created,
its status is polled with read_namespaced_job_status until the Complete condition holds (the
test acting as the node ends each pod with exit code 0), its pods are listed by the
job-name label the controller sets, and the Job is deleted in the background.
"""
import signal
import sys
import time

from kubernetes import client, config


def _stuck(_signum, _frame):
    # A request the server never answers would otherwise hang the test: fail with the
    # traceback of where the script waits.
    raise TimeoutError("job_client.py: not done after 120 s")


signal.signal(signal.SIGALRM, _stuck)
signal.alarm(120)

config.load_kube_config(config_file=sys.argv[1])
NS = sys.argv[2]
batch = client.BatchV1Api()
core = client.CoreV1Api()


def check(cond, what):
    if not cond:
        raise AssertionError(what)


job = client.V1Job(
    metadata=client.V1ObjectMeta(name="py-job"),
    spec=client.V1JobSpec(
        completions=2,
        parallelism=2,
        completion_mode="Indexed",
        backoff_limit=1,
        template=client.V1PodTemplateSpec(
            spec=client.V1PodSpec(
                restart_policy="Never",
                containers=[client.V1Container(name="main", image="busybox:1.36")],
            )
        ),
    ),
)
created = batch.create_namespaced_job(NS, job)
check(created.spec.suspend is False, f"suspend defaulted: {created.spec.suspend}")
check(
    created.spec.selector.match_labels.get("batch.kubernetes.io/controller-uid")
    == created.metadata.uid,
    f"generated selector: {created.spec.selector}",
)

deadline = time.time() + 60
status = None
while time.time() < deadline:
    status = batch.read_namespaced_job_status("py-job", NS).status
    conds = {c.type: c for c in ((status and status.conditions) or [])}
    if "Complete" in conds and conds["Complete"].status == "True":
        break
    time.sleep(0.2)
else:
    raise AssertionError(f"job not complete: {status}")

check(status.succeeded == 2, f"succeeded: {status.succeeded}")
check(status.completed_indexes == "0-1", f"completed indexes: {status.completed_indexes}")
check(status.failed in (None, 0), f"failed: {status.failed}")
check(status.start_time is not None and status.completion_time is not None, "times")
check(conds["Complete"].reason == "CompletionsReached", f"reason: {conds['Complete'].reason}")
check(
    conds.get("SuccessCriteriaMet") is not None
    and conds["SuccessCriteriaMet"].status == "True",
    "SuccessCriteriaMet",
)

pods = core.list_namespaced_pod(NS, label_selector="batch.kubernetes.io/job-name=py-job").items
check(len(pods) == 2, f"pods: {[p.metadata.name for p in pods]}")
indexes = sorted(
    p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in pods
)
check(indexes == ["0", "1"], f"indexes: {indexes}")

listed = batch.list_namespaced_job(NS).items
check([j.metadata.name for j in listed] == ["py-job"], "list")
batch.delete_namespaced_job(
    "py-job", NS, body=client.V1DeleteOptions(propagation_policy="Background")
)
print("python job: ok")
