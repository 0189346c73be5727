"""The seed's flow, end to end, through a real daemon, in both data paths.

Images A = [base, app1] and B = [base, app2] sit in a real docker-registry.
They are mounted lazily in shared domains; base is fetched and stored once
per domain; refcounts follow the kernel's rules; every file read through
every mount equals the source.
"""

from __future__ import annotations

import time

import pytest

from erofsd.cache.store import BlobCache
from erofsd.domain import default_fsid
from erofsd.errors import AlreadyExists
from treeutil import assert_same_tree, snapshot_dir

MODES = ["fanotify", "fuse"]


def cookies(status: dict) -> dict:
    return {(c["volume"], c["blob"]): c for c in status["cookies"]}


@pytest.mark.parametrize("mode", MODES)
def test_seed_flow(daemon, pushed_family, family_snapshots, mode):
    client = daemon.client
    manifest_a, manifest_b = family_snapshots["a_manifest"], family_snapshots["b_manifest"]
    base, app1, app2 = (manifest_a.blobs[0].digest, manifest_a.blobs[1].digest,
                        manifest_b.blobs[1].digest)
    assert base == manifest_b.blobs[0].digest
    fsid_a = default_fsid(manifest_a.bootstrap.digest)
    a, b = pushed_family["a"], pushed_family["b"]

    # 1. A in d1: the domain is created, with cookies for base and app1
    mount_a = client.mount(a, daemon.mountpoint("a"), domain_id="d1", mode=mode, insecure=True)
    assert (mount_a["name"], mount_a["volume"], mount_a["mode"]) == (f"d1,{fsid_a}", "erofs,d1",
                                                                     mode)
    status = client.status()
    assert [(d["domain_id"], d["mounts"], d["cookies"]) for d in status["domains"]] == \
        [("d1", 1, 2)]
    assert {k: c["refcount"] for k, c in cookies(status).items()} == \
        {("erofs,d1", base): 1, ("erofs,d1", app1): 1}

    # 2. B in d1: the domain is reused, base's refcount is 2; base is fetched and stored once
    client.mount(b, daemon.mountpoint("b"), domain_id="d1", mode=mode, insecure=True)
    status = client.status()
    assert cookies(status)[("erofs,d1", base)]["refcount"] == 2
    assert cookies(status)[("erofs,d1", app2)]["refcount"] == 1
    assert status["domains"][0]["mounts"] == 2
    assert_same_tree(snapshot_dir(daemon.mountpoint("a")), family_snapshots["a"])
    assert_same_tree(snapshot_dir(daemon.mountpoint("b")), family_snapshots["b"])
    base_cookie = cookies(client.status())[("erofs,d1", base)]
    assert base_cookie["fetched_bytes"] <= base_cookie["size"]
    assert base_cookie["cached_bytes"] == manifest_a.blobs[0].data_size
    volumes = {v.volume: [blob.blob for blob in v.blobs] for v in BlobCache(daemon.state).list()}
    assert volumes["erofs,d1"].count(base) == 1  # one copy on disk for both images

    # 3. A again in d1 with the same fsid: EEXIST, and nothing changes
    before = client.status()
    with pytest.raises(AlreadyExists, match=f"{fsid_a} already exists in domain d1") as info:
        client.mount(a, daemon.mountpoint("a-again"), domain_id="d1", mode=mode, insecure=True)
    assert info.value.errno == 17
    after = client.status()
    assert (after["mounts"], after["domains"]) == (before["mounts"], before["domains"])
    assert {k: c["refcount"] for k, c in cookies(after).items()} == \
        {k: c["refcount"] for k, c in cookies(before).items()}

    # 4. A in d2: works, and base is fetched again into d2's volume (isolation)
    client.mount(a, daemon.mountpoint("a-d2"), domain_id="d2", mode=mode, insecure=True)
    assert_same_tree(snapshot_dir(daemon.mountpoint("a-d2")), family_snapshots["a"])
    d2_base = cookies(client.status())[("erofs,d2", base)]
    assert d2_base["refcount"] == 1
    assert d2_base["compressed"] and d2_base["data_size"] == manifest_a.blobs[0].data_size
    assert d2_base["fetched_bytes"] == d2_base["size"]  # all of it, once, compressed

    # 5. A with no domain: the private volume erofs,<fsid>; a second private mount fails
    private = client.mount(a, daemon.mountpoint("a-private"), mode=mode, insecure=True)
    assert (private["name"], private["volume"], private["domain_id"]) == \
        (fsid_a, f"erofs,{fsid_a}", None)
    with pytest.raises(AlreadyExists, match="already mounted"):
        client.mount(a, daemon.mountpoint("a-private2"), mode=mode, insecure=True)

    # 6. unmount everything: domains and cookies go, cached bytes stay
    for m in client.status()["mounts"]:
        client.umount(m["mountpoint"])
    status = client.status()
    assert (status["mounts"], status["domains"], status["cookies"]) == ([], [], [])
    listing = {v.volume: {x.blob: x for x in v.blobs} for v in BlobCache(daemon.state).list()}
    fetched_before = listing["erofs,d1"][base].fetched_bytes
    assert listing["erofs,d1"][base].cached_bytes == manifest_a.blobs[0].data_size
    # mounting again in d1 fetches nothing
    client.mount(a, daemon.mountpoint("a"), domain_id="d1", mode=mode, insecure=True)
    assert_same_tree(snapshot_dir(daemon.mountpoint("a")), family_snapshots["a"])
    again = cookies(client.status())[("erofs,d1", base)]
    assert again["fetched_bytes"] == fetched_before
    client.umount(daemon.mountpoint("a"))


