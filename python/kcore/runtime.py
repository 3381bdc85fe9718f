"""OCI runtime-spec containers (namespaces, cgroups, pivot_root)."""

from kcore._kcore import (
    Container as Container,
    Runtime as Runtime,
    default_spec as default_spec,
)

__all__ = ["Container", "Runtime", "default_spec"]
