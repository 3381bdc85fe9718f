"""Type stubs for the native extension ``kcore._kcore``."""

import builtins
import os
import pathlib
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Callable, Literal, Optional, Union, final

from typing_extensions import Self

_StrPath = Union[str, "os.PathLike[str]"]
_JSON = Any
_Progress = Callable[[int, int], object]
_BuildProgress = Callable[[str, str], object]
_FileArg = Union[int, Any]

__version__: str
__all__ = [
    "Client",
    "ClientError",
    "Cluster",
    "ClusterError",
    "ConflictError",
    "Container",
    "ContainerError",
    "ImageError",
    "KcoreError",
    "NetworkError",
    "NotFoundError",
    "RouteTable",
    "Runtime",
    "SchedulerError",
    "ServiceTable",
    "Store",
    "Watch",
    "__version__",
    "default_spec",
    "schedule",
]

class KcoreError(Exception): ...
class ImageError(KcoreError): ...
class ContainerError(KcoreError): ...
class NetworkError(KcoreError): ...
class SchedulerError(KcoreError): ...
class ClientError(KcoreError): ...
class NotFoundError(ClientError): ...
class ConflictError(ClientError): ...
class ClusterError(KcoreError): ...

@final
class Store:
    def __new__(cls, path: _StrPath) -> Self: ...
    @property
    def root(self) -> pathlib.Path: ...
    def list(self) -> builtins.list[dict[str, Any]]: ...
    def get(self, name: str) -> dict[str, Any]: ...
    def inspect(self, name: str) -> dict[str, Any]: ...
    def import_(
        self,
        path: _StrPath,
        *,
        name: Optional[str] = None,
        format: Optional[Literal["oci", "docker"]] = None,
        platform: Optional[str] = None,
    ) -> builtins.list[dict[str, Any]]: ...
    def pull(
        self,
        reference: str,
        *,
        name: Optional[str] = None,
        platform: Optional[str] = None,
        plain_http: bool = False,
        username: Optional[str] = None,
        password: Optional[str] = None,
        jobs: int = 3,
        attempts: int = 4,
        progress: Optional[_Progress] = None,
    ) -> dict[str, Any]: ...
    def unpack(
        self,
        name: str,
        layers: _StrPath,
        *,
        jobs: int = 2,
        progress: Optional[_Progress] = None,
    ) -> dict[str, Any]: ...
    def flatten(
        self, name: str, dest: _StrPath, *, progress: Optional[_Progress] = None
    ) -> None: ...
    def build(
        self,
        dockerfile: _StrPath,
        context: _StrPath,
        tag: Optional[str] = None,
        *,
        layers: _StrPath,
        build_args: Optional[Mapping[str, str]] = None,
        target: Optional[str] = None,
        no_cache: bool = False,
        platform: Optional[str] = None,
        progress: Optional[_BuildProgress] = None,
        bridge_name: Optional[str] = None,
        bridge_subnet: Optional[str] = None,
    ) -> dict[str, Any]: ...
    def tag(self, source: str, name: str) -> dict[str, Any]: ...
    def push(
        self,
        name: str,
        dest: Optional[str] = None,
        *,
        plain_http: bool = False,
        username: Optional[str] = None,
        password: Optional[str] = None,
        jobs: int = 3,
        attempts: int = 4,
        chunk_size: int = 16777216,
        mount_from: Optional[str] = None,
        progress: Optional[_Progress] = None,
    ) -> dict[str, Any]: ...
    def save(
        self, names: builtins.list[str], dest: _StrPath, *, format: str = "oci"
    ) -> None: ...
    def remove(self, name: str) -> dict[str, Any]: ...
    def prune(self, layers: Optional[_StrPath] = None) -> dict[str, Any]: ...

def default_spec(args: Optional[builtins.list[str]] = None) -> dict[str, Any]: ...

@final
class Runtime:
    def __new__(cls, root: Optional[_StrPath] = None) -> Self: ...
    @property
    def root(self) -> pathlib.Path: ...
    def list(self) -> builtins.list[str]: ...
    def create(
        self,
        id: str,
        bundle: _StrPath,
        spec: Optional[Mapping[str, _JSON]] = None,
        *,
        stdin: Optional[_FileArg] = None,
        stdout: Optional[_FileArg] = None,
        stderr: Optional[_FileArg] = None,
        no_pivot: bool = False,
    ) -> Container: ...
    def run(
        self,
        id: str,
        bundle: _StrPath,
        spec: Optional[Mapping[str, _JSON]] = None,
        *,
        stdin: Optional[_FileArg] = None,
        stdout: Optional[_FileArg] = None,
        stderr: Optional[_FileArg] = None,
        no_pivot: bool = False,
    ) -> Container: ...
    def load(self, id: str) -> Container: ...

