"""kcore: OCI images, containers, scheduling, routing and a Kubernetes client.

The native extension is ``kcore._kcore``; this package arranges it by topic:
``kcore.image``, ``kcore.runtime``, ``kcore.net``, ``kcore.scheduler`` and
``kcore.Client``, and ``kcore.Cluster``: a throw-away cluster for tests
(a pytest plugin gives it as the ``kcore_cluster`` fixture).
"""

from kcore._kcore import (
    Client as Client,
    ClientError as ClientError,
    Cluster as Cluster,
    ClusterError as ClusterError,
    ConflictError as ConflictError,
    ContainerError as ContainerError,
    ImageError as ImageError,
    KcoreError as KcoreError,
    NetworkError as NetworkError,
    NotFoundError as NotFoundError,
    SchedulerError as SchedulerError,
    Watch as Watch,
    __version__ as __version__,
)
from kcore import image as image
from kcore import net as net
from kcore import runtime as runtime
from kcore import scheduler as scheduler

__all__ = [
    "Client",
    "ClientError",
    "Cluster",
    "ClusterError",
    "ConflictError",
    "ContainerError",
    "ImageError",
    "KcoreError",
    "NetworkError",
    "NotFoundError",
    "SchedulerError",
    "Watch",
    "__version__",
    "image",
    "net",
    "runtime",
    "scheduler",
]
