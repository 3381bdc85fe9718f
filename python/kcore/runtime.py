"""OCI runtime-spec containers (namespaces, cgroups, pivot_root)."""

from kcore._kcore import Container as Container, Runtime as Runtime

__all__ = ["Container", "Runtime"]
