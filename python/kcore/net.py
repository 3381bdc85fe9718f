"""Pod-subnet routing (longest-prefix match) and Service load balancing."""

from kcore._kcore import RouteTable as RouteTable, ServiceTable as ServiceTable

__all__ = ["RouteTable", "ServiceTable"]
