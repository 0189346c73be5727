"""A small erofsd image and a counting source, for the cache's tests."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

from builds import build_layers
from erofsd.cache.blob import CacheTuning
from erofsd.cache.store import BlobCache
from erofsd.erofs.codec import Compression
from erofsd.erofs.readat import BytesReadAt
from erofsd.erofs.storedblob import DecodedBlob
from erofsd.errors import SourceError
from erofsd.oci.image import ErofsdManifest, check_chunk_table
from erofsd.oci.layout import OciLayout
from erofsd.oci.source import LayoutSource

MIB = 1 << 20


class CountingSource:
    """A seam: the real layout source, with every request counted (and optionally altered)."""

    def __init__(self, inner, *, delay: float = 0.0, corrupt_first: int = 0,
                 fail: bool = False) -> None:
        self.inner = inner
        self.name = inner.name
        self.requests: list[tuple[int, int]] = []
        self.delay = delay
        self.corrupt_left = corrupt_first
        self.fail = fail
        self._lock = threading.Lock()

    def read_range(self, digest, offset, length):
        with self._lock:
            self.requests.append((offset, length))
            corrupt = self.corrupt_left > 0
            self.corrupt_left -= 1
        if self.fail:
            raise SourceError("source is down")
        if self.delay:
            time.sleep(self.delay)
        data = self.inner.read_range(digest, offset, length)
        if corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    def blob_size(self, digest):
        return self.inner.blob_size(digest)

    @property
    def fetched(self) -> int:
        return sum(length for _, length in self.requests)


def forty_chunk_image(root: Path) -> dict:
    """One layer of 40 files x 64 KiB of distinct bytes, 64 KiB chunks (40 chunk entries),
    uncompressed (as releases before compression wrote it: the blob is the data)."""
    src = root / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02d}").write_bytes(os.urandom(64 * 1024))
    build_layers([src], root / "layout", chunk_size=64 * 1024, compression=None)
    layout = OciLayout.open(root / "layout")
    desc = layout.resolve("latest")
    manifest = ErofsdManifest.parse(layout.read_blob(desc.digest), desc.digest)
    return {"layout": layout, "ref": manifest.blobs[0], "src": src,
            "blob_bytes": layout.blob_path(manifest.blobs[0].digest).read_bytes()}


def open_blob(image, state, source=None, **tuning):
    cache = BlobCache(state, CacheTuning(**{"readahead": 0, **tuning}))
    source = source or CountingSource(LayoutSource(image["layout"]))
    return cache, cache.acquire("erofs,t", image["ref"], [source]), source


def text(seed: int, size: int) -> bytes:
    """Bytes that compress about 3:1, different for every seed."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randrange(2, 7)).hex().encode() for _ in range(400)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


def compressed_image(root: Path, frame_size: int = 0) -> dict:
    """One layer: 40 files x 64 KiB of text (64 KiB chunks, one zstd frame each unless
    ``frame_size`` packs them) then 16 small files of 3 KiB."""
    src = root / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02d}").write_bytes(text(i, 64 * 1024))
    for i in range(16):
        (src / f"s{i:02d}").write_bytes(text(100 + i, 3000))
    build_layers([src], root / "layout", chunk_size=64 * 1024,
                 compression=Compression(level=3, frame_size=frame_size))
    layout = OciLayout.open(root / "layout")
    desc = layout.resolve("latest")
    manifest = ErofsdManifest.parse(layout.read_blob(desc.digest), desc.digest)
    ref = manifest.blobs[0]
    blob = layout.blob_path(ref.digest).read_bytes()
    table = check_chunk_table(blob[ref.table_offset:], ref)
    data = DecodedBlob(BytesReadAt(blob), table).read_at(0, ref.data_size)
    return {"layout": layout, "ref": ref, "src": src, "table": table, "data": data}


def random_reads(files: dict[str, bytes], reads: int, open_fresh, *, seed: int,
                 fresh_every: int, max_length: int) -> tuple[dict[str, int], int]:
    """``reads`` random reads of ``files`` (name -> bytes) through images ``open_fresh(n)``
    opens, a fresh one (a new cache) every ``fresh_every`` reads: ({"right", "failed",
    "wrong"} counts, the number of images opened). A read that raises an ErofsdError
    counts as failed, never as right."""
    from erofsd.errors import ErofsdError
    rng = random.Random(seed)
    names = sorted(files)
    counts = {"right": 0, "failed": 0, "wrong": 0}
    opened, generation = None, 0
    try:
        for n in range(reads):
            if n % fresh_every == 0 and opened:  # a fresh cache: reads keep missing
                opened.close()
                opened = None
            if opened is None:
                generation += 1
                try:
                    opened = open_fresh(generation)
                except ErofsdError:
                    counts["failed"] += 1
                    continue
            name = rng.choice(names)
            expected = files[name]
            offset = rng.randrange(len(expected))
            length = rng.randrange(1, max_length)
            try:
                got = opened.image.read(opened.image.lookup(f"/{name}"), offset, length)
            except ErofsdError:
                counts["failed"] += 1
                continue
            counts["right" if got == expected[offset:offset + length] else "wrong"] += 1
    finally:
        if opened:
            opened.close()
    return counts, generation
