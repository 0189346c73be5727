"""Chunks shared within a volume: two images built apart fetch their common content once."""

from __future__ import annotations

from erofsd.cache.store import BlobCache
from erofsd.images import open_resolved
from erofsd.oci.source import resolve_image
from sharekit import STDLIB, common_bytes, read_all, two_images
from treeutil import snapshot_dir, snapshot_image


def test_the_second_image_takes_what_the_first_holds_and_fetches_only_the_rest(tmp_path):
    a, b = two_images(tmp_path)
    cache = BlobCache(tmp_path / "state")
    with open_resolved(resolve_image(a), cache, "erofs,d1") as first:
        snapshot_image(first.image)
        second = read_all(cache, b, "erofs,d1")
    alone = read_all(BlobCache(tmp_path / "other"), b, "erofs,d1")
    assert second.tree == alone.tree and alone.local == 0
    shared = common_bytes(tmp_path)
    assert shared > 0.4 * alone.fetched
    assert second.local >= shared  # every common file came from the first image's blob
    assert second.fetched + second.local >= alone.fetched
    assert second.fetched <= alone.fetched - shared
    assert second.tree[b"/json/decoder.py"] == snapshot_dir(STDLIB)[b"/json/decoder.py"]


def test_volumes_share_nothing_and_a_damaged_copy_is_fetched_instead(tmp_path):
    a, b = two_images(tmp_path)
    cache = BlobCache(tmp_path / "state")
    with open_resolved(resolve_image(a), cache, "erofs,d1") as first:
        snapshot_image(first.image)
        assert read_all(cache, b, "erofs,d2").local == 0  # another domain: nothing shared
        (blob,) = first.blobs
        with open_resolved(resolve_image(b), BlobCache(tmp_path / "peek"), "erofs,d1") as peek:
            theirs = {e.digest for x in peek.blobs for e in x.table.entries}
        entry = next(e for e in blob.table.entries if e.digest in theirs)  # one b would take
        with open(blob.data_path, "r+b") as f:  # bytes changed on disk under the cache
            f.seek(entry.offset)
            byte = f.read(1)
            f.seek(entry.offset)
            f.write(bytes([byte[0] ^ 0xFF]))
        second = read_all(cache, b, "erofs,d1")
    alone = read_all(BlobCache(tmp_path / "other"), b, "erofs,d1")
    assert second.tree == alone.tree and 0 < second.local  # the damaged chunk: from b's source
    assert second.fetched >= entry.length
