"""Shared fixtures: OCI image builders, a busybox bundle, a kcored API server."""

from __future__ import annotations

import ctypes
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_tar(files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> bytes:
    """An uncompressed tar with `dirs` and then `files` (path -> content)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# Two layers: the second adds a file and deletes one of the first (whiteout).
LAYER1 = {"etc/hello": b"hello from layer one\n", "data/gone": b"removed above\n"}
LAYER2 = {"etc/hello2": b"second layer\n", "data/.wh.gone": b""}


@dataclass
class Image:
    """What `oci_layout` wrote: the layout directory and its digests."""

    path: Path
    ref: str
    manifest: str
    config: str
    diff_ids: list[str]


def write_blob(layout: Path, data: bytes) -> str:
    d = sha256(data)
    (layout / "blobs" / "sha256" / d.split(":", 1)[1]).write_bytes(data)
    return d


def oci_layout(path: Path, ref: str = "demo:1") -> Image:
    """An OCI image layout with two layers (the first gzip-compressed)."""
    (path / "blobs" / "sha256").mkdir(parents=True)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    tar1 = make_tar(LAYER1, dirs=("etc", "data"))
    tar2 = make_tar(LAYER2, dirs=("etc", "data"))
    gz1 = gzip.compress(tar1, mtime=0)
    layers = [
        {"mediaType": OCI_LAYER_GZIP, "digest": write_blob(path, gz1), "size": len(gz1)},
        {"mediaType": OCI_LAYER, "digest": write_blob(path, tar2), "size": len(tar2)},
    ]
    diff_ids = [sha256(tar1), sha256(tar2)]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    config_digest = write_blob(path, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": layers,
        }
    ).encode()
    manifest_digest = write_blob(path, manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    (path / "index.json").write_text(json.dumps(index))
    return Image(path, ref, manifest_digest, config_digest, diff_ids)


def docker_archive(path: Path, tag: str = "docker-demo:latest") -> Path:
    """A `docker save`-style tar with one layer."""
    layer = make_tar({"hello.txt": b"from a docker archive\n"})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
        }
    ).encode()
    config_name = sha256(config).split(":", 1)[1] + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [tag], "Layers": ["l1/layer.tar"]}]
    ).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in (
            ("manifest.json", manifest),
            (config_name, config),
            ("l1/layer.tar", layer),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="needs root (namespaces, cgroups, mounts)")

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "echo", "cat", "sleep", "hostname", "id", "ls", "true")


@pytest.fixture
def busybox_bundle(tmp_path: Path) -> Path:
    """A bundle directory whose rootfs holds busybox-static and a few applets."""
    if not BUSYBOX.exists():
        pytest.skip("needs busybox-static at /bin/busybox")
    rootfs = tmp_path / "bundle" / "rootfs"
    for d in ("bin", "proc", "dev", "sys", "tmp", "etc"):
        (rootfs / d).mkdir(parents=True)
    # copied by another process so no descriptor of ours is left open on it
    subprocess.run(["cp", str(BUSYBOX), str(rootfs / "bin" / "busybox")], check=True)
    for a in APPLETS:
        (rootfs / "bin" / a).symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    return rootfs.parent


_counter = 0


def unique(tag: str) -> str:
    """A name unique to this process and call: `<tag>-<pid>-<n>`."""
    global _counter
    _counter += 1
    return f"{tag}-{os.getpid()}-{_counter}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def kcored_binary() -> Optional[Path]:
    env = os.environ.get("KCORED")
    if env:
        return Path(env)
    found = shutil.which("kcored")
    return Path(found) if found else None


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


@dataclass
class Server:
    """A running `kcored server` and the kubeconfig it wrote."""

    kubeconfig: Path
    url: str


@pytest.fixture(scope="session")
def kcored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`kcored server` (API server only) on a free loopback port, stopped at the end."""
    binary = kcored_binary()
    if binary is None or not binary.exists():
        pytest.skip("no kcored binary: set KCORED (python/run-tests.sh builds one)")
    data = tmp_path_factory.mktemp("kcored")
    kubeconfig = data / "admin.kubeconfig"
    log = (data / "kcored.log").open("w")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(binary),
            "server",
            "--data-dir",
            str(data / "state"),
            "--listen",
            f"127.0.0.1:{port}",
            "--kubeconfig",
            str(kubeconfig),
            "--no-scheduler",
            "--no-controllers",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"kcored exited with {proc.returncode}:\n"
                    + (data / "kcored.log").read_text()
                )
            if kubeconfig.exists() and kubeconfig.stat().st_size > 0:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "kcored did not come up in 60 s:\n" + (data / "kcored.log").read_text()
                )
            time.sleep(0.1)
        yield Server(kubeconfig, f"https://127.0.0.1:{port}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@dataclass
class Registry:
    """A local docker-registry serving plain HTTP on 127.0.0.1."""

    port: int

    def push(self, layout: Path, ref: str, repo_tag: str, workdir: Path) -> str:
        """Copies image `ref` of an OCI layout to `repo_tag` with skopeo; returns
        the manifest digest the registry holds."""
        digest_file = workdir / "pushed.digest"
        subprocess.run(
            [
                "skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
                "--digestfile", str(digest_file),
                f"oci:{layout}:{ref}", f"docker://127.0.0.1:{self.port}/{repo_tag}",
            ],
            check=True,
            capture_output=True,
        )
        return digest_file.read_text().strip()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Debian's docker-registry on a free loopback port, stopped at the end."""
    for tool in ("docker-registry", "skopeo"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (Debian packages docker-registry, skopeo)")
    d = tmp_path_factory.mktemp("registry")
    port = free_port()
    cfg = d / "config.yml"
    cfg.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {d / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: kcore-python-test\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("docker-registry did not listen in 30 s") from None
                time.sleep(0.05)
        yield Registry(port)
    finally:
        proc.kill()
        proc.wait()
