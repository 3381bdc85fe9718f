"""kcore.image.Store: import, inspect, unpack and flatten of images built here."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

import kcore
from conftest import LAYER1, LAYER2, Registry, docker_archive, needs_root, oci_layout


def test_import_oci_layout_and_inspect(tmp_path: Path) -> None:
    img = oci_layout(tmp_path / "layout")
    store = kcore.image.Store(tmp_path / "store")
    assert store.list() == []
    recs = store.import_(img.path)
    assert len(recs) == 1
    rec = recs[0]
    assert rec["name"] == "demo:1"
    assert rec["manifest"] == img.manifest and rec["config"] == img.config
    assert [r["name"] for r in store.list()] == ["demo:1"]
    assert store.get("demo:1") == rec
    info = store.inspect("demo:1")
    assert [layer["diff_id"] for layer in info["layers"]] == img.diff_ids
    assert info["config"]["config"]["Cmd"] == ["/bin/sh"]
    assert info["manifest"]["schemaVersion"] == 2
    assert info["layers"][0]["media_type"].endswith("tar+gzip")
    assert store.root == tmp_path / "store"


def test_unpack_into_layer_store_with_progress(tmp_path: Path) -> None:
    img = oci_layout(tmp_path / "layout")
    store = kcore.image.Store(tmp_path / "store")
    store.import_(img.path)
    calls: list[tuple[int, int]] = []
    out = store.unpack("demo:1", tmp_path / "layers", progress=lambda b, n: calls.append((b, n)))
    assert out["unpacked"] == 2 and len(out["layer_ids"]) == 2
    assert out["top"] == out["layer_ids"][-1]
    bottom, top = (Path(p) for p in out["paths"])
    assert (bottom / "etc" / "hello").read_bytes() == LAYER1["etc/hello"]
    assert (top / "etc" / "hello2").read_bytes() == LAYER2["etc/hello2"]
    assert not (top / "etc" / "hello").exists(), "layers are separate diff directories"
    # the whiteout became an overlayfs whiteout (a 0/0 character device)
    if os.geteuid() == 0:
        st = os.lstat(top / "data" / "gone")
        assert os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0
    assert calls, "progress was reported"
    assert max(b for b, _ in calls) > 0 and max(n for _, n in calls) >= 2
    # a second unpack reuses both layers
    again = store.unpack("demo:1", tmp_path / "layers")
    assert again["unpacked"] == 0 and again["layer_ids"] == out["layer_ids"]


def test_flatten_applies_whiteouts(tmp_path: Path) -> None:
    img = oci_layout(tmp_path / "layout")
    store = kcore.image.Store(tmp_path / "store")
    store.import_(img.path, name="flat:latest")
    dest = tmp_path / "rootfs"
    store.flatten("flat:latest", dest)
    assert (dest / "etc" / "hello").read_bytes() == LAYER1["etc/hello"]
    assert (dest / "etc" / "hello2").read_bytes() == LAYER2["etc/hello2"]
    assert (dest / "data").is_dir()
    assert not (dest / "data" / "gone").exists()


def test_import_detects_tarred_layout_and_docker_archive(tmp_path: Path) -> None:
    img = oci_layout(tmp_path / "layout", ref="tarred:2")
    tarred = tmp_path / "layout.tar"
    with tarfile.open(tarred, "w") as tar:
        for entry in sorted(img.path.rglob("*")):
            tar.add(entry, arcname=str(entry.relative_to(img.path)), recursive=False)
    store = kcore.image.Store(tmp_path / "store")
    assert [r["name"] for r in store.import_(tarred)] == ["tarred:2"]
    archive = docker_archive(tmp_path / "docker.tar")
    recs = store.import_(archive)
    assert [r["name"] for r in recs] == ["docker-demo:latest"]
    dest = tmp_path / "docker-rootfs"
    store.flatten("docker-demo:latest", dest)
    assert (dest / "hello.txt").read_text() == "from a docker archive\n"
    assert sorted(r["name"] for r in store.list()) == ["docker-demo:latest", "tarred:2"]


def test_tag_remove_prune(tmp_path: Path) -> None:
    img = oci_layout(tmp_path / "layout")
    store = kcore.image.Store(tmp_path / "store")
    store.import_(img.path)
    store.tag("demo:1", "demo:alias")
    assert store.get("demo:alias")["manifest"] == img.manifest
    store.remove("demo:1")
    assert store.prune()["blobs"] == [], "blobs still referenced by the alias"
    store.remove("demo:alias")
    report = store.prune()
    assert img.manifest in report["blobs"] and report["blob_bytes"] > 0
    assert store.list() == []


def test_errors_are_image_errors(tmp_path: Path) -> None:
    store = kcore.image.Store(tmp_path / "store")
    with pytest.raises(kcore.ImageError, match="not found"):
        store.get("nope:1")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(kcore.ImageError, match="neither an OCI image layout"):
        store.import_(empty)
    # a corrupted layer blob is refused by digest
    img = oci_layout(tmp_path / "layout")
    blob = img.path / "blobs" / "sha256" / img.diff_ids[1].split(":", 1)[1]
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x01")
    with pytest.raises(kcore.ImageError) as e:
        store.import_(img.path)
    assert isinstance(e.value, kcore.KcoreError)
    with pytest.raises(kcore.ImageError):
        store.pull("registry.invalid./x/y:z", attempts=1)
    with pytest.raises(ValueError):
        store.import_(img.path, format="zip")  # type: ignore[arg-type]


def test_progress_callback_exception_propagates(tmp_path: Path) -> None:
    img = oci_layout(tmp_path / "layout")
    store = kcore.image.Store(tmp_path / "store")
    store.import_(img.path)

    def boom(_bytes: int, _entries: int) -> None:
        raise ZeroDivisionError("from the callback")

    with pytest.raises(ZeroDivisionError, match="from the callback"):
        store.flatten("demo:1", tmp_path / "rootfs", progress=boom)
    with pytest.raises(TypeError):
        store.flatten("demo:1", tmp_path / "rootfs2", progress=42)  # type: ignore[arg-type]


def test_pull_from_a_local_registry_with_progress(tmp_path: Path, registry: Registry) -> None:
    img = oci_layout(tmp_path / "layout", ref="v1")
    pushed = registry.push(img.path, "v1", "py/demo:v1", tmp_path)
    store = kcore.image.Store(tmp_path / "store")
    calls: list[tuple[int, int]] = []
    ref = f"127.0.0.1:{registry.port}/py/demo:v1"
    rec = store.pull(ref, plain_http=True, progress=lambda b, n: calls.append((b, n)))
    assert rec["name"] == ref
    assert rec["manifest"] == pushed
    assert calls and max(b for b, _ in calls) > 0
    dest = tmp_path / "rootfs"
    store.flatten(ref, dest)
    assert (dest / "etc" / "hello2").read_bytes() == LAYER2["etc/hello2"]
    assert not (dest / "data" / "gone").exists()
    with pytest.raises(kcore.ImageError):
        store.pull(f"127.0.0.1:{registry.port}/py/absent:v1", plain_http=True, attempts=1)


def test_save_as_oci_layout_and_docker_archive(tmp_path: Path) -> None:
    img = oci_layout(tmp_path / "layout", ref="v1")
    store = kcore.image.Store(tmp_path / "store")
    store.import_(img.path, name="kcore.local/py:v1")
    oci = tmp_path / "out-oci.tar"
    store.save(["kcore.local/py:v1"], oci)
    docker = tmp_path / "out-docker.tar"
    store.save(["kcore.local/py:v1"], docker, format="docker-archive")
    with tarfile.open(docker) as t:
        assert "manifest.json" in t.getnames()
    for i, path in enumerate((oci, docker)):
        back = kcore.image.Store(tmp_path / f"back{i}")
        recs = back.import_(path)
        assert [r["name"] for r in recs] == ["kcore.local/py:v1"]
        dest = tmp_path / f"rootfs{i}"
        back.flatten("kcore.local/py:v1", dest)
        assert (dest / "etc" / "hello2").read_bytes() == LAYER2["etc/hello2"]
    with pytest.raises(kcore.ImageError):
        store.save(["kcore.local/py:v1"], tmp_path / "x.tar", format="zip")


def test_push_to_a_local_registry(tmp_path: Path, registry: Registry) -> None:
    img = oci_layout(tmp_path / "layout", ref="v1")
    store = kcore.image.Store(tmp_path / "store")
    store.import_(img.path, name="kcore.local/py:v1")
    dest = f"127.0.0.1:{registry.port}/py/pushed:v1"
    calls: list[tuple[int, int]] = []
    report = store.push(
        "kcore.local/py:v1", dest, plain_http=True, progress=lambda b, n: calls.append((b, n))
    )
    assert report["reference"] == dest
    assert (report["uploaded"], report["existing"], report["mounted"]) == (3, 0, 0)
    assert calls and max(b for b, _ in calls) == report["bytes"]
    again = store.push("kcore.local/py:v1", dest, plain_http=True)
    assert again["uploaded"] == 0 and again["existing"] == report["uploaded"]
    back = kcore.image.Store(tmp_path / "back")
    rec = back.pull(f"127.0.0.1:{registry.port}/py/pushed@{report['digest']}", plain_http=True)
    assert rec["manifest"] == report["manifest"]


def test_build_config_steps_on_an_imported_image(tmp_path: Path) -> None:
    img = oci_layout(tmp_path / "layout")
    store = kcore.image.Store(tmp_path / "store")
    store.import_(img.path)
    context = tmp_path / "context"
    context.mkdir()
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(
        "FROM demo:1\nARG MODE=dev\nENV APP_MODE=${MODE}\nLABEL built-by=python\n"
        'ENTRYPOINT ["/bin/sh", "-c"]\nCMD ["echo built"]\n'
    )
    events: list[tuple[str, str]] = []
    out = store.build(
        dockerfile,
        context,
        "demo:built",
        layers=tmp_path / "layers",
        build_args={"MODE": "prod"},
        progress=lambda kind, text: events.append((kind, text)),
    )
    assert out["record"]["name"] == "demo:built"
    assert out["layers_built"] == 0, "config instructions make no layer"
    assert [k for k, _ in events].count("step") == 6
    assert events[0][1].endswith("FROM demo:1")
    config = store.inspect("demo:built")["config"]
    assert "APP_MODE=prod" in config["config"]["Env"]
    assert config["config"]["Labels"] == {"built-by": "python"}
    assert config["config"]["Entrypoint"] == ["/bin/sh", "-c"]
    assert config["config"]["Cmd"] == ["echo built"]
    assert [h.get("created_by", "") for h in config["history"]][-1].startswith("CMD")
    # a syntax error names its line
    dockerfile.write_text("FROM demo:1\nCOPY\n")
    with pytest.raises(kcore.ImageError, match="Dockerfile:2"):
        store.build(dockerfile, context, layers=tmp_path / "layers")
    # the bridge of RUN --network=default: a bad subnet is refused up front
    with pytest.raises(ValueError, match="bridge_subnet"):
        store.build(dockerfile, context, layers=tmp_path / "layers", bridge_subnet="10.0.0.0/33")


@needs_root
def test_build_runs_and_copies_then_rebuilds_from_the_cache(tmp_path: Path) -> None:
    if not Path("/bin/busybox").exists():
        pytest.skip("needs busybox-static at /bin/busybox")
    store = kcore.image.Store(tmp_path / "store")
    context = tmp_path / "context"
    context.mkdir()
    (context / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (context / "busybox").chmod(0o755)  # COPY keeps the mode
    (context / "greeting.txt").write_text("hello\n")
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /out && '
        '/bin/busybox echo made > /out/made"]\n'
        "COPY greeting.txt /out/\n"
    )
    events: list[tuple[str, str]] = []
    first = store.build(
        dockerfile,
        context,
        "py-built:1",
        layers=tmp_path / "layers",
        progress=lambda kind, text: events.append((kind, text)),
    )
    assert first["layers_built"] == 3 and first["steps_cached"] == 0
    diff_ids = [layer["diff_id"] for layer in store.inspect("py-built:1")["layers"]]
    again = store.build(dockerfile, context, "py-built:1", layers=tmp_path / "layers")
    assert again["layers_built"] == 0 and again["steps_cached"] == 3
    # the same layers (the config's build times may differ)
    assert [layer["diff_id"] for layer in store.inspect("py-built:1")["layers"]] == diff_ids
    assert [kind for kind, _ in events].count("step") == 4
    root = tmp_path / "rootfs"
    store.flatten("py-built:1", root)
    assert (root / "out" / "made").read_text() == "made\n"
    assert (root / "out" / "greeting.txt").read_text() == "hello\n"