def test_status_json_shape(daemon, pushed_family):
    daemon.client.mount(pushed_family["a"], daemon.mountpoint("a"), domain_id="d1",
                        insecure=True)
    result = daemon.cli("status", "--json", check=True)
    import json
    status = json.loads(result.stdout)
    (mount,) = status["mounts"]
    assert {"name", "fsid", "domain_id", "mountpoint", "mode", "image", "blobs"} <= set(mount)
    assert mount["image"] == pushed_family["a"] and mount["domain_id"] == "d1"
    assert all(b.startswith("sha256:") for b in mount["blobs"])
    (domain,) = status["domains"]
    assert {"domain_id", "mounts", "cookies"} <= set(domain)
    for cookie in status["cookies"]:
        assert {"volume", "blob", "refcount", "size", "cached_bytes", "fetched_bytes",
                "read_bytes"} <= set(cookie)
    metrics = daemon.cli("metrics", check=True).stdout.decode()
    assert 'erofsd_cookie_refcount{volume="erofs,d1",blob="' in metrics
    assert "erofsd_mounts 1" in metrics
    text = daemon.cli("status", check=True).stdout.decode()
    assert "d1" in text and "mounts" in text


def test_the_daemon_keeps_its_cache_under_the_configured_size(tmp_path, pushed_family,
                                                              family_snapshots):
    """Past cache.max_size the daemon evicts unreferenced blobs, oldest first, itself."""
    from daemonutil import DaemonProc
    config = tmp_path / "erofsd.toml"
    config.write_text('[cache]\nmax_size = "64K"\n')  # less than any image here
    with DaemonProc(tmp_path / "d", "--config", str(config)) as daemon:
        a, b = daemon.mountpoint("a"), daemon.mountpoint("b")
        daemon.client.mount(pushed_family["a"], a, domain_id="one", insecure=True)
        daemon.client.mount(pushed_family["b"], b, domain_id="two", insecure=True)
        assert_same_tree(snapshot_dir(a), family_snapshots["a"])
        assert_same_tree(snapshot_dir(b), family_snapshots["b"])
        daemon.client.umount(a)  # a's blobs are unreferenced now; b's are in use
        # asked of the daemon, not by listing the cache: a listing's probe of a blob's lock
        # would make a GC running at that instant keep the blob, until its next round
        status = daemon.wait_for(lambda s: len(s["daemon"]["cache_evicted"]) == 2,
                                 timeout=20)["daemon"]
        assert {v.volume for v in BlobCache(daemon.state).list()} == {"erofs,two"}
        assert status["cache_max_size"] == 64 * 1024
        assert sorted(e.split()[0] for e in status["cache_evicted"]) == ["erofs,one"] * 2
        assert_same_tree(snapshot_dir(b), family_snapshots["b"])  # in use: kept and right


@pytest.mark.parametrize("mode", MODES)
def test_a_prefetching_mount_fetches_the_whole_image_once_without_a_read(daemon, pushed_family,
                                                                         family_snapshots, mode):
    client = daemon.client
    point = daemon.mountpoint("a")
    view = client.mount(pushed_family["a"], point, domain_id="d1", mode=mode, insecure=True,
                        prefetch=True)
    assert view["prefetch"] is True
    blobs = {b.digest: b for b in family_snapshots["a_manifest"].blobs}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.status()
        mine = {c["blob"]: c for c in status["cookies"]}
        if all(mine[d]["cached_bytes"] == b.data_size for d, b in blobs.items()) \
                and not status["mounts"][0]["prefetching"]:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the prefetch did not finish: {status}")
    assert all(mine[d]["read_bytes"] == 0 for d in blobs)  # nobody read: the fill did it
    assert {d: mine[d]["fetched_bytes"] for d in blobs} == {d: b.size for d, b in blobs.items()}
    assert_same_tree(snapshot_dir(point), family_snapshots["a"])
    after = {c["blob"]: c["fetched_bytes"] for c in client.status()["cookies"]}
    assert {d: after[d] for d in blobs} == {d: b.size for d, b in blobs.items()}  # no refetch
    client.umount(point)


def test_prefetch_stops_with_its_mount_and_is_refused_where_the_kernel_fills(daemon,
                                                                           pushed_family):
    client = daemon.client
    for n in range(3):  # unmounted at once: the fill stops, the cookies go
        point = daemon.mountpoint(f"p{n}")
        client.mount(pushed_family["b"], point, insecure=True, prefetch=True)
        client.umount(point)
    status = client.status()
    assert status["mounts"] == [] and status["cookies"] == []
    result = daemon.cli("mount", pushed_family["b"], str(daemon.mountpoint("f")), "--insecure",
                        "--mode", "fscache", "--prefetch")
    assert result.returncode == 1 and b"fscache" in result.stderr
    assert b"Traceback" not in result.stderr
