"""Shared fixtures: kernel mounts, image builds, and skips that state their reason."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from erofsd.erofs.builder import Layer
from erofsd.erofs.dirlayer import read_dir_layer
from erofsd.kernel.mount import kernel_has_erofs, mount_erofs, umount
from erofsd.oci.image import build_to_layout
from erofsd.oci.reference import LayoutRef


def _kernel_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "kernel mounts need root"
    if not kernel_has_erofs():
        return "the kernel has no EROFS (/proc/filesystems)"
    return None


requires_kernel = pytest.mark.skipif(_kernel_skip_reason() is not None,
                                     reason=_kernel_skip_reason() or "")


def requires_tool(name: str):
    return pytest.mark.skipif(shutil.which(name) is None, reason=f"{name} is not installed")


@contextlib.contextmanager
def kernel_mounted(bootstrap: str, devices: list[str]) -> Iterator[Path]:
    target = tempfile.mkdtemp(prefix="erofsd-test-mnt-")
    mount_erofs(bootstrap, target, devices)
    try:
        yield Path(target)
    finally:
        umount(target)
        os.rmdir(target)


def build_layers(layer_dirs, out: Path, tag: str = "latest", chunk_size: int = 1 << 20):
    layers = []
    for d in layer_dirs:
        tree, contents = read_dir_layer(d)
        layers.append(Layer(tree, contents, str(d)))
    return build_to_layout(layers, LayoutRef(str(out), tag), chunk_size=chunk_size)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("session")


# -- a real registry --------------------------------------------------------------

from erofsd.localregistry import Registry, have_registry  # noqa: E402

requires_registry = pytest.mark.skipif(not have_registry(),
                                       reason="docker-registry is not installed")


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    if not have_registry():
        pytest.skip("docker-registry is not installed")
    reg = Registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def family(tmp_path_factory):
    """Images A = [base, app1] and B = [base, app2] in one layout (tags a and b)."""
    from trees import random_tree
    root = tmp_path_factory.mktemp("family")
    base = random_tree(root / "base", 100, entries=150, max_size=200_000)
    app1 = random_tree(root / "app1", 101, entries=30)
    app2 = random_tree(root / "app2", 102, entries=30)
    out = root / "layout"
    build_layers([base, app1], out, tag="a", chunk_size=64 * 1024)
    build_layers([base, app2], out, tag="b", chunk_size=64 * 1024)
    return {"layout": out, "base": base, "app1": app1, "app2": app2}


# -- a real daemon -----------------------------------------------------------------

from daemonutil import DaemonProc  # noqa: E402


def _daemon_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the daemon mounts filesystems: needs root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return None


requires_daemon = pytest.mark.skipif(_daemon_skip_reason() is not None,
                                     reason=_daemon_skip_reason() or "")


@pytest.fixture
def daemon(tmp_path):
    reason = _daemon_skip_reason()
    if reason:
        pytest.skip(reason)
    with DaemonProc(tmp_path / "d") as proc:
        yield proc


@pytest.fixture(scope="session")
def pushed_family(registry, family):
    """docker:// references of images A and B (sharing their base) in the test registry."""
    from erofsd.oci.copy import push
    from erofsd.oci.reference import parse_layout_ref, parse_registry_ref
    from erofsd.oci.transport import Transport
    refs = {}
    for tag in ("a", "b"):
        refs[tag] = registry.ref("seed/img", tag)
        push(parse_layout_ref(f"oci:{family['layout']}:{tag}"), parse_registry_ref(refs[tag]),
             Transport(insecure=True))
    return refs


@pytest.fixture(scope="session")
def family_snapshots(family):
    from erofsd.images import open_image
    from treeutil import snapshot_image
    snaps = {}
    for tag in ("a", "b"):
        with open_image(f"oci:{family['layout']}:{tag}") as opened:
            snaps[tag] = snapshot_image(opened.image)
            snaps[tag + "_manifest"] = opened.manifest
    return snaps
