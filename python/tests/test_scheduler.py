"""kcore.scheduler.schedule: placements by the default plugins."""

from __future__ import annotations

from typing import Any, Optional

import pytest

import kcore


def node(name: str, cpu: str, memory: str = "8Gi", labels: Optional[dict[str, str]] = None,
         taints: Optional[list[dict[str, str]]] = None) -> dict[str, Any]:
    alloc = {"cpu": cpu, "memory": memory, "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints or []},
        "status": {
            "capacity": alloc,
            "allocatable": alloc,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(name: str, cpu: str, node_selector: Optional[dict[str, str]] = None,
        node_name: Optional[str] = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}
        ]
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    if node_name:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def test_pods_fill_nodes_by_capacity() -> None:
    nodes = [node("small", "1"), node("big", "4")]
    pods = [pod(f"p{i}", "900m") for i in range(5)]
    out = kcore.scheduler.schedule(nodes, pods)
    assert [p["name"] for p in out] == [f"p{i}" for i in range(5)]
    assert all(p["namespace"] == "default" for p in out)
    placed = [p["node"] for p in out]
    # 1 CPU fits one 900m pod, 4 CPU fits four: exactly 5 places in all
    assert placed.count("small") == 1 and placed.count("big") == 4, out
    assert all(p["reason"] is None for p in out)
    # a sixth pod has nowhere to go
    out = kcore.scheduler.schedule(nodes, pods + [pod("p5", "900m")])
    last = out[-1]
    assert last["node"] is None
    assert "Insufficient cpu" in last["reason"]


def test_node_selector_taints_and_bound_pods() -> None:
    nodes = [
        node("gpu", "8", labels={"accel": "gpu"}),
        node("plain", "8"),
        node("tainted", "64", taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
    ]
    pods = [
        pod("running", "7", node_name="plain"),
        pod("wants-gpu", "1", node_selector={"accel": "gpu"}),
        pod("any", "2"),
    ]
    out = {p["name"]: p["node"] for p in kcore.scheduler.schedule(nodes, pods)}
    assert out["running"] == "plain"
    assert out["wants-gpu"] == "gpu"
    # "plain" has 1 CPU left after "running"; "tainted" is not tolerated
    assert out["any"] == "gpu"


def test_malformed_objects_raise_scheduler_error() -> None:
    with pytest.raises(kcore.SchedulerError) as e:
        kcore.scheduler.schedule([{"metadata": {"name": 5}}], [])
    assert isinstance(e.value, kcore.KcoreError)
    assert "nodes[0]" in str(e.value)
    with pytest.raises(TypeError):
        kcore.scheduler.schedule([object()], [])  # type: ignore[list-item]
