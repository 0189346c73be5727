"""Ordinary images mounted lazily through their indexes by a real daemon, in a domain."""

from __future__ import annotations

import pytest

from erofsd.oci.copy import push
from erofsd.oci.indexartifact import index_reference
from erofsd.oci.reference import parse_layout_ref, parse_registry_ref
from erofsd.oci.transport import Transport
from imagekit import gnu_tar, umoci_unpack, write_image
from treeutil import assert_same_tree, snapshot_dir

MODES = ["fanotify", "fuse"]


@pytest.fixture(scope="module")
def ordinary_family(registry, family, tmp_path_factory):
    """A = [base, app1] and B = [base, app2] as ordinary gzip images (one base layer), each
    indexed, in the test registry; with the trees umoci unpacks from them."""
    root = tmp_path_factory.mktemp("ordinary-family")
    tars = {name: gnu_tar(family[name]) for name in ("base", "app1", "app2")}
    found = {}
    for tag, app in (("a", "app1"), ("b", "app2")):
        local = write_image(root / tag, tag, [tars["base"], tars[app]])
        ref = registry.ref("ordinary/img", tag)
        push(parse_layout_ref(local), parse_registry_ref(ref), Transport(insecure=True))
        report = index_reference(ref, insecure=True, span_size=64 << 10)
        expected = snapshot_dir(umoci_unpack(local, root / f"bundle-{tag}"))
        expected.pop(b"/")
        found[tag] = {"ref": ref, "index": report.index.digest, "expected": expected,
                      "base": report.image_bytes}
    return found


def cookies(status: dict) -> dict:
    return {(c["volume"], c["blob"]): c for c in status["cookies"]}


@pytest.mark.parametrize("mode", MODES)
def test_two_ordinary_images_in_one_domain_read_back_and_share_their_base(
        daemon, ordinary_family, mode):
    client = daemon.client
    views, fetched = {}, {}
    for tag in ("a", "b"):
        image = ordinary_family[tag]
        views[tag] = client.mount(image["ref"], daemon.mountpoint(tag), domain_id="d1",
                                  mode=mode, insecure=True, index=image["index"])
        got = snapshot_dir(daemon.mountpoint(tag))
        got.pop(b"/")
        assert_same_tree(got, image["expected"])
        fetched[tag] = cookies(client.status())[("erofs,d1", views[tag]["blobs"][0])]
    base = views["a"]["blobs"][0]
    assert base == views["b"]["blobs"][0]
    assert fetched["b"]["refcount"] == 2
    assert fetched["b"]["fetched_bytes"] == fetched["a"]["fetched_bytes"]  # B fetched none
    assert fetched["a"]["cached_bytes"] == fetched["a"]["data_size"]  # the whole tar
    for tag in ("a", "b"):
        client.umount(daemon.mountpoint(tag))


@pytest.mark.parametrize("mode", MODES)
def test_a_mount_through_an_index_is_taken_back_after_a_restart(daemon, ordinary_family,
                                                                 mode):
    image = ordinary_family["a"]
    mnt = daemon.mountpoint("a")
    daemon.client.mount(image["ref"], mnt, insecure=True, index="discover", mode=mode)
    expected = image["expected"]
    for path in [p for p, e in expected.items() if e.digest][:10]:  # some read, most not
        with open(mnt + path.decode(), "rb") as f:
            f.read()
    daemon.cli("stop", "--keep-mounts", check=True)
    daemon.wait_exit()
    daemon.start()
    (mount,) = daemon.client.status()["mounts"]
    assert (mount["mountpoint"], mount["mode"]) == (mnt, mode)
    got = snapshot_dir(mnt)  # the rest fetched by the new daemon, through the kept index
    got.pop(b"/")
    assert_same_tree(got, expected)
    daemon.client.umount(mnt)


def test_a_wrong_index_is_refused_with_one_line(daemon, ordinary_family):
    a, b = ordinary_family["a"], ordinary_family["b"]
    result = daemon.cli("mount", a["ref"], str(daemon.mountpoint("x")), "--insecure",
                        "--index", b["index"])
    assert result.returncode == 1 and b"indexes image" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    bad = daemon.cli("mount", a["ref"], str(daemon.mountpoint("x")), "--insecure",
                     "--index", "latest")
    assert bad.returncode == 1 and b"sha256 digest" in bad.stderr
    assert daemon.client.status()["mounts"] == []
