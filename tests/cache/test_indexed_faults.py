"""Faults between the cache and the registry, for an ordinary image read through its index:
spans that come back corrupt, short, late or not at all never make a wrong byte."""

from __future__ import annotations

import random

import pytest

from cache.test_blob_faults import compressible, verify_cache
from cachekit import random_reads
from erofsd.images import ReadOptions, open_image
from erofsd.oci.copy import push
from erofsd.oci.indexartifact import index_reference
from erofsd.oci.reference import parse_layout_ref, parse_registry_ref
from erofsd.oci.transport import Transport
from imagekit import TarBuilder, write_image

READS = 600


@pytest.mark.usefixtures("fast_retries")
def test_reads_through_an_index_under_faults_hand_out_no_wrong_byte(registry, faulty, tmp_path):
    proxy = faulty
    rng = random.Random(21)
    files, tar = {}, TarBuilder()
    for i in range(30):
        size = rng.randrange(1, 300_000)
        files[f"f{i:02d}"] = compressible(rng, size) if i % 2 else rng.randbytes(size)
        tar.file(f"f{i:02d}", files[f"f{i:02d}"])
    local = write_image(tmp_path / "src", "t", [tar.bytes()])
    target = registry.ref("faults/ordinary", "t")
    push(parse_layout_ref(local), parse_registry_ref(target), Transport(insecure=True))
    index = index_reference(target, insecure=True, span_size=64 << 10).index.digest
    ref = f"docker://{proxy.host}/faults/ordinary:t"
    counts, generations = random_reads(
        files, READS, lambda n: open_image(ref, options=ReadOptions(
            state_dir=str(tmp_path / f"st{n}"), insecure=True, readahead=0, index=index)),
        seed=22, fresh_every=100, max_length=50_000)
    assert counts["wrong"] == 0
    assert counts["right"] > READS // 2 and sum(proxy.injected.values()) > 20
    assert sum(verify_cache(tmp_path / f"st{g}") for g in range(1, generations + 1)) > 0
