"""Faults between the cache and the registry: never a wrong byte, never one cached.

A fault proxy sits in front of a real docker-registry, serving an image
with compressed and raw frames. Thousands of random
reads go through it; each returns exactly the right bytes or fails with an
ErofsdError, and afterwards every chunk the cache holds verifies.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from builds import build_layers
from cachekit import random_reads
from erofsd.cache.presentmap import PresentMap
from erofsd.erofs import codec
from erofsd.erofs.chunktable import ChunkTable
from erofsd.errors import ErofsdError
from erofsd.images import ReadOptions, open_image
from erofsd.oci.copy import push
from erofsd.oci.reference import parse_layout_ref, parse_registry_ref
from erofsd.oci.transport import Transport

READS = 2000


@pytest.fixture(scope="module")
def pushed(registry, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    src = root / "src"
    src.mkdir()
    rng = random.Random(9)
    for i in range(60):  # half compress well (zstd frames), half not at all (raw frames)
        size = rng.randrange(1, 200_000)
        (src / f"file{i:02d}").write_bytes(compressible(rng, size) if i % 2 else
                                           rng.randbytes(size))
    (src / "big").write_bytes(compressible(rng, 3 << 19) + rng.randbytes(3 << 19))
    build_layers([src], root / "layout", chunk_size=16 * 1024)
    with open_image(f"oci:{root / 'layout'}") as opened:
        codecs = {f.codec for f in opened.chunk_tables()[0].frames}
    assert codecs == {codec.RAW, codec.ZSTD}
    push(parse_layout_ref(f"oci:{root / 'layout'}"),
         parse_registry_ref(registry.ref("faults/img")), Transport(insecure=True))
    files = {p.name: p.read_bytes() for p in src.iterdir()}
    return {"files": files, "repo": "faults/img"}


def compressible(rng: random.Random, size: int) -> bytes:
    words = [rng.randbytes(rng.randrange(2, 9)).hex().encode() for _ in range(300)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


def verify_cache(state: Path) -> int:
    """Every chunk marked present in the state dir matches its digest; returns their count."""
    checked = 0
    for map_path in state.glob("cache/*/*.map"):
        pmap = PresentMap.read_only(str(map_path))
        data = map_path.with_suffix("").read_bytes()
        table = ChunkTable.unpack(data[pmap.header.data_size:], pmap.header.data_size)
        for entry, present in zip(table.entries, pmap.bytes, strict=True):
            if present:
                assert hashlib.sha256(data[entry.offset:entry.end]).digest() == entry.digest
                checked += 1
        pmap.close()
    return checked


@pytest.mark.usefixtures("fast_retries")
def test_thousands_of_reads_through_faults_hand_out_no_wrong_byte(pushed, faulty, tmp_path):
    proxy = faulty
    ref = f"docker://{proxy.host}/{pushed['repo']}"
    started = time.monotonic()
    counts, generations = random_reads(
        pushed["files"], READS, lambda n: open_image(ref, options=ReadOptions(
            state_dir=str(tmp_path / f"st{n}"), insecure=True, readahead=0)),
        seed=11, fresh_every=150, max_length=40_000)
    right, failed, wrong = counts["right"], counts["failed"], counts["wrong"]
    elapsed = time.monotonic() - started
    print(f"\n{READS} reads in {elapsed:.1f}s: {right} right, {failed} failed, {wrong} wrong; "
          f"faults injected: {dict(proxy.injected)}")
    assert wrong == 0
    assert right > READS * 0.8  # retries mostly win
    assert set(proxy.injected) == {"http500", "reset", "stall", "short", "flip", "range"}
    assert sum(verify_cache(tmp_path / f"st{g}") for g in range(1, generations + 1)) > 100


@pytest.mark.usefixtures("fast_retries")
def test_registry_down_gives_errors_then_recovers(pushed, faulty, tmp_path):
    proxy = faulty
    ref = f"docker://{proxy.host}/{pushed['repo']}"
    proxy.enabled = False
    options = ReadOptions(state_dir=str(tmp_path), insecure=True, readahead=0)
    with open_image(ref, options=options) as opened:
        img = opened.image
        inode = img.lookup("/big")
        assert img.read(inode, 0, 100) == pushed["files"]["big"][:100]
        proxy.rate, proxy.enabled = 1.0, True
        proxy.weights = {"http500": 1}  # down: every blob request fails
        with pytest.raises(ErofsdError) as info:
            img.read(inode, 1 << 20, 100)
        assert info.value.errno == 5
        assert img.read(inode, 0, 100) == pushed["files"]["big"][:100]  # cached bytes still read
        proxy.enabled = False  # back up
        assert img.read(inode, 1 << 20, 100) == pushed["files"]["big"][1 << 20:(1 << 20) + 100]
    assert verify_cache(tmp_path) >= 2
    assert not os.environ.get("EROFSD_STATE_DIR")
