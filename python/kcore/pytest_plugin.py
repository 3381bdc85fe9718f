"""The ``kcore`` pytest plugin: a real cluster as a fixture.

Installed with the wheel and loaded by pytest on its own (entry point
``pytest11``). It gives two fixtures:

``kcore_cluster``
    one :class:`kcore.Cluster` for the whole session: API server, scheduler and
    controllers in this process, with simulated nodes (``kcore_nodes`` in the
    ini file, 3 by default).
``kcore_namespace``
    a fresh namespace in that cluster for one test, deleted after it.

Example::

    def test_deploy(kcore_cluster, kcore_namespace):
        from kubernetes import client
        apps = client.AppsV1Api(kcore_cluster.api_client)
        ...
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from kcore._kcore import Client, Cluster, NotFoundError

_names = itertools.count()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "kcore_nodes",
        "simulated nodes of the kcore_cluster fixture (default 3)",
        default="3",
    )


@pytest.fixture(scope="session")
def kcore_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A running kcore cluster shared by the session, stopped at its end."""
    nodes = int(request.config.getini("kcore_nodes"))
    with Cluster(nodes=nodes) as cluster:
        yield cluster


@pytest.fixture
def kcore_namespace(kcore_cluster: Cluster) -> Iterator[str]:
    """The name of a namespace made for this test alone, deleted afterwards."""
    name = f"test-{os.getpid()}-{next(_names)}"
    client = Client(kcore_cluster.kubeconfig)
    client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        yield name
    finally:
        try:
            client.delete("v1", "Namespace", name)
        except NotFoundError:
            pass
