"""Two images built apart, mounted by a real daemon in one domain (fanotify): the chunks
they have in common are fetched once; in two domains, twice."""

from __future__ import annotations

import pytest

from cache.test_chunkshare import two_images
from treeutil import snapshot_dir


def read_cookie(daemon, ref: str, tag: str, domain: str) -> dict:
    mnt = daemon.mountpoint(tag)
    view = daemon.client.mount(ref, mnt, domain_id=domain, mode="fanotify")
    snapshot_dir(mnt)  # every file read
    (cookie,) = [c for c in daemon.client.status()["cookies"]
                 if c["blob"] == view["blobs"][0] and c["volume"] == f"erofs,{domain}"]
    return cookie


@pytest.mark.parametrize("domains", [("d1", "d1"), ("d1", "d2")])
def test_chunks_two_images_share_are_fetched_once_in_a_domain(daemon, tmp_path, domains):
    a, b = two_images(tmp_path)
    first = read_cookie(daemon, a, "a", domains[0])
    second = read_cookie(daemon, b, "b", domains[1])
    assert first["filled_locally_bytes"] == 0
    shared = sum(f.stat().st_size for part in ("email", "json")
                 for f in (tmp_path / "tree-a" / part).rglob("*") if f.is_file())
    if domains[0] == domains[1]:
        assert second["filled_locally_bytes"] >= shared
        assert second["fetched_bytes"] <= second["data_size"] - shared
    else:
        assert second["filled_locally_bytes"] == 0
        assert second["fetched_bytes"] >= shared
    for tag in ("a", "b"):
        daemon.client.umount(daemon.mountpoint(tag))
