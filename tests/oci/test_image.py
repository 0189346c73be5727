"""erofsd images as OCI images (oci/image.py): what containerd needs, what older releases wrote."""

from __future__ import annotations

import json

import pytest

from builds import as_legacy, build_layers
from erofsd.errors import BadReference
from erofsd.images import open_image
from erofsd.oci.image import ErofsdManifest
from erofsd.oci.mediatypes import EROFSD_BOOTSTRAP
from trees import random_tree
from treeutil import assert_same_tree, snapshot_dir, snapshot_image


@pytest.fixture(scope="module")
def two_layers(tmp_path_factory):
    root = tmp_path_factory.mktemp("image")
    layers = [random_tree(root / f"l{i}", 40 + i, entries=30) for i in range(2)]
    # what the release before compression wrote (uncompressed blobs), and before
    # that, the release before containerd support
    build_layers(layers, root / "layout", tag="new", compression=None)
    return root / "layout", as_legacy(root / "layout", "new", "legacy")


def test_an_image_of_an_earlier_release_reads_the_same(two_layers):
    layout, legacy = two_layers
    with open_image(f"oci:{layout}:new") as new, open_image(legacy) as old:
        assert [b.digest for b in old.manifest.blobs] == [b.digest for b in new.manifest.blobs]
        assert old.manifest.bootstrap.digest == new.manifest.bootstrap.digest
        assert old.manifest.digest != new.manifest.digest
        assert_same_tree(snapshot_image(old.image), snapshot_image(new.image))


def test_images_of_earlier_releases_mount_in_every_mode(daemon, two_layers):
    layout, legacy = two_layers
    with open_image(legacy) as opened:
        expected = snapshot_image(opened.image)
    for image in (f"oci:{layout}:new", legacy):
        for mode in ("fanotify", "fuse"):
            mnt = daemon.mountpoint(mode)
            daemon.client.mount(image, mnt, mode=mode)
            assert_same_tree(snapshot_dir(mnt), expected)
            daemon.client.umount(mnt)


def _manifest(layers: list[dict]) -> bytes:
    config = {"mediaType": "application/vnd.oci.image.config.v1+json",
              "digest": "sha256:" + "c" * 64, "size": 2}
    return json.dumps({"schemaVersion": 2, "config": config, "layers": layers}).encode()


def test_a_manifest_must_have_exactly_one_bootstrap():
    boot = {"mediaType": EROFSD_BOOTSTRAP, "digest": "sha256:" + "b" * 64, "size": 4096}
    with pytest.raises(BadReference, match="2 erofsd bootstrap layers, not one"):
        ErofsdManifest.parse(_manifest([boot, dict(boot, digest="sha256:" + "d" * 64)]), "m")
    with pytest.raises(BadReference, match="0 erofsd bootstrap layers"):
        ErofsdManifest.parse(_manifest([dict(boot, mediaType="application/vnd.oci.image."
                                                             "layer.v1.tar+gzip")]), "m")
