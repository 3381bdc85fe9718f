"""kcore.Cluster and the pytest plugin's fixtures, driven with the official
Python client (`kubernetes`), as a user's test suite would."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest
# typed since kubernetes 35; older releases have no py.typed
from kubernetes import client as k8s  # type: ignore[import-untyped, unused-ignore]

import kcore


def eventually(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def node_ready(node: Any) -> str:
    for c in (node.status.conditions if node.status else None) or []:
        if c.type == "Ready":
            return str(c.status)
    return "Unknown"


def test_the_fixture_cluster_has_three_ready_nodes(kcore_cluster: kcore.Cluster) -> None:
    assert kcore_cluster.running
    assert kcore_cluster.url.startswith("https://127.0.0.1:")
    assert kcore_cluster.kubeconfig.is_file()
    core = k8s.CoreV1Api(kcore_cluster.api_client)
    nodes = core.list_node().items
    names = sorted(str(n.metadata.name) for n in nodes if n.metadata is not None)
    assert names == sorted(kcore_cluster.node_names())
    assert len(nodes) == 3
    assert all(node_ready(n) == "True" for n in nodes)
    # the same ApiClient every time
    assert kcore_cluster.api_client is kcore_cluster.api_client


def test_a_deployment_rolls_out_on_simulated_nodes(
    kcore_cluster: kcore.Cluster, kcore_namespace: str
) -> None:
    apps = k8s.AppsV1Api(kcore_cluster.api_client)
    core = k8s.CoreV1Api(kcore_cluster.api_client)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        kcore_namespace,
        k8s.V1Deployment(
            metadata=k8s.V1ObjectMeta(name="web"),
            spec=k8s.V1DeploymentSpec(
                replicas=4,
                selector=k8s.V1LabelSelector(match_labels=labels),
                template=k8s.V1PodTemplateSpec(
                    metadata=k8s.V1ObjectMeta(labels=labels),
                    spec=k8s.V1PodSpec(
                        containers=[k8s.V1Container(name="web", image="nginx:1.27")]
                    ),
                ),
            ),
        ),
    )

    def available() -> bool:
        d = apps.read_namespaced_deployment("web", kcore_namespace)
        return d.status is not None and d.status.available_replicas == 4

    eventually("4 available replicas", available)
    pods = core.list_namespaced_pod(kcore_namespace, label_selector="app=web").items
    assert len(pods) == 4
    for p in pods:
        assert p.status is not None and p.spec is not None
        assert p.status.phase == "Running"
        assert str(p.spec.node_name) in kcore_cluster.node_names()
        assert p.status.pod_ip


def test_a_job_completes_by_annotation(
    kcore_cluster: kcore.Cluster, kcore_namespace: str
) -> None:
    batch = k8s.BatchV1Api(kcore_cluster.api_client)
    batch.create_namespaced_job(
        kcore_namespace,
        k8s.V1Job(
            metadata=k8s.V1ObjectMeta(name="once"),
            spec=k8s.V1JobSpec(
                completions=2,
                template=k8s.V1PodTemplateSpec(
                    metadata=k8s.V1ObjectMeta(
                        annotations={
                            "sim.kcore.dev/exit-code": "0",
                            "sim.kcore.dev/exit-after": "100ms",
                        }
                    ),
                    spec=k8s.V1PodSpec(
                        restart_policy="Never",
                        containers=[k8s.V1Container(name="work", image="busybox")],
                    ),
                ),
            ),
        ),
    )

    def succeeded() -> bool:
        j = batch.read_namespaced_job("once", kcore_namespace)
        return j.status is not None and j.status.succeeded == 2

    eventually("the Job's 2 completions", succeeded)


def test_the_namespace_fixture_is_fresh(
    kcore_cluster: kcore.Cluster, kcore_namespace: str
) -> None:
    core = k8s.CoreV1Api(kcore_cluster.api_client)
    status = core.read_namespace(kcore_namespace).status
    assert status is not None and status.phase == "Active"
    # nothing in it but what every namespace gets
    names = [
        str(cm.metadata.name)
        for cm in core.list_namespaced_config_map(kcore_namespace).items
        if cm.metadata is not None
    ]
    assert names in ([], ["kube-root-ca.crt"])
    assert core.list_namespaced_pod(kcore_namespace).items == []


def test_a_second_cluster_beside_the_session_one(kcore_cluster: kcore.Cluster) -> None:
    with kcore.Cluster(nodes=1, heartbeat=0.2, node_monitor_grace_period=1.0) as other:
        assert other.url != kcore_cluster.url
        assert other.node_names() == ["sim-node-0"]
        core = k8s.CoreV1Api(other.api_client)
        eventually(
            "the node Ready",
            lambda: node_ready(core.read_node("sim-node-0")) == "True",
        )
        assert other.fail_node("sim-node-0")
        assert not other.fail_node("no-such-node")
        eventually(
            "the failed node NotReady",
            lambda: node_ready(core.read_node("sim-node-0")) == "Unknown",
        )
        assert other.recover_node("sim-node-0")
        eventually(
            "the recovered node Ready",
            lambda: node_ready(core.read_node("sim-node-0")) == "True",
        )
        data: Path = other.data_dir
        assert data.is_dir()
    # stopped by the with block: state gone, calls refused, the first untouched
    assert not other.running
    assert not data.exists()
    with pytest.raises(kcore.ClusterError, match="stopped"):
        other.node_names()
    other.stop()  # a second stop does nothing
    assert kcore_cluster.running
    assert len(k8s.CoreV1Api(kcore_cluster.api_client).list_node().items) == 3


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        kcore.Cluster(nodes=1, heartbeat=-1.0)
