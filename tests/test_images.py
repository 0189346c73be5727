"""Shared base layers: one domain fetches and stores the base blob once, two domains twice."""

from __future__ import annotations

from erofsd.cache.store import BlobCache
from erofsd.images import ReadOptions, open_image
from erofsd.oci.copy import push
from erofsd.oci.reference import parse_layout_ref, parse_registry_ref
from erofsd.oci.transport import Transport
from treeutil import assert_same_tree, snapshot_image


def read_all(ref, state, domain):
    options = ReadOptions(state_dir=str(state), insecure=True, domain_id=domain)
    with open_image(ref, options=options) as opened:
        return snapshot_image(opened.image), opened.manifest


def test_base_blob_fetched_once_per_domain(registry, family, tmp_path):
    for tag in ("a", "b"):
        push(parse_layout_ref(f"oci:{family['layout']}:{tag}"),
             parse_registry_ref(registry.ref("share/img", tag)), Transport(insecure=True))
    state = tmp_path / "state"
    snap_a, manifest_a = read_all(registry.ref("share/img", "a"), state, "d1")
    snap_b, manifest_b = read_all(registry.ref("share/img", "b"), state, "d1")
    with open_image(f"oci:{family['layout']}:a") as local_a, \
            open_image(f"oci:{family['layout']}:b") as local_b:
        assert_same_tree(snap_a, snapshot_image(local_a.image))
        assert_same_tree(snap_b, snapshot_image(local_b.image))
    base = manifest_a.blobs[0]
    assert base.digest == manifest_b.blobs[0].digest
    (d1,) = BlobCache(state).list()
    entries = {b.blob: b for b in d1.blobs}
    assert set(entries) == {base.digest, manifest_a.blobs[1].digest, manifest_b.blobs[1].digest}
    assert base.compressed and base.size < base.data_size
    assert entries[base.digest].fetched_bytes == base.size  # fetched once for both images
    assert entries[base.digest].cached_bytes == base.data_size  # and cached uncompressed

    read_all(registry.ref("share/img", "b"), state, "d2")  # another domain: isolated
    volumes = {v.volume: {b.blob: b for b in v.blobs} for v in BlobCache(state).list()}
    assert sorted(volumes) == ["erofs,d1", "erofs,d2"]
    assert volumes["erofs,d2"][base.digest].fetched_bytes == base.size  # fetched again
    assert volumes["erofs,d1"][base.digest].fetched_bytes == base.size
