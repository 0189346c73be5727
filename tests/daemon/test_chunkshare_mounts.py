"""Two images built apart, mounted by a real daemon: the chunks they have in common are
fetched once in one domain and twice in two, in the kernel's data path and in FUSE's, and
a domain's cache still lends its chunks after the daemon is killed and started again."""

from __future__ import annotations

import pytest

from sharekit import common_bytes, two_images
from treeutil import snapshot_dir


def contents(root) -> dict[bytes, str]:
    """Every regular file under ``root`` (read whole), by path: its sha256."""
    return {path: entry.digest for path, entry in snapshot_dir(root).items() if entry.digest}


def read_cookie(daemon, ref: str, tag: str, domain: str, mode: str) -> tuple[dict, dict]:
    """Mount ``ref``, read every file; (their contents, the cookie of its one blob)."""
    mnt = daemon.mountpoint(tag)
    view = daemon.client.mount(ref, mnt, domain_id=domain, mode=mode)
    tree = contents(mnt)
    (cookie,) = [c for c in daemon.client.status()["cookies"]
                 if c["blob"] == view["blobs"][0] and c["volume"] == f"erofs,{domain}"]
    return tree, cookie


@pytest.mark.parametrize("mode", ["fanotify", "fuse"])
@pytest.mark.parametrize("domains", [("d1", "d1"), ("d1", "d2")])
def test_chunks_two_images_share_are_fetched_once_in_a_domain(daemon, tmp_path, domains,
                                                              mode):
    a, b = two_images(tmp_path)
    tree_a, first = read_cookie(daemon, a, "a", domains[0], mode)
    tree_b, second = read_cookie(daemon, b, "b", domains[1], mode)
    assert tree_a == contents(tmp_path / "tree-a")
    assert tree_b == contents(tmp_path / "tree-b")
    assert first["filled_locally_bytes"] == 0
    shared = common_bytes(tmp_path)
    if domains[0] == domains[1]:
        assert second["filled_locally_bytes"] >= shared
        assert second["fetched_bytes"] <= second["data_size"] - shared
    else:
        assert second["filled_locally_bytes"] == 0
        assert second["fetched_bytes"] >= shared
    for tag in ("a", "b"):
        daemon.client.umount(daemon.mountpoint(tag))


def test_a_daemon_killed_and_started_again_still_fills_from_the_domain(daemon, tmp_path):
    """kill -9 with the first image mounted: the new daemon adopts it, and the second
    image takes the common chunks from the cache the dead daemon filled."""
    a, b = two_images(tmp_path)
    tree_a, _ = read_cookie(daemon, a, "a", "d1", "fanotify")
    daemon.kill9()
    daemon.start()
    assert [m["mountpoint"] for m in daemon.client.status()["mounts"]] == \
        [daemon.mountpoint("a")]
    tree_b, second = read_cookie(daemon, b, "b", "d1", "fanotify")
    assert tree_b == contents(tmp_path / "tree-b")
    shared = common_bytes(tmp_path)
    assert second["filled_locally_bytes"] >= shared
    assert second["fetched_bytes"] <= second["data_size"] - shared
    assert contents(daemon.mountpoint("a")) == tree_a
    for tag in ("a", "b"):
        daemon.client.umount(daemon.mountpoint(tag))
