"""Batch scheduling of Pods onto Nodes with Kubernetes' default plugins."""

from kcore._kcore import schedule as schedule

__all__ = ["schedule"]
