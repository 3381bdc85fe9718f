"""kcore.net: longest-prefix-match routes and Service load balancing."""

from __future__ import annotations

import ipaddress
import random

import pytest

import kcore


def test_route_table_longest_prefix_match() -> None:
    t = kcore.net.RouteTable(
        {
            "10.244.0.0/16": "cluster",
            "10.244.1.0/24": "node-1",
            "10.244.2.0/24": "node-2",
            "0.0.0.0/0": "default",
        }
    )
    assert len(t) == 4
    assert t.lookup("10.244.1.9") == "node-1"
    assert t.lookup("10.244.2.255") == "node-2"
    assert t.lookup("10.244.3.1") == "cluster"
    assert t.lookup("192.168.1.1") == "default"
    assert t.lookup_entry("10.244.1.9") == ("10.244.1.0/24", "node-1")
    assert t["10.244.0.1"] == "cluster"
    assert "10.244.1.0/24" in t and "10.244.9.0/24" not in t

    # a host route beats its subnet; removing it falls back
    assert t.insert("10.244.1.7/32", {"vtep": "02:00:00:00:00:07"}) is None
    assert t.lookup("10.244.1.7") == {"vtep": "02:00:00:00:00:07"}
    assert t.insert("10.244.1.0/24", "node-1b") == "node-1"
    assert t.remove("10.244.1.7") == {"vtep": "02:00:00:00:00:07"}
    assert t.lookup("10.244.1.7") == "node-1b"
    assert t.remove("10.244.1.7/32") is None
    assert t.remove("0.0.0.0/0") == "default"
    assert t.lookup("192.168.1.1") is None
    with pytest.raises(KeyError):
        t["192.168.1.1"]
    assert sorted(p for p, _ in t.items()) == ["10.244.0.0/16", "10.244.1.0/24", "10.244.2.0/24"]


def test_route_table_agrees_with_a_linear_scan() -> None:
    rng = random.Random(7)
    routes: dict[str, int] = {}
    for i in range(300):
        plen = rng.randint(8, 32)
        net = ipaddress.ip_network((rng.getrandbits(32), plen), strict=False)
        routes[str(net)] = i
    t = kcore.net.RouteTable(routes.items())
    nets = [(ipaddress.ip_network(p), v) for p, v in routes.items()]
    for _ in range(2000):
        ip = ipaddress.ip_address(rng.getrandbits(32))
        best = max(
            ((n.prefixlen, v) for n, v in nets if ip in n), default=None, key=lambda x: x[0]
        )
        assert t.lookup(str(ip)) == (best[1] if best else None), str(ip)


def test_route_table_rejects_bad_addresses() -> None:
    t = kcore.net.RouteTable()
    with pytest.raises(ValueError):
        t.insert("10.0.0.0/33", "x")
    with pytest.raises(ValueError):
        t.lookup("not-an-ip")
    with pytest.raises(TypeError):
        kcore.net.RouteTable([1, 2])  # type: ignore[list-item]


def test_service_table_picks_ready_endpoints_consistently() -> None:
    t = kcore.net.ServiceTable()
    t.upsert(
        {
            "name": "default/web:http",
            "cluster_ip": "10.96.0.10",
            "port": 80,
            "node_port": 30080,
            "endpoints": [
                "10.244.1.2:8080",
                {"ip": "10.244.1.3", "port": 8080},
                {"ip": "10.244.1.4", "port": 8080, "ready": False},
            ],
        }
    )
    assert t.services == 1 and len(t) == 1
    assert t.frontends == 2  # the cluster IP and the node port
    ready = {("10.244.1.2", 8080), ("10.244.1.3", 8080)}
    seen = set()
    for port in range(1000, 1400):
        backend = t.pick("10.96.0.10", 80, f"192.168.0.5:{port}")
        assert backend in ready
        # the same flow always lands on the same backend
        assert t.pick("10.96.0.10", 80, ("192.168.0.5", port)) == backend
        seen.add(backend)
    assert seen == ready, "both ready endpoints get flows"
    # node port on any local address; wrong protocol or port: nothing
    assert t.pick("192.168.0.1", 30080, "1.2.3.4:5555") in ready
    assert t.pick("10.96.0.10", 80, "1.2.3.4:5555", protocol="UDP") is None
    assert t.pick("10.96.0.10", 81, "1.2.3.4:5555") is None
    assert t.remove("default/web:http") is True
    assert t.remove("default/web:http") is False
    assert t.pick("10.96.0.10", 80, "1.2.3.4:5555") is None


def test_service_table_client_ip_affinity() -> None:
    t = kcore.net.ServiceTable()
    t.upsert(
        {
            "name": "default/sticky:tcp",
            "cluster_ip": "10.96.0.11",
            "port": 443,
            "session_affinity": "ClientIP",
            "endpoints": [f"10.244.2.{i}:8443" for i in range(1, 9)],
        }
    )
    first = t.pick("10.96.0.11", 443, "172.16.0.9:1000")
    assert first is not None
    for port in range(1001, 1100):
        assert t.pick("10.96.0.11", 443, ("172.16.0.9", port)) == first


def test_invalid_service_raises_network_error() -> None:
    t = kcore.net.ServiceTable()
    with pytest.raises(kcore.NetworkError) as e:
        t.upsert({"name": "bad", "cluster_ip": "10.96.0.1", "port": 0})
    assert isinstance(e.value, kcore.KcoreError)
    assert "port 0" in str(e.value)
    with pytest.raises(ValueError):
        t.upsert({"name": "bad", "cluster_ip": "10.96.0.1", "port": 80, "protocol": "ICMP"})
    with pytest.raises(KeyError):
        t.upsert({"name": "no-ip", "port": 80})
