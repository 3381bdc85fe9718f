"""OCI images: a content store with import, registry pull and safe unpacking."""

from kcore._kcore import Store as Store

__all__ = ["Store"]
