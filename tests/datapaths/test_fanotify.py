"""The fanotify data path (datapaths/fanotify.py) on cases the seed flow does not reach."""

from __future__ import annotations

from builds import build_layers
from erofsd.images import open_image
from trees import random_tree
from treeutil import assert_same_tree, snapshot_dir, snapshot_image


def test_a_blob_two_layers_share_is_one_watch_and_two_devices(daemon, tmp_path):
    """Two identical layers are one blob named twice in the device table: the kernel needs
    both device= options, the cache one file and one mark."""
    layer = random_tree(tmp_path / "layer", 7, entries=20)
    build_layers([layer, layer], tmp_path / "layout", tag="twice")
    ref = f"oci:{tmp_path / 'layout'}:twice"
    with open_image(ref) as opened:
        blobs = [b.digest for b in opened.manifest.blobs]
        expected = snapshot_image(opened.image)
    assert len(blobs) == 2 and blobs[0] == blobs[1]
    for mode in ("fanotify", "fuse"):
        mnt = daemon.mountpoint(mode)
        view = daemon.client.mount(ref, mnt, mode=mode, domain_id=mode)
        assert view["blobs"] == blobs[:1]
        assert_same_tree(snapshot_dir(mnt), expected)
        (cookie,) = [c for c in daemon.client.status()["cookies"]
                     if c["volume"] == f"erofs,{mode}"]
        assert cookie["refcount"] == 1 and cookie["complete"]
        daemon.client.umount(mnt)
    assert daemon.client.status()["cookies"] == []
