"""Shared fixtures: a real registry, image families in it, a real daemon per test.

Helpers live in modules of their own (``skips``, ``builds``, ``trees``,
``treeutil``, ``imagekit``, ``daemonutil``, ``faultproxy``, ``guest``),
importable from every test directory (pyproject.toml puts tests/ on the path).
"""

from __future__ import annotations

import os

import pytest

from builds import build_layers
from daemonutil import DaemonProc
from erofsd.localregistry import Registry, have_registry
from skips import daemon_reason


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    if not have_registry():
        pytest.skip("docker-registry is not installed")
    reg = Registry(tmp_path_factory.mktemp("registry"), access_log=True)
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


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A one-layer erofsd image of 40 chunks of 64 KiB (cachekit.forty_chunk_image)."""
    from cachekit import forty_chunk_image
    return forty_chunk_image(tmp_path_factory.mktemp("cache-img"))


@pytest.fixture
def daemon(tmp_path):
    reason = daemon_reason()
    if reason:
        pytest.skip(reason)
    with DaemonProc(tmp_path / "d") as proc:
        yield proc


@pytest.fixture
def proxy(registry):
    """A proxy in front of the registry, passing everything until a test says otherwise."""
    from faultproxy import FaultProxy
    p = FaultProxy(registry.host, rate=0.0)
    yield p
    p.stop()


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


# -- containerd ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def busybox_images(registry, tmp_path_factory):
    """Two ordinary images on one base (busybox and /etc), converted by erofsd and pushed.

    {"a", "b": docker:// refs of the erofsd images, "ordinary": the ordinary one,
    "twin": an index of the ordinary one and its erofsd twin, "base": the base layer's
    erofsd blob, "files": path -> bytes}
    """
    from containerdkit import have_containerd
    from erofsd.images import open_image
    from erofsd.oci.convert import convert
    from imagekit import TarBuilder, write_image
    reason = have_containerd()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("busybox")
    base = TarBuilder().dir("bin").file("bin/busybox", open("/bin/busybox", "rb").read(),
                                        mode=0o755)
    for tool in ("sh", "cat", "ls", "sleep", "sha256sum", "mount", "grep", "head"):
        base.symlink(f"bin/{tool}", "busybox")
    rng = os.urandom
    files = {"/etc/motd": b"hello from an erofsd image\n", "/usr/share/big": rng(3 << 20)}
    base.dir("etc").file("etc/motd", files["/etc/motd"]).dir("usr").dir("usr/share")
    base.file("usr/share/big", files["/usr/share/big"]).dir("tmp", mode=0o1777)
    base_tar = base.bytes()
    apps = {}
    for name in ("a", "b"):
        files[f"/app/{name}.txt"] = f"app {name}\n".encode()
        apps[name] = TarBuilder().dir("app").file(f"app/{name}.txt",
                                                  files[f"/app/{name}.txt"]).bytes()
    refs = {}
    for name in ("a", "b"):
        source = write_image(root / "src", name, [base_tar, apps[name]])
        refs[name] = registry.ref("ctd/busy", name)
        convert(source, refs[name], state_dir=root / "state", insecure=True)
    from erofsd.oci.copy import push
    from erofsd.oci.reference import parse_layout_ref, parse_registry_ref
    from erofsd.oci.transport import Transport
    refs["ordinary"] = registry.ref("ctd/ordinary", "a")
    push(parse_layout_ref(f"oci:{root / 'src'}:a"), parse_registry_ref(refs["ordinary"]),
         Transport(insecure=True))
    refs["twin"] = registry.ref("ctd/ordinary", "twin")  # an index: ordinary, then erofsd
    convert(refs["ordinary"], refs["twin"], state_dir=root / "state", insecure=True, twin=True)
    with open_image(refs["a"], options=_read_options(root)) as opened:
        refs["base"] = opened.manifest.blobs[0].digest
    refs["files"] = files
    return refs


def _read_options(root):
    from erofsd.images import ReadOptions
    return ReadOptions(state_dir=str(root / "read-state"), insecure=True)


@pytest.fixture(scope="session")
def _ctr_run_dirs():
    from containerdkit import leftovers, remove_leftovers
    before = leftovers()
    yield
    remove_leftovers(before)


@pytest.fixture
def node(tmp_path, registry, busybox_images, _ctr_run_dirs):
    """A node: an erofsd daemon, the erofsd snapshotter and containerd, all the test's own."""
    from containerdkit import Node
    n = Node(tmp_path / "node", registry.host)
    yield n
    n.stop()


@pytest.fixture
def cri_node(tmp_path, registry, busybox_images, _ctr_run_dirs):
    """A node whose containerd runs its CRI plugin with the erofsd snapshotter (kubelet's)."""
    from containerdkit import Node
    n = Node(tmp_path / "node", registry.host, cri=True)
    yield n
    n.stop()
