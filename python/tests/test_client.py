"""kcore.Client against a real kcored API server."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import kcore
from conftest import Server, unique

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  labels: {{app: py-test}}
data:
  greeting: hello
"""


@pytest.fixture
def client(kcored: Server) -> kcore.Client:
    return kcore.Client(kcored.kubeconfig)


def test_apply_get_list_delete(client: kcore.Client) -> None:
    name = unique("cm")
    stored = client.apply(CONFIGMAP.format(name=name), field_manager="pytest")
    assert len(stored) == 1
    assert stored[0]["metadata"]["name"] == name
    assert stored[0]["metadata"]["namespace"] == client.default_namespace == "default"
    got = client.get("v1", "ConfigMap", name)
    assert got["data"] == {"greeting": "hello"}
    assert got["metadata"]["uid"] == stored[0]["metadata"]["uid"]
    # apply a dict: an update of the same object
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "py-test"}},
        "data": {"greeting": "bonjour"},
    }
    assert client.apply(obj, field_manager="pytest")[0]["data"]["greeting"] == "bonjour"
    names = [o["metadata"]["name"] for o in client.list("v1", "ConfigMap", namespace="default",
                                                      label_selector="app=py-test")]
    assert name in names
    assert client.list("v1", "ConfigMap", label_selector="app=nothing-has-this") == []
    client.delete("v1", "ConfigMap", name)
    with pytest.raises(kcore.NotFoundError):
        client.get("v1", "ConfigMap", name)


def test_errors_map_to_subclasses(client: kcore.Client, kcored: Server) -> None:
    with pytest.raises(kcore.NotFoundError) as nf:
        client.delete("v1", "ConfigMap", unique("never-existed"))
    assert isinstance(nf.value, kcore.ClientError) and isinstance(nf.value, kcore.KcoreError)
    name = unique("owned")
    client.apply(CONFIGMAP.format(name=name), field_manager="first")
    with pytest.raises(kcore.ConflictError):
        client.apply(CONFIGMAP.format(name=name).replace("hello", "taken"), field_manager="second")
    taken = client.apply(CONFIGMAP.format(name=name).replace("hello", "taken"),
                         field_manager="second", force=True)
    assert taken[0]["data"]["greeting"] == "taken"
    client.delete("v1", "ConfigMap", name)
    with pytest.raises(kcore.ClientError):
        client.get("v1", "NoSuchKind", "x")
    with pytest.raises(kcore.ClientError):
        client.apply("kind: ConfigMap\nmetadata: {name: x}\n")  # no apiVersion
    with pytest.raises(kcore.ClientError):
        kcore.Client(kcored.kubeconfig.parent / "missing.kubeconfig")


def test_watch_is_an_iterator_and_releases_the_gil(client: kcore.Client) -> None:
    name = unique("watched")
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"watch": name}},
        "data": {"n": "1"},
    }
    client.apply(manifest)
    events: list[tuple[str, str, str]] = []
    listed = threading.Event()
    done = threading.Event()

    def consume() -> None:
        with client.watch("v1", "ConfigMap", namespace="default",
                          label_selector=f"watch={name}", timeout=60) as w:
            for ev in w:
                obj = ev["object"]
                events.append((ev["type"], obj["metadata"]["name"], obj["data"]["n"]))
                listed.set()
                if ev["type"] == "DELETED":
                    done.set()
                    break

    t = threading.Thread(target=consume)
    t.start()
    assert listed.wait(timeout=60), "no initial event"
    # the watcher thread now blocks in the iterator without the GIL: this thread runs
    manifest["data"] = {"n": "2"}
    client.apply(manifest)
    client.delete("v1", "ConfigMap", name)
    t.join(timeout=60)
    assert done.is_set(), f"the watch did not see the deletion: {events}"
    assert events == [
        ("ADDED", name, "1"),
        ("MODIFIED", name, "2"),
        ("DELETED", name, "2"),
    ]


def test_watch_ends_at_its_timeout(client: kcore.Client) -> None:
    w = client.watch("v1", "ConfigMap", label_selector=f"none={unique('x')}", timeout=0.5)
    assert list(w) == []
    w.close()
