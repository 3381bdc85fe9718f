"""kcore.runtime: real containers from a busybox-static rootfs (root only)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kcore
from conftest import needs_root, unique


def spec(args: list[str]) -> dict[str, Any]:
    s = kcore.runtime.default_spec(args)
    s["hostname"] = "kcore-py"
    s["root"] = {"path": "rootfs", "readonly": True}
    return s


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[kcore.runtime.Runtime]:
    """A runtime with its own state root; every container left is force-deleted."""
    rt = kcore.runtime.Runtime(tmp_path / "state")
    yield rt
    for cid in rt.list():
        try:
            rt.load(cid).delete(force=True)
        except kcore.ContainerError:
            pass


def test_default_spec_is_a_plain_dict() -> None:
    s = kcore.runtime.default_spec(["/bin/true"])
    assert s["process"]["args"] == ["/bin/true"]
    assert {"type": "pid"} in s["linux"]["namespaces"]


def test_load_missing_container_raises_container_error(tmp_path: Path) -> None:
    rt = kcore.runtime.Runtime(tmp_path / "state")
    assert rt.root == tmp_path / "state"
    assert kcore.runtime.Runtime().root == Path("/run/kcore-runc")
    assert rt.list() == []
    with pytest.raises(kcore.ContainerError, match="does not exist"):
        rt.load("nope")
    with pytest.raises(kcore.ContainerError, match="invalid container id"):
        rt.load("../escape")


@needs_root
def test_container_runs_isolated_and_reports_exit_code(
    runtime: kcore.runtime.Runtime, busybox_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.txt"
    cid = unique("py-run")
    with out.open("w") as f:
        c = runtime.create(
            cid, busybox_bundle, spec(["/bin/sh", "-c", "echo pid=$$; hostname; exit 3"]),
            stdout=f, stderr=f,
        )
    assert c.id == cid and c.status == "created"
    assert c.pid > 0
    state = c.state()
    assert state["id"] == cid and state["status"] == "created"
    assert Path(state["bundle"]) == busybox_bundle
    assert runtime.list() == [cid]
    c.start()
    assert c.wait() == 3
    assert c.status == "stopped"
    assert out.read_text().splitlines() == ["pid=1", "kcore-py"]
    c.delete()
    assert runtime.list() == []
    with pytest.raises(kcore.ContainerError, match="was deleted"):
        c.start()


@needs_root
def test_kill_from_another_thread_ends_wait(
    runtime: kcore.runtime.Runtime, busybox_bundle: Path
) -> None:
    """wait() releases the GIL and kill() works while another thread waits."""
    c = runtime.run(unique("py-kill"), busybox_bundle, spec(["/bin/sleep", "1000"]),
                    stdout=None)
    assert c.status == "running"
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(c.wait()))
    waiter.start()
    # the main thread runs Python while the waiter blocks in wait()
    assert c.processes() == [c.pid]
    with pytest.raises(kcore.ContainerError):
        c.delete()  # running: refused without force
    c.kill(signal.SIGKILL)
    waiter.join(timeout=60)
    assert not waiter.is_alive(), "wait() did not return after kill()"
    assert result == [-signal.SIGKILL]
    c.delete()


@needs_root
def test_duplicate_id_and_bad_spec_raise(
    runtime: kcore.runtime.Runtime, busybox_bundle: Path
) -> None:
    cid = unique("py-dup")
    c = runtime.create(cid, busybox_bundle, spec(["/bin/true"]))
    with pytest.raises(kcore.ContainerError, match="already exists"):
        runtime.create(cid, busybox_bundle, spec(["/bin/true"]))
    c.delete(force=True)
    bad = spec(["/bin/true"])
    bad["linux"]["namespaces"].append({"type": "nosuchns"})
    with pytest.raises(kcore.ContainerError, match="invalid"):
        runtime.create(unique("py-bad"), busybox_bundle, bad)
