"""Chunks shared within a volume: two images built apart fetch their common content once."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from builds import build_layers
from erofsd.cache.store import BlobCache
from erofsd.images import open_resolved
from erofsd.oci.source import resolve_image
from treeutil import snapshot_dir, snapshot_image

STDLIB = Path(sys.modules["json"].__file__).parent.parent


def two_images(tmp_path: Path) -> tuple[str, str]:
    """Two images of mostly the same files, built apart: no blob in common."""
    refs = []
    for name, extra in ("a", "asyncio"), ("b", "xml"):
        tree = tmp_path / f"tree-{name}"
        for part in "email", "json", extra:
            shutil.copytree(STDLIB / part, tree / part,
                            ignore=shutil.ignore_patterns("__pycache__"))
        build_layers([tree], tmp_path / "layout", tag=name, compression=None)
        refs.append(f"oci:{tmp_path / 'layout'}:{name}")
    return refs[0], refs[1]


def read_all(cache: BlobCache, ref: str, volume: str) -> tuple[dict, int, int]:
    """(the tree, bytes fetched, bytes filled from the volume's other blobs)."""
    with open_resolved(resolve_image(ref), cache, volume) as opened:
        tree = snapshot_image(opened.image)
        return (tree, sum(b.stats.fetched_bytes for b in opened.blobs),
                sum(b.stats.local_bytes for b in opened.blobs))


def test_the_second_image_takes_what_the_first_holds_and_fetches_only_the_rest(tmp_path):
    a, b = two_images(tmp_path)
    cache = BlobCache(tmp_path / "state")
    with open_resolved(resolve_image(a), cache, "erofs,d1") as first:
        snapshot_image(first.image)
        tree_b, fetched_b, local_b = read_all(cache, b, "erofs,d1")
    alone, fetched_alone, local_alone = read_all(BlobCache(tmp_path / "other"), b, "erofs,d1")
    assert tree_b == alone and local_alone == 0
    shared = sum(f.stat().st_size for part in ("email", "json")
                 for f in (tmp_path / "tree-a" / part).rglob("*") if f.is_file())
    assert shared > 0.4 * fetched_alone
    assert local_b >= shared  # every common file came from the first image's blob
    assert fetched_b + local_b >= fetched_alone and fetched_b <= fetched_alone - shared
    assert tree_b[b"/json/decoder.py"] == snapshot_dir(STDLIB)[b"/json/decoder.py"]


def test_volumes_share_nothing_and_a_damaged_copy_is_fetched_instead(tmp_path):
    a, b = two_images(tmp_path)
    cache = BlobCache(tmp_path / "state")
    with open_resolved(resolve_image(a), cache, "erofs,d1") as first:
        snapshot_image(first.image)
        _, _, local = read_all(cache, b, "erofs,d2")  # another domain: nothing shared
        assert local == 0
        (blob,) = first.blobs
        with open_resolved(resolve_image(b), BlobCache(tmp_path / "peek"), "erofs,d1") as peek:
            theirs = {e.digest for x in peek.blobs for e in x.table.entries}
        entry = next(e for e in blob.table.entries if e.digest in theirs)  # one b would take
        with open(blob.data_path, "r+b") as f:  # bytes changed on disk under the cache
            f.seek(entry.offset)
            byte = f.read(1)
            f.seek(entry.offset)
            f.write(bytes([byte[0] ^ 0xFF]))
        tree_b, fetched_b, local_b = read_all(cache, b, "erofs,d1")
    alone, _, _ = read_all(BlobCache(tmp_path / "other"), b, "erofs,d1")
    assert tree_b == alone and 0 < local_b  # the damaged chunk came from b's source
    assert fetched_b >= entry.length