@final
class Container:
    @property
    def id(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def status(self) -> str: ...
    def state(self) -> dict[str, Any]: ...
    def spec(self) -> dict[str, Any]: ...
    def start(self) -> None: ...
    def wait(self) -> int: ...
    def kill(self, signal: int = 15, all: bool = False) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def processes(self) -> builtins.list[int]: ...
    def delete(self, force: bool = False) -> None: ...

@final
class RouteTable:
    def __new__(
        cls,
        routes: Union[Mapping[str, Any], Iterable[tuple[str, Any]], None] = None,
    ) -> Self: ...
    def insert(self, prefix: str, value: Any) -> Any: ...
    def remove(self, prefix: str) -> Any: ...
    def lookup(self, ip: str) -> Any: ...
    def lookup_entry(self, ip: str) -> Optional[tuple[str, Any]]: ...
    def get(self, prefix: str) -> Any: ...
    def items(self) -> builtins.list[tuple[str, Any]]: ...
    def __len__(self) -> int: ...
    def __contains__(self, prefix: str, /) -> bool: ...
    def __getitem__(self, ip: str, /) -> Any: ...

@final
class ServiceTable:
    def __new__(cls) -> Self: ...
    def upsert(self, service: Mapping[str, Any]) -> None: ...
    def remove(self, name: str) -> bool: ...
    def pick(
        self,
        vip: str,
        port: int,
        client: Union[str, tuple[str, int]],
        protocol: Literal["TCP", "UDP", "SCTP", "tcp", "udp", "sctp"] = "TCP",
    ) -> Optional[tuple[str, int]]: ...
    @property
    def services(self) -> int: ...
    @property
    def frontends(self) -> int: ...
    def __len__(self) -> int: ...

def schedule(
    nodes: Iterable[Mapping[str, _JSON]], pods: Iterable[Mapping[str, _JSON]]
) -> builtins.list[dict[str, Any]]: ...

@final
class Client:
    def __new__(cls, kubeconfig: Optional[_StrPath] = None) -> Self: ...
    @property
    def default_namespace(self) -> str: ...
    def apply(
        self,
        manifest: Union[str, Mapping[str, _JSON], builtins.list[Mapping[str, _JSON]]],
        *,
        field_manager: str = "kcore-python",
        force: bool = False,
    ) -> builtins.list[dict[str, Any]]: ...
    def get(
        self, api_version: str, kind: str, name: str, *, namespace: Optional[str] = None
    ) -> dict[str, Any]: ...
    def list(
        self,
        api_version: str,
        kind: str,
        *,
        namespace: Optional[str] = None,
        label_selector: Optional[str] = None,
    ) -> builtins.list[dict[str, Any]]: ...
    def delete(
        self, api_version: str, kind: str, name: str, *, namespace: Optional[str] = None
    ) -> None: ...
    def watch(
        self,
        api_version: str,
        kind: str,
        *,
        namespace: Optional[str] = None,
        label_selector: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Watch: ...

@final
class Watch:
    def __iter__(self) -> Self: ...
    def __next__(self) -> dict[str, Any]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class Cluster:
    def __new__(
        cls,
        nodes: int = 3,
        *,
        scheduler: bool = True,
        controllers: bool = True,
        pod_start_delay: float = 0.0,
        heartbeat: float = 10.0,
        node_monitor_grace_period: float = 40.0,
    ) -> Self: ...
    @property
    def kubeconfig(self) -> pathlib.Path: ...
    @property
    def url(self) -> str: ...
    @property
    def data_dir(self) -> pathlib.Path: ...
    @property
    def running(self) -> bool: ...
    @property
    def api_client(self) -> Any: ...
    def node_names(self) -> builtins.list[str]: ...
    def fail_node(self, name: str) -> bool: ...
    def recover_node(self, name: str) -> bool: ...
    def stop(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
